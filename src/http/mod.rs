//! tower/axum middleware (features `tower`, `axum`): [`RateLimitLayer`] limits
//! requests in axum, tonic or plain hyper with any tollgate limiter, in process or remote.
//!
//! * **Rules** ([`Rule`]): a limiter, a key ([`KeyBy`]: client address, header, user, route,
//!   global, a closure, or combinations), a cost, methods and a [`Mode`] (block, annotate,
//!   shadow). Global rules apply to every request; route rules to their route (the axum
//!   `MatchedPath` when present, else the longest matching path prefix).
//! * **Client addresses** ([`client_ip`]): the peer address unless the peer is a trusted proxy;
//!   then the rightmost untrusted `X-Forwarded-For` / `Forwarded` hop. IPv6 bucketed by /64.
//! * **Responses**: 429 with `Retry-After` (whole seconds, rounded up) and an
//!   `application/problem+json` body; every limited response carries `X-RateLimit-*` and/or the
//!   IETF draft `RateLimit-Policy` / `RateLimit` headers ([`HeaderStyle`]). Two 429s differ: a
//!   request that costs more than a rule's burst is refused without `Retry-After` (retrying
//!   never helps); one refused because a rule's key table is full
//!   ([`CheckError::KeyLimit`]) gets `Retry-After: 1` and no
//!   rate-limit headers (no decision of that rule exists), and is no auto-ban strike.
//! * **Auto-ban** ([`AutoBan`]): repeated denials ban the client for a while (403 or 429).
//! * **Backend failures** follow [`FailurePolicy`]: by default the request proceeds; a 503 only
//!   when configured to fail closed. Nothing here panics on a request.
//!
//! An in-process check adds no allocation beyond the key (and none for keys up to 46 bytes),
//! apart from one small string for the IETF `RateLimit` header when that style is on.
//!
//! ```
//! use axum::{routing::get, Router};
//! use tollgate::http::{HttpKey, KeyBy, RateLimitLayer, Rule};
//! use tollgate::{KeyedLimiter, Quota};
//!
//! let per_ip = Rule::new("per-ip", KeyedLimiter::<HttpKey>::new(Quota::per_second(10).unwrap()))
//!     .unwrap()
//!     .key(KeyBy::ClientIp);
//! let layer = RateLimitLayer::builder().rule(per_ip).build();
//! // `same_body`: responses keep axum's body type (no second box per response).
//! let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(layer.same_body());
//! // axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
//! ```
//!
//! A layer added with `Router::layer` costs a second boxed-service clone and boxed future per
//! request in axum, whatever the layer does (two allocations, ~890 instructions). On a hot path,
//! wrap the finished router instead (`tower` as a dependency). The layer then runs before
//! routing and outside the router's middleware: there is no `MatchedPath`, so route rules match
//! by path prefix only (a rule registered as `/users/{id}` never applies: register `/users`),
//! and `KeyBy::Route` keys by the raw path:
//!
//! ```
//! # use axum::{routing::get, Router};
//! # use tollgate::http::{HttpKey, KeyBy, RateLimitLayer, Rule};
//! # use tollgate::{KeyedLimiter, Quota};
//! # let per_ip = Rule::new("per-ip", KeyedLimiter::<HttpKey>::new(Quota::per_second(10).unwrap())).unwrap();
//! # let layer = RateLimitLayer::builder().rule(per_ip).build();
//! // `with_state` turns the routes into services once (else every request would).
//! let router: Router = Router::new().route("/", get(|| async { "hello" })).with_state(());
//! let app = tower::Layer::layer(&layer.same_body(), router);
//! let make = axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
//!     std::net::SocketAddr,
//! >(app);
//! // axum::serve(listener, make)
//! # let _ = make;
//! ```

#[cfg(feature = "axum")]
pub mod admin;
mod backend;
mod ban;
pub mod client_ip;
mod headers;
mod key;
mod rules;

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use crossbeam_utils::CachePadded;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use tower_layer::Layer;
use tower_service::Service;

pub use backend::{AsyncKeys, Check, CheckFuture, HttpLimiter, Listed, StrKeys};
pub use ban::{AutoBan, DEFAULT_BAN_KEYS};
pub use client_ip::ClientIpConfig;
pub use headers::{ceil_secs, policy_value, HeaderStyle};
pub use key::{HttpKey, KeyBuilder, KeyBy, PeerAddr, RequestInfo, MAX_KEY_LEN};
pub use rules::{AlgorithmKind, Mode, RateLimitDecision, Rule, RuleError, UnknownAlgorithm};

use crate::algorithm::Receipt;
use crate::decision::{CheckError, Decision};
use crate::quota::Quota;
use headers::{problem, write_headers, write_retry_after, PolicyRef};
use rules::{prefix_matches, RuleSet};

/// The response body of a rate-limited service under [`Wrapped`] (the default): the inner
/// body, or the middleware's own (problem+json).
pub type RateLimitBody<B> = Either<B, Full<Bytes>>;

/// How [`RateLimit`]'s responses carry bodies when the inner service's have type `B`. A
/// response of the inner service keeps its body, converted by [`pass`](BodyMode::pass); the
/// middleware's own 429, 403 and 503 carry a short problem+json body, made by
/// [`own`](BodyMode::own).
///
/// [`Wrapped`] (the default) works with every body type: responses are
/// `Response<Either<B, Full<Bytes>>>`. [`Same`] keeps the inner body type for bodies that can
/// be made from [`Bytes`] (axum's `Body`, `Full<Bytes>`): axum then needs no second box per
/// response around the layer's body (an allocation and an indirection per request saved). For
/// a body type that is neither, implement this trait on a marker type of your own and select it
/// with [`RateLimitLayer::body_mode`].
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use tollgate::http::{BodyMode, Same};
/// let body: Full<Bytes> = <Same as BodyMode<Full<Bytes>>>::own(Bytes::from_static(b"{}"));
/// # let _ = body;
/// ```
pub trait BodyMode<B>: Send + Sync + 'static {
    /// The response body type.
    type Body;

    /// The body of an inner service's response.
    ///
    /// ```
    /// use tollgate::http::{BodyMode, Wrapped};
    /// let body = <Wrapped as BodyMode<String>>::pass("hi".to_owned());
    /// assert!(matches!(body, http_body_util::Either::Left(ref s) if s == "hi"));
    /// ```
    fn pass(body: B) -> Self::Body;

    /// The body of one of the middleware's own responses (problem+json bytes).
    ///
    /// ```
    /// use bytes::Bytes;
    /// use tollgate::http::{BodyMode, Wrapped};
    /// let body = <Wrapped as BodyMode<String>>::own(Bytes::from_static(b"{}"));
    /// assert!(matches!(body, http_body_util::Either::Right(_)));
    /// ```
    fn own(bytes: Bytes) -> Self::Body;
}

