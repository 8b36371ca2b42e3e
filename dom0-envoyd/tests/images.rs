//! Images, snapshots and forks (§4.3) through the image manager and real 9P clients:
//! snapshots of live images, read-only snapshots, forks that diverge, the admin-tree rules,
//! catalogue-based deletion giving the space back, and recovery after simulated crashes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use dom0_envoyd::images::{ImageError, Progress};

const EROFS: u32 = 30;
const EXDEV: u32 = 18;
const EPERM: u32 = 1;

fn attach_at(env: &Env, aname: &str) -> Client {
    let c = env.client("9P2000.L");
    c.attach(ROOT, Fid::NOFID, "root", aname, 0).unwrap();
    c
}

fn write_at(c: &Client, path: &str, data: &[u8]) {
    let f = c.alloc_fid();
    c.walk_path(ROOT, f, path).unwrap();
    c.lopen(f, O_WRONLY | O_TRUNC).unwrap();
    c.write_all(f, 0, data).unwrap();
    c.clunk(f).unwrap();
}

fn no_progress(_: &Progress) {}

/// Clunks the client's root fid (the server releases it before replying) and drops it.
fn detach(c: Client) {
    c.clunk(ROOT).unwrap();
}

/// Removes every file of directory `dir`, then `dir`.
fn remove_dir(c: &Client, dir: &str, n: usize) {
    let d = c.alloc_fid();
    c.walk_path(ROOT, d, dir).unwrap();
    for i in 0..n {
        c.unlinkat(d, &format!("f{i}"), 0).unwrap();
    }
    c.clunk(d).unwrap();
    c.unlinkat(ROOT, dir, 0x200).unwrap();
}

/// Creates `dir/name` with `data`.
fn create_in(c: &Client, dir: &str, name: &str, data: &[u8]) {
    let d = c.alloc_fid();
    c.walk_path(ROOT, d, dir).unwrap();
    create_file(c, d, name, data);
    c.clunk(d).unwrap();
}

#[test]
fn snapshot_live_image_open_fid_carries_on_in_head() {
    let env = Env::new();
    let c = attach_at(&env, "/default");
    create_file(&c, ROOT, "a", b"version one");
    c.mkdir(ROOT, "d", 0o755, 0).unwrap();
    create_in(&c, "d", "b", b"deep");
    // An open fid for writing, held across the snapshot.
    let f = c.alloc_fid();
    c.walk_path(ROOT, f, "a").unwrap();
    c.lopen(f, O_RDWR).unwrap();

    let snap = env.server().images().snapshot("/default").unwrap();
    assert_eq!(snap.path, "/default@1");
    assert_eq!(snap.number, 1);

    c.write_all(f, 0, b"VERSION TWO").unwrap();
    c.clunk(f).unwrap();
    write_at(&c, "d/b", b"changed");
    assert_eq!(read_file(&c, ROOT, "a").unwrap(), b"VERSION TWO");
    assert_eq!(read_file(&c, ROOT, "d/b").unwrap(), b"changed");

    let s = attach_at(&env, "/default@1");
    assert_eq!(read_file(&s, ROOT, "a").unwrap(), b"version one");
    assert_eq!(read_file(&s, ROOT, "d/b").unwrap(), b"deep");
    // Read-only: every change is EROFS.
    let g = s.alloc_fid();
    s.walk_path(ROOT, g, "a").unwrap();
    assert_eq!(
        errno(s.lopen(g, O_RDWR).and_then(|_| s.write(g, 0, &b"x"[..]))),
        EROFS
    );
    s.clunk(g).unwrap();
    let d = s.alloc_fid();
    s.walk(ROOT, d, &[]).unwrap();
    assert_eq!(errno(s.lcreate(d, "new", O_RDWR, 0o644, 0)), EROFS);
    assert_eq!(errno(s.unlinkat(ROOT, "a", 0)), EROFS);
    assert_eq!(errno(s.mkdir(ROOT, "x", 0o755, 0)), EROFS);

    // A second snapshot sees the second version, and numbering goes on.
    let snap2 = env.server().images().snapshot("/default").unwrap();
    assert_eq!(snap2.path, "/default@2");
    let s2 = attach_at(&env, "/default@2");
    assert_eq!(read_file(&s2, ROOT, "a").unwrap(), b"VERSION TWO");
}

