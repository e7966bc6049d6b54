//! Which client sent a request: the peer address, or, behind proxies you trust, the address
//! those proxies recorded in `X-Forwarded-For` or RFC 7239 `Forwarded` (DESIGN.md §9).
//!
//! The walk goes from the right (the hop nearest to us): trusted proxies are skipped and the
//! first untrusted address wins. Anything a client wrote to the left of that is never believed,
//! so a client behind no trusted proxy cannot choose its key by sending `X-Forwarded-For`.
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are unwrapped before any comparison, and
//! addresses are bucketed by prefix (IPv6 `/64` by default: one host usually owns a whole /64).
//!
//! The parsers never panic and never allocate; they are fuzzed
//! (`fuzz/fuzz_targets/forwarded.rs`) and the corpus is replayed in `tests/fuzz_corpus_forwarded.rs`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use http::HeaderMap;

/// An address block such as `10.0.0.0/8` or `2001:db8::/32` (a bare address is a /32 or /128).
///
/// ```
/// use tollgate::http::client_ip::Cidr;
/// let net: Cidr = "10.0.0.0/8".parse().unwrap();
/// assert!(net.contains("10.1.2.3".parse().unwrap()));
/// assert!(!net.contains("11.0.0.1".parse().unwrap()));
/// assert!("10.0.0.0/33".parse::<Cidr>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a CIDR string was rejected.
///
/// ```
/// use tollgate::http::client_ip::{Cidr, CidrError};
/// assert_eq!("1.2.3.4/40".parse::<Cidr>(), Err(CidrError::PrefixTooLong { prefix: 40, max: 32 }));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CidrError {
    /// The address part is not an IP address.
    BadAddress,
    /// The prefix length is not a number.
    BadPrefix,
    /// The prefix is longer than the address.
    PrefixTooLong {
        /// The prefix given.
        prefix: u32,
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CidrError::BadAddress => f.write_str("not an IP address"),
            CidrError::BadPrefix => f.write_str("prefix length is not a number"),
            CidrError::PrefixTooLong { prefix, max } => {
                write!(f, "prefix length {prefix} is longer than the address ({max} bits)")
            }
        }
    }
}

impl std::error::Error for CidrError {}

impl Cidr {
    /// The block of `addr` with a `prefix`-bit mask (IPv4-mapped addresses are unwrapped first).
    ///
    /// ```
    /// use tollgate::http::client_ip::Cidr;
    /// let net = Cidr::new("192.168.7.9".parse().unwrap(), 16).unwrap();
    /// assert_eq!(net.to_string(), "192.168.0.0/16");
    /// ```
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, CidrError> {
        let addr = canonical(addr);
        let max = max_prefix(addr);
        if prefix > max {
            return Err(CidrError::PrefixTooLong { prefix: u32::from(prefix), max });
        }
        Ok(Cidr { network: mask(addr, prefix), prefix })
    }

    /// Whether `addr` (after unwrapping IPv4-mapped IPv6) lies in this block.
    ///
    /// ```
    /// use tollgate::http::client_ip::Cidr;
    /// let net: Cidr = "127.0.0.0/8".parse().unwrap();
    /// assert!(net.contains("::ffff:127.0.0.1".parse().unwrap()));
    /// ```
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        addr.is_ipv4() == self.network.is_ipv4() && mask(addr, self.prefix) == self.network
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| CidrError::BadAddress)?;
        let addr = canonical(addr);
        let max = max_prefix(addr);
        let prefix = match prefix {
            None => max,
            Some(p) => {
                let p: u32 = p.parse().map_err(|_| CidrError::BadPrefix)?;
                u8::try_from(p)
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or(CidrError::PrefixTooLong { prefix: p, max })?
            }
        };
        Cidr::new(addr, prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Which header your trusted proxies write the client address into. Configure the one they
/// really set: a header they pass through untouched is written by the client.
///
/// ```
/// use tollgate::http::client_ip::ProxyHeader;
/// assert_eq!(ProxyHeader::default(), ProxyHeader::XForwardedFor);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ProxyHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (the de-facto standard).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for="[2001:db8::1]:4711"`.
    Forwarded,
}

