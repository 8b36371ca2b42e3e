//! Hostile inputs (BAD-INPUTS.md §4 sizes and §7 framing): each is rejected with a typed
//! error that keeps the tag whenever the header was readable, and nothing panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::{Bytes, BytesMut};
use common::hex;
use envoy_proto::*;

const MSIZE: u32 = 8192;

fn dec(d: Dialect, h: &str) -> Result<Frame, DecodeError> {
    decode(Bytes::from(hex(h)), d, MSIZE)
}

fn kind(d: Dialect, h: &str) -> DecodeErrorKind {
    let err = dec(d, h).unwrap_err();
    assert_eq!(err.tag, Some(Tag(1)), "tag kept for {h}");
    err.kind
}

#[test]
fn frame_len_size_below_header_is_rejected() {
    assert_eq!(
        frame_len(&hex("06000000 78 0100"), MSIZE),
        Err(FrameError::TooShort { size: 6 })
    );
    assert_eq!(
        frame_len(&hex("00000000"), MSIZE),
        Err(FrameError::TooShort { size: 0 })
    );
    assert_eq!(frame_len(&hex("070000"), MSIZE), Ok(None));
    assert_eq!(frame_len(&hex("07000000"), MSIZE), Ok(Some(7)));
}

#[test]
fn splitter_size_above_msize_rejected_before_buffer_grows() {
    let splitter = FrameSplitter::new(MSIZE);
    let mut buf = BytesMut::with_capacity(16);
    buf.extend_from_slice(&hex("ffffffff 76 0100 01000000"));
    let cap = buf.capacity();
    assert_eq!(
        splitter.next_frame(&mut buf),
        Err(FrameError::TooLarge {
            size: u32::MAX,
            msize: MSIZE
        })
    );
    assert_eq!(buf.capacity(), cap);
}

#[test]
fn splitter_partial_then_complete_frames_split_in_order() {
    let mut splitter = FrameSplitter::new(MSIZE);
    let mut buf = BytesMut::new();
    let two = hex("0b000000 78 0100 01000000  07000000 79 0200");
    buf.extend_from_slice(&two[..5]);
    assert_eq!(splitter.next_frame(&mut buf), Ok(None));
    assert!(buf.capacity() >= 11);
    buf.extend_from_slice(&two[5..]);
    let f1 = splitter.next_frame(&mut buf).unwrap().unwrap();
    let f2 = splitter.next_frame(&mut buf).unwrap().unwrap();
    assert_eq!(splitter.next_frame(&mut buf), Ok(None));
    assert_eq!(&f1[..], &two[..11]);
    assert_eq!(&f2[..], &two[11..]);
    splitter.set_msize(10);
    buf.extend_from_slice(&two[..11]);
    assert_eq!(
        splitter.next_frame(&mut buf),
        Err(FrameError::TooLarge {
            size: 11,
            msize: 10
        })
    );
}

#[test]
fn decode_short_header_has_no_tag_and_is_fatal() {
    let err = dec(Dialect::P2000L, "0b000000 78 01").unwrap_err();
    assert_eq!(err.tag, None);
    assert_eq!(err.kind, DecodeErrorKind::ShortHeader { len: 6 });
    assert!(err.is_fatal());
}

#[test]
fn decode_size_field_below_header_or_above_msize_keeps_tag_but_is_fatal() {
    let err = dec(Dialect::P2000L, "06000000 78 0100").unwrap_err();
    assert_eq!(err.tag, Some(Tag(1)));
    assert_eq!(
        err.kind,
        DecodeErrorKind::Frame(FrameError::TooShort { size: 6 })
    );
    assert!(err.is_fatal());
    let err = dec(Dialect::P2000L, "01200000 78 0100 01000000").unwrap_err();
    assert_eq!(
        err.kind,
        DecodeErrorKind::Frame(FrameError::TooLarge {
            size: 8193,
            msize: MSIZE
        })
    );
    assert!(err.is_fatal());
}

#[test]
fn decode_size_field_disagreeing_with_buffer_is_fatal() {
    let err = dec(Dialect::P2000L, "0c000000 78 0100 01000000").unwrap_err();
    assert_eq!(
        err.kind,
        DecodeErrorKind::SizeMismatch { size: 12, len: 11 }
    );
    assert!(err.is_fatal());
}

