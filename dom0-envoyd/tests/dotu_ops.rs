//! The 9P2000.u dialect (and plain 9P2000): create/open/read/write, stat/wstat including
//! rename by wstat, directory reads as stat records, special files, remove.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use envoy_proto::{dm, open, qid_type, Fid, Stat};

const E: fn(i32) -> u32 = |e| e as u32;

fn walk(c: &Client, path: &str) -> Fid {
    let f = c.alloc_fid();
    c.walk_path(ROOT, f, path).unwrap();
    f
}

fn create(c: &Client, dir: Fid, name: &str, perm: u32, mode: u8, ext: &str) -> Fid {
    let f = c.alloc_fid();
    c.walk(dir, f, &[]).unwrap();
    c.create_u(f, name, perm, mode, ext).unwrap();
    f
}

#[test]
fn dotu_create_write_read_stat() {
    let env = Env::new();
    let c = env.attach_u(0);
    let f = create(&c, ROOT, "file", 0o640, open::RDWR, "");
    c.write_all(f, 0, b"dot-u data").unwrap();
    assert_eq!(c.read(f, 0, 100).unwrap(), &b"dot-u data"[..]);
    let st = c.stat(f).unwrap();
    assert_eq!(st.name, "file");
    assert_eq!(st.length, 10);
    assert_eq!(st.mode, 0o640);
    assert_eq!((st.n_uid, st.n_gid), (0, 0));
    assert_eq!(st.uid, "0");
    c.clunk(f).unwrap();
    let g = walk(&c, "file");
    c.open_u(g, open::READ).unwrap();
    assert_eq!(c.read_all(g).unwrap(), b"dot-u data");
    assert_eq!(errno(c.write(g, 0, &b"x"[..])), E(libc::EBADF));
    let root = c.stat(ROOT).unwrap();
    assert_eq!(root.name, "/");
    assert_eq!(root.mode & dm::DIR, dm::DIR);
    // OTRUNC
    let h = walk(&c, "file");
    c.open_u(h, open::WRITE | open::TRUNC).unwrap();
    assert_eq!(c.stat(h).unwrap().length, 0);
}

#[test]
fn dotu_wstat_rename_chmod_truncate() {
    let env = Env::new();
    let c = env.attach_u(0);
    let f = create(&c, ROOT, "old", 0o644, open::RDWR, "");
    c.write_all(f, 0, b"0123456789").unwrap();
    let other = create(&c, ROOT, "target", 0o644, open::RDWR, "");
    c.clunk(other).unwrap();
    let mut st = Stat::dont_touch();
    st.name = "target".into();
    c.wstat(f, st).unwrap();
    let names: Vec<String> = {
        let d = walk(&c, "");
        c.open_u(d, open::READ).unwrap();
        c.read_dir_stats(d)
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect()
    };
    assert_eq!(names, vec!["target".to_string()]);
    assert_eq!(c.stat(f).unwrap().name, "target");
    let mut st = Stat::dont_touch();
    st.mode = 0o600;
    st.length = 3;
    st.mtime = 12345;
    c.wstat(f, st).unwrap();
    let s = c.stat(f).unwrap();
    assert_eq!((s.mode, s.length, s.mtime), (0o600, 3, 12345));
    let mut bad = Stat::dont_touch();
    bad.name = "a/b".into();
    assert_eq!(errno(c.wstat(f, bad)), E(libc::EINVAL));
    let u = env.attach_u(1000);
    let uf = walk(&u, "target");
    let mut st = Stat::dont_touch();
    st.mode = 0o777;
    assert_eq!(errno(u.wstat(uf, st)), E(libc::EPERM));
}

#[test]
fn dotu_directory_reads_are_stat_records() {
    let env = Env::new();
    let c = env.attach_u(0);
    let d = create(&c, ROOT, "dir", dm::DIR | 0o755, open::READ, "");
    assert_eq!(c.stat(d).unwrap().qid.ty, qid_type::DIR);
    c.clunk(d).unwrap();
    let dir = walk(&c, "dir");
    for i in 0..40 {
        let f = create(&c, dir, &format!("entry-{i:02}"), 0o644, open::WRITE, "");
        c.clunk(f).unwrap();
    }
    let r = walk(&c, "dir");
    c.open_u(r, open::READ).unwrap();
    let stats = c.read_dir_stats(r).unwrap();
    assert_eq!(stats.len(), 40);
    assert!(stats.iter().all(|s| s.name.starts_with("entry-")));
    // a read at a random offset is refused
    let r2 = walk(&c, "dir");
    c.open_u(r2, open::READ).unwrap();
    assert!(!c.read(r2, 0, 200).unwrap().is_empty());
    assert_eq!(errno(c.read(r2, 7, 200)), E(libc::EINVAL));
    assert_eq!(
        errno(c.read(r2, 0, 10)),
        E(libc::EINVAL),
        "count too small for one stat"
    );
}

