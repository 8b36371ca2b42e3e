//! The two byte rings of one 9pfs ring and their non-blocking producer/consumer ends.
//!
//! [`RingMem`] is one ring: its interface page and data area (see [`crate::layout`]).
//! [`RingMem::backend`] gives the host's ends (a [`Consumer`] of requests on `out`, a
//! [`Producer`] of replies on `in`), [`RingMem::frontend`] the guest's (the reverse). Each end
//! can live on its own thread.
//!
//! # Barriers (Xen `9pfs.pandoc`, "Ring Usage")
//!
//! * Consumer: load `prod` with Acquire (the spec's read barrier: no data read can move before
//!   it), check it against the private `cons`, copy bytes up to `prod`, then a full fence and a
//!   Release store of `cons` (no data read can move after the peer learns the space is free).
//! * Producer: load `cons` with Acquire (the spec's full barrier before writing into the
//!   space it frees), check against the private `prod`, copy bytes, then a Release store of
//!   `prod` (the spec's write barrier: the data is visible before the index).
//!
//! Each end keeps its own index privately and only *stores* it to shared memory; the peer's
//! index is loaded and validated on every use (`prod − cons` must not exceed the ring size),
//! so a peer scribbling on the page can make calls fail with [`RingError`] but never make this
//! side read or write outside the ring.
//!
//! # Whole messages
//!
//! A reply is published (one `prod` store) only when all of it is in the ring: Linux reads a
//! reply as soon as its 7-byte header is visible and does not re-check that the rest has
//! arrived. [`Producer::write_message`] does that in one call; [`Producer::write_partial`] +
//! [`Producer::publish`] let a streaming writer fill a message in pieces and publish at the end.
//!
//! # Messages held in place
//!
//! [`Consumer::hold_message`] takes a request without copying it (envoyd's zero-copy
//! `Twrite`: the kernel writes the payload to the file straight from ring memory). The
//! consumer's private read position moves past the message, so later messages can still be
//! read (and are copied out as usual), but the *published* `cons` stops at the held message
//! until [`Held::release`]: the producer sees that space as used and cannot overwrite it.
//! [`Held::release_prefix`] gives back the part already used (a payload's written part)
//! earlier, so a producer waiting for room can go on while the rest is in use. One message is
//! held at a time.

use std::sync::atomic::{fence, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};

use crate::layout::{
    self, RingOrder, IN_CONS, IN_PROD, MSG_HEADER, OUT_CONS, OUT_PROD, REFS, RING_ORDER,
    XEN_PAGE_SIZE,
};
use crate::mem::SharedMem;
use crate::RingError;

/// One ring: interface page + data area (`in` half then `out` half).
#[derive(Debug, Clone)]
pub struct RingMem {
    intf: SharedMem,
    data: SharedMem,
    order: RingOrder,
}

/// Which half of the data area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Backend → frontend (replies), the first half.
    In,
    /// Frontend → backend (requests), the second half.
    Out,
}

impl RingMem {
    /// Reads and validates `ring_order` from a frontend-written interface page (a backend's
    /// first step: it decides how many data pages to map).
    pub fn read_ring_order(intf: &SharedMem) -> Result<RingOrder, RingError> {
        let v = u32::from_le(intf.atomic_u32(RING_ORDER)?.load(Ordering::Acquire));
        RingOrder::new(v)
    }

