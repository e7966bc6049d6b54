//! Packed atomic cells: the one generic CAS loop, and tombstones (DESIGN.md §4, §6).
//! This is the only module that chooses memory orderings for limiter state.
//!
//! # The word
//!
//! Every single-word algorithm keeps its whole per-key state in one `AtomicU64`:
//!
//! ```text
//! bit 63      : no live state: TOMBSTONE (retired, its key-table slot not yet handed back),
//!               RELEASING/RELEASED (slot being / handed back), or, with bit 62, a HOLD (a
//!               composite's sweep in progress; see "Holds" below)
//! bits 62..0  : algorithm state (GCRA: TAT in ns; windows: their packed counters)
//! ```
//!
//! # Why `Relaxed` is enough for admission
//!
//! A check is a read-modify-write of one word. The CAS succeeds only against the latest value in
//! the word's modification order, so two checks can never both spend the same capacity, whatever
//! the orderings. The word publishes no other memory, so no check needs to see other writes in
//! order with it: the successful CAS is `Relaxed`.
//!
//! # Why tombstones use `Release`/`Acquire`
//!
//! The sweeper reads the clock, decides a key is idle (`state ≤ now`), and CASes the word to
//! TOMBSTONE with `Release`. A checker that then sees TOMBSTONE (its load or failed CAS is
//! `Acquire`) re-reads the clock before making a fresh cell. The Release/Acquire pair orders the
//! sweeper's clock read before the checker's re-read, so with a clock that is a single atomic
//! (`ManualClock`) the checker's new `now` is at least the sweeper's: the fresh cell is judged at a
//! time when the old state had already expired, and eviction changes no decision. On x86-64 the
//! Acquire loads cost nothing extra; on AArch64 they are `ldar` instead of `ldr`.

use crate::sync::{spin_hint, AtomicU64, Ordering};

/// The tombstone: a retired cell. Never revived; a fresh cell replaces it in the map.
pub(crate) const TOMBSTONE: u64 = 1 << 63;

/// A retired cell whose key-table slot has been handed on (freed by the sweeper, or inherited
/// by a checker re-inserting the key); see [`take_over_slot`] and [`free_slot`].
pub(crate) const RELEASED: u64 = TOMBSTONE | 1;

/// A retired cell whose slot the sweeper is freeing right now (between two of its instructions).
pub(crate) const RELEASING: u64 = TOMBSTONE | 2;

/// The largest live state any algorithm may store.
pub(crate) const MAX_STATE: u64 = TOMBSTONE - 1;

/// The cell was retired by the sweeper: drop it and look the key up again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retired;

/// What a pure step wants done with the word.
#[derive(Debug)]
pub(crate) enum Step<R> {
    /// Replace the state with the first value (if the word is unchanged since it was read).
    Store(u64, R),
    /// Leave the state as it is (a denial, a peek, or a no-op).
    Keep(R),
}

/// The one CAS loop (DESIGN.md §4): `load → step(state) → compare_exchange_weak`, retrying from
/// the value a failed CAS returns. A `Keep` performs no store. Returns `Err(Retired)` if the word
/// is (or becomes) the tombstone.
#[inline]
pub(crate) fn update<R>(word: &AtomicU64, mut step: impl FnMut(u64) -> Step<R>) -> Result<R, Retired> {
    // Acquire: pairs with the sweeper's Release in `retire` (module docs); for live states it
    // is only a plain load on x86-64.
    let mut current = word.load(Ordering::Acquire);
    loop {
        if current >= TOMBSTONE {
            return Err(Retired);
        }
        match step(current) {
            Step::Keep(result) => return Ok(result),
            Step::Store(new, result) => {
                debug_assert!(new <= MAX_STATE, "state {new:#x} collides with the tombstone bit");
                // Success Relaxed: atomicity alone prevents double-spending (module docs).
                // Failure Acquire: we may have lost to the sweeper's Release tombstone.
                match word.compare_exchange_weak(current, new, Ordering::Relaxed, Ordering::Acquire) {
                    Ok(_) => return Ok(result),
                    // Retry at once from the value we were handed: no `pause`. A failed CAS
                    // means another check just succeeded, so there is progress to build on,
                    // and a `pause` (~40 ns on recent x86) only lengthens the tail.
                    Err(actual) => current = actual,
                }
            }
        }
    }
}

