//! Opening, creating, reading and writing files: Tlopen, Tlcreate, Topen, Tcreate, Tread,
//! Twrite, Tfsync, Tremove.
//!
//! Open flags are Linux `O_*` values (9P2000 modes are translated): the access mode selects
//! the permission checked (`R`, `W` or both), `O_TRUNC` truncates (needs `W`), `O_APPEND` is
//! the client's business (the Linux client sends the offset). `Tlcreate` is exclusive: an
//! existing name fails with `EEXIST`. Directories open read-only (`EISDIR` otherwise); device
//! nodes, FIFOs and sockets are never opened (`EOPNOTSUPP`: the guest kernel handles special
//! files itself, and the server must never touch a host device because a guest named it).
//! Reads and writes need a fid opened for that direction (`EBADF`).

use std::sync::Arc;

use envoy_proto::{
    dm, lopen, open as p9open, Message, Rcreate, Rfsync, Rlcreate, Rlopen, Ropen, Rread, Rremove,
    Rwrite, Tcreate, Tfsync, Tlcreate, Tlopen, Topen, Tread, Tremove, Twrite,
};
use envoy_ring::SharedMem;
use envoy_storage::{AttrChange, ObjectKind};

use crate::error::{FsError, FsResult};
use crate::namespace::node::lock;
use crate::namespace::perm;
use crate::namespace::update::RemoveKind;
use crate::namespace::WriteSrc;
use crate::namespace::{check_name, qid_of, special};
use crate::session::fids::{FidEntry, OpenState};
use crate::session::Conn;

/// Internal flag (above every Linux `O_*` bit we accept) recording a 9P2000 `ORCLOSE` open.
pub const RCLOSE_FLAG: u32 = 1 << 31;

fn wants(flags: u32) -> u32 {
    match flags & lopen::ACCMODE {
        lopen::WRONLY => perm::W,
        lopen::RDWR => perm::R | perm::W,
        _ => perm::R,
    }
}

/// Opens `e` with Linux flags; returns the qid.
fn open_entry(e: &FidEntry, flags: u32, check: bool) -> FsResult<envoy_proto::Qid> {
    let fs = e.claim.fs();
    let node = e.node();
    let mut st = lock(&e.state);
    if !matches!(st.open, OpenState::Closed) {
        return Err(FsError::FidState("fid already open"));
    }
    let want = wants(flags);
    if want & perm::W != 0 || flags & (lopen::TRUNC | RCLOSE_FLAG) != 0 {
        e.check_writable()?;
    }
    let stat = fs.stat(node)?;
    match stat.attr.kind {
        ObjectKind::Directory if want & perm::W != 0 || flags & lopen::TRUNC != 0 => {
            return Err(FsError::IsDir)
        }
        ObjectKind::Regular | ObjectKind::Directory => {}
        ObjectKind::Symlink => return Err(FsError::NotSupported("symlinks are not opened")),
        _ => {
            return Err(FsError::NotSupported(
                "special files are not opened on the server",
            ))
        }
    }
    if check {
        perm::check(&stat.attr, &e.cred, want)?;
        if flags & lopen::TRUNC != 0 {
            perm::check(&stat.attr, &e.cred, perm::W)?;
        }
    }
    let stat = if flags & lopen::TRUNC != 0 && stat.size != 0 {
        fs.setattr(
            node,
            &AttrChange {
                size: Some(0),
                mtime: Some(envoy_storage::Timestamp::now()),
                ..AttrChange::default()
            },
        )?
    } else {
        stat
    };
    st.open = OpenState::Open { flags };
    st.dir_pos = (0, 0);
    Ok(qid_of(&stat))
}

/// Tlopen.
pub fn lopen(c: &Arc<Conn>, m: Tlopen) -> FsResult<Message> {
    let e = c.fids.get(m.fid)?;
    let qid = open_entry(&e, m.flags & !RCLOSE_FLAG, true)?;
    Ok(Rlopen { qid, iounit: 0 }.into())
}

/// Tlcreate: exclusive create of a regular file; the fid becomes the new file, opened.
pub fn lcreate(c: &Arc<Conn>, m: Tlcreate) -> FsResult<Message> {
    let e = c.fids.get_writable(m.fid)?;
    if e.is_open() {
        return Err(FsError::FidState("fid already open"));
    }
    let name = check_name(&m.name)?;
    let fs = e.claim.fs();
    let claim = fs.create_with_gid(
        &e.claim,
        name,
        ObjectKind::Regular,
        m.mode & 0o7777,
        e.cred,
        m.gid,
        None,
    )?;
    let ne = e.derive(claim);
    // The creator may open what it created, whatever the mode says (POSIX).
    let flags = m.flags & !(lopen::TRUNC | RCLOSE_FLAG);
    let qid = open_entry(&ne, flags, false)?;
    c.fids.replace(m.fid, ne);
    Ok(Rlcreate { qid, iounit: 0 }.into())
}

