//! The file system built from storage objects (§4.2.3) and the claims over it (§5.4.2).
//!
//! * Directories are objects in the [`envoy_storage::dirfmt`] format (entries: name, object
//!   ID, copy-on-write flag, cookie), parsed into [`dir::DirData`] and cached in
//!   [`crate::cache::ObjectCache`].
//! * Small regular files are cached whole in the same cache; [`Fs::write`] and
//!   [`Fs::setattr`] (the only paths that change an object's data) invalidate the entry.
//! * Files, symlinks and device nodes are objects with attributes; see [`special`] for the
//!   contents of special files.
//! * The global root directory is the fixed object [`ROOT_ID`] (= 1), created on first start
//!   with the image directory `/default` beneath it (mode 0755, owned by root: the root
//!   directory of a guest's file system).
//! * [`node`] holds the claims; [`cow`] freezes and thaws; [`update`] creates, removes,
//!   renames and links names; [`gc`] is the start-up scan.
//!
//! # Identity
//!
//! `qid.path` is the object ID: unique in the store and stable while the object lives. A thaw
//! gives the thawed file a new object and therefore a new `qid.path` (as if the file had been
//! replaced by a copy — which it has). `qid.version` is the low 32 bits of the mtime in
//! nanoseconds; envoyd sets mtime on every write, so the version changes with the contents.
//!
//! # Durability
//!
//! Every data and directory write goes to the store (the host page cache) before the reply;
//! `fsync` syncs the object and its directory. Multi-object updates are ordered so that a
//! `kill -9` at any point leaves the old state, the new state, or a harmless leftover that
//! the start-up scan ([`gc`]) repairs:
//!
//! | operation | order | leftover after a crash in between |
//! |---|---|---|
//! | create | create object (attributes in place) → insert entry (one block write) | unreferenced object: deleted by the scan |
//! | unlink | remove entry → delete object | unreferenced object: deleted by the scan |
//! | rename | write the new entry (insert, or replace the target's entry in place) → remove the old entry → delete the replaced object | one object under two names: the scan freezes both links (CoW), no data lost; or an unreferenced replaced object |
//! | link | set CoW on the old link → insert the new link | a frozen file with one name: harmless |
//! | thaw | clone object → repoint the link | unreferenced clone: deleted by the scan |

pub mod area;
pub mod cow;
pub mod dir;
pub mod gc;
pub mod node;
pub mod perm;
mod read_into;
pub mod snapshot;
pub mod special;
pub mod update;
mod write_from;
pub mod xattr;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use envoy_proto::{qid_type, Qid};
use envoy_storage::dirfmt::BLOCK_SIZE;
use envoy_storage::{
    AttrChange, Attributes, ObjectId, ObjectKind, ObjectStat, ObjectStore, StoreError, Timestamp,
};

use crate::cache::{CacheStats, DataLookup, Fill, ObjectCache};
use crate::error::{FsError, FsResult};
use dir::DirData;
use node::{lock, read, Area, Node};
pub use perm::Cred;
pub use write_from::{WriteSrc, SHARED_CHUNK};

/// Object ID of the global root directory.
pub const ROOT_ID: ObjectId = ObjectId(1);
/// Name of the image created in a fresh store.
pub const DEFAULT_IMAGE: &str = "default";
/// Longest name component.
pub const NAME_MAX: usize = 255;
/// IDs reserved from the store per superblock write.
const ID_BATCH: u64 = 1024;

/// Hands out object IDs from ranges reserved durably in the store.
#[derive(Debug)]
struct IdAlloc {
    range: Mutex<(u64, u64)>,
}

