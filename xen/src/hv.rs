//! The hypervisor seam: the three things the 9pfs backend needs from Xen, as traits.
//!
//! * [`GrantMapper`] maps pages a guest granted ([`crate::sys::gntdev`] on real Xen,
//!   [`crate::sim`] in tests). The mapping is one virtually contiguous range, released when
//!   the returned [`ForeignPages`] is dropped.
//! * [`EventChannels`] binds the guest's unbound port ([`crate::sys::evtchn`] / the sim);
//!   an [`EventChannel`] notifies the peer and waits for its notifications.
//!
//! [`crate::xenstore::Xenstore`] is the third seam.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use crate::ids::{DomId, EvtchnPort, GrantRef};

/// A failed hypervisor operation.
#[derive(Debug, thiserror::Error)]
pub enum HvError {
    /// A device would not open.
    #[error("opening {path}")]
    Open {
        /// The device.
        path: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A system call failed.
    #[error("{op} failed")]
    Sys {
        /// What was being done.
        op: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The guest's grant does not allow the mapping (simulator; real Xen reports it as an
    /// ioctl/mmap error).
    #[error("grant {gref} of domain {domid}: {reason}")]
    BadGrant {
        /// Granting domain.
        domid: DomId,
        /// The reference.
        gref: GrantRef,
        /// Why.
        reason: String,
    },
    /// The port cannot be bound.
    #[error("event channel {port} of domain {domid}: {reason}")]
    BadPort {
        /// Remote domain.
        domid: DomId,
        /// Remote port.
        port: EvtchnPort,
        /// Why.
        reason: String,
    },
    /// Too many pages requested at once.
    #[error("{count} grant references in one mapping (at most {max})")]
    TooMany {
        /// Requested.
        count: usize,
        /// Limit.
        max: usize,
    },
    /// The simulator refused or failed.
    #[error("simulated xen: {0}")]
    Sim(String),
}

impl HvError {
    /// A `Sys` error from `errno`.
    pub fn last_os(op: &'static str) -> HvError {
        HvError::Sys {
            op,
            source: io::Error::last_os_error(),
        }
    }
}

/// Xen's page size; ring pages are always 4 KiB.
pub const XEN_PAGE_SIZE: usize = 4096;

/// Pages another domain granted, mapped read/write into this process. Unmapped on drop.
pub trait ForeignPages: Send + Sync {
    /// Start of the mapping (page aligned, valid for [`ForeignPages::len`] bytes until drop).
    fn as_ptr(&self) -> *mut u8;
    /// Length in bytes (pages × 4096).
    fn len(&self) -> usize;
    /// Whether the mapping is empty (never, for a successful map).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Maps guest grants.
pub trait GrantMapper: Send + Sync {
    /// Maps `refs` (all granted by `domid`), in order, as one contiguous read/write range.
    fn map(&self, domid: DomId, refs: &[GrantRef]) -> Result<Box<dyn ForeignPages>, HvError>;
}

/// One bound interdomain event channel. Unbound on drop.
pub trait EventChannel: Send + Sync {
    /// The local port.
    fn local_port(&self) -> EvtchnPort;
    /// Signals the peer.
    fn notify(&self) -> Result<(), HvError>;
    /// Waits until the peer signals or [`EventChannel::kick`] is called, at most `timeout`
    /// (`None` = forever), and re-enables the port. `Ok(false)` on timeout. Notifications
    /// coalesce: the caller re-checks its rings after every return.
    fn wait(&self, timeout: Option<Duration>) -> Result<bool, HvError>;
    /// Wakes a [`EventChannel::wait`] from this side (new work queued locally, shutdown).
    fn kick(&self);
}

/// Binds event channels.
pub trait EventChannels: Send + Sync {
    /// Binds the remote domain's unbound `port` (allocated for us) to a local port.
    fn bind_interdomain(
        &self,
        domid: DomId,
        port: EvtchnPort,
    ) -> Result<Box<dyn EventChannel>, HvError>;
}

/// An event channel as an `envoy_ring` [`Doorbell`](envoy_ring::Doorbell), for code that
/// drives a single ring with the ring crate's blocking `RingReader`/`RingWriter`. One channel
/// carries both directions (data and space). A notification is never lost (the port stays
/// pending, or the eventfd readable, until a waiter consumes it), but when two threads wait
/// on one channel only one of them wakes; the other returns at its timeout, which the ring
/// crate's `Waiter` keeps short. [`crate::stream`] avoids that by giving each ring one thread.
pub struct EvtchnBell(pub Box<dyn EventChannel>);

impl std::fmt::Debug for EvtchnBell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("EvtchnBell")
            .field(&self.0.local_port())
            .finish()
    }
}

fn ring_err(e: HvError) -> envoy_ring::RingError {
    envoy_ring::RingError::Doorbell(io::Error::other(e.to_string()))
}

impl envoy_ring::Doorbell for EvtchnBell {
    fn notify(&self) -> Result<(), envoy_ring::RingError> {
        self.0.notify().map_err(ring_err)
    }

    fn wait(
        &self,
        ready: &mut dyn FnMut() -> bool,
        timeout: Duration,
    ) -> Result<(), envoy_ring::RingError> {
        if ready() {
            return Ok(());
        }
        self.0.wait(Some(timeout)).map(|_| ()).map_err(ring_err)
    }
}

/// An eventfd used to kick a waiter from this side.
#[derive(Debug)]
pub struct Kicker(OwnedFd);

impl Kicker {
    /// A fresh non-blocking eventfd.
    pub fn new() -> Result<Kicker, HvError> {
        eventfd().map(Kicker)
    }

    /// Makes the fd readable.
    pub fn kick(&self) {
        eventfd_signal(self.0.as_fd());
    }

    /// Clears it.
    pub fn drain(&self) {
        eventfd_drain(self.0.as_fd());
    }

    /// The fd, for poll.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// A fresh non-blocking, close-on-exec eventfd.
pub fn eventfd() -> Result<OwnedFd, HvError> {
    nix::sys::eventfd::EventFd::from_flags(
        nix::sys::eventfd::EfdFlags::EFD_NONBLOCK | nix::sys::eventfd::EfdFlags::EFD_CLOEXEC,
    )
    .map(OwnedFd::from)
    .map_err(|e| HvError::Sys {
        op: "eventfd",
        source: e.into(),
    })
}

/// Adds 1 to an eventfd (errors — a full counter — are harmless: it stays readable).
pub fn eventfd_signal(fd: BorrowedFd<'_>) {
    let _ = nix::unistd::write(fd, &1u64.to_ne_bytes());
}

/// Resets a non-blocking eventfd.
pub fn eventfd_drain(fd: BorrowedFd<'_>) {
    let mut b = [0u8; 8];
    let _ = nix::unistd::read(fd.as_raw_fd(), &mut b);
}

/// Polls `fds` for input; returns which are readable (all false on timeout).
pub fn poll_in(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> Result<Vec<bool>, HvError> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|f| PollFd::new(*f, PollFlags::POLLIN))
        .collect();
    let t = match timeout {
        None => PollTimeout::NONE,
        Some(d) => PollTimeout::try_from(d.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX),
    };
    loop {
        match poll(&mut pfds, t) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                return Err(HvError::Sys {
                    op: "poll",
                    source: e.into(),
                })
            }
        }
    }
    Ok(pfds
        .iter()
        .map(|p| {
            p.revents().is_some_and(|r| {
                r.intersects(PollFlags::POLLIN | PollFlags::POLLERR | PollFlags::POLLHUP)
            })
        })
        .collect())
}