/// Translates a 9P2000 open mode to Linux flags.
fn flags_from_9p(mode: u8) -> u32 {
    let mut f = match mode & 3 {
        p9open::WRITE => lopen::WRONLY,
        p9open::RDWR => lopen::RDWR,
        _ => lopen::RDONLY,
    };
    if mode & p9open::TRUNC != 0 {
        f |= lopen::TRUNC;
    }
    if mode & p9open::RCLOSE != 0 {
        f |= RCLOSE_FLAG;
    }
    f
}

/// Topen (9P2000/.u).
pub fn open(c: &Arc<Conn>, m: Topen) -> FsResult<Message> {
    let e = c.fids.get(m.fid)?;
    let qid = open_entry(&e, flags_from_9p(m.mode), true)?;
    Ok(Ropen { qid, iounit: 0 }.into())
}

/// Tcreate (9P2000/.u): `perm` says what to create (`DMDIR`, `DMSYMLINK`, `DMDEVICE`,
/// `DMNAMEDPIPE`, `DMSOCKET`, `DMLINK`, else a regular file); `extension` carries the symlink
/// target, `"c|b major minor"` or the link target's fid number. The fid becomes the new file.
pub fn create(c: &Arc<Conn>, m: Tcreate) -> FsResult<Message> {
    let e = c.fids.get_writable(m.fid)?;
    if e.is_open() {
        return Err(FsError::FidState("fid already open"));
    }
    let name = check_name(&m.name)?;
    let fs = Arc::clone(e.claim.fs());
    let mode = m.perm & 0o777
        | if m.perm & dm::SETUID != 0 {
            perm::S_ISUID
        } else {
            0
        }
        | if m.perm & dm::SETGID != 0 {
            perm::S_ISGID
        } else {
            0
        }
        | if m.perm & dm::SETVTX != 0 {
            perm::S_ISVTX
        } else {
            0
        };
    if m.perm & dm::LINK != 0 {
        let fid: u32 = m
            .extension
            .trim()
            .parse()
            .map_err(|_| FsError::Inval("DMLINK extension"))?;
        let target = c.fids.get(envoy_proto::Fid(fid))?;
        crate::ops::link::same_attach(&e, &target)?;
        fs.link(e.node(), name, target.node(), e.cred)?;
        let claim = fs.lookup(e.node(), name, e.cred)?;
        let qid = qid_of(&fs.stat(claim.node())?);
        c.fids.replace(m.fid, e.derive(claim));
        return Ok(Rcreate { qid, iounit: 0 }.into());
    }
    let (kind, contents): (ObjectKind, Option<Vec<u8>>) = if m.perm & dm::DIR != 0 {
        (ObjectKind::Directory, None)
    } else if m.perm & dm::SYMLINK != 0 {
        (ObjectKind::Symlink, Some(m.extension.clone().into_bytes()))
    } else if m.perm & dm::DEVICE != 0 {
        let (major, minor) = special::parse_device(m.extension.as_bytes()).ok_or(
            FsError::Inval("device extension must be \"c|b major minor\""),
        )?;
        let kind = if m.extension.starts_with('b') {
            ObjectKind::BlockDevice
        } else {
            ObjectKind::CharDevice
        };
        if !e.cred.is_root() {
            return Err(FsError::Perm);
        }
        (
            kind,
            special::device_contents(kind, major, minor).map(String::into_bytes),
        )
    } else if m.perm & dm::NAMEDPIPE != 0 {
        (ObjectKind::Fifo, None)
    } else if m.perm & dm::SOCKET != 0 {
        (ObjectKind::Socket, None)
    } else {
        (ObjectKind::Regular, None)
    };
    let claim = fs.create(&e.claim, name, kind, mode, e.cred, contents.as_deref())?;
    let ne = e.derive(claim);
    let qid = match kind {
        ObjectKind::Regular | ObjectKind::Directory => {
            let flags = if kind == ObjectKind::Directory {
                lopen::RDONLY
            } else {
                flags_from_9p(m.mode) & !lopen::TRUNC
            };
            open_entry(&ne, flags, false)?
        }
        _ => qid_of(&fs.stat(ne.node())?),
    };
    c.fids.replace(m.fid, ne);
    Ok(Rcreate { qid, iounit: 0 }.into())
}

/// Tread: file data, an xattr value, or (9P2000/.u) directory entries as stat records.
pub fn read(c: &Arc<Conn>, m: Tread) -> FsResult<Message> {
    let e = c.fids.get(m.fid)?;
    let open = e.open_state();
    match open {
        OpenState::Open { flags } => {
            if flags & lopen::ACCMODE == lopen::WRONLY {
                return Err(FsError::FidState("fid not open for reading"));
            }
            if e.node().kind() == ObjectKind::Directory {
                if c.dialect() == envoy_proto::Dialect::P2000L {
                    return Err(FsError::IsDir);
                }
                return crate::ops::dir::read_stats(c, &e, m.offset, m.count);
            }
            m.offset
                .checked_add(u64::from(m.count))
                .filter(|&end| end <= i64::MAX as u64)
                .ok_or(FsError::Inval("offset + count overflows"))?;
            let data = e.claim.fs().read(e.node(), m.offset, m.count as usize)?;
            Ok(Rread { data }.into())
        }
        OpenState::XattrRead { value } => {
            let start = usize::try_from(m.offset)
                .unwrap_or(usize::MAX)
                .min(value.len());
            let end = start.saturating_add(m.count as usize).min(value.len());
            Ok(Rread {
                data: bytes::Bytes::copy_from_slice(&value[start..end]),
            }
            .into())
        }
        _ => Err(FsError::FidState("fid not open")),
    }
}

