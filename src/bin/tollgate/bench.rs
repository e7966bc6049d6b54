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

/// How close a pilot's denied share must come to `--deny-ratio` to stop calibrating.
const CALIBRATION_TOLERANCE: f64 = 0.02;
/// At most this many pilot runs per cell.
const CALIBRATION_PILOTS: usize = 10;
/// A cell whose measured denied share is further than this from the target gets a note.
const DENY_SHARE_WARNING: f64 = 0.05;

/// The quota for `rate` admissions per second per key, with a burst of about 2 ms of that rate
/// (at least 1): with a burst of 1, a check arriving a little early is denied even when the
/// average rate is under the quota, and a cached clock (1 ms ticks) admits at most one per key
/// per tick. `accepts` says whether the algorithm takes it (windows cap their limit); if not,
/// the burst is halved.
fn quota_at(rate: f64, accepts: impl Fn(&Quota) -> bool) -> Result<Quota, CliError> {
    let interval = (1e9 / rate.max(1e-3)).round().clamp(1.0, 1e15) as u64;
    let mut burst = ((rate * 0.002).ceil() as u64).clamp(1, 1 << 20);
    loop {
        // `count` per `count` intervals: the burst is the count, which windows require.
        let quota = Quota::new(burst, Duration::from_nanos(interval.saturating_mul(burst)))
            .map_err(|e| CliError::Usage(format!("deny-ratio quota: {e}")))?;
        if accepts(&quota) {
            return Ok(quota);
        }
        if burst == 1 {
            return Err(CliError::Usage(format!("deny-ratio quota: the algorithm refuses {quota}")));
        }
        burst /= 2;
    }
}

