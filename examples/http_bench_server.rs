//! A hello-world axum server for load tests of the rate-limit layer (with `wrk`): the same app
//! bare, behind tollgate, and behind `tower_governor`, each on its allow path (a quota nobody
//! reaches) and its deny path (every request after the first is refused).
//!
//! ```text
//! cargo build --release --features axum --example http_bench_server
//! taskset -c 0 target/release/examples/http_bench_server tollgate-deny 127.0.0.1:8080 &
//! taskset -c 1 wrk -t1 -c32 -d10s --latency http://127.0.0.1:8080/
//! ```
//!
//! Modes: `plain`, `tollgate-allow`, `tollgate-allow-noheaders`, `tollgate-deny`,
//! `governor-allow`, `governor-deny`. The runtime has `TOLLGATE_BENCH_THREADS` workers
//! (default 1). All modes key by peer address and are served with `ConnectInfo`.

use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;
use tollgate::http::{HeaderStyle, HttpKey, KeyBy, RateLimitLayer, Rule};
use tollgate::{KeyedLimiter, Quota};
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::GovernorLayer;

fn tollgate_layer(quota: Quota, style: HeaderStyle) -> Result<RateLimitLayer, String> {
    let rule = Rule::new("bench", KeyedLimiter::<HttpKey>::new(quota)).map_err(|e| e.to_string())?;
    Ok(RateLimitLayer::builder().header_style(style).rule(rule.key(KeyBy::PeerIp)).build())
}

fn app(mode: &str) -> Result<Router, String> {
    let hello = Router::new().route("/", get(|| async { "Hello, World!" }));
    let allow = Quota::per_second(1_000_000_000).map_err(|e| e.to_string())?;
    let deny = Quota::per_hour(1).map_err(|e| e.to_string())?;
    Ok(match mode {
        "plain" => hello,
        "tollgate-allow" => hello.layer(tollgate_layer(allow, HeaderStyle::Both)?),
        "tollgate-allow-noheaders" => hello.layer(tollgate_layer(allow, HeaderStyle::None)?),
        "tollgate-deny" => hello.layer(tollgate_layer(deny, HeaderStyle::Both)?),
        "governor-allow" | "governor-deny" => {
            let mut builder = GovernorConfigBuilder::default();
            if mode == "governor-allow" {
                builder.per_nanosecond(1).burst_size(1_000_000_000);
            } else {
                builder.per_second(3600).burst_size(1);
            }
            let config = builder.finish().ok_or("bad governor config")?;
            hello.layer(GovernorLayer::new(config))
        }
        other => return Err(format!("unknown mode {other:?}")),
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "plain".to_owned());
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let threads = std::env::var("TOLLGATE_BENCH_THREADS").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let app = app(&mode)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        eprintln!("{mode} on http://{}", listener.local_addr()?);
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
        Ok(())
    })
}