/// Tread of a regular file over a transport that can take the data in place (a ring):
/// the data goes from the store (or the cache) straight into the reply's space in ring
/// memory and the reply is sent from there. `Ok` when the reply was sent (or the read failed:
/// the error to answer with); `Err(m)` gives the request back for the ordinary path (another
/// transport, a directory or xattr fid, ring space that wraps) — that path also produces
/// every error reply the checks here skip.
pub fn read_direct(c: &Arc<Conn>, tag: envoy_proto::Tag, m: Tread) -> Result<FsResult<()>, Tread> {
    // Auth fids and the synthetic `ctl` tree are answered by `dispatch`'s intercepts.
    if !c.replies_in_place() || c.fids.has_auth() || c.fids.has_synthetic() {
        return Err(m);
    }
    let Ok(e) = c.fids.get(m.fid) else {
        return Err(m);
    };
    let readable = matches!(e.open_state(), OpenState::Open { flags } if flags & lopen::ACCMODE != lopen::WRONLY);
    let in_range = m
        .offset
        .checked_add(u64::from(m.count))
        .is_some_and(|end| end <= i64::MAX as u64);
    if !readable || !in_range || e.node().kind() == ObjectKind::Directory {
        return Err(m);
    }
    let fs = e.claim.fs();
    match c.send_read_direct(tag, m.count, |dst| fs.read_into(e.node(), m.offset, dst)) {
        Some(r) => Ok(r),
        None => Err(m),
    }
}

/// Twrite.
pub fn write(c: &Arc<Conn>, m: Twrite) -> FsResult<Message> {
    write_src(c, m.fid, m.offset, WriteSrc::Bytes(m.data))
}

/// Twrite whose payload is still in the transport's shared memory (a ring): the same checks
/// and results as [`write`]; a file write hands the payload to the kernel where it lies and
/// reports progress to `done` (see [`crate::namespace::WriteSrc`]). `m.data` is ignored.
/// `dispatch`'s intercepts (auth fids, the `ctl` tree) do not apply: the caller takes this
/// path only without them.
pub fn write_in_place(
    c: &Arc<Conn>,
    m: &Twrite,
    payload: &[SharedMem],
    done: &dyn Fn(usize),
) -> FsResult<Message> {
    write_src(c, m.fid, m.offset, WriteSrc::Shared { mem: payload, done })
}

/// The one Twrite path: fid and open-mode checks, then a file or xattr write.
fn write_src(
    c: &Arc<Conn>,
    fid: envoy_proto::Fid,
    offset: u64,
    data: WriteSrc<'_>,
) -> FsResult<Message> {
    let e = c.fids.get(fid)?;
    match e.open_state() {
        OpenState::Open { flags } => {
            if flags & lopen::ACCMODE == lopen::RDONLY {
                return Err(FsError::FidState("fid not open for writing"));
            }
            let n = e.claim.fs().write_src(e.node(), offset, data)?;
            Ok(Rwrite {
                count: u32::try_from(n).unwrap_or(u32::MAX),
            }
            .into())
        }
        OpenState::XattrWrite { .. } => {
            crate::ops::xattr::write_value(&e, offset, &data.to_bytes()?)
        }
        _ => Err(FsError::FidState("fid not open")),
    }
}

/// Tfsync: the object and its directory are durable when Rfsync is sent.
pub fn fsync(c: &Arc<Conn>, m: Tfsync) -> FsResult<Message> {
    let e = c.fids.get(m.fid)?;
    e.claim.fs().sync(e.node())?;
    Ok(Rfsync {}.into())
}

/// Removes the name a fid stands for (Tremove, ORCLOSE).
pub fn remove_entry(e: &FidEntry) -> FsResult<()> {
    let node = e.node();
    if Arc::ptr_eq(node, &e.root) {
        return Err(FsError::Busy);
    }
    let (parent, name) = {
        let s = node.state();
        (s.parent.clone(), s.name.clone())
    };
    let parent = parent.ok_or(FsError::NotFound)?;
    e.claim
        .fs()
        .unlink(&parent, &name, RemoveKind::Any, e.cred)?;
    Ok(())
}

/// Tremove: the fid is clunked whether or not the removal succeeds.
pub fn remove(c: &Arc<Conn>, m: Tremove) -> FsResult<Message> {
    let e = c.fids.remove(m.fid)?;
    e.check_writable()?;
    remove_entry(&e)?;
    Ok(Rremove {}.into())
}
