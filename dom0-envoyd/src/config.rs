//! Command line → validated [`Config`].
//!
//! With no arguments envoyd is the embedded default: store in `./envoy-data` (created if
//! missing), 9P on `tcp:127.0.0.1:5640`, and a fresh store holds one writable image at
//! `/default` that any client on this host may attach (aname `/default`).

use std::path::PathBuf;

use clap::Parser;

/// Largest msize the server offers (and the frame limit before Tversion).
pub const DEFAULT_MAX_MSIZE: u32 = 1 << 20;
/// Smallest msize the server accepts.
pub const MIN_MSIZE: u32 = 4096;

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `tcp:HOST:PORT`.
    Tcp(String),
    /// `unix:PATH`.
    Unix(PathBuf),
    /// `ring:PATH`: shared-memory 9pfs rings in a file (see [`crate::transport::ring`]).
    Ring(PathBuf),
    /// `vsock:PORT`: `AF_VSOCK` on every local CID (see [`crate::transport::vsock`]).
    Vsock(u32),
    /// `vsock-uds:[CID:]PATH`: the hybrid vsock Unix socket `<uds_path>_<port>` of one VM,
    /// whose guest has CID `cid` (default 3).
    VsockUds {
        /// The guest's CID (the principal of every connection).
        cid: u32,
        /// The socket to bind.
        path: PathBuf,
    },
    /// `xen` (the hypervisor: xenstored, `/dev/xen/gntdev`, `/dev/xen/evtchn`) or
    /// `xen-sim:DIR` (the simulated Xen whose sockets are in DIR): Xen 9pfs grant rings, one
    /// connection per guest device (see [`crate::transport::xen`]).
    Xen(Option<PathBuf>),
}

impl std::str::FromStr for Endpoint {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        if let Some(a) = s.strip_prefix("tcp:") {
            if a.rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                return Err(ConfigError::Endpoint(s.to_string()));
            }
            Ok(Endpoint::Tcp(a.to_string()))
        } else if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err(ConfigError::Endpoint(s.to_string()));
            }
            Ok(Endpoint::Unix(PathBuf::from(p)))
        } else if let Some(p) = s.strip_prefix("ring:") {
            if p.is_empty() {
                return Err(ConfigError::Endpoint(s.to_string()));
            }
            Ok(Endpoint::Ring(PathBuf::from(p)))
        } else if let Some(p) = s.strip_prefix("vsock:") {
            p.parse()
                .map(Endpoint::Vsock)
                .map_err(|_| ConfigError::Endpoint(s.to_string()))
        } else if let Some(rest) = s.strip_prefix("vsock-uds:") {
            let (cid, path) = match rest.split_once(':') {
                Some((c, p)) if !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()) => (
                    c.parse()
                        .map_err(|_| ConfigError::Endpoint(s.to_string()))?,
                    p,
                ),
                _ => (crate::transport::vsock::DEFAULT_HYBRID_CID, rest),
            };
            if path.is_empty() {
                return Err(ConfigError::Endpoint(s.to_string()));
            }
            Ok(Endpoint::VsockUds {
                cid,
                path: PathBuf::from(path),
            })
        } else if s == "xen" {
            Ok(Endpoint::Xen(None))
        } else if let Some(p) = s.strip_prefix("xen-sim:") {
            if p.is_empty() {
                return Err(ConfigError::Endpoint(s.to_string()));
            }
            Ok(Endpoint::Xen(Some(PathBuf::from(p))))
        } else {
            Err(ConfigError::Endpoint(s.to_string()))
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "tcp:{a}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Ring(p) => write!(f, "ring:{}", p.display()),
            Endpoint::Vsock(port) => write!(f, "vsock:{port}"),
            Endpoint::VsockUds { cid, path } => write!(f, "vsock-uds:{cid}:{}", path.display()),
            Endpoint::Xen(None) => write!(f, "xen"),
            Endpoint::Xen(Some(p)) => write!(f, "xen-sim:{}", p.display()),
        }
    }
}

/// A rejected option.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not `tcp:HOST:PORT`, `unix:PATH`, `vsock:PORT` or `vsock-uds:[CID:]PATH`.
    #[error(
        "bad endpoint {0:?}: expected tcp:HOST:PORT, unix:PATH, vsock:PORT, vsock-uds:[CID:]PATH or ring:PATH"
    )]
    Endpoint(String),
    /// A numeric option out of range.
    #[error("{name} must be between {min} and {max}, got {value}")]
    Range {
        /// Option name.
        name: &'static str,
        /// Lowest allowed.
        min: u64,
        /// Highest allowed.
        max: u64,
        /// Given.
        value: u64,
    },
}

