//! The HTTP layer with a real `RedisLimiter` behind a rule (`StrKeys`), over real HTTP on
//! loopback: limits and headers come from Redis, and when Redis goes away each combination of
//! the Redis limiter's failure policy and the layer's `on_error` answers as the README's table
//! says, at once once the circuit breaker is open.
#![cfg(all(feature = "redis", feature = "axum"))]

mod redis_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use redis_support::RedisServer;
use reqwest::Client;
use tollgate::http::{FailurePolicy as OnError, RateLimitLayer, Rule, StrKeys};
use tollgate::redis::{FailurePolicy, RedisLimiter};
use tollgate::Quota;

const TIMEOUT: Duration = Duration::from_millis(100);

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap();
    });
    format!("http://{addr}")
}

async fn app(server: &RedisServer, policy: FailurePolicy, on_error: OnError) -> String {
    let redis = RedisLimiter::builder(server.url(), Quota::per_minute(3).unwrap())
        .prefix(format!("http-{}", rand_suffix()))
        .timeout(TIMEOUT)
        .failure_policy(policy)
        // Off, so that after the outage starts each request asks Redis (the denied client's
        // cached denial would otherwise answer, rightly, without it).
        .deny_cache_capacity(0)
        .connect()
        .await
        .unwrap();
    let rule = Rule::new("redis", StrKeys::new(redis)).unwrap();
    let layer = RateLimitLayer::builder().rule(rule).on_error(on_error).build();
    serve(Router::new().route("/", get(|| async { "ok" })).layer(layer.same_body())).await
}

/// A prefix per app, so the apps sharing one server do not share keys.
fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed) // Relaxed: a counter; only uniqueness matters
}

/// (status, x-ratelimit-remaining, retry-after) of a GET.
async fn get_once(client: &Client, base: &str) -> (u16, Option<String>, Option<String>) {
    let res = client.get(base).send().await.unwrap();
    let header = |name: &str| res.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    (res.status().as_u16(), header("x-ratelimit-remaining"), header("retry-after"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_rule_limits_and_fails_as_configured() {
    let mut server = RedisServer::start();
    let combos = [
        (FailurePolicy::ReturnError, OnError::FailOpen),
        (FailurePolicy::ReturnError, OnError::FailClosed),
        (FailurePolicy::FailOpen, OnError::FailOpen),
        (FailurePolicy::FailClosed, OnError::FailOpen),
    ];
    let mut apps = Vec::new();
    for (policy, on_error) in combos {
        apps.push(app(&server, policy, on_error).await);
    }
    let client = Client::new();
    // Redis up: 3 per minute per client address, with Redis' numbers in the headers.
    for base in &apps {
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(get_once(&client, base).await);
        }
        let remaining: Vec<_> = seen.iter().map(|s| s.1.as_deref()).collect();
        assert_eq!(remaining, [Some("2"), Some("1"), Some("0"), Some("0")]);
        assert_eq!(seen[3].0, 429);
        assert_eq!(seen[3].2.as_deref(), Some("20")); // one of 3/min: 20 s
    }
    server.kill();
    // Redis down: each combination answers as documented; after the breaker opens (3 failed
    // calls), at once.
    let expected: [(u16, Option<&str>, Option<&str>); 4] = [
        (200, None, None),           // ReturnError + layer FailOpen: passes, no headers
        (503, None, None),           // ReturnError + layer FailClosed: 503
        (200, None, None),           // Redis FailOpen: allowed unchecked, no headers (nothing known)
        (429, Some("0"), Some("1")), // Redis FailClosed: refused, retry in 1 s
    ];
    for (base, want) in apps.iter().zip(expected) {
        for _ in 0..3 {
            let (status, ..) = get_once(&client, base).await;
            assert_eq!(status, want.0, "{base}");
        }
        let started = Instant::now();
        for _ in 0..20 {
            let (status, remaining, retry) = get_once(&client, base).await;
            assert_eq!((status, remaining.as_deref(), retry.as_deref()), want, "{base}");
        }
        assert!(started.elapsed() < 20 * TIMEOUT / 2, "{base}: {:?} for 20 requests", started.elapsed());
    }
}
