//! Images, snapshots and forks (§4.3): the operator's view of the namespace.
//!
//! # Naming
//!
//! The global tree has administrative directories above and images at its leaves. An image
//! is a directory in an administrative directory, its *head* (`/tenants/alice/web`), plus a
//! linear series of read-only snapshots, its siblings `web@1`, `web@2`, … (numbers grow; a
//! new snapshot takes the highest existing number plus one). What makes `web` an image is its
//! metadata file `/tenants/alice/.envoy/web` ([`meta`]: origin and fork log); the same hidden
//! `.envoy` directory holds snapshot catalogues (`web@3@cat`, [`catalogue`]) and the intent
//! records of deletions in progress (`web@3@doomed`, `web@@doomed`). Image names may not
//! contain `@`; `/ctl` is the synthetic control tree. Clients attach an image by its path
//! (aname), a snapshot by `…/web@3` (read-only: every change answers `EROFS`); the rules are
//! enforced in [`crate::namespace::area`].
//!
//! # Snapshot of a live image (§4.3.2)
//!
//! Under the image's gate held exclusively (no change of the image is in flight):
//! 1. clone the head's root directory object `H` into `S` (the store's directory clone sets the
//!    copy-on-write flag on every entry of the copy);
//! 2. set the copy-on-write flag on every entry of `H` itself, in place;
//! 3. link `web@N` → `S`, frozen.
//!
//! The head keeps its root object, so open fids of mounted clients carry on without noticing;
//! everything below the root is now shared with the snapshot and thaws on its first write
//! (§5.4.3). The dissertation sets the old root aside and makes a clone the new head; keeping
//! `H` as the head is the same tree with the roles of the two copies swapped, and it means a
//! power failure can only ever lose the *new* object — the snapshot — never the head's root.
//! A crash after step 1 leaves an unreferenced `S` (collected at start); after step 2, entries
//! flagged copy-on-write with no snapshot (harmless: they thaw on write).
//!
//! # Fork
//!
//! A fork starts a new image from a snapshot (a live head is snapshotted first): write the new
//! image's metadata (origin), append to the source's fork log, clone the snapshot's root into
//! the new head's root, link it. Only the root is copied; everything else is shared until
//! written.
//!
//! # Durability
//!
//! Like a data write, a snapshot or fork is complete when it is in the host page cache: the
//! root clones skip the store's fsync on the request path and a background syncer makes them
//! (and the directories linking them) durable right after; [`Images::flush`] waits for it.
//! Crash ordering (`kill -9` at any point) is covered by the step orders above and by
//! [`Images::open`]'s recovery.
//!
//! # Latency
//!
//! What is left on the path of a fork: one rename each for the metadata file and the root
//! clone, a handful of small writes (metadata, fork-log line, two directory blocks, the clone's
//! one block) and in-memory lookups. Two things were taken off it, both without weakening the
//! above:
//! * file creation: [`Images::open`] has the object store keep spare empty files ready
//!   (`ObjectStore::keep_spare_files`), so creating the metadata file and the clone's
//!   temporary is a rename of a pre-created file. An ext4 `open(O_CREAT)` cost several times
//!   a rename and was most of a fork. The store's own crash rules are unchanged: a spare is a
//!   temporary file, removed by the store's recovery at open whether used or not.
//! * reading what is not needed: a fork of `NAME@N` looks up that one name instead of
//!   listing the administrative directory's snapshots, and checks that the source is an image
//!   by the existence of its metadata file instead of parsing it with its fork log, which
//!   grows by a line with every fork.
//!
//! # Deleting (§4.3.3)
//!
//! See [`delete`]: catalogues, the fork log, and an intent record make deletion crash-safe.
//!
//! # Concurrency
//!
//! Operator actions are serialised by one mutex (`op`); 9P requests never take it.

pub mod catalogue;
mod delete;
pub mod import;
pub mod meta;

use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use envoy_storage::{ObjectId, ObjectKind, StoreUsage};

pub use delete::DeleteReport;

use crate::error::FsError;
use crate::namespace::area::{split_snapshot, CTL_NAME, META_DIR};
use crate::namespace::node::{lock, write, Area, ImageScope};
use crate::namespace::{check_name, Claim, Cred, Fs};
use meta::ImageMeta;

/// The operator's identity inside the namespace.
const ROOT: Cred = Cred { uid: 0, gid: 0 };

/// Empty files the object store keeps ready (a fork uses two, a snapshot one).
const SPARE_FILES: usize = 64;

