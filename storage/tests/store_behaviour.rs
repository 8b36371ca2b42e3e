//! Behaviour of the object store at its edges: unknown IDs, bad ranges, duplicates, limits,
//! listing, usage, persistence across reopen, locking, poisoning.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use envoy_storage::dirfmt::{self, DirBlock, DirEntry};
use envoy_storage::engine::{IoEngine, IoOp, IoOutcome, SyncEngine};
use envoy_storage::{
    AttrChange, Attributes, EngineChoice, ObjectId, ObjectKind, ObjectStore, ReadRequest,
    StoreError, StoreOptions, Timestamp, WriteRequest, MAX_IO,
};

fn opts() -> StoreOptions {
    StoreOptions {
        engine: EngineChoice::Sync,
        ..StoreOptions::default()
    }
}

fn file_attr() -> Attributes {
    Attributes {
        kind: ObjectKind::Regular,
        mode: 0o644,
        uid: 1000,
        gid: 100,
        atime: Timestamp { secs: 10, nanos: 1 },
        mtime: Timestamp { secs: 20, nanos: 2 },
    }
}

fn new_store() -> (tempfile::TempDir, ObjectStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = ObjectStore::create(dir.path(), opts()).unwrap();
    (dir, s)
}

#[test]
fn create_write_read_stat_round_trip() {
    let (_d, s) = new_store();
    let id = s.reserve(1).unwrap().first;
    let st = s.create_object(id, &file_attr()).unwrap();
    assert_eq!(st.size, 0);
    assert_eq!(st.attr, file_attr());
    assert_eq!(s.write(id, 5, Bytes::from_static(b"hello")).unwrap(), 5);
    assert_eq!(&s.read(id, 0, 100).unwrap()[..], b"\0\0\0\0\0hello");
    assert_eq!(&s.read(id, 7, 2).unwrap()[..], b"ll");
    assert!(s.read(id, 1000, 10).unwrap().is_empty());
    let st = s.stat(id).unwrap();
    assert_eq!(st.size, 10);
    assert_eq!(st.attr, file_attr());
}

#[test]
fn unknown_id_every_operation_not_found() {
    let (_d, s) = new_store();
    let id = ObjectId(77);
    let nf =
        |r: Result<(), StoreError>| assert!(matches!(r, Err(StoreError::NotFound(i)) if i == id));
    nf(s.read(id, 0, 1).map(|_| ()));
    nf(s.write(id, 0, Bytes::from_static(b"x")).map(|_| ()));
    nf(s.stat(id).map(|_| ()));
    nf(s.wstat(id, &AttrChange::default()).map(|_| ()));
    nf(s.delete(id));
    nf(s.sync(id));
    nf(s.clone_object(id, ObjectId(78)).map(|_| ()));
    assert_eq!(s.stat(id).unwrap_err().errno(), libc::ENOENT);
}

#[test]
fn id_beyond_id_bits_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let s = ObjectStore::create(
        dir.path(),
        StoreOptions {
            id_bits: 20,
            ..opts()
        },
    )
    .unwrap();
    let big = ObjectId(1 << 20);
    let e = s.create_object(big, &file_attr()).unwrap_err();
    assert!(
        matches!(e, StoreError::IdOutOfRange { id_bits: 20, .. }),
        "{e}"
    );
    assert!(matches!(
        s.write(big, 0, Bytes::new()),
        Err(StoreError::IdOutOfRange { .. })
    ));
    assert!(matches!(
        s.read(ObjectId(u64::MAX), 0, 1),
        Err(StoreError::IdOutOfRange { .. })
    ));
    // The whole ID space can be reserved, and then no more.
    let r = s.reserve((1 << 20) - 1).unwrap();
    assert_eq!(r.first, ObjectId(1));
    assert!(s.reserve(1).is_err());
    assert!(s
        .create_object(ObjectId((1 << 20) - 1), &file_attr())
        .is_ok());
}

