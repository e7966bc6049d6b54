//! Model (6): the Redis circuit breaker (`src/redis/breaker.rs`). Two words: `failures`, failed
//! calls since the last success (saturating), and `open_until`, the end of the cooldown (0 while
//! closed). A call reads the clock, asks `refuse(now)`, is sent unless refused, and its outcome
//! is recorded with `record(ok, now)` on a clock read after it returned; a failure that brings
//! the count to the threshold swaps in a new deadline, a success stores 0 in both words, and
//! after the cooldown the call whose CAS moves the deadline on is let through as the probe.
//!
//! The models drive the production `Breaker` through a forwarding facade
//! (`tollgate::redis::breaker_loom`, built only under `cfg(tollgate_loom)`); time is an input,
//! each call given the `now` its caller would have read. Every model uses threshold 2 and a
//! cooldown of 100 ns unless it says otherwise, and all but the saturation model end with
//! [`assert_recovers`]: whatever the race left, the breaker is not stuck open and can still open
//! again. See the crate docs for the preemption bound.
#![cfg(tollgate_loom)]

use std::sync::Arc;

use loom::thread;
use loom_tests::{model, Observed};
use tollgate::redis::breaker_loom::Breaker;
use tollgate::Nanos;

const THRESHOLD: u32 = 2;
const COOLDOWN: Nanos = 100;

/// A breaker opened at `at` by `THRESHOLD` failures (before any thread of the model starts), so
/// its cooldown ends at `at + COOLDOWN`.
fn opened_at(at: Nanos) -> Breaker {
    let breaker = Breaker::new(THRESHOLD, COOLDOWN);
    for _ in 0..THRESHOLD {
        breaker.record(false, at);
    }
    assert_eq!((breaker.failures(), breaker.open_until()), (THRESHOLD, at + COOLDOWN));
    breaker
}

/// One call at `now`: asked, sent unless refused, and recorded (at `now + 1`, the clock read
/// after the reply) as `ok`. Returns whether it was sent.
fn call(breaker: &Breaker, now: Nanos, ok: bool) -> bool {
    let sent = !breaker.refuse(now);
    if sent {
        breaker.record(ok, now + 1);
    }
    sent
}

/// Runs `f` on `breaker` in a new loom thread.
fn spawn_on<T: Send + 'static>(
    breaker: &Arc<Breaker>,
    f: impl FnOnce(&Breaker) -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let breaker = Arc::clone(breaker);
    thread::spawn(move || f(&breaker))
}

/// What must hold after any race, run on the main thread once every other has joined, at a time
/// `t` no earlier than any deadline the race could have written:
/// 1. it is not stuck: a call at `t` is sent (the breaker is closed, or this call is the probe);
/// 2. if it was the probe, its failure opens the breaker for a cooldown from `t` (whatever the
///    count was: a race can leave it open with fewer than `THRESHOLD` failures counted), and the
///    next cooldown's probe is sent;
/// 3. a success then closes it and resets the count;
/// 4. it can open again: `THRESHOLD` failed calls in a row open it.
fn assert_recovers(breaker: &Breaker, t: Nanos) {
    let was_open = breaker.open_until() != 0;
    assert!(!breaker.refuse(t), "stuck: a call at {t}, after every deadline, was refused");
    let t = if was_open {
        breaker.record(false, t);
        assert!(breaker.is_open(t) && breaker.refuse(t), "a failed probe left the breaker closed");
        assert_eq!(breaker.open_until(), t + COOLDOWN, "a failed probe starts a cooldown");
        let next = t + COOLDOWN;
        assert!(!breaker.refuse(next), "the next cooldown's probe was refused");
        next
    } else {
        t
    };
    breaker.record(true, t);
    assert_eq!(
        (breaker.failures(), breaker.open_until()),
        (0, 0),
        "a success closes it and resets the count"
    );
    for _ in 0..THRESHOLD {
        assert!(!breaker.refuse(t), "closed: sent");
        breaker.record(false, t);
    }
    assert!(breaker.is_open(t) && breaker.refuse(t), "THRESHOLD failures in a row left it closed");
    assert_eq!(breaker.open_until(), t + COOLDOWN);
}

