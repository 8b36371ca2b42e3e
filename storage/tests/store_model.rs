//! Model-based test of the object store with injected crashes.
//!
//! Random sequences of reserve/create/write/read/stat/wstat/clone/delete run against the store
//! and an in-memory `BTreeMap` model. Before each operation the store directory is
//! snapshotted; then for k = 0, 1, 2, … the operation is replayed on a fresh copy of the
//! snapshot with a crash injected at its k-th crash point, the store is dropped and reopened
//! (running recovery), and its whole content must equal the model before the operation or after
//! it (for a wstat that changes the size: also the new size with the old attributes, since the
//! size is changed first). The first k at which no crash fires is the normal run: its result
//! must match the model, and the sequence continues from it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use envoy_storage::{
    AttrChange, Attributes, CrashInjector, EngineChoice, ObjectId, ObjectKind, ObjectStore,
    StoreError, StoreOptions, Timestamp,
};
use proptest::prelude::*;

/// IDs spread over several leaf directories (and beyond the first reserve mark).
const IDS: [u64; 8] = [1, 2, 31, 32, 100, 4095, 70_000, 1 << 30];

type Model = BTreeMap<u64, (Attributes, Vec<u8>)>;

#[derive(Debug, Clone)]
enum Op {
    Reserve(u64),
    Create(usize, Attributes),
    Write(usize, u64, Vec<u8>),
    Read(usize, u64, usize),
    Stat(usize),
    Wstat(usize, AttrChange),
    Clone(usize, usize),
    Delete(usize),
}

fn ts() -> impl Strategy<Value = Timestamp> {
    (0u64..1 << 33, 0u32..1_000_000_000).prop_map(|(secs, nanos)| Timestamp { secs, nanos })
}

fn attrs() -> impl Strategy<Value = Attributes> {
    (
        0usize..7,
        0u32..=0o7777,
        any::<u32>(),
        any::<u32>(),
        ts(),
        ts(),
    )
        .prop_map(|(k, mode, uid, gid, atime, mtime)| Attributes {
            // Directory objects start empty (a valid directory) and turn corrupt once random
            // data is written, so clone exercises both the dirfmt success and failure paths.
            kind: ObjectKind::ALL[k],
            mode,
            uid,
            gid,
            atime,
            mtime,
        })
}

