//! Requests held in ring memory through the blocking reader ([`RingReader::try_hold_message`]):
//! only the asked-for type is held, one at a time, its space comes back on release, and a
//! message still held when the connection closes publishes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use envoy_ring::{NoBell, Producer, RingMem, RingOrder, RingReader, SharedMem, Waiter};

const TWRITE: u8 = 118;
const TCLUNK: u8 = 120;

fn setup() -> (Producer, RingReader, Arc<AtomicBool>) {
    let order = RingOrder::new(0).unwrap();
    let intf = SharedMem::anonymous(envoy_ring::XEN_PAGE_SIZE).unwrap();
    let data = SharedMem::anonymous(order.data_len()).unwrap();
    let refs: Vec<u32> = (0..order.data_pages() as u32).collect();
    let ring = RingMem::init(intf, data, order, &refs).unwrap();
    let (f_req, _) = ring.frontend().unwrap();
    let (b_req, _) = ring.backend().unwrap();
    let closed = Arc::new(AtomicBool::new(false));
    let c = Arc::clone(&closed);
    let reader = RingReader::new(
        b_req,
        Arc::new(NoBell),
        Waiter::new(Duration::ZERO, Duration::from_millis(1)),
        Arc::new(move || c.load(Ordering::SeqCst)),
    );
    (f_req, reader, closed)
}

fn msg(size: u32, ty: u8) -> Vec<u8> {
    let mut m: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    m[..4].copy_from_slice(&size.to_le_bytes());
    m[4] = ty;
    m
}

#[test]
fn reader_holds_only_named_type_one_at_a_time_space_back_on_release() {
    let (mut prod, mut reader, _closed) = setup();
    let clunk = msg(11, TCLUNK);
    let write = msg(600, TWRITE);
    assert!(prod.write_message(&[&clunk]).unwrap());
    assert!(prod.write_message(&[&write]).unwrap());
    assert!(reader.wait_message(4096).unwrap());
    assert!(
        reader.try_hold_message(4096, TWRITE).unwrap().is_none(),
        "a Tclunk is next"
    );
    assert_eq!(reader.try_read_message(4096).unwrap().unwrap(), clunk);
    let held = reader.try_hold_message(4096, TWRITE).unwrap().unwrap();
    assert_eq!(held.get().unwrap().to_bytes().unwrap(), write);
    assert_eq!(
        prod.free().unwrap(),
        2048 - 600,
        "the Tclunk's space is back, not the Twrite's"
    );
    let write2 = msg(300, TWRITE);
    assert!(prod.write_message(&[&write2]).unwrap());
    assert!(
        reader.try_hold_message(4096, TWRITE).unwrap().is_none(),
        "one held message at a time"
    );
    assert_eq!(reader.try_read_message(4096).unwrap().unwrap(), write2);
    assert_eq!(prod.free().unwrap(), 2048 - 900);
    held.release().unwrap();
    assert_eq!(prod.free().unwrap(), 2048);
}

#[test]
fn reader_hold_after_close_publishes_nothing() {
    let (mut prod, mut reader, closed) = setup();
    assert!(prod.write_message(&[&msg(500, TWRITE)]).unwrap());
    let held = reader.try_hold_message(4096, TWRITE).unwrap().unwrap();
    closed.store(true, Ordering::SeqCst);
    drop(held);
    assert_eq!(
        prod.free().unwrap(),
        2048 - 500,
        "a closed ring's indexes are left alone"
    );
    assert!(
        !reader.wait_message(4096).unwrap(),
        "closed: no more messages"
    );
}

#[test]
fn reader_wait_message_refuses_oversized_message() {
    let (mut prod, mut reader, _closed) = setup();
    assert!(prod.write_message(&[&msg(1000, TWRITE)]).unwrap());
    assert!(reader.wait_message(512).is_err());
    assert!(reader.try_hold_message(512, TWRITE).is_err());
}
