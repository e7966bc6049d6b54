//! Distributed limiting in Redis (feature `redis`): the same algorithms and the same
//! [`Decision`], with the state in Redis so that many processes share one limit.
//!
//! * **One round trip per check.** Each algorithm is one Lua script ([`EVALSHA`], reloaded
//!   transparently after `NOSCRIPT`, e.g. after `SCRIPT FLUSH` or a failover), running the same
//!   integer math as the in-process version on the server's clock (`TIME`, in microseconds), so
//!   clients' clocks never matter. See [`RedisLimiter::check`] for the µs rounding.
//! * **Keys** are `{prefix}:{algo}:{<escaped key>}`: the user key is the Cluster hash tag,
//!   escaped so binary keys, `{`/`}` and huge keys are namespaced safely (every byte outside
//!   `[A-Za-z0-9-_.~:@/]` becomes `%XX`; the empty key is `%`). Every Redis key expires when its
//!   state becomes fresh again, so Redis cleans itself and nothing sweeps.
//! * **Failures** never panic and never hang: every call is bounded by a timeout, and the
//!   limiter's [`FailurePolicy`] decides what a failed or late call returns. After a few
//!   failures in a row a circuit breaker answers by the policy at once, probing once per
//!   cooldown ([`RedisLimiterBuilder::circuit_breaker`]), so an outage does not cost every
//!   check the timeout.
//! * **Deny cache:** after Redis denies a key, this process denies it locally until it could pass
//!   again (exactly, for GCRA), saving the round trip under attack. Bounded in size.
//! * **Connections:** `redis://`, `redis+unix://`, and `rediss://` (TLS, feature `redis-tls`:
//!   rustls, public webpki roots or your CA via
//!   `RedisLimiterBuilder::tls_root_certificates`, optional client certificate). Redis Cluster
//!   with feature `redis-cluster` (`RedisLimiter::cluster_builder`). One multiplexed,
//!   reconnecting connection per limiter, `TCP_NODELAY` on.
//! * **Server version:** Redis 5.0 or later. The scripts read `TIME` before they write, which
//!   needs effects replication (the default since 5.0; 3.2–4.x would refuse the write), and use
//!   no command newer than 5.0. The test suite runs against Redis 7.0.
//!
//! ```no_run
//! use tollgate::redis::{FailurePolicy, RedisAlgorithm, RedisLimiter};
//! use tollgate::Quota;
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let limiter = RedisLimiter::builder("redis://127.0.0.1:6379", Quota::per_second(100)?)
//!     .algorithm(RedisAlgorithm::Gcra)
//!     .prefix("api")
//!     .failure_policy(FailurePolicy::FailOpen)
//!     .connect()
//!     .await?;
//! let decision = limiter.check(b"user:42", 1).await?;
//! if !decision.is_allowed() {
//!     println!("retry after {:?}", decision.retry_after());
//! }
//! # Ok(()) }
//! ```
//!
//! [`EVALSHA`]: https://redis.io/docs/latest/commands/evalsha/

mod breaker;
#[cfg(tollgate_loom)]
#[doc(hidden)]
pub use breaker::loom_api as breaker_loom;
mod cache;
#[cfg(tollgate_loom)]
#[doc(hidden)]
pub use cache::loom_api as deny_cache_loom;
mod conn;
mod keys;
mod script;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, Nanos, QuantaClock};
use crate::decision::{CheckError, Decision, Origin};
use crate::limiter::{now_of, AsyncRateLimiter, RateLimiter};
use crate::quota::{Quota, QuotaError};
use breaker::Breaker;
use cache::{DenyCache, Entry};
use conn::{Connection, Target, TlsConfig};
use keys::KeyArg;
use script::{Mode, Params, ScriptRef};
pub use script::{MAX_LOG_LIMIT, MAX_SCRIPT_VALUE, MAX_WINDOW_LIMIT};

/// Which algorithm the Redis scripts run. Each runs the same integer math as its in-process
/// counterpart ([`Gcra`](crate::Gcra), [`FixedWindow`](crate::FixedWindow),
/// [`SlidingWindow`](crate::SlidingWindow), [`SlidingLog`](crate::SlidingLog)) and reads the quota
/// the same way: GCRA as a bucket of `burst` cells refilled one per emission interval; windows as
/// `count` cells per window of `period` (a quota with a separate burst is refused for windows,
/// [`QuotaError::UnsupportedBurst`]). Windows are aligned to the Unix epoch (Redis' clock).
///
/// ```
/// use tollgate::redis::RedisAlgorithm;
/// assert_eq!(RedisAlgorithm::default(), RedisAlgorithm::Gcra);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RedisAlgorithm {
    /// GCRA (token bucket / leaky bucket): one string per key holding the TAT and the tolerance
    /// it was written under (so a per-key quota change converts it: [`RedisLimiter::set_quota`]).
    #[default]
    Gcra,
    /// Fixed window: one string per key (`window index:count`); limit at most
    /// [`MAX_WINDOW_LIMIT`].
    FixedWindow,
    /// Sliding window counter (weighted previous + current window): one string per key
    /// (`window index:previous:current`); limit at most [`MAX_WINDOW_LIMIT`].
    SlidingWindow,
    /// Exact sliding log: one sorted set per key holding the newest `limit` admission stamps;
    /// limit at most [`MAX_LOG_LIMIT`] (4096, as in process; about 113–127 bytes of Redis memory
    /// per member).
    SlidingLog,
}

/// What a check returns when Redis fails or does not answer within the timeout.
///
/// ```
/// use std::sync::Arc;
/// use tollgate::redis::FailurePolicy;
/// use tollgate::{KeyedLimiter, Quota};
/// // A local limiter with a share of the global quota takes over while Redis is down.
/// let local: KeyedLimiter<Vec<u8>> = KeyedLimiter::new(Quota::per_second(10).unwrap());
/// let policy = FailurePolicy::Fallback(Arc::new(local));
/// assert!(matches!(policy, FailurePolicy::Fallback(_)));
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Return the error ([`CheckError::Backend`] or [`CheckError::Timeout`]) to the caller.
    #[default]
    ReturnError,
    /// Allow the request: `Decision::allowed(limit, 0, 0)` with [`Origin::Unchecked`] (its
    /// numbers say nothing of the key).
    FailOpen,
    /// Deny the request: `Decision::denied(limit, 0, 0, 1 s)` with [`Origin::Fallback`]
    /// (`Retry-After: 1`).
    FailClosed,
    /// Ask this in-process limiter instead (keyed by the key's bytes); its decision is marked
    /// [`Origin::Fallback`]. Give it a share of the global quota.
    ///
    /// A cost that fits the Redis quota but exceeds the local share's burst cannot pass while
    /// Redis is away, yet it is not [`CheckError::InsufficientCapacity`] (which means "never"):
    /// it is denied with [`Origin::Fallback`], the Redis quota's limit, `remaining` 0, the local
    /// share's `reset_after` (its time until full), and a `retry_after` of the Redis quota's period (a guess at when
    /// Redis may answer again; the local share alone never admits it).
    Fallback(Arc<dyn RateLimiter<[u8]>>),
}

