//! Who may attach what (§4.3.1): credential files in administrative directories, endpoint
//! bindings, keys for 9P `Tauth`, and the decision taken at attach time.
//!
//! # Two levels
//!
//! Entry to the file system is decided here, once, when a client attaches: its credentials
//! give it a set of rights and an identity for the attached directory and everything below.
//! After that, ordinary Unix permissions (checked by [`crate::namespace`]) govern each file,
//! using the identity fixed at attach time. A later change to a credential file affects later
//! attaches only.
//!
//! # Principals
//!
//! A connection is known by its endpoint ([`crate::transport::Peer`]): the TCP peer address,
//! the Unix-socket peer's uid/gid (`SO_PEERCRED`), the vsock CID, the Xen domain id, or the
//! ring file. Endpoints cannot be spoofed inside the cluster (the hosts own the virtual
//! networks), so the endpoint is a credential by itself. The operator can also *bind*
//! endpoints to names (`/.envoy-bindings`), and a client that knows a secret can prove a
//! `key:NAME` through `Tauth` (see [`auth`]). A credential line names one principal:
//!
//! | principal | matches |
//! |---|---|
//! | `*` | every connection |
//! | `tcp:127.0.0.1`, `tcp:10.0.0.0/8`, `tcp:::1`, `tcp:*` | TCP peers with that address / in that network (IPv4-mapped IPv6 counts as IPv4) |
//! | `unix:uid=1000`, `unix:gid=100`, `unix:*` | local Unix-socket peers by `SO_PEERCRED` |
//! | `vsock:cid=5`, `vsock:*` | vsock guests by context id |
//! | `xen:domid=3`, `xen:*` | Xen guests by domain id |
//! | `ring:/run/envoy/g1.ring`, `ring:*` | shared-memory ring files |
//! | `key:alice` | attaches that proved alice's secret with Tauth, or endpoints bound to `key:alice` |
//! | `name:web` | endpoints the operator bound to the name `web` |
//!
//! # Credential files
//!
//! A file named `.access` in an administrative directory `D` (never inside an image: there it
//! is an ordinary file with no meaning). One grant per line, fields separated by blanks;
//! blank lines and lines starting with `#` are ignored:
//!
//! ```text
//! PRINCIPAL RIGHTS IDENTITY [path=SUB/DIR]
//! ```
//!
//! * `RIGHTS`: comma-separated `mount-ro` (attach images read-only), `mount-rw` (read-write;
//!   includes mount-ro), `fork` (fork images; includes reading them, i.e. mount-ro), `admin`
//!   (attach administrative directories read-write and everything the others give).
//! * `IDENTITY`: `uid=N` or `uid=N,gid=M` (fixed: whatever uname/n_uname the client sends is
//!   replaced), `any` (the client's own choice, root included), `squash` (the client's
//!   choice, but uid 0 becomes 65534 and gid 0 becomes 65534, as NFS root squashing).
//! * `path=SUB/DIR` (optional): the grant covers only `D/SUB/DIR` and below instead of `D`
//!   and below. This lets an operator give alice `admin` over `/tenants/alice` from
//!   `/tenants/.access`, a file alice cannot edit.
//!
//! Examples (`/tenants/.access`):
//!
//! ```text
//! # the operator's own account, everywhere below /tenants
//! unix:uid=0              admin            any
//! # alice owns her branch but is always uid 1000 there
//! key:alice               admin            uid=1000        path=alice
//! # every guest on the 10.1 network may read (and fork) the templates, as nobody
//! tcp:10.1.0.0/16         mount-ro,fork    uid=65534       path=templates
//! # the web tier (bound by the operator) shares one data image, root squashed
//! name:web                mount-rw         squash          path=shared/data
//! vsock:cid=5             mount-rw         any             path=alice/vm5
//! xen:domid=3             mount-ro         squash          path=templates
//! ```
//!
//! Parsing is strict: a line with a wrong field count, an unknown right or principal kind, a
//! bad number, an IP network with host bits set, an absolute or `..` path… is reported
//! (`file`, line number, reason) in the log and through [`Access::grants`], and ignored. An
//! ignored line only ever takes rights away. A file over 64 KiB is ignored whole.
//!
//! # The decision at attach
//!
//! For `Tattach(aname = /a/b/c)` envoyd walks from the global root. In every administrative
//! directory on the way (the root, `/a`, `/a/b`, and `/a/b/c` itself if it is one) it reads
//! `.access`, keeps the lines whose principal matches the connection (or the proved key) and
//! whose scope contains the attach path. The union of those lines decides; nothing below can
//! take away what was granted above:
//!
//! | attach target | needs | mounted |
//! |---|---|---|
//! | an administrative directory | `admin` | read-write |
//! | image metadata (`.envoy/…`) | `admin` | read-only |
//! | an image head or a directory in it | `mount-ro` (or `fork`, `mount-rw`, `admin`) | read-write with `mount-rw`/`admin`, else read-only |
//! | a snapshot (`web@3`) or a directory in it | as above | always read-only |
//!
//! The identity comes from the grants that gave the deciding right (for a read-write image
//! attach, the lines with `mount-rw`; for read-only, those with `mount-ro`): `any` wins over
//! `squash`, which wins over a fixed identity; among fixed identities the one whose uid the
//! client asked for, else the first in path order. A connection with no matching grant gets
//! `EACCES` (and the refusal is logged with the peer and path); a missing path answers
//! `EACCES` too unless some grant would have allowed it, so a stranger cannot probe names.
//!
//! Every mutating request on a fid from a read-only attach fails with `EROFS`
//! ([`crate::session::fids::FidEntry::check_writable`]).
//!
//! # Bindings and keys (root only)
//!
//! `/.envoy-bindings`: `ENDPOINT-PATTERN PRINCIPAL` per line, the principal `name:NAME` or
//! `key:NAME` (e.g. `tcp:10.2.0.0/24 name:web`, `vsock:cid=7 key:alice`).
//! `/.envoy-keys`: `NAME sha256:SALT:HASH` per line (see [`keys`]); file mode 0600.
//! Both are read at each attach, like the credential files.
//!
//! # A fresh store
//!
//! When neither `/.access` nor `/.envoy-bindings` exists (a fresh store, or one from before
//! credentials existed), envoyd writes a root `/.access` granting `admin any` to local
//! Unix-socket peers running as root or as envoyd's own uid and to TCP peers at `127.0.0.1`
//! and `::1` (other loopback addresses such as `127.0.0.2` are *not* granted), and an empty
//! bindings file. Delete or edit `/.access` to lock the host down: it is not re-created while
//! the bindings file exists.

