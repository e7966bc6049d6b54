//! Waiting: blocking and async waits sleep exactly `retry_after` (never spin), jitter stays in
//! bounds, impossible costs fail at once. Time is a ManualClock advanced by the "sleep".

use std::time::Duration;

use tollgate::wait::{Jitter, MIN_SLEEP};
use tollgate::{
    CheckError, DefaultHashBuilder, FixedWindow, KeyedLimiter, Limiter, ManualClock, Quota, SlidingLog,
};

#[test]
fn blocking_wait_sleeps_exactly_retry_after() {
    let clock = ManualClock::new();
    let limiter = Limiter::with_clock(Quota::per_second(4).unwrap(), clock.clone());
    let mut sleeps = Vec::new();
    for _ in 0..6 {
        let d = limiter
            .wait_n_with(1, Jitter::NONE, |d| {
                sleeps.push(d);
                clock.advance(d);
            })
            .unwrap();
        assert!(d.is_allowed());
    }
    // 4 immediately, then one every 250 ms: two sleeps of exactly 250 ms, no spinning.
    assert_eq!(sleeps, vec![Duration::from_millis(250); 2]);
}

#[test]
fn fixed_window_wait_sleeps_to_the_next_window() {
    let clock = ManualClock::starting_at(300_000_000);
    let fixed = FixedWindow::from_quota(Quota::per_second(2).unwrap()).unwrap();
    let limiter = Limiter::with_algorithm(fixed, clock.clone());
    let mut sleeps = Vec::new();
    let mut sleep = |d| {
        sleeps.push(d);
        clock.advance(d);
    };
    assert_eq!(limiter.wait_n_with(2, Jitter::NONE, &mut sleep).unwrap().remaining(), 0);
    assert_eq!(limiter.wait_n_with(2, Jitter::NONE, &mut sleep).unwrap().remaining(), 0);
    assert_eq!(sleeps, vec![Duration::from_millis(700)]);
}

#[test]
fn impossible_costs_fail_without_waiting() {
    let clock = ManualClock::new();
    let limiter = Limiter::with_clock(Quota::per_second(3).unwrap(), clock.clone());
    let mut slept = 0;
    let err = limiter.wait_n_with(4, Jitter::NONE, |_| slept += 1).unwrap_err();
    assert_eq!((err.cost, err.capacity, slept), (4, 3, 0));

    let keyed: KeyedLimiter<String, _> = KeyedLimiter::with_clock(Quota::per_second(3).unwrap(), clock);
    let err = keyed.wait_key_n_with("k", 9, Jitter::NONE, |_| slept += 1).unwrap_err();
    assert_eq!(err, CheckError::InsufficientCapacity { cost: 9, capacity: 3 });
    assert_eq!(slept, 0);
}

#[test]
fn jitter_is_added_and_bounded() {
    let clock = ManualClock::new();
    let limiter = Limiter::with_clock(Quota::per_second(1).unwrap(), clock.clone());
    let jitter = Jitter::up_to(Duration::from_millis(100));
    let mut sleeps = Vec::new();
    for _ in 0..20 {
        let d = limiter
            .wait_n_with(1, jitter, |d| {
                sleeps.push(d);
                clock.advance(d);
            })
            .unwrap();
        assert!(d.is_allowed());
    }
    assert_eq!(sleeps.len(), 19);
    // Each sleep is the remaining retry_after plus at most 100 ms of jitter; jitter makes the
    // next retry_after shorter, so every sleep lies in [MIN_SLEEP, 1 s + 100 ms].
    for d in &sleeps {
        assert!(*d >= MIN_SLEEP && *d <= Duration::from_millis(1100), "{d:?}");
    }
    for _ in 0..1000 {
        assert!(jitter.sample() <= Duration::from_millis(100));
    }
}

