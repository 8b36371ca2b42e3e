//! End to end over the Xen transport without a hypervisor: the simulated Xen
//! (`envoy_xen::sim`), envoyd serving `--listen xen-sim:DIR`, and the Linux-like frontend
//! emulator in a separate process doing a real 9P2000.L session (version, attach, walk,
//! create, write, read, flush, clunk) over two grant rings.
//!
//! The emulator process is this test binary re-executed on the ignored entry point
//! [`xen_frontend_emulator_process`] (a test binary of this package cannot name another
//! package's binary), with its arguments in `ENVOY_XEN_EMU_ARGS`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dom0_envoyd::config::{Config, Endpoint};
use dom0_envoyd::Server;
use envoy_xen::sim::SimXen;
use envoy_xen::{DomId, XenbusState};

const EMU_ENV: &str = "ENVOY_XEN_EMU_ARGS";

/// Entry point of the emulator child process (does nothing unless spawned by the tests
/// below with `ENVOY_XEN_EMU_ARGS` set).
#[test]
#[ignore = "child-process entry point of the xen end-to-end tests"]
fn xen_frontend_emulator_process() {
    let Ok(args) = std::env::var(EMU_ENV) else {
        return;
    };
    let args: Vec<String> = args.split('\u{1f}').map(String::from).collect();
    std::process::exit(envoy_xen::emu::main_with_args(&args));
}

struct Emu(Option<Child>);

