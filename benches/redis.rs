//! RedisLimiter against a private local `redis-server`, with `redis-benchmark` in the same run as
//! the reference: the same GCRA script via `EVALSHA`, and plain `INCR` as the floor.
//!
//! Reports checks/s and p50/p99 latency at concurrency 1 and 16 (16 tasks multiplexed on one
//! connection, which redis-rs pipelines), `check_many` batches of 16, and the effect of the local
//! deny cache on a 90%-denied load. Run: `cargo bench --bench redis --features redis`
//! (`-- --quick` for a short smoke run). Needs `redis-server` and `redis-benchmark`
//! (`apt-get install -y redis-server redis-tools`).

#[path = "../tests/redis_support/mod.rs"]
mod redis_support;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis_support::RedisServer;
use tollgate::redis::RedisLimiter;
use tollgate::{Origin, Quota};

struct Stats {
    ops_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
}

fn summarize(mut latencies_ns: Vec<u64>, ops: u64, elapsed: Duration) -> Stats {
    latencies_ns.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies_ns.len() as f64 - 1.0) * q).round() as usize;
        latencies_ns.get(i).copied().unwrap_or(0) as f64 / 1000.0
    };
    Stats { ops_per_sec: ops as f64 / elapsed.as_secs_f64(), p50_us: at(0.50), p99_us: at(0.99) }
}

fn print(name: &str, s: &Stats) {
    println!(
        "{name:<48} {:>10.0} checks/s   p50 {:>7.1} µs   p99 {:>7.1} µs",
        s.ops_per_sec, s.p50_us, s.p99_us
    );
}

/// `tasks` tasks, each running `per_task` checks on keys `k0..k{keys}` (round robin), all on one
/// limiter (one multiplexed connection).
async fn run_checks(limiter: &Arc<RedisLimiter>, tasks: usize, per_task: u64, keys: u64) -> Stats {
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_task as usize);
                for i in 0..per_task {
                    let key = format!("k{}", (i * tasks as u64 + t as u64) % keys);
                    let begin = Instant::now();
                    let d = limiter.check(key.as_bytes(), 1).await.expect("check");
                    latencies.push(begin.elapsed().as_nanos() as u64);
                    let _ = std::hint::black_box(d);
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("task"));
    }
    summarize(all, per_task * tasks as u64, start.elapsed())
}

async fn run_check_many(limiter: &Arc<RedisLimiter>, batches: u64, batch: usize) -> Stats {
    let start = Instant::now();
    let mut latencies = Vec::new();
    for b in 0..batches {
        let keys: Vec<String> = (0..batch).map(|i| format!("k{}", (b as usize * batch + i) % 1000)).collect();
        let begin = Instant::now();
        let results = limiter.check_many(&keys, 1).await;
        latencies.push(begin.elapsed().as_nanos() as u64);
        assert!(results.iter().all(|r| r.is_ok()));
    }
    // Latencies are per batch of `batch` checks.
    summarize(latencies, batches * batch as u64, start.elapsed())
}

/// 16 tasks; 90% of checks hit 100 attacker keys whose quota (10/h) is spent, 10% hit fresh keys.
async fn run_attack(limiter: &Arc<RedisLimiter>, per_task: u64) -> (Stats, u64, u64) {
    let remote = Arc::new(AtomicU64::new(0));
    let cached = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks = 16u64;
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (limiter, remote, cached) = (limiter.clone(), remote.clone(), cached.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_task as usize);
                for i in 0..per_task {
                    let n = i * tasks + t;
                    let key = if n.is_multiple_of(10) {
                        format!("user{n}")
                    } else {
                        format!("attacker{}", n % 100)
                    };
                    let begin = Instant::now();
                    let d = limiter.check(key.as_bytes(), 1).await.expect("check");
                    latencies.push(begin.elapsed().as_nanos() as u64);
                    // Relaxed: statistics, read after the tasks are joined.
                    match d.origin() {
                        Origin::DenyCache => cached.fetch_add(1, Ordering::Relaxed),
                        _ => remote.fetch_add(1, Ordering::Relaxed),
                    };
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("task"));
    }
    let stats = summarize(all, per_task * tasks, start.elapsed());
    // Relaxed: the tasks are joined.
    (stats, remote.load(Ordering::Relaxed), cached.load(Ordering::Relaxed))
}

