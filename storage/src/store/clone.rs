//! `clone`: copy an object into a new ID through a temporary file.
//!
//! Steps (each followed by a crash point): raise the reserve mark past `dst`; create the leaf
//! directory; create `objects/.clone-<dst>` (or take a ready unnamed spare file, see
//! [`super::spare`], which saves the file creation: most of a small clone's time); fill it;
//! fsync it (not for [`ObjectStore::clone_object_unsynced`]); rename it (link the spare) to
//! the final leaf name. A crash before that leaves only the temporary file, which recovery
//! removes (an unnamed spare leaves nothing).
//!
//! Filling: a regular object is copied by reflink (`FICLONE`) where the host file system
//! shares extents, else `copy_file_range`, else read+write. A directory object goes through
//! the I/O engine in chunks of [`DIR_CLONE_CHUNK`] bytes: each chunk is read, validated and
//! rewritten with every entry's copy-on-write flag set, then written to the temporary file. A
//! corrupt block fails the clone and the temporary file is removed, so only the (harmless)
//! raised reserve mark and leaf directory remain. Memory per clone stays at one chunk however
//! large the directory object is (a peer can make one of any size with a sparse `wstat`).

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use bytes::BytesMut;

use super::{needs_cleanup, stat_from, ObjectStore};
use crate::cache::dir::LeafEntry;
use crate::dirfmt::{self, DirFormatError};
use crate::engine::IoOp;
use crate::error::StoreError;
use crate::name;
use crate::object::{ObjectId, ObjectKind, ObjectStat};
use crate::sys;

/// Bytes of a directory object `clone` reads, rewrites and writes at a time (256 blocks).
pub const DIR_CLONE_CHUNK: usize = 256 * dirfmt::BLOCK_SIZE;

impl ObjectStore {
    /// Copies `src` to the new object `dst` (same attributes). A directory object's copy has
    /// the copy-on-write flag set on every entry.
    pub fn clone_object(&self, src: ObjectId, dst: ObjectId) -> Result<ObjectStat, StoreError> {
        self.clone_with(src, dst, true, true)
    }

    /// [`ObjectStore::clone_object`] without the fsync of the copy: the copy is complete in
    /// the host page cache when this returns (so a crash of the process cannot tear it), but
    /// a power failure before the next [`ObjectStore::sync`] of `dst` may lose it. For callers
    /// that make the copy durable themselves, off their latency path (image snapshots and
    /// forks, which sync in the background).
    pub fn clone_object_unsynced(
        &self,
        src: ObjectId,
        dst: ObjectId,
    ) -> Result<ObjectStat, StoreError> {
        self.clone_with(src, dst, false, true)
    }

    /// [`ObjectStore::clone_object_unsynced`] that leaves the spare files alone: for work done
    /// ahead of time in the background, which must not use up the files that keep creations
    /// on a request path fast.
    pub fn clone_object_unsynced_without_spare(
        &self,
        src: ObjectId,
        dst: ObjectId,
    ) -> Result<ObjectStat, StoreError> {
        self.clone_with(src, dst, false, false)
    }

