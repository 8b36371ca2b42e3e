//! The control socket's listener: one accept thread, one thread per operator connection
//! (operators are few; a long request such as a snapshot deletion blocks only its own
//! connection).
//!
//! Socket set-up: an existing socket file that nobody answers on is stale and is removed;
//! one that answers belongs to a running envoyd and the start fails; any other kind of file
//! is left alone and the start fails. After `bind` the file is chmod'ed to 0600; in the
//! moment between the two, a connection could slip in, but every connection is checked with
//! `SO_PEERCRED` before anything is read from it, so the mode is a second fence, not the
//! only one.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::namespace::node::lock;
use crate::server::Shared;

use super::{execute, parse_request, ControlError, ProgressLine, Reply, MAX_REQUEST};

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ControlStartError {
    /// Another process answers on the socket.
    #[error("another envoyd is already serving the control socket {0}: stop it, or give this one its own --control PATH")]
    InUse(PathBuf),
    /// The path exists and is not a socket.
    #[error("{0} exists and is not a socket: remove it, or choose another --control PATH")]
    NotSocket(PathBuf),
    /// A system call failed.
    #[error("setting up the control socket {path}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Whether a peer with `peer_uid` may use the socket of a server running as `owner_uid`.
pub fn peer_allowed(peer_uid: u32, owner_uid: u32) -> bool {
    peer_uid == owner_uid || peer_uid == 0
}

fn peer_uid(s: &UnixStream) -> std::io::Result<u32> {
    let cred = nix::sys::socket::getsockopt(s, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(std::io::Error::from)?;
    Ok(cred.uid())
}

/// Removes a stale socket file at `path`; fails if it is live or not a socket.
fn clear_stale(path: &Path) -> Result<(), ControlStartError> {
    let io = |source| ControlStartError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(e)),
        Ok(m) if !m.file_type().is_socket() => Err(ControlStartError::NotSocket(path.into())),
        Ok(_) => {
            if UnixStream::connect(path).is_ok() {
                return Err(ControlStartError::InUse(path.into()));
            }
            tracing::info!(path = %path.display(), "replacing a stale control socket");
            std::fs::remove_file(path).map_err(io)
        }
    }
}

/// Operator connections: a handle to close each, and its thread.
type Clients = Arc<Mutex<Vec<(UnixStream, JoinHandle<()>)>>>;

/// A running control socket; dropping it stops it and removes the socket file.
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    clients: Clients,
}

impl std::fmt::Debug for ControlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlServer")
            .field("path", &self.path)
            .finish()
    }
}

impl ControlServer {
    /// Binds `path` and starts serving requests against `shared`.
    pub fn start(path: &Path, shared: Arc<Shared>) -> Result<ControlServer, ControlStartError> {
        let io = |source| ControlStartError::Io {
            path: path.to_path_buf(),
            source,
        };
        clear_stale(path)?;
        let listener = UnixListener::bind(path).map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Clients = Arc::default();
        let owner = nix::unistd::geteuid().as_raw();
        let acceptor = {
            let stop = Arc::clone(&stop);
            let clients = Arc::clone(&clients);
            std::thread::Builder::new()
                .name("envoyd-control".into())
                .spawn(move || accept_loop(&listener, &shared, &stop, &clients, owner))
                .map_err(io)?
        };
        tracing::info!(path = %path.display(), "control socket ready");
        Ok(ControlServer {
            path: path.to_path_buf(),
            stop,
            acceptor: Some(acceptor),
            clients,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, closes every operator connection and removes the socket file.
    pub fn shutdown(&mut self) {
        if self.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = UnixStream::connect(&self.path);
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
        let clients: Vec<_> = lock(&self.clients).drain(..).collect();
        for (s, h) in clients {
            let _ = s.shutdown(std::net::Shutdown::Both);
            let _ = h.join();
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::debug!(error = %e, "removing the control socket");
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(
    listener: &UnixListener,
    shared: &Arc<Shared>,
    stop: &AtomicBool,
    clients: &Mutex<Vec<(UnixStream, JoinHandle<()>)>>,
    owner: u32,
) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control accept failed");
                std::thread::sleep(std::time::Duration::from_millis(50));
                continue;
            }
        };
        let closer = match stream.try_clone() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "control connection dropped");
                continue;
            }
        };
        let shared = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("envoyd-ctlconn".into())
            .spawn(move || serve(stream, &shared, owner));
        match spawned {
            Ok(h) => {
                let mut v = lock(clients);
                v.retain(|(_, h)| !h.is_finished());
                v.push((closer, h));
            }
            Err(e) => tracing::error!(error = %e, "cannot spawn a control connection thread"),
        }
    }
}

