//! Fork roots prepared ahead: after a fork of snapshot `S`, the background thread clones
//! `S`'s root, so that the next fork of `S` links a ready copy instead of cloning on the
//! operator's path. One copy is kept after a first fork; once a fork has used a ready copy
//! (`S` is a template forked again and again, one fork per new guest) up to [`POOL`], so a
//! burst of forks finds copies ready. The copies are made without the store's spare files,
//! which stay for the request paths.
//!
//! Why: the clone is the one store operation left on a fork's path that costs a rename (the
//! copy taking its place in the store), about half of a fork. Templates are forked again and
//! again (one fork per new guest), and a snapshot never changes, so a copy made a moment ago
//! is the copy a fork would make now. The first fork of a snapshot still clones on its path.
//!
//! Rules that keep this safe:
//! * a ready root is an unreferenced object until a fork links it, so a crash leaves only an
//!   object the start-up scan collects;
//! * deleting snapshot `S` (or its image) *retires* `S` first, under the image manager's
//!   operation lock: its ready root is deleted, and a clone of `S` finishing afterwards is
//!   deleted instead of kept. A root prepared from a snapshot whose objects are being freed
//!   can therefore never be linked;
//! * at most [`MAX_READY`] roots are kept in all (a newly forked snapshot takes the place of
//!   another's); shutdown deletes them.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use envoy_storage::ObjectId;

use crate::namespace::node::lock;
use crate::namespace::Fs;

/// Ready roots kept per snapshot.
pub const POOL: usize = 4;
/// Most ready roots kept at once, for all snapshots.
pub const MAX_READY: usize = 64;

/// Ready roots by the snapshot root they copy.
#[derive(Debug, Default)]
pub struct ReadyRoots {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_snapshot: HashMap<ObjectId, Vec<ObjectId>>,
    /// Snapshots a fork has taken a ready copy of: they get a full [`POOL`].
    hot: HashSet<ObjectId>,
    retired: HashSet<ObjectId>,
    total: usize,
}

impl ReadyRoots {
    /// Takes a ready copy of snapshot root `snapshot`, if there is one.
    pub fn take(&self, snapshot: ObjectId) -> Option<ObjectId> {
        let mut r = lock(&self.inner);
        let copy = r.by_snapshot.get_mut(&snapshot)?.pop();
        if copy.is_some() {
            r.total -= 1;
            r.hot.insert(snapshot);
        }
        copy
    }

    /// Background thread: clones `snapshot`'s root until one copy (or [`POOL`], for a
    /// snapshot forked from a ready copy before) is ready, unless the snapshot is retired.
    pub fn prepare(&self, fs: &Fs, snapshot: ObjectId) {
        loop {
            {
                let r = lock(&self.inner);
                let have = r.by_snapshot.get(&snapshot).map_or(0, Vec::len);
                let want = if r.hot.contains(&snapshot) { POOL } else { 1 };
                if have >= want || r.retired.contains(&snapshot) {
                    return;
                }
            }
            let copy = match fs.clone_root(snapshot, true) {
                Ok(id) => id,
                Err(e) => {
                    tracing::debug!(%snapshot, error = %e, "preparing a fork root failed; the next fork clones");
                    return;
                }
            };
            let discard = {
                let mut r = lock(&self.inner);
                if r.retired.contains(&snapshot) {
                    Some(copy)
                } else {
                    let evicted = if r.total >= MAX_READY {
                        r.evict_other(snapshot)
                    } else {
                        None
                    };
                    r.by_snapshot.entry(snapshot).or_default().push(copy);
                    r.total += 1;
                    evicted
                }
            };
            if let Some(id) = discard {
                free(fs, id);
                if lock(&self.inner).retired.contains(&snapshot) {
                    return;
                }
            }
        }
    }

    /// Snapshot root `snapshot` is being deleted: drop its ready copies, and never keep
    /// another.
    pub fn retire(&self, fs: &Fs, snapshot: ObjectId) {
        let copies = {
            let mut r = lock(&self.inner);
            r.retired.insert(snapshot);
            r.hot.remove(&snapshot);
            let v = r.by_snapshot.remove(&snapshot).unwrap_or_default();
            r.total -= v.len();
            v
        };
        for id in copies {
            free(fs, id);
        }
    }

    /// Deletes every ready copy (shutdown).
    pub fn clear(&self, fs: &Fs) {
        let all: Vec<ObjectId> = {
            let mut r = lock(&self.inner);
            r.total = 0;
            r.by_snapshot.drain().flat_map(|(_, c)| c).collect()
        };
        for id in all {
            free(fs, id);
        }
    }
}

impl Inner {
    /// Removes one ready copy of a snapshot other than `keep` (the pool is full).
    fn evict_other(&mut self, keep: ObjectId) -> Option<ObjectId> {
        let victim = *self
            .by_snapshot
            .iter()
            .find(|(s, v)| **s != keep && !v.is_empty())?
            .0;
        let copy = self.by_snapshot.get_mut(&victim)?.pop();
        if copy.is_some() {
            self.total -= 1;
        }
        copy
    }
}

fn free(fs: &Fs, id: ObjectId) {
    if let Err(e) = fs.delete_shared_object(id) {
        tracing::warn!(%id, error = %e, "deleting a prepared fork root failed; the next start collects it");
    }
}