impl fmt::Debug for FailurePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailurePolicy::ReturnError => "ReturnError",
            FailurePolicy::FailOpen => "FailOpen",
            FailurePolicy::FailClosed => "FailClosed",
            FailurePolicy::Fallback(_) => "Fallback(..)",
        })
    }
}

/// Why a [`RedisLimiter`] could not be built.
///
/// ```
/// use tollgate::redis::{RedisLimiter, SetupError};
/// use tollgate::Quota;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let err = RedisLimiter::builder("not a url", Quota::per_second(1).unwrap()).connect().await;
/// assert!(matches!(err, Err(SetupError::Url { .. })));
/// # });
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SetupError {
    /// The URL was not understood (schemes: `redis://`, `rediss://` with TLS, `redis+unix://`).
    Url {
        /// redis-rs' message.
        reason: String,
    },
    /// The key prefix contains `{` or `}` (it would break the Cluster hash tag).
    Prefix {
        /// The prefix given.
        prefix: String,
    },
    /// The quota cannot run exactly in Redis (see [`RedisLimiter::check`]).
    Quota(QuotaError),
    /// The TLS settings were not usable (a certificate or key that does not parse, or TLS
    /// settings with a URL that is not `rediss://`).
    Tls {
        /// redis-rs' message.
        reason: String,
    },
    /// The first connection failed.
    Connect {
        /// redis-rs' message.
        reason: String,
    },
    /// The first connection did not complete within the timeout.
    Timeout {
        /// The timeout.
        after: Duration,
    },
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Url { reason } => write!(f, "invalid Redis URL: {reason}"),
            SetupError::Prefix { prefix } => {
                write!(f, "key prefix {prefix:?} must not contain '{{' or '}}'")
            }
            SetupError::Quota(e) => write!(f, "quota not supported in Redis: {e}"),
            SetupError::Tls { reason } => write!(f, "invalid TLS settings: {reason}"),
            SetupError::Connect { reason } => write!(f, "cannot connect to Redis: {reason}"),
            SetupError::Timeout { after } => write!(f, "Redis did not answer within {after:?}"),
        }
    }
}

impl std::error::Error for SetupError {}

impl From<QuotaError> for SetupError {
    fn from(e: QuotaError) -> Self {
        SetupError::Quota(e)
    }
}

/// Builds a [`RedisLimiter`]; from [`RedisLimiter::builder`].
///
/// ```no_run
/// use std::time::Duration;
/// use tollgate::redis::{RedisAlgorithm, RedisLimiter};
/// use tollgate::Quota;
/// # async fn demo() -> Result<(), tollgate::redis::SetupError> {
/// let limiter = RedisLimiter::builder("redis+unix:///run/redis.sock", Quota::per_minute(60).unwrap())
///     .algorithm(RedisAlgorithm::SlidingLog)
///     .timeout(Duration::from_millis(20))
///     .deny_cache_capacity(100_000)
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "call .connect().await to build the limiter"]
pub struct RedisLimiterBuilder<C: Clock = QuantaClock> {
    target: Target,
    tls: TlsConfig,
    quota: Quota,
    algorithm: RedisAlgorithm,
    prefix: String,
    timeout: Duration,
    reconnect_max_delay: Duration,
    policy: FailurePolicy,
    deny_cache_capacity: usize,
    breaker: (u32, Duration),
    clock: C,
}

/// Default [`RedisLimiterBuilder::circuit_breaker`] threshold: 3 failed calls in a row.
pub const DEFAULT_BREAKER_THRESHOLD: u32 = 3;
/// Default [`RedisLimiterBuilder::circuit_breaker`] cooldown: 250 ms.
pub const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_millis(250);

/// What a call the circuit breaker does not send awaits: tokio's cooperative budget, so that a
/// task checking in a loop still yields now and then (every 128 budget units) while the
/// answers come at once. Without it such loops starved the runtime's other tasks, among them
/// the reconnection that would close the breaker.
async fn not_sent() {
    tokio::task::consume_budget().await;
}

/// Default [`RedisLimiterBuilder::timeout`]: 50 ms.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// Default [`RedisLimiterBuilder::deny_cache_capacity`]: 65 536 keys.
pub const DEFAULT_DENY_CACHE_CAPACITY: usize = 1 << 16;

