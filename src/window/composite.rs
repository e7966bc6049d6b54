//! Composite ("hybrid") limits: several limits on one key, admitted all or nothing.

use crate::algorithm::{Algorithm, Receipt};
use crate::cell::{self, Retired, WordState};
use crate::clock::Nanos;
use crate::decision::Decision;
use crate::quota::{Quota, QuotaError};
use crate::sync::AtomicU64;

/// Two limits on one key, admitted **all or nothing**: e.g. `10/s` and `1000/h`, or a GCRA
/// burst limit and a daily [`FixedWindow`](super::FixedWindow). Nest to the right for more:
/// `Composite<A, Composite<B, C>>`.
///
/// A check takes `cost` from `a`, then from `b`. If `b` denies (or its cell was retired), the
/// cells already taken from `a` are **refunded** through `a`'s own CAS loop
/// ([`Algorithm::refund`]), so nothing is double-counted:
///
/// * window counters refund exactly (counts are additive: `count −= cost` if still in the same
///   window), whatever ran in between;
/// * the sliding log expires exactly the slots it wrote, but its ring is claimed in order, so
///   those slots become usable only when the ring comes round to them (conservative: never
///   over-admits, may under-admit within one window) — **put a [`SlidingLog`](super::SlidingLog)
///   last** (as `b`, which the composite's own check never refunds);
/// * GCRA refunds exactly if its TAT is untouched since, else not at all (conservative).
///
/// An admitted composite check can itself be undone: [`check_with_receipt`](Algorithm::check_with_receipt)
/// returns a receipt of both takes and [`refund`](Algorithm::refund) gives back each, by the
/// rules above (the HTTP layer does this when a later rule refuses the request). The receipt
/// has room for two one-word takes (GCRA and the windows); a take from a sliding log or a
/// nested composite as `b` is not refunded that way (kept: never over-admits).
///
/// A concurrent check may see `a`'s cells as taken for the few nanoseconds before the refund
/// (and be denied): that transient is the price of not locking. The returned [`Decision`] is the
/// most restrictive ([`Decision::most_restrictive`]): allowed only if both allow, lowest
/// `remaining`, longest `reset_after` and `retry_after`.
///
/// `a` should be a leaf algorithm (its refund must be supported); `b` may itself be a composite.
///
/// **Eviction:** an idle composite key is evicted like any other, all or nothing, when each
/// sub-limit is a leaf algorithm (GCRA, [`FixedWindow`](super::FixedWindow),
/// [`SlidingWindow`](super::SlidingWindow), [`SlidingLog`](super::SlidingLog): the log is held
/// by its head word, once its whole ring has expired). A composite nested in a composite is
/// never evicted: its table only grows, so bound it with
/// [`KeyedLimiter::max_keys`](crate::KeyedLimiter::max_keys) under
/// [`FullTablePolicy::Reject`](crate::FullTablePolicy::Reject), and expect new keys to be
/// refused once it is full. The protocol, lock-free for checkers (they never wait for the
/// sweeper), takes one CAS per word:
///
/// 1. the sweeper *holds* `a` (idle state → stashed, word → HOLD), then `b` the same way; if
///    `b` is busy it restores `a` and keeps the key;
/// 2. it then CASes `a` from its HOLD to the tombstone: the key is retired (`b` stays held);
///    if that CAS fails, a checker restored `a`, and the sweeper restores `b` too.
///
/// A checker that meets a HOLD restores the stashed state (exactly what was held, so no
/// decision depends on when) and checks again. A HOLD on `b` is restored only after reading
/// `a` *after* that HOLD: a HOLD on `b` means the same sweep already held `a`, so `a` then reads
/// as its HOLD (restore it first: that sweep can no longer retire the key), the tombstone
/// (retired: the check starts over on a fresh cell), or a restored state (that sweep is over).
/// Thus every admission consumes `b` either before the sweep's hold of `b` — which then saw it
/// idle, so the admission had expired — or after its restore: a retired key never loses a live
/// admission. Each sweep's HOLD carries a unique tag, so a stale restore fails. Checked by the
/// loom models `composite_sweeper_vs_checkers_*` and `composite_sweep_after_the_clock_moves_*`
/// (loom-tests/tests/windows.rs), for GCRA + GCRA and GCRA + sliding log.
///
/// ```
/// use std::time::Duration;
/// use tollgate::{Algorithm, Composite, FixedWindow, Gcra, Limiter, ManualClock, Quota};
///
/// let per_second = Gcra::new(&Quota::per_second(10).unwrap()).unwrap();
/// let per_hour = FixedWindow::new(&Quota::per_hour(12).unwrap()).unwrap();
/// let clock = ManualClock::new();
/// let limiter = Limiter::with_algorithm(Composite::of(per_hour, per_second), clock.clone());
/// assert_eq!(limiter.check_n(10).unwrap().remaining(), 0); // the 10/s burst is spent
/// assert!(!limiter.check().is_allowed());                  // 10/s denies: 1/h refunded
/// clock.advance(Duration::from_secs(1));
/// assert_eq!(limiter.check_n(2).unwrap().remaining(), 0);  // 12/h: now spent
/// clock.advance(Duration::from_secs(1));
/// let d = limiter.check();
/// assert!(!d.is_allowed());
/// assert!(d.retry_after().unwrap() > Duration::from_secs(3500));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Composite<A, B> {
    a: A,
    b: B,
}

