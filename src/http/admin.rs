//! The admin API (feature `axum`): an axum [`Router`] to inspect and steer a running
//! [`RateLimitLayer`]. Mount it on an internal listener.
//!
//! | Route | Auth | What |
//! |---|---|---|
//! | `GET /healthz` | no | `200 ok` while the process serves |
//! | `GET /readyz` | no | `200` with the number of rules |
//! | `GET /metrics` | yes | counters, Prometheus text format |
//! | `GET /rules` | yes | the rules as JSON |
//! | `POST /rules` | yes | create a rule from a [rule body](#rule-bodies): `201`; `409` if the name is taken or another rule covers the route for these methods |
//! | `PUT /rules/{name}` | yes | replace the rule: fields left out keep their current values; `404` if unknown |
//! | `DELETE /rules/{name}` | yes | remove the rule: `204`, `404` if unknown |
//! | `GET /rules/{name}/keys` | yes | per-key state (listable limiters, first 1000 keys) |
//! | `DELETE /rules/{name}/keys/{key}` | yes | forget one key's state |
//! | `GET /bans` | yes | active auto-bans as JSON (first 1000); `[]` when none, or without auto-ban |
//! | `DELETE /bans/{key}` | yes | lift the key's ban and forget its strikes: `204`, whether or not it was banned, and without auto-ban (nothing is banned there) |
//!
//! Authenticated routes need `Authorization: Bearer <token>` (the scheme in any case, as RFC
//! 9110 has it: `bearer <token>` works too); the token is compared exactly, in constant time.
//! Errors are `application/problem+json` (RFC 9457) with a `detail`; a body that does not
//! describe a valid rule is a `400` whose detail names the field ([`SpecError`]).
//!
//! # Rule bodies
//!
//! ```json
//! {"name": "search", "route": "/search", "methods": ["GET"], "quota": "100/m",
//!  "algorithm": "sliding_window", "mode": "block", "cost": 2, "key": "route+client_ip"}
//! ```
//!
//! `name` (required to create; 1–64 of `A-Z a-z 0-9 - _ . :`); `route`: a path prefix or axum
//! route pattern starting with `/`, or `null` for every request (default); `methods`: a list
//! (`GET` includes `HEAD`, which servers answer with the `GET` handler),
//! or `null` for all (default); `quota`: a rate string (`"100/s"`, `"5/m"`, `"1000/h"`;
//! required to create); `algorithm`: `gcra` (default), `fixed_window`, `sliding_window`,
//! `sliding_log`; `mode`: `block` (default), `annotate`, `shadow`; `cost`: per request,
//! `0..=` the quota's burst (default 1); `key`: see [keys](#keys); `ban_strikes`: whether the
//! rule's denials count toward an auto-ban, `true` or `false`, or `null` (default) for "unless
//! its key is shared by every client" ([`Rule::ban_strikes`]).
//!
//! Changes swap the layer's whole rule set atomically: requests in flight finish under the
//! rules they started with, and the check path stays lock-free. A new `quota` or `algorithm`
//! gives the rule a fresh limiter from the [`LimiterFactory`] (its counts start over); other
//! changes keep the limiter and its state.
//!
//! The default factory's limiters hold at most [`DEFAULT_MAX_KEYS`] keys, and fewer where
//! their state would exceed the memory budget ([`DEFAULT_MEMORY_BUDGET`], 256 MiB per rule;
//! [`AdminApi::memory_budget`]): a `sliding_log` keeps `8 · limit + 32` bytes per key, so one
//! of 4096 holds 8 184 keys. A rule whose per-key state alone exceeds the budget is a `400`.
//!
//! # Keys
//!
//! A `key` is one name, `client_ip` (default), `peer_ip`, `global`, `route` or
//! `header:<name>`, or names combined (at most 8 names):
//!
//! * `a+b` is [`KeyBy::All`]: every part, joined (`route+client_ip`, per route and client);
//! * `a|b` is [`KeyBy::First`]: the first part that yields a key
//!   (`header:x-api-key|client_ip`, per API key, else per client address; [`KeyBy::or`]);
//! * `+` binds tighter than `|`, and parentheses group: `route+(header:x-api-key|client_ip)`.
//!
//! `GET /rules` shows each rule's key in this form, and it reads back as the same key; a key
//! with no text form (a custom extractor set in code) is shown as `custom`.
//!
//! ```
//! use tollgate::http::{admin, RateLimitLayer};
//! let layer = RateLimitLayer::builder().build();
//! let router: axum::Router = admin::AdminApi::new(layer, "s3cret").router();
//! ```

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    AlgorithmKind, Check, HttpKey, HttpLimiter, KeyBy, Listed, Mode, RateLimitLayer, Rule, RuleError,
};
use crate::algorithm::{Algorithm, Gcra, Receipt};
use crate::clock::{Clock, QuantaClock};
use crate::decision::{CheckError, Decision};
use crate::keyed::{spawn_sweep_thread, DefaultHashBuilder, KeyedLimiter, SweeperHandle};
use crate::quota::{Quota, QuotaError};
use crate::window::{FixedWindow, SlidingLog, SlidingWindow};

/// Builds a fresh limiter for a quota and algorithm (rules created or re-limited through the
/// admin API).
///
/// ```
/// use std::sync::Arc;
/// use tollgate::http::admin::LimiterFactory;
/// use tollgate::http::{HttpLimiter, Listed};
/// use tollgate::KeyedLimiter;
/// // GCRA whatever the algorithm asked for.
/// let factory: LimiterFactory = Arc::new(|quota, _algorithm| {
///     Ok(Arc::new(Listed(KeyedLimiter::new(quota))) as Arc<dyn HttpLimiter>)
/// });
/// ```
pub type LimiterFactory =
    Arc<dyn Fn(Quota, AlgorithmKind) -> Result<Arc<dyn HttpLimiter>, QuotaError> + Send + Sync>;

/// Keys per limiter made for [`AdminApi::new`] (by [`swept_factory`]), at most: a full table
/// first sweeps idle keys inline, so memory stays bounded even between two background sweeps.
/// An algorithm with large per-key state gets fewer, so that the table fits its memory budget
/// ([`DEFAULT_MEMORY_BUDGET`], [`max_keys_within_budget`]).
///
/// ```
/// assert_eq!(tollgate::http::admin::DEFAULT_MAX_KEYS, 1_048_576);
/// ```
pub const DEFAULT_MAX_KEYS: usize = 1 << 20;

