//! Fixed window: at most `limit` cells per aligned window of length `W`, one packed word per key.

use crate::algorithm::{word, Algorithm, Receipt};
use crate::cell;
use crate::clock::{unix_nanos_at_anchor, Clock, Nanos};
use crate::decision::Decision;
use crate::quota::{Quota, QuotaError};
use crate::sync::AtomicU64;

use super::{index_bits, locate, mask, reciprocal, Outcome};

/// Fixed-window counter: at most `limit = quota.count()` cells in each window of length
/// `W = quota.period()`; the count restarts at each window edge.
///
/// # The word (bit by bit)
///
/// ```text
/// bit 63                       : 0 (the cell's TOMBSTONE bit, never set by this algorithm)
/// bits 62 .. count_bits        : window index  ⌊(now + offset) / W⌋
/// bits count_bits-1 .. 0       : cells admitted in that window
/// ```
///
/// The split is chosen per quota so that every window index up to the 100-year
/// [`HORIZON`](crate::quota::HORIZON) fits exactly (no wrap-around): `index_bits =
/// bits(⌊HORIZON / W⌋ + 1)` and `count_bits = 63 − index_bits`. Limits that do not fit are
/// [`QuotaError::TooLarge`]: for `W` = 1 s the largest limit is 2³¹ − 1, for 1 ms 2²¹ − 1,
/// for 1 µs 2¹¹ − 1 ([`FixedWindow::max_limit`]), each more than the one cell per ns that a
/// quota of that length can ask for. A fresh key (word 0) is window 0, count 0.
///
/// A check in a newer window CAS-replaces `(old, c)` by `(new, cost)`; within a window it is a
/// CAS increment that never passes the limit (no `fetch_add` overshoot). A clock that went
/// back behind the stored window is treated as standing at the stored window.
///
/// # Alignment
///
/// Windows start at the clock's anchor (`0, W, 2W, …` on the limiter's clock) by default.
/// [`aligned_to_wall_clock`](Self::aligned_to_wall_clock) shifts them, once at construction, so
/// they start at multiples of `W` in Unix time (per-minute windows start at each UTC minute):
/// `offset = unix_time_at_anchor mod W`, index `= ⌊(now + offset) / W⌋`. Only that one
/// construction-time reading of the system clock is used.
///
/// ```
/// use std::time::Duration;
/// use tollgate::{Algorithm, FixedWindow, KeyedLimiter, DefaultHashBuilder, ManualClock, Quota};
///
/// let clock = ManualClock::new();
/// let window = FixedWindow::new(&Quota::per_minute(3).unwrap()).unwrap();
/// let limiter: KeyedLimiter<String, _, _, _> =
///     KeyedLimiter::build(window, clock.clone(), 0, DefaultHashBuilder::default());
/// assert_eq!(limiter.check_n("k", 3).unwrap().remaining(), 0);
/// let d = limiter.check("k").unwrap();
/// assert!(!d.is_allowed());
/// assert_eq!(d.retry_after(), Some(Duration::from_secs(60)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedWindow {
    quota: Quota,
    window: Nanos,
    /// `reciprocal(window)`, for dividing by the window without a division instruction.
    recip: u64,
    limit: u64,
    offset: Nanos,
    count_bits: u32,
}

/// A fixed-window cell: the packed `index | count` word, or the tombstone.
#[derive(Debug, Default)]
pub struct FixedWindowCell {
    word: AtomicU64,
}

impl FixedWindow {
    /// The largest limit a window of `window_nanos` can count (see the type docs).
    ///
    /// ```
    /// assert_eq!(tollgate::FixedWindow::max_limit(1_000_000_000), (1 << 31) - 1);
    /// ```
    pub fn max_limit(window_nanos: Nanos) -> u64 {
        mask(63 - index_bits(window_nanos))
    }

    /// Fixed-window parameters for `quota` (window `quota.period()`, limit `quota.count()`),
    /// aligned to the clock's anchor. Same as [`Algorithm::new`].
    ///
    /// ```
    /// use tollgate::{FixedWindow, Quota, QuotaError};
    /// assert!(FixedWindow::from_quota(Quota::per_second(1000).unwrap()).is_ok());
    /// let bucket = Quota::per_second(10).unwrap().with_burst(30).unwrap();
    /// assert!(matches!(FixedWindow::from_quota(bucket), Err(QuotaError::UnsupportedBurst { .. })));
    /// ```
    pub fn from_quota(quota: Quota) -> Result<FixedWindow, QuotaError> {
        let window = quota.period_nanos();
        let count_bits = 63 - index_bits(window);
        let limit = super::window_limit(&quota)?;
        let max = mask(count_bits);
        if limit > max {
            return Err(QuotaError::TooLarge { what: "fixed-window limit", value: limit, max });
        }
        Ok(FixedWindow { quota, window, recip: reciprocal(window), limit, offset: 0, count_bits })
    }

