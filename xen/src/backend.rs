//! The 9pfs backend state machine (dom0 side of `trans=xen`).
//!
//! ```text
//! toolstack: backend/9pfs/<domid>/<devid> (state 1)   frontend: device/9pfs/<devid> (state 1)
//! backend:   versions="1", max-rings, max-ring-page-order=9, state 2 (InitWait)
//! frontend:  version, num-rings, ring-ref<N>, event-channel-<N>, state 3 (Initialised)
//! backend:   map interface pages, read ring_order + refs, map data pages, bind event
//!            channels, start the ring pumps, hand the stream over, state 4 (Connected)
//! frontend:  state 4 ... later 5 (Closing) → backend releases rings, state 5
//!            frontend 6 (Closed) → backend 6; frontend back to 1 → backend InitWait again
//! guest gone (its directories removed) → backend releases rings and forgets the device
//! ```
//!
//! One loop watches `<home>/backend/9pfs` (every device appears below it) and each device's
//! frontend `state`; after any event it re-reads what it needs (events coalesce and carry no
//! values). Frontend nodes are guest-controlled: every number is parsed and range-checked,
//! `ring_order` and the grant refs are copied out of the interface page once, before
//! mapping, and any failure fails that device only (state Closing) — the loop keeps serving
//! the others. A ring the peer later corrupts ends that device's stream
//! ([`crate::stream`]); the loop sees it end and moves the device to Closing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_ring::{RingMem, RingOrder, SharedMem};

use crate::hv::{EventChannels, ForeignPages, GrantMapper, HvError};
use crate::ids::{DomId, EvtchnPort, GrantRef, TxId, XenbusState};
use crate::stream::{RingEnd, RingStream, RingStreamCloser, StreamOptions};
use crate::xenstore::{Xenstore, XenstoreExt, XsError};

/// Backend settings.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// This (backend) domain.
    pub domid: DomId,
    /// Device class directory name (`9pfs`; xen-9pfsd uses `xen_9pfs`).
    pub kind: String,
    /// Advertised `max-rings` (Linux needs ≥ 2).
    pub max_rings: u32,
    /// Advertised `max-ring-page-order` (≤ 9).
    pub max_ring_order: u32,
    /// Largest frame accepted from a ring (the server's largest msize).
    pub max_frame: u32,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            domid: DomId(0),
            kind: "9pfs".into(),
            max_rings: 4,
            max_ring_order: 9,
            max_frame: 1 << 20,
        }
    }
}

/// A connected device: its guest and the 9P stream over its rings.
#[derive(Debug)]
pub struct XenConnection {
    /// The guest (the connection's principal).
    pub domid: DomId,
    /// Device number.
    pub devid: u32,
    /// Number of rings.
    pub rings: u32,
    /// Their order.
    pub ring_order: u32,
    /// The stream.
    pub stream: RingStream,
}

/// Why the backend loop stopped.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Xenstore failed.
    #[error("xenstore")]
    Xenstore(#[from] XsError),
}

