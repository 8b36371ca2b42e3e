//! A frontend emulator that behaves like Linux's `net/9p/trans_xen.c`, for tests. It runs
//! in its own process (bin `xen-frontend-emu`) against the simulator ([`crate::sim`]), so
//! the guest's memory, grants and event channels really cross a process boundary.
//!
//! Linux behaviour reproduced: waits for the backend's InitWait, requires `versions` to
//! contain 1 and `max-rings` ≥ 2, uses 2 rings of order min(`max-ring-page-order`, 9),
//! writes `version`, `num-rings`, `ring-ref<N>`, `event-channel-<N>` in one transaction
//! (retried on EAGAIN), then Initialised; Connected once the backend is. Requests go on ring
//! `tag % 2` (Tversion's NOTAG on ring 1), a request is published only when all of it fits,
//! replies are read whole, and an interrupted request is flushed with Tflush (the transport
//! cannot cancel). The msize is capped at half a ring, as Linux's `maxsize` is.
//!
//! Scenarios (`--scenario`): `session` (a 9P2000.L session: version, attach, walk, create,
//! write, read, flush, clunk), `echo` (frames of every size in a range against an echoing
//! backend: wrap-around at every offset, full rings, many outstanding), `vanish` (send a
//! request and exit at once), `hostile-*` (see [`Hostile`]). Results are printed on stdout
//! as `KEY value...` lines; failures as `FAIL reason` with exit status 1.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use envoy_ring::{layout, RingMem, RingOrder, SharedMem};

use crate::hv::{EventChannel, HvError, XEN_PAGE_SIZE};
use crate::ids::{DomId, TxId, XenbusState};
use crate::sim::client::SimGuest;
use crate::stream::{RingEnd, RingStream, StreamOptions};
use crate::xenstore::client::XsClient;
use crate::xenstore::{Xenstore, XenstoreExt, XsError};

/// A frontend failure.
#[derive(Debug, thiserror::Error)]
pub enum EmuError {
    /// Hypervisor (simulator) call failed.
    #[error("hypervisor")]
    Hv(#[from] HvError),
    /// Xenstore failed.
    #[error("xenstore")]
    Xs(#[from] XsError),
    /// Ring setup failed.
    #[error("ring")]
    Ring(#[from] envoy_ring::RingError),
    /// The backend did something Linux would refuse, or a step timed out.
    #[error("{0}")]
    Protocol(String),
}

/// Misbehaviour to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostile {
    /// `ring_order` 30 in the interface page.
    RingOrder30,
    /// `ring-ref0` names a grant that was never made.
    BadRef,
    /// After connecting: `out_prod` three rings ahead of `out_cons`.
    Indexes,
    /// After connecting: a request whose size exceeds the ring.
    Oversize,
    /// After connecting: the interface page overwritten with garbage.
    Garbage,
    /// `num-rings` = 99 (above any backend's `max-rings`).
    NumRings,
    /// `version` = 7 (only 1 exists).
    Version,
}

/// Emulator settings.
#[derive(Debug, Clone)]
pub struct EmuConfig {
    /// Simulator control socket.
    pub ctl: PathBuf,
    /// Our domain.
    pub domid: DomId,
    /// Device number.
    pub devid: u32,
    /// Ring order to use instead of min(backend max, 9).
    pub order: Option<u32>,
    /// Misbehaviour.
    pub hostile: Option<Hostile>,
    /// Limit for each handshake step.
    pub timeout: Duration,
}

/// A connected frontend.
pub struct Frontend {
    /// Guest memory and grant table (keeps the domain alive).
    pub guest: SimGuest,
    /// Our xenstore connection.
    pub xs: Arc<XsClient>,
    /// Frontend directory.
    pub fe: String,
    /// Backend directory.
    pub be: String,
    /// The rings (clones share memory with the stream).
    pub rings: Vec<RingMem>,
    channels: Vec<Box<dyn EventChannel>>,
    /// Ring order in use.
    pub order: u32,
}

impl std::fmt::Debug for Frontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frontend")
            .field("fe", &self.fe)
            .field("order", &self.order)
            .finish()
    }
}

