//! envoyd over shared-memory rings (`--listen ring:PATH`): a real 9P session on a ring, rings
//! recycled after a client leaves, and hostile clients that only lose their own ring.
//!
//! The `ring_client_*` tests cover `guest_shim::client::Client` over a ring, whose waiting
//! callers read the reply ring themselves (one leader at a time, no reader thread): every
//! reply must still reach exactly the caller that waits for it, timeouts must still finish
//! their requests, and the end of the connection must reach every waiter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dom0_envoyd::config::{Config, Endpoint};
use dom0_envoyd::{Server, ServerHandle};
use envoy_proto::{Fid, Message, Tag};
use envoy_ring::file::{server_state, DetachGuard, RingFile};
use envoy_ring::layout::OUT_PROD;
use envoy_ring::Waiter;
use guest_shim::client::{Client, ClientError};

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

/// A client reading replies as whole ring messages (`Client::from_ring`).
fn frame_client(path: &std::path::Path) -> (Client, DetachGuard) {
    let f = RingFile::open(path).unwrap();
    let (r, w, guard) = f.attach(Waiter::default()).unwrap().into_parts().unwrap();
    let c = Client::from_ring(r, w, guest_shim::endpoint::Closer::Nothing);
    c.set_timeout(Some(Duration::from_secs(20)));
    (c, guard)
}

/// [`frame_client`] after the handshake (256 KiB) and an attach of `/default` at `ROOT`.
fn attached_frame_client(path: &std::path::Path) -> (Client, DetachGuard) {
    let (c, g) = frame_client(path);
    c.set_timeout(Some(Duration::from_secs(30)));
    c.handshake(256 * 1024, "9P2000.L").unwrap();
    c.attach(ROOT, Fid::NOFID, "user", "/default", 0).unwrap();
    (c, g)
}

/// A file `name` in `/default` holding `data`; returns an open (read-write) fid.
fn file_with(c: &Client, name: &str, data: &[u8]) -> Fid {
    let d = c.alloc_fid();
    c.walk(ROOT, d, &[]).unwrap();
    c.lcreate(d, name, libc::O_RDWR as u32, 0o644, 0).unwrap();
    assert_eq!(c.write_all(d, 0, data).unwrap(), data.len() as u64);
    d
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(31).wrapping_add(seed) % 251) as u8)
        .collect()
}

#[test]
fn ring_reads_in_place_and_wrapped_fallback_return_exact_data() {
    let (_d, _s, path) = server();
    let (c, _g) = frame_client(&path);
    c.handshake(512 * 1024, "9P2000.L").unwrap();
    c.attach(ROOT, Fid::NOFID, "user", "/default", 0).unwrap();
    // A small file (served from the cache once read) and a large one (read from the store).
    let small = pattern(10_000, 1);
    let big = pattern(3 << 20, 2);
    let fs = file_with(&c, "small", &small);
    let fb = file_with(&c, "big", &big);
    // Replies of 300 011+ bytes in a 1 MiB ring: every fourth one at the latest runs past the
    // ring's end, so the wrapped (copying) fallback and the in-place path alternate; the odd
    // sizes move the wrap point through every alignment.
    let sizes = [300_001u32, 1, 4095, 4096, 4097, 65_549, 511_989, 7, 123_457];
    let mut off = 0u64;
    for round in 0..40u64 {
        for &n in &sizes {
            let o = (off * 4099 + round) % (big.len() as u64);
            let got = c.read(fb, o, n).unwrap();
            let end = (o as usize + n as usize).min(big.len());
            assert!(got[..] == big[o as usize..end], "big: offset {o} count {n}");
            let so = o % 12_000;
            let got = c.read(fs, so, n).unwrap();
            let s0 = (so as usize).min(small.len());
            let send = (so as usize + n as usize).min(small.len());
            assert!(got[..] == small[s0..send], "small: offset {so} count {n}");
            off += 1;
        }
    }
}

