//! Which client sent a request: the peer address, or, behind proxies you trust, the address
//! those proxies recorded in `X-Forwarded-For` or RFC 7239 `Forwarded`.
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
/// An IPv4-mapped IPv6 block (`::ffff:10.0.0.0/104`) is the IPv4 block it maps (`10.0.0.0/8`:
/// the prefix counts IPv6 bits, 96 of which are the mapping), since addresses are unwrapped
/// before every comparison. A mapped address with a prefix shorter than 96 would mix IPv4 and
/// IPv6 and is refused ([`CidrError::MappedPrefixTooShort`]).
///
/// ```
/// use tollgate::http::client_ip::Cidr;
/// let net: Cidr = "10.0.0.0/8".parse().unwrap();
/// assert!(net.contains("10.1.2.3".parse().unwrap()));
/// assert!(!net.contains("11.0.0.1".parse().unwrap()));
/// assert!("10.0.0.0/33".parse::<Cidr>().is_err());
/// let mapped: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
/// assert_eq!(mapped, "10.0.0.0/8".parse().unwrap());
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
    /// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) with a prefix shorter than 96: the block
    /// would reach past the mapped range. Write the IPv4 block, or a plain IPv6 one.
    MappedPrefixTooShort {
        /// The prefix given (in IPv6 bits).
        prefix: u8,
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
            CidrError::MappedPrefixTooShort { prefix } => write!(
                f,
                "prefix length {prefix} of an IPv4-mapped address is shorter than 96 (the mapping's own bits)"
            ),
        }
    }
}

impl std::error::Error for CidrError {}

impl Cidr {
    /// The block of `addr` with a `prefix`-bit mask. An IPv4-mapped IPv6 `addr` is unwrapped,
    /// and its `prefix` (in IPv6 bits, at least 96) becomes `prefix - 96` IPv4 bits.
    ///
    /// ```
    /// use tollgate::http::client_ip::{Cidr, CidrError};
    /// let net = Cidr::new("192.168.7.9".parse().unwrap(), 16).unwrap();
    /// assert_eq!(net.to_string(), "192.168.0.0/16");
    /// let mapped = Cidr::new("::ffff:192.168.7.9".parse().unwrap(), 112).unwrap();
    /// assert_eq!(mapped, net);
    /// let short = Cidr::new("::ffff:192.168.7.9".parse().unwrap(), 64);
    /// assert_eq!(short, Err(CidrError::MappedPrefixTooShort { prefix: 64 }));
    /// ```
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, CidrError> {
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() && prefix <= 128 => {
                match prefix.checked_sub(96) {
                    Some(v4_prefix) => (canonical(addr), v4_prefix),
                    None => return Err(CidrError::MappedPrefixTooShort { prefix }),
                }
            }
            _ => (addr, prefix),
        };
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
        // Checked against the address as written (128 bits for a mapped one); `Cidr::new`
        // unwraps a mapped address and translates its prefix.
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
            // Raw bytes, split before decoding: a byte that is not visible ASCII (the client's
            // part of a line a proxy appended to) makes only its own hop unparseable, never the
            // hops a proxy wrote after it on the same line.
            ProxyHeader::XForwardedFor => {
                for value in headers.get_all("x-forwarded-for") {
                    parse_x_forwarded_for_bytes(value.as_bytes()).for_each(|hop| walk.push(hop));
                }
            }
            ProxyHeader::Forwarded => {
                for value in headers.get_all("forwarded") {
                    parse_forwarded_bytes(value.as_bytes()).for_each(|hop| walk.push(hop));
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
            let mut buf = [0u8; IPV4_MAX_LEN + 1];
            let len = write_ipv4(v4, &mut buf);
            out.write_str(std::str::from_utf8(buf.get(..len).unwrap_or_default()).map_err(|_| fmt::Error)?)
        } else if bucket.prefix == max_prefix(bucket.network) {
            write!(out, "{}", bucket.network)
        } else {
            write!(out, "{bucket}")
        }
    }
}

