//! Rate-limit response headers (one writer, [`write_headers`]) and the 429/403/503 responses.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, StatusCode};

use crate::decision::Decision;
use crate::quota::Quota;

/// Which rate-limit headers responses carry.
///
/// ```
/// use tollgate::http::HeaderStyle;
/// assert_eq!(HeaderStyle::default(), HeaderStyle::Both);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum HeaderStyle {
    /// None (429s still carry `Retry-After`).
    None,
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (seconds from now).
    Legacy,
    /// The IETF draft pair `RateLimit-Policy: "name";q=100;w=60` and
    /// `RateLimit: "name";r=42;t=17`.
    Ietf,
    /// Both.
    #[default]
    Both,
}

impl HeaderStyle {
    fn legacy(self) -> bool {
        matches!(self, HeaderStyle::Legacy | HeaderStyle::Both)
    }

    fn ietf(self) -> bool {
        matches!(self, HeaderStyle::Ietf | HeaderStyle::Both)
    }
}

static X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
static POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Whole seconds in `d`, rounded up (`Retry-After` must never invite an early retry).
///
/// ```
/// use std::time::Duration;
/// use tollgate::http::ceil_secs;
/// assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
/// assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
/// assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
/// assert_eq!(ceil_secs(Duration::ZERO), 0);
/// ```
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The `RateLimit-Policy` value of a quota: `"name";q=<quota units>;w=<window in seconds>`.
///
/// The window is the time the quota takes to refill its burst, `burst · period / count`: the
/// quota's own period when the burst is the count (always, for the windowed algorithms), and
/// for a token bucket with a larger or smaller burst the time that bucket refills in, so that
/// `q` is the burst, as `X-RateLimit-Limit` and the `RateLimit` header's `r` count (review
/// finding: `10/s;burst=30` advertised `q=10;w=1` beside `r=29`). The header counts whole
/// seconds, so `w` is that time rounded up (at least 1), and `q` is the burst: the rate over
/// a `w` rounded up allows at least that (`q = min(burst, floor(count · w / period))`, which
/// is the burst but where the product overflows). So `q` is never more than the real rate
/// allows, and never less than the `r` of any response (`r` counts what is left of the
/// burst): a client reading `q` and `r` never plans a burst that the limiter would refuse.
///
/// ```
/// use tollgate::http::policy_value;
/// use tollgate::Quota;
/// assert_eq!(policy_value("api", &Quota::per_minute(100).unwrap()), r#""api";q=100;w=60"#);
/// // 10 per 100 ms: a burst of 10 that refills in 0.1 s, advertised over 1 s; 20 per 1.5 s
/// // refills in 2 s (rounded up), at a rate of 26.67 per 2 s: the burst of 20 is less.
/// assert_eq!(policy_value("r", &"10/100ms".parse().unwrap()), r#""r";q=10;w=1"#);
/// assert_eq!(policy_value("r", &"20/1500ms".parse().unwrap()), r#""r";q=20;w=2"#);
/// // A smaller burst than the rate over w (review finding: this was q=20;w=2 beside r ≤ 14).
/// assert_eq!(policy_value("r", &"10/s;burst=15".parse().unwrap()), r#""r";q=15;w=2"#);
/// // A bucket of 30 refilled at 10/s: full again 3 s after it is emptied.
/// assert_eq!(policy_value("b", &"10/s;burst=30".parse().unwrap()), r#""b";q=30;w=3"#);
/// assert_eq!(policy_value("b", &"100/m;burst=10".parse().unwrap()), r#""b";q=10;w=6"#);
/// ```
pub fn policy_value(name: &str, quota: &Quota) -> String {
    let period_nanos = quota.period().as_nanos().max(1);
    let count = u128::from(quota.count()).max(1);
    // ⌈burst · period / count⌉ in seconds, rounded up once (rounding the nanoseconds down
    // first could make `w` a second short, and `q` below the burst: review finding).
    let refill = u128::from(quota.burst()).saturating_mul(period_nanos);
    let window =
        u64::try_from(refill.div_ceil(count.saturating_mul(1_000_000_000))).unwrap_or(u64::MAX).max(1);
    // Overflows only for windows of centuries, where w ≥ period makes `count` itself a
    // value that never exceeds the real rate.
    let units = u128::from(window)
        .checked_mul(1_000_000_000)
        .and_then(|scale| count.checked_mul(scale))
        .map_or(count, |n| n / period_nanos)
        .min(u128::from(quota.burst()));
    let mut s = String::with_capacity(name.len() + 24);
    let _ = write!(s, "\"{name}\";q={units};w={window}");
    s
}

