//! Blocking `Read`/`Write` over one direction of a ring, so code written for sockets (envoyd's
//! session, `guest_shim::client::Client`) runs over shared memory unchanged.
//!
//! * [`RingReader`] copies published bytes out (stream mode) and rings the peer after
//!   consuming (the peer may be waiting for space).
//! * [`RingWriter`] is message-aware: it reads each 9P message's `size` from its first four
//!   bytes, waits until the whole message fits, copies header and payload slices straight from
//!   the caller's buffers into ring memory (`write_vectored`: one copy, no gathering buffer),
//!   and publishes `prod` once, when the message is complete — never a partial message.
//!
//! Both return `Ok(0)`/`BrokenPipe` when `closed()` says the connection is over, and turn ring
//! errors (hostile indexes, impossible sizes) into `io::ErrorKind::InvalidData` with the
//! [`RingError`] as source; the owner then drops the connection.

use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;

use crate::bell::{Doorbell, WaitKind, Waiter};
use crate::layout::MSG_HEADER;
use crate::ring::{Consumer, Producer};
use crate::RingError;

/// Whether the connection is over (peer detached, shutdown requested).
pub type Closed = Arc<dyn Fn() -> bool + Send + Sync>;

fn io_err(e: RingError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// 9P message type of Tversion.
const TVERSION: u8 = 100;

/// Blocking reader over a [`Consumer`].
pub struct RingReader {
    cons: Consumer,
    bell: Arc<dyn Doorbell>,
    waiter: Waiter,
    closed: Closed,
    /// Cap applied to the msize of every Tversion read (backend side), see
    /// [`RingReader::with_msize_limit`].
    msize_limit: Option<u32>,
    /// Bytes left of the message being streamed out (0: at a message boundary).
    msg_left: u32,
}

impl std::fmt::Debug for RingReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingReader")
            .field("cons", &self.cons)
            .finish()
    }
}

impl RingReader {
    /// A reader that blocks with `waiter` on `bell` and ends when `closed()`.
    pub fn new(cons: Consumer, bell: Arc<dyn Doorbell>, waiter: Waiter, closed: Closed) -> Self {
        RingReader {
            cons,
            bell,
            waiter,
            closed,
            msize_limit: None,
            msg_left: 0,
        }
    }

    /// Whether the connection is over (the `closed` condition given at creation).
    pub fn is_closed(&self) -> bool {
        (self.closed)()
    }

    /// Backend side: lowers the `msize` of every Tversion passing through to at most `limit`
    /// (the ring size), so the server never negotiates replies that could not fit in the ring
    /// — the transport's msize cap, done where the transport is. Clamping needs the whole
    /// Tversion in one `read` call (it always is: a Tversion is a few dozen bytes, and the
    /// session reads 128 KiB at a time); a client that splits a Tversion over a non-message
    /// boundary simply is not clamped, and its oversized replies end its connection.
    pub fn with_msize_limit(mut self, limit: u32) -> Self {
        self.msize_limit = Some(limit);
        self
    }

    /// At a message boundary with a whole Tversion queued that fits `buf`: copies it with its
    /// msize clamped. Otherwise notes the size of the next message and returns `None`.
    fn clamp_tversion(&mut self, buf: &mut [u8], limit: u32) -> Result<Option<usize>, RingError> {
        let Some(h) = self.cons.peek_header()? else {
            // Fewer than 7 bytes at a boundary: the frontend publishes partial messages, so
            // boundaries cannot be followed; stop clamping rather than guess.
            self.msize_limit = None;
            return Ok(None);
        };
        let size = h.size as usize;
        if h.msg_type == TVERSION
            && size >= MSG_HEADER + 4
            && size <= buf.len()
            && self.cons.available()? >= h.size
        {
            let b = buf.get_mut(..size).unwrap_or_default();
            let n = self.cons.read(b)?;
            if let Some(f) = b.get_mut(MSG_HEADER..MSG_HEADER + 4) {
                let msize = u32::from_le_bytes([f[0], f[1], f[2], f[3]]);
                f.copy_from_slice(&msize.min(limit).to_le_bytes());
            }
            return Ok(Some(n));
        }
        self.msg_left = h.size.max(1);
        Ok(None)
    }

