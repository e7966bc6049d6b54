//! The Lua scripts and the parameters passed to them.
//!
//! Redis keeps time in microseconds (`TIME`) and Lua numbers are doubles, so the scripts run the
//! same integer math as the in-process algorithms in **microsecond** units, with every quantity
//! below 2⁵³ (exact in a double). [`Params::new`] converts a [`Quota`]: the emission interval
//! (GCRA) or window length is rounded **up** to a whole microsecond — never admitting more than
//! promised — and quotas whose arithmetic would leave the exact range are rejected with
//! [`QuotaError::TooLarge`]. Decisions are identical to the in-process ones when the quantity
//! the script uses is a whole number of microseconds: for the windows, the period (every rate
//! string with a unit of `us` or coarser); for GCRA, the emission interval T = period / count
//! *itself*, which a coarse unit does not guarantee. `3/s` has T = 333 333 334 ns in process
//! (rounded up in ns) but 333 334 µs in Redis (rounded up in µs), so Redis refills slightly
//! slower and the two can differ near a refill. The differential tests use quotas whose
//! quantities are whole µs.

use std::sync::LazyLock;

use redis::Script;

use super::keys::KeyArg;
use super::RedisAlgorithm;
use crate::clock::Nanos;
use crate::decision::Decision;
use crate::quota::{Quota, QuotaError};

const PRELUDE: &str = include_str!("prelude.lua");

/// One script per algorithm: its full source (the shared prelude, then the algorithm's body) and
/// its SHA-1 for `EVALSHA`.
struct Lua {
    source: String,
    script: Script,
}

static SCRIPTS: LazyLock<[Lua; 4]> = LazyLock::new(|| {
    let with_prelude = |body: &str| {
        let source = format!("{PRELUDE}\n{body}");
        Lua { script: Script::new(&source), source }
    };
    [
        with_prelude(include_str!("gcra.lua")),
        with_prelude(include_str!("fixed_window.lua")),
        with_prelude(include_str!("sliding_window.lua")),
        with_prelude(include_str!("sliding_log.lua")),
    ]
});

fn lua(algorithm: RedisAlgorithm) -> &'static Lua {
    let index = match algorithm {
        RedisAlgorithm::Gcra => 0,
        RedisAlgorithm::FixedWindow => 1,
        RedisAlgorithm::SlidingWindow => 2,
        RedisAlgorithm::SlidingLog => 3,
    };
    &SCRIPTS[index]
}

/// How a command names its script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScriptRef {
    /// `EVALSHA <sha1>`: the normal, compact form.
    Sha,
    /// `EVAL <source>`: after `NOSCRIPT`. It runs even if the script cache is flushed again in
    /// between (a `SCRIPT LOAD` + `EVALSHA` retry could lose that race), and caches the script.
    Source,
}

/// Largest value any script quantity may reach: 2⁵¹ µs (≈ 71 years). With `now` below 2⁵²
/// (until about 2112), `now + 2·2⁵¹` stays below 2⁵³, the exact range of a double.
pub const MAX_SCRIPT_VALUE: u64 = 1 << 51;

/// Largest limit of a sliding-window counter in Redis: its weighted estimate multiplies a count by
/// a duration, and the scripts split that product into two exact halves assuming counts below
/// 2²⁴ (the same bound as the in-process packed counter).
pub const MAX_WINDOW_LIMIT: u64 = (1 << 24) - 1;

/// Largest limit of a sliding log in Redis: 4096, the in-process cap
/// ([`window::MAX_LOG_LIMIT`](crate::window::MAX_LOG_LIMIT)); larger quotas are
/// [`QuotaError::TooLarge`] when building ([`SetupError::Quota`](super::SetupError::Quota)).
///
/// The log is a sorted set of up to `limit` members per key, and a check of cost `n` adds `n`
/// members inside one script, during which Redis serves no one else. Measured on Redis 7.0
/// (`MEMORY USAGE`): 113–127 bytes per member once the set exceeds 128 members (smaller sets use
/// the compact listpack encoding), so a full log of 4096 is about 0.5 MB per key. A check of
/// cost 4096 runs 3–30 ms on the server (`SLOWLOG`, a busy 2-core test machine); keep the
/// [`timeout`](super::RedisLimiterBuilder::timeout) well above that if checks cost thousands,
/// since a check that times out may still have taken its cells. The old cap of 65 536 let one
/// check block Redis for about 270 ms: longer than any sensible timeout, so the caller always
/// got an error although the cells were taken.
///
/// ```
/// assert_eq!(tollgate::redis::MAX_LOG_LIMIT, tollgate::window::MAX_LOG_LIMIT);
/// ```
pub const MAX_LOG_LIMIT: u64 = crate::window::MAX_LOG_LIMIT;

