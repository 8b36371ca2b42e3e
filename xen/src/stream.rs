//! One 9P byte stream over N rings, for either end.
//!
//! A 9P session is one stream of frames, but the Xen transport spreads it over N rings, and
//! Linux expects each reply on the ring its request came on, which for Linux (and QEMU's
//! assumption) is ring `tag % N` — Tversion's NOTAG (0xFFFF) lands on ring 1 of 2. So:
//!
//! ```text
//!            ┌─ pump thread, ring 0: read whole frames ─┐
//! rings ─────┤                                          ├─▶ channel ─▶ RingStreamReader (io::Read)
//!            └─ pump thread, ring 1 ────────────────────┘
//! RingStreamWriter (io::Write): cut whole frames, queue on ring tag % N ─▶ pump writes when the
//!                                                                         whole frame fits
//! ```
//!
//! Each ring is owned by one pump thread (its consumer, producer and event channel). The
//! pump re-checks both directions after every wake-up (notifications coalesce), publishes a
//! frame only when all of it is in the ring (one `prod` update: Linux reads a reply as soon as
//! its header is visible), notifies after consuming or producing, and otherwise waits on the
//! event channel (which the local side kicks when it queues a frame or drains the channel).
//!
//! Backpressure: the incoming channel holds at most [`INCOMING_FRAMES`] frames; when it is
//! full the pump stops consuming, so the peer's producer blocks on a full ring.
//!
//! A peer that breaks the ring protocol (indexes out of range, a size below 7 or above the
//! ring or the frame limit) ends the whole stream: [`RingError::is_peer_fault`]. Other rings
//! of other streams are unaffected.
//!
//! The same code serves the backend (consume `out`, produce `in`) and the frontend emulator
//! (the reverse); only the ends passed in differ.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use envoy_ring::{Consumer, Producer, RingError};

use crate::hv::EventChannel;

/// Frames buffered between the pumps and the reader.
pub const INCOMING_FRAMES: usize = 64;
/// Longest single wait of a pump (it re-checks the stop flag after each).
const PUMP_SLICE: Duration = Duration::from_millis(250);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One ring's ends and its event channel.
pub struct RingEnd {
    /// Frames arriving.
    pub consumer: Consumer,
    /// Frames leaving.
    pub producer: Producer,
    /// The ring's event channel.
    pub evtchn: Box<dyn EventChannel>,
    /// Keeps the ring's memory (and anything else) alive until the pump exits.
    pub keep: Box<dyn Send>,
}

/// Called once when a stream has stopped and released its rings (with the peer's fault).
pub type OnEnd = Box<dyn FnOnce(Option<String>) + Send>;

struct RingShared {
    outgoing: Mutex<VecDeque<Bytes>>,
    evtchn: Box<dyn EventChannel>,
    /// The pump holds a frame the reader had no room for.
    stalled: AtomicBool,
}

/// How often each direction ran into a full ring or a full reader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Frames that had to wait for space in the peer-bound ring (it was full).
    pub send_waits: u64,
    /// Times a pump stopped consuming because the reader's queue was full (the incoming ring
    /// then fills up).
    pub recv_stalls: u64,
}

struct StreamShared {
    rings: Vec<Arc<RingShared>>,
    send_waits: AtomicU64,
    recv_stalls: AtomicU64,
    dead: AtomicBool,
    live_pumps: AtomicUsize,
    reason: Mutex<Option<String>>,
    on_end: Mutex<Option<OnEnd>>,
}

impl StreamShared {
    fn kill(&self, reason: Option<String>) {
        if let Some(r) = reason {
            lock(&self.reason).get_or_insert(r);
        }
        self.dead.store(true, Ordering::SeqCst);
        for r in &self.rings {
            r.evtchn.kick();
        }
    }
}

/// Options.
#[derive(Debug, Clone, Copy)]
pub struct StreamOptions {
    /// Largest frame accepted from the peer (also capped by each ring's size).
    pub max_frame: u32,
    /// Frontend Tversion requests are rewritten to at most this msize (the backend sets it to
    /// the ring size so no reply can outgrow a ring); `None` leaves frames alone.
    pub cap_tversion_msize: Option<u32>,
}

/// Both halves and the closer of a running stream.
pub struct RingStream {
    /// Incoming frames as bytes.
    pub reader: RingStreamReader,
    /// Outgoing frames.
    pub writer: RingStreamWriter,
    /// Stops the pumps.
    pub closer: RingStreamCloser,
}

