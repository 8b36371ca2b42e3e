//! `check` on clean and deliberately damaged stores, through the library and the binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use envoy_storage::check::{check, Problem};
use envoy_storage::dirfmt::{DirBlock, DirEntry};
use envoy_storage::{Attributes, EngineChoice, ObjectId, ObjectKind, ObjectStore, StoreOptions};

fn populated() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let s = ObjectStore::create(
        d.path(),
        StoreOptions {
            engine: EngineChoice::Sync,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let r = s.reserve(100).unwrap();
    for i in 0..40 {
        let id = ObjectId(r.first.0 + i);
        s.create_object(id, &Attributes::new(ObjectKind::Regular, 0o644))
            .unwrap();
        s.write(id, 0, Bytes::from(vec![i as u8; 100])).unwrap();
    }
    let dir_id = ObjectId(r.first.0 + 50);
    s.create_object(dir_id, &Attributes::new(ObjectKind::Directory, 0o755))
        .unwrap();
    let mut b = DirBlock::new();
    b.insert(DirEntry {
        cow: false,
        id: ObjectId(1),
        cookie: 1,
        name: b"a".to_vec(),
    })
    .unwrap();
    s.write(dir_id, 0, Bytes::from(b.encode())).unwrap();
    let leaf = leaf_of(d.path(), "01f");
    (d, leaf)
}

/// The path of the leaf file whose name starts with `prefix`.
fn leaf_of(root: &Path, prefix: &str) -> PathBuf {
    fn walk(p: &Path, prefix: &str) -> Option<PathBuf> {
        for e in std::fs::read_dir(p).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                if let Some(f) = walk(&e.path(), prefix) {
                    return Some(f);
                }
            } else if e.file_name().to_string_lossy().starts_with(prefix) {
                return Some(e.path());
            }
        }
        None
    }
    walk(&root.join("objects"), prefix).unwrap()
}

#[test]
fn check_clean_store_no_problems() {
    let (d, _) = populated();
    let r = check(d.path());
    assert!(r.is_clean(), "{r}");
    assert_eq!(r.objects, 41);
    assert_eq!(r.directories, 1);
    assert!(r.to_string().contains("clean"));
}

#[test]
fn check_stray_temp_file_reported_as_leftover() {
    let (d, leaf) = populated();
    std::fs::write(leaf.parent().unwrap().join(".clone-7"), b"x").unwrap();
    let r = check(d.path());
    assert!(
        matches!(r.problems.as_slice(), [Problem::Leftover(_)]),
        "{r}"
    );
    assert!(r
        .to_string()
        .contains("leftover from a crash; removed on next open"));
}

#[test]
fn check_bad_names_and_paths_reported() {
    let (d, leaf) = populated();
    let dir = leaf.parent().unwrap();
    std::fs::write(dir.join("not-a-leaf"), b"x").unwrap();
    std::fs::write(d.path().join("objects").join("zz"), b"x").unwrap();
    std::fs::create_dir(d.path().join("objects").join("ab")).unwrap();
    std::fs::create_dir(dir.join("01f0000000000000000000000000000000000000000000000000000001"))
        .unwrap();
    let r = check(d.path());
    let bad = r
        .problems
        .iter()
        .filter(|p| matches!(p, Problem::BadPath { .. }))
        .count();
    assert_eq!(bad, 4, "{r}");
}

#[test]
fn check_duplicate_id_and_id_above_mark_reported() {
    let (d, leaf) = populated();
    let dir = leaf.parent().unwrap().to_path_buf();
    let name = leaf.file_name().unwrap().to_string_lossy().to_string();
    // Same low bits, different mode: a second file for the same ID.
    let dup = format!("{}{}{}", &name[..3], "01ff", &name[7..]);
    std::fs::write(dir.join(dup), b"").unwrap();
    // The last ID of the 48-bit space, far above the reserve mark.
    let far = d.path().join("objects/7/ff/ff/ff/ff/ff");
    std::fs::create_dir_all(&far).unwrap();
    std::fs::write(far.join(format!("1f{}", &name[2..])), b"").unwrap();
    let r = check(d.path());
    assert!(
        r.problems
            .iter()
            .any(|p| matches!(p, Problem::DuplicateId { .. })),
        "{r}"
    );
    assert!(
        r.problems
            .iter()
            .any(|p| matches!(p, Problem::AboveMark { id, .. } if id.0 == (1 << 48) - 1)),
        "{r}"
    );
}

#[test]
fn check_corrupt_directory_object_reported() {
    let (d, _) = populated();
    let dir_leaf = leaf_of(d.path(), &format!("{:02x}d", 51 & 31));
    let mut data = std::fs::read(&dir_leaf).unwrap();
    data[0] = b'X';
    std::fs::write(&dir_leaf, data).unwrap();
    let r = check(d.path());
    assert!(
        matches!(r.problems.as_slice(), [Problem::BadDirectory { .. }]),
        "{r}"
    );
    assert!(r.to_string().contains("bad magic"), "{r}");
}

#[test]
fn check_leaf_replaced_by_symlink_reported_and_store_never_follows_it() {
    let (d, leaf) = populated();
    let elsewhere = tempfile::tempdir().unwrap();
    let outside = elsewhere.path().join("host-file");
    std::fs::write(&outside, b"host secret").unwrap();
    std::fs::remove_file(&leaf).unwrap();
    std::os::unix::fs::symlink(&outside, &leaf).unwrap();

    let r = check(d.path());
    assert!(
        r.problems.iter().any(
            |p| matches!(p, Problem::BadPath { reason, .. } if reason.contains("regular file"))
        ),
        "{r}"
    );

    let s = ObjectStore::open(
        d.path(),
        StoreOptions {
            engine: EngineChoice::Sync,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    // The leaf holds low bits 1: object 1 or 33, whichever `leaf_of` found.
    let reads: Vec<_> = [1, 33].map(|id| s.read(ObjectId(id), 0, 100)).into();
    assert_eq!(reads.iter().filter(|r| r.is_err()).count(), 1);
    for data in reads.into_iter().flatten() {
        assert_ne!(&data[..], b"host secret");
    }
}

#[test]
fn check_corrupt_superblock_reported_and_stops() {
    let (d, _) = populated();
    std::fs::write(
        d.path().join("envoy-store.meta"),
        b"format=envoy-store\nversion=9\n",
    )
    .unwrap();
    let r = check(d.path());
    assert!(
        matches!(r.problems.as_slice(), [Problem::Superblock(_)]),
        "{r}"
    );
    let empty = tempfile::tempdir().unwrap();
    assert!(!check(empty.path()).is_clean());
}

#[test]
fn check_binary_exit_codes_clean_zero_damaged_one() {
    let (d, leaf) = populated();
    let bin = env!("CARGO_BIN_EXE_envoy-storaged");
    let out = Command::new(bin)
        .arg("check")
        .arg(d.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::write(leaf.parent().unwrap().join(".clone-3"), b"x").unwrap();
    let out = Command::new(bin)
        .arg("check")
        .arg(d.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1 problem(s)"), "{text}");
    // Reopening runs recovery, after which the store checks clean again.
    drop(ObjectStore::open(d.path(), StoreOptions::default()).unwrap());
    let out = Command::new(bin)
        .arg("check")
        .arg(d.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn demo_binary_runs_and_leaves_clean_store() {
    let d = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_envoy-storaged");
    let out = Command::new(bin)
        .args(["demo", "--dir"])
        .arg(d.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Hello from the Envoy object store."),
        "{text}"
    );
    assert!(check(d.path()).is_clean());
}
