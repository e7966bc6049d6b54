//! Model: GCRA's override conversion, `Algorithm::adopt` (`src/algorithm.rs`, helper
//! `gcra::adopted`), racing checks of the same cell, through the real `adopt`, `check` and CAS
//! loop (`cell::update`) on loom atomics. See the crate docs for the preemption bound.
//!
//! The protocol: `adopt` loads the TAT, runs `publish` (which makes the new parameters visible
//! to checks), then CASes the TAT. If it is unchanged since the load it converts it (the debt
//! `tat − now` scaled by the ratio of the tolerances, rounded up); if a check moved it
//! meanwhile it keeps the stricter reading `min(max(convert(tat), tat), now + new tolerance)`.
//!
//! Time is frozen at `NOW`. The old parameters are 1/h (burst 1, `T` = tolerance = 1 h), the
//! new 3/s (burst 3, `T` = 333 333 334 ns, tolerance `3T` = 1 000 000 002 ns). The main thread
//! runs `new.adopt(&cell, &old, …)`, where `publish` sets `published`. Checker threads (one
//! running two checks, or two running one each) choose each check's parameters as
//! `KeyedLimiter::check` does: the new ones if they have seen `published`, else the old ones;
//! then the check runs (its own load and CAS) with nothing in between that the conversion
//! waits for. After the joins a greedy drain under the new parameters counts what is left at
//! `NOW`. Three starting cells:
//!
//! * **fresh**: at most 3 admitted in all (checks + drain), the new burst. Serially the checks
//!   before the conversion use 1/h, the rest 3/s. With no 1/h check first the conversion finds
//!   nothing owed and the 3/s burst is all there is; a 1/h check first takes the whole 1/h
//!   bucket (burst 1), and its 1 h of 1 h converts to a spent 3/s bucket: 1 in all. No old cell
//!   comes on top of the new burst, as an old cell is the whole old bucket.
//! * **spent** (the 1/h cell taken at `NOW`): 0.
//! * **refilling** (the 1/h cell taken 1 h − 0.5 s before `NOW`, so 0.5 s is owed): at most 2.
//!   A 1/h check is denied (0.5 s + 1 h > 1 h); the conversion scales 0.5 s of 1 h to
//!   138 889 ns of 1 s (rounded up), which costs the third 3/s cell (`3T` is the whole
//!   tolerance). A 3/s check between the conversion's first load and its CAS reads the
//!   unconverted 0.5 s and is admitted (0.833 s ≤ 1 s); the raced branch keeps that stricter
//!   reading: 1 in all.
//!
//! Claims, in every execution:
//!
//! 1. **No over-admission**: the checks' admissions plus the drain never exceed the bound
//!    above.
//! 2. **No lockout**: a check under the new parameters is allowed at `NOW` + their tolerance
//!    (one full refill), as in every serial order, unless an old-parameter check was admitted
//!    and may have run after the conversion (the first known defect below). Whatever ran, one
//!    is allowed at `NOW` + the old tolerance (a check's TAT is within its own parameters'
//!    tolerance, and the raced reading is capped at the new one).
//!
//! Each model also asserts the exact set of outcomes (all reached at 2 preemptions), so a
//! model that stopped exploring would fail.
//!
//! # Where the checks run
//!
//! Loom 0.7.3 does not reach every interleaving of this race by itself: with the conversion
//! left free ([`Hold::Free`]) it never ran a check that saw `published` before the
//! conversion's next load when that conversion then only loads (a fresh cell), so breaking the
//! raced branch to convert the TAT as a 1/h state (scaling those checks' debt away) still
//! passed there. The held models make the conversion wait, inside its own callbacks, until the
//! checkers have finished: in `publish` ([`Hold::AfterPublish`]: the checks run between its
//! first load and its CAS loop) or in the clock reading it takes between a CAS attempt's load
//! and the CAS ([`Hold::BeforeCas`]: a check that writes there makes the CAS fail and retry).
//! Loom still chooses which parameters each check reads and how the checks interleave with
//! each other and with the conversion's first load.
//!
//! # Known defects (ignored models, `-- --ignored`)
//!
//! Each fails on the current protocol:
//!
//! * A check that read the old parameters before `publish` but whose CAS comes after the
//!   conversion's applies them to the converted state; the conversion has returned and never
//!   sees it. 1/h → 3/s, fresh cell: its 1/h cell is written unscaled, 1 h of debt in a 3/s
//!   bucket, locked for an hour where every serial order frees it after 1 s (the free and
//!   before-the-CAS models accept this outcome and bound it by the old tolerance). 2/min →
//!   3/s, cell spent under 2/min: the conversion leaves a spent 3/s bucket (1 s of debt), which
//!   the late 2/min check reads as 1 s of its 60 s tolerance and admits: 1 admitted, serially 0
//!   (with 1/h this cannot show: 1 s + 1 h > 1 h).
//! * Tightening, 3/s → 2/min, cell spent under 3/s: a check under the new parameters between
//!   the conversion's load and its CAS (after `publish`) judges the unconverted state, 1 s of
//!   debt of 2/min's 60 s tolerance, and is admitted: 1, serially 0. The raced branch then
//!   keeps a spent 2/min bucket, so nothing after it is admitted.
#![cfg(tollgate_loom)]