#[test]
fn ring_pipelined_reads_and_other_replies_keep_their_tags() {
    let (_d, _s, path) = server();
    let (c, _g) = frame_client(&path);
    c.handshake(512 * 1024, "9P2000.L").unwrap();
    c.attach(ROOT, Fid::NOFID, "user", "/default", 0).unwrap();
    let big = pattern(2 << 20, 3);
    let f = file_with(&c, "f", &big);
    for round in 0..20u64 {
        // Many requests in flight at once: reads of several sizes (some replies in place,
        // some wrapped, some queued behind others) between getattrs.
        let mut sent = Vec::new();
        for i in 0..24u64 {
            let count = [200_000u32, 4096, 33, 100_003][(i % 4) as usize];
            let off = (round * 7919 + i * 65_537) % (big.len() as u64);
            let t = c
                .send(
                    envoy_proto::Tread {
                        fid: f,
                        offset: off,
                        count,
                    }
                    .into(),
                )
                .unwrap();
            sent.push((t, Some((off, count))));
            if i % 5 == 0 {
                let t = c
                    .send(
                        envoy_proto::Tgetattr {
                            fid: f,
                            request_mask: 0x7ff,
                        }
                        .into(),
                    )
                    .unwrap();
                sent.push((t, None));
            }
        }
        for (t, what) in sent {
            match (c.wait(t).unwrap(), what) {
                (envoy_proto::Message::Rread(r), Some((off, count))) => {
                    let end = (off as usize + count as usize).min(big.len());
                    assert!(r.data[..] == big[off as usize..end], "tag {t:?}");
                }
                (envoy_proto::Message::Rgetattr(a), None) => {
                    assert_eq!(a.size, big.len() as u64);
                }
                (other, w) => panic!("tag {t:?}: unexpected {} for {w:?}", other.name()),
            }
        }
    }
}

#[test]
fn ring_read_hostile_counts_and_offsets_answered_session_survives() {
    let (_d, _s, path) = server_msize(64 * 1024);
    let (c, _g) = frame_client(&path);
    let n = c.handshake(64 * 1024, "9P2000.L").unwrap();
    assert_eq!(n.msize, 64 * 1024);
    c.attach(ROOT, Fid::NOFID, "user", "/default", 0).unwrap();
    let data = pattern(200_000, 4);
    let f = file_with(&c, "f", &data);
    // Counts beyond msize are cut to what fits (or refused), never a reply over msize.
    for count in [u32::MAX, u32::MAX - 10, 64 * 1024, 64 * 1024 - 11, 1 << 30] {
        match c.read(f, 0, count) {
            Ok(got) => {
                assert!(got.len() <= 64 * 1024 - 11, "count {count}: {}", got.len());
                assert!(got[..] == data[..got.len()]);
            }
            Err(e) => assert!(e.errno().is_some(), "count {count}: {e}"),
        }
    }
    // Offsets past the end or beyond the largest file.
    assert!(c.read(f, 10_000_000, 100).unwrap().is_empty());
    for off in [u64::MAX, u64::MAX - 5, i64::MAX as u64] {
        assert!(c.read(f, off, 100).is_err(), "offset {off}");
    }
    assert!(c.read(f, 5, 0).unwrap().is_empty());
    // Unknown fid, write-only fid: error replies, connection unaffected.
    assert!(c.read(Fid(999), 0, 10).is_err());
    let w = c.alloc_fid();
    c.walk(ROOT, w, &["f"]).unwrap();
    c.lopen(w, libc::O_WRONLY as u32).unwrap();
    assert!(c.read(w, 0, 10).is_err());
    assert_eq!(&c.read(f, 100, 50).unwrap()[..], &data[100..150]);
}