/// The default [`BodyMode`]: [`RateLimitBody<B>`], for any inner body.
///
/// ```
/// use tollgate::http::{BodyMode, Wrapped};
/// let body = <Wrapped as BodyMode<String>>::pass("hi".to_owned());
/// assert!(matches!(body, http_body_util::Either::Left(_)));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Wrapped;

impl<B> BodyMode<B> for Wrapped {
    type Body = RateLimitBody<B>;

    #[inline]
    fn pass(body: B) -> RateLimitBody<B> {
        Either::Left(body)
    }

    fn own(bytes: Bytes) -> RateLimitBody<B> {
        Either::Right(Full::new(bytes))
    }
}

/// The [`BodyMode`] that keeps the inner body type (`B: From<Bytes>`); select it with
/// [`RateLimitLayer::same_body`].
///
/// ```
/// use bytes::Bytes;
/// use tollgate::http::{BodyMode, Same};
/// let body: http_body_util::Full<Bytes> = <Same as BodyMode<_>>::pass(Bytes::from_static(b"ok").into());
/// # let _ = body;
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Same;

impl<B: From<Bytes>> BodyMode<B> for Same {
    type Body = B;

    #[inline]
    fn pass(body: B) -> B {
        body
    }

    fn own(bytes: Bytes) -> B {
        B::from(bytes)
    }
}

/// What to do when a limiter fails (a remote backend down, a full key table).
///
/// ```
/// use tollgate::http::FailurePolicy;
/// assert_eq!(FailurePolicy::default(), FailurePolicy::FailOpen);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Let the request through (counted in [`MetricsSnapshot::errors`]).
    #[default]
    FailOpen,
    /// Answer 503 with a problem+json body.
    FailClosed,
}

type SkipFn = dyn Fn(&RequestInfo<'_>) -> bool + Send + Sync;

pub(crate) struct State {
    rules: ArcSwap<RuleSet>,
    ip: ClientIpConfig,
    skip_paths: Vec<String>,
    skip_methods: Vec<Method>,
    skip_if: Option<Arc<SkipFn>>,
    style: HeaderStyle,
    ban: Option<AutoBan>,
    on_error: FailurePolicy,
    metrics: Metrics,
}

/// A tower [`Layer`] that rate-limits requests. Cheap to clone (one `Arc`); clones share rules,
/// limiters and counters. Build it with [`RateLimitLayer::builder`]; `M` is how responses
/// carry bodies ([`BodyMode`]; with axum, [`same_body`](RateLimitLayer::same_body) saves an
/// allocation per response).
pub struct RateLimitLayer<M = Wrapped> {
    state: Arc<State>,
    mode: PhantomData<fn() -> M>,
}

impl<M> Clone for RateLimitLayer<M> {
    fn clone(&self) -> Self {
        RateLimitLayer { state: Arc::clone(&self.state), mode: PhantomData }
    }
}

impl<M> fmt::Debug for RateLimitLayer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("rules", &self.state.rules.load())
            .field("body_mode", &std::any::type_name::<M>())
            .finish_non_exhaustive()
    }
}

impl RateLimitLayer {
    /// The same layer (sharing rules, limiters and counters) with responses that keep the inner
    /// service's body type ([`Same`]): for axum (`axum::body::Body: From<Bytes>`), whose router
    /// would otherwise box the layer's [`RateLimitBody`] once more on every response.
    ///
    /// ```
    /// use tollgate::http::{RateLimitLayer, Same};
    /// let layer: RateLimitLayer<Same> = RateLimitLayer::builder().build().same_body();
    /// # let _ = layer;
    /// ```
    pub fn same_body(self) -> RateLimitLayer<Same> {
        self.body_mode()
    }

    /// A builder with no rules (which limits nothing).
    pub fn builder() -> RateLimitLayerBuilder {
        RateLimitLayerBuilder {
            rules: RuleSet::default(),
            ip: ClientIpConfig::default(),
            skip_paths: Vec::new(),
            skip_methods: Vec::new(),
            skip_if: None,
            style: HeaderStyle::default(),
            ban: None,
            on_error: FailurePolicy::default(),
        }
    }
}

impl<M> RateLimitLayer<M> {
    /// The same layer (sharing rules, limiters and counters) with another [`BodyMode`]: one of
    /// your own for a body type that is neither wrapped nor made from [`Bytes`].
    ///
    /// ```
    /// use bytes::Bytes;
    /// use tollgate::http::{BodyMode, RateLimitLayer, Wrapped};
    ///
    /// /// Bodies as plain strings; the middleware's own are UTF-8 JSON.
    /// struct Text;
    /// impl BodyMode<String> for Text {
    ///     type Body = String;
    ///     fn pass(body: String) -> String {
    ///         body
    ///     }
    ///     fn own(bytes: Bytes) -> String {
    ///         String::from_utf8_lossy(&bytes).into_owned()
    ///     }
    /// }
    /// let layer: RateLimitLayer<Text> = RateLimitLayer::builder().build().body_mode();
    /// let back: RateLimitLayer<Wrapped> = layer.body_mode();
    /// # let _ = back;
    /// ```
    pub fn body_mode<N>(self) -> RateLimitLayer<N> {
        RateLimitLayer { state: self.state, mode: PhantomData }
    }

