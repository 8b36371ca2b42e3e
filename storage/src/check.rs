//! Offline consistency check of a store (`envoy-storaged check DIR`).
//!
//! Read-only: it never repairs and never takes the store lock, so it can inspect a store that
//! crashed (or one in use, at the risk of racing its changes). It verifies that
//!
//! * the superblock parses and its geometry is valid;
//! * every path in `objects/` matches the geometry (fixed-width hex directory names of the
//!   right level, directories above the leaf level, files at it);
//! * every leaf is a regular file (a symlink is reported, never followed), its name parses,
//!   and the ID it names together with its path lies below the reserve mark (so within
//!   `id_bits`), with no ID appearing twice;
//! * there are no temporary files (leftovers from a crash, removed on the next open);
//! * every object of kind Directory parses in the [`crate::dirfmt`] format.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use crate::dirfmt;
use crate::geometry::Geometry;
use crate::name;
use crate::object::{ObjectId, ObjectKind};
use crate::store::{LOCK_FILE, OBJECTS_DIR};
use crate::superblock::{Superblock, META_FILE, META_TMP};

/// One thing wrong with a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The superblock is missing or does not parse.
    Superblock(String),
    /// A directory or file that cannot be read.
    Unreadable {
        /// Where.
        path: PathBuf,
        /// The error.
        error: String,
    },
    /// A name that does not belong where it is.
    BadPath {
        /// Where.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// A temporary file left by a crash.
    Leftover(PathBuf),
    /// Two files for one ID.
    DuplicateId {
        /// The ID.
        id: ObjectId,
        /// The second file found.
        path: PathBuf,
    },
    /// An ID at or above the reserve mark.
    AboveMark {
        /// The ID.
        id: ObjectId,
        /// The mark.
        mark: u64,
    },
    /// A directory object that does not parse.
    BadDirectory {
        /// The object.
        id: ObjectId,
        /// The parser's complaint.
        error: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Superblock(e) => write!(f, "superblock: {e}"),
            Problem::Unreadable { path, error } => {
                write!(f, "cannot read {}: {error}", path.display())
            }
            Problem::BadPath { path, reason } => write!(f, "{}: {reason}", path.display()),
            Problem::Leftover(p) => write!(
                f,
                "{}: leftover from a crash; removed on next open",
                p.display()
            ),
            Problem::DuplicateId { id, path } => {
                write!(f, "object {id} appears twice (second: {})", path.display())
            }
            Problem::AboveMark { id, mark } => write!(
                f,
                "object {id} is at or above the reserve mark {mark:#x} (never handed out)"
            ),
            Problem::BadDirectory { id, error } => {
                write!(f, "directory object {id} does not parse: {error}")
            }
        }
    }
}

/// What [`check`] found.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// The checked directory.
    pub dir: PathBuf,
    /// The superblock, if it parsed.
    pub superblock: Option<Superblock>,
    /// Objects found.
    pub objects: u64,
    /// Of which directory objects.
    pub directories: u64,
    /// Bytes of object data (sizes).
    pub bytes: u64,
    /// Everything wrong.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// True when nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "store {}", self.dir.display())?;
        if let Some(sb) = &self.superblock {
            let g = sb.geometry;
            writeln!(
                f,
                "  geometry: block size {}, {}-bit IDs, leaf {} bits, levels {:?}, reserve mark {:#x}",
                g.block_size,
                g.id_bits,
                g.leaf_bits,
                g.levels(),
                sb.reserved
            )?;
        }
        writeln!(
            f,
            "  {} objects ({} directories), {} bytes",
            self.objects, self.directories, self.bytes
        )?;
        if self.problems.is_empty() {
            writeln!(f, "  clean")
        } else {
            writeln!(f, "  {} problem(s):", self.problems.len())?;
            for p in &self.problems {
                writeln!(f, "  - {p}")?;
            }
            Ok(())
        }
    }
}

