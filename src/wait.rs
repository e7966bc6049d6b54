//! Waiting until a check passes: blocking [`Limiter::wait`] / [`KeyedLimiter::wait_key`], async
//! `Limiter::until_ready` / `KeyedLimiter::until_key_ready` (feature `tokio`), and
//! runtime-agnostic `*_with` variants that take your own sleep function.
//!
//! A waiter checks; on a denial it sleeps for the decision's `retry_after` (plus optional
//! [`Jitter`]) and checks again. It never spins: every retry is preceded by a sleep of at least
//! [`MIN_SLEEP`] (a bounded wait's last sleep may be shorter: it ends at the deadline). A cost that can never fit is an error at once (`InsufficientCapacity`),
//! never an endless wait. [`Limiter::wait_n_timeout`] and [`KeyedLimiter::wait_key_n_timeout`]
//! bound the wait ([`WaitError::TimedOut`]), giving up at once when the next chance is past the
//! deadline; for the async waits, `tokio::time::timeout` bounds them (cancelling between
//! checks consumes nothing). Waiting is not a queue: under contention a waiter that wakes may be
//! denied again and sleep again (no fairness between waiters).
//!
//! ```
//! use std::time::Duration;
//! use tollgate::{Limiter, ManualClock, Quota};
//! use tollgate::wait::Jitter;
//!
//! let clock = ManualClock::new();
//! let limiter = Limiter::with_clock(Quota::per_second(1).unwrap(), clock.clone());
//! assert!(limiter.check().is_allowed());
//! // A "sleep" that advances the manual clock: deterministic, no real waiting.
//! let mut slept = Duration::ZERO;
//! let d = limiter
//!     .wait_n_with(1, Jitter::NONE, |d| {
//!         slept += d;
//!         clock.advance(d);
//!     })
//!     .unwrap();
//! assert!(d.is_allowed());
//! assert_eq!(slept, Duration::from_secs(1));
//! ```

use std::borrow::Borrow;
use std::cell::Cell;
use std::future::Future;
use std::hash::{BuildHasher, Hash, Hasher};
use std::time::Duration;

use crate::algorithm::Algorithm;
use crate::clock::Clock;
use crate::decision::{CheckError, Decision, InsufficientCapacity};
use crate::keyed::KeyedLimiter;
use crate::limiter::Limiter;

/// The shortest sleep between two checks of one waiter (a denial with a zero or tiny
/// `retry_after` still sleeps this long, so a waiter never spins).
pub const MIN_SLEEP: Duration = Duration::from_micros(1);

/// Random extra delay added to each sleep, so that waiters denied together do not all retry
/// at the same instant (thundering herd).
///
/// ```
/// use std::time::Duration;
/// use tollgate::wait::Jitter;
/// let j = Jitter::up_to(Duration::from_millis(5));
/// assert!(j.sample() <= Duration::from_millis(5));
/// assert_eq!(Jitter::NONE.sample(), Duration::ZERO);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Jitter {
    max: Duration,
}

impl Jitter {
    /// No jitter.
    pub const NONE: Jitter = Jitter { max: Duration::ZERO };

    /// A uniformly random extra delay in `[0, max]`.
    pub const fn up_to(max: Duration) -> Jitter {
        Jitter { max }
    }

    /// The largest extra delay.
    pub const fn max(&self) -> Duration {
        self.max
    }

    /// One random delay in `[0, max]` (a per-thread xorshift generator seeded from std's
    /// random hasher keys; not cryptographic).
    pub fn sample(&self) -> Duration {
        let max = u64::try_from(self.max.as_nanos()).unwrap_or(u64::MAX);
        if max == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(next_random() % max.saturating_add(1).max(1))
    }

    fn delay(&self, decision: &Decision) -> Duration {
        decision.retry_after().unwrap_or(Duration::ZERO).max(MIN_SLEEP).saturating_add(self.sample())
    }
}

