//! Credentials (§4.3.1): who may attach what, read-only attaches, identities, Tauth keys,
//! rights fixed at attach time, malformed credential lines, and no escape from an attach.
//!
//! The server listens on 127.0.0.1, which the default root credential file grants `admin
//! any`; the "stranger" connects from 127.0.0.2 (same host, not granted by default).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use common::*;
use envoy_proto::{qid_type, Tsetattr};

use guest_shim::endpoint::{Closer, Connection};

#[allow(non_snake_case)]
fn E(n: i32) -> u32 {
    n as u32
}

/// A TCP connection to `server` from source address 127.0.0.2 (std cannot bind before
/// connecting).
fn connect_from_127_0_0_2(server: SocketAddrV4) -> TcpStream {
    let sin = |a: SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let from = sin(SocketAddrV4::new([127, 0, 0, 2].into(), 0));
    let to = sin(server);
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket(2); the result is checked and owned right away.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(raw >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: `from` is a valid sockaddr_in of `len` bytes for the call's duration.
    let r = unsafe { libc::bind(fd.as_raw_fd(), (&raw const from).cast(), len) };
    assert_eq!(r, 0, "bind 127.0.0.2: {}", std::io::Error::last_os_error());
    // SAFETY: as above, for `to`.
    let r = unsafe { libc::connect(fd.as_raw_fd(), (&raw const to).cast(), len) };
    assert_eq!(r, 0, "connect: {}", std::io::Error::last_os_error());
    TcpStream::from(fd)
}

/// A 9P2000.L client connected from 127.0.0.2.
fn stranger(env: &Env) -> Client {
    let server: SocketAddr = env.addr.parse().unwrap();
    let SocketAddr::V4(server) = server else {
        panic!("IPv4 test server expected")
    };
    let s = connect_from_127_0_0_2(server);
    let c = Client::from_connection(Connection {
        reader: Box::new(s.try_clone().unwrap()),
        writer: Box::new(s.try_clone().unwrap()),
        closer: Closer::Tcp(s),
    });
    c.set_timeout(Some(Duration::from_secs(20)));
    c.handshake(65536, "9P2000.L").unwrap();
    c
}

/// An admin client (127.0.0.1) attached to `/` on fid [`ROOT`].
fn admin(env: &Env) -> Client {
    let c = env.client("9P2000.L");
    c.attach(ROOT, Fid::NOFID, "root", "/", 0).unwrap();
    c
}

/// Creates world-writable directory `/default/pub` (so fixed identities can create files).
fn make_pub(env: &Env) {
    env.attach(0).mkdir(ROOT, "pub", 0o777, 0).unwrap();
}

/// The uid and gid of a file created as `name` in `/default/pub` by `c` (attached on ROOT).
fn create_owner(c: &Client, name: &str) -> (u32, u32) {
    let f = c.alloc_fid();
    c.walk(ROOT, f, &["pub"]).unwrap();
    c.lcreate(f, name, O_RDWR, 0o644, 0).unwrap();
    let a = c.getattr(f, 0x7ff).unwrap();
    c.clunk(f).unwrap();
    (a.uid, a.gid)
}

#[test]
fn stranger_default_store_attach_refused_eacces() {
    let env = Env::new();
    let s = stranger(&env);
    assert_eq!(
        errno(s.attach(ROOT, Fid::NOFID, "root", "/default", 0)),
        E(libc::EACCES)
    );
    assert_eq!(
        errno(s.attach(ROOT, Fid::NOFID, "root", "/", 0)),
        E(libc::EACCES)
    );
    // A missing name is not revealed to a client that may attach nothing.
    assert_eq!(
        errno(s.attach(ROOT, Fid::NOFID, "root", "/no/such/dir", 0)),
        E(libc::EACCES)
    );
    // The granted loopback address still attaches as before.
    let c = env.attach(0);
    create_file(&c, ROOT, "f", b"x");
}

#[test]
fn credential_file_written_over_9p_grants_read_only_writes_erofs() {
    let env = Env::new();
    let a = env.attach(0);
    create_file(&a, ROOT, "seen", b"hello");
    a.mkdir(ROOT, "d", 0o755, 0).unwrap();
    // The root credential file is an ordinary file in the root administrative directory.
    let root = admin(&env);
    let f = root.alloc_fid();
    root.walk(ROOT, f, &[".access"]).unwrap();
    root.lopen(f, O_RDWR).unwrap();
    let old = root.read_all(f).unwrap();
    let mut text = old.clone();
    text.extend_from_slice(b"tcp:127.0.0.2 mount-ro any\n");
    root.write_all(f, 0, &text).unwrap();
    root.clunk(f).unwrap();

    let s = stranger(&env);
    s.attach(ROOT, Fid::NOFID, "root", "/default", 0).unwrap();
    assert_eq!(read_file(&s, ROOT, "seen").unwrap(), b"hello");
    let ro = |r| errno(r);
    let f = s.alloc_fid();
    s.walk(ROOT, f, &[]).unwrap();
    assert_eq!(
        ro(s.lcreate(f, "new", O_RDWR, 0o644, 0).map(drop)),
        E(libc::EROFS)
    );
    assert_eq!(ro(s.mkdir(ROOT, "nd", 0o755, 0).map(drop)), E(libc::EROFS));
    assert_eq!(
        ro(s.symlink(ROOT, "sl", "seen", 0).map(drop)),
        E(libc::EROFS)
    );
    assert_eq!(ro(s.unlinkat(ROOT, "seen", 0)), E(libc::EROFS));
    let g = s.alloc_fid();
    s.walk(ROOT, g, &["seen"]).unwrap();
    assert_eq!(ro(s.lopen(g, O_RDWR).map(drop)), E(libc::EROFS));
    assert_eq!(ro(s.lopen(g, O_RDONLY | O_TRUNC).map(drop)), E(libc::EROFS));
    assert_eq!(ro(s.rename(g, ROOT, "moved")), E(libc::EROFS));
    assert_eq!(ro(s.renameat(ROOT, "seen", ROOT, "moved")), E(libc::EROFS));
    assert_eq!(ro(s.link(ROOT, g, "hard")), E(libc::EROFS));
    assert_eq!(
        ro(s.setattr(Tsetattr {
            fid: g,
            valid: 8, // size
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            atime_sec: 0,
            atime_nsec: 0,
            mtime_sec: 0,
            mtime_nsec: 0,
        })),
        E(libc::EROFS)
    );
    let x = s.alloc_fid();
    s.walk(g, x, &[]).unwrap();
    assert_eq!(ro(s.xattrcreate(x, "user.a", 1, 0)), E(libc::EROFS));
    s.clunk(x).unwrap();
    // Tremove clunks the fid even when it fails.
    assert_eq!(ro(s.remove(g)), E(libc::EROFS));
    assert_eq!(ro(s.clunk(g)), E(libc::EBADF));
    // Fids walked from a read-only attach stay read-only.
    let d = s.alloc_fid();
    s.walk(ROOT, d, &["d"]).unwrap();
    assert_eq!(ro(s.mkdir(d, "x", 0o755, 0).map(drop)), E(libc::EROFS));
    // Reading still works, and the file is unchanged.
    let r = s.alloc_fid();
    s.walk(ROOT, r, &["seen"]).unwrap();
    s.lopen(r, O_RDONLY).unwrap();
    assert_eq!(s.read_all(r).unwrap(), b"hello");
    s.clunk(r).unwrap();
    // mount-ro is no admin right: the root directory stays closed.
    assert_eq!(
        errno(s.attach(Fid(50), Fid::NOFID, "root", "/", 0)),
        E(libc::EACCES)
    );
    assert_eq!(read_file(&a, ROOT, "seen").unwrap(), b"hello");
}

#[test]
fn fixed_identity_overrides_requested_uid() {
    let env = Env::new();
    make_pub(&env);
    env.server()
        .access()
        .grant("/", "tcp:127.0.0.2 mount-rw uid=1000,gid=100")
        .unwrap();
    let s = stranger(&env);
    s.attach(ROOT, Fid::NOFID, "root", "/default", 0).unwrap();
    assert_eq!(create_owner(&s, "mine"), (1000, 100));
    // Root's files are no longer root's to change.
    let f = s.alloc_fid();
    s.walk(ROOT, f, &[]).unwrap();
    assert_eq!(
        errno(s.lcreate(f, "in-root-dir", O_RDWR, 0o644, 0).map(drop)),
        E(libc::EACCES)
    );
}

#[test]
fn squash_maps_root_to_nobody_other_uids_kept() {
    let env = Env::new();
    make_pub(&env);
    env.server()
        .access()
        .grant("/", "tcp:127.0.0.2 mount-rw squash")
        .unwrap();
    let s = stranger(&env);
    s.attach(ROOT, Fid::NOFID, "root", "/default", 0).unwrap();
    assert_eq!(create_owner(&s, "by-root"), (65534, 65534));
    let t = stranger(&env);
    t.attach(ROOT, Fid::NOFID, "u", "/default", 1234).unwrap();
    assert_eq!(create_owner(&t, "by-1234"), (1234, 1234));
}

#[test]
fn tauth_right_secret_attaches_with_key_grants_wrong_secret_refused() {
    let env = Env::new();
    make_pub(&env);
    let acc = env.server().access();
    acc.set_key("alice", b"correct horse").unwrap();
    acc.grant("/", "key:alice mount-rw uid=2000").unwrap();
    assert_eq!(acc.keys(), vec!["alice".to_string()]);

    // Right secret.
    let s = stranger(&env);
    let afid = Fid(100);
    let q = s.auth(afid, "key:alice", "/default", 0).unwrap();
    assert_eq!(q.ty, qid_type::AUTH);
    s.write(afid, 0, b"correct horse".to_vec()).unwrap();
    assert_eq!(&s.read(afid, 0, 100).unwrap()[..], b"ok key:alice\n");
    s.attach(ROOT, afid, "key:alice", "/default", 0).unwrap();
    s.clunk(afid).unwrap();
    assert_eq!(create_owner(&s, "alice-file"), (2000, 2000));

    // The explicit form names the key in the proof.
    let s3 = stranger(&env);
    s3.auth(afid, "key:alice", "/default", 0).unwrap();
    s3.write(afid, 0, b"key:alice correct horse\n".to_vec())
        .unwrap();
    s3.attach(ROOT, afid, "key:alice", "/default", 0).unwrap();

    // Wrong secret: no attach, and the endpoint alone has no grant.
    let s2 = stranger(&env);
    s2.auth(afid, "key:alice", "/default", 0).unwrap();
    s2.write(afid, 0, b"wrong horse".to_vec()).unwrap();
    assert_eq!(&s2.read(afid, 0, 100).unwrap()[..], b"denied\n");
    assert_eq!(
        errno(s2.attach(ROOT, afid, "key:alice", "/default", 0)),
        E(libc::EACCES)
    );
    // The proof is for alice's uname only.
    s2.write(afid, 0, b"correct horse".to_vec()).unwrap();
    assert_eq!(
        errno(s2.attach(ROOT, afid, "key:bob", "/default", 0)),
        E(libc::EACCES)
    );
    assert_eq!(
        errno(s2.attach(ROOT, Fid(555), "key:alice", "/default", 0)),
        E(libc::EBADF)
    );
    // The auth fid is no file.
    assert_eq!(errno(s2.walk(afid, Fid(7), &[])), E(libc::EBADF));
    s2.clunk(afid).unwrap();
    // Other unames need no authentication (diod's answer, which libnpclient expects).
    assert_eq!(errno(s2.auth(Fid(9), "root", "", 0)), E(libc::ENOENT));
    // The secret is stored hashed.
    let keys = read_file(&admin(&env), ROOT, ".envoy-keys").unwrap();
    let keys = String::from_utf8(keys).unwrap();
    assert!(keys.starts_with("alice sha256:"), "{keys}");
    assert!(!keys.contains("horse"), "{keys}");
}

#[test]
fn rights_fixed_at_attach_time_revoke_affects_new_attaches_only() {
    let env = Env::new();
    make_pub(&env);
    let acc = env.server().access();
    acc.grant("/", "tcp:127.0.0.2 mount-rw any").unwrap();
    let s = stranger(&env);
    s.attach(ROOT, Fid::NOFID, "root", "/default", 0).unwrap();
    acc.revoke("/", "tcp:127.0.0.2").unwrap();
    // The existing attach keeps its rights.
    create_owner(&s, "after-revoke");
    let s2 = stranger(&env);
    assert_eq!(
        errno(s2.attach(ROOT, Fid::NOFID, "root", "/default", 0)),
        E(libc::EACCES)
    );
    // A narrower grant later does not narrow the earlier attach either.
    acc.grant("/", "tcp:127.0.0.2 mount-ro any").unwrap();
    create_owner(&s, "still-writable");
    s2.attach(ROOT, Fid::NOFID, "root", "/default", 0).unwrap();
    let f = s2.alloc_fid();
    s2.walk(ROOT, f, &["pub"]).unwrap();
    assert_eq!(
        errno(s2.lcreate(f, "x", O_RDWR, 0o644, 0).map(drop)),
        E(libc::EROFS)
    );
    assert!(acc.revoke("/", "tcp:127.0.0.9").is_err());
}

#[test]
fn malformed_credential_lines_ignored_and_listed() {
    let env = Env::new();
    let acc = env.server().access();
    let root = admin(&env);
    let f = root.alloc_fid();
    root.walk(ROOT, f, &[".access"]).unwrap();
    root.lopen(f, O_RDWR).unwrap();
    let mut text = root.read_all(f).unwrap();
    let first_new = text.iter().filter(|&&b| b == b'\n').count() + 1;
    text.extend_from_slice(
        b"tcp:127.0.0.2 mount-rw,everything any\n\
          tcp:127.0.0.2/24 admin any\n\
          tcp:127.0.0.2 admin any path=../..\n\
          tcp:127.0.0.2 admin\n\
          tcp:127.0.0.2 mount-ro squash\n",
    );
    root.write_all(f, 0, &text).unwrap();
    root.clunk(f).unwrap();

    let s = stranger(&env);
    s.attach(ROOT, Fid::NOFID, "root", "/default", 0).unwrap();
    let g = s.alloc_fid();
    s.walk(ROOT, g, &[]).unwrap();
    assert_eq!(
        errno(s.lcreate(g, "x", O_RDWR, 0o644, 0).map(drop)),
        E(libc::EROFS),
        "only the well-formed mount-ro line counts"
    );
    assert_eq!(
        errno(s.attach(Fid(9), Fid::NOFID, "root", "/", 0)),
        E(libc::EACCES)
    );
    let listed = acc.grants().unwrap();
    let bad: Vec<usize> = listed
        .iter()
        .filter(|g| g.dir == "/" && g.error.is_some())
        .map(|g| g.line)
        .collect();
    assert_eq!(
        bad,
        (first_new..first_new + 4).collect::<Vec<_>>(),
        "{listed:#?}"
    );
    assert!(listed
        .iter()
        .any(|g| g.entry == "tcp:127.0.0.2 mount-ro squash" && g.error.is_none()));
    assert!(acc.grant("/", "tcp:127.0.0.2 mount-rw nobody").is_err());
}

#[test]
fn scoped_admin_grant_opens_only_its_subtree() {
    let env = Env::new();
    let root = admin(&env);
    root.mkdir(ROOT, "tenants", 0o755, 0).unwrap();
    let t = root.alloc_fid();
    root.walk(ROOT, t, &["tenants"]).unwrap();
    root.mkdir(t, "alice", 0o755, 0).unwrap();
    root.mkdir(t, "bob", 0o755, 0).unwrap();
    let acc = env.server().access();
    acc.grant("/tenants", "tcp:127.0.0.2 admin uid=1000 path=alice")
        .unwrap();
    assert!(acc.grant("/default", "tcp:127.0.0.2 admin any").is_err());
    let s = stranger(&env);
    s.attach(ROOT, Fid::NOFID, "x", "/tenants/alice", 0)
        .unwrap();
    for denied in ["/tenants", "/tenants/bob", "/", "/default"] {
        assert_eq!(
            errno(s.attach(Fid(2), Fid::NOFID, "x", denied, 0)),
            E(libc::EACCES),
            "{denied}"
        );
    }
    // `..` at the attach root stays there.
    let qs = s.walk(ROOT, Fid(3), &["..", ".."]).unwrap();
    let own = s.getattr(ROOT, 0x7ff).unwrap().qid;
    assert_eq!(qs.last().copied(), Some(own));
    let listed = acc.grants().unwrap();
    assert!(listed
        .iter()
        .any(|g| g.dir == "/tenants" && g.entry == "tcp:127.0.0.2 admin uid=1000 path=alice"));
}

#[test]
fn binding_names_endpoint_for_named_grant() {
    let env = Env::new();
    let acc = env.server().access();
    acc.grant("/", "name:web mount-ro any").unwrap();
    let s = stranger(&env);
    assert_eq!(
        errno(s.attach(ROOT, Fid::NOFID, "root", "/default", 0)),
        E(libc::EACCES)
    );
    acc.bind("tcp:127.0.0.0/29", "web").unwrap();
    let b = acc.bindings();
    assert_eq!(b.len(), 1);
    assert_eq!(
        (b[0].endpoint.as_str(), b[0].principal.as_str()),
        ("tcp:127.0.0.0/29", "name:web")
    );
    s.attach(ROOT, Fid::NOFID, "root", "/default", 0).unwrap();
    acc.unbind("tcp:127.0.0.0/29").unwrap();
    assert_eq!(
        errno(s.attach(Fid(2), Fid::NOFID, "root", "/default", 0)),
        E(libc::EACCES)
    );
    assert!(acc.bind("tcp:127.0.0.1", "tcp:127.0.0.2").is_err());
}

#[test]
fn escapes_dotdot_symlink_slash_names_stay_inside_attach() {
    let env = Env::new();
    let root = admin(&env);
    root.mkdir(ROOT, "other", 0o755, 0).unwrap();
    let o = root.alloc_fid();
    root.walk(ROOT, o, &["other"]).unwrap();
    create_file(&root, o, "secret", b"other tree");

    let c = env.attach(0);
    c.mkdir(ROOT, "sub", 0o755, 0).unwrap();
    let top = c.getattr(ROOT, 0x7ff).unwrap().qid.path;
    // `..` from the attach root, and back up from below, never passes the root.
    for path in [
        &[".."][..],
        &["..", ".."],
        &["sub", "..", ".."],
        &["sub", "..", "..", ".."],
    ] {
        let qs = c.walk(ROOT, Fid(20), path).unwrap();
        assert_eq!(qs.len(), path.len());
        assert_eq!(qs.last().map(|q| q.path), Some(top), "{path:?}");
        c.clunk(Fid(20)).unwrap();
    }
    // The walk stops after `..` (9P returns the qids of the steps that succeeded).
    let qs = c.walk(ROOT, Fid(20), &["..", "other"]).unwrap();
    assert_eq!(qs.iter().map(|q| q.path).collect::<Vec<_>>(), vec![top]);
    assert_eq!(errno(c.walk(ROOT, Fid(20), &["../other"])), E(libc::EINVAL));
    assert_eq!(errno(c.walk(ROOT, Fid(20), &["sub/.."])), E(libc::EINVAL));
    // Symlinks are data: the server never follows one.
    c.symlink(ROOT, "passwd", "/etc/passwd", 0).unwrap();
    c.symlink(ROOT, "up", "../other", 0).unwrap();
    let l = c.alloc_fid();
    c.walk(ROOT, l, &["passwd"]).unwrap();
    assert_eq!(c.readlink(l).unwrap(), "/etc/passwd");
    assert_eq!(errno(c.lopen(l, O_RDONLY).map(drop)), E(libc::EOPNOTSUPP));
    let qs = c.walk(ROOT, Fid(21), &["up", "secret"]).unwrap();
    assert_eq!(qs.len(), 1, "stops at the symlink");
    assert_eq!(qs[0].ty, qid_type::SYMLINK);
    // An attach path cannot climb either.
    assert_eq!(
        errno(c.attach(Fid(30), Fid::NOFID, "root", "/default/../other", 0)),
        E(libc::EINVAL)
    );
    // Renames and links into another tree are cross-device.
    c.attach(Fid(40), Fid::NOFID, "root", "/", 0).unwrap();
    c.walk(Fid(40), Fid(41), &["other"]).unwrap();
    c.walk(ROOT, Fid(42), &["sub"]).unwrap();
    assert_eq!(errno(c.rename(Fid(42), Fid(41), "x")), E(libc::EXDEV));
    assert_eq!(errno(c.link(Fid(41), l, "x")), E(libc::EXDEV));
}

#[test]
fn unix_socket_peer_of_own_uid_granted_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("envoyd.sock");
    let mut cfg = common::config(&dir.path().join("data"), 64);
    cfg.listen = vec![dom0_envoyd::config::Endpoint::Unix(sock.clone())];
    let server = dom0_envoyd::Server::start(cfg).unwrap();
    let ep: guest_shim::endpoint::Endpoint = format!("unix:{}", sock.display()).parse().unwrap();
    let c = Client::connect(&ep).unwrap();
    c.set_timeout(Some(Duration::from_secs(20)));
    c.handshake(65536, "9P2000.L").unwrap();
    c.attach(ROOT, Fid::NOFID, "root", "/", 0).unwrap();
    c.attach(Fid(2), Fid::NOFID, "root", "/default", 0).unwrap();
    drop(c);
    server.shutdown();
}

