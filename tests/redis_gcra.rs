//! GCRA in Redis: differential against the in-process step, the deny cache, per-key quotas,
//! TTLs, `check_many`, NOSCRIPT, hostile keys, and exact admission under concurrency.
#![cfg(feature = "redis")]

mod redis_support;

use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use redis_support::RedisServer;
use tollgate::redis::{RedisAlgorithm, RedisLimiter, SetupError};
use tollgate::{AsyncRateLimiter, CheckError, Decision, Gcra, ManualClock, Origin, Quota};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

async fn limiter(server: &RedisServer, quota: Quota) -> RedisLimiter<ManualClock> {
    RedisLimiter::builder(server.url(), quota)
        .timeout(Duration::from_secs(5))
        .clock(ManualClock::new())
        .connect()
        .await
        .unwrap()
}

fn fields(d: &Decision) -> (bool, u64, u64, u64, Option<u64>) {
    (d.is_allowed(), d.limit(), d.remaining(), d.reset_after_nanos(), d.retry_after_nanos())
}

/// Random operation sequences at explicit (µs-aligned) times: the script and `Gcra::step` agree on
/// every field of every decision. Emission intervals ≥ 0.5 s keep every Redis TTL far longer
/// than the test runs, so real time never expires state the explicit clock still needs.
#[test]
fn differential_against_in_process_step() {
    let server = RedisServer::start();
    rt().block_on(async {
        let quotas = [
            Quota::new(5, Duration::from_secs(5)).unwrap(),
            Quota::per_minute(10).unwrap().with_burst(3).unwrap(),
            Quota::new(1, Duration::from_secs(2)).unwrap(),
            "4/2s;burst=10".parse().unwrap(),
            "1/1500ms;burst=7".parse().unwrap(),
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x7011_6a7e);
        for (qi, quota) in quotas.into_iter().enumerate() {
            let redis = limiter(&server, quota).await;
            let gcra = Gcra::from_quota(quota);
            let t = quota.emission_interval_nanos();
            let burst = quota.burst();
            let key = format!("diff-{qi}");
            let mut tat = 0u64;
            let mut now = 1_700_000_000_000_000_000u64;
            for step in 0..300 {
                match rng.random_range(0..10) {
                    0 => now -= rng.random_range(0..t / 1000) * 1000, // the clock steps back
                    1..=5 => {}
                    _ => now += rng.random_range(0..3 * t / 1000) * 1000,
                }
                let cost = rng.random_range(0..=burst + 1);
                let got = redis.check_at(key.as_bytes(), cost as u32, now).await;
                if cost > burst {
                    assert_eq!(got, Err(CheckError::InsufficientCapacity { cost, capacity: burst }));
                    continue;
                }
                let (want, new_tat) = gcra.step(tat, now, cost);
                tat = new_tat.unwrap_or(tat);
                let got = got.unwrap();
                assert_eq!(got.origin(), Origin::Remote);
                assert_eq!(fields(&got), fields(&want), "quota {quota}, step {step}, cost {cost}, now {now}");
            }
        }
    });
}