    /// The counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.state.metrics.snapshot()
    }

    /// Evicts idle keys from every rule's limiter ([`HttpLimiter::sweep_http`]) and from the
    /// auto-ban's strike and ban tables; returns how many. Eviction changes no decision.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::http::{HttpKey, KeyBy, Listed, RateLimitLayer, Rule};
    /// use tollgate::{KeyedLimiter, ManualClock, Quota};
    /// let clock = ManualClock::new();
    /// let limiter = Listed(KeyedLimiter::<HttpKey, _>::with_clock(Quota::per_second(1).unwrap(), clock.clone()));
    /// let _ = limiter.0.check(&HttpKey::new("a"));
    /// let layer = RateLimitLayer::builder().rule(Rule::new("r", limiter).unwrap()).build();
    /// clock.advance(Duration::from_secs(1));
    /// assert_eq!(layer.sweep(), 1);
    /// ```
    pub fn sweep(&self) -> usize {
        self.state.sweep()
    }

    /// Starts a background thread that calls [`sweep`](Self::sweep) every `interval` (at least
    /// [`MIN_SWEEP_INTERVAL`](crate::MIN_SWEEP_INTERVAL)), so idle clients' state does
    /// not accumulate; rules added later are swept too. It holds a weak reference (it stops
    /// when every clone of the layer is dropped) and stops when the handle is dropped.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::http::RateLimitLayer;
    /// let layer = RateLimitLayer::builder().build();
    /// let sweeper = layer.spawn_sweeper(Duration::from_secs(10));
    /// assert!(sweeper.is_running());
    /// ```
    pub fn spawn_sweeper(&self, interval: std::time::Duration) -> crate::SweeperHandle {
        crate::keyed::spawn_sweep_thread(Arc::downgrade(&self.state), interval, |state| {
            state.sweep();
        })
    }

    /// The rules in force: `(route pattern or None for global, rule)`.
    pub fn rules(&self) -> Vec<(Option<String>, Rule)> {
        let set = self.state.rules.load();
        let global = set.global.iter().map(|r| (None, r.clone()));
        global.chain(set.routes.iter().map(|(p, r)| (Some(p.clone()), r.clone()))).collect()
    }

    /// Replaces the rule named `name` (wherever it applies) by `rule`, in one atomic swap;
    /// `false` if there is no such rule, and also, changing nothing, if `rule` would break what
    /// [`add_rule`](Self::add_rule) guarantees: its name is another rule's
    /// ([`RuleError::Exists`]), or at the replaced rule's route another rule already covers
    /// some of `rule`'s methods ([`RuleError::RouteTaken`]).
    /// [`replace_rule_at`](Self::replace_rule_at) does the same and says which. Requests
    /// already past the rule lookup finish under the old one.
    ///
    /// ```
    /// use tollgate::http::{HttpKey, RateLimitLayer, Rule};
    /// use tollgate::{KeyedLimiter, Quota};
    /// let rule = |name, n| Rule::new(name, KeyedLimiter::<HttpKey>::new(Quota::per_second(n).unwrap())).unwrap();
    /// let layer = RateLimitLayer::builder().rule(rule("r", 1)).rule(rule("s", 1)).build();
    /// assert!(layer.replace_rule("r", rule("r", 5)));
    /// assert_eq!(layer.rules()[0].1.quota().count(), 5);
    /// // Names stay unique: "s" is taken.
    /// assert!(!layer.replace_rule("r", rule("s", 9)));
    /// assert_eq!(layer.rules()[0].1.name(), "r");
    /// ```
    pub fn replace_rule(&self, name: &str, rule: Rule) -> bool {
        let mut replaced = false;
        self.state.rules.rcu(|set| {
            replaced = set.contains(name)
                && (*rule.name == *name || !set.contains(&rule.name))
                && !set
                    .routes
                    .iter()
                    .any(|(p, r)| &*r.name == name && set.route_taken(Some(p), &rule, Some(name)));
            let mut set = RuleSet::clone(set);
            if replaced {
                let all = set.global.iter_mut().chain(set.routes.iter_mut().map(|(_, r)| r));
                for r in all.filter(|r| &*r.name == name) {
                    *r = rule.clone();
                }
            }
            set
        });
        replaced
    }

    /// Adds `rule` to the running layer: for the route `pattern` (as
    /// [`RateLimitLayerBuilder::route`]), or for every request with `None`. Requests that start
    /// after this see it; the swap is atomic (no request sees half a change) and the check path
    /// takes no lock. Names are unique: a second rule with a name in use is
    /// [`RuleError::Exists`]; a route rule where another already covers the same pattern for
    /// some of its methods (it would never apply) is [`RuleError::RouteTaken`].
    ///
    /// ```
    /// use tollgate::http::{HttpKey, RateLimitLayer, Rule, RuleError};
    /// use tollgate::{KeyedLimiter, Quota};
    /// let rule = |n| Rule::new("login", KeyedLimiter::<HttpKey>::new(Quota::per_minute(n).unwrap())).unwrap();
    /// let layer = RateLimitLayer::builder().build();
    /// layer.add_rule(Some("/login"), rule(5)).unwrap();
    /// assert_eq!(layer.add_rule(None, rule(9)), Err(RuleError::Exists));
    /// assert_eq!(layer.rules()[0].0.as_deref(), Some("/login"));
    /// ```
    pub fn add_rule(&self, pattern: Option<&str>, rule: Rule) -> Result<(), RuleError> {
        let mut outcome = Ok(());
        self.state.rules.rcu(|set| {
            outcome = if set.contains(&rule.name) {
                Err(RuleError::Exists)
            } else if set.route_taken(pattern, &rule, None) {
                Err(RuleError::RouteTaken)
            } else {
                Ok(())
            };
            let mut set = RuleSet::clone(set);
            if outcome.is_ok() {
                set.insert(pattern, rule.clone());
            }
            set
        });
        outcome
    }

    /// Replaces the rule named `name` by `rule`, which now applies to `pattern` (a route, or
    /// every request with `None`), in one atomic swap. `Ok(false)` if there is no such rule;
    /// the errors of [`add_rule`](Self::add_rule) if `rule` takes another rule's name or route.
    /// Nothing changes unless it returns `Ok(true)`.
    ///
    /// ```
    /// use tollgate::http::{HttpKey, RateLimitLayer, Rule};
    /// use tollgate::{KeyedLimiter, Quota};
    /// let rule = |n| Rule::new("r", KeyedLimiter::<HttpKey>::new(Quota::per_second(n).unwrap())).unwrap();
    /// let layer = RateLimitLayer::builder().rule(rule(1)).build();
    /// assert_eq!(layer.replace_rule_at("r", Some("/api"), rule(5)), Ok(true));
    /// let rules = layer.rules();
    /// assert_eq!((rules[0].0.as_deref(), rules[0].1.quota().count()), (Some("/api"), 5));
    /// ```
    pub fn replace_rule_at(&self, name: &str, pattern: Option<&str>, rule: Rule) -> Result<bool, RuleError> {
        let mut outcome = Ok(false);
        self.state.rules.rcu(|set| {
            outcome = if !set.contains(name) {
                Ok(false)
            } else if *rule.name != *name && set.contains(&rule.name) {
                Err(RuleError::Exists)
            } else if set.route_taken(pattern, &rule, Some(name)) {
                Err(RuleError::RouteTaken)
            } else {
                Ok(true)
            };
            let mut set = RuleSet::clone(set);
            if outcome == Ok(true) {
                set.remove(name);
                set.insert(pattern, rule.clone());
            }
            set
        });
        outcome
    }

    /// Removes the rule named `name`; `false` if there is none. Requests already past the rule
    /// lookup finish under it.
    ///
    /// ```
    /// use tollgate::http::{HttpKey, RateLimitLayer, Rule};
    /// use tollgate::{KeyedLimiter, Quota};
    /// let rule = Rule::new("r", KeyedLimiter::<HttpKey>::new(Quota::per_second(1).unwrap())).unwrap();
    /// let layer = RateLimitLayer::builder().rule(rule).build();
    /// assert!(layer.remove_rule("r"));
    /// assert!(!layer.remove_rule("r"));
    /// assert!(layer.rules().is_empty());
    /// ```
    pub fn remove_rule(&self, name: &str) -> bool {
        let mut removed = false;
        self.state.rules.rcu(|set| {
            let mut set = RuleSet::clone(set);
            removed = set.remove(name);
            set
        });
        removed
    }

    /// The auto-ban table, if configured.
    pub fn auto_ban(&self) -> Option<&AutoBan> {
        self.state.ban.as_ref()
    }

    /// The client-address configuration.
    pub fn client_ip_config(&self) -> &ClientIpConfig {
        &self.state.ip
    }
}

