//! The storage server end to end: every message through the client over TCP and Unix sockets,
//! many concurrent clients, hostile frames over raw sockets, disconnects mid-frame; afterwards
//! the store must check clean.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use envoy_proto::{decode, encode, Dialect, Message, Tag, Tsstat, Tswrite, Tversion};
use envoy_storage::check::check;
use envoy_storage::client::{ClientError, StorageClient};
use envoy_storage::server::{self, ServerHandle};
use envoy_storage::wire::{Endpoint, Stream};
use envoy_storage::{
    AttrChange, Attributes, EngineChoice, ObjectId, ObjectKind, ObjectStore, StoreOptions,
    Timestamp,
};

struct Fixture {
    dir: tempfile::TempDir,
    server: Option<ServerHandle>,
    tcp: Endpoint,
    unix: Endpoint,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::create(
            &dir.path().join("store"),
            StoreOptions {
                engine: EngineChoice::Uring,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        let sock = dir.path().join("s.sock");
        let server = server::serve(
            Arc::new(store),
            &[
                "tcp:127.0.0.1:0".parse().unwrap(),
                Endpoint::Unix(sock.clone()),
            ],
        )
        .unwrap();
        let tcp = server.endpoints()[0].clone();
        Fixture {
            dir,
            server: Some(server),
            tcp,
            unix: Endpoint::Unix(sock),
        }
    }

    fn client(&self) -> StorageClient {
        StorageClient::connect(&self.tcp, 1 << 20).unwrap()
    }

    /// Stops the server and checks the store.
    fn finish(mut self) {
        if let Some(s) = self.server.take() {
            s.stop();
        }
        let r = check(&self.dir.path().join("store"));
        assert!(r.is_clean(), "{r}");
    }
}

fn attr() -> Attributes {
    Attributes {
        kind: ObjectKind::Regular,
        mode: 0o640,
        uid: 7,
        gid: 8,
        atime: Timestamp {
            secs: 100,
            nanos: 5,
        },
        mtime: Timestamp {
            secs: 200,
            nanos: 6,
        },
    }
}

#[test]
fn every_message_round_trips_over_tcp_and_unix() {
    let f = Fixture::new();
    for ep in [f.tcp.clone(), f.unix.clone()] {
        let mut c = StorageClient::connect(&ep, 64 * 1024).unwrap();
        assert_eq!(c.msize(), 64 * 1024);
        let r = c.reserve(2).unwrap();
        let (a, b) = (r.first, ObjectId(r.first.0 + 1));
        let st = c.create(a, &attr()).unwrap();
        assert_eq!((st.id, st.attr, st.size), (a, attr(), 0));
        assert_eq!(c.write(a, 3, Bytes::from_static(b"data")).unwrap(), 4);
        assert_eq!(&c.read(a, 0, 100).unwrap()[..], b"\0\0\0data");
        let st = c.clone_object(a, b).unwrap();
        assert_eq!(st.size, 7);
        let st = c
            .wstat(
                b,
                &AttrChange {
                    mode: Some(0o600),
                    size: Some(2),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!((st.attr.mode, st.size, st.attr.uid), (0o600, 2, 7));
        assert_eq!(c.stat(a).unwrap().size, 7);
        c.sync(b).unwrap();
        c.delete(a).unwrap();
        assert_eq!(c.stat(a).unwrap_err().errno(), Some(libc::ENOENT));
    }
    f.finish();
}

#[test]
fn store_errors_become_rlerror_with_errno() {
    let f = Fixture::new();
    let mut c = f.client();
    assert_eq!(
        c.stat(ObjectId(12345)).unwrap_err().errno(),
        Some(libc::ENOENT)
    );
    assert_eq!(
        c.delete(ObjectId(12345)).unwrap_err().errno(),
        Some(libc::ENOENT)
    );
    assert_eq!(
        c.create(ObjectId(1 << 50), &attr()).unwrap_err().errno(),
        Some(libc::ERANGE)
    );
    c.create(ObjectId(5), &attr()).unwrap();
    assert_eq!(
        c.create(ObjectId(5), &attr()).unwrap_err().errno(),
        Some(libc::EEXIST)
    );
    let e = c.read(ObjectId(5), u64::MAX - 2, 100).unwrap_err();
    assert_eq!(e.errno(), Some(libc::EINVAL));
    let e = c
        .write(ObjectId(5), u64::MAX, Bytes::from_static(b"xy"))
        .unwrap_err();
    assert_eq!(e.errno(), Some(libc::EINVAL));
    let bad_time = AttrChange {
        mtime: Some(Timestamp {
            secs: 1,
            nanos: 2_000_000_000,
        }),
        ..Default::default()
    };
    assert_eq!(
        c.wstat(ObjectId(5), &bad_time).unwrap_err().errno(),
        Some(libc::EINVAL)
    );
    assert_eq!(c.reserve(0).unwrap_err().errno(), Some(libc::EINVAL));
    // The connection is still fine after all those errors.
    assert_eq!(c.stat(ObjectId(5)).unwrap().attr, attr());
    f.finish();
}

#[test]
fn many_concurrent_clients_all_succeed() {
    let f = Fixture::new();
    let threads: Vec<_> = (0..12u64)
        .map(|t| {
            let ep = if t % 2 == 0 {
                f.tcp.clone()
            } else {
                f.unix.clone()
            };
            std::thread::spawn(move || {
                let mut c = StorageClient::connect(&ep, 256 * 1024).unwrap();
                let r = c.reserve(20).unwrap();
                for i in 0..20 {
                    let id = ObjectId(r.first.0 + i);
                    c.create(id, &attr()).unwrap();
                    let payload = Bytes::from(vec![(t * 20 + i) as u8; 10_000]);
                    assert_eq!(c.write(id, 0, payload.clone()).unwrap(), 10_000);
                    assert_eq!(c.read(id, 0, 20_000).unwrap(), payload);
                }
                r
            })
        })
        .collect();
    let mut ranges: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    ranges.sort_by_key(|r| r.first);
    for w in ranges.windows(2) {
        assert!(
            w[0].first.0 + w[0].count <= w[1].first.0,
            "reserved ranges overlap"
        );
    }
    let mut c = f.client();
    for r in &ranges {
        assert_eq!(c.stat(ObjectId(r.first.0 + 19)).unwrap().size, 10_000);
    }
    f.finish();
}

#[test]
fn pipelined_requests_on_one_connection_all_answered() {
    let f = Fixture::new();
    let mut c = f.client();
    c.create(ObjectId(1), &attr()).unwrap();
    drop(c);
    let mut s = versioned(&f.tcp);
    let mut out = BytesMut::new();
    for tag in 1..=50u16 {
        encode(
            Tag(tag),
            &Tsstat { id: 1 }.into(),
            Dialect::Storage,
            1 << 20,
            &mut out,
        )
        .unwrap();
    }
    s.write_all(&out).unwrap();
    let mut tags: Vec<u16> = (0..50)
        .map(|_| {
            let f = read_frame(&mut s).unwrap();
            assert!(matches!(f.msg, Message::Rsstat(_)), "{f:?}");
            f.tag.0
        })
        .collect();
    tags.sort_unstable();
    assert_eq!(tags, (1..=50).collect::<Vec<_>>());
    f.finish();
}

fn raw(ep: &Endpoint) -> Stream {
    let s = Stream::connect(ep).unwrap();
    if let Stream::Tcp(t) = &s {
        t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    s
}

fn versioned(ep: &Endpoint) -> Stream {
    let mut s = raw(ep);
    send(
        &mut s,
        Tag::NOTAG,
        Tversion {
            msize: 8192,
            version: "Envoy.storage.1".into(),
        }
        .into(),
    );
    let f = read_frame(&mut s).unwrap();
    assert!(
        matches!(f.msg, Message::Rversion(ref v) if v.msize == 8192),
        "{f:?}"
    );
    s
}

fn send(s: &mut Stream, tag: Tag, m: Message) {
    let mut out = BytesMut::new();
    encode(tag, &m, Dialect::Storage, 1 << 24, &mut out).unwrap();
    s.write_all(&out).unwrap();
}

/// Reads one reply; `None` when the server closed the connection.
fn read_frame(s: &mut Stream) -> Option<envoy_proto::Frame> {
    let mut size = [0u8; 4];
    if s.read_exact(&mut size).is_err() {
        return None;
    }
    let n = u32::from_le_bytes(size) as usize;
    let mut rest = vec![0u8; n - 4];
    s.read_exact(&mut rest).ok()?;
    let mut all = size.to_vec();
    all.extend(rest);
    Some(decode(Bytes::from(all), Dialect::Storage, 1 << 24).unwrap())
}

fn expect_error(s: &mut Stream, tag: u16) -> u32 {
    let f = read_frame(s).expect("reply");
    assert_eq!(f.tag, Tag(tag));
    match f.msg {
        Message::Rlerror(e) => e.ecode,
        other => panic!("expected Rlerror, got {other:?}"),
    }
}

fn expect_closed(s: &mut Stream) {
    let mut b = [0u8; 1];
    assert_eq!(
        s.read(&mut b).unwrap_or(0),
        0,
        "connection should be closed"
    );
}

#[test]
fn client_that_stops_reading_replies_is_disconnected() {
    let fx = Fixture::new();
    let mut s = versioned(&fx.unix);
    let Stream::Unix(u) = &s else {
        panic!("Unix endpoint gave a TCP stream");
    };
    // From now on no reply can be delivered (the server's writes fail with EPIPE). The server
    // must drop the connection rather than keep executing requests for a peer that never
    // reads them.
    u.shutdown(std::net::Shutdown::Read).unwrap();
    let mut out = BytesMut::new();
    encode(
        Tag(1),
        &Tsstat { id: 1 }.into(),
        Dialect::Storage,
        8192,
        &mut out,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut refused = false;
    while std::time::Instant::now() < deadline {
        if s.write_all(&out).is_err() {
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        refused,
        "server kept the connection of a peer that reads nothing"
    );
    fx.finish();
}

fn hdr(size: u32, ty: u8, tag: u16) -> Vec<u8> {
    let mut v = size.to_le_bytes().to_vec();
    v.push(ty);
    v.extend(tag.to_le_bytes());
    v
}

#[test]
fn request_before_version_answered_with_eproto() {
    let f = Fixture::new();
    let mut s = raw(&f.tcp);
    send(&mut s, Tag(1), Tsstat { id: 1 }.into());
    assert_eq!(expect_error(&mut s, 1), libc::EPROTO as u32);
    f.finish();
}

#[test]
fn version_msize_below_4096_refused_and_large_capped() {
    let f = Fixture::new();
    let mut s = raw(&f.tcp);
    send(
        &mut s,
        Tag::NOTAG,
        Tversion {
            msize: 100,
            version: "Envoy.storage.1".into(),
        }
        .into(),
    );
    assert_eq!(expect_error(&mut s, 0xffff), libc::EINVAL as u32);
    send(
        &mut s,
        Tag::NOTAG,
        Tversion {
            msize: u32::MAX,
            version: "Envoy.storage.1".into(),
        }
        .into(),
    );
    let r = read_frame(&mut s).unwrap();
    assert!(
        matches!(r.msg, Message::Rversion(ref v) if v.msize == server::MAX_MSIZE),
        "{r:?}"
    );
    f.finish();
}

#[test]
fn unknown_version_answered_unknown() {
    let f = Fixture::new();
    let mut s = raw(&f.tcp);
    send(
        &mut s,
        Tag::NOTAG,
        Tversion {
            msize: 8192,
            version: "9P2000.L".into(),
        }
        .into(),
    );
    let r = read_frame(&mut s).unwrap();
    assert!(
        matches!(r.msg, Message::Rversion(ref v) if v.version == "unknown"),
        "{r:?}"
    );
    f.finish();
}

#[test]
fn hostile_frames_with_readable_header_get_errors_and_connection_survives() {
    let f = Fixture::new();
    let mut s = versioned(&f.tcp);
    // Unknown type.
    s.write_all(&hdr(7, 250, 1)).unwrap();
    assert_eq!(expect_error(&mut s, 1), libc::EBADMSG as u32);
    // Tsstat with a 3-byte body instead of 8.
    let mut v = hdr(10, 170, 2);
    v.extend([1, 2, 3]);
    s.write_all(&v).unwrap();
    assert_eq!(expect_error(&mut s, 2), libc::EBADMSG as u32);
    // Tsstat with trailing bytes.
    let mut v = hdr(17, 170, 3);
    v.extend([0u8; 10]);
    s.write_all(&v).unwrap();
    assert_eq!(expect_error(&mut s, 3), libc::EBADMSG as u32);
    // An R-message (Rlerror) sent to the server.
    let mut v = hdr(11, 7, 4);
    v.extend(5u32.to_le_bytes());
    s.write_all(&v).unwrap();
    assert_eq!(expect_error(&mut s, 4), libc::EPROTO as u32);
    // A 9P2000.L message on a storage connection.
    let mut v = hdr(11, 8, 5); // Tstatfs fid[4]
    v.extend(1u32.to_le_bytes());
    s.write_all(&v).unwrap();
    assert_eq!(expect_error(&mut s, 5), libc::EBADMSG as u32);
    // Tsread with a count above what msize allows.
    let mut v = hdr(27, 166, 6);
    v.extend(1u64.to_le_bytes());
    v.extend(0u64.to_le_bytes());
    v.extend(u32::MAX.to_le_bytes());
    s.write_all(&v).unwrap();
    assert_eq!(expect_error(&mut s, 6), libc::EBADMSG as u32);
    // Tscreate with an invalid kind (9) in the attributes.
    let mut v = hdr(7 + 8 + 37, 162, 7);
    v.extend(1u64.to_le_bytes());
    v.push(9);
    v.extend([0u8; 36]);
    s.write_all(&v).unwrap();
    assert_eq!(expect_error(&mut s, 7), libc::EBADMSG as u32);
    // Still usable.
    send(&mut s, Tag(8), Tsstat { id: 424242 }.into());
    assert_eq!(expect_error(&mut s, 8), libc::ENOENT as u32);
    f.finish();
}

#[test]
fn broken_framing_closes_only_that_connection() {
    let f = Fixture::new();
    let mut other = f.client();
    other.create(ObjectId(9), &attr()).unwrap();
    // Size below the header.
    let mut s = versioned(&f.tcp);
    s.write_all(&3u32.to_le_bytes()).unwrap();
    expect_closed(&mut s);
    // Size above msize (8192 negotiated): an oversized write.
    let mut s = versioned(&f.unix);
    send(
        &mut s,
        Tag(1),
        Tswrite {
            id: 9,
            offset: 0,
            data: Bytes::from(vec![1u8; 100_000]),
        }
        .into(),
    );
    expect_closed(&mut s);
    // Size field claiming 4 GiB before version.
    let mut s = raw(&f.tcp);
    s.write_all(&hdr(u32::MAX, 170, 1)).unwrap();
    expect_closed(&mut s);
    // The other client is unaffected and the object was not written.
    assert_eq!(other.stat(ObjectId(9)).unwrap().size, 0);
    f.finish();
}

#[test]
fn disconnect_mid_frame_leaves_store_intact() {
    let f = Fixture::new();
    let mut c = f.client();
    c.create(ObjectId(3), &attr()).unwrap();
    c.write(ObjectId(3), 0, Bytes::from_static(b"original"))
        .unwrap();
    for cut in [2usize, 7, 20, 27, 1000] {
        let mut s = versioned(&f.tcp);
        let mut out = BytesMut::new();
        encode(
            Tag(1),
            &Tswrite {
                id: 3,
                offset: 0,
                data: Bytes::from(vec![b'X'; 4000]),
            }
            .into(),
            Dialect::Storage,
            8192,
            &mut out,
        )
        .unwrap();
        s.write_all(&out[..cut]).unwrap();
        drop(s);
    }
    // A client that sends a full request and leaves without reading the reply.
    let mut s = versioned(&f.unix);
    send(
        &mut s,
        Tag(1),
        Tswrite {
            id: 3,
            offset: 8,
            data: Bytes::from_static(b"+tail"),
        }
        .into(),
    );
    drop(s);
    // Give the server a moment, then everything is as the complete requests left it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let data = c.read(ObjectId(3), 0, 100).unwrap();
        if &data[..] == b"original+tail" || std::time::Instant::now() > deadline {
            assert_eq!(&data[..], b"original+tail");
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f.finish();
}

#[test]
fn client_write_larger_than_msize_refused_locally() {
    let f = Fixture::new();
    let mut c = StorageClient::connect(&f.tcp, 8192).unwrap();
    c.create(ObjectId(1), &attr()).unwrap();
    let e = c
        .write(ObjectId(1), 0, Bytes::from(vec![0u8; 9000]))
        .unwrap_err();
    assert!(matches!(e, ClientError::Encode(_)), "{e}");
    assert_eq!(c.stat(ObjectId(1)).unwrap().size, 0);
    f.finish();
}

#[test]
fn serve_binary_answers_over_tcp() {
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("bin.sock");
    let bin = env!("CARGO_BIN_EXE_envoy-storaged");
    let mut child = std::process::Command::new(bin)
        .args(["serve", "--engine", "sync", "--dir"])
        .arg(d.path().join("store"))
        .arg("--listen")
        .arg(format!("unix:{}", sock.display()))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut client = None;
    for _ in 0..200 {
        if let Ok(c) = StorageClient::connect_unix(&sock) {
            client = Some(c);
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let result = client.map(|mut c| {
        let r = c.reserve(1).unwrap();
        c.create(r.first, &attr()).unwrap();
        c.write(r.first, 0, Bytes::from_static(b"hi")).unwrap();
        c.read(r.first, 0, 10).unwrap()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(result.as_deref(), Some(&b"hi"[..]));
    assert!(check(&d.path().join("store")).is_clean());
}

#[test]
fn random_garbage_frames_never_take_the_server_down() {
    let f = Fixture::new();
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..20 {
        let mut s = versioned(&f.tcp);
        for i in 0..20u16 {
            let body_len = (next() % 120) as usize;
            let ty = 160 + (next() % 20) as u8;
            let mut v = hdr((7 + body_len) as u32, ty, i);
            v.extend((0..body_len).map(|_| next() as u8));
            if s.write_all(&v).is_err() {
                break;
            }
            // Every well-framed request gets exactly one reply with its tag.
            match read_frame(&mut s) {
                Some(r) => assert_eq!(r.tag, Tag(i)),
                None => break,
            }
        }
    }
    // Whatever the garbage did (it may have created, written or deleted objects by chance),
    // the server still serves and the store is consistent.
    let mut c = f.client();
    assert!(c.reserve(1).is_ok());
    f.finish();
}

#[test]
fn serve_binary_killed_mid_workload_recovers_clean() {
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("kill.sock");
    let store_dir = d.path().join("store");
    let bin = env!("CARGO_BIN_EXE_envoy-storaged");
    let mut child = std::process::Command::new(bin)
        .args(["serve", "--dir"])
        .arg(&store_dir)
        .arg("--listen")
        .arg(format!("unix:{}", sock.display()))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut clients = Vec::new();
    for _ in 0..200 {
        if let Ok(c) = StorageClient::connect_unix(&sock) {
            clients.push(c);
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let Some(mut first) = clients.pop() else {
        child.kill().unwrap();
        panic!("server did not come up");
    };
    let base = first.reserve(100_000).unwrap().first.0;
    // Four clients create, write, rename (wstat) and clone as fast as they can until the
    // server dies under them.
    let workers: Vec<_> = (0..4u64)
        .map(|t| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let Ok(mut c) = StorageClient::connect_unix(&sock) else {
                    return (t, 0u64);
                };
                let mut done = 0u64;
                for i in 0..10_000u64 {
                    let id = ObjectId(base + t * 20_000 + 2 * i);
                    let ok = c.create(id, &attr()).is_ok()
                        && c.write(id, 0, Bytes::from(vec![t as u8; 3000])).is_ok()
                        && c.wstat(
                            id,
                            &AttrChange {
                                uid: Some(9),
                                ..Default::default()
                            },
                        )
                        .is_ok()
                        && c.clone_object(id, ObjectId(id.0 + 1)).is_ok();
                    if !ok {
                        break;
                    }
                    done += 1;
                }
                (t, done)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let done: Vec<(u64, u64)> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    assert!(
        done.iter().any(|&(_, n)| n > 0),
        "no work was done before the kill"
    );
    // Reopening runs recovery; the store then checks clean and every acknowledged object is
    // complete.
    let s = ObjectStore::open(&store_dir, StoreOptions::default()).unwrap();
    for st in s.objects() {
        let st = st.unwrap();
        assert!(st.size == 0 || st.size == 3000, "{st:?}");
    }
    for &(t, n) in &done {
        for i in 0..n {
            let id = ObjectId(base + t * 20_000 + 2 * i);
            let st = s.stat(id).unwrap();
            assert_eq!((st.attr.uid, st.size), (9, 3000));
            let copy = s.stat(ObjectId(id.0 + 1)).unwrap();
            assert_eq!((copy.attr.uid, copy.size), (9, 3000));
        }
    }
    drop(s);
    let r = check(&store_dir);
    assert!(r.is_clean(), "{r}");
}
