//! `envoyctl image import SOURCE PATH`: builds an image from a directory tree or a tar archive.
//!
//! The import runs inside envoyd (the control socket is operator-only). It stages a hidden
//! image ([`Images::stage`]), builds the tree below the staged root with the ordinary
//! namespace calls, and publishes it at the end ([`Images::publish`]): an import that fails or
//! is interrupted publishes nothing (dropping the `Staged` discards it, and the start-up
//! recovery drops staging trees a crash left behind).
//!
//! # Sources
//!
//! | source | recognised by | notes |
//! |---|---|---|
//! | directory | `stat` | walked without following symlinks; hard links found by (dev, inode) |
//! | tar | anything else | ustar, GNU and pax (long names, `SCHILY.xattr.*`, pax `mtime`) |
//! | tar.gz / tar.xz / tar.zst | magic bytes `1f 8b` / `fd 37 7a 58 5a 00` / `28 b5 2f fd` | decoded while read (zstd: single frame streams, as `zstd` writes them) |
//!
//! What is kept: file type (regular, directory, symlink, character and block device, FIFO,
//! socket), permission bits including setuid/setgid/sticky, numeric owner and group, atime and
//! mtime (tar has no atime: mtime is used), symlink targets, hard links and extended
//! attributes. Hard links are Envoy's copy-on-write links (§5.4.5): both names share one
//! object until one of them is written.
//!
//! What is refused, with the entry's path in the error: tar entry types with no file-system
//! meaning (GNU sparse files, multi-volume continuations), paths that climb out of the
//! archive (`..`), hard links to names not earlier in the archive, names longer than 255
//! bytes, and trees deeper than [`MAX_DEPTH`].
//!
//! # Order of the work
//!
//! Every object is created, filled, given its xattrs and then its attributes (so that the
//! write's mtime and the creation's owner are overwritten), all before any hard link to it:
//! a link freezes the object, and a later change would split the two names. Directory
//! attributes are set last, deepest first, because every entry created in a directory
//! changes its mtime.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::{File, Metadata};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use envoy_storage::{AttrChange, ObjectKind, Timestamp};

use super::{ImageError, Images, Progress};
use crate::error::FsError;
use crate::namespace::special::device_contents;
use crate::namespace::{check_name, Claim, Cred, Fs};

/// Deepest directory nesting accepted (Linux's `PATH_MAX` of 4096 allows ~2048 levels of
/// one-letter names; real trees stay far below this).
pub const MAX_DEPTH: usize = 256;
/// Bytes read from the source per write.
const CHUNK: usize = 1 << 20;
/// Progress is reported after this many source bytes...
const PROGRESS_BYTES: u64 = 4 << 20;
/// ...or this many entries, whichever comes first.
const PROGRESS_ENTRIES: u64 = 1000;

/// What an import made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// The published image.
    pub path: String,
    /// Directories created (the image root not counted).
    pub directories: u64,
    /// Regular files.
    pub files: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Device nodes, FIFOs and sockets.
    pub special: u64,
    /// Extra names of files already imported.
    pub hard_links: u64,
    /// Extended attributes set.
    pub xattrs: u64,
    /// Bytes of file data written.
    pub bytes: u64,
}

/// Why an import failed. Nothing was published.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The source cannot be opened or read.
    #[error("cannot read {path}: {source}")]
    Source {
        /// Where in the source.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An entry the file system cannot represent.
    #[error("cannot import {path}: {what}")]
    Unsupported {
        /// The entry.
        path: String,
        /// What is wrong with it, and what to do.
        what: String,
    },
    /// Building the tree failed in the file system.
    #[error("cannot create {path} in the image: {source}")]
    Fs {
        /// The entry.
        path: String,
        /// The cause.
        #[source]
        source: FsError,
    },
    /// Staging or publishing the image failed.
    #[error("{0}")]
    Image(#[from] ImageError),
}

/// Ownership, permissions and times of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Access time.
    pub atime: Timestamp,
    /// Modification time.
    pub mtime: Timestamp,
}

/// Where the importer builds the tree: the namespace ([`FsSink`]) or, in tests, memory.
pub trait Sink {
    /// A handle on a created node.
    type Node: Clone;
    /// The root directory of the tree being built.
    fn root(&self) -> Self::Node;
    /// Creates `name` in `dir`; `contents` is a symlink target or device description.
    fn create(
        &mut self,
        dir: &Self::Node,
        name: &[u8],
        kind: ObjectKind,
        meta: &Meta,
        contents: Option<&[u8]>,
    ) -> Result<Self::Node, FsError>;
    /// Writes file data at `offset`.
    fn write(&mut self, file: &Self::Node, offset: u64, data: Bytes) -> Result<(), FsError>;
    /// Sets one extended attribute.
    fn set_xattr(&mut self, node: &Self::Node, name: &str, value: &[u8]) -> Result<(), FsError>;
    /// Sets mode, owner and times (after the data: a write sets mtime).
    fn set_meta(&mut self, node: &Self::Node, meta: &Meta) -> Result<(), FsError>;
    /// Adds `name` in `dir` as another name of `target`.
    fn link(&mut self, dir: &Self::Node, name: &[u8], target: &Self::Node) -> Result<(), FsError>;
}

/// [`Sink`] on the namespace: objects created as root below a staged image root.
pub struct FsSink {
    fs: Arc<Fs>,
    root: Arc<Claim>,
}

impl FsSink {
    /// Builds below `root` (a directory claim of `fs`).
    pub fn new(fs: Arc<Fs>, root: Claim) -> FsSink {
        FsSink {
            fs,
            root: Arc::new(root),
        }
    }
}

impl Sink for FsSink {
    type Node = Arc<Claim>;

    fn root(&self) -> Arc<Claim> {
        Arc::clone(&self.root)
    }

