//! One 9P connection: framing, version negotiation, the tag table, flush, and running
//! requests — on the connection's own thread when that is cheapest, on the shared worker pool
//! when requests arrive together.
//!
//! # Threads
//!
//! * The **reader** (one per connection) splits frames out of the byte stream. A size below 7
//!   or above the negotiated msize closes the connection (the stream cannot be
//!   resynchronised). A frame whose body fails to decode is answered with `Rlerror`/`Rerror`
//!   for its tag; the connection stays up. `Tversion` and `Tflush` are handled right here.
//!   A transport that yields whole frames (a ring, [`crate::transport::FrameSource`]) is read
//!   frame by frame instead: no read buffer, no copy into a frame buffer; a `Twrite` is left
//!   in ring memory and written to the file from there ([`held_write`]).
//! * **Run to completion.** The reader takes frames one at a time. Requests that only look
//!   at memory (getattr, clunk, walk, statfs, readlink, getlock) it runs itself, in order,
//!   holding their replies back while more frames are buffered so a pipelined burst is
//!   answered with one `writev`. Other requests go to the worker pool (they run concurrently,
//!   there is no lock around request handling) when more frames follow, and run on the reader
//!   when they are the last one read — unless they may wait for the disk (`Tfsync`). A client
//!   with one request in flight — most of them, most of the time — is served with no thread
//!   hand-off at all: read, handle, reply on one thread.
//! * **Takeover.** Reading is a token ([`Conn`]'s read side behind a mutex): the reader lets
//!   go of it while it runs a request. If that request is still running after
//!   [`takeover::AFTER`] (it waits for a lock a long operation holds, or for a slow disk),
//!   the [`takeover`] watchdog starts another thread that takes the token and goes on
//!   reading, so one stuck request never stalls the rest of its connection. The thread that
//!   finds the token taken when its request ends steps aside.
//! * **Replies** are encoded and sent by whichever thread produced them
//!   ([`reply::Replies`]): no writer thread, no wake-up per reply, and a client that stops
//!   reading never blocks a request thread. Over a ring, a file `Rread` is built in ring
//!   memory in place ([`reply::Replies::send_read_direct`]; the store reads into it).
//!
//! # Rules
//!
//! * Tversion: msize = min(client's, `--max-msize`); a client msize below 4096 is refused
//!   with version `"unknown"`. `9P2000.L` and `9P2000.u` (and `9P2000.u…` variants) are
//!   served as such, plain `9P2000` (and other `9P2000.x`) as 9P2000; anything else gets
//!   `"unknown"`. Tversion resets the session: every fid is clunked and the connection's
//!   byte-range locks are released (requests already in flight still get their replies).
//! * A second request with a tag that is still in flight is answered with `EINVAL` (and the
//!   first one is unaffected). `NOTAG` on anything but Tversion → `EINVAL`.
//! * Tflush of an unknown or finished tag → immediate Rflush.
//! * An R-message, an unknown type or a type outside the dialect → `EOPNOTSUPP`/`EINVAL`
//!   reply for its tag.

pub mod fids;
mod held_write;
pub mod reply;
pub mod takeover;

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::TryLockError;
use std::sync::{Arc, Condvar, Mutex};

use bytes::BytesMut;
use crossbeam_channel::Sender;
use envoy_proto::{decode, Dialect, FrameSplitter, Message, Rflush, Rversion, Tag};

use crate::config::MIN_MSIZE;
use crate::namespace::node::lock;
use crate::server::Shared;
use fids::FidTable;
use held_write::{Frame, HeldWrite};
use reply::Replies;

/// A request handed to a worker.
#[derive(Debug)]
pub struct Job {
    /// The connection.
    pub conn: Arc<Conn>,
    /// The request's tag.
    pub tag: Tag,
    /// The request.
    pub msg: Message,
}

/// Negotiated parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// The dialect, `None` before Tversion.
    pub dialect: Option<Dialect>,
    /// The frame limit.
    pub msize: u32,
}

/// An in-flight request's tag entry.
#[derive(Debug, Default)]
struct TagEntry {
    /// Tflush tags waiting for this request's reply.
    flushes: Vec<Tag>,
}

