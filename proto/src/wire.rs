//! Field-level encoding: little-endian integers, `len[2]`-prefixed strings, `count[4]`-prefixed
//! payloads, qids and walk lists.
//!
//! [`Reader`] walks a [`Bytes`] frame body and checks every length against what is left before
//! touching it, so no allocation is ever larger than the frame. Payloads come out as
//! `Bytes::slice`s of the frame (no copy). [`Writer`] appends to a `BytesMut`; in *split* mode
//! it hands a payload back instead of copying it, for `writev`-style transports.

use crate::error::{DecodeErrorKind, EncodeError};
use crate::types::{Dialect, Fid, Qid, Tag, IO_REPLY_HEADER_LEN, P9_MAXWELEM};
use bytes::{BufMut, Bytes, BytesMut};

/// Cursor over a frame body.
pub(crate) struct Reader {
    buf: Bytes,
    pos: usize,
    dialect: Dialect,
    msize: u32,
}

impl Reader {
    pub(crate) fn new(buf: Bytes, dialect: Dialect, msize: u32) -> Reader {
        Reader {
            buf,
            pos: 0,
            dialect,
            msize,
        }
    }

    pub(crate) fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub(crate) fn msize(&self) -> u32 {
        self.msize
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Takes the next `n` bytes as a shared slice of the frame.
    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<Bytes, DecodeErrorKind> {
        let have = self.remaining();
        if n > have {
            return Err(DecodeErrorKind::Truncated {
                field,
                need: n,
                have,
            });
        }
        let out = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeErrorKind> {
        let have = self.remaining();
        let bytes = self
            .buf
            .get(self.pos..self.pos + N.min(have))
            .and_then(|s| <[u8; N]>::try_from(s).ok())
            .ok_or(DecodeErrorKind::Truncated {
                field,
                need: N,
                have,
            })?;
        self.pos += N;
        Ok(bytes)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeErrorKind> {
        Ok(self.array::<1>(field)?[0])
    }
    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeErrorKind> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeErrorKind> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeErrorKind> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// `len[2] bytes[len]`, UTF-8 without NUL.
    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, DecodeErrorKind> {
        let len = usize::from(self.u16(field)?);
        let raw = self.take(len, field)?;
        check_str_bytes(&raw).map(str::to_owned)
    }

    /// Fails unless the whole body was consumed.
    pub(crate) fn finish(&self) -> Result<(), DecodeErrorKind> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeErrorKind::TrailingBytes(n)),
        }
    }
}

/// Validates string bytes: UTF-8 and no NUL.
pub(crate) fn check_str_bytes(raw: &[u8]) -> Result<&str, DecodeErrorKind> {
    let s = std::str::from_utf8(raw).map_err(DecodeErrorKind::InvalidUtf8)?;
    if raw.contains(&0) {
        return Err(DecodeErrorKind::NulInString);
    }
    Ok(s)
}

/// Appends fields to an output buffer.
pub(crate) struct Writer<'a> {
    out: &'a mut BytesMut,
    dialect: Dialect,
    split: bool,
    payload: Option<Bytes>,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(out: &'a mut BytesMut, dialect: Dialect, split: bool) -> Writer<'a> {
        Writer {
            out,
            dialect,
            split,
            payload: None,
        }
    }

    pub(crate) fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub(crate) fn into_payload(self) -> Option<Bytes> {
        self.payload
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.out.put_u8(v);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.out.put_u16_le(v);
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.out.put_u32_le(v);
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.out.put_u64_le(v);
    }

    pub(crate) fn string(&mut self, s: &str) -> Result<(), EncodeError> {
        let len =
            u16::try_from(s.len()).map_err(|_| EncodeError::StringTooLong { len: s.len() })?;
        if s.as_bytes().contains(&0) {
            return Err(EncodeError::NulInString);
        }
        self.u16(len);
        self.out.put_slice(s.as_bytes());
        Ok(())
    }

    /// `count[4] data[count]`; in split mode the data is handed back, not copied. A payload is
    /// always the last field of its message, so the split frame is header ‖ payload.
    pub(crate) fn data(&mut self, data: &Bytes) -> Result<(), EncodeError> {
        let len =
            u32::try_from(data.len()).map_err(|_| EncodeError::DataTooLong { len: data.len() })?;
        self.u32(len);
        if self.split && self.payload.is_none() {
            self.payload = Some(data.clone());
        } else {
            self.out.put_slice(data);
        }
        Ok(())
    }
}

