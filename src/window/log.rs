//! Sliding log (exact): a bounded ring of timestamps per key with a lock-free claim protocol.

use std::fmt;

use crate::algorithm::{Algorithm, Receipt};
use crate::cell::{self, Retired, Step, WordState};
use crate::clock::Nanos;
use crate::decision::Decision;
use crate::quota::{Quota, QuotaError};
use crate::sync::{spin_hint, AtomicU64};

/// The largest limit a [`SlidingLog`] accepts: its ring alone costs `8 · limit` bytes per key
/// (32 KiB at this cap; the whole per-key cost is [`SlidingLog::bytes_per_key`]). Larger limits are [`QuotaError::TooLarge`]; use a
/// [`SlidingWindow`](super::SlidingWindow) for them.
pub const MAX_LOG_LIMIT: u64 = 4096;

/// Slot value layout (slots are not tombstone words: all 64 bits are ours).
const LAP_SHIFT: u32 = 62;
const STAMP_MASK: u64 = (1 << LAP_SHIFT) - 1;

/// Head word layout: the ring index in the low bits (`MAX_LOG_LIMIT` = 2¹²), the lap above.
const INDEX_BITS: u32 = 12;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
const _: () = assert!(MAX_LOG_LIMIT <= 1 << INDEX_BITS);
/// Laps from here on fold back (see `SlidingLog::head_of`); `LAP_FOLD << INDEX_BITS` < 2⁶³.
const LAP_FOLD: u64 = 1 << 50;

/// `free_positions` gallops back from the newest claim this far before it guesses.
const NEAR_NEWEST: u64 = 8;

/// How many times a check re-reads a position whose claim is still being written (a few
/// instructions on another thread) before it gives up and denies (conservatively).
const PENDING_RETRIES: u32 = 64;

/// Sliding log: exact "at most `limit` cells in any window of length `W`", with
/// `limit = quota.count()` (at most [`MAX_LOG_LIMIT`]) and `W = quota.period()`.
///
/// # Memory
///
/// Per key, allocated when the key is first seen: the cell (the head word, the search's
/// boundary hint and the ring's pointer and length, 32 bytes, inside the key table's entry
/// beside the key) and the ring, a second allocation of `limit` `u64` slots: `8 · limit + 32`
/// bytes of state
/// ([`SlidingLog::bytes_per_key`]). The key table adds its own per-key cost on top (the key,
/// a table slot, the allocator's headers of both allocations).
///
/// # State and claim protocol
///
/// ```text
/// head            : the next claim's position x = lap·L + index, packed as
///                   bits 62..12 = lap, bits 11..0 = index (< L ≤ 4096), so a check finds its
///                   ring index without dividing; bit 63 is the cell's TOMBSTONE
/// slot[x mod L]   : the claim with sequence number x:
///                   bits 63..62 = lap ⌊x / L⌋ mod 4,
///                   bits 61..0  = 0: not written yet, 1: expired (refund/reset), t + 2: stamp t
/// ```
///
/// A check of `n` cells at `now` reads `h`, then the slots of the claims it would overwrite,
/// `x − L` for `x` in `h .. h+n` (none while `x < L`). It admits iff each of them carries the
/// lap of `x − L` (the claim has been written) and its stamp is `≤ now − W` (expired). The
/// admission is the CAS `head: h → h + n` (through `cell::update`; packed as above), which makes the `n`
/// positions this thread's; it then writes their stamps. A slot whose lap is older belongs to
/// a claim that won its CAS but has not written yet: the checker re-reads (bounded) and, if it
/// is still unwritten, denies — conservative, never over-admitting. A denial is returned only if
/// `head` is unchanged after the slots were read (so the slots it judged belong to that head).
///
/// Stamps are `max(now, newest stamp)`, so the ring stays sorted and a clock that went back
/// never records a stamp that would expire early; expiry is judged at the real `now`
/// (stricter). `remaining` is found by binary search over the sorted ring. A refund expires
/// stamps in the middle of the ring, which then is no longer sorted: until those positions are
/// reused, an admission's `remaining` may be off in either direction (admissions themselves
/// stay exact, judged on the slots they overwrite). A denial never reports more than the
/// positions it found free ahead of the head before the first claim still in the window (so a
/// denied unit cost reports 0).
///
/// ```
/// use std::time::Duration;
/// use tollgate::{Algorithm, Limiter, ManualClock, Quota, SlidingLog};
///
/// let clock = ManualClock::new();
/// let log = SlidingLog::new(&Quota::per_second(2).unwrap()).unwrap();
/// let limiter = Limiter::with_algorithm(log, clock.clone());
/// assert!(limiter.check().is_allowed());            // t = 0
/// clock.advance(Duration::from_millis(600));
/// assert!(limiter.check().is_allowed());            // t = 0.6 s
/// clock.advance(Duration::from_millis(600));
/// assert!(limiter.check().is_allowed());            // t = 1.2 s: the stamp at 0 expired
/// let d = limiter.check();
/// assert!(!d.is_allowed());                         // 0.6 and 1.2 are within the last second
/// assert_eq!(d.retry_after(), Some(Duration::from_millis(400)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlidingLog {
    quota: Quota,
    window: Nanos,
    limit: u64,
}

/// A sliding-log cell: the head word, the search's boundary hint and the ring of stamps.
pub struct SlidingLogCell {
    head: AtomicU64,
    /// Where the last search for `remaining` found the window's oldest claim (a head word,
    /// `SlidingLog::head_of`): the next search starts there. Only a hint: any value gives the
    /// same `remaining` on a sorted ring, since every position it leads to is read and checked.
    boundary: AtomicU64,
    slots: Box<[AtomicU64]>,
}

impl fmt::Debug for SlidingLogCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlidingLogCell").field("slots", &self.slots.len()).finish_non_exhaustive()
    }
}

/// What judging a head value found.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(test, derive(PartialEq, Eq))]
enum Judged {
    Admit {
        stamp: Nanos,
        decision: Decision,
        /// Where the claim starts (the judged head's position).
        h: At,
    },
    Deny(Decision),
    /// A claim this check depends on has not written its stamp yet.
    Pending,
}

