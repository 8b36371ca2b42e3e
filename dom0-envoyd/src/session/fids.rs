//! The per-connection fid table.
//!
//! Bounded by `--max-fids-per-conn` (`EMFILE` beyond it, so a client cannot grow the server's
//! memory without limit). Entries are `Arc`s: a request looks its fid up once and keeps the
//! `Arc`, so a Tclunk racing an in-flight read only removes the table entry; the claim is
//! released when the last request using it finishes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use envoy_proto::Fid;

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
    /// Who attached.
    pub cred: Cred,
    /// The territory the claim lives in.
    pub territory: TerritoryId,
    /// Mutable state.
    pub state: Mutex<FidMut>,
    /// Set for a fid on the synthetic `ctl` tree ([`crate::ctl_tree`]), whose requests never
    /// reach the ordinary handlers (the claim is then the namespace root, unused).
    pub ctl: Option<crate::ctl_tree::CtlFid>,
}

impl FidEntry {
    /// A new, unopened fid.
    pub fn new(claim: Claim, root: Arc<Node>, cred: Cred, territory: TerritoryId) -> FidEntry {
        FidEntry {
            claim,
            root,
            cred,
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
    /// Some entry was ever a ctl fid: only then does dispatch look for them.
    synthetic: AtomicBool,
}

impl FidTable {
    /// An empty table holding at most `max` fids.
    pub fn new(max: usize) -> FidTable {
        FidTable {
            max,
            map: Mutex::new(HashMap::new()),
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

    /// Fails if `fid` is in use or the table is full.
    pub fn check_free(&self, fid: Fid) -> FsResult<()> {
        let m = lock(&self.map);
        if m.contains_key(&fid) {
            return Err(FsError::FidInUse(fid.0));
        }
        if m.len() >= self.max {
            return Err(FsError::TooManyFids(self.max));
        }
        Ok(())
    }

    /// Adds a new fid (fails if in use or full).
    pub fn insert(&self, fid: Fid, e: FidEntry) -> FsResult<Arc<FidEntry>> {
        if fid == Fid::NOFID {
            return Err(FsError::Inval("NOFID cannot name a file"));
        }
        let mut m = lock(&self.map);
        if m.contains_key(&fid) {
            return Err(FsError::FidInUse(fid.0));
        }
        if m.len() >= self.max {
            return Err(FsError::TooManyFids(self.max));
        }
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
        old.len()
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