    /// The next whole message if all of it is published now (never waits); see
    /// [`RingReader::read_message`].
    pub fn try_read_message(&mut self, max: u32) -> Result<Option<bytes::Bytes>, RingError> {
        let Some(m) = self.cons.read_message(max)? else {
            return Ok(None);
        };
        self.bell.notify_space()?;
        Ok(Some(self.clamp_message(m)))
    }

    /// Lowers a Tversion's msize to the limit (backend side).
    fn clamp_message(&self, m: bytes::Bytes) -> bytes::Bytes {
        match self.msize_limit {
            Some(limit) if m.len() >= MSG_HEADER + 4 && m.get(4) == Some(&TVERSION) => {
                let mut b = bytes::BytesMut::from(&m[..]);
                if let Some(f) = b.get_mut(MSG_HEADER..MSG_HEADER + 4) {
                    let msize = u32::from_le_bytes([f[0], f[1], f[2], f[3]]);
                    f.copy_from_slice(&msize.min(limit).to_le_bytes());
                }
                b.freeze()
            }
            _ => m,
        }
    }

    /// The next whole message (one copy out of the ring), for callers that want frames rather
    /// than a byte stream. `Ok(None)` when closed.
    pub fn read_message(&mut self, max: u32) -> Result<Option<bytes::Bytes>, RingError> {
        self.read_message_until(max, None)
    }

    /// [`RingReader::read_message`] that also gives up at `deadline` (`Ok(None)`; tell the
    /// two apart with [`RingReader::is_closed`]).
    pub fn read_message_until(
        &mut self,
        max: u32,
        deadline: Option<std::time::Instant>,
    ) -> Result<Option<bytes::Bytes>, RingError> {
        let cons = &mut self.cons;
        let m = self.waiter.wait_for(
            &*self.bell,
            || cons.read_message(max),
            &*self.closed,
            deadline,
        )?;
        let Some(m) = m else {
            return Ok(None);
        };
        self.bell.notify_space()?;
        Ok(Some(self.clamp_message(m)))
    }
}

/// A request left in ring memory while the backend uses it ([`RingReader::try_hold_message`]):
/// a [`crate::Held`] that also rings the peer when its space is given back.
pub struct HeldMessage {
    held: Option<crate::Held>,
    bell: Arc<dyn Doorbell>,
    closed: Closed,
}

impl std::fmt::Debug for HeldMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldMessage")
            .field("held", &self.held)
            .finish()
    }
}

impl HeldMessage {
    /// The message in ring memory.
    pub fn get(&self) -> Option<&crate::Held> {
        self.held.as_ref()
    }

    /// Gives the first `n` bytes back early ([`crate::Held::release_prefix`]) and tells the
    /// producer (it may be waiting for exactly that room). Nothing once the connection is
    /// closed.
    pub fn release_prefix(&self, n: u32) -> Result<(), RingError> {
        match &self.held {
            Some(h) if !(self.closed)() => {
                h.release_prefix(n)?;
                self.bell.notify_space()
            }
            _ => Ok(()),
        }
    }

    /// Gives the space back to the producer and tells it so (it may wait for room). Once the
    /// connection is closed nothing is published: the ring may be serving a new session.
    pub fn release(mut self) -> Result<(), RingError> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> Result<(), RingError> {
        match self.held.take() {
            Some(h) if (self.closed)() => {
                h.abandon();
                Ok(())
            }
            Some(h) => {
                h.release()?;
                self.bell.notify_space()
            }
            None => Ok(()),
        }
    }
}

