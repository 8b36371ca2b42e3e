//! Images, snapshots and forks (§4.3): the operator's view of the namespace.
//!
//! # Naming
//!
//! The global tree has administrative directories above and images at its leaves. An image
//! is a directory in an administrative directory, its *head* (`/tenants/alice/web`), plus a
//! linear series of read-only snapshots, its siblings `web@1`, `web@2`, … (numbers grow; a
//! new snapshot takes the highest existing number plus one). What makes `web` an image is its
//! record in the image registry ([`registry`]: one journal for the whole namespace, which also
//! records where each fork came from). The hidden `.envoy` directory of an administrative
//! directory holds snapshot catalogues (`web@3@cat`, [`catalogue`]), the intent records of
//! deletions in progress (`web@3@doomed`, `web@@doomed`) and imports being built
//! (`web@stage`). Image names may not
//! contain `@`; `/ctl` is the synthetic control tree. Clients attach an image by its path
//! (aname), a snapshot by `…/web@3` (read-only: every change answers `EROFS`); the rules are
//! enforced in [`crate::namespace::area`].
//!
//! # Snapshot of a live image (§4.3.2)
//!
//! Under the image's gate held exclusively (no change of the image is in flight), one update
//! of the administrative directory ([`Fs::snapshot_root`]): freeze the head's link, then link
//! `web@N` to the same root object, frozen. The head's root is now the snapshot's; the head
//! carries on as a frozen link to it, and its first change thaws it as any frozen name thaws
//! (§5.4.3): the root is cloned with every entry frozen and the head's link repointed at the
//! copy. Open fids hold the head's node, not its object, so mounted clients follow without
//! noticing. Nothing is copied on the snapshot's path, and an image snapshotted twice without
//! a change in between has two snapshots of one root object. Both entries usually share a
//! directory block, one page write; otherwise the head's is written first, so a crash
//! between them leaves a frozen head and no snapshot, which is harmless.
//!
//! # Fork
//!
//! A fork starts a new image from a snapshot (a live head is snapshotted first): append
//! `image NEW from SNAPSHOT` to the registry's journal, then link the new head to the
//! snapshot's root, frozen. Everything is shared until written; the first write clones the
//! root. A crash between the two leaves a registered image without a head, which the next
//! start removes.
//!
//! Territory roots stay thawed (§5.4.3), which is why freezing a head's link is allowed: one
//! territory covers the whole tree today, so an image head is never a territory root. When
//! the federation hands an image to another envoy as its own territory, the hand-off must
//! thaw the head first (see [`crate::territory`]).
//!
//! # Durability
//!
//! Like a data write, a snapshot or fork is complete when it is in the host page cache: a
//! background syncer makes the directory holding the links (and the journal) durable right
//! after; [`Images::flush`] waits for it. The same thread sets the administrative directory's
//! mtime to the time of the operation ([`Fs::touch_dir_at`]): the store records an mtime with
//! a rename, as expensive as the rest of a fork together.
//! Crash ordering (`kill -9` at any point) is covered by the step orders above and by
//! [`Images::open`]'s recovery.
//!
//! # Latency
//!
//! What is left on the path of a fork: the journal line, the administrative directory's
//! block, and in-memory lookups; of a snapshot, the block alone. What was taken off it,
//! without weakening the above:
//! * copying the root: the first write pays for it, outside the gate
//!   (`Fs::prepare_thaw`), as it pays for every other directory it thaws;
//! * a metadata file per image and a fork-log file per source: replaced by one journal line
//!   (see [`registry`]);
//! * the administrative directory's mtime: set by the background thread (see Durability);
//! * reading what is not needed: a fork of `NAME@N` looks up that one name instead of
//!   listing the administrative directory's snapshots; whether the source is an image is a
//!   lookup in memory.
//!
//! The object store keeps spare empty files ready (`ObjectStore::keep_spare_files`) for the
//! clones that thaws make and for new files: an ext4 `open(O_CREAT)` costs several times the
//! rename of a ready spare.
//!
//! # Deleting (§4.3.3)
//!
//! See [`delete`]: catalogues, the fork log, and an intent record make deletion crash-safe.
//!
//! # Concurrency
//!
//! Operator actions are serialised by one mutex (`op`); 9P requests never take it.