    /// Copies the `2^order` grant refs out of the interface page (copy before mapping: the
    /// frontend can change the page at any time).
    pub fn read_refs(intf: &SharedMem, order: RingOrder) -> Result<Vec<u32>, RingError> {
        let n = order.data_pages();
        let mut raw = vec![0u8; 4 * n];
        intf.read(REFS, &mut raw)?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// Backend side: attaches to a ring whose interface page the frontend has set up. The
    /// order is read once (later changes by the peer are ignored) and `data` must cover it.
    pub fn attach(intf: SharedMem, data: SharedMem) -> Result<RingMem, RingError> {
        let order = Self::read_ring_order(&intf)?;
        Self::with_order(intf, data, order)
    }

    /// Uses an order the caller already read (and mapped `data` for).
    pub fn with_order(
        intf: SharedMem,
        data: SharedMem,
        order: RingOrder,
    ) -> Result<RingMem, RingError> {
        if intf.len() < XEN_PAGE_SIZE {
            return Err(RingError::Layout("interface page shorter than 4 KiB"));
        }
        if data.len() < order.data_len() {
            return Err(RingError::Layout(
                "data area shorter than 2^ring_order pages",
            ));
        }
        let data = data.slice(0, order.data_len())?;
        Ok(RingMem { intf, data, order })
    }

    /// Frontend side: zeroes the four indexes, writes `ring_order` and `refs` (grant refs of
    /// the data pages; any numbering for non-Xen memory), and returns the ring.
    pub fn init(
        intf: SharedMem,
        data: SharedMem,
        order: RingOrder,
        refs: &[u32],
    ) -> Result<RingMem, RingError> {
        let ring = Self::with_order(intf, data, order)?;
        if refs.len() != order.data_pages() {
            return Err(RingError::Layout("one grant ref per data page is needed"));
        }
        for off in [IN_CONS, IN_PROD, OUT_CONS, OUT_PROD] {
            ring.intf.atomic_u32(off)?.store(0, Ordering::Relaxed);
        }
        let raw: Vec<u8> = refs.iter().flat_map(|r| r.to_le_bytes()).collect();
        ring.intf.write(REFS, &raw)?;
        // Release: indexes and refs are visible before the order that announces them.
        ring.intf
            .atomic_u32(RING_ORDER)?
            .store(order.get().to_le(), Ordering::Release);
        Ok(ring)
    }

    /// The ring order.
    pub fn order(&self) -> RingOrder {
        self.order
    }

    /// Bytes per direction.
    pub fn ring_size(&self) -> u32 {
        self.order.ring_size()
    }

    fn half(&self, d: Direction) -> Result<Half, RingError> {
        let size = self.order.ring_size();
        let (start, prod_off, cons_off) = match d {
            Direction::In => (0, IN_PROD, IN_CONS),
            Direction::Out => (size as usize, OUT_PROD, OUT_CONS),
        };
        let h = Half {
            data: self.data.slice(start, size as usize)?,
            intf: self.intf.clone(),
            prod_off,
            cons_off,
            size,
        };
        // Fail now, not on the first message, if the index words are unusable.
        h.intf.atomic_u32(prod_off)?;
        h.intf.atomic_u32(cons_off)?;
        Ok(h)
    }

    /// The backend's ends: requests (`out`) to consume, replies (`in`) to produce. The
    /// private indexes start from the values now in the page.
    pub fn backend(&self) -> Result<(Consumer, Producer), RingError> {
        Ok((
            Consumer::new(self.half(Direction::Out)?)?,
            Producer::new(self.half(Direction::In)?)?,
        ))
    }

    /// The frontend's ends: requests (`out`) to produce, replies (`in`) to consume.
    pub fn frontend(&self) -> Result<(Producer, Consumer), RingError> {
        Ok((
            Producer::new(self.half(Direction::Out)?)?,
            Consumer::new(self.half(Direction::In)?)?,
        ))
    }

    /// The interface page (tests and hostile-peer simulations write it directly).
    pub fn intf(&self) -> &SharedMem {
        &self.intf
    }
}

/// One direction: its data half and the offsets of its two indexes in the interface page.
#[derive(Debug, Clone)]
struct Half {
    data: SharedMem,
    intf: SharedMem,
    prod_off: usize,
    cons_off: usize,
    size: u32,
}

impl Half {
    fn load(&self, off: usize) -> Result<u32, RingError> {
        Ok(u32::from_le(
            self.intf.atomic_u32(off)?.load(Ordering::Acquire),
        ))
    }

    fn store(&self, off: usize, v: u32) -> Result<(), RingError> {
        self.intf
            .atomic_u32(off)?
            .store(v.to_le(), Ordering::Release);
        Ok(())
    }

    /// Copies out `dst.len()` bytes starting at index `idx`, wrapping at the end.
    fn read_at(&self, idx: u32, dst: &mut [u8]) -> Result<(), RingError> {
        let pos = (idx & (self.size - 1)) as usize;
        let first = dst.len().min(self.size as usize - pos);
        let (a, b) = dst.split_at_mut(first);
        self.data.read(pos, a)?;
        self.data.read(0, b)
    }

    /// [`Half::read_at`] into uninitialised memory (every byte of `dst` is written).
    fn read_at_uninit(
        &self,
        idx: u32,
        dst: &mut [std::mem::MaybeUninit<u8>],
    ) -> Result<(), RingError> {
        let pos = (idx & (self.size - 1)) as usize;
        let first = dst.len().min(self.size as usize - pos);
        let (a, b) = dst.split_at_mut(first);
        self.data.read_uninit(pos, a)?;
        self.data.read_uninit(0, b)
    }

    /// Copies `src` in at index `idx`, wrapping at the end.
    fn write_at(&self, idx: u32, src: &[u8]) -> Result<(), RingError> {
        let pos = (idx & (self.size - 1)) as usize;
        let first = src.len().min(self.size as usize - pos);
        let (a, b) = src.split_at(first);
        self.data.write(pos, a)?;
        self.data.write(0, b)
    }
}

/// A 9P message header as seen in a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgHeader {
    /// Whole message length, header included.
    pub size: u32,
    /// Message type.
    pub msg_type: u8,
    /// Tag.
    pub tag: u16,
}

