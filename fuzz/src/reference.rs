//! A deliberately naive reference GCRA, written from DESIGN.md §3 in wide integers (u128 state,
//! i128 differences), with no saturation and no shortcuts. The fuzz targets, the corpus replay
//! test (`tests/fuzz_corpus.rs`) and the property test (`tests/proptest_gcra.rs`) all compare
//! tollgate against this file; it does not use any tollgate code.
//!
//! ```text
//! quota: burst b ≥ 1, emission interval T = ⌈period / count⌉, tolerance τ + T = b·T ≤ 2⁶²
//! check_n(n) at now:   n > b → InsufficientCapacity
//!   tat'    = max(TAT, now)
//!   new_tat = tat' + n·T
//!   allow iff new_tat − now ≤ b·T   → TAT = new_tat (n > 0)
//!             remaining = ⌊(b·T − (new_tat − now)) / T⌋, reset_after = new_tat − now
//!   deny                            → TAT unchanged, retry_after = new_tat − b·T − now
//!             remaining = ⌊max(0, b·T − (tat' − now)) / T⌋, reset_after = tat' − now
//! ```
//!
//! On a denial the state is unchanged, so "time until the bucket is full again" is measured from
//! `tat'` (DESIGN.md's `reset_after = new_tat − now` line is the allowed case). `n = 0` uses the
//! same formulas: it reports without consuming.

/// The largest tolerance `b·T` a valid quota may have (the documented 100-year horizon bound).
pub const REF_MAX_TOLERANCE: u128 = 1 << 62;

/// A validated quota, in the reference's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefQuota {
    /// `b`.
    pub burst: u128,
    /// `T`, ns per cell.
    pub emission_interval: u128,
}

impl RefQuota {
    /// The quota `count` per `period_ns` with burst `burst`, or `None` where tollgate must
    /// reject it (a zero, or a tolerance beyond [`REF_MAX_TOLERANCE`]).
    pub fn new(count: u64, period_ns: u64, burst: u64) -> Option<RefQuota> {
        let (count, period, burst) = (u128::from(count), u128::from(period_ns), u128::from(burst));
        // Faster than one cell per ns is refused: T could not be represented exactly.
        if count == 0 || period == 0 || burst == 0 || period > REF_MAX_TOLERANCE || count > period {
            return None;
        }
        let emission_interval = period.div_ceil(count);
        (burst * emission_interval <= REF_MAX_TOLERANCE).then_some(RefQuota { burst, emission_interval })
    }

    /// `b·T`.
    pub fn tolerance(&self) -> u128 {
        self.burst * self.emission_interval
    }
}

/// A decision, field by field as tollgate's `Decision` reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefDecision {
    /// Whether the check passes.
    pub allowed: bool,
    /// The burst.
    pub limit: u64,
    /// Cells still available after this decision.
    pub remaining: u64,
    /// ns until the state is fresh again.
    pub reset_after: u64,
    /// ns until the same check could pass (`None` when allowed).
    pub retry_after: Option<u64>,
}

/// `n > burst`: the check can never pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefInsufficient {
    /// The cost asked for.
    pub cost: u64,
    /// The burst.
    pub capacity: u64,
}

/// One key's state under the reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefGcra {
    /// The quota.
    pub quota: RefQuota,
    /// The theoretical arrival time (0 = fresh).
    pub tat: u128,
}

fn narrow(x: i128) -> u64 {
    u64::try_from(x).unwrap_or_else(|_| panic!("reference value {x} does not fit u64"))
}

impl RefGcra {
    /// A fresh key.
    pub fn new(quota: RefQuota) -> RefGcra {
        RefGcra { quota, tat: 0 }
    }

    /// What a check of `n` cells at `now` decides, and the TAT it leaves (unchanged on a
    /// denial or `n = 0`).
    pub fn evaluate(&self, now: u128, n: u128) -> Result<(RefDecision, u128), RefInsufficient> {
        let b = self.quota.burst;
        let t = self.quota.emission_interval as i128;
        let tolerance = self.quota.tolerance() as i128;
        let limit = narrow(b as i128);
        if n > b {
            return Err(RefInsufficient { cost: narrow(n as i128), capacity: limit });
        }
        let start = self.tat.max(now) as i128;
        let now = now as i128;
        let new_tat = start + n as i128 * t;
        if new_tat - now <= tolerance {
            let decision = RefDecision {
                allowed: true,
                limit,
                remaining: narrow((tolerance - (new_tat - now)) / t),
                reset_after: narrow(new_tat - now),
                retry_after: None,
            };
            let tat = if n > 0 { new_tat as u128 } else { self.tat };
            Ok((decision, tat))
        } else {
            let decision = RefDecision {
                allowed: false,
                limit,
                remaining: narrow((tolerance - (start - now)).max(0) / t),
                reset_after: narrow(start - now),
                retry_after: Some(narrow(new_tat - tolerance - now)),
            };
            Ok((decision, self.tat))
        }
    }

    /// A check of `n` cells at `now`, consuming them if allowed.
    pub fn check(&mut self, now: u128, n: u128) -> Result<RefDecision, RefInsufficient> {
        let (decision, tat) = self.evaluate(now, n)?;
        self.tat = tat;
        Ok(decision)
    }

    /// Back to the fresh state.
    pub fn reset(&mut self) {
        self.tat = 0;
    }
}
