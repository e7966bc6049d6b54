//! Waiting until a check passes: blocking [`Limiter::wait`] / [`KeyedLimiter::wait_key`], async
//! `Limiter::until_ready` / `KeyedLimiter::until_key_ready` (feature `tokio`), and
//! runtime-agnostic `*_with` variants that take your own sleep function.
//!
//! A waiter checks; on a denial it sleeps for the decision's `retry_after` (plus optional
//! [`Jitter`]) and checks again. It never spins: every retry is preceded by a sleep of at least
//! [`MIN_SLEEP`]. A cost that can never fit is an error at once (`InsufficientCapacity`),
//! never an endless wait. Waiting is not a queue: under contention a waiter that wakes may be
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
        mut sleep: impl FnMut(Duration),
    ) -> Result<Decision, InsufficientCapacity> {
        loop {
            let decision = self.check_n(n)?;
            if decision.is_allowed() {
                return Ok(decision);
            }
            sleep(jitter.delay(&decision));
        }
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
        mut sleep: impl FnMut(Duration),
    ) -> Result<Decision, CheckError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        loop {
            let decision = self.check_n(key, n)?;
            if decision.is_allowed() {
                return Ok(decision);
            }
            sleep(jitter.delay(&decision));
        }
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