impl<S, M> Layer<S> for RateLimitLayer<M> {
    type Service = RateLimit<S, M>;

    fn layer(&self, inner: S) -> RateLimit<S, M> {
        RateLimit { inner, state: Arc::clone(&self.state), mode: PhantomData }
    }
}

/// Configures a [`RateLimitLayer`].
///
/// ```
/// use std::time::Duration;
/// use tollgate::http::{AutoBan, HeaderStyle, HttpKey, KeyBy, RateLimitLayer, Rule};
/// use tollgate::{KeyedLimiter, Quota};
/// let limiter = |q: &str| KeyedLimiter::<HttpKey>::new(q.parse().unwrap());
/// let layer = RateLimitLayer::builder()
///     .rule(Rule::new("global", limiter("1000/s")).unwrap().key(KeyBy::Global))
///     .route("/login", Rule::new("login", limiter("5/m")).unwrap().methods([http::Method::POST]))
///     .skip_path("/healthz")
///     .header_style(HeaderStyle::Both)
///     .auto_ban(AutoBan::new(20, Duration::from_secs(60), Duration::from_secs(600)).unwrap())
///     .build();
/// ```
pub struct RateLimitLayerBuilder {
    rules: RuleSet,
    ip: ClientIpConfig,
    skip_paths: Vec<String>,
    skip_methods: Vec<Method>,
    skip_if: Option<Arc<SkipFn>>,
    style: HeaderStyle,
    ban: Option<AutoBan>,
    on_error: FailurePolicy,
}

impl fmt::Debug for RateLimitLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayerBuilder").field("rules", &self.rules).finish_non_exhaustive()
    }
}

impl RateLimitLayerBuilder {
    /// Adds a rule that applies to every request (subject to its methods).
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.global.push(rule);
        self
    }

    /// Adds a rule for one route: `pattern` is compared with axum's `MatchedPath` (e.g.
    /// `/users/{id}`), and otherwise used as a path prefix (`/api` covers `/api/x`; the longest
    /// matching prefix wins; `/` covers every path without a rule of its own). At most one
    /// route rule applies to a request. Both are full paths, also for a layer inside
    /// `Router::nest` ([`RequestInfo::path`]).
    pub fn route(mut self, pattern: &str, rule: Rule) -> Self {
        self.rules.add_route(pattern.to_owned(), rule);
        self
    }

    /// How client addresses are found (trusted proxies, IPv6 bucketing).
    pub fn client_ip(mut self, config: ClientIpConfig) -> Self {
        self.ip = config;
        self
    }

    /// Requests under this path prefix (a full path, see [`RequestInfo::path`]) are not
    /// limited (and get no headers).
    pub fn skip_path(mut self, prefix: &str) -> Self {
        self.skip_paths.push(prefix.to_owned());
        self
    }

    /// Requests with this method are not limited (e.g. `OPTIONS`). Skipping `GET` skips `HEAD`
    /// too, as a rule on `GET` limits `HEAD` ([`Rule::methods`]): a server answers `HEAD` by
    /// running the `GET` handler, so the two are one way in to the same handler.
    ///
    /// ```
    /// use tollgate::http::RateLimitLayer;
    /// let layer = RateLimitLayer::builder().skip_method(http::Method::OPTIONS).build();
    /// # let _ = layer;
    /// ```
    pub fn skip_method(mut self, method: Method) -> Self {
        let head = method == Method::GET;
        for m in std::iter::once(method).chain(head.then_some(Method::HEAD)) {
            if !self.skip_methods.contains(&m) {
                self.skip_methods.push(m);
            }
        }
        self
    }

    /// Requests for which `predicate` is true are not limited (internal addresses, health
    /// checks, …). Inside `Router::nest`, `req.path()` is the full path and `req.uri` the one
    /// the nested router sees ([`RequestInfo::path`]).
    ///
    /// ```
    /// use tollgate::http::RateLimitLayer;
    /// let layer = RateLimitLayer::builder()
    ///     .skip_if(|req| req.client_ip().is_some_and(|ip| ip.is_loopback()))
    ///     .build();
    /// ```
    pub fn skip_if(mut self, predicate: impl Fn(&RequestInfo<'_>) -> bool + Send + Sync + 'static) -> Self {
        self.skip_if = Some(Arc::new(predicate));
        self
    }

    /// Which rate-limit headers to send (default both styles).
    pub fn header_style(mut self, style: HeaderStyle) -> Self {
        self.style = style;
        self
    }

    /// Bans clients after repeated denials.
    pub fn auto_ban(mut self, ban: AutoBan) -> Self {
        self.ban = Some(ban);
        self
    }

    /// What to do when a limiter fails (default [`FailurePolicy::FailOpen`]).
    pub fn on_error(mut self, policy: FailurePolicy) -> Self {
        self.on_error = policy;
        self
    }

    /// The layer.
    pub fn build(self) -> RateLimitLayer {
        RateLimitLayer {
            state: Arc::new(State {
                rules: ArcSwap::from_pointee(self.rules),
                ip: self.ip,
                skip_paths: self.skip_paths,
                skip_methods: self.skip_methods,
                skip_if: self.skip_if,
                style: self.style,
                ban: self.ban,
                on_error: self.on_error,
                metrics: Metrics::default(),
            }),
            mode: PhantomData,
        }
    }
}

/// The rate-limiting [`Service`] made by [`RateLimitLayer`].
pub struct RateLimit<S, M = Wrapped> {
    inner: S,
    state: Arc<State>,
    mode: PhantomData<fn() -> M>,
}

impl<S: Clone, M> Clone for RateLimit<S, M> {
    fn clone(&self) -> Self {
        RateLimit { inner: self.inner.clone(), state: Arc::clone(&self.state), mode: PhantomData }
    }
}

impl<S: fmt::Debug, M> fmt::Debug for RateLimit<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit").field("inner", &self.inner).finish_non_exhaustive()
    }
}

/// What the headers of a passing response report: the most restrictive blocking or annotating
/// rule's decision.
struct Report {
    decision: Decision,
    quota: Quota,
    policy: PolicyRef,
}

enum Denial {
    /// The retry time, and whether it is the client's doing (an auto-ban strike): a backend's
    /// fail-closed answer (`Origin::Fallback`) is not.
    Limited(Duration, bool),
    /// A rule's key table is full ([`CheckError::KeyLimit`]): no decision of that rule to
    /// report, and not the client's fault (no auto-ban strike).
    KeyLimit(Duration),
    TooCostly,
    Unavailable,
}