/// What a rule contributes to its responses' headers, built once per distinct (name, quota)
/// so that a response only clones them (no formatting, no atomic operation): the
/// `RateLimit-Policy` value of its default quota and its `X-RateLimit-Limit` value.
///
/// Interned ([`Policy::interned`]): a request holds a `&'static Policy`, not an `Arc`, because
/// an `Arc` clone and drop per request are two atomic read-modify-writes on one reference count
/// that every core writes, a cache line bouncing between the cores of a busy server. Past
/// [`MAX_INTERNED_POLICIES`] distinct pairs, new policies are reference-counted instead.
#[derive(Debug)]
pub(crate) struct Policy {
    pub(crate) name: Box<str>,
    pub(crate) quota: Quota,
    pub(crate) value: HeaderValue,
    /// The limit `limit_value` holds (the default quota's burst, what decisions on keys without
    /// an override report).
    limit: u64,
    limit_value: HeaderValue,
    /// The headers of this policy's latest 429 ([`refusal`]); rules with the same name and
    /// quota share it, and their 429s are the same.
    refusal: ArcSwapOption<Refusal>,
}

impl Policy {
    /// The policy for `name` and `quota`: made once per distinct pair and kept for the life of
    /// the process, for the first [`MAX_INTERNED_POLICIES`] pairs; past that (a control loop
    /// retuning quotas, per-tenant rules coming and going), a reference-counted policy freed
    /// with its rule. Memory kept is at most that many policies, about 1.7 KB each with their
    /// cached 429. The lock is taken when a rule is built, never per request.
    pub(crate) fn interned(name: &str, quota: Quota) -> PolicyRef {
        use std::collections::HashMap;
        use std::sync::{Mutex, OnceLock};
        type Kept = HashMap<(Box<str>, Quota), &'static Policy>;
        static POLICIES: OnceLock<Mutex<Kept>> = OnceLock::new();
        let mut kept = POLICIES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
        let key = (Box::<str>::from(name), quota);
        if let Some(policy) = kept.get(&key) {
            return PolicyRef::Interned(policy);
        }
        if kept.len() >= MAX_INTERNED_POLICIES {
            return PolicyRef::Counted(Arc::new(Policy::new(name, quota)));
        }
        let policy: &'static Policy = Box::leak(Box::new(Policy::new(name, quota)));
        kept.insert(key, policy);
        PolicyRef::Interned(policy)
    }

    pub(crate) fn new(name: &str, quota: Quota) -> Policy {
        let value = interned(&policy_value(name, &quota));
        let limit = quota.burst();
        Policy {
            name: name.into(),
            quota,
            value,
            limit,
            limit_value: interned(&limit.to_string()),
            refusal: ArcSwapOption::empty(),
        }
    }
}

/// How many distinct (rule name, quota) pairs get an interned policy (see [`Policy`]).
pub(crate) const MAX_INTERNED_POLICIES: usize = 1024;

/// How many distinct header values [`interned`] keeps (each a few dozen bytes).
const MAX_INTERNED_VALUES: usize = 4096;

/// A rule's [`Policy`]: interned (copied per request for free) or, past
/// [`MAX_INTERNED_POLICIES`], reference-counted.
#[derive(Clone, Debug)]
pub(crate) enum PolicyRef {
    Interned(&'static Policy),
    Counted(Arc<Policy>),
}

impl std::ops::Deref for PolicyRef {
    type Target = Policy;
    #[inline]
    fn deref(&self) -> &Policy {
        match self {
            PolicyRef::Interned(p) => p,
            PolicyRef::Counted(p) => p,
        }
    }
}

/// What a 429's headers depend on: equal stamps, equal headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    style: HeaderStyle,
    quota: Quota,
    limit: u64,
    remaining: u64,
    reset: u64,
    retry: u64,
}

