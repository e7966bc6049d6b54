//! Rate-limit keys for HTTP requests: the compact [`HttpKey`], the [`RequestInfo`] view that
//! extractors read, and [`KeyBy`], the extractors themselves.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{Extensions, HeaderMap, HeaderName, Method, Uri};

use super::client_ip::ClientIpConfig;

const INLINE: usize = 46;
const _: () = assert!(INLINE > super::client_ip::IPV4_MAX_LEN); // `write_ipv4` writes 16 bytes

/// A rate-limit key: UTF-8 text, stored inline up to 46 bytes (an IPv4 or IPv6 bucket, a route
/// plus an address, an API key) so building one allocates nothing; longer keys spill to the
/// heap. It hashes and compares its bytes (no UTF-8 re-validation on the hot path); a
/// `str`-keyed backend (Redis) gets [`HttpKey::as_str`].
///
/// ```
/// use tollgate::http::HttpKey;
/// let k = HttpKey::new("203.0.113.7");
/// assert_eq!(k.as_str(), "203.0.113.7");
/// assert_eq!(k, HttpKey::from("203.0.113.7"));
/// assert_eq!(HttpKey::new(&"x".repeat(100)).as_str().len(), 100);
/// ```
#[derive(Clone)]
pub struct HttpKey {
    repr: Repr,
}

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Arc<str>),
}

impl HttpKey {
    /// A key holding `s`.
    pub fn new(s: &str) -> HttpKey {
        let mut b = KeyBuilder::new();
        b.push_str(s);
        b.finish()
    }

    /// The key's bytes (its UTF-8 text).
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        match &self.repr {
            Repr::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            Repr::Heap(s) => s.as_bytes(),
        }
    }

    /// The key's text.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.repr {
            // Always valid: inline bytes are only ever written from whole `&str`s.
            Repr::Inline { len, bytes } => std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or(""),
            Repr::Heap(s) => s,
        }
    }
}

impl From<&str> for HttpKey {
    fn from(s: &str) -> HttpKey {
        HttpKey::new(s)
    }
}

impl PartialEq for HttpKey {
    #[inline]
    fn eq(&self, other: &HttpKey) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for HttpKey {}

impl Hash for HttpKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state)
    }
}

impl AsRef<str> for HttpKey {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for HttpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for HttpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Builds an [`HttpKey`] piece by piece without allocating while it fits inline.
///
/// ```
/// use std::fmt::Write;
/// use tollgate::http::KeyBuilder;
/// let mut b = KeyBuilder::new();
/// b.push_str("/login");
/// write!(b, "|{}", 42).unwrap();
/// assert_eq!(b.finish().as_str(), "/login|42");
/// ```
#[derive(Debug)]
pub struct KeyBuilder {
    len: usize,
    bytes: [u8; INLINE],
    spill: Option<String>,
}

impl Default for KeyBuilder {
    fn default() -> Self {
        KeyBuilder::new()
    }
}

impl KeyBuilder {
    /// An empty builder.
    pub fn new() -> KeyBuilder {
        KeyBuilder { len: 0, bytes: [0; INLINE], spill: None }
    }

    /// Appends `s`.
    pub fn push_str(&mut self, s: &str) {
        if let Some(spill) = &mut self.spill {
            spill.push_str(s);
            return;
        }
        let end = self.len + s.len();
        if end <= INLINE {
            self.bytes[self.len..end].copy_from_slice(s.as_bytes());
            self.len = end;
        } else {
            let mut spill = String::with_capacity(end);
            spill.push_str(std::str::from_utf8(&self.bytes[..self.len]).unwrap_or(""));
            spill.push_str(s);
            self.spill = Some(spill);
        }
    }

    /// What was written so far.
    ///
    /// ```
    /// let mut b = tollgate::http::KeyBuilder::new();
    /// b.push_str("/login");
    /// assert_eq!(b.as_str(), "/login");
    /// ```
    pub fn as_str(&self) -> &str {
        match &self.spill {
            Some(s) => s,
            // Always valid: only whole `&str`s are written.
            None => std::str::from_utf8(&self.bytes[..self.len]).unwrap_or(""),
        }
    }

    /// Bytes written so far.
    pub(crate) fn len(&self) -> usize {
        self.spill.as_ref().map_or(self.len, String::len)
    }

