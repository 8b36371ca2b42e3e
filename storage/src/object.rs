//! The object model: IDs, kinds, attributes and request types.
//!
//! An object is a numbered byte array with a few attributes (kind, mode, owner, times). The
//! store knows nothing of names or permissions; the envoy layer gives them meaning.

use std::fmt;

use bytes::Bytes;

/// A storage object's identity: unique across the cluster and shared by all replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ObjectId(pub u64);

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// The file type of an object. Devices, FIFOs and sockets are metadata only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// A regular file.
    Regular,
    /// A directory in the format of [`crate::dirfmt`].
    Directory,
    /// A symbolic link (the target is the data).
    Symlink,
    /// A character device node.
    CharDevice,
    /// A block device node.
    BlockDevice,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
}

impl ObjectKind {
    /// Every kind, in code order.
    pub const ALL: [ObjectKind; 7] = [
        ObjectKind::Regular,
        ObjectKind::Directory,
        ObjectKind::Symlink,
        ObjectKind::CharDevice,
        ObjectKind::BlockDevice,
        ObjectKind::Fifo,
        ObjectKind::Socket,
    ];

    /// The one-character code used in leaf names.
    pub fn code(self) -> u8 {
        match self {
            ObjectKind::Regular => b'f',
            ObjectKind::Directory => b'd',
            ObjectKind::Symlink => b'l',
            ObjectKind::CharDevice => b'c',
            ObjectKind::BlockDevice => b'b',
            ObjectKind::Fifo => b'p',
            ObjectKind::Socket => b's',
        }
    }

    /// The kind for a code, if valid.
    pub fn from_code(c: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == c)
    }

    /// The wire number used by the storage protocol (the index in [`Self::ALL`]).
    pub fn wire(self) -> u8 {
        match self {
            ObjectKind::Regular => 0,
            ObjectKind::Directory => 1,
            ObjectKind::Symlink => 2,
            ObjectKind::CharDevice => 3,
            ObjectKind::BlockDevice => 4,
            ObjectKind::Fifo => 5,
            ObjectKind::Socket => 6,
        }
    }

    /// The kind for a wire number, if valid.
    pub fn from_wire(n: u8) -> Option<Self> {
        Self::ALL.get(usize::from(n)).copied()
    }
}

/// A point in time: seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    /// Whole seconds.
    pub secs: u64,
    /// Nanoseconds, below 1e9.
    pub nanos: u32,
}

impl Timestamp {
    /// Nanoseconds since the epoch, if it fits in 64 bits and `nanos` is valid.
    pub fn as_nanos(self) -> Option<u64> {
        if self.nanos >= 1_000_000_000 {
            return None;
        }
        self.secs
            .checked_mul(1_000_000_000)?
            .checked_add(u64::from(self.nanos))
    }

    /// The timestamp for nanoseconds since the epoch.
    pub fn from_nanos(ns: u64) -> Self {
        Timestamp {
            secs: ns / 1_000_000_000,
            nanos: (ns % 1_000_000_000) as u32,
        }
    }

    /// The current time.
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            secs: d.as_secs(),
            nanos: d.subsec_nanos(),
        }
    }
}

/// The attributes the store keeps in an object's leaf name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Attributes {
    /// File type.
    pub kind: ObjectKind,
    /// Permission bits, `0o7777` at most.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Last access time.
    pub atime: Timestamp,
    /// Last modification time.
    pub mtime: Timestamp,
}

impl Attributes {
    /// Attributes for a new object of `kind` with `mode`, owned by root, timestamped now.
    pub fn new(kind: ObjectKind, mode: u32) -> Self {
        let now = Timestamp::now();
        Attributes {
            kind,
            mode,
            uid: 0,
            gid: 0,
            atime: now,
            mtime: now,
        }
    }
}

/// What [`crate::ObjectStore::stat`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectStat {
    /// The object.
    pub id: ObjectId,
    /// Attributes from the leaf name.
    pub attr: Attributes,
    /// Size in bytes (host inode).
    pub size: u64,
    /// Last status change (host inode).
    pub ctime: Timestamp,
    /// Allocated 512-byte blocks (host inode).
    pub blocks: u64,
}

/// A change of attributes; `None` fields stay as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AttrChange {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New access time.
    pub atime: Option<Timestamp>,
    /// New modification time.
    pub mtime: Option<Timestamp>,
    /// New size (truncate or extend with zeros).
    pub size: Option<u64>,
}

impl AttrChange {
    /// Applies the attribute part (not the size) to `attr`.
    pub fn apply(&self, attr: &Attributes) -> Attributes {
        Attributes {
            kind: attr.kind,
            mode: self.mode.unwrap_or(attr.mode),
            uid: self.uid.unwrap_or(attr.uid),
            gid: self.gid.unwrap_or(attr.gid),
            atime: self.atime.unwrap_or(attr.atime),
            mtime: self.mtime.unwrap_or(attr.mtime),
        }
    }
}

/// One read in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRequest {
    /// The object.
    pub id: ObjectId,
    /// Byte offset.
    pub offset: u64,
    /// Bytes wanted.
    pub len: usize,
}

/// One write in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRequest {
    /// The object.
    pub id: ObjectId,
    /// Byte offset.
    pub offset: u64,
    /// Payload.
    pub data: Bytes,
}

/// A range of IDs handed out by [`crate::ObjectStore::reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// The first ID.
    pub first: ObjectId,
    /// How many consecutive IDs.
    pub count: u64,
}

/// Totals over the whole store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreUsage {
    /// Number of objects.
    pub objects: u64,
    /// Sum of allocated bytes.
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_code_round_trip_every_kind() {
        for k in ObjectKind::ALL {
            assert_eq!(ObjectKind::from_code(k.code()), Some(k));
            assert_eq!(ObjectKind::from_wire(k.wire()), Some(k));
        }
        assert_eq!(ObjectKind::from_code(b'x'), None);
        assert_eq!(ObjectKind::from_wire(7), None);
    }

    #[test]
    fn timestamp_nanos_overflow_none() {
        assert_eq!(
            Timestamp {
                secs: u64::MAX,
                nanos: 0
            }
            .as_nanos(),
            None
        );
        assert_eq!(
            Timestamp {
                secs: 1,
                nanos: 1_000_000_000
            }
            .as_nanos(),
            None
        );
        let t = Timestamp { secs: 5, nanos: 7 };
        assert_eq!(Timestamp::from_nanos(t.as_nanos().unwrap_or(0)), t);
    }
}
