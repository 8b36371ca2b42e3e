//! Framing, whole-message decode and encode.
//!
//! ```text
//! size[4] type[1] tag[2] body[size-7]        (little-endian; size counts itself)
//! ```
//!
//! A transport reads bytes into a `BytesMut` and asks [`FrameSplitter::next_frame`] for
//! complete frames; the size field is checked (7 ≤ size ≤ msize) before any buffer grows to
//! hold the frame. Each frame is then handed to [`decode`], which checks every length, count
//! and string against the bytes that are actually there and rejects trailing bytes.
//!
//! Encoding: [`encode`] appends one whole frame. [`encode_parts`] appends the header and
//! fixed fields only and returns the payload of Rread/Twrite/Rreaddir/Rsread/Tswrite as a
//! separate [`Bytes`], so a transport can `writev(header, payload)` without copying the data;
//! the size field already counts the payload.

use crate::error::{DecodeError, DecodeErrorKind, EncodeError, FrameError};
use crate::messages::{Message, MsgType};
use crate::types::{Dialect, Tag, HEADER_LEN};
use crate::wire::{Reader, Writer};
use crate::ENVOY_PEER_TYPES;
use bytes::{BufMut, Bytes, BytesMut};

/// A decoded message and its tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The request's tag (echoed by the reply).
    pub tag: Tag,
    /// The message.
    pub msg: Message,
}

impl Frame {
    /// Appends this frame to `out`; see [`encode`].
    pub fn encode(
        &self,
        dialect: Dialect,
        msize: u32,
        out: &mut BytesMut,
    ) -> Result<usize, EncodeError> {
        encode(self.tag, &self.msg, dialect, msize, out)
    }
}

/// Length of the frame starting at `prefix`, once its 4-byte size field is present.
///
/// Returns `Ok(None)` while fewer than 4 bytes are available, `Ok(Some(size))` otherwise, and
/// an error for a size below 7 or above `msize` (close the connection: the stream cannot be
/// resynchronised).
pub fn frame_len(prefix: &[u8], msize: u32) -> Result<Option<usize>, FrameError> {
    let Some(raw) = prefix.get(..4).and_then(|s| <[u8; 4]>::try_from(s).ok()) else {
        return Ok(None);
    };
    let size = u32::from_le_bytes(raw);
    if (size as usize) < HEADER_LEN {
        return Err(FrameError::TooShort { size });
    }
    if size > msize {
        return Err(FrameError::TooLarge { size, msize });
    }
    Ok(Some(size as usize))
}

/// Pulls complete frames out of a stream buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSplitter {
    msize: u32,
}

impl FrameSplitter {
    /// A splitter accepting frames of at most `msize` bytes (the server's maximum until
    /// Tversion negotiates a smaller one).
    pub fn new(msize: u32) -> FrameSplitter {
        FrameSplitter { msize }
    }

    /// The current limit.
    pub fn msize(&self) -> u32 {
        self.msize
    }

    /// Changes the limit (after Rversion).
    pub fn set_msize(&mut self, msize: u32) {
        self.msize = msize;
    }

    /// Splits the next complete frame off the front of `buf`, or returns `Ok(None)` if more
    /// bytes are needed (having reserved room for the rest of a validated frame). The frame
    /// shares `buf`'s allocation; no bytes are copied.
    pub fn next_frame(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        match frame_len(buf, self.msize)? {
            Some(n) if buf.len() >= n => Ok(Some(buf.split_to(n).freeze())),
            Some(n) => {
                buf.reserve(n - buf.len());
                Ok(None)
            }
            None => Ok(None),
        }
    }
}

