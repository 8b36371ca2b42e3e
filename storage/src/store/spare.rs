//! Spare files: empty files created ahead of time, so that creating or cloning an object
//! costs a link instead of a file creation.
//!
//! # Why
//!
//! On the ext4 stores we measured, `open(O_CREAT)` of a new file costs several times a
//! `rename` (inode allocation and initialisation), and every first write after a snapshot
//! creates files (the copies its thaw makes). With spares enabled
//! ([`ObjectStore::keep_spare_files`]), a background thread keeps up to `target` empty
//! *unnamed* files ready: `open(O_TMPFILE)` in `objects/` (refilling once half are gone, and
//! only once no spare has been taken for a moment). `create_object` links one to the object's
//! final leaf name, and `clone_object` fills one (in place of its `.clone-<dst>` temporary)
//! and links it there. When none is ready the old path runs, so spares only ever save time.
//!
//! Unnamed, because a named spare had to be renamed out of `objects/`, and a rename locks
//! both directories: the refill thread's file creations held `objects/`'s lock for the whole
//! inode allocation, and every clone's rename spun on it (half a thaw's CPU time, measured).
//! An `O_TMPFILE` creation takes no directory lock, and `linkat` locks only the leaf
//! directory it links into.
//!
//! # Crash safety
//!
//! An unnamed file has no name to leave behind: the kernel frees it at its last close, and
//! after a power failure ext4's orphan list frees it at mount. Each operation keeps its
//! one-step commit: create is one `linkat` of an empty file to the final name (the object
//! appears complete or not at all, and `linkat` never replaces an existing name); clone fills
//! and (when synced) fsyncs the spare before the link, exactly as it did its temporary before
//! the rename. [`ObjectStore::sync`] fsyncs the leaf directory, so durability is unchanged.
//! Stores written by earlier versions may hold named spares (`objects/.spare-<n>`,
//! [`SPARE_PREFIX`]): temporary names, which the recovery at open removes.
//!
//! A host file system without `O_TMPFILE` (or a kernel without `/proc/self/fd` and without
//! the capability `linkat(AT_EMPTY_PATH)` needs) turns spares off with a warning.

use std::collections::VecDeque;
use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Prefix of the named spare files of earlier versions (a temporary name: see
/// [`crate::name::is_temp`]); spares are unnamed now.
pub const SPARE_PREFIX: &str = ".spare-";

/// One spare: an open, unnamed, empty file in the store's objects directory.
#[derive(Debug)]
pub(super) struct Spare {
    pub(super) file: File,
}

#[derive(Debug, Default)]
struct State {
    /// Oldest first.
    ready: VecDeque<Spare>,
    target: usize,
    /// Spares taken so far.
    taken: u64,
    stop: bool,
    /// When a spare was last taken.
    last_take: Option<Instant>,
    /// The refill thread waits, with every spare ready, until woken.
    sleeping: bool,
}

/// The refill waits until no spare has been taken for this long (unless fewer than a quarter
/// are left): a file creation is an ext4 journal handle and an inode allocation, work that
/// would compete with a burst of creations for the CPU and the journal.
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
            st.taken += 1;
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

    /// Spares taken so far.
    pub(super) fn taken(&self) -> u64 {
        self.state().taken
    }

    fn refill(&self) {
        loop {
            {
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
            }
            match open_unnamed(&self.dir) {
                Ok(file) => self.state().ready.push_back(Spare { file }),
                Err(e) => {
                    // No O_TMPFILE, a full or read-only disk: stop trying; creations take the
                    // old path.
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
        // Closing an unnamed file frees it.
        self.state().ready.clear();
    }
}

/// `p` as a C string for a system call.
fn c_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// An unnamed empty file in `dir` (`O_TMPFILE`), linkable with [`link_unnamed`].
fn open_unnamed(dir: &Path) -> io::Result<File> {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
}

/// Gives unnamed file `file` the name `to`; fails with `AlreadyExists` instead of replacing.
pub(super) fn link_unnamed(file: &File, to: &Path) -> io::Result<()> {
    let to = c_path(to)?;
    let proc_path = c_path(Path::new(&format!("/proc/self/fd/{}", file.as_raw_fd())))?;
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the call; linkat
    // does not keep them.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::ENOENT) {
        return Err(e);
    }
    // No /proc: link the descriptor itself (needs CAP_DAC_READ_SEARCH).
    let empty = c_path(Path::new(""))?;
    // SAFETY: as above; `file` is an open descriptor for the duration of the call.
    let r = unsafe {
        libc::linkat(
            file.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `rename(from, to)` that fails with `AlreadyExists` instead of replacing `to`.
pub(super) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (f, t) = (c_path(from)?, c_path(to)?);
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
