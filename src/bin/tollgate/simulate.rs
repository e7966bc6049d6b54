//! `tollgate simulate`: replays a synthetic arrival process on a `ManualClock` through each
//! algorithm, and compares every second's admissions with an exact sliding log ("never more
//! than `count` in any window of `period`"), the strictest reading of a quota.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use tollgate::{Algorithm, Clock, Limiter, ManualClock, Quota};

use crate::algos::with_algorithm;
use crate::measure::SplitMix;
use crate::spec::{AlgoKind, Arrivals};
use crate::CliError;

/// Most arrivals one simulation replays.
pub(crate) const MAX_ARRIVALS: f64 = 5e7;

/// Per-second rows printed in the table (the JSON has them all).
const MAX_TABLE_ROWS: usize = 300;

/// One second of one algorithm.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub(crate) struct Second {
    pub(crate) admitted: u64,
    pub(crate) denied: u64,
}

/// One algorithm's run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AlgoRun {
    pub(crate) algorithm: String,
    pub(crate) admitted: u64,
    pub(crate) denied: u64,
    /// Admitted minus the exact log's admitted.
    pub(crate) delta_vs_log: i64,
    /// Σ over seconds of |admitted − exact log's admitted|.
    pub(crate) abs_deviation_vs_log: u64,
    /// `abs_deviation_vs_log` as a percentage of the exact log's admitted total.
    pub(crate) abs_deviation_pct: f64,
    /// Most admissions in any window of the quota's period.
    pub(crate) peak_in_window: u64,
    pub(crate) per_second: Vec<Second>,
}

/// The `--json` document of `simulate`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SimReport {
    pub(crate) quota: String,
    pub(crate) limit_per_period: u64,
    /// The quota's burst (`limit_per_period` unless it has `;burst=`).
    pub(crate) burst: u64,
    /// The most GCRA can admit in one window of the period: `burst + limit_per_period − 1`.
    pub(crate) gcra_peak_bound: u64,
    pub(crate) period_s: f64,
    pub(crate) arrivals: String,
    pub(crate) duration_s: f64,
    pub(crate) seed: u64,
    pub(crate) total_arrivals: u64,
    pub(crate) reference: &'static str,
    pub(crate) algorithms: Vec<AlgoRun>,
    /// Algorithms of `all` that cannot express the quota, each with the reason.
    pub(crate) skipped: Vec<Skipped>,
}

/// An algorithm `simulate` left out.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Skipped {
    pub(crate) algorithm: &'static str,
    pub(crate) reason: String,
}

/// Something that admits or denies one arrival at the clock's current time.
trait Admit {
    fn admit(&mut self, now: u64) -> bool;
}

struct Lib<A: Algorithm>(Limiter<ManualClock, A>);

impl<A: Algorithm> Admit for Lib<A> {
    fn admit(&mut self, _now: u64) -> bool {
        self.0.check().is_allowed()
    }
}

/// The exact sliding log: admit at `t` iff fewer than `limit` admissions lie in `(t − period, t]`.
struct ExactLog {
    limit: u64,
    period: u64,
    admitted: VecDeque<u64>,
}

impl Admit for ExactLog {
    fn admit(&mut self, now: u64) -> bool {
        while self.admitted.front().is_some_and(|&t| t.saturating_add(self.period) <= now) {
            self.admitted.pop_front();
        }
        if (self.admitted.len() as u64) < self.limit {
            self.admitted.push_back(now);
            true
        } else {
            false
        }
    }
}

/// Tracks the most admissions in any window of `period` (same window shape as [`ExactLog`]).
struct Peak {
    period: u64,
    window: VecDeque<u64>,
    peak: u64,
}

impl Peak {
    fn record(&mut self, now: u64) {
        while self.window.front().is_some_and(|&t| t.saturating_add(self.period) <= now) {
            self.window.pop_front();
        }
        self.window.push_back(now);
        self.peak = self.peak.max(self.window.len() as u64);
    }
}

