//! The codec's error types: one for framing, one for decoding, one for encoding.
//!
//! A [`DecodeError`] keeps the tag and type of the frame whenever its 7-byte header was
//! readable, so a server can answer *that* request with an error and keep the connection.
//! Only a [`FrameError`] (the size field itself is unusable) forces the connection closed.

use crate::types::Tag;
use thiserror::Error;

/// The size field of a frame is unusable; the byte stream cannot be resynchronised.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// `size[4]` is smaller than the 7-byte header.
    #[error("frame size {size} is smaller than the 7-byte header")]
    TooShort {
        /// The size field.
        size: u32,
    },
    /// `size[4]` exceeds the negotiated msize.
    #[error("frame size {size} exceeds msize {msize}")]
    TooLarge {
        /// The size field.
        size: u32,
        /// The limit.
        msize: u32,
    },
}

/// What was wrong with a frame's contents.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeErrorKind {
    /// The size field is unusable.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The buffer is shorter than the 7-byte header.
    #[error("{len} bytes is shorter than the 7-byte header")]
    ShortHeader {
        /// Bytes available.
        len: usize,
    },
    /// The size field does not match the length of the buffer handed to `decode`.
    #[error("size field says {size} bytes but the frame has {len}")]
    SizeMismatch {
        /// The size field.
        size: u32,
        /// The buffer length.
        len: usize,
    },
    /// The type byte names no message.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// The type byte is reserved for the envoy-to-envoy protocol, whose bodies are not defined.
    #[error("message type {0} is reserved for the envoy-to-envoy protocol")]
    ReservedType(u8),
    /// The message exists but not in the connection's dialect.
    #[error("{name} is not part of {dialect}")]
    NotInDialect {
        /// Message name.
        name: &'static str,
        /// The connection's dialect string.
        dialect: &'static str,
    },
    /// The body ends before a field is complete.
    #[error("message ends inside field {field} ({need} bytes needed, {have} left)")]
    Truncated {
        /// What was being read.
        field: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes left in the frame.
        have: usize,
    },
    /// Bytes remain after the last field of the message.
    #[error("{0} bytes of trailing garbage after the message body")]
    TrailingBytes(usize),
    /// A string is not UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8(#[source] std::str::Utf8Error),
    /// A string contains a NUL byte.
    #[error("string contains a NUL byte")]
    NulInString,
    /// Twalk nwname or Rwalk nwqid above 16.
    #[error("{count} walk elements, at most 16 allowed")]
    TooManyWalkElements {
        /// The count.
        count: u16,
    },
    /// A read count larger than msize allows for the reply.
    #[error("count {count} exceeds the {max} bytes msize allows")]
    CountTooLarge {
        /// The count.
        count: u32,
        /// The maximum.
        max: u32,
    },
    /// A stat record's size field does not match its contents.
    #[error("stat record size {declared} does not match its {actual}-byte contents")]
    StatSize {
        /// The record's size field.
        declared: usize,
        /// Bytes its fields used.
        actual: usize,
    },
    /// A storage object attribute outside its domain.
    #[error("invalid object attribute: {0}")]
    InvalidObjAttr(&'static str),
}

/// A frame that failed to decode, with as much of its header as could be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("cannot decode 9P frame{}", header_suffix(*.tag, *.msg_type))]
pub struct DecodeError {
    /// The frame's tag, when its header was readable. Answer it with an error reply.
    pub tag: Option<Tag>,
    /// The frame's type byte, when its header was readable.
    pub msg_type: Option<u8>,
    /// What went wrong.
    #[source]
    pub kind: DecodeErrorKind,
}

/// `" (tag 3, type 124 Tstat)"`, or nothing when the header was unreadable.
fn header_suffix(tag: Option<Tag>, ty: Option<u8>) -> String {
    match (tag, ty) {
        (Some(tag), Some(ty)) => {
            let name = crate::MsgType::from_u8(ty).map_or("unknown", crate::MsgType::name);
            format!(" (tag {tag}, type {ty} {name})")
        }
        _ => String::new(),
    }
}

/// Linux errno `EINVAL`.
const EINVAL: u32 = 22;
/// Linux errno `EOPNOTSUPP`.
const EOPNOTSUPP: u32 = 95;

impl DecodeError {
    /// The errno to answer the request with: `EOPNOTSUPP` (95) for a type that is unknown,
    /// reserved or not part of the dialect, `EINVAL` (22) for everything else.
    pub fn errno(&self) -> u32 {
        match self.kind {
            DecodeErrorKind::UnknownType(_)
            | DecodeErrorKind::ReservedType(_)
            | DecodeErrorKind::NotInDialect { .. } => EOPNOTSUPP,
            _ => EINVAL,
        }
    }

    /// Whether the connection must be closed: the header was unreadable or the frame size is
    /// unusable, so there is no tag to answer or the stream cannot be resynchronised.
    pub fn is_fatal(&self) -> bool {
        self.tag.is_none()
            || matches!(
                self.kind,
                DecodeErrorKind::Frame(_) | DecodeErrorKind::SizeMismatch { .. }
            )
    }
}

/// A message that cannot be put on the wire as asked.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// A string longer than the 65535 bytes `len[2]` can express.
    #[error("string of {len} bytes exceeds 65535")]
    StringTooLong {
        /// Its length.
        len: usize,
    },
    /// A string containing NUL, which no 9P peer accepts.
    #[error("string contains a NUL byte")]
    NulInString,
    /// A payload larger than `count[4]` can express.
    #[error("payload of {len} bytes exceeds u32")]
    DataTooLong {
        /// Its length.
        len: usize,
    },
    /// More than 16 walk names or qids.
    #[error("{count} walk elements, at most 16 allowed")]
    TooManyWalkElements {
        /// The count.
        count: usize,
    },
    /// A stat record longer than its `size[2]` can express.
    #[error("stat record of {len} bytes exceeds 65535")]
    StatTooLong {
        /// Its length.
        len: usize,
    },
    /// The frame would exceed msize.
    #[error("frame of {size} bytes exceeds msize {msize}")]
    FrameTooLarge {
        /// The frame size.
        size: usize,
        /// The limit.
        msize: u32,
    },
    /// The message does not exist in the dialect.
    #[error("{name} is not part of {dialect}")]
    NotInDialect {
        /// Message name.
        name: &'static str,
        /// The dialect string.
        dialect: &'static str,
    },
    /// A storage object attribute outside its domain.
    #[error("invalid object attribute: {0}")]
    InvalidObjAttr(&'static str),
}
