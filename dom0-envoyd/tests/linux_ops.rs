//! Every 9P2000.L operation against an in-process envoyd, including error cases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use envoy_proto::{getattr, lock as lk, setattr, unlinkat, Fid};
use guest_shim::client::{setattr_request, Tgetlock, Tlock};

const E: fn(i32) -> u32 = |e| e as u32;

fn walk(c: &Client, path: &str) -> Fid {
    let f = c.alloc_fid();
    c.walk_path(ROOT, f, path).unwrap();
    f
}

#[test]
fn attach_default_image_root_is_directory() {
    let env = Env::new();
    let c = env.client("9P2000.L");
    let q = c.attach(ROOT, Fid::NOFID, "root", "", 0).unwrap();
    assert_eq!(q.ty, envoy_proto::qid_type::DIR);
    let q2 = c.attach(Fid(2), Fid::NOFID, "root", "/default", 0).unwrap();
    assert_eq!(q, q2);
    assert_eq!(
        errno(c.attach(Fid(3), Fid::NOFID, "root", "/nope", 0)),
        E(libc::ENOENT)
    );
    assert_eq!(
        errno(c.attach(Fid(2), Fid::NOFID, "root", "", 0)),
        E(libc::EBADF)
    );
    // ENOENT is what diod answers and what libnpclient (diodls, diodcat) takes as "no auth".
    assert_eq!(errno(c.auth(Fid(9), "root", "", 0)), E(libc::ENOENT));
}

#[test]
fn walk_partial_returns_prefix_qids() {
    let env = Env::new();
    let c = env.attach(0);
    c.mkdir(ROOT, "a", 0o755, 0).unwrap();
    let a = walk(&c, "a");
    c.mkdir(a, "b", 0o755, 0).unwrap();
    let qs = c.walk(ROOT, Fid(50), &["a", "b", "missing", "x"]).unwrap();
    assert_eq!(qs.len(), 2);
    assert_eq!(
        errno(c.clunk(Fid(50))),
        E(libc::EBADF),
        "newfid not created"
    );
    assert_eq!(errno(c.walk(ROOT, Fid(50), &["missing"])), E(libc::ENOENT));
    // .. at the attach root stays there
    let qr = c.getattr(ROOT, getattr::ALL).unwrap().qid;
    let up = c.walk(ROOT, Fid(51), &["..", "..", "a", ".."]).unwrap();
    assert_eq!(up[0], qr);
    assert_eq!(up[1], qr);
    assert_eq!(up[3], qr);
}

#[test]
fn create_write_read_truncate_getattr() {
    let env = Env::new();
    let c = env.attach(0);
    let f = c.alloc_fid();
    c.walk(ROOT, f, &[]).unwrap();
    let r = c.lcreate(f, "f", O_RDWR, 0o640, 0).unwrap();
    assert_eq!(r.qid.ty, 0);
    c.write_all(f, 0, b"0123456789").unwrap();
    c.write_all(f, 20, b"xy").unwrap();
    let data = c.read(f, 0, 100).unwrap();
    assert_eq!(&data[..10], b"0123456789");
    assert_eq!(&data[10..20], &[0u8; 10]);
    assert_eq!(data.len(), 22);
    let ga = c.getattr(f, getattr::ALL).unwrap();
    assert_eq!(ga.size, 22);
    assert_eq!(ga.mode, libc::S_IFREG | 0o640);
    assert_eq!(ga.qid.path, r.qid.path);
    let mut t = setattr_request(f, setattr::SIZE);
    t.size = 4;
    c.setattr(t).unwrap();
    assert_eq!(c.getattr(f, getattr::ALL).unwrap().size, 4);
    c.fsync(f, false).unwrap();
    c.clunk(f).unwrap();
    // O_TRUNC on open
    let g = walk(&c, "f");
    c.lopen(g, O_WRONLY | O_TRUNC).unwrap();
    assert_eq!(errno(c.read(g, 0, 10)), E(libc::EBADF), "write-only fid");
    c.clunk(g).unwrap();
    assert_eq!(read_file(&c, ROOT, "f").unwrap(), b"");
    // exclusive create
    let h = c.alloc_fid();
    c.walk(ROOT, h, &[]).unwrap();
    assert_eq!(errno(c.lcreate(h, "f", O_RDWR, 0o644, 0)), E(libc::EEXIST));
    // write on a read-only open
    let k = walk(&c, "f");
    c.lopen(k, O_RDONLY).unwrap();
    assert_eq!(errno(c.write(k, 0, &b"x"[..])), E(libc::EBADF));
    assert_eq!(errno(c.lopen(k, O_RDONLY)), E(libc::EBADF), "already open");
}

