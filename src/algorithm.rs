//! The [`Algorithm`] trait: what a limiter needs from a rate-limiting algorithm, and its GCRA
//! implementation. Each algorithm pairs a pure step (in `gcra.rs`, `window.rs`, …) with a
//! per-key cell updated only through `cell.rs`'s one CAS loop.

use std::fmt;

use crate::cell::{Retired, WordState};
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

    /// Parameters for `quota` that keep what `self` was configured with beyond its quota (a
    /// fixed window's wall-clock alignment): what [`KeyedLimiter::set_quota`](crate::KeyedLimiter::set_quota)
    /// builds a key's override with. The default is [`new`](Self::new); a
    /// [`Composite`](crate::window::Composite), which has a quota per sub-limit, refuses
    /// ([`QuotaError::Incompatible`]: override it with
    /// [`KeyedLimiter::set_algorithm`](crate::KeyedLimiter::set_algorithm)).
    ///
    /// ```
    /// use tollgate::{Algorithm, FixedWindow, Quota};
    /// let minute = FixedWindow::new(&"10/m".parse().unwrap()).unwrap().with_offset(20_000_000_000);
    /// let vip = minute.derive(&"100/m".parse().unwrap()).unwrap();
    /// assert_eq!((vip.offset(), vip.quota().burst()), (20_000_000_000, 100));
    /// ```
    fn derive(&self, quota: &Quota) -> Result<Self, QuotaError> {
        Self::new(quota)
    }

    /// Whether a cell built for `self` (a keyed limiter's default parameters) can be read with
    /// `other`'s (a key's override): the same packed layout, and a state idle under `self` is
    /// idle under `other` too, since a sweep judges every key by the default's parameters.
    /// [`KeyedLimiter::set_quota`](crate::KeyedLimiter::set_quota) accepts only compatible
    /// overrides, since a key's existing state carries over. GCRA: always; windows: the same
    /// length and alignment; a sliding log: the same limit and a window no longer than the
    /// default's (a longer one would count stamps a sweep may already have forgotten).
    fn compatible(&self, other: &Self) -> bool;

    /// The quota these parameters came from.
    fn quota(&self) -> Quota;

    /// The most cells one check can ever admit (larger costs are `InsufficientCapacity`).
    fn capacity(&self) -> u64;

    /// A fresh key's cell.
    fn new_cell(&self) -> Self::Cell;

    /// Checks `cost ≥ 1` cells at `now`, consuming them if allowed.
    fn check(&self, cell: &Self::Cell, now: Nanos, cost: u64) -> Result<Decision, Retired>;

    /// [`check`](Self::check), continued by `done(decision)`, or by `retired()` if the cell
    /// is retired, returning what they return. The default matches on `check`. An algorithm
    /// whose check has an out-of-line part overrides it so that part calls `done` or `retired`
    /// itself: its result then goes straight into the caller's (a decision passed back from an
    /// out-of-line call through a `Result` and matched here is written to memory and read back,
    /// which cost the sliding window ~4.7 ns per direct check, measured). The limiters call
    /// this; `check` is the same decision.
    ///
    /// ```
    /// use tollgate::{Algorithm, Gcra, Quota};
    /// let gcra = Gcra::new(&Quota::per_second(1).unwrap()).unwrap();
    /// let cell = gcra.new_cell();
    /// let remaining = gcra.check_then(&cell, 0, 1, |d| Some(d.remaining()), || None);
    /// assert_eq!(remaining, Some(0));
    /// ```
    #[inline]
    fn check_then<R>(
        &self,
        cell: &Self::Cell,
        now: Nanos,
        cost: u64,
        done: impl FnOnce(Decision) -> R,
        retired: impl FnOnce() -> R,
    ) -> R {
        match self.check(cell, now, cost) {
            Ok(decision) => done(decision),
            Err(Retired) => retired(),
        }
    }

    /// What a check of `cost` cells would decide at `now`, without consuming (`cost = 0`
    /// reports the current state). A retired cell is reported as fresh.
    fn peek(&self, cell: &Self::Cell, now: Nanos, cost: u64) -> Decision;

    /// What [`peek`](Self::peek) would report for a fresh cell (a key not in the table). The
    /// default builds a fresh cell; algorithms whose cells allocate override it.
    ///
    /// ```
    /// use tollgate::{Algorithm, Quota, SlidingLog};
    /// let log = SlidingLog::new(&Quota::per_second(3).unwrap()).unwrap();
    /// assert_eq!(log.peek_fresh(0, 1), log.peek(&log.new_cell(), 0, 1));
    /// ```
    fn peek_fresh(&self, now: Nanos, cost: u64) -> Decision {
        self.peek(&self.new_cell(), now, cost)
    }

    /// Returns the cell to its fresh state (a retired cell stays retired: the key is fresh).
    fn reset(&self, cell: &Self::Cell);

    /// Carries a key's state over to these parameters, when the key's parameters change from
    /// `previous` (a per-key override set, replaced or cleared:
    /// [`KeyedLimiter::set_algorithm`](crate::KeyedLimiter::set_algorithm)). `publish` makes
    /// the new parameters visible to checks; an implementation calls it exactly once, after
    /// reading the state it converts and before writing the conversion, and if the state moved
    /// in between (a check ran, under either parameters) it keeps the stricter of the two ways
    /// to read it, so that a racing check is never forgiven. `now` reads the limiter's clock;
    /// an implementation reads it after loading the state it converts (each CAS attempt), so
    /// the reading is no earlier than any racing check's whose write it sees.
    ///
    /// Known limits, for checks in flight during the change (loom-tests/tests/adopt.rs has a
    /// model of each, ignored): a check that read the old parameters but writes after the
    /// conversion applies them to the converted state (a fresh key moved from 1/h to 3/s can
    /// then be locked for up to the old hour; a spent one may admit one more check); and when
    /// tightening, checks under the new parameters between `publish` and the conversion judge
    /// the unconverted state (a spent 3/s key moved to 2/min admitted one more). Only checks
    /// in flight during the change do this; later ones see converted state and new parameters.
    ///
    /// The default only publishes: the state means the same under both (a window's count is a
    /// count under any limit). GCRA keeps how full the bucket is: its debt (`tat − now`) scaled
    /// by the ratio of the tolerances (burst × emission interval), rounded up. So a key moved
    /// from 10/min to 1000/s right after its 10 waits 1 ms for its next cell, not the old
    /// minute; one moved from 1000/s to 10/min after its 1000 waits 6 s; and moving a key to
    /// another quota and back gives it back its debt (rounded up), never a fresh bucket.
    ///
    /// ```
    /// use tollgate::{Algorithm, Gcra, Quota};
    /// let slow = Gcra::new(&Quota::per_minute(10).unwrap()).unwrap();
    /// let fast = Gcra::new(&Quota::per_second(1000).unwrap()).unwrap();
    /// let cell = slow.new_cell();
    /// assert!(slow.check(&cell, 0, 5).unwrap().is_allowed()); // half full: 30 s of 60 s
    /// fast.adopt(&cell, &slow, &|| 0, &mut || {}); // half full: 500 ms of 1 s
    /// assert_eq!(fast.check(&cell, 0, 1).unwrap().remaining(), 499);
    /// ```
    fn adopt(&self, cell: &Self::Cell, previous: &Self, now: &dyn Fn() -> Nanos, publish: &mut dyn FnMut()) {
        let _ = (cell, previous, now);
        publish();
    }

    /// Sweeper: retires the cell if it is indistinguishable from a fresh one at `now`.
    /// Returns `true` if this call retired it. The keyed store runs one sweep at a time, so
    /// this is never called concurrently for one cell (a composite's hold protocol relies on it).
    fn try_retire(&self, cell: &Self::Cell, now: Nanos) -> bool;

    /// Whether the cell has been retired (a pure read; safe in `remove_if` closures).
    fn is_retired(cell: &Self::Cell) -> bool;

    /// Checker side, on a retired cell: `true` if the caller inherits the cell's key-table slot
    /// (`max_keys` accounting; see `cell.rs`), `false` once the sweeper has freed it.
    fn take_over_slot(cell: &Self::Cell) -> bool;

    /// Sweeper side, on a retired cell: runs `free` (which decrements the live-key count) unless
    /// a checker inherited the slot. Returns whether `free` ran.
    fn free_slot(cell: &Self::Cell, free: &mut dyn FnMut()) -> bool;

    /// Composite eviction (see [`Composite`](crate::window::Composite)): the state of the
    /// cell's control word. The default knows only live and retired (no holds).
    ///
    /// ```
    /// use tollgate::{Algorithm, Gcra, Quota, WordState};
    /// let gcra = Gcra::new(&Quota::per_second(2).unwrap()).unwrap();
    /// assert_eq!(Gcra::word_state(&gcra.new_cell()), WordState::Live);
    /// ```
    fn word_state(cell: &Self::Cell) -> WordState {
        if Self::is_retired(cell) {
            WordState::Retired
        } else {
            WordState::Live
        }
    }

    /// Composite eviction, sweeper side: if the cell is idle at `now`, stashes its state in
    /// `stash` and holds it with `hold` (a value from the sweep). Returns whether it did. Called
    /// by one sweeper at a time per cell. The default never holds: a composite with such a
    /// sub-limit (a nested composite) is never evicted.
    ///
    /// ```
    /// use tollgate::{Algorithm, Composite, Gcra, Quota, SlidingLog};
    /// use std::sync::atomic::AtomicU64;
    /// let hold = 1 << 63 | 1 << 62;
    /// let log = SlidingLog::new(&Quota::per_second(2).unwrap()).unwrap();
    /// let cell = log.new_cell();
    /// assert!(log.try_hold(&cell, 0, hold, &AtomicU64::new(0))); // an idle ring is held
    /// let gcra = Gcra::new(&Quota::per_second(2).unwrap()).unwrap();
    /// let nested = Composite::of(gcra.clone(), gcra);
    /// assert!(!nested.try_hold(&nested.new_cell(), 0, hold, &AtomicU64::new(0)));
    /// ```
    fn try_hold(&self, cell: &Self::Cell, now: Nanos, hold: u64, stash: &AtomicU64) -> bool {
        let _ = (cell, now, hold, stash);
        false
    }

    /// Composite eviction, either side: restores the state stashed by the hold `held` (a value
    /// [`word_state`](Self::word_state) returned) if the word still holds it. Returns whether
    /// this call restored it.
    ///
    /// ```
    /// use tollgate::{Algorithm, Gcra, Quota};
    /// use std::sync::atomic::AtomicU64;
    /// let gcra = Gcra::new(&Quota::per_second(2).unwrap()).unwrap();
    /// assert!(!Gcra::release_hold(&gcra.new_cell(), 1 << 63 | 1 << 62, &AtomicU64::new(0)));
    /// ```
    fn release_hold(cell: &Self::Cell, held: u64, stash: &AtomicU64) -> bool {
        let _ = (cell, held, stash);
        false
    }

    /// Composite eviction, sweeper side: turns its hold `held` into the tombstone. Returns
    /// whether the cell is now retired.
    ///
    /// ```
    /// use tollgate::{Algorithm, Gcra, Quota};
    /// let gcra = Gcra::new(&Quota::per_second(2).unwrap()).unwrap();
    /// assert!(!Gcra::confirm_hold(&gcra.new_cell(), 1 << 63 | 1 << 62));
    /// ```
    fn confirm_hold(cell: &Self::Cell, held: u64) -> bool {
        let _ = (cell, held);
        false
    }

    /// Like [`check`](Self::check), and also returns a [`Receipt`] of what was stored, so a
    /// [`Composite`](crate::window::Composite) limit can [`refund`](Self::refund) it when a later
    /// sub-limit denies. The default returns an empty receipt (refunds are then not supported).
    ///
    /// ```
    /// use tollgate::{Algorithm, Gcra, Quota};
    /// let gcra = Gcra::new(&Quota::per_second(2).unwrap()).unwrap();
    /// let cell = gcra.new_cell();
    /// let (d, receipt) = gcra.check_with_receipt(&cell, 0, 1).unwrap();
    /// assert!(d.is_allowed());
    /// assert!(gcra.refund(&cell, 0, 1, receipt));
    /// assert_eq!(gcra.peek(&cell, 0, 0).remaining(), 2);
    /// ```
    fn check_with_receipt(
        &self,
        cell: &Self::Cell,
        now: Nanos,
        cost: u64,
    ) -> Result<(Decision, Receipt), Retired> {
        self.check(cell, now, cost).map(|d| (d, Receipt::NONE))
    }

    /// Gives back `cost` cells that an *allowed* [`check_with_receipt`](Self::check_with_receipt)
    /// took (same `cost`, its receipt), through the cell's CAS loop. Returns whether anything was
    /// given back. A refund never gives back more than was taken: where an exact undo is
    /// impossible it gives back nothing (conservative). The default supports no refunds.
    ///
    /// **Known limitation:** a refund recognizes its take by the word's value. If
    /// [`reset`](Self::reset) runs between the take and the refund and a later check then takes
    /// the same cells in the same window (the same TAT for GCRA), the word looks unchanged and
    /// the refund gives back that later check's cells: up to `cost` cells over-admitted, once,
    /// and only when a reset races a composite (or multi-rule) check that is being refunded. A
    /// one-word state has no room to also count resets; model:
    /// `loom-tests/tests/composite_review.rs` (ignored).
    fn refund(&self, cell: &Self::Cell, now: Nanos, cost: u64, receipt: Receipt) -> bool {
        let _ = (cell, now, cost, receipt);
        false
    }
}

