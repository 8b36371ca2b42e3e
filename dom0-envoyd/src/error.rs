//! The one error type of the file server, [`FsError`].
//!
//! Handlers return `Result<_, FsError>`; [`crate::errno`] is the only place that turns an error
//! into a wire errno. Store failures keep their cause through `#[source]`.

use envoy_storage::StoreError;

/// Why a 9P request failed.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// No such file or directory.
    #[error("no such file or directory")]
    NotFound,
    /// The name exists already.
    #[error("file exists")]
    Exists,
    /// A path component or target is not a directory.
    #[error("not a directory")]
    NotDir,
    /// A directory where a non-directory is needed.
    #[error("is a directory")]
    IsDir,
    /// Directory not empty.
    #[error("directory not empty")]
    NotEmpty,
    /// Mode bits deny the access.
    #[error("permission denied")]
    Access,
    /// The operation needs ownership or root.
    #[error("operation not permitted")]
    Perm,
    /// A request argument is invalid.
    #[error("invalid argument: {0}")]
    Inval(&'static str),
    /// A name longer than 255 bytes.
    #[error("file name too long")]
    NameTooLong,
    /// The fid is not in the connection's table (never created, clunked or removed).
    #[error("unknown fid {0}")]
    BadFid(u32),
    /// A newfid that is already in use.
    #[error("fid {0} is already in use")]
    FidInUse(u32),
    /// The connection holds the maximum number of fids.
    #[error("too many fids on this connection (limit {0})")]
    TooManyFids(usize),
    /// The fid is in the wrong state (not open, already open, opened for the other direction).
    #[error("fid not usable for this operation: {0}")]
    FidState(&'static str),
    /// Not supported by this server.
    #[error("operation not supported: {0}")]
    NotSupported(&'static str),
    /// Tauth on a server that needs no authentication.
    #[error("authentication not required")]
    AuthNotRequired,
    /// No such extended attribute.
    #[error("no such attribute")]
    NoData,
    /// A value outside what the file system can represent (size, offset).
    #[error("value too large: {0}")]
    TooBig(&'static str),
    /// A lock conflicts (non-blocking lock request).
    #[error("resource temporarily unavailable")]
    Again,
    /// The name is busy (e.g. removing the attach root).
    #[error("device or resource busy")]
    Busy,
    /// The tree is read-only (a snapshot).
    #[error("read-only file system")]
    ReadOnly,
    /// A per-connection buffer budget is exhausted.
    #[error("no space left for pending attribute values")]
    NoSpace,
    /// An xattr name too long.
    #[error("attribute name too long")]
    Range,
    /// An xattr value too large.
    #[error("attribute value too large")]
    XattrTooBig,
    /// Source and target are in different attaches (mounts).
    #[error("cross-device link or rename")]
    CrossDevice,
    /// The request was cancelled by the connection going away.
    #[error("interrupted")]
    Interrupted,
    /// The object store failed.
    #[error("object store: {0}")]
    Store(#[source] StoreError),
    /// A directory object does not parse.
    #[error("corrupt directory object")]
    Corrupt(#[source] envoy_storage::dirfmt::DirFormatError),
}

impl From<StoreError> for FsError {
    fn from(e: StoreError) -> Self {
        FsError::Store(e)
    }
}

/// Result alias for handlers.
pub type FsResult<T> = Result<T, FsError>;
