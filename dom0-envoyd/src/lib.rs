//! `envoyd`: the single-node Envoy file server.
//!
//! A 9P2000.L / 9P2000.u server over Envoy's object store that a stock Linux guest mounts as a
//! POSIX file system. Requests flow
//!
//! ```text
//! transport (tcp, unix) → session (frames, version, tags, fids) → worker pool
//!   → ops (one file per group of 9P messages) → territory lookup → namespace (claims,
//!     directories, freeze/thaw) → envoy_storage::ObjectStore
//! ```
//!
//! # Where each 9P message is handled
//!
//! | messages | module |
//! |---|---|
//! | Tversion, Tflush, tag table, fid table, framing | [`session`] |
//! | Tauth, Tattach | [`ops::attach`] |
//! | Twalk, Tclunk | [`ops::walk`] |
//! | Tlopen, Tlcreate, Topen, Tcreate, Tread, Twrite, Tfsync, Tremove | [`ops::file`] |
//! | Treaddir, Tmkdir, Tunlinkat, 9P2000.u directory reads | [`ops::dir`] |
//! | Tgetattr, Tsetattr, Tstat, Twstat | [`ops::attr`] |
//! | Tsymlink, Treadlink, Tmknod, Tlink, Trename, Trenameat | [`ops::link`] |
//! | Txattrwalk, Txattrcreate | [`ops::xattr`] |
//! | Tlock, Tgetlock | [`ops::lock`] |
//! | Tstatfs | [`ops::statfs`] |
//!
//! Errors: handlers return [`error::FsError`]; [`errno`] maps it to the wire once.

pub mod access;
pub mod cache;
pub mod config;
pub mod control;
pub mod ctl_tree;
pub mod errno;
pub mod error;
pub mod images;
pub mod namespace;
pub mod ops;
pub mod server;
pub mod session;
pub mod stats;
pub mod territory;
pub mod transport;

pub use config::Config;
pub use server::{Server, ServerHandle, Stats};
