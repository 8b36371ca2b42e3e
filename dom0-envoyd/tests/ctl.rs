//! The synthetic `ctl` attach tree: what diod's `diodload` uses (zero, null), the text files,
//! the refusals, and the real `diodload` run against envoyd.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::*;
use envoy_proto::{qid_type, Fid};

const EROFS: u32 = libc::EROFS as u32;

/// A 9P2000.L client attached to the ctl tree on fid [`ROOT`].
fn ctl(env: &Env) -> Client {
    let c = env.client("9P2000.L");
    let q = c.attach(ROOT, Fid::NOFID, "root", "ctl", 0).unwrap();
    assert_eq!(q.ty & qid_type::DIR, qid_type::DIR);
    c
}

fn open(c: &Client, name: &str, flags: u32) -> Fid {
    let f = c.alloc_fid();
    c.walk(ROOT, f, &[name]).unwrap();
    c.lopen(f, flags).unwrap();
    f
}

#[test]
fn zero_read_returns_requested_zeros_every_time() {
    let env = Env::new();
    let c = ctl(&env);
    let f = open(&c, "zero", O_RDONLY);
    for (off, n) in [(0u64, 8192u32), (1 << 40, 1), (0, 60_000)] {
        let d = c.read(f, off, n).unwrap();
        assert_eq!(d.len(), n as usize);
        assert!(d.iter().all(|&b| b == 0));
    }
    // The largest read that fits in msize.
    let d = c.read(f, 0, 65536 - 24).unwrap();
    assert_eq!(d.len(), 65536 - 24);
    c.clunk(f).unwrap();
}

#[test]
fn null_write_discarded_read_eof() {
    let env = Env::new();
    let c = ctl(&env);
    let f = open(&c, "null", O_RDWR);
    assert_eq!(c.write(f, 0, vec![1u8; 50_000]).unwrap(), 50_000);
    assert_eq!(c.read(f, 0, 4096).unwrap().len(), 0);
    c.fsync(f, false).unwrap();
    c.clunk(f).unwrap();
    // zero is read-only; null's write needs a write open.
    let z = c.alloc_fid();
    c.walk(ROOT, z, &["zero"]).unwrap();
    assert_eq!(errno(c.lopen(z, O_WRONLY)), libc::EACCES as u32);
    let n = open(&c, "null", O_RDONLY);
    assert_eq!(errno(c.write(n, 0, vec![0u8; 4])), libc::EBADF as u32);
}

#[test]
fn text_files_version_and_stats_readable() {
    let env = Env::new();
    let c = ctl(&env);
    let v = read_file(&c, ROOT, "version").unwrap();
    assert!(String::from_utf8(v).unwrap().starts_with("envoyd "));
    // Some traffic on this connection shows up in the stats text.
    let f = open(&c, "zero", O_RDONLY);
    c.read(f, 0, 100).unwrap();
    let s = String::from_utf8(read_file(&c, ROOT, "stats").unwrap()).unwrap();
    assert!(s.contains("OP") && s.contains("P999"), "{s}");
    assert!(s.lines().any(|l| l.starts_with("Tread ")), "{s}");
    assert!(s.contains("cache:") && s.contains("storage:"), "{s}");
}

#[test]
fn readdir_getattr_statfs_describe_the_tree() {
    let env = Env::new();
    let c = ctl(&env);
    assert_eq!(list(&c, ROOT, ""), vec!["null", "stats", "version", "zero"]);
    let a = c.getattr(ROOT, envoy_proto::getattr::BASIC).unwrap();
    assert_eq!(a.mode, libc::S_IFDIR | 0o555);
    let f = c.alloc_fid();
    c.walk(ROOT, f, &["null"]).unwrap();
    let a = c.getattr(f, envoy_proto::getattr::BASIC).unwrap();
    assert_eq!(a.mode, libc::S_IFREG | 0o666);
    let z = c.alloc_fid();
    let q = c.walk(ROOT, z, &["zero"]).unwrap();
    assert_eq!(c.getattr(z, envoy_proto::getattr::BASIC).unwrap().qid, q[0]);
    assert_ne!(q[0].path, a.qid.path);
    assert_eq!(c.statfs(ROOT).unwrap().namelen, 255);
}

#[test]
fn walks_unknown_file_dotdot_and_partial() {
    let env = Env::new();
    let c = ctl(&env);
    let f = c.alloc_fid();
    assert_eq!(errno(c.walk(ROOT, f, &["nope"])), libc::ENOENT as u32);
    // zero/x stops after zero: two names asked, one qid, newfid not made.
    assert_eq!(c.walk(ROOT, f, &["zero", "x"]).unwrap().len(), 1);
    assert_eq!(errno(c.getattr(f, 0x7ff)), libc::EBADF as u32);
    let q = c.walk(ROOT, f, &["zero", "..", "null"]).unwrap();
    assert_eq!(q.len(), 3);
    let g = c.alloc_fid();
    c.walk(f, g, &[]).unwrap();
    c.clunk(g).unwrap();
    c.clunk(f).unwrap();
    assert_eq!(errno(c.clunk(f)), libc::EBADF as u32);
}