impl SlidingLog {
    /// Parameters for `quota`; `TooLarge` above [`MAX_LOG_LIMIT`]. Same as [`Algorithm::new`].
    ///
    /// ```
    /// use tollgate::{Quota, QuotaError, SlidingLog};
    /// assert!(SlidingLog::from_quota(Quota::per_minute(100).unwrap()).is_ok());
    /// assert!(matches!(
    ///     SlidingLog::from_quota(Quota::per_minute(5000).unwrap()),
    ///     Err(QuotaError::TooLarge { max: 4096, .. })
    /// ));
    /// ```
    pub fn from_quota(quota: Quota) -> Result<SlidingLog, QuotaError> {
        let limit = super::window_limit(&quota)?;
        if limit > MAX_LOG_LIMIT {
            return Err(QuotaError::TooLarge { what: "sliding-log limit", value: limit, max: MAX_LOG_LIMIT });
        }
        Ok(SlidingLog { quota, window: quota.period_nanos(), limit })
    }

    /// Bytes of limiter state per key: the cell (head word, boundary hint, ring pointer and
    /// length) and the ring, `8 · limit + 32`; excludes the key table's own cost (key, slot,
    /// allocator headers).
    ///
    /// ```
    /// use tollgate::{Quota, SlidingLog};
    /// let log = SlidingLog::from_quota(Quota::per_second(100).unwrap()).unwrap();
    /// assert_eq!(log.bytes_per_key(), 8 * 100 + 16 + 16);
    /// ```
    pub fn bytes_per_key(&self) -> usize {
        std::mem::size_of::<SlidingLogCell>() + 8 * self.len()
    }

    fn len(&self) -> usize {
        // limit ≤ MAX_LOG_LIMIT, so this never truncates.
        usize::try_from(self.limit).unwrap_or(usize::MAX)
    }

    /// Window length `W` in ns.
    pub fn window_nanos(&self) -> Nanos {
        self.window
    }

    /// The position a head word holds (see the type docs): no division. Neighbours are found
    /// by `forward` and `back`, without dividing either (a check used to divide per slot it
    /// read, then twice per check: a 64-bit division is 14–40 cycles on x86-64).
    #[inline]
    fn at(head: u64) -> At {
        At { lap: head >> INDEX_BITS, index: head & INDEX_MASK }
    }

    /// The head word for position `a` (`a.index < limit`). Only `lap mod 4` (the slot tags)
    /// and `lap > 0` (the ring has been filled) matter, so a lap past 2⁵⁰ folds back to
    /// `4 + lap mod 4`: the word never reaches the tombstone bit, however many claims a key
    /// makes (2⁵¹ claims of a limit-1 log would take weeks at 10⁹ a second).
    #[inline]
    fn head_of(a: At) -> u64 {
        let lap = if a.lap >= LAP_FOLD { 4 | (a.lap & 3) } else { a.lap };
        (lap << INDEX_BITS) | a.index
    }

    /// How many positions before `h` were ever claimed, up to `limit` (the ring's written part).
    #[inline]
    fn used(&self, h: At) -> u64 {
        if h.lap > 0 {
            self.limit
        } else {
            h.index
        }
    }

    /// The position `k ≤ limit` claims after `a`.
    #[inline]
    fn forward(&self, a: At, k: u64) -> At {
        let index = a.index + k;
        if index >= self.limit {
            At { lap: a.lap + 1, index: index - self.limit }
        } else {
            At { lap: a.lap, index }
        }
    }

    /// The position `k ≤ limit` claims before `a` (which must be at least `k`).
    #[inline]
    fn back(&self, a: At, k: u64) -> At {
        if a.index >= k {
            At { lap: a.lap, index: a.index - k }
        } else {
            At { lap: a.lap.wrapping_sub(1), index: a.index + self.limit - k }
        }
    }

    /// Whether `cell` was built for this limit (its ring has `limit` slots): only then do its
    /// head's packed positions index its ring.
    #[inline]
    fn owns(&self, cell: &SlidingLogCell) -> bool {
        cell.slots.len() as u64 == self.limit
    }

