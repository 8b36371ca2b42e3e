//! The text formats of credential files, bindings and keys: strict parsers and canonical
//! printers (the format itself is documented in [`crate::access`]).
//!
//! Parsing is per line: a malformed line yields a [`LineError`] (line number and reason) and
//! contributes nothing, so a typo can only narrow access, never widen it.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::transport::Peer;

/// Longest principal or key name.
pub const NAME_MAX: usize = 64;

/// A set of rights. Stored with their implications applied: `admin` ⊇ `mount-rw`, `fork` ⊇
/// `mount-ro`, `mount-rw` ⊇ `mount-ro`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Rights(u8);

const B_RO: u8 = 1;
const B_RW: u8 = 2;
const B_FORK: u8 = 4;
const B_ADMIN: u8 = 8;

impl Rights {
    /// Nothing.
    pub const NONE: Rights = Rights(0);
    /// Attach images below read-only.
    pub const MOUNT_RO: Rights = Rights(B_RO);
    /// Attach images below read-write.
    pub const MOUNT_RW: Rights = Rights(B_RW | B_RO);
    /// Fork images below (and read them).
    pub const FORK: Rights = Rights(B_FORK | B_RO);
    /// Attach administrative directories below; implies every other right.
    pub const ADMIN: Rights = Rights(B_ADMIN | B_FORK | B_RW | B_RO);

    /// Whether every right of `other` is in `self`.
    pub fn contains(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }

    /// Both sets.
    pub fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }

    /// True when empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Parses `mount-rw,fork` (comma-separated, at least one token).
    pub fn parse(s: &str) -> Result<Rights, String> {
        let mut r = Rights::NONE;
        for tok in s.split(',') {
            r = r.union(match tok {
                "mount-ro" => Rights::MOUNT_RO,
                "mount-rw" => Rights::MOUNT_RW,
                "fork" => Rights::FORK,
                "admin" => Rights::ADMIN,
                "" => return Err("empty right in the rights list".into()),
                other => {
                    return Err(format!(
                        "unknown right {other:?} (expected mount-ro, mount-rw, fork or admin)"
                    ))
                }
            });
        }
        Ok(r)
    }
}

impl fmt::Display for Rights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.contains(Rights::ADMIN) {
            return f.write_str("admin");
        }
        let mut parts = Vec::new();
        if self.0 & B_RW != 0 {
            parts.push("mount-rw");
        } else if self.0 & B_RO != 0 && self.0 & B_FORK == 0 {
            parts.push("mount-ro");
        }
        if self.0 & B_FORK != 0 {
            parts.push("fork");
        }
        if parts.is_empty() {
            return f.write_str("none");
        }
        f.write_str(&parts.join(","))
    }
}

/// Which identity a client may take inside what it attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Identity {
    /// Always this uid/gid, whatever the client sends.
    Fixed {
        /// User.
        uid: u32,
        /// Group.
        gid: u32,
    },
    /// Any identity the client names, except that root (uid 0) becomes `nobody`.
    Squash,
    /// Any identity the client names, root included.
    Any,
}

impl Identity {
    /// How much the identity allows (for the union of several grants).
    pub fn rank(self) -> u8 {
        match self {
            Identity::Fixed { .. } => 0,
            Identity::Squash => 1,
            Identity::Any => 2,
        }
    }

    /// Parses `any`, `squash`, `uid=N` or `uid=N,gid=M` (gid defaults to the uid).
    pub fn parse(s: &str) -> Result<Identity, String> {
        match s {
            "any" => return Ok(Identity::Any),
            "squash" => return Ok(Identity::Squash),
            _ => {}
        }
        let (u, g) = match s.split_once(',') {
            Some((u, g)) => (u, Some(g)),
            None => (s, None),
        };
        let uid = u
            .strip_prefix("uid=")
            .ok_or_else(|| format!("identity {s:?}: expected any, squash or uid=N[,gid=M]"))
            .and_then(|n| parse_num(n, "uid"))?;
        let gid = match g {
            None => uid,
            Some(g) => g
                .strip_prefix("gid=")
                .ok_or_else(|| format!("identity {s:?}: expected uid=N,gid=M"))
                .and_then(|n| parse_num(n, "gid"))?,
        };
        Ok(Identity::Fixed { uid, gid })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Any => f.write_str("any"),
            Identity::Squash => f.write_str("squash"),
            Identity::Fixed { uid, gid } if uid == gid => write!(f, "uid={uid}"),
            Identity::Fixed { uid, gid } => write!(f, "uid={uid},gid={gid}"),
        }
    }
}

