//! The 9P client library against Debian's diod (a real 9P2000.L server).
//!
//! Each test starts its own diod on 127.0.0.1 with a temporary export. Without diod installed
//! the tests print a loud SKIPPING line and pass (scripts/install-deps.sh installs it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use envoy_proto::{lock, lopen, Dialect, Fid, Message, Tag};
use guest_shim::client::{Client, ClientError, Tgetlock, Tlock};

#[test]
fn handshake_9p2000l_negotiates_msize_and_dialect() {
    let Some(d) = common::start_diod("handshake_9p2000l_negotiates_msize_and_dialect") else {
        return;
    };
    let c = Client::connect(&d.endpoint()).unwrap();
    let n = c.handshake(1 << 20, "9P2000.L").unwrap();
    assert_eq!(n.dialect, Dialect::P2000L);
    assert!(n.msize <= 1 << 20 && n.msize >= 4096, "msize {}", n.msize);
    assert_eq!(c.msize(), n.msize);
    assert_eq!(c.max_io(), n.msize - 24);
}

#[test]
fn handshake_unknown_version_is_refused() {
    let Some(d) = common::start_diod("handshake_unknown_version_is_refused") else {
        return;
    };
    let c = Client::connect(&d.endpoint()).unwrap();
    let err = c.handshake(65536, "9P2000.bogus").unwrap_err();
    // 9P says Rversion "unknown"; diod answers Rlerror(EIO). Either way the client keeps its
    // pre-handshake msize.
    assert!(
        matches!(err, ClientError::Version { ref got, .. } if got == "unknown")
            || err.errno().is_some(),
        "{err}"
    );
    assert_eq!(c.msize(), guest_shim::client::DEFAULT_MSIZE);
}

#[test]
fn file_battery_against_diod_passes() {
    let Some(d) = common::start_diod("file_battery_against_diod_passes") else {
        return;
    };
    let c = d.session(65536);
    common::file_battery(&c, d.export.path());
}

#[test]
fn walk_path_deeper_than_16_splits_walks() {
    let Some(d) = common::start_diod("walk_path_deeper_than_16_splits_walks") else {
        return;
    };
    let names: Vec<String> = (0..40).map(|i| format!("d{i}")).collect();
    let deep = d.export.path().join(names.join("/"));
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("leaf"), b"deep leaf\n").unwrap();
    let c = d.session(65536);

    let f = c.alloc_fid();
    let qids = c
        .walk_path(Fid(0), f, &format!("{}/leaf", names.join("/")))
        .unwrap();
    assert_eq!(qids.len(), 41);
    c.lopen(f, lopen::RDONLY).unwrap();
    assert_eq!(c.read_all(f).unwrap(), b"deep leaf\n");
    c.clunk(f).unwrap();

    // Missing in the second chunk: WalkIncomplete, and the fid is free again.
    let g = c.alloc_fid();
    let err = c
        .walk_path(Fid(0), g, &format!("{}/nothere", names[..20].join("/")))
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::WalkIncomplete {
                walked: 20,
                wanted: 21
            }
        ),
        "{err}"
    );
    c.walk(Fid(0), g, &[]).unwrap(); // g is unused: reusable as a newfid
    c.clunk(g).unwrap();
}

#[test]
fn pipelined_requests_from_many_threads_all_complete() {
    let Some(d) = common::start_diod("pipelined_requests_from_many_threads_all_complete") else {
        return;
    };
    for i in 0..8 {
        std::fs::write(
            d.export.path().join(format!("f{i}")),
            format!("contents {i}"),
        )
        .unwrap();
    }
    let c = Arc::new(d.session(65536));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let c = Arc::clone(&c);
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let f = c.alloc_fid();
                    c.walk(Fid(0), f, &[&format!("f{i}")]).unwrap();
                    c.lopen(f, lopen::RDONLY).unwrap();
                    assert_eq!(
                        c.read(f, 0, 100).unwrap(),
                        format!("contents {i}").as_bytes()
                    );
                    c.clunk(f).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(c.stray_replies(), 0);
}

