//! `envoy-shim` end to end on the host: the relay between a Unix socket and diod over TCP,
//! driven by the client library, and the binary's error reporting.
//!
//! The `mount` subcommand needs root and the kernel's 9p modules; it is exercised in the QEMU
//! guest (scripts/guest). Here only its failures before `mount(2)` are checked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use envoy_proto::Fid;
use guest_shim::client::Client;
use guest_shim::Endpoint;

const SHIM: &str = env!("CARGO_BIN_EXE_envoy-shim");

/// A running `envoy-shim relay`, killed on drop.
struct Relay {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Relay {
    fn start(connect: &str) -> Relay {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("envoy.sock");
        let child = Command::new(SHIM)
            .args(["relay", "--connect", connect, "--listen"])
            .arg(format!("unix:{}", socket.display()))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        // The socket file appears at bind(2), a moment before listen(2): probe with a
        // connection (which the relay serves as a short session).
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "relay did not listen on {socket:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Relay {
            child,
            socket,
            _dir: dir,
        }
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::Unix(self.socket.clone())
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn session(ep: &Endpoint, aname: &str) -> Client {
    common::session(ep, 65536, aname)
}

fn run_shim(args: &[&str]) -> Output {
    Command::new(SHIM)
        .args(args)
        .stdin(Stdio::null())
        .env("RUST_LOG", "off")
        .output()
        .unwrap()
}

#[test]
fn relay_unix_to_diod_battery_passes_and_next_connections_work() {
    let Some(d) = common::start_diod("relay_unix_to_diod_battery_passes_and_next_connections_work")
    else {
        return;
    };
    let relay = Relay::start(&d.endpoint().to_string());
    let aname = d.aname();

    let c = session(&relay.endpoint(), &aname);
    common::file_battery(&c, d.export.path());
    drop(c);

    // A client that disconnects in the middle of a frame...
    let raw = Client::connect_version(&relay.endpoint(), 65536, "9P2000.L").unwrap();
    raw.send_raw(&[64, 0, 0, 0, 110, 1, 0, 0, 0]).unwrap();
    drop(raw);

    // ...is followed by one that works.
    std::fs::write(d.export.path().join("after"), b"still aligned").unwrap();
    let c = session(&relay.endpoint(), &aname);
    let f = c.alloc_fid();
    c.walk(Fid(0), f, &["after"]).unwrap();
    c.lopen(f, envoy_proto::lopen::RDONLY).unwrap();
    assert_eq!(c.read_all(f).unwrap(), b"still aligned");
    c.clunk(f).unwrap();
}

#[test]
fn relay_pipelined_clients_one_after_another_complete() {
    let Some(d) = common::start_diod("relay_pipelined_clients_one_after_another_complete") else {
        return;
    };
    std::fs::write(d.export.path().join("f"), vec![7u8; 100_000]).unwrap();
    let relay = Relay::start(&d.endpoint().to_string());
    for _ in 0..3 {
        let c = std::sync::Arc::new(session(&relay.endpoint(), &d.aname()));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = std::sync::Arc::clone(&c);
                std::thread::spawn(move || {
                    let f = c.alloc_fid();
                    c.walk(Fid(0), f, &["f"]).unwrap();
                    c.lopen(f, envoy_proto::lopen::RDONLY).unwrap();
                    assert_eq!(c.read_all(f).unwrap(), vec![7u8; 100_000]);
                    c.clunk(f).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}

#[test]
fn relay_unreachable_host_closes_guest_connection_and_keeps_listening() {
    // Port 1: privileged and unused, so never grabbed by a server of a parallel test.
    let relay = Relay::start("tcp:127.0.0.1:1");
    for _ in 0..2 {
        let c = Client::connect(&relay.endpoint()).unwrap();
        let err = c.handshake(8192, "9P2000.L").unwrap_err();
        assert!(err.is_disconnected(), "{err}");
    }
    assert!(UnixStream::connect(&relay.socket).is_ok());
}

#[test]
fn relay_listen_on_tcp_is_refused_with_one_sentence() {
    let out = run_shim(&[
        "relay",
        "--connect",
        "tcp:127.0.0.1:1",
        "--listen",
        "tcp:127.0.0.1:2",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("envoy-shim: --listen must be unix:PATH"),
        "{err}"
    );
}

#[test]
fn relay_bad_endpoint_is_a_usage_error() {
    let out = run_shim(&[
        "relay",
        "--connect",
        "udp:1.2.3.4:5",
        "--listen",
        "unix:/tmp/x",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("unknown endpoint kind"), "{err}");
}

#[test]
fn mount_unreachable_host_fails_before_mounting() {
    // Port 1 is never a test server's, so this cannot reach mount(2) on the host.
    let dir = tempfile::tempdir().unwrap();
    let ep = "tcp:127.0.0.1:1".to_string();
    let mnt = dir.path().to_str().unwrap();
    let out = run_shim(&["mount", "--connect", &ep, "--aname", "/x", mnt]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("envoy-shim: cannot connect to {ep}")),
        "{err}"
    );
    assert!(err.contains("envoyd running"), "{err}");
    assert!(is_empty_dir(dir.path()));
}

#[test]
fn mount_daemon_reports_child_failure_in_parent() {
    // Port 1 is never a test server's, so this cannot reach mount(2) on the host.
    let dir = tempfile::tempdir().unwrap();
    let ep = "tcp:127.0.0.1:1".to_string();
    let mnt = dir.path().to_str().unwrap();
    let out = run_shim(&["mount", "--daemon", "--connect", &ep, "--aname", "/x", mnt]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains(&format!("cannot connect to {ep}")), "{err}");
}

#[test]
fn mount_reserved_option_fails_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().to_str().unwrap();
    let out = run_shim(&[
        "mount",
        "--connect",
        "tcp:127.0.0.1:1",
        "--aname",
        "/x",
        "--opt",
        "cache=loose,trans=tcp",
        mnt,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("\"trans=tcp\" is set by envoy-shim itself"),
        "{err}"
    );
}

fn is_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p).unwrap().next().is_none()
}

#[test]
fn relay_socket_in_use_is_refused_and_stale_socket_is_replaced() {
    let first = Relay::start("tcp:127.0.0.1:1");
    let listen = format!("unix:{}", first.socket.display());
    let out = run_shim(&["relay", "--connect", "tcp:127.0.0.1:1", "--listen", &listen]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("envoy-shim: cannot listen on"), "{err}");
    assert!(err.contains("in use"), "{err}");

    // Killed without cleaning up, the first relay leaves its socket file behind.
    let mut first = first;
    let socket = first.socket.clone();
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    assert!(socket.exists());
    let mut second = Command::new(SHIM)
        .args(["relay", "--connect", "tcp:127.0.0.1:1", "--listen", &listen])
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "second relay did not listen");
        assert!(second.try_wait().unwrap().is_none(), "second relay exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    second.kill().unwrap();
    second.wait().unwrap();
    drop(first);
}

#[test]
fn relay_sigterm_removes_socket_and_exits_zero() {
    let mut relay = Relay::start("tcp:127.0.0.1:1");
    let pid = nix::unistd::Pid::from_raw(relay.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = relay.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!relay.socket.exists());
}
