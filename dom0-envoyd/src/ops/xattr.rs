//! Extended attributes: Txattrwalk, Txattrcreate.
//!
//! envoyd stores no extended attributes yet. The behaviour is the clean one of a file system
//! without xattr support: listing (`name = ""`) yields an empty list, reading any named
//! attribute fails with `ENODATA`, and setting one (`Txattrcreate`) fails with `EOPNOTSUPP`,
//! which `cp -a`, `tar` and `rsync` treat as "this file system has no xattrs". Because the fid
//! is never turned into a write handle, oversized or partial values cannot occur; the write
//! path below still checks sizes for when storage gains xattrs.

use std::sync::Arc;

use envoy_proto::{Message, Rwrite, Rxattrwalk, Txattrcreate, Txattrwalk};

use crate::error::{FsError, FsResult};
use crate::namespace::node::lock;
use crate::session::fids::{FidEntry, OpenState};
use crate::session::Conn;

/// Largest attribute value accepted (Linux `XATTR_SIZE_MAX`).
pub const XATTR_SIZE_MAX: u64 = 65536;

/// Txattrwalk.
pub fn xattrwalk(c: &Arc<Conn>, m: Txattrwalk) -> FsResult<Message> {
    let e = c.fids.get(m.fid)?;
    if m.newfid != m.fid {
        c.fids.check_free(m.newfid)?;
    }
    if !m.name.is_empty() {
        return Err(FsError::NoData);
    }
    let ne = FidEntry::new(e.claim.dup(), Arc::clone(&e.root), e.cred, e.territory);
    lock(&ne.state).open = OpenState::XattrRead { value: Vec::new() };
    if m.newfid == m.fid {
        c.fids.replace(m.fid, ne);
    } else {
        c.fids.insert(m.newfid, ne)?;
    }
    Ok(Rxattrwalk { size: 0 }.into())
}

/// Txattrcreate.
pub fn xattrcreate(c: &Arc<Conn>, m: Txattrcreate) -> FsResult<Message> {
    let _e = c.fids.get(m.fid)?;
    if m.attr_size > XATTR_SIZE_MAX {
        return Err(FsError::TooBig("xattr value"));
    }
    Err(FsError::NotSupported("extended attributes are not stored"))
}

/// A Twrite to an xattr write fid: bytes must land inside the declared size, in order.
pub fn write_value(e: &FidEntry, offset: u64, data: &[u8]) -> FsResult<Message> {
    let mut st = lock(&e.state);
    let OpenState::XattrWrite { size, value, .. } = &mut st.open else {
        return Err(FsError::FidState("not an xattr fid"));
    };
    let end = offset
        .checked_add(data.len() as u64)
        .filter(|&end| end <= *size)
        .ok_or(FsError::Inval("xattr write beyond the declared size"))?;
    if offset != value.len() as u64 {
        return Err(FsError::Inval("xattr writes must be sequential"));
    }
    value.extend_from_slice(data);
    let _ = end;
    Ok(Rwrite {
        count: data.len() as u32,
    }
    .into())
}
