//! A simulated Xen for tests without a hypervisor, shareable between processes.
//!
//! # What is simulated, and how
//!
//! | Xen | simulator |
//! |---|---|
//! | xenstored | [`store::Store`] in this process, spoken to with the **real wire protocol**: dom0 connects to `<dir>/xenstored.sock` (what `XENSTORED_PATH` points at); other domains get a socket from the control socket (below), and relative paths resolve against their `/local/domain/<domid>` |
//! | a domain's memory | one memfd per domain (`pages` × 4 KiB) |
//! | its grant table (v1) | the first [`GNTTAB_PAGES`] pages of that memfd: entry `r` at byte `8r` = `{u16 flags, u16 domid, u32 frame}` little-endian; `flags & GTF_PERMIT_ACCESS` grants `frame` (a page number in the same memfd) to `domid` |
//! | gntdev map | [`client::SimGrants`] reads the entries from the granting domain's memfd, checks them, and maps the frames `MAP_SHARED|MAP_FIXED` into one reserved range (so the data pages are contiguous, as with gntdev) |
//! | an interdomain event channel | two eventfds, one per direction; `alloc_unbound` creates them, `bind_interdomain` hands the other ends to the binding domain |
//! | domain death | the process that claimed the domain closes its control connection (exit, crash, kill -9): the toolstack part removes `/local/domain/<domid>` and the backend directories for it |
//!
//! # The control socket (`<dir>/simctl.sock`)
//!
//! `SOCK_SEQPACKET`; one request per packet as a text line, one reply per packet (`OK ...`
//! or `ERR reason`) with file descriptors attached by `SCM_RIGHTS`:
//!
//! ```text
//! CLAIM <domid>                     -> OK <pages>            [memfd]   this connection is the domain
//! MEMORY <domid>                    -> OK <pages>            [memfd]   a (foreign) domain's memory
//! XENSTORE <domid>                  -> OK                    [socket]  a xenstore connection as <domid>
//! ALLOC_UNBOUND <domid> <remote>    -> OK <port>             [notify-eventfd, wait-eventfd]
//! BIND <domid> <remote> <port>      -> OK <local-port>       [notify-eventfd, wait-eventfd]
//! ```
//!
//! Not simulated: xenstore permissions and quotas, grant "in use" tracking, suspend/resume.

pub mod client;
pub mod store;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    self as sock, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr,
};

use crate::hv::{eventfd, HvError, XEN_PAGE_SIZE};
use crate::ids::{DomId, XenbusState};
use crate::xenstore::wire::Packet;
use store::{ConnId, Store};

/// Pages at the start of a domain's memory holding its grant table (512 entries each).
pub const GNTTAB_PAGES: usize = 4;
/// Grant-table entries available.
pub const GNTTAB_ENTRIES: usize = GNTTAB_PAGES * XEN_PAGE_SIZE / 8;
/// `GTF_permit_access`.
pub const GTF_PERMIT_ACCESS: u16 = 1;
/// `GTF_readonly`.
pub const GTF_READONLY: u16 = 4;
/// Largest control packet.
const CTL_MAX: usize = 512;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Port {
    remote: DomId,
    /// The allocating domain waits on this one.
    owner_wait: OwnedFd,
    /// The binding domain waits on this one.
    remote_wait: OwnedFd,
    bound: bool,
}

struct Domain {
    memfd: OwnedFd,
    pages: usize,
    claimed: bool,
    ports: HashMap<u32, Port>,
    next_port: u32,
}

struct State {
    store: Store,
    conns: HashMap<ConnId, Sender<Packet>>,
    domains: HashMap<DomId, Domain>,
    /// Ports bound by each domain (local port numbers only).
    bound_ports: HashMap<DomId, u32>,
}

struct Inner {
    state: Mutex<State>,
    next_conn: AtomicU64,
    stop: AtomicBool,
    streams: Mutex<Vec<UnixStream>>,
}

