//! Clients of the simulator's control socket: the backend's [`SimGrants`] and
//! [`SimEvtchns`] (the simulated gntdev/evtchn), and the guest side [`SimGuest`] (a domain's
//! memory, grant table and unbound ports) used by the frontend emulator.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::{
    connect_ctl, recv_reply, send_request, GNTTAB_ENTRIES, GNTTAB_PAGES, GTF_PERMIT_ACCESS,
    GTF_READONLY,
};
use crate::hv::{
    eventfd_drain, eventfd_signal, poll_in, EventChannel, EventChannels, ForeignPages, GrantMapper,
    HvError, Kicker, XEN_PAGE_SIZE,
};
use crate::ids::{DomId, EvtchnPort, GrantRef};
use crate::xenstore::client::XsClient;
use crate::xenstore::XsError;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A connection to the simulator's control socket, acting as one domain.
#[derive(Debug)]
pub struct SimCtl {
    fd: Mutex<OwnedFd>,
    domid: DomId,
}

impl SimCtl {
    /// Connects as `domid` (dom0 for a backend).
    pub fn connect(path: &Path, domid: DomId) -> Result<SimCtl, HvError> {
        Ok(SimCtl {
            fd: Mutex::new(connect_ctl(path)?),
            domid,
        })
    }

    /// Our domain id.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// One request/reply; `ERR` replies become [`HvError::Sim`].
    pub fn call(&self, line: &str) -> Result<(Vec<String>, Vec<OwnedFd>), HvError> {
        let fd = lock(&self.fd);
        send_request(&fd, line)?;
        let (reply, fds) = recv_reply(&fd)?;
        let words: Vec<String> = reply.split_whitespace().map(String::from).collect();
        match words.first().map(String::as_str) {
            Some("OK") => Ok((words[1..].to_vec(), fds)),
            _ => Err(HvError::Sim(format!("{line}: {reply}"))),
        }
    }

    fn num(words: &[String], what: &str) -> Result<u32, HvError> {
        words
            .first()
            .and_then(|w| w.parse().ok())
            .ok_or_else(|| HvError::Sim(format!("{what}: malformed reply")))
    }

    /// A xenstore connection as our domain.
    pub fn xenstore(&self) -> Result<XsClient, HvError> {
        let (_, mut fds) = self.call(&format!("XENSTORE {}", self.domid))?;
        let fd = fds
            .pop()
            .ok_or_else(|| HvError::Sim("XENSTORE: no socket".into()))?;
        XsClient::from_unix_stream(UnixStream::from(fd))
            .map_err(|e: XsError| HvError::Sim(e.to_string()))
    }

    /// Becomes the domain (its life ends with this connection) and returns its memory.
    pub fn claim(&self) -> Result<(File, usize), HvError> {
        let (w, mut fds) = self.call(&format!("CLAIM {}", self.domid))?;
        let pages = SimCtl::num(&w, "CLAIM")? as usize;
        let fd = fds
            .pop()
            .ok_or_else(|| HvError::Sim("CLAIM: no memfd".into()))?;
        Ok((File::from(fd), pages))
    }

    /// Another domain's memory.
    pub fn memory(&self, domid: DomId) -> Result<(File, usize), HvError> {
        let (w, mut fds) = self.call(&format!("MEMORY {domid}"))?;
        let pages = SimCtl::num(&w, "MEMORY")? as usize;
        let fd = fds
            .pop()
            .ok_or_else(|| HvError::Sim("MEMORY: no memfd".into()))?;
        Ok((File::from(fd), pages))
    }

    /// Allocates an unbound port for `remote`.
    pub fn alloc_unbound(&self, remote: DomId) -> Result<SimChannel, HvError> {
        let (w, fds) = self.call(&format!("ALLOC_UNBOUND {} {remote}", self.domid))?;
        SimChannel::from_reply(EvtchnPort(SimCtl::num(&w, "ALLOC_UNBOUND")?), fds)
    }
}

/// One simulated event channel end: `notify` signals the peer's eventfd, `wait` polls ours.
#[derive(Debug)]
pub struct SimChannel {
    port: EvtchnPort,
    notify_fd: OwnedFd,
    wait_fd: OwnedFd,
    kicker: Kicker,
}

