//! `tollgate bench`: runs the matrix of cells (algorithm × clock × keys × threads), tollgate and
//! governor on the identical workload in this process, plus the physical references.

use std::collections::BTreeMap;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tollgate::Quota;

use crate::measure::{self, Measured, Run};
use crate::spec::{AlgoKind, ClockKind, Compare, Distribution, Keys};
use crate::subjects::{self, tollgate_estimate, with_governor, with_tollgate};
use crate::{mem, CliError};

/// What to run (parsed and validated command-line options).
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) algorithms: Vec<AlgoKind>,
    pub(crate) threads: Vec<usize>,
    pub(crate) keys: Vec<Keys>,
    pub(crate) distribution: Distribution,
    pub(crate) deny_ratio: f64,
    pub(crate) clocks: Vec<ClockKind>,
    pub(crate) duration: Duration,
    pub(crate) compare: Compare,
    pub(crate) memory: bool,
    /// tollgate's keyed checks go through `KeyedLimiter::pin`, re-pinned every batch.
    pub(crate) pin: bool,
}

/// Latency percentiles of the sampled checks, in ns.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Latency {
    pub(crate) p50: u64,
    pub(crate) p99: u64,
    pub(crate) p999: u64,
    pub(crate) max: u64,
    pub(crate) samples: u64,
}

/// One measured cell.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Cell {
    pub(crate) library: &'static str,
    pub(crate) algorithm: &'static str,
    pub(crate) clock: &'static str,
    /// `"direct"` or the number of keys.
    pub(crate) keys: String,
    pub(crate) threads: usize,
    pub(crate) distribution: String,
    pub(crate) quota: String,
    pub(crate) deny_ratio_target: f64,
    pub(crate) ops: u64,
    pub(crate) ops_per_sec: f64,
    /// Time one thread spends per check (threads / throughput).
    pub(crate) ns_per_op: f64,
    pub(crate) denied_share: f64,
    pub(crate) latency_ns: Latency,
    /// tollgate's throughput ÷ governor's on the identical workload (> 1: tollgate faster).
    /// Only for GCRA, the one algorithm governor has.
    pub(crate) ratio_vs_governor: Option<f64>,
    /// The physical floor for this cell: clock read + (papaya get) + CAS, in ns.
    pub(crate) floor_ns: f64,
    /// ns_per_op ÷ floor_ns.
    pub(crate) times_floor: f64,
    /// RSS growth per key when populating this many keys in a fresh process.
    pub(crate) bytes_per_key_rss: Option<f64>,
    /// tollgate's own accounting of its layout (papaya table + one heap entry per key).
    pub(crate) bytes_per_key_estimate: Option<f64>,
}

/// The physical references measured in this run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct References {
    pub(crate) clock_read_ns: f64,
    pub(crate) cached_clock_read_ns: Option<f64>,
    pub(crate) cas_ns: f64,
    /// Pinned papaya get (foldhash) per key count, same lookup sequence as the cells.
    pub(crate) papaya_get_ns: BTreeMap<String, f64>,
    /// Median cost of timing an empty span, subtracted from every latency sample.
    pub(crate) timer_overhead_ns: u64,
}

/// Everything `bench` reports (the `--json` document).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) tool: &'static str,
    pub(crate) version: &'static str,
    pub(crate) cpus: usize,
    pub(crate) os: &'static str,
    pub(crate) duration_per_cell_s: f64,
    pub(crate) distribution: String,
    pub(crate) deny_ratio_target: f64,
    pub(crate) references: References,
    pub(crate) cells: Vec<Cell>,
    pub(crate) notes: Vec<String>,
}

/// A quota under which about `target` of this workload's checks are denied, calibrated from
/// tollgate's allow-all throughput on it (the same quota is then used for every library).
fn calibrated_quota(target: f64, lambda: f64, probs: &[f64]) -> Result<Quota, CliError> {
    let rate = measure::rate_for_deny_share(target, lambda, probs).max(1e-3);
    let interval = (1e9 / rate).round().clamp(1.0, 1e15) as u64;
    Quota::new(1, Duration::from_nanos(interval))
        .map_err(|e| CliError::Usage(format!("deny-ratio quota: {e}")))
}