/// The consuming end of one direction (backend: requests; frontend: replies).
#[derive(Debug)]
pub struct Consumer {
    half: Half,
    /// Private read position: everything before it has been read (or is held in place).
    cons: u32,
    /// What may be published as `cons` while a message is held ([`Consumer::hold_message`]).
    gate: Arc<Mutex<Gate>>,
}

/// The published consumer index while messages are held in place: `cons` is published no
/// further than the start of the held message, so the producer cannot reuse its bytes.
/// Updated under its lock by the consumer and by [`Held::release`] (possibly on another
/// thread), so the published index only moves forward.
#[derive(Debug, Default)]
struct Gate {
    /// The consumer's read position (mirror of `Consumer::cons`).
    read: u32,
    /// Start of the part of the held message not given back yet, if one is held.
    held: Option<u32>,
}

fn lock_gate(g: &Mutex<Gate>) -> std::sync::MutexGuard<'_, Gate> {
    g.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Consumer {
    fn new(half: Half) -> Result<Consumer, RingError> {
        let cons = half.load(half.cons_off)?;
        let gate = Arc::new(Mutex::new(Gate {
            read: cons,
            held: None,
        }));
        Ok(Consumer { half, cons, gate })
    }

    /// Ring size in bytes.
    pub fn ring_size(&self) -> u32 {
        self.half.size
    }

    /// Bytes the peer has published and this end has not consumed. Errors when the peer's
    /// `prod` is more than a ring ahead of (or behind) the private `cons`.
    pub fn available(&self) -> Result<u32, RingError> {
        let prod = self.half.load(self.half.prod_off)?;
        layout::queued(prod, self.cons, self.half.size)
    }

    /// The header of the next message, once its 7 bytes are published.
    pub fn peek_header(&self) -> Result<Option<MsgHeader>, RingError> {
        if self.available()? < MSG_HEADER as u32 {
            return Ok(None);
        }
        let mut h = [0u8; MSG_HEADER];
        self.half.read_at(self.cons, &mut h)?;
        Ok(Some(MsgHeader {
            size: u32::from_le_bytes([h[0], h[1], h[2], h[3]]),
            msg_type: h[4],
            tag: u16::from_le_bytes([h[5], h[6]]),
        }))
    }

    /// The size of the next message when all of it is published (`None`: not yet). Sizes below
    /// 7, above `max` (msize) or above the ring are errors: such a message can never be read.
    pub fn next_message_size(&self, max: u32) -> Result<Option<u32>, RingError> {
        let Some(h) = self.peek_header()? else {
            return Ok(None);
        };
        if h.size < MSG_HEADER as u32 {
            return Err(RingError::BadMessageSize { size: h.size });
        }
        let limit = max.min(self.half.size);
        if h.size > limit {
            return Err(RingError::MessageTooLarge {
                size: h.size,
                limit,
            });
        }
        if self.available()? < h.size {
            return Ok(None);
        }
        Ok(Some(h.size))
    }

    /// Copies the next whole message out of the ring (the one copy on the receive path) and
    /// consumes it. `None` while it is incomplete.
    pub fn read_message(&mut self, max: u32) -> Result<Option<Bytes>, RingError> {
        let Some(size) = self.next_message_size(max)? else {
            return Ok(None);
        };
        let mut buf = BytesMut::with_capacity(size as usize);
        self.half
            .read_at_uninit(self.cons, &mut buf.spare_capacity_mut()[..size as usize])?;
        // SAFETY: read_at_uninit wrote all `size` bytes of the spare capacity.
        unsafe { buf.set_len(size as usize) };
        self.consume(size)?;
        Ok(Some(buf.freeze()))
    }

    /// Takes the next whole message **in place**, without copying it: the returned [`Held`]
    /// is a view of its bytes in ring memory, and the read position moves past it (later
    /// messages can be read meanwhile), but the published `cons` stays at its start until
    /// [`Held::release`] (or the drop of the [`Held`]), so the producer cannot overwrite it
    /// while it is being used. `None` while the message is incomplete. Size checks are those
    /// of [`Consumer::read_message`]. One message can be held at a time
    /// ([`Consumer::is_holding`]); a second hold is an error.
    pub fn hold_message(&mut self, max: u32) -> Result<Option<Held>, RingError> {
        let Some(size) = self.next_message_size(max)? else {
            return Ok(None);
        };
        let mut g = lock_gate(&self.gate);
        if g.held.is_some() {
            return Err(RingError::Layout("a ring message is already held in place"));
        }
        g.held = Some(self.cons);
        let at = self.cons;
        self.cons = self.cons.wrapping_add(size);
        g.read = self.cons;
        Ok(Some(Held {
            half: self.half.clone(),
            at,
            size,
            gate: Arc::clone(&self.gate),
            released: false,
        }))
    }

    /// Whether a message taken with [`Consumer::hold_message`] is still held.
    pub fn is_holding(&self) -> bool {
        lock_gate(&self.gate).held.is_some()
    }

    /// Stream mode: copies up to `dst.len()` published bytes and consumes them.
    pub fn read(&mut self, dst: &mut [u8]) -> Result<usize, RingError> {
        let n = (self.available()? as usize).min(dst.len());
        let d = dst.get_mut(..n).unwrap_or_default();
        self.half.read_at(self.cons, d)?;
        self.consume(n as u32)?;
        Ok(n)
    }

    /// Gives `n` bytes back to the producer (full barrier, then `cons += n`).
    fn consume(&mut self, n: u32) -> Result<(), RingError> {
        if n == 0 {
            return Ok(());
        }
        // Full barrier: every read of the consumed bytes completes before the producer can
        // see the space as free and overwrite it.
        fence(Ordering::SeqCst);
        self.cons = self.cons.wrapping_add(n);
        let mut g = lock_gate(&self.gate);
        g.read = self.cons;
        if g.held.is_some() {
            // Published when the held message is released.
            return Ok(());
        }
        self.half.store(self.half.cons_off, self.cons)
    }

    /// Skips `n` published bytes without reading them.
    pub fn skip(&mut self, n: u32) -> Result<(), RingError> {
        let avail = self.available()?;
        if n > avail {
            return Err(RingError::Layout("skip past the published bytes"));
        }
        self.consume(n)
    }
}

