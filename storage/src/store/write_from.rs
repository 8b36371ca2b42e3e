//! Writes straight from caller-owned memory that is not a Rust buffer: envoyd's zero-copy
//! `Twrite` over a shared-memory ring, where the payload stays in the ring's request half and
//! the only copy of the data is the kernel's, ring → page cache.
//!
//! The write is `pwritev` on the calling thread, as [`crate::engine`]'s synchronous engine
//! does it (the io_uring engine first tries the same page-cache copy inline with
//! `RWF_NOWAIT`). It is not handed to io_uring: the source would have to stay pinned until the
//! completion, and a buffered write only waits when the kernel throttles dirty pages. Checks,
//! crash points and error mapping are those of [`ObjectStore::write`].

use std::io;
use std::os::fd::AsRawFd;

use super::ObjectStore;
use crate::error::StoreError;
use crate::object::ObjectId;
use crate::MAX_IO;

impl ObjectStore {
    /// Writes the `len` bytes at `src` at `offset` (all of them; at most [`MAX_IO`]); returns
    /// the bytes written. Same rules and errors as [`ObjectStore::write`].
    ///
    /// # Safety
    ///
    /// `src..src + len` must stay mapped and readable for the whole call, and no Rust
    /// `&mut` reference may point into it meanwhile. It may be memory another process
    /// changes concurrently (a ring shared with a guest): the kernel then writes whatever
    /// bytes it finds, which is the writer's own business, never undefined behaviour here —
    /// the bytes are only ever read by the kernel, never by Rust code.
    pub unsafe fn write_from(
        &self,
        id: ObjectId,
        offset: u64,
        src: *const u8,
        len: usize,
    ) -> Result<usize, StoreError> {
        self.check_writable()?;
        if len > MAX_IO {
            return Err(StoreError::InvalidArgument(format!(
                "write of {len} bytes exceeds the {MAX_IO}-byte limit"
            )));
        }
        Self::check_range(offset, len)?;
        let file = self.file(id)?;
        self.crash_point("write:begin")?;
        // SAFETY: the caller's contract, passed on.
        let r = unsafe { Self::pwrite_all(&file, offset, src, len) }
            .map_err(|e| Self::io_err(id, "write", e));
        self.crash_point("write:done")?;
        r
    }

    /// `pwritev` until all `len` bytes at `src` are written at `offset`.
    ///
    /// # Safety
    ///
    /// As [`ObjectStore::write_from`]; `offset + len <= i64::MAX`.
    unsafe fn pwrite_all(
        file: &std::fs::File,
        offset: u64,
        src: *const u8,
        len: usize,
    ) -> io::Result<usize> {
        let mut done = 0usize;
        while done < len {
            let iov = libc::iovec {
                // SAFETY: done < len: inside the caller's range. The kernel only reads it.
                iov_base: unsafe { src.add(done) }.cast_mut().cast(),
                iov_len: len - done,
            };
            // offset + len <= i64::MAX (contract): no overflow, valid off_t.
            let at = (offset + done as u64) as libc::off_t;
            // SAFETY: iov names `len - done` readable bytes of the caller's range (contract);
            // the descriptor is open while `file` lives.
            let n = unsafe { libc::pwritev(file.as_raw_fd(), &iov, 1, at) };
            if n > 0 {
                done += n as usize;
                continue;
            }
            let e = if n == 0 {
                io::Error::new(io::ErrorKind::WriteZero, "failed to write whole buffer")
            } else {
                io::Error::last_os_error()
            };
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use crate::object::{Attributes, ObjectId, ObjectKind};
    use crate::{ObjectStore, StoreOptions, MAX_IO};

    fn store_with_file() -> (tempfile::TempDir, ObjectStore, ObjectId) {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::create(dir.path(), StoreOptions::default()).unwrap();
        let id = ObjectId(store.reserve(1).unwrap().first.0);
        store
            .create_object(id, &Attributes::new(ObjectKind::Regular, 0o644))
            .unwrap();
        (dir, store, id)
    }

    #[test]
    fn write_from_matches_write_at_every_offset() {
        let (_d, store, id) = store_with_file();
        let data: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let mut expect = Vec::new();
        for (k, off) in [0usize, 1, 4095, 4096, 12_345, 65_537]
            .into_iter()
            .enumerate()
        {
            let piece = &data[k * 7..k * 7 + 4099 + k];
            // SAFETY: `piece` is private, readable, and not mutably referenced meanwhile.
            let n =
                unsafe { store.write_from(id, off as u64, piece.as_ptr(), piece.len()) }.unwrap();
            assert_eq!(n, piece.len());
            if expect.len() < off + piece.len() {
                expect.resize(off + piece.len(), 0);
            }
            expect[off..off + piece.len()].copy_from_slice(piece);
        }
        let back = store.read(id, 0, expect.len() + 10).unwrap();
        assert!(back[..] == expect[..], "read back differs");
    }

    #[test]
    fn write_from_bad_ranges_refused_like_write() {
        let (_d, store, id) = store_with_file();
        let b = [1u8; 16];
        // SAFETY: `b` is private and readable; the checks fail before anything is read.
        let r = unsafe { store.write_from(id, u64::MAX - 4, b.as_ptr(), b.len()) };
        assert!(r.is_err(), "offset + len beyond i64::MAX is refused");
        let w = store.write(id, u64::MAX - 4, bytes::Bytes::copy_from_slice(&b));
        assert_eq!(r.unwrap_err().to_string(), w.unwrap_err().to_string());
        // SAFETY: as above (the length check fails before the pointer is used).
        let r = unsafe { store.write_from(id, 0, b.as_ptr(), MAX_IO + 1) };
        assert!(r.is_err(), "more than MAX_IO is refused");
        // SAFETY: as above; nothing is read for an empty write.
        let n = unsafe { store.write_from(id, 5, b.as_ptr(), 0) }.unwrap();
        assert_eq!(n, 0);
        assert_eq!(
            store.stat(id).unwrap().size,
            0,
            "an empty write changes nothing"
        );
    }
}
