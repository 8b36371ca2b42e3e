//! `clone`: copy an object into a new ID through a temporary file.
//!
//! Steps (each followed by a crash point): raise the reserve mark past `dst`; create the leaf
//! directory; create `.clone-<dst>` there; fill it (reflink via `FICLONE` where the host file
//! system shares extents, else `copy_file_range`, else read+write; a directory object is read,
//! validated and rewritten with every entry's copy-on-write flag set *before* anything touches
//! the disk, so a corrupt one fails cleanly); fsync it; rename it to the final leaf name. A
//! crash before the rename leaves only the temporary file, which recovery removes.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use super::{needs_cleanup, stat_from, ObjectStore};
use crate::cache::dir::LeafEntry;
use crate::dirfmt;
use crate::error::StoreError;
use crate::name;
use crate::object::{ObjectId, ObjectKind, ObjectStat};
use crate::sys;

/// Largest directory object `clone` rewrites (1 GiB, about 25 million entries); it is
/// processed in memory.
pub const MAX_DIR_CLONE: usize = 1 << 30;

impl ObjectStore {
    /// Copies `src` to the new object `dst` (same attributes). A directory object's copy has
    /// the copy-on-write flag set on every entry.
    pub fn clone_object(&self, src: ObjectId, dst: ObjectId) -> Result<ObjectStat, StoreError> {
        self.check_id(src)?;
        self.check_id(dst)?;
        self.check_writable()?;
        if src == dst {
            // NotFound if there is no such object, else the destination exists.
            self.stat(src)?;
            return Err(StoreError::AlreadyExists(dst));
        }
        let (a, b) = (Self::stripe_index(src), Self::stripe_index(dst));
        let lock = |i: usize| {
            self.stripes[i]
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        let _g1 = lock(a.min(b));
        let _g2 = (a != b).then(|| lock(a.max(b)));
        let src_entry = self.entry_required(src)?;
        if self.entry(dst)?.is_some() {
            return Err(StoreError::AlreadyExists(dst));
        }
        let src_file = self.file_locked(src)?;
        // A directory is read and rewritten before anything touches the disk, so a corrupt one
        // fails cleanly.
        let dir_copy = if src_entry.attr.kind == ObjectKind::Directory {
            let len = src_file
                .metadata()
                .map_err(|e| StoreError::io(format!("fstat of object {src}"), e))?
                .len();
            let mut data = self.read_all(&src_file, len, src)?;
            dirfmt::set_cow_object(&mut data)
                .map_err(|source| StoreError::CorruptDirectory { id: src, source })?;
            Some(data)
        } else {
            None
        };
        let leaf = self.leaf_name(dst, &src_entry.attr)?;
        self.cover_id(dst)?;
        self.crash_point("clone:begin")?;
        let d = self.make_leaf_dir(dst)?;
        self.crash_point("clone:dirs")?;
        let tmp = d.join(name::clone_temp(dst.0));
        let r = self.clone_steps(&src_file, &tmp, &d.join(&leaf), dir_copy, dst);
        if needs_cleanup(&r) {
            let _ = fs::remove_file(&tmp);
        }
        let f = r?;
        let g = self.geometry;
        self.dirs.upsert(
            g.leaf_dir_key(dst),
            g.leaf_low(dst),
            LeafEntry {
                name: leaf,
                attr: src_entry.attr,
            },
        );
        self.fds.insert(dst, Arc::clone(&f));
        let md = f
            .metadata()
            .map_err(|e| StoreError::io(format!("fstat of object {dst}"), e))?;
        Ok(stat_from(dst, src_entry.attr, &md))
    }

    /// Reads a whole directory object into memory (at most [`MAX_DIR_CLONE`] bytes).
    fn read_all(&self, f: &Arc<File>, len: u64, id: ObjectId) -> Result<Vec<u8>, StoreError> {
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= MAX_DIR_CLONE)
            .ok_or_else(|| {
                StoreError::InvalidArgument(format!(
                    "directory object {id} is {len} bytes; clone handles at most {MAX_DIR_CLONE}"
                ))
            })?;
        let mut data = vec![0u8; len];
        f.read_exact_at(&mut data, 0)
            .map_err(|e| StoreError::io(format!("reading object {id}"), e))?;
        Ok(data)
    }

    fn clone_steps(
        &self,
        src: &Arc<File>,
        tmp: &Path,
        fin: &Path,
        dir_copy: Option<Vec<u8>>,
        dst: ObjectId,
    ) -> Result<Arc<File>, StoreError> {
        let ctx = |what: &str| format!("{what} while cloning into {dst}");
        let out = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(tmp)
            .map_err(|e| StoreError::io(ctx("creating temp file"), e))?;
        self.crash_point("clone:temp-created")?;
        match dir_copy {
            Some(data) => out
                .write_all_at(&data, 0)
                .map_err(|e| StoreError::io(ctx("writing"), e))?,
            None => self
                .copy_data(src, &out)
                .map_err(|e| StoreError::io(ctx("copying"), e))?,
        }
        self.crash_point("clone:temp-written")?;
        out.sync_all()
            .map_err(|e| self.poison(StoreError::io(ctx("fsync of temp file"), e)))?;
        self.crash_point("clone:temp-synced")?;
        fs::rename(tmp, fin).map_err(|e| StoreError::io(ctx("renaming temp file"), e))?;
        self.crash_point("clone:renamed")?;
        Ok(Arc::new(out))
    }

    fn copy_data(&self, src: &File, dst: &File) -> io::Result<()> {
        let len = src.metadata()?.len();
        if len == 0 {
            return Ok(());
        }
        if self.reflink.load(Ordering::Relaxed) {
            match sys::reflink(src, dst) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::debug!(error = %e, "reflink unavailable; copying");
                    self.reflink.store(false, Ordering::Relaxed);
                }
            }
        }
        match sys::copy_range(src, dst, len) {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EXDEV | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP)
                ) =>
            {
                dst.set_len(0)?;
                let mut buf = vec![0u8; 1 << 20];
                let mut off = 0u64;
                while off < len {
                    let n = src.read_at(&mut buf, off)?;
                    if n == 0 {
                        break;
                    }
                    dst.write_all_at(&buf[..n], off)?;
                    off += n as u64;
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
