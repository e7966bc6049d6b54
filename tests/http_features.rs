//! The rate-limit layer's features over real HTTP on loopback (axum + hyper + reqwest), time from
//! a `ManualClock`: modes, skips, costs, client addresses (spoofing, malformed headers, IPv6
//! buckets, mapped IPv4), auto-ban, backend failures, async (remote-style) limiters.
#![cfg(feature = "axum")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::routing::get;
use axum::Router;
use reqwest::{Client, Response, StatusCode};
use tollgate::http::client_ip::{ClientIpConfig, ProxyHeader};
use tollgate::http::{
    AutoBan, Check, FailurePolicy, HeaderStyle, HttpKey, HttpLimiter, KeyBy, Listed, Mode, RateLimitDecision,
    RateLimitLayer, Rule, StrKeys,
};
use tollgate::{CheckError, Decision, KeyedLimiter, ManualClock, Quota};

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap();
    });
    format!("http://{addr}")
}

fn header<'a>(res: &'a Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).map(|v| v.to_str().unwrap())
}

type Limiter = Listed<ManualClock>;

fn limiter(clock: &ManualClock, q: &str) -> Arc<Limiter> {
    Arc::new(Listed(KeyedLimiter::<HttpKey, ManualClock>::with_clock(q.parse().unwrap(), clock.clone())))
}

fn rule(name: &str, l: &Arc<Limiter>) -> Rule {
    Rule::from_arc(name, l.clone() as Arc<dyn HttpLimiter>).unwrap()
}

fn keys(l: &Limiter) -> Vec<String> {
    let mut out = Vec::new();
    l.for_each_http(&mut |k, _| out.push(k.to_owned()));
    out.sort();
    out
}

/// Says what the non-blocking rules decided (from the request extensions).
async fn note(req: Request) -> String {
    match req.extensions().get::<RateLimitDecision>() {
        Some(d) => format!("{}:{}:{}", d.rule, d.decision.is_allowed(), d.decision.remaining()),
        None => "none".to_owned(),
    }
}

fn app(layer: RateLimitLayer) -> Router {
    Router::new().route("/", get(note).post(note).options(note)).route("/health", get(note)).layer(layer)
}

#[tokio::test]
async fn shadow_mode_passes_through_without_headers() {
    let clock = ManualClock::new();
    let l = limiter(&clock, "1/s");
    let layer = RateLimitLayer::builder().rule(rule("trial", &l).mode(Mode::Shadow)).build();
    let base = serve(app(layer.clone())).await;
    let client = Client::new();
    let res = client.get(&base).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await.unwrap(), "trial:true:0");
    for _ in 0..3 {
        let res = client.get(&base).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().get("x-ratelimit-limit").is_none());
        assert!(res.headers().get("ratelimit").is_none());
        assert_eq!(res.text().await.unwrap(), "trial:false:0");
    }
    let m = layer.metrics();
    assert_eq!((m.allowed, m.denied, m.shadow_denied), (4, 0, 3));
}

#[tokio::test]
async fn annotate_mode_passes_with_headers() {
    let clock = ManualClock::new();
    let l = limiter(&clock, "1/s");
    let layer = RateLimitLayer::builder()
        .rule(rule("soft", &l).mode(Mode::Annotate))
        .header_style(HeaderStyle::Legacy)
        .build();
    let base = serve(app(layer)).await;
    let client = Client::new();
    let _ = client.get(&base).send().await.unwrap();
    let res = client.get(&base).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "x-ratelimit-remaining"), Some("0"));
    assert_eq!(header(&res, "x-ratelimit-limit"), Some("1"));
    assert!(res.headers().get("ratelimit-policy").is_none(), "legacy style only");
    assert_eq!(res.text().await.unwrap(), "soft:false:0");
}

#[tokio::test]
async fn skip_paths_methods_and_predicates() {
    let clock = ManualClock::new();
    let l = limiter(&clock, "1/s");
    let layer = RateLimitLayer::builder()
        .rule(rule("one", &l))
        .skip_path("/health")
        .skip_method(http::Method::OPTIONS)
        .skip_if(|req| req.headers.contains_key("x-internal"))
        .build();
    let base = serve(app(layer.clone())).await;
    let client = Client::new();
    assert_eq!(client.get(&base).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(client.get(&base).send().await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    for _ in 0..3 {
        let res = client.get(format!("{base}/health")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().get("x-ratelimit-limit").is_none());
        let res = client.request(http::Method::OPTIONS, &base).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let res = client.get(&base).header("x-internal", "1").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    assert_eq!(layer.metrics().skipped, 9);
    assert_eq!(layer.metrics().denied, 1);
}

/// Skipping GET skips HEAD (the GET handler answers it), as a rule on GET limits HEAD; other
/// methods stay limited.
#[tokio::test]
async fn skipping_get_skips_head() {
    let clock = ManualClock::new();
    let l = limiter(&clock, "1/s");
    let layer = RateLimitLayer::builder().rule(rule("one", &l)).skip_method(http::Method::GET).build();
    let base = serve(app(layer.clone())).await;
    let client = Client::new();
    for _ in 0..3 {
        assert_eq!(client.get(&base).send().await.unwrap().status(), StatusCode::OK);
        let res = client.head(&base).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().get("x-ratelimit-limit").is_none());
    }
    assert_eq!(client.post(&base).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(client.post(&base).send().await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(layer.metrics().skipped, 6);
}

#[tokio::test]
async fn methods_and_costs() {
    let clock = ManualClock::new();
    let l = limiter(&clock, "10/s");
    let cost = |req: &tollgate::http::RequestInfo<'_>| {
        req.headers.get("x-cost").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(1)
    };
    let layer =
        RateLimitLayer::builder().rule(rule("posts", &l).methods([http::Method::POST]).cost(cost)).build();
    let base = serve(app(layer)).await;
    let client = Client::new();
    // GET does not count against a POST-only rule, and gets no headers.
    let res = client.get(&base).send().await.unwrap();
    assert!(res.headers().get("x-ratelimit-limit").is_none());
    let res = client.post(&base).header("x-cost", "4").send().await.unwrap();
    assert_eq!(header(&res, "x-ratelimit-remaining"), Some("6"));
    let res = client.post(&base).header("x-cost", "6").send().await.unwrap();
    assert_eq!(header(&res, "x-ratelimit-remaining"), Some("0"));
    let res = client.post(&base).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, "retry-after"), Some("1"));
    // A cost above the burst can never pass: 429 without Retry-After.
    clock.advance(Duration::from_secs(1));
    let res = client.post(&base).header("x-cost", "11").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().get("retry-after").is_none());
}

/// A rule on GET also limits HEAD, which axum answers by running the GET handler (a HEAD-only
/// path around a GET rule would leave the handler unlimited); other methods stay apart.
#[tokio::test]
async fn a_get_rule_limits_head_too() {
    let clock = ManualClock::new();
    let l = limiter(&clock, "3/m");
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let handler = move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { "expensive" }
    };
    let layer =
        RateLimitLayer::builder().route("/search", rule("search", &l).methods([http::Method::GET])).build();
    let app = Router::new().route("/search", get(handler).post(|| async { "posted" })).layer(layer);
    let base = serve(app).await;
    let client = Client::new();
    let url = format!("{base}/search");
    let mut statuses = Vec::new();
    for method in ["GET", "HEAD", "HEAD", "HEAD", "GET", "POST"] {
        let res = client.request(method.parse().unwrap(), &url).send().await.unwrap();
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 200], "GET and HEAD share the rule; POST is not in it");
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "the GET handler ran only within the limit"
    );
}