pub mod auth;
pub mod grammar;
pub mod keys;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use envoy_storage::ObjectKind;

use crate::error::FsError;
use crate::namespace::node::{lock, Area, Node};
use crate::namespace::update::RemoveKind;
use crate::namespace::{Claim, Cred, Fs};
use crate::transport::Peer;
pub use grammar::{Binding, EndpointPattern, Grant, Identity, LineError, Principal, Rights};
use keys::{KeyEntry, KeyHash};

/// Name of a credential file in an administrative directory.
pub const CRED_FILE: &str = ".access";
/// Endpoint bindings, in the root directory.
pub const BINDINGS_FILE: &str = ".envoy-bindings";
/// Hashed Tauth secrets, in the root directory.
pub const KEYS_FILE: &str = ".envoy-keys";
/// Largest credential, bindings or keys file read (bytes); larger ones are ignored.
pub const FILE_MAX: u64 = 64 * 1024;
/// Administrative directories [`Access::grants`] visits at most.
const SCAN_MAX_DIRS: usize = 100_000;
/// uid/gid that root is squashed to.
pub const NOBODY: u32 = 65534;

/// Why an access-control operation failed. The messages are operator sentences.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The namespace failed underneath.
    #[error("{what}: {cause}")]
    Fs {
        /// What was being done.
        what: String,
        /// Cause.
        cause: FsError,
    },
    /// An entry given to grant/bind/set_key does not parse.
    #[error("malformed {what} {text:?}: {reason}")]
    Malformed {
        /// Which kind of entry.
        what: &'static str,
        /// The text.
        text: String,
        /// What is wrong.
        reason: String,
    },
    /// Credential files only count in administrative directories.
    #[error("{0} is not an administrative directory (credential files count only there; an image is granted as a whole from the directories above it)")]
    NotAdminDir(String),
    /// Nothing to revoke/unbind/remove.
    #[error("{file} has no {what} for {key}")]
    Missing {
        /// The file.
        file: String,
        /// Kind of entry.
        what: &'static str,
        /// The key looked for.
        key: String,
    },
    /// The file is too large to rewrite.
    #[error("{0} is larger than 64 KiB; shorten it by hand before changing it through envoyd")]
    TooLarge(String),
    /// A salt could not be drawn.
    #[error("reading /dev/urandom for a salt")]
    Random(#[source] std::io::Error),
}

fn fs_err(what: impl Into<String>) -> impl FnOnce(FsError) -> AccessError {
    let what = what.into();
    move |cause| AccessError::Fs { what, cause }
}

/// Who is attaching: the connection's endpoint and, after Tauth, a proved key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    /// The endpoint.
    pub peer: Peer,
    /// A `key:NAME` proved through Tauth on this attach.
    pub key: Option<String>,
}

