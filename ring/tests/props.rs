//! Property tests of the ring ends: wrap-around at every offset, every ring order, full rings
//! in both directions, and random (hostile) interface pages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use envoy_ring::layout::{IN_CONS, IN_PROD, OUT_CONS, OUT_PROD};
use envoy_ring::{RingError, RingMem, RingOrder, SharedMem, XEN_PAGE_SIZE};
use proptest::prelude::*;
use std::sync::atomic::Ordering;

fn ring_at(order: u32, start: u32) -> RingMem {
    let order = RingOrder::new(order).unwrap();
    let intf = SharedMem::anonymous(XEN_PAGE_SIZE).unwrap();
    let data = SharedMem::anonymous(order.data_len()).unwrap();
    let refs: Vec<u32> = (0..order.data_pages() as u32).collect();
    let r = RingMem::init(intf, data, order, &refs).unwrap();
    for off in [IN_CONS, IN_PROD, OUT_CONS, OUT_PROD] {
        r.intf()
            .atomic_u32(off)
            .unwrap()
            .store(start, Ordering::SeqCst);
    }
    r
}

fn msg(size: u32, seed: u8) -> Vec<u8> {
    let mut m: Vec<u8> = (0..size)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect();
    m[..4].copy_from_slice(&size.to_le_bytes());
    m
}

/// Sends `m` frontend → backend and back, starting both rings at `start`.
fn roundtrip(r: &RingMem, m: &[u8]) {
    let (mut f_req, mut f_rep) = r.frontend().unwrap();
    let (mut b_req, mut b_rep) = r.backend().unwrap();
    let split = m.len() / 3;
    assert!(f_req.write_message(&[&m[..split], &m[split..]]).unwrap());
    let got = b_req.read_message(u32::MAX).unwrap().unwrap();
    assert_eq!(&got[..], m);
    assert!(b_rep.write_message(&[&got]).unwrap());
    let back = f_rep.read_message(u32::MAX).unwrap().unwrap();
    assert_eq!(&back[..], m);
    assert_eq!(f_rep.available().unwrap(), 0);
}

#[test]
fn ring_order0_wraps_at_every_offset() {
    let size = RingOrder::new(0).unwrap().ring_size();
    for start in 0..size {
        let r = ring_at(0, start);
        roundtrip(&r, &msg(1000, start as u8));
    }
}

#[test]
fn ring_every_order_full_ring_both_directions() {
    for order in 0..=9 {
        let r = ring_at(order, u32::MAX - 100);
        let size = r.ring_size();
        let (mut f_req, mut f_rep) = r.frontend().unwrap();
        let (mut b_req, mut b_rep) = r.backend().unwrap();
        let full = msg(size, order as u8);
        assert!(f_req.write_message(&[&full]).unwrap(), "order {order}");
        assert!(!f_req.write_message(&[&msg(7, 0)]).unwrap(), "out full");
        assert!(b_rep.write_message(&[&full]).unwrap());
        assert!(!b_rep.write_message(&[&msg(7, 0)]).unwrap(), "in full");
        assert_eq!(b_req.read_message(u32::MAX).unwrap().unwrap(), full);
        assert_eq!(f_rep.read_message(u32::MAX).unwrap().unwrap(), full);
        assert!(f_req.write_message(&[&msg(7, 0)]).unwrap());
        assert!(b_rep.write_message(&[&msg(7, 0)]).unwrap());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn ring_any_order_any_offset_roundtrips(order in 0u32..=9, start: u32, frac in 0.0f64..=1.0) {
        let r = ring_at(order, start);
        let size = 7 + ((r.ring_size() - 7) as f64 * frac) as u32;
        roundtrip(&r, &msg(size, start as u8));
    }

    #[test]
    fn ring_stream_of_messages_keeps_order(order in 0u32..=3, start: u32,
                                           sizes in proptest::collection::vec(7u32..2048, 1..40)) {
        let r = ring_at(order, start);
        let (mut f_req, _) = r.frontend().unwrap();
        let (mut b_req, _) = r.backend().unwrap();
        let mut sent = std::collections::VecDeque::new();
        for (k, s) in sizes.iter().enumerate() {
            let m = msg(*s, k as u8);
            while !f_req.write_message(&[&m]).unwrap() {
                let got = b_req.read_message(u32::MAX).unwrap().unwrap();
                prop_assert_eq!(Some(got.to_vec()), sent.pop_front());
            }
            sent.push_back(m);
        }
        while let Some(got) = b_req.read_message(u32::MAX).unwrap() {
            prop_assert_eq!(Some(got.to_vec()), sent.pop_front());
        }
        prop_assert!(sent.is_empty());
    }

    /// A backend reading a ring whose interface page and data are random bytes never panics,
    /// never returns more than the limits allow, and reports peer faults as such.
    #[test]
    fn ring_backend_on_random_interface_page_never_panics(
        intf_bytes in proptest::collection::vec(any::<u8>(), XEN_PAGE_SIZE),
        data_seed: u8, order in 0u32..=4, msize in 7u32..70_000,
    ) {
        let o = RingOrder::new(order).unwrap();
        let intf = SharedMem::anonymous(XEN_PAGE_SIZE).unwrap();
        intf.write(0, &intf_bytes).unwrap();
        let data = SharedMem::anonymous(o.data_len()).unwrap();
        let junk: Vec<u8> = (0..o.data_len()).map(|i| (i as u8).wrapping_mul(data_seed)).collect();
        data.write(0, &junk).unwrap();
        // attach() validates the order the page claims.
        match RingMem::attach(intf.clone(), data.clone()) {
            Ok(r) => prop_assert!(r.order().get() <= 9),
            Err(e) => prop_assert!(matches!(e, RingError::BadRingOrder(_) | RingError::Layout(_))),
        }
        let r = RingMem::with_order(intf, data, o).unwrap();
        let (mut req, mut rep) = r.backend().unwrap();
        for _ in 0..4 {
            match req.read_message(msize) {
                Ok(Some(m)) => {
                    prop_assert!(m.len() as u32 <= msize.min(o.ring_size()));
                    prop_assert!(m.len() >= 7);
                }
                Ok(None) => break,
                Err(e) => { prop_assert!(e.is_peer_fault()); break; }
            }
        }
        match rep.write_message(&[&msg(7, 1)]) {
            Ok(_) => {}
            Err(e) => prop_assert!(e.is_peer_fault()),
        }
    }
}
