//! Feeds arbitrary bytes through the frame splitter and the decoder of every dialect. Any
//! frame that decodes must re-encode to exactly the same bytes (the wire form is canonical),
//! and `encode_parts` must produce the same frame; re-decoding must give the same message.
#![no_main]

use bytes::{Bytes, BytesMut};
use envoy_proto::{decode, encode, encode_parts, Dialect, FrameSplitter};
use libfuzzer_sys::fuzz_target;

const MSIZE: u32 = 8192;

fn check(frame: Bytes, dialect: Dialect) {
    let Ok(decoded) = decode(frame.clone(), dialect, MSIZE) else {
        return;
    };
    let mut out = BytesMut::new();
    let len = encode(decoded.tag, &decoded.msg, dialect, MSIZE, &mut out)
        .unwrap_or_else(|e| panic!("decoded {} but cannot re-encode: {e}", decoded.msg.name()));
    assert_eq!(len, out.len());
    assert_eq!(
        &out[..],
        &frame[..],
        "{} re-encodes differently",
        decoded.msg.name()
    );
    assert_eq!(decoded.msg.encoded_len(dialect), len);

    let mut head = BytesMut::new();
    let parts = encode_parts(decoded.tag, &decoded.msg, dialect, MSIZE, &mut head)
        .unwrap_or_else(|e| panic!("encode_parts failed: {e}"));
    if let Some(p) = &parts.payload {
        head.extend_from_slice(p);
    }
    assert_eq!(&head[..], &frame[..]);

    let again = decode(out.freeze(), dialect, MSIZE).unwrap_or_else(|e| panic!("re-decode: {e}"));
    assert_eq!(again, decoded);
}

fuzz_target!(|data: &[u8]| {
    for dialect in Dialect::ALL {
        // As a transport sees it: a stream cut into frames.
        let splitter = FrameSplitter::new(MSIZE);
        let mut buf = BytesMut::from(data);
        while let Ok(Some(frame)) = splitter.next_frame(&mut buf) {
            check(frame, dialect);
        }
        // And the whole input as one frame, whatever its size field says.
        check(Bytes::copy_from_slice(data), dialect);
    }
});
