//! Mounting with the kernel's own 9P client over a file descriptor (`trans=fd`).
//!
//! `envoy-shim mount` creates a socketpair, starts relaying one end to the host
//! ([`crate::relay`]), and calls
//!
//! ```text
//! mount("envoy", MOUNTPOINT, "9p", flags,
//!       "trans=fd,rfdno=N,wfdno=N,version=9p2000.L,aname=NAME,msize=M[,extra...]")
//! ```
//!
//! with `N` the other end. The kernel takes its own reference to that descriptor during
//! `mount(2)` and runs `Tversion` and `Tattach` before the call returns, so the relay must be
//! running first. Afterwards the shim closes its copy; the kernel closes its one on unmount,
//! which ends the relay.
//!
//! Linux's 9p option parser splits on `,` with no escaping, so values containing `,` cannot be
//! passed; they are rejected. Generic mount options in `--opt` (`ro`, `nosuid`, …) become
//! `mount(2)` flags, everything else goes into the 9p data string.

use std::os::fd::RawFd;
use std::path::Path;

use nix::mount::MsFlags;
use thiserror::Error;

/// The 9P dialect the kernel should speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelVersion {
    /// `9p2000.L`.
    P2000L,
    /// `9p2000.u`.
    P2000u,
    /// `9p2000`.
    P2000,
}

impl KernelVersion {
    /// The spelling Linux's `version=` option expects (compared with `strcmp`).
    pub fn kernel_name(self) -> &'static str {
        match self {
            KernelVersion::P2000L => "9p2000.L",
            KernelVersion::P2000u => "9p2000.u",
            KernelVersion::P2000 => "9p2000",
        }
    }
}

impl std::str::FromStr for KernelVersion {
    type Err = MountError;
    fn from_str(s: &str) -> Result<KernelVersion, MountError> {
        match s.to_ascii_lowercase().as_str() {
            "9p2000.l" => Ok(KernelVersion::P2000L),
            "9p2000.u" => Ok(KernelVersion::P2000u),
            "9p2000" => Ok(KernelVersion::P2000),
            _ => Err(MountError::BadVersion(s.into())),
        }
    }
}

/// What to mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountConfig {
    /// Tree to attach (`aname`).
    pub aname: String,
    /// Protocol dialect.
    pub version: KernelVersion,
    /// msize to offer.
    pub msize: u32,
    /// Extra options, `k=v` or flags, already split on `,`.
    pub opts: Vec<String>,
}

/// The arguments for `mount(2)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPlan {
    /// `MS_*` flags from generic options.
    pub flags: MsFlags,
    /// The 9p data string.
    pub data: String,
}

/// A mount that cannot be planned or performed.
#[derive(Debug, Error)]
pub enum MountError {
    /// Unknown `--version`.
    #[error("unknown 9P version {0:?}: use 9p2000.L, 9p2000.u or 9p2000")]
    BadVersion(String),
    /// A value the kernel's option parser cannot carry.
    #[error("{what} {value:?} contains ',' or NUL, which 9p mount options cannot carry")]
    Unrepresentable {
        /// Which value.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// An `--opt` that the shim sets itself.
    #[error(
        "option {0:?} is set by envoy-shim itself; use the matching command-line flag instead"
    )]
    Reserved(String),
    /// msize too small for 9P.
    #[error("msize {0} is too small: 9P needs at least 4096")]
    SmallMsize(u32),
    /// `mount(2)` failed.
    #[error("mount(2) of 9p at {target} failed: {errno}; {hint}")]
    Syscall {
        /// The mount point.
        target: String,
        /// The error.
        #[source]
        errno: nix::errno::Errno,
        /// What to check.
        hint: &'static str,
    },
}

/// Options the shim fills in itself.
const RESERVED: &[&str] = &["trans", "rfdno", "wfdno", "version", "aname", "msize"];

fn flag_of(opt: &str) -> Option<MsFlags> {
    Some(match opt {
        "ro" => MsFlags::MS_RDONLY,
        "rw" => MsFlags::empty(),
        "nosuid" => MsFlags::MS_NOSUID,
        "nodev" => MsFlags::MS_NODEV,
        "noexec" => MsFlags::MS_NOEXEC,
        "sync" => MsFlags::MS_SYNCHRONOUS,
        "dirsync" => MsFlags::MS_DIRSYNC,
        "noatime" => MsFlags::MS_NOATIME,
        "nodiratime" => MsFlags::MS_NODIRATIME,
        "relatime" => MsFlags::MS_RELATIME,
        _ => return None,
    })
}

fn check_value(what: &'static str, value: &str) -> Result<(), MountError> {
    if value.contains(',') || value.contains('\0') {
        return Err(MountError::Unrepresentable {
            what,
            value: value.into(),
        });
    }
    Ok(())
}