fn wait_state(
    xs: &XsClient,
    path: &str,
    timeout: Duration,
    want: impl Fn(XenbusState) -> bool,
) -> Result<XenbusState, EmuError> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(s) = xs
            .read_opt(TxId::NONE, path)?
            .and_then(|v| XenbusState::parse(&v))
        {
            if want(s) {
                return Ok(s);
            }
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(EmuError::Protocol(format!("timed out waiting on {path}")));
        }
        xs.next_event(left.min(Duration::from_millis(100)))?;
    }
}

impl Frontend {
    /// Claims the domain and runs the Linux handshake up to Connected.
    pub fn connect(cfg: &EmuConfig) -> Result<Frontend, EmuError> {
        let guest = SimGuest::claim(&cfg.ctl, cfg.domid)?;
        let xs = Arc::new(guest.ctl().xenstore()?);
        let fe = format!("/local/domain/{}/device/9pfs/{}", cfg.domid, cfg.devid);
        let be_raw = xs.read(TxId::NONE, &format!("{fe}/backend"))?;
        let be = String::from_utf8_lossy(&be_raw).into_owned();
        let backend_id = DomId(
            xs.read_u32(TxId::NONE, &format!("{fe}/backend-id"))?
                .and_then(|v| u16::try_from(v).ok())
                .unwrap_or(0),
        );
        xs.watch(&format!("{be}/state"), "be")?;
        wait_state(&xs, &format!("{be}/state"), cfg.timeout, |s| {
            s == XenbusState::InitWait
        })?;
        let versions = xs.read(TxId::NONE, &format!("{be}/versions"))?;
        if !String::from_utf8_lossy(&versions)
            .split(',')
            .any(|v| v.trim() == "1")
        {
            return Err(EmuError::Protocol(
                "backend lacks transport version 1".into(),
            ));
        }
        let max_rings = xs
            .read_u32(TxId::NONE, &format!("{be}/max-rings"))?
            .unwrap_or(0);
        if max_rings < 2 {
            return Err(EmuError::Protocol(format!("max-rings {max_rings} < 2")));
        }
        let max_order = xs
            .read_u32(TxId::NONE, &format!("{be}/max-ring-page-order"))?
            .unwrap_or(0);
        let order = cfg.order.unwrap_or(max_order.min(9));
        let ring_order = RingOrder::new(order.min(9))?;
        let mut rings = Vec::new();
        let mut channels: Vec<Box<dyn EventChannel>> = Vec::new();
        let mut published = Vec::new();
        for i in 0..2u32 {
            let intf_frame = guest.alloc_pages(1)?;
            let data_frame = guest.alloc_pages(ring_order.data_pages())?;
            let mut intf_ref = guest.grant(backend_id, intf_frame)?;
            let mut refs = Vec::new();
            for p in 0..ring_order.data_pages() as u32 {
                refs.push(guest.grant(backend_id, data_frame + p)?.0);
            }
            let map = |frame: u32, len: usize| {
                SharedMem::map_file(guest.memory(), u64::from(frame) * XEN_PAGE_SIZE as u64, len)
            };
            let intf = map(intf_frame, XEN_PAGE_SIZE)?;
            let data = map(data_frame, ring_order.data_len())?;
            let ring = RingMem::init(intf, data, ring_order, &refs)?;
            match cfg.hostile {
                Some(Hostile::RingOrder30) if i == 0 => {
                    ring.intf()
                        .atomic_u32(layout::RING_ORDER)?
                        .store(30u32.to_le(), std::sync::atomic::Ordering::Release);
                }
                Some(Hostile::BadRef) if i == 0 => intf_ref = crate::ids::GrantRef(2000),
                _ => {}
            }
            let ch = guest.ctl().alloc_unbound(backend_id)?;
            published.push((intf_ref, ch.local_port()));
            channels.push(Box::new(ch));
            rings.push(ring);
        }
        // One transaction, retried on conflict, as Linux does.
        loop {
            let tx = xs.transaction_start()?;
            let w = |k: &str, v: String| xs.write_str(tx, &format!("{fe}/{k}"), &v);
            let version = if cfg.hostile == Some(Hostile::Version) {
                "7"
            } else {
                "1"
            };
            let nrings = if cfg.hostile == Some(Hostile::NumRings) {
                "99"
            } else {
                "2"
            };
            w("version", version.into())?;
            w("num-rings", nrings.into())?;
            for (i, (r, p)) in published.iter().enumerate() {
                w(&format!("ring-ref{i}"), r.to_string())?;
                w(&format!("event-channel-{i}"), p.to_string())?;
            }
            match xs.transaction_end(tx, true) {
                Ok(()) => break,
                Err(e) if e.is_again() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        xs.write_str(TxId::NONE, &format!("{fe}/state"), "3")?;
        let s = wait_state(&xs, &format!("{be}/state"), cfg.timeout, |s| {
            matches!(
                s,
                XenbusState::Connected | XenbusState::Closing | XenbusState::Closed
            )
        })?;
        if s != XenbusState::Connected {
            return Err(EmuError::Protocol(format!(
                "backend went to state {s} instead of Connected"
            )));
        }
        xs.write_str(TxId::NONE, &format!("{fe}/state"), "4")?;
        Ok(Frontend {
            guest,
            xs,
            fe,
            be,
            rings,
            channels,
            order: ring_order.get(),
        })
    }

    /// Linux's transport `maxsize`: half a ring.
    pub fn max_msize(&self) -> u32 {
        RingOrder::new(self.order)
            .map(|o| o.ring_size() / 2)
            .unwrap_or(4096)
    }

    /// Starts the stream over both rings (requests on ring `tag % 2`).
    pub fn stream(&mut self) -> Result<RingStream, EmuError> {
        let mut ends = Vec::new();
        for (ring, ch) in self.rings.iter().zip(self.channels.drain(..)) {
            let (producer, consumer) = ring.frontend()?;
            ends.push(RingEnd {
                consumer,
                producer,
                evtchn: ch,
                keep: Box::new(ring.clone()),
            });
        }
        RingStream::spawn(
            ends,
            StreamOptions {
                max_frame: 1 << 21,
                cap_tversion_msize: None,
            },
            Box::new(|_| {}),
        )
        .map_err(|e| EmuError::Protocol(format!("starting ring threads: {e}")))
    }

    /// Waits for the backend to leave Connected; returns its state.
    pub fn wait_backend_leaves_connected(
        &self,
        timeout: Duration,
    ) -> Result<XenbusState, EmuError> {
        wait_state(&self.xs, &format!("{}/state", self.be), timeout, |s| {
            s != XenbusState::Connected
        })
    }

    /// Injects a post-connect misbehaviour on ring 0 and rings its bell.
    pub fn misbehave(&self, h: Hostile, bell: &dyn EventChannel) -> Result<(), EmuError> {
        use std::sync::atomic::Ordering;
        let ring = &self.rings[0];
        let intf = ring.intf();
        let size = ring.ring_size();
        match h {
            Hostile::Indexes => {
                let cons = u32::from_le(intf.atomic_u32(layout::OUT_CONS)?.load(Ordering::Acquire));
                intf.atomic_u32(layout::OUT_PROD)?
                    .store(cons.wrapping_add(3 * size).to_le(), Ordering::Release);
            }
            Hostile::Oversize => {
                let (mut p, _) = ring.frontend()?;
                let mut h = BytesMut::new();
                h.extend_from_slice(&(size + 1).to_le_bytes());
                h.extend_from_slice(&[118, 1, 0]);
                p.write_partial(&h)?;
                p.publish()?;
            }
            Hostile::Garbage => {
                let mut x: u32 = 0x9e37_79b9;
                let mut page = vec![0u8; XEN_PAGE_SIZE];
                for b in page.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    *b = x as u8;
                }
                intf.write(0, &page)?;
            }
            Hostile::RingOrder30 | Hostile::BadRef | Hostile::NumRings | Hostile::Version => {}
        }
        bell.notify()?;
        Ok(())
    }

    /// Linux's close: Closing, wait for the backend, Closed.
    pub fn close(&self, timeout: Duration) -> Result<XenbusState, EmuError> {
        self.xs
            .write_str(TxId::NONE, &format!("{}/state", self.fe), "5")?;
        wait_state(&self.xs, &format!("{}/state", self.be), timeout, |s| {
            matches!(s, XenbusState::Closing | XenbusState::Closed)
        })?;
        self.xs
            .write_str(TxId::NONE, &format!("{}/state", self.fe), "6")?;
        wait_state(&self.xs, &format!("{}/state", self.be), timeout, |s| {
            s == XenbusState::Closed
        })
    }
}

/// An echo frame: `size | type 118 | tag | seq u32 | pattern`.
pub fn echo_frame(tag: u16, seq: u32, size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size);
    b.extend_from_slice(&(size as u32).to_le_bytes());
    b.extend_from_slice(&[118]);
    b.extend_from_slice(&tag.to_le_bytes());
    let mut i = 0u32;
    while b.len() < size {
        let v = (seq.wrapping_mul(31).wrapping_add(i)) as u8;
        b.extend_from_slice(&[v]);
        i += 1;
    }
    b.truncate(size);
    b.freeze()
}

