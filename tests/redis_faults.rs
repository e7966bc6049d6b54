//! Failure handling of the Redis limiter against a real server that is killed, restarted and
//! script-flushed mid-load: every policy behaves as documented, nothing panics or hangs, and the
//! limiter recovers without being rebuilt.
#![cfg(feature = "redis")]

mod redis_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis_support::RedisServer;
use tollgate::redis::{FailurePolicy, RedisLimiter};
use tollgate::{CheckError, Decision, KeyedLimiter, ManualClock, Origin, Quota};

const TIMEOUT: Duration = Duration::from_millis(200);
/// Generous bound for "returned, did not hang": a call is bounded by TIMEOUT (plus scheduling).
const HANG: Duration = Duration::from_secs(5);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

async fn limiter(server: &RedisServer, policy: FailurePolicy) -> RedisLimiter {
    RedisLimiter::builder(server.url(), Quota::per_hour(1000).unwrap())
        .timeout(TIMEOUT)
        .failure_policy(policy)
        .deny_cache_capacity(0)
        .connect()
        .await
        .unwrap()
}

/// Calls `check` with a hang guard far above the limiter's own timeout.
async fn guarded(limiter: &RedisLimiter, key: &[u8]) -> Result<Decision, CheckError> {
    match tokio::time::timeout(HANG, limiter.check(key, 1)).await {
        Ok(result) => result,
        Err(_) => panic!("check hung past {HANG:?} with a {TIMEOUT:?} timeout"),
    }
}