/// Bytes of limiter state each limiter made through the admin API may hold, by default:
/// 256 MiB per rule. Its key cap is lowered to fit ([`max_keys_within_budget`]): a GCRA or
/// window cell is a few words, so 2²⁰ keys fit easily, but a sliding log's ring is 8 bytes per
/// unit of its limit (32 KiB at 4096), which would make 2²⁰ keys 32 GiB. Change it with
/// [`AdminApi::memory_budget`] or [`budgeted_factory`].
///
/// The budget counts the algorithm's own state per key (the `bytes_per_key` the algorithms
/// report, e.g. [`SlidingLog::bytes_per_key`]); the key table's own cost (the key, a table
/// slot, allocator headers) comes on top.
///
/// ```
/// use tollgate::http::admin::{max_keys_within_budget, DEFAULT_MAX_KEYS, DEFAULT_MEMORY_BUDGET};
/// use tollgate::http::AlgorithmKind;
/// use tollgate::{Quota, SlidingLog};
/// assert_eq!(DEFAULT_MEMORY_BUDGET, 256 << 20);
/// let quota: Quota = "4096/h".parse().unwrap();
/// let keys = max_keys_within_budget(&quota, AlgorithmKind::SlidingLog, DEFAULT_MAX_KEYS, DEFAULT_MEMORY_BUDGET)
///     .unwrap();
/// let per_key = SlidingLog::from_quota(quota).unwrap().bytes_per_key(); // 32 800 bytes
/// assert_eq!(keys, 8_184);
/// assert!(keys * per_key <= DEFAULT_MEMORY_BUDGET);
/// ```
pub const DEFAULT_MEMORY_BUDGET: usize = 256 << 20;

/// How often [`AdminApi::new`]'s limiters sweep their idle keys in the background: 10 s.
///
/// ```
/// assert_eq!(tollgate::http::admin::DEFAULT_SWEEP_INTERVAL.as_secs(), 10);
/// ```
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// The most keys a limiter for `quota` under `algorithm` may hold: `max_keys`, or fewer so that
/// keys × bytes of state per key stays within `memory_budget` bytes. What every factory here
/// gives its limiters. A budget smaller than one key's state is
/// [`QuotaError::TooLarge`] (a rule that could hold no key would refuse every request), as is a
/// quota the algorithm cannot represent.
///
/// ```
/// use tollgate::http::admin::max_keys_within_budget;
/// use tollgate::http::AlgorithmKind;
/// use tollgate::{Quota, QuotaError};
/// let quota: Quota = "100/m".parse().unwrap();
/// // A sliding log of 100 keeps 8 · 100 + 32 = 832 bytes per key: 1 MiB holds 1260 of them.
/// assert_eq!(max_keys_within_budget(&quota, AlgorithmKind::SlidingLog, 1 << 20, 1 << 20), Ok(1260));
/// // A GCRA cell is one word: the key cap binds first.
/// assert_eq!(max_keys_within_budget(&quota, AlgorithmKind::Gcra, 1000, 1 << 20), Ok(1000));
/// assert!(matches!(
///     max_keys_within_budget(&quota, AlgorithmKind::SlidingLog, 1000, 100),
///     Err(QuotaError::TooLarge { value: 832, max: 100, .. })
/// ));
/// ```
pub fn max_keys_within_budget(
    quota: &Quota,
    algorithm: AlgorithmKind,
    max_keys: usize,
    memory_budget: usize,
) -> Result<usize, QuotaError> {
    let bytes_per_key = match algorithm {
        AlgorithmKind::Gcra => Gcra::new(quota)?.state_bytes_per_key(),
        AlgorithmKind::FixedWindow => FixedWindow::new(quota)?.state_bytes_per_key(),
        AlgorithmKind::SlidingWindow => SlidingWindow::new(quota)?.state_bytes_per_key(),
        AlgorithmKind::SlidingLog => SlidingLog::new(quota)?.state_bytes_per_key(),
    };
    key_cap(bytes_per_key, max_keys, memory_budget)
}

/// `min(max_keys, memory_budget / bytes_per_key)`, refusing a budget that holds no key.
fn key_cap(bytes_per_key: usize, max_keys: usize, memory_budget: usize) -> Result<usize, QuotaError> {
    // Every cell is at least a word; `max(1)` only keeps the division total.
    let fits = memory_budget / bytes_per_key.max(1);
    if fits == 0 {
        return Err(QuotaError::TooLarge {
            what: "limiter state per key in bytes (over the admin API's memory budget)",
            value: u64::try_from(bytes_per_key).unwrap_or(u64::MAX),
            max: u64::try_from(memory_budget).unwrap_or(u64::MAX),
        });
    }
    Ok(fits.min(max_keys))
}

/// Bytes of state per key, as each algorithm reports it: the cell, plus what it allocates (a
/// sliding log's ring, [`SlidingLog::bytes_per_key`]). Cells that allocate nothing are their
/// size.
trait StateBytes: Algorithm {
    fn state_bytes_per_key(&self) -> usize {
        std::mem::size_of::<Self::Cell>()
    }
}

impl StateBytes for Gcra {}
impl StateBytes for FixedWindow {}
impl StateBytes for SlidingWindow {}
impl StateBytes for SlidingLog {
    fn state_bytes_per_key(&self) -> usize {
        self.bytes_per_key()
    }
}

/// A [`LimiterFactory`] of in-process keyed limiters (listable: `GET /rules/{name}/keys`
/// works) on `clock`, each holding at most `max_keys` keys, and fewer where that many would
/// exceed [`DEFAULT_MEMORY_BUDGET`] ([`max_keys_within_budget`]). Idle keys leave only when a
/// full table sweeps inline; [`swept_factory`] also sweeps them in the background.
///
/// ```
/// use tollgate::http::{admin::keyed_factory, AlgorithmKind, Check, HttpKey};
/// use tollgate::{ManualClock, Quota};
/// let factory = keyed_factory(ManualClock::new(), 1000);
/// let limiter = factory(Quota::per_second(2).unwrap(), AlgorithmKind::SlidingLog).unwrap();
/// let Check::Ready(Ok(d)) = limiter.check_http(&HttpKey::new("k"), 1) else { panic!() };
/// assert_eq!(d.remaining(), 1);
/// ```
pub fn keyed_factory<C: Clock + Clone + 'static>(clock: C, max_keys: usize) -> LimiterFactory {
    budgeted_factory(clock, max_keys, DEFAULT_MEMORY_BUDGET, None)
}

/// Like [`keyed_factory`], and each limiter has a background thread sweeping its idle keys
/// every `interval` ([`KeyedLimiter::spawn_sweeper`]); the thread stops when the limiter is
/// dropped (its rule deleted or re-limited, and no request still holding it).
///
/// ```
/// use std::time::Duration;
/// use tollgate::http::{admin::swept_factory, AlgorithmKind, Check, HttpKey};
/// use tollgate::{ManualClock, Quota};
/// let factory = swept_factory(ManualClock::new(), 1000, Duration::from_secs(10));
/// let limiter = factory(Quota::per_second(2).unwrap(), AlgorithmKind::Gcra).unwrap();
/// let Check::Ready(Ok(d)) = limiter.check_http(&HttpKey::new("k"), 1) else { panic!() };
/// assert_eq!(d.remaining(), 1);
/// drop(limiter); // stops its sweeper thread
/// ```
pub fn swept_factory<C: Clock + Clone + 'static>(
    clock: C,
    max_keys: usize,
    interval: Duration,
) -> LimiterFactory {
    budgeted_factory(clock, max_keys, DEFAULT_MEMORY_BUDGET, Some(interval))
}