    /// Drops what was written after the first `len` bytes (a length this builder had).
    pub(crate) fn truncate(&mut self, len: usize) {
        match &mut self.spill {
            Some(s) if s.is_char_boundary(len) => s.truncate(len),
            Some(_) => {}
            None => self.len = self.len.min(len),
        }
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What was written so far, as bytes (no UTF-8 check).
    fn as_bytes(&self) -> &[u8] {
        match &self.spill {
            Some(s) => s.as_bytes(),
            None => self.bytes.get(..self.len).unwrap_or_default(),
        }
    }

    /// The finished key.
    pub fn finish(self) -> HttpKey {
        match self.spill {
            Some(s) => HttpKey { repr: Repr::Heap(Arc::from(s)) },
            // `len <= INLINE = 46` fits a u8.
            None => HttpKey { repr: Repr::Inline { len: self.len as u8, bytes: self.bytes } },
        }
    }
}

impl fmt::Write for KeyBuilder {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push_str(s);
        Ok(())
    }
}

/// The peer (socket) address of a connection, for servers that are not axum: insert it into the
/// request extensions (axum's `ConnectInfo<SocketAddr>` and a bare `SocketAddr` are read too).
///
/// ```
/// use tollgate::http::PeerAddr;
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(PeerAddr("192.0.2.1:5000".parse().unwrap()));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// What key extractors, predicates and cost functions see of a request.
#[derive(Debug)]
pub struct RequestInfo<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI, as the service the layer wraps sees it: inside `Router::nest`, without the
    /// nest's prefix. Route rules and skip paths use [`path`](Self::path), the full one.
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The extensions (authenticated user, axum `MatchedPath`, …).
    pub extensions: &'a Extensions,
    peer: Option<IpAddr>,
    /// axum's `MatchedPath`, once looked up ([`RequestInfo::remember_routing`]); `None`
    /// until then.
    matched: Option<Option<&'a str>>,
    /// The path as the client sent it, once looked up ([`RequestInfo::remember_path`]).
    original: Option<&'a str>,
    ip_config: &'a ClientIpConfig,
}

impl<'a> RequestInfo<'a> {
    pub(crate) fn new<B>(req: &'a http::Request<B>, ip_config: &'a ClientIpConfig) -> RequestInfo<'a> {
        let extensions = req.extensions();
        RequestInfo {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            extensions,
            peer: peer_addr(extensions),
            matched: None,
            original: None,
            ip_config,
        }
    }

    /// Looks axum's `MatchedPath` and the original path up once for every later
    /// [`matched_path`](Self::matched_path) and [`path`](Self::path) call: the middleware does
    /// so when its rules include route rules, which read them once per rule lookup. Without
    /// route rules they are looked up only if a key, predicate or skip path asks.
    pub(crate) fn remember_routing(&mut self) {
        self.matched = Some(matched_path(self.extensions));
        self.remember_path();
    }

    /// Looks the original path up once for every later [`path`](Self::path) call (the
    /// middleware does when it has skip paths).
    pub(crate) fn remember_path(&mut self) {
        if self.original.is_none() {
            self.original = Some(original_path(self.extensions).unwrap_or_else(|| self.uri.path()));
        }
    }

    /// The request path as the client sent it: inside a nested axum router (`Router::nest`),
    /// which strips the nest's prefix from the URI the inner router sees, the original path
    /// (axum's `OriginalUri`), so that route prefixes and skip paths are written in full, as
    /// axum's `MatchedPath` is.
    pub fn path(&self) -> &'a str {
        match self.original {
            Some(path) => path,
            None => original_path(self.extensions).unwrap_or_else(|| self.uri.path()),
        }
    }

    /// The peer's address (the TCP connection's other end), if the server recorded it.
    pub fn peer_ip(&self) -> Option<IpAddr> {
        self.peer
    }

    /// The client's address: the peer's, or behind trusted proxies the forwarded one
    /// ([`ClientIpConfig::client_ip`]).
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.ip_config.client_ip(self.peer, self.headers)
    }

    /// axum's matched route pattern (`/users/{id}`), when the layer runs inside a router.
    /// An extensions lookup, made once per request where the layer has route rules and on
    /// demand otherwise (only route rules and route keys need it).
    pub fn matched_path(&self) -> Option<&'a str> {
        match self.matched {
            Some(known) => known,
            None => matched_path(self.extensions),
        }
    }

    /// The route: the matched pattern when known, else the [`path`](Self::path).
    pub fn route(&self) -> &'a str {
        self.matched_path().unwrap_or_else(|| self.path())
    }
}

