//! Deleting snapshots and images with catalogues (§4.3.3), and finishing what a crash
//! interrupted.
//!
//! # Deleting snapshot N of image `web`
//!
//! 1. Refuse if the registry's log of forks says N was forked (it then has more than one
//!    successor), or if a client has it open.
//! 2. Catalogues: `cat(N)`, its predecessor's (the previous snapshot; for the first snapshot of
//!    a fork, the snapshot it was forked from; else empty) and its successor's (the next
//!    snapshot, or the live head, walked with the image's gate held exclusively so that no
//!    rename or link moves a reference past the walk). Snapshot catalogues are stored
//!    (`web@N@cat`) and reused: snapshots never change.
//! 3. `doomed = cat(N) − cat(pred) − cat(succ)`: an object leaves an image's history only
//!    once (nothing re-links an unreachable object, and nothing links across images), so an
//!    object of N in neither neighbour is in no other snapshot, head or fork.
//! 4. Write the intent record `web@N@doomed` (the doomed IDs) and sync it.
//! 5. Unlink `web@N` and sync the directory: the commit point. If the head still shares
//!    N's root through its frozen link (it has not changed since) and no other snapshot or
//!    origin shares it, unfreeze the head's link: the head is the root's only user now.
//! 6. Free the doomed objects (an object an unlinked open file still reads goes at that
//!    file's last release).
//! 7. Remove `web@N@cat` and the intent record.
//!
//! A crash before 5 leaves the snapshot and an intent record, which the next start removes;
//! after 5, the next start finds the record without the snapshot and finishes 6–7. Freeing
//! tolerates objects already gone (the start-up scan may have collected them).
//!
//! # Deleting image `web`
//!
//! The same with `doomed = (cat(head) ∪ cat(every snapshot)) − cat(origin)`, the record
//! `web@@doomed`, and the head's link as the commit point; the snapshots' links and the
//! registry's `delete` record (which also ends its entry in the log of forks) follow. Refused
//! while any snapshot of the image has forks.

use std::sync::Arc;

use envoy_storage::{ObjectId, StoreUsage};

use super::catalogue;
use super::registry::Record;
use super::{fs_err, ImageError, ImagePath, Images, Progress, ROOT};
use crate::error::FsError;
use crate::namespace::area::{split_snapshot, META_DIR};
use crate::namespace::node::{lock, write, Node};
use crate::namespace::update::RemoveKind;
use crate::namespace::Claim;

/// What a deletion freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteReport {
    /// Objects deleted from the store.
    pub objects_freed: u64,
    /// Store bytes given back (`before.bytes − after.bytes`).
    pub bytes_freed: u64,
    /// The store before.
    pub before: StoreUsage,
    /// The store after.
    pub after: StoreUsage,
}

/// Whether anyone but the caller (holding `own` claims) uses `node` or anything below it.
fn in_use(node: &Arc<Node>, own: usize) -> bool {
    node.state().handles > own || lock(&node.children).values().any(|w| w.strong_count() > 0)
}

