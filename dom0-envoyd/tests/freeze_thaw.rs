//! Freeze/thaw (§5.4.3) driven by hand, and the start-up scan repairing crash leftovers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::*;
use dom0_envoyd::namespace::dir::DirData;
use dom0_envoyd::namespace::{Claim, Cred};
use envoy_proto::{getattr, Fid};
use envoy_storage::{Attributes, EngineChoice, ObjectId, ObjectKind, ObjectStore, StoreOptions};

fn lookup(env: &Env, path: &str) -> Claim {
    let fs = env.server().fs();
    let mut cur = fs.root();
    for p in ["default"]
        .into_iter()
        .chain(path.split('/').filter(|s| !s.is_empty()))
    {
        cur = fs.lookup(cur.node(), p.as_bytes(), Cred::user(0)).unwrap();
    }
    cur
}

fn qpath(c: &Client, path: &str) -> u64 {
    let f = c.alloc_fid();
    c.walk_path(ROOT, f, path).unwrap();
    let p = c.getattr(f, getattr::BASIC).unwrap().qid.path;
    c.clunk(f).unwrap();
    p
}

fn write_file(c: &Client, path: &str, data: &[u8]) {
    let f = c.alloc_fid();
    c.walk_path(ROOT, f, path).unwrap();
    c.lopen(f, O_WRONLY).unwrap();
    c.write_all(f, 0, data).unwrap();
    c.clunk(f).unwrap();
}

#[test]
fn thaw_after_manual_freeze_of_directory_keeps_old_data() {
    let env = Env::new();
    let c = env.attach(0);
    c.mkdir(ROOT, "a", 0o755, 0).unwrap();
    let a = c.alloc_fid();
    c.walk(ROOT, a, &["a"]).unwrap();
    create_file(&c, a, "f", b"version 1");
    create_file(&c, a, "g", b"sibling");
    let (old_a, old_f, old_g) = (qpath(&c, "a"), qpath(&c, "a/f"), qpath(&c, "a/g"));
    // Freeze the link of directory a (what a snapshot of a does).
    let claim = lookup(&env, "a");
    env.server().fs().freeze(claim.node()).unwrap();
    drop(claim);
    // Reading does not thaw.
    assert_eq!(read_file(&c, ROOT, "a/f").unwrap(), b"version 1");
    assert_eq!(qpath(&c, "a"), old_a);
    // The first write thaws a (cloned directory) and then f.
    write_file(&c, "a/f", b"VERSION 2");
    assert_eq!(read_file(&c, ROOT, "a/f").unwrap(), b"VERSION 2");
    let (new_a, new_f) = (qpath(&c, "a"), qpath(&c, "a/f"));
    assert_ne!(new_a, old_a, "directory thawed into a new object");
    assert_ne!(new_f, old_f, "file thawed into a new object");
    assert_eq!(
        qpath(&c, "a/g"),
        old_g,
        "untouched sibling still shares its object"
    );
    // The frozen objects still hold the old state: both versions are readable.
    let store = env.server().fs().store();
    assert_eq!(
        &store.read(ObjectId(old_f), 0, 100).unwrap()[..],
        b"version 1"
    );
    let old_dir = DirData::parse(&store.read(ObjectId(old_a), 0, 1 << 20).unwrap()).unwrap();
    assert_eq!(old_dir.lookup(b"f").map(|e| e.id), Some(ObjectId(old_f)));
    let new_dir = DirData::parse(&store.read(ObjectId(new_a), 0, 1 << 20).unwrap()).unwrap();
    let g = new_dir.lookup(b"g").unwrap();
    assert!(g.cow, "entries of a cloned directory are copy-on-write");
    assert!(
        !new_dir.lookup(b"f").unwrap().cow,
        "the thawed link is writable"
    );
    // Writing the sibling now thaws only it.
    write_file(&c, "a/g", b"SIBLING");
    assert_ne!(qpath(&c, "a/g"), old_g);
    assert_eq!(qpath(&c, "a"), new_a);
    assert_eq!(
        &store.read(ObjectId(old_g), 0, 100).unwrap()[..],
        b"sibling"
    );
}