#[cfg(feature = "axum")]
fn matched_path(ext: &Extensions) -> Option<&str> {
    ext.get::<axum::extract::MatchedPath>().map(axum::extract::MatchedPath::as_str)
}

#[cfg(not(feature = "axum"))]
fn matched_path(_ext: &Extensions) -> Option<&str> {
    None
}

#[cfg(feature = "axum")]
fn original_path(ext: &Extensions) -> Option<&str> {
    ext.get::<axum::extract::OriginalUri>().map(|uri| uri.0.path())
}

#[cfg(not(feature = "axum"))]
fn original_path(_ext: &Extensions) -> Option<&str> {
    None
}

fn peer_addr(ext: &Extensions) -> Option<IpAddr> {
    #[cfg(feature = "axum")]
    if let Some(info) = ext.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0.ip());
    }
    if let Some(PeerAddr(addr)) = ext.get::<PeerAddr>() {
        return Some(addr.ip());
    }
    ext.get::<SocketAddr>().map(SocketAddr::ip)
}

type KeyFn = dyn Fn(&RequestInfo<'_>, &mut KeyBuilder) -> bool + Send + Sync;

/// How a rule keys requests. A request whose key cannot be extracted (a missing header, no
/// authenticated user, no known peer) is counted in one shared bucket, `-` (so leaving the
/// header out never escapes the limit); use [`KeyBy::or`] to fall back to another extractor.
///
/// ```
/// use tollgate::http::KeyBy;
/// // Per API key, falling back to the client address when the header is missing:
/// let by = KeyBy::header("x-api-key").or(KeyBy::ClientIp);
/// // Per route and client address:
/// let by = KeyBy::Route.and(KeyBy::ClientIp);
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub enum KeyBy {
    /// One bucket for everyone.
    Global,
    /// The peer address (bucketed), ignoring forwarded headers.
    PeerIp,
    /// The client address (bucketed), believing forwarded headers only from trusted proxies.
    ClientIp,
    /// The value of a header.
    Header(HeaderName),
    /// The route (matched pattern, else path).
    Route,
    /// A custom extractor: write the key into the builder and return `true`, or return `false`
    /// when the request has none.
    Custom(Arc<KeyFn>),
    /// All of these, joined with `|` (`route|address`): a part's own `\` and `|` are
    /// escaped (`\\`, `\|`), a missing part is `-` and a part that is `-` is `\-`.
    All(Arc<[KeyBy]>),
    /// The first of these that yields a key, after its position: `0:<key>`, `1:<key>`, ….
    First(Arc<[KeyBy]>),
}

impl fmt::Debug for KeyBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyBy::Global => f.write_str("Global"),
            KeyBy::PeerIp => f.write_str("PeerIp"),
            KeyBy::ClientIp => f.write_str("ClientIp"),
            KeyBy::Header(h) => f.debug_tuple("Header").field(h).finish(),
            KeyBy::Route => f.write_str("Route"),
            KeyBy::Custom(_) => f.write_str("Custom(..)"),
            KeyBy::All(v) => f.debug_tuple("All").field(v).finish(),
            KeyBy::First(v) => f.debug_tuple("First").field(v).finish(),
        }
    }
}

impl KeyBy {
    /// Whether `req`'s key names this client, not a bucket others share: an address, a header
    /// or a custom extractor yielded a value (an `All` with one such part, a `First` whose
    /// winner is one). `Global`, `Route`, and the shared `-` bucket of a key that could not be
    /// extracted (no such header) do not. Asked only when a rule refuses (auto-ban strikes).
    pub(crate) fn names_client(&self, req: &RequestInfo<'_>) -> bool {
        self.naming(req) == Some(true)
    }

