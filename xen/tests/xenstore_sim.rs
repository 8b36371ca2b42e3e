//! The xenstore client against the simulator's daemon, over the real wire protocol: dom0
//! through the `xenstored.sock` path, a guest through a socket handed over by the control
//! socket.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use envoy_xen::sim::client::SimCtl;
use envoy_xen::sim::SimXen;
use envoy_xen::xenstore::client::XsClient;
use envoy_xen::xenstore::{WatchEvent, Xenstore, XenstoreExt, XsErrno, XsError};
use envoy_xen::{DomId, TxId};

const T: Duration = Duration::from_secs(5);

fn start() -> (SimXen, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (SimXen::start(dir.path()).unwrap(), dir)
}

#[test]
fn xenstore_read_write_directory_rm_errors_typed() {
    let (sim, _d) = start();
    let xs = XsClient::connect_socket(&sim.xenstored_path()).unwrap();
    xs.write(TxId::NONE, "/t/a/b", b"1").unwrap();
    xs.write(TxId::NONE, "/t/a/c", b"22").unwrap();
    assert_eq!(xs.read(TxId::NONE, "/t/a/c").unwrap(), b"22");
    let mut names = xs.directory(TxId::NONE, "/t/a").unwrap();
    names.sort();
    assert_eq!(names, ["b", "c"]);
    assert_eq!(xs.read_u32(TxId::NONE, "/t/a/c").unwrap(), Some(22));
    xs.rm(TxId::NONE, "/t/a").unwrap();
    let e = xs.read(TxId::NONE, "/t/a/b").unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert_eq!(xs.read_opt(TxId::NONE, "/t/a/b").unwrap(), None);
    match xs.read(TxId::NONE, "/t//x") {
        Err(XsError::Remote {
            errno: XsErrno::Inval,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    xs.write(TxId::NONE, "/t/n", b"x").unwrap();
    assert!(matches!(
        xs.read_u32(TxId::NONE, "/t/n"),
        Err(XsError::Protocol { .. })
    ));
    assert_eq!(xs.domain_path(DomId(3)).unwrap(), "/local/domain/3");
}

#[test]
fn xenstore_watch_fires_at_once_then_on_change_not_after_unwatch() {
    let (sim, _d) = start();
    let xs = XsClient::connect_socket(&sim.xenstored_path()).unwrap();
    let other = XsClient::connect_socket(&sim.xenstored_path()).unwrap();
    xs.watch("/w", "tok").unwrap();
    let ev = xs.next_event(T).unwrap().unwrap();
    assert_eq!(
        ev,
        WatchEvent {
            path: "/w".into(),
            token: "tok".into()
        }
    );
    other.write(TxId::NONE, "/w/x/y", b"v").unwrap();
    let ev = xs.next_event(T).unwrap().unwrap();
    assert_eq!(ev.path, "/w/x/y");
    other.write(TxId::NONE, "/elsewhere", b"v").unwrap();
    assert_eq!(xs.next_event(Duration::from_millis(100)).unwrap(), None);
    xs.unwatch("/w", "tok").unwrap();
    other.write(TxId::NONE, "/w/z", b"v").unwrap();
    assert_eq!(xs.next_event(Duration::from_millis(100)).unwrap(), None);
    assert!(xs.unwatch("/w", "tok").unwrap_err().is_not_found());
}

#[test]
fn xenstore_transaction_conflict_eagain_retry_commits_abort_discards() {
    let (sim, _d) = start();
    let a = XsClient::connect_socket(&sim.xenstored_path()).unwrap();
    let b = XsClient::connect_socket(&sim.xenstored_path()).unwrap();
    a.write(TxId::NONE, "/tx/n", b"1").unwrap();
    let tx = a.transaction_start().unwrap();
    assert_eq!(a.read(tx, "/tx/n").unwrap(), b"1");
    a.write(tx, "/tx/m", b"from-tx").unwrap();
    assert!(b.read(TxId::NONE, "/tx/m").unwrap_err().is_not_found());
    b.write(TxId::NONE, "/tx/n", b"2").unwrap();
    assert!(a.transaction_end(tx, true).unwrap_err().is_again());
    assert!(a.read(TxId::NONE, "/tx/m").unwrap_err().is_not_found());
    let tx = a.transaction_start().unwrap();
    a.read(tx, "/tx/n").unwrap();
    a.write(tx, "/tx/m", b"from-tx").unwrap();
    a.transaction_end(tx, true).unwrap();
    assert_eq!(b.read(TxId::NONE, "/tx/m").unwrap(), b"from-tx");
    let tx = a.transaction_start().unwrap();
    a.write(tx, "/tx/gone", b"x").unwrap();
    a.transaction_end(tx, false).unwrap();
    assert!(b.read(TxId::NONE, "/tx/gone").unwrap_err().is_not_found());
}

#[test]
fn xenstore_guest_connection_relative_paths_in_its_domain() {
    let (sim, _d) = start();
    sim.create_domain(DomId(5), 16).unwrap();
    let ctl = SimCtl::connect(&sim.ctl_path(), DomId(5)).unwrap();
    let xs = ctl.xenstore().unwrap();
    xs.write(TxId::NONE, "data/k", b"v").unwrap();
    assert_eq!(sim.read("/local/domain/5/data/k").unwrap(), b"v");
    xs.watch("data", "t").unwrap();
    assert_eq!(xs.next_event(T).unwrap().unwrap().path, "data");
    sim.write("/local/domain/5/data/j", b"w");
    assert_eq!(xs.next_event(T).unwrap().unwrap().path, "data/j");
}