#[test]
fn decode_string_length_past_frame_is_truncated() {
    // Twalk with one name claiming 0xffff bytes.
    let k = kind(
        Dialect::P2000L,
        "15000000 6e 0100 01000000 02000000 0100 ffff 6162",
    );
    assert!(
        matches!(
            k,
            DecodeErrorKind::Truncated {
                field: "wnames",
                need: 0xffff,
                have: 2
            }
        ),
        "{k:?}"
    );
}

#[test]
fn decode_walk_with_17_names_is_rejected_without_reading_them() {
    let k = kind(Dialect::P2000L, "11000000 6e 0100 01000000 02000000 1100");
    assert_eq!(k, DecodeErrorKind::TooManyWalkElements { count: 17 });
    let k = kind(Dialect::P2000L, "09000000 6f 0100 1100");
    assert_eq!(k, DecodeErrorKind::TooManyWalkElements { count: 17 });
    // 16 is the limit and is fine.
    let mut h = String::from("41000000 6e 0100 01000000 02000000 1000");
    h.push_str(&" 0100 61".repeat(16));
    let f = dec(Dialect::P2000L, &h).unwrap();
    let Message::Twalk(w) = f.msg else { panic!() };
    assert_eq!(w.wnames.len(), 16);
}

#[test]
fn decode_read_count_above_msize_minus_reply_header_is_rejected() {
    // msize 8192: the Rread header is 11 bytes, so 8181 is the largest count.
    let ok = dec(
        Dialect::P2000L,
        "17000000 74 0100 01000000 0000000000000000 f51f0000",
    );
    assert!(ok.is_ok());
    let k = kind(
        Dialect::P2000L,
        "17000000 74 0100 01000000 0000000000000000 f61f0000",
    );
    assert_eq!(
        k,
        DecodeErrorKind::CountTooLarge {
            count: 8182,
            max: 8181
        }
    );
    let k = kind(
        Dialect::P2000L,
        "17000000 28 0100 01000000 0000000000000000 ffffffff",
    );
    assert!(matches!(
        k,
        DecodeErrorKind::CountTooLarge {
            count: u32::MAX,
            ..
        }
    ));
    let k = kind(
        Dialect::Storage,
        "1b000000 a6 0100 4200000000000000 0000000000000000 00200000",
    );
    assert!(matches!(
        k,
        DecodeErrorKind::CountTooLarge { count: 8192, .. }
    ));
}

#[test]
fn decode_write_count_past_frame_is_truncated_without_allocating() {
    let k = kind(
        Dialect::P2000L,
        "1c000000 76 0100 01000000 0000000000000000 ffffffff 68656c6c6f",
    );
    assert!(
        matches!(
            k,
            DecodeErrorKind::Truncated {
                field: "data",
                need: 0xffff_ffff,
                have: 5
            }
        ),
        "{k:?}"
    );
}

#[test]
fn decode_nul_in_name_is_rejected() {
    let k = kind(
        Dialect::P2000L,
        "15000000 6e 0100 01000000 02000000 0100 0200 6100",
    );
    assert_eq!(k, DecodeErrorKind::NulInString);
    let k = kind(
        Dialect::P2000L,
        "16000000 48 0100 01000000 0100 00 ed010000 e8030000",
    );
    assert_eq!(k, DecodeErrorKind::NulInString);
}

#[test]
fn decode_invalid_utf8_is_rejected() {
    let k = kind(
        Dialect::P2000L,
        "15000000 6e 0100 01000000 02000000 0100 0200 c328",
    );
    assert!(matches!(k, DecodeErrorKind::InvalidUtf8(_)), "{k:?}");
}

#[test]
fn decode_unknown_and_reserved_types_keep_tag() {
    for ty in [0u8, 1, 6, 106, 128, 159, 178, 191, 224, 255] {
        let h = format!("07000000 {ty:02x} 0100");
        let err = dec(Dialect::P2000L, &h).unwrap_err();
        assert_eq!(err.tag, Some(Tag(1)));
        assert_eq!(err.msg_type, Some(ty));
        assert_eq!(err.kind, DecodeErrorKind::UnknownType(ty));
        assert!(!err.is_fatal());
    }
    for ty in [192u8, 201, 223] {
        let h = format!("07000000 {ty:02x} 0100");
        assert_eq!(
            kind(Dialect::Storage, &h),
            DecodeErrorKind::ReservedType(ty)
        );
    }
}