impl<C: Clock> RedisLimiterBuilder<C> {
    /// The algorithm (default [`RedisAlgorithm::Gcra`]).
    pub fn algorithm(mut self, algorithm: RedisAlgorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// The key prefix (default `"tollgate"`); must not contain `{` or `}`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Bounds every call, connection attempts included (default [`DEFAULT_TIMEOUT`]). A call
    /// that does not complete in time is a [`CheckError::Timeout`], which the [`FailurePolicy`]
    /// then handles; a first connection that does not is a [`SetupError::Timeout`]. redis-rs' own
    /// response and connection timeouts are set to twice this, so the limiter's always fires
    /// first and a slow server is never reported as a [`CheckError::Backend`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::redis::RedisLimiter;
    /// let builder = RedisLimiter::builder("redis://127.0.0.1/", tollgate::Quota::per_second(1).unwrap())
    ///     .timeout(Duration::from_millis(20));
    /// # drop(builder);
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Longest pause between reconnection attempts after Redis went away (default 100 ms), which
    /// is how long a limiter may take to notice that Redis is back.
    pub fn reconnect_max_delay(mut self, delay: Duration) -> Self {
        self.reconnect_max_delay = delay;
        self
    }

    /// What failed or late calls return (default [`FailurePolicy::ReturnError`]).
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// After `threshold` failed calls in a row, calls are not sent for `cooldown`. A call fails
    /// here when it shows an outage: no connection, a timeout, or a reply every call would get
    /// (`LOADING`, `BUSY`, `READONLY`, `OOM`, `MASTERDOWN`, `CLUSTERDOWN`, `TRYAGAIN`, `NOAUTH`,
    /// `MISCONF`); an error about that call alone (`WRONGTYPE` for one key, a script error,
    /// `NOPERM` for a key pattern) comes from a server that answers, and counts as a success
    /// (a batch fails when every entry shows an outage). The cooldown runs on the breaker's own
    /// monotonic clock, not [`clock`](Self::clock)'s. While open, the [`FailurePolicy`] answers them at once (under
    /// `ReturnError`, a [`CheckError::Backend`] saying so) instead of each waiting out the
    /// timeout during an outage. After the cooldown one call probes while the others are still
    /// answered at once; a success closes the breaker. Default [`DEFAULT_BREAKER_THRESHOLD`]
    /// (3) and [`DEFAULT_BREAKER_COOLDOWN`] (250 ms); a threshold of 0 turns it off. Opening
    /// and closing are logged (`tracing`, warn and info).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::redis::RedisLimiter;
    /// let builder = RedisLimiter::builder("redis://127.0.0.1/", tollgate::Quota::per_second(1).unwrap())
    ///     .circuit_breaker(5, Duration::from_secs(1));
    /// # drop(builder);
    /// ```
    pub fn circuit_breaker(mut self, threshold: u32, cooldown: Duration) -> Self {
        self.breaker = (threshold, cooldown);
        self
    }

    /// How many denied keys the local deny cache holds (default
    /// [`DEFAULT_DENY_CACHE_CAPACITY`]; 0 turns it off). The bound is in keys, not bytes: budget
    /// roughly the key's length plus 150 bytes per entry (the entry, papaya's node and table
    /// slot; an estimate, not a measurement), so about 10 MB for the default with 16-byte keys.
    ///
    /// ```
    /// use tollgate::redis::RedisLimiter;
    /// let builder = RedisLimiter::builder("redis://127.0.0.1/", tollgate::Quota::per_second(1).unwrap())
    ///     .deny_cache_capacity(10_000);
    /// # drop(builder);
    /// ```
    pub fn deny_cache_capacity(mut self, capacity: usize) -> Self {
        self.deny_cache_capacity = capacity;
        self
    }

    /// Trusts these CA certificates (PEM, one or more) for `rediss://` instead of the public
    /// webpki roots (feature `redis-tls`); for a private CA, as most Redis deployments use. The
    /// server's certificate must name the URL's host. A certificate that does not parse is a
    /// [`SetupError::Tls`] at [`connect`](Self::connect).
    ///
    /// ```no_run
    /// use tollgate::redis::RedisLimiter;
    /// use tollgate::Quota;
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let ca = std::fs::read("/etc/redis/tls/ca.crt")?;
    /// let limiter = RedisLimiter::builder("rediss://redis.internal:6380/", Quota::per_second(100)?)
    ///     .tls_root_certificates(ca)
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "redis-tls")]
    pub fn tls_root_certificates(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.certs_mut().root_cert = Some(pem.into());
        self
    }

    /// Authenticates this client with a certificate chain and its private key (both PEM) for
    /// mutual TLS (feature `redis-tls`; servers with `tls-auth-clients yes`).
    ///
    /// ```no_run
    /// use tollgate::redis::RedisLimiter;
    /// use tollgate::Quota;
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let limiter = RedisLimiter::builder("rediss://redis.internal:6380/", Quota::per_second(100)?)
    ///     .tls_root_certificates(std::fs::read("ca.crt")?)
    ///     .tls_client_certificate(std::fs::read("client.crt")?, std::fs::read("client.key")?)
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "redis-tls")]
    pub fn tls_client_certificate(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls.certs_mut().client_tls =
            Some(redis::ClientTlsConfig { client_cert: cert_pem.into(), client_key: key_pem.into() });
        self
    }

    /// The local clock the deny cache runs on (default [`QuantaClock`]; tests use
    /// [`ManualClock`](crate::ManualClock)). Redis decisions always use the server's clock.
    pub fn clock<C2: Clock>(self, clock: C2) -> RedisLimiterBuilder<C2> {
        RedisLimiterBuilder {
            target: self.target,
            tls: self.tls,
            quota: self.quota,
            algorithm: self.algorithm,
            prefix: self.prefix,
            timeout: self.timeout,
            reconnect_max_delay: self.reconnect_max_delay,
            policy: self.policy,
            deny_cache_capacity: self.deny_cache_capacity,
            breaker: self.breaker,
            clock,
        }
    }

    /// Validates the configuration, connects and runs one check as a probe (each bounded by
    /// the timeout): a check of cost 1 on a key of its own, `{prefix}:{algo}:{%probe}` (outside
    /// every user key's: it never touches a user's state; deleted after), sent as
    /// every check is (`EVALSHA`, then `EVAL` after `NOSCRIPT`), so it needs what checks need:
    /// no `SCRIPT` command (ACL users without it and servers that rename it work), but
    /// scripting and writes. A server that accepts the connection but would refuse every check
    /// (a password or ACL user missing or wrong, no scripting, no writes, a read-only replica,
    /// a database out of range) is a [`SetupError::Connect`] naming Redis' reply, not a limiter
    /// whose every check fails (and, under [`FailurePolicy::FailOpen`], passes). An ACL user
    /// whose key patterns do not cover the probe's key at all (`NOPERM` for the check and for
    /// `EXISTS` of it, e.g. one pattern per tenant; one that may read it but not write it is
    /// refused) is probed with a keyless `EVAL` instead, which checks the password and scripting but
    /// neither writes nor key patterns (logged as a warning).
    pub async fn connect(self) -> Result<RedisLimiter<C>, SetupError> {
        let params = self.validate()?;
        let conn = conn::connect(&self.target, &self.tls, self.timeout, self.reconnect_max_delay).await?;
        let timeout = self.timeout;
        let limiter = self.with_connection(conn, params);
        let refused = |e: redis::RedisError| {
            if e.is_timeout() {
                SetupError::Timeout { after: timeout }
            } else {
                SetupError::Connect { reason: format!("Redis refused the limiter's check: {e}") }
            }
        };
        let probe = KeyArg::probe(&limiter.head);
        match limiter.bounded(limiter.eval(probe, &limiter.params, Mode::Check, 1, None)).await {
            Ok(_) => {
                // Best effort: the key expires anyway, but a probe leaves no key behind.
                let mut del = redis::cmd("DEL");
                del.arg(probe);
                let mut conn = limiter.conn.clone();
                let _ = limiter.bounded(del.query_async::<i64>(&mut conn)).await;
                Ok(limiter)
            }
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm) => {
                // A user who may read the probe key but not run scripts on it (`%R~*`: no key
                // writes) would fail every check: refused. Only one whose key patterns miss the
                // key altogether (`EXISTS` refused too) falls back.
                let mut exists = redis::cmd("EXISTS");
                exists.arg(probe);
                let mut conn = limiter.conn.clone();
                if limiter.bounded(exists.query_async::<i64>(&mut conn)).await.is_ok() {
                    return Err(refused(e));
                }
                tracing::warn!(
                    error = %e,
                    "the Redis user may not touch the probe key: connect checked the password and scripting only"
                );
                // A keyless script: the password and scripting, without `SCRIPT`.
                let mut keyless = redis::cmd("EVAL");
                keyless.arg("return 1").arg(0);
                let mut conn = limiter.conn.clone();
                limiter.bounded(keyless.query_async::<redis::Value>(&mut conn)).await.map_err(refused)?;
                Ok(limiter)
            }
            Err(e) => Err(refused(e)),
        }
    }

    /// Validates the configuration and returns at once, connecting on the first check (a
    /// single server; from within a tokio runtime). A service can then start while Redis is
    /// down: until Redis answers, every check follows the [`FailurePolicy`] (each bounded by
    /// the timeout, as a check during an outage is), and the connection is retried in the
    /// background as after any outage. [`connect`](Self::connect) instead fails at start.
    /// [`SetupError::Connect`] for a cluster target (use `connect`) or outside a runtime.
    ///
    /// ```
    /// use tollgate::redis::{FailurePolicy, RedisLimiter};
    /// use tollgate::{AsyncRateLimiter, Origin, Quota};
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// // Nothing listens on port 1: the check fails open, as the policy says.
    /// let limiter = RedisLimiter::builder("redis://127.0.0.1:1/", Quota::per_second(5).unwrap())
    ///     .timeout(std::time::Duration::from_millis(50))
    ///     .failure_policy(FailurePolicy::FailOpen)
    ///     .connect_lazy()
    ///     .unwrap();
    /// let d = limiter.check_key_async("alice", 1).await.unwrap();
    /// assert!(d.is_allowed());
    /// assert_eq!(d.origin(), Origin::Unchecked);
    /// # });
    /// ```
    pub fn connect_lazy(self) -> Result<RedisLimiter<C>, SetupError> {
        let params = self.validate()?;
        let conn = conn::connect_lazy(&self.target, &self.tls, self.timeout, self.reconnect_max_delay)?;
        Ok(self.with_connection(conn, params))
    }

    /// The checks both `connect`s make before connecting.
    fn validate(&self) -> Result<Params, SetupError> {
        if !keys::prefix_is_valid(&self.prefix) {
            return Err(SetupError::Prefix { prefix: self.prefix.clone() });
        }
        Ok(Params::new(self.algorithm, self.quota)?)
    }

    fn with_connection(self, conn: conn::Connection, params: Params) -> RedisLimiter<C> {
        let head = format!("{}:{}:", self.prefix, keys::algo_segment(self.algorithm)).into_bytes();
        RedisLimiter {
            conn,
            params,
            overrides: papaya::HashMap::builder().hasher(foldhash::fast::RandomState::default()).build(),
            head,
            timeout: self.timeout,
            policy: self.policy,
            cache: DenyCache::new(self.deny_cache_capacity),
            breaker: Breaker::new(self.breaker.0, crate::clock::duration_to_nanos(self.breaker.1)),
            clock: self.clock,
        }
    }
}