/// Why an image operation failed: each message says what was wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The path is not a valid image or snapshot path.
    #[error(
        "{path:?} is not a valid image path ({why}); use /ADMIN/DIRS/NAME or /ADMIN/DIRS/NAME@N"
    )]
    BadPath {
        /// The path given.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// No image there.
    #[error("no image at {0}: list images with `envoyctl image list`")]
    NoImage(String),
    /// No such snapshot.
    #[error("no snapshot at {0}: list snapshots with `envoyctl image list`")]
    NoSnapshot(String),
    /// The name is taken.
    #[error("{0} already exists: choose another name, or delete it first")]
    Exists(String),
    /// An administrative path runs into an image.
    #[error("{0} is inside an image: images and administrative directories live only in administrative directories")]
    InsideImage(String),
    /// A snapshot or image with forks cannot be deleted.
    #[error("{what} has forks ({forks}): delete those images first")]
    HasForks {
        /// The snapshot or image.
        what: String,
        /// The forks.
        forks: String,
    },
    /// Clients use it.
    #[error("{0} is in use by a mounted client: unmount it (or close its fids) and try again")]
    Busy(String),
    /// The operation is not allowed on this target.
    #[error("{0}")]
    NotAllowed(String),
    /// The file system failed underneath.
    #[error(
        "{what}: {source}; check the envoyd log and the object store (`envoy-storaged check`)"
    )]
    Fs {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: FsError,
    },
}

fn fs_err(what: impl Into<String>) -> impl FnOnce(FsError) -> ImageError {
    let what = what.into();
    move |source| ImageError::Fs { what, source }
}

/// One image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Path of the head.
    pub path: String,
    /// Snapshots, oldest first.
    pub snapshots: Vec<SnapshotInfo>,
    /// For a fork: the snapshot it started from.
    pub origin: Option<String>,
    /// Forks taken from this image's snapshots (their head paths).
    pub forks: Vec<String>,
}

/// One snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Its path (`/tenants/alice/web@3`).
    pub path: String,
    /// Its number.
    pub number: u32,
}

/// Progress of a long operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// What is happening (`catalogue`, `free`, …).
    pub phase: &'static str,
    /// Units done.
    pub done: u64,
    /// Units in all (0 when unknown).
    pub total: u64,
}

/// A parsed image or snapshot path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImagePath {
    pub(crate) admin: Vec<String>,
    pub(crate) name: String,
    pub(crate) snapshot: Option<u32>,
}

impl ImagePath {
    pub(crate) fn parse(path: &str) -> Result<ImagePath, ImageError> {
        let bad = |why| ImageError::BadPath {
            path: path.to_string(),
            why,
        };
        if !path.starts_with('/') {
            return Err(bad("it must be absolute"));
        }
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let Some((last, admin)) = comps.split_last() else {
            return Err(bad("the root is an administrative directory, not an image"));
        };
        for c in &comps {
            check_name(c).map_err(|_| bad("a component is empty, `.`, `..` or too long"))?;
            if c.as_bytes() == META_DIR {
                return Err(bad("`.envoy` is reserved"));
            }
        }
        if admin.iter().any(|c| c.contains('@')) {
            return Err(bad("`@` is allowed only before a snapshot number"));
        }
        if comps.first().is_some_and(|c| c.as_bytes() == CTL_NAME) {
            return Err(bad("`/ctl` is the control tree"));
        }
        let (name, snapshot) = split_snapshot(last.as_bytes())
            .ok_or_else(|| bad("a snapshot suffix must be @ and a number without leading zeros"))?;
        let name = String::from_utf8_lossy(name).into_owned();
        if name.is_empty() || name.contains('@') {
            return Err(bad("an image name may not contain `@`"));
        }
        Ok(ImagePath {
            admin: admin.iter().map(|s| s.to_string()).collect(),
            name,
            snapshot,
        })
    }

    fn admin_path(&self) -> String {
        format!("/{}", self.admin.join("/"))
    }

    pub(crate) fn head(&self) -> String {
        if self.admin.is_empty() {
            format!("/{}", self.name)
        } else {
            format!("/{}/{}", self.admin.join("/"), self.name)
        }
    }

    fn snapshot_path(&self, n: u32) -> String {
        format!("{}@{n}", self.head())
    }

    fn display(&self) -> String {
        match self.snapshot {
            Some(n) => self.snapshot_path(n),
            None => self.head(),
        }
    }
}

/// A new image being built out of sight ([`Images::stage`]); [`Images::publish`] makes it
/// visible. Dropped unpublished, it is discarded.
#[derive(Debug)]
pub struct Staged {
    root: Option<Claim>,
    admin: Claim,
    meta: Claim,
    stage_name: String,
    dest: ImagePath,
    images: Arc<Images>,
}

impl Staged {
    /// The root directory of the new image: build the tree below it with the [`Fs`] API.
    pub fn root(&self) -> &Claim {
        // Present until publish or drop consume it.
        self.root.as_ref().unwrap_or(&self.admin)
    }

