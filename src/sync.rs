//! The std/loom switch: the only file that names loom (STYLE.md habit 4).
//!
//! Production code imports its atomics from here. Built with `--cfg tollgate_loom` (the crate
//! prefix keeps the cfg from flipping any dependency into loom mode), the same paths resolve to
//! loom's model-checked types, so `loom-tests/` checks the code that ships, not a copy.
//!
//! Gaps, kept here rather than at call sites:
//! - loom cannot see inside papaya (it uses std atomics), so under loom the keyed store swaps its
//!   map for a loom `Mutex<HashMap>` stand-in (see `keyed::map`); our cell protocol around the
//!   map is what the models check.
//! - `ManualClock` deliberately keeps a std atomic under loom: time is an input to the models, not
//!   part of the protocol under test, and a loom atomic would only multiply the explored
//!   interleavings without covering any of our code.
//!
//! We require native 64-bit atomics (`target_has_atomic = "64"`); on targets without them the
//! crate does not build, rather than silently falling back to a lock on the hot path.

#[cfg(not(target_has_atomic = "64"))]
compile_error!("tollgate needs native 64-bit atomics (target_has_atomic = \"64\")");

#[cfg(not(tollgate_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

#[cfg(tollgate_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// The loom stand-in for papaya needs a lock that loom can see.
#[cfg(tollgate_loom)]
pub(crate) use loom::sync::Mutex;

/// Spin hint for CAS retries (a no-op under loom, which yields instead).
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(not(tollgate_loom))]
    std::hint::spin_loop();
    #[cfg(tollgate_loom)]
    loom::thread::yield_now();
}
