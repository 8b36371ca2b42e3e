//! The `ivshmem:` endpoint: envoy's shared-memory rings seen by a guest through QEMU's
//! `ivshmem-plain` PCI device.
//!
//! The host runs `envoyd --listen ring:/dev/shm/NAME` and QEMU maps the same file into the guest
//! as BAR 2 of an ivshmem device (vendor `0x1af4`, device `0x1110`):
//!
//! ```text
//! -object memory-backend-file,id=hostmem,share=on,mem-path=/dev/shm/NAME,size=16M
//! -device ivshmem-plain,memdev=hostmem
//! ```
//!
//! (a PCI BAR is a power of two: the file may be longer than its rings, never shorter). In the
//! guest, `/sys/bus/pci/devices/<bdf>/resource2` maps those pages; envoy-shim maps it and is the
//! *frontend* of one ring of the `ring:PATH` file (layout: `envoy_ring::file`), exactly as a
//! process on the host would be, with two differences a VM boundary forces:
//!
//! * **No futex across the boundary.** A `FUTEX_WAKE` in the guest kernel cannot wake a host
//!   thread, and ivshmem-plain has no interrupts. This side therefore polls ([`PollBell`]:
//!   short sleeps between looks at the indexes) and, to notify, only bumps the peer's sequence
//!   word in the control block; envoyd's waiter sees the new sequence before it sleeps, or at
//!   the end of its sleep slice.
//! * **No pid.** The control block's `client_pid` is 0 ("unknown"): a guest pid means nothing
//!   on the host, whose dead-client check would otherwise detach a live guest.
//!
//! Claiming a ring (control block of ring `i` at byte `64 + 64 * i` of the header page):
//! `server_state` (+4) must be IDLE; `client_state` (+0) goes FREE → CLAIMING by
//! compare-and-swap; the ring's interface page is initialised like a Xen frontend does
//! (`envoy_ring::RingMem::init`); `client_pid` (+24) = 0; `client_state` = ATTACHED; the
//! header's `attach_seq` (byte 24) is incremented. Detaching sets DETACHED and bumps
//! `to_backend` (+8). A connection is over when the server marks the ring CLOSED.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use envoy_ring::file::{client_state, file_len, server_state, MAGIC, MAX_RINGS, VERSION};
use envoy_ring::stream::Closed;
use envoy_ring::{
    Doorbell, RingError, RingMem, RingOrder, RingReader, RingWriter, SharedMem, Waiter,
    XEN_PAGE_SIZE,
};
use thiserror::Error;

/// PCI vendor id of ivshmem (Red Hat, Inc.).
pub const IVSHMEM_VENDOR: u16 = 0x1af4;
/// PCI device id of ivshmem.
pub const IVSHMEM_DEVICE: u16 = 0x1110;
/// Where Linux lists PCI devices.
pub const PCI_DEVICES_DIR: &str = "/sys/bus/pci/devices";

// Header page (envoy_ring::file, version 1).
const H_VERSION: usize = 8;
const H_NRINGS: usize = 12;
const H_ORDER: usize = 16;
const H_HEADER_PAGES: usize = 20;
const H_ATTACH_SEQ: usize = 24;
// Control block of ring i at CTL + 64 * i.
const CTL: usize = 64;
const CTL_CLIENT: usize = 0;
const CTL_SERVER: usize = 4;
const CTL_TO_BACKEND: usize = 8;
const CTL_PID: usize = 24;

/// How long the guest sleeps between looks at a ring it waits on. Short: each look is a few
/// loads, and there is no interrupt to wait for instead.
pub const POLL_INTERVAL: Duration = Duration::from_micros(50);

/// Why the shared memory could not be used.
#[derive(Debug, Error)]
pub enum IvshmemError {
    /// No ivshmem device in the guest.
    #[error("no ivshmem PCI device ({IVSHMEM_VENDOR:04x}:{IVSHMEM_DEVICE:04x}) under {0} (is -device ivshmem-plain on the VM?)")]
    NoDevice(String),
    /// Opening, enabling or sizing the BAR (or file) failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The memory holds no usable ring file.
    #[error("{path}: {reason}")]
    BadLayout {
        /// The mapped file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Every ring is in use.
    #[error("every ring in {0} is in use (or not yet recycled by envoyd)")]
    NoFreeRing(PathBuf),
    /// A ring operation failed.
    #[error("ring in {path}: {source}")]
    Ring {
        /// The mapped file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: RingError,
    },
}

/// Finds the BAR-2 resource file of the first ivshmem device under `dir` (normally
/// [`PCI_DEVICES_DIR`]), by `vendor`/`device` ids, in name order.
pub fn find_device(dir: &Path) -> Result<PathBuf, IvshmemError> {
    let none = || IvshmemError::NoDevice(dir.display().to_string());
    let id = |p: PathBuf| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| u16::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok())
    };
    let mut devs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|_| none())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            id(p.join("vendor")) == Some(IVSHMEM_VENDOR)
                && id(p.join("device")) == Some(IVSHMEM_DEVICE)
        })
        .collect();
    devs.sort();
    devs.into_iter().next().ok_or_else(none)
}