/// A composite cell: one cell per sub-limit.
#[derive(Debug)]
pub struct CompositeCell<A: Algorithm, B: Algorithm> {
    a: A::Cell,
    b: B::Cell,
    /// What a sweep held in `a` and `b` (see [`Composite`], "Eviction").
    stash_a: AtomicU64,
    stash_b: AtomicU64,
}

impl<A: Algorithm, B: Algorithm> CompositeCell<A, B> {
    /// The first sub-limit's cell (for inspection with `composite.first().peek(..)`).
    ///
    /// ```
    /// use tollgate::{Algorithm, Composite, FixedWindow, Quota};
    /// let w = FixedWindow::from_quota(Quota::per_second(5).unwrap()).unwrap();
    /// let c = Composite::of(w, w);
    /// let cell = c.new_cell();
    /// let _ = c.check(&cell, 0, 2);
    /// assert_eq!(c.first().peek(cell.first(), 0, 0).remaining(), 3);
    /// ```
    pub fn first(&self) -> &A::Cell {
        &self.a
    }

    /// The second sub-limit's cell.
    pub fn second(&self) -> &B::Cell {
        &self.b
    }
}

impl<A: Algorithm, B: Algorithm> Composite<A, B> {
    /// Both limits on each key: `a` is taken first and refunded if `b` denies.
    pub fn of(a: A, b: B) -> Composite<A, B> {
        Composite { a, b }
    }

    /// Builds both from their quotas.
    ///
    /// ```
    /// use tollgate::{Composite, FixedWindow, Gcra, Quota};
    /// let c: Composite<FixedWindow, Gcra> =
    ///     Composite::from_quotas(&Quota::per_day(1000).unwrap(), &Quota::per_second(5).unwrap()).unwrap();
    /// assert_eq!(tollgate::Algorithm::capacity(&c), 5);
    /// ```
    pub fn from_quotas(a: &Quota, b: &Quota) -> Result<Composite<A, B>, QuotaError> {
        Ok(Composite { a: A::new(a)?, b: B::new(b)? })
    }

    /// The first limit.
    pub fn first(&self) -> &A {
        &self.a
    }

    /// The second limit.
    pub fn second(&self) -> &B {
        &self.b
    }
}

impl<A: Algorithm, B: Algorithm> Algorithm for Composite<A, B> {
    type Cell = CompositeCell<A, B>;

    /// Both sub-limits with the same quota; use [`Composite::of`] or [`Composite::from_quotas`]
    /// for different limits.
    fn new(quota: &Quota) -> Result<Self, QuotaError> {
        Composite::from_quotas(quota, quota)
    }

    /// Refused: one quota cannot say which sub-limit it replaces (and replacing both would,
    /// say, turn a per-second burst limit into the hourly one). Override a key's composite
    /// with [`KeyedLimiter::set_algorithm`](crate::KeyedLimiter::set_algorithm).
    fn derive(&self, _quota: &Quota) -> Result<Self, QuotaError> {
        Err(QuotaError::Incompatible {
            reason: "a composite has a quota per sub-limit: override it with set_algorithm",
        })
    }

    fn compatible(&self, other: &Composite<A, B>) -> bool {
        self.a.compatible(&other.a) && self.b.compatible(&other.b)
    }

    /// Each sub-limit carries its own state over (a held or retired cell is idle: nothing to
    /// carry), `publish` called once, after both have read their state.
    fn adopt(
        &self,
        cell: &CompositeCell<A, B>,
        previous: &Composite<A, B>,
        now: &dyn Fn() -> Nanos,
        publish: &mut dyn FnMut(),
    ) {
        self.a.adopt(&cell.a, &previous.a, now, &mut || self.b.adopt(&cell.b, &previous.b, now, publish));
    }

