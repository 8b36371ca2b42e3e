//! POSIX byte-range locks (Tlock, Tgetlock), kept in memory.
//!
//! Locks belong to an owner = (connection, `client_id`, `proc_id`) and cover `[start, end]`
//! of one object (`length` 0 = to the end of file). A read lock conflicts with another
//! owner's write lock; a write lock with any lock of another owner. Locking a range an owner
//! already holds replaces that part (upgrade, downgrade, split), unlocking splits ranges.
//! A conflicting request answers `STATUS_BLOCKED` (the Linux client polls for blocking
//! locks). Locks of a connection are dropped when it disconnects.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use envoy_proto::{lock as lk, Message, Rgetlock, Rlock, Tgetlock, Tlock};
use envoy_storage::ObjectId;

use crate::error::{FsError, FsResult};
use crate::namespace::node::lock as mlock;
use crate::session::fids::OpenState;
use crate::session::Conn;

/// Who holds a lock.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    /// Connection id.
    pub conn: u64,
    /// Client host name.
    pub client_id: String,
    /// Client process.
    pub proc_id: u32,
}

/// One held range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive).
    pub end: u64,
    /// `TYPE_RDLCK` or `TYPE_WRLCK`.
    pub ty: u8,
    /// Holder.
    pub owner: Owner,
}

/// All locks, by object.
#[derive(Debug, Default)]
pub struct LockTable {
    map: Mutex<HashMap<ObjectId, Vec<Range>>>,
}

fn span(start: u64, length: u64) -> FsResult<(u64, u64)> {
    if length == 0 {
        return Ok((start, u64::MAX));
    }
    let end = start
        .checked_add(length - 1)
        .ok_or(FsError::Inval("lock range overflows"))?;
    Ok((start, end))
}

fn conflicts(a: &Range, ty: u8, start: u64, end: u64, owner: &Owner) -> bool {
    a.owner != *owner
        && a.start <= end
        && start <= a.end
        && (a.ty == lk::TYPE_WRLCK || ty == lk::TYPE_WRLCK)
}

impl LockTable {
    /// The first lock conflicting with the request, if any.
    pub fn test(&self, id: ObjectId, ty: u8, start: u64, end: u64, owner: &Owner) -> Option<Range> {
        let m = mlock(&self.map);
        m.get(&id)?
            .iter()
            .find(|r| conflicts(r, ty, start, end, owner))
            .cloned()
    }

    /// Sets (`RDLCK`/`WRLCK`) or clears (`UNLCK`) a range; `false` if it conflicts.
    pub fn set(&self, id: ObjectId, ty: u8, start: u64, end: u64, owner: &Owner) -> bool {
        let mut m = mlock(&self.map);
        let list = m.entry(id).or_default();
        if ty != lk::TYPE_UNLCK && list.iter().any(|r| conflicts(r, ty, start, end, owner)) {
            return false;
        }
        let mut out = Vec::with_capacity(list.len() + 2);
        for r in list.drain(..) {
            if r.owner != *owner || r.end < start || r.start > end {
                out.push(r);
                continue;
            }
            if r.start < start {
                out.push(Range {
                    end: start - 1,
                    ..r.clone()
                });
            }
            if r.end > end {
                out.push(Range {
                    start: end + 1,
                    ..r.clone()
                });
            }
        }
        if ty != lk::TYPE_UNLCK {
            out.push(Range {
                start,
                end,
                ty,
                owner: owner.clone(),
            });
        }
        if out.is_empty() {
            m.remove(&id);
        } else {
            *list = out;
        }
        true
    }

    /// Drops every lock held through connection `conn`.
    pub fn drop_conn(&self, conn: u64) {
        let mut m = mlock(&self.map);
        m.retain(|_, v| {
            v.retain(|r| r.owner.conn != conn);
            !v.is_empty()
        });
    }

    /// Number of held ranges.
    pub fn len(&self) -> usize {
        mlock(&self.map).values().map(Vec::len).sum()
    }

    /// True when no lock is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn check_type(ty: u8) -> FsResult<()> {
    match ty {
        lk::TYPE_RDLCK | lk::TYPE_WRLCK | lk::TYPE_UNLCK => Ok(()),
        _ => Err(FsError::Inval("lock type")),
    }
}

/// Tlock.
pub fn lock(c: &Arc<Conn>, m: Tlock) -> FsResult<Message> {
    let e = c.fids.get(m.fid)?;
    if !matches!(e.open_state(), OpenState::Open { .. }) {
        return Err(FsError::FidState("lock on an unopened fid"));
    }
    check_type(m.ty)?;
    let (start, end) = span(m.start, m.length)?;
    let owner = Owner {
        conn: c.id,
        client_id: m.client_id,
        proc_id: m.proc_id,
    };
    let ok = c.shared.locks.set(e.node().id(), m.ty, start, end, &owner);
    Ok(Rlock {
        status: if ok {
            lk::STATUS_SUCCESS
        } else {
            lk::STATUS_BLOCKED
        },
    }
    .into())
}

/// Tgetlock: the first conflicting lock, or the request back with type `UNLCK`.
pub fn getlock(c: &Arc<Conn>, m: Tgetlock) -> FsResult<Message> {
    let e = c.fids.get(m.fid)?;
    check_type(m.ty)?;
    let (start, end) = span(m.start, m.length)?;
    let owner = Owner {
        conn: c.id,
        client_id: m.client_id.clone(),
        proc_id: m.proc_id,
    };
    Ok(
        match c.shared.locks.test(e.node().id(), m.ty, start, end, &owner) {
            Some(r) => Rgetlock {
                ty: r.ty,
                start: r.start,
                length: if r.end == u64::MAX {
                    0
                } else {
                    r.end - r.start + 1
                },
                proc_id: r.owner.proc_id,
                client_id: r.owner.client_id,
            },
            None => Rgetlock {
                ty: lk::TYPE_UNLCK,
                start: m.start,
                length: m.length,
                proc_id: m.proc_id,
                client_id: m.client_id,
            },
        }
        .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(p: u32) -> Owner {
        Owner {
            conn: 1,
            client_id: "h".into(),
            proc_id: p,
        }
    }

    #[test]
    fn locks_conflict_split_and_release() {
        let t = LockTable::default();
        let id = ObjectId(5);
        assert!(t.set(id, lk::TYPE_RDLCK, 0, 99, &who(1)));
        assert!(t.set(id, lk::TYPE_RDLCK, 50, 150, &who(2)), "readers share");
        assert!(
            !t.set(id, lk::TYPE_WRLCK, 120, 130, &who(1)),
            "2 reads 50..150"
        );
        assert!(t.set(id, lk::TYPE_UNLCK, 0, u64::MAX, &who(2)));
        assert!(t.set(id, lk::TYPE_WRLCK, 120, 130, &who(1)));
        assert!(t.set(id, lk::TYPE_UNLCK, 10, 19, &who(1)), "split 0..99");
        assert!(t.test(id, lk::TYPE_WRLCK, 10, 19, &who(3)).is_none());
        assert!(t.test(id, lk::TYPE_RDLCK, 125, 125, &who(3)).is_some());
        t.drop_conn(1);
        assert!(t.is_empty());
    }
}