/// A running simulated Xen. Dropping it stops the listeners and closes every connection.
pub struct SimXen {
    inner: Arc<Inner>,
    dir: PathBuf,
    ctl_fd: Arc<OwnedFd>,
    xs_listener: UnixListener,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for SimXen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimXen").field("dir", &self.dir).finish()
    }
}

fn sim_err(e: impl std::fmt::Display) -> HvError {
    HvError::Sim(e.to_string())
}

impl SimXen {
    /// Starts a simulator with its sockets in `dir`. Dom0 exists from the start (memory-less).
    pub fn start(dir: &Path) -> Result<SimXen, HvError> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                store: Store::default(),
                conns: HashMap::new(),
                domains: HashMap::new(),
                bound_ports: HashMap::new(),
            }),
            next_conn: AtomicU64::new(1),
            stop: AtomicBool::new(false),
            streams: Mutex::new(Vec::new()),
        });
        {
            let mut out = Vec::new();
            let mut st = lock(&inner.state);
            st.store
                .admin_write("/local/domain/0/name", b"Domain-0", &mut out);
            st.store
                .admin_write("/local/domain/0/domid", b"0", &mut out);
        }
        let xs_path = dir.join("xenstored.sock");
        let ctl_path = dir.join("simctl.sock");
        let _ = std::fs::remove_file(&xs_path);
        let _ = std::fs::remove_file(&ctl_path);
        let xs_listener = UnixListener::bind(&xs_path).map_err(sim_err)?;
        let ctl = sock::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(sim_err)?;
        sock::bind(ctl.as_raw_fd(), &UnixAddr::new(&ctl_path).map_err(sim_err)?)
            .map_err(sim_err)?;
        sock::listen(&ctl, sock::Backlog::new(64).map_err(sim_err)?).map_err(sim_err)?;
        let ctl_fd = Arc::new(ctl);
        let mut threads = Vec::new();
        let l = xs_listener.try_clone().map_err(sim_err)?;
        let i = Arc::clone(&inner);
        threads.push(
            std::thread::Builder::new()
                .name("sim-xenstored".into())
                .spawn(move || {
                    for s in l.incoming() {
                        if i.stop.load(Ordering::SeqCst) {
                            break;
                        }
                        match s {
                            Ok(s) => serve_xenstore(&i, s, DomId(0)),
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(_) => break,
                        }
                    }
                })
                .map_err(sim_err)?,
        );
        let i = Arc::clone(&inner);
        let c = Arc::clone(&ctl_fd);
        threads.push(
            std::thread::Builder::new()
                .name("sim-ctl".into())
                .spawn(move || loop {
                    let r = sock::accept(c.as_raw_fd());
                    if i.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    match r {
                        Ok(fd) => {
                            // SAFETY: accept returned a fresh descriptor that nothing else owns.
                            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                            let i2 = Arc::clone(&i);
                            let _ = std::thread::Builder::new()
                                .name("sim-ctl-conn".into())
                                .spawn(move || serve_ctl(&i2, fd));
                        }
                        Err(nix::errno::Errno::EINTR) => {}
                        Err(_) => break,
                    }
                })
                .map_err(sim_err)?,
        );
        Ok(SimXen {
            inner,
            dir: dir.to_path_buf(),
            ctl_fd,
            xs_listener,
            threads,
        })
    }

    /// The control socket (pass it to the frontend emulator).
    pub fn ctl_path(&self) -> PathBuf {
        self.dir.join("simctl.sock")
    }

    /// The dom0 xenstored socket (`XENSTORED_PATH`).
    pub fn xenstored_path(&self) -> PathBuf {
        self.dir.join("xenstored.sock")
    }

    /// Toolstack: creates a domain with `pages` of memory (grant table included).
    pub fn create_domain(&self, domid: DomId, pages: usize) -> Result<(), HvError> {
        if pages <= GNTTAB_PAGES {
            return Err(HvError::Sim(format!(
                "{pages} pages leave no room for data"
            )));
        }
        let fd = nix::sys::memfd::memfd_create(
            c"envoy-sim-domain",
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
        )
        .map_err(sim_err)?;
        nix::unistd::ftruncate(&fd, (pages * XEN_PAGE_SIZE) as i64).map_err(sim_err)?;
        let mut st = lock(&self.inner.state);
        st.domains.insert(
            domid,
            Domain {
                memfd: fd,
                pages,
                claimed: false,
                ports: HashMap::new(),
                next_port: 1,
            },
        );
        let mut out = Vec::new();
        let home = store::domain_path(domid);
        st.store.admin_write(
            &format!("{home}/name"),
            format!("guest{domid}").as_bytes(),
            &mut out,
        );
        st.store.admin_write(
            &format!("{home}/domid"),
            domid.to_string().as_bytes(),
            &mut out,
        );
        send_all(&st, out);
        Ok(())
    }

    /// Toolstack: adds a 9pfs device as libxl does (frontend and backend directories, both
    /// in state Initialising; backend in dom0).
    pub fn add_9pfs_device(&self, front: DomId, devid: u32, tag: &str) {
        let fe = format!("/local/domain/{front}/device/9pfs/{devid}");
        let be = format!("/local/domain/0/backend/9pfs/{front}/{devid}");
        let init = XenbusState::Initialising.to_string();
        let mut out = Vec::new();
        let mut st = lock(&self.inner.state);
        for (k, v) in [
            (format!("{be}/frontend"), fe.clone()),
            (format!("{be}/frontend-id"), front.to_string()),
            (format!("{be}/online"), "1".into()),
            (format!("{be}/path"), format!("/srv/{tag}")),
            (format!("{be}/security_model"), "none".into()),
            (format!("{fe}/backend"), be.clone()),
            (format!("{fe}/backend-id"), "0".into()),
            (format!("{fe}/tag"), tag.into()),
            (format!("{fe}/state"), init.clone()),
            (format!("{be}/state"), init.clone()),
        ] {
            st.store.admin_write(&k, v.as_bytes(), &mut out);
        }
        send_all(&st, out);
    }

    /// Toolstack: destroys a domain (what happens when its claiming process goes away).
    pub fn destroy_domain(&self, domid: DomId) {
        destroy_domain(&self.inner, domid);
    }

    /// Reads a node (toolstack view).
    pub fn read(&self, path: &str) -> Option<Vec<u8>> {
        lock(&self.inner.state).store.admin_read(path)
    }

    /// Writes a node (toolstack), firing watches.
    pub fn write(&self, path: &str, value: &[u8]) {
        let mut out = Vec::new();
        let mut st = lock(&self.inner.state);
        st.store.admin_write(path, value, &mut out);
        send_all(&st, out);
    }

    /// Polls `path` until `pred` holds for its value (`None` = missing) or `timeout` passes.
    pub fn wait_for(
        &self,
        path: &str,
        timeout: Duration,
        mut pred: impl FnMut(Option<&[u8]>) -> bool,
    ) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if pred(self.read(path).as_deref()) {
                return true;
            }
            if Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for a xenbus state node to reach `want`.
    pub fn wait_state(&self, path: &str, want: XenbusState, timeout: Duration) -> bool {
        self.wait_for(path, timeout, |v| {
            v.and_then(XenbusState::parse) == Some(want)
        })
    }

    /// Whether the domain still exists.
    pub fn domain_alive(&self, domid: DomId) -> bool {
        lock(&self.inner.state).domains.contains_key(&domid)
    }
}