/// A rate limiter whose state lives in Redis; see the [module docs](self).
///
/// `Send + Sync`, cheap to share behind an `Arc`; all checks multiplex one reconnecting
/// connection. Keys are byte strings (`&[u8]`; `&str` through [`AsyncRateLimiter<str>`]).
///
/// ```no_run
/// use tollgate::redis::RedisLimiter;
/// use tollgate::{AsyncRateLimiter, Quota};
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = RedisLimiter::builder("redis://127.0.0.1/", Quota::per_second(5)?).connect().await?;
/// let d = limiter.check_key_async("alice", 1).await?;
/// println!("{} left", d.remaining());
/// # Ok(()) }
/// ```
pub struct RedisLimiter<C: Clock = QuantaClock> {
    conn: Connection,
    params: Params,
    overrides: papaya::HashMap<Box<[u8]>, Params, foldhash::fast::RandomState>,
    head: Vec<u8>,
    timeout: Duration,
    policy: FailurePolicy,
    cache: DenyCache,
    breaker: Breaker,
    clock: C,
}

impl<C: Clock> fmt::Debug for RedisLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("params", &self.params)
            .field("cluster", &self.conn.is_cluster())
            .field("timeout", &self.timeout)
            .field("policy", &self.policy)
            .field("deny_cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// Starts building a limiter for `url` enforcing `quota`.
    ///
    /// ```
    /// use tollgate::redis::RedisLimiter;
    /// let builder = RedisLimiter::builder("redis://127.0.0.1/", tollgate::Quota::per_second(1).unwrap());
    /// # drop(builder);
    /// ```
    pub fn builder(url: impl Into<String>, quota: Quota) -> RedisLimiterBuilder {
        RedisLimiterBuilder::new(Target::Single(url.into()), quota)
    }

    /// Starts building a limiter on a Redis Cluster (feature `redis-cluster`), given one or more
    /// seed nodes' URLs (`redis://` or, with `redis-tls`, `rediss://`); the rest of the topology
    /// is discovered. Every algorithm, [`peek`](RedisLimiter::peek), [`reset`](RedisLimiter::reset)
    /// and [`check_many`](RedisLimiter::check_many) work: each user key is its Redis key's hash
    /// tag, so a key's state lives in one slot, and commands are routed to the slot's node
    /// (following `MOVED`/`ASK`). `check_many` sends its keys concurrently rather than as one
    /// pipeline, since they may live on different nodes. A node that lacks a script (restarted,
    /// flushed, or never asked before) answers `NOSCRIPT`, and that call is re-sent with the
    /// script's source, as on a single server.
    ///
    /// ```no_run
    /// use tollgate::redis::RedisLimiter;
    /// use tollgate::Quota;
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let nodes = ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000", "redis://10.0.0.3:7000"];
    /// let limiter = RedisLimiter::cluster_builder(nodes, Quota::per_second(100)?).connect().await?;
    /// let decision = limiter.check(b"user:42", 1).await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "redis-cluster")]
    pub fn cluster_builder<I, S>(nodes: I, quota: Quota) -> RedisLimiterBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RedisLimiterBuilder::new(Target::Cluster(nodes.into_iter().map(Into::into).collect()), quota)
    }
}

impl RedisLimiterBuilder {
    fn new(target: Target, quota: Quota) -> RedisLimiterBuilder {
        RedisLimiterBuilder {
            target,
            tls: TlsConfig::default(),
            quota,
            algorithm: RedisAlgorithm::Gcra,
            prefix: "tollgate".to_owned(),
            timeout: DEFAULT_TIMEOUT,
            reconnect_max_delay: Duration::from_millis(100),
            policy: FailurePolicy::ReturnError,
            deny_cache_capacity: DEFAULT_DENY_CACHE_CAPACITY,
            breaker: (DEFAULT_BREAKER_THRESHOLD, DEFAULT_BREAKER_COOLDOWN),
            clock: QuantaClock::new(),
        }
    }
}

/// What one key's check needs, prepared before the round trip.
#[derive(Clone, Copy)]
struct Prepared {
    params: Params,
    /// A local clock reading taken before the command was sent.
    sent_at: Nanos,
    /// The deny cache's invalidation generation, read before `params` (see [`DenyCache::insert`]).
    generation: u64,
}

impl<C: Clock> RedisLimiter<C> {
    /// Checks `cost` cells for `key`, consuming them if allowed: one `EVALSHA` round trip, or
    /// none when the deny cache answers.
    ///
    /// Errors: [`CheckError::InsufficientCapacity`] when `cost` exceeds the burst (or window
    /// limit); [`CheckError::Backend`] / [`CheckError::Timeout`] only under
    /// [`FailurePolicy::ReturnError`]. `cost = 0` reports the state without consuming.
    ///
    /// **Resolution.** Redis keeps time in microseconds, so the scripts run the algorithm in µs:
    /// the emission interval (GCRA) or window is rounded *up* to a whole µs (never admitting more
    /// than promised; one below 1 µs, which would run up to 1000× slower than the quota, is
    /// refused: [`QuotaError::TooLarge`]), and reported durations are whole µs (a
    /// sliding-window `retry_after` that is fractional in ns is rounded up). When the window, or GCRA's emission interval
    /// (period / count, not just the period: `3/s` is 333 333 334 ns in process, 333 334 µs here),
    /// is a whole number of µs, decisions equal the in-process ones (differential tests check
    /// every field). Quotas whose arithmetic would
    /// leave the exact integer range of Lua's doubles are rejected when building (GCRA: burst × T
    /// above [`MAX_SCRIPT_VALUE`] µs ≈ 71 years; windows: see [`RedisAlgorithm`]).
    ///
    /// ```no_run
    /// # async fn demo(limiter: tollgate::redis::RedisLimiter) -> Result<(), tollgate::CheckError> {
    /// let d = limiter.check(b"api-key-7", 5).await?; // a request costing 5 cells
    /// if !d.is_allowed() {
    ///     let _retry = d.retry_after();
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn check(&self, key: &[u8], cost: u32) -> Result<Decision, CheckError> {
        self.check_inner(key, cost, None).await
    }

