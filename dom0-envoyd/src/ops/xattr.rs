//! Extended attributes: Txattrwalk, Txattrcreate (and the Twrite/Tclunk of an xattr fid).
//!
//! Stored per object (see [`crate::namespace::xattr`]), any namespace the guest uses
//! (`user.`, `security.`, `trusted.`, `system.posix_acl_*`). Checks, as Linux applies them:
//! reading `user.*` needs read permission, writing it write permission (and a regular file or
//! directory: `EPERM` otherwise); `trusted.*` and `security.*` changes need root; `system.*`
//! changes need ownership. Names over 255 bytes are `ERANGE`, values over 64 KiB `E2BIG`.
//!
//! * `Txattrwalk(name="")` returns the NUL-separated list, otherwise the value (`ENODATA` if
//!   unset); newfid then reads it with Tread.
//! * `Txattrcreate` turns the fid into a write handle for a value of exactly `attr_size`
//!   bytes; Twrites must be sequential and stay inside that size (`EINVAL`), and the
//!   attribute is set at Tclunk (`EINVAL` there if fewer bytes arrived). Size 0 removes it.

use std::sync::Arc;

use envoy_proto::{
    xattr as xflags, Message, Rwrite, Rxattrcreate, Rxattrwalk, Txattrcreate, Txattrwalk,
};
use envoy_storage::ObjectKind;

use crate::error::{FsError, FsResult};
use crate::namespace::node::lock;
use crate::namespace::perm;
use crate::namespace::xattr::{XATTR_NAME_MAX, XATTR_SIZE_MAX};
use crate::session::fids::{FidEntry, OpenState};
use crate::session::Conn;

/// Bytes of xattr values one connection may have declared but not yet committed (each is
/// buffered until its fid is clunked).
pub const XATTR_PENDING_MAX: u64 = 4 << 20;

fn check_name(name: &str) -> FsResult<()> {
    if name.len() > XATTR_NAME_MAX {
        return Err(FsError::Range);
    }
    if name.is_empty() {
        return Err(FsError::Inval("empty attribute name"));
    }
    Ok(())
}

/// Txattrwalk.
pub fn xattrwalk(c: &Arc<Conn>, m: Txattrwalk) -> FsResult<Message> {
    let e = c.fids.get(m.fid)?;
    if m.newfid != m.fid {
        c.fids.check_free(m.newfid)?;
    }
    let fs = e.claim.fs();
    let value = if m.name.is_empty() {
        fs.xattr_list(e.node())?
    } else {
        check_name(&m.name)?;
        if m.name.starts_with("user.") {
            perm::check(&fs.stat(e.node())?.attr, &e.cred, perm::R)?;
        } else if m.name.starts_with("trusted.") && !e.cred.is_root() {
            return Err(FsError::NoData);
        }
        fs.xattr_get(e.node(), &m.name)?
    };
    let size = value.len() as u64;
    let ne = e.derive(e.claim.dup());
    lock(&ne.state).open = OpenState::XattrRead { value };
    if m.newfid == m.fid {
        c.fids.replace(m.fid, ne);
    } else {
        c.fids.insert(m.newfid, ne)?;
    }
    Ok(Rxattrwalk { size }.into())
}

/// Txattrcreate.
pub fn xattrcreate(c: &Arc<Conn>, m: Txattrcreate) -> FsResult<Message> {
    let e = c.fids.get_writable(m.fid)?;
    if e.is_open() {
        return Err(FsError::FidState("fid already open"));
    }
    check_name(&m.name)?;
    if m.attr_size > XATTR_SIZE_MAX {
        return Err(FsError::XattrTooBig);
    }
    if c.fids.pending_xattr_bytes().saturating_add(m.attr_size) > XATTR_PENDING_MAX {
        return Err(FsError::NoSpace);
    }
    if m.flags & !(xflags::CREATE | xflags::REPLACE) != 0
        || m.flags == xflags::CREATE | xflags::REPLACE
    {
        return Err(FsError::Inval("xattr flags"));
    }
    let attr = e.claim.fs().stat(e.node())?.attr;
    let cred = e.cred;
    if m.name.starts_with("user.") {
        if !matches!(attr.kind, ObjectKind::Regular | ObjectKind::Directory) {
            return Err(FsError::Perm);
        }
        perm::check(&attr, &cred, perm::W)?;
    } else if m.name.starts_with("trusted.") || m.name.starts_with("security.") {
        if !cred.is_root() {
            return Err(FsError::Perm);
        }
    } else if m.name.starts_with("system.") {
        if !cred.owns(&attr) {
            return Err(FsError::Perm);
        }
    } else {
        return Err(FsError::NotSupported("unknown xattr namespace"));
    }
    let mut st = lock(&e.state);
    if !matches!(st.open, OpenState::Closed) {
        return Err(FsError::FidState("fid already open"));
    }
    st.open = OpenState::XattrWrite {
        name: m.name,
        size: m.attr_size,
        value: Vec::new(),
        flags: m.flags,
    };
    Ok(Rxattrcreate {}.into())
}

/// A Twrite to an xattr write fid: bytes must land inside the declared size, in order.
pub fn write_value(e: &FidEntry, offset: u64, data: &[u8]) -> FsResult<Message> {
    let mut st = lock(&e.state);
    let OpenState::XattrWrite { size, value, .. } = &mut st.open else {
        return Err(FsError::FidState("not an xattr fid"));
    };
    offset
        .checked_add(data.len() as u64)
        .filter(|&end| end <= *size)
        .ok_or(FsError::Inval("xattr write beyond the declared size"))?;
    if offset != value.len() as u64 {
        return Err(FsError::Inval("xattr writes must be sequential"));
    }
    value.extend_from_slice(data);
    Ok(Rwrite {
        count: u32::try_from(data.len()).unwrap_or(u32::MAX),
    }
    .into())
}

/// At Tclunk of an xattr write fid: sets the attribute if the whole value arrived.
pub fn commit(e: &FidEntry) -> FsResult<()> {
    let OpenState::XattrWrite {
        name,
        size,
        value,
        flags,
    } = e.open_state()
    else {
        return Ok(());
    };
    if value.len() as u64 != size {
        return Err(FsError::Inval("xattr value shorter than declared"));
    }
    e.claim.fs().xattr_set(e.node(), &name, &value, flags)
}
