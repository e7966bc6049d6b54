//! Rate-limit response headers (one writer, [`write_headers`]) and the 429/403/503 responses.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
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

/// The `RateLimit-Policy` value of a quota: `"name";q=<count>;w=<period in whole seconds, ≥ 1>`.
///
/// ```
/// use tollgate::http::policy_value;
/// use tollgate::Quota;
/// assert_eq!(policy_value("api", &Quota::per_minute(100).unwrap()), r#""api";q=100;w=60"#);
/// ```
pub fn policy_value(name: &str, quota: &Quota) -> String {
    let mut s = String::with_capacity(name.len() + 24);
    let _ = write!(s, "\"{name}\";q={};w={}", quota.count(), ceil_secs(quota.period()).max(1));
    s
}

/// What a rule contributes to its responses' headers: its name and a precomputed
/// `RateLimit-Policy` value for its default quota.
#[derive(Clone, Debug)]
pub(crate) struct Policy {
    pub(crate) name: std::sync::Arc<str>,
    pub(crate) quota: Quota,
    pub(crate) value: HeaderValue,
}

impl Policy {
    pub(crate) fn new(name: &str, quota: Quota) -> Policy {
        let value = header_value(&policy_value(name, &quota));
        Policy { name: name.into(), quota, value }
    }
}

/// Rule names are validated to be header-safe when the rule is built; this never fails for them.
fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("\"invalid\""))
}

/// Writes the rate-limit headers of `decision` under `policy` in `style`. The only place any
/// of them is written.
pub(crate) fn write_headers(
    headers: &mut HeaderMap,
    style: HeaderStyle,
    policy: &Policy,
    quota: &Quota,
    decision: &Decision,
) {
    let reset = ceil_secs(decision.reset_after());
    headers.reserve(5); // one growth of the map instead of several
    if style.legacy() {
        headers.insert(X_LIMIT.clone(), number(decision.limit()));
        headers.insert(X_REMAINING.clone(), number(decision.remaining()));
        headers.insert(X_RESET.clone(), number(reset));
    }
    if style.ietf() {
        let policy_value = if *quota == policy.quota {
            policy.value.clone()
        } else {
            header_value(&policy_value(&policy.name, quota)) // a per-key override
        };
        headers.insert(POLICY.clone(), policy_value);
        // `"name";r=<remaining>;t=<reset>`, written straight into the buffer the header value
        // keeps: one allocation, no formatting machinery.
        let mut buf = bytes::BytesMut::with_capacity(policy.name.len() + 48);
        buf.extend_from_slice(b"\"");
        buf.extend_from_slice(policy.name.as_bytes());
        buf.extend_from_slice(b"\";r=");
        push_decimal(&mut buf, decision.remaining());
        buf.extend_from_slice(b";t=");
        push_decimal(&mut buf, reset);
        let value = HeaderValue::from_maybe_shared(buf.freeze())
            .unwrap_or_else(|_| HeaderValue::from_static("\"invalid\""));
        headers.insert(RATELIMIT.clone(), value);
    }
}

fn push_decimal(buf: &mut bytes::BytesMut, n: u64) {
    match digits_of(n) {
        Some(d) => buf.extend_from_slice(d),
        None => {
            let mut tmp = [0u8; 20];
            let mut at = tmp.len();
            let mut v = n;
            loop {
                at -= 1;
                tmp[at] = b'0' + (v % 10) as u8; // a single digit: the cast cannot truncate
                v /= 10;
                if v == 0 {
                    break;
                }
            }
            buf.extend_from_slice(&tmp[at..]);
        }
    }
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

/// A header value holding `n` in decimal; below 10 000 without allocating.
pub(crate) fn number(n: u64) -> HeaderValue {
    match digits_of(n) {
        Some(d) => {
            HeaderValue::from_maybe_shared(Bytes::from_static(d)).unwrap_or_else(|_| HeaderValue::from(n))
        }
        None => HeaderValue::from(n),
    }
}

/// Bodies of the responses the middleware writes itself (RFC 9457 problem details).
pub(crate) const TOO_MANY: &[u8] = br#"{"type":"about:blank","title":"Too Many Requests","status":429,"detail":"Rate limit exceeded; see the Retry-After header."}"#;
pub(crate) const BANNED: &[u8] = br#"{"type":"about:blank","title":"Forbidden","status":403,"detail":"Temporarily banned after repeated rate-limit violations; see the Retry-After header."}"#;
pub(crate) const BANNED_429: &[u8] = br#"{"type":"about:blank","title":"Too Many Requests","status":429,"detail":"Temporarily banned after repeated rate-limit violations; see the Retry-After header."}"#;
pub(crate) const TOO_COSTLY: &[u8] = br#"{"type":"about:blank","title":"Too Many Requests","status":429,"detail":"This request costs more than the rate limit can ever admit."}"#;
pub(crate) const UNAVAILABLE: &[u8] = br#"{"type":"about:blank","title":"Service Unavailable","status":503,"detail":"The rate limiter is unavailable."}"#;

static PROBLEM_JSON: HeaderValue = HeaderValue::from_static("application/problem+json");

/// A problem+json response with `status` and the static `body`.
pub(crate) fn problem(status: StatusCode, body: &'static [u8]) -> http::Response<Bytes> {
    let mut res = http::Response::new(Bytes::from_static(body));
    *res.status_mut() = status;
    res.headers_mut().insert(CONTENT_TYPE, PROBLEM_JSON.clone());
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_decimal_matches_display() {
        for n in [0u64, 7, 9999, 10_000, 123_456_789, u64::MAX] {
            let mut b = bytes::BytesMut::new();
            push_decimal(&mut b, n);
            assert_eq!(&b[..], n.to_string().as_bytes());
        }
    }

    #[test]
    fn digit_table() {
        for n in [0u64, 9, 10, 42, 99, 100, 999, 1000, 4711, 9999, 10_000, u64::MAX] {
            assert_eq!(number(n).to_str().unwrap(), n.to_string());
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