/// The factory behind [`keyed_factory`] and [`swept_factory`], with its memory budget spelled
/// out: each limiter holds at most [`max_keys_within_budget`]`(quota, algorithm, max_keys,
/// memory_budget)` keys, and sweeps idle keys in the background every `sweep_interval` if one
/// is given. A quota whose per-key state alone exceeds the budget is refused
/// ([`QuotaError::TooLarge`]: the admin API answers `400`).
///
/// ```
/// use tollgate::http::{admin::budgeted_factory, AlgorithmKind, Check, HttpKey};
/// use tollgate::{CheckError, ManualClock, Quota};
/// // A sliding log of 100 keeps 832 bytes per key: a 4 KiB budget holds 4 keys.
/// let factory = budgeted_factory(ManualClock::new(), 1000, 4096, None);
/// let limiter = factory(Quota::per_second(100).unwrap(), AlgorithmKind::SlidingLog).unwrap();
/// for k in 0..4 {
///     assert!(matches!(limiter.check_http(&HttpKey::new(&k.to_string()), 1), Check::Ready(Ok(_))));
/// }
/// let Check::Ready(refused) = limiter.check_http(&HttpKey::new("4"), 1) else { panic!() };
/// assert_eq!(refused.unwrap_err(), CheckError::KeyLimit { max_keys: 4 });
/// ```
pub fn budgeted_factory<C: Clock + Clone + 'static>(
    clock: C,
    max_keys: usize,
    memory_budget: usize,
    sweep_interval: Option<Duration>,
) -> LimiterFactory {
    /// What one factory call needs besides the algorithm.
    struct Limits {
        max_keys: usize,
        memory_budget: usize,
        sweep: Option<Duration>,
    }
    fn build<A: StateBytes, C: Clock + 'static>(
        quota: &Quota,
        clock: C,
        limits: &Limits,
    ) -> Result<Arc<dyn HttpLimiter>, QuotaError> {
        let algorithm = A::new(quota)?;
        let max_keys = key_cap(algorithm.state_bytes_per_key(), limits.max_keys, limits.memory_budget)?;
        let keyed = KeyedLimiter::<HttpKey, C, DefaultHashBuilder, A>::build(
            algorithm,
            clock,
            0,
            DefaultHashBuilder::default(),
        );
        let listed = Arc::new(Listed(keyed.max_keys(max_keys)));
        Ok(match limits.sweep {
            None => listed,
            Some(interval) => {
                let sweeper = spawn_sweep_thread(Arc::downgrade(&listed), interval, |l| {
                    l.0.sweep();
                });
                Arc::new(Swept { limiter: listed, _sweeper: sweeper })
            }
        })
    }
    let limits = Limits { max_keys, memory_budget, sweep: sweep_interval };
    Arc::new(move |quota, algorithm| match algorithm {
        AlgorithmKind::Gcra => build::<Gcra, C>(&quota, clock.clone(), &limits),
        AlgorithmKind::FixedWindow => build::<FixedWindow, C>(&quota, clock.clone(), &limits),
        AlgorithmKind::SlidingWindow => build::<SlidingWindow, C>(&quota, clock.clone(), &limits),
        AlgorithmKind::SlidingLog => build::<SlidingLog, C>(&quota, clock.clone(), &limits),
    })
}

/// A limiter with its background sweeper, which stops when this is dropped.
struct Swept<L> {
    limiter: Arc<L>,
    _sweeper: SweeperHandle,
}

impl<L: HttpLimiter> HttpLimiter for Swept<L> {
    #[inline]
    fn check_http(&self, key: &HttpKey, cost: u32) -> Check {
        self.limiter.check_http(key, cost)
    }

    fn quota_http(&self, key: &HttpKey) -> Quota {
        self.limiter.quota_http(key)
    }

    fn reset_http(&self, key: &HttpKey) -> Result<bool, CheckError> {
        self.limiter.reset_http(key)
    }

    fn for_each_http(&self, f: &mut dyn FnMut(&str, Decision)) {
        self.limiter.for_each_http(f)
    }

    #[inline]
    fn check_http_with_receipt(&self, key: &HttpKey, cost: u32) -> (Check, Receipt) {
        self.limiter.check_http_with_receipt(key, cost)
    }

    fn refund_http(&self, key: &HttpKey, cost: u32, receipt: Receipt) -> bool {
        self.limiter.refund_http(key, cost, receipt)
    }

    fn sweep_http(&self) -> usize {
        self.limiter.sweep_http()
    }
}

/// The admin API's configuration.
///
/// ```
/// use tollgate::http::{admin::AdminApi, RateLimitLayer};
/// // Limiters made through the API keep at most 64 MiB of state each (default 256 MiB).
/// let api = AdminApi::new(RateLimitLayer::builder().build(), "s3cret").memory_budget(64 << 20);
/// let router: axum::Router = api.router();
/// ```
#[derive(Clone)]
pub struct AdminApi {
    layer: RateLimitLayer,
    token: Arc<[u8]>,
    /// Set by [`AdminApi::limiter_factory`]; `None`: [`budgeted_factory`] with the defaults and
    /// `memory_budget`, made when the router is.
    factory: Option<LimiterFactory>,
    memory_budget: usize,
}

impl std::fmt::Debug for AdminApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminApi")
            .field("layer", &self.layer)
            .field("memory_budget", &self.memory_budget)
            .field("custom_factory", &self.factory.is_some())
            .finish_non_exhaustive()
    }
}

impl AdminApi {
    /// An admin API for `layer`, guarded by the bearer `token`. An empty token locks every
    /// authenticated route. New limiters come from [`swept_factory`] on a [`QuantaClock`], with
    /// [`DEFAULT_MAX_KEYS`], [`DEFAULT_MEMORY_BUDGET`] and [`DEFAULT_SWEEP_INTERVAL`].
    ///
    /// ```
    /// use tollgate::http::{admin::AdminApi, RateLimitLayer};
    /// let api = AdminApi::new(RateLimitLayer::builder().build(), "s3cret");
    /// ```
    pub fn new<M>(layer: RateLimitLayer<M>, token: &str) -> AdminApi {
        AdminApi {
            layer: layer.body_mode(),
            token: token.as_bytes().into(),
            factory: None,
            memory_budget: DEFAULT_MEMORY_BUDGET,
        }
    }