#[test]
fn image_grant_rw_head_snapshot_always_read_only() {
    let env = Env::new();
    let images = env.server().images();
    images.create("/tenants/web").unwrap();
    let a = env.client("9P2000.L");
    a.attach(ROOT, Fid::NOFID, "root", "/tenants/web", 0)
        .unwrap();
    create_file(&a, ROOT, "index.html", b"v1");
    let snap = images.snapshot("/tenants/web").unwrap();
    let acc = env.server().access();
    acc.grant("/tenants", "tcp:127.0.0.2 mount-rw squash path=web")
        .unwrap();
    acc.grant(
        "/tenants",
        &format!("tcp:127.0.0.2 mount-rw any path=web@{}", snap.number),
    )
    .unwrap();
    let s = stranger(&env);
    // The head: read-write as granted (root squashed, so the root-owned directory is closed).
    s.attach(ROOT, Fid::NOFID, "root", "/tenants/web", 1000)
        .unwrap();
    assert_eq!(read_file(&s, ROOT, "index.html").unwrap(), b"v1");
    // The snapshot: read-only whatever the grant says.
    s.attach(Fid(2), Fid::NOFID, "root", &snap.path, 0).unwrap();
    assert_eq!(read_file(&s, Fid(2), "index.html").unwrap(), b"v1");
    let f = s.alloc_fid();
    s.walk(Fid(2), f, &[]).unwrap();
    assert_eq!(
        errno(s.lcreate(f, "x", O_RDWR, 0o644, 0).map(drop)),
        E(libc::EROFS)
    );
    let g = s.alloc_fid();
    s.walk(Fid(2), g, &["index.html"]).unwrap();
    assert_eq!(errno(s.lopen(g, O_RDWR).map(drop)), E(libc::EROFS));
    // The administrative directory above is not the image: no admin right, no attach.
    assert_eq!(
        errno(s.attach(Fid(3), Fid::NOFID, "root", "/tenants", 0)),
        E(libc::EACCES)
    );
    // Credential files inside an image mean nothing.
    create_file(&a, ROOT, ".access", b"tcp:127.0.0.2 admin any\n");
    assert_eq!(
        errno(s.attach(Fid(3), Fid::NOFID, "root", "/tenants", 0)),
        E(libc::EACCES)
    );
}