#[test]
fn id_all_ones_in_64_bit_store_rejected_so_every_object_stays_below_mark() {
    let dir = tempfile::tempdir().unwrap();
    let s = ObjectStore::create(
        dir.path(),
        StoreOptions {
            id_bits: 64,
            ..opts()
        },
    )
    .unwrap();
    // The reserve mark is exclusive and a u64: it can never cover u64::MAX.
    assert!(matches!(
        s.create_object(ObjectId(u64::MAX), &file_attr()),
        Err(StoreError::IdOutOfRange { .. })
    ));
    s.create_object(ObjectId(u64::MAX - 1), &file_attr())
        .unwrap();
    s.clone_object(ObjectId(u64::MAX - 1), ObjectId(u64::MAX))
        .unwrap_err();
    drop(s);
    let r = envoy_storage::check::check(dir.path());
    assert!(r.is_clean(), "{r}");
}

#[test]
fn offset_overflow_and_size_limits_rejected() {
    let (_d, s) = new_store();
    let id = ObjectId(1);
    s.create_object(id, &file_attr()).unwrap();
    let inval = |r: Result<(), StoreError>| {
        assert!(matches!(r, Err(StoreError::InvalidArgument(_))), "{r:?}")
    };
    inval(s.read(id, u64::MAX - 1, 10).map(|_| ()));
    inval(
        s.write(id, u64::MAX - 1, Bytes::from_static(b"abc"))
            .map(|_| ()),
    );
    inval(
        s.write(id, i64::MAX as u64, Bytes::from_static(b"a"))
            .map(|_| ()),
    );
    inval(
        s.write(id, 0, Bytes::from(vec![0u8; MAX_IO + 1]))
            .map(|_| ()),
    );
    inval(
        s.wstat(
            id,
            &AttrChange {
                size: Some(u64::MAX),
                ..Default::default()
            },
        )
        .map(|_| ()),
    );
    inval(
        s.wstat(
            id,
            &AttrChange {
                mode: Some(0o170000),
                ..Default::default()
            },
        )
        .map(|_| ()),
    );
    assert!(s.reserve(0).is_err());
    // A huge read is capped at MAX_IO, not refused.
    s.wstat(
        id,
        &AttrChange {
            size: Some(MAX_IO as u64 + 100),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(s.read(id, 0, usize::MAX).unwrap().len(), MAX_IO);
}

#[test]
fn create_duplicate_already_exists() {
    let (_d, s) = new_store();
    s.create_object(ObjectId(3), &file_attr()).unwrap();
    let e = s.create_object(ObjectId(3), &file_attr()).unwrap_err();
    assert!(matches!(e, StoreError::AlreadyExists(ObjectId(3))));
    assert_eq!(e.errno(), libc::EEXIST);
    s.create_object(ObjectId(4), &file_attr()).unwrap();
    assert!(matches!(
        s.clone_object(ObjectId(3), ObjectId(4)),
        Err(StoreError::AlreadyExists(_))
    ));
}

#[test]
fn delete_missing_not_found_and_delete_twice() {
    let (_d, s) = new_store();
    s.create_object(ObjectId(9), &file_attr()).unwrap();
    s.delete(ObjectId(9)).unwrap();
    assert!(matches!(
        s.delete(ObjectId(9)),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(s.stat(ObjectId(9)), Err(StoreError::NotFound(_))));
    // The ID can be used again.
    s.create_object(ObjectId(9), &file_attr()).unwrap();
    assert_eq!(s.read(ObjectId(9), 0, 10).unwrap().len(), 0);
}

#[test]
fn delete_then_recreate_never_reads_old_file_through_cached_descriptor() {
    let (_d, s) = new_store();
    let id = ObjectId(9);
    s.create_object(id, &file_attr()).unwrap();
    s.write(id, 0, Bytes::from_static(b"old data")).unwrap();
    assert_eq!(&s.read(id, 0, 100).unwrap()[..], b"old data");
    s.delete(id).unwrap();
    assert!(matches!(s.read(id, 0, 100), Err(StoreError::NotFound(_))));
    assert!(matches!(
        s.write(id, 0, Bytes::from_static(b"x")),
        Err(StoreError::NotFound(_))
    ));
    s.create_object(id, &file_attr()).unwrap();
    assert!(s.read(id, 0, 100).unwrap().is_empty());
    s.write(id, 0, Bytes::from_static(b"new")).unwrap();
    assert_eq!(&s.read(id, 0, 100).unwrap()[..], b"new");

    // Recreated by clone, after a rename by wstat.
    s.create_object(ObjectId(10), &file_attr()).unwrap();
    s.write(ObjectId(10), 0, Bytes::from_static(b"cloned"))
        .unwrap();
    s.wstat(
        id,
        &AttrChange {
            mode: Some(0o600),
            ..AttrChange::default()
        },
    )
    .unwrap();
    assert_eq!(&s.read(id, 0, 100).unwrap()[..], b"new");
    s.delete(id).unwrap();
    s.clone_object(ObjectId(10), id).unwrap();
    assert_eq!(&s.read(id, 0, 100).unwrap()[..], b"cloned");
    assert_eq!(s.stat(id).unwrap().size, 6);
}

#[test]
fn wstat_changes_attributes_and_size_persist_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let id = ObjectId(42);
    {
        let s = ObjectStore::create(dir.path(), opts()).unwrap();
        s.create_object(id, &file_attr()).unwrap();
        s.write(id, 0, Bytes::from_static(b"0123456789")).unwrap();
        let st = s
            .wstat(
                id,
                &AttrChange {
                    mode: Some(0o4711),
                    uid: Some(u32::MAX),
                    mtime: Some(Timestamp {
                        secs: 99,
                        nanos: 999_999_999,
                    }),
                    size: Some(4),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(st.size, 4);
        assert_eq!(st.attr.mode, 0o4711);
        s.sync(id).unwrap();
    }
    let s = ObjectStore::open(dir.path(), opts()).unwrap();
    let st = s.stat(id).unwrap();
    assert_eq!(st.attr.mode, 0o4711);
    assert_eq!(st.attr.uid, u32::MAX);
    assert_eq!(st.attr.gid, 100);
    assert_eq!(
        st.attr.mtime,
        Timestamp {
            secs: 99,
            nanos: 999_999_999
        }
    );
    assert_eq!(&s.read(id, 0, 100).unwrap()[..], b"0123");
}

#[test]
fn clone_regular_copies_data_and_attributes_independently() {
    let (_d, s) = new_store();
    s.create_object(ObjectId(1), &file_attr()).unwrap();
    s.write(ObjectId(1), 0, Bytes::from(vec![7u8; 100_000]))
        .unwrap();
    let st = s.clone_object(ObjectId(1), ObjectId(2)).unwrap();
    assert_eq!(st.size, 100_000);
    assert_eq!(st.attr, file_attr());
    s.write(ObjectId(2), 0, Bytes::from_static(b"x")).unwrap();
    assert_eq!(s.read(ObjectId(1), 0, 1).unwrap()[0], 7);
    assert_eq!(&s.read(ObjectId(2), 0, 2).unwrap()[..], b"x\x07");
}

#[test]
fn clone_directory_sets_cow_on_every_entry() {
    let (_d, s) = new_store();
    let dir_attr = Attributes {
        kind: ObjectKind::Directory,
        mode: 0o755,
        ..file_attr()
    };
    s.create_object(ObjectId(1), &dir_attr).unwrap();
    let mut data = Vec::new();
    for blk in 0..3u64 {
        let mut b = DirBlock::new();
        for i in 0..5u64 {
            b.insert(DirEntry {
                cow: false,
                id: ObjectId(100 + blk * 10 + i),
                cookie: blk * 10 + i + 1,
                name: format!("f{blk}-{i}").into_bytes(),
            })
            .unwrap();
        }
        data.extend(b.encode());
    }
    s.write(ObjectId(1), 0, Bytes::from(data)).unwrap();
    s.clone_object(ObjectId(1), ObjectId(2)).unwrap();
    let copy = s.read(ObjectId(2), 0, 1 << 20).unwrap();
    let entries: Vec<_> = dirfmt::entries(&copy).collect::<Result<_, _>>().unwrap();
    assert_eq!(entries.len(), 15);
    assert!(entries.iter().all(|e| e.cow));
    let orig = s.read(ObjectId(1), 0, 1 << 20).unwrap();
    assert!(
        dirfmt::entries(&orig).all(|e| !e.unwrap().cow),
        "source untouched"
    );
}

#[test]
fn clone_corrupt_directory_fails_and_leaves_nothing() {
    let (d, s) = new_store();
    let dir_attr = Attributes {
        kind: ObjectKind::Directory,
        ..file_attr()
    };
    s.create_object(ObjectId(1), &dir_attr).unwrap();
    s.write(ObjectId(1), 0, Bytes::from(vec![0xffu8; 4096]))
        .unwrap();
    let e = s.clone_object(ObjectId(1), ObjectId(2)).unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::CorruptDirectory {
                id: ObjectId(1),
                ..
            }
        ),
        "{e}"
    );
    assert!(matches!(s.stat(ObjectId(2)), Err(StoreError::NotFound(_))));
    let temps = walk(d.path())
        .into_iter()
        .filter(|p| p.rsplit('/').next().is_some_and(|n| n.starts_with('.')))
        .count();
    assert_eq!(temps, 0);
}

/// An engine that records the largest read it was asked for.
#[derive(Debug, Default)]
struct ReadRecorder {
    reads: std::sync::atomic::AtomicUsize,
    largest: std::sync::atomic::AtomicUsize,
}

impl IoEngine for ReadRecorder {
    fn name(&self) -> &'static str {
        "read-recorder"
    }
    fn run(&self, ops: Vec<IoOp>) -> Vec<io::Result<IoOutcome>> {
        use std::sync::atomic::Ordering::SeqCst;
        for op in &ops {
            if let IoOp::Read { len, .. } = op {
                self.reads.fetch_add(1, SeqCst);
                self.largest.fetch_max(*len, SeqCst);
            }
        }
        SyncEngine.run(ops)
    }
}

/// A directory object of `blocks` blocks, one entry each.
fn dir_object(blocks: u64) -> Vec<u8> {
    let mut data = Vec::new();
    for i in 0..blocks {
        let mut b = DirBlock::new();
        b.insert(DirEntry {
            cow: false,
            id: ObjectId(1000 + i),
            cookie: i + 1,
            name: format!("e{i}").into_bytes(),
        })
        .unwrap();
        data.extend(b.encode());
    }
    data
}

#[test]
fn clone_large_directory_reads_through_engine_in_bounded_chunks() {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = tempfile::tempdir().unwrap();
    let rec = Arc::new(ReadRecorder::default());
    let o = StoreOptions {
        engine: EngineChoice::Custom(Arc::clone(&rec) as Arc<dyn IoEngine>),
        ..opts()
    };
    let s = ObjectStore::create(dir.path(), o).unwrap();
    let dir_attr = Attributes {
        kind: ObjectKind::Directory,
        ..file_attr()
    };
    s.create_object(ObjectId(1), &dir_attr).unwrap();
    // 8 MiB of directory: a hostile peer can make one this big (or sparse up to any size)
    // and clone it from every worker at once, so clone must not hold it in memory.
    let blocks = 2048u64;
    s.write(ObjectId(1), 0, Bytes::from(dir_object(blocks)))
        .unwrap();
    rec.reads.store(0, SeqCst);
    rec.largest.store(0, SeqCst);

    s.clone_object(ObjectId(1), ObjectId(2)).unwrap();

    assert!(
        rec.reads.load(SeqCst) >= 8,
        "directory data read via the engine"
    );
    assert!(
        rec.largest.load(SeqCst) <= 1 << 20,
        "reads bounded to 1 MiB"
    );
    let copy = s.read(ObjectId(2), 0, MAX_IO).unwrap();
    assert_eq!(copy.len() as u64, blocks * 4096);
    let entries: Vec<_> = dirfmt::entries(&copy).collect::<Result<_, _>>().unwrap();
    assert_eq!(entries.len() as u64, blocks);
    assert!(entries.iter().all(|e| e.cow));
}

#[test]
fn clone_directory_corrupt_late_block_names_that_block_and_leaves_nothing() {
    let (d, s) = new_store();
    let dir_attr = Attributes {
        kind: ObjectKind::Directory,
        ..file_attr()
    };
    s.create_object(ObjectId(1), &dir_attr).unwrap();
    let mut data = dir_object(400);
    data[300 * 4096] = b'X';
    s.write(ObjectId(1), 0, Bytes::from(data)).unwrap();
    let e = s.clone_object(ObjectId(1), ObjectId(2)).unwrap_err();
    let index = match &e {
        StoreError::CorruptDirectory {
            id: ObjectId(1),
            source: dirfmt::DirFormatError::Block { index, .. },
        } => Some(*index),
        _ => None,
    };
    assert_eq!(index, Some(300), "{e}");
    assert!(matches!(s.stat(ObjectId(2)), Err(StoreError::NotFound(_))));
    assert!(walk(d.path()).iter().all(|p| !p.contains("/.clone")));
}

fn walk(p: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path().display().to_string());
        }
    }
    out
}

