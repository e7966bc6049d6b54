//! Rules: which limiter applies to which requests, keyed how, in which mode.

use std::fmt;
use std::sync::Arc;

use http::Method;

use super::backend::HttpLimiter;
use super::headers::{Policy, PolicyRef};
use super::key::{HttpKey, KeyBy, RequestInfo};

/// What a rule does with a denial.
///
/// ```
/// use tollgate::http::Mode;
/// assert_eq!(Mode::default(), Mode::Block);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Mode {
    /// Deny with 429 (and rate-limit headers on every response).
    #[default]
    Block,
    /// Never deny: add the rate-limit headers and put a [`RateLimitDecision`] in the request
    /// extensions for the handler to act on.
    Annotate,
    /// Never deny, add no headers: only put a [`RateLimitDecision`] in the request extensions
    /// and log would-be denials (to try a new limit on live traffic).
    Shadow,
}

/// What a non-blocking rule decided, in the request extensions (modes [`Mode::Annotate`] and
/// [`Mode::Shadow`]). With several such rules, the most restrictive decision; a backend's
/// fail-open pass ([`Origin::Unchecked`](crate::Origin::Unchecked)) only when no other such rule
/// decided.
///
/// ```
/// use tollgate::http::RateLimitDecision;
/// fn handler(req: http::Request<()>) {
///     if let Some(d) = req.extensions().get::<RateLimitDecision>() {
///         println!("rule {} would {}", d.rule, if d.decision.is_allowed() { "allow" } else { "deny" });
///     }
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitDecision {
    /// The rule's name.
    pub rule: Arc<str>,
    /// The rule's mode.
    pub mode: Mode,
    /// The decision.
    pub decision: crate::Decision,
}

type CostFn = dyn Fn(&RequestInfo<'_>) -> u32 + Send + Sync;

/// What a request costs under a rule.
#[derive(Clone)]
pub(crate) enum Cost {
    Fixed(u32),
    Fn(Arc<CostFn>),
}

/// The algorithm a rule's limiter runs, as the admin API names it (`"algorithm"` in a rule's
/// JSON). Rules built in code may leave it unknown.
///
/// ```
/// use tollgate::http::AlgorithmKind;
/// assert_eq!("sliding_window".parse::<AlgorithmKind>(), Ok(AlgorithmKind::SlidingWindow));
/// assert_eq!(AlgorithmKind::default().as_str(), "gcra");
/// assert!("leaky".parse::<AlgorithmKind>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum AlgorithmKind {
    /// [`Gcra`](crate::Gcra) (token bucket).
    #[default]
    Gcra,
    /// [`FixedWindow`](crate::FixedWindow).
    FixedWindow,
    /// [`SlidingWindow`](crate::SlidingWindow) (approximate, two counters).
    SlidingWindow,
    /// [`SlidingLog`](crate::SlidingLog) (exact).
    SlidingLog,
}

impl AlgorithmKind {
    /// The name: `gcra`, `fixed_window`, `sliding_window` or `sliding_log`.
    ///
    /// ```
    /// assert_eq!(tollgate::http::AlgorithmKind::SlidingLog.as_str(), "sliding_log");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            AlgorithmKind::Gcra => "gcra",
            AlgorithmKind::FixedWindow => "fixed_window",
            AlgorithmKind::SlidingWindow => "sliding_window",
            AlgorithmKind::SlidingLog => "sliding_log",
        }
    }
}

/// An algorithm name that is none of [`AlgorithmKind`]'s.
///
/// ```
/// let e = "leaky".parse::<tollgate::http::AlgorithmKind>().unwrap_err();
/// assert_eq!(e.to_string(), "unknown algorithm \"leaky\" (gcra, fixed_window, sliding_window, sliding_log)");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownAlgorithm(pub String);

impl fmt::Display for UnknownAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown algorithm {:?} (gcra, fixed_window, sliding_window, sliding_log)", self.0)
    }
}

impl std::error::Error for UnknownAlgorithm {}

impl std::str::FromStr for AlgorithmKind {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<AlgorithmKind, UnknownAlgorithm> {
        match s {
            "gcra" => Ok(AlgorithmKind::Gcra),
            "fixed_window" => Ok(AlgorithmKind::FixedWindow),
            "sliding_window" => Ok(AlgorithmKind::SlidingWindow),
            "sliding_log" => Ok(AlgorithmKind::SlidingLog),
            other => Err(UnknownAlgorithm(other.chars().take(64).collect())),
        }
    }
}

