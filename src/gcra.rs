//! The pure GCRA step (DESIGN.md §3): integers in, outcome out. No atomics, no clock.
//!
//! State: the theoretical arrival time `tat` (ns). Parameters: emission interval `T` and
//! `tolerance = burst × T` (τ + T). A check of `n` cells at `now`:
//!
//! ```text
//! tat'    = max(tat, now)
//! new_tat = tat' + n·T
//! allow iff new_tat − now ≤ tolerance         (then store new_tat)
//! deny:  retry_after = new_tat − tolerance − now; state unchanged
//! remaining   = ⌊(tolerance − (new_tat − now)) / T⌋   (from tat' on a denial)
//! reset_after = new_tat − now                          (tat' − now on a denial)
//! ```
//!
//! A fresh key has `tat = 0`, so `burst` unit checks at one instant pass and the next is denied
//! with `retry_after = T`.

use crate::clock::Nanos;
use crate::decision::Decision;
use crate::quota::Quota;

/// GCRA parameters derived from a validated [`Quota`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GcraParams {
    /// `T`, ns per cell.
    pub(crate) emission_interval: Nanos,
    /// `burst × T` (τ + T): how far ahead of `now` the TAT may run.
    pub(crate) tolerance: Nanos,
    /// Cells admitted at one instant from a fresh state.
    pub(crate) burst: u64,
}

impl GcraParams {
    pub(crate) fn from_quota(q: &Quota) -> GcraParams {
        let emission_interval = q.emission_interval_nanos();
        // Cannot overflow: Quota validation bounds burst × T by MAX_TOLERANCE.
        let tolerance = q.burst().saturating_mul(emission_interval);
        GcraParams { emission_interval, tolerance, burst: q.burst() }
    }
}

/// The outcome of one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// `Some(new_tat)` when the check is allowed and the state must change.
    pub(crate) new_tat: Option<Nanos>,
    pub(crate) decision: Decision,
}

/// One GCRA check of `cost` cells at `now` against state `tat`.
///
/// `cost == 0` reports the current state and never changes it. Arithmetic saturates, so even
/// parameters that skipped validation cannot panic (they deny instead); fuzzed against a u128
/// reference in `fuzz/fuzz_targets/gcra_math.rs`.
#[inline]
pub(crate) fn step(tat: Nanos, now: Nanos, cost: u64, p: &GcraParams) -> Outcome {
    let t = p.emission_interval;
    let start = tat.max(now);
    let new_tat = start.saturating_add(cost.saturating_mul(t));
    let ahead = new_tat - now; // new_tat ≥ start ≥ now
    if ahead <= p.tolerance {
        // remaining = (tolerance − ahead) / T, divided only if the caller asks (decision.rs).
        let decision = Decision::allowed_in_units(p.burst, p.tolerance - ahead, t, ahead);
        Outcome { new_tat: (cost > 0).then_some(new_tat), decision }
    } else {
        let behind = start - now;
        let slack = p.tolerance.saturating_sub(behind);
        let decision = Decision::denied_in_units(p.burst, slack, t, behind, ahead - p.tolerance);
        Outcome { new_tat: None, decision }
    }
}

/// The TAT under `new` of a bucket as full at `now` as `tat` is under `old`: the debt
/// `tat − now` scaled by `new.tolerance / old.tolerance`, rounded up (u128: no overflow; the
/// result saturates). `None` when nothing is owed (`tat ≤ now`: fresh under any parameters).
/// Scaling, not counting cells, so a round trip through another quota gives the debt back
/// (review finding: capping cells at the other burst forgot the rest, so 1000/s → 10/min →
/// 1000/s refilled a spent bucket at once).
pub(crate) fn adopted(tat: Nanos, now: Nanos, old: &GcraParams, new: &GcraParams) -> Option<Nanos> {
    if tat <= now {
        return None;
    }
    let scaled =
        (u128::from(tat - now) * u128::from(new.tolerance)).div_ceil(u128::from(old.tolerance.max(1)));
    Some(now.saturating_add(u64::try_from(scaled).unwrap_or(u64::MAX)))
}

/// Whether a key in state `tat` is indistinguishable from a fresh one at `now` (safe to evict).
#[inline]
pub(crate) fn is_idle(tat: Nanos, now: Nanos) -> bool {
    tat <= now
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Shared `(burst, T, tat, now, cost) → (allowed, new_tat, remaining, reset_after,
    /// retry_after)` table; the Redis script tests replay the same rows.
    /// `(burst, T, tat, now, cost, allowed, tat_after, remaining, reset_after, retry_after)`.
    pub(crate) type Row = (u64, u64, u64, u64, u64, bool, u64, u64, u64, u64);

    pub(crate) const TABLE: &[Row] = &[
        // burst, T, tat, now, cost, allowed, new_tat (or tat), remaining, reset, retry
        (3, 100, 0, 1000, 1, true, 1100, 2, 100, 0),
        (3, 100, 1100, 1000, 1, true, 1200, 1, 200, 0),
        (3, 100, 1200, 1000, 1, true, 1300, 0, 300, 0),
        (3, 100, 1300, 1000, 1, false, 1300, 0, 300, 100),
        (3, 100, 1300, 1100, 1, true, 1400, 0, 300, 0),
        (3, 100, 1300, 1050, 1, false, 1300, 0, 250, 50),
        (3, 100, 0, 1000, 3, true, 1300, 0, 300, 0),
        (3, 100, 1100, 1000, 3, false, 1100, 2, 100, 100),
        (3, 100, 5000, 1000, 1, false, 5000, 0, 4000, 3800), // clock went back
        (1, 7, 0, 0, 1, true, 7, 0, 7, 0),
        (1, 7, 7, 0, 1, false, 7, 0, 7, 7),
    ];

    #[test]
    fn table() {
        for &(burst, t, tat, now, cost, allowed, tat_after, remaining, reset, retry) in TABLE {
            let p = GcraParams { emission_interval: t, tolerance: burst * t, burst };
            let o = step(tat, now, cost, &p);
            let row = (burst, t, tat, now, cost);
            assert_eq!(o.decision.is_allowed(), allowed, "{row:?}");
            assert_eq!(o.new_tat.unwrap_or(tat), tat_after, "{row:?}");
            assert_eq!(o.decision.remaining(), remaining, "{row:?}");
            assert_eq!(o.decision.reset_after_nanos(), reset, "{row:?}");
            assert_eq!(o.decision.retry_after_nanos().unwrap_or(0), retry, "{row:?}");
            assert_eq!(o.decision.limit(), burst);
        }
    }

    #[test]
    fn zero_cost_reports_without_changing() {
        let p = GcraParams { emission_interval: 10, tolerance: 50, burst: 5 };
        let o = step(120, 100, 0, &p);
        assert_eq!(o.new_tat, None);
        assert!(o.decision.is_allowed());
        assert_eq!(o.decision.remaining(), 3);
    }

    #[test]
    fn extreme_inputs_never_panic() {
        let p = GcraParams { emission_interval: u64::MAX, tolerance: u64::MAX, burst: 1 };
        let _ = step(u64::MAX, 0, u64::MAX, &p);
        let _ = step(0, u64::MAX, u64::MAX, &p);
        let p = GcraParams { emission_interval: 1, tolerance: 1, burst: 1 };
        let o = step(u64::MAX, 0, 1, &p);
        assert!(!o.decision.is_allowed());
    }
}
