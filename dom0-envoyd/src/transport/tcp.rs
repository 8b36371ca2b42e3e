//! TCP listener (`tcp:HOST:PORT`). `TCP_NODELAY` is set: 9P is request/response.

use std::io;
use std::net::{Shutdown, TcpListener as StdListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{Connection, Listener, Peer};

/// A TCP listener.
#[derive(Debug)]
pub struct TcpListener {
    inner: StdListener,
    stop: Arc<AtomicBool>,
}

impl TcpListener {
    /// Binds `addr` (`HOST:PORT`; port 0 picks one).
    pub fn bind(addr: &str, stop: Arc<AtomicBool>) -> io::Result<TcpListener> {
        Ok(TcpListener {
            inner: StdListener::bind(addr)?,
            stop,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }
}

fn wrap(s: TcpStream, peer: std::net::SocketAddr) -> io::Result<Connection> {
    s.set_nodelay(true)?;
    let w = s.try_clone()?;
    let sd = s.try_clone()?;
    Ok(Connection {
        reader: Box::new(s),
        frames: None,
        writer: super::ReplyWriter::socket(w)?,
        shutdown: Box::new(move || {
            let _ = sd.shutdown(Shutdown::Both);
        }),
        peer: Peer::Tcp(peer),
    })
}

impl Listener for TcpListener {
    fn accept(&mut self) -> io::Result<Option<Connection>> {
        loop {
            let r = self.inner.accept();
            if self.stop.load(Ordering::SeqCst) {
                return Ok(None);
            }
            match r {
                Ok((s, peer)) => return wrap(s, peer).map(Some),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn local_desc(&self) -> String {
        match self.inner.local_addr() {
            Ok(a) => format!("tcp:{a}"),
            Err(_) => "tcp:?".into(),
        }
    }
}