#[test]
fn mkdir_readdir_rmdir_errors() {
    let env = Env::new();
    let c = env.attach(0);
    c.mkdir(ROOT, "d", 0o755, 0).unwrap();
    assert_eq!(errno(c.mkdir(ROOT, "d", 0o755, 0)), E(libc::EEXIST));
    let d = walk(&c, "d");
    create_file(&c, d, "x", b"1");
    assert_eq!(list(&c, ROOT, "d"), vec!["x"]);
    assert_eq!(
        errno(c.unlinkat(ROOT, "d", unlinkat::REMOVEDIR)),
        E(libc::ENOTEMPTY)
    );
    assert_eq!(errno(c.unlinkat(ROOT, "d", 0)), E(libc::EISDIR));
    assert_eq!(
        errno(c.unlinkat(d, "x", unlinkat::REMOVEDIR)),
        E(libc::ENOTDIR)
    );
    c.unlinkat(d, "x", 0).unwrap();
    c.unlinkat(ROOT, "d", unlinkat::REMOVEDIR).unwrap();
    assert!(list(&c, ROOT, "").is_empty());
    assert_eq!(
        errno(c.unlinkat(ROOT, "d", unlinkat::REMOVEDIR)),
        E(libc::ENOENT)
    );
    // a fid on the removed directory can no longer create in it
    assert_eq!(errno(c.mkdir(d, "y", 0o755, 0)), E(libc::ENOENT));
    // walking through a file
    create_file(&c, ROOT, "plain", b"");
    assert_eq!(
        c.walk(ROOT, Fid(70), &["plain", "x"]).unwrap().len(),
        1,
        "partial walk"
    );
    let p = walk(&c, "plain");
    assert_eq!(errno(c.walk(p, Fid(70), &["x"])), E(libc::ENOTDIR));
}

#[test]
fn readdir_offsets_stable_while_directory_changes() {
    let env = Env::new();
    let c = env.attach(0);
    c.mkdir(ROOT, "d", 0o755, 0).unwrap();
    let d = walk(&c, "d");
    for i in 0..60 {
        create_file(&c, d, &format!("f{i:02}"), b"");
    }
    let r = walk(&c, "d");
    c.lopen(r, O_RDONLY).unwrap();
    let first = c.readdir(r, 0, 400).unwrap();
    assert!(first.len() > 3 && first.len() < 62);
    assert_eq!(first[0].name, ".");
    assert_eq!(first[1].name, "..");
    let seen_first: Vec<String> = first.iter().map(|e| e.name.clone()).collect();
    // remove entries already seen and not yet seen, add new ones
    c.unlinkat(d, &seen_first[2], 0).unwrap();
    c.unlinkat(d, "f59", 0).unwrap();
    c.unlinkat(d, "f58", 0).unwrap();
    create_file(&c, d, "new1", b"");
    let mut off = first.last().unwrap().offset;
    let mut rest = Vec::new();
    loop {
        let page = c.readdir(r, off, 400).unwrap();
        if page.is_empty() {
            break;
        }
        off = page.last().unwrap().offset;
        rest.extend(page.into_iter().map(|e| e.name));
    }
    let mut all: Vec<String> = seen_first.clone();
    all.extend(rest.iter().cloned());
    let mut dedup = all.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), all.len(), "no entry repeated");
    for i in 0..58 {
        let n = format!("f{i:02}");
        assert!(all.contains(&n), "{n} lost");
    }
    assert!(!rest.contains(&"f59".to_string()) && !rest.contains(&"f58".to_string()));
    // count too small for one entry
    assert_eq!(errno(c.readdir(r, 0, 10)), E(libc::EINVAL));
}

