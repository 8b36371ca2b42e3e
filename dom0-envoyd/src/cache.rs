//! The memory cache of parsed directories, bounded by `--cache-mb`.
//!
//! Every directory object that a walk, readdir or update touches is parsed once into a
//! [`DirData`] and kept here under its object ID, least recently used first out when the sum of
//! the entries' weights passes the budget. Values are immutable `Arc` snapshots: an update
//! builds a new snapshot under the directory's lock, writes the changed block to the store
//! (write-through) and replaces the entry, so eviction only ever drops memory, never data.
//! File data is not cached here: reads go to the store, whose descriptor and listing caches
//! keep hot objects one `pread` away (the host page cache holds the bytes).
//!
//! Hit and miss counters feed [`CacheStats`], which the control socket will report.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use envoy_storage::ObjectId;

use crate::namespace::dir::DirData;

/// Counters of the directory cache.
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

#[derive(Debug, Default)]
struct Inner {
    tick: u64,
    map: HashMap<ObjectId, (Arc<DirData>, u64, usize)>,
    order: BTreeMap<u64, ObjectId>,
    bytes: usize,
}

/// A byte-bounded LRU map from directory object ID to its parsed contents.
#[derive(Debug)]
pub struct DirCache {
    capacity: usize,
    inner: Mutex<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

impl DirCache {
    /// A cache holding at most `capacity` bytes of parsed directories.
    pub fn new(capacity: usize) -> Self {
        DirCache {
            capacity,
            inner: Mutex::new(Inner::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached contents of `id`, counting a hit or a miss.
    pub fn get(&self, id: ObjectId) -> Option<Arc<DirData>> {
        let mut g = self.lock();
        g.tick += 1;
        let tick = g.tick;
        let found = match g.map.get_mut(&id) {
            Some((d, t, _)) => {
                let old = *t;
                *t = tick;
                Some((Arc::clone(d), old))
            }
            None => None,
        };
        match found {
            Some((d, old)) => {
                g.order.remove(&old);
                g.order.insert(tick, id);
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(d)
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Stores (or replaces) the contents of `id`, evicting the least recently used entries
    /// beyond the budget. An entry larger than the whole budget is not kept.
    pub fn put(&self, id: ObjectId, data: Arc<DirData>) {
        let weight = data.weight();
        let mut g = self.lock();
        if let Some((_, t, w)) = g.map.remove(&id) {
            g.order.remove(&t);
            g.bytes -= w;
        }
        if weight > self.capacity {
            return;
        }
        g.tick += 1;
        let tick = g.tick;
        g.map.insert(id, (data, tick, weight));
        g.order.insert(tick, id);
        g.bytes += weight;
        while g.bytes > self.capacity {
            let Some((&t, &victim)) = g.order.iter().next() else {
                break;
            };
            g.order.remove(&t);
            if let Some((_, _, w)) = g.map.remove(&victim) {
                g.bytes -= w;
            }
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forgets `id` (its object was deleted or replaced).
    pub fn remove(&self, id: ObjectId) {
        let mut g = self.lock();
        if let Some((_, t, w)) = g.map.remove(&id) {
            g.order.remove(&t);
            g.bytes -= w;
        }
    }

    /// Current counters.
    pub fn stats(&self) -> CacheStats {
        let g = self.lock();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            bytes: g.bytes as u64,
            entries: g.map.len() as u64,
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

    #[test]
    fn cache_over_budget_evicts_least_recent() {
        let one = dir_with(10).weight();
        let c = DirCache::new(one * 2 + one / 2);
        c.put(ObjectId(1), dir_with(10));
        c.put(ObjectId(2), dir_with(10));
        assert!(c.get(ObjectId(1)).is_some());
        c.put(ObjectId(3), dir_with(10));
        assert!(c.get(ObjectId(2)).is_none(), "2 was least recently used");
        assert!(c.get(ObjectId(1)).is_some());
        assert!(c.get(ObjectId(3)).is_some());
        let s = c.stats();
        assert_eq!(s.evictions, 1);
        assert_eq!(s.entries, 2);
        assert_eq!((s.hits, s.misses), (3, 1));
    }
}