#[test]
fn objects_lists_everything_in_id_order_and_usage_returns_to_baseline() {
    let (_d, s) = new_store();
    let base = s.usage().unwrap();
    assert_eq!(base.objects, 0);
    let ids: Vec<u64> = (0..200).map(|i| i * 37 + (i << 20)).collect();
    for &i in &ids {
        s.create_object(ObjectId(i), &file_attr()).unwrap();
        s.write(ObjectId(i), 0, Bytes::from(vec![1u8; 8192]))
            .unwrap();
    }
    // Listed in ascending ID order without sorting.
    let listed: Vec<u64> = s.objects().map(|r| r.unwrap().id.0).collect();
    let mut want = ids.clone();
    want.sort_unstable();
    assert_eq!(listed, want);
    let u = s.usage().unwrap();
    assert_eq!(u.objects, 200);
    assert!(u.bytes >= 200 * 8192, "{u:?}");
    for &i in &ids {
        s.delete(ObjectId(i)).unwrap();
    }
    assert_eq!(s.usage().unwrap(), base);
}

#[test]
fn batches_return_results_in_order_with_errors_in_place() {
    let (_d, s) = new_store();
    s.create_object(ObjectId(1), &file_attr()).unwrap();
    s.create_object(ObjectId(2), &file_attr()).unwrap();
    let w = s.write_batch(vec![
        WriteRequest {
            id: ObjectId(1),
            offset: 0,
            data: Bytes::from_static(b"one"),
        },
        WriteRequest {
            id: ObjectId(99),
            offset: 0,
            data: Bytes::from_static(b"x"),
        },
        WriteRequest {
            id: ObjectId(2),
            offset: 1,
            data: Bytes::from_static(b"two"),
        },
    ]);
    assert_eq!(w[0].as_ref().unwrap(), &3);
    assert!(matches!(w[1], Err(StoreError::NotFound(_))));
    assert_eq!(w[2].as_ref().unwrap(), &3);
    let r = s.read_batch(&[
        ReadRequest {
            id: ObjectId(2),
            offset: 0,
            len: 10,
        },
        ReadRequest {
            id: ObjectId(1),
            offset: u64::MAX,
            len: 10,
        },
        ReadRequest {
            id: ObjectId(1),
            offset: 0,
            len: 10,
        },
    ]);
    assert_eq!(&r[0].as_ref().unwrap()[..], b"\0two");
    assert!(matches!(r[1], Err(StoreError::InvalidArgument(_))));
    assert_eq!(&r[2].as_ref().unwrap()[..], b"one");
}

