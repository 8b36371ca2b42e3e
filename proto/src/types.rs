//! Identifiers, the [`Dialect`] switch and the numeric constants clients put on the wire.
//!
//! Every value here is a wire value: the numbers are the ones Linux's 9P client
//! (`include/net/9p/9p.h`) and Plan 9's `fcall.h` use, so a server can compare a request field
//! against them directly.

use std::fmt;

/// A request tag: `tag[2]`. The client picks it; the reply carries it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Tag(pub u16);

impl Tag {
    /// The tag of `Tversion`/`Rversion`, which run before tags mean anything.
    pub const NOTAG: Tag = Tag(0xffff);
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A file handle number chosen by the client: `fid[4]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Fid(pub u32);

impl Fid {
    /// "No fid": the `afid` of an attach without authentication.
    pub const NOFID: Fid = Fid(0xffff_ffff);
}

impl fmt::Display for Fid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The server's unique identity of a file: `qid[13]` = `type[1] version[4] path[8]`.
///
/// `path` must be unique and stable for the life of the object across the whole export (the
/// Linux client keys its inode cache on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Qid {
    /// `QT*` bits, see [`qid_type`].
    pub ty: u8,
    /// Changes whenever the file is modified (0 for servers that do not track versions).
    pub version: u32,
    /// The unique object number.
    pub path: u64,
}

impl Qid {
    /// Encoded size of a qid.
    pub const LEN: usize = 13;
}

/// `Qid::ty` bits (`QT*`), the top byte of the 9P2000 `DM*` mode bits.
pub mod qid_type {
    /// Directory.
    pub const DIR: u8 = 0x80;
    /// Append-only file.
    pub const APPEND: u8 = 0x40;
    /// Exclusive-use file.
    pub const EXCL: u8 = 0x20;
    /// Mounted channel.
    pub const MOUNT: u8 = 0x10;
    /// Authentication file (the `aqid` of `Rauth`).
    pub const AUTH: u8 = 0x08;
    /// Non-backed-up file.
    pub const TMP: u8 = 0x04;
    /// Symbolic link (9P2000.u/.L).
    pub const SYMLINK: u8 = 0x02;
    /// Hard link (9P2000.u).
    pub const LINK: u8 = 0x01;
    /// Plain file.
    pub const FILE: u8 = 0x00;
}

/// The protocol variant spoken on a connection, fixed by the `Tversion` handshake.
///
/// | dialect | version string | differences on the wire |
/// |---|---|---|
/// | [`Dialect::P2000`] | `"9P2000"` | base protocol |
/// | [`Dialect::P2000u`] | `"9P2000.u"` | `n_uname[4]` in Tauth/Tattach, `extension[s]` in Tcreate, stat gains `extension[s] n_uid[4] n_gid[4] n_muid[4]`, Rerror gains `errno[4]` |
/// | [`Dialect::P2000L`] | `"9P2000.L"` | `n_uname[4]` in Tauth/Tattach; Linux operations (lopen, getattr, readdir, ...) replace open/create/stat/wstat; errors are Rlerror |
/// | [`Dialect::Storage`] | `"Envoy.storage.1"` | Envoy's storage service: Tversion, Rlerror and types 160–191 only |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// Plain 9P2000 (Plan 9 manual section 5).
    P2000,
    /// 9P2000.u: Unix extensions (numeric ids, symlinks and devices, errno).
    P2000u,
    /// 9P2000.L: the Linux dialect (the default of Linux's v9fs).
    P2000L,
    /// Envoy's storage service protocol, framed like 9P.
    Storage,
}

impl Dialect {
    /// Every dialect, for iteration in servers and tests.
    pub const ALL: [Dialect; 4] = [
        Dialect::P2000,
        Dialect::P2000u,
        Dialect::P2000L,
        Dialect::Storage,
    ];

    /// The `version[s]` string of `Tversion`/`Rversion` naming this dialect.
    pub const fn version_str(self) -> &'static str {
        match self {
            Dialect::P2000 => VERSION_9P2000,
            Dialect::P2000u => VERSION_9P2000_U,
            Dialect::P2000L => VERSION_9P2000_L,
            Dialect::Storage => VERSION_STORAGE,
        }
    }

    /// The dialect named by a `Tversion` string, if known. Plan 9 allows a suffix after a
    /// period on unknown variants; this function only recognises the exact strings.
    pub fn from_version_str(s: &str) -> Option<Dialect> {
        Dialect::ALL.into_iter().find(|d| d.version_str() == s)
    }

    /// Whether Tauth/Tattach carry `n_uname[4]` (9P2000.u and 9P2000.L).
    pub const fn has_n_uname(self) -> bool {
        matches!(self, Dialect::P2000u | Dialect::P2000L)
    }

    /// Whether the 9P2000.u extensions of stat, Tcreate and Rerror are on the wire.
    pub const fn is_dotu(self) -> bool {
        matches!(self, Dialect::P2000u)
    }

    pub(crate) const fn bit(self) -> u8 {
        match self {
            Dialect::P2000 => 1,
            Dialect::P2000u => 2,
            Dialect::P2000L => 4,
            Dialect::Storage => 8,
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.version_str())
    }
}

/// A set of dialects: the dialects in which a message type is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DialectSet(u8);

impl DialectSet {
    /// Only Tversion/Rversion: every dialect.
    pub const ALL: DialectSet = DialectSet(1 | 2 | 4 | 8);
    /// The operations common to 9P2000, 9P2000.u and 9P2000.L.
    pub const NINE: DialectSet = DialectSet(1 | 2 | 4);
    /// 9P2000 and 9P2000.u only (open, create, stat, wstat, Rerror).
    pub const CLASSIC: DialectSet = DialectSet(1 | 2);
    /// 9P2000.L only.
    pub const LINUX: DialectSet = DialectSet(4);
    /// 9P2000.L and the storage service (Rlerror).
    pub const LINUX_STORAGE: DialectSet = DialectSet(4 | 8);
    /// The storage service only.
    pub const STORAGE: DialectSet = DialectSet(8);

    /// Whether `d` is in the set.
    pub const fn contains(self, d: Dialect) -> bool {
        self.0 & d.bit() != 0
    }
}

/// `"9P2000"`.
pub const VERSION_9P2000: &str = "9P2000";
/// `"9P2000.u"`.
pub const VERSION_9P2000_U: &str = "9P2000.u";
/// `"9P2000.L"`.
pub const VERSION_9P2000_L: &str = "9P2000.L";
/// `"Envoy.storage.1"`: the storage service, revision 1. A server that does not speak it
/// answers `Rversion` with `"unknown"`, as 9P prescribes.
pub const VERSION_STORAGE: &str = "Envoy.storage.1";
/// The `Rversion` string refusing every offered version.
pub const VERSION_UNKNOWN: &str = "unknown";

/// Maximum number of names in one Twalk (and qids in one Rwalk).
pub const P9_MAXWELEM: usize = 16;
/// `n_uname`/`n_uid` value meaning "no numeric id given" (Linux `P9_NONUNAME`, `~0`).
pub const NONUNAME: u32 = 0xffff_ffff;
/// Header of every frame: `size[4] type[1] tag[2]`.
pub const HEADER_LEN: usize = 7;
/// Bytes in front of the data of Rread/Rreaddir/Rsread: header + `count[4]`. A read count may be
/// at most `msize - IO_REPLY_HEADER_LEN` so the reply fits in msize.
pub const IO_REPLY_HEADER_LEN: u32 = 11;
/// Linux's `P9_IOHDRSZ`: the header allowance Linux subtracts from msize for I/O sizes.
pub const P9_IOHDRSZ: u32 = 24;
/// Linux's `P9_READDIRHDRSZ`.
pub const P9_READDIRHDRSZ: u32 = 24;

/// 9P2000 `Dir.mode` bits (`DM*`), used in stat, Tcreate `perm` and Twstat.
pub mod dm {
    /// Directory.
    pub const DIR: u32 = 0x8000_0000;
    /// Append only.
    pub const APPEND: u32 = 0x4000_0000;
    /// Exclusive use.
    pub const EXCL: u32 = 0x2000_0000;
    /// Mounted channel.
    pub const MOUNT: u32 = 0x1000_0000;
    /// Authentication file.
    pub const AUTH: u32 = 0x0800_0000;
    /// Non-backed-up file.
    pub const TMP: u32 = 0x0400_0000;
    /// Symbolic link (9P2000.u).
    pub const SYMLINK: u32 = 0x0200_0000;
    /// Hard link (9P2000.u; Tcreate with the target fid in `extension`).
    pub const LINK: u32 = 0x0100_0000;
    /// Device file (9P2000.u; `extension` is "b major minor" or "c major minor").
    pub const DEVICE: u32 = 0x0080_0000;
    /// Named pipe (9P2000.u).
    pub const NAMEDPIPE: u32 = 0x0020_0000;
    /// Socket (9P2000.u).
    pub const SOCKET: u32 = 0x0010_0000;
    /// Set-user-id (9P2000.u).
    pub const SETUID: u32 = 0x0008_0000;
    /// Set-group-id (9P2000.u).
    pub const SETGID: u32 = 0x0004_0000;
    /// Sticky bit (9P2000.u).
    pub const SETVTX: u32 = 0x0001_0000;
    /// Read permission for the owner (others and group are shifted right by 3 and 6).
    pub const READ: u32 = 0o400;
    /// Write permission for the owner.
    pub const WRITE: u32 = 0o200;
    /// Execute permission for the owner.
    pub const EXEC: u32 = 0o100;
}

/// 9P2000 `Topen`/`Tcreate` mode byte (`O*`).
pub mod open {
    /// Read only.
    pub const READ: u8 = 0;
    /// Write only.
    pub const WRITE: u8 = 1;
    /// Read and write.
    pub const RDWR: u8 = 2;
    /// Execute (read permission plus execute check).
    pub const EXEC: u8 = 3;
    /// Truncate on open.
    pub const TRUNC: u8 = 0x10;
    /// Close on exec (not sent over the wire by most clients).
    pub const REXEC: u8 = 0x20;
    /// Remove the file when the fid is clunked.
    pub const RCLOSE: u8 = 0x40;
    /// Append (9P2000.u, Linux `P9_OAPPEND`).
    pub const APPEND: u8 = 0x80;
}

/// `Tlopen`/`Tlcreate` flags: Linux `O_*` values as 9P2000.L defines them (`P9_DOTL_*`,
/// the x86 numbering, whatever the client's architecture).
pub mod lopen {
    /// Read only.
    pub const RDONLY: u32 = 0;
    /// Write only.
    pub const WRONLY: u32 = 1;
    /// Read and write.
    pub const RDWR: u32 = 2;
    /// Access-mode mask.
    pub const ACCMODE: u32 = 3;
    /// Create if missing.
    pub const CREATE: u32 = 0o100;
    /// Fail if it exists (with CREATE).
    pub const EXCL: u32 = 0o200;
    /// Do not become the controlling terminal.
    pub const NOCTTY: u32 = 0o400;
    /// Truncate.
    pub const TRUNC: u32 = 0o1000;
    /// Append.
    pub const APPEND: u32 = 0o2000;
    /// Non-blocking.
    pub const NONBLOCK: u32 = 0o4000;
    /// Synchronous data writes.
    pub const DSYNC: u32 = 0o10000;
    /// Signal-driven I/O.
    pub const FASYNC: u32 = 0o20000;
    /// Direct I/O.
    pub const DIRECT: u32 = 0o40000;
    /// Large file.
    pub const LARGEFILE: u32 = 0o100000;
    /// Must be a directory.
    pub const DIRECTORY: u32 = 0o200000;
    /// Do not follow a final symlink.
    pub const NOFOLLOW: u32 = 0o400000;
    /// Do not update atime.
    pub const NOATIME: u32 = 0o1000000;
    /// Close on exec.
    pub const CLOEXEC: u32 = 0o2000000;
    /// Synchronous writes (`P9_DOTL_SYNC`).
    pub const SYNC: u32 = 0o4000000;
}

/// `Tsetattr.valid` bits (`P9_ATTR_*`).
pub mod setattr {
    /// Set mode.
    pub const MODE: u32 = 0x1;
    /// Set uid.
    pub const UID: u32 = 0x2;
    /// Set gid.
    pub const GID: u32 = 0x4;
    /// Set size (truncate).
    pub const SIZE: u32 = 0x8;
    /// Set atime (to now unless ATIME_SET).
    pub const ATIME: u32 = 0x10;
    /// Set mtime (to now unless MTIME_SET).
    pub const MTIME: u32 = 0x20;
    /// Set ctime.
    pub const CTIME: u32 = 0x40;
    /// atime given in the message.
    pub const ATIME_SET: u32 = 0x80;
    /// mtime given in the message.
    pub const MTIME_SET: u32 = 0x100;
}

/// `Tgetattr.request_mask` / `Rgetattr.valid` bits (`P9_STATS_*`).
pub mod getattr {
    /// Mode.
    pub const MODE: u64 = 0x1;
    /// Link count.
    pub const NLINK: u64 = 0x2;
    /// Owner.
    pub const UID: u64 = 0x4;
    /// Group.
    pub const GID: u64 = 0x8;
    /// Device number.
    pub const RDEV: u64 = 0x10;
    /// Access time.
    pub const ATIME: u64 = 0x20;
    /// Modification time.
    pub const MTIME: u64 = 0x40;
    /// Change time.
    pub const CTIME: u64 = 0x80;
    /// Inode number (qid.path).
    pub const INO: u64 = 0x100;
    /// Size.
    pub const SIZE: u64 = 0x200;
    /// Blocks.
    pub const BLOCKS: u64 = 0x400;
    /// Birth time.
    pub const BTIME: u64 = 0x800;
    /// Generation.
    pub const GEN: u64 = 0x1000;
    /// Data version.
    pub const DATA_VERSION: u64 = 0x2000;
    /// Everything `stat(2)` returns.
    pub const BASIC: u64 = 0x7ff;
    /// Every field.
    pub const ALL: u64 = 0x3fff;
}

/// Tlock/Tgetlock constants.
pub mod lock {
    /// Read (shared) lock.
    pub const TYPE_RDLCK: u8 = 0;
    /// Write (exclusive) lock.
    pub const TYPE_WRLCK: u8 = 1;
    /// Unlock.
    pub const TYPE_UNLCK: u8 = 2;
    /// Tlock flag: block until granted (the server may still answer BLOCKED).
    pub const FLAGS_BLOCK: u32 = 1;
    /// Tlock flag: reclaim after a server restart.
    pub const FLAGS_RECLAIM: u32 = 2;
    /// Rlock: granted.
    pub const STATUS_SUCCESS: u8 = 0;
    /// Rlock: conflicting lock held.
    pub const STATUS_BLOCKED: u8 = 1;
    /// Rlock: error.
    pub const STATUS_ERROR: u8 = 2;
    /// Rlock: server in its grace period.
    pub const STATUS_GRACE: u8 = 3;
}

/// Txattrcreate flags (Linux `XATTR_*`).
pub mod xattr {
    /// Fail if the attribute exists.
    pub const CREATE: u32 = 1;
    /// Fail if the attribute does not exist.
    pub const REPLACE: u32 = 2;
}

/// Tunlinkat flags.
pub mod unlinkat {
    /// Remove a directory (Linux `AT_REMOVEDIR`).
    pub const REMOVEDIR: u32 = 0x200;
}

/// Directory-entry `type` bytes of Rreaddir (Linux `DT_*`).
pub mod dirent_type {
    /// Unknown.
    pub const UNKNOWN: u8 = 0;
    /// FIFO.
    pub const FIFO: u8 = 1;
    /// Character device.
    pub const CHR: u8 = 2;
    /// Directory.
    pub const DIR: u8 = 4;
    /// Block device.
    pub const BLK: u8 = 6;
    /// Regular file.
    pub const REG: u8 = 8;
    /// Symbolic link.
    pub const LNK: u8 = 10;
    /// Socket.
    pub const SOCK: u8 = 12;
}
