//! One 9P connection: framing, version negotiation, the tag table, flush, and hand-off of
//! requests to the shared worker pool.
//!
//! # Threads
//!
//! * The **reader** (one per connection) splits frames out of the byte stream. A size below 7
//!   or above the negotiated msize closes the connection (the stream cannot be
//!   resynchronised). A frame whose body fails to decode is answered with `Rlerror`/`Rerror`
//!   for its tag; the connection stays up. `Tversion` and `Tflush` are handled right here;
//!   every other request is registered in the tag table and sent to the worker pool.
//! * **Workers** (shared by all connections, `--workers`) run the handlers in [`crate::ops`]
//!   concurrently — there is no lock around request handling — and pass the reply on.
//! * The **writer** (one per connection) encodes replies with the codec's zero-copy
//!   `encode_parts` and sends header + payload with one `write_vectored`. It retires the tag
//!   just before the reply goes out (the client may reuse it the moment it has the reply),
//!   then sends the `Rflush` of every Tflush that waited for it, so an Rflush never overtakes
//!   the reply it flushes.
//!
//! # Rules
//!
//! * Tversion: msize = min(client's, `--max-msize`); a client msize below 4096 is refused
//!   with version `"unknown"`. `9P2000.L` and `9P2000.u` (and `9P2000.u…` variants) are
//!   served as such, plain `9P2000` (and other `9P2000.x`) as 9P2000; anything else gets
//!   `"unknown"`. Tversion resets the session: every fid is clunked and the connection's
//!   byte-range locks are released (requests already in flight still get their replies).
//! * A second request with a tag that is still in flight is answered with `EINVAL` (and the
//!   first one is unaffected). `NOTAG` on anything but Tversion → `EINVAL`.
//! * Tflush of an unknown or finished tag → immediate Rflush.
//! * An R-message, an unknown type or a type outside the dialect → `EOPNOTSUPP`/`EINVAL`
//!   reply for its tag.

pub mod fids;
pub mod writer;

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use bytes::BytesMut;
use crossbeam_channel::Sender;
use envoy_proto::{decode, Dialect, FrameSplitter, Message, Rflush, Rversion, Tag};

use crate::config::MIN_MSIZE;
use crate::namespace::node::lock;
use crate::server::Shared;
use fids::FidTable;
use writer::Outgoing;

/// A request handed to a worker.
#[derive(Debug)]
pub struct Job {
    /// The connection.
    pub conn: Arc<Conn>,
    /// The request's tag.
    pub tag: Tag,
    /// The request.
    pub msg: Message,
}

/// Negotiated parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// The dialect, `None` before Tversion.
    pub dialect: Option<Dialect>,
    /// The frame limit.
    pub msize: u32,
}

/// An in-flight request's tag entry.
#[derive(Debug, Default)]
struct TagEntry {
    /// Tflush tags waiting for this request's reply.
    flushes: Vec<Tag>,
}

/// Per-connection state shared by its reader, writer and the workers.
#[derive(Debug)]
pub struct Conn {
    /// Connection number, for logs.
    pub id: u64,
    /// The peer, for logs.
    pub peer: String,
    /// The peer's endpoint identity: the principal credential files are matched against.
    pub endpoint: crate::transport::Peer,
    /// The server.
    pub shared: Arc<Shared>,
    /// Fids.
    pub fids: FidTable,
    params: Mutex<Params>,
    tags: Mutex<HashMap<Tag, TagEntry>>,
    /// Signalled when a tag retires (the reader may be waiting for room).
    tags_freed: Condvar,
    out: Sender<Outgoing>,
}

/// Requests one connection may have in flight. The reader stops reading while the limit is
/// reached, so a client that floods requests (or never reads replies) holds at most this many
/// frames and replies in server memory.
pub const MAX_IN_FLIGHT: usize = 256;

static CONN_IDS: AtomicU64 = AtomicU64::new(1);

impl Conn {
    /// Negotiated parameters.
    pub fn params(&self) -> Params {
        *lock(&self.params)
    }

    /// The dialect (9P2000.L before negotiation, for error replies).
    pub fn dialect(&self) -> Dialect {
        self.params().dialect.unwrap_or(Dialect::P2000L)
    }

    /// The negotiated msize.
    pub fn msize(&self) -> u32 {
        self.params().msize
    }

    /// Queues a reply to a registered tag; the writer retires the tag after sending it.
    pub fn reply(&self, tag: Tag, msg: Message) {
        let _ = self.out.send(Outgoing::Reply {
            tag,
            msg,
            retire: true,
        });
    }

