//! Loom models of tollgate's concurrent core, driving the real public API.
//!
//! Build and run them with the crate-prefixed cfg, which makes `src/sync.rs` hand out loom's
//! atomics and puts a loom `Mutex<HashMap>` in place of papaya in the keyed store:
//!
//! ```sh
//! LOOM_MAX_PREEMPTIONS=2 RUSTFLAGS="--cfg tollgate_loom -C debug-assertions" \
//!     CARGO_TARGET_DIR=target/loom cargo test -p loom-tests --release
//! ```
//!
//! Without the cfg every model file is compiled out (`#![cfg(tollgate_loom)]`), so
//! `cargo test --workspace` builds this crate and runs nothing from it.
//!
//! # The models (`tests/`)
//!
//! * `gcra_cell.rs`: concurrent GCRA checks on one [`tollgate::Limiter`] cell. With the clock
//!   frozen exactly `burst` checks are admitted; with one thread advancing the clock between
//!   checks the admitted count never passes the analytic allowance `burst + ⌊elapsed / T⌋`.
//! * `sweeper.rs`: the tombstone protocol (DESIGN.md §6): `sweep()` racing `check()` on a
//!   [`tollgate::KeyedLimiter`] key at the moment it becomes idle. No check is lost, none
//!   over-admits, the key ends up present exactly once, and (with `max_keys`) the live-key count
//!   stays exact when a key is retired and re-inserted.
//! * `reset.rs`: `reset()` racing `check()`: the outcomes are exactly those of some sequential
//!   order of the operations.
//! * `windows.rs`: fixed-window rollover vs increment, sliding-window rollover, the sliding
//!   log's claim protocol, composite refunds, and composite eviction (the sweep's holds on both
//!   words racing checkers: both idle, second busy, and a check whose clock read predates the
//!   sweep's, with one and two checkers).
//! * `deny_cache.rs`: the Redis deny cache's generation fence (`src/redis/cache.rs`): an
//!   insertion racing an invalidation of the same key (with one and two inserters) leaves an
//!   entry only if its check read the generation after the invalidation's bump; and a prune at
//!   capacity racing an insertion never drops a live denial. These models build tollgate with
//!   feature `redis` (loom builds only, see `Cargo.toml`) and drive the production cache through
//!   `tollgate::redis::deny_cache_loom`, with papaya replaced by a loom `Mutex` stand-in.
//! * `breaker.rs`: the Redis circuit breaker (`src/redis/breaker.rs`), driven through
//!   `tollgate::redis::breaker_loom` with time as an input: racing failures open it (none lost,
//!   the count saturates); before the cooldown ends every call is refused; after it exactly one
//!   racing caller probes, and only a failure recorded late lets one more through; a probe's
//!   success resets the count even when another thread opened it (a fixed defect); and whatever
//!   a probe's outcome races, the breaker is never stuck and can always open again.
//!
//! # Preemption bound
//!
//! Loom explores every interleaving with at most `LOOM_MAX_PREEMPTIONS` forced context switches
//! (switches away from a thread that could have continued). [`model`] uses the environment
//! variable when it is set and **2** otherwise — the bound tokio and crossbeam use in CI. Most
//! ways these protocols can go wrong need at most two preemptions (a thread stopped between its
//! load and its CAS, and one between a CAS and the step after it), and at 2 the whole suite
//! takes a few seconds on 2 cores in release mode (the budget is 3 minutes). A larger bound is
//! welcome for a local deep run (`LOOM_MAX_PREEMPTIONS=4` runs the whole suite in a few
//! seconds here).
//!
//! One model needs more: `sweeper.rs::sweep_vs_checks_as_the_key_expires` runs at a bound of at
//! least 3 ([`model_with_min_bound`]), because the over-admission it guards against (a checker
//! whose clock read predates an eviction, judging the replacement cell; fixed in
//! `src/keyed/mod.rs`) needs three preemptions to show. It costs under a second.
//!
//! Each model is small on purpose (2–3 threads, a handful of operations): loom's state space
//! grows exponentially in both.
//!
//! # Time in the models
//!
//! `ManualClock` keeps a std atomic under loom (see `src/sync.rs`): the clock is an input, and a
//! thread that advances it does so at the point where loom schedules that thread. Models that
//! advance time record the set of outcomes they saw across all executions and assert it equals
//! the set predicted by hand, so a model that silently stopped exploring would fail too.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use tollgate::{Gcra, Nanos};

/// The default preemption bound when `LOOM_MAX_PREEMPTIONS` is not set (module docs).
pub const DEFAULT_PREEMPTION_BOUND: usize = 2;

/// Runs `f` under loom with the documented preemption bound (module docs).
#[cfg(tollgate_loom)]
pub fn model<F>(f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    model_with_min_bound(0, f);
}

/// Like [`model`], but explores at least `min_bound` preemptions whatever the environment says:
/// for a model whose failure needs more than the default bound to show (each caller says why).
/// Use it only where the model stays cheap at that bound.
#[cfg(tollgate_loom)]
pub fn model_with_min_bound<F>(min_bound: usize, f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut builder = loom::model::Builder::new();
    let bound = builder.preemption_bound.unwrap_or(DEFAULT_PREEMPTION_BOUND);
    builder.preemption_bound = Some(bound.max(min_bound));
    builder.check(f);
}