/// One credential entry, for listings ([`Access::grants`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantInfo {
    /// The administrative directory holding the credential file.
    pub dir: String,
    /// Line number in the file.
    pub line: usize,
    /// The line as written (canonical form when it parses).
    pub entry: String,
    /// Why the line is ignored, when it does not parse.
    pub error: Option<String>,
}

/// One endpoint binding, for listings ([`Access::bindings`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingInfo {
    /// Endpoint pattern.
    pub endpoint: String,
    /// Principal it acts as.
    pub principal: String,
}

/// A matching grant met on the way to a path.
#[derive(Debug, Clone)]
struct Found {
    rights: Rights,
    identity: Identity,
}

/// What the credentials along a path give one client.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    found: Vec<Found>,
}

impl Evaluation {
    /// The union of every matching grant's rights.
    pub fn rights(&self) -> Rights {
        self.found
            .iter()
            .fold(Rights::NONE, |r, f| r.union(f.rights))
    }

    /// The identity for an attach that uses `right`, given the uid the client asked for;
    /// `None` when no grant gives `right`.
    pub fn cred_for(&self, right: Rights, requested: u32) -> Option<Cred> {
        let ids: Vec<Identity> = self
            .found
            .iter()
            .filter(|f| f.rights.contains(right))
            .map(|f| f.identity)
            .collect();
        let best = ids.iter().map(|i| i.rank()).max()?;
        Some(match best {
            2 => Cred::user(requested),
            1 if requested == 0 => Cred::user(NOBODY),
            1 => Cred::user(requested),
            _ => {
                let fixed = ids
                    .iter()
                    .find(|i| matches!(i, Identity::Fixed { uid, .. } if *uid == requested))
                    .or(ids.first())?;
                match fixed {
                    Identity::Fixed { uid, gid } => Cred {
                        uid: *uid,
                        gid: *gid,
                    },
                    _ => Cred::user(NOBODY),
                }
            }
        })
    }
}

/// The attach decision.
#[derive(Debug)]
pub struct AttachGrant {
    /// Identity for every request on the attach.
    pub cred: Cred,
    /// Mutations fail with `EROFS`.
    pub read_only: bool,
    /// Union of the rights that matched (what `rights_for` would say).
    pub rights: Rights,
}

/// The access-control service of one envoy.
#[derive(Debug)]
pub struct Access {
    fs: Arc<Fs>,
    /// Serialises rewrites of credential, bindings and keys files made through this API.
    write: Mutex<()>,
}

/// Server-internal credentials for reading and writing policy files.
const ROOT: Cred = Cred { uid: 0, gid: 0 };

/// Splits an absolute or relative `/`-path into checked components.
pub fn components(path: &str) -> Result<Vec<String>, FsError> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|c| crate::namespace::check_name(c).map(|_| c.to_string()))
        .collect()
}

fn join(comps: &[String]) -> String {
    format!("/{}", comps.join("/"))
}

impl Access {
    /// The access service over `fs`; writes the default root credential file on a fresh
    /// store (see the module docs).
    pub fn open(fs: Arc<Fs>) -> Result<Arc<Access>, AccessError> {
        let a = Arc::new(Access {
            fs,
            write: Mutex::new(()),
        });
        a.ensure_defaults()?;
        Ok(a)
    }

    fn ensure_defaults(&self) -> Result<(), AccessError> {
        let root = self.fs.root();
        let exists = |name: &str| match self.fs.lookup(root.node(), name.as_bytes(), ROOT) {
            Ok(_) => Ok(true),
            Err(FsError::NotFound) => Ok(false),
            Err(e) => Err(fs_err(format!("looking up /{name}"))(e)),
        };
        let (cred, bind) = (exists(CRED_FILE)?, exists(BINDINGS_FILE)?);
        if cred || bind {
            if !cred {
                tracing::warn!(
                    "no /{CRED_FILE}: no client may attach anything until the operator grants access"
                );
            }
            return Ok(());
        }
        let me = nix::unistd::getuid().as_raw();
        let mut text = String::from(
            "# Envoy credential file of the root administrative directory (format: see the\n\
             # dom0-envoyd access module docs). Written on a fresh store: root and envoyd's own\n\
             # user on local Unix sockets, and TCP clients at this host's loopback address,\n\
             # may administer everything and take any identity. Other clients get nothing.\n\
             unix:uid=0 admin any\n",
        );
        if me != 0 {
            text.push_str(&format!("unix:uid={me} admin any\n"));
        }
        text.push_str("tcp:127.0.0.1 admin any\ntcp:::1 admin any\n");
        let _w = lock(&self.write);
        self.write_file(&root, CRED_FILE, text.as_bytes(), 0o644)?;
        self.write_file(
            &root,
            BINDINGS_FILE,
            b"# ENDPOINT-PATTERN PRINCIPAL (name:NAME or key:NAME), e.g. tcp:10.2.0.0/24 name:web\n",
            0o644,
        )?;
        tracing::info!(
            "wrote the default /{CRED_FILE}: admin for local root and uid {me}, TCP 127.0.0.1 and ::1"
        );
        Ok(())
    }

