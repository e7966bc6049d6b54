//! Model (3): `reset()` racing `check()`. With the clock frozen, every execution's outcome
//! (each operation's result, then whether one more check passes) must be that of some
//! sequential order of the operations, and every such order's outcome must be reached. See the
//! crate docs for the preemption bound.
#![cfg(tollgate_loom)]

use std::sync::Arc;

use loom::thread;
use loom_tests::{linearizations, model, Observed, Op};
use tollgate::{Gcra, KeyedLimiter, Limiter, ManualClock, Quota};

const SECOND: u64 = 1_000_000_000;

fn quota(burst: u64) -> Quota {
    Quota::per_second(burst).expect("a valid test quota")
}

/// A spent burst-1 limiter (TAT = T): the main thread resets while another thread checks.
/// Exactly two outcomes: check then reset (check denied, a later check passes) or reset then
/// check (check admitted, a later check is denied).
#[test]
fn reset_vs_check_on_a_spent_limiter() {
    let observed = Observed::new();
    let seen = observed.clone();
    model(move || {
        let limiter = Arc::new(Limiter::with_clock(quota(1), ManualClock::new()));
        assert!(limiter.check().is_allowed());
        let checker = {
            let limiter = Arc::clone(&limiter);
            thread::spawn(move || limiter.check().is_allowed())
        };
        limiter.reset();
        let checked = checker.join().expect("checker");
        let after = limiter.check().is_allowed();
        seen.record(vec![true, checked, after]);
    });
    let expected = [vec![true, false, true], vec![true, true, false]];
    let spec = [vec![Op::Reset], vec![Op::Check]];
    assert_eq!(
        linearizations(&Gcra::from_quota(quota(1)), SECOND, 0, &spec),
        expected.iter().cloned().collect()
    );
    observed.assert_exactly(expected);
}

/// A fresh burst-1 limiter, two checkers and a reset (in the main thread): the results are
/// exactly those of the six sequential orders — two checks pass only if the reset falls
/// between them.
#[test]
fn reset_vs_two_checks() {
    let observed = Observed::new();
    let seen = observed.clone();
    model(move || {
        let limiter = Arc::new(Limiter::with_clock(quota(1), ManualClock::new()));
        let checkers: Vec<_> = (0..2)
            .map(|_| {
                let limiter = Arc::clone(&limiter);
                thread::spawn(move || limiter.check().is_allowed())
            })
            .collect();
        limiter.reset();
        let mut outcome = vec![true];
        outcome.extend(checkers.into_iter().map(|h| h.join().expect("checker")));
        outcome.push(limiter.check().is_allowed());
        seen.record(outcome);
    });
    let spec = [vec![Op::Reset], vec![Op::Check], vec![Op::Check]];
    observed.assert_exactly(linearizations(&Gcra::from_quota(quota(1)), 0, 0, &spec));
}

/// The keyed form: `reset(&key)` racing `check(&key)` on a spent key has the same two outcomes
/// as the direct limiter.
#[test]
fn keyed_reset_vs_check() {
    let observed = Observed::new();
    let seen = observed.clone();
    model(move || {
        let limiter: Arc<KeyedLimiter<u64, ManualClock>> =
            Arc::new(KeyedLimiter::with_clock(quota(1), ManualClock::new()));
        assert!(limiter.check(&7).expect("new key").is_allowed());
        let checker = {
            let limiter = Arc::clone(&limiter);
            thread::spawn(move || limiter.check(&7).expect("existing key").is_allowed())
        };
        limiter.reset(&7);
        let checked = checker.join().expect("checker");
        let after = limiter.check(&7).expect("existing key").is_allowed();
        seen.record(vec![true, checked, after]);
    });
    observed.assert_exactly([vec![true, false, true], vec![true, true, false]]);
}
