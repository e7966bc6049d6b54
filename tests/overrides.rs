//! Per-key quota overrides across algorithms: compatible overrides carry the key's state over;
//! incompatible ones (another state layout) are rejected instead of misreading the state.

use std::time::Duration;

use tollgate::{
    Algorithm, DefaultHashBuilder, FixedWindow, KeyedLimiter, ManualClock, Quota, QuotaError, SlidingLog,
    SlidingWindow,
};

fn q(s: &str) -> Quota {
    s.parse().unwrap()
}

#[test]
fn sliding_log_override_must_keep_the_limit() {
    let clock = ManualClock::new();
    let log = SlidingLog::new(&q("3/s")).unwrap();
    let limiter: KeyedLimiter<String, _, _, SlidingLog> =
        KeyedLimiter::build(log, clock.clone(), 0, DefaultHashBuilder::default());
    for _ in 0..3 {
        assert!(limiter.check("k").unwrap().is_allowed());
    }
    // A different ring size cannot read this key's ring: rejected, nothing changes, no panic.
    assert!(matches!(limiter.set_quota("k", q("100/s")), Err(QuotaError::Incompatible { .. })));
    assert!(!limiter.check("k").unwrap().is_allowed());
    // Same limit, longer window: accepted; the three stamps now count for 10 s.
    limiter.set_quota("k", q("3/10s")).unwrap();
    clock.advance(Duration::from_secs(2));
    assert!(!limiter.check("k").unwrap().is_allowed());
    assert_eq!(limiter.sweep(), 0, "the override's 10 s window keeps the key alive");
    clock.advance(Duration::from_secs(8));
    assert!(limiter.check("k").unwrap().is_allowed());
}

#[test]
fn window_overrides_must_keep_the_window_length() {
    let clock = ManualClock::new();
    let fixed = FixedWindow::new(&q("2/s")).unwrap();
    let limiter: KeyedLimiter<u64, _, _, FixedWindow> =
        KeyedLimiter::build(fixed, clock.clone(), 0, DefaultHashBuilder::default());
    assert!(matches!(limiter.set_quota(&1, q("2/h")), Err(QuotaError::Incompatible { .. })));
    limiter.set_quota(&1, q("5/s")).unwrap();
    assert_eq!((0..10).filter(|_| limiter.check(&1).unwrap().is_allowed()).count(), 5);
    assert_eq!((0..10).filter(|_| limiter.check(&2).unwrap().is_allowed()).count(), 2);

    let sliding = SlidingWindow::new(&q("4/s")).unwrap();
    let limiter: KeyedLimiter<u64, _, _, SlidingWindow> =
        KeyedLimiter::build(sliding, clock, 0, DefaultHashBuilder::default());
    assert!(matches!(limiter.set_quota(&1, q("4/m")), Err(QuotaError::Incompatible { .. })));
    limiter.set_quota(&1, q("8/s")).unwrap();
    assert_eq!((0..20).filter(|_| limiter.check(&1).unwrap().is_allowed()).count(), 8);
}
