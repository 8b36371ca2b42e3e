//! `envoyctl`: the operator's command line, a client of the control socket.
//!
//! Each command sends one request (see [`crate::control`] for the protocol), prints progress
//! lines to stderr as they arrive, and prints the result as a readable table, or as the raw
//! JSON `ok` value with `--json`. On error it prints the server's sentence and exits with
//! status 1 (2 for a command line it cannot parse, 3 when envoyd cannot be reached).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use serde::Deserialize;

use super::report::{
    human_bytes, render_sessions, render_stats, render_status, render_territories,
    render_territories_dot, table, SessionReport, StatsReport, StatusReport, TerritoriesReport,
};
use super::{ProgressLine, Reply, Request};

/// envoyctl's command line.
#[derive(Debug, Parser)]
#[command(name = "envoyctl", version, about = "Operate a running envoyd")]
pub struct Cli {
    /// The control socket (default: <data>/control.sock).
    #[arg(long, global = true)]
    pub control: Option<PathBuf>,
    /// envoyd's data directory, to find its control socket.
    #[arg(long, global = true, default_value = "./envoy-data")]
    pub data: PathBuf,
    /// Print the server's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// envoyctl commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Server status: version, uptime, endpoints, connections.
    Status,
    /// Request counts and latency percentiles per 9P operation, cache and storage traffic.
    Stats,
    /// 9P connections: peer, principal, msize, dialect, and their fids with paths.
    Sessions,
    /// Territories: root, owner, exits, claims (`--dot` for a Graphviz graph).
    Territories {
        /// Print Graphviz dot instead of a table.
        #[arg(long)]
        dot: bool,
    },
    /// Images: create, list, snapshot, fork, delete, import.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Snapshots: delete.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Credential entries and endpoint bindings.
    Grants,
    /// Adds or replaces a credential line in an administrative directory.
    Grant {
        /// Administrative directory, e.g. /tenants/alice.
        dir: String,
        /// The credential line (see the access documentation for its format).
        entry: String,
    },
    /// Removes a principal's credential line from an administrative directory.
    Revoke {
        /// Administrative directory.
        dir: String,
        /// The principal.
        principal: String,
    },
    /// Binds a 9P endpoint to a principal.
    Bind {
        /// The endpoint, e.g. vsock:5640 or unix:/run/vm1.sock.
        endpoint: String,
        /// The principal.
        principal: String,
    },
    /// Removes an endpoint's binding.
    Unbind {
        /// The endpoint.
        endpoint: String,
    },
    /// Tauth keys: set, remove.
    #[command(subcommand)]
    Key(KeyCmd),
}

/// `envoyctl key …`.
#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Sets a key's secret, read from the first line of standard input (envoyd keeps only a
    /// salted hash). Clients prove it through Tauth; grant `key:NAME` in credential files.
    Set {
        /// Key name.
        name: String,
    },
    /// Removes a key.
    Remove {
        /// Key name.
        name: String,
    },
}

/// `envoyctl image …`.
#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Creates an empty image (administrative directories above it are made as needed).
    Create {
        /// Head path, e.g. /tenants/alice/web.
        path: String,
    },
    /// Lists every image with its snapshots.
    List,
    /// Shows one image.
    Info {
        /// Head path.
        path: String,
    },
    /// Takes a read-only snapshot of an image's head.
    Snapshot {
        /// Head path.
        path: String,
    },
    /// Starts a new image from a snapshot (a head is snapshotted now and that new snapshot forked).
    Fork {
        /// `HEAD` or `HEAD@N`.
        source: String,
        /// New head path.
        dest: String,
    },
    /// Deletes an image and all its snapshots.
    Delete {
        /// Head path.
        path: String,
    },
    /// Builds a new image from a directory or tar archive on envoyd's host.
    Import {
        /// Directory or archive (.tar, .tar.gz, .tar.xz, .tar.zst), as envoyd sees it.
        source: PathBuf,
        /// New head path.
        path: String,
    },
}

