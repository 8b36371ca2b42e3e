//! [`WriteSrc`]: where a file write's data is — a private buffer, or shared memory (a
//! `Twrite` payload left in a ring's request half), which the kernel copies into the page
//! cache itself (`pwritev` from the shared mapping: the zero-copy case).
//!
//! [`Fs::write_src`] takes either with the same rules and results as [`Fs::write`] (range
//! check, area rules, image gate, thaw, cache invalidation, mtime); only the last step, the
//! store write, differs ([`Fs::store_write_src`]).

use std::sync::atomic::Ordering;

use bytes::Bytes;
use envoy_ring::SharedMem;
use envoy_storage::{ObjectId, StoreError};

use super::{Fs, STORE_TRACE};
use crate::error::{FsError, FsResult};

/// The data of one write.
#[derive(Debug, Clone)]
pub enum WriteSrc<'a> {
    /// A private buffer (a frame copied out of the transport).
    Bytes(Bytes),
    /// A window of memory shared with a peer that may change it at any time. It is never
    /// read by Rust code, only handed to the kernel (or copied out once where a buffer is
    /// needed, [`WriteSrc::to_bytes`]).
    Shared(&'a SharedMem),
}

impl WriteSrc<'_> {
    /// Bytes to write.
    pub fn len(&self) -> usize {
        match self {
            WriteSrc::Bytes(b) => b.len(),
            WriteSrc::Shared(m) => m.len(),
        }
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The data in a private buffer (one copy out of shared memory; none for `Bytes`).
    pub fn to_bytes(&self) -> FsResult<Bytes> {
        match self {
            WriteSrc::Bytes(b) => Ok(b.clone()),
            WriteSrc::Shared(m) => {
                let mut v = vec![0u8; m.len()];
                m.read(0, &mut v)
                    .map_err(|_| FsError::Inval("write source outside its window"))?;
                Ok(Bytes::from(v))
            }
        }
    }
}

impl Fs {
    /// Writes `data` to the store, counted in [`Fs::traffic`] (shared-memory writes also as
    /// in-place writes).
    pub(crate) fn store_write_src(
        &self,
        id: ObjectId,
        offset: u64,
        data: WriteSrc<'_>,
    ) -> Result<usize, StoreError> {
        let m = match data {
            WriteSrc::Bytes(b) => return self.store_write(id, offset, b),
            WriteSrc::Shared(m) => m,
        };
        let len = m.len();
        // SAFETY: `m` is a bounds-checked window of `len` bytes that stays mapped while the
        // borrowed `SharedMem` (which holds its owner) lives, for the whole call; no Rust
        // reference into it exists. It is the payload of a request the ring protocol gives
        // this side until the held message is released (after this returns), so the peer's
        // own producer does not reuse it. A peer that rewrites it anyway only changes the
        // bytes written to its own file (the kernel reads whatever is there; nothing here
        // parses or trusts them).
        let r = unsafe { self.store.write_from(id, offset, m.as_ptr(), len) };
        let t = &self.traffic;
        t.write_requests.fetch_add(1, Ordering::Relaxed);
        t.write_in_place_requests.fetch_add(1, Ordering::Relaxed);
        if r.is_ok() {
            t.write_bytes.fetch_add(len as u64, Ordering::Relaxed);
            t.write_in_place_bytes
                .fetch_add(len as u64, Ordering::Relaxed);
            tracing::trace!(target: STORE_TRACE, %id, offset, bytes = len, "store write in place");
        }
        r
    }
}
