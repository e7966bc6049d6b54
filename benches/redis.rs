//! RedisLimiter against a private local `redis-server`, with `redis-benchmark` in the same run as
//! the reference: the same GCRA script via `EVALSHA`, and plain `INCR` as the floor.
//!
//! Reports checks/s and p50/p99 latency at concurrency 1 and 16 (16 tasks multiplexed on one
//! connection, which redis-rs pipelines), `check_many` batches of 16 against `redis-benchmark -P
//! 16`, and the effect of the local deny cache on a 90%-denied load. Each round runs every pair
//! back to back (ours, then redis-benchmark), so a ratio compares runs seconds apart; the summary
//! gives the median and range of each ratio over the rounds.
//!
//! Run: `cargo bench --bench redis --features redis -- [--rounds N] [--quick] [SECTION...]` with
//! sections `c1 c16 many attack` (default: all, 5 rounds; `--quick` is one short round). Needs
//! `redis-server` and `redis-benchmark` (`apt-get install -y redis-server redis-tools`).

#[path = "../tests/redis_support/mod.rs"]
mod redis_support;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis_support::RedisServer;
use tollgate::redis::RedisLimiter;
use tollgate::{Origin, Quota};

#[derive(Clone, Copy)]
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

fn line(name: &str, s: &Stats) -> String {
    format!("{name:<44} {:>9.0}/s   p50 {:>7.1} µs   p99 {:>7.1} µs", s.ops_per_sec, s.p50_us, s.p99_us)
}

