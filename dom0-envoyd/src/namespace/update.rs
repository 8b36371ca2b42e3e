//! Name-changing operations: create, unlink/rmdir, rename, hard link.
//!
//! Each runs under the exclusive `dir_lock` of the directories it changes (two for a rename
//! across directories, taken ancestor-first under `Fs::rename_lock`), after thawing them. The
//! write order on the store is the one in the durability table of [`super`].

use std::sync::{Arc, RwLockWriteGuard};

use bytes::Bytes;
use envoy_storage::dirfmt::{BlockError, DirEntry};
use envoy_storage::{Attributes, ObjectId, ObjectKind};

use super::dir::DirData;
use super::node::{self, lock, write, Node};
use super::perm::{self, Cred};
use super::{Claim, Fs};
use crate::error::{FsError, FsResult};

/// Which kinds `unlink` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveKind {
    /// `unlinkat(…, 0)`: anything but a directory (`EISDIR`).
    NotDir,
    /// `unlinkat(…, AT_REMOVEDIR)`: only an empty directory (`ENOTDIR`).
    Dir,
    /// 9P `Tremove`: either.
    Any,
}

fn block_err(e: BlockError) -> FsError {
    match e {
        BlockError::Duplicate(_) => FsError::Exists,
        BlockError::Name(_) => FsError::Inval("bad file name"),
        _ => FsError::Inval("directory entry does not fit"),
    }
}

/// A directory thawed, held under its exclusive `dir_lock` and checked for write and search
/// permission: what every single-directory name change starts from.
struct LockedDir<'a> {
    _guard: RwLockWriteGuard<'a, ()>,
    id: ObjectId,
    attr: Attributes,
    data: Arc<DirData>,
}

fn check_dir_usable(n: &Node) -> FsResult<()> {
    let s = n.state();
    if s.kind != ObjectKind::Directory {
        return Err(FsError::NotDir);
    }
    if s.orphan {
        return Err(FsError::NotFound);
    }
    Ok(())
}