/// `redis-benchmark` requests per second for `command` at `clients` connections.
fn redis_benchmark(
    port: u16,
    requests: u64,
    clients: usize,
    pipeline: usize,
    command: &[&str],
) -> Option<f64> {
    let output = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-n", &requests.to_string()])
        .args(["-c", &clients.to_string(), "-P", &pipeline.to_string(), "-r", "1000", "--csv"])
        .args(command)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    // CSV: "test","rps",... then one line per test.
    let line = text.lines().nth(1)?;
    line.split(',').nth(1)?.trim_matches('"').parse().ok()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick" || a == "--test");
    let n: u64 = if quick { 2_000 } else { 40_000 };
    let server = RedisServer::start();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    // Admits everything: T = 1 µs, burst 10⁶ (the allow path writes state every check).
    let quota = Quota::per_second(1_000_000).expect("quota");
    let limiter = Arc::new(runtime.block_on(async {
        RedisLimiter::builder(server.url(), quota)
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect")
    }));
    println!("RedisLimiter vs redis-benchmark, local redis-server, GCRA allow path, 1000 keys");
    runtime.block_on(run_checks(&limiter, 1, n / 10, 1000)); // warm-up, loads the script
    let c1 = runtime.block_on(run_checks(&limiter, 1, n / 2, 1000));
    let c16 = runtime.block_on(run_checks(&limiter, 16, n / 16, 1000));
    let many = runtime.block_on(run_check_many(&limiter, n / 16, 16));
    print("tollgate check, concurrency 1", &c1);
    print("tollgate check, concurrency 16 (multiplexed)", &c16);
    print("tollgate check_many, batches of 16 (p = batch)", &many);

    // The same script through redis-benchmark: EVALSHA <sha> 1 <key> c 1 "" T tol.
    let sha: String = server.query(redis::cmd("SCRIPT").arg("LOAD").arg(gcra_source()));
    let evalsha = ["EVALSHA", &sha, "1", "tollgate:gcra:{k__rand_int__}", "c", "1", "", "1", "1000000"];
    let requests = n * 2;
    let rb =
        |clients, pipeline, cmd: &[&str]| redis_benchmark(server.port(), requests, clients, pipeline, cmd);
    let report = |name: &str, rps: Option<f64>, ours: f64| match rps {
        Some(rps) => println!("{name:<48} {rps:>10.0} req/s      tollgate = {:.2}×", ours / rps),
        None => println!("{name:<48} (redis-benchmark not available)"),
    };
    report("redis-benchmark EVALSHA gcra, -c 1", rb(1, 1, &evalsha), c1.ops_per_sec);
    report("redis-benchmark EVALSHA gcra, -c 16", rb(16, 1, &evalsha), c16.ops_per_sec);
    report("redis-benchmark EVALSHA gcra, -c 1 -P 16", rb(1, 16, &evalsha), many.ops_per_sec);
    report("redis-benchmark INCR (floor), -c 1", rb(1, 1, &["INCR", "k__rand_int__"]), c1.ops_per_sec);
    report("redis-benchmark INCR (floor), -c 16", rb(16, 1, &["INCR", "k__rand_int__"]), c16.ops_per_sec);

    // Deny cache under attack: 90% of checks on keys whose quota is spent.
    println!("\n90%-denied load (100 attacker keys at 10/h, 10% fresh keys), 16 tasks");
    let attack_quota = Quota::per_hour(10).expect("quota");
    for (name, capacity) in [("deny cache on", 1 << 16), ("deny cache off", 0)] {
        let limiter = Arc::new(runtime.block_on(async {
            RedisLimiter::builder(server.url(), attack_quota)
                .prefix(format!("attack{capacity}"))
                .deny_cache_capacity(capacity)
                .timeout(Duration::from_secs(5))
                .connect()
                .await
                .expect("connect")
        }));
        let (stats, remote, cached) = runtime.block_on(run_attack(&limiter, n / 16));
        print(&format!("tollgate check, {name}"), &stats);
        println!("{:<48} {remote} round trips, {cached} answered locally", "");
    }
}

/// The GCRA script exactly as the limiter sends it (prelude + body), for redis-benchmark.
fn gcra_source() -> String {
    let prelude = include_str!("../src/redis/prelude.lua");
    let body = include_str!("../src/redis/gcra.lua");
    format!("{prelude}\n{body}")
}