use std::collections::BTreeSet;
use std::sync::Arc;

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::thread;
use loom_tests::{model, Observed};
use tollgate::{Algorithm, Gcra, GcraCell, Nanos, Quota};

use Used::{New, Old};

const SECOND: u64 = 1_000_000_000;

/// The frozen clock: 10 h in, so every starting TAT is in range.
const NOW: Nanos = 10 * 3600 * SECOND;

/// What a refilling cell still owes at `NOW` under the old parameters.
const REFILLING: Nanos = SECOND / 2;

fn gcra(rate: &str) -> Gcra {
    Gcra::new(&rate.parse::<Quota>().expect("a valid test quota")).expect("GCRA takes any quota")
}

fn old() -> Gcra {
    gcra("1/h")
}

fn new() -> Gcra {
    gcra("3/s")
}

/// `burst × T`: how far ahead of `now` a TAT may run under `gcra` (one full refill).
fn tolerance(gcra: &Gcra) -> Nanos {
    gcra.capacity() * gcra.quota().emission_interval_nanos()
}

/// What the cell holds before the conversion (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    Fresh,
    /// The old burst taken at `NOW`.
    Spent,
    /// The old burst taken so long before `NOW` that `REFILLING` is still owed.
    Refilling,
}

impl Start {
    /// The most any serial order admits at `NOW` (module docs), for 1/h → 3/s.
    fn most(self) -> u64 {
        match self {
            Start::Fresh => 3,
            Start::Spent => 0,
            Start::Refilling => 2,
        }
    }
}

/// Where the conversion waits for the checkers to finish, if anywhere (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hold {
    /// No wait: loom schedules everything.
    Free,
    /// In `publish`, after the store: the checks run between the conversion's first load and
    /// its CAS loop.
    AfterPublish,
    /// In the conversion's first clock reading, which `adopt` takes between a CAS attempt's
    /// load and its CAS.
    BeforeCas,
}

/// Which parameters a check used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Used {
    Old,
    New,
}

/// One execution: per checker thread, each check's parameters and whether it was admitted;
/// what a greedy drain under the new parameters admitted at `NOW` after the joins; and whether
/// the key was still locked at `NOW` + the new tolerance.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Outcome {
    checks: Vec<Vec<(Used, bool)>>,
    drained: u64,
    locked: bool,
}

impl Outcome {
    fn all_checks(&self) -> impl Iterator<Item = &(Used, bool)> {
        self.checks.iter().flatten()
    }

    fn admitted(&self) -> u64 {
        self.all_checks().filter(|(_, admitted)| *admitted).count() as u64 + self.drained
    }

    fn admitted_an_old_check(&self) -> bool {
        self.all_checks().any(|&check| check == (Old, true))
    }
}

/// An expected outcome: each checker thread's `(parameters, admitted)` in order.
fn outcome(checks: &[&[(Used, bool)]], drained: u64, locked: bool) -> Outcome {
    Outcome { checks: checks.iter().map(|c| c.to_vec()).collect(), drained, locked }
}