/// The namespace of one envoy: the object store, the directory cache and the global root
/// claim.
#[derive(Debug)]
pub struct Fs {
    store: Arc<ObjectStore>,
    cache: ObjectCache,
    ids: IdAlloc,
    /// Serialises cross-directory renames (as Linux's `s_vfs_rename_mutex`) so that two
    /// renames can never build a cycle; nothing else takes it.
    rename_lock: Mutex<()>,
    root: Arc<Node>,
    writes: AtomicU64,
    traffic: TrafficCounters,
    /// Objects held by unlinked copy-on-write nodes that still have claims: how many such
    /// nodes, and whether a snapshot deletion wants the object gone at the last release.
    pinned: Mutex<std::collections::HashMap<ObjectId, (usize, bool)>>,
    /// Which administrative-directory children are image heads ([`crate::images`] fills it).
    images: area::ImageTable,
    /// Copies of frozen objects made ahead of the changes that will thaw them (see
    /// [`cow`]): frozen object → copy.
    thaw_copies: Mutex<std::collections::HashMap<ObjectId, ObjectId>>,
    /// Directories whose link a thaw repointed and that nothing has synced since (see
    /// [`cow`]'s "Durability of a thaw").
    relinked: Mutex<std::collections::HashSet<ObjectId>>,
    /// Bumped when objects that were frozen may change again ([`Fs::unfreeze_head`]): copies
    /// made ahead before that are discarded.
    copies_epoch: AtomicU64,
}

/// The `tracing` target of one line per store read (object, offset, bytes) and per cache
/// miss that causes it (the file's name or "directory"): `RUST_LOG=envoy::store=trace` shows
/// which objects a workload pulls from the store (the boot suite's per-object breakdown).
pub const STORE_TRACE: &str = "envoy::store";

/// Requests and bytes between envoyd and the object store (reads include directory loads;
/// cache hits cost nothing here).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Read requests sent to the store.
    pub read_requests: u64,
    /// Bytes read from the store.
    pub read_bytes: u64,
    /// Write requests sent to the store.
    pub write_requests: u64,
    /// Bytes written to the store.
    pub write_bytes: u64,
    /// Of `write_requests`: writes whose data the kernel took straight from shared memory (a
    /// `Twrite` payload left in ring memory, [`WriteSrc::Shared`]).
    pub write_in_place_requests: u64,
    /// Bytes of those writes.
    pub write_in_place_bytes: u64,
}

#[derive(Debug, Default)]
struct TrafficCounters {
    read_requests: AtomicU64,
    read_bytes: AtomicU64,
    write_requests: AtomicU64,
    write_bytes: AtomicU64,
    write_in_place_requests: AtomicU64,
    write_in_place_bytes: AtomicU64,
}

/// A claim held by a fid: keeps the node alive and counted in `handles`, releasing it (and
/// deleting an unlinked object after its last claim) on drop.
#[derive(Debug)]
pub struct Claim {
    fs: Arc<Fs>,
    node: Arc<Node>,
}

impl Claim {
    /// The claimed node.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// The file system.
    pub fn fs(&self) -> &Arc<Fs> {
        &self.fs
    }

    /// Another claim on the same node (a fid clone).
    pub fn dup(&self) -> Claim {
        self.fs.claim(Arc::clone(&self.node))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.fs.release(&self.node);
    }
}

/// Checks a name received from a client.
pub fn check_name(name: &str) -> FsResult<&[u8]> {
    let b = name.as_bytes();
    if b.len() > NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    if b.is_empty() || b == b"." || b == b".." || b.iter().any(|&c| c == b'/' || c == 0) {
        return Err(FsError::Inval("bad file name"));
    }
    Ok(b)
}

/// Bytes `offset..offset + len` of `whole`, clipped to its end (a slice: no copy).
fn slice_at(whole: &Bytes, offset: u64, len: usize) -> Bytes {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(whole.len());
    let end = start.saturating_add(len).min(whole.len());
    whole.slice(start..end)
}

/// Whether `node`'s object is frozen: its own link or a link above it is copy-on-write, so
/// the object is shared with a snapshot (or a hard link) and never changes.
fn frozen_path(node: &Node) -> bool {
    let (cow, mut cur) = {
        let s = node.state();
        (s.cow, s.parent.clone())
    };
    if cow {
        return true;
    }
    while let Some(n) = cur {
        let s = n.state();
        if s.cow {
            return true;
        }
        cur = s.parent.clone();
    }
    false
}

/// The qid of an object.
pub fn qid_of(st: &ObjectStat) -> Qid {
    let ty = match st.attr.kind {
        ObjectKind::Directory => qid_type::DIR,
        ObjectKind::Symlink => qid_type::SYMLINK,
        _ => qid_type::FILE,
    };
    let version = st.attr.mtime.as_nanos().unwrap_or(0) as u32;
    Qid {
        ty,
        version,
        path: st.id.0,
    }
}

