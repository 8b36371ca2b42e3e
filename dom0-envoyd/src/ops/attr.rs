//! Attributes: Tgetattr, Tsetattr (9P2000.L) and Tstat, Twstat (9P2000/.u).
//!
//! * `nlink` is reported as 1 for everything (directories too, as btrfs does: tools then
//!   do not infer subdirectory counts; hard links in Envoy are frozen copies, not shared
//!   inodes).
//! * Special files report size 0; `rdev` comes from the device node's contents.
//! * Reads never update atime (as `noatime`); writes set mtime; ctime is the host inode's
//!   change time of the object file (a thaw gives a file a fresh ctime).
//! * chmod needs ownership (or root); chown of the owner needs root; a non-root owner may
//!   only set the group to its own group. Explicit times need ownership; "now" needs
//!   ownership or write permission. Truncation needs write permission.
//! * Twstat: a new `name` renames within the same directory (replacing a target, as
//!   rename(2)); `length` truncates; `mode`, `mtime`, `atime`, `n_gid` as above.

use std::sync::Arc;

use envoy_proto::{
    dm, getattr, setattr, Message, Rgetattr, Rsetattr, Rstat, Rwstat, Stat, Tgetattr, Tsetattr,
    Tstat, Twstat, NONUNAME,
};
use envoy_storage::{AttrChange, ObjectId, ObjectKind, ObjectStat, Timestamp};

use crate::error::{FsError, FsResult};
use crate::namespace::perm::{self, Cred};
use crate::namespace::{qid_of, special, Fs};
use crate::session::fids::FidEntry;
use crate::session::Conn;

/// `rdev` of a device object.
fn rdev(fs: &Fs, id: ObjectId, st: &ObjectStat) -> u64 {
    match st.attr.kind {
        ObjectKind::CharDevice | ObjectKind::BlockDevice => fs
            .store()
            .read(id, 0, 64)
            .ok()
            .and_then(|d| special::parse_device(&d))
            .map_or(0, |(ma, mi)| special::makedev(ma, mi)),
        _ => 0,
    }
}

fn visible_size(st: &ObjectStat) -> u64 {
    match st.attr.kind {
        ObjectKind::Regular | ObjectKind::Directory | ObjectKind::Symlink => st.size,
        _ => 0,
    }
}

/// Tgetattr.
pub fn getattr(c: &Arc<Conn>, m: Tgetattr) -> FsResult<Message> {
    let e = c.fids.get(m.fid)?;
    let fs = e.claim.fs();
    let st = fs.stat(e.node())?;
    let a = &st.attr;
    Ok(Rgetattr {
        valid: getattr::BASIC,
        qid: qid_of(&st),
        mode: special::type_bits(a.kind) | a.mode,
        uid: a.uid,
        gid: a.gid,
        nlink: 1,
        rdev: rdev(fs, st.id, &st),
        size: visible_size(&st),
        blksize: 4096,
        blocks: st.blocks,
        atime_sec: a.atime.secs,
        atime_nsec: u64::from(a.atime.nanos),
        mtime_sec: a.mtime.secs,
        mtime_nsec: u64::from(a.mtime.nanos),
        ctime_sec: st.ctime.secs,
        ctime_nsec: u64::from(st.ctime.nanos),
        btime_sec: 0,
        btime_nsec: 0,
        gen: 0,
        data_version: 0,
    }
    .into())
}

fn ts(sec: u64, nsec: u64) -> FsResult<Timestamp> {
    if nsec >= 1_000_000_000 {
        return Err(FsError::Inval("nanoseconds out of range"));
    }
    Ok(Timestamp {
        secs: sec,
        nanos: nsec as u32,
    })
}

/// What a setattr-like request asks for, before permission checks.
#[derive(Debug, Default)]
struct Wanted {
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    atime: Option<Option<Timestamp>>,
    mtime: Option<Option<Timestamp>>,
}