fn write_reply(mut w: &UnixStream, r: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)
}

/// One line from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line, without its newline.
    Text(Vec<u8>),
    /// Longer than the limit; the rest of it was skipped.
    TooLong,
    /// End of stream.
    Eof,
}

/// Reads one line of at most `max` bytes; an over-long line is consumed up to its newline and
/// reported as [`Line::TooLong`] without holding more than `max` bytes.
pub fn read_line_limited(r: &mut impl BufRead, max: usize) -> std::io::Result<Line> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(if too_long {
                Line::TooLong
            } else if line.is_empty() {
                Line::Eof
            } else {
                Line::Text(line)
            });
        }
        let (chunk, found) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if !too_long {
            if line.len() + chunk.len() > max {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = found.unwrap_or(buf.len());
        r.consume(used);
        if found.is_some() {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Text(line)
            });
        }
    }
}

fn serve(stream: UnixStream, shared: &Shared, owner: u32) {
    match peer_uid(&stream) {
        Ok(uid) if peer_allowed(uid, owner) => {}
        Ok(uid) => {
            tracing::warn!(uid, "control connection refused");
            let _ = write_reply(
                &stream,
                &Reply::Error(format!(
                    "permission denied: uid {uid} may not use envoyd's control socket (only uid {owner} and root may): run envoyctl as one of them"
                )),
            );
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the control peer's credentials");
            return;
        }
    }
    let mut reader = BufReader::new(&stream);
    loop {
        let line = match read_line_limited(&mut reader, MAX_REQUEST) {
            Ok(Line::Text(l)) => l,
            Ok(Line::TooLong) => {
                if write_reply(
                    &stream,
                    &Reply::Error(ControlError::TooLong(MAX_REQUEST).to_string()),
                )
                .is_err()
                {
                    return;
                }
                continue;
            }
            Ok(Line::Eof) | Err(_) => return,
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let result = parse_request(&line).and_then(|req| {
            tracing::info!(request = ?req, "control request");
            let progress = |p: ProgressLine| {
                let _ = write_reply(&stream, &Reply::Progress(p));
            };
            execute(shared, req, &progress)
        });
        let reply = match result {
            Ok(v) => Reply::Ok(v),
            Err(e) => {
                tracing::info!(error = %e, "control request failed");
                Reply::Error(e.to_string())
            }
        };
        if write_reply(&stream, &reply).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_allowed_owner_and_root_only() {
        assert!(peer_allowed(1000, 1000));
        assert!(peer_allowed(0, 1000));
        assert!(!peer_allowed(1001, 1000));
        assert!(peer_allowed(0, 0));
        assert!(!peer_allowed(65534, 0));
    }

    #[test]
    fn read_line_limited_splits_and_skips_long_lines() {
        let data = b"short\nthis line is far too long\nok\npartial";
        let mut r = std::io::BufReader::with_capacity(4, &data[..]);
        assert_eq!(
            read_line_limited(&mut r, 10).unwrap(),
            Line::Text(b"short".to_vec())
        );
        assert_eq!(read_line_limited(&mut r, 10).unwrap(), Line::TooLong);
        assert_eq!(
            read_line_limited(&mut r, 10).unwrap(),
            Line::Text(b"ok".to_vec())
        );
        assert_eq!(
            read_line_limited(&mut r, 10).unwrap(),
            Line::Text(b"partial".to_vec())
        );
        assert_eq!(read_line_limited(&mut r, 10).unwrap(), Line::Eof);
    }

    #[test]
    fn clear_stale_regular_file_refused_dead_socket_removed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("file");
        std::fs::write(&f, b"x").unwrap();
        assert!(matches!(
            clear_stale(&f),
            Err(ControlStartError::NotSocket(_))
        ));
        let s = dir.path().join("sock");
        drop(UnixListener::bind(&s).unwrap());
        assert!(s.exists());
        clear_stale(&s).unwrap();
        assert!(!s.exists());
        let live = UnixListener::bind(&s).unwrap();
        assert!(matches!(clear_stale(&s), Err(ControlStartError::InUse(_))));
        drop(live);
    }
}