    /// The namespace.
    pub fn fs(&self) -> &Arc<Fs> {
        &self.fs
    }

    /// Reads `name` in `dir` if it is a regular file of at most [`FILE_MAX`] bytes.
    fn read_file(&self, dir: &Arc<Node>, name: &str, shown: &str) -> Option<Vec<u8>> {
        let c = match self.fs.lookup(dir, name.as_bytes(), ROOT) {
            Ok(c) => c,
            Err(FsError::NotFound) => return None,
            Err(e) => {
                tracing::warn!(file = shown, error = %e, "cannot read; treated as empty");
                return None;
            }
        };
        if c.node().kind() != ObjectKind::Regular {
            tracing::warn!(file = shown, "not a regular file; ignored");
            return None;
        }
        let size = match self.fs.stat(c.node()) {
            Ok(st) => st.size,
            Err(e) => {
                tracing::warn!(file = shown, error = %e, "cannot stat; ignored");
                return None;
            }
        };
        if size > FILE_MAX {
            tracing::warn!(
                file = shown,
                size,
                "larger than {FILE_MAX} bytes; ignored whole"
            );
            return None;
        }
        // Straight from the store: policy files stay out of the data cache (which is for the
        // guests' files), and a read racing a rewrite sees the old or the new object (files
        // are replaced by rename).
        let _io = crate::namespace::node::read(&c.node().io);
        let id = c.node().id();
        let mut buf = Vec::with_capacity(size as usize);
        while (buf.len() as u64) < size {
            match self
                .fs
                .store()
                .read(id, buf.len() as u64, (size as usize) - buf.len())
            {
                Ok(b) if b.is_empty() => break,
                Ok(b) => buf.extend_from_slice(&b),
                Err(e) => {
                    tracing::warn!(file = shown, error = %e, "read failed; ignored");
                    return None;
                }
            }
        }
        Some(buf)
    }

    fn log_bad(file: &str, bad: &[LineError]) {
        for e in bad {
            tracing::warn!(
                file,
                line = e.line,
                reason = %e.reason,
                "malformed line ignored"
            );
        }
    }

    /// The endpoint bindings in force.
    fn load_bindings(&self) -> Vec<Binding> {
        let root = self.fs.root();
        let shown = format!("/{BINDINGS_FILE}");
        let text = self
            .read_file(root.node(), BINDINGS_FILE, &shown)
            .unwrap_or_default();
        let (ok, bad) = grammar::parse_lines(&text, Binding::parse);
        Self::log_bad(&shown, &bad);
        ok.into_iter().map(|(_, b)| b).collect()
    }

    /// The keys in force.
    fn load_keys(&self) -> Vec<KeyEntry> {
        let root = self.fs.root();
        let shown = format!("/{KEYS_FILE}");
        let text = self
            .read_file(root.node(), KEYS_FILE, &shown)
            .unwrap_or_default();
        let (ok, bad) = grammar::parse_lines(&text, KeyEntry::parse);
        Self::log_bad(&shown, &bad);
        ok.into_iter().map(|(_, k)| k).collect()
    }

    /// Whether `p` names the client `who` (given the bindings in force).
    pub fn principal_matches(p: &Principal, who: &Who, bindings: &[Binding]) -> bool {
        match p {
            Principal::Anyone => true,
            Principal::Endpoint(pat) => pat.matches(&who.peer),
            Principal::Key(k) if who.key.as_deref() == Some(k.as_str()) => true,
            Principal::Key(_) | Principal::Name(_) => bindings
                .iter()
                .any(|b| b.principal == *p && b.endpoint.matches(&who.peer)),
        }
    }

    /// Walks `comps` from the global root as the server, reading the credential file of every
    /// administrative directory met. Returns the grants for `who` and, when the whole path
    /// exists, the area of its last node (`Err` holds the lookup failure).
    fn evaluate_path(&self, who: &Who, comps: &[String]) -> (Evaluation, Result<Claim, FsError>) {
        let bindings = self.load_bindings();
        let mut ev = Evaluation::default();
        let mut cur = self.fs.root();
        let mut i = 0;
        loop {
            if matches!(cur.node().area, Area::Admin) && cur.node().kind() == ObjectKind::Directory
            {
                let here = &comps[..i];
                let shown = format!("{}/{CRED_FILE}", join(here).trim_end_matches('/'));
                if let Some(text) = self.read_file(cur.node(), CRED_FILE, &shown) {
                    let (ok, bad) = grammar::parse_lines(&text, Grant::parse);
                    Self::log_bad(&shown, &bad);
                    for (_, g) in ok {
                        let covers = comps[i..].starts_with(&g.scope);
                        if covers && Self::principal_matches(&g.principal, who, &bindings) {
                            ev.found.push(Found {
                                rights: g.rights,
                                identity: g.identity,
                            });
                        }
                    }
                }
            }
            let Some(name) = comps.get(i) else {
                return (ev, Ok(cur));
            };
            match self.fs.lookup(cur.node(), name.as_bytes(), ROOT) {
                Ok(next) => cur = next,
                Err(e) => return (ev, Err(e)),
            }
            i += 1;
        }
    }

