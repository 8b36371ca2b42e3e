//! The start-up scan: repairs what a crash between the steps of a multi-object update can
//! leave behind (see the durability table in [`super`]).
//!
//! 1. Walk the tree from [`super::ROOT_ID`], recording every link.
//! 2. An object named by more than one link where any link is writable (a crash inside a
//!    cross-block rename) gets the copy-on-write flag on all its links: both names keep the
//!    data, and the invariant "one name or read-only" holds again. A link below a
//!    copy-on-write link counts as read-only (it is in a snapshot or shared with one), and is
//!    never rewritten: frozen directory objects do not change.
//! 3. Every object no link reaches (created but never linked, unlinked while open, replaced
//!    by a rename, a thaw's copy never linked, the old object of a diverged hard link) is
//!    deleted. If any directory fails to parse, this step is skipped: its children would look
//!    unreferenced.

use std::collections::{HashMap, HashSet};

use envoy_storage::{ObjectId, ObjectKind};

use super::{Fs, ROOT_ID};
use crate::error::FsResult;

/// What the scan found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Directories walked.
    pub directories: u64,
    /// Links seen.
    pub links: u64,
    /// Links frozen because their object had several names.
    pub frozen: u64,
    /// Unreferenced objects deleted.
    pub collected: u64,
    /// Directories that failed to parse (collection skipped when non-zero).
    pub corrupt: u64,
}

/// Runs the scan (before any client is served).
pub fn scan(fs: &Fs) -> FsResult<ScanReport> {
    let store = fs.store();
    let mut report = ScanReport::default();
    let mut links: HashMap<ObjectId, Vec<(ObjectId, Vec<u8>, bool)>> = HashMap::new();
    let mut seen_dirs: HashSet<ObjectId> = HashSet::new();
    // Each directory with whether it is reached through a copy-on-write link: everything
    // below such a link is read-only (a snapshot, or shared with one), whatever its own flags.
    let mut stack = vec![(ROOT_ID, false)];
    seen_dirs.insert(ROOT_ID);
    while let Some((d, frozen)) = stack.pop() {
        report.directories += 1;
        // Uncached: the scan reads every directory of every image once; filling the cache
        // with them would only evict (and make the first reader after a start look warm).
        let data = match fs.dir_data_uncached(d) {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(dir = %d, error = %e, "start-up scan: directory unreadable");
                report.corrupt += 1;
                continue;
            }
        };
        for e in data.entries() {
            report.links += 1;
            let cow = e.cow || frozen;
            links
                .entry(e.id)
                .or_default()
                .push((d, e.name.clone(), cow));
            if seen_dirs.contains(&e.id) {
                continue;
            }
            match store.attributes(e.id) {
                Ok(attr) if attr.kind == ObjectKind::Directory => {
                    seen_dirs.insert(e.id);
                    stack.push((e.id, cow));
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(dir = %d, id = %e.id, error = %err, "start-up scan: dangling link");
                }
            }
        }
    }
    for (id, ls) in &links {
        if ls.len() < 2 || ls.iter().all(|l| l.2) {
            continue;
        }
        for (dir, name, cow) in ls {
            if *cow {
                continue;
            }
            let mut data = (*fs.dir_data(*dir)?).clone();
            if let Some(b) = data.set(name, *id, true) {
                fs.commit_dir(*dir, data, &[b])?;
                report.frozen += 1;
            }
        }
        tracing::warn!(%id, names = ls.len(), "start-up scan: object had several writable names; froze them");
    }
    if report.corrupt == 0 {
        let mut doomed = Vec::new();
        for st in store.objects() {
            match st {
                Ok(st) if st.id != ROOT_ID && !links.contains_key(&st.id) => doomed.push(st.id),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "start-up scan: unreadable object entry"),
            }
        }
        for id in doomed {
            match store.delete(id) {
                Ok(()) => report.collected += 1,
                Err(e) => tracing::warn!(%id, error = %e, "start-up scan: delete failed"),
            }
        }
    }
    if report.collected > 0 || report.frozen > 0 {
        tracing::info!(?report, "start-up scan repaired the namespace");
    } else {
        tracing::debug!(?report, "start-up scan clean");
    }
    Ok(report)
}