/// Why a rule was rejected.
///
/// ```
/// use tollgate::http::{Rule, RuleError};
/// use tollgate::{KeyedLimiter, Quota, http::HttpKey};
/// let l: KeyedLimiter<HttpKey> = KeyedLimiter::new(Quota::per_second(1).unwrap());
/// assert!(matches!(Rule::new("has space", l), Err(RuleError::BadName)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RuleError {
    /// Rule names must be 1–64 characters of `A-Z a-z 0-9 - _ . :` (they go into headers).
    BadName,
    /// A rule with this name is already in force (names identify rules at runtime).
    Exists,
    /// Another rule already covers this route for some of these methods (at most one route
    /// rule applies to a request, so the new one would never apply).
    RouteTaken,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleError::BadName => f.write_str("rule names are 1-64 characters of A-Z a-z 0-9 - _ . :"),
            RuleError::Exists => f.write_str("a rule with this name already exists"),
            RuleError::RouteTaken => {
                f.write_str("another rule already covers this route for some of these methods")
            }
        }
    }
}

impl std::error::Error for RuleError {}

/// One limit: a limiter, how requests are keyed, how much each costs, which methods it applies
/// to, and its [`Mode`]. Where it applies (everywhere or one route) is chosen when it is added
/// to the layer ([`RateLimitLayerBuilder::rule`](super::RateLimitLayerBuilder::rule) /
/// [`route`](super::RateLimitLayerBuilder::route)).
///
/// ```
/// use tollgate::http::{HttpKey, KeyBy, Mode, Rule};
/// use tollgate::{KeyedLimiter, Quota};
/// let rule = Rule::new("login", KeyedLimiter::<HttpKey>::new(Quota::per_minute(5).unwrap()))
///     .unwrap()
///     .key(KeyBy::ClientIp)
///     .methods([http::Method::POST])
///     .mode(Mode::Block);
/// ```
#[derive(Clone)]
pub struct Rule {
    pub(crate) name: Arc<str>,
    pub(crate) limiter: Arc<dyn HttpLimiter>,
    pub(crate) key: KeyBy,
    pub(crate) mode: Mode,
    pub(crate) cost: Cost,
    pub(crate) methods: Option<Arc<[Method]>>,
    pub(crate) policy: PolicyRef,
    pub(crate) algorithm: Option<AlgorithmKind>,
    /// Whether this rule's denials are auto-ban strikes (`None`: unless its key is shared).
    pub(crate) strikes: Option<bool>,
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rule")
            .field("name", &self.name)
            .field("key", &self.key)
            .field("mode", &self.mode)
            .field("methods", &self.methods)
            .field("quota", &self.policy.quota)
            .finish_non_exhaustive()
    }
}

impl Rule {
    /// A blocking rule named `name`, keyed by client address, cost 1, all methods.
    pub fn new(name: &str, limiter: impl HttpLimiter) -> Result<Rule, RuleError> {
        Rule::from_arc(name, Arc::new(limiter))
    }

