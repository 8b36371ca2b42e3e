//! A real Linux v9fs client (the QEMU test guest of `scripts/guest/`) runs
//! `tests/guest/v9fs-battery.sh` against an in-process envoyd, in 9P2000.L and 9P2000.u, and
//! the tree workload `tests/guest/v9fs-workload.sh`.
//! Boots a guest per dialect (~25 s each under TCG), so it is opt-in:
//! `cargo test -p dom0-envoyd --test guest_v9fs -- --ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

fn run_battery(version: &str) {
    run_script("v9fs-battery.sh", version);
}

fn run_script(script: &str, version: &str) {
    let env = common::Env::new();
    let port = env.addr.rsplit(':').next().unwrap().to_string();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(root.join("scripts/guest/run.sh"))
        .arg("--script")
        .arg(root.join("dom0-envoyd/tests/guest").join(script))
        .arg("--netdev-user")
        .arg("--timeout")
        .arg("300")
        .arg("--append")
        .arg(format!("envoy.port={port} envoy.version={version}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{version}:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("PASS") && !text.contains("FAIL"), "{text}");
}

#[test]
#[ignore = "boots a QEMU guest; run with --ignored"]
fn guest_v9fs_battery_9p2000_l_passes() {
    run_battery("9p2000.L");
}

#[test]
#[ignore = "boots a QEMU guest; run with --ignored"]
fn guest_v9fs_battery_9p2000_u_passes() {
    run_battery("9p2000.u");
}

#[test]
#[ignore = "boots a QEMU guest; run with --ignored"]
fn guest_v9fs_tree_workload_passes() {
    run_script("v9fs-workload.sh", "9p2000.L");
}
