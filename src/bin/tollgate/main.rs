//! `tollgate`: a reproducible benchmark baseline for rate limiters, and a simulator that shows
//! how each algorithm treats an arrival process.
//!
//! ```text
//! cargo run --release --features cli -- bench
//! cargo run --release --features cli -- bench --threads 1,2,4 --keys 1,10000,1e6 --json out.json --plot out.svg
//! cargo run --release --features cli -- simulate --quota 10/s --arrivals poisson:50/s --duration 10s
//! ```
//!
//! Exit codes: 0 success, 1 runtime failure (e.g. a file could not be written), 2 bad arguments.

mod algos;
mod bench;
mod measure;
mod mem;
mod report;
mod simulate;
mod spec;
mod subjects;

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use spec::{AlgoKind, Arrivals, ClockKind, Compare, Distribution, Keys};

/// Why the CLI stopped.
#[derive(Debug)]
pub(crate) enum CliError {
    /// Bad arguments or a combination the run cannot honour: exit code 2.
    Usage(String),
    /// A file could not be written, or similar: exit code 1.
    Io(String),
}

impl CliError {
    /// An error that should not happen (a constant quota rejected, serialization failed).
    pub(crate) fn internal(e: impl fmt::Display) -> CliError {
        CliError::Io(format!("internal error: {e}"))
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Io(m) => f.write_str(m),
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "tollgate",
    version,
    about = "Benchmark and simulate tollgate's rate limiters (vs governor)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure checks per second, latency percentiles and bytes per key, tollgate vs governor in
    /// the same process, against physical references (clock read, CAS, papaya get).
    Bench(BenchArgs),
    /// Replay a synthetic arrival process on a manual clock and compare each algorithm with an
    /// exact sliding log, second by second.
    Simulate(SimulateArgs),
    /// (internal) populate keys in a fresh process and print RSS bytes per key.
    #[command(name = "mem-probe", hide = true)]
    MemProbe(MemProbeArgs),
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Algorithms: gcra, fixed, sliding, log or all (comma-separated list allowed).
    #[arg(long, default_value = "gcra", value_parser = |s: &str| spec::parse_algorithms(s).map(List))]
    algorithm: List<AlgoKind>,
    /// Thread counts, e.g. 1,2,4.
    #[arg(long, default_value = "1,2", allow_hyphen_values = true, value_parser = |s: &str| spec::parse_threads(s).map(List))]
    threads: List<usize>,
    /// Key counts: `direct` (one shared state, no map) and/or keyed table sizes, e.g. 1,10000,1e6.
    #[arg(long, default_value = "direct,1,10000,1000000", allow_hyphen_values = true, value_parser = |s: &str| spec::parse_keys(s).map(List))]
    keys: List<Keys>,
    /// Which keys are looked up: uniform, or zipf:<s> (hot keys, like real traffic).
    #[arg(long, default_value = "uniform", value_parser = spec::parse_distribution)]
    distribution: Distribution,
    /// Share of checks to deny (the quota is calibrated to it); 0 = admit everything.
    #[arg(long, default_value = "0", allow_hyphen_values = true, value_parser = spec::parse_ratio)]
    deny_ratio: f64,
    /// Clock: quanta (default, ~10 ns a read), cached (coarse, ~1 ns), or both: quanta,cached.
    #[arg(long, default_value = "quanta", value_parser = |s: &str| spec::parse_clocks(s).map(List))]
    clock: List<ClockKind>,
    /// Measured time per cell (plus a warm-up of a fifth of it), e.g. 1s, 500ms.
    #[arg(long, default_value = "1500ms", allow_hyphen_values = true, value_parser = spec::parse_duration)]
    duration: Duration,
    /// Run governor on the identical workload (GCRA only: governor has no other algorithm).
    #[arg(long, default_value = "governor", value_parser = spec::parse_compare)]
    compare: Compare,
    /// Check tollgate's keyed limiters through `KeyedLimiter::pin()`, one handle per batch of
    /// 1024 checks per thread (skips papaya's per-check guard entry and exit).
    #[arg(long)]
    pin: bool,
    /// Skip the bytes-per-key measurement (it runs child processes).
    #[arg(long)]
    no_memory: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also draw throughput vs threads and vs keys as an SVG.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct SimulateArgs {
    /// The quota, e.g. 10/s, 100/m, "20/1500ms;burst=5".
    #[arg(long, default_value = "10/s", value_parser = spec::parse_quota)]
    quota: tollgate::Quota,
    /// Algorithms: gcra, fixed, sliding, log or all (all skips, with a note, any that cannot
    /// express the quota; one named is an error then).
    #[arg(long, default_value = "all", value_parser = parse_simulated)]
    algorithm: Simulated,
    /// Arrival process: uniform:<rate>, poisson:<rate> or burst:<n>/<period> (rates like 50/s).
    #[arg(long, default_value = "poisson:50/s", value_parser = spec::parse_arrivals)]
    arrivals: Arrivals,
    /// Simulated time, e.g. 10s, 1m.
    #[arg(long, default_value = "10s", allow_hyphen_values = true, value_parser = spec::parse_duration)]
    duration: Duration,
    /// Seed of the Poisson process.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct MemProbeArgs {
    #[arg(long)]
    library: String,
    #[arg(long)]
    algorithm: String,
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=spec::MAX_KEYS as u64))]
    keys: u64,
}