/// Reads the state for a peek; `None` if retired (the key is then fresh).
#[inline]
pub(crate) fn load(word: &AtomicU64) -> Option<u64> {
    // Acquire: pairs with the sweeper's Release tombstone (and a HOLD's stash write), as in
    // `update`. A peek reads its clock before the lookup, so it may report a just-retired or
    // held key as fresh at a slightly earlier `now`: a report, never an admission.
    let state = word.load(Ordering::Acquire);
    (state < TOMBSTONE).then_some(state)
}

/// Sweeper side: tombstones the word if `is_idle(state)`. Returns `true` if this call retired it
/// (exactly one call per cell ever does).
pub(crate) fn retire(word: &AtomicU64, is_idle: impl Fn(u64) -> bool) -> bool {
    // Relaxed: the value only feeds the CAS below, which re-validates it.
    let mut current = word.load(Ordering::Relaxed);
    loop {
        if current >= TOMBSTONE || !is_idle(current) {
            return false;
        }
        // Release on success: orders this sweep's clock read before any checker that observes
        // the tombstone with Acquire (module docs). Relaxed on failure: we only retry.
        match word.compare_exchange_weak(current, TOMBSTONE, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(actual) => current = actual,
        }
    }
}

/// Whether the word is the tombstone. A pure test of the word, so it is safe in papaya's
/// `remove_if` closure, which may run more than once.
#[inline]
pub(crate) fn is_retired(word: &AtomicU64) -> bool {
    // Acquire: a checker that sees the tombstone is about to re-read the clock (module docs).
    word.load(Ordering::Acquire) >= TOMBSTONE
}

// Key-table slots (`max_keys`). A live key holds one slot of the store's live-key counter.
// When its cell is retired, exactly one party hands that slot on, decided by a CAS on the word:
// - a checker that finds its key retired *inherits* the slot (TOMBSTONE → RELEASED) and
//   re-inserts the key without reserving a new one, so an existing key is never refused for a
//   full table;
// - otherwise the sweeper *frees* it (TOMBSTONE → RELEASING, decrement, → RELEASED).
// A checker that meets RELEASING waits for RELEASED (two instructions of the sweeper); its
// Acquire read of RELEASED makes the decrement happen-before its own reservation. Without this
// hand-over, a checker could re-insert between the sweeper's tombstone and its decrement and be
// refused (found by loom-tests/tests/sweeper.rs).

/// Checker side, on a retired cell: `true` if the caller inherited the cell's slot (it must
/// then re-insert the key without reserving); `false` once the slot has been freed.
pub(crate) fn take_over_slot(word: &AtomicU64) -> bool {
    loop {
        // Acquire (both outcomes): on RELEASED, pairs with the Release store in `free_slot`, so
        // the sweeper's decrement is visible to (ordered before) our coming reservation.
        match word.compare_exchange(TOMBSTONE, RELEASED, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => return true,
            Err(RELEASING) => spin_hint(),
            Err(_) => return false, // RELEASED (or, defensively, a live state: nothing to take)
        }
    }
}

/// Sweeper side, on a cell it found retired: frees the slot with `free` unless a checker
/// inherited it. Returns `true` if `free` ran.
pub(crate) fn free_slot(word: &AtomicU64, free: impl FnOnce()) -> bool {
    // Relaxed: claiming the one-time token; the CAS's atomicity alone decides the winner.
    if word.compare_exchange(TOMBSTONE, RELEASING, Ordering::Relaxed, Ordering::Relaxed).is_err() {
        return false;
    }
    free();
    // Release: publishes the decrement done by `free` to checkers that Acquire RELEASED.
    word.store(RELEASED, Ordering::Release);
    true
}