/// What an allowed check stored, so that it can be refunded exactly (see
/// [`Algorithm::refund`]). Opaque; only meaningful to the algorithm and cell that issued it.
///
/// ```
/// assert_eq!(tollgate::Receipt::NONE, tollgate::Receipt::default());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Receipt {
    /// The state word the check stored (GCRA: the TAT; windows: the packed word; log: the
    /// first claimed position).
    pub(crate) stored: u64,
    /// Algorithm-specific extra (log: the slot value written, never 0); 0 when unused. In a
    /// [`Composite`](crate::window::Composite)'s paired receipt: the second take's `stored`.
    pub(crate) extra: u64,
    /// [`VALID`](Self::VALID), [`PAIRED`](Self::PAIRED), [`SECOND`](Self::SECOND), and above
    /// them the number of composites that kept only their first take ([`pair`](Self::pair)).
    flags: u8,
    /// The keyed limiter's override generation the take was made under (0: its default
    /// parameters); a refund under other parameters is refused. Unused by the algorithms.
    generation: u32,
}

// 24 bytes, as before the pair and the generation: a wider receipt cost a composite's plain
// check 20 instructions (callgrind), and receipts travel through every multi-rule request.
const _: () = assert!(std::mem::size_of::<Receipt>() == 24);

impl Receipt {
    /// No receipt: nothing to refund.
    pub const NONE: Receipt = Receipt { stored: 0, extra: 0, flags: 0, generation: 0 };
    /// A check stored something (not set for denials and the default implementation).
    const VALID: u8 = 1;
    /// A composite's receipt of two one-word takes: `stored` is the first's, `extra` the
    /// second's.
    const PAIRED: u8 = 2;
    /// In a paired receipt, the second take stored something.
    const SECOND: u8 = 4;
    /// One composite level that kept only its first take (the count is `flags >> 3`).
    const FIRST_ONLY: u8 = 8;

