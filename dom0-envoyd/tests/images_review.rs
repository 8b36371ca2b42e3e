//! Review findings on images, snapshots and forks: each test failed before its fix.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use dom0_envoyd::images::ImageError;

#[test]
fn fork_of_head_to_taken_name_fails_without_leaving_a_snapshot() {
    let env = Env::new();
    let images = env.server().images();
    images.create("/t/web").unwrap();
    images.create("/t/db").unwrap();
    // The destination is taken: the fork must fail before snapshotting the source head.
    let e = images.fork("/t/web", "/t/db").unwrap_err();
    assert!(matches!(e, ImageError::Exists(_)), "{e}");
    let e = images.fork("/t/web", "/t/web/inside").unwrap_err();
    assert!(matches!(e, ImageError::InsideImage(_)), "{e}");
    assert!(images.info("/t/web").unwrap().snapshots.is_empty());
    // A good fork still snapshots the head first.
    images.fork("/t/web", "/t/web2").unwrap();
    assert_eq!(images.info("/t/web").unwrap().snapshots.len(), 1);
}

/// `/t/img` with a file `f`, attached; and a snapshot `/t/img@1`.
fn image_with_a_snapshot(env: &Env) -> Client {
    let images = env.server().images();
    images.create("/t/img").unwrap();
    let c = attach_at(env, "/t/img");
    create_file(&c, ROOT, "f", b"one");
    images.snapshot("/t/img").unwrap();
    c
}

/// Rewrites `f` through `c`, and returns how many objects the store gained meanwhile.
fn objects_made_rewriting_f(env: &Env, c: &Client) -> i64 {
    let before = env.server().fs().store().usage().unwrap().objects;
    let f = c.alloc_fid();
    c.walk_path(ROOT, f, "f").unwrap();
    c.lopen(f, O_WRONLY | O_TRUNC).unwrap();
    c.write_all(f, 0, b"two").unwrap();
    c.clunk(f).unwrap();
    assert_eq!(read_file(c, ROOT, "f").unwrap(), b"two");
    env.server().fs().store().usage().unwrap().objects as i64 - before as i64
}

/// Deleting the only snapshot of an unchanged head frees nothing and hands the root back to
/// the head (its link is unfrozen), so the next write changes files in place and leaves
/// nothing behind.
#[test]
fn write_after_snapshot_deleted_leaves_no_unreferenced_object() {
    let env = Env::new();
    let c = image_with_a_snapshot(&env);
    let r = env
        .server()
        .images()
        .delete_snapshot("/t/img@1", &|_| {})
        .unwrap();
    assert_eq!(r.objects_freed, 0, "{r:?}");
    assert_eq!(objects_made_rewriting_f(&env, &c), 0);
}

/// Known leak, left for a design change: when the head changed after the snapshot (so its
/// root was copied, with every entry frozen), deleting the snapshot leaves the head's other
/// entries copy-on-write; the next write to one of them thaws it into a copy, and the old
/// object, now referenced by nothing, is freed only by the next start-up scan. Freeing it at
/// the thaw needs to know that no other link shares it (a count of links per object).
#[test]
#[ignore = "known: objects thawed away after their snapshot was deleted leak until restart"]
fn write_after_changed_head_lost_its_snapshot_leaves_no_unreferenced_object() {
    let env = Env::new();
    let c = image_with_a_snapshot(&env);
    create_file(&c, ROOT, "g", b"after the snapshot");
    env.server()
        .images()
        .delete_snapshot("/t/img@1", &|_| {})
        .unwrap();
    assert_eq!(objects_made_rewriting_f(&env, &c), 0);
}

fn wait_for_spares(env: &Env) {
    let store = env.server().fs().store();
    for _ in 0..2000 {
        if store.spare_files_ready() >= 8 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!("the store never made spare files");
}

/// A snapshot and a fork copy nothing (no spare file is taken, no object made); the fork's
/// first write does. What they make survives a restart, and a fork interrupted after its
/// registry record is still rolled back at start.
#[test]
fn fork_and_snapshot_copy_nothing_and_survive_restart_and_crash() {
    let mut env = Env::new();
    {
        let images = env.server().images();
        images.create("/t/base").unwrap();
        images.create("/u/warm-up").unwrap(); // makes the administrative directory /u
        let c = attach_at(&env, "/t/base");
        create_file(&c, ROOT, "f", b"template");
        c.clunk(ROOT).unwrap();
        images.flush();
        wait_for_spares(&env);
        let before = env.server().fs().store().spare_files_taken();
        let objects = env.server().fs().store().usage().unwrap().objects;
        images.snapshot("/t/base").unwrap();
        images.fork("/t/base@1", "/u/a").unwrap();
        images.flush();
        let used = env.server().fs().store().spare_files_taken() - before;
        assert_eq!(used, 0, "snapshot + fork used {used} spares");
        assert_eq!(
            env.server().fs().store().usage().unwrap().objects,
            objects,
            "snapshot + fork made no object"
        );
        // Dies after the fork's registry record, before its head is linked.
        images.inject_crash(Some("fork:registered"));
        images.fork("/t/base@1", "/u/b").unwrap_err();
    }
    env.restart();
    let images = env.server().images();
    assert!(
        images.info("/u/b").is_err(),
        "the interrupted fork is rolled back"
    );
    assert_eq!(
        images.info("/t/base").unwrap().forks,
        vec!["/u/a (from @1)".to_string()]
    );
    for aname in ["/u/a", "/t/base@1"] {
        let c = attach_at(&env, aname);
        assert_eq!(read_file(&c, ROOT, "f").unwrap(), b"template", "{aname}");
        c.clunk(ROOT).unwrap();
    }
    // The fork (its root a frozen link to the snapshot's) is writable and diverges from the
    // template.
    let a = attach_at(&env, "/u/a");
    create_file(&a, ROOT, "g", b"fork only");
    a.clunk(ROOT).unwrap();
    let base = attach_at(&env, "/t/base");
    assert!(read_file(&base, ROOT, "g").is_err());
    // So is the head, which shared its root with the snapshot and the fork.
    create_file(&base, ROOT, "h", b"head only");
    base.clunk(ROOT).unwrap();
    for aname in ["/u/a", "/t/base@1"] {
        let c = attach_at(&env, aname);
        assert!(read_file(&c, ROOT, "h").is_err(), "{aname}");
        c.clunk(ROOT).unwrap();
    }
}

fn attach_at(env: &Env, aname: &str) -> Client {
    let c = env.client("9P2000.L");
    c.attach(ROOT, Fid::NOFID, "root", aname, 0).unwrap();
    c
}