    #[inline]
    fn slot<'c>(&self, cell: &'c SlidingLogCell, a: At) -> &'c AtomicU64 {
        // `a.index < limit = slots.len()`; `get` keeps an out-of-range index (impossible) from
        // panicking: it reads slot 0, which can only make the judgment stricter or pending.
        let i = usize::try_from(a.index).unwrap_or(0);
        cell.slots.get(i).unwrap_or(&cell.slots[0])
    }

    #[inline]
    fn slot_value(&self, a: At, stamp: Nanos) -> u64 {
        ((a.lap & 3) << LAP_SHIFT) | (stamp.min(STAMP_MASK - 2) + 2)
    }

    #[inline]
    fn stamp_of(&self, cell: &SlidingLogCell, a: At) -> Result<Option<Nanos>, ()> {
        let value = cell::load_slot(self.slot(cell, a));
        let field = value & STAMP_MASK;
        if value >> LAP_SHIFT != a.lap & 3 || field == 0 {
            return Err(());
        }
        Ok((field >= 2).then(|| field - 2))
    }

    #[inline]
    fn expired(&self, cell: &SlidingLogCell, a: At, now: Nanos) -> bool {
        self.expired_read(self.stamp_of(cell, a), now)
    }

    /// Whether a claim read by `stamp_of` is out of the window at `now`: expired stamps and
    /// refunded or reset claims are; a claim still being written (`Err`) is not (its stamp
    /// will be about `now`).
    #[inline]
    fn expired_read(&self, read: Result<Option<Nanos>, ()>, now: Nanos) -> bool {
        match read {
            Ok(Some(t)) => t.saturating_add(self.window) <= now,
            Ok(None) => true,
            Err(()) => false,
        }
    }

    /// Free positions for the next claims after `h`: `limit` minus the claims still in the
    /// window. Stamps are sorted, so those are the newest `k`. Two cases cost a slot read or
    /// two: a key far below its limit (`k = 0`: the newest claim expired), and a key at its
    /// limit (the oldest claim still in the window, so every position is held: the steady state
    /// of a client being limited). A unit-cost check settles both itself (`judge_unit`) and
    /// comes here only for the rest. There it gallops back from the newest claim (2, 4, 8
    /// positions back: adjacent, cache-hot slots), which settles a key with few claims in the
    /// window; past [`NEAR_NEWEST`] it guesses the boundary by interpolating between the newest
    /// and the oldest stamp (exact for evenly spaced claims, the steady state of a busy key) and
    /// gallops from the guess; then it bisects. O(log e) reads for a guess `e` positions off.
    /// For limit 100 at half its rate (`k` = 49): 7 reads where galloping alone took 13
    /// (callgrind, the `instructions` example's `log100-cell`: 953 → 560 instructions a check;
    /// criterion `log100/cell` 74–80 → 54–70 ns, `log100/direct` 51–71 → 45–49 ns, interleaved).
    /// Before all that it tries the cell's boundary hint, where the previous search ended: a key
    /// checked at a steady pace finds its boundary one or two reads from there (`log100-cell`
    /// 560 → 401 instructions; criterion, three interleaved rounds, medians: `log100/cell`
    /// 41.1 → 25.2 ns, `log100/direct` 44.0 → 42.1 ns, 1 key 55.8 → 51.2 ns).
    /// On a sorted ring every order of reads finds the same `k`, from any hint.
    #[inline]
    fn free_positions(&self, cell: &SlidingLogCell, h: At, now: Nanos) -> u64 {
        let used = self.used(h);
        if used == 0 {
            return self.limit;
        }
        let newest = self.stamp_of(cell, self.back(h, 1));
        let oldest = self.stamp_of(cell, self.back(h, used));
        self.free_positions_read(cell, h, now, newest, oldest)
    }

    /// `free_positions` given its first two reads (which a unit check has made already): the
    /// newest claim's stamp, `h − 1`, and the oldest's, `h − used` (`used ≥ 1`).
    #[inline]
    fn free_positions_read(
        &self,
        cell: &SlidingLogCell,
        h: At,
        now: Nanos,
        newest: Result<Option<Nanos>, ()>,
        oldest: Result<Option<Nanos>, ()>,
    ) -> u64 {
        let used = self.used(h);
        // in_window(j): claim `h − j` (1 ≤ j ≤ used) is still in the window; true exactly for
        // j ≤ k.
        let in_window = |j: u64| !self.expired(cell, self.back(h, j), now);
        if self.expired_read(newest, now) {
            return self.limit;
        }
        if !self.expired_read(oldest, now) {
            return self.limit - used;
        }
        // in_window(lo) and !in_window(hi): 1 ≤ k < used.
        let (mut lo, mut hi) = (1, used);
        let hint = cell::load_hint(&cell.boundary);
        if let Some(j) = self.hinted(hint, h, used) {
            // Where the last search ended: on a key checked at a steady pace the boundary
            // moves by about as many positions as were claimed since, so the claim found then
            // is one or two reads from the one sought now.
            (lo, hi) = gallop_from(j, lo, hi, in_window);
        } else {
            // Gallop back from the newest: a few reads of adjacent, cache-hot slots settle a
            // key with few claims in the window (a float division would cost more than they
            // do). Past `NEAR_NEWEST`, guess instead, if both ends have stamps to interpolate
            // between.
            let ends = match (newest, oldest) {
                (Ok(Some(newest)), Ok(Some(oldest))) if newest > oldest => Some((newest, oldest)),
                _ => None,
            };
            let mut next = 2;
            let mut guessing = None;
            while next < used && in_window(next) {
                lo = next;
                next = next.saturating_mul(2);
                if next > NEAR_NEWEST && ends.is_some() {
                    guessing = ends;
                    break;
                }
            }
            match guessing {
                None => hi = next.min(used),
                Some((newest, oldest)) => {
                    // Many claims in the window: guess where they end. Evenly spaced stamps
                    // s_j = newest − (j − 1)·(newest − oldest)/(used − 1) are in the window iff
                    // s_j > now − W, so k = ⌈(newest − (now − W))·(used − 1) / (newest − oldest)⌉.
                    // Only a guess (floats are fine, `as i64` converts faster than from u64,
                    // and a negative saturates to 0): every read below checks it.
                    let ahead = newest.saturating_sub(now.saturating_sub(self.window)) as i64 as f64;
                    let q = ahead * (used - 1) as i64 as f64 / (newest - oldest) as i64 as f64;
                    let floor = q as u64;
                    let guess = if (floor as f64) < q { floor.saturating_add(1) } else { floor };
                    (lo, hi) = gallop_from(guess.clamp(lo, used - 1), lo, hi, in_window);
                }
            }
        }
        // k is in lo..hi: in_window(lo), and !in_window(hi) or hi = used.
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if in_window(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let found = Self::head_of(self.back(h, lo));
        if found != hint {
            cell::store_hint(&cell.boundary, found);
        }
        self.limit - lo
    }

    /// The distance back from `h` of the position a boundary hint names, if it is one a search
    /// can start from (`1 ≤ j < used`): the hint is from this lap or the previous one.
    #[inline]
    fn hinted(&self, hint: u64, h: At, used: u64) -> Option<u64> {
        let b = Self::at(hint);
        let j = if b.lap == h.lap {
            h.index.checked_sub(b.index)?
        } else if b.lap.wrapping_add(1) == h.lap {
            (h.index + self.limit).checked_sub(b.index)?
        } else {
            return None;
        };
        (1..used).contains(&j).then_some(j)
    }

    #[inline]
    fn newest(&self, cell: &SlidingLogCell, h: At) -> Option<Nanos> {
        if h.lap == 0 && h.index == 0 {
            return None;
        }
        self.stamp_of(cell, self.back(h, 1)).ok().flatten()
    }

    /// Judges a check of `cost` cells against the state `head` (reads slots, writes nothing).
    #[inline]
    fn judge(&self, cell: &SlidingLogCell, head: u64, now: Nanos, cost: u64) -> Judged {
        if cost == 1 && self.owns(cell) {
            return self.judge_unit(cell, Self::at(head), now);
        }
        self.judge_any(cell, head, now, cost)
    }

    /// `judge_any` for a unit cost (most checks). It reads the slot it would overwrite (one lap
    /// back, on a full ring) and the newest, once each; those two settle the two common states
    /// without a search: a key whose newest claim expired (all positions free) and a key at
    /// its limit (the overwritten claim is still in the window: none free). Only a key part
    /// way through its window searches (`free_positions_read`, given those two reads). The
    /// general path reads the newest slot twice and the overwritten one twice at the limit;
    /// both return the same `Judged` (tests: `unit_path_judges_as_the_general_one`,
    /// `unit_path_judges_as_the_general_one_on_arbitrary_rings`).
    #[inline]
    fn judge_unit(&self, cell: &SlidingLogCell, h: At, now: Nanos) -> Judged {
        let used = self.used(h);
        if used == 0 {
            // A fresh ring: nothing to overwrite, nothing in the window.
            return self.verdict(h, now, 1, None, None, self.limit);
        }
        // On a full ring the claim this one overwrites is the oldest (`back(h, limit)`).
        let overwritten = (h.lap > 0).then(|| self.stamp_of(cell, At { lap: h.lap - 1, index: h.index }));
        let blocked_until = match overwritten {
            Some(Err(())) => return Judged::Pending,
            Some(Ok(Some(t))) if t.saturating_add(self.window) > now => Some(t.saturating_add(self.window)),
            _ => None,
        };
        let newest = self.stamp_of(cell, self.back(h, 1));
        let free = if blocked_until.is_some() {
            0 // the next position is held (a denial reports at most the positions ahead of it)
        } else if self.expired_read(newest, now) {
            self.limit
        } else {
            // The oldest claim is the overwritten one on a full ring, else position 0.
            let oldest = overwritten.unwrap_or_else(|| self.stamp_of(cell, self.back(h, used)));
            self.free_positions_read(cell, h, now, newest, oldest)
        };
        self.verdict(h, now, 1, blocked_until, newest.ok().flatten(), free)
    }

    /// `judge` for any cost (and a ring built for another limit).
    fn judge_any(&self, cell: &SlidingLogCell, head: u64, now: Nanos, cost: u64) -> Judged {
        let h = Self::at(head);
        if cost > self.limit {
            // Never fits (callers check the capacity first; this keeps `forward` in range).
            return Judged::Deny(Decision::denied(self.limit, 0, self.window, u64::MAX >> 1));
        }
        if !self.owns(cell) {
            // A ring built for another limit: its head's positions mean nothing here. Deny
            // (never admit on state we cannot read); `Algorithm::compatible` keeps keyed
            // limiters from ever mixing them.
            return Judged::Deny(Decision::denied(self.limit, 0, self.window, self.window));
        }
        let mut blocked_until: Option<Nanos> = None;
        // The claims that positions h..h+cost overwrite: h+k−limit, for the k where that is a
        // position (k ≥ limit − h on the first lap).
        let skip = if h.lap == 0 { (self.limit - h.index).min(cost) } else { 0 };
        // The first overwritten claim: h − limit (one lap back, same index) on a full ring,
        // else position 0 (reached at k = limit − h).
        let mut previous =
            if h.lap > 0 { At { lap: h.lap - 1, index: h.index } } else { At { lap: 0, index: 0 } };
        // Positions free ahead of the head before the first claim still in the window: what
        // a denial may report as `remaining` at most (it is exact for a sorted ring).
        let mut leading = cost;
        for k in skip..cost {
            match self.stamp_of(cell, previous) {
                Err(()) => return Judged::Pending,
                Ok(None) => {}
                Ok(Some(t)) => {
                    let until = t.saturating_add(self.window);
                    if until > now {
                        leading = leading.min(k);
                        blocked_until = Some(blocked_until.map_or(until, |b| b.max(until)));
                    }
                }
            }
            previous = self.forward(previous, 1);
        }
        let newest = self.newest(cell, h);
        let free = self.free_positions(cell, h, now);
        let free = if blocked_until.is_some() { free.min(leading) } else { free };
        self.verdict(h, now, cost, blocked_until, newest, free)
    }

    /// The decision from what a judge read: `blocked_until`, the latest expiry among the
    /// claims this one would overwrite that are still in the window; `newest`, the newest
    /// stamp; `free`, the positions free at `now`.
    #[inline]
    fn verdict(
        &self,
        h: At,
        now: Nanos,
        cost: u64,
        blocked_until: Option<Nanos>,
        newest: Option<Nanos>,
        free: u64,
    ) -> Judged {
        let busy_until =
            |stamp: Option<Nanos>| stamp.map_or(0, |t| t.saturating_add(self.window).saturating_sub(now));
        match blocked_until {
            None => {
                let stamp = newest.map_or(now, |t| t.max(now));
                let reset_after = if cost == 0 { busy_until(newest) } else { busy_until(Some(stamp)) };
                let decision = Decision::allowed(self.limit, free.saturating_sub(cost), reset_after);
                Judged::Admit { stamp, decision, h }
            }
            Some(until) => {
                let retry = until.saturating_sub(now).max(1);
                Judged::Deny(Decision::denied(self.limit, free, busy_until(newest), retry))
            }
        }
    }

    #[inline]
    fn claim(&self, cell: &SlidingLogCell, now: Nanos, cost: u64) -> Result<(Decision, Receipt), Retired> {
        let mut pending = 0;
        loop {
            let attempt = cell::update(&cell.head, |head| match self.judge(cell, head, now, cost) {
                Judged::Admit { stamp, decision, h } if cost > 0 => {
                    Step::Store(Self::head_of(self.forward(h, cost)), (head, Ok((decision, stamp, h))))
                }
                Judged::Admit { decision, .. } | Judged::Deny(decision) => {
                    Step::Keep((head, Err(Some(decision))))
                }
                Judged::Pending => Step::Keep((head, Err(None))),
            })?;
            match attempt {
                (head, Ok((decision, stamp, h))) => {
                    // The CAS made positions h..h+cost ours; publish their stamps.
                    for k in 0..cost {
                        let a = self.forward(h, k);
                        cell::store_slot(self.slot(cell, a), self.slot_value(a, stamp));
                    }
                    return Ok((decision, Receipt::new(head, self.slot_value(h, stamp))));
                }
                (head, Err(verdict)) => {
                    // Answer only if the slots we judged still belong to this head.
                    match cell::load(&cell.head) {
                        None => return Err(Retired),
                        Some(current) if current != head => continue,
                        Some(_) => {}
                    }
                    match verdict {
                        Some(decision) => return Ok((decision, Receipt::NONE)),
                        None if pending < PENDING_RETRIES => {
                            pending += 1;
                            spin_hint();
                        }
                        None => {
                            // A claim is mid-write for too long (its thread was descheduled):
                            // deny rather than wait; its stamp is about `now`.
                            let d = Decision::denied(self.limit, 0, self.window, 1_000);
                            return Ok((d, Receipt::NONE));
                        }
                    }
                }
            }
        }
    }

    /// Whether every claim in the ring is written and expired at `now` (and so at any later
    /// time): the key is then indistinguishable from a fresh one.
    fn is_idle(&self, cell: &SlidingLogCell, head: u64, now: Nanos) -> bool {
        if !self.owns(cell) {
            return false; // not ours to judge (see `judge`): never evicted on our word
        }
        let h = Self::at(head);
        let used = self.used(h);
        let first = self.back(h, used);
        (0..used).all(|k| self.expired(cell, self.forward(first, k), now))
    }
}

