//! Auto-ban: a client denied `N` times within a window is banned for a while (DESIGN.md §9).
//! Both halves are tollgate limiters: the strikes are a keyed GCRA with burst `N` refilled over
//! the window, and a ban is a keyed GCRA with burst 1 refilled over the ban duration (banning
//! spends its one cell; a banned key's peek is denied until the cell is back).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use super::headers;
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
    /// A fresh store of the same quotas and clock, each table capped at `max_keys`.
    fn capped(&self, max_keys: usize) -> Arc<dyn BanStore>;
}

/// How many keys each of an [`AutoBan`]'s two tables (strikes, bans) holds by default: 2¹⁸.
/// A full table bans no one new (existing bans and strikes still count), so memory stays
/// bounded (tens of MiB at most) when a flood of addresses is refused: each IPv6 /64 is a key,
/// and a /48 holds 65 536 of them. Change it with [`AutoBan::max_keys`].
pub const DEFAULT_BAN_KEYS: usize = 1 << 18;

struct Store<C: Clock> {
    strikes: KeyedLimiter<HttpKey, C>,
    bans: KeyedLimiter<HttpKey, C>,
}

impl<C: Clock + Clone + 'static> Store<C> {
    fn new(strikes: Quota, bans: Quota, clock: C, max_keys: usize) -> Store<C> {
        Store {
            strikes: KeyedLimiter::with_clock(strikes, clock.clone()).max_keys(max_keys),
            bans: KeyedLimiter::with_clock(bans, clock).max_keys(max_keys),
        }
    }
}

impl<C: Clock + Clone + 'static> BanStore for Store<C> {
    fn banned(&self, key: &HttpKey) -> Option<Duration> {
        self.bans.peek(key).retry_after()
    }

    fn strike(&self, key: &HttpKey) -> bool {
        match self.strikes.check(key) {
            // The N-th strike within the window leaves none: ban. (A full table of strikes or
            // of bans, `DEFAULT_BAN_KEYS`, bans no one: memory stays bounded and the main
            // limiter still applies.)
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

    fn capped(&self, max_keys: usize) -> Arc<dyn BanStore> {
        let clock = self.strikes.clock().clone();
        Arc::new(Store::new(self.strikes.quota(), self.bans.quota(), clock, max_keys))
    }
}

/// Auto-ban configuration: `denials` denials within `window` ban the key (by default the client
/// address) for `ban_for`. A banned client gets 403 (or 429, see [`AutoBan::status`]) with
/// `Retry-After`, without touching any rule's limiter.
///
/// Strikes are counted with GCRA (burst `denials`, one strike forgiven every
/// `window / denials`), so "within a window" is a sliding allowance, not a fixed bucket.
///
/// The denial that bans is answered as the ban is (its status and `Retry-After`), so a client
/// that retries when told to does not walk into the ban.
///
/// Only a blocking rule's own denial is a strike. A 429 that is not the client's doing is not:
/// a denial by a bucket clients share (a site-wide [`KeyBy::Global`] rule, or the `-` bucket of
/// requests without a keyed header; see [`Rule::ban_strikes`](super::Rule::ban_strikes)), a
/// full key table ([`CheckError::KeyLimit`](crate::CheckError::KeyLimit)) or a backend's
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
        let store =
            Store::new(Quota::new(denials, window)?, Quota::new(1, ban_for)?, clock, DEFAULT_BAN_KEYS);
        Ok(AutoBan { store: Arc::new(store), key: KeyBy::ClientIp, status: StatusCode::FORBIDDEN })
    }

    /// Caps each of the two tables (strikes and bans) at `max_keys` keys (default
    /// [`DEFAULT_BAN_KEYS`]); set it before use (it starts both tables afresh). A key that
    /// finds a table full is neither struck nor banned.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::http::AutoBan;
    /// let ban = AutoBan::new(3, Duration::from_secs(60), Duration::from_secs(600)).unwrap().max_keys(10_000);
    /// ```
    pub fn max_keys(mut self, max_keys: usize) -> AutoBan {
        self.store = self.store.capped(max_keys);
        self
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

    /// What a banned client gets: [`status`](AutoBan::status), a problem body and the ban's
    /// `left` as `Retry-After`.
    pub(crate) fn response(&self, left: Duration) -> http::Response<bytes::Bytes> {
        let body = if self.status == StatusCode::FORBIDDEN { headers::BANNED } else { headers::BANNED_429 };
        let mut res = headers::problem(self.status, body);
        headers::write_retry_after(res.headers_mut(), left);
        res
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