#[test]
fn forks_of_one_template_diverge_and_template_unchanged() {
    let env = Env::new();
    let images = env.server().images();
    images.create("/templates/base").unwrap();
    let t = attach_at(&env, "/templates/base");
    t.mkdir(ROOT, "etc", 0o755, 0).unwrap();
    create_in(&t, "etc", "hostname", b"template");
    detach(t);
    let s = images.snapshot("/templates/base").unwrap();
    let one = images.fork(&s.path, "/guests/one").unwrap();
    assert_eq!(one.origin.as_deref(), Some("/templates/base@1"));
    images.fork(&s.path, "/guests/two").unwrap();

    let a = attach_at(&env, "/guests/one");
    let b = attach_at(&env, "/guests/two");
    write_at(&a, "etc/hostname", b"one");
    create_in(&a, "etc", "only-one", b"1");
    write_at(&b, "etc/hostname", b"two");
    assert_eq!(read_file(&a, ROOT, "etc/hostname").unwrap(), b"one");
    assert_eq!(read_file(&b, ROOT, "etc/hostname").unwrap(), b"two");
    assert_eq!(list(&b, ROOT, "etc"), vec!["hostname"]);
    let t = attach_at(&env, "/templates/base");
    assert_eq!(read_file(&t, ROOT, "etc/hostname").unwrap(), b"template");
    let t1 = attach_at(&env, "/templates/base@1");
    assert_eq!(read_file(&t1, ROOT, "etc/hostname").unwrap(), b"template");

    let info = images.info("/templates/base").unwrap();
    assert_eq!(info.forks.len(), 2);
    // Forking a live head snapshots it first.
    let three = images.fork("/guests/one", "/guests/three").unwrap();
    assert_eq!(three.origin.as_deref(), Some("/guests/one@1"));
    let c3 = attach_at(&env, "/guests/three");
    assert_eq!(read_file(&c3, ROOT, "etc/only-one").unwrap(), b"1");

    let all: Vec<String> = images.list().unwrap().into_iter().map(|i| i.path).collect();
    for p in [
        "/default",
        "/guests/one",
        "/guests/three",
        "/guests/two",
        "/templates/base",
    ] {
        assert!(all.contains(&p.to_string()), "{p} missing from {all:?}");
    }
}

#[test]
fn admin_tree_rules_refuse_client_changes_to_images() {
    let env = Env::new();
    let images = env.server().images();
    images.create("/t/web").unwrap();
    images.create("/t/db").unwrap();
    let w = attach_at(&env, "/t/web");
    create_file(&w, ROOT, "f", b"x");
    detach(w);
    images.snapshot("/t/web").unwrap();
    let admin = attach_at(&env, "/t");
    // Image heads, snapshots and the metadata directory belong to the image manager.
    assert_eq!(errno(admin.unlinkat(ROOT, "web", 0x200)), EPERM);
    assert_eq!(errno(admin.renameat(ROOT, "web", ROOT, "web2")), EPERM);
    assert_eq!(errno(admin.mkdir(ROOT, "x@1", 0o755, 0)), EPERM);
    assert_eq!(errno(admin.mkdir(ROOT, ".envoy", 0o755, 0)), EPERM);
    // The root's metadata directory holds the image registry's journal.
    let top = attach_at(&env, "/");
    let m = top.alloc_fid();
    top.walk_path(ROOT, m, ".envoy").unwrap();
    let mm = top.alloc_fid();
    top.walk(m, mm, &[]).unwrap();
    assert_eq!(errno(top.lcreate(mm, "evil", O_RDWR, 0o644, 0)), EPERM);
    assert_eq!(errno(top.unlinkat(m, "@images", 0)), EPERM);
    detach(top);
    // Moving data between images, or between an image and the admin tree, is EXDEV.
    let web = admin.alloc_fid();
    admin.walk_path(ROOT, web, "web").unwrap();
    let db = admin.alloc_fid();
    admin.walk_path(ROOT, db, "db").unwrap();
    assert_eq!(errno(admin.renameat(web, "f", db, "f")), EXDEV);
    assert_eq!(errno(admin.renameat(web, "f", ROOT, "f")), EXDEV);
    let f = admin.alloc_fid();
    admin.walk_path(ROOT, f, "web/f").unwrap();
    assert_eq!(errno(admin.link(db, f, "f")), EXDEV);
    // Inside one image, rename works.
    admin.renameat(web, "f", web, "g").unwrap();
    // Administrative directories keep their names (image metadata records paths).
    assert_eq!(errno(admin.renameat(ROOT, ".", ROOT, "u")), 22);
    let top = attach_at(&env, "/");
    assert_eq!(errno(top.renameat(ROOT, "t", ROOT, "u")), EPERM);
    // Ordinary admin files (credential files) are allowed.
    let r = admin.alloc_fid();
    admin.walk(ROOT, r, &[]).unwrap();
    admin.lcreate(r, "notes", O_RDWR, 0o600, 0).unwrap();
}