/// Script parameters for one quota under one algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Params {
    pub(crate) algorithm: RedisAlgorithm,
    pub(crate) quota: Quota,
    /// GCRA: emission interval T (µs). Windows: window length W (µs).
    pub(crate) a: u64,
    /// GCRA: tolerance burst·T (µs). Windows: the limit per window.
    pub(crate) b: u64,
    /// The most one check can admit (and `Decision::limit`).
    pub(crate) capacity: u64,
}

fn too_large(what: &'static str, value: u64, max: u64) -> QuotaError {
    QuotaError::TooLarge { what, value, max }
}

impl Params {
    /// Validates `quota` for `algorithm` in Redis (see the module docs).
    pub(crate) fn new(algorithm: RedisAlgorithm, quota: Quota) -> Result<Params, QuotaError> {
        match algorithm {
            RedisAlgorithm::Gcra => {
                // Redis keeps µs: an emission interval below 1 µs would run as 1 µs, a rate up
                // to 1000× below the quota's, silently. Refused instead.
                let interval = quota.emission_interval_nanos();
                if interval < 1000 {
                    return Err(too_large(
                        "cells per second (Redis keeps µs: one cell per µs at most)",
                        1_000_000_000 / interval.max(1),
                        1_000_000,
                    ));
                }
                let t = interval.div_ceil(1000);
                let burst = quota.burst();
                let tolerance = burst.checked_mul(t).filter(|&v| v <= MAX_SCRIPT_VALUE).ok_or_else(|| {
                    too_large("burst × emission interval in µs (Redis)", burst, MAX_SCRIPT_VALUE / t)
                })?;
                Ok(Params { algorithm, quota, a: t, b: tolerance, capacity: burst })
            }
            RedisAlgorithm::FixedWindow | RedisAlgorithm::SlidingWindow | RedisAlgorithm::SlidingLog => {
                // As for GCRA: a window below 1 µs would run as 1 µs.
                if quota.period_nanos() < 1000 {
                    return Err(too_large(
                        "windows per second (Redis keeps µs: a window of 1 µs at least)",
                        1_000_000_000 / quota.period_nanos().max(1),
                        1_000_000,
                    ));
                }
                let window = quota.period_nanos().div_ceil(1000);
                if window > MAX_SCRIPT_VALUE {
                    return Err(too_large("window in µs (Redis)", window, MAX_SCRIPT_VALUE));
                }
                // As in process: a window limits the count per period and has no burst.
                let limit = crate::window::window_limit(&quota)?;
                let max = match algorithm {
                    RedisAlgorithm::SlidingLog => MAX_LOG_LIMIT,
                    _ => MAX_WINDOW_LIMIT,
                };
                if limit > max {
                    return Err(too_large("limit per window (Redis)", limit, max));
                }
                Ok(Params { algorithm, quota, a: window, b: limit, capacity: limit })
            }
        }
    }

    /// The emission interval (GCRA) in ns, as the script applies it.
    pub(crate) fn a_nanos(&self) -> Nanos {
        self.a.saturating_mul(1000)
    }

    /// The GCRA tolerance in ns, as the script applies it.
    pub(crate) fn b_nanos(&self) -> Nanos {
        self.b.saturating_mul(1000)
    }

    /// Builds the script command for `key`, in one buffer sized up front (the key is escaped
    /// straight into it).
    pub(crate) fn command(
        &self,
        key: KeyArg<'_>,
        mode: Mode,
        cost: u64,
        now_us: Option<u64>,
        send: ScriptRef,
    ) -> redis::Cmd {
        let lua = lua(self.algorithm);
        let (name, script) = match send {
            ScriptRef::Sha => ("EVALSHA", lua.script.get_hash()),
            ScriptRef::Source => ("EVAL", lua.source.as_str()),
        };
        // 9 arguments; numbers take at most 20 digits each. Room for escaping a few bytes.
        let size = name.len() + script.len() + key.head.len() + key.key.len() + 2 + 16 + 5 * 20;
        let mut cmd = redis::Cmd::with_capacity(9, size);
        cmd.arg(name).arg(script).arg(1).arg(key);
        cmd.arg(match mode {
            Mode::Check => "c",
            Mode::Peek => "p",
        });
        cmd.arg(cost);
        match now_us {
            Some(now) => cmd.arg(now),
            None => cmd.arg(""),
        };
        cmd.arg(self.a).arg(self.b);
        cmd
    }

