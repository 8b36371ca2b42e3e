//! Areas of the global tree (§4.3): administrative directories above, images at the leaves.
//!
//! Every [`Node`] carries its [`Area`], decided when the node is made:
//!
//! * a child of an image (head or snapshot) is in the same image;
//! * `.envoy` in an administrative directory, and everything below it, is image metadata
//!   ([`Area::Meta`]): only [`crate::images`] changes it;
//! * a child `NAME` of an administrative directory `D` is the head of an image when the
//!   [`ImageTable`] registers `D/NAME`, and `NAME@N` is its N-th snapshot (read-only);
//! * anything else below an administrative directory is administrative too.
//!
//! The rules clients see (enforced here, at the top of every mutating [`Fs`] call):
//!
//! | what | answer |
//! |---|---|
//! | any change inside a snapshot | `EROFS` |
//! | any change below `.envoy` | `EPERM` |
//! | creating, removing or renaming an image head, `NAME@N`, `.envoy`, or `/ctl` in an admin directory | `EPERM` (images are managed through the control socket) |
//! | renaming an administrative directory (image metadata records absolute paths) | `EPERM` |
//! | a rename or hard link between two images, or between an image and the admin tree | `EXDEV` |
//!
//! Mutations inside an image hold the image's gate shared ([`Fs::enter`]); a snapshot holds it
//! exclusively, which is what makes a snapshot of a live image consistent.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use super::node::{read, write, Area, ImageScope, Node};
use super::Fs;
use crate::error::{FsError, FsResult};

/// Name of the image-metadata directory in an administrative directory.
pub const META_DIR: &[u8] = b".envoy";
/// The separator between an image name and a snapshot number (`web@3`).
pub const SNAPSHOT_SEP: u8 = b'@';
/// Attach name of the synthetic control tree, reserved at the root.
pub const CTL_NAME: &[u8] = b"ctl";

/// Splits `web@3` into `("web", Some(3))`; a name without `@` gives `(name, None)`; a name
/// whose suffix is not a number gives `None`.
pub fn split_snapshot(name: &[u8]) -> Option<(&[u8], Option<u32>)> {
    match name.iter().rposition(|&c| c == SNAPSHOT_SEP) {
        None => Some((name, None)),
        Some(i) => {
            let n = std::str::from_utf8(&name[i + 1..]).ok()?;
            if n.is_empty() || n.starts_with('0') || !n.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            Some((&name[..i], Some(n.parse().ok()?)))
        }
    }
}

