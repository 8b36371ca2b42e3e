//! Shared-memory ring listener (`ring:PATH`): 9P over Xen-9pfs-format rings in a file.
//!
//! The file convention (header page, per-ring control blocks with futex doorbells, how a
//! client claims a ring) is [`envoy_ring::file`]. If `PATH` does not exist envoyd creates it
//! with [`DEFAULT_RINGS`] rings of order [`DEFAULT_ORDER`] (1 MiB per direction); a file made
//! beforehand by whoever sets up the guest (other ring count or order) is used as it is.
//!
//! Each attached ring is one [`Connection`] served by the ordinary session code:
//!
//! * requests: a `Twrite` is left in the `out` ring ([`super::FrameSource::try_hold_frame`]):
//!   its header is copied, the file write takes the payload from ring memory (`pwritev`: the
//!   kernel's ring → page-cache copy is the only one, 2 copies per byte with the client's;
//!   a payload that wraps at the ring's end is written from its two windows), and the ring
//!   space is released after the write (see `crate::session::held_write`). Every other
//!   message is taken whole ([`envoy_ring::RingReader::try_read_message`]):
//!   one copy, ring → the frame's own buffer, which the decoder slices (a Twrite's data is
//!   not copied again);
//! * replies: the session's writer hands header and payload to [`envoy_ring::RingWriter`]'s
//!   `write_vectored`, which copies them straight into the `in` ring and publishes each reply
//!   only when all of it is there (one copy per reply byte, the unavoidable one into shared
//!   memory); an `Rread` is built in place instead when its space in the ring is contiguous:
//!   the store reads the file straight into ring memory (the kernel's page-cache copy is the
//!   only one; see [`crate::session::reply::Replies::send_read_direct`]);
//! * a ring whose client breaks the protocol (indexes out of range, impossible sizes) gets a
//!   read error, which ends that connection only: the ring is marked CLOSED and the others
//!   keep being served;
//! * the client should negotiate an msize no larger than the ring (a reply that cannot fit
//!   ends the connection, like any other write error).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use envoy_ring::file::RingFile;
use envoy_ring::{RingOrder, Waiter};

use super::{Connection, Listener, Peer};

/// Rings in a file envoyd creates itself.
pub const DEFAULT_RINGS: u32 = 4;
/// Ring order of a file envoyd creates itself (the protocol maximum: 1 MiB per direction).
pub const DEFAULT_ORDER: u32 = 9;

/// Serves every ring of one ring file.
#[derive(Debug)]
pub struct RingListener {
    file: RingFile,
    stop: Arc<AtomicBool>,
    waiter: Waiter,
}

impl RingListener {
    /// Opens (or creates) the ring file at `path` and forgets any previous server's state in
    /// it. `stop` ends [`Listener::accept`] within 100 ms.
    pub fn open(path: &Path, stop: Arc<AtomicBool>) -> io::Result<RingListener> {
        let order = RingOrder::new(DEFAULT_ORDER).map_err(io::Error::other)?;
        let file =
            RingFile::open_or_create(path, DEFAULT_RINGS, order).map_err(io::Error::other)?;
        file.reset_server().map_err(io::Error::other)?;
        Ok(RingListener {
            file,
            stop,
            waiter: Waiter::default(),
        })
    }

    /// The ring file.
    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

impl Listener for RingListener {
    fn accept(&mut self) -> io::Result<Option<Connection>> {
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Ok(None);
            }
            let i = match self.file.wait_attach(&self.stop, Duration::from_secs(1)) {
                Ok(Some(i)) => i,
                Ok(None) => continue,
                Err(e) => return Err(io::Error::other(e)),
            };
            let b = self.file.serve(i, self.waiter).map_err(io::Error::other)?;
            tracing::debug!(ring = b.index, file = %self.file.path().display(), "ring attached");
            let closer = b.closer;
            return Ok(Some(Connection {
                reader: Box::new(std::io::empty()),
                frames: Some(Box::new(b.reader)),
                writer: super::ReplyWriter::ring(b.writer),
                shutdown: Box::new(move || closer.close()),
                peer: Peer::Ring {
                    path: PathBuf::from(self.file.path()),
                },
            }));
        }
    }

    fn local_desc(&self) -> String {
        format!("ring:{}", self.file.path().display())
    }
}