#[test]
fn image_errors_are_operator_sentences() {
    let env = Env::new();
    let images = env.server().images();
    let e = images.snapshot("/nope/x").unwrap_err();
    assert!(matches!(e, ImageError::NoImage(_)), "{e}");
    assert!(e.to_string().contains("envoyctl image list"), "{e}");
    images.create("/a/b").unwrap();
    assert!(matches!(
        images.create("/a/b").unwrap_err(),
        ImageError::Exists(_)
    ));
    assert!(matches!(
        images.create("/a/b/c").unwrap_err(),
        ImageError::InsideImage(_)
    ));
    assert!(matches!(
        images.create("relative").unwrap_err(),
        ImageError::BadPath { .. }
    ));
    assert!(matches!(
        images.snapshot("/a/b@1").unwrap_err(),
        ImageError::NotAllowed(_)
    ));
    assert!(matches!(
        images.delete_snapshot("/a/b@7", &no_progress).unwrap_err(),
        ImageError::NoSnapshot(_)
    ));
}

/// Fills `dir` (a directory in the image attached on ROOT) with `n` files of `size` bytes.
fn fill(c: &Client, dir: &str, n: usize, size: usize) {
    c.mkdir(ROOT, dir, 0o755, 0).unwrap();
    let d = c.alloc_fid();
    c.walk_path(ROOT, d, dir).unwrap();
    let data = vec![0x5au8; size];
    for i in 0..n {
        create_file(c, d, &format!("f{i}"), &data);
    }
    c.clunk(d).unwrap();
}

#[test]
fn delete_snapshot_frees_objects_only_it_referenced() {
    let env = Env::new();
    let images = env.server().images();
    images.create("/t/img").unwrap();
    let c = attach_at(&env, "/t/img");
    fill(&c, "keep", 10, 4096);
    fill(&c, "gone", 50, 65536);
    images.snapshot("/t/img").unwrap(); // @1 has keep + gone
                                        // The head drops `gone`; its objects live on only in @1.
    remove_dir(&c, "gone", 50);
    images.snapshot("/t/img").unwrap(); // @2 has keep only
    let usage_before = env.server().fs().store().usage().unwrap();
    let phases = std::sync::Mutex::new(Vec::new());
    let report = images
        .delete_snapshot("/t/img@1", &|p: &Progress| {
            phases.lock().unwrap().push(p.phase)
        })
        .unwrap();
    // 50 files + the `gone` directory + @1's root, at least.
    assert!(report.objects_freed >= 52, "{report:?}");
    assert!(report.bytes_freed >= 50 * 65536, "{report:?}");
    assert_eq!(report.before, usage_before);
    assert!(phases.lock().unwrap().contains(&"free"));
    // Everything still reachable reads back.
    for i in 0..10 {
        assert_eq!(
            read_file(&c, ROOT, &format!("keep/f{i}")).unwrap().len(),
            4096
        );
    }
    let s2 = attach_at(&env, "/t/img@2");
    assert_eq!(list(&s2, ROOT, "keep").len(), 10);
    assert_eq!(errno(s2.walk_path(ROOT, s2.alloc_fid(), "gone")), 2);
    assert!(images
        .info("/t/img")
        .unwrap()
        .snapshots
        .iter()
        .all(|s| s.number == 2));
    detach(c);
    detach(s2);
    // The start-up scan finds nothing left to collect: deletion freed exactly the garbage.
    let mut env = env;
    env.restart();
    let scan_after = env.server().fs().store().usage().unwrap();
    assert_eq!(scan_after, report.after);
}

