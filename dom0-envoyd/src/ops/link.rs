//! Symlinks, device nodes, hard links and renames: Tsymlink, Treadlink, Tmknod, Tlink,
//! Trename, Trenameat.
//!
//! Symlinks and special files are objects with defined contents (see
//! [`crate::namespace::special`]); the server never follows a link or opens a device.
//! Creating character or block devices needs root (`EPERM`), as `CAP_MKNOD` would.

use std::sync::Arc;

use envoy_proto::{
    Message, Rlink, Rmknod, Rreadlink, Rrename, Rrenameat, Rsymlink, Tlink, Tmknod, Treadlink,
    Trename, Trenameat, Tsymlink,
};
use envoy_storage::ObjectKind;

use crate::error::{FsError, FsResult};
use crate::namespace::{check_name, qid_of, special};
use crate::session::fids::FidEntry;
use crate::session::Conn;

/// Longest symlink target (Linux `PATH_MAX`).
pub const SYMLINK_MAX: usize = 4096;

/// Renames and links stay inside one attach (one mount): `EXDEV` otherwise, so a client
/// cannot move a file into another image it also attached.
pub fn same_attach(a: &FidEntry, b: &FidEntry) -> FsResult<()> {
    if Arc::ptr_eq(&a.root, &b.root) {
        Ok(())
    } else {
        Err(FsError::CrossDevice)
    }
}

/// Tsymlink.
pub fn symlink(c: &Arc<Conn>, m: Tsymlink) -> FsResult<Message> {
    let e = c.fids.get_writable(m.fid)?;
    let name = check_name(&m.name)?;
    if m.symtgt.is_empty() {
        return Err(FsError::NotFound);
    }
    if m.symtgt.len() > SYMLINK_MAX {
        return Err(FsError::NameTooLong);
    }
    let fs = e.claim.fs();
    let claim = fs.create_with_gid(
        &e.claim,
        name,
        ObjectKind::Symlink,
        0o777,
        e.cred,
        m.gid,
        Some(m.symtgt.as_bytes()),
    )?;
    let qid = qid_of(&fs.stat(claim.node())?);
    Ok(Rsymlink { qid }.into())
}

/// Treadlink.
pub fn readlink(c: &Arc<Conn>, m: Treadlink) -> FsResult<Message> {
    let e = c.fids.get(m.fid)?;
    if e.node().kind() != ObjectKind::Symlink {
        return Err(FsError::Inval("not a symlink"));
    }
    let data = e.claim.fs().read(e.node(), 0, SYMLINK_MAX)?;
    let target = String::from_utf8_lossy(&data).replace('\0', "");
    Ok(Rreadlink { target }.into())
}

/// Tmknod: FIFOs, sockets, devices (root only) and regular files.
pub fn mknod(c: &Arc<Conn>, m: Tmknod) -> FsResult<Message> {
    let e = c.fids.get_writable(m.dfid)?;
    let name = check_name(&m.name)?;
    let kind = special::kind_from_mode(m.mode).ok_or(FsError::Inval("unknown file type"))?;
    let contents = match kind {
        ObjectKind::Directory | ObjectKind::Symlink => {
            return Err(FsError::Inval("mknod cannot make directories or symlinks"))
        }
        ObjectKind::CharDevice | ObjectKind::BlockDevice => {
            if !e.cred.is_root() {
                return Err(FsError::Perm);
            }
            special::device_contents(kind, m.major, m.minor)
        }
        _ => None,
    };
    let fs = e.claim.fs();
    let claim = fs.create_with_gid(
        &e.claim,
        name,
        kind,
        m.mode & 0o7777,
        e.cred,
        m.gid,
        contents.as_deref().map(str::as_bytes),
    )?;
    let qid = qid_of(&fs.stat(claim.node())?);
    Ok(Rmknod { qid }.into())
}

/// Tlink: a second, frozen name for fid's file (§5.4.5).
pub fn link(c: &Arc<Conn>, m: Tlink) -> FsResult<Message> {
    let d = c.fids.get_writable(m.dfid)?;
    let t = c.fids.get_writable(m.fid)?;
    let name = check_name(&m.name)?;
    same_attach(&d, &t)?;
    d.claim.fs().link(d.node(), name, t.node(), d.cred)?;
    Ok(Rlink {}.into())
}

/// Trename: move fid's file into dfid as `name`; the fid follows.
pub fn rename(c: &Arc<Conn>, m: Trename) -> FsResult<Message> {
    let e = c.fids.get_writable(m.fid)?;
    let d = c.fids.get_writable(m.dfid)?;
    let name = check_name(&m.name)?;
    same_attach(&e, &d)?;
    let node = e.node();
    if Arc::ptr_eq(node, &e.root) {
        return Err(FsError::Busy);
    }
    let (parent, old) = {
        let s = node.state();
        (s.parent.clone(), s.name.clone())
    };
    let parent = parent.ok_or(FsError::NotFound)?;
    e.claim.fs().rename(&parent, &old, d.node(), name, e.cred)?;
    Ok(Rrename {}.into())
}

/// Trenameat.
pub fn renameat(c: &Arc<Conn>, m: Trenameat) -> FsResult<Message> {
    let o = c.fids.get_writable(m.olddirfid)?;
    let n = c.fids.get_writable(m.newdirfid)?;
    let oname = check_name(&m.oldname)?;
    let nname = check_name(&m.newname)?;
    same_attach(&o, &n)?;
    o.claim
        .fs()
        .rename(o.node(), oname, n.node(), nname, o.cred)?;
    Ok(Rrenameat {}.into())
}
