//! Contents of special files (§4.2.3: "special files are stored as regular objects whose
//! contents follow a defined format").
//!
//! | kind | object contents |
//! |---|---|
//! | symlink | the target bytes, verbatim (never interpreted by the server) |
//! | character device | ASCII `"c MAJOR MINOR"`, e.g. `c 1 3` |
//! | block device | ASCII `"b MAJOR MINOR"`, e.g. `b 8 0` |
//! | FIFO, socket | empty |
//!
//! Nothing here ever opens a host file: a device node is a few bytes in an object.

use envoy_storage::ObjectKind;

/// The object contents for a device node.
pub fn device_contents(kind: ObjectKind, major: u32, minor: u32) -> Option<String> {
    match kind {
        ObjectKind::CharDevice => Some(format!("c {major} {minor}")),
        ObjectKind::BlockDevice => Some(format!("b {major} {minor}")),
        _ => None,
    }
}

/// Parses `"c 1 3"` / `"b 8 0"` into `(major, minor)`.
pub fn parse_device(data: &[u8]) -> Option<(u32, u32)> {
    let s = std::str::from_utf8(data).ok()?;
    let mut it = s.split_ascii_whitespace();
    let kind = it.next()?;
    if kind != "c" && kind != "b" {
        return None;
    }
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Some((major, minor))
}

/// Linux `dev_t` encoding of `(major, minor)` (as `makedev` in glibc).
pub fn makedev(major: u32, minor: u32) -> u64 {
    let (ma, mi) = (u64::from(major), u64::from(minor));
    ((ma & 0xffff_f000) << 32) | ((ma & 0xfff) << 8) | ((mi & 0xffff_ff00) << 12) | (mi & 0xff)
}

/// `S_IF*` type bits of a kind.
pub fn type_bits(kind: ObjectKind) -> u32 {
    match kind {
        ObjectKind::Regular => libc::S_IFREG,
        ObjectKind::Directory => libc::S_IFDIR,
        ObjectKind::Symlink => libc::S_IFLNK,
        ObjectKind::CharDevice => libc::S_IFCHR,
        ObjectKind::BlockDevice => libc::S_IFBLK,
        ObjectKind::Fifo => libc::S_IFIFO,
        ObjectKind::Socket => libc::S_IFSOCK,
    }
}

/// The kind named by the `S_IF*` bits of `mode`.
pub fn kind_from_mode(mode: u32) -> Option<ObjectKind> {
    Some(match mode & libc::S_IFMT {
        libc::S_IFREG | 0 => ObjectKind::Regular,
        libc::S_IFDIR => ObjectKind::Directory,
        libc::S_IFLNK => ObjectKind::Symlink,
        libc::S_IFCHR => ObjectKind::CharDevice,
        libc::S_IFBLK => ObjectKind::BlockDevice,
        libc::S_IFIFO => ObjectKind::Fifo,
        libc::S_IFSOCK => ObjectKind::Socket,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_contents_round_trip() {
        let c = device_contents(ObjectKind::CharDevice, 1, 3).unwrap_or_default();
        assert_eq!(c, "c 1 3");
        assert_eq!(parse_device(c.as_bytes()), Some((1, 3)));
        assert_eq!(parse_device(b"b 8 0"), Some((8, 0)));
        assert_eq!(parse_device(b"x 1 2"), None);
        assert_eq!(parse_device(b"c 1"), None);
        assert_eq!(makedev(8, 1), 0x801);
    }
}
