//! Sliding window counter (weighted previous + current window), one packed word per key.

use crate::algorithm::{word, Algorithm, Receipt};
use crate::cell::{self, Retired};
use crate::clock::Nanos;
use crate::decision::Decision;
use crate::quota::{Quota, QuotaError};
use crate::sync::AtomicU64;

use super::{div_by, index_bits, locate, mask, reciprocal, Outcome};

/// Sliding window counter (Cloudflare-style): counts the current window of length
/// `W = quota.period()` and the previous one, and estimates the cells in the last `W` as
///
/// ```text
/// estimate = prev · (W − elapsed) / W + cur          (elapsed = now − start of current window)
/// ```
///
/// admitting `cost` iff `estimate + cost ≤ limit` (`limit = quota.count()`). The math is
/// integers only: admit iff `prev·(W − elapsed) + (cur + cost)·W ≤ limit·W`, i.e.
/// `cur + cost + ⌈prev·(W − elapsed) / W⌉ ≤ limit` (u128 where the product could pass 2⁶⁴).
///
/// # Approximation
///
/// It assumes the previous window's cells were spread evenly over it. It never admits more
/// than `limit` within one aligned window, nor more than `2·limit` in any `W`; against the exact
/// [`SlidingLog`](super::SlidingLog) it errs both ways when the previous window's traffic was
/// bunched. [`approximation_error`](super::approximation_error) measures the wrong-decision
/// rate on a synthetic trace (Cloudflare reports 0.003% on real traffic).
///
/// # The word (bit by bit)
///
/// ```text
/// bit 63                          : 0 (TOMBSTONE bit, never set here)
/// bits 2c+i-1 .. 2c               : window index ⌊now / W⌋   (i = index bits)
/// bits 2c-1 .. c                  : prev, cells in window index−1
/// bits c-1 .. 0                   : cur, cells in window index
/// ```
///
/// `i = bits(⌊HORIZON / W⌋ + 1)` so every index up to the 100-year horizon fits (no wrap),
/// and `c = ⌊(63 − i) / 2⌋`; limits above `2ᶜ − 1` are [`QuotaError::TooLarge`]
/// ([`SlidingWindow::max_limit`]): 32 767 for `W` = 1 s, 262 143 for 1 min, 2 097 151 for 1 h.
///
/// ```
/// use std::time::Duration;
/// use tollgate::{Algorithm, Limiter, ManualClock, Quota, SlidingWindow};
///
/// let clock = ManualClock::new();
/// let sliding = SlidingWindow::new(&Quota::per_second(10).unwrap()).unwrap();
/// let limiter = Limiter::with_algorithm(sliding, clock.clone());
/// assert_eq!(limiter.check_n(10).unwrap().remaining(), 0);
/// clock.advance(Duration::from_millis(1500)); // half-way into the next window
/// // The previous window's 10 cells weigh 10 · 0.5 = 5.
/// assert_eq!(limiter.check().remaining(), 4);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlidingWindow {
    quota: Quota,
    window: Nanos,
    /// `reciprocal(window)`, for dividing by the window without a division instruction.
    recip: u64,
    limit: u64,
    /// `limit · W` (cells·ns), or 0 when that overflows u64: the bound the common check
    /// compares against. 0 never admits a check of cost ≥ 1 there, so the check falls through
    /// to the general path, which has the overflow-safe arithmetic.
    limit_units: u64,
    count_bits: u32,
    /// `mask(count_bits)`, kept so a check does not rebuild it.
    count_mask: u64,
}

/// A sliding-window cell: the packed `index | prev | cur` word, or the tombstone.
#[derive(Debug, Default)]
pub struct SlidingWindowCell {
    word: AtomicU64,
}

/// The counters in force at some time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct View {
    index: u64,
    prev: u64,
    cur: u64,
    /// Time into window `index` (0 when the clock is behind the stored window).
    elapsed: Nanos,
}

impl SlidingWindow {
    /// The largest limit for a window of `window_nanos` (see the type docs).
    ///
    /// ```
    /// assert_eq!(tollgate::SlidingWindow::max_limit(1_000_000_000), 32_767);
    /// ```
    pub fn max_limit(window_nanos: Nanos) -> u64 {
        mask((63 - index_bits(window_nanos)) / 2)
    }