/// Makes sure the device decodes its memory BAR (`enable` = 1); firmware usually did already.
fn enable_device(dev: &Path) -> Result<(), IvshmemError> {
    let path = dev.join("enable");
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim() != "0" => Ok(()),
        Ok(_) => std::fs::write(&path, b"1").map_err(|source| IvshmemError::Io {
            what: "enabling",
            path,
            source,
        }),
        // No enable file (not sysfs): nothing to do.
        Err(_) => Ok(()),
    }
}

/// A polling doorbell for a frontend across a VM boundary: [`Doorbell::notify`] bumps the
/// backend's futex sequence word (no wake-up call: it could not cross the boundary) and
/// [`Doorbell::wait`] sleeps [`POLL_INTERVAL`] slices.
#[derive(Debug, Clone)]
pub struct PollBell {
    mem: SharedMem,
    to_backend: usize,
}

impl Doorbell for PollBell {
    fn notify(&self) -> Result<(), RingError> {
        self.mem
            .atomic_u32(self.to_backend)?
            .fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn wait(&self, ready: &mut dyn FnMut() -> bool, timeout: Duration) -> Result<(), RingError> {
        if !ready() {
            std::thread::sleep(timeout.min(POLL_INTERVAL));
        }
        Ok(())
    }
}

/// One mapped ring file (an ivshmem BAR or, for tests, the file itself).
#[derive(Debug, Clone)]
pub struct SharedRings {
    path: PathBuf,
    mem: SharedMem,
    nrings: u32,
    order: RingOrder,
}

fn le(mem: &SharedMem, off: usize) -> Result<u32, RingError> {
    Ok(u32::from_le(mem.atomic_u32(off)?.load(Ordering::Acquire)))
}

impl SharedRings {
    /// Maps `path` (a `resource2` file or a ring file) and validates its header.
    pub fn open(path: &Path) -> Result<SharedRings, IvshmemError> {
        let io_err = |what, source| IvshmemError::Io {
            what,
            path: path.to_path_buf(),
            source,
        };
        let bad = |reason: String| IvshmemError::BadLayout {
            path: path.to_path_buf(),
            reason,
        };
        let ring_err = |source| IvshmemError::Ring {
            path: path.to_path_buf(),
            source,
        };
        let f: File = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| io_err("opening", e))?;
        let flen = f.metadata().map_err(|e| io_err("sizing", e))?.len();
        if flen < XEN_PAGE_SIZE as u64 {
            return Err(bad(format!("{flen} bytes, shorter than the header page")));
        }
        let head = SharedMem::map_file(&f, 0, XEN_PAGE_SIZE).map_err(ring_err)?;
        let mut magic = [0u8; 8];
        head.read(0, &mut magic).map_err(ring_err)?;
        if magic != MAGIC {
            return Err(bad(
                "no envoy ring file magic (is envoyd serving ring: on the file behind this memory?)"
                    .into(),
            ));
        }
        let word = |o| le(&head, o).map_err(ring_err);
        if word(H_VERSION)? != VERSION || word(H_HEADER_PAGES)? != 1 {
            return Err(bad(format!(
                "unsupported version {} / header pages {}",
                word(H_VERSION)?,
                word(H_HEADER_PAGES)?
            )));
        }
        let nrings = word(H_NRINGS)?;
        if nrings == 0 || nrings > MAX_RINGS {
            return Err(bad(format!("{nrings} rings in the header")));
        }
        let order = RingOrder::new(word(H_ORDER)?).map_err(ring_err)?;
        let len = file_len(nrings, order);
        if flen < len as u64 {
            return Err(bad(format!("{flen} bytes; the header needs {len}")));
        }
        let mem = SharedMem::map_file(&f, 0, len).map_err(ring_err)?;
        Ok(SharedRings {
            path: path.to_path_buf(),
            mem,
            nrings,
            order,
        })
    }

    /// Number of rings.
    pub fn nrings(&self) -> u32 {
        self.nrings
    }

    /// Bytes per direction of each ring (the largest 9P message that fits).
    pub fn ring_bytes(&self) -> usize {
        self.order.data_len() / 2
    }

    fn ctl(&self, i: u32, field: usize) -> Result<&AtomicU32, RingError> {
        self.mem.atomic_u32(CTL + 64 * i as usize + field)
    }

