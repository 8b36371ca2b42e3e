//! `envoy-shim init`: the shim as the init of an initramfs, booting a guest whose root file
//! system is an Envoy image.
//!
//! The initramfs holds the kernel modules, a tiny `/init` script that loads them (the shim
//! loads nothing itself; see `scripts/guest/build-template.sh`) and `exec`s
//! `envoy-shim init`, which then runs as PID 1:
//!
//! ```text
//! 1. mount /proc, /sys, /dev (devtmpfs)         (already mounted: left as they are)
//! 2. read the kernel command line               envoy.transport= envoy.image= envoy.init= ...
//! 3. connect to the host                        retried until envoy.wait seconds passed
//! 4. socketpair(); fork()
//!      child  "envoy-relay": relays the pair's   parent (PID 1): mount("envoy", "/newroot", "9p",
//!      one end to the host for the life of the    "trans=fd,rfdno=N,wfdno=N,version=9p2000.L,
//!      guest (same code as `envoy-shim mount`)     aname=IMAGE,msize=M[,opts]")
//! 5.                                            move /dev, /proc, /sys below /newroot
//! 6.                                            chdir /newroot; mount --move . /; chroot .
//! 7.                                            exec envoy.init (default /sbin/init)
//! ```
//!
//! The relay must outlive the exec, so it is a separate process. It keeps the initramfs as its
//! root directory (the old rootfs stays mounted underneath the new `/`, holding the relay's
//! binary; nothing else refers to it), ignores SIGTERM, SIGINT and SIGHUP (an init's
//! shutdown sends SIGTERM to every process before it unmounts or remounts the root; the relay
//! must still be there then) and dies only by SIGKILL in the last step of a shutdown, after the
//! file system was synced. It is a child of PID 1, so the real init reaps it.
//!
//! With the default `cache=none` every write reaches the host before the guest's `write(2)`
//! returns, so losing the relay at power-off loses nothing; with `envoy.opts=cache=loose` the
//! guest's shutdown must `sync` (busybox init and systemd both do) before its final kill.
//!
//! # Kernel command line
//!
//! | parameter | meaning | default |
//! |---|---|---|
//! | `envoy.transport=` | the host: `serial:NAME` (virtio-serial port name, or a `/dev/...` path), `serial-name:NAME`, `tcp:IP:PORT`, `vsock:CID:PORT`, `unix:PATH` | `serial:envoy` |
//! | `envoy.image=` | the image to attach (aname), e.g. `/guests/g1` | required |
//! | `envoy.init=` | the program to run as init in the new root | `/sbin/init` |
//! | `envoy.version=` | 9P dialect | `9p2000.L` |
//! | `envoy.msize=` | msize offered | 524288 |
//! | `envoy.opts=` | extra 9p mount options, `,`-separated (`cache=loose`, `ro`, ...) | none |
//! | `envoy.wait=` | seconds to keep retrying the connection | 10 |
//! | `envoy.onfail=` | after a failure: `poweroff`, `halt` (stop and keep the message on screen) or `shell` (`/bin/sh` of the initramfs) | `poweroff` |
//!
//! Failures never panic: they print `envoy-shim init: cannot boot: WHY` on the console and do
//! what `envoy.onfail` says (PID 1 must not exit: the kernel would panic).

use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::MsFlags;
use thiserror::Error;

use crate::endpoint::{ConnectError, Connection, Endpoint, EndpointParseError};
use crate::mount::{mount_9p, KernelVersion, MountConfig, MountError};
use crate::relay::{run_fresh_session, PersistentUpstream, DEFAULT_MAX_MSIZE};

/// Where the image is mounted before it becomes `/`.
pub const NEW_ROOT: &str = "/newroot";

/// What to do after a failed boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFail {
    /// Power the machine off (the message stays in the console log).
    Poweroff,
    /// Stop, keeping the message on the screen.
    Halt,
    /// Run the initramfs's `/bin/sh` on the console.
    Shell,
}

/// The boot parameters from the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    /// The host.
    pub transport: Endpoint,
    /// The mount: image (aname), dialect, msize, options.
    pub mount: MountConfig,
    /// The init to exec in the new root.
    pub init: PathBuf,
    /// How long to retry connecting.
    pub wait: Duration,
    /// What to do after a failure.
    pub on_fail: OnFail,
}