/// envoyd's command line.
#[derive(Debug, Parser)]
#[command(
    name = "envoyd",
    version,
    about = "Envoy file server (9P2000.L / 9P2000.u)"
)]
pub struct Args {
    /// Object store directory (created if missing).
    #[arg(long, default_value = "./envoy-data")]
    pub data: PathBuf,
    /// Endpoint to serve 9P on: tcp:HOST:PORT, unix:PATH, vsock:PORT, vsock-uds:[CID:]PATH or
    /// ring:PATH (shared-memory rings in a file, created if missing) (repeatable).
    #[arg(long = "listen")]
    pub listen: Vec<String>,
    /// Serve the 9pfs devices of Xen guests (run in dom0; same as `--listen xen`).
    #[arg(long)]
    pub xen: bool,
    /// Memory cache budget in MiB.
    #[arg(long, default_value_t = 64)]
    pub cache_mb: u64,
    /// Worker threads handling requests (0 = number of CPUs, at least 4).
    #[arg(long, default_value_t = 0)]
    pub workers: u64,
    /// Most fids one connection may hold.
    #[arg(long, default_value_t = 16384)]
    pub max_fids_per_conn: u64,
    /// Largest msize offered to clients.
    #[arg(long, default_value_t = u64::from(DEFAULT_MAX_MSIZE))]
    pub max_msize: u64,
    /// The operator's control socket (for envoyctl); default <data>/control.sock.
    #[arg(long)]
    pub control: Option<PathBuf>,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Store directory.
    pub data: PathBuf,
    /// Endpoints.
    pub listen: Vec<Endpoint>,
    /// Cache budget in bytes.
    pub cache_bytes: usize,
    /// Worker threads.
    pub workers: usize,
    /// Fid limit per connection.
    pub max_fids_per_conn: usize,
    /// Largest msize.
    pub max_msize: u32,
    /// The control socket, `None` for none (tests).
    pub control: Option<PathBuf>,
}

fn range(name: &'static str, v: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(ConfigError::Range {
            name,
            min,
            max,
            value: v,
        })
    }
}

impl Config {
    /// Validates parsed arguments.
    pub fn from_args(a: Args) -> Result<Config, ConfigError> {
        let mut listen = if a.listen.is_empty() && !a.xen {
            vec![Endpoint::Tcp("127.0.0.1:5640".into())]
        } else {
            a.listen
                .iter()
                .map(|s| s.parse())
                .collect::<Result<Vec<_>, _>>()?
        };
        if a.xen && !listen.contains(&Endpoint::Xen(None)) {
            listen.push(Endpoint::Xen(None));
        }
        let workers = match range("--workers", a.workers, 0, 1024)? {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(4)
                .max(4),
            n => n as usize,
        };
        let control = Some(a.control.unwrap_or_else(|| a.data.join("control.sock")));
        Ok(Config {
            control,
            data: a.data,
            listen,
            cache_bytes: (range("--cache-mb", a.cache_mb, 1, 1 << 20)? << 20) as usize,
            workers,
            max_fids_per_conn: range("--max-fids-per-conn", a.max_fids_per_conn, 16, 1 << 24)?
                as usize,
            max_msize: range(
                "--max-msize",
                a.max_msize,
                u64::from(MIN_MSIZE) * 2,
                16 << 20,
            )? as u32,
        })
    }

    /// A configuration for tests: the given store, no listeners yet, small limits.
    pub fn for_dir(data: impl Into<PathBuf>) -> Config {
        Config {
            data: data.into(),
            listen: Vec::new(),
            cache_bytes: 16 << 20,
            workers: 8,
            max_fids_per_conn: 1024,
            max_msize: DEFAULT_MAX_MSIZE,
            control: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_no_args_embedded_default() {
        let c = Config::from_args(Args::parse_from(["envoyd"])).unwrap();
        assert_eq!(c.listen, vec![Endpoint::Tcp("127.0.0.1:5640".into())]);
        assert_eq!(c.data, PathBuf::from("./envoy-data"));
        assert_eq!(c.control, Some(PathBuf::from("./envoy-data/control.sock")));
        assert!(c.workers >= 4);
    }

    #[test]
    fn config_bad_endpoint_rejected() {
        for bad in ["tcp:nohost", "udp:1.2.3.4:5", "unix:", "tcp::5"] {
            let a = Args::parse_from(["envoyd", "--listen", bad]);
            assert!(Config::from_args(a).is_err(), "{bad}");
        }
        let a = Args::parse_from([
            "envoyd",
            "--listen",
            "unix:/tmp/x",
            "--listen",
            "tcp:[::1]:1",
        ]);
        assert_eq!(Config::from_args(a).unwrap().listen.len(), 2);
    }

    #[test]
    fn config_ring_endpoint_parses_and_round_trips() {
        let ep: Endpoint = "ring:/dev/shm/g1.ring".parse().unwrap();
        assert_eq!(ep, Endpoint::Ring("/dev/shm/g1.ring".into()));
        assert_eq!(ep.to_string().parse::<Endpoint>().unwrap(), ep);
        assert!("ring:".parse::<Endpoint>().is_err());
    }

    #[test]
    fn config_vsock_endpoints_parse_and_round_trip() {
        let ep: Endpoint = "vsock:5640".parse().unwrap();
        assert_eq!(ep, Endpoint::Vsock(5640));
        let ep: Endpoint = "vsock-uds:/run/vm/v.sock_5640".parse().unwrap();
        assert_eq!(
            ep,
            Endpoint::VsockUds {
                cid: 3,
                path: "/run/vm/v.sock_5640".into()
            }
        );
        assert_eq!(ep.to_string(), "vsock-uds:3:/run/vm/v.sock_5640");
        let ep: Endpoint = "vsock-uds:42:/a:b".parse().unwrap();
        assert_eq!(
            ep,
            Endpoint::VsockUds {
                cid: 42,
                path: "/a:b".into()
            }
        );
        assert_eq!(ep.to_string().parse::<Endpoint>().unwrap(), ep);
        for bad in [
            "vsock:",
            "vsock:x",
            "vsock:-1",
            "vsock-uds:",
            "vsock-uds:4:",
            "vsock-uds:99999999999:/p",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
    }
}