fn parse_num<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return Err(format!("{what} {s:?} is not a decimal number"));
    }
    s.parse()
        .map_err(|_| format!("{what} {s:?} is out of range"))
}

/// A pattern over connection endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EndpointPattern {
    /// `tcp:*`, `tcp:ADDR` or `tcp:ADDR/PREFIX` (`None` = any TCP peer).
    Tcp(Option<(IpAddr, u8)>),
    /// `unix:*`, `unix:uid=N`, `unix:gid=N`.
    Unix(UnixMatch),
    /// `vsock:*` or `vsock:cid=N`.
    Vsock(Option<u32>),
    /// `xen:*` or `xen:domid=N`.
    Xen(Option<u16>),
    /// `ring:*` or `ring:/absolute/path`.
    Ring(Option<PathBuf>),
}

/// Which Unix-socket peers a pattern matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnixMatch {
    /// Every local peer.
    Any,
    /// Peers whose `SO_PEERCRED` uid is this.
    Uid(u32),
    /// Peers whose `SO_PEERCRED` gid is this.
    Gid(u32),
}

impl EndpointPattern {
    /// Parses the text after `kind:`.
    fn parse(kind: &str, rest: &str) -> Result<EndpointPattern, String> {
        let star = rest == "*";
        Ok(match kind {
            "tcp" if star => EndpointPattern::Tcp(None),
            "tcp" => {
                let (addr, prefix) = match rest.split_once('/') {
                    Some((a, p)) => (a, Some(p)),
                    None => (rest, None),
                };
                let ip: IpAddr = addr
                    .parse()
                    .map_err(|_| format!("tcp:{rest}: {addr:?} is not an IP address"))?;
                let ip = ip.to_canonical();
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let len = match prefix {
                    None => max,
                    Some(p) => parse_num::<u8>(p, "prefix length")?,
                };
                if len > max {
                    return Err(format!("tcp:{rest}: prefix length {len} exceeds {max}"));
                }
                if mask(ip, len) != ip {
                    return Err(format!(
                        "tcp:{rest}: host bits set below the /{len} prefix (write the network address)"
                    ));
                }
                EndpointPattern::Tcp(Some((ip, len)))
            }
            "unix" if star => EndpointPattern::Unix(UnixMatch::Any),
            "unix" => {
                if let Some(n) = rest.strip_prefix("uid=") {
                    EndpointPattern::Unix(UnixMatch::Uid(parse_num(n, "uid")?))
                } else if let Some(n) = rest.strip_prefix("gid=") {
                    EndpointPattern::Unix(UnixMatch::Gid(parse_num(n, "gid")?))
                } else {
                    return Err(format!(
                        "unix:{rest}: expected unix:*, unix:uid=N or unix:gid=N"
                    ));
                }
            }
            "vsock" if star => EndpointPattern::Vsock(None),
            "vsock" => EndpointPattern::Vsock(Some(
                rest.strip_prefix("cid=")
                    .ok_or_else(|| format!("vsock:{rest}: expected vsock:* or vsock:cid=N"))
                    .and_then(|n| parse_num(n, "cid"))?,
            )),
            "xen" if star => EndpointPattern::Xen(None),
            "xen" => EndpointPattern::Xen(Some(
                rest.strip_prefix("domid=")
                    .ok_or_else(|| format!("xen:{rest}: expected xen:* or xen:domid=N"))
                    .and_then(|n| parse_num(n, "domid"))?,
            )),
            "ring" if star => EndpointPattern::Ring(None),
            "ring" => {
                if !rest.starts_with('/') {
                    return Err(format!("ring:{rest}: expected an absolute path or *"));
                }
                EndpointPattern::Ring(Some(PathBuf::from(rest)))
            }
            other => return Err(format!("unknown endpoint kind {other:?}")),
        })
    }

    /// Whether the pattern matches the peer.
    pub fn matches(&self, peer: &Peer) -> bool {
        match (self, peer) {
            (EndpointPattern::Tcp(None), Peer::Tcp(_)) => true,
            (EndpointPattern::Tcp(Some((net, len))), Peer::Tcp(a)) => {
                let ip = a.ip().to_canonical();
                ip.is_ipv4() == net.is_ipv4() && mask(ip, *len) == *net
            }
            (EndpointPattern::Unix(m), Peer::Unix { uid, gid, .. }) => match m {
                UnixMatch::Any => true,
                UnixMatch::Uid(u) => *uid == Some(*u),
                UnixMatch::Gid(g) => *gid == Some(*g),
            },
            (EndpointPattern::Vsock(c), Peer::Vsock { cid }) => c.is_none_or(|c| c == *cid),
            (EndpointPattern::Xen(d), Peer::Xen { domid }) => d.is_none_or(|d| d == *domid),
            (EndpointPattern::Ring(p), Peer::Ring { path }) => p.as_ref().is_none_or(|p| p == path),
            _ => false,
        }
    }
}