    /// `None` if this key (or part) yields nothing for `req`, else whether what it yields names
    /// the client. One pass: each custom extractor runs once (a `First` does not run its winner
    /// again, an `All` does not run a part twice).
    fn naming(&self, req: &RequestInfo<'_>) -> Option<bool> {
        match self {
            KeyBy::Global | KeyBy::Route => Some(false),
            KeyBy::PeerIp => req.peer_ip().map(|_| true),
            KeyBy::ClientIp => req.client_ip().map(|_| true),
            KeyBy::Header(_) | KeyBy::Custom(_) => {
                self.write_part(req, &mut KeyBuilder::new()).then_some(true)
            }
            // Always yields (a missing part is written `-`).
            KeyBy::All(parts) => Some(parts.iter().any(|part| part.naming(req) == Some(true))),
            KeyBy::First(parts) => parts.iter().find_map(|part| part.naming(req)),
        }
    }

    /// Keys by a header's value (e.g. `x-api-key`). An invalid header name yields a key that
    /// is never present (so every request lands in the shared `-` bucket).
    pub fn header(name: &str) -> KeyBy {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => KeyBy::Header(h),
            Err(_) => KeyBy::Custom(Arc::new(|_, _| false)),
        }
    }

    /// Keys by an authenticated user that an earlier layer put in the request extensions.
    ///
    /// ```
    /// use tollgate::http::KeyBy;
    /// #[derive(Clone)]
    /// struct User(String);
    /// impl AsRef<str> for User { fn as_ref(&self) -> &str { &self.0 } }
    /// let by = KeyBy::extension::<User>();
    /// ```
    pub fn extension<T: AsRef<str> + Send + Sync + Clone + 'static>() -> KeyBy {
        KeyBy::Custom(Arc::new(|req, out| match req.extensions.get::<T>() {
            Some(user) => {
                out.push_str(user.as_ref());
                true
            }
            None => false,
        }))
    }

    /// A custom extractor.
    ///
    /// ```
    /// use tollgate::http::KeyBy;
    /// let by = KeyBy::custom(|req, out| {
    ///     out.push_str(req.uri.host().unwrap_or("none"));
    ///     true
    /// });
    /// ```
    pub fn custom(f: impl Fn(&RequestInfo<'_>, &mut KeyBuilder) -> bool + Send + Sync + 'static) -> KeyBy {
        KeyBy::Custom(Arc::new(f))
    }

    /// This and `other`, joined with `|` (e.g. route + IP).
    pub fn and(self, other: KeyBy) -> KeyBy {
        KeyBy::All(Arc::from([self, other]))
    }

    /// This, or `other` when this yields no key. The key says which one gave it (`0:` or `1:`
    /// before it), so an API key that spells an address never shares that address's bucket.
    ///
    /// ```
    /// use tollgate::http::{KeyBy, PeerAddr};
    /// # use tollgate::http::client_ip::ClientIpConfig;
    /// let by = KeyBy::header("x-api-key").or(KeyBy::ClientIp);
    /// let mut req = http::Request::get("/").header("x-api-key", "192.0.2.1").body(()).unwrap();
    /// req.extensions_mut().insert(PeerAddr("192.0.2.9:5000".parse().unwrap()));
    /// assert_eq!(by.key_of(&req, &ClientIpConfig::default()).as_str(), "0:192.0.2.1");
    /// req.headers_mut().remove("x-api-key");
    /// assert_eq!(by.key_of(&req, &ClientIpConfig::default()).as_str(), "1:192.0.2.9");
    /// ```
    pub fn or(self, other: KeyBy) -> KeyBy {
        KeyBy::First(Arc::from([self, other]))
    }

    /// The key of `req`.
    ///
    /// ```
    /// use tollgate::http::{KeyBy, PeerAddr};
    /// # use tollgate::http::client_ip::ClientIpConfig;
    /// let mut req = http::Request::get("/a").body(()).unwrap();
    /// req.extensions_mut().insert(PeerAddr("192.0.2.1:5000".parse().unwrap()));
    /// let key = KeyBy::Route.and(KeyBy::ClientIp).key_of(&req, &ClientIpConfig::default());
    /// assert_eq!(key.as_str(), "/a|192.0.2.1");
    /// ```
    pub fn key_of<B>(&self, req: &http::Request<B>, ip_config: &ClientIpConfig) -> HttpKey {
        self.extract(&RequestInfo::new(req, ip_config))
    }

    pub(crate) fn extract(&self, req: &RequestInfo<'_>) -> HttpKey {
        // The common case, a whole IPv4 address, written straight into the key.
        let ip = match self {
            KeyBy::ClientIp => req.client_ip(),
            KeyBy::PeerIp => req.peer_ip(),
            _ => None,
        };
        if let (Some(IpAddr::V4(v4)), true) =
            (ip.map(super::client_ip::canonical), req.ip_config.whole_ipv4())
        {
            let mut bytes = [0u8; INLINE];
            let len = super::client_ip::write_ipv4(v4, &mut bytes);
            // At most 15 bytes (`IPV4_MAX_LEN`): fits a u8.
            return HttpKey { repr: Repr::Inline { len: len as u8, bytes } };
        }
        let mut out = KeyBuilder::new();
        if !self.write(req, &mut out) {
            return HttpKey::new("-");
        }
        let key = out.finish();
        // A key that looks like a digest is digested too, so no client can send a long key's
        // digest as its own key and share that bucket (review finding).
        if key.as_bytes().len() > MAX_KEY_LEN || key.as_bytes().first() == Some(&b'#') {
            return digest(key.as_bytes());
        }
        key
    }

    fn write(&self, req: &RequestInfo<'_>, out: &mut KeyBuilder) -> bool {
        match self {
            KeyBy::Global => {
                out.push_str("*");
                true
            }
            KeyBy::PeerIp => write_ip(req.peer_ip(), req, out),
            KeyBy::ClientIp => write_ip(req.client_ip(), req, out),
            KeyBy::Header(name) => match req.headers.get(name).map(|v| v.to_str()) {
                Some(Ok(v)) if !v.is_empty() => {
                    out.push_str(v);
                    true
                }
                // Absent, empty, or not visible ASCII: no key.
                _ => false,
            },
            KeyBy::Route => {
                out.push_str(req.route());
                true
            }
            KeyBy::Custom(f) => f(req, out),
            // Each part escaped (`\` → `\\`, `|` → `\|`, a part that is `-` → `\-`) and a
            // missing one written `-`: the joined text names the parts exactly, so no header
            // value can be read as two parts or as a missing one (review finding).
            KeyBy::All(parts) => {
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        out.push_str("|");
                    }
                    // Written in place; escaped afterwards only if it needs it (rare).
                    let start = out.len();
                    if !part.write_part(req, out) {
                        out.truncate(start);
                        out.push_str("-");
                    } else if needs_escape(out.as_bytes().get(start..).unwrap_or_default()) {
                        let written = out.as_str().get(start..).unwrap_or_default().to_owned();
                        out.truncate(start);
                        push_escaped(out, &written);
                    }
                }
                true
            }
            // The winner's key after its position, `0:`, `1:`…: alternatives have keys of their
            // own, so an API key that spells an address does not share that address's bucket
            // (review finding: `header.or(ClientIp)` let one client spend another's).
            KeyBy::First(parts) => {
                let start = out.len();
                for (i, part) in parts.iter().enumerate() {
                    match DIGITS.get(i) {
                        Some(digit) => out.push_str(digit),
                        None => {
                            let _ = fmt::Write::write_fmt(out, format_args!("{i}"));
                        }
                    }
                    out.push_str(":");
                    if part.write_part(req, out) {
                        return true;
                    }
                    out.truncate(start); // what a failed alternative wrote goes too
                }
                false
            }
        }
    }
}

