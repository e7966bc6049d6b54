//! The measuring loop: N threads released by a barrier run checks over a pre-generated key
//! sequence until told to stop; one check in [`SAMPLE_EVERY`] is timed into a histogram.
//! Also the physical references (clock read, CAS, papaya get), timed the same way.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::Duration;

use hdrhistogram::Histogram;
use tollgate::{CachedClock, Clock, DefaultHashBuilder, QuantaClock};

use crate::spec::Distribution;
use crate::subjects::{Checker, Subject, Visitor, UPKEEP};

/// Checks between two looks at the stop flag.
pub(crate) const BATCH: u64 = 1024;
/// One check in this many is timed (two clock reads): ~0.2 ns/op of overhead on throughput.
pub(crate) const SAMPLE_EVERY: u64 = 128;
/// Length of every lookup sequence (a power of two).
pub(crate) const SEQ_LEN: usize = 1 << 20;

/// What one measured run produced.
#[derive(Debug)]
pub(crate) struct Measured {
    pub(crate) ops: u64,
    pub(crate) allowed: u64,
    /// Sum over threads of each thread's ops per second.
    pub(crate) ops_per_sec: f64,
    pub(crate) hist: Histogram<u64>,
}

fn new_hist() -> Histogram<u64> {
    // 1 ns to 60 s at 3 significant digits: constant, valid bounds (low ≥ 1, high ≥ 2·low,
    // sigfig ≤ 5), so this cannot fail on any input.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("constant histogram bounds are valid")
}

/// Runs `subject` on `threads` threads for `duration` (timing starts after a barrier).
/// `overhead` (ns) is subtracted from each latency sample: the cost of the timing itself.
pub(crate) fn measure<S: Subject>(
    subject: &S,
    seq: &[u64],
    threads: usize,
    duration: Duration,
    overhead: u64,
) -> Measured {
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(threads + 1);
    let clock = QuantaClock::new();
    let mask = seq.len() - 1;
    let results: Vec<(u64, u64, u64, Histogram<u64>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (stop, barrier, clock) = (&stop, &barrier, &clock);
                scope.spawn(move || {
                    let mut hist = new_hist();
                    let mut i = t * seq.len() / threads;
                    let (mut ops, mut allowed) = (0u64, 0u64);
                    barrier.wait();
                    let start = clock.now();
                    loop {
                        let subject = subject.batch();
                        for _ in 0..BATCH / SAMPLE_EVERY {
                            for _ in 0..SAMPLE_EVERY - 1 {
                                allowed += u64::from(subject.check(seq[i & mask]));
                                i = i.wrapping_add(1);
                            }
                            let t0 = clock.now();
                            let ok = subject.check(seq[i & mask]);
                            let t1 = clock.now();
                            allowed += u64::from(ok);
                            i = i.wrapping_add(1);
                            hist.saturating_record(t1.saturating_sub(t0).saturating_sub(overhead).max(1));
                        }
                        ops += BATCH;
                        // Relaxed: a stop request; a few more batches after it do no harm.
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    let elapsed = clock.now().saturating_sub(start).max(1);
                    (ops, allowed, elapsed, hist)
                })
            })
            .collect();
        barrier.wait();
        std::thread::sleep(duration);
        // Relaxed: see above.
        stop.store(true, Ordering::Relaxed);
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut hist = new_hist();
    let (mut ops, mut allowed, mut ops_per_sec) = (0, 0, 0.0);
    for (o, a, elapsed, h) in results {
        ops += o;
        allowed += a;
        ops_per_sec += o as f64 * 1e9 / elapsed as f64;
        let _ = hist.add(&h);
    }
    Measured { ops, allowed, ops_per_sec, hist }
}

/// Warm up (caches, branch predictors, the allocator) then measure.
pub(crate) struct Run<'a> {
    pub(crate) seq: &'a [u64],
    pub(crate) threads: usize,
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    pub(crate) overhead: u64,
}

impl Visitor for Run<'_> {
    type Out = Measured;
    fn visit<S: Subject>(self, subject: &S) -> Measured {
        let _ = measure(subject, self.seq, self.threads, self.warmup, self.overhead);
        measure(subject, self.seq, self.threads, self.duration, self.overhead)
    }
}

/// SplitMix64: tiny, seeded, deterministic.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix(pub(crate) u64);

