//! `envoy-shim`: runs inside a guest and hands a connection to the host's envoy to the guest
//! kernel's 9P client.
//!
//! ```text
//! envoy-shim relay --connect ENDPOINT --listen unix:PATH      # for mount -t 9p -o trans=unix
//! envoy-shim mount --connect ENDPOINT --aname NAME [--version 9p2000.L] [--msize N]
//!                  [--opt k=v,...] [--daemon] MOUNTPOINT       # trans=fd, relayed
//! envoy-shim init       # as PID 1 of an initramfs (also with no arguments as PID 1): mount
//!                       # the root from envoy.image= on the kernel command line, switch_root
//! ```
//!
//! Errors are one sentence on stderr and a non-zero exit status; progress is logged at info
//! level (`RUST_LOG` overrides).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use guest_shim::endpoint::{ConnectError, Connection, Endpoint};
use guest_shim::mount::{mount_9p, split_opts, KernelVersion, MountConfig, MountError};
use guest_shim::relay::{
    run_fresh_session, PersistentUpstream, RelayError, SessionReport, Upstream, DEFAULT_MAX_MSIZE,
};

#[derive(Parser, Debug)]
#[command(
    name = "envoy-shim",
    version,
    about = "Relay between the guest kernel's 9P client and the host's envoy"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Listen on a Unix socket and relay each connection to the host (one at a time).
    Relay {
        /// The host: tcp:HOST:PORT, unix:PATH, vsock:CID:PORT, serial:DEV, serial-name:NAME.
        #[arg(long)]
        connect: Endpoint,
        /// Where the guest kernel connects: unix:PATH.
        #[arg(long)]
        listen: Endpoint,
        /// Largest frame accepted in either direction.
        #[arg(long, default_value_t = DEFAULT_MAX_MSIZE)]
        max_msize: u32,
    },
    /// Mount the host's file system with the kernel's 9P client over a relayed descriptor.
    Mount {
        /// The host: tcp:HOST:PORT, unix:PATH, vsock:CID:PORT, serial:DEV, serial-name:NAME.
        #[arg(long)]
        connect: Endpoint,
        /// Tree to attach.
        #[arg(long)]
        aname: String,
        /// 9P dialect: 9p2000.L, 9p2000.u or 9p2000.
        #[arg(long, default_value = "9p2000.L")]
        version: KernelVersion,
        /// Largest message size to offer (Linux's fd transport allows up to 1 MiB).
        #[arg(long, default_value_t = 512 * 1024)]
        msize: u32,
        /// Extra mount options, comma-separated (cache=loose, ro, nosuid, ...); repeatable.
        #[arg(long = "opt")]
        opts: Vec<String>,
        /// Fork into the background once the mount succeeded (stdin, stdout and stderr of the
        /// background process go to /dev/null, or stderr to --log).
        #[arg(long)]
        daemon: bool,
        /// With --daemon: append the background relay's log to this file.
        #[arg(long, requires = "daemon")]
        log: Option<PathBuf>,
        /// Where to mount.
        mountpoint: PathBuf,
    },
    /// Boot the guest as PID 1 of an initramfs: mount the root file system from Envoy
    /// (kernel parameters envoy.transport=, envoy.image=, envoy.init=, ...), switch_root to it
    /// and keep relaying; see the guest_shim::init docs.
    Init,
}

