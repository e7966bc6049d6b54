//! The check path of an existing key performs no heap allocation (issue 3). A counting global
//! allocator is installed for this test binary only.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use tollgate::{KeyedLimiter, Limiter, ManualClock, Quota};

struct Counting;

thread_local! {
    /// Allocations made by this thread (tests run in parallel threads: a global count would
    /// see the other tests' allocations). Const-initialized, no destructor: using it inside
    /// the allocator never allocates.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count_one() {
    ALLOCATIONS.with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards every call unchanged to the system allocator; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn existing_key_checks_do_not_allocate() {
    let keyed: KeyedLimiter<String, _> =
        KeyedLimiter::with_clock(Quota::per_second(10).unwrap(), ManualClock::new());
    let direct = Limiter::with_clock(Quota::per_second(10).unwrap(), ManualClock::new());
    // Warm up: insert the keys (allocates once each) and let papaya register this thread.
    for key in ["alice", "bob"] {
        let _ = keyed.check(key);
    }
    let n = allocations_during(|| {
        for i in 0..20_000 {
            let key = if i % 2 == 0 { "alice" } else { "bob" };
            let d = keyed.check(key).unwrap();
            let _ = std::hint::black_box(d);
            let _ = std::hint::black_box(keyed.peek(key));
            let _ = std::hint::black_box(direct.check());
            let _ = std::hint::black_box(direct.check_n(3).unwrap());
        }
        // Through a pinned handle, admissions and denials alike (the clock moves on).
        let pinned = keyed.pin();
        for i in 0..20_000 {
            let key = if i % 2 == 0 { "alice" } else { "bob" };
            if i % 4 == 0 {
                keyed.clock().advance(std::time::Duration::from_millis(100));
            }
            let _ = std::hint::black_box(pinned.check_n(key, 1).unwrap());
        }
    });
    assert_eq!(n, 0, "the hot path allocated {n} times");
    // A new key does allocate (its entry and the owned key): the counter does see allocations.
    let m = allocations_during(|| {
        let _ = keyed.check("carol");
    });
    assert!(m >= 1);
}

/// Every algorithm's existing-key check, and a peek of an absent key (a sliding log's fresh
/// ring is reported without being built), allocate nothing.
#[test]
fn window_checks_and_absent_peeks_do_not_allocate() {
    use tollgate::{Algorithm, Composite, DefaultHashBuilder, FixedWindow, Gcra, SlidingLog, SlidingWindow};
    fn run<A: Algorithm>(algorithm: A) {
        let keyed: KeyedLimiter<String, ManualClock, DefaultHashBuilder, A> =
            KeyedLimiter::build(algorithm, ManualClock::new(), 0, DefaultHashBuilder::default());
        let _ = keyed.check("alice");
        let n = allocations_during(|| {
            for _ in 0..1_000 {
                let _ = std::hint::black_box(keyed.check("alice"));
                let _ = std::hint::black_box(keyed.peek("nobody"));
            }
        });
        assert_eq!(n, 0, "{} allocated {n} times", std::any::type_name::<A>());
    }
    let q = Quota::per_second(100).unwrap();
    run(FixedWindow::new(&q).unwrap());
    run(SlidingWindow::new(&q).unwrap());
    run(SlidingLog::new(&q).unwrap());
    run(Composite::of(Gcra::new(&q).unwrap(), FixedWindow::new(&q).unwrap()));
}
