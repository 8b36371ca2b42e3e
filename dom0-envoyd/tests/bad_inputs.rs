//! BAD-INPUTS.md, class by class, over raw frames: the server answers with the protocol's
//! error (or closes only the offending connection) and keeps serving everyone else.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use envoy_proto::{
    decode, encode, Dialect, Fid, FrameSplitter, Message, Tag, Tattach, Tclunk, Tread, Tversion,
    Twalk, Twrite,
};

const E: fn(i32) -> u32 = |e| e as u32;

fn frame(tag: u16, msg: Message, d: Dialect) -> Vec<u8> {
    let mut b = BytesMut::new();
    encode(Tag(tag), &msg, d, 1 << 30, &mut b).unwrap();
    b.to_vec()
}

/// Sends `bytes` with tag `tag` reserved and returns the decoded reply.
fn raw_rpc(c: &Client, tag: u16, bytes: &[u8]) -> Message {
    let t = c.reserve_raw_tag(Tag(tag)).unwrap();
    c.send_raw(bytes).unwrap();
    let r = c.wait_raw(t).unwrap();
    decode(r, c.dialect(), c.msize()).unwrap().msg
}

fn lerror(m: &Message) -> u32 {
    match m {
        Message::Rlerror(e) => e.ecode,
        other => panic!("expected Rlerror, got {other:?}"),
    }
}

/// A server that still answers on a fresh connection.
fn still_serving(env: &Env) {
    let c = env.attach(0);
    c.getattr(ROOT, envoy_proto::getattr::BASIC).unwrap();
}

#[test]
fn names_bad_components_rejected() {
    let env = Env::new();
    let c = env.attach(0);
    create_file(&c, ROOT, "ok", b"");
    for bad in ["", ".", "a/b", "/", "ok/"] {
        assert_eq!(
            errno(c.walk(ROOT, Fid(10), &[bad])),
            E(libc::EINVAL),
            "{bad:?}"
        );
    }
    assert_eq!(
        errno(c.walk(ROOT, Fid(10), &[&"n".repeat(256)])),
        E(libc::ENAMETOOLONG)
    );
    // NUL inside a name: the frame is built by hand (the codec refuses to encode it)
    let mut f = frame(
        7,
        Twalk {
            fid: ROOT,
            newfid: Fid(11),
            wnames: vec!["aXb".into()],
        }
        .into(),
        Dialect::P2000L,
    );
    let pos = f.iter().rposition(|&b| b == b'X').unwrap();
    f[pos] = 0;
    assert_eq!(lerror(&raw_rpc(&c, 7, &f)), E(libc::EINVAL));
    // nwname 17
    let mut w = vec![0u8; 4];
    w.push(110);
    w.extend_from_slice(&8u16.to_le_bytes());
    w.extend_from_slice(&ROOT.0.to_le_bytes());
    w.extend_from_slice(&12u32.to_le_bytes());
    w.extend_from_slice(&17u16.to_le_bytes());
    for _ in 0..17 {
        w.extend_from_slice(&1u16.to_le_bytes());
        w.push(b'a');
    }
    let n = w.len() as u32;
    w[..4].copy_from_slice(&n.to_le_bytes());
    assert_eq!(lerror(&raw_rpc(&c, 8, &w)), E(libc::EINVAL));
    // .. at the root stays at the root, 16 times over
    let q = c.getattr(ROOT, envoy_proto::getattr::BASIC).unwrap().qid;
    let up = c.walk(ROOT, Fid(13), &[".."; 16]).unwrap();
    assert!(up.iter().all(|x| *x == q));
    still_serving(&env);
}

#[test]
fn escapes_dotdot_symlink_other_image() {
    let env = Env::new();
    // a second image next to /default, attached by the same client
    let admin = env.client("9P2000.L");
    admin.attach(Fid(1), Fid::NOFID, "root", "/", 0).unwrap();
    admin.mkdir(Fid(1), "other", 0o777, 0).unwrap();
    let c = env.attach(0);
    c.attach(Fid(2), Fid::NOFID, "root", "/other", 0).unwrap();
    create_file(&c, ROOT, "mine", b"default image");
    // .. from the image root does not reach the global root
    let q = c.walk(ROOT, Fid(3), &[".."]).unwrap();
    assert_eq!(
        q[0],
        c.getattr(ROOT, envoy_proto::getattr::BASIC).unwrap().qid
    );
    assert_eq!(errno(c.walk(Fid(3), Fid(4), &["other"])), E(libc::ENOENT));
    // renames and links into the other image are refused
    assert_eq!(
        errno(c.renameat(ROOT, "mine", Fid(2), "stolen")),
        E(libc::EXDEV)
    );
    let m = c.alloc_fid();
    c.walk(ROOT, m, &["mine"]).unwrap();
    assert_eq!(errno(c.link(Fid(2), m, "stolen")), E(libc::EXDEV));
    assert_eq!(errno(c.rename(m, Fid(2), "stolen")), E(libc::EXDEV));
    // a symlink pointing outside is just bytes
    c.symlink(ROOT, "esc", "../../../../etc", 0).unwrap();
    assert_eq!(c.walk(ROOT, Fid(5), &["esc", "passwd"]).unwrap().len(), 1);
}