/// A route rule on HEAD overlaps one on GET for the same route (GET covers HEAD).
#[test]
fn a_head_rule_overlaps_a_get_rule_on_the_same_route() {
    let clock = ManualClock::new();
    let layer = RateLimitLayer::builder()
        .route("/search", rule("get", &limiter(&clock, "3/m")).methods([http::Method::GET]))
        .build();
    let head = rule("head", &limiter(&clock, "3/m")).methods([http::Method::HEAD]);
    assert!(layer.add_rule(Some("/search"), head).is_err());
    let post = rule("post", &limiter(&clock, "3/m")).methods([http::Method::POST]);
    assert!(layer.add_rule(Some("/search"), post).is_ok());
}

#[tokio::test]
async fn route_and_ip_combined_keys() {
    let clock = ManualClock::new();
    let l = limiter(&clock, "5/s");
    let layer =
        RateLimitLayer::builder().rule(rule("combo", &l).key(KeyBy::Route.and(KeyBy::ClientIp))).build();
    let base = serve(app(layer)).await;
    let client = Client::new();
    client.get(&base).send().await.unwrap();
    client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(keys(&l), ["/health|127.0.0.1", "/|127.0.0.1"]);
}

async fn proxied(config: ClientIpConfig) -> (String, Arc<Limiter>) {
    let clock = ManualClock::new();
    let l = limiter(&clock, "100/s");
    let layer = RateLimitLayer::builder().client_ip(config).rule(rule("ip", &l)).build();
    (serve(app(layer)).await, l)
}

#[tokio::test]
async fn ipv6_is_bucketed_by_64_and_mapped_ipv4_unwrapped() {
    let (base, l) = proxied(ClientIpConfig::default().trust("127.0.0.1".parse().unwrap())).await;
    let client = Client::new();
    for xff in
        ["2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", "[2001:db8:1:2::3]:443", "2001:db8:1:3::1"]
    {
        assert_eq!(
            client.get(&base).header("x-forwarded-for", xff).send().await.unwrap().status(),
            StatusCode::OK
        );
    }
    for xff in ["::ffff:192.0.2.1", "192.0.2.1", "192.0.2.1:8080"] {
        assert_eq!(
            client.get(&base).header("x-forwarded-for", xff).send().await.unwrap().status(),
            StatusCode::OK
        );
    }
    assert_eq!(keys(&l), ["192.0.2.1", "2001:db8:1:2::/64", "2001:db8:1:3::/64"]);
    let mut per_key = Vec::new();
    l.for_each_http(&mut |k, d| per_key.push((k.to_owned(), d.remaining())));
    per_key.sort();
    // Three requests in the first /64, one in the second, three from the mapped/plain IPv4
    // (`for_each` reports what one more request would leave: one less).
    assert_eq!(
        per_key,
        [
            ("192.0.2.1".to_owned(), 96),
            ("2001:db8:1:2::/64".to_owned(), 96),
            ("2001:db8:1:3::/64".to_owned(), 98)
        ]
    );
}

#[tokio::test]
async fn ipv6_prefix_is_configurable() {
    let config = ClientIpConfig::default().trust("127.0.0.1".parse().unwrap()).ipv6_prefix(128);
    let (base, l) = proxied(config).await;
    let client = Client::new();
    for xff in ["2001:db8::1", "2001:db8::2"] {
        client.get(&base).header("x-forwarded-for", xff).send().await.unwrap();
    }
    assert_eq!(keys(&l), ["2001:db8::1", "2001:db8::2"]);
}

#[tokio::test]
async fn forwarded_header_when_configured() {
    let config = ClientIpConfig::default().trust("127.0.0.1".parse().unwrap()).header(ProxyHeader::Forwarded);
    let (base, l) = proxied(config).await;
    let client = Client::new();
    let res = client
        .get(&base)
        .header("forwarded", r#"for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https"#)
        .header("x-forwarded-for", "5.5.5.5") // not the configured header: ignored
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(keys(&l), ["2001:db8:cafe::/64"]);
}

#[tokio::test]
async fn malformed_oversized_and_repeated_headers_never_panic() {
    let (base, l) = proxied(ClientIpConfig::default().trust("127.0.0.0/8".parse().unwrap())).await;
    let client = Client::new();
    let long = "1.2.3.4, ".repeat(800) + "garbage";
    let deep_v6 = format!("[{}]", ":".repeat(5000));
    let values: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b",,,".to_vec(),
        b"[".to_vec(),
        b"]".to_vec(),
        b"999.1.1.1".to_vec(),
        b"1.2.3.4:99999999".to_vec(),
        b"fe80::1%eth0".to_vec(),
        b"unknown".to_vec(),
        b"\x80\xff\xfe".to_vec(),
        long.into_bytes(),
        deep_v6.into_bytes(),
    ];
    for v in &values {
        let res = client
            .get(&base)
            .header("x-forwarded-for", reqwest::header::HeaderValue::from_bytes(v).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "value {:?}", String::from_utf8_lossy(v));
    }
    // Unparseable hops fall back to the nearest trusted hop (the peer), never to attacker text.
    assert_eq!(keys(&l), ["127.0.0.1"]);
    // Several X-Forwarded-For headers are one list, in order.
    let res = client
        .get(&base)
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-for", "203.0.113.5, 127.0.0.2")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(keys(&l), ["127.0.0.1", "203.0.113.5"]);
}

#[tokio::test]
async fn auto_ban_triggers_blocks_and_expires() {
    let clock = ManualClock::new();
    let l = limiter(&clock, "1/s");
    let ban =
        AutoBan::with_clock(3, Duration::from_secs(10), Duration::from_secs(60), clock.clone()).unwrap();
    let layer = RateLimitLayer::builder().rule(rule("ip", &l)).auto_ban(ban).build();
    let base = serve(app(layer.clone())).await;
    let client = Client::new();
    assert_eq!(client.get(&base).send().await.unwrap().status(), StatusCode::OK);
    for _ in 0..2 {
        let res = client.get(&base).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(&res, "retry-after"), Some("1"));
    }
    // The third denial within the window bans for 60 s, even though the limiter refills in
    // 1 s, and says so: the ban's answer and its Retry-After, not the rule's 1 s (a client
    // retrying as told would walk into the ban).
    let res = client.get(&base).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&res, "retry-after"), Some("60"));
    clock.advance(Duration::from_secs(2));
    let res = client.get(&base).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&res, "retry-after"), Some("58"));
    assert_eq!(header(&res, "content-type"), Some("application/problem+json"));
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], 403);
    clock.advance(Duration::from_secs(57));
    let res = client.get(&base).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&res, "retry-after"), Some("1"));
    let mut bans = Vec::new();
    layer.auto_ban().unwrap().for_each_ban(|k, left| bans.push((k.to_owned(), left)));
    assert_eq!(bans, [("127.0.0.1".to_owned(), Duration::from_secs(1))]);
    // Expired: the main limiter was never touched while banned, so the full burst is there.
    clock.advance(Duration::from_secs(1));
    let res = client.get(&base).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "x-ratelimit-remaining"), Some("0"));
    let m = layer.metrics();
    assert_eq!((m.allowed, m.denied, m.banned, m.bans_issued), (2, 3, 2, 1));
}

#[tokio::test]
async fn auto_ban_status_can_be_429() {
    let clock = ManualClock::new();
    let l = limiter(&clock, "1/s");
    let ban = AutoBan::with_clock(1, Duration::from_secs(10), Duration::from_secs(5), clock.clone())
        .unwrap()
        .status(StatusCode::TOO_MANY_REQUESTS);
    let layer = RateLimitLayer::builder().rule(rule("ip", &l)).auto_ban(ban).build();
    let base = serve(app(layer)).await;
    let client = Client::new();
    client.get(&base).send().await.unwrap();
    client.get(&base).send().await.unwrap(); // first denial bans
    clock.advance(Duration::from_secs(1));
    let res = client.get(&base).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, "retry-after"), Some("4"));
    assert!(res.headers().get("x-ratelimit-limit").is_none(), "a ban does not consult the limiter");
}

