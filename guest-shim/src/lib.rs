//! Envoy's guest side.
//!
//! * [`client`]: a blocking, pipelined 9P client library (9P2000.L and 9P2000.u) that tests
//!   and benchmarks use to drive 9P servers.
//! * [`endpoint`]: where the host's envoy is (`tcp:`, `unix:`, `vsock:`, `serial:`,
//!   `serial-name:`, `ivshmem:`) and how to open a byte stream to it.
//! * [`ivshmem`]: the frontend of an envoy shared-memory ring reached through QEMU's
//!   ivshmem-plain BAR.
//! * [`relay`]: the frame-aligned byte relay between the guest kernel's 9P client and the
//!   host, including sessions over a persistent serial stream.
//! * [`mount`]: the `trans=fd` mount option string and the `mount(2)` call.
//! * [`init`]: `envoy-shim init`, the initramfs init that boots a guest from an Envoy image.
//!
//! The `envoy-shim` binary (see the README) puts these together inside the guest.

pub mod client;
pub mod endpoint;
pub mod init;
pub mod ivshmem;
pub mod mount;
pub mod relay;

pub use client::{Client, ClientError, Negotiated};
pub use endpoint::{Connection, Endpoint};
