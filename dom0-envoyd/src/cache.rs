//! The memory cache of parsed directories, bounded by `--cache-mb`.
//!
//! Why: the dissertation's envoy relied on the OS buffer cache alone. Here every directory
//! object that a walk, readdir or update touches is parsed once into a [`DirData`] and kept in
//! memory under its object ID, so walks and listings avoid the store and its syscalls.
//!
//! Values are immutable `Arc` snapshots: an update builds a new snapshot under the directory's
//! lock, writes the changed block to the store (write-through) and replaces the entry, so
//! eviction only ever drops memory, never data.
//!
//! # Sharding
//!
//! No global lock around request handling: the map is split into [`SHARDS`] shards chosen by
//! a multiplicative hash of the object ID (IDs are handed out sequentially, so the low bits
//! alone would be fine too, but the hash also spreads strided patterns). Each shard has its
//! own mutex and its own LRU order; a lookup holds one shard lock for a few map operations and
//! never two at once. The byte budget is global: the sum of the entries' weights is an atomic
//! counter, and a put that pushes it over the budget evicts the least recently used entry of
//! one shard after another (a rotating cursor, so the pressure is spread evenly) until it is
//! back under. The LRU order is therefore exact within a shard and approximate across shards.
//! An entry larger than the whole budget is not kept. Hit, miss and eviction counters are
//! atomics summed by [`ObjectCache::stats`].
//!
//! File data is not cached here: reads go to the store, whose descriptor and listing caches
//! keep hot objects one `pread` away (the host page cache holds the bytes).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use envoy_storage::ObjectId;

use crate::namespace::dir::DirData;

/// Number of shards (a power of two).
pub const SHARDS: usize = 16;

/// Counters of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Lookups answered from memory.
    pub hits: u64,
    /// Lookups that had to read the store.
    pub misses: u64,
    /// Entries evicted to stay within the budget.
    pub evictions: u64,
    /// Bytes currently accounted.
    pub bytes: u64,
    /// Entries currently cached.
    pub entries: u64,
    /// The budget in bytes.
    pub capacity: u64,
}

/// One cached value with its LRU tick and accounted weight.
#[derive(Debug)]
struct Slot {
    dir: Arc<DirData>,
    tick: u64,
    weight: usize,
}

/// One shard: a map and its LRU order (tick → ID, oldest first).
#[derive(Debug, Default)]
struct Shard {
    tick: u64,
    map: HashMap<ObjectId, Slot>,
    order: BTreeMap<u64, ObjectId>,
}

impl Shard {
    /// Removes `id`, returning its weight.
    fn take(&mut self, id: ObjectId) -> Option<usize> {
        let slot = self.map.remove(&id)?;
        self.order.remove(&slot.tick);
        Some(slot.weight)
    }

    /// Removes the least recently used entry, returning its weight.
    fn pop_lru(&mut self) -> Option<usize> {
        let (_, victim) = self.order.pop_first()?;
        self.map.remove(&victim).map(|s| s.weight)
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }
}

/// A byte-bounded, sharded LRU map from object ID to its cached contents.
#[derive(Debug)]
pub struct ObjectCache {
    capacity: usize,
    shards: Box<[Mutex<Shard>]>,
    bytes: AtomicUsize,
    entries: AtomicUsize,
    cursor: AtomicUsize,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

/// The name this cache had when it held only directories.
pub type DirCache = ObjectCache;

/// The shard of `id` (Fibonacci hashing: the top bits of `id * 2^64/φ`).
fn shard_of(id: ObjectId) -> usize {
    const BITS: u32 = SHARDS.trailing_zeros();
    (id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - BITS)) as usize
}

