//! Every windowed algorithm, direct and keyed: frozen-clock exactness with 2–8 threads
//! (admitted == limit), exact totals across window boundaries as the clock advances, and
//! boundary cases (exactly at the edge, clock going backwards across an edge).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use tollgate::{
    Algorithm, DefaultHashBuilder, FixedWindow, KeyedLimiter, Limiter, ManualClock, Quota, QuotaError,
    SlidingLog, SlidingWindow,
};

const LIMIT: u64 = 1000;

/// Hammers one limiter from `threads` threads at a frozen instant; returns the admitted total.
fn admitted_frozen<A: Algorithm>(algorithm: A, threads: usize, per_thread: u64, cost: u32) -> u64 {
    let limiter = Arc::new(Limiter::with_algorithm(algorithm, ManualClock::starting_at(5)));
    let admitted = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (limiter, admitted, barrier) = (limiter.clone(), admitted.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..per_thread {
                    if limiter.check_n(cost).unwrap().is_allowed() {
                        admitted.fetch_add(u64::from(cost), Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    admitted.load(Ordering::Relaxed)
}

fn algorithms(limit: u64) -> (FixedWindow, SlidingWindow, SlidingLog) {
    let q = Quota::per_second(limit).unwrap();
    (FixedWindow::new(&q).unwrap(), SlidingWindow::new(&q).unwrap(), SlidingLog::new(&q).unwrap())
}

#[test]
fn frozen_clock_admits_exactly_the_limit_with_2_to_8_threads() {
    for threads in [2, 4, 8] {
        let (fixed, sliding, log) = algorithms(LIMIT);
        let per_thread = 2 * LIMIT / threads as u64;
        assert_eq!(admitted_frozen(fixed, threads, per_thread, 1), LIMIT, "fixed, {threads} threads");
        assert_eq!(admitted_frozen(sliding, threads, per_thread, 1), LIMIT, "sliding, {threads} threads");
        assert_eq!(admitted_frozen(log, threads, per_thread, 1), LIMIT, "log, {threads} threads");
        // Cost 3: 1000 = 333·3 + 1, so exactly 999 cells fit.
        let (fixed, sliding, log) = algorithms(LIMIT);
        assert_eq!(admitted_frozen(fixed, threads, per_thread, 3), 999);
        assert_eq!(admitted_frozen(sliding, threads, per_thread, 3), 999);
        assert_eq!(admitted_frozen(log, threads, per_thread, 3), 999);
    }
}

#[test]
fn keyed_frozen_clock_exact_per_key() {
    let q = Quota::per_minute(50).unwrap();
    let limiter: Arc<KeyedLimiter<u64, ManualClock, DefaultHashBuilder, SlidingLog>> =
        Arc::new(KeyedLimiter::build(
            SlidingLog::new(&q).unwrap(),
            ManualClock::new(),
            0,
            DefaultHashBuilder::default(),
        ));
    let admitted: Vec<Arc<AtomicU64>> = (0..4).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (limiter, admitted) = (limiter.clone(), admitted.clone());
            std::thread::spawn(move || {
                for i in 0..400u64 {
                    let key = i % 4;
                    if limiter.check(&key).unwrap().is_allowed() {
                        admitted[key as usize].fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for a in admitted {
        assert_eq!(a.load(Ordering::Relaxed), 50);
    }
}

/// Advances a manual clock in steps and counts admissions of unit checks made `per_step` at a
/// time: exact totals across window boundaries.
fn admitted_over_time<A: Algorithm>(algorithm: A, step: Duration, steps: u32, per_step: u32) -> u64 {
    let clock = ManualClock::new();
    let limiter = Limiter::with_algorithm(algorithm, clock.clone());
    let mut admitted = 0;
    for _ in 0..steps {
        for _ in 0..per_step {
            admitted += u64::from(limiter.check().is_allowed());
        }
        clock.advance(step);
    }
    admitted
}

#[test]
fn exact_totals_across_window_boundaries() {
    // 10 per second; 40 checks every 250 ms for 10 s (steps at t = 0, 0.25, …, 9.75 s).
    let (fixed, sliding, log) = algorithms(10);
    let step = Duration::from_millis(250);
    // Fixed: each of the 10 one-second windows admits exactly 10.
    assert_eq!(admitted_over_time(fixed, step, 40, 40), 100);
    // Log: 10 at t = 0, then 10 every time the stamps from one second earlier expire: at t =
    // 1, 2, …, 9 s. Exactly 100.
    assert_eq!(admitted_over_time(log, step, 40, 40), 100);
    // Sliding counter: against a u128 reference of `prev·(W − e) + (cur + 1)·W ≤ limit·W`.
    let sliding_total = admitted_over_time(sliding, step, 40, 40);
    let (w, limit) = (4u128, 10u128); // W = 4 steps of 250 ms
    let (mut index, mut prev, mut cur, mut total) = (0u128, 0u128, 0u128, 0u64);
    for t in 0..40u128 {
        if t / w != index {
            prev = if t / w == index + 1 { cur } else { 0 };
            cur = 0;
            index = t / w;
        }
        for _ in 0..40 {
            if prev * (w - t % w) + (cur + 1) * w <= limit * w {
                cur += 1;
                total += 1;
            }
        }
    }
    assert_eq!(sliding_total, total);
    assert_eq!(total, 81);
}

#[test]
fn edges_and_clock_going_back() {
    let (fixed, sliding, log) = algorithms(2);
    let second = 1_000_000_000;
    // Exactly at the edge: the new window starts at t = 1 s.
    let clock = ManualClock::starting_at(second - 1);
    let l = Limiter::with_algorithm(fixed, clock.clone());
    assert_eq!(l.check_n(2).unwrap().remaining(), 0);
    assert_eq!(l.check().retry_after(), Some(Duration::from_nanos(1)));
    clock.set(second);
    assert_eq!(l.check_n(2).unwrap().remaining(), 0);
    // Back across the edge: still the newer window's count (never re-opens the old window).
    clock.set(second - 1);
    let d = l.check();
    assert!(!d.is_allowed());
    assert_eq!(d.retry_after(), Some(Duration::from_nanos(second + 1)));

    let clock = ManualClock::starting_at(second);
    let l = Limiter::with_algorithm(sliding, clock.clone());
    assert!(l.check_n(2).unwrap().is_allowed());
    clock.set(second - 1);
    assert!(!l.check().is_allowed());
    clock.set(3 * second);
    assert_eq!(l.check_n(2).unwrap().remaining(), 0);

    let clock = ManualClock::starting_at(second);
    let l = Limiter::with_algorithm(log, clock.clone());
    assert!(l.check_n(2).unwrap().is_allowed());
    clock.set(0);
    assert!(!l.check().is_allowed());
    clock.set(2 * second - 1);
    assert!(!l.check().is_allowed());
    clock.set(2 * second);
    assert!(l.check_n(2).unwrap().is_allowed());
}

#[test]
fn counts_at_the_packed_field_max() {
    let second = Duration::from_secs(1);
    // A fixed window's count field outgrows any quota of its length (at most one cell per ns),
    // so the largest count it will hold is the window's length in ns.
    assert!(FixedWindow::max_limit(1_000_000_000) > 1_000_000_000);
    let max = 1_000_000_000;
    let fixed = FixedWindow::new(&Quota::new(max, second).unwrap()).unwrap();
    let l = Limiter::with_algorithm(fixed, ManualClock::new());
    // u32 cost: fill the field in u32-sized chunks.
    let mut left = max;
    while left > 0 {
        let n = left.min(u64::from(u32::MAX)) as u32;
        assert!(l.check_n(n).unwrap().is_allowed());
        left -= u64::from(n);
    }
    assert_eq!(l.peek().remaining(), 0);
    assert!(!l.check().is_allowed());
    assert!(matches!(Quota::new(max + 1, second), Err(QuotaError::TooLarge { .. })));

    let max = SlidingWindow::max_limit(1_000_000_000);
    let sliding = SlidingWindow::new(&Quota::new(max, second).unwrap()).unwrap();
    let clock = ManualClock::new();
    let l = Limiter::with_algorithm(sliding, clock.clone());
    assert_eq!(l.check_n(max as u32).unwrap().remaining(), 0);
    assert!(!l.check().is_allowed());
    clock.advance(second * 2);
    assert_eq!(l.check_n(max as u32).unwrap().remaining(), 0);
    assert!(SlidingWindow::new(&Quota::new(max + 1, second).unwrap()).is_err());

    let log = SlidingLog::new(&Quota::new(tollgate::window::MAX_LOG_LIMIT, second).unwrap()).unwrap();
    let l = Limiter::with_algorithm(log, ManualClock::new());
    assert_eq!(l.check_n(4096).unwrap().remaining(), 0);
    assert!(!l.check().is_allowed());
    assert!(SlidingLog::new(&Quota::new(4097, second).unwrap()).is_err());
}