/// Asserts that the executions reached every outcome in `allowed` and nothing else but
/// `loom_only`: outcomes loom 0.7 produces that the memory model forbids, listed per model.
/// Loom lets a plain store land between the read and the write of a concurrent RMW
/// (tokio-rs/loom#254, #389; fix proposed in tokio-rs/loom#391): here a success's
/// `failures.store(0)` and a failure's `fetch_update`, which then reads the count from before the
/// reset and writes it back plus one. C++ and Rust make an RMW read the value just before its own
/// write, so the reset is either overwritten by one failure (count 1) or comes last (count 0).
fn assert_outcomes<T: Ord + std::fmt::Debug + Clone>(
    observed: &Observed<T>,
    allowed: Vec<T>,
    loom_only: Vec<T>,
) {
    let permitted: Vec<T> = allowed.iter().cloned().chain(loom_only).collect();
    observed.assert_within(permitted, allowed);
}

/// (a) `THRESHOLD` failures recorded by racing threads open the breaker: neither is lost, and
/// whichever thread counts the second swaps in the deadline, so the cooldown runs from that
/// thread's clock reading. Outcomes (failures, deadline): exactly both threads' deadlines.
#[test]
fn racing_failures_open_it() {
    let observed = Observed::new();
    let record = observed.clone();
    model(move || {
        let breaker = Arc::new(Breaker::new(THRESHOLD, COOLDOWN));
        let other = spawn_on(&breaker, |b| b.record(false, 20));
        breaker.record(false, 10);
        other.join().expect("failing thread");
        assert!(breaker.is_open(20), "two failures in a row, the breaker still closed");
        record.record((breaker.failures(), breaker.open_until()));
        assert_recovers(&breaker, 200);
    });
    observed.assert_exactly([(2, 110), (2, 120)]);
}

/// (a) The count saturates under a race: from `u32::MAX - 1` failures (threshold `u32::MAX`),
/// two racing failures leave `u32::MAX` (no wrap to 0, which would keep it closed through the
/// next `u32::MAX` failures) and open the breaker.
#[test]
fn racing_failures_saturate_the_count() {
    let observed = Observed::new();
    let record = observed.clone();
    model(move || {
        let breaker = Arc::new(Breaker::with_failures(u32::MAX, COOLDOWN, u32::MAX - 1));
        let other = spawn_on(&breaker, |b| b.record(false, 20));
        breaker.record(false, 10);
        other.join().expect("failing thread");
        record.record((breaker.failures(), breaker.open_until()));
    });
    // Both failures reach u32::MAX (the second saturates), so both swap in a deadline: the last
    // swap decides which.
    observed.assert_exactly([(u32::MAX, 110), (u32::MAX, 120)]);
}

/// (b) While open, before the cooldown ends, every call is refused: callers at the cooldown's
/// start, middle and last instant, racing a failure that was in flight when it opened (recorded
/// at 60, so the deadline moves on to 160). Nothing is sent, and the deadline is exactly 160.
#[test]
fn before_the_cooldown_ends_every_call_is_refused() {
    let observed = Observed::new();
    let record = observed.clone();
    model(move || {
        let breaker = Arc::new(opened_at(0));
        let callers = [0, 99].map(|now| spawn_on(&breaker, move |b| call(b, now, false)));
        let in_flight = spawn_on(&breaker, |b| b.record(false, 60));
        let middle = call(&breaker, 50, false);
        let sent = callers.map(|c| c.join().expect("caller"));
        in_flight.join().expect("in-flight failure");
        assert!(!middle && sent == [false, false], "a call was sent before the cooldown ended");
        record.record((breaker.failures(), breaker.open_until()));
        assert_recovers(&breaker, 160);
    });
    observed.assert_exactly([(3, 160)]);
}