/// A quota under which about `target` of this workload's checks are denied, with the share the
/// last pilot measured. It starts from the fluid model for tollgate's allow-all throughput
/// `lambda` and the key probabilities, then runs `pilot` (tollgate on this cell's workload, a
/// fresh limiter warmed up as in the real run): out by a factor of 4 a step until the target is
/// bracketed, then interpolating the share on a log scale of the rate (kept within the middle
/// 80% of the bracket), until the share is within [`CALIBRATION_TOLERANCE`], for at most
/// [`CALIBRATION_PILOTS`] runs (the closest is kept). The same quota is then used for every
/// library.
fn calibrated_quota(
    target: f64,
    lambda: f64,
    probs: &[f64],
    accepts: impl Fn(&Quota) -> bool,
    mut pilot: impl FnMut(Quota) -> Result<f64, CliError>,
) -> Result<(Quota, f64), CliError> {
    let mut rate = measure::rate_for_deny_share(target, lambda, probs).max(1e-3);
    // Rates known to deny more than the target (too low) and less (too high), with their shares.
    let mut low: Option<(f64, f64)> = None;
    let mut high: Option<(f64, f64)> = None;
    let mut best: Option<(f64, Quota, f64)> = None;
    for _ in 0..CALIBRATION_PILOTS {
        // A rate the algorithm cannot express (a window too short for it): keep the closest
        // pilot so far, which the caller notes if it is far from the target.
        let quota = match quota_at(rate, &accepts) {
            Ok(quota) => quota,
            Err(_) if best.is_some() => break,
            Err(e) => return Err(e),
        };
        let share = pilot(quota)?;
        let miss = (share - target).abs();
        if best.as_ref().is_none_or(|(m, _, _)| miss < *m) {
            best = Some((miss, quota, share));
        }
        if miss <= CALIBRATION_TOLERANCE {
            break;
        }
        if share > target {
            low = Some((rate, share));
        } else {
            high = Some((rate, share));
        }
        rate = match (low, high) {
            (Some((l, sl)), Some((h, sh))) => {
                let at = if sl > sh { ((sl - target) / (sl - sh)).clamp(0.1, 0.9) } else { 0.5 };
                (l.ln() + at * (h.ln() - l.ln())).exp()
            }
            (Some((l, _)), None) => l * 4.0,
            (None, Some((h, _))) => h / 4.0,
            (None, None) => rate,
        };
    }
    best.map(|(_, quota, share)| (quota, share))
        .ok_or_else(|| CliError::Usage("deny-ratio calibration ran no pilot".to_string()))
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

/// How many libraries run each cell of `algo`: governor too for GCRA when compared.
fn libraries(algo: AlgoKind, compare: Compare) -> usize {
    if algo == AlgoKind::Gcra && compare == Compare::Governor {
        2
    } else {
        1
    }
}

/// Runs the plan; progress on stderr.
pub(crate) fn run(plan: &Plan) -> Result<Report, CliError> {
    let cells_total: usize = plan
        .algorithms
        .iter()
        .map(|&a| libraries(a, plan.compare) * plan.clocks.len() * plan.keys.len() * plan.threads.len())
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
        "ns_per_op: the time of one check as each thread sees it, threads × 10⁹ ÷ ops/s (so on several threads it \
         is not 1000 ÷ Mops/s)"
            .to_string(),
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
                        // Pilots: half the warm-up to warm up, half to measure.
                        let half = warmup / 2;
                        let pilot = |quota: Quota| {
                            let run = Run {
                                seq: &seq,
                                threads,
                                warmup: half,
                                duration: half,
                                overhead: timer_overhead_ns,
                            };
                            let m = with_tollgate(algo, clock, keys, plan.pin, quota, &key_list, run)
                                .map_err(CliError::Usage)?;
                            Ok(1.0 - m.allowed as f64 / m.ops.max(1) as f64)
                        };
                        let accepts = |q: &Quota| subjects::accepts(algo, q);
                        match calibrated_quota(plan.deny_ratio, probe.ops_per_sec, &probs, accepts, pilot) {
                            Ok((quota, _)) => quota,
                            // No quota the algorithm accepts: skip this cell, not the run.
                            Err(e) => {
                                notes.push(format!(
                                    "{algo} {} clock, {keys} keys, {threads} thr: skipped ({e})",
                                    clock.name()
                                ));
                                progress.inc(libraries(algo, plan.compare) as u64);
                                continue;
                            }
                        }
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

    if plan.deny_ratio > 0.0 {
        let missed: Vec<String> = cells
            .iter()
            .filter(|c| (c.denied_share - plan.deny_ratio).abs() > DENY_SHARE_WARNING)
            .map(|c| {
                format!(
                    "{} {} {} keys {} thr {}: {:.1}%",
                    c.algorithm,
                    c.clock,
                    c.keys,
                    c.threads,
                    c.library,
                    100.0 * c.denied_share
                )
            })
            .collect();
        notes.push(format!(
            "deny ratio: each cell's quota (the same for every library) was calibrated by pilot runs of tollgate to \
             within {:.0} points of the target where it could be",
            100.0 * CALIBRATION_TOLERANCE
        ));
        if !missed.is_empty() {
            notes.push(format!(
                "deny ratio: these cells' denied share is more than {:.0} points from the target {:.1}%, so their \
                 numbers measure another mix of allowed and denied checks: {}",
                100.0 * DENY_SHARE_WARNING,
                100.0 * plan.deny_ratio,
                missed.join("; ")
            ));
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
    let mut measured = 0;
    for cell in cells.iter_mut() {
        let Ok(n) = cell.keys.parse::<usize>() else { continue };
        if n < MIN_KEYS_FOR_MEMORY {
            continue;
        }
        measured += 1;
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
    if measured == 0 {
        notes.push(format!(
            "bytes/key: measured only for tables of {MIN_KEYS_FOR_MEMORY} keys or more (none in this run)"
        ));
    } else if let Some(e) = failed {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A workload whose denied share falls smoothly with the rate (as a fluid model's does).
    fn share_at(quota: &Quota) -> f64 {
        let rate = quota.count() as f64 * 1e9 / quota.period().as_nanos() as f64;
        (1.0 - rate / 1e7).clamp(0.0, 1.0)
    }

    #[test]
    fn calibration_converges_from_a_bad_first_guess() {
        // The fluid model (λ = 10⁹/s, one key) starts 100× off; pilots bisect to the target.
        for target in [0.1, 0.5, 0.9] {
            let mut pilots = 0;
            let (quota, share) = calibrated_quota(
                target,
                1e9,
                &[1.0],
                |_| true,
                |q| {
                    pilots += 1;
                    Ok(share_at(&q))
                },
            )
            .unwrap();
            assert!((share - target).abs() <= CALIBRATION_TOLERANCE, "{target}: {share} with {quota}");
            assert!((share_at(&quota) - share).abs() < 1e-12);
            assert!(pilots <= CALIBRATION_PILOTS);
        }
    }

    #[test]
    fn calibration_keeps_the_closest_pilot_when_it_cannot_converge() {
        // A share that jumps past the target: no rate reaches it; the closest pilot is kept.
        let jump = |q: Quota| Ok(if share_at(&q) > 0.5 { 0.9 } else { 0.2 });
        let (_, share) = calibrated_quota(0.5, 1e7, &[1.0], |_| true, jump).unwrap();
        assert!(share == 0.2 || share == 0.9);
    }

    #[test]
    fn calibration_stops_at_the_fastest_rate_the_algorithm_accepts() {
        // Every pilot denies too much, so the rate climbs until the algorithm refuses it
        // (here: anything faster than 10⁴/s): the closest pilot is kept, no error.
        let slow_enough = |q: &Quota| q.emission_interval_nanos() >= 100_000;
        let mut fastest = u64::MAX;
        let (quota, share) = calibrated_quota(0.5, 1e3, &[1.0], slow_enough, |q| {
            fastest = fastest.min(q.emission_interval_nanos());
            Ok(0.9)
        })
        .unwrap();
        assert_eq!(share, 0.9);
        assert!(slow_enough(&quota), "{quota}");
        assert!(fastest >= 100_000);
        // No rate at all: an error the caller turns into a skipped cell.
        assert!(calibrated_quota(0.5, 1e3, &[1.0], |_| false, |_| Ok(0.9)).is_err());
    }

    #[test]
    fn calibrated_quotas_burst_about_two_ms_and_fit_the_algorithm() {
        let q = quota_at(1e6, |_| true).unwrap();
        assert_eq!(q.burst(), 2_000);
        assert_eq!(q.emission_interval_nanos(), 1_000);
        // The sliding log holds at most 4096 stamps: the burst is halved until it fits.
        let q = quota_at(1e8, |q| subjects::accepts(AlgoKind::Log, q)).unwrap();
        assert!(q.burst() <= 4096 && q.burst() * 2 > 4096, "{q}");
        assert_eq!(quota_at(0.5, |_| true).unwrap().burst(), 1);
        assert!(quota_at(1e6, |_| false).is_err());
    }
}
