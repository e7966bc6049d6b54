//! The admin API over real HTTP on loopback: auth, rules, per-key stats, reset, bans, metrics.
#![cfg(feature = "axum")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use reqwest::{Client, StatusCode};
use serde_json::Value;
use tollgate::http::admin::{keyed_factory, AdminApi};
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
    let admin =
        AdminApi::new(layer, "s3cret").limiter_factory(move |q, _| Ok(limiter(q, &factory_clock))).router();
    Setup { app, admin: serve(admin).await, clock }
}

/// An authenticated GET whose JSON body is returned.
async fn get_json(client: &Client, url: String) -> Value {
    authed(client, reqwest::Method::GET, url).send().await.unwrap().json().await.unwrap()
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
    let keys: Value = get_json(&client, format!("{}/rules/per-ip/keys", s.admin)).await;
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
    let rules: Value = get_json(&client, format!("{}/rules", s.admin)).await;
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
    // The first denial is a strike (429); the second bans, and is answered as the ban is.
    assert_eq!(client.get(&s.app).send().await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(client.get(&s.app).send().await.unwrap().status(), StatusCode::FORBIDDEN);
    s.clock.advance(Duration::from_secs(5));
    assert_eq!(client.get(&s.app).send().await.unwrap().status(), StatusCode::FORBIDDEN);
    let bans: Value = get_json(&client, format!("{}/bans", s.admin)).await;
    assert_eq!(bans, serde_json::json!([{ "key": "127.0.0.1", "seconds_left": 25 }]));
    let res =
        authed(&client, reqwest::Method::DELETE, format!("{}/bans/127.0.0.1", s.admin)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(client.get(&s.app).send().await.unwrap().status(), StatusCode::OK);
}

/// An app with no rules yet and its admin API, limiters on a `ManualClock`.
async fn empty_setup() -> (String, String, RateLimitLayer) {
    let clock = ManualClock::new();
    let layer = RateLimitLayer::builder().build();
    let app = Router::new()
        .route("/", get(|| async { "hi" }))
        .route("/search", get(|| async { "found" }).post(|| async { "posted" }))
        .layer(layer.clone());
    let factory = keyed_factory(clock, 1000);
    let admin = AdminApi::new(layer.clone(), "s3cret").limiter_factory(move |q, a| factory(q, a)).router();
    (serve(app).await, serve(admin).await, layer)
}

async fn send(client: &Client, method: reqwest::Method, url: String, body: &str) -> (StatusCode, Value) {
    let res = authed(client, method, url).body(body.to_owned()).send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `(status, x-ratelimit-limit, x-ratelimit-remaining)` of one request.
async fn hit(client: &Client, url: String) -> (u16, Option<String>, Option<String>) {
    let res = client.get(url).send().await.unwrap();
    let h = |n: &str| res.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
    (res.status().as_u16(), h("x-ratelimit-limit"), h("x-ratelimit-remaining"))
}

fn some(s: &str) -> Option<String> {
    Some(s.to_owned())
}

#[tokio::test]
async fn rules_are_created_replaced_and_deleted_at_runtime() {
    let (app, admin, layer) = empty_setup().await;
    let client = Client::new();
    let search = format!("{app}/search");
    assert_eq!(hit(&client, search.clone()).await, (200, None, None));

    // Create: a rule for GET /search, 2/s per client address.
    let res = authed(&client, reqwest::Method::POST, format!("{admin}/rules"))
        .body(r#"{"name":"search","route":"/search","methods":["get"],"quota":"2/s"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.headers()["location"], "/rules/search");
    let shown: Value = res.json().await.unwrap();
    assert_eq!(
        shown,
        // A rule on GET covers HEAD (servers answer it with the GET handler), and says so.
        serde_json::json!({"name": "search", "route": "/search", "methods": ["GET", "HEAD"], "quota": "2/s",
            "algorithm": "gcra", "mode": "block", "cost": 1, "key": "client_ip", "ban_strikes": null})
    );
    assert_eq!(hit(&client, search.clone()).await, (200, some("2"), some("1")));
    assert_eq!(hit(&client, search.clone()).await, (200, some("2"), some("0")));
    assert_eq!(hit(&client, search.clone()).await.0, 429);
    // Other routes and methods are not covered.
    assert_eq!(hit(&client, format!("{app}/")).await, (200, None, None));
    assert_eq!(client.post(&search).send().await.unwrap().status(), StatusCode::OK);

    // Replace the quota (and the mode): a fresh limiter, counts start over.
    let (status, shown) = send(
        &client,
        reqwest::Method::PUT,
        format!("{admin}/rules/search"),
        r#"{"quota":"5/s","mode":"annotate"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (shown["quota"].as_str(), shown["mode"].as_str(), shown["route"].as_str()),
        (Some("5/s"), Some("annotate"), Some("/search"))
    );
    assert_eq!(hit(&client, search.clone()).await, (200, some("5"), some("4")));
    // Only the mode: the limiter and its state stay.
    let (status, _) =
        send(&client, reqwest::Method::PUT, format!("{admin}/rules/search"), r#"{"mode":"block"}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(hit(&client, search.clone()).await, (200, some("5"), some("3")));
    // Move it to every request (route null): `/` is now limited by the same state.
    let (status, shown) = send(
        &client,
        reqwest::Method::PUT,
        format!("{admin}/rules/search"),
        r#"{"route":null,"methods":null}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((&shown["route"], &shown["methods"]), (&Value::Null, &Value::Null));
    assert_eq!(hit(&client, format!("{app}/")).await, (200, some("5"), some("2")));
    assert_eq!(layer.rules().len(), 1);

    // Delete.
    let (status, _) = send(&client, reqwest::Method::DELETE, format!("{admin}/rules/search"), "").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(layer.rules().is_empty());
    assert_eq!(hit(&client, search.clone()).await, (200, None, None));
    for method in [reqwest::Method::DELETE, reqwest::Method::PUT] {
        let (status, problem) = send(&client, method, format!("{admin}/rules/search"), "{}").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(problem["status"], 404);
    }
}

/// `ban_strikes` is shown, set, kept by replacements that leave it out (also when it was set in
/// code: before, any replacement dropped it), and reset by `null`.
#[tokio::test]
async fn ban_strikes_is_shown_set_and_kept() {
    let (_app, admin, layer) = empty_setup().await;
    let client = Client::new();
    let limiter = tollgate::KeyedLimiter::<tollgate::http::HttpKey>::new("5/s".parse().unwrap());
    let coded = tollgate::http::Rule::new("coded", limiter).unwrap().key(tollgate::http::KeyBy::Global);
    layer.add_rule(None, coded.ban_strikes(true)).unwrap();
    let url = format!("{admin}/rules/coded");
    let (status, shown) = send(&client, reqwest::Method::PUT, url.clone(), r#"{"quota":"9/s"}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((shown["quota"].as_str(), &shown["ban_strikes"]), (Some("9/s"), &Value::Bool(true)));
    let (status, shown) = send(&client, reqwest::Method::PUT, url.clone(), r#"{"ban_strikes":false}"#).await;
    assert_eq!((status, &shown["ban_strikes"]), (StatusCode::OK, &Value::Bool(false)));
    let (status, shown) = send(&client, reqwest::Method::PUT, url.clone(), r#"{"ban_strikes":null}"#).await;
    assert_eq!((status, &shown["ban_strikes"]), (StatusCode::OK, &Value::Null));
    let body = r#"{"name":"new","quota":"1/s","ban_strikes":true}"#;
    let (status, shown) = send(&client, reqwest::Method::POST, format!("{admin}/rules"), body).await;
    assert_eq!((status, &shown["ban_strikes"]), (StatusCode::CREATED, &Value::Bool(true)));
    let (status, problem) = send(&client, reqwest::Method::PUT, url, r#"{"ban_strikes":"yes"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem["detail"].as_str().unwrap().contains("not a valid rule"), "{problem}");
}

#[tokio::test]
async fn names_are_unique_and_algorithms_and_costs_apply() {
    let (app, admin, _layer) = empty_setup().await;
    let client = Client::new();
    let body = r#"{"name":"log","quota":"4/s","algorithm":"sliding_log","cost":2,"key":"route+client_ip"}"#;
    let (status, shown) = send(&client, reqwest::Method::POST, format!("{admin}/rules"), body).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        (shown["algorithm"].as_str(), shown["cost"].as_u64(), shown["key"].as_str()),
        (Some("sliding_log"), Some(2), Some("route+client_ip"))
    );
    let (status, problem) = send(&client, reqwest::Method::POST, format!("{admin}/rules"), body).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["status"], 409);
    // Cost 2 of 4: two requests per route and client.
    let root = format!("{app}/");
    assert_eq!(hit(&client, root.clone()).await, (200, some("4"), some("2")));
    assert_eq!(hit(&client, root.clone()).await, (200, some("4"), some("0")));
    assert_eq!(hit(&client, root.clone()).await.0, 429);
    assert_eq!(hit(&client, format!("{app}/search")).await, (200, some("4"), some("2")));
    // A new quota keeps the algorithm and the cost.
    let (status, shown) =
        send(&client, reqwest::Method::PUT, format!("{admin}/rules/log"), r#"{"quota":"6/s"}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((shown["algorithm"].as_str(), shown["cost"].as_u64()), (Some("sliding_log"), Some(2)));
    // Renaming onto a taken name is a conflict; a quota below the cost is refused.
    let (status, _) =
        send(&client, reqwest::Method::POST, format!("{admin}/rules"), r#"{"name":"other","quota":"1/s"}"#)
            .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) =
        send(&client, reqwest::Method::PUT, format!("{admin}/rules/log"), r#"{"name":"other"}"#).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, problem) =
        send(&client, reqwest::Method::PUT, format!("{admin}/rules/log"), r#"{"quota":"1/s"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        problem["detail"],
        "\"cost\" 2 is more than the quota's burst 1: every request would be refused"
    );
    // At most one route rule applies to a request: a second one for the same route and method
    // would never apply, so it is refused; other methods are fine.
    let (status, _) = send(
        &client,
        reqwest::Method::POST,
        format!("{admin}/rules"),
        r#"{"name":"s1","route":"/search","quota":"1/s","methods":["GET"]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, problem) = send(
        &client,
        reqwest::Method::POST,
        format!("{admin}/rules"),
        r#"{"name":"s2","route":"/search","quota":"1/s"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["detail"], "another rule already covers this route for some of these methods");
    let (status, _) = send(
        &client,
        reqwest::Method::POST,
        format!("{admin}/rules"),
        r#"{"name":"s2","route":"/search","quota":"1/s","methods":["POST"]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) =
        send(&client, reqwest::Method::PUT, format!("{admin}/rules/s2"), r#"{"methods":null}"#).await;
    assert_eq!(status, StatusCode::CONFLICT);
    for name in ["s1", "s2"] {
        let (status, _) = send(&client, reqwest::Method::DELETE, format!("{admin}/rules/{name}"), "").await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    let rules: Value = get_json(&client, format!("{admin}/rules")).await;
    let names: Vec<&str> = rules.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["log", "other"]);
    assert_eq!(rules[0]["quota"], "6/s");
}

#[tokio::test]
async fn bad_rule_bodies_are_400_problems_and_change_nothing() {
    let (_app, admin, layer) = empty_setup().await;
    let client = Client::new();
    let cases = [
        ("not json", "body is not a valid rule"),
        (r#"{"name":"x","quota":"1/s","nmae":"y"}"#, "unknown field"),
        (r#"{"name":"x","quota":"1/s","cost":-1}"#, "body is not a valid rule: \"cost\": invalid value"),
        // A wrong type is named (review finding: the detail gave only a line and column).
        (
            r#"{"name":"x","quota":"1/s","ban_strikes":"yes"}"#,
            "\"ban_strikes\": invalid type: string \"yes\"",
        ),
        (r#"{"name":"x","quota":5}"#, "\"quota\": invalid type: integer"),
        (r#"{"name":"x","quota":"1/s","methods":["GET",7]}"#, "\"methods[1]\": invalid type"),
        (r#"{"name":"x","quota":"1/s"} {}"#, "trailing characters"),
        (r#"{"name":"x","quota":"1/s",}"#, "body is not a valid rule: trailing comma"),
        (r#"["x",null,null,"1/s"]"#, "body is not a valid rule: a rule is a JSON object"),
        ("", "a rule is a JSON object"),
        (r#"{"name":"x","quota":"1/s""#, "body is not a valid rule: EOF"),
        (r#"{"quota":"1/s"}"#, "\"name\" is required"),
        (r#"{"name":"x"}"#, "\"quota\" is required"),
        (r#"{"name":"x","quota":"lots"}"#, "\"quota\" \"lots\""),
        (r#"{"name":"x","quota":"0/s"}"#, "\"quota\" \"0/s\""),
        (r#"{"name":"has space","quota":"1/s"}"#, "\"name\""),
        (r#"{"name":"x","quota":"1/s","route":"search"}"#, "\"route\" \"search\""),
        (r#"{"name":"x","quota":"1/s","route":"/a b"}"#, "\"route\""),
        (r#"{"name":"x","quota":"1/s","methods":[]}"#, "\"methods\""),
        (r#"{"name":"x","quota":"1/s","methods":["G E T"]}"#, "\"methods\""),
        (r#"{"name":"x","quota":"1/s","mode":"loud"}"#, "\"mode\" \"loud\""),
        (r#"{"name":"x","quota":"1/s","algorithm":"leaky"}"#, "unknown algorithm \"leaky\""),
        (r#"{"name":"x","quota":"1/s","key":"cookie"}"#, "\"key\" \"cookie\""),
        (r#"{"name":"x","quota":"1/s","key":"header:bad name"}"#, "\"key\""),
        (r#"{"name":"x","quota":"2/s","cost":3}"#, "\"cost\" 3"),
        (r#"{"name":"x","quota":"2/s","cost":4294967296}"#, "\"cost\" 4294967296"),
    ];
    for (body, detail) in cases {
        let res =
            authed(&client, reqwest::Method::POST, format!("{admin}/rules")).body(body).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(res.headers()["content-type"], "application/problem+json", "{body}");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["status"], 400, "{body}");
        assert!(problem["detail"].as_str().unwrap().contains(detail), "{body}: {problem}");
    }
    assert!(layer.rules().is_empty());
}

#[tokio::test]
async fn rule_changes_need_the_token() {
    let (_app, admin, layer) = empty_setup().await;
    let client = Client::new();
    let body = r#"{"name":"x","quota":"1/s"}"#;
    for (method, path) in [
        (reqwest::Method::POST, "/rules"),
        (reqwest::Method::PUT, "/rules/x"),
        (reqwest::Method::DELETE, "/rules/x"),
    ] {
        let url = format!("{admin}{path}");
        let res = client.request(method.clone(), &url).body(body).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        let res = client
            .request(method.clone(), &url)
            .header("authorization", "Bearer wrong")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    assert!(layer.rules().is_empty());
    let (status, _) = send(&client, reqwest::Method::POST, format!("{admin}/rules"), body).await;
    assert_eq!(status, StatusCode::CREATED);
    let res = client.delete(format!("{admin}/rules/x")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(layer.rules().len(), 1);
}

/// Rule changes under live traffic: every request sees one whole rule set (never a 5xx, never
/// an error from a half-applied change), and once the changes stop, counts are exact again.
#[tokio::test]
async fn rule_changes_under_live_traffic() {
    let (app, admin, layer) = empty_setup().await;
    let client = Client::new();
    let body = r#"{"name":"live","route":"/search","quota":"1000/s"}"#;
    let (status, _) = send(&client, reqwest::Method::POST, format!("{admin}/rules"), body).await;
    assert_eq!(status, StatusCode::CREATED);
    let traffic: Vec<_> = (0..4)
        .map(|_| {
            let client = client.clone();
            let url = format!("{app}/search");
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for _ in 0..50 {
                    statuses.push(client.get(&url).send().await.unwrap().status().as_u16());
                }
                statuses
            })
        })
        .collect();
    for i in 0..20 {
        let quota = format!(
            r#"{{"quota":"{}/s","mode":"{}"}}"#,
            500 + i,
            if i % 2 == 0 { "annotate" } else { "block" }
        );
        let (status, _) = send(&client, reqwest::Method::PUT, format!("{admin}/rules/live"), &quota).await;
        assert_eq!(status, StatusCode::OK);
    }
    for task in traffic {
        let statuses = task.await.unwrap();
        assert_eq!(statuses.len(), 50);
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}"); // bursts of 500+ for 200 requests: never refused
    }
    let (status, _) =
        send(&client, reqwest::Method::PUT, format!("{admin}/rules/live"), r#"{"quota":"2/s"}"#).await;
    assert_eq!(status, StatusCode::OK);
    let search = format!("{app}/search");
    assert_eq!(hit(&client, search.clone()).await, (200, some("2"), some("1")));
    assert_eq!(hit(&client, search.clone()).await, (200, some("2"), some("0")));
    assert_eq!(hit(&client, search).await.0, 429);
    assert_eq!(layer.rules().len(), 1);
}

/// Limiters made by `swept_factory` (what `AdminApi::new` uses) evict idle keys in the
/// background, with no check and no full table to trigger a sweep; the thread stops with the
/// limiter.
#[test]
fn swept_factory_evicts_idle_keys_in_the_background() {
    use tollgate::http::admin::swept_factory;
    use tollgate::http::{AlgorithmKind, Check};
    let clock = ManualClock::new();
    let factory = swept_factory(clock.clone(), 1000, Duration::from_millis(5));
    for algorithm in [AlgorithmKind::Gcra, AlgorithmKind::FixedWindow, AlgorithmKind::SlidingWindow] {
        let limiter = factory(Quota::per_second(10).unwrap(), algorithm).unwrap();
        for k in 0..50 {
            let Check::Ready(Ok(d)) = limiter.check_http(&HttpKey::new(&format!("k{k}")), 1) else {
                panic!("in-process limiters answer at once")
            };
            assert!(d.is_allowed());
        }
        let count = |l: &Arc<dyn HttpLimiter>| {
            let mut n = 0;
            l.for_each_http(&mut |_, _| n += 1);
            n
        };
        assert_eq!(count(&limiter), 50);
        clock.advance(Duration::from_secs(3)); // every key idle (two 1 s windows have passed)
                                               // Wait for the background sweep (a condition, not a timing: 60 s is only a backstop).
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while count(&limiter) > 0 {
            assert!(std::time::Instant::now() < deadline, "{algorithm:?}: the sweeper never ran");
            std::thread::sleep(Duration::from_millis(5));
        }
        // The keys come back fresh: nothing was lost or carried over.
        let Check::Ready(Ok(d)) = limiter.check_http(&HttpKey::new("k0"), 1) else { panic!() };
        assert_eq!(d.remaining(), 9);
        drop(limiter); // joins the sweeper thread
    }
}

/// A fixed cost is checked against the burst, the most any algorithm admits at once: with
/// `100/m;burst=5` a cost of 50 would refuse every request, so it is a 400 (and a cost of 5 is
/// fine). The window algorithms refuse a separate burst outright (a window limits its count),
/// and check the cost against that count.
#[tokio::test]
async fn a_cost_above_the_burst_is_refused_even_when_below_the_count() {
    let (app, admin, layer) = empty_setup().await;
    let client = Client::new();
    for (algorithm, quota, detail) in [
        ("gcra", "100/m;burst=5", "\"cost\" 50 is more than the quota's burst 5: every request would be refused"),
        ("fixed_window", "5/m", "\"cost\" 50 is more than the quota's burst 5: every request would be refused"),
        ("sliding_window", "5/m", "\"cost\" 50 is more than the quota's burst 5: every request would be refused"),
        ("sliding_log", "5/m", "\"cost\" 50 is more than the quota's burst 5: every request would be refused"),
        (
            "fixed_window",
            "100/m;burst=5",
            "\"quota\" \"100/m;burst=5\": a window limits 100 per period and cannot also allow a burst of 5 (drop ;burst=, or use GCRA)",
        ),
    ] {
        let body = format!(r#"{{"name":"r","quota":"{quota}","algorithm":"{algorithm}","cost":50}}"#);
        let (status, problem) = send(&client, reqwest::Method::POST, format!("{admin}/rules"), &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{algorithm}: {problem}");
        assert_eq!(problem["detail"], detail, "{algorithm} {quota}");
        assert!(layer.rules().is_empty(), "{algorithm}");
    }
    // Nothing was added: requests pass unlimited.
    assert_eq!(hit(&client, app.clone()).await, (200, None, None));

    // A cost equal to the burst is admitted once, then refused until cells come back.
    let body = r#"{"name":"r","quota":"100/m;burst=5","cost":5}"#;
    let (status, _) = send(&client, reqwest::Method::POST, format!("{admin}/rules"), body).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(hit(&client, app.clone()).await, (200, some("5"), some("0")));
    assert_eq!(hit(&client, app.clone()).await.0, 429);
    // Replacing only the quota re-checks the kept cost against the new burst.
    let (status, problem) =
        send(&client, reqwest::Method::PUT, format!("{admin}/rules/r"), r#"{"quota":"100/m;burst=4"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        problem["detail"],
        "\"cost\" 5 is more than the quota's burst 4: every request would be refused"
    );
}

/// RFC 9110 §11.1: the auth scheme is case-insensitive (`bearer`, `BEARER`); the token is not.
#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_the_token_is_not() {
    let s = setup().await;
    let client = Client::new();
    let status = |authorization: &'static str| {
        let request = client.get(format!("{}/rules", s.admin)).header("authorization", authorization);
        async move { request.send().await.unwrap().status() }
    };
    for accepted in ["Bearer s3cret", "bearer s3cret", "BEARER s3cret", "bEaReR s3cret"] {
        assert_eq!(status(accepted).await, StatusCode::OK, "{accepted}");
    }
    for refused in ["bearer S3cret", "bearer s3cre", "Basic s3cret", "bearers3cret", "s3cret"] {
        assert_eq!(status(refused).await, StatusCode::UNAUTHORIZED, "{refused}");
    }
}

/// Without auto-ban, `GET /bans` is an empty list and `DELETE /bans/{key}` a `204` (nothing is
/// banned, so there is nothing to lift), the same as lifting a key that is not banned when
/// auto-ban is configured.
#[tokio::test]
async fn bans_without_auto_ban_are_an_empty_list_and_lifting_one_is_a_no_op() {
    let client = Client::new();
    let (_app, admin, _layer) = empty_setup().await;
    let (status, bans) = send(&client, reqwest::Method::GET, format!("{admin}/bans"), "").await;
    assert_eq!((status, bans), (StatusCode::OK, serde_json::json!([])));
    let res =
        authed(&client, reqwest::Method::DELETE, format!("{admin}/bans/192.0.2.1")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // With auto-ban: a key that was never banned is lifted the same way.
    let s = setup().await;
    let res =
        authed(&client, reqwest::Method::DELETE, format!("{}/bans/192.0.2.1", s.admin)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(get_json(&client, format!("{}/bans", s.admin)).await, serde_json::json!([]));
    // Still behind the token.
    let res = client.delete(format!("{admin}/bans/192.0.2.1")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

/// A `|` key (`KeyBy::First`) is shown as it was given and reads back as the same key: a PUT of
/// the shown rule keeps it, and requests are keyed by the first part present.
#[tokio::test]
async fn an_or_key_is_shown_as_given_and_reads_back() {
    let (app, admin, _layer) = empty_setup().await;
    let client = Client::new();
    let body = r#"{"name":"api","quota":"5/s","key":"header:x-api-key|client_ip"}"#;
    let (status, shown) = send(&client, reqwest::Method::POST, format!("{admin}/rules"), body).await;
    assert_eq!(status, StatusCode::CREATED, "{shown}");
    assert_eq!(shown["key"], "header:x-api-key|client_ip");
    let res = client.get(format!("{app}/")).header("x-api-key", "abc").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(client.get(format!("{app}/")).send().await.unwrap().status(), StatusCode::OK);
    let keys = get_json(&client, format!("{admin}/rules/api/keys")).await;
    let mut listed: Vec<&str> =
        keys["keys"].as_array().unwrap().iter().map(|k| k["key"].as_str().unwrap()).collect();
    listed.sort_unstable();
    assert_eq!(listed, ["0:abc", "1:127.0.0.1"]);
    // Round trip: the listed key text, sent back, is the same key (the state is kept too: a
    // change of key alone keeps the limiter).
    let rules = get_json(&client, format!("{admin}/rules")).await;
    let text = rules[0]["key"].as_str().unwrap().to_owned();
    let (status, shown) =
        send(&client, reqwest::Method::PUT, format!("{admin}/rules/api"), &format!(r#"{{"key":"{text}"}}"#))
            .await;
    assert_eq!((status, shown["key"].as_str()), (StatusCode::OK, Some("header:x-api-key|client_ip")));
    let res = client.get(format!("{app}/")).header("x-api-key", "abc").send().await.unwrap();
    assert_eq!(res.headers()["x-ratelimit-remaining"], "3");
    // Grouping: an `|` inside a `+` takes parentheses, and is shown with them.
    let body =
        r#"{"name":"grouped","route":"/search","quota":"5/s","key":"route+(header:x-api-key|client_ip)"}"#;
    let (status, shown) = send(&client, reqwest::Method::POST, format!("{admin}/rules"), body).await;
    assert_eq!(
        (status, shown["key"].as_str()),
        (StatusCode::CREATED, Some("route+(header:x-api-key|client_ip)"))
    );
}

/// A rule made through the API gets a limiter whose key cap × bytes per key fits the memory
/// budget: the reviewer's `4096/h` sliding log (32 792 bytes per key) would otherwise get 2²⁰
/// keys (32 GiB). Here a budget of 3.5 keys' state admits 3 keys; a fourth is a 429 for a full
/// table, and a rule whose one key would not fit is a 400.
#[tokio::test]
async fn admin_made_limiters_are_bounded_by_the_memory_budget() {
    let per_key = tollgate::SlidingLog::from_quota("4096/h".parse().unwrap()).unwrap().bytes_per_key();
    assert_eq!(per_key, 32_800);
    let layer = RateLimitLayer::builder().build();
    let app = serve(Router::new().route("/", get(|| async { "hi" })).layer(layer.clone())).await;
    let admin = serve(AdminApi::new(layer.clone(), "s3cret").memory_budget(per_key * 7 / 2).router()).await;
    let client = Client::new();
    let body = r#"{"name":"log","quota":"4096/h","algorithm":"sliding_log","key":"header:x-k"}"#;
    let (status, shown) = send(&client, reqwest::Method::POST, format!("{admin}/rules"), body).await;
    assert_eq!(status, StatusCode::CREATED, "{shown}");
    let hit_key = |k: u32| {
        let request = client.get(&app).header("x-k", format!("k{k}"));
        async move { request.send().await.unwrap() }
    };
    for k in 0..3 {
        assert_eq!(hit_key(k).await.status(), StatusCode::OK, "k{k}");
    }
    let full = hit_key(3).await;
    assert_eq!(full.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(full.headers()["retry-after"], "1"); // a full key table, not a rate
    let keys = get_json(&client, format!("{admin}/rules/log/keys")).await;
    assert_eq!(keys["total"], 3);
    // A known key still passes.
    assert_eq!(hit_key(0).await.status(), StatusCode::OK);
    // Under a budget smaller than one key's state the rule is refused, not made useless.
    let tiny = serve(AdminApi::new(layer.clone(), "s3cret").memory_budget(per_key - 1).router()).await;
    let body = r#"{"name":"log2","route":"/x","quota":"4096/h","algorithm":"sliding_log"}"#;
    let (status, problem) = send(&client, reqwest::Method::POST, format!("{tiny}/rules"), body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("memory budget") && detail.contains("32800"), "{detail}");
    assert_eq!(layer.rules().len(), 1);
}

/// What the API shows is accepted back: a rule with the documented maximum of 32 methods,
/// GET among them, is shown with the HEAD that GET brings (33), and PUTting the shown rule back
/// works (review finding: it was a 400, "methods must be 1 to 32"). 33 methods of one's own
/// are still refused, and a repeated method counts once.
#[tokio::test]
async fn a_rule_with_32_methods_round_trips() {
    let (_app, admin, _layer) = empty_setup().await;
    let client = Client::new();
    let mut methods = vec!["GET".to_owned()];
    methods.extend((0..31).map(|i| format!("X{i}")));
    let body = serde_json::json!({"name": "r", "route": "/r", "methods": methods, "quota": "2/s"});
    let (status, shown) =
        send(&client, reqwest::Method::POST, format!("{admin}/rules"), &body.to_string()).await;
    assert_eq!(status, StatusCode::CREATED, "{shown}");
    assert_eq!(shown["methods"].as_array().unwrap().len(), 33);
    let (status, again) =
        send(&client, reqwest::Method::PUT, format!("{admin}/rules/r"), &shown.to_string()).await;
    assert_eq!(status, StatusCode::OK, "the API's own output was refused: {again}");
    assert_eq!(again["methods"], shown["methods"]);
    let mut own = methods.clone();
    own.push("X31".to_owned());
    let body = serde_json::json!({"name": "s", "route": "/s", "methods": own, "quota": "2/s"});
    let (status, problem) =
        send(&client, reqwest::Method::POST, format!("{admin}/rules"), &body.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let body =
        serde_json::json!({"name": "t", "route": "/t", "methods": ["POST", "post", "POST"], "quota": "2/s"});
    let (status, shown) =
        send(&client, reqwest::Method::POST, format!("{admin}/rules"), &body.to_string()).await;
    assert_eq!(status, StatusCode::CREATED, "{shown}");
    assert_eq!(shown["methods"], serde_json::json!(["POST"]));
}