/// How to find the client address: which proxies to believe, which header they write, and how
/// to bucket addresses into keys.
///
/// The default trusts no proxy (the peer address is the client) and buckets IPv6 by /64.
///
/// ```
/// use std::net::IpAddr;
/// use http::HeaderMap;
/// use tollgate::http::client_ip::ClientIpConfig;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("x-forwarded-for", "1.2.3.4, 10.0.0.7".parse().unwrap());
/// let peer: IpAddr = "10.0.0.1".parse().unwrap();
///
/// // Nobody trusted: the header is ignored.
/// let none = ClientIpConfig::default();
/// assert_eq!(none.client_ip(Some(peer), &headers), Some(peer));
///
/// // The proxies in 10/8 are trusted: the rightmost untrusted address is the client.
/// let trusted = ClientIpConfig::default().trust("10.0.0.0/8".parse().unwrap());
/// assert_eq!(trusted.client_ip(Some(peer), &headers), Some("1.2.3.4".parse().unwrap()));
/// ```
#[derive(Clone, Debug)]
pub struct ClientIpConfig {
    trusted: Vec<Cidr>,
    header: ProxyHeader,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
}

impl Default for ClientIpConfig {
    fn default() -> Self {
        ClientIpConfig {
            trusted: Vec::new(),
            header: ProxyHeader::default(),
            ipv4_prefix: 32,
            ipv6_prefix: 64,
        }
    }
}

impl ClientIpConfig {
    /// Trusts the proxies in `net` (call once per block).
    pub fn trust(mut self, net: Cidr) -> Self {
        self.trusted.push(net);
        self
    }

    /// Trusts every block in `nets`.
    ///
    /// ```
    /// use tollgate::http::client_ip::{Cidr, ClientIpConfig};
    /// let nets: Vec<Cidr> = ["10.0.0.0/8", "fd00::/8"].iter().map(|s| s.parse().unwrap()).collect();
    /// let cfg = ClientIpConfig::default().trust_all(nets);
    /// assert!(cfg.is_trusted("fd00::1".parse().unwrap()));
    /// ```
    pub fn trust_all(mut self, nets: impl IntoIterator<Item = Cidr>) -> Self {
        self.trusted.extend(nets);
        self
    }

    /// Which header the trusted proxies write (default `X-Forwarded-For`).
    pub fn header(mut self, header: ProxyHeader) -> Self {
        self.header = header;
        self
    }

    /// Bucket IPv6 clients by this prefix length (default 64; 128 keys each address apart).
    /// Values above 128 are clamped.
    ///
    /// ```
    /// use tollgate::http::client_ip::ClientIpConfig;
    /// let cfg = ClientIpConfig::default().ipv6_prefix(48);
    /// assert_eq!(cfg.bucket("2001:db8:1:2::9".parse().unwrap()).to_string(), "2001:db8:1::/48");
    /// ```
    pub fn ipv6_prefix(mut self, prefix: u8) -> Self {
        self.ipv6_prefix = prefix.min(128);
        self
    }

    /// Bucket IPv4 clients by this prefix length (default 32: each address apart). Clamped to 32.
    pub fn ipv4_prefix(mut self, prefix: u8) -> Self {
        self.ipv4_prefix = prefix.min(32);
        self
    }

    /// Whether any proxy is trusted.
    pub fn trusts_any(&self) -> bool {
        !self.trusted.is_empty()
    }