/// The shared GCRA table (src/gcra.rs) scaled to seconds: (burst, T, tat, now, cost) → outcome.
#[test]
fn gcra_table_rows() {
    // burst, T, tat, now, cost, allowed, remaining, reset, retry (units of 10 ms)
    type Row = (u64, u64, u64, u64, u64, bool, u64, u64, u64);
    const ROWS: &[Row] = &[
        (3, 100, 0, 1000, 1, true, 2, 100, 0),
        (3, 100, 1100, 1000, 1, true, 1, 200, 0),
        (3, 100, 1200, 1000, 1, true, 0, 300, 0),
        (3, 100, 1300, 1000, 1, false, 0, 300, 100),
        (3, 100, 1300, 1100, 1, true, 0, 300, 0),
        (3, 100, 1300, 1050, 1, false, 0, 250, 50),
        (3, 100, 0, 1000, 3, true, 0, 300, 0),
        (3, 100, 1100, 1000, 3, false, 2, 100, 100),
        (3, 100, 5000, 1000, 1, false, 0, 4000, 3800),
    ];
    const UNIT: u64 = 10_000_000; // 10 ms in ns
    let server = RedisServer::start();
    rt().block_on(async {
        let quota = Quota::new(3, Duration::from_secs(3)).unwrap(); // T = 100 units of 10 ms
        let redis = limiter(&server, quota).await;
        let base = 1_700_000_000u64 * 1_000_000_000;
        for (i, &(_, _, tat, now, cost, allowed, remaining, reset, retry)) in ROWS.iter().enumerate() {
            let key = format!("row-{i}");
            // Establish the row's TAT: a check of 3 cells at `tat − 3·T` puts TAT at `tat`.
            if tat > 0 {
                let setup_cost = (tat / 100).min(3) as u32;
                let setup_now = base + (tat - u64::from(setup_cost) * 100) * UNIT;
                let d = redis.check_at(key.as_bytes(), setup_cost, setup_now).await.unwrap();
                assert!(d.is_allowed(), "row {i} setup");
            }
            let d = redis.check_at(key.as_bytes(), cost as u32, base + now * UNIT).await.unwrap();
            let want = (allowed, 3, remaining, reset * UNIT, (!allowed).then_some(retry * UNIT));
            assert_eq!(fields(&d), want, "row {i}");
        }
    });
}

#[test]
fn server_time_deny_cache_peek_reset_and_ttl() {
    let server = RedisServer::start();
    rt().block_on(async {
        let clock = ManualClock::new();
        let redis = RedisLimiter::builder(server.url(), Quota::per_minute(3).unwrap())
            .timeout(Duration::from_secs(5))
            .clock(clock.clone())
            .connect()
            .await
            .unwrap();
        let key: &[u8] = b"alice";
        // peek reports a unit check without consuming: 2 would remain after it.
        assert_eq!(redis.peek(key).await.unwrap().remaining(), 2);
        assert_eq!(redis.peek(key).await.unwrap().remaining(), 2);
        for left in [2, 1, 0] {
            let d = redis.check(key, 1).await.unwrap();
            assert_eq!((d.is_allowed(), d.remaining(), d.origin()), (true, left, Origin::Remote));
        }
        // TTL = time until the TAT (≈ 60 s: 3 cells of 20 s).
        let pttl: i64 = server.query(redis::cmd("PTTL").arg(redis.redis_key(key)));
        assert!((59_000..=60_000).contains(&pttl), "pttl {pttl}");
        let denied = redis.check(key, 1).await.unwrap();
        assert_eq!((denied.is_allowed(), denied.origin()), (false, Origin::Remote));
        let retry = denied.retry_after_nanos().unwrap();
        assert!(retry > 19_000_000_000 && retry <= 20_000_000_000, "retry {retry}");
        // Denied again from the cache, without a round trip; larger costs too (retry + T·(n−1)).
        let cached = redis.check(key, 1).await.unwrap();
        assert_eq!((cached.is_allowed(), cached.origin()), (false, Origin::DenyCache));
        assert_eq!(cached.retry_after_nanos(), Some(retry));
        let cached2 = redis.check(key, 2).await.unwrap();
        assert_eq!(cached2.retry_after_nanos(), Some(retry + 20_000_000_000));
        assert_eq!(redis.deny_cache_len(), 1);
        // Once the local clock passes retry_after the cache lets the check through to Redis,
        // which (its clock has barely moved) denies again.
        clock.advance(Duration::from_nanos(retry));
        let d = redis.check(key, 1).await.unwrap();
        assert_eq!((d.is_allowed(), d.origin()), (false, Origin::Remote));
        // peek does not consume.
        assert!(!redis.peek(key).await.unwrap().is_allowed());
        // reset clears Redis and the local cache.
        redis.reset(key).await.unwrap();
        assert_eq!(redis.deny_cache_len(), 0);
        let exists: i64 = server.query(redis::cmd("EXISTS").arg(redis.redis_key(key)));
        assert_eq!(exists, 0);
        let d = redis.check(key, 3).await.unwrap();
        assert_eq!((d.is_allowed(), d.remaining()), (true, 0));
        assert_eq!(redis.check(key, 4).await, Err(CheckError::InsufficientCapacity { cost: 4, capacity: 3 }));
        // cost 0 reports without consuming.
        let d = redis.check(b"bob", 0).await.unwrap();
        assert_eq!((d.is_allowed(), d.remaining()), (true, 3));
        let exists: i64 = server.query(redis::cmd("EXISTS").arg(redis.redis_key(b"bob")));
        assert_eq!(exists, 0);
    });
}

