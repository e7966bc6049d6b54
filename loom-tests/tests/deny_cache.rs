//! Model (5): the Redis deny cache's generation fence (`src/redis/cache.rs`, DESIGN.md §8). A
//! check reads `generation()` before it sends; `insert` inserts its denial, re-reads the counter
//! with an `AcqRel` RMW and withdraws its own entry if the counter moved; `invalidate` bumps the
//! counter with an `AcqRel` RMW, then removes the key. The claim: once they have all returned, an
//! entry remains only if the check that cached it read the generation after the invalidation's
//! bump, so a denial in flight across an invalidation is never left cached.
//!
//! The models drive the production `DenyCache` through a forwarding facade
//! (`tollgate::redis::deny_cache_loom`, built only under `cfg(tollgate_loom)`), with papaya
//! replaced by a loom-visible `Mutex` stand-in. Entries are told apart by their `until`. See the
//! crate docs for the preemption bound.
#![cfg(tollgate_loom)]

use std::sync::Arc;

use loom::thread;
use loom_tests::{model, Observed};
use tollgate::redis::deny_cache_loom::DenyCache;
use tollgate::Nanos;

const KEY: &[u8] = b"k";

/// One check's denial arriving: read the generation (before sending), then cache the answer.
/// Returns the generation it read.
fn check_and_cache(cache: &DenyCache, key: &[u8], until: Nanos) -> u64 {
    let seen = cache.generation();
    cache.insert(key, until, 0, seen);
    seen
}

/// Insert vs invalidate of the same key. Proves the claim: whenever the denial is still cached
/// afterwards, its check read the final generation (1, after the bump); a check that read 0 is
/// never left cached, in any interleaving. The outcomes (generation read, cached?) are exactly
/// the three possible ones, so the model reaches both sides of the fence (and, with `(1,
/// false)`, an invalidation whose removal lands after a post-bump insertion).
#[test]
fn insert_vs_invalidate() {
    let observed = Observed::new();
    let record = observed.clone();
    model(move || {
        let cache = Arc::new(DenyCache::new(8));
        let checker = {
            let cache = Arc::clone(&cache);
            thread::spawn(move || check_and_cache(&cache, KEY, 100))
        };
        cache.invalidate(KEY);
        let seen = checker.join().expect("checker");
        let generation = cache.generation();
        assert_eq!(generation, 1, "one invalidation, one bump");
        let cached = cache.cached_until(KEY, 0);
        if cached.is_some() {
            assert_eq!(seen, generation, "a denial sent before the invalidation was left cached");
        }
        assert_eq!(cache.len(), usize::from(cached.is_some()));
        record.record((seen, cached.is_some()));
    });
    observed.assert_exactly([(0, false), (1, false), (1, true)]);
}

/// Two checks of the same key (denials until 10 and 20) race one invalidation. Proves the claim
/// with two writers on one key, where `insert` must withdraw only its own entry: whatever stays
/// cached belongs to a check that read the final generation, and the key is held at most once.
/// Every outcome seen is allowed by the claim, and the outcomes where one, both or neither check
/// crossed the invalidation, each with a surviving denial where possible, are all reached.
#[test]
fn two_inserts_vs_invalidate() {
    let observed = Observed::new();
    let record = observed.clone();
    model(move || {
        let cache = Arc::new(DenyCache::new(8));
        let checkers: Vec<_> = [10, 20]
            .into_iter()
            .map(|until| {
                let cache = Arc::clone(&cache);
                thread::spawn(move || check_and_cache(&cache, KEY, until))
            })
            .collect();
        cache.invalidate(KEY);
        let seen: Vec<u64> = checkers.into_iter().map(|c| c.join().expect("checker")).collect();
        let generation = cache.generation();
        assert_eq!(generation, 1, "one invalidation, one bump");
        let cached = cache.cached_until(KEY, 0);
        match cached {
            Some(10) => assert_eq!(seen[0], generation, "stale denial (until 10) left cached"),
            Some(20) => assert_eq!(seen[1], generation, "stale denial (until 20) left cached"),
            None => {}
            Some(other) => panic!("unexpected entry until {other}"),
        }
        assert_eq!(cache.len(), usize::from(cached.is_some()));
        record.record((seen[0], seen[1], cached));
    });
    let allowed = [(0, 0), (0, 1), (1, 0), (1, 1)].into_iter().flat_map(|(a, b)| {
        let mut outcomes = vec![(a, b, None)];
        if a == 1 {
            outcomes.push((a, b, Some(10)));
        }
        if b == 1 {
            outcomes.push((a, b, Some(20)));
        }
        outcomes
    });
    let required = [(0, 0, None), (1, 0, Some(10)), (0, 1, Some(20)), (1, 1, Some(10)), (1, 1, Some(20))];
    observed.assert_within(allowed, required);
}

/// Prune vs insert at capacity 1. The cache holds an expired denial of `a` (until 5); at time 10
/// one check caches a denial of `b` (which must first prune) while another caches a fresh denial
/// of `a` (until 30), replacing the expired one. Proves the prune never drops a denial that is
/// still live (it judges each value it removes, like papaya's retain), that at least one of the
/// two is cached (a loser of the prune flag only skips caching when the winner's prune found
/// nothing to free), and that the bound is overshot by at most one entry. The three outcomes
/// are exactly those predicted.
#[test]
fn prune_vs_insert() {
    let observed = Observed::new();
    let record = observed.clone();
    model(move || {
        let cache = Arc::new(DenyCache::new(1));
        cache.insert(b"a", 5, 0, cache.generation());
        let pruner = {
            let cache = Arc::clone(&cache);
            thread::spawn(move || {
                let seen = cache.generation();
                cache.insert(b"b", 20, 10, seen);
            })
        };
        let seen = cache.generation();
        cache.insert(b"a", 30, 10, seen);
        pruner.join().expect("pruner");
        let a = cache.cached_until(b"a", 10);
        let b = cache.cached_until(b"b", 10);
        assert!(cache.len() <= 2, "capacity 1, two inserters: at most one over");
        assert_eq!(cache.len(), usize::from(a.is_some()) + usize::from(b.is_some()), "no expired entry left");
        record.record((a, b));
    });
    observed.assert_exactly([(Some(30), None), (None, Some(20)), (Some(30), Some(20))]);
}
