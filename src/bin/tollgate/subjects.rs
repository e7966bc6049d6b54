//! The limiters under test, behind one tiny trait so the measuring loop is monomorphized for
//! each (no dynamic dispatch inside the timed loop), and the builders that populate them.

use std::num::NonZeroU32;
use std::sync::OnceLock;
use std::time::Duration;

use governor::clock::{DefaultClock, QuantaUpkeepClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use tollgate::{
    Algorithm, CachedClock, Clock, DefaultHashBuilder, KeyedLimiter, Limiter, PinnedLimiter, QuantaClock,
    Quota, QuotaError,
};

use crate::algos::with_algorithm;
use crate::spec::{AlgoKind, ClockKind, Keys};

/// One rate limiter under test. Each measuring thread takes a [`Batch`](Subject::Batch) every
/// 1024 checks and checks through it: the subject itself for most, a handle pinned for the
/// batch for `--pin` (`KeyedLimiter::pin`).
pub(crate) trait Subject: Sync {
    type Batch<'a>: Checker
    where
        Self: 'a;
    fn batch(&self) -> Self::Batch<'_>;
}

/// `check(key)` is one unit check, `true` when admitted.
pub(crate) trait Checker {
    fn check(&self, key: u64) -> bool;
}

/// A subject checked directly (no per-batch state): it is its own batch.
macro_rules! unbatched {
    ($($t:tt)*) => {
        impl $($t)* {
            type Batch<'a> = &'a Self where Self: 'a;
            #[inline]
            fn batch(&self) -> &Self {
                self
            }
        }
    };
}

/// Something done with a freshly built and populated subject (measuring it, or sizing it).
pub(crate) trait Visitor {
    type Out;
    fn visit<S: Subject>(self, subject: &S) -> Self::Out;
}

/// Upkeep interval of both libraries' coarse clocks.
pub(crate) const UPKEEP: Duration = Duration::from_millis(1);

struct TgDirect<C: Clock, A: Algorithm>(Limiter<C, A>);

unbatched!(<C: Clock, A: Algorithm> Subject for TgDirect<C, A>);

impl<C: Clock, A: Algorithm> Checker for &TgDirect<C, A> {
    #[inline]
    fn check(&self, _key: u64) -> bool {
        self.0.check().is_allowed()
    }
}

struct TgKeyed<C: Clock, A: Algorithm>(KeyedLimiter<u64, C, DefaultHashBuilder, A>);

unbatched!(<C: Clock, A: Algorithm> Subject for TgKeyed<C, A>);

impl<C: Clock, A: Algorithm> Checker for &TgKeyed<C, A> {
    #[inline]
    fn check(&self, key: u64) -> bool {
        matches!(self.0.check(&key), Ok(d) if d.is_allowed())
    }
}

/// tollgate keyed, checked through a handle pinned once per batch (`--pin`).
struct TgPinned<C: Clock, A: Algorithm>(KeyedLimiter<u64, C, DefaultHashBuilder, A>);

impl<C: Clock, A: Algorithm> Subject for TgPinned<C, A> {
    type Batch<'a>
        = PinnedLimiter<'a, u64, C, DefaultHashBuilder, A>
    where
        Self: 'a;
    #[inline]
    fn batch(&self) -> Self::Batch<'_> {
        self.0.pin()
    }
}

impl<C: Clock, A: Algorithm> Checker for PinnedLimiter<'_, u64, C, DefaultHashBuilder, A> {
    #[inline]
    fn check(&self, key: u64) -> bool {
        matches!(PinnedLimiter::check(self, &key), Ok(d) if d.is_allowed())
    }
}

type GovInstant<C> = <C as governor::clock::Clock>::Instant;

struct GovDirect<C: governor::clock::Clock>(
    governor::RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<GovInstant<C>>>,
);

unbatched!(<C: governor::clock::Clock + Sync> Subject for GovDirect<C>);

impl<C: governor::clock::Clock + Sync> Checker for &GovDirect<C> {
    #[inline]
    fn check(&self, _key: u64) -> bool {
        self.0.check().is_ok()
    }
}