#[test]
fn per_key_quota_str_trait_and_check_many() {
    let server = RedisServer::start();
    rt().block_on(async {
        let redis = limiter(&server, Quota::per_hour(2).unwrap()).await;
        redis.set_quota(b"vip", Quota::per_hour(100).unwrap()).unwrap();
        assert_eq!(redis.quota_of(b"vip"), Quota::per_hour(100).unwrap());
        let d = AsyncRateLimiter::<str>::check_key_async(&redis, "vip", 10).await.unwrap();
        assert_eq!((d.limit(), d.remaining()), (100, 90));
        let d = AsyncRateLimiter::<str>::check_key_async(&redis, "free", 1).await.unwrap();
        assert_eq!((d.limit(), d.remaining()), (2, 1));
        redis.clear_quota(b"vip");
        assert_eq!(AsyncRateLimiter::<str>::quota_for_key(&redis, "vip"), Quota::per_hour(2).unwrap());

        let keys = ["a", "b", "a", "free", "a"];
        let results = redis.check_many(&keys, 1).await;
        let summary: Vec<(bool, u64, Origin)> = results
            .iter()
            .map(|r| r.as_ref().map(|d| (d.is_allowed(), d.remaining(), d.origin())).unwrap())
            .collect();
        assert_eq!(
            summary,
            [
                (true, 1, Origin::Remote),
                (true, 1, Origin::Remote),
                (true, 0, Origin::Remote),
                (true, 0, Origin::Remote),
                (false, 0, Origin::Remote),
            ]
        );
        // The denial of "a" is now cached: no round trip for it.
        let results = redis.check_many(&["a", "free", "c"], 1).await;
        let seen: Vec<(bool, Origin)> =
            results.iter().map(|r| r.as_ref().map(|d| (d.is_allowed(), d.origin())).unwrap()).collect();
        assert_eq!(seen, [(false, Origin::DenyCache), (false, Origin::Remote), (true, Origin::Remote)]);
        let results = redis.check_many(&["x"], 3).await;
        assert_eq!(results, vec![Err(CheckError::InsufficientCapacity { cost: 3, capacity: 2 })]);
    });
}

#[test]
fn script_flush_is_transparent_for_check_and_check_many() {
    let server = RedisServer::start();
    rt().block_on(async {
        let redis = limiter(&server, Quota::per_hour(10).unwrap()).await;
        assert_eq!(redis.check(b"k", 1).await.unwrap().remaining(), 9);
        let _: String = server.query(&redis::cmd("SCRIPT").arg("FLUSH").to_owned());
        assert_eq!(redis.check(b"k", 1).await.unwrap().remaining(), 8);
        let _: String = server.query(&redis::cmd("SCRIPT").arg("FLUSH").to_owned());
        let results = redis.check_many(&["k", "j", "k"], 1).await;
        let remaining: Vec<u64> = results.into_iter().map(|r| r.unwrap().remaining()).collect();
        assert_eq!(remaining, [7, 9, 6]);
    });
}