/// Collects the outcome of each loom execution, to compare the whole set with a prediction
/// once the model has finished (loom re-runs the model closure once per interleaving).
#[derive(Debug)]
pub struct Observed<T: Ord> {
    seen: Arc<Mutex<BTreeSet<T>>>,
}

impl<T: Ord> Clone for Observed<T> {
    fn clone(&self) -> Self {
        Observed { seen: Arc::clone(&self.seen) }
    }
}

impl<T: Ord + Debug + Clone> Default for Observed<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Ord + Debug + Clone> Observed<T> {
    /// An empty collection.
    pub fn new() -> Self {
        Observed { seen: Arc::new(Mutex::new(BTreeSet::new())) }
    }

    /// Records one execution's outcome. Call it from the model's main thread after joining.
    pub fn record(&self, outcome: T) {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).insert(outcome);
    }

    /// Every distinct outcome seen so far.
    pub fn seen(&self) -> BTreeSet<T> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Asserts that the executions produced exactly `expected` (every predicted outcome, and no
    /// other). Use it where every outcome needs at most [`DEFAULT_PREEMPTION_BOUND`]
    /// preemptions; a larger bound only explores more orders, never new outcomes here.
    pub fn assert_exactly(&self, expected: impl IntoIterator<Item = T>) {
        let expected: BTreeSet<T> = expected.into_iter().collect();
        assert_eq!(self.seen(), expected, "outcomes seen across loom executions");
    }

    /// Asserts that every outcome seen is `allowed`, and that each of `required` was seen.
    /// For models where some allowed outcomes need more preemptions than the default bound.
    pub fn assert_within(&self, allowed: impl IntoIterator<Item = T>, required: impl IntoIterator<Item = T>) {
        let allowed: BTreeSet<T> = allowed.into_iter().collect();
        let seen = self.seen();
        assert!(seen.is_subset(&allowed), "outcomes {seen:?} outside {allowed:?}");
        for outcome in required {
            assert!(seen.contains(&outcome), "outcome {outcome:?} never reached; saw {seen:?}");
        }
    }
}

/// One operation of a sequential specification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A unit check; its result is whether it was admitted.
    Check,
    /// A reset to the fresh state; its result is always `true`.
    Reset,
}

/// Linearizability oracle: the outcomes of running `threads` (each a list of operations, run in
/// order) in every sequential interleaving, all at one instant `now`, from state `tat`, with the
/// pure GCRA step as the specification. An outcome is every operation's result, thread by
/// thread, followed by whether one more check at `now` would then be admitted.
pub fn linearizations(gcra: &Gcra, tat: Nanos, now: Nanos, threads: &[Vec<Op>]) -> BTreeSet<Vec<bool>> {
    let mut out = BTreeSet::new();
    let mut results: Vec<Vec<bool>> = threads.iter().map(|ops| Vec::with_capacity(ops.len())).collect();
    explore(gcra, tat, now, threads, &mut results, &mut out);
    out
}

fn explore(
    gcra: &Gcra,
    tat: Nanos,
    now: Nanos,
    threads: &[Vec<Op>],
    results: &mut Vec<Vec<bool>>,
    out: &mut BTreeSet<Vec<bool>>,
) {
    let mut any = false;
    for t in 0..threads.len() {
        let done = results[t].len();
        let Some(&op) = threads[t].get(done) else { continue };
        any = true;
        let (result, next_tat) = match op {
            Op::Check => {
                let (decision, new_tat) = gcra.step(tat, now, 1);
                (decision.is_allowed(), new_tat.unwrap_or(tat))
            }
            Op::Reset => (true, 0),
        };
        results[t].push(result);
        explore(gcra, next_tat, now, threads, results, out);
        results[t].pop();
    }
    if !any {
        let mut outcome: Vec<bool> = results.iter().flatten().copied().collect();
        outcome.push(gcra.step(tat, now, 1).0.is_allowed());
        out.insert(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate::Quota;

    #[test]
    fn oracle_counts_exactly_burst_at_one_instant() {
        let gcra = Gcra::from_quota(Quota::per_second(2).unwrap());
        let threads = vec![vec![Op::Check], vec![Op::Check], vec![Op::Check]];
        let all = linearizations(&gcra, 0, 0, &threads);
        // Which of the three loses depends on the order; the final check is always denied.
        let expected: BTreeSet<Vec<bool>> =
            [vec![true, true, false, false], vec![true, false, true, false], vec![false, true, true, false]]
                .into_iter()
                .collect();
        assert_eq!(all, expected);
    }

    #[test]
    fn oracle_reset_then_check() {
        let gcra = Gcra::from_quota(Quota::per_second(1).unwrap());
        let t = 1_000_000_000;
        let all = linearizations(&gcra, t, 0, &[vec![Op::Reset], vec![Op::Check]]);
        let expected: BTreeSet<Vec<bool>> =
            [vec![true, false, true], vec![true, true, false]].into_iter().collect();
        assert_eq!(all, expected);
    }
}