    /// Whether `addr` belongs to a trusted proxy.
    pub fn is_trusted(&self, addr: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(addr))
    }

    /// The client's address: the peer's, unless the peer is a trusted proxy, in which case the
    /// forwarded header is walked from the right and the first untrusted address wins. If that
    /// entry is not an address (`unknown`, an obfuscated name, garbage), the nearest trusted hop
    /// to its right is used (never a value the client could choose). If every hop is trusted,
    /// the leftmost one is. `None` only when the peer is unknown.
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = canonical(peer?);
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        let mut walk = Walk::new(self);
        match self.header {
            ProxyHeader::XForwardedFor => {
                for value in headers.get_all("x-forwarded-for") {
                    // A value that is not visible ASCII is one unparseable hop.
                    match value.to_str() {
                        Ok(v) => parse_x_forwarded_for(v).for_each(|hop| walk.push(hop)),
                        Err(_) => walk.push(None),
                    }
                }
            }
            ProxyHeader::Forwarded => {
                for value in headers.get_all("forwarded") {
                    match value.to_str() {
                        Ok(v) => parse_forwarded(v).for_each(|hop| walk.push(hop)),
                        Err(_) => walk.push(None),
                    }
                }
            }
        }
        // The peer itself is the rightmost hop (trusted: we checked).
        walk.push(Some(peer));
        walk.finish().or(Some(peer))
    }

    /// The bucket `addr` falls into (its /32 or /64 block by default), as a [`Cidr`].
    pub fn bucket(&self, addr: IpAddr) -> Cidr {
        let addr = canonical(addr);
        let prefix = if addr.is_ipv4() { self.ipv4_prefix } else { self.ipv6_prefix };
        Cidr { network: mask(addr, prefix), prefix }
    }

    /// Whether IPv4 addresses are keyed whole (the default /32), so their key is their text.
    pub(crate) fn whole_ipv4(&self) -> bool {
        self.ipv4_prefix == 32
    }

    /// Writes the bucket key of `addr`: the plain address for a full-length prefix
    /// (`203.0.113.7`), else `network/prefix` (`2001:db8:1:2::/64`).
    pub(crate) fn write_bucket(&self, addr: IpAddr, out: &mut impl fmt::Write) -> fmt::Result {
        let bucket = self.bucket(addr);
        if let (IpAddr::V4(v4), 32) = (bucket.network, bucket.prefix) {
            // The common case, without the formatting machinery (~4x faster than `Display`).
            let mut buf = [0u8; 15];
            let len = write_ipv4(v4, &mut buf);
            out.write_str(std::str::from_utf8(buf.get(..len).unwrap_or_default()).map_err(|_| fmt::Error)?)
        } else if bucket.prefix == max_prefix(bucket.network) {
            write!(out, "{}", bucket.network)
        } else {
            write!(out, "{bucket}")
        }
    }
}

/// Writes `v4` in dotted decimal at the start of `out` (at least 15 bytes); returns the length.
pub(crate) fn write_ipv4(v4: std::net::Ipv4Addr, out: &mut [u8]) -> usize {
    let mut len = 0;
    let mut push = |b: u8| {
        if let Some(slot) = out.get_mut(len) {
            *slot = b;
            len += 1;
        }
    };
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            push(b'.');
        }
        if octet >= 100 {
            push(b'0' + octet / 100);
        }
        if octet >= 10 {
            push(b'0' + octet / 10 % 10);
        }
        push(b'0' + octet % 10);
    }
    len
}

/// The right-to-left walk, done in one left-to-right pass (no buffer): the answer is the last
/// untrusted hop, or, if that hop is not an address, the trusted hop right after it.
struct Walk<'a> {
    config: &'a ClientIpConfig,
    state: WalkState,
}

enum WalkState {
    /// No hop yet.
    Empty,
    /// The rightmost untrusted hop so far is not an address: take the next trusted one.
    Pending,
    /// The answer if the list ended here.
    Found(IpAddr),
}

impl<'a> Walk<'a> {
    fn new(config: &'a ClientIpConfig) -> Self {
        Walk { config, state: WalkState::Empty }
    }

    fn push(&mut self, hop: Option<IpAddr>) {
        match hop.map(canonical) {
            Some(ip) if self.config.is_trusted(ip) => match self.state {
                WalkState::Empty | WalkState::Pending => self.state = WalkState::Found(ip),
                WalkState::Found(_) => {}
            },
            Some(ip) => self.state = WalkState::Found(ip),
            None => self.state = WalkState::Pending,
        }
    }

