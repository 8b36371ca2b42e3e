//! Bounded LRU of parsed leaf-directory listings.
//!
//! A lookup reads the whole leaf directory once (one block, by construction of the geometry)
//! and keeps every parsed leaf name, so later lookups of its neighbours cost nothing. The
//! store's own creates, renames and unlinks update a cached listing *after* the host operation;
//! a miss loads the directory while holding the cache lock, so a load can never overwrite a
//! newer update with an older listing. Updates are idempotent (insert-or-replace / remove by
//! low bits), so a load that already saw a change and the update for it agree.
//!
//! The cache is split into up to 16 shards by directory key, each its own LRU with its own
//! lock, so misses in different directories load in parallel; the shard capacities add up to
//! exactly the configured capacity.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use super::lru::Lru;
use crate::object::Attributes;

/// One object in a leaf directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafEntry {
    /// The file name.
    pub name: String,
    /// Attributes parsed from it.
    pub attr: Attributes,
}

/// A leaf directory's objects by low ID bits.
pub type Listing = HashMap<u64, LeafEntry>;

const MAX_SHARDS: usize = 16;

/// Listings by leaf-directory key.
#[derive(Debug)]
pub struct DirCache {
    shards: Vec<Mutex<Lru<u64, Listing>>>,
}

impl DirCache {
    /// A cache of at most `capacity` listings.
    pub fn new(capacity: usize) -> Self {
        let n = capacity.clamp(1, MAX_SHARDS);
        DirCache {
            shards: (0..n)
                .map(|i| Mutex::new(Lru::new(capacity / n + usize::from(i < capacity % n))))
                .collect(),
        }
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, Lru<u64, Listing>> {
        // Neighbouring leaf directories go to different shards.
        let i = (key % self.shards.len() as u64) as usize;
        // Every method leaves the map consistent, so a poisoned lock is still usable.
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The entry for `low` in directory `key`, loading the listing with `load` on a miss.
    pub fn lookup<E>(
        &self,
        key: u64,
        low: u64,
        load: impl FnOnce() -> Result<Listing, E>,
    ) -> Result<Option<LeafEntry>, E> {
        let mut g = self.shard(key);
        if let Some(l) = g.get(&key) {
            return Ok(l.get(&low).cloned());
        }
        let listing = load()?;
        let found = listing.get(&low).cloned();
        g.insert(key, listing);
        Ok(found)
    }

    /// `f` of the entry for `low` in directory `key` (no copy of the entry), loading the
    /// listing with `load` on a miss.
    pub fn lookup_with<T, E>(
        &self,
        key: u64,
        low: u64,
        load: impl FnOnce() -> Result<Listing, E>,
        f: impl FnOnce(&LeafEntry) -> T,
    ) -> Result<Option<T>, E> {
        let mut g = self.shard(key);
        if let Some(l) = g.get(&key) {
            return Ok(l.get(&low).map(f));
        }
        let listing = load()?;
        let found = listing.get(&low).map(f);
        g.insert(key, listing);
        Ok(found)
    }

    /// Records that `low` in `key` now has `entry` (if the listing is cached).
    pub fn upsert(&self, key: u64, low: u64, entry: LeafEntry) {
        if let Some(l) = self.shard(key).peek_mut(&key) {
            l.insert(low, entry);
        }
    }

    /// Records that `low` in `key` is gone (if the listing is cached).
    pub fn remove(&self, key: u64, low: u64) {
        if let Some(l) = self.shard(key).peek_mut(&key) {
            l.remove(&low);
        }
    }

    /// Number of cached listings.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::ObjectKind;

    fn entry(n: &str) -> LeafEntry {
        LeafEntry {
            name: n.into(),
            attr: Attributes::new(ObjectKind::Regular, 0o644),
        }
    }

    #[test]
    fn lookup_miss_loads_once_then_hits() {
        let c = DirCache::new(4);
        let mut loads = 0;
        for _ in 0..3 {
            let r: Result<_, ()> = c.lookup(1, 2, || {
                loads += 1;
                Ok(Listing::from([(2, entry("x"))]))
            });
            assert_eq!(r.unwrap().map(|e| e.name), Some("x".into()));
        }
        assert_eq!(loads, 1);
    }

    #[test]
    fn upsert_remove_update_cached_listing_only() {
        let c = DirCache::new(1);
        let _: Result<_, ()> = c.lookup(1, 0, || Ok(Listing::new()));
        c.upsert(1, 3, entry("y"));
        c.upsert(9, 3, entry("z"));
        assert_eq!(c.len(), 1);
        let r: Result<_, ()> = c.lookup(1, 3, || Err(()));
        assert_eq!(r.unwrap().map(|e| e.name), Some("y".into()));
        c.remove(1, 3);
        let r: Result<_, ()> = c.lookup(1, 3, || Err(()));
        assert_eq!(r.unwrap(), None);
    }

    #[test]
    fn lookup_many_dirs_bounded() {
        for cap in [0usize, 1, 8, 20, 100] {
            let c = DirCache::new(cap);
            for k in 0..1000 {
                let _: Result<_, ()> = c.lookup(k, 0, || Ok(Listing::new()));
            }
            assert_eq!(c.len(), cap);
        }
    }
}
