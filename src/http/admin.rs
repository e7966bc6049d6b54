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
//! | `GET /bans`, `DELETE /bans/{key}` | yes | list / lift auto-bans |
//!
//! Authenticated routes need `Authorization: Bearer <token>`; the token is compared in
//! constant time. Errors are `application/problem+json` (RFC 9457) with a `detail`; a body that
//! does not describe a valid rule is a `400` whose detail names the field ([`SpecError`]).
//!
//! # Rule bodies
//!
//! ```json
//! {"name": "search", "route": "/search", "methods": ["GET"], "quota": "100/m",
//!  "algorithm": "sliding_window", "mode": "block", "cost": 2, "key": "route+client_ip"}
//! ```
//!
//! `name` (required to create; 1–64 of `A-Z a-z 0-9 - _ . :`); `route`: a path prefix or axum
//! route pattern starting with `/`, or `null` for every request (default); `methods`: a list,
//! or `null` for all (default); `quota`: a rate string (`"100/s"`, `"5/m"`, `"1000/h"`;
//! required to create); `algorithm`: `gcra` (default), `fixed_window`, `sliding_window`,
//! `sliding_log`; `mode`: `block` (default), `annotate`, `shadow`; `cost`: per request,
//! `0..=` the quota's burst (default 1); `key`: `client_ip` (default), `peer_ip`, `global`,
//! `route`, `header:<name>`, or several joined by `+` (e.g. `route+client_ip`).
//!
//! Changes swap the layer's whole rule set atomically: requests in flight finish under the
//! rules they started with, and the check path stays lock-free. A new `quota` or `algorithm`
//! gives the rule a fresh limiter from the [`LimiterFactory`] (its counts start over); other
//! changes keep the limiter and its state.
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

/// Keys per limiter made for [`AdminApi::new`] (by [`swept_factory`]): a full table first
/// sweeps idle keys inline, so memory stays bounded even between two background sweeps.
///
/// ```
/// assert_eq!(tollgate::http::admin::DEFAULT_MAX_KEYS, 1_048_576);
/// ```
pub const DEFAULT_MAX_KEYS: usize = 1 << 20;

/// How often [`AdminApi::new`]'s limiters sweep their idle keys in the background: 10 s.
///
/// ```
/// assert_eq!(tollgate::http::admin::DEFAULT_SWEEP_INTERVAL.as_secs(), 10);
/// ```
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// A [`LimiterFactory`] of in-process keyed limiters (listable: `GET /rules/{name}/keys`
/// works) on `clock`, each holding at most `max_keys` keys. Idle keys leave only when a full
/// table sweeps inline; [`swept_factory`] also sweeps them in the background.
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
    factory(clock, max_keys, None)
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
    factory(clock, max_keys, Some(interval))
}

fn factory<C: Clock + Clone + 'static>(clock: C, max_keys: usize, sweep: Option<Duration>) -> LimiterFactory {
    fn build<A: Algorithm, C: Clock + 'static>(
        quota: &Quota,
        clock: C,
        max_keys: usize,
        sweep: Option<Duration>,
    ) -> Result<Arc<dyn HttpLimiter>, QuotaError> {
        let keyed = KeyedLimiter::<HttpKey, C, DefaultHashBuilder, A>::build(
            A::new(quota)?,
            clock,
            0,
            DefaultHashBuilder::default(),
        );
        let listed = Arc::new(Listed(keyed.max_keys(max_keys)));
        Ok(match sweep {
            None => listed,
            Some(interval) => {
                let sweeper = spawn_sweep_thread(Arc::downgrade(&listed), interval, |l| {
                    l.0.sweep();
                });
                Arc::new(Swept { limiter: listed, _sweeper: sweeper })
            }
        })
    }
    Arc::new(move |quota, algorithm| match algorithm {
        AlgorithmKind::Gcra => build::<Gcra, C>(&quota, clock.clone(), max_keys, sweep),
        AlgorithmKind::FixedWindow => build::<FixedWindow, C>(&quota, clock.clone(), max_keys, sweep),
        AlgorithmKind::SlidingWindow => build::<SlidingWindow, C>(&quota, clock.clone(), max_keys, sweep),
        AlgorithmKind::SlidingLog => build::<SlidingLog, C>(&quota, clock.clone(), max_keys, sweep),
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
}

/// The admin API's configuration.
#[derive(Clone)]
pub struct AdminApi {
    layer: RateLimitLayer,
    token: Arc<[u8]>,
    factory: LimiterFactory,
}

impl std::fmt::Debug for AdminApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminApi").field("layer", &self.layer).finish_non_exhaustive()
    }
}