impl Drop for SimXen {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        // shutdown() on a listening socket wakes a blocked accept() (EINVAL), even when the
        // socket file is already gone.
        let _ = sock::shutdown(self.xs_listener.as_raw_fd(), sock::Shutdown::Both);
        let _ = sock::shutdown(self.ctl_fd.as_raw_fd(), sock::Shutdown::Both);
        for s in lock(&self.inner.streams).drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(self.xenstored_path());
        let _ = std::fs::remove_file(self.ctl_path());
    }
}

fn send_all(st: &State, out: Vec<(ConnId, Packet)>) {
    for (c, p) in out {
        if let Some(tx) = st.conns.get(&c) {
            let _ = tx.send(p);
        }
    }
}

fn destroy_domain(inner: &Inner, domid: DomId) {
    let mut st = lock(&inner.state);
    st.domains.remove(&domid);
    let mut out = Vec::new();
    st.store.admin_rm(&store::domain_path(domid), &mut out);
    for kind in st.store.admin_children("/local/domain/0/backend") {
        st.store
            .admin_rm(&format!("/local/domain/0/backend/{kind}/{domid}"), &mut out);
    }
    send_all(&st, out);
}

/// Serves one xenstore connection acting as `domid` (reader here, writer on its own thread).
fn serve_xenstore(inner: &Arc<Inner>, s: UnixStream, domid: DomId) {
    let conn = inner.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel::<Packet>();
    let (Ok(mut w), Ok(keep)) = (s.try_clone(), s.try_clone()) else {
        return;
    };
    lock(&inner.streams).push(keep);
    lock(&inner.state).conns.insert(conn, tx);
    let _ = std::thread::Builder::new()
        .name("sim-xs-tx".into())
        .spawn(move || {
            while let Ok(p) = rx.recv() {
                if w.write_all(&p.to_bytes()).is_err() {
                    break;
                }
            }
        });
    let i = Arc::clone(inner);
    let _ = std::thread::Builder::new()
        .name("sim-xs-rx".into())
        .spawn(move || {
            let mut r: &UnixStream = &s;
            while let Ok(Some(p)) = Packet::read_from(&mut r as &mut dyn Read) {
                let mut out = Vec::new();
                let mut st = lock(&i.state);
                st.store.handle(conn, domid, &p, &mut out);
                send_all(&st, out);
            }
            let mut st = lock(&i.state);
            st.store.drop_conn(conn);
            st.conns.remove(&conn);
            let _ = s.shutdown(std::net::Shutdown::Both);
        });
}

