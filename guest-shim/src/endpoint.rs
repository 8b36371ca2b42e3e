//! Where the host's envoy is, and how to open a byte stream to it.
//!
//! An [`Endpoint`] is written `KIND:ADDRESS` on command lines and in test configuration:
//!
//! | text | meaning |
//! |---|---|
//! | `tcp:HOST:PORT` | TCP (`HOST` an IP literal, `[v6]` literal or a name) |
//! | `unix:PATH` | Unix stream socket |
//! | `vsock:CID:PORT` | AF_VSOCK stream socket (CID 2 is the host) |
//! | `serial:PATH` | a virtio-serial port's character device, e.g. `/dev/vport0p1` |
//! | `serial-name:NAME` | the virtio-serial port whose `/sys/class/virtio-ports/*/name` is `NAME` |
//! | `ivshmem:auto` | a ring of envoyd's `ring:` file through the first ivshmem PCI device's BAR 2 |
//! | `ivshmem:BDF` / `ivshmem:PATH` | the same through PCI device `BDF` (`0000:00:04.0`) or a mapped file |
//!
//! [`Endpoint::connect`] yields a [`Connection`]: independent read and write halves (so a
//! reader thread and writers can run at once) and a [`Closer`] that unblocks the reader.
//!
//! A serial port is a byte stream without connection boundaries: opening it again continues
//! the same stream the host has been reading, so [`Endpoint::is_persistent_stream`] tells the
//! relay to keep it frame-aligned across guest sessions (see [`crate::relay`]). A shared-memory
//! ring (`ivshmem:`, [`crate::ivshmem`]) is claimed per connection and released by its
//! [`Closer`]; everything above this module only sees `Read`/`Write` halves.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use thiserror::Error;

/// Directory listing virtio-serial ports, each with a `name` file.
pub const VIRTIO_PORTS_DIR: &str = "/sys/class/virtio-ports";

/// A place to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Endpoint {
    /// `tcp:HOST:PORT`.
    Tcp {
        /// Host name or IP literal (without brackets).
        host: String,
        /// Port.
        port: u16,
    },
    /// `unix:PATH`.
    Unix(PathBuf),
    /// `vsock:CID:PORT`.
    Vsock {
        /// Context id (2 = host).
        cid: u32,
        /// Port.
        port: u32,
    },
    /// `serial:PATH`: a virtio-serial port device.
    Serial(PathBuf),
    /// `serial-name:NAME`: a virtio-serial port found by name.
    SerialName(String),
    /// `ivshmem:auto|BDF|PATH`: a ring in shared memory (see [`crate::ivshmem::open`]).
    Ivshmem(String),
}

/// An endpoint string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EndpointParseError {
    /// No `KIND:` prefix or an unknown kind.
    #[error("unknown endpoint kind in {0:?}: use tcp:HOST:PORT, unix:PATH, vsock:CID:PORT, serial:PATH, serial-name:NAME or ivshmem:auto|BDF|PATH")]
    UnknownKind(String),
    /// The address part is empty.
    #[error("endpoint {0:?} has an empty address")]
    Empty(String),
    /// A port or CID is missing or not a number in range.
    #[error("endpoint {text:?}: {what} is not a valid number")]
    BadNumber {
        /// The whole endpoint text.
        text: String,
        /// Which field.
        what: &'static str,
    },
}

impl FromStr for Endpoint {
    type Err = EndpointParseError;

    fn from_str(s: &str) -> Result<Endpoint, EndpointParseError> {
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| EndpointParseError::UnknownKind(s.into()))?;
        if rest.is_empty() {
            return Err(EndpointParseError::Empty(s.into()));
        }
        let bad = |what| EndpointParseError::BadNumber {
            text: s.into(),
            what,
        };
        match kind {
            "tcp" => {
                let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("port"))?;
                let port = port.parse::<u16>().map_err(|_| bad("port"))?;
                let host = host
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(host);
                if host.is_empty() {
                    return Err(EndpointParseError::Empty(s.into()));
                }
                Ok(Endpoint::Tcp {
                    host: host.into(),
                    port,
                })
            }
            "unix" => Ok(Endpoint::Unix(rest.into())),
            "vsock" => {
                let (cid, port) = rest.split_once(':').ok_or_else(|| bad("port"))?;
                Ok(Endpoint::Vsock {
                    cid: cid.parse().map_err(|_| bad("cid"))?,
                    port: port.parse().map_err(|_| bad("port"))?,
                })
            }
            "serial" => Ok(Endpoint::Serial(rest.into())),
            "serial-name" => Ok(Endpoint::SerialName(rest.into())),
            "ivshmem" => Ok(Endpoint::Ivshmem(rest.into())),
            _ => Err(EndpointParseError::UnknownKind(s.into())),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp { host, port } if host.contains(':') => write!(f, "tcp:[{host}]:{port}"),
            Endpoint::Tcp { host, port } => write!(f, "tcp:{host}:{port}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
            Endpoint::Serial(p) => write!(f, "serial:{}", p.display()),
            Endpoint::SerialName(n) => write!(f, "serial-name:{n}"),
            Endpoint::Ivshmem(s) => write!(f, "ivshmem:{s}"),
        }
    }
}

