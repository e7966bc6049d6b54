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
//! Modes: `plain`, `tollgate-allow` (both header styles: five headers), `tollgate-allow-legacy`
//! (`X-RateLimit-*`: three), `tollgate-allow-ietf` (`RateLimit-Policy`/`RateLimit`: two),
//! `tollgate-allow-noheaders`, `tollgate-allow-noheaders-wrapped` (the default body mode, which
//! axum boxes again; every other tollgate mode keeps axum's body: `same_body`),
//! `tollgate-deny`, `governor-allow`, `governor-allow-headers` (its `x-ratelimit-limit` and
//! `-remaining`), `governor-deny`; `static-headers` (the five header names and
//! values of `tollgate-allow` inserted as static values: the floor for sending them); `noop-layer` (a layer that only passes
//! requests on: what axum's `Router::layer` costs any middleware); `tollgate-allow-outer` and
//! `tollgate-allow-noheaders-outer` (the layer wrapped around the whole router, not added with
//! `Router::layer`). The runtime has `TOLLGATE_BENCH_THREADS` workers (default 1). All modes key
//! by peer address and are served with `ConnectInfo`.

use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;
use tollgate::http::{HeaderStyle, HttpKey, KeyBy, RateLimitLayer, Rule, Same};
use tollgate::{KeyedLimiter, Quota};
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::GovernorLayer;

/// The layer as an axum app should use it: keeping axum's body type ([`RateLimitLayer::same_body`]).
fn tollgate_layer(quota: Quota, style: HeaderStyle) -> Result<RateLimitLayer<Same>, String> {
    Ok(wrapped_layer(quota, style)?.same_body())
}

/// The layer with its default body mode, whose responses axum boxes once more.
fn wrapped_layer(quota: Quota, style: HeaderStyle) -> Result<RateLimitLayer, String> {
    let rule = Rule::new("bench", KeyedLimiter::<HttpKey>::new(quota)).map_err(|e| e.to_string())?;
    Ok(RateLimitLayer::builder().header_style(style).rule(rule.key(KeyBy::PeerIp)).build())
}

/// A layer that only passes requests on: what `Router::layer` costs any middleware (a second
/// boxed-service clone and boxed future per request in axum), apart from the middleware.
#[derive(Clone)]
struct NoopLayer;

impl<S> tower::Layer<S> for NoopLayer {
    type Service = Noop<S>;
    fn layer(&self, inner: S) -> Noop<S> {
        Noop(inner)
    }
}

#[derive(Clone)]
struct Noop<S>(S);

impl<S: tower::Service<R>, R> tower::Service<R> for Noop<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;
    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }
    fn call(&mut self, req: R) -> S::Future {
        self.0.call(req)
    }
}

