//! A blocking, thread-safe, pipelined 9P client (9P2000.L and 9P2000.u).
//!
//! Tests and benchmarks drive servers with it; it is not the guest's file system client (the
//! guest kernel's v9fs is).
//!
//! # Model
//!
//! One [`Client`] owns one connection. Any number of threads may call it at once:
//!
//! ```text
//! caller threads ──send: allocate tag, encode, write under the writer lock──▶ server
//!       ▲                                                                      │
//!       └── wait(tag): sleep until the slot for `tag` is filled ◀── reader thread: split frames,
//!                                                                   file each under its tag
//! ```
//!
//! * [`Client::rpc`] = [`Client::send`] + [`Client::wait`]. A tag is taken from the free set on
//!   `send` and returned on `wait`; every `send` needs its `wait` (or the tag stays taken).
//! * The reader thread only splits frames (size checked against the negotiated msize) and
//!   files them by the tag in bytes 5–6; the waiting caller decodes its own reply with the
//!   connection's dialect.
//! * Over a shared-memory ring ([`Client::from_ring`]) there is no reader thread: a waiting
//!   caller takes the ring (one *leader* at a time) and reads replies itself, filing other
//!   tags' replies for their waiters, until its own arrives; then it hands the ring on. A
//!   lone caller therefore gets its reply with no thread hand-off at all — the ring's
//!   adaptive spin ([`envoy_ring::Waiter`]) sees it published and returns, where a reader
//!   thread would cost two more sleeps and wake-ups per call. A reply whose tag nobody waits for is counted
//!   ([`Client::stray_replies`]) and dropped.
//! * `Rlerror`/`Rerror` become [`ClientError::Remote`]; any other reply of the wrong type is
//!   [`ClientError::UnexpectedReply`].
//! * [`Client::flush`] sends `Tflush(oldtag)`; once `Rflush` arrives, a request that had no
//!   reply yet is finished and its `wait` returns [`ClientError::Flushed`]. A reply that came
//!   before the `Rflush` is still delivered, as 9P specifies.
//! * When the connection ends (EOF, error, broken framing from the server), every waiter gets
//!   [`ClientError::Disconnected`] with the reason; [`Client::wait_disconnected`] lets a test
//!   check that a server closed the connection after a hostile frame.
//! * Fids are chosen by the caller. [`Client::alloc_fid`] hands out fids from
//!   [`FID_POOL_BASE`] upwards (far from the small fids tests write by hand); `clunk` and
//!   `remove` return pool fids to the pool.
//!
//! # Example
//!
//! ```no_run
//! use envoy_proto::{lopen, Fid};
//! use guest_shim::client::Client;
//!
//! let ep = "tcp:127.0.0.1:5640".parse()?;
//! let c = Client::connect_version(&ep, 65536, "9P2000.L")?;
//! let root = c.alloc_fid();
//! c.attach(root, Fid::NOFID, "root", "/images/debian", 0)?;
//! let f = c.alloc_fid();
//! c.walk_path(root, f, "etc/hostname")?;
//! c.lopen(f, lopen::RDONLY)?;
//! let hostname = c.read_all(f)?;
//! c.clunk(f)?;
//!
//! // Explicit pipelining: both requests are on the wire before either reply is read.
//! let t1 = c.send(envoy_proto::Tstatfs { fid: root }.into())?;
//! let t2 = c.send(envoy_proto::Tgetattr { fid: root, request_mask: 0x7ff }.into())?;
//! let (statfs, attr) = (c.wait(t1)?, c.wait(t2)?);
//! # let _ = (hostname, statfs, attr);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{HashMap, HashSet};
use std::io::{self, IoSlice, Read, Write};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use envoy_proto::{
    decode, encode_parts, DecodeError, DecodeErrorKind, Dialect, DirEntries, DirEntry, EncodeError,
    Fid, FrameSplitter, Message, MsgType, Qid, Rgetattr, Rgetlock, Rstatfs, Stat, StatIter, Tag,
    P9_IOHDRSZ, P9_MAXWELEM, VERSION_UNKNOWN,
};
use thiserror::Error;

use crate::endpoint::{Closer, ConnectError, Connection, Endpoint};

pub use envoy_proto::{Rcreate, Rlcreate, Rlopen, Ropen, Tgetlock, Tlock, Tsetattr};

/// First fid handed out by [`Client::alloc_fid`].
pub const FID_POOL_BASE: u32 = 0x0100_0000;

/// msize assumed before [`Client::handshake`] (the largest reply frame accepted until then).
pub const DEFAULT_MSIZE: u32 = 8192;

/// Read size of the reader thread.
const READ_CHUNK: usize = 64 * 1024;

