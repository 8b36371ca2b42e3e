//! `/dev/xen/evtchn`: interdomain event channels.
//!
//! Each binding gets its own open of the device (as QEMU does per ring), so a `read()` on
//! it returns only our port. `IOCTL_EVTCHN_BIND_INTERDOMAIN` (0x00084501, `{u32
//! remote_domain, u32 remote_port}`) returns the local port; NOTIFY (0x00044504) and UNBIND
//! (0x00044503) take `{u32 port}`. When an event fires the kernel masks the port and queues
//! its number; we `read` the 4-byte port and `write` it back to unmask.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use super::ioctl_buf;
use crate::hv::{poll_in, EventChannel, EventChannels, HvError, Kicker};
use crate::ids::{DomId, EvtchnPort};

const IOCTL_EVTCHN_BIND_INTERDOMAIN: u64 = 0x0008_4501;
const IOCTL_EVTCHN_UNBIND: u64 = 0x0004_4503;
const IOCTL_EVTCHN_NOTIFY: u64 = 0x0004_4504;
/// Default path.
pub const EVTCHN_PATH: &str = "/dev/xen/evtchn";

/// Opens `/dev/xen/evtchn` per binding.
#[derive(Debug, Clone)]
pub struct Evtchn {
    path: String,
}

impl Evtchn {
    /// Uses [`EVTCHN_PATH`] (checked now so a missing device fails at start-up).
    pub fn open() -> Result<Evtchn, HvError> {
        Evtchn::open_path(EVTCHN_PATH)
    }

    /// Uses another device node.
    pub fn open_path(path: &str) -> Result<Evtchn, HvError> {
        std::fs::metadata(path).map_err(|source| HvError::Open {
            path: path.into(),
            source,
        })?;
        Ok(Evtchn { path: path.into() })
    }
}

impl EventChannels for Evtchn {
    fn bind_interdomain(
        &self,
        domid: DomId,
        port: EvtchnPort,
    ) -> Result<Box<dyn EventChannel>, HvError> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&self.path)
            .map_err(|source| HvError::Open {
                path: self.path.clone(),
                source,
            })?;
        let fd = OwnedFd::from(f);
        let mut arg = [u32::from(domid.0), port.0];
        let local = ioctl_buf(
            fd.as_fd(),
            "IOCTL_EVTCHN_BIND_INTERDOMAIN",
            IOCTL_EVTCHN_BIND_INTERDOMAIN,
            &mut arg,
        )?;
        Ok(Box::new(BoundEvtchn {
            fd,
            port: EvtchnPort(local as u32),
            kicker: Kicker::new()?,
        }))
    }
}

/// A port bound through its own evtchn fd.
#[derive(Debug)]
pub struct BoundEvtchn {
    fd: OwnedFd,
    port: EvtchnPort,
    kicker: Kicker,
}

impl EventChannel for BoundEvtchn {
    fn local_port(&self) -> EvtchnPort {
        self.port
    }

    fn notify(&self) -> Result<(), HvError> {
        let mut arg = [self.port.0];
        ioctl_buf(
            self.fd.as_fd(),
            "IOCTL_EVTCHN_NOTIFY",
            IOCTL_EVTCHN_NOTIFY,
            &mut arg,
        )
        .map(|_| ())
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<bool, HvError> {
        let ready = poll_in(&[self.fd.as_fd(), self.kicker.fd()], timeout)?;
        if ready[1] {
            self.kicker.drain();
        }
        if ready[0] {
            let mut b = [0u8; 4];
            match nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&self.fd), &mut b) {
                Ok(4) => {
                    // Unmask: write the port back.
                    nix::unistd::write(self.fd.as_fd(), &b).map_err(|e| HvError::Sys {
                        op: "evtchn unmask",
                        source: e.into(),
                    })?;
                }
                Ok(_) | Err(nix::errno::Errno::EAGAIN) => {}
                Err(nix::errno::Errno::EFBIG) => {
                    // Overflow: reset would lose our other bindings' state, but this fd
                    // carries only our port, so unmasking is enough.
                    let _ = nix::unistd::write(self.fd.as_fd(), &self.port.0.to_ne_bytes());
                }
                Err(e) => {
                    return Err(HvError::Sys {
                        op: "evtchn read",
                        source: e.into(),
                    })
                }
            }
        }
        Ok(ready[0] || ready[1])
    }

    fn kick(&self) {
        self.kicker.kick();
    }
}

impl Drop for BoundEvtchn {
    fn drop(&mut self) {
        let mut arg = [self.port.0];
        if let Err(e) = ioctl_buf(
            self.fd.as_fd(),
            "IOCTL_EVTCHN_UNBIND",
            IOCTL_EVTCHN_UNBIND,
            &mut arg,
        ) {
            tracing::warn!(error = %e, port = self.port.0, "evtchn unbind failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evtchn_missing_device_is_open_error() {
        assert!(matches!(
            Evtchn::open_path("/nonexistent/evtchn"),
            Err(HvError::Open { .. })
        ));
    }
}