/// Runs one execution: `new.adopt(&cell, &old, …)` on the main thread against one checker
/// thread per entry of `checkers` (running that many unit checks), from `start`, the
/// conversion waiting for the checkers where `hold` says. Asserts the bound every execution
/// meets (claim 2's weak form) and returns the outcome.
fn race(old: Gcra, new: Gcra, start: Start, checkers: &[usize], hold: Hold) -> Outcome {
    let cell = Arc::new(old.new_cell());
    let taken_at = match start {
        Start::Fresh => None,
        Start::Spent => Some(NOW),
        Start::Refilling => Some(NOW - tolerance(&old) + REFILLING),
    };
    if let Some(at) = taken_at {
        let taken = old.check(&cell, at, old.capacity()).expect("a live cell");
        assert!(taken.is_allowed(), "a fresh bucket holds its burst: {taken:?}");
    }
    let published = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = checkers
        .iter()
        .map(|&checks| {
            let (cell, published, finished) =
                (Arc::clone(&cell), Arc::clone(&published), Arc::clone(&finished));
            thread::spawn(move || -> Vec<(Used, bool)> {
                let decisions = (0..checks)
                    .map(|_| {
                        // Acquire: pairs with `publish`'s Release, as the override map's
                        // lookup pairs with its insert.
                        let used = if published.load(Ordering::Acquire) { New } else { Old };
                        let params = if used == New { &new } else { &old };
                        (used, params.check(&cell, NOW, 1).expect("never retired").is_allowed())
                    })
                    .collect();
                // Release: a held conversion resumes after these checks (its Acquire below).
                finished.fetch_add(1, Ordering::Release);
                decisions
            })
        })
        .collect();
    let wait_for_the_checkers = || {
        while finished.load(Ordering::Acquire) < checkers.len() {
            thread::yield_now();
        }
    };
    let first_reading = std::cell::Cell::new(true);
    let now = || {
        if hold == Hold::BeforeCas && first_reading.replace(false) {
            wait_for_the_checkers();
        }
        NOW
    };
    new.adopt(&cell, &old, &now, &mut || {
        // Release: the override map's insert; see the checkers' Acquire.
        published.store(true, Ordering::Release);
        if hold == Hold::AfterPublish {
            wait_for_the_checkers();
        }
    });
    let checks = handles.into_iter().map(|h| h.join().expect("checker thread")).collect();

    let drained = drain(&new, &cell);
    let debt = new.peek(&cell, NOW, 0).reset_after_nanos();
    let locked = !new.peek(&cell, NOW + tolerance(&new), 1).is_allowed();
    let outcome = Outcome { checks, drained, locked };
    let longest = tolerance(&old).max(tolerance(&new));
    assert!(
        new.peek(&cell, NOW + longest, 1).is_allowed(),
        "locked past the longer tolerance: {debt} ns owed, {outcome:?}"
    );
    outcome
}

/// Unit checks under `gcra` at `NOW` until one is denied (at most its burst pass): how many
/// passed.
fn drain(gcra: &Gcra, cell: &GcraCell) -> u64 {
    (0..=gcra.capacity())
        .take_while(|_| gcra.check(cell, NOW, 1).expect("never retired").is_allowed())
        .count() as u64
}

/// Runs `race` (1/h → 3/s) in every interleaving, asserts claims 1 and 2 in each, and that
/// the outcomes seen are exactly `expected`.
fn adopt_model(start: Start, checkers: &'static [usize], hold: Hold, expected: Vec<Outcome>) {
    let observed = Observed::new();
    let seen = observed.clone();
    model(move || {
        let outcome = race(old(), new(), start, checkers, hold);
        let (admitted, most) = (outcome.admitted(), start.most());
        assert!(admitted <= most, "{start:?}, {hold:?}: {admitted} admitted (most {most}): {outcome:?}");
        let late_old_check_possible = hold != Hold::AfterPublish && outcome.admitted_an_old_check();
        assert!(!outcome.locked || late_old_check_possible, "{start:?}, {hold:?}: locked: {outcome:?}");
        seen.record(outcome);
    });
    let expected: BTreeSet<Outcome> = expected.into_iter().collect();
    assert_eq!(observed.seen(), expected, "{start:?}, {checkers:?}, {hold:?}: outcomes seen");
}