/// A rule's latest 429 headers, kept for the next refusal with the same [`Stamp`].
#[derive(Debug)]
struct Refusal {
    stamp: Stamp,
    headers: HeaderMap,
}

/// The 429 response refusing `decision` under `policy` (retry after `retry`), with its
/// rate-limit headers in `style`.
///
/// A client that keeps hammering a limit gets the same numbers (whole seconds) on every
/// refusal within a second, so the rule keeps its latest 429 headers and clones them (two
/// allocations and reference-count increments) instead of inserting seven headers again. Only
/// a refusal with other numbers rebuilds them (and replaces the kept copy). The swap is
/// lock-free.
pub(crate) fn refusal(
    style: HeaderStyle,
    policy: &Policy,
    quota: &Quota,
    decision: &Decision,
    retry: Duration,
) -> http::Response<Bytes> {
    let stamp = Stamp {
        style,
        quota: *quota,
        limit: decision.limit(),
        remaining: decision.remaining(),
        reset: ceil_secs(decision.reset_after()),
        retry: ceil_secs(retry).max(1),
    };
    let mut res = http::Response::new(Bytes::from_static(TOO_MANY));
    *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    if let Some(kept) = policy.refusal.load().as_ref().filter(|kept| kept.stamp == stamp) {
        *res.headers_mut() = kept.headers.clone();
        return res;
    }
    let mut headers = HeaderMap::with_capacity(8);
    headers.insert(CONTENT_TYPE, PROBLEM_JSON.clone());
    headers.insert(CONTENT_LENGTH, content_length(TOO_MANY));
    headers.insert(RETRY_AFTER, number(stamp.retry));
    write_headers(&mut headers, style, policy, quota, decision);
    policy.refusal.store(Some(Arc::new(Refusal { stamp, headers: headers.clone() })));
    *res.headers_mut() = headers;
    res
}

/// A header value backed by a `'static` copy of `s`, made once per distinct `s` and kept for
/// the life of the process, so clones cost no atomic operation.
///
/// A rule's constant values (its `RateLimit-Policy` and `X-RateLimit-Limit`) go on every
/// response it limits. Backed by a shared heap buffer, each clone and drop would be an atomic
/// increment and decrement of one reference count that every core writes: a contended cache
/// line on the allow path of a busy multi-core server. Interning bounds the memory kept by the
/// number of distinct values (rule names × quotas, at most [`MAX_INTERNED_VALUES`]; past that a
/// value is an ordinary shared one), not by how often rules are created; the lock is taken only
/// when a rule is built, never per request.
fn interned(s: &str) -> HeaderValue {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static INTERNED: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut set = INTERNED.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    let kept: &'static str = match set.get(s) {
        Some(kept) => kept,
        // Past the bound (rules retuned over and over), an ordinary shared value.
        None if set.len() >= MAX_INTERNED_VALUES => return header_value(s),
        None => {
            let kept: &'static str = Box::leak(s.into());
            set.insert(kept);
            kept
        }
    };
    value_of(Bytes::from_static(kept.as_bytes()))
}

/// Rule names are validated to be header-safe when the rule is built; this never fails for them.
fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("\"invalid\""))
}

/// The longest `RateLimit` value: a quote, a 64-byte name, `";r=`, 20 digits, `;t=`, 20 digits.
const RATELIMIT_MAX: usize = 1 + 64 + 4 + 20 + 3 + 20;