fn say(line: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

/// Parsed command line of the emulator binary.
#[derive(Debug, Clone)]
pub struct EmuArgs {
    /// Handshake settings.
    pub cfg: EmuConfig,
    /// What to do once connected.
    pub scenario: String,
    /// `echo`: frame count.
    pub count: u32,
    /// `echo`: smallest frame.
    pub min: usize,
    /// `echo`: largest frame.
    pub max: usize,
    /// `echo`: frames outstanding at once.
    pub window: usize,
    /// `session`: attach name.
    pub aname: String,
    /// `session`: msize to ask for (default: Linux's, min(128 KiB, half a ring)).
    pub msize: Option<u32>,
    /// `echo`: pause before reading each reply (a slow guest: the reply ring fills).
    pub read_delay: Duration,
}

impl EmuArgs {
    /// Parses `--key value` pairs.
    pub fn parse(args: &[String]) -> Result<EmuArgs, String> {
        let mut a = EmuArgs {
            cfg: EmuConfig {
                ctl: PathBuf::new(),
                domid: DomId(1),
                devid: 0,
                order: None,
                hostile: None,
                timeout: Duration::from_secs(20),
            },
            scenario: "session".into(),
            count: 100,
            min: 7,
            max: 64,
            window: 16,
            aname: "/default".into(),
            msize: None,
            read_delay: Duration::ZERO,
        };
        let mut it = args.iter();
        while let Some(k) = it.next() {
            let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
            let num = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| format!("{k}: {v} is not a number"))
            };
            match k.as_str() {
                "--ctl" => a.cfg.ctl = PathBuf::from(v),
                "--domid" => a.cfg.domid = DomId(num(v)? as u16),
                "--devid" => a.cfg.devid = num(v)? as u32,
                "--order" => a.cfg.order = Some(num(v)? as u32),
                "--timeout-ms" => a.cfg.timeout = Duration::from_millis(num(v)?),
                "--scenario" => a.scenario = v.clone(),
                "--count" => a.count = num(v)? as u32,
                "--min" => a.min = num(v)? as usize,
                "--max" => a.max = num(v)? as usize,
                "--window" => a.window = num(v)? as usize,
                "--aname" => a.aname = v.clone(),
                "--msize" => a.msize = Some(num(v)? as u32),
                "--read-delay-us" => a.read_delay = Duration::from_micros(num(v)?),
                _ => return Err(format!("unknown option {k}")),
            }
        }
        a.cfg.hostile = match a.scenario.as_str() {
            "hostile-ring-order" => Some(Hostile::RingOrder30),
            "hostile-bad-ref" => Some(Hostile::BadRef),
            "hostile-indexes" => Some(Hostile::Indexes),
            "hostile-oversize" => Some(Hostile::Oversize),
            "hostile-garbage" => Some(Hostile::Garbage),
            "hostile-num-rings" => Some(Hostile::NumRings),
            "hostile-version" => Some(Hostile::Version),
            _ => None,
        };
        Ok(a)
    }
}