#[test]
fn ring_reads_of_ctl_tree_files_served_by_the_ctl_tree() {
    let (_d, _s, path) = server();
    let (c, _g) = frame_client(&path);
    c.handshake(512 * 1024, "9P2000.L").unwrap();
    // A file-system fid next to the synthetic tree: both kinds of read on one connection.
    c.attach(ROOT, Fid::NOFID, "user", "/default", 0).unwrap();
    let data = pattern(5000, 9);
    let f = file_with(&c, "f", &data);
    let ctl = c.alloc_fid();
    c.attach(ctl, Fid::NOFID, "user", "ctl", 0).unwrap();
    let z = c.alloc_fid();
    c.walk(ctl, z, &["zero"]).unwrap();
    c.lopen(z, libc::O_RDONLY as u32).unwrap();
    let got = c.read(z, 0, 100_000).unwrap();
    assert_eq!(got.len(), 100_000);
    assert!(got.iter().all(|&b| b == 0));
    assert_eq!(&c.read(f, 10, 20).unwrap()[..], &data[10..30]);
}

/// Ring size per direction of the rings envoyd creates.
const RING_SIZE: u64 = 1 << 20;
/// `size[4] type[1] tag[2] fid[4] offset[8] count[4]`.
const TWRITE_HEADER: u64 = 23;

/// Like [`frame_client`], also returning the ring's index in the file.
fn frame_client_at(path: &std::path::Path) -> (Client, DetachGuard, u32) {
    let f = RingFile::open(path).unwrap();
    let fr = f.attach(Waiter::default()).unwrap();
    let index = fr.index;
    let (r, w, guard) = fr.into_parts().unwrap();
    let c = Client::from_ring(r, w, guest_shim::endpoint::Closer::Nothing);
    c.set_timeout(Some(Duration::from_secs(20)));
    (c, guard, index)
}

/// Whether the payload of a Twrite of `n` bytes sent now (the client waits for each reply,
/// so the request ring's `prod` is where it will start) lies contiguously in ring memory —
/// the case envoyd writes to the file straight from the ring.
fn payload_contiguous(f: &RingFile, ring: u32, n: u64) -> bool {
    let prod = f
        .ring(ring)
        .unwrap()
        .intf()
        .atomic_u32(OUT_PROD)
        .unwrap()
        .load(Ordering::SeqCst);
    let start = (u64::from(prod) + TWRITE_HEADER) % RING_SIZE;
    start + n <= RING_SIZE
}

#[test]
fn ring_writes_in_place_contiguous_and_wrapped_land_exact() {
    let (_d, s, path) = server();
    let (c, _g, ring) = frame_client_at(&path);
    let f = RingFile::open(&path).unwrap();
    c.handshake(512 * 1024, "9P2000.L").unwrap();
    c.attach(ROOT, Fid::NOFID, "user", "/default", 0).unwrap();
    let fid = file_with(&c, "w", &[]);
    let mut model = vec![0u8; 0];
    let t0 = s.fs().traffic();
    // Every well-formed Twrite is written from ring memory: a contiguous payload as one
    // window, one that wraps at the ring's end as two (end part, then start part).
    let (mut writes, mut bytes, mut wrapped) = (0u64, 0u64, 0u64);
    // Payloads of 300 011+ bytes in a 1 MiB ring wrap at least every fourth request; the odd
    // sizes move the ring position (and so the payload's alignment in ring memory and the
    // wrap point) through every alignment; file offsets are unaligned too.
    let sizes = [
        300_001u64, 1, 4095, 4096, 4097, 65_549, 511_989, 7, 123_457, 0,
    ];
    let mut k = 0u64;
    for round in 0..12u64 {
        for &n in &sizes {
            let off = (k * 40_961 + round * 13) % (3 << 20);
            let data = pattern(n as usize, k as u32);
            wrapped += u64::from(!payload_contiguous(&f, ring, n));
            writes += 1;
            bytes += n;
            assert_eq!(c.write(fid, off, data.clone()).unwrap() as u64, n);
            let end = (off + n) as usize;
            if model.len() < end {
                model.resize(end, 0);
            }
            model[off as usize..end].copy_from_slice(&data);
            k += 1;
        }
    }
    // Every payload alignment in ring memory, small writes.
    for a in 0..64u64 {
        let n = 4096 + a;
        let off = a * 4097;
        let data = pattern(n as usize, 1000 + a as u32);
        wrapped += u64::from(!payload_contiguous(&f, ring, n));
        writes += 1;
        bytes += n;
        assert_eq!(c.write(fid, off, data.clone()).unwrap() as u64, n);
        model[off as usize..(off + n) as usize].copy_from_slice(&data);
    }
    let t1 = s.fs().traffic();
    assert!(
        wrapped > 0 && wrapped < writes,
        "both shapes: {wrapped} of {writes} wrapped"
    );
    assert_eq!(
        t1.write_in_place_requests - t0.write_in_place_requests,
        writes,
        "contiguous and wrapping payloads are written from ring memory"
    );
    assert_eq!(t1.write_in_place_bytes - t0.write_in_place_bytes, bytes);
    assert_eq!(
        t1.write_requests - t0.write_requests,
        writes,
        "no write took the copying path"
    );
    let back = c.read_all(fid).unwrap();
    assert_eq!(back.len(), model.len());
    assert!(back == model, "file differs from the writes");
}

