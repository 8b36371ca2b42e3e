//! Records that appear inside messages and directory data: the 9P2000(.u) `stat` record, the
//! 9P2000.L directory entry, and the storage service's object attributes.
//!
//! ## 9P2000 stat (`stat(5)`)
//!
//! ```text
//! size[2] type[2] dev[4] qid[13] mode[4] atime[4] mtime[4] length[8]
//!         name[s] uid[s] gid[s] muid[s]
//!         (9P2000.u only:) extension[s] n_uid[4] n_gid[4] n_muid[4]
//! ```
//!
//! `size` counts the bytes after itself. Rstat and Twstat wrap the record in one more
//! `n[2]` (= size + 2), as Plan 9's `stat(5)` BUGS section and Linux's `"wS"` format describe.
//! A 9P2000/.u directory read returns whole stat records back to back.
//!
//! ## 9P2000.L directory entry (Rreaddir data)
//!
//! ```text
//! qid[13] offset[8] type[1] name[s]
//! ```
//!
//! `offset` is the cookie to pass in the next Treaddir to continue after this entry.
//!
//! ## Storage attributes
//!
//! ```text
//! ObjAttr: kind[1] mode[4] uid[4] gid[4] atime_sec[8] atime_nsec[4] mtime_sec[8] mtime_nsec[4]  (37 bytes)
//! ObjStat: id[8] attr[37] size[8] ctime_sec[8] ctime_nsec[4] blocks[8]                           (73 bytes)
//! ```
//!
//! In dialects without the 9P2000.u extension the extension fields of [`Stat`] are not on the
//! wire: they are ignored when encoding and decode as `""` and [`NONUNAME`].

use crate::error::{DecodeErrorKind, EncodeError};
use crate::types::{Dialect, Qid, NONUNAME};
use crate::wire::{Reader, Wire, WireAs, Writer};
use bytes::{Bytes, BytesMut};

/// A 9P2000 / 9P2000.u `stat` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Server type (kernel use).
    pub ty: u16,
    /// Server subtype.
    pub dev: u32,
    /// Identity.
    pub qid: Qid,
    /// Permissions and `DM*` bits.
    pub mode: u32,
    /// Last access, seconds since the epoch.
    pub atime: u32,
    /// Last modification, seconds since the epoch.
    pub mtime: u32,
    /// Length in bytes.
    pub length: u64,
    /// Last path element (`"/"` for the root).
    pub name: String,
    /// Owner name.
    pub uid: String,
    /// Group name.
    pub gid: String,
    /// Name of the last modifier.
    pub muid: String,
    /// 9P2000.u: symlink target, `"b|c major minor"` for devices, or empty.
    pub extension: String,
    /// 9P2000.u: numeric owner.
    pub n_uid: u32,
    /// 9P2000.u: numeric group.
    pub n_gid: u32,
    /// 9P2000.u: numeric last modifier.
    pub n_muid: u32,
}

impl Default for Stat {
    fn default() -> Stat {
        Stat {
            ty: 0,
            dev: 0,
            qid: Qid::default(),
            mode: 0,
            atime: 0,
            mtime: 0,
            length: 0,
            name: String::new(),
            uid: String::new(),
            gid: String::new(),
            muid: String::new(),
            extension: String::new(),
            n_uid: NONUNAME,
            n_gid: NONUNAME,
            n_muid: NONUNAME,
        }
    }
}

impl Stat {
    /// A Twstat record that changes nothing: every integer all ones, every string empty
    /// (`stat(5)`: "don't touch"). Set only the fields to change.
    pub fn dont_touch() -> Stat {
        Stat {
            ty: u16::MAX,
            dev: u32::MAX,
            qid: Qid {
                ty: u8::MAX,
                version: u32::MAX,
                path: u64::MAX,
            },
            mode: u32::MAX,
            atime: u32::MAX,
            mtime: u32::MAX,
            length: u64::MAX,
            n_uid: NONUNAME,
            n_gid: NONUNAME,
            n_muid: NONUNAME,
            ..Stat::default()
        }
    }
}