fn reply(fd: &OwnedFd, line: &str, fds: &[RawFd]) {
    let iov = [std::io::IoSlice::new(line.as_bytes())];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cm: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
    let _ = sock::sendmsg::<()>(fd.as_raw_fd(), &iov, cm, MsgFlags::MSG_NOSIGNAL, None);
}

fn parse_args(words: &[&str]) -> Option<Vec<u32>> {
    words.iter().map(|w| w.parse().ok()).collect()
}

/// Serves one control connection.
fn serve_ctl(inner: &Arc<Inner>, fd: OwnedFd) {
    let mut claimed: Option<DomId> = None;
    let mut buf = [0u8; CTL_MAX];
    loop {
        let n = match sock::recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((&cmd, rest)) = words.split_first() else {
            reply(&fd, "ERR empty request", &[]);
            continue;
        };
        let Some(args) = parse_args(rest) else {
            reply(&fd, "ERR arguments must be numbers", &[]);
            continue;
        };
        let dom = |i: usize| args.get(i).and_then(|&v| u16::try_from(v).ok()).map(DomId);
        match (cmd, dom(0)) {
            ("CLAIM", Some(d)) | ("MEMORY", Some(d)) => {
                let st = lock(&inner.state);
                let Some(dm) = st.domains.get(&d) else {
                    reply(&fd, "ERR no such domain", &[]);
                    continue;
                };
                reply(&fd, &format!("OK {}", dm.pages), &[dm.memfd.as_raw_fd()]);
                drop(st);
                if cmd == "CLAIM" {
                    if let Some(dm) = lock(&inner.state).domains.get_mut(&d) {
                        dm.claimed = true;
                    }
                    claimed = Some(d);
                }
            }
            ("XENSTORE", Some(d)) => match UnixStream::pair() {
                Ok((a, b)) => {
                    serve_xenstore(inner, a, d);
                    reply(&fd, "OK", &[b.as_raw_fd()]);
                }
                Err(e) => reply(&fd, &format!("ERR {e}"), &[]),
            },
            ("ALLOC_UNBOUND", Some(d)) => {
                let Some(remote) = dom(1) else {
                    reply(&fd, "ERR usage: ALLOC_UNBOUND domid remote", &[]);
                    continue;
                };
                let (Ok(a), Ok(b)) = (eventfd(), eventfd()) else {
                    reply(&fd, "ERR eventfd", &[]);
                    continue;
                };
                let mut st = lock(&inner.state);
                let Some(dm) = st.domains.get_mut(&d) else {
                    reply(&fd, "ERR no such domain", &[]);
                    continue;
                };
                let port = dm.next_port;
                dm.next_port += 1;
                // The owner notifies through the remote's wait fd and waits on its own.
                reply(&fd, &format!("OK {port}"), &[b.as_raw_fd(), a.as_raw_fd()]);
                dm.ports.insert(
                    port,
                    Port {
                        remote,
                        owner_wait: a,
                        remote_wait: b,
                        bound: false,
                    },
                );
            }
            ("BIND", Some(d)) => {
                let (Some(remote), Some(&port)) = (dom(1), args.get(2)) else {
                    reply(&fd, "ERR usage: BIND domid remote port", &[]);
                    continue;
                };
                let mut st = lock(&inner.state);
                let res = match st
                    .domains
                    .get_mut(&remote)
                    .and_then(|dm| dm.ports.get_mut(&port))
                {
                    None => Err("no such port"),
                    Some(p) if p.remote != d => Err("port not allocated for this domain"),
                    Some(p) if p.bound => Err("port already bound"),
                    Some(p) => {
                        p.bound = true;
                        Ok((p.owner_wait.as_raw_fd(), p.remote_wait.as_raw_fd()))
                    }
                };
                match res {
                    Ok((notify, wait)) => {
                        let n = st.bound_ports.entry(d).or_insert(0);
                        *n += 1;
                        let local = *n;
                        reply(&fd, &format!("OK {local}"), &[notify, wait]);
                    }
                    Err(why) => reply(&fd, &format!("ERR {why}"), &[]),
                }
            }
            _ => reply(&fd, "ERR unknown request", &[]),
        }
    }
    if let Some(d) = claimed {
        destroy_domain(inner, d);
    }
}