    /// [`check`](Self::check) at an explicit time (`now` ns since the Unix epoch, truncated to
    /// µs) instead of the server's `TIME`. **For tests only** (differential tests against the
    /// in-process algorithms); production code must use the server's clock. Bypasses the deny
    /// cache.
    ///
    /// ```no_run
    /// # async fn demo(limiter: tollgate::redis::RedisLimiter) {
    /// let d = limiter.check_at(b"k", 1, 1_700_000_000_000_000_000).await;
    /// # }
    /// ```
    pub async fn check_at(&self, key: &[u8], cost: u32, now: Nanos) -> Result<Decision, CheckError> {
        self.check_inner(key, cost, Some(now / 1000)).await
    }

    async fn check_inner(&self, key: &[u8], cost: u32, now_us: Option<u64>) -> Result<Decision, CheckError> {
        let cost = u64::from(cost);
        // Before the quota is read and the command sent: see `DenyCache::generation`.
        let generation = self.cache.generation();
        let params = self.params_for(key);
        if cost > params.capacity {
            return Err(CheckError::InsufficientCapacity { cost, capacity: params.capacity });
        }
        let sent_at = now_of(&self.clock);
        if now_us.is_none() && cost > 0 {
            if let Some(denied) = self.cache.lookup(key, sent_at, cost) {
                return Ok(denied);
            }
        }
        if let Some(refused) = self.breaker.refuse(self.breaker.now()) {
            not_sent().await;
            return self.on_failure(key, Mode::Check, cost, params, refused);
        }
        let mode = if cost == 0 { Mode::Peek } else { Mode::Check };
        let prepared = Prepared { params, sent_at, generation };
        let result = self
            .sent(self.eval(KeyArg::new(&self.head, key), &params, mode, cost, now_us), one_healthy)
            .await;
        self.finish(key, cost, &prepared, result.map_err(|e| self.backend(e)), now_us.is_none())
    }

