//! The operator's control socket and its protocol.
//!
//! envoyd listens on a Unix socket (`--control PATH`, default `<data dir>/control.sock`),
//! created with mode 0600. Only a peer whose uid (`SO_PEERCRED`) is envoyd's own effective
//! uid, or root, is served; anyone else gets one error line and the connection is closed.
//! A stale socket file (nobody answers on it) is replaced at start; a live one (another
//! envoyd) or a path that is not a socket makes the start fail. The socket goes away at
//! shutdown. `envoyctl` ([`client`]) is the client.
//!
//! # Protocol: JSON lines
//!
//! The client sends one JSON object per line (at most [`MAX_REQUEST`] bytes); envoyd answers
//! each request, in order, with zero or more progress lines followed by exactly one final
//! line:
//!
//! ```text
//! → {"op":"snapshot.delete","path":"/tenants/bob/web@1"}
//! ← {"progress":{"phase":"catalogue","done":1200,"total":5000}}
//! ← {"progress":{"phase":"delete","done":5000,"total":5000}}
//! ← {"ok":{"objects_freed":371,"bytes_freed":1523712,...}}
//!
//! → {"op":"image.info","path":"/tenants/bob/nope"}
//! ← {"error":"no image at /tenants/bob/nope: list images with `envoyctl image list`"}
//! ```
//!
//! An error is a sentence for the operator: what was wrong and what to do. A malformed line,
//! an unknown `op`, a missing or unknown field and an over-long line all get an `error`
//! reply, and the connection keeps serving.
//!
//! ## Requests and their `ok` values
//!
//! | request | `ok` value |
//! |---|---|
//! | `{"op":"status"}` | [`report::StatusReport`]: `version, pid, uptime_s, data_dir, endpoints[], workers, connections, requests, cache_capacity, max_msize` |
//! | `{"op":"stats"}` | [`report::StatsReport`]: `uptime_s, connections, requests, writes, locks, ops[{op, count, errors, mean_ns, p50_ns, p99_ns, p999_ns}], cache{dir_hits, dir_misses, dir_hit_rate, data_hits, data_misses, data_bypassed, data_hit_rate, evictions, entries, bytes, capacity}, storage{read_requests, read_bytes, write_requests, write_bytes}` |
//! | `{"op":"sessions"}` | `[`[`report::SessionReport`]`]`: `{id, peer, principal, dialect, msize, fids[{fid, path, open, uid, rights, read_only}]}` |
//! | `{"op":"territories"}` | [`report::TerritoriesReport`]: `envoy, territories[{id, root, owner, exits[], claims, claimed_dirs[]}]` |
//! | `{"op":"image.list"}` | `[image]`, image = `{path, snapshots[{path, number}], origin, forks[]}` |
//! | `{"op":"image.info","path":P}` | image |
//! | `{"op":"image.create","path":P}` | image |
//! | `{"op":"image.snapshot","path":HEAD}` | `{path, number}` |
//! | `{"op":"image.fork","source":HEAD_OR_SNAPSHOT,"dest":P}` | image |
//! | `{"op":"image.delete","path":HEAD}` (progress) | delete report = `{objects_freed, bytes_freed, before{objects, bytes}, after{objects, bytes}}` |
//! | `{"op":"snapshot.delete","path":"HEAD@N"}` (progress) | delete report |
//! | `{"op":"image.import","source":HOST_PATH,"dest":P}` (progress) | `{image, files, directories, bytes}` |
//! | `{"op":"grants"}` | `{grants[{dir, line, entry, error}], bindings[{endpoint, principal}], keys[]}` (`error`: why a line is ignored, else `null`) |
//! | `{"op":"grant","dir":D,"entry":LINE}` | `null` |
//! | `{"op":"revoke","dir":D,"principal":WHO}` | `null` |
//! | `{"op":"bind","endpoint":E,"principal":WHO}` | `null` |
//! | `{"op":"unbind","endpoint":E}` | `null` |
//! | `{"op":"key.set","name":N,"secret":S}` | `null` (envoyd keeps a salted hash of `S`) |
//! | `{"op":"key.remove","name":N}` | `null` |
//!
//! Progress lines are `{"progress":{"phase":NAME,"done":N,"total":M}}`.

pub mod admin;
pub mod client;
pub mod report;
pub mod server;

use serde::{Deserialize, Serialize};

use crate::server::Shared;

/// Longest request line accepted.
pub const MAX_REQUEST: usize = 64 * 1024;