/// What a 429 for a full key table asks the client to wait: by then an inline sweep has
/// usually freed room.
const KEY_LIMIT_RETRY: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Acc {
    report: Option<Report>,
    deny: Option<Denial>,
    note: Option<RateLimitDecision>,
    /// The address of a rule already known to strike for this request
    /// ([`State::refusing_rule`] asked), 0 for none: its refusal does not run the key's
    /// extractors again.
    strikes: usize,
}

/// A rule's identity within one request (the rule set is held for the whole request).
fn rule_address(rule: &Rule) -> usize {
    std::ptr::from_ref(rule) as usize
}

/// Whether `a` is more restrictive than `b` (denied beats allowed, then fewer remaining).
fn tighter(a: &Decision, b: &Decision) -> bool {
    (!a.is_allowed() && b.is_allowed()) || (a.is_allowed() == b.is_allowed() && a.remaining() < b.remaining())
}

impl Acc {
    fn apply(
        &mut self,
        state: &State,
        req: &RequestInfo<'_>,
        rule: &Rule,
        key: &HttpKey,
        result: Result<Decision, CheckError>,
    ) {
        let decision = match result {
            Ok(d) => d,
            Err(e) => return self.failed(state, rule, key, e),
        };
        if rule.mode != Mode::Shadow
            && state.style != HeaderStyle::None
            // A backend's fail-open pass knows nothing of the key: `remaining 0` in its headers
            // would tell well-behaved clients to stop while the backend is down.
            && decision.origin() != crate::decision::Origin::Unchecked
            && (self.report.as_ref().is_none_or(|r| tighter(&decision, &r.decision))
                // The refusing rule's own numbers go with its Retry-After.
                || (rule.mode == Mode::Block && self.deny.is_none() && !decision.is_allowed()))
        {
            // The key's own quota only matters to `RateLimit-Policy` (a per-key override).
            let quota = if state.style == HeaderStyle::Legacy {
                rule.policy.quota
            } else {
                rule.limiter.quota_http(key)
            };
            self.report = Some(Report { decision, quota, policy: rule.policy.clone() });
        }
        match rule.mode {
            Mode::Block => {
                if let (Some(retry), None) = (decision.retry_after(), &self.deny) {
                    // Not a strike: a fail-closed backend's answer, or a bucket every client
                    // shares (`Rule::ban_strikes`).
                    // (Asked only with an auto-ban, for the first refusal: the deny path stays
                    // as short as it was, and a custom extractor is not run again for nothing.)
                    let strike = state.ban.is_some()
                        && decision.origin() != crate::decision::Origin::Fallback
                        && (self.strikes == rule_address(rule) || rule.strikes(req));
                    self.deny = Some(Denial::Limited(retry, strike));
                }
            }
            Mode::Annotate | Mode::Shadow => self.annotate(state, rule, key, decision),
        }
    }

    /// [`apply`](Self::apply) for a failed check (out of line: its logging is long). Not cold: a
    /// flood of new keys fills the table and sends every request here (`KeyLimit`).
    #[inline(never)]
    fn failed(&mut self, state: &State, rule: &Rule, key: &HttpKey, error: CheckError) {
        match error {
            CheckError::InsufficientCapacity { .. } => {
                if rule.mode == Mode::Block {
                    self.deny.get_or_insert(Denial::TooCostly);
                }
            }
            CheckError::KeyLimit { .. } => {
                // A full key table is a limit, not a backend failure: a client that can mint
                // new keys (IPv6 /64s, header values) must not pass unlimited under FailOpen.
                if rule.mode == Mode::Block {
                    self.deny.get_or_insert(Denial::KeyLimit(KEY_LIMIT_RETRY));
                }
            }
            e => {
                state.metrics.errors.add(1);
                tracing::warn!(rule = &*rule.name, key = key.as_str(), error = %e, "rate limiter failed");
                if rule.mode == Mode::Block && state.on_error == FailurePolicy::FailClosed {
                    self.deny.get_or_insert(Denial::Unavailable);
                }
            }
        }
    }

    /// [`apply`](Self::apply) for an annotate or shadow rule: the note for the request (out of
    /// line, so the block path stays short).
    #[inline(never)]
    fn annotate(&mut self, state: &State, rule: &Rule, key: &HttpKey, decision: Decision) {
        if !decision.is_allowed() {
            state.metrics.shadow_denied.add(1);
            tracing::info!(
                rule = &*rule.name,
                key = key.as_str(),
                mode = ?rule.mode,
                "rate limit would deny (not enforced)"
            );
        }
        // A fail-open pass (`Origin::Unchecked`, remaining 0 by construction) is kept only when
        // no rule decided for real: it is no count to compare (review finding: it beat every
        // real decision, so handlers saw 0 left while Redis was down).
        let unchecked = |d: &Decision| d.origin() == crate::decision::Origin::Unchecked;
        if self.note.as_ref().is_none_or(|n| {
            !unchecked(&decision) && (unchecked(&n.decision) || tighter(&decision, &n.decision))
        }) {
            self.note = Some(RateLimitDecision { rule: rule.name.clone(), mode: rule.mode, decision });
        }
    }

    /// Records `rule`'s result for `key` (checked at `cost`, `receipt` from an allowed check).
    /// Returns `true` when the request is refused: then everything `taken` so far is refunded
    /// (a refused request takes nothing from any rule) and no further rule is checked.
    #[allow(clippy::too_many_arguments)] // one call site per path; a struct would only rename them
    fn record(
        &mut self,
        state: &State,
        req: &RequestInfo<'_>,
        rule: &Rule,
        key: HttpKey,
        cost: u32,
        result: Result<Decision, CheckError>,
        receipt: Receipt,
        taken: &mut Taken,
        last: bool,
    ) -> bool {
        // The last rule's take is never refunded (no rule after it can refuse the request), so
        // it is not kept: with one rule (the common case) the allow path clones no `Arc` (an
        // atomic increment and decrement of a count every core writes).
        let took = !last && receipt != Receipt::NONE && matches!(&result, Ok(d) if d.is_allowed());
        self.apply(state, req, rule, &key, result);
        if self.deny.is_some() {
            std::mem::take(taken).refund_all();
            return true;
        }
        if took {
            taken.push(Take { limiter: Arc::clone(&rule.limiter), key, cost, receipt });
        }
        false
    }