#[test]
fn send_many_then_wait_in_reverse_order_matches_tags() {
    let Some(d) = common::start_diod("send_many_then_wait_in_reverse_order_matches_tags") else {
        return;
    };
    for i in 0..20 {
        std::fs::write(d.export.path().join(format!("f{i}")), vec![b'x'; i]).unwrap();
    }
    let c = d.session(65536);
    let fids: Vec<Fid> = (0..20).map(|_| c.alloc_fid()).collect();
    let tags: Vec<Tag> = fids
        .iter()
        .enumerate()
        .map(|(i, f)| {
            c.send(
                envoy_proto::Twalk {
                    fid: Fid(0),
                    newfid: *f,
                    wnames: vec![format!("f{i}")],
                }
                .into(),
            )
            .unwrap()
        })
        .collect();
    let mut distinct = tags.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), tags.len());
    for t in tags.iter().rev() {
        assert!(matches!(c.wait(*t).unwrap(), Message::Rwalk(r) if r.wqids.len() == 1));
    }
    let tags: Vec<(usize, Tag)> = fids
        .iter()
        .enumerate()
        .map(|(i, f)| {
            (
                i,
                c.send(
                    envoy_proto::Tgetattr {
                        fid: *f,
                        request_mask: 0x200,
                    }
                    .into(),
                )
                .unwrap(),
            )
        })
        .collect();
    for (i, t) in tags.into_iter().rev() {
        let Message::Rgetattr(a) = c.wait(t).unwrap() else {
            panic!("not Rgetattr");
        };
        assert_eq!(a.size, i as u64);
    }
    assert!(matches!(c.wait(Tag(4242)), Err(ClientError::UnknownTag(_))));
}

#[test]
fn flush_of_idle_tag_returns_and_connection_stays_usable() {
    let Some(d) = common::start_diod("flush_of_idle_tag_returns_and_connection_stays_usable")
    else {
        return;
    };
    let c = d.session(65536);
    c.flush(Tag(77)).unwrap();
    // A request that is answered before the flush keeps its reply.
    let t = c.send(envoy_proto::Tstatfs { fid: Fid(0) }.into()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !c.reply_arrived(t) {
        assert!(std::time::Instant::now() < deadline, "no Rstatfs");
        std::thread::sleep(Duration::from_millis(5));
    }
    c.flush(t).unwrap();
    assert!(matches!(c.wait(t).unwrap(), Message::Rstatfs(_)));
    assert!(c.statfs(Fid(0)).is_ok());
}

#[test]
fn xattr_and_locks_round_trip() {
    let Some(d) = common::start_diod("xattr_and_locks_round_trip") else {
        return;
    };
    let c = d.session(65536);
    let f = c.alloc_fid();
    c.walk(Fid(0), f, &[]).unwrap();
    c.lcreate(f, "locked", lopen::RDWR, 0o600, common::me().gid)
        .unwrap();
    let req = |ty| Tlock {
        fid: f,
        ty,
        flags: 0,
        start: 0,
        length: 0,
        proc_id: 1,
        client_id: "guest-shim-test".into(),
    };
    assert_eq!(c.lock(req(lock::TYPE_WRLCK)).unwrap(), lock::STATUS_SUCCESS);
    let held = c
        .getlock(Tgetlock {
            fid: f,
            ty: lock::TYPE_RDLCK,
            start: 0,
            length: 0,
            proc_id: 1,
            client_id: "guest-shim-test".into(),
        })
        .unwrap();
    // The same owner may always take the lock: nothing conflicts.
    assert_eq!(held.ty, lock::TYPE_UNLCK);
    assert_eq!(c.lock(req(lock::TYPE_UNLCK)).unwrap(), lock::STATUS_SUCCESS);

    // trusted.* xattrs work as root on any Linux file system that has them; others get
    // user.*, which some file systems (older tmpfs) lack.
    let name = if common::me().uid == 0 {
        "trusted.envoy"
    } else {
        "user.envoy"
    };
    let x = c.alloc_fid();
    c.walk(f, x, &[]).unwrap();
    let value = b"envoy";
    // The value is set when the xattr fid is clunked.
    let set = c
        .xattrcreate(x, name, value.len() as u64, 0)
        .and_then(|()| c.write(x, 0, &value[..]))
        .and_then(|n| {
            assert_eq!(n, value.len() as u32);
            c.clunk(x)
        });
    match set {
        Ok(()) => {
            let r = c.alloc_fid();
            let size = c.xattrwalk(f, r, name).unwrap();
            assert_eq!(size, value.len() as u64);
            assert_eq!(c.read(r, 0, 64).unwrap(), &value[..]);
            c.clunk(r).unwrap();
        }
        Err(e) => {
            // The export's file system has no such xattrs: the error must be a proper errno.
            assert!(e.errno().is_some(), "{e}");
            eprintln!("note: {name} unsupported on the temp dir's file system: {e}");
            let _ = c.clunk(x);
        }
    }
    c.clunk(f).unwrap();
}

#[test]
fn oversized_raw_frame_makes_server_disconnect_and_waiters_fail() {
    let Some(d) =
        common::start_diod("oversized_raw_frame_makes_server_disconnect_and_waiters_fail")
    else {
        return;
    };
    let c = d.session(8192);
    // A hand-made Tclunk of an unknown fid, collected through a reserved tag.
    let t = c.reserve_raw_tag(Tag(9)).unwrap();
    c.send_raw(&[11, 0, 0, 0, 120, 9, 0, 0x55, 0, 0, 0])
        .unwrap();
    let err = c.wait(t).unwrap_err();
    assert!(err.errno().is_some(), "{err}");

    let t = c.reserve_raw_tag(Tag(10)).unwrap();
    let mut frame = 10_000_000u32.to_le_bytes().to_vec();
    frame.extend_from_slice(&[120, 10, 0, 0, 0, 0, 0]);
    c.send_raw(&frame).unwrap();
    assert!(c.wait_disconnected(Duration::from_secs(10)));
    assert!(c.wait(t).unwrap_err().is_disconnected());
    assert!(c.statfs(Fid(0)).unwrap_err().is_disconnected());
}

/// Opens the FIFO `path` for writing from the host after `delay`, releasing a server thread
/// blocked opening it for reading.
fn open_writer_later(path: std::path::PathBuf, delay: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let _w = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    })
}