    /// Queues a reply to a tag that was never registered (errors for duplicate tags, bad
    /// frames, NOTAG).
    fn reply_unregistered(&self, tag: Tag, msg: Message) {
        let _ = self.out.send(Outgoing::Reply {
            tag,
            msg,
            retire: false,
        });
    }

    /// Called by the writer just before `tag`'s reply goes out: retires it and returns the
    /// Tflush tags that waited for it.
    pub fn retire(&self, tag: Tag) -> Vec<Tag> {
        let r = lock(&self.tags)
            .remove(&tag)
            .map(|e| e.flushes)
            .unwrap_or_default();
        self.tags_freed.notify_one();
        r
    }

    /// Forgets every in-flight tag (the writer is gone) and wakes the reader.
    pub fn retire_all(&self) {
        lock(&self.tags).clear();
        self.tags_freed.notify_all();
    }

    fn error(&self, errno: u32, text: &str) -> Message {
        Message::error_reply(self.dialect(), errno, text)
    }
}

/// Negotiates a Tversion: the reply and the new parameters.
pub fn negotiate(client_msize: u32, version: &str, max_msize: u32) -> (Rversion, Option<Params>) {
    let dialect = match version {
        v if v == Dialect::P2000L.version_str() => Some(Dialect::P2000L),
        v if v.starts_with(Dialect::P2000u.version_str()) => Some(Dialect::P2000u),
        v if v == Dialect::P2000.version_str() || v.starts_with("9P2000.") => Some(Dialect::P2000),
        _ => None,
    };
    match dialect {
        Some(d) if client_msize >= MIN_MSIZE => {
            let msize = client_msize.min(max_msize);
            (
                Rversion {
                    msize,
                    version: d.version_str().to_string(),
                },
                Some(Params {
                    dialect: Some(d),
                    msize,
                }),
            )
        }
        _ => (
            Rversion {
                msize: client_msize.min(max_msize),
                version: envoy_proto::VERSION_UNKNOWN.to_string(),
            },
            None,
        ),
    }
}

/// Serves one connection until it closes. Runs on the connection's reader thread.
pub fn serve(shared: Arc<Shared>, conn: crate::transport::Connection, pool: Sender<Job>) {
    let crate::transport::Connection {
        mut reader,
        writer: w,
        shutdown,
        peer,
    } = conn;
    let shutdown: Arc<dyn Fn() + Send + Sync> = Arc::from(shutdown);
    let max_msize = shared.config.max_msize;
    let (out_tx, out_rx) = crossbeam_channel::unbounded();
    let c = Arc::new(Conn {
        id: CONN_IDS.fetch_add(1, Ordering::Relaxed),
        peer: peer.to_string(),
        endpoint: peer,
        fids: FidTable::new(shared.config.max_fids_per_conn),
        params: Mutex::new(Params {
            dialect: None,
            msize: max_msize,
        }),
        tags: Mutex::new(HashMap::new()),
        tags_freed: Condvar::new(),
        out: out_tx,
        shared: Arc::clone(&shared),
    });
    let reg = shared.register_conn(&c, Arc::clone(&shutdown));
    let span = tracing::info_span!("conn", id = c.id, peer = %c.peer);
    let _e = span.enter();
    tracing::info!("connected");
    let wc = Arc::clone(&c);
    let wspan = span.clone();
    let writer_thread = std::thread::Builder::new()
        .name(format!("envoyd-w{}", c.id))
        .spawn(move || {
            let _e = wspan.enter();
            writer::run(&wc, w, out_rx)
        });
    let writer_thread = match writer_thread {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "cannot spawn the writer thread; closing");
            shutdown();
            return;
        }
    };
    let mut splitter = FrameSplitter::new(max_msize);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    // One read buffer per connection; frames are copied out of it into `buf` (whose split-off
    // frames then own their bytes, so payloads reach the handlers without another copy).
    let mut tmp = vec![0u8; 128 * 1024];
    let reason = 'conn: loop {
        loop {
            let frame = match splitter.next_frame(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => break 'conn format!("framing error: {e}"),
            };
            if let Some(p) = handle_frame(&c, &pool, frame, max_msize) {
                splitter.set_msize(p.msize);
            }
        }
        match reader.read(&mut tmp) {
            Ok(0) => break 'conn "closed by peer".to_string(),
            Ok(k) => buf.extend_from_slice(tmp.get(..k).unwrap_or(&tmp[..])),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break 'conn format!("read error: {e}"),
        }
    };
    if !buf.is_empty() {
        tracing::debug!(bytes = buf.len(), "discarding a partial frame");
    }
    shutdown();
    let dropped = c.fids.clear();
    shared.locks.drop_conn(c.id);
    let _ = c.out.send(Outgoing::Close);
    let _ = writer_thread.join();
    drop(reg);
    tracing::info!(%reason, fids = dropped, "disconnected");
}