    /// The response to send instead of calling the service, or `None` to pass.
    fn conclude(&mut self, state: &State, ban_key: Option<&HttpKey>) -> Option<Response<Bytes>> {
        let deny = self.deny.take()?;
        state.metrics.denied.add(1);
        let mut res = match deny {
            Denial::Limited(retry, strike) => {
                if let (true, Some(ban), Some(key)) = (strike, &state.ban, ban_key) {
                    if ban.strike(key) {
                        state.metrics.bans_issued.add(1);
                        tracing::warn!(key = key.as_str(), "auto-ban: key banned");
                        // Answer as the ban does: the rule's `Retry-After` would send the
                        // client back into the ban.
                        if let Some(left) = ban.banned(key) {
                            return Some(ban.response(left));
                        }
                    }
                }
                if let Some(r) = &self.report {
                    return Some(headers::refusal(state.style, &r.policy, &r.quota, &r.decision, retry));
                }
                let mut res = problem(StatusCode::TOO_MANY_REQUESTS, headers::TOO_MANY);
                write_retry_after(res.headers_mut(), retry);
                res
            }
            // The headers of the rules checked so far describe their allowed decisions (the
            // full rule has none): sent with this 429 they would say requests remain. A plain
            // 429 with `Retry-After`, and no strike: new clients are refused while the table is
            // full through no fault of theirs, and banning them would outlast the congestion.
            Denial::KeyLimit(retry) => {
                let mut res = problem(StatusCode::TOO_MANY_REQUESTS, headers::TOO_MANY);
                write_retry_after(res.headers_mut(), retry);
                return Some(res);
            }
            // No `Retry-After`: waiting never makes the request cheaper.
            Denial::TooCostly => problem(StatusCode::TOO_MANY_REQUESTS, headers::TOO_COSTLY),
            Denial::Unavailable => problem(StatusCode::SERVICE_UNAVAILABLE, headers::UNAVAILABLE),
        };
        if let Some(report) = &self.report {
            write_headers(res.headers_mut(), state.style, &report.policy, &report.quota, &report.decision);
        }
        Some(res)
    }
}

enum Step {
    Skip,
    Respond(Response<Bytes>),
    /// The request passes; what to report is in the caller's [`Acc`] (filled in place: the
    /// accumulator is ~200 bytes, and moving it out in the step cost a copy per request).
    Pass,
    // Boxed: the remote path allocates a future anyway, and Step stays small on the local one.
    Async(Box<Resume>),
}

/// Where the rule checks stopped because one needs a round trip.
struct Pending {
    /// The rule checked first ([`State::refusing_rule`]).
    first: Option<usize>,
    /// The position, in [`RuleSet::ordered`], of the rule whose check is in flight.
    index: usize,
    key: HttpKey,
    cost: u32,
    check: CheckFuture,
    taken: Taken,
}

/// Where [`State::first_pass`] stopped because a check needs a round trip.
struct Resume {
    rules: Arc<RuleSet>,
    pending: Pending,
    acc: Acc,
    ban_key: Option<HttpKey>,
}

impl Resume {
    /// Out of line (not cold: every request of a remote-only layer comes here): the remote path
    /// allocates anyway, and the local one stays short.
    #[inline(never)]
    fn boxed(
        rules: arc_swap::Guard<Arc<RuleSet>>,
        pending: Pending,
        acc: &mut Acc,
        ban_key: Option<HttpKey>,
    ) -> Box<Resume> {
        let rules = arc_swap::Guard::into_inner(rules);
        Box::new(Resume { rules, pending, acc: std::mem::take(acc), ban_key })
    }
}

/// One rule's refundable take: what an allowed check with a receipt consumed.
struct Take {
    limiter: Arc<dyn HttpLimiter>,
    key: HttpKey,
    cost: u32,
    receipt: Receipt,
}

/// What the rules that allowed a request so far took, where their limiters can refund it. The
/// first take is held inline, so a request that needs none or one allocates nothing for this.
#[derive(Default)]
struct Taken {
    first: Option<Take>,
    rest: Vec<Take>,
}

impl Taken {
    fn push(&mut self, take: Take) {
        match self.first {
            None => self.first = Some(take),
            Some(_) => self.rest.push(take),
        }
    }

    fn refund_all(self) {
        // Last take first: a later take on the same limiter and key (two rules sharing one)
        // was built on top of the earlier one, and GCRA only refunds an untouched TAT.
        for t in self.rest.into_iter().rev().chain(self.first) {
            // A refund that cannot be exact gives back nothing (Algorithm::refund): the request
            // then still counts against that rule, which never over-admits.
            let _ = t.limiter.refund_http(&t.key, t.cost, t.receipt);
        }
    }
}

impl State {
    fn skipped(&self, req: &RequestInfo<'_>) -> bool {
        self.skip_methods.contains(req.method)
            || self.skip_paths.iter().any(|p| prefix_matches(p, req.path()))
            || self.skip_if.as_ref().is_some_and(|f| f(req))
    }

    fn sweep(&self) -> usize {
        let rules = self.rules.load();
        let mut seen: Vec<*const ()> = Vec::new();
        let mut swept = 0;
        for rule in rules.global.iter().chain(rules.routes.iter().map(|(_, r)| r)) {
            // A limiter shared by several rules is swept once.
            let at = Arc::as_ptr(&rule.limiter).cast::<()>();
            if !seen.contains(&at) {
                seen.push(at);
                swept += rule.limiter.sweep_http();
            }
        }
        swept + self.ban.as_ref().map_or(0, AutoBan::sweep)
    }

    /// Whether the request is skipped (counted), with its path remembered for later matching
    /// where there are skip paths. Out of line, as are the bans: most layers have neither.
    #[inline(never)]
    fn skip(&self, info: &mut RequestInfo<'_>) -> bool {
        if !self.skip_paths.is_empty() {
            info.remember_path();
        }
        let skipped = self.skipped(info);
        if skipped {
            self.metrics.skipped.add(1);
        }
        skipped
    }

    /// The response if the request's client is banned; else `None`, with the ban table's key
    /// for this request in `key`.
    #[inline(never)]
    fn ban_gate(
        &self,
        ban: &AutoBan,
        info: &RequestInfo<'_>,
        key: &mut Option<HttpKey>,
    ) -> Option<Response<Bytes>> {
        let k = key.insert(ban.key.extract(info));
        let left = ban.banned(k)?;
        self.metrics.banned.add(1);
        Some(ban.response(left))
    }

