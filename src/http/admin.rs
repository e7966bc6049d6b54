//! The admin API (feature `axum`): an axum [`Router`] to inspect and steer a running
//! [`RateLimitLayer`]. Mount it on an internal listener.
//!
//! | Route | Auth | What |
//! |---|---|---|
//! | `GET /healthz` | no | `200 ok` while the process serves |
//! | `GET /readyz` | no | `200` with the number of rules |
//! | `GET /metrics` | yes | counters, Prometheus text format |
//! | `GET /rules` | yes | the rules as JSON |
//! | `PUT /rules/{name}` | yes | `{"mode":"shadow"}` and/or `{"quota":"100/s"}` (a quota change needs a [`LimiterFactory`]; the rule starts with fresh state) |
//! | `GET /rules/{name}/keys` | yes | per-key state (listable limiters, first 1000 keys) |
//! | `DELETE /rules/{name}/keys/{key}` | yes | forget one key's state |
//! | `GET /bans`, `DELETE /bans/{key}` | yes | list / lift auto-bans |
//!
//! Authenticated routes need `Authorization: Bearer <token>`; the token is compared in
//! constant time.
//!
//! ```
//! use tollgate::http::{admin, RateLimitLayer};
//! let layer = RateLimitLayer::builder().build();
//! let router: axum::Router = admin::AdminApi::new(layer, "s3cret").router();
//! ```

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Value};

use super::{HttpKey, HttpLimiter, Mode, RateLimitLayer, Rule};
use crate::quota::Quota;

/// Builds a fresh limiter for a new quota (used by `PUT /rules/{name}` with a `quota`).
pub type LimiterFactory = Arc<dyn Fn(Quota) -> Arc<dyn HttpLimiter> + Send + Sync>;

/// The admin API's configuration.
#[derive(Clone)]
pub struct AdminApi {
    layer: RateLimitLayer,
    token: Arc<[u8]>,
    factory: Option<LimiterFactory>,
}

impl std::fmt::Debug for AdminApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminApi").field("layer", &self.layer).finish_non_exhaustive()
    }
}

impl AdminApi {
    /// An admin API for `layer`, guarded by the bearer `token`. An empty token locks every
    /// authenticated route.
    pub fn new(layer: RateLimitLayer, token: &str) -> AdminApi {
        AdminApi { layer, token: token.as_bytes().into(), factory: None }
    }

    /// How to build a limiter when a rule's quota is changed.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tollgate::http::{admin::AdminApi, HttpKey, HttpLimiter, Listed, RateLimitLayer};
    /// use tollgate::KeyedLimiter;
    /// let api = AdminApi::new(RateLimitLayer::builder().build(), "t")
    ///     .limiter_factory(|q| Arc::new(Listed(KeyedLimiter::<HttpKey, _>::with_clock(q, tollgate::QuantaClock::new()))) as Arc<dyn HttpLimiter>);
    /// ```
    pub fn limiter_factory(
        mut self,
        f: impl Fn(Quota) -> Arc<dyn HttpLimiter> + Send + Sync + 'static,
    ) -> Self {
        self.factory = Some(Arc::new(f));
        self
    }

    /// The router.
    pub fn router(self) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .route("/rules", get(list_rules))
            .route("/rules/{name}", axum::routing::put(update_rule))
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
    let mut res = (StatusCode::UNAUTHORIZED, "unauthorized\n").into_response();
    res.headers_mut().insert("www-authenticate", HeaderValue::from_static("Bearer"));
    res
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut res = (status, body).into_response();
    res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({ "error": message }))
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
        "key": format!("{:?}", rule.key),
        "methods": rule.methods.as_ref().map(|m| m.iter().map(|m| m.as_str().to_owned()).collect::<Vec<_>>()),
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

fn find_rule(api: &AdminApi, name: &str) -> Option<Rule> {
    api.layer.rules().into_iter().map(|(_, r)| r).find(|r| r.name() == name)
}

async fn update_rule(State(api): Api, Path(name): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&api, &headers) {
        return unauthorized();
    }
    let Some(mut rule) = find_rule(&api, &name) else {
        return error(StatusCode::NOT_FOUND, "no such rule");
    };
    let Ok(update) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "body must be JSON");
    };
    if let Some(mode) = update.get("mode") {
        rule = match mode.as_str() {
            Some("block") => rule.mode(Mode::Block),
            Some("annotate") => rule.mode(Mode::Annotate),
            Some("shadow") => rule.mode(Mode::Shadow),
            _ => return error(StatusCode::BAD_REQUEST, "mode must be block, annotate or shadow"),
        };
    }
    if let Some(quota) = update.get("quota") {
        let Some(quota) = quota.as_str().and_then(|q| q.parse::<Quota>().ok()) else {
            return error(StatusCode::BAD_REQUEST, "quota must be a rate string such as \"100/s\"");
        };
        let Some(factory) = &api.factory else {
            return error(StatusCode::NOT_IMPLEMENTED, "no limiter factory configured");
        };
        rule = match rule.with_limiter(factory(quota)) {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
        };
    }
    let shown = rule_json(None, &rule);
    if api.layer.replace_rule(&name, rule) {
        json_response(StatusCode::OK, &shown)
    } else {
        error(StatusCode::NOT_FOUND, "no such rule")
    }
}

const MAX_KEYS: usize = 1000;

async fn list_keys(State(api): Api, Path(name): Path<String>, headers: HeaderMap) -> Response {
    if !authorized(&api, &headers) {
        return unauthorized();
    }
    let Some(rule) = find_rule(&api, &name) else {
        return error(StatusCode::NOT_FOUND, "no such rule");
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
    let Some(rule) = find_rule(&api, &name) else {
        return error(StatusCode::NOT_FOUND, "no such rule");
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