/// Writes the rate-limit headers of `decision` under `policy` in `style`. The only place any
/// of them is written.
///
/// Per response this costs at most one allocation: the limit and policy values are the rule's
/// own, cloned; numbers below 10 000 come from a static table; the `RateLimit` value (whose
/// numbers change with every request) is assembled on the stack and moved into one shared
/// buffer, of which larger `X-RateLimit-Remaining`/`-Reset` numbers are slices.
pub(crate) fn write_headers(
    headers: &mut HeaderMap,
    style: HeaderStyle,
    policy: &Policy,
    quota: &Quota,
    decision: &Decision,
) {
    if style == HeaderStyle::None {
        return;
    }
    let remaining = decision.remaining();
    let reset = ceil_secs(decision.reset_after());
    // `"name";r=<remaining>;t=<reset>`, noting where the two numbers are.
    let mut buf = [0u8; RATELIMIT_MAX];
    let mut at = 0;
    for part in [b"\"".as_slice(), policy.name.as_bytes(), b"\";r="] {
        at = append(&mut buf, at, part);
    }
    let remaining_at = at..append(&mut buf, at, itoa::Buffer::new().format(remaining).as_bytes());
    at = append(&mut buf, remaining_at.end, b";t=");
    let reset_at = at..append(&mut buf, at, itoa::Buffer::new().format(reset).as_bytes());
    let small = |n: u64| digits_of(n).map(Bytes::from_static);
    let needed = style.ietf() || small(remaining).is_none() || small(reset).is_none();
    let shared = needed.then(|| Bytes::from_owner(Assembled { buf, len: reset_at.end }));
    let number_at = |n: u64, range: std::ops::Range<usize>| match (small(n), &shared) {
        (Some(digits), _) => value_of(digits),
        (None, Some(shared)) => value_of(shared.slice(range)),
        (None, None) => number(n), // not reached: a large number makes `shared`
    };
    // Room for ours and for the `content-length` a server adds after us (axum does), up front:
    // the map grows at most once, now, while it holds few entries (and not at all when a small
    // map has room, as for one style on a typical response).
    let ours = if style.legacy() { 3 } else { 0 } + if style.ietf() { 2 } else { 0 };
    headers.reserve(ours + 1);
    if style.legacy() {
        let limit = decision.limit();
        let limit_value = if limit == policy.limit { policy.limit_value.clone() } else { number(limit) };
        headers.insert(X_LIMIT.clone(), limit_value);
        headers.insert(X_REMAINING.clone(), number_at(remaining, remaining_at));
        headers.insert(X_RESET.clone(), number_at(reset, reset_at));
    }
    if let (true, Some(shared)) = (style.ietf(), shared) {
        let policy_value = if *quota == policy.quota {
            policy.value.clone()
        } else {
            header_value(&policy_value(&policy.name, quota)) // a per-key override
        };
        headers.insert(POLICY.clone(), policy_value);
        headers.insert(RATELIMIT.clone(), value_of(shared));
    }
}

/// A `RateLimit` value assembled on the stack, moved into a [`Bytes`] as its owner: one
/// allocation holds the bytes and their reference count.
struct Assembled {
    buf: [u8; RATELIMIT_MAX],
    len: usize,
}

impl AsRef<[u8]> for Assembled {
    fn as_ref(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

/// Header-safe by construction (digits, validated names, ASCII punctuation).
fn value_of(bytes: Bytes) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes).unwrap_or_else(|_| HeaderValue::from_static("\"invalid\""))
}

/// Copies `part` into `buf` at `at` (truncating at the end of `buf`, which validated names and
/// u64 numbers never reach); returns the new end.
fn append(buf: &mut [u8], at: usize, part: &[u8]) -> usize {
    let end = at.saturating_add(part.len()).min(buf.len());
    if let (Some(dst), Some(src)) = (buf.get_mut(at..end), part.get(..end.saturating_sub(at))) {
        dst.copy_from_slice(src);
    }
    end
}

/// `Retry-After` in whole seconds, rounded up (at least 1 for a denial).
pub(crate) fn write_retry_after(headers: &mut HeaderMap, retry_after: Duration) {
    headers.insert(RETRY_AFTER, number(ceil_secs(retry_after).max(1)));
}

/// The digits of 0..10_000 back to back, built at compile time, so small numbers become header
/// values without allocating.
const DIGITS_LEN: usize = 10 + 90 * 2 + 900 * 3 + 9000 * 4;
static DIGITS: [u8; DIGITS_LEN] = digits();