/// Bytes of a stat record after `size[2]`, before the strings' contents.
const STAT_FIXED: usize = 2 + 4 + Qid::LEN + 4 + 4 + 4 + 8 + 4 * 2;

impl Stat {
    /// Encoded length including the leading `size[2]`.
    pub fn wire_len(&self, dialect: Dialect) -> usize {
        let mut n = 2 + STAT_FIXED + self.name.len() + self.uid.len() + self.gid.len();
        n += self.muid.len();
        if dialect.is_dotu() {
            n += 2 + self.extension.len() + 12;
        }
        n
    }

    /// Appends this record to `buf` if `buf` stays within `max` bytes; returns whether it was
    /// appended. Use it to fill a 9P2000/.u directory read of `count` bytes.
    pub fn encode_if_fits(
        &self,
        buf: &mut BytesMut,
        max: usize,
        dialect: Dialect,
    ) -> Result<bool, EncodeError> {
        if buf.len().saturating_add(self.wire_len(dialect)) > max {
            return Ok(false);
        }
        let start = buf.len();
        let mut w = Writer::new(buf, dialect, false);
        if let Err(e) = self.put(&mut w) {
            buf.truncate(start);
            return Err(e);
        }
        Ok(true)
    }
}

impl Wire for Stat {
    fn put(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        let len = self.wire_len(w.dialect()) - 2;
        let size = u16::try_from(len).map_err(|_| EncodeError::StatTooLong { len })?;
        w.u16(size);
        w.u16(self.ty);
        w.u32(self.dev);
        self.qid.put(w)?;
        w.u32(self.mode);
        w.u32(self.atime);
        w.u32(self.mtime);
        w.u64(self.length);
        w.string(&self.name)?;
        w.string(&self.uid)?;
        w.string(&self.gid)?;
        w.string(&self.muid)?;
        if w.dialect().is_dotu() {
            w.string(&self.extension)?;
            w.u32(self.n_uid);
            w.u32(self.n_gid);
            w.u32(self.n_muid);
        }
        Ok(())
    }

    fn get(r: &mut Reader) -> Result<Self, DecodeErrorKind> {
        let size = usize::from(r.u16("stat.size")?);
        let body = r.take(size, "stat")?;
        let mut s = Reader::new(body, r.dialect(), r.msize());
        let mut st = Stat {
            ty: s.u16("stat.type")?,
            dev: s.u32("stat.dev")?,
            qid: Qid::get(&mut s)?,
            mode: s.u32("stat.mode")?,
            atime: s.u32("stat.atime")?,
            mtime: s.u32("stat.mtime")?,
            length: s.u64("stat.length")?,
            name: s.string("stat.name")?,
            uid: s.string("stat.uid")?,
            gid: s.string("stat.gid")?,
            muid: s.string("stat.muid")?,
            ..Stat::default()
        };
        if r.dialect().is_dotu() {
            st.extension = s.string("stat.extension")?;
            st.n_uid = s.u32("stat.n_uid")?;
            st.n_gid = s.u32("stat.n_gid")?;
            st.n_muid = s.u32("stat.n_muid")?;
        }
        if s.remaining() != 0 {
            return Err(DecodeErrorKind::StatSize {
                declared: size,
                actual: size - s.remaining(),
            });
        }
        Ok(st)
    }

    fn wire_len(&self, d: Dialect) -> usize {
        Stat::wire_len(self, d)
    }
}

/// Rstat/Twstat representation of a stat: `n[2] stat[n]`.
pub(crate) struct NStat;

impl WireAs<Stat> for NStat {
    fn put(v: &Stat, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        let len = v.wire_len(w.dialect());
        let n = u16::try_from(len).map_err(|_| EncodeError::StatTooLong { len })?;
        w.u16(n);
        v.put(w)
    }
    fn get(r: &mut Reader) -> Result<Stat, DecodeErrorKind> {
        let n = usize::from(r.u16("nstat")?);
        let body = r.take(n, "stat")?;
        let mut s = Reader::new(body, r.dialect(), r.msize());
        let st = Stat::get(&mut s)?;
        if s.remaining() != 0 {
            return Err(DecodeErrorKind::StatSize {
                declared: n,
                actual: n - s.remaining(),
            });
        }
        Ok(st)
    }
    fn wire_len(v: &Stat, d: Dialect) -> usize {
        2 + v.wire_len(d)
    }
}