/// Per-connection state shared by its reader, writer and the workers.
#[derive(Debug)]
pub struct Conn {
    /// Connection number, for logs.
    pub id: u64,
    /// The peer, for logs.
    pub peer: String,
    /// The peer's endpoint identity: the principal credential files are matched against.
    pub endpoint: crate::transport::Peer,
    /// The server.
    pub shared: Arc<Shared>,
    /// Fids.
    pub fids: FidTable,
    params: Mutex<Params>,
    tags: Mutex<HashMap<Tag, TagEntry>>,
    /// Signalled when a tag retires (the reader may be waiting for room).
    tags_freed: Condvar,
    /// Readers waiting on `tags_freed`.
    tag_waiters: std::sync::atomic::AtomicUsize,
    replies: Arc<Replies>,
    /// The read side: whoever holds this lock reads the connection.
    reading: Mutex<ReadSide>,
    /// When the request the reader runs itself started ([`takeover`]): 0 = none.
    inline_since: AtomicU64,
    /// Why reading ended, once it has (the connection's thread waits for it).
    ended: Mutex<Option<String>>,
    ended_cv: Condvar,
    pool: Sender<Job>,
}

/// The connection's read side: the byte stream and the frames split out of it.
struct ReadSide {
    reader: Box<dyn std::io::Read + Send>,
    /// Whole frames, when the transport yields them (rings): used instead of `reader`.
    frames: Option<Box<dyn crate::transport::FrameSource>>,
    splitter: FrameSplitter,
    /// Bytes read and not yet split into frames.
    buf: BytesMut,
    /// The read buffer; frames are copied out of it into `buf` (whose split-off frames then
    /// own their bytes, so payloads reach the handlers without another copy).
    tmp: Vec<u8>,
    /// Reading is over (end of stream or error).
    done: bool,
}

impl ReadSide {
    /// The next complete frame without waiting: from the frame source (a ring; a Twrite is
    /// left in ring memory, [`held_write`]) or split out of the bytes read so far.
    fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        let max = self.splitter.msize();
        match self.frames.as_mut() {
            Some(src) => held_write::next(src.as_mut(), max).map_err(|e| e.to_string()),
            None => self
                .splitter
                .next_frame(&mut self.buf)
                .map(|f| f.map(Frame::Copied))
                .map_err(|e| e.to_string()),
        }
    }
}

impl ReadSide {
    /// Whether another complete frame is buffered (taken without waiting).
    fn has_complete_frame(&self) -> bool {
        if self.frames.is_some() {
            // Frames stay in the transport until taken: nothing is buffered here.
            return false;
        }
        match self.buf.get(..4) {
            Some(h) => {
                let size = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
                self.buf.len() >= size
            }
            None => false,
        }
    }
}

impl std::fmt::Debug for ReadSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadSide")
            .field("buffered", &self.buf.len())
            .field("done", &self.done)
            .finish()
    }
}

/// Requests one connection may have in flight. The reader stops reading while the limit is
/// reached, so a client that floods requests (or never reads replies) holds at most this many
/// frames and replies in server memory.
pub const MAX_IN_FLIGHT: usize = 256;

static CONN_IDS: AtomicU64 = AtomicU64::new(1);

impl Conn {
    /// Negotiated parameters.
    pub fn params(&self) -> Params {
        *lock(&self.params)
    }

    /// The dialect (9P2000.L before negotiation, for error replies).
    pub fn dialect(&self) -> Dialect {
        self.params().dialect.unwrap_or(Dialect::P2000L)
    }

    /// The negotiated msize.
    pub fn msize(&self) -> u32 {
        self.params().msize
    }

    /// Sends the reply to a registered tag, retiring the tag.
    pub fn reply(&self, tag: Tag, msg: Message) {
        self.replies.send(self.params(), tag, &msg, true);
    }

    /// Whether replies can be built in place in the transport's memory (a ring).
    pub fn replies_in_place(&self) -> bool {
        self.replies.in_place()
    }

    /// Sends the `Rread` for a registered `tag` built in place in the transport's memory
    /// (see [`Replies::send_read_direct`]); `None` when the transport cannot.
    pub fn send_read_direct<E>(
        &self,
        tag: Tag,
        count: u32,
        fill: impl FnOnce(&envoy_ring::SharedMem) -> Result<usize, E>,
    ) -> Option<Result<(), E>> {
        self.replies
            .send_read_direct(self.params(), tag, count, fill)
    }

