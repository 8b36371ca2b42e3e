//! Tauth and Tattach.
//!
//! Tauth creates an auth fid ([`crate::access::auth`]: the client writes a key's secret to
//! it). Tattach decides entry to the file system with [`crate::access::Access::authorize`]:
//! the connection's endpoint (and the key proved on `afid`, if any) is matched against the
//! credential files of the administrative directories on the way to `aname`, which gives the
//! identity every request of the attach runs as and whether the attach is read-only. No
//! grant, no attach (`EACCES`, logged). The requested user is `n_uname` (9P2000.L/.u);
//! without one (plain 9P2000 or `NONUNAME`) a numeric `uname` is taken as the uid, `"root"`
//! as 0, anything else as `nobody` (65534); a fixed or squashed identity in the credentials
//! overrides it.
//!
//! `aname` is a path in the global tree (`""` means `/default`); it must name a directory,
//! which becomes the client's root: `..` stops there ([`crate::ops::walk`]), the server never
//! follows a symlink, and names with `/` are refused, so nothing outside it is reachable.
//! The walk to it is made twice: once as the server, reading credential files, and once as
//! the granted identity, so search permission on the way still applies.

use std::sync::Arc;

use envoy_proto::{Fid, Message, Rattach, Tattach, Tauth};
use envoy_storage::ObjectKind;

use crate::access::{Who, NOBODY as ACCESS_NOBODY};
use crate::error::{FsError, FsResult};
use crate::namespace::{qid_of, Cred, DEFAULT_IMAGE};
use crate::session::fids::FidEntry;
use crate::session::Conn;
use crate::territory::Owner;

/// Uid of `nobody`.
pub const NOBODY: u32 = ACCESS_NOBODY;

/// Tauth: a new auth fid.
pub fn auth(c: &Arc<Conn>, m: Tauth) -> FsResult<Message> {
    if crate::ctl_tree::is_ctl_aname(&m.aname) {
        // The ctl tree needs no key; diod's clients take ENOENT as "attach without auth".
        return Err(FsError::AuthNotRequired);
    }
    crate::access::auth::auth(c, m)
}

/// The uid an attach names.
pub fn attach_uid(uname: &str, n_uname: u32) -> u32 {
    crate::access::requested_uid(uname, n_uname)
}

/// The key proved on `afid` for this attach's user, or `EACCES`.
fn proved_key(c: &Arc<Conn>, m: &Tattach) -> FsResult<String> {
    let a = c.fids.get_auth(m.afid).ok_or(FsError::BadFid(m.afid.0))?;
    if a.uname != m.uname || a.n_uname != m.n_uname {
        tracing::warn!(peer = %c.endpoint, "attach refused: afid was made for another user");
        return Err(FsError::Access);
    }
    a.verified(c).ok_or_else(|| {
        tracing::warn!(peer = %c.endpoint, uname = %m.uname, "attach refused: authentication failed");
        FsError::Access
    })
}

/// Tattach.
pub fn attach(c: &Arc<Conn>, m: Tattach) -> FsResult<Message> {
    if crate::ctl_tree::is_ctl_aname(&m.aname) {
        return crate::ctl_tree::attach(c, &m, Cred::user(attach_uid(&m.uname, m.n_uname)));
    }
    c.fids.check_free(m.fid)?;
    let key = if m.afid == Fid::NOFID {
        None
    } else {
        Some(proved_key(c, &m)?)
    };
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
    let who = Who {
        peer: c.endpoint.clone(),
        key,
    };
    let requested = attach_uid(&m.uname, m.n_uname);
    let (_, grant) = c.shared.access.authorize(&who, &path, requested)?;
    let mut cur = terr.root(tid).ok_or(FsError::NotFound)?;
    let fs = Arc::clone(terr.fs());
    for comp in crate::access::components(&path)? {
        cur = fs.lookup(cur.node(), comp.as_bytes(), grant.cred)?;
    }
    if cur.node().kind() != ObjectKind::Directory {
        return Err(FsError::NotDir);
    }
    let qid = qid_of(&fs.stat(cur.node())?);
    c.fids.insert(m.fid, FidEntry::attached(cur, &grant, tid))?;
    tracing::info!(
        uid = grant.cred.uid,
        gid = grant.cred.gid,
        read_only = grant.read_only,
        rights = %grant.rights,
        key = ?who.key,
        %path,
        "attached"
    );
    Ok(Rattach { qid }.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_uid_prefers_numeric_then_name() {
        assert_eq!(attach_uid("alice", 1000), 1000);
        assert_eq!(attach_uid("root", envoy_proto::NONUNAME), 0);
        assert_eq!(attach_uid("1001", envoy_proto::NONUNAME), 1001);
        assert_eq!(attach_uid("alice", envoy_proto::NONUNAME), NOBODY);
    }
}