mod background;
pub mod catalogue;
mod delete;
pub mod import;
pub mod registry;

use std::sync::{Arc, Mutex, RwLock};

use background::{Background, Job};
use envoy_storage::{ObjectId, ObjectKind, StoreUsage, Timestamp};

pub use delete::DeleteReport;

use crate::error::FsError;
use crate::namespace::area::{child_path, split_snapshot, CTL_NAME, META_DIR};
use crate::namespace::node::{lock, write, Area, ImageScope};
use crate::namespace::{check_name, Claim, Cred, Fs};
use registry::Record;

/// The operator's identity inside the namespace.
const ROOT: Cred = Cred { uid: 0, gid: 0 };

/// Empty files the object store keeps ready (each clone of a thaw, or new file, uses one).
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

/// The registry's journal file, open for appends.
#[derive(Debug)]
struct Journal {
    file: Claim,
    size: u64,
}

/// The image manager.
#[derive(Debug)]
pub struct Images {
    fs: Arc<Fs>,
    op: Mutex<()>,
    bg: Background,
    crash_at: Mutex<Option<String>>,
    journal: Mutex<Option<Journal>>,
    /// Administrative directories looked up before, by path components: a fork or snapshot
    /// then starts without walking and classifying them again. An entry whose directory was
    /// removed since (its node is an orphan) is dropped and looked up afresh.
    admins: Mutex<std::collections::HashMap<Vec<String>, Claim>>,
    /// The number the next snapshot of an image takes (highest existing + 1), once known:
    /// listing the administrative directory for it was a third of a snapshot. Snapshots are
    /// made and deleted only here, under `op`; a deletion forgets the image's entry.
    next_snapshot: Mutex<std::collections::HashMap<String, u32>>,
}

/// Most administrative directories [`Images`] keeps claimed.
const ADMIN_CACHE: usize = 1024;

impl Images {
    /// The image manager for `fs`: registers `/default` as an image if it is not one yet, and
    /// finishes or rolls back what a crash interrupted (deletions, imports, creations).
    pub fn open(fs: Arc<Fs>) -> Result<Arc<Images>, ImageError> {
        let bg = Background::start(Arc::clone(&fs)).map_err(|e| {
            ImageError::NotAllowed(format!("cannot start the image sync thread: {e}"))
        })?;
        let images = Arc::new(Images {
            fs,
            op: Mutex::new(()),
            bg,
            crash_at: Mutex::new(None),
            journal: Mutex::new(None),
            admins: Mutex::new(std::collections::HashMap::new()),
            next_snapshot: Mutex::new(std::collections::HashMap::new()),
        });
        // File creation is most of a thaw's latency on ext4: keep spare files ready (see
        // `envoy_storage`'s spare module).
        images
            .fs
            .store()
            .keep_spare_files(SPARE_FILES)
            .map_err(|e| fs_err("starting the object store's spare files")(e.into()))?;
        images.open_registry()?;
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
        self.bg.flush();
    }