#[test]
fn rename_replace_across_dirs_and_errors() {
    let env = Env::new();
    let c = env.attach(0);
    c.mkdir(ROOT, "a", 0o755, 0).unwrap();
    c.mkdir(ROOT, "b", 0o755, 0).unwrap();
    let a = walk(&c, "a");
    let b = walk(&c, "b");
    create_file(&c, a, "one", b"ONE");
    create_file(&c, b, "two", b"TWO");
    // open fid follows the rename
    let open = walk(&c, "a/one");
    c.lopen(open, O_RDONLY).unwrap();
    c.renameat(a, "one", b, "two").unwrap();
    assert_eq!(read_file(&c, ROOT, "b/two").unwrap(), b"ONE");
    assert!(list(&c, ROOT, "a").is_empty());
    assert_eq!(c.read(open, 0, 10).unwrap(), &b"ONE"[..]);
    // Trename through the fid
    c.rename(open, a, "back").unwrap();
    assert_eq!(read_file(&c, ROOT, "a/back").unwrap(), b"ONE");
    // directory over non-empty directory, file over directory, directory over file
    c.mkdir(a, "sub", 0o755, 0).unwrap();
    c.mkdir(b, "full", 0o755, 0).unwrap();
    let full = walk(&c, "b/full");
    create_file(&c, full, "x", b"");
    assert_eq!(errno(c.renameat(a, "sub", b, "full")), E(libc::ENOTEMPTY));
    assert_eq!(errno(c.renameat(a, "back", b, "full")), E(libc::EISDIR));
    create_file(&c, b, "file", b"");
    assert_eq!(errno(c.renameat(a, "sub", b, "file")), E(libc::ENOTDIR));
    // directory over an empty directory
    c.mkdir(b, "empty", 0o755, 0).unwrap();
    c.renameat(a, "sub", b, "empty").unwrap();
    assert_eq!(list(&c, ROOT, "b"), vec!["empty", "file", "full"]);
    // into its own subtree
    let full_dir = walk(&c, "b/full");
    assert_eq!(
        errno(c.renameat(ROOT, "b", full_dir, "loop")),
        E(libc::EINVAL)
    );
    assert_eq!(errno(c.renameat(a, "missing", b, "x")), E(libc::ENOENT));
    // a whole directory tree moves, fids below follow
    let deep = walk(&c, "b/full/x");
    c.renameat(ROOT, "b", a, "moved").unwrap();
    assert_eq!(list(&c, ROOT, "a/moved/full"), vec!["x"]);
    c.lopen(deep, O_RDONLY).unwrap();
    assert_eq!(c.read(deep, 0, 4).unwrap().len(), 0);
}

#[test]
fn unlink_while_open_keeps_data_until_clunk() {
    let env = Env::new();
    let c = env.attach(0);
    create_file(&c, ROOT, "tmp", b"scratch data");
    let f = walk(&c, "tmp");
    c.lopen(f, O_RDWR).unwrap();
    c.unlinkat(ROOT, "tmp", 0).unwrap();
    assert!(list(&c, ROOT, "").is_empty());
    c.write_all(f, 0, b"SCRATCH").unwrap();
    assert_eq!(c.read(f, 0, 100).unwrap(), &b"SCRATCH data"[..]);
    assert!(c.getattr(f, getattr::ALL).is_ok());
    // a new file with the same name is a different object
    create_file(&c, ROOT, "tmp", b"new");
    assert_eq!(c.read(f, 0, 100).unwrap(), &b"SCRATCH data"[..]);
    c.clunk(f).unwrap();
    assert_eq!(read_file(&c, ROOT, "tmp").unwrap(), b"new");
    // the unlinked object is gone once clunked (the store check in Env's drop finds no orphan
    // problem, and the object count is what the tree names)
}