/// Why the guest could not boot, as one sentence for the console.
#[derive(Debug, Error)]
pub enum InitError {
    /// A command-line parameter is missing or malformed.
    #[error("kernel parameter {param}: {why}")]
    Param {
        /// The parameter.
        param: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A transport that does not parse.
    #[error("kernel parameter envoy.transport: {0}")]
    Transport(#[from] EndpointParseError),
    /// The host never answered.
    #[error("cannot reach the host after {secs} s: {source} (is envoyd running, and is the transport configured on the VM?)")]
    Connect {
        /// How long we tried.
        secs: u64,
        /// The last failure.
        #[source]
        source: ConnectError,
    },
    /// The 9P mount failed.
    #[error("{0}")]
    Mount(#[from] MountError),
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The image has no init.
    #[error("the image {image} has no {init} (is it a root file system? set envoy.init= to another program)")]
    NoInit {
        /// The image.
        image: String,
        /// The init looked for.
        init: String,
    },
}

fn sys(what: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> InitError {
    let what = what.into();
    move |e| InitError::Sys {
        what,
        source: e.into(),
    }
}

/// Parses the `envoy.*` parameters of a kernel command line (other words are ignored).
pub fn parse_cmdline(cmdline: &str) -> Result<BootConfig, InitError> {
    let mut transport = None;
    let mut image = None;
    let mut init = None;
    let mut version = KernelVersion::P2000L;
    let mut msize = 512 * 1024;
    let mut opts = Vec::new();
    let mut wait = Duration::from_secs(10);
    let mut on_fail = OnFail::Poweroff;
    for word in cmdline.split_ascii_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        match key {
            "envoy.transport" => transport = Some(parse_transport(value)?),
            "envoy.image" => image = Some(value.to_owned()),
            "envoy.init" => init = Some(PathBuf::from(value)),
            "envoy.version" => version = value.parse()?,
            "envoy.msize" => {
                msize = value.parse().map_err(|_| InitError::Param {
                    param: "envoy.msize",
                    why: format!("{value:?} is not a number"),
                })?
            }
            "envoy.opts" => opts.extend(crate::mount::split_opts(value)),
            "envoy.wait" => {
                let secs: u64 = value.parse().map_err(|_| InitError::Param {
                    param: "envoy.wait",
                    why: format!("{value:?} is not a number of seconds"),
                })?;
                wait = Duration::from_secs(secs);
            }
            "envoy.onfail" => {
                on_fail = match value {
                    "poweroff" => OnFail::Poweroff,
                    "halt" => OnFail::Halt,
                    "shell" => OnFail::Shell,
                    _ => {
                        return Err(InitError::Param {
                            param: "envoy.onfail",
                            why: format!("{value:?}: use poweroff, halt or shell"),
                        })
                    }
                }
            }
            _ => {}
        }
    }
    let image = image.ok_or(InitError::Param {
        param: "envoy.image",
        why: "missing: name the image to boot, e.g. envoy.image=/guests/g1".into(),
    })?;
    let init = init.unwrap_or_else(|| PathBuf::from("/sbin/init"));
    if !init.is_absolute() {
        return Err(InitError::Param {
            param: "envoy.init",
            why: format!("{} is not an absolute path", init.display()),
        });
    }
    let mount = MountConfig {
        aname: image,
        version,
        msize,
        opts,
    };
    // Catch bad options before anything is mounted.
    mount.plan(0, 0)?;
    Ok(BootConfig {
        transport: transport.unwrap_or_else(|| Endpoint::SerialName("envoy".into())),
        mount,
        init,
        wait,
        on_fail,
    })
}

/// `serial:NAME` with a bare name means the virtio-serial port of that name; with a path, the
/// device; everything else as [`Endpoint`] parses it.
fn parse_transport(value: &str) -> Result<Endpoint, InitError> {
    if let Some(name) = value.strip_prefix("serial:") {
        if !name.is_empty() && !name.contains('/') {
            return Ok(Endpoint::SerialName(name.into()));
        }
    }
    Ok(value.parse()?)
}

/// Whether `path` is a mount point (its device differs from its parent's).
fn is_mountpoint(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let parent = path.parent().unwrap_or(Path::new("/"));
    match (std::fs::metadata(path), std::fs::metadata(parent)) {
        (Ok(a), Ok(b)) => a.dev() != b.dev(),
        _ => false,
    }
}

/// Mounts `fstype` at `target` unless something is mounted there already (the initramfs's
/// `/init` script may have done it; mounting again would stack a second mount).
fn mount_early(fstype: &str, target: &str) -> Result<(), InitError> {
    let _ = std::fs::create_dir_all(target);
    if is_mountpoint(Path::new(target)) {
        return Ok(());
    }
    nix::mount::mount(
        Some(fstype),
        target,
        Some(fstype),
        MsFlags::MS_NOSUID,
        None::<&str>,
    )
    .map_err(sys(format!("cannot mount {fstype} on {target}")))
}

/// Connects to the host, retrying until `wait` has passed (the port or the network may come up
/// after us).
fn connect(ep: &Endpoint, wait: Duration) -> Result<Connection, InitError> {
    let start = Instant::now();
    loop {
        match ep.connect() {
            Ok(c) => return Ok(c),
            Err(e) if start.elapsed() >= wait => {
                return Err(InitError::Connect {
                    secs: wait.as_secs(),
                    source: e,
                })
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Starts the relay process: a child that relays `down` to `up` for the life of the guest.
/// Returns in the parent only.
fn spawn_relay(
    up: Connection,
    down: Connection,
    persistent: bool,
    cap: u32,
) -> Result<(), InitError> {
    // SAFETY: called before this process starts any thread, so the child may run arbitrary
    // code; it never returns into the caller (it exits).
    match unsafe { nix::unistd::fork() }.map_err(sys("cannot fork the relay"))? {
        nix::unistd::ForkResult::Parent { .. } => Ok(()),
        nix::unistd::ForkResult::Child => {
            relay_child(up, down, persistent, cap);
            std::process::exit(0);
        }
    }
}

fn relay_child(up: Connection, down: Connection, persistent: bool, cap: u32) {
    use nix::sys::signal::{signal, SigHandler, Signal};
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: SIG_IGN installs no handler code.
        let _ = unsafe { signal(s, SigHandler::SigIgn) };
    }
    // `ps` shows "envoy-relay".
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe {
        libc::prctl(
            libc::PR_SET_NAME,
            c"envoy-relay".as_ptr() as libc::c_ulong,
            0,
            0,
            0,
        );
    }
    let _ = std::env::set_current_dir("/");
    let report = if persistent {
        match PersistentUpstream::start(up, cap) {
            Ok(p) => p.run_session(down),
            Err(e) => {
                eprintln!("envoy-relay: cannot start the relay: {e}");
                return;
            }
        }
    } else {
        run_fresh_session(down, up, cap)
    };
    eprintln!(
        "envoy-relay: the root file system's session ended ({} frames up, {} down, {})",
        report.frames_up,
        report.frames_down,
        if report.ended_by_host {
            "the host closed it: the guest's root file system no longer works"
        } else {
            "unmounted"
        }
    );
}

/// Boots: everything from the early mounts to the exec of the real init. Returns only on
/// failure.
pub fn boot(cfg: &BootConfig) -> Result<Infallible, InitError> {
    let t0 = Instant::now();
    let cap = cfg.mount.msize.max(DEFAULT_MAX_MSIZE);
    let up = connect(&cfg.transport, cfg.wait)?;
    let (kernel_end, relay_end) = UnixStream::pair().map_err(|source| InitError::Sys {
        what: "cannot create a socketpair".into(),
        source,
    })?;
    let down = Connection::from_unix(relay_end).map_err(|source| InitError::Sys {
        what: "cannot set up the socketpair".into(),
        source,
    })?;
    // The relay runs before mount(2): the kernel sends Tversion and Tattach inside the call.
    spawn_relay(up, down, cfg.transport.is_persistent_stream(), cap)?;
    std::fs::create_dir_all(NEW_ROOT).map_err(|source| InitError::Sys {
        what: format!("cannot create {NEW_ROOT}"),
        source,
    })?;
    let fd = kernel_end.as_raw_fd();
    let plan = cfg.mount.plan(fd, fd)?;
    mount_9p(Path::new(NEW_ROOT), &plan)?;
    drop(kernel_end);
    let init_in_new = Path::new(NEW_ROOT).join(cfg.init.strip_prefix("/").unwrap_or(&cfg.init));
    if std::fs::symlink_metadata(&init_in_new).is_err() {
        return Err(InitError::NoInit {
            image: cfg.mount.aname.clone(),
            init: cfg.init.display().to_string(),
        });
    }
    eprintln!(
        "envoy-shim init: root {} mounted over {} in {} ms; starting {}",
        cfg.mount.aname,
        cfg.transport,
        t0.elapsed().as_millis(),
        cfg.init.display()
    );
    switch_root(Path::new(NEW_ROOT))?;
    exec_init(&cfg.init)
}

/// Moves the early mounts into `new`, makes `new` the root (`MS_MOVE` + `chroot`) and enters
/// it. The old rootfs (the initramfs) stays underneath: the relay runs from it.
fn switch_root(new: &Path) -> Result<(), InitError> {
    for m in ["/dev", "/proc", "/sys"] {
        let target = new.join(&m[1..]);
        if !target.is_dir() {
            // The image has no such directory: leave the mount where it is (invisible).
            continue;
        }
        nix::mount::mount(
            Some(m),
            &target,
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .map_err(sys(format!("cannot move {m} to {}", target.display())))?;
    }
    nix::unistd::chdir(new).map_err(sys(format!("cannot enter {}", new.display())))?;
    nix::mount::mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(sys("cannot move the new root onto /"))?;
    nix::unistd::chroot(".").map_err(sys("cannot chroot into the new root"))?;
    nix::unistd::chdir("/").map_err(sys("cannot enter the new root"))?;
    Ok(())
}

fn exec_init(init: &Path) -> Result<Infallible, InitError> {
    let prog = CString::new(init.as_os_str().as_encoded_bytes()).map_err(|_| InitError::Param {
        param: "envoy.init",
        why: "contains a NUL byte".into(),
    })?;
    let env = [
        c"PATH=/sbin:/usr/sbin:/bin:/usr/bin",
        c"HOME=/",
        c"TERM=linux",
    ];
    nix::unistd::execve(&prog, &[prog.as_c_str()], &env)
        .map_err(sys(format!("cannot execute {}", init.display())))
}

/// Reports a failed boot on the console and does what `on_fail` says. Never returns (PID 1
/// must not exit).
pub fn fail(err: &InitError, on_fail: OnFail) -> ! {
    eprintln!("envoy-shim init: cannot boot: {err}");
    let mut next = on_fail;
    loop {
        match next {
            OnFail::Poweroff => {
                eprintln!("envoy-shim init: powering off (envoy.onfail=halt keeps the machine up)");
                nix::unistd::sync();
                // SAFETY: reboot(2) takes no pointers; it returns only on failure.
                let _ = unsafe { libc::reboot(libc::RB_POWER_OFF) };
                next = OnFail::Halt;
            }
            OnFail::Shell => {
                eprintln!(
                    "envoy-shim init: starting /bin/sh of the initramfs; exit it to power off"
                );
                match std::process::Command::new("/bin/sh").status() {
                    Ok(_) => next = OnFail::Poweroff,
                    Err(e) => {
                        eprintln!("envoy-shim init: cannot run /bin/sh: {e}");
                        next = OnFail::Halt;
                    }
                }
            }
            OnFail::Halt => {
                eprintln!("envoy-shim init: halted");
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
        }
    }
}

/// `envoy-shim init`: early mounts, the command line, [`boot`]; on failure [`fail`].
pub fn run() -> ! {
    let early = mount_early("proc", "/proc")
        .and_then(|()| mount_early("sysfs", "/sys"))
        .and_then(|()| mount_early("devtmpfs", "/dev"));
    if let Err(e) = early {
        fail(&e, OnFail::Poweroff);
    }
    let cmdline = match std::fs::read_to_string("/proc/cmdline") {
        Ok(s) => s,
        Err(source) => fail(
            &InitError::Sys {
                what: "cannot read /proc/cmdline".into(),
                source,
            },
            OnFail::Poweroff,
        ),
    };
    let cfg = match parse_cmdline(&cmdline) {
        Ok(c) => c,
        Err(e) => fail(&e, OnFail::Poweroff),
    };
    match boot(&cfg) {
        Ok(never) => match never {},
        Err(e) => fail(&e, cfg.on_fail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_full_parses_every_parameter() {
        let c = parse_cmdline(
            "console=ttyS0 quiet envoy.transport=serial:envoy envoy.image=/guests/g1 \
             envoy.init=/bin/init envoy.msize=262144 envoy.opts=cache=loose,noatime \
             envoy.wait=3 envoy.onfail=halt root=/dev/null",
        )
        .unwrap();
        assert_eq!(c.transport, Endpoint::SerialName("envoy".into()));
        assert_eq!(c.mount.aname, "/guests/g1");
        assert_eq!(c.mount.msize, 262144);
        assert_eq!(c.mount.opts, vec!["cache=loose", "noatime"]);
        assert_eq!(c.init, PathBuf::from("/bin/init"));
        assert_eq!(c.wait, Duration::from_secs(3));
        assert_eq!(c.on_fail, OnFail::Halt);
        assert!(c
            .mount
            .plan(4, 4)
            .unwrap()
            .data
            .ends_with("aname=/guests/g1,msize=262144,cache=loose"));
    }

    #[test]
    fn cmdline_defaults_serial_envoy_sbin_init_poweroff() {
        let c = parse_cmdline("envoy.image=/t").unwrap();
        assert_eq!(c.transport, Endpoint::SerialName("envoy".into()));
        assert_eq!(c.init, PathBuf::from("/sbin/init"));
        assert_eq!(c.on_fail, OnFail::Poweroff);
        assert_eq!(c.mount.version, KernelVersion::P2000L);
    }

    #[test]
    fn cmdline_transport_forms_parse() {
        let t = |s: &str| {
            parse_cmdline(&format!("envoy.image=/x envoy.transport={s}")).map(|c| c.transport)
        };
        assert_eq!(
            t("serial:/dev/vport0p1").unwrap(),
            Endpoint::Serial("/dev/vport0p1".into())
        );
        assert_eq!(
            t("serial-name:e").unwrap(),
            Endpoint::SerialName("e".into())
        );
        assert_eq!(
            t("tcp:10.0.2.2:5640").unwrap(),
            Endpoint::Tcp {
                host: "10.0.2.2".into(),
                port: 5640
            }
        );
        assert_eq!(
            t("vsock:2:5640").unwrap(),
            Endpoint::Vsock { cid: 2, port: 5640 }
        );
        assert!(matches!(t("pigeon:1"), Err(InitError::Transport(_))));
    }

    #[test]
    fn cmdline_missing_image_or_bad_values_explained() {
        let e = parse_cmdline("console=ttyS0").unwrap_err().to_string();
        assert!(e.contains("envoy.image"), "{e}");
        let e = parse_cmdline("envoy.image=/x envoy.init=sbin/init")
            .unwrap_err()
            .to_string();
        assert!(e.contains("absolute"), "{e}");
        let e = parse_cmdline("envoy.image=/x envoy.onfail=reboot")
            .unwrap_err()
            .to_string();
        assert!(e.contains("poweroff, halt or shell"), "{e}");
        let e = parse_cmdline("envoy.image=/x envoy.opts=trans=tcp")
            .unwrap_err()
            .to_string();
        assert!(e.contains("set by envoy-shim"), "{e}");
        assert!(parse_cmdline("envoy.image=/x envoy.msize=big").is_err());
    }

    #[test]
    fn connect_unreachable_host_gives_up_after_wait() {
        let dir = tempfile::tempdir().unwrap();
        let ep = Endpoint::Unix(dir.path().join("nobody-listens"));
        let t = Instant::now();
        let e = connect(&ep, Duration::from_millis(300)).unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(300));
        assert!(e.to_string().contains("is envoyd running"), "{e}");
    }
}