    /// The same windows shifted so that a window starts at clock time `W − offset` (mod `W`):
    /// index `= ⌊(now + offset) / W⌋`. `offset` is taken modulo `W`.
    ///
    /// ```
    /// use tollgate::{FixedWindow, Quota};
    /// let w = FixedWindow::from_quota(Quota::per_second(1).unwrap()).unwrap().with_offset(250_000_000);
    /// // At clock time 0.75 s a new window starts.
    /// let (first, state) = w.step(0, 0, 1);
    /// assert_eq!(first.reset_after_nanos(), 750_000_000);
    /// let (d, _) = w.step(state.unwrap(), 750_000_000, 1);
    /// assert!(d.is_allowed());
    /// ```
    pub fn with_offset(mut self, offset: Nanos) -> FixedWindow {
        self.offset = offset % self.window;
        self
    }

    /// The same windows aligned to wall-clock boundaries: each window starts at a multiple of
    /// `W` in Unix time (UTC), as seen through `clock` at construction. If the system clock
    /// cannot be read the alignment stays at the clock's anchor.
    ///
    /// ```
    /// use tollgate::{FixedWindow, ManualClock, Quota};
    /// let w = FixedWindow::from_quota(Quota::per_minute(10).unwrap()).unwrap();
    /// let aligned = w.aligned_to_wall_clock(&ManualClock::new());
    /// assert!(aligned.offset() < 60_000_000_000);
    /// ```
    pub fn aligned_to_wall_clock<C: Clock + ?Sized>(self, clock: &C) -> FixedWindow {
        match unix_nanos_at_anchor(clock) {
            Some(anchor) => self.with_offset(anchor),
            None => self,
        }
    }

    /// The alignment offset in ns (0: windows start at the clock's anchor).
    pub fn offset(&self) -> Nanos {
        self.offset
    }

    /// Window length `W` in ns.
    pub fn window_nanos(&self) -> Nanos {
        self.window
    }

    /// Cells admitted per window.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Packs a window index and a count into a state word.
    ///
    /// ```
    /// use tollgate::{FixedWindow, Quota};
    /// let w = FixedWindow::from_quota(Quota::per_second(5).unwrap()).unwrap();
    /// assert_eq!(w.unpack(w.pack(7, 3)), (7, 3));
    /// ```
    #[inline]
    pub fn pack(&self, index: u64, count: u64) -> u64 {
        ((index << self.count_bits) | (count & mask(self.count_bits))) & cell::MAX_STATE
    }

    /// Splits a state word into `(window index, count)`.
    #[inline]
    pub fn unpack(&self, state: u64) -> (u64, u64) {
        (state >> self.count_bits, state & mask(self.count_bits))
    }

    /// The pure step: a check of `cost` cells at `now` against `state`, returning the decision
    /// and the new state if it changed (`None` for denials and `cost = 0`). No atomics, no
    /// clock; tested and fuzzed against a u128 reference.
    ///
    /// ```
    /// use tollgate::{FixedWindow, Quota};
    /// let w = FixedWindow::from_quota(Quota::per_second(2).unwrap()).unwrap();
    /// let (d, s) = w.step(0, 100, 2);
    /// assert!(d.is_allowed() && d.remaining() == 0);
    /// let (d, unchanged) = w.step(s.unwrap(), 200, 1);
    /// assert!(!d.is_allowed() && unchanged.is_none());
    /// assert_eq!(d.retry_after_nanos(), Some(1_000_000_000 - 200));
    /// ```
    #[inline]
    pub fn step(&self, state: u64, now: Nanos, cost: u64) -> (Decision, Option<u64>) {
        let o = self.outcome(state, now, cost);
        (o.decision, o.stored)
    }

