//! Freeze and thaw (§5.4.3, DESIGN invariant 2).
//!
//! *Freeze* sets the copy-on-write flag on one link: the object becomes read-only and may be
//! shared (snapshots, hard links). *Thaw* makes a frozen name writable again before its first
//! change: walk up to the nearest thawed ancestor, clone each frozen directory on the way
//! down (the store's clone sets the CoW flag on every entry of the copy, so the children stay
//! frozen until they are written), point the parent's link at the copy with the flag
//! cleared, and finally clone the target itself. The territory root is never frozen, so the
//! walk always ends locally. (An image head may be: a snapshot or a fork freezes its link,
//! which lives in an administrative directory of the same territory.)
//!
//! A node is writable when neither its own link nor any ancestor's link is frozen; [`Fs::thaw`]
//! establishes that, ancestors first.
//!
//! # Copies made ahead, outside the image gate
//!
//! Repointing links must happen under the image's gate (a snapshot must not freeze the head
//! while a link below it changes), but copying a frozen object need not: it never changes.
//! So a change first makes the copies its thaw will need ([`Fs::prepare_thaw`]) and enters
//! the gate only then ([`Fs::enter_prepared`]); if a snapshot froze the path meanwhile, it
//! leaves the gate and copies again. The copies wait in one map, frozen object → copy, that
//! every thaw takes from, so no change holds the gate while the store copies and fsyncs, and
//! no snapshot waits for that. They rely on a frozen object never changing; the one exception,
//! a head's link unfrozen when its last snapshot goes ([`Fs::unfreeze_head`]), discards every
//! copy made before it (`Fs::copies_epoch`).
//!
//! # Durability of a thaw
//!
//! A copy is fsynced before a link points at it, but the repointed link itself is a block
//! write like any other. A client's `fsync` of a thawed file must also make durable every
//! directory above it whose link a thaw repointed, or after a power failure the synced file
//! would sit in a copy that nothing names. Those directories are remembered
//! (`Fs::relinked`) until [`Fs::sync`] of something below them, or the image manager's
//! background sync ([`Fs::sync_relinked`]), makes them durable.

use std::sync::Arc;