impl ObjectCache {
    /// A cache holding at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        ObjectCache {
            capacity,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            bytes: AtomicUsize::new(0),
            entries: AtomicUsize::new(0),
            cursor: AtomicUsize::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    fn shard(&self, i: usize) -> MutexGuard<'_, Shard> {
        self.shards[i % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn forget(&self, weight: usize) {
        self.bytes.fetch_sub(weight, Ordering::Relaxed);
        self.entries.fetch_sub(1, Ordering::Relaxed);
    }

    /// The cached contents of `id`, counting a hit or a miss.
    pub fn get(&self, id: ObjectId) -> Option<Arc<DirData>> {
        let found = {
            let mut g = self.shard(shard_of(id));
            let tick = g.next_tick();
            match g.map.get_mut(&id) {
                Some(slot) => {
                    let old = std::mem::replace(&mut slot.tick, tick);
                    let d = Arc::clone(&slot.dir);
                    g.order.remove(&old);
                    g.order.insert(tick, id);
                    Some(d)
                }
                None => None,
            }
        };
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Stores (or replaces) the contents of `id`, then evicts least recently used entries
    /// until the cache is within its budget. An entry larger than the whole budget is not
    /// kept.
    pub fn put(&self, id: ObjectId, data: Arc<DirData>) {
        let weight = data.weight();
        {
            let mut g = self.shard(shard_of(id));
            if let Some(w) = g.take(id) {
                self.forget(w);
            }
            if weight > self.capacity {
                return;
            }
            let tick = g.next_tick();
            g.map.insert(
                id,
                Slot {
                    dir: data,
                    tick,
                    weight,
                },
            );
            g.order.insert(tick, id);
            self.bytes.fetch_add(weight, Ordering::Relaxed);
            self.entries.fetch_add(1, Ordering::Relaxed);
        }
        self.shrink();
    }

    /// Evicts, one shard at a time, until the accounted bytes are within the budget (or every
    /// shard was found empty in one round).
    fn shrink(&self) {
        let mut empty_in_a_row = 0;
        while self.bytes.load(Ordering::Relaxed) > self.capacity && empty_in_a_row < SHARDS {
            let i = self.cursor.fetch_add(1, Ordering::Relaxed);
            let popped = self.shard(i).pop_lru();
            match popped {
                Some(w) => {
                    self.forget(w);
                    self.evictions.fetch_add(1, Ordering::Relaxed);
                    empty_in_a_row = 0;
                }
                None => empty_in_a_row += 1,
            }
        }
    }

    /// Forgets `id` (its object was deleted or replaced).
    pub fn remove(&self, id: ObjectId) {
        let taken = self.shard(shard_of(id)).take(id);
        if let Some(w) = taken {
            self.forget(w);
        }
    }

    /// Current counters (each read atomically; together a close, not exact, snapshot).
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed) as u64,
            entries: self.entries.load(Ordering::Relaxed) as u64,
            capacity: self.capacity as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(n: usize) -> Arc<DirData> {
        let mut d = DirData::default();
        for i in 0..n {
            let name = format!("f{i}").into_bytes();
            d.insert(name, ObjectId(100 + i as u64), false).ok();
        }
        Arc::new(d)
    }

    /// Two IDs that land in the same shard.
    fn same_shard_ids(n: usize) -> Vec<ObjectId> {
        let s = shard_of(ObjectId(1));
        (1..)
            .map(ObjectId)
            .filter(|&id| shard_of(id) == s)
            .take(n)
            .collect()
    }

    #[test]
    fn cache_over_budget_evicts_least_recent_in_shard() {
        let ids = same_shard_ids(3);
        let one = dir_with(10).weight();
        let c = ObjectCache::new(one * 2 + one / 2);
        c.put(ids[0], dir_with(10));
        c.put(ids[1], dir_with(10));
        assert!(c.get(ids[0]).is_some());
        c.put(ids[2], dir_with(10));
        assert!(c.get(ids[1]).is_none(), "ids[1] was least recently used");
        assert!(c.get(ids[0]).is_some());
        assert!(c.get(ids[2]).is_some());
        let s = c.stats();
        assert_eq!(s.evictions, 1);
        assert_eq!(s.entries, 2);
        assert_eq!((s.hits, s.misses), (3, 1));
    }

    #[test]
    fn cache_many_ids_spread_over_all_shards() {
        let mut seen = [0usize; SHARDS];
        for i in 1..=1600u64 {
            seen[shard_of(ObjectId(i))] += 1;
        }
        assert!(seen.iter().all(|&n| (50..=150).contains(&n)), "{seen:?}");
    }

    #[test]
    fn cache_budget_respected_across_shards() {
        let one = dir_with(5).weight();
        let budget = one * 40;
        let c = ObjectCache::new(budget);
        for i in 1..=500u64 {
            c.put(ObjectId(i), dir_with(5));
            let s = c.stats();
            assert!(s.bytes <= budget as u64, "after {i}: {s:?}");
        }
        let s = c.stats();
        assert_eq!(s.entries, 40);
        assert_eq!(s.bytes, (one * 40) as u64);
        assert_eq!(s.evictions, 460);
        // The most recent entry of every shard survives (the cursor evicts oldest first).
        assert!(c.get(ObjectId(500)).is_some());
    }

    #[test]
    fn cache_entry_larger_than_budget_not_kept() {
        let c = ObjectCache::new(16);
        c.put(ObjectId(7), dir_with(3));
        assert!(c.get(ObjectId(7)).is_none());
        let s = c.stats();
        assert_eq!((s.entries, s.bytes, s.misses), (0, 0, 1));
    }

    #[test]
    fn cache_replace_and_remove_keep_accounting() {
        let c = ObjectCache::new(1 << 20);
        c.put(ObjectId(3), dir_with(2));
        c.put(ObjectId(3), dir_with(8));
        let s = c.stats();
        assert_eq!((s.entries, s.bytes), (1, dir_with(8).weight() as u64));
        assert_eq!(c.get(ObjectId(3)).map(|d| d.len()), Some(8));
        c.remove(ObjectId(3));
        c.remove(ObjectId(3));
        let s = c.stats();
        assert_eq!((s.entries, s.bytes, s.hits), (0, 0, 1));
    }

    #[test]
    fn cache_concurrent_puts_and_gets_stay_within_budget() {
        let one = dir_with(4).weight();
        let c = Arc::new(ObjectCache::new(one * 32));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let c = Arc::clone(&c);
                std::thread::spawn(move || {
                    for i in 0..400u64 {
                        let id = ObjectId(1 + t * 1000 + i % 64);
                        if c.get(id).is_none() {
                            c.put(id, dir_with(4));
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = c.stats();
        assert!(s.bytes <= (one * 32) as u64, "{s:?}");
        assert_eq!(s.hits + s.misses, 1600);
        assert_eq!(s.bytes, s.entries * one as u64);
    }
}