    pub(crate) const fn new(stored: u64, extra: u64) -> Receipt {
        Receipt { stored, extra, flags: Self::VALID, generation: 0 }
    }

    /// Whether a check stored anything.
    pub(crate) const fn valid(&self) -> bool {
        self.flags & Self::VALID != 0
    }

    /// This receipt, taken under the keyed limiter's override `generation`.
    pub(crate) const fn under(self, generation: u32) -> Receipt {
        Receipt { generation, ..self }
    }

    /// The override generation the take was made under (0: the default parameters).
    pub(crate) const fn generation(&self) -> u32 {
        self.generation
    }

    /// A leaf's receipt of one word: every single-word algorithm's (the log's `extra` is never
    /// 0), not a composite's.
    const fn one_word(&self) -> bool {
        self.extra == 0 && self.flags & !Self::VALID == 0
    }

    /// A composite's receipt of its two takes, in the same 24 bytes as a leaf's (a wider
    /// receipt cost the composite's plain check 20 instructions, callgrind). Two one-word
    /// takes (GCRA, the windows) fit; otherwise it is `first`'s receipt alone, marked so, and
    /// the second take (a sliding log's, whose receipt is two words, or a nested composite's)
    /// is not refunded: it keeps its cells, which never over-admits. Past 31 such levels
    /// nothing is refunded.
    pub(crate) const fn pair(first: Receipt, second: Receipt) -> Receipt {
        if first.one_word() && second.one_word() {
            let second_valid = if second.valid() { Self::SECOND } else { 0 };
            return Receipt {
                stored: first.stored,
                extra: second.stored,
                flags: first.flags | Self::PAIRED | second_valid,
                generation: 0,
            };
        }
        match first.flags.checked_add(Self::FIRST_ONLY) {
            Some(flags) => Receipt { flags, ..first },
            None => Receipt::NONE,
        }
    }

