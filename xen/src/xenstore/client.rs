//! A blocking, thread-safe xenstore client.
//!
//! One reader thread per connection reads whole messages, hands each reply to the caller
//! waiting for its `req_id` and queues WATCH_EVENTs (recognised by type only: the xenbus
//! device does not fill in `req_id` for them). Callers write one complete message per
//! `write` under a lock, as `/dev/xen/xenbus` requires.
//!
//! [`XsClient::open_default`] follows libxenstore's order: `$XENSTORED_PATH`, then
//! `/var/run/xenstored/socket`, then `/dev/xen/xenbus`. Paths should be absolute: relative
//! ones are resolved by the daemon against the connection's domain path.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::wire::{self, MsgType, Packet, XsErrno};
use super::{TxId, WatchEvent, Xenstore, XsError};

/// The daemon socket libxenstore tries first.
pub const DEFAULT_SOCKET: &str = "/var/run/xenstored/socket";
/// The kernel device used when there is no socket (xenstore in a stub domain).
pub const XENBUS_DEVICE: &str = "/dev/xen/xenbus";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

type Pending = Arc<Mutex<Option<HashMap<u32, Sender<Packet>>>>>;

/// A connection to xenstored.
pub struct XsClient {
    writer: Mutex<Box<dyn Write + Send>>,
    pending: Pending,
    next_id: AtomicU32,
    events: Mutex<Receiver<WatchEvent>>,
    closer: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for XsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XsClient").finish_non_exhaustive()
    }
}

impl XsClient {
    /// Connects like libxenstore: `$XENSTORED_PATH`, the daemon socket, the xenbus device.
    pub fn open_default() -> Result<XsClient, XsError> {
        let io = |source| XsError::Io { op: "open", source };
        if let Some(p) = std::env::var_os("XENSTORED_PATH") {
            return XsClient::connect_socket(Path::new(&p));
        }
        match XsClient::connect_socket(Path::new(DEFAULT_SOCKET)) {
            Ok(c) => Ok(c),
            Err(_) => XsClient::open_device(Path::new(XENBUS_DEVICE)).map_err(|e| match e {
                XsError::Io { source, .. } => io(source),
                other => other,
            }),
        }
    }

    /// Connects to a xenstored Unix socket.
    pub fn connect_socket(path: &Path) -> Result<XsClient, XsError> {
        let s = UnixStream::connect(path).map_err(|source| XsError::Io {
            op: "connect",
            source,
        })?;
        XsClient::from_unix_stream(s)
    }

    /// Runs over an already connected stream (the simulator hands these out).
    pub fn from_unix_stream(s: UnixStream) -> Result<XsClient, XsError> {
        let io = |source| XsError::Io {
            op: "connect",
            source,
        };
        let r = s.try_clone().map_err(io)?;
        let sd = s.try_clone().map_err(io)?;
        XsClient::start(
            Box::new(r),
            Box::new(s),
            Box::new(move || {
                let _ = sd.shutdown(std::net::Shutdown::Both);
            }),
        )
    }