    /// Parameters for `quota` (window `quota.period()`, limit `quota.count()`). Same as
    /// [`Algorithm::new`].
    ///
    /// ```
    /// use tollgate::{Quota, SlidingWindow};
    /// assert!(SlidingWindow::from_quota(Quota::per_minute(1000).unwrap()).is_ok());
    /// assert!(SlidingWindow::from_quota(Quota::per_second(40_000).unwrap()).is_err());
    /// ```
    pub fn from_quota(quota: Quota) -> Result<SlidingWindow, QuotaError> {
        let window = quota.period_nanos();
        let count_bits = (63 - index_bits(window)) / 2;
        let limit = super::window_limit(&quota)?;
        let max = mask(count_bits);
        if limit > max {
            return Err(QuotaError::TooLarge { what: "sliding-window limit", value: limit, max });
        }
        let limit_units = limit.checked_mul(window).unwrap_or(0);
        Ok(SlidingWindow {
            quota,
            window,
            recip: reciprocal(window),
            limit,
            limit_units,
            count_bits,
            count_mask: max,
        })
    }

    /// Packs `(index, prev, cur)` into a state word.
    ///
    /// ```
    /// use tollgate::{Quota, SlidingWindow};
    /// let w = SlidingWindow::from_quota(Quota::per_second(5).unwrap()).unwrap();
    /// assert_eq!(w.unpack(w.pack(9, 4, 2)), (9, 4, 2));
    /// ```
    #[inline]
    pub fn pack(&self, index: u64, prev: u64, cur: u64) -> u64 {
        let c = self.count_bits;
        let m = self.count_mask;
        ((index << (2 * c)) | ((prev & m) << c) | (cur & m)) & cell::MAX_STATE
    }

    /// Splits a state word into `(index, prev, cur)`.
    #[inline]
    pub fn unpack(&self, state: u64) -> (u64, u64, u64) {
        let c = self.count_bits;
        (state >> (2 * c), (state >> c) & self.count_mask, state & self.count_mask)
    }

    /// The pure step (see [`FixedWindow::step`](super::FixedWindow::step)).
    ///
    /// ```
    /// use tollgate::{Quota, SlidingWindow};
    /// let w = SlidingWindow::from_quota(Quota::per_second(4).unwrap()).unwrap();
    /// let full = w.pack(0, 0, 4);
    /// // A quarter into window 1: prev = 4 weighs ⌈4 · 0.75⌉ = 3, one cell fits.
    /// let (d, s) = w.step(full, 1_250_000_000, 1);
    /// assert!(d.is_allowed());
    /// assert_eq!(w.unpack(s.unwrap()), (1, 4, 1));
    /// ```
    #[inline]
    pub fn step(&self, state: u64, now: Nanos, cost: u64) -> (Decision, Option<u64>) {
        let o = self.outcome(state, now, cost);
        (o.decision, o.stored)
    }

    #[inline]
    fn view(&self, state: u64, now: Nanos) -> View {
        let (index, prev, cur) = self.unpack(state);
        // The stored window or the next one, found without a division (as in the fixed
        // window); saturation is exact for the same reason.
        let start = index.saturating_mul(self.window);
        let next = start.saturating_add(self.window);
        if now < start {
            // The clock is behind the stored window: stand at its start (the previous window
            // then weighs fully, the strictest view).
            View { index, prev, cur, elapsed: 0 }
        } else if now < next {
            View { index, prev, cur, elapsed: now - start }
        } else if now < next.saturating_add(self.window) {
            View { index: index + 1, prev: cur, cur: 0, elapsed: now - next }
        } else {
            let now_index = div_by(now, self.window, self.recip);
            View { index: now_index, prev: 0, cur: 0, elapsed: now - now_index * self.window }
        }
    }

    /// `⌈prev·(W − elapsed) / W⌉`, the previous window's weighted share.
    #[inline]
    fn weighted_prev(&self, prev: u64, elapsed: Nanos) -> u64 {
        if prev == 0 {
            return 0;
        }
        let left = self.window.saturating_sub(elapsed);
        match prev.checked_mul(left) {
            Some(p) => p.div_ceil(self.window),
            None => (u128::from(prev) * u128::from(left)).div_ceil(u128::from(self.window)) as u64,
        }
    }

