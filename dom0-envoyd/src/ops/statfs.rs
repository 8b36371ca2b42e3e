//! Tstatfs: the host file system holding the store, reported with the v9fs magic.

use std::sync::Arc;

use envoy_proto::{Message, Rstatfs, Tstatfs};

use crate::error::{FsError, FsResult};
use crate::namespace::NAME_MAX;
use crate::session::Conn;

/// `V9FS_MAGIC`.
pub const V9FS_MAGIC: u32 = 0x0102_1997;

/// Tstatfs.
pub fn statfs(c: &Arc<Conn>, m: Tstatfs) -> FsResult<Message> {
    let e = c.fids.get(m.fid)?;
    let dir = e.claim.fs().store().dir().to_path_buf();
    let v = nix::sys::statvfs::statvfs(&dir).map_err(|err| {
        FsError::Store(envoy_storage::StoreError::io(
            "statvfs of the store",
            std::io::Error::from(err),
        ))
    })?;
    let frsize = v.fragment_size().max(1);
    let scale = |n: u64| n.saturating_mul(frsize) / 4096;
    Ok(Rstatfs {
        ty: V9FS_MAGIC,
        bsize: 4096,
        blocks: scale(v.blocks()),
        bfree: scale(v.blocks_free()),
        bavail: scale(v.blocks_available()),
        files: v.files(),
        ffree: v.files_free(),
        fsid: v.filesystem_id(),
        namelen: NAME_MAX as u32,
    }
    .into())
}