/// Iterator over the stat records of a 9P2000/.u directory read. Yields an error once and then
/// stops if the data is malformed.
#[derive(Debug, Clone)]
pub struct StatIter {
    data: Bytes,
    dialect: Dialect,
    failed: bool,
}

impl StatIter {
    /// Iterates over `data` (an Rread payload) in `dialect`.
    pub fn new(data: Bytes, dialect: Dialect) -> StatIter {
        StatIter {
            data,
            dialect,
            failed: false,
        }
    }
}

impl Iterator for StatIter {
    type Item = Result<Stat, DecodeErrorKind>;
    fn next(&mut self) -> Option<Self::Item> {
        next_record(&mut self.data, &mut self.failed, self.dialect, Stat::get)
    }
}

/// Decodes the next record of a packed record sequence with `get` and advances `data` past
/// it; after an error, sets `failed` so the iterator stops.
fn next_record<T>(
    data: &mut Bytes,
    failed: &mut bool,
    dialect: Dialect,
    get: impl FnOnce(&mut Reader) -> Result<T, DecodeErrorKind>,
) -> Option<Result<T, DecodeErrorKind>> {
    if *failed || data.is_empty() {
        return None;
    }
    let mut r = Reader::new(data.clone(), dialect, u32::MAX);
    let res = get(&mut r);
    match &res {
        Ok(_) => *data = data.slice(data.len() - r.remaining()..),
        Err(_) => *failed = true,
    }
    Some(res)
}

/// One 9P2000.L directory entry: `qid[13] offset[8] type[1] name[s]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's qid.
    pub qid: Qid,
    /// Cookie for the Treaddir that continues after this entry.
    pub offset: u64,
    /// `DT_*` type, see [`crate::dirent_type`].
    pub ty: u8,
    /// Entry name.
    pub name: String,
}

impl DirEntry {
    /// Encoded length.
    pub fn wire_len(&self) -> usize {
        Qid::LEN + 8 + 1 + 2 + self.name.len()
    }

    /// Appends this entry to `buf` if `buf` stays within `max` bytes (the Treaddir count);
    /// returns whether it was appended.
    pub fn encode_if_fits(&self, buf: &mut BytesMut, max: usize) -> Result<bool, EncodeError> {
        if buf.len().saturating_add(self.wire_len()) > max {
            return Ok(false);
        }
        let start = buf.len();
        let mut w = Writer::new(buf, Dialect::P2000L, false);
        let res = self.qid.put(&mut w).and_then(|()| {
            w.u64(self.offset);
            w.u8(self.ty);
            w.string(&self.name)
        });
        if let Err(e) = res {
            buf.truncate(start);
            return Err(e);
        }
        Ok(true)
    }
}

/// Iterator over the entries of Rreaddir data. Yields an error once and then stops if the
/// data is malformed.
#[derive(Debug, Clone)]
pub struct DirEntries {
    data: Bytes,
    failed: bool,
}

impl DirEntries {
    /// Iterates over `data` (an Rreaddir payload).
    pub fn new(data: Bytes) -> DirEntries {
        DirEntries {
            data,
            failed: false,
        }
    }
}

impl Iterator for DirEntries {
    type Item = Result<DirEntry, DecodeErrorKind>;
    fn next(&mut self) -> Option<Self::Item> {
        next_record(&mut self.data, &mut self.failed, Dialect::P2000L, |r| {
            Ok(DirEntry {
                qid: Qid::get(r)?,
                offset: r.u64("dirent.offset")?,
                ty: r.u8("dirent.type")?,
                name: r.string("dirent.name")?,
            })
        })
    }
}

/// Kinds of storage objects ([`ObjAttr::kind`]).
pub mod obj_kind {
    /// Regular file.
    pub const REGULAR: u8 = 0;
    /// Directory.
    pub const DIRECTORY: u8 = 1;
    /// Symbolic link.
    pub const SYMLINK: u8 = 2;
    /// Character device.
    pub const CHAR_DEVICE: u8 = 3;
    /// Block device.
    pub const BLOCK_DEVICE: u8 = 4;
    /// FIFO.
    pub const FIFO: u8 = 5;
    /// Socket.
    pub const SOCKET: u8 = 6;
    /// Largest valid kind.
    pub const MAX: u8 = SOCKET;
}