/// One request. The JSON form is internally tagged by `op`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", deny_unknown_fields)]
pub enum Request {
    /// Server status.
    #[serde(rename = "status")]
    Status,
    /// Counters and latencies.
    #[serde(rename = "stats")]
    Stats,
    /// 9P connections and their fids.
    #[serde(rename = "sessions")]
    Sessions,
    /// Territory table.
    #[serde(rename = "territories")]
    Territories,
    /// Every image.
    #[serde(rename = "image.list")]
    ImageList,
    /// One image.
    #[serde(rename = "image.info")]
    ImageInfo {
        /// Head path.
        path: String,
    },
    /// A new empty image.
    #[serde(rename = "image.create")]
    ImageCreate {
        /// Head path.
        path: String,
    },
    /// A read-only snapshot of a head.
    #[serde(rename = "image.snapshot")]
    ImageSnapshot {
        /// Head path.
        path: String,
    },
    /// A new image from a snapshot.
    #[serde(rename = "image.fork")]
    ImageFork {
        /// `head@N`, or a head: a new snapshot of the live head is taken and forked.
        source: String,
        /// New head path.
        dest: String,
    },
    /// Deletes an image with its snapshots.
    #[serde(rename = "image.delete")]
    ImageDelete {
        /// Head path.
        path: String,
    },
    /// Builds an image from a host directory or tar archive.
    #[serde(rename = "image.import")]
    ImageImport {
        /// Host path of the directory or archive.
        source: String,
        /// New head path.
        dest: String,
    },
    /// Deletes one snapshot.
    #[serde(rename = "snapshot.delete")]
    SnapshotDelete {
        /// `head@N`.
        path: String,
    },
    /// Credential entries and endpoint bindings.
    #[serde(rename = "grants")]
    Grants,
    /// Adds or replaces a credential line.
    #[serde(rename = "grant")]
    Grant {
        /// Administrative directory.
        dir: String,
        /// The credential line.
        entry: String,
    },
    /// Removes a principal's credential line.
    #[serde(rename = "revoke")]
    Revoke {
        /// Administrative directory.
        dir: String,
        /// The principal.
        principal: String,
    },
    /// Binds an endpoint to a principal.
    #[serde(rename = "bind")]
    Bind {
        /// The endpoint.
        endpoint: String,
        /// The principal.
        principal: String,
    },
    /// Removes an endpoint binding.
    #[serde(rename = "unbind")]
    Unbind {
        /// The endpoint.
        endpoint: String,
    },
    /// Sets (adds or replaces) a Tauth key's secret.
    #[serde(rename = "key.set")]
    KeySet {
        /// Key name (the principal is `key:NAME`).
        name: String,
        /// The secret; envoyd stores only a salted hash.
        secret: String,
    },
    /// Removes a Tauth key.
    #[serde(rename = "key.remove")]
    KeyRemove {
        /// Key name.
        name: String,
    },
}

/// Every `op` name, for error messages.
pub const OPS: &[&str] = &[
    "status",
    "stats",
    "sessions",
    "territories",
    "image.list",
    "image.info",
    "image.create",
    "image.snapshot",
    "image.fork",
    "image.delete",
    "image.import",
    "snapshot.delete",
    "grants",
    "grant",
    "revoke",
    "bind",
    "unbind",
    "key.set",
    "key.remove",
];

/// Progress of a long request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressLine {
    /// Phase name.
    pub phase: String,
    /// Units done.
    pub done: u64,
    /// Units in all.
    pub total: u64,
}

/// A line from envoyd: progress, or the final reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    /// Progress of the request.
    Progress(ProgressLine),
    /// Success, with the request's value.
    Ok(serde_json::Value),
    /// Failure: a sentence for the operator.
    Error(String),
}