struct GovKeyed<C: governor::clock::Clock>(
    governor::RateLimiter<u64, DashMapStateStore<u64>, C, NoOpMiddleware<GovInstant<C>>>,
);

unbatched!(<C: governor::clock::Clock + Sync> Subject for GovKeyed<C>);

impl<C: governor::clock::Clock + Sync> Checker for &GovKeyed<C> {
    #[inline]
    fn check(&self, key: u64) -> bool {
        self.0.check_key(&key).is_ok()
    }
}

/// tollgate's cached clock (one shared upkeep thread for the whole run).
fn tollgate_cached_clock() -> Result<CachedClock, String> {
    static CLOCK: OnceLock<Result<CachedClock, String>> = OnceLock::new();
    CLOCK.get_or_init(|| CachedClock::new(UPKEEP).map_err(|e| e.to_string())).clone()
}

/// governor's upkeep clock: its quanta allows one upkeep thread per process, so share one.
fn governor_upkeep_clock() -> Result<QuantaUpkeepClock, String> {
    static CLOCK: OnceLock<Result<QuantaUpkeepClock, String>> = OnceLock::new();
    CLOCK.get_or_init(|| QuantaUpkeepClock::from_interval(UPKEEP).map_err(|e| e.to_string())).clone()
}

/// Builds tollgate's limiter for the cell, populates its keys (one check each), and hands it
/// to `visitor`. `pin`: keyed checks go through `KeyedLimiter::pin`, once per batch.
pub(crate) fn with_tollgate<V: Visitor>(
    algo: AlgoKind,
    clock: ClockKind,
    keys: Keys,
    pin: bool,
    quota: Quota,
    key_list: &[u64],
    visitor: V,
) -> Result<V::Out, String> {
    with_algorithm!(algo, A => {
        let params = <A as Algorithm>::new(&quota).map_err(|e| format!("{algo}: {e}"))?;
        Ok(match clock {
            ClockKind::Quanta => tollgate_build(params, QuantaClock::new(), keys, pin, key_list, visitor),
            ClockKind::Cached => tollgate_build(params, tollgate_cached_clock()?, keys, pin, key_list, visitor),
        })
    }, missing => Err(format!("algorithm {algo} is not available in this build")))
}

fn tollgate_build<A: Algorithm, C: Clock, V: Visitor>(
    params: A,
    clock: C,
    keys: Keys,
    pin: bool,
    key_list: &[u64],
    visitor: V,
) -> V::Out {
    match keys {
        Keys::Direct => visitor.visit(&TgDirect(Limiter::with_algorithm(params, clock))),
        Keys::Keyed(n) => {
            let limiter = KeyedLimiter::build(params, clock, n, DefaultHashBuilder::default());
            for key in key_list {
                let _ = limiter.check(key);
            }
            if pin {
                visitor.visit(&TgPinned(limiter))
            } else {
                visitor.visit(&TgKeyed(limiter))
            }
        }
    }
}

/// The governor quota with the same emission interval and burst, if governor can express it.
pub(crate) fn governor_quota(quota: &Quota) -> Result<governor::Quota, String> {
    let burst = u32::try_from(quota.burst())
        .ok()
        .and_then(NonZeroU32::new)
        .ok_or_else(|| format!("governor cannot represent burst {}", quota.burst()))?;
    governor::Quota::with_period(quota.emission_interval())
        .map(|q| q.allow_burst(burst))
        .ok_or_else(|| "governor cannot represent a zero emission interval".to_string())
}

/// Builds governor's limiter for the same cell (GCRA only), populated the same way.
pub(crate) fn with_governor<V: Visitor>(
    clock: ClockKind,
    keys: Keys,
    quota: Quota,
    key_list: &[u64],
    visitor: V,
) -> Result<V::Out, String> {
    let quota = governor_quota(&quota)?;
    Ok(match clock {
        ClockKind::Quanta => governor_build(quota, DefaultClock::default(), keys, key_list, visitor),
        ClockKind::Cached => governor_build(quota, governor_upkeep_clock()?, keys, key_list, visitor),
    })
}