#[test]
fn decode_message_outside_dialect_is_rejected() {
    let cases: &[(Dialect, &str, &str)] = &[
        (
            Dialect::P2000,
            "13000000 18 0100 01000000 ff07000000000000",
            "Tgetattr",
        ),
        (Dialect::P2000u, "0b000000 07 0100 02000000", "Rlerror"),
        (
            Dialect::P2000L,
            "1b000000 a6 0100 4200000000000000 0000000000000000 00100000",
            "Tsread",
        ),
        (Dialect::P2000L, "0c000000 70 0100 01000000 00", "Topen"),
        (Dialect::P2000L, "0b000000 7c 0100 01000000", "Tstat"),
        (Dialect::P2000L, "0d000000 6b 0100 0000 02000000", "Rerror"),
        (Dialect::Storage, "0b000000 78 0100 01000000", "Tclunk"),
    ];
    for (d, h, name) in cases {
        let k = kind(*d, h);
        assert_eq!(
            k,
            DecodeErrorKind::NotInDialect {
                name,
                dialect: d.version_str()
            }
        );
    }
}

#[test]
fn decode_trailing_garbage_is_rejected() {
    let k = kind(Dialect::P2000L, "0c000000 78 0100 01000000 00");
    assert_eq!(k, DecodeErrorKind::TrailingBytes(1));
    let k = kind(Dialect::P2000L, "08000000 79 0100 00");
    assert_eq!(k, DecodeErrorKind::TrailingBytes(1));
}

#[test]
fn decode_r_message_succeeds_and_is_not_a_request() {
    let f = dec(Dialect::P2000L, "07000000 79 0100").unwrap();
    assert!(!f.msg.is_request());
    let f = dec(Dialect::P2000L, "0b000000 78 0100 01000000").unwrap();
    assert!(f.msg.is_request());
}

#[test]
fn decode_stat_size_disagreeing_with_fields_is_rejected() {
    // Rstat whose stat.size claims one byte more than its fields (a stray 00 inside).
    let k = kind(
        Dialect::P2000,
        "42000000 7d 0100 3900 3700
         0000 00000000 80 01000000 1000000000000000 ed010080 01000000 02000000 0000000000000000
         0100 2f 0300 626f62 0300 626f62 0000 00",
    );
    assert_eq!(
        k,
        DecodeErrorKind::StatSize {
            declared: 55,
            actual: 54
        }
    );
}

#[test]
fn decode_storage_attr_out_of_domain_is_rejected() {
    // kind 7
    let k = kind(
        Dialect::Storage,
        "34000000 a2 0100 4200000000000000
         07 a4010000 e8030000 e8030000 0100000000000000 02000000 0300000000000000 04000000",
    );
    assert!(matches!(k, DecodeErrorKind::InvalidObjAttr(_)), "{k:?}");
    // mode 0o10644 (file-type bits)
    let k = kind(
        Dialect::Storage,
        "34000000 a2 0100 4200000000000000
         00 a4110000 e8030000 e8030000 0100000000000000 02000000 0300000000000000 04000000",
    );
    assert!(matches!(k, DecodeErrorKind::InvalidObjAttr(_)), "{k:?}");
}

#[test]
fn dir_entries_malformed_data_yields_one_error_then_stops() {
    let data = Bytes::from(hex(
        "80 01000000 1000000000000000 0100000000000000 04 0500 2e",
    ));
    let mut it = DirEntries::new(data);
    assert!(matches!(
        it.next(),
        Some(Err(DecodeErrorKind::Truncated { .. }))
    ));
    assert!(it.next().is_none());
}

fn enc(msg: impl Into<Message>, d: Dialect, msize: u32) -> (Result<usize, EncodeError>, BytesMut) {
    let mut out = BytesMut::from(&b"keep"[..]);
    let r = encode(Tag(1), &msg.into(), d, msize, &mut out);
    (r, out)
}

