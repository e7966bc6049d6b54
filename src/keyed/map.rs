//! The keyed store's map, behind a closure-style API so the cell protocol can be model-checked.
//!
//! In production this is `papaya::HashMap` (lock-free reads; a pinned reference stays valid
//! after a concurrent removal). Under `cfg(tollgate_loom)` loom cannot see papaya's std atomics,
//! so a loom `Mutex<HashMap<K, Arc<V>>>` stands in: callbacks run *after* the lock is released,
//! on an `Arc` clone, which models papaya's "the reference outlives its removal" and leaves the
//! cell's atomics fully exposed to loom's interleavings (DESIGN.md §6).

use std::hash::{BuildHasher, Hash};

use papaya::Equivalent;

/// A map guard (see [`Map::guard`]).
#[cfg(not(tollgate_loom))]
pub(crate) type Guard<'a> = papaya::LocalGuard<'a>;

/// Loom's stand-in map needs no guard: values are `Arc`s cloned out of the lock.
#[cfg(tollgate_loom)]
pub(crate) type Guard<'a> = std::marker::PhantomData<&'a ()>;

#[cfg(not(tollgate_loom))]
pub(crate) struct Map<K, V, S> {
    inner: papaya::HashMap<K, V, S>,
}

#[cfg(not(tollgate_loom))]
impl<K, V, S> Map<K, V, S>
where
    K: Hash + Eq + Send + Sync,
    V: Send + Sync,
    S: BuildHasher,
{
    /// Blocking resizes (papaya's default is incremental): an incremental resize makes every
    /// *read* during it probe both tables, and a miss cost ~3000 instructions instead of ~120
    /// while the table grew (callgrind, 65 536 new `u64` keys from empty: 6 865 instructions per
    /// insert incremental, 471 blocking). Checks of existing keys are reads plus a CAS on the
    /// value, never map writes, so they never wait for a resize in either mode; only a thread
    /// inserting a new key helps finish a resize in progress (size the map with
    /// `with_capacity` to avoid growth entirely).
    pub(crate) fn new(capacity: usize, hasher: S) -> Self {
        let inner = papaya::HashMap::builder()
            .capacity(capacity)
            .hasher(hasher)
            .resize_mode(papaya::ResizeMode::Blocking)
            .build();
        Map { inner }
    }

    /// Calls `f` with the value for `key`, if any. Always inlined: it is the check hot path's
    /// lookup, and a call would move the caller's result through memory (16 instructions).
    #[inline(always)]
    pub(crate) fn get<Q, R>(&self, key: &Q, f: impl FnOnce(Option<&V>) -> R) -> R
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        self.get_in(&self.guard(), key, f)
    }

    /// A guard of this map for the current thread (papaya's `LocalGuard`): while one is held,
    /// nothing removed from the map is freed. Entering is a thread-local lookup and a store;
    /// leaving is an atomic swap (seize), so a caller holding one guard across many lookups
    /// skips both.
    #[inline(always)]
    pub(crate) fn guard(&self) -> Guard<'_> {
        self.inner.guard()
    }

    /// [`get`](Self::get) under a guard the caller holds (one of this map's: papaya checks).
    #[inline(always)]
    pub(crate) fn get_in<Q, R>(&self, guard: &Guard<'_>, key: &Q, f: impl FnOnce(Option<&V>) -> R) -> R
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        f(self.inner.get(key, guard))
    }

    /// Inserts `make()` under `key` unless present, then calls `f(value, inserted)`.
    pub(crate) fn get_or_insert_with<R>(
        &self,
        key: K,
        make: impl FnOnce() -> V,
        f: impl FnOnce(&V, bool) -> R,
    ) -> R {
        let guard = self.inner.guard();
        match self.inner.try_insert_with(key, make, &guard) {
            Ok(value) => f(value, true),
            Err(value) => f(value, false),
        }
    }

    /// Inserts or replaces `key`'s value (configuration maps only: never used on cells, whose
    /// state changes only through their atomics).
    pub(crate) fn insert(&self, key: K, value: V) {
        let guard = self.inner.guard();
        self.inner.insert(key, value, &guard);
    }

    /// Removes `key` if `pred(value)`; `pred` may run more than once and must be pure.
    pub(crate) fn remove_if<Q>(&self, key: &Q, mut pred: impl FnMut(&V) -> bool) -> bool
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        let guard = self.inner.guard();
        matches!(self.inner.remove_if(key, |_, v| pred(v), &guard), Ok(Some(_)))
    }

    /// Keeps the entries whose value passes `keep`; `keep` may run more than once per entry.
    pub(crate) fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) {
        let guard = self.inner.guard();
        self.inner.retain(|k, v| keep(k, v), &guard);
    }

    /// Calls `f` for every entry (a weakly consistent snapshot).
    pub(crate) fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        let guard = self.inner.guard();
        for (k, v) in self.inner.iter(&guard) {
            f(k, v);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.inner.len()
    }
}