    /// The two takes of a composite's receipt, undoing [`pair`](Self::pair).
    pub(crate) const fn split(self) -> (Receipt, Receipt) {
        if self.flags >= Self::FIRST_ONLY {
            return (Receipt { flags: self.flags - Self::FIRST_ONLY, ..self }, Receipt::NONE);
        }
        if self.flags & Self::PAIRED == 0 {
            return (self, Receipt::NONE); // NONE (a denial), or not a composite's
        }
        let first = Receipt { stored: self.stored, extra: 0, flags: self.flags & Self::VALID, generation: 0 };
        let valid = if self.flags & Self::SECOND != 0 { Self::VALID } else { 0 };
        (first, Receipt { stored: self.extra, extra: 0, flags: valid, generation: 0 })
    }
}

/// The single-word algorithms (GCRA, fixed and sliding windows) share these: each supplies a pure
/// step on its `u64` state, and these apply it through the one CAS loop in `cell.rs`.
pub(crate) mod word {
    use super::Receipt;
    use crate::cell::{self, Retired, Step};
    use crate::decision::Decision;
    use crate::sync::AtomicU64;

    /// `step(state) → (decision, new state if it changes)`, applied atomically.
    #[inline]
    pub(crate) fn check(
        word: &AtomicU64,
        mut step: impl FnMut(u64) -> (Decision, Option<u64>),
    ) -> Result<Decision, Retired> {
        cell::update(word, |state| match step(state) {
            (decision, Some(new)) => Step::Store(new, decision),
            (decision, None) => Step::Keep(decision),
        })
    }