#[test]
fn symlink_readlink_mknod_special_files() {
    let env = Env::new();
    let c = env.attach(0);
    let q = c.symlink(ROOT, "ln", "../../etc/passwd", 0).unwrap();
    assert_eq!(q.ty, envoy_proto::qid_type::SYMLINK);
    let l = walk(&c, "ln");
    assert_eq!(c.readlink(l).unwrap(), "../../etc/passwd");
    assert_eq!(errno(c.lopen(l, O_RDONLY)), E(libc::EOPNOTSUPP));
    // walking through a symlink never follows it
    assert_eq!(errno(c.walk(l, Fid(80), &["x"])), E(libc::ENOTDIR));
    c.mknod(ROOT, "null", libc::S_IFCHR | 0o666, 1, 3, 0)
        .unwrap();
    c.mknod(ROOT, "sda", libc::S_IFBLK | 0o660, 8, 0, 0)
        .unwrap();
    c.mknod(ROOT, "fifo", libc::S_IFIFO | 0o644, 0, 0, 0)
        .unwrap();
    c.mknod(ROOT, "sock", libc::S_IFSOCK | 0o644, 0, 0, 0)
        .unwrap();
    let n = walk(&c, "null");
    let ga = c.getattr(n, getattr::ALL).unwrap();
    assert_eq!(ga.mode, libc::S_IFCHR | 0o666);
    assert_eq!(ga.rdev, libc::makedev(1, 3));
    assert_eq!(ga.size, 0);
    assert_eq!(
        errno(c.lopen(n, O_RDONLY)),
        E(libc::EOPNOTSUPP),
        "never opened"
    );
    let s = walk(&c, "sda");
    assert_eq!(
        c.getattr(s, getattr::ALL).unwrap().rdev,
        libc::makedev(8, 0)
    );
    let p = walk(&c, "fifo");
    assert_eq!(
        c.getattr(p, getattr::ALL).unwrap().mode & libc::S_IFMT,
        libc::S_IFIFO
    );
    assert_eq!(errno(c.readlink(p)), E(libc::EINVAL));
    // non-root cannot make devices
    let u = env.attach(1000);
    assert_eq!(
        errno(u.mknod(ROOT, "zero", libc::S_IFCHR | 0o666, 1, 5, 0)),
        E(libc::EPERM)
    );
    assert_eq!(
        errno(u.mknod(ROOT, "fifo2", libc::S_IFIFO | 0o644, 0, 0, 1000)),
        E(libc::EACCES),
        "the image root is 0755 root"
    );
    c.mkdir(ROOT, "tmp", 0o1777, 0).unwrap();
    let ut = walk(&u, "tmp");
    u.mknod(ut, "fifo2", libc::S_IFIFO | 0o644, 0, 0, 1000)
        .unwrap();
}

#[test]
fn hard_link_freezes_then_names_diverge() {
    let env = Env::new();
    let c = env.attach(0);
    create_file(&c, ROOT, "orig", b"shared");
    let o = walk(&c, "orig");
    let before = c.getattr(o, getattr::ALL).unwrap().qid;
    c.link(ROOT, o, "alias").unwrap();
    assert_eq!(read_file(&c, ROOT, "alias").unwrap(), b"shared");
    let a = walk(&c, "alias");
    assert_eq!(c.getattr(a, getattr::ALL).unwrap().qid.path, before.path);
    // a write through one name thaws it alone
    c.lopen(a, O_RDWR).unwrap();
    c.write_all(a, 0, b"SHARED").unwrap();
    assert_eq!(read_file(&c, ROOT, "alias").unwrap(), b"SHARED");
    assert_eq!(read_file(&c, ROOT, "orig").unwrap(), b"shared");
    assert_ne!(
        c.getattr(a, getattr::ALL).unwrap().qid.path,
        before.path,
        "thaw: new object"
    );
    // and the other name thaws independently
    let w = walk(&c, "orig");
    c.lopen(w, O_WRONLY).unwrap();
    c.write_all(w, 0, b"ORIG").unwrap();
    assert_eq!(read_file(&c, ROOT, "orig").unwrap(), b"ORIGed");
    assert_eq!(errno(c.link(ROOT, o, "alias")), E(libc::EEXIST));
    let d = c.alloc_fid();
    c.mkdir(ROOT, "dir", 0o755, 0).unwrap();
    c.walk(ROOT, d, &["dir"]).unwrap();
    assert_eq!(errno(c.link(ROOT, d, "dirlink")), E(libc::EPERM));
}