// ---------------------------------------------------------------------------------------------
// Holds: retiring a cell made of several words (a composite of single-word limits) all or
// nothing. The sweeper first *holds* each word: it stashes the word's idle value in a side word
// of the composite cell, then CASes the word to a HOLD value (tombstone-class, so no check can
// consume through it). Once every word is held, one CAS of the first word from its HOLD to
// TOMBSTONE retires the whole cell; if any word is busy, the sweeper restores what it held. A
// checker that meets a HOLD restores the stashed value (the exact pre-hold state, so no
// decision depends on when it does) and carries on: checkers never wait for the sweeper. Every
// conflict between the sweeper and a checker is a CAS on the same word, and each sweep's holds
// carry a unique tag, so a stale restore can never hit a later sweep's hold. The protocol and
// its proof are in window/composite.rs; the model is loom-tests/tests/windows.rs.

/// Set (with the tombstone bit) in every HOLD value; the low 62 bits are the sweep's tag.
const HOLD_BIT: u64 = 1 << 62;

/// What a word of a multi-word cell holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WordState {
    /// A live state: checks consume through it.
    Live,
    /// A sweep in progress holds it; the value is the HOLD (with its tag) to restore from.
    Held(u64),
    /// Retired for good (TOMBSTONE, or after its key-table slot was handed on).
    Retired,
}

/// A fresh, never-before-used HOLD value (a per-process counter: 2⁶² sweeps of one word before
/// a tag repeats).
pub(crate) fn next_hold() -> u64 {
    // A std atomic even under loom: it only numbers sweeps (uniqueness needs atomicity alone)
    // and synchronizes nothing. Relaxed for the same reason.
    static TAGS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    TOMBSTONE | HOLD_BIT | (TAGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) & (HOLD_BIT - 1))
}

/// Classifies a word of a multi-word cell.
#[inline]
pub(crate) fn word_state(word: &AtomicU64) -> WordState {
    // Acquire: a HOLD seen here must come with the sweeper's stash write (published by the
    // Release of its hold CAS), and TOMBSTONE with its clock read (module docs).
    let value = word.load(Ordering::Acquire);
    if value < TOMBSTONE {
        WordState::Live
    } else if value & HOLD_BIT != 0 {
        WordState::Held(value)
    } else {
        WordState::Retired
    }
}

/// Sweeper side: holds the word with `hold` if its state is idle, stashing that state first.
/// Returns whether it did. One sweeper at a time per cell (the stash has one writer).
pub(crate) fn hold(word: &AtomicU64, stash: &AtomicU64, hold: u64, is_idle: impl Fn(u64) -> bool) -> bool {
    // Relaxed: the value only feeds the CAS below, which re-validates it.
    let mut current = word.load(Ordering::Relaxed);
    loop {
        if current >= TOMBSTONE || !is_idle(current) {
            return false;
        }
        // Relaxed: published by the Release of the CAS below to whoever sees the HOLD.
        stash.store(current, Ordering::Relaxed);
        // Release on success: publishes the stash (and orders this sweep's clock read, as for
        // `retire`) to any checker that Acquires the HOLD. Relaxed on failure: we only retry.
        match word.compare_exchange_weak(current, hold, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(actual) => current = actual,
        }
    }
}

/// Either side: puts back the stashed state if the word still holds `held` (a HOLD observed
/// with `word_state`, which ordered the stash write before this read). Returns whether this
/// call restored it. A later sweep's hold has another tag, so a stale `held` fails here.
pub(crate) fn release_hold(word: &AtomicU64, stash: &AtomicU64, held: u64) -> bool {
    // Relaxed: ordered after the stash write by the Acquire that observed `held`; a newer stash
    // write belongs to a later hold, whose different tag makes the CAS below fail.
    let restored = stash.load(Ordering::Relaxed);
    // Relaxed: restores the exact state that was held; it publishes nothing new, and a checker
    // that then consumes validates it with its own CAS.
    word.compare_exchange(held, restored, Ordering::Relaxed, Ordering::Relaxed).is_ok()
}