/// Handles one frame; returns new parameters after a successful Tversion.
fn handle_frame(
    c: &Arc<Conn>,
    pool: &Sender<Job>,
    frame: bytes::Bytes,
    max_msize: u32,
) -> Option<Params> {
    let params = c.params();
    let dialect = params.dialect.unwrap_or(Dialect::P2000L);
    let f = match decode(frame, dialect, params.msize) {
        Ok(f) => f,
        Err(e) => {
            let tag = e.tag.unwrap_or(Tag::NOTAG);
            tracing::debug!(error = %e, "undecodable request");
            // The tag may belong to an in-flight request; do not retire it.
            c.reply_unregistered(tag, c.error(e.errno(), &e.kind.to_string()));
            return None;
        }
    };
    let tag = f.tag;
    let mt = f.msg.msg_type();
    if !mt.is_request() {
        c.reply_unregistered(
            tag,
            c.error(libc::EOPNOTSUPP as u32, "R-message sent to the server"),
        );
        return None;
    }
    if let Message::Tversion(v) = &f.msg {
        let (reply, newp) = negotiate(v.msize, &v.version, max_msize);
        let n = c.fids.clear();
        c.shared.locks.drop_conn(c.id);
        if n > 0 {
            tracing::debug!(fids = n, "Tversion reset the session");
        }
        if let Some(p) = newp {
            *lock(&c.params) = p;
        }
        c.reply_unregistered(tag, reply.into());
        return newp;
    }
    if params.dialect.is_none() {
        c.reply_unregistered(tag, c.error(libc::EPROTO as u32, "Tversion first"));
        return None;
    }
    if tag == Tag::NOTAG {
        c.reply_unregistered(tag, c.error(libc::EINVAL as u32, "NOTAG outside Tversion"));
        return None;
    }
    {
        let mut tags = lock(&c.tags);
        while tags.len() >= MAX_IN_FLIGHT {
            tags = c
                .tags_freed
                .wait(tags)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if tags.contains_key(&tag) {
            drop(tags);
            c.reply_unregistered(tag, c.error(libc::EINVAL as u32, "tag already in flight"));
            return None;
        }
        if let Message::Tflush(fl) = &f.msg {
            if fl.oldtag != tag {
                if let Some(entry) = tags.get_mut(&fl.oldtag) {
                    entry.flushes.push(tag);
                    tags.insert(tag, TagEntry::default());
                    return None;
                }
            }
            drop(tags);
            c.reply_unregistered(tag, Rflush {}.into());
            return None;
        }
        tags.insert(tag, TagEntry::default());
    }
    let job = Job {
        conn: Arc::clone(c),
        tag,
        msg: f.msg,
    };
    if let Err(e) = pool.send(job) {
        // Shutting down: answer so the client is not left waiting.
        let job = e.into_inner();
        job.conn
            .reply(job.tag, c.error(libc::EINTR as u32, "server shutting down"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiate_versions_and_msize() {
        let (r, p) = negotiate(8192, "9P2000.L", 65536);
        assert_eq!((r.msize, r.version.as_str()), (8192, "9P2000.L"));
        assert_eq!(p.and_then(|p| p.dialect), Some(Dialect::P2000L));
        let (r, _) = negotiate(1 << 30, "9P2000.u", 65536);
        assert_eq!((r.msize, r.version.as_str()), (65536, "9P2000.u"));
        let (r, p) = negotiate(8192, "9P2000", 65536);
        assert_eq!(
            (r.version.as_str(), p.and_then(|p| p.dialect)),
            ("9P2000", Some(Dialect::P2000))
        );
        let (r, p) = negotiate(8192, "9P3000", 65536);
        assert_eq!((r.version.as_str(), p), ("unknown", None));
        let (r, p) = negotiate(1024, "9P2000.L", 65536);
        assert_eq!((r.version.as_str(), p), ("unknown", None));
    }
}
