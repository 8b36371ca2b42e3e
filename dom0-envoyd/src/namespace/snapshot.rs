//! The two namespace steps behind image snapshots and forks ([`crate::images`] orders them
//! and keeps the metadata).

use std::sync::Arc;

use envoy_storage::ObjectId;

use super::node::{lock, write, Node};
use super::Fs;
use crate::error::{FsError, FsResult};

impl Fs {
    /// Snapshots the image whose root is `head` (a child of administrative directory `admin`)
    /// as `admin/snap_name`, returning the snapshot's root object. The caller holds the
    /// image's gate exclusively, so no change of the image is in flight.
    ///
    /// Steps (each a crash point, see [`crate::images`]): clone the head's root object into
    /// the snapshot's (every entry of the copy copy-on-write); set copy-on-write on every
    /// entry of the head's root in place; link the snapshot, frozen. `admin`'s mtime is left
    /// to the caller ([`Fs::touch_dir_at`]), as in [`Fs::fork_root`].
    pub(crate) fn snapshot_root(
        &self,
        admin: &Arc<Node>,
        head: &Arc<Node>,
        snap_name: &[u8],
    ) -> FsResult<ObjectId> {
        let _a = write(&admin.dir_lock);
        let _h = write(&head.dir_lock);
        let _io = write(&head.io);
        let h_id = head.id();
        let s_id = self.alloc_id()?;
        self.store.clone_object_unsynced(h_id, s_id)?;
        let undo = |e: FsError| {
            let _ = self.store.delete(s_id);
            e
        };
        self.copy_xattrs(h_id, s_id).map_err(undo)?;
        let mut hd = self.dir_owned(h_id, self.dir_data(h_id).map_err(undo)?);
        hd.set_cow_all();
        let blocks: Vec<usize> = (0..hd.block_count()).collect();
        self.commit_dir(h_id, hd, &blocks).map_err(undo)?;
        for w in lock(&head.children).values() {
            if let Some(c) = w.upgrade() {
                c.state().cow = true;
            }
        }
        let mut ad = self.dir_owned(admin.id(), self.dir_data(admin.id()).map_err(undo)?);
        let b = ad
            .insert(snap_name.to_vec(), s_id, true)
            .map_err(|_| undo(FsError::Exists))?;
        self.commit_dir(admin.id(), ad, &[b]).map_err(undo)?;
        Ok(s_id)
    }

    /// Makes the root of a new image `admin/name` from snapshot root `snapshot`: a clone (its
    /// entries copy-on-write, shared with the snapshot), linked thawed, so the image root is
    /// writable from the start. Returns the new root object. `admin`'s mtime is left to the
    /// caller ([`Fs::touch_dir_at`]).
    pub(crate) fn fork_root(
        &self,
        snapshot: ObjectId,
        admin: &Arc<Node>,
        name: &[u8],
    ) -> FsResult<ObjectId> {
        let f_id = self.clone_root(snapshot, false)?;
        if let Err(e) = self.link_root(admin, name, f_id) {
            let _ = self.store.delete(f_id);
            return Err(e);
        }
        Ok(f_id)
    }

    /// The first half of [`Fs::fork_root`]: a writable copy of snapshot root `snapshot`,
    /// linked nowhere yet. Until [`Fs::link_root`] links it, it is an unreferenced object,
    /// which the start-up scan collects after a crash. `ahead`: made in the background before
    /// it is needed, so it leaves the store's spare files to the request paths.
    pub(crate) fn clone_root(&self, snapshot: ObjectId, ahead: bool) -> FsResult<ObjectId> {
        let f_id = self.alloc_id()?;
        if ahead {
            self.store
                .clone_object_unsynced_without_spare(snapshot, f_id)?;
        } else {
            self.store.clone_object_unsynced(snapshot, f_id)?;
        }
        if let Err(e) = self.copy_xattrs(snapshot, f_id) {
            let _ = self.store.delete(f_id);
            return Err(e);
        }
        Ok(f_id)
    }

    /// The second half of [`Fs::fork_root`]: links `root` (made by [`Fs::clone_root`]) as
    /// `admin/name`, thawed. On failure the caller still owns `root`.
    pub(crate) fn link_root(&self, admin: &Arc<Node>, name: &[u8], root: ObjectId) -> FsResult<()> {
        self.insert_link(admin, name, root, false)
    }
}