/// Runs the emulator; returns the exit status.
pub fn main_with_args(args: &[String]) -> i32 {
    let a = match EmuArgs::parse(args) {
        Ok(a) => a,
        Err(e) => {
            say(&format!("FAIL usage: {e}"));
            return 2;
        }
    };
    // A guest whose backend went away must not hang its test: give up after a deadline.
    let deadline = a.cfg.timeout * 3;
    let _ = std::thread::Builder::new()
        .name("emu-watchdog".into())
        .spawn(move || {
            std::thread::sleep(deadline);
            say(&format!("FAIL no result after {deadline:?}"));
            std::process::exit(3);
        });
    match run(&a) {
        Ok(()) => 0,
        Err(e) => {
            say(&format!("FAIL {}", crate::backend::ErrChain(&e)));
            1
        }
    }
}

fn run(a: &EmuArgs) -> Result<(), EmuError> {
    let pre_connect = matches!(
        a.cfg.hostile,
        Some(Hostile::RingOrder30 | Hostile::BadRef | Hostile::NumRings | Hostile::Version)
    );
    if pre_connect {
        return match Frontend::connect(&a.cfg) {
            Ok(_) => Err(EmuError::Protocol("backend accepted a hostile ring".into())),
            Err(EmuError::Protocol(m)) if m.contains("instead of Connected") => {
                say(&format!("REFUSED {m}"));
                Ok(())
            }
            Err(e) => Err(e),
        };
    }
    let mut f = Frontend::connect(&a.cfg)?;
    say(&format!("CONNECTED order={} rings=2", f.order));
    if let Some(h) = a.cfg.hostile {
        let bell = f.channels.remove(0);
        f.misbehave(h, &*bell)?;
        let s = f.wait_backend_leaves_connected(a.cfg.timeout)?;
        say(&format!("BACKEND-STATE {s}"));
        return Ok(());
    }
    match a.scenario.as_str() {
        "echo" => echo(&mut f, a),
        "session" => session(&mut f, a),
        "vanish" => {
            let s = f.stream()?;
            // Half a request: the header promises 100 bytes, 20 arrive; then the guest dies.
            let fr = echo_frame(5, 0, 100);
            let mut p = f.rings[1].frontend()?.0;
            p.write_partial(&fr[..20])?;
            p.publish()?;
            s.writer
                .send_frame(echo_frame(4, 1, 64))
                .map_err(|e| EmuError::Protocol(e.to_string()))?;
            std::thread::sleep(Duration::from_millis(50));
            say("VANISHING");
            std::process::exit(0);
        }
        other => Err(EmuError::Protocol(format!("unknown scenario {other}"))),
    }
}