/// A raw Twrite frame whose `count` field says `count` and which carries `payload` bytes.
fn raw_twrite(tag: u16, fid: Fid, offset: u64, count: u32, payload: usize) -> Vec<u8> {
    let size = TWRITE_HEADER as usize + payload;
    let mut b = Vec::with_capacity(size);
    b.extend_from_slice(&(size as u32).to_le_bytes());
    b.push(118);
    b.extend_from_slice(&tag.to_le_bytes());
    b.extend_from_slice(&fid.0.to_le_bytes());
    b.extend_from_slice(&offset.to_le_bytes());
    b.extend_from_slice(&count.to_le_bytes());
    b.extend((0..payload).map(|i| (i % 253) as u8));
    b
}

/// Sends `frame` (its tag at bytes 5..7) and returns the reply frame without its tag.
fn raw_reply(c: &Client, frame: &[u8]) -> Vec<u8> {
    let tag = envoy_proto::Tag(u16::from_le_bytes([frame[5], frame[6]]));
    c.reserve_raw_tag(tag).unwrap();
    c.send_raw(frame).unwrap();
    let mut r = c.wait_raw(tag).unwrap().to_vec();
    r[5..7].fill(0);
    r
}

/// A session (ring or TCP) with `/default/<name>` open read-write as `fid`, and a read-only
/// fid on it.
fn session_with_file(c: &Client, name: &str) -> (Fid, Fid) {
    c.handshake(256 * 1024, "9P2000.L").unwrap();
    c.attach(ROOT, Fid::NOFID, "user", "/default", 0).unwrap();
    let fid = file_with(c, name, b"0123456789");
    let ro = c.alloc_fid();
    c.walk(ROOT, ro, &[name]).unwrap();
    c.lopen(ro, libc::O_RDONLY as u32).unwrap();
    (fid, ro)
}