/// Tswstat `valid` bits: which attributes to change.
pub mod swstat_valid {
    /// Set mode.
    pub const MODE: u32 = 1;
    /// Set uid.
    pub const UID: u32 = 2;
    /// Set gid.
    pub const GID: u32 = 4;
    /// Set atime.
    pub const ATIME: u32 = 8;
    /// Set mtime.
    pub const MTIME: u32 = 16;
    /// Set size (truncate or extend).
    pub const SIZE: u32 = 32;
    /// Every bit.
    pub const ALL: u32 = 63;
}

/// Attributes of a storage object that its creator sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ObjAttr {
    /// See [`obj_kind`]; at most 6.
    pub kind: u8,
    /// Permission bits, `0o7777` only.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Access time, seconds.
    pub atime_sec: u64,
    /// Access time, nanoseconds.
    pub atime_nsec: u32,
    /// Modification time, seconds.
    pub mtime_sec: u64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u32,
}

impl ObjAttr {
    /// Encoded length.
    pub const LEN: usize = 37;

    /// Checks `kind` and `mode` are in their domains.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.kind > obj_kind::MAX {
            return Err("kind above 6");
        }
        if self.mode & !0o7777 != 0 {
            return Err("mode has bits outside 0o7777");
        }
        Ok(())
    }
}

impl Wire for ObjAttr {
    fn put(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        self.validate().map_err(EncodeError::InvalidObjAttr)?;
        w.u8(self.kind);
        w.u32(self.mode);
        w.u32(self.uid);
        w.u32(self.gid);
        w.u64(self.atime_sec);
        w.u32(self.atime_nsec);
        w.u64(self.mtime_sec);
        w.u32(self.mtime_nsec);
        Ok(())
    }
    fn get(r: &mut Reader) -> Result<Self, DecodeErrorKind> {
        let a = ObjAttr {
            kind: r.u8("attr.kind")?,
            mode: r.u32("attr.mode")?,
            uid: r.u32("attr.uid")?,
            gid: r.u32("attr.gid")?,
            atime_sec: r.u64("attr.atime_sec")?,
            atime_nsec: r.u32("attr.atime_nsec")?,
            mtime_sec: r.u64("attr.mtime_sec")?,
            mtime_nsec: r.u32("attr.mtime_nsec")?,
        };
        a.validate().map_err(DecodeErrorKind::InvalidObjAttr)?;
        Ok(a)
    }
    fn wire_len(&self, _: Dialect) -> usize {
        ObjAttr::LEN
    }
}

/// Everything the storage server knows about an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ObjStat {
    /// Object id.
    pub id: u64,
    /// Creator-set attributes.
    pub attr: ObjAttr,
    /// Size in bytes.
    pub size: u64,
    /// Attribute change time, seconds.
    pub ctime_sec: u64,
    /// Attribute change time, nanoseconds.
    pub ctime_nsec: u32,
    /// 512-byte blocks allocated.
    pub blocks: u64,
}

impl ObjStat {
    /// Encoded length.
    pub const LEN: usize = 73;
}

impl Wire for ObjStat {
    fn put(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u64(self.id);
        self.attr.put(w)?;
        w.u64(self.size);
        w.u64(self.ctime_sec);
        w.u32(self.ctime_nsec);
        w.u64(self.blocks);
        Ok(())
    }
    fn get(r: &mut Reader) -> Result<Self, DecodeErrorKind> {
        Ok(ObjStat {
            id: r.u64("stat.id")?,
            attr: ObjAttr::get(r)?,
            size: r.u64("stat.size")?,
            ctime_sec: r.u64("stat.ctime_sec")?,
            ctime_nsec: r.u32("stat.ctime_nsec")?,
            blocks: r.u64("stat.blocks")?,
        })
    }
    fn wire_len(&self, _: Dialect) -> usize {
        ObjStat::LEN
    }
}