/// How far a file's or directory's recorded mtime may trail its last change: 4 ms, one tick
/// of the coarse clock Linux file systems take their timestamps from (`HZ=250`). The store
/// keeps attributes in the object's file name, so each mtime update is a `rename(2)`; within
/// one tick further updates are skipped, as a Linux file system leaves an mtime that the
/// coarse clock has not moved past.
pub const MTIME_GRANULARITY_NS: u64 = 4_000_000;

/// Whether a change at `now` must record a new mtime over `stored`: when `stored` is at least
/// [`MTIME_GRANULARITY_NS`] old, or in the future (the clock was stepped back), or
/// unrepresentable.
pub fn mtime_needs_update(stored: Timestamp, now: Timestamp) -> bool {
    match (stored.as_nanos(), now.as_nanos()) {
        (Some(s), Some(n)) => s > n || n - s >= MTIME_GRANULARITY_NS,
        _ => true,
    }
}

/// Unit tests: a namespace on a fresh store in `dir` (synchronous engine, 1 MiB cache).
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn test_fs(dir: &std::path::Path) -> Arc<Fs> {
    let store = ObjectStore::open_or_create(
        dir,
        envoy_storage::StoreOptions {
            engine: envoy_storage::EngineChoice::Sync,
            ..Default::default()
        },
    )
    .unwrap();
    Fs::open(Arc::new(store), 1 << 20).unwrap()
}

impl Fs {
    /// Opens the namespace on `store`: creates the root (and `/default`) in a fresh store and
    /// runs the start-up scan.
    pub fn open(store: Arc<ObjectStore>, cache_bytes: usize) -> FsResult<Arc<Fs>> {
        let root_attr = match store.stat(ROOT_ID) {
            Ok(st) => st.attr,
            Err(e) if e.is_not_found() => {
                let attr = Attributes::new(ObjectKind::Directory, 0o755);
                store.create_object(ROOT_ID, &attr)?;
                store.sync(ROOT_ID)?;
                tracing::info!("created the global root directory (object {ROOT_ID})");
                attr
            }
            Err(e) => return Err(e.into()),
        };
        if root_attr.kind != ObjectKind::Directory {
            return Err(FsError::Store(StoreError::InvalidArgument(format!(
                "object {ROOT_ID} is not a directory: not an envoy namespace"
            ))));
        }
        let fs = Arc::new(Fs {
            store,
            cache: ObjectCache::new(cache_bytes),
            ids: IdAlloc {
                range: Mutex::new((0, 0)),
            },
            rename_lock: Mutex::new(()),
            root: Node::new(
                ROOT_ID,
                false,
                ObjectKind::Directory,
                None,
                Vec::new(),
                Area::Admin,
            ),
            traffic: TrafficCounters::default(),
            pinned: Mutex::new(std::collections::HashMap::new()),
            writes: AtomicU64::new(0),
            images: area::ImageTable::default(),
            thaw_copies: Mutex::new(std::collections::HashMap::new()),
            relinked: Mutex::new(std::collections::HashSet::new()),
            copies_epoch: AtomicU64::new(0),
        });
        gc::scan(&fs)?;
        let root = fs.claim(Arc::clone(&fs.root));
        if fs.dir_data(ROOT_ID)?.is_empty() {
            let root_cred = Cred::user(0);
            let img = fs.create(
                &root,
                DEFAULT_IMAGE.as_bytes(),
                ObjectKind::Directory,
                0o755,
                root_cred,
                None,
            )?;
            fs.sync(img.node())?;
            tracing::info!("created image /{DEFAULT_IMAGE}");
        }
        Ok(fs)
    }

    /// The object store.
    pub fn store(&self) -> &Arc<ObjectStore> {
        &self.store
    }

    /// The registered images.
    pub fn image_table(&self) -> &area::ImageTable {
        &self.images
    }

    /// Directory cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// A claim on the global root.
    pub fn root(self: &Arc<Self>) -> Claim {
        self.claim(Arc::clone(&self.root))
    }

    /// Registers a claim on `node`.
    pub fn claim(self: &Arc<Self>, node: Arc<Node>) -> Claim {
        node.state().handles += 1;
        Claim {
            fs: Arc::clone(self),
            node,
        }
    }

