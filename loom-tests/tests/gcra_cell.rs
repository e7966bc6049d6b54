//! Model (1): concurrent GCRA checks on one cell (`Limiter`), through the real CAS loop in
//! `src/cell.rs`. See the crate docs for the preemption bound.
#![cfg(tollgate_loom)]

use std::sync::Arc;
use std::time::Duration;

use loom::thread;
use loom_tests::{linearizations, model, Observed, Op};
use tollgate::{Decision, Gcra, Limiter, ManualClock, Quota};

const SECOND: u64 = 1_000_000_000;

/// `burst` per second, burst `burst`: `T = 1 s / burst`.
fn quota(burst: u64) -> Quota {
    Quota::per_second(burst).expect("a valid test quota")
}

fn spawn_checks(limiter: &Arc<Limiter<ManualClock>>, checks: usize) -> thread::JoinHandle<Vec<Decision>> {
    let limiter = Arc::clone(limiter);
    thread::spawn(move || (0..checks).map(|_| limiter.check()).collect())
}

/// Frozen clock: `threads` threads (the model's main thread is one of them) each run `checks`
/// unit checks. Exactly `burst` are admitted, their `remaining` values are `burst−1, …, 0`,
/// every denial says `retry_after = T`, and the per-thread outcomes are those of some
/// sequential order.
fn frozen(burst: u64, threads: usize, checks: usize) {
    let observed = Observed::new();
    let seen = observed.clone();
    model(move || {
        let limiter = Arc::new(Limiter::with_clock(quota(burst), ManualClock::new()));
        let handles: Vec<_> = (1..threads).map(|_| spawn_checks(&limiter, checks)).collect();
        let mut per_thread: Vec<Vec<Decision>> = Vec::new();
        per_thread.push((0..checks).map(|_| limiter.check()).collect());
        per_thread.extend(handles.into_iter().map(|h| h.join().expect("checker thread")));

        let t = SECOND / burst;
        let all: Vec<Decision> = per_thread.iter().flatten().copied().collect();
        let mut remaining: Vec<u64> =
            all.iter().filter(|d| d.is_allowed()).map(Decision::remaining).collect();
        remaining.sort_unstable();
        assert_eq!(remaining, (0..burst).collect::<Vec<_>>(), "exactly `burst` admitted: {all:?}");
        for d in all.iter().filter(|d| !d.is_allowed()) {
            assert_eq!(d.retry_after(), Some(Duration::from_nanos(t)), "{d:?}");
            assert_eq!(d.remaining(), 0, "{d:?}");
        }
        let after = limiter.check();
        assert!(!after.is_allowed(), "capacity already spent: {after:?}");

        let mut outcome: Vec<bool> = all.iter().map(Decision::is_allowed).collect();
        outcome.push(after.is_allowed());
        seen.record(outcome);
    });
    // Every sequential order's outcome was reached, and nothing else.
    let spec = vec![vec![Op::Check; checks]; threads];
    observed.assert_exactly(linearizations(&Gcra::from_quota(quota(burst)), 0, 0, &spec));
}

#[test]
fn frozen_burst_1_two_threads() {
    frozen(1, 2, 1);
}

#[test]
fn frozen_burst_1_three_threads() {
    frozen(1, 3, 1);
}

#[test]
fn frozen_burst_2_three_threads() {
    frozen(2, 3, 1);
}

#[test]
fn frozen_burst_2_two_threads_two_checks_each() {
    frozen(2, 2, 2);
}

/// One thread advances the clock by `advance` then checks once; another checks twice. The
/// admitted total never passes `burst + ⌊elapsed / T⌋` (elapsed = the final clock, as the key
/// starts fresh at 0), and the set of totals seen across executions is exactly `expected`
/// (fewer than the allowance happen when a check read the clock before the advance but lost
/// its CAS to one that read it after).
fn advancing(burst: u64, advance: u64, expected: &[u64]) {
    let observed = Observed::new();
    let seen = observed.clone();
    model(move || {
        let clock = ManualClock::new();
        let limiter = Arc::new(Limiter::with_clock(quota(burst), clock.clone()));
        let advancer = {
            let limiter = Arc::clone(&limiter);
            let clock = clock.clone();
            thread::spawn(move || {
                clock.advance(Duration::from_nanos(advance));
                limiter.check()
            })
        };
        let mut decisions = vec![limiter.check(), limiter.check()];
        decisions.push(advancer.join().expect("advancing thread"));

        let t = SECOND / burst;
        let allowance = burst + advance / t;
        let admitted = decisions.iter().filter(|d| d.is_allowed()).count() as u64;
        assert!(admitted <= allowance, "admitted {admitted} > allowance {allowance}: {decisions:?}");
        // Whatever happened, the cell ends up no more permissive than the allowance left.
        let extra = (0..=burst).take_while(|_| limiter.check().is_allowed()).count() as u64;
        assert!(admitted + extra <= allowance, "{admitted} + {extra} > {allowance}");
        seen.record(admitted);
    });
    observed.assert_exactly(expected.iter().copied());
}

#[test]
fn advancing_burst_1_by_one_interval() {
    // Allowance 1 + 1 = 2. One: a check at 0 lost its CAS to the advancer's check at T.
    advancing(1, SECOND, &[1, 2]);
}

#[test]
fn advancing_burst_2_by_half_an_interval() {
    // T = 0.5 s, advance 0.25 s: allowance 2 + 0 = 2, and always exactly 2 are admitted.
    advancing(2, SECOND / 4, &[2]);
}

#[test]
fn advancing_burst_2_by_one_interval() {
    // Allowance 2 + 1 = 3: all three pass only if both plain checks run before the advance.
    advancing(2, SECOND / 2, &[2, 3]);
}
