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

/// Known leak, left for a design change (see the review report): after the only snapshot
/// sharing a head's objects is deleted, the head's links stay copy-on-write, so the next
/// write thaws into a copy and the old object, now referenced by nothing, is freed only by
/// the next start-up scan.
#[test]
#[ignore = "known: objects thawed away after their snapshot was deleted leak until restart"]
fn write_after_snapshot_deleted_leaves_no_unreferenced_object() {
    let env = Env::new();
    let images = env.server().images();
    images.create("/t/img").unwrap();
    let c = attach_at(&env, "/t/img");
    create_file(&c, ROOT, "f", b"one");
    images.snapshot("/t/img").unwrap();
    images.delete_snapshot("/t/img@1", &|_| {}).unwrap();
    let before = env.server().fs().store().usage().unwrap();
    let f = c.alloc_fid();
    c.walk_path(ROOT, f, "f").unwrap();
    c.lopen(f, O_WRONLY | O_TRUNC).unwrap();
    c.write_all(f, 0, b"two").unwrap();
    c.clunk(f).unwrap();
    let after = env.server().fs().store().usage().unwrap();
    assert_eq!(after.objects, before.objects, "{before:?} -> {after:?}");
}

/// Names of the object store's spare files (`objects/.spare-*`).
fn spare_names(env: &Env) -> Vec<String> {
    let objects = env.server().fs().store().dir().join("objects");
    std::fs::read_dir(objects)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(envoy_storage::store::SPARE_PREFIX))
        .collect()
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

/// Forks and snapshots rename spare files instead of creating files; what they make must be
/// the same, survive a restart, and a fork interrupted after its registry record must still be
/// rolled back at start.
#[test]
fn fork_and_snapshot_from_spare_files_survive_restart_and_crash() {
    let mut env = Env::new();
    {
        let images = env.server().images();
        images.create("/t/base").unwrap();
        let c = attach_at(&env, "/t/base");
        create_file(&c, ROOT, "f", b"template");
        c.clunk(ROOT).unwrap();
        wait_for_spares(&env);
        let before = spare_names(&env);
        images.snapshot("/t/base").unwrap();
        images.fork("/t/base@1", "/u/a").unwrap();
        let after = spare_names(&env);
        let used = before.iter().filter(|n| !after.contains(n)).count();
        // One each: the snapshot's root and the fork's root.
        assert!(used >= 2, "snapshot + fork used {used} spares");
        // Dies after the fork's registry record, before its root (a renamed spare) is linked.
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
    // The fork's root (a filled spare) is writable and diverges from the template.
    let a = attach_at(&env, "/u/a");
    create_file(&a, ROOT, "g", b"fork only");
    a.clunk(ROOT).unwrap();
    let base = attach_at(&env, "/t/base");
    assert!(read_file(&base, ROOT, "g").is_err());
    base.clunk(ROOT).unwrap();
}

fn attach_at(env: &Env, aname: &str) -> Client {
    let c = env.client("9P2000.L");
    c.attach(ROOT, Fid::NOFID, "root", aname, 0).unwrap();
    c
}
