//! tollgate vs governor 0.10 in the same process: direct and keyed checks (1 / 10⁴ / 10⁶ keys,
//! random order), 2 threads, contention, new-key insertion, sweep of 10⁶ idle keys, the deny
//! path, and the physical floor (a clock read, an uncontended CAS, a papaya get).
//!
//! Allow-path benches use a quota of 10⁹/s (burst 10⁹) in both libraries, so every check is
//! admitted and the state is written. `cargo bench --bench core -- --test` is CI's smoke run.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use governor::clock::{DefaultClock, QuantaUpkeepClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use tollgate::{CachedClock, Clock, DefaultHashBuilder, Gcra, KeyedLimiter, Limiter, QuantaClock, Quota};

mod common;
use common::{keys, lookups, smoke, two_threads, SEQ_LEN, SEQ_MASK};

/// Key-table sizes measured.
const SIZES: [usize; 3] = [1, 10_000, 1_000_000];
/// The upkeep interval of both libraries' coarse clocks.
const UPKEEP: Duration = Duration::from_millis(1);
/// Rate that admits every check (both libraries: emission interval 1 ns, burst 10⁹).
const ALLOW_ALL: u32 = 1_000_000_000;

type GovKeyed<C = DefaultClock> = governor::RateLimiter<
    u64,
    DashMapStateStore<u64>,
    C,
    NoOpMiddleware<<C as governor::clock::Clock>::Instant>,
>;
type GovUpkeepKeyed = GovKeyed<QuantaUpkeepClock>;
type TgCachedKeyed = KeyedLimiter<u64, CachedClock>;

fn tg_quota() -> Quota {
    match Quota::per_second(u64::from(ALLOW_ALL)) {
        Ok(q) => q,
        Err(e) => panic!("bench quota: {e}"),
    }
}

fn gov_quota() -> governor::Quota {
    governor::Quota::per_second(NonZeroU32::MIN.saturating_add(ALLOW_ALL - 1))
}

fn tg_cached_clock() -> CachedClock {
    static CLOCK: OnceLock<CachedClock> = OnceLock::new();
    CLOCK.get_or_init(|| CachedClock::new(UPKEEP).unwrap_or_else(|e| panic!("cached clock: {e}"))).clone()
}

/// governor's quanta (0.12) allows one upkeep thread per process: share one clock.
fn gov_upkeep_clock() -> QuantaUpkeepClock {
    static CLOCK: OnceLock<QuantaUpkeepClock> = OnceLock::new();
    CLOCK
        .get_or_init(|| {
            QuantaUpkeepClock::from_interval(UPKEEP).unwrap_or_else(|e| panic!("upkeep clock: {e}"))
        })
        .clone()
}

fn slot(n: usize) -> usize {
    SIZES.iter().position(|&s| s == n).unwrap_or(0)
}

/// The keys of a table of `n` (same for both libraries).
fn table_keys(n: usize) -> &'static [u64] {
    static KEYS: [OnceLock<Vec<u64>>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    KEYS[slot(n)].get_or_init(|| keys(n, 42 + n as u64))
}

/// A random-order lookup sequence over `table_keys(n)` (same for both libraries).
fn table_lookups(n: usize) -> &'static [u64] {
    static SEQ: [OnceLock<Vec<u64>>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    SEQ[slot(n)].get_or_init(|| lookups(table_keys(n), 7 + n as u64))
}

fn tg_keyed(n: usize) -> &'static KeyedLimiter<u64> {
    static L: [OnceLock<KeyedLimiter<u64>>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    L[slot(n)].get_or_init(|| {
        let limiter = KeyedLimiter::with_capacity(tg_quota(), n);
        for k in table_keys(n) {
            let _ = limiter.check(k);
        }
        limiter
    })
}

fn gov_keyed(n: usize) -> &'static GovKeyed {
    static L: [OnceLock<GovKeyed>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    L[slot(n)].get_or_init(|| {
        let limiter = governor::RateLimiter::new(
            gov_quota(),
            DashMapStateStore::with_capacity(n),
            DefaultClock::default(),
        );
        for k in table_keys(n) {
            let _ = limiter.check_key(k);
        }
        limiter
    })
}