/// `ip` with every bit past the first `len` cleared.
fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len.min(128)))
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

impl fmt::Display for EndpointPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointPattern::Tcp(None) => f.write_str("tcp:*"),
            EndpointPattern::Tcp(Some((ip, len))) => {
                let max = if ip.is_ipv4() { 32 } else { 128 };
                if *len == max {
                    write!(f, "tcp:{ip}")
                } else {
                    write!(f, "tcp:{ip}/{len}")
                }
            }
            EndpointPattern::Unix(UnixMatch::Any) => f.write_str("unix:*"),
            EndpointPattern::Unix(UnixMatch::Uid(u)) => write!(f, "unix:uid={u}"),
            EndpointPattern::Unix(UnixMatch::Gid(g)) => write!(f, "unix:gid={g}"),
            EndpointPattern::Vsock(None) => f.write_str("vsock:*"),
            EndpointPattern::Vsock(Some(c)) => write!(f, "vsock:cid={c}"),
            EndpointPattern::Xen(None) => f.write_str("xen:*"),
            EndpointPattern::Xen(Some(d)) => write!(f, "xen:domid={d}"),
            EndpointPattern::Ring(None) => f.write_str("ring:*"),
            EndpointPattern::Ring(Some(p)) => write!(f, "ring:{}", p.display()),
        }
    }
}

/// Who a credential line is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// `*`: every connection.
    Anyone,
    /// Connections from matching endpoints.
    Endpoint(EndpointPattern),
    /// `key:NAME`: attaches that proved the key's secret through Tauth, or come from an
    /// endpoint bound to `key:NAME`.
    Key(String),
    /// `name:NAME`: connections from endpoints the operator bound to that name.
    Name(String),
}

/// Checks a key or principal name: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn check_name(n: &str) -> Result<&str, String> {
    let ok = !n.is_empty()
        && n.len() <= NAME_MAX
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(n)
    } else {
        Err(format!(
            "name {n:?}: use 1 to {NAME_MAX} letters, digits, '.', '_' or '-'"
        ))
    }
}

impl Principal {
    /// Parses a principal.
    pub fn parse(s: &str) -> Result<Principal, String> {
        if s == "*" {
            return Ok(Principal::Anyone);
        }
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("principal {s:?}: expected KIND:VALUE or *"))?;
        match kind {
            "key" => Ok(Principal::Key(check_name(rest)?.to_string())),
            "name" => Ok(Principal::Name(check_name(rest)?.to_string())),
            _ => Ok(Principal::Endpoint(EndpointPattern::parse(kind, rest)?)),
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Anyone => f.write_str("*"),
            Principal::Endpoint(p) => p.fmt(f),
            Principal::Key(n) => write!(f, "key:{n}"),
            Principal::Name(n) => write!(f, "name:{n}"),
        }
    }
}

/// One credential line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Grant {
    /// Who.
    pub principal: Principal,
    /// What.
    pub rights: Rights,
    /// As whom.
    pub identity: Identity,
    /// Where, relative to the directory holding the file (empty: the directory itself and
    /// everything below).
    pub scope: Vec<String>,
}

impl Grant {
    /// Parses one line's fields: `PRINCIPAL RIGHTS IDENTITY [path=SUB/PATH]`.
    pub fn parse(line: &str) -> Result<Grant, String> {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if !(3..=4).contains(&f.len()) {
            return Err(format!(
                "expected PRINCIPAL RIGHTS IDENTITY [path=SUBDIR], found {} fields",
                f.len()
            ));
        }
        let principal = Principal::parse(f[0])?;
        let rights = Rights::parse(f[1])?;
        let identity = Identity::parse(f[2])?;
        let scope = match f.get(3) {
            None => Vec::new(),
            Some(p) => parse_scope(
                p.strip_prefix("path=")
                    .ok_or_else(|| format!("fourth field {p:?}: expected path=SUBDIR"))?,
            )?,
        };
        Ok(Grant {
            principal,
            rights,
            identity,
            scope,
        })
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.principal, self.rights, self.identity)?;
        if !self.scope.is_empty() {
            write!(f, " path={}", self.scope.join("/"))?;
        }
        Ok(())
    }
}