#[test]
fn dotu_special_files_and_links() {
    let env = Env::new();
    let c = env.attach_u(0);
    let l = create(
        &c,
        ROOT,
        "ln",
        dm::SYMLINK | 0o777,
        open::READ,
        "/etc/shadow",
    );
    let s = c.stat(l).unwrap();
    assert_eq!(s.extension, "/etc/shadow");
    assert_eq!(s.mode & dm::SYMLINK, dm::SYMLINK);
    let dev = create(&c, ROOT, "null", dm::DEVICE | 0o666, open::READ, "c 1 3");
    assert_eq!(c.stat(dev).unwrap().extension, "c 1 3");
    let p = create(&c, ROOT, "pipe", dm::NAMEDPIPE | 0o644, open::READ, "");
    assert_eq!(c.stat(p).unwrap().mode & dm::NAMEDPIPE, dm::NAMEDPIPE);
    let f = create(&c, ROOT, "f", 0o644, open::RDWR, "");
    c.write_all(f, 0, b"linked").unwrap();
    c.clunk(f).unwrap();
    let t = walk(&c, "f");
    let h = c.alloc_fid();
    c.walk(ROOT, h, &[]).unwrap();
    c.create_u(h, "hard", dm::LINK, open::READ, &t.0.to_string())
        .unwrap();
    assert_eq!(read_file_u(&c, "hard"), b"linked");
    let bad = c.alloc_fid();
    c.walk(ROOT, bad, &[]).unwrap();
    assert_eq!(
        errno(c.create_u(bad, "d2", dm::DEVICE | 0o666, open::READ, "q 1 2")),
        E(libc::EINVAL)
    );
    let u = env.attach_u(1000);
    let ud = u.alloc_fid();
    u.walk(ROOT, ud, &[]).unwrap();
    assert_eq!(
        errno(u.create_u(ud, "d3", dm::DEVICE | 0o666, open::READ, "c 1 5")),
        E(libc::EPERM)
    );
}

fn read_file_u(c: &Client, path: &str) -> Vec<u8> {
    let f = walk(c, path);
    c.open_u(f, open::READ).unwrap();
    let d = c.read_all(f).unwrap();
    c.clunk(f).unwrap();
    d
}

#[test]
fn dotu_remove_and_orclose() {
    let env = Env::new();
    let c = env.attach_u(0);
    let f = create(&c, ROOT, "tmp", 0o644, open::RDWR | open::RCLOSE, "");
    c.write_all(f, 0, b"x").unwrap();
    c.clunk(f).unwrap();
    let r = walk(&c, "");
    c.open_u(r, open::READ).unwrap();
    assert!(
        c.read_dir_stats(r).unwrap().is_empty(),
        "ORCLOSE removed it"
    );
    let g = create(&c, ROOT, "g", 0o644, open::RDWR, "");
    c.remove(g).unwrap();
    assert_eq!(errno(c.walk(ROOT, Fid(60), &["g"])), E(libc::ENOENT));
}

#[test]
fn plain_9p2000_errors_carry_text() {
    let env = Env::new();
    let c = env.client("9P2000");
    c.attach(ROOT, Fid::NOFID, "root", "/default", NONUNAME)
        .unwrap();
    match c.walk(ROOT, Fid(2), &["missing"]) {
        Err(ClientError::Remote { ename, .. }) => assert!(ename.contains("no such file")),
        other => panic!("expected Rerror, got {other:?}"),
    }
    let f = create(&c, ROOT, "p", 0o644, open::RDWR, "");
    c.write_all(f, 0, b"plain").unwrap();
    assert_eq!(c.read(f, 0, 10).unwrap(), &b"plain"[..]);
}