    /// Sends a reply to a tag that was never registered (errors for duplicate tags, bad
    /// frames, NOTAG).
    fn reply_unregistered(&self, tag: Tag, msg: Message) {
        self.replies.send(self.params(), tag, &msg, false);
    }

    /// Whether [`MAX_IN_FLIGHT`] requests are in flight (the reader waits for one to end).
    fn tags_full(&self) -> bool {
        lock(&self.tags).len() >= MAX_IN_FLIGHT
    }

    fn error(&self, errno: u32, text: &str) -> Message {
        Message::error_reply(self.dialect(), errno, text)
    }
}

impl reply::Retire for std::sync::Weak<Conn> {
    /// Called as `tag`'s reply is taken for writing: retires it and returns the Tflush tags
    /// that waited for it.
    fn retire(&self, tag: Tag) -> Vec<Tag> {
        let Some(c) = self.upgrade() else {
            return Vec::new();
        };
        let mut tags = lock(&c.tags);
        let r = tags.remove(&tag).map(|e| e.flushes).unwrap_or_default();
        // A notification is a system call: only when the reader waits for room.
        let wake = c.tag_waiters.load(Ordering::Relaxed) > 0;
        drop(tags);
        if wake {
            c.tags_freed.notify_one();
        }
        r
    }
}

/// Negotiates a Tversion: the reply and the new parameters.
pub fn negotiate(client_msize: u32, version: &str, max_msize: u32) -> (Rversion, Option<Params>) {
    let dialect = match version {
        v if v == Dialect::P2000L.version_str() => Some(Dialect::P2000L),
        v if v.starts_with(Dialect::P2000u.version_str()) => Some(Dialect::P2000u),
        v if v == Dialect::P2000.version_str() || v.starts_with("9P2000.") => Some(Dialect::P2000),
        _ => None,
    };
    match dialect {
        Some(d) if client_msize >= MIN_MSIZE => {
            let msize = client_msize.min(max_msize);
            (
                Rversion {
                    msize,
                    version: d.version_str().to_string(),
                },
                Some(Params {
                    dialect: Some(d),
                    msize,
                }),
            )
        }
        _ => (
            Rversion {
                msize: client_msize.min(max_msize),
                version: envoy_proto::VERSION_UNKNOWN.to_string(),
            },
            None,
        ),
    }
}

/// Runs one request and sends its reply: the request's span, statistics, the handler, the
/// error mapping. Called by the connection's reader (inline) and by pool workers.
pub fn execute(conn: &Arc<Conn>, tag: Tag, msg: Message) {
    run_request(conn, tag, msg, None);
}

/// [`execute`] for a Twrite whose payload is still in ring memory ([`held_write`]); the
/// ring space is released when the write is done, before the reply.
fn execute_in_place(conn: &Arc<Conn>, tag: Tag, msg: Message, held: Box<HeldWrite>) {
    run_request(conn, tag, msg, Some(held));
}

fn run_request(conn: &Arc<Conn>, tag: Tag, msg: Message, held: Option<Box<HeldWrite>>) {
    let name = msg.name();
    let ty = msg.msg_type();
    let t0 = std::time::Instant::now();
    let fid = crate::ops::request_fid(&msg).map(|f| f.0);
    let span = tracing::debug_span!("req", conn = conn.id, op = name, tag = tag.0, fid);
    let _e = span.enter();
    tracing::trace!(?msg, "request");
    let msg = match msg {
        // A read over a ring: the reply is built in ring memory (zero-copy) when it can be.
        Message::Tread(t) => match crate::ops::file::read_direct(conn, tag, t) {
            Ok(r) => {
                let failed = r.is_err();
                conn.shared.op_stats.record(ty, t0.elapsed(), failed);
                if let Err(e) = r {
                    tracing::debug!(error = %e, "failed");
                    let (ename, errno) = crate::errno::rerror(&e);
                    conn.reply(tag, Message::error_reply(conn.dialect(), errno, &ename));
                }
                return;
            }
            Err(t) => Message::Tread(t),
        },
        m => m,
    };
    let result = match held {
        Some(h) => h.run(conn, msg),
        None => crate::ops::dispatch(conn, msg),
    };
    conn.shared
        .op_stats
        .record(ty, t0.elapsed(), result.is_err());
    let reply = match result {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "failed");
            let (ename, errno) = crate::errno::rerror(&e);
            Message::error_reply(conn.dialect(), errno, &ename)
        }
    };
    tracing::trace!(?reply, "reply");
    conn.reply(tag, reply);
}

