//! Measuring the sliding-window counter's approximation against the exact log.

use std::collections::VecDeque;

use crate::clock::Nanos;
use crate::quota::{Quota, QuotaError};

use super::SlidingWindow;

/// How often the [`SlidingWindow`] counter decides differently from the exact sliding log on
/// the same arrivals.
///
/// Two measures: **shadow** (`wrongly_allowed`, `wrongly_denied`) judges each arrival with the
/// counter built from the *exact log's* admissions, so both see the same history and only the
/// approximation differs (the measure behind Cloudflare's 0.003%); **independent**
/// (`independent_disagreements`) runs each limiter on its own decisions, as two deployments
/// would, so one early difference can shift later ones.
///
/// ```
/// use tollgate::window::{approximation_error, synthetic_trace};
/// let trace = synthetic_trace(7, 10_000, 20_000_000); // 50/s on average
/// let e = approximation_error(100, 1_000_000_000, &trace).unwrap();
/// assert_eq!(e.decisions, 10_000);
/// assert!(e.rate() < 0.001);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApproximationError {
    /// Unit checks compared.
    pub decisions: u64,
    /// Shadow: the counter would allow, the exact log denies.
    pub wrongly_allowed: u64,
    /// Shadow: the counter would deny, the exact log allows.
    pub wrongly_denied: u64,
    /// Checks the exact log allowed.
    pub exact_allowed: u64,
    /// Independent runs: arrivals on which the two limiters' decisions differ.
    pub independent_disagreements: u64,
}

impl ApproximationError {
    /// Shadow wrong decisions over all decisions (0 when nothing was compared).
    pub fn rate(&self) -> f64 {
        if self.decisions == 0 {
            return 0.0;
        }
        (self.wrongly_allowed + self.wrongly_denied) as f64 / self.decisions as f64
    }

    /// Independent disagreements over all decisions.
    pub fn independent_rate(&self) -> f64 {
        if self.decisions == 0 {
            return 0.0;
        }
        self.independent_disagreements as f64 / self.decisions as f64
    }
}

/// Runs a [`SlidingWindow`] counter and an exact sliding log (a plain queue of timestamps) of
/// `limit` per `window_nanos` over the same unit arrivals (sorted times in ns), and counts
/// where their decisions differ. Errors if the quota is invalid for the counter.
pub fn approximation_error(
    limit: u64,
    window_nanos: Nanos,
    arrivals: &[Nanos],
) -> Result<ApproximationError, QuotaError> {
    let quota = Quota::new(limit, std::time::Duration::from_nanos(window_nanos))?;
    let counter = SlidingWindow::from_quota(quota)?;
    let mut own = 0; // the counter on its own decisions
    let mut shadow = 0; // the counter fed the exact log's admissions
    let mut log: VecDeque<Nanos> = VecDeque::new();
    let mut e = ApproximationError::default();
    for &now in arrivals {
        let (d, stored) = counter.step(own, now, 1);
        if let Some(s) = stored {
            own = s;
        }
        let shadow_allows = counter.step(shadow, now, 1).0.is_allowed();
        while log.front().is_some_and(|&t| t.saturating_add(window_nanos) <= now) {
            log.pop_front();
        }
        let exact = (log.len() as u64) < limit;
        if exact {
            log.push_back(now);
            e.exact_allowed += 1;
            shadow = counter.recorded(shadow, now, 1);
        }
        e.decisions += 1;
        match (shadow_allows, exact) {
            (true, false) => e.wrongly_allowed += 1,
            (false, true) => e.wrongly_denied += 1,
            _ => {}
        }
        if d.is_allowed() != exact {
            e.independent_disagreements += 1;
        }
    }
    Ok(e)
}

/// A deterministic synthetic trace: `count` arrival times (ns, sorted) of a Poisson process
/// with mean gap `mean_gap_nanos`, from `seed` (splitmix64; no dependencies).
///
/// ```
/// let t = tollgate::window::synthetic_trace(1, 100, 1_000);
/// assert_eq!(t.len(), 100);
/// assert!(t.windows(2).all(|w| w[0] <= w[1]));
/// ```
pub fn synthetic_trace(seed: u64, count: usize, mean_gap_nanos: Nanos) -> Vec<Nanos> {
    let mut rng = seed;
    let mut now: Nanos = 0;
    (0..count)
        .map(|_| {
            rng = rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            // Uniform in (0, 1], then an exponential gap (floats only in this trace generator,
            // never in a limiter's decision).
            let u = ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
            let gap = -u.ln() * mean_gap_nanos as f64;
            now = now.saturating_add(gap as Nanos);
            now
        })
        .collect()
}