    /// The earliest `e ≥ 0` into a window at which `⌈count·(W − e)/W⌉ ≤ slack`.
    #[inline]
    fn earliest_fit(&self, count: u64, slack: u64) -> Nanos {
        if count == 0 {
            return 0;
        }
        // A u64 division when the product fits (a u128 one is a library call, ~10× slower).
        let fits = match slack.checked_mul(self.window) {
            Some(product) => product / count,
            None => u64::try_from(u128::from(slack) * u128::from(self.window) / u128::from(count))
                .unwrap_or(u64::MAX),
        };
        self.window - fits.min(self.window)
    }

    /// The pure step. The common admissions are decided here, with three multiplications
    /// (`index·W`, `prev·left`, `(cur + cost)·W`) and no division; everything else (denials, a
    /// clock behind the stored window, products past u64, cost 0) goes to
    /// [`outcome_general`](Self::outcome_general), which gives the same decision and word for
    /// these cases too (`fast_path_matches_general` checks it). The three cases below repeat
    /// those of [`view`](Self::view) inline rather than calling it: going through `view` and
    /// the general arithmetic was the slow version.
    ///
    /// The common cases are the three views a key can have of its word at `now ≥ start`:
    /// - still in the stored window: counts as stored, and the new word is `state + cost`
    ///   (`cur` is the low field, and `cur + cost ≤ limit ≤ mask(c)` when admitted), so the
    ///   word the CAS stores depends on the loaded one through one add, as in the fixed window;
    /// - in the next window: `prev ← cur`, `cur ← 0`;
    /// - two windows on or more (a key back after a pause; most checks of a limiter with many
    ///   keys): nothing counts, and the new window's index comes from [`locate`] (out of line,
    ///   one call).
    ///
    /// In each, `left = W − elapsed` and the check admits iff
    /// `prev·left + (cur + cost)·W ≤ limit·W`, i.e. `cur + cost + ⌈prev·left / W⌉ ≤ limit`,
    /// with `remaining = ⌊(limit·W − need) / W⌋` divided out only if asked, and
    /// `reset_after = left + W` (the new `cur ≥ 1` counts until the end of the next window).
    /// Keeping the rest out of line keeps this path's registers and code small. Interleaved
    /// criterion rounds against the all-inline step (medians of 3; GCRA's in the same rounds):
    /// `algorithm/sliding/cell` 10.4 → 6.6 ns (4.0), `direct` 23.3 → 16.8 ns (11.9), keyed with
    /// 1 key 48.9 → 34.2 ns (24.8), with 10⁴ keys 43.5 → 41.8 ns (32.5).
    #[inline]
    pub(crate) fn outcome(&self, state: u64, now: Nanos, cost: u64) -> Outcome {
        match self.fast(state, now, cost) {
            Some((decision, stored)) => Outcome { decision, stored: Some(stored) },
            None => self.outcome_general(state, now, cost),
        }
    }

    /// The common admissions of [`outcome`](Self::outcome): `Some((decision, new word))`, or
    /// `None` for the rest ([`outcome_general`](Self::outcome_general)).
    #[inline]
    fn fast(&self, state: u64, now: Nanos, cost: u64) -> Option<(Decision, u64)> {
        let (index, prev, cur) = self.unpack(state);
        let start = index.saturating_mul(self.window);
        let next = start.saturating_add(self.window);
        // (prev, cur, time left in the window, the word to store) in the window `now` is in.
        let after = next.saturating_add(self.window);
        let (prev, cur, left, stored) = if now < start || cost == 0 {
            return None;
        } else if now < next {
            (prev, cur, next - now, state.wrapping_add(cost) & cell::MAX_STATE)
        } else if now < after {
            (cur, 0, after - now, self.pack(index + 1, cur, cost))
        } else {
            let (now_index, elapsed) = locate(now, self.window, self.recip);
            (0, 0, self.window - elapsed, self.pack(now_index, 0, cost))
        };
        // `left` is in 1..=W, so `left + W ≤ 2⁶³` (W ≤ 2⁶²). The test
        // `prev·left + (cur + cost)·W ≤ limit·W` as `prev·left ≤ room`, with
        // `room = limit·W − (cur + cost)·W` computed from the word alone: while the clock is
        // read, so that after it only `left`, one multiplication and a compare stand before
        // the CAS (one add and two overflow tests fewer than summing `need` first).
        let room = cur
            .checked_add(cost)
            .and_then(|counted| counted.checked_mul(self.window))
            .and_then(|counted| self.limit_units.checked_sub(counted))?;
        let weight = prev.checked_mul(left)?;
        if weight > room {
            return None;
        }
        Some((Decision::allowed_in_units(self.limit, room - weight, self.window, left + self.window), stored))
    }

