//! Reads straight into caller-owned memory that is not a Rust buffer: envoyd's zero-copy
//! `Rread` over a shared-memory ring, where the destination is reserved space in the ring
//! itself, so the only copy of the data is the kernel's, page cache → ring.
//!
//! The read is `preadv2(RWF_NOWAIT)` on the calling thread — the same page-cache copy the
//! io_uring engine does inline before it queues anything (see `engine::uring`). When a part
//! would wait for the device (`EAGAIN`) or the file system refuses `RWF_NOWAIT`, the rest goes
//! through the engine ([`ObjectStore::read`], io_uring) into a buffer and is copied into the
//! destination once: still correct, one copy more, only on a page-cache miss.

use std::io;
use std::os::fd::AsRawFd;

use super::ObjectStore;
use crate::error::StoreError;
use crate::object::ObjectId;
use crate::MAX_IO;

impl ObjectStore {
    /// Reads up to `len` bytes (at most [`MAX_IO`]) at `offset` into `dst`; returns how many
    /// were read (short only at the end of the object).
    ///
    /// # Safety
    ///
    /// `dst..dst + len` must stay mapped and writable for the whole call, and no Rust
    /// reference may point into it meanwhile (it may be memory shared with another process,
    /// written here by the kernel and by one `memcpy`).
    pub unsafe fn read_into(
        &self,
        id: ObjectId,
        offset: u64,
        dst: *mut u8,
        len: usize,
    ) -> Result<usize, StoreError> {
        let len = len.min(MAX_IO);
        Self::check_range(offset, len)?;
        if len == 0 {
            return Ok(0);
        }
        let file = self.file(id)?;
        let mut done = 0usize;
        while done < len {
            let iov = libc::iovec {
                // SAFETY: done < len: inside the caller's range.
                iov_base: unsafe { dst.add(done) }.cast(),
                iov_len: len - done,
            };
            // offset + len <= i64::MAX (checked above): no overflow, valid off_t.
            let at = (offset + done as u64) as libc::off_t;
            // SAFETY: iov names `len - done` bytes of the caller's writable range (contract);
            // the descriptor is open while `file` lives.
            let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, at, libc::RWF_NOWAIT) };
            if n == 0 {
                break;
            }
            if n > 0 {
                done += n as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) | Some(libc::EOPNOTSUPP) => {
                    // The rest needs the device (or the file system has no RWF_NOWAIT):
                    // the engine reads it, and it is copied in once.
                    let rest = self.read(id, offset + done as u64, len - done)?;
                    let k = rest.len().min(len - done);
                    // SAFETY: k <= len - done bytes inside the caller's range; `rest` is a
                    // private buffer, so the ranges do not overlap.
                    unsafe { std::ptr::copy_nonoverlapping(rest.as_ptr(), dst.add(done), k) };
                    done += k;
                    break;
                }
                _ => return Err(Self::io_err(id, "read", e)),
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use crate::object::{Attributes, ObjectId, ObjectKind};
    use crate::{ObjectStore, StoreOptions};

    #[test]
    fn read_into_matches_read_short_at_end_and_past_end() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::create(dir.path(), StoreOptions::default()).unwrap();
        let id = ObjectId(store.reserve(1).unwrap().first.0);
        store
            .create_object(id, &Attributes::new(ObjectKind::Regular, 0o644))
            .unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        store.write(id, 0, data.clone().into()).unwrap();
        let mut buf = vec![0xAAu8; 8192];
        // SAFETY: buf is private, writable, 8192 bytes, and not referenced during the call.
        let n = unsafe { store.read_into(id, 5000, buf.as_mut_ptr(), 8192) }.unwrap();
        assert_eq!(n, 5000, "short at the end of the object");
        assert_eq!(&buf[..n], &data[5000..]);
        assert_eq!(buf[n], 0xAA, "nothing written past the data");
        // SAFETY: as above.
        let n = unsafe { store.read_into(id, 20_000, buf.as_mut_ptr(), 10) }.unwrap();
        assert_eq!(n, 0);
        // SAFETY: as above (the range check fails before anything is written).
        let r = unsafe { store.read_into(id, u64::MAX - 1, buf.as_mut_ptr(), 10) };
        assert!(r.is_err(), "offset + len beyond i64::MAX is refused");
    }
}