/// Requests that only look at memory (the fid table, cached attributes and directories):
/// the reader runs them itself even when more requests follow, in order — cheaper than a
/// hand-off to the pool. Anything else that has requests behind it goes to the pool.
fn runs_inline_always(msg: &Message) -> bool {
    matches!(
        msg,
        Message::Tgetattr(_)
            | Message::Tclunk(_)
            | Message::Twalk(_)
            | Message::Tstatfs(_)
            | Message::Treadlink(_)
            | Message::Tgetlock(_)
    )
}

/// Whether a request should leave the reader's thread even when it is the only one pending:
/// it may wait for the disk, and the reader should keep reading meanwhile.
fn runs_on_pool(msg: &Message) -> bool {
    matches!(msg, Message::Tfsync(_))
}

/// Serves one connection until it closes. Runs on the connection's thread.
pub fn serve(shared: Arc<Shared>, conn: crate::transport::Connection, pool: Sender<Job>) {
    let crate::transport::Connection {
        reader,
        frames,
        writer,
        shutdown,
        peer,
    } = conn;
    let shutdown: Arc<dyn Fn() + Send + Sync> = Arc::from(shutdown);
    let max_msize = shared.config.max_msize;
    let id = CONN_IDS.fetch_add(1, Ordering::Relaxed);
    let c = Arc::new_cyclic(|me| Conn {
        id,
        peer: peer.to_string(),
        endpoint: peer,
        fids: FidTable::new(shared.config.max_fids_per_conn),
        params: Mutex::new(Params {
            dialect: None,
            msize: max_msize,
        }),
        tags: Mutex::new(HashMap::new()),
        tags_freed: Condvar::new(),
        tag_waiters: std::sync::atomic::AtomicUsize::new(0),
        replies: Arc::new(Replies::new(id, writer, Box::new(me.clone()))),
        reading: Mutex::new(ReadSide {
            reader,
            frames,
            splitter: FrameSplitter::new(max_msize),
            buf: BytesMut::with_capacity(64 * 1024),
            tmp: vec![0u8; 128 * 1024],
            done: false,
        }),
        inline_since: AtomicU64::new(0),
        ended: Mutex::new(None),
        ended_cv: Condvar::new(),
        pool,
        shared: Arc::clone(&shared),
    });
    let reg = shared.register_conn(&c, Arc::clone(&shutdown));
    let span = tracing::info_span!("conn", id = c.id, peer = %c.peer);
    let _e = span.enter();
    tracing::info!("connected");
    read_requests(&c);
    let reason = c.wait_ended();
    shutdown();
    let dropped = c.fids.clear();
    shared.locks.drop_conn(c.id);
    c.replies.close();
    drop(reg);
    tracing::info!(%reason, fids = dropped, "disconnected");
}