/// Why a bounded wait (`wait_n_timeout`, `wait_key_n_timeout`) gave up.
///
/// ```
/// use std::time::Duration;
/// use tollgate::wait::WaitError;
/// use tollgate::{Limiter, ManualClock, Quota};
/// let limiter = Limiter::with_clock(Quota::per_hour(1).unwrap(), ManualClock::new());
/// assert!(limiter.check().is_allowed());
/// // The next cell comes in an hour: a wait of at most a second gives up at once.
/// match limiter.wait_n_timeout(1, Duration::from_secs(1)) {
///     Err(WaitError::TimedOut(d)) => assert_eq!(d.retry_after(), Some(Duration::from_secs(3600))),
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitError<E> {
    /// The check failed in a way that waiting cannot fix ([`InsufficientCapacity`]: the cost
    /// can never fit; for a keyed limiter any [`CheckError`], such as a full key table).
    Check(E),
    /// The request cannot be admitted within the time allowed. The last denial is attached:
    /// its `retry_after` says when it could be. A waiter gives up as soon as that is past the
    /// deadline, without sleeping until the deadline first.
    TimedOut(Decision),
}

impl<E: std::fmt::Display> std::fmt::Display for WaitError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitError::Check(e) => e.fmt(f),
            WaitError::TimedOut(d) => match d.retry_after() {
                Some(retry) => write!(f, "not admitted within the time allowed (next chance in {retry:?})"),
                None => f.write_str("not admitted within the time allowed"),
            },
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for WaitError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WaitError::Check(e) => Some(e),
            WaitError::TimedOut(_) => None,
        }
    }
}

/// A bounded waiter's next sleep after the denial `denied`, `waited` into a wait of at most
/// `timeout`, or `None` to give up: the denial cannot turn into an admission before the
/// deadline (its `retry_after`, the earliest time it could pass with no one else checking,
/// is past it). The sleep (`retry_after` plus jitter) is cut at the deadline, so a waiter
/// never sleeps past it; the one check at the deadline then decides.
fn bounded_sleep(denied: &Decision, jitter: Jitter, waited: Duration, timeout: Duration) -> Option<Duration> {
    let left = timeout.checked_sub(waited)?;
    if denied.retry_after().unwrap_or(Duration::ZERO) > left || left.is_zero() {
        return None;
    }
    // The floor first, the cut last: with under MIN_SLEEP left, the sleep ends at the deadline
    // (review finding: flooring after the cut slept past it and then admitted late).
    Some(jitter.delay(denied).max(MIN_SLEEP).min(left))
}

/// The bounded retry loop of every `*_timeout` waiter: `check` until it admits, sleeping with
/// `sleep` as [`bounded_sleep`] says. The time waited is the clock's while it moves; while it
/// stands still (a `ManualClock` under `std::thread::sleep`, a `CachedClock` between ticks) or
/// goes back, the sleeps since its last move are added, so the deadline still comes (review
/// finding: with a clock that did not move, a 10 ms wait never ended). Sleeps are not trusted
/// while the clock moves: a sleep that returns early (a spurious wake-up) must not end the wait
/// early (review finding: summing requested sleeps did).
fn bounded<E>(
    clock: &impl Clock,
    timeout: Duration,
    jitter: Jitter,
    mut check: impl FnMut() -> Result<Decision, E>,
    mut sleep: impl FnMut(Duration),
) -> Result<Decision, WaitError<E>> {
    let start = clock.now();
    let (mut latest, mut stalled) = (start, Duration::ZERO);
    loop {
        let decision = check().map_err(WaitError::Check)?;
        if decision.is_allowed() {
            return Ok(decision);
        }
        let now = clock.now();
        if now > latest {
            (latest, stalled) = (now, Duration::ZERO);
        }
        let waited = Duration::from_nanos(latest - start).saturating_add(stalled);
        match bounded_sleep(&decision, jitter, waited, timeout) {
            Some(d) => {
                sleep(d);
                stalled = stalled.saturating_add(d);
            }
            None => return Err(WaitError::TimedOut(decision)),
        }
    }
}

/// The blocking retry loop of every waiter without a deadline: `check` until it admits,
/// sleeping each denial's `retry_after` plus jitter.
fn unbounded<E>(
    jitter: Jitter,
    mut check: impl FnMut() -> Result<Decision, E>,
    mut sleep: impl FnMut(Duration),
) -> Result<Decision, E> {
    loop {
        let decision = check()?;
        if decision.is_allowed() {
            return Ok(decision);
        }
        sleep(jitter.delay(&decision));
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new({
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x5EED);
        h.finish() | 1
    });
}