    fn release(&self, node: &Arc<Node>) {
        let doomed = {
            let mut s = node.state();
            s.handles = s.handles.saturating_sub(1);
            if s.handles == 0 && s.orphan && !s.deleted && !s.cow {
                s.deleted = true;
                Some(s.id)
            } else if s.handles == 0 && s.orphan && !s.deleted && s.cow {
                // A shared object kept alive by this claim alone: a snapshot deletion may be
                // waiting for it.
                s.deleted = true;
                self.unpin(s.id).then_some(s.id)
            } else {
                None
            }
        };
        if let Some(id) = doomed {
            self.cache.remove(id);
            if let Err(e) = self.store.delete(id) {
                tracing::warn!(%id, error = %e, "deleting an unlinked object failed; the start-up scan will collect it");
            }
        }
    }

    /// Records that an unlinked copy-on-write node with claims still reads object `id`.
    pub(crate) fn pin(&self, id: ObjectId) {
        lock(&self.pinned).entry(id).or_insert((0, false)).0 += 1;
    }

    /// Drops one pin of `id`; true when it was the last and the object is to be deleted.
    pub(crate) fn unpin(&self, id: ObjectId) -> bool {
        let mut p = lock(&self.pinned);
        let Some(e) = p.get_mut(&id) else {
            return false;
        };
        e.0 = e.0.saturating_sub(1);
        if e.0 > 0 {
            return false;
        }
        let doomed = e.1;
        p.remove(&id);
        doomed
    }

