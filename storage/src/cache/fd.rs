//! Bounded LRU of open object files.
//!
//! Values are `Arc<File>`: an operation clones the `Arc` and keeps it until its I/O completes,
//! so evicting (or invalidating on delete) never closes a descriptor under an in-flight
//! operation and a reused descriptor number can never be hit by a stale operation.

use std::fs::File;
use std::sync::{Arc, Mutex, PoisonError};

use super::lru::Lru;
use crate::object::ObjectId;

/// Open files by object ID.
#[derive(Debug)]
pub struct FdCache {
    inner: Mutex<Lru<ObjectId, Arc<File>>>,
}

impl FdCache {
    /// A cache of at most `capacity` descriptors.
    pub fn new(capacity: usize) -> Self {
        FdCache {
            inner: Mutex::new(Lru::new(capacity)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru<ObjectId, Arc<File>>> {
        // A panic elsewhere cannot leave the map inconsistent (every method is a few map
        // operations), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached file for `id`.
    pub fn get(&self, id: ObjectId) -> Option<Arc<File>> {
        self.lock().get(&id).cloned()
    }

    /// Caches `file` for `id`.
    pub fn insert(&self, id: ObjectId, file: Arc<File>) {
        // The evicted Arc is dropped after the lock is released.
        let evicted = self.lock().insert(id, file);
        drop(evicted);
    }

    /// Forgets `id` (after delete).
    pub fn remove(&self, id: ObjectId) {
        let old = self.lock().remove(&id);
        drop(old);
    }

    /// Number of cached descriptors.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicted_file_stays_usable_by_holder() {
        let dir = tempfile::tempdir().unwrap();
        let c = FdCache::new(1);
        let f1 = Arc::new(File::create(dir.path().join("a")).unwrap());
        c.insert(ObjectId(1), f1);
        let held = c.get(ObjectId(1)).unwrap();
        c.insert(
            ObjectId(2),
            Arc::new(File::create(dir.path().join("b")).unwrap()),
        );
        assert_eq!(c.len(), 1);
        assert!(c.get(ObjectId(1)).is_none());
        assert!(held.metadata().is_ok(), "descriptor still open");
    }
}