fn tg_cached_keyed(n: usize) -> TgCachedKeyed {
    let limiter = KeyedLimiter::build(
        Gcra::from_quota(tg_quota()),
        tg_cached_clock(),
        n,
        DefaultHashBuilder::default(),
    );
    for k in table_keys(n) {
        let _ = limiter.check(k);
    }
    limiter
}

fn gov_upkeep_keyed(n: usize) -> GovUpkeepKeyed {
    let limiter =
        governor::RateLimiter::new(gov_quota(), DashMapStateStore::with_capacity(n), gov_upkeep_clock());
    for k in table_keys(n) {
        let _ = limiter.check_key(k);
    }
    limiter
}

fn direct(c: &mut Criterion) {
    let mut g = c.benchmark_group("direct");
    g.throughput(Throughput::Elements(1));
    let tg = Limiter::new(tg_quota());
    g.bench_function("tollgate/quanta", |b| b.iter(|| black_box(tg.check())));
    let gov = governor::RateLimiter::direct(gov_quota());
    g.bench_function("governor/quanta", |b| b.iter(|| black_box(gov.check())));
    let tg = Limiter::with_clock(tg_quota(), tg_cached_clock());
    g.bench_function("tollgate/cached", |b| b.iter(|| black_box(tg.check())));
    let gov = governor::RateLimiter::direct_with_clock(gov_quota(), gov_upkeep_clock());
    g.bench_function("governor/upkeep", |b| b.iter(|| black_box(gov.check())));
    g.finish();
}

fn keyed(c: &mut Criterion) {
    let mut g = c.benchmark_group("keyed");
    g.throughput(Throughput::Elements(1));
    for n in SIZES {
        let seq = table_lookups(n);
        let tg = tg_keyed(n);
        g.bench_with_input(BenchmarkId::new("tollgate", n), &n, |b, _| {
            let mut i = 0usize;
            b.iter(|| {
                i = i.wrapping_add(1);
                black_box(tg.check(&seq[i & SEQ_MASK]))
            })
        });
        let gov = gov_keyed(n);
        g.bench_with_input(BenchmarkId::new("governor", n), &n, |b, _| {
            let mut i = 0usize;
            b.iter(|| {
                i = i.wrapping_add(1);
                black_box(gov.check_key(&seq[i & SEQ_MASK]))
            })
        });
    }
    // Coarse clocks: the check without the ~10 ns clock read.
    for n in [1, 10_000] {
        let seq = table_lookups(n);
        let tg = tg_cached_keyed(n);
        g.bench_with_input(BenchmarkId::new("tollgate-cached", n), &n, |b, _| {
            let mut i = 0usize;
            b.iter(|| {
                i = i.wrapping_add(1);
                black_box(tg.check(&seq[i & SEQ_MASK]))
            })
        });
        // The same limiter pinned for the whole batch of iterations (`KeyedLimiter::pin`).
        g.bench_with_input(BenchmarkId::new("tollgate-cached-pinned", n), &n, |b, _| {
            let pinned = tg.pin();
            let mut i = 0usize;
            b.iter(|| {
                i = i.wrapping_add(1);
                black_box(pinned.check(&seq[i & SEQ_MASK]))
            })
        });
        drop(tg);
        let gov = gov_upkeep_keyed(n);
        g.bench_with_input(BenchmarkId::new("governor-upkeep", n), &n, |b, _| {
            let mut i = 0usize;
            b.iter(|| {
                i = i.wrapping_add(1);
                black_box(gov.check_key(&seq[i & SEQ_MASK]))
            })
        });
    }
    g.finish();
}

/// Both threads look up the same random-order sequence, from different offsets.
fn keyed_two_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("keyed-2threads");
    g.throughput(Throughput::Elements(2));
    for n in SIZES {
        let seq = table_lookups(n);
        let tg = tg_keyed(n);
        g.bench_with_input(BenchmarkId::new("tollgate", n), &n, |b, _| {
            b.iter_custom(|iters| {
                two_threads(iters, |t, iters| {
                    let mut i = t * (SEQ_LEN / 2);
                    for _ in 0..iters {
                        i = i.wrapping_add(1);
                        black_box(tg.check(&seq[i & SEQ_MASK]).ok());
                    }
                })
            })
        });
        let gov = gov_keyed(n);
        g.bench_with_input(BenchmarkId::new("governor", n), &n, |b, _| {
            b.iter_custom(|iters| {
                two_threads(iters, |t, iters| {
                    let mut i = t * (SEQ_LEN / 2);
                    for _ in 0..iters {
                        i = i.wrapping_add(1);
                        black_box(gov.check_key(&seq[i & SEQ_MASK]).ok());
                    }
                })
            })
        });
    }
    g.finish();
}

