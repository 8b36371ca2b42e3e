//! Ring files (`ring:PATH`): attach/serve/detach/recycle, blocking streams across threads,
//! hostile clients confined to their ring, garbage files rejected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{IoSlice, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use envoy_ring::file::{client_state, server_state, RingFile};
use envoy_ring::layout::OUT_PROD;
use envoy_ring::{RingError, RingOrder, Waiter};

fn msg(size: u32, seed: u8) -> Vec<u8> {
    let mut m: Vec<u8> = (0..size).map(|i| (i as u8) ^ seed).collect();
    m[..4].copy_from_slice(&size.to_le_bytes());
    if m.len() > 4 {
        m[4] = 118; // Twrite: never a Tversion, whose msize a backend reader clamps
    }
    m
}

fn file(nrings: u32, order: u32) -> (tempfile::TempDir, RingFile) {
    let d = tempfile::tempdir().unwrap();
    let f = RingFile::create(&d.path().join("r"), nrings, RingOrder::new(order).unwrap()).unwrap();
    (d, f)
}

static NO_STOP: AtomicBool = AtomicBool::new(false);

#[test]
fn ring_file_echo_across_threads_with_wrap_and_full_rings() {
    let (_d, f) = file(1, 0); // 2 KiB per direction: most messages wrap, rings fill up
    let client = f.attach(Waiter::default()).unwrap();
    let i = f
        .wait_attach(&NO_STOP, Duration::from_secs(5))
        .unwrap()
        .unwrap();
    assert_eq!(i, 0);
    let mut b = f.serve(i, Waiter::default()).unwrap();
    let server = std::thread::spawn(move || {
        let mut n = 0;
        while let Some(m) = b.reader.read_message(1 << 20).unwrap() {
            b.writer.send_message(&[&m[..5], &m[5..]]).unwrap();
            n += 1;
        }
        b.closer.close();
        n
    });
    let (mut r, mut w, guard) = client.into_parts().unwrap();
    let msgs: Vec<Vec<u8>> = (0..300)
        .map(|k| msg(7 + (k * 37) % 2000, k as u8))
        .collect();
    let to_send = msgs.clone();
    let sender = std::thread::spawn(move || {
        for m in &to_send {
            // Header split from the body, as the 9P writers do.
            let n = w
                .write_vectored(&[IoSlice::new(&m[..7]), IoSlice::new(&m[7..])])
                .unwrap();
            assert_eq!(n, m.len());
        }
        w
    });
    for m in &msgs {
        let mut got = vec![0u8; m.len()];
        r.read_exact(&mut got).unwrap();
        assert_eq!(&got, m);
    }
    let _w = sender.join().unwrap();
    guard.detach();
    assert_eq!(server.join().unwrap(), 300);
    // Detached + closed: the next scan recycles the ring for a new client.
    assert_eq!(
        f.states(0).unwrap(),
        (client_state::DETACHED, server_state::CLOSED)
    );
    assert_eq!(f.poll_attach().unwrap(), None);
    assert_eq!(
        f.states(0).unwrap(),
        (client_state::FREE, server_state::IDLE)
    );
    let again = f.attach(Waiter::default()).unwrap();
    assert_eq!(again.index, 0);
}

#[test]
fn ring_file_writer_one_byte_writes_publish_only_whole_message() {
    let (_d, f) = file(1, 1);
    let client = f.attach(Waiter::default()).unwrap();
    let i = f
        .wait_attach(&NO_STOP, Duration::from_secs(5))
        .unwrap()
        .unwrap();
    let peek = f.ring(i).unwrap();
    let (_r, mut w, _g) = client.into_parts().unwrap();
    let m = msg(100, 1);
    for (k, byte) in m.iter().enumerate() {
        w.write_all(&[*byte]).unwrap();
        let (mut req, _) = peek.backend().unwrap();
        let visible = req.available().unwrap();
        if k + 1 < m.len() {
            assert_eq!(visible, 0, "published early after byte {k}");
        } else {
            assert_eq!(req.read_message(4096).unwrap().unwrap(), m);
        }
    }
}

#[test]
fn ring_file_rings_claimed_in_turn_then_none_free() {
    let (_d, f) = file(2, 0);
    let a = f.attach(Waiter::default()).unwrap();
    let b = f.attach(Waiter::default()).unwrap();
    assert_eq!((a.index, b.index), (0, 1));
    assert!(matches!(
        f.attach(Waiter::default()),
        Err(RingError::NoFreeRing)
    ));
    let reopened = RingFile::open(f.path()).unwrap();
    assert_eq!(reopened.nrings(), 2);
    assert!(matches!(
        reopened.attach(Waiter::default()),
        Err(RingError::NoFreeRing)
    ));
}

