//! Loom models of the windowed algorithms and composite refunds, driving the real code (the
//! pure steps through `cell::update`, the sliding log's claim protocol, composite refunds).
//! Each stays small: 2–3 threads, one or two checks each.
#![cfg(tollgate_loom)]

use std::sync::Arc;
use std::time::Duration;

use loom::thread;
use loom_tests::model;
use tollgate::{
    Algorithm, Composite, Decision, DefaultHashBuilder, FixedWindow, Gcra, KeyedLimiter, Limiter,
    ManualClock, Quota, SlidingLog, SlidingWindow,
};

const SECOND: u64 = 1_000_000_000;

/// Runs one unit check on each of `threads` threads (the model's main thread included) and
/// returns all decisions.
fn race<A: Algorithm>(limiter: &Arc<Limiter<ManualClock, A>>, threads: usize) -> Vec<Decision> {
    let handles: Vec<_> = (1..threads)
        .map(|_| {
            let limiter = Arc::clone(limiter);
            thread::spawn(move || limiter.check())
        })
        .collect();
    let mut all = vec![limiter.check()];
    all.extend(handles.into_iter().map(|h| h.join().expect("checker thread")));
    all
}

fn admitted(all: &[Decision]) -> Vec<u64> {
    let mut r: Vec<u64> = all.iter().filter(|d| d.is_allowed()).map(Decision::remaining).collect();
    r.sort_unstable();
    r
}

/// Fixed window: two checks race at the first instant of a new window, one of them performing
/// the rollover CAS `(0, 2) → (1, 1)` and the other the increment `(1, 1) → (1, 2)`, or both
/// rollovers with one failing and retrying from the value it got back. Exactly `limit` (2).
#[test]
fn fixed_window_rollover_vs_increment() {
    model(|| {
        let clock = ManualClock::new();
        let fixed = FixedWindow::from_quota(Quota::per_second(2).expect("quota")).expect("fits");
        let limiter = Arc::new(Limiter::with_algorithm(fixed, clock.clone()));
        assert!(limiter.check_n(2).expect("fits").is_allowed());
        clock.set(SECOND);
        let all = race(&limiter, 3);
        assert_eq!(admitted(&all), vec![0, 1], "{all:?}");
        for d in all.iter().filter(|d| !d.is_allowed()) {
            assert_eq!(d.retry_after(), Some(Duration::from_secs(1)));
        }
    });
}

/// Sliding window: half-way into window 1 the previous window's 2 cells weigh 1, so exactly
/// one of two racing checks (both rolling the word over) is admitted.
#[test]
fn sliding_window_rollover() {
    model(|| {
        let clock = ManualClock::new();
        let sliding = SlidingWindow::from_quota(Quota::per_second(2).expect("quota")).expect("fits");
        let limiter = Arc::new(Limiter::with_algorithm(sliding, clock.clone()));
        assert!(limiter.check_n(2).expect("fits").is_allowed());
        clock.set(SECOND + SECOND / 2);
        let all = race(&limiter, 2);
        assert_eq!(admitted(&all), vec![0], "{all:?}");
    });
}

/// Sliding log: three checks race for two free slots (head CAS, then stamp writes, readers that
/// may see a claimed-but-unwritten slot). Exactly two are admitted, and afterwards the log is
/// full until the stamps expire.
#[test]
fn sliding_log_claim() {
    model(|| {
        let clock = ManualClock::starting_at(5);
        let log = SlidingLog::from_quota(Quota::per_second(2).expect("quota")).expect("fits");
        let limiter = Arc::new(Limiter::with_algorithm(log, clock.clone()));
        let all = race(&limiter, 3);
        assert_eq!(admitted(&all), vec![0, 1], "{all:?}");
        assert!(!limiter.check().is_allowed());
        clock.set(5 + SECOND);
        assert!(limiter.check_n(2).expect("fits").is_allowed());
    });
}

/// Sliding log, second lap: the ring is full of expired stamps, two checks race to overwrite
/// the oldest slot; a reader may see the head moved before the winner's stamp is written.
#[test]
fn sliding_log_claim_second_lap() {
    model(|| {
        let clock = ManualClock::new();
        let log = SlidingLog::from_quota(Quota::per_second(1).expect("quota")).expect("fits");
        let limiter = Arc::new(Limiter::with_algorithm(log, clock.clone()));
        assert!(limiter.check().is_allowed());
        clock.set(SECOND);
        let all = race(&limiter, 2);
        assert_eq!(admitted(&all), vec![0], "{all:?}");
        let after = limiter.check();
        assert!(!after.is_allowed(), "{after:?}");
    });
}

