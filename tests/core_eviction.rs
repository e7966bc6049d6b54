//! Eviction without changing any decision (DESIGN.md §6) and bounded memory (`max_keys`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use tollgate::{CheckError, FullTablePolicy, KeyedLimiter, ManualClock, Quota};

#[test]
fn sweep_removes_only_keys_equal_to_fresh() {
    let clock = ManualClock::new();
    let limiter: KeyedLimiter<u64, _> = KeyedLimiter::with_clock("10/s".parse().unwrap(), clock.clone());
    for key in 0..100 {
        let _ = limiter.check(&key).unwrap();
    }
    assert!(limiter.check_n(&5, 9).unwrap().is_allowed()); // key 5 drained: TAT = 1 s
    assert_eq!(limiter.sweep(), 0, "every key has TAT > now");
    clock.advance(Duration::from_millis(100)); // TAT of the unit keys == now: fresh
    assert_eq!(limiter.sweep(), 99);
    assert_eq!(limiter.len(), 1);
    // Key 5 still carries its state (TAT 1 s at now 100 ms: 1 cell left). Nothing changed for it.
    assert_eq!(limiter.check_n(&5, 0).unwrap().remaining(), 1);
    assert!(limiter.check(&5).unwrap().is_allowed());
    assert_eq!(limiter.check(&5).unwrap().retry_after_nanos(), Some(100_000_000));
    // An evicted key behaves exactly like a fresh one.
    assert_eq!(limiter.check(&7).unwrap().remaining(), 9);
    assert_eq!(limiter.retain_recent(), 0);
}

/// Checker threads hammer a rotating set of keys while a sweeper thread sweeps continuously and
/// the clock advances a full bucket's worth between rounds, so every (key, round) activation
/// admits exactly `burst`, whether the key's cell was evicted in between or not.
#[test]
fn sweeper_racing_checkers_never_loses_or_over_admits() {
    let burst = 4u64;
    let quota = Quota::per_second(1000).unwrap().with_burst(burst).unwrap(); // T = 1 ms
    let clock = ManualClock::new();
    let limiter: Arc<KeyedLimiter<u64, _>> = Arc::new(KeyedLimiter::with_clock(quota, clock.clone()));
    let keys = 64u64;
    let rounds = 150u64;
    let threads = 3usize;
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(threads + 1);
    let mut evicted_total = 0usize;
    let admitted: u64 = std::thread::scope(|s| {
        let sweeper = s.spawn(|| {
            let mut evicted = 0;
            while !stop.load(Ordering::Relaxed) {
                evicted += limiter.sweep();
            }
            evicted
        });
        let checkers: Vec<_> = (0..threads as u64)
            .map(|t| {
                let limiter = &limiter;
                let barrier = &barrier;
                s.spawn(move || {
                    let mut admitted = 0u64;
                    for round in 0..rounds {
                        barrier.wait();
                        // Threads 1 and 2 check through a handle pinned for the round:
                        // cells evicted under it stay allocated, and its checks go through the
                        // same tombstone protocol as unpinned ones (a check that meets a
                        // tombstone is rare on 2 cores; the loom model covers that path).
                        let pinned = (t > 0).then(|| limiter.pin());
                        // Half the keys are active in a round (alternating), so the other half
                        // go idle and get evicted while the active half are being checked.
                        for i in 0..keys * 3 {
                            let key = (i + t * 13) % keys;
                            if key % 2 == round % 2 {
                                let decision = match &pinned {
                                    Some(pinned) => pinned.check(&key),
                                    None => limiter.check(&key),
                                };
                                admitted += decision.unwrap().is_allowed() as u64;
                            }
                        }
                        drop(pinned);
                        barrier.wait();
                    }
                    admitted
                })
            })
            .collect();
        for _ in 0..rounds {
            barrier.wait();
            barrier.wait();
            clock.advance(Duration::from_millis(burst)); // refills the whole bucket
        }
        let admitted = checkers.into_iter().map(|h| h.join().unwrap()).sum();
        stop.store(true, Ordering::Relaxed);
        evicted_total = sweeper.join().unwrap();
        admitted
    });
    // Each round activates keys/2 keys, each demanded 3 × threads = 9 > burst times.
    assert_eq!(admitted, rounds * (keys / 2) * burst);
    assert!(evicted_total > 0, "the sweeper must actually have evicted keys during the run");
}

#[test]
fn sweeper_racing_checkers_with_clock_advancing_mid_round() {
    // Here the clock moves while checks run; the exact total is the analytic allowance of a
    // continuously drained bucket per key.
    let quota = Quota::per_second(1000).unwrap().with_burst(2).unwrap(); // T = 1 ms
    let clock = ManualClock::new();
    let limiter: KeyedLimiter<u64, _> = KeyedLimiter::with_clock(quota, clock.clone());
    let stop = AtomicBool::new(false);
    let admitted: u64 = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                limiter.sweep();
            }
        });
        let checkers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    (0..200_000).filter(|i| limiter.check(&(i % 2)).unwrap().is_allowed()).count() as u64
                })
            })
            .collect();
        let ticker = s.spawn(|| {
            for _ in 0..500 {
                clock.advance(Duration::from_micros(100));
                std::thread::yield_now();
            }
        });
        ticker.join().unwrap();
        let admitted = checkers.into_iter().map(|h| h.join().unwrap()).sum();
        stop.store(true, Ordering::Relaxed);
        admitted
    });
    // Never more than the allowance of 2 keys over the 50 ms the clock moved: 2 × (2 + 50).
    assert!(admitted <= 2 * (2 + 50), "over-admitted: {admitted}");
    assert!(admitted >= 4, "at least each key's initial burst");
}

