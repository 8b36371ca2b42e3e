//! `/dev/xen/gntdev`: mapping pages a guest granted to this domain.
//!
//! `IOCTL_GNTDEV_MAP_GRANT_REF` (0x00184700) records the refs and returns a byte offset
//! (`index`); `mmap(NULL, count*4096, RW, MAP_SHARED, fd, index)` maps them contiguously;
//! teardown is `munmap` then `IOCTL_GNTDEV_UNMAP_GRANT_REF` (0x00104701). Argument layouts:
//!
//! ```text
//! MAP:   0 u32 count | 4 u32 pad | 8 u64 index (out) | 16 {u32 domid, u32 ref} × count
//! UNMAP: 0 u64 index | 8 u32 count | 12 u32 pad
//! ```

use std::fs::OpenOptions;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use super::ioctl_buf;
use crate::hv::{ForeignPages, GrantMapper, HvError, XEN_PAGE_SIZE};
use crate::ids::{DomId, GrantRef};

const IOCTL_GNTDEV_MAP_GRANT_REF: u64 = 0x0018_4700;
const IOCTL_GNTDEV_UNMAP_GRANT_REF: u64 = 0x0010_4701;
/// Default path.
pub const GNTDEV_PATH: &str = "/dev/xen/gntdev";
/// The gntdev module's default per-mapping limit is 65536 grants; a 9pfs ring needs 512.
pub const MAX_REFS: usize = 4096;

/// An open gntdev.
#[derive(Debug, Clone)]
pub struct Gntdev {
    fd: Arc<OwnedFd>,
}

impl Gntdev {
    /// Opens [`GNTDEV_PATH`].
    pub fn open() -> Result<Gntdev, HvError> {
        Gntdev::open_path(GNTDEV_PATH)
    }

    /// Opens a gntdev device node.
    pub fn open_path(path: &str) -> Result<Gntdev, HvError> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| HvError::Open {
                path: path.into(),
                source,
            })?;
        Ok(Gntdev {
            fd: Arc::new(OwnedFd::from(f)),
        })
    }
}

/// Builds the MAP_GRANT_REF argument as 8-byte words (so `index` is aligned).
fn map_arg(domid: DomId, refs: &[GrantRef]) -> Vec<u64> {
    let mut bytes = Vec::with_capacity(16 + 8 * refs.len());
    bytes.extend_from_slice(&(refs.len() as u32).to_ne_bytes());
    bytes.extend_from_slice(&0u32.to_ne_bytes());
    bytes.extend_from_slice(&0u64.to_ne_bytes());
    for r in refs {
        bytes.extend_from_slice(&u32::from(domid.0).to_ne_bytes());
        bytes.extend_from_slice(&r.0.to_ne_bytes());
    }
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect()
}

fn unmap_arg(index: u64, count: u32) -> [u64; 2] {
    let mut w = [0u8; 8];
    w[..4].copy_from_slice(&count.to_ne_bytes());
    [index, u64::from_ne_bytes(w)]
}

impl GrantMapper for Gntdev {
    fn map(&self, domid: DomId, refs: &[GrantRef]) -> Result<Box<dyn ForeignPages>, HvError> {
        if refs.is_empty() || refs.len() > MAX_REFS {
            return Err(HvError::TooMany {
                count: refs.len(),
                max: MAX_REFS,
            });
        }
        let mut arg = map_arg(domid, refs);
        ioctl_buf(
            self.fd.as_fd(),
            "IOCTL_GNTDEV_MAP_GRANT_REF",
            IOCTL_GNTDEV_MAP_GRANT_REF,
            &mut arg,
        )?;
        let index = arg[1];
        let len = refs.len() * XEN_PAGE_SIZE;
        let count = refs.len() as u32;
        let unmap = |fd: &OwnedFd| {
            let mut u = unmap_arg(index, count);
            if let Err(e) = ioctl_buf(
                fd.as_fd(),
                "IOCTL_GNTDEV_UNMAP_GRANT_REF",
                IOCTL_GNTDEV_UNMAP_GRANT_REF,
                &mut u,
            ) {
                tracing::warn!(error = %e, "gntdev unmap failed");
            }
        };
        let mut tries = 0;
        let ptr = loop {
            // SAFETY: a fresh mapping chosen by the kernel (NULL hint), of the length and offset
            // the MAP ioctl recorded; it aliases no Rust object. The kernel keeps the pages
            // alive until munmap.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    std::os::fd::AsRawFd::as_raw_fd(&*self.fd),
                    index as libc::off_t,
                )
            };
            if p != libc::MAP_FAILED {
                break p;
            }
            let err = std::io::Error::last_os_error();
            // A paged-out grant: libxengnttab retries after 1 ms.
            if err.raw_os_error() == Some(libc::EAGAIN) && tries < 100 {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
                continue;
            }
            unmap(&self.fd);
            return Err(HvError::Sys {
                op: "mmap of granted pages",
                source: err,
            });
        };
        Ok(Box::new(GntMapping {
            fd: Arc::clone(&self.fd),
            ptr: ptr.cast(),
            len,
            index,
            count,
        }))
    }
}

/// Granted pages mapped through gntdev.
#[derive(Debug)]
pub struct GntMapping {
    fd: Arc<OwnedFd>,
    ptr: *mut u8,
    len: usize,
    index: u64,
    count: u32,
}

// SAFETY: the mapping is plain shared memory owned by this value; accesses go through raw
// pointers with volatile/atomic operations (the ring code), never through Rust references.
unsafe impl Send for GntMapping {}
// SAFETY: as above; the value itself has no interior mutability.
unsafe impl Sync for GntMapping {}

impl ForeignPages for GntMapping {
    fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }
    fn len(&self) -> usize {
        self.len
    }
}

impl Drop for GntMapping {
    /// Order: munmap first (the kernel refuses to unmap grants still mapped), then
    /// UNMAP_GRANT_REF. Failures are logged.
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the range mmap returned and nothing else unmaps it.
        if unsafe { libc::munmap(self.ptr.cast(), self.len) } != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "munmap of grants failed");
        }
        let mut u = unmap_arg(self.index, self.count);
        if let Err(e) = ioctl_buf(
            self.fd.as_fd(),
            "IOCTL_GNTDEV_UNMAP_GRANT_REF",
            IOCTL_GNTDEV_UNMAP_GRANT_REF,
            &mut u,
        ) {
            tracing::warn!(error = %e, "gntdev unmap failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_arg_layout_matches_uapi() {
        let a = map_arg(DomId(7), &[GrantRef(0x11), GrantRef(0x22)]);
        let b: Vec<u8> = a.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(b.len(), 16 + 16);
        assert_eq!(&b[0..4], &2u32.to_ne_bytes());
        assert_eq!(&b[16..20], &7u32.to_ne_bytes());
        assert_eq!(&b[20..24], &0x11u32.to_ne_bytes());
        assert_eq!(&b[28..32], &0x22u32.to_ne_bytes());
        let u = unmap_arg(0x1000, 3);
        let ub: Vec<u8> = u.iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(&ub[0..8], &0x1000u64.to_ne_bytes());
        assert_eq!(&ub[8..12], &3u32.to_ne_bytes());
    }

    #[test]
    fn gntdev_missing_device_is_open_error() {
        let e = Gntdev::open_path("/nonexistent/gntdev").unwrap_err();
        assert!(matches!(e, HvError::Open { .. }), "{e}");
    }
}