/// Sweeper side: turns its own HOLD into TOMBSTONE. Returns whether the cell is now retired
/// (`false`: a checker restored the word first).
pub(crate) fn confirm_hold(word: &AtomicU64, held: u64) -> bool {
    // Release on success: as `retire` (module docs). Relaxed on failure: nothing to read.
    word.compare_exchange(held, TOMBSTONE, Ordering::Release, Ordering::Relaxed).is_ok()
}

// ---------------------------------------------------------------------------------------------
// Multi-word cells (the sliding log, DESIGN.md §4): a head word updated only through `update`
// and `retire` above, plus a ring of slot words that hold timestamps. Every slot value is
// self-describing (a lap tag and a stamp), and every way a reader can see a stale slot value
// only makes its judgment stricter (an older lap reads as "claim still being written", an
// older stamp as "still in the window"): so slot accesses need no ordering beyond the slot's
// own coherence, and are `Relaxed`. The head CAS alone decides who owns which slots.
//
// The lap tag is the lap mod 4, so "an older lap" holds for values one to three laps stale. A
// value exactly four (or 4k) laps stale would carry a matching tag and an older stamp, and read
// as expired: looser, not stricter. Nothing in the language's memory model forbids a Relaxed
// load from returning it (the slot's store is not ordered before the head value the reader
// acquired), so this rests on a hardware fact, not on the model: on coherent caches (x86, and
// ARMv8, which is other-multi-copy-atomic) a load does not return a value that 4·limit later
// head CASes, each a full round trip on the head's line, have long since overwritten. Loom
// cannot reach four laps in a model; a wider tag would cost stamp bits.

/// Reads a ring slot.
#[inline]
pub(crate) fn load_slot(slot: &AtomicU64) -> u64 {
    // Relaxed: a stale value only makes the reader stricter (see above); the decision that
    // spends capacity is validated by the head CAS, not by this read.
    slot.load(Ordering::Relaxed)
}

/// Reads a sliding log's boundary hint (where its last search ended).
#[inline]
pub(crate) fn load_hint(hint: &AtomicU64) -> u64 {
    // Relaxed: the hint only says where a search starts. Every position it leads to is read
    // and judged like any other (a slot's lap tag and stamp), so any value, however stale,
    // gives the same search result on a sorted ring; it orders and publishes nothing.
    hint.load(Ordering::Relaxed)
}

/// Writes a sliding log's boundary hint.
#[inline]
pub(crate) fn store_hint(hint: &AtomicU64, value: u64) {
    // Relaxed: see `load_hint`. Racing writers leave one of their values: each is a position
    // some search found, and a wrong one costs the next search a few reads, nothing else.
    hint.store(value, Ordering::Relaxed);
}

/// Writes a slot this thread owns (it won the head CAS for that position).
#[inline]
pub(crate) fn store_slot(slot: &AtomicU64, value: u64) {
    // Relaxed: the value is self-describing and publishes no other memory; until readers see
    // it they treat the position as still being written, which is stricter (see above).
    slot.store(value, Ordering::Relaxed);
}

/// Replaces a slot's value only if it is still `current` (one attempt, no loop: used to expire
/// a stamp on refund/reset, which must not overwrite a newer claim). Returns whether it did.
#[inline]
pub(crate) fn replace_slot(slot: &AtomicU64, current: u64, new: u64) -> bool {
    // Relaxed: as for `store_slot`; the CAS only guards against overwriting a newer claim.
    slot.compare_exchange(current, new, Ordering::Relaxed, Ordering::Relaxed).is_ok()
}
