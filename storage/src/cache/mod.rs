//! The store's two bounded caches (dissertation §5.3.2: both strictly least-recently-used):
//!
//! * [`fd`] — open object files, so a stream of reads costs no `open`;
//! * [`dir`] — parsed leaf-directory listings, so `stat` costs no syscall beyond one `fstat`.

pub mod dir;
pub mod fd;
pub mod lru;