    fn first_pass(&self, info: &mut RequestInfo<'_>, acc: &mut Acc) -> Step {
        let skips = !self.skip_paths.is_empty() || !self.skip_methods.is_empty() || self.skip_if.is_some();
        if skips && self.skip(info) {
            return Step::Skip;
        }
        let mut ban_key = None;
        if let Some(ban) = &self.ban {
            if let Some(res) = self.ban_gate(ban, info, &mut ban_key) {
                return Step::Respond(res);
            }
        }
        let rules = self.rules.load();
        if rules.has_routes() {
            info.remember_routing();
        }
        let req = &*info;
        let pending = if rules.len() == 1 {
            // One rule, the common case: no order to choose and nothing to refund (the last
            // rule's take never is), so none of the loop's bookkeeping, and only this inline:
            // the rest of the request path runs out of the first-level instruction cache, so
            // every line this path touches is a miss per request (cachegrind under wrk).
            match rules.lone(req) {
                Some(rule) => {
                    let key = rule.key.extract(req);
                    let cost = rule.cost_of(req);
                    match rule.limiter.check_http(&key, cost) {
                        Check::Ready(result) => {
                            acc.apply(self, req, rule, &key, result);
                            None
                        }
                        Check::Pending(check) => {
                            Some(Pending { first: None, index: 0, key, cost, check, taken: Taken::default() })
                        }
                    }
                }
                None => None,
            }
        } else {
            self.check_rules(&rules, req, acc)
        };
        if let Some(pending) = pending {
            return Step::Async(Resume::boxed(rules, pending, acc, ban_key));
        }
        if acc.deny.is_none() {
            return Step::Pass;
        }
        match acc.conclude(self, ban_key.as_ref()) {
            Some(res) => Step::Respond(res),
            None => Step::Pass,
        }
    }

    /// [`first_pass`](Self::first_pass) with several rules: the one that would refuse first,
    /// then the others in order, refunding what was taken when one refuses. `Some` when a check
    /// needs a round trip.
    #[inline(never)]
    fn check_rules(&self, rules: &RuleSet, req: &RequestInfo<'_>, acc: &mut Acc) -> Option<Pending> {
        let first = self.refusing_rule(rules, req, acc);
        let mut taken = Taken::default();
        let mut ordered = rules.ordered(req, first).enumerate().peekable();
        while let Some((index, rule)) = ordered.next() {
            let key = rule.key.extract(req);
            let cost = rule.cost_of(req);
            match rule.limiter.check_http_with_receipt(&key, cost) {
                (Check::Ready(result), receipt) => {
                    let last = ordered.peek().is_none();
                    if acc.record(self, req, rule, key, cost, result, receipt, &mut taken, last) {
                        break;
                    }
                }
                (Check::Pending(check), _) => return Some(Pending { first, index, key, cost, check, taken }),
            }
        }
        None
    }

    /// With several rules, the position (among the matching rules) of a blocking rule after
    /// the first that would refuse this request now, judged by a cost-0 check that consumes
    /// nothing. That rule is then checked first, so a request it refuses takes nothing from
    /// the others: exact for every limiter, remote ones included. Refunds
    /// ([`HttpLimiter::refund_http`]) cover what this cannot see: a race between this look and
    /// the checks, or a remote rule (not looked at here, to save the round trip).
    fn refusing_rule(&self, rules: &RuleSet, req: &RequestInfo<'_>, acc: &mut Acc) -> Option<usize> {
        if rules.len() < 2 {
            return None; // a lone rule is checked first anyway
        }
        let mut matching = rules.matching(req).enumerate();
        // The first matching rule is checked first anyway, so it is looked at only when strikes
        // matter: a shared rule after it must not be moved in front of a client's own first
        // rule that refuses and strikes (review finding: with the client's rule first and a
        // site-wide one second, the site's refusal came first and the client was never banned).
        let banning = self.ban.is_some();
        if !banning {
            matching.next()?;
        }
        let mut first = None;
        for (index, rule) in matching {
            if rule.mode != Mode::Block {
                continue;
            }
            let key = rule.key.extract(req);
            let cost = u64::from(rule.cost_of(req));
            if let Check::Ready(Ok(d)) = rule.limiter.check_http(&key, 0) {
                if !d.is_allowed() || d.remaining() < cost {
                    // A refusal that is a strike first: one by a bucket others share (a site-wide
                    // limit) would end the checks before the client's own rule could count its
                    // excess (review finding: a client over its own limit was never banned
                    // while others kept the site full).
                    if !banning {
                        return Some(index);
                    }
                    if rule.strikes(req) {
                        acc.strikes = rule_address(rule);
                        return (index > 0).then_some(index);
                    }
                    first = first.or(Some(index));
                }
            }
        }
        first.filter(|&index| index > 0)
    }

    /// The rest of [`State::first_pass`] once a check needs a round trip.
    async fn finish_async(&self, info: &mut RequestInfo<'_>, resume: Box<Resume>, acc: &mut Acc) -> Step {
        let Resume { rules, pending, acc: resumed, ban_key } = *resume;
        let Pending { first, index, key, cost, check, mut taken } = pending;
        if rules.has_routes() {
            info.remember_routing();
        }
        let req = &*info;
        *acc = resumed;
        let result = check.await;
        let mut rest = rules.ordered(req, first).skip(index).peekable();
        let mut refused = match rest.next() {
            // A remote check has no receipt: it is not refunded.
            Some(rule) => {
                let last = rest.peek().is_none();
                acc.record(self, req, rule, key, cost, result, Receipt::NONE, &mut taken, last)
            }
            None => false,
        };
        while !refused {
            let Some(rule) = rest.next() else { break };
            let key = rule.key.extract(req);
            let cost = rule.cost_of(req);
            let (result, receipt) = match rule.limiter.check_http_with_receipt(&key, cost) {
                (Check::Ready(result), receipt) => (result, receipt),
                (Check::Pending(check), _) => (check.await, Receipt::NONE),
            };
            let last = rest.peek().is_none();
            refused = acc.record(self, req, rule, key, cost, result, receipt, &mut taken, last);
        }
        match acc.conclude(self, ban_key.as_ref()) {
            Some(res) => Step::Respond(res),
            None => Step::Pass,
        }
    }
}

/// Puts the note in the request and returns the header report for the response.
/// Takes from `acc` in place: moving the ~200-byte accumulator in by value cost a copy per
/// request.
fn prepare<B>(req: &mut Request<B>, acc: &mut Acc, state: &State) -> Option<Report> {
    state.metrics.allowed.add(1);
    if let Some(note) = acc.note.take() {
        req.extensions_mut().insert(note);
    }
    acc.report.take()
}

impl<S, M> RateLimit<S, M> {
    /// [`call`](Service::call) once a check needs a round trip (out of line, so the local path
    /// stays short; not cold: every request of a remote-only layer comes here).
    #[inline(never)]
    fn call_async<ReqBody, ResBody>(
        &mut self,
        mut req: Request<ReqBody>,
        resume: Box<Resume>,
    ) -> ResponseFuture<S::Future, ResBody, S::Error, M>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        ReqBody: Send + 'static,
        ResBody: Send + 'static,
        M: BodyMode<ResBody>,
    {
        let state = Arc::clone(&self.state);
        // The service that was polled ready handles this request; keep a fresh clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::boxed(Box::pin(async move {
            let mut acc = Acc::default();
            let step = {
                let mut info = RequestInfo::new(&req, &state.ip);
                state.finish_async(&mut info, resume, &mut acc).await
            };
            match step {
                Step::Pass => {
                    let report = prepare(&mut req, &mut acc, &state);
                    let mut res = inner.call(req).await?;
                    if let Some(r) = report {
                        write_headers(res.headers_mut(), state.style, &r.policy, &r.quota, &r.decision);
                    }
                    Ok(Ok(res))
                }
                Step::Respond(res) => Ok(Err(res)),
                // finish_async only passes or responds.
                Step::Skip | Step::Async(_) => {
                    Ok(Err(problem(StatusCode::SERVICE_UNAVAILABLE, headers::UNAVAILABLE)))
                }
            }
        }))
    }
}