    fn create(
        &mut self,
        dir: &Arc<Claim>,
        name: &[u8],
        kind: ObjectKind,
        meta: &Meta,
        contents: Option<&[u8]>,
    ) -> Result<Arc<Claim>, FsError> {
        let root = Cred::user(0);
        let c = self
            .fs
            .create_with_gid(dir, name, kind, meta.mode, root, meta.gid, contents)?;
        Ok(Arc::new(c))
    }

    fn write(&mut self, file: &Arc<Claim>, offset: u64, data: Bytes) -> Result<(), FsError> {
        let mut off = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let n = self.fs.write(file.node(), off, rest.clone())?;
            if n == 0 {
                return Err(FsError::NoSpace);
            }
            off += n as u64;
            rest = rest.slice(n.min(rest.len())..);
        }
        Ok(())
    }

    fn set_xattr(&mut self, node: &Arc<Claim>, name: &str, value: &[u8]) -> Result<(), FsError> {
        self.fs.xattr_set(node.node(), name, value, 0)
    }

    fn set_meta(&mut self, node: &Arc<Claim>, meta: &Meta) -> Result<(), FsError> {
        let change = AttrChange {
            mode: Some(meta.mode & 0o7777),
            uid: Some(meta.uid),
            gid: Some(meta.gid),
            atime: Some(meta.atime),
            mtime: Some(meta.mtime),
            size: None,
        };
        self.fs.setattr(node.node(), &change).map(|_| ())
    }

    fn link(&mut self, dir: &Arc<Claim>, name: &[u8], target: &Arc<Claim>) -> Result<(), FsError> {
        self.fs.link(dir.node(), name, target.node(), Cred::user(0))
    }
}

/// Imports `source` (a directory or a tar archive, maybe compressed) as a new image at
/// `dest`, reporting progress as `("scan" | "import", done, total)`.
///
/// For a directory, `done`/`total` count entries plus data bytes; for an archive they count
/// bytes of the archive file. Nothing is visible at `dest` until the import succeeded.
pub fn import(
    images: &Arc<Images>,
    source: &Path,
    dest: &str,
    progress: &dyn Fn(&Progress),
) -> Result<ImportReport, ImportError> {
    // Check the source before staging anything.
    let kind = SourceKind::detect(source)?;
    let staged = images.stage(dest)?;
    let root = staged.root().dup();
    let mut sink = FsSink::new(Arc::clone(images.fs()), root);
    let report_progress = |phase: &'static str, done: u64, total: u64| {
        progress(&Progress { phase, done, total });
    };
    let mut report = build(&mut sink, source, kind, &report_progress)?;
    drop(sink);
    let info = images.publish(staged)?;
    report.path = info.path;
    Ok(report)
}

/// What kind of source a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A directory tree.
    Dir,
    /// An uncompressed tar archive.
    Tar,
    /// gzip-compressed tar.
    TarGz,
    /// xz-compressed tar.
    TarXz,
    /// zstd-compressed tar.
    TarZst,
}

impl SourceKind {
    /// Looks at `path`: a directory, or a file whose first bytes tell the compression.
    pub fn detect(path: &Path) -> Result<SourceKind, ImportError> {
        let p = path.display().to_string();
        let md = std::fs::metadata(path).map_err(|source| ImportError::Source {
            path: p.clone(),
            source,
        })?;
        if md.is_dir() {
            return Ok(SourceKind::Dir);
        }
        if !md.is_file() {
            return Err(ImportError::Unsupported {
                path: p,
                what: "the source must be a directory or a tar archive (plain, .gz, .xz or .zst)"
                    .into(),
            });
        }
        let mut head = [0u8; 6];
        let mut f = File::open(path).map_err(|source| ImportError::Source {
            path: p.clone(),
            source,
        })?;
        let n = read_full(&mut f, &mut head).map_err(|source| ImportError::Source {
            path: p.clone(),
            source,
        })?;
        let head = &head[..n];
        Ok(if head.starts_with(&[0x1f, 0x8b]) {
            SourceKind::TarGz
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            SourceKind::TarXz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            SourceKind::TarZst
        } else if head.starts_with(b"BZh") {
            return Err(ImportError::Unsupported {
                path: p,
                what: "bzip2-compressed archives are not supported: recompress with gzip, xz or zstd, or decompress first".into(),
            });
        } else {
            SourceKind::Tar
        })
    }
}

fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Builds the tree of `source` (of `kind`) in `sink`. The report's `path` is left empty.
pub fn build<S: Sink>(
    sink: &mut S,
    source: &Path,
    kind: SourceKind,
    progress: &dyn Fn(&'static str, u64, u64),
) -> Result<ImportReport, ImportError> {
    let mut b = Builder::new(sink, progress);
    match kind {
        SourceKind::Dir => b.import_dir(source)?,
        _ => b.import_tar(source, kind)?,
    }
    b.finish()
}

/// State of one import.
struct Builder<'a, S: Sink> {
    sink: &'a mut S,
    progress: &'a dyn Fn(&'static str, u64, u64),
    report: ImportReport,
    /// Directories by path relative to the root (`b""` is the root).
    dirs: HashMap<Vec<u8>, S::Node>,
    /// Directory attributes to set at the end: (path, depth, meta).
    dir_meta: Vec<(Vec<u8>, usize, Meta)>,
    /// Files that may be linked again: tar paths, or (dev, inode) of a directory source.
    by_path: HashMap<Vec<u8>, S::Node>,
    by_inode: HashMap<(u64, u64), S::Node>,
    /// Progress counts entries and data bytes (a directory), not archive bytes.
    count_data: bool,
    done: u64,
    total: u64,
    last_bytes: u64,
    last_entries: u64,
    entries: u64,
}

