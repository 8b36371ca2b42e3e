//! Test support: a real diod (Debian's 9P2000.L server) on 127.0.0.1 with a temporary export.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use guest_shim::client::Client;
use guest_shim::Endpoint;

/// Where Debian installs diod.
pub const DIOD: &str = "/usr/sbin/diod";

/// A running diod, killed on drop.
pub struct Diod {
    child: Child,
    pub port: u16,
    pub export: tempfile::TempDir,
    pub log: PathBuf,
}

/// Starts diod, or returns `None` (after saying so loudly) when it is not installed.
pub fn start_diod(test: &str) -> Option<Diod> {
    if !Path::new(DIOD).exists() {
        eprintln!(
            "\n*** SKIPPING {test}: {DIOD} is not installed (apt-get install diod, or run \
             scripts/install-deps.sh) ***\n"
        );
        return None;
    }
    let export = tempfile::tempdir().unwrap();
    let log = export.path().with_extension("diod.log");
    // Ask the OS for a free port, then hand it to diod (a small race, retried below).
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(DIOD)
            .args(["-f", "-n", "-d", "0", "-c", "/dev/null", "-e"])
            .arg(export.path())
            .args(["-l", &format!("127.0.0.1:{port}"), "-L"])
            .arg(&log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Diod {
                    child,
                    port,
                    export,
                    log,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("diod did not start; log: {}", log.display());
}

/// Who the tests attach as: the user running them (diod, run by the same user, serves it).
pub struct Me {
    pub uname: String,
    pub uid: u32,
    pub gid: u32,
}

pub fn me() -> Me {
    let uid = nix::unistd::geteuid();
    let uname = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name);
    Me {
        uname,
        uid: uid.as_raw(),
        gid: nix::unistd::getegid().as_raw(),
    }
}

impl Diod {
    pub fn endpoint(&self) -> Endpoint {
        format!("tcp:127.0.0.1:{}", self.port).parse().unwrap()
    }

    /// The attach name: the export path.
    pub fn aname(&self) -> String {
        self.export.path().to_str().unwrap().to_owned()
    }

    /// A 9P2000.L session attached as [`me`] on fid 0.
    pub fn session(&self, msize: u32) -> Client {
        session(&self.endpoint(), msize, &self.aname())
    }
}

impl Drop for Diod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A 9P2000.L session on `ep` attached to `aname` as [`me`] on fid 0.
pub fn session(ep: &Endpoint, msize: u32, aname: &str) -> Client {
    let c = Client::connect_version(ep, msize, "9P2000.L").unwrap();
    c.set_timeout(Some(Duration::from_secs(30)));
    attach(&c, aname);
    c
}

/// Attaches `c` to `aname` as [`me`] on fid 0.
pub fn attach(c: &Client, aname: &str) {
    let me = me();
    let (root, nofid) = (envoy_proto::Fid(0), envoy_proto::Fid::NOFID);
    c.attach(root, nofid, &me.uname, aname, me.uid).unwrap();
}

/// Linux errno EOPNOTSUPP.
pub const EOPNOTSUPP: u32 = 95;

/// A short file battery through `c` (attached on fid 0 to diod's export at `export`):
/// create, write, read back, getattr, truncate, mkdir, readdir, symlink, readlink, hard link,
/// rename, renameat, unlinkat, statfs, fsync; checked against the export on the host too.
pub fn file_battery(c: &Client, export: &Path) {
    use envoy_proto::{getattr, lopen, setattr, unlinkat, Fid};
    let root = Fid(0);
    let gid = me().gid;

    // Create and write a file bigger than one msize.
    let f = c.alloc_fid();
    c.walk(root, f, &[]).unwrap();
    c.lcreate(f, "data.bin", lopen::RDWR, 0o644, gid).unwrap();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(c.write_all(f, 0, &payload).unwrap(), payload.len() as u64);
    c.fsync(f, false).unwrap();
    assert_eq!(c.read_all(f).unwrap(), payload);
    c.clunk(f).unwrap();
    assert_eq!(std::fs::read(export.join("data.bin")).unwrap(), payload);

    // getattr and truncate through setattr.
    let g = c.alloc_fid();
    c.walk(root, g, &["data.bin"]).unwrap();
    let attr = c.getattr(g, getattr::BASIC).unwrap();
    assert_eq!(attr.size, payload.len() as u64);
    assert_eq!(attr.mode & 0o777, 0o644);
    let mut req = guest_shim::client::setattr_request(g, setattr::SIZE);
    req.size = 10;
    c.setattr(req).unwrap();
    assert_eq!(c.getattr(g, getattr::SIZE).unwrap().size, 10);

    // Directory, entries, symlink, hard link.
    let qid = c.mkdir(root, "dir", 0o755, gid).unwrap();
    assert_eq!(qid.ty, envoy_proto::qid_type::DIR);
    c.symlink(root, "link", "data.bin", gid).unwrap();
    c.link(root, g, "hard").unwrap();
    assert_eq!(c.getattr(g, getattr::NLINK).unwrap().nlink, 2);
    let l = c.alloc_fid();
    c.walk(root, l, &["link"]).unwrap();
    assert_eq!(c.readlink(l).unwrap(), "data.bin");
    c.clunk(l).unwrap();

    let d = c.alloc_fid();
    c.walk(root, d, &[]).unwrap();
    c.lopen(d, lopen::RDONLY | lopen::DIRECTORY).unwrap();
    let mut names: Vec<String> = c
        .readdir_all(d)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .filter(|n| n != "." && n != "..")
        .collect();
    names.sort();
    assert_eq!(names, ["data.bin", "dir", "hard", "link"]);
    c.clunk(d).unwrap();

    // rename (fid-based) into dir, renameat back, unlinkat everything.
    let dir = c.alloc_fid();
    c.walk(root, dir, &["dir"]).unwrap();
    c.rename(g, dir, "moved").unwrap();
    assert!(export.join("dir/moved").exists());
    match c.renameat(dir, "moved", root, "back") {
        Ok(()) => {}
        // diod 1.0.24 has no Trenameat; Linux falls back to Trename the same way.
        Err(e) if e.errno() == Some(EOPNOTSUPP) => {
            let m = c.alloc_fid();
            c.walk(dir, m, &["moved"]).unwrap();
            c.rename(m, root, "back").unwrap();
            c.clunk(m).unwrap();
        }
        Err(e) => panic!("renameat: {e}"),
    }
    assert!(export.join("back").exists());
    c.clunk(g).unwrap();
    c.clunk(dir).unwrap();
    let st = c.statfs(root).unwrap();
    assert!(st.bsize > 0 && st.namelen >= 255);
    for (name, flags) in [
        ("back", 0),
        ("hard", 0),
        ("link", 0),
        ("dir", unlinkat::REMOVEDIR),
    ] {
        match c.unlinkat(root, name, flags) {
            Ok(()) => {}
            // As for renameat: the Linux client falls back to walk + Tremove.
            Err(e) if e.errno() == Some(EOPNOTSUPP) => {
                let m = c.alloc_fid();
                c.walk(root, m, &[name]).unwrap();
                c.remove(m).unwrap();
            }
            Err(e) => panic!("unlinkat {name}: {e}"),
        }
    }
    let left: Vec<_> = std::fs::read_dir(export).unwrap().collect();
    assert!(left.is_empty(), "export not empty: {left:?}");

    // A missing name is ENOENT, as an errno.
    let m = c.alloc_fid();
    let err = c.walk(root, m, &["missing"]).unwrap_err();
    assert_eq!(err.errno(), Some(2), "{err}");
    c.release_fid(m);
}