    /// Bytes of limiter state each rule created or re-limited through the API may hold
    /// (default [`DEFAULT_MEMORY_BUDGET`], 256 MiB): its limiter's key cap is
    /// [`max_keys_within_budget`] of [`DEFAULT_MAX_KEYS`] and this budget, so a sliding log of
    /// 4096 gets 8 184 keys rather than 2²⁰ (32 GiB). A rule whose per-key state alone exceeds
    /// the budget is refused (`400`). Applies to the default factory only: a factory set with
    /// [`limiter_factory`](Self::limiter_factory) bounds its own limiters (e.g. with
    /// [`budgeted_factory`]).
    ///
    /// ```
    /// use tollgate::http::{admin::AdminApi, RateLimitLayer};
    /// let api = AdminApi::new(RateLimitLayer::builder().build(), "s3cret").memory_budget(16 << 20);
    /// ```
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// How to build a limiter for a rule created or re-limited through the API.
    ///
    /// ```
    /// use tollgate::http::admin::{keyed_factory, AdminApi};
    /// use tollgate::http::RateLimitLayer;
    /// use tollgate::ManualClock;
    /// let clock = ManualClock::new();
    /// let factory = keyed_factory(clock.clone(), 10_000);
    /// let api = AdminApi::new(RateLimitLayer::builder().build(), "t")
    ///     .limiter_factory(move |quota, algorithm| factory(quota, algorithm));
    /// ```
    pub fn limiter_factory(
        mut self,
        f: impl Fn(Quota, AlgorithmKind) -> Result<Arc<dyn HttpLimiter>, QuotaError> + Send + Sync + 'static,
    ) -> Self {
        self.factory = Some(Arc::new(f));
        self
    }

    /// The router.
    ///
    /// ```
    /// use tollgate::http::{admin::AdminApi, RateLimitLayer};
    /// let router: axum::Router = AdminApi::new(RateLimitLayer::builder().build(), "s3cret").router();
    /// ```
    pub fn router(self) -> Router {
        let factory = self.factory.unwrap_or_else(|| {
            budgeted_factory(
                QuantaClock::new(),
                DEFAULT_MAX_KEYS,
                self.memory_budget,
                Some(DEFAULT_SWEEP_INTERVAL),
            )
        });
        let shared = Shared { layer: self.layer, token: self.token, factory };
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .route("/rules", get(list_rules).post(create_rule))
            .route("/rules/{name}", axum::routing::put(replace_rule).delete(delete_rule))
            .route("/rules/{name}/keys", get(list_keys))
            .route("/rules/{name}/keys/{key}", axum::routing::delete(reset_key))
            .route("/bans", get(list_bans))
            .route("/bans/{key}", axum::routing::delete(unban))
            .with_state(Arc::new(shared))
    }
}

/// What the handlers share: the configuration, its factory resolved.
struct Shared {
    layer: RateLimitLayer,
    token: Arc<[u8]>,
    factory: LimiterFactory,
}

/// Compares in time that depends only on the lengths, never on where the bytes differ.
///
/// ```
/// use tollgate::http::admin::constant_time_eq;
/// assert!(constant_time_eq(b"token", b"token"));
/// assert!(!constant_time_eq(b"token", b"tokem"));
/// assert!(!constant_time_eq(b"token", b"toke"));
/// ```
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(x ^ y);
    }
    diff == 0
}

type Api = State<Arc<Shared>>;

fn authorized(api: &Shared, headers: &HeaderMap) -> bool {
    let presented = headers.get(AUTHORIZATION).and_then(|v| bearer_token(v.as_bytes())).unwrap_or_default();
    !api.token.is_empty() && constant_time_eq(presented, &api.token)
}

/// The token of `Bearer <token>` credentials. The scheme is case-insensitive (RFC 9110 §11.1:
/// `bearer`, `BEARER` and `Bearer` are the same) and one or more spaces may follow it; the
/// token itself is compared exactly, in constant time, by the caller.
fn bearer_token(credentials: &[u8]) -> Option<&[u8]> {
    let space = credentials.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = credentials.split_at(space);
    scheme.eq_ignore_ascii_case(b"bearer").then(|| rest.trim_ascii_start())
}