fn fs_err(path: &[u8]) -> impl FnOnce(FsError) -> ImportError + '_ {
    move |source| ImportError::Fs {
        path: show(path),
        source,
    }
}

fn show(path: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(path))
}

impl<'a, S: Sink> Builder<'a, S> {
    fn new(sink: &'a mut S, progress: &'a dyn Fn(&'static str, u64, u64)) -> Self {
        let mut dirs = HashMap::new();
        dirs.insert(Vec::new(), sink.root());
        Builder {
            sink,
            progress,
            report: ImportReport::default(),
            dirs,
            dir_meta: Vec::new(),
            by_path: HashMap::new(),
            by_inode: HashMap::new(),
            count_data: false,
            done: 0,
            total: 0,
            last_bytes: 0,
            last_entries: 0,
            entries: 0,
        }
    }

    fn tick(&mut self, force: bool) {
        if force
            || self.done - self.last_bytes >= PROGRESS_BYTES
            || self.entries - self.last_entries >= PROGRESS_ENTRIES
        {
            (self.progress)("import", self.done, self.total);
            self.last_bytes = self.done;
            self.last_entries = self.entries;
        }
    }

    /// The parent directory node of `path` and the last component, creating missing parents
    /// (tar archives may omit directory entries) as root-owned 0755 directories.
    fn parent_of(&mut self, path: &[u8]) -> Result<(S::Node, Vec<u8>), ImportError> {
        let (dir, name) = match path.iter().rposition(|&c| c == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&path[..0], path),
        };
        let node = self.ensure_dir(dir)?;
        Ok((node, name.to_vec()))
    }

    fn ensure_dir(&mut self, dir: &[u8]) -> Result<S::Node, ImportError> {
        if let Some(n) = self.dirs.get(dir) {
            return Ok(n.clone());
        }
        let (parent, name) = self.parent_of(dir)?;
        let meta = Meta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            atime: Timestamp::now(),
            mtime: Timestamp::now(),
        };
        let node = self
            .sink
            .create(&parent, &name, ObjectKind::Directory, &meta, None)
            .map_err(fs_err(dir))?;
        self.report.directories += 1;
        self.dirs.insert(dir.to_vec(), node.clone());
        Ok(node)
    }

    /// Creates one non-directory entry (data comes from `data`, `len` bytes) and sets its
    /// xattrs and attributes.
    #[allow(clippy::too_many_arguments)]
    fn add_node(
        &mut self,
        path: &[u8],
        kind: ObjectKind,
        meta: &Meta,
        contents: Option<&[u8]>,
        data: Option<&mut dyn Read>,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<S::Node, ImportError> {
        let (dir, name) = self.parent_of(path)?;
        check_name_bytes(path, &name)?;
        let node = self
            .sink
            .create(&dir, &name, kind, meta, contents)
            .map_err(fs_err(path))?;
        if let Some(r) = data {
            self.copy_data(path, &node, r)?;
        }
        for (k, v) in xattrs {
            self.sink.set_xattr(&node, k, v).map_err(fs_err(path))?;
            self.report.xattrs += 1;
        }
        self.sink.set_meta(&node, meta).map_err(fs_err(path))?;
        match kind {
            ObjectKind::Regular => self.report.files += 1,
            ObjectKind::Symlink => self.report.symlinks += 1,
            _ => self.report.special += 1,
        }
        self.entries += 1;
        self.tick(false);
        Ok(node)
    }

    fn copy_data(
        &mut self,
        path: &[u8],
        node: &S::Node,
        r: &mut dyn Read,
    ) -> Result<(), ImportError> {
        let mut off = 0u64;
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = read_full(r, &mut buf).map_err(|source| ImportError::Source {
                path: show(path),
                source,
            })?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            self.sink
                .write(node, off, Bytes::from(buf))
                .map_err(fs_err(path))?;
            off += n as u64;
            self.report.bytes += n as u64;
            if self.total_is_data() {
                self.done += n as u64;
            }
            self.tick(false);
        }
        Ok(())
    }

    /// Whether progress counts data bytes (directory source) rather than archive bytes.
    fn total_is_data(&self) -> bool {
        self.count_data
    }

    fn add_dir(
        &mut self,
        path: &[u8],
        meta: &Meta,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<(), ImportError> {
        let depth = path.split(|&c| c == b'/').count();
        if depth > MAX_DEPTH {
            return Err(ImportError::Unsupported {
                path: show(path),
                what: format!("the tree is nested deeper than {MAX_DEPTH} directories"),
            });
        }
        let node = match self.dirs.get(path) {
            Some(n) => n.clone(),
            None => {
                let (parent, name) = self.parent_of(path)?;
                check_name_bytes(path, &name)?;
                let n = self
                    .sink
                    .create(&parent, &name, ObjectKind::Directory, meta, None)
                    .map_err(fs_err(path))?;
                self.report.directories += 1;
                self.dirs.insert(path.to_vec(), n.clone());
                n
            }
        };
        for (k, v) in xattrs {
            self.sink.set_xattr(&node, k, v).map_err(fs_err(path))?;
            self.report.xattrs += 1;
        }
        self.dir_meta.push((path.to_vec(), depth, *meta));
        self.entries += 1;
        self.tick(false);
        Ok(())
    }

    fn add_link(&mut self, path: &[u8], target: S::Node) -> Result<(), ImportError> {
        let (dir, name) = self.parent_of(path)?;
        check_name_bytes(path, &name)?;
        self.sink.link(&dir, &name, &target).map_err(fs_err(path))?;
        self.report.hard_links += 1;
        self.entries += 1;
        Ok(())
    }

    /// Sets directory attributes, deepest first, and reports the end.
    fn finish(mut self) -> Result<ImportReport, ImportError> {
        let mut metas = std::mem::take(&mut self.dir_meta);
        metas.sort_by_key(|m| std::cmp::Reverse(m.1));
        for (path, _, meta) in &metas {
            if let Some(node) = self.dirs.get(path.as_slice()) {
                self.sink.set_meta(node, meta).map_err(fs_err(path))?;
            }
        }
        self.done = self.total;
        self.tick(true);
        Ok(self.report)
    }
}