/// `parent/name` as an absolute path (`parent` is `/` or has no trailing slash).
pub fn child_path(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// The registered images: head path → the snapshot a fork started from (`None` for an image
/// that was created or imported). Only [`crate::images`] changes it, after recording the
/// change in its journal; the namespace reads it to tell image heads from administrative
/// directories.
#[derive(Debug, Default)]
pub struct ImageTable {
    heads: RwLock<HashMap<String, Option<String>>>,
}

impl ImageTable {
    /// Whether `head` is a registered image.
    pub fn contains(&self, head: &str) -> bool {
        read(&self.heads).contains_key(head)
    }

    /// The origin of image `head`: `None` if it is not registered, `Some(None)` if it was not
    /// forked.
    pub fn origin(&self, head: &str) -> Option<Option<String>> {
        read(&self.heads).get(head).cloned()
    }

    /// Every image and its origin, sorted by path.
    pub fn all(&self) -> Vec<(String, Option<String>)> {
        let mut v: Vec<(String, Option<String>)> = read(&self.heads)
            .iter()
            .map(|(h, o)| (h.clone(), o.clone()))
            .collect();
        v.sort_unstable();
        v
    }

    /// Heads of the images forked from snapshot `snapshot` (`/…/web@3`): its successors
    /// besides the next snapshot.
    pub fn forks_of(&self, snapshot: &str) -> Vec<String> {
        read(&self.heads)
            .iter()
            .filter(|(_, o)| o.as_deref() == Some(snapshot))
            .map(|(h, _)| h.clone())
            .collect()
    }

    pub(crate) fn insert(&self, head: String, origin: Option<String>) {
        write(&self.heads).insert(head, origin);
    }

    pub(crate) fn remove(&self, head: &str) {
        write(&self.heads).remove(head);
    }

    pub(crate) fn replace(&self, all: BTreeMap<String, Option<String>>) {
        *write(&self.heads) = all.into_iter().collect();
    }
}

impl Fs {
    /// Whether administrative directory `dir` holds an image called `name` (the image table
    /// registers `dir/name`).
    pub fn is_image_name(self: &Arc<Self>, dir: &Arc<Node>, name: &[u8]) -> FsResult<bool> {
        let Ok(name) = std::str::from_utf8(name) else {
            return Ok(false); // image names come from operators' UTF-8 paths
        };
        Ok(self.image_table().contains(&child_path(&dir.path(), name)))
    }

    /// The area of `dir`'s child `name` (see the module docs). Call without holding `dir`'s
    /// `dir_lock`.
    pub(crate) fn classify(self: &Arc<Self>, dir: &Arc<Node>, name: &[u8]) -> FsResult<Area> {
        match &dir.area {
            Area::Image(s) => Ok(Area::Image(Arc::clone(s))),
            Area::Meta => Ok(Area::Meta),
            Area::Admin if name == META_DIR => Ok(Area::Meta),
            Area::Admin => {
                let Some((base, snap)) = split_snapshot(name) else {
                    return Ok(Area::Admin);
                };
                if !self.is_image_name(dir, base)? {
                    return Ok(Area::Admin);
                }
                let mut path = dir.path();
                if !path.ends_with('/') {
                    path.push('/');
                }
                path.push_str(&String::from_utf8_lossy(name));
                Ok(Area::Image(Arc::new(ImageScope {
                    gate: RwLock::new(()),
                    read_only: snap.is_some(),
                    path,
                })))
            }
        }
    }

    /// Starts a change of `node` (its data, attributes or entries): `EROFS` in a snapshot,
    /// `EPERM` in image metadata; inside an image, the returned guard holds the image's gate
    /// shared until the change is done.
    pub fn enter(node: &Node) -> FsResult<Option<RwLockReadGuard<'_, ()>>> {
        Fs::check_area(node)?;
        Ok(node.area.scope().map(|s| read(&s.gate)))
    }

    /// The area rules of [`Fs::enter`] without taking the gate.
    pub fn check_area(node: &Node) -> FsResult<()> {
        match &node.area {
            Area::Admin => Ok(()),
            Area::Meta => Err(FsError::Perm),
            Area::Image(s) if s.read_only => Err(FsError::ReadOnly),
            Area::Image(_) => Ok(()),
        }
    }

    /// Refuses client changes to the names the image manager owns in an administrative
    /// directory (`EPERM`): `.envoy`, `NAME@N`, image heads, and `/ctl`.
    pub(crate) fn check_client_name(
        self: &Arc<Self>,
        dir: &Arc<Node>,
        name: &[u8],
    ) -> FsResult<()> {
        if !matches!(dir.area, Area::Admin) {
            return Ok(());
        }
        let reserved = name == META_DIR
            || name.contains(&SNAPSHOT_SEP)
            || (dir.parent().is_none() && name == CTL_NAME)
            || self.is_image_name(dir, name)?;
        if reserved {
            return Err(FsError::Perm);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::split_snapshot;

    #[test]
    fn split_snapshot_names_parse_strictly() {
        assert_eq!(split_snapshot(b"web"), Some((&b"web"[..], None)));
        assert_eq!(split_snapshot(b"web@3"), Some((&b"web"[..], Some(3))));
        assert_eq!(split_snapshot(b"web@03"), None);
        assert_eq!(split_snapshot(b"web@"), None);
        assert_eq!(split_snapshot(b"web@x"), None);
        assert_eq!(split_snapshot(b"web@99999999999"), None);
    }
}
