//! The Redis limiter on a real 3-master Redis Cluster (loopback, started by the test): every
//! algorithm, `check`, `check_many`, `peek` and `reset` with exact counts over keys spread across
//! all nodes; `NOSCRIPT` from a node whose script cache was flushed; exact admission under
//! concurrency.
#![cfg(feature = "redis-cluster")]

mod redis_support;

use std::sync::Arc;
use std::time::Duration;

use redis_support::RedisCluster;
use tollgate::redis::{RedisAlgorithm, RedisLimiter};
use tollgate::{CheckError, Origin, Quota};

const ALGORITHMS: [RedisAlgorithm; 4] = [
    RedisAlgorithm::Gcra,
    RedisAlgorithm::FixedWindow,
    RedisAlgorithm::SlidingWindow,
    RedisAlgorithm::SlidingLog,
];

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// 3 cells per 1000 days: no refill and no window boundary while the test runs (windows are
/// aligned to the Unix epoch, and the next 1000-day boundary is years away).
fn quota() -> Quota {
    Quota::new(3, Duration::from_secs(1000 * 86_400)).unwrap()
}

async fn limiter(cluster: &RedisCluster, algorithm: RedisAlgorithm, deny_cache: usize) -> RedisLimiter {
    RedisLimiter::cluster_builder(cluster.urls(), quota())
        .algorithm(algorithm)
        .deny_cache_capacity(deny_cache)
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap()
}

/// Keys per node (DBSIZE), in node order.
fn key_counts(cluster: &RedisCluster) -> Vec<i64> {
    cluster.query_all(&redis::cmd("DBSIZE"))
}

/// Whether each node has `algorithm`'s script cached.
fn script_cached(cluster: &RedisCluster, algorithm: RedisAlgorithm) -> Vec<bool> {
    let body = match algorithm {
        RedisAlgorithm::Gcra => include_str!("../src/redis/gcra.lua"),
        RedisAlgorithm::FixedWindow => include_str!("../src/redis/fixed_window.lua"),
        RedisAlgorithm::SlidingWindow => include_str!("../src/redis/sliding_window.lua"),
        _ => include_str!("../src/redis/sliding_log.lua"),
    };
    let source = format!("{}\n{body}", include_str!("../src/redis/prelude.lua"));
    let sha = redis::Script::new(&source).get_hash().to_owned();
    let found: Vec<Vec<bool>> = cluster.query_all(redis::cmd("SCRIPT").arg("EXISTS").arg(sha));
    found.into_iter().map(|v| v == [true]).collect()
}

/// 300 keys × 4 algorithms: each key admits exactly 3 of 4 checks (mixing `check` and
/// `check_many`), `peek` and `reset` act on the right node, and the keys land on all 3 nodes.
/// `connect`'s probe caches the script on one node; flushed then, every node first answers
/// NOSCRIPT.
#[test]
fn every_algorithm_is_exact_across_slots() {
    let cluster = RedisCluster::start(3);
    let keys: Vec<String> = (0..300).map(|i| format!("user:{i}")).collect();
    let runtime = rt();
    for (round, algorithm) in ALGORITHMS.into_iter().enumerate() {
        runtime.block_on(async {
            let redis = limiter(&cluster, algorithm, 0).await;
            // connect's probe ran the script on the empty key's node.
            assert_eq!(script_cached(&cluster, algorithm).iter().filter(|&&c| c).count(), 1, "{algorithm:?}");
            let _: Vec<String> = cluster.query_all(redis::cmd("SCRIPT").arg("FLUSH"));
            assert_eq!(script_cached(&cluster, algorithm), [false, false, false], "{algorithm:?}");
            // Checks 1 and 2: one check each; 3 and 4: check_many over all keys (4 is denied).
            for expected_remaining in [2, 1] {
                for key in &keys {
                    let d = redis.check(key.as_bytes(), 1).await.unwrap();
                    assert_eq!(
                        (d.is_allowed(), d.remaining(), d.origin()),
                        (true, expected_remaining, Origin::Remote)
                    );
                }
            }
            let allowed: Vec<(bool, u64)> = redis
                .check_many(&keys, 1)
                .await
                .into_iter()
                .map(|r| r.map(|d| (d.is_allowed(), d.remaining())).unwrap())
                .collect();
            assert_eq!(allowed, vec![(true, 0); keys.len()], "{algorithm:?}");
            let denied = redis.check_many(&keys, 1).await;
            assert!(denied.iter().all(|r| r.as_ref().is_ok_and(|d| !d.is_allowed())), "{algorithm:?}");
            // Each node re-cached it after its first NOSCRIPT.
            assert_eq!(script_cached(&cluster, algorithm), [true, true, true], "{algorithm:?}");

            // peek and reset route by key too.
            let d = redis.peek(b"user:7").await.unwrap();
            assert_eq!((d.is_allowed(), d.remaining()), (false, 0));
            redis.reset(b"user:7").await.unwrap();
            // A fresh key: a unit check would pass and leave 2.
            let d = redis.peek(b"user:7").await.unwrap();
            assert_eq!((d.is_allowed(), d.remaining()), (true, 2));
            let d = redis.check(b"user:7", 2).await.unwrap();
            assert_eq!((d.is_allowed(), d.remaining()), (true, 1));
            // Mixed batch: a too-large cost is refused locally, the rest go to their nodes.
            let mixed = redis.check_many(&["user:7", "fresh", "user:8"], 2).await;
            let seen: Vec<Result<bool, CheckError>> =
                mixed.into_iter().map(|r| r.map(|d| d.is_allowed())).collect();
            assert_eq!(seen, [Ok(false), Ok(true), Ok(false)]);
            let too_big = redis.check_many(&["user:9"], 4).await;
            assert_eq!(too_big, vec![Err(CheckError::InsufficientCapacity { cost: 4, capacity: 3 })]);

            // 301 keys per algorithm (300 users and "fresh"; connect's probe deletes its key),
            // spread over all three nodes.
            let counts = key_counts(&cluster);
            assert_eq!(counts.iter().sum::<i64>(), 301 * (round as i64 + 1), "{algorithm:?} {counts:?}");
            assert!(counts.iter().all(|&c| c >= 50 * (round as i64 + 1)), "{algorithm:?} {counts:?}");
        });
    }
}

