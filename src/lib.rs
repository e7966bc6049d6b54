#![doc = include_str!("../README.md")]
//!
//! # Guarantees
//!
//! * **Never over-admits.** Every check is one compare-and-swap on the key's packed state; two
//!   checks can never spend the same capacity. Loom models in `loom-tests/` check this on the
//!   production code.
//! * **Never panics on input.** Quotas are validated once ([`QuotaError`]); costs above the burst
//!   are [`InsufficientCapacity`]; a clock that goes backwards is treated as standing still.
//! * **Eviction changes no decision.** Only keys whose state equals a fresh key's are evicted,
//!   through a tombstone CAS that loses to any concurrent check.
//! * **Hot path:** for an existing key, no lock, no syscall, no allocation.
//!
//! # Choosing an algorithm
//!
//! * [`Gcra`] (default): token bucket / leaky bucket as a meter; smooth, one `u64` per key. Can
//!   pass up to `burst + n − 1` in one wall-clock period (a full burst plus the refill; `2n − 1`
//!   with the default burst `n`).
//! * [`FixedWindow`], [`SlidingWindow`] (weighted two-window counter) and [`SlidingLog`]
//!   (exact, `8·limit + 32` bytes per key): "`count` per window", compared in the
//!   [`window`] module's table; [`Composite`] puts several limits on one key, all or nothing.
//!   All are always compiled, and work direct and keyed like GCRA.
#![deny(missing_docs, unsafe_code, unsafe_op_in_unsafe_fn)]
#![warn(unreachable_pub, missing_debug_implementations, rust_2018_idioms)]

pub mod algorithm;
mod cell;
pub mod clock;
pub mod decision;
mod gcra;
#[cfg(feature = "tower")]
pub mod http;
mod keyed;
mod limiter;
pub mod quota;
#[cfg(feature = "redis")]
pub mod redis;
mod sync;
pub mod window;

pub use algorithm::{Algorithm, Gcra, GcraCell};
pub use cell::{Retired, WordState};
pub use clock::{CachedClock, Clock, ClockError, ManualClock, Nanos, QuantaClock};
pub use decision::{CheckError, Decision, InsufficientCapacity, Origin};
pub use keyed::{
    DefaultHashBuilder, FullTablePolicy, KeyedLimiter, PinnedLimiter, INLINE_SWEEP_COOLDOWN,
    MAX_PREALLOCATED_KEYS,
};
#[cfg(not(tollgate_loom))]
pub use keyed::{SweeperHandle, MIN_SWEEP_INTERVAL};
pub use limiter::{AsyncRateLimiter, Limiter, RateLimiter};
pub use quota::{Quota, QuotaError};
// Re-exports added by each area go below this line, one `pub use` per area.
pub use window::{
    Composite, CompositeCell, FixedWindow, FixedWindowCell, Receipt, SlidingLog, SlidingLogCell,
    SlidingWindow, SlidingWindowCell,
};
pub mod wait;
