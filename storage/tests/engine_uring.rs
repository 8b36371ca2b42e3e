//! Edge cases of the io_uring engine, each checked against the synchronous engine where the
//! two must agree.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::{File, OpenOptions};
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use envoy_storage::engine::uring::UringEngine;
use envoy_storage::engine::{IoEngine, IoOp, IoOutcome, SyncEngine};

/// The io_uring engine with every operation (even a lone one or a write) going through the
/// ring, or —
/// where the kernel or a seccomp filter forbids io_uring — `None` after checking that the
/// refusal is the documented, clear error.
fn uring(depth: u32) -> Option<UringEngine> {
    match UringEngine::new(depth) {
        Ok(engine) => Some(engine.with_inline_single(false).with_inline_writes(false)),
        Err(e) => {
            assert!(
                e.to_string().contains("io_uring unavailable"),
                "unexpected io_uring error: {e}"
            );
            eprintln!("io_uring not available here ({e}); exercising the fallback only");
            None
        }
    }
}

fn rw_file(dir: &tempfile::TempDir, name: &str, contents: &[u8]) -> Arc<File> {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    Arc::new(
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap(),
    )
}

fn read(file: &Arc<File>, offset: u64, len: usize) -> IoOp {
    IoOp::Read {
        file: Arc::clone(file),
        offset,
        len,
    }
}

fn write(file: &Arc<File>, offset: u64, data: &[u8]) -> IoOp {
    IoOp::Write {
        file: Arc::clone(file),
        offset,
        data: Bytes::copy_from_slice(data),
    }
}

fn read_bytes(result: &io::Result<IoOutcome>) -> &[u8] {
    match result {
        Ok(IoOutcome::Read(bytes)) => bytes,
        other => panic!("expected a read, got {other:?}"),
    }
}

#[test]
fn uring_new_zero_depth_is_invalid_input() {
    let err = UringEngine::new(0).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn uring_unavailable_or_working_engine_is_named() {
    // Either io_uring works and names itself, or the caller falls back to the sync engine.
    let engine: Box<dyn IoEngine> = match UringEngine::new(8) {
        Ok(e) => Box::new(e),
        Err(_) => Box::new(SyncEngine),
    };
    assert!(["io_uring", "sync"].contains(&engine.name()));
    let dir = tempfile::tempdir().unwrap();
    let file = rw_file(&dir, "f", b"abc");
    assert_eq!(read_bytes(&engine.run_one(read(&file, 0, 3))), b"abc");
}

#[test]
fn uring_read_past_eof_returns_short_then_empty() {
    let Some(engine) = uring(8) else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = rw_file(&dir, "f", b"0123456789");
    let results = engine.run(vec![
        read(&file, 6, 100),
        read(&file, 10, 5),
        read(&file, 1 << 40, 4096),
        read(&file, 0, 10),
    ]);
    assert_eq!(read_bytes(&results[0]), b"6789");
    assert_eq!(read_bytes(&results[1]), b"");
    assert_eq!(read_bytes(&results[2]), b"");
    assert_eq!(read_bytes(&results[3]), b"0123456789");
}

#[test]
fn uring_offset_overflow_is_invalid_input_like_sync() {
    let Some(engine) = uring(8) else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = rw_file(&dir, "f", b"data");
    let ops = vec![
        read(&file, u64::MAX, 2),
        read(&file, u64::MAX - 1, 4096),
        read(&file, i64::MAX as u64 + 1, 1),
        write(&file, u64::MAX, b"xy"),
        write(&file, u64::MAX - 1, b"xyz"),
        write(&file, i64::MAX as u64 + 7, b"x"),
    ];
    let uring_results = engine.run(ops.clone());
    let sync_results = SyncEngine.run(ops);
    for (u, s) in uring_results.iter().zip(&sync_results) {
        let (u, s) = (u.as_ref().unwrap_err(), s.as_ref().unwrap_err());
        assert_eq!(u.kind(), io::ErrorKind::InvalidInput, "uring: {u}");
        assert_eq!(u.kind(), s.kind(), "uring: {u}, sync: {s}");
    }
    // Nothing was written by the rejected writes.
    assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"data");
}

#[test]
fn uring_zero_length_ops_succeed_anywhere() {
    let Some(engine) = uring(8) else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = rw_file(&dir, "f", b"data");
    let results = engine.run(vec![
        read(&file, u64::MAX, 0),
        write(&file, i64::MAX as u64 + 1, b""),
        read(&file, 2, 0),
    ]);
    assert_eq!(read_bytes(&results[0]), b"");
    assert!(matches!(results[1], Ok(IoOutcome::Write(0))));
    assert_eq!(read_bytes(&results[2]), b"");
}