/// Checks the store in `dir`.
pub fn check(dir: &Path) -> CheckReport {
    let mut r = CheckReport {
        dir: dir.to_path_buf(),
        ..CheckReport::default()
    };
    match Superblock::load(dir) {
        Ok(sb) => r.superblock = Some(sb),
        Err(e) => {
            r.problems.push(Problem::Superblock(e.to_string()));
            return r;
        }
    }
    match fs::read_dir(dir) {
        Ok(rd) => {
            for e in rd.flatten() {
                let n = e.file_name();
                let n = n.to_string_lossy();
                // envoyd's control socket (`<data>/control.sock`) may outlive a killed envoyd;
                // a socket holds no data and the next envoyd replaces it.
                let socket = e
                    .file_type()
                    .is_ok_and(|t| std::os::unix::fs::FileTypeExt::is_socket(&t));
                if n == META_TMP {
                    r.problems.push(Problem::Leftover(e.path()));
                } else if n != META_FILE && n != LOCK_FILE && n != OBJECTS_DIR && !socket {
                    r.problems.push(Problem::BadPath {
                        path: e.path(),
                        reason: "unexpected entry in the store directory",
                    });
                }
            }
        }
        Err(e) => r.problems.push(Problem::Unreadable {
            path: dir.to_path_buf(),
            error: e.to_string(),
        }),
    }
    let Some(sb) = r.superblock else {
        return r;
    };
    let mut seen = HashSet::new();
    walk(&mut r, &sb, &mut seen, &dir.join(OBJECTS_DIR), 0, 0);
    r
}

fn walk(
    r: &mut CheckReport,
    sb: &Superblock,
    seen: &mut HashSet<u64>,
    d: &Path,
    depth: usize,
    prefix: u64,
) {
    let g: Geometry = sb.geometry;
    let leaf_depth = g.levels().len();
    let rd = match fs::read_dir(d) {
        Ok(rd) => rd,
        Err(e) => {
            r.problems.push(Problem::Unreadable {
                path: d.to_path_buf(),
                error: e.to_string(),
            });
            return;
        }
    };
    let mut entries: Vec<_> = rd.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let Some(n) = e.file_name().to_str().map(str::to_owned) else {
            r.problems.push(Problem::BadPath {
                path,
                reason: "name is not UTF-8",
            });
            continue;
        };
        if name::is_temp(&n) {
            // An empty spare file (pre-created by a running store, see `store::spare`) holds
            // nothing; a filled one is an interrupted clone, a leftover like `.clone-*`.
            let empty_spare = depth == 0
                && n.starts_with(crate::store::SPARE_PREFIX)
                && e.metadata().is_ok_and(|m| m.is_file() && m.len() == 0);
            if empty_spare {
                continue;
            }
            r.problems.push(if is_dir {
                Problem::BadPath {
                    path,
                    reason: "unexpected hidden directory",
                }
            } else {
                Problem::Leftover(path)
            });
            continue;
        }
        if depth < leaf_depth {
            match (is_dir, g.parse_component(depth, &n)) {
                (true, Some(v)) => {
                    let bits = g.levels()[depth];
                    walk(r, sb, seen, &path, depth + 1, (prefix << bits) | v);
                }
                (false, _) => r.problems.push(Problem::BadPath {
                    path,
                    reason: "file where the geometry expects a directory",
                }),
                (true, None) => r.problems.push(Problem::BadPath {
                    path,
                    reason: "directory name does not match the geometry",
                }),
            }
            continue;
        }
        if is_dir {
            r.problems.push(Problem::BadPath {
                path,
                reason: "directory at the leaf level",
            });
            continue;
        }
        // Never follow a symlink or read a FIFO/device planted in the tree: the first would
        // check (and the store serve) a host file, the second could block forever.
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            r.problems.push(Problem::BadPath {
                path,
                reason: "not a regular file",
            });
            continue;
        }
        let Some(leaf) = name::parse(g.leaf_bits, &n) else {
            r.problems.push(Problem::BadPath {
                path,
                reason: "not a valid leaf name",
            });
            continue;
        };
        let id = g.join(prefix, leaf.low);
        if !seen.insert(id.0) {
            r.problems.push(Problem::DuplicateId { id, path });
            continue;
        }
        if id.0 >= sb.reserved {
            r.problems.push(Problem::AboveMark {
                id,
                mark: sb.reserved,
            });
        }
        r.objects += 1;
        match e.metadata() {
            Ok(md) => r.bytes += md.len(),
            Err(e) => r.problems.push(Problem::Unreadable {
                path: path.clone(),
                error: e.to_string(),
            }),
        }
        if leaf.attr.kind == ObjectKind::Directory {
            r.directories += 1;
            match fs::read(&path) {
                Ok(data) => {
                    if let Some(Err(err)) = dirfmt::entries(&data).find(|x| x.is_err()) {
                        let error = match std::error::Error::source(&err) {
                            Some(s) => format!("{err}: {s}"),
                            None => err.to_string(),
                        };
                        r.problems.push(Problem::BadDirectory { id, error });
                    }
                }
                Err(e) => r.problems.push(Problem::Unreadable {
                    path,
                    error: e.to_string(),
                }),
            }
        }
    }
}
