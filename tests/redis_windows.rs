//! Fixed window, sliding window counter and sliding log in Redis: differential against the
//! in-process algorithms (same operation sequences at explicit µs-aligned times), TTLs, and
//! exact admission under concurrency.
#![cfg(feature = "redis")]

mod redis_support;

use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use redis_support::RedisServer;
use tollgate::redis::{RedisAlgorithm, RedisLimiter};
use tollgate::{
    Algorithm, CheckError, Decision, FixedWindow, Limiter, ManualClock, Origin, Quota, SlidingLog,
    SlidingWindow,
};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn fields(d: &Decision) -> (bool, u64, u64, u64, Option<u64>) {
    (d.is_allowed(), d.limit(), d.remaining(), d.reset_after_nanos(), d.retry_after_nanos())
}

/// Redis keeps whole microseconds: a duration the in-process algorithm computes in ns (the
/// sliding counter's retry_after divides by a count) comes back rounded up to the next µs.
fn in_us(d: &Decision) -> (bool, u64, u64, u64, Option<u64>) {
    let up = |ns: u64| ns.div_ceil(1000) * 1000;
    (d.is_allowed(), d.limit(), d.remaining(), up(d.reset_after_nanos()), d.retry_after_nanos().map(up))
}

fn quotas() -> Vec<Quota> {
    vec![
        Quota::per_second(5).unwrap(),
        "3/2s".parse().unwrap(),
        "10/1500ms".parse().unwrap(),
        Quota::per_minute(4).unwrap(),
        "7/3s".parse().unwrap(),
    ]
}

/// Replays the same random sequence into Redis (`check_at`) and into an in-process limiter on a
/// ManualClock set to the same Unix time; every decision must match field for field.
async fn differential<A: Algorithm>(server: &RedisServer, algorithm: RedisAlgorithm, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for (qi, quota) in quotas().into_iter().enumerate() {
        let redis = RedisLimiter::builder(server.url(), quota)
            .algorithm(algorithm)
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap();
        let clock = ManualClock::new();
        let local = Limiter::with_algorithm(A::new(&quota).unwrap(), clock.clone());
        let limit = quota.burst();
        let window_us = quota.period_nanos() / 1000;
        let key = format!("diff-{algorithm:?}-{qi}");
        let mut now = 1_700_000_000_000_000_000u64;
        for step in 0..400 {
            match rng.random_range(0..12) {
                0 => now -= rng.random_range(0..window_us / 4) * 1000, // the clock steps back
                1..=4 => {}
                5..=9 => now += rng.random_range(0..window_us / 3) * 1000,
                _ => now += rng.random_range(0..2 * window_us) * 1000,
            }
            let cost = rng.random_range(0..=limit + 1) as u32;
            clock.set(now);
            let want = local.check_n(cost);
            let got = redis.check_at(key.as_bytes(), cost, now).await;
            match want {
                Err(e) => assert_eq!(got, Err(CheckError::from(e))),
                Ok(want) => {
                    let got = got.unwrap();
                    assert_eq!(got.origin(), Origin::Remote);
                    assert_eq!(
                        fields(&got),
                        in_us(&want),
                        "{algorithm:?} quota {quota}, step {step}, cost {cost}, now {now}"
                    );
                }
            }
        }
    }
}

#[test]
fn fixed_window_matches_in_process() {
    let server = RedisServer::start();
    rt().block_on(differential::<FixedWindow>(&server, RedisAlgorithm::FixedWindow, 1));
}

#[test]
fn sliding_window_matches_in_process() {
    let server = RedisServer::start();
    rt().block_on(differential::<SlidingWindow>(&server, RedisAlgorithm::SlidingWindow, 2));
}

#[test]
fn sliding_log_matches_in_process() {
    let server = RedisServer::start();
    rt().block_on(differential::<SlidingLog>(&server, RedisAlgorithm::SlidingLog, 3));
}

/// Large windows and limits stay exact (products beyond 2⁵³ in the sliding counter).
#[test]
fn sliding_window_large_values_match() {
    let server = RedisServer::start();
    rt().block_on(async {
        let quota = Quota::per_day(1_000_000).unwrap();
        let redis = RedisLimiter::builder(server.url(), quota)
            .algorithm(RedisAlgorithm::SlidingWindow)
            .connect()
            .await
            .unwrap();
        let clock = ManualClock::new();
        let local = Limiter::with_algorithm(SlidingWindow::new(&quota).unwrap(), clock.clone());
        let day = 86_400_000_000_000u64;
        let mut now = 1_700_000_000_000_000_000 / day * day + day - 1_000; // just before a day ends
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        for step in 0..200 {
            now += rng.random_range(0..day / 50_000_000) * 1000 * 1000;
            let cost = rng.random_range(1..=60_000u32);
            clock.set(now);
            let want = local.check_n(cost).unwrap();
            let got = redis.check_at(b"big", cost, now).await.unwrap();
            assert_eq!(fields(&got), in_us(&want), "step {step}, cost {cost}, now {now}");
        }
    });
}