/// What went wrong, as one sentence for the operator.
#[derive(Debug, thiserror::Error)]
enum ShimError {
    #[error("{0}{hint}", hint = connect_hint(.0))]
    Connect(ConnectError),
    #[error("{0}")]
    Relay(RelayError),
    #[error("{0}")]
    Mount(#[from] MountError),
    #[error("--listen must be unix:PATH, not {0}")]
    ListenKind(Endpoint),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the host closed the connection; the mount at {0} no longer works: unmount it and mount again")]
    HostGone(String),
    #[error("{0}")]
    Child(String),
}

impl From<RelayError> for ShimError {
    fn from(e: RelayError) -> ShimError {
        match e {
            RelayError::Connect(c) => ShimError::Connect(c),
            other => ShimError::Relay(other),
        }
    }
}

/// What to do about a failed connection, appended to its message.
fn connect_hint(e: &ConnectError) -> &'static str {
    match e {
        ConnectError::Io { .. } => "; is envoyd running and reachable from this guest?",
        ConnectError::Resolve(_) => {
            "; give an IP address (a static binary in an initramfs has no name service)"
        }
        ConnectError::NoSuchPort { .. } | ConnectError::Ivshmem(_) => "",
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ShimError {
    let what = what.into();
    move |source| ShimError::Io { what, source }
}

fn main() -> ExitCode {
    // As PID 1 without arguments (rdinit=/bin/envoy-shim): the init of an initramfs.
    if std::process::id() == 1 && std::env::args_os().len() <= 1 {
        guest_shim::init::run();
    }
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let res = match cli.cmd {
        Cmd::Init => guest_shim::init::run(),
        Cmd::Relay {
            connect,
            listen,
            max_msize,
        } => relay(&connect, &listen, max_msize),
        Cmd::Mount {
            connect,
            aname,
            version,
            msize,
            opts,
            daemon,
            log,
            mountpoint,
        } => {
            let cfg = MountConfig {
                aname,
                version,
                msize,
                opts: opts.iter().flat_map(|o| split_opts(o)).collect(),
            };
            let daemon = daemon.then_some(log);
            mount(&connect, &cfg, &mountpoint, daemon)
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("envoy-shim: {e}");
            ExitCode::FAILURE
        }
    }
}

fn log_session(r: &SessionReport) {
    tracing::info!(
        frames_up = r.frames_up,
        frames_down = r.frames_down,
        guest = %r.guest_end,
        by_host = r.ended_by_host,
        "session ended"
    );
}

fn relay(connect: &Endpoint, listen: &Endpoint, cap: u32) -> Result<(), ShimError> {
    let Endpoint::Unix(path) = listen else {
        return Err(ShimError::ListenKind(listen.clone()));
    };
    let signals = block_exit_signals()?;
    // The host side first: a serial port that cannot be opened leaves no socket file behind.
    let upstream = Upstream::new(connect, cap)?;
    let listener = bind_unix(path)?;
    let socket = path.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let sig = signals.wait();
            let _ = std::fs::remove_file(&socket);
            tracing::info!(signal = ?sig.ok(), "stopping; removed {}", socket.display());
            std::process::exit(0);
        })
        .map_err(io_err("cannot start the signal thread"))?;
    tracing::info!(%connect, listen = %path.display(), "relaying");
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                continue
            }
            Err(e) => return Err(io_err(format!("cannot accept on {}", path.display()))(e)),
        };
        let down = Connection::from_unix(stream).map_err(io_err("cannot set up the connection"))?;
        tracing::info!("guest connected");
        match upstream.serve(down, cap) {
            Ok(report) => log_session(&report),
            // The host may come back: report and wait for the next guest connection.
            Err(RelayError::Connect(e)) => tracing::error!("{e}{}", connect_hint(&e)),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Blocks SIGTERM, SIGINT and SIGHUP in this thread (and so in every thread started after it),
/// so that one thread can wait for them and clean up.
fn block_exit_signals() -> Result<nix::sys::signal::SigSet, ShimError> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(sig);
    }
    set.thread_block().map_err(|e| ShimError::Io {
        what: "cannot block signals".into(),
        source: e.into(),
    })?;
    Ok(set)
}

/// Binds `path`, replacing a stale socket file nobody listens on.
fn bind_unix(path: &Path) -> Result<UnixListener, ShimError> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(ShimError::Io {
                what: format!("cannot listen on {}", path.display()),
                source: std::io::ErrorKind::AddrInUse.into(),
            });
        }
        std::fs::remove_file(path)
            .map_err(io_err(format!("cannot remove stale {}", path.display())))?;
    }
    UnixListener::bind(path).map_err(io_err(format!("cannot listen on {}", path.display())))
}

/// In the parent after `--daemon` forked: waits for the child's verdict and exits with it.
fn await_child(status: OwnedFd) -> Result<(), ShimError> {
    let mut f = std::fs::File::from(status);
    let mut msg = String::new();
    let _ = f.read_to_string(&mut msg);
    match msg.strip_prefix("ok") {
        Some(_) => Ok(()),
        None if msg.is_empty() => Err(ShimError::Child(
            "the background relay exited before the mount completed".into(),
        )),
        None => Err(ShimError::Child(msg)),
    }
}

