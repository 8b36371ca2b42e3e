//! The memory cache of parsed directories and small hot file objects, bounded by
//! `--cache-mb`.
//!
//! Why: the dissertation's envoy relied on the OS buffer cache alone, so every walk re-read
//! and re-parsed directory blocks and every small-file read cost a trip through the store (a
//! descriptor lookup and a `pread`). Here directories and small hot objects stay in memory,
//! so walks and small-file reads avoid the store and its syscalls.
//!
//! * **Directories**: every directory object that a walk, readdir or update touches is parsed
//!   once into a [`DirData`] and kept under its object ID. Values are immutable `Arc`
//!   snapshots: an update builds a new snapshot under the directory's lock, writes the changed
//!   block to the store (write-through) and replaces the entry, so eviction only ever drops
//!   memory, never data.
//! * **File data**: the whole contents of a regular file of at most [`DATA_MAX`] bytes — or
//!   [`FROZEN_DATA_MAX`] for a frozen file (shared with a snapshot or template: it never
//!   changes, and every fork reads the same object) — or a symlink's target, as one [`Bytes`]
//!   filled on the first read miss; reads are served as slices of it (no copy). A symlink's
//!   object is written once, when it is created, and is never opened, so its entry never
//!   needs invalidating (a boot resolves the same `/bin/sh -> busybox` links every time). A larger file leaves a small
//!   marker instead, so later reads go straight to the store without a `stat`. envoyd is the only writer of its territory's objects and every change
//!   of an object's data passes through `Fs::write` or `Fs::setattr` (size), which
//!   [invalidate](ObjectCache::invalidate) the entry after the store call; a thaw gives the
//!   name a new, never cached object ID, and deletes remove the entry. Frozen (copy-on-write)
//!   objects never change, so their entries stay valid and are shared by every image that
//!   links them.
//!
//! A fill can race with a write (both hold the node's `io` lock shared): the reader looks the
//! object up, misses, reads it from the store, and meanwhile a writer changes the object and
//! invalidates. To keep the stale copy out, each shard has an *epoch* that every invalidation
//! bumps; a miss hands out a [`FillTicket`] with the epoch seen under the shard lock, and
//! [`ObjectCache::put_data`] drops the value if the epoch moved. (Conservative: an
//! invalidation of another object in the same shard also drops the fill; the next read
//! retries.)
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
//! atomics summed by [`ObjectCache::stats`]; directories and file data have separate hit and
//! miss counters. Weights: [`DirData::weight`] for a directory, the object size plus
//! [`DATA_OVERHEAD`] for file data (the buffer the store read into is exactly that size).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use envoy_storage::ObjectId;

use crate::namespace::dir::DirData;

/// Number of shards (a power of two).
pub const SHARDS: usize = 16;
/// Largest regular file whose contents are cached.
pub const DATA_MAX: u64 = 64 * 1024;
/// Largest *frozen* regular file cached whole: an object shared with a snapshot or template
/// never changes (a write thaws the name into a new object), so caching it costs no
/// invalidation, and the large binaries every fork of a template reads (a boot's bulk) come
/// from memory after the first reader. Still bounded by the cache's byte budget.
pub const FROZEN_DATA_MAX: u64 = 8 << 20;
/// Accounted bookkeeping per data entry (map slot, LRU node, `Bytes` header).
pub const DATA_OVERHEAD: usize = 96;

/// Counters of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Directory lookups answered from memory.
    pub hits: u64,
    /// Directory lookups that had to read the store.
    pub misses: u64,
    /// File reads answered from cached object data.
    pub data_hits: u64,
    /// File reads that found nothing cached (they read the store, and fill the cache if the
    /// object is small).
    pub data_misses: u64,
    /// File reads of objects known to be too large to cache (straight to the store).
    pub data_bypassed: u64,
    /// Bytes of [`CacheStats::bytes`] held by file data entries.
    pub data_bytes: u64,
    /// Entries evicted to stay within the budget.
    pub evictions: u64,
    /// Bytes currently accounted.
    pub bytes: u64,
    /// Entries currently cached.
    pub entries: u64,
    /// The budget in bytes.
    pub capacity: u64,
}