    /// As [`check`], also returning what a composite needs to refund the cells later.
    #[inline]
    pub(crate) fn check_with_receipt(
        word: &AtomicU64,
        mut step: impl FnMut(u64) -> (Decision, Option<u64>),
    ) -> Result<(Decision, Receipt), Retired> {
        cell::update(word, |state| match step(state) {
            (decision, Some(new)) => Step::Store(new, (decision, Receipt::new(new, 0))),
            (decision, None) => Step::Keep((decision, Receipt::NONE)),
        })
    }

    /// As [`check`], for a step split in two: `fast(state)` decides the common checks inline
    /// (`Some((decision, new state))`, returned as `taken(decision, new state)`), and a state
    /// it leaves to the rest (`None`: no store) is checked by `slow`, which loads the word
    /// again and runs the whole step out of line, through [`check`]. That is a CAS retry in all
    /// but name: the check applies the same `now` to a state at least as new. Kept apart, the
    /// common path's decision stays in registers; merged in one loop with an out-of-line
    /// step's (returned through memory), every check stored it to the stack and loaded it back
    /// (callgrind `sliding-cell`: 139 → 118 instructions per check).
    #[inline(always)]
    pub(crate) fn check_split<R>(
        word: &AtomicU64,
        mut fast: impl FnMut(u64) -> Option<(Decision, u64)>,
        taken: impl Fn(Decision, u64) -> R,
        slow: impl FnOnce() -> Result<R, Retired>,
    ) -> Result<R, Retired> {
        let common = cell::update(word, |state| match fast(state) {
            Some((decision, new)) => Step::Store(new, Some(taken(decision, new))),
            None => Step::Keep(None),
        })?;
        match common {
            Some(result) => Ok(result),
            None => slow(),
        }
    }