impl SimChannel {
    fn from_reply(port: EvtchnPort, mut fds: Vec<OwnedFd>) -> Result<SimChannel, HvError> {
        if fds.len() != 2 {
            return Err(HvError::Sim(format!(
                "expected 2 eventfds, got {}",
                fds.len()
            )));
        }
        let wait_fd = fds.pop().ok_or_else(|| HvError::Sim("no wait fd".into()))?;
        let notify_fd = fds
            .pop()
            .ok_or_else(|| HvError::Sim("no notify fd".into()))?;
        Ok(SimChannel {
            port,
            notify_fd,
            wait_fd,
            kicker: Kicker::new()?,
        })
    }
}

impl EventChannel for SimChannel {
    fn local_port(&self) -> EvtchnPort {
        self.port
    }

    fn notify(&self) -> Result<(), HvError> {
        eventfd_signal(self.notify_fd.as_fd());
        Ok(())
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<bool, HvError> {
        let ready = poll_in(&[self.wait_fd.as_fd(), self.kicker.fd()], timeout)?;
        if ready[0] {
            eventfd_drain(self.wait_fd.as_fd());
        }
        if ready[1] {
            self.kicker.drain();
        }
        Ok(ready[0] || ready[1])
    }

    fn kick(&self) {
        self.kicker.kick();
    }
}

/// The simulated `/dev/xen/evtchn` of a backend domain.
#[derive(Debug, Clone)]
pub struct SimEvtchns {
    ctl: Arc<SimCtl>,
}

impl SimEvtchns {
    /// Over a control connection.
    pub fn new(ctl: Arc<SimCtl>) -> SimEvtchns {
        SimEvtchns { ctl }
    }
}

impl EventChannels for SimEvtchns {
    fn bind_interdomain(
        &self,
        domid: DomId,
        port: EvtchnPort,
    ) -> Result<Box<dyn EventChannel>, HvError> {
        let (w, fds) = self
            .ctl
            .call(&format!("BIND {} {domid} {port}", self.ctl.domid()))
            .map_err(|e| HvError::BadPort {
                domid,
                port,
                reason: e.to_string(),
            })?;
        Ok(Box::new(SimChannel::from_reply(
            EvtchnPort(SimCtl::num(&w, "BIND")?),
            fds,
        )?))
    }
}

/// The simulated `/dev/xen/gntdev` of a backend domain.
#[derive(Debug)]
pub struct SimGrants {
    ctl: Arc<SimCtl>,
    mems: Mutex<HashMap<DomId, (Arc<File>, usize)>>,
}

impl SimGrants {
    /// Over a control connection.
    pub fn new(ctl: Arc<SimCtl>) -> SimGrants {
        SimGrants {
            ctl,
            mems: Mutex::new(HashMap::new()),
        }
    }

    fn memory(&self, domid: DomId) -> Result<(Arc<File>, usize), HvError> {
        // A domain id may be reused after a death: always ask (cheap), cache only for the
        // duration of one map call.
        let (f, pages) = self.ctl.memory(domid)?;
        let m = (Arc::new(f), pages);
        lock(&self.mems).insert(domid, m.clone());
        Ok(m)
    }
}

/// Reads grant entry `r` from a domain's memory: `(flags, domid, frame)`.
fn read_entry(mem: &File, r: GrantRef) -> Result<(u16, u16, u32), std::io::Error> {
    let mut e = [0u8; 8];
    mem.read_exact_at(&mut e, u64::from(r.0) * 8)?;
    Ok((
        u16::from_le_bytes([e[0], e[1]]),
        u16::from_le_bytes([e[2], e[3]]),
        u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
    ))
}

impl GrantMapper for SimGrants {
    fn map(&self, domid: DomId, refs: &[GrantRef]) -> Result<Box<dyn ForeignPages>, HvError> {
        if refs.is_empty() || refs.len() > crate::sys::gntdev::MAX_REFS {
            return Err(HvError::TooMany {
                count: refs.len(),
                max: crate::sys::gntdev::MAX_REFS,
            });
        }
        let (mem, pages) = self.memory(domid)?;
        let mut frames = Vec::with_capacity(refs.len());
        for &r in refs {
            let bad = |reason: String| HvError::BadGrant {
                domid,
                gref: r,
                reason,
            };
            if r.0 as usize >= GNTTAB_ENTRIES {
                return Err(bad("beyond the grant table".into()));
            }
            let (flags, to, frame) = read_entry(&mem, r).map_err(|e| bad(e.to_string()))?;
            if flags & GTF_PERMIT_ACCESS == 0 {
                return Err(bad("not granted".into()));
            }
            if flags & GTF_READONLY != 0 {
                return Err(bad("granted read-only".into()));
            }
            if to != self.ctl.domid().0 {
                return Err(bad(format!("granted to domain {to}")));
            }
            if (frame as usize) < GNTTAB_PAGES || frame as usize >= pages {
                return Err(bad(format!("frame {frame} outside the domain's memory")));
            }
            frames.push(frame);
        }
        let len = refs.len() * XEN_PAGE_SIZE;
        // SAFETY: a fresh PROT_NONE reservation chosen by the kernel; it aliases nothing.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(HvError::last_os("mmap reservation"));
        }
        let mapping = SimMapping {
            ptr: base.cast(),
            len,
        };
        for (i, &f) in frames.iter().enumerate() {
            // SAFETY: the target page lies inside our own reservation (`mapping`, which owns and
            // will unmap it); MAP_FIXED replaces only that page. The memfd is at least `pages`
            // long and `f < pages` was checked.
            let p = unsafe {
                libc::mmap(
                    mapping.ptr.add(i * XEN_PAGE_SIZE).cast(),
                    XEN_PAGE_SIZE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    mem.as_raw_fd(),
                    (f as usize * XEN_PAGE_SIZE) as libc::off_t,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(HvError::last_os("mmap of a granted frame"));
            }
        }
        Ok(Box::new(mapping))
    }
}

/// Frames mapped by [`SimGrants`].
#[derive(Debug)]
struct SimMapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: plain shared memory owned by this value, accessed only through raw pointers with
// atomics/volatile copies by the ring code.
unsafe impl Send for SimMapping {}
// SAFETY: as above; no interior state.
unsafe impl Sync for SimMapping {}

impl ForeignPages for SimMapping {
    fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }
    fn len(&self) -> usize {
        self.len
    }
}

