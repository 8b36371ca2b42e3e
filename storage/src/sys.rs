//! Safe wrappers for the few syscalls std does not offer: statvfs block size, `flock`,
//! reflink (`FICLONE`), `copy_file_range`, and directory fsync. All `unsafe` of the store
//! (outside the io_uring engine) is here.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::StoreError;

/// The host file system's block size for `path` (statvfs `f_bsize`).
pub fn block_size(path: &Path) -> Result<u32, StoreError> {
    let st = nix::sys::statvfs::statvfs(path)
        .map_err(|e| StoreError::io(format!("statvfs {}", path.display()), e.into()))?;
    u32::try_from(st.block_size()).map_err(|_| {
        StoreError::InvalidArgument(format!("block size {} too large", st.block_size()))
    })
}

/// Takes an exclusive, non-blocking `flock` on `file`; `Ok(false)` if someone else holds it.
pub fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: flock on a valid, open descriptor borrowed for the duration of the call; it
    // touches no memory.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// `FICLONE` ioctl: make `dst` share `src`'s extents. Fails with `EOPNOTSUPP`/`EXDEV`/
/// `EINVAL` where the host has no reflinks.
pub fn reflink(src: &File, dst: &File) -> io::Result<()> {
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: FICLONE takes the source descriptor as its integer argument; both descriptors
    // are valid for the duration of the call and no memory is passed.
    let r = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Copies `len` bytes from the start of `src` to the start of `dst` in the kernel.
pub fn copy_range(src: &File, dst: &File, len: u64) -> io::Result<()> {
    let mut off_in: libc::loff_t = 0;
    let mut off_out: libc::loff_t = 0;
    let mut left = len;
    while left > 0 {
        let chunk = usize::try_from(left.min(1 << 30)).unwrap_or(1 << 30);
        // SAFETY: both descriptors are valid; the offset pointers point to live locals that
        // the kernel updates; no other memory is touched.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                &mut off_out,
                chunk,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "source shrank during copy",
            ));
        }
        left -= n as u64;
    }
    Ok(())
}

/// fsyncs a directory so entries created, renamed or removed in it are durable.
pub fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(format!("fsync of directory {}", dir.display()), e))
}

/// Host xattr name under which the store keeps the object attribute `name`.
fn host_xattr_name(name: &str) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(format!("user.envoy.{name}"))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `fgetxattr` of object attribute `name`; `Ok(None)` when it does not exist.
pub fn get_xattr(file: &File, name: &str) -> io::Result<Option<Vec<u8>>> {
    let cname = host_xattr_name(name)?;
    loop {
        // SAFETY: a valid descriptor and NUL-terminated name; a null buffer of size 0 asks
        // only for the value's size.
        let n =
            unsafe { libc::fgetxattr(file.as_raw_fd(), cname.as_ptr(), std::ptr::null_mut(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENODATA) => Ok(None),
                _ => Err(e),
            };
        }
        let mut buf = vec![0u8; usize::try_from(n).unwrap_or(0)];
        // SAFETY: `buf` is a live allocation of exactly `buf.len()` bytes that the kernel
        // fills; the name is NUL-terminated and the descriptor valid.
        let m = unsafe {
            libc::fgetxattr(
                file.as_raw_fd(),
                cname.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if m < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) => continue, // grew in between: ask again
                Some(libc::ENODATA) => return Ok(None),
                _ => return Err(e),
            }
        }
        buf.truncate(usize::try_from(m).unwrap_or(0));
        return Ok(Some(buf));
    }
}

/// `fsetxattr` of object attribute `name` (created or replaced).
pub fn set_xattr(file: &File, name: &str, value: &[u8]) -> io::Result<()> {
    let cname = host_xattr_name(name)?;
    // SAFETY: `value` is a live slice of `value.len()` bytes the kernel only reads; the name
    // is NUL-terminated and the descriptor valid.
    let r = unsafe {
        libc::fsetxattr(
            file.as_raw_fd(),
            cname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `fremovexattr` of object attribute `name`; `Ok(false)` when it did not exist.
pub fn remove_xattr(file: &File, name: &str) -> io::Result<bool> {
    let cname = host_xattr_name(name)?;
    // SAFETY: a valid descriptor and a NUL-terminated name; no other memory is passed.
    let r = unsafe { libc::fremovexattr(file.as_raw_fd(), cname.as_ptr()) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENODATA) => Ok(false),
        _ => Err(e),
    }
}

/// The object attribute names on `file` (host names under `user.envoy.`, prefix removed).
pub fn list_xattrs(file: &File) -> io::Result<Vec<String>> {
    loop {
        // SAFETY: a null buffer of size 0 asks only for the list's size.
        let n = unsafe { libc::flistxattr(file.as_raw_fd(), std::ptr::null_mut(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; usize::try_from(n).unwrap_or(0)];
        // SAFETY: `buf` is a live allocation of `buf.len()` bytes that the kernel fills.
        let m = unsafe { libc::flistxattr(file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if m < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue;
            }
            return Err(e);
        }
        buf.truncate(usize::try_from(m).unwrap_or(0));
        return Ok(buf
            .split(|&b| b == 0)
            .filter_map(|n| std::str::from_utf8(n).ok())
            .filter_map(|n| n.strip_prefix("user.envoy."))
            .map(str::to_owned)
            .collect());
    }
}
