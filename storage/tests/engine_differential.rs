//! Differential property test: the io_uring engine against the synchronous engine.
//!
//! Random sequences of batches run on two identical files, one per engine; every result
//! (bytes read, bytes written, error kinds) and the final file contents must match. Batches
//! hold operations whose order cannot matter (the engine contract lets a batch run in any
//! order): either reads (plus fsyncs), or writes to non-overlapping ranges (plus fsyncs).
//! The io_uring engine runs with each `RWF_NOWAIT` fast-path policy, with every ring
//! setup, and with its file's page cache either left warm or dropped before every batch, so
//! both the inline and the ring path (and reads split between them) are compared.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use bytes::Bytes;
use envoy_storage::engine::uring::{FastPath, RingSetup, UringEngine};
use envoy_storage::engine::{IoEngine, IoOp, IoOutcome, SyncEngine};
use proptest::prelude::*;

/// One operation, independent of the file it will run on.
#[derive(Debug, Clone)]
enum Op {
    Read { offset: u64, len: usize },
    Write { offset: u64, len: usize, fill: u8 },
    Fsync { datasync: bool },
}

/// Offsets: mostly inside or just past a small file, sometimes far past it or at the edges
/// of the 64-bit range.
fn read_offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => 0u64..200_000,
        1 => (1u64 << 40)..(1u64 << 40) + 10,
        1 => (i64::MAX as u64 - 100)..=(i64::MAX as u64 + 100),
        1 => (u64::MAX - 100)..=u64::MAX,
    ]
}

/// Write offsets stay below 1 MiB when valid (so the files stay small) but include the
/// overflowing and negative-as-`off_t` ones.
fn write_offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => 0u64..(1 << 20),
        1 => (i64::MAX as u64 - 10)..=(i64::MAX as u64 + 10),
        1 => (u64::MAX - 100)..=u64::MAX,
    ]
}

fn length() -> impl Strategy<Value = usize> {
    prop_oneof![
        2 => Just(0usize),
        6 => 1usize..5000,
        2 => 5000usize..140_000,
        1 => Just(1usize << 20),
    ]
}

fn read_batch() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            9 => (read_offset(), length()).prop_map(|(offset, len)| Op::Read { offset, len }),
            1 => any::<bool>().prop_map(|datasync| Op::Fsync { datasync }),
        ],
        1..40,
    )
}

fn write_batch() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            9 => (write_offset(), length(), any::<u8>())
                .prop_map(|(offset, len, fill)| Op::Write { offset, len, fill }),
            1 => any::<bool>().prop_map(|datasync| Op::Fsync { datasync }),
        ],
        1..40,
    )
    .prop_map(drop_overlapping_writes)
}

/// Keeps only writes whose (valid) ranges do not overlap an earlier write in the batch, so
/// the batch's result cannot depend on execution order.
fn drop_overlapping_writes(ops: Vec<Op>) -> Vec<Op> {
    let mut taken: Vec<(u64, u64)> = Vec::new();
    ops.into_iter()
        .filter(|op| match *op {
            Op::Write { offset, len, .. } => {
                let Some(end) = offset.checked_add(len as u64) else {
                    return true; // rejected before any I/O
                };
                if taken.iter().any(|&(a, b)| offset < b && a < end) {
                    return false;
                }
                taken.push((offset, end));
                true
            }
            _ => true,
        })
        .collect()
}

fn batches() -> impl Strategy<Value = Vec<Vec<Op>>> {
    prop::collection::vec(prop_oneof![read_batch(), write_batch()], 1..6)
}

fn to_io(op: &Op, file: &Arc<File>) -> IoOp {
    let file = Arc::clone(file);
    match *op {
        Op::Read { offset, len } => IoOp::Read { file, offset, len },
        Op::Write { offset, len, fill } => IoOp::Write {
            file,
            offset,
            data: Bytes::from(
                (0..len)
                    .map(|i| fill.wrapping_add((i % 253) as u8))
                    .collect::<Vec<u8>>(),
            ),
        },
        Op::Fsync { datasync } => IoOp::Fsync { file, datasync },
    }
}

/// A comparable summary of one result.
fn summary(result: io::Result<IoOutcome>) -> Result<IoOutcome, io::ErrorKind> {
    result.map_err(|e| e.kind())
}

fn open_rw(path: &std::path::Path, contents: &[u8]) -> Arc<File> {
    std::fs::write(path, contents).unwrap();
    Arc::new(
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap(),
    )
}

/// Writes the file's dirty pages back and drops its page cache (`POSIX_FADV_DONTNEED`).
fn drop_cache(file: &File) {
    file.sync_data().unwrap();
    // SAFETY: `posix_fadvise` only reads its integer arguments; `file` keeps the descriptor
    // open for the call.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn uring_random_batches_match_sync_engine(
        initial_len in 0usize..100_000,
        depth in prop_oneof![Just(4u32), Just(8), Just(64)],
        fast_path in prop_oneof![
            Just(FastPath::Off),
            Just(FastPath::LoneOps),
            Just(FastPath::EveryOp),
        ],
        setup in prop_oneof![
            Just(RingSetup::Plain),
            Just(RingSetup::CoopTaskrun),
            Just(RingSetup::SingleIssuerDeferTaskrun),
        ],
        cold in any::<bool>(),
        batches in batches(),
    ) {
        let Ok(uring) = UringEngine::new(depth).map(|e| {
            e.with_fast_path(fast_path).with_ring_setup(setup)
        }) else {
            // No io_uring here: the fallback must still be usable, and is what callers get.
            prop_assert_eq!(SyncEngine.name(), "sync");
            return Ok(());
        };
        let dir = tempfile::tempdir().unwrap();
        let initial: Vec<u8> = (0..initial_len).map(|i| (i * 7 % 256) as u8).collect();
        let uring_path = dir.path().join("uring");
        let sync_path = dir.path().join("sync");
        let uring_file = open_rw(&uring_path, &initial);
        let sync_file = open_rw(&sync_path, &initial);

        for (round, batch) in batches.iter().enumerate() {
            if cold {
                // Drop the io_uring file's cached pages, so reads miss the page cache and
                // take the ring path (or, partly cached, both paths).
                drop_cache(&uring_file);
            }
            let u: Vec<_> = uring
                .run(batch.iter().map(|op| to_io(op, &uring_file)).collect())
                .into_iter()
                .map(summary)
                .collect();
            let s: Vec<_> = SyncEngine
                .run(batch.iter().map(|op| to_io(op, &sync_file)).collect())
                .into_iter()
                .map(summary)
                .collect();
            prop_assert_eq!(u.len(), batch.len());
            prop_assert_eq!(u, s, "batch {} differs: {:?}", round, batch);
        }
        let u = std::fs::read(&uring_path).unwrap();
        let s = std::fs::read(&sync_path).unwrap();
        prop_assert_eq!(u.len(), s.len());
        prop_assert!(u == s, "final contents differ");
    }
}
