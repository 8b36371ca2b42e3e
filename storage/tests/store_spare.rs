//! Spare files (`ObjectStore::keep_spare_files`): create and clone link a pre-created unnamed
//! empty file instead of creating one. They must behave exactly like the plain paths, never
//! show up as names in the store, and a crash at any point must leave nothing behind after
//! the recovery at open (which also removes the named spares of earlier versions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use envoy_storage::dirfmt::{self, DirBlock, DirEntry};
use envoy_storage::store::SPARE_PREFIX;
use envoy_storage::{
    Attributes, CrashInjector, EngineChoice, ObjectId, ObjectKind, ObjectStore, StoreError,
    StoreOptions, Timestamp,
};

fn opts() -> StoreOptions {
    StoreOptions {
        engine: EngineChoice::Sync,
        ..StoreOptions::default()
    }
}

fn attr(kind: ObjectKind) -> Attributes {
    Attributes {
        kind,
        mode: 0o640,
        uid: 7,
        gid: 8,
        atime: Timestamp { secs: 1, nanos: 2 },
        mtime: Timestamp { secs: 3, nanos: 4 },
    }
}

/// Waits until the store has `n` spares ready.
fn wait_ready(s: &ObjectStore, n: usize) {
    let t0 = Instant::now();
    while s.spare_files_ready() < n {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "spares not ready: {}",
            s.spare_files_ready()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Temporary (`.`-prefixed) names under `objects/`: named spares of earlier versions, or
/// the temporaries of the plain paths.
fn temp_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("objects"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

fn dir_object() -> Vec<u8> {
    let mut b = DirBlock::new();
    for i in 0..4u64 {
        b.insert(DirEntry {
            cow: false,
            id: ObjectId(100 + i),
            cookie: i + 1,
            name: format!("e{i}").into_bytes(),
        })
        .unwrap();
    }
    b.encode()
}

#[test]
fn spare_create_and_clone_match_the_plain_paths() {
    let d = tempfile::tempdir().unwrap();
    let s = ObjectStore::create(d.path(), opts()).unwrap();
    s.keep_spare_files(4).unwrap();
    wait_ready(&s, 4);
    assert_eq!(
        temp_names(d.path()),
        Vec::<String>::new(),
        "spares have no names"
    );
    let st = s
        .create_object(ObjectId(1), &attr(ObjectKind::Regular))
        .unwrap();
    assert_eq!((st.size, st.attr), (0, attr(ObjectKind::Regular)));
    s.write(ObjectId(1), 0, Bytes::from_static(b"hello spare"))
        .unwrap();
    s.clone_object_unsynced(ObjectId(1), ObjectId(2)).unwrap();
    s.create_object(ObjectId(3), &attr(ObjectKind::Directory))
        .unwrap();
    s.write(ObjectId(3), 0, Bytes::from(dir_object())).unwrap();
    s.clone_object(ObjectId(3), ObjectId(4)).unwrap();
    assert_eq!(
        s.spare_files_taken(),
        4,
        "each of the four operations used a spare"
    );
    assert_eq!(temp_names(d.path()), Vec::<String>::new());
    assert!(matches!(
        s.create_object(ObjectId(1), &attr(ObjectKind::Regular)),
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(&s.read(ObjectId(2), 0, 100).unwrap()[..], b"hello spare");
    let copy = s.read(ObjectId(4), 0, 1 << 20).unwrap();
    let e: Vec<_> = dirfmt::entries(&copy).collect::<Result<_, _>>().unwrap();
    assert_eq!(e.len(), 4);
    assert!(
        e.iter().all(|e| e.cow),
        "a directory clone sets copy-on-write"
    );
    s.sync(ObjectId(4)).unwrap();
    drop(s);
    assert_eq!(
        temp_names(d.path()),
        Vec::<String>::new(),
        "nothing left at drop"
    );
    let s = ObjectStore::open(d.path(), opts()).unwrap();
    for id in 1..=4 {
        assert!(
            s.stat(ObjectId(id)).is_ok(),
            "object {id} survives a reopen"
        );
    }
    assert_eq!(&s.read(ObjectId(1), 0, 100).unwrap()[..], b"hello spare");
    assert_eq!(
        s.stat(ObjectId(3)).unwrap().attr,
        attr(ObjectKind::Directory)
    );
}

#[test]
fn spare_crash_at_every_point_of_create_and_clone_leaves_old_or_new_state() {
    let base = tempfile::tempdir().unwrap();
    for (op, points) in [("create", 8u64), ("clone", 10u64)] {
        for k in 0..points {
            let dir = base.path().join(format!("{op}-{k}"));
            let s = ObjectStore::create(&dir, opts()).unwrap();
            s.create_object(ObjectId(1), &attr(ObjectKind::Directory))
                .unwrap();
            s.write(ObjectId(1), 0, Bytes::from(dir_object())).unwrap();
            drop(s);
            let inj = Arc::new(CrashInjector::new());
            let s = ObjectStore::open(&dir, opts())
                .unwrap()
                .with_crash_injector(Arc::clone(&inj));
            s.keep_spare_files(2).unwrap();
            wait_ready(&s, 2);
            inj.arm(k);
            let r = match op {
                "create" => s
                    .create_object(ObjectId(2), &attr(ObjectKind::Regular))
                    .map(drop),
                _ => s.clone_object_unsynced(ObjectId(1), ObjectId(2)).map(drop),
            };
            let crashed = matches!(r, Err(StoreError::InjectedCrash(_)));
            if !crashed {
                r.unwrap();
            }
            // A spare in use at the crash is unnamed and goes with its descriptor; an
            // earlier version's killed process would have left named spares: plant one.
            drop(s);
            std::fs::write(dir.join("objects").join(format!("{SPARE_PREFIX}ff")), b"").unwrap();
            let s = ObjectStore::open(&dir, opts()).unwrap();
            assert_eq!(
                temp_names(&dir),
                Vec::<String>::new(),
                "{op} k={k}: recovery removes temporaries and old spares"
            );
            match s.stat(ObjectId(2)) {
                Ok(st) if op == "clone" => {
                    let copy = s.read(ObjectId(2), 0, 1 << 20).unwrap();
                    assert_eq!(copy.len(), dir_object().len(), "{op} k={k}: complete");
                    assert_eq!(st.attr, attr(ObjectKind::Directory));
                }
                Ok(st) => assert_eq!((st.size, st.attr), (0, attr(ObjectKind::Regular))),
                Err(StoreError::NotFound(_)) => assert!(crashed, "{op} k={k}: lost"),
                Err(e) => panic!("{op} k={k}: {e}"),
            }
        }
    }
}

#[test]
fn check_ignores_empty_spares_and_reports_filled_ones() {
    let d = tempfile::tempdir().unwrap();
    drop(ObjectStore::create(d.path(), opts()).unwrap());
    let objects = d.path().join("objects");
    std::fs::write(objects.join(format!("{SPARE_PREFIX}1")), b"").unwrap();
    let r = envoy_storage::check::check(d.path());
    assert!(r.is_clean(), "an empty spare is no problem: {r}");
    std::fs::write(objects.join(format!("{SPARE_PREFIX}2")), b"EDIR").unwrap();
    let r = envoy_storage::check::check(d.path());
    assert!(!r.is_clean(), "a filled spare is an interrupted clone");
}
