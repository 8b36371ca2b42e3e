//! Sending replies: whichever thread produced a reply writes it, with no writer thread.
//!
//! # Why
//!
//! A writer thread per connection costs a wake-up per reply (and a thread stack per
//! connection). Here a reply is encoded by the thread that produced it (the connection's
//! reader when it ran the request itself, or a pool worker), appended to the connection's
//! queue, and the same thread then tries to send the queue:
//!
//! * **One sender at a time, no waiting.** The transport writer sits behind its own mutex.
//!   A thread that finds it taken leaves its reply queued and goes on: the holder re-checks
//!   the queue after every send and again after letting go of the writer, so a queued reply
//!   is never stranded. Replies queued while a send is running go out together in the next
//!   `writev` (up to [`MAX_BATCH`] replies or [`MAX_BATCH_BYTES`]).
//! * **Never blocked by a slow client.** Those sends use [`ReplyWriter::try_write_vectored`]
//!   (`MSG_DONTWAIT` on sockets). When the client's receive buffer is full, what is left is
//!   put back at the head of the queue and the connection's **flusher** thread — started the
//!   first time it is needed, then kept for the connection's life — sends it with blocking
//!   writes. Request threads never wait for a client to read.
//! * **Bounded.** A request's tag stays in flight until its reply is taken for writing, so
//!   [`super::MAX_IN_FLIGHT`] already bounds the queued replies of requests. Replies the
//!   reader sends itself without registering a tag (errors for undecodable frames, Rversion,
//!   immediate Rflush) are bounded by [`MAX_QUEUED_ITEMS`]: the reader stops taking frames
//!   while more wait ([`Replies::wait_for_room`]), so a client that floods bad frames and
//!   never reads holds a bounded amount of server memory.
//! * **Tags and order.** A tag stays in flight until its reply is taken from the queue to be
//!   written (so a client reusing a tag whose reply it has not received is still caught). It
//!   is retired then, under the queue lock, and the `Rflush`es that waited for it are put in
//!   the same `writev` right behind it. The reader answers a Tflush for an unknown tag by
//!   queueing its `Rflush` after it saw the tag retired, so an `Rflush` never overtakes the
//!   reply it flushes.

use std::collections::VecDeque;
use std::io::{IoSlice, Write};
use std::sync::{Arc, Condvar, Mutex, TryLockError};

use bytes::{Bytes, BytesMut};
use envoy_proto::{encode_parts, Dialect, Message, Rflush, Tag};

use super::Params;
use crate::namespace::node::lock;
use crate::transport::ReplyWriter;

/// Most replies gathered into one `writev`.
pub const MAX_BATCH: usize = 64;
/// Gathering stops once the batch holds this many bytes (headers + payloads).
pub const MAX_BATCH_BYTES: usize = 1 << 20;
/// The reader waits before taking more frames while more than this many replies (or
/// leftovers of a short write) are queued: room for every registered request's reply plus as
/// many unregistered ones.
pub const MAX_QUEUED_ITEMS: usize = 2 * super::MAX_IN_FLIGHT;

/// One queued piece of output.
#[derive(Debug)]
enum Item {
    /// A reply not yet taken for writing; its tag is retired when it is (if `retire`).
    Reply {
        tag: Tag,
        retire: bool,
        head: Bytes,
        payload: Option<Bytes>,
    },
    /// Bytes of replies already taken (and retired) that a short write left over.
    Rest(Bytes),
}

impl Item {
    fn len(&self) -> usize {
        match self {
            Item::Reply { head, payload, .. } => {
                head.len() + payload.as_ref().map_or(0, Bytes::len)
            }
            Item::Rest(b) => b.len(),
        }
    }
}

/// Encoded replies waiting to be sent, in wire order.
#[derive(Debug, Default)]
struct Queue {
    /// Replies and leftovers; the front may be a partly sent leftover.
    chunks: VecDeque<Item>,
    /// Bytes in `chunks`.
    bytes: usize,
    /// A write failed or the connection closed: replies are dropped from now on.
    dead: bool,
    /// The flusher has work (a non-blocking send was refused).
    flush_wanted: bool,
    /// The flusher thread runs.
    flusher_started: bool,
    /// Threads waiting on `changed` (a notification is a system call: only made for them).
    waiters: usize,
}

