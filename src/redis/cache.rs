//! The local deny cache (DESIGN.md §8): after Redis denies a key, the key is denied locally until
//! it could possibly be allowed again, so an attacker's repeated requests cost no round trip.
//!
//! Times here are readings of the limiter's local [`Clock`](crate::Clock). An entry is anchored
//! at the moment the request was *sent*, which is no later than the moment Redis decided, so the
//! local estimate of the key's state is never later than the real one: the cache never denies a
//! request that Redis would have allowed because of the round trip (it may, for one RTT, let a
//! request through to Redis that Redis then denies).
//!
//! The map is bounded: when it holds `capacity` entries, an insertion first drops expired entries
//! (one caller at a time) and, if that freed nothing, the new denial is simply not cached.
//! Concurrent inserters may overshoot the bound by at most their number.
//!
//! **Invalidation.** [`reset`](super::RedisLimiter::reset) and the quota overrides drop a key's
//! entry, but a denial already in flight (sent before the invalidation, answered after it) would
//! put a stale entry back and deny the key locally for up to its `retry_after`, although Redis
//! no longer holds that state. So every invalidation bumps a generation counter, a check reads
//! the counter before it sends (see [`DenyCache::generation`]), and an insertion stands only if
//! no invalidation happened since: [`DenyCache::insert`] re-reads the counter after inserting and
//! withdraws its entry if the counter moved. Between its insertion and its withdrawal (a few
//! instructions) a concurrent lookup may still see that entry: one more denial with
//! `Origin::DenyCache`, never an admission. The counter is global, not per key, so an
//! invalidation of one key also stops the caching of denials of other keys then in flight; they
//! are simply asked of Redis again (invalidations are rare administrative calls).
//!
//! Memory: each entry is the key's bytes (boxed) plus an [`Entry`] (48 bytes) and papaya's
//! per-entry overhead (a heap node with its reclamation header, a table slot and spare slots),
//! so budget roughly `capacity × (key length + 150)` bytes; an estimate, not a measurement.
//!
//! **Loom.** Loom cannot see inside papaya, so under `cfg(tollgate_loom)` the map is a loom
//! `Mutex` stand-in with the same calls (`loom_map`), and `loom_api` lets
//! `loom-tests/tests/deny_cache.rs` drive the code below, not a copy of it.

use std::fmt;

use crate::clock::Nanos;
use crate::decision::{Decision, Origin};
use crate::sync::{AtomicBool, AtomicU64, Ordering};

/// What is known about a denied key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// GCRA: a lower bound of the key's theoretical arrival time on the local clock. Exact: the
    /// cache answers a check of any cost with the decision GCRA itself would give at that TAT.
    Gcra {
        /// TAT estimate (local ns).
        tat: Nanos,
        /// Emission interval (ns).
        emission_interval: Nanos,
        /// burst × T (ns).
        tolerance: Nanos,
        /// The burst.
        limit: u64,
    },
    /// Windows: checks of `cost` or more are denied until `until` (local ns).
    Until {
        /// When a check of `cost` may pass again.
        until: Nanos,
        /// The smallest cost known to be denied until then.
        cost: u64,
        /// The window's limit.
        limit: u64,
        /// `remaining` reported by the denial.
        remaining: u64,
        /// When the key's state is fresh again (local ns).
        reset_at: Nanos,
    },
}

impl Entry {
    /// The cached denial for a check of `cost` at `now`, or `None` if the cache cannot answer.
    fn decide(&self, now: Nanos, cost: u64) -> Option<Decision> {
        match *self {
            Entry::Gcra { tat, emission_interval, tolerance, limit } => {
                let start = tat.max(now);
                let ahead = start.saturating_add(cost.saturating_mul(emission_interval)) - now;
                if ahead <= tolerance {
                    return None;
                }
                let behind = start - now;
                let remaining = tolerance.saturating_sub(behind) / emission_interval.max(1);
                Some(Decision::denied(limit, remaining, behind, ahead - tolerance))
            }
            Entry::Until { until, cost: denied_cost, limit, remaining, reset_at } => {
                if now >= until || cost < denied_cost {
                    return None;
                }
                Some(Decision::denied(limit, remaining, reset_at.saturating_sub(now), until - now))
            }
        }
    }

