//! The servers a load-generator run compares: `envoyd` and Debian's `diod` started by the
//! bench on scratch directories of the same disk, or any 9P2000.L server already running
//! (`--external NAME=ENDPOINT@ANAME[@PID]`). Started servers are killed when dropped.
//!
//! diod exports a host directory and runs `-S` (every user squashed to `nobody`), so the
//! export directory is made world-writable before the tree is populated through 9P.

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use envoy_ring::file::RingFile;
use envoy_ring::RingOrder;
use guest_shim::client::Client;
use guest_shim::endpoint::Endpoint;
use tempfile::TempDir;

use super::mixes::Target;
use super::BenchResult;

/// How long a started server has to accept its first 9P session.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One server under test.
pub struct Server {
    /// Name printed in the tables (`envoyd`, `diod`, or the `--external` name).
    pub name: String,
    /// TCP endpoint.
    pub tcp: Option<Endpoint>,
    /// Unix-socket endpoint, if the server offers one.
    pub unix: Option<Endpoint>,
    /// Shared-memory ring file (`--listen ring:PATH`), envoyd only.
    pub ring: Option<PathBuf>,
    /// Attach name of the tree.
    pub aname: String,
    /// Process id (for /proc/PID/status), if known.
    pub pid: Option<u32>,
    child: Option<Child>,
    log: Option<PathBuf>,
    _dir: Option<TempDir>,
}

impl Server {
    /// The target for `transport` (`tcp`, `unix` or `ring`), if the server has one.
    pub fn endpoint(&self, transport: &str) -> Option<Target> {
        match transport {
            "tcp" => self.tcp.clone().map(Target::Ep),
            "unix" => self.unix.clone().map(Target::Ep),
            "ring" => self.ring.clone().map(Target::Ring),
            _ => None,
        }
    }

    /// The server's log so far (started servers only).
    pub fn log_tail(&self) -> String {
        let Some(p) = &self.log else {
            return String::new();
        };
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(p) {
            let _ = f.read_to_string(&mut s);
        }
        let start = s.len().saturating_sub(2000);
        s.get(start..).unwrap_or_default().to_string()
    }

    /// `VmRSS` and `VmHWM` of the server process in KiB.
    pub fn memory_kib(&self) -> Option<(u64, u64)> {
        let pid = self.pid?;
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// Threads of the server process.
    pub fn threads(&self) -> Option<u64> {
        let pid = self.pid?;
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            if let Some(r) = &self.ring {
                let _ = fs::remove_file(r);
            }
        }
    }
}

/// Rings a started envoyd serves (one per connection of a cell, plus the setup session).
const RINGS: u32 = 16;
/// Ring order: 2^9 pages, 1 MiB per direction.
const RING_ORDER: u32 = 9;

/// Lets ring clients attach: appends `ring:* admin any` to the root credential file through
/// TCP (root on a fresh store). A store without a credential file needs nothing.
fn grant_rings(tcp: &Endpoint) -> BenchResult<()> {
    let c = Client::connect_version(tcp, 65536, "9P2000.L")?;
    let root = envoy_proto::Fid(1);
    let f = envoy_proto::Fid(2);
    if c.attach(root, envoy_proto::Fid::NOFID, "root", "/", 0)
        .is_err()
        || !c.walk(root, f, &[".access"]).is_ok_and(|q| q.len() == 1)
    {
        return Ok(());
    }
    c.lopen(f, envoy_proto::lopen::RDWR)?;
    let old = c.read_all(f)?;
    c.write_all(f, old.len() as u64, b"ring:* admin any\n")?;
    c.clunk(f)?;
    Ok(())
}

fn free_port() -> BenchResult<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn spawn_logged(cmd: &mut Command, log: &Path) -> BenchResult<Child> {
    let out = fs::File::create(log)?;
    let err = out.try_clone()?;
    Ok(cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?)
}