impl Drop for Emu {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn emu(sim: &SimXen, domid: u16, extra: &[&str]) -> Emu {
    let mut args = vec![
        "--ctl".to_string(),
        sim.ctl_path().display().to_string(),
        "--domid".into(),
        domid.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "xen_frontend_emulator_process",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(EMU_ENV, args.join("\u{1f}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Emu(Some(child))
}

fn finish(mut e: Emu) -> (bool, String) {
    let o = e.0.take().unwrap().wait_with_output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

struct Setup {
    server: Option<dom0_envoyd::ServerHandle>,
    sim: SimXen,
    _dir: tempfile::TempDir,
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
    }
}

fn setup(guests: &[u16]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let simdir = dir.path().join("sim");
    std::fs::create_dir(&simdir).unwrap();
    let sim = SimXen::start(&simdir).unwrap();
    for &g in guests {
        sim.create_domain(DomId(g), 4096).unwrap();
        sim.add_9pfs_device(DomId(g), 0, "envoy");
    }
    let mut cfg = Config::for_dir(dir.path().join("data"));
    // A local socket too, to look at what the guests did.
    cfg.listen = vec![
        Endpoint::Xen(Some(simdir)),
        Endpoint::Unix(dir.path().join("envoy.sock")),
    ];
    let server = Server::start(cfg).unwrap();
    Setup {
        server: Some(server),
        sim,
        _dir: dir,
    }
}

#[test]
fn xen_session_version_attach_walk_write_read_flush_clunk_ok() {
    let s = setup(&[7]);
    let server = s.server.as_ref().unwrap();
    // The guest's domain id is its principal: grant it the default image.
    server
        .access()
        .grant("/", "xen:domid=7 mount-rw any")
        .unwrap();
    assert!(s.sim.wait_state(
        "/local/domain/0/backend/9pfs/7/0/state",
        XenbusState::InitWait,
        Duration::from_secs(20)
    ));
    let (ok, out) = finish(emu(
        &s.sim,
        7,
        &["--scenario", "session", "--aname", "/default"],
    ));
    assert!(ok, "{out}");
    // Linux caps msize at half a ring (order 9: 512 KiB); the emulator asks 128 KiB.
    assert!(out.contains("CONNECTED order=9 rings=2"), "{out}");
    assert!(out.contains("VERSION msize=131072 dialect=P2000L"), "{out}");
    assert!(out.contains("ATTACHED"), "{out}");
    assert!(out.contains("WROTE 100000"), "{out}");
    assert!(out.contains("WALKED 1"), "{out}");
    assert!(out.contains("READ 100000"), "{out}");
    assert!(out.contains("FLUSH "), "{out}");
    assert!(out.contains("SESSION-OK"), "{out}");
    assert!(out.contains("CLOSED backend=6"), "{out}");
    // The file the guest wrote is in the image, seen from a local client.
    let ep = guest_shim::endpoint::Endpoint::Unix(s._dir.path().join("envoy.sock"));
    let c = guest_shim::client::Client::connect_version(&ep, 65536, "9P2000.L").unwrap();
    let root = c.alloc_fid();
    c.attach(root, envoy_proto::Fid::NOFID, "root", "/default", 0)
        .unwrap();
    let f = c.alloc_fid();
    c.walk(root, f, &["xen-7.txt"]).unwrap();
    c.lopen(f, envoy_proto::lopen::RDONLY).unwrap();
    let data = c.read_all(f).unwrap();
    let want: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(data, want);
    // The guest's exit destroyed its domain; the backend forgot the device.
    assert!(s.sim.wait_for(
        "/local/domain/0/backend/9pfs/7/0/state",
        Duration::from_secs(20),
        |v| v.is_none()
    ));
}

#[test]
fn xen_guest_without_credentials_refused_other_guest_served() {
    let s = setup(&[8, 9]);
    let server = s.server.as_ref().unwrap();
    server
        .access()
        .grant("/", "xen:domid=9 mount-rw any")
        .unwrap();
    let denied = emu(&s.sim, 8, &["--scenario", "session", "--aname", "/default"]);
    let allowed = emu(&s.sim, 9, &["--scenario", "session", "--aname", "/default"]);
    let (ok, out) = finish(denied);
    assert!(!ok, "{out}");
    assert!(out.contains("VERSION"), "{out}");
    assert!(out.contains("FAIL attach"), "{out}");
    let (ok, out) = finish(allowed);
    assert!(ok, "{out}");
    assert!(out.contains("SESSION-OK"), "{out}");
}

/// A guest asking for a 1 MiB msize on 8 KiB rings gets the ring size: the transport caps
/// Tversion so that no reply can outgrow a ring, and the session still moves 100 KB.
#[test]
fn xen_msize_above_ring_capped_to_ring_size_session_ok() {
    let s = setup(&[11]);
    s.server
        .as_ref()
        .unwrap()
        .access()
        .grant("/", "xen:domid=11 mount-rw any")
        .unwrap();
    let (ok, out) = finish(emu(
        &s.sim,
        11,
        &[
            "--scenario",
            "session",
            "--order",
            "2",
            "--msize",
            "1048576",
        ],
    ));
    assert!(ok, "{out}");
    assert!(out.contains("CONNECTED order=2 rings=2"), "{out}");
    assert!(out.contains("VERSION msize=8192 "), "{out}");
    assert!(out.contains("READ 100000"), "{out}");
    assert!(out.contains("SESSION-OK"), "{out}");
}

#[test]
fn xen_endpoints_parse_and_display() {
    use dom0_envoyd::config::Args;
    use std::path::PathBuf;
    let e: Endpoint = "xen".parse().unwrap();
    assert_eq!(e, Endpoint::Xen(None));
    assert_eq!(e.to_string(), "xen");
    let e: Endpoint = "xen-sim:/run/sim".parse().unwrap();
    assert_eq!(e, Endpoint::Xen(Some(PathBuf::from("/run/sim"))));
    assert_eq!(e.to_string(), "xen-sim:/run/sim");
    assert!("xen-sim:".parse::<Endpoint>().is_err());
    assert!("xenx".parse::<Endpoint>().is_err());
    // --xen alone serves Xen only; with --listen it adds to them.
    let c = Config::from_args(<Args as clap::Parser>::parse_from(["envoyd", "--xen"])).unwrap();
    assert_eq!(c.listen, vec![Endpoint::Xen(None)]);
    let c = Config::from_args(<Args as clap::Parser>::parse_from([
        "envoyd",
        "--xen",
        "--listen",
        "unix:/tmp/e.sock",
    ]))
    .unwrap();
    assert_eq!(c.listen.len(), 2);
}

/// A guest that dies with half a request in its ring: envoyd's session for it ends, nothing
/// is left registered, and the next guest is served.
#[test]
fn xen_guest_vanishing_mid_request_session_released_next_guest_served() {
    let s = setup(&[12, 13]);
    let server = s.server.as_ref().unwrap();
    server
        .access()
        .grant("/", "xen:domid=13 mount-rw any")
        .unwrap();
    let (ok, out) = finish(emu(&s.sim, 12, &["--scenario", "vanish"]));
    assert!(ok, "{out}");
    assert!(out.contains("VANISHING"), "{out}");
    assert!(s.sim.wait_for(
        "/local/domain/0/backend/9pfs/12/0/state",
        Duration::from_secs(20),
        |v| v.is_none()
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while server.connection_count() != 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(server.connection_count(), 0);
    let (ok, out) = finish(emu(&s.sim, 13, &["--scenario", "session"]));
    assert!(ok, "{out}");
    assert!(out.contains("SESSION-OK"), "{out}");
}
