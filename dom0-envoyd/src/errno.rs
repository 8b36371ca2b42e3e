//! The one mapping from [`FsError`] to wire errors.
//!
//! 9P2000.L answers with `Rlerror { ecode }` (a Linux errno), 9P2000.u with
//! `Rerror { ename, errno }`, plain 9P2000 with `Rerror { ename }`. Choices where Linux servers
//! differ (documented here so they are made once):
//!
//! | error | errno | why |
//! |---|---|---|
//! | unknown fid (never created, clunked, removed) | `EBADF` | diod's convention; the fid is a handle |
//! | newfid already in use | `EBADF` | the argument names a handle that is not free |
//! | too many fids on the connection | `EMFILE` | the per-connection handle table is full |
//! | fid in the wrong state (walk from an open fid, I/O on an unopened fid) | `EBADF` | as Linux for a descriptor opened the wrong way |
//! | unsupported operation or unknown xattr namespace | `EOPNOTSUPP` | |
//! | Tauth when no authentication is required | `ENOENT` | what diod answers and libnpclient (`diodls`, `diodcat`) accepts as "attach without auth"; the Linux client attaches with `afid = NOFID` after any error |
//! | xattr name over 255 bytes / value over 64 KiB | `ERANGE` / `E2BIG` | as Linux `setxattr` |
//! | over 4 MiB of xattr values pending on one connection | `ENOSPC` | bounded memory per client |
//! | rename/link between fids of different attaches | `EXDEV` | each attach is a mount; no escape into another image |
//! | store errors | the store's own classification ([`envoy_storage::StoreError::errno`]) | |

use crate::error::FsError;

/// The Linux errno for `e`.
pub fn errno(e: &FsError) -> u32 {
    let n = match e {
        FsError::NotFound => libc::ENOENT,
        FsError::Exists => libc::EEXIST,
        FsError::NotDir => libc::ENOTDIR,
        FsError::IsDir => libc::EISDIR,
        FsError::NotEmpty => libc::ENOTEMPTY,
        FsError::Access => libc::EACCES,
        FsError::Perm => libc::EPERM,
        FsError::Inval(_) => libc::EINVAL,
        FsError::NameTooLong => libc::ENAMETOOLONG,
        FsError::BadFid(_) | FsError::FidInUse(_) | FsError::FidState(_) => libc::EBADF,
        FsError::TooManyFids(_) => libc::EMFILE,
        FsError::NotSupported(_) => libc::EOPNOTSUPP,
        FsError::AuthNotRequired => libc::ENOENT,
        FsError::NoData => libc::ENODATA,
        FsError::TooBig(_) => libc::EFBIG,
        FsError::Again => libc::EAGAIN,
        FsError::Busy => libc::EBUSY,
        FsError::ReadOnly => libc::EROFS,
        FsError::Interrupted => libc::EINTR,
        FsError::CrossDevice => libc::EXDEV,
        FsError::Range => libc::ERANGE,
        FsError::NoSpace => libc::ENOSPC,
        FsError::XattrTooBig => libc::E2BIG,
        FsError::Store(s) => s.errno(),
        FsError::Corrupt(_) => libc::EUCLEAN,
    };
    u32::try_from(n).unwrap_or(libc::EIO as u32)
}

/// The `(ename, errno)` pair of a 9P2000/9P2000.u `Rerror`.
pub fn rerror(e: &FsError) -> (String, u32) {
    (e.to_string(), errno(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_store_not_found_is_enoent() {
        let e = FsError::Store(envoy_storage::StoreError::NotFound(
            envoy_storage::ObjectId(9),
        ));
        assert_eq!(errno(&e), libc::ENOENT as u32);
        assert_eq!(errno(&FsError::BadFid(3)), libc::EBADF as u32);
        assert_eq!(rerror(&FsError::NotEmpty).1, libc::ENOTEMPTY as u32);
    }
}