    /// Stops the sync thread after it has synced everything queued, and the store's spare
    /// files.
    pub fn shutdown(&self) {
        self.bg.stop();
        lock(&self.admins).clear();
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

    /// Has the background thread set `touch`'s mtimes and make `ids` durable.
    fn sync_later(&self, touch: Vec<(ObjectId, Timestamp)>, ids: Vec<ObjectId>) {
        self.bg.push(Job { touch, sync: ids });
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
        let head = child_path("/", crate::namespace::DEFAULT_IMAGE);
        if self.fs.image_table().contains(&head) {
            return Ok(());
        }
        self.record(Record::Image { head, origin: None })?;
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
        {
            let mut admins = lock(&self.admins);
            if let Some(c) = admins.get(comps) {
                if !c.node().state().orphan {
                    return Ok(c.dup());
                }
                admins.remove(comps);
            }
        }
        let found = self.walk_admin_dir(comps, create)?;
        let mut admins = lock(&self.admins);
        if admins.len() >= ADMIN_CACHE {
            admins.clear();
        }
        admins.insert(comps.to_vec(), found.dup());
        Ok(found)
    }

    fn walk_admin_dir(&self, comps: &[String], create: bool) -> Result<Claim, ImageError> {
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
                            .map_err(|e| fs_err(format!("looking up {path}"))(e))?,
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
            .map_err(|e| fs_err(format!("creating {tmp}"))(e))?;
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
            .map_err(|e| fs_err(format!("renaming {tmp}"))(e))
    }

    // ---- the registry -------------------------------------------------------------------

    /// Loads the registry's journal into the namespace's image table (moving a store of the
    /// first design, with a metadata file per image, to the journal), and opens it for
    /// appends. A journal with a torn last line or with many `delete` records is rewritten.
    fn open_registry(&self) -> Result<(), ImageError> {
        let root = self.fs.root();
        let meta = self.meta_dir(&root, true)?;
        let what = "reading the image journal /.envoy/@images";
        let (table, rewrite) = match self
            .read_file(&meta, registry::JOURNAL)
            .map_err(fs_err(what))?
        {
            Some(bytes) => {
                let (table, records) = registry::parse(&bytes).map_err(|e| {
                    ImageError::NotAllowed(format!(
                        "the image journal /.envoy/@images is damaged at {e}. envoyd does not \
                         guess which directories are images (that decides what deleting frees): \
                         restore the store from a backup, or correct that line"
                    ))
                })?;
                let torn = bytes.last().is_some_and(|&c| c != b'\n');
                (table.clone(), torn || records > 2 * table.len() + 64)
            }
            None => (self.legacy_table()?, true),
        };
        if rewrite {
            self.write_file(&meta, registry::JOURNAL, &registry::encode_table(&table))?;
        }
        let file = self
            .fs
            .lookup(meta.node(), registry::JOURNAL.as_bytes(), ROOT)
            .map_err(fs_err(what))?;
        let size = self.fs.stat(file.node()).map_err(fs_err(what))?.size;
        if rewrite {
            self.sync_now(file.node().id())?;
            self.sync_now(meta.node().id())?;
        }
        *lock(&self.journal) = Some(Journal { file, size });
        self.fs.image_table().replace(table);
        Ok(())
    }

    /// The images of a store of the first design: every `ADMIN/.envoy/NAME` metadata file.
    /// (Recovery removes those files once the journal is written.)
    fn legacy_table(&self) -> Result<registry::Table, ImageError> {
        let mut table = registry::Table::new();
        let mut stack = vec![self.fs.root()];
        while let Some(dir) = stack.pop() {
            let path = dir.node().path();
            let data = self
                .fs
                .dir_snapshot(dir.node())
                .map_err(|e| fs_err(format!("reading {path}"))(e))?;
            let mut images = Vec::new();
            if data.lookup(META_DIR).is_some() {
                let meta = self.meta_dir(&dir, false)?;
                let names: Vec<String> = self
                    .fs
                    .dir_snapshot(meta.node())
                    .map_err(fs_err("reading image metadata"))?
                    .entries()
                    .filter(|e| !e.name.contains(&b'@'))
                    .map(|e| String::from_utf8_lossy(&e.name).into_owned())
                    .collect();
                for name in names {
                    let text = self
                        .read_file(&meta, &name)
                        .map_err(|e| fs_err(format!("reading the old metadata of {name}"))(e))?
                        .unwrap_or_default();
                    let origin = registry::legacy_origin(&text)
                        .map_err(|e| fs_err(format!("reading the old metadata of {name}"))(e))?;
                    table.insert(child_path(&path, &name), origin);
                    images.push(name);
                }
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
                if st.attr.kind == ObjectKind::Directory {
                    if let Ok(child) = self.fs.lookup(dir.node(), &e.name, ROOT) {
                        stack.push(child);
                    }
                }
            }
        }
        if !table.is_empty() {
            tracing::info!(
                images = table.len(),
                "moved the image metadata files to the journal /.envoy/@images"
            );
        }
        Ok(table)
    }

    /// Appends `r` to the journal (one write at its end) and applies it to the image table.
    /// Returns the journal's object, for the background sync.
    fn record(&self, r: Record) -> Result<ObjectId, ImageError> {
        let line = r.encode();
        let len = line.len();
        let mut j = lock(&self.journal);
        let j = j.as_mut().ok_or_else(|| {
            ImageError::NotAllowed("the image journal is not open: restart envoyd".into())
        })?;
        let what = "appending to the image journal /.envoy/@images";
        let written = self
            .fs
            .write_in(j.file.node(), j.size, bytes::Bytes::from(line), false)
            .map_err(fs_err(what))?;
        if written != len {
            return Err(fs_err(what)(FsError::Inval(
                "the journal took a short write",
            )));
        }
        j.size += len as u64;
        match r {
            Record::Image { head, origin } => self.fs.image_table().insert(head, origin),
            Record::Delete { head } => self.fs.image_table().remove(&head),
        }
        Ok(j.file.node().id())
    }

    /// The origin of image `head` (`None`: not an image).
    fn origin_of(&self, head: &str) -> Option<Option<String>> {
        self.fs.image_table().origin(head)
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
            .map_err(|e| fs_err(format!("reading {}", admin.node().path()))(e))?;
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
        // Order: the record, then the head (a crash between leaves a record without a head,
        // which the next start removes).
        let journal = self.record(Record::Image {
            head: p.head(),
            origin: None,
        })?;
        self.crash_point("create:registered")?;
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
            .map_err(|e| fs_err(format!("creating {}", p.head()))(e))?;
        self.sync_later(vec![], vec![journal, head.node().id(), admin.node().id()]);
        tracing::info!(image = %p.head(), "image created");
        self.info_locked(&p)
    }

    fn check_free(&self, admin: &Claim, p: &ImagePath) -> Result<(), ImageError> {
        let taken = self
            .fs
            .dir_snapshot(admin.node())
            .map_err(|e| fs_err(format!("reading {}", p.admin_path()))(e))?
            .lookup(p.name.as_bytes())
            .is_some()
            || self.fs.image_table().contains(&p.head());
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
        let head_path = p.head();
        let cached = lock(&self.next_snapshot).get(&head_path).copied();
        let n = match cached {
            Some(n) => n,
            None => self
                .snapshot_numbers(&admin, &p.name)?
                .last()
                .map_or(1, |(n, _)| n.saturating_add(1)),
        };
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
                .map_err(|e| fs_err(format!("snapshotting {}", p.head()))(e))?
        };
        lock(&self.next_snapshot).insert(head_path, n.saturating_add(1));
        self.sync_later(
            vec![(admin.node().id(), Timestamp::now())],
            vec![admin.node().id()],
        );
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
                    .map_err(|e| fs_err(format!("reading {}", src.admin_path()))(e))?
                    .lookup(format!("{}@{n}", src.name).as_bytes())
                    .map(|e| e.id)
                    .ok_or_else(|| ImageError::NoSnapshot(src.display()))?;
                (admin, s_id, n)
            }
        };
        if !self.fs.image_table().contains(&src.head()) {
            return Err(ImageError::NoImage(src.head()));
        }
        drop(src_admin);
        // Order: the record, then the root (see the module docs).
        let origin = src.snapshot_path(n);
        let journal = self.record(Record::Image {
            head: dst.head(),
            origin: Some(origin.clone()),
        })?;
        self.crash_point("fork:registered")?;
        if let Err(e) = self.fs.fork_root(s_id, d2.node(), dst.name.as_bytes()) {
            // Nothing was linked: take the record back (the next start would otherwise).
            if let Err(e2) = self.record(Record::Delete { head: dst.head() }) {
                tracing::warn!(error = %e2, image = %dst.head(), "could not take back the record of a failed fork; the next start removes it");
            }
            return Err(fs_err(format!("forking {origin} into {}", dst.head()))(e));
        }
        self.sync_later(
            vec![(d2.node().id(), Timestamp::now())],
            vec![journal, d2.node().id()],
        );
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
        let origin = self
            .origin_of(&p.head())
            .ok_or_else(|| ImageError::NoImage(p.head()))?;
        let admin = self.admin_dir(&p.admin, false).map_err(|e| match e {
            ImageError::NoImage(_) => ImageError::NoImage(p.head()),
            e => e,
        })?;
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
            origin,
            forks: self
                .forks_of_image(&p.head())
                .into_iter()
                .map(|(n, f)| format!("{f} (from @{n})"))
                .collect(),
        })
    }

    /// Images forked from any snapshot of image `head`: (snapshot number, fork's head).
    fn forks_of_image(&self, head: &str) -> Vec<(u32, String)> {
        self.fs
            .image_table()
            .all()
            .into_iter()
            .filter_map(|(fork, origin)| {
                let o = ImagePath::parse(origin.as_deref()?).ok()?;
                (o.head() == head).then_some((o.snapshot?, fork))
            })
            .collect()
    }

    /// Every image, by path.
    pub fn list(&self) -> Result<Vec<ImageInfo>, ImageError> {
        let _op = lock(&self.op);
        self.list_locked()
    }

    fn list_locked(&self) -> Result<Vec<ImageInfo>, ImageError> {
        let mut out = Vec::new();
        for (head, _) in self.fs.image_table().all() {
            let Ok(p) = ImagePath::parse(&head) else {
                continue;
            };
            if self.linked(&p)?.is_none() {
                continue; // being created or deleted
            }
            out.push(self.info_locked(&p)?);
        }
        Ok(out)
    }

    /// The object image head `p` links to, if its administrative directory and link exist.
    fn linked(&self, p: &ImagePath) -> Result<Option<ObjectId>, ImageError> {
        let admin = match self.admin_dir(&p.admin, false) {
            Ok(a) => a,
            Err(ImageError::NoImage(_) | ImageError::InsideImage(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(self
            .fs
            .dir_snapshot(admin.node())
            .map_err(|e| fs_err(format!("reading {}", p.admin_path()))(e))?
            .lookup(p.name.as_bytes())
            .map(|e| e.id))
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
            .map_err(|e| fs_err(format!("creating the staging root of {}", p.head()))(e))?;
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
        let journal = self.record(Record::Image {
            head: staged.dest.head(),
            origin: None,
        })?;
        if let Err(e) = self.crash_point("publish:registered") {
            // Keep the staging tree for recovery, as a killed process would.
            if let Some(r) = staged.root.take() {
                drop(r);
            }
            return Err(e);
        }
        let root = staged.root.take();
        let ids: Vec<ObjectId> = root.iter().map(|r| r.node().id()).collect();
        drop(root);
        if let Err(e) = self.fs.rename_in(
            staged.meta.node(),
            staged.stage_name.as_bytes(),
            staged.admin.node(),
            staged.dest.name.as_bytes(),
            ROOT,
        ) {
            if let Err(e2) = self.record(Record::Delete {
                head: staged.dest.head(),
            }) {
                tracing::warn!(error = %e2, image = %staged.dest.head(), "could not take back the record of a failed publish; the next start removes it");
            }
            return Err(fs_err(format!("publishing {}", staged.dest.head()))(e));
        }
        let mut sync = ids;
        sync.push(journal);
        sync.push(staged.admin.node().id());
        sync.push(staged.meta.node().id());
        self.sync_later(vec![], sync);
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

    use crate::namespace::test_fs as open_store;

    fn meta_names(images: &Images, admin: &[&str]) -> Vec<String> {
        let comps: Vec<String> = admin.iter().map(|s| s.to_string()).collect();
        let a = images.admin_dir(&comps, false).unwrap();
        let m = images.meta_dir(&a, false).unwrap();
        let mut v: Vec<String> = images
            .fs
            .dir_snapshot(m.node())
            .unwrap()
            .entries()
            .map(|e| String::from_utf8_lossy(&e.name).into_owned())
            .collect();
        v.sort();
        v
    }

    /// A store in `dir` with the empty image `/t/web`: the namespace, the image manager,
    /// and claims on `/t` and the head.
    fn web_image(dir: &std::path::Path) -> (Arc<Fs>, Arc<Images>, Claim, Claim) {
        let fs = open_store(dir);
        let images = Images::open(Arc::clone(&fs)).unwrap();
        images.create("/t/web").unwrap();
        let (admin, head) = images
            .open_head(&ImagePath::parse("/t/web").unwrap())
            .unwrap();
        (fs, images, admin, head)
    }

    /// A start freezes a head whose link shares its root with a snapshot but lost its
    /// copy-on-write flag (a power failure kept only one of a snapshot's two entries): the
    /// start-up scan freezes every name of an object with several. The head's next write
    /// then copies instead of changing the snapshot.
    #[test]
    fn start_refreezes_a_head_that_shares_its_root_with_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (fs, images, admin, head) = web_image(dir.path());
            fs.create(&head, b"f", ObjectKind::Regular, 0o644, ROOT, None)
                .unwrap();
            let s = images.snapshot("/t/web").unwrap();
            assert_eq!(s.number, 1);
            // What the power failure leaves: the snapshot's link, the head's unfrozen.
            let root = head.node().id();
            assert!(fs.unfreeze_head(admin.node(), head.node(), root).unwrap());
            images.shutdown();
        }
        let fs = open_store(dir.path());
        let images = Images::open(Arc::clone(&fs)).unwrap();
        let p = ImagePath::parse("/t/web").unwrap();
        let (_admin, head) = images.open_head(&p).unwrap();
        assert!(head.node().state().cow, "the head's link is frozen again");
        let f = fs.lookup(head.node(), b"f", ROOT).unwrap();
        fs.write(f.node(), 0, bytes::Bytes::from_static(b"head"))
            .unwrap();
        let snap = images.admin_dir(&["t".to_string()], false).unwrap();
        let s = fs.lookup(snap.node(), b"web@1", ROOT).unwrap();
        let sf = fs.lookup(s.node(), b"f", ROOT).unwrap();
        assert_eq!(
            fs.read(sf.node(), 0, 16).unwrap().len(),
            0,
            "the snapshot is unchanged"
        );
        images.shutdown();
    }

    /// Copies made ahead of a change are of frozen objects; unfreezing a head makes its
    /// objects writable again, so the copies made before are discarded (deleted from the
    /// store), and the change's own cleanup then finds nothing left to do.
    #[test]
    fn unfreezing_a_head_discards_the_copies_made_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let (fs, images, admin, head) = web_image(dir.path());
        let d = fs
            .create(&head, b"d", ObjectKind::Directory, 0o755, ROOT, None)
            .unwrap();
        let f = fs
            .create(&d, b"f", ObjectKind::Regular, 0o644, ROOT, None)
            .unwrap();
        // A first snapshot and deletion make the metadata directory `.envoy`.
        images.snapshot("/t/web").unwrap();
        images.delete_snapshot("/t/web@1", &|_| {}).unwrap();
        let snap = images.snapshot("/t/web").unwrap().path;
        images.flush();
        let objects = || fs.store().usage().unwrap().objects;
        let before = objects();
        let prep = fs.prepare_thaw(f.node());
        assert_eq!(objects(), before + 3, "copies of the root, d and f");
        // Deleting the only snapshot of the unchanged head unfreezes it.
        images.delete_snapshot(&snap, &|_| {}).unwrap();
        assert!(!head.node().state().cow);
        assert_eq!(objects(), before, "the copies were discarded");
        drop(prep);
        assert_eq!(objects(), before);
        drop(admin);
        // The head writes in place now.
        fs.write(f.node(), 0, bytes::Bytes::from_static(b"x"))
            .unwrap();
        assert_eq!(objects(), before);
        images.shutdown();
    }

    /// A damaged journal line stops the start with a sentence that names the file and what
    /// to do; nothing is guessed (the journal decides what deletion may free).
    #[test]
    fn damaged_journal_stops_the_start_with_a_sentence() {
        let dir = tempfile::tempdir().unwrap();
        {
            let images = Images::open(open_store(dir.path())).unwrap();
            images.create("/t/web").unwrap();
            let j = lock(&images.journal);
            let j = j.as_ref().unwrap();
            images
                .fs
                .write_in(
                    j.file.node(),
                    j.size,
                    bytes::Bytes::from_static(b"forget /t/web\n"),
                    false,
                )
                .unwrap();
        }
        let e = Images::open(open_store(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/.envoy/@images is damaged"), "{e}");
        assert!(e.contains("line 4") && e.contains("forget /t/web"), "{e}");
        assert!(e.contains("restore the store from a backup"), "{e}");
    }

    /// A store of the first design (a metadata file per image, a fork log per source, no
    /// journal) opens with the same images, origins and fork log, and its old files go.
    #[test]
    fn store_with_metadata_files_moves_to_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        {
            let images = Images::open(open_store(dir.path())).unwrap();
            images.create("/t/web").unwrap();
            images.snapshot("/t/web").unwrap();
            images.fork("/t/web@1", "/u/f").unwrap();
            // Rewrite the store as the first design left it.
            let root = images.fs.root();
            let top = images.meta_dir(&root, false).unwrap();
            images
                .fs
                .unlink_in(
                    top.node(),
                    registry::JOURNAL.as_bytes(),
                    crate::namespace::update::RemoveKind::NotDir,
                    ROOT,
                )
                .unwrap();
            for (admin, name, text) in [
                (vec!["t"], "web", "envoy-image 1\n"),
                (vec!["t"], "web@forks", "fork 1 /u/f\n"),
                (vec!["u"], "f", "envoy-image 1\norigin /t/web@1\n"),
                (vec![], "default", "envoy-image 1\n"),
            ] {
                let comps: Vec<String> = admin.iter().map(|s: &&str| s.to_string()).collect();
                let a = images.admin_dir(&comps, false).unwrap();
                let m = images.meta_dir(&a, true).unwrap();
                images.write_file(&m, name, text.as_bytes()).unwrap();
            }
            images.shutdown();
        }
        let images = Images::open(open_store(dir.path())).unwrap();
        let all: Vec<(String, Option<String>)> = images
            .list()
            .unwrap()
            .into_iter()
            .map(|i| (i.path, i.origin))
            .collect();
        assert_eq!(
            all,
            vec![
                ("/default".to_string(), None),
                ("/t/web".to_string(), None),
                ("/u/f".to_string(), Some("/t/web@1".to_string())),
            ]
        );
        assert_eq!(
            images.info("/t/web").unwrap().forks,
            vec!["/u/f (from @1)".to_string()]
        );
        assert!(matches!(
            images.delete_snapshot("/t/web@1", &|_| {}),
            Err(ImageError::HasForks { .. })
        ));
        assert!(meta_names(&images, &["t"])
            .iter()
            .all(|n| n.ends_with("@cat")));
        assert!(meta_names(&images, &["u"]).is_empty());
        assert_eq!(
            meta_names(&images, &[]),
            vec![registry::JOURNAL.to_string()]
        );
        images.shutdown();
    }

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