/// Shuts a connection down so that a thread blocked reading it wakes up with end-of-file.
#[derive(Debug)]
pub enum Closer {
    /// A TCP socket.
    Tcp(TcpStream),
    /// A Unix socket.
    Unix(UnixStream),
    /// Any other socket (vsock).
    Socket(OwnedFd),
    /// A shared-memory ring: detaching ends both halves.
    Ring(std::sync::Arc<crate::ivshmem::RingDetach>),
    /// A device or pipe: nothing to shut down (its reader ends when the peer does).
    Nothing,
}

impl Closer {
    /// Shuts both directions down; errors (already closed) are ignored.
    pub fn shutdown(&self) {
        let _ = match self {
            Closer::Tcp(s) => s.shutdown(Shutdown::Both),
            Closer::Unix(s) => s.shutdown(Shutdown::Both),
            Closer::Socket(fd) => nix::sys::socket::shutdown(
                std::os::fd::AsRawFd::as_raw_fd(fd),
                nix::sys::socket::Shutdown::Both,
            )
            .map_err(io::Error::from),
            Closer::Ring(d) => {
                d.detach();
                Ok(())
            }
            Closer::Nothing => Ok(()),
        };
    }
}

/// An open byte stream, split into halves.
pub struct Connection {
    /// Reading half.
    pub reader: Box<dyn Read + Send>,
    /// Writing half.
    pub writer: Box<dyn Write + Send>,
    /// Wakes a blocked reader.
    pub closer: Closer,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("closer", &self.closer)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Wraps a connected Unix stream.
    pub fn from_unix(s: UnixStream) -> io::Result<Connection> {
        Ok(Connection {
            reader: Box::new(s.try_clone()?),
            writer: Box::new(s.try_clone()?),
            closer: Closer::Unix(s),
        })
    }

    /// Wraps a connected TCP stream (Nagle off: 9P is request/response).
    pub fn from_tcp(s: TcpStream) -> io::Result<Connection> {
        s.set_nodelay(true)?;
        Ok(Connection {
            reader: Box::new(s.try_clone()?),
            writer: Box::new(s.try_clone()?),
            closer: Closer::Tcp(s),
        })
    }
}

/// Failure to open an endpoint.
#[derive(Debug, Error)]
pub enum ConnectError {
    /// The OS refused.
    #[error("cannot connect to {endpoint}: {source}")]
    Io {
        /// Where.
        endpoint: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A TCP host name resolved to nothing.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// The shared-memory ring could not be used.
    #[error(transparent)]
    Ivshmem(#[from] crate::ivshmem::IvshmemError),
    /// No virtio-serial port has this name.
    #[error(
        "no virtio-serial port named {name:?} under {dir} (is the port configured on the VM?)"
    )]
    NoSuchPort {
        /// The name looked for.
        name: String,
        /// The directory searched.
        dir: String,
    },
}

impl Endpoint {
    /// Whether the stream outlives a guest session (a serial port): the relay must keep it
    /// frame-aligned and filter stale replies instead of opening a fresh connection.
    pub fn is_persistent_stream(&self) -> bool {
        matches!(self, Endpoint::Serial(_) | Endpoint::SerialName(_))
    }

    /// Opens a byte stream to the endpoint.
    pub fn connect(&self) -> Result<Connection, ConnectError> {
        let io = |source| ConnectError::Io {
            endpoint: self.to_string(),
            source,
        };
        match self {
            Endpoint::Tcp { host, port } => {
                // An IP literal never goes through getaddrinfo (which a static binary in an
                // initramfs cannot always use).
                let addrs: Vec<SocketAddr> = match host.parse::<std::net::IpAddr>() {
                    Ok(ip) => vec![SocketAddr::new(ip, *port)],
                    Err(_) => (host.as_str(), *port)
                        .to_socket_addrs()
                        .map_err(io)?
                        .collect(),
                };
                if addrs.is_empty() {
                    return Err(ConnectError::Resolve(host.clone()));
                }
                let s = TcpStream::connect(&addrs[..]).map_err(io)?;
                Connection::from_tcp(s).map_err(io)
            }
            Endpoint::Unix(p) => {
                let s = UnixStream::connect(p).map_err(io)?;
                Connection::from_unix(s).map_err(io)
            }
            Endpoint::Vsock { cid, port } => connect_vsock(*cid, *port).map_err(io),
            Endpoint::Serial(p) => open_serial(p).map_err(io),
            Endpoint::SerialName(name) => {
                let dev = find_serial_port(Path::new(VIRTIO_PORTS_DIR), name)?;
                open_serial(&dev).map_err(io)
            }
            Endpoint::Ivshmem(spec) => Ok(crate::ivshmem::open(spec)?.attach()?),
        }
    }
}

