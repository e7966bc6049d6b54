//! Eviction of idle window and log keys is lossless: with a sweeper thread running, every key
//! still admits exactly its limit in every window (a retired key's fresh cell changes nothing).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use std::time::Duration;

use tollgate::{
    Algorithm, Composite, DefaultHashBuilder, FixedWindow, Gcra, KeyedLimiter, ManualClock, Quota,
    SlidingLog, SlidingWindow,
};

const SECOND: u64 = 1_000_000_000;

fn run<A: Algorithm>(algorithm: A, limit: u64, windows: u64, keys: u64) {
    let clock = ManualClock::new();
    let limiter: Arc<KeyedLimiter<u64, ManualClock, DefaultHashBuilder, A>> =
        Arc::new(KeyedLimiter::build(algorithm, clock.clone(), 0, DefaultHashBuilder::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let evicted = Arc::new(AtomicU64::new(0));
    let sweeper = {
        let (limiter, stop, evicted) = (limiter.clone(), stop.clone(), evicted.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                evicted.fetch_add(limiter.sweep() as u64, Ordering::Relaxed);
                std::thread::yield_now();
            }
        })
    };
    for window in 0..windows {
        // Two windows apart, so the sliding counter's previous window is empty as well.
        clock.set(2 * window * SECOND + 1);
        let admitted: Vec<Arc<AtomicU64>> = (0..keys).map(|_| Arc::new(AtomicU64::new(0))).collect();
        let checkers: Vec<_> = (0..3)
            .map(|t| {
                let (limiter, admitted) = (limiter.clone(), admitted.clone());
                std::thread::spawn(move || {
                    for i in 0..(3 * limit * keys) {
                        let key = (i + t) % keys;
                        if limiter.check(&key).unwrap().is_allowed() {
                            admitted[key as usize].fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for c in checkers {
            c.join().unwrap();
        }
        for (key, a) in admitted.iter().enumerate() {
            assert_eq!(a.load(Ordering::Relaxed), limit, "window {window}, key {key}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    sweeper.join().unwrap();
    // Everything is idle two windows later: one final sweep empties the table.
    clock.set(2 * windows * SECOND + 1);
    limiter.sweep();
    assert!(limiter.is_empty());
}

#[test]
fn fixed_window_eviction_is_lossless() {
    run(FixedWindow::from_quota(Quota::per_second(20).unwrap()).unwrap(), 20, 20, 8);
}

#[test]
fn sliding_window_eviction_is_lossless() {
    run(SlidingWindow::from_quota(Quota::per_second(20).unwrap()).unwrap(), 20, 20, 8);
}

#[test]
fn sliding_log_eviction_is_lossless() {
    run(SlidingLog::from_quota(Quota::per_second(20).unwrap()).unwrap(), 20, 20, 8);
}

#[test]
fn composite_eviction_is_lossless() {
    let fixed = FixedWindow::from_quota(Quota::per_second(20).unwrap()).unwrap();
    let sliding = SlidingWindow::from_quota(Quota::per_second(20).unwrap()).unwrap();
    let gcra = Gcra::new(&Quota::per_second(20).unwrap()).unwrap();
    run(Composite::of(fixed, sliding), 20, 20, 8);
    run(Composite::of(gcra, fixed), 20, 20, 8);
}

/// A composite whose second limit outlives the first (10/s and 15 per minute): sweeps while
/// only the first is idle keep the key (evicting it would forget the per-minute count), and the
/// key goes once both are idle.
#[test]
fn composite_key_stays_while_its_longer_limit_is_busy() {
    let clock = ManualClock::new();
    let per_second = Gcra::new(&Quota::per_second(10).unwrap()).unwrap();
    let per_minute = FixedWindow::from_quota(Quota::per_minute(15).unwrap()).unwrap();
    let limiter: KeyedLimiter<u64, ManualClock, DefaultHashBuilder, Composite<Gcra, FixedWindow>> =
        KeyedLimiter::build(
            Composite::of(per_second, per_minute),
            clock.clone(),
            0,
            DefaultHashBuilder::default(),
        );
    assert_eq!(limiter.check_n(&7, 10).unwrap().remaining(), 0);
    for _ in 0..30 {
        clock.advance(Duration::from_secs(1));
        assert_eq!(limiter.sweep(), 0, "the per-minute window still counts 10+");
    }
    // 30 s in: the per-second burst is back, the per-minute window has 5 left.
    assert_eq!(limiter.check_n(&7, 5).unwrap().remaining(), 0);
    assert!(!limiter.check(&7).unwrap().is_allowed());
    clock.set(60 * SECOND);
    assert_eq!(limiter.sweep(), 1, "both idle at the next minute");
    assert!(limiter.is_empty());
    assert_eq!(limiter.check_n(&7, 10).unwrap().remaining(), 0);
}

/// A composite holding a sliding log is evicted once both are idle (the log is held by its head
/// word once its whole ring has expired), and kept while the log's ring still counts.
#[test]
fn composite_with_a_log_is_evicted_when_idle() {
    let clock = ManualClock::new();
    let gcra = Gcra::new(&Quota::per_second(2).unwrap()).unwrap();
    let log = SlidingLog::from_quota(Quota::per_minute(3).unwrap()).unwrap();
    let limiter: KeyedLimiter<u64, ManualClock, DefaultHashBuilder, Composite<Gcra, SlidingLog>> =
        KeyedLimiter::build(Composite::of(gcra, log), clock.clone(), 0, DefaultHashBuilder::default());
    assert!(limiter.check_n(&1, 2).unwrap().is_allowed());
    clock.advance(Duration::from_secs(5)); // GCRA idle, the log still holds 2 of 3 for 55 s
    assert_eq!(limiter.sweep(), 0);
    assert_eq!(limiter.check(&1).unwrap().remaining(), 0); // the kept state, exactly
    assert!(!limiter.check(&1).unwrap().is_allowed());
    clock.set(65 * SECOND); // every stamp expired
    assert_eq!(limiter.sweep(), 1);
    assert!(limiter.is_empty());
    assert_eq!(limiter.check_n(&1, 2).unwrap().remaining(), 0); // fresh: GCRA's burst of 2
}

/// With a log in the composite, the lossless-eviction stress holds too (a sweeper thread
/// running against three checkers).
#[test]
fn composite_with_a_log_eviction_is_lossless() {
    let gcra = Gcra::new(&Quota::per_second(20).unwrap()).unwrap();
    let log = SlidingLog::from_quota(Quota::per_second(20).unwrap()).unwrap();
    run(Composite::of(gcra, log), 20, 20, 8);
}

/// A full table of composite keys regains room once they go idle.
#[test]
fn a_full_table_of_composite_keys_with_a_log_regains_room() {
    let clock = ManualClock::new();
    let gcra = Gcra::new(&Quota::per_second(1).unwrap()).unwrap();
    let log = SlidingLog::from_quota(Quota::per_hour(1).unwrap()).unwrap();
    let limiter: KeyedLimiter<u64, ManualClock, DefaultHashBuilder, Composite<Gcra, SlidingLog>> =
        KeyedLimiter::build(Composite::of(gcra, log), clock.clone(), 0, DefaultHashBuilder::default())
            .max_keys(3);
    for key in 0..3 {
        assert!(limiter.check(&key).unwrap().is_allowed());
    }
    assert!(limiter.check(&3).is_err(), "full");
    clock.set(3_600 * SECOND);
    assert!(limiter.check(&3).unwrap().is_allowed(), "the inline sweep made room");
    assert!(limiter.len() <= 3);
}

#[test]
#[ignore = "stress: cargo test --release --test window_eviction -- --ignored"]
fn eviction_stress_large() {
    run(FixedWindow::from_quota(Quota::per_second(100).unwrap()).unwrap(), 100, 200, 64);
    run(SlidingWindow::from_quota(Quota::per_second(100).unwrap()).unwrap(), 100, 200, 64);
    run(SlidingLog::from_quota(Quota::per_second(100).unwrap()).unwrap(), 100, 200, 64);
    let fixed = FixedWindow::from_quota(Quota::per_second(100).unwrap()).unwrap();
    let gcra = Gcra::new(&Quota::per_second(100).unwrap()).unwrap();
    run(Composite::of(gcra, fixed), 100, 200, 64);
    let gcra = Gcra::new(&Quota::per_second(100).unwrap()).unwrap();
    let log = SlidingLog::from_quota(Quota::per_second(100).unwrap()).unwrap();
    run(Composite::of(gcra, log), 100, 200, 64);
}