#[test]
fn hostile_keys_are_namespaced_safely() {
    let server = RedisServer::start();
    rt().block_on(async {
        let redis = limiter(&server, Quota::per_hour(1).unwrap()).await;
        let mega = vec![b'}'; 1 << 20];
        let keys: Vec<Vec<u8>> = vec![
            b"a}".to_vec(),
            b"a%7D".to_vec(),
            b"{a}".to_vec(),
            b"a".to_vec(),
            Vec::new(),
            b"%".to_vec(),
            vec![0, 0xFF, b'\n', b' '],
            "ключ".as_bytes().to_vec(),
            mega.clone(),
            mega[1..].to_vec(),
        ];
        for key in &keys {
            let d = redis.check(key, 1).await.unwrap();
            assert!(
                d.is_allowed(),
                "first check of {:?} must be allowed (distinct state)",
                &key[..key.len().min(8)]
            );
            let name = redis.redis_key(key);
            // Exactly one hash tag, at the end, holding the escaped key.
            assert_eq!(name.iter().filter(|&&b| b == b'{').count(), 1);
            assert_eq!(name.iter().filter(|&&b| b == b'}').count(), 1);
            assert_eq!(name.last(), Some(&b'}'));
            assert!(name.starts_with(b"tollgate:gcra:{"));
        }
        for key in &keys {
            assert!(!redis.check(key, 1).await.unwrap().is_allowed());
        }
        let dbsize: i64 = server.query(&redis::cmd("DBSIZE"));
        assert_eq!(dbsize, keys.len() as i64);
        // Every key carries a TTL.
        for key in &keys {
            let pttl: i64 = server.query(redis::cmd("PTTL").arg(redis.redis_key(key)));
            assert!(pttl > 0);
        }
        // A prefix with a brace would break the hash tag: rejected.
        let bad =
            RedisLimiter::builder(server.url(), Quota::per_hour(1).unwrap()).prefix("a{b").connect().await;
        assert!(matches!(bad, Err(SetupError::Prefix { .. })));
    });
}