/// Decodes one whole frame (exactly `size` bytes, as [`FrameSplitter`] yields them).
///
/// Payload fields are slices of `frame`. On failure the error carries the tag and type
/// whenever the 7-byte header was readable, so the caller can answer with an error reply;
/// [`DecodeError::is_fatal`] says when the connection must be closed instead.
pub fn decode(frame: Bytes, dialect: Dialect, msize: u32) -> Result<Frame, DecodeError> {
    let header = frame
        .get(..HEADER_LEN)
        .and_then(|s| <[u8; HEADER_LEN]>::try_from(s).ok());
    let Some(h) = header else {
        return Err(DecodeError {
            tag: None,
            msg_type: None,
            kind: DecodeErrorKind::ShortHeader { len: frame.len() },
        });
    };
    let size = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let ty = h[4];
    let tag = Tag(u16::from_le_bytes([h[5], h[6]]));
    let fail = |kind| DecodeError {
        tag: Some(tag),
        msg_type: Some(ty),
        kind,
    };
    if (size as usize) < HEADER_LEN {
        return Err(fail(FrameError::TooShort { size }.into()));
    }
    if size > msize {
        return Err(fail(FrameError::TooLarge { size, msize }.into()));
    }
    if size as usize != frame.len() {
        return Err(fail(DecodeErrorKind::SizeMismatch {
            size,
            len: frame.len(),
        }));
    }
    let Some(mt) = MsgType::from_u8(ty) else {
        return Err(fail(if ENVOY_PEER_TYPES.contains(&ty) {
            DecodeErrorKind::ReservedType(ty)
        } else {
            DecodeErrorKind::UnknownType(ty)
        }));
    };
    if !mt.valid_in(dialect) {
        return Err(fail(DecodeErrorKind::NotInDialect {
            name: mt.name(),
            dialect: dialect.version_str(),
        }));
    }
    let mut r = Reader::new(frame.slice(HEADER_LEN..), dialect, msize);
    let msg = Message::get_body(mt, &mut r).map_err(fail)?;
    r.finish().map_err(fail)?;
    Ok(Frame { tag, msg })
}

/// Appends one complete frame for `msg` to `out` and returns its length.
///
/// Fails, leaving `out` as it was, if the message is not part of `dialect`, a string or
/// payload is too long for its length field, a string contains NUL, a walk has more than 16
/// elements, or the frame would exceed `msize`. Fields that `dialect` does not carry (e.g.
/// `n_uname` in 9P2000) are left out.
pub fn encode(
    tag: Tag,
    msg: &Message,
    dialect: Dialect,
    msize: u32,
    out: &mut BytesMut,
) -> Result<usize, EncodeError> {
    encode_inner(tag, msg, dialect, msize, out, false).map(|(len, _)| len)
}

/// A frame encoded by [`encode_parts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedParts {
    /// Bytes appended to the output buffer: header and every field but the payload.
    pub header_len: usize,
    /// The payload to send right after those bytes (Rread, Twrite, Rreaddir, Rsread, Tswrite
    /// data), or `None` for messages without one.
    pub payload: Option<Bytes>,
}

impl EncodedParts {
    /// Total frame length (the value of the size field).
    pub fn frame_len(&self) -> usize {
        self.header_len + self.payload.as_ref().map_or(0, Bytes::len)
    }
}

/// Like [`encode`], but a payload is not copied into `out`: the frame is the appended
/// `header_len` bytes followed by `payload`. The size field counts both.
pub fn encode_parts(
    tag: Tag,
    msg: &Message,
    dialect: Dialect,
    msize: u32,
    out: &mut BytesMut,
) -> Result<EncodedParts, EncodeError> {
    encode_inner(tag, msg, dialect, msize, out, true).map(|(len, payload)| EncodedParts {
        header_len: len - payload.as_ref().map_or(0, Bytes::len),
        payload,
    })
}

fn encode_inner(
    tag: Tag,
    msg: &Message,
    dialect: Dialect,
    msize: u32,
    out: &mut BytesMut,
    split: bool,
) -> Result<(usize, Option<Bytes>), EncodeError> {
    let mt = msg.msg_type();
    if !mt.valid_in(dialect) {
        return Err(EncodeError::NotInDialect {
            name: mt.name(),
            dialect: dialect.version_str(),
        });
    }
    // Size check before anything is written or copied.
    let expected = msg.encoded_len(dialect);
    if expected > msize as usize {
        return Err(EncodeError::FrameTooLarge {
            size: expected,
            msize,
        });
    }
    let start = out.len();
    if !split {
        out.reserve(expected);
    }
    out.put_u32_le(0);
    out.put_u8(mt as u8);
    out.put_u16_le(tag.0);
    let mut w = Writer::new(out, dialect, split);
    let res = msg.put_body(&mut w);
    let payload = w.into_payload();
    let total = out.len() - start + payload.as_ref().map_or(0, Bytes::len);
    let checked = res.and_then(|()| match u32::try_from(total) {
        Ok(size) if size <= msize => Ok(size),
        _ => Err(EncodeError::FrameTooLarge { size: total, msize }),
    });
    match checked {
        Ok(size) => {
            out[start..start + 4].copy_from_slice(&size.to_le_bytes());
            Ok((total, payload))
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}