    /// [`bounded`](Self::bounded), and its outcome recorded by the circuit breaker: `healthy`
    /// says whether the result shows a server that answers ([`is_outage`]: a reply, an error
    /// about this call alone such as `WRONGTYPE`, or not).
    async fn sent<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, redis::RedisError>>,
        healthy: fn(&Result<T, redis::RedisError>) -> bool,
    ) -> Result<T, redis::RedisError> {
        let result = self.bounded(fut).await;
        self.breaker.record(healthy(&result), self.breaker.now());
        result
    }

    /// Whether the circuit breaker is open: Redis failed
    /// [`circuit_breaker`](RedisLimiterBuilder::circuit_breaker)'s threshold of calls in a row
    /// and calls are answered by the failure policy without being sent (a health signal for
    /// dashboards and readiness probes).
    ///
    /// ```no_run
    /// # fn demo(limiter: tollgate::redis::RedisLimiter) {
    /// if limiter.circuit_open() {
    ///     eprintln!("rate limits are answered by the failure policy: Redis is failing");
    /// }
    /// # }
    /// ```
    pub fn circuit_open(&self) -> bool {
        self.breaker.is_open(self.breaker.now())
    }

    /// Turns a reply (or failure) into the caller's result, feeding the deny cache.
    fn finish(
        &self,
        key: &[u8],
        cost: u64,
        prepared: &Prepared,
        result: Result<redis::Value, CheckError>,
        use_cache: bool,
    ) -> Result<Decision, CheckError> {
        let decision = result.and_then(|reply| {
            prepared.params.decode(&reply).map_err(|reason| CheckError::Backend { reason })
        });
        match decision {
            Ok(decision) => {
                if use_cache && cost > 0 && !decision.is_allowed() {
                    self.remember_denial(key, cost, prepared, &decision);
                }
                Ok(decision.with_origin(Origin::Remote))
            }
            Err(error) => self.on_failure(key, Mode::Check, cost, prepared.params, error),
        }
    }

    fn remember_denial(&self, key: &[u8], cost: u64, prepared: &Prepared, decision: &Decision) {
        let sent_at = prepared.sent_at;
        let params = &prepared.params;
        let entry = match params.algorithm {
            RedisAlgorithm::Gcra => Entry::Gcra {
                // On a GCRA denial reset_after is exactly TAT − now (at Redis' decision time).
                tat: sent_at.saturating_add(decision.reset_after_nanos()),
                emission_interval: params.a_nanos(),
                tolerance: params.b_nanos(),
                limit: params.capacity,
            },
            _ => Entry::Until {
                until: sent_at.saturating_add(decision.retry_after_nanos().unwrap_or(0)),
                cost,
                limit: params.capacity,
                remaining: decision.remaining(),
                reset_at: sent_at.saturating_add(decision.reset_after_nanos()),
            },
        };
        self.cache.insert(key, entry, sent_at, prepared.generation);
    }

    /// What the [`FailurePolicy`] returns for a failed call. `mode` is what the caller asked for:
    /// a [`peek`](Self::peek) (`Mode::Peek`) or a check of `cost` (`Mode::Check`, `cost` 0
    /// included: it reports the state, always allowed, as the fallback's own `check_key(key, 0)`
    /// does), not the script mode, which turns a cost-0 check into a peek.
    fn on_failure(
        &self,
        key: &[u8],
        mode: Mode,
        cost: u64,
        params: Params,
        error: CheckError,
    ) -> Result<Decision, CheckError> {
        let limit = params.capacity;
        match &self.policy {
            FailurePolicy::ReturnError => Err(error),
            FailurePolicy::FailOpen => Ok(Decision::allowed(limit, 0, 0).with_origin(Origin::Unchecked)),
            FailurePolicy::FailClosed => {
                Ok(Decision::denied(limit, 0, 0, 1_000_000_000).with_origin(Origin::Fallback))
            }
            FailurePolicy::Fallback(local) => {
                // Checks take a u32 cost, so this never saturates.
                let cost = u32::try_from(cost).unwrap_or(u32::MAX);
                let decision = match mode {
                    Mode::Peek => local.peek_key(key),
                    Mode::Check => local.check_key(key, cost),
                };
                match decision {
                    // The cost fits the Redis quota (checked before sending) but not the local
                    // share: "not now", not "never". See `FailurePolicy::Fallback`.
                    Err(CheckError::InsufficientCapacity { .. }) => {
                        // A cost-0 check reports the share's state (time until full), consuming nothing.
                        let reset_after = local.check_key(key, 0).map_or(0, |d| d.reset_after_nanos());
                        let retry_after = params.quota.period_nanos().max(1);
                        Ok(Decision::denied(limit, 0, reset_after, retry_after).with_origin(Origin::Fallback))
                    }
                    other => other.map(|d| d.with_origin(Origin::Fallback)),
                }
            }
        }
    }

    /// A redis-rs error as the caller sees it: [`CheckError::Timeout`] for a timeout (the
    /// limiter's own, from [`bounded`](Self::bounded), or redis-rs', set longer as a backstop),
    /// else [`CheckError::Backend`].
    fn backend(&self, e: redis::RedisError) -> CheckError {
        if e.is_timeout() {
            CheckError::Timeout { after: self.timeout }
        } else {
            CheckError::Backend { reason: e.to_string() }
        }
    }

    /// Runs `fut` under the limiter's timeout (an I/O `TimedOut` error past it, which
    /// [`backend`](Self::backend) reports as [`CheckError::Timeout`]).
    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, redis::RedisError>>,
    ) -> Result<T, redis::RedisError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
        }
    }

    /// `EVALSHA`; after `NOSCRIPT`, the same call as `EVAL` with the source (which also caches
    /// the script again). A `NOSCRIPT` reply means the script did not run, so re-sending cannot
    /// count twice.
    async fn eval(
        &self,
        key: KeyArg<'_>,
        params: &Params,
        mode: Mode,
        cost: u64,
        now_us: Option<u64>,
    ) -> Result<redis::Value, redis::RedisError> {
        let mut conn = self.conn.clone();
        let cmd = params.command(key, mode, cost, now_us, ScriptRef::Sha);
        match cmd.query_async::<redis::Value>(&mut conn).await {
            Err(e) if is_noscript(&e) => {
                let cmd = params.command(key, mode, cost, now_us, ScriptRef::Source);
                cmd.query_async(&mut conn).await
            }
            other => other,
        }
    }

    /// What a unit check of `key` would decide now, consuming nothing (always asks Redis).
    ///
    /// ```no_run
    /// # async fn demo(limiter: tollgate::redis::RedisLimiter) -> Result<(), tollgate::CheckError> {
    /// let left = limiter.peek(b"alice").await?.remaining();
    /// # Ok(()) }
    /// ```
    pub async fn peek(&self, key: &[u8]) -> Result<Decision, CheckError> {
        let params = self.params_for(key);
        if let Some(refused) = self.breaker.refuse(self.breaker.now()) {
            not_sent().await;
            return self.on_failure(key, Mode::Peek, 1, params, refused);
        }
        let result = self
            .sent(self.eval(KeyArg::new(&self.head, key), &params, Mode::Peek, 1, None), one_healthy)
            .await;
        match result
            .map_err(|e| self.backend(e))
            .and_then(|reply| params.decode(&reply).map_err(|reason| CheckError::Backend { reason }))
        {
            Ok(decision) => Ok(decision.with_origin(Origin::Remote)),
            Err(error) => self.on_failure(key, Mode::Peek, 1, params, error),
        }
    }

    /// Forgets `key`'s state in Redis (its next check sees a fresh key), in this process' deny
    /// cache, once the `DEL` is answered (or failed), and in the local limiter of a
    /// [`FailurePolicy::Fallback`]. A check of `key` in flight meanwhile may still
    /// report a denial, but that denial is not cached here. Other processes' deny caches keep
    /// their entries until those expire.
    ///
    /// ```no_run
    /// # async fn demo(limiter: tollgate::redis::RedisLimiter) -> Result<(), tollgate::CheckError> {
    /// limiter.reset(b"alice").await?;
    /// # Ok(()) }
    /// ```
    pub async fn reset(&self, key: &[u8]) -> Result<(), CheckError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(KeyArg::new(&self.head, key));
        let mut conn = self.conn.clone();
        let result = self.bounded(cmd.query_async::<i64>(&mut conn)).await.map_err(|e| self.backend(e));
        // After the DEL: a denial whose command Redis ran before the DEL is answered before the
        // DEL is, so its check read the generation before this bump and is not cached.
        self.cache.invalidate(key);
        // The fallback's share too, whether or not the DEL went through: an outage after a
        // successful reset must not judge the key by the local state from before it.
        if let FailurePolicy::Fallback(local) = &self.policy {
            local.reset_key(key)?;
        }
        result.map(drop)
    }

    /// Checks several keys at once (each with `cost`), in one pipelined round trip; results are
    /// in the order of `keys`. Keys the deny cache answers are not sent. A failure of the whole
    /// pipeline is handled per key by the [`FailurePolicy`]. Each key is checked on its own:
    /// not all-or-nothing, so a key allowed in a batch where another is denied has spent its
    /// cells (for one limit per user and one per tenant that must both pass, refund nothing
    /// and accept that, or check the tighter key first).
    ///
    /// ```no_run
    /// # async fn demo(limiter: tollgate::redis::RedisLimiter) {
    /// // A batch of users, one round trip: each result is that user's own decision.
    /// let results = limiter.check_many(&["user:42", "user:43", "user:44"], 1).await;
    /// let allowed = results.iter().filter(|r| r.as_ref().is_ok_and(|d| d.is_allowed())).count();
    /// # }
    /// ```
    pub async fn check_many<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        cost: u32,
    ) -> Vec<Result<Decision, CheckError>> {
        let cost = u64::from(cost);
        let mode = if cost == 0 { Mode::Peek } else { Mode::Check };
        // Before the quotas are read and the commands sent: see `DenyCache::generation`.
        let generation = self.cache.generation();
        // One reading for the batch: it precedes every command's send, as the cache needs.
        let sent_at = now_of(&self.clock);
        let mut results: Vec<Option<Result<Decision, CheckError>>> = Vec::with_capacity(keys.len());
        // (index into keys, params) of the keys sent to Redis.
        let mut pending: Vec<(usize, Params)> = Vec::with_capacity(keys.len());
        for (index, key) in keys.iter().enumerate() {
            let key = key.as_ref();
            let params = self.params_for(key);
            let answer = if cost > params.capacity {
                Some(Err(CheckError::InsufficientCapacity { cost, capacity: params.capacity }))
            } else if cost > 0 {
                self.cache.lookup(key, sent_at, cost).map(Ok)
            } else {
                None
            };
            if answer.is_none() {
                pending.push((index, params));
            }
            results.push(answer);
        }
        if !pending.is_empty() {
            let replies = if let Some(refused) = self.breaker.refuse(self.breaker.now()) {
                not_sent().await;
                Err(refused)
            } else if self.conn.is_cluster() {
                self.sent(self.run_concurrent(keys, &pending, mode, cost), batch_healthy)
                    .await
                    .map_err(|e| self.backend(e))
            } else {
                self.sent(self.run_pipeline(keys, &pending, mode, cost), batch_healthy)
                    .await
                    .map_err(|e| self.backend(e))
            };
            let mut replies = match replies {
                Ok(replies) => replies.into_iter().map(|r| r.map_err(|e| self.backend(e))).collect(),
                Err(error) => vec![Err(error); pending.len()],
            };
            for (&(index, params), reply) in pending.iter().zip(replies.drain(..)) {
                let prepared = Prepared { params, sent_at, generation };
                results[index] = Some(self.finish(keys[index].as_ref(), cost, &prepared, reply, true));
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(CheckError::Backend { reason: "no reply".to_owned() })))
            .collect()
    }

    /// Runs one pipeline of `EVALSHA`s (single server); entries that hit `NOSCRIPT` (they did
    /// not run) are re-sent once as `EVAL` with the source, in a second pipeline. If that second
    /// pipeline fails, only its entries fail: the first pipeline's replies are kept.
    async fn run_pipeline<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        pending: &[(usize, Params)],
        mode: Mode,
        cost: u64,
    ) -> Result<Vec<redis::RedisResult<redis::Value>>, redis::RedisError> {
        let pipeline = |send: ScriptRef, which: &mut dyn Iterator<Item = &(usize, Params)>| {
            let mut pipe = redis::Pipeline::with_capacity(pending.len());
            pipe.ignore_errors();
            for (index, params) in which {
                let key = KeyArg::new(&self.head, keys[*index].as_ref());
                pipe.add_command(params.command(key, mode, cost, None, send));
            }
            pipe
        };
        let mut conn = self.conn.clone();
        let pipe = pipeline(ScriptRef::Sha, &mut pending.iter());
        let mut replies: Vec<redis::RedisResult<redis::Value>> = pipe.query_async(&mut conn).await?;
        if replies.len() != pending.len() {
            return Err(reply_count(replies.len(), pending.len()));
        }
        let missing: Vec<usize> = replies
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r, Err(e) if is_noscript(e)))
            .map(|(i, _)| i)
            .collect();
        if !missing.is_empty() {
            let retry = pipeline(ScriptRef::Source, &mut missing.iter().map(|&i| &pending[i]));
            // The first pipeline's other replies stand (those commands ran, and may have
            // consumed): a failed retry fails only the entries it re-sent.
            match retry.query_async::<Vec<redis::RedisResult<redis::Value>>>(&mut conn).await {
                Ok(again) if again.len() == missing.len() => {
                    for (&i, reply) in missing.iter().zip(again) {
                        replies[i] = reply;
                    }
                }
                Ok(again) => {
                    let error = reply_count(again.len(), missing.len());
                    for &i in &missing {
                        replies[i] = Err(error.clone());
                    }
                }
                Err(error) => {
                    for &i in &missing {
                        replies[i] = Err(error.clone());
                    }
                }
            }
        }
        Ok(replies)
    }

    /// Cluster: the keys may live on different nodes, so each is sent as its own command (each
    /// routed to its slot's node and retried after `NOSCRIPT` like [`check`](Self::check)), all
    /// in flight at once.
    #[cfg(feature = "redis-cluster")]
    async fn run_concurrent<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        pending: &[(usize, Params)],
        mode: Mode,
        cost: u64,
    ) -> Result<Vec<redis::RedisResult<redis::Value>>, redis::RedisError> {
        let calls = pending.iter().map(|(index, params)| {
            self.eval(KeyArg::new(&self.head, keys[*index].as_ref()), params, mode, cost, None)
        });
        Ok(join_all(calls.collect()).await)
    }

    #[cfg(not(feature = "redis-cluster"))]
    async fn run_concurrent<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        pending: &[(usize, Params)],
        mode: Mode,
        cost: u64,
    ) -> Result<Vec<redis::RedisResult<redis::Value>>, redis::RedisError> {
        // Unreachable: only cluster connections take this path.
        self.run_pipeline(keys, pending, mode, cost).await
    }

    /// Overrides the quota of one key (like [`KeyedLimiter::set_quota`](crate::KeyedLimiter::set_quota)):
    /// the key's state in Redis carries over. The override lives in this process only; give every
    /// process sharing the limit the same overrides. A [`FailurePolicy::Fallback`] limiter keeps
    /// its own quotas: override the key there too if its local share should follow.
    ///
    /// GCRA keeps how full the bucket is, as in process ([`Algorithm::adopt`](crate::Algorithm::adopt)):
    /// the key's state records the tolerance (burst × emission interval) it was written under,
    /// and the script scales a debt written under another one by the ratio, rounded up. So a key
    /// moved from 10/min to 1000/s right after its 10 waits 1 ms for its next cell, not the old
    /// minute. `set_quota` makes no round trip, so the conversion happens at the key's next check
    /// or peek (which stores it): the key is as full as it is then under the old quota, as if
    /// `set_quota` had run at that instant. One difference: a debt beyond a full bucket (only
    /// after the server's clock stepped back) is converted as a full bucket.
    ///
    /// A window algorithm's override keeps the window length ([`QuotaError::Incompatible`]
    /// otherwise): for fixed and sliding windows, as in process, the stored window index and
    /// counts mean nothing on another grid. For the sliding log, the key's TTL (set by the
    /// window of the check that wrote it) is what a sweep is in process: a longer window would
    /// count stamps only while the key had not expired, and clearing a shorter one would forget
    /// stamps the default's window still counts. Unlike in process, the log's limit may change
    /// (a sorted set, not a ring of `limit` stamps).
    ///
    /// ```no_run
    /// # fn demo(limiter: tollgate::redis::RedisLimiter) -> Result<(), tollgate::QuotaError> {
    /// limiter.set_quota(b"partner", tollgate::Quota::per_second(1000)?)?;
    /// assert_eq!(limiter.quota_of(b"partner").count(), 1000);
    /// limiter.clear_quota(b"partner");
    /// # Ok(()) }
    /// ```
    pub fn set_quota(&self, key: &[u8], quota: Quota) -> Result<(), QuotaError> {
        let params = Params::new(self.params.algorithm, quota)?;
        // GCRA's script converts the key's state; a window's state is on the window's grid, and
        // a log's stamps expire with the window of the check that wrote them.
        if self.params.algorithm != RedisAlgorithm::Gcra && params.a != self.params.a {
            return Err(QuotaError::Incompatible { reason: "a window override keeps the window length" });
        }
        self.overrides.pin().insert(key.into(), params);
        // A cached denial, or one in flight, was judged under the old quota.
        self.cache.invalidate(key);
        Ok(())
    }

    /// Removes `key`'s quota override.
    ///
    /// ```no_run
    /// # fn demo(limiter: tollgate::redis::RedisLimiter) {
    /// limiter.clear_quota(b"partner");
    /// assert_eq!(limiter.quota_of(b"partner"), limiter.quota());
    /// # }
    /// ```
    pub fn clear_quota(&self, key: &[u8]) {
        self.overrides.pin().remove(key);
        // As in `set_quota`.
        self.cache.invalidate(key);
    }

    /// The quota in force for `key`.
    pub fn quota_of(&self, key: &[u8]) -> Quota {
        self.params_for(key).quota
    }

    /// The default quota.
    pub fn quota(&self) -> Quota {
        self.params.quota
    }

    /// The algorithm the scripts run.
    pub fn algorithm(&self) -> RedisAlgorithm {
        self.params.algorithm
    }

    /// Keys currently held by the local deny cache.
    pub fn deny_cache_len(&self) -> usize {
        self.cache.len()
    }

    /// The Redis key holding `key`'s state (for inspection and tests).
    pub fn redis_key(&self, key: &[u8]) -> Vec<u8> {
        keys::redis_key(&self.head, key)
    }

    #[inline]
    fn params_for(&self, key: &[u8]) -> Params {
        if self.overrides.is_empty() {
            return self.params;
        }
        self.overrides.pin().get(key).copied().unwrap_or(self.params)
    }
}

