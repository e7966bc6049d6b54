//! What the middleware asks of a limiter: [`HttpLimiter`], implemented by every in-process
//! [`RateLimiter<HttpKey>`] (answered inline, no future allocated) and, through the adapters
//! [`StrKeys`] and [`AsyncKeys`], by any [`AsyncRateLimiter`] (e.g. the Redis limiter, keyed by
//! `str`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::key::HttpKey;
use crate::algorithm::Receipt;
use crate::decision::{CheckError, Decision};
use crate::limiter::{AsyncRateLimiter, RateLimiter};
use crate::quota::Quota;

/// A check in flight on a remote backend.
pub type CheckFuture = Pin<Box<dyn Future<Output = Result<Decision, CheckError>> + Send + 'static>>;

/// The answer of [`HttpLimiter::check_http`]: ready now (in-process limiters), or a future
/// (remote backends).
#[must_use]
#[non_exhaustive]
pub enum Check {
    /// Answered without waiting.
    Ready(Result<Decision, CheckError>),
    /// Needs a round trip.
    Pending(CheckFuture),
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::Ready(r) => f.debug_tuple("Ready").field(r).finish(),
            Check::Pending(_) => f.write_str("Pending(..)"),
        }
    }
}

/// A limiter the HTTP middleware can use. Object-safe, so rules can mix algorithms and
/// backends.
///
/// ```
/// use tollgate::http::{Check, HttpKey, HttpLimiter};
/// use tollgate::{KeyedLimiter, Quota};
/// let limiter: KeyedLimiter<HttpKey> = KeyedLimiter::new(Quota::per_second(1).unwrap());
/// let Check::Ready(Ok(d)) = limiter.check_http(&HttpKey::new("k"), 1) else { panic!() };
/// assert!(d.is_allowed());
/// ```
pub trait HttpLimiter: Send + Sync + 'static {
    /// Checks `cost` cells for `key`.
    fn check_http(&self, key: &HttpKey, cost: u32) -> Check;

    /// The quota in force for `key` (for `RateLimit-Policy`).
    fn quota_http(&self, key: &HttpKey) -> Quota;

    /// Forgets `key` (admin API); `Ok(false)` if this limiter cannot reset synchronously.
    fn reset_http(&self, key: &HttpKey) -> Result<bool, CheckError>;

    /// Calls `f` with every key's current state, if the limiter can list them (in-process keyed
    /// limiters can; the default lists nothing).
    fn for_each_http(&self, f: &mut dyn FnMut(&str, Decision)) {
        let _ = f;
    }

    /// Like [`check_http`](Self::check_http), and also returns a [`Receipt`] of what an allowed
    /// check took, for [`refund_http`](Self::refund_http). The middleware refunds the rules
    /// that allowed a request when a later rule refuses it. The default returns
    /// [`Receipt::NONE`] (no refund); in-process limiters forward to
    /// [`RateLimiter::check_key_with_receipt`].
    ///
    /// ```
    /// use tollgate::http::{Check, HttpKey, HttpLimiter};
    /// use tollgate::{Limiter, ManualClock, Quota};
    /// let limiter = Limiter::with_clock(Quota::per_second(1).unwrap(), ManualClock::new());
    /// let key = HttpKey::new("k");
    /// let (Check::Ready(Ok(d)), receipt) = limiter.check_http_with_receipt(&key, 1) else { panic!() };
    /// assert!(d.is_allowed());
    /// assert!(limiter.refund_http(&key, 1, receipt));
    /// assert!(limiter.check().is_allowed()); // the refunded cell was available again
    /// ```
    fn check_http_with_receipt(&self, key: &HttpKey, cost: u32) -> (Check, Receipt) {
        (self.check_http(key, cost), Receipt::NONE)
    }

    /// Gives back what an allowed [`check_http_with_receipt`](Self::check_http_with_receipt)
    /// took (same key and cost, its receipt); `false` if nothing was given back (the default).
    fn refund_http(&self, key: &HttpKey, cost: u32, receipt: Receipt) -> bool {
        let _ = (key, cost, receipt);
        false
    }

    /// Evicts idle keys and returns how many ([`RateLimiter::sweep_keys`] for in-process
    /// limiters; a remote store expires its own keys, and the default evicts nothing).
    /// [`RateLimitLayer::sweep`](super::RateLimitLayer::sweep) calls it on every rule.
    fn sweep_http(&self) -> usize {
        0
    }
}

impl<L: RateLimiter<HttpKey> + 'static> HttpLimiter for L {
    #[inline]
    fn check_http(&self, key: &HttpKey, cost: u32) -> Check {
        Check::Ready(self.check_key(key, cost))
    }

    fn quota_http(&self, key: &HttpKey) -> Quota {
        self.quota_for(key)
    }

    fn reset_http(&self, key: &HttpKey) -> Result<bool, CheckError> {
        self.reset_key(key).map(|()| true)
    }

    #[inline]
    fn check_http_with_receipt(&self, key: &HttpKey, cost: u32) -> (Check, Receipt) {
        match self.check_key_with_receipt(key, cost) {
            Ok((decision, receipt)) => (Check::Ready(Ok(decision)), receipt),
            Err(e) => (Check::Ready(Err(e)), Receipt::NONE),
        }
    }

    fn refund_http(&self, key: &HttpKey, cost: u32, receipt: Receipt) -> bool {
        self.refund_key(key, cost, receipt)
    }

    fn sweep_http(&self) -> usize {
        self.sweep_keys()
    }
}