/// Waits until `ep` answers a version handshake and an attach of `aname`.
fn wait_ready(server: &mut Server, ep: &Endpoint) -> BenchResult<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let attempt = Client::connect_version(ep, 65536, "9P2000.L").and_then(|c| {
            c.attach(
                envoy_proto::Fid(1),
                envoy_proto::Fid::NOFID,
                "root",
                &server.aname,
                0,
            )
        });
        match attempt {
            Ok(_) => return Ok(()),
            Err(e) => {
                if let Some(c) = server.child.as_mut() {
                    if let Ok(Some(st)) = c.try_wait() {
                        return Err(format!(
                            "{} exited ({st}) before serving; its log:\n{}",
                            server.name,
                            server.log_tail()
                        )
                        .into());
                    }
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "{} did not serve {ep} within {START_TIMEOUT:?}: {e}; its log:\n{}",
                        server.name,
                        server.log_tail()
                    )
                    .into());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Starts `envoyd` on a fresh store under `scratch` (TCP and a Unix socket; with `ring`,
/// also a ring file of [`RINGS`] rings in /dev/shm).
pub fn start_envoyd(
    bin: &Path,
    scratch: &Path,
    extra: &[String],
    ring: bool,
) -> BenchResult<Server> {
    let dir = tempfile::Builder::new()
        .prefix("loadgen-envoyd-")
        .tempdir_in(scratch)?;
    let port = free_port()?;
    let sock = dir.path().join("envoyd.sock");
    let log = dir.path().join("envoyd.log");
    let mut cmd = Command::new(bin);
    cmd.arg("--data")
        .arg(dir.path().join("data"))
        .arg("--listen")
        .arg(format!("tcp:127.0.0.1:{port}"))
        .arg("--listen")
        .arg(format!("unix:{}", sock.display()))
        .args(extra);
    let ring_path = if ring {
        let p = PathBuf::from(format!(
            "/dev/shm/loadgen-{}-{port}.ring",
            std::process::id()
        ));
        let _ = fs::remove_file(&p);
        // Created here with room for every connection; envoyd uses a file it finds as is.
        RingFile::create(&p, RINGS, RingOrder::new(RING_ORDER)?)?;
        cmd.arg("--listen").arg(format!("ring:{}", p.display()));
        Some(p)
    } else {
        None
    };
    let child = spawn_logged(&mut cmd, &log)?;
    let tcp: Endpoint = format!("tcp:127.0.0.1:{port}").parse()?;
    let mut s = Server {
        name: "envoyd".into(),
        tcp: Some(tcp.clone()),
        unix: Some(Endpoint::Unix(sock)),
        ring: ring_path,
        aname: "/default".into(),
        pid: Some(child.id()),
        child: Some(child),
        log: Some(log),
        _dir: Some(dir),
    };
    wait_ready(&mut s, &tcp)?;
    if ring {
        grant_rings(&tcp)?;
    }
    Ok(s)
}

/// Starts `diod -f -n -S -l 127.0.0.1:PORT -l SOCKET -e DIR -e ctl` on a fresh directory
/// under `scratch`.
pub fn start_diod(bin: &Path, scratch: &Path, extra: &[String]) -> BenchResult<Server> {
    let dir = tempfile::Builder::new()
        .prefix("loadgen-diod-")
        .tempdir_in(scratch)?;
    let export = dir.path().join("export");
    fs::create_dir(&export)?;
    // -S squashes every user to nobody: the tree is created through 9P as nobody.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
    fs::set_permissions(&export, fs::Permissions::from_mode(0o777))?;
    let port = free_port()?;
    let log = dir.path().join("diod.log");
    let sock = dir.path().join("diod.sock");
    let mut cmd = Command::new(bin);
    cmd.args(["-f", "-n", "-S", "-L", "stderr", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-l")
        .arg(&sock)
        .arg("-e")
        .arg(&export)
        // diod's own synthetic tree (zero, null), which diodload attaches.
        .args(["-e", "ctl"])
        .args(extra);
    let child = spawn_logged(&mut cmd, &log)?;
    let tcp: Endpoint = format!("tcp:127.0.0.1:{port}").parse()?;
    let mut s = Server {
        name: "diod".into(),
        tcp: Some(tcp.clone()),
        unix: Some(Endpoint::Unix(sock)),
        ring: None,
        aname: export.display().to_string(),
        pid: Some(child.id()),
        child: Some(child),
        log: Some(log),
        _dir: Some(dir),
    };
    wait_ready(&mut s, &tcp)?;
    Ok(s)
}

/// A server already running: `NAME=ENDPOINT@ANAME[@PID]`, e.g.
/// `other=tcp:127.0.0.1:5640@/default@1234` (the endpoint kind decides the transport).
pub fn external(spec: &str) -> BenchResult<Server> {
    let (name, rest) = spec
        .split_once('=')
        .ok_or_else(|| format!("--external {spec:?}: expected NAME=ENDPOINT@ANAME[@PID]"))?;
    let mut parts = rest.split('@');
    let ep: Endpoint = parts.next().unwrap_or_default().parse()?;
    let aname = parts
        .next()
        .ok_or_else(|| format!("--external {spec:?}: missing @ANAME"))?
        .to_string();
    let pid = match parts.next() {
        Some(p) => Some(
            p.parse()
                .map_err(|_| format!("--external {spec:?}: bad pid"))?,
        ),
        None => None,
    };
    let (tcp, unix) = match ep {
        Endpoint::Unix(_) => (None, Some(ep)),
        other => (Some(other), None),
    };
    Ok(Server {
        name: name.into(),
        tcp,
        unix,
        ring: None,
        aname,
        pid,
        child: None,
        log: None,
        _dir: None,
    })
}