/// A relative path below the credential file's directory: components that are valid names,
/// no `.`/`..`, no leading `/`.
fn parse_scope(p: &str) -> Result<Vec<String>, String> {
    if p.is_empty() || p.starts_with('/') {
        return Err(format!(
            "path={p}: expected a relative path below this directory"
        ));
    }
    let mut v = Vec::new();
    for c in p.split('/').filter(|c| !c.is_empty()) {
        if c == "." || c == ".." || c.len() > crate::namespace::NAME_MAX {
            return Err(format!("path={p}: component {c:?} is not allowed"));
        }
        v.push(c.to_string());
    }
    Ok(v)
}

/// A malformed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Parses a whole file of `T` lines: blank lines and lines starting with `#` are skipped;
/// every other line is parsed by `parse` or reported.
pub fn parse_lines<T>(
    text: &[u8],
    parse: impl Fn(&str) -> Result<T, String>,
) -> (Vec<(usize, T)>, Vec<LineError>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let Ok(s) = std::str::from_utf8(raw) else {
            bad.push(LineError {
                line,
                reason: "not UTF-8".into(),
            });
            continue;
        };
        let s = s.trim();
        if s.is_empty() || s.starts_with('#') {
            continue;
        }
        match parse(s) {
            Ok(v) => ok.push((line, v)),
            Err(reason) => bad.push(LineError { line, reason }),
        }
    }
    (ok, bad)
}

/// One line of the bindings file: `ENDPOINT-PATTERN PRINCIPAL`, the principal being
/// `name:NAME` or `key:NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Which endpoints.
    pub endpoint: EndpointPattern,
    /// The principal they act as.
    pub principal: Principal,
}

impl Binding {
    /// Parses `ENDPOINT PRINCIPAL`.
    pub fn parse(line: &str) -> Result<Binding, String> {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        let [ep, pr] = f.as_slice() else {
            return Err(format!(
                "expected ENDPOINT PRINCIPAL, found {} fields",
                f.len()
            ));
        };
        Ok(Binding {
            endpoint: parse_endpoint(ep)?,
            principal: parse_bound_principal(pr)?,
        })
    }
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.endpoint, self.principal)
    }
}

/// Parses an endpoint pattern (`tcp:…`, `unix:…`, `vsock:…`, `xen:…`, `ring:…`).
pub fn parse_endpoint(s: &str) -> Result<EndpointPattern, String> {
    match Principal::parse(s)? {
        Principal::Endpoint(p) => Ok(p),
        other => Err(format!("{other} is not an endpoint pattern")),
    }
}

