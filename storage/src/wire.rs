//! Conversions between the store's types and the storage protocol's wire types
//! (`envoy_proto::ObjAttr`, `ObjStat`, Tswstat `valid` bits), and the transport addresses and
//! byte streams shared by the server and the client.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use envoy_proto::{swstat_valid, ObjAttr, ObjStat};

use crate::error::StoreError;
use crate::object::{AttrChange, Attributes, ObjectKind, ObjectStat, Timestamp};

/// Wire attributes from store attributes.
pub fn attr_to_wire(a: &Attributes) -> ObjAttr {
    ObjAttr {
        kind: a.kind.wire(),
        mode: a.mode,
        uid: a.uid,
        gid: a.gid,
        atime_sec: a.atime.secs,
        atime_nsec: a.atime.nanos,
        mtime_sec: a.mtime.secs,
        mtime_nsec: a.mtime.nanos,
    }
}

/// Store attributes from wire attributes (the codec already checked kind and mode).
pub fn attr_from_wire(a: &ObjAttr) -> Result<Attributes, StoreError> {
    Ok(Attributes {
        kind: ObjectKind::from_wire(a.kind)
            .ok_or_else(|| StoreError::InvalidArgument(format!("object kind {}", a.kind)))?,
        mode: a.mode,
        uid: a.uid,
        gid: a.gid,
        atime: Timestamp {
            secs: a.atime_sec,
            nanos: a.atime_nsec,
        },
        mtime: Timestamp {
            secs: a.mtime_sec,
            nanos: a.mtime_nsec,
        },
    })
}

/// Wire stat from a store stat.
pub fn stat_to_wire(s: &ObjectStat) -> ObjStat {
    ObjStat {
        id: s.id.0,
        attr: attr_to_wire(&s.attr),
        size: s.size,
        ctime_sec: s.ctime.secs,
        ctime_nsec: s.ctime.nanos,
        blocks: s.blocks,
    }
}

/// Store stat from a wire stat.
pub fn stat_from_wire(s: &ObjStat) -> Result<ObjectStat, StoreError> {
    Ok(ObjectStat {
        id: crate::ObjectId(s.id),
        attr: attr_from_wire(&s.attr)?,
        size: s.size,
        ctime: Timestamp {
            secs: s.ctime_sec,
            nanos: s.ctime_nsec,
        },
        blocks: s.blocks,
    })
}

/// The Tswstat fields for a change: `(valid, attr, size)`.
pub fn change_to_wire(c: &AttrChange) -> (u32, ObjAttr, u64) {
    let mut valid = 0;
    let mut a = ObjAttr::default();
    if let Some(m) = c.mode {
        valid |= swstat_valid::MODE;
        a.mode = m;
    }
    if let Some(u) = c.uid {
        valid |= swstat_valid::UID;
        a.uid = u;
    }
    if let Some(g) = c.gid {
        valid |= swstat_valid::GID;
        a.gid = g;
    }
    if let Some(t) = c.atime {
        valid |= swstat_valid::ATIME;
        a.atime_sec = t.secs;
        a.atime_nsec = t.nanos;
    }
    if let Some(t) = c.mtime {
        valid |= swstat_valid::MTIME;
        a.mtime_sec = t.secs;
        a.mtime_nsec = t.nanos;
    }
    let size = c.size.inspect(|_| valid |= swstat_valid::SIZE).unwrap_or(0);
    (valid, a, size)
}

