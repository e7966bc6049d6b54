//! Exactness under concurrency (issue 3): with a frozen clock, N threads admit exactly the burst;
//! with the clock advanced in steps, exactly the analytic allowance. Direct and keyed.

use std::sync::Barrier;
use std::time::Duration;

use tollgate::{KeyedLimiter, Limiter, ManualClock, Quota};

const CHECKS_PER_THREAD: u64 = 50_000;

#[test]
fn frozen_clock_direct_admits_exactly_burst() {
    for threads in [2u64, 4, 8] {
        for burst in [1u64, 7, 1000] {
            let quota = Quota::per_hour(burst).unwrap();
            let limiter = Limiter::with_clock(quota, ManualClock::starting_at(1));
            let admitted: u64 = std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(|| {
                            (0..CHECKS_PER_THREAD).filter(|_| limiter.check().is_allowed()).count() as u64
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).sum()
            });
            assert!(threads * CHECKS_PER_THREAD >= 100_000);
            assert_eq!(admitted, burst, "{threads} threads, burst {burst}");
        }
    }
}

/// Advances the clock by `step` between rounds; in each round every thread checks `per_round`
/// times. Demand always exceeds supply, so the bucket stays drained and the allowance after
/// elapsed time `t` is exactly `burst + floor(t / T)`.
fn stepped<F: Fn() -> bool + Sync>(
    threads: usize,
    rounds: u64,
    per_round: u64,
    clock: &ManualClock,
    step: Duration,
    check: F,
) -> u64 {
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut admitted = 0u64;
                    for _ in 0..rounds {
                        barrier.wait();
                        for _ in 0..per_round {
                            admitted += check() as u64;
                        }
                        barrier.wait();
                    }
                    admitted
                })
            })
            .collect();
        for _ in 0..rounds {
            barrier.wait();
            barrier.wait();
            clock.advance(step);
        }
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    })
}

#[test]
fn stepped_clock_direct_admits_exactly_the_allowance() {
    let quota = Quota::per_second(1000).unwrap().with_burst(50).unwrap(); // T = 1 ms
    let clock = ManualClock::new();
    let limiter = Limiter::with_clock(quota, clock.clone());
    let rounds = 200;
    let step = Duration::from_micros(3_500); // 3.5 cells per round
    let admitted = stepped(4, rounds, 100, &clock, step, || limiter.check().is_allowed());
    // Checks in round r happen at t = r·3.5 ms (r = 0..199): 50 + floor(199 · 3.5) = 746.
    assert_eq!(admitted, 50 + (199 * 3_500) / 1_000);
}

#[test]
fn frozen_and_stepped_keyed_admit_exactly_per_key() {
    for keys in [1u64, 100, 10_000] {
        let burst = 3;
        let quota = Quota::per_second(1000).unwrap().with_burst(burst).unwrap(); // T = 1 ms
        let clock = ManualClock::new();
        let limiter: KeyedLimiter<u64, _> = KeyedLimiter::with_clock(quota, clock.clone());
        let threads = 4;
        let rounds = 5;
        // Each thread walks all keys `per_key` times per round, from its own offset.
        let per_key = 2;
        let admitted = {
            let barrier = Barrier::new(threads + 1);
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads as u64)
                    .map(|t| {
                        let limiter = &limiter;
                        let barrier = &barrier;
                        s.spawn(move || {
                            let mut admitted = 0u64;
                            for _ in 0..rounds {
                                barrier.wait();
                                for i in 0..keys * per_key {
                                    let key = (i + t * 7919) % keys;
                                    admitted += limiter.check(&key).unwrap().is_allowed() as u64;
                                }
                                barrier.wait();
                            }
                            admitted
                        })
                    })
                    .collect();
                for _ in 0..rounds {
                    barrier.wait();
                    barrier.wait();
                    clock.advance(Duration::from_micros(2_500)); // 2.5 cells per round
                }
                handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
            })
        };
        // Demand per key per round is threads × per_key = 8 > supply. Round r at t = 2.5 r ms,
        // r = 0..4: allowance per key = 3 + floor(4 × 2.5) = 13.
        assert_eq!(admitted, keys * (burst + 10), "{keys} keys");
        assert_eq!(limiter.len() as u64, keys);
    }
}
