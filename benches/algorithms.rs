//! Every algorithm, direct and keyed (1 / 10⁴ / 10⁶ keys, random order), on the allow path,
//! with governor's GCRA (its only algorithm) in the same run as the common reference.
//!
//! Quotas admit every check: GCRA and the fixed window 10⁹/s; the sliding-window counter 15 per
//! 100 ns (its packed word limits the count for short windows); the sliding log 16 per 16 ns
//! (its ring holds one stamp per unit of limit, so a small limit keeps 10⁶ keys affordable), and
//! 100 per 100 ns as issue 4's reference; composites of two limits against one. `cell` times the
//! algorithm's step alone, on a supplied time (no clock read).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tollgate::{
    Algorithm, Composite, DefaultHashBuilder, FixedWindow, Gcra, KeyedLimiter, Limiter, QuantaClock, Quota,
    SlidingLog, SlidingWindow,
};

mod common;
use common::{keys, lookups, table_sizes, SEQ_MASK};

fn quota(limit: u64, window_ns: u64) -> Quota {
    Quota::new(limit, Duration::from_nanos(window_ns)).unwrap_or_else(|e| panic!("bench quota: {e}"))
}

fn params<A: Algorithm>(q: Quota) -> A {
    A::new(&q).unwrap_or_else(|e| panic!("bench quota for {}: {e}", std::any::type_name::<A>()))
}

fn one<A: Algorithm>(c: &mut Criterion, name: &str, algorithm: A) {
    let mut g = c.benchmark_group(format!("algorithm/{name}"));
    g.throughput(Throughput::Elements(1));
    let direct = Limiter::with_algorithm(algorithm.clone(), QuantaClock::new());
    g.bench_function("direct", |b| b.iter(|| black_box(direct.check())));
    drop(direct);
    // The algorithm alone: its check on one cell at times the loop supplies, no clock read. A
    // quanta read is ~10 ns here and overlaps differently with one CAS than with two, so this
    // separates an algorithm's own cost from how it meets the clock. Checks are spaced at
    // twice the emission interval, so every one is admitted (the allow path, as above).
    let cell = algorithm.new_cell();
    let quota = algorithm.quota();
    let step = 2 * (quota.period().as_nanos() as u64).div_ceil(quota.burst());
    // Time keeps going across criterion's samples (each calls this closure again).
    let mut now = 0u64;
    g.bench_function("cell", |b| {
        b.iter(|| {
            now += step;
            black_box(algorithm.check(&cell, black_box(now), 1).is_ok())
        })
    });
    // The 10⁶-key table is built once per algorithm; in smoke mode (`-- --test`) 10⁵ keeps
    // the CI run short while still exercising a table much larger than the caches.
    for n in table_sizes() {
        let table = keys(n, 42 + n as u64);
        let seq = lookups(&table, 7 + n as u64);
        let limiter: KeyedLimiter<u64, QuantaClock, DefaultHashBuilder, A> =
            KeyedLimiter::build(algorithm.clone(), QuantaClock::new(), n, DefaultHashBuilder::default());
        for k in &table {
            let _ = limiter.check(k);
        }
        g.bench_with_input(BenchmarkId::new("keyed", n), &n, |b, _| {
            let mut i = 0usize;
            b.iter(|| {
                i = i.wrapping_add(1);
                black_box(limiter.check(&seq[i & SEQ_MASK]))
            })
        });
    }
    g.finish();
}

/// governor's GCRA (direct, and keyed on its default DashMap store), same quota and keys.
fn governor_gcra(c: &mut Criterion) {
    let mut g = c.benchmark_group("algorithm/governor-gcra");
    g.throughput(Throughput::Elements(1));
    let rate = std::num::NonZeroU32::new(1_000_000_000).unwrap_or(std::num::NonZeroU32::MIN);
    let direct = governor::RateLimiter::direct(governor::Quota::per_second(rate));
    g.bench_function("direct", |b| b.iter(|| black_box(direct.check())));
    for n in table_sizes() {
        let table = keys(n, 42 + n as u64);
        let seq = lookups(&table, 7 + n as u64);
        let limiter = governor::RateLimiter::keyed(governor::Quota::per_second(rate));
        for k in &table {
            let _ = limiter.check_key(k);
        }
        g.bench_with_input(BenchmarkId::new("keyed", n), &n, |b, _| {
            let mut i = 0usize;
            b.iter(|| {
                i = i.wrapping_add(1);
                black_box(limiter.check_key(&seq[i & SEQ_MASK]))
            })
        });
    }
    g.finish();
}

fn algorithms(c: &mut Criterion) {
    governor_gcra(c);
    one(c, "gcra", params::<Gcra>(quota(1_000_000_000, 1_000_000_000)));
    one(c, "fixed", params::<FixedWindow>(quota(1_000_000_000, 1_000_000_000)));
    one(c, "sliding", params::<SlidingWindow>(quota(15, 100)));
    one(c, "log", params::<SlidingLog>(quota(16, 16)));
    // Issue 4's reference point: a sliding log of limit 100 (832 B a key; ~0.8 GB at 10⁶ keys).
    one(c, "log100", params::<SlidingLog>(quota(100, 100)));
    // Two limits on one key, all-or-nothing (compare with "gcra").
    let gcra = params::<Gcra>(quota(1_000_000_000, 1_000_000_000));
    let fixed = params::<FixedWindow>(quota(1_000_000_000, 1_000_000_000));
    one(c, "composite-gcra+fixed", Composite::of(gcra, fixed));
    one(c, "composite-gcra+gcra", Composite::of(gcra, gcra));
}

criterion_group!(benches, algorithms);
criterion_main!(benches);