    /// The same with a shared limiter (e.g. one you also hand to the admin API).
    pub fn from_arc(name: &str, limiter: Arc<dyn HttpLimiter>) -> Result<Rule, RuleError> {
        let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':');
        if name.is_empty() || name.len() > 64 || !name.bytes().all(ok) {
            return Err(RuleError::BadName);
        }
        let quota = limiter.quota_http(&HttpKey::new("-"));
        Ok(Rule {
            name: name.into(),
            limiter,
            key: KeyBy::ClientIp,
            mode: Mode::Block,
            cost: Cost::Fixed(1),
            methods: None,
            policy: Policy::interned(name, quota),
            algorithm: None,
            strikes: None,
        })
    }

    /// The same rule on another limiter (its state starts fresh; the policy header follows the
    /// new limiter's quota).
    pub fn with_limiter(self, limiter: Arc<dyn HttpLimiter>) -> Result<Rule, RuleError> {
        let fresh = Rule::from_arc(&self.name, limiter)?;
        Ok(Rule { limiter: fresh.limiter, policy: fresh.policy, ..self })
    }

    /// How requests are keyed (default [`KeyBy::ClientIp`]).
    pub fn key(mut self, key: KeyBy) -> Rule {
        self.key = key;
        self
    }

    /// Whether this rule's denials count as [`AutoBan`](super::AutoBan) strikes against the
    /// client. By default they do when the request's key names the client (its address, a
    /// header or a custom key), not when it is a bucket others share: [`KeyBy::Global`],
    /// [`KeyBy::Route`], or the `-` bucket of requests without the keyed header. A client
    /// refused because others filled a shared limit did nothing to be banned for.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::http::{AutoBan, HttpKey, KeyBy, RateLimitLayer, Rule};
    /// use tollgate::{KeyedLimiter, Quota};
    /// let site = Rule::new("site", KeyedLimiter::<HttpKey>::new(Quota::per_second(1000).unwrap()))
    ///     .unwrap()
    ///     .key(KeyBy::Global); // no strikes: the bucket is everyone's
    /// let login = Rule::new("login", KeyedLimiter::<HttpKey>::new(Quota::per_minute(5).unwrap()))
    ///     .unwrap()
    ///     .key(KeyBy::Route)
    ///     .ban_strikes(true); // one login route for all, yet its refusals should count
    /// let ban = AutoBan::new(10, Duration::from_secs(60), Duration::from_secs(600)).unwrap();
    /// let layer = RateLimitLayer::builder().rule(site).route("/login", login).auto_ban(ban).build();
    /// ```
    pub fn ban_strikes(mut self, strikes: bool) -> Rule {
        self.strikes = Some(strikes);
        self
    }

    /// Whether this rule's denial of `req` is a strike (see [`Rule::ban_strikes`]).
    pub(crate) fn strikes(&self, req: &RequestInfo<'_>) -> bool {
        self.strikes.unwrap_or_else(|| self.key.names_client(req))
    }

    /// Block (default), annotate or shadow.
    pub fn mode(mut self, mode: Mode) -> Rule {
        self.mode = mode;
        self
    }

    /// Only these methods count against this rule. `GET` includes `HEAD`: a server answers
    /// `HEAD` by running the `GET` handler and dropping the body (RFC 9110 §9.3.2; axum's
    /// `get()` does), so a rule on `GET` that let `HEAD` through would leave the handler it
    /// protects unlimited.
    ///
    /// ```
    /// use http::Method;
    /// # use tollgate::http::{HttpKey, Rule};
    /// # use tollgate::{KeyedLimiter, Quota};
    /// let search = Rule::new("search", KeyedLimiter::<HttpKey>::new(Quota::per_minute(30).unwrap()))
    ///     .unwrap()
    ///     .methods([Method::GET]); // GET and HEAD
    /// ```
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Rule {
        let mut methods: Vec<Method> = methods.into_iter().collect();
        // Added here, once, so that matching a request stays one `contains` (it runs on every
        // request); the rule then lists HEAD too (`current_methods`, the admin API).
        if methods.contains(&Method::GET) && !methods.contains(&Method::HEAD) {
            methods.push(Method::HEAD);
        }
        self.methods = Some(methods.into());
        self
    }

    /// What a request costs (default 1). A cost of 0 only reports the state.
    ///
    /// ```
    /// # use tollgate::http::{HttpKey, Rule};
    /// # use tollgate::{KeyedLimiter, Quota};
    /// let rule = Rule::new("upload", KeyedLimiter::<HttpKey>::new(Quota::per_second(100).unwrap()))
    ///     .unwrap()
    ///     .cost(|req| if req.method == http::Method::POST { 10 } else { 1 });
    /// ```
    pub fn cost(mut self, cost: impl Fn(&RequestInfo<'_>) -> u32 + Send + Sync + 'static) -> Rule {
        self.cost = Cost::Fn(Arc::new(cost));
        self
    }

    /// Every request costs `cost` (default 1; 0 only reports the state).
    ///
    /// ```
    /// # use tollgate::http::{HttpKey, Rule};
    /// # use tollgate::{KeyedLimiter, Quota};
    /// let rule = Rule::new("search", KeyedLimiter::<HttpKey>::new(Quota::per_second(100).unwrap()))
    ///     .unwrap()
    ///     .fixed_cost(5);
    /// assert_eq!(rule.current_fixed_cost(), Some(5));
    /// ```
    pub fn fixed_cost(mut self, cost: u32) -> Rule {
        self.cost = Cost::Fixed(cost);
        self
    }

    /// The cost of every request, unless a [`cost`](Self::cost) function decides it.
    ///
    /// ```
    /// # use tollgate::http::{HttpKey, Rule};
    /// # use tollgate::{KeyedLimiter, Quota};
    /// let rule = Rule::new("r", KeyedLimiter::<HttpKey>::new(Quota::per_second(9).unwrap())).unwrap();
    /// assert_eq!(rule.current_fixed_cost(), Some(1));
    /// assert_eq!(rule.cost(|_| 3).current_fixed_cost(), None);
    /// ```
    pub fn current_fixed_cost(&self) -> Option<u32> {
        match self.cost {
            Cost::Fixed(c) => Some(c),
            Cost::Fn(_) => None,
        }
    }

    /// Records which algorithm the limiter runs (shown by the admin API, and kept when the
    /// admin API changes only the quota).
    ///
    /// ```
    /// # use tollgate::http::{AlgorithmKind, HttpKey, Rule};
    /// # use tollgate::{KeyedLimiter, Quota};
    /// let rule = Rule::new("r", KeyedLimiter::<HttpKey>::new(Quota::per_second(1).unwrap()))
    ///     .unwrap()
    ///     .algorithm(AlgorithmKind::Gcra);
    /// assert_eq!(rule.current_algorithm(), Some(AlgorithmKind::Gcra));
    /// ```
    pub fn algorithm(mut self, algorithm: AlgorithmKind) -> Rule {
        self.algorithm = Some(algorithm);
        self
    }

    /// The algorithm recorded by [`algorithm`](Self::algorithm), if any.
    ///
    /// ```
    /// # use tollgate::http::{HttpKey, Rule};
    /// # use tollgate::{KeyedLimiter, Quota};
    /// let rule = Rule::new("r", KeyedLimiter::<HttpKey>::new(Quota::per_second(9).unwrap())).unwrap();
    /// assert_eq!(rule.current_algorithm(), None); // not recorded
    /// ```
    pub fn current_algorithm(&self) -> Option<AlgorithmKind> {
        self.algorithm
    }

    /// How requests are keyed.
    ///
    /// ```
    /// # use tollgate::http::{HttpKey, KeyBy, Rule};
    /// # use tollgate::{KeyedLimiter, Quota};
    /// let rule = Rule::new("r", KeyedLimiter::<HttpKey>::new(Quota::per_second(9).unwrap())).unwrap();
    /// assert!(matches!(rule.key(KeyBy::Global).current_key(), KeyBy::Global));
    /// ```
    pub fn current_key(&self) -> &KeyBy {
        &self.key
    }

    /// The methods this rule applies to (`None`: all).
    ///
    /// ```
    /// # use tollgate::http::{HttpKey, Rule};
    /// # use tollgate::{KeyedLimiter, Quota};
    /// let rule = Rule::new("r", KeyedLimiter::<HttpKey>::new(Quota::per_second(9).unwrap())).unwrap();
    /// assert_eq!(rule.current_methods(), None);
    /// assert_eq!(rule.methods([http::Method::POST]).current_methods(), Some(&[http::Method::POST][..]));
    /// ```
    pub fn current_methods(&self) -> Option<&[Method]> {
        self.methods.as_deref()
    }

    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rule's mode.
    pub fn current_mode(&self) -> Mode {
        self.mode
    }

    /// The rule's limiter.
    pub fn limiter(&self) -> &Arc<dyn HttpLimiter> {
        &self.limiter
    }

    /// The default quota (as sent in `RateLimit-Policy`).
    pub fn quota(&self) -> crate::Quota {
        self.policy.quota
    }

    /// Whether requests of `method` count against this rule (a list with `GET` has `HEAD`
    /// too: [`Rule::methods`]).
    pub(crate) fn applies_to(&self, method: &Method) -> bool {
        self.methods.as_ref().is_none_or(|m| m.contains(method))
    }

    #[inline]
    pub(crate) fn cost_of(&self, req: &RequestInfo<'_>) -> u32 {
        match &self.cost {
            Cost::Fixed(c) => *c,
            Cost::Fn(f) => f(req),
        }
    }
}