/// Checks permissions and applies.
fn apply(e: &FidEntry, w: Wanted) -> FsResult<()> {
    let fs = e.claim.fs();
    let node = e.node();
    let cur = fs.stat(node)?.attr;
    let cred: Cred = e.cred;
    let mut ch = AttrChange::default();
    if let Some(mode) = w.mode {
        if !cred.owns(&cur) {
            return Err(FsError::Perm);
        }
        let mut mode = mode & 0o7777;
        if !cred.is_root() && cur.gid != cred.gid && cur.kind != ObjectKind::Directory {
            mode &= !perm::S_ISGID;
        }
        ch.mode = Some(mode);
    }
    if let Some(uid) = w.uid {
        if uid != cur.uid && !cred.is_root() {
            return Err(FsError::Perm);
        }
        ch.uid = Some(uid);
    }
    if let Some(gid) = w.gid {
        if gid != cur.gid && !cred.is_root() && !(cred.uid == cur.uid && gid == cred.gid) {
            return Err(FsError::Perm);
        }
        ch.gid = Some(gid);
    }
    if (ch.uid.is_some_and(|u| u != cur.uid) || ch.gid.is_some_and(|g| g != cur.gid))
        && cur.kind != ObjectKind::Directory
    {
        // chown clears set-id bits of non-directories, as on Linux.
        let m = ch.mode.unwrap_or(cur.mode);
        ch.mode = Some(m & !(perm::S_ISUID | perm::S_ISGID));
    }
    if let Some(size) = w.size {
        if cur.kind == ObjectKind::Directory {
            return Err(FsError::IsDir);
        }
        if cur.kind != ObjectKind::Regular {
            return Err(FsError::Inval("truncate of a special file"));
        }
        if size > i64::MAX as u64 {
            return Err(FsError::TooBig("size"));
        }
        perm::check(&cur, &cred, perm::W)?;
        ch.size = Some(size);
        if w.mtime.is_none() {
            ch.mtime = Some(Timestamp::now());
        }
    }
    for (want, slot) in [(w.atime, &mut ch.atime), (w.mtime, &mut ch.mtime)] {
        match want {
            None => {}
            Some(Some(t)) => {
                if !cred.owns(&cur) {
                    return Err(FsError::Perm);
                }
                *slot = Some(t);
            }
            Some(None) => {
                if !cred.owns(&cur) && !perm::allowed(&cur, &cred, perm::W) {
                    return Err(FsError::Access);
                }
                *slot = Some(Timestamp::now());
            }
        }
    }
    if ch == AttrChange::default() {
        return Ok(());
    }
    fs.setattr(node, &ch)?;
    Ok(())
}

/// Tsetattr.
pub fn setattr(c: &Arc<Conn>, m: Tsetattr) -> FsResult<Message> {
    let e = c.fids.get_writable(m.fid)?;
    let v = m.valid;
    let time = |set: u32, flag: u32, sec, nsec| -> FsResult<Option<Option<Timestamp>>> {
        Ok(if v & flag == 0 {
            None
        } else if v & set != 0 {
            Some(Some(ts(sec, nsec)?))
        } else {
            Some(None)
        })
    };
    let w = Wanted {
        mode: (v & setattr::MODE != 0).then_some(m.mode),
        uid: (v & setattr::UID != 0).then_some(m.uid),
        gid: (v & setattr::GID != 0).then_some(m.gid),
        size: (v & setattr::SIZE != 0).then_some(m.size),
        atime: time(
            setattr::ATIME_SET,
            setattr::ATIME,
            m.atime_sec,
            m.atime_nsec,
        )?,
        mtime: time(
            setattr::MTIME_SET,
            setattr::MTIME,
            m.mtime_sec,
            m.mtime_nsec,
        )?,
    };
    apply(&e, w)?;
    Ok(Rsetattr {}.into())
}

/// 9P2000 `DM*` type bits of a kind plus the set-id bits of `mode`.
fn dm_mode(kind: ObjectKind, mode: u32) -> u32 {
    let ty = match kind {
        ObjectKind::Directory => dm::DIR,
        ObjectKind::Symlink => dm::SYMLINK,
        ObjectKind::CharDevice | ObjectKind::BlockDevice => dm::DEVICE,
        ObjectKind::Fifo => dm::NAMEDPIPE,
        ObjectKind::Socket => dm::SOCKET,
        ObjectKind::Regular => 0,
    };
    let mut m = ty | (mode & 0o777);
    if mode & perm::S_ISUID != 0 {
        m |= dm::SETUID;
    }
    if mode & perm::S_ISGID != 0 {
        m |= dm::SETGID;
    }
    if mode & perm::S_ISVTX != 0 {
        m |= dm::SETVTX;
    }
    m
}