/// Why a request failed; every message is an operator sentence.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Not a JSON object.
    #[error("the request is not valid JSON ({0}): send one JSON object per line, e.g. {{\"op\":\"status\"}}")]
    Json(#[source] serde_json::Error),
    /// No `op` string.
    #[error("the request has no \"op\" field: say what to do, e.g. {{\"op\":\"status\"}}")]
    NoOp,
    /// Unknown `op`.
    #[error("unknown operation {op:?}: the operations are {}", OPS.join(", "))]
    UnknownOp {
        /// What was asked.
        op: String,
    },
    /// Fields wrong for the op.
    #[error(
        "bad {op} request ({source}): see the request table in envoyctl's protocol documentation"
    )]
    Fields {
        /// The op.
        op: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// A field the op does not take.
    #[error(
        "{op} takes no field {field:?}: see the request table in envoyctl's protocol documentation"
    )]
    UnknownField {
        /// The op.
        op: String,
        /// The stray field.
        field: String,
    },
    /// Line too long.
    #[error("request longer than {0} bytes: send one request per line")]
    TooLong(usize),
    /// The request failed in the image layer.
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    /// A reply would not serialise (a bug).
    #[error("envoyd could not encode its reply ({0}); please report this")]
    Encode(#[source] serde_json::Error),
}

/// Parses one request line.
pub fn parse_request(line: &[u8]) -> Result<Request, ControlError> {
    let v: serde_json::Value = serde_json::from_slice(line).map_err(ControlError::Json)?;
    let op = match v.get("op") {
        Some(serde_json::Value::String(s)) => s.clone(),
        _ => return Err(ControlError::NoOp),
    };
    if !OPS.contains(&op.as_str()) {
        return Err(ControlError::UnknownOp { op });
    }
    let req: Request =
        serde_json::from_value(v.clone()).map_err(|source| ControlError::Fields {
            op: op.clone(),
            source,
        })?;
    // serde ignores unknown fields of unit variants; check them all the same way.
    let known = serde_json::to_value(&req).map_err(ControlError::Encode)?;
    if let (Some(given), Some(known)) = (v.as_object(), known.as_object()) {
        if let Some(field) = given.keys().find(|k| !known.contains_key(*k)) {
            return Err(ControlError::UnknownField {
                op,
                field: field.clone(),
            });
        }
    }
    Ok(req)
}

fn to_value<T: Serialize>(v: &T) -> Result<serde_json::Value, ControlError> {
    serde_json::to_value(v).map_err(ControlError::Encode)
}

/// Runs one request; long ones call `progress` along the way.
pub fn execute(
    shared: &Shared,
    req: Request,
    progress: &dyn Fn(ProgressLine),
) -> Result<serde_json::Value, ControlError> {
    match req {
        Request::Status => to_value(&report::status(shared)),
        Request::Stats => to_value(&report::stats(shared)),
        Request::Sessions => to_value(&report::sessions(shared)),
        Request::Territories => to_value(&report::territories(shared)),
        other => admin::execute(shared, other, progress),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_request_known_ops_round_trip() {
        let r = parse_request(br#"{"op":"image.fork","source":"/a@1","dest":"/b"}"#).unwrap();
        assert_eq!(
            r,
            Request::ImageFork {
                source: "/a@1".into(),
                dest: "/b".into()
            }
        );
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(parse_request(line.as_bytes()).unwrap(), r);
        assert_eq!(
            parse_request(br#"{"op":"status"}"#).unwrap(),
            Request::Status
        );
    }

    #[test]
    fn parse_request_bad_lines_give_sentences() {
        let e = parse_request(b"{nope").unwrap_err().to_string();
        assert!(
            e.contains("not valid JSON") && e.contains("{\"op\":\"status\"}"),
            "{e}"
        );
        let e = parse_request(br#"{"op":"frobnicate"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown operation \"frobnicate\"") && e.contains("stats"),
            "{e}"
        );
        let e = parse_request(br#"{"op":"image.create"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bad image.create request") && e.contains("path"),
            "{e}"
        );
        let e = parse_request(br#"{"op":"status","extra":1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("status takes no field \"extra\""), "{e}");
        let e = parse_request(br#"{"op":"image.info","path":"/a","x":1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("image.info"), "{e}");
        let e = parse_request(br#"[1,2]"#).unwrap_err().to_string();
        assert!(e.contains("no \"op\""), "{e}");
    }

    #[test]
    fn reply_lines_shapes() {
        let ok = serde_json::to_string(&Reply::Ok(serde_json::json!({"a":1}))).unwrap();
        assert_eq!(ok, r#"{"ok":{"a":1}}"#);
        let err = serde_json::to_string(&Reply::Error("x".into())).unwrap();
        assert_eq!(err, r#"{"error":"x"}"#);
        let p = serde_json::to_string(&Reply::Progress(ProgressLine {
            phase: "delete".into(),
            done: 1,
            total: 2,
        }))
        .unwrap();
        assert_eq!(p, r#"{"progress":{"phase":"delete","done":1,"total":2}}"#);
    }
}