#[test]
fn keyed_async_wait_with_a_custom_sleep() {
    let clock = ManualClock::new();
    let log = SlidingLog::from_quota(Quota::per_second(2).unwrap()).unwrap();
    let limiter: KeyedLimiter<String, _, _, SlidingLog> =
        KeyedLimiter::build(log, clock.clone(), 0, DefaultHashBuilder::default());
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut total_sleep = Duration::ZERO;
    rt.block_on(async {
        for _ in 0..5 {
            let d = limiter
                .until_key_n_ready_with("k", 1, Jitter::NONE, |d| {
                    total_sleep += d;
                    clock.advance(d);
                    std::future::ready(())
                })
                .await
                .unwrap();
            assert!(d.is_allowed());
        }
    });
    // Two at t = 0, two at t = 1 s, one at t = 2 s.
    assert_eq!(total_sleep, Duration::from_secs(2));
}

#[cfg(feature = "tokio")]
#[test]
fn tokio_until_ready_on_the_real_clock() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    rt.block_on(async {
        let limiter = Limiter::new(Quota::per_second(1000).unwrap());
        for _ in 0..1003 {
            assert!(limiter.until_ready().await.is_allowed());
        }
        let keyed: KeyedLimiter<u32> = KeyedLimiter::new(Quota::per_second(1000).unwrap());
        assert!(keyed.until_key_n_ready(&1, 1000).await.unwrap().is_allowed());
        assert!(keyed.until_key_ready(&1).await.unwrap().is_allowed());
        assert!(limiter.until_n_ready(1001).await.is_err());
    });
}

/// A bounded wait: admitted when the next chance is within the timeout (after sleeping just
/// that long), refused at once, with no sleep, when it is past it, and never sleeping past the
/// deadline, jitter included.
#[test]
fn bounded_waits_give_up_at_once_when_the_next_chance_is_too_late() {
    use tollgate::wait::WaitError;
    let clock = ManualClock::new();
    let limiter = Limiter::with_clock(Quota::per_second(1).unwrap(), clock.clone());
    let slept = std::cell::Cell::new(Duration::ZERO);
    let sleep = |d: Duration| {
        slept.set(slept.get() + d);
        clock.advance(d);
    };
    assert!(limiter.check().is_allowed());
    match limiter.wait_n_timeout_with(1, Duration::from_millis(999), Jitter::NONE, sleep) {
        Err(WaitError::TimedOut(d)) => assert_eq!(d.retry_after(), Some(Duration::from_secs(1))),
        other => panic!("{other:?}"),
    }
    assert_eq!(slept.get(), Duration::ZERO, "gave up without sleeping");
    let d = limiter.wait_n_timeout_with(1, Duration::from_secs(1), Jitter::NONE, sleep).unwrap();
    assert!(d.is_allowed());
    assert_eq!(slept.get(), Duration::from_secs(1));
    // Jitter is cut at the deadline: the sleep ends there and the check at the deadline passes.
    slept.set(Duration::ZERO);
    let jitter = Jitter::up_to(Duration::from_secs(60));
    for _ in 0..20 {
        let d = limiter.wait_n_timeout_with(1, Duration::from_secs(1), jitter, sleep).unwrap();
        assert!(d.is_allowed());
        assert_eq!(slept.replace(Duration::ZERO), Duration::from_secs(1));
    }
    // A zero timeout is one check.
    assert!(matches!(
        limiter.wait_n_timeout_with(1, Duration::ZERO, Jitter::NONE, sleep),
        Err(WaitError::TimedOut(_))
    ));
    assert!(matches!(
        limiter.wait_n_timeout_with(2, Duration::MAX, Jitter::NONE, sleep),
        Err(WaitError::Check(tollgate::InsufficientCapacity { cost: 2, capacity: 1 }))
    ));
    assert_eq!(slept.get(), Duration::ZERO);
}