/// Checks one name component (the same rule as names from clients).
fn check_name_bytes(path: &[u8], name: &[u8]) -> Result<(), ImportError> {
    let s = std::str::from_utf8(name).map_err(|_| ImportError::Unsupported {
        path: show(path),
        what: "the name is not UTF-8 (9P names are UTF-8 strings)".into(),
    })?;
    check_name(s).map_err(fs_err(path))?;
    Ok(())
}

fn ts(secs: i64, nanos: i64) -> Timestamp {
    Timestamp {
        secs: u64::try_from(secs).unwrap_or(0),
        nanos: u32::try_from(nanos).unwrap_or(0).min(999_999_999),
    }
}

fn meta_of(md: &Metadata) -> Meta {
    Meta {
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        atime: ts(md.atime(), md.atime_nsec()),
        mtime: ts(md.mtime(), md.mtime_nsec()),
    }
}

/// The kind of a host file.
fn kind_of(md: &Metadata) -> Option<ObjectKind> {
    let t = md.file_type();
    Some(if t.is_file() {
        ObjectKind::Regular
    } else if t.is_dir() {
        ObjectKind::Directory
    } else if t.is_symlink() {
        ObjectKind::Symlink
    } else if t.is_char_device() {
        ObjectKind::CharDevice
    } else if t.is_block_device() {
        ObjectKind::BlockDevice
    } else if t.is_fifo() {
        ObjectKind::Fifo
    } else if t.is_socket() {
        ObjectKind::Socket
    } else {
        return None;
    })
}

/// Linux `major(dev)` / `minor(dev)`.
fn dev_major_minor(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0xfff);
    let minor = ((rdev >> 12) & 0xffff_ff00) | (rdev & 0xff);
    (major as u32, minor as u32)
}

/// Extended attributes of a host file (not following symlinks). A file system without xattr
/// support has none.
fn host_xattrs(path: &Path) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut names = vec![0u8; 4096];
    let n = loop {
        // SAFETY: `c` is a NUL-terminated path and `names` a writable buffer of the length
        // passed; the kernel writes at most that many bytes.
        let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            Some(libc::ERANGE) if names.len() < (1 << 20) => names.resize(names.len() * 4, 0),
            _ => return Err(e),
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let Ok(name_s) = std::str::from_utf8(name) else {
            continue;
        };
        let cname = CString::new(name)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
        let mut val = vec![0u8; 65536];
        // SAFETY: both strings are NUL-terminated and `val` is writable for its length.
        let k = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                val.as_mut_ptr().cast(),
                val.len(),
            )
        };
        if k < 0 {
            let e = std::io::Error::last_os_error();
            // Removed between the list and the read.
            if e.raw_os_error() == Some(libc::ENODATA) {
                continue;
            }
            return Err(e);
        }
        val.truncate(k as usize);
        out.push((name_s.to_owned(), val));
    }
    Ok(out)
}

impl<S: Sink> Builder<'_, S> {
    /// Counts entries and data bytes of a directory tree (the progress total).
    fn scan_dir(&mut self, root: &Path) -> Result<(), ImportError> {
        let mut stack = vec![(root.to_path_buf(), 0usize)];
        let mut total = 0u64;
        while let Some((dir, depth)) = stack.pop() {
            let rd = std::fs::read_dir(&dir).map_err(|source| ImportError::Source {
                path: dir.display().to_string(),
                source,
            })?;
            for e in rd {
                let e = e.map_err(|source| ImportError::Source {
                    path: dir.display().to_string(),
                    source,
                })?;
                let md = e.metadata().map_err(|source| ImportError::Source {
                    path: e.path().display().to_string(),
                    source,
                })?;
                total += 1;
                if md.is_dir() {
                    if depth < MAX_DEPTH {
                        stack.push((e.path(), depth + 1));
                    }
                } else if md.is_file() {
                    total += md.len();
                }
            }
            if total - self.total >= PROGRESS_BYTES {
                self.total = total;
                (self.progress)("scan", 0, total);
            }
        }
        self.total = total;
        (self.progress)("scan", 0, total);
        Ok(())
    }

    /// Imports the tree below `root`; `root`'s own attributes go to the image root.
    fn import_dir(&mut self, root: &Path) -> Result<(), ImportError> {
        self.count_data = true;
        self.scan_dir(root)?;
        let src_err = |p: &Path| {
            let path = p.display().to_string();
            move |source| ImportError::Source { path, source }
        };
        let md = std::fs::symlink_metadata(root).map_err(src_err(root))?;
        let xattrs = host_xattrs(root).map_err(src_err(root))?;
        self.add_dir(b"", &meta_of(&md), &xattrs)?;
        // Depth-first; each directory's entries sorted by name so imports are repeatable.
        let mut stack: Vec<(PathBuf, Vec<u8>)> = vec![(root.to_path_buf(), Vec::new())];
        while let Some((dir, rel)) = stack.pop() {
            let mut names: Vec<_> = std::fs::read_dir(&dir)
                .map_err(src_err(&dir))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(src_err(&dir))?;
            names.sort();
            for name in names.iter().rev() {
                let host = dir.join(name);
                let mut rel_child = rel.clone();
                if !rel_child.is_empty() {
                    rel_child.push(b'/');
                }
                rel_child.extend_from_slice(OsStr::as_bytes(name));
                if self.import_host_entry(&host, &rel_child)? {
                    stack.push((host, rel_child));
                }
            }
        }
        Ok(())
    }

    /// Imports one host entry; `true` for a directory whose entries come next.
    fn import_host_entry(&mut self, host: &Path, rel: &[u8]) -> Result<bool, ImportError> {
        let src_err = |source| ImportError::Source {
            path: host.display().to_string(),
            source,
        };
        let md = std::fs::symlink_metadata(host).map_err(src_err)?;
        let Some(kind) = kind_of(&md) else {
            return Err(ImportError::Unsupported {
                path: host.display().to_string(),
                what: "unknown file type".into(),
            });
        };
        let meta = meta_of(&md);
        self.done += 1;
        if kind == ObjectKind::Directory {
            let xattrs = host_xattrs(host).map_err(src_err)?;
            self.add_dir(rel, &meta, &xattrs)?;
            return Ok(true);
        }
        let key = (md.dev(), md.ino());
        if md.nlink() > 1 {
            if let Some(target) = self.by_inode.get(&key).cloned() {
                self.add_link(rel, target)?;
                return Ok(false);
            }
        }
        let xattrs = host_xattrs(host).map_err(src_err)?;
        let node = match kind {
            ObjectKind::Regular => {
                let mut f = File::open(host).map_err(src_err)?;
                self.add_node(rel, kind, &meta, None, Some(&mut f), &xattrs)?
            }
            ObjectKind::Symlink => {
                let t = std::fs::read_link(host).map_err(src_err)?;
                let t = t.as_os_str().as_bytes();
                self.add_node(rel, kind, &meta, Some(t), None, &xattrs)?
            }
            ObjectKind::CharDevice | ObjectKind::BlockDevice => {
                let (ma, mi) = dev_major_minor(md.rdev());
                let c = device_contents(kind, ma, mi).unwrap_or_default();
                self.add_node(rel, kind, &meta, Some(c.as_bytes()), None, &xattrs)?
            }
            _ => self.add_node(rel, kind, &meta, None, None, &xattrs)?,
        };
        if md.nlink() > 1 {
            self.by_inode.insert(key, node);
        }
        Ok(false)
    }
}