impl Algorithm for SlidingLog {
    type Cell = SlidingLogCell;

    fn new(quota: &Quota) -> Result<Self, QuotaError> {
        SlidingLog::from_quota(*quota)
    }

    fn compatible(&self, other: &SlidingLog) -> bool {
        // The ring holds `limit` stamps. A sweep judges a ring idle by the default's window
        // (`self`): an override's window may be shorter (idle under the longer one is idle
        // under it), not longer, or it would count stamps a sweep under the default's window
        // may already have forgotten, and whether a sweeper ran would decide (review finding).
        self.limit == other.limit && other.window <= self.window
    }

    fn quota(&self) -> Quota {
        self.quota
    }

    #[inline]
    fn capacity(&self) -> u64 {
        self.limit
    }

    fn new_cell(&self) -> SlidingLogCell {
        SlidingLogCell {
            head: AtomicU64::new(0),
            boundary: AtomicU64::new(0),
            slots: (0..self.len()).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    #[inline]
    fn check(&self, cell: &SlidingLogCell, now: Nanos, cost: u64) -> Result<Decision, Retired> {
        self.claim(cell, now, cost).map(|(d, _)| d)
    }

    fn peek(&self, cell: &SlidingLogCell, now: Nanos, cost: u64) -> Decision {
        let Some(head) = cell::load(&cell.head) else {
            return self.peek_fresh(now, cost);
        };
        match self.judge(cell, head, now, cost) {
            Judged::Admit { decision, .. } | Judged::Deny(decision) => decision,
            Judged::Pending => Decision::denied(self.limit, 0, self.window, 1_000),
        }
    }

    /// Expires every stamp (O(limit)). A check racing the reset is ordered after it.
    /// A fresh ring is all free: no allocation needed to say so.
    fn peek_fresh(&self, now: Nanos, cost: u64) -> Decision {
        if cost <= self.limit {
            Decision::allowed(self.limit, self.limit - cost, if cost == 0 { 0 } else { self.window })
        } else {
            self.peek(&self.new_cell(), now, cost) // cannot fit: as a fresh cell reports it
        }
    }

    fn reset(&self, cell: &SlidingLogCell) {
        for slot in cell.slots.iter() {
            let value = cell::load_slot(slot);
            if value & STAMP_MASK >= 2 {
                // Keep the lap (the position stays written), mark the stamp expired. Fails only
                // if a newer claim wrote the slot meanwhile: that claim comes after the reset.
                let _ = cell::replace_slot(slot, value, (value & !STAMP_MASK) | 1);
            }
        }
    }

    /// O(limit): every claim in the ring must be written and expired.
    fn try_retire(&self, cell: &SlidingLogCell, now: Nanos) -> bool {
        cell::retire(&cell.head, |head| self.is_idle(cell, head, now))
    }

    #[inline]
    fn is_retired(cell: &SlidingLogCell) -> bool {
        cell::is_retired(&cell.head)
    }

    fn take_over_slot(cell: &SlidingLogCell) -> bool {
        cell::take_over_slot(&cell.head)
    }

    /// The head word is the log's control word: a claim needs its CAS, so a HOLD there stops
    /// claims exactly as a tombstone does (they see `Retired` and the composite restores).
    #[inline]
    fn word_state(cell: &SlidingLogCell) -> WordState {
        cell::word_state(&cell.head)
    }

    /// Holds the head when every claim in the ring is written and expired at `now`, as
    /// [`try_retire`](Algorithm::try_retire) judges it. Between that judgment and the hold CAS
    /// only the head could make the ring busy again (a claim must move it first, and then the
    /// CAS fails and the ring is judged again); a reset or refund only expires stamps, which
    /// already are. The stash keeps the head and no claim can write the ring while it is held,
    /// so a restore gives back a state that decides exactly as the held one.
    fn try_hold(&self, cell: &SlidingLogCell, now: Nanos, hold: u64, stash: &AtomicU64) -> bool {
        cell::hold(&cell.head, stash, hold, |head| self.is_idle(cell, head, now))
    }

    fn release_hold(cell: &SlidingLogCell, held: u64, stash: &AtomicU64) -> bool {
        cell::release_hold(&cell.head, stash, held)
    }

    fn confirm_hold(cell: &SlidingLogCell, held: u64) -> bool {
        cell::confirm_hold(&cell.head, held)
    }

    fn free_slot(cell: &SlidingLogCell, free: &mut dyn FnMut()) -> bool {
        cell::free_slot(&cell.head, free)
    }

    fn check_with_receipt(
        &self,
        cell: &SlidingLogCell,
        now: Nanos,
        cost: u64,
    ) -> Result<(Decision, Receipt), Retired> {
        self.claim(cell, now, cost)
    }

    /// Conservative: each claimed slot that still holds exactly what this check wrote has its
    /// stamp expired (a slot already overwritten belongs to a later claim: ours had expired).
    /// Positions are claimed in ring order, so a refunded slot is reused only when the ring
    /// comes round to it: within one window the refunded cells may stay unavailable (never
    /// over-admits). In a [`Composite`](super::Composite), put the log last.
    fn refund(&self, cell: &SlidingLogCell, _now: Nanos, cost: u64, receipt: Receipt) -> bool {
        if !receipt.valid() || !self.owns(cell) || cell::is_retired(&cell.head) {
            return false;
        }
        let stamp_bits = receipt.extra & STAMP_MASK;
        let mut refunded = false;
        let first = Self::at(receipt.stored);
        for k in 0..cost.min(self.limit) {
            let a = self.forward(first, k);
            let ours = ((a.lap & 3) << LAP_SHIFT) | stamp_bits;
            refunded |= cell::replace_slot(self.slot(cell, a), ours, (ours & !STAMP_MASK) | 1);
        }
        refunded
    }
}

/// Narrows `lo..hi` (`in_window(lo)`, and `!in_window(hi)` or `hi` past the written claims)
/// from a guess `lo ≤ guess < hi`, galloping from it towards the boundary: steps of 1, 2, 4, …
/// away from the guess until a read lands on the other side. O(log e) reads for a guess `e`
/// positions off; the bisection that follows finishes the search.
#[inline(always)]
fn gallop_from(guess: u64, mut lo: u64, mut hi: u64, in_window: impl Fn(u64) -> bool) -> (u64, u64) {
    let mut step = 1;
    if guess == lo || in_window(guess) {
        lo = guess;
        while step < hi - lo {
            if in_window(lo + step) {
                lo += step;
                step = step.saturating_mul(2);
            } else {
                hi = lo + step;
                break;
            }
        }
    } else {
        hi = guess;
        while step < hi - lo {
            if in_window(hi - step) {
                lo = hi - step;
                break;
            }
            hi -= step;
            step = step.saturating_mul(2);
        }
    }
    (lo, hi)
}

/// A ring position `lap · limit + index` (`index < limit`). A cell built for another limit is
/// never read through one (`SlidingLog::owns`): checks on it deny, it is never evicted or
/// refunded on this log's word, and `slot` still cannot index out of bounds.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(test, derive(PartialEq, Eq))]
struct At {
    lap: u64,
    index: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log of `limit` per `period` ns. Some tests use windows shorter than `limit` ns, which a
    /// quota refuses (faster than one cell per ns) but the algorithm itself handles alike.
    fn log(limit: u64, period: Nanos) -> SlidingLog {
        let quota = Quota::new(limit, std::time::Duration::from_nanos(period.max(limit))).unwrap();
        SlidingLog { window: period, ..SlidingLog::from_quota(quota).unwrap() }
    }

    #[test]
    fn exact_window_and_retry() {
        let l = log(3, 100);
        let c = l.new_cell();
        for (now, allowed, remaining, retry) in [
            (0, true, 2, 0),
            (10, true, 1, 0),
            (20, true, 0, 0),
            (99, false, 0, 1),
            (100, true, 0, 0),
            (105, false, 0, 5),
        ] {
            let d = l.check(&c, now, 1).unwrap();
            assert_eq!(
                (d.is_allowed(), d.remaining(), d.retry_after_nanos().unwrap_or(0)),
                (allowed, remaining, retry),
                "{now}"
            );
        }
    }

    #[test]
    fn clock_backwards_never_records_older_stamps() {
        let l = log(2, 100);
        let c = l.new_cell();
        assert!(l.check(&c, 500, 1).unwrap().is_allowed());
        assert!(l.check(&c, 400, 1).unwrap().is_allowed()); // stamped 500, not 400
        assert!(!l.check(&c, 550, 1).unwrap().is_allowed());
        let d = l.check(&c, 599, 1).unwrap();
        assert_eq!(d.retry_after_nanos(), Some(1));
        assert!(l.check(&c, 600, 2).unwrap().is_allowed());
    }

    #[test]
    fn peek_fresh_matches_a_fresh_cell() {
        let l = log(3, 100);
        for now in [0, 7, 1_000_000] {
            for cost in 0..=4 {
                assert_eq!(l.peek_fresh(now, cost), l.peek(&l.new_cell(), now, cost), "{now} {cost}");
            }
        }
    }

    #[test]
    fn remaining_counts_every_occupancy() {
        // A ring of 100 filled over several laps; then at each `now` exactly k of the last 100
        // stamps (one per ns) are in the window, for every k in 0..=100.
        let l = log(100, 1_000);
        let c = l.new_cell();
        for t in 0..250u64 {
            assert!(l.check(&c, t * 1_000, 1).unwrap().is_allowed(), "{t}");
        }
        let base = 250_000;
        for t in 0..100u64 {
            assert!(l.check(&c, base + t, 1).unwrap().is_allowed(), "{t}");
        }
        for k in 0..=100u64 {
            // Stamps base..base+100 are in the window at `now` iff stamp + 1000 > now.
            let now = base + 999 + (100 - k);
            let expected = (0..100).filter(|t| base + t + 1_000 > now).count() as u64;
            assert_eq!(expected, k);
            assert_eq!(l.peek(&c, now, 0).remaining(), 100 - k, "k = {k}");
            let d = l.peek(&c, now, 1);
            assert_eq!(d.is_allowed(), k < 100, "k = {k}");
        }
    }

    /// The search finds the same `remaining` as a count over the stamps, for large rings and
    /// arrivals that are even, bursty (runs of equal stamps), or widely uneven (so the guess is
    /// far off), at unit and larger costs, with a clock that goes back now and then, and from
    /// boundary hints left by earlier checks or set to arbitrary positions.
    #[test]
    fn remaining_matches_a_count_on_large_rings() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for (limit, window) in [(3, 50), (7, 1_000), (100, 10_000), (1000, 100_000), (4096, 1 << 20)] {
            for pattern in 0..4 {
                let l = log(limit, window);
                let c = l.new_cell();
                let mut stamps: Vec<u64> = Vec::new();
                let mut now = 1_000_000u64;
                let spacing = window / limit;
                for _ in 0..6 * limit + 2_000 {
                    let r = next();
                    now = match pattern {
                        0 => now + spacing.max(1) * 2 / 3,
                        1 => now + if r % 8 == 0 { spacing * 6 } else { 0 },
                        2 => now + (r % (4 * spacing + 1)).pow(2) / (spacing + 1),
                        _ if r % 50 == 0 => now.saturating_sub(r % window),
                        _ => now + r % (2 * spacing + 1),
                    };
                    let cost = if r % 7 == 0 { 1 + (r >> 8) % limit.min(5) } else { 1 };
                    if r % 5 == 0 {
                        // Any boundary hint (another lap, out of range, anywhere): the same count.
                        let head = SlidingLog::at(c.head.load(std::sync::atomic::Ordering::Relaxed));
                        let lap = head.lap.saturating_sub((r >> 20) % 3);
                        let hint = SlidingLog::head_of(At { lap, index: (r >> 30) % limit });
                        c.boundary.store(hint, std::sync::atomic::Ordering::Relaxed);
                    }
                    let d = l.check(&c, now, cost).unwrap();
                    // As in tests/window_proptest.rs: the last `limit` stamps hold positions.
                    let recent = &stamps[stamps.len().saturating_sub(limit as usize)..];
                    let held = recent.iter().filter(|&&t| t + window > now).count() as u64;
                    let need = (cost as usize).saturating_sub(limit as usize - recent.len());
                    let allowed = recent.iter().take(need).all(|&t| t + window <= now);
                    assert_eq!(d.is_allowed(), allowed, "limit {limit} pattern {pattern} now {now}");
                    if allowed {
                        assert_eq!(
                            d.remaining(),
                            limit - held - cost,
                            "limit {limit} pattern {pattern} now {now}"
                        );
                        let stamp = stamps.last().map_or(now, |&t| t.max(now));
                        stamps.extend(std::iter::repeat_n(stamp, cost as usize));
                    }
                }
            }
        }
    }

    #[test]
    fn a_ring_built_for_another_limit_is_refused_not_misread() {
        let (big, small) = (log(4096, 100), log(100, 100));
        let c = big.new_cell();
        for _ in 0..200 {
            assert!(big.check(&c, 0, 1).unwrap().is_allowed());
        }
        let d = small.check(&c, 0, 1).unwrap();
        assert!(!d.is_allowed());
        assert_eq!(d.remaining(), 0);
        assert!(!small.peek(&c, 0, 0).is_allowed());
        assert!(!small.try_retire(&c, u64::MAX / 2));
        let (_, receipt) = big.check_with_receipt(&c, 0, 1).unwrap();
        assert!(!small.refund(&c, 0, 1, receipt));
        assert!(big.refund(&c, 0, 1, receipt));
    }

    #[test]
    fn laps_fold_before_the_tombstone_bit() {
        let l = log(1, 10);
        let c = l.new_cell();
        // A head one claim short of the fold, as after 2⁵⁰ claims.
        let h = At { lap: LAP_FOLD - 1, index: 0 };
        c.head.store(SlidingLog::head_of(h), std::sync::atomic::Ordering::Relaxed);
        c.slots[0].store(l.slot_value(l.back(h, 1), 0), std::sync::atomic::Ordering::Relaxed);
        let mut now = 100;
        for _ in 0..10 {
            let d = l.check(&c, now, 1).unwrap(); // never Err(Retired)
            assert!(d.is_allowed());
            assert!(!l.check(&c, now, 1).unwrap().is_allowed()); // the ring holds one
            now += 10;
        }
        assert!(c.head.load(std::sync::atomic::Ordering::Relaxed) < cell::TOMBSTONE);
    }

    /// A small deterministic generator: `next(n)` is in `0..n`.
    fn xorshift(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        }
    }