/// Points stdin and stdout at /dev/null and stderr at `log` (or /dev/null), so that a caller
/// capturing the output (`$(envoy-shim mount --daemon ...)`) is not held open by the relay.
fn detach_stdio(log: Option<&Path>) -> Result<(), ShimError> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(io_err("cannot open /dev/null"))?;
    let err_target = match log {
        Some(p) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(io_err(format!("cannot open log file {}", p.display())))?,
        None => null
            .try_clone()
            .map_err(io_err("cannot duplicate /dev/null"))?,
    };
    for (src, dst) in [(&null, 0), (&null, 1), (&err_target, 2)] {
        nix::unistd::dup2(src.as_raw_fd(), dst).map_err(|e| ShimError::Io {
            what: format!("cannot redirect descriptor {dst}"),
            source: e.into(),
        })?;
    }
    Ok(())
}

/// `daemon`: `None` to stay in the foreground, `Some(log)` to fork.
fn mount(
    connect: &Endpoint,
    cfg: &MountConfig,
    target: &Path,
    daemon: Option<Option<PathBuf>>,
) -> Result<(), ShimError> {
    // Check the options before anything else happens.
    cfg.plan(0, 0)?;
    // Fork before any thread exists; the parent only reports the child's verdict.
    let mut report_to: Option<std::fs::File> = None;
    if let Some(log) = daemon {
        let (rx, tx) = nix::unistd::pipe().map_err(|e| ShimError::Io {
            what: "cannot create a pipe".into(),
            source: e.into(),
        })?;
        // SAFETY: the process is single-threaded here (no thread has been spawned yet), so
        // the child can run arbitrary code after fork.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Parent { .. }) => {
                drop(tx);
                return await_child(rx);
            }
            Ok(nix::unistd::ForkResult::Child) => {
                drop(rx);
                let _ = nix::unistd::setsid();
                let _ = std::env::set_current_dir("/");
                let mut tx = std::fs::File::from(tx);
                if let Err(e) = detach_stdio(log.as_deref()) {
                    let _ = tx.write_all(e.to_string().as_bytes());
                    return Err(e);
                }
                report_to = Some(tx);
            }
            Err(e) => {
                return Err(ShimError::Io {
                    what: "cannot fork".into(),
                    source: e.into(),
                })
            }
        }
    }
    let res = mount_and_relay(connect, cfg, target, &mut report_to);
    if let (Err(e), Some(mut f)) = (&res, report_to) {
        // The parent prints it; nobody may be reading this process's stderr.
        let _ = f.write_all(e.to_string().as_bytes());
    }
    res
}

fn mount_and_relay(
    connect: &Endpoint,
    cfg: &MountConfig,
    target: &Path,
    report_to: &mut Option<std::fs::File>,
) -> Result<(), ShimError> {
    let cap = cfg.msize.max(DEFAULT_MAX_MSIZE);
    let up = connect.connect().map_err(RelayError::from)?;
    let (kernel_end, relay_end) =
        UnixStream::pair().map_err(io_err("cannot create a socketpair"))?;
    let down = Connection::from_unix(relay_end).map_err(io_err("cannot set up the socketpair"))?;
    // The relay runs before mount(2): the kernel sends Tversion and Tattach inside the call.
    let session = if connect.is_persistent_stream() {
        let p = PersistentUpstream::start(up, cap).map_err(io_err("cannot start the relay"))?;
        std::thread::Builder::new()
            .name("relay".into())
            .spawn(move || p.run_session(down))
    } else {
        std::thread::Builder::new()
            .name("relay".into())
            .spawn(move || run_fresh_session(down, up, cap))
    }
    .map_err(io_err("cannot start the relay thread"))?;

    let fd = kernel_end.as_raw_fd();
    let plan = cfg.plan(fd, fd)?;
    tracing::info!(target = %target.display(), options = %plan.data, "mounting");
    let mounted = mount_9p(target, &plan);
    // The kernel holds its own reference now (or none, if the mount failed).
    drop(kernel_end);
    if let Err(e) = mounted {
        let _ = session.join();
        return Err(e.into());
    }
    tracing::info!(target = %target.display(), %connect, "mounted; relaying until unmounted");
    if let Some(mut f) = report_to.take() {
        let _ = f.write_all(b"ok");
    }
    let report = session
        .join()
        .map_err(|_| ShimError::Child("the relay thread panicked".into()))?;
    log_session(&report);
    if report.ended_by_host {
        return Err(ShimError::HostGone(target.display().to_string()));
    }
    Ok(())
}