/// Counts the bytes read through it (the archive position, for progress).
struct Counting<R> {
    inner: R,
    count: Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// A tar path made relative and clean: `.` and empty components dropped, `..` refused.
fn clean_path(raw: &[u8]) -> Result<Vec<u8>, ImportError> {
    let mut out = Vec::with_capacity(raw.len());
    for comp in raw.split(|&c| c == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                return Err(ImportError::Unsupported {
                    path: String::from_utf8_lossy(raw).into_owned(),
                    what: "the path climbs out of the archive with '..'".into(),
                })
            }
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(out)
}

/// `secs[.frac]` of a pax time field.
fn pax_time(v: &str) -> Option<Timestamp> {
    let (s, f) = v.split_once('.').unwrap_or((v, ""));
    let secs: u64 = s.parse().ok()?;
    let mut nanos = 0u32;
    for (i, d) in f.bytes().take(9).enumerate() {
        if !d.is_ascii_digit() {
            return None;
        }
        nanos += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
    }
    Some(Timestamp { secs, nanos })
}

impl<S: Sink> Builder<'_, S> {
    fn import_tar(&mut self, path: &Path, kind: SourceKind) -> Result<(), ImportError> {
        let p = path.display().to_string();
        let src_err = |what: &str| {
            let path = what.to_owned();
            move |source| ImportError::Source { path, source }
        };
        let f = File::open(path).map_err(src_err(&p))?;
        self.total = f.metadata().map_err(src_err(&p))?.len();
        let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let raw = BufReader::with_capacity(
            1 << 16,
            Counting {
                inner: f,
                count: Arc::clone(&count),
            },
        );
        let reader: Box<dyn Read> = match kind {
            SourceKind::TarGz => Box::new(flate2::bufread::MultiGzDecoder::new(raw)),
            SourceKind::TarXz => Box::new(xz2::bufread::XzDecoder::new_multi_decoder(raw)),
            SourceKind::TarZst => Box::new(ZstdReader::new(raw).map_err(src_err(&p))?),
            _ => Box::new(raw),
        };
        let mut ar = tar::Archive::new(reader);
        let entries = ar.entries().map_err(src_err(&p))?;
        for e in entries {
            let mut e = e.map_err(src_err(&p))?;
            self.done = count.load(std::sync::atomic::Ordering::Relaxed);
            self.tar_entry(&mut e, &p)?;
        }
        Ok(())
    }

