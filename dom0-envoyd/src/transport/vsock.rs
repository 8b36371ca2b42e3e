//! vsock listeners: `AF_VSOCK` (`vsock:PORT`) and hybrid vsock Unix sockets
//! (`vsock-uds:[CID:]PATH`).
//!
//! Both carry the same byte stream a TCP connection would (9P frames, nothing added); they
//! differ in how the guest reaches envoyd and in how its identity, the context id (CID), is
//! learnt. The CID becomes [`Peer::Vsock`], the principal the access layer binds.
//!
//! **`vsock:PORT`** — a host with the kernel's vhost-vsock (`/dev/vhost-vsock`, QEMU
//! `-device vhost-vsock-pci,guest-cid=N`). envoyd binds `AF_VSOCK` on `VMADDR_CID_ANY:PORT`;
//! the kernel tells the peer's CID with each accepted connection (`getpeername`), and the
//! hypervisor, not the guest, assigns it, so it can be trusted.
//!
//! **`vsock-uds:[CID:]PATH`** — hybrid vsock, the convention of Firecracker, Cloud Hypervisor
//! and rust-vmm's `vhost-device-vsock` (a vhost-user backend for QEMU's
//! `vhost-user-vsock-pci`): the VMM turns guest vsock streams into Unix-socket connections.
//! When the guest connects to the host (CID 2) on port `P`, the VMM connects to the Unix
//! socket `<uds_path>_<P>`, where `uds_path` is its configured path (`--vm uds-path=` of
//! vhost-device-vsock, `uds_path` of Firecracker's vsock device), and then only relays
//! bytes: no preamble on guest-initiated connections (the `CONNECT <port>\n` / `OK <port>\n`
//! handshake is for host-initiated ones, which envoyd never makes). So envoyd binds exactly
//! `PATH = <uds_path>_<P>`, e.g. `--listen vsock-uds:5:/run/vm5/vsock_5640` for a guest
//! `envoy-shim relay --endpoint vsock:2:5640`.
//!
//! A Unix connection carries no CID: the VMM that owns `uds_path` serves exactly one VM, so
//! the CID is configuration. The optional `CID:` prefix states the guest CID of that VM
//! (what `guest-cid=` says to the VMM); without it the CID is 3, the default guest CID of
//! vhost-device-vsock and of Firecracker's examples. With several VMs, give each its own
//! `uds_path` and its own CID here: two listeners with the same CID are the same principal.
//! The socket is created with mode 0600, because whoever can connect to it speaks as that CID.
//!
//! Stopping: the `AF_VSOCK` listener waits in `accept` with a receive time-out
//! ([`ACCEPT_POLL`]) and looks at the stop flag between waits (a vsock listener cannot be
//! woken by connecting to itself unless the host has a loopback transport); the hybrid
//! listener is woken like the Unix one, by a connection to its path.

use std::fs::File;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    accept4, bind, getpeername, getsockname, listen, setsockopt, socket, sockopt, AddressFamily,
    Backlog, SockFlag, SockType, VsockAddr,
};
use nix::sys::time::TimeVal;

use super::{Connection, Listener, Peer};

/// How long one `accept` on an `AF_VSOCK` listener waits before looking at the stop flag.
pub const ACCEPT_POLL: Duration = Duration::from_millis(200);

/// The guest CID assumed for a hybrid vsock socket when the endpoint names none
/// (vhost-device-vsock's default `guest-cid`).
pub const DEFAULT_HYBRID_CID: u32 = 3;

/// `VMADDR_CID_ANY`: bind on every CID of this host.
const CID_ANY: u32 = u32::MAX;

/// An `AF_VSOCK` stream listener on `VMADDR_CID_ANY:port`.
#[derive(Debug)]
pub struct VsockListener {
    fd: OwnedFd,
    port: u32,
    stop: Arc<AtomicBool>,
}

impl VsockListener {
    /// Binds `AF_VSOCK` port `port` on every local CID and listens.
    pub fn bind(port: u32, stop: Arc<AtomicBool>) -> io::Result<VsockListener> {
        let fd = socket(
            AddressFamily::Vsock,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        bind(fd.as_raw_fd(), &VsockAddr::new(CID_ANY, port))?;
        listen(&fd, Backlog::new(128)?)?;
        // accept() honours SO_RCVTIMEO on vsock: it returns EAGAIN after the time-out, which
        // lets the loop notice a shutdown.
        let t = TimeVal::new(0, ACCEPT_POLL.as_micros() as libc::suseconds_t);
        setsockopt(&fd, sockopt::ReceiveTimeout, &t)?;
        let port = getsockname::<VsockAddr>(fd.as_raw_fd())?.port();
        Ok(VsockListener { fd, port, stop })
    }

    /// The bound port (the one asked for; vsock has no "any port" here).
    pub fn port(&self) -> u32 {
        self.port
    }
}

fn wrap_vsock(fd: OwnedFd) -> io::Result<Connection> {
    let cid = getpeername::<VsockAddr>(fd.as_raw_fd())?.cid();
    // Whether a child socket inherits the listener's receive time-out depends on the
    // transport; a connection must block without one.
    setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(0, 0))?;
    let reader = File::from(fd.try_clone()?);
    let writer = File::from(fd.try_clone()?);
    Ok(Connection {
        reader: Box::new(reader),
        frames: None,
        writer: super::ReplyWriter::socket(writer)?,
        shutdown: Box::new(move || {
            let _ = nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        }),
        peer: Peer::Vsock { cid },
    })
}

