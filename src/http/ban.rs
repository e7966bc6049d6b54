//! Auto-ban: a client denied `N` times within a window is banned for a while (DESIGN.md §9).
//! Both halves are tollgate limiters: the strikes are a keyed GCRA with burst `N` refilled over
//! the window, and a ban is a keyed GCRA with burst 1 refilled over the ban duration (banning
//! spends its one cell; a banned key's peek is denied until the cell is back).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use super::key::{HttpKey, KeyBy};
use crate::clock::{Clock, QuantaClock};
use crate::keyed::KeyedLimiter;
use crate::quota::{Quota, QuotaError};

trait BanStore: Send + Sync {
    /// The remaining ban of `key`, if banned.
    fn banned(&self, key: &HttpKey) -> Option<Duration>;
    /// Records one denial; `true` if it banned the key.
    fn strike(&self, key: &HttpKey) -> bool;
    fn unban(&self, key: &HttpKey);
    fn sweep(&self) -> usize;
    fn for_each_ban(&self, f: &mut dyn FnMut(&str, Duration));
}

struct Store<C: Clock> {
    strikes: KeyedLimiter<HttpKey, C>,
    bans: KeyedLimiter<HttpKey, C>,
}

impl<C: Clock + 'static> BanStore for Store<C> {
    fn banned(&self, key: &HttpKey) -> Option<Duration> {
        self.bans.peek(key).retry_after()
    }

    fn strike(&self, key: &HttpKey) -> bool {
        match self.strikes.check(key) {
            // The N-th strike within the window leaves none: ban. (A full table of strikes bans
            // no one: memory stays bounded and the main limiter still applies.)
            Ok(d) if d.is_allowed() && d.remaining() > 0 => false,
            Ok(_) => {
                self.strikes.reset(key);
                self.bans.check(key).is_ok_and(|d| d.is_allowed())
            }
            Err(_) => false,
        }
    }

    fn unban(&self, key: &HttpKey) {
        self.bans.reset(key);
        self.strikes.reset(key);
    }

    fn sweep(&self) -> usize {
        self.strikes.sweep() + self.bans.sweep()
    }

    fn for_each_ban(&self, f: &mut dyn FnMut(&str, Duration)) {
        self.bans.for_each_key(|k, d| {
            if let Some(left) = d.retry_after() {
                f(k.as_str(), left);
            }
        });
    }
}

/// Auto-ban configuration: `denials` denials within `window` ban the key (by default the client
/// address) for `ban_for`. A banned client gets 403 (or 429, see [`AutoBan::status`]) with
/// `Retry-After`, without touching any rule's limiter.
///
/// Strikes are counted with GCRA (burst `denials`, one strike forgiven every
/// `window / denials`), so "within a window" is a sliding allowance, not a fixed bucket.
///
/// Only a blocking rule's own denial is a strike. A 429 that is not the client's doing is not:
/// a full key table ([`CheckError::KeyLimit`](crate::CheckError::KeyLimit)) or a backend's
/// fail-closed answer during an outage (a decision of [`Origin::Fallback`](crate::Origin),
/// e.g. Redis down under `FailurePolicy::FailClosed`), so an outage bans nobody past its end.
/// A local fallback share's denials (`FailurePolicy::Fallback`) are `Origin::Fallback` too,
/// so during an outage nobody is banned at all: the share itself still bounds each client.
///
/// ```
/// use std::time::Duration;
/// use tollgate::http::AutoBan;
/// let ban = AutoBan::new(10, Duration::from_secs(60), Duration::from_secs(600)).unwrap();
/// ```
#[derive(Clone)]
pub struct AutoBan {
    store: Arc<dyn BanStore>,
    pub(crate) key: KeyBy,
    pub(crate) status: StatusCode,
}

impl fmt::Debug for AutoBan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AutoBan")
            .field("key", &self.key)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl AutoBan {
    /// `denials` denials within `window` ban for `ban_for`, on the default clock.
    pub fn new(denials: u64, window: Duration, ban_for: Duration) -> Result<AutoBan, QuotaError> {
        AutoBan::with_clock(denials, window, ban_for, QuantaClock::new())
    }

    /// The same on a given clock (share it with the rules' limiters, e.g. a `ManualClock`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::http::AutoBan;
    /// use tollgate::ManualClock;
    /// let clock = ManualClock::new();
    /// let ban = AutoBan::with_clock(3, Duration::from_secs(10), Duration::from_secs(60), clock).unwrap();
    /// ```
    pub fn with_clock<C: Clock + Clone + 'static>(
        denials: u64,
        window: Duration,
        ban_for: Duration,
        clock: C,
    ) -> Result<AutoBan, QuotaError> {
        let strikes = KeyedLimiter::with_clock(Quota::new(denials, window)?, clock.clone());
        let bans = KeyedLimiter::with_clock(Quota::new(1, ban_for)?, clock);
        Ok(AutoBan {
            store: Arc::new(Store { strikes, bans }),
            key: KeyBy::ClientIp,
            status: StatusCode::FORBIDDEN,
        })
    }

    /// What a ban is keyed by (default [`KeyBy::ClientIp`]).
    pub fn key(mut self, key: KeyBy) -> AutoBan {
        self.key = key;
        self
    }

    /// The status banned clients get: 403 (default) or 429; anything else is taken as 403.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::http::AutoBan;
    /// let ban = AutoBan::new(3, Duration::from_secs(1), Duration::from_secs(9)).unwrap()
    ///     .status(http::StatusCode::TOO_MANY_REQUESTS);
    /// ```
    pub fn status(mut self, status: StatusCode) -> AutoBan {
        self.status = if status == StatusCode::TOO_MANY_REQUESTS { status } else { StatusCode::FORBIDDEN };
        self
    }

    /// How long `key` stays banned, if it is.
    pub fn banned(&self, key: &HttpKey) -> Option<Duration> {
        self.store.banned(key)
    }

    pub(crate) fn strike(&self, key: &HttpKey) -> bool {
        self.store.strike(key)
    }

    /// Lifts the ban on `key` and forgets its strikes.
    pub fn unban(&self, key: &HttpKey) {
        self.store.unban(key);
    }

    /// Evicts expired bans and forgotten strikes; returns how many entries it evicted. Call it
    /// periodically (a ban table only grows with the number of offenders, but it does grow):
    /// [`RateLimitLayer::sweep`](super::RateLimitLayer::sweep) and
    /// [`spawn_sweeper`](super::RateLimitLayer::spawn_sweeper) sweep the layer's auto-ban too.
    pub fn sweep(&self) -> usize {
        self.store.sweep()
    }

    /// Calls `f` with every active ban and its remaining time.
    pub fn for_each_ban(&self, mut f: impl FnMut(&str, Duration)) {
        self.store.for_each_ban(&mut f);
    }
}
