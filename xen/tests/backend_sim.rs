//! The 9pfs backend against the simulated Xen, with the Linux-like frontend emulator in
//! separate processes (`xen-frontend-emu`). The backend answers every frame with an echo
//! (type + 1, same tag, same body), so these tests exercise the transport alone; the 9P
//! session against envoyd is in `dom0-envoyd/tests/xen_e2e.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_xen::backend::{Backend, BackendConfig, XenConnection};
use envoy_xen::sim::client::{SimCtl, SimEvtchns, SimGrants};
use envoy_xen::sim::SimXen;
use envoy_xen::stream::StreamStats;
use envoy_xen::xenstore::client::XsClient;
use envoy_xen::{DomId, XenbusState};

const EMU: &str = env!("CARGO_BIN_EXE_xen-frontend-emu");
const T: Duration = Duration::from_secs(30);

struct Harness {
    sim: SimXen,
    stop: Arc<AtomicBool>,
    backend: Option<std::thread::JoinHandle<()>>,
    connections: Arc<AtomicUsize>,
    /// Backend-side counters of every stream that ended.
    stats: Arc<Mutex<Vec<StreamStats>>>,
    delay: Duration,
    // Last: the sockets live in it.
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let sim = SimXen::start(dir.path()).unwrap();
        Harness {
            _dir: dir,
            sim,
            stop: Arc::new(AtomicBool::new(false)),
            backend: None,
            connections: Arc::new(AtomicUsize::new(0)),
            stats: Arc::new(Mutex::new(Vec::new())),
            delay: Duration::ZERO,
        }
    }

    fn start_backend(&mut self) {
        let ctl = Arc::new(SimCtl::connect(&self.sim.ctl_path(), DomId(0)).unwrap());
        // dom0 reaches xenstored through its socket path, as with a real daemon.
        let xs = XsClient::connect_socket(&self.sim.xenstored_path()).unwrap();
        let backend = Backend::new(
            Arc::new(xs),
            Arc::new(SimGrants::new(Arc::clone(&ctl))),
            Arc::new(SimEvtchns::new(ctl)),
            BackendConfig::default(),
        );
        let stop = Arc::clone(&self.stop);
        let n = Arc::clone(&self.connections);
        let delay = self.delay;
        let stats = Arc::clone(&self.stats);
        self.backend = Some(std::thread::spawn(move || {
            backend
                .run(&stop, &mut |c: XenConnection| {
                    n.fetch_add(1, Ordering::SeqCst);
                    let stats = Arc::clone(&stats);
                    std::thread::spawn(move || {
                        let st = echo(c, delay);
                        stats.lock().unwrap().push(st);
                    });
                })
                .unwrap();
        }));
    }

    fn guest(&self, domid: u16) {
        self.sim.create_domain(DomId(domid), 4096).unwrap();
        self.sim.add_9pfs_device(DomId(domid), 0, "share");
    }

    fn be_state(&self, domid: u16) -> String {
        format!("/local/domain/0/backend/9pfs/{domid}/0/state")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(b) = self.backend.take() {
            let _ = b.join();
        }
    }
}

/// The backend's peer: echoes every frame back; returns the stream's counters.
fn echo(c: XenConnection, delay: Duration) -> StreamStats {
    let mut s = c.stream;
    while let Some(f) = s.reader.next_frame() {
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let mut r = f.to_vec();
        r[4] = r[4].wrapping_add(1);
        if s.writer.send_frame(r.into()).is_err() {
            break;
        }
    }
    s.closer.close();
    s.closer.stats()
}

/// Kills the emulator if a test fails before collecting it.
struct Emu(Option<Child>);

