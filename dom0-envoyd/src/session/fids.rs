//! The per-connection fid table.
//!
//! Bounded by `--max-fids-per-conn` (`EMFILE` beyond it, so a client cannot grow the server's
//! memory without limit). Entries are `Arc`s: a request looks its fid up once and keeps the
//! `Arc`, so a Tclunk racing an in-flight read only removes the table entry; the claim is
//! released when the last request using it finishes.
//!
//! Every entry carries what its attach decided ([`crate::access`]): the identity, whether the
//! attach is read-only, and the rights granted. Fids made from a fid (walks, creates, xattr
//! fids) inherit all three through [`FidEntry::derive`], so no path leads from a read-only
//! attach to a writable fid. Mutating handlers take their fids through
//! [`FidTable::get_writable`] (`EROFS` on a read-only attach).
//!
//! Auth fids (9P `Tauth`, [`crate::access::auth`]) share the fid numbers and the bound but
//! live in their own map: they are not files, and every ordinary handler sees them as
//! unknown (`EBADF`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use envoy_proto::Fid;

use crate::access::auth::AuthFid;
use crate::access::{AttachGrant, Rights};
use crate::error::{FsError, FsResult};
use crate::namespace::node::{lock, Node};
use crate::namespace::{Claim, Cred};
use crate::territory::TerritoryId;

/// What an opened fid is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenState {
    /// Not opened (walks, getattr, …).
    Closed,
    /// Opened for I/O with these Linux open flags (access mode in the low 2 bits).
    Open {
        /// `O_*` flags as sent by the client (9P2000 modes are translated).
        flags: u32,
    },
    /// An extended attribute being written (Txattrcreate): name, declared size, bytes so far.
    XattrWrite {
        /// Attribute name.
        name: String,
        /// Declared value size.
        size: u64,
        /// Value written so far.
        value: Vec<u8>,
        /// Txattrcreate flags.
        flags: u32,
    },
    /// An extended attribute (or the list) being read (Txattrwalk).
    XattrRead {
        /// The value.
        value: Vec<u8>,
    },
}

/// Per-fid mutable state.
#[derive(Debug)]
pub struct FidMut {
    /// Open state.
    pub open: OpenState,
    /// 9P2000/.u directory reads: the cookie after which the next read continues and the
    /// byte offset the client expects for it.
    pub dir_pos: (u64, u64),
}

/// One fid.
#[derive(Debug)]
pub struct FidEntry {
    /// The claim on the file.
    pub claim: Claim,
    /// The attach root (`..` stops there).
    pub root: Arc<Node>,
    /// Who attached (the identity the credentials allowed).
    pub cred: Cred,
    /// The attach is read-only: every mutating request fails with `EROFS`.
    pub read_only: bool,
    /// The rights the attach was granted.
    pub rights: Rights,
    /// The territory the claim lives in.
    pub territory: TerritoryId,
    /// Mutable state.
    pub state: Mutex<FidMut>,
    /// Set for a fid on the synthetic `ctl` tree ([`crate::ctl_tree`]), whose requests never
    /// reach the ordinary handlers (the claim is then the namespace root, unused).
    pub ctl: Option<crate::ctl_tree::CtlFid>,
}

impl FidEntry {
    /// A new, unopened, writable fid with no rights (synthetic trees).
    pub fn new(claim: Claim, root: Arc<Node>, cred: Cred, territory: TerritoryId) -> FidEntry {
        FidEntry {
            claim,
            root,
            cred,
            read_only: false,
            rights: Rights::NONE,
            territory,
            state: Mutex::new(FidMut {
                open: OpenState::Closed,
                dir_pos: (0, 0),
            }),
            ctl: None,
        }
    }

    /// A fid on the synthetic `ctl` tree.
    pub fn synthetic(
        claim: Claim,
        root: Arc<Node>,
        cred: Cred,
        ctl: crate::ctl_tree::CtlFid,
    ) -> FidEntry {
        FidEntry {
            ctl: Some(ctl),
            ..FidEntry::new(claim, root, cred, TerritoryId(0))
        }
    }

    /// The root fid of an attach that `grant` allowed.
    pub fn attached(claim: Claim, grant: &AttachGrant, territory: TerritoryId) -> FidEntry {
        let root = Arc::clone(claim.node());
        FidEntry {
            read_only: grant.read_only,
            rights: grant.rights,
            ..FidEntry::new(claim, root, grant.cred, territory)
        }
    }

    /// A new, unopened fid on `claim` in the same attach (same root, identity, read-only
    /// flag and rights).
    pub fn derive(&self, claim: Claim) -> FidEntry {
        FidEntry {
            read_only: self.read_only,
            rights: self.rights,
            ..FidEntry::new(claim, Arc::clone(&self.root), self.cred, self.territory)
        }
    }

    /// `EROFS` when the fid belongs to a read-only attach.
    pub fn check_writable(&self) -> FsResult<()> {
        if self.read_only {
            return Err(FsError::ReadOnly);
        }
        Ok(())
    }

    /// The node.
    pub fn node(&self) -> &Arc<Node> {
        self.claim.node()
    }

    /// The open state (cloned).
    pub fn open_state(&self) -> OpenState {
        lock(&self.state).open.clone()
    }

    /// Whether the fid has been opened (or made an xattr fid).
    pub fn is_open(&self) -> bool {
        !matches!(lock(&self.state).open, OpenState::Closed)
    }
}