/// Sliding log, the search for `remaining` and its boundary hint: stamps at 0, 0.4 s and 0.8 s
/// in a log of 3 per second; at 1 s the oldest has expired and two are in the window, so both
/// racing checks search (reading and writing the hint) before either claims. Exactly one is
/// admitted, with nothing left; later counts are exact from whatever hint the race left.
#[test]
fn sliding_log_search_hint() {
    model(|| {
        let clock = ManualClock::new();
        let log = SlidingLog::from_quota(Quota::per_second(3).expect("quota")).expect("fits");
        let limiter = Arc::new(Limiter::with_algorithm(log, clock.clone()));
        for t in [0, 4, 8] {
            clock.set(t * SECOND / 10);
            assert!(limiter.check().is_allowed());
        }
        clock.set(SECOND);
        let all = race(&limiter, 2);
        assert_eq!(admitted(&all), vec![0], "{all:?}");
        clock.set(SECOND + SECOND / 2); // 0.4 s has expired: 0.8 s and 1 s remain
        assert_eq!(limiter.peek().remaining(), 0); // one free, which the peeked cell would take
        clock.set(SECOND + SECOND * 9 / 10); // and 0.8 s: only 1 s remains
        assert_eq!(limiter.peek().remaining(), 1);
    });
}

/// Composite refund vs a concurrent check: `a` = 3 per minute, `b` = 1 per second. Two checks
/// race; exactly one passes `b`, the other's `a` cells are refunded through `a`'s CAS loop while
/// the winner may be incrementing `a` concurrently. Afterwards `a` holds exactly 1.
#[test]
fn composite_refund_vs_concurrent_check() {
    model(|| {
        let a = FixedWindow::from_quota(Quota::per_minute(3).expect("quota")).expect("fits");
        let b = FixedWindow::from_quota(Quota::per_second(1).expect("quota")).expect("fits");
        let c = Composite::of(a, b);
        let shared = Arc::new((c, c.new_cell()));
        let other = Arc::clone(&shared);
        let h = thread::spawn(move || other.0.check(&other.1, 7, 1).expect("live cell"));
        let mine = shared.0.check(&shared.1, 7, 1).expect("live cell");
        let theirs = h.join().expect("checker thread");
        assert_eq!(u8::from(mine.is_allowed()) + u8::from(theirs.is_allowed()), 1);
        let (c, cell) = (&shared.0, &shared.1);
        assert_eq!(c.first().peek(cell.first(), 7, 0).remaining(), 2, "refund landed exactly");
        assert_eq!(c.second().peek(cell.second(), 7, 0).remaining(), 0);
    });
}

/// Sweeper vs checker on a fixed-window key whose window just ended: the key is either retired
/// before the check (which then starts a fresh cell) or the check moves it first (the retire
/// fails). Either way the check is admitted with `remaining = 1` and nothing is lost.
#[test]
fn fixed_window_sweeper_vs_checker() {
    model(|| {
        let clock = ManualClock::new();
        let fixed = FixedWindow::from_quota(Quota::per_second(2).expect("quota")).expect("fits");
        let limiter: Arc<KeyedLimiter<u8, ManualClock, DefaultHashBuilder, FixedWindow>> =
            Arc::new(KeyedLimiter::build(fixed, clock.clone(), 0, DefaultHashBuilder::default()));
        assert!(limiter.check_n(&1, 2).expect("fits").is_allowed());
        clock.set(SECOND);
        let sweeper = Arc::clone(&limiter);
        let h = thread::spawn(move || sweeper.sweep());
        let d = limiter.check(&1).expect("no key limit");
        let evicted = h.join().expect("sweeper thread");
        assert!(d.is_allowed() && d.remaining() == 1, "{d:?} (evicted {evicted})");
        assert_eq!(limiter.check(&1).expect("no key limit").remaining(), 0);
        assert!(!limiter.check(&1).expect("no key limit").is_allowed());
    });
}

/// A composite key of `a` = GCRA 1/s and `b` = one cell per 2 s (GCRA, or a sliding log of
/// limit 1: its ring is the word the sweep must judge through the head), spent at time 0: `a`
/// is idle from 1 s, `b` from 2 s.
fn spent_composite<B: Algorithm>(clock: &ManualClock, b: B) -> Arc<CompositeLimiter<B>> {
    let a = Gcra::new(&Quota::per_second(1).expect("quota")).expect("fits");
    let limiter = KeyedLimiter::build(Composite::of(a, b), clock.clone(), 0, DefaultHashBuilder::default());
    assert!(limiter.check(&1).expect("no key limit").is_allowed());
    Arc::new(limiter)
}

type Both<B> = Composite<Gcra, B>;

/// The keyed composite limiter the eviction models share.
type CompositeLimiter<B> = KeyedLimiter<u8, ManualClock, DefaultHashBuilder, Both<B>>;

fn every_two_seconds() -> Quota {
    Quota::new(1, Duration::from_secs(2)).expect("quota")
}

/// The `b` limits the composite models run with.
fn gcra_b() -> Gcra {
    Gcra::new(&every_two_seconds()).expect("fits")
}