fn unauthorized() -> Response {
    let mut res = problem(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
    res.headers_mut().insert("www-authenticate", HeaderValue::from_static("Bearer"));
    res
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut res = (status, body).into_response();
    res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// An RFC 9457 problem response.
fn problem(status: StatusCode, detail: &str) -> Response {
    let body = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut res = json_response(status, &body);
    res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    res
}

fn error(status: StatusCode, message: &str) -> Response {
    problem(status, message)
}

fn no_such_rule() -> Response {
    problem(StatusCode::NOT_FOUND, "no such rule")
}

async fn readyz(State(api): Api) -> Response {
    json_response(StatusCode::OK, &json!({ "rules": api.layer.rules().len() }))
}

async fn metrics(State(api): Api, headers: HeaderMap) -> Response {
    if !authorized(&api, &headers) {
        return unauthorized();
    }
    let m = api.layer.metrics();
    let mut out = String::new();
    for (name, help, value) in [
        ("allowed", "Requests passed after their rules were checked", m.allowed),
        ("denied", "Requests answered 429 (or 503 failing closed)", m.denied),
        ("shadow_denied", "Would-be denials of annotate/shadow rules", m.shadow_denied),
        ("banned", "Requests refused because their client was banned", m.banned),
        ("bans_issued", "Bans issued", m.bans_issued),
        ("skipped", "Requests skipped by path, method or predicate", m.skipped),
        ("errors", "Limiter failures", m.errors),
    ] {
        out.push_str(&format!(
            "# HELP tollgate_http_{name}_total {help}\n# TYPE tollgate_http_{name}_total counter\ntollgate_http_{name}_total {value}\n"
        ));
    }
    let mut res = out.into_response();
    res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    res
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Block => "block",
        Mode::Annotate => "annotate",
        Mode::Shadow => "shadow",
    }
}

fn rule_json(route: Option<&str>, rule: &Rule) -> Value {
    json!({
        "name": rule.name(),
        "route": route,
        "mode": mode_name(rule.current_mode()),
        "quota": rule.quota().to_string(),
        "algorithm": rule.current_algorithm().map(AlgorithmKind::as_str),
        "cost": rule.current_fixed_cost(),
        "key": key_text(rule.current_key()).unwrap_or_else(|| "custom".to_owned()),
        "methods": rule.current_methods().map(|m| m.iter().map(|m| m.as_str().to_owned()).collect::<Vec<_>>()),
        "ban_strikes": rule.strikes,
    })
}

async fn list_rules(State(api): Api, headers: HeaderMap) -> Response {
    if !authorized(&api, &headers) {
        return unauthorized();
    }
    let rules: Vec<Value> =
        api.layer.rules().iter().map(|(route, rule)| rule_json(route.as_deref(), rule)).collect();
    json_response(StatusCode::OK, &Value::Array(rules))
}

fn find_rule(api: &Shared, name: &str) -> Option<(Option<String>, Rule)> {
    api.layer.rules().into_iter().find(|(_, r)| r.name() == name)
}

/// Why a rule body was refused (a `400`; the [`Display`](std::fmt::Display) is the problem's
/// `detail`).
///
/// ```
/// use tollgate::http::admin::SpecError;
/// assert_eq!(SpecError::Missing { field: "quota" }.to_string(), "\"quota\" is required to create a rule");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpecError {
    /// Not JSON, a field of the wrong type, or an unknown field.
    Json {
        /// What the JSON parser said.
        detail: String,
    },
    /// A field required to create a rule is missing.
    Missing {
        /// The field.
        field: &'static str,
    },
    /// The name is not a valid rule name.
    Name(RuleError),
    /// `quota` is not a valid rate string, or the algorithm cannot represent it.
    Quota {
        /// The value given (at most 64 characters of it).
        quota: String,
        /// Why.
        error: Option<QuotaError>,
    },
    /// `route` does not start with `/`, is longer than 256 bytes, or has spaces or control
    /// characters.
    Route {
        /// The value given (at most 64 characters of it).
        route: String,
    },
    /// An entry of `methods` is not an HTTP method, or the list is empty or longer than 32.
    Methods,
    /// `mode` is not `block`, `annotate` or `shadow`.
    Mode {
        /// The value given (at most 64 characters of it).
        mode: String,
    },
    /// `algorithm` is not a known algorithm.
    Algorithm(super::UnknownAlgorithm),
    /// `key` is not a key description.
    Key {
        /// The value given (at most 64 characters of it).
        key: String,
    },
    /// `cost` exceeds what the quota can ever admit at once.
    Cost {
        /// The cost given.
        cost: u64,
        /// The quota's burst.
        burst: u64,
    },
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpecError::Json { detail } => write!(f, "body is not a valid rule: {detail}"),
            SpecError::Missing { field } => write!(f, "{field:?} is required to create a rule"),
            SpecError::Name(e) => write!(f, "\"name\": {e}"),
            SpecError::Quota { quota, error: Some(e) } => write!(f, "\"quota\" {quota:?}: {e}"),
            SpecError::Quota { quota, error: None } => {
                write!(f, "\"quota\" {quota:?} is not a rate such as \"100/s\", \"5/m\" or \"1000/h\"")
            }
            SpecError::Route { route } => write!(
                f,
                "\"route\" {route:?} must start with '/' and be at most 256 visible ASCII characters"
            ),
            SpecError::Methods => {
                f.write_str("\"methods\" must be 1 to 32 HTTP methods (HEAD beside GET not counted), or null for all")
            },
            SpecError::Mode { mode } => write!(f, "\"mode\" {mode:?} is not block, annotate or shadow"),
            SpecError::Algorithm(e) => write!(f, "\"algorithm\": {e}"),
            SpecError::Key { key } => write!(
                f,
                "\"key\" {key:?} is not client_ip, peer_ip, global, route or header:<name>, or up to 8 of them \
                 joined by '+' (all) or '|' (the first present), grouped with parentheses"
            ),
            SpecError::Cost { cost, burst } => {
                write!(f, "\"cost\" {cost} is more than the quota's burst {burst}: every request would be refused")
            }
        }
    }
}

impl std::error::Error for SpecError {}

/// Absent stays `None`; `null` becomes `Some(None)`.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A rule body as sent: every field optional (creation checks the required ones).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleBody {
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    route: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    methods: Option<Option<Vec<String>>>,
    quota: Option<String>,
    algorithm: Option<String>,
    mode: Option<String>,
    cost: Option<u64>,
    key: Option<String>,
    #[serde(default, deserialize_with = "present")]
    ban_strikes: Option<Option<bool>>,
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

fn parse_route(route: &str) -> Result<String, SpecError> {
    let ok = route.starts_with('/') && route.len() <= 256 && route.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(route.to_owned())
    } else {
        Err(SpecError::Route { route: clip(route) })
    }
}

/// At most 32 methods, not counting the `HEAD` that a list with `GET` gets anyway
/// ([`Rule::methods`]): the API shows that `HEAD`, and what it shows must be accepted back.
fn parse_methods(methods: &[String]) -> Result<Vec<Method>, SpecError> {
    if methods.is_empty() || methods.len() > 64 {
        return Err(SpecError::Methods);
    }
    let mut parsed: Vec<Method> = Vec::with_capacity(methods.len());
    for m in methods {
        let m = Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| SpecError::Methods)?;
        if !parsed.contains(&m) {
            parsed.push(m);
        }
    }
    let implied_head = parsed.contains(&Method::GET) && parsed.contains(&Method::HEAD);
    if parsed.len() - usize::from(implied_head) > 32 {
        return Err(SpecError::Methods);
    }
    Ok(parsed)
}

fn parse_mode(mode: &str) -> Result<Mode, SpecError> {
    match mode {
        "block" => Ok(Mode::Block),
        "annotate" => Ok(Mode::Annotate),
        "shadow" => Ok(Mode::Shadow),
        other => Err(SpecError::Mode { mode: clip(other) }),
    }
}

/// Most names in one `key` (`route+client_ip` has two).
const MAX_KEY_NAMES: usize = 8;

/// Most parentheses one inside another in a `key`.
const MAX_KEY_DEPTH: usize = 4;

/// Reads a `key` (see the module docs):
///
/// ```text
/// key  := alt
/// alt  := all ('|' all)*        KeyBy::First when there are several
/// all  := atom ('+' atom)*      KeyBy::All when there are several
/// atom := name | '(' alt ')'
/// name := client_ip | peer_ip | global | route | header:<header name>
/// ```
///
/// `+` binds tighter than `|`; at most [`MAX_KEY_NAMES`] names and [`MAX_KEY_DEPTH`] levels of
/// parentheses.
fn parse_key(key: &str) -> Result<KeyBy, SpecError> {
    let mut parser = KeyParser { rest: key, names: 0 };
    match parser.alternatives(0) {
        Some(by) if parser.rest.is_empty() => Ok(by),
        _ => Err(SpecError::Key { key: clip(key) }),
    }
}

/// A recursive-descent reader of `key`'s grammar ([`parse_key`]); depth and size are bounded.
struct KeyParser<'a> {
    /// What is left to read.
    rest: &'a str,
    /// Names read so far.
    names: usize,
}