    #[inline]
    pub(crate) fn outcome(&self, state: u64, now: Nanos, cost: u64) -> Outcome {
        // The common check: the stored window is still current and the cells fit. The count
        // is the word's low bits and `total ≤ limit ≤ mask(count_bits)`, so the new word is
        // `state + cost`. The value the CAS stores then depends on the loaded word through one
        // add; the window arithmetic (a multiplication) only steers a predicted branch instead
        // of sitting between the load and the CAS, where a direct limiter's checks queue up
        // behind each other. Same decision and word as the general path below.
        let (index, count) = self.unpack(state);
        let next = index.saturating_mul(self.window).saturating_add(self.window);
        let total = count.saturating_add(cost);
        if now.saturating_add(self.offset) < next && total <= self.limit {
            let until_end = next.saturating_sub(self.offset).saturating_sub(now);
            let reset_after = if total == 0 { 0 } else { until_end };
            let decision = Decision::allowed(self.limit, self.limit - total, reset_after);
            // `& MAX_STATE`: as `pack` does, for a raw word from `step`'s callers.
            return Outcome { decision, stored: (cost > 0).then_some((state + cost) & cell::MAX_STATE) };
        }
        let (index, count) = self.current(state, now);
        // `now + offset` and `(index + 1)·W` stay below 2⁶³: now ≤ HORIZON < 2⁶², offset < W,
        // and index ≤ ⌊(HORIZON + offset) / W⌋. Saturating anyway (fuzzed with raw inputs).
        let window_end = index.saturating_add(1).saturating_mul(self.window).saturating_sub(self.offset);
        let until_end = window_end.saturating_sub(now);
        let total = count.saturating_add(cost);
        if total <= self.limit {
            let reset_after = if total == 0 { 0 } else { until_end };
            let decision = Decision::allowed(self.limit, self.limit - total, reset_after);
            let stored = (cost > 0).then(|| self.pack(index, total));
            Outcome { decision, stored }
        } else {
            let reset_after = if count == 0 { 0 } else { until_end };
            // In the next window the count restarts at 0 and `cost ≤ limit` fits.
            let decision =
                Decision::denied(self.limit, self.limit.saturating_sub(count), reset_after, until_end);
            Outcome { decision, stored: None }
        }
    }

    /// The `(index, count)` in force at `now`: a newer window starts at count 0; a clock behind
    /// the stored window stays in the stored window (never admits more because time went back).
    #[inline]
    fn current(&self, state: u64, now: Nanos) -> (u64, u64) {
        let (index, count) = self.unpack(state);
        let t = now.saturating_add(self.offset);
        // The stored window or the next one, found without a division (~3.6 ns of latency on
        // the check's critical path here; a busy key is always in one of them). Saturation is
        // exact: if `(index + 1)·W` overflowed, every `t` is below it.
        let next = index.saturating_mul(self.window).saturating_add(self.window);
        if t < next {
            (index, count) // ⌊t / W⌋ ≤ index (behind the stored window: stay in it)
        } else if t < next.saturating_add(self.window) {
            (index + 1, 0)
        } else {
            (locate(t, self.window, self.recip).0, 0)
        }
    }

    /// Whether `state` is indistinguishable from a fresh key at `now` (and at every later time):
    /// its window has ended, or it holds no cells.
    #[inline]
    pub(crate) fn is_idle(&self, state: u64, now: Nanos) -> bool {
        self.current(state, now).1 == 0
    }

    /// The state after refunding `cost` cells that a check stored as `receipt`: the count goes
    /// down only if the word is still in the same window (a later window no longer counts them).
    #[inline]
    pub(crate) fn refunded(&self, state: u64, receipt: u64, cost: u64) -> Option<u64> {
        let (index, count) = self.unpack(state);
        let (receipt_index, _) = self.unpack(receipt);
        (index == receipt_index && count >= cost).then(|| self.pack(index, count - cost))
    }
}

impl Algorithm for FixedWindow {
    type Cell = FixedWindowCell;

    fn new(quota: &Quota) -> Result<Self, QuotaError> {
        FixedWindow::from_quota(*quota)
    }

    /// Keeps this window's alignment ([`with_offset`](FixedWindow::with_offset)).
    fn derive(&self, quota: &Quota) -> Result<Self, QuotaError> {
        FixedWindow::from_quota(*quota).map(|w| w.with_offset(self.offset))
    }

    fn compatible(&self, other: &FixedWindow) -> bool {
        // Same window grid and bit split: only the limit may differ.
        self.window == other.window && self.count_bits == other.count_bits && self.offset == other.offset
    }

    fn quota(&self) -> Quota {
        self.quota
    }

    #[inline]
    fn capacity(&self) -> u64 {
        self.limit
    }

    word::single_word!(word, |w: &FixedWindow, state, now| w.is_idle(state, now));