fn change() -> impl Strategy<Value = AttrChange> {
    (
        proptest::option::of(0u32..=0o7777),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(ts()),
        proptest::option::of(ts()),
        proptest::option::of(0u64..20_000),
    )
        .prop_map(|(mode, uid, gid, atime, mtime, size)| AttrChange {
            mode,
            uid,
            gid,
            atime,
            mtime,
            size,
        })
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0usize..IDS.len();
    prop_oneof![
        1 => (1u64..100).prop_map(Op::Reserve),
        3 => (slot.clone(), attrs()).prop_map(|(s, a)| Op::Create(s, a)),
        3 => (slot.clone(), 0u64..10_000, proptest::collection::vec(any::<u8>(), 0..3000))
            .prop_map(|(s, o, d)| Op::Write(s, o, d)),
        1 => (slot.clone(), 0u64..12_000, 0usize..5000).prop_map(|(s, o, l)| Op::Read(s, o, l)),
        1 => slot.clone().prop_map(Op::Stat),
        2 => (slot.clone(), change()).prop_map(|(s, c)| Op::Wstat(s, c)),
        2 => (slot.clone(), slot.clone()).prop_map(|(a, b)| Op::Clone(a, b)),
        1 => slot.prop_map(Op::Delete),
    ]
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

fn contents(s: &ObjectStore) -> Model {
    let mut m = Model::new();
    for st in s.objects() {
        let st = st.unwrap();
        let data = s.read(st.id, 0, st.size as usize).unwrap().to_vec();
        assert_eq!(data.len() as u64, st.size);
        m.insert(st.id.0, (st.attr, data));
    }
    m
}

/// The model after `op` and, for a wstat with a size change, the allowed intermediate state.
fn apply(model: &Model, op: &Op) -> (Model, Option<Model>) {
    let mut m = model.clone();
    let mut mid = None;
    match op {
        Op::Reserve(_) | Op::Read(..) | Op::Stat(_) => {}
        Op::Create(s, a) => {
            m.entry(IDS[*s]).or_insert((*a, Vec::new()));
        }
        Op::Write(s, off, d) => {
            // A write of zero bytes changes nothing, not even the size.
            if let Some((_, data)) = m.get_mut(&IDS[*s]).filter(|_| !d.is_empty()) {
                let end = *off as usize + d.len();
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[*off as usize..end].copy_from_slice(d);
            }
        }
        Op::Wstat(s, c) => {
            if let Some((a, data)) = m.get_mut(&IDS[*s]) {
                if let Some(size) = c.size {
                    data.resize(size as usize, 0);
                    let mut half = model.clone();
                    half.insert(IDS[*s], (*a, data.clone()));
                    mid = Some(half);
                }
                *a = c.apply(a);
            }
        }
        Op::Clone(a, b) => {
            if a != b && !m.contains_key(&IDS[*b]) {
                if let Some(src) = m.get(&IDS[*a]).cloned() {
                    // Only regular data is copied verbatim; directories must parse (checked by
                    // the caller, which never creates valid directory content).
                    if src.0.kind != ObjectKind::Directory || src.1.is_empty() {
                        m.insert(IDS[*b], src);
                    }
                }
            }
        }
        Op::Delete(s) => {
            m.remove(&IDS[*s]);
        }
    }
    (m, mid)
}

/// Runs `op` on the store; checks its visible result against the model.
fn run(s: &ObjectStore, op: &Op, model: &Model, floor: &mut u64) -> Result<(), StoreError> {
    match op {
        Op::Reserve(n) => {
            let r = s.reserve(*n)?;
            assert!(r.first.0 >= *floor, "reserve {r:?} below floor {floor}");
            assert_eq!(r.count, *n);
            *floor = r.first.0 + n;
        }
        Op::Create(slot, a) => {
            let id = IDS[*slot];
            match s.create_object(ObjectId(id), a) {
                Ok(st) => {
                    assert!(!model.contains_key(&id));
                    assert_eq!((st.attr, st.size), (*a, 0));
                    *floor = (*floor).max(id + 1);
                }
                Err(StoreError::AlreadyExists(_)) => assert!(model.contains_key(&id)),
                Err(e) => return Err(e),
            }
        }
        Op::Write(slot, off, d) => {
            let id = IDS[*slot];
            match s.write(ObjectId(id), *off, Bytes::from(d.clone())) {
                Ok(n) => assert_eq!(n, d.len()),
                Err(StoreError::NotFound(_)) => assert!(!model.contains_key(&id)),
                Err(e) => return Err(e),
            }
        }
        Op::Read(slot, off, len) => {
            let id = IDS[*slot];
            match s.read(ObjectId(id), *off, *len) {
                Ok(b) => {
                    let data = &model[&id].1;
                    let start = (*off as usize).min(data.len());
                    let end = (start + len).min(data.len());
                    assert_eq!(&b[..], &data[start..end]);
                }
                Err(StoreError::NotFound(_)) => assert!(!model.contains_key(&id)),
                Err(e) => return Err(e),
            }
        }
        Op::Stat(slot) => {
            let id = IDS[*slot];
            match s.stat(ObjectId(id)) {
                Ok(st) => {
                    let (a, d) = &model[&id];
                    assert_eq!((st.attr, st.size), (*a, d.len() as u64));
                }
                Err(StoreError::NotFound(_)) => assert!(!model.contains_key(&id)),
                Err(e) => return Err(e),
            }
        }
        Op::Wstat(slot, c) => {
            let id = IDS[*slot];
            match s.wstat(ObjectId(id), c) {
                Ok(st) => assert_eq!(st.attr, c.apply(&model[&id].0)),
                Err(StoreError::NotFound(_)) => assert!(!model.contains_key(&id)),
                Err(e) => return Err(e),
            }
        }
        Op::Clone(a, b) => {
            let (src, dst) = (IDS[*a], IDS[*b]);
            match s.clone_object(ObjectId(src), ObjectId(dst)) {
                Ok(st) => {
                    assert_eq!(st.attr, model[&src].0);
                    *floor = (*floor).max(dst + 1);
                }
                Err(StoreError::NotFound(_)) => assert!(!model.contains_key(&src)),
                Err(StoreError::AlreadyExists(_)) => {
                    assert!(src == dst || model.contains_key(&dst))
                }
                Err(StoreError::CorruptDirectory { .. }) => {
                    assert_eq!(model[&src].0.kind, ObjectKind::Directory)
                }
                Err(e) => return Err(e),
            }
        }
        Op::Delete(slot) => {
            let id = IDS[*slot];
            match s.delete(ObjectId(id)) {
                Ok(()) => assert!(model.contains_key(&id)),
                Err(StoreError::NotFound(_)) => assert!(!model.contains_key(&id)),
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

fn options(engine: &EngineChoice) -> StoreOptions {
    StoreOptions {
        engine: engine.clone(),
        // Tiny caches so evictions happen during the test.
        fd_cache: 2,
        dir_cache: 2,
        id_bits: 32,
    }
}

/// Runs a whole sequence with crashes at every point of every operation; returns how many
/// crashes were injected.
fn check_sequence(engine: EngineChoice, ops: &[Op]) -> u64 {
    let base = tempfile::tempdir().unwrap();
    let mut run_no = 0u64;
    let mut fresh = || {
        run_no += 1;
        base.path().join(format!("run-{run_no}"))
    };
    let mut cur: PathBuf = fresh();
    drop(ObjectStore::create(&cur, options(&engine)).unwrap());
    let mut model = Model::new();
    let mut floor = 1u64;
    let mut crashes = 0;
    for op in ops {
        let (after, mid) = apply(&model, op);
        let mut k = 0u64;
        loop {
            let dir = fresh();
            copy_dir(&cur, &dir);
            let inj = Arc::new(CrashInjector::new());
            let s = ObjectStore::open(&dir, options(&engine))
                .unwrap()
                .with_crash_injector(Arc::clone(&inj));
            inj.arm(k);
            let mut f = floor;
            match run(&s, op, &model, &mut f) {
                Err(StoreError::InjectedCrash(label)) => {
                    crashes += 1;
                    drop(s);
                    let s = ObjectStore::open(&dir, options(&engine)).unwrap();
                    let got = contents(&s);
                    let ok = got == model || got == after || mid.as_ref() == Some(&got);
                    assert!(ok, "after crash at {label} (k={k}) during {op:?}: {got:?}");
                    assert!(s.reserve_mark() >= floor);
                    drop(s);
                    std::fs::remove_dir_all(&dir).unwrap();
                    k += 1;
                }
                Err(e) => panic!("{op:?} failed: {e}"),
                Ok(()) => {
                    inj.disarm();
                    assert_eq!(contents(&s), after, "after {op:?}");
                    drop(s);
                    // The normal run must also survive a reopen unchanged.
                    let s = ObjectStore::open(&dir, options(&engine)).unwrap();
                    assert_eq!(contents(&s), after, "after reopen following {op:?}");
                    assert!(s.reserve_mark() >= f);
                    drop(s);
                    std::fs::remove_dir_all(&cur).unwrap();
                    cur = dir;
                    floor = f;
                    break;
                }
            }
        }
        model = after;
    }
    crashes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model_with_crashes_sync_engine(ops in proptest::collection::vec(op(), 1..14)) {
        check_sequence(EngineChoice::Sync, &ops);
    }

    #[test]
    fn store_matches_model_with_crashes_default_engine(ops in proptest::collection::vec(op(), 1..10)) {
        check_sequence(EngineChoice::Uring, &ops);
    }
}

#[test]
fn fixed_sequence_every_operation_crashes_at_every_point() {
    let a = Attributes {
        kind: ObjectKind::Regular,
        mode: 0o600,
        uid: 1,
        gid: 2,
        atime: Timestamp { secs: 3, nanos: 4 },
        mtime: Timestamp { secs: 5, nanos: 6 },
    };
    let ops = vec![
        Op::Reserve(10),
        Op::Create(0, a),
        Op::Write(0, 10, b"hello world".to_vec()),
        Op::Write(0, 9000, Vec::new()),
        Op::Wstat(
            0,
            AttrChange {
                mode: Some(0o640),
                size: Some(5000),
                ..Default::default()
            },
        ),
        Op::Clone(0, 7),
        Op::Create(
            5,
            Attributes {
                kind: ObjectKind::Directory,
                ..a
            },
        ),
        Op::Clone(5, 6),
        Op::Delete(0),
        Op::Read(7, 0, 100),
        Op::Stat(7),
    ];
    let crashes = check_sequence(EngineChoice::Sync, &ops);
    // reserve 3 + create (mark raise 3 + 3) + write 2 + wstat 3 + clone (3 + 6) + create 6
    // + clone 6 + delete 2: every step of every operation was crashed once.
    eprintln!("{crashes} crashes injected");
    assert!(crashes >= 30, "only {crashes} crash points exercised");
}
