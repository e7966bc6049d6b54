//! Window state in Redis across a change of window length and a jump of the server's clock.
#![cfg(feature = "redis")]

mod redis_support;

use std::time::Duration;

use redis_support::RedisServer;
use tollgate::redis::{RedisAlgorithm, RedisLimiter};
use tollgate::{ManualClock, Quota};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A per-key override with another window length is refused, as in process
/// (`QuotaError::Incompatible`): the stored window index means nothing on another grid (it
/// had locked the key for ~190 000 years once back on the default quota). The same length
/// with another limit is accepted.
#[test]
fn window_override_keeps_the_window_length() {
    let server = RedisServer::start();
    rt().block_on(async {
        for algorithm in [RedisAlgorithm::FixedWindow, RedisAlgorithm::SlidingWindow] {
            let redis = redis_support::manual_limiter(&server, Quota::per_hour(2).unwrap(), algorithm).await;
            let key: &[u8] = b"promo";
            assert!(matches!(
                redis.set_quota(key, Quota::per_second(10).unwrap()),
                Err(tollgate::QuotaError::Incompatible { .. })
            ));
            redis.set_quota(key, Quota::per_hour(5).unwrap()).unwrap();
            for _ in 0..5 {
                assert!(redis.check(key, 1).await.unwrap().is_allowed(), "{algorithm:?}");
            }
            let d = redis.check(key, 1).await.unwrap();
            assert!(!d.is_allowed());
            assert!(d.retry_after().unwrap() <= Duration::from_secs(2 * 3600), "{algorithm:?}: {d:?}");
        }
        // GCRA has no grid (its script converts the key's state): any override is fine. The
        // log keeps its window length too (tests/redis_overrides.rs).
        let gcra = RedisLimiter::builder(server.url(), Quota::per_hour(2).unwrap()).connect().await.unwrap();
        gcra.set_quota(b"promo", Quota::per_second(10).unwrap()).unwrap();
    });
}

/// A deployment changes the quota's window (here "100/s" → "6000/min", the same rate) while
/// keys are live. The new processes read the old processes' second-grid indices as far-future
/// minute windows: they had locked every active key for millennia; now such state counts only
/// until it expires (its TTL, at most two windows of the process that wrote it).
#[test]
fn changing_the_window_in_a_rollout_does_not_lock_keys() {
    let server = RedisServer::start();
    rt().block_on(async {
        let mut bad = Vec::new();
        for algorithm in [RedisAlgorithm::FixedWindow, RedisAlgorithm::SlidingWindow] {
            let build = |quota: Quota| {
                RedisLimiter::builder(server.url(), quota)
                    .algorithm(algorithm)
                    .prefix("rollout")
                    .timeout(Duration::from_secs(5))
                    .clock(ManualClock::new())
                    .connect()
            };
            let old = build(Quota::per_second(100).unwrap()).await.unwrap();
            let new = build(Quota::per_minute(6000).unwrap()).await.unwrap();
            let key: &[u8] = b"active-user";
            assert!(old.check(key, 1).await.unwrap().is_allowed());
            let d = new.check(key, 1).await.unwrap();
            // The second-grid index reads as a minute window far ahead: its count holds (never
            // admitting more) only until the key's own TTL, at most two 1 s windows, runs out.
            assert_eq!(d.remaining(), 5998, "{algorithm:?}");
            assert!(d.reset_after() <= Duration::from_millis(2002), "{algorithm:?}: {d:?}");
            if d.reset_after() > Duration::from_secs(120) {
                bad.push(format!("{algorithm:?}: reset_after {:?}", d.reset_after()));
            }
            // Spend the minute's quota (it had then been denied for ~3 million years).
            let d = new.check(key, 5998).await.unwrap();
            if d.is_allowed() {
                let d = new.check(key, 1).await.unwrap();
                if d.retry_after().is_some_and(|r| r > Duration::from_secs(120)) {
                    bad.push(format!("{algorithm:?}: denied for {:?}", d.retry_after().unwrap()));
                }
            }
        }
        assert!(bad.is_empty(), "{bad:#?}");
    });
}

