//! POSIX permission checks for the attaching user.
//!
//! The credentials of a fid are the numeric uid its attach named (9P2000.L `n_uname`,
//! 9P2000.u `n_uname`/`uname` as a number). 9P carries no supplementary groups, so envoyd
//! assumes the user-private-group convention: a user's only group is the group with the same
//! number as the uid. uid 0 bypasses read/write checks and needs one execute bit for execute,
//! as on Linux.

use envoy_storage::{Attributes, ObjectKind};

use crate::error::{FsError, FsResult};

/// Read permission.
pub const R: u32 = 4;
/// Write permission.
pub const W: u32 = 2;
/// Execute / search permission.
pub const X: u32 = 1;
/// Sticky bit.
pub const S_ISVTX: u32 = 0o1000;
/// Set-group-id bit.
pub const S_ISGID: u32 = 0o2000;
/// Set-user-id bit.
pub const S_ISUID: u32 = 0o4000;

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cred {
    /// Numeric user.
    pub uid: u32,
    /// Numeric group (equal to the uid by convention, see the module docs).
    pub gid: u32,
}

impl Cred {
    /// Credentials of `uid` under the user-private-group convention.
    pub fn user(uid: u32) -> Cred {
        Cred { uid, gid: uid }
    }

    /// Whether this is root.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Whether the user owns `a` or is root.
    pub fn owns(&self, a: &Attributes) -> bool {
        self.is_root() || self.uid == a.uid
    }
}

/// Whether `cred` has every bit of `want` (`R|W|X`) on an object with attributes `a`.
pub fn allowed(a: &Attributes, cred: &Cred, want: u32) -> bool {
    if cred.is_root() {
        if want & X == 0 || a.kind == ObjectKind::Directory {
            return true;
        }
        return a.mode & 0o111 != 0;
    }
    let class = if cred.uid == a.uid {
        (a.mode >> 6) & 7
    } else if cred.gid == a.gid {
        (a.mode >> 3) & 7
    } else {
        a.mode & 7
    };
    class & want == want
}

/// `EACCES` unless [`allowed`].
pub fn check(a: &Attributes, cred: &Cred, want: u32) -> FsResult<()> {
    if allowed(a, cred, want) {
        Ok(())
    } else {
        Err(FsError::Access)
    }
}

/// The sticky-directory rule for removing or replacing `victim` in `dir`: in a sticky
/// directory only the owner of the file, the owner of the directory or root may.
pub fn check_sticky(dir: &Attributes, victim: &Attributes, cred: &Cred) -> FsResult<()> {
    if dir.mode & S_ISVTX != 0 && !cred.is_root() && cred.uid != dir.uid && cred.uid != victim.uid {
        return Err(FsError::Perm);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(mode: u32, uid: u32, gid: u32) -> Attributes {
        Attributes {
            uid,
            gid,
            ..Attributes::new(ObjectKind::Regular, mode)
        }
    }

    #[test]
    fn allowed_owner_group_other_classes() {
        let a = attr(0o640, 1000, 1000);
        assert!(allowed(&a, &Cred::user(1000), R | W));
        assert!(!allowed(&a, &Cred::user(1001), R));
        assert!(allowed(&a, &Cred::user(0), R | W));
        assert!(
            !allowed(&a, &Cred::user(0), X),
            "root needs an x bit to execute"
        );
        let g = attr(0o070, 5, 1001);
        assert!(allowed(&g, &Cred::user(1001), R | W | X));
        assert!(
            !allowed(&g, &Cred::user(5), R),
            "owner class wins even when empty"
        );
    }

    #[test]
    fn sticky_other_user_eperm() {
        let dir = attr(0o1777, 0, 0);
        let f = attr(0o644, 1000, 1000);
        assert!(check_sticky(&dir, &f, &Cred::user(1001)).is_err());
        assert!(check_sticky(&dir, &f, &Cred::user(1000)).is_ok());
        assert!(check_sticky(&dir, &f, &Cred::user(0)).is_ok());
    }
}