impl std::fmt::Debug for RingStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingStream")
            .field("rings", &self.closer.0.rings.len())
            .finish()
    }
}

impl RingStream {
    /// Starts one pump thread per ring. `on_end` runs once, after the last pump has exited
    /// and released its ring (with the reason, when the peer broke the protocol).
    pub fn spawn(ends: Vec<RingEnd>, opts: StreamOptions, on_end: OnEnd) -> io::Result<RingStream> {
        if ends.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no rings"));
        }
        let (tx, rx) = mpsc::sync_channel(INCOMING_FRAMES);
        let mut parts = Vec::new();
        let mut rings = Vec::new();
        for e in ends {
            let RingEnd {
                consumer,
                producer,
                evtchn,
                keep,
            } = e;
            let r = Arc::new(RingShared {
                outgoing: Mutex::new(VecDeque::new()),
                evtchn,
                stalled: AtomicBool::new(false),
            });
            rings.push(Arc::clone(&r));
            parts.push((consumer, producer, keep, r));
        }
        let shared = Arc::new(StreamShared {
            rings,
            send_waits: AtomicU64::new(0),
            recv_stalls: AtomicU64::new(0),
            dead: AtomicBool::new(false),
            live_pumps: AtomicUsize::new(parts.len()),
            reason: Mutex::new(None),
            on_end: Mutex::new(Some(on_end)),
        });
        for (i, (c, p, keep, r)) in parts.into_iter().enumerate() {
            let s = Arc::clone(&shared);
            let tx = tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("xen-ring{i}"))
                .spawn(move || {
                    let mut pump = Pump {
                        consumer: c,
                        producer: p,
                        ring: r,
                        tx,
                        held: None,
                        waiting: false,
                        opts,
                    };
                    if let Err(e) = pump.run(&s) {
                        s.kill(Some(format!("ring {i}: {e}")));
                    }
                    drop(pump);
                    drop(keep);
                    if s.live_pumps.fetch_sub(1, Ordering::SeqCst) == 1 {
                        let reason = lock(&s.reason).clone();
                        if let Some(f) = lock(&s.on_end).take() {
                            f(reason);
                        }
                    }
                });
            if let Err(e) = spawned {
                shared.kill(Some(format!("cannot start a ring thread: {e}")));
                return Err(e);
            }
        }
        Ok(RingStream {
            reader: RingStreamReader {
                rx,
                cur: Bytes::new(),
                shared: Arc::clone(&shared),
            },
            writer: RingStreamWriter {
                buf: BytesMut::new(),
                shared: Arc::clone(&shared),
            },
            closer: RingStreamCloser(shared),
        })
    }
}

struct Pump {
    consumer: Consumer,
    producer: Producer,
    ring: Arc<RingShared>,
    tx: SyncSender<Bytes>,
    held: Option<Bytes>,
    /// The front outgoing frame already counted as waiting for space.
    waiting: bool,
    opts: StreamOptions,
}