    /// The first limit's quota (what policy headers describe).
    fn quota(&self) -> Quota {
        self.a.quota()
    }

    #[inline]
    fn capacity(&self) -> u64 {
        self.a.capacity().min(self.b.capacity())
    }

    fn new_cell(&self) -> CompositeCell<A, B> {
        CompositeCell {
            a: self.a.new_cell(),
            b: self.b.new_cell(),
            stash_a: AtomicU64::new(0),
            stash_b: AtomicU64::new(0),
        }
    }

    #[inline]
    fn check(&self, cell: &CompositeCell<A, B>, now: Nanos, cost: u64) -> Result<Decision, Retired> {
        self.check_with_receipt(cell, now, cost).map(|(decision, _)| decision)
    }

    /// The receipt holds both takes (see [`Receipt`]), so a caller that must undo an admitted
    /// composite check (the HTTP layer, when a later rule refuses the request) refunds both
    /// sub-limits.
    #[inline]
    fn check_with_receipt(
        &self,
        cell: &CompositeCell<A, B>,
        now: Nanos,
        cost: u64,
    ) -> Result<(Decision, Receipt), Retired> {
        loop {
            match self.check_once(cell, now, cost) {
                Ok(checked) => return Ok(checked),
                // A HOLD (a sweep in progress: restore and check again) or the tombstone.
                Err(Retired) => self.resolve_holds(cell)?,
            }
        }
    }

    /// Refunds both sub-limits' takes, each through its own algorithm's refund (each exact or
    /// nothing, as there). Returns whether either gave anything back.
    fn refund(&self, cell: &CompositeCell<A, B>, now: Nanos, cost: u64, receipt: Receipt) -> bool {
        let (a, b) = receipt.split();
        // Second limit first: the reverse of the takes (it does not matter for two cells, but
        // it is the order a nested composite's own refunds follow too).
        let second = self.b.refund(&cell.b, now, cost, b);
        let first = self.a.refund(&cell.a, now, cost, a);
        first || second
    }

    fn peek(&self, cell: &CompositeCell<A, B>, now: Nanos, cost: u64) -> Decision {
        let (a, b) = (self.a.peek(&cell.a, now, cost), self.b.peek(&cell.b, now, cost));
        if a.is_allowed() == b.is_allowed() {
            return a.most_restrictive(b);
        }
        // One sub-limit denies, so the check this previews takes nothing: the other reports
        // what it holds now, as that check's denial does (`standing`).
        let held = |d: Decision, peek_now: &dyn Fn() -> Decision| {
            if d.is_allowed() && cost > 0 {
                peek_now()
            } else {
                d
            }
        };
        held(a, &|| self.a.peek(&cell.a, now, 0)).most_restrictive(held(b, &|| self.b.peek(&cell.b, now, 0)))
    }

    fn reset(&self, cell: &CompositeCell<A, B>) {
        self.a.reset(&cell.a);
        self.b.reset(&cell.b);
    }

    /// The sweep of [`Composite`]'s "Eviction" (one sweeper at a time per cell: the keyed
    /// store's sweeps are serialized).
    fn try_retire(&self, cell: &CompositeCell<A, B>, now: Nanos) -> bool {
        let hold = cell::next_hold();
        if !self.a.try_hold(&cell.a, now, hold, &cell.stash_a) {
            return false;
        }
        if !self.b.try_hold(&cell.b, now, hold, &cell.stash_b) {
            A::release_hold(&cell.a, hold, &cell.stash_a); // fails only if a checker did it
            return false;
        }
        if A::confirm_hold(&cell.a, hold) {
            return true;
        }
        B::release_hold(&cell.b, hold, &cell.stash_b); // a checker restored `a` first
        false
    }

    #[inline]
    fn is_retired(cell: &CompositeCell<A, B>) -> bool {
        A::word_state(&cell.a) == WordState::Retired
    }

    fn take_over_slot(cell: &CompositeCell<A, B>) -> bool {
        // The first sub-limit's word carries the tombstone, and with it the slot hand-over.
        A::take_over_slot(&cell.a)
    }

    fn free_slot(cell: &CompositeCell<A, B>, free: &mut dyn FnMut()) -> bool {
        A::free_slot(&cell.a, free)
    }
}