    fn ring_err(&self, source: RingError) -> IvshmemError {
        IvshmemError::Ring {
            path: self.path.clone(),
            source,
        }
    }

    /// Claims the first free ring and returns the frontend's byte streams.
    pub fn attach(&self) -> Result<crate::endpoint::Connection, IvshmemError> {
        for i in 0..self.nrings {
            if let Some(c) = self.try_attach(i).map_err(|e| self.ring_err(e))? {
                return Ok(c);
            }
        }
        Err(IvshmemError::NoFreeRing(self.path.clone()))
    }

    fn try_attach(&self, i: u32) -> Result<Option<crate::endpoint::Connection>, RingError> {
        if u32::from_le(self.ctl(i, CTL_SERVER)?.load(Ordering::Acquire)) != server_state::IDLE {
            return Ok(None);
        }
        if self
            .ctl(i, CTL_CLIENT)?
            .compare_exchange(
                client_state::FREE.to_le(),
                client_state::CLAIMING.to_le(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return Ok(None);
        }
        let base = XEN_PAGE_SIZE * (1 + i as usize * (1 + self.order.data_pages()));
        let intf = self.mem.slice(base, XEN_PAGE_SIZE)?;
        let data = self
            .mem
            .slice(base + XEN_PAGE_SIZE, self.order.data_len())?;
        let refs: Vec<u32> = (0..self.order.data_pages() as u32).collect();
        let ring = RingMem::init(intf, data, self.order, &refs)?;
        self.ctl(i, CTL_PID)?.store(0, Ordering::Release);
        self.ctl(i, CTL_CLIENT)?
            .store(client_state::ATTACHED.to_le(), Ordering::Release);
        self.mem
            .atomic_u32(H_ATTACH_SEQ)?
            .fetch_add(1, Ordering::SeqCst);
        let (prod, cons) = ring.frontend()?;
        let to_backend = CTL + 64 * i as usize + CTL_TO_BACKEND;
        let bell: Arc<dyn Doorbell> = Arc::new(PollBell {
            mem: self.mem.clone(),
            to_backend,
        });
        let detach = Arc::new(RingDetach {
            rings: self.clone(),
            index: i,
            detached: AtomicBool::new(false),
        });
        let closed: Closed = {
            let d = Arc::clone(&detach);
            Arc::new(move || d.is_over())
        };
        let waiter = Waiter::new(Duration::from_micros(20), POLL_INTERVAL);
        let reader = RingReader::new(cons, Arc::clone(&bell), waiter, Arc::clone(&closed));
        let writer = RingWriter::new(prod, bell, waiter, closed);
        Ok(Some(crate::endpoint::Connection {
            reader: Box::new(reader),
            writer: Box::new(writer),
            closer: crate::endpoint::Closer::Ring(detach),
        }))
    }
}

/// Detaches the frontend from its ring: on [`RingDetach::detach`] (the connection's closer)
/// and when the last holder drops it.
#[derive(Debug)]
pub struct RingDetach {
    rings: SharedRings,
    index: u32,
    detached: AtomicBool,
}

impl RingDetach {
    /// Marks the ring DETACHED (once) and nudges the backend; blocked readers and writers on
    /// this side see the connection closed.
    pub fn detach(&self) {
        if self.detached.swap(true, Ordering::AcqRel) {
            return;
        }
        let r = (|| -> Result<(), RingError> {
            self.rings
                .ctl(self.index, CTL_CLIENT)?
                .store(client_state::DETACHED.to_le(), Ordering::Release);
            self.rings
                .ctl(self.index, CTL_TO_BACKEND)?
                .fetch_add(1, Ordering::SeqCst);
            Ok(())
        })();
        if let Err(e) = r {
            tracing::warn!(error = %e, ring = self.index, "detaching the ring failed");
        }
    }

