//! `ring:PATH`: 9pfs rings in one shared file (a `/dev/shm` file, a memfd, any file both
//! sides can map), between two processes on one host — or a guest whose ivshmem BAR is backed
//! by that file.
//!
//! # File layout (version 1, every value little-endian)
//!
//! ```text
//! page 0: file header
//!     0   8  magic "ENVOYRNG"
//!     8   4  version = 1
//!    12   4  nrings (1..=63)
//!    16   4  ring_order (0..=9; chosen by whoever creates the file)
//!    20   4  header_pages = 1
//!    24   4  attach_seq      futex word: a client bumps it after attaching or detaching
//!    28   4  attach_waiters  (waiter count for attach_seq; see bell::FutexBell)
//!    32  32  reserved, zero
//!    64 + 64*i: control block of ring i
//!         0  client_state   0 FREE, 1 ATTACHED, 2 DETACHED, 3 CLAIMING
//!         4  server_state   0 IDLE, 1 SERVING, 2 CLOSED
//!         8  to_backend     futex doorbell (sequence, waiters): the client rings the server
//!        16  to_frontend    futex doorbell (sequence, waiters): the server rings the client
//!        24  client_pid     the claiming process (0 = unknown, e.g. another pid namespace)
//!        28  sessions       attachments served so far (information)
//!        32  to_backend_space   futex doorbell: the client freed reply space
//!        40  to_frontend_space  futex doorbell: the server freed request space
//! ring i at byte 4096 * (1 + i * (1 + 2^ring_order)):
//!     one interface page (the Xen `xen_9pfs_data_intf`, see crate::layout; `ref[k] = k`)
//!     2^ring_order data pages (in half, then out half)
//! ```
//!
//! # Who does what
//!
//! * The **creator** (envoyd when the file does not exist, or a VM manager) sizes the file and
//!   writes the header, the magic last.
//! * A **client** claims a FREE ring whose server side is IDLE (`FREE → CLAIMING` by
//!   compare-and-swap), initialises its interface page as a Xen frontend does (indexes 0,
//!   `ring_order`, refs), records its pid, sets `ATTACHED` and bumps `attach_seq`. It
//!   detaches by setting `DETACHED` and ringing both doorbells.
//! * The **server** waits on `attach_seq` (futex, in slices) and serves each ATTACHED ring on
//!   its own connection; when the connection ends (client detached, hostile indexes, server
//!   shutdown) it sets `CLOSED`. A ring that is DETACHED and CLOSED is recycled to FREE/IDLE
//!   by the server's scan. A client whose pid no longer exists is treated as detached.
//!
//! # Doorbells
//!
//! Eventfds cannot travel through a file, and a Unix socket beside the file would be a second
//! rendezvous to secure and clean up. Instead each ring has two futex doorbells in the file
//! ([`crate::bell::FutexBell`]): after a short spin a waiter sleeps in `FUTEX_WAIT` on a shared
//! mapping, and the peer's `FUTEX_WAKE` reaches it across processes. (Across a VM boundary an
//! ivshmem doorbell or Xen event channel takes this role through the same `Doorbell` trait.)
//!
//! A client that cannot make a `FUTEX_WAKE` reach the server (a guest seeing the file as an
//! ivshmem BAR: futexes do not cross the VM boundary) writes `client_pid` 0 and only bumps
//! the sequence words; the server then sleeps at most [`POLL_UNKNOWN_PID`] between looks at
//! that ring. The `*_space` words are an optimisation: a client may ring `to_backend` for
//! everything.
//!
//! Every value in the file is a hint from a possibly hostile peer: the server validates ring
//! indexes on every use, treats states as requests, and only this file's rings are affected.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::bell::{Doorbell, FutexBell, Waiter};
use crate::layout::{RingOrder, XEN_PAGE_SIZE};
use crate::mem::SharedMem;
use crate::ring::RingMem;
use crate::stream::{Closed, RingReader, RingWriter};
use crate::RingError;

/// File magic.
pub const MAGIC: [u8; 8] = *b"ENVOYRNG";
/// Layout version.
pub const VERSION: u32 = 1;
/// Most rings in one file (control blocks in the header page).
pub const MAX_RINGS: u32 = 63;

