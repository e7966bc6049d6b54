//! A rolling upgrade: processes on the previous release's window scripts (kept in
//! `tests/redis_support/previous/`, from commit 9f9c1c5) and on this one share keys. Both must
//! read each other's state (one limit, not one each), and keys the previous release locked
//! after a clock jump (re-stored with a TTL of years) must heal once upgraded.
#![cfg(feature = "redis")]

mod redis_support;

use redis_support::RedisServer;
use tollgate::redis::RedisAlgorithm;
use tollgate::Quota;

const PREVIOUS_PRELUDE: &str = include_str!("redis_support/previous/prelude.lua");
const PREVIOUS: [(RedisAlgorithm, &str); 2] = [
    (RedisAlgorithm::FixedWindow, include_str!("redis_support/previous/fixed_window.lua")),
    (RedisAlgorithm::SlidingWindow, include_str!("redis_support/previous/sliding_window.lua")),
];

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// One check by a process on the previous release (its script sent with `EVAL`): cost 1, the
/// server's clock or `now_us`, window `window_us`, `limit`. Whether it was admitted.
fn previous_check(
    server: &RedisServer,
    body: &str,
    key: &[u8],
    now_us: Option<u64>,
    window_us: u64,
    limit: u64,
) -> bool {
    let script = format!("{PREVIOUS_PRELUDE}\n{body}");
    let now = now_us.map_or(String::new(), |t| t.to_string());
    let reply: Vec<i64> = server.query(
        redis::cmd("EVAL").arg(script).arg(1).arg(key).arg("c").arg(1).arg(now).arg(window_us).arg(limit),
    );
    reply[0] == 1
}

/// Old and new processes alternate on one key under 5/h: 5 admitted in all (an incompatible
/// state format had let each side read the other's writes as a fresh key: 20 of 20).
#[test]
fn previous_and_current_release_share_one_limit() {
    let server = RedisServer::start();
    rt().block_on(async {
        for (algorithm, body) in PREVIOUS {
            let current =
                redis_support::manual_limiter(&server, Quota::per_hour(5).unwrap(), algorithm).await;
            let key: &[u8] = b"shared";
            let redis_key = current.redis_key(key);
            let mut admitted = 0;
            for i in 0..20 {
                let allowed = if i % 2 == 0 {
                    previous_check(&server, body, &redis_key, None, 3_600_000_000, 5)
                } else {
                    current.check(key, 1).await.unwrap().is_allowed()
                };
                admitted += u32::from(allowed);
            }
            assert_eq!(admitted, 5, "{algorithm:?}");
        }
    });
}

/// The previous release, after a check while the server's clock was 10 years ahead, re-stored
/// the key with a ~10-year TTL on the next (corrected) check, locking it once spent. Upgraded,
/// a TTL longer than any this release sets reads as such a leftover: the key is fresh.
#[test]
fn keys_the_previous_release_locked_heal() {
    let server = RedisServer::start();
    rt().block_on(async {
        let year = 365 * 24 * 3_600_000_000u64; // µs
        let present = 1_700_000_000_000_000u64; // µs
        for (algorithm, body) in PREVIOUS {
            let current =
                redis_support::manual_limiter(&server, Quota::per_minute(2).unwrap(), algorithm).await;
            let key: &[u8] = b"locked";
            let redis_key = current.redis_key(key);
            for now in [present + 10 * year, present] {
                assert!(previous_check(&server, body, &redis_key, Some(now), 60_000_000, 2));
            }
            let pttl: i64 = server.query(redis::cmd("PTTL").arg(&redis_key));
            assert!(pttl > 365 * 86_400_000, "{algorithm:?}: the previous release's lock ({pttl} ms)");
            let d = current.check_at(key, 1, (present + 60_000_000) * 1000).await.unwrap();
            assert!(d.is_allowed(), "{algorithm:?}: {d:?}");
            let pttl: i64 = server.query(redis::cmd("PTTL").arg(&redis_key));
            // check_at adds one hour to every TTL.
            assert!(pttl <= 3_600_000 + 3 * 60_000, "{algorithm:?}: re-stored for {pttl} ms");
        }
    });
}
