//! Property tests driven by the message table's generator: every message type, every
//! dialect it belongs to.

use crate::testgen::Gen;
use crate::*;
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

const MSIZE: u32 = 8192;

fn pairs() -> Vec<(MsgType, Dialect)> {
    MsgType::ALL
        .iter()
        .flat_map(|&t| {
            Dialect::ALL
                .into_iter()
                .filter(move |&d| t.valid_in(d))
                .map(move |d| (t, d))
        })
        .collect()
}

fn encode_vec(tag: Tag, msg: &Message, d: Dialect) -> Bytes {
    let mut out = BytesMut::new();
    let res = encode(tag, msg, d, MSIZE, &mut out);
    assert!(res.is_ok(), "encode {} in {d}: {res:?}", msg.name());
    out.freeze()
}

#[test]
fn message_table_every_type_in_some_dialect_and_parity_matches_name() {
    for &t in MsgType::ALL {
        assert!(Dialect::ALL.iter().any(|&d| t.valid_in(d)), "{t:?}");
        assert_eq!(t.is_request(), t.name().starts_with('T'), "{}", t.name());
        assert_eq!(MsgType::from_u8(t as u8), Some(t));
    }
    assert_eq!(MsgType::from_u8(106), None);
}

#[test]
fn generated_messages_every_pair_roundtrip_with_exact_length() {
    let mut g = Gen::new(7);
    for (t, d) in pairs() {
        for _ in 0..50 {
            let msg = Message::generate(t, &mut g, d);
            let tag = Tag(g.next() as u16);
            let bytes = encode_vec(tag, &msg, d);
            assert_eq!(bytes.len(), msg.encoded_len(d), "{}", t.name());
            let frame = decode(bytes, d, MSIZE);
            assert_eq!(frame, Ok(Frame { tag, msg }), "{} in {d}", t.name());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_message_encode_decode_roundtrips(seed in any::<u64>(), idx in any::<prop::sample::Index>()) {
        let all = pairs();
        let (t, d) = all[idx.index(all.len())];
        let mut g = Gen::new(seed);
        let msg = Message::generate(t, &mut g, d);
        let tag = Tag(g.next() as u16);
        let bytes = encode_vec(tag, &msg, d);
        prop_assert_eq!(decode(bytes, d, MSIZE), Ok(Frame { tag, msg }));
    }

    #[test]
    fn arbitrary_message_encode_parts_equals_encode(seed in any::<u64>(), idx in any::<prop::sample::Index>()) {
        let all = pairs();
        let (t, d) = all[idx.index(all.len())];
        let mut g = Gen::new(seed);
        let msg = Message::generate(t, &mut g, d);
        let whole = encode_vec(Tag(1), &msg, d);
        let mut head = BytesMut::from(&b"prefix"[..]);
        let parts = encode_parts(Tag(1), &msg, d, MSIZE, &mut head);
        prop_assert!(parts.is_ok());
        let parts = parts.unwrap_or(EncodedParts { header_len: 0, payload: None });
        prop_assert_eq!(parts.header_len, head.len() - 6);
        prop_assert_eq!(parts.frame_len(), whole.len());
        let mut joined = head[6..].to_vec();
        if let Some(p) = &parts.payload {
            joined.extend_from_slice(p);
        }
        prop_assert_eq!(&joined[..], &whole[..]);
    }

    #[test]
    fn arbitrary_bytes_decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        for d in Dialect::ALL {
            let _ = decode(Bytes::from(data.clone()), d, MSIZE);
        }
    }

    #[test]
    fn arbitrary_body_with_valid_header_decode_never_panics(
        ty in any::<u8>(),
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut f = Vec::with_capacity(body.len() + 7);
        f.extend_from_slice(&((body.len() + 7) as u32).to_le_bytes());
        f.push(ty);
        f.extend_from_slice(&[9, 0]);
        f.extend_from_slice(&body);
        for d in Dialect::ALL {
            if let Err(e) = decode(Bytes::from(f.clone()), d, MSIZE) {
                prop_assert_eq!(e.tag, Some(Tag(9)));
                prop_assert_eq!(e.msg_type, Some(ty));
            }
        }
    }

    #[test]
    fn truncated_frame_any_length_fails_with_tag_when_header_present(seed in any::<u64>(), idx in any::<prop::sample::Index>(), cut in any::<prop::sample::Index>()) {
        let all = pairs();
        let (t, d) = all[idx.index(all.len())];
        let mut g = Gen::new(seed);
        let msg = Message::generate(t, &mut g, d);
        let bytes = encode_vec(Tag(0x1234), &msg, d);
        let n = cut.index(bytes.len());
        let short = bytes.slice(..n);
        // As the transport would see it: the size field still claims the whole frame.
        let err = decode(short.clone(), d, MSIZE);
        prop_assert!(err.is_err());
        let err = err.err().unwrap_or_else(|| unreachable!());
        if n >= 7 {
            prop_assert_eq!(err.tag, Some(Tag(0x1234)));
            prop_assert_eq!(err.msg_type, Some(t as u8));
        } else {
            prop_assert_eq!(err.tag, None);
        }
        // And with the size field rewritten to match the cut: the body itself is short.
        if n >= 7 {
            let mut fixed = short.to_vec();
            fixed[..4].copy_from_slice(&(n as u32).to_le_bytes());
            let err = decode(Bytes::from(fixed), d, MSIZE);
            prop_assert!(err.is_err(), "{} cut at {} decoded", t.name(), n);
            prop_assert_eq!(err.err().and_then(|e| e.tag), Some(Tag(0x1234)));
        }
    }

    #[test]
    fn dir_entries_encode_if_fits_then_iterate_roundtrip(seed in any::<u64>(), max in 0usize..400) {
        let mut g = Gen::new(seed);
        let mut buf = BytesMut::new();
        let mut put = Vec::new();
        for i in 0..20u64 {
            let e = DirEntry {
                qid: testgen::GenValue::gen(&mut g, Dialect::P2000L),
                offset: i + 1,
                ty: dirent_type::REG,
                name: testgen::GenValue::gen(&mut g, Dialect::P2000L),
            };
            if !e.encode_if_fits(&mut buf, max).unwrap_or(false) {
                break;
            }
            put.push(e);
        }
        prop_assert!(buf.len() <= max);
        let got: Result<Vec<_>, _> = DirEntries::new(buf.freeze()).collect();
        prop_assert_eq!(got, Ok(put));
    }

    #[test]
    fn stat_records_encode_if_fits_then_iterate_roundtrip(seed in any::<u64>(), max in 0usize..600, dotu in any::<bool>()) {
        let d = if dotu { Dialect::P2000u } else { Dialect::P2000 };
        let mut g = Gen::new(seed);
        let mut buf = BytesMut::new();
        let mut put = Vec::new();
        for _ in 0..10 {
            let s: Stat = testgen::GenValue::gen(&mut g, d);
            let mut s = s;
            if !dotu {
                s.n_uid = NONUNAME;
            }
            if !s.encode_if_fits(&mut buf, max, d).unwrap_or(false) {
                break;
            }
            put.push(s);
        }
        prop_assert!(buf.len() <= max);
        let got: Result<Vec<_>, _> = StatIter::new(buf.freeze(), d).collect();
        prop_assert_eq!(got, Ok(put));
    }
}
