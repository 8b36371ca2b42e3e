//! Unix-socket listener (`unix:PATH`); the peer is described by `SO_PEERCRED`.

use std::io;
use std::net::Shutdown;
use std::os::unix::net::{UnixListener as StdListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use super::{Connection, Listener, Peer};

/// A Unix-socket listener. A stale socket file at the path is replaced.
#[derive(Debug)]
pub struct UnixListener {
    inner: StdListener,
    path: PathBuf,
    stop: Arc<AtomicBool>,
}

impl UnixListener {
    /// Binds `path`, removing a stale socket first.
    pub fn bind(path: &Path, stop: Arc<AtomicBool>) -> io::Result<UnixListener> {
        if let Ok(md) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            if md.file_type().is_socket() {
                std::fs::remove_file(path)?;
            }
        }
        Ok(UnixListener {
            inner: StdListener::bind(path)?,
            path: path.to_path_buf(),
            stop,
        })
    }
}

impl Drop for UnixListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn wrap(s: UnixStream) -> io::Result<Connection> {
    let peer = match getsockopt(&s, PeerCredentials) {
        Ok(c) => Peer::Unix {
            pid: Some(c.pid()),
            uid: Some(c.uid()),
            gid: Some(c.gid()),
        },
        Err(_) => Peer::Unix {
            pid: None,
            uid: None,
            gid: None,
        },
    };
    let w = s.try_clone()?;
    let sd = s.try_clone()?;
    Ok(Connection {
        reader: Box::new(s),
        frames: None,
        writer: super::ReplyWriter::socket(w)?,
        shutdown: Box::new(move || {
            let _ = sd.shutdown(Shutdown::Both);
        }),
        peer,
    })
}

impl Listener for UnixListener {
    fn accept(&mut self) -> io::Result<Option<Connection>> {
        loop {
            let r = self.inner.accept();
            if self.stop.load(Ordering::SeqCst) {
                return Ok(None);
            }
            match r {
                Ok((s, _)) => return wrap(s).map(Some),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn local_desc(&self) -> String {
        format!("unix:{}", self.path.display())
    }
}