#[test]
fn create_existing_store_and_open_missing_store_fail() {
    let (d, s) = new_store();
    drop(s);
    assert!(matches!(
        ObjectStore::create(d.path(), opts()),
        Err(StoreError::StoreExists(_))
    ));
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        ObjectStore::open(empty.path(), opts()),
        Err(StoreError::NoStore(_))
    ));
    let s = ObjectStore::open_or_create(empty.path(), opts()).unwrap();
    drop(s);
    ObjectStore::open_or_create(empty.path(), opts()).unwrap();
}

#[test]
fn open_twice_second_is_locked() {
    let (d, _s) = new_store();
    assert!(matches!(
        ObjectStore::open(d.path(), opts()),
        Err(StoreError::Locked(_))
    ));
}

#[test]
fn reserve_ranges_never_overlap_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let a = {
        let s = ObjectStore::create(dir.path(), opts()).unwrap();
        s.reserve(10).unwrap()
    };
    let s = ObjectStore::open(dir.path(), opts()).unwrap();
    let b = s.reserve(5).unwrap();
    assert!(b.first.0 >= a.first.0 + a.count);
    // create beyond the mark raises it, so later reservations skip the used ID.
    s.create_object(ObjectId(5000), &file_attr()).unwrap();
    let c = s.reserve(1).unwrap();
    assert!(c.first.0 > 5000);
}