    /// [`check_split`] for [`Algorithm::check_then`]: the out-of-line part `slow` is handed
    /// `done` and `retired` and returns the final result, so neither path's decision is
    /// copied through a `Result`.
    #[inline(always)]
    pub(crate) fn check_split_then<R, D: FnOnce(Decision) -> R, T: FnOnce() -> R>(
        word: &AtomicU64,
        mut fast: impl FnMut(u64) -> Option<(Decision, u64)>,
        slow: impl FnOnce(D, T) -> R,
        done: D,
        retired: T,
    ) -> R {
        let common = cell::update(word, |state| match fast(state) {
            Some((decision, new)) => Step::Store(new, Some(decision)),
            None => Step::Keep(None),
        });
        match common {
            Ok(Some(decision)) => done(decision),
            Ok(None) => slow(done, retired),
            Err(Retired) => retired(),
        }
    }

    /// The state a peek judges: a retired cell reads as fresh (0).
    #[inline]
    pub(crate) fn peek_state(word: &AtomicU64) -> u64 {
        cell::load(word).unwrap_or(0)
    }

    /// Back to the fresh state; a retired cell is already fresh (the key gets a new cell).
    pub(crate) fn reset(word: &AtomicU64) {
        let _ = cell::update(word, |_| Step::Store(0, ()));
    }