/// Splits a `--opt` argument (`k=v,flag,...`) into options, dropping empty pieces.
pub fn split_opts(arg: &str) -> Vec<String> {
    arg.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl MountConfig {
    /// The flags and data string for a mount reading `rfd` and writing `wfd`.
    pub fn plan(&self, rfd: RawFd, wfd: RawFd) -> Result<MountPlan, MountError> {
        if self.msize < 4096 {
            return Err(MountError::SmallMsize(self.msize));
        }
        check_value("aname", &self.aname)?;
        let mut data = format!(
            "trans=fd,rfdno={rfd},wfdno={wfd},version={},aname={},msize={}",
            self.version.kernel_name(),
            self.aname,
            self.msize
        );
        let mut flags = MsFlags::empty();
        for opt in &self.opts {
            check_value("option", opt)?;
            let key = opt.split_once('=').map_or(opt.as_str(), |(k, _)| k);
            if RESERVED.contains(&key) {
                return Err(MountError::Reserved(opt.clone()));
            }
            match flag_of(opt) {
                Some(f) => flags |= f,
                None => {
                    data.push(',');
                    data.push_str(opt);
                }
            }
        }
        Ok(MountPlan { flags, data })
    }
}

/// What to check after `mount(2)` failed with `errno`. `root` (we run as root) and `target_dir`
/// (the mount point is a directory) tell an EPERM or ENOENT of the kernel from the server's
/// `Rlerror` to `Tattach`, which `mount(2)` returns as is.
pub fn hint(errno: nix::errno::Errno, root: bool, target_dir: bool) -> &'static str {
    use nix::errno::Errno;
    match errno {
        Errno::ENODEV => "the kernel has no 9p file system; load it (modprobe 9pnet_fd; modprobe 9p) or build with CONFIG_9P_FS and CONFIG_NET_9P_FD",
        Errno::EPERM | Errno::EACCES if !root => "mounting needs root (CAP_SYS_ADMIN)",
        Errno::ENOENT | Errno::ENOTDIR if !target_dir => "the mount point must be an existing directory",
        Errno::EPERM | Errno::EACCES | Errno::ENOENT => "the server refused the attach; check --aname and what this guest may mount",
        Errno::EINVAL => "the kernel rejected the options (check --version, --msize and --opt)",
        _ => "the server refused the attach or the connection failed; check the aname and the envoy's log",
    }
}

/// Calls `mount(2)` for a planned 9p mount.
pub fn mount_9p(target: &Path, plan: &MountPlan) -> Result<(), MountError> {
    nix::mount::mount(
        Some("envoy"),
        target,
        Some("9p"),
        plan.flags,
        Some(plan.data.as_str()),
    )
    .map_err(|errno| MountError::Syscall {
        target: target.display().to_string(),
        errno,
        hint: hint(errno, nix::unistd::geteuid().is_root(), target.is_dir()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(opts: &str) -> MountConfig {
        MountConfig {
            aname: "/images/debian".into(),
            version: KernelVersion::P2000L,
            msize: 262144,
            opts: split_opts(opts),
        }
    }

    #[test]
    fn plan_defaults_build_trans_fd_string() {
        let p = cfg("").plan(5, 5).unwrap();
        assert_eq!(
            p.data,
            "trans=fd,rfdno=5,wfdno=5,version=9p2000.L,aname=/images/debian,msize=262144"
        );
        assert_eq!(p.flags, MsFlags::empty());
    }

    #[test]
    fn plan_generic_options_become_flags_rest_goes_to_data() {
        let p = cfg("ro,cache=loose,,nosuid,access=client")
            .plan(3, 4)
            .unwrap();
        assert_eq!(p.flags, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
        assert!(p
            .data
            .ends_with("rfdno=3,wfdno=4,version=9p2000.L,aname=/images/debian,msize=262144,cache=loose,access=client"));
    }

    #[test]
    fn plan_reserved_option_is_rejected() {
        for o in [
            "trans=tcp",
            "msize=8192",
            "aname=x",
            "version=9p2000.u",
            "rfdno=1",
        ] {
            assert!(
                matches!(cfg(o).plan(3, 3), Err(MountError::Reserved(_))),
                "{o}"
            );
        }
    }

    #[test]
    fn plan_aname_with_comma_is_rejected() {
        let mut c = cfg("");
        c.aname = "/a,b".into();
        assert!(matches!(
            c.plan(3, 3),
            Err(MountError::Unrepresentable { .. })
        ));
    }

    #[test]
    fn plan_small_msize_is_rejected() {
        let mut c = cfg("");
        c.msize = 512;
        assert!(matches!(c.plan(3, 3), Err(MountError::SmallMsize(512))));
    }

    #[test]
    fn hint_eperm_enoent_depend_on_root_and_target() {
        use nix::errno::Errno;
        assert!(hint(Errno::EPERM, false, true).contains("needs root"));
        assert!(hint(Errno::EPERM, true, true).contains("--aname"));
        assert!(hint(Errno::ENOENT, true, true).contains("--aname"));
        assert!(hint(Errno::ENOENT, true, false).contains("existing directory"));
        assert!(hint(Errno::ENODEV, true, true).contains("modprobe"));
    }

    #[test]
    fn version_parses_any_case_to_kernel_spelling() {
        for (s, k) in [
            ("9P2000.L", "9p2000.L"),
            ("9p2000.l", "9p2000.L"),
            ("9P2000.u", "9p2000.u"),
            ("9p2000", "9p2000"),
        ] {
            assert_eq!(s.parse::<KernelVersion>().unwrap().kernel_name(), k);
        }
        assert!("9p2000.x".parse::<KernelVersion>().is_err());
    }
}