const NRINGS: usize = 12;
const ORDER: usize = 16;
const HEADER_PAGES: usize = 20;
const ATTACH_SEQ: usize = 24;
const CTL: usize = 64;
const CTL_CLIENT: usize = 0;
const CTL_SERVER: usize = 4;
const CTL_TO_BACKEND: usize = 8;
const CTL_TO_FRONTEND: usize = 16;
const CTL_PID: usize = 24;
const CTL_SESSIONS: usize = 28;
/// Longest sleep of a server thread on a ring whose client wrote `client_pid` 0.
pub const POLL_UNKNOWN_PID: Duration = Duration::from_micros(250);
const CTL_TO_BACKEND_SPACE: usize = 32;
const CTL_TO_FRONTEND_SPACE: usize = 40;

/// `client_state` values.
pub mod client_state {
    /// Nobody uses the ring.
    pub const FREE: u32 = 0;
    /// A client is attached and the interface page is initialised.
    pub const ATTACHED: u32 = 1;
    /// The client left.
    pub const DETACHED: u32 = 2;
    /// A client is initialising the interface page.
    pub const CLAIMING: u32 = 3;
}

/// `server_state` values.
pub mod server_state {
    /// Not serving; a client may claim the ring.
    pub const IDLE: u32 = 0;
    /// Serving the attached client.
    pub const SERVING: u32 = 1;
    /// Finished with the attachment (the client must detach).
    pub const CLOSED: u32 = 2;
}

/// A mapped ring file.
#[derive(Debug, Clone)]
pub struct RingFile {
    path: PathBuf,
    mem: SharedMem,
    nrings: u32,
    order: RingOrder,
}

/// Bytes of a file with `nrings` rings of `order`.
pub fn file_len(nrings: u32, order: RingOrder) -> usize {
    XEN_PAGE_SIZE * (1 + nrings as usize * (1 + order.data_pages()))
}

impl RingFile {
    /// Creates (or overwrites) `path` with `nrings` free rings of `order`.
    pub fn create(path: &Path, nrings: u32, order: RingOrder) -> Result<RingFile, RingError> {
        if nrings == 0 || nrings > MAX_RINGS {
            return Err(RingError::BadFile(format!(
                "{nrings} rings asked for; 1 to {MAX_RINGS} fit"
            )));
        }
        let ferr = |source| RingError::File {
            path: path.to_path_buf(),
            source,
        };
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(ferr)?;
        let len = file_len(nrings, order);
        f.set_len(len as u64).map_err(ferr)?;
        let mem = SharedMem::map_file(&f, 0, len)?;
        mem.write(8, &VERSION.to_le_bytes())?;
        mem.write(NRINGS, &nrings.to_le_bytes())?;
        mem.write(ORDER, &order.get().to_le_bytes())?;
        mem.write(HEADER_PAGES, &1u32.to_le_bytes())?;
        std::sync::atomic::fence(Ordering::SeqCst);
        mem.write(0, &MAGIC)?;
        Ok(RingFile {
            path: path.to_path_buf(),
            mem,
            nrings,
            order,
        })
    }

    /// Opens and validates an existing ring file.
    pub fn open(path: &Path) -> Result<RingFile, RingError> {
        let ferr = |source| RingError::File {
            path: path.to_path_buf(),
            source,
        };
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(ferr)?;
        let flen = f.metadata().map_err(ferr)?.len();
        if flen < XEN_PAGE_SIZE as u64 {
            return Err(RingError::BadFile(format!(
                "{} is {flen} bytes, shorter than the header page",
                path.display()
            )));
        }
        let head = SharedMem::map_file(&f, 0, XEN_PAGE_SIZE)?;
        let mut h = [0u8; 24];
        head.read(0, &mut h)?;
        let word = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        if h[..8] != MAGIC {
            return Err(RingError::BadFile(format!(
                "{} is not an envoy ring file (no ENVOYRNG magic)",
                path.display()
            )));
        }
        if word(8) != VERSION || word(HEADER_PAGES) != 1 {
            return Err(RingError::BadFile(format!(
                "{}: unsupported version {} / header pages {}",
                path.display(),
                word(8),
                word(HEADER_PAGES)
            )));
        }
        let nrings = word(NRINGS);
        if nrings == 0 || nrings > MAX_RINGS {
            return Err(RingError::BadFile(format!("{nrings} rings in the header")));
        }
        let order = RingOrder::new(word(ORDER))?;
        let len = file_len(nrings, order);
        if flen < len as u64 {
            return Err(RingError::BadFile(format!(
                "{} is {flen} bytes; its header needs {len}",
                path.display()
            )));
        }
        let mem = SharedMem::map_file(&f, 0, len)?;
        Ok(RingFile {
            path: path.to_path_buf(),
            mem,
            nrings,
            order,
        })
    }