#[test]
fn sizes_msize_counts_offsets() {
    let env = Env::new();
    let c = env.raw_client();
    assert!(matches!(
        c.handshake(1024, "9P2000.L"),
        Err(ClientError::Version { .. })
    ));
    let n = c.handshake(u32::MAX, "9P2000.L").unwrap();
    assert_eq!(n.msize, 256 * 1024, "clamped to the server maximum");
    let other = env.raw_client();
    assert!(matches!(
        other.handshake(8192, "9P3000"),
        Err(ClientError::Version { .. })
    ));
    c.attach(ROOT, Fid::NOFID, "root", "/default", 0).unwrap();
    create_file(&c, ROOT, "f", b"abc");
    let f = c.alloc_fid();
    c.walk(ROOT, f, &["f"]).unwrap();
    c.lopen(f, O_RDWR).unwrap();
    // read count above msize - 11: the codec rejects it, the server answers EINVAL
    let mut t = frame(
        20,
        Tread {
            fid: f,
            offset: 0,
            count: 1000,
        }
        .into(),
        Dialect::P2000L,
    );
    let cnt = t.len() - 4;
    t[cnt..].copy_from_slice(&(n.msize).to_le_bytes());
    assert_eq!(lerror(&raw_rpc(&c, 20, &t)), E(libc::EINVAL));
    // offset + count overflow
    assert_eq!(errno(c.read(f, u64::MAX - 5, 100)), E(libc::EINVAL));
    assert_eq!(errno(c.write(f, u64::MAX - 1, &b"xy"[..])), E(libc::EFBIG));
    // a write whose count runs past the frame
    let mut w = frame(
        21,
        Twrite {
            fid: f,
            offset: 0,
            data: Bytes::from_static(b"zz"),
        }
        .into(),
        Dialect::P2000L,
    );
    let at = 7 + 4 + 8;
    w[at..at + 4].copy_from_slice(&100u32.to_le_bytes());
    assert_eq!(lerror(&raw_rpc(&c, 21, &w)), E(libc::EINVAL));
    assert_eq!(c.read(f, 0, 10).unwrap(), &b"abc"[..], "nothing written");
    // a frame larger than msize closes this connection only
    let mut big = frame(
        22,
        Twrite {
            fid: f,
            offset: 0,
            data: Bytes::from(vec![7u8; 300 * 1024]),
        }
        .into(),
        Dialect::P2000L,
    );
    big.truncate(64);
    c.send_raw(&big).unwrap();
    assert!(c.wait_disconnected(Duration::from_secs(10)));
    still_serving(&env);
}

