//! Test harness: an envoyd started in-process on a random port over a temporary store, and
//! guest_shim clients attached to it. Dropping the harness stops the server and checks that
//! the store is clean (`envoy_storage::check`).
#![allow(
    dead_code,
    unused_imports,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::path::Path;
use std::time::Duration;

use dom0_envoyd::config::{Config, Endpoint};
use dom0_envoyd::{Server, ServerHandle};
pub use envoy_proto::{Fid, Qid, NONUNAME};
pub use guest_shim::client::{Client, ClientError};

/// Root fid used by [`Env::attach`].
pub const ROOT: Fid = Fid(1);

pub struct Env {
    pub dir: tempfile::TempDir,
    pub server: Option<ServerHandle>,
    pub addr: String,
    pub max_fids: usize,
}

pub fn config(dir: &Path, max_fids: usize) -> Config {
    let mut c = Config::for_dir(dir);
    c.listen = vec![Endpoint::Tcp("127.0.0.1:0".into())];
    c.max_fids_per_conn = max_fids;
    c.max_msize = 256 * 1024;
    c
}

impl Env {
    pub fn new() -> Env {
        Env::with_fids(1024)
    }

    pub fn with_fids(max_fids: usize) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(config(dir.path(), max_fids)).unwrap();
        let addr = server.tcp_addr().unwrap();
        Env {
            dir,
            server: Some(server),
            addr,
            max_fids,
        }
    }

    pub fn server(&self) -> &ServerHandle {
        self.server.as_ref().unwrap()
    }

    /// A connected client, not yet negotiated.
    pub fn raw_client(&self) -> Client {
        let ep: guest_shim::endpoint::Endpoint = format!("tcp:{}", self.addr).parse().unwrap();
        let c = Client::connect(&ep).unwrap();
        c.set_timeout(Some(Duration::from_secs(20)));
        c
    }

    /// A client after Tversion.
    pub fn client(&self, version: &str) -> Client {
        let c = self.raw_client();
        c.handshake(65536, version).unwrap();
        c
    }

    /// A 9P2000.L client attached to /default as `uid` on fid [`ROOT`].
    pub fn attach(&self, uid: u32) -> Client {
        let c = self.client("9P2000.L");
        c.attach(ROOT, Fid::NOFID, "user", "/default", uid).unwrap();
        c
    }

    /// A 9P2000.u client attached to /default as `uid` on fid [`ROOT`].
    pub fn attach_u(&self, uid: u32) -> Client {
        let c = self.client("9P2000.u");
        c.attach(ROOT, Fid::NOFID, "user", "/default", uid).unwrap();
        c
    }

    /// Stops the server and starts a new one on the same store.
    pub fn restart(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
        let server = Server::start(config(self.dir.path(), self.max_fids)).unwrap();
        self.addr = server.tcp_addr().unwrap();
        self.server = Some(server);
    }

    /// Stops the server and checks the store.
    pub fn check_clean(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
        let report = envoy_storage::check::check(self.dir.path());
        assert!(report.is_clean(), "store not clean:\n{report}");
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.check_clean();
        }
    }
}

/// The errno of a failed call.
pub fn errno<T: std::fmt::Debug>(r: Result<T, ClientError>) -> u32 {
    match r {
        Err(e) => e
            .errno()
            .unwrap_or_else(|| panic!("not a server error: {e}")),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

/// O_RDWR | O_CREAT style flags.
pub const O_RDONLY: u32 = 0;
pub const O_WRONLY: u32 = 1;
pub const O_RDWR: u32 = 2;
pub const O_TRUNC: u32 = 0o1000;

/// Creates `name` under directory fid `dir` (walked into a fresh fid), writes `data`, clunks.
pub fn create_file(c: &Client, dir: Fid, name: &str, data: &[u8]) {
    let f = c.alloc_fid();
    c.walk(dir, f, &[]).unwrap();
    c.lcreate(f, name, O_RDWR, 0o644, 0).unwrap();
    if !data.is_empty() {
        c.write_all(f, 0, data).unwrap();
    }
    c.clunk(f).unwrap();
}

/// Reads the whole file at `path` (relative to fid `dir`).
pub fn read_file(c: &Client, dir: Fid, path: &str) -> Result<Vec<u8>, ClientError> {
    let f = c.alloc_fid();
    c.walk_path(dir, f, path)?;
    let r = c.lopen(f, O_RDONLY).and_then(|_| c.read_all(f));
    c.clunk(f)?;
    r
}

/// Names in directory `path` (without . and ..).
pub fn list(c: &Client, dir: Fid, path: &str) -> Vec<String> {
    let f = c.alloc_fid();
    c.walk_path(dir, f, path).unwrap();
    c.lopen(f, O_RDONLY).unwrap();
    let mut v: Vec<String> = c
        .readdir_all(f)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .filter(|n| n != "." && n != "..")
        .collect();
    c.clunk(f).unwrap();
    v.sort();
    v
}