/// An immutable set of rules: global ones apply to every request; of the route ones, the one
/// for the request's route applies (the matched axum pattern when present, else the longest
/// matching path prefix).
#[derive(Clone, Debug, Default)]
pub(crate) struct RuleSet {
    pub(crate) global: Vec<Rule>,
    /// Sorted by pattern length, longest first.
    pub(crate) routes: Vec<(String, Rule)>,
}

impl RuleSet {
    pub(crate) fn add_route(&mut self, pattern: String, rule: Rule) {
        self.routes.push((pattern, rule));
        self.routes.sort_by_key(|(pattern, _)| std::cmp::Reverse(pattern.len()));
    }

    /// How many rules there are (global and route).
    /// Whether any rule is a route rule (matched by axum's `MatchedPath` or a path prefix).
    pub(crate) fn has_routes(&self) -> bool {
        !self.routes.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.global.len() + self.routes.len()
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.global.iter().chain(self.routes.iter().map(|(_, r)| r)).any(|r| &*r.name == name)
    }

    /// Whether a route rule other than `except` covers `pattern` for some method `rule` covers.
    pub(crate) fn route_taken(&self, pattern: Option<&str>, rule: &Rule, except: Option<&str>) -> bool {
        let Some(pattern) = pattern else { return false };
        // Some method both rules cover (a rule on GET covers HEAD: `Rule::methods`).
        let overlap = |other: &Rule| match (&rule.methods, &other.methods) {
            (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
            _ => true,
        };
        self.routes.iter().any(|(p, r)| p == pattern && Some(&*r.name) != except && overlap(r))
    }

    /// Adds `rule` for `pattern`, or for every request with `None`.
    pub(crate) fn insert(&mut self, pattern: Option<&str>, rule: Rule) {
        match pattern {
            Some(p) => self.add_route(p.to_owned(), rule),
            None => self.global.push(rule),
        }
    }

    /// Removes every rule named `name`; whether there was one.
    pub(crate) fn remove(&mut self, name: &str) -> bool {
        let before = self.global.len() + self.routes.len();
        self.global.retain(|r| &*r.name != name);
        self.routes.retain(|(_, r)| &*r.name != name);
        self.global.len() + self.routes.len() != before
    }

    /// The rules that apply to `req`, globals first.
    pub(crate) fn matching<'r, 'a: 'r>(
        &'r self,
        req: &RequestInfo<'a>,
    ) -> impl Iterator<Item = &'r Rule> + 'r {
        let method: &'a Method = req.method;
        let route = self.route_for(req);
        self.global.iter().filter(move |r| r.applies_to(method)).chain(route)
    }