/// Positions of [`KeyBy::First`]'s alternatives, without formatting.
const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// Whether a part of [`KeyBy::All`] must be escaped.
fn needs_escape(part: &[u8]) -> bool {
    part == b"-" || part.iter().any(|&b| b == b'|' || b == b'\\')
}

impl KeyBy {
    /// [`write`](Self::write) for a part of [`KeyBy::All`] or [`KeyBy::First`], in place after
    /// what `out` already holds. A custom extractor gets a builder of its own, as it would
    /// alone: it may read the builder (`is_empty`, `as_str`), and must not see earlier parts
    /// (review finding: writing in place, `!out.is_empty()` said yes for a missing part).
    fn write_part(&self, req: &RequestInfo<'_>, out: &mut KeyBuilder) -> bool {
        let KeyBy::Custom(f) = self else {
            return self.write(req, out);
        };
        let mut own = KeyBuilder::new();
        let written = f(req, &mut own);
        if written {
            out.push_str(own.as_str());
        }
        written
    }
}

/// Keys longer than this are replaced by a digest of 33 bytes (`#` and 32 hex digits of a
/// 128-bit FNV-1a hash), so a client choosing its key (a header value) cannot choose how much
/// memory each key takes. A JWT-sized API key still gets a bucket of its own. A key that
/// starts with `#` is digested whatever its length, so no key can pass for another's digest.
///
/// ```
/// use tollgate::http::{KeyBy, MAX_KEY_LEN};
/// # use tollgate::http::client_ip::ClientIpConfig;
/// let token = "t".repeat(MAX_KEY_LEN + 1);
/// let req = http::Request::get("/").header("x-api-key", token.as_str()).body(()).unwrap();
/// let key = KeyBy::header("x-api-key").key_of(&req, &ClientIpConfig::default());
/// assert_eq!(key.as_str().len(), 33); // `#` and 32 hex digits
/// ```
pub const MAX_KEY_LEN: usize = 256;

