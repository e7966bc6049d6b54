//! The public API: the [`RateLimiter`] trait every limiter and backend implements, and the
//! direct (single-state) [`Limiter`].

use std::fmt;
use std::future::Future;

use crossbeam_utils::CachePadded;

use crate::algorithm::{Algorithm, Gcra, Receipt};
use crate::cell::Retired;
use crate::clock::{Clock, Nanos, QuantaClock};
use crate::decision::{CheckError, Decision, InsufficientCapacity};
use crate::quota::{Quota, HORIZON};

/// What every limiter offers, keyed by `K`: in-process (direct, keyed, any algorithm, composite)
/// and remote backends alike, so middleware and header writers are algorithm-agnostic.
///
/// A direct [`Limiter`] implements it for every key type and ignores the key (a global limit).
///
/// ```
/// use tollgate::{KeyedLimiter, Quota, RateLimiter};
///
/// fn admit<L: RateLimiter<str>>(limiter: &L, user: &str) -> bool {
///     limiter.check_key(user, 1).map(|d| d.is_allowed()).unwrap_or(false)
/// }
/// let limiter: KeyedLimiter<String> = KeyedLimiter::new(Quota::per_second(1).unwrap());
/// assert!(admit(&limiter, "alice"));
/// assert!(!admit(&limiter, "alice"));
/// assert!(admit(&limiter, "bob"));
/// ```
pub trait RateLimiter<K: ?Sized>: Send + Sync {
    /// Checks `cost` cells for `key`, consuming them if allowed.
    fn check_key(&self, key: &K, cost: u32) -> Result<Decision, CheckError>;

    /// What a unit check for `key` would decide now, consuming nothing.
    fn peek_key(&self, key: &K) -> Result<Decision, CheckError>;

    /// Forgets `key`'s state: its next check sees a fresh key.
    fn reset_key(&self, key: &K) -> Result<(), CheckError>;

    /// The quota in force for `key` (for policy headers).
    fn quota_for(&self, key: &K) -> Quota;

    /// Like [`check_key`](Self::check_key), and also returns a [`Receipt`] of what an allowed
    /// check took, so that a caller combining several limiters (the HTTP middleware's rules)
    /// can [`refund_key`](Self::refund_key) it when another limiter denies. The default returns
    /// [`Receipt::NONE`] (no refunds).
    ///
    /// ```
    /// use tollgate::{Limiter, ManualClock, Quota, RateLimiter};
    /// let limiter = Limiter::with_clock(Quota::per_second(2).unwrap(), ManualClock::new());
    /// let (d, receipt) = limiter.check_key_with_receipt(&(), 1).unwrap();
    /// assert_eq!(d.remaining(), 1);
    /// assert!(limiter.refund_key(&(), 1, receipt));
    /// assert_eq!(limiter.check().remaining(), 1); // the refunded cell was available again
    /// ```
    fn check_key_with_receipt(&self, key: &K, cost: u32) -> Result<(Decision, Receipt), CheckError> {
        self.check_key(key, cost).map(|d| (d, Receipt::NONE))
    }

    /// Gives back the `cost` cells that an allowed
    /// [`check_key_with_receipt`](Self::check_key_with_receipt) of `key` took (same cost, its
    /// receipt), as [`Algorithm::refund`] does: never more than was taken, nothing where an
    /// exact undo is impossible. Returns whether anything was given back. The default gives back
    /// nothing.
    fn refund_key(&self, key: &K, cost: u32, receipt: Receipt) -> bool {
        let _ = (key, cost, receipt);
        false
    }