    /// The unit-cost fast path decides exactly as the general one, in every state a ring can
    /// be in: fresh, filling, full, partly expired, at its limit, refunded, reset, unsorted
    /// (after a refund; a clock that went back keeps the ring sorted), and with a claim won but
    /// not yet written (pending).
    #[test]
    fn unit_path_judges_as_the_general_one() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let mut paths = [0u32; 5]; // fresh, all free, none free, searched, pending
        for limit in [1, 2, 3, 7, 16, 100] {
            let l = log(limit, 1_000);
            let c = l.new_cell();
            let mut now = 10_000u64;
            let mut pending: Option<At> = None;
            for round in 0..4_000 {
                match if round == 0 { 15 } else { next(16) } {
                    0 => now = now.saturating_sub(next(2_000)),
                    1 => l.reset(&c),
                    2 => {
                        // A claim that won its CAS and has not written its stamp yet.
                        let head = c.head.load(std::sync::atomic::Ordering::Relaxed);
                        let h = SlidingLog::at(head);
                        let next_head = SlidingLog::head_of(l.forward(h, 1));
                        c.head.store(next_head, std::sync::atomic::Ordering::Relaxed);
                        pending = Some(h);
                    }
                    3 => {
                        if let Ok((_, receipt)) = l.check_with_receipt(&c, now, 1 + next(limit)) {
                            let _ = l.refund(&c, now, 1, receipt);
                        }
                    }
                    _ => {
                        now += next(600);
                        let _ = l.check(&c, now, 1 + next(limit.min(3)));
                    }
                }
                let head = c.head.load(std::sync::atomic::Ordering::Relaxed);
                if round == 0 {
                    let fresh = l.new_cell();
                    assert_eq!(l.judge_unit(&fresh, SlidingLog::at(0), now), l.judge_any(&fresh, 0, now, 1));
                    paths[0] += 1;
                }
                for probe in [now, now + next(1_500), now.saturating_sub(next(500))] {
                    // The same starting hint for both (a refund leaves the ring unsorted).
                    let hint = c.boundary.load(std::sync::atomic::Ordering::Relaxed);
                    let unit = l.judge_unit(&c, SlidingLog::at(head), probe);
                    c.boundary.store(hint, std::sync::atomic::Ordering::Relaxed);
                    assert_eq!(
                        unit,
                        l.judge_any(&c, head, probe, 1),
                        "limit {limit} head {head:#x} now {probe}"
                    );
                    let h = SlidingLog::at(head);
                    let path = match unit {
                        _ if l.used(h) == 0 => 0,
                        Judged::Pending => 4,
                        Judged::Admit { decision, .. } if decision.remaining() == limit - 1 => 1,
                        Judged::Deny(decision) if decision.remaining() == 0 => 2,
                        _ => 3,
                    };
                    paths[path] += 1;
                }
                if let Some(a) = pending.take() {
                    // The pending claim writes its stamp.
                    cell::store_slot(l.slot(&c, a), l.slot_value(a, now));
                }
            }
        }
        assert!(paths.iter().all(|&n| n > 0), "paths taken: {paths:?}");
    }

    /// The same comparison on rings written directly, reachable or not: folded laps, claims
    /// one lap back still unwritten (pending) for every limit, refunded and reset slots, and
    /// unsorted stamps anywhere in the ring.
    #[test]
    fn unit_path_judges_as_the_general_one_on_arbitrary_rings() {
        use std::sync::atomic::Ordering::Relaxed;
        let mut next = xorshift(0x1234_5678_9abc_def1);
        for limit in [1u64, 2, 3, 4, 5, 8, 17, 64, 4096] {
            let l = log(limit, 1_000);
            let c = l.new_cell();
            let mut seen = [0u32; 4]; // admit, deny, deny with positions free, pending
            for _ in 0..20_000 / limit.min(64) {
                let lap = match next(6) {
                    0 => 0,
                    1 => 1 + next(3),
                    2 => 4 + next(4),
                    3 => LAP_FOLD - 1 - next(2),
                    _ => next(1 << 40),
                };
                let h = At { lap, index: next(limit) };
                let now = 5_000 + next(3_000);
                for j in 1..=limit {
                    let a = l.back(h, j);
                    let tag = if next(10) == 0 { next(4) } else { a.lap & 3 };
                    let field = match next(12) {
                        0 => 0,
                        1 => 1,
                        _ => 2 + now - 2_500 + next(3_000),
                    };
                    l.slot(&c, a).store((tag << LAP_SHIFT) | field, Relaxed);
                }
                let head = SlidingLog::head_of(h);
                // Both paths start their search from the same hint (on an unsorted ring, a
                // search from elsewhere may end elsewhere): any value, here a random one.
                let hint = SlidingLog::head_of(At { lap: lap.saturating_sub(next(2)), index: next(limit) });
                c.boundary.store(hint, Relaxed);
                let unit = l.judge_unit(&c, SlidingLog::at(head), now);
                c.boundary.store(hint, Relaxed);
                assert_eq!(unit, l.judge_any(&c, head, now, 1), "limit {limit} h {h:?} now {now}");
                seen[match unit {
                    Judged::Admit { .. } => 0,
                    Judged::Deny(d) if d.remaining() == 0 => 1,
                    Judged::Deny(_) => 2,
                    Judged::Pending => 3,
                }] += 1;
            }
            // A denied unit cost has no free position ahead of the head to report.
            assert_eq!(seen[2], 0, "limit {limit}: {seen:?}");
            assert!(seen[0] > 0 && seen[1] > 0 && seen[3] > 0, "limit {limit}: {seen:?}");
        }
    }

    /// After a refund of the newest claim the ring is unsorted; a denial must still not report
    /// positions it cannot use.
    #[test]
    fn a_denial_after_a_refund_reports_no_remaining() {
        let l = log(2, 1_000);
        let c = l.new_cell();
        assert!(l.check(&c, 0, 1).unwrap().is_allowed());
        let (d, receipt) = l.check_with_receipt(&c, 10, 1).unwrap();
        assert!(d.is_allowed());
        assert!(l.refund(&c, 10, 1, receipt));
        let d = l.check(&c, 20, 1).unwrap();
        assert!(!d.is_allowed());
        assert_eq!((d.remaining(), d.retry_after_nanos()), (0, Some(980)));
        // A cost of 2: the first position it would overwrite holds the claim at 0.
        let d = l.peek(&c, 20, 2);
        assert!(!d.is_allowed());
        assert_eq!(d.remaining(), 0);
    }

    #[test]
    fn reset_refund_and_retire() {
        let l = log(2, 100);
        let c = l.new_cell();
        let (d, receipt) = l.check_with_receipt(&c, 0, 2).unwrap();
        assert!(d.is_allowed());
        assert!(l.refund(&c, 0, 2, receipt));
        assert_eq!(l.peek(&c, 0, 0).remaining(), 2);
        assert!(l.check(&c, 0, 2).unwrap().is_allowed());
        assert!(!l.try_retire(&c, 99));
        l.reset(&c);
        assert!(l.check(&c, 1, 2).unwrap().is_allowed());
        assert!(!l.try_retire(&c, 100));
        assert!(l.try_retire(&c, 101));
        assert_eq!(l.check(&c, 200, 1), Err(Retired));
    }
}