/// The change a Tswstat asks for; unknown `valid` bits are an error.
pub fn change_from_wire(valid: u32, a: &ObjAttr, size: u64) -> Result<AttrChange, StoreError> {
    if valid & !swstat_valid::ALL != 0 {
        return Err(StoreError::InvalidArgument(format!(
            "unknown Tswstat valid bits {valid:#x}"
        )));
    }
    let on = |bit: u32| valid & bit != 0;
    Ok(AttrChange {
        mode: on(swstat_valid::MODE).then_some(a.mode),
        uid: on(swstat_valid::UID).then_some(a.uid),
        gid: on(swstat_valid::GID).then_some(a.gid),
        atime: on(swstat_valid::ATIME).then_some(Timestamp {
            secs: a.atime_sec,
            nanos: a.atime_nsec,
        }),
        mtime: on(swstat_valid::MTIME).then_some(Timestamp {
            secs: a.mtime_sec,
            nanos: a.mtime_nsec,
        }),
        size: on(swstat_valid::SIZE).then_some(size),
    })
}

/// Where a server listens or a client connects: `tcp:HOST:PORT` or `unix:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(a) = s.strip_prefix("tcp:") {
            a.parse()
                .map(Endpoint::Tcp)
                .map_err(|e| format!("bad TCP address {a:?}: {e}"))
        } else if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("empty Unix socket path".into());
            }
            Ok(Endpoint::Unix(PathBuf::from(p)))
        } else {
            Err(format!("endpoint {s:?} must start with tcp: or unix:"))
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "tcp:{a}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A connected byte stream of either kind.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix socket.
    Unix(UnixStream),
}

impl Stream {
    /// Connects to `ep`.
    pub fn connect(ep: &Endpoint) -> io::Result<Stream> {
        Ok(match ep {
            Endpoint::Tcp(a) => {
                let s = TcpStream::connect(a)?;
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
            Endpoint::Unix(p) => Stream::Unix(UnixStream::connect(p)?),
        })
    }

    /// A second handle to the same connection.
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    /// Bounds how long a write may block (`None`: forever).
    pub fn set_write_timeout(&self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(timeout),
            Stream::Unix(s) => s.set_write_timeout(timeout),
        }
    }

    /// Shuts both directions down (wakes a blocked reader).
    pub fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// Writes a frame given as header bytes plus an optional payload, without copying the payload.
pub fn write_frame(w: &mut impl Write, head: &[u8], payload: Option<&[u8]>) -> io::Result<()> {
    let payload = payload.unwrap_or(&[]);
    let mut h = 0usize;
    let mut p = 0usize;
    while h < head.len() || p < payload.len() {
        let n = w.write_vectored(&[
            io::IoSlice::new(&head[h..]),
            io::IoSlice::new(&payload[p..]),
        ])?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_head = n.min(head.len() - h);
        h += from_head;
        p += n - from_head;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_round_trip_all_and_none() {
        let c = AttrChange {
            mode: Some(0o700),
            uid: Some(1),
            gid: Some(2),
            atime: Some(Timestamp { secs: 3, nanos: 4 }),
            mtime: Some(Timestamp { secs: 5, nanos: 6 }),
            size: Some(7),
        };
        let (v, a, s) = change_to_wire(&c);
        assert_eq!(change_from_wire(v, &a, s).unwrap(), c);
        let (v, a, s) = change_to_wire(&AttrChange::default());
        assert_eq!(v, 0);
        assert_eq!(change_from_wire(v, &a, s).unwrap(), AttrChange::default());
        assert!(change_from_wire(64, &a, s).is_err());
    }

    #[test]
    fn endpoint_parse_good_and_bad() {
        assert!(matches!("tcp:127.0.0.1:5640".parse(), Ok(Endpoint::Tcp(_))));
        assert!(matches!("unix:/tmp/x".parse(), Ok(Endpoint::Unix(_))));
        for bad in ["", "tcp:", "tcp:nohost", "unix:", "udp:1.2.3.4:5"] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn write_frame_handles_partial_writes() {
        struct Dribble(Vec<u8>);
        impl Write for Dribble {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                let n = b.len().min(3);
                self.0.extend_from_slice(&b[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut d = Dribble(Vec::new());
        write_frame(&mut d, b"header", Some(b"payload")).unwrap();
        assert_eq!(d.0, b"headerpayload");
    }
}
