//! Directories: Treaddir, Tmkdir, Tunlinkat, and 9P2000/.u directory reads.
//!
//! # Readdir offsets
//!
//! Rreaddir entries carry the offset to continue after them: `.` has 1, `..` has 2, and an
//! entry with directory-format cookie `k` has `k + 2`. Cookies never change while an entry
//! exists and new entries get larger cookies, so a listing continued from any offset neither
//! repeats nor loses an entry that existed throughout, whatever was added or removed in
//! between. A count too small for the next entry fails with `EINVAL` (an empty reply would
//! mean end of directory).
//!
//! 9P2000/.u reads return whole stat records (no `.`/`..`); the offset must be 0 (restart) or
//! where the previous read ended.

use std::sync::Arc;

use bytes::BytesMut;
use envoy_proto::{
    dirent_type, unlinkat, DirEntry, Message, Qid, Rmkdir, Rread, Rreaddir, Runlinkat, Tmkdir,
    Treaddir, Tunlinkat,
};
use envoy_storage::{Attributes, ObjectId, ObjectKind, ObjectStat};

use crate::error::{FsError, FsResult};
use crate::namespace::node::lock;
use crate::namespace::update::RemoveKind;
use crate::namespace::{check_name, qid_of};
use crate::ops::attr::stat_record;
use crate::session::fids::{FidEntry, OpenState};
use crate::session::Conn;

/// `DT_*` of a kind.
pub fn dtype(kind: ObjectKind) -> u8 {
    match kind {
        ObjectKind::Regular => dirent_type::REG,
        ObjectKind::Directory => dirent_type::DIR,
        ObjectKind::Symlink => dirent_type::LNK,
        ObjectKind::CharDevice => dirent_type::CHR,
        ObjectKind::BlockDevice => dirent_type::BLK,
        ObjectKind::Fifo => dirent_type::FIFO,
        ObjectKind::Socket => dirent_type::SOCK,
    }
}

/// The qid of object `id` with attributes `attr` (the same as [`qid_of`] of its stat).
fn qid_of_attr(id: ObjectId, attr: &Attributes) -> Qid {
    // qid_of reads only the id, kind and mtime.
    qid_of(&ObjectStat {
        id,
        attr: *attr,
        size: 0,
        ctime: attr.mtime,
        blocks: 0,
    })
}

fn open_dir(e: &FidEntry) -> FsResult<()> {
    match e.open_state() {
        OpenState::Open { .. } if e.node().kind() == ObjectKind::Directory => Ok(()),
        OpenState::Open { .. } => Err(FsError::NotDir),
        _ => Err(FsError::FidState("directory not open")),
    }
}

/// Treaddir.
pub fn readdir(c: &Arc<Conn>, m: Treaddir) -> FsResult<Message> {
    let e = c.fids.get(m.fid)?;
    open_dir(&e)?;
    let fs = e.claim.fs();
    let node = e.node();
    let max = m.count as usize;
    let mut buf = BytesMut::with_capacity(max.min(64 * 1024));
    let self_qid = qid_of(&fs.stat(node)?);
    let push = |ent: DirEntry, buf: &mut BytesMut| -> FsResult<bool> {
        let fits = ent
            .encode_if_fits(buf, max)
            .map_err(|_| FsError::Inval("entry does not encode"))?;
        if !fits && buf.is_empty() {
            return Err(FsError::Inval("readdir count too small for one entry"));
        }
        Ok(fits)
    };
    if m.offset == 0
        && !push(
            DirEntry {
                qid: self_qid,
                offset: 1,
                ty: dirent_type::DIR,
                name: ".".into(),
            },
            &mut buf,
        )?
    {
        return Ok(Rreaddir { data: buf.freeze() }.into());
    }
    if m.offset <= 1 {
        let pq = if Arc::ptr_eq(node, &e.root) {
            self_qid
        } else {
            match node.parent() {
                Some(p) => qid_of(&fs.stat(&p)?),
                None => self_qid,
            }
        };
        let ent = DirEntry {
            qid: pq,
            offset: 2,
            ty: dirent_type::DIR,
            name: "..".into(),
        };
        if !push(ent, &mut buf)? {
            return Ok(Rreaddir { data: buf.freeze() }.into());
        }
    }
    let data = fs.dir_snapshot(node)?;
    let after = m.offset.saturating_sub(2);
    for d in data.entries_after(after) {
        let Ok(name) = String::from_utf8(d.name.clone()) else {
            continue; // not representable in 9P strings
        };
        // Attributes from the store's index (no open/fstat per entry): the kind and mtime
        // are all an entry's type and qid need; the qid equals what `qid_of` gives a stat.
        let (ty, qid) = match fs.store().attributes(d.id) {
            Ok(attr) => (dtype(attr.kind), qid_of_attr(d.id, &attr)),
            Err(_) => (
                dirent_type::UNKNOWN,
                Qid {
                    ty: 0,
                    version: 0,
                    path: d.id.0,
                },
            ),
        };
        let ent = DirEntry {
            qid,
            offset: d.cookie.saturating_add(2),
            ty,
            name,
        };
        if !push(ent, &mut buf)? {
            break;
        }
    }
    Ok(Rreaddir { data: buf.freeze() }.into())
}