/// Polls until a check is answered by Redis again; returns how many 20 ms pauses it took.
async fn pauses_until_remote(limiter: &RedisLimiter) -> u32 {
    for pause in 0..500 {
        if let Ok(d) = guarded(limiter, b"probe").await {
            if d.origin() == Origin::Remote {
                return pause;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the limiter never reconnected");
}

#[test]
fn each_policy_when_the_server_dies_and_recovery_after_restart() {
    let mut server = RedisServer::start();
    let runtime = rt();
    let fallback_local: KeyedLimiter<Vec<u8>, ManualClock> =
        KeyedLimiter::with_clock(Quota::per_hour(2).unwrap(), ManualClock::new());
    let fallback_local = Arc::new(fallback_local);
    let (error, open, closed, fallback) = runtime.block_on(async {
        (
            limiter(&server, FailurePolicy::ReturnError).await,
            limiter(&server, FailurePolicy::FailOpen).await,
            limiter(&server, FailurePolicy::FailClosed).await,
            limiter(&server, FailurePolicy::Fallback(fallback_local.clone())).await,
        )
    });
    runtime.block_on(async {
        for l in [&error, &open, &closed, &fallback] {
            assert_eq!(guarded(l, b"k").await.unwrap().origin(), Origin::Remote);
        }
    });
    server.kill();
    runtime.block_on(async {
        for _ in 0..3 {
            match guarded(&error, b"k").await {
                Err(CheckError::Backend { .. }) | Err(CheckError::Timeout { .. }) => {}
                other => panic!("ReturnError gave {other:?}"),
            }
            let d = guarded(&open, b"k").await.unwrap();
            assert_eq!((d.is_allowed(), d.origin(), d.limit()), (true, Origin::Unchecked, 1000));
            let d = guarded(&closed, b"k").await.unwrap();
            assert_eq!((d.is_allowed(), d.origin()), (false, Origin::Fallback));
            assert_eq!(d.retry_after(), Some(Duration::from_secs(1)));
        }
        // The local fallback limiter (2 per hour) decides: 2 allowed, then denied.
        let mut seen = Vec::new();
        for _ in 0..3 {
            let d = guarded(&fallback, b"k").await.unwrap();
            seen.push((d.is_allowed(), d.origin()));
        }
        assert_eq!(seen, [(true, Origin::Fallback), (true, Origin::Fallback), (false, Origin::Fallback)]);
        // peek and reset also follow the policy / report typed errors, without hanging.
        assert!(matches!(
            tokio::time::timeout(HANG, error.peek(b"k")).await.unwrap(),
            Err(CheckError::Backend { .. }) | Err(CheckError::Timeout { .. })
        ));
        assert!(tokio::time::timeout(HANG, error.reset(b"k")).await.unwrap().is_err());
        let many = tokio::time::timeout(HANG, open.check_many(&["a", "b"], 1)).await.unwrap();
        assert!(many.iter().all(|r| r.as_ref().unwrap().origin() == Origin::Unchecked));
    });
    server.restart();
    runtime.block_on(async {
        // Recovery, without rebuilding the limiters: the reconnect backoff is capped at 100 ms, so
        // Redis answers again within 1 s (50 pauses of 20 ms) of the restart.
        for l in [&error, &open, &closed, &fallback] {
            let pauses = pauses_until_remote(l).await;
            assert!(pauses <= 50, "took {pauses} pauses of 20 ms to reconnect");
        }
        // Fresh server, fresh state.
        let d = guarded(&error, b"k").await.unwrap();
        assert_eq!((d.origin(), d.remaining()), (Origin::Remote, 999));
    });
}

/// Kill the server while 8 tasks are checking: every call returns (error or fallback decision),
/// none panics or hangs; after a restart the same limiter serves from Redis again.
#[test]
fn kill_mid_load_then_restart() {
    let mut server = RedisServer::start();
    let runtime = rt();
    let limiter = Arc::new(runtime.block_on(limiter(&server, FailurePolicy::FailOpen)));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let limiter = limiter.clone();
            let stop = stop.clone();
            runtime.spawn(async move {
                let (mut remote, mut fallback) = (0u64, 0u64);
                let key = format!("load-{i}");
                // Relaxed: a stop flag; nothing else is published through it.
                while !stop.load(Ordering::Relaxed) {
                    let d = guarded(&limiter, key.as_bytes()).await.unwrap();
                    match d.origin() {
                        Origin::Remote => remote += 1,
                        Origin::Unchecked => fallback += 1,
                        other => panic!("unexpected origin {other:?}"),
                    }
                }
                (remote, fallback)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    server.kill();
    std::thread::sleep(Duration::from_millis(500));
    server.restart();
    runtime.block_on(async {
        let pauses = pauses_until_remote(&limiter).await;
        assert!(pauses <= 50, "took {pauses} pauses of 20 ms to reconnect");
    });
    stop.store(true, Ordering::Relaxed); // Relaxed: see above.
    let (mut remote, mut fallback) = (0, 0);
    for task in tasks {
        let (r, f) = runtime.block_on(task).unwrap();
        remote += r;
        fallback += f;
    }
    assert!(remote > 0 && fallback > 0, "remote {remote}, fallback {fallback}");
}

/// SCRIPT FLUSH repeatedly while 8 tasks check one key: NOSCRIPT is reloaded transparently, every
/// answer comes from Redis, and exactly the allowance is admitted.
#[test]
fn script_flush_mid_load_is_transparent_and_exact() {
    let server = RedisServer::start();
    let runtime = rt();
    let limiter = Arc::new(runtime.block_on(async {
        RedisLimiter::builder(server.url(), Quota::per_day(300).unwrap())
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap()
    }));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let limiter = limiter.clone();
            runtime.spawn(async move {
                let mut admitted = 0u64;
                for _ in 0..60 {
                    let d = limiter.check(b"flush", 1).await.unwrap();
                    assert!(matches!(d.origin(), Origin::Remote | Origin::DenyCache));
                    admitted += u64::from(d.is_allowed());
                }
                admitted
            })
        })
        .collect();
    for _ in 0..20 {
        let _: String = server.query(redis::cmd("SCRIPT").arg("FLUSH"));
        std::thread::sleep(Duration::from_millis(5));
    }
    let admitted: u64 = tasks.into_iter().map(|t| runtime.block_on(t).unwrap()).sum();
    assert_eq!(admitted, 300);
}

#[test]
fn unreachable_server_at_setup_is_a_typed_error() {
    let runtime = rt();
    runtime.block_on(async {
        // Nothing listens on port 1.
        let err = RedisLimiter::builder("redis://127.0.0.1:1/", Quota::per_second(1).unwrap())
            .timeout(TIMEOUT)
            .connect()
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            tollgate::redis::SetupError::Connect { .. } | tollgate::redis::SetupError::Timeout { .. }
        ));
    });
}

/// `connect_lazy` starts while Redis is down (review finding: `connect` fails at start whatever
/// the policy): checks follow the policy until the server comes up, then reach it, with no
/// rebuild. Outside a runtime, or for a cluster, it is a typed error.
#[test]
fn a_lazy_limiter_starts_while_redis_is_down_and_connects_once_it_is_up() {
    let mut server = RedisServer::start();
    server.kill(); // its port is free: nothing answers
    let runtime = rt();
    runtime.block_on(async {
        let limiter = RedisLimiter::builder(server.url(), Quota::per_hour(1000).unwrap())
            .timeout(TIMEOUT)
            .failure_policy(FailurePolicy::FailClosed)
            .deny_cache_capacity(0)
            .connect_lazy()
            .unwrap();
        for _ in 0..3 {
            let d = guarded(&limiter, b"k").await.unwrap();
            assert!(!d.is_allowed());
            assert_eq!(d.origin(), Origin::Fallback);
        }
        server.restart();
        pauses_until_remote(&limiter).await;
        let d = guarded(&limiter, b"k").await.unwrap();
        assert_eq!((d.is_allowed(), d.origin(), d.remaining()), (true, Origin::Remote, 999));
    });
    let outside = RedisLimiter::builder(server.url(), Quota::per_hour(1000).unwrap()).connect_lazy();
    assert!(matches!(outside, Err(tollgate::redis::SetupError::Connect { .. })));
}

/// Under `Fallback`, a cost-0 check reports the fallback's current state like its own
/// `check_key(key, 0)` (always allowed, nothing consumed), for `check` and `check_many`; `peek`
/// stays a unit peek (denied once the key is exhausted).
#[test]
fn fallback_cost_zero_reports_and_peek_stays_a_peek() {
    use tollgate::RateLimiter;
    let mut server = RedisServer::start();
    rt().block_on(async {
        let local: Arc<KeyedLimiter<Vec<u8>, ManualClock>> =
            Arc::new(KeyedLimiter::with_clock(Quota::per_hour(2).unwrap(), ManualClock::new()));
        let redis = limiter(&server, FailurePolicy::Fallback(local.clone())).await;
        let d = redis.check(b"z", 0).await.unwrap();
        assert_eq!((d.is_allowed(), d.remaining(), d.origin()), (true, 1000, Origin::Remote));
        server.kill();
        let summary = |d: Decision| (d.is_allowed(), d.remaining(), d.origin());
        let d = tokio::time::timeout(HANG, redis.check(b"z", 0)).await.unwrap().unwrap();
        assert_eq!(summary(d), (true, 2, Origin::Fallback));
        let d = tokio::time::timeout(HANG, redis.peek(b"z")).await.unwrap().unwrap();
        assert_eq!(summary(d), (true, 1, Origin::Fallback), "a unit peek: 1 would remain");
        // Exhaust the key in the fallback: cost 0 is still allowed, a peek is denied.
        assert!(local.check_key(b"z".as_slice(), 2).unwrap().is_allowed());
        let d = tokio::time::timeout(HANG, redis.check(b"z", 0)).await.unwrap().unwrap();
        assert_eq!(summary(d), (true, 0, Origin::Fallback));
        let d = tokio::time::timeout(HANG, redis.peek(b"z")).await.unwrap().unwrap();
        assert_eq!(summary(d), (false, 0, Origin::Fallback));
        let many = tokio::time::timeout(HANG, redis.check_many(&["z", "fresh"], 0)).await.unwrap();
        let many: Vec<_> = many.into_iter().map(|r| summary(r.unwrap())).collect();
        assert_eq!(many, [(true, 0, Origin::Fallback), (true, 2, Origin::Fallback)]);
        // Nothing was consumed by the cost-0 checks and peeks.
        assert_eq!(local.peek_key(b"fresh".as_slice()).unwrap().remaining(), 1);
    });
}

/// Under `Fallback` with a smaller local share, a cost within the Redis burst but above the
/// share's is denied ("not now", with the Redis quota's limit and period), not
/// `InsufficientCapacity` ("never"); costs above the Redis burst still are.
#[test]
fn fallback_share_smaller_than_the_cost_denies() {
    let mut server = RedisServer::start();
    rt().block_on(async {
        let share: Arc<KeyedLimiter<Vec<u8>, ManualClock>> =
            Arc::new(KeyedLimiter::with_clock(Quota::per_second(10).unwrap(), ManualClock::new()));
        let redis = RedisLimiter::builder(server.url(), Quota::per_second(100).unwrap())
            .timeout(TIMEOUT)
            .failure_policy(FailurePolicy::Fallback(share))
            .connect()
            .await
            .unwrap();
        assert!(redis.check(b"k", 50).await.unwrap().is_allowed());
        server.kill();
        let d = tokio::time::timeout(HANG, redis.check(b"k", 50)).await.unwrap().unwrap();
        assert_eq!(
            (d.is_allowed(), d.limit(), d.remaining(), d.origin(), d.retry_after()),
            (false, 100, 0, Origin::Fallback, Some(Duration::from_secs(1)))
        );
        // The share is fresh: nothing was consumed, its reset_after is 0.
        assert_eq!(d.reset_after_nanos(), 0);
        let d = tokio::time::timeout(HANG, redis.check(b"k", 10)).await.unwrap().unwrap();
        assert_eq!((d.is_allowed(), d.origin(), d.remaining()), (true, Origin::Fallback, 0));
        let d = tokio::time::timeout(HANG, redis.check(b"k", 11)).await.unwrap().unwrap();
        assert_eq!((d.is_allowed(), d.limit()), (false, 100));
        assert!(d.reset_after_nanos() > 0, "the share is in use: {d:?}");
        assert_eq!(
            redis.check(b"k", 101).await,
            Err(CheckError::InsufficientCapacity { cost: 101, capacity: 100 })
        );
    });
}

/// A server that stops answering (`CLIENT PAUSE … ALL`: connections stay up, commands wait) makes
/// every call a `CheckError::Timeout` after the limiter's timeout, never a redis-rs "timed out"
/// `Backend` error; once the pause ends the same
/// limiter is answered by Redis again.
#[test]
fn a_silent_server_is_a_timeout_and_the_limiter_recovers() {
    let server = RedisServer::start();
    rt().block_on(async {
        // The circuit breaker off: every call is sent and times out (the next test has it on).
        let redis = RedisLimiter::builder(server.url(), Quota::per_hour(1000).unwrap())
            .timeout(TIMEOUT)
            .deny_cache_capacity(0)
            .circuit_breaker(0, Duration::ZERO)
            .connect()
            .await
            .unwrap();
        assert_eq!(redis.check(b"k", 1).await.unwrap().origin(), Origin::Remote);
        // Long enough for every call below (each bounded by TIMEOUT), short enough for the test.
        let _: String = server.query(redis::cmd("CLIENT").arg("PAUSE").arg(2_500).arg("ALL"));
        let timeout = Err(CheckError::Timeout { after: TIMEOUT });
        for _ in 0..3 {
            assert_eq!(tokio::time::timeout(HANG, redis.check(b"k", 1)).await.unwrap(), timeout);
        }
        assert_eq!(tokio::time::timeout(HANG, redis.peek(b"k")).await.unwrap(), timeout);
        assert_eq!(
            tokio::time::timeout(HANG, redis.reset(b"k")).await.unwrap(),
            Err(CheckError::Timeout { after: TIMEOUT })
        );
        let many = tokio::time::timeout(HANG, redis.check_many(&["a", "b"], 1)).await.unwrap();
        assert_eq!(many, vec![timeout.clone(), timeout]);
        // After the pause: answered by Redis again (the limiter was not rebuilt).
        let pauses = pauses_until_remote(&redis).await;
        assert!(pauses <= 150, "took {pauses} pauses of 20 ms");
    });
}

/// With the circuit breaker (on by default: 3 failures, 250 ms), an outage costs the timeout
/// only for the calls that open it and one probe per cooldown: the rest are answered by the
/// failure policy at once (review finding: every check of a hung server waited out the
/// timeout), and the first probe after the server is back closes it.
#[test]
fn the_circuit_breaker_answers_at_once_during_an_outage() {
    let server = RedisServer::start();
    rt().block_on(async {
        let cooldown = Duration::from_millis(300);
        let redis = RedisLimiter::builder(server.url(), Quota::per_hour(1000).unwrap())
            .timeout(TIMEOUT)
            .failure_policy(FailurePolicy::FailOpen)
            .deny_cache_capacity(0)
            .circuit_breaker(3, cooldown)
            .connect()
            .await
            .unwrap();
        assert_eq!(redis.check(b"k", 1).await.unwrap().origin(), Origin::Remote);
        assert!(!redis.circuit_open());
        let _: String = server.query(redis::cmd("CLIENT").arg("PAUSE").arg(2_000).arg("ALL"));
        for _ in 0..3 {
            let started = std::time::Instant::now();
            let d = guarded(&redis, b"k").await.unwrap();
            assert_eq!((d.is_allowed(), d.origin()), (true, Origin::Unchecked));
            assert!(started.elapsed() >= TIMEOUT, "sent, and timed out");
        }
        assert!(redis.circuit_open());
        // Open: answered at once, by the policy, for the checks, peeks and batches of the cooldown.
        let started = std::time::Instant::now();
        for _ in 0..50 {
            let d = guarded(&redis, b"k").await.unwrap();
            assert_eq!((d.is_allowed(), d.origin()), (true, Origin::Unchecked));
        }
        let many = redis.check_many(&["a", "b"], 1).await;
        assert!(many.iter().all(|r| r.as_ref().is_ok_and(|d| d.origin() == Origin::Unchecked)));
        assert_eq!(redis.peek(b"k").await.unwrap().origin(), Origin::Unchecked);
        assert!(started.elapsed() < TIMEOUT, "52 calls took {:?}: not sent", started.elapsed());
        // After the pause, a probe goes through and closes the breaker.
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        let pauses = pauses_until_remote(&redis).await;
        assert!(pauses <= 50, "took {pauses} pauses of 20 ms");
        assert!(!redis.circuit_open());
        assert_eq!(redis.check(b"k", 1).await.unwrap().origin(), Origin::Remote);
    });
    // Under ReturnError the refusal is a Backend error that says why.
    let server = RedisServer::start();
    rt().block_on(async {
        let redis = RedisLimiter::builder(server.url(), Quota::per_hour(1000).unwrap())
            .timeout(TIMEOUT)
            .deny_cache_capacity(0)
            .circuit_breaker(1, Duration::from_secs(60))
            .connect()
            .await
            .unwrap();
        let _: String = server.query(redis::cmd("CLIENT").arg("PAUSE").arg(1_000).arg("ALL"));
        assert_eq!(guarded(&redis, b"k").await, Err(CheckError::Timeout { after: TIMEOUT }));
        match guarded(&redis, b"k").await {
            Err(CheckError::Backend { reason }) => assert!(reason.contains("circuit breaker"), "{reason}"),
            other => panic!("{other:?}"),
        }
    });
}

/// `connect` fails on a server that would refuse every check, with Redis' reason (review
/// finding: without the password it returned Ok, every check then failed with NOAUTH, and
/// FailOpen admitted everything), and a refused port says so within the default 50 ms timeout
/// (redis-rs' retries used to turn it into "did not answer within 50ms").
#[test]
fn connect_reports_what_redis_refused() {
    let server = RedisServer::start();
    let _: String = server.query(redis::cmd("CONFIG").arg("SET").arg("requirepass").arg("sekrit"));
    rt().block_on(async {
        let quota = Quota::per_second(5).unwrap();
        let err = RedisLimiter::builder(server.url(), quota).connect().await.map(drop).unwrap_err();
        match &err {
            tollgate::redis::SetupError::Connect { reason } => {
                assert!(reason.contains("NOAUTH") || reason.to_lowercase().contains("auth"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        let url = format!("redis://:sekrit@127.0.0.1:{}/", server.port());
        let redis = RedisLimiter::builder(url.clone(), quota).connect().await.unwrap();
        assert_eq!(redis.check(b"k", 1).await.unwrap().origin(), Origin::Remote);
        let wrong = format!("redis://:wrong@127.0.0.1:{}/", server.port());
        assert!(matches!(
            RedisLimiter::builder(wrong, quota).connect().await.map(drop),
            Err(tollgate::redis::SetupError::Connect { .. })
        ));
        let out_of_range = format!("redis://:sekrit@127.0.0.1:{}/99", server.port());
        match RedisLimiter::builder(out_of_range, quota).connect().await.map(drop) {
            Err(tollgate::redis::SetupError::Connect { reason }) => {
                assert!(reason.contains("DB"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        match RedisLimiter::builder("redis://127.0.0.1:1/", quota).connect().await.map(drop) {
            Err(tollgate::redis::SetupError::Connect { reason }) => {
                assert!(reason.to_lowercase().contains("refused"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    });
}

/// A server that accepts connections but never answers (a listener nobody serves: the kernel
/// completes the handshake) is a `SetupError::Timeout` at `connect`, not a redis-rs "timed out"
/// `Connect` error.
#[test]
fn a_silent_server_at_setup_is_a_timeout() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}/", silent.local_addr().unwrap());
    rt().block_on(async {
        for _ in 0..3 {
            let setup = tokio::time::timeout(
                HANG,
                RedisLimiter::builder(url.clone(), Quota::per_hour(1).unwrap()).timeout(TIMEOUT).connect(),
            )
            .await
            .unwrap()
            .map(drop);
            assert_eq!(setup, Err(tollgate::redis::SetupError::Timeout { after: TIMEOUT }));
        }
    });
    drop(silent);
}

/// `reset` forgets the key in the fallback's local limiter too, also when the `DEL` succeeds:
/// an outage after a reset must not refuse the key by its local state from before the reset
/// (review finding: only a failed `DEL` reset the fallback).
#[test]
fn reset_clears_the_fallback_share_too() {
    use tollgate::RateLimiter;
    let mut server = RedisServer::start();
    rt().block_on(async {
        let local: Arc<KeyedLimiter<Vec<u8>, ManualClock>> =
            Arc::new(KeyedLimiter::with_clock(Quota::per_hour(2).unwrap(), ManualClock::new()));
        let redis = limiter(&server, FailurePolicy::Fallback(local.clone())).await;
        // Spent locally during an earlier outage.
        assert!(local.check_key(b"k".as_slice(), 2).unwrap().is_allowed());
        redis.reset(b"k").await.unwrap(); // Redis answers: the DEL succeeds
        assert_eq!(local.peek_key(b"k".as_slice()).unwrap().remaining(), 1, "fallback share reset");
        server.kill();
        let d = tokio::time::timeout(HANG, redis.check(b"k", 1)).await.unwrap().unwrap();
        assert_eq!((d.is_allowed(), d.origin()), (true, Origin::Fallback));
    });
}