/// A whole message left in ring memory while it is used ([`Consumer::hold_message`]).
///
/// Its bytes are the peer's memory: they are reached only through copies
/// ([`Held::read`], [`Held::to_bytes`]) or as a [`SharedMem`] window handed to the kernel
/// ([`Held::contiguous`]), never as a Rust slice. The space goes back to the producer with
/// [`Held::release`] or on drop.
#[derive(Debug)]
pub struct Held {
    half: Half,
    /// Ring index of the message's first byte.
    at: u32,
    /// Message size (header included).
    size: u32,
    gate: Arc<Mutex<Gate>>,
    released: bool,
}

impl Held {
    /// The message's size in bytes, header included.
    pub fn size(&self) -> u32 {
        self.size
    }

    fn check(&self, off: u32, len: usize) -> Result<(), RingError> {
        match (off as usize).checked_add(len) {
            Some(end) if end <= self.size as usize => Ok(()),
            _ => Err(RingError::OutOfBounds {
                offset: off as usize,
                len,
                size: self.size as usize,
            }),
        }
    }

    /// Copies `dst.len()` bytes at offset `off` of the message (wrapping at the ring end).
    pub fn read(&self, off: u32, dst: &mut [u8]) -> Result<(), RingError> {
        self.check(off, dst.len())?;
        self.half.read_at(self.at.wrapping_add(off), dst)
    }

    /// The whole message, copied out (the copying path for a held message after all).
    pub fn to_bytes(&self) -> Result<Bytes, RingError> {
        let mut buf = BytesMut::with_capacity(self.size as usize);
        self.half
            .read_at_uninit(self.at, &mut buf.spare_capacity_mut()[..self.size as usize])?;
        // SAFETY: read_at_uninit wrote all `size` bytes of the spare capacity.
        unsafe { buf.set_len(self.size as usize) };
        Ok(buf.freeze())
    }

    /// Bytes `[off, off + len)` of the message as one window of ring memory, or `None` when
    /// they run past the end of the ring (wrap around).
    pub fn contiguous(&self, off: u32, len: u32) -> Result<Option<SharedMem>, RingError> {
        self.check(off, len as usize)?;
        let pos = (self.at.wrapping_add(off) & (self.half.size - 1)) as usize;
        if pos + len as usize > self.half.size as usize {
            return Ok(None);
        }
        Ok(Some(self.half.data.slice(pos, len as usize)?))
    }

    /// Bytes `[off, off + len)` of the message as ring memory windows in order: one, or two
    /// when they run past the end of the ring (the end part, then the part from the ring's
    /// start). For handing a wrapping payload to the kernel as two iovecs.
    pub fn windows(&self, off: u32, len: u32) -> Result<(SharedMem, Option<SharedMem>), RingError> {
        self.check(off, len as usize)?;
        let size = self.half.size as usize;
        let pos = (self.at.wrapping_add(off) & (self.half.size - 1)) as usize;
        let first = (len as usize).min(size - pos);
        let head = self.half.data.slice(pos, first)?;
        let rest = len as usize - first;
        let tail = if rest > 0 {
            Some(self.half.data.slice(0, rest)?)
        } else {
            None
        };
        Ok((head, tail))
    }