/// Fresh cell, one thread checking twice. Its first check always finds the cell as full as a
/// fresh one (the conversion keeps a fresh cell fresh): an old check takes the whole bucket
/// (1 in all; `locked` where it ran after the conversion: the known defect), two new checks
/// leave one cell for the drain (3).
fn fresh_two_checks(hold: Hold) -> Vec<Outcome> {
    let mut expected = vec![outcome(&[&[(New, true), (New, true)]], 1, false)];
    for locked in lockouts(hold) {
        expected.push(outcome(&[&[(Old, true), (Old, false)]], 0, locked));
        expected.push(outcome(&[&[(Old, true), (New, false)]], 0, locked));
    }
    expected
}

/// Fresh cell, two threads checking once each: whichever check writes first decides. An
/// admitted old check leaves nothing (1 in all); otherwise the new checks and the drain share
/// the new burst (3), and an old check after a new one is denied (1 h on top of its TAT is
/// past 1/h's tolerance).
fn fresh_two_checkers(hold: Hold) -> Vec<Outcome> {
    let mut expected = vec![
        outcome(&[&[(Old, false)], &[(New, true)]], 2, false),
        outcome(&[&[(New, true)], &[(Old, false)]], 2, false),
        outcome(&[&[(New, true)], &[(New, true)]], 1, false),
    ];
    for locked in lockouts(hold) {
        expected.push(outcome(&[&[(Old, true)], &[(Old, false)]], 0, locked));
        expected.push(outcome(&[&[(Old, false)], &[(Old, true)]], 0, locked));
        expected.push(outcome(&[&[(Old, true)], &[(New, false)]], 0, locked));
        expected.push(outcome(&[&[(New, false)], &[(Old, true)]], 0, locked));
    }
    expected
}

/// Whether an admitted old check can leave the key locked: only where it can run after the
/// conversion (module docs, known defects).
fn lockouts(hold: Hold) -> Vec<bool> {
    if hold == Hold::AfterPublish {
        vec![false]
    } else {
        vec![false, true]
    }
}

/// Spent cell: nothing is admitted whatever each check reads, and one new refill frees it.
fn spent(checkers: &[usize]) -> Vec<Outcome> {
    match checkers {
        [2] => [[Old, Old], [Old, New], [New, New]]
            .iter()
            .map(|[a, b]| outcome(&[&[(*a, false), (*b, false)]], 0, false))
            .collect(),
        [1, 1] => [Old, New]
            .into_iter()
            .flat_map(|a| [Old, New].map(|b| outcome(&[&[(a, false)], &[(b, false)]], 0, false)))
            .collect(),
        _ => unreachable!("the models run [2] and [1, 1]"),
    }
}

#[test]
fn fresh_cell_free() {
    adopt_model(Start::Fresh, &[2], Hold::Free, fresh_two_checks(Hold::Free));
    adopt_model(Start::Fresh, &[1, 1], Hold::Free, fresh_two_checkers(Hold::Free));
}

/// The window loom misses by itself (module docs): here two new checks before the CAS loop
/// (TAT 2T ahead) must keep their debt, or the drain finds 2 cells and 4 pass.
#[test]
fn fresh_cell_checks_after_publish() {
    adopt_model(Start::Fresh, &[2], Hold::AfterPublish, fresh_two_checks(Hold::AfterPublish));
    adopt_model(Start::Fresh, &[1, 1], Hold::AfterPublish, fresh_two_checkers(Hold::AfterPublish));
}

/// A fresh cell owes nothing, so the conversion's attempt stores nothing and has no CAS to
/// fail: the checks land after it, as in the free model.
#[test]
fn fresh_cell_checks_before_the_cas() {
    adopt_model(Start::Fresh, &[2], Hold::BeforeCas, fresh_two_checks(Hold::BeforeCas));
    adopt_model(Start::Fresh, &[1, 1], Hold::BeforeCas, fresh_two_checkers(Hold::BeforeCas));
}

#[test]
fn spent_cell() {
    for hold in [Hold::Free, Hold::AfterPublish, Hold::BeforeCas] {
        adopt_model(Start::Spent, &[2], hold, spent(&[2]));
        adopt_model(Start::Spent, &[1, 1], hold, spent(&[1, 1]));
    }
}