#[test]
fn max_keys_bounds_the_table_under_a_flood_of_new_keys() {
    let clock = ManualClock::new();
    let limiter: KeyedLimiter<u64, _> =
        KeyedLimiter::with_clock(Quota::per_second(10).unwrap(), clock.clone()).max_keys(10_000);
    let mut rejected = 0u64;
    for key in 0..1_000_000u64 {
        match limiter.check(&key) {
            Ok(d) => assert!(d.is_allowed()),
            Err(CheckError::KeyLimit { max_keys }) => {
                assert_eq!(max_keys, 10_000);
                rejected += 1;
            }
            Err(e) => panic!("{e}"),
        }
        assert!(limiter.len() <= 10_000);
    }
    // The clock never moved, so no key ever became idle: exactly the first 10⁴ got in.
    assert_eq!(rejected, 990_000);
    assert_eq!(limiter.len(), 10_000);
    // Existing keys are unaffected by the full table.
    assert!(limiter.check(&17).unwrap().is_allowed());
    // Once keys go idle, the inline sweep (default policy) makes room for new ones.
    clock.advance(Duration::from_secs(1));
    assert!(limiter.check(&5_000_000).unwrap().is_allowed());
    assert!(limiter.len() <= 10_000);
}

#[test]
fn max_keys_reject_policy_does_not_sweep_and_is_exact_across_threads() {
    let clock = ManualClock::new();
    let limiter: KeyedLimiter<u64, _> =
        KeyedLimiter::with_clock(Quota::per_second(10).unwrap(), clock.clone())
            .max_keys(1000)
            .full_table_policy(FullTablePolicy::Reject);
    let inserted: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4u64)
            .map(|t| {
                let limiter = &limiter;
                s.spawn(move || {
                    (0..5_000u64).filter(|i| limiter.check(&(t * 1_000_000 + i)).is_ok()).count() as u64
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(inserted, 1000);
    assert_eq!(limiter.len(), 1000);
    clock.advance(Duration::from_secs(1));
    assert!(matches!(limiter.check(&u64::MAX), Err(CheckError::KeyLimit { max_keys: 1000 })));
    assert_eq!(limiter.sweep(), 1000);
    assert!(limiter.check(&u64::MAX).is_ok());
}

#[test]
fn background_sweeper_evicts_and_stops_on_drop() {
    let clock = ManualClock::new();
    let limiter: Arc<KeyedLimiter<u64, _>> =
        Arc::new(KeyedLimiter::with_clock(Quota::per_second(10).unwrap(), clock.clone()));
    for key in 0..50 {
        let _ = limiter.check(&key);
    }
    clock.advance(Duration::from_secs(1));
    let handle = limiter.spawn_sweeper(Duration::from_millis(1));
    assert!(handle.is_running());
    // Wait (bounded) for the sweeper to do its job; this asserts behaviour, not speed.
    for _ in 0..10_000 {
        if limiter.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(limiter.is_empty());
    drop(handle);
    let _ = limiter.check(&1);
    clock.advance(Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(limiter.len(), 1, "a dropped sweeper no longer sweeps");
}

/// A sweep judges every key by the default's parameters: a log key overridden to a shorter
/// window stays until it is idle under the default's (longer) one, so clearing the override
/// later finds every stamp the default counts.
#[test]
fn sweep_judges_override_keys_by_the_default_window() {
    use tollgate::{DefaultHashBuilder, SlidingLog};
    let clock = ManualClock::new();
    let log = SlidingLog::from_quota("2/h".parse().unwrap()).unwrap();
    let limiter: KeyedLimiter<u64, _, _, SlidingLog> =
        KeyedLimiter::build(log, clock.clone(), 0, DefaultHashBuilder::default());
    limiter.set_quota(&1, "2/s".parse().unwrap()).unwrap();
    assert!(limiter.check(&1).unwrap().is_allowed());
    assert!(limiter.check(&1).unwrap().is_allowed());
    assert!(limiter.check(&2).unwrap().is_allowed());
    clock.advance(Duration::from_secs(2));
    // Key 1's own 1 s window is over, the default's hour is not: both keys are kept.
    assert_eq!(limiter.sweep(), 0);
    limiter.clear_quota(&1);
    assert!(!limiter.check(&1).unwrap().is_allowed(), "its two stamps count under 2/h");
    clock.advance(Duration::from_secs(3600));
    assert_eq!(limiter.sweep(), 2);
}

/// A pinned handle decides exactly as the limiter does, on every path: existing and new keys,
/// overrides, cost 0, costs above the capacity, a full table, and keys evicted while pinned.
#[test]
fn pinned_checks_decide_exactly_as_unpinned_ones() {
    let clock = ManualClock::new();
    let make = || {
        KeyedLimiter::<u64, _>::with_clock("5/s".parse().unwrap(), clock.clone())
            .max_keys(8)
            .full_table_policy(FullTablePolicy::Reject)
    };
    let (plain, pinned_limiter) = (make(), make());
    let pinned = pinned_limiter.pin();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let (mut allowed, mut denied, mut errors, mut evicted) = (0, 0, 0, 0);
    for step in 0..20_000u32 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let key = rng % 12;
        let cost = (rng >> 8) as u32 % 7; // 0..=6: cost 0 and above the burst of 5 included
        match step % 1000 {
            100 => {
                plain.set_quota(&3, "2/s".parse().unwrap()).unwrap();
                pinned.limiter().set_quota(&3, "2/s".parse().unwrap()).unwrap();
            }
            600 => {
                plain.clear_quota(&3);
                pinned.limiter().clear_quota(&3);
            }
            900 => {
                let n = plain.sweep();
                assert_eq!(n, pinned.limiter().sweep(), "step {step}");
                evicted += n;
            }
            _ => {}
        }
        let expected = plain.check_n(&key, cost);
        let got = pinned.check_n(&key, cost);
        assert_eq!(format!("{expected:?}"), format!("{got:?}"), "step {step}, key {key}, cost {cost}");
        match got {
            Ok(d) if d.is_allowed() => allowed += 1,
            Ok(_) => denied += 1,
            Err(_) => errors += 1,
        }
        assert_eq!(plain.len(), pinned.limiter().len());
        if rng.is_multiple_of(5) {
            clock.advance(Duration::from_millis(rng % 700));
        }
    }
    // Every path was taken.
    assert!(
        allowed > 1000 && denied > 1000 && errors > 1000 && evicted > 0,
        "{allowed} {denied} {errors} {evicted}"
    );
}

/// A shared manual clock whose readings, like TSC readings on two cores, may trail another
/// thread's by up to 1 µs.
#[derive(Clone)]
struct Skewed(ManualClock);

impl tollgate::Clock for Skewed {
    fn now(&self) -> tollgate::Nanos {
        self.0.now()
    }
    fn skew(&self) -> tollgate::Nanos {
        1_000
    }
}

/// Review finding: the sweeper judged idleness at its own reading, so a checker whose reading
/// trailed it by 0.5 µs found a fresh cell and was admitted where the evicted state denied. Now
/// a key is idle at `now − skew`: within the skew the sweep keeps it and the checker gets the
/// unswept decision; past it, the key goes, and nothing a trailing reading could see changes.
#[test]
fn eviction_changes_no_decision_for_a_reading_within_the_clocks_skew() {
    use tollgate::{Algorithm, DefaultHashBuilder, FixedWindow, Gcra, SlidingLog, SlidingWindow};
    /// A burst of 3 at 1 µs before a window edge; the key is fresh `reset_after` later.
    fn scenario<A: Algorithm>(name: &str, algorithm: A) {
        let at = 999_999_000;
        let decide = |sweep: bool| {
            let manual = ManualClock::new();
            let l: KeyedLimiter<u64, Skewed, DefaultHashBuilder, A> = KeyedLimiter::build(
                algorithm.clone(),
                Skewed(manual.clone()),
                0,
                DefaultHashBuilder::default(),
            );
            manual.set(at);
            let burst = l.check_n(&7, 3).unwrap();
            assert!(burst.is_allowed(), "{name}");
            let edge = at + burst.reset_after_nanos();
            manual.set(edge + 100); // the sweeper's reading: fresh by then
            if sweep {
                assert_eq!(l.sweep(), 0, "{name}: idle only at now − skew");
            }
            manual.set(edge - 400); // a checker's reading, 0.5 µs behind the sweeper's
            let d = l.check_n(&7, 3).unwrap();
            (d.is_allowed(), d.remaining())
        };
        assert_eq!(decide(true), decide(false), "{name}: the sweep changed a decision");
        assert!(!decide(false).0, "{name}: the trailing check sees the burst");
        // Past the skew the key is evicted.
        let manual = ManualClock::new();
        let l: KeyedLimiter<u64, Skewed, DefaultHashBuilder, A> =
            KeyedLimiter::build(algorithm, Skewed(manual.clone()), 0, DefaultHashBuilder::default());
        manual.set(at);
        let edge = at + l.check_n(&7, 3).unwrap().reset_after_nanos();
        manual.set(edge + 999);
        assert_eq!(l.sweep(), 0, "{name}: not yet idle at now − skew");
        manual.set(edge + 1_000);
        assert_eq!(l.sweep(), 1, "{name}: idle at now − skew");
    }
    let q = Quota::per_second(3).unwrap();
    scenario("fixed window", FixedWindow::from_quota(q).unwrap());
    scenario("gcra", Gcra::from_quota(q));
    scenario("sliding log", SlidingLog::from_quota(q).unwrap());
    scenario("sliding window", SlidingWindow::from_quota(q).unwrap());
}