/// Denials by a bucket every client shares (a site-wide rule) are no strikes: a client refused
/// because another filled the site's limit is not banned. `ban_strikes(true)` opts back in.
#[tokio::test]
async fn shared_bucket_denials_are_no_strikes() {
    let clock = ManualClock::new();
    let ban =
        || AutoBan::with_clock(2, Duration::from_secs(60), Duration::from_secs(600), clock.clone()).unwrap();
    for opted_in in [false, true] {
        let site = limiter(&clock, "3/s");
        let site_rule = rule("site", &site).key(KeyBy::Global);
        let site_rule = if opted_in { site_rule.ban_strikes(true) } else { site_rule };
        let layer = RateLimitLayer::builder().rule(site_rule).auto_ban(ban()).build();
        let base = serve(app(layer.clone())).await;
        let client = Client::new();
        let statuses = |n| {
            let (client, base) = (client.clone(), base.clone());
            async move {
                let mut out = Vec::new();
                for _ in 0..n {
                    out.push(client.get(&base).send().await.unwrap().status().as_u16());
                }
                out
            }
        };
        // Three pass, then refusals: 429 while the site is full.
        let seen = statuses(5).await;
        let expected: &[u16] = if opted_in { &[200, 200, 200, 429, 403] } else { &[200, 200, 200, 429, 429] };
        assert_eq!(seen, expected, "opted in: {opted_in}");
        clock.advance(Duration::from_secs(1));
        let after = statuses(1).await;
        assert_eq!(after, [if opted_in { 403 } else { 200 }], "opted in: {opted_in}");
        let mut bans = 0;
        layer.auto_ban().unwrap().for_each_ban(|_, _| bans += 1);
        assert_eq!(bans, usize::from(opted_in));
    }
}

/// The shared `-` bucket of a header-keyed rule (requests without the header) is no strike
/// either: an attacker without an API key filling it must not get anonymous clients banned
/// (review finding). A client's own bucket still strikes.
#[tokio::test]
async fn the_missing_header_bucket_is_no_strike() {
    let clock = ManualClock::new();
    let ban = AutoBan::with_clock(2, Duration::from_secs(60), Duration::from_secs(600), clock.clone())
        .unwrap()
        .key(KeyBy::header("x-client"));
    let api = rule("api", &limiter(&clock, "3/m")).key(KeyBy::header("x-api-key"));
    let layer = RateLimitLayer::builder().rule(api).auto_ban(ban).build();
    let base = serve(app(layer)).await;
    let client = Client::new();
    let get = |who: &'static str, api_key: Option<&'static str>| {
        let mut req = client.get(&base).header("x-client", who);
        if let Some(k) = api_key {
            req = req.header("x-api-key", k);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    for _ in 0..10 {
        get("attacker", None).await;
    }
    let alice = [get("alice", None).await, get("alice", None).await, get("alice", None).await];
    assert_eq!(alice, [429, 429, 429], "alice shares the anonymous bucket, did nothing");
    let mut keyed = Vec::new();
    for _ in 0..6 {
        keyed.push(get("bob", Some("bob-key")).await);
    }
    assert_eq!(keyed, [200, 200, 200, 429, 403, 403], "bob's own key strikes");
}

/// A refusal by a shared rule does not hide the client's own rule: when both refuse, the
/// client's is the one that answers (and strikes), whatever other rules there are and in
/// whichever order (review findings: with a third rule first, and with the client's own rule
/// first and the shared one second, a client over its own limit was never banned).
#[tokio::test]
async fn a_shared_refusal_does_not_hide_the_clients_own() {
    let mut outcomes = Vec::new();
    for (with_burst_rule, own_first) in [(false, false), (true, false), (false, true), (true, true)] {
        let clock = ManualClock::new();
        let ban = AutoBan::with_clock(2, Duration::from_secs(60), Duration::from_secs(600), clock.clone())
            .unwrap()
            .key(KeyBy::header("x-client"));
        let mut builder = RateLimitLayer::builder();
        if with_burst_rule {
            builder = builder.rule(rule("burst", &limiter(&clock, "100/s")).key(KeyBy::header("x-client")));
        }
        let site = rule("site", &limiter(&clock, "3/m")).key(KeyBy::Global);
        let own = rule("per-client", &limiter(&clock, "1/m")).key(KeyBy::header("x-client"));
        builder = if own_first { builder.rule(own).rule(site) } else { builder.rule(site).rule(own) };
        let layer = builder.auto_ban(ban).build();
        let base = serve(app(layer)).await;
        let client = Client::new();
        let get = |who: &'static str| {
            let req = client.get(&base).header("x-client", who);
            async move { req.send().await.unwrap().status().as_u16() }
        };
        assert_eq!([get("evil").await, get("bob").await, get("carol").await], [200, 200, 200]);
        let mut evil = Vec::new();
        for _ in 0..4 {
            evil.push(get("evil").await);
        }
        outcomes.push(evil);
    }
    assert_eq!(outcomes[0], [429, 403, 403, 403]);
    for outcome in &outcomes[1..] {
        assert_eq!(&outcomes[0], outcome, "banned or not must not depend on the other rules or their order");
    }
}

/// The auto-ban's tables are capped: a flood of addresses each refused once leaves at most
/// `max_keys` strikes, and a full table strikes and bans no one new.
#[tokio::test]
async fn auto_ban_tables_are_bounded() {
    let clock = ManualClock::new();
    let l = limiter(&clock, "1/h");
    let ban = AutoBan::with_clock(1, Duration::from_secs(60), Duration::from_secs(60), clock.clone())
        .unwrap()
        .max_keys(50)
        .key(KeyBy::header("x-client"));
    let layer = RateLimitLayer::builder()
        .rule(rule("client", &l).key(KeyBy::header("x-client")))
        .auto_ban(ban)
        .build();
    let base = serve(app(layer.clone())).await;
    let client = Client::new();
    let mut refused = [0u32; 2]; // 429 (not banned: full tables), 403 (banned)
    for i in 0..200 {
        let id = format!("c{i}");
        assert_eq!(client.get(&base).header("x-client", &id).send().await.unwrap().status(), StatusCode::OK);
        match client.get(&base).header("x-client", &id).send().await.unwrap().status() {
            StatusCode::TOO_MANY_REQUESTS => refused[0] += 1,
            StatusCode::FORBIDDEN => refused[1] += 1,
            other => panic!("{other}"),
        }
    }
    // Each denial is the client's first strike, which bans (1 denial within the window):
    // 50 bans fit; then neither table takes new keys (the bans are live: nothing to sweep).
    assert_eq!(refused, [150, 50]);
    let mut bans = 0;
    layer.auto_ban().unwrap().for_each_ban(|_, _| bans += 1);
    assert_eq!(bans, 50);
    clock.advance(Duration::from_secs(120));
    assert!(layer.auto_ban().unwrap().sweep() <= 100, "at most 50 keys in each table");
}

/// A backend that always fails (Redis down, with a policy of reporting it).
struct Down;

impl HttpLimiter for Down {
    fn check_http(&self, _key: &HttpKey, _cost: u32) -> Check {
        Check::Ready(Err(CheckError::Backend { reason: "connection refused".into() }))
    }
    fn quota_http(&self, _key: &HttpKey) -> Quota {
        Quota::per_second(1).unwrap()
    }
    fn reset_http(&self, _key: &HttpKey) -> Result<bool, CheckError> {
        Ok(false)
    }
}

#[tokio::test]
async fn backend_errors_fail_open_by_default_and_503_when_closed() {
    let open = RateLimitLayer::builder().rule(Rule::new("redis", Down).unwrap()).build();
    let base = serve(app(open.clone())).await;
    let res = Client::new().get(&base).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("x-ratelimit-limit").is_none());
    assert_eq!(open.metrics().errors, 1);

    let closed = RateLimitLayer::builder()
        .rule(Rule::new("redis", Down).unwrap())
        .on_error(FailurePolicy::FailClosed)
        .build();
    let base = serve(app(closed)).await;
    let res = Client::new().get(&base).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&res, "content-type"), Some("application/problem+json"));
}

