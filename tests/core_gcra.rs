//! Issue 3 behaviour of the GCRA limiters: the exact numbers of DESIGN.md §3, on the public API.

use std::time::Duration;

use tollgate::{CheckError, InsufficientCapacity, KeyedLimiter, Limiter, ManualClock, Quota, QuotaError};

fn limiter(quota: &str) -> (Limiter<ManualClock>, ManualClock) {
    let clock = ManualClock::starting_at(1_000_000_000);
    (Limiter::with_clock(quota.parse().unwrap(), clock.clone()), clock)
}

#[test]
fn fresh_key_admits_exactly_burst_then_retry_after_is_t() {
    for burst in [1u64, 2, 5, 100] {
        let quota = Quota::per_second(10).unwrap().with_burst(burst).unwrap();
        let t = quota.emission_interval_nanos();
        assert_eq!(t, 100_000_000);
        let clock = ManualClock::starting_at(42);
        let limiter = Limiter::with_clock(quota, clock.clone());
        for i in 0..burst {
            let d = limiter.check();
            assert!(d.is_allowed(), "burst {burst}, check {i}");
            assert_eq!(d.limit(), burst);
            assert_eq!(d.remaining(), burst - 1 - i);
            assert_eq!(d.reset_after_nanos(), (i + 1) * t);
            assert_eq!(d.retry_after(), None);
        }
        let denied = limiter.check();
        assert!(!denied.is_allowed());
        assert_eq!(denied.retry_after_nanos(), Some(t));
        assert_eq!(denied.remaining(), 0);
        assert_eq!(denied.reset_after_nanos(), burst * t);
        // One nanosecond early is still denied, with exactly 1 ns to wait.
        clock.advance(Duration::from_nanos(t - 1));
        assert_eq!(limiter.check().retry_after_nanos(), Some(1));
        clock.advance(Duration::from_nanos(1));
        assert!(limiter.check().is_allowed());
        assert!(!limiter.check().is_allowed());
    }
}

#[test]
fn check_n_is_all_or_nothing_and_rejects_impossible_costs() {
    let (limiter, _clock) = limiter("10/s");
    assert_eq!(limiter.check_n(11), Err(InsufficientCapacity { cost: 11, capacity: 10 }));
    assert_eq!(limiter.check_n(u32::MAX), Err(InsufficientCapacity { cost: u32::MAX as u64, capacity: 10 }));
    // Nothing was consumed by the impossible costs:
    assert_eq!(limiter.check_n(0).unwrap().remaining(), 10);
    assert_eq!(limiter.check_n(7).unwrap().remaining(), 3);
    let d = limiter.check_n(4).unwrap();
    assert!(!d.is_allowed());
    assert_eq!(d.remaining(), 3, "a denied check_n consumes nothing");
    assert_eq!(d.retry_after_nanos(), Some(100_000_000));
    assert!(limiter.check_n(3).unwrap().is_allowed());
}

#[test]
fn check_n_zero_consumes_nothing_and_reports_state() {
    let (limiter, _clock) = limiter("4/s");
    let _ = limiter.check_n(3).unwrap();
    for _ in 0..10 {
        let d = limiter.check_n(0).unwrap();
        assert!(d.is_allowed());
        assert_eq!(d.remaining(), 1);
        assert_eq!(d.reset_after_nanos(), 750_000_000);
    }
}

#[test]
fn peek_and_reset() {
    let (limiter, _clock) = limiter("2/s");
    assert_eq!(limiter.peek().remaining(), 1, "peek reports what a unit check would leave");
    let _ = limiter.check();
    let _ = limiter.check();
    let p = limiter.peek();
    assert!(!p.is_allowed());
    assert_eq!(p.retry_after_nanos(), Some(500_000_000));
    limiter.reset();
    assert_eq!(limiter.check().remaining(), 1);
}

#[test]
fn sustained_rate_matches_the_quota_over_a_long_run() {
    // Demand every 1 ms for 60 s at 100/s burst 10.
    let (limiter, clock) = limiter("100/s;burst=10");
    let mut admitted = 0u64;
    for _ in 0..60_000 {
        clock.advance(Duration::from_millis(1));
        admitted += limiter.check().is_allowed() as u64;
    }
    // A fresh key's bucket starts full at its first check (t0); the last check is at
    // t0 + 59 999 ms: 10 + floor(59 999 ms / 10 ms) = 6009.
    assert_eq!(admitted, 6009);
}

#[test]
fn clock_going_backwards_never_admits_more_nor_panics() {
    let (limiter, clock) = limiter("10/s");
    let start = 1_000_000_000;
    for _ in 0..10 {
        assert!(limiter.check().is_allowed());
    }
    assert!(!limiter.check().is_allowed());
    // Time jumps back 10 s: still denied, with a longer wait, never a panic.
    clock.set(5);
    let d = limiter.check();
    assert!(!d.is_allowed());
    assert_eq!(d.retry_after_nanos(), Some(start - 5 + 100_000_000));
    clock.set(0);
    assert!(!limiter.check().is_allowed());
    assert!(!limiter.peek().is_allowed());
    let _ = limiter.check_n(0);
    // Back to the original time: exactly as if time had stood still.
    clock.set(start);
    assert!(!limiter.check().is_allowed());
    clock.set(start + 100_000_000);
    assert!(limiter.check().is_allowed());
    assert!(!limiter.check().is_allowed());
    // Absurd clocks are clamped to the horizon, never overflow.
    clock.set(u64::MAX);
    assert!(limiter.check().is_allowed());
    clock.set(u64::MAX - 1);
    let _ = limiter.check();
}