    fn finish(self) -> Option<IpAddr> {
        match self.state {
            WalkState::Found(ip) => Some(ip),
            WalkState::Empty | WalkState::Pending => None,
        }
    }
}

/// The hops of one `X-Forwarded-For` value, left to right: `Some(ip)` for an address (bare,
/// `[v6]`, `v4:port` or `[v6]:port`), `None` for anything else. Never panics, never allocates.
///
/// ```
/// use tollgate::http::client_ip::parse_x_forwarded_for;
/// let hops: Vec<_> = parse_x_forwarded_for("1.2.3.4, [2001:db8::1]:80,junk").collect();
/// assert_eq!(hops, vec![Some("1.2.3.4".parse().unwrap()), Some("2001:db8::1".parse().unwrap()), None]);
/// ```
pub fn parse_x_forwarded_for(value: &str) -> impl Iterator<Item = Option<IpAddr>> + '_ {
    value.split(',').map(|hop| parse_node(hop.trim()))
}

/// The `for=` nodes of one RFC 7239 `Forwarded` value, left to right: `Some(ip)` for an address
/// (`for=192.0.2.60`, `for="[2001:db8:cafe::17]:4711"`), `None` for an element without `for`,
/// `unknown`, an obfuscated identifier or garbage. Commas and semicolons inside quoted strings
/// are respected. Never panics, never allocates.
///
/// ```
/// use tollgate::http::client_ip::parse_forwarded;
/// let hops: Vec<_> =
///     parse_forwarded(r#"for=192.0.2.60;proto=http, For="[2001:db8:cafe::17]:4711", for=unknown"#).collect();
/// assert_eq!(hops, vec![Some("192.0.2.60".parse().unwrap()), Some("2001:db8:cafe::17".parse().unwrap()), None]);
/// ```
pub fn parse_forwarded(value: &str) -> impl Iterator<Item = Option<IpAddr>> + '_ {
    QuotedSplit { rest: Some(value), sep: b',' }.map(forwarded_element)
}

/// Splits on `sep` outside double-quoted strings (with `\` escapes inside them).
struct QuotedSplit<'a> {
    rest: Option<&'a str>,
    sep: u8,
}

impl<'a> Iterator for QuotedSplit<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let s = self.rest?;
        let bytes = s.as_bytes();
        let mut in_quotes = false;
        let mut escaped = false;
        for (i, &b) in bytes.iter().enumerate() {
            if in_quotes {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_quotes = false;
                }
            } else if b == b'"' {
                in_quotes = true;
            } else if b == self.sep {
                // `sep` is ASCII, so `i` and `i + 1` are char boundaries.
                self.rest = s.get(i + 1..);
                return s.get(..i);
            }
        }
        self.rest = None;
        Some(s)
    }
}

fn forwarded_element(element: &str) -> Option<IpAddr> {
    let mut found = None;
    for pair in (QuotedSplit { rest: Some(element), sep: b';' }) {
        let Some((name, value)) = pair.split_once('=') else { continue };
        if name.trim().eq_ignore_ascii_case("for") {
            // A repeated `for` makes the element ambiguous: treat it as garbage.
            if found.is_some() {
                return None;
            }
            found = Some(value.trim());
        }
    }
    let value = found?;
    let value = match value.strip_prefix('"') {
        // Quoted: the node must not contain escapes (no address does).
        Some(inner) => inner.strip_suffix('"').filter(|v| !v.contains(['\\', '"']))?,
        None => value,
    };
    parse_node(value)
}