    /// The rights the credentials give `who` at `path` (which need not exist yet: the
    /// credential files of the existing administrative directories above it count). The
    /// control socket and the images API check `fork` and `admin` with it.
    pub fn rights_for(&self, who: &Who, path: &str) -> Result<Rights, AccessError> {
        let comps = components(path).map_err(fs_err(format!("path {path:?}")))?;
        Ok(self.evaluate_path(who, &comps).0.rights())
    }

    /// Decides an attach of `path` by `who` asking for uid `requested`: the claim on the
    /// attach point and the grant, or `EACCES` (logged) / the lookup error.
    pub fn authorize(
        &self,
        who: &Who,
        path: &str,
        requested: u32,
    ) -> Result<(Claim, AttachGrant), FsError> {
        let comps = components(path)?;
        let (ev, target) = self.evaluate_path(who, &comps);
        let rights = ev.rights();
        let refuse = |why: &str| {
            tracing::warn!(peer = %who.peer, key = ?who.key, %path, %rights, "attach refused: {why}");
            FsError::Access
        };
        let target = match target {
            Ok(t) => t,
            // Only a client that could attach something here learns that a name is missing.
            Err(e) if rights.contains(Rights::MOUNT_RO) => return Err(e),
            Err(_) => return Err(refuse("no credential grants this client anything here")),
        };
        let (right, read_only) = match &target.node().area {
            Area::Admin | Area::Meta if !rights.contains(Rights::ADMIN) => {
                return Err(refuse("an administrative directory needs the admin right"))
            }
            Area::Admin => (Rights::ADMIN, false),
            Area::Meta => (Rights::ADMIN, true),
            Area::Image(scope) => {
                if rights.contains(Rights::MOUNT_RW) && !scope.read_only {
                    (Rights::MOUNT_RW, false)
                } else if rights.contains(Rights::MOUNT_RO) {
                    (Rights::MOUNT_RO, true)
                } else {
                    return Err(refuse("no credential grants a mount of this image"));
                }
            }
        };
        let cred = ev
            .cred_for(right, requested)
            .ok_or_else(|| refuse("no identity"))?;
        Ok((
            target,
            AttachGrant {
                cred,
                read_only,
                rights,
            },
        ))
    }

    /// Checks a Tauth proof: `key:NAME SECRET`, or just `SECRET` for the key that `uname`
    /// (`key:NAME`) names.
    /// Returns the key's name when the secret is right.
    pub fn verify_proof(&self, proof: &[u8], uname: &str) -> Option<String> {
        let proof = proof.strip_suffix(b"\n").unwrap_or(proof);
        let proof = proof.strip_suffix(b"\r").unwrap_or(proof);
        let (name, secret) = match proof.strip_prefix(b"key:") {
            Some(rest) => {
                let sp = rest.iter().position(|b| b.is_ascii_whitespace())?;
                let name = std::str::from_utf8(rest.get(..sp)?).ok()?;
                (name, rest.get(sp + 1..)?)
            }
            None => (uname.strip_prefix("key:").unwrap_or(uname), proof),
        };
        if grammar::check_name(name).is_err()
            || secret.is_empty()
            || secret.len() > keys::SECRET_MAX
        {
            return None;
        }
        keys::check(&self.load_keys(), name, secret).then(|| name.to_string())
    }

    /// The administrative directory at `dir`, claimed.
    fn admin_dir(&self, dir: &str) -> Result<Claim, AccessError> {
        let comps = components(dir).map_err(fs_err(format!("directory {dir:?}")))?;
        let mut cur = self.fs.root();
        for c in &comps {
            cur = self
                .fs
                .lookup(cur.node(), c.as_bytes(), ROOT)
                .map_err(fs_err(format!("looking up {dir}")))?;
        }
        if !matches!(cur.node().area, Area::Admin) || cur.node().kind() != ObjectKind::Directory {
            return Err(AccessError::NotAdminDir(join(&comps)));
        }
        Ok(cur)
    }