/// Polls `futures` together on the calling task until all are done; replies in order.
#[cfg(feature = "redis-cluster")]
async fn join_all<F>(futures: Vec<F>) -> Vec<redis::RedisResult<redis::Value>>
where
    F: std::future::Future<Output = redis::RedisResult<redis::Value>>,
{
    use std::task::Poll;
    enum Slot<F: std::future::Future> {
        Running(std::pin::Pin<Box<F>>),
        Done(F::Output),
    }
    let mut slots: Vec<Slot<F>> = futures.into_iter().map(|f| Slot::Running(Box::pin(f))).collect();
    std::future::poll_fn(|cx| {
        let mut all_done = true;
        for slot in &mut slots {
            if let Slot::Running(future) = slot {
                match future.as_mut().poll(cx) {
                    Poll::Ready(output) => *slot = Slot::Done(output),
                    Poll::Pending => all_done = false,
                }
            }
        }
        if all_done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    slots
        .into_iter()
        .map(|slot| match slot {
            Slot::Done(output) => output,
            // Unreachable: every slot is done once the poll_fn above returns.
            Slot::Running(_) => Err(reply_count(0, 1)),
        })
        .collect()
}

/// Whether an error shows a server that cannot serve checks now (the circuit breaker counts
/// these): no connection, a timeout, or a reply that every call would get (still loading,
/// busy with a script, read-only after a failover, out of memory, cluster down, ...). Errors
/// about one call alone (`WRONGTYPE` for one key, a script error, `NOPERM` for a key pattern,
/// a reply this client cannot decode) come from a server that answers: one bad key must not
/// open the breaker for every key. Before Redis 7 an error a script's `redis.call` raised comes
/// back wrapped, `ERR Error running script (...): ... -READONLY ...`: the wrapped code counts.
fn is_outage(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    match e.kind() {
        ErrorKind::Server(ServerErrorKind::ResponseError) => {
            e.detail().and_then(wrapped_code).is_some_and(is_outage_code)
        }
        ErrorKind::Server(kind) => matches!(
            kind,
            ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
        ),
        ErrorKind::Extension => e.code().is_some_and(is_outage_code),
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => false,
        _ => true,
    }
}

/// Error codes every call would get from this server now (see [`is_outage`]).
fn is_outage_code(code: &str) -> bool {
    matches!(
        code,
        "LOADING"
            | "BUSY"
            | "READONLY"
            | "OOM"
            | "MASTERDOWN"
            | "CLUSTERDOWN"
            | "TRYAGAIN"
            | "NOAUTH"
            | "MISCONF"
            | "NOREPLICAS"
            | "UNBLOCKED"
    )
}

/// The code a pre-7 script error wraps: in `Error running script (...): @user_script:4: -CODE
/// message`, the upper-case word after the last ` -` (`None` for other errors).
fn wrapped_code(detail: &str) -> Option<&str> {
    if !detail.starts_with("Error running script") {
        return None;
    }
    let (_, rest) = detail.rsplit_once(" -")?;
    let code = rest.split(' ').next()?;
    (!code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase())).then_some(code)
}

/// A single call's health for the circuit breaker: see [`is_outage`].
fn one_healthy(result: &redis::RedisResult<redis::Value>) -> bool {
    result.as_ref().err().is_none_or(|e| !is_outage(e))
}

/// A batch's health for the circuit breaker: the server answered if any entry shows it did (a
/// batch whose every entry failed as an outage, e.g. `READONLY`, is a failed call).
fn batch_healthy(result: &redis::RedisResult<Vec<redis::RedisResult<redis::Value>>>) -> bool {
    match result {
        Ok(entries) => entries.is_empty() || entries.iter().any(one_healthy),
        Err(e) => !is_outage(e),
    }
}

/// The error for a pipeline answered with the wrong number of replies.
fn reply_count(got: usize, sent: usize) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Client,
        "wrong number of replies",
        format!("{got} replies for {sent} commands"),
    ))
}

