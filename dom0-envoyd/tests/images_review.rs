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