impl Conn {
    /// Waits until reading has ended (on whichever thread held the read side); the reason.
    fn wait_ended(&self) -> String {
        let mut e = lock(&self.ended);
        loop {
            if let Some(r) = e.as_ref() {
                return r.clone();
            }
            e = self
                .ended_cv
                .wait(e)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    fn end_reading(&self, side: &mut ReadSide, reason: String) {
        side.done = true;
        if !side.buf.is_empty() {
            tracing::debug!(bytes = side.buf.len(), "discarding a partial frame");
        }
        *lock(&self.ended) = Some(reason);
        self.ended_cv.notify_all();
    }
}

/// Reads and runs requests while this thread holds the connection's read side. Returns when
/// reading ends, or when another thread took the read side over while this one ran a request.
pub(crate) fn read_requests(c: &Arc<Conn>) {
    let mut g = match c.reading.try_lock() {
        Ok(g) => g,
        Err(TryLockError::WouldBlock) => return,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
    };
    let max_msize = c.shared.config.max_msize;
    loop {
        let side = &mut *g;
        if side.done {
            return;
        }
        // One frame at a time, so that whoever holds the read side next (this thread after
        // a request, or a takeover thread) goes on with the frames already read.
        let frame = match side.next_frame() {
            Ok(f) => f,
            Err(e) => {
                c.replies.flush();
                c.end_reading(side, format!("framing error: {e}"));
                return;
            }
        };
        if let Some(frame) = frame {
            if c.tags_full() || c.replies.is_full() {
                // About to wait for replies to go out: the held-back ones must go first.
                c.replies.flush();
            }
            c.replies.wait_for_room();
            let handled = match frame {
                Frame::Copied(f) => handle_frame(c, f, max_msize),
                Frame::InPlace(h) => handle_held(c, h, max_msize),
            };
            let (job, held) = match handled {
                Handled::Run(job, held) => (job, held),
                Handled::Done(newp) => {
                    if let Some(p) = newp {
                        side.splitter.set_msize(p.msize);
                    }
                    continue;
                }
            };
            let more = side.has_complete_frame();
            let cheap = runs_inline_always(&job.msg);
            if !cheap && (more || runs_on_pool(&job.msg)) {
                // Ring memory is held only while the reader runs the request itself.
                let job = match held {
                    None => job,
                    Some(h) => match h.into_copied(job.msg) {
                        Ok(msg) => Job { msg, ..job },
                        Err(e) => {
                            let (ename, errno) = crate::errno::rerror(&e);
                            c.reply(job.tag, c.error(errno, &ename));
                            continue;
                        }
                    },
                };
                to_pool(&c.pool, job);
                continue;
            }
            if !cheap {
                // It may take a while: send the replies held back so far first.
                c.replies.flush();
            }
            // Let go of the read side while the request runs (see [`takeover`]). A cheap
            // request with more frames behind it holds its reply back (`cork`): the replies
            // of a pipelined burst go out together in one `writev`.
            drop(g);
            takeover::run_inline(c, more, || match held {
                Some(h) => execute_in_place(&job.conn, job.tag, job.msg, h),
                None => execute(&job.conn, job.tag, job.msg),
            });
            g = match c.reading.try_lock() {
                Ok(g) => g,
                Err(TryLockError::WouldBlock) => {
                    c.replies.flush();
                    return;
                }
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
            };
            continue;
        }
        // Nothing complete is left: send what was held back, then wait for more.
        c.replies.flush();
        if let Some(src) = side.frames.as_mut() {
            // Nothing complete: wait for the next frame (left in the transport, taken above).
            match src.wait_frame(side.splitter.msize()) {
                Ok(true) => {}
                Ok(false) => {
                    c.end_reading(side, "closed by peer".to_string());
                    return;
                }
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    c.end_reading(side, format!("framing error: {e}"));
                    return;
                }
                Err(e) => {
                    c.end_reading(side, format!("read error: {e}"));
                    return;
                }
            }
            continue;
        }
        match side.reader.read(&mut side.tmp) {
            Ok(0) => {
                c.end_reading(side, "closed by peer".to_string());
                return;
            }
            Ok(k) => side
                .buf
                .extend_from_slice(side.tmp.get(..k).unwrap_or(&side.tmp[..])),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                c.end_reading(side, format!("read error: {e}"));
                return;
            }
        }
    }
}

/// Hands a request to the worker pool.
fn to_pool(pool: &Sender<Job>, job: Job) {
    if let Err(e) = pool.send(job) {
        // Shutting down: answer so the client is not left waiting.
        let job = e.into_inner();
        let err = job.conn.error(libc::EINTR as u32, "server shutting down");
        job.conn.reply(job.tag, err);
    }
}

/// What became of a frame.
enum Handled {
    /// A registered request to run (with its payload when it is left in ring memory).
    Run(Job, Option<Box<HeldWrite>>),
    /// Answered already; new parameters after a successful Tversion.
    Done(Option<Params>),
}

/// Handles one frame: answers what the session answers itself (Tversion, Tflush, errors)
/// and registers every other request's tag, returning it to be run.
fn handle_frame(c: &Arc<Conn>, frame: bytes::Bytes, max_msize: u32) -> Handled {
    let params = c.params();
    let dialect = params.dialect.unwrap_or(Dialect::P2000L);
    let f = match decode(frame, dialect, params.msize) {
        Ok(f) => f,
        Err(e) => {
            let tag = e.tag.unwrap_or(Tag::NOTAG);
            tracing::debug!(error = %e, "undecodable request");
            // The tag may belong to an in-flight request; do not retire it.
            c.reply_unregistered(tag, c.error(e.errno(), &e.kind.to_string()));
            return Handled::Done(None);
        }
    };
    admit(c, f.tag, f.msg, params, max_msize)
}

