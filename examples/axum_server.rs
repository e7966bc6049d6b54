//! A small axum API behind tollgate's rate-limit layer.
//!
//! ```text
//! cargo run --example axum_server --features axum
//! for i in $(seq 12); do curl -s -o /dev/null -w '%{http_code} ' http://127.0.0.1:3000/; done; echo
//! # 200 200 200 200 200 200 200 200 200 200 429 429
//! ```
//!
//! * `GET /`: 10 requests/s per client address (burst 10), both header styles. The `/` route
//!   rule is also a path prefix: it covers every path without a rule of its own (404s too).
//! * `POST /login`: 5 per minute per client address.
//! * `GET /api/data`: 100 per minute per `X-API-Key` (per client address without one).
//! * Every route: 600 requests per minute per client address, and 1000 requests/s in total.
//! * Each rule keeps at most 100 000 clients; idle ones are swept every 10 s.
//!
//! **A header key is only as good as its validation.** This demo keys `/api/data` by the raw
//! `X-API-Key` value, which the client chooses: a client that sends a new value each time gets a
//! fresh bucket each time and is never held to the 100/min. In a real service, authenticate the
//! key first (or key by the account it authenticates to) and key unauthenticated requests by
//! client address. Here the per-client-address rule on every route is what still bounds such a
//! client (600/min), and the total rule bounds everyone together.
//! * `GET /healthz`: never limited.
//!
//! Environment: `TOLLGATE_ADDR` (default `127.0.0.1:3000`); `TOLLGATE_TRUSTED_PROXIES`, a
//! comma-separated list of CIDRs whose `X-Forwarded-For` is believed (default: none, so the
//! peer address is the client); `TOLLGATE_ADMIN_TOKEN`: when set, the admin API
//! (`tollgate::http::admin`) listens on `TOLLGATE_ADMIN_ADDR` (default `127.0.0.1:9000`) and
//! takes this bearer token.

use std::net::SocketAddr;

use axum::routing::{get, post};
use axum::Router;
use tollgate::http::client_ip::{Cidr, ClientIpConfig};
use tollgate::http::{HeaderStyle, HttpKey, KeyBy, Listed, RateLimitLayer, Rule};
use tollgate::{Clock, KeyedLimiter, Quota};

/// The demo API limited by tollgate, on `clock` (tests pass a `ManualClock`).
pub fn app<C: Clock + Clone + 'static>(clock: C, client_ip: ClientIpConfig) -> Router {
    router(layer(clock, client_ip))
}

/// The demo's rate-limit layer.
pub fn layer<C: Clock + Clone + 'static>(clock: C, client_ip: ClientIpConfig) -> RateLimitLayer {
    // Each rule's table holds at most `MAX_KEYS` clients (a flood of new addresses or minted
    // API keys is refused with 429 once full; `main` sweeps idle ones every 10 s).
    let limiter = |quota: Quota| {
        Listed(KeyedLimiter::<HttpKey, C>::with_clock(quota, clock.clone()).max_keys(MAX_KEYS))
    };
    let rule = |name: &str, quota: Quota| match Rule::new(name, limiter(quota)) {
        Ok(rule) => rule,
        Err(e) => unreachable!("constant rule name {name:?}: {e}"),
    };
    RateLimitLayer::builder()
        .client_ip(client_ip)
        .header_style(HeaderStyle::Both)
        .skip_path("/healthz")
        // Per client address on every route: caps what one client gets however many header
        // keys it mints (see the module docs).
        .rule(rule("per-client", quota(600, 60)).key(KeyBy::ClientIp))
        .rule(rule("global", quota(1000, 1)).key(KeyBy::Global))
        .route("/", rule("per-ip", quota(10, 1)).key(KeyBy::ClientIp))
        .route("/login", rule("login", quota(5, 60)).key(KeyBy::ClientIp).methods([http::Method::POST]))
        // Demo only: `X-API-Key` is not validated here, so clients can mint keys (module docs).
        .route("/api/data", rule("api", quota(100, 60)).key(KeyBy::header("x-api-key").or(KeyBy::ClientIp)))
        .build()
}

/// The demo API behind `layer`.
pub fn router(layer: RateLimitLayer) -> Router {
    Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route("/login", post(|| async { "welcome\n" }))
        .route("/api/data", get(|| async { "{\"data\":[1,2,3]}\n" }))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(layer.same_body())
}

/// Keys per rule.
const MAX_KEYS: usize = 100_000;

fn quota(count: u64, seconds: u64) -> Quota {
    match Quota::new(count, std::time::Duration::from_secs(seconds)) {
        Ok(q) => q,
        Err(e) => unreachable!("constant quota {count}/{seconds}s: {e}"),
    }
}

/// The proxies named in `TOLLGATE_TRUSTED_PROXIES` (none by default).
pub fn client_ip_from_env() -> Result<ClientIpConfig, String> {
    let mut config = ClientIpConfig::default();
    if let Ok(list) = std::env::var("TOLLGATE_TRUSTED_PROXIES") {
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net: Cidr = item.parse().map_err(|e| format!("TOLLGATE_TRUSTED_PROXIES: {item:?}: {e}"))?;
            config = config.trust(net);
        }
    }
    Ok(config)
}

#[allow(dead_code)] // tests include this file for `app` only
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("TOLLGATE_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let client_ip = client_ip_from_env()?;
    let layer = layer(tollgate::QuantaClock::new(), client_ip);
    // Evicts idle clients' state (and expired bans) in the background; stops when dropped.
    let _sweeper = layer.spawn_sweeper(std::time::Duration::from_secs(10));
    if let Ok(token) = std::env::var("TOLLGATE_ADMIN_TOKEN") {
        let admin_addr = std::env::var("TOLLGATE_ADMIN_ADDR").unwrap_or_else(|_| "127.0.0.1:9000".to_owned());
        let admin = tollgate::http::admin::AdminApi::new(layer.clone(), &token).router();
        let listener = tokio::net::TcpListener::bind(&admin_addr)
            .await
            .map_err(|e| format!("TOLLGATE_ADMIN_ADDR={admin_addr:?}: {e}"))?;
        println!("admin API on http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, admin).await {
                eprintln!("admin API stopped: {e}");
            }
        });
    }
    let app = router(layer);
    let listener =
        tokio::net::TcpListener::bind(&addr).await.map_err(|e| format!("TOLLGATE_ADDR={addr:?}: {e}"))?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
    Ok(())
}
