//! The frame-aligned relay between the guest kernel's 9P client and the host's envoy.
//!
//! Linux's `trans=fd` and `trans=unix` transports talk 9P over a file descriptor. The relay
//! gives the kernel one end of a Unix socket (a socketpair for `mount`, an accepted connection
//! for `relay --listen`) and copies 9P frames between it (*downstream*) and the host
//! (*upstream*: TCP, Unix, vsock or a virtio-serial port, see [`crate::endpoint`]).
//!
//! # Whole frames only
//!
//! ```text
//! size[4] type[1] tag[2] body[size-7]      (little-endian; 7 ≤ size ≤ msize)
//! ```
//!
//! Each direction reads into a buffer and forwards only complete frames, cut by the codec's
//! [`FrameSplitter`]; a frame goes out with one `write_all` under the direction's writer lock,
//! so frames of different sessions never interleave. Frames from the guest are checked against
//! the session's msize: the relay's cap until the guest's `Tversion` (type 100) names its
//! msize, then the `Rversion` (type 101) answer. A size outside `7..=msize` means the byte
//! stream cannot be resynchronised: the session ends (the guest sees its socket close).
//! Frames from the host are checked against the cap only (stale replies of an earlier session
//! may use that session's larger msize).
//!
//! # Sessions on a persistent stream
//!
//! TCP, Unix and vsock upstreams get a fresh connection per guest session, so a session's end
//! is visible to the host as a closed connection. A virtio-serial port is one byte stream for
//! the life of the VM, without connection boundaries, so the relay keeps it open
//! ([`PersistentUpstream`]) and keeps it aligned across sessions:
//!
//! * Guest → host: a frame the guest had only partly sent when it disconnected was never
//!   forwarded (only whole frames are), so it is discarded; the host never sees a truncated
//!   frame followed by a new session's bytes.
//! * The next guest session starts with `Tversion`, which makes the server abort the previous
//!   session's state (9P: "a Tversion resets the session").
//! * Host → guest: replies to the previous session's requests may still be on their way,
//!   including the answer to its own `Tversion`. The relay numbers the `Tversion` frames it
//!   forwards and the version answers (any reply with tag NOTAG) it receives; the host answers
//!   them in order, so the answer to the new session's first `Tversion` is the one whose number
//!   matches. Frames before it are dropped; without a session every frame is dropped.
//! * End-of-file on the port means the host side is not connected (Linux's virtio console
//!   returns 0 then). The current session is ended (the host lost its state) and the relay
//!   polls the port until the host is back; the partial frame buffered from the host is
//!   discarded, as the host starts a new stream from a frame boundary.
//!
//! What the relay cannot repair: its own death in the middle of writing a frame to the port
//! (SIGKILL, OOM). A large frame goes out in several `write` calls (virtio-serial takes at most
//! 32 KiB per call), so the host may then hold a truncated frame. The host must treat the port
//! as broken and reset it (reconnect the chardev) before a new relay starts.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use envoy_proto::{FrameError, FrameSplitter, MsgType, Tag, HEADER_LEN};
use thiserror::Error;

use crate::endpoint::{ConnectError, Connection, Endpoint};

/// Default cap on the msize of relayed sessions (Linux's fd transport allows at most 1 MiB).
pub const DEFAULT_MAX_MSIZE: u32 = 4 << 20;

/// How long the persistent reader sleeps after end-of-file on a serial port.
const SERIAL_POLL: Duration = Duration::from_millis(200);

const READ_CHUNK: usize = 64 * 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Critical sections only swap session handles or write whole frames.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why one direction of a relay stopped.
#[derive(Debug)]
pub enum PumpEnd {
    /// The source ended; `discarded` bytes of an incomplete frame were dropped.
    Eof {
        /// Bytes of a partial frame not forwarded.
        discarded: usize,
    },
    /// Reading the source failed.
    ReadError(io::Error),
    /// The source's framing is broken (size outside `7..=msize`).
    Broken(FrameError),
    /// Forwarding a frame failed.
    SinkError(io::Error),
}