/// Others taking every cell the waiter wakes up for: the waiter keeps retrying until its
/// deadline and gives up there, having slept no longer than the timeout in all.
#[test]
fn bounded_wait_under_contention_stops_at_the_deadline() {
    use tollgate::wait::WaitError;
    let clock = ManualClock::new();
    let limiter: KeyedLimiter<String, ManualClock> =
        KeyedLimiter::with_clock(Quota::per_second(10).unwrap(), clock.clone());
    assert!(limiter.check_n("k", 10).unwrap().is_allowed());
    let mut slept = Duration::ZERO;
    let mut sleeps = 0;
    let result = limiter.wait_key_n_timeout_with("k", 1, Duration::from_millis(350), Jitter::NONE, |d| {
        slept += d;
        sleeps += 1;
        clock.advance(d);
        // Someone else takes the cell that refilled while the waiter slept.
        assert!(limiter.check("k").unwrap().is_allowed());
    });
    match result {
        Err(WaitError::TimedOut(d)) => assert!(!d.is_allowed()),
        other => panic!("{other:?}"),
    }
    // Sleeps of 100 ms at 0, 100 and 200 ms; at 300 ms the next chance (400 ms) is too late.
    assert_eq!((sleeps, slept), (3, Duration::from_millis(300)));
    // A full key table is an error waiting cannot fix: reported at once.
    let full: KeyedLimiter<String, ManualClock> =
        KeyedLimiter::with_clock(Quota::per_second(1).unwrap(), clock.clone()).max_keys(0);
    let err = full.wait_key_n_timeout_with("b", 1, Duration::from_secs(1), Jitter::NONE, |_| panic!("slept"));
    assert_eq!(err, Err(WaitError::Check(CheckError::KeyLimit { max_keys: 0 })));
}

/// The blocking form on the real clock: a spent hourly limit gives up at once, not after the
/// timeout.
#[test]
fn bounded_blocking_wait_on_the_real_clock() {
    let limiter = Limiter::new(Quota::per_hour(1).unwrap());
    assert!(limiter.wait_n_timeout(1, Duration::from_millis(50)).is_ok());
    let started = std::time::Instant::now();
    let err = limiter.wait_n_timeout(1, Duration::from_secs(30)).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "gave up without sleeping to the deadline");
    assert!(err.to_string().contains("not admitted"), "{err}");
}

/// Review findings: with under `MIN_SLEEP` left the sleep still ends at the deadline (it slept
/// 1 µs past it, then admitted late); and a clock that does not move cannot stretch the wait
/// (with a ManualClock under `std::thread::sleep`, a 10 ms wait never ended).
#[test]
fn bounded_waits_end_at_the_deadline_whatever_the_clock() {
    use tollgate::wait::WaitError;
    let clock = ManualClock::new();
    let limiter = Limiter::with_clock(Quota::per_second(1).unwrap(), clock.clone());
    assert!(limiter.check().is_allowed());
    clock.advance(Duration::from_secs(1) - Duration::from_nanos(300));
    let slept = std::cell::Cell::new(Duration::ZERO);
    let timeout = Duration::from_nanos(500);
    let r = limiter.wait_n_timeout_with(1, timeout, Jitter::NONE, |d| {
        slept.set(slept.get() + d);
        clock.advance(d);
    });
    assert!(slept.get() <= timeout, "slept {:?} ({r:?})", slept.get());
    // A clock that stands still: the sleeps themselves bring the deadline.
    let still = Limiter::with_clock(Quota::per_second(1000).unwrap(), ManualClock::new());
    assert!(still.check_n(1000).unwrap().is_allowed());
    let mut total = Duration::ZERO;
    let r = still.wait_n_timeout_with(1, Duration::from_millis(10), Jitter::NONE, |d| total += d);
    assert!(matches!(r, Err(WaitError::TimedOut(_))), "{r:?}");
    assert_eq!(total, Duration::from_millis(10));
}

/// Review finding: a sleep that returns early (a spurious wake-up) does not end a bounded wait
/// early while the clock moves: the clock, not the sleeps asked for, says how long it waited.
#[test]
fn an_early_wake_up_does_not_end_a_bounded_wait_early() {
    let clock = ManualClock::new();
    let limiter = Limiter::with_clock(Quota::per_second(1).unwrap(), clock.clone());
    assert!(limiter.check().is_allowed());
    let mut wakes = 0;
    let d = limiter
        .wait_n_timeout_with(1, Duration::from_secs(2), Jitter::NONE, |_| {
            wakes += 1;
            clock.advance(Duration::from_millis(10)); // woke after 10 ms, whatever was asked
        })
        .unwrap();
    assert!(d.is_allowed());
    assert_eq!(wakes, 100);
}