/// Refilling cell, free: an old check is always denied; a new check after the conversion
/// finds 2 cells (2 in all), one in the race reads the unconverted 0.5 s and leaves nothing
/// (1 in all: stricter than any serial order, never more).
#[test]
fn refilling_cell_free() {
    adopt_model(
        Start::Refilling,
        &[2],
        Hold::Free,
        vec![
            outcome(&[&[(Old, false), (Old, false)]], 2, false),
            outcome(&[&[(Old, false), (New, true)]], 0, false), // in the race
            outcome(&[&[(Old, false), (New, true)]], 1, false), // after the conversion
            outcome(&[&[(New, true), (New, false)]], 0, false), // the first in the race
            outcome(&[&[(New, true), (New, true)]], 0, false),  // both after
        ],
    );
    adopt_model(
        Start::Refilling,
        &[1, 1],
        Hold::Free,
        vec![
            outcome(&[&[(Old, false)], &[(Old, false)]], 2, false),
            outcome(&[&[(Old, false)], &[(New, true)]], 0, false),
            outcome(&[&[(Old, false)], &[(New, true)]], 1, false),
            outcome(&[&[(New, true)], &[(Old, false)]], 0, false),
            outcome(&[&[(New, true)], &[(Old, false)]], 1, false),
            outcome(&[&[(New, true)], &[(New, false)]], 0, false),
            outcome(&[&[(New, false)], &[(New, true)]], 0, false),
            outcome(&[&[(New, true)], &[(New, true)]], 0, false),
        ],
    );
}

/// Refilling cell with every check before the conversion's CAS (either hold): a new check
/// reads the unconverted 0.5 s, is admitted (0.833 s ≤ 1 s), and is kept: nothing after it.
/// Under [`Hold::BeforeCas`] its write fails the conversion's CAS, whose retry takes the raced
/// branch; converting that TAT as a 1/h state would scale its 0.833 s down to 231 µs and give
/// the drain 2 more (3 in all).
#[test]
fn refilling_cell_checks_in_the_race() {
    for hold in [Hold::AfterPublish, Hold::BeforeCas] {
        adopt_model(
            Start::Refilling,
            &[2],
            hold,
            vec![
                outcome(&[&[(Old, false), (Old, false)]], 2, false),
                outcome(&[&[(Old, false), (New, true)]], 0, false),
                outcome(&[&[(New, true), (New, false)]], 0, false),
            ],
        );
        adopt_model(
            Start::Refilling,
            &[1, 1],
            hold,
            vec![
                outcome(&[&[(Old, false)], &[(Old, false)]], 2, false),
                outcome(&[&[(Old, false)], &[(New, true)]], 0, false),
                outcome(&[&[(New, true)], &[(Old, false)]], 0, false),
                outcome(&[&[(New, true)], &[(New, false)]], 0, false),
                outcome(&[&[(New, false)], &[(New, true)]], 0, false),
            ],
        );
    }
}

/// Known defect (module docs): a check that chose 1/h before `publish` and runs after the
/// conversion leaves 1 h of debt in a 3/s bucket; every serial order frees it after 1 s.
#[test]
#[ignore = "known defect: an old-parameter check after the conversion locks the key"]
fn a_late_old_check_locks_the_key() {
    model(|| {
        let outcome = race(old(), new(), Start::Fresh, &[1], Hold::Free);
        assert!(!outcome.locked, "locked past a full 3/s refill: {outcome:?}");
    });
}

/// Known defect (module docs): a cell spent under 2/min is converted to a spent 3/s bucket,
/// which a check that chose 2/min before `publish` and runs after the conversion admits once;
/// every serial order admits nothing.
#[test]
#[ignore = "known defect: an old-parameter check after the conversion over-admits"]
fn a_late_old_check_over_admits_a_spent_cell() {
    model(|| {
        let outcome = race(gcra("2/m"), new(), Start::Spent, &[1], Hold::Free);
        assert_eq!(outcome.admitted(), 0, "a spent bucket admitted: {outcome:?}");
    });
}

/// Known defect (module docs): tightening 3/s → 2/min on a cell spent under 3/s, a check under
/// 2/min between the conversion's load and its CAS reads the unconverted 1 s of debt and is
/// admitted; every serial order admits nothing.
#[test]
#[ignore = "known defect: a new-parameter check before the conversion's CAS over-admits"]
fn a_new_check_in_the_race_over_admits_a_spent_cell() {
    model(|| {
        let outcome = race(new(), gcra("2/m"), Start::Spent, &[1], Hold::AfterPublish);
        assert_eq!(outcome.admitted(), 0, "a spent bucket admitted: {outcome:?}");
    });
}
