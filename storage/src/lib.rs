//! Envoy's object layer.
//!
//! * [`store`] — the on-disk object store ([`ObjectStore`]): a radix tree of directories
//!   indexed by object-ID bits ([`geometry`]), attributes in fixed-length leaf names
//!   ([`name`]), a superblock ([`superblock`]), bounded caches ([`cache`]).
//! * [`dirfmt`] — the directory object format that `clone` understands.
//! * [`engine`] — data I/O engines (io_uring and a synchronous fallback).
//! * [`check`] — offline consistency check of a store (`envoy-storaged check`).
//! * [`server`] / [`client`] — the stateless storage server and its blocking client;
//!   [`wire`] converts between store and protocol types.

pub mod cache;
pub mod check;
pub mod client;
pub mod crash;
pub mod dirfmt;
pub mod engine;
mod engine_select;
pub mod error;
pub mod geometry;
pub mod name;
pub mod object;
pub mod server;
pub mod store;
pub mod superblock;
mod sys;
pub mod wire;

pub use crash::CrashInjector;
pub use error::StoreError;
pub use object::{
    AttrChange, Attributes, IdRange, ObjectId, ObjectKind, ObjectStat, ReadRequest, StoreUsage,
    Timestamp, WriteRequest,
};
pub use store::{EngineChoice, ObjectStore, StoreOptions, MAX_IO};