#[test]
fn permissions_non_root_eacces_eperm() {
    let env = Env::new();
    let root = env.attach(0);
    root.mkdir(ROOT, "private", 0o700, 0).unwrap();
    root.mkdir(ROOT, "tmp", 0o1777, 0).unwrap();
    create_file(&root, ROOT, "secret", b"s");
    let s = walk(&root, "secret");
    let mut t = setattr_request(s, setattr::MODE);
    t.mode = 0o600;
    root.setattr(t).unwrap();
    let u = env.attach(1000);
    assert_eq!(u.walk(ROOT, Fid(90), &["private", "x"]).unwrap().len(), 1);
    let p = walk(&u, "private");
    assert_eq!(errno(u.walk(p, Fid(90), &["x"])), E(libc::EACCES));
    assert_eq!(errno(read_file(&u, ROOT, "secret")), E(libc::EACCES));
    let us = walk(&u, "secret");
    let mut t = setattr_request(us, setattr::MODE);
    t.mode = 0o666;
    assert_eq!(errno(u.setattr(t)), E(libc::EPERM));
    let mut t = setattr_request(us, setattr::UID);
    t.uid = 1000;
    assert_eq!(errno(u.setattr(t)), E(libc::EPERM));
    // sticky /tmp: user 1001 cannot remove user 1000's file
    let tmp = walk(&u, "tmp");
    create_file(&u, tmp, "mine", b"");
    let v = env.attach(1001);
    let vtmp = walk(&v, "tmp");
    assert_eq!(errno(v.unlinkat(vtmp, "mine", 0)), E(libc::EPERM));
    assert_eq!(
        errno(v.renameat(vtmp, "mine", vtmp, "theirs")),
        E(libc::EPERM)
    );
    u.unlinkat(tmp, "mine", 0).unwrap();
    // the new file belongs to the creator
    create_file(&u, tmp, "owned", b"");
    let o = walk(&u, "tmp/owned");
    let ga = u.getattr(o, getattr::ALL).unwrap();
    assert_eq!((ga.uid, ga.gid), (1000, 1000));
    // root's chown works
    let ro = walk(&root, "tmp/owned");
    let mut t = setattr_request(ro, setattr::UID | setattr::GID);
    t.uid = 7;
    t.gid = 8;
    root.setattr(t).unwrap();
    let ga = root.getattr(ro, getattr::ALL).unwrap();
    assert_eq!((ga.uid, ga.gid), (7, 8));
}

#[test]
fn setattr_times_now_and_explicit() {
    let env = Env::new();
    let c = env.attach(0);
    create_file(&c, ROOT, "t", b"");
    let f = walk(&c, "t");
    let mut t = setattr_request(
        f,
        setattr::ATIME | setattr::MTIME | setattr::ATIME_SET | setattr::MTIME_SET,
    );
    t.atime_sec = 1000;
    t.atime_nsec = 5;
    t.mtime_sec = 2000;
    t.mtime_nsec = 7;
    c.setattr(t).unwrap();
    let ga = c.getattr(f, getattr::ALL).unwrap();
    assert_eq!(
        (ga.atime_sec, ga.atime_nsec, ga.mtime_sec, ga.mtime_nsec),
        (1000, 5, 2000, 7)
    );
    c.setattr(setattr_request(f, setattr::MTIME)).unwrap();
    assert!(c.getattr(f, getattr::ALL).unwrap().mtime_sec > 1_600_000_000);
    let mut bad = setattr_request(f, setattr::MTIME | setattr::MTIME_SET);
    bad.mtime_nsec = 2_000_000_000;
    assert_eq!(errno(c.setattr(bad)), E(libc::EINVAL));
}

#[test]
fn name_limits_enametoolong_einval() {
    let env = Env::new();
    let c = env.attach(0);
    let n255 = "x".repeat(255);
    let n256 = "x".repeat(256);
    create_file(&c, ROOT, &n255, b"");
    let f = c.alloc_fid();
    c.walk(ROOT, f, &[]).unwrap();
    assert_eq!(
        errno(c.lcreate(f, &n256, O_RDWR, 0o644, 0)),
        E(libc::ENAMETOOLONG)
    );
    for bad in ["", ".", "..", "a/b"] {
        assert_eq!(
            errno(c.lcreate(f, bad, O_RDWR, 0o644, 0)),
            E(libc::EINVAL),
            "{bad:?}"
        );
        assert_eq!(
            errno(c.mkdir(ROOT, bad, 0o755, 0)),
            E(libc::EINVAL),
            "{bad:?}"
        );
    }
    assert_eq!(
        errno(c.walk(ROOT, Fid(99), &[&n256])),
        E(libc::ENAMETOOLONG)
    );
}