impl KeyParser<'_> {
    /// `alt := all ('|' all)*`.
    fn alternatives(&mut self, depth: usize) -> Option<KeyBy> {
        let mut parts = vec![self.all(depth)?];
        while let Some(rest) = self.rest.strip_prefix('|') {
            self.rest = rest;
            parts.push(self.all(depth)?);
        }
        if parts.len() == 1 {
            parts.pop()
        } else {
            Some(KeyBy::First(parts.into()))
        }
    }

    /// `all := atom ('+' atom)*`.
    fn all(&mut self, depth: usize) -> Option<KeyBy> {
        let mut parts = vec![self.atom(depth)?];
        while let Some(rest) = self.rest.strip_prefix('+') {
            self.rest = rest;
            parts.push(self.atom(depth)?);
        }
        if parts.len() == 1 {
            parts.pop()
        } else {
            Some(KeyBy::All(parts.into()))
        }
    }

    /// `atom := name | '(' alt ')'`.
    fn atom(&mut self, depth: usize) -> Option<KeyBy> {
        if let Some(rest) = self.rest.strip_prefix('(') {
            if depth >= MAX_KEY_DEPTH {
                return None;
            }
            self.rest = rest;
            let inner = self.alternatives(depth + 1)?;
            self.rest = self.rest.strip_prefix(')')?;
            return Some(inner);
        }
        let end = self.rest.find(['+', '|', '(', ')']).unwrap_or(self.rest.len());
        let (name, rest) = self.rest.split_at(end);
        self.rest = rest;
        self.names += 1;
        if self.names > MAX_KEY_NAMES {
            return None;
        }
        match name {
            "client_ip" => Some(KeyBy::ClientIp),
            "peer_ip" => Some(KeyBy::PeerIp),
            "global" => Some(KeyBy::Global),
            "route" => Some(KeyBy::Route),
            _ => name
                .strip_prefix("header:")
                .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok())
                .map(KeyBy::Header),
        }
    }
}

/// The text [`parse_key`] reads back as the same key, or `None` where there is none: a custom
/// extractor, a header whose name holds `+` or `|`, a composite of fewer than two parts, or
/// one past the parser's limits. The API shows those as `custom`.
fn key_text(key: &KeyBy) -> Option<String> {
    let text = write_key(key)?;
    // Within the parser's limits (names, depth); the structure round-trips by construction.
    parse_key(&text).is_ok().then_some(text)
}

fn write_key(key: &KeyBy) -> Option<String> {
    /// A part of `All` or `First`, in parentheses where the parser would otherwise read it
    /// into its parent: any composite inside `All`, a `First` inside `First`.
    fn part(key: &KeyBy, in_all: bool) -> Option<String> {
        let text = write_key(key)?;
        let group = matches!(key, KeyBy::First(_)) || (in_all && matches!(key, KeyBy::All(_)));
        Some(if group { format!("({text})") } else { text })
    }
    fn join(parts: &[KeyBy], in_all: bool) -> Option<String> {
        if parts.len() < 2 {
            return None; // `a` alone reads back as `a`, not as a composite of one
        }
        let texts = parts.iter().map(|p| part(p, in_all)).collect::<Option<Vec<_>>>()?;
        Some(texts.join(if in_all { "+" } else { "|" }))
    }
    match key {
        KeyBy::ClientIp => Some("client_ip".to_owned()),
        KeyBy::PeerIp => Some("peer_ip".to_owned()),
        KeyBy::Global => Some("global".to_owned()),
        KeyBy::Route => Some("route".to_owned()),
        KeyBy::Header(h) if !h.as_str().contains(['+', '|']) => Some(format!("header:{h}")),
        KeyBy::Header(_) | KeyBy::Custom(_) => None,
        KeyBy::All(parts) => join(parts, true),
        KeyBy::First(parts) => join(parts, false),
    }
}

/// A validated rule: what the layer gets, and where it applies.
struct Built {
    route: Option<String>,
    rule: Rule,
}

/// Parses a rule body. A field of the wrong type is named in the detail (`"ban_strikes":
/// invalid type: string "yes", expected a boolean`): serde_json alone gives only the position.
fn parse(body: &[u8]) -> Result<RuleBody, SpecError> {
    let json = |e: serde_json::Error| SpecError::Json { detail: e.to_string() };
    // An object only: serde's derive also reads a struct from an array of its fields in order,
    // so `["api", null, null, "1/s"]` made a rule (review finding).
    if body.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r')) != Some(&b'{') {
        return Err(SpecError::Json { detail: "a rule is a JSON object".to_owned() });
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let spec: RuleBody = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // A value of the wrong type or range, or an unknown field, is named by its path; a syntax
        // error (a trailing comma, a truncated body: path `?`) is reported as the parser words it
        // (review finding: it read `"?": trailing comma`).
        match path.as_str() {
            field if inner.is_data() && !matches!(field, "." | "") && !field.contains('?') => {
                SpecError::Json { detail: format!("\"{field}\": {inner}") }
            }
            _ => json(inner),
        }
    })?;
    // Trailing characters after the object (what `serde_json::from_slice` checks).
    de.end().map_err(json)?;
    Ok(spec)
}

