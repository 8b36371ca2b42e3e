//! The object store: numbered objects as files in a radix tree of directories (§5.3.2).
//!
//! # On disk
//!
//! ```text
//! <dir>/envoy-store.meta     superblock (see [`crate::superblock`])
//! <dir>/envoy-store.lock     flock'ed by the one process that has the store open
//! <dir>/objects/<root>/<level>/…/<leaf name>
//! ```
//!
//! Paths come from [`crate::geometry`], leaf names (low ID bits + attributes) from
//! [`crate::name`]. Size and ctime are the host inode's; the rest is in the name, so `stat`
//! costs one cached directory listing plus an `fstat` of a cached descriptor.
//!
//! # Crash safety (process crash; power loss needs [`ObjectStore::sync`])
//!
//! Every operation is old-state-or-new-state after a `kill -9` at any point, with one
//! exception spelled out under wstat:
//!
//! * **create**: check the listing, then one `renameat2(RENAME_NOREPLACE)` of an empty
//!   temporary file in `objects/` to the final leaf name — the name carries the attributes,
//!   so the object appears complete or not at all, and an existing object is never replaced.
//!   With spare files enabled ([`ObjectStore::keep_spare_files`]) it is instead one `linkat`
//!   of a pre-created unnamed (`O_TMPFILE`) file; without, the temporary is `.new-<id>` made
//!   just before. (Creating it
//!   outside the leaf directory keeps that directory's lock free during the slow inode
//!   allocation.)
//! * **wstat**: the attribute change is atomic (ONE `rename(old name → new name)` in the same
//!   directory); a size change is not atomic with it. `ftruncate` runs first, so a size the
//!   host refuses fails the whole wstat with nothing changed, but a crash (or a failed
//!   rename) after the truncate leaves the new size with the old attributes. The size is data,
//!   like a write; callers that need both or neither must not combine them.
//! * **clone**: build `objects/.clone-<dst>` (reflink, else
//!   `copy_file_range`, else read+write; a directory object is copied with every entry's
//!   copy-on-write flag set), fsync it, rename it to the final name. With spare files the
//!   temporary is a ready unnamed file instead of a new `.clone-<dst>`, and is linked to the
//!   final name instead of renamed.
//! * **delete**: unlink (not durable until a later fsync of its leaf directory: there is no
//!   object left to [`ObjectStore::sync`], so after power loss a deleted object may be back).
//!   **reserve**: superblock rewrite (temp + fsync + rename + fsync dir), durable on return.
//! * **create/clone** first raise the superblock's reserve mark past the new ID (rounded up to a
//!   multiple of 4096) so that every object lies below the mark.
//!
//! Recovery on open removes every temporary (`.`-prefixed) file and reports it via tracing.
//!
//! # Concurrency
//!
//! No global lock: 64 striped mutexes (by ID) serialize metadata changes of one object; data
//! reads and writes go straight to the I/O engine with an `Arc<File>` from the descriptor
//! cache. A failed fsync poisons the store: writes are refused until it is reopened.
//!
//! # Limits
//!
//! A read returns at most [`MAX_IO`] bytes (a longer request is capped, a short read); a
//! write of more than [`MAX_IO`] bytes is refused. `offset + len` must fit in 63 bits. The
//! store never updates atime or mtime on its own: those are attributes the caller sets.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use crate::cache::dir::{DirCache, LeafEntry, Listing};
use crate::cache::fd::FdCache;
use crate::crash::CrashInjector;
use crate::engine::{IoEngine, IoOp, IoOutcome, SyncEngine};
use crate::error::StoreError;
use crate::geometry::Geometry;
use crate::name;
use crate::object::{
    AttrChange, Attributes, IdRange, ObjectId, ObjectStat, ReadRequest, StoreUsage, Timestamp,
    WriteRequest,
};
use crate::superblock::{Superblock, META_FILE, META_TMP};
use crate::sys;

mod clone;
mod read_into;
mod spare;
mod walk;
mod write_from;

pub use spare::SPARE_PREFIX;

/// Largest read or write the store performs in one request (16 MiB).
pub const MAX_IO: usize = 16 << 20;
/// The directory holding the object tree.
pub const OBJECTS_DIR: &str = "objects";
/// The lock file.
pub const LOCK_FILE: &str = "envoy-store.lock";
/// The first ID `reserve` hands out in a new store (0 stays free to mean "none").
pub const FIRST_ID: u64 = 1;
/// Granularity by which create/clone raise the reserve mark.
const MARK_STEP: u64 = 4096;
const STRIPES: usize = 64;