impl Fs {
    /// Thaws `dir`, takes its update lock and checks that `cred` may add or remove names in
    /// it (write and search permission). `Ok(None)`: the directory was frozen again between
    /// the thaw and the lock (a snapshot raced us); the caller starts over.
    fn lock_dir_for_update<'a>(
        &self,
        dir: &'a Arc<Node>,
        cred: &Cred,
    ) -> FsResult<Option<LockedDir<'a>>> {
        self.thaw(dir)?;
        let guard = write(&dir.dir_lock);
        let (id, cow, orphan) = {
            let s = dir.state();
            (s.id, s.cow, s.orphan)
        };
        if orphan {
            return Err(FsError::NotFound);
        }
        if cow {
            return Ok(None);
        }
        let attr = self.store.attributes(id)?;
        perm::check(&attr, cred, perm::W | perm::X)?;
        let data = self.dir_data(id)?;
        Ok(Some(LockedDir {
            _guard: guard,
            id,
            attr,
            data,
        }))
    }
    /// Creates `name` in `dir` (an object of `kind` owned by `cred`, group `gid` or the
    /// directory's when it is setgid) and claims it. `contents` fills a symlink or device node.
    pub fn create(
        self: &Arc<Self>,
        dir: &Claim,
        name: &[u8],
        kind: ObjectKind,
        mode: u32,
        cred: Cred,
        contents: Option<&[u8]>,
    ) -> FsResult<Claim> {
        self.create_with_gid(dir, name, kind, mode, cred, cred.gid, contents)
    }

    /// [`Fs::create`] with an explicit group (9P2000.L passes one).
    #[allow(clippy::too_many_arguments)]
    pub fn create_with_gid(
        self: &Arc<Self>,
        dir: &Claim,
        name: &[u8],
        kind: ObjectKind,
        mode: u32,
        cred: Cred,
        gid: u32,
        contents: Option<&[u8]>,
    ) -> FsResult<Claim> {
        let dnode = dir.node();
        check_dir_usable(dnode)?;
        self.check_client_name(dnode, name)?;
        let mut prep = self.prepare_thaw(dnode);
        let _gate = self.enter_prepared(dnode, &mut prep)?;
        let area = match &dnode.area {
            node::Area::Admin => node::Area::Admin,
            other => other.clone(),
        };
        self.create_in(dir, name, kind, mode, cred, gid, contents, area)
    }

    /// Creates `name` in `dir` with the given area, without the client-name rules or the
    /// image gate: the image manager's own creates (its metadata files, image heads).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn create_in(
        self: &Arc<Self>,
        dir: &Claim,
        name: &[u8],
        kind: ObjectKind,
        mode: u32,
        cred: Cred,
        gid: u32,
        contents: Option<&[u8]>,
        area: node::Area,
    ) -> FsResult<Claim> {
        let dnode = dir.node();
        check_dir_usable(dnode)?;
        loop {
            let Some(locked) = self.lock_dir_for_update(dnode, &cred)? else {
                continue;
            };
            let (did, dattr, data) = (locked.id, &locked.attr, &*locked.data);
            if data.lookup(name).is_some() {
                return Err(FsError::Exists);
            }
            let mut attr = Attributes::new(kind, mode & 0o7777);
            attr.uid = cred.uid;
            attr.gid = if cred.is_root() || gid == cred.gid {
                gid
            } else {
                cred.gid
            };
            if dattr.mode & perm::S_ISGID != 0 {
                attr.gid = dattr.gid;
                if kind == ObjectKind::Directory {
                    attr.mode |= perm::S_ISGID;
                }
            }
            let id = self.alloc_id()?;
            // Order: the object first (an unreferenced object if we crash), then the entry.
            self.store.create_object(id, &attr)?;
            let filled = match contents {
                Some(c) if !c.is_empty() => self
                    .store
                    .write(id, 0, Bytes::copy_from_slice(c))
                    .map(|_| ()),
                _ => Ok(()),
            };
            let mut nd = self.dir_owned(did, locked.data);
            let linked = filled
                .map_err(FsError::from)
                .and_then(|()| nd.insert(name.to_vec(), id, false).map_err(block_err))
                .and_then(|b| self.commit_dir(did, nd, &[b]));
            if let Err(e) = linked {
                let _ = self.store.delete(id);
                return Err(e);
            }
            if !matches!(dnode.area, node::Area::Meta) {
                // Image metadata: nobody reads its directory's mtime; one syscall less per fork.
                self.touch_dir(did);
            }
            let node = Node::new(
                id,
                false,
                kind,
                Some(Arc::clone(dnode)),
                name.to_vec(),
                area,
            );
            lock(&dnode.children).insert(name.to_vec(), Arc::downgrade(&node));
            return Ok(self.claim(node));
        }
    }

    /// Detaches the name `name` (entry `e`, already removed from `dir`'s object): a live
    /// node becomes an orphan; the object is deleted now, at its last claim, or never (a
    /// copy-on-write link shares it).
    fn detach(&self, dir: &Node, name: &[u8], e: &DirEntry) {
        let live = lock(&dir.children).remove(name).and_then(|w| w.upgrade());
        let delete_now = match live {
            Some(n) => {
                let mut s = n.state();
                s.orphan = true;
                s.parent = None;
                if s.handles == 0 && !s.cow && !s.deleted {
                    s.deleted = true;
                    true
                } else {
                    if s.cow && s.handles > 0 && !s.deleted {
                        self.pin(s.id);
                    }
                    false
                }
            }
            None => !e.cow,
        };
        if delete_now {
            self.cache.remove(e.id);
            if let Err(err) = self.store.delete(e.id) {
                tracing::warn!(id = %e.id, error = %err, "deleting an unlinked object failed; the start-up scan will collect it");
            }
        }
    }

    /// Removes the entry `name` from `dir` without deleting its object (the image manager
    /// unlinking an image root or a snapshot, whose objects it frees itself). A live node for
    /// the name becomes an unlinked, copy-on-write node (its object is never deleted on its
    /// account). Returns the removed entry.
    pub(crate) fn remove_link(&self, dir: &Arc<Node>, name: &[u8]) -> FsResult<DirEntry> {
        let _g = write(&dir.dir_lock);
        let did = dir.id();
        let mut data = self.dir_owned(did, self.dir_data(did)?);
        let (e, block) = data.remove(name).ok_or(FsError::NotFound)?;
        self.commit_dir(did, data, &[block])?;
        self.touch_dir(did);
        if let Some(n) = lock(&dir.children).remove(name).and_then(|w| w.upgrade()) {
            let mut s = n.state();
            s.orphan = true;
            s.parent = None;
            s.cow = true;
            s.deleted = true;
        }
        Ok(e)
    }

    /// Inserts the entry `name` → `id` into `dir` (the image manager linking a snapshot or a
    /// new image root). Fails with `EEXIST` if the name is taken. Leaves `dir`'s mtime to the
    /// caller ([`Fs::touch_dir_at`]): the image manager sets it off its latency path.
    pub(crate) fn insert_link(
        &self,
        dir: &Arc<Node>,
        name: &[u8],
        id: ObjectId,
        cow: bool,
    ) -> FsResult<()> {
        let _g = write(&dir.dir_lock);
        let did = dir.id();
        let mut data = self.dir_owned(did, self.dir_data(did)?);
        let block = data.insert(name.to_vec(), id, cow).map_err(block_err)?;
        self.commit_dir(did, data, &[block])
    }

    /// Checks that directory object `id` (maybe claimed by `live`) is empty.
    fn check_empty(&self, id: ObjectId) -> FsResult<()> {
        if self.dir_data(id)?.is_empty() {
            Ok(())
        } else {
            Err(FsError::NotEmpty)
        }
    }

    /// Removes `name` from `dir`.
    pub fn unlink(
        self: &Arc<Self>,
        dir: &Arc<Node>,
        name: &[u8],
        what: RemoveKind,
        cred: Cred,
    ) -> FsResult<()> {
        check_dir_usable(dir)?;
        self.check_client_name(dir, name)?;
        let mut prep = self.prepare_thaw(dir);
        let _gate = self.enter_prepared(dir, &mut prep)?;
        self.unlink_in(dir, name, what, cred)
    }

    /// [`Fs::unlink`] without the client-name rules or the image gate (the image manager).
    pub(crate) fn unlink_in(
        &self,
        dir: &Arc<Node>,
        name: &[u8],
        what: RemoveKind,
        cred: Cred,
    ) -> FsResult<()> {
        check_dir_usable(dir)?;
        loop {
            let Some(locked) = self.lock_dir_for_update(dir, &cred)? else {
                continue;
            };
            let (did, data) = (locked.id, &*locked.data);
            let e = data.lookup(name).cloned().ok_or(FsError::NotFound)?;
            let vst = self.store.stat(e.id)?;
            let is_dir = vst.attr.kind == ObjectKind::Directory;
            match what {
                RemoveKind::NotDir if is_dir => return Err(FsError::IsDir),
                RemoveKind::Dir if !is_dir => return Err(FsError::NotDir),
                _ => {}
            }
            perm::check_sticky(&locked.attr, &vst.attr, &cred)?;
            let live = dir.child(name);
            let _cg = match (&live, is_dir) {
                (Some(n), true) => Some(write(&n.dir_lock)),
                _ => None,
            };
            if is_dir {
                self.check_empty(e.id)?;
            }
            let mut nd = self.dir_owned(did, locked.data);
            let (_, b) = nd.remove(name).ok_or(FsError::NotFound)?;
            // Order: the entry goes first (an unreferenced object if we crash), then the object.
            self.commit_dir(did, nd, &[b])?;
            self.touch_dir(did);
            drop(_cg);
            drop(live);
            self.detach(dir, name, &e);
            return Ok(());
        }
    }

    /// Renames `oname` in `odir` to `nname` in `ndir`, atomically replacing a compatible
    /// target (POSIX `rename`).
    pub fn rename(
        self: &Arc<Self>,
        odir: &Arc<Node>,
        oname: &[u8],
        ndir: &Arc<Node>,
        nname: &[u8],
        cred: Cred,
    ) -> FsResult<()> {
        check_dir_usable(odir)?;
        check_dir_usable(ndir)?;
        if !odir.area.same(&ndir.area) {
            return Err(FsError::CrossDevice);
        }
        self.check_client_name(odir, oname)?;
        self.check_client_name(ndir, nname)?;
        if matches!(odir.area, node::Area::Admin) {
            // The image journal records absolute paths (heads, origins): administrative
            // directories keep their names.
            if let Some(e) = self.dir_snapshot(odir)?.lookup(oname) {
                if self.store.attributes(e.id)?.kind == ObjectKind::Directory {
                    return Err(FsError::Perm);
                }
            }
        }
        let mut prep = self.prepare_thaw(odir);
        self.prepare_more(ndir, &mut prep);
        let _gate = self.enter_prepared(odir, &mut prep)?;
        self.rename_in(odir, oname, ndir, nname, cred)
    }

    /// [`Fs::rename`] without the area rules or the image gate (the image manager).
    pub(crate) fn rename_in(
        &self,
        odir: &Arc<Node>,
        oname: &[u8],
        ndir: &Arc<Node>,
        nname: &[u8],
        cred: Cred,
    ) -> FsResult<()> {
        check_dir_usable(odir)?;
        check_dir_usable(ndir)?;
        let same = Arc::ptr_eq(odir, ndir);
        loop {
            self.thaw(odir)?;
            self.thaw(ndir)?;
            let _rl = (!same).then(|| lock(&self.rename_lock));
            let (first, second) = if same {
                (odir, None)
            } else if odir.is_ancestor_of(ndir) {
                (odir, Some(ndir))
            } else if ndir.is_ancestor_of(odir) || ndir.serial < odir.serial {
                (ndir, Some(odir))
            } else {
                (odir, Some(ndir))
            };
            let _g1 = write(&first.dir_lock);
            let _g2 = second.map(|s| write(&s.dir_lock));
            let (oid, ocow, oorphan) = {
                let s = odir.state();
                (s.id, s.cow, s.orphan)
            };
            let (nid, ncow, norphan) = {
                let s = ndir.state();
                (s.id, s.cow, s.orphan)
            };
            if ocow || ncow {
                continue;
            }
            if oorphan || norphan {
                return Err(FsError::NotFound);
            }
            let oattr = self.store.attributes(oid)?;
            let nattr = if same {
                oattr
            } else {
                self.store.attributes(nid)?
            };
            perm::check(&oattr, &cred, perm::W | perm::X)?;
            perm::check(&nattr, &cred, perm::W | perm::X)?;
            let odata = self.dir_data(oid)?;
            let src = odata.lookup(oname).cloned().ok_or(FsError::NotFound)?;
            let sattr = self.store.attributes(src.id)?;
            let src_dir = sattr.kind == ObjectKind::Directory;
            perm::check_sticky(&oattr, &sattr, &cred)?;
            if same && oname == nname {
                return Ok(());
            }
            if src_dir && !same {
                // Never into its own subtree.
                let mut cur = Some(Arc::clone(ndir));
                while let Some(n) = cur {
                    if n.id() == src.id {
                        return Err(FsError::Inval("cannot move a directory into itself"));
                    }
                    cur = n.parent();
                }
                perm::check(&sattr, &cred, perm::W)?;
            }
            let ndata = if same {
                Arc::clone(&odata)
            } else {
                self.dir_data(nid)?
            };
            let target = ndata.lookup(nname).cloned();
            let tlive = target.as_ref().and_then(|_| ndir.child(nname));
            if tlive.as_ref().is_some_and(|t| t.is_ancestor_of(odir)) {
                // The target contains the source: not empty (and locking it would invert
                // the lock order).
                return Err(FsError::NotEmpty);
            }
            let _tg = tlive.as_ref().map(|n| write(&n.dir_lock));
            if let Some(t) = &target {
                if t.id == src.id {
                    return Ok(()); // two names of one object: POSIX says do nothing
                }
                let tattr = self.store.attributes(t.id)?;
                let tdir = tattr.kind == ObjectKind::Directory;
                if src_dir && !tdir {
                    return Err(FsError::NotDir);
                }
                if !src_dir && tdir {
                    return Err(FsError::IsDir);
                }
                if tdir {
                    self.check_empty(t.id)?;
                }
                perm::check_sticky(&nattr, &tattr, &cred)?;
            }
            // Order: the new name first, then the old name goes, then a replaced object.
            if same {
                let mut d = (*odata).clone();
                let b1 = match &target {
                    Some(_) => d.set(nname, src.id, src.cow).ok_or(FsError::NotFound)?,
                    None => d
                        .insert(nname.to_vec(), src.id, src.cow)
                        .map_err(block_err)?,
                };
                let (_, b2) = d.remove(oname).ok_or(FsError::NotFound)?;
                self.commit_dir(oid, d, &[b1, b2])?;
                self.touch_dir(oid);
            } else {
                let mut nd = (*ndata).clone();
                let b1 = match &target {
                    Some(_) => nd.set(nname, src.id, src.cow).ok_or(FsError::NotFound)?,
                    None => nd
                        .insert(nname.to_vec(), src.id, src.cow)
                        .map_err(block_err)?,
                };
                self.commit_dir(nid, nd, &[b1])?;
                let mut od = (*odata).clone();
                let (_, b2) = od.remove(oname).ok_or(FsError::NotFound)?;
                self.commit_dir(oid, od, &[b2])?;
                self.touch_dir(oid);
                self.touch_dir(nid);
            }
            drop(_tg);
            drop(tlive);
            if let Some(t) = &target {
                self.detach(ndir, nname, t);
            }
            let moved = lock(&odir.children).remove(oname).and_then(|w| w.upgrade());
            if let Some(n) = moved {
                {
                    let mut s = n.state();
                    s.parent = Some(Arc::clone(ndir));
                    s.name = nname.to_vec();
                }
                lock(&ndir.children).insert(nname.to_vec(), Arc::downgrade(&n));
            }
            return Ok(());
        }
    }

    /// Hard link (§5.4.5): freezes `target` (CoW on its link) and adds `name` in `dir` as a
    /// second frozen link to the same object. A later write through either name thaws that
    /// name alone, so the two diverge — Envoy's documented hard-link semantics.
    pub fn link(
        self: &Arc<Self>,
        dir: &Arc<Node>,
        name: &[u8],
        target: &Arc<Node>,
        cred: Cred,
    ) -> FsResult<()> {
        check_dir_usable(dir)?;
        if target.kind() == ObjectKind::Directory {
            return Err(FsError::Perm);
        }
        if !dir.area.same(&target.area) {
            return Err(FsError::CrossDevice);
        }
        self.check_client_name(dir, name)?;
        let mut prep = self.prepare_thaw(dir);
        let _gate = self.enter_prepared(dir, &mut prep)?;
        loop {
            self.freeze(target)?;
            let Some(locked) = self.lock_dir_for_update(dir, &cred)? else {
                continue;
            };
            let (did, data) = (locked.id, &*locked.data);
            if data.lookup(name).is_some() {
                return Err(FsError::Exists);
            }
            let (tid, tcow) = {
                let s = target.state();
                (s.id, s.cow)
            };
            if !tcow {
                continue; // written (thawed) in between: freeze the new object
            }
            let mut nd = self.dir_owned(did, locked.data);
            let b = nd.insert(name.to_vec(), tid, true).map_err(block_err)?;
            self.commit_dir(did, nd, &[b])?;
            self.touch_dir(did);
            return Ok(());
        }
    }
}