/// Receives one control reply: the line and any descriptors.
pub(crate) fn recv_reply(fd: &OwnedFd) -> Result<(String, Vec<OwnedFd>), HvError> {
    let mut buf = [0u8; CTL_MAX];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let msg = sock::recvmsg::<()>(
        fd.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(sim_err)?;
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(sim_err)? {
        if let sock::ControlMessageOwned::ScmRights(raw) = c {
            for r in raw {
                // SAFETY: SCM_RIGHTS just installed `r` in our table; nothing else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(r) });
            }
        }
    }
    let n = msg.bytes;
    if n == 0 {
        return Err(HvError::Sim("simulator closed the control socket".into()));
    }
    let line = String::from_utf8_lossy(&buf[..n]).into_owned();
    Ok((line, fds))
}

/// Sends one control request.
pub(crate) fn send_request(fd: &OwnedFd, line: &str) -> Result<(), HvError> {
    sock::send(fd.as_raw_fd(), line.as_bytes(), MsgFlags::MSG_NOSIGNAL)
        .map(|_| ())
        .map_err(sim_err)
}

/// Connects to a simulator's control socket.
pub(crate) fn connect_ctl(path: &Path) -> Result<OwnedFd, HvError> {
    let fd = sock::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(sim_err)?;
    sock::connect(fd.as_raw_fd(), &UnixAddr::new(path).map_err(sim_err)?).map_err(sim_err)?;
    let _ = fd.as_fd();
    Ok(fd)
}
