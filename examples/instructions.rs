//! Instructions per operation, counted by callgrind: a deterministic complement to the timed
//! benchmarks (the same binary gives the same count on any x86-64 machine, however noisy).
//! It does not see cache misses or the latency of an atomic or a division; use it to find
//! instructions that should not be on a path, and the timed benches for speed.
//!
//! ```sh
//! cargo build --profile bench --example instructions
//! B=target/release/examples/instructions
//! for op in tollgate-keyed governor-keyed floor-keyed gcra-direct sliding-direct; do
//!   valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!     --toggle-collect='instructions::measured*' $B $op 10000 1000000 >/dev/null 2>&1
//!   echo "$op $(callgrind_annotate /tmp/cg.out | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1 / 1000000}')"
//! done
//! ```
//!
//! Only the loop in `measured` is counted (set-up excluded), so total ÷ ops is per operation.
//! Operations (`<op> <keys> <ops>`):
//!
//! * `tollgate-keyed`, `governor-keyed`: a check of an existing `u64` key, random order;
//! * `tollgate-cached`, `tollgate-pinned`: the same with a cached clock, through the limiter and
//!   through one `KeyedLimiter::pin` handle held for the whole loop;
//! * `floor-keyed`: the smallest keyed GCRA (papaya get, clock read, one CAS, a bool);
//! * `tollgate-insert`, `governor-insert`: the first check of `keys` new keys (`ops` unused);
//! * `tollgate-sweep`, `governor-sweep`: one sweep evicting `keys` idle keys (`ops` unused);
//! * `<algorithm>-direct`, `<algorithm>-keyed`, `<algorithm>-cell` (the step alone on one cell,
//!   at times the loop supplies: two emission intervals apart) with `<algorithm>` one of `gcra`, `fixed`,
//!   `sliding` (15 per 100 ns), `log100` (100 per 100 ns) and `composite` (GCRA + fixed).

use std::hint::black_box;
use std::num::NonZeroU32;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tollgate::{
    Algorithm, CachedClock, Clock, Composite, DefaultHashBuilder, FixedWindow, Gcra, KeyedLimiter, Limiter,
    QuantaClock, Quota, SlidingLog, SlidingWindow,
};

const USAGE: &str = "usage: instructions <op> <keys> <ops>   (see the source for the ops)";

/// The counted loop: callgrind collects only inside this function.
#[inline(never)]
fn measured<R>(ops: usize, seq: &[u64], mut op: impl FnMut(&u64) -> R) {
    for i in 0..ops {
        black_box(op(&seq[i % seq.len()]));
    }
}

fn quota(limit: u64, nanos: u64) -> Result<Quota, String> {
    Quota::new(limit, Duration::from_nanos(nanos)).map_err(|e| e.to_string())
}

/// How an `<algorithm>-…` op runs the algorithm.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Direct,
    Keyed,
    /// The step alone on one cell at supplied times (no clock read), spaced at twice the
    /// emission interval as in the criterion `cell` bench: deterministic, unlike the clocked
    /// ops, whose checks fall further apart in time under callgrind than at full speed.
    Cell,
}

fn algorithm<A: Algorithm>(a: A, keys: &[u64], seq: &[u64], ops: usize, shape: Shape) {
    if shape == Shape::Cell {
        let cell = a.new_cell();
        let quota = a.quota();
        let step = 2 * (quota.period().as_nanos() as u64).div_ceil(quota.burst());
        let mut now = 0u64;
        measured(ops, seq, |_| {
            now += step;
            a.check(&cell, black_box(now), 1).is_ok()
        });
    } else if shape == Shape::Direct {
        let limiter = Limiter::with_algorithm(a, QuantaClock::new());
        measured(ops, seq, |_| limiter.check());
    } else {
        let limiter: KeyedLimiter<u64, QuantaClock, DefaultHashBuilder, A> =
            KeyedLimiter::build(a, QuantaClock::new(), keys.len(), DefaultHashBuilder::default());
        for k in keys {
            let _ = limiter.check(k);
        }
        measured(ops, seq, |k| limiter.check(k));
    }
}