/// Calls `f(t)` for each arrival time `t < duration` (ns).
fn for_each_arrival(arrivals: Arrivals, duration: u64, seed: u64, mut f: impl FnMut(u64)) {
    match arrivals {
        Arrivals::Uniform { per_sec } => {
            for k in 0u64.. {
                let t = (k as f64 * 1e9 / per_sec).floor();
                if t >= duration as f64 {
                    break;
                }
                f(t as u64);
            }
        }
        Arrivals::Poisson { per_sec } => {
            let mut rng = SplitMix(seed);
            let mut t = 0.0f64;
            loop {
                t += -(1.0 - rng.next_f64()).ln() / per_sec * 1e9;
                if t >= duration as f64 {
                    break;
                }
                f(t as u64);
            }
        }
        Arrivals::Burst { count, every } => {
            let mut start = 0u64;
            while start < duration {
                for _ in 0..count {
                    f(start);
                }
                start = match start.checked_add(every.max(1)) {
                    Some(s) => s,
                    None => break,
                };
            }
        }
    }
}

fn expected_arrivals(arrivals: Arrivals, duration: Duration) -> f64 {
    let secs = duration.as_secs_f64();
    match arrivals {
        Arrivals::Uniform { per_sec } | Arrivals::Poisson { per_sec } => per_sec * secs,
        Arrivals::Burst { count, every } => count as f64 * (secs * 1e9 / every.max(1) as f64).ceil(),
    }
}

fn limiter(kind: AlgoKind, quota: &Quota, clock: &ManualClock) -> Result<Box<dyn Admit>, CliError> {
    with_algorithm!(kind, A => {
        let params = <A as Algorithm>::new(quota).map_err(|e| CliError::Usage(format!("{kind}: {e}")))?;
        Ok(Box::new(Lib(Limiter::with_algorithm(params, clock.clone()))))
    }, missing => Err(CliError::Usage(format!("algorithm {kind} is not available in this build"))))
}

/// Runs the simulation.
pub(crate) fn run(
    quota: Quota,
    algorithms: &[AlgoKind],
    skip_unfit: bool,
    arrivals: Arrivals,
    duration: Duration,
    seed: u64,
) -> Result<SimReport, CliError> {
    let expected = expected_arrivals(arrivals, duration);
    if expected > MAX_ARRIVALS {
        return Err(CliError::Usage(format!(
            "{arrivals} for {:.1} s is about {expected:.0} arrivals; the simulator replays at most {MAX_ARRIVALS:.0} \
             (shorten --duration or lower the rate)",
            duration.as_secs_f64()
        )));
    }
    let duration_ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    let seconds = duration_ns.div_ceil(1_000_000_000) as usize;
    let period = quota.period_nanos();
    let clock = ManualClock::new();
    let mut names: Vec<String> = Vec::new();
    let mut subjects: Vec<Box<dyn Admit>> = Vec::new();
    let mut skipped = Vec::new();
    for &kind in algorithms {
        match limiter(kind, &quota, &clock) {
            Ok(subject) => {
                names.push(kind.name().to_string());
                subjects.push(subject);
            }
            // Under `all`, one that cannot express the quota (a sliding log's cap on the limit,
            // a window's count field) is skipped with a note, not the whole run; named, it is
            // the error.
            Err(CliError::Usage(why)) if skip_unfit => {
                let reason = why.strip_prefix(&format!("{kind}: ")).unwrap_or(&why).to_string();
                skipped.push(Skipped { algorithm: kind.name(), reason });
            }
            Err(e) => return Err(e),
        }
    }
    if subjects.is_empty() {
        let why: Vec<String> = skipped.iter().map(|s| format!("{}: {}", s.algorithm, s.reason)).collect();
        return Err(CliError::Usage(format!("no algorithm can take quota {quota}: {}", why.join("; "))));
    }
    names.push("exact-log".to_string());
    subjects.push(Box::new(ExactLog { limit: quota.count(), period, admitted: VecDeque::new() }));
    let mut per_second = vec![vec![Second::default(); seconds]; subjects.len()];
    let mut peaks: Vec<Peak> =
        subjects.iter().map(|_| Peak { period, window: VecDeque::new(), peak: 0 }).collect();
    let mut total = 0u64;
    for_each_arrival(arrivals, duration_ns, seed, |t| {
        clock.set(t);
        total += 1;
        let second = ((t / 1_000_000_000) as usize).min(seconds.saturating_sub(1));
        for (i, subject) in subjects.iter_mut().enumerate() {
            let now = clock.now();
            if subject.admit(now) {
                per_second[i][second].admitted += 1;
                peaks[i].record(now);
            } else {
                per_second[i][second].denied += 1;
            }
        }
    });
    let reference = per_second.last().cloned().unwrap_or_default();
    let reference_total: u64 = reference.iter().map(|s| s.admitted).sum();
    let runs = names
        .into_iter()
        .zip(per_second)
        .zip(peaks)
        .map(|((algorithm, seconds), peak)| {
            let admitted: u64 = seconds.iter().map(|s| s.admitted).sum();
            let denied: u64 = seconds.iter().map(|s| s.denied).sum();
            let abs: u64 = seconds.iter().zip(&reference).map(|(a, r)| a.admitted.abs_diff(r.admitted)).sum();
            AlgoRun {
                algorithm,
                admitted,
                denied,
                delta_vs_log: admitted as i64 - reference_total as i64,
                abs_deviation_vs_log: abs,
                abs_deviation_pct: if reference_total == 0 {
                    0.0
                } else {
                    abs as f64 * 100.0 / reference_total as f64
                },
                peak_in_window: peak.peak,
                per_second: seconds,
            }
        })
        .collect();
    Ok(SimReport {
        quota: quota.to_string(),
        limit_per_period: quota.count(),
        burst: quota.burst(),
        gcra_peak_bound: gcra_peak_bound(&quota),
        period_s: period as f64 / 1e9,
        arrivals: arrivals.to_string(),
        duration_s: duration.as_secs_f64(),
        seed,
        total_arrivals: total,
        reference: "exact sliding log: at most `count` admissions in any window (t − period, t]",
        algorithms: runs,
        skipped,
    })
}

