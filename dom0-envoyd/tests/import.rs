//! Image import (`images::import`) against the real image manager: archives become images
//! that forks share, failures publish nothing and free what they built, and an envoyd killed
//! in the middle of an import comes back without a half-made image.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dom0_envoyd::images::import::{import, ImportError};
use dom0_envoyd::images::{Images, Progress};
use dom0_envoyd::namespace::{Claim, Cred, Fs};

fn open(dir: &Path) -> (Arc<Fs>, Arc<Images>) {
    let store = envoy_storage::ObjectStore::open_or_create(
        dir,
        envoy_storage::StoreOptions {
            engine: envoy_storage::EngineChoice::Sync,
            ..Default::default()
        },
    )
    .unwrap();
    let fs = Fs::open(Arc::new(store), 8 << 20).unwrap();
    let images = Images::open(Arc::clone(&fs)).unwrap();
    (fs, images)
}

fn walk(fs: &Arc<Fs>, path: &str) -> Result<Claim, dom0_envoyd::error::FsError> {
    let mut cur = fs.root();
    for c in path.split('/').filter(|c| !c.is_empty()) {
        let next = fs.lookup(cur.node(), c.as_bytes(), Cred::user(0))?;
        cur = next;
    }
    Ok(cur)
}

fn read_all(fs: &Arc<Fs>, path: &str) -> Vec<u8> {
    let c = walk(fs, path).unwrap();
    fs.read(c.node(), 0, 1 << 20).unwrap().to_vec()
}

fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(data.len() as u64);
    b.append_data(&mut h, path, data).unwrap();
}

/// A small root file system: `n` files under usr/share/fN/ (100 a directory), /etc/hostname,
/// a symlink.
fn rootfs_tar(n: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, "etc/hostname", b"template\n", 0o644);
    for i in 0..n {
        let path = format!("usr/share/f{}/{i}", i / 100);
        file(&mut b, &path, format!("file {i}\n").as_bytes(), 0o644);
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(0);
    b.append_link(&mut h, "sbin/init", "/bin/busybox").unwrap();
    b.into_inner().unwrap()
}

fn usage(fs: &Fs) -> (u64, u64) {
    let u = fs.store().usage().unwrap();
    (u.objects, u.bytes)
}

#[test]
fn import_tar_forks_diverge_template_unchanged() {
    let t = tempfile::tempdir().unwrap();
    let (fs, images) = open(&t.path().join("store"));
    let src = t.path().join("rootfs.tar");
    std::fs::write(&src, rootfs_tar(20)).unwrap();
    let r = import(&images, &src, "/templates/base", &|_| {}).unwrap();
    assert_eq!(r.path, "/templates/base");
    assert_eq!((r.files, r.symlinks), (21, 1));
    images.fork("/templates/base", "/guests/g1").unwrap();
    images.fork("/templates/base", "/guests/g2").unwrap();

    let h = walk(&fs, "/guests/g1/etc/hostname").unwrap();
    fs.setattr(
        h.node(),
        &envoy_storage::AttrChange {
            size: Some(0),
            ..Default::default()
        },
    )
    .unwrap();
    fs.write(h.node(), 0, Bytes::from_static(b"g1\n")).unwrap();

    assert_eq!(read_all(&fs, "/guests/g1/etc/hostname"), b"g1\n");
    assert_eq!(read_all(&fs, "/guests/g2/etc/hostname"), b"template\n");
    assert_eq!(read_all(&fs, "/templates/base/etc/hostname"), b"template\n");
    assert_eq!(read_all(&fs, "/guests/g2/usr/share/f0/7"), b"file 7\n");
    let names: Vec<String> = images.list().unwrap().into_iter().map(|i| i.path).collect();
    for want in ["/templates/base", "/guests/g1", "/guests/g2"] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
}

