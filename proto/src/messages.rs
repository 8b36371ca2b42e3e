//! The message table: every message of every dialect, in one declarative macro invocation.
//!
//! Each row reads `type-number Name DIALECTS { field: Type, ... }`. From it the macro generates
//! the message structs, the [`Message`] enum, the [`MsgType`] enum (numbers, names, dialect
//! sets) and the body encoder and decoder. Fields are encoded in row order; a field type's
//! wire form comes from its `Wire` implementation, or from the codec named with `as`
//! (`Stat as NStat`: the `n[2]`-wrapped stat of Rstat/Twstat; `u32 as IoCount`: a read count
//! bounded by msize). A field with `where cond else default` is on the wire only when
//! `Dialect::cond()` holds; otherwise encoding skips it and decoding yields `default`.
//!
//! Body layouts follow Linux's `net/9p/protocol.c` format strings (`d`=u32, `q`=u64, `b`=u8,
//! `w`=u16, `s`=string, `Q`=qid, `S`=stat, `D`=count+data, `?`=9P2000.u/.L only).

use crate::error::{DecodeErrorKind, EncodeError};
use crate::stat::{NStat, ObjAttr, ObjStat, Stat};
use crate::types::{Dialect, DialectSet, Fid, Qid, Tag, HEADER_LEN, NONUNAME};
use crate::wire::{IoCount, Reader, Wire, WireAs, Writer};
use bytes::Bytes;

macro_rules! field_put {
    ($w:ident, $v:expr, $t:ty) => {
        <$t as Wire>::put(&$v, $w)?
    };
    ($w:ident, $v:expr, $t:ty as $c:ty) => {
        <$c as WireAs<$t>>::put(&$v, $w)?
    };
    ($w:ident, $v:expr, $t:ty where $cond:ident else $def:expr) => {
        if $w.dialect().$cond() {
            <$t as Wire>::put(&$v, $w)?
        }
    };
}

macro_rules! field_get {
    ($r:ident, $f:ident, $t:ty) => {
        <$t as Wire>::get($r).map_err(|e| e.in_field(stringify!($f)))?
    };
    ($r:ident, $f:ident, $t:ty as $c:ty) => {
        <$c as WireAs<$t>>::get($r).map_err(|e| e.in_field(stringify!($f)))?
    };
    ($r:ident, $f:ident, $t:ty where $cond:ident else $def:expr) => {
        if $r.dialect().$cond() {
            <$t as Wire>::get($r).map_err(|e| e.in_field(stringify!($f)))?
        } else {
            $def
        }
    };
}

macro_rules! field_len {
    ($d:ident, $v:expr, $t:ty) => {
        <$t as Wire>::wire_len(&$v, $d)
    };
    ($d:ident, $v:expr, $t:ty as $c:ty) => {
        <$c as WireAs<$t>>::wire_len(&$v, $d)
    };
    ($d:ident, $v:expr, $t:ty where $cond:ident else $def:expr) => {
        if $d.$cond() {
            <$t as Wire>::wire_len(&$v, $d)
        } else {
            0
        }
    };
}

#[cfg(test)]
macro_rules! field_gen {
    ($g:ident, $d:ident, $t:ty) => {
        <$t as crate::testgen::GenValue>::gen($g, $d)
    };
    ($g:ident, $d:ident, $t:ty as $c:ty) => {
        <$c as crate::testgen::GenAs<$t>>::gen($g, $d)
    };
    ($g:ident, $d:ident, $t:ty where $cond:ident else $def:expr) => {
        if $d.$cond() {
            <$t as crate::testgen::GenValue>::gen($g, $d)
        } else {
            $def
        }
    };
}