impl Pump {
    fn run(&mut self, s: &StreamShared) -> Result<(), RingError> {
        loop {
            if s.dead.load(Ordering::SeqCst) {
                return Ok(());
            }
            let mut progressed = false;
            // Outgoing: whole frames only, in order.
            loop {
                let Some(f) = lock(&self.ring.outgoing).front().cloned() else {
                    break;
                };
                if !self.producer.write_message(&[&f])? {
                    if !self.waiting {
                        self.waiting = true;
                        s.send_waits.fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
                self.waiting = false;
                lock(&self.ring.outgoing).pop_front();
                progressed = true;
            }
            // Incoming.
            loop {
                let frame = match self.held.take() {
                    Some(f) => f,
                    None => match self.consumer.read_message(self.opts.max_frame)? {
                        Some(f) => {
                            progressed = true;
                            self.rewrite(f)
                        }
                        None => break,
                    },
                };
                match self.tx.try_send(frame) {
                    Ok(()) => {}
                    Err(TrySendError::Full(f)) => {
                        self.held = Some(f);
                        s.recv_stalls.fetch_add(1, Ordering::Relaxed);
                        self.ring.stalled.store(true, Ordering::SeqCst);
                        break;
                    }
                    Err(TrySendError::Disconnected(_)) => return Ok(()),
                }
            }
            if progressed {
                self.ring
                    .evtchn
                    .notify()
                    .map_err(|e| RingError::Doorbell(io::Error::other(e.to_string())))?;
                continue;
            }
            self.ring
                .evtchn
                .wait(Some(PUMP_SLICE))
                .map_err(|e| RingError::Doorbell(io::Error::other(e.to_string())))?;
        }
    }

    /// Caps the msize of a Tversion (type 100) frame, in place.
    fn rewrite(&self, f: Bytes) -> Bytes {
        let Some(cap) = self.opts.cap_tversion_msize else {
            return f;
        };
        if f.len() < 11 || f[4] != 100 {
            return f;
        }
        let msize = u32::from_le_bytes([f[7], f[8], f[9], f[10]]);
        if msize <= cap {
            return f;
        }
        let mut m = BytesMut::from(&f[..]);
        m[7..11].copy_from_slice(&cap.to_le_bytes());
        m.freeze()
    }
}

/// Incoming frames as a byte stream; EOF once every pump has stopped.
pub struct RingStreamReader {
    rx: Receiver<Bytes>,
    cur: Bytes,
    shared: Arc<StreamShared>,
}

impl RingStreamReader {
    /// The next whole frame (`None` at the end of the stream).
    pub fn next_frame(&mut self) -> Option<Bytes> {
        if !self.cur.is_empty() {
            return Some(std::mem::take(&mut self.cur));
        }
        let f = self.rx.recv().ok()?;
        for r in &self.shared.rings {
            if r.stalled.swap(false, Ordering::SeqCst) {
                r.evtchn.kick();
            }
        }
        Some(f)
    }
}

impl Read for RingStreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.cur.is_empty() {
            match self.next_frame() {
                Some(f) => self.cur = f,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        Ok(n)
    }
}

/// Outgoing bytes, cut into frames and queued on ring `tag % N`.
pub struct RingStreamWriter {
    buf: BytesMut,
    shared: Arc<StreamShared>,
}

impl RingStreamWriter {
    /// Queues one whole frame on the ring for its tag.
    pub fn send_frame(&self, frame: Bytes) -> io::Result<()> {
        if self.shared.dead.load(Ordering::SeqCst) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if frame.len() < 7 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "frame below 7 bytes",
            ));
        }
        let tag = u16::from_le_bytes([frame[5], frame[6]]);
        let n = self.shared.rings.len();
        let r = &self.shared.rings[usize::from(tag) % n];
        lock(&r.outgoing).push_back(frame);
        r.evtchn.kick();
        Ok(())
    }

    /// Frames queued and not yet in a ring.
    pub fn queued(&self) -> usize {
        self.shared
            .rings
            .iter()
            .map(|r| lock(&r.outgoing).len())
            .sum()
    }
}

impl Write for RingStreamWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.shared.dead.load(Ordering::SeqCst) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        self.buf.extend_from_slice(data);
        while self.buf.len() >= 7 {
            let size =
                u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
            if size < 7 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "frame size below 7",
                ));
            }
            if self.buf.len() < size {
                break;
            }
            let f = self.buf.split_to(size).freeze();
            self.send_frame(f)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Stops a stream (both directions); cheap to clone.
#[derive(Clone)]
pub struct RingStreamCloser(Arc<StreamShared>);

impl RingStreamCloser {
    /// Stops the pumps; the reader sees EOF, the writer `BrokenPipe`.
    pub fn close(&self) {
        self.0.kill(None);
    }

    /// Whether the stream has stopped (closed, or the peer broke the protocol).
    pub fn is_closed(&self) -> bool {
        self.0.dead.load(Ordering::SeqCst)
    }

    /// Whether every pump has exited and released its ring.
    pub fn is_released(&self) -> bool {
        self.0.live_pumps.load(Ordering::SeqCst) == 0
    }

    /// Full-ring counters.
    pub fn stats(&self) -> StreamStats {
        StreamStats {
            send_waits: self.0.send_waits.load(Ordering::Relaxed),
            recv_stalls: self.0.recv_stalls.load(Ordering::Relaxed),
        }
    }

    /// Why the stream ended, if the peer broke the protocol.
    pub fn reason(&self) -> Option<String> {
        lock(&self.0.reason).clone()
    }
}

impl std::fmt::Debug for RingStreamCloser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingStreamCloser")
            .field("closed", &self.is_closed())
            .finish()
    }
}