    /// Replaces file `name` in directory `dir` by `data`: written to `NAME.new`, made
    /// durable, then renamed over the old file (a crash leaves the old or the new file, and
    /// perhaps a stale `NAME.new` that the next rewrite removes).
    fn write_file(
        &self,
        dir: &Claim,
        name: &str,
        data: &[u8],
        mode: u32,
    ) -> Result<(), AccessError> {
        let fs = &self.fs;
        let tmp = format!("{name}.new");
        let what = format!("writing {}/{name}", dir.node().path().trim_end_matches('/'));
        match fs.unlink(dir.node(), tmp.as_bytes(), RemoveKind::NotDir, ROOT) {
            Ok(()) | Err(FsError::NotFound) => {}
            Err(e) => return Err(fs_err(what)(e)),
        }
        let f = fs
            .create(dir, tmp.as_bytes(), ObjectKind::Regular, mode, ROOT, None)
            .map_err(fs_err(what.clone()))?;
        if !data.is_empty() {
            fs.write(f.node(), 0, Bytes::copy_from_slice(data))
                .map_err(fs_err(what.clone()))?;
        }
        fs.sync(f.node()).map_err(fs_err(what.clone()))?;
        drop(f);
        fs.rename(
            dir.node(),
            tmp.as_bytes(),
            dir.node(),
            name.as_bytes(),
            ROOT,
        )
        .map_err(fs_err(what.clone()))?;
        let f = fs
            .lookup(dir.node(), name.as_bytes(), ROOT)
            .map_err(fs_err(what.clone()))?;
        fs.sync(f.node()).map_err(fs_err(what))?;
        Ok(())
    }

    /// Rewrites `name` in `dir` line by line: `edit` gets every parsed line (others are
    /// kept as they are) and says whether to keep it; `append` is added at the end.
    fn rewrite<T>(
        &self,
        dir: &Claim,
        name: &str,
        mode: u32,
        parse: impl Fn(&str) -> Result<T, String>,
        mut keep: impl FnMut(&T) -> bool,
        append: Option<String>,
    ) -> Result<usize, AccessError> {
        let shown = format!("{}/{name}", dir.node().path().trim_end_matches('/'));
        let old = match self.fs.lookup(dir.node(), name.as_bytes(), ROOT) {
            Ok(c) if self.fs.stat(c.node()).map(|s| s.size).unwrap_or(0) > FILE_MAX => {
                return Err(AccessError::TooLarge(shown))
            }
            Ok(_) => self.read_file(dir.node(), name, &shown).unwrap_or_default(),
            Err(FsError::NotFound) => Vec::new(),
            Err(e) => return Err(fs_err(format!("reading {shown}"))(e)),
        };
        let mut out = String::new();
        let mut dropped = 0;
        for raw in String::from_utf8_lossy(&old).lines() {
            let t = raw.trim();
            let drop_it = !t.is_empty() && !t.starts_with('#') && parse(t).is_ok_and(|v| !keep(&v));
            if drop_it {
                dropped += 1;
            } else {
                out.push_str(raw);
                out.push('\n');
            }
        }
        if let Some(line) = append {
            out.push_str(&line);
            out.push('\n');
        }
        self.write_file(dir, name, out.as_bytes(), mode)?;
        Ok(dropped)
    }

    /// Every credential entry in every administrative directory, malformed ones included
    /// (with the reason they are ignored).
    pub fn grants(&self) -> Result<Vec<GrantInfo>, AccessError> {
        let mut out = Vec::new();
        let mut queue = vec![self.fs.root()];
        let mut seen = 0usize;
        while let Some(dir) = queue.pop() {
            seen += 1;
            if seen > SCAN_MAX_DIRS {
                tracing::warn!(
                    "more than {SCAN_MAX_DIRS} administrative directories; listing cut short"
                );
                break;
            }
            let path = dir.node().path();
            let shown = format!("{}/{CRED_FILE}", path.trim_end_matches('/'));
            if let Some(text) = self.read_file(dir.node(), CRED_FILE, &shown) {
                let (ok, bad) = grammar::parse_lines(&text, Grant::parse);
                let raw: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
                for (line, g) in ok {
                    out.push(GrantInfo {
                        dir: path.clone(),
                        line,
                        entry: g.to_string(),
                        error: None,
                    });
                }
                for e in bad {
                    let entry = raw
                        .get(e.line - 1)
                        .map(|l| String::from_utf8_lossy(l).trim().to_string())
                        .unwrap_or_default();
                    out.push(GrantInfo {
                        dir: path.clone(),
                        line: e.line,
                        entry,
                        error: Some(e.reason),
                    });
                }
            }
            let data = self
                .fs
                .dir_snapshot(dir.node())
                .map_err(fs_err(format!("listing {path}")))?;
            for e in data.entries() {
                let Ok(child) = self.fs.lookup(dir.node(), &e.name, ROOT) else {
                    continue;
                };
                if matches!(child.node().area, Area::Admin)
                    && child.node().kind() == ObjectKind::Directory
                {
                    queue.push(child);
                }
            }
        }
        out.sort_by(|a, b| a.dir.cmp(&b.dir).then(a.line.cmp(&b.line)));
        Ok(out)
    }