/// Handles a Twrite left in ring memory: the ordinary admission with the header's fields;
/// the held payload goes with the job (released by whoever drops it).
fn handle_held(c: &Arc<Conn>, h: Box<HeldWrite>, max_msize: u32) -> Handled {
    let (tag, msg) = h.request();
    match admit(c, tag, msg, c.params(), max_msize) {
        Handled::Run(job, _) => Handled::Run(job, Some(h)),
        done => done,
    }
}

/// The checks after decoding: Tversion, Tflush and every error the session answers itself;
/// every other request's tag is registered and the request returned to be run.
fn admit(c: &Arc<Conn>, tag: Tag, msg: Message, params: Params, max_msize: u32) -> Handled {
    let mt = msg.msg_type();
    if !mt.is_request() {
        c.reply_unregistered(
            tag,
            c.error(libc::EOPNOTSUPP as u32, "R-message sent to the server"),
        );
        return Handled::Done(None);
    }
    if let Message::Tversion(v) = &msg {
        let (reply, newp) = negotiate(v.msize, &v.version, max_msize);
        let n = c.fids.clear();
        c.shared.locks.drop_conn(c.id);
        if n > 0 {
            tracing::debug!(fids = n, "Tversion reset the session");
        }
        if let Some(p) = newp {
            *lock(&c.params) = p;
        }
        c.reply_unregistered(tag, reply.into());
        return Handled::Done(newp);
    }
    if params.dialect.is_none() {
        c.reply_unregistered(tag, c.error(libc::EPROTO as u32, "Tversion first"));
        return Handled::Done(None);
    }
    if tag == Tag::NOTAG {
        c.reply_unregistered(tag, c.error(libc::EINVAL as u32, "NOTAG outside Tversion"));
        return Handled::Done(None);
    }
    {
        let mut tags = lock(&c.tags);
        if tags.len() >= MAX_IN_FLIGHT {
            // Counted under the tags lock, so a retire (which checks it under the same lock)
            // cannot miss us.
            c.tag_waiters.fetch_add(1, Ordering::Relaxed);
            while tags.len() >= MAX_IN_FLIGHT {
                tags = c
                    .tags_freed
                    .wait(tags)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            c.tag_waiters.fetch_sub(1, Ordering::Relaxed);
        }
        if tags.contains_key(&tag) {
            drop(tags);
            c.reply_unregistered(tag, c.error(libc::EINVAL as u32, "tag already in flight"));
            return Handled::Done(None);
        }
        if let Message::Tflush(fl) = &msg {
            if fl.oldtag != tag {
                if let Some(entry) = tags.get_mut(&fl.oldtag) {
                    entry.flushes.push(tag);
                    tags.insert(tag, TagEntry::default());
                    return Handled::Done(None);
                }
            }
            drop(tags);
            c.reply_unregistered(tag, Rflush {}.into());
            return Handled::Done(None);
        }
        tags.insert(tag, TagEntry::default());
    }
    Handled::Run(
        Job {
            conn: Arc::clone(c),
            tag,
            msg,
        },
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiate_versions_and_msize() {
        let (r, p) = negotiate(8192, "9P2000.L", 65536);
        assert_eq!((r.msize, r.version.as_str()), (8192, "9P2000.L"));
        assert_eq!(p.and_then(|p| p.dialect), Some(Dialect::P2000L));
        let (r, _) = negotiate(1 << 30, "9P2000.u", 65536);
        assert_eq!((r.msize, r.version.as_str()), (65536, "9P2000.u"));
        let (r, p) = negotiate(8192, "9P2000", 65536);
        assert_eq!(
            (r.version.as_str(), p.and_then(|p| p.dialect)),
            ("9P2000", Some(Dialect::P2000))
        );
        let (r, p) = negotiate(8192, "9P3000", 65536);
        assert_eq!((r.version.as_str(), p), ("unknown", None));
        let (r, p) = negotiate(1024, "9P2000.L", 65536);
        assert_eq!((r.version.as_str(), p), ("unknown", None));
    }
}