/// Parses what an endpoint may be bound to: `name:NAME`, `key:NAME`, or a bare `NAME`
/// (short for `name:NAME`).
pub fn parse_bound_principal(s: &str) -> Result<Principal, String> {
    if !s.contains(':') {
        return Ok(Principal::Name(check_name(s)?.to_string()));
    }
    match Principal::parse(s)? {
        p @ (Principal::Name(_) | Principal::Key(_)) => Ok(p),
        other => Err(format!(
            "{other}: an endpoint can only be bound to name:NAME or key:NAME"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_parse_examples_roundtrip() {
        for (line, canon) in [
            (
                "unix:uid=1000 mount-rw,fork uid=1000,gid=1000",
                "unix:uid=1000 mount-rw,fork uid=1000",
            ),
            (
                "tcp:127.0.0.2 mount-ro squash",
                "tcp:127.0.0.2 mount-ro squash",
            ),
            ("key:alice admin any", "key:alice admin any"),
            ("vsock:cid=5   mount-rw\tany", "vsock:cid=5 mount-rw any"),
            (
                "xen:domid=3 fork uid=5,gid=6",
                "xen:domid=3 fork uid=5,gid=6",
            ),
            (
                "tcp:10.1.0.0/16 mount-ro,fork any",
                "tcp:10.1.0.0/16 fork any",
            ),
            (
                "name:web mount-rw squash path=web/data",
                "name:web mount-rw squash path=web/data",
            ),
            ("* mount-ro uid=65534", "* mount-ro uid=65534"),
            ("tcp:::1 admin any", "tcp:::1 admin any"),
            (
                "ring:/run/envoy/g1.ring mount-rw any",
                "ring:/run/envoy/g1.ring mount-rw any",
            ),
        ] {
            let g = Grant::parse(line).unwrap();
            assert_eq!(g.to_string(), canon, "{line}");
            assert_eq!(Grant::parse(canon).unwrap(), g);
        }
    }

    #[test]
    fn grant_parse_malformed_lines_rejected() {
        for line in [
            "tcp:127.0.0.1 admin",
            "tcp:127.0.0.1 admin any extra=1",
            "tcp:127.0.0.1 admin any path=/abs",
            "tcp:127.0.0.1 admin any path=a/../b",
            "tcp:127.0.0.1 root any",
            "tcp:127.0.0.1 admin,, any",
            "tcp:127.0.0.1 admin uid=-1",
            "tcp:127.0.0.1 admin uid=01",
            "tcp:127.0.0.1 admin uid=99999999999",
            "tcp:127.0.0.1 admin gid=5",
            "tcp:localhost admin any",
            "tcp:10.0.0.5/24 admin any",
            "tcp:10.0.0.0/33 admin any",
            "unix:root admin any",
            "vsock:5 admin any",
            "xen:domid=70000 admin any",
            "ring:relative admin any",
            "key: admin any",
            "key:a/b admin any",
            "nfs:host admin any",
            "alice admin any",
        ] {
            assert!(Grant::parse(line).is_err(), "{line} should be rejected");
        }
    }

    #[test]
    fn rights_implications_hold() {
        let a = Rights::parse("admin").unwrap();
        assert!(a.contains(Rights::MOUNT_RW) && a.contains(Rights::FORK));
        let f = Rights::parse("fork").unwrap();
        assert!(f.contains(Rights::MOUNT_RO) && !f.contains(Rights::MOUNT_RW));
        let rw = Rights::parse("mount-rw").unwrap();
        assert!(rw.contains(Rights::MOUNT_RO) && !rw.contains(Rights::FORK));
        assert_eq!(Rights::parse("mount-ro,mount-rw").unwrap(), rw);
    }

    #[test]
    fn endpoint_pattern_matches_peers() {
        let tcp = |s: &str| Peer::Tcp(s.parse().unwrap());
        let p = |s: &str| parse_endpoint(s).unwrap();
        assert!(p("tcp:127.0.0.1").matches(&tcp("127.0.0.1:4000")));
        assert!(!p("tcp:127.0.0.1").matches(&tcp("127.0.0.2:4000")));
        assert!(p("tcp:127.0.0.1").matches(&tcp("[::ffff:127.0.0.1]:4000")));
        assert!(p("tcp:10.0.0.0/8").matches(&tcp("10.9.8.7:1")));
        assert!(!p("tcp:10.0.0.0/8").matches(&tcp("11.0.0.1:1")));
        assert!(p("tcp:*").matches(&tcp("[::1]:1")));
        assert!(p("tcp:::1").matches(&tcp("[::1]:1")));
        assert!(!p("tcp:0.0.0.0/0").matches(&tcp("[::2]:1")));
        let unix = |uid, gid| Peer::Unix {
            pid: None,
            uid,
            gid,
        };
        assert!(p("unix:uid=7").matches(&unix(Some(7), Some(8))));
        assert!(p("unix:gid=8").matches(&unix(Some(7), Some(8))));
        assert!(!p("unix:uid=7").matches(&unix(None, None)));
        assert!(p("unix:*").matches(&unix(None, None)));
        assert!(!p("unix:*").matches(&tcp("127.0.0.1:1")));
        assert!(p("vsock:cid=5").matches(&Peer::Vsock { cid: 5 }));
        assert!(!p("vsock:cid=5").matches(&Peer::Vsock { cid: 6 }));
        assert!(p("xen:domid=3").matches(&Peer::Xen { domid: 3 }));
        assert!(!p("xen:domid=3").matches(&Peer::Vsock { cid: 3 }));
        assert!(p("ring:/r").matches(&Peer::Ring { path: "/r".into() }));
    }

    #[test]
    fn parse_lines_reports_line_numbers_and_skips_comments() {
        let text =
            b"# comment\n\nkey:a admin any\nbogus\n\xff\n  tcp:127.0.0.1 mount-ro squash  \n";
        let (ok, bad) = parse_lines(text, Grant::parse);
        assert_eq!(ok.iter().map(|(l, _)| *l).collect::<Vec<_>>(), vec![3, 6]);
        assert_eq!(bad.iter().map(|e| e.line).collect::<Vec<_>>(), vec![4, 5]);
    }

    #[test]
    fn binding_parse_accepts_names_and_keys_only() {
        let b = Binding::parse("tcp:10.0.0.0/24 web").unwrap();
        assert_eq!(b.to_string(), "tcp:10.0.0.0/24 name:web");
        assert!(Binding::parse("vsock:cid=5 key:alice").is_ok());
        assert!(Binding::parse("vsock:cid=5 tcp:1.2.3.4").is_err());
        assert!(Binding::parse("key:alice name:web").is_err());
        assert!(Binding::parse("vsock:cid=5").is_err());
    }
}