/// What can go wrong in a 9P call.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Opening the connection failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Writing a request failed.
    #[error("cannot send request: {0}")]
    Io(#[from] io::Error),
    /// The request cannot be encoded (too large for msize, not in the dialect, …).
    #[error("cannot encode request: {0}")]
    Encode(#[from] EncodeError),
    /// The reply does not decode.
    #[error("cannot decode reply: {0}")]
    Decode(#[from] DecodeError),
    /// Directory or stat data in a reply does not parse.
    #[error("malformed directory data in reply: {0}")]
    BadData(#[source] DecodeErrorKind),
    /// The server answered with an error.
    #[error("server error {errno} ({}){}", errno_text(*errno), if ename.is_empty() { String::new() } else { format!(": {ename}") })]
    Remote {
        /// Linux errno (0 from a plain 9P2000 server).
        errno: u32,
        /// Error text (9P2000/.u `Rerror`; empty for `Rlerror`).
        ename: String,
    },
    /// The reply has the wrong type for the request.
    #[error("expected {expected}, got {got}")]
    UnexpectedReply {
        /// The reply that should have come.
        expected: &'static str,
        /// The reply that came.
        got: &'static str,
    },
    /// The server refused the offered version or answered nonsense to it.
    #[error("version negotiation failed: offered {offered:?} msize {msize}, got {got:?} msize {got_msize}")]
    Version {
        /// The version offered.
        offered: String,
        /// The msize offered.
        msize: u32,
        /// The version answered.
        got: String,
        /// The msize answered.
        got_msize: u32,
    },
    /// The connection is gone; the request has no reply.
    #[error("connection closed: {reason}")]
    Disconnected {
        /// Why the reader stopped.
        reason: String,
    },
    /// The request was flushed before a reply came.
    #[error("request with tag {0} was flushed")]
    Flushed(Tag),
    /// No reply within the timeout; the tag stays reserved until one arrives.
    #[error("no reply to tag {0} within {1:?}")]
    Timeout(Tag, Duration),
    /// `wait` for a tag that was never sent (or already collected).
    #[error("tag {0} has no request outstanding")]
    UnknownTag(Tag),
    /// A walk stopped before its last name.
    #[error("walk stopped after {walked} of {wanted} names")]
    WalkIncomplete {
        /// Names walked.
        walked: usize,
        /// Names asked for.
        wanted: usize,
    },
    /// A write was accepted with count 0.
    #[error("server accepted 0 bytes of a {0}-byte write")]
    ShortWrite(usize),
}

fn errno_text(errno: u32) -> String {
    io::Error::from_raw_os_error(errno as i32).to_string()
}

impl ClientError {
    /// The server's errno if the server answered with an error.
    pub fn errno(&self) -> Option<u32> {
        match self {
            ClientError::Remote { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// Whether the connection is gone: the reader saw it end, or a write found it closed
    /// before the reader noticed.
    pub fn is_disconnected(&self) -> bool {
        match self {
            ClientError::Disconnected { .. } => true,
            ClientError::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::NotConnected
                    | io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        }
    }

    fn unexpected(expected: &'static str, got: &Message) -> ClientError {
        ClientError::UnexpectedReply {
            expected,
            got: got.name(),
        }
    }
}

/// Result of [`Client::handshake`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The msize both sides now use.
    pub msize: u32,
    /// The dialect the server accepted.
    pub dialect: Dialect,
}

enum Slot {
    /// Request sent, no reply yet.
    Waiting,
    /// The reply frame.
    Ready(Bytes),
    /// `Rflush` came before a reply: the request is finished without one.
    Flushed,
    /// The caller stopped waiting (timeout); the reply, if it comes, frees the tag.
    Abandoned,
}

struct State {
    slots: HashMap<u16, Slot>,
    next_tag: u16,
    closed: Option<String>,
    /// A caller is reading the ring (ring mode only).
    ring_leader: bool,
    /// Threads asleep on `Shared::cond` (notifications are skipped when there are none).
    sleepers: u32,
}

struct FidPool {
    next: u32,
    free: Vec<u32>,
    live: HashSet<u32>,
}

struct Shared {
    writer: Mutex<Box<dyn Write + Send>>,
    /// Ring mode: the reply ring, read by whichever waiting caller is the leader.
    ring: Option<Mutex<envoy_ring::RingReader>>,
    state: Mutex<State>,
    cond: Condvar,
    msize: AtomicU32,
    dialect: Mutex<Dialect>,
    stray: AtomicU64,
    fids: Mutex<FidPool>,
    timeout: Mutex<Option<Duration>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking caller thread leaves the data consistent (every critical section is a few
    // map operations), so poisoning is ignored.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Longest single ring wait of a leader before it re-checks its own slot (a `Tflush` answered
/// to another thread can finish the leader's request without a reply).
const LEADER_SLICE: Duration = Duration::from_millis(10);

impl State {
    fn close(&mut self, reason: String) {
        if self.closed.is_none() {
            tracing::debug!(%reason, "9P client connection closed");
            self.closed = Some(reason);
        }
    }

    /// Files `frame` under its tag; returns whether a sleeping thread may care.
    fn deliver(&mut self, frame: Bytes, stray: &AtomicU64) -> bool {
        // Frames always have at least the 7-byte header.
        let Some(&[lo, hi]) = frame.get(5..7) else {
            return false;
        };
        let tag = u16::from_le_bytes([lo, hi]);
        match self.slots.get_mut(&tag) {
            Some(slot @ Slot::Waiting) => {
                *slot = Slot::Ready(frame);
                true
            }
            Some(Slot::Abandoned) => {
                self.slots.remove(&tag);
                true
            }
            _ => {
                stray.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(tag, "reply for a tag with no request outstanding, dropped");
                false
            }
        }
    }
}

impl Shared {
    fn notify(&self, st: &State) {
        if st.sleepers > 0 {
            self.cond.notify_all();
        }
    }

    fn close(&self, reason: String) {
        let mut st = lock(&self.state);
        st.close(reason);
        self.notify(&st);
    }

    fn deliver(&self, frame: Bytes) {
        let mut st = lock(&self.state);
        if st.deliver(frame, &self.stray) {
            self.notify(&st);
        }
    }

    fn sleep<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        deadline: Option<Instant>,
    ) -> MutexGuard<'a, State> {
        st.sleepers += 1;
        let mut st = match deadline {
            None => self.cond.wait(st).unwrap_or_else(PoisonError::into_inner),
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                self.cond
                    .wait_timeout(st, left)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0)
            }
        };
        st.sleepers -= 1;
        st
    }

    /// Waits until `check` yields a value (`Some`) or `deadline` passes (`None`). `check`
    /// runs with the state locked and must itself return on a closed connection. In ring
    /// mode the waiting thread reads the ring when no other thread does.
    fn wait_until<R>(
        &self,
        deadline: Option<Instant>,
        mut check: impl FnMut(&mut State) -> Option<R>,
    ) -> Option<R> {
        let mut st = lock(&self.state);
        loop {
            if let Some(r) = check(&mut st) {
                return Some(r);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            match &self.ring {
                Some(ring) if !st.ring_leader && st.closed.is_none() => {
                    st.ring_leader = true;
                    drop(st);
                    let (got, guard) = self.lead(ring, deadline, &mut check);
                    st = guard;
                    st.ring_leader = false;
                    // Another waiter may now have to lead.
                    self.notify(&st);
                    if got.is_some() {
                        return got;
                    }
                }
                _ => st = self.sleep(st, deadline),
            }
        }
    }

    /// Ring mode, when no caller is reading: files every reply already published (never
    /// waits).
    fn take_published_replies(&self) {
        let Some(ring) = &self.ring else { return };
        let mut st = lock(&self.state);
        if st.ring_leader || st.closed.is_some() {
            return;
        }
        st.ring_leader = true;
        drop(st);
        let mut rx = lock(ring);
        let max = self.msize.load(Ordering::Acquire);
        let mut frames = Vec::new();
        let failed = loop {
            match rx.try_read_message(max) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break None,
                Err(e) => break Some(format!("ring error: {e}")),
            }
        };
        drop(rx);
        let mut st = lock(&self.state);
        for f in frames {
            st.deliver(f, &self.stray);
        }
        if let Some(reason) = failed {
            st.close(reason);
        }
        st.ring_leader = false;
        self.notify(&st);
    }

    /// Reads replies off the ring until `check` passes, `deadline` passes or the ring ends;
    /// returns with the state locked.
    fn lead<'a, R>(
        &'a self,
        ring: &Mutex<envoy_ring::RingReader>,
        deadline: Option<Instant>,
        check: &mut impl FnMut(&mut State) -> Option<R>,
    ) -> (Option<R>, MutexGuard<'a, State>) {
        let mut rx = lock(ring);
        loop {
            let slice = Instant::now() + LEADER_SLICE;
            let until = deadline.map_or(slice, |d| d.min(slice));
            let read = rx.read_message_until(self.msize.load(Ordering::Acquire), Some(until));
            let mut st = lock(&self.state);
            match read {
                Ok(Some(frame)) => {
                    if st.deliver(frame, &self.stray) {
                        self.notify(&st);
                    }
                }
                Ok(None) if rx.is_closed() => {
                    st.close("server closed the connection".to_string());
                    self.notify(&st);
                }
                Ok(None) => {}
                Err(e) => {
                    st.close(format!("ring error: {e}"));
                    self.notify(&st);
                }
            }
            if let Some(r) = check(&mut st) {
                return (Some(r), st);
            }
            if st.closed.is_some() || deadline.is_some_and(|d| Instant::now() >= d) {
                return (None, st);
            }
        }
    }

    fn reader_loop(&self, mut r: Box<dyn Read + Send>) {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        // Reads go through `scratch` (one copy): reading into `buf`'s spare room would mean
        // zeroing it before every call, up to the whole capacity each time.
        let mut scratch = vec![0u8; READ_CHUNK];
        let reason = loop {
            let splitter = FrameSplitter::new(self.msize.load(Ordering::Acquire));
            match splitter.next_frame(&mut buf) {
                Ok(Some(frame)) => {
                    self.deliver(frame);
                    continue;
                }
                Ok(None) => {}
                Err(e) => break format!("server sent a broken frame: {e}"),
            }
            let len = buf.len();
            match r.read(&mut scratch) {
                Ok(0) if len == 0 => break "server closed the connection".to_string(),
                Ok(0) => {
                    break format!(
                        "server closed the connection inside a frame ({len} bytes buffered)"
                    )
                }
                Ok(n) => buf.extend_from_slice(&scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break format!("read error: {e}"),
            }
        };
        self.close(reason);
    }
}

/// Where replies come from.
enum Source {
    /// A byte stream (sockets, devices): split into frames here.
    Stream(Box<dyn Read + Send>),
    /// A shared-memory ring: whole messages.
    Ring(envoy_ring::RingReader),
}

/// A 9P connection; see the module docs.
pub struct Client {
    shared: Arc<Shared>,
    closer: Closer,
    reader: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("msize", &self.msize())
            .field("dialect", &self.dialect())
            .finish_non_exhaustive()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.closer.shutdown();
        if let Some(h) = self.reader.take() {
            if matches!(self.closer, Closer::Nothing) {
                // A plain stream cannot be woken; the thread ends when the peer closes.
                return;
            }
            let _ = h.join();
        }
    }
}

macro_rules! expect_reply {
    ($reply:expr, $variant:ident) => {
        match $reply {
            Message::$variant(r) => Ok(r),
            other => Err(ClientError::unexpected(stringify!($variant), &other)),
        }
    };
}

impl Client {
    /// Connects to `ep` (no handshake yet; see [`Client::handshake`] or
    /// [`Client::connect_version`]).
    pub fn connect(ep: &Endpoint) -> Result<Client, ClientError> {
        Ok(Client::from_connection(ep.connect()?))
    }

    /// Connects and negotiates `version` with `msize`.
    pub fn connect_version(
        ep: &Endpoint,
        msize: u32,
        version: &str,
    ) -> Result<Client, ClientError> {
        let c = Client::connect(ep)?;
        c.handshake(msize, version)?;
        Ok(c)
    }

    /// Runs over any pair of stream halves (e.g. a socketpair's clones). Dropping the client
    /// cannot interrupt the reader thread of such a pair; it ends when the peer closes.
    pub fn from_stream<R, W>(reader: R, writer: W) -> Client
    where
        R: Read + Send + 'static,
        W: Write + Send + 'static,
    {
        Client::from_connection(Connection {
            reader: Box::new(reader),
            writer: Box::new(writer),
            closer: Closer::Nothing,
        })
    }

    /// Runs over a shared-memory ring's two ends: replies are taken as whole messages
    /// ([`envoy_ring::RingReader::read_message`]: one copy, ring → the reply's own buffer)
    /// rather than through a byte stream, a scratch buffer and a frame splitter (three
    /// copies), by the waiting callers themselves (see the module docs). `closer` is what
    /// [`Client::shutdown`] and dropping the client call (detach the ring).
    pub fn from_ring<W>(reader: envoy_ring::RingReader, writer: W, closer: Closer) -> Client
    where
        W: Write + Send + 'static,
    {
        Client::start(Source::Ring(reader), Box::new(writer), closer)
    }

    /// Runs over an open [`Connection`].
    pub fn from_connection(conn: Connection) -> Client {
        Client::start(Source::Stream(conn.reader), conn.writer, conn.closer)
    }

    fn start(source: Source, writer: Box<dyn Write + Send>, closer: Closer) -> Client {
        let (stream, ring) = match source {
            Source::Stream(r) => (Some(r), None),
            Source::Ring(r) => (None, Some(Mutex::new(r))),
        };
        let shared = Arc::new(Shared {
            writer: Mutex::new(writer),
            ring,
            state: Mutex::new(State {
                slots: HashMap::new(),
                next_tag: 0,
                closed: None,
                ring_leader: false,
                sleepers: 0,
            }),
            cond: Condvar::new(),
            msize: AtomicU32::new(DEFAULT_MSIZE),
            dialect: Mutex::new(Dialect::P2000L),
            stray: AtomicU64::new(0),
            fids: Mutex::new(FidPool {
                next: FID_POOL_BASE,
                free: Vec::new(),
                live: HashSet::new(),
            }),
            timeout: Mutex::new(None),
        });
        // A ring is read by its waiting callers; a stream needs a thread to split frames.
        let reader = stream.and_then(|r| {
            let s = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name("9p-client-rx".into())
                .spawn(move || s.reader_loop(r));
            match spawned {
                Ok(h) => Some(h),
                Err(e) => {
                    shared.close(format!("cannot start the reader thread: {e}"));
                    None
                }
            }
        });
        Client {
            shared,
            closer,
            reader,
        }
    }

    /// Negotiates the protocol: `Tversion(msize, version)` with tag NOTAG. On success the
    /// connection uses the answered msize and dialect. Call it with nothing else outstanding
    /// (the server aborts every outstanding request on a Tversion).
    pub fn handshake(&self, msize: u32, version: &str) -> Result<Negotiated, ClientError> {
        let before = self.shared.msize.swap(msize, Ordering::AcqRel);
        let res = self.rpc(
            envoy_proto::Tversion {
                msize,
                version: version.into(),
            }
            .into(),
        );
        let r = match res.and_then(|m| expect_reply!(m, Rversion)) {
            Ok(r) => r,
            Err(e) => {
                self.shared.msize.store(before, Ordering::Release);
                return Err(e);
            }
        };
        let dialect = Dialect::from_version_str(&r.version);
        match dialect {
            Some(d) if r.version != VERSION_UNKNOWN && r.msize <= msize && r.msize >= 256 => {
                self.shared.msize.store(r.msize, Ordering::Release);
                *lock(&self.shared.dialect) = d;
                Ok(Negotiated {
                    msize: r.msize,
                    dialect: d,
                })
            }
            _ => {
                self.shared.msize.store(before, Ordering::Release);
                Err(ClientError::Version {
                    offered: version.into(),
                    msize,
                    got: r.version,
                    got_msize: r.msize,
                })
            }
        }
    }

    /// The connection's msize.
    pub fn msize(&self) -> u32 {
        self.shared.msize.load(Ordering::Acquire)
    }

    /// The connection's dialect (9P2000.L until a handshake says otherwise).
    pub fn dialect(&self) -> Dialect {
        *lock(&self.shared.dialect)
    }

    /// Largest read or write count that fits a frame: `msize - 24` (Linux's `P9_IOHDRSZ`).
    pub fn max_io(&self) -> u32 {
        self.msize().saturating_sub(P9_IOHDRSZ).max(1)
    }

    /// Sets how long [`Client::rpc`] and [`Client::wait`] wait for a reply (`None`: forever,
    /// the default).
    pub fn set_timeout(&self, timeout: Option<Duration>) {
        *lock(&self.shared.timeout) = timeout;
    }

    /// Replies that arrived for tags with nothing outstanding.
    pub fn stray_replies(&self) -> u64 {
        self.shared.stray.load(Ordering::Relaxed)
    }

    /// Tags in use: requests sent and not yet collected, plus abandoned (timed-out) ones
    /// whose reply has not arrived.
    pub fn outstanding(&self) -> usize {
        lock(&self.shared.state).slots.len()
    }

    /// Whether the reply to `tag` has arrived and waits to be collected.
    pub fn reply_arrived(&self, tag: Tag) -> bool {
        self.shared.take_published_replies();
        matches!(
            lock(&self.shared.state).slots.get(&tag.0),
            Some(Slot::Ready(_))
        )
    }

    /// Why the connection is closed, if it is.
    pub fn closed_reason(&self) -> Option<String> {
        lock(&self.shared.state).closed.clone()
    }

    /// Waits up to `timeout` for the connection to end; returns whether it did.
    pub fn wait_disconnected(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.shared
            .wait_until(Some(deadline), |st| st.closed.is_some().then_some(()))
            .is_some()
    }

    /// Closes the connection now (both directions); outstanding waits fail.
    pub fn shutdown(&self) {
        self.closer.shutdown();
        self.shared.close("closed by the client".into());
    }

    fn reserve_tag(&self, want: Option<Tag>) -> Result<Tag, ClientError> {
        // Waits (reading the ring in ring mode) while the wanted tag, or every tag, is taken.
        let got = self.shared.wait_until(None, |st| {
            if let Some(reason) = &st.closed {
                return Some(Err(ClientError::Disconnected {
                    reason: reason.clone(),
                }));
            }
            let tag = match want {
                Some(t) if !st.slots.contains_key(&t.0) => Some(t.0),
                Some(_) => None,
                None if st.slots.len() < usize::from(u16::MAX) => {
                    let mut t = st.next_tag;
                    while t == Tag::NOTAG.0 || st.slots.contains_key(&t) {
                        t = t.wrapping_add(1);
                    }
                    st.next_tag = t.wrapping_add(1);
                    Some(t)
                }
                None => None,
            }?;
            st.slots.insert(tag, Slot::Waiting);
            Some(Ok(Tag(tag)))
        });
        got.unwrap_or_else(|| {
            Err(ClientError::Disconnected {
                reason: "no tag became free".into(),
            })
        })
    }

    fn release_tag(&self, tag: Tag) {
        let mut st = lock(&self.shared.state);
        st.slots.remove(&tag.0);
        self.shared.notify(&st);
    }

    fn write_frame(&self, header: &[u8], payload: &[u8]) -> io::Result<()> {
        let mut w = lock(&self.shared.writer);
        let mut bufs = [IoSlice::new(header), IoSlice::new(payload)];
        let mut bufs = &mut bufs[..];
        IoSlice::advance_slices(&mut bufs, 0);
        while !bufs.is_empty() {
            match w.write_vectored(bufs) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut bufs, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        w.flush()
    }

    /// Sends a request and returns its tag (NOTAG for `Tversion`); collect the reply with
    /// [`Client::wait`]. Blocks while all 65535 tags are outstanding.
    pub fn send(&self, msg: Message) -> Result<Tag, ClientError> {
        let want = (msg.msg_type() == MsgType::Tversion).then_some(Tag::NOTAG);
        let tag = self.reserve_tag(want)?;
        let mut head = BytesMut::with_capacity(64);
        let parts = encode_parts(tag, &msg, self.dialect(), self.msize(), &mut head);
        let res = parts.map_err(ClientError::from).and_then(|p| {
            let payload = p.payload.unwrap_or_default();
            self.write_frame(&head, &payload).map_err(ClientError::from)
        });
        match res {
            Ok(()) => Ok(tag),
            Err(e) => {
                self.release_tag(tag);
                Err(e)
            }
        }
    }

    /// Sends `bytes` as they are (hostile-frame tests). No tag is reserved: pair it with
    /// [`Client::reserve_raw_tag`] to collect a reply, or [`Client::wait_disconnected`].
    pub fn send_raw(&self, bytes: &[u8]) -> Result<(), ClientError> {
        self.write_frame(bytes, &[]).map_err(ClientError::from)
    }

    /// Reserves `tag` so that a reply to a frame sent with [`Client::send_raw`] can be
    /// collected with [`Client::wait`] or [`Client::wait_raw`]. Blocks while it is in use.
    pub fn reserve_raw_tag(&self, tag: Tag) -> Result<Tag, ClientError> {
        self.reserve_tag(Some(tag))
    }

    /// Waits for the reply to `tag` and returns the frame undecoded (size, type, tag, body).
    pub fn wait_raw(&self, tag: Tag) -> Result<Bytes, ClientError> {
        let timeout = *lock(&self.shared.timeout);
        self.wait_frame(tag, timeout)
    }

    fn wait_frame(&self, tag: Tag, timeout: Option<Duration>) -> Result<Bytes, ClientError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let shared = &self.shared;
        let got = shared.wait_until(deadline, |st| {
            let r = match st.slots.get(&tag.0) {
                None | Some(Slot::Abandoned) => Err(ClientError::UnknownTag(tag)),
                Some(Slot::Ready(_)) => match st.slots.remove(&tag.0) {
                    Some(Slot::Ready(frame)) => Ok(frame),
                    _ => Err(ClientError::UnknownTag(tag)),
                },
                Some(Slot::Flushed) => {
                    st.slots.remove(&tag.0);
                    Err(ClientError::Flushed(tag))
                }
                Some(Slot::Waiting) => match &st.closed {
                    Some(reason) => {
                        let reason = reason.clone();
                        st.slots.remove(&tag.0);
                        Err(ClientError::Disconnected { reason })
                    }
                    None => return None,
                },
            };
            // A freed tag may be what `reserve_tag` waits for.
            shared.notify(st);
            Some(r)
        });
        got.unwrap_or_else(|| {
            let mut st = lock(&shared.state);
            // The reply may have come in the meantime; otherwise the tag stays reserved.
            match st.slots.remove(&tag.0) {
                Some(Slot::Ready(frame)) => Ok(frame),
                Some(Slot::Flushed) => Err(ClientError::Flushed(tag)),
                _ => {
                    st.slots.insert(tag.0, Slot::Abandoned);
                    Err(ClientError::Timeout(tag, timeout.unwrap_or_default()))
                }
            }
        })
    }

    /// Waits for the reply to `tag` (frees the tag). Error replies become
    /// [`ClientError::Remote`].
    pub fn wait(&self, tag: Tag) -> Result<Message, ClientError> {
        let frame = self.wait_raw(tag)?;
        self.decode_reply(frame)
    }

    /// Like [`Client::wait`] with an explicit timeout.
    pub fn wait_timeout(&self, tag: Tag, timeout: Duration) -> Result<Message, ClientError> {
        let frame = self.wait_frame(tag, Some(timeout))?;
        self.decode_reply(frame)
    }

    fn decode_reply(&self, frame: Bytes) -> Result<Message, ClientError> {
        // Rversion is decoded with the largest msize: the handshake may be lowering it.
        let msize = u32::MAX;
        let f = decode(frame, self.dialect(), msize)?;
        match f.msg {
            Message::Rlerror(e) => Err(ClientError::Remote {
                errno: e.ecode,
                ename: String::new(),
            }),
            Message::Rerror(e) => Err(ClientError::Remote {
                errno: e.errno,
                ename: e.ename,
            }),
            m if m.is_request() => Err(ClientError::UnexpectedReply {
                expected: "an R-message",
                got: m.name(),
            }),
            m => Ok(m),
        }
    }

    /// Sends `msg` and waits for its reply.
    pub fn rpc(&self, msg: Message) -> Result<Message, ClientError> {
        let tag = self.send(msg)?;
        self.wait(tag)
    }

    /// `Tflush(oldtag)`: after `Rflush`, a request on `oldtag` still without a reply is
    /// finished ([`ClientError::Flushed`] for its waiter).
    pub fn flush(&self, oldtag: Tag) -> Result<(), ClientError> {
        let r = self.rpc(envoy_proto::Tflush { oldtag }.into())?;
        expect_reply!(r, Rflush)?;
        let mut st = lock(&self.shared.state);
        match st.slots.get(&oldtag.0) {
            Some(Slot::Waiting) => {
                st.slots.insert(oldtag.0, Slot::Flushed);
            }
            Some(Slot::Abandoned) => {
                st.slots.remove(&oldtag.0);
            }
            _ => {}
        }
        // A leader waiting for `oldtag` notices within `LEADER_SLICE`.
        self.shared.notify(&st);
        Ok(())
    }

    // ---- fids -----------------------------------------------------------------------

    /// A fid not handed out before (or returned by clunk/remove/[`Client::release_fid`]).
    pub fn alloc_fid(&self) -> Fid {
        let mut p = lock(&self.shared.fids);
        let f = match p.free.pop() {
            Some(f) => f,
            None => {
                let f = p.next;
                p.next = p.next.wrapping_add(1).max(FID_POOL_BASE);
                f
            }
        };
        p.live.insert(f);
        Fid(f)
    }

    /// Returns a pool fid to the pool (no-op for fids the pool did not hand out).
    pub fn release_fid(&self, fid: Fid) {
        let mut p = lock(&self.shared.fids);
        if p.live.remove(&fid.0) {
            p.free.push(fid.0);
        }
    }

    // ---- 9P2000 / common --------------------------------------------------------------

    /// `Tauth`: returns the aqid.
    pub fn auth(
        &self,
        afid: Fid,
        uname: &str,
        aname: &str,
        n_uname: u32,
    ) -> Result<Qid, ClientError> {
        let r = self.rpc(
            envoy_proto::Tauth {
                afid,
                uname: uname.into(),
                aname: aname.into(),
                n_uname,
            }
            .into(),
        )?;
        Ok(expect_reply!(r, Rauth)?.aqid)
    }

    /// `Tattach`: returns the root qid.
    pub fn attach(
        &self,
        fid: Fid,
        afid: Fid,
        uname: &str,
        aname: &str,
        n_uname: u32,
    ) -> Result<Qid, ClientError> {
        let r = self.rpc(
            envoy_proto::Tattach {
                fid,
                afid,
                uname: uname.into(),
                aname: aname.into(),
                n_uname,
            }
            .into(),
        )?;
        Ok(expect_reply!(r, Rattach)?.qid)
    }

    /// `Twalk` with at most 16 names: returns the qids walked (fewer than `names` if the walk
    /// stopped; then `newfid` was not created).
    pub fn walk(&self, fid: Fid, newfid: Fid, names: &[&str]) -> Result<Vec<Qid>, ClientError> {
        let r = self.rpc(
            envoy_proto::Twalk {
                fid,
                newfid,
                wnames: names.iter().map(|s| (*s).to_owned()).collect(),
            }
            .into(),
        )?;
        Ok(expect_reply!(r, Rwalk)?.wqids)
    }

    /// Walks `path` ("a/b/c"; empty components ignored, "" clones the fid) in walks of at
    /// most 16 names. Fails with [`ClientError::WalkIncomplete`] (leaving `newfid` unused) if
    /// any name is missing.
    pub fn walk_path(&self, fid: Fid, newfid: Fid, path: &str) -> Result<Vec<Qid>, ClientError> {
        let names: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if names.is_empty() {
            return self.walk(fid, newfid, &[]);
        }
        let mut qids = Vec::with_capacity(names.len());
        for (i, chunk) in names.chunks(P9_MAXWELEM).enumerate() {
            let from = if i == 0 { fid } else { newfid };
            let res = self.walk(from, newfid, chunk);
            let step = match res {
                Ok(q) if q.len() == chunk.len() => q,
                other => {
                    if i > 0 {
                        // newfid exists from an earlier chunk; leave nothing behind.
                        let _ = self.clunk(newfid);
                    }
                    let walked = qids.len() + other.as_ref().map_or(0, Vec::len);
                    return match other {
                        Err(e) if i == 0 => Err(e),
                        _ => Err(ClientError::WalkIncomplete {
                            walked,
                            wanted: names.len(),
                        }),
                    };
                }
            };
            qids.extend(step);
        }
        Ok(qids)
    }

    /// `Tread`: up to `count` bytes at `offset`.
    pub fn read(&self, fid: Fid, offset: u64, count: u32) -> Result<Bytes, ClientError> {
        let r = self.rpc(envoy_proto::Tread { fid, offset, count }.into())?;
        Ok(expect_reply!(r, Rread)?.data)
    }

    /// `Twrite`: returns the count the server accepted.
    pub fn write(&self, fid: Fid, offset: u64, data: impl Into<Bytes>) -> Result<u32, ClientError> {
        let r = self.rpc(
            envoy_proto::Twrite {
                fid,
                offset,
                data: data.into(),
            }
            .into(),
        )?;
        Ok(expect_reply!(r, Rwrite)?.count)
    }

    /// Reads from offset 0 until a read returns nothing.
    pub fn read_all(&self, fid: Fid) -> Result<Vec<u8>, ClientError> {
        let mut out = Vec::new();
        loop {
            let chunk = self.read(fid, out.len() as u64, self.max_io())?;
            if chunk.is_empty() {
                return Ok(out);
            }
            out.extend_from_slice(&chunk);
        }
    }

    /// Writes all of `data` at `offset` in msize-sized pieces; returns the bytes written.
    pub fn write_all(&self, fid: Fid, offset: u64, data: &[u8]) -> Result<u64, ClientError> {
        self.write_all_bytes(fid, offset, Bytes::copy_from_slice(data))
    }

    /// [`Client::write_all`] without copying: each Twrite payload is a slice of `data`.
    pub fn write_all_bytes(&self, fid: Fid, offset: u64, data: Bytes) -> Result<u64, ClientError> {
        let mut done = 0usize;
        while done < data.len() {
            let end = data.len().min(done + self.max_io() as usize);
            let n = self.write(fid, offset + done as u64, data.slice(done..end))?;
            if n == 0 {
                return Err(ClientError::ShortWrite(end - done));
            }
            done += (n as usize).min(end - done);
        }
        Ok(done as u64)
    }

    /// `Tclunk` (a pool fid returns to the pool whatever the answer).
    pub fn clunk(&self, fid: Fid) -> Result<(), ClientError> {
        let r = self.rpc(envoy_proto::Tclunk { fid }.into());
        self.release_fid(fid);
        expect_reply!(r?, Rclunk).map(drop)
    }

    /// `Tremove` (the fid is clunked whatever the answer).
    pub fn remove(&self, fid: Fid) -> Result<(), ClientError> {
        let r = self.rpc(envoy_proto::Tremove { fid }.into());
        self.release_fid(fid);
        expect_reply!(r?, Rremove).map(drop)
    }

    // ---- 9P2000.L ---------------------------------------------------------------------

    /// `Tlopen` with Linux open flags ([`envoy_proto::lopen`]).
    pub fn lopen(&self, fid: Fid, flags: u32) -> Result<Rlopen, ClientError> {
        let r = self.rpc(envoy_proto::Tlopen { fid, flags }.into())?;
        expect_reply!(r, Rlopen)
    }

    /// `Tlcreate`: creates `name` in directory `fid`, which becomes the open file.
    pub fn lcreate(
        &self,
        fid: Fid,
        name: &str,
        flags: u32,
        mode: u32,
        gid: u32,
    ) -> Result<Rlcreate, ClientError> {
        let r = self.rpc(
            envoy_proto::Tlcreate {
                fid,
                name: name.into(),
                flags,
                mode,
                gid,
            }
            .into(),
        )?;
        expect_reply!(r, Rlcreate)
    }

    /// `Tgetattr` for the [`envoy_proto::getattr`] fields in `mask`.
    pub fn getattr(&self, fid: Fid, mask: u64) -> Result<Rgetattr, ClientError> {
        let r = self.rpc(
            envoy_proto::Tgetattr {
                fid,
                request_mask: mask,
            }
            .into(),
        )?;
        expect_reply!(r, Rgetattr)
    }

    /// `Tsetattr` (build the request with [`setattr_request`]).
    pub fn setattr(&self, req: Tsetattr) -> Result<(), ClientError> {
        let r = self.rpc(req.into())?;
        expect_reply!(r, Rsetattr).map(drop)
    }

    /// `Treaddir`: the raw entry bytes.
    pub fn readdir_raw(&self, fid: Fid, offset: u64, count: u32) -> Result<Bytes, ClientError> {
        let r = self.rpc(envoy_proto::Treaddir { fid, offset, count }.into())?;
        Ok(expect_reply!(r, Rreaddir)?.data)
    }

    /// `Treaddir`, parsed.
    pub fn readdir(&self, fid: Fid, offset: u64, count: u32) -> Result<Vec<DirEntry>, ClientError> {
        let data = self.readdir_raw(fid, offset, count)?;
        DirEntries::new(data)
            .collect::<Result<Vec<_>, _>>()
            .map_err(ClientError::BadData)
    }

    /// Every entry of an open directory, following the offset cookies until an empty reply.
    pub fn readdir_all(&self, fid: Fid) -> Result<Vec<DirEntry>, ClientError> {
        let mut all = Vec::new();
        let mut offset = 0;
        loop {
            let batch = self.readdir(fid, offset, self.max_io())?;
            let Some(last) = batch.last() else {
                return Ok(all);
            };
            offset = last.offset;
            all.extend(batch);
        }
    }

    /// `Tmkdir`.
    pub fn mkdir(&self, dfid: Fid, name: &str, mode: u32, gid: u32) -> Result<Qid, ClientError> {
        let r = self.rpc(
            envoy_proto::Tmkdir {
                dfid,
                name: name.into(),
                mode,
                gid,
            }
            .into(),
        )?;
        Ok(expect_reply!(r, Rmkdir)?.qid)
    }

    /// `Tsymlink`: `name` in directory `fid` pointing at `target`.
    pub fn symlink(
        &self,
        fid: Fid,
        name: &str,
        target: &str,
        gid: u32,
    ) -> Result<Qid, ClientError> {
        let r = self.rpc(
            envoy_proto::Tsymlink {
                fid,
                name: name.into(),
                symtgt: target.into(),
                gid,
            }
            .into(),
        )?;
        Ok(expect_reply!(r, Rsymlink)?.qid)
    }

    /// `Tmknod` (`mode` includes the `S_IF*` type).
    pub fn mknod(
        &self,
        dfid: Fid,
        name: &str,
        mode: u32,
        major: u32,
        minor: u32,
        gid: u32,
    ) -> Result<Qid, ClientError> {
        let r = self.rpc(
            envoy_proto::Tmknod {
                dfid,
                name: name.into(),
                mode,
                major,
                minor,
                gid,
            }
            .into(),
        )?;
        Ok(expect_reply!(r, Rmknod)?.qid)
    }

    /// `Trename`: move `fid`'s file into `dfid` as `name`.
    pub fn rename(&self, fid: Fid, dfid: Fid, name: &str) -> Result<(), ClientError> {
        let r = self.rpc(
            envoy_proto::Trename {
                fid,
                dfid,
                name: name.into(),
            }
            .into(),
        )?;
        expect_reply!(r, Rrename).map(drop)
    }

    /// `Trenameat`.
    pub fn renameat(
        &self,
        olddirfid: Fid,
        oldname: &str,
        newdirfid: Fid,
        newname: &str,
    ) -> Result<(), ClientError> {
        let r = self.rpc(
            envoy_proto::Trenameat {
                olddirfid,
                oldname: oldname.into(),
                newdirfid,
                newname: newname.into(),
            }
            .into(),
        )?;
        expect_reply!(r, Rrenameat).map(drop)
    }

    /// `Tunlinkat` (flags: [`envoy_proto::unlinkat::REMOVEDIR`] for a directory).
    pub fn unlinkat(&self, dirfid: Fid, name: &str, flags: u32) -> Result<(), ClientError> {
        let r = self.rpc(
            envoy_proto::Tunlinkat {
                dirfid,
                name: name.into(),
                flags,
            }
            .into(),
        )?;
        expect_reply!(r, Runlinkat).map(drop)
    }

    /// `Tlink`: hard link `fid`'s file into `dfid` as `name`.
    pub fn link(&self, dfid: Fid, fid: Fid, name: &str) -> Result<(), ClientError> {
        let r = self.rpc(
            envoy_proto::Tlink {
                dfid,
                fid,
                name: name.into(),
            }
            .into(),
        )?;
        expect_reply!(r, Rlink).map(drop)
    }

    /// `Treadlink`.
    pub fn readlink(&self, fid: Fid) -> Result<String, ClientError> {
        let r = self.rpc(envoy_proto::Treadlink { fid }.into())?;
        Ok(expect_reply!(r, Rreadlink)?.target)
    }

    /// `Tstatfs`.
    pub fn statfs(&self, fid: Fid) -> Result<Rstatfs, ClientError> {
        let r = self.rpc(envoy_proto::Tstatfs { fid }.into())?;
        expect_reply!(r, Rstatfs)
    }

    /// `Tfsync` (`datasync`: fdatasync).
    pub fn fsync(&self, fid: Fid, datasync: bool) -> Result<(), ClientError> {
        let r = self.rpc(
            envoy_proto::Tfsync {
                fid,
                datasync: u32::from(datasync),
            }
            .into(),
        )?;
        expect_reply!(r, Rfsync).map(drop)
    }

    /// `Txattrwalk`: `newfid` reads attribute `name` (or the name list for ""); returns its
    /// size.
    pub fn xattrwalk(&self, fid: Fid, newfid: Fid, name: &str) -> Result<u64, ClientError> {
        let r = self.rpc(
            envoy_proto::Txattrwalk {
                fid,
                newfid,
                name: name.into(),
            }
            .into(),
        )?;
        Ok(expect_reply!(r, Rxattrwalk)?.size)
    }

    /// `Txattrcreate`: `fid` becomes a write handle for `size` bytes of attribute `name`;
    /// the value is set when it is clunked.
    pub fn xattrcreate(
        &self,
        fid: Fid,
        name: &str,
        size: u64,
        flags: u32,
    ) -> Result<(), ClientError> {
        let r = self.rpc(
            envoy_proto::Txattrcreate {
                fid,
                name: name.into(),
                attr_size: size,
                flags,
            }
            .into(),
        )?;
        expect_reply!(r, Rxattrcreate).map(drop)
    }

    /// `Tlock`: returns the status byte ([`envoy_proto::lock`] `STATUS_*`).
    pub fn lock(&self, req: Tlock) -> Result<u8, ClientError> {
        let r = self.rpc(req.into())?;
        Ok(expect_reply!(r, Rlock)?.status)
    }

    /// `Tgetlock`.
    pub fn getlock(&self, req: Tgetlock) -> Result<Rgetlock, ClientError> {
        let r = self.rpc(req.into())?;
        expect_reply!(r, Rgetlock)
    }

    // ---- 9P2000.u ---------------------------------------------------------------------

    /// `Topen` ([`envoy_proto::open`] mode).
    pub fn open_u(&self, fid: Fid, mode: u8) -> Result<Ropen, ClientError> {
        let r = self.rpc(envoy_proto::Topen { fid, mode }.into())?;
        expect_reply!(r, Ropen)
    }

    /// `Tcreate` (`extension`: 9P2000.u special-file description, "" otherwise).
    pub fn create_u(
        &self,
        fid: Fid,
        name: &str,
        perm: u32,
        mode: u8,
        extension: &str,
    ) -> Result<Rcreate, ClientError> {
        let r = self.rpc(
            envoy_proto::Tcreate {
                fid,
                name: name.into(),
                perm,
                mode,
                extension: extension.into(),
            }
            .into(),
        )?;
        expect_reply!(r, Rcreate)
    }

    /// `Tstat`.
    pub fn stat(&self, fid: Fid) -> Result<Stat, ClientError> {
        let r = self.rpc(envoy_proto::Tstat { fid }.into())?;
        Ok(expect_reply!(r, Rstat)?.stat)
    }

    /// `Twstat` (start from [`Stat::dont_touch`]).
    pub fn wstat(&self, fid: Fid, stat: Stat) -> Result<(), ClientError> {
        let r = self.rpc(envoy_proto::Twstat { fid, stat }.into())?;
        expect_reply!(r, Rwstat).map(drop)
    }

    /// Reads a whole 9P2000/.u directory opened with `Topen` and parses its stat records.
    pub fn read_dir_stats(&self, fid: Fid) -> Result<Vec<Stat>, ClientError> {
        let data = self.read_all(fid)?;
        StatIter::new(Bytes::from(data), self.dialect())
            .collect::<Result<Vec<_>, _>>()
            .map_err(ClientError::BadData)
    }
}

/// A `Tsetattr` for `fid` changing only the fields named in `valid`
/// ([`envoy_proto::setattr`] bits); fill in the values after.
pub fn setattr_request(fid: Fid, valid: u32) -> Tsetattr {
    Tsetattr {
        fid,
        valid,
        mode: 0,
        uid: 0,
        gid: 0,
        size: 0,
        atime_sec: 0,
        atime_nsec: 0,
        mtime_sec: 0,
        mtime_nsec: 0,
    }
}