/// An `AsyncRateLimiter<str>` (the shape of the Redis limiter) allowing 2 per second.
fn remote_two_per_second(clock: &ManualClock) -> StrKeys<KeyedLimiter<String, ManualClock>> {
    StrKeys::new(KeyedLimiter::with_clock(Quota::per_second(2).unwrap(), clock.clone()))
}

#[tokio::test]
async fn async_str_keyed_limiter_behaves_like_in_process() {
    // An `AsyncRateLimiter<str>` (the shape of the Redis limiter), checked through a future.
    let clock = ManualClock::new();
    let remote = remote_two_per_second(&clock);
    let local = limiter(&clock, "5/s");
    let layer = RateLimitLayer::builder()
        .rule(Rule::new("remote", remote).unwrap())
        .rule(rule("local", &local).key(KeyBy::Global))
        .build();
    let base = serve(app(layer)).await;
    let client = Client::new();
    for remaining in ["1", "0"] {
        let res = client.get(&base).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "x-ratelimit-remaining"), Some(remaining));
        assert_eq!(header(&res, "ratelimit-policy"), Some(r#""remote";q=2;w=1"#));
    }
    let res = client.get(&base).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, "retry-after"), Some("1"));
    // The refused request took nothing from the local rule (all or nothing): 2 of 5 spent; one
    // more would leave 2.
    let mut global = Vec::new();
    local.for_each_http(&mut |k, d: Decision| global.push((k.to_owned(), d.remaining())));
    assert_eq!(global, [("*".to_owned(), 2)]);
}

#[tokio::test]
async fn a_lone_async_rule_is_checked_through_its_future() {
    // One rule (the middleware's lone-rule path) whose check is a future, as Redis's is.
    let clock = ManualClock::new();
    let remote = remote_two_per_second(&clock);
    let layer = RateLimitLayer::builder().rule(Rule::new("remote", remote).unwrap()).build();
    let base = serve(app(layer.clone())).await;
    let client = Client::new();
    for remaining in ["1", "0"] {
        let res = client.get(&base).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "x-ratelimit-remaining"), Some(remaining));
        assert_eq!(header(&res, "ratelimit"), Some(&*format!(r#""remote";r={remaining};t=1"#)));
    }
    let res = client.get(&base).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, "retry-after"), Some("1"));
    clock.advance(Duration::from_millis(500));
    assert_eq!(client.get(&base).send().await.unwrap().status(), StatusCode::OK);
    let m = layer.metrics();
    assert_eq!((m.allowed, m.denied), (3, 1));
}

/// A full key table (`max_keys`) is a limit, not a backend failure: under the default fail-open
/// policy a client that mints new keys must still get 429, not unlimited access.
#[tokio::test]
async fn full_key_table_is_a_429_even_when_failing_open() {
    let clock = ManualClock::new();
    let table = KeyedLimiter::<HttpKey, ManualClock>::with_clock("100/s".parse().unwrap(), clock)
        .max_keys(1)
        .full_table_policy(tollgate::FullTablePolicy::Reject);
    let l = Arc::new(Listed(table));
    let layer = RateLimitLayer::builder().rule(rule("keys", &l).key(KeyBy::header("x-api-key"))).build();
    let base = serve(app(layer)).await;
    let client = Client::new();
    let first = client.get(&base).header("x-api-key", "a").send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    for minted in ["b", "c", "d"] {
        let res = client.get(&base).header("x-api-key", minted).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "key {minted}");
        assert_eq!(header(&res, "retry-after"), Some("1"));
    }
    let again = client.get(&base).header("x-api-key", "a").send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK, "the existing key keeps working");
}

/// A request refused by one rule takes nothing from the others. Keyed rules: the rule that would
/// refuse is found by a cost-0 look and checked first.
#[tokio::test]
async fn refused_requests_take_nothing_from_other_rules() {
    let clock = ManualClock::new();
    let global = limiter(&clock, "10/s");
    let strict = limiter(&clock, "2/s");
    let layer = RateLimitLayer::builder()
        .rule(rule("global", &global).key(KeyBy::Global))
        .route("/health", rule("strict", &strict))
        .build();
    let base = serve(app(layer.clone())).await;
    let client = Client::new();
    let statuses = |n| {
        let client = client.clone();
        let url = format!("{base}/health");
        async move {
            let mut out = Vec::new();
            for _ in 0..n {
                out.push(client.get(&url).send().await.unwrap().status().as_u16());
            }
            out
        }
    };
    assert_eq!(statuses(5).await, [200, 200, 429, 429, 429]);
    let remaining = |l: &Limiter| {
        let mut out = Vec::new();
        l.for_each_http(&mut |k, d: Decision| out.push((k.to_owned(), d.remaining())));
        out
    };
    // 2 admitted requests spent 2 of the global 10 (a unit check now would leave 7); the three
    // refusals spent nothing there.
    assert_eq!(remaining(&global), [("*".to_owned(), 7)]);
    assert_eq!(remaining(&strict), [("127.0.0.1".to_owned(), 0)]);
    // A request outside the strict route spends one more of the global 10.
    assert_eq!(client.get(&base).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(remaining(&global), [("*".to_owned(), 6)]);
    let m = layer.metrics();
    assert_eq!((m.allowed, m.denied), (3, 3));
}

/// Where the refusing rule cannot be looked at beforehand (a remote rule, checked through a
/// future), the rules that allowed the request first are refunded through their receipts.
#[tokio::test]
async fn rules_before_a_refusing_remote_rule_are_refunded() {
    let clock = ManualClock::new();
    let direct = Arc::new(tollgate::Limiter::with_clock(Quota::per_second(5).unwrap(), clock.clone()));
    let remote = remote_two_per_second(&clock);
    let layer = RateLimitLayer::builder()
        .rule(Rule::from_arc("direct", direct.clone() as Arc<dyn HttpLimiter>).unwrap().key(KeyBy::Global))
        .rule(Rule::new("remote", remote).unwrap())
        .build();
    let base = serve(app(layer)).await;
    let client = Client::new();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(client.get(&base).send().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429, 429, 429]);
    // The direct rule allowed all five before the remote one refused three; those three were
    // given back: 2 of 5 spent, a unit check now leaves 2.
    assert_eq!(direct.peek().remaining(), 2);
    assert_eq!(direct.check().remaining(), 2);
}

/// nginx's `$proxy_add_x_forwarded_for` appends the real address to the line the client sent.
/// A byte that is not ASCII in the client's part must not hide it: if it did, the client would
/// be keyed as the proxy (here: loopback, skipped, so unlimited).
#[tokio::test]
async fn a_non_ascii_client_hop_does_not_hide_the_proxy_written_one() {
    let clock = ManualClock::new();
    let l = limiter(&clock, "1/s");
    let layer = RateLimitLayer::builder()
        .client_ip(ClientIpConfig::default().trust("127.0.0.1".parse().unwrap()))
        .skip_if(|req| req.client_ip().is_some_and(|ip| ip.is_loopback()))
        .rule(rule("ip", &l))
        .build();
    let base = serve(app(layer)).await;
    let client = Client::new();
    let mut statuses = Vec::new();
    for sent in [&b"\xff"[..], b"\xc3\xa9", b"1.2.3.4\x80", b"\xff, 6.6.6.6\xfe"] {
        let mut value = sent.to_vec();
        value.extend_from_slice(b", 203.0.113.9");
        let value = reqwest::header::HeaderValue::from_bytes(&value).unwrap();
        statuses
            .push(client.get(&base).header("x-forwarded-for", value).send().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 429, 429, 429]);
    assert_eq!(keys(&l), ["203.0.113.9"]);
}