/// 2 threads on one state (one key, or the direct limiter) and on two disjoint keys.
fn contention(c: &mut Criterion) {
    let mut g = c.benchmark_group("contention-2threads");
    g.throughput(Throughput::Elements(2));
    let tg = Limiter::new(tg_quota());
    g.bench_function("tollgate/direct", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |_, iters| {
                (0..iters).for_each(|_| {
                    let _ = black_box(tg.check());
                })
            })
        })
    });
    let gov = governor::RateLimiter::direct(gov_quota());
    g.bench_function("governor/direct", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |_, iters| {
                (0..iters).for_each(|_| {
                    let _ = black_box(gov.check());
                })
            })
        })
    });
    let pair = [11u64, 12u64];
    for (name, disjoint) in [("one-key", false), ("disjoint-keys", true)] {
        let key = |t: usize| if disjoint { pair[t] } else { pair[0] };
        let tg: KeyedLimiter<u64> = KeyedLimiter::new(tg_quota());
        g.bench_function(format!("tollgate/{name}"), |b| {
            b.iter_custom(|iters| {
                two_threads(iters, |t, iters| {
                    let k = key(t);
                    (0..iters).for_each(|_| {
                        let _ = black_box(tg.check(&k));
                    })
                })
            })
        });
        let gov = governor::RateLimiter::keyed(gov_quota());
        g.bench_function(format!("governor/{name}"), |b| {
            b.iter_custom(|iters| {
                two_threads(iters, |t, iters| {
                    let k = key(t);
                    (0..iters).for_each(|_| {
                        let _ = black_box(gov.check_key(&k));
                    })
                })
            })
        });
    }
    g.finish();
}

/// First check of a new key (insertion into a growing table, amortized).
fn insertion(c: &mut Criterion) {
    const CHUNK: usize = 1 << 16;
    let fresh = keys(CHUNK, 99);
    let mut g = c.benchmark_group("new-key");
    g.throughput(Throughput::Elements(1));
    g.bench_function("tollgate", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                let batch = left.min(CHUNK);
                let limiter: KeyedLimiter<u64> = KeyedLimiter::new(tg_quota());
                let start = Instant::now();
                for k in &fresh[..batch] {
                    black_box(limiter.check(k).ok());
                }
                total += start.elapsed();
                left -= batch;
            }
            total
        })
    });
    g.bench_function("governor", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                let batch = left.min(CHUNK);
                let limiter = governor::RateLimiter::keyed(gov_quota());
                let start = Instant::now();
                for k in &fresh[..batch] {
                    black_box(limiter.check_key(k).ok());
                }
                total += start.elapsed();
                left -= batch;
            }
            total
        })
    });
    g.finish();
}

/// Sweep of a table of idle keys (every key is evicted). Each timed sweep gets a freshly
/// populated table (untimed), so this group runs few, flat samples.
fn sweep(c: &mut Criterion) {
    let n = if smoke() { 10_000 } else { 1_000_000 };
    let keys = keys(n, 5);
    let mut g = c.benchmark_group("sweep-idle");
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    g.warm_up_time(Duration::from_millis(1)).measurement_time(Duration::from_millis(100));
    g.throughput(Throughput::Elements(n as u64));
    g.bench_with_input(BenchmarkId::new("tollgate", n), &n, |b, _| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let limiter: KeyedLimiter<u64> = KeyedLimiter::with_capacity(tg_quota(), n);
                keys.iter().for_each(|k| drop(limiter.check(k)));
                std::thread::sleep(Duration::from_millis(1)); // every TAT is now in the past
                let start = Instant::now();
                let evicted = limiter.sweep();
                total += start.elapsed();
                assert_eq!(evicted, n, "all keys idle");
            }
            total
        })
    });
    g.bench_with_input(BenchmarkId::new("governor", n), &n, |b, _| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let limiter: GovKeyed = governor::RateLimiter::new(
                    gov_quota(),
                    DashMapStateStore::with_capacity(n),
                    DefaultClock::default(),
                );
                keys.iter().for_each(|k| drop(limiter.check_key(k)));
                std::thread::sleep(Duration::from_millis(1));
                let start = Instant::now();
                limiter.retain_recent();
                total += start.elapsed();
                assert_eq!(limiter.len(), 0, "all keys idle");
            }
            total
        })
    });
    g.finish();
}