/// A value with one wire representation.
pub(crate) trait Wire: Sized {
    fn put(&self, w: &mut Writer<'_>) -> Result<(), EncodeError>;
    fn get(r: &mut Reader) -> Result<Self, DecodeErrorKind>;
    /// Encoded length (payload included).
    fn wire_len(&self, d: Dialect) -> usize;
}

/// An alternative representation of `T` selected in the message table with `as Codec`.
pub(crate) trait WireAs<T> {
    fn put(v: &T, w: &mut Writer<'_>) -> Result<(), EncodeError>;
    fn get(r: &mut Reader) -> Result<T, DecodeErrorKind>;
    fn wire_len(v: &T, d: Dialect) -> usize;
}

macro_rules! int_wire {
    ($($t:ty => $m:ident, $n:literal;)*) => {$(
        impl Wire for $t {
            fn put(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
                w.$m(*self);
                Ok(())
            }
            fn get(r: &mut Reader) -> Result<Self, DecodeErrorKind> {
                r.$m(stringify!($t))
            }
            fn wire_len(&self, _: Dialect) -> usize {
                $n
            }
        }
    )*};
}
int_wire! { u8 => u8, 1; u16 => u16, 2; u32 => u32, 4; u64 => u64, 8; }

impl Wire for Tag {
    fn put(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u16(self.0);
        Ok(())
    }
    fn get(r: &mut Reader) -> Result<Self, DecodeErrorKind> {
        r.u16("tag").map(Tag)
    }
    fn wire_len(&self, _: Dialect) -> usize {
        2
    }
}

impl Wire for Fid {
    fn put(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u32(self.0);
        Ok(())
    }
    fn get(r: &mut Reader) -> Result<Self, DecodeErrorKind> {
        r.u32("fid").map(Fid)
    }
    fn wire_len(&self, _: Dialect) -> usize {
        4
    }
}

impl Wire for Qid {
    fn put(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u8(self.ty);
        w.u32(self.version);
        w.u64(self.path);
        Ok(())
    }
    fn get(r: &mut Reader) -> Result<Self, DecodeErrorKind> {
        Ok(Qid {
            ty: r.u8("qid.type")?,
            version: r.u32("qid.version")?,
            path: r.u64("qid.path")?,
        })
    }
    fn wire_len(&self, _: Dialect) -> usize {
        Qid::LEN
    }
}

impl Wire for String {
    fn put(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.string(self)
    }
    fn get(r: &mut Reader) -> Result<Self, DecodeErrorKind> {
        r.string("string")
    }
    fn wire_len(&self, _: Dialect) -> usize {
        2 + self.len()
    }
}

/// Payloads: `count[4] data[count]`, borrowed from the frame.
impl Wire for Bytes {
    fn put(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.data(self)
    }
    fn get(r: &mut Reader) -> Result<Self, DecodeErrorKind> {
        let n = r.u32("count")?;
        r.take(n as usize, "data")
    }
    fn wire_len(&self, _: Dialect) -> usize {
        4 + self.len()
    }
}

/// Twalk names: `nwname[2] nwname*(wname[s])`, at most 16.
impl Wire for Vec<String> {
    fn put(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        let count = walk_count(self.len())?;
        w.u16(count);
        self.iter().try_for_each(|s| w.string(s))
    }
    fn get(r: &mut Reader) -> Result<Self, DecodeErrorKind> {
        let count = r.u16("nwname")?;
        check_walk_count(count)?;
        // Each name takes at least its 2-byte length, so the frame bounds the allocation too.
        let mut v = Vec::with_capacity(usize::from(count).min(r.remaining() / 2));
        for _ in 0..count {
            v.push(r.string("wname")?);
        }
        Ok(v)
    }
    fn wire_len(&self, _: Dialect) -> usize {
        2 + self.iter().map(|s| 2 + s.len()).sum::<usize>()
    }
}

/// Rwalk qids: `nwqid[2] nwqid*(qid[13])`, at most 16.
impl Wire for Vec<Qid> {
    fn put(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        let count = walk_count(self.len())?;
        w.u16(count);
        self.iter().try_for_each(|q| q.put(w))
    }
    fn get(r: &mut Reader) -> Result<Self, DecodeErrorKind> {
        let count = r.u16("nwqid")?;
        check_walk_count(count)?;
        let mut v = Vec::with_capacity(usize::from(count).min(r.remaining() / Qid::LEN));
        for _ in 0..count {
            v.push(Qid::get(r)?);
        }
        Ok(v)
    }
    fn wire_len(&self, _: Dialect) -> usize {
        2 + Qid::LEN * self.len()
    }
}

fn walk_count(len: usize) -> Result<u16, EncodeError> {
    match u16::try_from(len) {
        Ok(n) if len <= P9_MAXWELEM => Ok(n),
        _ => Err(EncodeError::TooManyWalkElements { count: len }),
    }
}

fn check_walk_count(count: u16) -> Result<(), DecodeErrorKind> {
    if usize::from(count) > P9_MAXWELEM {
        return Err(DecodeErrorKind::TooManyWalkElements { count });
    }
    Ok(())
}

/// A read request's `count[4]`: at most `msize - 11`, so the reply's data fits in one frame.
pub(crate) struct IoCount;

impl WireAs<u32> for IoCount {
    fn put(v: &u32, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u32(*v);
        Ok(())
    }
    fn get(r: &mut Reader) -> Result<u32, DecodeErrorKind> {
        let count = r.u32("count")?;
        let max = r.msize().saturating_sub(IO_REPLY_HEADER_LEN);
        if count > max {
            return Err(DecodeErrorKind::CountTooLarge { count, max });
        }
        Ok(count)
    }
    fn wire_len(_: &u32, _: Dialect) -> usize {
        4
    }
}