    /// Deletes object `id` for a snapshot deletion, or, while an unlinked open file still
    /// reads it, marks it to go at that file's last release. Returns whether it went now.
    pub(crate) fn delete_shared_object(&self, id: ObjectId) -> FsResult<bool> {
        {
            let mut p = lock(&self.pinned);
            if let Some(e) = p.get_mut(&id) {
                e.1 = true;
                return Ok(false);
            }
        }
        self.cache.remove(id);
        match self.store.delete(id) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// A new object ID.
    pub fn alloc_id(&self) -> FsResult<ObjectId> {
        let mut r = lock(&self.ids.range);
        if r.0 >= r.1 {
            let got = self.store.reserve(ID_BATCH)?;
            *r = (got.first.0, got.first.0 + got.count);
        }
        let id = r.0;
        r.0 += 1;
        Ok(ObjectId(id))
    }

    /// The parsed contents of directory object `id` (cache or store). Callers hold the
    /// directory's `dir_lock` (shared or exclusive), see [`Fs::dir_snapshot`].
    pub fn dir_data(&self, id: ObjectId) -> FsResult<Arc<DirData>> {
        if let Some(d) = self.cache.get(id) {
            return Ok(d);
        }
        let d = Arc::new(self.load_dir(id)?);
        self.cache.put(id, Arc::clone(&d));
        Ok(d)
    }

    /// Reads and parses directory object `id` from the store.
    fn load_dir(&self, id: ObjectId) -> FsResult<DirData> {
        let st = self.store.stat(id)?;
        if st.attr.kind != ObjectKind::Directory {
            return Err(FsError::NotDir);
        }
        tracing::trace!(target: STORE_TRACE, %id, size = st.size, "directory read from store");
        let mut buf = Vec::with_capacity(usize::try_from(st.size).unwrap_or(0).min(1 << 20));
        let mut off = 0u64;
        while off < st.size {
            let chunk = self.store_read(id, off, envoy_storage::MAX_IO)?;
            if chunk.is_empty() {
                break;
            }
            off += chunk.len() as u64;
            buf.extend_from_slice(&chunk);
        }
        DirData::parse(&buf).map_err(FsError::Corrupt)
    }

    /// The contents of directory object `id` from the cache, or read from the store without
    /// filling the cache (for walks over whole trees, which would evict the hot set). Only
    /// for objects that cannot change meanwhile: frozen ones, or under an exclusive gate.
    pub fn dir_data_uncached(&self, id: ObjectId) -> FsResult<Arc<DirData>> {
        if let Some(d) = self.cache.get(id) {
            return Ok(d);
        }
        Ok(Arc::new(self.load_dir(id)?))
    }

    /// Turns the contents of directory `id` (an `Arc` from [`Fs::dir_data`]) into a value to
    /// change. The cache lets go of its reference, so unless a reader still holds one the
    /// parsed directory is changed in place instead of copied: a copy is a pass over every
    /// entry, which made each create in a directory of n entries cost O(n). The caller holds
    /// the directory's `dir_lock` exclusively and ends with [`Fs::commit_dir`] (which caches
    /// the result); if it gives up instead, the directory is simply reloaded on next use.
    pub(crate) fn dir_owned(&self, id: ObjectId, data: Arc<DirData>) -> DirData {
        self.cache.remove(id);
        Arc::try_unwrap(data).unwrap_or_else(|shared| (*shared).clone())
    }

    /// The contents of directory `node`, read under its shared lock so that a load from the
    /// store never interleaves with an update (which would let a stale parse into the cache).
    pub fn dir_snapshot(&self, node: &Node) -> FsResult<Arc<DirData>> {
        let _g = read(&node.dir_lock);
        self.dir_data(node.id())
    }

    /// Writes the changed blocks of a directory and installs the new contents in the cache.
    /// Called with the directory's `dir_lock` held exclusively.
    pub(crate) fn commit_dir(
        &self,
        id: ObjectId,
        data: DirData,
        changed: &[usize],
    ) -> FsResult<()> {
        let mut done: Vec<usize> = Vec::new();
        for &b in changed {
            if done.contains(&b) {
                continue;
            }
            let bytes = data
                .block_bytes(b)
                .ok_or(FsError::Inval("directory block out of range"))?;
            if let Err(e) = self.store_write(id, (b * BLOCK_SIZE) as u64, Bytes::from(bytes)) {
                self.cache.remove(id);
                return Err(e.into());
            }
            done.push(b);
        }
        self.cache.put(id, Arc::new(data));
        Ok(())
    }

    /// Whether object `id`'s mtime must be set at `now` ([`mtime_needs_update`] of its
    /// recorded mtime; true if the store cannot say).
    fn mtime_stale(&self, id: ObjectId, now: Timestamp) -> bool {
        match self.store.attributes(id) {
            Ok(attr) => mtime_needs_update(attr.mtime, now),
            Err(_) => true,
        }
    }

    /// Sets a directory's mtime to now (its entries changed).
    pub(crate) fn touch_dir(&self, id: ObjectId) {
        let now = Timestamp::now();
        if !self.mtime_stale(id, now) {
            return;
        }
        let change = AttrChange {
            mtime: Some(now),
            ..AttrChange::default()
        };
        if let Err(e) = self.store.wstat(id, &change) {
            tracing::warn!(%id, error = %e, "updating directory mtime failed");
        }
    }

    /// Records that directory `id`'s entries changed at `when`, some time ago: sets its mtime
    /// to `when` unless a later change already moved it past. The image manager links
    /// snapshots and forks without touching the administrative directory and calls this from
    /// its background thread, so the rename the store needs for an mtime is off the operator's
    /// latency path; the mtime lags by that thread's delay (milliseconds), like the
    /// [`MTIME_GRANULARITY_NS`] coalescing of [`Fs::touch_dir`].
    pub fn touch_dir_at(&self, id: ObjectId, when: Timestamp) {
        let stale = match (self.store.attributes(id), when.as_nanos()) {
            (Ok(attr), Some(w)) => attr.mtime.as_nanos().is_none_or(|s| s < w),
            (Err(_), _) => return, // gone (deleted since)
            (Ok(_), None) => false,
        };
        if !stale {
            return;
        }
        let change = AttrChange {
            mtime: Some(when),
            ..AttrChange::default()
        };
        match self.store.wstat(id, &change) {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::warn!(%id, error = %e, "updating directory mtime failed"),
        }
    }

    /// Attributes, size and times of a node's object.
    pub fn stat(&self, node: &Node) -> FsResult<ObjectStat> {
        Ok(self.store.stat(node.id())?)
    }

    /// Looks `name` up in directory `dir` and claims the result. Needs search permission.
    pub fn lookup(self: &Arc<Self>, dir: &Arc<Node>, name: &[u8], cred: Cred) -> FsResult<Claim> {
        let area = if matches!(dir.area, Area::Admin) {
            if let Some(n) = dir.child(name) {
                // Already live: its area is known (and this skips the metadata lookups).
                let _g = read(&dir.dir_lock);
                if !dir.state().orphan && n.parent().is_some_and(|p| Arc::ptr_eq(&p, dir)) {
                    perm::check(&self.store.attributes(dir.id())?, &cred, perm::X)?;
                    return Ok(self.claim(n));
                }
            }
            self.classify(dir, name)?
        } else {
            dir.area.clone()
        };
        let _g = read(&dir.dir_lock);
        let (id, kind, orphan) = {
            let s = dir.state();
            (s.id, s.kind, s.orphan)
        };
        if kind != ObjectKind::Directory {
            return Err(FsError::NotDir);
        }
        if orphan {
            return Err(FsError::NotFound);
        }
        let dattr = self.store.attributes(id)?;
        perm::check(&dattr, &cred, perm::X)?;
        let data = self.dir_data(id)?;
        let e = data.lookup(name).ok_or(FsError::NotFound)?;
        let mut ch = lock(&dir.children);
        if let Some(n) = ch.get(name).and_then(std::sync::Weak::upgrade) {
            drop(ch);
            return Ok(self.claim(n));
        }
        let kind = self.store.attributes(e.id)?.kind;
        let n = Node::new(
            e.id,
            e.cow,
            kind,
            Some(Arc::clone(dir)),
            name.to_vec(),
            area,
        );
        if ch.len() > 64 && ch.len().is_power_of_two() {
            ch.retain(|_, w| w.strong_count() > 0);
        }
        ch.insert(name.to_vec(), Arc::downgrade(&n));
        drop(ch);
        Ok(self.claim(n))
    }

    /// Reads up to `len` bytes at `offset`. A regular file of at most
    /// [`crate::cache::DATA_MAX`] bytes (or a frozen one up to
    /// [`crate::cache::FROZEN_DATA_MAX`]) is read whole into the cache on the first miss and
    /// served from memory after that (see [`crate::cache`]); so is a symlink's target (set at
    /// creation, never opened for writing: every boot resolves the same `/bin/sh` links).
    pub fn read(&self, node: &Node, offset: u64, len: usize) -> FsResult<Bytes> {
        let _io = read(&node.io);
        let id = node.id();
        let len = len.min(envoy_storage::MAX_IO);
        let in_range = offset
            .checked_add(len as u64)
            .is_some_and(|end| end <= i64::MAX as u64);
        let cacheable = matches!(node.kind(), ObjectKind::Regular | ObjectKind::Symlink);
        if !cacheable || !in_range {
            // Out-of-range offsets get the store's own error.
            return Ok(self.store_read(id, offset, len)?);
        }
        let ticket = match self.cache.get_data(id) {
            DataLookup::Hit(whole) => return Ok(slice_at(&whole, offset, len)),
            DataLookup::Bypass => return Ok(self.store_read(id, offset, len)?),
            DataLookup::Miss(ticket) => ticket,
        };
        self.read_miss(node, ticket, offset, len)
    }

    /// The rest of [`Fs::read`] after a cache miss: reads the file whole into the cache when
    /// it qualifies (else just the range) and returns the range. `node.io` is held by the
    /// caller.
    fn read_miss(
        &self,
        node: &Node,
        ticket: crate::cache::FillTicket,
        offset: u64,
        len: usize,
    ) -> FsResult<Bytes> {
        let id = node.id();
        let size = self.store.stat(id)?.size;
        let limit = if size > crate::cache::DATA_MAX && frozen_path(node) {
            crate::cache::FROZEN_DATA_MAX
        } else {
            crate::cache::DATA_MAX
        };
        if tracing::enabled!(target: STORE_TRACE, tracing::Level::TRACE) {
            let name = String::from_utf8_lossy(&node.state().name).into_owned();
            tracing::trace!(target: STORE_TRACE, %id, %name, size, limit, "file read from store");
        }
        if size > limit {
            let _ = self.cache.put_data(ticket, Fill::TooBig);
            return Ok(self.store_read(id, offset, len)?);
        }
        // A concurrent truncate or write voids the ticket, so a short or stale read is never
        // kept.
        let whole = if size as usize <= envoy_storage::MAX_IO {
            self.store_read(id, 0, size as usize)?
        } else {
            let mut buf = bytes::BytesMut::with_capacity(size as usize);
            while (buf.len() as u64) < size {
                let chunk = self.store_read(id, buf.len() as u64, envoy_storage::MAX_IO)?;
                if chunk.is_empty() {
                    break;
                }
                buf.extend_from_slice(&chunk);
            }
            buf.freeze()
        };
        let _ = self.cache.put_data(ticket, Fill::Data(whole.clone()));
        Ok(slice_at(&whole, offset, len))
    }

    /// Writes `data` at `offset`, thawing the file first if it is frozen, and sets mtime.
    pub fn write(&self, node: &Arc<Node>, offset: u64, data: Bytes) -> FsResult<usize> {
        self.write_src(node, offset, WriteSrc::Bytes(data))
    }

    /// [`Fs::write`] of data in a private buffer or in shared memory ([`WriteSrc`]).
    pub fn write_src(&self, node: &Arc<Node>, offset: u64, data: WriteSrc<'_>) -> FsResult<usize> {
        offset
            .checked_add(data.len() as u64)
            .filter(|&end| end <= i64::MAX as u64)
            .ok_or(FsError::TooBig("offset + count beyond the largest file"))?;
        Fs::check_area(node)?;
        // The slow part of a first write after a snapshot (copying frozen objects) happens
        // before the gate, so a snapshot never waits for it.
        let mut prep = self.prepare_thaw(node);
        let _gate = self.enter_prepared(node, &mut prep)?;
        self.write_with(node, offset, data, true)
    }

    /// [`Fs::write`] without the area rules or the image gate (the image manager's metadata);
    /// `set_mtime: false` skips the attribute update.
    pub(crate) fn write_in(
        &self,
        node: &Arc<Node>,
        offset: u64,
        data: Bytes,
        set_mtime: bool,
    ) -> FsResult<usize> {
        self.write_with(node, offset, WriteSrc::Bytes(data), set_mtime)
    }

    fn write_with(
        &self,
        node: &Arc<Node>,
        offset: u64,
        data: WriteSrc<'_>,
        set_mtime: bool,
    ) -> FsResult<usize> {
        loop {
            self.thaw(node)?;
            let _io = read(&node.io);
            let id = {
                let s = node.state();
                if s.cow {
                    continue;
                }
                s.id
            };
            let n = self.store_write_src(id, offset, data);
            // Even a failed write may have changed part of the object.
            self.cache.invalidate(id);
            let n = n?;
            self.writes.fetch_add(1, Ordering::Relaxed);
            let now = Timestamp::now();
            // At most one mtime rename per granularity tick of a streaming write.
            if set_mtime && self.mtime_stale(id, now) {
                let change = AttrChange {
                    mtime: Some(now),
                    ..AttrChange::default()
                };
                self.store.wstat(id, &change)?;
            }
            return Ok(n);
        }
    }

    /// Changes attributes (and size), thawing first. Permission checks are the caller's.
    pub fn setattr(&self, node: &Arc<Node>, change: &AttrChange) -> FsResult<ObjectStat> {
        let mut prep = self.prepare_thaw(node);
        let _gate = self.enter_prepared(node, &mut prep)?;
        loop {
            self.thaw(node)?;
            let _io = read(&node.io);
            let id = {
                let s = node.state();
                if s.cow {
                    continue;
                }
                s.id
            };
            if change.size.is_some() && node.kind() == ObjectKind::Directory {
                return Err(FsError::IsDir);
            }
            let st = self.store.wstat(id, change);
            if change.size.is_some() {
                self.cache.invalidate(id);
            }
            return Ok(st?);
        }
    }

    /// Makes a node's object, and the directory naming it, durable; and every directory
    /// above whose link a thaw repointed since it was last synced, so that the path to the
    /// object survives a power failure too.
    pub fn sync(&self, node: &Node) -> FsResult<()> {
        let (id, parent) = {
            let s = node.state();
            (s.id, s.parent.clone())
        };
        self.store.sync(id)?;
        let Some(p) = parent else {
            return Ok(());
        };
        // Each directory leaves the set before its sync: a thaw that changes it meanwhile
        // puts it back after its own write.
        let pid = p.id();
        lock(&self.relinked).remove(&pid);
        self.sync_dir_relinked(pid)?;
        let mut cur = p.parent();
        while let Some(n) = cur {
            let nid = n.id();
            if lock(&self.relinked).remove(&nid) {
                self.sync_dir_relinked(nid)?;
            }
            cur = n.parent();
        }
        Ok(())
    }

    /// Syncs directory `id`, taken out of `relinked`; puts it back if that fails (a directory
    /// deleted since has nothing left to sync).
    fn sync_dir_relinked(&self, id: ObjectId) -> FsResult<()> {
        match self.store.sync(id) {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => {
                lock(&self.relinked).insert(id);
                Err(e.into())
            }
        }
    }

    /// Makes every directory a thaw repointed a link in durable (the image manager's
    /// background sync calls it, so the set stays small when no client syncs).
    pub fn sync_relinked(&self) {
        let ids: Vec<ObjectId> = lock(&self.relinked).drain().collect();
        for id in ids {
            if let Err(e) = self.sync_dir_relinked(id) {
                tracing::error!(%id, error = %e, "syncing a directory a thaw changed failed");
            }
        }
    }

    /// How many directories a thaw changed that are not synced yet (tests).
    #[doc(hidden)]
    pub fn relinked_unsynced(&self) -> usize {
        lock(&self.relinked).len()
    }

    /// Reads from the store, counted in [`Fs::traffic`].
    pub(crate) fn store_read(
        &self,
        id: ObjectId,
        offset: u64,
        len: usize,
    ) -> Result<Bytes, StoreError> {
        let r = self.store.read(id, offset, len);
        self.traffic.read_requests.fetch_add(1, Ordering::Relaxed);
        if let Ok(b) = &r {
            self.traffic
                .read_bytes
                .fetch_add(b.len() as u64, Ordering::Relaxed);
            tracing::trace!(target: STORE_TRACE, %id, offset, bytes = b.len(), "store read");
        }
        r
    }

    /// Writes to the store, counted in [`Fs::traffic`].
    pub(crate) fn store_write(
        &self,
        id: ObjectId,
        offset: u64,
        data: Bytes,
    ) -> Result<usize, StoreError> {
        let len = data.len() as u64;
        let r = self.store.write(id, offset, data);
        self.traffic.write_requests.fetch_add(1, Ordering::Relaxed);
        if r.is_ok() {
            self.traffic.write_bytes.fetch_add(len, Ordering::Relaxed);
        }
        r
    }

    /// Requests and bytes between envoyd and the object store since start.
    pub fn traffic(&self) -> Traffic {
        let t = &self.traffic;
        Traffic {
            read_requests: t.read_requests.load(Ordering::Relaxed),
            read_bytes: t.read_bytes.load(Ordering::Relaxed),
            write_requests: t.write_requests.load(Ordering::Relaxed),
            write_bytes: t.write_bytes.load(Ordering::Relaxed),
            write_in_place_requests: t.write_in_place_requests.load(Ordering::Relaxed),
            write_in_place_bytes: t.write_in_place_bytes.load(Ordering::Relaxed),
        }
    }

    /// Total data writes served (for stats).
    pub fn write_count(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod mtime_tests {
    use super::*;

    fn ts(ns: u64) -> Timestamp {
        Timestamp::from_nanos(ns)
    }

    #[test]
    fn mtime_needs_update_within_granularity_false() {
        let t = 1_700_000_000_000_000_000;
        assert!(!mtime_needs_update(ts(t), ts(t)));
        assert!(!mtime_needs_update(ts(t), ts(t + MTIME_GRANULARITY_NS - 1)));
    }

    #[test]
    fn mtime_needs_update_after_granularity_true() {
        let t = 1_700_000_000_000_000_000;
        assert!(mtime_needs_update(ts(t), ts(t + MTIME_GRANULARITY_NS)));
        assert!(mtime_needs_update(ts(0), ts(t)));
    }

    #[test]
    fn mtime_needs_update_stored_in_future_true() {
        let t = 1_700_000_000_000_000_000;
        assert!(mtime_needs_update(ts(t + 1), ts(t)));
    }
}
