//! Real traffic: every frame the Linux v9fs client and diod exchanged (9P2000.L) must decode
//! and re-encode to exactly the same bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::{Bytes, BytesMut};
use envoy_proto::{decode, encode, encode_parts, Dialect, Message, MsgType};
use std::collections::BTreeMap;
use std::path::PathBuf;

const CAPTURE: &str = "tests/golden/linux-client-diod.txt";

/// Distinct message types the capture must contain at least.
const MIN_DISTINCT_TYPES: usize = 15;

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn load() -> Vec<(char, Vec<u8>)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(CAPTURE);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "capture file {} is missing ({e}); generate it with \
             scripts/capture/capture-linux-diod.sh",
            path.display()
        )
    });
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (dir, h) = l.split_once(' ').expect("'<C|S> <hex>' line");
            let dir = dir.chars().next().expect("direction");
            assert!(dir == 'C' || dir == 'S', "bad direction in {l:.40}");
            (dir, hex(h.trim()))
        })
        .collect()
}

/// msize negotiated by the first Tversion/Rversion pair of the capture.
fn negotiated_msize(frames: &[(char, Vec<u8>)]) -> u32 {
    let mut msize = u32::MAX;
    for (_, f) in frames.iter().take(2) {
        let frame = decode(Bytes::from(f.clone()), Dialect::P2000L, u32::MAX).unwrap();
        match frame.msg {
            Message::Tversion(v) => msize = msize.min(v.msize),
            Message::Rversion(v) => msize = msize.min(v.msize),
            other => panic!(
                "capture must start with Tversion/Rversion, got {}",
                other.name()
            ),
        }
    }
    msize
}

#[test]
fn linux_capture_frames_roundtrip_byte_exact() {
    let frames = load();
    assert!(!frames.is_empty(), "capture has no frames");
    let msize = negotiated_msize(&frames);
    let mut seen: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (i, (dir, raw)) in frames.iter().enumerate() {
        let bytes = Bytes::from(raw.clone());
        let frame = decode(bytes.clone(), Dialect::P2000L, msize)
            .unwrap_or_else(|e| panic!("frame {i} ({dir}) failed to decode: {e}: {:?}", e.kind));
        assert_eq!(
            frame.msg.is_request(),
            *dir == 'C',
            "frame {i}: {} sent by the wrong side",
            frame.msg.name()
        );
        let mut out = BytesMut::new();
        encode(frame.tag, &frame.msg, Dialect::P2000L, msize, &mut out).unwrap();
        assert_eq!(
            &out[..],
            &raw[..],
            "frame {i} ({}) re-encodes differently",
            frame.msg.name()
        );
        let mut head = BytesMut::new();
        let parts = encode_parts(frame.tag, &frame.msg, Dialect::P2000L, msize, &mut head).unwrap();
        if let Some(p) = parts.payload {
            head.extend_from_slice(&p);
        }
        assert_eq!(&head[..], &raw[..], "frame {i}: encode_parts differs");
        *seen.entry(frame.msg.name()).or_default() += 1;
    }
    let all: Vec<_> = seen.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!(
        "{} frames, {} distinct types: {}",
        frames.len(),
        seen.len(),
        all.join(" ")
    );
    assert!(
        seen.len() >= MIN_DISTINCT_TYPES,
        "only {} distinct message types in the capture: {all:?}",
        seen.len()
    );
    // The capture is 9P2000.L: nothing from the other dialects may appear.
    for name in seen.keys() {
        let t = MsgType::ALL.iter().find(|t| t.name() == *name).unwrap();
        assert!(t.valid_in(Dialect::P2000L));
    }
}