#[test]
fn encode_invalid_messages_fail_and_leave_buffer_untouched() {
    let long = "a".repeat(65536);
    let cases: Vec<(Message, Dialect, u32, EncodeError)> = vec![
        (
            Rreadlink {
                target: long.clone(),
            }
            .into(),
            Dialect::P2000L,
            1 << 20,
            EncodeError::StringTooLong { len: 65536 },
        ),
        (
            Rreadlink {
                target: "a\0b".into(),
            }
            .into(),
            Dialect::P2000L,
            MSIZE,
            EncodeError::NulInString,
        ),
        (
            Twalk {
                fid: Fid(1),
                newfid: Fid(2),
                wnames: vec!["a".into(); 17],
            }
            .into(),
            Dialect::P2000L,
            MSIZE,
            EncodeError::TooManyWalkElements { count: 17 },
        ),
        (
            Rread {
                data: Bytes::from(vec![0u8; 8182]),
            }
            .into(),
            Dialect::P2000L,
            MSIZE,
            EncodeError::FrameTooLarge {
                size: 8193,
                msize: MSIZE,
            },
        ),
        (
            Tgetattr {
                fid: Fid(1),
                request_mask: 0,
            }
            .into(),
            Dialect::P2000,
            MSIZE,
            EncodeError::NotInDialect {
                name: "Tgetattr",
                dialect: "9P2000",
            },
        ),
        (
            Tscreate {
                id: 1,
                attr: ObjAttr {
                    kind: 9,
                    ..ObjAttr::default()
                },
            }
            .into(),
            Dialect::Storage,
            MSIZE,
            EncodeError::InvalidObjAttr("kind above 6"),
        ),
    ];
    for (msg, d, msize, want) in cases {
        let name = msg.name();
        let (r, out) = enc(msg, d, msize);
        assert_eq!(r, Err(want), "{name}");
        assert_eq!(&out[..], b"keep", "{name} left bytes behind");
    }
}

#[test]
fn encode_frame_exactly_msize_succeeds() {
    let (r, out) = enc(
        Rread {
            data: Bytes::from(vec![7u8; 8181]),
        },
        Dialect::P2000L,
        MSIZE,
    );
    assert_eq!(r, Ok(8192));
    assert_eq!(out.len(), 4 + 8192);
}

#[test]
fn encode_dotu_fields_dropped_in_plain_9p2000() {
    let msg = Tattach {
        fid: Fid(1),
        afid: Fid::NOFID,
        uname: "u".into(),
        aname: "".into(),
        n_uname: 1000,
    };
    let (r, out) = enc(msg, Dialect::P2000, MSIZE);
    assert_eq!(r, Ok(20));
    let f = decode(out.freeze().slice(4..), Dialect::P2000, MSIZE).unwrap();
    let Message::Tattach(a) = f.msg else { panic!() };
    assert_eq!(a.n_uname, NONUNAME);
}

#[test]
fn error_reply_matches_dialect_and_decode_errno() {
    let err = dec(Dialect::P2000, "13000000 18 0100 01000000 ff07000000000000").unwrap_err();
    assert_eq!(err.errno(), 95);
    let err = dec(Dialect::P2000L, "0c000000 78 0100 01000000 00").unwrap_err();
    assert_eq!(err.errno(), 22);
    assert_eq!(
        Message::error_reply(Dialect::P2000L, 22, "bad"),
        Message::Rlerror(Rlerror { ecode: 22 })
    );
    assert_eq!(
        Message::error_reply(Dialect::P2000u, 22, "bad\0x"),
        Message::Rerror(Rerror {
            ename: "badx".into(),
            errno: 22
        })
    );
    assert_eq!(
        Message::error_reply(Dialect::P2000, 22, "bad"),
        Message::Rerror(Rerror {
            ename: "bad".into(),
            errno: 0
        })
    );
    for d in Dialect::ALL {
        let mut out = BytesMut::new();
        let reply = Message::error_reply(d, 2, "no such file");
        assert!(encode(Tag(1), &reply, d, MSIZE, &mut out).is_ok(), "{d}");
    }
}

#[test]
fn decode_error_display_names_tag_type_and_cause() {
    let err = dec(Dialect::P2000L, "0b000000 7c 0100 01000000").unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot decode 9P frame (tag 1, type 124 Tstat)"
    );
    let cause = std::error::Error::source(&err).map(ToString::to_string);
    assert_eq!(cause.as_deref(), Some("Tstat is not part of 9P2000.L"));
}