/// A comma-separated option value, parsed whole (so clap does not treat it as repeated).
#[derive(Clone, Debug)]
struct List<T>(Vec<T>);

/// `simulate --algorithm`: the algorithms, and whether they came from `all`.
#[derive(Clone, Debug)]
struct Simulated {
    kinds: Vec<AlgoKind>,
    all: bool,
}

fn parse_simulated(s: &str) -> Result<Simulated, String> {
    let kinds = spec::parse_algorithms(s)?;
    Ok(Simulated { kinds, all: s.split(',').any(|part| part.trim().eq_ignore_ascii_case("all")) })
}

/// Creates (or truncates) an output file up front: a path in a missing directory, or one we
/// may not write, is an error before any work is done.
fn writable(path: &std::path::Path) -> Result<(), CliError> {
    std::fs::File::create(path)
        .map(drop)
        .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", path.display())))
}

fn bench(args: BenchArgs) -> Result<(), CliError> {
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: a debug build: timings mean nothing (run `cargo run --release --features cli -- bench`)"
        );
    }
    let plan = bench::Plan {
        algorithms: args.algorithm.0,
        threads: args.threads.0,
        keys: args.keys.0,
        distribution: args.distribution,
        deny_ratio: args.deny_ratio,
        clocks: args.clock.0,
        duration: args.duration,
        compare: args.compare,
        memory: !args.no_memory,
        pin: args.pin,
    };
    // Output files are opened before the run, so a bad path fails in a second, not after it.
    for path in args.json.iter().chain(&args.plot) {
        writable(path)?;
    }
    let report = bench::run(&plan)?;
    print!("{}", report::table(&report));
    if let Some(path) = &args.json {
        report::write_json(&report, path)?;
    }
    if let Some(path) = &args.plot {
        report::write_plot(&report, path)?;
    }
    Ok(())
}

fn simulate(args: SimulateArgs) -> Result<(), CliError> {
    let Simulated { kinds, all } = args.algorithm;
    if let Some(path) = &args.json {
        writable(path)?;
    }
    let report = simulate::run(args.quota, &kinds, all, args.arrivals, args.duration, args.seed)?;
    print!("{}", simulate::table(&report));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).map_err(CliError::internal)?;
        std::fs::write(path, text + "\n")
            .map_err(|e| CliError::Io(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // clap prints the message (and usage) itself; exit code 2 for errors, 0 for --help.
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Bench(args) => bench(args),
        Command::Simulate(args) => simulate(args),
        Command::MemProbe(args) => usize::try_from(args.keys).map_err(CliError::internal).and_then(|n| {
            mem::probe(&args.library, &args.algorithm, n).map_err(CliError::Usage).map(|b| println!("{b}"))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(match e {
                CliError::Usage(_) => 2,
                CliError::Io(_) => 1,
            })
        }
    }
}
