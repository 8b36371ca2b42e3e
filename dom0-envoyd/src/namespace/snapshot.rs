//! The two namespace steps behind image snapshots and forks ([`crate::images`] orders them
//! and keeps the metadata). Both only write links: no object is copied on their path. The
//! copy happens at the first write below a frozen link, as every thaw does (§5.4.3,
//! [`Fs::thaw`]).

use std::sync::Arc;

use envoy_storage::ObjectId;

use super::node::{write, Node};
use super::Fs;
use crate::error::{FsError, FsResult};

impl Fs {
    /// Snapshots the image whose root is `head` (a child of administrative directory `admin`)
    /// as `admin/snap_name`, returning the snapshot's root object. The caller holds the
    /// image's gate exclusively, so no change of the image is in flight.
    ///
    /// §4.3.2: the head's root is frozen and set aside as the snapshot, and the head carries
    /// on as a frozen link to the same object, so its first write thaws it (clones the root
    /// with every entry frozen) and open fids follow the node to the copy. One update of
    /// `admin`: the head's link is frozen first, then the snapshot's link is added, in the
    /// same directory block when it has room (one page write); written in that order
    /// otherwise, so a crash between them leaves a frozen head and no snapshot, which is
    /// harmless. (Should a power failure keep only the snapshot's entry, the start-up scan
    /// freezes every name of an object that has several, [`super::gc`].) `admin`'s mtime is
    /// left to the caller ([`Fs::touch_dir_at`]).
    pub(crate) fn snapshot_root(
        &self,
        admin: &Arc<Node>,
        head: &Arc<Node>,
        snap_name: &[u8],
    ) -> FsResult<ObjectId> {
        let _a = write(&admin.dir_lock);
        let _h = write(&head.dir_lock);
        let _io = write(&head.io);
        let mut s = head.state();
        if !s.parent.as_ref().is_some_and(|p| Arc::ptr_eq(p, admin)) {
            return Err(FsError::NotFound);
        }
        let h_id = s.id;
        let mut ad = self.dir_owned(admin.id(), self.dir_data(admin.id())?);
        let hb = ad.set(&s.name, h_id, true).ok_or(FsError::NotFound)?;
        let sb = ad
            .insert_preferring(snap_name.to_vec(), h_id, true, hb)
            .map_err(|_| FsError::Exists)?;
        self.commit_dir(admin.id(), ad, &[hb, sb])?;
        s.cow = true;
        Ok(h_id)
    }

    /// Clears the copy-on-write flag of the head's link again when it still points at `root`,
    /// a snapshot root that the caller has just unlinked and that no other link references:
    /// the head is then its only user, and may change it in place instead of copying it (and
    /// leaving the original unreferenced). Returns whether it did. The caller holds the
    /// image's gate exclusively.
    pub(crate) fn unfreeze_head(
        &self,
        admin: &Arc<Node>,
        head: &Arc<Node>,
        root: ObjectId,
    ) -> FsResult<bool> {
        let _a = write(&admin.dir_lock);
        let _io = write(&head.io);
        let mut s = head.state();
        if !s.cow || s.id != root || !s.parent.as_ref().is_some_and(|p| Arc::ptr_eq(p, admin)) {
            return Ok(false);
        }
        // The root and what its unfrozen links name become writable: copies of them made
        // ahead of a change would go stale.
        self.discard_thaw_copies();
        let mut ad = self.dir_owned(admin.id(), self.dir_data(admin.id())?);
        let b = ad.set(&s.name, root, false).ok_or(FsError::NotFound)?;
        self.commit_dir(admin.id(), ad, &[b])?;
        s.cow = false;
        Ok(true)
    }

    /// Links a new image `admin/name` whose head starts as snapshot root `snapshot`: a
    /// frozen link to the same object, thawed (its root cloned) by the image's first write.
    /// `admin`'s mtime is left to the caller ([`Fs::touch_dir_at`]).
    pub(crate) fn fork_root(
        &self,
        snapshot: ObjectId,
        admin: &Arc<Node>,
        name: &[u8],
    ) -> FsResult<()> {
        self.insert_link(admin, name, snapshot, true)
    }
}
