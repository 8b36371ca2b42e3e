//! Freeze and thaw (§5.4.3, DESIGN invariant 2).
//!
//! *Freeze* sets the copy-on-write flag on one link: the object becomes read-only and may be
//! shared (snapshots, hard links). *Thaw* makes a frozen name writable again before its first
//! change: walk up to the nearest thawed ancestor, clone each frozen directory on the way
//! down (the store's clone sets the CoW flag on every entry of the copy, so the children stay
//! frozen until they are written), point the parent's link at the copy with the flag
//! cleared, and finally clone the target itself. The territory root is never frozen, so the
//! walk always ends locally.
//!
//! A node is writable when neither its own link nor any ancestor's link is frozen; [`Fs::thaw`]
//! establishes that, ancestors first.

use std::sync::Arc;

use envoy_storage::ObjectKind;

use super::node::{lock, write, Node};
use super::Fs;
use crate::error::{FsError, FsResult};

impl Fs {
    /// Copies the extended attributes of a thawed object onto its clone (nothing to do on a
    /// host without xattr support).
    pub(crate) fn copy_xattrs(
        &self,
        from: envoy_storage::ObjectId,
        to: envoy_storage::ObjectId,
    ) -> FsResult<()> {
        match self.store.xattr_copy(from, to) {
            Ok(()) => Ok(()),
            Err(e) if e.errno() == libc::EOPNOTSUPP => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Sets the CoW flag on `node`'s link (its object becomes shared/read-only). The parent
    /// directory is thawed first so the flag can be recorded.
    pub fn freeze(&self, node: &Arc<Node>) -> FsResult<()> {
        loop {
            let Some(parent) = node.parent() else {
                let s = node.state();
                if s.orphan {
                    return Err(FsError::NotFound);
                }
                // The territory root is never frozen.
                return Err(FsError::Busy);
            };
            self.thaw(&parent)?;
            let _d = write(&parent.dir_lock);
            let _io = write(&node.io);
            if parent.state().cow {
                continue; // frozen again meanwhile
            }
            let mut s = node.state();
            if !s.parent.as_ref().is_some_and(|p| Arc::ptr_eq(p, &parent)) {
                continue; // renamed meanwhile
            }
            if s.cow {
                return Ok(());
            }
            let mut data = (*self.dir_data(parent.id())?).clone();
            let block = data.set(&s.name, s.id, true).ok_or(FsError::NotFound)?;
            self.commit_dir(parent.id(), data, &[block])?;
            s.cow = true;
            return Ok(());
        }
    }

    /// Makes `node` writable: thaws every frozen ancestor, then the node itself (§5.4.3).
    pub fn thaw(&self, node: &Arc<Node>) -> FsResult<()> {
        loop {
            let (cow, parent) = {
                let s = node.state();
                (s.cow, s.parent.clone())
            };
            if let Some(p) = &parent {
                self.thaw(p)?;
            }
            if !cow {
                return Ok(());
            }
            let new_id = self.alloc_id()?;
            let Some(parent) = parent else {
                // An unlinked (orphan) frozen file: clone it privately, no link to update.
                let _io = write(&node.io);
                let mut s = node.state();
                if !s.cow {
                    return Ok(());
                }
                self.store.clone_object(s.id, new_id)?;
                self.copy_xattrs(s.id, new_id)?;
                let old = s.id;
                s.id = new_id;
                s.cow = false;
                drop(s);
                if self.unpin(old) {
                    // A snapshot deletion was waiting for this private reader.
                    let _ = self.delete_shared_object(old);
                }
                return Ok(());
            };
            let _d = write(&parent.dir_lock);
            let _own = (node.kind() == ObjectKind::Directory).then(|| write(&node.dir_lock));
            let _io = write(&node.io);
            if parent.state().cow {
                continue; // re-frozen meanwhile: start over
            }
            let mut s = node.state();
            if !s.parent.as_ref().is_some_and(|p| Arc::ptr_eq(p, &parent)) {
                continue; // renamed meanwhile: start over
            }
            if !s.cow {
                return Ok(());
            }
            let old = s.id;
            // Order: clone (an unreferenced copy if we crash now), then repoint the link.
            self.store.clone_object(old, new_id)?;
            if let Err(e) = self.copy_xattrs(old, new_id) {
                let _ = self.store.delete(new_id);
                return Err(e);
            }
            let mut data = (*self.dir_data(parent.id())?).clone();
            let block = data.set(&s.name, new_id, false).ok_or(FsError::NotFound)?;
            if let Err(e) = self.commit_dir(parent.id(), data, &[block]) {
                let _ = self.store.delete(new_id);
                return Err(e);
            }
            s.id = new_id;
            s.cow = false;
            tracing::debug!(old = %old, new = %new_id, "thawed");
            if s.kind == ObjectKind::Directory {
                // The copy's entries are all frozen now; so are the live children.
                drop(s);
                if let Ok(d) = self.dir_data(old) {
                    let mut d = (*d).clone();
                    d.set_cow_all();
                    self.cache.put(new_id, Arc::new(d));
                }
                for w in lock(&node.children).values() {
                    if let Some(c) = w.upgrade() {
                        c.state().cow = true;
                    }
                }
            }
            return Ok(());
        }
    }
}