/// Which I/O engine a store uses.
#[derive(Debug, Clone)]
pub enum EngineChoice {
    /// io_uring, falling back to [`SyncEngine`] with a warning if it cannot be set up.
    Uring,
    /// The synchronous engine.
    Sync,
    /// A caller-supplied engine (tests: fault injection).
    Custom(Arc<dyn IoEngine>),
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The data engine.
    pub engine: EngineChoice,
    /// Capacity of the open-descriptor cache.
    pub fd_cache: usize,
    /// Capacity of the leaf-directory listing cache.
    pub dir_cache: usize,
    /// ID width for a new store (ignored when opening: the superblock decides).
    pub id_bits: u8,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            engine: EngineChoice::Uring,
            fd_cache: 1024,
            dir_cache: 1024,
            id_bits: 48,
        }
    }
}

/// Opens a new object file read-write: private to the store (0600), never through a
/// symlink. `exclusive` fails if it exists; otherwise a leftover of the same (temporary) name
/// is emptied.
pub(crate) fn open_new_file(path: &Path, exclusive: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if exclusive {
        o.create_new(true);
    } else {
        o.create(true).truncate(true);
    }
    o.mode(0o600).custom_flags(libc::O_NOFOLLOW).open(path)
}

fn make_engine(choice: &EngineChoice) -> Arc<dyn IoEngine> {
    match choice {
        EngineChoice::Sync => Arc::new(SyncEngine),
        EngineChoice::Custom(e) => Arc::clone(e),
        EngineChoice::Uring => crate::engine_select::uring_or_sync(),
    }
}

/// The on-disk object store. Cheap to share (`Arc<ObjectStore>`); every method takes `&self`.
#[derive(Debug)]
pub struct ObjectStore {
    dir: PathBuf,
    objects: PathBuf,
    geometry: Geometry,
    engine: Arc<dyn IoEngine>,
    fds: FdCache,
    dirs: DirCache,
    stripes: Vec<Mutex<()>>,
    /// The reserve high-water mark; the mutex also serializes superblock rewrites.
    mark: Mutex<u64>,
    poisoned: AtomicBool,
    reflink: AtomicBool,
    crash: Option<Arc<CrashInjector>>,
    /// Pre-created empty files for create and clone ([`spare`]), once enabled.
    spares: std::sync::OnceLock<Arc<spare::Spares>>,
    /// Key + 1 of the leaf directory most recently made sure of (0: none).
    last_leaf_dir: std::sync::atomic::AtomicU64,
    /// Keys of the leaf directories made sure of (the store never removes one).
    made_leaf_dirs: Mutex<std::collections::HashSet<u64>>,
    _lock: File,
}

impl Drop for ObjectStore {
    fn drop(&mut self) {
        if let Some(s) = self.spares.get() {
            s.stop();
        }
    }
}

fn lock_store(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::io(format!("opening {}", path.display()), e))?;
    match sys::try_lock_exclusive(&f) {
        Ok(true) => Ok(f),
        Ok(false) => Err(StoreError::Locked(dir.to_path_buf())),
        Err(e) => Err(StoreError::io(format!("locking {}", path.display()), e)),
    }
}

/// True when `r` failed for a real reason, so the operation should clean up after itself. An
/// injected crash must leave the disk exactly as it is, like a `kill -9` would.
fn needs_cleanup<T>(r: &Result<T, StoreError>) -> bool {
    matches!(r, Err(e) if !matches!(e, StoreError::InjectedCrash(_)))
}

fn ts(secs: i64, nanos: i64) -> Timestamp {
    Timestamp {
        secs: u64::try_from(secs).unwrap_or(0),
        nanos: u32::try_from(nanos).unwrap_or(0),
    }
}

/// Builds a stat from a leaf entry and host metadata.
pub(crate) fn stat_from(id: ObjectId, attr: Attributes, md: &fs::Metadata) -> ObjectStat {
    ObjectStat {
        id,
        attr,
        size: md.len(),
        ctime: ts(md.ctime(), md.ctime_nsec()),
        blocks: md.blocks(),
    }
}