impl<A: Algorithm, B: Algorithm> Composite<A, B> {
    /// Restores every HOLD of a sweep in progress; `Err(Retired)` if the key was retired.
    /// Returns `Ok` when both words were live at some point (the caller checks again).
    #[cold]
    fn resolve_holds(&self, cell: &CompositeCell<A, B>) -> Result<(), Retired> {
        loop {
            match A::word_state(&cell.a) {
                WordState::Retired => return Err(Retired),
                WordState::Held(held) => {
                    A::release_hold(&cell.a, held, &cell.stash_a);
                    continue;
                }
                WordState::Live => {}
            }
            let WordState::Held(held_b) = B::word_state(&cell.b) else {
                // `b` live (or retired, which only a nested composite could report: the
                // caller's next check then fails the same way and we come back here).
                return if B::word_state(&cell.b) == WordState::Retired { Err(Retired) } else { Ok(()) };
            };
            // Read `a` again, *after* the HOLD on `b` (see the type docs): restore `b` only if
            // the sweep that held it can no longer retire the key.
            match A::word_state(&cell.a) {
                WordState::Retired => return Err(Retired),
                WordState::Held(held) => {
                    A::release_hold(&cell.a, held, &cell.stash_a);
                }
                WordState::Live => {
                    B::release_hold(&cell.b, held_b, &cell.stash_b);
                }
            }
        }
    }

    #[inline]
    fn check_once(
        &self,
        cell: &CompositeCell<A, B>,
        now: Nanos,
        cost: u64,
    ) -> Result<(Decision, Receipt), Retired> {
        let (first, receipt) = self.a.check_with_receipt(&cell.a, now, cost)?;
        if !first.is_allowed() {
            return Ok((first.most_restrictive(standing(&self.b, &cell.b, now, cost)), Receipt::NONE));
        }
        loop {
            return match self.b.check_with_receipt(&cell.b, now, cost) {
                Ok((second, taken)) if second.is_allowed() => {
                    Ok((first.most_restrictive(second), Receipt::pair(receipt, taken)))
                }
                Ok((second, _)) => {
                    self.a.refund(&cell.a, now, cost, receipt);
                    Ok((standing(&self.a, &cell.a, now, cost).most_restrictive(second), Receipt::NONE))
                }
                // A HOLD on `b` (or on `a`, placed after our take had expired): restore, and
                // check `b` again with our take from `a` still in place (a refund now would
                // fail against the HOLD and leave that take behind, lost).
                Err(Retired) => match self.resolve_holds(cell) {
                    Ok(()) => continue,
                    Err(Retired) => Err(Retired), // retired: our take went with the old cell
                },
            };
        }
    }
}