    /// The `Algorithm` methods every single-word algorithm implements the same way, over its
    /// one word `$field`: checks, peeks and receipts through the one CAS loop, reset,
    /// retirement, slot hand-over and composite holds. The type provides
    /// `step(&self, state, now, cost) -> (Decision, Option<u64>)`; `$is_idle(self, state, now)`
    /// says whether a state is indistinguishable from a fresh one.
    macro_rules! single_word {
        // `split`: the type's step is split into `fast(state, now, cost) -> Option<(Decision,
        // u64)>` (inline) and `check_rest(&word, now, cost)` / `check_rest_with_receipt` (out
        // of line), checked through [`check_split`].
        ($field:ident, $is_idle:expr $(, $split:ident)?) => {
            #[inline]
            fn check(
                &self,
                cell: &Self::Cell,
                now: $crate::Nanos,
                cost: u64,
            ) -> Result<$crate::Decision, $crate::Retired> {
                $crate::algorithm::word::single_word!(@check self, cell.$field, now, cost $(, $split)?)
            }

            #[inline]
            fn check_with_receipt(
                &self,
                cell: &Self::Cell,
                now: $crate::Nanos,
                cost: u64,
            ) -> Result<($crate::Decision, $crate::algorithm::Receipt), $crate::Retired> {
                $crate::algorithm::word::single_word!(@receipt self, cell.$field, now, cost $(, $split)?)
            }

            $crate::algorithm::word::single_word!(@live self, $field $(, $split)?);

            $crate::algorithm::word::single_word!(@rest $field, $is_idle);
        };
        (@live $s:ident, $field:ident) => {};
        (@live $s:ident, $field:ident, split) => {
            #[inline]
            fn check_then<R>(
                &self,
                cell: &Self::Cell,
                now: $crate::Nanos,
                cost: u64,
                done: impl FnOnce($crate::Decision) -> R,
                retired: impl FnOnce() -> R,
            ) -> R {
                $crate::algorithm::word::check_split_then(
                    &cell.$field,
                    |state| self.fast(state, now, cost),
                    |done, retired| self.check_rest_then(&cell.$field, now, cost, done, retired),
                    done,
                    retired,
                )
            }
        };
        (@check $s:ident, $word:expr, $now:ident, $cost:ident) => {
            $crate::algorithm::word::check(&$word, |state| $s.step(state, $now, $cost))
        };
        (@check $s:ident, $word:expr, $now:ident, $cost:ident, split) => {
            $crate::algorithm::word::check_split(
                &$word,
                |state| $s.fast(state, $now, $cost),
                |decision, _| decision,
                || $s.check_rest(&$word, $now, $cost),
            )
        };
        (@receipt $s:ident, $word:expr, $now:ident, $cost:ident) => {
            $crate::algorithm::word::check_with_receipt(&$word, |state| $s.step(state, $now, $cost))
        };
        (@receipt $s:ident, $word:expr, $now:ident, $cost:ident, split) => {
            $crate::algorithm::word::check_split(
                &$word,
                |state| $s.fast(state, $now, $cost),
                |decision, new| (decision, $crate::algorithm::Receipt::new(new, 0)),
                || $s.check_rest_with_receipt(&$word, $now, $cost),
            )
        };
        (@rest $field:ident, $is_idle:expr) => {

            #[inline]
            fn peek(&self, cell: &Self::Cell, now: $crate::Nanos, cost: u64) -> $crate::Decision {
                self.step($crate::algorithm::word::peek_state(&cell.$field), now, cost).0
            }

            fn reset(&self, cell: &Self::Cell) {
                $crate::algorithm::word::reset(&cell.$field);
            }

            fn try_retire(&self, cell: &Self::Cell, now: $crate::Nanos) -> bool {
                $crate::cell::retire(&cell.$field, |state| ($is_idle)(self, state, now))
            }

            #[inline]
            fn is_retired(cell: &Self::Cell) -> bool {
                $crate::cell::is_retired(&cell.$field)
            }

            fn take_over_slot(cell: &Self::Cell) -> bool {
                $crate::cell::take_over_slot(&cell.$field)
            }

            fn free_slot(cell: &Self::Cell, free: &mut dyn FnMut()) -> bool {
                $crate::cell::free_slot(&cell.$field, free)
            }

            #[inline]
            fn word_state(cell: &Self::Cell) -> $crate::WordState {
                $crate::cell::word_state(&cell.$field)
            }

            fn try_hold(
                &self,
                cell: &Self::Cell,
                now: $crate::Nanos,
                hold: u64,
                stash: &$crate::sync::AtomicU64,
            ) -> bool {
                $crate::cell::hold(&cell.$field, stash, hold, |state| ($is_idle)(self, state, now))
            }

            fn release_hold(cell: &Self::Cell, held: u64, stash: &$crate::sync::AtomicU64) -> bool {
                $crate::cell::release_hold(&cell.$field, stash, held)
            }

            fn confirm_hold(cell: &Self::Cell, held: u64) -> bool {
                $crate::cell::confirm_hold(&cell.$field, held)
            }
        };
    }
    pub(crate) use single_word;

    /// Replaces the state by `refunded(state)` when that is `Some`; `true` if it did.
    pub(crate) fn refund(word: &AtomicU64, mut refunded: impl FnMut(u64) -> Option<u64>) -> bool {
        cell::update(word, |state| match refunded(state) {
            Some(new) => Step::Store(new, true),
            None => Step::Keep(false),
        })
        .unwrap_or(false)
    }
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
    #[inline]
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

    fn compatible(&self, _other: &Gcra) -> bool {
        true // a TAT means the same under any quota
    }

