//! The connection's writer thread: encodes replies (payload not copied: `encode_parts` +
//! `write_vectored`), retires tags and sends the Rflushes that waited for them right after
//! the flushed reply. Replies already queued when it wakes are sent together, in order, with
//! one `writev` (see [`run`]).

use std::io::{IoSlice, Write};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use crossbeam_channel::Receiver;
use envoy_proto::{encode_parts, Dialect, Message, Rflush, Tag};

use super::Conn;

/// A message for the writer.
#[derive(Debug)]
pub enum Outgoing {
    /// Send a reply; with `retire`, retire the tag afterwards (and release its flushes).
    Reply {
        /// Tag.
        tag: Tag,
        /// Reply.
        msg: Message,
        /// Whether the tag was registered.
        retire: bool,
    },
    /// The reader is gone: stop.
    Close,
}

/// Most replies gathered into one `writev`.
const MAX_BATCH: usize = 64;
/// Gathering stops once the batch holds this many bytes (headers + payloads).
const MAX_BATCH_BYTES: usize = 1 << 20;

/// Replies encoded back to back: headers in one buffer, payloads kept as they are.
struct Batch {
    /// Every header, appended in order.
    heads: BytesMut,
    /// Per reply: where its header ends in `heads`, and its payload.
    parts: Vec<(usize, Option<Bytes>)>,
    bytes: usize,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            heads: BytesMut::with_capacity(8192),
            parts: Vec::with_capacity(MAX_BATCH),
            bytes: 0,
        }
    }

    fn clear(&mut self) {
        self.heads.clear();
        self.parts.clear();
        self.bytes = 0;
    }

    fn full(&self) -> bool {
        self.parts.len() >= MAX_BATCH || self.bytes >= MAX_BATCH_BYTES
    }

    /// Appends `msg` for `tag`; a reply that does not encode becomes `EIO` (and if even that
    /// fails, nothing is sent for the tag).
    fn push(&mut self, tag: Tag, msg: &Message, dialect: Dialect, msize: u32) {
        let start = self.heads.len();
        let parts = match encode_parts(tag, msg, dialect, msize, &mut self.heads) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(%tag, error = %e, reply = msg.name(), "reply does not encode; sending EIO");
                self.heads.truncate(start);
                let err = Message::error_reply(dialect, libc::EIO as u32, "reply does not encode");
                match encode_parts(tag, &err, dialect, msize, &mut self.heads) {
                    Ok(p) => p,
                    Err(_) => {
                        self.heads.truncate(start);
                        return;
                    }
                }
            }
        };
        let payload_len = parts.payload.as_ref().map_or(0, Bytes::len);
        self.bytes += parts.header_len + payload_len;
        self.parts.push((start + parts.header_len, parts.payload));
    }

    /// Writes every reply with as few `writev` calls as the kernel allows.
    fn write(&self, w: &mut dyn Write) -> std::io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(self.parts.len() * 2);
        let mut from = 0;
        for (end, payload) in &self.parts {
            slices.push(IoSlice::new(&self.heads[from..*end]));
            if let Some(p) = payload.as_ref().filter(|p| !p.is_empty()) {
                slices.push(IoSlice::new(p));
            }
            from = *end;
        }
        let mut rest: &mut [IoSlice<'_>] = &mut slices;
        while !rest.is_empty() && rest.iter().any(|s| !s.is_empty()) {
            match w.write_vectored(rest) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Runs until [`Outgoing::Close`] or a write error.
///
/// Replies that are already queued when the writer wakes go out together: it takes the first
/// one, then whatever else the channel holds (up to [`MAX_BATCH`] replies or
/// [`MAX_BATCH_BYTES`]), and sends them with one `writev` — under pipelined load one system
/// call carries many replies, while a lone reply still leaves at once.
pub fn run(conn: &Arc<Conn>, mut w: Box<dyn Write + Send>, rx: Receiver<Outgoing>) {
    let mut batch = Batch::new();
    let mut broken = false;
    let mut closing = false;
    while let Ok(first) = rx.recv() {
        batch.clear();
        let params = conn.params();
        let dialect = params.dialect.unwrap_or(Dialect::P2000L);
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m {
                Outgoing::Close => {
                    closing = true;
                    break;
                }
                Outgoing::Reply { tag, msg, retire } => {
                    // Retire the tag *before* the reply can reach the client: a client may
                    // reuse a tag as soon as it has the reply, and the reader must not mistake
                    // that for a duplicate. A Tflush arriving from now on finds the tag unknown
                    // and queues its Rflush behind this reply, so the order on the wire holds
                    // either way.
                    let flushes = if retire { conn.retire(tag) } else { Vec::new() };
                    if !broken {
                        batch.push(tag, &msg, dialect, params.msize);
                    }
                    for ft in flushes {
                        conn.retire(ft);
                        if !broken {
                            batch.push(ft, &Rflush {}.into(), dialect, params.msize);
                        }
                    }
                }
            }
            if batch.full() {
                break;
            }
            next = rx.try_recv().ok();
        }
        if !broken && !batch.parts.is_empty() {
            if let Err(e) = batch.write(&mut *w) {
                tracing::debug!(error = %e, "write failed; dropping further replies");
                broken = true;
            }
        }
        if closing {
            break;
        }
    }
    let _ = w.flush();
    // Nothing more will be written: let a reader waiting for room go on (and notice EOF).
    conn.retire_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_proto::{decode, FrameSplitter, Rclunk, Rread};

    /// A writer that accepts at most `max` bytes per call (short writes).
    struct Trickle {
        out: Vec<u8>,
        max: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.calls += 1;
            let n = b.len().min(self.max);
            self.out.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
            self.calls += 1;
            let mut n = 0;
            for b in bufs {
                let k = b.len().min(self.max - n);
                self.out.extend_from_slice(&b[..k]);
                n += k;
                if n == self.max {
                    break;
                }
            }
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn batch_short_writes_frames_intact_in_order() {
        let mut b = Batch::new();
        let data = Bytes::from(vec![7u8; 3000]);
        b.push(
            Tag(1),
            &Rread { data: data.clone() }.into(),
            Dialect::P2000L,
            8192,
        );
        b.push(Tag(2), &Rclunk {}.into(), Dialect::P2000L, 8192);
        b.push(
            Tag(3),
            &Rread { data: Bytes::new() }.into(),
            Dialect::P2000L,
            8192,
        );
        let mut w = Trickle {
            out: Vec::new(),
            max: 1000,
            calls: 0,
        };
        b.write(&mut w).expect("write");
        let mut buf = BytesMut::from(&w.out[..]);
        let splitter = FrameSplitter::new(8192);
        let mut tags = Vec::new();
        while let Ok(Some(f)) = splitter.next_frame(&mut buf) {
            let f = decode(f, Dialect::P2000L, 8192).expect("frame decodes");
            if let Message::Rread(r) = &f.msg {
                assert!(r.data.is_empty() || r.data == data);
            }
            tags.push(f.tag.0);
        }
        assert_eq!(tags, vec![1, 2, 3]);
        assert!(buf.is_empty());
        assert!(w.calls >= 4, "3,000+ bytes at 1,000 per call");
    }

    #[test]
    fn batch_unencodable_reply_becomes_eio() {
        let mut b = Batch::new();
        // 3,000 bytes do not fit msize 1024: the reply is replaced by an error.
        let big = Rread {
            data: Bytes::from(vec![0u8; 3000]),
        };
        b.push(Tag(9), &big.into(), Dialect::P2000L, 1024);
        let mut out = Vec::new();
        b.write(&mut out).expect("write");
        let f = decode(Bytes::from(out), Dialect::P2000L, 1024).expect("frame decodes");
        assert_eq!(f.tag, Tag(9));
        assert!(matches!(f.msg, Message::Rlerror(ref e) if e.ecode == libc::EIO as u32));
    }
}