    /// Decodes a script's reply `{allowed, remaining, reset_after µs, retry_after µs}`.
    pub(crate) fn decode(&self, reply: &redis::Value) -> Result<Decision, String> {
        let redis::Value::Array(items) = reply else {
            return Err(format!("unexpected script reply {reply:?}"));
        };
        let mut fields = [0u64; 4];
        if items.len() != fields.len() {
            return Err(format!("script reply has {} fields, expected 4", items.len()));
        }
        for (field, item) in fields.iter_mut().zip(items) {
            *field = match item {
                redis::Value::Int(v) => u64::try_from(*v).map_err(|_| format!("negative field {v}"))?,
                other => return Err(format!("unexpected field {other:?}")),
            };
        }
        let [allowed, remaining, reset_us, retry_us] = fields;
        let reset = reset_us.saturating_mul(1000);
        Ok(if allowed == 1 {
            Decision::allowed(self.capacity, remaining, reset)
        } else {
            Decision::denied(self.capacity, remaining, reset, retry_us.saturating_mul(1000))
        })
    }
}

/// Whether the script consumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Check,
    Peek,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_round_up_and_bound() {
        let p = Params::new(RedisAlgorithm::Gcra, Quota::per_second(3).unwrap()).unwrap();
        assert_eq!((p.a, p.b, p.capacity), (333_334, 1_000_002, 3));
        let q: Quota = "1/us".parse().unwrap();
        let p = Params::new(RedisAlgorithm::Gcra, q).unwrap();
        assert_eq!((p.a, p.b), (1, 1));
        // Below 1 µs per cell (or per window) Redis would run 1000× slower than the quota.
        let q: Quota = "1/ns".parse().unwrap();
        let Err(QuotaError::TooLarge { value, max, .. }) = Params::new(RedisAlgorithm::Gcra, q) else {
            panic!("1/ns accepted for Redis")
        };
        assert_eq!((value, max), (1_000_000_000, 1_000_000));
        assert!(Params::new(RedisAlgorithm::Gcra, "2000000/s".parse().unwrap()).is_err());
        assert!(Params::new(RedisAlgorithm::Gcra, "1000000/s".parse().unwrap()).is_ok());
        for algorithm in
            [RedisAlgorithm::FixedWindow, RedisAlgorithm::SlidingWindow, RedisAlgorithm::SlidingLog]
        {
            assert!(matches!(
                Params::new(algorithm, "5/999ns".parse().unwrap()),
                Err(QuotaError::TooLarge { .. })
            ));
            assert!(Params::new(algorithm, "5/1us".parse().unwrap()).is_ok());
        }
        let q = "1/us".parse::<Quota>().unwrap().with_burst(1 << 52).unwrap();
        assert!(matches!(Params::new(RedisAlgorithm::Gcra, q), Err(QuotaError::TooLarge { .. })));
        let p = Params::new(RedisAlgorithm::FixedWindow, "10/1500ms".parse().unwrap()).unwrap();
        assert_eq!((p.a, p.b, p.capacity), (1_500_000, 10, 10));
        let bucket = Quota::per_second(10).unwrap().with_burst(30).unwrap();
        for algorithm in
            [RedisAlgorithm::FixedWindow, RedisAlgorithm::SlidingWindow, RedisAlgorithm::SlidingLog]
        {
            assert!(matches!(Params::new(algorithm, bucket), Err(QuotaError::UnsupportedBurst { .. })));
        }
        assert_eq!(Params::new(RedisAlgorithm::Gcra, bucket).unwrap().capacity, 30);
        let q = Quota::per_second(MAX_LOG_LIMIT + 1).unwrap();
        assert!(Params::new(RedisAlgorithm::SlidingLog, q).is_err());
        assert!(Params::new(RedisAlgorithm::SlidingWindow, q).is_ok());
    }

    #[test]
    fn decode_rejects_malformed_replies() {
        let p = Params::new(RedisAlgorithm::Gcra, Quota::per_second(3).unwrap()).unwrap();
        let ok = redis::Value::Array(vec![
            redis::Value::Int(0),
            redis::Value::Int(2),
            redis::Value::Int(5),
            redis::Value::Int(7),
        ]);
        let d = p.decode(&ok).unwrap();
        assert_eq!((d.is_allowed(), d.remaining(), d.reset_after_nanos()), (false, 2, 5000));
        assert_eq!(d.retry_after_nanos(), Some(7000));
        assert!(p.decode(&redis::Value::Nil).is_err());
        assert!(p.decode(&redis::Value::Array(vec![redis::Value::Int(-1); 4])).is_err());
        assert!(p.decode(&redis::Value::Array(vec![redis::Value::Int(1); 3])).is_err());
    }
}
