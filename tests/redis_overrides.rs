//! Per-key quota overrides in Redis, against the in-process [`KeyedLimiter`] as the reference: a
//! GCRA key's bucket stays as full as it was when its quota changes (the script converts the
//! stored TAT, which records the tolerance it was written under), keys in the previous release's
//! format (a bare TAT) are still read, and the sliding log keeps its window length.
#![cfg(feature = "redis")]

mod redis_support;

use std::time::Duration;

use rand::{Rng, SeedableRng};
use redis_support::RedisServer;
use tollgate::redis::{RedisAlgorithm, RedisLimiter};
use tollgate::{Clock, Decision, Gcra, KeyedLimiter, ManualClock, Nanos, Quota, QuotaError};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn q(s: &str) -> Quota {
    s.parse().unwrap()
}

/// ns since the Unix epoch, a whole number of µs (the unit the scripts keep).
const BASE: Nanos = 1_700_000_000_000_000_000;
const KEY: &str = "k";

fn fields(d: &Decision) -> (bool, u64, u64, u64, Option<u64>) {
    (d.is_allowed(), d.limit(), d.remaining(), d.reset_after_nanos(), d.retry_after_nanos())
}

/// The GCRA emission interval in µs as the script runs it (rounded up: src/redis/script.rs).
fn interval_us(quota: Quota) -> u64 {
    quota.emission_interval_nanos().div_ceil(1000)
}

/// `quota` as Redis runs it: its emission interval rounded up to a whole µs (`3/s` runs as one
/// cell per 333 334 µs), so that the reference decides exactly what the script should.
fn as_run_in_redis(quota: Quota) -> Quota {
    let per_cell = Duration::from_micros(interval_us(quota));
    Quota::new(1, per_cell).unwrap().with_burst(quota.burst()).unwrap()
}