#[test]
fn statfs_xattr_locks() {
    let env = Env::new();
    let c = env.attach(0);
    let sf = c.statfs(ROOT).unwrap();
    assert_eq!(sf.ty, 0x0102_1997);
    assert_eq!(sf.namelen, 255);
    assert!(sf.blocks > 0);
    create_file(&c, ROOT, "f", b"data");
    let f = walk(&c, "f");
    // xattrs: none yet
    assert_eq!(c.xattrwalk(f, Fid(200), "").unwrap(), 0);
    assert_eq!(c.read(Fid(200), 0, 100).unwrap().len(), 0);
    assert_eq!(errno(c.xattrwalk(f, Fid(201), "user.x")), E(libc::ENODATA));
    assert_eq!(
        errno(c.xattrcreate(f, "user.x", 1 << 40, 0)),
        E(libc::E2BIG)
    );
    assert_eq!(
        errno(c.xattrcreate(f, &"n".repeat(256), 1, 0)),
        E(libc::ERANGE)
    );
    // set user.x through an xattr fid: create, write, clunk
    let set = |name: &str, value: &[u8], flags: u32| -> Result<(), ClientError> {
        let x = c.alloc_fid();
        c.walk(f, x, &[]).unwrap();
        c.xattrcreate(x, name, value.len() as u64, flags)?;
        if !value.is_empty() {
            c.write_all(x, 0, value)?;
        }
        c.clunk(x)
    };
    set("user.x", b"hello", 0).unwrap();
    set("security.selinux", b"system_u:object_r:etc_t:s0\0", 0).unwrap();
    assert_eq!(c.xattrwalk(f, Fid(202), "user.x").unwrap(), 5);
    assert_eq!(c.read(Fid(202), 0, 100).unwrap(), &b"hello"[..]);
    let n = c.xattrwalk(f, Fid(203), "").unwrap();
    let list = c.read(Fid(203), 0, n as u32).unwrap();
    let mut names: Vec<&[u8]> = list.split(|&b| b == 0).filter(|n| !n.is_empty()).collect();
    names.sort();
    assert_eq!(names, vec![&b"security.selinux"[..], &b"user.x"[..]]);
    assert_eq!(
        errno(set("user.x", b"again", envoy_proto::xattr::CREATE)),
        E(libc::EEXIST)
    );
    assert_eq!(
        errno(set("user.y", b"y", envoy_proto::xattr::REPLACE)),
        E(libc::ENODATA)
    );
    // a value shorter than declared is refused at clunk; longer at write
    let x = c.alloc_fid();
    c.walk(f, x, &[]).unwrap();
    c.xattrcreate(x, "user.short", 10, 0).unwrap();
    c.write_all(x, 0, b"abc").unwrap();
    assert_eq!(errno(c.write(x, 8, &b"toolong"[..])), E(libc::EINVAL));
    assert_eq!(errno(c.clunk(x)), E(libc::EINVAL));
    assert_eq!(
        errno(c.xattrwalk(f, Fid(204), "user.short")),
        E(libc::ENODATA)
    );
    // removal is a zero-length create
    set("user.x", b"", envoy_proto::xattr::REPLACE).unwrap();
    assert_eq!(errno(c.xattrwalk(f, Fid(205), "user.x")), E(libc::ENODATA));
    // non-root: security.* refused, user.* needs write permission
    let u = env.attach(1000);
    let uf = walk(&u, "f");
    assert_eq!(errno(u.xattrcreate(uf, "security.x", 1, 0)), E(libc::EPERM));
    assert_eq!(errno(u.xattrcreate(uf, "user.x", 1, 0)), E(libc::EACCES));
    // locks
    c.lopen(f, O_RDWR).unwrap();
    let lockreq = |ty, start, length, proc_id: u32| Tlock {
        fid: f,
        ty,
        flags: 0,
        start,
        length,
        proc_id,
        client_id: "host".into(),
    };
    assert_eq!(
        c.lock(lockreq(lk::TYPE_WRLCK, 0, 10, 1)).unwrap(),
        lk::STATUS_SUCCESS
    );
    assert_eq!(
        c.lock(lockreq(lk::TYPE_RDLCK, 5, 10, 2)).unwrap(),
        lk::STATUS_BLOCKED
    );
    assert_eq!(
        c.lock(lockreq(lk::TYPE_RDLCK, 10, 0, 2)).unwrap(),
        lk::STATUS_SUCCESS
    );
    let g = c
        .getlock(Tgetlock {
            fid: f,
            ty: lk::TYPE_WRLCK,
            start: 0,
            length: 0,
            proc_id: 3,
            client_id: "host".into(),
        })
        .unwrap();
    assert_eq!(
        (g.ty, g.start, g.length, g.proc_id),
        (lk::TYPE_WRLCK, 0, 10, 1)
    );
    assert_eq!(
        c.lock(lockreq(lk::TYPE_UNLCK, 0, 0, 1)).unwrap(),
        lk::STATUS_SUCCESS
    );
    assert_eq!(
        c.lock(lockreq(lk::TYPE_RDLCK, 5, 10, 2)).unwrap(),
        lk::STATUS_SUCCESS
    );
}