#[test]
fn uring_batch_larger_than_queue_depth_completes_every_op() {
    let Some(engine) = uring(4) else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = rw_file(&dir, "f", b"");
    let writes: Vec<IoOp> = (0..300u64)
        .map(|i| write(&file, i * 16, format!("record-{i:09}").as_bytes()))
        .collect();
    let results = engine.run(writes);
    assert_eq!(results.len(), 300);
    assert!(results
        .iter()
        .all(|r| matches!(r, Ok(IoOutcome::Write(16)))));

    let reads: Vec<IoOp> = (0..300u64).map(|i| read(&file, i * 16, 16)).collect();
    let results = engine.run(reads);
    for (i, result) in results.iter().enumerate() {
        assert_eq!(read_bytes(result), format!("record-{i:09}").as_bytes());
    }
}

#[test]
fn uring_large_transfer_round_trips() {
    let Some(engine) = uring(8) else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = rw_file(&dir, "f", b"");
    let data: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
    let written = engine.run_one(write(&file, 3, &data)).unwrap();
    assert_eq!(written, IoOutcome::Write(data.len()));
    let back = engine.run_one(read(&file, 3, data.len() + 100));
    assert_eq!(read_bytes(&back), &data[..]);
}

#[test]
fn uring_write_to_read_only_file_fails_like_sync() {
    let Some(engine) = uring(8) else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro");
    std::fs::write(&path, b"keep").unwrap();
    let file = Arc::new(File::open(&path).unwrap());
    let op = write(&file, 0, b"nope");
    let u = engine.run_one(op.clone()).unwrap_err();
    let s = SyncEngine.run_one(op).unwrap_err();
    assert_eq!(u.kind(), s.kind());
    assert_eq!(u.raw_os_error(), Some(libc::EBADF));
    assert_eq!(std::fs::read(&path).unwrap(), b"keep");
}

#[test]
fn uring_read_from_write_only_file_fails_like_sync() {
    let Some(engine) = uring(8) else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wo");
    std::fs::write(&path, b"secret").unwrap();
    let file = Arc::new(OpenOptions::new().write(true).open(&path).unwrap());
    let op = read(&file, 0, 6);
    let u = engine.run_one(op.clone()).unwrap_err();
    let s = SyncEngine.run_one(op).unwrap_err();
    assert_eq!(u.kind(), s.kind());
    assert_eq!(u.raw_os_error(), s.raw_os_error());
}

#[test]
fn uring_errors_stay_with_their_op_in_a_mixed_batch() {
    let Some(engine) = uring(8) else { return };
    let dir = tempfile::tempdir().unwrap();
    let good = rw_file(&dir, "good", b"hello");
    let ro_path = dir.path().join("ro");
    std::fs::write(&ro_path, b"x").unwrap();
    let ro = Arc::new(File::open(&ro_path).unwrap());
    let results = engine.run(vec![
        read(&good, 0, 5),
        write(&ro, 0, b"y"),
        write(&good, 5, b" world"),
        read(&good, u64::MAX, 1),
    ]);
    assert_eq!(read_bytes(&results[0]), b"hello");
    assert_eq!(
        results[1].as_ref().unwrap_err().raw_os_error(),
        Some(libc::EBADF)
    );
    assert!(matches!(results[2], Ok(IoOutcome::Write(6))));
    assert_eq!(
        results[3].as_ref().unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        std::fs::read(dir.path().join("good")).unwrap(),
        b"hello world"
    );
}

#[test]
fn uring_fsync_and_datasync_complete() {
    let Some(engine) = uring(8) else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = rw_file(&dir, "f", b"");
    let results = engine.run(vec![
        write(&file, 0, b"durable"),
        IoOp::Fsync {
            file: Arc::clone(&file),
            datasync: true,
        },
        IoOp::Fsync {
            file: Arc::clone(&file),
            datasync: false,
        },
    ]);
    assert!(matches!(results[0], Ok(IoOutcome::Write(7))));
    assert!(matches!(results[1], Ok(IoOutcome::Fsync)));
    assert!(matches!(results[2], Ok(IoOutcome::Fsync)));
}