/// Validates `body` into a rule; `current` is the rule being replaced (its route and rule),
/// whose values fill the fields the body leaves out.
fn build(api: &Shared, body: &[u8], current: Option<(Option<String>, &Rule)>) -> Result<Built, SpecError> {
    let spec = parse(body)?;
    let (current_route, current) = match current {
        Some((route, rule)) => (route, Some(rule)),
        None => (None, None),
    };
    let name = match (&spec.name, current) {
        (Some(name), _) => name.clone(),
        (None, Some(rule)) => rule.name().to_owned(),
        (None, None) => return Err(SpecError::Missing { field: "name" }),
    };
    let route = match &spec.route {
        Some(Some(route)) => Some(parse_route(route)?),
        Some(None) => None,
        None => current_route,
    };
    let methods = match &spec.methods {
        Some(Some(methods)) => Some(parse_methods(methods)?),
        Some(None) => None,
        None => current.and_then(|r| r.current_methods().map(<[Method]>::to_vec)),
    };
    let quota = match (&spec.quota, current) {
        (Some(q), _) => {
            Some(q.parse::<Quota>().map_err(|e| SpecError::Quota { quota: clip(q), error: Some(e) })?)
        }
        (None, Some(_)) => None,
        (None, None) => return Err(SpecError::Missing { field: "quota" }),
    };
    let algorithm = match &spec.algorithm {
        Some(a) => Some(a.parse::<AlgorithmKind>().map_err(SpecError::Algorithm)?),
        None => None,
    };
    let mode = match &spec.mode {
        Some(m) => parse_mode(m)?,
        None => current.map_or(Mode::Block, Rule::current_mode),
    };
    let key = match &spec.key {
        Some(k) => parse_key(k)?,
        None => current.map_or(KeyBy::ClientIp, |r| r.current_key().clone()),
    };
    // A new quota or algorithm needs a new limiter; otherwise the rule keeps its limiter and
    // state.
    let fresh = quota.is_some() || algorithm.is_some();
    let (limiter, algorithm, effective_quota) = match current {
        Some(rule) if !fresh => (Arc::clone(rule.limiter()), rule.current_algorithm(), rule.quota()),
        _ => {
            let algorithm = algorithm.or(current.and_then(Rule::current_algorithm)).unwrap_or_default();
            let Some(quota) = quota.or(current.map(Rule::quota)) else {
                return Err(SpecError::Missing { field: "quota" }); // checked above; kept total
            };
            let limiter = (api.factory)(quota, algorithm)
                .map_err(|e| SpecError::Quota { quota: quota.to_string(), error: Some(e) })?;
            (limiter, Some(algorithm), quota)
        }
    };
    // The most one check can ever take, for every algorithm (GCRA's bucket, a window's limit).
    let burst = effective_quota.burst();
    let rule = Rule::from_arc(&name, limiter).map_err(SpecError::Name)?.mode(mode).key(key);
    let rule = match algorithm {
        Some(a) => rule.algorithm(a),
        None => rule,
    };
    let rule = match methods {
        Some(m) => rule.methods(m),
        None => rule,
    };
    // The cost given, else the current fixed cost (checked again: the quota may have shrunk).
    let cost = spec.cost.or(current.and_then(Rule::current_fixed_cost).map(u64::from));
    let rule = match (cost, current) {
        (Some(cost), _) => match u32::try_from(cost).ok().filter(|c| u64::from(*c) <= burst) {
            Some(c) => rule.fixed_cost(c),
            None => return Err(SpecError::Cost { cost, burst }),
        },
        // A cost function set in code stays.
        (None, Some(current)) => Rule { cost: current.cost.clone(), ..rule },
        (None, None) => rule,
    };
    // Kept unless the body says otherwise (before, any replacement dropped a `ban_strikes`
    // set in code).
    let strikes = match spec.ban_strikes {
        Some(strikes) => strikes,
        None => current.and_then(|r| r.strikes),
    };
    Ok(Built { route, rule: Rule { strikes, ..rule } })
}