/// A connection's reply path.
pub struct Replies {
    queue: Mutex<Queue>,
    /// Signals the flusher (work or close) and a reader waiting for room.
    changed: Condvar,
    out: Mutex<ReplyWriter>,
    flusher: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The connection's number, for the flusher's name and logs.
    conn_id: u64,
    /// The connection's tag table.
    tags: Box<dyn Retire + Send + Sync>,
    /// Encoding parameters of the `Rflush`es sent behind flushed replies.
    params: Mutex<Params>,
    /// The transport is a ring: replies can be built in place ([`Replies::send_read_direct`]).
    in_place: bool,
}

/// The tag table a reply retires its tag in.
pub trait Retire {
    /// Retires `tag`; returns the Tflush tags that waited for it (retired by the caller).
    fn retire(&self, tag: Tag) -> Vec<Tag>;
}

impl std::fmt::Debug for Replies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replies").finish_non_exhaustive()
    }
}

/// How a send attempt ended.
enum Sent {
    /// Everything handed over was written.
    All,
    /// The client's buffer is full; the rest is back in the queue.
    WouldBlock,
    /// The connection is broken.
    Dead,
}

thread_local! {
    /// Set while the reader runs a request with more requests behind it: its reply is
    /// queued, not sent, and goes out with the others in one `writev` ([`Replies::flush`]).
    static CORK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Holds back (or not) the replies this thread sends.
pub fn set_cork(on: bool) {
    CORK.with(|c| c.set(on));
}

thread_local! {
    /// Header scratch: reply headers are encoded here and split off (the allocation is
    /// reused until a split-off header is still alive).
    static HEADS: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

/// Encodes `msg` for `tag` as header + optional payload; a reply that does not encode
/// becomes `EIO` (and if even that fails, `None`: nothing is sent for the tag).
fn encode(tag: Tag, msg: &Message, dialect: Dialect, msize: u32) -> Option<(Bytes, Option<Bytes>)> {
    HEADS.with(|h| {
        let mut h = h.borrow_mut();
        if h.capacity() < 256 {
            h.reserve(16 * 1024);
        }
        h.clear();
        let parts = match encode_parts(tag, msg, dialect, msize, &mut h) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(%tag, error = %e, reply = msg.name(), "reply does not encode; sending EIO");
                h.clear();
                let err = Message::error_reply(dialect, libc::EIO as u32, "reply does not encode");
                encode_parts(tag, &err, dialect, msize, &mut h).ok()?
            }
        };
        let head = h.split_to(parts.header_len).freeze();
        Some((head, parts.payload.filter(|p| !p.is_empty())))
    })
}

impl Replies {
    /// A reply path writing to `out`.
    pub fn new(conn_id: u64, out: ReplyWriter, tags: Box<dyn Retire + Send + Sync>) -> Replies {
        Replies {
            in_place: out.is_ring(),
            conn_id,
            tags,
            params: Mutex::new(Params {
                dialect: None,
                msize: crate::config::MIN_MSIZE,
            }),
            queue: Mutex::new(Queue::default()),
            changed: Condvar::new(),
            out: Mutex::new(out),
            flusher: Mutex::new(None),
        }
    }

    /// Queues `msg` for `tag` and sends what is queued. With `retire`, the tag is retired
    /// when the reply is taken for writing, and the `Rflush`es of the Tflushes that waited
    /// for it follow the reply.
    pub fn send(self: &Arc<Self>, params: Params, tag: Tag, msg: &Message, retire: bool) {
        let dialect = params.dialect.unwrap_or(Dialect::P2000L);
        let encoded = encode(tag, msg, dialect, params.msize);
        {
            let mut q = lock(&self.queue);
            if q.dead {
                drop(q);
                if retire {
                    for ft in self.tags.retire(tag) {
                        self.tags.retire(ft);
                    }
                }
                return;
            }
            match encoded {
                Some((head, payload)) => q.push(Item::Reply {
                    tag,
                    retire,
                    head,
                    payload,
                }),
                None if retire => {
                    // Nothing can be sent for this tag; it is over all the same.
                    for ft in self.tags.retire(tag) {
                        self.tags.retire(ft);
                    }
                }
                None => {}
            }
            *lock(&self.params) = params;
        }
        if !CORK.with(std::cell::Cell::get) {
            self.pump();
        }
    }