/// Sends `count` frames of sizes min..=max (cycling), `window` outstanding, and checks each
/// echo (the backend answers with type+1, same tag, same body).
fn echo(f: &mut Frontend, a: &EmuArgs) -> Result<(), EmuError> {
    let mut s = f.stream()?;
    let span = a.max.saturating_sub(a.min) + 1;
    let mut outstanding = std::collections::HashMap::new();
    let mut next = 0u32;
    let mut done = 0u32;
    let err = |e: std::io::Error| EmuError::Protocol(e.to_string());
    while done < a.count {
        while next < a.count && outstanding.len() < a.window {
            let tag = (next % 60000) as u16;
            let size = a.min + (next as usize % span);
            let fr = echo_frame(tag, next, size);
            outstanding.insert(tag, fr.clone());
            s.writer.send_frame(fr).map_err(err)?;
            next += 1;
        }
        if !a.read_delay.is_zero() {
            std::thread::sleep(a.read_delay);
        }
        let Some(r) = s.reader.next_frame() else {
            return Err(EmuError::Protocol("stream ended".into()));
        };
        let tag = u16::from_le_bytes([r[5], r[6]]);
        let Some(sent) = outstanding.remove(&tag) else {
            return Err(EmuError::Protocol(format!("reply for unknown tag {tag}")));
        };
        if r.len() != sent.len() || r[4] != 119 || r[7..] != sent[7..] {
            return Err(EmuError::Protocol(format!("echo of tag {tag} differs")));
        }
        done += 1;
    }
    say(&format!("ECHO-OK count={done}"));
    let st = s.closer.stats();
    say(&format!(
        "STATS send_waits={} recv_stalls={}",
        st.send_waits, st.recv_stalls
    ));
    s.closer.close();
    let st = f.close(a.cfg.timeout)?;
    say(&format!("CLOSED backend={st}"));
    Ok(())
}