fn open_serial(path: &Path) -> io::Result<Connection> {
    let f = OpenOptions::new().read(true).write(true).open(path)?;
    Ok(Connection {
        reader: Box::new(f.try_clone()?),
        writer: Box::new(f),
        closer: Closer::Nothing,
    })
}

fn connect_vsock(cid: u32, port: u32) -> io::Result<Connection> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, VsockAddr};
    let fd = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &VsockAddr::new(cid, port),
    )?;
    let reader = File::from(fd.try_clone()?);
    let writer = File::from(fd.try_clone()?);
    Ok(Connection {
        reader: Box::new(reader),
        writer: Box::new(writer),
        closer: Closer::Socket(fd),
    })
}

/// Finds the device of the virtio-serial port called `name`: the entry of `dir` (normally
/// [`VIRTIO_PORTS_DIR`]) whose `name` file holds it, as `/dev/<entry>`.
pub fn find_serial_port(dir: &Path, name: &str) -> Result<PathBuf, ConnectError> {
    let not_found = || ConnectError::NoSuchPort {
        name: name.into(),
        dir: dir.display().to_string(),
    };
    let entries = std::fs::read_dir(dir).map_err(|_| not_found())?;
    let mut found: Vec<String> = entries
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("name"))
                .is_ok_and(|n| n.trim_end_matches('\n') == name)
        })
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    found.sort();
    found
        .into_iter()
        .next()
        .map(|dev| Path::new("/dev").join(dev))
        .ok_or_else(not_found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_every_kind_round_trips() {
        for text in [
            "tcp:127.0.0.1:564",
            "tcp:[::1]:564",
            "tcp:envoy.local:1",
            "unix:/run/envoy.sock",
            "vsock:2:5640",
            "serial:/dev/vport0p1",
            "serial-name:envoy",
            "ivshmem:auto",
            "ivshmem:0000:00:04.0",
            "ivshmem:/dev/shm/envoy",
        ] {
            let ep: Endpoint = text.parse().unwrap();
            assert_eq!(ep.to_string(), text);
        }
    }

    #[test]
    fn parse_tcp_ipv6_strips_brackets() {
        let ep: Endpoint = "tcp:[::1]:80".parse().unwrap();
        assert_eq!(
            ep,
            Endpoint::Tcp {
                host: "::1".into(),
                port: 80
            }
        );
    }

    #[test]
    fn parse_bad_inputs_fail() {
        for text in [
            "",
            "tcp",
            "tcp:",
            "tcp:host",
            "tcp:host:99999",
            "tcp::80",
            "udp:1.2.3.4:5",
            "vsock:2",
            "vsock:x:1",
            "unix:",
        ] {
            assert!(text.parse::<Endpoint>().is_err(), "{text:?} parsed");
        }
    }

    #[test]
    fn persistent_only_for_serial() {
        assert!("serial:/dev/x"
            .parse::<Endpoint>()
            .unwrap()
            .is_persistent_stream());
        assert!("serial-name:e"
            .parse::<Endpoint>()
            .unwrap()
            .is_persistent_stream());
        assert!(!"unix:/x"
            .parse::<Endpoint>()
            .unwrap()
            .is_persistent_stream());
    }

    #[test]
    fn find_serial_port_by_name_returns_dev_path() {
        let dir = tempfile::tempdir().unwrap();
        for (port, name) in [("vport0p1", "other\n"), ("vport0p2", "envoy\n")] {
            std::fs::create_dir(dir.path().join(port)).unwrap();
            std::fs::write(dir.path().join(port).join("name"), name).unwrap();
        }
        assert_eq!(
            find_serial_port(dir.path(), "envoy").unwrap(),
            PathBuf::from("/dev/vport0p2")
        );
        assert!(matches!(
            find_serial_port(dir.path(), "missing"),
            Err(ConnectError::NoSuchPort { .. })
        ));
    }
}