    fn tar_entry<R: Read>(
        &mut self,
        e: &mut tar::Entry<'_, R>,
        archive: &str,
    ) -> Result<(), ImportError> {
        use tar::EntryType as T;
        let raw_path = e.path_bytes().into_owned();
        let rel = clean_path(&raw_path)?;
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let hdr_err = |source| ImportError::Source {
            path: format!("{archive}: {shown}"),
            source,
        };
        let h = e.header();
        let ty = h.entry_type();
        let id32 = |v: u64, what: &str| {
            u32::try_from(v).map_err(|_| ImportError::Unsupported {
                path: shown.clone(),
                what: format!("{what} {v} does not fit in 32 bits"),
            })
        };
        let mtime = Timestamp {
            secs: h.mtime().map_err(hdr_err)?,
            nanos: 0,
        };
        let mut meta = Meta {
            mode: h.mode().map_err(hdr_err)? & 0o7777,
            uid: id32(h.uid().map_err(hdr_err)?, "uid")?,
            gid: id32(h.gid().map_err(hdr_err)?, "gid")?,
            atime: mtime,
            mtime,
        };
        let major = h.device_major().ok().flatten().unwrap_or(0);
        let minor = h.device_minor().ok().flatten().unwrap_or(0);
        let link = e.link_name_bytes().map(|l| l.into_owned());
        let mut xattrs = Vec::new();
        if let Some(exts) = e.pax_extensions().map_err(hdr_err)? {
            for ext in exts {
                let ext = ext.map_err(hdr_err)?;
                let Ok(key) = ext.key() else { continue };
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    xattrs.push((name.to_owned(), ext.value_bytes().to_vec()));
                } else if key == "mtime" {
                    if let Some(t) = ext.value().ok().and_then(pax_time) {
                        meta.mtime = t;
                    }
                } else if key == "atime" {
                    if let Some(t) = ext.value().ok().and_then(pax_time) {
                        meta.atime = t;
                    }
                } else if key == "uid" || key == "gid" {
                    let v = ext.value().ok().and_then(|v| v.parse::<u64>().ok());
                    if let Some(v) = v {
                        let v = id32(v, key)?;
                        if key == "uid" {
                            meta.uid = v;
                        } else {
                            meta.gid = v;
                        }
                    }
                }
            }
        }
        let unsupported = |what: &str| ImportError::Unsupported {
            path: shown.clone(),
            what: what.into(),
        };
        if rel.is_empty() && ty != T::Directory {
            return Err(unsupported("only a directory may name the archive root"));
        }
        match ty {
            T::Directory => self.add_dir(&rel, &meta, &xattrs)?,
            T::Regular | T::Continuous => {
                let node = self.add_node(&rel, ObjectKind::Regular, &meta, None, Some(e), &xattrs)?;
                self.by_path.insert(rel, node);
            }
            T::Symlink => {
                let target = link.ok_or_else(|| unsupported("a symlink without a target"))?;
                let node = self.add_node(&rel, ObjectKind::Symlink, &meta, Some(&target), None, &xattrs)?;
                self.by_path.insert(rel, node);
            }
            T::Link => {
                let target = link.ok_or_else(|| unsupported("a hard link without a target"))?;
                let target = clean_path(&target)?;
                let Some(node) = self.by_path.get(&target).cloned() else {
                    return Err(unsupported(&format!(
                        "hard link to {}, which is not a file earlier in the archive",
                        String::from_utf8_lossy(&target)
                    )));
                };
                self.add_link(&rel, node)?;
            }
            T::Char | T::Block => {
                let kind = if ty == T::Char {
                    ObjectKind::CharDevice
                } else {
                    ObjectKind::BlockDevice
                };
                let c = device_contents(kind, major, minor).unwrap_or_default();
                let node = self.add_node(&rel, kind, &meta, Some(c.as_bytes()), None, &xattrs)?;
                self.by_path.insert(rel, node);
            }
            T::Fifo => {
                let node = self.add_node(&rel, ObjectKind::Fifo, &meta, None, None, &xattrs)?;
                self.by_path.insert(rel, node);
            }
            T::XGlobalHeader => {}
            T::GNUSparse => {
                return Err(unsupported(
                    "GNU sparse files are not supported: create the archive without --sparse",
                ))
            }
            other => {
                return Err(unsupported(&format!(
                    "tar entry type {:?} has no file-system meaning here (e.g. a multi-volume continuation)",
                    other.as_byte() as char
                )))
            }
        }
        Ok(())
    }
}

/// A zstd stream (one or more frames, as `zstd -T0` writes them) decoded while read.
struct ZstdReader<R: BufRead> {
    dec: Option<ruzstd::decoding::StreamingDecoder<R, ruzstd::decoding::FrameDecoder>>,
}

fn zstd_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("zstd: {e}"))
}

impl<R: BufRead> ZstdReader<R> {
    fn new(r: R) -> std::io::Result<Self> {
        let dec = ruzstd::decoding::StreamingDecoder::new(r).map_err(zstd_err)?;
        Ok(ZstdReader { dec: Some(dec) })
    }
}