#[test]
fn mutations_refused_read_only_tree() {
    let env = Env::new();
    let c = ctl(&env);
    let d = c.alloc_fid();
    c.walk(ROOT, d, &[]).unwrap();
    assert_eq!(errno(c.lcreate(d, "new", O_RDWR, 0o644, 0)), EROFS);
    assert_eq!(errno(c.mkdir(ROOT, "dir", 0o755, 0)), EROFS);
    assert_eq!(errno(c.unlinkat(ROOT, "zero", 0)), EROFS);
    assert_eq!(errno(c.symlink(ROOT, "l", "zero", 0)), EROFS);
    let z = c.alloc_fid();
    c.walk(ROOT, z, &["zero"]).unwrap();
    let mut chmod = guest_shim::client::setattr_request(z, envoy_proto::setattr::MODE);
    chmod.mode = 0o777;
    assert_eq!(errno(c.setattr(chmod)), EROFS);
    assert_eq!(
        errno(c.xattrwalk(z, c.alloc_fid(), "user.x")),
        libc::EOPNOTSUPP as u32
    );
    // Tremove clunks the fid even though it fails.
    assert_eq!(errno(c.remove(z)), EROFS);
    assert_eq!(errno(c.clunk(z)), libc::EBADF as u32);
    // A directory cannot be opened for writing.
    assert_eq!(errno(c.lopen(d, O_WRONLY)), libc::EISDIR as u32);
}

#[test]
fn mixing_ctl_and_image_fids_cross_device() {
    let env = Env::new();
    let c = ctl(&env);
    let img = c.alloc_fid();
    c.attach(img, Fid::NOFID, "root", "/default", 0).unwrap();
    create_file(&c, img, "f", b"data");
    let f = c.alloc_fid();
    c.walk(img, f, &["f"]).unwrap();
    // Renaming an image file into the ctl tree, or linking it there: EXDEV.
    assert_eq!(errno(c.rename(f, ROOT, "f")), libc::EXDEV as u32);
    assert_eq!(errno(c.renameat(img, "f", ROOT, "g")), libc::EXDEV as u32);
    assert_eq!(errno(c.link(ROOT, f, "h")), libc::EXDEV as u32);
    // The image side is untouched and still served normally.
    assert_eq!(read_file(&c, img, "f").unwrap(), b"data");
}

#[test]
fn attach_ctl_other_dialect_not_supported() {
    let env = Env::new();
    let c = env.client("9P2000.u");
    assert_eq!(
        errno(c.attach(ROOT, Fid::NOFID, "root", "ctl", 0)),
        libc::EOPNOTSUPP as u32
    );
}

fn diodload() -> Option<std::path::PathBuf> {
    ["/usr/sbin/diodload", "/usr/bin/diodload"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
}

/// Runs diodload for one second with two threads and returns its stderr (its only output).
fn run_diodload(env: &Env, extra: &[&str]) -> Option<String> {
    let Some(bin) = diodload() else {
        eprintln!("skipped: diodload is not installed (scripts/install-deps.sh installs diod)");
        return None;
    };
    let o = Command::new(bin)
        .args(["-s", &env.addr, "-n", "2", "-r", "1"])
        .args(extra)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "diodload failed: {err}");
    // diodload exits 0 even when a thread failed: its errors go to stderr.
    assert!(!err.contains("error") && !err.contains(": open") && !err.contains("read zero"));
    Some(err)
}

/// The `N ops/s` figure from diodload's summary line.
fn ops_per_s(out: &str) -> u64 {
    let line = out
        .lines()
        .find(|l| l.contains("ops/s"))
        .unwrap_or_else(|| panic!("no summary: {out}"));
    line.split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no count: {line}"))
}

#[test]
fn diodload_io_against_ctl_tree_runs_clean() {
    let env = Env::new();
    let Some(out) = run_diodload(&env, &[]) else {
        return;
    };
    assert!(ops_per_s(&out) > 0, "{out}");
    assert!(out.contains("rMB/s"), "{out}");
    // The server notices each close on its own reader thread; wait for it.
    let mut open = env.server().stats().connections;
    for _ in 0..500 {
        if open == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        open = env.server().stats().connections;
    }
    assert_eq!(open, 0, "diodload's connections not closed");
}

#[test]
fn diodload_getattr_against_ctl_tree_runs_clean() {
    let env = Env::new();
    let Some(out) = run_diodload(&env, &["-g"]) else {
        return;
    };
    assert!(ops_per_s(&out) > 0, "{out}");
}