/// Each octet's decimal digits followed by a dot, padded to 4 bytes, and how many bytes of that
/// count (digits + dot): one 4-byte copy per octet instead of up to three divisions.
const OCTETS: [([u8; 4], u8); 256] = {
    let mut table = [([0u8; 4], 0u8); 256];
    let mut i = 0;
    while i < 256 {
        let o = i as u8;
        table[i] = if o >= 100 {
            ([b'0' + o / 100, b'0' + o / 10 % 10, b'0' + o % 10, b'.'], 4)
        } else if o >= 10 {
            ([b'0' + o / 10, b'0' + o % 10, b'.', 0], 3)
        } else {
            ([b'0' + o, b'.', 0, 0], 2)
        };
        i += 1;
    }
    table
};

/// The longest dotted-decimal IPv4 address, `255.255.255.255`.
pub(crate) const IPV4_MAX_LEN: usize = 15;

/// Writes `v4` in dotted decimal at the start of `out` (at least 16 bytes: the last octet's
/// copy is 4 wide); returns the length (at most 15), or 0 if `out` is too short.
pub(crate) fn write_ipv4(v4: std::net::Ipv4Addr, out: &mut [u8]) -> usize {
    let Some(out) = out.get_mut(..IPV4_MAX_LEN + 1) else {
        return 0;
    };
    let mut len = 0;
    for octet in v4.octets() {
        let (bytes, n) = OCTETS[usize::from(octet)];
        // `len ≤ 12` before each copy (three octets of at most 4 bytes), so `len + 4 ≤ 16`.
        if let Some(slot) = out.get_mut(len..len + 4) {
            slot.copy_from_slice(&bytes);
        }
        len += usize::from(n);
    }
    len - 1 // the last octet's dot
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
    parse_x_forwarded_for_bytes(value.as_bytes())
}

/// [`parse_x_forwarded_for`] on a raw header value: split on `,` first, then each hop decoded
/// on its own, so bytes that are not UTF-8 make only their own hop `None`.
fn parse_x_forwarded_for_bytes(value: &[u8]) -> impl Iterator<Item = Option<IpAddr>> + '_ {
    value
        .split(|&b| b == b',')
        .map(|hop| std::str::from_utf8(hop).ok().and_then(|h| parse_node(h.trim(), false)))
}

/// The `for=` nodes of one RFC 7239 `Forwarded` value, left to right: `Some(ip)` for an address
/// (`for=192.0.2.60`, `for="[2001:db8:cafe::17]:4711"`, also with an obfuscated port such as
/// `for="192.0.2.43:_x"`), `None` for an element without `for`, `unknown`, an obfuscated
/// identifier or garbage. Commas and semicolons inside quoted strings are respected; an
/// element whose quote is never closed ends at the first `,` after that quote, so the elements
/// a proxy appended after a client's broken one are still seen. Never panics, never allocates.
///
/// ```
/// use tollgate::http::client_ip::parse_forwarded;
/// let hops: Vec<_> =
///     parse_forwarded(r#"for=192.0.2.60;proto=http, For="[2001:db8:cafe::17]:4711", for=unknown"#).collect();
/// assert_eq!(hops, vec![Some("192.0.2.60".parse().unwrap()), Some("2001:db8:cafe::17".parse().unwrap()), None]);
/// // A client's unterminated quote does not swallow the element its proxy appended.
/// let hops: Vec<_> = parse_forwarded(r#"for=", for=203.0.113.9"#).collect();
/// assert_eq!(hops, vec![None, Some("203.0.113.9".parse().unwrap())]);
/// ```
pub fn parse_forwarded(value: &str) -> impl Iterator<Item = Option<IpAddr>> + '_ {
    parse_forwarded_bytes(value.as_bytes())
}

/// [`parse_forwarded`] on a raw header value: elements and pairs are split on bytes (the
/// separators are ASCII), and each name and value decoded on its own, so bytes that are not
/// UTF-8 only spoil the pair they are in.
fn parse_forwarded_bytes(value: &[u8]) -> impl Iterator<Item = Option<IpAddr>> + '_ {
    QuotedSplit::new(value, b',').map(forwarded_element)
}

