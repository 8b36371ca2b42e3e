//! The listener seam: anything that yields byte-stream connections.
//!
//! A [`Listener`] produces [`Connection`]s: a reader, a writer (with `write_vectored`, so a
//! reply's payload goes out without a copy) and a [`Peer`] description. TCP and Unix sockets
//! live here; vsock, virtio-serial and shared-memory rings implement the same trait later.

pub mod ring;
pub mod tcp;
pub mod unix;
pub mod vsock;
pub mod xen;

use std::io::{self, Read, Write};

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
    pub writer: Box<dyn Write + Send>,
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

/// A source of connections.
pub trait Listener: Send {
    /// Waits for the next connection. `Ok(None)` means the listener was shut down.
    fn accept(&mut self) -> io::Result<Option<Connection>>;
    /// Where it listens, for logs (`tcp:127.0.0.1:5640`).
    fn local_desc(&self) -> String;
}