impl Drop for Emu {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn emu(h: &Harness, domid: u16, args: &[&str]) -> Emu {
    let mut a = vec![
        "--ctl".to_string(),
        h.sim.ctl_path().display().to_string(),
        "--domid".into(),
        domid.to_string(),
    ];
    a.extend(args.iter().map(|s| s.to_string()));
    Emu(Some(
        Command::new(EMU)
            .args(&a)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    ))
}

fn finish(mut e: Emu) -> (bool, String) {
    let o = e.0.take().unwrap().wait_with_output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

#[test]
fn handshake_backend_first_connects_echoes_and_closes() {
    let mut h = Harness::new();
    h.start_backend();
    h.guest(1);
    assert!(h.sim.wait_state(&h.be_state(1), XenbusState::InitWait, T));
    // Features are published before InitWait.
    let be = "/local/domain/0/backend/9pfs/1/0";
    assert_eq!(h.sim.read(&format!("{be}/versions")).unwrap(), b"1");
    let rings: u32 = String::from_utf8(h.sim.read(&format!("{be}/max-rings")).unwrap())
        .unwrap()
        .parse()
        .unwrap();
    assert!(rings >= 2);
    assert_eq!(
        h.sim.read(&format!("{be}/max-ring-page-order")).unwrap(),
        b"9"
    );
    let (ok, out) = finish(emu(
        &h,
        1,
        &[
            "--scenario",
            "echo",
            "--count",
            "300",
            "--min",
            "7",
            "--max",
            "3000",
        ],
    ));
    assert!(ok, "{out}");
    assert!(out.contains("CONNECTED order=9 rings=2"), "{out}");
    assert!(out.contains("ECHO-OK count=300"), "{out}");
    assert!(out.contains("CLOSED backend=6"), "{out}");
    assert_eq!(h.connections.load(Ordering::SeqCst), 1);
}

#[test]
fn handshake_frontend_first_waits_for_backend_then_connects() {
    let mut h = Harness::new();
    h.guest(1);
    let child = emu(&h, 1, &["--scenario", "echo", "--count", "50"]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        h.sim.read(&h.be_state(1)).unwrap(),
        b"1",
        "nobody answered yet"
    );
    h.start_backend();
    let (ok, out) = finish(child);
    assert!(ok, "{out}");
    assert!(out.contains("ECHO-OK count=50"), "{out}");
}

#[test]
fn ring_orders_2_to_9_carry_frames_up_to_half_a_ring() {
    let mut h = Harness::new();
    h.start_backend();
    for (i, order) in (2..=9u32).enumerate() {
        let domid = 10 + i as u16;
        h.guest(domid);
        let half = (1usize << (order + 11)) / 2;
        let count = if order >= 8 { "24" } else { "120" };
        let (ok, out) = finish(emu(
            &h,
            domid,
            &[
                "--scenario",
                "echo",
                "--order",
                &order.to_string(),
                "--count",
                count,
                "--min",
                "7",
                "--max",
                &half.to_string(),
                "--window",
                "8",
            ],
        ));
        assert!(ok, "order {order}: {out}");
        assert!(out.contains(&format!("CONNECTED order={order}")), "{out}");
        assert!(out.contains("ECHO-OK"), "order {order}: {out}");
    }
}

/// Frames of 4097 bytes (odd, more than half of the 8 KiB order-2 ring): each ring receives
/// 8192 of them, so frames start at every one of the 8192 offsets and about half of them
/// wrap, splitting at every point of the frame (the 7-byte header included).
#[test]
fn ring_wraparound_every_offset_order2_echoes_intact() {
    let mut h = Harness::new();
    h.start_backend();
    h.guest(2);
    let (ok, out) = finish(emu(
        &h,
        2,
        &[
            "--scenario",
            "echo",
            "--order",
            "2",
            "--count",
            "16384",
            "--min",
            "4097",
            "--max",
            "4097",
            "--window",
            "4",
        ],
    ));
    assert!(ok, "{out}");
    assert!(out.contains("ECHO-OK count=16384"), "{out}");
}

fn stat(out: &str, key: &str) -> u64 {
    out.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {out}"))
}

/// A slow backend and 1000 requests outstanding: the request rings fill and the frontend
/// waits for whole-message space (counted by its stream), and every frame still arrives.
#[test]
fn request_ring_full_frontend_waits_all_echoed() {
    let mut h = Harness::new();
    h.delay = Duration::from_micros(300);
    h.start_backend();
    h.guest(3);
    let (ok, out) = finish(emu(
        &h,
        3,
        &[
            "--scenario",
            "echo",
            "--order",
            "2",
            "--count",
            "2000",
            "--min",
            "7",
            "--max",
            "2000",
            "--window",
            "1000",
        ],
    ));
    assert!(ok, "{out}");
    assert!(out.contains("ECHO-OK count=2000"), "{out}");
    assert!(
        stat(&out, "send_waits=") > 0,
        "the request ring never filled: {out}"
    );
}

/// A slow guest reader: its queue fills, it stops consuming, the reply rings fill and the
/// backend waits for space before publishing each whole reply.
#[test]
fn reply_ring_full_backend_waits_all_echoed() {
    let mut h = Harness::new();
    h.start_backend();
    h.guest(6);
    let (ok, out) = finish(emu(
        &h,
        6,
        &[
            "--scenario",
            "echo",
            "--order",
            "2",
            "--count",
            "1500",
            "--min",
            "7",
            "--max",
            "2000",
            "--window",
            "1000",
            "--read-delay-us",
            "200",
        ],
    ));
    assert!(ok, "{out}");
    assert!(out.contains("ECHO-OK count=1500"), "{out}");
    assert!(
        stat(&out, "recv_stalls=") > 0,
        "the guest reader never stalled: {out}"
    );
    let deadline = std::time::Instant::now() + T;
    while h.stats.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let st = h.stats.lock().unwrap().clone();
    assert_eq!(st.len(), 1);
    assert!(st[0].send_waits > 0, "the reply ring never filled: {st:?}");
}

#[test]
fn guest_vanishing_mid_request_released_backend_serves_others() {
    let mut h = Harness::new();
    h.start_backend();
    h.guest(4);
    let (ok, out) = finish(emu(&h, 4, &["--scenario", "vanish"]));
    assert!(ok, "{out}");
    assert!(out.contains("VANISHING"), "{out}");
    // The sim's toolstack removed the guest's directories; the backend forgot the device.
    assert!(h.sim.wait_for(&h.be_state(4), T, |v| v.is_none()));
    assert!(!h.sim.domain_alive(DomId(4)));
    h.guest(5);
    let (ok, out) = finish(emu(&h, 5, &["--scenario", "echo", "--count", "100"]));
    assert!(ok, "{out}");
    assert!(out.contains("ECHO-OK count=100"), "{out}");
}

#[test]
fn hostile_frontends_disconnected_good_guest_unaffected() {
    let mut h = Harness::new();
    h.start_backend();
    h.guest(20);
    // A good guest streams the whole time.
    let good = emu(
        &h,
        20,
        &[
            "--scenario",
            "echo",
            "--count",
            "4000",
            "--min",
            "7",
            "--max",
            "5000",
            "--window",
            "8",
        ],
    );
    let cases = [
        ("hostile-ring-order", "REFUSED backend went to state 5"),
        ("hostile-bad-ref", "REFUSED backend went to state 5"),
        ("hostile-num-rings", "REFUSED backend went to state 5"),
        ("hostile-version", "REFUSED backend went to state 5"),
        ("hostile-indexes", "BACKEND-STATE 5"),
        ("hostile-oversize", "BACKEND-STATE 5"),
        ("hostile-garbage", "BACKEND-STATE 5"),
    ];
    for (i, (scenario, want)) in cases.iter().enumerate() {
        let domid = 30 + i as u16;
        h.guest(domid);
        let (ok, out) = finish(emu(&h, domid, &["--scenario", scenario]));
        assert!(ok, "{scenario}: {out}");
        assert!(out.contains(want), "{scenario}: {out}");
        // The emulator exited, so the guest is gone and the backend forgot the device.
        assert!(
            h.sim.wait_for(&h.be_state(domid), T, |v| v.is_none()),
            "{scenario}"
        );
    }
    let (ok, out) = finish(good);
    assert!(ok, "{out}");
    assert!(out.contains("ECHO-OK count=4000"), "{out}");
}

/// Linux's close sequence (Closing, then Closed) releases the rings; a frontend that comes
/// back to Initialising is offered the device again (InitWait).
#[test]
fn frontend_closed_then_initialising_backend_offers_again() {
    use envoy_xen::emu::{EmuConfig, Frontend};
    let mut h = Harness::new();
    h.start_backend();
    h.guest(40);
    let cfg = EmuConfig {
        ctl: h.sim.ctl_path(),
        domid: DomId(40),
        devid: 0,
        order: Some(4),
        hostile: None,
        timeout: T,
    };
    let f = Frontend::connect(&cfg).unwrap();
    assert_eq!(f.order, 4);
    assert_eq!(f.close(T).unwrap(), XenbusState::Closed);
    h.sim.write("/local/domain/40/device/9pfs/0/state", b"1");
    assert!(h.sim.wait_state(&h.be_state(40), XenbusState::InitWait, T));
    drop(f);
    // The guest is gone with its claim: the backend forgets the device.
    assert!(h.sim.wait_for(&h.be_state(40), T, |v| v.is_none()));
}

/// Throughput of the transport alone (simulated grants, eventfd event channels, echoing
/// backend): 64 KiB frames on order-9 rings, 16 outstanding. A report, not a check:
/// `cargo test --release -p envoy-xen --test backend_sim -- --ignored --nocapture`.
#[test]
#[ignore = "measurement; run in release with --nocapture"]
fn echo_throughput_report() {
    let mut h = Harness::new();
    h.start_backend();
    h.guest(50);
    let (count, size) = (4000u64, 65536u64);
    let t0 = std::time::Instant::now();
    let (ok, out) = finish(emu(
        &h,
        50,
        &[
            "--scenario",
            "echo",
            "--count",
            &count.to_string(),
            "--min",
            &size.to_string(),
            "--max",
            &size.to_string(),
            "--window",
            "16",
        ],
    ));
    let secs = t0.elapsed().as_secs_f64();
    assert!(ok, "{out}");
    let mb = (count * size) as f64 / (1 << 20) as f64;
    println!(
        "xen sim echo: {count} x {size} B each way in {secs:.2} s = {:.0} MiB/s per direction",
        mb / secs
    );
}
