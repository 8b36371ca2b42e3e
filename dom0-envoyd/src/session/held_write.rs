//! Zero-copy `Twrite` over a ring: the payload is written to the file from where it lies in
//! the ring's request half, and the ring space is given back only after the write.
//!
//! ```text
//! Twrite in ring memory:  size[4] type[1]=118 tag[2] fid[4] offset[8] count[4] data[count]
//!                         \______________ 23 header bytes, copied ______________/ \_ left _/
//! ```
//!
//! When the next ring message is a Twrite ([`envoy_ring::RingReader::try_hold_message`]),
//! the reader *holds* it instead of copying it out: the consumer's read position moves on but
//! the published `cons` stays at the message until it is released, so the guest cannot reuse
//! the space while the kernel reads it. The 23 header bytes are copied and checked; the
//! request goes through the session's ordinary admission (tag table, Tversion-first, NOTAG)
//! and then runs on the reader's thread ([`super::execute_in_place`]): the file write is
//! `pwritev` from the shared mapping (ring → page cache is the only copy on the server;
//! 2 copies per byte in all with the client's copy into the ring). The space goes back to
//! the guest as the write proceeds: the header and each written chunk of the payload
//! ([`crate::namespace::SHARED_CHUNK`]) are released once the kernel has
//! read them, so a client whose next large Twrite waits for room can write it while this
//! one is still being written; the rest is released when the write is done, before the
//! reply.
//!
//! Everything else keeps the copying path, so errors and limits stay those of the decoder:
//!
//! * a Twrite whose `count` disagrees with its frame size is copied out whole and decoded
//!   as usual (a payload that wraps around the end of the ring is not: it is written from
//!   its two windows, ring end then ring start, in order);
//! * a Twrite that would leave the reader's thread (the worker pool) is copied first (held
//!   ring memory must not outlive the reader's turn);
//! * a connection with auth fids or `ctl` fids copies the payload and runs `dispatch` (its
//!   intercepts need a buffer);
//! * only one message is held at a time: a takeover reader that reads on while a held write
//!   is stuck copies the messages behind it (their space is published with the held one).

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use envoy_proto::{Fid, Message, Tag, Twrite};
use envoy_ring::{HeldMessage, SharedMem};

use super::Conn;
use crate::error::FsResult;
use crate::namespace::WriteSrc;
use crate::transport::FrameSource;

/// 9P message type of Twrite.
const TWRITE: u8 = 118;
/// `size[4] type[1] tag[2] fid[4] offset[8] count[4]`.
const TWRITE_HEADER: u32 = 23;

/// The next request frame of a frame transport.
#[derive(Debug)]
pub(super) enum Frame {
    /// A frame in its own buffer.
    Copied(Bytes),
    /// A Twrite left in ring memory (boxed: a ring view is a few hundred bytes).
    InPlace(Box<HeldWrite>),
}

/// A Twrite whose payload is still in ring memory.
#[derive(Debug)]
pub(super) struct HeldWrite {
    msg: HeldMessage,
    /// The payload's ring memory: one window, or two when it wraps at the ring's end.
    payload: Vec<SharedMem>,
    tag: Tag,
    /// The header's fields (`data` empty: the payload is `payload`).
    twrite: Twrite,
}

fn ring_err(e: envoy_ring::RingError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The next complete frame of `src` without waiting: a Twrite held in place when it
/// qualifies, any other frame copied out.
pub(super) fn next(src: &mut dyn FrameSource, max: u32) -> io::Result<Option<Frame>> {
    match src.try_hold_frame(max, TWRITE)? {
        Some(msg) => parse(msg).map(Some),
        None => Ok(src.try_next_frame(max)?.map(Frame::Copied)),
    }
}

/// Reads a held Twrite's header; a frame the zero-copy path does not take (count not
/// matching the size) is copied out and given to the decoder instead.
fn parse(msg: HeldMessage) -> io::Result<Frame> {
    let Some(h) = msg.get() else {
        return Err(io::Error::other("held ring message already released"));
    };
    let size = h.size();
    let mut head = [0u8; TWRITE_HEADER as usize];
    let payload = if size >= TWRITE_HEADER {
        h.read(0, &mut head).map_err(ring_err)?;
        let count = u32::from_le_bytes([head[19], head[20], head[21], head[22]]);
        if count == size - TWRITE_HEADER {
            let (first, wrapped) = h.windows(TWRITE_HEADER, count).map_err(ring_err)?;
            Some(std::iter::once(first).chain(wrapped).collect::<Vec<_>>())
        } else {
            None
        }
    } else {
        None
    };
    let Some(payload) = payload else {
        let frame = h.to_bytes().map_err(ring_err)?;
        msg.release().map_err(ring_err)?;
        return Ok(Frame::Copied(frame));
    };
    let u32_at = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    let mut off = [0u8; 8];
    off.copy_from_slice(&head[11..19]);
    Ok(Frame::InPlace(Box::new(HeldWrite {
        msg,
        payload,
        tag: Tag(u16::from_le_bytes([head[5], head[6]])),
        twrite: Twrite {
            fid: Fid(u32_at(7)),
            offset: u64::from_le_bytes(off),
            data: Bytes::new(),
        },
    })))
}

impl HeldWrite {
    /// The request's tag and message (payload not included) for admission.
    pub(super) fn request(&self) -> (Tag, Message) {
        (self.tag, Message::Twrite(self.twrite.clone()))
    }

    /// Runs the request `msg` (this Twrite, admitted) and releases the ring space: the file
    /// write straight from ring memory when the connection has no intercepted fids, else a
    /// copy through [`crate::ops::dispatch`].
    pub(super) fn run(self, conn: &Arc<Conn>, msg: Message) -> FsResult<Message> {
        if let Message::Twrite(m) = &msg {
            if !conn.fids.has_auth() && !conn.fids.has_synthetic() {
                // The written part of the payload (and the header before it) goes back to
                // the guest as the write proceeds: a client with a second large Twrite
                // queued behind this one fills the ring meanwhile.
                // The whole message is released right after the write: only a partial
                // write needs the early release (and its doorbell).
                let msg = &self.msg;
                let len: usize = self.payload.iter().map(SharedMem::len).sum();
                let done = |n: usize| {
                    if n >= len {
                        return;
                    }
                    let upto = TWRITE_HEADER.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
                    if let Err(e) = msg.release_prefix(upto) {
                        tracing::debug!(error = %e, "releasing part of a held ring message");
                    }
                };
                let r = crate::ops::file::write_in_place(conn, m, &self.payload, &done);
                self.release();
                return r;
            }
        }
        let msg = self.into_copied(msg)?;
        crate::ops::dispatch(conn, msg)
    }

    /// `msg` with the payload copied into it, the ring space released.
    pub(super) fn into_copied(self, msg: Message) -> FsResult<Message> {
        let msg = match msg {
            Message::Twrite(mut m) => {
                m.data = WriteSrc::Shared {
                    mem: &self.payload,
                    done: &|_| {},
                }
                .to_bytes()?;
                Message::Twrite(m)
            }
            other => other,
        };
        self.release();
        Ok(msg)
    }

    fn release(self) {
        if let Err(e) = self.msg.release() {
            // The reader's next ring call reports the broken ring and ends the connection.
            tracing::debug!(error = %e, "releasing a held ring message");
        }
    }
}