#[cfg(tollgate_loom)]
type Entries<K, V> = Vec<(std::sync::Arc<K>, std::sync::Arc<V>)>;

#[cfg(tollgate_loom)]
pub(crate) struct Map<K, V, S> {
    // A linear list: models stay tiny, and `Arc`s let every callback run outside the lock.
    inner: crate::sync::Mutex<Entries<K, V>>,
    _hasher: std::marker::PhantomData<S>,
}

#[cfg(tollgate_loom)]
impl<K, V, S> Map<K, V, S>
where
    K: Hash + Eq + Send + Sync,
    V: Send + Sync,
    S: BuildHasher,
{
    pub(crate) fn new(capacity: usize, _hasher: S) -> Self {
        Map {
            inner: crate::sync::Mutex::new(Vec::with_capacity(capacity)),
            _hasher: std::marker::PhantomData,
        }
    }

    fn position<Q>(entries: &Entries<K, V>, key: &Q) -> Option<usize>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        entries.iter().position(|(k, _)| key.equivalent(k))
    }

    pub(crate) fn get<Q, R>(&self, key: &Q, f: impl FnOnce(Option<&V>) -> R) -> R
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        self.get_in(&self.guard(), key, f)
    }

    pub(crate) fn guard(&self) -> Guard<'_> {
        std::marker::PhantomData
    }

    pub(crate) fn get_in<Q, R>(&self, _guard: &Guard<'_>, key: &Q, f: impl FnOnce(Option<&V>) -> R) -> R
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        let found = {
            let entries = self.inner.lock().unwrap();
            Self::position(&entries, key).map(|i| entries[i].1.clone())
        };
        f(found.as_deref())
    }

    pub(crate) fn get_or_insert_with<R>(
        &self,
        key: K,
        make: impl FnOnce() -> V,
        f: impl FnOnce(&V, bool) -> R,
    ) -> R {
        let (value, inserted) = {
            let mut entries = self.inner.lock().unwrap();
            match Self::position(&entries, &key) {
                Some(i) => (entries[i].1.clone(), false),
                None => {
                    let v = std::sync::Arc::new(make());
                    entries.push((std::sync::Arc::new(key), v.clone()));
                    (v, true)
                }
            }
        };
        f(&value, inserted)
    }

    pub(crate) fn insert(&self, key: K, value: V) {
        let mut entries = self.inner.lock().unwrap();
        entries.retain(|(k, _)| !key.equivalent(k));
        entries.push((std::sync::Arc::new(key), std::sync::Arc::new(value)));
    }

    pub(crate) fn remove_if<Q>(&self, key: &Q, mut pred: impl FnMut(&V) -> bool) -> bool
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        let mut entries = self.inner.lock().unwrap();
        match Self::position(&entries, key) {
            Some(i) if pred(&entries[i].1) => {
                entries.remove(i);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) {
        // Judge outside the lock (papaya's retain does not block checkers), then remove only the
        // entries whose value is still the one judged.
        let snapshot: Entries<K, V> = self.inner.lock().unwrap().clone();
        for (k, v) in snapshot {
            if !keep(&k, &v) {
                self.inner.lock().unwrap().retain(|(_, cur)| !std::sync::Arc::ptr_eq(cur, &v));
            }
        }
    }

    pub(crate) fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        let snapshot: Entries<K, V> = self.inner.lock().unwrap().clone();
        for (k, v) in &snapshot {
            f(k, v);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.inner.lock().unwrap().len()
    }
}