    /// Opens the kernel's xenbus device. Dropping the client cannot interrupt a read on the
    /// device, so the reader thread lingers until the next message or process exit.
    pub fn open_device(path: &Path) -> Result<XsClient, XsError> {
        let io = |source| XsError::Io { op: "open", source };
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io)?;
        let r = f.try_clone().map_err(io)?;
        XsClient::start(Box::new(r), Box::new(f), Box::new(|| {}))
    }

    fn start(
        mut reader: Box<dyn Read + Send>,
        writer: Box<dyn Write + Send>,
        closer: Box<dyn Fn() + Send + Sync>,
    ) -> Result<XsClient, XsError> {
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let (etx, erx) = mpsc::channel();
        let p = Arc::clone(&pending);
        std::thread::Builder::new()
            .name("xenstore-rx".into())
            .spawn(move || {
                loop {
                    match Packet::read_from(&mut *reader) {
                        Ok(Some(pkt)) => {
                            if pkt.header.msg_type == MsgType::WatchEvent as u32 {
                                let parts = wire::split_nul(&pkt.payload);
                                if let [path, token, ..] = parts[..] {
                                    let ev = WatchEvent {
                                        path: String::from_utf8_lossy(path).into_owned(),
                                        token: String::from_utf8_lossy(token).into_owned(),
                                    };
                                    if etx.send(ev).is_err() {
                                        break;
                                    }
                                }
                                continue;
                            }
                            let waiter =
                                lock(&p).as_mut().and_then(|m| m.remove(&pkt.header.req_id));
                            if let Some(w) = waiter {
                                let _ = w.send(pkt);
                            } else {
                                tracing::debug!(req_id = pkt.header.req_id, "stray xenstore reply");
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!(error = %e, "xenstore connection failed");
                            break;
                        }
                    }
                }
                // Waiters see their sender dropped: Closed.
                lock(&p).take();
            })
            .map_err(|source| XsError::Io {
                op: "spawn",
                source,
            })?;
        Ok(XsClient {
            writer: Mutex::new(writer),
            pending,
            next_id: AtomicU32::new(1),
            events: Mutex::new(erx),
            closer,
        })
    }

    /// Sends a request and waits for its reply; ERROR replies become [`XsError::Remote`].
    fn request(
        &self,
        ty: MsgType,
        tx: TxId,
        payload: Vec<u8>,
        path: &str,
    ) -> Result<Vec<u8>, XsError> {
        let op = ty.name();
        let len = payload.len();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let pkt = Packet::new(ty as u32, id, tx.0, payload).ok_or(XsError::TooLong { op, len })?;
        let (stx, srx) = mpsc::channel();
        match lock(&self.pending).as_mut() {
            Some(m) => m.insert(id, stx),
            None => return Err(XsError::Closed),
        };
        let sent = lock(&self.writer).write_all(&pkt.to_bytes());
        if let Err(source) = sent {
            if let Some(m) = lock(&self.pending).as_mut() {
                m.remove(&id);
            }
            return Err(XsError::Io { op, source });
        }
        let reply = srx.recv().map_err(|_| XsError::Closed)?;
        if reply.header.msg_type == MsgType::Error as u32 {
            return Err(XsError::Remote {
                op,
                path: path.to_string(),
                errno: XsErrno::parse(&reply.payload),
            });
        }
        if reply.header.msg_type != ty as u32 {
            return Err(XsError::Protocol {
                op,
                detail: format!("reply of type {}", reply.header.msg_type),
            });
        }
        Ok(reply.payload)
    }

    fn check_path(op: &'static str, path: &str) -> Result<(), XsError> {
        if path.len() > wire::ABS_PATH_MAX || path.as_bytes().contains(&0) {
            return Err(XsError::TooLong {
                op,
                len: path.len(),
            });
        }
        Ok(())
    }

    fn expect_ok(op: &'static str, reply: &[u8]) -> Result<(), XsError> {
        if wire::split_nul(reply).first().copied() == Some(b"OK") {
            Ok(())
        } else {
            Err(XsError::Protocol {
                op,
                detail: format!("expected OK, got {:?}", String::from_utf8_lossy(reply)),
            })
        }
    }

    /// Asks the daemon for a domain's home path (`/local/domain/<domid>`).
    pub fn domain_path(&self, domid: crate::DomId) -> Result<String, XsError> {
        let r = self.request(
            MsgType::GetDomainPath,
            TxId::NONE,
            wire::nul_terminated(&[domid.0.to_string().as_bytes()]),
            "",
        )?;
        let first = wire::split_nul(&r).first().copied().unwrap_or(b"");
        Ok(String::from_utf8_lossy(first).into_owned())
    }
}

impl Drop for XsClient {
    fn drop(&mut self) {
        (self.closer)();
    }
}

impl Xenstore for XsClient {
    fn read(&self, tx: TxId, path: &str) -> Result<Vec<u8>, XsError> {
        XsClient::check_path("READ", path)?;
        self.request(
            MsgType::Read,
            tx,
            wire::nul_terminated(&[path.as_bytes()]),
            path,
        )
    }

    fn write(&self, tx: TxId, path: &str, value: &[u8]) -> Result<(), XsError> {
        XsClient::check_path("WRITE", path)?;
        let mut p = wire::nul_terminated(&[path.as_bytes()]);
        p.extend_from_slice(value);
        let r = self.request(MsgType::Write, tx, p, path)?;
        XsClient::expect_ok("WRITE", &r)
    }

