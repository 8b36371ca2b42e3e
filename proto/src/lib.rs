//! Envoy's wire formats: 9P2000, 9P2000.u, 9P2000.L and Envoy's own storage service, all
//! framed like 9P. Pure encode/decode over byte buffers; no I/O.
//!
//! # Framing
//!
//! ```text
//! size[4] type[1] tag[2] body...      little-endian, size counts the whole frame
//! ```
//!
//! [`FrameSplitter`] cuts frames out of a stream buffer (checking `7 ≤ size ≤ msize` before
//! buffering), [`decode`] turns one frame into a [`Frame`] for a [`Dialect`], [`encode`] and
//! [`encode_parts`] do the reverse. Payloads (Twrite/Rread/Rreaddir/Tswrite/Rsread data) are
//! [`bytes::Bytes`] slices of the received frame, never copied by the decoder, and can be
//! handed to `writev` separately by [`encode_parts`].
//!
//! # Example: a server's receive path
//!
//! ```
//! use bytes::BytesMut;
//! use envoy_proto::*;
//!
//! let msize = 8192;
//! let dialect = Dialect::P2000L;
//! // Bytes as they arrived from a socket: a Tclunk of fid 1 with tag 3, then Tgetattr's tag
//! // and a type this dialect lacks (Tstat), then half a frame.
//! let mut rx = BytesMut::from(&[
//!     11, 0, 0, 0, 120, 3, 0, 1, 0, 0, 0,
//!     11, 0, 0, 0, 124, 4, 0, 1, 0, 0, 0,
//!     11, 0, 0,
//! ][..]);
//! let splitter = FrameSplitter::new(msize);
//! let mut tx = BytesMut::new();
//! while let Some(frame) = splitter.next_frame(&mut rx)? {
//!     match decode(frame, dialect, msize) {
//!         Ok(Frame { tag, msg: Message::Tclunk(t) }) => {
//!             assert_eq!(t.fid, Fid(1));
//!             encode(tag, &Rclunk {}.into(), dialect, msize, &mut tx)?;
//!         }
//!         Ok(other) => unreachable!("{other:?}"),
//!         // A body that fails to decode still has a tag: answer it, keep the connection.
//!         Err(e) if !e.is_fatal() => {
//!             let tag = e.tag.unwrap_or(Tag::NOTAG);
//!             let reply = Message::error_reply(dialect, e.errno(), &e.kind.to_string());
//!             encode(tag, &reply, dialect, msize, &mut tx)?;
//!         }
//!         Err(e) => return Err(e.into()),
//!     }
//! }
//! assert_eq!(rx.len(), 3); // the partial frame waits for more bytes
//! assert_eq!(&tx[..], &[7, 0, 0, 0, 121, 3, 0, 11, 0, 0, 0, 7, 4, 0, 95, 0, 0, 0][..]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Type-number space
//!
//! T-messages have even numbers, R-messages the following odd number
//! ([`Message::is_request`]); a server must answer an R-message it receives with an error.
//!
//! | numbers | protocol | defined here |
//! |---|---|---|
//! | 6–77 | 9P2000.L (`Rlerror` 7, statfs 8, lopen 12 … unlinkat 76) | yes |
//! | 100–127 | 9P2000 / 9P2000.u (version 100 … wstat 126; 106 Terror does not exist) | yes |
//! | 160–177 | storage service, dissertation §5.3.1 Table 5.2 | yes (see below) |
//! | 178–191 | storage service, reserved for later revisions | no |
//! | 192–223 | envoy-to-envoy protocol, §5.4.1 Table 5.3 ([`ENVOY_PEER_TYPES`]) | numbers only |
//!
//! Storage service (`"Envoy.storage.1"`, errors as `Rlerror`, handshake `Tversion`):
//!
//! | T | R | message |
//! |---|---|---|
//! | 160 | 161 | `Tsreserve { count }` → `Rsreserve { first, count }` |
//! | 162 | 163 | `Tscreate { id, attr }` → `Rscreate { stat }` |
//! | 164 | 165 | `Tsclone { src, dst }` → `Rsclone { stat }` |
//! | 166 | 167 | `Tsread { id, offset, count }` → `Rsread { data }` |
//! | 168 | 169 | `Tswrite { id, offset, data }` → `Rswrite { count }` |
//! | 170 | 171 | `Tsstat { id }` → `Rsstat { stat }` |
//! | 172 | 173 | `Tswstat { id, valid, attr, size }` → `Rswstat { stat }` |
//! | 174 | 175 | `Tsdelete { id }` → `Rsdelete` |
//! | 176 | 177 | `Tssync { id }` → `Rssync` |
//!
//! Envoy-to-envoy numbers (bodies defined later, decoding them fails with
//! [`DecodeErrorKind::ReservedType`]): see [`peer_type`].
//!
//! # Version strings
//!
//! `"9P2000"`, `"9P2000.u"`, `"9P2000.L"` and `"Envoy.storage.1"` ([`Dialect::version_str`]).
//!
//! # Strictness
//!
//! Strings must be UTF-8 without NUL (so a file name that is not UTF-8 cannot be
//! represented); walks carry at most 16 names; read counts must leave the reply within msize;
//! trailing bytes after a body are an error. Decoding never panics.