/// A 9P2000/.u read of an open directory: stat records from where the last read ended.
pub fn read_stats(c: &Arc<Conn>, e: &FidEntry, offset: u64, count: u32) -> FsResult<Message> {
    let fs = e.claim.fs();
    let node = e.node();
    let (after, expect) = {
        let st = lock(&e.state);
        st.dir_pos
    };
    let after = if offset == 0 {
        0
    } else if offset == expect {
        after
    } else {
        return Err(FsError::Inval(
            "directory read offset must continue the previous read",
        ));
    };
    let dialect = c.dialect();
    let max = count as usize;
    let mut buf = BytesMut::new();
    let mut last = after;
    let data = fs.dir_snapshot(node)?;
    for d in data.entries_after(after) {
        let Ok(name) = String::from_utf8(d.name.clone()) else {
            last = d.cookie;
            continue;
        };
        let st: ObjectStat = match fs.store().stat(d.id) {
            Ok(s) => s,
            Err(_) => {
                last = d.cookie;
                continue;
            }
        };
        let rec = stat_record(fs, d.id, &st, name)?;
        let fits = rec
            .encode_if_fits(&mut buf, max, dialect)
            .map_err(|_| FsError::Inval("stat does not encode"))?;
        if !fits {
            if buf.is_empty() {
                return Err(FsError::Inval(
                    "read count too small for one directory entry",
                ));
            }
            break;
        }
        last = d.cookie;
    }
    lock(&e.state).dir_pos = (last, offset + buf.len() as u64);
    Ok(Rread { data: buf.freeze() }.into())
}

/// Tmkdir.
pub fn mkdir(c: &Arc<Conn>, m: Tmkdir) -> FsResult<Message> {
    let e = c.fids.get_writable(m.dfid)?;
    let name = check_name(&m.name)?;
    let fs = e.claim.fs();
    let claim = fs.create_with_gid(
        &e.claim,
        name,
        ObjectKind::Directory,
        m.mode & 0o7777,
        e.cred,
        m.gid,
        None,
    )?;
    let qid = qid_of(&fs.stat(claim.node())?);
    Ok(Rmkdir { qid }.into())
}

/// Tunlinkat: `AT_REMOVEDIR` removes an empty directory, otherwise a non-directory.
pub fn unlinkat(c: &Arc<Conn>, m: Tunlinkat) -> FsResult<Message> {
    let e = c.fids.get_writable(m.dirfid)?;
    let name = check_name(&m.name)?;
    let what = if m.flags & unlinkat::REMOVEDIR != 0 {
        RemoveKind::Dir
    } else {
        RemoveKind::NotDir
    };
    e.claim.fs().unlink(e.node(), name, what, e.cred)?;
    Ok(Runlinkat {}.into())
}