#[test]
fn fids_reuse_clunked_removed_open_limits() {
    let env = Env::with_fids(32);
    let c = env.attach(0);
    create_file(&c, ROOT, "f", b"x");
    c.walk(ROOT, Fid(2), &["f"]).unwrap();
    assert_eq!(
        errno(c.walk(ROOT, Fid(2), &[])),
        E(libc::EBADF),
        "newfid in use"
    );
    c.lopen(Fid(2), O_RDONLY).unwrap();
    assert_eq!(
        errno(c.walk(Fid(2), Fid(3), &[])),
        E(libc::EBADF),
        "walk from an open fid"
    );
    c.clunk(Fid(2)).unwrap();
    assert_eq!(errno(c.read(Fid(2), 0, 1)), E(libc::EBADF), "clunked");
    assert_eq!(errno(c.clunk(Fid(2))), E(libc::EBADF));
    assert_eq!(
        errno(c.getattr(Fid(77), 0)),
        E(libc::EBADF),
        "never created"
    );
    c.walk(ROOT, Fid(4), &["f"]).unwrap();
    c.remove(Fid(4)).unwrap();
    assert_eq!(errno(c.getattr(Fid(4), 0)), E(libc::EBADF), "removed");
    assert_eq!(errno(c.walk(ROOT, Fid(5), &["f"])), E(libc::ENOENT));
    // the table is bounded
    let mut made = 1; // ROOT
    let mut last = 0;
    for i in 100..200 {
        match c.walk(ROOT, Fid(i), &[]) {
            Ok(_) => made += 1,
            Err(e) => {
                last = e.errno().unwrap();
                break;
            }
        }
    }
    assert_eq!(made, 32);
    assert_eq!(last, E(libc::EMFILE));
    // xattr fids count too
    assert_eq!(errno(c.xattrwalk(ROOT, Fid(300), "")), E(libc::EMFILE));
    c.clunk(Fid(100)).unwrap();
    c.walk(ROOT, Fid(100), &[]).unwrap();
    // Tversion clunks everything
    c.handshake(65536, "9P2000.L").unwrap();
    assert_eq!(errno(c.getattr(ROOT, 0)), E(libc::EBADF));
}

#[test]
fn clunk_while_read_in_flight_is_safe() {
    let env = Env::new();
    let c = env.attach(0);
    create_file(&c, ROOT, "big", &vec![3u8; 200 * 1024]);
    for round in 0..20u32 {
        let f = Fid(1000 + round);
        c.walk(ROOT, f, &["big"]).unwrap();
        c.lopen(f, O_RDONLY).unwrap();
        let t1 = c
            .send(
                Tread {
                    fid: f,
                    offset: 0,
                    count: 60000,
                }
                .into(),
            )
            .unwrap();
        let t2 = c.send(Tclunk { fid: f }.into()).unwrap();
        let r1 = c.wait(t1);
        assert!(
            matches!(r1, Ok(Message::Rread(_)))
                || r1.as_ref().err().and_then(|e| e.errno()) == Some(E(libc::EBADF))
        );
        assert!(matches!(c.wait(t2).unwrap(), Message::Rclunk(_)));
    }
    still_serving(&env);
}

#[test]
fn tags_flush_unknown_notag() {
    let env = Env::new();
    let c = env.attach(0);
    c.flush(Tag(4321)).unwrap();
    // NOTAG outside Tversion
    let f = frame(0xffff, Tclunk { fid: ROOT }.into(), Dialect::P2000L);
    assert_eq!(lerror(&raw_rpc(&c, 0xffff, &f)), E(libc::EINVAL));
    c.getattr(ROOT, 0).unwrap();
}