/// `tasks` tasks, each running `per_task` checks on the keys round robin, all on one limiter (one
/// multiplexed connection). Keys are built beforehand, as redis-benchmark's are.
async fn run_checks(
    limiter: &Arc<RedisLimiter>,
    keys: &Arc<Vec<String>>,
    tasks: usize,
    per_task: u64,
) -> Stats {
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (limiter, keys) = (limiter.clone(), keys.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_task as usize);
                for i in 0..per_task {
                    let key = &keys[(i as usize * tasks + t) % keys.len()];
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

/// One task (on the runtime's workers, like a request handler) making `batches` sequential
/// `check_many` calls of `batch` keys; latencies are per batch.
async fn run_check_many(
    limiter: &Arc<RedisLimiter>,
    keys: &Arc<Vec<String>>,
    batches: u64,
    batch: usize,
) -> Stats {
    let (limiter, keys) = (limiter.clone(), keys.clone());
    let task = tokio::spawn(async move {
        let start = Instant::now();
        let mut latencies = Vec::with_capacity(batches as usize);
        let windows: Vec<&[String]> = keys.chunks_exact(batch).collect();
        for b in 0..batches as usize {
            let begin = Instant::now();
            let results = limiter.check_many(windows[b % windows.len()], 1).await;
            latencies.push(begin.elapsed().as_nanos() as u64);
            assert!(results.iter().all(|r| r.as_ref().is_ok_and(|d| d.is_allowed())));
        }
        (latencies, start.elapsed())
    });
    let (latencies, elapsed) = task.await.expect("task");
    summarize(latencies, batches * batch as u64, elapsed)
}

/// 16 tasks; 90% of checks hit 100 attacker keys whose quota (10/h) is spent, 10% hit fresh keys.
async fn run_attack(limiter: &Arc<RedisLimiter>, per_task: u64, round: usize) -> (Stats, u64, u64) {
    let remote = Arc::new(AtomicU64::new(0));
    let cached = Arc::new(AtomicU64::new(0));
    let tasks = 16u64;
    let keys: Arc<Vec<String>> = Arc::new(
        (0..per_task * tasks)
            .map(|n| {
                if n.is_multiple_of(10) {
                    format!("user{round}-{n}")
                } else {
                    format!("attacker{}", n % 100)
                }
            })
            .collect(),
    );
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (limiter, remote, cached, keys) =
                (limiter.clone(), remote.clone(), cached.clone(), keys.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_task as usize);
                for i in 0..per_task {
                    let key = &keys[(i * tasks + t) as usize];
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

/// `redis-benchmark` requests/s and latency for `command` at `clients` connections (`-r 1000`:
/// `__rand_int__` takes 1000 values, like our 1000 keys).
fn redis_benchmark(
    port: u16,
    requests: u64,
    clients: usize,
    pipeline: usize,
    command: &[&str],
) -> Option<Stats> {
    let output = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-n", &requests.to_string()])
        .args(["-c", &clients.to_string(), "-P", &pipeline.to_string(), "-r", "1000", "--csv"])
        .args(command)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    // CSV: "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",
    // "p99_latency_ms","max_latency_ms", then one line per test.
    let fields: Vec<f64> = text
        .lines()
        .nth(1)?
        .split(',')
        .skip(1)
        .map(|f| f.trim_matches('"').parse().ok())
        .collect::<Option<_>>()?;
    Some(Stats {
        ops_per_sec: *fields.first()?,
        p50_us: fields.get(3)? * 1000.0,
        p99_us: fields.get(5)? * 1000.0,
    })
}

/// One named ratio collected over the rounds.
#[derive(Default)]
struct Ratios(Vec<(String, Vec<f64>)>);

impl Ratios {
    fn push(&mut self, name: &str, ratio: f64) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => v.push(ratio),
            None => self.0.push((name.to_owned(), vec![ratio])),
        }
    }

    fn print(&self) {
        println!("\nSummary over rounds: median [min – max]");
        for (name, values) in &self.0 {
            let mut v = values.clone();
            v.sort_by(f64::total_cmp);
            println!("{name:<58} {:>7.2} [{:.2} – {:.2}]", v[v.len() / 2], v[0], v[v.len() - 1]);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick" || a == "--test");
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(if quick { 1 } else { 5 });
    let sections: Vec<&str> =
        args.iter().map(String::as_str).filter(|a| matches!(*a, "c1" | "c16" | "many" | "attack")).collect();
    let on = |s: &str| sections.is_empty() || sections.contains(&s);
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
    let keys: Arc<Vec<String>> = Arc::new((0..1000).map(|i| format!("k{i:012}")).collect());
    // The same script through redis-benchmark: EVALSHA <sha> 1 <key> c 1 "" T tol. Its keys are
    // `k` and 12 digits, as ours.
    let sha: String = server.query(redis::cmd("SCRIPT").arg("LOAD").arg(gcra_source()));
    let evalsha = ["EVALSHA", &sha, "1", "tollgate:gcra:{k__rand_int__}", "c", "1", "", "1", "1000000"];
    let incr = ["INCR", "k__rand_int__"];
    let rb = |requests, clients, pipeline, cmd: &[&str]| {
        redis_benchmark(server.port(), requests, clients, pipeline, cmd).expect("redis-benchmark failed")
    };
    println!(
        "RedisLimiter vs redis-benchmark, local redis-server, GCRA allow path, 1000 keys, {rounds} rounds"
    );
    runtime.block_on(run_checks(&limiter, &keys, 1, n / 10)); // warm-up, loads the script

    let mut ratios = Ratios::default();
    for round in 0..rounds {
        println!("\n-- round {} (load {})", round + 1, load_average());
        if on("c1") {
            let cpu = process_cpu_ns();
            let ours = runtime.block_on(run_checks(&limiter, &keys, 1, n / 2));
            let cpu_per_check = (process_cpu_ns() - cpu) as f64 / (n / 2) as f64 / 1000.0;
            let theirs = rb(n / 2, 1, 1, &evalsha);
            let floor = rb(n / 2, 1, 1, &incr);
            println!(
                "{}   client CPU {cpu_per_check:.2} µs/check",
                line("tollgate check, concurrency 1", &ours)
            );
            println!("{}", line("redis-benchmark EVALSHA -c 1", &theirs));
            println!("{}", line("redis-benchmark INCR -c 1 (floor)", &floor));
            ratios.push("check c1 / redis-benchmark EVALSHA -c 1", ours.ops_per_sec / theirs.ops_per_sec);
            ratios.push("check c1 / redis-benchmark INCR -c 1", ours.ops_per_sec / floor.ops_per_sec);
            ratios.push("check c1 p99 / redis-benchmark EVALSHA -c 1 p99", ours.p99_us / theirs.p99_us);
        }
        if on("c16") {
            let ours = runtime.block_on(run_checks(&limiter, &keys, 16, n / 8));
            let theirs = rb(n * 2, 16, 1, &evalsha);
            let floor = rb(n * 2, 16, 1, &incr);
            println!("{}", line("tollgate check, 16 tasks (1 connection)", &ours));
            println!("{}", line("redis-benchmark EVALSHA -c 16", &theirs));
            println!("{}", line("redis-benchmark INCR -c 16 (floor)", &floor));
            ratios.push(
                "check 16 tasks / redis-benchmark EVALSHA -c 16",
                ours.ops_per_sec / theirs.ops_per_sec,
            );
            ratios.push("check 16 tasks / redis-benchmark INCR -c 16", ours.ops_per_sec / floor.ops_per_sec);
        }
        if on("many") {
            let cpu = process_cpu_ns();
            let ours = runtime.block_on(run_check_many(&limiter, &keys, n / 8, 16));
            let cpu_per_check = (process_cpu_ns() - cpu) as f64 / (n / 8 * 16) as f64 / 1000.0;
            let theirs = rb(n * 2, 1, 16, &evalsha);
            println!(
                "{}   client CPU {cpu_per_check:.2} µs/check",
                line("tollgate check_many ×16 (p = batch)", &ours)
            );
            ratios.push("check_many ×16 client CPU µs/check", cpu_per_check);
            println!("{}", line("redis-benchmark EVALSHA -c 1 -P 16 (p = batch)", &theirs));
            ratios.push(
                "check_many ×16 / redis-benchmark EVALSHA -P 16",
                ours.ops_per_sec / theirs.ops_per_sec,
            );
        }
        if on("attack") {
            // 90% of checks on keys whose quota is spent.
            let attack_quota = Quota::per_hour(10).expect("quota");
            let mut rates = [0.0; 2];
            for (i, (name, capacity)) in
                [("deny cache on", 1 << 16), ("deny cache off", 0)].into_iter().enumerate()
            {
                let limiter = Arc::new(runtime.block_on(async {
                    RedisLimiter::builder(server.url(), attack_quota)
                        .prefix(format!("attack{capacity}-{round}"))
                        .deny_cache_capacity(capacity)
                        .timeout(Duration::from_secs(5))
                        .connect()
                        .await
                        .expect("connect")
                }));
                let (stats, remote, cached) = runtime.block_on(run_attack(&limiter, n / 16, round));
                println!("{}", line(&format!("90% denied, 16 tasks, {name}"), &stats));
                println!("{:<44} {remote} round trips, {cached} answered locally", "");
                rates[i] = stats.ops_per_sec;
            }
            ratios.push("90% denied: deny cache on / off", rates[0] / rates[1]);
        }
    }
    ratios.print();
}

/// CPU time (ns) this process' threads have run so far, from /proc (0 where unavailable): the
/// client's cost, which redis-server (another process) does not add to.
fn process_cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

/// The GCRA script exactly as the limiter sends it (prelude + body), for redis-benchmark.
fn gcra_source() -> String {
    let prelude = include_str!("../src/redis/prelude.lua");
    let body = include_str!("../src/redis/gcra.lua");
    format!("{prelude}\n{body}")
}