    /// The image's path once published.
    pub fn dest(&self) -> String {
        self.dest.head()
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(root) = self.root.take() {
            let id = root.node().id();
            drop(root);
            let _op = lock(&self.images.op);
            if let Err(e) = self
                .images
                .discard_tree(self.meta.node(), &self.stage_name, id)
            {
                tracing::warn!(error = %e, dest = %self.dest.head(), "discarding an unpublished import failed; the next start removes it");
            }
        }
    }
}

enum SyncJob {
    Sync(Vec<ObjectId>),
    Flush(Sender<()>),
}

/// The image manager.
#[derive(Debug)]
pub struct Images {
    fs: Arc<Fs>,
    op: Mutex<()>,
    sync_tx: Mutex<Option<Sender<SyncJob>>>,
    syncer: Mutex<Option<JoinHandle<()>>>,
    crash_at: Mutex<Option<String>>,
}

impl std::fmt::Debug for SyncJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncJob::Sync(ids) => write!(f, "Sync({} objects)", ids.len()),
            SyncJob::Flush(_) => write!(f, "Flush"),
        }
    }
}

fn syncer(fs: Arc<Fs>, rx: Receiver<SyncJob>) {
    while let Ok(job) = rx.recv() {
        match job {
            SyncJob::Sync(ids) => {
                for id in ids {
                    match fs.store().sync(id) {
                        Ok(()) => {}
                        Err(e) if e.is_not_found() => {}
                        Err(e) => {
                            tracing::error!(%id, error = %e, "background sync of an image root failed")
                        }
                    }
                }
            }
            SyncJob::Flush(ack) => {
                let _ = ack.send(());
            }
        }
    }
}