/// Splits on `sep` outside double-quoted strings (with `\` escapes inside them).
///
/// A quote still open at the end of the input (never well-formed) ends its element at the
/// first `sep` after the element's *first* opening quote. Proxies append well-formed elements
/// to what the client sent; such an element has no `\` and an even number of quotes, so it
/// cannot close the client's quote for good: a scan that entered it inside quotes ends inside
/// quotes, and the cut then falls in the client's part or on the separator the proxy wrote.
/// (Cutting after the *last* opening quote instead would let `for="` from the client swallow
/// an appended `for="[2001:db8::1]:4711"`, whose own closing quote would reopen the string.)
///
/// After such a cut the rest is split on `sep` alone, quotes ignored: the input is malformed
/// anyway, and rescanning it for quotes from every cut would cost O(n²) on a hostile value
/// (`"\",` repeated), while the elements a proxy appends hold no `sep` inside quotes and come
/// out the same either way. Every value is then read in O(n).
struct QuotedSplit<'a> {
    rest: Option<&'a [u8]>,
    sep: u8,
    /// Set once an unterminated quote was cut: split on `sep` alone from here on.
    plain: bool,
}

impl<'a> QuotedSplit<'a> {
    fn new(value: &'a [u8], sep: u8) -> QuotedSplit<'a> {
        QuotedSplit { rest: Some(value), sep, plain: false }
    }
}

impl<'a> Iterator for QuotedSplit<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let s = self.rest?;
        if self.plain {
            return Some(match s.iter().position(|&b| b == self.sep) {
                Some(cut) => {
                    self.rest = s.get(cut + 1..);
                    s.get(..cut)?
                }
                None => {
                    self.rest = None;
                    s
                }
            });
        }
        let mut in_quotes = false;
        let mut escaped = false;
        let mut first_quote = None;
        for (i, &b) in s.iter().enumerate() {
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
                first_quote.get_or_insert(i);
            } else if b == self.sep {
                self.rest = s.get(i + 1..);
                return s.get(..i);
            }
        }
        if let (true, Some(quote)) = (in_quotes, first_quote) {
            let cut = s.iter().skip(quote).position(|&b| b == self.sep).map(|at| at + quote);
            if let Some(cut) = cut {
                self.rest = s.get(cut + 1..);
                self.plain = true;
                return s.get(..cut);
            }
        }
        self.rest = None;
        Some(s)
    }
}

fn forwarded_element(element: &[u8]) -> Option<IpAddr> {
    let mut found = None;
    for pair in QuotedSplit::new(element, b';') {
        let Some(eq) = pair.iter().position(|&b| b == b'=') else { continue };
        let (name, value) = (pair.get(..eq)?, pair.get(eq + 1..)?);
        // A name that is not UTF-8 is not `for`.
        if std::str::from_utf8(name).is_ok_and(|n| n.trim().eq_ignore_ascii_case("for")) {
            // A repeated `for` makes the element ambiguous: treat it as garbage.
            if found.is_some() {
                return None;
            }
            found = Some(value);
        }
    }
    let value = std::str::from_utf8(found?).ok()?.trim();
    let value = match value.strip_prefix('"') {
        // Quoted: the node must not contain escapes (no address does).
        Some(inner) => inner.strip_suffix('"').filter(|v| !v.contains(['\\', '"']))?,
        None => value,
    };
    parse_node(value, true)
}