/// Lists keys of a keyed limiter for the admin API: wrap an in-process
/// `KeyedLimiter<HttpKey, …>` in this to make its keys visible. Everything else (checks with
/// receipts and refunds included) behaves as the bare limiter.
///
/// ```
/// use tollgate::http::{HttpKey, HttpLimiter, Listed};
/// use tollgate::{KeyedLimiter, Quota};
/// let limiter = Listed(KeyedLimiter::<HttpKey>::new(Quota::per_second(1).unwrap()));
/// let _ = limiter.check_http(&HttpKey::new("a"), 1);
/// let mut keys = Vec::new();
/// limiter.for_each_http(&mut |k, _| keys.push(k.to_owned()));
/// assert_eq!(keys, ["a"]);
///
/// // A take is refundable, as with the bare limiter.
/// let key = HttpKey::new("b");
/// let (_, receipt) = limiter.check_http_with_receipt(&key, 1);
/// assert!(limiter.refund_http(&key, 1, receipt));
/// ```
#[derive(Debug)]
pub struct Listed<C: crate::Clock + 'static, S = crate::DefaultHashBuilder, A: crate::Algorithm = crate::Gcra>(
    pub crate::KeyedLimiter<HttpKey, C, S, A>,
);

impl<C, S, A> HttpLimiter for Listed<C, S, A>
where
    C: crate::Clock + 'static,
    S: std::hash::BuildHasher + Clone + Send + Sync + 'static,
    A: crate::Algorithm + 'static,
{
    #[inline]
    fn check_http(&self, key: &HttpKey, cost: u32) -> Check {
        Check::Ready(self.0.check_n(key, cost))
    }

    fn quota_http(&self, key: &HttpKey) -> Quota {
        self.0.quota_of(key)
    }

    fn reset_http(&self, key: &HttpKey) -> Result<bool, CheckError> {
        self.0.reset(key);
        Ok(true)
    }

    fn for_each_http(&self, f: &mut dyn FnMut(&str, Decision)) {
        self.0.for_each_key(|k, d| f(k.as_str(), d));
    }

    /// Forwards to the keyed limiter's [`RateLimiter::check_key_with_receipt`], so a rule
    /// wrapped in `Listed` is refunded like a bare keyed limiter when a later rule refuses.
    #[inline]
    fn check_http_with_receipt(&self, key: &HttpKey, cost: u32) -> (Check, Receipt) {
        match RateLimiter::check_key_with_receipt(&self.0, key, cost) {
            Ok((decision, receipt)) => (Check::Ready(Ok(decision)), receipt),
            Err(e) => (Check::Ready(Err(e)), Receipt::NONE),
        }
    }

    fn refund_http(&self, key: &HttpKey, cost: u32, receipt: Receipt) -> bool {
        RateLimiter::refund_key(&self.0, key, cost, receipt)
    }

    fn sweep_http(&self) -> usize {
        self.0.sweep()
    }
}

/// Adapts a `str`-keyed [`AsyncRateLimiter`] (the Redis limiter) to [`HttpLimiter`]: the key's
/// text is passed as is. Each check boxes one future (negligible next to a round trip).
///
/// ```
/// use tollgate::http::{Check, HttpKey, HttpLimiter, StrKeys};
/// use tollgate::{KeyedLimiter, Quota};
/// // Any `AsyncRateLimiter<str>` works; an in-process one stands in for Redis here.
/// let limiter = StrKeys::new(KeyedLimiter::<String>::new(Quota::per_second(1).unwrap()));
/// assert!(matches!(limiter.check_http(&HttpKey::new("k"), 1), Check::Pending(_)));
/// ```
#[derive(Debug)]
pub struct StrKeys<L>(Arc<L>);

impl<L> StrKeys<L> {
    /// Wraps `limiter`.
    pub fn new(limiter: L) -> StrKeys<L> {
        StrKeys(Arc::new(limiter))
    }

    /// The wrapped limiter.
    pub fn inner(&self) -> &L {
        &self.0
    }
}

impl<L: AsyncRateLimiter<str> + 'static> HttpLimiter for StrKeys<L> {
    fn check_http(&self, key: &HttpKey, cost: u32) -> Check {
        let limiter = Arc::clone(&self.0);
        let key = key.clone();
        Check::Pending(Box::pin(async move { limiter.check_key_async(key.as_str(), cost).await }))
    }

    fn quota_http(&self, key: &HttpKey) -> Quota {
        self.0.quota_for_key(key.as_str())
    }

    fn reset_http(&self, _key: &HttpKey) -> Result<bool, CheckError> {
        Ok(false)
    }
}

/// Adapts an [`AsyncRateLimiter<HttpKey>`] that is not a synchronous [`RateLimiter`].
///
/// ```
/// use tollgate::http::{AsyncKeys, HttpKey};
/// use tollgate::{KeyedLimiter, Quota};
/// let limiter = AsyncKeys::new(KeyedLimiter::<HttpKey>::new(Quota::per_second(1).unwrap()));
/// ```
#[derive(Debug)]
pub struct AsyncKeys<L>(Arc<L>);

impl<L> AsyncKeys<L> {
    /// Wraps `limiter`.
    pub fn new(limiter: L) -> AsyncKeys<L> {
        AsyncKeys(Arc::new(limiter))
    }
}

impl<L: AsyncRateLimiter<HttpKey> + 'static> HttpLimiter for AsyncKeys<L> {
    fn check_http(&self, key: &HttpKey, cost: u32) -> Check {
        let limiter = Arc::clone(&self.0);
        let key = key.clone();
        Check::Pending(Box::pin(async move { limiter.check_key_async(&key, cost).await }))
    }

    fn quota_http(&self, key: &HttpKey) -> Quota {
        self.0.quota_for_key(key)
    }

    fn reset_http(&self, _key: &HttpKey) -> Result<bool, CheckError> {
        Ok(false)
    }
}
