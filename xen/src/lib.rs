//! Envoy on Xen: the dom0 side of the 9pfs PV transport (`trans=xen`).