/// One node: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:80`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if node.len() > 64 {
        return None; // no address is this long; don't spend time on it
    }
    if let Some(rest) = node.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return inside.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    // `v4:port` (a bare IPv6 has several colons and was handled above).
    let (host, port) = node.rsplit_once(':')?;
    if !is_port(port) {
        return None;
    }
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// `::ffff:a.b.c.d` → `a.b.c.d`; every other address unchanged.
///
/// ```
/// use tollgate::http::client_ip::canonical;
/// assert_eq!(canonical("::ffff:1.2.3.4".parse().unwrap()), "1.2.3.4".parse::<std::net::IpAddr>().unwrap());
/// ```
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix.min(128))).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", v.parse().unwrap());
        h
    }

    #[test]
    fn masks() {
        assert_eq!(mask(ip("1.2.3.4"), 0), ip("0.0.0.0"));
        assert_eq!(mask(ip("1.2.3.4"), 24), ip("1.2.3.0"));
        assert_eq!(mask(ip("1.2.3.4"), 32), ip("1.2.3.4"));
        assert_eq!(mask(ip("2001:db8:1:2:3:4:5:6"), 64), ip("2001:db8:1:2::"));
        assert_eq!(mask(ip("2001:db8:1:2:3:4:5:6"), 0), ip("::"));
    }

    #[test]
    fn rightmost_untrusted_wins() {
        let cfg = ClientIpConfig::default().trust("10.0.0.0/8".parse().unwrap());
        let peer = Some(ip("10.0.0.1"));
        assert_eq!(cfg.client_ip(peer, &xff("6.6.6.6, 1.2.3.4, 10.0.0.2")), Some(ip("1.2.3.4")));
        // All trusted: the leftmost.
        assert_eq!(cfg.client_ip(peer, &xff("10.9.9.9, 10.0.0.2")), Some(ip("10.9.9.9")));
        // Garbage in the deciding position: the nearest trusted hop to its right.
        assert_eq!(cfg.client_ip(peer, &xff("1.2.3.4, unknown, 10.0.0.2")), Some(ip("10.0.0.2")));
        assert_eq!(cfg.client_ip(peer, &xff("unknown")), peer);
        // Untrusted peer: headers ignored.
        assert_eq!(cfg.client_ip(Some(ip("8.8.8.8")), &xff("1.2.3.4")), Some(ip("8.8.8.8")));
        // Mapped peer is unwrapped before the trust check.
        assert_eq!(cfg.client_ip(Some(ip("::ffff:10.0.0.1")), &xff("1.2.3.4")), Some(ip("1.2.3.4")));
    }

    #[test]
    fn multiple_headers_concatenate() {
        let cfg = ClientIpConfig::default().trust("10.0.0.0/8".parse().unwrap());
        let mut h = xff("6.6.6.6");
        h.append("x-forwarded-for", "1.2.3.4, 10.1.1.1".parse().unwrap());
        assert_eq!(cfg.client_ip(Some(ip("10.0.0.1")), &h), Some(ip("1.2.3.4")));
    }

    #[test]
    fn forwarded_nodes() {
        let hops: Vec<_> =
            parse_forwarded(r#"for="_gazonk", for=198.51.100.17:80;by=x, for="1.2.3.4,5.6.7.8""#).collect();
        assert_eq!(hops, vec![None, Some(ip("198.51.100.17")), None]);
        assert_eq!(parse_forwarded("proto=https").collect::<Vec<_>>(), vec![None]);
        assert_eq!(parse_forwarded(r#"for="[::1]:x""#).collect::<Vec<_>>(), vec![None]);
        assert_eq!(parse_forwarded("for=1.2.3.4;for=5.6.7.8").collect::<Vec<_>>(), vec![None]);
        assert_eq!(parse_forwarded("\"").collect::<Vec<_>>(), vec![None]);
    }

    #[test]
    fn fast_ipv4_text_matches_display() {
        let cfg = ClientIpConfig::default();
        for a in ["0.0.0.0", "255.255.255.255", "10.0.100.9", "1.22.233.4", "100.10.1.0"] {
            let mut s = String::new();
            cfg.write_bucket(ip(a), &mut s).unwrap();
            assert_eq!(s, a);
        }
    }

    #[test]
    fn buckets() {
        let cfg = ClientIpConfig::default();
        let mut s = String::new();
        cfg.write_bucket(ip("2001:db8:1:2:aaaa::1"), &mut s).unwrap();
        assert_eq!(s, "2001:db8:1:2::/64");
        s.clear();
        cfg.write_bucket(ip("::ffff:9.8.7.6"), &mut s).unwrap();
        assert_eq!(s, "9.8.7.6");
    }
}
