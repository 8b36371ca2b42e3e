//! 9P authentication: the afid protocol with a shared secret.
//!
//! ```text
//! Tauth  afid uname="key:alice" aname n_uname → Rauth aqid (type QTAUTH)   an auth fid exists
//! Twrite afid 0 "SECRET"                      → Rwrite     (or "key:alice SECRET")
//! Tread  afid 0                               → "ok key:alice\n" | "denied\n" (optional)
//! Tattach fid afid uname="key:alice" aname n_uname → Rattach  with alice's grants added
//! Tclunk afid                                 → Rclunk
//! ```
//!
//! Only a `uname` of the form `key:NAME` asks for this: any other Tauth is answered
//! `ENOENT` ("authentication not required"), as diod without authentication answers, so
//! libnpclient tools (`diodls`, `diodcat`, which would otherwise try MUNGE) and the Linux
//! kernel client go on attaching with `afid = NOFID` and the grants of their endpoint. The
//! identity asked for is then `n_uname` (9P2000.L/.u; plain 9P2000 gets `nobody` unless the
//! grant fixes one).
//!
//! The proof is checked against `/.envoy-keys` ([`super::keys`]) when it is read and again at
//! Tattach; the Tattach must name the same `uname`/`n_uname` as the Tauth. A proof holds at
//! most [`AUTH_MAX`] bytes.

use std::sync::{Arc, Mutex};

use envoy_proto::{qid_type, Message, Qid, Rauth, Rclunk, Rread, Rwrite, Tauth, Tread, Twrite};

use crate::error::{FsError, FsResult};
use crate::namespace::node::lock;
use crate::session::Conn;

/// Largest proof written to an auth fid (bytes).
pub const AUTH_MAX: usize = 4096;

/// An auth fid's state.
#[derive(Debug)]
pub struct AuthFid {
    /// The user named in Tauth.
    pub uname: String,
    /// The numeric user named in Tauth.
    pub n_uname: u32,
    /// The proof written so far.
    proof: Mutex<Vec<u8>>,
}

impl AuthFid {
    /// A fresh auth fid for `uname`.
    pub fn new(uname: String, n_uname: u32) -> AuthFid {
        AuthFid {
            uname,
            n_uname,
            proof: Mutex::new(Vec::new()),
        }
    }

    /// The key proved so far, if any.
    pub fn verified(&self, c: &Conn) -> Option<String> {
        let proof = lock(&self.proof).clone();
        let r = c.shared.access.verify_proof(&proof, &self.uname);
        if r.is_none() && !proof.is_empty() {
            tracing::warn!(peer = %c.endpoint, uname = %self.uname, "Tauth proof does not match any key");
        }
        r
    }
}

/// Tauth: creates the auth fid.
pub fn auth(c: &Arc<Conn>, m: Tauth) -> FsResult<Message> {
    let Some(name) = m.uname.strip_prefix("key:") else {
        return Err(FsError::AuthNotRequired);
    };
    if super::grammar::check_name(name).is_err() {
        return Err(FsError::Inval(
            "Tauth: key names are 1-64 of A-Z a-z 0-9 . _ -",
        ));
    }
    c.fids
        .insert_auth(m.afid, AuthFid::new(m.uname, m.n_uname))?;
    Ok(Rauth {
        aqid: Qid {
            ty: qid_type::AUTH,
            version: 0,
            path: u64::from(m.afid.0) | 1 << 63,
        },
    }
    .into())
}

/// Handles Tread, Twrite and Tclunk on auth fids; `None` for every other request (which
/// the ordinary handlers answer; they see an auth fid as unknown, `EBADF`).
pub fn intercept(c: &Arc<Conn>, msg: &Message) -> Option<FsResult<Message>> {
    if !c.fids.has_auth() {
        return None;
    }
    match msg {
        Message::Tread(m) => c.fids.get_auth(m.fid).map(|a| Ok(read(c, &a, m))),
        Message::Twrite(m) => c.fids.get_auth(m.fid).map(|a| write(&a, m)),
        Message::Tclunk(m) => c.fids.remove_auth(m.fid).map(|_| Ok(Rclunk {}.into())),
        Message::Tremove(m) => c.fids.remove_auth(m.fid).map(|_| Err(FsError::Perm)),
        _ => None,
    }
}

fn read(c: &Conn, a: &AuthFid, m: &Tread) -> Message {
    let verdict = match a.verified(c) {
        Some(k) => format!("ok key:{k}\n"),
        None => "denied\n".to_string(),
    };
    let b = verdict.into_bytes();
    let start = usize::try_from(m.offset).unwrap_or(usize::MAX).min(b.len());
    let end = start.saturating_add(m.count as usize).min(b.len());
    Rread {
        data: bytes::Bytes::copy_from_slice(b.get(start..end).unwrap_or_default()),
    }
    .into()
}

fn write(a: &AuthFid, m: &Twrite) -> FsResult<Message> {
    let mut p = lock(&a.proof);
    let off = usize::try_from(m.offset).map_err(|_| FsError::TooBig("auth proof offset"))?;
    if off > p.len() {
        return Err(FsError::Inval("auth proof written with a gap"));
    }
    let end = off
        .checked_add(m.data.len())
        .filter(|&e| e <= AUTH_MAX)
        .ok_or(FsError::TooBig("auth proof longer than 4096 bytes"))?;
    p.truncate(off);
    p.extend_from_slice(&m.data);
    debug_assert_eq!(p.len(), end);
    Ok(Rwrite {
        count: m.data.len() as u32,
    }
    .into())
}
