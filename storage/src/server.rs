//! The stateless storage server (`envoy-storaged serve`).
//!
//! Speaks the storage service of `envoy-proto` (`"Envoy.storage.1"`, dissertation §5.3.1):
//! every request names an object by ID, so the server keeps no per-client state beyond the
//! connection itself (negotiated msize, read buffer).
//!
//! # Threads
//!
//! One accept thread per listener; per connection one reader thread that splits frames and a
//! few worker threads that execute requests concurrently and write replies (whole frames,
//! serialized by a mutex on the write half; payloads go out with `writev`, uncopied).
//!
//! # Bad input
//!
//! * A frame whose size field is below 7 or above msize, or a connection that ends inside a
//!   frame: that connection is closed; nothing else is affected.
//! * A frame that fails to decode but has a readable header (unknown type, truncated body,
//!   bad attribute, count above msize, trailing bytes): `Rlerror` for its tag.
//! * Any request before `Tversion`, an R-message, or a message of another dialect: `Rlerror`.
//! * Store errors (unknown ID, offset overflow, ID out of range, …): `Rlerror` with the errno
//!   from [`StoreError::errno`], the one place errors become numbers.
//!
//! * A client that stops reading replies: a reply that cannot be sent (error, or no progress
//!   for [`SEND_TIMEOUT`]) closes the connection, so a peer cannot park a connection's worker
//!   threads in `write` forever.
//!
//! A request runs to completion even when its client has gone, so the store is never left
//! half-way by a disconnect (each store operation is atomic anyway).
//!
//! # Resource bounds
//!
//! At most [`MAX_CONNECTIONS`] connections; per connection `WORKERS_PER_CONN + 1` (5)
//! threads and at most `QUEUE_PER_CONN + WORKERS_PER_CONN + 1` (21) request frames plus
//! `WORKERS_PER_CONN` (4) replies of the negotiated msize in memory (msize is capped at
//! [`MAX_MSIZE`], and a `Tversion` below 4096 is refused), so about 25 × 16 MiB per connection
//! at worst. There is no global memory budget across connections. An idle connection keeps
//! its slot indefinitely: without authentication the server cannot tell an idle envoy from a
//! peer hoarding slots.

use std::io::{self, Read};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use bytes::{Bytes, BytesMut};
use envoy_proto::{
    decode, encode_parts, Dialect, FrameSplitter, Message, Rlerror, Rsclone, Rscreate, Rsdelete,
    Rsread, Rsreserve, Rsstat, Rssync, Rswrite, Rswstat, Rversion, Tag, VERSION_STORAGE,
    VERSION_UNKNOWN,
};

use crate::error::{chain, StoreError};
use crate::object::ObjectId;
use crate::store::{ObjectStore, MAX_IO};
use crate::wire::{self, Endpoint, Stream};

/// Largest msize the server accepts: the largest write plus generous header room.
pub const MAX_MSIZE: u32 = MAX_IO as u32 + 4096;
/// Worker threads per connection.
const WORKERS_PER_CONN: usize = 4;
/// Requests queued per connection before the reader stops reading (back-pressure). A
/// connection holds at most `QUEUE_PER_CONN + WORKERS_PER_CONN + 1` frames of msize bytes.
const QUEUE_PER_CONN: usize = 16;
/// Connections served at once; further ones are closed at accept.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long one reply may wait for the peer to make room before the connection is dropped.
pub const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("cannot listen on {endpoint}")]
    Bind {
        /// The endpoint.
        endpoint: Endpoint,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, std::path::PathBuf),
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    stop: Arc<AtomicBool>,
    endpoints: Vec<Endpoint>,
    threads: Vec<JoinHandle<()>>,
}

