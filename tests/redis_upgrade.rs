//! A rolling upgrade: processes on the previous release's scripts (kept in
//! `tests/redis_support/previous/`, from commit 9f9c1c5, whose GCRA script was the first release's)
//! and on this one share keys. Both must read each other's state (one limit, not one each), and
//! keys the previous release locked after a clock jump (re-stored with a TTL of years) must heal
//! once upgraded.
#![cfg(feature = "redis")]

mod redis_support;

use redis_support::RedisServer;
use tollgate::redis::RedisAlgorithm;
use tollgate::{Gcra, Quota};

const PREVIOUS_PRELUDE: &str = include_str!("redis_support/previous/prelude.lua");
const PREVIOUS: [(RedisAlgorithm, &str); 2] = [
    (RedisAlgorithm::FixedWindow, include_str!("redis_support/previous/fixed_window.lua")),
    (RedisAlgorithm::SlidingWindow, include_str!("redis_support/previous/sliding_window.lua")),
];
const PREVIOUS_GCRA: &str = include_str!("redis_support/previous/gcra.lua");

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// One check by a process on the previous release (its script sent with `EVAL`): `cost`, the
/// server's clock or `now_us`, the algorithm's parameters `(a, b)` (ARGV[4] and ARGV[5]: window
/// and limit, or GCRA's emission interval and tolerance, µs). The reply: allowed, remaining,
/// reset_after µs, retry_after µs.
fn previous_eval(
    server: &RedisServer,
    body: &str,
    key: &[u8],
    cost: u64,
    now_us: Option<u64>,
    (a, b): (u64, u64),
) -> Vec<i64> {
    let script = format!("{PREVIOUS_PRELUDE}\n{body}");
    let now = now_us.map_or(String::new(), |t| t.to_string());
    server.query(redis::cmd("EVAL").arg(script).arg(1).arg(key).arg("c").arg(cost).arg(now).arg(a).arg(b))
}

/// [`previous_eval`] of cost 1: whether it was admitted.
fn previous_check(
    server: &RedisServer,
    body: &str,
    key: &[u8],
    now_us: Option<u64>,
    params: (u64, u64),
) -> bool {
    previous_eval(server, body, key, 1, now_us, params)[0] == 1
}

/// Old and new processes alternate on one key under 5/h: 5 admitted in all (an incompatible
/// state format had let each side read the other's writes as a fresh key: 20 of 20).
#[test]
fn previous_and_current_release_share_one_limit() {
    let server = RedisServer::start();
    rt().block_on(async {
        let windows = PREVIOUS.map(|(algorithm, body)| (algorithm, body, (3_600_000_000, 5)));
        // GCRA's state now carries the tolerance it was written under.
        let gcra = (RedisAlgorithm::Gcra, PREVIOUS_GCRA, (720_000_000, 3_600_000_000));
        for (algorithm, body, params) in windows.into_iter().chain([gcra]) {
            let current =
                redis_support::manual_limiter(&server, Quota::per_hour(5).unwrap(), algorithm).await;
            let key: &[u8] = b"shared";
            let redis_key = current.redis_key(key);
            let mut admitted = 0;
            for i in 0..20 {
                let allowed = if i % 2 == 0 {
                    previous_check(&server, body, &redis_key, None, params)
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
                assert!(previous_check(&server, body, &redis_key, Some(now), (60_000_000, 2)));
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

/// GCRA, exactly: the previous release reads this one's state (a TAT and its tolerance in one
/// decimal number, `<tat>.0<tolerance>`) as the bare TAT it wrote, and this release reads the
/// previous one's bare TATs. Every decision of either, on one key, equals the in-process step's.
#[test]
fn previous_and_current_release_read_each_others_gcra_state_exactly() {
    let server = RedisServer::start();
    rt().block_on(async {
        let quota = Quota::new(3, std::time::Duration::from_micros(300)).unwrap(); // T = 100 µs
        let current = redis_support::manual_limiter(&server, quota, RedisAlgorithm::Gcra).await;
        let gcra = Gcra::from_quota(quota);
        let key: &[u8] = b"exact";
        let redis_key = current.redis_key(key);
        // From 2^50 µs (2005) on, where a double's spacing is 0.25 µs: every TAT the server's
        // clock writes.
        let (mut tat, mut now_us) = (0, 1 << 50);
        for i in 0..80u64 {
            let cost = i * 7 % 4;
            now_us += i * 13 % 150;
            let (want, new_tat) = gcra.step(tat, now_us * 1000, cost);
            tat = new_tat.unwrap_or(tat);
            let want =
                (want.is_allowed(), want.remaining(), want.reset_after_nanos(), want.retry_after_nanos());
            let got = if i % 2 == 0 {
                let r = previous_eval(&server, PREVIOUS_GCRA, &redis_key, cost, Some(now_us), (100, 300));
                let ns = |us: i64| u64::try_from(us).unwrap() * 1000;
                (r[0] == 1, u64::try_from(r[1]).unwrap(), ns(r[2]), (r[0] == 0).then(|| ns(r[3])))
            } else {
                let d = current.check_at(key, cost as u32, now_us * 1000).await.unwrap();
                (d.is_allowed(), d.remaining(), d.reset_after_nanos(), d.retry_after_nanos())
            };
            assert_eq!(got, want, "step {i}: cost {cost} at {now_us} µs");
        }
        let value: String = server.query(redis::cmd("GET").arg(&redis_key));
        assert!(value.ends_with(".0300"), "the current format: {value}");
    });
}
