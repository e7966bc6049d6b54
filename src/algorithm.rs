//! The [`Algorithm`] trait: what a limiter needs from a rate-limiting algorithm, and its GCRA
//! implementation. Each algorithm pairs a pure step (in `gcra.rs`, `window.rs`, …) with a
//! per-key cell updated only through `cell.rs`'s one CAS loop.

use std::fmt;

use crate::cell::{self, Retired, Step};
use crate::clock::Nanos;
use crate::decision::Decision;
use crate::gcra::{self, GcraParams};
use crate::quota::{Quota, QuotaError};
use crate::sync::AtomicU64;

/// A rate-limiting algorithm: its parameters (a value of the implementing type) and how it
/// checks, peeks, resets and retires one key's cell.
///
/// Implemented by [`Gcra`] (token bucket / leaky bucket) and the windowed algorithms. Users pick
/// one; they do not need to implement it. All methods are called with `cost ≤ capacity()`, and
/// `now` already clamped to [`HORIZON`](crate::quota::HORIZON).
///
/// ```
/// use tollgate::{Algorithm, Gcra, Quota};
/// let gcra = Gcra::new(&Quota::per_second(10).unwrap()).unwrap();
/// assert_eq!(gcra.capacity(), 10);
/// ```
pub trait Algorithm: Clone + fmt::Debug + Send + Sync + 'static {
    /// One key's state.
    type Cell: Send + Sync + 'static;

    /// Parameters for `quota`, or why this algorithm cannot represent it.
    fn new(quota: &Quota) -> Result<Self, QuotaError>;

    /// The quota these parameters came from.
    fn quota(&self) -> Quota;

    /// The most cells one check can ever admit (larger costs are `InsufficientCapacity`).
    fn capacity(&self) -> u64;

    /// A fresh key's cell.
    fn new_cell(&self) -> Self::Cell;

    /// Checks `cost ≥ 1` cells at `now`, consuming them if allowed.
    fn check(&self, cell: &Self::Cell, now: Nanos, cost: u64) -> Result<Decision, Retired>;

    /// What a check of `cost` cells would decide at `now`, without consuming (`cost = 0`
    /// reports the current state). A retired cell is reported as fresh.
    fn peek(&self, cell: &Self::Cell, now: Nanos, cost: u64) -> Decision;

    /// Returns the cell to its fresh state (a retired cell stays retired: the key is fresh).
    fn reset(&self, cell: &Self::Cell);

    /// Sweeper: retires the cell if it is indistinguishable from a fresh one at `now`.
    /// Returns `true` if this call retired it.
    fn try_retire(&self, cell: &Self::Cell, now: Nanos) -> bool;

    /// Whether the cell has been retired (a pure read; safe in `remove_if` closures).
    fn is_retired(cell: &Self::Cell) -> bool;
}

/// GCRA, the default algorithm: exactly a token bucket of `burst` tokens refilled one per
/// emission interval `T` (bucket size = burst, refill rate = 1/T), and exactly a leaky bucket as
/// a meter. One `u64` of state per key (the theoretical arrival time).
///
/// ```
/// use tollgate::{Gcra, Limiter, ManualClock, Quota};
/// let quota = Quota::token_bucket(2, 1).unwrap(); // 2 tokens, 1 per second
/// let limiter = Limiter::with_clock(quota, ManualClock::new());
/// assert!(limiter.check().is_allowed());
/// assert!(limiter.check().is_allowed());
/// assert!(!limiter.check().is_allowed());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gcra {
    quota: Quota,
    params: GcraParams,
}

/// A GCRA cell: the theoretical arrival time in ns, or the tombstone.
#[derive(Debug, Default)]
pub struct GcraCell {
    tat: AtomicU64,
}

impl GcraCell {
    fn fresh() -> GcraCell {
        GcraCell { tat: AtomicU64::new(0) }
    }
}

impl Gcra {
    /// GCRA's step on a given state, exposed for tests and the Redis differential checks:
    /// returns the decision and the new TAT if it changed.
    ///
    /// ```
    /// use tollgate::{Gcra, Quota};
    /// let g = Gcra::from_quota(Quota::per_second(1).unwrap());
    /// let (d, tat) = g.step(0, 5, 1);
    /// assert!(d.is_allowed());
    /// assert_eq!(tat, Some(1_000_000_005));
    /// ```
    pub fn step(&self, tat: Nanos, now: Nanos, cost: u64) -> (Decision, Option<Nanos>) {
        let o = gcra::step(tat, now, cost, &self.params);
        (o.decision, o.new_tat)
    }

    /// GCRA parameters for a quota (infallible: every valid quota fits).
    pub fn from_quota(quota: Quota) -> Gcra {
        Gcra { quota, params: GcraParams::from_quota(&quota) }
    }
}

impl Algorithm for Gcra {
    type Cell = GcraCell;

    fn new(quota: &Quota) -> Result<Self, QuotaError> {
        Ok(Gcra::from_quota(*quota))
    }

    fn quota(&self) -> Quota {
        self.quota
    }

    #[inline]
    fn capacity(&self) -> u64 {
        self.params.burst
    }

    #[inline]
    fn new_cell(&self) -> GcraCell {
        GcraCell::fresh()
    }

    #[inline]
    fn check(&self, cell: &GcraCell, now: Nanos, cost: u64) -> Result<Decision, Retired> {
        cell::update(&cell.tat, |tat| {
            let o = gcra::step(tat, now, cost, &self.params);
            match o.new_tat {
                Some(new_tat) => Step::Store(new_tat, o.decision),
                None => Step::Keep(o.decision),
            }
        })
    }

    #[inline]
    fn peek(&self, cell: &GcraCell, now: Nanos, cost: u64) -> Decision {
        let tat = cell::load(&cell.tat).unwrap_or(0);
        gcra::step(tat, now, cost, &self.params).decision
    }

    fn reset(&self, cell: &GcraCell) {
        // A retired cell is already "fresh" (the key will get a new cell): ignore Retired.
        let _ = cell::update(&cell.tat, |_| Step::Store(0, ()));
    }

    fn try_retire(&self, cell: &GcraCell, now: Nanos) -> bool {
        cell::retire(&cell.tat, |tat| gcra::is_idle(tat, now))
    }

    #[inline]
    fn is_retired(cell: &GcraCell) -> bool {
        cell::is_retired(&cell.tat)
    }
}