#[test]
fn delete_newest_snapshot_keeps_what_head_still_uses() {
    let env = Env::new();
    let images = env.server().images();
    images.create("/t/img").unwrap();
    let c = attach_at(&env, "/t/img");
    fill(&c, "d", 20, 8192);
    images.snapshot("/t/img").unwrap();
    create_file(&c, ROOT, "after", b"new");
    let r = images.delete_snapshot("/t/img@1", &no_progress).unwrap();
    // Only @1's own root goes: every file is still in the head.
    assert_eq!(r.objects_freed, 1, "{r:?}");
    for i in 0..20 {
        assert_eq!(read_file(&c, ROOT, &format!("d/f{i}")).unwrap().len(), 8192);
    }
    // Writing after the snapshot is gone still thaws correctly.
    write_at(&c, "d/f0", b"rewritten");
    assert_eq!(read_file(&c, ROOT, "d/f0").unwrap(), b"rewritten");
}

#[test]
fn fork_log_forbids_deleting_a_forked_snapshot_until_fork_deleted() {
    let env = Env::new();
    let images = env.server().images();
    images.create("/t/base").unwrap();
    let c = attach_at(&env, "/t/base");
    fill(&c, "d", 5, 4096);
    detach(c);
    images.snapshot("/t/base").unwrap();
    images.fork("/t/base@1", "/u/child").unwrap();
    let e = images
        .delete_snapshot("/t/base@1", &no_progress)
        .unwrap_err();
    assert!(matches!(e, ImageError::HasForks { .. }), "{e}");
    assert!(e.to_string().contains("/u/child"), "{e}");
    // The child writes its own data; deleting the child frees only that.
    let k = attach_at(&env, "/u/child");
    create_file(&k, ROOT, "mine", &vec![1u8; 100_000]);
    write_at(&k, "d/f0", b"diverged");
    let busy = images.delete_image("/u/child", &no_progress).unwrap_err();
    assert!(matches!(busy, ImageError::Busy(_)), "{busy}");
    detach(k);
    let r = images.delete_image("/u/child", &no_progress).unwrap();
    // Root + mine + thawed d + thawed f0.
    assert_eq!(r.objects_freed, 4, "{r:?}");
    assert!(images.info("/u/child").is_err());
    assert!(images.info("/t/base").unwrap().forks.is_empty());
    let base = attach_at(&env, "/t/base@1");
    assert_eq!(read_file(&base, ROOT, "d/f0").unwrap().len(), 4096);
    detach(base);
    // Now the snapshot may go.
    images.delete_snapshot("/t/base@1", &no_progress).unwrap();
}

#[test]
fn delete_whole_image_returns_store_to_previous_size() {
    let mut env = Env::new();
    let before = {
        let images = env.server().images();
        images.flush();
        env.server().fs().store().usage().unwrap()
    };
    {
        let images = env.server().images();
        images.create("/t/big").unwrap();
        let c = attach_at(&env, "/t/big");
        fill(&c, "a", 30, 32768);
        images.snapshot("/t/big").unwrap();
        fill(&c, "b", 30, 32768);
        images.snapshot("/t/big").unwrap();
        write_at(&c, "a/f1", b"short");
        detach(c);
        let r = images.delete_image("/t/big", &no_progress).unwrap();
        assert!(r.objects_freed >= 63, "{r:?}");
        // Back to the store before the image, except the admin directory /t and its
        // now-empty metadata directory.
        assert_eq!(r.after.objects, before.objects + 2, "{r:?} vs {before:?}");
    }
    env.restart();
    assert!(env.server().images().info("/t/big").is_err());
}