/// The same with RFC 7239: a client's unterminated quote does not swallow the element its proxy
/// appended (a quoted IPv6 one included, whose own quotes would reopen the string).
#[tokio::test]
async fn an_unterminated_forwarded_quote_does_not_hide_the_proxy_written_element() {
    let clock = ManualClock::new();
    let l = limiter(&clock, "1/s");
    let layer = RateLimitLayer::builder()
        .client_ip(
            ClientIpConfig::default().trust("127.0.0.1".parse().unwrap()).header(ProxyHeader::Forwarded),
        )
        .skip_if(|req| req.client_ip().is_some_and(|ip| ip.is_loopback()))
        .rule(rule("ip", &l))
        .build();
    let base = serve(app(layer)).await;
    let client = Client::new();
    let get = |value: &'static str| client.get(&base).header("forwarded", value).send();
    assert_eq!(get(r#"for=", for=203.0.113.9"#).await.unwrap().status(), StatusCode::OK);
    assert_eq!(get(r#"for="\, for=203.0.113.9"#).await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(get(r#"for="203.0.113.9:_obf""#).await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(get(r#"for=", for="[2001:db8::9]:4711""#).await.unwrap().status(), StatusCode::OK);
    assert_eq!(get(r#"x", for="[2001:db8::9]:_p1""#).await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(keys(&l), ["2001:db8::/64", "203.0.113.9"]);
}

/// `Listed` refunds like a bare keyed limiter: a rule checked before a refusing (remote) rule
/// keeps nothing of the refused requests.
#[tokio::test]
async fn listed_rules_before_a_refusing_rule_are_refunded() {
    let clock = ManualClock::new();
    let direct = limiter(&clock, "5/s");
    let remote = remote_two_per_second(&clock);
    let layer = RateLimitLayer::builder()
        .rule(rule("direct", &direct).key(KeyBy::Global))
        .rule(Rule::new("remote", remote).unwrap())
        .build();
    let base = serve(app(layer)).await;
    let client = Client::new();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(client.get(&base).send().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429, 429, 429]);
    let mut left = Vec::new();
    direct.for_each_http(&mut |k, d| left.push((k.to_owned(), d.remaining())));
    // 2 admitted of 5, the 3 refused ones given back: a unit check now would leave 2 (it
    // would leave 0 had the refused requests been kept).
    assert_eq!(left, [("*".to_owned(), 2)]);
}

/// A 429 because a rule's key table is full carries no headers of the rules that allowed the
/// request (they would say requests remain), gets `Retry-After: 1`, refunds those rules, and is
/// no auto-ban strike (new clients are refused through no fault of theirs).
#[tokio::test]
async fn a_full_key_table_is_a_plain_429_and_no_strike() {
    let clock = ManualClock::new();
    let global = limiter(&clock, "10/s");
    let table = Arc::new(Listed(
        KeyedLimiter::<HttpKey, ManualClock>::with_clock(Quota::per_second(100).unwrap(), clock.clone())
            .max_keys(1)
            .full_table_policy(tollgate::FullTablePolicy::Reject),
    ));
    let ban =
        AutoBan::with_clock(2, Duration::from_secs(10), Duration::from_secs(60), clock.clone()).unwrap();
    let layer = RateLimitLayer::builder()
        .rule(rule("global", &global).key(KeyBy::Global))
        .rule(
            Rule::from_arc("keys", table.clone() as Arc<dyn HttpLimiter>)
                .unwrap()
                .key(KeyBy::header("x-api-key")),
        )
        .auto_ban(ban)
        .build();
    let base = serve(app(layer.clone())).await;
    let client = Client::new();
    let res = client.get(&base).header("x-api-key", "a").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "x-ratelimit-remaining"), Some("9"));
    for _ in 0..5 {
        let res = client.get(&base).header("x-api-key", "b").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(&res, "retry-after"), Some("1"));
        assert_eq!(header(&res, "content-type"), Some("application/problem+json"));
        for name in [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
            "ratelimit",
            "ratelimit-policy",
        ] {
            assert_eq!(header(&res, name), None, "{name}");
        }
    }
    // Never banned: the client's existing key still passes, and no ban was issued.
    let res = client.get(&base).header("x-api-key", "a").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // The global rule kept only the two admitted requests.
    assert_eq!(header(&res, "x-ratelimit-remaining"), Some("8"));
    let mut bans = Vec::new();
    layer.auto_ban().unwrap().for_each_ban(|k, _| bans.push(k.to_owned()));
    assert!(bans.is_empty(), "{bans:?}");
    let m = layer.metrics();
    assert_eq!((m.allowed, m.denied, m.banned, m.bans_issued), (2, 5, 0, 0));
}

/// `replace_rule` keeps names unique and routes free, as `add_rule` and `replace_rule_at` do.
#[test]
fn replace_rule_refuses_a_taken_name_or_route() {
    let clock = ManualClock::new();
    let l = limiter(&clock, "1/s");
    let named = |name: &str| rule(name, &l);
    let layer = RateLimitLayer::builder()
        .rule(named("a"))
        .rule(named("b"))
        .route("/x", named("get").methods([http::Method::GET]))
        .route("/x", named("post").methods([http::Method::POST]))
        .build();
    let names =
        |layer: &RateLimitLayer| layer.rules().iter().map(|(_, r)| r.name().to_owned()).collect::<Vec<_>>();
    // Another rule's name: refused, nothing changes.
    assert!(!layer.replace_rule("a", named("b")));
    assert_eq!(names(&layer), ["a", "b", "get", "post"]);
    // Its own name, or a free one: replaced.
    assert!(layer.replace_rule("a", named("a")));
    assert!(layer.replace_rule("a", named("c")));
    assert_eq!(names(&layer), ["c", "b", "get", "post"]);
    // At /x, GET belongs to "get": "post" may not take it, but may be replaced for POST.
    assert!(!layer.replace_rule("post", named("post").methods([http::Method::GET])));
    assert!(!layer.replace_rule("post", named("post")));
    assert!(layer.replace_rule("post", named("put").methods([http::Method::PUT])));
    let rules = layer.rules();
    assert_eq!(names(&layer), ["c", "b", "get", "put"]);
    assert_eq!(rules[3].0.as_deref(), Some("/x"));
    // Unknown: false, as before.
    assert!(!layer.replace_rule("nope", named("z")));
}

/// What a client sees of a response: status, the headers the layer writes or sets, the body.
async fn seen(res: Response) -> (StatusCode, Vec<(String, Option<String>)>, String) {
    let names = [
        "content-type",
        "content-length",
        "retry-after",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "ratelimit-policy",
        "ratelimit",
    ];
    let headers = names.iter().map(|n| (n.to_string(), header(&res, n).map(str::to_owned))).collect();
    (res.status(), headers, res.text().await.unwrap())
}

/// `same_body` (axum's own body type, no second box) and the default `Wrapped` body answer every
/// path byte for byte alike: passes with headers, 429, the auto-ban 403, and the remote
/// (boxed-future) path's pass and 429.
#[tokio::test]
async fn both_body_modes_answer_alike() {
    let clock = ManualClock::new();
    let layer = |clock: &ManualClock| {
        let remote = StrKeys::new(KeyedLimiter::<String, ManualClock>::with_clock(
            Quota::per_second(3).unwrap(),
            clock.clone(),
        ));
        let ban =
            AutoBan::with_clock(2, Duration::from_secs(10), Duration::from_secs(60), clock.clone()).unwrap();
        RateLimitLayer::builder()
            .rule(rule("local", &limiter(clock, "2/s")).methods([axum::http::Method::GET]))
            .rule(Rule::new("remote", remote).unwrap().methods([axum::http::Method::POST]))
            .auto_ban(ban)
            .build()
    };
    let wrapped = serve(app(layer(&clock))).await;
    let same = {
        let router: Router = Router::new().route("/", get(note).post(note)).layer(layer(&clock).same_body());
        serve(router).await
    };
    let client = Client::new();
    let mut statuses = Vec::new();
    for (method, advance) in
        [("POST", 0), ("POST", 0), ("POST", 0), ("POST", 0), ("GET", 0), ("GET", 0), ("GET", 0), ("GET", 2)]
    {
        clock.advance(Duration::from_secs(advance));
        let mut answers = Vec::new();
        for base in [&wrapped, &same] {
            let req = client.request(method.parse().unwrap(), base.as_str());
            answers.push(seen(req.send().await.unwrap()).await);
        }
        assert_eq!(answers[0], answers[1], "{method}");
        statuses.push(answers[0].0.as_u16());
    }
    // Remote: 3 passes then a 429 (strike 1); local: 2 passes, then the strike that bans (2),
    // answered as the ban is (403), and the ban's 403.
    assert_eq!(statuses, [200, 200, 200, 429, 200, 200, 403, 403]);
}

/// A response future polled again after it completed answers 503 instead of panicking, on the
/// local path and on the remote (boxed) one, in both body modes. The inner service is pending on
/// its first poll: a pending poll does not count as completion (review finding: untested).
#[tokio::test]
async fn response_futures_polled_after_completion_answer() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    use tower::{Service, ServiceExt};

    /// Pending once (waking itself), then ready.
    struct YieldOnce(bool);
    impl Future for YieldOnce {
        type Output = ();
        fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if std::mem::replace(&mut self.0, true) {
                return Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
    type Inner = http_body_util::Full<bytes::Bytes>;
    let hello = || {
        tower::service_fn(|_req: http::Request<()>| async {
            YieldOnce(false).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(Inner::from("hello")))
        })
    };
    let clock = ManualClock::new();
    let remote = || {
        StrKeys::new(KeyedLimiter::<String, ManualClock>::with_clock(
            Quota::per_hour(1).unwrap(),
            clock.clone(),
        ))
    };
    let request = || {
        let mut req = http::Request::new(());
        req.extensions_mut().insert(tollgate::http::PeerAddr("192.0.2.1:1".parse().unwrap()));
        req
    };
    /// Polls to completion, then once more: (first status, second status).
    fn twice<F, B, E>(future: F) -> (u16, u16)
    where
        F: Future<Output = Result<http::Response<B>, E>>,
        E: std::fmt::Debug,
    {
        let mut future = std::pin::pin!(future);
        let mut cx = Context::from_waker(Waker::noop());
        let mut status = || loop {
            if let Poll::Ready(res) = future.as_mut().poll(&mut cx) {
                break res.unwrap().status().as_u16();
            }
        };
        (status(), status())
    }
    for remote_rule in [false, true] {
        let builder = || {
            let rule = if remote_rule {
                Rule::new("remote", remote()).unwrap()
            } else {
                rule("local", &limiter(&clock, "1/h"))
            };
            RateLimitLayer::builder().rule(rule.key(KeyBy::Global)).build()
        };
        let mut wrapped = tower::Layer::layer(&builder(), hello());
        let mut same = tower::Layer::layer(&builder().same_body(), hello());
        // Pass (200, then the 503 answer), then refused (429, then 503).
        for expected in [(200, 503), (429, 503)] {
            assert_eq!(
                twice(wrapped.ready().await.unwrap().call(request())),
                expected,
                "remote {remote_rule}"
            );
            assert_eq!(twice(same.ready().await.unwrap().call(request())), expected, "remote {remote_rule}");
        }
    }
}

/// The layer wrapped around the whole router (`Layer::layer(&layer, router)`) instead of added
/// with `Router::layer`: axum then neither clones a second boxed service nor boxes a second
/// future per request for it. The client address still comes from `ConnectInfo`; there is no
/// `MatchedPath` yet, so route rules match by path prefix only (a rule registered with an axum
/// pattern never applies) and `KeyBy::Route` keys by the raw path. The last two hold only when
/// wrapped (under `Router::layer` the pattern rule applies and the key is the pattern).
#[tokio::test]
async fn layer_wrapped_around_the_router() {
    let clock = ManualClock::new();
    let per_ip = limiter(&clock, "3/s");
    let users = limiter(&clock, "1/s");
    let by_route = limiter(&clock, "100/s");
    let pattern = limiter(&clock, "100/s");
    let layer = RateLimitLayer::builder()
        .rule(rule("per-ip", &per_ip).key(KeyBy::ClientIp))
        .rule(rule("by-route", &by_route).key(KeyBy::Route).mode(Mode::Shadow))
        .route("/users", rule("users", &users).key(KeyBy::ClientIp))
        .route("/items/{id}", rule("pattern", &pattern).key(KeyBy::ClientIp))
        .build()
        .same_body();
    let router: Router = Router::new()
        .route("/", get(note))
        .route("/users/{id}", get(note))
        .route("/items/{id}", get(note))
        .with_state(());
    let svc = tower::Layer::layer(&layer, router);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let make = axum::ServiceExt::<Request>::into_make_service_with_connect_info::<SocketAddr>(svc);
    tokio::spawn(async move { axum::serve(listener, make).await.unwrap() });
    let client = Client::new();

    let res = client.get(format!("{base}/users/7")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // The tighter of the two rules is reported: the route rule's last request.
    assert_eq!(header(&res, "x-ratelimit-remaining"), Some("0"));
    let res = client.get(format!("{base}/users/8")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, "retry-after"), Some("1"));
    assert_eq!(keys(&users), ["127.0.0.1"]);

    // The refused request took nothing from the global rule: one used, two left.
    assert_eq!(client.get(&base).send().await.unwrap().status(), StatusCode::OK);
    // No `MatchedPath`: the pattern rule does not apply, `KeyBy::Route` sees raw paths.
    assert_eq!(client.get(format!("{base}/items/1")).send().await.unwrap().status(), StatusCode::OK);
    assert!(keys(&pattern).is_empty());
    assert_eq!(keys(&by_route), ["/", "/items/1", "/users/7"]);
    assert_eq!(client.get(&base).send().await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(keys(&per_ip), ["127.0.0.1"]);

    // Two seconds: the bucket is full again (3/s rounds its interval up to whole ns).
    clock.advance(Duration::from_secs(2));
    // Unrouted paths are limited too (as under `Router::layer`).
    let res = client.get(format!("{base}/nowhere")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(&res, "x-ratelimit-remaining"), Some("2"));
    assert_eq!(client.get(format!("{base}/users/9")).send().await.unwrap().status(), StatusCode::OK);
}

/// A backend answering an outage with its fail-closed denial (what `RedisLimiter` under
/// `FailurePolicy::FailClosed` returns: `Origin::Fallback`).
struct OutageDenies;

impl HttpLimiter for OutageDenies {
    fn check_http(&self, _key: &HttpKey, _cost: u32) -> Check {
        Check::Ready(Ok(Decision::denied(10, 0, 0, 1_000_000_000).with_origin(tollgate::Origin::Fallback)))
    }
    fn quota_http(&self, _key: &HttpKey) -> Quota {
        Quota::per_second(10).unwrap()
    }
    fn reset_http(&self, _key: &HttpKey) -> Result<bool, CheckError> {
        Ok(false)
    }
}

/// A backend's fail-closed answer is a 429, but not the client's doing: no auto-ban strike, so
/// an outage does not ban every active client past its end (review finding).
#[tokio::test]
async fn a_backend_outage_denial_is_no_auto_ban_strike() {
    let ban = AutoBan::new(2, Duration::from_secs(60), Duration::from_secs(600)).unwrap();
    let layer =
        RateLimitLayer::builder().rule(Rule::new("redis", OutageDenies).unwrap()).auto_ban(ban).build();
    let base = serve(app(layer.clone())).await;
    let client = Client::new();
    for _ in 0..5 {
        let res = client.get(&base).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(&res, "retry-after"), Some("1"));
    }
    let m = layer.metrics();
    assert_eq!((m.denied, m.banned, m.bans_issued), (5, 0, 0));
}

/// Rules sharing one limiter and key: the refused request's takes are refunded last first, so
/// each refund meets the state its take left (GCRA refunds only an untouched TAT) and the
/// request takes nothing (review finding: refunded in take order, one cell was lost).
#[tokio::test]
async fn refunds_of_rules_sharing_a_limiter_run_last_take_first() {
    let clock = ManualClock::new();
    let shared = limiter(&clock, "4/m");
    let layer = RateLimitLayer::builder()
        .rule(rule("a", &shared))
        .rule(rule("b", &shared))
        .rule(rule("c", &shared))
        .build();
    let base = serve(app(layer)).await;
    let key = HttpKey::new("127.0.0.1");
    assert!(shared.0.check_n(&key, 2).unwrap().is_allowed()); // 2 of 4 left: a and b fit, c does not
    let res = Client::new().get(&base).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(shared.0.peek(&key).remaining(), 1); // a unit check still leaves 1: 2 left
}

/// A 429's rate-limit headers describe the rule that refused it (whose Retry-After it carries),
/// not an annotate-mode rule checked before it that would also deny (review finding).
#[tokio::test]
async fn a_refusal_carries_the_refusing_rules_headers() {
    let clock = ManualClock::new();
    let soft = limiter(&clock, "5/m");
    let hard = KeyedLimiter::<String, ManualClock>::with_clock("2/h".parse().unwrap(), clock.clone());
    assert!(soft.0.check_n(&HttpKey::new("127.0.0.1"), 5).unwrap().is_allowed());
    assert!(hard.check_n("127.0.0.1", 2).unwrap().is_allowed());
    let layer = RateLimitLayer::builder()
        .rule(rule("soft", &soft).mode(Mode::Annotate))
        // Remote-shaped (checked through a future), so the pre-check does not order it first.
        .rule(Rule::new("hard", StrKeys::new(hard)).unwrap())
        .build();
    let base = serve(app(layer)).await;
    let res = Client::new().get(&base).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, "ratelimit-policy"), Some("\"hard\";q=2;w=3600"));
    assert_eq!(header(&res, "x-ratelimit-limit"), Some("2"));
    assert_eq!(header(&res, "retry-after"), Some("1800"));
}