    /// Whether the entry can no longer deny a unit check (safe to drop).
    fn is_expired(&self, now: Nanos) -> bool {
        match *self {
            Entry::Gcra { tat, emission_interval, tolerance, .. } => {
                tat.saturating_add(emission_interval).saturating_sub(tolerance) <= now
            }
            Entry::Until { until, .. } => until <= now,
        }
    }
}

/// The cache's map: papaya in production.
#[cfg(not(tollgate_loom))]
type Map = papaya::HashMap<Box<[u8]>, Entry, foldhash::fast::RandomState>;

/// Under loom: the loom-visible stand-in, with the same calls (see [`loom_map`]).
#[cfg(tollgate_loom)]
type Map = loom_map::Map;

/// Bounded map from user key to its cached denial.
pub(crate) struct DenyCache {
    map: Map,
    capacity: usize,
    /// One pruning caller at a time; the others skip caching instead of waiting.
    pruning: AtomicBool,
    /// Invalidations so far (see the module docs); only ever incremented, by one.
    generation: AtomicU64,
}

impl fmt::Debug for DenyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DenyCache").field("len", &self.map.len()).field("capacity", &self.capacity).finish()
    }
}

impl DenyCache {
    /// A cache of at most `capacity` keys (0 disables it).
    pub(crate) fn new(capacity: usize) -> DenyCache {
        #[cfg(not(tollgate_loom))]
        let map = papaya::HashMap::builder()
            .capacity(capacity.min(1 << 16))
            .hasher(foldhash::fast::RandomState::default())
            .build();
        #[cfg(tollgate_loom)]
        let map = loom_map::Map::new();
        DenyCache { map, capacity, pruning: AtomicBool::new(false), generation: AtomicU64::new(0) }
    }

    /// The invalidation generation, to be read before a check reads its quota and sends its
    /// command, and handed back to [`insert`](Self::insert) with the denial.
    pub(crate) fn generation(&self) -> u64 {
        // Acquire: pairs with the AcqRel increment in `invalidate`. A check that sees the bump
        // also sees what the invalidator published before it (a new quota override), so it sends
        // under the new quota; a check that does not see it is caught by `insert`'s re-read.
        self.generation.load(Ordering::Acquire)
    }

    /// The cached denial for `key`, if any still applies to a check of `cost` at `now`.
    pub(crate) fn lookup(&self, key: &[u8], now: Nanos, cost: u64) -> Option<Decision> {
        if self.capacity == 0 {
            return None;
        }
        let map = self.map.pin();
        let entry = *map.get(key)?;
        match entry.decide(now, cost) {
            Some(decision) => Some(decision.with_origin(Origin::DenyCache)),
            None => {
                if entry.is_expired(now) {
                    // Only drop the entry we looked at: a newer denial stays.
                    let _ = map.remove_if(key, |_, current| *current == entry);
                }
                None
            }
        }
    }

    /// Remembers a denial of a check that read [`generation`](Self::generation) `seen` before it
    /// was sent; nothing is remembered if an invalidation happened since.
    pub(crate) fn insert(&self, key: &[u8], entry: Entry, now: Nanos, seen: u64) {
        if self.capacity == 0 {
            return;
        }
        // Relaxed: an early exit only; the re-read after the insertion is what decides.
        if self.generation.load(Ordering::Relaxed) != seen {
            return;
        }
        let map = self.map.pin();
        if map.len() >= self.capacity && !map.contains_key(key) {
            // Acquire: pairs with the Release below, so a pruner sees the previous prune's
            // removals before deciding; losers skip caching rather than wait.
            if self.pruning.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
                return;
            }
            map.retain(|_, e| !e.is_expired(now));
            // Release: ends the prune (see above).
            self.pruning.store(false, Ordering::Release);
            if map.len() >= self.capacity {
                return;
            }
        }
        map.insert(key.into(), entry);
        // An invalidation may have run between the check above and the insertion. This re-read
        // and `invalidate` are each "write, then read-modify-write the counter" and "RMW the
        // counter, then remove". An RMW (not a load) so both sit in the counter's single
        // modification order. AcqRel, for either order:
        // - ours first: `invalidate`'s Acquire RMW reads ours (or a later RMW in its release
        //   sequence), so our insertion happens-before its removal, which then removes it;
        // - theirs first: we read the bumped value and withdraw the entry ourselves.
        if self.generation.fetch_add(0, Ordering::AcqRel) != seen {
            // Only our own entry: a newer denial's entry is judged by its own check.
            let _ = map.remove_if(key, |_, current| *current == entry);
        }
    }

    /// Forgets `key`'s entry and stops denials then in flight from being cached (after a reset
    /// or a quota change through this limiter; call it once the change is in effect: after the
    /// `DEL` was answered, after the override was stored).
    pub(crate) fn invalidate(&self, key: &[u8]) {
        if self.capacity == 0 {
            return;
        }
        // AcqRel: Release publishes what the caller changed before (a quota override) to checks
        // that Acquire-read the new generation; Acquire pairs with `insert`'s AcqRel RMW (see
        // there), so an insertion ordered before this bump is visible to the removal below.
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.map.pin().remove(key);
    }

    /// Entries currently held.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// A loom-visible stand-in for the papaya map, with exactly the calls `DenyCache` makes (`pin`,