#[test]
fn crash_after_snapshot_unlinked_is_finished_at_start() {
    let mut env = Env::new();
    let freed_expected;
    {
        let images = env.server().images();
        images.create("/t/img").unwrap();
        let c = attach_at(&env, "/t/img");
        fill(&c, "gone", 20, 16384);
        images.snapshot("/t/img").unwrap();
        remove_dir(&c, "gone", 20);
        freed_expected = env.server().fs().store().usage().unwrap();
        images.inject_crash(Some("snapshot-delete:unlinked"));
        let e = images
            .delete_snapshot("/t/img@1", &no_progress)
            .unwrap_err();
        assert!(e.to_string().contains("simulated crash"), "{e}");
    }
    env.restart();
    let after = env.server().fs().store().usage().unwrap();
    assert!(
        after.objects + 21 <= freed_expected.objects,
        "{after:?} vs {freed_expected:?}"
    );
    let images = env.server().images();
    assert!(images.info("/t/img").unwrap().snapshots.is_empty());
    let meta = attach_at(&env, "/t");
    let names = list(&meta, ROOT, ".envoy");
    assert!(
        names.is_empty(),
        "intent record and catalogue removed: {names:?}"
    );
}

#[test]
fn crash_before_snapshot_unlinked_rolls_back_at_start() {
    let mut env = Env::new();
    {
        let images = env.server().images();
        images.create("/t/img").unwrap();
        let c = attach_at(&env, "/t/img");
        fill(&c, "d", 5, 4096);
        images.snapshot("/t/img").unwrap();
        images.inject_crash(Some("snapshot-delete:recorded"));
        images
            .delete_snapshot("/t/img@1", &no_progress)
            .unwrap_err();
    }
    env.restart();
    let s = attach_at(&env, "/t/img@1");
    assert_eq!(list(&s, ROOT, "d").len(), 5);
    let meta = attach_at(&env, "/t");
    assert!(!list(&meta, ROOT, ".envoy")
        .iter()
        .any(|n| n.ends_with("@doomed")));
    // And it can be deleted properly now.
    detach(s);
    env.server()
        .images()
        .delete_snapshot("/t/img@1", &no_progress)
        .unwrap();
}

#[test]
fn crash_mid_image_delete_and_mid_fork_recovered_at_start() {
    let mut env = Env::new();
    {
        let images = env.server().images();
        images.create("/t/base").unwrap();
        let c = attach_at(&env, "/t/base");
        fill(&c, "d", 5, 4096);
        detach(c);
        images.snapshot("/t/base").unwrap();
        images.fork("/t/base@1", "/u/a").unwrap();
        // A fork that dies after its record in the registry, before its root is linked.
        images.inject_crash(Some("fork:registered"));
        let e = images.fork("/t/base@1", "/u/b").unwrap_err();
        assert!(e.to_string().contains("simulated crash"), "{e}");
        // An image deletion that dies right after its commit point.
        let a = attach_at(&env, "/u/a");
        create_file(&a, ROOT, "x", b"x");
        detach(a);
        images.inject_crash(Some("image-delete:unlinked"));
        let e = images.delete_image("/u/a", &no_progress).unwrap_err();
        assert!(e.to_string().contains("simulated crash"), "{e}");
    }
    env.restart();
    let images = env.server().images();
    assert!(images.info("/u/a").is_err());
    assert!(images.info("/u/b").is_err());
    assert!(images.info("/t/base").unwrap().forks.is_empty());
    images.delete_snapshot("/t/base@1", &no_progress).unwrap();
    let meta = attach_at(&env, "/u");
    assert!(list(&meta, ROOT, ".envoy").is_empty());
}