impl ServerHandle {
    /// The endpoints actually bound (TCP port 0 resolved).
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Stops accepting connections and waits for the accept threads. Connections already
    /// open finish on their own when their clients disconnect.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for ep in &self.endpoints {
            // Wake the accept loop.
            let _ = Stream::connect(ep);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for ep in &self.endpoints {
            if let Endpoint::Unix(p) = ep {
                let _ = std::fs::remove_file(p);
            }
        }
    }

    /// Blocks until every accept thread exits (i.e. forever, unless stopped elsewhere).
    pub fn wait(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Binds every endpoint and starts serving `store` on them.
pub fn serve(store: Arc<ObjectStore>, endpoints: &[Endpoint]) -> Result<ServerHandle, ServerError> {
    let mut bound = Vec::new();
    for ep in endpoints {
        let bind_err = |source| ServerError::Bind {
            endpoint: ep.clone(),
            source,
        };
        match ep {
            Endpoint::Tcp(a) => {
                let l = TcpListener::bind(a).map_err(bind_err)?;
                let local = l.local_addr().map_err(bind_err)?;
                bound.push((Listener::Tcp(l), Endpoint::Tcp(local)));
            }
            Endpoint::Unix(p) => {
                // A stale socket file from an earlier run would make bind fail.
                if std::fs::symlink_metadata(p)
                    .map(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                    .unwrap_or(false)
                {
                    let _ = std::fs::remove_file(p);
                }
                let l = UnixListener::bind(p).map_err(bind_err)?;
                bound.push((Listener::Unix(l, p.clone()), ep.clone()));
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let active = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    let mut eps = Vec::new();
    for (l, ep) in bound {
        tracing::info!(endpoint = %ep, "storage server listening");
        let store = Arc::clone(&store);
        let stop = Arc::clone(&stop);
        let active = Arc::clone(&active);
        threads.push(std::thread::spawn(move || {
            accept_loop(l, store, stop, active)
        }));
        eps.push(ep);
    }
    Ok(ServerHandle {
        stop,
        endpoints: eps,
        threads,
    })
}

/// Counts a connection for as long as it lives.
struct ConnSlot(Arc<AtomicUsize>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn accept_loop(
    l: Listener,
    store: Arc<ObjectStore>,
    stop: Arc<AtomicBool>,
    active: Arc<AtomicUsize>,
) {
    loop {
        let conn = match &l {
            Listener::Tcp(l) => l.accept().map(|(s, peer)| {
                let _ = s.set_nodelay(true);
                (Stream::Tcp(s), peer.to_string())
            }),
            Listener::Unix(l, p) => l
                .accept()
                .map(|(s, _)| (Stream::Unix(s), p.display().to_string())),
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match conn {
            Ok((s, peer)) => {
                if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                    active.fetch_sub(1, Ordering::SeqCst);
                    tracing::warn!(%peer, "too many connections; closing the new one");
                    s.shutdown();
                    continue;
                }
                let slot = ConnSlot(Arc::clone(&active));
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    let _slot = slot;
                    tracing::debug!(%peer, "connection opened");
                    match Connection::run(s, store) {
                        Ok(()) => tracing::debug!(%peer, "connection closed"),
                        Err(e) => tracing::info!(%peer, error = %chain(&e), "connection dropped"),
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                // Avoid a hot loop on persistent errors such as EMFILE.
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
}

/// Per-connection state: the write half and the negotiated msize.
struct Connection {
    writer: Mutex<Stream>,
    msize: std::sync::atomic::AtomicU32,
    versioned: AtomicBool,
    store: Arc<ObjectStore>,
}

/// Why a connection ended abnormally.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("I/O error")]
    Io(#[from] io::Error),
    #[error("broken framing")]
    Frame(#[from] envoy_proto::FrameError),
    #[error("undecodable frame")]
    Decode(#[from] envoy_proto::DecodeError),
    #[error("connection ended inside a frame ({0} bytes pending)")]
    Truncated(usize),
}

impl Connection {
    fn run(stream: Stream, store: Arc<ObjectStore>) -> Result<(), ConnError> {
        stream.set_write_timeout(Some(SEND_TIMEOUT))?;
        let mut reader = stream.try_clone()?;
        let conn = Arc::new(Connection {
            writer: Mutex::new(stream),
            msize: std::sync::atomic::AtomicU32::new(MAX_MSIZE),
            versioned: AtomicBool::new(false),
            store,
        });
        let (tx, rx) = crossbeam_channel::bounded::<(Tag, Message)>(QUEUE_PER_CONN);
        let workers: Vec<_> = (0..WORKERS_PER_CONN)
            .map(|_| {
                let rx = rx.clone();
                let conn = Arc::clone(&conn);
                std::thread::spawn(move || {
                    for (tag, msg) in rx {
                        let reply = conn.handle(msg);
                        if let Err(e) = conn.send(tag, &reply) {
                            // The reply cannot be delivered (peer gone, not reading, or a
                            // frame cut off by the send timeout): end the connection, which
                            // wakes the reader. Keep draining so the reader never blocks.
                            tracing::debug!(error = %chain(&e), "reply not delivered; closing connection");
                            conn.lock_writer().shutdown();
                        }
                    }
                })
            })
            .collect();
        drop(rx);
        let result = conn.read_loop(&mut reader, &tx);
        drop(tx);
        for w in workers {
            let _ = w.join();
        }
        if result.is_err() {
            conn.lock_writer().shutdown();
        }
        result
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, Stream> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_loop(
        &self,
        reader: &mut Stream,
        tx: &crossbeam_channel::Sender<(Tag, Message)>,
    ) -> Result<(), ConnError> {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let splitter = FrameSplitter::new(self.msize.load(Ordering::SeqCst));
            if let Some(frame) = splitter.next_frame(&mut buf)? {
                self.dispatch(frame, tx)?;
                continue;
            }
            let n = reader.read(&mut chunk)?;
            if n == 0 {
                return if buf.is_empty() {
                    Ok(())
                } else {
                    Err(ConnError::Truncated(buf.len()))
                };
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn dispatch(
        &self,
        frame: Bytes,
        tx: &crossbeam_channel::Sender<(Tag, Message)>,
    ) -> Result<(), ConnError> {
        let msize = self.msize.load(Ordering::SeqCst);
        let f = match decode(frame, Dialect::Storage, msize) {
            Ok(f) => f,
            Err(e) if e.is_fatal() => return Err(e.into()),
            Err(e) => {
                tracing::debug!(error = %chain(&e), "undecodable request");
                let tag = e.tag.unwrap_or(Tag::NOTAG);
                self.send_error(tag, libc::EBADMSG)?;
                return Ok(());
            }
        };
        if let Message::Tversion(v) = &f.msg {
            // Version runs inline: it changes how the following frames are read.
            let reply = if v.version == VERSION_STORAGE {
                let m = v.msize.min(MAX_MSIZE);
                if m < 4096 {
                    tracing::debug!(msize = v.msize, "Tversion msize below 4096");
                    return self.send_error(f.tag, libc::EINVAL).map_err(Into::into);
                }
                self.msize.store(m, Ordering::SeqCst);
                self.versioned.store(true, Ordering::SeqCst);
                Rversion {
                    msize: m,
                    version: VERSION_STORAGE.into(),
                }
            } else {
                Rversion {
                    msize: v.msize.min(MAX_MSIZE),
                    version: VERSION_UNKNOWN.into(),
                }
            };
            return self.send(f.tag, &reply.into()).map_err(Into::into);
        }
        if !self.versioned.load(Ordering::SeqCst) {
            return self.send_error(f.tag, libc::EPROTO).map_err(Into::into);
        }
        if !f.msg.is_request() {
            return self.send_error(f.tag, libc::EPROTO).map_err(Into::into);
        }
        // A send error means every worker exited, which only happens once we drop `tx`.
        let _ = tx.send((f.tag, f.msg));
        Ok(())
    }

    fn send_error(&self, tag: Tag, ecode: i32) -> io::Result<()> {
        self.send(
            tag,
            &Rlerror {
                ecode: ecode as u32,
            }
            .into(),
        )
    }

    fn send(&self, tag: Tag, msg: &Message) -> io::Result<()> {
        let msize = self.msize.load(Ordering::SeqCst);
        let mut head = BytesMut::with_capacity(128);
        let parts = match encode_parts(tag, msg, Dialect::Storage, msize, &mut head) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %chain(&e), "cannot encode reply; sending EIO");
                head.clear();
                let err: Message = Rlerror {
                    ecode: libc::EIO as u32,
                }
                .into();
                encode_parts(tag, &err, Dialect::Storage, msize, &mut head)
                    .map_err(io::Error::other)?
            }
        };
        let mut w = self.lock_writer();
        wire::write_frame(&mut *w, &head, parts.payload.as_deref())
    }

    /// Executes one request; every failure becomes `Rlerror` here and nowhere else.
    fn handle(&self, msg: Message) -> Message {
        let name = msg.name();
        match self.execute(msg) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(request = name, error = %chain(&e), "request failed");
                Rlerror {
                    ecode: e.errno() as u32,
                }
                .into()
            }
        }
    }

    fn execute(&self, msg: Message) -> Result<Message, StoreError> {
        let s = &self.store;
        Ok(match msg {
            Message::Tsreserve(m) => {
                let r = s.reserve(m.count)?;
                Rsreserve {
                    first: r.first.0,
                    count: r.count,
                }
                .into()
            }
            Message::Tscreate(m) => {
                let attr = wire::attr_from_wire(&m.attr)?;
                let st = s.create_object(ObjectId(m.id), &attr)?;
                Rscreate {
                    stat: wire::stat_to_wire(&st),
                }
                .into()
            }
            Message::Tsclone(m) => {
                let st = s.clone_object(ObjectId(m.src), ObjectId(m.dst))?;
                Rsclone {
                    stat: wire::stat_to_wire(&st),
                }
                .into()
            }
            Message::Tsread(m) => {
                // The codec already bounded count by msize; the store caps at MAX_IO.
                let data = s.read(ObjectId(m.id), m.offset, m.count as usize)?;
                Rsread { data }.into()
            }
            Message::Tswrite(m) => {
                let n = s.write(ObjectId(m.id), m.offset, m.data)?;
                Rswrite {
                    count: u32::try_from(n).unwrap_or(u32::MAX),
                }
                .into()
            }
            Message::Tsstat(m) => Rsstat {
                stat: wire::stat_to_wire(&s.stat(ObjectId(m.id))?),
            }
            .into(),
            Message::Tswstat(m) => {
                let change = wire::change_from_wire(m.valid, &m.attr, m.size)?;
                Rswstat {
                    stat: wire::stat_to_wire(&s.wstat(ObjectId(m.id), &change)?),
                }
                .into()
            }
            Message::Tsdelete(m) => {
                s.delete(ObjectId(m.id))?;
                Rsdelete {}.into()
            }
            Message::Tssync(m) => {
                s.sync(ObjectId(m.id))?;
                Rssync {}.into()
            }
            other => {
                return Err(StoreError::InvalidArgument(format!(
                    "{} is not a storage request",
                    other.name()
                )))
            }
        })
    }
}