#[test]
fn keyed_limiter_same_numbers_per_key() {
    let clock = ManualClock::starting_at(7);
    let limiter: KeyedLimiter<String, _> = KeyedLimiter::with_clock("3/s".parse().unwrap(), clock.clone());
    for key in ["a", "b", "c"] {
        for i in 0..3 {
            assert_eq!(limiter.check(key).unwrap().remaining(), 2 - i);
        }
        assert_eq!(limiter.check(key).unwrap().retry_after_nanos(), Some(333_333_334));
    }
    assert!(matches!(
        limiter.check_n("a", 4),
        Err(CheckError::InsufficientCapacity { cost: 4, capacity: 3 })
    ));
    assert_eq!(limiter.len(), 3);
    // Hostile keys are just bytes in a map: huge, empty, control characters.
    let huge = "x".repeat(1 << 20);
    assert!(limiter.check(huge.as_str()).unwrap().is_allowed());
    assert!(limiter.check("").unwrap().is_allowed());
    assert!(limiter.check("\0\u{202e}{}").unwrap().is_allowed());
}

#[test]
fn per_key_quota_override_takes_effect_on_next_check() {
    let clock = ManualClock::new();
    let limiter: KeyedLimiter<String, _> = KeyedLimiter::with_clock("1/s".parse().unwrap(), clock);
    assert!(limiter.check("vip").unwrap().is_allowed());
    assert!(!limiter.check("vip").unwrap().is_allowed());
    limiter.set_quota("vip", "5/s".parse().unwrap()).unwrap();
    assert_eq!(limiter.quota_of("vip").to_string(), "5/s");
    // The bucket stays as full as it was: empty under 1/s is empty under 5/s (its 1 s
    // tolerance), so the next cell comes in 200 ms.
    let d = limiter.check("vip").unwrap();
    assert_eq!(d.limit(), 5);
    assert!(!d.is_allowed());
    assert_eq!(d.retry_after(), Some(std::time::Duration::from_millis(200)));
    limiter.reset("vip");
    for _ in 0..5 {
        assert!(limiter.check("vip").unwrap().is_allowed());
    }
    assert!(!limiter.check("vip").unwrap().is_allowed());
    limiter.clear_quota("vip");
    assert_eq!(limiter.check("vip").unwrap().limit(), 1);
    assert!(matches!(limiter.set_quota("x", Quota::per_second(1).unwrap()), Ok(())));
    assert_eq!("0/s".parse::<Quota>().unwrap_err(), QuotaError::ZeroRate);
}

/// The keyed limiter's receipts (used by multi-rule HTTP checks): a refund gives back exactly
/// the cells taken, for an existing key, a key inserted by the check, and a window algorithm;
/// a key evicted in between (its take expired) gives back nothing.
#[test]
fn keyed_receipts_refund_exactly() {
    use tollgate::{Algorithm, DefaultHashBuilder, FixedWindow, RateLimiter};
    let clock = ManualClock::new();
    let limiter: KeyedLimiter<String, _> =
        KeyedLimiter::with_clock(Quota::per_second(3).unwrap(), clock.clone());
    // A new key, inserted by the check itself.
    let (d, receipt) = limiter.check_key_with_receipt("k", 2).unwrap();
    assert!(d.is_allowed() && d.remaining() == 1);
    assert!(limiter.refund_key("k", 2, receipt));
    assert_eq!(limiter.peek("k").remaining(), 2); // a unit peek: 3 free, 1 for the peek
                                                  // cost 0 reports, takes nothing, and has nothing to refund.
    let (d, receipt) = limiter.check_key_with_receipt("k", 0).unwrap();
    assert_eq!(d.remaining(), 3);
    assert!(!limiter.refund_key("k", 0, receipt));
    // Evicted in between: nothing to give back (and no panic).
    let (_, receipt) = limiter.check_key_with_receipt("k", 1).unwrap();
    clock.advance(Duration::from_secs(1));
    assert_eq!(limiter.sweep(), 1);
    assert!(!limiter.refund_key("k", 1, receipt));
    // A window algorithm, keyed.
    let fixed = FixedWindow::new(&Quota::per_second(2).unwrap()).unwrap();
    let windows: KeyedLimiter<u64, _, _, FixedWindow> =
        KeyedLimiter::build(fixed, clock.clone(), 0, DefaultHashBuilder::default());
    let (d, receipt) = windows.check_key_with_receipt(&7, 2).unwrap();
    assert!(d.is_allowed());
    assert!(!windows.check(&7).unwrap().is_allowed());
    assert!(windows.refund_key(&7, 2, receipt));
    assert!(windows.check_n(&7, 2).unwrap().is_allowed());
}