#[test]
fn staged_image_invisible_until_published_and_discarded_on_drop() {
    let env = Env::new();
    let images = env.server().images();
    let fs = images.fs().clone();
    let cred = dom0_envoyd::namespace::Cred::user(0);
    let staged = images.stage("/imports/one").unwrap();
    fs.create(
        staged.root(),
        b"hello",
        envoy_storage::ObjectKind::Regular,
        0o644,
        cred,
        None,
    )
    .unwrap();
    assert!(images.info("/imports/one").is_err());
    let info = images.publish(staged).unwrap();
    assert_eq!(info.path, "/imports/one");
    let c = attach_at(&env, "/imports/one");
    assert_eq!(list(&c, ROOT, ""), vec!["hello"]);
    let before = fs.store().usage().unwrap();
    {
        let staged = images.stage("/imports/two").unwrap();
        fs.create(
            staged.root(),
            b"junk",
            envoy_storage::ObjectKind::Regular,
            0o644,
            cred,
            None,
        )
        .unwrap();
    }
    assert!(images.info("/imports/two").is_err());
    assert_eq!(fs.store().usage().unwrap().objects, before.objects);
}

#[test]
fn frozen_large_file_read_from_store_once_across_forks() {
    let env = Env::new();
    let images = env.server().images();
    images.create("/t/tmpl").unwrap();
    let c = attach_at(&env, "/t/tmpl");
    create_file(&c, ROOT, "big", &vec![9u8; 1 << 20]);
    detach(c);
    images.snapshot("/t/tmpl").unwrap();
    images.fork("/t/tmpl@1", "/g/a").unwrap();
    images.fork("/t/tmpl@1", "/g/b").unwrap();
    let fs = env.server().fs();
    let a = attach_at(&env, "/g/a");
    let t0 = fs.traffic().read_bytes;
    assert_eq!(read_file(&a, ROOT, "big").unwrap(), vec![9u8; 1 << 20]);
    let t1 = fs.traffic().read_bytes;
    let b = attach_at(&env, "/g/b");
    assert_eq!(read_file(&b, ROOT, "big").unwrap(), vec![9u8; 1 << 20]);
    let t2 = fs.traffic().read_bytes;
    assert!(t1 - t0 >= 1 << 20, "the first reader loads it: {}", t1 - t0);
    assert!(
        t2 - t1 < 64 * 1024,
        "the second fork reads the shared object from memory: {}",
        t2 - t1
    );
    // Writing through one fork thaws its name into a new object; the other still sees the
    // template's data.
    write_at(&a, "big", b"mine");
    assert_eq!(read_file(&a, ROOT, "big").unwrap(), b"mine");
    assert_eq!(read_file(&b, ROOT, "big").unwrap(), vec![9u8; 1 << 20]);
}

fn mtime_ns(c: &Client, fid: Fid) -> u128 {
    let a = c.getattr(fid, 0x7ff).unwrap();
    u128::from(a.mtime_sec) * 1_000_000_000 + u128::from(a.mtime_nsec)
}

/// A fork or snapshot leaves the administrative directory's mtime to the image manager's
/// background thread: after a flush it is the operation's time.
#[test]
fn fork_and_snapshot_set_the_admin_directory_mtime() {
    let env = Env::new();
    let images = env.server().images();
    images.create("/t/base").unwrap();
    images.snapshot("/t/base").unwrap();
    images.flush();
    let admin = attach_at(&env, "/t");
    let before = mtime_ns(&admin, ROOT);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    images.fork("/t/base@1", "/t/copy").unwrap();
    images.flush();
    let after_fork = mtime_ns(&admin, ROOT);
    assert!(
        after_fork > before && after_fork >= t0,
        "{before} {after_fork} {t0}"
    );
    std::thread::sleep(std::time::Duration::from_millis(20));
    images.snapshot("/t/copy").unwrap();
    images.flush();
    assert!(mtime_ns(&admin, ROOT) > after_fork);
    detach(admin);
}

