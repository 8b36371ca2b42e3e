//! Envoy on Xen: the dom0 side of the 9pfs PV transport (`trans=xen`), with no libxen.
//!
//! # Map
//!
//! * [`ids`]: newtypes that cross the hypervisor boundary ([`DomId`], [`GrantRef`],
//!   [`EvtchnPort`], [`TxId`]) and [`XenbusState`].
//! * [`xenstore`]: the [`xenstore::Xenstore`] trait, the xenstored wire protocol and a client
//!   for the daemon socket or `/dev/xen/xenbus`.
//! * [`hv`]: the other two hypervisor seams, [`hv::GrantMapper`] and [`hv::EventChannels`];
//!   [`sys`] implements them on `/dev/xen/gntdev` and `/dev/xen/evtchn` (RAII, all kernel
//!   `unsafe` there).
//! * [`backend`]: the xenbus state machine (features, InitWait, map rings on Initialised,
//!   Connected, Closing/Closed, guest death) that turns each guest device into a
//!   [`backend::XenConnection`].
//! * [`stream`]: one 9P byte stream over N rings (pump thread per ring, replies on ring
//!   `tag % N`, whole frames only), on top of `envoy_ring`'s ring layout and ends.
//! * [`sim`]: a simulated Xen usable across processes (xenstore over the real wire protocol,
//!   memfd guest memory with a v1 grant table, eventfd event channels, all passed with
//!   `SCM_RIGHTS`); [`emu`]: a Linux-like frontend (bin `xen-frontend-emu`).
//!
//! envoyd uses it through `dom0-envoyd/src/transport/xen.rs` (`--xen`,
//! `--listen xen-sim:DIR`). The protocol reference is `/work/shared/XEN-9PFS.md`.
//!
//! # Limits
//!
//! The real-hypervisor path (`sys`, `XsClient` on a real xenstored) is written to the ABI in
//! that reference but has only been exercised against the simulator; the ioctl numbers
//! assume the generic `_IOC` encoding (x86-64, arm64).

pub mod ids;
pub mod xenstore;

pub use ids::{DomId, EvtchnPort, GrantRef, TxId, XenbusState};
pub mod backend;
pub mod emu;
pub mod hv;
pub mod sim;
pub mod stream;
pub mod sys;