impl<R: BufRead> Read for ZstdReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let Some(dec) = self.dec.as_mut() else {
                return Ok(0);
            };
            let n = dec.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // The end of a frame: another frame may follow.
            let Some(dec) = self.dec.take() else {
                return Ok(0);
            };
            let mut src = dec.into_inner();
            if src.fill_buf()?.is_empty() {
                return Ok(0);
            }
            self.dec = Some(ruzstd::decoding::StreamingDecoder::new(src).map_err(zstd_err)?);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A fresh namespace and a directory `/img` to import into.
    fn fs_sink(dir: &Path) -> (Arc<Fs>, FsSink) {
        let fs = crate::namespace::test_fs(dir);
        let root = fs.root();
        let img = fs
            .create(
                &root,
                b"img",
                ObjectKind::Directory,
                0o700,
                Cred::user(0),
                None,
            )
            .unwrap();
        (Arc::clone(&fs), FsSink::new(fs, img))
    }

    fn walk(fs: &Arc<Fs>, path: &str) -> Result<Claim, FsError> {
        let mut cur = fs.root();
        for c in path.split('/').filter(|c| !c.is_empty()) {
            let next = fs.lookup(cur.node(), c.as_bytes(), Cred::user(0))?;
            cur = next;
        }
        Ok(cur)
    }

    fn contents(fs: &Arc<Fs>, path: &str) -> Vec<u8> {
        let c = walk(fs, path).unwrap();
        fs.read(c.node(), 0, 1 << 20).unwrap().to_vec()
    }

    fn attr(fs: &Arc<Fs>, path: &str) -> envoy_storage::Attributes {
        let c = walk(fs, path).unwrap();
        fs.stat(c.node()).unwrap().attr
    }

    fn no_progress(_: &'static str, _: u64, _: u64) {}

    /// A GNU header of type `ty` with every numeric field set.
    fn hdr(ty: tar::EntryType, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(ty);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(0);
        h
    }

    /// A tar archive: a directory, a file with an xattr and a pax mtime, a file in a directory
    /// the archive never lists, a symlink, a hard link, a device node and a FIFO.
    fn sample_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = hdr(tar::EntryType::Directory, 0o750);
        h.set_uid(1000);
        h.set_gid(100);
        h.set_mtime(1_000_000);
        h.set_size(0);
        b.append_data(&mut h, "./etc/", std::io::empty()).unwrap();

        b.append_pax_extensions([
            ("SCHILY.xattr.user.color", b"blue".as_slice()),
            ("mtime", b"1234567890.5".as_slice()),
        ])
        .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o4755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(7);
        h.set_size(11);
        b.append_data(&mut h, "etc/hostname", b"hello world".as_slice())
            .unwrap();

        let mut h = hdr(tar::EntryType::Regular, 0o644);
        h.set_mtime(9);
        h.set_size(3);
        b.append_data(&mut h, "usr/lib/deep/f", b"abc".as_slice())
            .unwrap();

        let mut h = hdr(tar::EntryType::Symlink, 0o777);
        h.set_size(0);
        b.append_link(&mut h, "etc/link", "hostname").unwrap();

        let mut h = hdr(tar::EntryType::Link, 0o644);
        h.set_size(0);
        b.append_link(&mut h, "usr/lib/deep/g", "usr/lib/deep/f")
            .unwrap();

        let mut h = hdr(tar::EntryType::Char, 0o666);
        h.set_size(0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        b.append_data(&mut h, "dev/null", std::io::empty()).unwrap();

        let mut h = hdr(tar::EntryType::Fifo, 0o600);
        h.set_size(0);
        b.append_data(&mut h, "run/fifo", std::io::empty()).unwrap();
        b.into_inner().unwrap()
    }

    fn check_sample(fs: &Arc<Fs>, r: &ImportReport) {
        assert_eq!(contents(fs, "img/etc/hostname"), b"hello world");
        let a = attr(fs, "img/etc/hostname");
        assert_eq!(a.mode, 0o4755);
        assert_eq!(
            a.mtime,
            Timestamp {
                secs: 1_234_567_890,
                nanos: 500_000_000
            }
        );
        let h = walk(fs, "img/etc/hostname").unwrap();
        assert_eq!(fs.xattr_get(h.node(), "user.color").unwrap(), b"blue");
        let d = attr(fs, "img/etc");
        assert_eq!(
            (d.mode, d.uid, d.gid, d.mtime.secs),
            (0o750, 1000, 100, 1_000_000)
        );
        assert_eq!(contents(fs, "img/etc/link"), b"hostname");
        assert_eq!(attr(fs, "img/etc/link").kind, ObjectKind::Symlink);
        assert_eq!(contents(fs, "img/usr/lib/deep/g"), b"abc");
        assert_eq!(
            walk(fs, "img/usr/lib/deep/g").unwrap().node().id(),
            walk(fs, "img/usr/lib/deep/f").unwrap().node().id(),
            "a hard link shares the object"
        );
        assert_eq!(attr(fs, "img/dev/null").kind, ObjectKind::CharDevice);
        assert_eq!(contents(fs, "img/dev/null"), b"c 1 3");
        assert_eq!(attr(fs, "img/run/fifo").kind, ObjectKind::Fifo);
        assert_eq!(attr(fs, "img/usr/lib").mode, 0o755);
        assert_eq!(
            (
                r.files,
                r.symlinks,
                r.hard_links,
                r.special,
                r.xattrs,
                r.bytes
            ),
            (2, 1, 1, 2, 1, 14)
        );
        // etc, usr, usr/lib, usr/lib/deep, dev, run
        assert_eq!(r.directories, 6);
    }

    fn import_bytes(
        bytes: &[u8],
        name: &str,
    ) -> (
        tempfile::TempDir,
        Arc<Fs>,
        Result<ImportReport, ImportError>,
    ) {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join(name);
        std::fs::write(&src, bytes).unwrap();
        let (fs, mut sink) = fs_sink(&t.path().join("store"));
        let kind = SourceKind::detect(&src).unwrap();
        let r = build(&mut sink, &src, kind, &no_progress);
        (t, fs, r)
    }

    #[test]
    fn tar_plain_all_entry_kinds_imported() {
        let (_t, fs, r) = import_bytes(&sample_tar(), "a.tar");
        check_sample(&fs, &r.unwrap());
    }

    #[test]
    fn tar_gz_xz_zst_detected_and_decoded() {
        let tar = sample_tar();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&tar).unwrap();
        let xz = xz.finish().unwrap();
        // Two frames, as a multi-threaded zstd writes them.
        let half = tar.len() / 2;
        let mut zst = ruzstd::encoding::compress_to_vec(
            &tar[..half],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        zst.extend(ruzstd::encoding::compress_to_vec(
            &tar[half..],
            ruzstd::encoding::CompressionLevel::Fastest,
        ));
        for (bytes, name, kind) in [
            (gz, "a.tgz", SourceKind::TarGz),
            (xz, "a.txz", SourceKind::TarXz),
            (zst, "a.tzst", SourceKind::TarZst),
        ] {
            let t = tempfile::tempdir().unwrap();
            let src = t.path().join(name);
            std::fs::write(&src, &bytes).unwrap();
            assert_eq!(SourceKind::detect(&src).unwrap(), kind);
            let (_t2, fs, r) = import_bytes(&bytes, name);
            check_sample(&fs, &r.unwrap());
        }
    }

    #[test]
    fn tar_dotdot_path_refused_with_path() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = hdr(tar::EntryType::Regular, 0o644);
        h.set_size(1);
        // set_path refuses "..", so write the name bytes directly.
        h.as_old_mut().name[..9].copy_from_slice(b"a/../../x");
        h.set_cksum();
        b.append(&h, b"x".as_slice()).unwrap();
        let (_t, _fs, r) = import_bytes(&b.into_inner().unwrap(), "bad.tar");
        let e = r.unwrap_err();
        assert!(matches!(e, ImportError::Unsupported { .. }), "{e}");
        assert!(e.to_string().contains("a/../../x"), "{e}");
    }

    #[test]
    fn tar_hard_link_to_missing_target_refused() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = hdr(tar::EntryType::Link, 0o644);
        h.set_size(0);
        b.append_link(&mut h, "a", "nowhere").unwrap();
        let (_t, _fs, r) = import_bytes(&b.into_inner().unwrap(), "bad.tar");
        let e = r.unwrap_err().to_string();
        assert!(e.contains("not a file earlier in the archive"), "{e}");
    }

    #[test]
    fn tar_volume_header_entry_refused_with_path() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = hdr(tar::EntryType::new(b'V'), 0o644);
        b.append_data(&mut h, "vol", std::io::empty()).unwrap();
        let (_t, _fs, r) = import_bytes(&b.into_inner().unwrap(), "bad.tar");
        let e = r.unwrap_err();
        assert!(matches!(e, ImportError::Unsupported { .. }), "{e}");
        assert!(e.to_string().contains("cannot import vol"), "{e}");
    }

    #[test]
    fn tar_truncated_archive_is_a_source_error() {
        let tar = sample_tar();
        let (_t, _fs, r) = import_bytes(&tar[..700], "cut.tar");
        assert!(matches!(r, Err(ImportError::Source { .. })), "{r:?}");
    }

    #[test]
    fn detect_bzip2_refused_missing_source_is_source_error() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x.tar.bz2");
        std::fs::write(&p, b"BZh91AY&SY").unwrap();
        let e = SourceKind::detect(&p).unwrap_err().to_string();
        assert!(e.contains("bzip2"), "{e}");
        assert!(matches!(
            SourceKind::detect(&t.path().join("missing")),
            Err(ImportError::Source { .. })
        ));
    }

    #[test]
    fn dir_tree_types_modes_times_links_xattrs_preserved() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("etc/sub")).unwrap();
        std::fs::write(src.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
        std::fs::set_permissions(
            src.join("etc/passwd"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        std::fs::write(src.join("big"), vec![7u8; 3 * CHUNK + 5]).unwrap();
        std::fs::hard_link(src.join("etc/passwd"), src.join("etc/sub/passwd2")).unwrap();
        std::os::unix::fs::symlink("../etc/passwd", src.join("etc/sub/ln")).unwrap();
        let fifo = CString::new(src.join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o620) }, 0);
        let c = CString::new(src.join("etc/passwd").as_os_str().as_bytes()).unwrap();
        // SAFETY: NUL-terminated strings and a 3-byte value.
        let has_xattr =
            unsafe { libc::setxattr(c.as_ptr(), c"user.k".as_ptr(), b"val".as_ptr().cast(), 3, 0) }
                == 0;
        let when = std::time::UNIX_EPOCH + std::time::Duration::new(1_600_000_000, 123);
        let f = File::options()
            .write(true)
            .open(src.join("etc/passwd"))
            .unwrap();
        f.set_times(
            std::fs::FileTimes::new()
                .set_modified(when)
                .set_accessed(when),
        )
        .unwrap();
        drop(f);
        std::fs::set_permissions(src.join("etc/sub"), std::fs::Permissions::from_mode(0o711))
            .unwrap();

        let (fs, mut sink) = fs_sink(&t.path().join("store"));
        let calls = std::cell::RefCell::new(Vec::new());
        let progress = |p: &'static str, d: u64, tot: u64| calls.borrow_mut().push((p, d, tot));
        let r = build(&mut sink, &src, SourceKind::Dir, &progress).unwrap();

        assert_eq!(
            contents(&fs, "img/etc/passwd"),
            b"root:x:0:0::/root:/bin/sh\n"
        );
        let a = attr(&fs, "img/etc/passwd");
        assert_eq!(a.mode, 0o640);
        assert_eq!(
            a.mtime,
            Timestamp {
                secs: 1_600_000_000,
                nanos: 123
            }
        );
        assert_eq!(a.atime, a.mtime);
        assert_eq!(
            walk(&fs, "img/etc/sub/passwd2").unwrap().node().id(),
            walk(&fs, "img/etc/passwd").unwrap().node().id()
        );
        assert_eq!(contents(&fs, "img/etc/sub/ln"), b"../etc/passwd");
        assert_eq!(attr(&fs, "img/fifo").kind, ObjectKind::Fifo);
        assert_eq!(attr(&fs, "img/etc/sub").mode, 0o711);
        let big = walk(&fs, "img/big").unwrap();
        assert_eq!(fs.stat(big.node()).unwrap().size, (3 * CHUNK + 5) as u64);
        if has_xattr {
            let p = walk(&fs, "img/etc/passwd").unwrap();
            assert_eq!(fs.xattr_get(p.node(), "user.k").unwrap(), b"val");
        }
        assert_eq!((r.files, r.hard_links, r.symlinks, r.special), (2, 1, 1, 1));
        assert_eq!(r.directories, 2);
        let calls = calls.into_inner();
        let last = calls.last().copied().unwrap();
        assert_eq!(last.0, "import");
        assert_eq!(last.1, last.2, "the last report says done == total");
        // 7 entries + data bytes (the scan counts both names of the hard link)
        assert_eq!(last.2, 7 + (3 * CHUNK + 5) as u64 + 26 * 2);
    }
}