impl<S, ReqBody, ResBody, M> Service<Request<ReqBody>> for RateLimit<S, M>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
    M: BodyMode<ResBody>,
{
    type Response = Response<M::Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error, M>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let mut acc = Acc::default();
        let step = self.state.first_pass(&mut RequestInfo::new(&req, &self.state.ip), &mut acc);
        let report = match step {
            Step::Skip => None,
            Step::Pass => prepare(&mut req, &mut acc, &self.state),
            Step::Respond(res) => return ResponseFuture::ready(res),
            Step::Async(resume) => return self.call_async(req, resume),
        };
        // One call site, the inner future written straight into the returned one's field.
        ResponseFuture {
            kind: Kind::Inner { future: self.inner.call(req), report, style: self.state.style },
            done: false,
            mode: PhantomData,
        }
    }
}

/// The remote path's future: the inner response (headers written) or the middleware's own.
type BoxedResponse<B, E> =
    Pin<Box<dyn Future<Output = Result<Result<Response<B>, Response<Bytes>>, E>> + Send>>;

pin_project_lite::pin_project! {
    /// The future of [`RateLimit`]'s responses.
    pub struct ResponseFuture<F, B, E, M = Wrapped> {
        #[pin]
        kind: Kind<F, B, E>,
        // The response was returned. Polling again is a caller bug; it gets a 503 rather than
        // a panic (an inner future or an `async` block polled after completion may panic). The
        // finished future, and whatever it still holds (a `ConcurrencyLimit` permit), is
        // released when this one is dropped, as with tower's own futures (`Oneshot`): dropping
        // it here, in place, cost a second copy of its drop code on the request path. hyper
        // drops a service's future as soon as it is ready.
        done: bool,
        mode: PhantomData<fn() -> M>,
    }
}

pin_project_lite::pin_project! {
    #[project = Proj]
    enum Kind<F, B, E> {
        // The inner service is running; headers are added to its response.
        Inner { #[pin] future: F, report: Option<Report>, style: HeaderStyle },
        // The middleware answered (429, 403, 503).
        Ready { response: Option<Response<Bytes>> },
        // A remote limiter is being asked.
        Boxed { future: BoxedResponse<B, E> },
    }
}

impl<F, B, E, M> ResponseFuture<F, B, E, M> {
    fn ready(response: Response<Bytes>) -> Self {
        ResponseFuture { kind: Kind::Ready { response: Some(response) }, done: false, mode: PhantomData }
    }

    fn boxed(future: BoxedResponse<B, E>) -> Self {
        ResponseFuture { kind: Kind::Boxed { future }, done: false, mode: PhantomData }
    }
}

impl<F, B, E, M> fmt::Debug for ResponseFuture<F, B, E, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<F, B, E, M> Future for ResponseFuture<F, B, E, M>
where
    F: Future<Output = Result<Response<B>, E>>,
    M: BodyMode<B>,
{
    type Output = Result<Response<M::Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let unavailable = || problem(StatusCode::SERVICE_UNAVAILABLE, headers::UNAVAILABLE);
        if *this.done {
            return Poll::Ready(Ok(unavailable().map(M::own)));
        }
        // Each arm returns its output directly: one move of the response fewer than collecting
        // it in a local first.
        match this.kind.project() {
            Proj::Inner { future, report, style } => {
                let output = std::task::ready!(future.poll(cx));
                *this.done = true;
                Poll::Ready(output.map(|mut res| {
                    if let Some(r) = report.take() {
                        write_headers(res.headers_mut(), *style, &r.policy, &r.quota, &r.decision);
                    }
                    res.map(M::pass)
                }))
            }
            Proj::Ready { response } => {
                *this.done = true;
                Poll::Ready(Ok(response.take().unwrap_or_else(unavailable).map(M::own)))
            }
            Proj::Boxed { future } => {
                let output = std::task::ready!(future.as_mut().poll(cx));
                *this.done = true;
                Poll::Ready(output.map(|res| match res {
                    Ok(res) => res.map(M::pass),
                    Err(own) => own.map(M::own),
                }))
            }
        }
    }
}

/// A counter sharded over cache lines, so requests on different threads do not contend on it.
struct Counter {
    shards: [CachePadded<AtomicU64>; SHARDS],
}

const SHARDS: usize = 8;

impl Default for Counter {
    fn default() -> Self {
        Counter { shards: std::array::from_fn(|_| CachePadded::new(AtomicU64::new(0))) }
    }
}

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

fn shard() -> usize {
    SHARD.with(|s| {
        let mut v = s.get();
        if v == usize::MAX {
            // Relaxed: only spreads threads over shards; any value is correct.
            v = NEXT_SHARD.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % SHARDS;
            s.set(v);
        }
        v
    })
}

impl Counter {
    fn add(&self, n: u64) {
        // Relaxed: a statistic; publishes nothing, and readers accept a lagging sum.
        self.shards[shard()].fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        // Relaxed: see `add`.
        self.shards.iter().map(|s| s.load(std::sync::atomic::Ordering::Relaxed)).sum()
    }
}

#[derive(Default)]
struct Metrics {
    allowed: Counter,
    denied: Counter,
    shadow_denied: Counter,
    banned: Counter,
    bans_issued: Counter,
    skipped: Counter,
    errors: Counter,
}

impl Metrics {
    fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            allowed: self.allowed.get(),
            denied: self.denied.get(),
            shadow_denied: self.shadow_denied.get(),
            banned: self.banned.get(),
            bans_issued: self.bans_issued.get(),
            skipped: self.skipped.get(),
            errors: self.errors.get(),
        }
    }
}

/// Request counters of a [`RateLimitLayer`] (since it was built; weakly consistent).
///
/// ```
/// use tollgate::http::RateLimitLayer;
/// let layer = RateLimitLayer::builder().build();
/// assert_eq!(layer.metrics().allowed, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Requests passed to the service after their rules were checked.
    pub allowed: u64,
    /// Requests answered 429 (or 503 when failing closed).
    pub denied: u64,
    /// Would-be denials of annotate/shadow rules (the requests passed).
    pub shadow_denied: u64,
    /// Requests refused because their client was banned.
    pub banned: u64,
    /// Bans issued.
    pub bans_issued: u64,
    /// Requests skipped (path, method or predicate).
    pub skipped: u64,
    /// Limiter failures.
    pub errors: u64,
}