    fn clone_with(
        &self,
        src: ObjectId,
        dst: ObjectId,
        sync: bool,
        use_spare: bool,
    ) -> Result<ObjectStat, StoreError> {
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
        let is_dir = src_entry.attr.kind == ObjectKind::Directory;
        let leaf = self.leaf_name(dst, &src_entry.attr)?;
        self.cover_id(dst)?;
        self.crash_point("clone:begin")?;
        let d = self.make_leaf_dir(dst)?;
        self.crash_point("clone:dirs")?;
        // A ready spare file saves the creation of the temporary (see `spare`). Otherwise the
        // temporary is made in `objects/`, not the leaf directory: a file creation holds its
        // directory's lock for the whole (slow) inode allocation, and every other creation,
        // rename and attribute change of objects with nearby IDs needs the leaf's.
        let spare = if use_spare { self.take_spare() } else { None };
        let tmp = self.objects.join(name::clone_temp(dst.0));
        let named = spare.is_none();
        let r = self.clone_steps(
            &src_file,
            src,
            &tmp,
            spare.map(|s| s.file),
            &d.join(&leaf),
            is_dir,
            dst,
            sync,
        );
        if named && needs_cleanup(&r) {
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

    /// Copies directory object `src` into `out` (the temporary file of `dst`) chunk by chunk
    /// through the engine, setting the copy-on-write flag of every entry; fails on the first
    /// corrupt block.
    fn copy_directory(
        &self,
        src: &Arc<File>,
        src_id: ObjectId,
        out: &Arc<File>,
        dst: ObjectId,
    ) -> Result<(), StoreError> {
        let len = src
            .metadata()
            .map_err(|e| StoreError::io(format!("fstat of object {src_id}"), e))?
            .len();
        let corrupt = |source| StoreError::CorruptDirectory { id: src_id, source };
        if len % dirfmt::BLOCK_SIZE as u64 != 0 {
            return Err(corrupt(DirFormatError::PartialBlock(len)));
        }
        let mut offset = 0u64;
        while offset < len {
            let want = usize::try_from(len - offset)
                .map_or(DIR_CLONE_CHUNK, |left| left.min(DIR_CLONE_CHUNK));
            let read = self.engine.run_one(IoOp::Read {
                file: Arc::clone(src),
                offset,
                len: want,
            });
            let data = Self::read_result(src_id, read)?;
            if data.len() != want {
                return Err(StoreError::io(
                    format!("reading directory object {src_id}"),
                    io::Error::new(io::ErrorKind::UnexpectedEof, "object shrank during clone"),
                ));
            }
            // The engine's buffer is normally unique, so this rarely copies.
            let mut chunk = data
                .try_into_mut()
                .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
            let first_block =
                usize::try_from(offset / dirfmt::BLOCK_SIZE as u64).unwrap_or(usize::MAX);
            dirfmt::set_cow_object(&mut chunk).map_err(|e| {
                corrupt(match e {
                    DirFormatError::Block { index, source } => DirFormatError::Block {
                        index: first_block.saturating_add(index),
                        source,
                    },
                    other => other,
                })
            })?;
            let written = self.engine.run_one(IoOp::Write {
                file: Arc::clone(out),
                offset,
                data: chunk.freeze(),
            });
            Self::write_result(dst, written)?;
            offset += want as u64;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn clone_steps(
        &self,
        src: &Arc<File>,
        src_id: ObjectId,
        tmp: &Path,
        spare: Option<File>,
        fin: &Path,
        is_dir: bool,
        dst: ObjectId,
        sync: bool,
    ) -> Result<Arc<File>, StoreError> {
        let ctx = |what: &str| format!("{what} while cloning into {dst}");
        let unnamed = spare.is_some();
        let out = match spare {
            // A spare is empty, unnamed, and nobody else writes to it.
            Some(f) => f,
            None => super::open_new_file(tmp, false)
                .map_err(|e| StoreError::io(ctx("creating temp file"), e))?,
        };
        let out = Arc::new(out);
        self.crash_point("clone:temp-created")?;
        if is_dir {
            self.copy_directory(src, src_id, &out, dst)?;
        } else {
            self.copy_data(src, &out)
                .map_err(|e| StoreError::io(ctx("copying"), e))?;
        }
        self.crash_point("clone:temp-written")?;
        if sync {
            out.sync_all()
                .map_err(|e| self.poison(StoreError::io(ctx("fsync of temp file"), e)))?;
        }
        self.crash_point("clone:temp-synced")?;
        if unnamed {
            super::spare::link_unnamed(&out, fin)
                .map_err(|e| StoreError::io(ctx("linking spare file"), e))?;
        } else {
            fs::rename(tmp, fin).map_err(|e| StoreError::io(ctx("renaming temp file"), e))?;
        }
        self.crash_point("clone:renamed")?;
        Ok(out)
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