/// A composite rule (two limits on one key) allowed, then a later rule refused: both of its
/// limits get their cells back, as a single-algorithm rule's do (review finding: composites
/// had no receipt, so they kept their takes).
#[tokio::test]
async fn a_composite_rule_before_a_refusing_rule_is_refunded() {
    use tollgate::{Composite, DefaultHashBuilder, FixedWindow, Gcra};
    let clock = ManualClock::new();
    let q = |s: &str| s.parse::<Quota>().unwrap();
    let both = Composite::of(Gcra::from_quota(q("10/m")), FixedWindow::from_quota(q("10/h")).unwrap());
    let first = Arc::new(Listed(KeyedLimiter::<HttpKey, ManualClock, DefaultHashBuilder, _>::build(
        both,
        clock.clone(),
        0,
        DefaultHashBuilder::default(),
    )));
    let remote = KeyedLimiter::<String, ManualClock>::with_clock("1/h".parse().unwrap(), clock.clone());
    assert!(remote.check("127.0.0.1").unwrap().is_allowed()); // spent
    let layer = RateLimitLayer::builder()
        .rule(Rule::from_arc("both", first.clone() as Arc<dyn HttpLimiter>).unwrap())
        .rule(Rule::new("remote", StrKeys::new(remote)).unwrap())
        .build();
    let base = serve(app(layer)).await;
    let client = Client::new();
    for _ in 0..3 {
        assert_eq!(client.get(&base).send().await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    }
    // Both limits hold 10: had either kept its three takes, a unit check would leave 6.
    assert_eq!(first.0.peek(&HttpKey::new("127.0.0.1")).remaining(), 9);
}

/// The layer sweeps every rule's limiter (one shared through an `Arc` with the code that built
/// it, a bare `KeyedLimiter` in `Rule::new`) and its auto-ban tables; a background sweeper does
/// the same on its own, also for rules added later (review finding: a code-built rule could not
/// be swept in the background, and nothing swept the ban tables).
#[tokio::test]
async fn the_layer_sweeps_its_rules_and_its_bans() {
    let clock = ManualClock::new();
    let shared =
        Arc::new(KeyedLimiter::<HttpKey, ManualClock>::with_clock("1/s".parse().unwrap(), clock.clone()));
    let ban =
        AutoBan::with_clock(1, Duration::from_secs(10), Duration::from_secs(60), clock.clone()).unwrap();
    let layer = RateLimitLayer::builder()
        .rule(Rule::new("shared", shared.clone()).unwrap())
        .rule(rule("listed", &limiter(&clock, "10/s")))
        .auto_ban(ban)
        .build();
    let base = serve(app(layer.clone())).await;
    let client = Client::new();
    assert_eq!(client.get(&base).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(client.get(&base).send().await.unwrap().status(), StatusCode::FORBIDDEN); // banned now
                                                                                         // Only the strike, reset when the ban was issued: the rules' keys and the ban are busy.
    assert_eq!(layer.sweep(), 1);
    clock.advance(Duration::from_secs(60));
    // The two rules' keys and the ban.
    assert_eq!(layer.sweep(), 3);
    assert_eq!((shared.len(), layer.sweep()), (0, 0));
    // In the background, with a rule added after the sweeper started.
    let late = limiter(&clock, "5/s");
    let sweeper = layer.spawn_sweeper(Duration::from_millis(1));
    assert!(sweeper.is_running());
    layer.add_rule(None, rule("late", &late)).unwrap();
    assert_eq!(client.get(&base).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(keys(&late), ["127.0.0.1"]);
    clock.advance(Duration::from_secs(1));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !keys(&late).is_empty() || !shared.is_empty() {
        assert!(std::time::Instant::now() < deadline, "the background sweeper never evicted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(sweeper);
}

/// Inside `Router::nest`, axum strips the nest's prefix from the URI the inner router sees but
/// keeps `MatchedPath` whole: route prefixes and skip paths are matched against the original
/// path, so they are written in full like route patterns (review finding: a `/api/users`
/// prefix rule was silently skipped for `/api/users/5`, while `/users` applied).
#[tokio::test]
async fn rules_and_skip_paths_inside_a_nested_router_use_the_full_path() {
    let clock = ManualClock::new();
    let users = limiter(&clock, "1/h");
    let layer = RateLimitLayer::builder()
        .skip_path("/api/health")
        .route("/api/users", rule("users", &users).key(KeyBy::Global))
        .build();
    let inner = Router::new().route("/users/{id}", get(note)).route("/health", get(note)).layer(layer);
    let base = serve(Router::new().nest("/api", inner)).await;
    let client = Client::new();
    let mut codes = Vec::new();
    for _ in 0..3 {
        codes.push(client.get(format!("{base}/api/users/5")).send().await.unwrap().status().as_u16());
    }
    assert_eq!(codes, [200, 429, 429]);
    for _ in 0..3 {
        let res = client.get(format!("{base}/api/health")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().get("x-ratelimit-limit").is_none());
    }
}

/// A token bucket whose burst is not its count advertises that bucket in both header styles:
/// `q` is the burst, as `X-RateLimit-Limit` and `r` count, over the time it refills in
/// (review finding: `10/s;burst=30` sent `q=10;w=1` beside `r=29` and a limit of 30).
#[tokio::test]
async fn a_burst_quota_advertises_its_bucket_in_both_header_styles() {
    let clock = ManualClock::new();
    let bucket = limiter(&clock, "10/s;burst=30");
    let layer =
        RateLimitLayer::builder().rule(rule("bucket", &bucket)).header_style(HeaderStyle::Both).build();
    let base = serve(app(layer)).await;
    let res = Client::new().get(&base).send().await.unwrap();
    assert_eq!(header(&res, "ratelimit-policy"), Some("\"bucket\";q=30;w=3"));
    assert_eq!(header(&res, "x-ratelimit-limit"), Some("30"));
    assert_eq!(header(&res, "x-ratelimit-remaining"), Some("29"));
    assert_eq!(header(&res, "ratelimit"), Some("\"bucket\";r=29;t=1"));
}

/// A custom extractor (a JWT decode, say) is not re-run for every strike decision: a request
/// refused by its rule, with an auto-ban on, runs it once more than an allowed one (the look
/// ahead, the check, and the strike decision once) (review finding: 6 runs per denied request).
#[tokio::test]
async fn a_custom_extractor_runs_once_more_on_a_strike() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let key = KeyBy::custom(move |req, out| {
        counted.fetch_add(1, Ordering::Relaxed);
        match req.headers.get("x-client").and_then(|v| v.to_str().ok()) {
            Some(v) => {
                out.push_str(v);
                true
            }
            None => false,
        }
    })
    .or(KeyBy::Global);
    let clock = ManualClock::new();
    let ban = AutoBan::with_clock(100, Duration::from_secs(60), Duration::from_secs(600), clock.clone())
        .unwrap()
        .key(KeyBy::header("x-client"));
    let layer = RateLimitLayer::builder()
        .rule(rule("site", &limiter(&clock, "100/m")).key(KeyBy::Global))
        .rule(rule("own", &limiter(&clock, "1/m")).key(key))
        .auto_ban(ban)
        .build();
    let base = serve(app(layer.clone())).await;
    let client = Client::new();
    let status = |res: reqwest::Response| res.status().as_u16();
    assert_eq!(status(client.get(&base).header("x-client", "a").send().await.unwrap()), 200);
    let allowed = calls.swap(0, Ordering::Relaxed);
    assert_eq!(status(client.get(&base).header("x-client", "a").send().await.unwrap()), 429);
    let denied = calls.load(Ordering::Relaxed);
    assert_eq!((allowed, denied), (2, 3));
    assert_eq!(layer.metrics().denied, 1);
}

/// A remote limiter failing open: allowed, numbers that say nothing (`Origin::Unchecked`).
struct FailsOpen;

impl HttpLimiter for FailsOpen {
    fn check_http(&self, _key: &HttpKey, _cost: u32) -> Check {
        Check::Ready(Ok(Decision::allowed(10, 0, 0).with_origin(tollgate::Origin::Unchecked)))
    }
    fn quota_http(&self, _key: &HttpKey) -> Quota {
        Quota::per_second(10).unwrap()
    }
    fn reset_http(&self, _key: &HttpKey) -> Result<bool, CheckError> {
        Ok(false)
    }
}

/// A fail-open pass sends no rate-limit headers (its `remaining 0` would tell clients to stop
/// while the backend is down), and in annotate mode a real decision is the note, not it (review
/// finding: its remaining 0 beat every real decision); alone, it is still the note.
#[tokio::test]
async fn a_fail_open_pass_reports_nothing_it_does_not_know() {
    let clock = ManualClock::new();
    let local = limiter(&clock, "5/s");
    let layer = RateLimitLayer::builder().rule(Rule::new("redis", FailsOpen).unwrap()).build();
    let base = serve(app(layer)).await;
    let client = Client::new();
    let res = client.get(&base).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("x-ratelimit-remaining").is_none());
    assert!(res.headers().get("ratelimit").is_none());

    let layer = RateLimitLayer::builder()
        .rule(Rule::new("redis", FailsOpen).unwrap().mode(Mode::Annotate))
        .rule(rule("local", &local).mode(Mode::Annotate))
        .build();
    let base = serve(app(layer)).await;
    let res = client.get(&base).send().await.unwrap();
    assert_eq!(header(&res, "x-ratelimit-remaining"), Some("4"));
    assert_eq!(res.text().await.unwrap(), "local:true:4");

    let layer =
        RateLimitLayer::builder().rule(Rule::new("redis", FailsOpen).unwrap().mode(Mode::Annotate)).build();
    let base = serve(app(layer)).await;
    assert_eq!(client.get(&base).send().await.unwrap().text().await.unwrap(), "redis:true:0");
}

/// A backend failure in a set of several rules: under `FailClosed` the 503 takes nothing from
/// the rule that allowed the request first (refunded, as for a 429); under `FailOpen` the
/// request passes and counts against that rule only; an annotate rule that fails leaves no note
/// and changes nothing (review finding: no test had a failed check among several rules).
#[tokio::test]
async fn a_failing_rule_among_several_follows_the_policy_and_refunds() {
    let clock = ManualClock::new();
    let key = HttpKey::new("127.0.0.1");
    let client = Client::new();
    let local = limiter(&clock, "3/m");
    let closed = RateLimitLayer::builder()
        .rule(rule("local", &local))
        .rule(Rule::new("redis", Down).unwrap())
        .on_error(FailurePolicy::FailClosed)
        .build();
    let base = serve(app(closed.clone())).await;
    for _ in 0..3 {
        let res = client.get(&base).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(local.0.peek(&key).remaining(), 2, "a unit check still leaves 2: nothing taken");
    assert_eq!((closed.metrics().errors, closed.metrics().denied, closed.metrics().allowed), (3, 3, 0));

    let local = limiter(&clock, "3/m");
    let open =
        RateLimitLayer::builder().rule(rule("local", &local)).rule(Rule::new("redis", Down).unwrap()).build();
    let base = serve(app(open.clone())).await;
    let statuses: Vec<u16> = {
        let mut out = Vec::new();
        for _ in 0..4 {
            out.push(client.get(&base).send().await.unwrap().status().as_u16());
        }
        out
    };
    assert_eq!(statuses, [200, 200, 200, 429], "the local rule still counts");
    assert_eq!(open.metrics().errors, 3, "the refused request stops at the local rule");

    let local = limiter(&clock, "3/m");
    let soft = RateLimitLayer::builder()
        .rule(rule("local", &local))
        .rule(Rule::new("redis", Down).unwrap().mode(Mode::Annotate))
        .on_error(FailurePolicy::FailClosed)
        .build();
    let base = serve(app(soft.clone())).await;
    let res = client.get(&base).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "a failing annotate rule never refuses");
    assert_eq!(res.text().await.unwrap(), "none", "and leaves no note");
    assert_eq!(local.0.peek(&key).remaining(), 1, "the request counts against the local rule");
}