    /// A check that [`fast`](Self::fast) left: the whole step, out of line (`check_split`).
    #[cold]
    #[inline(never)]
    fn check_rest(&self, word: &AtomicU64, now: Nanos, cost: u64) -> Result<Decision, Retired> {
        word::check(word, |state| self.step(state, now, cost))
    }

    /// [`check_rest`](Self::check_rest) for [`Algorithm::check_then`].
    #[cold]
    #[inline(never)]
    fn check_rest_then<R>(
        &self,
        word: &AtomicU64,
        now: Nanos,
        cost: u64,
        done: impl FnOnce(Decision) -> R,
        retired: impl FnOnce() -> R,
    ) -> R {
        match word::check(word, |state| self.step(state, now, cost)) {
            Ok(decision) => done(decision),
            Err(Retired) => retired(),
        }
    }

    /// [`check_rest`](Self::check_rest) with a receipt.
    #[cold]
    #[inline(never)]
    fn check_rest_with_receipt(
        &self,
        word: &AtomicU64,
        now: Nanos,
        cost: u64,
    ) -> Result<(Decision, Receipt), Retired> {
        word::check_with_receipt(word, |state| self.step(state, now, cost))
    }

    /// The step in full: any state, time and cost (see [`outcome`](Self::outcome)). It is also
    /// every check of a limiter whose `limit·W` passes u64 (e.g. a day's window with a limit
    /// above ~213 000) and every denial; those pay a call. `#[cold]` anyway: without it the
    /// common path measured 0.4–0.8 ns slower (`algorithm/sliding/cell`, 6.5 → 6.9–7.3 ns).
    #[cold]
    #[inline(never)]
    pub(crate) fn outcome_general(&self, state: u64, now: Nanos, cost: u64) -> Outcome {
        let v = self.view(state, now);
        // Nothing counted in either window the key can see: a new key, or one back two windows
        // or more after its last check (most checks of a limiter with many keys). The
        // previous window weighs nothing, so the test below reduces to `cost ≤ limit` with
        // `remaining = limit − cost`: four multiplications and 21 instructions fewer per check
        // (callgrind), the same decision and state.
        if v.prev == 0 && v.cur == 0 && cost <= self.limit {
            let reset_after = self.reset_after(v.index, 0, cost, now);
            let decision = Decision::allowed(self.limit, self.limit - cost, reset_after);
            let stored = (cost > 0).then(|| self.pack(v.index, 0, cost));
            return Outcome { decision, stored };
        }
        let left = self.window.saturating_sub(v.elapsed);
        // In cells·ns: free = (limit − cur)·W, weight = prev·left (the previous window's
        // share), need = weight + cost·W. Admit iff need ≤ free, which is
        // cur + cost + ⌈prev·left / W⌉ ≤ limit. `remaining` is ⌊(free − need) / W⌋ on an
        // admission and ⌊(free − weight) / W⌋ (0 if negative) on a denial, divided out only if
        // the caller asks (decision.rs): neither path divides, but for a denial's retry time.
        // Products that overflow u64 take the u128 path below.
        let free = self.limit.checked_sub(v.cur).and_then(|a| a.checked_mul(self.window));
        if let (Some(weight), Some(free)) = (v.prev.checked_mul(left), free) {
            if let Some(need) = cost.checked_mul(self.window).and_then(|c| c.checked_add(weight)) {
                if need <= free {
                    let cur = v.cur + cost;
                    let reset_after = self.reset_after(v.index, v.prev, cur, now);
                    let decision =
                        Decision::allowed_in_units(self.limit, free - need, self.window, reset_after);
                    let stored = (cost > 0).then(|| self.pack(v.index, v.prev, cur));
                    return Outcome { decision, stored };
                }
                let (reset_after, retry_after) = self.denial_times(&v, now, cost);
                let slack = free.saturating_sub(weight);
                let decision =
                    Decision::denied_in_units(self.limit, slack, self.window, reset_after, retry_after);
                return Outcome { decision, stored: None };
            }
        }
        let weighted = self.weighted_prev(v.prev, v.elapsed);
        let used = weighted.saturating_add(v.cur);
        let wanted = used.saturating_add(cost);
        if wanted <= self.limit {
            let cur = v.cur + cost;
            let reset_after = self.reset_after(v.index, v.prev, cur, now);
            let decision = Decision::allowed(self.limit, self.limit - wanted, reset_after);
            let stored = (cost > 0).then(|| self.pack(v.index, v.prev, cur));
            Outcome { decision, stored }
        } else {
            let (reset_after, retry_after) = self.denial_times(&v, now, cost);
            let remaining = self.limit.saturating_sub(used);
            Outcome {
                decision: Decision::denied(self.limit, remaining, reset_after, retry_after),
                stored: None,
            }
        }
    }

