//! Linux's Xen user-space devices, wrapped safely: [`gntdev`] (map a guest's grants) and
//! [`evtchn`] (interdomain event channels). Every `unsafe` block in the crate that talks to
//! the kernel lives here. The ioctl numbers are the generic `_IOC` encoding (x86-64, arm64);
//! see `/work/shared/XEN-9PFS.md` §4.

pub mod evtchn;
pub mod gntdev;

use std::os::fd::{AsRawFd, BorrowedFd};

use crate::hv::HvError;

/// `ioctl(fd, request, arg)` on a buffer the kernel reads and may write back.
fn ioctl_buf<T>(
    fd: BorrowedFd<'_>,
    op: &'static str,
    request: u64,
    arg: &mut [T],
) -> Result<i32, HvError> {
    // SAFETY: `arg` is a live, exclusively borrowed buffer; the caller sizes it for `request`
    // (the kernel reads/writes at most the encoded size, and for MAP_GRANT_REF `count`
    // entries that the caller allocated). The fd is valid for the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg.as_mut_ptr()) };
    if r < 0 {
        Err(HvError::last_os(op))
    } else {
        Ok(r)
    }
}
