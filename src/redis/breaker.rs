//! The circuit breaker: after `threshold` failed calls in a row, calls are not sent for a
//! cooldown, and the [`FailurePolicy`](super::FailurePolicy) answers them at once, instead of
//! every check of an outage waiting out the timeout (a hung server, a lost route: each would add
//! the whole timeout, 50 ms by default, to the request that made it). When the cooldown is over,
//! one call goes through as a probe while the others are still answered at once; its success
//! closes the breaker, its failure opens it for another cooldown.
//!
//! All of it is advisory: it decides only whether a call is sent, and a call not sent gets what
//! a failed call would, so each word's own atomicity is nearly all it needs, and its atomics are
//! `Relaxed` but for one pair. A failure that swaps in a deadline does so with `Release`, and the
//! probe's CAS that moves the deadline on succeeds with `Acquire`, so the probe's success sees
//! the failures that opened the breaker and resets their count. Without the pair (all `Relaxed`)
//! the probe could read the count from before them (0), skip the reset and leave the breaker
//! closed with `threshold` failures still counted, so that the next single failure reopened it
//! (found by the loom model, `loom-tests/tests/breaker.rs`). Both sit on cold paths (a failure
//! past the threshold, one probe per cooldown); the hot path (closed, calls succeeding) is three
//! `Relaxed` loads and writes nothing.
//!
//! What racing calls can do, as the loom model checks:
//! * **Probes.** Each deadline written lets at most one call through: the one whose CAS moves it
//!   on. Callers racing past one deadline with no call's outcome recorded meanwhile let exactly
//!   one through. Beyond that, only a failure whose deadline is already past when it lands (its
//!   clock read before a probe's, and a cooldown or more before a later caller's: a failure
//!   recorded late) lets one more through, one per such failure.
//! * **Refused once.** A caller whose CAS loses to a recorded outcome is refused even where that
//!   outcome closed the breaker or swapped in a deadline already behind the caller's clock (the
//!   CAS does not retry); the next call is sent.
//! * **Replies in flight.** A success that was in flight when the breaker opened closes it,
//!   possibly with the failures that opened it still counted (the next failure reopens it); a
//!   failure in flight across a success can leave it open with fewer than `threshold` counted
//!   (its probe's failure still reopens it: the probe's CAS has moved the deadline on). The
//!   breaker is never left stuck: a call past the last deadline is sent, and `threshold` failures
//!   in a row always open it.

use crate::clock::{Clock, Nanos, QuantaClock};
use crate::decision::CheckError;
use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// The breaker's state; `threshold` 0 turns it off.
#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    cooldown: Nanos,
    /// Failed calls since the last success (saturating).
    failures: AtomicU32,
    /// Until when (`clock`, ns) calls are not sent; 0 while closed.
    open_until: AtomicU64,
    /// The breaker's own monotonic clock, not the limiter's: a user's clock (a
    /// [`ManualClock`](crate::ManualClock) in tests, a cached clock) may stand still, and a
    /// cooldown that never ends would send no call again after an outage.
    clock: QuantaClock,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Nanos) -> Breaker {
        Breaker {
            threshold,
            cooldown,
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            clock: QuantaClock::new(),
        }
    }

    /// The breaker's clock reading, for [`refuse`](Self::refuse), [`record`](Self::record) and
    /// [`is_open`](Self::is_open).
    #[inline]
    pub(crate) fn now(&self) -> Nanos {
        if self.threshold == 0 {
            return 0;
        }
        self.clock.now()
    }

    /// `Some(error)` if a call at `now` must not be sent (the breaker is open and this call is
    /// not the probe); `None` to send it.
    #[inline]
    pub(crate) fn refuse(&self, now: Nanos) -> Option<CheckError> {
        if self.threshold == 0 {
            return None;
        }
        // Relaxed: advisory (module docs); a stale value sends or refuses this one call, and the
        // CAS below reads the latest.
        let until = self.open_until.load(Ordering::Relaxed);
        if until == 0 {
            return None;
        }
        if now >= until {
            // The cooldown is over: this call probes if it is the first to move the deadline
            // on; the CAS's atomicity picks one probe per deadline. Acquire on success pairs
            // with the Release swap in `record` that wrote `until` (or, where an earlier probe's
            // CAS wrote it, the swap before: RMWs continue its release sequence), so this probe's
            // `record(true)` sees the failures that opened the breaker and resets them (module
            // docs). Relaxed on failure: refused, nothing read.
            let next = self.deadline(now);
            if self.open_until.compare_exchange(until, next, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return None;
            }
        }
        Some(CheckError::Backend {
            reason: format!(
                "not sent: Redis failed {} calls in a row (circuit breaker open; one call probes every {} ms)",
                self.threshold,
                self.cooldown / 1_000_000
            ),
        })
    }

    /// Records how a sent call ended.
    #[inline]
    pub(crate) fn record(&self, ok: bool, now: Nanos) {
        if self.threshold == 0 {
            return;
        }
        if ok {
            // Loads first: the common case (closed, no failures) writes nothing, so a busy
            // limiter's cores do not all write one line. Relaxed: a probe sees the count through
            // its CAS's Acquire (`refuse`); any other success races the failures it would reset
            // (module docs), and the store publishes nothing.
            if self.failures.load(Ordering::Relaxed) != 0 {
                self.failures.store(0, Ordering::Relaxed);
            }
            // Relaxed: closing publishes nothing; a call that reads 0 is sent and reads nothing
            // else. The swap is an RMW, so it does not break a failure's release sequence.
            if self.open_until.load(Ordering::Relaxed) != 0 && self.open_until.swap(0, Ordering::Relaxed) != 0
            {
                tracing::info!("Redis answers again: circuit breaker closed");
            }
            return;
        }
        // Relaxed: the RMW's atomicity alone loses no failure (and saturates); the swap below
        // publishes the count to the probe.
        let failures = self
            .failures
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |f| Some(f.saturating_add(1)))
            .map_or(u32::MAX, |f| f.saturating_add(1));
        // Release: pairs with the probe's Acquire CAS in `refuse`, so the probe's success sees
        // this count and resets it (module docs).
        if failures >= self.threshold && self.open_until.swap(self.deadline(now), Ordering::Release) == 0 {
            tracing::warn!(
                failures,
                cooldown_ms = self.cooldown / 1_000_000,
                "Redis calls failing: circuit breaker open, the failure policy answers"
            );
        }
    }

    /// Whether calls are currently not sent (open, cooldown not over).
    pub(crate) fn is_open(&self, now: Nanos) -> bool {
        // Relaxed: a health signal; a lagging answer is fine.
        let until = self.open_until.load(Ordering::Relaxed);
        until != 0 && now < until
    }

    /// The end of a cooldown starting at `now` (never 0, the "closed" value).
    fn deadline(&self, now: Nanos) -> Nanos {
        now.saturating_add(self.cooldown).max(1)
    }
}

