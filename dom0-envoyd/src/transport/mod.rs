//! The listener seam: anything that yields byte-stream connections.
//!
//! A [`Listener`] produces [`Connection`]s: a reader, a [`ReplyWriter`] (vectored, so a
//! reply's payload goes out without a copy) and a [`Peer`] description. TCP, Unix sockets,
//! vsock, shared-memory rings and Xen rings implement the same trait.
//!
//! Replies are written by whichever thread produced them (see [`crate::session::reply`]), so
//! that thread must not be stuck behind a client that stopped reading: on sockets
//! [`ReplyWriter::try_write_vectored`] sends with `MSG_DONTWAIT` and reports `WouldBlock`,
//! and only the connection's lazily started flusher thread ever blocks in a send. Ring
//! writers have no such mode (they block until the reply fits; a ring peer consumes replies
//! asynchronously by construction).

pub mod ring;
pub mod tcp;
pub mod unix;
pub mod vsock;
pub mod xen;

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// Who is on the other end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A TCP peer address.
    Tcp(std::net::SocketAddr),
    /// A Unix-socket peer's credentials (`SO_PEERCRED`), when available.
    Unix {
        /// Process id.
        pid: Option<i32>,
        /// User id.
        uid: Option<u32>,
        /// Group id.
        gid: Option<u32>,
    },
    /// An `AF_VSOCK` peer (or a hybrid-vsock Unix socket standing for one): the guest's CID.
    Vsock {
        /// Context id of the guest.
        cid: u32,
    },
    /// A Xen guest on a 9pfs grant ring: its domain id.
    Xen {
        /// Domain id of the frontend.
        domid: u16,
    },
    /// A shared-memory ring file (`--listen ring:PATH`); whoever can open the file is the peer.
    Ring {
        /// The ring file.
        path: std::path::PathBuf,
    },
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Tcp(a) => write!(f, "tcp:{a}"),
            Peer::Unix { pid, uid, .. } => write!(f, "unix:pid={pid:?},uid={uid:?}"),
            Peer::Vsock { cid } => write!(f, "vsock:cid={cid}"),
            Peer::Xen { domid } => write!(f, "xen:domid={domid}"),
            Peer::Ring { path } => write!(f, "ring:{}", path.display()),
        }
    }
}

/// One accepted connection.
pub struct Connection {
    /// Bytes from the client.
    pub reader: Box<dyn Read + Send>,
    /// Whole request frames, for transports that can yield them (rings): the session then
    /// takes frames from here (one copy out of shared memory) instead of splitting `reader`'s
    /// byte stream (read buffer → frame buffer: one copy more). `reader` is unused then.
    pub frames: Option<Box<dyn FrameSource>>,
    /// Bytes to the client.
    pub writer: ReplyWriter,
    /// Shuts both directions down (used at server shutdown and on fatal framing errors).
    pub shutdown: Box<dyn Fn() + Send + Sync>,
    /// The peer.
    pub peer: Peer,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .finish()
    }
}

/// The byte sink replies go to: any blocking writer, plus (for sockets) a descriptor on which
/// a send can be tried without blocking.
pub struct ReplyWriter {
    inner: Box<dyn Write + Send>,
    nowait: Option<OwnedFd>,
    /// A shared-memory ring's writer: replies can be built in ring memory in place
    /// ([`ReplyWriter::ring_writer`]); `inner` is unused then.
    ring: Option<envoy_ring::RingWriter>,
}

impl std::fmt::Debug for ReplyWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyWriter")
            .field("nowait", &self.nowait.is_some())
            .finish()
    }
}

impl ReplyWriter {
    /// A writer with no non-blocking mode: every write may block.
    pub fn blocking(inner: Box<dyn Write + Send>) -> ReplyWriter {
        ReplyWriter {
            inner,
            nowait: None,
            ring: None,
        }
    }