fn latency(m: &Measured) -> Latency {
    Latency {
        p50: m.hist.value_at_quantile(0.5).max(1),
        p99: m.hist.value_at_quantile(0.99).max(1),
        p999: m.hist.value_at_quantile(0.999).max(1),
        max: m.hist.max().max(1),
        samples: m.hist.len(),
    }
}

/// Runs the plan; progress on stderr.
pub(crate) fn run(plan: &Plan) -> Result<Report, CliError> {
    let cells_total: usize = plan
        .algorithms
        .iter()
        .map(|&a| {
            let libs = if a == AlgoKind::Gcra && plan.compare == Compare::Governor { 2 } else { 1 };
            libs * plan.clocks.len() * plan.keys.len() * plan.threads.len()
        })
        .sum();
    let progress = ProgressBar::new(cells_total as u64);
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} cells  {elapsed_precise}  {msg}") {
        progress.set_style(style);
    }
    progress.set_message("physical references");

    let timer_overhead_ns = measure::timer_overhead();
    let mut references = References {
        clock_read_ns: measure::clock_read_ns(),
        cached_clock_read_ns: if plan.clocks.contains(&ClockKind::Cached) {
            measure::cached_clock_read_ns()
        } else {
            None
        },
        cas_ns: measure::cas_ns(),
        papaya_get_ns: BTreeMap::new(),
        timer_overhead_ns,
    };
    let warmup = (plan.duration / 5).max(Duration::from_millis(20));
    let mut cells = Vec::with_capacity(cells_total);
    let mut notes = vec![
        format!(
            "latency: 1 check in {} is timed; the median cost of an empty timing ({timer_overhead_ns} ns) is \
             subtracted from each sample",
            measure::SAMPLE_EVERY
        ),
        "ratio_vs_governor: tollgate ops/s ÷ governor ops/s on the identical workload in this process (> 1 means \
         tollgate is faster)"
            .to_string(),
        "floor: one clock read + one papaya get (keyed) + one uncontended CAS, measured in this run".to_string(),
    ];
    if plan.algorithms.iter().any(|&a| a != AlgoKind::Gcra) {
        notes.push(
            "governor implements only GCRA: the windowed algorithms have no governor comparison".to_string(),
        );
    }
    if plan.pin {
        notes.push(format!(
            "--pin: tollgate's keyed checks run through KeyedLimiter::pin(), one handle per {} checks \
             per thread (governor has no equivalent)",
            measure::BATCH
        ));
    }
    if plan.threads.iter().any(|&t| t > num_cpus()) {
        notes.push(format!("some cells use more threads than the {} CPUs available", num_cpus()));
    }

    for &keys in &plan.keys {
        let n = keys.count();
        let key_list = measure::key_list(n, 0x7011_6a7e ^ n as u64);
        let probs = measure::key_probabilities(n, plan.distribution);
        let seq = measure::lookup_sequence(&key_list, &probs, 0x5eed ^ n as u64);
        let papaya_ns = match keys {
            Keys::Direct => 0.0,
            Keys::Keyed(_) => {
                progress.set_message(format!("papaya reference, {n} keys"));
                let ns = measure::papaya_get_ns(&key_list, &seq);
                references.papaya_get_ns.insert(n.to_string(), ns);
                ns
            }
        };
        for &algo in &plan.algorithms {
            let base_quota = subjects::allow_all_quota(algo).map_err(CliError::Usage)?;
            for &clock in &plan.clocks {
                let clock_ns = match clock {
                    ClockKind::Quanta => references.clock_read_ns,
                    ClockKind::Cached => references.cached_clock_read_ns.unwrap_or(references.clock_read_ns),
                };
                let floor_ns = clock_ns + papaya_ns + references.cas_ns;
                for &threads in &plan.threads {
                    let run =
                        |duration| Run { seq: &seq, threads, warmup, duration, overhead: timer_overhead_ns };
                    let quota = if plan.deny_ratio > 0.0 {
                        progress
                            .set_message(format!("calibrating deny ratio: {algo} {keys} keys {threads} thr"));
                        let probe =
                            with_tollgate(algo, clock, keys, plan.pin, base_quota, &key_list, run(warmup))
                                .map_err(CliError::Usage)?;
                        calibrated_quota(plan.deny_ratio, probe.ops_per_sec, &probs)?
                    } else {
                        base_quota
                    };
                    let make_cell = |library: &'static str, m: &Measured| {
                        let ns_per_op = threads as f64 * 1e9 / m.ops_per_sec.max(1e-9);
                        Cell {
                            library,
                            algorithm: algo.name(),
                            clock: clock.name(),
                            keys: keys.to_string(),
                            threads,
                            distribution: plan.distribution.to_string(),
                            quota: quota.to_string(),
                            deny_ratio_target: plan.deny_ratio,
                            ops: m.ops,
                            ops_per_sec: m.ops_per_sec,
                            ns_per_op,
                            denied_share: 1.0 - m.allowed as f64 / m.ops.max(1) as f64,
                            latency_ns: latency(m),
                            ratio_vs_governor: None,
                            floor_ns,
                            times_floor: ns_per_op / floor_ns.max(1e-9),
                            bytes_per_key_rss: None,
                            bytes_per_key_estimate: None,
                        }
                    };
                    progress.set_message(format!(
                        "tollgate {algo} {} clock, {keys} keys, {threads} thr",
                        clock.name()
                    ));
                    let m = with_tollgate(algo, clock, keys, plan.pin, quota, &key_list, run(plan.duration))
                        .map_err(CliError::Usage)?;
                    let mut tollgate_cell = make_cell("tollgate", &m);
                    progress.inc(1);
                    if algo == AlgoKind::Gcra && plan.compare == Compare::Governor {
                        progress.set_message(format!(
                            "governor {} clock, {keys} keys, {threads} thr",
                            clock.name()
                        ));
                        let m = with_governor(clock, keys, quota, &key_list, run(plan.duration))
                            .map_err(CliError::Usage)?;
                        let governor_cell = make_cell("governor", &m);
                        tollgate_cell.ratio_vs_governor =
                            Some(tollgate_cell.ops_per_sec / governor_cell.ops_per_sec.max(1e-9));
                        cells.push(tollgate_cell);
                        cells.push(governor_cell);
                        progress.inc(1);
                    } else {
                        cells.push(tollgate_cell);
                    }
                }
            }
        }
    }

    if plan.memory {
        progress.set_message("bytes per key (fresh processes)");
        attach_memory(&mut cells, &mut notes);
    }
    progress.finish_and_clear();

    Ok(Report {
        tool: "tollgate bench",
        version: env!("CARGO_PKG_VERSION"),
        cpus: num_cpus(),
        os: std::env::consts::OS,
        duration_per_cell_s: plan.duration.as_secs_f64(),
        distribution: plan.distribution.to_string(),
        deny_ratio_target: plan.deny_ratio,
        references,
        cells,
        notes,
    })
}

