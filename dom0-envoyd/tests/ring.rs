//! envoyd over shared-memory rings (`--listen ring:PATH`): a real 9P session on a ring, rings
//! recycled after a client leaves, and hostile clients that only lose their own ring.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dom0_envoyd::config::{Config, Endpoint};
use dom0_envoyd::{Server, ServerHandle};
use envoy_proto::Fid;
use envoy_ring::file::{server_state, DetachGuard, RingFile};
use envoy_ring::layout::OUT_PROD;
use envoy_ring::Waiter;
use guest_shim::client::Client;

const ROOT: Fid = Fid(1);

fn server() -> (tempfile::TempDir, ServerHandle, std::path::PathBuf) {
    server_msize(dom0_envoyd::config::DEFAULT_MAX_MSIZE)
}

fn server_msize(max_msize: u32) -> (tempfile::TempDir, ServerHandle, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("guest.ring");
    let mut c = Config::for_dir(dir.path().join("store"));
    c.max_msize = max_msize;
    c.listen = vec![
        Endpoint::Ring(ring.clone()),
        Endpoint::Tcp("127.0.0.1:0".into()),
    ];
    let s = Server::start(c).unwrap();
    grant_rings(&s.tcp_addr().unwrap());
    (dir, s, ring)
}

/// Appends `ring:* admin any` to the root credential file (`/.access`) through a loopback TCP
/// session (loopback TCP is an administrator on a fresh store), so ring clients may attach.
fn grant_rings(addr: &str) {
    let ep: guest_shim::endpoint::Endpoint = format!("tcp:{addr}").parse().unwrap();
    let c = Client::connect(&ep).unwrap();
    c.set_timeout(Some(Duration::from_secs(20)));
    c.handshake(65536, "9P2000.L").unwrap();
    c.attach(ROOT, Fid::NOFID, "root", "/", 0).unwrap();
    let f = c.alloc_fid();
    c.walk(ROOT, f, &[".access"]).unwrap();
    c.lopen(f, libc::O_RDWR as u32).unwrap();
    let old = c.read_all(f).unwrap();
    c.write_all(f, old.len() as u64, b"ring:* admin any\n")
        .unwrap();
    c.clunk(f).unwrap();
}

fn client(path: &std::path::Path) -> (Client, DetachGuard, u32) {
    let f = RingFile::open(path).unwrap();
    let fr = f.attach(Waiter::default()).unwrap();
    let index = fr.index;
    let (r, w, guard) = fr.into_parts().unwrap();
    let c = Client::from_stream(r, w);
    c.set_timeout(Some(Duration::from_secs(20)));
    (c, guard, index)
}

fn wait_state(f: &RingFile, ring: u32, want: u32) {
    let t = Instant::now();
    while f.states(ring).unwrap().1 != want {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "ring {ring} never reached {want}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn ring_session_full_9p_exchange_works() {
    let (_d, _s, path) = server();
    let (c, guard, _) = client(&path);
    let n = c.handshake(512 * 1024, "9P2000.L").unwrap();
    assert_eq!(n.msize, 512 * 1024);
    c.attach(ROOT, Fid::NOFID, "user", "/default", 0).unwrap();
    let dir = c.alloc_fid();
    c.walk(ROOT, dir, &[]).unwrap();
    c.mkdir(dir, "d", 0o755, 0).unwrap();
    c.clunk(dir).unwrap();
    let d2 = c.alloc_fid();
    c.walk(ROOT, d2, &["d"]).unwrap();
    c.lcreate(d2, "f", libc::O_RDWR as u32, 0o644, 0).unwrap();
    // 3 MiB in msize pieces: every reply and request wraps the 1 MiB rings several times.
    let data: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    assert_eq!(c.write_all(d2, 0, &data).unwrap(), data.len() as u64);
    let back = c.read_all(d2).unwrap();
    assert!(back == data, "read back differs");
    c.clunk(d2).unwrap();
    let d3 = c.alloc_fid();
    c.walk(ROOT, d3, &["d"]).unwrap();
    c.lopen(d3, libc::O_RDONLY as u32).unwrap();
    let names: Vec<String> = c
        .readdir_all(d3)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(names.contains(&"f".to_string()), "{names:?}");
    c.clunk(d3).unwrap();
    drop(c);
    drop(guard);
}

#[test]
fn ring_detached_client_ring_recycled_for_next_client() {
    let (_d, _s, path) = server();
    let f = RingFile::open(&path).unwrap();
    let (c, guard, i) = client(&path);
    c.handshake(65536, "9P2000.L").unwrap();
    drop(c);
    drop(guard);
    // The server ends the session and the ring becomes free again.
    let t = Instant::now();
    while f.states(i).unwrap() != (0, 0) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "ring {i} not recycled"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let (c, _g, j) = client(&path);
    assert_eq!(i, j);
    c.handshake(65536, "9P2000.L").unwrap();
    c.attach(ROOT, Fid::NOFID, "user", "/default", 0).unwrap();
}

#[test]
fn ring_hostile_indexes_close_only_that_ring() {
    let (_d, _s, path) = server();
    let f = RingFile::open(&path).unwrap();
    let (good, _g, gi) = client(&path);
    good.handshake(65536, "9P2000.L").unwrap();
    good.attach(ROOT, Fid::NOFID, "user", "/default", 0)
        .unwrap();
    // A second client attaches and then claims a ring's worth plus one of requests.
    let bad = f.attach(Waiter::default()).unwrap();
    let bi = bad.index;
    wait_state(&f, bi, server_state::SERVING);
    f.ring(bi)
        .unwrap()
        .intf()
        .atomic_u32(OUT_PROD)
        .unwrap()
        .store((1 << 20) + 1, Ordering::SeqCst);
    // No doorbell needed: a waiting reader re-checks the indexes at least every slice.
    wait_state(&f, bi, server_state::CLOSED);
    // The good ring is still served.
    let fid = good.alloc_fid();
    good.walk(ROOT, fid, &[]).unwrap();
    good.getattr(fid, envoy_proto::getattr::BASIC).unwrap();
    assert_ne!(f.states(gi).unwrap().1, server_state::CLOSED);
    drop(bad);
}

#[test]
fn ring_oversized_frame_closes_only_that_ring() {
    let (_d, _s, path) = server_msize(65536);
    let f = RingFile::open(&path).unwrap();
    let (good, _g, _) = client(&path);
    good.handshake(65536, "9P2000.L").unwrap();
    let bad = f.attach(Waiter::default()).unwrap();
    let bi = bad.index;
    let (_r, mut w, _guard) = bad.into_parts().unwrap();
    // A frame larger than envoyd's largest msize (but within the ring): the session's framing
    // refuses it and drops the connection.
    let size: u32 = 128 * 1024;
    let mut frame = vec![0u8; size as usize];
    frame[..4].copy_from_slice(&size.to_le_bytes());
    frame[4] = 100; // Tversion
    std::io::Write::write_all(&mut w, &frame).unwrap();
    wait_state(&f, bi, server_state::CLOSED);
    good.attach(ROOT, Fid::NOFID, "user", "/default", 0)
        .unwrap();
}
