//! Xenstore: the [`Xenstore`] trait the backend is written against, the wire protocol
//! ([`wire`]) and a client speaking it ([`client::XsClient`]) over the xenstored socket
//! (`/var/run/xenstored/socket`) or the kernel's `/dev/xen/xenbus` device.
//!
//! Watches: [`Xenstore::watch`] registers `(path, token)`; every change at or below `path`
//! (and the registration itself: xenstored fires each watch once immediately) queues a
//! [`WatchEvent`] that [`Xenstore::next_event`] returns. Transactions: start, pass the
//! [`TxId`] to reads/writes, end with commit; [`XsError::is_again`] says the whole
//! transaction must be retried.

pub mod client;
pub mod wire;

use std::time::Duration;

pub use crate::ids::TxId;
pub use wire::XsErrno;

/// A fired watch: the path that changed and the token given to [`Xenstore::watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The changed path (as the daemon reports it).
    pub path: String,
    /// The registration's token.
    pub token: String,
}

/// A failed xenstore operation.
#[derive(Debug, thiserror::Error)]
pub enum XsError {
    /// Talking to the daemon failed.
    #[error("xenstore {op}: i/o error")]
    Io {
        /// The operation.
        op: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The daemon answered with an error.
    #[error("xenstore {op} {path}: {errno}")]
    Remote {
        /// The operation.
        op: &'static str,
        /// The path (or the transaction).
        path: String,
        /// The daemon's error name.
        errno: XsErrno,
    },
    /// The reply did not make sense.
    #[error("xenstore {op}: malformed reply: {detail}")]
    Protocol {
        /// The operation.
        op: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The request would exceed the 4096-byte payload limit or a path limit.
    #[error("xenstore {op}: request of {len} bytes is too long")]
    TooLong {
        /// The operation.
        op: &'static str,
        /// Its payload length.
        len: usize,
    },
    /// The connection to the daemon is gone.
    #[error("xenstore connection closed")]
    Closed,
}

impl XsError {
    /// The node does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            XsError::Remote {
                errno: XsErrno::NoEnt,
                ..
            }
        )
    }

    /// The connection itself failed (everything after will fail too), as opposed to the
    /// daemon refusing one request.
    pub fn is_fatal(&self) -> bool {
        matches!(self, XsError::Io { .. } | XsError::Closed)
    }

    /// A transaction conflicted: retry it from the start.
    pub fn is_again(&self) -> bool {
        matches!(
            self,
            XsError::Remote {
                errno: XsErrno::Again,
                ..
            }
        )
    }
}

/// What the 9pfs backend needs from xenstore. Implemented by [`client::XsClient`] (real
/// daemon, or the simulator's daemon over a socket) and by the simulator's in-process handle.
pub trait Xenstore: Send + Sync {
    /// Reads a node's value.
    fn read(&self, tx: TxId, path: &str) -> Result<Vec<u8>, XsError>;
    /// Writes a node (creating missing parents).
    fn write(&self, tx: TxId, path: &str, value: &[u8]) -> Result<(), XsError>;
    /// Lists a node's children (names, not paths).
    fn directory(&self, tx: TxId, path: &str) -> Result<Vec<String>, XsError>;
    /// Removes a node and everything below it.
    fn rm(&self, tx: TxId, path: &str) -> Result<(), XsError>;
    /// Registers a watch; it fires once right away.
    fn watch(&self, path: &str, token: &str) -> Result<(), XsError>;
    /// Removes a watch.
    fn unwatch(&self, path: &str, token: &str) -> Result<(), XsError>;
    /// Starts a transaction.
    fn transaction_start(&self) -> Result<TxId, XsError>;
    /// Commits (`commit = true`) or aborts a transaction; a conflict is [`XsError::is_again`].
    fn transaction_end(&self, tx: TxId, commit: bool) -> Result<(), XsError>;
    /// The next watch event, waiting at most `timeout`. `Ok(None)` on timeout;
    /// [`XsError::Closed`] once the connection is gone.
    fn next_event(&self, timeout: Duration) -> Result<Option<WatchEvent>, XsError>;
}

/// Convenience reads on top of [`Xenstore`].
pub trait XenstoreExt: Xenstore {
    /// Reads a node; a missing node is `None`.
    fn read_opt(&self, tx: TxId, path: &str) -> Result<Option<Vec<u8>>, XsError> {
        match self.read(tx, path) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads a node as a decimal `u32` (surrounding whitespace/NUL ignored); a missing node is
    /// `None`, a value that is not a number is [`XsError::Protocol`].
    fn read_u32(&self, tx: TxId, path: &str) -> Result<Option<u32>, XsError> {
        let Some(v) = self.read_opt(tx, path)? else {
            return Ok(None);
        };
        parse_u32(&v).map(Some).ok_or_else(|| XsError::Protocol {
            op: "READ",
            detail: format!("{path} = {:?} is not a number", String::from_utf8_lossy(&v)),
        })
    }

    /// Writes a string.
    fn write_str(&self, tx: TxId, path: &str, value: &str) -> Result<(), XsError> {
        self.write(tx, path, value.as_bytes())
    }
}

impl<T: Xenstore + ?Sized> XenstoreExt for T {}

/// Parses a decimal `u32` node value.
pub fn parse_u32(v: &[u8]) -> Option<u32> {
    std::str::from_utf8(v)
        .ok()?
        .trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .parse()
        .ok()
}

impl<T: Xenstore + ?Sized> Xenstore for std::sync::Arc<T> {
    fn read(&self, tx: TxId, path: &str) -> Result<Vec<u8>, XsError> {
        (**self).read(tx, path)
    }
    fn write(&self, tx: TxId, path: &str, value: &[u8]) -> Result<(), XsError> {
        (**self).write(tx, path, value)
    }
    fn directory(&self, tx: TxId, path: &str) -> Result<Vec<String>, XsError> {
        (**self).directory(tx, path)
    }
    fn rm(&self, tx: TxId, path: &str) -> Result<(), XsError> {
        (**self).rm(tx, path)
    }
    fn watch(&self, path: &str, token: &str) -> Result<(), XsError> {
        (**self).watch(path, token)
    }
    fn unwatch(&self, path: &str, token: &str) -> Result<(), XsError> {
        (**self).unwatch(path, token)
    }
    fn transaction_start(&self) -> Result<TxId, XsError> {
        (**self).transaction_start()
    }
    fn transaction_end(&self, tx: TxId, commit: bool) -> Result<(), XsError> {
        (**self).transaction_end(tx, commit)
    }
    fn next_event(&self, timeout: Duration) -> Result<Option<WatchEvent>, XsError> {
        (**self).next_event(timeout)
    }
}