#[test]
fn freeze_open_fid_write_thaws_and_fid_follows() {
    let env = Env::new();
    let c = env.attach(0);
    create_file(&c, ROOT, "f", b"abc");
    let f = c.alloc_fid();
    c.walk(ROOT, f, &["f"]).unwrap();
    c.lopen(f, O_RDWR).unwrap();
    let before = c.getattr(f, getattr::BASIC).unwrap().qid.path;
    let x = c.alloc_fid();
    c.walk(ROOT, x, &["f"]).unwrap();
    c.xattrcreate(x, "user.tag", 4, 0).unwrap();
    c.write_all(x, 0, b"kept").unwrap();
    c.clunk(x).unwrap();
    let claim = lookup(&env, "f");
    env.server().fs().freeze(claim.node()).unwrap();
    drop(claim);
    c.write_all(f, 0, b"X").unwrap();
    assert_eq!(c.read(f, 0, 10).unwrap(), &b"Xbc"[..]);
    assert_ne!(c.getattr(f, getattr::BASIC).unwrap().qid.path, before);
    assert_eq!(read_file(&c, ROOT, "f").unwrap(), b"Xbc");
    assert_eq!(
        c.xattrwalk(f, Fid(77), "user.tag").unwrap(),
        4,
        "xattrs follow a thaw"
    );
    assert_eq!(c.read(Fid(77), 0, 10).unwrap(), &b"kept"[..]);
    // truncation and chmod of a frozen file thaw too
    let claim = lookup(&env, "f");
    env.server().fs().freeze(claim.node()).unwrap();
    drop(claim);
    let mut t = guest_shim::client::setattr_request(f, envoy_proto::setattr::SIZE);
    t.size = 1;
    c.setattr(t).unwrap();
    assert_eq!(read_file(&c, ROOT, "f").unwrap(), b"X");
    // the global root cannot be frozen
    assert!(env
        .server()
        .fs()
        .freeze(env.server().fs().root().node())
        .is_err());
}

#[test]
fn startup_scan_collects_leftovers_and_freezes_duplicates() {
    let mut env = Env::new();
    let c = env.attach(0);
    create_file(&c, ROOT, "f", b"original");
    let fid_path = qpath(&c, "f");
    let img = qpath(&c, "");
    c.fsync(ROOT, false).unwrap();
    drop(c);
    let objects_before = env.server().fs().store().usage().unwrap().objects;
    // Simulate crashes with the server stopped: an object never linked (create), and a
    // cross-block rename that wrote the new name but not the removal of the old one.
    env.server.take().unwrap().shutdown();
    {
        let store = ObjectStore::open(
            env.dir.path(),
            StoreOptions {
                engine: EngineChoice::Sync,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        let id = ObjectId(store.reserve(1).unwrap().first.0);
        store
            .create_object(id, &Attributes::new(ObjectKind::Regular, 0o644))
            .unwrap();
        store.write(id, 0, Bytes::from_static(b"leftover")).unwrap();
        let img_id = ObjectId(img);
        let mut d = DirData::parse(&store.read(img_id, 0, 1 << 20).unwrap()).unwrap();
        let b = d
            .insert(b"dup".to_vec(), ObjectId(fid_path), false)
            .unwrap();
        store
            .write(
                img_id,
                (b * 4096) as u64,
                Bytes::from(d.block_bytes(b).unwrap()),
            )
            .unwrap();
    }
    env.restart();
    assert_eq!(
        env.server().fs().store().usage().unwrap().objects,
        objects_before,
        "leftover collected"
    );
    let c = env.attach(0);
    assert_eq!(read_file(&c, ROOT, "dup").unwrap(), b"original");
    // both names were frozen: writing one leaves the other alone
    write_file(&c, "dup", b"CHANGED!");
    assert_eq!(read_file(&c, ROOT, "f").unwrap(), b"original");
    assert_eq!(read_file(&c, ROOT, "dup").unwrap(), b"CHANGED!");
    let _ = Fid(0);
}
