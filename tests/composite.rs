//! Composite refund stress: one sub-limit denies often; the final state of every sub-limit
//! equals the reference (exactly the composite's admissions), so nothing leaks or is lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

use tollgate::{
    Algorithm, Composite, FixedWindow, Gcra, Limiter, ManualClock, Quota, SlidingLog, SlidingWindow,
};

/// A composite and its one shared cell.
type Shared<A, B> = Arc<(Composite<A, B>, tollgate::CompositeCell<A, B>)>;

/// Runs `threads × per_thread` checks (costs 1–3) on one composite cell at a frozen `now`;
/// returns the composite and its cell, and the admitted cells.
fn stress<A: Algorithm, B: Algorithm>(
    c: Composite<A, B>,
    threads: usize,
    per_thread: u32,
    now: u64,
) -> (Shared<A, B>, u64) {
    let cell = c.new_cell();
    let shared = Arc::new((c, cell));
    let admitted = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (shared, admitted, barrier) = (shared.clone(), admitted.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..per_thread {
                    let cost = 1 + u64::from(i + t as u32) % 3;
                    if shared.0.check(&shared.1, now, cost).unwrap().is_allowed() {
                        admitted.fetch_add(cost, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    (shared, admitted.load(Ordering::Relaxed))
}

#[test]
fn window_refunds_are_exact_under_contention() {
    for threads in [2, 4, 8] {
        let a = FixedWindow::from_quota(Quota::per_minute(1000).unwrap()).unwrap();
        let b = SlidingWindow::from_quota(Quota::per_second(100).unwrap()).unwrap();
        let (s, admitted) = stress(Composite::of(a, b), threads, 400, 7);
        let (c, cell) = (&s.0, &s.1);
        let second_left = c.second().peek(cell.second(), 7, 0).remaining();
        assert_eq!(second_left, 100 - admitted, "b holds exactly the admissions");
        assert!(second_left <= 2, "b is full up to the last cost: {second_left} left");
        assert_eq!(c.first().peek(cell.first(), 7, 0).remaining(), 1000 - admitted, "{threads} threads");
    }
}

#[test]
fn log_as_the_last_limit_is_exact_under_contention() {
    // The sliding log goes last: it is never refunded (see `Composite`'s docs).
    for threads in [2, 4, 8] {
        let a = FixedWindow::from_quota(Quota::per_minute(500).unwrap()).unwrap();
        let b = SlidingLog::from_quota(Quota::per_second(60).unwrap()).unwrap();
        let (s, admitted) = stress(Composite::of(a, b), threads, 300, 3);
        let (c, cell) = (&s.0, &s.1);
        assert_eq!(c.first().peek(cell.first(), 3, 0).remaining(), 500 - admitted, "{threads} threads");
        let mut more = 0;
        while c.second().check(cell.second(), 3, 1).unwrap().is_allowed() {
            more += 1;
        }
        assert_eq!(more, 60 - admitted, "{threads} threads");
    }
}

#[test]
fn three_limits_nested_to_the_right() {
    let a = FixedWindow::from_quota(Quota::per_hour(10_000).unwrap()).unwrap();
    let b = SlidingWindow::from_quota(Quota::per_minute(2_000).unwrap()).unwrap();
    let c = FixedWindow::from_quota(Quota::per_second(50).unwrap()).unwrap();
    let (s, admitted) = stress(Composite::of(a, Composite::of(b, c)), 4, 200, 11);
    let (comp, cell) = (&s.0, &s.1);
    let inner = comp.second();
    assert_eq!(comp.first().peek(cell.first(), 11, 0).remaining(), 10_000 - admitted);
    assert_eq!(inner.first().peek(cell.second().first(), 11, 0).remaining(), 2_000 - admitted);
    assert_eq!(inner.second().peek(cell.second().second(), 11, 0).remaining(), 50 - admitted);
}

#[test]
fn gcra_first_never_over_admits_and_is_exact_single_threaded() {
    // Single thread: every refund finds its TAT untouched, so it is exact.
    let a = Gcra::from_quota(Quota::per_second(1000).unwrap());
    let b = FixedWindow::from_quota(Quota::per_second(10).unwrap()).unwrap();
    let c = Composite::of(a, b);
    let cell = c.new_cell();
    let mut admitted = 0;
    for _ in 0..100 {
        admitted += u64::from(c.check(&cell, 0, 1).unwrap().is_allowed());
    }
    assert_eq!(admitted, 10);
    assert_eq!(c.first().peek(cell.first(), 0, 0).remaining(), 990);
    // Contended: GCRA refunds are skipped when the TAT moved, so `a` may hold more than was
    // admitted (conservative) but never less.
    let (s, admitted) = stress(Composite::of(a, b), 4, 300, 0);
    let a_used = 1000 - s.0.first().peek(s.1.first(), 0, 0).remaining();
    assert!(a_used >= admitted, "{a_used} < {admitted}");
    assert_eq!(s.0.second().peek(s.1.second(), 0, 0).remaining(), 10 - admitted);
}

fn quota(text: &str) -> Quota {
    text.parse().unwrap()
}

/// A nested composite's denial reports how the admitting sub-limits stand, not what they would
/// hold after a take that did not happen: `standing(b)` peeks the inner composite, whose peek
/// merged its admitting sub-limit's after-`cost` remaining into a denial (remaining 0 and the
/// wrong limit while a unit check passes; review finding).
#[test]
fn nested_composite_denial_reports_what_is_left() {
    let inner =
        Composite::of(FixedWindow::new(&quota("4/s")).unwrap(), SlidingWindow::new(&quota("3/s")).unwrap());
    let c = Composite::of(Gcra::new(&quota("3/s")).unwrap(), inner);
    let cell = c.new_cell();
    assert!(c.check(&cell, 0, 2).unwrap().is_allowed()); // gcra 1 left, fixed 2, sliding 1
    let d = c.check(&cell, 0, 2).unwrap(); // gcra denies
    assert!(!d.is_allowed());
    assert!(c.peek(&cell, 0, 1).is_allowed()); // every sub-limit still has a cell
    assert_eq!((d.limit(), d.remaining()), (3, 1), "denial reported {d:?}");
}

/// `Composite::peek` previews the check: a weighted cost one sub-limit admits and the other
/// denies reports the admitting one as it stands.
#[test]
fn composite_peek_denial_matches_the_check() {
    let c =
        Composite::of(FixedWindow::new(&quota("4/s")).unwrap(), SlidingWindow::new(&quota("3/s")).unwrap());
    let cell = c.new_cell();
    assert!(c.check(&cell, 0, 2).unwrap().is_allowed()); // fixed 2 left, sliding 1 left
    let p = c.peek(&cell, 0, 2);
    assert!(!p.is_allowed());
    assert_eq!((p.limit(), p.remaining()), (3, 1), "peek reported {p:?}");
    let d = c.check(&cell, 0, 2).unwrap();
    assert_eq!((d.is_allowed(), d.limit(), d.remaining()), (false, 3, 1));
    assert_eq!(p.retry_after(), d.retry_after());
    // Unit cost through a limiter: peek names the limit the check is refused by.
    let limiter = Limiter::with_algorithm(c, ManualClock::new());
    assert!(limiter.check_n(3).unwrap().is_allowed()); // fixed 1 left, sliding 0 left
    let peeked = limiter.peek();
    let checked = limiter.check();
    assert!(!peeked.is_allowed() && !checked.is_allowed());
    assert_eq!((checked.limit(), checked.remaining()), (3, 0));
    assert_eq!((peeked.limit(), peeked.remaining()), (checked.limit(), checked.remaining()));
}