/// Why one device could not connect (the device is failed; others are unaffected).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A frontend node is missing or malformed.
    #[error("frontend node {node}: {problem}")]
    Frontend {
        /// The node.
        node: String,
        /// What is wrong.
        problem: String,
    },
    /// Xenstore failed.
    #[error("xenstore")]
    Xenstore(#[from] XsError),
    /// Mapping or binding failed.
    #[error("hypervisor")]
    Hv(#[from] HvError),
    /// The interface page is unusable.
    #[error("ring")]
    Ring(#[from] envoy_ring::RingError),
    /// Starting the ring threads failed.
    #[error("starting ring threads")]
    Spawn(#[source] std::io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Features published, waiting for the frontend.
    InitWait,
    /// Stream running.
    Connected,
    /// Failed or closing: waiting for the frontend to close (or restart).
    Closing,
    /// Closed; waits for the frontend to return to Initialising.
    Closed,
}

struct Device {
    be: String,
    fe_state: String,
    phase: Phase,
    stream: Option<RingStreamCloser>,
}

/// Grant-mapped pages as ring memory.
fn shared(pages: Box<dyn ForeignPages>) -> SharedMem {
    let ptr = pages.as_ptr();
    let len = pages.len();
    let owner: Arc<dyn envoy_ring::mem::MemOwner> = Arc::new(pages);
    // SAFETY: `ptr..ptr+len` is a read/write mapping that stays mapped until `pages` (now the
    // owner) is dropped; this crate never creates Rust references to it (the ring code uses
    // atomics and volatile copies). The guest writing it concurrently is allowed.
    unsafe { SharedMem::from_raw(ptr, len, owner) }
}

/// The backend: watches xenstore and connects devices.
pub struct Backend {
    xs: Arc<dyn Xenstore>,
    gnt: Arc<dyn GrantMapper>,
    evt: Arc<dyn EventChannels>,
    cfg: BackendConfig,
    devices: BTreeMap<(DomId, u32), Device>,
    ended_tx: mpsc::Sender<(DomId, u32)>,
    ended_rx: mpsc::Receiver<(DomId, u32)>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").field("cfg", &self.cfg).finish()
    }
}

const BASE_TOKEN: &str = "envoy-9pfs-backend";
const FE_TOKEN: &str = "envoy-9pfs-frontend";

impl Backend {
    /// A backend over the three hypervisor seams.
    pub fn new(
        xs: Arc<dyn Xenstore>,
        gnt: Arc<dyn GrantMapper>,
        evt: Arc<dyn EventChannels>,
        cfg: BackendConfig,
    ) -> Backend {
        let (ended_tx, ended_rx) = mpsc::channel();
        Backend {
            xs,
            gnt,
            evt,
            cfg,
            devices: BTreeMap::new(),
            ended_tx,
            ended_rx,
        }
    }

    fn base(&self) -> String {
        format!("/local/domain/{}/backend/{}", self.cfg.domid, self.cfg.kind)
    }

    /// Runs until `stop` is set or xenstore fails; every connected device is handed to
    /// `on_connect`. On return every device's stream is closed.
    pub fn run(
        mut self,
        stop: &AtomicBool,
        on_connect: &mut dyn FnMut(XenConnection),
    ) -> Result<(), BackendError> {
        let base = self.base();
        self.xs.watch(&base, BASE_TOKEN)?;
        let res = self.event_loop(stop, on_connect);
        for d in self.devices.values() {
            if let Some(s) = &d.stream {
                s.close();
            }
        }
        let _ = self.xs.unwatch(&base, BASE_TOKEN);
        res
    }

    fn event_loop(
        &mut self,
        stop: &AtomicBool,
        on_connect: &mut dyn FnMut(XenConnection),
    ) -> Result<(), BackendError> {
        let mut dirty = true;
        while !stop.load(Ordering::SeqCst) {
            if dirty {
                self.rescan(on_connect)?;
                dirty = false;
            }
            if let Some(_ev) = self.xs.next_event(Duration::from_millis(100))? {
                dirty = true;
                // Drain what else is queued: one rescan covers them.
                while self.xs.next_event(Duration::ZERO)?.is_some() {}
            }
            while let Ok(key) = self.ended_rx.try_recv() {
                let mut close = None;
                if let Some(d) = self.devices.get_mut(&key) {
                    if d.phase == Phase::Connected {
                        tracing::info!(
                            domid = key.0 .0,
                            devid = key.1,
                            "9pfs stream ended; closing the device"
                        );
                        d.phase = Phase::Closing;
                        close = Some(d.be.clone());
                    }
                    d.stream = None;
                }
                if let Some(be) = close {
                    if let Err(e) = self.set_state(&be, XenbusState::Closing) {
                        if e.is_fatal() {
                            return Err(e.into());
                        }
                    }
                }
                dirty = true;
            }
        }
        Ok(())
    }

    fn rescan(&mut self, on_connect: &mut dyn FnMut(XenConnection)) -> Result<(), BackendError> {
        let base = self.base();
        let mut present = BTreeSet::new();
        let domids = match self.xs.directory(TxId::NONE, &base) {
            Ok(d) => d,
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        for d in domids {
            let Ok(domid) = d.parse::<u16>() else {
                continue;
            };
            let devs = match self.xs.directory(TxId::NONE, &format!("{base}/{d}")) {
                Ok(v) => v,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            for dev in devs {
                if let Ok(devid) = dev.parse::<u32>() {
                    present.insert((DomId(domid), devid));
                }
            }
        }
        // Devices whose backend directory went away (guest destroyed, device removed).
        let gone: Vec<_> = self
            .devices
            .keys()
            .filter(|k| !present.contains(k))
            .copied()
            .collect();
        for k in gone {
            if let Some(d) = self.devices.remove(&k) {
                tracing::info!(domid = k.0 .0, devid = k.1, "9pfs device removed");
                if let Some(s) = d.stream {
                    s.close();
                }
                let _ = self.xs.unwatch(&d.fe_state, FE_TOKEN);
            }
        }
        for k in present {
            if !self.devices.contains_key(&k) {
                if let Err(e) = self.add_device(k) {
                    tracing::warn!(domid = k.0 .0, devid = k.1, error = %e, "cannot set up 9pfs device");
                    if e.is_fatal() {
                        return Err(e.into());
                    }
                    continue;
                }
            }
            // A xenstore refusal for one device (its directory vanishing under us, a
            // permission) leaves the others running; a dead connection stops the loop.
            if let Err(BackendError::Xenstore(e)) = self.step(k, on_connect) {
                if e.is_fatal() {
                    return Err(e.into());
                }
                tracing::warn!(domid = k.0 .0, devid = k.1, error = %e, "9pfs device step failed");
            }
        }
        Ok(())
    }

    /// Publishes features and goes to InitWait.
    fn add_device(&mut self, (domid, devid): (DomId, u32)) -> Result<(), XsError> {
        let be = format!("{}/{}/{}", self.base(), domid, devid);
        // The frontend path is derived, not read from a node: only the toolstack and the
        // backend write the backend directory, but deriving it needs no trust at all.
        let fe_state = format!("/local/domain/{domid}/device/9pfs/{devid}/state");
        self.publish_features(&be)?;
        self.xs.watch(&fe_state, FE_TOKEN)?;
        tracing::info!(domid = domid.0, devid, "9pfs device: InitWait");
        self.devices.insert(
            (domid, devid),
            Device {
                be,
                fe_state,
                phase: Phase::InitWait,
                stream: None,
            },
        );
        Ok(())
    }

    /// Writes `nodes` below `be` in one transaction, only while `be/state` still exists: a
    /// plain write after the toolstack removed the directory (guest destroyed) would
    /// re-create it and leave a zombie device. Retried on conflict.
    fn write_if_present(&self, be: &str, nodes: &[(&str, String)]) -> Result<(), XsError> {
        loop {
            let tx = self.xs.transaction_start()?;
            let res = (|| {
                self.xs.read(tx, &format!("{be}/state"))?;
                for (k, v) in nodes {
                    self.xs.write_str(tx, &format!("{be}/{k}"), v)?;
                }
                Ok(())
            })();
            if let Err(e) = res {
                let _ = self.xs.transaction_end(tx, false);
                return Err(e);
            }
            match self.xs.transaction_end(tx, true) {
                Err(e) if e.is_again() => continue,
                other => return other,
            }
        }
    }

    fn publish_features(&self, be: &str) -> Result<(), XsError> {
        self.write_if_present(
            be,
            &[
                ("versions", "1".into()),
                ("max-rings", self.cfg.max_rings.to_string()),
                ("max-ring-page-order", self.cfg.max_ring_order.to_string()),
                ("state", XenbusState::InitWait.to_string()),
            ],
        )
    }

    fn set_state(&self, be: &str, s: XenbusState) -> Result<(), XsError> {
        self.write_if_present(be, &[("state", s.to_string())])
    }

    /// Advances one device according to its frontend's state.
    fn step(
        &mut self,
        key: (DomId, u32),
        on_connect: &mut dyn FnMut(XenConnection),
    ) -> Result<(), BackendError> {
        let Some(d) = self.devices.get(&key) else {
            return Ok(());
        };
        let fe = self
            .xs
            .read_opt(TxId::NONE, &d.fe_state)?
            .and_then(|v| XenbusState::parse(&v));
        let (phase, be) = (d.phase, d.be.clone());
        use XenbusState as S;
        match (phase, fe) {
            (Phase::InitWait, Some(S::Initialised | S::Connected)) => match self.connect(key) {
                Ok(conn) => {
                    let closer = conn.stream.closer.clone();
                    if let Some(d) = self.devices.get_mut(&key) {
                        d.stream = Some(closer);
                        d.phase = Phase::Connected;
                    }
                    tracing::info!(
                        domid = key.0 .0,
                        devid = key.1,
                        rings = conn.rings,
                        order = conn.ring_order,
                        "9pfs device connected"
                    );
                    on_connect(conn);
                    self.set_state(&be, S::Connected)?;
                }
                Err(e) => {
                    tracing::warn!(domid = key.0 .0, devid = key.1, error = %ErrChain(&e), "9pfs connect failed; closing the device");
                    if let Some(d) = self.devices.get_mut(&key) {
                        d.phase = Phase::Closing;
                    }
                    self.set_state(&be, S::Closing)?;
                }
            },
            (Phase::InitWait | Phase::Connected, Some(S::Closing)) => {
                self.release(key);
                if let Some(d) = self.devices.get_mut(&key) {
                    d.phase = Phase::Closing;
                }
                self.set_state(&be, S::Closing)?;
            }
            (_, Some(S::Closed)) if phase != Phase::Closed => {
                self.release(key);
                if let Some(d) = self.devices.get_mut(&key) {
                    d.phase = Phase::Closed;
                }
                self.set_state(&be, S::Closed)?;
            }
            (Phase::Closed | Phase::Closing, Some(S::Initialising)) => {
                self.release(key);
                self.publish_features(&be)?;
                if let Some(d) = self.devices.get_mut(&key) {
                    d.phase = Phase::InitWait;
                }
            }
            (Phase::Connected, None) => {
                // Frontend directory gone but backend still there: treat as closed.
                self.release(key);
                if let Some(d) = self.devices.get_mut(&key) {
                    d.phase = Phase::Closed;
                }
                self.set_state(&be, S::Closed)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Stops a device's stream and waits (briefly) until its rings are unmapped and its
    /// event channels unbound.
    fn release(&mut self, key: (DomId, u32)) {
        let Some(s) = self.devices.get_mut(&key).and_then(|d| d.stream.take()) else {
            return;
        };
        s.close();
        let end = Instant::now() + Duration::from_secs(5);
        while !s.is_released() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn fe_u32(&self, fe: &str, node: &str) -> Result<u32, ConnectError> {
        let path = format!("{fe}/{node}");
        match self.xs.read_u32(TxId::NONE, &path) {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(ConnectError::Frontend {
                node: path,
                problem: "missing".into(),
            }),
            Err(XsError::Protocol { detail, .. }) => Err(ConnectError::Frontend {
                node: path,
                problem: detail,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads the frontend's rings, maps and binds them, and starts the stream.
    fn connect(&self, (domid, devid): (DomId, u32)) -> Result<XenConnection, ConnectError> {
        let fe = format!("/local/domain/{domid}/device/9pfs/{devid}");
        let bad = |node: &str, problem: String| ConnectError::Frontend {
            node: format!("{fe}/{node}"),
            problem,
        };
        let version = self
            .xs
            .read_opt(TxId::NONE, &format!("{fe}/version"))?
            .ok_or_else(|| bad("version", "missing".into()))?;
        if crate::xenstore::parse_u32(&version) != Some(1) {
            return Err(bad(
                "version",
                format!("{:?} is not 1", String::from_utf8_lossy(&version)),
            ));
        }
        let nrings = self.fe_u32(&fe, "num-rings")?;
        if nrings == 0 || nrings > self.cfg.max_rings {
            return Err(bad(
                "num-rings",
                format!("{nrings} is not in 1..={}", self.cfg.max_rings),
            ));
        }
        let mut ends = Vec::new();
        let mut order_seen = 0;
        for i in 0..nrings {
            let gref = GrantRef(self.fe_u32(&fe, &format!("ring-ref{i}"))?);
            let port = EvtchnPort(self.fe_u32(&fe, &format!("event-channel-{i}"))?);
            let intf = shared(self.gnt.map(domid, &[gref])?);
            let order = RingMem::read_ring_order(&intf)?;
            if order.get() > self.cfg.max_ring_order {
                return Err(ConnectError::Ring(envoy_ring::RingError::BadRingOrder(
                    order.get(),
                )));
            }
            let refs: Vec<GrantRef> = RingMem::read_refs(&intf, order)?
                .into_iter()
                .map(GrantRef)
                .collect();
            let data = shared(self.gnt.map(domid, &refs)?);
            let ring = RingMem::with_order(intf, data, RingOrder::new(order.get())?)?;
            let (consumer, producer) = ring.backend()?;
            let evtchn = self.evt.bind_interdomain(domid, port)?;
            order_seen = order.get();
            ends.push((ring, consumer, producer, evtchn));
        }
        // Every reply must fit in a ring: the smallest ring bounds the msize.
        let min_ring = ends.iter().map(|(r, ..)| r.ring_size()).min().unwrap_or(0);
        let ends = ends
            .into_iter()
            .map(|(ring, consumer, producer, evtchn)| RingEnd {
                consumer,
                producer,
                evtchn,
                keep: Box::new(ring),
            })
            .collect();
        let tx = self.ended_tx.clone();
        let stream = RingStream::spawn(
            ends,
            StreamOptions {
                max_frame: self.cfg.max_frame,
                cap_tversion_msize: Some(min_ring.min(self.cfg.max_frame)),
            },
            Box::new(move |reason| {
                if let Some(r) = reason {
                    tracing::warn!(domid = domid.0, devid, reason = %r, "9pfs guest broke the ring protocol; disconnected");
                }
                let _ = tx.send((domid, devid));
            }),
        )
        .map_err(ConnectError::Spawn)?;
        Ok(XenConnection {
            domid,
            devid,
            rings: nrings,
            ring_order: order_seen,
            stream,
        })
    }
}

/// Formats an error with its causes.
pub struct ErrChain<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for ErrChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut s = self.0.source();
        while let Some(e) = s {
            write!(f, ": {e}")?;
            s = e.source();
        }
        Ok(())
    }
}
