//! Hybrid vsock (`--listen vsock-uds:CID:PATH`): a connection to the socket is the guest with the
//! configured CID, and that CID is the principal the credential files match (`vsock:cid=N`).
//! The test plays the VMM's part (vhost-device-vsock connects to `<uds_path>_<port>` for a
//! guest's connection to host port `<port>` and then relays bytes only).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use common::*;
use dom0_envoyd::config::Endpoint;
use dom0_envoyd::Server;
use guest_shim::endpoint::{Closer, Connection};

/// A 9P2000.L client on the hybrid socket at `path`, as the VMM would open it for the guest.
fn guest(path: &Path) -> Client {
    let s = UnixStream::connect(path).unwrap();
    let c = Client::from_connection(Connection {
        reader: Box::new(s.try_clone().unwrap()),
        writer: Box::new(s.try_clone().unwrap()),
        closer: Closer::Unix(s),
    });
    c.set_timeout(Some(Duration::from_secs(20)));
    c.handshake(65536, "9P2000.L").unwrap();
    c
}

#[test]
fn vsock_uds_cid_is_principal_grant_admits_only_that_cid() {
    let dir = tempfile::tempdir().unwrap();
    let sockets = tempfile::tempdir().unwrap();
    let vm7 = sockets.path().join("vm7.vsock_5640");
    let vm8 = sockets.path().join("vm8.vsock_5640");
    let mut cfg = config(dir.path(), 1024);
    cfg.listen.push(Endpoint::VsockUds {
        cid: 7,
        path: vm7.clone(),
    });
    cfg.listen.push(Endpoint::VsockUds {
        cid: 8,
        path: vm8.clone(),
    });
    let server = Server::start(cfg).unwrap();

    // Arrange: a fresh store grants only this host's root/loopback, no vsock guest.
    let c = guest(&vm7);
    assert_eq!(
        errno(c.attach(ROOT, Fid::NOFID, "root", "/default", 0)),
        libc::EACCES as u32
    );

    // Act: grant CID 7.
    server
        .access()
        .grant("/", "vsock:cid=7 mount-rw any")
        .unwrap();

    // Assert: CID 7 attaches and writes; CID 8 (other socket) is still refused.
    let c7 = guest(&vm7);
    c7.attach(ROOT, Fid::NOFID, "root", "/default", 0).unwrap();
    create_file(&c7, ROOT, "from-cid7", b"hello from the guest");
    let c8 = guest(&vm8);
    assert_eq!(
        errno(c8.attach(ROOT, Fid::NOFID, "root", "/default", 0)),
        libc::EACCES as u32
    );

    // The host (TCP loopback, admin) sees the guest's file in the same image.
    let ep: guest_shim::endpoint::Endpoint = format!("tcp:{}", server.tcp_addr().unwrap())
        .parse()
        .unwrap();
    let host = Client::connect(&ep).unwrap();
    host.set_timeout(Some(Duration::from_secs(20)));
    host.handshake(65536, "9P2000.L").unwrap();
    host.attach(ROOT, Fid::NOFID, "root", "/default", 0)
        .unwrap();
    let f = host.alloc_fid();
    host.walk(ROOT, f, &["from-cid7"]).unwrap();
    host.lopen(f, O_RDONLY).unwrap();
    assert_eq!(host.read_all(f).unwrap(), b"hello from the guest");
    host.clunk(f).unwrap();

    drop((c, c7, c8, host));
    server.shutdown();
    assert!(!vm7.exists() && !vm8.exists());
    let report = envoy_storage::check::check(dir.path());
    assert!(report.is_clean(), "store not clean:\n{report}");
}
