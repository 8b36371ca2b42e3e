//! [`Fs::read_into`]: a file read whose data lands directly in shared memory (a reserved
//! region of a ring's reply half) instead of a new buffer.
//!
//! Same rules and results as [`Fs::read`]; only where the bytes go differs:
//!
//! * a cache hit is copied once, cache → destination;
//! * a store read is [`envoy_storage::ObjectStore::read_into`]: the kernel copies page cache →
//!   destination, with no buffer in between (the zero-copy case);
//! * a cache miss that fills the cache reads the whole file into the cache (as [`Fs::read`]
//!   does) and copies the range once.

use std::sync::atomic::Ordering;

use envoy_ring::SharedMem;
use envoy_storage::ObjectKind;

use super::node::{read, Node};
use super::{slice_at, Fs, STORE_TRACE};
use crate::cache::DataLookup;
use crate::error::{FsError, FsResult};

impl Fs {
    /// Reads up to `dst.len()` bytes at `offset` into `dst`; returns how many.
    pub fn read_into(&self, node: &Node, offset: u64, dst: &SharedMem) -> FsResult<usize> {
        let _io = read(&node.io);
        let id = node.id();
        let len = dst.len().min(envoy_storage::MAX_IO);
        let in_range = offset
            .checked_add(len as u64)
            .is_some_and(|end| end <= i64::MAX as u64);
        let cacheable = matches!(node.kind(), ObjectKind::Regular | ObjectKind::Symlink);
        if !cacheable || !in_range {
            return self.store_read_into(id, offset, dst, len);
        }
        let data = match self.cache.get_data(id) {
            DataLookup::Hit(whole) => slice_at(&whole, offset, len),
            DataLookup::Bypass => return self.store_read_into(id, offset, dst, len),
            DataLookup::Miss(ticket) => self.read_miss(node, ticket, offset, len)?,
        };
        let n = data.len().min(len);
        // Cannot fail: n <= dst.len().
        dst.write(0, data.get(..n).unwrap_or_default())
            .map_err(|_| FsError::Inval("read destination smaller than the data"))?;
        Ok(n)
    }

    /// A store read straight into `dst`, counted in [`Fs::traffic`].
    fn store_read_into(
        &self,
        id: envoy_storage::ObjectId,
        offset: u64,
        dst: &SharedMem,
        len: usize,
    ) -> FsResult<usize> {
        let len = len.min(dst.len());
        // SAFETY: `dst` is a bounds-checked window of `dst.len() >= len` bytes that stays
        // mapped while the borrowed `SharedMem` (which holds its owner) lives; no Rust
        // reference into it exists (shared memory is only touched through copies), and the
        // ring protocol gives this side the reserved region until it is published.
        let r = unsafe { self.store.read_into(id, offset, dst.as_ptr(), len) };
        self.traffic.read_requests.fetch_add(1, Ordering::Relaxed);
        let n = r?;
        self.traffic
            .read_bytes
            .fetch_add(n as u64, Ordering::Relaxed);
        tracing::trace!(target: STORE_TRACE, %id, offset, bytes = n, "store read");
        Ok(n)
    }
}
