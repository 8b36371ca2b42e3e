//! A small bounded least-recently-used map.
//!
//! Each entry carries the tick of its last use; a `BTreeMap` from tick to key finds the
//! oldest in `O(log n)`. A hit only stamps the entry; the tree is brought up to date when a
//! stamped key reaches its front (it is requeued under its last use instead of evicted), so
//! hits — most calls — cost a hash lookup. Not thread-safe by itself: the caches wrap it in a
//! mutex.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// A map holding at most `capacity` entries, evicting the least recently used.
#[derive(Debug)]
pub struct Lru<K, V> {
    capacity: usize,
    tick: u64,
    /// Value, last use, and the tick under which the key sits in `order`.
    map: HashMap<K, (V, u64, u64)>,
    /// Keys by the tick they were queued under; a key used since is requeued lazily, when
    /// it reaches the front (so a hit is a hash lookup and a store, not a tree update).
    order: BTreeMap<u64, K>,
}

impl<K: Hash + Eq + Clone, V> Lru<K, V> {
    /// An empty map; a capacity of 0 caches nothing.
    pub fn new(capacity: usize) -> Self {
        Lru {
            capacity,
            tick: 0,
            map: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// The value for `k`, marking it most recently used.
    pub fn get(&mut self, k: &K) -> Option<&mut V> {
        let t = self.next_tick();
        let e = self.map.get_mut(k)?;
        e.1 = t;
        Some(&mut e.0)
    }

    /// The value for `k` without touching its age.
    pub fn peek_mut(&mut self, k: &K) -> Option<&mut V> {
        self.map.get_mut(k).map(|e| &mut e.0)
    }

    /// Inserts or replaces; returns the evicted entry, if any.
    pub fn insert(&mut self, k: K, v: V) -> Option<(K, V)> {
        if self.capacity == 0 {
            return Some((k, v));
        }
        let t = self.next_tick();
        if let Some((_, _, queued)) = self.map.insert(k.clone(), (v, t, t)) {
            self.order.remove(&queued);
        }
        self.order.insert(t, k);
        while self.map.len() > self.capacity {
            let (queued, oldest) = self.order.pop_first()?;
            let used = match self.map.get_mut(&oldest) {
                Some(e) => e,
                None => continue,
            };
            if used.1 != queued {
                // Used since it was queued: requeue it under its last use.
                used.2 = used.1;
                self.order.insert(used.1, oldest);
                continue;
            }
            let (v, _, _) = self.map.remove(&oldest)?;
            return Some((oldest, v));
        }
        None
    }

    /// Removes `k`.
    pub fn remove(&mut self, k: &K) -> Option<V> {
        let (v, _, queued) = self.map.remove(k)?;
        self.order.remove(&queued);
        Some(v)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_past_capacity_evicts_least_recent() {
        let mut l = Lru::new(2);
        assert!(l.insert(1, "a").is_none());
        assert!(l.insert(2, "b").is_none());
        assert!(l.get(&1).is_some());
        assert_eq!(l.insert(3, "c"), Some((2, "b")));
        // 1 was requeued under its use; 3 is newer still: 1 goes next.
        assert_eq!(l.insert(4, "d"), Some((1, "a")));
        assert!(l.insert(1, "a").is_some());
        assert_eq!(l.len(), 2);
        assert!(l.get(&2).is_none());
        assert_eq!(l.remove(&1), Some("a"));
        assert_eq!(l.len(), 1);
        assert_eq!(l.order.len(), l.map.len());
    }

    #[test]
    fn insert_many_stays_bounded() {
        let mut l = Lru::new(16);
        for i in 0..1000u32 {
            l.insert(i, i);
            assert!(l.len() <= 16);
        }
        assert_eq!(l.order.len(), l.map.len());
        assert!(l.get(&999).is_some());
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let mut l = Lru::new(0);
        assert_eq!(l.insert(1, 1), Some((1, 1)));
        assert!(l.is_empty());
    }
}