/// The 9P2000(.u) stat record of object `id` under `name`.
pub fn stat_record(fs: &Fs, id: ObjectId, st: &ObjectStat, name: String) -> FsResult<Stat> {
    let a = &st.attr;
    let extension = match a.kind {
        ObjectKind::Symlink | ObjectKind::CharDevice | ObjectKind::BlockDevice => {
            let d = fs.store().read(id, 0, 4096)?;
            String::from_utf8_lossy(&d).replace('\0', "")
        }
        _ => String::new(),
    };
    Ok(Stat {
        ty: 0,
        dev: 0,
        qid: qid_of(st),
        mode: dm_mode(a.kind, a.mode),
        atime: u32::try_from(a.atime.secs).unwrap_or(u32::MAX),
        mtime: u32::try_from(a.mtime.secs).unwrap_or(u32::MAX),
        length: visible_size(st),
        name,
        uid: a.uid.to_string(),
        gid: a.gid.to_string(),
        muid: String::new(),
        extension,
        n_uid: a.uid,
        n_gid: a.gid,
        n_muid: NONUNAME,
    })
}

/// Tstat.
pub fn stat(c: &Arc<Conn>, m: Tstat) -> FsResult<Message> {
    let e = c.fids.get(m.fid)?;
    let fs = e.claim.fs();
    let node = e.node();
    let st = fs.stat(node)?;
    let name = {
        let s = node.state();
        if s.parent.is_none() || Arc::ptr_eq(node, &e.root) {
            "/".to_string()
        } else {
            String::from_utf8_lossy(&s.name).into_owned()
        }
    };
    Ok(Rstat {
        stat: stat_record(fs, st.id, &st, name)?,
    }
    .into())
}

/// Twstat.
pub fn wstat(c: &Arc<Conn>, m: Twstat) -> FsResult<Message> {
    let e = c.fids.get(m.fid)?;
    let s = &m.stat;
    if !crate::access::wstat_is_noop(s) {
        // The all-"don't touch" Twstat is 9P2000's fsync and allowed on read-only attaches.
        e.check_writable()?;
    }
    let mut w = Wanted::default();
    if s.mode != u32::MAX {
        let mut mode = s.mode & 0o777;
        if s.mode & dm::SETUID != 0 {
            mode |= perm::S_ISUID;
        }
        if s.mode & dm::SETGID != 0 {
            mode |= perm::S_ISGID;
        }
        if s.mode & dm::SETVTX != 0 {
            mode |= perm::S_ISVTX;
        }
        w.mode = Some(mode);
    }
    if s.length != u64::MAX {
        w.size = Some(s.length);
    }
    if s.mtime != u32::MAX {
        w.mtime = Some(Some(Timestamp {
            secs: u64::from(s.mtime),
            nanos: 0,
        }));
    }
    if s.atime != u32::MAX {
        w.atime = Some(Some(Timestamp {
            secs: u64::from(s.atime),
            nanos: 0,
        }));
    }
    if s.n_gid != NONUNAME {
        w.gid = Some(s.n_gid);
    } else if let Ok(g) = s.gid.parse::<u32>() {
        w.gid = Some(g);
    }
    if s.n_uid != NONUNAME {
        w.uid = Some(s.n_uid);
    } else if let Ok(u) = s.uid.parse::<u32>() {
        w.uid = Some(u);
    }
    if !s.name.is_empty() {
        let node = e.node();
        let (parent, old) = {
            let st = node.state();
            (st.parent.clone(), st.name.clone())
        };
        if s.name.as_bytes() != old.as_slice() {
            let new = crate::namespace::check_name(&s.name)?;
            if Arc::ptr_eq(node, &e.root) {
                return Err(FsError::Busy);
            }
            let parent = parent.ok_or(FsError::NotFound)?;
            e.claim.fs().rename(&parent, &old, &parent, new, e.cred)?;
        }
    }
    apply(&e, w)?;
    Ok(Rwstat {}.into())
}