fn next_random() -> u64 {
    RNG.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x
    })
}

impl<C: Clock, A: Algorithm> Limiter<C, A> {
    /// Blocks the thread until one cell is admitted (sleeping for `retry_after` between tries).
    ///
    /// ```
    /// use tollgate::{Limiter, Quota};
    /// let limiter = Limiter::new(Quota::per_second(1000).unwrap());
    /// assert!(limiter.wait().is_allowed());
    /// ```
    pub fn wait(&self) -> Decision {
        // Cost 1 always fits: every algorithm's capacity is at least 1.
        self.wait_n(1).unwrap_or_else(|_| self.check())
    }

    /// Blocks until `n` cells are admitted; `Err` at once if `n` can never fit.
    ///
    /// ```
    /// use tollgate::{Limiter, Quota};
    /// let limiter = Limiter::new(Quota::per_second(1000).unwrap());
    /// assert_eq!(limiter.wait_n(10).unwrap().remaining(), 990);
    /// assert!(limiter.wait_n(1001).is_err());
    /// ```
    pub fn wait_n(&self, n: u32) -> Result<Decision, InsufficientCapacity> {
        self.wait_n_with(n, Jitter::NONE, std::thread::sleep)
    }

    /// [`wait_n`](Self::wait_n) with jitter and your own sleep function (see the module docs).
    pub fn wait_n_with(
        &self,
        n: u32,
        jitter: Jitter,
        sleep: impl FnMut(Duration),
    ) -> Result<Decision, InsufficientCapacity> {
        unbounded(jitter, || self.check_n(n), sleep)
    }

    /// Blocks until `n` cells are admitted, for at most `timeout` (measured on the limiter's
    /// clock, and by the sleeps while that clock stands still); [`WaitError::TimedOut`] as soon as the next chance is past it, without sleeping
    /// first, and [`WaitError::Check`] at once if `n` can never fit.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{Limiter, Quota};
    /// let limiter = Limiter::new(Quota::per_second(1000).unwrap());
    /// assert!(limiter.wait_n_timeout(10, Duration::from_millis(5)).is_ok());
    /// ```
    pub fn wait_n_timeout(
        &self,
        n: u32,
        timeout: Duration,
    ) -> Result<Decision, WaitError<InsufficientCapacity>> {
        self.wait_n_timeout_with(n, timeout, Jitter::NONE, std::thread::sleep)
    }

    /// [`wait_n_timeout`](Self::wait_n_timeout) with jitter and your own sleep function.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::wait::{Jitter, WaitError};
    /// use tollgate::{Limiter, ManualClock, Quota};
    /// let clock = ManualClock::new();
    /// let limiter = Limiter::with_clock(Quota::per_second(1).unwrap(), clock.clone());
    /// assert!(limiter.check().is_allowed());
    /// let advance = |d| clock.advance(d);
    /// assert!(matches!(limiter.wait_n_timeout_with(1, Duration::from_millis(999), Jitter::NONE, advance), Err(WaitError::TimedOut(_))));
    /// assert!(limiter.wait_n_timeout_with(1, Duration::from_secs(1), Jitter::NONE, advance).is_ok());
    /// ```
    pub fn wait_n_timeout_with(
        &self,
        n: u32,
        timeout: Duration,
        jitter: Jitter,
        sleep: impl FnMut(Duration),
    ) -> Result<Decision, WaitError<InsufficientCapacity>> {
        bounded(self.clock(), timeout, jitter, || self.check_n(n), sleep)
    }