#[test]
fn restart_keeps_contents() {
    let mut env = Env::new();
    {
        let c = env.attach(0);
        c.mkdir(ROOT, "d", 0o750, 0).unwrap();
        let d = walk(&c, "d");
        create_file(&c, d, "f", b"persistent bytes");
        c.symlink(d, "l", "f", 0).unwrap();
        let f = walk(&c, "d/f");
        c.fsync(f, false).unwrap();
    }
    env.restart();
    let c = env.attach(0);
    assert_eq!(read_file(&c, ROOT, "d/f").unwrap(), b"persistent bytes");
    assert_eq!(list(&c, ROOT, "d"), vec!["f", "l"]);
    let l = walk(&c, "d/l");
    assert_eq!(c.readlink(l).unwrap(), "f");
    let d = walk(&c, "d");
    assert_eq!(
        c.getattr(d, getattr::ALL).unwrap().mode,
        libc::S_IFDIR | 0o750
    );
}

#[test]
fn tremove_removes_and_clunks() {
    let env = Env::new();
    let c = env.attach(0);
    create_file(&c, ROOT, "gone", b"x");
    let f = walk(&c, "gone");
    c.remove(f).unwrap();
    assert!(list(&c, ROOT, "").is_empty());
    assert_eq!(errno(c.getattr(f, getattr::ALL)), E(libc::EBADF));
    c.mkdir(ROOT, "d", 0o755, 0).unwrap();
    let d = walk(&c, "d");
    create_file(&c, d, "x", b"");
    assert_eq!(errno(c.remove(d)), E(libc::ENOTEMPTY));
    assert_eq!(
        errno(c.clunk(d)),
        E(libc::EBADF),
        "clunked even though remove failed"
    );
    assert_eq!(errno(c.remove(ROOT)), E(libc::EBUSY));
}

#[test]
fn setgid_directory_inherits_group() {
    let env = Env::new();
    let c = env.attach(0);
    c.mkdir(ROOT, "shared", 0o777, 0).unwrap();
    let d = walk(&c, "shared");
    let mut t = setattr_request(d, setattr::MODE | setattr::GID);
    t.mode = 0o2777;
    t.gid = 500;
    c.setattr(t).unwrap();
    let u = env.attach(1000);
    let ud = walk(&u, "shared");
    create_file(&u, ud, "f", b"");
    u.mkdir(ud, "sub", 0o755, 1000).unwrap();
    let f = walk(&u, "shared/f");
    let ga = u.getattr(f, getattr::ALL).unwrap();
    assert_eq!((ga.uid, ga.gid), (1000, 500));
    let s = walk(&u, "shared/sub");
    let ga = u.getattr(s, getattr::ALL).unwrap();
    assert_eq!(ga.gid, 500);
    assert_eq!(ga.mode & 0o2000, 0o2000, "subdirectories inherit setgid");
    // utimensat(UTIME_NOW) by a non-owner with write permission is allowed; explicit is not
    create_file(&c, ROOT, "open", b"");
    let o = walk(&c, "open");
    let mut t = setattr_request(o, setattr::MODE);
    t.mode = 0o666;
    c.setattr(t).unwrap();
    let uo = walk(&u, "open");
    u.setattr(setattr_request(uo, setattr::MTIME | setattr::ATIME))
        .unwrap();
    let mut t = setattr_request(uo, setattr::MTIME | setattr::MTIME_SET);
    t.mtime_sec = 5;
    assert_eq!(errno(u.setattr(t)), E(libc::EPERM));
}

#[test]
fn stats_count_connections_cache_and_writes() {
    let env = Env::new();
    let c = env.attach(0);
    create_file(&c, ROOT, "s", b"1234");
    for _ in 0..5 {
        assert_eq!(list(&c, ROOT, ""), vec!["s"]);
    }
    let st = env.server().stats();
    assert_eq!(st.connections, 1);
    assert!(st.writes >= 1);
    assert!(st.cache.hits > 5, "{st:?}");
    assert!(st.cache.entries >= 2 && st.cache.bytes > 0, "{st:?}");
}