fn run(op: &str, n: usize, ops: usize) -> Result<(), String> {
    let keys: Vec<u64> = (0..n as u64).map(|k| k.wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
    let seq: Vec<u64> = (0..4096).map(|i| keys[(i * 7919) % n]).collect();
    let allow_all = Quota::per_second(1_000_000_000).map_err(|e| e.to_string())?;
    let gov_quota = governor::Quota::per_second(NonZeroU32::new(1_000_000_000).ok_or("zero")?);
    match op {
        "tollgate-keyed" => {
            let limiter: KeyedLimiter<u64> = KeyedLimiter::with_capacity(allow_all, n);
            for k in &keys {
                let _ = limiter.check(k);
            }
            measured(ops, &seq, |k| limiter.check(k));
        }
        "tollgate-cached" | "tollgate-pinned" => {
            let gcra = Gcra::new(&allow_all).map_err(|e| e.to_string())?;
            let clock = CachedClock::new(Duration::from_millis(1)).map_err(|e| e.to_string())?;
            let limiter: KeyedLimiter<u64, CachedClock> =
                KeyedLimiter::build(gcra, clock, n, DefaultHashBuilder::default());
            for k in &keys {
                let _ = limiter.check(k);
            }
            if op == "tollgate-pinned" {
                let pinned = limiter.pin();
                measured(ops, &seq, |k| pinned.check(k));
            } else {
                measured(ops, &seq, |k| limiter.check(k));
            }
        }
        "governor-keyed" => {
            let limiter = governor::RateLimiter::keyed(gov_quota);
            for k in &keys {
                let _ = limiter.check_key(k);
            }
            measured(ops, &seq, |k| limiter.check_key(k).is_ok());
        }
        "floor-keyed" => {
            let map: papaya::HashMap<u64, AtomicU64, DefaultHashBuilder> =
                papaya::HashMap::with_capacity_and_hasher(n, DefaultHashBuilder::default());
            for &k in &keys {
                map.pin().insert(k, AtomicU64::new(0));
            }
            let clock = QuantaClock::new();
            measured(ops, &seq, |k| {
                let guard = map.guard();
                map.get(k, &guard).map(|tat| {
                    let now = clock.now();
                    // Relaxed: a lone word, measured for cost; it publishes nothing.
                    let mut current = tat.load(Ordering::Relaxed);
                    loop {
                        let new = current.max(now) + 1;
                        if new - now > 1_000_000_000 {
                            break false;
                        }
                        match tat.compare_exchange_weak(current, new, Ordering::Relaxed, Ordering::Relaxed) {
                            Ok(_) => break true,
                            Err(actual) => current = actual,
                        }
                    }
                })
            });
        }
        "tollgate-insert" => {
            let limiter: KeyedLimiter<u64> = KeyedLimiter::new(allow_all);
            measured(n, &keys, |k| limiter.check(k).is_ok());
        }
        "governor-insert" => {
            let limiter = governor::RateLimiter::keyed(gov_quota);
            measured(n, &keys, |k| limiter.check_key(k).is_ok());
        }
        "tollgate-sweep" => {
            let limiter: KeyedLimiter<u64> = KeyedLimiter::with_capacity(allow_all, n);
            for k in &keys {
                let _ = limiter.check(k);
            }
            std::thread::sleep(Duration::from_millis(2)); // every key idle (T = 1 ns)
            measured(1, &[0], |_| limiter.sweep());
        }
        "governor-sweep" => {
            let limiter = governor::RateLimiter::keyed(gov_quota);
            for k in &keys {
                let _ = limiter.check_key(k);
            }
            std::thread::sleep(Duration::from_millis(2));
            measured(1, &[0], |_| limiter.retain_recent());
        }
        _ => {
            let (name, direct) = if let Some(name) = op.strip_suffix("-direct") {
                (name, Shape::Direct)
            } else if let Some(name) = op.strip_suffix("-keyed") {
                (name, Shape::Keyed)
            } else if let Some(name) = op.strip_suffix("-cell") {
                (name, Shape::Cell)
            } else {
                return Err(format!("unknown op {op:?}\n{USAGE}"));
            };
            let gcra = Gcra::new(&allow_all).map_err(|e| e.to_string())?;
            let fixed = FixedWindow::new(&allow_all).map_err(|e| e.to_string())?;
            match name {
                "gcra" => algorithm(gcra, &keys, &seq, ops, direct),
                "fixed" => algorithm(fixed, &keys, &seq, ops, direct),
                "sliding" => {
                    let sliding = SlidingWindow::new(&quota(15, 100)?).map_err(|e| e.to_string())?;
                    algorithm(sliding, &keys, &seq, ops, direct)
                }
                "log100" => {
                    let log = SlidingLog::new(&quota(100, 100)?).map_err(|e| e.to_string())?;
                    algorithm(log, &keys, &seq, ops, direct)
                }
                "composite" => algorithm(Composite::of(gcra, fixed), &keys, &seq, ops, direct),
                _ => return Err(format!("unknown algorithm {name:?}\n{USAGE}")),
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [op, keys, ops] => {
            keys.parse::<usize>().ok().filter(|&k| k > 0).zip(ops.parse::<usize>().ok()).map(|p| (op, p))
        }
        _ => None,
    };
    let Some((op, (keys, ops))) = parsed else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match run(op, keys, ops) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
