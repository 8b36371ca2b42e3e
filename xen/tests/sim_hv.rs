//! The simulated gntdev and evtchn: grants are checked like Xen checks them, mapped pages
//! are the guest's pages, and event channels connect exactly the two ends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use envoy_xen::hv::{EventChannels, GrantMapper, HvError};
use envoy_xen::sim::client::{SimCtl, SimEvtchns, SimGrants, SimGuest};
use envoy_xen::sim::{SimXen, GTF_PERMIT_ACCESS, GTF_READONLY};
use envoy_xen::{DomId, EvtchnPort, GrantRef};

fn setup() -> (SimXen, tempfile::TempDir, SimGuest, Arc<SimCtl>) {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimXen::start(dir.path()).unwrap();
    sim.create_domain(DomId(4), 64).unwrap();
    let guest = SimGuest::claim(&sim.ctl_path(), DomId(4)).unwrap();
    let dom0 = Arc::new(SimCtl::connect(&sim.ctl_path(), DomId(0)).unwrap());
    (sim, dir, guest, dom0)
}

#[test]
fn sim_grant_map_contiguous_sees_guest_writes() {
    let (_sim, _d, guest, dom0) = setup();
    let f = guest.alloc_pages(2).unwrap();
    // Granted in reverse order: the mapping follows the refs, not the frames.
    let r1 = guest.grant(DomId(0), f + 1).unwrap();
    let r0 = guest.grant(DomId(0), f).unwrap();
    guest
        .memory()
        .write_all_at(b"frame-f", u64::from(f) * 4096)
        .unwrap();
    guest
        .memory()
        .write_all_at(b"frame-f+1", u64::from(f + 1) * 4096)
        .unwrap();
    let m = SimGrants::new(dom0).map(DomId(4), &[r1, r0]).unwrap();
    assert_eq!(m.len(), 8192);
    let mut first = [0u8; 9];
    let mut second = [0u8; 7];
    // SAFETY: the mapping is 8192 bytes long and alive; no one else writes these bytes now.
    unsafe {
        std::ptr::copy_nonoverlapping(m.as_ptr(), first.as_mut_ptr(), 9);
        std::ptr::copy_nonoverlapping(m.as_ptr().add(4096), second.as_mut_ptr(), 7);
    }
    assert_eq!(&first, b"frame-f+1");
    assert_eq!(&second, b"frame-f");
}

#[test]
fn sim_grant_checks_refuse_bad_grants() {
    let (_sim, _d, guest, dom0) = setup();
    let g = SimGrants::new(dom0);
    let f = guest.alloc_pages(1).unwrap();
    let cases = [
        (GrantRef(100), 0, DomId(0), f, "not granted"),
        (
            GrantRef(101),
            GTF_PERMIT_ACCESS | GTF_READONLY,
            DomId(0),
            f,
            "read-only",
        ),
        (
            GrantRef(102),
            GTF_PERMIT_ACCESS,
            DomId(9),
            f,
            "granted to domain 9",
        ),
        (GrantRef(103), GTF_PERMIT_ACCESS, DomId(0), 1, "outside"),
        (
            GrantRef(104),
            GTF_PERMIT_ACCESS,
            DomId(0),
            1_000_000,
            "outside",
        ),
    ];
    for (r, flags, to, frame, why) in cases {
        guest.set_grant(r, flags, to, frame).unwrap();
        match g.map(DomId(4), &[r]) {
            Err(HvError::BadGrant { reason, .. }) => assert!(reason.contains(why), "{reason}"),
            Err(e) => panic!("{why}: {e}"),
            Ok(_) => panic!("{why}: mapped"),
        }
    }
    assert!(matches!(
        g.map(DomId(4), &[GrantRef(1 << 30)]),
        Err(HvError::BadGrant { .. })
    ));
    assert!(matches!(g.map(DomId(4), &[]), Err(HvError::TooMany { .. })));
    assert!(g.map(DomId(77), &[GrantRef(8)]).is_err(), "no such domain");
}

#[test]
fn sim_evtchn_binds_once_for_the_right_domain_and_notifies_both_ways() {
    let (sim, _d, guest, dom0) = setup();
    let other = SimCtl::connect(&sim.ctl_path(), DomId(3)).unwrap();
    let front = guest.ctl().alloc_unbound(DomId(0)).unwrap();
    let port = envoy_xen::hv::EventChannel::local_port(&front);
    let e = SimEvtchns::new(Arc::new(other));
    assert!(matches!(
        e.bind_interdomain(DomId(4), port),
        Err(HvError::BadPort { .. })
    ));
    let evt = SimEvtchns::new(dom0);
    assert!(evt.bind_interdomain(DomId(4), EvtchnPort(999)).is_err());
    let back = evt.bind_interdomain(DomId(4), port).unwrap();
    assert!(evt.bind_interdomain(DomId(4), port).is_err(), "bound twice");
    use envoy_xen::hv::EventChannel;
    assert!(!back.wait(Some(Duration::from_millis(20))).unwrap());
    front.notify().unwrap();
    assert!(back.wait(Some(Duration::from_secs(5))).unwrap());
    back.notify().unwrap();
    assert!(front.wait(Some(Duration::from_secs(5))).unwrap());
    // A kick wakes the local waiter without the peer.
    back.kick();
    assert!(back.wait(Some(Duration::from_secs(5))).unwrap());
}

/// The event channel as the ring crate's doorbell: a notification from the peer ends a
/// wait, a satisfied condition returns at once, and a quiet channel times out.
#[test]
fn sim_evtchn_as_ring_doorbell_wakes_on_peer_notify() {
    use envoy_ring::Doorbell;
    use envoy_xen::hv::{EventChannel, EvtchnBell};
    let (_sim, _d, guest, dom0) = setup();
    let front = guest.ctl().alloc_unbound(DomId(0)).unwrap();
    let back = SimEvtchns::new(dom0)
        .bind_interdomain(DomId(4), front.local_port())
        .unwrap();
    let bell = EvtchnBell(back);
    let t0 = std::time::Instant::now();
    bell.wait(&mut || true, Duration::from_secs(5)).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(1));
    let t0 = std::time::Instant::now();
    bell.wait(&mut || false, Duration::from_millis(50)).unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(40));
    front.notify().unwrap();
    let t0 = std::time::Instant::now();
    bell.wait(&mut || false, Duration::from_secs(5)).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(1));
    bell.notify().unwrap();
    assert!(front.wait(Some(Duration::from_secs(5))).unwrap());
}