fn mkfifo(path: &std::path::Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
}

#[test]
fn wait_timeout_on_stalled_request_then_late_reply_frees_tag() {
    let Some(d) = common::start_diod("wait_timeout_on_stalled_request_then_late_reply_frees_tag")
    else {
        return;
    };
    // diod opens a FIFO on Tlopen, which blocks until a writer appears: a request that is
    // really outstanding on the server.
    let fifo = d.export.path().join("pipe");
    mkfifo(&fifo);
    let c = d.session(65536);
    let f = c.alloc_fid();
    c.walk(Fid(0), f, &["pipe"]).unwrap();
    let t = c
        .send(
            envoy_proto::Tlopen {
                fid: f,
                flags: lopen::RDONLY,
            }
            .into(),
        )
        .unwrap();
    let err = c.wait_timeout(t, Duration::from_millis(300)).unwrap_err();
    assert!(
        matches!(err, ClientError::Timeout(tag, _) if tag == t),
        "{err}"
    );
    // Other requests still go through while it is stalled.
    assert!(c.statfs(Fid(0)).is_ok());
    assert_eq!(c.outstanding(), 1);
    let writer = open_writer_later(fifo, Duration::ZERO);
    // The late Rlopen frees the tag without counting as stray.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while c.outstanding() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "late reply never freed the tag"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(matches!(c.wait(t), Err(ClientError::UnknownTag(_))));
    writer.join().unwrap();
    assert_eq!(c.stray_replies(), 0);
    c.clunk(f).unwrap();
}

#[test]
fn flush_of_stalled_request_finishes_it() {
    let Some(d) = common::start_diod("flush_of_stalled_request_finishes_it") else {
        return;
    };
    let fifo = d.export.path().join("pipe");
    mkfifo(&fifo);
    let c = d.session(65536);
    let f = c.alloc_fid();
    c.walk(Fid(0), f, &["pipe"]).unwrap();
    let t = c
        .send(
            envoy_proto::Tlopen {
                fid: f,
                flags: lopen::RDONLY,
            }
            .into(),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // diod answers the flush once the blocked open returns; release it a bit later.
    let writer = open_writer_later(fifo, Duration::from_millis(300));
    c.flush(t).unwrap();
    // Either the open completed before the flush (its reply is kept) or it was flushed.
    match c.wait(t) {
        Ok(Message::Rlopen(_)) | Err(ClientError::Flushed(_)) => {}
        other => panic!("unexpected {other:?}"),
    }
    writer.join().unwrap();
    assert!(c.statfs(Fid(0)).is_ok());
    assert_eq!(c.stray_replies(), 0);
}

#[test]
fn from_stream_over_tcp_halves_works() {
    let Some(d) = common::start_diod("from_stream_over_tcp_halves_works") else {
        return;
    };
    let s = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    let c = Client::from_stream(s.try_clone().unwrap(), s.try_clone().unwrap());
    c.handshake(16384, "9P2000.L").unwrap();
    common::attach(&c, &d.aname());
    assert!(c.statfs(Fid(0)).is_ok());
    c.shutdown();
    assert!(c.statfs(Fid(0)).unwrap_err().is_disconnected());
    // The client cannot shut plain halves down; the original stream ends the reader.
    s.shutdown(std::net::Shutdown::Both).unwrap();
}