    /// [`matching`](Self::matching)'s first rule; for a set of one global rule (the common case)
    /// without building the iterator.
    #[inline]
    pub(crate) fn lone<'r, 'a: 'r>(&'r self, req: &RequestInfo<'a>) -> Option<&'r Rule> {
        match (self.global.as_slice(), self.routes.is_empty()) {
            ([rule], true) => rule.applies_to(req.method).then_some(rule),
            _ => self.matching(req).next(),
        }
    }

    /// The same rules, with the one at position `first` (if any) moved to the front: the
    /// order the middleware checks them in.
    pub(crate) fn ordered<'r, 'a: 'r>(
        &'r self,
        req: &RequestInfo<'a>,
        first: Option<usize>,
    ) -> impl Iterator<Item = &'r Rule> + 'r {
        let lead = first.and_then(|f| self.matching(req).nth(f));
        let rest = self.matching(req).enumerate().filter(move |(i, _)| Some(*i) != first);
        lead.into_iter().chain(rest.map(|(_, rule)| rule))
    }

    fn route_for(&self, req: &RequestInfo<'_>) -> Option<&Rule> {
        if self.routes.is_empty() {
            return None;
        }
        if let Some(matched) = req.matched_path() {
            let exact = self.routes.iter().find(|(p, r)| p == matched && r.applies_to(req.method));
            if let Some((_, rule)) = exact {
                return Some(rule);
            }
        }
        let path = req.path();
        self.routes.iter().find(|(p, r)| prefix_matches(p, path) && r.applies_to(req.method)).map(|(_, r)| r)
    }
}

/// `/api` matches `/api` and `/api/x` but not `/apix`; `/api/` matches everything under it.
pub(crate) fn prefix_matches(pattern: &str, path: &str) -> bool {
    match path.strip_prefix(pattern) {
        Some(rest) => rest.is_empty() || pattern.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_matches;

    #[test]
    fn prefixes() {
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/x"));
        assert!(!prefix_matches("/api", "/apix"));
        assert!(prefix_matches("/api/", "/api/x"));
        assert!(prefix_matches("/", "/anything"));
        assert!(!prefix_matches("/api/", "/api"));
    }
}