/// How the sub-limit that did not deny a composite's check stands, for the denial's decision:
/// what it would decide for `cost` if that is a denial too (its `retry_after` counts), else what
/// it holds now. An admitting peek reports what would be left *after* taking `cost`, which this
/// check did not take: merged as is, it would name this sub-limit as the tightest with `cost`
/// too few cells left.
#[inline]
fn standing<X: Algorithm>(algorithm: &X, cell: &X::Cell, now: Nanos, cost: u64) -> Decision {
    let would = algorithm.peek(cell, now, cost);
    if would.is_allowed() && cost > 0 {
        algorithm.peek(cell, now, 0)
    } else {
        would
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::{FixedWindow, SlidingWindow};
    use crate::Gcra;

    #[test]
    fn denial_by_second_refunds_first() {
        let a = FixedWindow::new(&Quota::per_minute(5).unwrap()).unwrap();
        let b = SlidingWindow::new(&Quota::per_second(2).unwrap()).unwrap();
        let c = Composite::of(a, b);
        let cell = c.new_cell();
        assert!(c.check(&cell, 0, 2).unwrap().is_allowed());
        let d = c.check(&cell, 0, 1).unwrap();
        assert!(!d.is_allowed());
        assert_eq!(d.remaining(), 0);
        assert_eq!(c.first().peek(&cell.a, 0, 0).remaining(), 3);
    }

    /// A weighted denial reports the sub-limit that denied, with what it holds: the other one's
    /// `remaining` is not cut by the cost this check never took (review finding).
    #[test]
    fn a_weighted_denial_reports_the_denying_limit() {
        let q = |s: &str| s.parse::<Quota>().unwrap();
        // The second limit denies (the first is refunded), then the first one denies.
        let c = Composite::of(FixedWindow::new(&q("8/s")).unwrap(), Gcra::new(&q("5/s")).unwrap());
        let cell = c.new_cell();
        assert!(c.check(&cell, 0, 2).unwrap().is_allowed()); // fixed: 6 left, GCRA: 3 left
        let d = c.check(&cell, 0, 4).unwrap();
        assert!(!d.is_allowed());
        assert_eq!((d.limit(), d.remaining()), (5, 3));
        assert_eq!(c.first().peek(&cell.a, 0, 0).remaining(), 6); // refunded
        let c = Composite::of(Gcra::new(&q("5/s")).unwrap(), FixedWindow::new(&q("8/s")).unwrap());
        let cell = c.new_cell();
        assert!(c.check(&cell, 0, 2).unwrap().is_allowed());
        let d = c.check(&cell, 0, 4).unwrap();
        assert!(!d.is_allowed());
        assert_eq!((d.limit(), d.remaining()), (5, 3));
        assert!(d.retry_after().is_some());
        // Three unit checks still pass, as reported.
        for _ in 0..3 {
            assert!(c.check(&cell, 0, 1).unwrap().is_allowed());
        }
        assert!(!c.check(&cell, 0, 1).unwrap().is_allowed());
    }

    /// An admitted composite check undone from outside (the HTTP layer's multi-rule refund):
    /// both sub-limits get their cells back (review finding: composites had no receipt).
    #[test]
    fn an_admitted_check_is_refunded_in_both_limits() {
        let q = |s: &str| s.parse::<Quota>().unwrap();
        let c = Composite::of(Gcra::new(&q("10/m")).unwrap(), FixedWindow::new(&q("100/h")).unwrap());
        let cell = c.new_cell();
        let (d, receipt) = c.check_with_receipt(&cell, 0, 3).unwrap();
        assert!(d.is_allowed());
        assert_eq!(c.first().peek(&cell.a, 0, 0).remaining(), 7);
        assert_eq!(c.second().peek(&cell.b, 0, 0).remaining(), 97);
        assert!(c.refund(&cell, 0, 3, receipt));
        assert_eq!(c.first().peek(&cell.a, 0, 0).remaining(), 10);
        assert_eq!(c.second().peek(&cell.b, 0, 0).remaining(), 100);
        // A denial's receipt refunds nothing.
        let _ = c.check(&cell, 0, 10).unwrap();
        let (d, receipt) = c.check_with_receipt(&cell, 0, 1).unwrap();
        assert!(!d.is_allowed());
        assert!(!c.refund(&cell, 0, 1, receipt));
        assert_eq!(c.second().peek(&cell.b, 0, 0).remaining(), 90);
        // A composite nested as `b`, or a log, does not fit the receipt: the first limit is
        // refunded, the second keeps its take (conservative).
        let inner =
            Composite::of(FixedWindow::new(&q("50/h")).unwrap(), FixedWindow::new(&q("60/h")).unwrap());
        let n = Composite::of(Gcra::new(&q("10/m")).unwrap(), inner);
        let cell = n.new_cell();
        let (_, receipt) = n.check_with_receipt(&cell, 0, 2).unwrap();
        assert!(n.refund(&cell, 0, 2, receipt));
        assert_eq!(n.first().peek(&cell.a, 0, 0).remaining(), 10);
        assert_eq!(inner.first().peek(cell.b.first(), 0, 0).remaining(), 48);
        let log = crate::SlidingLog::new(&q("5/s")).unwrap();
        let l = Composite::of(FixedWindow::new(&q("50/h")).unwrap(), log);
        let cell = l.new_cell();
        let (_, receipt) = l.check_with_receipt(&cell, 0, 2).unwrap();
        assert!(l.refund(&cell, 0, 2, receipt));
        assert_eq!(l.first().peek(&cell.a, 0, 0).remaining(), 50);
        assert_eq!(log.peek(cell.second(), 0, 0).remaining(), 3);
        // A composite as `a` keeps its own pair.
        let outer = Composite::of(
            Composite::of(Gcra::new(&q("10/m")).unwrap(), FixedWindow::new(&q("20/h")).unwrap()),
            log,
        );
        let cell = outer.new_cell();
        let (_, receipt) = outer.check_with_receipt(&cell, 0, 1).unwrap();
        assert!(outer.refund(&cell, 0, 1, receipt));
        assert_eq!(outer.first().first().peek(cell.first().first(), 0, 0).remaining(), 10);
        assert_eq!(outer.first().second().peek(cell.first().second(), 0, 0).remaining(), 20);
    }

    #[test]
    fn gcra_refund_exact_when_untouched() {
        let a = Gcra::new(&Quota::per_second(3).unwrap()).unwrap();
        let b = FixedWindow::new(&Quota::per_second(1).unwrap()).unwrap();
        let c = Composite::of(a, b);
        let cell = c.new_cell();
        assert!(c.check(&cell, 0, 1).unwrap().is_allowed());
        for _ in 0..5 {
            assert!(!c.check(&cell, 0, 1).unwrap().is_allowed());
        }
        assert_eq!(c.first().peek(&cell.a, 0, 0).remaining(), 2);
    }
}