fn is_noscript(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

impl<C: Clock> AsyncRateLimiter<[u8]> for RedisLimiter<C> {
    fn check_key_async<'a>(
        &'a self,
        key: &'a [u8],
        cost: u32,
    ) -> impl std::future::Future<Output = Result<Decision, CheckError>> + Send + 'a {
        self.check(key, cost)
    }

    fn peek_key_async<'a>(
        &'a self,
        key: &'a [u8],
    ) -> impl std::future::Future<Output = Result<Decision, CheckError>> + Send + 'a {
        self.peek(key)
    }

    fn reset_key_async<'a>(
        &'a self,
        key: &'a [u8],
    ) -> impl std::future::Future<Output = Result<(), CheckError>> + Send + 'a {
        self.reset(key)
    }

    fn quota_for_key(&self, key: &[u8]) -> Quota {
        self.quota_of(key)
    }
}

impl<C: Clock> AsyncRateLimiter<str> for RedisLimiter<C> {
    fn check_key_async<'a>(
        &'a self,
        key: &'a str,
        cost: u32,
    ) -> impl std::future::Future<Output = Result<Decision, CheckError>> + Send + 'a {
        self.check(key.as_bytes(), cost)
    }

    fn peek_key_async<'a>(
        &'a self,
        key: &'a str,
    ) -> impl std::future::Future<Output = Result<Decision, CheckError>> + Send + 'a {
        self.peek(key.as_bytes())
    }

    fn reset_key_async<'a>(
        &'a self,
        key: &'a str,
    ) -> impl std::future::Future<Output = Result<(), CheckError>> + Send + 'a {
        self.reset(key.as_bytes())
    }

    fn quota_for_key(&self, key: &str) -> Quota {
        self.quota_of(key.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pre-7 script errors: the wrapped code is found (verbatim Redis 6 replies), and errors
    /// that are not script errors, or wrap no code, give none.
    #[test]
    fn wrapped_codes_of_pre_7_script_errors() {
        let readonly = "Error running script (call to f_1028a5dba704e1d8a01fd96efeba25bb78f62df2): \
                        @user_script:4: @user_script: 4: -READONLY You can't write against a read only replica. ";
        assert_eq!(wrapped_code(readonly), Some("READONLY"));
        let oom = "Error running script (call to f_ab): @user_script:1: -OOM command not allowed when used \
                   memory > 'maxmemory'.";
        assert_eq!(wrapped_code(oom), Some("OOM"));
        assert_eq!(
            wrapped_code("Error running script (call to f_ab): @user_script:1: user_script:1: bad"),
            None
        );
        assert_eq!(wrapped_code("WRONGTYPE Operation against a key holding the wrong kind of value"), None);
        assert_eq!(wrapped_code("unknown command 'X' -READONLY"), None);
        let wrongtype =
            "Error running script (call to f_ab): @user_script:2: -WRONGTYPE Operation against a key";
        assert_eq!(wrapped_code(wrongtype), Some("WRONGTYPE"));
        assert!(!is_outage_code("WRONGTYPE"));
        assert!(is_outage_code("READONLY") && is_outage_code("OOM"));
    }
}
