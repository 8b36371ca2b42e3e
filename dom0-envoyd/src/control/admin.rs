//! Image and credential requests: the control socket's bridge to [`crate::images`],
//! [`crate::images::import`] and [`crate::access`]. Their result types carry no serde; the
//! JSON shapes (documented in [`crate::control`]) are built here.

use std::path::Path;

use serde_json::{json, Value};

use crate::images::{ImageInfo, Progress, SnapshotInfo};
use crate::server::Shared;

use super::{ControlError, ProgressLine, Request};

/// Why an administrative request failed. Every variant's text is the layer's own operator
/// sentence.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Images, snapshots, forks.
    #[error(transparent)]
    Image(#[from] crate::images::ImageError),
    /// Import of a directory tree or archive (nothing was published).
    #[error(transparent)]
    Import(#[from] crate::images::import::ImportError),
    /// Credentials and bindings.
    #[error("{0}{advice}", advice = access_advice(.0))]
    Access(#[from] crate::access::AccessError),
    /// A read-only request reached this module (a bug).
    #[error("envoyd sent a status request to its image handler; please report this")]
    Misrouted,
    /// An import source that is not absolute.
    #[error("the import source {0} is not an absolute path: envoyd resolves it on its own host; give the full path")]
    RelativeSource(String),
}

/// What to do after an access error that does not say so itself.
fn access_advice(e: &crate::access::AccessError) -> &'static str {
    match e {
        crate::access::AccessError::Missing { .. } => ": list what is there with `envoyctl grants`",
        _ => "",
    }
}

fn snapshot_json(s: &SnapshotInfo) -> Value {
    json!({ "path": s.path, "number": s.number })
}

fn image_json(i: &ImageInfo) -> Value {
    json!({
        "path": i.path,
        "snapshots": i.snapshots.iter().map(snapshot_json).collect::<Vec<_>>(),
        "origin": i.origin,
        "forks": i.forks,
    })
}

fn delete_json(d: &crate::images::DeleteReport) -> Value {
    json!({
        "objects_freed": d.objects_freed,
        "bytes_freed": d.bytes_freed,
        "before": { "objects": d.before.objects, "bytes": d.before.bytes },
        "after": { "objects": d.after.objects, "bytes": d.after.bytes },
    })
}

fn adapt(progress: &dyn Fn(ProgressLine)) -> impl Fn(&Progress) + '_ {
    move |p: &Progress| {
        progress(ProgressLine {
            phase: p.phase.to_string(),
            done: p.done,
            total: p.total,
        })
    }
}

fn run(
    shared: &Shared,
    req: Request,
    progress: &dyn Fn(ProgressLine),
) -> Result<Value, AdminError> {
    let images = &shared.images;
    let access = &shared.access;
    Ok(match req {
        Request::ImageList => Value::Array(images.list()?.iter().map(image_json).collect()),
        Request::ImageInfo { path } => image_json(&images.info(&path)?),
        Request::ImageCreate { path } => image_json(&images.create(&path)?),
        Request::ImageSnapshot { path } => snapshot_json(&images.snapshot(&path)?),
        Request::ImageFork { source, dest } => image_json(&images.fork(&source, &dest)?),
        Request::ImageDelete { path } => {
            delete_json(&images.delete_image(&path, &adapt(progress))?)
        }
        Request::SnapshotDelete { path } => {
            delete_json(&images.delete_snapshot(&path, &adapt(progress))?)
        }
        Request::ImageImport { source, dest } => {
            let src = Path::new(&source);
            if !src.is_absolute() {
                return Err(AdminError::RelativeSource(source));
            }
            let r = crate::images::import::import(images, src, &dest, &adapt(progress))?;
            json!({
                "image": r.path,
                "files": r.files,
                "directories": r.directories,
                "symlinks": r.symlinks,
                "special": r.special,
                "hard_links": r.hard_links,
                "xattrs": r.xattrs,
                "bytes": r.bytes,
            })
        }
        Request::Grants => {
            let grants: Vec<Value> = access
                .grants()?
                .iter()
                .map(
                    |g| json!({ "dir": g.dir, "line": g.line, "entry": g.entry, "error": g.error }),
                )
                .collect();
            let bindings: Vec<Value> = access
                .bindings()
                .iter()
                .map(|b| json!({ "endpoint": b.endpoint, "principal": b.principal }))
                .collect();
            json!({ "grants": grants, "bindings": bindings, "keys": access.keys() })
        }
        Request::Grant { dir, entry } => {
            access.grant(&dir, &entry)?;
            Value::Null
        }
        Request::Revoke { dir, principal } => {
            access.revoke(&dir, &principal)?;
            Value::Null
        }
        Request::Bind {
            endpoint,
            principal,
        } => {
            access.bind(&endpoint, &principal)?;
            Value::Null
        }
        Request::Unbind { endpoint } => {
            access.unbind(&endpoint)?;
            Value::Null
        }
        Request::KeySet { name, secret } => {
            access.set_key(&name, secret.as_bytes())?;
            Value::Null
        }
        Request::KeyRemove { name } => {
            access.remove_key(&name)?;
            Value::Null
        }
        Request::Status | Request::Stats | Request::Sessions | Request::Territories => {
            return Err(AdminError::Misrouted)
        }
    })
}

/// Runs an image or credential request.
pub fn execute(
    shared: &Shared,
    req: Request,
    progress: &dyn Fn(ProgressLine),
) -> Result<Value, ControlError> {
    run(shared, req, progress).map_err(ControlError::Admin)
}