/// A node loses its scripts (SCRIPT FLUSH on one node only, as after a restart or failover):
/// checks of keys on that node are re-sent with the source, transparently and exactly once.
#[test]
fn noscript_on_one_node_is_handled() {
    let cluster = RedisCluster::start(3);
    let runtime = rt();
    runtime.block_on(async {
        let redis = limiter(&cluster, RedisAlgorithm::Gcra, 1 << 10).await;
        let warm: Vec<String> = (0..60).map(|i| format!("warm:{i}")).collect();
        assert!(redis.check_many(&warm, 1).await.iter().all(|r| r.as_ref().is_ok_and(|d| d.is_allowed())));
        assert_eq!(script_cached(&cluster, RedisAlgorithm::Gcra), [true, true, true]);

        let _: String = cluster.nodes[1].query(redis::cmd("SCRIPT").arg("FLUSH"));
        assert_eq!(script_cached(&cluster, RedisAlgorithm::Gcra), [true, false, true]);
        let before = key_counts(&cluster);
        let keys: Vec<String> = (0..90).map(|i| format!("after-flush:{i}")).collect();
        // 3 admitted, then denied (the 4th by Redis, the 5th from the local deny cache).
        for (check, expected) in [(1, Some(2)), (2, Some(1)), (3, Some(0)), (4, None), (5, None)] {
            let results = redis.check_many(&keys, 1).await;
            for r in results {
                let d = r.unwrap();
                match expected {
                    Some(remaining) => assert_eq!((d.is_allowed(), d.remaining()), (true, remaining)),
                    None => {
                        let origin = if check == 4 { Origin::Remote } else { Origin::DenyCache };
                        assert_eq!((d.is_allowed(), d.origin()), (false, origin));
                    }
                }
            }
        }
        assert_eq!(script_cached(&cluster, RedisAlgorithm::Gcra), [true, true, true]);
        let after = key_counts(&cluster);
        assert!(after[1] > before[1], "no key landed on the flushed node: {before:?} → {after:?}");
        assert_eq!(after.iter().sum::<i64>() - before.iter().sum::<i64>(), 90);

        // Single checks after another flush of the same node.
        let _: String = cluster.nodes[1].query(redis::cmd("SCRIPT").arg("FLUSH"));
        for i in 0..30 {
            let key = format!("single:{i}");
            assert_eq!(redis.check(key.as_bytes(), 3).await.unwrap().remaining(), 0);
            assert!(!redis.check(key.as_bytes(), 1).await.unwrap().is_allowed());
        }
        assert_eq!(script_cached(&cluster, RedisAlgorithm::Gcra), [true, true, true]);
    });
}

/// 16 tasks on 2 cluster connections hammer one key: exactly the burst is admitted.
#[test]
fn concurrent_admission_is_exact() {
    let cluster = RedisCluster::start(3);
    let runtime = rt();
    let admitted = runtime.block_on(async {
        let quota = Quota::per_day(200).unwrap();
        let connect = || async {
            RedisLimiter::cluster_builder(cluster.urls(), quota)
                .deny_cache_capacity(0)
                .timeout(Duration::from_secs(5))
                .connect()
                .await
                .unwrap()
        };
        let (a, b) = (Arc::new(connect().await), Arc::new(connect().await));
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let limiter = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move {
                    let mut admitted = 0u64;
                    for _ in 0..25 {
                        if limiter.check(b"shared", 1).await.unwrap().is_allowed() {
                            admitted += 1;
                        }
                    }
                    admitted
                })
            })
            .collect();
        let mut total = 0;
        for task in tasks {
            total += task.await.unwrap();
        }
        total
    });
    assert_eq!(admitted, 200);
}
