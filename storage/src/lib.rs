//! Envoy's object layer.
//!
//! * [`engine`] — data I/O engines (io_uring and a synchronous fallback).

pub mod engine;