/// (c) After the cooldown, with no call's outcome racing them, callers at 100, 150 and 199 (all
/// past the deadline, 100, and before the next one could end) race for the probe: exactly one is
/// let through, any of the three can be, and the next deadline is a cooldown from its clock.
#[test]
fn after_the_cooldown_exactly_one_call_probes() {
    let observed = Observed::new();
    let record = observed.clone();
    model(move || {
        let breaker = Arc::new(opened_at(0));
        let callers = [150, 199].map(|now| spawn_on(&breaker, move |b| !b.refuse(now)));
        let mut sent = vec![!breaker.refuse(100)];
        sent.extend(callers.into_iter().map(|c| c.join().expect("caller")));
        assert_eq!(sent.iter().filter(|&&s| s).count(), 1, "probes let through: {sent:?}");
        record.record((sent, breaker.open_until()));
        assert_recovers(&breaker, 300);
    });
    observed.assert_exactly([
        (vec![true, false, false], 200),
        (vec![false, true, false], 250),
        (vec![false, false, true], 299),
    ]);
}

/// (c) The exact bound. A deadline lets at most one call through (the CAS that replaces it), and
/// a probe's CAS writes a deadline a cooldown past its own clock, so callers within a cooldown of
/// the expired deadline see a second probe only through a deadline a failure wrote that is
/// already behind their clocks: a failure whose clock read is a cooldown or more older than
/// theirs (here 60, against callers at 180 and 190), landing after a probe. Each such failure
/// lets at most one more through. Callers at 150, 180 and 190 racing one such failure: 0, 1 or 2
/// probes, never 3. Zero: the failure lands between the loads and the CASes of the callers past
/// its deadline (160), which do not retry, and the caller at 150 is before that deadline.
#[test]
fn a_late_failure_lets_at_most_one_more_probe_through() {
    let observed = Observed::new();
    let record = observed.clone();
    model(move || {
        let breaker = Arc::new(opened_at(0));
        let callers = [150, 180, 190].map(|now| spawn_on(&breaker, move |b| !b.refuse(now)));
        breaker.record(false, 60);
        let probes = callers.into_iter().map(|c| c.join().expect("caller")).filter(|&s| s).count();
        record.record(probes);
        assert_recovers(&breaker, 300);
    });
    observed.assert_exactly([0, 1, 2]);
}

/// (d) A probe's success when another thread opened the breaker: the opener records its two
/// failures; the caller checks whether it is open, and if so asks at the end of the cooldown
/// and, let through as the probe, records a success. The probe's success closes the breaker and
/// resets the count. This failed with every atomic `Relaxed`: the probe's load of the count could
/// read 0 (from before the opener's failures: nothing ordered them before it), skip the reset and
/// leave it closed with 2 failures counted, so one more failure reopened it. The opener's
/// `Release` swap and the probe's `Acquire` CAS fix it; the model fails with either relaxed.
#[test]
fn a_probe_success_after_another_thread_opened_it_resets_the_count() {
    let observed = Observed::new();
    let record = observed.clone();
    model(move || {
        let breaker = Arc::new(Breaker::new(THRESHOLD, COOLDOWN));
        let opener = spawn_on(&breaker, |b| {
            b.record(false, 0);
            b.record(false, 0);
        });
        let probed = breaker.open_until() != 0 && call(&breaker, COOLDOWN, true);
        opener.join().expect("opener");
        if probed {
            assert_eq!(
                (breaker.failures(), breaker.open_until()),
                (0, 0),
                "a probe's success left the breaker counting failures"
            );
        }
        record.record(probed);
        assert_recovers(&breaker, 200);
    });
    observed.assert_exactly([false, true]);
}

/// (d) A probe's success (sent at 100, recorded at 101) racing a failure in flight since before
/// the breaker opened (its clock read 50, so its deadline is 150). Outcomes (probe sent,
/// failures, deadline):
/// * the failure lands first: the cooldown runs to 150 and the call at 100 is refused (3, 150);
/// * the failure counts before the success's reset and swaps in its deadline before the
///   success's close: closed, (0, 0);
/// * the failure counts after the success's reset: closed with 1 failure, (1, 0);
/// * the failure counts before the reset but swaps in its deadline after the success closed:
///   open with no failure counted, (0, 150). Not stuck: at 150 a probe is sent, and its failure
///   reopens the breaker even though the count is below the threshold (the probe's CAS moved the
///   deadline on); `assert_recovers` checks both.
///
/// Never closed with `THRESHOLD` failures counted. Loom also shows 3 failures counted after the
/// success (its reset lost: [`assert_outcomes`]), which cannot happen.
#[test]
fn a_probe_success_races_a_late_failure() {
    let observed = probe_races_a_late_reply(true, false);
    assert_outcomes(
        &observed,
        vec![(false, 3, 150), (true, 0, 0), (true, 1, 0), (true, 0, 150)],
        vec![(true, 3, 0), (true, 3, 150)],
    );
}

