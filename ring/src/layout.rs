//! The Xen 9pfs data interface, to the byte (`struct xen_9pfs_data_intf` from
//! `DEFINE_XEN_FLEX_RING_AND_INTF(xen_9pfs)`, Xen `io/ring.h` and `io/9pfs.h`).
//!
//! Interface page (one 4 KiB page per ring), all fields 32-bit little-endian:
//!
//! ```text
//! offset  size  field       written by
//!      0     4  in_cons     frontend (consumer of replies)
//!      4     4  in_prod     backend  (producer of replies)
//!      8    56  pad
//!     64     4  out_cons    backend  (consumer of requests)
//!     68     4  out_prod    frontend (producer of requests)
//!     72    56  pad
//!    128     4  ring_order  frontend
//!    132  4<<o  ref[]       frontend: grant refs of the data pages, in order
//! ```
//!
//! (The ASCII diagram in Xen's `9pfs.pandoc` puts `ring_order` at 72; it omits the second pad
//! and is wrong. The struct, which is what Linux and QEMU compile, has 128/132.)
//!
//! Data area: `2^ring_order` 4 KiB pages, virtually contiguous; the first half is `in`
//! (backend → frontend replies), the second half `out` (frontend → backend requests). Each
//! half is `XEN_FLEX_RING_SIZE(order) = 1 << (order + 11)` bytes. `ring_order` ≤ 9 because at
//! most (4096 − 132) / 4 = 991 refs fit in the page and the count is a power of two.
//!
//! Indexes are free-running 32-bit byte counters; the position is `idx & (size − 1)`. A
//! message may wrap around the end of its half.

use crate::RingError;

/// Xen ring pages are 4 KiB whatever the OS page size.
pub const XEN_PAGE_SIZE: usize = 4096;
/// Largest `ring_order` the protocol allows.
pub const MAX_RING_ORDER: u32 = 9;
/// Offset of `in_cons`.
pub const IN_CONS: usize = 0;
/// Offset of `in_prod`.
pub const IN_PROD: usize = 4;
/// Offset of `out_cons`.
pub const OUT_CONS: usize = 64;
/// Offset of `out_prod`.
pub const OUT_PROD: usize = 68;
/// Offset of `ring_order`.
pub const RING_ORDER: usize = 128;
/// Offset of `ref[0]`.
pub const REFS: usize = 132;
/// A 9P message header: `size[4] type[1] tag[2]`; `size` counts the header.
pub const MSG_HEADER: usize = 7;

/// A validated ring order (0..=9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RingOrder(u32);

impl RingOrder {
    /// Validates `order`.
    pub fn new(order: u32) -> Result<RingOrder, RingError> {
        if order > MAX_RING_ORDER {
            return Err(RingError::BadRingOrder(order));
        }
        Ok(RingOrder(order))
    }

    /// The raw order.
    pub fn get(self) -> u32 {
        self.0
    }

    /// Number of 4 KiB data pages (`2^order`).
    pub fn data_pages(self) -> usize {
        1 << self.0
    }

    /// Bytes of the whole data area (both halves).
    pub fn data_len(self) -> usize {
        self.data_pages() * XEN_PAGE_SIZE
    }

    /// Bytes of one direction (`XEN_FLEX_RING_SIZE`): `1 << (order + 11)`.
    pub fn ring_size(self) -> u32 {
        1 << (self.0 + 11)
    }
}

/// `XEN_FLEX_RING_SIZE`-style occupancy of a ring: bytes between `cons` and `prod`, or an
/// error when a peer-written index puts more than the ring size between them (impossible for
/// an honest peer).
pub fn queued(prod: u32, cons: u32, size: u32) -> Result<u32, RingError> {
    let q = prod.wrapping_sub(cons);
    if q > size {
        return Err(RingError::IndexOutOfRange { prod, cons, size });
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_order_sizes_match_xen_table() {
        let t = [
            (0, 1, 2048),
            (1, 2, 4096),
            (4, 16, 32768),
            (8, 256, 512 << 10),
        ];
        for (o, pages, size) in t {
            let r = RingOrder::new(o).unwrap();
            assert_eq!((r.data_pages(), r.ring_size()), (pages, size));
            assert_eq!(r.data_len(), 2 * size as usize);
        }
        assert_eq!(RingOrder::new(9).unwrap().ring_size(), 1 << 20);
        assert!(RingOrder::new(10).is_err());
        // The ref array of the largest order still fits in the interface page.
        assert!(REFS + 4 * RingOrder::new(9).unwrap().data_pages() <= XEN_PAGE_SIZE);
    }

    #[test]
    fn queued_wrapped_indexes_counted_hostile_rejected() {
        assert_eq!(queued(5, u32::MAX - 2, 2048).unwrap(), 8);
        assert_eq!(queued(2048, 0, 2048).unwrap(), 2048);
        assert!(queued(2049, 0, 2048).is_err());
        assert!(queued(0, 1, 2048).is_err(), "cons ahead of prod");
    }
}
