//! Walking the object tree: recovery on open (remove temporary files) and the
//! [`ObjectStore::objects`](super::ObjectStore::objects) iterator.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::stat_from;
use crate::error::StoreError;
use crate::geometry::Geometry;
use crate::name;
use crate::object::ObjectStat;

/// Removes every temporary (`.`-prefixed) file under `objects`; returns how many.
pub(super) fn remove_temp_files(objects: &Path) -> Result<u64, StoreError> {
    let mut removed = 0u64;
    let mut stack = vec![objects.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = match fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StoreError::io(format!("reading {}", d.display()), e)),
        };
        for ent in rd {
            let ent = ent.map_err(|e| StoreError::io(format!("reading {}", d.display()), e))?;
            let fname = ent.file_name();
            let is_dir = ent.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if fname.to_str().is_some_and(name::is_temp) && !is_dir {
                fs::remove_file(ent.path())
                    .map_err(|e| StoreError::io(format!("removing {}", ent.path().display()), e))?;
                tracing::info!(path = %ent.path().display(), "recovery: removed temp file");
                removed += 1;
            } else if is_dir {
                stack.push(ent.path());
            }
        }
    }
    Ok(removed)
}

/// Depth-first walk of the object tree.
pub(super) struct ObjectWalk {
    geometry: Geometry,
    depth_of_leaf: usize,
    /// (directory, depth, leaf-dir key prefix, pending entries)
    stack: Vec<(PathBuf, usize, u64, Option<Vec<String>>)>,
}

impl ObjectWalk {
    pub(super) fn new(geometry: Geometry, root: PathBuf) -> Self {
        ObjectWalk {
            geometry,
            depth_of_leaf: geometry.levels().len(),
            stack: vec![(root, 0, 0, None)],
        }
    }
}

impl Iterator for ObjectWalk {
    type Item = Result<ObjectStat, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (dir, depth, prefix, pending) = self.stack.last_mut()?;
            let names = match pending {
                Some(n) => n,
                None => {
                    let rd = match fs::read_dir(&*dir) {
                        Ok(rd) => rd,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            self.stack.pop();
                            continue;
                        }
                        Err(e) => {
                            let msg = format!("reading {}", dir.display());
                            self.stack.pop();
                            return Some(Err(StoreError::io(msg, e)));
                        }
                    };
                    let mut v: Vec<String> = rd
                        .filter_map(|e| e.ok())
                        .filter_map(|e| e.file_name().into_string().ok())
                        .filter(|n| !name::is_temp(n))
                        .collect();
                    v.sort_unstable_by(|a, b| b.cmp(a));
                    pending.insert(v)
                }
            };
            let Some(n) = names.pop() else {
                self.stack.pop();
                continue;
            };
            let (dir, depth, prefix) = (dir.clone(), *depth, *prefix);
            let path = dir.join(&n);
            if depth < self.depth_of_leaf {
                match self.geometry.parse_component(depth, &n) {
                    Some(v) => {
                        let bits = self.geometry.levels()[depth];
                        self.stack
                            .push((path, depth + 1, (prefix << bits) | v, None));
                    }
                    None => return Some(Err(StoreError::CorruptName { path })),
                }
                continue;
            }
            let Some(leaf) = name::parse(self.geometry.leaf_bits, &n) else {
                return Some(Err(StoreError::CorruptName { path }));
            };
            let id = self.geometry.join(prefix, leaf.low);
            return Some(match fs::symlink_metadata(&path) {
                Ok(md) => Ok(stat_from(id, leaf.attr, &md)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => Err(StoreError::io(format!("stat of {}", path.display()), e)),
            });
        }
    }
}