    /// Adds `entry` (a credential line) to the credential file of administrative directory
    /// `dir`, replacing the lines for the same principal and scope.
    pub fn grant(&self, dir: &str, entry: &str) -> Result<(), AccessError> {
        let g = Grant::parse(entry).map_err(|reason| AccessError::Malformed {
            what: "credential line",
            text: entry.to_string(),
            reason,
        })?;
        let d = self.admin_dir(dir)?;
        let _w = lock(&self.write);
        self.rewrite(
            &d,
            CRED_FILE,
            0o644,
            Grant::parse,
            |o| !(o.principal == g.principal && o.scope == g.scope),
            Some(g.to_string()),
        )?;
        tracing::info!(dir, entry = %g, "granted");
        Ok(())
    }

    /// Removes every line for `principal` from `dir`'s credential file. Attaches made
    /// before keep their rights (they were fixed at attach time).
    pub fn revoke(&self, dir: &str, principal: &str) -> Result<(), AccessError> {
        let p = Principal::parse(principal).map_err(|reason| AccessError::Malformed {
            what: "principal",
            text: principal.to_string(),
            reason,
        })?;
        let d = self.admin_dir(dir)?;
        let _w = lock(&self.write);
        let n = self.rewrite(
            &d,
            CRED_FILE,
            0o644,
            Grant::parse,
            |o| o.principal != p,
            None,
        )?;
        if n == 0 {
            return Err(AccessError::Missing {
                file: format!("{}/{CRED_FILE}", d.node().path().trim_end_matches('/')),
                what: "grant",
                key: p.to_string(),
            });
        }
        tracing::info!(dir, principal = %p, lines = n, "revoked");
        Ok(())
    }

    /// The endpoint bindings.
    pub fn bindings(&self) -> Vec<BindingInfo> {
        self.load_bindings()
            .into_iter()
            .map(|b| BindingInfo {
                endpoint: b.endpoint.to_string(),
                principal: b.principal.to_string(),
            })
            .collect()
    }

    /// Binds endpoints matching `endpoint` to `principal` (`name:NAME`, `key:NAME` or a bare
    /// name), replacing an earlier binding of the same pattern.
    pub fn bind(&self, endpoint: &str, principal: &str) -> Result<(), AccessError> {
        let line = format!("{endpoint} {principal}");
        let b = Binding::parse(&line).map_err(|reason| AccessError::Malformed {
            what: "binding",
            text: line.clone(),
            reason,
        })?;
        let root = self.fs.root();
        let _w = lock(&self.write);
        self.rewrite(
            &root,
            BINDINGS_FILE,
            0o644,
            Binding::parse,
            |o| o.endpoint != b.endpoint,
            Some(b.to_string()),
        )?;
        tracing::info!(binding = %b, "bound");
        Ok(())
    }

    /// Removes the binding of `endpoint`.
    pub fn unbind(&self, endpoint: &str) -> Result<(), AccessError> {
        let ep = grammar::parse_endpoint(endpoint).map_err(|reason| AccessError::Malformed {
            what: "endpoint pattern",
            text: endpoint.to_string(),
            reason,
        })?;
        let root = self.fs.root();
        let _w = lock(&self.write);
        let n = self.rewrite(
            &root,
            BINDINGS_FILE,
            0o644,
            Binding::parse,
            |o| o.endpoint != ep,
            None,
        )?;
        if n == 0 {
            return Err(AccessError::Missing {
                file: format!("/{BINDINGS_FILE}"),
                what: "binding",
                key: ep.to_string(),
            });
        }
        tracing::info!(endpoint = %ep, "unbound");
        Ok(())
    }

    /// The names of the keys clients can prove with Tauth.
    pub fn keys(&self) -> Vec<String> {
        self.load_keys().into_iter().map(|k| k.name).collect()
    }

    /// Sets (or replaces) key `name`'s secret; only a salted hash is stored.
    pub fn set_key(&self, name: &str, secret: &[u8]) -> Result<(), AccessError> {
        let malformed = |reason: String| AccessError::Malformed {
            what: "key",
            text: name.to_string(),
            reason,
        };
        grammar::check_name(name).map_err(malformed)?;
        if secret.is_empty() || secret.len() > keys::SECRET_MAX {
            return Err(malformed(format!(
                "the secret must be 1 to {} bytes",
                keys::SECRET_MAX
            )));
        }
        if secret.iter().any(|b| b.is_ascii_control()) {
            return Err(malformed(
                "the secret must not contain control characters".into(),
            ));
        }
        let e = KeyEntry {
            name: name.to_string(),
            hash: KeyHash::new(secret).map_err(AccessError::Random)?,
        };
        let root = self.fs.root();
        let _w = lock(&self.write);
        self.rewrite(
            &root,
            KEYS_FILE,
            0o600,
            KeyEntry::parse,
            |o| o.name != name,
            Some(e.to_string()),
        )?;
        tracing::info!(key = name, "key set");
        Ok(())
    }