/// Keyed tables at least this large get a bytes-per-key figure (smaller ones are noise).
const MIN_KEYS_FOR_MEMORY: usize = 10_000;

/// Measures bytes per key in fresh child processes (one per library, algorithm and size), so
/// the allocator's reuse of earlier cells' memory does not hide anything.
fn attach_memory(cells: &mut [Cell], notes: &mut Vec<String>) {
    let mut cache: BTreeMap<(&'static str, &'static str, usize), Option<f64>> = BTreeMap::new();
    let mut failed = None;
    for cell in cells.iter_mut() {
        let Ok(n) = cell.keys.parse::<usize>() else { continue };
        if n < MIN_KEYS_FOR_MEMORY {
            continue;
        }
        let rss =
            *cache.entry((cell.library, cell.algorithm, n)).or_insert_with(|| {
                match mem::probe_in_child(cell.library, cell.algorithm, n) {
                    Ok(bytes) => Some(bytes),
                    Err(e) => {
                        failed = Some(e);
                        None
                    }
                }
            });
        cell.bytes_per_key_rss = rss;
        if cell.library == "tollgate" {
            cell.bytes_per_key_estimate = AlgoKind::ALL
                .iter()
                .find(|a| a.name() == cell.algorithm)
                .and_then(|&a| tollgate_estimate(a, n, &cell.quota.parse::<Quota>().ok()?));
        }
    }
    if let Some(e) = failed {
        notes.push(format!("bytes per key unavailable: {e}"));
    } else {
        notes.push(
            "bytes/key: RSS growth while populating the keys (with_capacity(n) for both libraries) in a fresh child \
             process, system allocator; estimate: tollgate's layout (papaya slots + one heap entry per key)"
                .to_string(),
        );
    }
}

pub(crate) fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