#[test]
fn ring_write_hostile_counts_same_errors_as_tcp_session_survives() {
    let (_d, s, path) = server();
    let (rc, _g, ring) = frame_client_at(&path);
    let f = RingFile::open(&path).unwrap();
    let ep: guest_shim::endpoint::Endpoint =
        format!("tcp:{}", s.tcp_addr().unwrap()).parse().unwrap();
    let tc = Client::connect(&ep).unwrap();
    tc.set_timeout(Some(Duration::from_secs(20)));
    let (rf, rro) = session_with_file(&rc, "hr");
    let (tf, tro) = session_with_file(&tc, "ht");
    let t0 = s.fs().traffic();
    // (count, payload bytes, offset, read-only fid?) — every one is refused.
    let cases: [(u32, usize, u64, bool); 9] = [
        (100, 95, 0, false),                // count beyond the frame
        (90, 95, 0, false),                 // bytes after the payload
        (u32::MAX, 95, 0, false),           // absurd count
        (0, 4096, 0, false),                // payload with count 0
        (4097, 4096, 0, false),             // one past
        (10, 10, u64::MAX - 5, false),      // offset + count overflows
        (10, 10, i64::MAX as u64, false),   // beyond the largest file
        (10, 10, 0, true),                  // fid open read-only
        (200_000, 200_000, 1 << 62, false), // large, contiguous, out of range
    ];
    for (i, &(count, payload, off, ro)) in cases.iter().enumerate() {
        let (r_fid, t_fid) = if ro { (rro, tro) } else { (rf, tf) };
        let tag = 1000 + i as u16;
        let r = raw_reply(&rc, &raw_twrite(tag, r_fid, off, count, payload));
        let t = raw_reply(&tc, &raw_twrite(tag, t_fid, off, count, payload));
        assert_eq!(r[4], 7, "case {i}: Rlerror expected, got type {}", r[4]);
        assert_eq!(r, t, "case {i}: ring and TCP answer differently");
    }
    // A frame too short to hold a Twrite header, and an unknown fid.
    let short = {
        let mut b = raw_twrite(1100, rf, 0, 0, 0);
        b.truncate(15);
        b[..4].copy_from_slice(&15u32.to_le_bytes());
        b
    };
    let r = raw_reply(&rc, &short);
    let mut short_t = short.clone();
    short_t[7..11].copy_from_slice(&tf.0.to_le_bytes());
    assert_eq!(r, raw_reply(&tc, &short_t));
    let r = raw_reply(&rc, &raw_twrite(1101, Fid(999_999), 0, 10, 10));
    let t = raw_reply(&tc, &raw_twrite(1101, Fid(999_999), 0, 10, 10));
    assert_eq!((r[4], &r), (7, &t));
    // Nothing was written; the refused requests that got as far as the store did so from
    // ring memory (the range checks are the store's own).
    let t1 = s.fs().traffic();
    assert_eq!(
        t1.write_bytes, t0.write_bytes,
        "refused writes wrote nothing"
    );
    // The ring session goes on.
    let in_place = u64::from(payload_contiguous(&f, ring, 3));
    assert_eq!(rc.write(rf, 3, &b"abc"[..]).unwrap(), 3);
    assert_eq!(&rc.read(rf, 0, 100).unwrap()[..], b"012abc6789");
    assert_eq!(
        s.fs().traffic().write_in_place_requests,
        t1.write_in_place_requests + in_place
    );
}

#[test]
fn ring_oversized_twrite_closes_only_that_ring() {
    let (_d, _s, path) = server_msize(65536);
    let f = RingFile::open(&path).unwrap();
    let (good, _g, _) = client(&path);
    good.handshake(65536, "9P2000.L").unwrap();
    let (bad, _gb, bi) = frame_client_at(&path);
    bad.handshake(65536, "9P2000.L").unwrap();
    bad.attach(ROOT, Fid::NOFID, "user", "/default", 0).unwrap();
    let fid = file_with(&bad, "big", &[]);
    // Consistent count, but the frame is larger than the negotiated msize: a framing error
    // (the copying path's rule), the ring is closed.
    bad.send_raw(&raw_twrite(7, fid, 0, 70_000, 70_000))
        .unwrap();
    wait_state(&f, bi, server_state::CLOSED);
    good.attach(ROOT, Fid::NOFID, "user", "/default", 0)
        .unwrap();
}