#[test]
fn ring_file_hostile_client_confined_to_its_ring() {
    let (_d, f) = file(2, 0);
    let bad = f.attach(Waiter::default()).unwrap();
    let good = f.attach(Waiter::default()).unwrap();
    let i0 = f
        .wait_attach(&NO_STOP, Duration::from_secs(5))
        .unwrap()
        .unwrap();
    let i1 = f
        .wait_attach(&NO_STOP, Duration::from_secs(5))
        .unwrap()
        .unwrap();
    assert_eq!((i0, i1), (0, 1));
    let mut s0 = f.serve(0, Waiter::default()).unwrap();
    let mut s1 = f.serve(1, Waiter::default()).unwrap();
    // The hostile client claims 1 GiB of requests are queued.
    f.ring(bad.index)
        .unwrap()
        .intf()
        .atomic_u32(OUT_PROD)
        .unwrap()
        .store(1 << 30, Ordering::SeqCst);
    let e = s0.reader.read(&mut [0u8; 64]).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    s0.closer.close();
    assert_eq!(f.states(0).unwrap().1, server_state::CLOSED);
    // The other ring is unaffected.
    let (mut r, mut w, _g) = good.into_parts().unwrap();
    let m = msg(64, 9);
    w.write_all(&m).unwrap();
    let got = s1.reader.read_message(8192).unwrap().unwrap();
    s1.writer.send_message(&[&got]).unwrap();
    let mut back = vec![0u8; 64];
    r.read_exact(&mut back).unwrap();
    assert_eq!(back, m);
    // The hostile client sees the ring closed: EOF on read, broken pipe on write.
    let (mut br, mut bw, _bg) = bad.into_parts().unwrap();
    assert_eq!(br.read(&mut [0u8; 8]).unwrap(), 0);
    assert!(bw.write_all(&msg(8, 0)).is_err());
}

#[test]
fn ring_file_oversized_message_rejected_by_reader() {
    let (_d, f) = file(1, 0);
    let c = f.attach(Waiter::default()).unwrap();
    let i = f
        .wait_attach(&NO_STOP, Duration::from_secs(5))
        .unwrap()
        .unwrap();
    let mut s = f.serve(i, Waiter::default()).unwrap();
    let (_r, mut w, _g) = c.into_parts().unwrap();
    w.write_all(&msg(1500, 0)).unwrap();
    assert!(matches!(
        s.reader.read_message(1024),
        Err(RingError::MessageTooLarge {
            size: 1500,
            limit: 1024
        })
    ));
    // And a writer refuses a message that can never fit in the ring.
    assert!(w.write_all(&msg(4096, 0)).is_err());
}

#[test]
fn ring_file_garbage_or_short_file_rejected() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("junk");
    std::fs::write(&p, vec![0xA5u8; 8192]).unwrap();
    assert!(matches!(RingFile::open(&p), Err(RingError::BadFile(_))));
    std::fs::write(&p, b"short").unwrap();
    assert!(matches!(RingFile::open(&p), Err(RingError::BadFile(_))));
    let f = RingFile::create(&p, 2, RingOrder::new(3).unwrap()).unwrap();
    drop(f);
    let len = std::fs::metadata(&p).unwrap().len();
    let fh = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    fh.set_len(len - 4096).unwrap();
    assert!(matches!(RingFile::open(&p), Err(RingError::BadFile(_))));
    // Header claims a ring order above 9.
    fh.set_len(len).unwrap();
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[16..20].copy_from_slice(&12u32.to_le_bytes());
    std::fs::write(&p, &bytes).unwrap();
    assert!(matches!(
        RingFile::open(&p),
        Err(RingError::BadRingOrder(12))
    ));
}

#[test]
fn ring_file_wait_attach_stops_on_flag() {
    let (_d, f) = file(1, 0);
    let stop = AtomicBool::new(true);
    assert_eq!(f.wait_attach(&stop, Duration::from_secs(5)).unwrap(), None);
    let stop = AtomicBool::new(false);
    let t = std::time::Instant::now();
    assert_eq!(
        f.wait_attach(&stop, Duration::from_millis(150)).unwrap(),
        None
    );
    assert!(t.elapsed() >= Duration::from_millis(150));
}

#[test]
fn ring_file_backend_clamps_tversion_msize_to_ring() {
    let (_d, f) = file(1, 0); // 2 KiB per direction
    let c = f.attach(Waiter::default()).unwrap();
    let i = f
        .wait_attach(&NO_STOP, Duration::from_secs(5))
        .unwrap()
        .unwrap();
    let mut s = f.serve(i, Waiter::default()).unwrap();
    let (_r, mut w, _g) = c.into_parts().unwrap();
    // Tversion tag NOTAG msize 1 MiB "9P2000.L", then a Tclunk, then another Tversion.
    let mut tv = Vec::new();
    tv.extend_from_slice(&21u32.to_le_bytes());
    tv.push(100);
    tv.extend_from_slice(&0xFFFFu16.to_le_bytes());
    tv.extend_from_slice(&(1u32 << 20).to_le_bytes());
    tv.extend_from_slice(&8u16.to_le_bytes());
    tv.extend_from_slice(b"9P2000.L");
    let clunk = [11u8, 0, 0, 0, 120, 1, 0, 100, 0, 0, 0]; // fid 100: a 100 in the body
    w.write_all(&tv).unwrap();
    w.write_all(&clunk).unwrap();
    w.write_all(&tv).unwrap();
    let mut got = vec![0u8; 21 + 11 + 21];
    s.reader.read_exact(&mut got).unwrap();
    let msize = |m: &[u8]| u32::from_le_bytes([m[7], m[8], m[9], m[10]]);
    assert_eq!(msize(&got[..21]), 2048);
    assert_eq!(&got[21..32], &clunk, "other messages pass unchanged");
    assert_eq!(msize(&got[32..]), 2048);
}