#[test]
fn rights_for_reports_fork_below_granted_dir() {
    let env = Env::new();
    env.server().images().create("/templates/debian").unwrap();
    let acc = env.server().access();
    acc.grant("/templates", "tcp:127.0.0.0/30 fork uid=65534")
        .unwrap();
    let who = dom0_envoyd::access::Who {
        peer: dom0_envoyd::transport::Peer::Tcp("127.0.0.2:999".parse().unwrap()),
        key: None,
    };
    use dom0_envoyd::access::Rights;
    let r = acc.rights_for(&who, "/templates/debian").unwrap();
    assert!(r.contains(Rights::FORK) && r.contains(Rights::MOUNT_RO));
    assert!(!r.contains(Rights::MOUNT_RW) && !r.contains(Rights::ADMIN));
    // Paths that do not exist yet (a fork's destination) are judged by the dirs above.
    let r = acc.rights_for(&who, "/templates/new/fork").unwrap();
    assert!(r.contains(Rights::FORK));
    assert_eq!(acc.rights_for(&who, "/elsewhere").unwrap(), Rights::NONE);
    let s = stranger(&env);
    s.attach(ROOT, Fid::NOFID, "root", "/templates/debian", 0)
        .unwrap();
    let f = s.alloc_fid();
    s.walk(ROOT, f, &[]).unwrap();
    assert_eq!(
        errno(s.lcreate(f, "x", O_RDWR, 0o644, 0).map(drop)),
        E(libc::EROFS),
        "fork gives read access only"
    );
}