impl Drop for HeldMessage {
    fn drop(&mut self) {
        // Errors mean the ring is unusable; the reader's next call reports that.
        let _ = self.release_inner();
    }
}

impl RingReader {
    /// Waits until a whole message is published, without taking it (then
    /// [`RingReader::try_hold_message`] or [`RingReader::try_read_message`] gets it without
    /// waiting). `Ok(false)` when closed. Sizes are checked as [`RingReader::read_message`]
    /// checks them.
    pub fn wait_message(&mut self, max: u32) -> Result<bool, RingError> {
        let cons = &self.cons;
        let r = self.waiter.wait_for(
            &*self.bell,
            || Ok(cons.next_message_size(max)?.map(|_| ())),
            &*self.closed,
            None,
        )?;
        Ok(r.is_some())
    }

    /// The next whole message *in place* (no copy; see [`crate::Consumer::hold_message`]) if
    /// it is published now, its type is `msg_type` and no other message is held; `None`
    /// otherwise (take it with [`RingReader::try_read_message`]). A held message is never
    /// a Tversion, so the msize clamp does not apply.
    pub fn try_hold_message(
        &mut self,
        max: u32,
        msg_type: u8,
    ) -> Result<Option<HeldMessage>, RingError> {
        if msg_type == TVERSION || self.msg_left != 0 || self.cons.is_holding() {
            return Ok(None);
        }
        match self.cons.peek_header()? {
            Some(h) if h.msg_type == msg_type => {}
            _ => return Ok(None),
        }
        let held = self.cons.hold_message(max)?;
        Ok(held.map(|h| HeldMessage {
            held: Some(h),
            bell: Arc::clone(&self.bell),
            closed: Arc::clone(&self.closed),
        }))
    }
}

impl Read for RingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let cons = &mut self.cons;
        let avail = self
            .waiter
            .wait_for(
                &*self.bell,
                || Ok(Some(cons.available()?).filter(|&n| n > 0)),
                &*self.closed,
                None,
            )
            .map_err(io_err)?;
        if let (Some(limit), 0) = (self.msize_limit, self.msg_left) {
            if let Some(n) = self.clamp_tversion(buf, limit).map_err(io_err)? {
                self.bell.notify_space().map_err(io_err)?;
                return Ok(n);
            }
        }
        // While clamping, never read past the current message, so the next read starts at a
        // boundary and its header is a real header.
        let buf = match (self.msize_limit, self.msg_left) {
            (Some(_), left) if left > 0 => {
                let k = buf.len().min(left as usize);
                buf.get_mut(..k).unwrap_or_default()
            }
            _ => buf,
        };
        let n = self.cons.read(buf).map_err(io_err)?;
        self.msg_left = self.msg_left.saturating_sub(n as u32);
        if avail.is_some() {
            self.bell.notify_space().map_err(io_err)?;
        }
        // Closed: what was still queued went out first; then EOF (0).
        Ok(n)
    }
}

/// Blocking, message-publishing writer over a [`Producer`].
pub struct RingWriter {
    prod: Producer,
    bell: Arc<dyn Doorbell>,
    waiter: Waiter,
    closed: Closed,
    /// Header bytes of the next message gathered so far (its size is not known yet).
    head: [u8; 4],
    head_len: usize,
    /// Bytes of the current message still to write.
    remaining: u32,
}

impl std::fmt::Debug for RingWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingWriter")
            .field("prod", &self.prod)
            .finish()
    }
}

impl RingWriter {
    /// A writer that blocks with `waiter` on `bell` and fails when `closed()`.
    pub fn new(prod: Producer, bell: Arc<dyn Doorbell>, waiter: Waiter, closed: Closed) -> Self {
        RingWriter {
            prod,
            bell,
            waiter,
            closed,
            head: [0; 4],
            head_len: 0,
            remaining: 0,
        }
    }