#[test]
fn window_keys_expire_when_fresh() {
    let server = RedisServer::start();
    rt().block_on(async {
        for algorithm in
            [RedisAlgorithm::FixedWindow, RedisAlgorithm::SlidingWindow, RedisAlgorithm::SlidingLog]
        {
            let redis = RedisLimiter::builder(server.url(), Quota::per_hour(2).unwrap())
                .algorithm(algorithm)
                .connect()
                .await
                .unwrap();
            let d = redis.check(b"ttl", 1).await.unwrap();
            assert_eq!((d.is_allowed(), d.remaining(), d.origin()), (true, 1, Origin::Remote));
            let pttl: i64 = server.query(redis::cmd("PTTL").arg(redis.redis_key(b"ttl")));
            let reset_ms = d.reset_after().as_millis() as i64;
            assert!(pttl > 0 && pttl <= reset_ms + 1, "{algorithm:?}: pttl {pttl}, reset {reset_ms}");
            let _ = redis.check(b"ttl", 1).await.unwrap();
            let denied = redis.check(b"ttl", 1).await.unwrap();
            assert_eq!((denied.is_allowed(), denied.origin()), (false, Origin::Remote));
            let cached = redis.check(b"ttl", 1).await.unwrap();
            assert_eq!((cached.is_allowed(), cached.origin()), (false, Origin::DenyCache));
            // A smaller cost is not covered by the cached denial of a larger one... (same cost here),
            // and peek always asks Redis.
            assert_eq!(redis.peek(b"ttl").await.unwrap().origin(), Origin::Remote);
        }
    });
}

/// 8 tasks on each of 2 connections: exactly the limit is admitted (the test time is fixed, so no
/// window boundary can be crossed).
#[test]
fn concurrent_admission_is_exact() {
    let server = RedisServer::start();
    let runtime = rt();
    for algorithm in [RedisAlgorithm::FixedWindow, RedisAlgorithm::SlidingWindow, RedisAlgorithm::SlidingLog]
    {
        let admitted = runtime.block_on(async {
            let quota = Quota::per_minute(200).unwrap();
            let connect = || {
                RedisLimiter::builder(server.url(), quota)
                    .algorithm(algorithm)
                    .timeout(Duration::from_secs(5))
                    .connect()
            };
            let (a, b) = (Arc::new(connect().await.unwrap()), Arc::new(connect().await.unwrap()));
            let now = 1_700_000_000_000_000_000u64;
            let mut tasks = Vec::new();
            for i in 0..16 {
                let limiter = if i % 2 == 0 { a.clone() } else { b.clone() };
                tasks.push(tokio::spawn(async move {
                    let mut admitted = 0u64;
                    for _ in 0..40 {
                        admitted +=
                            u64::from(limiter.check_at(b"shared", 1, now).await.unwrap().is_allowed());
                    }
                    admitted
                }));
            }
            let mut total = 0;
            for task in tasks {
                total += task.await.unwrap();
            }
            total
        });
        assert_eq!(admitted, 200, "{algorithm:?}");
    }
}

/// The Redis sliding log is capped like the in-process one (4096): a larger limit is a typed
/// setup error, and a check of the full limit is admitted and stored as that many members.
#[test]
fn sliding_log_limit_is_capped_at_the_in_process_cap() {
    use tollgate::redis::{SetupError, MAX_LOG_LIMIT};
    use tollgate::QuotaError;
    assert_eq!(MAX_LOG_LIMIT, 4096);
    let server = RedisServer::start();
    rt().block_on(async {
        let too_large = RedisLimiter::builder(server.url(), Quota::per_minute(MAX_LOG_LIMIT + 1).unwrap())
            .algorithm(RedisAlgorithm::SlidingLog)
            .connect()
            .await;
        assert!(
            matches!(too_large, Err(SetupError::Quota(QuotaError::TooLarge { value: 4097, max: 4096, .. }))),
            "{too_large:?}"
        );
        let redis = RedisLimiter::builder(server.url(), Quota::per_minute(MAX_LOG_LIMIT).unwrap())
            .algorithm(RedisAlgorithm::SlidingLog)
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap();
        let d = redis.check(b"big", 4096).await.unwrap();
        assert_eq!((d.is_allowed(), d.remaining(), d.origin()), (true, 0, Origin::Remote));
        let card: i64 = server.query(redis::cmd("ZCARD").arg(redis.redis_key(b"big")));
        assert_eq!(card, 4096);
        let d = redis.check(b"big", 1).await.unwrap();
        assert_eq!((d.is_allowed(), d.remaining()), (false, 0));
    });
}
