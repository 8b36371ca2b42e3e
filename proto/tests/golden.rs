//! Byte-exact golden frames for every message, T and R, in every dialect where the wire
//! form differs. Each frame is written out field by field from the protocol documentation
//! (Plan 9 manual section 5, the 9P2000.L layout of Linux's `net/9p/protocol.c` format
//! strings, and Envoy's storage table), not produced by this codec.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::{Bytes, BytesMut};
use common::{goldens, hex};
use envoy_proto::*;
use std::collections::BTreeSet;

#[test]
fn golden_frames_decode_to_expected_messages() {
    for g in goldens() {
        for &d in g.dialects {
            let got = decode(Bytes::from(hex(g.hex)), d, 8192);
            assert_eq!(
                got,
                Ok(Frame {
                    tag: g.tag,
                    msg: g.msg.clone()
                }),
                "golden {} in {d}",
                g.msg.name()
            );
        }
    }
}

#[test]
fn golden_messages_encode_to_exact_bytes() {
    for g in goldens() {
        for &d in g.dialects {
            let mut out = BytesMut::new();
            let n = encode(g.tag, &g.msg, d, 8192, &mut out).unwrap();
            assert_eq!(n, out.len());
            assert_eq!(
                common::to_hex(&out),
                common::to_hex(&hex(g.hex)),
                "golden {} in {d}",
                g.msg.name()
            );
            assert_eq!(g.msg.encoded_len(d), out.len());
        }
    }
}

#[test]
fn golden_payload_messages_encode_parts_split_header_and_payload() {
    for g in goldens() {
        for &d in g.dialects {
            let mut head = BytesMut::new();
            let parts = encode_parts(g.tag, &g.msg, d, 8192, &mut head).unwrap();
            let whole = hex(g.hex);
            assert_eq!(&head[..], &whole[..parts.header_len]);
            let has_payload = matches!(
                g.msg,
                Message::Rread(_)
                    | Message::Twrite(_)
                    | Message::Rreaddir(_)
                    | Message::Rsread(_)
                    | Message::Tswrite(_)
            );
            assert_eq!(parts.payload.is_some(), has_payload, "{}", g.msg.name());
            if let Some(p) = parts.payload {
                assert_eq!(&p[..], &whole[parts.header_len..]);
            }
        }
    }
}

#[test]
fn golden_table_covers_every_message_type_in_every_dialect() {
    let mut covered = BTreeSet::new();
    for g in goldens() {
        for &d in g.dialects {
            covered.insert((g.msg.msg_type(), d.version_str()));
        }
    }
    for &t in MsgType::ALL {
        for d in Dialect::ALL {
            if t.valid_in(d) {
                assert!(
                    covered.contains(&(t, d.version_str())),
                    "no golden for {} in {d}",
                    t.name()
                );
            }
        }
    }
}

#[test]
fn golden_dotu_frames_in_plain_9p2000_fail_with_tag_and_leftover_bytes() {
    for g in goldens() {
        if g.dialects == [Dialect::P2000u] || g.dialects == [Dialect::P2000u, Dialect::P2000L] {
            let err = decode(Bytes::from(hex(g.hex)), Dialect::P2000, 8192).unwrap_err();
            assert_eq!(err.tag, Some(g.tag), "{}", g.msg.name());
            assert!(!err.is_fatal());
            assert!(
                matches!(
                    err.kind,
                    DecodeErrorKind::TrailingBytes(_) | DecodeErrorKind::StatSize { .. }
                ),
                "{}: {:?}",
                g.msg.name(),
                err.kind
            );
        }
    }
}

#[test]
fn golden_payload_decode_borrows_frame_without_copy() {
    let raw = Bytes::from(hex("10000000 75 0100 05000000 68656c6c6f"));
    let frame = decode(raw.clone(), Dialect::P2000L, 8192).unwrap();
    let Message::Rread(r) = frame.msg else {
        panic!("not Rread")
    };
    assert_eq!(&r.data[..], b"hello");
    // Same memory as the input frame: the decoder sliced, it did not copy.
    assert_eq!(r.data.as_ptr(), raw[11..].as_ptr());
}

#[test]
fn golden_rreaddir_entries_iterate_to_expected() {
    let g = goldens()
        .into_iter()
        .find(|g| matches!(g.msg, Message::Rreaddir(_)))
        .unwrap();
    let Message::Rreaddir(r) = g.msg else {
        unreachable!()
    };
    let entries: Vec<_> = DirEntries::new(r.data).collect::<Result<_, _>>().unwrap();
    assert_eq!(
        entries,
        vec![
            DirEntry {
                qid: common::Q,
                offset: 1,
                ty: dirent_type::DIR,
                name: ".".into()
            },
            DirEntry {
                qid: common::Q2,
                offset: 2,
                ty: dirent_type::REG,
                name: "f".into()
            }
        ]
    );
}

/// Writes every golden frame (and one frame of each type from the Linux capture) into the
/// fuzz seed corpus. Run: `cargo test -p envoy-proto --test golden -- --ignored`.
#[test]
#[ignore = "writes proto/fuzz/corpus/decode_frame; run by hand to refresh the seeds"]
fn fuzz_corpus_seeds_written_from_goldens() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode_frame");
    std::fs::create_dir_all(&dir).unwrap();
    let mut n = 0;
    for (i, g) in goldens().into_iter().enumerate() {
        let name = format!("golden-{i:03}-{}-{}", g.msg.name(), g.dialects[0]);
        std::fs::write(dir.join(name), hex(g.hex)).unwrap();
        n += 1;
    }
    let capture = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/linux-client-diod.txt"),
    )
    .unwrap_or_default();
    let mut seen = BTreeSet::new();
    for line in capture.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, h)) = line.split_once(' ') else {
            continue;
        };
        let raw = hex(h);
        if raw.len() > 4 && raw.len() <= 512 && seen.insert(raw[4]) {
            std::fs::write(dir.join(format!("capture-type-{}", raw[4])), &raw).unwrap();
            n += 1;
        }
    }
    assert!(std::fs::read_dir(&dir).unwrap().count() >= n);
}
