//! Envoy on Xen: the dom0 side of the 9pfs PV transport (`trans=xen`).

pub mod ids;
pub mod xenstore;

pub use ids::{DomId, EvtchnPort, GrantRef, TxId, XenbusState};
pub mod backend;
pub mod emu;
pub mod hv;
pub mod sim;
pub mod stream;
pub mod sys;