impl std::fmt::Display for PumpEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PumpEnd::Eof { discarded: 0 } => write!(f, "end of stream"),
            PumpEnd::Eof { discarded } => {
                write!(
                    f,
                    "end of stream inside a frame ({discarded} bytes discarded)"
                )
            }
            PumpEnd::ReadError(e) => write!(f, "read error: {e}"),
            PumpEnd::Broken(e) => write!(f, "broken framing: {e}"),
            PumpEnd::SinkError(e) => write!(f, "write error: {e}"),
        }
    }
}

/// Reads `src` until it ends and calls `on_frame` with every complete frame, each checked
/// against `limit` (read before every frame, so a `Tversion` seen by `on_frame` can lower it).
pub fn pump_frames<R, F>(src: &mut R, limit: &AtomicU32, mut on_frame: F) -> PumpEnd
where
    R: Read + ?Sized,
    F: FnMut(Bytes) -> io::Result<()>,
{
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    // Reads go through `scratch` (one copy): reading into `buf`'s spare room would mean
    // zeroing it before every call, up to the whole capacity each time.
    let mut scratch = vec![0u8; READ_CHUNK];
    loop {
        let splitter = FrameSplitter::new(limit.load(Ordering::Acquire));
        match splitter.next_frame(&mut buf) {
            Ok(Some(frame)) => {
                if let Err(e) = on_frame(frame) {
                    return PumpEnd::SinkError(e);
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => return PumpEnd::Broken(e),
        }
        match src.read(&mut scratch) {
            Ok(0) => {
                return PumpEnd::Eof {
                    discarded: buf.len(),
                }
            }
            Ok(n) => buf.extend_from_slice(&scratch[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return PumpEnd::ReadError(e),
        }
    }
}

/// The message type byte of a frame.
fn frame_type(frame: &[u8]) -> Option<u8> {
    frame.get(4).copied()
}

/// The tag of a frame.
fn frame_tag(frame: &[u8]) -> Option<Tag> {
    Some(Tag(u16::from_le_bytes([*frame.get(5)?, *frame.get(6)?])))
}

/// The msize field of a Tversion/Rversion frame.
fn version_msize(frame: &[u8]) -> Option<u32> {
    let b = frame.get(HEADER_LEN..HEADER_LEN + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Lowers `limit` to the msize a version frame names (never above `cap`, never below the
/// 7-byte header).
fn track_version(frame: &[u8], limit: &AtomicU32, cap: u32) {
    let ty = frame_type(frame);
    if ty == Some(MsgType::Tversion as u8) || ty == Some(MsgType::Rversion as u8) {
        if let Some(m) = version_msize(frame) {
            let m = m.clamp(HEADER_LEN as u32, cap);
            if ty == Some(MsgType::Tversion as u8) {
                // A new Tversion starts a new negotiation: its msize replaces the old one.
                limit.store(m, Ordering::Release);
            } else {
                limit.fetch_min(m, Ordering::AcqRel);
            }
        }
    }
}

/// What one guest session did.
#[derive(Debug)]
pub struct SessionReport {
    /// Frames forwarded guest → host.
    pub frames_up: u64,
    /// Frames forwarded host → guest.
    pub frames_down: u64,
    /// How the guest → host direction ended.
    pub guest_end: PumpEnd,
    /// Whether the host side ended the session (closed, failed or broke framing) rather than
    /// the guest.
    pub ended_by_host: bool,
}

fn write_frame(w: &mut (dyn Write + Send), frame: &[u8]) -> io::Result<()> {
    w.write_all(frame)?;
    w.flush()
}

/// Relays one guest session over a fresh upstream connection until either side closes.
pub fn run_fresh_session(down: Connection, up: Connection, cap: u32) -> SessionReport {
    let limit = Arc::new(AtomicU32::new(cap));
    let frames_down = Arc::new(AtomicU64::new(0));
    let Connection {
        reader: mut down_r,
        writer: mut down_w,
        closer: down_closer,
    } = down;
    let Connection {
        reader: mut up_r,
        writer: mut up_w,
        closer: up_closer,
    } = up;

    // Which side ended first: 0 none yet, 1 guest, 2 host.
    let first = Arc::new(AtomicU8::new(0));
    let (lim, count, fst) = (
        Arc::clone(&limit),
        Arc::clone(&frames_down),
        Arc::clone(&first),
    );
    let down_closer = Arc::new(down_closer);
    let dc = Arc::clone(&down_closer);
    let host_to_guest = std::thread::Builder::new()
        .name("relay-down".into())
        .spawn(move || {
            let cap_limit = AtomicU32::new(cap);
            let end = pump_frames(&mut up_r, &cap_limit, |frame| {
                track_version(&frame, &lim, cap);
                count.fetch_add(1, Ordering::Relaxed);
                write_frame(&mut *down_w, &frame)
            });
            if fst
                .compare_exchange(0, 2, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                tracing::info!(%end, "host side ended the session");
            }
            dc.shutdown();
        });

    let mut frames_up = 0u64;
    let guest_end = match host_to_guest {
        Ok(handle) => {
            let end = pump_frames(&mut down_r, &limit, |frame| {
                track_version(&frame, &limit, cap);
                frames_up += 1;
                write_frame(&mut *up_w, &frame)
            });
            let _ = first.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire);
            up_closer.shutdown();
            down_closer.shutdown();
            let _ = handle.join();
            end
        }
        Err(e) => PumpEnd::SinkError(e),
    };
    SessionReport {
        frames_up,
        frames_down: frames_down.load(Ordering::Relaxed),
        guest_end,
        ended_by_host: first.load(Ordering::Acquire) == 2,
    }
}

/// Where the current session's host → guest frames go.
struct Current {
    writer: Box<dyn Write + Send>,
    closer: Arc<crate::endpoint::Closer>,
    /// Set once the answer to the session's first Tversion came; frames before it are stale.
    synced: bool,
    /// Number (in `Versions::sent`) of the session's first Tversion, once forwarded.
    first_tversion: Option<u64>,
    frames_down: Arc<AtomicU64>,
    /// The session's msize limit, lowered by Rversion.
    limit: Arc<AtomicU32>,
    /// Set when the host side ended the session.
    ended_by_host: Arc<AtomicBool>,
}

/// A host stream that outlives guest sessions (a virtio-serial port); see the module docs.
pub struct PersistentUpstream {
    writer: Mutex<Box<dyn Write + Send>>,
    current: Mutex<Option<Current>>,
    versions: Mutex<Versions>,
    cap: u32,
    dropped: AtomicU64,
    failed: Mutex<Option<String>>,
}

/// Tversions forwarded to the host and version answers received, over the stream's life.
/// Lock order: `writer` or `current` before `versions`; `writer` before `current`.
#[derive(Debug, Default)]
struct Versions {
    sent: u64,
    answered: u64,
}

impl std::fmt::Debug for PersistentUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistentUpstream")
            .field("cap", &self.cap)
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

impl PersistentUpstream {
    /// Takes over `conn` and starts its reader thread.
    pub fn start(conn: Connection, cap: u32) -> io::Result<Arc<PersistentUpstream>> {
        let Connection {
            mut reader, writer, ..
        } = conn;
        let up = Arc::new(PersistentUpstream {
            writer: Mutex::new(writer),
            current: Mutex::new(None),
            versions: Mutex::new(Versions::default()),
            cap,
            dropped: AtomicU64::new(0),
            failed: Mutex::new(None),
        });
        let u = Arc::clone(&up);
        std::thread::Builder::new()
            .name("relay-serial-rx".into())
            .spawn(move || u.reader_loop(&mut *reader))?;
        Ok(up)
    }

    /// Frames from the host that were dropped (stale or without a session).
    pub fn dropped_frames(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Why the host stream failed for good, if it did.
    pub fn failure(&self) -> Option<String> {
        lock(&self.failed).clone()
    }

    fn reader_loop(&self, reader: &mut (dyn Read + Send)) {
        let cap = AtomicU32::new(self.cap);
        loop {
            let end = pump_frames(reader, &cap, |frame| {
                self.deliver(frame);
                Ok(())
            });
            match end {
                PumpEnd::Eof { discarded } => {
                    if discarded > 0 || lock(&self.current).is_some() {
                        tracing::info!(discarded, "host side of the serial port disconnected");
                    }
                    self.end_session();
                    // Whatever was in flight is lost with the host's connection.
                    let mut v = lock(&self.versions);
                    v.answered = v.sent;
                    drop(v);
                    std::thread::sleep(SERIAL_POLL);
                }
                other => {
                    let why = format!("host stream failed: {other}");
                    tracing::error!("{why}");
                    *lock(&self.failed) = Some(why);
                    self.end_session();
                    return;
                }
            }
        }
    }

    fn end_session(&self) {
        if let Some(cur) = lock(&self.current).take() {
            cur.ended_by_host.store(true, Ordering::Release);
            cur.closer.shutdown();
        }
    }

    fn deliver(&self, frame: Bytes) {
        let mut cur = lock(&self.current);
        let answer_no = (frame_tag(&frame) == Some(Tag::NOTAG)).then(|| {
            let mut v = lock(&self.versions);
            v.answered += 1;
            v.answered
        });
        let Some(c) = cur.as_mut() else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if !c.synced {
            if answer_no.is_none() || answer_no != c.first_tversion {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    len = frame.len(),
                    "stale frame from an earlier session dropped"
                );
                return;
            }
            c.synced = true;
        }
        track_version(&frame, &c.limit, self.cap);
        if let Err(e) = write_frame(&mut *c.writer, &frame) {
            tracing::info!(error = %e, "guest side gone while forwarding a reply");
            if let Some(c) = cur.take() {
                c.closer.shutdown();
            }
            return;
        }
        c.frames_down.fetch_add(1, Ordering::Relaxed);
    }

    /// Relays one guest session; returns when the guest disconnects (or the host does).
    pub fn run_session(&self, down: Connection) -> SessionReport {
        let Connection {
            reader: mut down_r,
            writer: down_w,
            closer,
        } = down;
        if let Some(why) = self.failure() {
            closer.shutdown();
            return SessionReport {
                frames_up: 0,
                frames_down: 0,
                guest_end: PumpEnd::SinkError(io::Error::other(why)),
                ended_by_host: true,
            };
        }
        let limit = Arc::new(AtomicU32::new(self.cap));
        let frames_down = Arc::new(AtomicU64::new(0));
        let ended_by_host = Arc::new(AtomicBool::new(false));
        let closer = Arc::new(closer);
        *lock(&self.current) = Some(Current {
            writer: down_w,
            closer: Arc::clone(&closer),
            synced: false,
            first_tversion: None,
            frames_down: Arc::clone(&frames_down),
            limit: Arc::clone(&limit),
            ended_by_host: Arc::clone(&ended_by_host),
        });
        let mut frames_up = 0u64;
        let mut numbered = false;
        let guest_end = pump_frames(&mut down_r, &limit, |frame| {
            track_version(&frame, &limit, self.cap);
            frames_up += 1;
            let mut w = lock(&self.writer);
            if frame_type(&frame) == Some(MsgType::Tversion as u8) {
                // Numbered under the writer lock, so numbers follow the stream's order.
                let no = {
                    let mut v = lock(&self.versions);
                    v.sent += 1;
                    v.sent
                };
                if !numbered {
                    numbered = true;
                    if let Some(c) = lock(&self.current).as_mut() {
                        if Arc::ptr_eq(&c.closer, &closer) {
                            c.first_tversion = Some(no);
                        }
                    }
                }
            }
            write_frame(&mut **w, &frame)
        });
        // Only if it is still ours: the reader may have ended it already.
        {
            let mut cur = lock(&self.current);
            if cur
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(&c.closer, &closer))
            {
                *cur = None;
            }
        }
        closer.shutdown();
        SessionReport {
            frames_up,
            frames_down: frames_down.load(Ordering::Relaxed),
            guest_end,
            ended_by_host: ended_by_host.load(Ordering::Acquire),
        }
    }
}

/// Failure to set up relaying.
#[derive(Debug, Error)]
pub enum RelayError {
    /// The host could not be reached.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A local socket or thread could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The persistent host stream broke.
    #[error("{0}")]
    HostStream(String),
}

/// How guest sessions reach the host.
#[derive(Debug)]
pub enum Upstream {
    /// A fresh connection to the endpoint per session.
    Fresh(Endpoint),
    /// One stream for every session.
    Persistent(Arc<PersistentUpstream>),
}

impl Upstream {
    /// Opens the host side for `ep`: a serial port is opened now and kept open.
    pub fn new(ep: &Endpoint, cap: u32) -> Result<Upstream, RelayError> {
        if ep.is_persistent_stream() {
            let conn = ep.connect()?;
            let up = PersistentUpstream::start(conn, cap).map_err(|source| RelayError::Io {
                what: "cannot start the serial reader thread".into(),
                source,
            })?;
            Ok(Upstream::Persistent(up))
        } else {
            Ok(Upstream::Fresh(ep.clone()))
        }
    }

    /// Relays one guest session to its end.
    pub fn serve(&self, down: Connection, cap: u32) -> Result<SessionReport, RelayError> {
        match self {
            Upstream::Fresh(ep) => {
                let up = match ep.connect() {
                    Ok(up) => up,
                    Err(e) => {
                        down.closer.shutdown();
                        return Err(e.into());
                    }
                };
                Ok(run_fresh_session(down, up, cap))
            }
            Upstream::Persistent(p) => {
                let report = p.run_session(down);
                match p.failure() {
                    Some(why) => Err(RelayError::HostStream(why)),
                    None => Ok(report),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::os::unix::net::UnixStream;

    fn frame(ty: u8, tag: u16, body: &[u8]) -> Vec<u8> {
        let mut f = ((HEADER_LEN + body.len()) as u32).to_le_bytes().to_vec();
        f.push(ty);
        f.extend_from_slice(&tag.to_le_bytes());
        f.extend_from_slice(body);
        f
    }

    fn tversion(msize: u32) -> Vec<u8> {
        let mut body = msize.to_le_bytes().to_vec();
        body.extend_from_slice(&8u16.to_le_bytes());
        body.extend_from_slice(b"9P2000.L");
        frame(100, 0xffff, &body)
    }

    fn rversion(msize: u32) -> Vec<u8> {
        let mut t = tversion(msize);
        t[4] = 101;
        t
    }

    fn tclunk(tag: u16) -> Vec<u8> {
        frame(120, tag, &7u32.to_le_bytes())
    }

    fn rclunk(tag: u16) -> Vec<u8> {
        frame(121, tag, &[])
    }

    /// Asserts that exactly `want` arrives on `s`: its bytes within 10 s (generous for a
    /// loaded machine), then nothing more for 200 ms (or end of stream).
    fn expect_bytes(s: &mut UnixStream, want: &[u8]) {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = vec![0u8; want.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, want);
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut more = [0u8; 64];
        match s.read(&mut more) {
            Ok(0) => {}
            Ok(n) => panic!("{n} unexpected bytes: {:?}", &more[..n]),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ),
                "read: {e}"
            ),
        }
    }

    #[test]
    fn pump_frames_partial_tail_is_discarded_not_forwarded() {
        let mut bytes = tclunk(1);
        bytes.extend_from_slice(&tclunk(2));
        bytes.extend_from_slice(&tclunk(3)[..5]);
        let mut got = Vec::new();
        let end = pump_frames(&mut Cursor::new(bytes), &AtomicU32::new(8192), |f| {
            got.push(f);
            Ok(())
        });
        assert!(matches!(end, PumpEnd::Eof { discarded: 5 }), "{end}");
        assert_eq!(got, vec![Bytes::from(tclunk(1)), Bytes::from(tclunk(2))]);
    }

    #[test]
    fn pump_frames_size_above_limit_is_broken() {
        let mut big = tclunk(1);
        big[..4].copy_from_slice(&9000u32.to_le_bytes());
        let mut calls = 0;
        let end = pump_frames(&mut Cursor::new(big), &AtomicU32::new(8192), |_| {
            calls += 1;
            Ok(())
        });
        assert!(matches!(
            end,
            PumpEnd::Broken(FrameError::TooLarge { size: 9000, .. })
        ));
        assert_eq!(calls, 0);
    }

    #[test]
    fn pump_frames_size_below_header_is_broken() {
        let end = pump_frames(
            &mut Cursor::new(vec![3, 0, 0, 0, 120, 0, 0]),
            &AtomicU32::new(8192),
            |_| Ok(()),
        );
        assert!(matches!(
            end,
            PumpEnd::Broken(FrameError::TooShort { size: 3 })
        ));
    }

    #[test]
    fn track_version_tversion_sets_and_rversion_lowers_limit() {
        let limit = AtomicU32::new(1 << 20);
        track_version(&tversion(65536), &limit, 1 << 20);
        assert_eq!(limit.load(Ordering::Relaxed), 65536);
        track_version(&rversion(8192), &limit, 1 << 20);
        assert_eq!(limit.load(Ordering::Relaxed), 8192);
        track_version(&tversion(u32::MAX), &limit, 1 << 20);
        assert_eq!(limit.load(Ordering::Relaxed), 1 << 20);
        track_version(&tclunk(1), &limit, 1 << 20);
        assert_eq!(limit.load(Ordering::Relaxed), 1 << 20);
    }

    #[test]
    fn fresh_session_guest_frame_above_its_msize_ends_session_unforwarded() {
        let (guest, relay_down) = UnixStream::pair().unwrap();
        let (mut host, relay_up) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            run_fresh_session(
                Connection::from_unix(relay_down).unwrap(),
                Connection::from_unix(relay_up).unwrap(),
                1 << 20,
            )
        });
        let mut g = guest;
        g.write_all(&tversion(8192)).unwrap();
        let mut big = tclunk(1);
        big[..4].copy_from_slice(&9000u32.to_le_bytes());
        g.write_all(&big).unwrap();
        let report = t.join().unwrap();
        assert!(
            matches!(report.guest_end, PumpEnd::Broken(_)),
            "{}",
            report.guest_end
        );
        assert_eq!(report.frames_up, 1);
        expect_bytes(&mut host, &tversion(8192));
    }

    #[test]
    fn fresh_session_partial_frame_then_eof_forwards_whole_frames_only() {
        let (mut guest, relay_down) = UnixStream::pair().unwrap();
        let (mut host, relay_up) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            run_fresh_session(
                Connection::from_unix(relay_down).unwrap(),
                Connection::from_unix(relay_up).unwrap(),
                1 << 20,
            )
        });
        guest.write_all(&tversion(8192)).unwrap();
        host.write_all(&rversion(8192)).unwrap();
        let mut buf = vec![0u8; rversion(8192).len()];
        guest.read_exact(&mut buf).unwrap();
        assert_eq!(buf, rversion(8192));
        guest.write_all(&tclunk(1)[..6]).unwrap();
        drop(guest);
        let report = t.join().unwrap();
        assert!(matches!(report.guest_end, PumpEnd::Eof { discarded: 6 }));
        assert_eq!((report.frames_up, report.frames_down), (1, 1));
        assert!(!report.ended_by_host);
        // The host saw the whole Tversion, then a clean end of stream.
        expect_bytes(&mut host, &tversion(8192));
    }

    #[test]
    fn persistent_session_disconnect_mid_frame_keeps_host_stream_aligned() {
        let (mut host, port) = UnixStream::pair().unwrap();
        let up = PersistentUpstream::start(Connection::from_unix(port).unwrap(), 1 << 20).unwrap();

        // Session 1: a whole Tversion, then half a Tclunk, then the guest goes away.
        let (mut g1, d1) = UnixStream::pair().unwrap();
        let u = Arc::clone(&up);
        let s1 = std::thread::spawn(move || u.run_session(Connection::from_unix(d1).unwrap()));
        g1.write_all(&tversion(8192)).unwrap();
        g1.write_all(&tclunk(5)[..9]).unwrap();
        drop(g1);
        let r1 = s1.join().unwrap();
        assert!(
            matches!(r1.guest_end, PumpEnd::Eof { discarded: 9 }),
            "{}",
            r1.guest_end
        );
        expect_bytes(&mut host, &tversion(8192));

        // A late reply for session 1 arrives with no session: dropped.
        host.write_all(&rversion(8192)).unwrap();
        host.write_all(&rclunk(5)).unwrap();

        // Session 2: its Tversion reaches the host aligned; stale replies before its
        // Rversion are dropped, the rest is delivered.
        let (mut g2, d2) = UnixStream::pair().unwrap();
        let u = Arc::clone(&up);
        let s2 = std::thread::spawn(move || u.run_session(Connection::from_unix(d2).unwrap()));
        g2.write_all(&tversion(4096)).unwrap();
        g2.write_all(&tclunk(1)).unwrap();
        let mut expect_host = tversion(4096);
        expect_host.extend_from_slice(&tclunk(1));
        expect_bytes(&mut host, &expect_host);
        host.write_all(&rclunk(6)).unwrap(); // stale, still before Rversion
        host.write_all(&rversion(4096)).unwrap();
        host.write_all(&rclunk(1)).unwrap();
        let mut expect_guest = rversion(4096);
        expect_guest.extend_from_slice(&rclunk(1));
        let mut got = vec![0u8; expect_guest.len()];
        g2.read_exact(&mut got).unwrap();
        assert_eq!(got, expect_guest);
        drop(g2);
        let r2 = s2.join().unwrap();
        assert_eq!((r2.frames_up, r2.frames_down), (2, 2));
        assert_eq!(up.dropped_frames(), 3);
        assert!(up.failure().is_none());
    }

    #[test]
    fn persistent_host_eof_ends_session_and_recovers() {
        let (host, port) = UnixStream::pair().unwrap();
        // A reader that reports EOF once the "host" closes, like an unconnected virtio port.
        let up = PersistentUpstream::start(Connection::from_unix(port).unwrap(), 1 << 20).unwrap();
        let (mut g, d) = UnixStream::pair().unwrap();
        let u = Arc::clone(&up);
        let s = std::thread::spawn(move || u.run_session(Connection::from_unix(d).unwrap()));
        g.write_all(&tversion(8192)).unwrap();
        let mut host = host;
        expect_bytes(&mut host, &tversion(8192));
        drop(host);
        // The guest sees its connection end.
        let mut rest = Vec::new();
        g.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(g.read_to_end(&mut rest).unwrap(), 0);
        let r = s.join().unwrap();
        assert_eq!(r.frames_up, 1);
        assert!(r.ended_by_host);
        assert!(up.failure().is_none());
    }
}
