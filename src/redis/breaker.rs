//! The circuit breaker: after `threshold` failed calls in a row, calls are not sent for a
//! cooldown, and the [`FailurePolicy`](super::FailurePolicy) answers them at once, instead of
//! every check of an outage waiting out the timeout (a hung server, a lost route: each would add
//! the whole timeout, 50 ms by default, to the request that made it). When the cooldown is over,
//! one call goes through as a probe while the others are still answered at once; its success
//! closes the breaker, its failure opens it for another cooldown.
//!
//! All of it is advisory: it decides only whether a call is sent, and a call not sent gets what
//! a failed call would, so no ordering is needed beyond each word's own atomicity (`Relaxed`
//! throughout). Racing calls may send a few more probes than one, or close the breaker on a
//! reply that was already in flight when it opened: both only mean a call is tried.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::clock::{Clock, Nanos, QuantaClock};
use crate::decision::CheckError;

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
        // Relaxed: see the module docs.
        let until = self.open_until.load(Ordering::Relaxed);
        if until == 0 {
            return None;
        }
        if now >= until {
            // The cooldown is over: this call probes if it is the first to move the deadline
            // on (Relaxed: the CAS's atomicity picks one probe per cooldown; nothing else).
            let next = self.deadline(now);
            if self.open_until.compare_exchange(until, next, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
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
            // limiter's cores do not all write one line. Relaxed: see the module docs.
            if self.failures.load(Ordering::Relaxed) != 0 {
                self.failures.store(0, Ordering::Relaxed);
            }
            if self.open_until.load(Ordering::Relaxed) != 0 && self.open_until.swap(0, Ordering::Relaxed) != 0
            {
                tracing::info!("Redis answers again: circuit breaker closed");
            }
            return;
        }
        // Relaxed: see the module docs.
        let failures = self
            .failures
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |f| Some(f.saturating_add(1)))
            .map_or(u32::MAX, |f| f.saturating_add(1));
        if failures >= self.threshold && self.open_until.swap(self.deadline(now), Ordering::Relaxed) == 0 {
            tracing::warn!(
                failures,
                cooldown_ms = self.cooldown / 1_000_000,
                "Redis calls failing: circuit breaker open, the failure policy answers"
            );
        }
    }

    /// Whether calls are currently not sent (open, cooldown not over).
    pub(crate) fn is_open(&self, now: Nanos) -> bool {
        let until = self.open_until.load(Ordering::Relaxed);
        until != 0 && now < until
    }

    /// The end of a cooldown starting at `now` (never 0, the "closed" value).
    fn deadline(&self, now: Nanos) -> Nanos {
        now.saturating_add(self.cooldown).max(1)
    }
}

#[cfg(test)]
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