const fn digits() -> [u8; DIGITS_LEN] {
    let mut out = [0u8; DIGITS_LEN];
    let mut n = 0;
    let mut at = 0;
    while n < 10_000 {
        let width = if n < 10 {
            1
        } else if n < 100 {
            2
        } else if n < 1000 {
            3
        } else {
            4
        };
        let mut i = width;
        let mut v = n;
        while i > 0 {
            i -= 1;
            out[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        at += width;
        n += 1;
    }
    out
}

fn digits_of(n: u64) -> Option<&'static [u8]> {
    let (start, width) = match n {
        0..=9 => (n, 1),
        10..=99 => (10 + (n - 10) * 2, 2),
        100..=999 => (190 + (n - 100) * 3, 3),
        1000..=9999 => (2890 + (n - 1000) * 4, 4),
        _ => return None,
    };
    let start = usize::try_from(start).ok()?;
    DIGITS.get(start..start + width)
}

/// A header value holding `n` in decimal: below 10 000 a static slice (no allocation), else
/// one exact allocation.
pub(crate) fn number(n: u64) -> HeaderValue {
    let bytes = match digits_of(n) {
        Some(d) => Bytes::from_static(d),
        None => Bytes::copy_from_slice(itoa::Buffer::new().format(n).as_bytes()),
    };
    HeaderValue::from_maybe_shared(bytes).unwrap_or_else(|_| HeaderValue::from(n))
}

/// Bodies of the responses the middleware writes itself (RFC 9457 problem details).
pub(crate) const TOO_MANY: &[u8] = br#"{"type":"about:blank","title":"Too Many Requests","status":429,"detail":"Rate limit exceeded; see the Retry-After header."}"#;
pub(crate) const BANNED: &[u8] = br#"{"type":"about:blank","title":"Forbidden","status":403,"detail":"Temporarily banned after repeated rate-limit violations; see the Retry-After header."}"#;
pub(crate) const BANNED_429: &[u8] = br#"{"type":"about:blank","title":"Too Many Requests","status":429,"detail":"Temporarily banned after repeated rate-limit violations; see the Retry-After header."}"#;
pub(crate) const TOO_COSTLY: &[u8] = br#"{"type":"about:blank","title":"Too Many Requests","status":429,"detail":"This request costs more than the rate limit can ever admit."}"#;
pub(crate) const UNAVAILABLE: &[u8] = br#"{"type":"about:blank","title":"Service Unavailable","status":503,"detail":"The rate limiter is unavailable."}"#;

static PROBLEM_JSON: HeaderValue = HeaderValue::from_static("application/problem+json");

/// The `Content-Length` of a static body, from the digit table: set here, the server does not
/// format and insert it (axum and hyper keep one that is present).
fn content_length(body: &'static [u8]) -> HeaderValue {
    number(u64::try_from(body.len()).unwrap_or(u64::MAX))
}

/// A problem+json response with `status` and the static `body`.
pub(crate) fn problem(status: StatusCode, body: &'static [u8]) -> http::Response<Bytes> {
    let mut res = http::Response::new(Bytes::from_static(body));
    *res.status_mut() = status;
    // Sized once for everything a refusal carries (content type and length, Retry-After, five
    // rate-limit headers): the map is allocated once and never grows.
    *res.headers_mut() = HeaderMap::with_capacity(8);
    res.headers_mut().insert(CONTENT_TYPE, PROBLEM_JSON.clone());
    res.headers_mut().insert(CONTENT_LENGTH, content_length(body));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interned_values_are_kept_once() {
        let a = interned("\"api\";q=100;w=60");
        let b = interned(&String::from("\"api\";q=100;w=60"));
        assert_eq!(a, "\"api\";q=100;w=60");
        // One static copy per distinct value: both point at it (and so do their clones).
        assert_eq!(a.as_bytes().as_ptr(), b.as_bytes().as_ptr());
        assert_eq!(a.clone().as_bytes().as_ptr(), a.as_bytes().as_ptr());
        assert_ne!(interned("1000000").as_bytes().as_ptr(), a.as_bytes().as_ptr());
        let policy = Policy::new("api", Quota::per_minute(100_000).unwrap());
        assert_eq!(policy.limit_value, "100000");
        assert_eq!(policy.value, "\"api\";q=100000;w=60");
    }

    #[test]
    fn policies_are_interned_per_name_and_quota_up_to_a_bound() {
        let q = Quota::per_minute(100).unwrap();
        let a = Policy::interned("api", q);
        assert!(matches!(a, PolicyRef::Interned(_)));
        assert!(std::ptr::eq(&*a, &*Policy::interned(&String::from("api"), q)));
        assert!(!std::ptr::eq(&*a, &*Policy::interned("api", Quota::per_minute(101).unwrap())));
        assert!(!std::ptr::eq(&*a, &*Policy::interned("login", q)));
        assert_eq!(a.value, "\"api\";q=100;w=60");
        // A flood of distinct pairs (a quota retuned over and over) stops being interned at the
        // bound; pairs interned before stay interned.
        let flood: Vec<PolicyRef> = (1..=MAX_INTERNED_POLICIES as u64 + 10)
            .map(|n| Policy::interned("tuned", Quota::per_hour(n).unwrap()))
            .collect();
        assert!(matches!(flood.last(), Some(PolicyRef::Counted(_))));
        assert_eq!(flood.last().map(|p| p.quota), Quota::per_hour(MAX_INTERNED_POLICIES as u64 + 10).ok());
        assert!(matches!(Policy::interned("api", q), PolicyRef::Interned(_)));
    }

    #[test]
    fn policy_never_advertises_more_than_the_rate() {
        let policy = |q: &str| policy_value("r", &q.parse().unwrap());
        // Whole seconds: exactly count per period, as before.
        for (q, expected) in [
            ("100/m", r#""r";q=100;w=60"#),
            ("5/s", r#""r";q=5;w=1"#),
            ("7/90s", r#""r";q=7;w=90"#),
            ("1000/h", r#""r";q=1000;w=3600"#),
            ("3/2s", r#""r";q=3;w=2"#),
        ] {
            assert_eq!(policy(q), expected, "{q}");
        }
        // Below a second or between whole seconds: w rounds up, q is the burst, or the rate
        // over w rounded down where that is less.
        assert_eq!(policy("10/100ms"), r#""r";q=10;w=1"#);
        assert_eq!(policy("20/1500ms"), r#""r";q=20;w=2"#);
        assert_eq!(policy("1/1500ms"), r#""r";q=1;w=2"#);
        assert_eq!(policy("3/333ms"), r#""r";q=3;w=1"#);
        assert_eq!(policy("10/s;burst=15"), r#""r";q=15;w=2"#);
        assert_eq!(policy("7/s;burst=10"), r#""r";q=10;w=2"#);
        assert_eq!(policy("100/s;burst=10"), r#""r";q=10;w=1"#);
        assert_eq!(policy("2/s;burst=3"), r#""r";q=3;w=2"#);
        // The fastest quota there is: one cell per nanosecond.
        let q = Quota::new(1_000, Duration::from_micros(1)).unwrap();
        assert_eq!(policy_value("r", &q), r#""r";q=1000;w=1"#);
        // q is never below the burst's remaining r nor above the rate over w.
        for s in [
            "1/s",
            "3/s;burst=1",
            "5/7s;burst=9",
            "1000/h;burst=5",
            "9/250ms;burst=40",
            // A refill a fraction of a nanosecond past whole seconds (review finding: q=0;w=1).
            "3000000/3000000001ms;burst=1",
            "3/3000000001ns;burst=1",
            "3/1500000001ns;burst=2",
        ] {
            let quota: Quota = s.parse().unwrap();
            let value = policy(s);
            let num = |tag: &str| -> u128 {
                let i = value.find(tag).unwrap() + tag.len();
                value[i..].split(';').next().unwrap().parse().unwrap()
            };
            let (q, w) = (num(";q="), num(";w="));
            assert!(q <= u128::from(quota.burst()), "{s}: {value}");
            assert!(q >= u128::from(quota.burst()), "{s}: {value}: q below the burst (r can reach it)");
            assert!(
                q * quota.period().as_nanos() <= u128::from(quota.count()) * w * 1_000_000_000,
                "{s}: {value}"
            );
        }
    }

    #[test]
    fn numbers_match_display() {
        for n in [0u64, 7, 9999, 10_000, 123_456_789, u64::MAX] {
            assert_eq!(number(n).as_bytes(), n.to_string().as_bytes());
        }
    }

    #[test]
    fn longest_name_and_numbers_fit() {
        let name = "n".repeat(64);
        let q = Quota::per_second(10).unwrap();
        let p = Policy::new(&name, q);
        let mut h = HeaderMap::new();
        let d = Decision::allowed(u64::MAX, u64::MAX, u64::MAX);
        write_headers(&mut h, HeaderStyle::Both, &p, &q, &d);
        let secs = ceil_secs(d.reset_after());
        assert_eq!(h["ratelimit"], format!("\"{name}\";r={};t={secs}", u64::MAX));
        assert_eq!(h["x-ratelimit-limit"], u64::MAX.to_string());
    }

    #[test]
    fn digit_table() {
        for n in [0u64, 9, 10, 42, 99, 100, 999, 1000, 4711, 9999, 10_000, u64::MAX] {
            assert_eq!(number(n).to_str().unwrap(), n.to_string());
        }
    }

    #[test]
    fn refusals_reuse_the_kept_headers_only_for_the_same_numbers() {
        let q = Quota::per_second(10).unwrap();
        let p = Policy::new("ip", q);
        let denied = Decision::denied(10, 0, 1_000_000_000, 100_000_000);
        let first = refusal(HeaderStyle::Both, &p, &q, &denied, Duration::from_millis(100));
        let again = refusal(HeaderStyle::Both, &p, &q, &denied, Duration::from_millis(300));
        assert_eq!(first.headers(), again.headers());
        assert_eq!(again.headers()["retry-after"], "1");
        assert_eq!(again.headers()["ratelimit"], r#""ip";r=0;t=1"#);
        assert_eq!(again.headers().len(), 8);
        assert_eq!(again.headers()["content-length"], TOO_MANY.len().to_string());
        // Other numbers: rebuilt.
        let later = refusal(HeaderStyle::Both, &p, &q, &denied, Duration::from_millis(1500));
        assert_eq!(later.headers()["retry-after"], "2");
        let legacy = refusal(HeaderStyle::Legacy, &p, &q, &denied, Duration::from_millis(1500));
        assert_eq!(legacy.headers().len(), 6);
        assert_eq!(legacy.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(&legacy.body()[..], TOO_MANY);
    }

    #[test]
    fn every_style_with_small_and_large_numbers() {
        let q = Quota::per_second(10).unwrap();
        let p = Policy::new("ip", q);
        for (remaining, reset_ns) in [(9u64, 100_000_000u64), (123_456, 98_765_000_000_000)] {
            let d = Decision::allowed(10, remaining, reset_ns);
            let reset = ceil_secs(d.reset_after()).to_string();
            let mut legacy = HeaderMap::new();
            write_headers(&mut legacy, HeaderStyle::Legacy, &p, &q, &d);
            assert_eq!(legacy.len(), 3);
            assert_eq!(legacy["x-ratelimit-remaining"], remaining.to_string());
            assert_eq!(legacy["x-ratelimit-reset"], reset);
            let mut ietf = HeaderMap::new();
            write_headers(&mut ietf, HeaderStyle::Ietf, &p, &q, &d);
            assert_eq!(ietf.len(), 2);
            assert_eq!(ietf["ratelimit"], format!("\"ip\";r={remaining};t={reset}"));
            let mut none = HeaderMap::new();
            write_headers(&mut none, HeaderStyle::None, &p, &q, &d);
            assert!(none.is_empty());
        }
    }

    #[test]
    fn one_writer_both_styles() {
        let q = Quota::per_second(10).unwrap();
        let p = Policy::new("ip", q);
        let mut h = HeaderMap::new();
        write_headers(&mut h, HeaderStyle::Both, &p, &q, &Decision::allowed(10, 9, 100_000_000));
        assert_eq!(h["x-ratelimit-limit"], "10");
        assert_eq!(h["x-ratelimit-remaining"], "9");
        assert_eq!(h["x-ratelimit-reset"], "1");
        assert_eq!(h["ratelimit-policy"], r#""ip";q=10;w=1"#);
        assert_eq!(h["ratelimit"], r#""ip";r=9;t=1"#);
        let mut h = HeaderMap::new();
        write_headers(&mut h, HeaderStyle::Legacy, &p, &q, &Decision::allowed(10, 9, 0));
        assert_eq!(h.len(), 3);
    }
}
