//! Windowed algorithms (fixed window, sliding window counter, sliding log) and composite limits.
//! (Being written; see issue 4.)
