//! `guest_shim::client::Client` over a ring against a real envoyd: the waiting callers read
//! the reply ring themselves (one leader at a time, no reader thread), so every reply must
//! still reach exactly the caller that waits for it, flushes and timeouts must still finish
//! their requests, and the end of the connection must reach every waiter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use dom0_envoyd::config::{Config, Endpoint};
use dom0_envoyd::{Server, ServerHandle};
use envoy_proto::{Fid, Message, Tag};
use envoy_ring::file::{DetachGuard, RingFile};
use envoy_ring::Waiter;
use guest_shim::client::{Client, ClientError};

const ROOT: Fid = Fid(1);

fn server() -> (tempfile::TempDir, ServerHandle, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("guest.ring");
    let mut c = Config::for_dir(dir.path().join("store"));
    c.listen = vec![
        Endpoint::Ring(ring.clone()),
        Endpoint::Tcp("127.0.0.1:0".into()),
    ];
    let s = Server::start(c).unwrap();
    // Loopback TCP is an administrator on a fresh store: grant ring clients.
    let ep: guest_shim::endpoint::Endpoint =
        format!("tcp:{}", s.tcp_addr().unwrap()).parse().unwrap();
    let a = Client::connect_version(&ep, 65536, "9P2000.L").unwrap();
    a.attach(ROOT, Fid::NOFID, "root", "/", 0).unwrap();
    let f = a.alloc_fid();
    a.walk(ROOT, f, &[".access"]).unwrap();
    a.lopen(f, libc::O_RDWR as u32).unwrap();
    let old = a.read_all(f).unwrap();
    a.write_all(f, old.len() as u64, b"ring:* admin any\n")
        .unwrap();
    a.clunk(f).unwrap();
    (dir, s, ring)
}

fn ring_client(path: &std::path::Path) -> (Client, DetachGuard) {
    let f = RingFile::open(path).unwrap();
    let (r, w, guard) = f.attach(Waiter::default()).unwrap().into_parts().unwrap();
    let c = Client::from_ring(r, w, guest_shim::endpoint::Closer::Nothing);
    c.set_timeout(Some(Duration::from_secs(30)));
    c.handshake(256 * 1024, "9P2000.L").unwrap();
    c.attach(ROOT, Fid::NOFID, "user", "/default", 0).unwrap();
    (c, guard)
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(29).wrapping_add(seed) % 253) as u8)
        .collect()
}

#[test]
fn ring_client_threads_sharing_one_ring_each_get_their_own_replies() {
    let (_d, _s, path) = server();
    let (c, _g) = ring_client(&path);
    let data = pattern(1 << 20, 7);
    let d = c.alloc_fid();
    c.walk(ROOT, d, &[]).unwrap();
    c.lcreate(d, "f", libc::O_RDWR as u32, 0o644, 0).unwrap();
    c.write_all(d, 0, &data).unwrap();
    let (c, data) = (Arc::new(c), Arc::new(data));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (c, data) = (Arc::clone(&c), Arc::clone(&data));
            std::thread::spawn(move || {
                for i in 0..300u64 {
                    // Each thread reads its own offsets and sizes, so a reply handed to the
                    // wrong caller shows as wrong bytes; getattrs interleave other reply types.
                    let off = (t * 1_000_003 + i * 7_919) % (data.len() as u64);
                    let count = [1u32, 4096, 65_536, 200_000][((t + i) % 4) as usize];
                    let got = c.read(d, off, count).unwrap();
                    let end = (off as usize + count as usize).min(data.len());
                    assert!(got[..] == data[off as usize..end], "thread {t} read {i}");
                    if i % 7 == 0 {
                        assert_eq!(c.getattr(d, 0x7ff).unwrap().size, data.len() as u64);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(c.stray_replies(), 0);
    assert_eq!(c.outstanding(), 0, "every tag was collected");
}

#[test]
fn ring_client_pipelined_replies_collected_in_any_order() {
    let (_d, _s, path) = server();
    let (c, _g) = ring_client(&path);
    let d = c.alloc_fid();
    c.walk(ROOT, d, &[]).unwrap();
    // Many requests on the ring before any reply is read; then collected newest first, so
    // each wait files the replies of the others before its own arrives (or finds it filed).
    let tags: Vec<Tag> = (0..64)
        .map(|_| {
            c.send(
                envoy_proto::Tgetattr {
                    fid: d,
                    request_mask: 0x7ff,
                }
                .into(),
            )
            .unwrap()
        })
        .collect();
    for &t in tags.iter().rev() {
        assert!(matches!(c.wait(t).unwrap(), Message::Rgetattr(_)), "{t:?}");
    }
    // A reply can be polled for without waiting.
    let t = c.send(envoy_proto::Tstatfs { fid: d }.into()).unwrap();
    let mut polls = 0u64;
    while !c.reply_arrived(t) {
        polls += 1;
        assert!(polls < 10_000_000, "the Rstatfs never arrived");
        std::thread::yield_now();
    }
    assert!(matches!(c.wait(t).unwrap(), Message::Rstatfs(_)));
    assert_eq!(c.outstanding(), 0);
}

#[test]
fn ring_client_timed_out_tag_freed_by_its_late_reply() {
    let (_d, _s, path) = server();
    let (c, _g) = ring_client(&path);
    let d = c.alloc_fid();
    c.walk(ROOT, d, &[]).unwrap();
    // A wait that gives up at once leaves its tag abandoned (or, if the reply already came,
    // returns it); either way the next call on the ring files the late reply and frees the
    // tag.
    let t = c.send(envoy_proto::Tstatfs { fid: d }.into()).unwrap();
    match c.wait_timeout(t, Duration::ZERO) {
        Ok(m) => assert!(matches!(m, Message::Rstatfs(_))),
        Err(ClientError::Timeout(tag, _)) => assert_eq!(tag, t),
        Err(e) => panic!("{e}"),
    }
    c.getattr(d, 0x7ff).unwrap();
    assert_eq!(c.outstanding(), 0, "the abandoned tag was freed");
    assert_eq!(c.stray_replies(), 0);
}

#[test]
fn ring_client_server_shutdown_reaches_waiters() {
    let (_d, s, path) = server();
    let (c, _g) = ring_client(&path);
    let d = c.alloc_fid();
    c.walk(ROOT, d, &[]).unwrap();
    s.shutdown();
    assert!(c.wait_disconnected(Duration::from_secs(20)));
    let e = c.getattr(d, 0x7ff).unwrap_err();
    assert!(e.is_disconnected(), "{e}");
}
