//! Territories (§4.2.3, §5.4.2): which envoy owns which part of the global tree.
//!
//! Every attach and every walk asks [`Territories::lookup`] who owns a path. Today one local
//! territory covers `/`, so the answer is always [`Owner::Local`]; the federation issues add
//! remote owners (and exits) here, and the session code already routes on the answer.
//!
//! A territory's root is never frozen (§5.4.3), so a thaw always ends inside the territory.
//! Image heads may be frozen links (a snapshot or fork freezes the head's link instead of
//! copying its root, see [`crate::images`]); handing an image to another envoy as a territory
//! of its own must therefore thaw its head first.

use std::sync::Arc;

use crate::namespace::{Claim, Fs};

/// Identifies a local territory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TerritoryId(pub u32);

/// Who serves a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This envoy, in the given territory.
    Local(TerritoryId),
    /// Another envoy (its address); forwarding is not built yet.
    Remote(String),
}

/// A subtree owned by this envoy.
#[derive(Debug)]
pub struct Territory {
    /// Its id.
    pub id: TerritoryId,
    /// Root path in the global tree (`/` for the one local territory).
    pub root_path: String,
}

/// The territory table.
#[derive(Debug)]
pub struct Territories {
    fs: Arc<Fs>,
    local: Vec<Territory>,
}

impl Territories {
    /// One local territory covering the whole tree of `fs`.
    pub fn single(fs: Arc<Fs>) -> Territories {
        Territories {
            fs,
            local: vec![Territory {
                id: TerritoryId(0),
                root_path: "/".into(),
            }],
        }
    }

    /// The owner of `path` (absolute, `/`-separated): the local territory with the longest
    /// root that is a prefix of the path.
    pub fn lookup(&self, path: &str) -> Owner {
        let best = self
            .local
            .iter()
            .filter(|t| {
                t.root_path == "/"
                    || path == t.root_path
                    || path.starts_with(&format!("{}/", t.root_path))
            })
            .max_by_key(|t| t.root_path.len());
        match best {
            Some(t) => Owner::Local(t.id),
            None => Owner::Remote(String::new()),
        }
    }

    /// A claim on the root of local territory `id`.
    pub fn root(&self, id: TerritoryId) -> Option<Claim> {
        self.local
            .iter()
            .find(|t| t.id == id)
            .map(|_| self.fs.root())
    }

    /// Every local territory: id and root path.
    pub fn list(&self) -> Vec<(TerritoryId, String)> {
        self.local
            .iter()
            .map(|t| (t.id, t.root_path.clone()))
            .collect()
    }

    /// The file system behind the local territories.
    pub fn fs(&self) -> &Arc<Fs> {
        &self.fs
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lookup_any_path_single_territory_local() {
        let dir = tempfile::tempdir().unwrap();
        let fs = crate::namespace::test_fs(dir.path());
        let t = super::Territories::single(fs);
        assert_eq!(
            t.lookup("/default/x"),
            super::Owner::Local(super::TerritoryId(0))
        );
        assert!(t.root(super::TerritoryId(0)).is_some());
        assert!(t.root(super::TerritoryId(7)).is_none());
    }
}