    /// Gives the message's space back to the producer: `cons` is published up to the
    /// consumer's read position (full barrier first: every read of the held bytes, the
    /// kernel's included, is complete before the producer may reuse them).
    pub fn release(mut self) -> Result<(), RingError> {
        self.release_inner()
    }

    /// Gives the first `n` bytes of the message back to the producer early (they are used
    /// up: a header already copied, the part of a payload already written to a file), so the
    /// producer can refill them while the rest is still in use. A prefix no longer than one
    /// given back before changes nothing; more than the message is an error.
    pub fn release_prefix(&self, n: u32) -> Result<(), RingError> {
        self.check(0, n as usize)?;
        if self.released {
            return Ok(());
        }
        // Full barrier: every read of those bytes is complete before the producer may reuse
        // them (as in `consume`).
        fence(Ordering::SeqCst);
        let mut g = lock_gate(&self.gate);
        let start = match g.held {
            Some(h) if h.wrapping_sub(self.at) < n => self.at.wrapping_add(n),
            _ => return Ok(()),
        };
        g.held = Some(start);
        self.half.store(self.half.cons_off, start)
    }

    /// Lets go of the message without publishing anything (the connection is over: the ring
    /// may already belong to a new session, whose indexes must not be touched).
    pub fn abandon(mut self) {
        self.released = true;
        lock_gate(&self.gate).held = None;
    }

    fn release_inner(&mut self) -> Result<(), RingError> {
        if self.released {
            return Ok(());
        }
        self.released = true;
        fence(Ordering::SeqCst);
        let mut g = lock_gate(&self.gate);
        g.held = None;
        self.half.store(self.half.cons_off, g.read)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // An error here means the interface page is unusable; the next ring call reports it.
        let _ = self.release_inner();
    }
}

/// What [`Producer::reserve`] found.
#[derive(Debug)]
pub enum Reserve {
    /// The space is free and contiguous.
    Ready(Reserved),
    /// Not enough free space yet (wait for the consumer).
    Full,
    /// The space would wrap around the end of the ring.
    Wraps,
}

/// Contiguous, unpublished ring memory reserved for one message ([`Producer::reserve`]).
#[derive(Debug)]
pub struct Reserved {
    mem: SharedMem,
    at: u32,
}

impl Reserved {
    /// The reserved window (write the message into it; the peer does not read it before the
    /// commit).
    pub fn mem(&self) -> &SharedMem {
        &self.mem
    }
}

/// The producing end of one direction (backend: replies; frontend: requests).
#[derive(Debug)]
pub struct Producer {
    half: Half,
    /// Published `prod`.
    prod: u32,
    /// End of the bytes written so far (≥ `prod`; the difference is not yet published).
    pending: u32,
}

impl Producer {
    fn new(half: Half) -> Result<Producer, RingError> {
        let prod = half.load(half.prod_off)?;
        Ok(Producer {
            half,
            prod,
            pending: prod,
        })
    }

    /// Ring size in bytes.
    pub fn ring_size(&self) -> u32 {
        self.half.size
    }

    /// Bytes that can be written now (counting unpublished ones as used). Errors when the
    /// peer's `cons` is out of range.
    pub fn free(&self) -> Result<u32, RingError> {
        let cons = self.half.load(self.half.cons_off)?;
        layout::queued(self.prod, cons, self.half.size)?;
        let used = layout::queued(self.pending, cons, self.half.size)?;
        Ok(self.half.size - used)
    }

    /// Bytes written but not yet published.
    pub fn unpublished(&self) -> u32 {
        self.pending.wrapping_sub(self.prod)
    }