/// `envoyctl snapshot …`.
#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// Deletes one snapshot, freeing the objects no other snapshot or fork shares.
    Delete {
        /// `HEAD@N`.
        path: String,
    },
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The socket could not be reached.
    #[error("cannot reach envoyd at {path} ({source}): is envoyd running? Point envoyctl at its socket with --control PATH or --data DIR")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The connection broke.
    #[error("lost the connection to envoyd ({0}): check envoyd's log")]
    Io(#[source] std::io::Error),
    /// envoyd sent something that is not a reply line.
    #[error("envoyd sent an unreadable reply ({0}): are envoyctl and envoyd the same version?")]
    Protocol(#[source] serde_json::Error),
    /// envoyd closed without a final reply.
    #[error("envoyd closed the connection before replying: check envoyd's log")]
    Closed,
    /// envoyd refused the request.
    #[error("{0}")]
    Server(String),
    /// `key set` with nothing on standard input.
    #[error("no secret on standard input: pipe it in, e.g. `head -c 32 /dev/urandom | base64 | envoyctl key set NAME`")]
    EmptySecret,
    /// A relative import source that cannot be made absolute.
    #[error("cannot resolve {path} ({source}): give the import source as an absolute path")]
    Path {
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

impl CtlError {
    /// Process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Connect { .. } => 3,
            _ => 1,
        }
    }
}

/// A connection to envoyd's control socket.
#[derive(Debug)]
pub struct Connection {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Connection {
    /// Connects to the socket at `path`.
    pub fn connect(path: &Path) -> Result<Connection, CtlError> {
        let s = UnixStream::connect(path).map_err(|source| CtlError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        let r = s.try_clone().map_err(CtlError::Io)?;
        Ok(Connection {
            writer: s,
            reader: BufReader::new(r),
        })
    }

    /// Sends a raw line and returns every reply line up to the final one.
    pub fn call_raw(&mut self, line: &[u8]) -> Result<Vec<Reply>, CtlError> {
        let mut out = Vec::new();
        self.call_raw_with(line, &mut |r| out.push(r.clone()))?;
        Ok(out)
    }

    fn call_raw_with(&mut self, line: &[u8], each: &mut dyn FnMut(&Reply)) -> Result<(), CtlError> {
        let mut buf = line.to_vec();
        buf.push(b'\n');
        self.writer.write_all(&buf).map_err(CtlError::Io)?;
        loop {
            let mut l = String::new();
            if self.reader.read_line(&mut l).map_err(CtlError::Io)? == 0 {
                return Err(CtlError::Closed);
            }
            let reply: Reply = serde_json::from_str(&l).map_err(CtlError::Protocol)?;
            each(&reply);
            if !matches!(reply, Reply::Progress(_)) {
                return Ok(());
            }
        }
    }

    /// Runs one request; progress lines go to `progress`.
    pub fn call(
        &mut self,
        req: &Request,
        progress: &mut dyn FnMut(&ProgressLine),
    ) -> Result<serde_json::Value, CtlError> {
        let line = serde_json::to_vec(req).map_err(CtlError::Protocol)?;
        let mut result = Err(CtlError::Closed);
        self.call_raw_with(&line, &mut |r| match r {
            Reply::Progress(p) => progress(p),
            Reply::Ok(v) => result = Ok(v.clone()),
            Reply::Error(e) => result = Err(CtlError::Server(e.clone())),
        })?;
        result
    }
}

/// The socket envoyctl talks to.
pub fn socket_path(cli: &Cli) -> PathBuf {
    cli.control
        .clone()
        .unwrap_or_else(|| cli.data.join("control.sock"))
}

fn request_of(cmd: &Command) -> Result<Request, CtlError> {
    Ok(match cmd {
        Command::Status => Request::Status,
        Command::Stats => Request::Stats,
        Command::Sessions => Request::Sessions,
        Command::Territories { .. } => Request::Territories,
        Command::Image(ImageCmd::Create { path }) => Request::ImageCreate { path: path.clone() },
        Command::Image(ImageCmd::List) => Request::ImageList,
        Command::Image(ImageCmd::Info { path }) => Request::ImageInfo { path: path.clone() },
        Command::Image(ImageCmd::Snapshot { path }) => {
            Request::ImageSnapshot { path: path.clone() }
        }
        Command::Image(ImageCmd::Fork { source, dest }) => Request::ImageFork {
            source: source.clone(),
            dest: dest.clone(),
        },
        Command::Image(ImageCmd::Delete { path }) => Request::ImageDelete { path: path.clone() },
        Command::Image(ImageCmd::Import { source, path }) => {
            let abs = std::path::absolute(source).map_err(|e| CtlError::Path {
                path: source.clone(),
                source: e,
            })?;
            Request::ImageImport {
                source: abs.display().to_string(),
                dest: path.clone(),
            }
        }
        Command::Snapshot(SnapshotCmd::Delete { path }) => {
            Request::SnapshotDelete { path: path.clone() }
        }
        Command::Grants => Request::Grants,
        Command::Grant { dir, entry } => Request::Grant {
            dir: dir.clone(),
            entry: entry.clone(),
        },
        Command::Revoke { dir, principal } => Request::Revoke {
            dir: dir.clone(),
            principal: principal.clone(),
        },
        Command::Bind {
            endpoint,
            principal,
        } => Request::Bind {
            endpoint: endpoint.clone(),
            principal: principal.clone(),
        },
        Command::Unbind { endpoint } => Request::Unbind {
            endpoint: endpoint.clone(),
        },
        Command::Key(KeyCmd::Set { name }) => {
            let mut secret = String::new();
            std::io::stdin()
                .read_line(&mut secret)
                .map_err(CtlError::Io)?;
            let secret = secret.trim_end_matches(['\n', '\r']).to_string();
            if secret.is_empty() {
                return Err(CtlError::EmptySecret);
            }
            Request::KeySet {
                name: name.clone(),
                secret,
            }
        }
        Command::Key(KeyCmd::Remove { name }) => Request::KeyRemove { name: name.clone() },
    })
}

fn parse<T: for<'de> Deserialize<'de>>(v: serde_json::Value) -> Result<T, CtlError> {
    serde_json::from_value(v).map_err(CtlError::Protocol)
}

/// Image as the server reports it.
#[derive(Debug, Deserialize)]
struct ImageView {
    path: String,
    #[serde(default)]
    snapshots: Vec<SnapView>,
    #[serde(default)]
    origin: Option<String>,
    #[serde(default)]
    forks: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct SnapView {
    path: String,
    number: u32,
}

#[derive(Debug, Deserialize)]
struct UsageView {
    objects: u64,
    bytes: u64,
}

#[derive(Debug, Deserialize)]
struct DeleteView {
    objects_freed: u64,
    bytes_freed: u64,
    before: UsageView,
    after: UsageView,
}

#[derive(Debug, Deserialize)]
struct GrantView {
    dir: String,
    line: u64,
    entry: String,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct BindingView {
    endpoint: String,
    principal: String,
}

#[derive(Debug, Deserialize)]
struct GrantsView {
    grants: Vec<GrantView>,
    bindings: Vec<BindingView>,
    #[serde(default)]
    keys: Vec<String>,
}

fn render_images(v: &[ImageView]) -> String {
    if v.is_empty() {
        return "no images: create one with `envoyctl image create PATH`\n".into();
    }
    let rows: Vec<Vec<String>> = v
        .iter()
        .map(|i| {
            vec![
                i.path.clone(),
                if i.snapshots.is_empty() {
                    "-".into()
                } else {
                    i.snapshots
                        .iter()
                        .map(|s| format!("@{}", s.number))
                        .collect::<Vec<_>>()
                        .join(" ")
                },
                i.origin.clone().unwrap_or_else(|| "-".into()),
                if i.forks.is_empty() {
                    "-".into()
                } else {
                    i.forks.join(", ")
                },
            ]
        })
        .collect();
    table(&["IMAGE", "SNAPSHOTS", "ORIGIN", "FORKS"], &rows)
}

/// Renders a command's `ok` value as text.
fn render(cmd: &Command, v: serde_json::Value) -> Result<String, CtlError> {
    Ok(match cmd {
        Command::Status => render_status(&parse::<StatusReport>(v)?),
        Command::Stats => render_stats(&parse::<StatsReport>(v)?),
        Command::Sessions => render_sessions(&parse::<Vec<SessionReport>>(v)?),
        Command::Territories { dot: false } => render_territories(&parse::<TerritoriesReport>(v)?),
        Command::Territories { dot: true } => {
            render_territories_dot(&parse::<TerritoriesReport>(v)?)
        }
        Command::Image(ImageCmd::List) => render_images(&parse::<Vec<ImageView>>(v)?),
        Command::Image(ImageCmd::Info { .. } | ImageCmd::Create { .. } | ImageCmd::Fork { .. }) => {
            render_images(&[parse::<ImageView>(v)?])
        }
        Command::Image(ImageCmd::Snapshot { .. }) => {
            let s: SnapView = parse(v)?;
            format!("snapshot {} (number {})\n", s.path, s.number)
        }
        Command::Image(ImageCmd::Delete { .. }) | Command::Snapshot(SnapshotCmd::Delete { .. }) => {
            let d: DeleteView = parse(v)?;
            format!(
                "freed {} objects ({}); store: {} objects ({}) before, {} objects ({}) after\n",
                d.objects_freed,
                human_bytes(d.bytes_freed),
                d.before.objects,
                human_bytes(d.before.bytes),
                d.after.objects,
                human_bytes(d.after.bytes)
            )
        }
        Command::Image(ImageCmd::Import { path, .. }) => match v.as_object() {
            Some(o) => {
                let n = |k: &str| o.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
                format!(
                    "imported {path}: {} files, {} directories, {}\n",
                    n("files"),
                    n("directories"),
                    human_bytes(n("bytes"))
                )
            }
            None => format!("imported {path}\n"),
        },
        Command::Grants => {
            let g: GrantsView = parse(v)?;
            let mut out = if g.grants.is_empty() {
                "no credential entries\n".to_string()
            } else {
                let rows: Vec<Vec<String>> = g
                    .grants
                    .iter()
                    .map(|x| {
                        vec![
                            x.dir.clone(),
                            x.line.to_string(),
                            x.entry.clone(),
                            x.error
                                .as_ref()
                                .map_or_else(String::new, |e| format!("IGNORED: {e}")),
                        ]
                    })
                    .collect();
                table(&["DIR", "LINE", "ENTRY", ""], &rows)
            };
            out.push('\n');
            if g.bindings.is_empty() {
                out.push_str("no endpoint bindings\n");
            } else {
                let rows: Vec<Vec<String>> = g
                    .bindings
                    .iter()
                    .map(|b| vec![b.endpoint.clone(), b.principal.clone()])
                    .collect();
                out.push_str(&table(&["ENDPOINT", "PRINCIPAL"], &rows));
            }
            out.push('\n');
            if g.keys.is_empty() {
                out.push_str("no Tauth keys\n");
            } else {
                out.push_str(&format!("Tauth keys: {}\n", g.keys.join(", ")));
            }
            out
        }
        Command::Grant { dir, .. } => format!("granted in {dir}\n"),
        Command::Revoke { dir, principal } => format!("revoked {principal} in {dir}\n"),
        Command::Bind {
            endpoint,
            principal,
        } => format!("bound {endpoint} to {principal}\n"),
        Command::Unbind { endpoint } => format!("unbound {endpoint}\n"),
        Command::Key(KeyCmd::Set { name }) => format!("key {name} set\n"),
        Command::Key(KeyCmd::Remove { name }) => format!("key {name} removed\n"),
    })
}

/// Runs a parsed command line, writing the result to `out` and progress to `err`.
pub fn run(cli: &Cli, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), CtlError> {
    let req = request_of(&cli.command)?;
    let mut conn = Connection::connect(&socket_path(cli))?;
    let v = conn.call(&req, &mut |p| {
        let _ = writeln!(err, "{}: {}/{}", p.phase, p.done, p.total);
    })?;
    let text = if cli.json {
        let mut s = serde_json::to_string_pretty(&v).map_err(CtlError::Protocol)?;
        s.push('\n');
        s
    } else {
        render(&cli.command, v)?
    };
    out.write_all(text.as_bytes()).map_err(CtlError::Io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_path_control_beats_data() {
        let cli = Cli::parse_from(["envoyctl", "--data", "/d", "status"]);
        assert_eq!(socket_path(&cli), PathBuf::from("/d/control.sock"));
        let cli = Cli::parse_from(["envoyctl", "status", "--control", "/x.sock"]);
        assert_eq!(socket_path(&cli), PathBuf::from("/x.sock"));
    }

    #[test]
    fn request_of_image_fork_maps_fields() {
        let cli = Cli::parse_from(["envoyctl", "image", "fork", "/a/web@2", "/b/web"]);
        assert_eq!(
            request_of(&cli.command).unwrap(),
            Request::ImageFork {
                source: "/a/web@2".into(),
                dest: "/b/web".into()
            }
        );
    }

    #[test]
    fn render_images_empty_says_what_to_do() {
        assert!(render_images(&[]).contains("envoyctl image create"));
    }
}