impl Listener for VsockListener {
    fn accept(&mut self) -> io::Result<Option<Connection>> {
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Ok(None);
            }
            match accept4(self.fd.as_fd().as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
                Ok(raw) => {
                    // SAFETY: accept4 just returned this descriptor; nothing else owns it, so
                    // the OwnedFd is its only owner and closes it exactly once.
                    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                    if self.stop.load(Ordering::SeqCst) {
                        return Ok(None);
                    }
                    return wrap_vsock(fd).map(Some);
                }
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn local_desc(&self) -> String {
        format!("vsock:{}", self.port)
    }
}

/// The host side of one hybrid vsock port: a Unix socket at `<uds_path>_<port>` whose every
/// connection is the guest with CID `cid`.
#[derive(Debug)]
pub struct HybridVsockListener {
    inner: StdUnixListener,
    path: PathBuf,
    cid: u32,
    stop: Arc<AtomicBool>,
}

impl HybridVsockListener {
    /// Binds `path` (mode 0600), replacing a stale socket there.
    pub fn bind(path: &Path, cid: u32, stop: Arc<AtomicBool>) -> io::Result<HybridVsockListener> {
        if let Ok(md) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            if md.file_type().is_socket() {
                std::fs::remove_file(path)?;
            }
        }
        let inner = StdUnixListener::bind(path)?;
        let listener = HybridVsockListener {
            inner,
            path: path.to_path_buf(),
            cid,
            stop,
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(listener)
    }

    /// The guest CID every connection is attributed to.
    pub fn cid(&self) -> u32 {
        self.cid
    }
}

impl Drop for HybridVsockListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn wrap_hybrid(s: UnixStream, cid: u32) -> io::Result<Connection> {
    let w = s.try_clone()?;
    let sd = s.try_clone()?;
    Ok(Connection {
        reader: Box::new(s),
        frames: None,
        writer: super::ReplyWriter::socket(w)?,
        shutdown: Box::new(move || {
            let _ = sd.shutdown(Shutdown::Both);
        }),
        peer: Peer::Vsock { cid },
    })
}

impl Listener for HybridVsockListener {
    fn accept(&mut self) -> io::Result<Option<Connection>> {
        loop {
            let r = self.inner.accept();
            if self.stop.load(Ordering::SeqCst) {
                return Ok(None);
            }
            match r {
                Ok((s, _)) => return wrap_hybrid(s, self.cid).map(Some),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn local_desc(&self) -> String {
        format!("vsock-uds:{}:{}", self.cid, self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Instant;

    #[test]
    fn hybrid_connection_peer_is_configured_cid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.vsock_5640");
        let stop = Arc::new(AtomicBool::new(false));
        let mut l = HybridVsockListener::bind(&path, 7, Arc::clone(&stop)).unwrap();
        let mut guest = UnixStream::connect(&path).unwrap();
        let mut c = l.accept().unwrap().unwrap();
        assert_eq!(c.peer, Peer::Vsock { cid: 7 });
        guest.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        c.reader.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        c.writer.write_all(b"pong").unwrap();
        guest.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
        (c.shutdown)();
        assert_eq!(guest.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn hybrid_socket_mode_0600_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.vsock_1");
        let l = HybridVsockListener::bind(&path, 3, Arc::new(AtomicBool::new(false))).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(l.local_desc(), format!("vsock-uds:3:{}", path.display()));
        drop(l);
        assert!(!path.exists());
    }

    #[test]
    fn hybrid_stale_socket_replaced_regular_file_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stale");
        let old = StdUnixListener::bind(&path).unwrap();
        drop(old); // leaves the socket file behind
        let l = HybridVsockListener::bind(&path, 3, Arc::new(AtomicBool::new(false))).unwrap();
        assert!(UnixStream::connect(&path).is_ok());
        drop(l);
        let file = dir.path().join("regular");
        std::fs::write(&file, b"keep").unwrap();
        assert!(HybridVsockListener::bind(&file, 3, Arc::new(AtomicBool::new(false))).is_err());
        assert_eq!(std::fs::read(&file).unwrap(), b"keep");
    }

    #[test]
    fn hybrid_stop_then_wake_returns_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let stop = Arc::new(AtomicBool::new(false));
        let mut l = HybridVsockListener::bind(&path, 3, Arc::clone(&stop)).unwrap();
        stop.store(true, Ordering::SeqCst);
        let _wake = UnixStream::connect(&path).unwrap();
        assert!(l.accept().unwrap().is_none());
    }

    #[test]
    fn vsock_listener_stop_seen_within_poll_interval() {
        let stop = Arc::new(AtomicBool::new(false));
        // A port well above the usual ones; the host needs AF_VSOCK (vsock module) for this.
        let mut l = match VsockListener::bind(0x4e56_0001, Arc::clone(&stop)) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("no AF_VSOCK on this host ({e}); listener stop not exercised");
                return;
            }
        };
        assert_eq!(l.local_desc(), "vsock:1314258945");
        let flag = Arc::clone(&stop);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            flag.store(true, Ordering::SeqCst);
        });
        let t0 = Instant::now();
        assert!(l.accept().unwrap().is_none());
        assert!(t0.elapsed() < ACCEPT_POLL * 10);
        t.join().unwrap();
    }
}