    /// Waits asynchronously until `n` cells are admitted, sleeping with `sleep` (any runtime's
    /// timer: `|d| tokio::time::sleep(d)`, `async_io::Timer::after`, …); `Err` at once if `n`
    /// can never fit.
    ///
    /// ```
    /// use tollgate::{Limiter, ManualClock, Quota};
    /// use tollgate::wait::Jitter;
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let limiter = Limiter::with_clock(Quota::per_second(2).unwrap(), ManualClock::new());
    /// let clock = limiter.clock().clone();
    /// let d = limiter
    ///     .until_n_ready_with(2, Jitter::NONE, |d| { clock.advance(d); std::future::ready(()) })
    ///     .await
    ///     .unwrap();
    /// assert_eq!(d.remaining(), 0);
    /// # });
    /// ```
    pub async fn until_n_ready_with<F, Fut>(
        &self,
        n: u32,
        jitter: Jitter,
        mut sleep: F,
    ) -> Result<Decision, InsufficientCapacity>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = ()>,
    {
        loop {
            let decision = self.check_n(n)?;
            if decision.is_allowed() {
                return Ok(decision);
            }
            sleep(jitter.delay(&decision)).await;
        }
    }
}

#[cfg(feature = "tokio")]
impl<C: Clock, A: Algorithm> Limiter<C, A> {
    /// Waits (on the tokio timer) until one cell is admitted.
    ///
    /// ```
    /// use tollgate::{Limiter, Quota};
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let limiter = Limiter::new(Quota::per_second(1000).unwrap());
    /// assert!(limiter.until_ready().await.is_allowed());
    /// # });
    /// ```
    pub async fn until_ready(&self) -> Decision {
        match self.until_n_ready(1).await {
            Ok(decision) => decision,
            // Unreachable: every capacity is at least 1.
            Err(_) => self.check(),
        }
    }

    /// Waits (on the tokio timer) until `n` cells are admitted; `Err` at once if `n` can never
    /// fit.
    pub async fn until_n_ready(&self, n: u32) -> Result<Decision, InsufficientCapacity> {
        self.until_n_ready_with(n, Jitter::NONE, tokio::time::sleep).await
    }

    /// [`until_n_ready`](Self::until_n_ready) with jitter.
    pub async fn until_n_ready_with_jitter(
        &self,
        n: u32,
        jitter: Jitter,
    ) -> Result<Decision, InsufficientCapacity> {
        self.until_n_ready_with(n, jitter, tokio::time::sleep).await
    }
}

