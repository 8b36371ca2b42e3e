//! Envoy's guest side.
//!
//! * [`client`]: a blocking, pipelined 9P client library (9P2000.L and 9P2000.u) that tests
//!   and benchmarks use to drive 9P servers.
//! * [`endpoint`]: where the host's envoy is (`tcp:`, `unix:`, `vsock:`, `serial:`,
//!   `serial-name:`) and how to open a byte stream to it.
//!
//! The `envoy-shim` binary (see the README) relays between the guest kernel's own 9P client
//! and the host.

pub mod client;
pub mod endpoint;

pub use client::{Client, ClientError, Negotiated};
pub use endpoint::{Connection, Endpoint};