    /// Evicts idle keys (those whose state equals a fresh key's), as
    /// [`KeyedLimiter::sweep`](crate::KeyedLimiter::sweep) does, and returns how many. The
    /// default, for limiters without a key table (a direct [`Limiter`]), evicts nothing.
    ///
    /// ```
    /// use tollgate::{KeyedLimiter, Limiter, ManualClock, Quota, RateLimiter};
    /// let clock = ManualClock::new();
    /// let keyed: KeyedLimiter<String, _> = KeyedLimiter::with_clock(Quota::per_second(1).unwrap(), clock.clone());
    /// let _ = keyed.check("a");
    /// clock.advance(std::time::Duration::from_secs(1));
    /// assert_eq!(RateLimiter::<str>::sweep_keys(&keyed), 1);
    /// assert_eq!(RateLimiter::<()>::sweep_keys(&Limiter::new(Quota::per_second(1).unwrap())), 0);
    /// ```
    fn sweep_keys(&self) -> usize {
        0
    }
}

/// A shared limiter is a limiter: hand one `Arc` to a rule (or any code generic over
/// [`RateLimiter`]) and keep another to sweep, inspect or reconfigure it.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use tollgate::{KeyedLimiter, Quota, RateLimiter};
/// let limiter = Arc::new(KeyedLimiter::<String>::new(Quota::per_second(1).unwrap()));
/// let _sweeper = limiter.spawn_sweeper(Duration::from_secs(10));
/// fn admit(l: impl RateLimiter<str>, user: &str) -> bool {
///     l.check_key(user, 1).is_ok_and(|d| d.is_allowed())
/// }
/// assert!(admit(limiter.clone(), "alice"));
/// assert!(!admit(limiter, "alice"));
/// ```
impl<K: ?Sized, L: RateLimiter<K> + ?Sized> RateLimiter<K> for std::sync::Arc<L> {
    #[inline]
    fn check_key(&self, key: &K, cost: u32) -> Result<Decision, CheckError> {
        (**self).check_key(key, cost)
    }

    fn peek_key(&self, key: &K) -> Result<Decision, CheckError> {
        (**self).peek_key(key)
    }

    fn reset_key(&self, key: &K) -> Result<(), CheckError> {
        (**self).reset_key(key)
    }

    fn quota_for(&self, key: &K) -> Quota {
        (**self).quota_for(key)
    }

    #[inline]
    fn check_key_with_receipt(&self, key: &K, cost: u32) -> Result<(Decision, Receipt), CheckError> {
        (**self).check_key_with_receipt(key, cost)
    }

    fn refund_key(&self, key: &K, cost: u32, receipt: Receipt) -> bool {
        (**self).refund_key(key, cost, receipt)
    }

    fn sweep_keys(&self) -> usize {
        (**self).sweep_keys()
    }
}

/// The async face of [`RateLimiter`], for backends that need a round trip (Redis). Every
/// in-process [`RateLimiter`] implements it for free (its futures are immediately ready), so
/// middleware written against `AsyncRateLimiter` takes both.
///
/// ```
/// use tollgate::{AsyncRateLimiter, Limiter, Quota};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let limiter = Limiter::new(Quota::per_second(1).unwrap());
/// let d = limiter.check_key_async(&(), 1).await.unwrap();
/// assert!(d.is_allowed());
/// # });
/// ```
pub trait AsyncRateLimiter<K: ?Sized>: Send + Sync {
    /// Async [`RateLimiter::check_key`].
    fn check_key_async<'a>(
        &'a self,
        key: &'a K,
        cost: u32,
    ) -> impl Future<Output = Result<Decision, CheckError>> + Send + 'a;

    /// Async [`RateLimiter::peek_key`].
    fn peek_key_async<'a>(
        &'a self,
        key: &'a K,
    ) -> impl Future<Output = Result<Decision, CheckError>> + Send + 'a;

    /// Async [`RateLimiter::reset_key`].
    fn reset_key_async<'a>(&'a self, key: &'a K) -> impl Future<Output = Result<(), CheckError>> + Send + 'a;

    /// The quota in force for `key` (for policy headers).
    fn quota_for_key(&self, key: &K) -> Quota;
}