/// A raw socket whose replies we do not read, so the server's writer blocks and requests
/// stay in flight: duplicate tags and flush ordering become deterministic.
#[test]
fn tags_duplicate_in_flight_and_flush_after_reply() {
    let env = Env::new();
    let setup = env.attach(0);
    create_file(&setup, ROOT, "big", &vec![9u8; 250 * 1024]);
    let mut s = std::net::TcpStream::connect(&env.addr).unwrap();
    // A small fixed receive buffer (no autotuning) so the server's writer blocks early.
    nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBuf, &65536).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let d = Dialect::P2000L;
    let msize = 256 * 1024;
    s.write_all(&frame(
        0xffff,
        Tversion {
            msize,
            version: "9P2000.L".into(),
        }
        .into(),
        d,
    ))
    .unwrap();
    let mut rx = BytesMut::new();
    let sp = FrameSplitter::new(msize);
    let next = |s: &mut std::net::TcpStream, rx: &mut BytesMut| -> envoy_proto::Frame {
        loop {
            if let Some(f) = sp.next_frame(rx).unwrap() {
                return decode(f, d, msize).unwrap();
            }
            let mut b = vec![0u8; 1 << 16];
            let n = s.read(&mut b).unwrap();
            assert!(n > 0, "server closed");
            rx.extend_from_slice(&b[..n]);
        }
    };
    assert!(matches!(next(&mut s, &mut rx).msg, Message::Rversion(_)));
    // Requests of one connection run concurrently: wait for each reply before the next.
    let setup_msgs: Vec<Message> = vec![
        Tattach {
            fid: Fid(1),
            afid: Fid::NOFID,
            uname: "r".into(),
            aname: "".into(),
            n_uname: 0,
        }
        .into(),
        Twalk {
            fid: Fid(1),
            newfid: Fid(2),
            wnames: vec!["big".into()],
        }
        .into(),
        envoy_proto::Tlopen {
            fid: Fid(2),
            flags: 0,
        }
        .into(),
    ];
    for (i, m) in setup_msgs.into_iter().enumerate() {
        s.write_all(&frame(1 + i as u16, m, d)).unwrap();
        let r = next(&mut s, &mut rx);
        assert!(!matches!(r.msg, Message::Rlerror(_)), "{r:?}");
    }
    // 240 reads of 250 KiB = 60 MB of replies nobody reads yet.
    let mut batch = Vec::new();
    for tag in 10..250u16 {
        batch.extend(frame(
            tag,
            Tread {
                fid: Fid(2),
                offset: 0,
                count: 250 * 1024,
            }
            .into(),
            d,
        ));
    }
    s.write_all(&batch).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // The last request of a read (249) runs on the connection's own thread and may be
    // answered first; 248 and 247 run on the worker pool behind ~60 MB of other replies.
    // Tag 248 is still in flight: a duplicate gets EINVAL; a flush of 247 waits for its reply.
    s.write_all(&frame(248, envoy_proto::Tclunk { fid: Fid(2) }.into(), d))
        .unwrap();
    s.write_all(&frame(
        500,
        envoy_proto::Tflush { oldtag: Tag(247) }.into(),
        d,
    ))
    .unwrap();
    // meanwhile other connections are served
    still_serving(&env);
    let mut order = Vec::new();
    let mut dup_error = false;
    while order.len() < 241 || !dup_error {
        let f = next(&mut s, &mut rx);
        match f.msg {
            Message::Rlerror(e) if f.tag.0 == 248 => {
                assert_eq!(e.ecode, E(libc::EINVAL));
                dup_error = true;
            }
            Message::Rread(_) | Message::Rflush(_) => order.push(f.tag.0),
            other => panic!("unexpected {other:?} for tag {}", f.tag),
        }
    }
    assert!(dup_error, "duplicate tag answered with an error");
    let flush_pos = order.iter().position(|&t| t == 500).unwrap();
    let read_pos = order.iter().position(|&t| t == 247).unwrap();
    assert!(read_pos < flush_pos, "Rflush after the flushed reply");
    assert!(
        order.contains(&248),
        "the original request with tag 248 completed"
    );
}

#[test]
fn framing_hostile_frames() {
    let env = Env::new();
    // R-message and unknown type: answered, connection kept
    let c = env.attach(0);
    let r = frame(5, envoy_proto::Rclunk {}.into(), Dialect::P2000L);
    assert_eq!(lerror(&raw_rpc(&c, 5, &r)), E(libc::EOPNOTSUPP));
    let unknown = [7u8, 0, 0, 0, 250, 6, 0];
    assert_eq!(lerror(&raw_rpc(&c, 6, &unknown)), E(libc::EOPNOTSUPP));
    let notdialect = frame(9, envoy_proto::Tstat { fid: ROOT }.into(), Dialect::P2000u);
    assert_eq!(lerror(&raw_rpc(&c, 9, &notdialect)), E(libc::EOPNOTSUPP));
    // a string running past the frame
    let mut w = frame(
        7,
        Twalk {
            fid: ROOT,
            newfid: Fid(8),
            wnames: vec!["abc".into()],
        }
        .into(),
        Dialect::P2000L,
    );
    let at = w.len() - 5;
    w[at..at + 2].copy_from_slice(&200u16.to_le_bytes());
    assert_eq!(lerror(&raw_rpc(&c, 7, &w)), E(libc::EINVAL));
    c.getattr(ROOT, 0).unwrap();
    // size below the header: closed
    let c2 = env.attach(0);
    c2.send_raw(&[5, 0, 0, 0, 100, 0, 0]).unwrap();
    assert!(c2.wait_disconnected(Duration::from_secs(10)));
    // size above msize: closed
    let c3 = env.attach(0);
    c3.send_raw(&[0, 0, 0, 0x10, 118, 1, 0]).unwrap();
    assert!(c3.wait_disconnected(Duration::from_secs(10)));
    // a frame cut off by a disconnect
    let c4 = env.attach(0);
    c4.send_raw(&[100, 0, 0, 0, 118, 1, 0, 1, 0]).unwrap();
    c4.shutdown();
    drop(c4);
    // a request before Tversion
    let c5 = env.raw_client();
    let m = raw_rpc(
        &c5,
        3,
        &frame(3, Tclunk { fid: Fid(1) }.into(), Dialect::P2000L),
    );
    assert_eq!(lerror(&m), E(libc::EPROTO));
    std::thread::sleep(Duration::from_millis(100));
    still_serving(&env);
    c.getattr(ROOT, 0).unwrap();
}