/// `get`, `contains_key`, `insert`, `remove`, `remove_if`, `retain`, `len`), so the code above
/// compiles unchanged against it.
///
/// Each call takes the loom `Mutex` once, so it is one atomic step, as each of papaya's per-key
/// operations linearizes at one CAS. `retain` locks once per entry and judges it under the lock:
/// papaya judges an entry, CASes it to a tombstone and, if the entry changed meanwhile, judges
/// the new value again, so what it removes is always a value it judged. `get` hands out an `Arc`
/// clone (papaya: a reference that outlives a concurrent removal). `len` is exact here, while
/// papaya's is a sum of sharded counters; the code above only uses it as a soft bound.
#[cfg(tollgate_loom)]
pub(crate) mod loom_map {
    use std::sync::Arc;

    use super::Entry;
    use crate::sync::Mutex;

    type Entries = Vec<(Box<[u8]>, Arc<Entry>)>;

    /// The map (a linear list: models hold a handful of keys).
    pub(crate) struct Map {
        entries: Mutex<Entries>,
    }

    impl Map {
        pub(crate) fn new() -> Map {
            Map { entries: Mutex::new(Vec::new()) }
        }

        /// papaya's `pin()`: no guard is needed here.
        pub(crate) fn pin(&self) -> &Map {
            self
        }

        fn position(entries: &Entries, key: &[u8]) -> Option<usize> {
            entries.iter().position(|(k, _)| **k == *key)
        }

        pub(crate) fn get(&self, key: &[u8]) -> Option<Arc<Entry>> {
            let entries = self.entries.lock().unwrap();
            Self::position(&entries, key).map(|i| Arc::clone(&entries[i].1))
        }

        pub(crate) fn contains_key(&self, key: &[u8]) -> bool {
            Self::position(&self.entries.lock().unwrap(), key).is_some()
        }

        pub(crate) fn insert(&self, key: Box<[u8]>, value: Entry) {
            let mut entries = self.entries.lock().unwrap();
            match Self::position(&entries, &key) {
                Some(i) => entries[i].1 = Arc::new(value),
                None => entries.push((key, Arc::new(value))),
            }
        }

        pub(crate) fn remove(&self, key: &[u8]) {
            let mut entries = self.entries.lock().unwrap();
            if let Some(i) = Self::position(&entries, key) {
                entries.remove(i);
            }
        }

        /// Removes `key` if `pred(key, value)`; the result says whether it did (papaya returns
        /// the removed entry or the one it kept; the cache ignores both).
        pub(crate) fn remove_if(&self, key: &[u8], mut pred: impl FnMut(&[u8], &Entry) -> bool) -> bool {
            let mut entries = self.entries.lock().unwrap();
            match Self::position(&entries, key) {
                Some(i) if pred(key, &entries[i].1) => {
                    entries.remove(i);
                    true
                }
                _ => false,
            }
        }

        pub(crate) fn retain(&self, mut keep: impl FnMut(&[u8], &Entry) -> bool) {
            let keys: Vec<Box<[u8]>> = self.entries.lock().unwrap().iter().map(|(k, _)| k.clone()).collect();
            for key in keys {
                let _ = self.remove_if(&key, |k, v| !keep(k, v));
            }
        }

        pub(crate) fn len(&self) -> usize {
            self.entries.lock().unwrap().len()
        }
    }
}