    /// A shared-memory ring's reply half: blocking writes, plus in-place replies (a read's
    /// data goes from the page cache straight into ring memory, see
    /// [`crate::session::reply::Replies::send_read_direct`]).
    pub fn ring(w: envoy_ring::RingWriter) -> ReplyWriter {
        ReplyWriter {
            inner: Box::new(io::sink()),
            nowait: None,
            ring: Some(w),
        }
    }

    /// Whether replies go to a shared-memory ring.
    pub fn is_ring(&self) -> bool {
        self.ring.is_some()
    }

    /// The ring writer, when replies go to a shared-memory ring.
    pub fn ring_writer(&mut self) -> Option<&mut envoy_ring::RingWriter> {
        self.ring.as_mut()
    }

    /// A stream socket: blocking writes through `s`, non-blocking sends on a duplicate of
    /// its descriptor.
    pub fn socket<S: Write + AsFd + Send + 'static>(s: S) -> io::Result<ReplyWriter> {
        let fd = s.as_fd().try_clone_to_owned()?;
        Ok(ReplyWriter {
            inner: Box::new(s),
            nowait: Some(fd),
            ring: None,
        })
    }

    /// Writes some of `bufs` without blocking: `WouldBlock` when the peer's buffer is full.
    /// Writers with no non-blocking mode block instead.
    pub fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let Some(fd) = &self.nowait else {
            return self.write_vectored(bufs);
        };
        use nix::sys::socket::{sendmsg, MsgFlags, UnixAddr};
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        sendmsg::<UnixAddr>(fd.as_raw_fd(), bufs, &[], flags, None).map_err(io::Error::from)
    }
}

/// Blocking writes.
impl Write for ReplyWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.ring {
            Some(r) => r.write(buf),
            None => self.inner.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match &mut self.ring {
            Some(r) => r.write_vectored(bufs),
            None => self.inner.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.ring {
            Some(r) => r.flush(),
            None => self.inner.flush(),
        }
    }
}

/// A transport that delivers requests as whole frames.
pub trait FrameSource: Send {
    /// The next frame, waiting for it; `Ok(None)` at the end of the connection. Frames of
    /// more than `max` bytes (or below the 7-byte header) are errors.
    fn next_frame(&mut self, max: u32) -> io::Result<Option<bytes::Bytes>>;
    /// The next frame if one is complete now (never waits).
    fn try_next_frame(&mut self, max: u32) -> io::Result<Option<bytes::Bytes>>;
    /// Waits until a frame is complete without taking it; `Ok(false)` at the end of the
    /// connection. Size errors as for [`FrameSource::next_frame`].
    fn wait_frame(&mut self, max: u32) -> io::Result<bool>;
    /// The next frame left in the transport's memory (no copy) if one of type `msg_type` is
    /// complete now and none is held already (see [`envoy_ring::RingReader::try_hold_message`]).
    fn try_hold_frame(
        &mut self,
        max: u32,
        msg_type: u8,
    ) -> io::Result<Option<envoy_ring::HeldMessage>>;
}

impl FrameSource for envoy_ring::RingReader {
    fn next_frame(&mut self, max: u32) -> io::Result<Option<bytes::Bytes>> {
        self.read_message(max)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    fn try_next_frame(&mut self, max: u32) -> io::Result<Option<bytes::Bytes>> {
        self.try_read_message(max)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    fn wait_frame(&mut self, max: u32) -> io::Result<bool> {
        self.wait_message(max)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    fn try_hold_frame(
        &mut self,
        max: u32,
        msg_type: u8,
    ) -> io::Result<Option<envoy_ring::HeldMessage>> {
        self.try_hold_message(max, msg_type)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// A source of connections.
pub trait Listener: Send {
    /// Waits for the next connection. `Ok(None)` means the listener was shut down.
    fn accept(&mut self) -> io::Result<Option<Connection>>;
    /// Where it listens, for logs (`tcp:127.0.0.1:5640`).
    fn local_desc(&self) -> String;
}