/// The table.
#[derive(Debug)]
pub struct FidTable {
    max: usize,
    map: Mutex<HashMap<Fid, Arc<FidEntry>>>,
    /// Auth fids (taken after `map` when both are locked).
    auth: Mutex<HashMap<Fid, Arc<AuthFid>>>,
    /// Some auth fid was ever created: only then does dispatch look for them.
    any_auth: AtomicBool,
    /// Some entry was ever a ctl fid: only then does dispatch look for them.
    synthetic: AtomicBool,
}

impl FidTable {
    /// An empty table holding at most `max` fids.
    pub fn new(max: usize) -> FidTable {
        FidTable {
            max,
            map: Mutex::new(HashMap::new()),
            auth: Mutex::new(HashMap::new()),
            any_auth: AtomicBool::new(false),
            synthetic: AtomicBool::new(false),
        }
    }

    /// Whether this connection ever held a ctl-tree fid.
    pub fn has_synthetic(&self) -> bool {
        self.synthetic.load(Ordering::Relaxed)
    }

    fn note(&self, e: &FidEntry) {
        if e.ctl.is_some() {
            self.synthetic.store(true, Ordering::Relaxed);
        }
    }

    /// Every fid with its entry (for the control socket's session listing).
    pub fn entries(&self) -> Vec<(Fid, Arc<FidEntry>)> {
        let mut v: Vec<_> = lock(&self.map)
            .iter()
            .map(|(f, e)| (*f, Arc::clone(e)))
            .collect();
        v.sort_by_key(|(f, _)| f.0);
        v
    }

    /// The fid, or `EBADF`.
    pub fn get(&self, fid: Fid) -> FsResult<Arc<FidEntry>> {
        lock(&self.map)
            .get(&fid)
            .cloned()
            .ok_or(FsError::BadFid(fid.0))
    }

    /// The fid, or `EBADF`; `EROFS` if it belongs to a read-only attach. Every handler that
    /// changes something takes its fids this way.
    pub fn get_writable(&self, fid: Fid) -> FsResult<Arc<FidEntry>> {
        let e = self.get(fid)?;
        e.check_writable()?;
        Ok(e)
    }

    /// Fails if `fid` (file or auth fid) is in use or the table is full.
    fn check_free_locked(
        &self,
        m: &HashMap<Fid, Arc<FidEntry>>,
        a: &HashMap<Fid, Arc<AuthFid>>,
        fid: Fid,
    ) -> FsResult<()> {
        if m.contains_key(&fid) || a.contains_key(&fid) {
            return Err(FsError::FidInUse(fid.0));
        }
        if m.len() + a.len() >= self.max {
            return Err(FsError::TooManyFids(self.max));
        }
        Ok(())
    }

    /// Fails if `fid` is in use or the table is full.
    pub fn check_free(&self, fid: Fid) -> FsResult<()> {
        let m = lock(&self.map);
        let a = lock(&self.auth);
        self.check_free_locked(&m, &a, fid)
    }

    /// Adds an auth fid (Tauth).
    pub fn insert_auth(&self, fid: Fid, a: AuthFid) -> FsResult<()> {
        if fid == Fid::NOFID {
            return Err(FsError::Inval("NOFID cannot name an auth fid"));
        }
        let m = lock(&self.map);
        let mut am = lock(&self.auth);
        self.check_free_locked(&m, &am, fid)?;
        self.any_auth.store(true, Ordering::Relaxed);
        am.insert(fid, Arc::new(a));
        Ok(())
    }

    /// Whether this connection ever made an auth fid.
    pub fn has_auth(&self) -> bool {
        self.any_auth.load(Ordering::Relaxed)
    }

    /// The auth fid `fid`, if it is one.
    pub fn get_auth(&self, fid: Fid) -> Option<Arc<AuthFid>> {
        lock(&self.auth).get(&fid).cloned()
    }

    /// Removes auth fid `fid`, if it is one.
    pub fn remove_auth(&self, fid: Fid) -> Option<Arc<AuthFid>> {
        lock(&self.auth).remove(&fid)
    }

    /// Adds a new fid (fails if in use or full).
    pub fn insert(&self, fid: Fid, e: FidEntry) -> FsResult<Arc<FidEntry>> {
        if fid == Fid::NOFID {
            return Err(FsError::Inval("NOFID cannot name a file"));
        }
        let mut m = lock(&self.map);
        self.check_free_locked(&m, &lock(&self.auth), fid)?;
        self.note(&e);
        let e = Arc::new(e);
        m.insert(fid, Arc::clone(&e));
        Ok(e)
    }

    /// Replaces an existing fid's entry (a walk with newfid == fid).
    pub fn replace(&self, fid: Fid, e: FidEntry) -> Arc<FidEntry> {
        self.note(&e);
        let e = Arc::new(e);
        lock(&self.map).insert(fid, Arc::clone(&e));
        e
    }

    /// Removes a fid, returning it.
    pub fn remove(&self, fid: Fid) -> FsResult<Arc<FidEntry>> {
        lock(&self.map).remove(&fid).ok_or(FsError::BadFid(fid.0))
    }

    /// Drops every fid (Tversion, disconnect).
    pub fn clear(&self) -> usize {
        let old: Vec<_> = lock(&self.map).drain().collect();
        let auth = lock(&self.auth).drain().count();
        old.len() + auth
    }

    /// Bytes declared by the xattr write fids of this table (their values are buffered
    /// until clunk); bounded per connection by the xattr handler.
    pub fn pending_xattr_bytes(&self) -> u64 {
        let entries: Vec<Arc<FidEntry>> = lock(&self.map).values().cloned().collect();
        entries
            .iter()
            .map(|e| match &lock(&e.state).open {
                OpenState::XattrWrite { size, .. } => *size,
                _ => 0,
            })
            .sum()
    }

    /// Number of fids.
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