fn governor_build<C, V>(quota: governor::Quota, clock: C, keys: Keys, key_list: &[u64], visitor: V) -> V::Out
where
    C: governor::clock::Clock + Sync,
    V: Visitor,
{
    match keys {
        Keys::Direct => {
            visitor.visit(&GovDirect(governor::RateLimiter::new(quota, InMemoryState::default(), clock)))
        }
        Keys::Keyed(n) => {
            let limiter = governor::RateLimiter::new(quota, DashMapStateStore::with_capacity(n), clock);
            for key in key_list {
                let _ = limiter.check_key(key);
            }
            visitor.visit(&GovKeyed(limiter))
        }
    }
}

/// A quota that admits every check at the speeds this machine reaches (aiming at 10⁹/s):
/// GCRA and the fixed window get 10⁹ per second. The sliding-window counter packs two counts
/// and a window index in one word, so its largest limit shrinks with the window; it gets the
/// window (1 s … 100 ns) whose largest limit gives the highest rate (15 per 100 ns = 1.5·10⁸/s;
/// two threads hammering one key can see a few denials, shown in the `denied` column). The
/// sliding log, whose cell holds one stamp per unit of limit, gets 16 per 16 ns (a check takes
/// longer than 1 ns, so at most a handful of stamps are live, and a key costs a 128-byte ring
/// instead of 32 KiB).
/// Whether `algo` accepts `quota` (windows refuse limits past their packed counters).
pub(crate) fn accepts(algo: AlgoKind, quota: &Quota) -> bool {
    with_algorithm!(algo, A => <A as Algorithm>::new(quota).is_ok(), missing => false)
}

pub(crate) fn allow_all_quota(algo: AlgoKind) -> Result<Quota, String> {
    fn best<A: Algorithm>(algo: AlgoKind) -> Result<Quota, String> {
        let quota = |limit: u64, window: u64| {
            Quota::new(limit, Duration::from_nanos(window)).map_err(|e| e.to_string())
        };
        if algo == AlgoKind::Log {
            return quota(16, 16);
        }
        let mut best: Option<(f64, Quota)> = None;
        for window in [1_000_000_000u64, 1_000_000, 100_000, 10_000, 1_000, 100] {
            let wanted = quota(window, window)?; // 10⁹/s
            let fitted = match A::new(&wanted) {
                Ok(_) => wanted,
                Err(QuotaError::TooLarge { max, .. }) if max > 0 => quota(max, window)?,
                Err(_) => continue,
            };
            if A::new(&fitted).is_err() {
                continue;
            }
            let rate = fitted.burst() as f64 * 1e9 / window as f64;
            if best.is_none_or(|(r, _)| rate > r) {
                best = Some((rate, fitted));
            }
            if rate >= 1e9 {
                break;
            }
        }
        best.map(|(_, q)| q).ok_or_else(|| format!("no allow-all quota fits algorithm {algo}"))
    }
    with_algorithm!(algo, A => best::<A>(algo), missing => Err(format!("algorithm {algo} is not available")))
}

/// tollgate's own estimate of its bytes per key for a table of `n` keys built with
/// `with_capacity(n)`: papaya's table (one pointer and one metadata byte per slot; slots =
/// next power of two ≥ 4n/3) plus one heap entry per key (key + cell, rounded to glibc's
/// 16-byte chunks with an 8-byte header, 32 bytes minimum); the sliding log adds its ring of
/// `limit` stamps, a second heap block.
pub(crate) fn tollgate_estimate(algo: AlgoKind, n: usize, quota: &Quota) -> Option<f64> {
    fn chunk(bytes: usize) -> usize {
        ((bytes + 8).div_ceil(16) * 16).max(32)
    }
    fn per_key<A: Algorithm>(n: usize) -> f64 {
        let slots = (n.saturating_mul(8) / 6).max(1).next_power_of_two();
        let table = slots as f64 * 9.0 / n as f64;
        table + chunk(std::mem::size_of::<(u64, A::Cell)>()) as f64
    }
    if n == 0 {
        return None;
    }
    let ring = match algo {
        AlgoKind::Log => chunk(usize::try_from(quota.burst()).ok()?.checked_mul(8)?) as f64,
        _ => 0.0,
    };
    with_algorithm!(algo, A => Some(per_key::<A>(n) + ring), missing => None)
}