/// One node: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:80`.
/// With `obfuscated_ports` (RFC 7239 `Forwarded`), a port may also be an obfuscated one
/// (`[2001:db8::1]:_p1`, RFC 7239 §6.3: `"_" 1*(ALPHA / DIGIT / "." / "_" / "-")`).
fn parse_node(node: &str, obfuscated_ports: bool) -> Option<IpAddr> {
    if node.len() > 64 {
        return None; // no address is this long; don't spend time on it
    }
    let port_ok = |port: &str| is_port(port) || (obfuscated_ports && is_obfuscated_port(port));
    if let Some(rest) = node.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(port_ok)) {
            return None;
        }
        return inside.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    // `v4:port` (a bare IPv6 has several colons and was handled above).
    let (host, port) = node.rsplit_once(':')?;
    if !port_ok(port) {
        return None;
    }
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// RFC 7239 §6.3 `obfport = "_" 1*(ALPHA / DIGIT / "." / "_" / "-")`.
fn is_obfuscated_port(s: &str) -> bool {
    s.strip_prefix('_').is_some_and(|rest| {
        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    })
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

    /// A hostile value of escaped quotes (`"\"` and a separator, repeated) is read in one
    /// pass. Each cut of an unterminated quote used to rescan the rest for quotes: O(n²), so
    /// this 1 MB value would take minutes (an 8 KB one took 37 ms in release, review finding);
    /// the rest is now split on the separator alone. The proxy's appended hop still wins.
    #[test]
    fn unterminated_quotes_are_read_in_linear_time() {
        for sep in [",", ";"] {
            let value = format!("\"\\\"{sep}").repeat(250_000) + ", for=203.0.113.9";
            assert!(value.len() > 1_000_000);
            let hops: Vec<_> = parse_forwarded(&value).collect();
            assert_eq!(hops.last(), Some(&Some(ip("203.0.113.9"))), "separator {sep:?}");
            let mut headers = HeaderMap::new();
            headers.append("forwarded", value.parse().unwrap());
            let config =
                ClientIpConfig::default().header(ProxyHeader::Forwarded).trust("127.0.0.1".parse().unwrap());
            assert_eq!(config.client_ip(Some(ip("127.0.0.1")), &headers), Some(ip("203.0.113.9")));
        }
    }

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
    fn a_non_ascii_hop_spoils_only_itself() {
        // nginx's `$proxy_add_x_forwarded_for` appends the real address to the client's line.
        let cfg = ClientIpConfig::default().trust("127.0.0.1".parse().unwrap());
        let peer = Some(ip("127.0.0.1"));
        for line in [&b"\xff, 203.0.113.9"[..], b"1.2.3.4\x80, 203.0.113.9", b"\xc3\xa9,203.0.113.9"] {
            let mut h = HeaderMap::new();
            h.insert("x-forwarded-for", http::HeaderValue::from_bytes(line).unwrap());
            assert_eq!(cfg.client_ip(peer, &h), Some(ip("203.0.113.9")), "{line:?}");
            let hops: Vec<_> = parse_x_forwarded_for_bytes(line).collect();
            assert_eq!(hops, vec![None, Some(ip("203.0.113.9"))], "{line:?}");
        }
        // The same for RFC 7239, where the bad byte is in another pair or in the `for` value.
        let cfg = cfg.header(ProxyHeader::Forwarded);
        for line in [&b"for=\xff, for=203.0.113.9"[..], b"for=1.2.3.4;x=\xfe, for=203.0.113.9"] {
            let mut h = HeaderMap::new();
            h.insert("forwarded", http::HeaderValue::from_bytes(line).unwrap());
            assert_eq!(cfg.client_ip(peer, &h), Some(ip("203.0.113.9")), "{line:?}");
        }
        let hops: Vec<_> = parse_forwarded_bytes(b"for=1.2.3.4;by=\xfe, for=\xff").collect();
        assert_eq!(hops, vec![Some(ip("1.2.3.4")), None]);
    }

    #[test]
    fn an_unterminated_quote_does_not_swallow_appended_elements() {
        let cfg =
            ClientIpConfig::default().trust("127.0.0.1".parse().unwrap()).header(ProxyHeader::Forwarded);
        let peer = Some(ip("127.0.0.1"));
        let client = |line: &str| {
            let mut h = HeaderMap::new();
            h.insert("forwarded", line.parse().unwrap());
            cfg.client_ip(peer, &h)
        };
        // What the client sent, then what its proxy appended.
        for sent in [r#"for=""#, r#"for="1.2.3.4"#, r#"for="a\"#, r#"for="a, b="#, r#"x"y, for=""#, r#"""#] {
            for (appended, real) in [
                ("for=203.0.113.9", "203.0.113.9"),
                (r#"for="[2001:db8::9]:4711""#, "2001:db8::9"),
                (r#"for="203.0.113.9:_hidden";proto=https"#, "203.0.113.9"),
            ] {
                let line = format!("{sent}, {appended}");
                assert_eq!(client(&line), Some(ip(real)), "{line}");
                assert_eq!(parse_forwarded(&line).last(), Some(Some(ip(real))), "{line}");
            }
        }
        let hops: Vec<_> = parse_forwarded(r#"for=", for=203.0.113.9"#).collect();
        assert_eq!(hops, vec![None, Some(ip("203.0.113.9"))]);
        // Well-formed quoted commas are unchanged.
        let hops: Vec<_> = parse_forwarded(r#"for="1.2.3.4,5.6.7.8", for=9.9.9.9"#).collect();
        assert_eq!(hops, vec![None, Some(ip("9.9.9.9"))]);
    }

    #[test]
    fn obfuscated_ports_in_forwarded_only() {
        let hops: Vec<_> =
            parse_forwarded(r#"for="[2001:db8::1]:_p1", for="192.0.2.43:_x", for=192.0.2.44:_a.b_c-9"#)
                .collect();
        assert_eq!(hops, vec![Some(ip("2001:db8::1")), Some(ip("192.0.2.43")), Some(ip("192.0.2.44"))]);
        for bad in
            [r#"for="[::1]:_""#, r#"for="1.2.3.4:_a b""#, r#"for="1.2.3.4:_a+""#, r#"for="1.2.3.4:x_""#]
        {
            assert_eq!(parse_forwarded(bad).collect::<Vec<_>>(), vec![None], "{bad}");
        }
        // X-Forwarded-For has no obfuscated ports.
        assert_eq!(parse_x_forwarded_for("1.2.3.4:_x").collect::<Vec<_>>(), vec![None]);
    }

    #[test]
    fn mapped_cidrs_are_their_ipv4_block() {
        let net: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(net, "10.0.0.0/8".parse().unwrap());
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert!(net.contains(ip("10.200.0.1")));
        assert!(net.contains(ip("::ffff:10.200.0.1")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert_eq!("::ffff:10.1.2.3".parse::<Cidr>().unwrap().to_string(), "10.1.2.3/32");
        assert_eq!("::ffff:0.0.0.0/96".parse::<Cidr>().unwrap().to_string(), "0.0.0.0/0");
        assert_eq!("::ffff:10.0.0.0/95".parse::<Cidr>(), Err(CidrError::MappedPrefixTooShort { prefix: 95 }));
        assert_eq!(
            "::ffff:10.0.0.0/129".parse::<Cidr>(),
            Err(CidrError::PrefixTooLong { prefix: 129, max: 128 })
        );
        let cfg = ClientIpConfig::default().trust(net);
        assert_eq!(cfg.client_ip(Some(ip("10.0.0.1")), &xff("1.2.3.4")), Some(ip("1.2.3.4")));
    }

    #[test]
    fn fast_ipv4_text_matches_display() {
        let cfg = ClientIpConfig::default();
        for a in ["0.0.0.0", "255.255.255.255", "10.0.100.9", "1.22.233.4", "100.10.1.0"] {
            let mut s = String::new();
            cfg.write_bucket(ip(a), &mut s).unwrap();
            assert_eq!(s, a);
        }
        // Every octet value in every position; a buffer of 15 bytes is refused, not overrun.
        let mut buf = [0u8; IPV4_MAX_LEN + 1];
        for o in 0..=255u8 {
            for v4 in [[o, 1, 22, 255], [9, o, 100, 0], [255, 10, o, 7], [1, 0, 99, o], [o; 4]] {
                let v4 = std::net::Ipv4Addr::from(v4);
                let len = write_ipv4(v4, &mut buf);
                assert_eq!(std::str::from_utf8(&buf[..len]).unwrap(), v4.to_string());
            }
        }
        assert_eq!(write_ipv4(std::net::Ipv4Addr::BROADCAST, &mut [0u8; IPV4_MAX_LEN]), 0);
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