/// A snapshot and its forks are links to one root object: taking them makes no object. The
/// first write into a fork copies the root (and makes what it writes); deleting the forks
/// and the snapshot gives every object back.
#[test]
fn forks_share_the_snapshot_root_until_written() {
    let env = Env::new();
    let images = env.server().images();
    images.create("/t/base").unwrap();
    let c = attach_at(&env, "/t/base");
    create_file(&c, ROOT, "f", b"template");
    detach(c);
    let usage = || env.server().fs().store().usage().unwrap().objects;
    // One round first, so the metadata directories it makes exist before counting.
    for round in 0..2 {
        images.flush();
        let start = usage();
        let snap = images.snapshot("/t/base").unwrap().path;
        for i in 0..6 {
            images.fork(&snap, &format!("/u/f{i}")).unwrap();
        }
        images.flush();
        if round == 1 {
            assert_eq!(usage(), start, "a snapshot and forks copy nothing");
        }
        let c = attach_at(&env, "/u/f5");
        assert_eq!(read_file(&c, ROOT, "f").unwrap(), b"template");
        create_file(&c, ROOT, "mine", b"5");
        detach(c);
        if round == 1 {
            assert_eq!(usage(), start + 2, "the fork's own root and `mine`");
        }
        let c = attach_at(&env, "/u/f4");
        assert!(read_file(&c, ROOT, "mine").is_err());
        assert_eq!(read_file(&c, ROOT, "f").unwrap(), b"template");
        detach(c);
        let c = attach_at(&env, &snap);
        assert!(read_file(&c, ROOT, "mine").is_err());
        detach(c);
        for i in 0..6 {
            images
                .delete_image(&format!("/u/f{i}"), &no_progress)
                .unwrap();
        }
        images.delete_snapshot(&snap, &no_progress).unwrap();
        images.flush();
        if round == 1 {
            assert_eq!(usage(), start, "every object came back");
        }
    }
    // The head never changed: it still reads the template.
    let c = attach_at(&env, "/t/base");
    assert_eq!(read_file(&c, ROOT, "f").unwrap(), b"template");
    detach(c);
}

/// Two snapshots of an unchanged head share its root. Deleting one leaves the head's link
/// frozen (the other still uses the root), so the head's next write copies and the remaining
/// snapshot keeps the old contents; the same when the root is shared with the snapshot a
/// never-written fork came from.
#[test]
fn deleting_one_of_two_snapshots_sharing_a_root_keeps_the_head_frozen() {
    let env = Env::new();
    let images = env.server().images();
    images.create("/t/img").unwrap();
    let c = attach_at(&env, "/t/img");
    create_file(&c, ROOT, "f", b"one");
    images.snapshot("/t/img").unwrap();
    images.snapshot("/t/img").unwrap();
    images.delete_snapshot("/t/img@2", &no_progress).unwrap();
    write_at(&c, "f", b"two");
    create_file(&c, ROOT, "g", b"new");
    detach(c);
    let s = attach_at(&env, "/t/img@1");
    assert_eq!(read_file(&s, ROOT, "f").unwrap(), b"one");
    assert!(read_file(&s, ROOT, "g").is_err());
    detach(s);

    // A fork never written shares its root with its origin, and so does its own snapshot.
    images.fork("/t/img@1", "/u/fork").unwrap();
    images.snapshot("/u/fork").unwrap();
    images.delete_snapshot("/u/fork@1", &no_progress).unwrap();
    let c = attach_at(&env, "/u/fork");
    write_at(&c, "f", b"fork");
    detach(c);
    let s = attach_at(&env, "/t/img@1");
    assert_eq!(
        read_file(&s, ROOT, "f").unwrap(),
        b"one",
        "the origin is unchanged"
    );
    detach(s);
}