impl<K: ?Sized + Sync, L: RateLimiter<K>> AsyncRateLimiter<K> for L {
    fn check_key_async<'a>(
        &'a self,
        key: &'a K,
        cost: u32,
    ) -> impl Future<Output = Result<Decision, CheckError>> + Send + 'a {
        std::future::ready(self.check_key(key, cost))
    }

    fn peek_key_async<'a>(
        &'a self,
        key: &'a K,
    ) -> impl Future<Output = Result<Decision, CheckError>> + Send + 'a {
        std::future::ready(self.peek_key(key))
    }

    fn reset_key_async<'a>(&'a self, key: &'a K) -> impl Future<Output = Result<(), CheckError>> + Send + 'a {
        std::future::ready(self.reset_key(key))
    }

    fn quota_for_key(&self, key: &K) -> Quota {
        self.quota_for(key)
    }
}

/// Reads `clock`, clamped to the supported [`HORIZON`] (so no arithmetic can overflow).
#[inline]
pub(crate) fn now_of<C: Clock>(clock: &C) -> Nanos {
    clock.now().min(HORIZON)
}

/// One shared state for all callers ("direct" limiter): a global limit, or one per object you
/// own. `Send + Sync`; share it by reference or `Arc`. Lock-free: a check is one clock read and
/// one CAS loop on a cache-padded word.
///
/// ```
/// use std::time::Duration;
/// use tollgate::{Limiter, ManualClock, Quota};
///
/// let clock = ManualClock::new();
/// let limiter = Limiter::with_clock(Quota::per_second(2).unwrap(), clock.clone());
/// assert!(limiter.check().is_allowed());
/// assert!(limiter.check().is_allowed());
/// let denied = limiter.check();
/// assert_eq!(denied.retry_after(), Some(Duration::from_millis(500)));
/// clock.advance(Duration::from_millis(500));
/// assert!(limiter.check().is_allowed());
/// ```
pub struct Limiter<C: Clock = QuantaClock, A: Algorithm = Gcra> {
    cell: CachePadded<A::Cell>,
    algorithm: A,
    clock: C,
}

impl Limiter {
    /// A GCRA limiter on the default [`QuantaClock`].
    pub fn new(quota: Quota) -> Limiter {
        Limiter::with_clock(quota, QuantaClock::new())
    }
}

impl<C: Clock> Limiter<C> {
    /// A GCRA limiter on the given clock.
    ///
    /// ```
    /// use tollgate::{Limiter, ManualClock, Quota};
    /// let limiter = Limiter::with_clock(Quota::per_minute(1).unwrap(), ManualClock::new());
    /// assert!(limiter.check().is_allowed());
    /// ```
    pub fn with_clock(quota: Quota, clock: C) -> Limiter<C> {
        Limiter::with_algorithm(Gcra::from_quota(quota), clock)
    }
}

impl<C: Clock, A: Algorithm> Limiter<C, A> {
    /// A limiter running `algorithm` on `clock`.
    ///
    /// ```
    /// use tollgate::{Algorithm, Gcra, Limiter, ManualClock, Quota};
    /// let gcra = Gcra::new(&Quota::per_second(5).unwrap()).unwrap();
    /// let limiter = Limiter::with_algorithm(gcra, ManualClock::new());
    /// assert_eq!(limiter.check().limit(), 5);
    /// ```
    pub fn with_algorithm(algorithm: A, clock: C) -> Limiter<C, A> {
        Limiter { cell: CachePadded::new(algorithm.new_cell()), algorithm, clock }
    }

    /// Checks one cell.
    #[inline]
    pub fn check(&self) -> Decision {
        self.check_cost(1)
    }

    /// Checks `n` cells at once (all or nothing). `Err` when `n` exceeds the capacity (it could
    /// never pass; nothing is consumed). `n = 0` consumes nothing and reports the current state.
    ///
    /// ```
    /// use tollgate::{Limiter, ManualClock, Quota};
    /// let limiter = Limiter::with_clock(Quota::per_second(10).unwrap(), ManualClock::new());
    /// assert_eq!(limiter.check_n(4).unwrap().remaining(), 6);
    /// assert_eq!(limiter.check_n(0).unwrap().remaining(), 6);
    /// assert!(limiter.check_n(11).is_err());
    /// ```
    #[inline]
    pub fn check_n(&self, n: u32) -> Result<Decision, InsufficientCapacity> {
        let cost = u64::from(n);
        let capacity = self.algorithm.capacity();
        if cost > capacity {
            return Err(InsufficientCapacity { cost, capacity });
        }
        Ok(self.check_cost(cost))
    }

