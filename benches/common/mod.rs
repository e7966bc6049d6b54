//! Shared bench helpers: pre-generated key sequences (the RNG is never timed), a smoke-mode
//! switch, and a two-thread runner that starts timing after a barrier.
#![allow(dead_code)] // each bench binary uses a different subset

use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Length of every pre-generated lookup sequence (a power of two, so `i & SEQ_MASK` wraps).
pub const SEQ_LEN: usize = 1 << 20;
/// `SEQ_LEN - 1`.
pub const SEQ_MASK: usize = SEQ_LEN - 1;

/// Whether criterion runs in smoke mode (`cargo bench -- --test`): every bench runs once, so
/// setups are kept small where that does not change what is exercised.
pub fn smoke() -> bool {
    std::env::args().any(|a| a == "--test")
}

/// The keyed table sizes to build: `TOLLGATE_BENCH_KEYS` (comma-separated, e.g. `10000`) when
/// set, so a run focused on some sizes skips building the others (10⁶ keys of a sliding log
/// take minutes and 0.8 GB); else 1, 10⁴ and 10⁶ (10⁵ in smoke mode).
#[allow(dead_code)] // not every bench that includes this module builds keyed tables
pub fn table_sizes() -> Vec<usize> {
    if let Ok(list) = std::env::var("TOLLGATE_BENCH_KEYS") {
        let sizes: Vec<usize> = list.split(',').filter_map(|s| s.trim().parse().ok()).collect();
        if !sizes.is_empty() {
            return sizes;
        }
    }
    vec![1, 10_000, if smoke() { 100_000 } else { 1_000_000 }]
}

/// SplitMix64: a tiny deterministic generator, good enough to scatter keys and pick lookups.
#[derive(Clone, Debug)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n ≥ 1`; the modulo bias is irrelevant for a benchmark).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// `n` distinct-looking random `u64` keys (seeded, so every run uses the same ones).
pub fn keys(n: usize, seed: u64) -> Vec<u64> {
    let mut rng = SplitMix(seed);
    (0..n).map(|_| rng.next_u64()).collect()
}

/// A lookup sequence of `SEQ_LEN` keys drawn uniformly at random from `keys`.
pub fn lookups(keys: &[u64], seed: u64) -> Vec<u64> {
    let mut rng = SplitMix(seed ^ 0xA5A5_A5A5);
    (0..SEQ_LEN).map(|_| keys[rng.below(keys.len())]).collect()
}

/// Runs `per_thread(thread_index, iters)` on 2 threads; each starts its clock after a shared
/// barrier, so thread start-up is not timed. Returns the longest thread's time (the wall time
/// for `2 × iters` operations).
pub fn two_threads(iters: u64, per_thread: impl Fn(usize, u64) + Sync) -> Duration {
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|t| {
                let barrier = &barrier;
                let per_thread = &per_thread;
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    per_thread(t, iters);
                    start.elapsed()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_default()).max().unwrap_or_default()
    })
}
