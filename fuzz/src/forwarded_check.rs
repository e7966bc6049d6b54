//! The forwarded-header check, shared by `fuzz_targets/forwarded.rs` and the corpus replay in
//! `tests/fuzz_corpus_forwarded.rs` (both include this file by path).
//!
//! Input layout: byte 0 picks the configuration (which header, which proxies are trusted, the
//! IPv6 bucket); the rest, split on `\n`, are the header's values in order. Checks: the parsers
//! never panic; `X-Forwarded-For` yields one hop per comma-separated element; and
//! `ClientIpConfig::client_ip` agrees with a naive right-to-left walk over the collected hops.

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue};
use tollgate::http::client_ip::{
    canonical, parse_forwarded, parse_x_forwarded_for, ClientIpConfig, ProxyHeader,
};

/// Runs every check on `data`; panics on a violation.
pub fn check_forwarded(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else { return };
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
    for line in rest.split(|&b| b == b'\n') {
        let Ok(value) = HeaderValue::from_bytes(line) else { continue };
        headers.append(name, value.clone());
        match value.to_str() {
            Ok(text) => {
                if forwarded {
                    hops.extend(parse_forwarded(text));
                } else {
                    let parsed: Vec<_> = parse_x_forwarded_for(text).collect();
                    assert_eq!(parsed.len(), text.split(',').count(), "one hop per element");
                    hops.extend(parsed);
                }
            }
            Err(_) => hops.push(None),
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