impl AdminApi {
    /// An admin API for `layer`, guarded by the bearer `token`. An empty token locks every
    /// authenticated route. New limiters come from [`swept_factory`] on a [`QuantaClock`], with
    /// [`DEFAULT_MAX_KEYS`] and [`DEFAULT_SWEEP_INTERVAL`].
    pub fn new<M>(layer: RateLimitLayer<M>, token: &str) -> AdminApi {
        let factory = swept_factory(QuantaClock::new(), DEFAULT_MAX_KEYS, DEFAULT_SWEEP_INTERVAL);
        AdminApi { layer: layer.body_mode(), token: token.as_bytes().into(), factory }
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
        self.factory = Arc::new(f);
        self
    }

    /// The router.
    pub fn router(self) -> Router {
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
            .with_state(Arc::new(self))
    }
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

type Api = State<Arc<AdminApi>>;

fn authorized(api: &AdminApi, headers: &HeaderMap) -> bool {
    let presented =
        headers.get(AUTHORIZATION).and_then(|v| v.as_bytes().strip_prefix(b"Bearer ")).unwrap_or_default();
    !api.token.is_empty() && constant_time_eq(presented, &api.token)
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
        "key": key_text(rule.current_key()),
        "methods": rule.current_methods().map(|m| m.iter().map(|m| m.as_str().to_owned()).collect::<Vec<_>>()),
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

fn find_rule(api: &AdminApi, name: &str) -> Option<(Option<String>, Rule)> {
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
            SpecError::Methods => f.write_str("\"methods\" must be 1 to 32 HTTP methods, or null for all"),
            SpecError::Mode { mode } => write!(f, "\"mode\" {mode:?} is not block, annotate or shadow"),
            SpecError::Algorithm(e) => write!(f, "\"algorithm\": {e}"),
            SpecError::Key { key } => write!(
                f,
                "\"key\" {key:?} is not client_ip, peer_ip, global, route or header:<name>, or several joined by '+'"
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

fn parse_methods(methods: &[String]) -> Result<Vec<Method>, SpecError> {
    if methods.is_empty() || methods.len() > 32 {
        return Err(SpecError::Methods);
    }
    methods
        .iter()
        .map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| SpecError::Methods))
        .collect()
}

fn parse_mode(mode: &str) -> Result<Mode, SpecError> {
    match mode {
        "block" => Ok(Mode::Block),
        "annotate" => Ok(Mode::Annotate),
        "shadow" => Ok(Mode::Shadow),
        other => Err(SpecError::Mode { mode: clip(other) }),
    }
}

/// `client_ip`, `peer_ip`, `global`, `route`, `header:<name>`, or several joined by `+`.
fn parse_key(key: &str) -> Result<KeyBy, SpecError> {
    let bad = || SpecError::Key { key: clip(key) };
    let one = |part: &str| match part {
        "client_ip" => Ok(KeyBy::ClientIp),
        "peer_ip" => Ok(KeyBy::PeerIp),
        "global" => Ok(KeyBy::Global),
        "route" => Ok(KeyBy::Route),
        _ => match part.strip_prefix("header:").map(|h| http::HeaderName::from_bytes(h.as_bytes())) {
            Some(Ok(name)) => Ok(KeyBy::Header(name)),
            _ => Err(bad()),
        },
    };
    let parts: Vec<&str> = key.split('+').collect();
    if parts.len() > 8 {
        return Err(bad());
    }
    match parts.as_slice() {
        [single] => one(single),
        many => Ok(KeyBy::All(many.iter().map(|p| one(p)).collect::<Result<Vec<_>, _>>()?.into())),
    }
}

/// The text `parse_key` reads back, where there is one (`custom` otherwise).
fn key_text(key: &KeyBy) -> String {
    match key {
        KeyBy::ClientIp => "client_ip".to_owned(),
        KeyBy::PeerIp => "peer_ip".to_owned(),
        KeyBy::Global => "global".to_owned(),
        KeyBy::Route => "route".to_owned(),
        KeyBy::Header(h) => format!("header:{h}"),
        KeyBy::All(parts) => parts.iter().map(key_text).collect::<Vec<_>>().join("+"),
        KeyBy::First(parts) => parts.iter().map(key_text).collect::<Vec<_>>().join("|"),
        KeyBy::Custom(_) => "custom".to_owned(),
    }
}

/// A validated rule: what the layer gets, and where it applies.
struct Built {
    route: Option<String>,
    rule: Rule,
}

/// Validates `body` into a rule; `current` is the rule being replaced (its route and rule),
/// whose values fill the fields the body leaves out.
fn build(api: &AdminApi, body: &[u8], current: Option<(Option<String>, &Rule)>) -> Result<Built, SpecError> {
    let spec: RuleBody =
        serde_json::from_slice(body).map_err(|e| SpecError::Json { detail: e.to_string() })?;
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
    Ok(Built { route, rule })
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
    match api.layer.auto_ban() {
        Some(ban) => {
            ban.unban(&HttpKey::new(&key));
            StatusCode::NO_CONTENT.into_response()
        }
        None => error(StatusCode::NOT_FOUND, "auto-ban is not configured"),
    }
}
