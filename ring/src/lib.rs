//! Envoy shared-memory rings: the Xen 9pfs data interface ("Xen transport for 9pfs version
//! 1") over any shared mapping — Xen grant-mapped pages, a `/dev/shm` file or memfd, an ivshmem
//! PCI BAR.
//!
//! * [`layout`]: the interface page and data area, to the byte.
//! * [`mem::SharedMem`]: the shared mapping (raw pointer + length; atomics and volatile copies
//!   only; the crate's only `unsafe`).
//! * [`ring`]: [`RingMem`] and its non-blocking ends ([`Consumer`], [`Producer`]) with the
//!   spec's barriers, index validation against a hostile peer, wrap-around, whole-message
//!   publication.
//! * [`bell`]: the pluggable [`Doorbell`] (futex in shared memory, eventfd; Xen event channels
//!   plug in the same way) and the adaptive [`Waiter`] (spin, then block).
//! * [`stream`]: blocking `Read`/`Write` over a ring end, for code written for sockets.
//! * [`file`](mod@file): the `ring:PATH` convention — one file holding N rings, how a client claims one,
//!   how the server finds it.
//!
//! # Copies per byte
//!
//! * Reply path (backend → frontend): an `Rread` whose space in the ring is contiguous is
//!   built in place ([`Producer::reserve`] / [`Producer::commit`], [`RingWriter::reserve`]):
//!   envoyd's store reads the file straight into the reserved ring memory (`preadv2`: the
//!   kernel's page-cache copy is the only one), writes the header with the real count and
//!   publishes the whole reply. Other replies (and an `Rread` whose space would wrap around
//!   the end) are copied once, straight from their header and payload buffers into ring
//!   memory ([`Producer::write_message`], [`RingWriter`]'s `write_vectored`: no gathering
//!   buffer). A frontend using [`RingReader::read_message`] copies each reply once out (ring
//!   → an exact-size `Bytes`, not zeroed first); one using it as `io::Read` copies into its
//!   own read buffer and then frames from there, as with a socket.
//! * Request path (frontend → backend): the frontend copies once in. envoyd holds a `Twrite`
//!   in place ([`RingReader::try_hold_message`], [`Consumer::hold_message`]: the published
//!   `cons` waits until it is released) and the store writes the payload to the file
//!   straight from the ring (`pwritev`: the kernel's ring → page-cache copy is the only one
//!   on the server; 2 copies per byte in all); a payload that wraps around the ring's end is
//!   written from its two windows in order ([`Held::windows`]).
//!   Other messages are taken whole with
//!   [`RingReader::try_read_message`] (one copy into a `Bytes` that the 9P decoder slices
//!   without copying: a copied Twrite's data stays in that buffer until the store writes
//!   it; 3 copies per byte).
//! * Copies into and out of shared memory longer than 8 bytes are `memcpy` (see
//!   [`mem`] for why that is sound here); indexes are atomics, never plain memory.

pub mod bell;
pub mod file;
pub mod layout;
pub mod mem;
pub mod ring;
pub mod stream;

pub use bell::{Doorbell, EventFdBell, FutexBell, NoBell, WaitKind, Waiter};
pub use layout::{RingOrder, MAX_RING_ORDER, XEN_PAGE_SIZE};
pub use mem::SharedMem;
pub use ring::{Consumer, Held, MsgHeader, Producer, Reserve, Reserved, RingMem};
pub use stream::{Closed, HeldMessage, RingReader, RingWriter};

/// Why a ring operation failed. Everything a peer can cause is here; none of it panics.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// An access outside the shared window (a bug or a hostile size; nothing was touched).
    #[error("access of {len} bytes at offset {offset} is outside the {size}-byte shared window")]
    OutOfBounds {
        /// Offset asked for.
        offset: usize,
        /// Length asked for.
        len: usize,
        /// Window size.
        size: usize,
    },
    /// The peer's indexes put more than a ring between producer and consumer.
    #[error("ring indexes out of range: prod {prod} cons {cons} for a {size}-byte ring (hostile or corrupt peer)")]
    IndexOutOfRange {
        /// Producer index.
        prod: u32,
        /// Consumer index.
        cons: u32,
        /// Ring size.
        size: u32,
    },
    /// A message claims to be larger than the ring or the negotiated msize.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// Claimed size.
        size: u32,
        /// Ring size or msize, whichever is smaller.
        limit: u32,
    },
    /// A message size below the 7-byte 9P header.
    #[error("message size {size} is below the 7-byte 9P header")]
    BadMessageSize {
        /// Claimed size.
        size: u32,
    },
    /// `ring_order` above 9.
    #[error("ring order {0} is above the protocol maximum 9")]
    BadRingOrder(u32),
    /// Memory too small, misaligned, or a layout value that makes no sense.
    #[error("bad ring layout: {0}")]
    Layout(&'static str),
    /// A ring file whose header is not ours or not usable.
    #[error("bad ring file: {0}")]
    BadFile(String),
    /// No free ring in a ring file.
    #[error("every ring in the file is in use")]
    NoFreeRing,
    /// The connection was closed while waiting.
    #[error("ring closed")]
    Closed,
    /// Mapping the shared memory failed.
    #[error("mapping shared memory")]
    Map(#[source] std::io::Error),
    /// Opening or sizing a ring file failed.
    #[error("ring file {path}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A doorbell system call failed.
    #[error("doorbell")]
    Doorbell(#[source] std::io::Error),
}

impl RingError {
    /// Whether the peer broke the protocol (the ring should be disconnected), as opposed to a
    /// local failure.
    pub fn is_peer_fault(&self) -> bool {
        matches!(
            self,
            RingError::IndexOutOfRange { .. }
                | RingError::MessageTooLarge { .. }
                | RingError::BadMessageSize { .. }
                | RingError::BadRingOrder(_)
        )
    }
}