impl Drop for SimMapping {
    fn drop(&mut self) {
        // SAFETY: exactly the reservation made in `map`, unmapped once.
        if unsafe { libc::munmap(self.ptr.cast(), self.len) } != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "munmap failed");
        }
    }
}

/// A simulated guest: its memory, a page allocator and its grant table.
#[derive(Debug)]
pub struct SimGuest {
    ctl: SimCtl,
    mem: Arc<File>,
    pages: usize,
    next_page: Mutex<usize>,
    next_ref: Mutex<u32>,
}

impl SimGuest {
    /// Claims domain `domid` (created by the toolstack) through the control socket at `path`.
    pub fn claim(path: &Path, domid: DomId) -> Result<SimGuest, HvError> {
        let ctl = SimCtl::connect(path, domid)?;
        let (mem, pages) = ctl.claim()?;
        Ok(SimGuest {
            ctl,
            mem: Arc::new(mem),
            pages,
            next_page: Mutex::new(GNTTAB_PAGES),
            // Refs 0..8 are reserved in Xen (GNTTAB_NR_RESERVED_ENTRIES).
            next_ref: Mutex::new(8),
        })
    }

    /// The control connection.
    pub fn ctl(&self) -> &SimCtl {
        &self.ctl
    }

    /// The domain's memory file.
    pub fn memory(&self) -> &Arc<File> {
        &self.mem
    }

    /// Allocates `n` contiguous zeroed pages; returns the first frame number.
    pub fn alloc_pages(&self, n: usize) -> Result<u32, HvError> {
        let mut next = lock(&self.next_page);
        if *next + n > self.pages {
            return Err(HvError::Sim(format!(
                "guest memory exhausted ({} pages)",
                self.pages
            )));
        }
        let first = *next;
        *next += n;
        Ok(first as u32)
    }

    /// Writes grant entry `r` (the frontend's gnttab_grant_foreign_access). Also used by
    /// hostile tests to grant nonsense.
    pub fn set_grant(&self, r: GrantRef, flags: u16, to: DomId, frame: u32) -> Result<(), HvError> {
        let mut e = [0u8; 8];
        e[0..2].copy_from_slice(&flags.to_le_bytes());
        e[2..4].copy_from_slice(&to.0.to_le_bytes());
        e[4..8].copy_from_slice(&frame.to_le_bytes());
        self.mem
            .write_all_at(&e, u64::from(r.0) * 8)
            .map_err(|e| HvError::Sim(e.to_string()))
    }

    /// Grants `frame` read/write to `to`; returns the new ref.
    pub fn grant(&self, to: DomId, frame: u32) -> Result<GrantRef, HvError> {
        let r = {
            let mut n = lock(&self.next_ref);
            if *n as usize >= GNTTAB_ENTRIES {
                return Err(HvError::Sim("grant table full".into()));
            }
            let r = GrantRef(*n);
            *n += 1;
            r
        };
        self.set_grant(r, GTF_PERMIT_ACCESS, to, frame)?;
        Ok(r)
    }
}