async fn create_rule(State(api): Api, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&api, &headers) {
        return unauthorized();
    }
    let built = match build(&api, &body, None) {
        Ok(b) => b,
        Err(e) => return problem(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let shown = rule_json(built.route.as_deref(), &built.rule);
    let location = format!("/rules/{}", built.rule.name());
    match api.layer.add_rule(built.route.as_deref(), built.rule) {
        Ok(()) => {
            let mut res = json_response(StatusCode::CREATED, &shown);
            if let Ok(v) = HeaderValue::from_str(&location) {
                res.headers_mut().insert(LOCATION, v);
            }
            res
        }
        Err(e) => problem(StatusCode::CONFLICT, &e.to_string()),
    }
}

async fn replace_rule(
    State(api): Api,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&api, &headers) {
        return unauthorized();
    }
    let Some((route, current)) = find_rule(&api, &name) else {
        return no_such_rule();
    };
    let built = match build(&api, &body, Some((route, &current))) {
        Ok(b) => b,
        Err(e) => return problem(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let shown = rule_json(built.route.as_deref(), &built.rule);
    match api.layer.replace_rule_at(&name, built.route.as_deref(), built.rule) {
        Ok(true) => json_response(StatusCode::OK, &shown),
        Ok(false) => no_such_rule(), // removed while we were building its replacement
        Err(e) => problem(StatusCode::CONFLICT, &e.to_string()),
    }
}

async fn delete_rule(State(api): Api, Path(name): Path<String>, headers: HeaderMap) -> Response {
    if !authorized(&api, &headers) {
        return unauthorized();
    }
    if api.layer.remove_rule(&name) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        no_such_rule()
    }
}

const MAX_KEYS: usize = 1000;

async fn list_keys(State(api): Api, Path(name): Path<String>, headers: HeaderMap) -> Response {
    if !authorized(&api, &headers) {
        return unauthorized();
    }
    let Some((_, rule)) = find_rule(&api, &name) else {
        return no_such_rule();
    };
    let mut keys = Vec::new();
    let mut total = 0usize;
    rule.limiter().for_each_http(&mut |key, d| {
        total += 1;
        if keys.len() < MAX_KEYS {
            keys.push(json!({
                "key": key,
                "limit": d.limit(),
                "remaining_after_next": d.remaining(),
                "next_allowed": d.is_allowed(),
                "reset_after_ms": u64::try_from(d.reset_after().as_millis()).unwrap_or(u64::MAX),
            }));
        }
    });
    json_response(StatusCode::OK, &json!({ "total": total, "keys": keys }))
}

async fn reset_key(
    State(api): Api,
    Path((name, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&api, &headers) {
        return unauthorized();
    }
    let Some((_, rule)) = find_rule(&api, &name) else {
        return no_such_rule();
    };
    match rule.limiter().reset_http(&HttpKey::new(&key)) {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(StatusCode::NOT_IMPLEMENTED, "this limiter cannot reset keys from here"),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

async fn list_bans(State(api): Api, headers: HeaderMap) -> Response {
    if !authorized(&api, &headers) {
        return unauthorized();
    }
    let mut bans = Vec::new();
    if let Some(ban) = api.layer.auto_ban() {
        ban.for_each_ban(|key, left| {
            if bans.len() < MAX_KEYS {
                bans.push(json!({ "key": key, "seconds_left": super::ceil_secs(left) }));
            }
        });
    }
    json_response(StatusCode::OK, &Value::Array(bans))
}

async fn unban(State(api): Api, Path(key): Path<String>, headers: HeaderMap) -> Response {
    if !authorized(&api, &headers) {
        return unauthorized();
    }
    // Idempotent, like `GET /bans`: without auto-ban no key is banned, so there is nothing to
    // lift and the key is unbanned afterwards either way.
    if let Some(ban) = api.layer.auto_ban() {
        ban.unban(&HttpKey::new(&key));
    }
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &'static str) -> KeyBy {
        KeyBy::Header(http::HeaderName::from_static(name))
    }

    fn all(parts: Vec<KeyBy>) -> KeyBy {
        KeyBy::All(parts.into())
    }

    fn first(parts: Vec<KeyBy>) -> KeyBy {
        KeyBy::First(parts.into())
    }

    #[test]
    fn every_key_with_a_text_form_reads_back_as_the_same_key() {
        let cases = [
            (KeyBy::ClientIp, "client_ip"),
            (KeyBy::PeerIp, "peer_ip"),
            (KeyBy::Global, "global"),
            (KeyBy::Route, "route"),
            (header("x-api-key"), "header:x-api-key"),
            (all(vec![KeyBy::Route, KeyBy::ClientIp]), "route+client_ip"),
            (first(vec![header("x-api-key"), KeyBy::ClientIp]), "header:x-api-key|client_ip"),
            (header("x-api-key").or(KeyBy::PeerIp), "header:x-api-key|peer_ip"),
            (KeyBy::Route.and(KeyBy::Global), "route+global"),
            // `+` binds tighter than `|`: no parentheses needed for an All inside a First.
            (first(vec![all(vec![KeyBy::Route, KeyBy::ClientIp]), KeyBy::Global]), "route+client_ip|global"),
            // Nesting that would otherwise flatten (a different key) is parenthesised.
            (
                all(vec![first(vec![header("x-user"), KeyBy::ClientIp]), KeyBy::Route]),
                "(header:x-user|client_ip)+route",
            ),
            (all(vec![all(vec![KeyBy::Route, KeyBy::PeerIp]), KeyBy::Global]), "(route+peer_ip)+global"),
            (first(vec![first(vec![KeyBy::Route, KeyBy::PeerIp]), KeyBy::Global]), "(route|peer_ip)|global"),
            (
                first(vec![
                    KeyBy::Route,
                    all(vec![KeyBy::Global, first(vec![KeyBy::PeerIp, KeyBy::ClientIp])]),
                ]),
                "route|global+(peer_ip|client_ip)",
            ),
        ];
        for (key, text) in cases {
            let shown = key_text(&key);
            assert_eq!(shown.as_deref(), Some(text), "{key:?}");
            let parsed = match parse_key(text) {
                Ok(parsed) => parsed,
                Err(e) => panic!("{text}: {e}"),
            };
            // KeyBy has no PartialEq (a custom extractor is a closure); its Debug is structural.
            assert_eq!(format!("{parsed:?}"), format!("{key:?}"), "{text}");
            assert_eq!(key_text(&parsed).as_deref(), Some(text));
        }
    }

    #[test]
    fn keys_without_a_text_form_are_none_never_a_wrong_text() {
        let custom = KeyBy::custom(|_, _| false);
        for key in [
            custom.clone(),
            KeyBy::Route.and(custom.clone()),
            custom.or(KeyBy::ClientIp),
            all(vec![KeyBy::Route]), // reads back as `route`, a different key
            first(vec![KeyBy::Route]),
            all(vec![]),
            header("x+y"), // would read as two parts
            header("x|y"),
            all(vec![KeyBy::Route; 9]), // more names than the parser takes
        ] {
            assert_eq!(key_text(&key), None, "{key:?}");
        }
    }

    #[test]
    fn key_texts_the_parser_refuses() {
        for bad in [
            "",
            "+",
            "route+",
            "|client_ip",
            "route||client_ip",
            "(route",
            "route)",
            "()",
            "(((((client_ip+route)))))+global", // parentheses five deep, over MAX_KEY_DEPTH
            "route+route+route+route+route+route+route+route+route",
            "cookie",
            "header:bad name",
            "route + client_ip",
            "custom",
        ] {
            assert_eq!(parse_key(bad).err(), Some(SpecError::Key { key: clip(bad) }), "{bad:?}");
        }
        // Four deep is fine, and parentheses around a whole key change nothing.
        let deep = parse_key("((((client_ip+route))))+global").map(|k| format!("{k:?}"));
        assert_eq!(
            deep.ok(),
            Some(format!("{:?}", all(vec![all(vec![KeyBy::ClientIp, KeyBy::Route]), KeyBy::Global])))
        );
        let grouped = parse_key("(route)").map(|k| format!("{k:?}"));
        assert_eq!(grouped.ok(), Some("Route".to_owned()));
        // Eight names is the limit, not an error.
        assert!(matches!(parse_key(&["route"; 8].join("+")), Ok(KeyBy::All(parts)) if parts.len() == 8));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_the_token_is_not() {
        for credentials in ["Bearer sekret", "bearer sekret", "BEARER sekret", "bEaReR  sekret"] {
            assert_eq!(bearer_token(credentials.as_bytes()), Some(&b"sekret"[..]), "{credentials}");
        }
        assert_eq!(bearer_token(b"Bearer Sekret"), Some(&b"Sekret"[..]));
        for other in ["Basic c2VrcmV0", "Bearersekret", "sekret", "", "Bear sekret"] {
            assert_eq!(bearer_token(other.as_bytes()), None, "{other}");
        }
    }

    #[test]
    fn admin_made_limiters_fit_the_memory_budget() {
        use crate::decision::CheckError;
        // The reviewer's rule: a sliding log of 4096 keeps 32 792 bytes per key.
        let quota: Quota = match "4096/h".parse() {
            Ok(q) => q,
            Err(e) => panic!("{e}"),
        };
        let per_key = match SlidingLog::from_quota(quota) {
            Ok(log) => log.bytes_per_key(),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(per_key, 32_800);
        let keys = max_keys_within_budget(
            &quota,
            AlgorithmKind::SlidingLog,
            DEFAULT_MAX_KEYS,
            DEFAULT_MEMORY_BUDGET,
        );
        assert_eq!(keys, Ok(8_184));
        assert!(8_184 * per_key <= DEFAULT_MEMORY_BUDGET && 8_185 * per_key > DEFAULT_MEMORY_BUDGET);
        // One-word cells: the key cap binds, as before.
        for algorithm in [AlgorithmKind::Gcra, AlgorithmKind::FixedWindow, AlgorithmKind::SlidingWindow] {
            let keys = max_keys_within_budget(&quota, algorithm, DEFAULT_MAX_KEYS, DEFAULT_MEMORY_BUDGET);
            assert_eq!(keys, Ok(DEFAULT_MAX_KEYS), "{algorithm:?}");
        }
        // The factory's limiters are built with that cap: with a budget of 3.5 keys, the fourth
        // key is refused (a full table of live keys: the inline sweep frees nothing).
        let factory = budgeted_factory(crate::ManualClock::new(), DEFAULT_MAX_KEYS, per_key * 7 / 2, None);
        let limiter = match factory(quota, AlgorithmKind::SlidingLog) {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        };
        for k in 0..3 {
            assert!(matches!(limiter.check_http(&HttpKey::new(&format!("k{k}")), 1), Check::Ready(Ok(_))));
        }
        let Check::Ready(refused) = limiter.check_http(&HttpKey::new("k3"), 1) else { panic!("in process") };
        assert_eq!(refused.err(), Some(CheckError::KeyLimit { max_keys: 3 }));
        // A budget below one key's state refuses the rule rather than admit no key.
        let tiny = budgeted_factory(crate::ManualClock::new(), DEFAULT_MAX_KEYS, per_key - 1, None);
        assert!(matches!(
            tiny(quota, AlgorithmKind::SlidingLog).err(),
            Some(QuotaError::TooLarge { value: 32_800, max: 32_799, .. })
        ));
    }
}
