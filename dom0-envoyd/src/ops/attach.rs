//! Tauth and Tattach.
//!
//! No authentication yet: Tauth fails ("no authentication required", `EOPNOTSUPP`) and
//! Tattach requires `afid = NOFID`. The user is `n_uname` (9P2000.L/.u); without one (plain
//! 9P2000 or `NONUNAME`) a numeric `uname` is taken as the uid, `"root"` as 0, anything else
//! as `nobody` (65534). `aname` is a path in the global tree (`""` means `/default`); it is
//! looked up through the territory table and must name a directory, which becomes the
//! client's root (`..` stops there). Credential files in administrative directories are a
//! later issue: today any local client may attach any image.

use std::sync::Arc;

use envoy_proto::{Fid, Message, Rattach, Tattach, Tauth, NONUNAME};
use envoy_storage::ObjectKind;

use crate::error::{FsError, FsResult};
use crate::namespace::{check_name, qid_of, Cred, DEFAULT_IMAGE};
use crate::session::fids::FidEntry;
use crate::session::Conn;
use crate::territory::Owner;

/// Uid of `nobody`.
pub const NOBODY: u32 = 65534;

/// Tauth: refused, no authentication is required.
pub fn auth(_c: &Arc<Conn>, _m: Tauth) -> FsResult<Message> {
    Err(FsError::AuthNotRequired)
}

/// The uid an attach names.
pub fn attach_uid(uname: &str, n_uname: u32) -> u32 {
    if n_uname != NONUNAME {
        return n_uname;
    }
    if uname == "root" {
        return 0;
    }
    uname.parse().unwrap_or(NOBODY)
}

/// Tattach.
pub fn attach(c: &Arc<Conn>, m: Tattach) -> FsResult<Message> {
    if crate::ctl_tree::is_ctl_aname(&m.aname) {
        return crate::ctl_tree::attach(c, &m, Cred::user(attach_uid(&m.uname, m.n_uname)));
    }
    if m.afid != Fid::NOFID {
        return Err(FsError::Inval("no authentication: afid must be NOFID"));
    }
    c.fids.check_free(m.fid)?;
    let cred = Cred::user(attach_uid(&m.uname, m.n_uname));
    let path = if m.aname.is_empty() {
        format!("/{DEFAULT_IMAGE}")
    } else if m.aname.starts_with('/') {
        m.aname.clone()
    } else {
        format!("/{}", m.aname)
    };
    let terr = &c.shared.territories;
    let tid = match terr.lookup(&path) {
        Owner::Local(t) => t,
        Owner::Remote(_) => return Err(FsError::NotSupported("remote territories")),
    };
    let mut cur = terr.root(tid).ok_or(FsError::NotFound)?;
    let fs = Arc::clone(terr.fs());
    for comp in path.split('/').filter(|s| !s.is_empty()) {
        let name = check_name(comp)?;
        cur = fs.lookup(cur.node(), name, cred)?;
    }
    if cur.node().kind() != ObjectKind::Directory {
        return Err(FsError::NotDir);
    }
    let qid = qid_of(&fs.stat(cur.node())?);
    let root = Arc::clone(cur.node());
    c.fids.insert(m.fid, FidEntry::new(cur, root, cred, tid))?;
    tracing::debug!(uid = cred.uid, %path, "attached");
    Ok(Rattach { qid }.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_uid_prefers_numeric_then_name() {
        assert_eq!(attach_uid("alice", 1000), 1000);
        assert_eq!(attach_uid("root", NONUNAME), 0);
        assert_eq!(attach_uid("1001", NONUNAME), 1001);
        assert_eq!(attach_uid("alice", NONUNAME), NOBODY);
    }
}