/// A cached value.
#[derive(Debug)]
enum Value {
    /// A parsed directory.
    Dir(Arc<DirData>),
    /// The whole contents of a small regular file.
    Data(Bytes),
    /// A regular file larger than [`DATA_MAX`]: reads bypass the cache.
    TooBig,
}

impl Value {
    fn data_weight(&self, weight: usize) -> usize {
        match self {
            Value::Dir(_) => 0,
            Value::Data(_) | Value::TooBig => weight,
        }
    }
}

/// One cached value with its LRU tick and accounted weight.
#[derive(Debug)]
struct Slot {
    value: Value,
    tick: u64,
    weight: usize,
}

/// One shard: a map, its LRU order (tick → ID, oldest first) and the invalidation epoch.
#[derive(Debug, Default)]
struct Shard {
    tick: u64,
    epoch: u64,
    map: HashMap<ObjectId, Slot>,
    order: BTreeMap<u64, ObjectId>,
}

impl Shard {
    /// Removes `id`, returning its slot.
    fn take(&mut self, id: ObjectId) -> Option<Slot> {
        let slot = self.map.remove(&id)?;
        self.order.remove(&slot.tick);
        Some(slot)
    }

    /// Removes the least recently used entry, returning its slot.
    fn pop_lru(&mut self) -> Option<Slot> {
        let (_, victim) = self.order.pop_first()?;
        self.map.remove(&victim)
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
    data_bytes: AtomicUsize,
    entries: AtomicUsize,
    cursor: AtomicUsize,
    hits: AtomicU64,
    misses: AtomicU64,
    data_hits: AtomicU64,
    data_misses: AtomicU64,
    data_bypassed: AtomicU64,
    evictions: AtomicU64,
}

/// What [`ObjectCache::get_data`] found.
#[derive(Debug)]
pub enum DataLookup {
    /// The whole contents of the object.
    Hit(Bytes),
    /// The object is too large to cache: read the store.
    Bypass,
    /// Nothing cached: read the store, then offer the result with [`ObjectCache::put_data`].
    Miss(FillTicket),
}

/// Permission to fill the cache for one object, void once the object's shard sees an
/// invalidation.
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct FillTicket {
    id: ObjectId,
    epoch: u64,
}

/// A value read from the store to fill the cache with.
#[derive(Debug)]
pub enum Fill {
    /// The whole contents of a regular file ([`DATA_MAX`] bytes at most, or
    /// [`FROZEN_DATA_MAX`] for a frozen one: the caller decides which applies).
    Data(Bytes),
    /// The object is larger than [`DATA_MAX`].
    TooBig,
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
            data_bytes: AtomicUsize::new(0),
            entries: AtomicUsize::new(0),
            cursor: AtomicUsize::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            data_hits: AtomicU64::new(0),
            data_misses: AtomicU64::new(0),
            data_bypassed: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    fn shard(&self, i: usize) -> MutexGuard<'_, Shard> {
        self.shards[i % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn account(&self, slot: &Slot) {
        self.bytes.fetch_add(slot.weight, Ordering::Relaxed);
        let data = slot.value.data_weight(slot.weight);
        self.data_bytes.fetch_add(data, Ordering::Relaxed);
        self.entries.fetch_add(1, Ordering::Relaxed);
    }

    fn forget(&self, slot: &Slot) {
        self.bytes.fetch_sub(slot.weight, Ordering::Relaxed);
        let data = slot.value.data_weight(slot.weight);
        self.data_bytes.fetch_sub(data, Ordering::Relaxed);
        self.entries.fetch_sub(1, Ordering::Relaxed);
    }

    /// Looks `id` up in its (locked) shard, marking it most recently used; `f` maps the value.
    fn touch<T>(shard: &mut Shard, id: ObjectId, f: impl FnOnce(&Value) -> Option<T>) -> Option<T> {
        let tick = shard.next_tick();
        let slot = shard.map.get_mut(&id)?;
        let out = f(&slot.value)?;
        let old = std::mem::replace(&mut slot.tick, tick);
        shard.order.remove(&old);
        shard.order.insert(tick, id);
        Some(out)
    }

    /// Inserts a slot (replacing any entry of `id`), then shrinks to the budget.
    fn insert(&self, shard: &mut MutexGuard<'_, Shard>, id: ObjectId, value: Value, weight: usize) {
        if let Some(old) = shard.take(id) {
            self.forget(&old);
        }
        if weight > self.capacity {
            return;
        }
        let tick = shard.next_tick();
        let slot = Slot {
            value,
            tick,
            weight,
        };
        self.account(&slot);
        shard.map.insert(id, slot);
        shard.order.insert(tick, id);
    }

    /// The cached contents of directory `id`, counting a hit or a miss.
    pub fn get(&self, id: ObjectId) -> Option<Arc<DirData>> {
        let found = Self::touch(&mut self.shard(shard_of(id)), id, |v| match v {
            Value::Dir(d) => Some(Arc::clone(d)),
            _ => None,
        });
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
        self.insert(&mut self.shard(shard_of(id)), id, Value::Dir(data), weight);
        self.shrink();
    }

    /// The cached data of regular file `id`, counting a hit, a bypass or a miss. A miss
    /// carries the ticket for [`ObjectCache::put_data`].
    pub fn get_data(&self, id: ObjectId) -> DataLookup {
        let mut g = self.shard(shard_of(id));
        let found = Self::touch(&mut g, id, |v| match v {
            Value::Data(b) => Some(DataLookup::Hit(b.clone())),
            Value::TooBig => Some(DataLookup::Bypass),
            Value::Dir(_) => None,
        });
        let epoch = g.epoch;
        drop(g);
        let (counter, out) = match found {
            Some(hit @ DataLookup::Hit(_)) => (&self.data_hits, hit),
            Some(DataLookup::Bypass) => (&self.data_bypassed, DataLookup::Bypass),
            _ => (
                &self.data_misses,
                DataLookup::Miss(FillTicket { id, epoch }),
            ),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        out
    }

    /// Fills the entry of a missed object with what was read from the store, unless the
    /// object's shard saw an invalidation since the miss (the value may be stale). Returns
    /// whether the value was kept (it may still be evicted at once if the cache is full).
    pub fn put_data(&self, ticket: FillTicket, fill: Fill) -> bool {
        let (value, weight) = match fill {
            Fill::Data(b) if b.len() as u64 <= FROZEN_DATA_MAX => {
                let w = b.len() + DATA_OVERHEAD;
                (Value::Data(b), w)
            }
            Fill::Data(_) | Fill::TooBig => (Value::TooBig, DATA_OVERHEAD),
        };
        {
            let mut g = self.shard(shard_of(ticket.id));
            if g.epoch != ticket.epoch {
                return false;
            }
            self.insert(&mut g, ticket.id, value, weight);
        }
        self.shrink();
        true
    }

    /// Drops the entry of `id` after its data changed (write, truncate) and voids every
    /// outstanding fill ticket of its shard. Call after the store call, whatever its outcome.
    pub fn invalidate(&self, id: ObjectId) {
        let taken = {
            let mut g = self.shard(shard_of(id));
            g.epoch = g.epoch.wrapping_add(1);
            g.take(id)
        };
        if let Some(slot) = taken {
            self.forget(&slot);
        }
    }

    /// Evicts, one shard at a time, until the accounted bytes are within the budget (or every
    /// shard was found empty in one round).
    fn shrink(&self) {
        let mut empty_in_a_row = 0;
        while self.bytes.load(Ordering::Relaxed) > self.capacity && empty_in_a_row < SHARDS {
            let i = self.cursor.fetch_add(1, Ordering::Relaxed);
            let popped = self.shard(i).pop_lru();
            match popped {
                Some(slot) => {
                    self.forget(&slot);
                    self.evictions.fetch_add(1, Ordering::Relaxed);
                    empty_in_a_row = 0;
                }
                None => empty_in_a_row += 1,
            }
        }
    }

    /// Forgets `id` (its object was deleted or replaced).
    pub fn remove(&self, id: ObjectId) {
        self.invalidate(id);
    }

    /// Current counters (each read atomically; together a close, not exact, snapshot).
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            data_hits: self.data_hits.load(Ordering::Relaxed),
            data_misses: self.data_misses.load(Ordering::Relaxed),
            data_bypassed: self.data_bypassed.load(Ordering::Relaxed),
            data_bytes: self.data_bytes.load(Ordering::Relaxed) as u64,
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

    fn miss(c: &ObjectCache, id: ObjectId) -> FillTicket {
        match c.get_data(id) {
            DataLookup::Miss(t) => t,
            other => panic!("expected a miss, got {other:?}"),
        }
    }

    #[test]
    fn cache_data_fill_then_hit_counts_separately_from_dirs() {
        let c = ObjectCache::new(1 << 20);
        let t = miss(&c, ObjectId(9));
        assert!(c.put_data(t, Fill::Data(Bytes::from_static(b"abc"))));
        assert!(matches!(c.get_data(ObjectId(9)), DataLookup::Hit(b) if &b[..] == b"abc"));
        c.put(ObjectId(10), dir_with(2));
        assert!(c.get(ObjectId(10)).is_some());
        let s = c.stats();
        assert_eq!((s.data_hits, s.data_misses, s.hits, s.misses), (1, 1, 1, 0));
        assert_eq!(s.data_bytes, (3 + DATA_OVERHEAD) as u64);
        assert_eq!(s.bytes, s.data_bytes + dir_with(2).weight() as u64);
    }

    #[test]
    fn cache_data_invalidated_during_fill_not_kept() {
        let c = ObjectCache::new(1 << 20);
        let t = miss(&c, ObjectId(9));
        c.invalidate(ObjectId(9));
        assert!(!c.put_data(t, Fill::Data(Bytes::from_static(b"stale"))));
        assert!(matches!(c.get_data(ObjectId(9)), DataLookup::Miss(_)));
        assert_eq!(c.stats().entries, 0);
    }

    #[test]
    fn cache_data_invalidate_drops_entry_and_accounting() {
        let c = ObjectCache::new(1 << 20);
        let t = miss(&c, ObjectId(4));
        assert!(c.put_data(t, Fill::Data(Bytes::from(vec![1u8; 1000]))));
        c.invalidate(ObjectId(4));
        let s = c.stats();
        assert_eq!((s.entries, s.bytes, s.data_bytes), (0, 0, 0));
    }

    #[test]
    fn cache_data_too_big_leaves_marker_and_bypasses() {
        let c = ObjectCache::new(16 << 20);
        let t = miss(&c, ObjectId(5));
        let big = Bytes::from(vec![0u8; FROZEN_DATA_MAX as usize + 1]);
        assert!(c.put_data(t, Fill::Data(big)));
        assert!(matches!(c.get_data(ObjectId(5)), DataLookup::Bypass));
        let s = c.stats();
        assert_eq!((s.data_bypassed, s.data_bytes), (1, DATA_OVERHEAD as u64));
        // A caller's TooBig (a non-frozen file over DATA_MAX) leaves the same marker.
        let t = miss(&c, ObjectId(6));
        assert!(c.put_data(t, Fill::TooBig));
        assert!(matches!(c.get_data(ObjectId(6)), DataLookup::Bypass));
    }

    #[test]
    fn cache_frozen_size_data_kept_whole() {
        let c = ObjectCache::new(16 << 20);
        let t = miss(&c, ObjectId(7));
        let big = Bytes::from(vec![7u8; 2 << 20]);
        assert!(c.put_data(t, Fill::Data(big)));
        match c.get_data(ObjectId(7)) {
            DataLookup::Hit(b) => assert_eq!(b.len(), 2 << 20),
            _ => panic!("a 2 MiB (frozen) file is kept whole"),
        }
    }

    #[test]
    fn cache_data_and_dirs_share_budget() {
        let budget = 8 * (1000 + DATA_OVERHEAD);
        let c = ObjectCache::new(budget);
        for i in 1..=100u64 {
            let t = miss(&c, ObjectId(i));
            c.put_data(t, Fill::Data(Bytes::from(vec![i as u8; 1000])));
            c.put(ObjectId(1000 + i), dir_with(3));
            let s = c.stats();
            assert!(s.bytes <= budget as u64, "{s:?}");
        }
        assert!(c.stats().evictions > 150);
    }
}
