//! Property tests: arbitrary sequences of clock moves (forwards and backwards) and
//! `check_n`/`peek`/`reset` on a `Limiter<ManualClock>` agree, decision field by decision field,
//! with the wide-integer reference GCRA in `fuzz/src/reference.rs` (and so does the pure
//! `Gcra::step`). The driver is `fuzz/src/checks.rs::run_ops`, the one the `gcra_math` fuzz
//! target runs; this file only generates the operations.
//!
//! Regressions: proptest records any failing case it shrinks in
//! `tests/proptest_gcra.proptest-regressions` and replays it first on every later run. Commit that
//! file whenever it appears; never delete cases from it.

#[path = "../fuzz/src/reference.rs"]
#[allow(dead_code)] // parts are used only by the fuzz targets and the corpus replay
mod reference;

#[path = "../fuzz/src/checks.rs"]
#[allow(dead_code)]
mod checks;

use std::time::Duration;

use checks::{build_quota, run_ops, GcraOp};
use proptest::prelude::*;
use tollgate::{Limiter, ManualClock, Quota};

/// (count, period in ns, burst): small periods so that steps of a few intervals matter, plus
/// realistic ones (up to an hour).
fn quota_parts() -> impl Strategy<Value = (u64, u64, u64)> {
    prop_oneof![
        (1u64..=8, 1u64..=1_000, 1u64..=8),
        (1u64..=10_000, 1_000_000u64..=3_600_000_000_000, 1u64..=100),
    ]
}

/// Operations scaled to the quota: steps up to a few tolerances, costs 0 ..= burst + 1.
fn ops(burst: u64, tolerance: u64) -> impl Strategy<Value = Vec<GcraOp>> {
    let step = 0..=tolerance.saturating_mul(3);
    let cost = 0..=u32::try_from(burst + 1).unwrap_or(u32::MAX);
    let op = prop_oneof![
        4 => step.clone().prop_map(GcraOp::Advance),
        5 => cost.prop_map(GcraOp::Check),
        2 => step.prop_map(GcraOp::SetBack),
        1 => any::<u64>().prop_map(GcraOp::SetClock),
        1 => any::<u32>().prop_map(GcraOp::Check),
        1 => Just(GcraOp::Peek),
        1 => Just(GcraOp::Reset),
    ];
    prop::collection::vec(op, 0..64)
}

fn quota_and_ops() -> impl Strategy<Value = (Quota, Vec<GcraOp>)> {
    quota_parts()
        .prop_filter_map("quota rejected", |(count, period, burst)| {
            build_quota(count, period, burst).map(|(q, _)| q)
        })
        .prop_flat_map(|q| {
            let tolerance = q.burst() * q.emission_interval_nanos();
            (Just(q), ops(q.burst(), tolerance))
        })
}

proptest! {
    /// Every decision equals the reference's, whatever the sequence.
    #[test]
    fn limiter_agrees_with_reference((quota, ops) in quota_and_ops()) {
        run_ops(quota, &ops);
    }

    /// Quota validation agrees with the reference on arbitrary (count, period, burst), including
    /// the huge values that must be rejected as overflow.
    #[test]
    fn quota_validation_agrees(count in any::<u64>(), period in any::<u64>(), burst in any::<u64>()) {
        let _ = build_quota(count, period, burst);
        let _ = build_quota(count % 1_000 + 1, period, burst % 1_000 + 1);
    }

    /// After a denial, waiting exactly `retry_after` admits the same check, and waiting 1 ns less
    /// does not (the denial's advice is exact).
    #[test]
    fn retry_after_is_exact(
        (count, period, burst) in quota_parts(),
        spend in 1u32..=8,
        cost_pick in any::<u32>(),
    ) {
        let Some((quota, _)) = build_quota(count, period, burst) else { return Ok(()) };
        let clock = ManualClock::new();
        let limiter = Limiter::with_clock(quota, clock.clone());
        let burst = u32::try_from(quota.burst()).unwrap_or(u32::MAX);
        let cost = 1 + cost_pick % burst;
        for _ in 0..spend {
            let _ = limiter.check_n(burst);
        }
        let denied = limiter.check_n(cost).expect("cost within the burst");
        prop_assume!(!denied.is_allowed());
        let wait = denied.retry_after_nanos().expect("a denial says when to retry");
        prop_assert!(wait > 0);
        clock.advance(Duration::from_nanos(wait - 1));
        prop_assert!(!limiter.check_n(cost).expect("in range").is_allowed());
        clock.advance(Duration::from_nanos(1));
        prop_assert!(limiter.check_n(cost).expect("in range").is_allowed());
    }
}
