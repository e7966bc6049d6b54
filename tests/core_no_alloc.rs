//! The check path of an existing key performs no heap allocation (issue 3). A counting global
//! allocator is installed for this test binary only.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use tollgate::{KeyedLimiter, Limiter, ManualClock, Quota};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call unchanged to the system allocator; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed); // Relaxed: a statistic read by this thread.
                                                     // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed); // Relaxed: as above.
                                                     // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    f();
    ALLOCATIONS.load(Ordering::Relaxed) - before
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
    });
    assert_eq!(n, 0, "the hot path allocated {n} times");
    // A new key does allocate (its entry and the owned key): the counter does see allocations.
    let m = allocations_during(|| {
        let _ = keyed.check("carol");
    });
    assert!(m >= 1);
}
