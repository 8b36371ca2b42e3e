//! Extended attributes of objects: set, get, list, replace, remove, copy, gone with delete.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use envoy_storage::{Attributes, EngineChoice, ObjectId, ObjectKind, ObjectStore, StoreOptions};

fn store(dir: &std::path::Path) -> ObjectStore {
    ObjectStore::create(
        dir,
        StoreOptions {
            engine: EngineChoice::Sync,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

#[test]
fn xattr_set_get_list_remove_copy() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let a = ObjectId(10);
    let b = ObjectId(11);
    s.create_object(a, &Attributes::new(ObjectKind::Regular, 0o644))
        .unwrap();
    assert_eq!(s.xattr_get(a, "user.x").unwrap(), None);
    s.xattr_set(a, "user.x", b"value").unwrap();
    s.xattr_set(a, "security.selinux", b"ctx\0").unwrap();
    assert_eq!(
        s.xattr_get(a, "user.x").unwrap().as_deref(),
        Some(&b"value"[..])
    );
    s.xattr_set(a, "user.x", b"v2").unwrap();
    assert_eq!(
        s.xattr_get(a, "user.x").unwrap().as_deref(),
        Some(&b"v2"[..])
    );
    let mut names = s.xattr_list(a).unwrap();
    names.sort();
    assert_eq!(
        names,
        vec!["security.selinux".to_string(), "user.x".to_string()]
    );
    s.clone_object(a, b).unwrap();
    s.xattr_copy(a, b).unwrap();
    assert_eq!(
        s.xattr_get(b, "security.selinux").unwrap().as_deref(),
        Some(&b"ctx\0"[..])
    );
    assert!(s.xattr_remove(a, "user.x").unwrap());
    assert!(!s.xattr_remove(a, "user.x").unwrap());
    assert_eq!(s.xattr_get(a, "user.x").unwrap(), None);
    assert_eq!(
        s.xattr_get(b, "user.x").unwrap().as_deref(),
        Some(&b"v2"[..])
    );
    s.delete(b).unwrap();
    assert!(s.xattr_get(b, "user.x").unwrap_err().is_not_found());
    assert!(s.xattr_set(a, "bad\0name", b"").is_err());
    let report = envoy_storage::check::check(dir.path());
    drop(s);
    assert!(report.is_clean(), "{report}");
}