    /// Writes one whole message given as slices (header, payload), waiting for room; the
    /// slices are copied straight into ring memory and published together.
    pub fn send_message(&mut self, parts: &[&[u8]]) -> Result<(), RingError> {
        let prod = &mut self.prod;
        let sent = self.waiter.wait_for_kind(
            WaitKind::Space,
            &*self.bell,
            || Ok(prod.write_message(parts)?.then_some(())),
            &*self.closed,
            None,
        )?;
        if sent.is_none() {
            return Err(RingError::Closed);
        }
        self.bell.notify()
    }

    /// Reserves `len` contiguous bytes for one message built in place, waiting for the
    /// consumer to free them. `Ok(None)` when the space would wrap around the end of the ring
    /// (build the message elsewhere and send it with [`RingWriter::send_message`]). Nothing
    /// is visible to the peer before [`RingWriter::commit`].
    pub fn reserve(&mut self, len: u32) -> Result<Option<crate::Reserved>, RingError> {
        if self.remaining != 0 || self.head_len != 0 {
            return Err(RingError::Layout("reservation inside a streamed message"));
        }
        let prod = &self.prod;
        let r = self.waiter.wait_for_kind(
            WaitKind::Space,
            &*self.bell,
            || match prod.reserve(len)? {
                crate::Reserve::Ready(r) => Ok(Some(Some(r))),
                crate::Reserve::Wraps => Ok(Some(None)),
                crate::Reserve::Full => Ok(None),
            },
            &*self.closed,
            None,
        )?;
        r.ok_or(RingError::Closed)
    }

    /// Publishes the first `used` bytes of a reservation as one message and rings the peer.
    pub fn commit(&mut self, r: crate::Reserved, used: u32) -> Result<(), RingError> {
        self.prod.commit(r, used)?;
        self.bell.notify()
    }

    /// Waits until `n` bytes are free.
    fn wait_room(&mut self, n: u32) -> io::Result<()> {
        let prod = &self.prod;
        let r = self
            .waiter
            .wait_for_kind(
                WaitKind::Space,
                &*self.bell,
                || Ok((prod.free()? >= n).then_some(())),
                &*self.closed,
                None,
            )
            .map_err(io_err)?;
        r.ok_or_else(|| io::Error::from(io::ErrorKind::BrokenPipe))
    }

    /// Consumes bytes of `b` into the current message; returns how many were taken.
    fn feed(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            // Gather the size field before writing anything of a new message.
            let take = (4 - self.head_len).min(b.len());
            self.head[self.head_len..self.head_len + take].copy_from_slice(&b[..take]);
            self.head_len += take;
            if self.head_len < 4 {
                return Ok(take);
            }
            let size = u32::from_le_bytes(self.head);
            if size < MSG_HEADER as u32 || size > self.prod.ring_size() {
                return Err(io_err(RingError::MessageTooLarge {
                    size,
                    limit: self.prod.ring_size(),
                }));
            }
            self.wait_room(size)?;
            let head = self.head;
            let n = self.prod.write_partial(&head).map_err(io_err)?;
            if n != 4 {
                return Err(io_err(RingError::Layout("ring space vanished")));
            }
            self.head_len = 0;
            self.remaining = size - 4;
            return Ok(take);
        }
        let want = (self.remaining as usize).min(b.len());
        let chunk = b.get(..want).unwrap_or_default();
        // Room for the whole message was reserved, so this never comes up short.
        let n = self.prod.write_partial(chunk).map_err(io_err)?;
        self.remaining -= n as u32;
        if self.remaining == 0 {
            self.prod.publish().map_err(io_err)?;
            self.bell.notify().map_err(io_err)?;
        } else if n < want {
            return Err(io_err(RingError::Layout("ring space vanished")));
        }
        Ok(n)
    }
}

impl Write for RingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if (self.closed)() {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let mut total = 0;
        for b in bufs {
            let mut b: &[u8] = b;
            while !b.is_empty() {
                let n = self.feed(b)?;
                b = b.get(n..).unwrap_or_default();
                total += n;
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
