//! Twalk and Tclunk.
//!
//! Twalk: at most 16 names (the codec rejects more). Each name must be a valid component
//! (`""`, `"."`, names with `/` or NUL, and names over 255 bytes fail with `EINVAL` /
//! `ENAMETOOLONG`); `".."` moves to the parent claim but never above the fid's attach root.
//! Symlinks are never followed (walking "through" one fails with `ENOTDIR`). If the first
//! step fails the walk fails with that error; a later failure returns the qids of the steps
//! that succeeded and leaves newfid unassigned (9P). Walking from an open fid is `EBADF`.
//! `newfid` must be free unless it equals `fid`.

use std::sync::Arc;

use envoy_proto::{Message, Rclunk, Rwalk, Tclunk, Twalk};

use crate::error::{FsError, FsResult};
use crate::namespace::{check_name, qid_of, Claim};
use crate::session::fids::{FidEntry, OpenState};
use crate::session::Conn;

fn step(e: &FidEntry, cur: &Claim, name: &str) -> FsResult<Claim> {
    let fs = cur.fs();
    if name == ".." {
        if Arc::ptr_eq(cur.node(), &e.root) {
            return Ok(cur.dup());
        }
        return match cur.node().parent() {
            Some(p) => Ok(fs.claim(p)),
            None => Err(FsError::NotFound),
        };
    }
    let n = check_name(name)?;
    fs.lookup(cur.node(), n, e.cred)
}

/// Twalk.
pub fn walk(c: &Arc<Conn>, m: Twalk) -> FsResult<Message> {
    let e = c.fids.get(m.fid)?;
    if e.is_open() {
        return Err(FsError::FidState("cannot walk from an open fid"));
    }
    if m.newfid != m.fid {
        c.fids.check_free(m.newfid)?;
    }
    if m.wnames.len() > envoy_proto::P9_MAXWELEM {
        return Err(FsError::Inval("more than 16 walk elements"));
    }
    let mut cur = e.claim.dup();
    let mut wqids = Vec::with_capacity(m.wnames.len());
    for (i, name) in m.wnames.iter().enumerate() {
        match step(&e, &cur, name).and_then(|n| Ok((qid_of(&n.fs().stat(n.node())?), n))) {
            Ok((q, n)) => {
                wqids.push(q);
                cur = n;
            }
            Err(err) if i == 0 => return Err(err),
            Err(_) => return Ok(Rwalk { wqids }.into()),
        }
    }
    let ne = e.derive(cur);
    if m.newfid == m.fid {
        c.fids.replace(m.fid, ne);
    } else {
        c.fids.insert(m.newfid, ne)?;
    }
    Ok(Rwalk { wqids }.into())
}

/// Tclunk: forgets the fid. An xattr write fid sets its attribute now; a 9P2000 `ORCLOSE`
/// open removes the file now.
pub fn clunk(c: &Arc<Conn>, m: Tclunk) -> FsResult<Message> {
    let e = c.fids.remove(m.fid)?;
    crate::ops::xattr::commit(&e)?;
    let rclose = matches!(e.open_state(), OpenState::Open { flags } if flags & crate::ops::file::RCLOSE_FLAG != 0);
    if rclose {
        if let Err(err) = crate::ops::file::remove_entry(&e) {
            tracing::debug!(error = %err, "ORCLOSE remove failed");
        }
    }
    Ok(Rclunk {}.into())
}