    /// Opens `path` if it is a ring file, else creates it with `nrings` rings of `order`.
    pub fn open_or_create(
        path: &Path,
        nrings: u32,
        order: RingOrder,
    ) -> Result<RingFile, RingError> {
        if path.exists() {
            Self::open(path)
        } else {
            Self::create(path, nrings, order)
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of rings.
    pub fn nrings(&self) -> u32 {
        self.nrings
    }

    /// Ring order of every ring.
    pub fn order(&self) -> RingOrder {
        self.order
    }

    fn ctl(&self, i: u32, field: usize) -> Result<&AtomicU32, RingError> {
        if i >= self.nrings {
            return Err(RingError::BadFile(format!("no ring {i}")));
        }
        self.mem.atomic_u32(CTL + 64 * i as usize + field)
    }

    fn ctl_load(&self, i: u32, field: usize) -> Result<u32, RingError> {
        Ok(u32::from_le(self.ctl(i, field)?.load(Ordering::Acquire)))
    }

    fn ctl_store(&self, i: u32, field: usize, v: u32) -> Result<(), RingError> {
        self.ctl(i, field)?.store(v.to_le(), Ordering::Release);
        Ok(())
    }

    /// `(client_state, server_state)` of ring `i`.
    pub fn states(&self, i: u32) -> Result<(u32, u32), RingError> {
        Ok((self.ctl_load(i, CTL_CLIENT)?, self.ctl_load(i, CTL_SERVER)?))
    }

    fn ring_mem(&self, i: u32) -> Result<(SharedMem, SharedMem), RingError> {
        if i >= self.nrings {
            return Err(RingError::BadFile(format!("no ring {i}")));
        }
        let base = XEN_PAGE_SIZE * (1 + i as usize * (1 + self.order.data_pages()));
        Ok((
            self.mem.slice(base, XEN_PAGE_SIZE)?,
            self.mem
                .slice(base + XEN_PAGE_SIZE, self.order.data_len())?,
        ))
    }

    /// Ring `i` as raw memory (tests; hostile-peer simulations).
    pub fn ring(&self, i: u32) -> Result<RingMem, RingError> {
        let (intf, data) = self.ring_mem(i)?;
        RingMem::with_order(intf, data, self.order)
    }

    fn bell(&self, i: u32, backend: bool) -> Result<FutexBell, RingError> {
        let base = CTL + 64 * i as usize;
        let (b, f) = (base + CTL_TO_BACKEND, base + CTL_TO_FRONTEND);
        let (bs, fs) = (base + CTL_TO_BACKEND_SPACE, base + CTL_TO_FRONTEND_SPACE);
        if backend {
            FutexBell::new(self.mem.clone(), b, f)?.with_space(bs, fs)
        } else {
            FutexBell::new(self.mem.clone(), f, b)?.with_space(fs, bs)
        }
    }

    /// Rings every doorbell of ring `i` in both directions (state changes: whoever waits
    /// for whatever re-checks).
    fn wake_all(&self, i: u32) {
        for backend in [true, false] {
            if let Ok(b) = self.bell(i, backend) {
                let _ = b.notify();
                let _ = b.notify_space();
            }
        }
    }

    fn bump_attach(&self) -> Result<(), RingError> {
        self.mem
            .atomic_u32(ATTACH_SEQ)?
            .fetch_add(1, Ordering::SeqCst);
        if self.mem.atomic_u32(ATTACH_SEQ + 4)?.load(Ordering::SeqCst) != 0 {
            self.mem.futex_wake(ATTACH_SEQ)?;
        }
        Ok(())
    }

    // ---- client (frontend) side ----

    /// Claims the first free ring and attaches to it as the frontend.
    pub fn attach(&self, waiter: Waiter) -> Result<FrontendRing, RingError> {
        for i in 0..self.nrings {
            match self.attach_ring(i, waiter) {
                Ok(r) => return Ok(r),
                Err(RingError::NoFreeRing) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(RingError::NoFreeRing)
    }

    /// Claims ring `i` (`NoFreeRing` if it is taken or not yet recycled).
    pub fn attach_ring(&self, i: u32, waiter: Waiter) -> Result<FrontendRing, RingError> {
        if self.ctl_load(i, CTL_SERVER)? != server_state::IDLE {
            return Err(RingError::NoFreeRing);
        }
        let c = self.ctl(i, CTL_CLIENT)?;
        if c.compare_exchange(
            client_state::FREE.to_le(),
            client_state::CLAIMING.to_le(),
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
        {
            return Err(RingError::NoFreeRing);
        }
        let (intf, data) = self.ring_mem(i)?;
        let refs: Vec<u32> = (0..self.order.data_pages() as u32).collect();
        let ring = RingMem::init(intf, data, self.order, &refs)?;
        self.ctl_store(i, CTL_PID, std::process::id())?;
        self.ctl_store(i, CTL_CLIENT, client_state::ATTACHED)?;
        self.bump_attach()?;
        let (prod, cons) = ring.frontend()?;
        let bell: Arc<dyn Doorbell> = Arc::new(self.bell(i, false)?);
        let detached = Arc::new(AtomicBool::new(false));
        let closed: Closed = {
            let (f, d) = (self.clone(), Arc::clone(&detached));
            Arc::new(move || {
                d.load(Ordering::Acquire)
                    || f.ctl_load(i, CTL_SERVER)
                        .map_or(true, |s| s == server_state::CLOSED)
            })
        };
        Ok(FrontendRing {
            index: i,
            reader: Some(RingReader::new(
                cons,
                Arc::clone(&bell),
                waiter,
                Arc::clone(&closed),
            )),
            writer: Some(RingWriter::new(prod, Arc::clone(&bell), waiter, closed)),
            guard: Arc::new(Detach {
                file: self.clone(),
                index: i,
                detached,
            }),
        })
    }

    // ---- server (backend) side ----

    /// Server start-up: forget the server state of a previous run (rings still ATTACHED are
    /// served again; the client's next request gets "Tversion first"), free DETACHED rings.
    pub fn reset_server(&self) -> Result<(), RingError> {
        for i in 0..self.nrings {
            self.ctl_store(i, CTL_SERVER, server_state::IDLE)?;
            if self.ctl_load(i, CTL_CLIENT)? == client_state::DETACHED {
                self.ctl_store(i, CTL_CLIENT, client_state::FREE)?;
            }
        }
        Ok(())
    }

    /// One scan: recycles finished rings, marks clients whose process is gone as detached,
    /// and returns the first newly ATTACHED ring (now SERVING), if any.
    pub fn poll_attach(&self) -> Result<Option<u32>, RingError> {
        let mut found = None;
        for i in 0..self.nrings {
            let (c, s) = self.states(i)?;
            match (c, s) {
                (client_state::ATTACHED, server_state::IDLE) if found.is_none() => {
                    self.ctl_store(i, CTL_SERVER, server_state::SERVING)?;
                    let n = self.ctl_load(i, CTL_SESSIONS)?;
                    self.ctl_store(i, CTL_SESSIONS, n.wrapping_add(1))?;
                    found = Some(i);
                }
                (client_state::ATTACHED, server_state::SERVING) => {
                    let pid = self.ctl_load(i, CTL_PID)?;
                    if pid != 0 && !process_alive(pid) {
                        self.ctl_store(i, CTL_CLIENT, client_state::DETACHED)?;
                        // Wakes our own serving threads, which then see the detach.
                        self.wake_all(i);
                    }
                }
                (client_state::DETACHED, server_state::CLOSED)
                | (client_state::DETACHED, server_state::IDLE) => {
                    self.ctl_store(i, CTL_SERVER, server_state::IDLE)?;
                    self.ctl_store(i, CTL_CLIENT, client_state::FREE)?;
                }
                _ => {}
            }
        }
        Ok(found)
    }

    /// Blocks until a ring is newly attached (→ `Some(index)`, now SERVING), `stop` is set, or
    /// `timeout` passes (→ `None`).
    pub fn wait_attach(
        &self,
        stop: &AtomicBool,
        timeout: Duration,
    ) -> Result<Option<u32>, RingError> {
        let deadline = std::time::Instant::now() + timeout;
        let seq = self.mem.atomic_u32(ATTACH_SEQ)?;
        let waiters = self.mem.atomic_u32(ATTACH_SEQ + 4)?;
        loop {
            if stop.load(Ordering::SeqCst) {
                return Ok(None);
            }
            waiters.fetch_add(1, Ordering::SeqCst);
            let s = seq.load(Ordering::SeqCst);
            let r = self.poll_attach();
            let now = std::time::Instant::now();
            let r = match r {
                Ok(None) if now < deadline => {
                    // Re-scan at least every 100 ms (dead clients, recycling, stop flag).
                    let t = deadline.duration_since(now).min(Duration::from_millis(100));
                    self.mem.futex_wait(ATTACH_SEQ, s, t).map(|_| None)
                }
                other => other.map(Some),
            };
            waiters.fetch_sub(1, Ordering::SeqCst);
            match r? {
                Some(found) => return Ok(found),
                None => continue,
            }
        }
    }

    /// The backend ends of ring `i` (after [`RingFile::wait_attach`] returned it): a reader
    /// of requests, a writer of replies, and the closer that ends the attachment.
    pub fn serve(&self, i: u32, mut waiter: Waiter) -> Result<BackendRing, RingError> {
        if self.ctl_load(i, CTL_PID)? == 0 {
            // A client that cannot reach our futexes (a guest behind ivshmem-plain) only bumps
            // the sequence words: look at the ring at least every POLL_UNKNOWN_PID.
            waiter.slice = waiter.slice.min(POLL_UNKNOWN_PID);
        }
        let (intf, data) = self.ring_mem(i)?;
        let ring = RingMem::with_order(intf, data, self.order)?;
        let (cons, prod) = ring.backend()?;
        let bell: Arc<dyn Doorbell> = Arc::new(self.bell(i, true)?);
        let stop = Arc::new(AtomicBool::new(false));
        let closed: Closed = {
            let (f, st) = (self.clone(), Arc::clone(&stop));
            Arc::new(move || {
                st.load(Ordering::Acquire)
                    || f.ctl_load(i, CTL_CLIENT)
                        .map_or(true, |c| c != client_state::ATTACHED)
            })
        };
        Ok(BackendRing {
            index: i,
            reader: RingReader::new(cons, Arc::clone(&bell), waiter, Arc::clone(&closed))
                .with_msize_limit(self.order.ring_size()),
            writer: RingWriter::new(prod, Arc::clone(&bell), waiter, closed),
            closer: BackendCloser {
                file: self.clone(),
                index: i,
                stop,
            },
        })
    }
}

fn process_alive(pid: u32) -> bool {
    let Ok(p) = i32::try_from(pid) else {
        return true;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// The server's ends of one attached ring.
#[derive(Debug)]
pub struct BackendRing {
    /// Ring number in the file.
    pub index: u32,
    /// Requests.
    pub reader: RingReader,
    /// Replies.
    pub writer: RingWriter,
    /// Ends the attachment.
    pub closer: BackendCloser,
}

/// Ends the server's side of an attachment: marks it CLOSED and wakes both ends.
#[derive(Clone)]
pub struct BackendCloser {
    file: RingFile,
    index: u32,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for BackendCloser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendCloser")
            .field("index", &self.index)
            .finish()
    }
}

impl BackendCloser {
    /// Marks the attachment CLOSED (the client sees it and detaches; the file's scan then
    /// recycles the ring) and wakes the client and this side's own waiting threads.
    pub fn close(&self) {
        self.stop.store(true, Ordering::Release);
        let _ = self
            .file
            .ctl_store(self.index, CTL_SERVER, server_state::CLOSED);
        self.file.wake_all(self.index);
        let _ = self.file.bump_attach();
    }
}

/// The client's ends of one attached ring; dropping it (or [`FrontendRing::detach`]) detaches.
#[derive(Debug)]
pub struct FrontendRing {
    /// Ring number in the file.
    pub index: u32,
    reader: Option<RingReader>,
    writer: Option<RingWriter>,
    guard: Arc<Detach>,
}

impl FrontendRing {
    /// The byte streams (replies in, requests out) for a 9P client, and a guard that detaches
    /// the ring when dropped — keep it as long as the client runs.
    pub fn into_parts(mut self) -> Result<(RingReader, RingWriter, DetachGuard), RingError> {
        match (self.reader.take(), self.writer.take()) {
            (Some(r), Some(w)) => Ok((r, w, DetachGuard(Arc::clone(&self.guard)))),
            _ => Err(RingError::Closed),
        }
    }

    /// Detaches now.
    pub fn detach(self) {
        self.guard.detach();
    }
}

/// Detaches the ring when dropped.
#[derive(Debug)]
pub struct DetachGuard(Arc<Detach>);

impl DetachGuard {
    /// Detaches now (idempotent).
    pub fn detach(&self) {
        self.0.detach();
    }
}

struct Detach {
    file: RingFile,
    index: u32,
    detached: Arc<AtomicBool>,
}

impl std::fmt::Debug for Detach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detach")
            .field("index", &self.index)
            .finish()
    }
}

impl Detach {
    fn detach(&self) {
        if self.detached.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self
            .file
            .ctl_store(self.index, CTL_CLIENT, client_state::DETACHED);
        // The server's threads and our own (a reader waiting for a reply) re-check.
        self.file.wake_all(self.index);
        let _ = self.file.bump_attach();
    }
}

impl Drop for Detach {
    fn drop(&mut self) {
        self.detach();
    }
}
