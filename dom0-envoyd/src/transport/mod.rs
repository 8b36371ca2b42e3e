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
        }
    }

    /// A stream socket: blocking writes through `s`, non-blocking sends on a duplicate of
    /// its descriptor.
    pub fn socket<S: Write + AsFd + Send + 'static>(s: S) -> io::Result<ReplyWriter> {
        let fd = s.as_fd().try_clone_to_owned()?;
        Ok(ReplyWriter {
            inner: Box::new(s),
            nowait: Some(fd),
        })
    }

    /// Writes some of `bufs` without blocking: `WouldBlock` when the peer's buffer is full.
    /// Writers with no non-blocking mode block instead.
    pub fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let Some(fd) = &self.nowait else {
            return self.inner.write_vectored(bufs);
        };
        use nix::sys::socket::{sendmsg, MsgFlags, UnixAddr};
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        sendmsg::<UnixAddr>(fd.as_raw_fd(), bufs, &[], flags, None).map_err(io::Error::from)
    }
}

/// Blocking writes.
impl Write for ReplyWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.inner.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A source of connections.
pub trait Listener: Send {
    /// Waits for the next connection. `Ok(None)` means the listener was shut down.
    fn accept(&mut self) -> io::Result<Option<Connection>>;
    /// Where it listens, for logs (`tcp:127.0.0.1:5640`).
    fn local_desc(&self) -> String;
}