    /// A denial's `(reset_after, retry_after)`: the earliest time `cost` fits, in this window
    /// once the previous window's weight has faded enough, else in the next one.
    #[inline]
    fn denial_times(&self, v: &View, now: Nanos, cost: u64) -> (Nanos, Nanos) {
        let start = v.index.saturating_mul(self.window);
        let target = if v.cur.saturating_add(cost) <= self.limit {
            start.saturating_add(self.earliest_fit(v.prev, self.limit - v.cur - cost))
        } else {
            // The next window, where prev' = cur and cur' = 0.
            let next = start.saturating_add(self.window);
            next.saturating_add(self.earliest_fit(v.cur, self.limit.saturating_sub(cost)))
        };
        let retry_after = target.saturating_sub(now).max(1);
        (self.reset_after(v.index, v.prev, v.cur, now), retry_after)
    }

    /// Time until the estimate is 0 again (the key is then fresh).
    #[inline]
    fn reset_after(&self, index: u64, prev: u64, cur: u64, now: Nanos) -> Nanos {
        let windows = if cur > 0 {
            2
        } else if prev > 0 {
            1
        } else {
            return 0;
        };
        index.saturating_add(windows).saturating_mul(self.window).saturating_sub(now)
    }

    /// Whether `state` is indistinguishable from a fresh key at `now` and later: both the
    /// current and the previous window (as seen at `now`) are empty.
    #[inline]
    pub(crate) fn is_idle(&self, state: u64, now: Nanos) -> bool {
        let v = self.view(state, now);
        v.prev == 0 && v.cur == 0
    }

    /// The state after refunding `cost` cells a check stored as `receipt`: from `cur` if the
    /// word is still in that window, from `prev` if it is in the next one, else nothing (they
    /// no longer count).
    #[inline]
    pub(crate) fn refunded(&self, state: u64, receipt: u64, cost: u64) -> Option<u64> {
        let (index, prev, cur) = self.unpack(state);
        let (receipt_index, _, _) = self.unpack(receipt);
        if index == receipt_index && cur >= cost {
            Some(self.pack(index, prev, cur - cost))
        } else if index == receipt_index.saturating_add(1) && prev >= cost {
            Some(self.pack(index, prev - cost, cur))
        } else {
            None
        }
    }

    /// The state after recording `cost` cells at `now` whether or not they fit (for shadowing
    /// another limiter's admissions in [`approximation_error`](super::approximation_error)).
    #[inline]
    pub(crate) fn recorded(&self, state: u64, now: Nanos, cost: u64) -> u64 {
        let v = self.view(state, now);
        self.pack(v.index, v.prev, v.cur.saturating_add(cost).min(mask(self.count_bits)))
    }

    /// Window length `W` in ns.
    pub fn window_nanos(&self) -> Nanos {
        self.window
    }

    /// The limit per window.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

impl Algorithm for SlidingWindow {
    type Cell = SlidingWindowCell;

    fn new(quota: &Quota) -> Result<Self, QuotaError> {
        SlidingWindow::from_quota(*quota)
    }

    fn compatible(&self, other: &SlidingWindow) -> bool {
        // Same window length and bit split: only the limit may differ.
        self.window == other.window && self.count_bits == other.count_bits
    }