#[test]
fn ring_write_to_xattr_and_ctl_fids_copied_and_answered() {
    let (_d, s, path) = server();
    let (c, _g) = frame_client(&path);
    c.handshake(512 * 1024, "9P2000.L").unwrap();
    c.attach(ROOT, Fid::NOFID, "user", "/default", 0).unwrap();
    let fid = file_with(&c, "x", b"data");
    // An xattr fid: the payload goes to the xattr value (copied out of the ring).
    let xf = c.alloc_fid();
    c.walk(ROOT, xf, &["x"]).unwrap();
    c.xattrcreate(xf, "user.t", 5, 0).unwrap();
    let t0 = s.fs().traffic();
    assert_eq!(c.write(xf, 0, &b"hello"[..]).unwrap(), 5);
    c.clunk(xf).unwrap();
    let rf = c.alloc_fid();
    c.walk(ROOT, rf, &["x"]).unwrap();
    assert_eq!(c.xattrwalk(rf, c.alloc_fid(), "user.t").unwrap(), 5);
    assert_eq!(
        s.fs().traffic().write_in_place_requests,
        t0.write_in_place_requests,
        "an xattr value is not a file write"
    );
    // With a ctl fid on the connection, file writes are still exact (copied, dispatched).
    let ctl = c.alloc_fid();
    c.attach(ctl, Fid::NOFID, "user", "ctl", 0).unwrap();
    let data = pattern(100_000, 5);
    assert_eq!(c.write(fid, 0, data.clone()).unwrap(), 100_000);
    assert!(c.read_all(fid).unwrap() == data);
    assert_eq!(
        s.fs().traffic().write_in_place_requests,
        t0.write_in_place_requests,
        "a connection with ctl fids copies"
    );
}

#[test]
fn ring_pipelined_large_writes_land_exact() {
    let (_d, s, path) = server();
    let (c, _g) = frame_client(&path);
    c.handshake(512 * 1024 + 4096, "9P2000.L").unwrap();
    c.attach(ROOT, Fid::NOFID, "user", "/default", 0).unwrap();
    let fid = file_with(&c, "p", &[]);
    let mut model = vec![0u8; 4 << 20];
    let t0 = s.fs().traffic();
    // Two or three large Twrites in flight at once: the second fits in the 1 MiB ring only
    // as the first one's written part is given back, so the guest fills released space
    // while the server still writes the rest from the ring.
    for round in 0..16u32 {
        let sizes = [512 * 1024u32, 512 * 1024 - 7 * round, 40_000 + round];
        let mut sent = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let off = u64::from(round) * 200_003 + i as u64 * 524_309;
            let data = pattern(n as usize, round * 3 + i as u32);
            let t = c
                .send(
                    envoy_proto::Twrite {
                        fid,
                        offset: off,
                        data: data.clone().into(),
                    }
                    .into(),
                )
                .unwrap();
            model[off as usize..off as usize + n as usize].copy_from_slice(&data);
            sent.push((t, n));
        }
        for (t, n) in sent {
            match c.wait(t).unwrap() {
                envoy_proto::Message::Rwrite(r) => assert_eq!(r.count, n),
                other => panic!("unexpected {}", other.name()),
            }
        }
    }
    let t1 = s.fs().traffic();
    assert!(t1.write_in_place_requests > t0.write_in_place_requests);
    let back = c.read_all(fid).unwrap();
    let end = model.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    assert!(
        back.len() >= end && back[..] == model[..back.len()],
        "file differs"
    );
}

#[test]
fn ring_client_threads_sharing_one_ring_each_get_their_own_replies() {
    let (_d, _s, path) = server();
    let (c, _g) = attached_frame_client(&path);
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
    let (c, _g) = attached_frame_client(&path);
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
    let (c, _g) = attached_frame_client(&path);
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
    let (c, _g) = attached_frame_client(&path);
    let d = c.alloc_fid();
    c.walk(ROOT, d, &[]).unwrap();
    s.shutdown();
    assert!(c.wait_disconnected(Duration::from_secs(20)));
    let e = c.getattr(d, 0x7ff).unwrap_err();
    assert!(e.is_disconnected(), "{e}");
}