/// The stand-in for a key longer than [`MAX_KEY_LEN`]: the same on every process and
/// version (Redis keys are shared), unlike a seeded hasher's. Not a cryptographic hash:
/// finding a collision with another client's key needs that key, which would serve as well.
fn digest(bytes: &[u8]) -> HttpKey {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let hash = bytes.iter().fold(OFFSET, |h, &b| (h ^ u128::from(b)).wrapping_mul(PRIME));
    let mut out = KeyBuilder::new();
    let _ = fmt::Write::write_fmt(&mut out, format_args!("#{hash:032x}"));
    out.finish()
}

/// Appends `part`, escaped for [`KeyBy::All`].
fn push_escaped(out: &mut KeyBuilder, part: &str) {
    if part == "-" {
        out.push_str("\\-");
    } else if !needs_escape(part.as_bytes()) {
        out.push_str(part);
    } else {
        for piece in part.split_inclusive(['|', '\\']) {
            match piece.as_bytes().last() {
                Some(&c @ (b'|' | b'\\')) => {
                    out.push_str(&piece[..piece.len() - 1]);
                    out.push_str(if c == b'|' { "\\|" } else { "\\\\" });
                }
                _ => out.push_str(piece),
            }
        }
    }
}

fn write_ip(ip: Option<IpAddr>, req: &RequestInfo<'_>, out: &mut KeyBuilder) -> bool {
    match ip {
        Some(ip) => req.ip_config.write_bucket(ip, out).is_ok(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which keys name the client rather than a bucket others share (only denials of the
    /// former are auto-ban strikes).
    #[test]
    fn keys_that_name_the_client() {
        let all = |v: Vec<KeyBy>| KeyBy::All(v.into());
        let first = |v: Vec<KeyBy>| KeyBy::First(v.into());
        let cfg = ClientIpConfig::default();
        let with_key = with_headers(&[("x-api-key", "k1")]); // and a peer address
        let anonymous = http::Request::get("/r").body(()).unwrap(); // no header, no address
        for (key, named, anon) in [
            (KeyBy::Global, false, false),
            (KeyBy::Route, false, false),
            (KeyBy::ClientIp, true, false),
            (KeyBy::PeerIp, true, false),
            (KeyBy::header("x-api-key"), true, false),
            (all(vec![KeyBy::Route, KeyBy::Global]), false, false),
            (all(vec![KeyBy::Route, KeyBy::header("x-api-key")]), true, false),
            (first(vec![KeyBy::header("x-api-key"), KeyBy::Global]), true, false),
            (first(vec![KeyBy::Global, KeyBy::header("x-api-key")]), false, false),
        ] {
            assert_eq!(key.names_client(&RequestInfo::new(&with_key, &cfg)), named, "{key:?}");
            assert_eq!(key.names_client(&RequestInfo::new(&anonymous, &cfg)), anon, "{key:?} anonymous");
        }
    }

    #[test]
    fn inline_and_heap_keys_compare_by_text() {
        let long = "y".repeat(47);
        assert_eq!(HttpKey::new(&long).as_bytes(), long.as_bytes());
        assert_ne!(HttpKey::new("a"), HttpKey::new("a|"));
    }

    #[test]
    fn builder_spills_exactly_at_the_boundary() {
        let mut b = KeyBuilder::new();
        b.push_str(&"a".repeat(46));
        assert!(b.spill.is_none());
        b.push_str("é");
        assert_eq!(b.finish().as_str(), format!("{}é", "a".repeat(46)));
    }

    #[test]
    fn ipv4_fast_path_matches_the_bucket_text() {
        let key = |peer: &str, cfg: &ClientIpConfig| {
            let mut req = http::Request::get("/").body(()).unwrap();
            req.extensions_mut().insert(PeerAddr(peer.parse().unwrap()));
            (KeyBy::ClientIp.key_of(&req, cfg), KeyBy::PeerIp.key_of(&req, cfg))
        };
        let whole = ClientIpConfig::default();
        for (peer, text) in [
            ("0.0.0.0:1", "0.0.0.0"),
            ("9.10.99.100:1", "9.10.99.100"),
            ("255.255.255.255:1", "255.255.255.255"),
            ("[::ffff:192.0.2.7]:1", "192.0.2.7"),
        ] {
            let (client, peer_key) = key(peer, &whole);
            assert_eq!((client.as_str(), peer_key.as_str()), (text, text));
            assert_eq!(client, HttpKey::new(text)); // same bytes, same hash as a built key
        }
        let by_24 = ClientIpConfig::default().ipv4_prefix(24);
        assert_eq!(key("192.0.2.7:1", &by_24).0.as_str(), "192.0.2.0/24");
    }

    #[test]
    fn missing_header_is_shared_bucket() {
        let req = http::Request::get("/").body(()).unwrap();
        let cfg = ClientIpConfig::default();
        assert_eq!(KeyBy::header("x-api-key").key_of(&req, &cfg).as_str(), "-");
        assert_eq!(KeyBy::header("x-api-key").or(KeyBy::Route).key_of(&req, &cfg).as_str(), "1:/");
        assert_eq!(KeyBy::header("bad name").key_of(&req, &cfg).as_str(), "-");
    }

    fn with_headers(headers: &[(&str, &str)]) -> http::Request<()> {
        let mut req = http::Request::get("/r").body(()).unwrap();
        for (name, value) in headers {
            req.headers_mut()
                .append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        req.extensions_mut().insert(PeerAddr("192.0.2.50:1".parse().unwrap()));
        req
    }

    /// Review finding: `header.or(ClientIp)` keyed an API key that spells an address and that
    /// address alike, so one client could spend another's bucket.
    #[test]
    fn alternatives_have_keys_of_their_own() {
        let cfg = ClientIpConfig::default();
        let by = KeyBy::header("x-api-key").or(KeyBy::ClientIp);
        let victim = by.key_of(&with_headers(&[]), &cfg);
        let attacker = by.key_of(&with_headers(&[("x-api-key", "192.0.2.50")]), &cfg);
        assert_eq!((victim.as_str(), attacker.as_str()), ("1:192.0.2.50", "0:192.0.2.50"));
        let three = KeyBy::header("a").or(KeyBy::header("b")).or(KeyBy::Route);
        assert_eq!(three.key_of(&with_headers(&[("b", "k")]), &cfg).as_str(), "0:1:k");
        assert_eq!(three.key_of(&with_headers(&[]), &cfg).as_str(), "1:/r");
    }

    /// Review finding: parts were joined unescaped, so `("x|y", "z")` and `("x", "y|z")`, or a
    /// part that is `-` and a missing one, shared a key.
    #[test]
    fn joined_parts_are_escaped_so_keys_name_their_parts() {
        let cfg = ClientIpConfig::default();
        let by = KeyBy::header("a").and(KeyBy::header("b"));
        let key = |h: &[(&str, &str)]| by.key_of(&with_headers(h), &cfg).as_str().to_owned();
        assert_eq!(key(&[("a", "x|y"), ("b", "z")]), "x\\|y|z");
        assert_eq!(key(&[("a", "x"), ("b", "y|z")]), "x|y\\|z");
        assert_eq!(key(&[("a", "-"), ("b", "z")]), "\\-|z");
        assert_eq!(key(&[("b", "z")]), "-|z");
        assert_eq!(key(&[("a", "x\\"), ("b", "|z")]), "x\\\\|\\|z");
        assert_eq!(key(&[("a", "x"), ("b", "\\|z")]), "x|\\\\\\|z");
        assert_eq!(key(&[("a", "plain"), ("b", "v")]), "plain|v");
        let mut seen = std::collections::HashSet::new();
        for a in ["", "-", "|", "\\", "x|", "|x", "\\|", "x"] {
            for b in ["", "-", "|", "\\", "x|", "|x", "\\|", "x"] {
                let h: Vec<(&str, &str)> =
                    [("a", a), ("b", b)].into_iter().filter(|(_, v)| !v.is_empty()).collect();
                assert!(seen.insert(key(&h)), "{a:?} {b:?} shares {:?}", key(&h));
            }
        }
    }

    /// Review finding: a header key was stored whole, so a client chose each key's size.
    #[test]
    fn long_keys_are_replaced_by_a_digest() {
        let cfg = ClientIpConfig::default();
        let by = KeyBy::header("x-api-key");
        let key = |v: &str| by.key_of(&with_headers(&[("x-api-key", v)]), &cfg);
        let at_max = "k".repeat(MAX_KEY_LEN);
        assert_eq!(key(&at_max).as_str(), at_max);
        let long = |c: char| format!("{}{c}", "k".repeat(64 * 1024));
        let (a, b) = (key(&long('a')), key(&long('b')));
        assert_eq!(a.as_str().len(), 33);
        assert!(a.as_str().starts_with('#'));
        assert_ne!(a, b);
        assert_eq!(a, key(&long('a'))); // the same on every call and process
                                        // A fixed value: the digest must not change across versions (Redis keys are shared).
        assert_eq!(digest(b"").as_str(), "#6c62272e07bb014262b821756295c58d");
        // A client sending a long key's digest as its key gets a bucket of its own (review
        // finding: the digest text, shown by the admin API and in logs, was a valid key).
        let forged = key(a.as_str());
        assert_ne!(forged, a);
        assert_eq!(forged.as_str().len(), 33);
        assert_ne!(key("#short"), HttpKey::new("#short"));
    }

    /// A custom extractor inside `and`/`or` sees an empty builder of its own, as alone (review
    /// finding: writing parts in place, `!out.is_empty()` reported a missing part as written).
    #[test]
    fn a_custom_part_sees_only_its_own_builder() {
        let cfg = ClientIpConfig::default();
        let optional = || {
            KeyBy::custom(|req, out| {
                if let Some(v) = req.headers.get("x").and_then(|v| v.to_str().ok()) {
                    out.push_str(v);
                }
                !out.is_empty()
            })
        };
        let req = with_headers(&[("a", "y")]);
        assert_eq!(optional().or(KeyBy::header("a")).key_of(&req, &cfg).as_str(), "1:y");
        assert_eq!(KeyBy::header("a").and(optional()).key_of(&req, &cfg).as_str(), "y|-");
        let both = with_headers(&[("a", "y"), ("x", "z|")]);
        assert_eq!(KeyBy::header("a").and(optional()).key_of(&both, &cfg).as_str(), "y|z\\|");
        // A spilled builder truncated back to empty is empty.
        let mut b = KeyBuilder::new();
        b.push_str("0:");
        b.push_str(&"y".repeat(60));
        b.truncate(0);
        assert!(b.is_empty());
        assert_eq!(b.finish().as_str(), "");
    }

    /// An alternative that writes part of a key and then reports none leaves nothing behind,
    /// and a part written in place is escaped as one built apart would be.
    #[test]
    fn failed_alternatives_and_escaped_parts_leave_exact_keys() {
        let cfg = ClientIpConfig::default();
        let half = KeyBy::custom(|_, out| {
            out.push_str("partial|");
            false
        });
        let by = half.clone().or(KeyBy::header("a"));
        assert_eq!(by.key_of(&with_headers(&[("a", "x")]), &cfg).as_str(), "1:x");
        let long = "y".repeat(60); // spills past the inline buffer, then truncates
        let spill = KeyBy::custom(move |_, out| {
            out.push_str(&long);
            false
        });
        assert_eq!(spill.or(KeyBy::Route).key_of(&with_headers(&[]), &cfg).as_str(), "1:/r");
        let and = KeyBy::All([half, KeyBy::header("a"), KeyBy::header("b")].into());
        assert_eq!(and.key_of(&with_headers(&[("a", "p|q"), ("b", "-")]), &cfg).as_str(), "-|p\\|q|\\-");
        let many: Vec<KeyBy> =
            (0..12).map(|i| if i == 11 { KeyBy::Route } else { KeyBy::header("none") }).collect();
        assert_eq!(KeyBy::First(many.into()).key_of(&with_headers(&[]), &cfg).as_str(), "11:/r");
    }
}
