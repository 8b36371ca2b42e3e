//! Starting and stopping envoyd: open the store and namespace, spawn the worker pool and one
//! accept thread per listener, and shut down in order (stop accepting, close connections,
//! let in-flight requests finish, sync the store).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use envoy_storage::{EngineChoice, ObjectStore, StoreOptions};

use crate::config::{Config, Endpoint};
use crate::error::FsError;
use crate::namespace::node::lock;
use crate::namespace::Fs;
use crate::ops::lock::LockTable;
use crate::session::{self, Job};
use crate::territory::Territories;
use crate::transport::ring::RingListener;
use crate::transport::vsock::{HybridVsockListener, VsockListener};
use crate::transport::{tcp::TcpListener, unix::UnixListener, Listener};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store would not open.
    #[error("opening the object store in {path}")]
    Store {
        /// The directory.
        path: String,
        /// Cause.
        #[source]
        source: envoy_storage::StoreError,
    },
    /// The namespace would not open.
    #[error("opening the namespace")]
    Namespace(#[source] FsError),
    /// The access-control files could not be set up.
    #[error("setting up credentials")]
    Access(#[source] crate::access::AccessError),
    /// A listener would not bind.
    #[error("listening on {endpoint}")]
    Listen {
        /// The endpoint.
        endpoint: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Image recovery failed.
    #[error("opening the image manager")]
    Images(#[source] crate::images::ImageError),
    /// A thread would not start.
    #[error("spawning a thread")]
    Spawn(#[source] std::io::Error),
    /// The control socket would not open.
    #[error("opening the control socket")]
    Control(#[source] crate::control::server::ControlStartError),
}

type ShutdownFn = Arc<dyn Fn() + Send + Sync>;

/// State shared by every connection and worker.
pub struct Shared {
    /// Validated configuration.
    pub config: Config,
    /// The territory table (and through it the namespace).
    pub territories: Territories,
    /// POSIX byte-range locks.
    pub locks: LockTable,
    /// Images, snapshots and forks ([`crate::images`]).
    pub images: Arc<crate::images::Images>,
    /// Credentials: who may attach what ([`crate::access`]).
    pub access: Arc<crate::access::Access>,
    conns: Mutex<HashMap<u64, ShutdownFn>>,
    /// Live connections, for the control socket's listings.
    sessions: Mutex<HashMap<u64, std::sync::Weak<session::Conn>>>,
    /// Per-request-type counts and latency histograms (the worker loop records them).
    pub op_stats: crate::stats::OpStats,
    /// When the server started.
    pub started: std::time::SystemTime,
    endpoints: std::sync::OnceLock<Vec<Endpoint>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .finish()
    }
}

/// Removes a connection from the registry when dropped.
pub struct ConnRegistration {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for ConnRegistration {
    fn drop(&mut self) {
        lock(&self.shared.conns).remove(&self.id);
        lock(&self.shared.sessions).remove(&self.id);
    }
}

impl Shared {
    /// The namespace.
    pub fn fs(&self) -> &Arc<Fs> {
        self.territories.fs()
    }

    /// Registers a live connection so shutdown can close it (and the control socket list it).
    pub fn register_conn(
        self: &Arc<Self>,
        conn: &Arc<session::Conn>,
        shutdown: ShutdownFn,
    ) -> ConnRegistration {
        let id = conn.id;
        lock(&self.conns).insert(id, shutdown);
        lock(&self.sessions).insert(id, Arc::downgrade(conn));
        ConnRegistration {
            shared: Arc::clone(self),
            id,
        }
    }

    /// Number of live connections.
    pub fn connection_count(&self) -> usize {
        lock(&self.conns).len()
    }

    /// The live connections.
    pub fn sessions(&self) -> Vec<Arc<session::Conn>> {
        lock(&self.sessions)
            .values()
            .filter_map(std::sync::Weak::upgrade)
            .collect()
    }

    /// The endpoints actually bound (empty until the listeners are up).
    pub fn endpoints(&self) -> &[Endpoint] {
        self.endpoints.get().map_or(&[], Vec::as_slice)
    }
}

/// Server counters (the control socket will report them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Live connections.
    pub connections: u64,
    /// Memory cache counters: directory and file-data hits and misses, evictions, bytes.
    pub cache: crate::cache::CacheStats,
    /// Data writes served.
    pub writes: u64,
    /// Byte-range locks held.
    pub locks: u64,
}

/// Entry point.
#[derive(Debug)]
pub struct Server;

/// A running server.
pub struct ServerHandle {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    endpoints: Vec<Endpoint>,
    acceptors: Vec<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    pool: Option<Sender<Job>>,
    conn_threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    control: Option<crate::control::server::ControlServer>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

fn worker(rx: Receiver<Job>) {
    while let Ok(job) = rx.recv() {
        session::execute(&job.conn, job.tag, job.msg);
    }
}

impl Server {
    /// Opens the store in `config.data`, the namespace, and starts serving on every endpoint
    /// of `config.listen` (a `tcp:` port 0 picks a free port; see [`ServerHandle::endpoints`]).
    pub fn start(config: Config) -> Result<ServerHandle, StartError> {
        let store = ObjectStore::open_or_create(
            &config.data,
            StoreOptions {
                engine: EngineChoice::Uring,
                ..StoreOptions::default()
            },
        )
        .map_err(|source| StartError::Store {
            path: config.data.display().to_string(),
            source,
        })?;
        let fs = Fs::open(Arc::new(store), config.cache_bytes).map_err(StartError::Namespace)?;
        let images = crate::images::Images::open(Arc::clone(&fs)).map_err(StartError::Images)?;
        let access = crate::access::Access::open(Arc::clone(&fs)).map_err(StartError::Access)?;
        let shared = Arc::new(Shared {
            access,
            territories: Territories::single(fs),
            locks: LockTable::default(),
            images,
            conns: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            op_stats: crate::stats::OpStats::default(),
            started: std::time::SystemTime::now(),
            endpoints: std::sync::OnceLock::new(),
            config: config.clone(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let mut workers = Vec::new();
        for i in 0..config.workers {
            let rx = rx.clone();
            let h = std::thread::Builder::new()
                .name(format!("envoyd-worker{i}"))
                .spawn(move || worker(rx))
                .map_err(StartError::Spawn)?;
            workers.push(h);
        }
        session::takeover::start(Arc::downgrade(&shared), Arc::clone(&stop))
            .map_err(StartError::Spawn)?;
        let mut listeners: Vec<Box<dyn Listener>> = Vec::new();
        let mut endpoints = Vec::new();
        for ep in &config.listen {
            let bind_err = |source| StartError::Listen {
                endpoint: ep.to_string(),
                source,
            };
            match ep {
                Endpoint::Tcp(a) => {
                    let l = TcpListener::bind(a, Arc::clone(&stop)).map_err(bind_err)?;
                    let addr = l.local_addr().map_err(bind_err)?;
                    endpoints.push(Endpoint::Tcp(addr.to_string()));
                    listeners.push(Box::new(l));
                }
                Endpoint::Unix(p) => {
                    let l = UnixListener::bind(p, Arc::clone(&stop)).map_err(bind_err)?;
                    endpoints.push(ep.clone());
                    listeners.push(Box::new(l));
                }
                Endpoint::Ring(p) => {
                    let l = RingListener::open(p, Arc::clone(&stop)).map_err(bind_err)?;
                    endpoints.push(ep.clone());
                    listeners.push(Box::new(l));
                }
                Endpoint::Vsock(port) => {
                    let l = VsockListener::bind(*port, Arc::clone(&stop)).map_err(bind_err)?;
                    endpoints.push(ep.clone());
                    listeners.push(Box::new(l));
                }
                Endpoint::VsockUds { cid, path } => {
                    let l = HybridVsockListener::bind(path, *cid, Arc::clone(&stop))
                        .map_err(bind_err)?;
                    endpoints.push(ep.clone());
                    listeners.push(Box::new(l));
                }
                Endpoint::Xen(sim) => {
                    let l = crate::transport::xen::XenListener::start(
                        sim.as_deref(),
                        config.max_msize,
                        Arc::clone(&stop),
                    )
                    .map_err(bind_err)?;
                    endpoints.push(ep.clone());
                    listeners.push(Box::new(l));
                }
            }
        }
        let _ = shared.endpoints.set(endpoints.clone());
        let control = match &config.control {
            Some(p) => Some(
                crate::control::server::ControlServer::start(p, Arc::clone(&shared))
                    .map_err(StartError::Control)?,
            ),
            None => None,
        };
        let conn_threads = Arc::new(Mutex::new(Vec::new()));
        let mut acceptors = Vec::new();
        for mut l in listeners {
            let shared = Arc::clone(&shared);
            let tx = tx.clone();
            let threads = Arc::clone(&conn_threads);
            let stop = Arc::clone(&stop);
            tracing::info!(endpoint = %l.local_desc(), "listening");
            let h = std::thread::Builder::new()
                .name("envoyd-accept".into())
                .spawn(move || loop {
                    match l.accept() {
                        Ok(Some(c)) => {
                            let shared = Arc::clone(&shared);
                            let tx = tx.clone();
                            let spawned = std::thread::Builder::new()
                                .name("envoyd-conn".into())
                                .spawn(move || session::serve(shared, c, tx));
                            match spawned {
                                Ok(h) => {
                                    let mut t = lock(&threads);
                                    t.retain(|h: &JoinHandle<()>| !h.is_finished());
                                    t.push(h);
                                }
                                Err(e) => {
                                    tracing::error!(error = %e, "cannot spawn a connection thread")
                                }
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            if stop.load(Ordering::SeqCst) {
                                break;
                            }
                            tracing::warn!(error = %e, "accept failed");
                            std::thread::sleep(std::time::Duration::from_millis(50));
                        }
                    }
                })
                .map_err(StartError::Spawn)?;
            acceptors.push(h);
        }
        Ok(ServerHandle {
            shared,
            stop,
            endpoints,
            acceptors,
            workers,
            pool: Some(tx),
            conn_threads,
            control,
        })
    }
}

impl ServerHandle {
    /// The endpoints actually bound (`tcp:` with the real port).
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The first TCP address, if any.
    pub fn tcp_addr(&self) -> Option<String> {
        self.endpoints.iter().find_map(|e| match e {
            Endpoint::Tcp(a) => Some(a.clone()),
            _ => None,
        })
    }

    /// The namespace (tests freeze links through it).
    pub fn fs(&self) -> &Arc<Fs> {
        self.shared.fs()
    }

    /// The image manager.
    pub fn images(&self) -> &Arc<crate::images::Images> {
        &self.shared.images
    }

    /// The access-control service (credential files, bindings, keys).
    pub fn access(&self) -> &Arc<crate::access::Access> {
        &self.shared.access
    }

    /// Live connections.
    pub fn connection_count(&self) -> usize {
        self.shared.connection_count()
    }

    /// Counters for the control socket.
    pub fn stats(&self) -> Stats {
        let fs = self.shared.fs();
        Stats {
            connections: self.shared.connection_count() as u64,
            cache: fs.cache_stats(),
            writes: fs.write_count(),
            locks: self.shared.locks.len() as u64,
        }
    }

    /// Orderly shutdown: stop accepting, close every connection, let in-flight requests
    /// finish, then sync the store's file system.
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        if self.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(mut c) = self.control.take() {
            c.shutdown();
        }
        for ep in &self.endpoints {
            // Wake the blocking accept().
            match ep {
                Endpoint::Tcp(a) => {
                    let _ = std::net::TcpStream::connect(a);
                }
                // Its accept re-checks the stop flag every 100 ms.
                Endpoint::Ring(_) => {}
                Endpoint::Unix(p) | Endpoint::VsockUds { path: p, .. } => {
                    let _ = std::os::unix::net::UnixStream::connect(p);
                }
                // Its accept wakes up every ACCEPT_POLL by itself.
                Endpoint::Vsock(_) => {}
                // Its accept re-checks the stop flag every 100 ms.
                Endpoint::Xen(_) => {}
            }
        }
        for h in self.acceptors.drain(..) {
            let _ = h.join();
        }
        let closers: Vec<ShutdownFn> = lock(&self.shared.conns).values().cloned().collect();
        for c in closers {
            c();
        }
        let threads: Vec<_> = lock(&self.conn_threads).drain(..).collect();
        for h in threads {
            let _ = h.join();
        }
        self.pool = None;
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
        let dir = self.shared.fs().store().dir().to_path_buf();
        match std::fs::File::open(&dir) {
            Ok(f) => {
                if let Err(e) = nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)) {
                    tracing::warn!(error = %e, "syncfs failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot open the store directory to sync"),
        }
        tracing::info!("shut down");
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop_all();
    }
}