/// A write after a snapshot repoints links above the file (its directory, the image's root,
/// the head's link). A client's fsync of the file makes those directories durable too, so
/// that the synced file is still named after a power failure; the directories are no longer
/// waiting for a sync afterwards.
#[test]
fn fsync_after_a_thaw_syncs_the_repointed_directories_above() {
    let env = Env::new();
    let images = env.server().images();
    images.create("/t/img").unwrap();
    let c = attach_at(&env, "/t/img");
    c.mkdir(ROOT, "d", 0o755, 0).unwrap();
    create_in(&c, "d", "f", b"one");
    images.snapshot("/t/img").unwrap();
    images.flush();
    let fs = env.server().fs();
    assert_eq!(fs.relinked_unsynced(), 0);
    let f = c.alloc_fid();
    c.walk_path(ROOT, f, "d/f").unwrap();
    c.lopen(f, O_WRONLY).unwrap();
    c.write_all(f, 0, b"two").unwrap();
    // The admin directory (head link), the head's root copy (link to d), d's copy (link to f).
    assert_eq!(fs.relinked_unsynced(), 3);
    c.fsync(f, false).unwrap();
    assert_eq!(
        fs.relinked_unsynced(),
        0,
        "fsync synced every repointed directory"
    );
    c.clunk(f).unwrap();
    assert_eq!(read_file(&c, ROOT, "d/f").unwrap(), b"two");
    detach(c);
}

/// The registry's journal is text an operator can read, and a start rewrites it without the
/// records of deleted images.
#[test]
fn image_journal_is_readable_and_compacted_at_start() {
    let mut env = Env::new();
    {
        let images = env.server().images();
        images.create("/t/keep").unwrap();
        for i in 0..40 {
            let p = format!("/t/tmp{i}");
            images.create(&p).unwrap();
            images.delete_image(&p, &no_progress).unwrap();
        }
    }
    let journal = |env: &Env| {
        let top = attach_at(env, "/");
        let j = String::from_utf8(read_file(&top, ROOT, ".envoy/@images").unwrap()).unwrap();
        detach(top);
        j
    };
    let long = journal(&env);
    assert!(long.starts_with("envoy-images 1\n"), "{long}");
    assert!(long.contains("image /t/tmp39\n") && long.contains("delete /t/tmp39\n"));
    env.restart();
    let short = journal(&env);
    assert_eq!(short, "envoy-images 1\nimage /default\nimage /t/keep\n");
    let images = env.server().images();
    let paths: Vec<String> = images.list().unwrap().into_iter().map(|i| i.path).collect();
    assert_eq!(paths, vec!["/default", "/t/keep"]);
}

/// A create and an import that die after their registry record, before their head is
/// linked, are rolled back at start: no image, the names free, and no object left.
#[test]
fn crash_after_registering_a_create_or_an_import_rolls_back_at_start() {
    let mut env = Env::new();
    let before;
    {
        let images = env.server().images();
        let fs = images.fs().clone();
        images.create("/t/keep").unwrap();
        drop(images.stage("/t/warm-up").unwrap()); // makes /t/.envoy
        images.flush();
        before = fs.store().usage().unwrap().objects;
        images.inject_crash(Some("create:registered"));
        let e = images.create("/t/new").unwrap_err();
        assert!(e.to_string().contains("simulated crash"), "{e}");
        let staged = images.stage("/t/imported").unwrap();
        fs.create(
            staged.root(),
            b"f",
            envoy_storage::ObjectKind::Regular,
            0o644,
            dom0_envoyd::namespace::Cred::user(0),
            None,
        )
        .unwrap();
        images.inject_crash(Some("publish:registered"));
        let e = images.publish(staged).unwrap_err();
        assert!(e.to_string().contains("simulated crash"), "{e}");
    }
    env.restart();
    let images = env.server().images();
    assert!(images.info("/t/new").is_err());
    assert!(images.info("/t/imported").is_err());
    let paths: Vec<String> = images.list().unwrap().into_iter().map(|i| i.path).collect();
    assert_eq!(paths, vec!["/default", "/t/keep"]);
    assert_eq!(
        env.server().fs().store().usage().unwrap().objects,
        before,
        "the interrupted import's tree is gone"
    );
    images.create("/t/new").unwrap();
    images.create("/t/imported").unwrap();
}