/// What the loom models call (`loom-tests/tests/deny_cache.rs`): a forwarding facade over
/// [`DenyCache`], so the models run the production protocol. Entries are window denials of
/// cost 1 ([`Entry::Until`]), told apart by their `until`.
#[cfg(tollgate_loom)]
#[doc(hidden)]
pub mod loom_api {
    use crate::clock::Nanos;

    /// [`DenyCache`](super::DenyCache), for the models.
    #[derive(Debug)]
    pub struct DenyCache(super::DenyCache);

    impl DenyCache {
        /// A cache of at most `capacity` keys.
        pub fn new(capacity: usize) -> DenyCache {
            DenyCache(super::DenyCache::new(capacity))
        }

        /// The generation a check reads before it sends.
        pub fn generation(&self) -> u64 {
            self.0.generation()
        }

        /// Caches a denial of `key` until `until` (cost 1), sent at generation `seen`.
        pub fn insert(&self, key: &[u8], until: Nanos, now: Nanos, seen: u64) {
            let entry = super::Entry::Until { until, cost: 1, limit: 1, remaining: 0, reset_at: until };
            self.0.insert(key, entry, now, seen);
        }

        /// Forgets `key` and fences denials in flight.
        pub fn invalidate(&self, key: &[u8]) {
            self.0.invalidate(key);
        }

        /// The `until` of the cached denial of `key` that still applies at `now`, if any.
        pub fn cached_until(&self, key: &[u8], now: Nanos) -> Option<Nanos> {
            let decision = self.0.lookup(key, now, 1)?;
            decision.retry_after_nanos().map(|wait| now + wait)
        }

        /// Entries held.
        pub fn len(&self) -> usize {
            self.0.len()
        }

        /// Whether no entry is held.
        pub fn is_empty(&self) -> bool {
            self.0.len() == 0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_entry_matches_gcra_step() {
        // burst 3, T 100: TAT 1300 at now 1000 is full.
        let e = Entry::Gcra { tat: 1300, emission_interval: 100, tolerance: 300, limit: 3 };
        let d = e.decide(1000, 1).unwrap();
        assert_eq!((d.remaining(), d.reset_after_nanos(), d.retry_after_nanos()), (0, 300, Some(100)));
        let d = e.decide(1050, 2).unwrap();
        assert_eq!(d.retry_after_nanos(), Some(150));
        assert_eq!(e.decide(1100, 1), None);
        assert!(e.is_expired(1100));
        assert!(!e.is_expired(1099));
    }

    #[test]
    fn bounded_and_pruned() {
        let cache = DenyCache::new(2);
        let until = |until| Entry::Until { until, cost: 1, limit: 5, remaining: 0, reset_at: until };
        cache.insert(b"a", until(10), 0, 0);
        cache.insert(b"b", until(20), 0, 0);
        cache.insert(b"c", until(30), 0, 0);
        assert_eq!(cache.len(), 2);
        assert!(cache.lookup(b"c", 0, 1).is_none());
        // At 15 "a" has expired: inserting "c" prunes it.
        cache.insert(b"c", until(30), 15, 0);
        assert_eq!(cache.len(), 2);
        let d = cache.lookup(b"c", 15, 1).unwrap();
        assert_eq!((d.origin(), d.retry_after_nanos()), (Origin::DenyCache, Some(15)));
        assert!(cache.lookup(b"c", 15, 0).is_none(), "smaller costs go to Redis");
        assert!(cache.lookup(b"b", 20, 1).is_none());
        assert_eq!(cache.len(), 1, "expired entry dropped on lookup");
        cache.invalidate(b"c");
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn invalidation_fences_denials_in_flight() {
        let cache = DenyCache::new(8);
        let until = |until| Entry::Until { until, cost: 1, limit: 5, remaining: 0, reset_at: until };
        let seen = cache.generation();
        cache.insert(b"a", until(10), 0, seen);
        assert!(cache.lookup(b"a", 0, 1).is_some());
        // A check sent before this invalidation is answered after it: its denial is dropped.
        let in_flight = cache.generation();
        cache.invalidate(b"a");
        assert!(cache.lookup(b"a", 0, 1).is_none());
        cache.insert(b"a", until(10), 0, in_flight);
        cache.insert(b"b", until(10), 0, in_flight);
        assert_eq!(cache.len(), 0);
        // Checks sent after it are cached again.
        cache.insert(b"a", until(10), 0, cache.generation());
        assert_eq!(cache.len(), 1);
    }
}