    fn quota(&self) -> Quota {
        self.quota
    }

    #[inline]
    fn capacity(&self) -> u64 {
        self.limit
    }

    word::single_word!(word, |w: &SlidingWindow, state, now| w.is_idle(state, now), split);

    #[inline]
    fn new_cell(&self) -> SlidingWindowCell {
        SlidingWindowCell { word: AtomicU64::new(0) }
    }

    /// Exact: counts are additive, so `cost` comes off the window it was counted in (as `cur`,
    /// or as `prev` once the next window started) whatever other checks did in between.
    fn refund(&self, cell: &SlidingWindowCell, _now: Nanos, cost: u64, receipt: Receipt) -> bool {
        if !receipt.valid() {
            return false;
        }
        word::refund(&cell.word, |state| self.refunded(state, receipt.stored, cost))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sliding(limit: u64, period: Nanos) -> SlidingWindow {
        SlidingWindow::from_quota(Quota::new(limit, std::time::Duration::from_nanos(period)).unwrap())
            .unwrap()
    }

    #[test]
    #[allow(clippy::type_complexity)] // a table of plain tuples reads best here
    fn table() {
        let w = sliding(10, 100);
        // (index, prev, cur), now, cost → allowed, remaining, retry
        let rows: &[((u64, u64, u64), u64, u64, bool, u64, u64)] = &[
            ((0, 0, 0), 0, 10, true, 0, 0),
            ((0, 0, 10), 50, 1, false, 0, 50 + 10), // next window, prev 10 → need e ≥ 10
            ((0, 0, 10), 110, 1, true, 0, 0),       // ⌈10·0.9⌉ = 9, +1 = 10
            ((0, 0, 10), 150, 5, true, 0, 0),       // ⌈10·0.5⌉ = 5, +5 = 10
            ((1, 10, 0), 150, 6, false, 5, 10),     // need ⌈10(100−e)/100⌉ ≤ 4: e ≥ 60
            ((1, 10, 0), 100, 1, false, 0, 10),     // exactly at the edge: prev weighs fully
            ((3, 10, 0), 150, 1, false, 0, 160),    // clock went back across an edge
            ((0, 5, 5), 300, 10, true, 0, 0),       // two windows later: fresh
        ];
        for &(s, now, cost, allowed, remaining, retry) in rows {
            let (d, _) = w.step(w.pack(s.0, s.1, s.2), now, cost);
            let row = (s, now, cost);
            assert_eq!(d.is_allowed(), allowed, "{row:?}");
            assert_eq!(d.remaining(), remaining, "{row:?}");
            assert_eq!(d.retry_after_nanos().unwrap_or(0), retry, "{row:?}");
            if !allowed {
                let target = now + retry;
                assert!(w.step(w.pack(s.0, s.1, s.2), target, cost).0.is_allowed(), "{row:?} at retry");
                assert!(!w.step(w.pack(s.0, s.1, s.2), target - 1, cost).0.is_allowed(), "{row:?} before");
            }
        }
    }

    #[test]
    fn a_window_too_short_for_any_count_says_so() {
        let quota = Quota::new(1, std::time::Duration::from_nanos(1)).unwrap();
        let err = SlidingWindow::from_quota(quota).unwrap_err();
        assert!(matches!(err, QuotaError::TooLarge { max: 0, .. }), "{err:?}");
        assert!(err.to_string().contains("period is too short"), "{err}");
    }

    #[test]
    fn counts_at_the_field_max() {
        let period = 3_600_000_000_000;
        let max = SlidingWindow::max_limit(period);
        assert_eq!(max, (1 << 21) - 1);
        let w = sliding(max, period);
        let (d, s) = w.step(0, 0, max);
        assert!(d.is_allowed());
        assert_eq!(w.unpack(s.unwrap()), (0, 0, max));
        let (d, s) = w.step(s.unwrap(), period, max);
        assert!(!d.is_allowed() && s.is_none());
        let (d, s) = w.step(w.pack(0, 0, max), 2 * period, max);
        assert!(d.is_allowed());
        assert_eq!(w.unpack(s.unwrap()), (2, 0, max));
    }

    /// The common path decides exactly as the general one: every field of the decision and
    /// the stored word, over windows from 1 ns to 2⁶² ns, limits from 1 to the largest (and
    /// either side of where `limit·W` passes u64), costs at the admission boundary, raw words (any index, counts above the
    /// limit, as a larger compatible limit leaves them), times around every window edge and far
    /// off up to the horizon (clocks clamp `now` there), and costs from 0 past the limit.
    #[test]
    fn fast_path_matches_general() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let periods =
            [1, 3, 100, 1_000, 999_983, 1_000_000_000, 3_600_000_000_000, 1 << 50, 1 << 61, 1 << 62];
        for &period in &periods {
            let max = SlidingWindow::max_limit(period);
            if max == 0 {
                continue; // a window too short for any count field (1 ns)
            }
            // Limits: small, the largest, random, and either side of where `limit·W` passes u64.
            let overflow_at = u64::MAX / period;
            let picks = [1, 2, 7, max, 1 + next() % max, overflow_at, overflow_at.saturating_add(1)];
            for &limit_pick in &picks {
                let limit = limit_pick.clamp(1, max);
                let Ok(quota) = Quota::new(limit, std::time::Duration::from_nanos(period)) else {
                    continue;
                };
                let Ok(w) = SlidingWindow::from_quota(quota) else { continue };
                let m = mask(w.count_bits);
                for _ in 0..4_000 {
                    let index = match next() % 4 {
                        0 => next() % 8,
                        1 => next() >> (next() % 64),
                        _ => (next() % crate::quota::HORIZON) / period,
                    };
                    let count = |r: u64| match r % 4 {
                        0 => 0,
                        1 => r % (limit + 1),
                        2 => limit,
                        _ => r & m,
                    };
                    let state = w.pack(index, count(next()), count(next()));
                    let (index, _, _) = w.unpack(state);
                    let start = index.saturating_mul(period);
                    let now = match next() % 6 {
                        0 => start.saturating_add(next() % period.saturating_mul(3)),
                        1 => start.saturating_sub(next() % period.saturating_add(2)),
                        2 => start.saturating_add(period).saturating_sub(next() % 3),
                        3 => start.saturating_add(2 * period).saturating_sub(next() % 3),
                        4 => next() % crate::quota::HORIZON,
                        _ => crate::quota::HORIZON - next() % period.min(crate::quota::HORIZON),
                    }
                    .min(crate::quota::HORIZON);
                    let cost = match next() % 5 {
                        0 => 0,
                        1 => 1,
                        2 => next() % (limit.saturating_add(2)),
                        // At the admission boundary of the view `now` sees, and either side.
                        3 => {
                            let v = w.view(state, now);
                            let weighted = w.weighted_prev(v.prev, v.elapsed);
                            let room = limit.saturating_sub(v.cur).saturating_sub(weighted);
                            (room + next() % 3).saturating_sub(1)
                        }
                        _ => next() >> (next() % 64),
                    };
                    let fast = w.outcome(state, now, cost);
                    let general = w.outcome_general(state, now, cost);
                    let what = (period, limit, w.unpack(state), now, cost);
                    assert_eq!(fast.stored, general.stored, "{what:?}");
                    // A check on a cell holding `state` (through the CAS loop) stores the same word.
                    let cell = SlidingWindowCell { word: AtomicU64::new(state) };
                    let checked = Algorithm::check(&w, &cell, now, cost).expect("live cell");
                    assert_eq!(
                        crate::cell::load(&cell.word),
                        Some(general.stored.unwrap_or(state)),
                        "{what:?}"
                    );
                    for a in [fast.decision, checked] {
                        let b = general.decision;
                        assert_eq!(a.is_allowed(), b.is_allowed(), "{what:?}");
                        assert_eq!(a.limit(), b.limit(), "{what:?}");
                        assert_eq!(a.remaining(), b.remaining(), "{what:?}");
                        assert_eq!(a.reset_after_nanos(), b.reset_after_nanos(), "{what:?}");
                        assert_eq!(a.retry_after_nanos(), b.retry_after_nanos(), "{what:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn u128_path_for_huge_windows() {
        let period = 1 << 61;
        let max = SlidingWindow::max_limit(period);
        let w = sliding(max, period);
        let (d, _) = w.step(w.pack(0, 0, max), period + period / 2, 1);
        assert_eq!(d.remaining(), max - max.div_ceil(2) - 1);
    }
}