#[test]
fn identity_qid_paths_unique_and_stable() {
    let env = Env::new();
    let c = env.attach(0);
    let mut seen = std::collections::HashSet::new();
    seen.insert(c.getattr(ROOT, 0).unwrap().qid.path);
    for i in 0..50 {
        let f = c.alloc_fid();
        c.walk(ROOT, f, &[]).unwrap();
        let q = c
            .lcreate(f, &format!("f{i}"), O_RDWR, 0o644, 0)
            .unwrap()
            .qid;
        assert!(seen.insert(q.path), "qid.path reused");
        c.write_all(f, 0, b"x").unwrap();
        assert_eq!(
            c.getattr(f, 0).unwrap().qid.path,
            q.path,
            "stable across writes"
        );
        c.clunk(f).unwrap();
        if i % 2 == 0 {
            c.unlinkat(ROOT, &format!("f{i}"), 0).unwrap();
        }
    }
}

#[test]
fn resources_disconnect_releases_unlinked_object() {
    let env = Env::new();
    let store = std::sync::Arc::clone(env.server().fs().store());
    let before = store.usage().unwrap().objects;
    {
        let c = env.attach(0);
        create_file(&c, ROOT, "scratch", &vec![1u8; 10000]);
        let f = c.alloc_fid();
        c.walk(ROOT, f, &["scratch"]).unwrap();
        c.lopen(f, O_RDWR).unwrap();
        c.unlinkat(ROOT, "scratch", 0).unwrap();
        assert_eq!(
            store.usage().unwrap().objects,
            before + 1,
            "kept while open"
        );
        c.shutdown();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.usage().unwrap().objects != before && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        store.usage().unwrap().objects,
        before,
        "deleted after the disconnect"
    );
}

/// Linux reuses tag 0 for every synchronous request: the next request with the same tag can
/// arrive the instant the reply does, and must not be taken for a duplicate.
#[test]
fn tags_reused_immediately_after_reply_accepted() {
    let env = Env::new();
    let c = env.attach(0);
    let f = frame(
        0,
        envoy_proto::Tgetattr {
            fid: ROOT,
            request_mask: 0x7ff,
        }
        .into(),
        Dialect::P2000L,
    );
    for _ in 0..2000 {
        let m = raw_rpc(&c, 0, &f);
        assert!(matches!(m, Message::Rgetattr(_)), "{m:?}");
    }
}

#[test]
fn xattr_fids_bounded_declared_bytes_and_read_before_write() {
    let env = Env::new();
    let c = env.attach(0);
    create_file(&c, ROOT, "f", b"");
    let mut made = 0;
    let mut last = 0;
    for i in 0..100u32 {
        let x = Fid(500 + i);
        c.walk(ROOT, x, &["f"]).unwrap();
        match c.xattrcreate(x, &format!("user.a{i}"), 65536, 0) {
            Ok(()) => made += 1,
            Err(e) => {
                last = e.errno().unwrap();
                break;
            }
        }
    }
    assert_eq!(made, 64, "4 MiB of pending values per connection");
    assert_eq!(last, E(libc::ENOSPC));
    // an xattr write fid cannot be read, and writes past the declared size fail
    assert_eq!(errno(c.read(Fid(500), 0, 10)), E(libc::EBADF));
    assert_eq!(
        errno(c.write(Fid(500), 65530, &b"0123456789"[..])),
        E(libc::EINVAL)
    );
    assert_eq!(
        errno(c.write(Fid(500), 5, &b"x"[..])),
        E(libc::EINVAL),
        "not sequential"
    );
    // clunking them (incomplete) frees the budget
    for i in 0..64u32 {
        assert_eq!(errno(c.clunk(Fid(500 + i))), E(libc::EINVAL));
    }
    c.walk(ROOT, Fid(700), &["f"]).unwrap();
    c.xattrcreate(Fid(700), "user.ok", 2, 0).unwrap();
    c.write_all(Fid(700), 0, b"ok").unwrap();
    c.clunk(Fid(700)).unwrap();
    assert_eq!(
        c.xattrwalk(ROOT, Fid(701), "").unwrap(),
        0,
        "the root has none"
    );
}
