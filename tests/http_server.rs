//! The example server (`examples/axum_server.rs`) over real HTTP on loopback, time from a
//! `ManualClock`: headers, exact counts, 429 and Retry-After, per-route rules, skip paths.
#![cfg(feature = "axum")]

#[path = "../examples/axum_server.rs"]
mod axum_server;

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::{Client, Response, StatusCode};
use tollgate::http::client_ip::ClientIpConfig;
use tollgate::ManualClock;

async fn start(config: ClientIpConfig) -> (String, ManualClock) {
    let clock = ManualClock::new();
    let app = axum_server::app(clock.clone(), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap();
    });
    (format!("http://{addr}"), clock)
}

fn header<'a>(res: &'a Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn root_headers_are_exact() {
    let (base, _clock) = start(ClientIpConfig::default()).await;
    let client = Client::new();
    let res = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "x-ratelimit-limit"), Some("10"));
    assert_eq!(header(&res, "x-ratelimit-remaining"), Some("9"));
    // The bucket is full again 100 ms later: rounded up to 1 s.
    assert_eq!(header(&res, "x-ratelimit-reset"), Some("1"));
    assert_eq!(header(&res, "ratelimit-policy"), Some(r#""per-ip";q=10;w=1"#));
    assert_eq!(header(&res, "ratelimit"), Some(r#""per-ip";r=9;t=1"#));
    assert_eq!(res.text().await.unwrap(), "hello\n");
}

#[tokio::test]
async fn counts_are_exact_then_429_then_retry_after_is_honoured() {
    let (base, clock) = start(ClientIpConfig::default()).await;
    let client = Client::new();
    let url = format!("{base}/");
    for expected_remaining in (0..10).rev() {
        let res = client.get(&url).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "x-ratelimit-remaining").unwrap(), expected_remaining.to_string());
    }
    let res = client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // 100 ms to wait, rounded up to whole seconds.
    assert_eq!(header(&res, "retry-after"), Some("1"));
    assert_eq!(header(&res, "content-type"), Some("application/problem+json"));
    assert_eq!(header(&res, "x-ratelimit-remaining"), Some("0"));
    let length: usize = header(&res, "content-length").unwrap().parse().unwrap();
    assert_eq!(header(&res, "ratelimit"), Some(r#""per-ip";r=0;t=1"#));
    let bytes = res.bytes().await.unwrap();
    assert_eq!(bytes.len(), length);
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["status"], 429);
    assert_eq!(body["title"], "Too Many Requests");

    // 1 ms short of the exact wait: still denied.
    clock.advance(Duration::from_millis(99));
    assert_eq!(client.get(&url).send().await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    // After Retry-After (1 s) the whole burst is back.
    clock.advance(Duration::from_millis(901));
    let res = client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "x-ratelimit-remaining"), Some("9"));
}

#[tokio::test]
async fn login_has_its_own_stricter_rule() {
    let (base, _clock) = start(ClientIpConfig::default()).await;
    let client = Client::new();
    let login = format!("{base}/login");
    for expected_remaining in (0..5).rev() {
        let res = client.post(&login).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "x-ratelimit-limit"), Some("5"));
        assert_eq!(header(&res, "x-ratelimit-remaining").unwrap(), expected_remaining.to_string());
        assert_eq!(header(&res, "ratelimit-policy"), Some(r#""login";q=5;w=60"#));
    }
    let res = client.post(&login).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // One login every 12 s.
    assert_eq!(header(&res, "retry-after"), Some("12"));
    // Another route of the same client is unaffected.
    let res = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "x-ratelimit-remaining"), Some("9"));
}

#[tokio::test]
async fn api_keys_have_separate_buckets() {
    let (base, _clock) = start(ClientIpConfig::default()).await;
    let client = Client::new();
    let url = format!("{base}/api/data");
    for i in 0..100 {
        let res = client.get(&url).header("x-api-key", "alpha").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "request {i}");
    }
    let res = client.get(&url).header("x-api-key", "alpha").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let res = client.get(&url).header("x-api-key", "beta").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "x-ratelimit-remaining"), Some("99"));
    // Without a key: the client address's bucket.
    let res = client.get(&url).send().await.unwrap();
    assert_eq!(header(&res, "x-ratelimit-remaining"), Some("99"));
}

#[tokio::test]
async fn healthz_is_skipped() {
    let (base, _clock) = start(ClientIpConfig::default()).await;
    let client = Client::new();
    for _ in 0..30 {
        let res = client.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().get("x-ratelimit-limit").is_none());
        assert!(res.headers().get("ratelimit").is_none());
    }
}

#[tokio::test]
async fn no_trusted_proxy_ignores_x_forwarded_for() {
    let (base, _clock) = start(ClientIpConfig::default()).await;
    let client = Client::new();
    for i in 0..10 {
        // A new spoofed address every time: all land in the peer's bucket.
        let res = client
            .get(format!("{base}/"))
            .header("x-forwarded-for", format!("1.2.3.{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = client.get(format!("{base}/")).header("x-forwarded-for", "9.9.9.9").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn trusted_proxy_uses_rightmost_untrusted_address() {
    let config = ClientIpConfig::default().trust("127.0.0.0/8".parse().unwrap());
    let (base, _clock) = start(config).await;
    let client = Client::new();
    let get = |xff: &'static str| client.get(format!("{base}/")).header("x-forwarded-for", xff).send();
    for _ in 0..10 {
        // The leftmost entry is the client's own claim and changes; the proxy-appended one does not.
        assert_eq!(get("6.6.6.6, 203.0.113.9").await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(get("7.7.7.7, 203.0.113.9").await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(get("203.0.113.9").await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    // A different client behind the same proxy has its own bucket.
    let res = get("203.0.113.10").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "x-ratelimit-remaining"), Some("9"));
}

#[tokio::test]
async fn minted_api_keys_are_still_bounded_per_client_address() {
    // `X-API-Key` is not validated in the demo: each new value is a new bucket of the `api`
    // rule. The per-client-address rule on every route still holds such a client to 600/min.
    let (base, _clock) = start(ClientIpConfig::default()).await;
    let client = Client::new();
    let url = format!("{base}/api/data");
    for i in 0..600 {
        let res = client.get(&url).header("x-api-key", format!("minted-{i}")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "request {i}");
    }
    let res = client.get(&url).header("x-api-key", "minted-600").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, "ratelimit-policy"), Some(r#""per-client";q=600;w=60"#));
    // One request per 100 ms comes back.
    assert_eq!(header(&res, "retry-after"), Some("1"));
}