    /// Removes key `name`.
    pub fn remove_key(&self, name: &str) -> Result<(), AccessError> {
        let root = self.fs.root();
        let _w = lock(&self.write);
        let n = self.rewrite(
            &root,
            KEYS_FILE,
            0o600,
            KeyEntry::parse,
            |o| o.name != name,
            None,
        )?;
        if n == 0 {
            return Err(AccessError::Missing {
                file: format!("/{KEYS_FILE}"),
                what: "key",
                key: name.to_string(),
            });
        }
        Ok(())
    }
}

/// Whether a 9P2000(.u) Twstat changes nothing (every field "don't touch"): the protocol's
/// way to ask for a sync, allowed on read-only attaches.
pub fn wstat_is_noop(s: &envoy_proto::Stat) -> bool {
    s.mode == u32::MAX
        && s.length == u64::MAX
        && s.mtime == u32::MAX
        && s.atime == u32::MAX
        && s.name.is_empty()
        && s.uid.is_empty()
        && s.gid.is_empty()
        && s.n_uid == envoy_proto::NONUNAME
        && s.n_gid == envoy_proto::NONUNAME
}

/// The uid an attach names: `n_uname`, else a numeric `uname`, `"root"` as 0, anything
/// else as `nobody`.
pub fn requested_uid(uname: &str, n_uname: u32) -> u32 {
    if n_uname != envoy_proto::NONUNAME {
        return n_uname;
    }
    if uname == "root" {
        return 0;
    }
    uname.parse().unwrap_or(NOBODY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(found: &[(Rights, Identity)]) -> Evaluation {
        Evaluation {
            found: found
                .iter()
                .map(|&(rights, identity)| Found { rights, identity })
                .collect(),
        }
    }

    #[test]
    fn cred_for_fixed_overrides_requested() {
        let e = ev(&[(
            Rights::MOUNT_RW,
            Identity::Fixed {
                uid: 1000,
                gid: 100,
            },
        )]);
        assert_eq!(
            e.cred_for(Rights::MOUNT_RW, 0),
            Some(Cred {
                uid: 1000,
                gid: 100
            })
        );
    }

    #[test]
    fn cred_for_squash_maps_root_only() {
        let e = ev(&[(Rights::MOUNT_RO, Identity::Squash)]);
        assert_eq!(e.cred_for(Rights::MOUNT_RO, 0), Some(Cred::user(NOBODY)));
        assert_eq!(e.cred_for(Rights::MOUNT_RO, 42), Some(Cred::user(42)));
        assert_eq!(e.cred_for(Rights::MOUNT_RW, 42), None);
    }

    #[test]
    fn cred_for_identity_from_deciding_grants_only() {
        // Root-like identity for reading does not carry over to the read-write grant.
        let e = ev(&[
            (Rights::MOUNT_RO, Identity::Any),
            (Rights::MOUNT_RW, Identity::Fixed { uid: 7, gid: 7 }),
        ]);
        assert_eq!(e.cred_for(Rights::MOUNT_RW, 0), Some(Cred::user(7)));
        assert_eq!(e.cred_for(Rights::MOUNT_RO, 0), Some(Cred::user(0)));
        assert_eq!(e.rights(), Rights::MOUNT_RW);
    }

    #[test]
    fn cred_for_fixed_prefers_requested_uid() {
        let e = ev(&[
            (Rights::MOUNT_RW, Identity::Fixed { uid: 7, gid: 7 }),
            (Rights::MOUNT_RW, Identity::Fixed { uid: 8, gid: 9 }),
        ]);
        assert_eq!(
            e.cred_for(Rights::MOUNT_RW, 8),
            Some(Cred { uid: 8, gid: 9 })
        );
        assert_eq!(e.cred_for(Rights::MOUNT_RW, 0), Some(Cred::user(7)));
    }

    #[test]
    fn requested_uid_prefers_numeric_then_name() {
        assert_eq!(requested_uid("alice", 1000), 1000);
        assert_eq!(requested_uid("root", envoy_proto::NONUNAME), 0);
        assert_eq!(requested_uid("1001", envoy_proto::NONUNAME), 1001);
        assert_eq!(requested_uid("alice", envoy_proto::NONUNAME), NOBODY);
    }
}