/// 8 tasks on each of 2 connections (2 limiters) hammer one key: exactly the burst is admitted.
/// The quota refills one cell a day, so no refill happens during the test.
#[test]
fn concurrent_admission_is_exact() {
    let server = RedisServer::start();
    let runtime = rt();
    let admitted = runtime.block_on(async {
        let quota = Quota::per_day(500).unwrap();
        let a = Arc::new(limiter(&server, quota).await);
        let b = Arc::new(limiter(&server, quota).await);
        let mut tasks = Vec::new();
        for i in 0..16 {
            let limiter = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                let mut admitted = 0u64;
                for _ in 0..60 {
                    if limiter.check(b"shared", 1).await.unwrap().is_allowed() {
                        admitted += 1;
                    }
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
    assert_eq!(admitted, 500);
}

#[test]
fn algorithms_use_separate_keys() {
    let server = RedisServer::start();
    rt().block_on(async {
        let quota = Quota::per_hour(1).unwrap();
        for algorithm in [
            RedisAlgorithm::Gcra,
            RedisAlgorithm::FixedWindow,
            RedisAlgorithm::SlidingWindow,
            RedisAlgorithm::SlidingLog,
        ] {
            let redis =
                RedisLimiter::builder(server.url(), quota).algorithm(algorithm).connect().await.unwrap();
            assert_eq!(redis.algorithm(), algorithm);
            assert!(redis.check(b"same", 1).await.unwrap().is_allowed(), "{algorithm:?}");
            assert!(!redis.check(b"same", 1).await.unwrap().is_allowed(), "{algorithm:?}");
        }
        let dbsize: i64 = server.query(&redis::cmd("DBSIZE"));
        assert_eq!(dbsize, 4);
    });
}

#[test]
fn unix_socket_url_and_bounded_deny_cache() {
    let server = RedisServer::start();
    rt().block_on(async {
        let redis = RedisLimiter::builder(server.unix_url(), Quota::per_hour(1).unwrap())
            .deny_cache_capacity(3)
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap();
        for i in 0..10 {
            let key = format!("u{i}");
            assert!(redis.check(key.as_bytes(), 1).await.unwrap().is_allowed());
            assert!(!redis.check(key.as_bytes(), 1).await.unwrap().is_allowed());
        }
        // Ten denied keys, none expired: the cache holds at most its capacity.
        assert_eq!(redis.deny_cache_len(), 3);
        // A quota change drops the key's cached denial (it was judged under the old quota), so
        // Redis judges the next check. The bucket carries over as full as it was (like
        // KeyedLimiter::set_quota): spent under 1/h, spent under 1/h with burst 3 (the stored
        // TAT used to carry over as a time, leaving room for 2 more).
        let bigger = Quota::per_hour(1).unwrap().with_burst(3).unwrap();
        for key in [b"u0", b"u1", b"u2", b"u9"] {
            redis.set_quota(key, bigger).unwrap();
        }
        assert_eq!(redis.deny_cache_len(), 0);
        let d = redis.check(b"u1", 1).await.unwrap();
        assert_eq!((d.is_allowed(), d.limit(), d.remaining(), d.origin()), (false, 3, 0, Origin::Remote));
    });
}

/// A denial whose reply arrives after `reset` (sent before the reset's `DEL`, answered after the
/// reset began) must not be cached: Redis holds nothing for the key any more, so the next check
/// goes to Redis and passes. `join!` polls the check first, so its command is queued on the
/// multiplexed connection ahead of the `DEL`, and Redis runs them in that order.
#[test]
fn reset_during_a_denial_in_flight_leaves_no_cache_entry() {
    let server = RedisServer::start();
    rt().block_on(async {
        for algorithm in [RedisAlgorithm::Gcra, RedisAlgorithm::FixedWindow] {
            let redis = redis_support::manual_limiter(&server, Quota::per_hour(1).unwrap(), algorithm).await;
            let key: &[u8] = b"victim";
            assert!(redis.check(key, 1).await.unwrap().is_allowed());
            let (denied, reset) = tokio::join!(redis.check(key, 1), redis.reset(key));
            reset.unwrap();
            let denied = denied.unwrap();
            assert_eq!((denied.is_allowed(), denied.origin()), (false, Origin::Remote), "{algorithm:?}");
            let exists: i64 = server.query(redis::cmd("EXISTS").arg(redis.redis_key(key)));
            assert_eq!(exists, 0);
            assert_eq!(redis.deny_cache_len(), 0, "{algorithm:?}: stale deny-cache entry");
            let d = redis.check(key, 1).await.unwrap();
            assert_eq!(
                (d.is_allowed(), d.remaining(), d.origin()),
                (true, 0, Origin::Remote),
                "{algorithm:?}"
            );
        }
    });
}

/// The same for a quota change while a denial judged under the old quota is in flight: the
/// denial is reported but not cached, so the next check is judged by Redis under the new quota.
#[test]
fn quota_change_during_a_denial_in_flight_leaves_no_cache_entry() {
    let server = RedisServer::start();
    rt().block_on(async {
        let redis = RedisLimiter::builder(server.url(), Quota::per_hour(1).unwrap())
            .algorithm(RedisAlgorithm::FixedWindow)
            .timeout(Duration::from_secs(5))
            .clock(ManualClock::new())
            .connect()
            .await
            .unwrap();
        for (key, grant) in [(b"raised".as_slice(), true), (b"cleared".as_slice(), false)] {
            if !grant {
                redis.set_quota(key, Quota::per_hour(1).unwrap()).unwrap();
            }
            assert!(redis.check(key, 1).await.unwrap().is_allowed());
            // The check reads the quota and queues its command on its first poll, before the
            // second future changes the quota; its reply comes later.
            let (denied, ()) = tokio::join!(redis.check(key, 1), async {
                if grant {
                    redis.set_quota(key, Quota::per_hour(10).unwrap()).unwrap();
                } else {
                    redis.clear_quota(key);
                }
            });
            let denied = denied.unwrap();
            assert_eq!((denied.is_allowed(), denied.limit()), (false, 1));
            assert_eq!(redis.deny_cache_len(), 0, "{}: stale deny-cache entry", String::from_utf8_lossy(key));
            if grant {
                let d = redis.check(key, 1).await.unwrap();
                assert_eq!(
                    (d.is_allowed(), d.limit(), d.remaining(), d.origin()),
                    (true, 10, 8, Origin::Remote)
                );
            }
        }
    });
}