/// What the loom models call (`loom-tests/tests/breaker.rs`): a forwarding facade over
/// [`Breaker`], so the models run the production protocol. Time is the models' input: each call
/// takes the `now` a caller would have read from [`Breaker::now`].
#[cfg(tollgate_loom)]
#[doc(hidden)]
pub mod loom_api {
    use crate::clock::Nanos;
    use crate::sync::Ordering;

    /// [`Breaker`](super::Breaker), for the models.
    #[derive(Debug)]
    pub struct Breaker(super::Breaker);

    impl Breaker {
        /// Opens after `threshold` failed calls in a row, for `cooldown` ns.
        pub fn new(threshold: u32, cooldown: Nanos) -> Breaker {
            Breaker(super::Breaker::new(threshold, cooldown))
        }

        /// Like [`new`](Self::new), with `failures` failed calls already counted (and the breaker
        /// still closed), to start a model near the counter's saturation.
        pub fn with_failures(threshold: u32, cooldown: Nanos, failures: u32) -> Breaker {
            let breaker = super::Breaker::new(threshold, cooldown);
            breaker.failures.store(failures, Ordering::Relaxed); // Relaxed: before any thread
            Breaker(breaker)
        }

        /// Whether a call at `now` is not sent (`refuse(now)` is `Some`).
        pub fn refuse(&self, now: Nanos) -> bool {
            self.0.refuse(now).is_some()
        }

        /// Records how a sent call ended, with the clock read after it.
        pub fn record(&self, ok: bool, now: Nanos) {
            self.0.record(ok, now);
        }

        /// Whether calls at `now` are not sent (what `circuit_open()` reports).
        pub fn is_open(&self, now: Nanos) -> bool {
            self.0.is_open(now)
        }

        /// The failure count. Relaxed, like the breaker's own loads, so that reading it adds no
        /// synchronization the production code lacks.
        pub fn failures(&self) -> u32 {
            self.0.failures.load(Ordering::Relaxed)
        }

        /// Until when calls are not sent (0 while closed). Relaxed, as [`failures`](Self::failures).
        pub fn open_until(&self) -> Nanos {
            self.0.open_until.load(Ordering::Relaxed)
        }
    }
}

#[cfg(all(test, not(tollgate_loom)))] // std atomics only: loom types panic outside a model
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_probes_once_per_cooldown_and_closes_on_success() {
        let b = Breaker::new(3, 100);
        for t in 0..2 {
            b.record(false, t);
            assert!(b.refuse(t).is_none(), "below the threshold calls are sent");
        }
        b.record(false, 2);
        assert!(b.is_open(2));
        assert!(b.refuse(50).is_some());
        assert!(b.refuse(101).is_some(), "cooldown ends at 102");
        // The first call after the cooldown probes; the others are refused until it answers.
        assert!(b.refuse(102).is_none());
        assert!(b.refuse(103).is_some());
        b.record(false, 110); // the probe failed: another cooldown
        assert!(b.refuse(209).is_some());
        assert!(b.refuse(210).is_none());
        b.record(true, 215);
        assert!(!b.is_open(215));
        assert!(b.refuse(216).is_none());
        // One failure after a success does not reopen it.
        b.record(false, 220);
        assert!(b.refuse(221).is_none());
        // A success resets the count.
        b.record(true, 222);
        b.record(false, 223);
        b.record(false, 224);
        assert!(b.refuse(225).is_none());
    }

    #[test]
    fn threshold_zero_is_off() {
        let b = Breaker::new(0, 100);
        for t in 0..10 {
            b.record(false, t);
        }
        assert!(b.refuse(10).is_none());
        assert!(!b.is_open(10));
    }

    #[test]
    fn saturates_instead_of_wrapping() {
        let b = Breaker::new(1, u64::MAX);
        b.failures.store(u32::MAX, Ordering::Relaxed);
        b.record(false, u64::MAX - 1);
        assert_eq!(b.failures.load(Ordering::Relaxed), u32::MAX);
        assert!(b.refuse(u64::MAX - 1).is_some());
    }
}
