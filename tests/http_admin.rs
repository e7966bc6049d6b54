//! The admin API over real HTTP on loopback: auth, rules, per-key stats, reset, bans, metrics.
#![cfg(feature = "axum")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use reqwest::{Client, StatusCode};
use serde_json::Value;
use tollgate::http::admin::AdminApi;
use tollgate::http::{AutoBan, HttpKey, HttpLimiter, Listed, RateLimitLayer, Rule};
use tollgate::{KeyedLimiter, ManualClock, Quota};

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap();
    });
    format!("http://{addr}")
}

struct Setup {
    app: String,
    admin: String,
    clock: ManualClock,
}

async fn setup() -> Setup {
    let clock = ManualClock::new();
    let limiter = |q: Quota, clock: &ManualClock| {
        Arc::new(Listed(KeyedLimiter::<HttpKey, ManualClock>::with_clock(q, clock.clone())))
            as Arc<dyn HttpLimiter>
    };
    let rule = Rule::from_arc("per-ip", limiter(Quota::per_second(2).unwrap(), &clock)).unwrap();
    let ban =
        AutoBan::with_clock(2, Duration::from_secs(10), Duration::from_secs(30), clock.clone()).unwrap();
    let layer = RateLimitLayer::builder().rule(rule).auto_ban(ban).build();
    let app = serve(Router::new().route("/", get(|| async { "hi" })).layer(layer.clone())).await;
    let factory_clock = clock.clone();
    let admin = AdminApi::new(layer, "s3cret").limiter_factory(move |q| limiter(q, &factory_clock)).router();
    Setup { app, admin: serve(admin).await, clock }
}

fn authed(client: &Client, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
    client.request(method, url).header("authorization", "Bearer s3cret")
}

#[tokio::test]
async fn health_is_open_everything_else_needs_the_token() {
    let s = setup().await;
    let client = Client::new();
    assert_eq!(client.get(format!("{}/healthz", s.admin)).send().await.unwrap().status(), StatusCode::OK);
    let ready: Value = client.get(format!("{}/readyz", s.admin)).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["rules"], 1);
    for path in ["/rules", "/metrics", "/bans", "/rules/per-ip/keys"] {
        let res = client.get(format!("{}{path}", s.admin)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{path}");
        let res = client
            .get(format!("{}{path}", s.admin))
            .header("authorization", "Bearer s3creT")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{path}");
        let res = authed(&client, reqwest::Method::GET, format!("{}{path}", s.admin)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn keys_stats_reset_and_metrics() {
    let s = setup().await;
    let client = Client::new();
    assert_eq!(client.get(&s.app).send().await.unwrap().status(), StatusCode::OK);
    let keys: Value = authed(&client, reqwest::Method::GET, format!("{}/rules/per-ip/keys", s.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(keys["total"], 1);
    assert_eq!(keys["keys"][0]["key"], "127.0.0.1");
    assert_eq!(keys["keys"][0]["limit"], 2);
    assert_eq!(keys["keys"][0]["remaining_after_next"], 0);
    assert_eq!(client.get(&s.app).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(client.get(&s.app).send().await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    let res = authed(&client, reqwest::Method::DELETE, format!("{}/rules/per-ip/keys/127.0.0.1", s.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(client.get(&s.app).send().await.unwrap().status(), StatusCode::OK);
    let text = authed(&client, reqwest::Method::GET, format!("{}/metrics", s.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("tollgate_http_allowed_total 3\n"), "{text}");
    assert!(text.contains("tollgate_http_denied_total 1\n"), "{text}");
}

#[tokio::test]
async fn rules_can_be_listed_and_updated() {
    let s = setup().await;
    let client = Client::new();
    let rules: Value = authed(&client, reqwest::Method::GET, format!("{}/rules", s.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rules[0]["name"], "per-ip");
    assert_eq!(rules[0]["mode"], "block");
    assert_eq!(rules[0]["quota"], "2/s");
    let res = authed(&client, reqwest::Method::PUT, format!("{}/rules/per-ip", s.admin))
        .body(r#"{"quota":"5/s","mode":"annotate"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = client.get(&s.app).send().await.unwrap();
    assert_eq!(res.headers()["x-ratelimit-limit"], "5");
    assert_eq!(res.headers()["ratelimit-policy"], r#""per-ip";q=5;w=1"#);
    let res = authed(&client, reqwest::Method::PUT, format!("{}/rules/per-ip", s.admin))
        .body(r#"{"quota":"lots"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = authed(&client, reqwest::Method::PUT, format!("{}/rules/nope", s.admin))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bans_are_listed_and_lifted() {
    let s = setup().await;
    let client = Client::new();
    for _ in 0..2 {
        client.get(&s.app).send().await.unwrap();
    }
    for _ in 0..2 {
        assert_eq!(client.get(&s.app).send().await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    }
    s.clock.advance(Duration::from_secs(5));
    assert_eq!(client.get(&s.app).send().await.unwrap().status(), StatusCode::FORBIDDEN);
    let bans: Value = authed(&client, reqwest::Method::GET, format!("{}/bans", s.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bans, serde_json::json!([{ "key": "127.0.0.1", "seconds_left": 25 }]));
    let res =
        authed(&client, reqwest::Method::DELETE, format!("{}/bans/127.0.0.1", s.admin)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(client.get(&s.app).send().await.unwrap().status(), StatusCode::OK);
}