    /// Writes one whole message made of `parts` (header, payload: no gathering copy) and
    /// publishes it. `Ok(false)`: not enough room yet (nothing written). A message larger than
    /// the ring can never fit and is an error.
    pub fn write_message(&mut self, parts: &[&[u8]]) -> Result<bool, RingError> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total > self.half.size as usize {
            return Err(RingError::MessageTooLarge {
                size: u32::try_from(total).unwrap_or(u32::MAX),
                limit: self.half.size,
            });
        }
        if (self.free()? as usize) < total {
            return Ok(false);
        }
        for p in parts {
            self.half.write_at(self.pending, p)?;
            self.pending = self.pending.wrapping_add(p.len() as u32);
        }
        self.publish()?;
        Ok(true)
    }

    /// Reserves `len` bytes of **contiguous** ring memory at the write position, for a
    /// message to be built in place (a read's data lands there straight from the page cache)
    /// and published with [`Producer::commit`]. Nothing moves until the commit: dropping the
    /// [`Reserved`] abandons it.
    ///
    /// [`Reserve::Wraps`] when the space would run past the end of the ring (the caller uses
    /// the copying path instead), [`Reserve::Full`] when it is not free yet, and an error for
    /// a length larger than the ring or while a streamed message is unfinished.
    pub fn reserve(&self, len: u32) -> Result<Reserve, RingError> {
        if len > self.half.size {
            return Err(RingError::MessageTooLarge {
                size: len,
                limit: self.half.size,
            });
        }
        if self.pending != self.prod {
            return Err(RingError::Layout(
                "reservation behind an unpublished message",
            ));
        }
        let pos = (self.pending & (self.half.size - 1)) as usize;
        if pos + len as usize > self.half.size as usize {
            return Ok(Reserve::Wraps);
        }
        if self.free()? < len {
            return Ok(Reserve::Full);
        }
        Ok(Reserve::Ready(Reserved {
            mem: self.half.data.slice(pos, len as usize)?,
            at: self.pending,
        }))
    }

    /// Publishes the first `used` bytes of `r` (the message written into it) as one message
    /// (write barrier, then `prod`). A reservation from before another write is refused.
    pub fn commit(&mut self, r: Reserved, used: u32) -> Result<(), RingError> {
        if r.at != self.pending || self.pending != self.prod {
            return Err(RingError::Layout("stale ring reservation"));
        }
        if used as usize > r.mem.len() {
            return Err(RingError::Layout("commit past the reservation"));
        }
        self.pending = self.pending.wrapping_add(used);
        self.publish()
    }

    /// Writes as much of `src` as fits without publishing it; returns how much.
    pub fn write_partial(&mut self, src: &[u8]) -> Result<usize, RingError> {
        let n = (self.free()? as usize).min(src.len());
        let s = src.get(..n).unwrap_or_default();
        self.half.write_at(self.pending, s)?;
        self.pending = self.pending.wrapping_add(n as u32);
        Ok(n)
    }

    /// Publishes everything written so far (write barrier, then `prod = pending`).
    pub fn publish(&mut self) -> Result<(), RingError> {
        if self.pending == self.prod {
            return Ok(());
        }
        // The Release store is the write barrier: the bytes are visible before the index.
        self.half.store(self.half.prod_off, self.pending)?;
        self.prod = self.pending;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn ring(order: u32) -> RingMem {
        let order = RingOrder::new(order).unwrap();
        let intf = SharedMem::anonymous(XEN_PAGE_SIZE).unwrap();
        let data = SharedMem::anonymous(order.data_len()).unwrap();
        let refs: Vec<u32> = (0..order.data_pages() as u32).collect();
        RingMem::init(intf, data, order, &refs).unwrap()
    }

    fn msg(size: u32, fill: u8) -> Vec<u8> {
        let mut m = vec![fill; size as usize];
        m[..4].copy_from_slice(&size.to_le_bytes());
        m
    }

    #[test]
    fn ring_init_layout_offsets_match_xen_struct() {
        let r = ring(2);
        let intf = r.intf();
        assert_eq!(RingMem::read_ring_order(intf).unwrap().get(), 2);
        assert_eq!(
            RingMem::read_refs(intf, r.order()).unwrap(),
            vec![0, 1, 2, 3]
        );
        let mut raw = [0u8; 4];
        intf.read(128, &mut raw).unwrap();
        assert_eq!(raw, 2u32.to_le_bytes());
        intf.read(136, &mut raw).unwrap();
        assert_eq!(raw, 1u32.to_le_bytes(), "ref[1] at 132 + 4");
    }

    #[test]
    fn ring_request_reply_roundtrip_both_directions() {
        let r = ring(0);
        let (mut f_req, mut f_rep) = r.frontend().unwrap();
        let (mut b_req, mut b_rep) = r.backend().unwrap();
        let m = msg(100, 7);
        assert!(f_req.write_message(&[&m[..10], &m[10..]]).unwrap());
        assert_eq!(b_req.read_message(8192).unwrap().unwrap(), m);
        assert_eq!(b_req.read_message(8192).unwrap(), None);
        let rep = msg(2048, 9);
        assert!(b_rep.write_message(&[&rep]).unwrap(), "exactly a full ring");
        assert!(!b_rep.write_message(&[&msg(7, 0)]).unwrap(), "ring full");
        assert_eq!(f_rep.read_message(1 << 20).unwrap().unwrap(), rep);
        assert!(b_rep.write_message(&[&msg(7, 0)]).unwrap());
        // The in-half and the out-half do not overlap.
        let mut probe = [0u8; 1];
        r.data.read(2048 + 10, &mut probe).unwrap();
        assert_eq!(probe, [7]);
    }

    #[test]
    fn ring_reserve_contiguous_built_in_place_published_on_commit() {
        let r = ring(0);
        let (_, mut f_rep) = r.frontend().unwrap();
        let (_, mut b_rep) = r.backend().unwrap();
        let Reserve::Ready(res) = b_rep.reserve(100).unwrap() else {
            panic!("an empty ring has contiguous room");
        };
        let m = msg(60, 4);
        res.mem().write(0, &m).unwrap();
        assert_eq!(
            f_rep.available().unwrap(),
            0,
            "nothing visible before commit"
        );
        b_rep.commit(res, 60).unwrap();
        assert_eq!(f_rep.read_message(4096).unwrap().unwrap(), m);
        // The next message follows the committed length, not the reserved one.
        assert!(b_rep.write_message(&[&msg(10, 5)]).unwrap());
        assert_eq!(f_rep.read_message(4096).unwrap().unwrap(), msg(10, 5));
    }

    #[test]
    fn ring_reserve_wrapping_space_refused_full_ring_waits() {
        let r = ring(0);
        let (_, mut f_rep) = r.frontend().unwrap();
        let (_, mut b_rep) = r.backend().unwrap();
        assert!(b_rep.write_message(&[&msg(2000, 1)]).unwrap());
        f_rep.read_message(4096).unwrap().unwrap();
        // 48 bytes left before the end: 100 would wrap even though the ring is empty.
        assert!(matches!(b_rep.reserve(100).unwrap(), Reserve::Wraps));
        assert!(matches!(b_rep.reserve(48).unwrap(), Reserve::Ready(_)));
        // A message that wraps (write position 2000 -> 952), still unread: 1000 bytes from
        // 952 are contiguous but only 1048 are free.
        assert!(b_rep.write_message(&[&msg(1000, 2)]).unwrap());
        assert!(matches!(b_rep.reserve(1090).unwrap(), Reserve::Full));
        assert_eq!(f_rep.read_message(4096).unwrap().unwrap(), msg(1000, 2));
        assert!(matches!(b_rep.reserve(1090).unwrap(), Reserve::Ready(_)));
        assert!(matches!(
            b_rep.reserve(2049),
            Err(RingError::MessageTooLarge { .. })
        ));
    }

    #[test]
    fn ring_reserve_stale_or_overlong_commit_is_error() {
        let r = ring(0);
        let (_, mut b_rep) = r.backend().unwrap();
        let Reserve::Ready(old) = b_rep.reserve(20).unwrap() else {
            panic!("room");
        };
        assert!(b_rep.write_message(&[&msg(10, 5)]).unwrap());
        assert!(matches!(b_rep.commit(old, 10), Err(RingError::Layout(_))));
        let Reserve::Ready(res) = b_rep.reserve(20).unwrap() else {
            panic!("room");
        };
        assert!(matches!(b_rep.commit(res, 21), Err(RingError::Layout(_))));
        assert_eq!(b_rep.write_partial(&[1, 2]).unwrap(), 2);
        assert!(matches!(b_rep.reserve(20), Err(RingError::Layout(_))));
    }

    #[test]
    fn ring_partial_message_not_visible_until_published() {
        let r = ring(0);
        let (_, mut f_rep) = r.frontend().unwrap();
        let (_, mut b_rep) = r.backend().unwrap();
        let m = msg(300, 3);
        assert_eq!(b_rep.write_partial(&m[..200]).unwrap(), 200);
        assert_eq!(f_rep.available().unwrap(), 0);
        assert_eq!(b_rep.unpublished(), 200);
        assert_eq!(b_rep.write_partial(&m[200..]).unwrap(), 100);
        b_rep.publish().unwrap();
        assert_eq!(f_rep.read_message(4096).unwrap().unwrap(), m);
    }

    #[test]
    fn ring_held_message_space_not_reused_until_release() {
        let r = ring(0);
        let (mut f_req, _) = r.frontend().unwrap();
        let (mut b_req, _) = r.backend().unwrap();
        let first = msg(1500, 3);
        assert!(f_req.write_message(&[&first]).unwrap());
        let held = b_req.hold_message(4096).unwrap().unwrap();
        assert!(b_req.is_holding());
        assert_eq!(held.size(), 1500);
        let mut head = [0u8; 4];
        held.read(0, &mut head).unwrap();
        assert_eq!(head, 1500u32.to_le_bytes());
        assert_eq!(held.to_bytes().unwrap(), first);
        let w = held.contiguous(4, 1496).unwrap().unwrap();
        let mut body = vec![0u8; 1496];
        w.read(0, &mut body).unwrap();
        assert!(body.iter().all(|&b| b == 3));
        assert!(held.contiguous(1, 1500).is_err(), "past the message");
        // The space stays used: 548 bytes are free, not 2048.
        assert_eq!(f_req.free().unwrap(), 548);
        assert!(f_req.write_message(&[&msg(500, 4)]).unwrap());
        // A later message is read (copied) meanwhile; its space is not published either.
        assert_eq!(b_req.read_message(4096).unwrap().unwrap(), msg(500, 4));
        assert_eq!(f_req.free().unwrap(), 48);
        assert!(f_req.write_message(&[&msg(40, 5)]).unwrap());
        assert!(matches!(
            b_req.hold_message(4096),
            Err(RingError::Layout(_))
        ));
        assert_eq!(b_req.read_message(4096).unwrap().unwrap(), msg(40, 5));
        held.release_prefix(100).unwrap();
        assert_eq!(f_req.free().unwrap(), 108, "the first 100 bytes are back");
        held.release_prefix(60).unwrap();
        assert_eq!(
            f_req.free().unwrap(),
            108,
            "a shorter prefix changes nothing"
        );
        assert!(held.release_prefix(1501).is_err());
        held.release_prefix(1500).unwrap();
        assert_eq!(
            f_req.free().unwrap(),
            1508,
            "the later messages wait for the release"
        );
        held.release().unwrap();
        assert!(!b_req.is_holding());
        assert_eq!(f_req.free().unwrap(), 2048, "both messages given back");
    }

    #[test]
    fn ring_held_message_wrapping_is_not_contiguous_and_drop_releases() {
        let r = ring(0);
        let (mut f_req, _) = r.frontend().unwrap();
        let (mut b_req, _) = r.backend().unwrap();
        // Move the indexes to 2000 so the next message wraps at the ring end (2048).
        assert!(f_req.write_message(&[&msg(2000, 0)]).unwrap());
        b_req.read_message(4096).unwrap().unwrap();
        let m: Vec<u8> = (0..100u32).map(|i| i as u8).collect();
        let mut m = m;
        m[..4].copy_from_slice(&100u32.to_le_bytes());
        assert!(f_req.write_message(&[&m]).unwrap());
        let held = b_req.hold_message(4096).unwrap().unwrap();
        assert_eq!(held.to_bytes().unwrap(), m, "read across the wrap");
        assert!(held.contiguous(0, 100).unwrap().is_none());
        let tail = held.contiguous(48, 52).unwrap().unwrap();
        let mut t = [0u8; 52];
        tail.read(0, &mut t).unwrap();
        assert_eq!(t[..], m[48..]);
        // As windows: the 48 bytes up to the ring end, then 52 from its start; at every split
        // the two windows hold the message's bytes in order.
        for off in 0..100u32 {
            let (a, b) = held.windows(off, 100 - off).unwrap();
            let mut got = vec![0u8; a.len()];
            a.read(0, &mut got).unwrap();
            if let Some(b) = b {
                let mut more = vec![0u8; b.len()];
                b.read(0, &mut more).unwrap();
                got.extend(more);
            }
            assert_eq!(got[..], m[off as usize..], "from offset {off}");
            let first = if off < 48 { 48 - off } else { 100 - off };
            assert_eq!(a.len(), first as usize, "split at the ring end");
        }
        assert!(held.windows(1, 100).is_err(), "past the message");
        assert_eq!(f_req.free().unwrap(), 1948);
        drop(held);
        assert_eq!(f_req.free().unwrap(), 2048);
    }

    #[test]
    fn ring_message_larger_than_ring_or_msize_is_error() {
        let r = ring(0);
        let (mut f_req, _) = r.frontend().unwrap();
        let (mut b_req, _) = r.backend().unwrap();
        assert!(matches!(
            f_req.write_message(&[&msg(2049, 0)]),
            Err(RingError::MessageTooLarge { .. })
        ));
        assert!(f_req.write_message(&[&msg(1000, 0)]).unwrap());
        assert!(matches!(
            b_req.read_message(512),
            Err(RingError::MessageTooLarge {
                size: 1000,
                limit: 512
            })
        ));
    }

    #[test]
    fn ring_hostile_indexes_detected() {
        let r = ring(0);
        let (mut b_req, b_rep) = r.backend().unwrap();
        // Frontend claims 4096 bytes queued in a 2048-byte ring.
        r.intf()
            .atomic_u32(OUT_PROD)
            .unwrap()
            .store(4096, Ordering::SeqCst);
        assert!(matches!(
            b_req.read_message(8192),
            Err(RingError::IndexOutOfRange {
                prod: 4096,
                cons: 0,
                size: 2048
            })
        ));
        // Frontend's in_cons runs ahead of the backend's in_prod.
        r.intf()
            .atomic_u32(IN_CONS)
            .unwrap()
            .store(5, Ordering::SeqCst);
        assert!(matches!(
            b_rep.free(),
            Err(RingError::IndexOutOfRange { .. })
        ));
        // A size field below the header length.
        r.intf()
            .atomic_u32(OUT_PROD)
            .unwrap()
            .store(7, Ordering::SeqCst);
        r.data.write(2048, &3u32.to_le_bytes()).unwrap();
        assert!(matches!(
            b_req.read_message(8192),
            Err(RingError::BadMessageSize { size: 3 })
        ));
    }
}