impl ObjectStore {
    /// Creates a new store in `dir` (created if missing); fails if one exists.
    pub fn create(dir: &Path, opts: StoreOptions) -> Result<Self, StoreError> {
        fs::create_dir_all(dir)
            .map_err(|e| StoreError::io(format!("creating {}", dir.display()), e))?;
        let lock = lock_store(dir)?;
        if dir.join(META_FILE).exists() {
            return Err(StoreError::StoreExists(dir.to_path_buf()));
        }
        let bs = sys::block_size(dir)?;
        let geometry = Geometry::compute(bs, opts.id_bits)
            .map_err(|e| StoreError::InvalidArgument(e.to_string()))?;
        let objects = dir.join(OBJECTS_DIR);
        fs::create_dir_all(&objects)
            .map_err(|e| StoreError::io(format!("creating {}", objects.display()), e))?;
        let sb = Superblock {
            geometry,
            reserved: FIRST_ID,
        };
        sb.store(dir, |_| Ok(()), |e| e)?;
        tracing::info!(dir = %dir.display(), ?geometry, "created object store");
        Ok(Self::build(dir, sb, opts, lock))
    }

    /// Opens an existing store and runs recovery.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Self, StoreError> {
        if !dir.join(META_FILE).exists() {
            return Err(StoreError::NoStore(dir.to_path_buf()));
        }
        let lock = lock_store(dir)?;
        let sb = Superblock::load(dir)?;
        let store = Self::build(dir, sb, opts, lock);
        store.recover()?;
        Ok(store)
    }

    /// Opens the store in `dir`, creating it if there is none.
    pub fn open_or_create(dir: &Path, opts: StoreOptions) -> Result<Self, StoreError> {
        if dir.join(META_FILE).exists() {
            Self::open(dir, opts)
        } else {
            Self::create(dir, opts)
        }
    }

    fn build(dir: &Path, sb: Superblock, opts: StoreOptions, lock: File) -> Self {
        ObjectStore {
            dir: dir.to_path_buf(),
            objects: dir.join(OBJECTS_DIR),
            geometry: sb.geometry,
            engine: make_engine(&opts.engine),
            fds: FdCache::new(opts.fd_cache),
            dirs: DirCache::new(opts.dir_cache),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            mark: Mutex::new(sb.reserved),
            poisoned: AtomicBool::new(false),
            reflink: AtomicBool::new(true),
            crash: None,
            spares: std::sync::OnceLock::new(),
            last_leaf_dir: std::sync::atomic::AtomicU64::new(0),
            made_leaf_dirs: Mutex::new(std::collections::HashSet::new()),
            _lock: lock,
        }
    }

    /// Installs a crash injector (tests only).
    #[doc(hidden)]
    pub fn with_crash_injector(mut self, injector: Arc<CrashInjector>) -> Self {
        self.crash = Some(injector);
        self
    }

    fn crash_point(&self, label: &'static str) -> Result<(), StoreError> {
        match &self.crash {
            Some(c) => c.hit(label),
            None => Ok(()),
        }
    }

    /// Removes temporary files left by a crash.
    fn recover(&self) -> Result<(), StoreError> {
        let tmp = self.dir.join(META_TMP);
        if tmp.exists() {
            fs::remove_file(&tmp)
                .map_err(|e| StoreError::io(format!("removing {}", tmp.display()), e))?;
            tracing::info!(path = %tmp.display(), "recovery: removed superblock temp file");
        }
        let removed = walk::remove_temp_files(&self.objects)?;
        if removed > 0 {
            tracing::info!(removed, "recovery finished");
        }
        Ok(())
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The geometry recorded in the superblock.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The I/O engine's name (`"io_uring"` or `"sync"`).
    pub fn engine_name(&self) -> &'static str {
        self.engine.name()
    }

    /// The current reserve high-water mark.
    pub fn reserve_mark(&self) -> u64 {
        *self.lock_mark()
    }

    /// True after an fsync failure.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }

    fn lock_mark(&self) -> MutexGuard<'_, u64> {
        self.mark.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stripe_index(id: ObjectId) -> usize {
        // Fibonacci hashing spreads consecutive IDs over all stripes.
        (id.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize % STRIPES
    }

    fn lock_id(&self, id: ObjectId) -> MutexGuard<'_, ()> {
        self.stripes[Self::stripe_index(id)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn check_id(&self, id: ObjectId) -> Result<(), StoreError> {
        if self.geometry.contains(id) {
            Ok(())
        } else {
            Err(StoreError::IdOutOfRange {
                id,
                id_bits: self.geometry.id_bits,
            })
        }
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        if self.is_poisoned() {
            Err(StoreError::Poisoned)
        } else {
            Ok(())
        }
    }

    fn poison(&self, e: StoreError) -> StoreError {
        tracing::error!(
            error = %crate::error::chain(&e),
            "fsync failed; store refuses writes until reopened"
        );
        self.poisoned.store(true, Ordering::SeqCst);
        e
    }

    fn leaf_dir(&self, id: ObjectId) -> PathBuf {
        self.geometry
            .leaf_dir(&self.objects, self.geometry.leaf_dir_key(id))
    }

    fn load_listing(&self, dir_key: u64) -> Result<Listing, StoreError> {
        let d = self.geometry.leaf_dir(&self.objects, dir_key);
        let mut out = Listing::new();
        let rd = match fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(StoreError::io(format!("reading {}", d.display()), e)),
        };
        for ent in rd {
            let ent = ent.map_err(|e| StoreError::io(format!("reading {}", d.display()), e))?;
            let fname = ent.file_name();
            let Some(s) = fname.to_str() else {
                tracing::warn!(path = %ent.path().display(), "ignoring non-UTF-8 file name");
                continue;
            };
            if name::is_temp(s) {
                continue;
            }
            match name::parse(self.geometry.leaf_bits, s) {
                Some(leaf) => {
                    out.insert(
                        leaf.low,
                        LeafEntry {
                            name: s.to_string(),
                            attr: leaf.attr,
                        },
                    );
                }
                None => tracing::warn!(path = %ent.path().display(), "ignoring corrupt leaf name"),
            }
        }
        Ok(out)
    }

    fn entry(&self, id: ObjectId) -> Result<Option<LeafEntry>, StoreError> {
        let key = self.geometry.leaf_dir_key(id);
        self.dirs
            .lookup(key, self.geometry.leaf_low(id), || self.load_listing(key))
    }

    fn entry_required(&self, id: ObjectId) -> Result<LeafEntry, StoreError> {
        self.entry(id)?.ok_or(StoreError::NotFound(id))
    }

    /// Opens (or takes from the cache) the file of `id`; the caller holds `id`'s stripe.
    fn file_locked(&self, id: ObjectId) -> Result<Arc<File>, StoreError> {
        if let Some(f) = self.fds.get(id) {
            return Ok(f);
        }
        let entry = self.entry_required(id)?;
        let path = self.leaf_dir(id).join(&entry.name);
        // O_NOFOLLOW: a symlink planted under a leaf name must not make the store serve a
        // host file.
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => StoreError::NotFound(id),
                _ => StoreError::io(format!("opening object {id}"), e),
            })?;
        let f = Arc::new(f);
        self.fds.insert(id, Arc::clone(&f));
        Ok(f)
    }

    fn file(&self, id: ObjectId) -> Result<Arc<File>, StoreError> {
        self.check_id(id)?;
        if let Some(f) = self.fds.get(id) {
            return Ok(f);
        }
        let _g = self.lock_id(id);
        self.file_locked(id)
    }

    fn stat_locked(&self, id: ObjectId, attr: Attributes) -> Result<ObjectStat, StoreError> {
        let f = self.file_locked(id)?;
        let md = f
            .metadata()
            .map_err(|e| StoreError::io(format!("fstat of object {id}"), e))?;
        Ok(stat_from(id, attr, &md))
    }

    /// Raises the reserve mark past `id` if needed (durably).
    fn cover_id(&self, id: ObjectId) -> Result<(), StoreError> {
        let mut mark = self.lock_mark();
        if id.0 < *mark {
            return Ok(());
        }
        let limit = self.geometry.id_limit();
        let new =
            id.0.checked_add(1)
                .and_then(|n| n.checked_next_multiple_of(MARK_STEP))
                .map_or(limit, |n| n.min(limit));
        let sb = Superblock {
            geometry: self.geometry,
            reserved: new,
        };
        sb.store(&self.dir, |l| self.crash_point(l), |e| self.poison(e))?;
        *mark = new;
        Ok(())
    }

    /// Hands out `count` never-used IDs; durable before it returns.
    pub fn reserve(&self, count: u64) -> Result<IdRange, StoreError> {
        self.check_writable()?;
        if count == 0 {
            return Err(StoreError::InvalidArgument("reserve of 0 IDs".into()));
        }
        let mut mark = self.lock_mark();
        let first = *mark;
        let end = first
            .checked_add(count)
            .filter(|&e| e <= self.geometry.id_limit())
            .ok_or_else(|| {
                StoreError::InvalidArgument(format!(
                    "cannot reserve {count} IDs: {} left below 2^{}",
                    self.geometry.id_limit().saturating_sub(first),
                    self.geometry.id_bits
                ))
            })?;
        let sb = Superblock {
            geometry: self.geometry,
            reserved: end,
        };
        sb.store(&self.dir, |l| self.crash_point(l), |e| self.poison(e))?;
        *mark = end;
        Ok(IdRange {
            first: ObjectId(first),
            count,
        })
    }

    fn make_leaf_dir(&self, id: ObjectId) -> Result<PathBuf, StoreError> {
        let d = self.leaf_dir(id);
        // New IDs are consecutive, so most creations land in the leaf directory the last one
        // made sure of (the store never removes leaf directories): skip its mkdir and stat.
        let key = self.geometry.leaf_dir_key(id).wrapping_add(1);
        if self.last_leaf_dir.load(Ordering::Relaxed) == key {
            return Ok(d);
        }
        // Several streams of IDs (clients' creations, background clones) alternate between
        // leaf directories; each directory is made sure of once.
        let made = |m: &Mutex<std::collections::HashSet<u64>>| {
            m.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&key)
        };
        if !made(&self.made_leaf_dirs) {
            fs::create_dir_all(&d)
                .map_err(|e| StoreError::io(format!("creating {}", d.display()), e))?;
            self.made_leaf_dirs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key);
        }
        self.last_leaf_dir.store(key, Ordering::Relaxed);
        Ok(d)
    }

    fn leaf_name(&self, id: ObjectId, attr: &Attributes) -> Result<String, StoreError> {
        name::encode(self.geometry.leaf_bits, self.geometry.leaf_low(id), attr)
            .map_err(|e| StoreError::InvalidArgument(e.to_string()))
    }

    /// From now on, keeps about `target` empty files ready so that [`ObjectStore::create_object`]
    /// and [`ObjectStore::clone_object`] rename one instead of creating a file (see
    /// [`spare`]: a background thread refills them; recovery at open removes leftovers). A
    /// second call changes nothing.
    pub fn keep_spare_files(&self, target: usize) -> Result<(), StoreError> {
        if target == 0 || self.spares.get().is_some() {
            return Ok(());
        }
        let s = spare::Spares::start(&self.objects, target)
            .map_err(|e| StoreError::io("starting the spare-file thread", e))?;
        if let Err(s) = self.spares.set(s) {
            s.stop();
        }
        Ok(())
    }

    /// Stops refilling spare files and removes the unused ones (a clean shutdown; without it,
    /// dropping the store or the next open's recovery removes them).
    pub fn stop_spare_files(&self) {
        if let Some(s) = self.spares.get() {
            s.stop();
        }
    }

    /// Spare files ready now (0 when not enabled).
    pub fn spare_files_ready(&self) -> usize {
        self.spares.get().map_or(0, |s| s.ready())
    }

    /// Spare files taken by creations and clones so far.
    pub fn spare_files_taken(&self) -> u64 {
        self.spares.get().map_or(0, |s| s.taken())
    }

    /// A ready spare file, if spares are enabled and one is ready.
    fn take_spare(&self) -> Option<spare::Spare> {
        self.spares.get().and_then(|s| s.take())
    }

    /// Creates the file of a new object at `path`: a spare linked there when one is ready
    /// (never replacing an existing file), else a new file.
    fn create_file(&self, id: ObjectId, path: &Path) -> Result<File, StoreError> {
        if let Some(s) = self.take_spare() {
            match spare::link_unnamed(&s.file, path) {
                Ok(()) => return Ok(s.file),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(StoreError::AlreadyExists(id));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "linking a spare file failed; creating one");
                }
            }
        }
        // Made in `objects/` and renamed into place: the leaf directory is then locked for a
        // rename, not for the whole (slow) inode allocation of a file creation.
        let tmp = self.objects.join(format!(".new-{:x}", id.0));
        let f = open_new_file(&tmp, false)
            .map_err(|e| StoreError::io(format!("creating object {id}"), e))?;
        match spare::rename_noreplace(&tmp, path) {
            Ok(()) => Ok(f),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(match e.kind() {
                    io::ErrorKind::AlreadyExists => StoreError::AlreadyExists(id),
                    _ => StoreError::io(format!("creating object {id}"), e),
                })
            }
        }
    }

    /// Creates an empty object with `attr`.
    pub fn create_object(&self, id: ObjectId, attr: &Attributes) -> Result<ObjectStat, StoreError> {
        self.check_id(id)?;
        self.check_writable()?;
        let leaf = self.leaf_name(id, attr)?;
        let _g = self.lock_id(id);
        if self.entry(id)?.is_some() {
            return Err(StoreError::AlreadyExists(id));
        }
        self.cover_id(id)?;
        self.crash_point("create:begin")?;
        let d = self.make_leaf_dir(id)?;
        self.crash_point("create:dirs")?;
        let f = self.create_file(id, &d.join(&leaf))?;
        self.crash_point("create:created")?;
        let g = self.geometry;
        self.dirs.upsert(
            g.leaf_dir_key(id),
            g.leaf_low(id),
            LeafEntry {
                name: leaf,
                attr: *attr,
            },
        );
        let f = Arc::new(f);
        self.fds.insert(id, Arc::clone(&f));
        let md = f
            .metadata()
            .map_err(|e| StoreError::io(format!("fstat of object {id}"), e))?;
        Ok(stat_from(id, *attr, &md))
    }

    fn check_range(offset: u64, len: usize) -> Result<(), StoreError> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= i64::MAX as u64 => Ok(()),
            _ => Err(StoreError::InvalidArgument(format!(
                "offset {offset} + length {len} is out of range"
            ))),
        }
    }

    fn io_err(id: ObjectId, what: &str, e: io::Error) -> StoreError {
        if e.kind() == io::ErrorKind::InvalidInput {
            StoreError::InvalidArgument(format!("{what} of object {id}: {e}"))
        } else {
            StoreError::io(format!("{what} of object {id}"), e)
        }
    }

    fn read_op(&self, r: &ReadRequest) -> Result<IoOp, StoreError> {
        let len = r.len.min(MAX_IO);
        Self::check_range(r.offset, len)?;
        Ok(IoOp::Read {
            file: self.file(r.id)?,
            offset: r.offset,
            len,
        })
    }

    fn read_result(id: ObjectId, r: io::Result<IoOutcome>) -> Result<Bytes, StoreError> {
        match r {
            Ok(IoOutcome::Read(b)) => Ok(b),
            Ok(other) => Err(StoreError::io(
                format!("read of object {id}"),
                io::Error::other(format!(
                    "engine returned a {} result for a read",
                    other.kind()
                )),
            )),
            Err(e) => Err(Self::io_err(id, "read", e)),
        }
    }

    /// Reads up to `len` bytes (at most [`MAX_IO`]) at `offset`; short at end of object.
    pub fn read(&self, id: ObjectId, offset: u64, len: usize) -> Result<Bytes, StoreError> {
        let op = self.read_op(&ReadRequest { id, offset, len })?;
        Self::read_result(id, self.engine.run_one(op))
    }

    /// Runs many reads as one engine batch; one result per request, in order.
    pub fn read_batch(&self, reqs: &[ReadRequest]) -> Vec<Result<Bytes, StoreError>> {
        self.run_batch(
            reqs.iter(),
            |r| Ok((r.id, self.read_op(r)?)),
            Self::read_result,
        )
    }

    /// Prepares every item with `prepare`, runs the prepared operations as one engine batch
    /// and turns each outcome into a result with `finish`. One result per item, in order; an
    /// item that fails to prepare keeps its error in place.
    fn run_batch<T, R>(
        &self,
        items: impl Iterator<Item = T>,
        prepare: impl Fn(T) -> Result<(ObjectId, IoOp), StoreError>,
        finish: fn(ObjectId, io::Result<IoOutcome>) -> Result<R, StoreError>,
    ) -> Vec<Result<R, StoreError>> {
        let mut out: Vec<Option<Result<R, StoreError>>> = Vec::new();
        let mut ops = Vec::new();
        let mut pending = Vec::new();
        for (slot, item) in items.enumerate() {
            match prepare(item) {
                Ok((id, op)) => {
                    ops.push(op);
                    pending.push((slot, id));
                    out.push(None);
                }
                Err(e) => out.push(Some(Err(e))),
            }
        }
        let results = self.engine.run(ops);
        for ((slot, id), res) in pending.into_iter().zip(results) {
            if let Some(o) = out.get_mut(slot) {
                *o = Some(finish(id, res));
            }
        }
        out.into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    Err(StoreError::io(
                        "batch",
                        io::Error::other("engine lost a result"),
                    ))
                })
            })
            .collect()
    }

    fn write_op(&self, id: ObjectId, offset: u64, data: Bytes) -> Result<IoOp, StoreError> {
        self.check_writable()?;
        if data.len() > MAX_IO {
            return Err(StoreError::InvalidArgument(format!(
                "write of {} bytes exceeds the {MAX_IO}-byte limit",
                data.len()
            )));
        }
        Self::check_range(offset, data.len())?;
        Ok(IoOp::Write {
            file: self.file(id)?,
            offset,
            data,
        })
    }

    fn write_result(id: ObjectId, r: io::Result<IoOutcome>) -> Result<usize, StoreError> {
        match r {
            Ok(IoOutcome::Write(n)) => Ok(n),
            Ok(other) => Err(StoreError::io(
                format!("write of object {id}"),
                io::Error::other(format!(
                    "engine returned a {} result for a write",
                    other.kind()
                )),
            )),
            Err(e) => Err(Self::io_err(id, "write", e)),
        }
    }

    /// Writes all of `data` at `offset`; returns the bytes written.
    pub fn write(&self, id: ObjectId, offset: u64, data: Bytes) -> Result<usize, StoreError> {
        let op = self.write_op(id, offset, data)?;
        self.crash_point("write:begin")?;
        let r = Self::write_result(id, self.engine.run_one(op));
        self.crash_point("write:done")?;
        r
    }

    /// Runs many writes as one engine batch; one result per request, in order.
    pub fn write_batch(&self, reqs: Vec<WriteRequest>) -> Vec<Result<usize, StoreError>> {
        self.run_batch(
            reqs.into_iter(),
            |r| Ok((r.id, self.write_op(r.id, r.offset, r.data)?)),
            Self::write_result,
        )
    }

    /// The object's attributes alone (kind, mode, owner, times), from the store's in-memory
    /// index: no descriptor is opened and nothing is `fstat`ed, unlike [`ObjectStore::stat`].
    /// Directory listings need only the kind and the times of each entry; a stat per entry
    /// would open (and, past the descriptor cache, close) one file per name.
    pub fn attributes(&self, id: ObjectId) -> Result<Attributes, StoreError> {
        self.check_id(id)?;
        let _g = self.lock_id(id);
        let key = self.geometry.leaf_dir_key(id);
        self.dirs
            .lookup_with(
                key,
                self.geometry.leaf_low(id),
                || self.load_listing(key),
                |e| e.attr,
            )?
            .ok_or(StoreError::NotFound(id))
    }

    /// The object's attributes, size, ctime and allocation.
    pub fn stat(&self, id: ObjectId) -> Result<ObjectStat, StoreError> {
        self.check_id(id)?;
        let _g = self.lock_id(id);
        let e = self.entry_required(id)?;
        self.stat_locked(id, e.attr)
    }

    /// Changes attributes and/or size: `ftruncate` first (size is data), then one rename.
    pub fn wstat(&self, id: ObjectId, change: &AttrChange) -> Result<ObjectStat, StoreError> {
        self.check_id(id)?;
        self.check_writable()?;
        if let Some(size) = change.size {
            if size > i64::MAX as u64 {
                return Err(StoreError::InvalidArgument(format!(
                    "size {size} too large"
                )));
            }
        }
        let _g = self.lock_id(id);
        let old = self.entry_required(id)?;
        let attr = change.apply(&old.attr);
        let leaf = self.leaf_name(id, &attr)?;
        self.crash_point("wstat:begin")?;
        if let Some(size) = change.size {
            let f = self.file_locked(id)?;
            f.set_len(size)
                .map_err(|e| Self::io_err(id, "truncate", e))?;
            self.crash_point("wstat:truncated")?;
        }
        if leaf != old.name {
            let d = self.leaf_dir(id);
            fs::rename(d.join(&old.name), d.join(&leaf))
                .map_err(|e| StoreError::io(format!("renaming object {id}"), e))?;
            self.crash_point("wstat:renamed")?;
            let g = self.geometry;
            self.dirs.upsert(
                g.leaf_dir_key(id),
                g.leaf_low(id),
                LeafEntry { name: leaf, attr },
            );
        }
        self.stat_locked(id, attr)
    }

    /// Removes the object.
    pub fn delete(&self, id: ObjectId) -> Result<(), StoreError> {
        self.check_id(id)?;
        self.check_writable()?;
        let _g = self.lock_id(id);
        let e = self.entry_required(id)?;
        self.crash_point("delete:begin")?;
        let path = self.leaf_dir(id).join(&e.name);
        fs::remove_file(&path).map_err(|err| match err.kind() {
            io::ErrorKind::NotFound => StoreError::NotFound(id),
            _ => StoreError::io(format!("deleting object {id}"), err),
        })?;
        self.crash_point("delete:unlinked")?;
        let g = self.geometry;
        self.dirs.remove(g.leaf_dir_key(id), g.leaf_low(id));
        self.fds.remove(id);
        Ok(())
    }

    /// Makes the object's data and its directory entry (and the path to it) durable.
    pub fn sync(&self, id: ObjectId) -> Result<(), StoreError> {
        self.check_writable()?;
        let f = self.file(id)?;
        match self.engine.run_one(IoOp::Fsync {
            file: f,
            datasync: false,
        }) {
            Ok(_) => {}
            Err(e) => return Err(self.poison(StoreError::io(format!("fsync of object {id}"), e))),
        }
        let mut d = self.leaf_dir(id);
        loop {
            sys::fsync_dir(&d).map_err(|e| self.poison(e))?;
            if d == self.dir || !d.pop() {
                break;
            }
        }
        Ok(())
    }

    /// The extended attribute `name` of object `id`, if set.
    ///
    /// Extended attributes are kept as host xattrs `user.envoy.<name>` on the object's file,
    /// so they live and die with the object (a delete removes them; `clone_object` does not
    /// copy them: callers that need them on a copy use [`ObjectStore::xattr_copy`]). Each set
    /// or remove is one atomic host call. The host file system must support user xattrs
    /// (`EOPNOTSUPP` otherwise).
    pub fn xattr_get(&self, id: ObjectId, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let f = self.file(id)?;
        sys::get_xattr(&f, name).map_err(|e| Self::io_err(id, "getxattr", e))
    }

    /// The names of object `id`'s extended attributes.
    pub fn xattr_list(&self, id: ObjectId) -> Result<Vec<String>, StoreError> {
        let f = self.file(id)?;
        sys::list_xattrs(&f).map_err(|e| Self::io_err(id, "listxattr", e))
    }

    /// Sets (creates or replaces) extended attribute `name` of object `id`.
    pub fn xattr_set(&self, id: ObjectId, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.check_writable()?;
        let f = self.file(id)?;
        sys::set_xattr(&f, name, value).map_err(|e| Self::io_err(id, "setxattr", e))
    }

    /// Removes extended attribute `name` of object `id`; `false` if it was not set.
    pub fn xattr_remove(&self, id: ObjectId, name: &str) -> Result<bool, StoreError> {
        self.check_writable()?;
        let f = self.file(id)?;
        sys::remove_xattr(&f, name).map_err(|e| Self::io_err(id, "removexattr", e))
    }

    /// Copies every extended attribute of `src` onto `dst` (after a clone).
    pub fn xattr_copy(&self, src: ObjectId, dst: ObjectId) -> Result<(), StoreError> {
        for name in self.xattr_list(src)? {
            if let Some(v) = self.xattr_get(src, &name)? {
                self.xattr_set(dst, &name, &v)?;
            }
        }
        Ok(())
    }

    /// Every object in the store, in ascending ID order (directory and leaf names are
    /// fixed-width hex with the high bits first, so tree order is ID order — handy for the
    /// sorted ID catalogues of snapshot deletion). Temporary files are skipped; a corrupt name
    /// yields an error item and the walk goes on.
    pub fn objects(&self) -> impl Iterator<Item = Result<ObjectStat, StoreError>> + '_ {
        walk::ObjectWalk::new(self.geometry, self.objects.clone())
    }

    /// Object count and allocated bytes.
    pub fn usage(&self) -> Result<StoreUsage, StoreError> {
        let mut u = StoreUsage::default();
        for s in self.objects() {
            let s = s?;
            u.objects += 1;
            u.bytes += s.blocks * 512;
        }
        Ok(u)
    }
}