impl SplitMix {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` random keys (seeded, the same for both libraries).
pub(crate) fn key_list(n: usize, seed: u64) -> Vec<u64> {
    let mut rng = SplitMix(seed);
    (0..n).map(|_| rng.next_u64()).collect()
}

/// The probability of each key (in `keys` order: rank 1 first for zipf).
pub(crate) fn key_probabilities(n: usize, dist: Distribution) -> Vec<f64> {
    let weights: Vec<f64> = match dist {
        Distribution::Uniform => vec![1.0; n],
        Distribution::Zipf(s) => (1..=n).map(|rank| (rank as f64).powf(-s)).collect(),
    };
    let total: f64 = weights.iter().sum();
    weights.into_iter().map(|w| w / total).collect()
}

/// A lookup sequence of [`SEQ_LEN`] keys drawn from `keys` with probabilities `probs`.
pub(crate) fn lookup_sequence(keys: &[u64], probs: &[f64], seed: u64) -> Vec<u64> {
    let mut rng = SplitMix(seed);
    if keys.len() <= 1 {
        return vec![keys.first().copied().unwrap_or(0); SEQ_LEN];
    }
    let mut cdf = Vec::with_capacity(probs.len());
    let mut acc = 0.0;
    for p in probs {
        acc += p;
        cdf.push(acc);
    }
    (0..SEQ_LEN)
        .map(|_| {
            let u = rng.next_f64() * acc;
            let idx = cdf.partition_point(|&c| c <= u).min(keys.len() - 1);
            keys[idx]
        })
        .collect()
}

/// Per-key admitted rate (per second) so that a share `target` of checks is denied, for a
/// total arrival rate `lambda` spread over keys with probabilities `probs` (fluid model:
/// denied share = Σ max(0, p_k − r/λ)).
pub(crate) fn rate_for_deny_share(target: f64, lambda: f64, probs: &[f64]) -> f64 {
    let denied = |r: f64| probs.iter().map(|&p| (p - r / lambda).max(0.0)).sum::<f64>();
    let p_max = probs.iter().copied().fold(0.0, f64::max);
    let (mut lo, mut hi) = (0.0, lambda * p_max);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if denied(mid) > target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Times `f` over `iters` calls; best of 3, in ns per call.
fn ns_per_call(iters: u64, mut f: impl FnMut(u64)) -> f64 {
    let clock = QuantaClock::new();
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = clock.now();
        for i in 0..iters {
            f(i);
        }
        let elapsed = clock.now().saturating_sub(start) as f64;
        best = best.min(elapsed / iters as f64);
    }
    best
}

/// The median cost of timing an empty span (two clock reads), subtracted from latency samples.
pub(crate) fn timer_overhead() -> u64 {
    let clock = QuantaClock::new();
    let mut samples: Vec<u64> = (0..100_000)
        .map(|_| {
            let t0 = clock.now();
            let t1 = clock.now();
            t1.saturating_sub(t0)
        })
        .collect();
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// One clock read (tollgate's default clock).
pub(crate) fn clock_read_ns() -> f64 {
    let clock = QuantaClock::new();
    ns_per_call(1 << 22, |_| {
        black_box(clock.now());
    })
}

/// One read of tollgate's cached clock (`None` if its upkeep thread cannot start).
pub(crate) fn cached_clock_read_ns() -> Option<f64> {
    let clock = CachedClock::new(UPKEEP).ok()?;
    Some(ns_per_call(1 << 22, |_| {
        black_box(clock.now());
    }))
}

/// One uncontended load + compare-exchange on an `AtomicU64` (what a check's CAS loop does).
pub(crate) fn cas_ns() -> f64 {
    let word = AtomicU64::new(0);
    ns_per_call(1 << 22, |_| {
        // Relaxed: a lone word timed for cost; it publishes nothing.
        let current = word.load(Ordering::Relaxed);
        let _ = black_box(word.compare_exchange(current, current + 1, Ordering::Relaxed, Ordering::Relaxed));
    })
}

/// One pinned papaya get (foldhash, like tollgate's map) over `keys`, looked up in `seq` order.
pub(crate) fn papaya_get_ns(keys: &[u64], seq: &[u64]) -> f64 {
    let map: papaya::HashMap<u64, AtomicU64, DefaultHashBuilder> =
        papaya::HashMap::with_capacity_and_hasher(keys.len(), DefaultHashBuilder::default());
    {
        let pinned = map.pin();
        for &k in keys {
            pinned.insert(k, AtomicU64::new(0));
        }
    }
    let mask = seq.len() - 1;
    ns_per_call(1 << 21, |i| {
        // Relaxed: reading a lone word, for cost only.
        black_box(map.pin().get(&seq[i as usize & mask]).map(|v| v.load(Ordering::Relaxed)));
    })
}