enum Op {
    /// A check of this cost through both (0: a peek, consuming nothing).
    Check(u32),
    Wait(Duration),
    /// An override in both (the reference gets the quota as Redis runs it).
    Set(&'static str),
    /// An override in Redis only, or in the reference only.
    SetInRedis(&'static str),
    SetInProcess(&'static str),
    Clear,
}

/// Runs `ops` on one key through a Redis limiter and an in-process `KeyedLimiter` (both on the
/// default quota `default`) at the same µs-aligned times; every decision must agree in every
/// field. Returns Redis' decisions and the limiter (to inspect the key).
///
/// Redis converts a key's state at its first check after a change, the reference in
/// `set_quota`: the sequences check right after each change, at the same instant. Their
/// conversions come out in whole µs (Redis rounds a converted debt up to a µs, the reference to
/// a ns).
async fn replay(
    server: &RedisServer,
    default: &str,
    ops: &[Op],
) -> (Vec<Decision>, RedisLimiter<ManualClock>) {
    let clock = ManualClock::starting_at(BASE);
    let local: KeyedLimiter<String, _> = KeyedLimiter::with_clock(as_run_in_redis(q(default)), clock.clone());
    let redis = redis_support::manual_limiter(server, q(default), RedisAlgorithm::Gcra).await;
    redis.reset(KEY.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match *op {
            Op::Check(cost) => {
                let want = local.check_n(KEY, cost).unwrap();
                let got = redis.check_at(KEY.as_bytes(), cost, clock.now()).await.unwrap();
                let at = Duration::from_nanos(clock.now() - BASE);
                assert_eq!(fields(&got), fields(&want), "op {i} (cost {cost} at {at:?})");
                seen.push(got);
            }
            Op::Wait(by) => clock.advance(by),
            Op::Set(quota) => {
                local.set_quota(KEY, as_run_in_redis(q(quota))).unwrap();
                redis.set_quota(KEY.as_bytes(), q(quota)).unwrap();
            }
            Op::SetInRedis(quota) => redis.set_quota(KEY.as_bytes(), q(quota)).unwrap(),
            Op::SetInProcess(quota) => local.set_quota(KEY, as_run_in_redis(q(quota))).unwrap(),
            Op::Clear => {
                local.clear_quota(KEY);
                redis.clear_quota(KEY.as_bytes());
            }
        }
    }
    (seen, redis)
}

/// The reported case: a key that just spent its 1/h bucket is upgraded to 1000/s. It had stayed
/// denied for the rest of the hour (the stored TAT, now + 1 h, judged against a 1 s tolerance);
/// now its spent bucket is a spent 1000/s bucket, refilled within 1 s. Redis converts at the
/// key's first check under the new quota (a peek here, at the instant of the change).
///
/// `set_quota` makes no round trip, so until that check the key drains at the old rate, and the
/// check decides as the in-process limiter does with `set_quota` called at that instant (36 ms
/// later: 0.99999 s owed of 1 s, not 0.964 s).
#[test]
fn upgrading_a_spent_key_converts_its_debt() {
    let server = RedisServer::start();
    rt().block_on(async {
        let ms = Duration::from_millis;
        let ops =
            [Op::Check(1), Op::Set("1000/s"), Op::Check(0), Op::Wait(ms(100)), Op::Check(1), Op::Check(50)];
        let (seen, _) = replay(&server, "1/h", &ops).await;
        assert_eq!((seen[1].remaining(), seen[1].reset_after()), (0, ms(1000)));
        assert_eq!((seen[2].is_allowed(), seen[2].limit(), seen[2].remaining()), (true, 1000, 99));
        assert_eq!((seen[3].is_allowed(), seen[3].remaining()), (true, 49));

        let later = [Op::SetInRedis("1000/s"), Op::Wait(ms(36)), Op::SetInProcess("1000/s"), Op::Check(1)];
        let ops: Vec<Op> =
            [Op::Check(1)].into_iter().chain(later).chain([Op::Wait(ms(1)), Op::Check(1)]).collect();
        let (seen, _) = replay(&server, "1/h", &ops).await;
        assert_eq!(seen[1].retry_after(), Some(Duration::from_micros(990)));
        assert_eq!((seen[2].is_allowed(), seen[2].remaining()), (true, 0));
    });
}

/// Tightening 3/s to 2/min after 2 checks: 2/3 of the bucket spent stays 2/3 spent (40 s of
/// 60 s), not a TAT of 0.67 s judged as a 2/min one (which admitted the next check). The
/// conversion is stored by the denial: converting the unconverted TAT again a second later
/// would find it past and the key fresh.
#[test]
fn tightening_converts_the_debt_and_keeps_it() {
    let server = RedisServer::start();
    rt().block_on(async {
        let s = Duration::from_secs;
        let ops = [
            Op::Check(1),
            Op::Check(1),
            Op::Set("2/m"),
            Op::Check(1),
            Op::Wait(s(1)),
            Op::Check(1),
            Op::Wait(s(9)),
            Op::Check(1),
            Op::Check(0),
            // Back to 3/s: a spent 2/min bucket (60 s) is a spent 3/s one (1 000 002 µs).
            Op::Clear,
            Op::Check(1),
            Op::Wait(Duration::from_micros(333_334)),
            Op::Check(1),
        ];
        let (seen, _) = replay(&server, "3/s", &ops).await;
        assert_eq!((seen[2].is_allowed(), seen[2].retry_after()), (false, Some(s(10))));
        assert_eq!((seen[3].is_allowed(), seen[3].retry_after()), (false, Some(s(9))));
        assert_eq!((seen[4].is_allowed(), seen[4].remaining()), (true, 0));
        assert_eq!(seen[6].retry_after(), Some(Duration::from_micros(333_334)));
        assert_eq!((seen[7].is_allowed(), seen[7].limit(), seen[7].remaining()), (true, 3, 0));
    });
}

/// Clearing an override converts back: a 1000/s bucket spent under the override is a spent
/// 1/h bucket once cleared (it used to be a TAT 1 s ahead judged as a 1/h one: allowed a second
/// later, a fresh hour's bucket).
#[test]
fn clearing_an_override_converts_back() {
    let server = RedisServer::start();
    rt().block_on(async {
        let s = Duration::from_secs;
        let ops = [
            Op::Set("1000/s"),
            Op::Check(1000),
            Op::Clear,
            Op::Check(1),
            Op::Wait(s(1)),
            Op::Check(1),
            Op::Wait(s(3599)),
            Op::Check(1),
        ];
        let (seen, _) = replay(&server, "1/h", &ops).await;
        assert_eq!((seen[1].is_allowed(), seen[1].retry_after()), (false, Some(s(3600))));
        assert_eq!((seen[2].is_allowed(), seen[2].retry_after()), (false, Some(s(3599))));
        assert_eq!((seen[3].is_allowed(), seen[3].remaining()), (true, 0));
    });
}

/// The denial that converts stores the conversion (TAT now + 1 h under the 1/h tolerance,
/// 3 600 000 000 µs) with the converted TAT's TTL, not the old one's 1 s: the key expires when
/// its TAT passes.
#[test]
fn a_conversion_is_stored_with_its_ttl() {
    let server = RedisServer::start();
    rt().block_on(async {
        let ops = [Op::Set("1000/s"), Op::Check(1000), Op::Clear, Op::Check(1)];
        let (seen, redis) = replay(&server, "1/h", &ops).await;
        assert!(!seen[1].is_allowed());
        let name = redis.redis_key(KEY.as_bytes());
        let value: String = server.query(redis::cmd("GET").arg(&name));
        assert_eq!(value, format!("{}.03600000000", BASE / 1000 + 3_600_000_000));
        // check_at adds one hour to every TTL.
        let pttl: i64 = server.query(redis::cmd("PTTL").arg(&name));
        assert!((7_190_000..=7_200_000).contains(&pttl), "pttl {pttl}");
    });
}

/// A key in the previous release's format (a bare TAT) is read as written under the quota in
/// force for the key, as before (no conversion: nothing says under which it was written), and an
/// admitting check rewrites it in the current format.
#[test]
fn a_bare_tat_from_the_previous_release_is_read() {
    let server = RedisServer::start();
    rt().block_on(async {
        let redis = redis_support::manual_limiter(&server, q("10/m"), RedisAlgorithm::Gcra).await;
        redis.set_quota(b"vip", q("1000/s")).unwrap();
        let tat = BASE + 30_000_000_000; // 30 s ahead
        for (key, quota) in [("free", q("10/m")), ("vip", q("1000/s"))] {
            let name = redis.redis_key(key.as_bytes());
            let _: () = server
                .query(redis::cmd("SET").arg(&name).arg((tat / 1000).to_string()).arg("PX").arg(60_000));
            let gcra = Gcra::from_quota(quota);
            let mut state = tat;
            let steps =
                [(0, BASE), (1, BASE), (4, BASE), (1, BASE + 29_000_000_000), (1, BASE + 29_500_000_000)];
            for (cost, now) in steps {
                let got = redis.check_at(key.as_bytes(), cost, now).await.unwrap();
                let (want, new_tat) = gcra.step(state, now, u64::from(cost));
                state = new_tat.unwrap_or(state);
                assert_eq!(fields(&got), fields(&want), "{key}: cost {cost} at {now}");
            }
            let value: String = server.query(redis::cmd("GET").arg(&name));
            let tolerance = interval_us(quota) * quota.burst();
            assert_eq!(value, format!("{}.0{tolerance}", state / 1000), "{key}");
        }
    });
}

/// The conversion's integer math (a 102-bit product in Lua's doubles) against u128, over debts
/// and tolerances up to the scripts' 2⁵¹ µs bound, read back from a cost-0 check's reset_after
/// (the converted debt) and from the stored value. A debt beyond a full old bucket (the server's
/// clock stepped back) is capped at one.
#[test]
fn conversions_are_exact_up_to_the_script_bound() {
    let server = RedisServer::start();
    rt().block_on(async {
        let quotas = [
            q("1/us"),
            q("3/s"),
            Quota::new(1 << 20, Duration::from_secs(1 << 30)).unwrap(),
            Quota::new(1, Duration::from_micros((1 << 51) - 1)).unwrap(),
            Quota::new(7, Duration::from_micros((1 << 51) - 7)).unwrap(),
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x0c0f_fee5);
        let now_us = BASE / 1000;
        for (qi, quota) in quotas.into_iter().enumerate() {
            let redis = redis_support::manual_limiter(&server, quota, RedisAlgorithm::Gcra).await;
            let new = u128::from(interval_us(quota) * quota.burst());
            for case in 0..40 {
                let old: u64 = match case % 4 {
                    0 => rng.random_range(1..=1 << 51),
                    1 => rng.random_range(1..=1000),
                    _ => {
                        let bits = rng.random_range(1..=51u32);
                        rng.random_range(1..=1u64 << bits)
                    }
                };
                let debt = match case % 5 {
                    0 => old,
                    1 => 1,
                    2 => old + rng.random_range(1..=1 << 40), // clock stepped back: capped
                    _ => rng.random_range(1..=old),
                };
                let key = format!("conv-{qi}-{case}");
                let name = redis.redis_key(key.as_bytes());
                let stored = format!("{}.0{old}", now_us + debt);
                let _: () = server.query(redis::cmd("SET").arg(&name).arg(&stored).arg("PX").arg(60_000));
                let d = redis.check_at(key.as_bytes(), 0, BASE).await.unwrap();
                let want = if u128::from(old) == new {
                    debt // written under this tolerance: read as it is
                } else {
                    let capped = u128::from(debt.min(old));
                    u64::try_from((capped * new).div_ceil(u128::from(old))).unwrap()
                };
                let context = format!("quota {quota}, stored {stored}");
                assert_eq!(d.reset_after_nanos(), want * 1000, "{context}");
                let value: String = server.query(redis::cmd("GET").arg(&name));
                if u128::from(old) == new {
                    assert_eq!(value, stored, "{context}: the same tolerance, nothing to convert");
                } else {
                    assert_eq!(value, format!("{}.0{new}", now_us + want), "{context}");
                }
            }
        }
    });
}

/// The sliding log's override must keep the window length, as the windows' do
/// ([`QuotaError::Incompatible`]). In process a longer window is refused (stamps a sweep under
/// the default's window may have dropped would count again). In Redis the key's TTL plays the
/// sweep, and it follows the window of the check that wrote it: a longer override revived
/// stamps only while the key had not expired, and clearing a shorter one forgot stamps the
/// default still counts (its key expired with the override's window). Another limit is fine:
/// the sorted set has no fixed size (unlike the in-process ring).
#[test]
fn sliding_log_override_keeps_the_window_length() {
    let server = RedisServer::start();
    rt().block_on(async {
        let redis = redis_support::manual_limiter(&server, q("2/s"), RedisAlgorithm::SlidingLog).await;
        for other in ["2/10s", "2/h", "2/500ms", "200/10s"] {
            assert!(
                matches!(redis.set_quota(b"k", q(other)), Err(QuotaError::Incompatible { .. })),
                "{other} accepted"
            );
        }
        assert_eq!(redis.quota_of(b"k"), q("2/s"));
        // The same window, another limit: accepted, the stamps count under it.
        assert!(redis.check_at(b"k", 2, BASE).await.unwrap().is_allowed());
        redis.set_quota(b"k", q("5/s")).unwrap();
        let d = redis.check_at(b"k", 1, BASE + 600_000_000).await.unwrap();
        assert_eq!((d.is_allowed(), d.limit(), d.remaining()), (true, 5, 2));
        redis.clear_quota(b"k");
        let d = redis.check_at(b"k", 1, BASE + 700_000_000).await.unwrap();
        assert_eq!((d.is_allowed(), d.limit(), d.remaining()), (false, 2, 0));
    });
}