fn log_b() -> SlidingLog {
    SlidingLog::new(&every_two_seconds()).expect("fits")
}

/// The spent composite key at `at`: one thread moves the clock to `sweep_at` and sweeps while
/// `checkers` threads (the main one included) check the key. Returns the limiter, how many
/// checks were admitted, and how many keys the sweep evicted.
fn race_composite<B: Algorithm>(
    b: B,
    at: u64,
    sweep_at: u64,
    checkers: usize,
) -> (Arc<CompositeLimiter<B>>, usize, usize) {
    let clock = ManualClock::new();
    let limiter = spent_composite(&clock, b);
    clock.set(at);
    let (sweeper, sweep_clock) = (Arc::clone(&limiter), clock.clone());
    let s = thread::spawn(move || {
        sweep_clock.set(sweep_at);
        sweeper.sweep()
    });
    let others: Vec<_> = (1..checkers)
        .map(|_| {
            let checker = Arc::clone(&limiter);
            thread::spawn(move || checker.check(&1).expect("no key limit").is_allowed())
        })
        .collect();
    let mut admitted = usize::from(limiter.check(&1).expect("no key limit").is_allowed());
    for c in others {
        admitted += usize::from(c.join().expect("checker thread"));
    }
    let evicted = s.join().expect("sweeper thread");
    (limiter, admitted, evicted)
}

/// Composite eviction (src/window/composite.rs, "Eviction"), both words idle at 2 s: one
/// thread sweeps while two check. The sweep's holds are restored by checkers or turned into a
/// retirement, and either way exactly one check is admitted (none lost, none extra from a fresh
/// cell), and the key is then spent in both limits.
fn sweeper_vs_checkers_both_idle<B: Algorithm>(b: fn() -> B) {
    model(move || {
        let (limiter, admitted, _) = race_composite(b(), 2 * SECOND, 2 * SECOND, 2);
        assert_eq!(admitted, 1);
        let d = limiter.check(&1).expect("no key limit");
        assert!(!d.is_allowed(), "the key must be spent: {d:?}");
        assert_eq!(limiter.len(), 1);
    });
}

#[test]
fn composite_sweeper_vs_checkers_both_idle() {
    sweeper_vs_checkers_both_idle(gcra_b);
}

#[test]
fn composite_with_log_sweeper_vs_checkers_both_idle() {
    sweeper_vs_checkers_both_idle(log_b);
}

/// Composite eviction with `b` still busy at 1 s (`a` idle): the sweep holds `a`, finds `b`
/// busy and restores `a`, racing two checks that `b` denies (their takes from `a` refunded).
/// The key must not be evicted (that would forget `b`'s state and admit a check), no check is
/// admitted, and at 2 s exactly one more is.
fn sweeper_vs_checkers_second_busy<B: Algorithm>(b: fn() -> B) {
    model(move || {
        let (limiter, admitted, evicted) = race_composite(b(), SECOND, SECOND, 2);
        assert_eq!((admitted, evicted), (0, 0), "b's state was lost");
        limiter.clock().set(2 * SECOND);
        assert!(limiter.check(&1).expect("no key limit").is_allowed());
        assert!(!limiter.check(&1).expect("no key limit").is_allowed());
    });
}

#[test]
fn composite_sweeper_vs_checkers_second_busy() {
    sweeper_vs_checkers_second_busy(gcra_b);
}

#[test]
fn composite_with_log_sweeper_vs_checkers_second_busy() {
    sweeper_vs_checkers_second_busy(log_b);
}

/// Composite eviction against checks whose clock read predates the sweep's: at 2 s one or two
/// threads check while another moves the clock to 3 s and sweeps. A check may take from `a` at
/// 2 s, stall, and see the sweep judge `a` idle at 3 s; the sweep must then still find `b` held
/// against it (or busy), never retire the key under an admission. Exactly one check is admitted
/// and a check at 3 s is denied (`b`: next cell at 4 s). With two checkers, a check that
/// restores a HOLD on `b` must never do so for a sweep that can still retire the key.
fn sweep_after_the_clock_moves_under_checks<B: Algorithm>(b: fn() -> B) {
    for checkers in [1, 2] {
        model(move || {
            let (limiter, admitted, _) = race_composite(b(), 2 * SECOND, 3 * SECOND, checkers);
            assert_eq!(admitted, 1);
            let d = limiter.check(&1).expect("no key limit");
            assert!(!d.is_allowed(), "over-admission after the sweep: {d:?}");
        });
    }
}

#[test]
fn composite_sweep_after_the_clock_moves_under_checks() {
    sweep_after_the_clock_moves_under_checks(gcra_b);
}

#[test]
fn composite_with_log_sweep_after_the_clock_moves_under_checks() {
    sweep_after_the_clock_moves_under_checks(log_b);
}