/// The most GCRA can admit in any window of one period: a full bucket (`burst`), then a cell
/// every emission interval `T ≥ period / count` while the window lasts, at most `count − 1` of
/// them in a window shorter than `period`. `2n − 1` when the burst is the count; `burst + n − 1`
/// otherwise (`10/s;burst=30`: 39).
fn gcra_peak_bound(quota: &Quota) -> u64 {
    quota.burst().saturating_add(quota.count()).saturating_sub(1)
}

/// The per-second table and the summary.
pub(crate) fn table(r: &SimReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "simulate: quota {} (at most {} per {} s in the exact log), arrivals {}, {:.1} s, seed {} — {} arrivals\n",
        r.quota, r.limit_per_period, r.period_s, r.arrivals, r.duration_s, r.seed, r.total_arrivals
    );
    let mut header = format!("{:>6}", "second");
    for a in &r.algorithms {
        let _ = write!(header, "  {:>17}", format!("{} adm/den", a.algorithm));
    }
    let _ = writeln!(out, "{header}");
    let seconds = r.algorithms.first().map_or(0, |a| a.per_second.len());
    for s in 0..seconds.min(MAX_TABLE_ROWS) {
        let mut row = format!("{s:>6}");
        for a in &r.algorithms {
            let c = a.per_second[s];
            let _ = write!(row, "  {:>17}", format!("{}/{}", c.admitted, c.denied));
        }
        let _ = writeln!(out, "{row}");
    }
    if seconds > MAX_TABLE_ROWS {
        let _ = writeln!(out, "  … {} more seconds (see --json)", seconds - MAX_TABLE_ROWS);
    }
    let _ = writeln!(
        out,
        "\n{:<10} {:>10} {:>10} {:>13} {:>16} {:>14} {:>16}",
        "algorithm", "admitted", "denied", "Δ vs log", "Σ|Δ| per second", "Σ|Δ| % of log", "peak in a window"
    );
    for a in &r.algorithms {
        let _ = writeln!(
            out,
            "{:<10} {:>10} {:>10} {:>+13} {:>16} {:>13.1}% {:>16}",
            a.algorithm,
            a.admitted,
            a.denied,
            a.delta_vs_log,
            a.abs_deviation_vs_log,
            a.abs_deviation_pct,
            a.peak_in_window
        );
    }
    for s in &r.skipped {
        let _ = writeln!(out, "note: algorithm {} not run: {}", s.algorithm, s.reason);
    }
    let gcra = if r.burst == r.limit_per_period {
        format!("GCRA with burst n = {} can pass up to 2n − 1 = {}", r.burst, r.gcra_peak_bound)
    } else {
        format!(
            "GCRA with burst {} and n = {} can pass up to burst + n − 1 = {}",
            r.burst, r.limit_per_period, r.gcra_peak_bound
        )
    };
    let _ = writeln!(
        out,
        "\nexact-log is the reference ({}); peak = most admissions in any window of one period (the exact log \
         admits at most {}; {gcra}: a full bucket plus the refill)",
        r.reference, r.limit_per_period
    );
    out
}