impl<K, C, S, A> KeyedLimiter<K, C, S, A>
where
    K: Hash + Eq + Send + Sync + 'static,
    C: Clock,
    S: BuildHasher + Clone + Send + Sync + 'static,
    A: Algorithm,
{
    /// Blocks until one cell is admitted for `key`. `Err` only for errors retrying cannot fix
    /// (a full key table, see [`CheckError`]).
    ///
    /// ```
    /// use tollgate::{KeyedLimiter, Quota};
    /// let limiter: KeyedLimiter<String> = KeyedLimiter::new(Quota::per_second(1000).unwrap());
    /// assert!(limiter.wait_key("alice").unwrap().is_allowed());
    /// ```
    pub fn wait_key<Q>(&self, key: &Q) -> Result<Decision, CheckError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.wait_key_n_with(key, 1, Jitter::NONE, std::thread::sleep)
    }

    /// Blocks until `n` cells are admitted for `key`; `Err` at once if `n` can never fit.
    pub fn wait_key_n<Q>(&self, key: &Q, n: u32) -> Result<Decision, CheckError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.wait_key_n_with(key, n, Jitter::NONE, std::thread::sleep)
    }

    /// [`wait_key_n`](Self::wait_key_n) with jitter and your own sleep function.
    ///
    /// ```
    /// use tollgate::{CheckError, KeyedLimiter, ManualClock, Quota};
    /// use tollgate::wait::Jitter;
    /// let clock = ManualClock::new();
    /// let limiter: KeyedLimiter<String, _> = KeyedLimiter::with_clock(Quota::per_second(3).unwrap(), clock.clone());
    /// let err = limiter.wait_key_n_with("k", 4, Jitter::NONE, |d| clock.advance(d));
    /// assert!(matches!(err, Err(CheckError::InsufficientCapacity { cost: 4, capacity: 3 })));
    /// ```
    pub fn wait_key_n_with<Q>(
        &self,
        key: &Q,
        n: u32,
        jitter: Jitter,
        sleep: impl FnMut(Duration),
    ) -> Result<Decision, CheckError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        unbounded(jitter, || self.check_n(key, n), sleep)
    }

    /// Blocks until `n` cells are admitted for `key`, for at most `timeout` (measured on the
    /// limiter's clock, and by the sleeps while that clock stands still): [`WaitError::TimedOut`] as soon as the next chance is past it, without
    /// sleeping first; [`WaitError::Check`] at once for errors waiting cannot fix.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::wait::WaitError;
    /// use tollgate::{KeyedLimiter, Quota};
    /// let limiter: KeyedLimiter<String> = KeyedLimiter::new(Quota::per_hour(1).unwrap());
    /// assert!(limiter.wait_key_n_timeout("k", 1, Duration::from_millis(5)).is_ok());
    /// let err = limiter.wait_key_n_timeout("k", 1, Duration::from_millis(5));
    /// assert!(matches!(err, Err(WaitError::TimedOut(_))));
    /// ```
    pub fn wait_key_n_timeout<Q>(
        &self,
        key: &Q,
        n: u32,
        timeout: Duration,
    ) -> Result<Decision, WaitError<CheckError>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.wait_key_n_timeout_with(key, n, timeout, Jitter::NONE, std::thread::sleep)
    }

    /// [`wait_key_n_timeout`](Self::wait_key_n_timeout) with jitter and your own sleep
    /// function.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::wait::{Jitter, WaitError};
    /// use tollgate::{CheckError, KeyedLimiter, ManualClock, Quota};
    /// let clock = ManualClock::new();
    /// let limiter: KeyedLimiter<String, _> = KeyedLimiter::with_clock(Quota::per_second(3).unwrap(), clock.clone());
    /// let err = limiter.wait_key_n_timeout_with("k", 4, Duration::from_secs(9), Jitter::NONE, |d| clock.advance(d));
    /// assert!(matches!(err, Err(WaitError::Check(CheckError::InsufficientCapacity { cost: 4, capacity: 3 }))));
    /// ```
    pub fn wait_key_n_timeout_with<Q>(
        &self,
        key: &Q,
        n: u32,
        timeout: Duration,
        jitter: Jitter,
        sleep: impl FnMut(Duration),
    ) -> Result<Decision, WaitError<CheckError>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        bounded(self.clock(), timeout, jitter, || self.check_n(key, n), sleep)
    }

    /// Waits asynchronously until `n` cells are admitted for `key`, sleeping with `sleep`.
    pub async fn until_key_n_ready_with<Q, F, Fut>(
        &self,
        key: &Q,
        n: u32,
        jitter: Jitter,
        mut sleep: F,
    ) -> Result<Decision, CheckError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = ()>,
    {
        loop {
            let decision = self.check_n(key, n)?;
            if decision.is_allowed() {
                return Ok(decision);
            }
            sleep(jitter.delay(&decision)).await;
        }
    }
}

#[cfg(feature = "tokio")]
impl<K, C, S, A> KeyedLimiter<K, C, S, A>
where
    K: Hash + Eq + Send + Sync + 'static,
    C: Clock,
    S: BuildHasher + Clone + Send + Sync + 'static,
    A: Algorithm,
{
    /// Waits (on the tokio timer) until one cell is admitted for `key`.
    ///
    /// ```
    /// use tollgate::{KeyedLimiter, Quota};
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let limiter: KeyedLimiter<String> = KeyedLimiter::new(Quota::per_second(1000).unwrap());
    /// assert!(limiter.until_key_ready("bob").await.unwrap().is_allowed());
    /// # });
    /// ```
    pub async fn until_key_ready<Q>(&self, key: &Q) -> Result<Decision, CheckError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.until_key_n_ready_with(key, 1, Jitter::NONE, tokio::time::sleep).await
    }

    /// Waits (on the tokio timer) until `n` cells are admitted for `key`.
    pub async fn until_key_n_ready<Q>(&self, key: &Q, n: u32) -> Result<Decision, CheckError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.until_key_n_ready_with(key, n, Jitter::NONE, tokio::time::sleep).await
    }
}
