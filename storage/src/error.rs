//! The object store's error type and its errno classifier.
//!
//! Every operation returns [`StoreError`]; causes are kept with `#[source]`. The protocol edge
//! (the storage server) turns an error into an `Rlerror` through exactly one function,
//! [`StoreError::errno`].

use std::io;
use std::path::PathBuf;

use crate::dirfmt::DirFormatError;
use crate::object::ObjectId;

/// Errors from the object store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No object with this ID exists.
    #[error("object {0} not found")]
    NotFound(ObjectId),
    /// An object with this ID already exists.
    #[error("object {0} already exists")]
    AlreadyExists(ObjectId),
    /// The ID does not fit in the store's `id_bits`.
    #[error("object ID {id} is out of range: this store holds IDs below 2^{id_bits}")]
    IdOutOfRange {
        /// The rejected ID.
        id: ObjectId,
        /// The store's ID width.
        id_bits: u8,
    },
    /// A request that can never succeed (bad offset, length, attribute value…).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A store exists where a new one was to be created.
    #[error("a store already exists at {0}")]
    StoreExists(PathBuf),
    /// No store at the given directory.
    #[error("no store at {0} (missing envoy-store.meta)")]
    NoStore(PathBuf),
    /// Another process has the store open.
    #[error("store at {0} is locked by another process")]
    Locked(PathBuf),
    /// The superblock does not parse.
    #[error("corrupt superblock {path}: {reason}")]
    CorruptSuperblock {
        /// The superblock file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file in the object tree whose name is not a valid leaf name.
    #[error("corrupt object file name {path}")]
    CorruptName {
        /// The offending path.
        path: PathBuf,
    },
    /// A directory object that does not follow the directory format.
    #[error("directory object {id} is corrupt")]
    CorruptDirectory {
        /// The directory object.
        id: ObjectId,
        /// What the parser found.
        #[source]
        source: DirFormatError,
    },
    /// An I/O error from the host file system.
    #[error("{context}")]
    Io {
        /// What the store was doing.
        context: String,
        /// The host error.
        #[source]
        source: io::Error,
    },
    /// A flush to disk failed earlier; the store refuses writes until it is reopened.
    #[error("store refuses writes after an fsync failure; reopen it")]
    Poisoned,
    /// A crash injected by a test at a numbered crash point.
    #[error("injected crash at {0}")]
    InjectedCrash(&'static str),
}

impl StoreError {
    /// Wraps an I/O error with what the store was doing.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }

    /// The Linux errno that best describes this error, for `Rlerror`.
    pub fn errno(&self) -> i32 {
        match self {
            StoreError::NotFound(_) | StoreError::NoStore(_) => libc::ENOENT,
            StoreError::AlreadyExists(_) | StoreError::StoreExists(_) => libc::EEXIST,
            StoreError::IdOutOfRange { .. } => libc::ERANGE,
            StoreError::InvalidArgument(_) => libc::EINVAL,
            StoreError::Locked(_) => libc::EBUSY,
            StoreError::CorruptSuperblock { .. }
            | StoreError::CorruptName { .. }
            | StoreError::CorruptDirectory { .. } => libc::EUCLEAN,
            StoreError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            StoreError::Poisoned => libc::EROFS,
            StoreError::InjectedCrash(_) => libc::EIO,
        }
    }

    /// True for errors that say "no such object".
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound(_))
    }
}

/// An error followed by its whole `source()` chain (`"fsync of object 0x5: No space left on
/// device (os error 28)"`), for logs and command-line reports: the `Display` of a wrapping
/// error names only its own layer, so logging `%e` alone would drop the cause.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_io_error_names_context_and_os_cause() {
        let e = StoreError::io(
            "fsync of object 0x5",
            io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert_eq!(e.to_string(), "fsync of object 0x5");
        let c = chain(&e);
        assert!(c.starts_with("fsync of object 0x5: "), "{c}");
        assert!(c.contains("os error 28"), "{c}");
    }

    #[test]
    fn errno_io_error_keeps_os_code() {
        let e = StoreError::io("x", io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.errno(), libc::ENOSPC);
        assert_eq!(StoreError::NotFound(ObjectId(3)).errno(), libc::ENOENT);
        assert_eq!(StoreError::Poisoned.errno(), libc::EROFS);
    }
}
