//! Spare files: empty files created ahead of time, so that creating or cloning an object
//! costs a rename instead of a file creation.
//!
//! # Why
//!
//! On the ext4 stores we measured, `open(O_CREAT)` of a new file costs several times a
//! `rename` (inode allocation and initialisation). An image fork creates two files (the new
//! image's metadata and the clone of the snapshot's root), and those creations were most of
//! its latency. With spares enabled ([`ObjectStore::keep_spare_files`]), a background thread
//! keeps up to `target` empty files `objects/.spare-<n>` ready (refilling once half are gone,
//! and only once no spare has been taken for a moment, so it does not hold the directory
//! lock during a burst);
//! `create_object` renames one
//! to the object's final leaf name, and `clone_object` fills one (in place of its
//! `.clone-<dst>` temporary) and renames it. When none is ready the old path runs, so spares
//! only ever save time.
//!
//! # Crash safety
//!
//! A spare is a temporary file (`.`-prefixed), so the recovery at open removes every spare
//! left by a crash, filled or not, like a clone's temporary. Each operation keeps its
//! one-step commit: create is one `renameat2(RENAME_NOREPLACE)` of an empty file to the
//! final name (the object appears complete or not at all, and an existing object is never
//! replaced); clone fills and (when synced) fsyncs the spare before the rename, exactly as
//! it did its temporary. The rename moves the file into the leaf directory, and
//! [`ObjectStore::sync`] fsyncs that directory, so durability is unchanged. After a power
//! failure a name may survive in both places; the recovery only ever unlinks the `.spare`
//! name, never truncates, so the object keeps its data. Spares left at a clean shutdown are
//! removed when the store is dropped.

use std::collections::VecDeque;
use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Prefix of a spare file's name (a temporary name: see [`crate::name::is_temp`]).
pub const SPARE_PREFIX: &str = ".spare-";

/// One spare: its path and open descriptor.
#[derive(Debug)]
pub(super) struct Spare {
    pub(super) path: PathBuf,
    pub(super) file: File,
}

#[derive(Debug, Default)]
struct State {
    /// Oldest first.
    ready: VecDeque<Spare>,
    target: usize,
    next: u64,
    stop: bool,
    /// When a spare was last taken.
    last_take: Option<Instant>,
    /// The refill thread waits, with every spare ready, until woken.
    sleeping: bool,
}

/// The refill waits until no spare has been taken for this long (unless fewer than a quarter
/// are left): creating a file holds the lock of the directory the spares are renamed out of
/// (for about a millisecond on ext4), so refilling in the middle of a burst of creations
/// would make them wait for it.
const QUIET: Duration = Duration::from_millis(2);

/// The spare files and the thread that refills them.
#[derive(Debug)]
pub(super) struct Spares {
    dir: PathBuf,
    state: Mutex<State>,
    wake: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Spares {
    /// Starts keeping `target` spares in `dir` (the store's objects directory).
    pub(super) fn start(dir: &Path, target: usize) -> io::Result<Arc<Spares>> {
        let s = Arc::new(Spares {
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                target,
                ..State::default()
            }),
            wake: Condvar::new(),
            thread: Mutex::new(None),
        });
        let s2 = Arc::clone(&s);
        let h = std::thread::Builder::new()
            .name("envoy-store-spares".into())
            .spawn(move || s2.refill())?;
        *s.thread.lock().unwrap_or_else(PoisonError::into_inner) = Some(h);
        Ok(s)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A ready spare (the oldest), if any. Wakes the refill thread only once half the
    /// spares are gone: a wake-up is a `futex` call and, on an idle virtual CPU, an
    /// interrupt, which cost a fork's path more than the spare saved it.
    pub(super) fn take(&self) -> Option<Spare> {
        let mut st = self.state();
        let s = st.ready.pop_front();
        if s.is_some() {
            st.last_take = Some(Instant::now());
            if st.sleeping && st.ready.len() <= st.target / 2 {
                st.sleeping = false;
                self.wake.notify_one();
            }
        }
        s
    }

    /// Spares ready now (tests).
    pub(super) fn ready(&self) -> usize {
        self.state().ready.len()
    }

    fn refill(&self) {
        loop {
            let name = {
                let mut st = self.state();
                loop {
                    if st.stop {
                        return;
                    }
                    if st.ready.len() >= st.target {
                        st.sleeping = true;
                        st = self
                            .wake
                            .wait_while(st, |st| st.sleeping && !st.stop)
                            .unwrap_or_else(PoisonError::into_inner);
                        st.sleeping = false;
                        continue;
                    }
                    // Below a quarter of the target, refill at once: a steady taker (a
                    // client thawing files) must not leave an operator's fork without one.
                    let busy = st
                        .last_take
                        .map(|t| t.elapsed())
                        .filter(|e| *e < QUIET && st.ready.len() >= st.target / 4);
                    match busy {
                        Some(e) => {
                            st = self
                                .wake
                                .wait_timeout(st, QUIET.saturating_sub(e))
                                .unwrap_or_else(PoisonError::into_inner)
                                .0;
                        }
                        None => break,
                    }
                }
                st.next += 1;
                format!("{SPARE_PREFIX}{:x}", st.next)
            };
            let path = self.dir.join(name);
            match super::open_new_file(&path, true) {
                Ok(file) => self.state().ready.push_back(Spare { path, file }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    // A full or read-only disk: stop trying; creations take the old path.
                    tracing::warn!(error = %e, "cannot create spare object files; creating them on demand");
                    return;
                }
            }
        }
    }

    /// Stops the thread and removes the unused spares.
    pub(super) fn stop(&self) {
        self.state().stop = true;
        self.wake.notify_all();
        if let Some(h) = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = h.join();
        }
        for s in self.state().ready.drain(..) {
            let _ = fs::remove_file(&s.path);
        }
    }
}

/// `rename(from, to)` that fails with `AlreadyExists` instead of replacing `to`.
pub(super) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
    };
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the call;
    // renameat2 does not keep them.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        // A host file system without RENAME_NOREPLACE: a hard link never replaces either
        // (a crash between the two steps leaves the temporary name too, which recovery
        // removes without touching the object).
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => {
            fs::hard_link(from, to)?;
            fs::remove_file(from)
        }
        _ => Err(e),
    }
}