impl Images {
    /// Deletes snapshot `snap` (`/…/web@N`) and frees the objects no other version uses.
    pub fn delete_snapshot(
        &self,
        snap: &str,
        progress: &dyn Fn(&Progress),
    ) -> Result<DeleteReport, ImageError> {
        let p = ImagePath::parse(snap)?;
        let Some(n) = p.snapshot else {
            return Err(ImageError::NotAllowed(format!(
                "{snap} is an image head, not a snapshot: delete a whole image with `envoyctl image delete`"
            )));
        };
        let _op = lock(&self.op);
        let before = self.usage()?;
        let (admin, head) = self.open_head(&p).map_err(|e| match e {
            ImageError::NoImage(_) => ImageError::NoSnapshot(p.display()),
            e => e,
        })?;
        let snaps = self.snapshot_numbers(&admin, &p.name)?;
        let s_id = snaps
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, id)| *id)
            .ok_or_else(|| ImageError::NoSnapshot(p.display()))?;
        let meta_dir = self.meta_dir(&admin, true)?;
        let origin = self
            .origin_of(&p.head())
            .ok_or_else(|| ImageError::NoImage(p.head()))?;
        let forks = self.fs.image_table().forks_of(&p.display());
        if !forks.is_empty() {
            return Err(ImageError::HasForks {
                what: p.display(),
                forks: forks.join(", "),
            });
        }
        let snap_name = format!("{}@{n}", p.name);
        if let Some(live) = admin.node().child(snap_name.as_bytes()) {
            if in_use(&live, 0) {
                return Err(ImageError::Busy(p.display()));
            }
        }

        lock(&self.next_snapshot).remove(&p.head());
        let cat_n = self.snapshot_catalogue(&meta_dir, &p.name, n, s_id, progress)?;
        let origin_root = match &origin {
            Some(o) => Some(self.snapshot_root_of(o)?),
            None => None,
        };
        let pred = match snaps.iter().rev().find(|(k, _)| *k < n) {
            Some(&(k, id)) => self.snapshot_catalogue(&meta_dir, &p.name, k, id, progress)?,
            None => match &origin {
                Some(o) => self.origin_catalogue(o, progress)?,
                None => Vec::new(),
            },
        };
        let succ = match snaps.iter().find(|(k, _)| *k > n) {
            Some(&(k, id)) => self.snapshot_catalogue(&meta_dir, &p.name, k, id, progress)?,
            None => self.head_catalogue(&head, progress)?,
        };
        drop(head);
        let doomed = catalogue::difference(&cat_n, &pred, &succ);

        let record = format!("{snap_name}@doomed");
        self.write_record(&meta_dir, &record, &doomed)?;
        self.crash_point("snapshot-delete:recorded")?;
        self.fs
            .remove_link(admin.node(), snap_name.as_bytes())
            .map_err(|e| fs_err(format!("unlinking {}", p.display()))(e))?;
        self.sync_now(admin.node().id())?;
        self.crash_point("snapshot-delete:unlinked")?;
        // A head unchanged since this snapshot still shares its root through a frozen link.
        // If no other snapshot shares it (nor the snapshot this image was forked from), the
        // head is its only user now: unfreeze the link, so the head's next write changes the
        // root in place instead of copying it and leaving the original unreferenced.
        let shared_elsewhere =
            snaps.iter().any(|&(k, id)| k != n && id == s_id) || origin_root == Some(s_id);
        // Only a saving: if it fails, the deletion goes on and the head stays frozen.
        if !shared_elsewhere {
            if let Ok((admin, head)) = self.open_head(&p) {
                if let Some(scope) = head.node().area.scope().cloned() {
                    let _gate = write(&scope.gate);
                    if let Err(e) = self.fs.unfreeze_head(admin.node(), head.node(), s_id) {
                        tracing::warn!(image = %p.head(), error = %e, "could not unfreeze the head after deleting its snapshot; its next write copies");
                    }
                }
            }
        }
        tracing::info!(snapshot = %p.display(), doomed = doomed.len(), "snapshot unlinked; freeing its objects");
        let freed = self.free_objects(&doomed, progress)?;
        self.remove_meta_file(&meta_dir, &format!("{snap_name}@cat"))?;
        self.remove_meta_file(&meta_dir, &record)?;
        let after = self.usage()?;
        Ok(DeleteReport {
            objects_freed: freed,
            bytes_freed: before.bytes.saturating_sub(after.bytes),
            before,
            after,
        })
    }

    /// Deletes image `head` with all its snapshots and frees what no other image uses.
    pub fn delete_image(
        &self,
        head_path: &str,
        progress: &dyn Fn(&Progress),
    ) -> Result<DeleteReport, ImageError> {
        let p = ImagePath::parse(head_path)?;
        if p.snapshot.is_some() {
            return Err(ImageError::NotAllowed(format!(
                "{head_path} is a snapshot: delete it with `envoyctl snapshot delete`"
            )));
        }
        let _op = lock(&self.op);
        let before = self.usage()?;
        let (admin, head) = self.open_head(&p)?;
        let meta_dir = self.meta_dir(&admin, true)?;
        let origin = self
            .origin_of(&p.head())
            .ok_or_else(|| ImageError::NoImage(p.head()))?;
        let forks: Vec<String> = self
            .forks_of_image(&p.head())
            .into_iter()
            .map(|(n, f)| format!("{f} from @{n}"))
            .collect();
        if !forks.is_empty() {
            return Err(ImageError::HasForks {
                what: p.head(),
                forks: forks.join(", "),
            });
        }
        if in_use(head.node(), 1) {
            return Err(ImageError::Busy(p.head()));
        }
        let snaps = self.snapshot_numbers(&admin, &p.name)?;
        for (k, _) in &snaps {
            if let Some(live) = admin.node().child(format!("{}@{k}", p.name).as_bytes()) {
                if in_use(&live, 0) {
                    return Err(ImageError::Busy(p.snapshot_path(*k)));
                }
            }
        }
        lock(&self.next_snapshot).remove(&p.head());
        let mut cats = vec![self.head_catalogue(&head, progress)?];
        for &(k, id) in &snaps {
            cats.push(self.snapshot_catalogue(&meta_dir, &p.name, k, id, progress)?);
        }
        drop(head);
        let all = catalogue::union(&cats);
        drop(cats);
        let keep = match &origin {
            Some(o) => self.origin_catalogue(o, progress)?,
            None => Vec::new(),
        };
        let doomed = catalogue::difference(&all, &keep, &[]);

        let record = format!("{}@@doomed", p.name);
        self.write_record(&meta_dir, &record, &doomed)?;
        self.crash_point("image-delete:recorded")?;
        self.fs
            .remove_link(admin.node(), p.name.as_bytes())
            .map_err(|e| fs_err(format!("unlinking {}", p.head()))(e))?;
        self.sync_now(admin.node().id())?;
        self.crash_point("image-delete:unlinked")?;
        tracing::info!(image = %p.head(), doomed = doomed.len(), "image unlinked; freeing its objects");
        let freed = self.finish_image_delete(&admin, &meta_dir, &p.name, &doomed, progress)?;
        let after = self.usage()?;
        Ok(DeleteReport {
            objects_freed: freed,
            bytes_freed: before.bytes.saturating_sub(after.bytes),
            before,
            after,
        })
    }

    /// Steps after an image's head is unlinked (also run by recovery).
    fn finish_image_delete(
        &self,
        admin: &Claim,
        meta_dir: &Claim,
        name: &str,
        doomed: &[u64],
        progress: &dyn Fn(&Progress),
    ) -> Result<u64, ImageError> {
        for (k, _) in self.snapshot_numbers(admin, name)? {
            match self
                .fs
                .remove_link(admin.node(), format!("{name}@{k}").as_bytes())
            {
                Ok(_) | Err(FsError::NotFound) => {}
                Err(e) => return Err(fs_err(format!("unlinking snapshot {name}@{k}"))(e)),
            }
        }
        let freed = self.free_objects(doomed, progress)?;
        let leftovers: Vec<String> = self
            .fs
            .dir_snapshot(meta_dir.node())
            .map_err(fs_err("reading image metadata"))?
            .entries()
            .map(|e| String::from_utf8_lossy(&e.name).into_owned())
            .filter(|f| f.starts_with(&format!("{name}@")) && f.ends_with("@cat"))
            .collect();
        for f in leftovers {
            self.remove_meta_file(meta_dir, &f)?;
        }
        let journal = self.record(Record::Delete {
            head: self.head_path_of(admin, name),
        })?;
        self.sync_now(journal)?;
        self.remove_meta_file(meta_dir, &format!("{name}@@doomed"))?;
        Ok(freed)
    }

    fn head_path_of(&self, admin: &Claim, name: &str) -> String {
        let a = admin.node().path();
        if a == "/" {
            format!("/{name}")
        } else {
            format!("{a}/{name}")
        }
    }

    /// The catalogue of snapshot `name@k` (object `root`): stored, or computed and stored.
    fn snapshot_catalogue(
        &self,
        meta_dir: &Claim,
        name: &str,
        k: u32,
        root: ObjectId,
        progress: &dyn Fn(&Progress),
    ) -> Result<Vec<u64>, ImageError> {
        let file = format!("{name}@{k}@cat");
        if let Some(bytes) = self
            .read_file(meta_dir, &file)
            .map_err(|e| fs_err(format!("reading catalogue {file}"))(e))?
        {
            match catalogue::decode(&bytes) {
                Ok(c) if c.binary_search(&root.0).is_ok() => return Ok(c),
                _ => tracing::warn!(%file, "stored catalogue is damaged; recomputing it"),
            }
        }
        let ids = catalogue::walk(&self.fs, root, &|done| {
            progress(&Progress {
                phase: "catalogue",
                done,
                total: 0,
            })
        })
        .map_err(|e| fs_err(format!("listing the objects of {name}@{k}"))(e))?;
        self.write_file(meta_dir, &file, &catalogue::encode(&ids))?;
        Ok(ids)
    }

    /// The catalogue of the snapshot a fork started from.
    fn origin_catalogue(
        &self,
        origin: &str,
        progress: &dyn Fn(&Progress),
    ) -> Result<Vec<u64>, ImageError> {
        let o = ImagePath::parse(origin)?;
        let k = o
            .snapshot
            .ok_or_else(|| ImageError::NoSnapshot(origin.to_string()))?;
        let id = self.snapshot_root_of(origin)?;
        let admin = self
            .admin_dir(&o.admin, false)
            .map_err(|_| ImageError::NoSnapshot(origin.to_string()))?;
        let meta_dir = self.meta_dir(&admin, true)?;
        self.snapshot_catalogue(&meta_dir, &o.name, k, id, progress)
    }

    /// The root object of snapshot `path` (`/…/web@N`).
    fn snapshot_root_of(&self, path: &str) -> Result<ObjectId, ImageError> {
        let o = ImagePath::parse(path)?;
        let k = o
            .snapshot
            .ok_or_else(|| ImageError::NoSnapshot(path.to_string()))?;
        let admin = self
            .admin_dir(&o.admin, false)
            .map_err(|_| ImageError::NoSnapshot(path.to_string()))?;
        self.snapshot_numbers(&admin, &o.name)?
            .into_iter()
            .find(|(n, _)| *n == k)
            .map(|(_, id)| id)
            .ok_or_else(|| ImageError::NoSnapshot(path.to_string()))
    }

    /// The live head's catalogue, walked with its gate held exclusively.
    fn head_catalogue(
        &self,
        head: &Claim,
        progress: &dyn Fn(&Progress),
    ) -> Result<Vec<u64>, ImageError> {
        let scope = head
            .node()
            .area
            .scope()
            .cloned()
            .ok_or_else(|| ImageError::NoImage(head.node().path()))?;
        let _gate = write(&scope.gate);
        catalogue::walk(&self.fs, head.node().id(), &|done| {
            progress(&Progress {
                phase: "catalogue",
                done,
                total: 0,
            })
        })
        .map_err(|e| fs_err(format!("listing the objects of {}", head.node().path()))(e))
    }

    /// Writes an intent record and makes it durable.
    fn write_record(&self, meta_dir: &Claim, name: &str, ids: &[u64]) -> Result<(), ImageError> {
        self.write_file(meta_dir, name, &catalogue::encode(ids))?;
        let f = self
            .fs
            .lookup(meta_dir.node(), name.as_bytes(), ROOT)
            .map_err(|e| fs_err(format!("opening {name}"))(e))?;
        self.sync_now(f.node().id())?;
        self.sync_now(meta_dir.node().id())
    }

    pub(super) fn sync_now(&self, id: ObjectId) -> Result<(), ImageError> {
        self.fs
            .store()
            .sync(id)
            .map_err(|e| fs_err("syncing the object store")(e.into()))
    }

    fn remove_meta_file(&self, meta_dir: &Claim, name: &str) -> Result<(), ImageError> {
        match self
            .fs
            .unlink_in(meta_dir.node(), name.as_bytes(), RemoveKind::NotDir, ROOT)
        {
            Ok(()) | Err(FsError::NotFound) => Ok(()),
            Err(e) => Err(fs_err(format!("removing {name}"))(e)),
        }
    }

    fn free_objects(&self, ids: &[u64], progress: &dyn Fn(&Progress)) -> Result<u64, ImageError> {
        let total = ids.len() as u64;
        // The phase is reported even when there is nothing to free, so an operator sees it.
        progress(&Progress {
            phase: "free",
            done: 0,
            total,
        });
        let mut freed = 0u64;
        for (i, &id) in ids.iter().enumerate() {
            if self
                .fs
                .delete_shared_object(ObjectId(id))
                .map_err(|e| fs_err(format!("freeing object {id}"))(e))?
            {
                freed += 1;
            }
            if i % 1024 == 0 || i as u64 + 1 == total {
                progress(&Progress {
                    phase: "free",
                    done: i as u64 + 1,
                    total,
                });
            }
        }
        Ok(freed)
    }

    /// Finishes or rolls back what a crash interrupted, in every administrative directory.
    pub(crate) fn recover(&self) -> Result<(), ImageError> {
        let _op = lock(&self.op);
        let mut stack = vec![self.fs.root()];
        while let Some(admin) = stack.pop() {
            let data = self
                .fs
                .dir_snapshot(admin.node())
                .map_err(|e| fs_err(format!("reading {}", admin.node().path()))(e))?;
            if data.lookup(META_DIR).is_some() {
                self.recover_dir(&admin)?;
            }
            let data = self
                .fs
                .dir_snapshot(admin.node())
                .map_err(|e| fs_err(format!("reading {}", admin.node().path()))(e))?;
            for e in data.entries() {
                if e.name.as_slice() == META_DIR || e.name.contains(&b'@') {
                    continue;
                }
                let Ok(st) = self.fs.store().stat(e.id) else {
                    continue;
                };
                if st.attr.kind != envoy_storage::ObjectKind::Directory {
                    continue;
                }
                if let Ok(child) = self.fs.lookup(admin.node(), &e.name, ROOT) {
                    if matches!(child.node().area, crate::namespace::node::Area::Admin) {
                        stack.push(child);
                    }
                }
            }
        }
        // Registered images without a head: a create, fork or import that never linked it.
        for (head, _) in self.fs.image_table().all() {
            let linked = match ImagePath::parse(&head) {
                Ok(p) => self.linked(&p)?.is_some(),
                Err(_) => false,
            };
            if !linked {
                tracing::warn!(image = %head, "removing the registration of an image that was never linked");
                self.record(Record::Delete { head })?;
            }
        }
        Ok(())
    }

    fn recover_dir(&self, admin: &Claim) -> Result<(), ImageError> {
        let meta_dir = self.meta_dir(admin, false)?;
        let names: Vec<(String, ObjectId)> = self
            .fs
            .dir_snapshot(meta_dir.node())
            .map_err(fs_err("reading image metadata"))?
            .entries()
            .map(|e| (String::from_utf8_lossy(&e.name).into_owned(), e.id))
            .collect();
        let linked = |n: &str| -> Result<Option<ObjectId>, ImageError> {
            Ok(self
                .fs
                .dir_snapshot(admin.node())
                .map_err(fs_err("reading an administrative directory"))?
                .lookup(n.as_bytes())
                .map(|e| e.id))
        };
        let path = admin.node().path();
        for (f, id) in &names {
            let parts: Vec<&str> = f.split('@').collect();
            match parts.as_slice() {
                [_, "new"] | ["", _, "new"] => self.remove_meta_file(&meta_dir, f)?,
                [img, "stage"] => {
                    if linked(img)? == Some(*id) {
                        // Published, but the staging link survived the crash.
                        self.fs
                            .remove_link(meta_dir.node(), f.as_bytes())
                            .map_err(fs_err("removing a published staging link"))?;
                    } else {
                        tracing::warn!(dir = %path, image = img, "removing an interrupted import");
                        self.discard_tree(meta_dir.node(), f, *id)?;
                    }
                }
                [img, n, "doomed"] if !n.is_empty() => {
                    if linked(&format!("{img}@{n}"))?.is_some() {
                        self.remove_meta_file(&meta_dir, f)?;
                    } else {
                        tracing::warn!(dir = %path, snapshot = %format!("{img}@{n}"), "finishing an interrupted snapshot deletion");
                        let ids = self.read_record(&meta_dir, f)?;
                        self.free_objects(&ids, &|_| {})?;
                        self.remove_meta_file(&meta_dir, &format!("{img}@{n}@cat"))?;
                        self.remove_meta_file(&meta_dir, f)?;
                    }
                }
                [img, "", "doomed"] => {
                    if linked(img)?.is_some() {
                        self.remove_meta_file(&meta_dir, f)?;
                    } else {
                        tracing::warn!(dir = %path, image = img, "finishing an interrupted image deletion");
                        let ids = self.read_record(&meta_dir, f)?;
                        self.finish_image_delete(admin, &meta_dir, img, &ids, &|_| {})?;
                    }
                }
                _ => {}
            }
        }
        // Files of the first design (a metadata file per image, a fork log per source),
        // moved to the registry's journal when this store was opened.
        let names: Vec<String> = self
            .fs
            .dir_snapshot(meta_dir.node())
            .map_err(fs_err("reading image metadata"))?
            .entries()
            .map(|e| String::from_utf8_lossy(&e.name).into_owned())
            .collect();
        for f in &names {
            let legacy =
                !f.contains('@') || f.strip_suffix("@forks").is_some_and(|n| !n.contains('@'));
            if legacy {
                tracing::info!(dir = %path, file = %f, "removing an old image metadata file (now in /.envoy/@images)");
                self.remove_meta_file(&meta_dir, f)?;
            }
        }
        // Catalogues of snapshots that no longer exist.
        for f in &names {
            if let [img, n, "cat"] = f.split('@').collect::<Vec<_>>().as_slice() {
                let snap = format!("{img}@{n}");
                if split_snapshot(snap.as_bytes()).is_some() && linked(&snap)?.is_none() {
                    self.remove_meta_file(&meta_dir, f)?;
                }
            }
        }
        Ok(())
    }

    fn read_record(&self, meta_dir: &Claim, name: &str) -> Result<Vec<u64>, ImageError> {
        let bytes = self
            .read_file(meta_dir, name)
            .map_err(|e| fs_err(format!("reading {name}"))(e))?
            .unwrap_or_default();
        catalogue::decode(&bytes).map_err(|e| fs_err(format!("decoding {name}"))(e))
    }
}