    /// Whether this side detached or the server closed the ring.
    fn is_over(&self) -> bool {
        self.detached.load(Ordering::Acquire)
            || self.rings.ctl(self.index, CTL_SERVER).map_or(true, |s| {
                u32::from_le(s.load(Ordering::Acquire)) == server_state::CLOSED
            })
    }
}

impl Drop for RingDetach {
    fn drop(&mut self) {
        self.detach();
    }
}

/// Opens the ring memory named by an `ivshmem:` endpoint: `auto` finds the first ivshmem
/// device's `resource2`, a PCI address (`0000:00:04.0`) names one, anything else is a path to
/// map (a `resource2` file or the host's ring file itself).
pub fn open(spec: &str) -> Result<SharedRings, IvshmemError> {
    let dev = if spec == "auto" {
        Some(find_device(Path::new(PCI_DEVICES_DIR))?)
    } else if !spec.contains('/') {
        Some(Path::new(PCI_DEVICES_DIR).join(spec))
    } else {
        None
    };
    match dev {
        Some(d) => {
            enable_device(&d)?;
            SharedRings::open(&d.join("resource2"))
        }
        None => SharedRings::open(Path::new(spec)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_ring::file::RingFile;
    use std::io::{Read, Write};

    fn ring_file(dir: &Path) -> (PathBuf, RingFile) {
        let p = dir.join("rings");
        let f = RingFile::create(&p, 2, RingOrder::new(1).unwrap()).unwrap();
        (p, f)
    }

    #[test]
    fn find_device_by_ids_returns_resource_dir() {
        let dir = tempfile::tempdir().unwrap();
        for (bdf, v, d) in [
            ("0000:00:02.0", "0x1234", "0x1111"),
            ("0000:00:04.0", "0x1af4", "0x1110\n"),
            ("0000:00:03.0", "0x1af4", "0x1000"),
        ] {
            let p = dir.path().join(bdf);
            std::fs::create_dir(&p).unwrap();
            std::fs::write(p.join("vendor"), v).unwrap();
            std::fs::write(p.join("device"), d).unwrap();
        }
        assert_eq!(
            find_device(dir.path()).unwrap(),
            dir.path().join("0000:00:04.0")
        );
        std::fs::remove_dir_all(dir.path().join("0000:00:04.0")).unwrap();
        assert!(matches!(
            find_device(dir.path()),
            Err(IvshmemError::NoDevice(_))
        ));
    }

    #[test]
    fn open_not_a_ring_file_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("zeros");
        std::fs::write(&p, vec![0u8; 16384]).unwrap();
        assert!(matches!(
            SharedRings::open(&p),
            Err(IvshmemError::BadLayout { .. })
        ));
        std::fs::write(&p, b"short").unwrap();
        assert!(matches!(
            SharedRings::open(&p),
            Err(IvshmemError::BadLayout { .. })
        ));
    }

    #[test]
    fn attach_in_padded_file_talks_to_backend_with_pid_zero() {
        let dir = tempfile::tempdir().unwrap();
        let (p, server) = ring_file(dir.path());
        // A BAR is a power of two: the file behind it may be longer than its rings.
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(1 << 20).unwrap();
        let rings = open(p.to_str().unwrap()).unwrap();
        let mut conn = rings.attach().unwrap();
        let i = server
            .wait_attach(&AtomicBool::new(false), Duration::from_secs(5))
            .unwrap()
            .unwrap();
        assert_eq!(i, 0);
        // Dead-client detection must not apply to a guest: client_pid is 0.
        assert_eq!(server.poll_attach().unwrap(), None);
        assert_eq!(
            server.states(0).unwrap(),
            (client_state::ATTACHED, server_state::SERVING)
        );
        let mut b = server.serve(0, Waiter::default()).unwrap();
        // A 9P-shaped message each way (size[4] type[1] tag[2] payload); not a Tversion, whose
        // msize the backend rewrites.
        let mut req = vec![12u8, 0, 0, 0, 120, 1, 0];
        req.extend_from_slice(b"hello");
        conn.writer.write_all(&req).unwrap();
        let mut got = vec![0u8; req.len()];
        b.reader.read_exact(&mut got).unwrap();
        assert_eq!(got, req);
        let rep = [9u8, 0, 0, 0, 121, 1, 0, b'o', b'k'];
        b.writer.write_all(&rep).unwrap();
        let mut got = [0u8; 9];
        conn.reader.read_exact(&mut got).unwrap();
        assert_eq!(got, rep);
        // A second attach takes the other ring.
        let _second = rings.attach().unwrap();
        assert!(matches!(rings.attach(), Err(IvshmemError::NoFreeRing(_))));
        conn.closer.shutdown();
        assert_eq!(server.states(0).unwrap().0, client_state::DETACHED);
        let mut buf = [0u8; 4];
        assert_eq!(conn.reader.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn server_close_ends_frontend_reader() {
        let dir = tempfile::tempdir().unwrap();
        let (p, server) = ring_file(dir.path());
        let rings = SharedRings::open(&p).unwrap();
        let mut conn = rings.attach().unwrap();
        let i = server
            .wait_attach(&AtomicBool::new(false), Duration::from_secs(5))
            .unwrap()
            .unwrap();
        let b = server.serve(i, Waiter::default()).unwrap();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 16];
            conn.reader.read(&mut buf).unwrap()
        });
        std::thread::sleep(Duration::from_millis(20));
        b.closer.close();
        assert_eq!(t.join().unwrap(), 0);
    }
}
