//! The connection's writer thread: encodes replies (payload not copied: `encode_parts` +
//! `write_vectored`), retires tags and sends the Rflushes that waited for them right after
//! the flushed reply.

use std::io::{IoSlice, Write};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use crossbeam_channel::Receiver;
use envoy_proto::{encode_parts, Message, Rflush, Tag};

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

fn write_all_vectored(
    w: &mut dyn Write,
    head: &[u8],
    payload: Option<&Bytes>,
) -> std::io::Result<()> {
    let mut parts = [
        IoSlice::new(head),
        IoSlice::new(payload.map_or(&[][..], |b| &b[..])),
    ];
    let mut slices: &mut [IoSlice<'_>] = &mut parts;
    while !slices.is_empty() && slices.iter().any(|s| !s.is_empty()) {
        match w.write_vectored(slices) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn send(
    conn: &Conn,
    w: &mut dyn Write,
    buf: &mut BytesMut,
    tag: Tag,
    msg: &Message,
) -> std::io::Result<()> {
    let dialect = conn.dialect();
    let msize = conn.msize();
    buf.clear();
    let parts = match encode_parts(tag, msg, dialect, msize, buf) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(%tag, error = %e, reply = msg.name(), "reply does not encode; sending EIO");
            buf.clear();
            let err = Message::error_reply(dialect, libc::EIO as u32, "reply does not encode");
            match encode_parts(tag, &err, dialect, msize, buf) {
                Ok(p) => p,
                Err(_) => return Ok(()),
            }
        }
    };
    write_all_vectored(w, &buf[..parts.header_len], parts.payload.as_ref())
}

/// Runs until [`Outgoing::Close`] or a write error.
pub fn run(conn: &Arc<Conn>, mut w: Box<dyn Write + Send>, rx: Receiver<Outgoing>) {
    let mut buf = BytesMut::with_capacity(8192);
    let mut broken = false;
    while let Ok(m) = rx.recv() {
        match m {
            Outgoing::Close => break,
            Outgoing::Reply { tag, msg, retire } => {
                // Retire the tag *before* the reply can reach the client: a client may reuse
                // a tag as soon as it has the reply, and the reader must not mistake that for
                // a duplicate. A Tflush arriving from now on finds the tag unknown and queues
                // its Rflush behind this reply, so the order on the wire holds either way.
                let flushes = if retire { conn.retire(tag) } else { Vec::new() };
                if !broken {
                    if let Err(e) = send(conn, &mut *w, &mut buf, tag, &msg) {
                        tracing::debug!(error = %e, "write failed; dropping further replies");
                        broken = true;
                    }
                }
                for ft in flushes {
                    conn.retire(ft);
                    if !broken && send(conn, &mut *w, &mut buf, ft, &Rflush {}.into()).is_err() {
                        broken = true;
                    }
                }
            }
        }
    }
    let _ = w.flush();
    // Nothing more will be written: let a reader waiting for room go on (and notice EOF).
    conn.retire_all();
}