macro_rules! messages {
    ($(
        $(#[doc = $doc:literal])*
        $num:literal $name:ident $dialects:ident {
            $( $(#[doc = $fdoc:literal])* $field:ident : $fty:ty $(as $codec:ty)? $(where $cond:ident else $def:expr)? ),* $(,)?
        }
    )*) => {
        $(
            $(#[doc = $doc])*
            #[doc = concat!("\n\nType number ", stringify!($num), ", valid in [`DialectSet::", stringify!($dialects), "`].")]
            #[derive(Debug, Clone, PartialEq, Eq)]
            pub struct $name {
                $( $(#[doc = $fdoc])* pub $field: $fty, )*
            }

            impl From<$name> for Message {
                fn from(m: $name) -> Message {
                    Message::$name(m)
                }
            }
        )*

        /// Any message of any dialect. T-messages (requests) have even type numbers, their
        /// R-messages (replies) the next odd number; see [`Message::is_request`].
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Message {
            $( $(#[doc = $doc])* $name($name), )*
        }

        /// The type byte of every message.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum MsgType {
            $( $(#[doc = $doc])* $name = $num, )*
        }

        impl MsgType {
            /// Every message type, in table order.
            pub const ALL: &'static [MsgType] = &[$(MsgType::$name),*];

            /// The message type with this number, if any.
            pub const fn from_u8(v: u8) -> Option<MsgType> {
                match v {
                    $( $num => Some(MsgType::$name), )*
                    _ => None,
                }
            }

            /// The message's name, e.g. `"Twalk"`.
            pub const fn name(self) -> &'static str {
                match self {
                    $( MsgType::$name => stringify!($name), )*
                }
            }

            /// The dialects in which this message exists.
            pub const fn dialects(self) -> DialectSet {
                match self {
                    $( MsgType::$name => DialectSet::$dialects, )*
                }
            }
        }

        impl Message {
            /// This message's type.
            pub const fn msg_type(&self) -> MsgType {
                match self {
                    $( Message::$name(_) => MsgType::$name, )*
                }
            }

            /// Length of this message's frame in `dialect`, header and payload included.
            pub fn encoded_len(&self, d: Dialect) -> usize {
                HEADER_LEN + match self {
                    $( Message::$name(m) => {
                        let _ = m;
                        0 $( + field_len!(d, m.$field, $fty $(as $codec)? $(where $cond else $def)?) )*
                    } )*
                }
            }

            pub(crate) fn put_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
                match self {
                    $( Message::$name(m) => {
                        let _ = m;
                        $( field_put!(w, m.$field, $fty $(as $codec)? $(where $cond else $def)?); )*
                    } )*
                }
                Ok(())
            }

            pub(crate) fn get_body(ty: MsgType, r: &mut Reader) -> Result<Message, DecodeErrorKind> {
                let _ = &r;
                Ok(match ty {
                    $( MsgType::$name => Message::$name($name {
                        $( $field: field_get!(r, $field, $fty $(as $codec)? $(where $cond else $def)?), )*
                    }), )*
                })
            }

            /// An arbitrary message of type `ty` valid in `d` (test support).
            #[cfg(test)]
            pub(crate) fn generate(
                ty: MsgType,
                g: &mut crate::testgen::Gen,
                d: Dialect,
            ) -> Message {
                let _ = (&g, d);
                match ty {
                    $( MsgType::$name => Message::$name($name {
                        $( $field: field_gen!(g, d, $fty $(as $codec)? $(where $cond else $def)?), )*
                    }), )*
                }
            }
        }
    };
}

impl DecodeErrorKind {
    /// Names the message field in a truncation error.
    fn in_field(self, field: &'static str) -> DecodeErrorKind {
        match self {
            DecodeErrorKind::Truncated { need, have, .. } => {
                DecodeErrorKind::Truncated { field, need, have }
            }
            other => other,
        }
    }
}

impl MsgType {
    /// Whether this is a T-message (request, even number). A server must answer an R-message
    /// it receives with an error; a client must reject T-messages.
    pub const fn is_request(self) -> bool {
        (self as u8) % 2 == 0
    }

    /// Whether the message exists in `dialect`.
    pub const fn valid_in(self, dialect: Dialect) -> bool {
        self.dialects().contains(dialect)
    }
}

impl Message {
    /// Whether this is a T-message (request). See [`MsgType::is_request`].
    pub const fn is_request(&self) -> bool {
        self.msg_type().is_request()
    }

    /// The message's name, e.g. `"Rlerror"`.
    pub const fn name(&self) -> &'static str {
        self.msg_type().name()
    }

    /// The error reply of `dialect`: `Rlerror { ecode: errno }` in 9P2000.L and the storage
    /// service, `Rerror { ename, errno }` in 9P2000 and 9P2000.u (plain 9P2000 carries only
    /// the text). A server answers every failed request, including one that failed to
    /// decode, with this.
    pub fn error_reply(dialect: Dialect, errno: u32, ename: &str) -> Message {
        match dialect {
            Dialect::P2000L | Dialect::Storage => Message::Rlerror(Rlerror { ecode: errno }),
            Dialect::P2000 | Dialect::P2000u => Message::Rerror(Rerror {
                ename: ename.replace('\0', ""),
                errno: if dialect.is_dotu() { errno } else { 0 },
            }),
        }
    }
}

messages! {
    // ---- 9P2000.L (Linux) --------------------------------------------------------------
    /// Error reply of 9P2000.L and the storage service: `ecode[4]` (a Linux errno).
    7 Rlerror LINUX_STORAGE { /// Linux errno.
        ecode: u32 }
    /// File-system statistics: `fid[4]`.
    8 Tstatfs LINUX { /// Any fid in the file system.
        fid: Fid }
    /// `type[4] bsize[4] blocks[8] bfree[8] bavail[8] files[8] ffree[8] fsid[8] namelen[4]`.
    9 Rstatfs LINUX {
        /// File-system type magic.
        ty: u32,
        /// Block size.
        bsize: u32,
        /// Total blocks.
        blocks: u64,
        /// Free blocks.
        bfree: u64,
        /// Free blocks for unprivileged users.
        bavail: u64,
        /// Total inodes.
        files: u64,
        /// Free inodes.
        ffree: u64,
        /// File-system id.
        fsid: u64,
        /// Maximum name length.
        namelen: u32,
    }
    /// Open: `fid[4] flags[4]` (flags are [`crate::lopen`] values).
    12 Tlopen LINUX { /// Fid to open.
        fid: Fid, /// Linux open flags.
        flags: u32 }
    /// `qid[13] iounit[4]`.
    13 Rlopen LINUX { /// The opened file.
        qid: Qid, /// Maximum atomic I/O size, 0 = msize - 24.
        iounit: u32 }
    /// Create and open: `fid[4] name[s] flags[4] mode[4] gid[4]`; the fid becomes the new file.
    14 Tlcreate LINUX { /// Directory fid; becomes the file.
        fid: Fid, /// New name.
        name: String, /// Linux open flags.
        flags: u32, /// Permission bits.
        mode: u32, /// Group of the new file.
        gid: u32 }
    /// `qid[13] iounit[4]`.
    15 Rlcreate LINUX { /// The new file.
        qid: Qid, /// Maximum atomic I/O size.
        iounit: u32 }
    /// `fid[4] name[s] symtgt[s] gid[4]`.
    16 Tsymlink LINUX { /// Directory fid.
        fid: Fid, /// Link name.
        name: String, /// Link target.
        symtgt: String, /// Group.
        gid: u32 }
    /// `qid[13]`.
    17 Rsymlink LINUX { /// The link.
        qid: Qid }
    /// `dfid[4] name[s] mode[4] major[4] minor[4] gid[4]`.
    18 Tmknod LINUX { /// Directory fid.
        dfid: Fid, /// Name.
        name: String, /// Type and permission bits (`S_IF*`).
        mode: u32, /// Device major.
        major: u32, /// Device minor.
        minor: u32, /// Group.
        gid: u32 }
    /// `qid[13]`.
    19 Rmknod LINUX { /// The node.
        qid: Qid }
    /// `fid[4] dfid[4] name[s]`: move fid's file into dfid under name.
    20 Trename LINUX { /// File to move.
        fid: Fid, /// Target directory.
        dfid: Fid, /// New name.
        name: String }
    /// Empty.
    21 Rrename LINUX {}
    /// `fid[4]`.
    22 Treadlink LINUX { /// The link.
        fid: Fid }
    /// `target[s]`.
    23 Rreadlink LINUX { /// Link contents.
        target: String }
    /// `fid[4] request_mask[8]` ([`crate::getattr`] bits).
    24 Tgetattr LINUX { /// The file.
        fid: Fid, /// Fields wanted.
        request_mask: u64 }
    /// `valid[8] qid[13] mode[4] uid[4] gid[4] nlink[8] rdev[8] size[8] blksize[8] blocks[8]
    /// atime_sec[8] atime_nsec[8] mtime_sec[8] mtime_nsec[8] ctime_sec[8] ctime_nsec[8]
    /// btime_sec[8] btime_nsec[8] gen[8] data_version[8]`.
    25 Rgetattr LINUX {
        /// Fields filled in.
        valid: u64,
        /// Identity.
        qid: Qid,
        /// Type and permission bits.
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
        /// Link count.
        nlink: u64,
        /// Device number.
        rdev: u64,
        /// Size.
        size: u64,
        /// Preferred I/O size.
        blksize: u64,
        /// 512-byte blocks.
        blocks: u64,
        /// Access time.
        atime_sec: u64,
        /// Access time nanoseconds.
        atime_nsec: u64,
        /// Modification time.
        mtime_sec: u64,
        /// Modification time nanoseconds.
        mtime_nsec: u64,
        /// Change time.
        ctime_sec: u64,
        /// Change time nanoseconds.
        ctime_nsec: u64,
        /// Birth time.
        btime_sec: u64,
        /// Birth time nanoseconds.
        btime_nsec: u64,
        /// Generation.
        gen: u64,
        /// Data version.
        data_version: u64,
    }
    /// `fid[4] valid[4] mode[4] uid[4] gid[4] size[8] atime_sec[8] atime_nsec[8] mtime_sec[8]
    /// mtime_nsec[8]` ([`crate::setattr`] bits).
    26 Tsetattr LINUX {
        /// The file.
        fid: Fid,
        /// Fields to set.
        valid: u32,
        /// Mode.
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
        /// Size.
        size: u64,
        /// Access time.
        atime_sec: u64,
        /// Access time nanoseconds.
        atime_nsec: u64,
        /// Modification time.
        mtime_sec: u64,
        /// Modification time nanoseconds.
        mtime_nsec: u64,
    }
    /// Empty.
    27 Rsetattr LINUX {}
    /// `fid[4] newfid[4] name[s]`: newfid reads the attribute (empty name lists them).
    30 Txattrwalk LINUX { /// The file.
        fid: Fid, /// Fid for the attribute.
        newfid: Fid, /// Attribute name.
        name: String }
    /// `size[8]`.
    31 Rxattrwalk LINUX { /// Attribute value size.
        size: u64 }
    /// `fid[4] name[s] attr_size[8] flags[4]`: the fid becomes a write handle for the value.
    32 Txattrcreate LINUX { /// The file; becomes the attribute.
        fid: Fid, /// Attribute name.
        name: String, /// Total value size.
        attr_size: u64, /// [`crate::xattr`] flags.
        flags: u32 }
    /// Empty.
    33 Rxattrcreate LINUX {}
    /// `fid[4] offset[8] count[4]`.
    40 Treaddir LINUX { /// Open directory.
        fid: Fid, /// Cookie from the last entry, 0 to start.
        offset: u64, /// Maximum bytes of entries.
        count: u32 as IoCount }
    /// `count[4] data[count]` of [`crate::DirEntry`] records.
    41 Rreaddir LINUX { /// Directory entries (see [`crate::DirEntries`]).
        data: Bytes }
    /// `fid[4] datasync[4]`.
    50 Tfsync LINUX { /// Open file.
        fid: Fid, /// Non-zero: data only (fdatasync).
        datasync: u32 }
    /// Empty.
    51 Rfsync LINUX {}
    /// `fid[4] type[1] flags[4] start[8] length[8] proc_id[4] client_id[s]`.
    52 Tlock LINUX {
        /// Open file.
        fid: Fid,
        /// [`crate::lock`] TYPE_*.
        ty: u8,
        /// [`crate::lock`] FLAGS_*.
        flags: u32,
        /// First byte.
        start: u64,
        /// Length, 0 = to the end.
        length: u64,
        /// Owner process.
        proc_id: u32,
        /// Owner host.
        client_id: String,
    }
    /// `status[1]`.
    53 Rlock LINUX { /// [`crate::lock`] STATUS_*.
        status: u8 }
    /// `fid[4] type[1] start[8] length[8] proc_id[4] client_id[s]`.
    54 Tgetlock LINUX {
        /// Open file.
        fid: Fid,
        /// Lock type to test.
        ty: u8,
        /// First byte.
        start: u64,
        /// Length.
        length: u64,
        /// Owner process.
        proc_id: u32,
        /// Owner host.
        client_id: String,
    }
    /// `type[1] start[8] length[8] proc_id[4] client_id[s]`: the conflicting lock, or UNLCK.
    55 Rgetlock LINUX {
        /// Lock type.
        ty: u8,
        /// First byte.
        start: u64,
        /// Length.
        length: u64,
        /// Holder process.
        proc_id: u32,
        /// Holder host.
        client_id: String,
    }
    /// `dfid[4] fid[4] name[s]`: hard link fid's file into dfid.
    70 Tlink LINUX { /// Directory.
        dfid: Fid, /// Existing file.
        fid: Fid, /// New name.
        name: String }
    /// Empty.
    71 Rlink LINUX {}
    /// `dfid[4] name[s] mode[4] gid[4]`.
    72 Tmkdir LINUX { /// Parent directory.
        dfid: Fid, /// Name.
        name: String, /// Permission bits.
        mode: u32, /// Group.
        gid: u32 }
    /// `qid[13]`.
    73 Rmkdir LINUX { /// The directory.
        qid: Qid }
    /// `olddirfid[4] oldname[s] newdirfid[4] newname[s]`.
    74 Trenameat LINUX { /// Source directory.
        olddirfid: Fid, /// Source name.
        oldname: String, /// Target directory.
        newdirfid: Fid, /// Target name.
        newname: String }
    /// Empty.
    75 Rrenameat LINUX {}
    /// `dirfid[4] name[s] flags[4]` ([`crate::unlinkat`] flags).
    76 Tunlinkat LINUX { /// Directory.
        dirfid: Fid, /// Name.
        name: String, /// Flags.
        flags: u32 }
    /// Empty.
    77 Runlinkat LINUX {}

    // ---- 9P2000 / 9P2000.u ------------------------------------------------------------
    /// Handshake: `msize[4] version[s]`. Tag must be NOTAG.
    100 Tversion ALL { /// Largest frame the client accepts.
        msize: u32, /// Protocol version string.
        version: String }
    /// `msize[4] version[s]`.
    101 Rversion ALL { /// Negotiated msize (≤ the client's).
        msize: u32, /// Accepted version or "unknown".
        version: String }
    /// `afid[4] uname[s] aname[s]` + `n_uname[4]` in 9P2000.u/.L.
    102 Tauth NINE { /// Fid for the authentication file.
        afid: Fid, /// User name.
        uname: String, /// Tree to attach.
        aname: String, /// Numeric user (9P2000.u/.L), else NONUNAME.
        n_uname: u32 where has_n_uname else NONUNAME }
    /// `aqid[13]`.
    103 Rauth NINE { /// The authentication file.
        aqid: Qid }
    /// `fid[4] afid[4] uname[s] aname[s]` + `n_uname[4]` in 9P2000.u/.L.
    104 Tattach NINE { /// Fid for the root.
        fid: Fid, /// Authentication fid or NOFID.
        afid: Fid, /// User name.
        uname: String, /// Tree to attach.
        aname: String, /// Numeric user (9P2000.u/.L), else NONUNAME.
        n_uname: u32 where has_n_uname else NONUNAME }
    /// `qid[13]`.
    105 Rattach NINE { /// The root.
        qid: Qid }
    /// `ename[s]` + `errno[4]` in 9P2000.u. (There is no Terror; type 106 is invalid.)
    107 Rerror CLASSIC { /// Error text.
        ename: String, /// Unix errno (9P2000.u), else 0.
        errno: u32 where is_dotu else 0 }
    /// `oldtag[2]`.
    108 Tflush NINE { /// Request to cancel.
        oldtag: Tag }
    /// Empty.
    109 Rflush NINE {}
    /// `fid[4] newfid[4] nwname[2] nwname*(wname[s])`, nwname ≤ 16.
    110 Twalk NINE { /// Start.
        fid: Fid, /// Result fid (may equal fid).
        newfid: Fid, /// Path elements.
        wnames: Vec<String> }
    /// `nwqid[2] nwqid*(qid[13])`.
    111 Rwalk NINE { /// Qids of the elements walked.
        wqids: Vec<Qid> }
    /// `fid[4] mode[1]` ([`crate::open`] bits).
    112 Topen CLASSIC { /// File.
        fid: Fid, /// Open mode.
        mode: u8 }
    /// `qid[13] iounit[4]`.
    113 Ropen CLASSIC { /// The file.
        qid: Qid, /// Maximum atomic I/O size.
        iounit: u32 }
    /// `fid[4] name[s] perm[4] mode[1]` + `extension[s]` in 9P2000.u.
    114 Tcreate CLASSIC { /// Directory; becomes the file.
        fid: Fid, /// Name.
        name: String, /// `DM*` bits and permissions.
        perm: u32, /// Open mode.
        mode: u8, /// 9P2000.u special-file description, else empty.
        extension: String where is_dotu else String::new() }
    /// `qid[13] iounit[4]`.
    115 Rcreate CLASSIC { /// The file.
        qid: Qid, /// Maximum atomic I/O size.
        iounit: u32 }
    /// `fid[4] offset[8] count[4]`, count ≤ msize - 11.
    116 Tread NINE { /// Open file.
        fid: Fid, /// Byte offset.
        offset: u64, /// Maximum bytes.
        count: u32 as IoCount }
    /// `count[4] data[count]`.
    117 Rread NINE { /// The bytes read (a slice of the frame).
        data: Bytes }
    /// `fid[4] offset[8] count[4] data[count]`.
    118 Twrite NINE { /// Open file.
        fid: Fid, /// Byte offset.
        offset: u64, /// The bytes (a slice of the frame).
        data: Bytes }
    /// `count[4]`.
    119 Rwrite NINE { /// Bytes written.
        count: u32 }
    /// `fid[4]`.
    120 Tclunk NINE { /// Fid to release.
        fid: Fid }
    /// Empty.
    121 Rclunk NINE {}
    /// `fid[4]`.
    122 Tremove NINE { /// File to remove (the fid is clunked either way).
        fid: Fid }
    /// Empty.
    123 Rremove NINE {}
    /// `fid[4]`.
    124 Tstat CLASSIC { /// File.
        fid: Fid }
    /// `n[2] stat[n]`.
    125 Rstat CLASSIC { /// Attributes.
        stat: Stat as NStat }
    /// `fid[4] n[2] stat[n]`.
    126 Twstat CLASSIC { /// File.
        fid: Fid, /// New attributes (~0 / empty = don't touch).
        stat: Stat as NStat }
    /// Empty.
    127 Rwstat CLASSIC {}

    // ---- Envoy storage service (160-191) ----------------------------------------------
    /// Reserve a range of unallocated object ids: `count[8]`.
    160 Tsreserve STORAGE { /// Ids wanted.
        count: u64 }
    /// `first[8] count[8]`.
    161 Rsreserve STORAGE { /// First id of the range.
        first: u64, /// Ids granted.
        count: u64 }
    /// Create an object: `id[8] attr[37]`.
    162 Tscreate STORAGE { /// Object id.
        id: u64, /// Initial attributes.
        attr: ObjAttr }
    /// `stat[73]`.
    163 Rscreate STORAGE { /// The new object.
        stat: ObjStat }
    /// Copy an object; a directory copy sets the copy-on-write flag on every entry:
    /// `src[8] dst[8]`.
    164 Tsclone STORAGE { /// Source id.
        src: u64, /// Destination id.
        dst: u64 }
    /// `stat[73]`.
    165 Rsclone STORAGE { /// The copy.
        stat: ObjStat }
    /// `id[8] offset[8] count[4]`, count ≤ msize - 11.
    166 Tsread STORAGE { /// Object.
        id: u64, /// Byte offset.
        offset: u64, /// Maximum bytes.
        count: u32 as IoCount }
    /// `count[4] data[count]`.
    167 Rsread STORAGE { /// The bytes (a slice of the frame).
        data: Bytes }
    /// `id[8] offset[8] count[4] data[count]`.
    168 Tswrite STORAGE { /// Object.
        id: u64, /// Byte offset.
        offset: u64, /// The bytes (a slice of the frame).
        data: Bytes }
    /// `count[4]`.
    169 Rswrite STORAGE { /// Bytes written.
        count: u32 }
    /// `id[8]`.
    170 Tsstat STORAGE { /// Object.
        id: u64 }
    /// `stat[73]`.
    171 Rsstat STORAGE { /// Attributes.
        stat: ObjStat }
    /// `id[8] valid[4] attr[37] size[8]` ([`crate::swstat_valid`] bits).
    172 Tswstat STORAGE { /// Object.
        id: u64, /// Fields to change.
        valid: u32, /// New attributes (kind is ignored).
        attr: ObjAttr, /// New size.
        size: u64 }
    /// `stat[73]`.
    173 Rswstat STORAGE { /// Attributes after the change.
        stat: ObjStat }
    /// `id[8]`.
    174 Tsdelete STORAGE { /// Object.
        id: u64 }
    /// Empty.
    175 Rsdelete STORAGE {}
    /// Make an object durable: `id[8]`.
    176 Tssync STORAGE { /// Object.
        id: u64 }
    /// Empty.
    177 Rssync STORAGE {}
}