/// (d) A probe's failure (sent at 100, recorded at 101: deadline 201) racing a success in flight
/// since before the breaker opened (recorded at 50). Outcomes (probe sent, failures, deadline):
/// * the success lands first: closed, and the call at 100 is sent as a plain call whose failure
///   is the first counted, (1, 0);
/// * the success lands between the probe's load and its CAS: the CAS fails and the call is
///   refused though the breaker is closed (advisory: the next call is sent), (0, 0);
/// * the success lands last, or resets the count after the probe's failure counted and closes
///   after its deadline went in: closed, (0, 0);
/// * the success resets the count and closes before the probe's failure swaps in its deadline:
///   open for the probe's cooldown, with no failure counted, (0, 201);
/// * the probe's failure counts after the reset: 1 < `THRESHOLD`, no swap, but the success
///   closed it, (1, 0).
///
/// Never closed with `THRESHOLD` failures counted. Loom also shows 3 failures counted after the
/// success (its reset lost: [`assert_outcomes`]), which cannot happen.
#[test]
fn a_probe_failure_races_a_late_success() {
    let observed = probe_races_a_late_reply(false, true);
    assert_outcomes(
        &observed,
        vec![(false, 0, 0), (true, 0, 0), (true, 1, 0), (true, 0, 201)],
        vec![(true, 3, 0), (true, 3, 201)],
    );
}

/// The breaker opened at 0; a call at 100 (the probe, unless the race closed the breaker or moved
/// the deadline on) ending as `probe_ok` races a reply in flight since before the breaker opened,
/// recorded at 50 as `late_ok`. The outcomes, (probe sent, failures, deadline) once both landed;
/// each execution then passes [`assert_recovers`].
fn probe_races_a_late_reply(probe_ok: bool, late_ok: bool) -> Observed<(bool, u32, Nanos)> {
    let observed = Observed::new();
    let record = observed.clone();
    model(move || {
        let breaker = Arc::new(opened_at(0));
        let probe = spawn_on(&breaker, move |b| call(b, 100, probe_ok));
        breaker.record(late_ok, 50);
        let sent = probe.join().expect("probe");
        record.record((sent, breaker.failures(), breaker.open_until()));
        assert_recovers(&breaker, 300);
    });
    observed
}

/// (d) A success in flight racing the two failures that open the breaker (all recorded at 10).
/// Outcomes (failures, deadline): the success first, (2, 110); last, (0, 0); its reset between
/// the failures, (1, 0); and two that no sequential order gives, both harmless:
/// * its reset lands before the failures count and its close after they opened it: closed with
///   `THRESHOLD` failures counted, (2, 0) (closing on a reply that was in flight when it opened,
///   as the module docs say): the next failure opens it at once;
/// * its reset lands after the failures counted and before the second swaps in its deadline,
///   which lands after the success's close found it closed: open with none counted, (0, 110).
///
/// `assert_recovers` checks neither is stuck and both can open again.
#[test]
fn a_late_success_races_the_failures_that_open_it() {
    let observed = Observed::new();
    let record = observed.clone();
    model(move || {
        let breaker = Arc::new(Breaker::new(THRESHOLD, COOLDOWN));
        let failing = [(); 2].map(|()| spawn_on(&breaker, |b| b.record(false, 10)));
        breaker.record(true, 10);
        for f in failing {
            f.join().expect("failing thread");
        }
        record.record((breaker.failures(), breaker.open_until()));
        assert_recovers(&breaker, 200);
    });
    observed.assert_exactly([(0, 0), (0, 110), (1, 0), (2, 0), (2, 110)]);
}
