//! Xen 9pfs grant rings (`trans=xen`) as a [`Listener`].
//!
//! The backend state machine of `envoy_xen::backend` runs on its own thread: it watches
//! `backend/9pfs` in xenstore, publishes the features (`versions` = 1, `max-rings` = 4,
//! `max-ring-page-order` = 9), maps each guest's rings when the frontend is Initialised and
//! hands the resulting 9P stream here; [`XenListener::accept`] returns it as an ordinary
//! [`Connection`] whose peer is [`Peer::Xen`] with the guest's domain id, so the session code
//! is the same as for sockets. Replies go back on ring `tag % num_rings` (the ring Linux put
//! the request on), each published whole.
//!
//! Two sources:
//! * `--listen xen` / `--xen`: the real hypervisor — xenstored via `$XENSTORED_PATH`,
//!   `/var/run/xenstored/socket` or `/dev/xen/xenbus`; grants via `/dev/xen/gntdev`; event
//!   channels via `/dev/xen/evtchn`. Needs dom0 (or a driver domain) and root.
//! * `--listen xen-sim:DIR`: the simulated Xen of `envoy_xen::sim` whose sockets are in `DIR`
//!   (`simctl.sock`, `xenstored.sock`) — the test hook; the frontend emulator
//!   (`xen-frontend-emu`) plays the guest.
//!
//! The msize a guest may negotiate is capped at its ring size (the transport rewrites a larger
//! Tversion msize before the session sees it), so a reply always fits in a ring.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use envoy_xen::backend::{Backend, BackendConfig, ErrChain, XenConnection};
use envoy_xen::hv::{EventChannels, GrantMapper};
use envoy_xen::sim::client::{SimCtl, SimEvtchns, SimGrants};
use envoy_xen::xenstore::client::XsClient;
use envoy_xen::xenstore::Xenstore;
use envoy_xen::DomId;

use super::{Connection, Listener, Peer};

/// A listener fed by the Xen 9pfs backend.
pub struct XenListener {
    rx: Receiver<XenConnection>,
    stop: Arc<AtomicBool>,
    desc: String,
}

impl std::fmt::Debug for XenListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XenListener")
            .field("desc", &self.desc)
            .finish()
    }
}

fn io_err(e: impl std::error::Error) -> io::Error {
    io::Error::other(ErrChain(&e).to_string())
}

impl XenListener {
    /// Starts the backend on the real hypervisor (`sim = None`) or on the simulator whose
    /// sockets are in `sim`. Frames from guests are limited to `max_frame` bytes.
    pub fn start(
        sim: Option<&Path>,
        max_frame: u32,
        stop: Arc<AtomicBool>,
    ) -> io::Result<XenListener> {
        type Seams = (
            Arc<dyn Xenstore>,
            Arc<dyn GrantMapper>,
            Arc<dyn EventChannels>,
        );
        let (xs, gnt, evt, desc): (_, _, _, String) = match sim {
            None => {
                let xs = XsClient::open_default().map_err(io_err)?;
                let gnt = envoy_xen::sys::gntdev::Gntdev::open().map_err(io_err)?;
                let evt = envoy_xen::sys::evtchn::Evtchn::open().map_err(io_err)?;
                let s: Seams = (Arc::new(xs), Arc::new(gnt), Arc::new(evt));
                (s.0, s.1, s.2, "xen".into())
            }
            Some(dir) => {
                let ctl =
                    Arc::new(SimCtl::connect(&dir.join("simctl.sock"), DomId(0)).map_err(io_err)?);
                let xs = XsClient::connect_socket(&dir.join("xenstored.sock")).map_err(io_err)?;
                let s: Seams = (
                    Arc::new(xs),
                    Arc::new(SimGrants::new(Arc::clone(&ctl))),
                    Arc::new(SimEvtchns::new(ctl)),
                );
                (s.0, s.1, s.2, format!("xen-sim:{}", dir.display()))
            }
        };
        // Our own domain id (0 in dom0, another in a driver domain): the relative node
        // `domid` resolves against the connection's own domain path.
        let domid = xs
            .read(envoy_xen::TxId::NONE, "domid")
            .ok()
            .and_then(|v| envoy_xen::xenstore::parse_u32(&v))
            .and_then(|d| u16::try_from(d).ok())
            .map_or(DomId(0), DomId);
        let backend = Backend::new(
            xs,
            gnt,
            evt,
            BackendConfig {
                domid,
                max_frame,
                ..BackendConfig::default()
            },
        );
        let (tx, rx) = mpsc::channel();
        let s = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("envoyd-xen-backend".into())
            .spawn(move || {
                let res = backend.run(&s, &mut |c| {
                    let _ = tx.send(c);
                });
                if let Err(e) = res {
                    tracing::error!(error = %ErrChain(&e), "xen 9pfs backend stopped");
                }
            })?;
        Ok(XenListener { rx, stop, desc })
    }
}

fn wrap(c: XenConnection) -> Connection {
    let closer = c.stream.closer.clone();
    tracing::info!(
        domid = c.domid.0,
        devid = c.devid,
        rings = c.rings,
        order = c.ring_order,
        "xen 9pfs connection"
    );
    Connection {
        reader: Box::new(c.stream.reader),
        frames: None,
        writer: super::ReplyWriter::blocking(Box::new(c.stream.writer)),
        shutdown: Box::new(move || closer.close()),
        peer: Peer::Xen { domid: c.domid.0 },
    }
}

impl Listener for XenListener {
    fn accept(&mut self) -> io::Result<Option<Connection>> {
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Ok(None);
            }
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(c) => return Ok(Some(wrap(c))),
                Err(RecvTimeoutError::Timeout) => {}
                // The backend thread ended (and logged why).
                Err(RecvTimeoutError::Disconnected) => return Ok(None),
            }
        }
    }

    fn local_desc(&self) -> String {
        self.desc.clone()
    }
}
