//! The `envoyd` binary: CLI validation, Unix-socket serving, orderly SIGTERM shutdown, and a
//! `kill -9` in the middle of namespace updates leaving a consistent tree.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use envoy_proto::{unlinkat, Fid};
use guest_shim::endpoint::Endpoint;

fn spawn(data: &Path, sock: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_envoyd"))
        .arg("--data")
        .arg(data)
        .arg("--listen")
        .arg(format!("unix:{}", sock.display()))
        .arg("--workers")
        .arg("4")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn connect(sock: &Path) -> Client {
    let ep: Endpoint = format!("unix:{}", sock.display()).parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Client::connect(&ep) {
            Ok(c) => {
                c.set_timeout(Some(Duration::from_secs(20)));
                c.handshake(65536, "9P2000.L").unwrap();
                c.attach(ROOT, Fid::NOFID, "", "/default", 0).unwrap();
                return c;
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("envoyd did not come up: {e}"),
        }
    }
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "envoyd did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn binary_bad_arguments_exit_2() {
    for args in [&["--listen", "udp:1.2.3.4:5"][..], &["--cache-mb", "0"][..]] {
        let st = Command::new(env!("CARGO_BIN_EXE_envoyd"))
            .args(args)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(st.code(), Some(2), "{args:?}");
    }
}

#[test]
fn binary_unix_socket_sigterm_orderly_then_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let sock = dir.path().join("envoyd.sock");
    let mut child = spawn(&data, &sock);
    let c = connect(&sock);
    create_file(&c, ROOT, "kept", b"survives a restart");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(wait_exit(&mut child).success());
    drop(c);
    assert!(envoy_storage::check::check(&data).is_clean());
    let mut child = spawn(&data, &sock);
    let c = connect(&sock);
    assert_eq!(read_file(&c, ROOT, "kept").unwrap(), b"survives a restart");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn binary_kill9_during_updates_leaves_consistent_tree() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let sock = dir.path().join("envoyd.sock");
    let mut child = spawn(&data, &sock);
    let c = connect(&sock);
    c.mkdir(ROOT, "a", 0o755, 0).unwrap();
    c.mkdir(ROOT, "b", 0o755, 0).unwrap();
    let worker = std::thread::spawn(move || {
        let a = Fid(2);
        let b = Fid(3);
        c.walk(ROOT, a, &["a"]).unwrap();
        c.walk(ROOT, b, &["b"]).unwrap();
        for i in 0u32.. {
            let name = format!("f{i}");
            let f = c.alloc_fid();
            if c.walk(a, f, &[]).is_err() {
                break;
            }
            if c.lcreate(f, &name, O_RDWR, 0o644, 0).is_err() {
                break;
            }
            if c.write_all(f, 0, name.as_bytes()).is_err() || c.clunk(f).is_err() {
                break;
            }
            let step = if i % 3 == 0 {
                c.renameat(a, &name, b, &name)
            } else if i % 3 == 1 {
                c.unlinkat(a, &name, 0)
            } else {
                c.renameat(a, &name, a, &format!("r{i}"))
            };
            if step.is_err() {
                break;
            }
            let _ = unlinkat::REMOVEDIR;
        }
    });
    std::thread::sleep(Duration::from_millis(700));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    worker.join().unwrap();
    // Restart in process: the start-up scan runs; every name must resolve to its data.
    let server = dom0_envoyd::Server::start(common::config(&data, 1024)).unwrap();
    let ep: Endpoint = format!("tcp:{}", server.tcp_addr().unwrap())
        .parse()
        .unwrap();
    let c = Client::connect(&ep).unwrap();
    c.handshake(65536, "9P2000.L").unwrap();
    c.attach(ROOT, Fid::NOFID, "", "/default", 0).unwrap();
    let mut files = 0;
    for d in ["a", "b"] {
        for name in list(&c, ROOT, d) {
            let content = read_file(&c, ROOT, &format!("{d}/{name}")).unwrap();
            let expect = name.replacen('r', "f", 1);
            assert!(
                content.is_empty() || content == expect.as_bytes(),
                "{d}/{name}: {content:?}"
            );
            files += 1;
        }
    }
    assert!(files > 0);
    drop(c);
    server.shutdown();
    let report = envoy_storage::check::check(&data);
    assert!(report.is_clean(), "{report}");
}