impl Images {
    /// The image manager for `fs`: registers `/default` as an image if it is not one yet, and
    /// finishes or rolls back what a crash interrupted (deletions, imports, creations).
    pub fn open(fs: Arc<Fs>) -> Result<Arc<Images>, ImageError> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let fs2 = Arc::clone(&fs);
        let handle = std::thread::Builder::new()
            .name("envoy-image-sync".into())
            .spawn(move || syncer(fs2, rx))
            .map_err(|e| {
                ImageError::NotAllowed(format!("cannot start the image sync thread: {e}"))
            })?;
        let images = Arc::new(Images {
            fs,
            op: Mutex::new(()),
            sync_tx: Mutex::new(Some(tx)),
            syncer: Mutex::new(Some(handle)),
            crash_at: Mutex::new(None),
        });
        // File creation is most of a fork's or snapshot's latency on ext4: keep spare files
        // ready (see `envoy_storage`'s spare module).
        images
            .fs
            .store()
            .keep_spare_files(SPARE_FILES)
            .map_err(|e| fs_err("starting the object store's spare files")(e.into()))?;
        images.recover()?;
        images.adopt_default()?;
        Ok(images)
    }

    /// The namespace.
    pub fn fs(&self) -> &Arc<Fs> {
        &self.fs
    }

    /// Waits until every snapshot and fork made so far is durable.
    pub fn flush(&self) {
        let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
        if let Some(tx) = lock(&self.sync_tx).as_ref() {
            if tx.send(SyncJob::Flush(ack_tx)).is_ok() {
                let _ = ack_rx.recv();
            }
        }
    }

    /// Stops the sync thread after it has synced everything queued, and the store's spare
    /// files.
    pub fn shutdown(&self) {
        lock(&self.sync_tx).take();
        if let Some(h) = lock(&self.syncer).take() {
            let _ = h.join();
        }
        self.fs.store().stop_spare_files();
    }

    /// Testing: the next operation to pass crash point `point` stops there, as if envoyd
    /// had been killed (what it wrote stays; nothing after the point happens). Restarting
    /// the server on the store then exercises recovery.
    #[doc(hidden)]
    pub fn inject_crash(&self, point: Option<&str>) {
        *lock(&self.crash_at) = point.map(str::to_string);
    }

    fn crash_point(&self, label: &str) -> Result<(), ImageError> {
        let mut c = lock(&self.crash_at);
        if c.as_deref() == Some(label) {
            *c = None;
            return Err(ImageError::NotAllowed(format!(
                "simulated crash at {label}"
            )));
        }
        Ok(())
    }

    fn sync_later(&self, ids: Vec<ObjectId>) {
        if let Some(tx) = lock(&self.sync_tx).as_ref() {
            let _ = tx.send(SyncJob::Sync(ids));
        }
    }

    /// `/default` predates the image manager in old stores: make it an image.
    fn adopt_default(&self) -> Result<(), ImageError> {
        let root = self.fs.root();
        let name = crate::namespace::DEFAULT_IMAGE.as_bytes();
        if self
            .fs
            .dir_snapshot(root.node())
            .map_err(fs_err("reading /"))?
            .lookup(name)
            .is_none()
        {
            return Ok(());
        }
        if self
            .fs
            .is_image_name(root.node(), name)
            .map_err(fs_err("reading /.envoy"))?
        {
            return Ok(());
        }
        let meta = self.meta_dir(&root, true)?;
        self.create_meta(
            &meta,
            crate::namespace::DEFAULT_IMAGE,
            &ImageMeta::default(),
        )?;
        // A live node for /default was classified before it became an image.
        if let Some(n) = root.node().child(name) {
            if matches!(n.area, Area::Admin) {
                lock(&root.node().children).remove(name);
            }
        }
        tracing::info!("registered /default as an image");
        Ok(())
    }

    // ---- paths -------------------------------------------------------------------------

    /// The administrative directory `comps` (created, like `mkdir -p`, when `create`).
    fn admin_dir(&self, comps: &[String], create: bool) -> Result<Claim, ImageError> {
        let mut cur = self.fs.root();
        let mut path = String::new();
        for c in comps {
            path.push('/');
            path.push_str(c);
            let next = match self.fs.lookup(cur.node(), c.as_bytes(), ROOT) {
                Ok(n) => n,
                Err(FsError::NotFound) if create => {
                    match self.fs.create_in(
                        &cur,
                        c.as_bytes(),
                        ObjectKind::Directory,
                        0o755,
                        ROOT,
                        0,
                        None,
                        Area::Admin,
                    ) {
                        Ok(n) => n,
                        Err(FsError::Exists) => self
                            .fs
                            .lookup(cur.node(), c.as_bytes(), ROOT)
                            .map_err(fs_err(format!("looking up {path}")))?,
                        Err(e) => return Err(fs_err(format!("creating {path}"))(e)),
                    }
                }
                Err(FsError::NotFound) => return Err(ImageError::NoImage(path)),
                Err(e) => return Err(fs_err(format!("looking up {path}"))(e)),
            };
            if !matches!(next.node().area, Area::Admin) {
                return Err(ImageError::InsideImage(path));
            }
            if next.node().kind() != ObjectKind::Directory {
                return Err(ImageError::NotAllowed(format!(
                    "{path} is a file, not an administrative directory: choose another path"
                )));
            }
            cur = next;
        }
        Ok(cur)
    }

    /// The `.envoy` metadata directory of administrative directory `admin`.
    fn meta_dir(&self, admin: &Claim, create: bool) -> Result<Claim, ImageError> {
        match self.fs.lookup(admin.node(), META_DIR, ROOT) {
            Ok(m) => Ok(m),
            Err(FsError::NotFound) if create => self
                .fs
                .create_in(
                    admin,
                    META_DIR,
                    ObjectKind::Directory,
                    0o700,
                    ROOT,
                    0,
                    None,
                    Area::Meta,
                )
                .map_err(fs_err("creating the image metadata directory")),
            Err(FsError::NotFound) => Err(ImageError::NoImage(admin.node().path())),
            Err(e) => Err(fs_err("reading the image metadata directory")(e)),
        }
    }

    /// Reads a whole (small) file.
    pub(crate) fn read_file(&self, dir: &Claim, name: &str) -> Result<Option<Vec<u8>>, FsError> {
        let f = match self.fs.lookup(dir.node(), name.as_bytes(), ROOT) {
            Ok(f) => f,
            Err(FsError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        let size = self.fs.stat(f.node())?.size;
        let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(1 << 26));
        while (out.len() as u64) < size {
            let b = self
                .fs
                .read(f.node(), out.len() as u64, envoy_storage::MAX_IO)?;
            if b.is_empty() {
                break;
            }
            out.extend_from_slice(&b);
        }
        Ok(Some(out))
    }

    /// Writes a small file in a metadata directory: under a temporary name, then renamed over
    /// the old one (a crash leaves the old contents or the new).
    pub(crate) fn write_file(
        &self,
        dir: &Claim,
        name: &str,
        contents: &[u8],
    ) -> Result<(), ImageError> {
        let tmp = format!("{name}@new");
        match self.fs.unlink_in(
            dir.node(),
            tmp.as_bytes(),
            crate::namespace::update::RemoveKind::NotDir,
            ROOT,
        ) {
            Ok(()) | Err(FsError::NotFound) => {}
            Err(e) => return Err(fs_err(format!("removing a stale {tmp}"))(e)),
        }
        let f = self
            .fs
            .create_in(
                dir,
                tmp.as_bytes(),
                ObjectKind::Regular,
                0o600,
                ROOT,
                0,
                None,
                Area::Meta,
            )
            .map_err(fs_err(format!("creating {tmp}")))?;
        if !contents.is_empty() {
            self.fs
                .store_write(f.node().id(), 0, bytes::Bytes::copy_from_slice(contents))
                .map_err(|e| fs_err(format!("writing {tmp}"))(e.into()))?;
        }
        drop(f);
        self.fs
            .rename_in(
                dir.node(),
                tmp.as_bytes(),
                dir.node(),
                name.as_bytes(),
                ROOT,
            )
            .map_err(fs_err(format!("renaming {tmp}")))
    }

    fn read_meta(&self, meta: &Claim, name: &str) -> Result<Option<ImageMeta>, ImageError> {
        let what = || format!("reading the metadata of {name}");
        let Some(b) = self.read_file(meta, name).map_err(fs_err(what()))? else {
            return Ok(None);
        };
        let log = self
            .read_file(meta, &format!("{name}@forks"))
            .map_err(fs_err(what()))?;
        ImageMeta::parse_with_log(&b, log.as_deref())
            .map(Some)
            .map_err(fs_err(format!("parsing the metadata of {name}")))
    }

    /// Writes the metadata file of a new image (written once; see [`meta`]).
    fn create_meta(&self, meta: &Claim, name: &str, m: &ImageMeta) -> Result<(), ImageError> {
        self.fs
            .create_in(
                meta,
                name.as_bytes(),
                ObjectKind::Regular,
                0o600,
                ROOT,
                0,
                Some(&m.encode()),
                Area::Meta,
            )
            .map(drop)
            .map_err(fs_err(format!("writing the metadata of {name}")))
    }

    /// Appends a line to the fork log of image `name` (one write at its end).
    fn append_log(&self, meta: &Claim, name: &str, line: &[u8]) -> Result<(), ImageError> {
        let file = format!("{name}@forks");
        let what = || format!("appending to the fork log of {name}");
        match self.fs.lookup(meta.node(), file.as_bytes(), ROOT) {
            Ok(f) => {
                let size = self.fs.stat(f.node()).map_err(fs_err(what()))?.size;
                self.fs
                    .write_in(f.node(), size, bytes::Bytes::copy_from_slice(line), false)
                    .map(drop)
                    .map_err(fs_err(what()))
            }
            Err(FsError::NotFound) => self
                .fs
                .create_in(
                    meta,
                    file.as_bytes(),
                    ObjectKind::Regular,
                    0o600,
                    ROOT,
                    0,
                    Some(line),
                    Area::Meta,
                )
                .map(drop)
                .map_err(fs_err(what())),
            Err(e) => Err(fs_err(what())(e)),
        }
    }

    /// Heads of every image whose origin is `snapshot` (the forks, found from the forks'
    /// side: the check that backs up the fork log).
    fn forks_by_origin(&self, snapshot: &str) -> Result<Vec<String>, ImageError> {
        Ok(self
            .list_locked()?
            .into_iter()
            .filter(|i| i.origin.as_deref() == Some(snapshot))
            .map(|i| i.path)
            .collect())
    }

    /// Snapshot numbers of image `name` in `admin`, ascending.
    fn snapshot_numbers(
        &self,
        admin: &Claim,
        name: &str,
    ) -> Result<Vec<(u32, ObjectId)>, ImageError> {
        let data = self
            .fs
            .dir_snapshot(admin.node())
            .map_err(fs_err(format!("reading {}", admin.node().path())))?;
        let mut v: Vec<(u32, ObjectId)> = data
            .entries()
            .filter_map(|e| match split_snapshot(&e.name) {
                Some((base, Some(n))) if base == name.as_bytes() => Some((n, e.id)),
                _ => None,
            })
            .collect();
        v.sort_unstable();
        Ok(v)
    }

    /// The head of image `p` (which must name a head, not a snapshot) and its admin dir.
    fn open_head(&self, p: &ImagePath) -> Result<(Claim, Claim), ImageError> {
        let admin = self.admin_dir(&p.admin, false).map_err(|e| match e {
            ImageError::NoImage(_) => ImageError::NoImage(p.head()),
            e => e,
        })?;
        let head = match self.fs.lookup(admin.node(), p.name.as_bytes(), ROOT) {
            Ok(h) => h,
            Err(FsError::NotFound) => return Err(ImageError::NoImage(p.head())),
            Err(e) => return Err(fs_err(format!("looking up {}", p.head()))(e)),
        };
        match head.node().area.scope() {
            Some(s) if !s.read_only => Ok((admin, head)),
            _ => Err(ImageError::NoImage(p.head())),
        }
    }

    // ---- operations --------------------------------------------------------------------

    /// Creates an empty image (root directory mode 0755, owned by root) at `path`, making the
    /// administrative directories above it as needed.
    pub fn create(&self, path: &str) -> Result<ImageInfo, ImageError> {
        let p = ImagePath::parse(path)?;
        if p.snapshot.is_some() {
            return Err(ImageError::NotAllowed(format!(
                "{path} names a snapshot: snapshots are made with `envoyctl image snapshot HEAD`"
            )));
        }
        let _op = lock(&self.op);
        let admin = self.admin_dir(&p.admin, true)?;
        self.check_free(&admin, &p)?;
        let meta = self.meta_dir(&admin, true)?;
        // Order: metadata, then the head (a crash between leaves metadata without a head,
        // which the next start removes).
        self.create_meta(&meta, &p.name, &ImageMeta::default())?;
        self.crash_point("create:meta")?;
        let scope = Area::Image(Arc::new(ImageScope {
            gate: RwLock::new(()),
            read_only: false,
            path: p.head(),
        }));
        let head = self
            .fs
            .create_in(
                &admin,
                p.name.as_bytes(),
                ObjectKind::Directory,
                0o755,
                ROOT,
                0,
                None,
                scope,
            )
            .map_err(fs_err(format!("creating {}", p.head())))?;
        self.sync_later(vec![head.node().id(), admin.node().id(), meta.node().id()]);
        tracing::info!(image = %p.head(), "image created");
        self.info_locked(&p)
    }

    fn check_free(&self, admin: &Claim, p: &ImagePath) -> Result<(), ImageError> {
        let taken = self
            .fs
            .dir_snapshot(admin.node())
            .map_err(fs_err(format!("reading {}", p.admin_path())))?
            .lookup(p.name.as_bytes())
            .is_some()
            || self
                .fs
                .is_image_name(admin.node(), p.name.as_bytes())
                .map_err(fs_err("reading the image metadata"))?;
        if taken {
            return Err(ImageError::Exists(p.head()));
        }
        Ok(())
    }

    /// Takes a snapshot of the live image `head` (§4.3.2). Open fids carry on in the head.
    pub fn snapshot(&self, head: &str) -> Result<SnapshotInfo, ImageError> {
        let p = ImagePath::parse(head)?;
        if p.snapshot.is_some() {
            return Err(ImageError::NotAllowed(format!(
                "{head} is a snapshot, and snapshots are read-only: snapshot the head {}",
                p.head()
            )));
        }
        let _op = lock(&self.op);
        self.snapshot_locked(&p).map(|(s, _)| s)
    }

    fn snapshot_locked(&self, p: &ImagePath) -> Result<(SnapshotInfo, ObjectId), ImageError> {
        let (admin, head) = self.open_head(p)?;
        let n = self
            .snapshot_numbers(&admin, &p.name)?
            .last()
            .map_or(1, |(n, _)| n.saturating_add(1));
        let snap_name = format!("{}@{n}", p.name);
        let scope = head
            .node()
            .area
            .scope()
            .cloned()
            .ok_or_else(|| ImageError::NoImage(p.head()))?;
        let s_id = {
            let _gate = write(&scope.gate);
            self.fs
                .snapshot_root(admin.node(), head.node(), snap_name.as_bytes())
                .map_err(fs_err(format!("snapshotting {}", p.head())))?
        };
        self.sync_later(vec![s_id, head.node().id(), admin.node().id()]);
        tracing::info!(image = %p.head(), snapshot = n, "snapshot taken");
        Ok((
            SnapshotInfo {
                path: p.snapshot_path(n),
                number: n,
            },
            s_id,
        ))
    }

    /// Forks `source` (a snapshot `…@N`, or a head, which is snapshotted first) into a new
    /// image `dest`.
    pub fn fork(&self, source: &str, dest: &str) -> Result<ImageInfo, ImageError> {
        let src = ImagePath::parse(source)?;
        let dst = ImagePath::parse(dest)?;
        if dst.snapshot.is_some() {
            return Err(ImageError::NotAllowed(format!(
                "{dest} names a snapshot: a fork is a new image; give a name without @N"
            )));
        }
        let _op = lock(&self.op);
        // Check the destination first: a fork that cannot happen must not snapshot the source.
        let d2 = self.admin_dir(&dst.admin, true)?;
        self.check_free(&d2, &dst)?;
        let (src_admin, s_id, n) = match src.snapshot {
            None => {
                let (info, s_id) = self.snapshot_locked(&src)?;
                let admin = self.admin_dir(&src.admin, false)?;
                (admin, s_id, info.number)
            }
            Some(n) => {
                let admin = self.admin_dir(&src.admin, false).map_err(|e| match e {
                    ImageError::NoImage(_) => ImageError::NoSnapshot(src.display()),
                    e => e,
                })?;
                // One lookup of `NAME@N`, not a scan of the administrative directory.
                let s_id = self
                    .fs
                    .dir_snapshot(admin.node())
                    .map_err(fs_err(format!("reading {}", src.admin_path())))?
                    .lookup(format!("{}@{n}", src.name).as_bytes())
                    .map(|e| e.id)
                    .ok_or_else(|| ImageError::NoSnapshot(src.display()))?;
                (admin, s_id, n)
            }
        };
        let meta2 = self.meta_dir(&d2, true)?;
        let src_meta_dir = self.meta_dir(&src_admin, false)?;
        // The source must be an image (its metadata file exists). Not parsed: its fork log
        // grows with every fork, and nothing here needs its contents.
        if !self
            .fs
            .is_image_name(src_admin.node(), src.name.as_bytes())
            .map_err(fs_err("reading the image metadata"))?
        {
            return Err(ImageError::NoImage(src.head()));
        }
        // Order: the new image's metadata, the fork log, then the root (see the module docs).
        self.create_meta(
            &meta2,
            &dst.name,
            &ImageMeta {
                origin: Some(src.snapshot_path(n)),
                forks: Vec::new(),
            },
        )?;
        self.crash_point("fork:meta")?;
        self.append_log(
            &src_meta_dir,
            &src.name,
            &meta::log_line(true, n, &dst.head()),
        )?;
        self.crash_point("fork:log")?;
        let f_id = self
            .fs
            .fork_root(s_id, d2.node(), dst.name.as_bytes())
            .map_err(fs_err(format!(
                "forking {} into {}",
                src.snapshot_path(n),
                dst.head()
            )))?;
        self.sync_later(vec![
            f_id,
            d2.node().id(),
            meta2.node().id(),
            src_meta_dir.node().id(),
        ]);
        tracing::info!(from = %src.snapshot_path(n), to = %dst.head(), "image forked");
        Ok(ImageInfo {
            path: dst.head(),
            snapshots: Vec::new(),
            origin: Some(src.snapshot_path(n)),
            forks: Vec::new(),
        })
    }

    /// One image.
    pub fn info(&self, path: &str) -> Result<ImageInfo, ImageError> {
        let p = ImagePath::parse(path)?;
        let _op = lock(&self.op);
        self.info_locked(&p)
    }

    fn info_locked(&self, p: &ImagePath) -> Result<ImageInfo, ImageError> {
        let admin = self.admin_dir(&p.admin, false).map_err(|e| match e {
            ImageError::NoImage(_) => ImageError::NoImage(p.head()),
            e => e,
        })?;
        let meta_dir = self
            .meta_dir(&admin, false)
            .map_err(|_| ImageError::NoImage(p.head()))?;
        let m = self
            .read_meta(&meta_dir, &p.name)?
            .ok_or_else(|| ImageError::NoImage(p.head()))?;
        let snapshots = self
            .snapshot_numbers(&admin, &p.name)?
            .into_iter()
            .map(|(n, _)| SnapshotInfo {
                path: p.snapshot_path(n),
                number: n,
            })
            .collect();
        Ok(ImageInfo {
            path: p.head(),
            snapshots,
            origin: m.origin,
            forks: m
                .forks
                .into_iter()
                .map(|(n, f)| format!("{f} (from @{n})"))
                .collect(),
        })
    }

    /// Every image, by path.
    pub fn list(&self) -> Result<Vec<ImageInfo>, ImageError> {
        let _op = lock(&self.op);
        self.list_locked()
    }

    fn list_locked(&self) -> Result<Vec<ImageInfo>, ImageError> {
        let mut out = Vec::new();
        let mut stack = vec![(self.fs.root(), Vec::<String>::new())];
        while let Some((dir, comps)) = stack.pop() {
            let data = self
                .fs
                .dir_snapshot(dir.node())
                .map_err(fs_err(format!("reading {}", dir.node().path())))?;
            let images: Vec<String> = match self.fs.lookup(dir.node(), META_DIR, ROOT) {
                Ok(m) => self
                    .fs
                    .dir_snapshot(m.node())
                    .map_err(fs_err("reading image metadata"))?
                    .entries()
                    .filter(|e| !e.name.contains(&b'@'))
                    .map(|e| String::from_utf8_lossy(&e.name).into_owned())
                    .collect(),
                Err(FsError::NotFound) => Vec::new(),
                Err(e) => return Err(fs_err("reading image metadata")(e)),
            };
            for name in &images {
                if data.lookup(name.as_bytes()).is_none() {
                    continue; // being created or deleted
                }
                let p = ImagePath {
                    admin: comps.clone(),
                    name: name.clone(),
                    snapshot: None,
                };
                out.push(self.info_locked(&p)?);
            }
            for e in data.entries() {
                if e.name.as_slice() == META_DIR
                    || e.name.contains(&b'@')
                    || images.iter().any(|i| i.as_bytes() == e.name.as_slice())
                {
                    continue;
                }
                let Ok(st) = self.fs.store().stat(e.id) else {
                    continue;
                };
                if st.attr.kind != ObjectKind::Directory {
                    continue;
                }
                if let Ok(child) = self.fs.lookup(dir.node(), &e.name, ROOT) {
                    if matches!(child.node().area, Area::Admin) {
                        let mut c = comps.clone();
                        c.push(String::from_utf8_lossy(&e.name).into_owned());
                        stack.push((child, c));
                    }
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Starts a new image at `dest` that stays invisible until [`Images::publish`].
    pub fn stage(self: &Arc<Self>, dest: &str) -> Result<Staged, ImageError> {
        let p = ImagePath::parse(dest)?;
        if p.snapshot.is_some() {
            return Err(ImageError::NotAllowed(format!(
                "{dest} names a snapshot: import into an image path without @N"
            )));
        }
        let _op = lock(&self.op);
        let admin = self.admin_dir(&p.admin, true)?;
        self.check_free(&admin, &p)?;
        let meta = self.meta_dir(&admin, true)?;
        let stage_name = format!("{}@stage", p.name);
        if self
            .fs
            .dir_snapshot(meta.node())
            .map_err(fs_err("reading image metadata"))?
            .lookup(stage_name.as_bytes())
            .is_some()
        {
            return Err(ImageError::Busy(format!(
                "{} (an import into it is in progress)",
                p.head()
            )));
        }
        let scope = Area::Image(Arc::new(ImageScope {
            gate: RwLock::new(()),
            read_only: false,
            path: p.head(),
        }));
        let root = self
            .fs
            .create_in(
                &meta,
                stage_name.as_bytes(),
                ObjectKind::Directory,
                0o755,
                ROOT,
                0,
                None,
                scope,
            )
            .map_err(fs_err(format!("creating the staging root of {}", p.head())))?;
        Ok(Staged {
            root: Some(root),
            admin,
            meta,
            stage_name,
            dest: p,
            images: Arc::clone(self),
        })
    }

    /// Makes a staged image visible at its path, atomically.
    pub fn publish(&self, mut staged: Staged) -> Result<ImageInfo, ImageError> {
        let _op = lock(&self.op);
        self.check_free(&staged.admin, &staged.dest)?;
        self.create_meta(&staged.meta, &staged.dest.name, &ImageMeta::default())?;
        if let Err(e) = self.crash_point("publish:meta") {
            // Keep the staging tree for recovery, as a killed process would.
            if let Some(r) = staged.root.take() {
                drop(r);
            }
            return Err(e);
        }
        let root = staged.root.take();
        let ids: Vec<ObjectId> = root.iter().map(|r| r.node().id()).collect();
        drop(root);
        self.fs
            .rename_in(
                staged.meta.node(),
                staged.stage_name.as_bytes(),
                staged.admin.node(),
                staged.dest.name.as_bytes(),
                ROOT,
            )
            .map_err(fs_err(format!("publishing {}", staged.dest.head())))?;
        let mut sync = ids;
        sync.push(staged.admin.node().id());
        sync.push(staged.meta.node().id());
        self.sync_later(sync);
        tracing::info!(image = %staged.dest.head(), "image published");
        self.info_locked(&staged.dest)
    }

    /// Removes an unpublished staging tree: unlink it, free its objects.
    fn discard_tree(
        &self,
        meta: &Arc<crate::namespace::node::Node>,
        stage_name: &str,
        root: ObjectId,
    ) -> Result<(), ImageError> {
        let ids = catalogue::walk(&self.fs, root, &|_| {})
            .map_err(fs_err("listing an unpublished import"))?;
        match self.fs.remove_link(meta, stage_name.as_bytes()) {
            Ok(_) | Err(FsError::NotFound) => {}
            Err(e) => return Err(fs_err("unlinking an unpublished import")(e)),
        }
        for id in ids {
            self.fs
                .delete_shared_object(ObjectId(id))
                .map_err(fs_err("freeing an unpublished import"))?;
        }
        Ok(())
    }

    /// The store's object count and bytes.
    fn usage(&self) -> Result<StoreUsage, ImageError> {
        self.fs
            .store()
            .usage()
            .map_err(|e| fs_err("measuring the object store")(e.into()))
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_path_parse_accepts_heads_and_snapshots() {
        let p = ImagePath::parse("/tenants/alice/web@3").unwrap();
        assert_eq!(p.admin, vec!["tenants", "alice"]);
        assert_eq!(p.name, "web");
        assert_eq!(p.snapshot, Some(3));
        assert_eq!(p.head(), "/tenants/alice/web");
        assert_eq!(ImagePath::parse("/web").unwrap().head(), "/web");
    }

    #[test]
    fn image_path_parse_rejects_bad_paths() {
        for bad in [
            "",
            "web",
            "/",
            "/a/../b",
            "/a/.envoy/b",
            "/a@1/b",
            "/a/b@",
            "/a/b@01",
            "/ctl",
            "/ctl/x",
            "/a/b@c@1",
        ] {
            assert!(ImagePath::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