mod error;
mod frame;
mod messages;
mod stat;
#[cfg(test)]
mod testgen;
#[cfg(test)]
mod tests;
mod types;
mod wire;

pub use error::{DecodeError, DecodeErrorKind, EncodeError, FrameError};
pub use frame::{decode, encode, encode_parts, frame_len, EncodedParts, Frame, FrameSplitter};
pub use messages::*;
pub use stat::{obj_kind, swstat_valid, DirEntries, DirEntry, ObjAttr, ObjStat, Stat, StatIter};
pub use types::*;

/// Type numbers reserved for the envoy-to-envoy protocol.
pub const ENVOY_PEER_TYPES: std::ops::RangeInclusive<u8> = 192..=223;
/// Type numbers of the storage service (160–177 defined, 178–191 reserved).
pub const STORAGE_TYPES: std::ops::RangeInclusive<u8> = 160..=191;

/// Reserved envoy-to-envoy type numbers (dissertation §5.4.1, Table 5.3). Each T number is
/// even and its R is the next odd number. The bodies are not defined yet.
pub mod peer_type {
    /// Take a snapshot of an image.
    pub const TSNAPSHOT: u8 = 192;
    /// Reply to TSNAPSHOT.
    pub const RSNAPSHOT: u8 = 193;
    /// Nominate an envoy to receive a territory.
    pub const TNOMINATE: u8 = 194;
    /// Reply to TNOMINATE.
    pub const RNOMINATE: u8 = 195;
    /// Grant a territory to an envoy.
    pub const TGRANT: u8 = 196;
    /// Reply to TGRANT.
    pub const RGRANT: u8 = 197;
    /// Revoke a territory.
    pub const TREVOKE: u8 = 198;
    /// Reply to TREVOKE.
    pub const RREVOKE: u8 = 199;
    /// Migrate client state.
    pub const TMIGRATE: u8 = 200;
    /// Reply to TMIGRATE.
    pub const RMIGRATE: u8 = 201;
    /// Walk forwarded across a territory boundary.
    pub const TWALKREMOTE: u8 = 202;
    /// Reply to TWALKREMOTE.
    pub const RWALKREMOTE: u8 = 203;
    /// Stat of a territory root owned elsewhere.
    pub const TSTATREMOTE: u8 = 204;
    /// Reply to TSTATREMOTE.
    pub const RSTATREMOTE: u8 = 205;
    /// Release a remote fid.
    pub const TCLOSEFID: u8 = 206;
    /// Reply to TCLOSEFID.
    pub const RCLOSEFID: u8 = 207;
    /// Rename across territories.
    pub const TRENAMETREE: u8 = 208;
    /// Reply to TRENAMETREE.
    pub const RRENAMETREE: u8 = 209;
}