#[test]
fn import_failing_midway_publishes_nothing_frees_objects_dest_reusable() {
    let t = tempfile::tempdir().unwrap();
    let (fs, images) = open(&t.path().join("store"));
    let before = usage(&fs);
    // 30 good files, then an entry that climbs out of the archive.
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..30 {
        file(&mut b, &format!("d/{i}"), &[7u8; 5000], 0o644);
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(1);
    h.as_old_mut().name[..6].copy_from_slice(b"../esc");
    h.set_cksum();
    b.append(&h, b"x".as_slice()).unwrap();
    let bad = t.path().join("bad.tar");
    std::fs::write(&bad, b.into_inner().unwrap()).unwrap();

    let e = import(&images, &bad, "/templates/x", &|_| {}).unwrap_err();
    assert!(matches!(e, ImportError::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("../esc"), "{e}");
    assert!(images.info("/templates/x").is_err());
    assert!(walk(&fs, "/templates/x").is_err());
    images.flush();
    let after = usage(&fs);
    // The admin directories made for /templates may stay; the 30 files may not.
    assert!(
        after.0 <= before.0 + 3,
        "objects {} -> {}: the failed import was not freed",
        before.0,
        after.0
    );

    let good = t.path().join("good.tar");
    std::fs::write(&good, rootfs_tar(3)).unwrap();
    let r = import(&images, &good, "/templates/x", &|_| {}).unwrap();
    assert_eq!(r.files, 4);
    assert_eq!(read_all(&fs, "/templates/x/etc/hostname"), b"template\n");
}

#[test]
fn import_onto_existing_image_refused_image_untouched() {
    let t = tempfile::tempdir().unwrap();
    let (fs, images) = open(&t.path().join("store"));
    let src = t.path().join("a.tar");
    std::fs::write(&src, rootfs_tar(1)).unwrap();
    import(&images, &src, "/templates/a", &|_| {}).unwrap();
    let e = import(&images, &src, "/templates/a", &|_| {}).unwrap_err();
    assert!(e.to_string().contains("/templates/a"), "{e}");
    assert_eq!(read_all(&fs, "/templates/a/etc/hostname"), b"template\n");
    let e = import(&images, &src, "/templates/a@1", &|_| {}).unwrap_err();
    assert!(e.to_string().contains("snapshot"), "{e}");
}

#[test]
fn import_directory_progress_ends_with_done_equal_total() {
    let t = tempfile::tempdir().unwrap();
    let (fs, images) = open(&t.path().join("store"));
    let src = t.path().join("tree");
    std::fs::create_dir_all(src.join("a/b")).unwrap();
    for i in 0..1500 {
        std::fs::write(src.join(format!("a/b/{i}")), [1u8; 100]).unwrap();
    }
    let seen = Mutex::new(Vec::new());
    let r = import(&images, &src, "/tree", &|p: &Progress| {
        seen.lock().unwrap().push((p.phase, p.done, p.total));
    })
    .unwrap();
    assert_eq!(r.files, 1500);
    let seen = seen.into_inner().unwrap();
    let imports: Vec<_> = seen.iter().filter(|p| p.0 == "import").collect();
    assert!(imports.len() >= 2, "{seen:?}");
    assert!(imports.windows(2).all(|w| w[0].1 <= w[1].1), "{seen:?}");
    let last = imports.last().unwrap();
    assert_eq!(last.1, last.2);
    assert_eq!(last.2, 1502 + 150_000);
    assert_eq!(read_all(&fs, "/tree/a/b/1499"), [1u8; 100]);
}

/// The real binaries: envoyd killed by SIGKILL while `envoyctl image import` runs; after a
/// restart the image does not exist, its objects are gone, and the same import succeeds.
#[test]
fn import_interrupted_by_kill_leaves_no_image_after_restart() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let ctl_sock = t.path().join("ctl.sock");
    let start = || {
        let _ = std::fs::remove_file(&ctl_sock);
        let child = Command::new(env!("CARGO_BIN_EXE_envoyd"))
            .arg("--data")
            .arg(&data)
            .arg("--listen")
            .arg(format!("unix:{}", t.path().join("9p.sock").display()))
            .arg("--control")
            .arg(&ctl_sock)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while !ctl_sock.exists() && t0.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    };
    let envoyctl = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_envoyctl"))
            .arg("--control")
            .arg(&ctl_sock)
            .args(args)
            .output()
            .unwrap()
    };
    let src = t.path().join("big.tar");
    std::fs::write(&src, rootfs_tar(3_000)).unwrap();
    let src_s = src.to_str().unwrap();

    let mut d = start();
    let baseline = String::from_utf8_lossy(&envoyctl(&["--json", "stats"]).stdout).into_owned();
    assert!(baseline.contains("storage"), "{baseline}");
    let mut imp = Command::new(env!("CARGO_BIN_EXE_envoyctl"))
        .arg("--control")
        .arg(&ctl_sock)
        .args(["image", "import", src_s, "/templates/big"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill envoyd at the first progress line of the import phase (1,000 entries in); if the
    // import finishes first, the test fails below (the image would exist after the restart).
    let mut lines = BufReader::new(imp.stderr.take().unwrap()).lines();
    let mut saw = Vec::new();
    for l in lines.by_ref() {
        let l = l.unwrap();
        let hit = l.contains("import");
        saw.push(l);
        if hit {
            break;
        }
    }
    d.kill().unwrap();
    d.wait().unwrap();
    let _ = imp.wait();
    assert!(!saw.is_empty(), "envoyctl printed no progress");

    let mut d = start();
    let list = envoyctl(&["image", "list"]);
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(!list.contains("/templates/big"), "{list}");
    let o = envoyctl(&["image", "import", src_s, "/templates/big"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    d.kill().unwrap();
    d.wait().unwrap();
    // Offline: the store holds the one published tree, not a second, abandoned one.
    let (fs, images) = open(&data);
    assert_eq!(
        read_all(&fs, "/templates/big/usr/share/f29/2999"),
        b"file 2999\n"
    );
    let objects = usage(&fs).0;
    assert!(
        objects < 3_000 + 200,
        "{objects} objects: the interrupted import's objects were not freed"
    );
    drop(images);
}