use envoy_storage::{ObjectId, ObjectKind};

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
            let mut data = self.dir_owned(parent.id(), self.dir_data(parent.id())?);
            let block = data.set(&s.name, s.id, true).ok_or(FsError::NotFound)?;
            self.commit_dir(parent.id(), data, &[block])?;
            s.cow = true;
            return Ok(());
        }
    }

    /// A copy of frozen object `old` (a directory's copy has every entry frozen): one made
    /// ahead ([`Fs::prepare_thaw`]), else a new one.
    fn clone_frozen(&self, old: ObjectId) -> FsResult<ObjectId> {
        if let Some(c) = lock(&self.thaw_copies).remove(&old) {
            return Ok(c);
        }
        self.copy_frozen(old)
    }

    /// A new copy of frozen object `old`. Needs no lock: a frozen object never changes.
    fn copy_frozen(&self, old: ObjectId) -> FsResult<ObjectId> {
        let new_id = self.alloc_id()?;
        self.store.clone_object(old, new_id)?;
        if let Err(e) = self.copy_xattrs(old, new_id) {
            let _ = self.store.delete(new_id);
            return Err(e);
        }
        Ok(new_id)
    }

    /// Copies, ahead of a change of `node` and outside the image gate, every frozen object the
    /// change will have to thaw: the topmost frozen link on the path from the root and every
    /// name below it down to `node` (see the module docs). A copy is of an immutable object,
    /// so it stays valid whatever happens meanwhile; one left unused (the path changed, or the
    /// change failed) is deleted when the [`Prepared`] is dropped.
    pub(crate) fn prepare_thaw(&self, node: &Arc<Node>) -> Prepared<'_> {
        let mut prep = Prepared {
            fs: self,
            made: Vec::new(),
        };
        self.prepare_more(node, &mut prep);
        prep
    }

    /// The frozen objects on `node`'s path that a thaw would copy: from `node` up to the
    /// topmost frozen link.
    fn frozen_on_path(node: &Arc<Node>) -> Vec<ObjectId> {
        // Most changes find nothing frozen: look first, without allocating.
        let mut any = false;
        let mut cur = Some(Arc::clone(node));
        while let Some(n) = cur {
            let s = n.state();
            any |= s.cow;
            cur = s.parent.clone();
        }
        if !any {
            return Vec::new();
        }
        // Then one walk that reads each link's flag with its object, so every object taken
        // is frozen, by its own link or one above, as read (a thaw may run meanwhile).
        let mut path = Vec::new();
        let mut cur = Some(Arc::clone(node));
        while let Some(n) = cur {
            let s = n.state();
            path.push((s.cow, s.id));
            cur = s.parent.clone();
        }
        match path.iter().rposition(|(cow, _)| *cow) {
            Some(top) => path[..=top].iter().map(|&(_, id)| id).collect(),
            None => Vec::new(),
        }
    }

    /// Discards every copy made ahead, and every copy being made now: objects that were
    /// frozen may change from now on ([`Fs::unfreeze_head`]).
    pub(crate) fn discard_thaw_copies(&self) {
        self.copies_epoch
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let stale: Vec<ObjectId> = lock(&self.thaw_copies).drain().map(|(_, c)| c).collect();
        for c in stale {
            let _ = self.store.delete(c);
        }
    }

    /// Adds to `prep` a copy of every frozen object on `node`'s path that has none yet.
    ///
    /// Each copy is fsynced before it may be linked. Made side by side (one thread each), their
    /// fsyncs share ext4 journal commits instead of waiting for one commit apiece: a fork's
    /// first write copies its root, a directory and a file.
    pub(crate) fn prepare_more<'a>(&'a self, node: &Arc<Node>, prep: &mut Prepared<'a>) {
        let epoch = self.copies_epoch.load(std::sync::atomic::Ordering::SeqCst);
        let frozen = Fs::frozen_on_path(node);
        if frozen.is_empty() {
            return; // the common case: nothing to copy, and the shared map is left alone
        }
        let wanted: Vec<ObjectId> = {
            let copies = lock(&self.thaw_copies);
            frozen
                .into_iter()
                .filter(|id| !copies.contains_key(id))
                .collect()
        };
        let Some((&first, rest)) = wanted.split_first() else {
            return;
        };
        // A copy that fails is left to the thaw, which tries again and reports the error.
        let made: Vec<(ObjectId, Option<ObjectId>)> = std::thread::scope(|scope| {
            let others: Vec<_> = rest
                .iter()
                .map(|&id| {
                    let h = std::thread::Builder::new()
                        .name("envoy-thaw-copy".into())
                        .spawn_scoped(scope, move || self.copy_frozen(id).ok());
                    (id, h)
                })
                .collect();
            let mut made = vec![(first, self.copy_frozen(first).ok())];
            for (id, h) in others {
                let c = match h {
                    Ok(h) => h.join().ok().flatten(),
                    Err(_) => self.copy_frozen(id).ok(), // no thread: copy here
                };
                made.push((id, c));
            }
            made
        });
        for (id, c) in made {
            let Some(c) = c else {
                continue;
            };
            let mut copies = lock(&self.thaw_copies);
            if self.copies_epoch.load(std::sync::atomic::Ordering::SeqCst) != epoch {
                // A head was unfrozen meanwhile: what we copied may have changed since.
                drop(copies);
                let _ = self.store.delete(c);
                continue;
            }
            match copies.entry(id) {
                std::collections::hash_map::Entry::Occupied(_) => {
                    drop(copies);
                    let _ = self.store.delete(c); // another change made one meanwhile
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(c);
                    prep.made.push(id);
                }
            }
        }
    }

    /// Enters `node`'s image gate ([`Fs::enter`]) with a copy made of everything the change
    /// will thaw. If a snapshot froze the path after `prep` was made, leaves the gate and
    /// copies the rest first: a few rounds at most, then the thaw copies under the gate.
    pub(crate) fn enter_prepared<'a>(
        &'a self,
        node: &'a Arc<Node>,
        prep: &mut Prepared<'a>,
    ) -> FsResult<Option<std::sync::RwLockReadGuard<'a, ()>>> {
        for _ in 0..3 {
            let gate = Fs::enter(node)?;
            let frozen = Fs::frozen_on_path(node);
            let missing = !frozen.is_empty() && {
                let copies = lock(&self.thaw_copies);
                frozen.iter().any(|id| !copies.contains_key(id))
            };
            if !missing {
                return Ok(gate);
            }
            drop(gate);
            self.prepare_more(node, prep);
        }
        Fs::enter(node)
    }

    /// Makes `node` writable: thaws every frozen ancestor, then the node itself (§5.4.3),
    /// using the copies made ahead where there are some.
    ///
    /// Order for each frozen name: copy the object (an unreferenced copy if we crash now),
    /// then, under the parent's lock and after checking that nothing changed, repoint the link.
    pub fn thaw(&self, node: &Arc<Node>) -> FsResult<()> {
        loop {
            if let Some(p) = node.parent() {
                self.thaw(&p)?;
            }
            let (cow, parent, old) = {
                let s = node.state();
                (s.cow, s.parent.clone(), s.id)
            };
            if !cow {
                return Ok(());
            }
            let new_id = self.clone_frozen(old)?;
            let discard = || {
                let _ = self.store.delete(new_id);
            };
            let Some(parent) = parent else {
                // An unlinked (orphan) frozen file: its private copy needs no link.
                let _io = write(&node.io);
                let mut s = node.state();
                if !s.cow || s.id != old {
                    discard();
                    if s.cow {
                        continue;
                    }
                    return Ok(());
                }
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
                discard();
                continue; // re-frozen meanwhile: start over
            }
            let mut s = node.state();
            if !s.parent.as_ref().is_some_and(|p| Arc::ptr_eq(p, &parent)) || s.id != old {
                discard();
                if !s.cow {
                    return Ok(());
                }
                continue; // renamed or thawed meanwhile: start over
            }
            if !s.cow {
                discard();
                return Ok(());
            }
            let mut data = self.dir_owned(parent.id(), self.dir_data(parent.id())?);
            let Some(block) = data.set(&s.name, new_id, false) else {
                discard();
                return Err(FsError::NotFound);
            };
            if let Err(e) = self.commit_dir(parent.id(), data, &[block]) {
                discard();
                return Err(e);
            }
            lock(&self.relinked).insert(parent.id());
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

/// The copies one change made ahead ([`Fs::prepare_thaw`]): those its thaw did not use are
/// deleted on drop.
#[derive(Debug)]
pub struct Prepared<'a> {
    fs: &'a Fs,
    /// Frozen objects this change added a copy of.
    made: Vec<ObjectId>,
}

impl Drop for Prepared<'_> {
    fn drop(&mut self) {
        for old in self.made.drain(..) {
            let Some(c) = lock(&self.fs.thaw_copies).remove(&old) else {
                continue; // used by a thaw
            };
            if let Err(e) = self.fs.store.delete(c) {
                tracing::warn!(id = %c, error = %e, "deleting an unused thaw copy failed; the start-up scan will collect it");
            }
        }
    }
}