#[test]
fn recovery_removes_leftover_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let leaf_dir = {
        let s = ObjectStore::create(dir.path(), opts()).unwrap();
        s.create_object(ObjectId(1), &file_attr()).unwrap();
        let p = walk(dir.path())
            .into_iter()
            .find(|p| p.contains("/objects/"))
            .unwrap();
        std::path::PathBuf::from(p).parent().unwrap().to_path_buf()
    };
    std::fs::write(leaf_dir.join(".clone-2"), b"junk").unwrap();
    std::fs::write(dir.path().join("envoy-store.meta.tmp"), b"junk").unwrap();
    let s = ObjectStore::open(dir.path(), opts()).unwrap();
    assert!(!leaf_dir.join(".clone-2").exists());
    assert!(!dir.path().join("envoy-store.meta.tmp").exists());
    assert_eq!(s.objects().count(), 1);
}

/// An engine whose fsync always fails, to check poisoning.
#[derive(Debug)]
struct FailingFsync;

impl IoEngine for FailingFsync {
    fn name(&self) -> &'static str {
        "failing-fsync"
    }
    fn run(&self, ops: Vec<IoOp>) -> Vec<io::Result<IoOutcome>> {
        ops.into_iter()
            .map(|op| match op {
                IoOp::Fsync { .. } => Err(io::Error::from_raw_os_error(libc::EIO)),
                other => SyncEngine.run_one(other),
            })
            .collect()
    }
}