/// The deny path: a quota of 1 per hour, spent before measuring.
fn deny(c: &mut Criterion) {
    let mut g = c.benchmark_group("deny");
    g.throughput(Throughput::Elements(1));
    let Ok(tq) = Quota::per_hour(1) else { return };
    let gq = governor::Quota::per_hour(NonZeroU32::MIN);
    let tg = Limiter::new(tq);
    let _ = tg.check();
    g.bench_function("tollgate/direct", |b| b.iter(|| black_box(tg.check())));
    let gov = governor::RateLimiter::direct(gq);
    let _ = gov.check();
    g.bench_function("governor/direct", |b| b.iter(|| black_box(gov.check())));
    let tg: KeyedLimiter<u64> = KeyedLimiter::new(tq);
    let _ = tg.check(&1);
    g.bench_function("tollgate/keyed-1", |b| b.iter(|| black_box(tg.check(&1))));
    let gov = governor::RateLimiter::keyed(gq);
    let _ = gov.check_key(&1);
    g.bench_function("governor/keyed-1", |b| b.iter(|| black_box(gov.check_key(&1))));
    g.finish();
}

/// Physical references: what a keyed check cannot go below.
fn floor(c: &mut Criterion) {
    let mut g = c.benchmark_group("floor");
    g.throughput(Throughput::Elements(1));
    let clock = QuantaClock::new();
    g.bench_function("quanta-clock-read", |b| b.iter(|| black_box(clock.now())));
    let cached = tg_cached_clock();
    g.bench_function("cached-clock-read", |b| b.iter(|| black_box(cached.now())));
    let word = AtomicU64::new(0);
    g.bench_function("uncontended-cas", |b| {
        b.iter(|| {
            // Relaxed: a lone word measured for cost; it publishes nothing.
            let current = word.load(Ordering::Relaxed);
            black_box(word.compare_exchange(current, current + 1, Ordering::Relaxed, Ordering::Relaxed))
        })
    });
    for n in SIZES {
        let map: papaya::HashMap<u64, AtomicU64, DefaultHashBuilder> =
            papaya::HashMap::with_capacity_and_hasher(n, DefaultHashBuilder::default());
        for &k in table_keys(n) {
            map.pin().insert(k, AtomicU64::new(0));
        }
        let seq = table_lookups(n);
        // The smallest keyed GCRA that could work: papaya get, one clock read, one CAS (no
        // eviction, no overrides, no decision beyond allowed/denied). What tollgate adds on top
        // of this is its overhead.
        let clock = QuantaClock::new();
        g.bench_with_input(BenchmarkId::new("papaya-gcra", n), &n, |b, _| {
            let mut i = 0usize;
            b.iter(|| {
                i = i.wrapping_add(1);
                let guard = map.guard();
                let allowed = map.get(&seq[i & SEQ_MASK], &guard).map(|tat| {
                    let now = clock.now();
                    // Relaxed: a lone word measured for cost; it publishes nothing.
                    let mut cur = tat.load(Ordering::Relaxed);
                    loop {
                        let new = cur.max(now) + 1;
                        if new - now > u64::from(ALLOW_ALL) {
                            break false;
                        }
                        match tat.compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed) {
                            Ok(_) => break true,
                            Err(actual) => cur = actual,
                        }
                    }
                });
                black_box(allowed)
            })
        });
        g.bench_with_input(BenchmarkId::new("papaya-get", n), &n, |b, _| {
            let mut i = 0usize;
            b.iter(|| {
                i = i.wrapping_add(1);
                // Relaxed: a read of a lone word, for cost only.
                black_box(map.pin().get(&seq[i & SEQ_MASK]).map(|v| v.load(Ordering::Relaxed)))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, floor, direct, keyed, keyed_two_threads, contention, deny, insertion, sweep);
criterion_main!(benches);