/// Redis' TIME is the wall clock and can jump. A window key written while the server clock was
/// 10 years ahead is, once the clock is corrected, read as "the clock went back". It had been
/// re-stored with a TTL of ~10 years and, once its count was spent, denied for ~10 years; now
/// a clock more than a window behind stands still only until the key's TTL (set under the
/// clock that wrote it) runs out. `check_at` stands in for the server's clock.
#[test]
fn a_wall_clock_jump_does_not_lock_window_keys() {
    let server = RedisServer::start();
    rt().block_on(async {
        let year = 365 * 24 * 3_600_000_000_000u64;
        let present = 1_700_000_000_000_000_000u64;
        let mut bad = Vec::new();
        for algorithm in [RedisAlgorithm::FixedWindow, RedisAlgorithm::SlidingWindow] {
            let redis = RedisLimiter::builder(server.url(), Quota::per_minute(2).unwrap())
                .algorithm(algorithm)
                .timeout(Duration::from_secs(5))
                .connect()
                .await
                .unwrap();
            let key: &[u8] = b"jump";
            assert!(redis.check_at(key, 1, present + 10 * year).await.unwrap().is_allowed());
            // Clock corrected: a check now.
            let d = redis.check_at(key, 1, present).await.unwrap();
            let pttl: i64 = server.query(redis::cmd("PTTL").arg(redis.redis_key(key)));
            // (check_at adds one hour to every TTL.)
            if pttl > 2 * 3_600_000 + 120_000 {
                bad.push(format!("{algorithm:?}: PTTL {} days after the jump", pttl / 86_400_000));
            }
            let d2 = redis.check_at(key, 1, present + 1_000_000_000).await.unwrap();
            if d2.retry_after().is_some_and(|r| r > Duration::from_secs(3600)) {
                bad.push(format!(
                    "{algorithm:?}: denied for {} days (first reset_after {:?})",
                    d2.retry_after().unwrap().as_secs() / 86_400,
                    d.reset_after()
                ));
            }
        }
        assert!(bad.is_empty(), "{bad:#?}");
    });
}

/// Standing still under the TTL cap must not extend the key's life: each capped re-store had
/// added 1 ms (PX of the capped time, rounded up), so a key written one window ahead (already the
/// longest TTL the script sets) soon passed the bound and read as fresh while it still held the
/// window's count: 54-56 admitted under 50/s (review finding). The checks are in flight
/// together, so Redis runs them within a few ms.
#[test]
fn standing_still_after_a_clock_step_admits_at_most_the_limit() {
    let server = RedisServer::start();
    rt().block_on(async {
        let w = 1_000_000_000u64; // 1 s in ns
        let s = 1_700_000_000u64; // a window index (s since the epoch)
        let limit = 50u32;
        let mut bad = Vec::new();
        for algorithm in [RedisAlgorithm::FixedWindow, RedisAlgorithm::SlidingWindow] {
            let redis =
                redis_support::manual_limiter(&server, Quota::per_second(limit.into()).unwrap(), algorithm)
                    .await;
            let key: &[u8] = b"step";
            let mut admitted = 0;
            // Window s, then the clock goes back less than a window (stands still in s, the
            // longest TTL the script sets: 2 W fixed, 3 W sliding), then more than a window.
            for t in [s * w, (s - 1) * w] {
                admitted += u32::from(redis.check_at(key, 1, t).await.unwrap().is_allowed());
            }
            // 100 checks in flight at once (one multiplexed connection: Redis runs them back
            // to back, most within the same millisecond).
            let redis = std::sync::Arc::new(redis);
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..100 {
                let redis = redis.clone();
                set.spawn(async move { redis.check_at(b"step", 1, (s - 3) * w).await.unwrap().is_allowed() });
            }
            while let Some(ok) = set.join_next().await {
                admitted += u32::from(ok.unwrap());
            }
            let pttl: i64 = server.query(redis::cmd("PTTL").arg(redis.redis_key(key)));
            let pttls = pttl - 3_600_000;
            eprintln!("{algorithm:?} {admitted} {pttls:?}");
            if admitted > limit {
                bad.push(format!("{algorithm:?}: {admitted} admitted under {limit}/s; PTTL-1h: {pttls:?}"));
            }
        }
        assert!(bad.is_empty(), "{bad:#?}");
    });
}
