//! A keyed limiter admitting and denying, with the decisions it returns.
//!
//! `cargo run --release --example quickstart`

use std::time::Duration;

use tollgate::{KeyedLimiter, ManualClock, Quota};

fn main() {
    let quota: Quota = "3/s".parse().expect("valid rate string");
    let clock = ManualClock::new();
    let limiter: KeyedLimiter<String, _> = KeyedLimiter::with_clock(quota, clock.clone());

    println!("quota {quota}: burst {}, one cell every {:?}\n", quota.burst(), quota.emission_interval());
    println!(
        "{:>8} {:>6} {:>8} {:>10} {:>12} {:>12}",
        "t", "key", "allowed", "remaining", "reset_after", "retry_after"
    );
    let schedule: [(u64, &str); 10] = [
        (0, "alice"),
        (0, "alice"),
        (0, "alice"),
        (0, "alice"),
        (0, "bob"),
        (200, "alice"),
        (334, "alice"),
        (334, "alice"),
        (700, "bob"),
        (1000, "alice"),
    ];
    for (at_ms, key) in schedule {
        clock.set(Duration::from_millis(at_ms).as_nanos() as u64);
        match limiter.check(key) {
            Ok(d) => println!(
                "{:>6}ms {:>6} {:>8} {:>10} {:>12?} {:>12}",
                at_ms,
                key,
                d.is_allowed(),
                d.remaining(),
                d.reset_after(),
                d.retry_after().map(|r| format!("{r:?}")).unwrap_or_else(|| "-".into())
            ),
            Err(e) => println!("{at_ms:>6}ms {key:>6} error: {e}"),
        }
    }
    println!("\nkeys tracked: {}", limiter.len());
    clock.advance(Duration::from_secs(5));
    println!("after 5 s idle, sweep evicted {} keys; {} left", limiter.sweep(), limiter.len());
    match "0/s".parse::<Quota>() {
        Ok(q) => println!("unexpected: {q}"),
        Err(e) => println!("bad input is a typed error: {e}"),
    }
}