#[test]
fn fsync_failure_poisons_store_until_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let o = StoreOptions {
        engine: EngineChoice::Custom(Arc::new(FailingFsync)),
        ..opts()
    };
    {
        let s = ObjectStore::create(dir.path(), o.clone()).unwrap();
        s.create_object(ObjectId(1), &file_attr()).unwrap();
        assert!(s.sync(ObjectId(1)).is_err());
        assert!(s.is_poisoned());
        let e = s
            .write(ObjectId(1), 0, Bytes::from_static(b"x"))
            .unwrap_err();
        assert!(matches!(e, StoreError::Poisoned));
        assert_eq!(e.errno(), libc::EROFS);
        assert!(matches!(
            s.create_object(ObjectId(2), &file_attr()),
            Err(StoreError::Poisoned)
        ));
        assert!(s.read(ObjectId(1), 0, 1).is_ok(), "reads still work");
    }
    let s = ObjectStore::open(dir.path(), opts()).unwrap();
    assert!(s.write(ObjectId(1), 0, Bytes::from_static(b"x")).is_ok());
}

#[test]
fn concurrent_creates_and_writes_all_land() {
    let (_d, s) = new_store();
    let s = Arc::new(s);
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for i in 0..50u64 {
                    let id = ObjectId(t * 1000 + i);
                    s.create_object(id, &file_attr()).unwrap();
                    s.write(id, 0, Bytes::from(id.0.to_le_bytes().to_vec()))
                        .unwrap();
                    s.wstat(
                        id,
                        &AttrChange {
                            uid: Some(t as u32),
                            ..Default::default()
                        },
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for t in 0..8u64 {
        for i in 0..50u64 {
            let id = ObjectId(t * 1000 + i);
            assert_eq!(s.stat(id).unwrap().attr.uid, t as u32);
            assert_eq!(&s.read(id, 0, 8).unwrap()[..], &id.0.to_le_bytes());
        }
    }
    assert_eq!(s.objects().count(), 400);
}

#[test]
fn default_engine_opens_and_reports_name() {
    let dir = tempfile::tempdir().unwrap();
    let s = ObjectStore::create(dir.path(), StoreOptions::default()).unwrap();
    assert!(["io_uring", "sync"].contains(&s.engine_name()));
    s.create_object(ObjectId(1), &file_attr()).unwrap();
    s.write(ObjectId(1), 0, Bytes::from_static(b"abc")).unwrap();
    assert_eq!(&s.read(ObjectId(1), 0, 3).unwrap()[..], b"abc");
}

#[test]
fn small_caches_still_correct() {
    let dir = tempfile::tempdir().unwrap();
    let s = ObjectStore::create(
        dir.path(),
        StoreOptions {
            fd_cache: 1,
            dir_cache: 1,
            ..opts()
        },
    )
    .unwrap();
    for i in 0..100u64 {
        s.create_object(ObjectId(i * 977), &file_attr()).unwrap();
        s.write(ObjectId(i * 977), 0, Bytes::from(vec![i as u8; 3]))
            .unwrap();
    }
    for i in 0..100u64 {
        assert_eq!(&s.read(ObjectId(i * 977), 0, 3).unwrap()[..], &[i as u8; 3]);
        assert_eq!(s.stat(ObjectId(i * 977)).unwrap().size, 3);
    }
}

#[test]
fn racing_metadata_operations_leave_consistent_store() {
    let dir = tempfile::tempdir().unwrap();
    let o = StoreOptions {
        fd_cache: 4,
        dir_cache: 2,
        ..opts()
    };
    let s = Arc::new(ObjectStore::create(dir.path(), o.clone()).unwrap());
    // Eight IDs in one leaf directory and eight in another, hammered by eight threads.
    let ids: Vec<ObjectId> = (0..8).chain(64..72).map(ObjectId).collect();
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let s = Arc::clone(&s);
            let ids = ids.clone();
            std::thread::spawn(move || {
                let mut x = t.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                for _ in 0..400 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let id = ids[(x % ids.len() as u64) as usize];
                    let other = ids[((x >> 8) % ids.len() as u64) as usize];
                    // Errors (NotFound, AlreadyExists) are expected; panics and corruption are not.
                    let _ = match (x >> 20) % 6 {
                        0 => s.create_object(id, &file_attr()).map(|_| ()),
                        1 => s.delete(id),
                        2 => s
                            .wstat(
                                id,
                                &AttrChange {
                                    uid: Some(t as u32),
                                    ..Default::default()
                                },
                            )
                            .map(|_| ()),
                        3 => s.clone_object(id, other).map(|_| ()),
                        4 => s
                            .write(id, x % 100, Bytes::from(vec![t as u8; 10]))
                            .map(|_| ()),
                        _ => s.stat(id).map(|_| ()),
                    };
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // What the running store (with its caches) believes equals what is on disk.
    let seen: Vec<_> = ids
        .iter()
        .map(|&id| s.stat(id).ok().map(|st| (st.attr, st.size)))
        .collect();
    drop(s);
    assert!(envoy_storage::check::check(dir.path()).is_clean());
    let fresh = ObjectStore::open(dir.path(), o).unwrap();
    let disk: Vec<_> = ids
        .iter()
        .map(|&id| fresh.stat(id).ok().map(|st| (st.attr, st.size)))
        .collect();
    assert_eq!(seen, disk);
}

#[test]
fn attributes_match_stat_and_follow_wstat() {
    let (_d, s) = new_store();
    let id = s.reserve(1).unwrap().first;
    s.create_object(id, &file_attr()).unwrap();
    assert_eq!(s.attributes(id).unwrap(), s.stat(id).unwrap().attr);
    let mtime = Timestamp { secs: 30, nanos: 3 };
    s.wstat(
        id,
        &AttrChange {
            mtime: Some(mtime),
            ..AttrChange::default()
        },
    )
    .unwrap();
    assert_eq!(s.attributes(id).unwrap().mtime, mtime);
    assert_eq!(s.attributes(id).unwrap(), s.stat(id).unwrap().attr);
    s.delete(id).unwrap();
    assert!(matches!(s.attributes(id), Err(StoreError::NotFound(_))));
}