    fn adopt(&self, cell: &GcraCell, previous: &Gcra, now: &dyn Fn() -> Nanos, publish: &mut dyn FnMut()) {
        // The state before the new parameters are visible: written under `previous`.
        let before = crate::cell::load(&cell.tat);
        publish();
        if previous.params == self.params {
            return; // the same debt (converting would round a partly refilled cell up)
        }
        // Err(Retired): a retired or held cell is idle (`tat ≤ now`): nothing is owed.
        let _ = crate::cell::update(&cell.tat, |tat| {
            // Read after this attempt's load: no earlier than the clock reading of any check
            // whose write `tat` holds (it read its clock, then wrote, then we loaded).
            let now = now();
            let convert = |tat| gcra::adopted(tat, now, &previous.params, &self.params);
            let new = if Some(tat) == before {
                convert(tat) // unchanged since the read: a state of `previous`'s
            } else {
                // A check ran meanwhile, under either parameters: the stricter reading, capped
                // at a bucket spent under the new ones now. Every true reading is within the
                // cap (a new-parameter check's TAT ≤ its now + tolerance ≤ now + tolerance; an
                // old one's converts to at most that), so the cap only drops misreadings:
                // a new-parameter TAT scaled as an old one (review finding: 1000/s -> 1/h with
                // one racing check locked the key for 149 days) or an old TAT kept unscaled
                // (1/min -> 1000/s: locked for 59 s).
                let spent = now.saturating_add(self.params.tolerance);
                Some(convert(tat).map_or(tat, |c| c.max(tat)).min(spent))
            };
            match new {
                Some(new) if new != tat => crate::cell::Step::Store(new, ()),
                _ => crate::cell::Step::Keep(()),
            }
        });
    }

    fn quota(&self) -> Quota {
        self.quota
    }

    #[inline]
    fn capacity(&self) -> u64 {
        self.params.burst
    }

    word::single_word!(tat, |_: &Gcra, tat, now| gcra::is_idle(tat, now));

    #[inline]
    fn new_cell(&self) -> GcraCell {
        GcraCell::fresh()
    }

    /// GCRA refund: `TAT −= cost·T` only if the TAT is still exactly what the check stored. A
    /// TAT that moved since was built on top of this check's cells by a max-plus recurrence
    /// that cannot be inverted safely (a check in between may have restarted from `now`), so
    /// then nothing is refunded: never over-admits, may under-admit by `cost` cells.
    fn refund(&self, cell: &GcraCell, _now: Nanos, cost: u64, receipt: Receipt) -> bool {
        if !receipt.valid() {
            return false;
        }
        let taken = cost.saturating_mul(self.params.emission_interval);
        let stored = receipt.stored;
        word::refund(&cell.tat, |tat| (tat == stored && tat >= taken).then(|| tat - taken))
    }
}

#[cfg(test)]
mod tests {
    use super::Receipt;

    /// `split` undoes `pair` at every nesting: two one-word takes share one receipt; a take
    /// that does not fit is dropped (NONE) without disturbing the first's own pair below it.
    #[test]
    fn receipts_pair_and_split_back() {
        let (a, b, log) = (Receipt::new(7, 0), Receipt::new(9, 0), Receipt::new(3, 5));
        assert_eq!(Receipt::pair(a, b).split(), (a, b));
        assert_eq!(Receipt::pair(a, Receipt::NONE).split(), (a, Receipt::NONE));
        assert_eq!(Receipt::pair(a, log).split(), (a, Receipt::NONE));
        assert_eq!(Receipt::pair(log, a).split(), (log, Receipt::NONE));
        let inner = Receipt::pair(a, b);
        assert_eq!(Receipt::pair(a, inner).split(), (a, Receipt::NONE));
        let mut nested = inner;
        for _ in 0..31 {
            nested = Receipt::pair(nested, log);
        }
        for _ in 0..31 {
            let (first, second) = nested.split();
            assert_eq!(second, Receipt::NONE);
            nested = first;
        }
        assert_eq!(nested.split(), (a, b));
        assert_eq!(Receipt::pair(Receipt::pair(inner, log).split().0, b).split().0, inner);
        let deep = (0..32).fold(inner, |r, _| Receipt::pair(r, log));
        assert_eq!(deep, Receipt::NONE); // past 31 levels nothing is refunded
        assert_eq!(Receipt::NONE.split(), (Receipt::NONE, Receipt::NONE));
    }
}
