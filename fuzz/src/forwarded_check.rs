//! The forwarded-header check, shared by `fuzz_targets/forwarded.rs` and the corpus replay in
//! `tests/fuzz_corpus_forwarded.rs` (both include this file by path).
//!
//! Input layout: byte 0 picks the configuration (which header, which proxies are trusted, the
//! IPv6 bucket); the rest, split on `\n`, are the header's values in order. Checks: the parsers
//! never panic; `X-Forwarded-For` yields one hop per comma-separated element; and
//! `ClientIpConfig::client_ip` (which reads the raw bytes) agrees with a naive right-to-left
//! walk over the hops the `str` parsers find in each value read as lossy UTF-8, so bytes that
//! are not UTF-8 spoil only the hop (or `Forwarded` pair) they are in, never a whole line. And
//! the property the walk exists for: whatever a client sent, a hop a trusted proxy appends to
//! the same line is the one believed.

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue};
use tollgate::http::client_ip::{
    canonical, parse_forwarded, parse_x_forwarded_for, ClientIpConfig, ProxyHeader,
};

/// Runs every check on `data`; panics on a violation. Returns the client address found
/// (`None` for empty input).
pub fn check_forwarded(data: &[u8]) -> Option<IpAddr> {
    let (&selector, rest) = data.split_first()?;
    let forwarded = selector & 1 == 1;
    let name = if forwarded { "forwarded" } else { "x-forwarded-for" };
    let mut config = ClientIpConfig::default()
        .header(if forwarded { ProxyHeader::Forwarded } else { ProxyHeader::XForwardedFor })
        .ipv6_prefix(if selector & 2 == 2 { 64 } else { 128 });
    if selector & 4 == 4 {
        config = config.trust("10.0.0.0/8".parse().expect("constant CIDR"));
        config = config.trust("fd00::/8".parse().expect("constant CIDR"));
    }
    if selector & 8 == 8 {
        config = config.trust("127.0.0.1".parse().expect("constant CIDR"));
    }
    let peer: IpAddr =
        if selector & 16 == 16 { "10.1.2.3" } else { "127.0.0.1" }.parse().expect("constant IP");

    let mut headers = HeaderMap::new();
    let mut hops: Vec<Option<IpAddr>> = Vec::new();
    let mut last_line = None;
    for line in rest.split(|&b| b == b'\n') {
        let Ok(value) = HeaderValue::from_bytes(line) else { continue };
        headers.append(name, value);
        last_line = Some(line);
        // Each invalid sequence becomes U+FFFD, which no address or `for` contains and which
        // is not whitespace; the ASCII separators stay where they were.
        let text = String::from_utf8_lossy(line);
        if forwarded {
            hops.extend(parse_forwarded(&text));
        } else {
            let parsed: Vec<_> = parse_x_forwarded_for(&text).collect();
            assert_eq!(parsed.len(), line.split(|&b| b == b',').count(), "one hop per element");
            hops.extend(parsed);
        }
    }
    // Both parsers also take any UTF-8 (even what a header can't hold) without panicking.
    let lossy = String::from_utf8_lossy(rest);
    let _ = parse_forwarded(&lossy).count();
    let _ = parse_x_forwarded_for(&lossy).count();

    let got = config.client_ip(Some(peer), &headers);
    assert_eq!(got, Some(naive(&config, peer, &hops)), "client_ip disagrees with the naive walk");
    let got = got.expect("checked above");
    let mut key = String::new();
    let _ = std::fmt::Write::write_fmt(&mut key, format_args!("{}", config.bucket(got)));
    assert!(!key.is_empty());

    // A trusted proxy appends the address it saw to the client's last line: that address wins,
    // whatever the client wrote (unbalanced quotes, escapes, bytes that are not UTF-8).
    if let (Some(line), true) = (last_line, config.is_trusted(peer)) {
        let real: IpAddr = "203.0.113.9".parse().expect("constant IP");
        let appended: &[&[u8]] = if forwarded {
            &[
                b", for=203.0.113.9",
                b", for=\"203.0.113.9:_hidden\";proto=https",
                b", for=\"[2001:db8::9]:4711\"",
            ]
        } else {
            &[b", 203.0.113.9", b",203.0.113.9:8080"]
        };
        for suffix in appended {
            let mut spoofed = headers.clone();
            let mut value = line.to_vec();
            value.extend_from_slice(suffix);
            let value = HeaderValue::from_bytes(&value).expect("a valid value plus visible ASCII");
            // The last line is the one to extend: drop it and append the longer one.
            let mut lines: Vec<HeaderValue> = spoofed.get_all(name).iter().cloned().collect();
            lines.pop();
            lines.push(value);
            spoofed.remove(name);
            for l in lines {
                spoofed.append(name, l);
            }
            let expected =
                if suffix.ends_with(b"4711\"") { "2001:db8::9".parse().expect("constant IP") } else { real };
            assert_eq!(config.client_ip(Some(peer), &spoofed), Some(expected), "appended {suffix:?}");
        }
    }
    Some(got)
}

/// Right to left: skip trusted hops; the first untrusted one wins if it is an address, else the
/// last trusted hop skipped (or the peer); all trusted → the leftmost.
fn naive(config: &ClientIpConfig, peer: IpAddr, hops: &[Option<IpAddr>]) -> IpAddr {
    let peer = canonical(peer);
    if !config.is_trusted(peer) {
        return peer;
    }
    let mut last_trusted = peer;
    for hop in hops.iter().rev() {
        match hop.map(canonical) {
            Some(ip) if config.is_trusted(ip) => last_trusted = ip,
            Some(ip) => return ip,
            None => return last_trusted,
        }
    }
    last_trusted
}
