//! Envoy shared-memory rings (the Xen 9pfs data interface over any shared mapping).