    #[inline]
    fn check_cost(&self, cost: u64) -> Decision {
        let now = now_of(&self.clock);
        if cost == 0 {
            return self.algorithm.peek(&self.cell, now, 0);
        }
        self.algorithm.check_then(
            &self.cell,
            now,
            cost,
            |decision| decision,
            // Unreachable: nothing retires a direct limiter's cell. Fail closed if it ever were.
            || Decision::denied(self.algorithm.capacity(), 0, 0, 0),
        )
    }

    /// What [`Limiter::check`] would decide now, without consuming anything.
    ///
    /// ```
    /// use tollgate::{Limiter, ManualClock, Quota};
    /// let limiter = Limiter::with_clock(Quota::per_second(1).unwrap(), ManualClock::new());
    /// assert!(limiter.peek().is_allowed());
    /// assert!(limiter.peek().is_allowed());
    /// assert!(limiter.check().is_allowed());
    /// assert!(!limiter.peek().is_allowed());
    /// ```
    pub fn peek(&self) -> Decision {
        self.algorithm.peek(&self.cell, now_of(&self.clock), 1)
    }

    /// Returns the limiter to its fresh state (full burst available).
    ///
    /// ```
    /// use tollgate::{Limiter, ManualClock, Quota};
    /// let limiter = Limiter::with_clock(Quota::per_second(1).unwrap(), ManualClock::new());
    /// let _ = limiter.check();
    /// limiter.reset();
    /// assert!(limiter.check().is_allowed());
    /// ```
    pub fn reset(&self) {
        self.algorithm.reset(&self.cell);
    }

    /// The quota in force.
    pub fn quota(&self) -> Quota {
        self.algorithm.quota()
    }

    /// The algorithm's parameters.
    pub fn algorithm(&self) -> &A {
        &self.algorithm
    }

    /// The clock this limiter reads.
    pub fn clock(&self) -> &C {
        &self.clock
    }
}

impl<C: Clock, A: Algorithm> fmt::Debug for Limiter<C, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter").field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

impl<K: ?Sized, C: Clock, A: Algorithm> RateLimiter<K> for Limiter<C, A> {
    fn check_key(&self, _key: &K, cost: u32) -> Result<Decision, CheckError> {
        self.check_n(cost).map_err(CheckError::from)
    }

    fn peek_key(&self, _key: &K) -> Result<Decision, CheckError> {
        Ok(self.peek())
    }

    fn reset_key(&self, _key: &K) -> Result<(), CheckError> {
        self.reset();
        Ok(())
    }

    fn quota_for(&self, _key: &K) -> Quota {
        self.quota()
    }

    fn check_key_with_receipt(&self, _key: &K, cost: u32) -> Result<(Decision, Receipt), CheckError> {
        let cost = u64::from(cost);
        let capacity = self.algorithm.capacity();
        if cost > capacity {
            return Err(CheckError::InsufficientCapacity { cost, capacity });
        }
        let now = now_of(&self.clock);
        if cost == 0 {
            return Ok((self.algorithm.peek(&self.cell, now, 0), Receipt::NONE));
        }
        match self.algorithm.check_with_receipt(&self.cell, now, cost) {
            Ok(checked) => Ok(checked),
            // Unreachable (see check_cost); fail closed.
            Err(Retired) => Ok((Decision::denied(capacity, 0, 0, 0), Receipt::NONE)),
        }
    }

    fn refund_key(&self, _key: &K, cost: u32, receipt: Receipt) -> bool {
        self.algorithm.refund(&self.cell, now_of(&self.clock), u64::from(cost), receipt)
    }
}