#[test]
fn uring_concurrent_threads_each_use_their_own_ring() {
    let Some(engine) = uring(16) else { return };
    let engine = Arc::new(engine);
    let dir = tempfile::tempdir().unwrap();
    let file = rw_file(&dir, "f", b"");
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let engine = Arc::clone(&engine);
            let file = Arc::clone(&file);
            std::thread::spawn(move || {
                for round in 0..50u64 {
                    let base = (t * 50 + round) * 64 * 8;
                    let ops = (0..64u64)
                        .map(|i| write(&file, base + i * 8, &(base + i * 8).to_le_bytes()))
                        .collect();
                    assert!(engine.run(ops).iter().all(|r| r.is_ok()));
                    let ops = (0..64u64).map(|i| read(&file, base + i * 8, 8)).collect();
                    for (i, r) in engine.run(ops).iter().enumerate() {
                        assert_eq!(read_bytes(r), (base + i as u64 * 8).to_le_bytes());
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let all = std::fs::read(dir.path().join("f")).unwrap();
    assert_eq!(all.len(), 4 * 50 * 64 * 8);
    for (i, chunk) in all.chunks(8).enumerate() {
        assert_eq!(chunk, (i as u64 * 8).to_le_bytes());
    }
}

#[test]
fn uring_default_lone_ops_inline_and_match_ring_results() {
    let Some(ring_only) = uring(8) else { return };
    let hybrid = UringEngine::new(8).unwrap();
    assert!(hybrid.inline_single());
    assert!(!ring_only.inline_single());
    let dir = tempfile::tempdir().unwrap();
    let a = rw_file(&dir, "a", b"");
    let b = rw_file(&dir, "b", b"");
    let ro_path = dir.path().join("ro");
    std::fs::write(&ro_path, b"x").unwrap();
    let ro = Arc::new(File::open(&ro_path).unwrap());
    let script = |f: &Arc<File>| {
        vec![
            write(f, 0, b"lone write"),
            read(f, 5, 100),
            read(f, u64::MAX, 1),
            write(&ro, 0, b"y"),
            IoOp::Fsync {
                file: Arc::clone(f),
                datasync: true,
            },
        ]
    };
    for (op_a, op_b) in script(&a).into_iter().zip(script(&b)) {
        let h = hybrid.run_one(op_a).map_err(|e| e.kind());
        let r = ring_only.run_one(op_b).map_err(|e| e.kind());
        assert_eq!(h, r);
    }
    // A one-element `run` takes the same path as `run_one`.
    let h = hybrid.run(vec![read(&a, 0, 4)]);
    assert_eq!(read_bytes(&h[0]), b"lone");
    assert_eq!(
        std::fs::read(dir.path().join("a")).unwrap(),
        std::fs::read(dir.path().join("b")).unwrap()
    );
}

#[test]
fn uring_default_batched_writes_inline_match_ring_writes() {
    let Some(ring_only) = uring(8) else { return };
    let hybrid = UringEngine::new(8).unwrap();
    assert!(hybrid.inline_writes());
    let dir = tempfile::tempdir().unwrap();
    let a = rw_file(&dir, "a", b"old contents here");
    let b = rw_file(&dir, "b", b"old contents here");
    let ro_path = dir.path().join("ro");
    std::fs::write(&ro_path, b"x").unwrap();
    let ro = Arc::new(File::open(&ro_path).unwrap());
    let batch = |f: &Arc<File>| {
        vec![
            write(f, 0, b"NEW"),
            read(f, 4, 8),
            write(&ro, 0, b"denied"),
            write(f, 20, b"tail"),
            write(f, u64::MAX, b"overflow"),
        ]
    };
    let h: Vec<_> = hybrid
        .run(batch(&a))
        .into_iter()
        .map(|r| r.map_err(|e| e.kind()))
        .collect();
    let r: Vec<_> = ring_only
        .run(batch(&b))
        .into_iter()
        .map(|r| r.map_err(|e| e.kind()))
        .collect();
    assert_eq!(h, r);
    assert!(matches!(h[0], Ok(IoOutcome::Write(3))));
    assert!(h[2].is_err());
    let contents = std::fs::read(dir.path().join("a")).unwrap();
    assert_eq!(contents, std::fs::read(dir.path().join("b")).unwrap());
    assert_eq!(&contents[..3], b"NEW");
    assert_eq!(&contents[20..], b"tail");
}

#[test]
fn uring_default_lone_reads_match_sync_engine() {
    let Ok(hybrid) = UringEngine::new(8) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..(1u32 << 20) + 3).map(|i| (i % 241) as u8).collect();
    let file = rw_file(&dir, "f", &data);
    let wo_path = dir.path().join("wo");
    std::fs::write(&wo_path, b"secret").unwrap();
    let wo = Arc::new(OpenOptions::new().write(true).open(&wo_path).unwrap());
    let cases = vec![
        read(&file, 0, data.len() + 4096),
        read(&file, 17, 4096),
        read(&file, data.len() as u64 - 2, 10),
        read(&file, 1 << 40, 10),
        read(&file, i64::MAX as u64 - 1, 4),
        read(&file, u64::MAX, 0),
        read(&wo, 0, 6),
    ];
    for op in cases {
        let h = hybrid.run_one(op.clone());
        let s = SyncEngine.run_one(op);
        match (&h, &s) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => assert_eq!(a.kind(), b.kind(), "{a} vs {b}"),
            _ => panic!("results differ: {h:?} vs {s:?}"),
        }
    }
}
