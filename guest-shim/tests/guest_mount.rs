//! `envoy-shim mount` and `relay` inside the QEMU test guest (scripts/guest) against diod on
//! the host, over TCP and virtio-serial. Ignored by default: it boots a guest (~40 s under
//! TCG) and needs root, diod, socat, QEMU, the guest kernel cache (scripts/install-deps.sh) and
//! the static binary (see README.md), named by `ENVOY_SHIM_STATIC`:
//!
//! ```sh
//! ENVOY_SHIM_STATIC=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/envoy-shim \
//!     cargo test -p guest-shim --test guest_mount -- --ignored
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "boots a QEMU guest; needs root, diod, socat, qemu and ENVOY_SHIM_STATIC"]
fn guest_mount_tcp_serial_unix_battery_passes() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let shim = PathBuf::from(
        std::env::var("ENVOY_SHIM_STATIC").expect("set ENVOY_SHIM_STATIC to the static binary"),
    );
    assert!(shim.is_file(), "{} is not a file", shim.display());
    let d =
        common::start_diod("guest_mount_tcp_serial_unix_battery_passes").expect("diod is required");
    std::fs::write(d.export.path().join("from-host"), "from the host\n").unwrap();

    // QEMU connects the port's host side to this socket; socat carries it to diod.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vserial.sock");
    let _socat = Kill(
        Command::new("socat")
            .arg(format!("UNIX-LISTEN:{},fork", sock.display()))
            .arg(format!("TCP:127.0.0.1:{}", d.port))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "socat did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }

    let out = Command::new(repo.join("scripts/guest/run.sh"))
        .arg("--script")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guest/shim-mount.sh"))
        .args([
            "--netdev-user",
            "--timeout",
            "300",
            "--virtio-serial-socket",
        ])
        .arg(&sock)
        .arg("--append")
        .arg(format!("envoy.port={} envoy.aname={}", d.port, d.aname()))
        .arg("--add")
        .arg(format!("{}:/bin/envoy-shim", shim.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "guest run failed");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}