    #[inline]
    fn new_cell(&self) -> FixedWindowCell {
        FixedWindowCell { word: AtomicU64::new(0) }
    }

    /// Exact: the window's count goes down by `cost` if the word is still in the window the
    /// check counted in (counts are additive, so concurrent checks in between do not matter);
    /// once a newer window started, those cells no longer count and nothing is refunded.
    fn refund(&self, cell: &FixedWindowCell, _now: Nanos, cost: u64, receipt: Receipt) -> bool {
        if !receipt.valid() {
            return false;
        }
        word::refund(&cell.word, |state| self.refunded(state, receipt.stored, cost))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::MAX_STATE;

    fn window(limit: u64, period: Nanos) -> FixedWindow {
        let quota = Quota::new(limit, std::time::Duration::from_nanos(period)).unwrap();
        FixedWindow::from_quota(quota).unwrap()
    }

    /// The stored-window fast path stores the word `pack` would, for any raw word `step` is
    /// given (bit 63 included) and for the words a fresh key or a clock behind the window
    /// leaves.
    #[test]
    fn fast_path_stores_what_pack_would() {
        let w = window(5, 1_000_000_000);
        let raw = (1u64 << 63) | 2;
        assert_eq!(w.step(raw, 1_000, 1).1, Some(w.pack(w.unpack(raw).0, 3)));
        for (index, count, now) in [(0, 0, 0), (0, 4, 999_999_999), (7, 2, 7_500_000_000), (9, 1, 10)] {
            let state = w.pack(index, count);
            assert_eq!(w.step(state, now, 1).1, Some(w.pack(index, count + 1)), "{index} {count} {now}");
        }
    }

    #[test]
    #[allow(clippy::type_complexity)] // a table of plain tuples reads best here
    fn table() {
        // (state (index, count), now, cost) → (allowed, new (index, count), remaining, reset, retry)
        let w = window(3, 100);
        let rows: &[((u64, u64), u64, u64, bool, (u64, u64), u64, u64, u64)] = &[
            ((0, 0), 0, 1, true, (0, 1), 2, 100, 0),
            ((0, 2), 99, 1, true, (0, 3), 0, 1, 0),
            ((0, 3), 99, 1, false, (0, 3), 0, 1, 1),
            ((0, 3), 100, 1, true, (1, 1), 2, 100, 0), // exactly at the edge: new window
            ((0, 3), 100, 3, true, (1, 3), 0, 100, 0),
            ((2, 3), 150, 1, false, (2, 3), 0, 150, 150), // clock went back across an edge
            ((5, 1), 1000, 0, true, (5, 1), 3, 0, 0),     // cost 0 reports, stores nothing
        ];
        for &(state, now, cost, allowed, after, remaining, reset, retry) in rows {
            let s = w.pack(state.0, state.1);
            let (d, stored) = w.step(s, now, cost);
            let row = (state, now, cost);
            assert_eq!(d.is_allowed(), allowed, "{row:?}");
            assert_eq!(w.unpack(stored.unwrap_or(s)), if cost == 0 { state } else { after }, "{row:?}");
            assert_eq!(d.remaining(), remaining, "{row:?}");
            assert_eq!(d.reset_after_nanos(), reset, "{row:?}");
            assert_eq!(d.retry_after_nanos().unwrap_or(0), retry, "{row:?}");
        }
    }

    #[test]
    fn split_fits_every_index_up_to_the_horizon() {
        for period in [1, 7, 1_000, 1_000_000, 1_000_000_000, 86_400_000_000_000, 1 << 62] {
            let max = FixedWindow::max_limit(period);
            let w = window(1, period).with_offset(period - 1);
            let last = w.pack(crate::quota::HORIZON.div_ceil(period), max);
            assert!(last <= MAX_STATE);
            assert_eq!(w.unpack(last), (crate::quota::HORIZON.div_ceil(period), max));
            let too_big = Quota::new(max + 1, std::time::Duration::from_nanos(period));
            if let Ok(q) = too_big {
                assert!(matches!(FixedWindow::from_quota(q), Err(QuotaError::TooLarge { .. })));
            }
        }
    }

    #[test]
    fn refund_only_within_the_same_window() {
        let w = window(5, 100);
        let s = w.pack(3, 4);
        assert_eq!(w.refunded(s, w.pack(3, 2), 2), Some(w.pack(3, 2)));
        assert_eq!(w.refunded(w.pack(4, 1), w.pack(3, 2), 2), None);
    }
}