/// The floor for any middleware that sends tollgate's five rate-limit headers (`HeaderStyle::Both`):
/// the same names and values as `tollgate-allow`'s, inserted as static values (no decision, no
/// formatting, no allocation but the header map's growth).
fn static_headers(mut res: axum::response::Response) -> axum::response::Response {
    use http::header::{HeaderName, HeaderValue};
    let headers = res.headers_mut();
    for (name, value) in [
        ("x-ratelimit-limit", "1000000000"),
        ("x-ratelimit-remaining", "999999999"),
        ("x-ratelimit-reset", "1"),
        ("ratelimit-policy", "\"bench\";q=1000000000;w=1"),
        ("ratelimit", "\"bench\";r=999999999;t=1"),
    ] {
        headers.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    res
}

/// A mode's app: a router (bare or with a layer applied through `Router::layer`), or tollgate's
/// layer wrapped around the whole router (`*-outer` modes: no per-route boxing, and rules match
/// by path prefix since no route has matched yet).
type App = tower::util::Either<Router, tollgate::http::RateLimit<Router, Same>>;

fn app(mode: &str) -> Result<App, String> {
    if let Some(inner) = mode.strip_suffix("-outer") {
        let allow = Quota::per_second(1_000_000_000).map_err(|e| e.to_string())?;
        let style = match inner {
            "tollgate-allow" => HeaderStyle::Both,
            "tollgate-allow-noheaders" => HeaderStyle::None,
            other => return Err(format!("unknown mode {other:?}-outer")),
        };
        let hello = Router::new().route("/", get(|| async { "Hello, World!" })).with_state(());
        return Ok(tower::util::Either::Right(tower::Layer::layer(&tollgate_layer(allow, style)?, hello)));
    }
    Ok(tower::util::Either::Left(router(mode)?.with_state(())))
}

fn router(mode: &str) -> Result<Router, String> {
    let hello = Router::new().route("/", get(|| async { "Hello, World!" }));
    let allow = Quota::per_second(1_000_000_000).map_err(|e| e.to_string())?;
    let deny = Quota::per_hour(1).map_err(|e| e.to_string())?;
    Ok(match mode {
        "plain" => hello,
        "noop-layer" => hello.layer(NoopLayer),
        "static-headers" => hello.layer(tower::util::MapResponseLayer::new(static_headers as fn(_) -> _)),
        "tollgate-allow" => hello.layer(tollgate_layer(allow, HeaderStyle::Both)?),
        "tollgate-allow-noheaders" => hello.layer(tollgate_layer(allow, HeaderStyle::None)?),
        "tollgate-allow-noheaders-wrapped" => hello.layer(wrapped_layer(allow, HeaderStyle::None)?),
        "tollgate-allow-legacy" => hello.layer(tollgate_layer(allow, HeaderStyle::Legacy)?),
        "tollgate-allow-ietf" => hello.layer(tollgate_layer(allow, HeaderStyle::Ietf)?),
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
        "governor-allow-headers" => {
            // tower_governor's own headers: `x-ratelimit-limit` and `x-ratelimit-remaining`.
            let config = GovernorConfigBuilder::default()
                .per_nanosecond(1)
                .burst_size(1_000_000_000)
                .use_headers()
                .finish()
                .ok_or("bad governor config")?;
            hello.layer(GovernorLayer::new(config))
        }
        other => return Err(format!("unknown mode {other:?}")),
    })
}

/// `inproc [requests]`: every mode driven in process through `tower::Service::call` (no
/// sockets, no HTTP parsing), rounds interleaved; prints the median ns per request of each mode
/// and the overhead over `plain`. Less noisy than wrk on a shared machine; it measures the
/// layer's own cost, not throughput.
fn inproc(requests: u32) -> Result<(), Box<dyn std::error::Error>> {
    use tower::{Service, ServiceExt};
    const MODES: [&str; 14] = [
        "plain",
        "noop-layer",
        "static-headers",
        "tollgate-allow-outer",
        "tollgate-allow-noheaders-outer",
        "tollgate-allow",
        "tollgate-allow-legacy",
        "tollgate-allow-ietf",
        "tollgate-allow-noheaders",
        "tollgate-allow-noheaders-wrapped",
        "tollgate-deny",
        "governor-allow",
        "governor-allow-headers",
        "governor-deny",
    ];
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let peer: SocketAddr = "192.0.2.7:40000".parse()?;
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
    for _round in 0..5 {
        for (i, mode) in MODES.iter().enumerate() {
            if std::env::var("TOLLGATE_BENCH_ONLY").is_ok_and(|only| !only.split(',').any(|m| m == *mode)) {
                continue;
            }
            // `app` ends each router with `with_state`, which turns routes into services once, as
            // `axum::serve` does (else axum would re-apply the layers on every request).
            let mut svc = app(mode)?;
            let started = runtime.block_on(async {
                let mut statuses = [0u32; 2];
                let started = std::time::Instant::now();
                for _ in 0..requests {
                    let mut req = http::Request::get("/").body(axum::body::Body::empty())?;
                    req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                    let res = ServiceExt::<http::Request<axum::body::Body>>::ready(&mut svc)
                        .await?
                        .call(req)
                        .await?;
                    statuses[usize::from(res.status().is_success())] += 1;
                }
                let elapsed = started.elapsed();
                Ok::<_, Box<dyn std::error::Error>>((elapsed, statuses))
            })?;
            let (elapsed, statuses) = started;
            samples[i].push(elapsed.as_nanos() as f64 / f64::from(requests));
            if _round == 0 {
                eprintln!("{mode}: {} ok, {} refused", statuses[1], statuses[0]);
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let medians: Vec<f64> = samples.iter_mut().map(median).collect();
    for (mode, m) in MODES.iter().zip(&medians) {
        println!("{mode:<26} {m:>8.0} ns/request  (+{:>5.0} ns over plain)", m - medians[0]);
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "plain".to_owned());
    if mode == "inproc" {
        let requests = args.next().and_then(|s| s.parse().ok()).unwrap_or(200_000);
        return inproc(requests);
    }
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let threads = std::env::var("TOLLGATE_BENCH_THREADS").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let app = app(&mode)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        eprintln!("{mode} on http://{}", listener.local_addr()?);
        let make = <App as axum::ServiceExt<axum::extract::Request>>::into_make_service_with_connect_info::<
            SocketAddr,
        >(app);
        axum::serve(listener, make).await?;
        Ok(())
    })
}
