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

/// Bytes of a shared-memory write handed to the kernel per system call: after each, the
/// writer learns how far the write got ([`WriteSrc::Shared`]'s `done`), so a ring can give
/// the written part of a payload back to the guest while the rest is being written.
pub const SHARED_CHUNK: usize = 128 * 1024;

/// The data of one write.
pub enum WriteSrc<'a> {
    /// A private buffer (a frame copied out of the transport).
    Bytes(Bytes),
    /// Windows of memory shared with a peer that may change it at any time (one, or two for
    /// a payload that wraps around a ring's end), written in order. They are never read by
    /// Rust code, only handed to the kernel (or copied out once where a buffer is needed,
    /// [`WriteSrc::to_bytes`]). `done(n)` is called after the first `n` bytes are written
    /// (in [`SHARED_CHUNK`] steps): the kernel has finished reading them.
    Shared {
        /// The data, in order.
        mem: &'a [SharedMem],
        /// Progress: bytes written so far.
        done: &'a dyn Fn(usize),
    },
}

impl std::fmt::Debug for WriteSrc<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteSrc::Bytes(b) => f.debug_tuple("Bytes").field(&b.len()).finish(),
            WriteSrc::Shared { mem, .. } => f.debug_tuple("Shared").field(mem).finish(),
        }
    }
}

impl WriteSrc<'_> {
    /// Bytes to write.
    pub fn len(&self) -> usize {
        match self {
            WriteSrc::Bytes(b) => b.len(),
            WriteSrc::Shared { mem, .. } => mem.iter().map(SharedMem::len).sum(),
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
            WriteSrc::Shared { mem, .. } => {
                let mut v = vec![0u8; self.len()];
                let mut at = 0;
                for m in mem.iter() {
                    let dst = v
                        .get_mut(at..at + m.len())
                        .ok_or(FsError::Inval("write source outside its window"))?;
                    m.read(0, dst)
                        .map_err(|_| FsError::Inval("write source outside its window"))?;
                    at += m.len();
                }
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
        let len = data.len();
        let (parts, done) = match data {
            WriteSrc::Bytes(b) => return self.store_write(id, offset, b),
            WriteSrc::Shared { mem, done } => (mem, done),
        };
        let mut written = 0usize;
        let mut r = Ok(0);
        'parts: for m in parts {
            let mut here = 0usize;
            while here < m.len() {
                let n = (m.len() - here).min(SHARED_CHUNK);
                // SAFETY: `[here, here + n)` lies inside the bounds-checked window `m`
                // (here + n <= m.len()), which stays mapped while the borrowed `SharedMem`
                // (which holds its owner) lives, for the whole call; no Rust reference into it
                // exists. It is the not-yet-released part of a request the ring protocol gives
                // this side until `done` is told it was written, so the peer's own producer
                // does not reuse it meanwhile. A peer that rewrites it anyway only changes the
                // bytes written to its own file (the kernel reads whatever is there; nothing
                // here parses or trusts them). `offset + written` cannot overflow:
                // `Fs::write_src` checked offset + len.
                let p = unsafe { m.as_ptr().add(here) };
                // SAFETY: as above.
                match unsafe { self.store.write_from(id, offset + written as u64, p, n) } {
                    Ok(k) => {
                        here += k;
                        written += k;
                        done(written);
                        r = Ok(written);
                        if k == 0 {
                            break 'parts;
                        }
                    }
                    Err(e) => {
                        r = Err(e);
                        break 'parts;
                    }
                }
            }
        }
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
