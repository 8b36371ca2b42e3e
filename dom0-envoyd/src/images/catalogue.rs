//! Catalogues (§4.3.3): the sorted list of every object ID a tree references.
//!
//! A catalogue is built by brute force — walk the tree from its root object, collect every
//! entry's ID, sort, deduplicate — and stored as a plain object file of little-endian `u64`s
//! (8 bytes per object: 8 MB per million files, as the dissertation estimates). A snapshot
//! never changes, so its catalogue is computed once (when a neighbour is deleted) and kept in
//! the image's metadata (`.envoy/NAME@N@cat`) until the snapshot itself goes.
//!
//! Deleting snapshot N frees `cat(N) − cat(predecessor) − cat(successor)`: [`difference`]
//! is a single merge pass over sorted lists.

use std::collections::HashSet;

use envoy_storage::{ObjectId, ObjectKind};

use crate::error::{FsError, FsResult};
use crate::namespace::Fs;

/// Every object ID reachable from directory object `root` (including `root`), sorted and
/// without duplicates. The caller guarantees the tree does not change during the walk (a
/// snapshot, or a head whose gate it holds exclusively). `progress` is called with the number
/// of objects seen so far, every 4096 objects and once at the end.
pub fn walk(fs: &Fs, root: ObjectId, progress: &dyn Fn(u64)) -> FsResult<Vec<u64>> {
    let mut ids = vec![root.0];
    let mut seen_dirs: HashSet<ObjectId> = HashSet::from([root]);
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        let data = fs.dir_data_uncached(d)?;
        for e in data.entries() {
            ids.push(e.id.0);
            if ids.len() % 4096 == 0 {
                progress(ids.len() as u64);
            }
            if seen_dirs.contains(&e.id) {
                continue;
            }
            match fs.store().attributes(e.id) {
                Ok(attr) if attr.kind == ObjectKind::Directory => {
                    seen_dirs.insert(e.id);
                    stack.push(e.id);
                }
                Ok(_) => {}
                // A dangling link (left by a power failure) references nothing.
                Err(err) if err.is_not_found() => {
                    tracing::warn!(dir = %d, id = %e.id, "catalogue: dangling link");
                }
                Err(err) => return Err(err.into()),
            }
        }
    }
    progress(ids.len() as u64);
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Encodes a sorted catalogue as little-endian u64s.
pub fn encode(ids: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ids.len() * 8);
    for id in ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

/// Decodes a stored catalogue, checking that it is a whole number of entries and strictly
/// ascending (a damaged catalogue must never be used to free objects).
pub fn decode(bytes: &[u8]) -> FsResult<Vec<u64>> {
    if bytes.len() % 8 != 0 {
        return Err(FsError::Inval("catalogue length is not a multiple of 8"));
    }
    let ids: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            u64::from_le_bytes(b)
        })
        .collect();
    if ids.windows(2).any(|w| w[0] >= w[1]) {
        return Err(FsError::Inval("catalogue is not strictly ascending"));
    }
    Ok(ids)
}

/// `a − b − c` for sorted, deduplicated lists (one merge pass).
pub fn difference(a: &[u64], b: &[u64], c: &[u64]) -> Vec<u64> {
    let (mut i, mut j) = (0usize, 0usize);
    let mut out = Vec::new();
    for &x in a {
        while i < b.len() && b[i] < x {
            i += 1;
        }
        while j < c.len() && c[j] < x {
            j += 1;
        }
        let in_b = b.get(i) == Some(&x);
        let in_c = c.get(j) == Some(&x);
        if !in_b && !in_c {
            out.push(x);
        }
    }
    out
}

/// Union of sorted, deduplicated lists.
pub fn union(lists: &[Vec<u64>]) -> Vec<u64> {
    let mut all: Vec<u64> = lists.iter().flatten().copied().collect();
    all.sort_unstable();
    all.dedup();
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn catalogue_decode_rejects_unsorted_and_ragged() {
        assert!(decode(&encode(&[1, 2, 3])).is_ok());
        assert!(decode(&encode(&[1, 3, 2])).is_err());
        assert!(decode(&encode(&[2, 2])).is_err());
        assert!(decode(&[0u8; 7]).is_err());
    }

    proptest! {
        #[test]
        fn difference_matches_set_model(
            a in proptest::collection::btree_set(0u64..200, 0..60),
            b in proptest::collection::btree_set(0u64..200, 0..60),
            c in proptest::collection::btree_set(0u64..200, 0..60),
        ) {
            let (va, vb, vc): (Vec<u64>, Vec<u64>, Vec<u64>) = (
                a.iter().copied().collect(),
                b.iter().copied().collect(),
                c.iter().copied().collect(),
            );
            let want: Vec<u64> = a
                .iter()
                .copied()
                .filter(|x| !b.contains(x) && !c.contains(x))
                .collect();
            prop_assert_eq!(difference(&va, &vb, &vc), want);
            prop_assert_eq!(decode(&encode(&va)).unwrap(), va);
        }
    }
}
