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

fn attach_at(env: &Env, aname: &str) -> Client {
    let c = env.client("9P2000.L");
    c.attach(ROOT, Fid::NOFID, "root", aname, 0).unwrap();
    c
}