    fn directory(&self, tx: TxId, path: &str) -> Result<Vec<String>, XsError> {
        XsClient::check_path("DIRECTORY", path)?;
        let r = self.request(
            MsgType::Directory,
            tx,
            wire::nul_terminated(&[path.as_bytes()]),
            path,
        )?;
        Ok(wire::split_nul(&r)
            .into_iter()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect())
    }

    fn rm(&self, tx: TxId, path: &str) -> Result<(), XsError> {
        XsClient::check_path("RM", path)?;
        let r = self.request(
            MsgType::Rm,
            tx,
            wire::nul_terminated(&[path.as_bytes()]),
            path,
        )?;
        XsClient::expect_ok("RM", &r)
    }

    fn watch(&self, path: &str, token: &str) -> Result<(), XsError> {
        XsClient::check_path("WATCH", path)?;
        let r = self.request(
            MsgType::Watch,
            TxId::NONE,
            wire::nul_terminated(&[path.as_bytes(), token.as_bytes()]),
            path,
        )?;
        XsClient::expect_ok("WATCH", &r)
    }

    fn unwatch(&self, path: &str, token: &str) -> Result<(), XsError> {
        XsClient::check_path("UNWATCH", path)?;
        let r = self.request(
            MsgType::Unwatch,
            TxId::NONE,
            wire::nul_terminated(&[path.as_bytes(), token.as_bytes()]),
            path,
        )?;
        XsClient::expect_ok("UNWATCH", &r)
    }

    fn transaction_start(&self) -> Result<TxId, XsError> {
        let r = self.request(MsgType::TransactionStart, TxId::NONE, vec![0], "")?;
        wire::split_nul(&r)
            .first()
            .and_then(|v| super::parse_u32(v))
            .filter(|&id| id != 0)
            .map(TxId)
            .ok_or_else(|| XsError::Protocol {
                op: "TRANSACTION_START",
                detail: format!("bad transaction id {:?}", String::from_utf8_lossy(&r)),
            })
    }

    fn transaction_end(&self, tx: TxId, commit: bool) -> Result<(), XsError> {
        let body: &[u8] = if commit { b"T" } else { b"F" };
        let r = self.request(
            MsgType::TransactionEnd,
            tx,
            wire::nul_terminated(&[body]),
            &format!("transaction {tx}"),
        )?;
        XsClient::expect_ok("TRANSACTION_END", &r)
    }

    fn next_event(&self, timeout: Duration) -> Result<Option<WatchEvent>, XsError> {
        match lock(&self.events).recv_timeout(timeout) {
            Ok(e) => Ok(Some(e)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(XsError::Closed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake daemon on the other end of a socketpair: answers READ with ENOENT, WRITE with
    /// OK, and sends a watch event before the WATCH reply.
    #[test]
    fn client_replies_matched_errors_typed_events_queued() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let srv = std::thread::spawn(move || {
            while let Some(p) = Packet::read_from(&mut b).unwrap() {
                let ty = MsgType::from_u32(p.header.msg_type).unwrap();
                let reply = match ty {
                    MsgType::Read => Packet::new(16, p.header.req_id, 0, b"ENOENT\0".to_vec()),
                    MsgType::Watch => {
                        let ev = Packet::new(15, 0, 0, b"/a\0tok\0".to_vec()).unwrap();
                        b.write_all(&ev.to_bytes()).unwrap();
                        Packet::new(4, p.header.req_id, 0, b"OK\0".to_vec())
                    }
                    _ => Packet::new(p.header.msg_type, p.header.req_id, 0, b"OK\0".to_vec()),
                };
                b.write_all(&reply.unwrap().to_bytes()).unwrap();
            }
        });
        let c = XsClient::from_unix_stream(a).unwrap();
        let e = c.read(TxId::NONE, "/nope").unwrap_err();
        assert!(e.is_not_found(), "{e}");
        c.write(TxId::NONE, "/a", b"1").unwrap();
        c.watch("/a", "tok").unwrap();
        let ev = c.next_event(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(
            ev,
            WatchEvent {
                path: "/a".into(),
                token: "tok".into()
            }
        );
        let long = "x".repeat(5000);
        assert!(matches!(
            c.write(TxId::NONE, &long, b""),
            Err(XsError::TooLong { .. })
        ));
        drop(c);
        srv.join().unwrap();
    }
}