fn session(f: &mut Frontend, a: &EmuArgs) -> Result<(), EmuError> {
    use envoy_proto::{lopen, Fid};
    use guest_shim::client::Client;
    let s = f.stream()?;
    let closer = s.closer.clone();
    let c = Client::from_stream(s.reader, s.writer);
    c.set_timeout(Some(a.cfg.timeout));
    let e = |what: &str| {
        let w = what.to_string();
        move |e: guest_shim::client::ClientError| EmuError::Protocol(format!("{w}: {e}"))
    };
    let n = c
        .handshake(a.msize.unwrap_or(f.max_msize().min(128 << 10)), "9P2000.L")
        .map_err(e("version"))?;
    say(&format!(
        "VERSION msize={} dialect={:?}",
        n.msize, n.dialect
    ));
    let root = c.alloc_fid();
    c.attach(root, Fid::NOFID, "root", &a.aname, 0)
        .map_err(e("attach"))?;
    say("ATTACHED");
    let dir = c.alloc_fid();
    c.walk(root, dir, &[]).map_err(e("walk"))?;
    let name = format!("xen-{}.txt", f.guest.ctl().domid());
    c.lcreate(dir, &name, lopen::RDWR | lopen::CREATE, 0o644, 0)
        .map_err(e("lcreate"))?;
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let w = c.write_all(dir, 0, &body).map_err(e("write"))?;
    say(&format!("WROTE {w}"));
    c.clunk(dir).map_err(e("clunk"))?;
    let rf = c.alloc_fid();
    let q = c.walk(root, rf, &[&name]).map_err(e("walk file"))?;
    say(&format!("WALKED {}", q.len()));
    c.lopen(rf, lopen::RDONLY).map_err(e("open"))?;
    let back = c.read_all(rf).map_err(e("read"))?;
    if back != body {
        return Err(EmuError::Protocol(format!(
            "read back {} bytes that differ",
            back.len()
        )));
    }
    say(&format!("READ {}", back.len()));
    // Interrupted request: Linux cannot cancel on this transport, so it flushes.
    let t = c
        .send(
            envoy_proto::Tread {
                fid: rf,
                offset: 0,
                count: 4096,
            }
            .into(),
        )
        .map_err(e("send"))?;
    c.flush(t).map_err(e("flush"))?;
    let flushed = match c.wait(t) {
        Ok(_) => "replied-before-flush",
        Err(guest_shim::client::ClientError::Flushed(_)) => "flushed",
        Err(x) => return Err(e("wait flushed")(x)),
    };
    say(&format!("FLUSH {flushed}"));
    c.clunk(rf).map_err(e("clunk"))?;
    c.clunk(root).map_err(e("clunk root"))?;
    say("SESSION-OK");
    closer.close();
    let st = f.close(a.cfg.timeout)?;
    say(&format!("CLOSED backend={st}"));
    Ok(())
}
