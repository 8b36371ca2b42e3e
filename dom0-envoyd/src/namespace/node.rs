//! Claims (§5.4.2): the envoy's in-memory references to the objects behind names.
//!
//! A [`Node`] stands for one name in a territory: its parent claim, its name, the object that
//! currently backs it and the copy-on-write flag of its link. Nodes exist for every fid
//! (held through a [`Claim`]) and for every directory on the path from such a node back to the
//! territory root (a child holds a strong reference to its parent; a parent holds only weak
//! references to its children, in `children`, so that one name always maps to one node while
//! any claim below it lives). Because fids point at nodes, not objects:
//!
//! * a rename moves the node (changes `parent`/`name`) and every fid below follows;
//! * a thaw swaps `state.id` and every fid on that name sees the new object;
//! * an unlink detaches the node (`orphan`): open fids keep using the object, which is deleted
//!   when the last claim is released (unless its link was copy-on-write: then it is shared).
//!
//! # Lock order (top-down, never the reverse)
//!
//! `Fs::rename_lock` (cross-directory renames only) → a directory's `dir_lock` (ancestor
//! before descendant; unrelated directories by `serial`) → a node's `io` → a node's `state` →
//! its `children` map → a child's `state`. Nobody holds a `state` lock while taking a
//! `dir_lock`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak};

use envoy_storage::{ObjectId, ObjectKind};

/// Mutable part of a claim.
#[derive(Debug)]
pub struct NodeState {
    /// The object currently backing the name.
    pub id: ObjectId,
    /// The link's copy-on-write flag: the object is shared and read-only.
    pub cow: bool,
    /// File type (fixed for the life of the node).
    pub kind: ObjectKind,
    /// The directory holding the name; `None` for the global root and for orphans.
    pub parent: Option<Arc<Node>>,
    /// The name in `parent`.
    pub name: Vec<u8>,
    /// Unlinked while claimed: the object goes when the last claim does.
    pub orphan: bool,
    /// The object was deleted (after the last claim of an orphan).
    pub deleted: bool,
    /// Fids holding this node.
    pub handles: usize,
}

/// Which part of the global tree a name is in (§4.3): fixed when the node is made, since a
/// name never moves between areas (renames and links across them fail with `EXDEV`).
#[derive(Debug, Clone)]
pub enum Area {
    /// An administrative directory, or a file in one (credential files).
    Admin,
    /// The hidden image metadata below an admin directory (`.envoy/`): catalogues, intent
    /// records, staged imports, and (in the root's) the image journal.
    /// Only the image manager changes it.
    Meta,
    /// Inside an image head or one of its snapshots.
    Image(Arc<ImageScope>),
}

/// What every node of one image (head or snapshot) shares.
#[derive(Debug)]
pub struct ImageScope {
    /// Mutations inside the image hold it shared; a snapshot holds it exclusively, so no
    /// write lands in an object while the image's root becomes shared.
    pub gate: RwLock<()>,
    /// A snapshot: nothing below may change (`EROFS`).
    pub read_only: bool,
    /// The image's path (`/tenants/alice/web`, `/tenants/alice/web@3`), for logs and errors.
    pub path: String,
}

impl Area {
    /// The image scope, if inside an image.
    pub fn scope(&self) -> Option<&Arc<ImageScope>> {
        match self {
            Area::Image(s) => Some(s),
            _ => None,
        }
    }

    /// Whether two areas are the same (the same image, or both administrative).
    pub fn same(&self, other: &Area) -> bool {
        match (self, other) {
            (Area::Admin, Area::Admin) | (Area::Meta, Area::Meta) => true,
            (Area::Image(a), Area::Image(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// One claim node.
#[derive(Debug)]
pub struct Node {
    /// Unique per node, orders locks of unrelated directories.
    pub serial: u64,
    /// Name, object and link state.
    pub state: Mutex<NodeState>,
    /// Directories: readers (lookups, readdir) share it, updates of the entries hold it
    /// exclusively.
    pub dir_lock: RwLock<()>,
    /// Files: data I/O shares it; freezing holds it exclusively so no write lands in an
    /// object while it becomes shared.
    pub io: RwLock<()>,
    /// Live child nodes by name.
    pub children: Mutex<HashMap<Vec<u8>, Weak<Node>>>,
    /// Admin tree, image metadata, or which image.
    pub area: Area,
}

static SERIAL: AtomicU64 = AtomicU64::new(1);

/// Locks a mutex, ignoring poisoning (a panicked holder left consistent data: every update of
/// node state is a plain field assignment).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Shared lock of an `RwLock`, ignoring poisoning.
pub fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

/// Exclusive lock of an `RwLock`, ignoring poisoning.
pub fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

impl Node {
    /// A new node.
    pub fn new(
        id: ObjectId,
        cow: bool,
        kind: ObjectKind,
        parent: Option<Arc<Node>>,
        name: Vec<u8>,
        area: Area,
    ) -> Arc<Node> {
        Arc::new(Node {
            serial: SERIAL.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new(NodeState {
                id,
                cow,
                kind,
                parent,
                name,
                orphan: false,
                deleted: false,
                handles: 0,
            }),
            dir_lock: RwLock::new(()),
            io: RwLock::new(()),
            children: Mutex::new(HashMap::new()),
            area,
        })
    }

    /// Locks the state.
    pub fn state(&self) -> MutexGuard<'_, NodeState> {
        lock(&self.state)
    }

    /// The current object ID.
    pub fn id(&self) -> ObjectId {
        self.state().id
    }

    /// The file type.
    pub fn kind(&self) -> ObjectKind {
        self.state().kind
    }

    /// The parent claim.
    pub fn parent(&self) -> Option<Arc<Node>> {
        self.state().parent.clone()
    }

    /// Whether `self` is `other` or one of its ancestors.
    pub fn is_ancestor_of(self: &Arc<Self>, other: &Arc<Node>) -> bool {
        let mut cur = Some(Arc::clone(other));
        while let Some(n) = cur {
            if Arc::ptr_eq(&n, self) {
                return true;
            }
            cur = n.parent();
        }
        false
    }

    /// The live child called `name`, if any.
    pub fn child(&self, name: &[u8]) -> Option<Arc<Node>> {
        lock(&self.children).get(name).and_then(Weak::upgrade)
    }

    /// Path from the global root, for logs.
    pub fn path(self: &Arc<Self>) -> String {
        let mut parts = Vec::new();
        let mut cur = Some(Arc::clone(self));
        while let Some(n) = cur {
            let s = n.state();
            if s.parent.is_some() {
                parts.push(String::from_utf8_lossy(&s.name).into_owned());
            } else if s.orphan {
                parts.push("(unlinked)".to_string());
            }
            cur = s.parent.clone();
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }
}