    /// Sends the replies held back (see [`set_cork`]) and whatever else is queued.
    pub fn flush(self: &Arc<Self>) {
        if !lock(&self.queue).chunks.is_empty() {
            self.pump();
        }
    }

    /// Whether [`Replies::send_read_direct`] can work on this transport (a ring).
    pub fn in_place(&self) -> bool {
        self.in_place
    }

    /// Sends the `Rread` for `tag` built in place in the transport's memory: `fill` gets the
    /// data window (`count` bytes, contiguous ring memory right behind the 11-byte header)
    /// and returns how many bytes it put there; the header is written with that count and
    /// the reply published whole. Zero-copy when `fill` reads the store straight into the
    /// window.
    ///
    /// `None` (and `fill` not called) when the transport cannot do that — not a ring, the
    /// space would wrap around the ring's end, the reply would exceed msize, the connection is
    /// dead — and the caller sends an ordinary reply. `Some(Err)`: `fill` failed, nothing was
    /// published, the tag is still in flight (send an error reply for it).
    ///
    /// Order: the ring writer is held from before the queue is drained until after the
    /// publication, so replies queued earlier go out first and no other reply can land in the
    /// reserved space; replies queued meanwhile are sent right after.
    pub fn send_read_direct<E>(
        self: &Arc<Self>,
        params: Params,
        tag: Tag,
        count: u32,
        fill: impl FnOnce(&envoy_ring::SharedMem) -> Result<usize, E>,
    ) -> Option<Result<(), E>> {
        const RREAD: u8 = 117;
        const HEAD: u32 = 11;
        if !self.in_place {
            return None;
        }
        let total = HEAD.checked_add(count)?;
        if total > params.msize || count as usize > envoy_storage::MAX_IO {
            return None;
        }
        let mut out = lock(&self.out);
        out.ring_writer()?;
        // Earlier replies first (blocking: a ring writer blocks anyway).
        let queued = {
            let q = lock(&self.queue);
            !q.chunks.is_empty() || q.dead
        };
        if queued && !matches!(self.send_queued(&mut out, true), Sent::All) {
            return None;
        }
        let ring = out.ring_writer()?;
        let res = match ring.reserve(total) {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!(error = %e, "ring reservation failed; dropping further replies");
                drop(out);
                self.kill();
                return None;
            }
        };
        let window = res.mem().slice(HEAD as usize, count as usize).ok()?;
        let n = match fill(&window) {
            Ok(n) => u32::try_from(n.min(count as usize)).unwrap_or(count),
            Err(e) => return Some(Err(e)),
        };
        let mut head = [0u8; HEAD as usize];
        head[..4].copy_from_slice(&(HEAD + n).to_le_bytes());
        head[4] = RREAD;
        head[5..7].copy_from_slice(&tag.0.to_le_bytes());
        head[7..11].copy_from_slice(&n.to_le_bytes());
        *lock(&self.params) = params;
        // Retired before the client can see the reply (it may reuse the tag at once).
        let flushes = self.tags.retire(tag);
        let sent = res
            .mem()
            .write(0, &head)
            .and_then(|()| ring.commit(res, HEAD + n));
        if let Err(e) = sent {
            tracing::debug!(error = %e, "ring publication failed; dropping further replies");
            for ft in flushes {
                self.tags.retire(ft);
            }
            drop(out);
            self.kill();
            return Some(Ok(()));
        }
        let d = params.dialect.unwrap_or(Dialect::P2000L);
        for ft in flushes {
            self.tags.retire(ft);
            if let Some((h, _)) = encode(ft, &Rflush {}.into(), d, params.msize) {
                if let Err(e) = out.write_all(&h) {
                    tracing::debug!(error = %e, "write failed; dropping further replies");
                    drop(out);
                    self.kill();
                    return Some(Ok(()));
                }
            }
        }
        drop(out);
        // Replies queued by threads that found the writer taken.
        if !lock(&self.queue).chunks.is_empty() {
            self.pump();
        }
        Some(Ok(()))
    }

    /// Sends queued replies without blocking, handing over to the flusher when the client's
    /// buffer is full. Returns at once if another thread is sending (it will see our replies).
    fn pump(self: &Arc<Self>) {
        loop {
            let mut out = match self.out.try_lock() {
                Ok(o) => o,
                Err(TryLockError::WouldBlock) => return,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
            };
            let r = self.send_queued(&mut out, false);
            drop(out);
            match r {
                Sent::All => {
                    // Replies queued by a thread that found the writer taken just now.
                    if lock(&self.queue).chunks.is_empty() {
                        return;
                    }
                }
                Sent::WouldBlock => {
                    self.want_flusher();
                    return;
                }
                Sent::Dead => return,
            }
        }
    }

    /// Sends the queue until it is empty (`Sent::All`), a non-blocking send is refused, or a
    /// write fails. `blocking` selects the blocking writer (the flusher's).
    fn send_queued(&self, out: &mut ReplyWriter, blocking: bool) -> Sent {
        let mut batch: Vec<Bytes> = Vec::with_capacity(2 * MAX_BATCH);
        loop {
            batch.clear();
            {
                let mut q = lock(&self.queue);
                if q.dead {
                    return Sent::Dead;
                }
                let mut bytes = 0;
                while batch.len() < 2 * MAX_BATCH && bytes < MAX_BATCH_BYTES {
                    let Some(item) = q.chunks.pop_front() else {
                        break;
                    };
                    q.bytes -= item.len();
                    bytes += item.len();
                    match item {
                        Item::Rest(b) => batch.push(b),
                        Item::Reply {
                            tag,
                            retire,
                            head,
                            payload,
                        } => {
                            // Retire just before the bytes can reach the client: it may reuse
                            // the tag the moment it has the reply.
                            let flushes = if retire {
                                self.tags.retire(tag)
                            } else {
                                Vec::new()
                            };
                            batch.push(head);
                            batch.extend(payload);
                            for ft in flushes {
                                self.tags.retire(ft);
                                let p = *lock(&self.params);
                                let d = p.dialect.unwrap_or(Dialect::P2000L);
                                if let Some((h, _)) = encode(ft, &Rflush {}.into(), d, p.msize) {
                                    bytes += h.len();
                                    batch.push(h);
                                }
                            }
                        }
                    }
                }
                if batch.is_empty() {
                    return Sent::All;
                }
            }
            let written = write_some(out, &batch, blocking);
            let mut q = lock(&self.queue);
            let (n, result) = match written {
                Ok(n) => (n, None),
                Err((n, e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    (n, Some(Sent::WouldBlock))
                }
                Err((_, e)) => {
                    tracing::debug!(error = %e, "write failed; dropping further replies");
                    drop(q);
                    self.kill();
                    return Sent::Dead;
                }
            };
            // Put back what was not written, in order, at the head of the queue.
            let mut skip = n;
            let mut rest: Vec<Bytes> = Vec::new();
            for mut c in batch.drain(..) {
                if skip >= c.len() {
                    skip -= c.len();
                    continue;
                }
                if skip > 0 {
                    let _ = c.split_to(skip);
                    skip = 0;
                }
                rest.push(c);
            }
            for c in rest.into_iter().rev() {
                q.push_front(Item::Rest(c));
            }
            let wake = q.waiters > 0;
            drop(q);
            if wake {
                self.changed.notify_all();
            }
            if let Some(r) = result {
                return r;
            }
        }
    }

    /// Asks the flusher to send what a non-blocking send could not, starting it if needed.
    fn want_flusher(self: &Arc<Self>) {
        let mut q = lock(&self.queue);
        q.flush_wanted = true;
        if q.flusher_started {
            let wake = q.waiters > 0;
            drop(q);
            if wake {
                self.changed.notify_all();
            }
            return;
        }
        q.flusher_started = true;
        drop(q);
        let me = Arc::clone(self);
        let span = tracing::debug_span!("flusher", conn = self.conn_id);
        let spawned = std::thread::Builder::new()
            .name(format!("envoyd-f{}", self.conn_id))
            .spawn(move || {
                let _e = span.enter();
                me.flusher();
            });
        match spawned {
            Ok(h) => *lock(&self.flusher) = Some(h),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the reply flusher; closing the connection");
                self.kill();
            }
        }
    }

    /// The flusher thread: blocking sends whenever a non-blocking one was refused.
    fn flusher(&self) {
        loop {
            {
                let mut q = lock(&self.queue);
                q.waiters += 1;
                while !q.flush_wanted && !q.dead {
                    q = self
                        .changed
                        .wait(q)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                q.waiters -= 1;
                if q.dead {
                    return;
                }
                q.flush_wanted = false;
            }
            loop {
                let mut out = lock(&self.out);
                let r = self.send_queued(&mut out, true);
                drop(out);
                match r {
                    Sent::Dead => return,
                    // Blocking sends are not refused; `All` means the queue was empty. Check
                    // again after letting go of the writer (a sender may have left replies).
                    Sent::All | Sent::WouldBlock => {
                        if lock(&self.queue).chunks.is_empty() {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Waits while more than [`MAX_QUEUED_ITEMS`] replies wait to be sent.
    pub fn wait_for_room(&self) {
        let mut q = lock(&self.queue);
        q.waiters += 1;
        while q.chunks.len() > MAX_QUEUED_ITEMS && !q.dead {
            q = self
                .changed
                .wait(q)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        q.waiters -= 1;
    }

    /// Whether the reader should wait before taking another request.
    pub fn is_full(&self) -> bool {
        let q = lock(&self.queue);
        q.chunks.len() > MAX_QUEUED_ITEMS && !q.dead
    }

    /// Drops every queued reply (retiring their tags) and refuses new ones; stops the
    /// flusher.
    pub fn kill(&self) {
        let mut q = lock(&self.queue);
        q.dead = true;
        let items: Vec<Item> = q.chunks.drain(..).collect();
        q.bytes = 0;
        drop(q);
        self.retire_dropped(items);
        self.changed.notify_all();
    }

    /// Retires the tags of replies that will never be sent (the reader may wait for room).
    fn retire_dropped(&self, items: Vec<Item>) {
        for item in items {
            if let Item::Reply {
                tag, retire: true, ..
            } = item
            {
                for ft in self.tags.retire(tag) {
                    self.tags.retire(ft);
                }
            }
        }
    }

    /// Ends the reply path when the connection closes: stops and joins the flusher.
    pub fn close(&self) {
        self.kill();
        let h = lock(&self.flusher).take();
        if let Some(h) = h {
            let _ = h.join();
        }
        let _ = lock(&self.out).flush();
    }
}

impl Queue {
    fn push(&mut self, item: Item) {
        self.bytes += item.len();
        self.chunks.push_back(item);
    }

    fn push_front(&mut self, item: Item) {
        self.bytes += item.len();
        self.chunks.push_front(item);
    }
}

/// One (vectored) write of `batch`; returns bytes written, or the error with the bytes written
/// before it (always 0 here: one system call).
fn write_some(
    out: &mut ReplyWriter,
    batch: &[Bytes],
    blocking: bool,
) -> Result<usize, (usize, std::io::Error)> {
    let slices: Vec<IoSlice<'_>> = batch.iter().map(|b| IoSlice::new(b)).collect();
    loop {
        let r = if blocking {
            out.write_vectored(&slices)
        } else {
            out.try_write_vectored(&slices)
        };
        match r {
            Ok(0) => return Err((0, std::io::ErrorKind::WriteZero.into())),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err((0, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_proto::{decode, FrameSplitter, Rclunk, Rread};

    /// A writer that accepts at most `max` bytes per call (short writes) into a shared buffer.
    struct Trickle {
        out: Arc<Mutex<Vec<u8>>>,
        max: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let n = b.len().min(self.max);
            lock(&self.out).extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A tag table that records retirements; tag 1 has one waiting Tflush (tag 50).
    #[derive(Default, Clone)]
    struct Tags(Arc<Mutex<Vec<u16>>>);

    impl Retire for Tags {
        fn retire(&self, tag: Tag) -> Vec<Tag> {
            lock(&self.0).push(tag.0);
            if tag.0 == 1 {
                vec![Tag(50)]
            } else {
                Vec::new()
            }
        }
    }

    const P: Params = Params {
        dialect: Some(Dialect::P2000L),
        msize: 8192,
    };

    fn frames(bytes: &[u8], msize: u32) -> Vec<(u16, Message)> {
        let mut buf = BytesMut::from(bytes);
        let splitter = FrameSplitter::new(msize);
        let mut out = Vec::new();
        while let Ok(Some(f)) = splitter.next_frame(&mut buf) {
            let f = decode(f, Dialect::P2000L, msize).expect("frame decodes");
            out.push((f.tag.0, f.msg));
        }
        assert!(buf.is_empty(), "no partial frame left");
        out
    }

    #[test]
    fn send_short_writes_frames_intact_in_order_rflush_after_reply() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let w = ReplyWriter::blocking(Box::new(Trickle {
            out: Arc::clone(&out),
            max: 1000,
        }));
        let tags = Tags::default();
        let r = Arc::new(Replies::new(1, w, Box::new(tags.clone())));
        let data = Bytes::from(vec![7u8; 3000]);
        r.send(P, Tag(1), &Rread { data: data.clone() }.into(), true);
        r.send(P, Tag(2), &Rclunk {}.into(), true);
        r.send(P, Tag(3), &Rclunk {}.into(), false);
        let got = frames(&lock(&out), 8192);
        let order: Vec<u16> = got.iter().map(|(t, _)| *t).collect();
        assert_eq!(order, vec![1, 50, 2, 3]);
        assert!(matches!(&got[0].1, Message::Rread(x) if x.data == data));
        assert!(matches!(got[1].1, Message::Rflush(_)));
        assert_eq!(
            *lock(&tags.0),
            vec![1, 50, 2],
            "unregistered tag 3 not retired"
        );
    }

    #[test]
    fn send_unencodable_reply_becomes_eio() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let w = ReplyWriter::blocking(Box::new(Trickle {
            out: Arc::clone(&out),
            max: usize::MAX,
        }));
        let r = Arc::new(Replies::new(1, w, Box::new(Tags::default())));
        let small = Params {
            dialect: Some(Dialect::P2000L),
            msize: 1024,
        };
        let big = Rread {
            data: Bytes::from(vec![0u8; 3000]),
        };
        r.send(small, Tag(9), &big.into(), true);
        let got = frames(&lock(&out), 1024);
        assert_eq!(got.len(), 1);
        assert!(matches!(got[0].1, Message::Rlerror(ref e) if e.ecode == libc::EIO as u32));
    }

    #[test]
    fn send_to_client_not_reading_returns_then_flusher_delivers_all() {
        use std::io::Read;
        use std::os::unix::net::UnixStream;
        let (server, mut client) = UnixStream::pair().expect("socketpair");
        let w = ReplyWriter::socket(server).expect("socket");
        let r = Arc::new(Replies::new(1, w, Box::new(Tags::default())));
        let p = Params {
            dialect: Some(Dialect::P2000L),
            msize: 1 << 20,
        };
        // 64 replies of 256 KiB: far more than a socket buffer holds. The sends must return
        // although nobody reads yet (the flusher takes over the blocked part).
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let r2 = Arc::clone(&r);
        let sender = std::thread::spawn(move || {
            for i in 0..64u16 {
                let data = Bytes::from(vec![i as u8; 256 * 1024]);
                r2.send(p, Tag(100 + i), &Rread { data }.into(), true);
            }
            let _ = done_tx.send(());
        });
        done_rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("send returned while the client was not reading");
        sender.join().expect("sender");
        let want = 64 * (11 + 256 * 1024);
        let mut got = vec![0u8; want];
        client.read_exact(&mut got).expect("every reply arrives");
        let frames = frames(&got, 1 << 20);
        assert_eq!(frames.len(), 64);
        for (i, (tag, m)) in frames.iter().enumerate() {
            assert_eq!(*tag, 100 + i as u16);
            assert!(matches!(m, Message::Rread(x) if x.data.iter().all(|b| *b == i as u8)));
        }
        r.close();
    }
}
