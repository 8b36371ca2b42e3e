//! What the read-only control requests report (`status`, `stats`, `sessions`,
//! `territories`), as plain serde structs built from the running server, and their text
//! renderings (the tables `envoyctl` prints, the `stats` file of the ctl tree, Graphviz
//! `dot` for territories).
//!
//! The same struct is serialised by envoyd and deserialised by envoyctl, so the JSON shape
//! documented in [`crate::control`] is this file's field names.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::namespace::node::Node;
use crate::server::Shared;
use crate::stats::OpSummary;

/// `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// envoyd's version.
    pub version: String,
    /// Process id.
    pub pid: u32,
    /// Seconds since start.
    pub uptime_s: f64,
    /// Object store directory.
    pub data_dir: String,
    /// 9P endpoints.
    pub endpoints: Vec<String>,
    /// Worker threads.
    pub workers: u64,
    /// Live 9P connections.
    pub connections: u64,
    /// 9P requests answered since start.
    pub requests: u64,
    /// Memory cache budget in bytes.
    pub cache_capacity: u64,
    /// Largest msize offered.
    pub max_msize: u32,
}

/// Memory cache counters with hit rates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheReport {
    /// Directory lookups answered from memory.
    pub dir_hits: u64,
    /// Directory lookups that read the store.
    pub dir_misses: u64,
    /// `dir_hits / (dir_hits + dir_misses)`, 0 when idle.
    pub dir_hit_rate: f64,
    /// File reads answered from cached data.
    pub data_hits: u64,
    /// File reads of cacheable files that read the store.
    pub data_misses: u64,
    /// File reads of files too large to cache.
    pub data_bypassed: u64,
    /// `data_hits / (data_hits + data_misses + data_bypassed)`.
    pub data_hit_rate: f64,
    /// Entries evicted.
    pub evictions: u64,
    /// Entries held.
    pub entries: u64,
    /// Bytes held.
    pub bytes: u64,
    /// Budget.
    pub capacity: u64,
}

/// Requests and bytes between envoyd and the object store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageReport {
    /// Read requests.
    pub read_requests: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Write requests.
    pub write_requests: u64,
    /// Bytes written.
    pub write_bytes: u64,
}

/// `stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsReport {
    /// Seconds since start.
    pub uptime_s: f64,
    /// Live 9P connections.
    pub connections: u64,
    /// 9P requests answered.
    pub requests: u64,
    /// Data writes served.
    pub writes: u64,
    /// Byte-range locks held.
    pub locks: u64,
    /// Per request type, in message-type order.
    pub ops: Vec<OpSummary>,
    /// Memory cache.
    pub cache: CacheReport,
    /// Object store traffic.
    pub storage: StorageReport,
}

/// One fid of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FidReport {
    /// Fid number.
    pub fid: u32,
    /// Path in the global tree (`ctl:/…` on the ctl tree).
    pub path: String,
    /// `closed`, `read`, `write`, `rdwr`, `xattr`.
    pub open: String,
    /// The uid the fid acts as.
    pub uid: u32,
    /// The rights its attach was granted (`admin`, `mount-rw`, …; `-` on the ctl tree).
    pub rights: String,
    /// Its attach is read-only.
    pub read_only: bool,
}

/// One 9P connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionReport {
    /// Connection number.
    pub id: u64,
    /// Transport peer, e.g. `tcp:127.0.0.1:40112` or `unix:pid=…,uid=…`.
    pub peer: String,
    /// The identities its attaches were granted: uids (distinct, ascending) with the rights,
    /// e.g. `uid 1000 mount-rw`, `uid 65534 mount-ro (read-only)`.
    pub principal: String,
    /// Negotiated dialect, `-` before Tversion.
    pub dialect: String,
    /// Negotiated msize.
    pub msize: u32,
    /// Fids, ascending.
    pub fids: Vec<FidReport>,
}

/// One territory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerritoryReport {
    /// Local id.
    pub id: u32,
    /// Root path in the global tree.
    pub root: String,
    /// Owning envoy (`local` for this one).
    pub owner: String,
    /// Root paths of child territories.
    pub exits: Vec<String>,
    /// Claims: distinct nodes held by fids and their paths back to the root.
    pub claims: u64,
    /// Claimed directories (the paths of the territory graph), ascending.
    pub claimed_dirs: Vec<String>,
}

/// `territories`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerritoriesReport {
    /// This envoy's name in graphs.
    pub envoy: String,
    /// Territories, by id.
    pub territories: Vec<TerritoryReport>,
}

fn rate(hit: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        hit as f64 / total as f64
    }
}

/// `status` of a running server.
pub fn status(shared: &Shared) -> StatusReport {
    StatusReport {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        uptime_s: shared.started.elapsed().unwrap_or_default().as_secs_f64(),
        data_dir: shared.config.data.display().to_string(),
        endpoints: shared.endpoints().iter().map(ToString::to_string).collect(),
        workers: shared.config.workers as u64,
        connections: shared.connection_count() as u64,
        requests: shared.op_stats.total(),
        cache_capacity: shared.config.cache_bytes as u64,
        max_msize: shared.config.max_msize,
    }
}

/// `stats` of a running server.
pub fn stats(shared: &Shared) -> StatsReport {
    let fs = shared.fs();
    let c = fs.cache_stats();
    let t = fs.traffic();
    StatsReport {
        uptime_s: shared.started.elapsed().unwrap_or_default().as_secs_f64(),
        connections: shared.connection_count() as u64,
        requests: shared.op_stats.total(),
        writes: fs.write_count(),
        locks: shared.locks.len() as u64,
        ops: shared.op_stats.snapshot(),
        cache: CacheReport {
            dir_hits: c.hits,
            dir_misses: c.misses,
            dir_hit_rate: rate(c.hits, c.hits + c.misses),
            data_hits: c.data_hits,
            data_misses: c.data_misses,
            data_bypassed: c.data_bypassed,
            data_hit_rate: rate(c.data_hits, c.data_hits + c.data_misses + c.data_bypassed),
            evictions: c.evictions,
            entries: c.entries,
            bytes: c.bytes,
            capacity: c.capacity,
        },
        storage: StorageReport {
            read_requests: t.read_requests,
            read_bytes: t.read_bytes,
            write_requests: t.write_requests,
            write_bytes: t.write_bytes,
        },
    }
}

/// The text of `envoyctl stats` for a running server (also the ctl tree's `stats` file).
pub fn stats_text(shared: &Shared) -> String {
    render_stats(&stats(shared))
}

fn open_name(e: &crate::session::fids::FidEntry) -> String {
    use crate::session::fids::OpenState;
    let flags = match (&e.ctl, e.open_state()) {
        (Some(c), _) => c.open_flags(),
        (None, OpenState::Open { flags }) => Some(flags),
        (None, OpenState::Closed) => None,
        (None, OpenState::XattrRead { .. } | OpenState::XattrWrite { .. }) => {
            return "xattr".into()
        }
    };
    match flags.map(|f| f & envoy_proto::lopen::ACCMODE) {
        None => "closed",
        Some(envoy_proto::lopen::RDONLY) => "read",
        Some(envoy_proto::lopen::WRONLY) => "write",
        Some(_) => "rdwr",
    }
    .into()
}

/// `sessions` of a running server.
pub fn sessions(shared: &Shared) -> Vec<SessionReport> {
    let mut out: Vec<SessionReport> = shared
        .sessions()
        .into_iter()
        .map(|c| {
            let p = c.params();
            let fids: Vec<FidReport> = c
                .fids
                .entries()
                .into_iter()
                .map(|(fid, e)| FidReport {
                    fid: fid.0,
                    path: match &e.ctl {
                        Some(ctl) => ctl.node.path(),
                        None => e.node().path(),
                    },
                    open: open_name(&e),
                    uid: e.cred.uid,
                    rights: if e.ctl.is_some() {
                        "-".into()
                    } else {
                        e.rights.to_string()
                    },
                    read_only: e.read_only,
                })
                .collect();
            let mut ids: Vec<String> = fids
                .iter()
                .map(|f| {
                    let mut s = format!("uid {}", f.uid);
                    if f.rights != "-" {
                        s.push(' ');
                        s.push_str(&f.rights);
                    }
                    if f.read_only {
                        s.push_str(" (read-only)");
                    }
                    s
                })
                .collect();
            ids.sort_unstable();
            ids.dedup();
            let principal = if ids.is_empty() {
                "-".to_string()
            } else {
                ids.join(", ")
            };
            SessionReport {
                id: c.id,
                peer: c.peer.clone(),
                principal,
                dialect: p
                    .dialect
                    .map_or_else(|| "-".to_string(), |d| d.version_str().to_string()),
                msize: p.msize,
                fids,
            }
        })
        .collect();
    out.sort_by_key(|s| s.id);
    out
}

/// `territories` of a running server. Claims are counted over the distinct nodes that fids
/// hold and their ancestors up to the territory root (the claim tree of §5.4.2).
pub fn territories(shared: &Shared) -> TerritoriesReport {
    let mut per: HashMap<u32, HashMap<usize, Arc<Node>>> = HashMap::new();
    for c in shared.sessions() {
        for (_, e) in c.fids.entries() {
            if e.ctl.is_some() {
                continue;
            }
            let set = per.entry(e.territory.0).or_default();
            let mut cur = Some(Arc::clone(e.node()));
            while let Some(n) = cur {
                let key = Arc::as_ptr(&n) as usize;
                if set.contains_key(&key) {
                    break;
                }
                cur = n.parent();
                set.insert(key, n);
            }
        }
    }
    let territories = shared
        .territories
        .list()
        .into_iter()
        .map(|(id, root)| {
            let nodes = per.remove(&id.0).unwrap_or_default();
            let mut dirs: Vec<String> = nodes
                .values()
                .filter(|n| n.kind() == envoy_storage::ObjectKind::Directory)
                .map(|n| n.path())
                .collect();
            dirs.sort();
            TerritoryReport {
                id: id.0,
                root,
                owner: "local".into(),
                exits: Vec::new(),
                claims: nodes.len() as u64,
                claimed_dirs: dirs,
            }
        })
        .collect();
    TerritoriesReport {
        envoy: hostname(),
        territories,
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this envoy".into())
}

/// Bytes in a short human form: `512 B`, `1.5 KiB`, `3.0 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Nanoseconds in a short human form: `850ns`, `12.3µs`, `4.1ms`, `2.00s`.
pub fn human_ns(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns}ns"),
        1_000..=999_999 => format!("{:.1}µs", ns as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

/// A left-aligned text table: header row, then rows; columns as wide as their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            if let Some(w) = width.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, c) in cells.enumerate() {
            let w = width.get(i).copied().unwrap_or(0);
            let pad = w.saturating_sub(c.chars().count());
            l.push_str(c);
            l.extend(std::iter::repeat_n(' ', pad + 2));
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
    out
}

/// `envoyctl stats` text.
pub fn render_stats(s: &StatsReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "uptime {:.0}s, {} connections, {} requests, {} writes, {} locks held\n",
        s.uptime_s, s.connections, s.requests, s.writes, s.locks
    );
    let rows: Vec<Vec<String>> = s
        .ops
        .iter()
        .map(|o| {
            vec![
                o.op.clone(),
                o.count.to_string(),
                o.errors.to_string(),
                human_ns(o.mean_ns),
                human_ns(o.p50_ns),
                human_ns(o.p99_ns),
                human_ns(o.p999_ns),
            ]
        })
        .collect();
    out.push_str(&table(
        &["OP", "COUNT", "ERRORS", "MEAN", "P50", "P99", "P999"],
        &rows,
    ));
    let c = &s.cache;
    let _ = writeln!(
        out,
        "\ncache: {} of {} in {} entries, {} evictions",
        human_bytes(c.bytes),
        human_bytes(c.capacity),
        c.entries,
        c.evictions
    );
    let _ = writeln!(
        out,
        "  directories: {} hits, {} misses ({:.1}% hit)",
        c.dir_hits,
        c.dir_misses,
        c.dir_hit_rate * 100.0
    );
    let _ = writeln!(
        out,
        "  file data:   {} hits, {} misses, {} too large ({:.1}% hit)",
        c.data_hits,
        c.data_misses,
        c.data_bypassed,
        c.data_hit_rate * 100.0
    );
    let t = &s.storage;
    let _ = writeln!(
        out,
        "storage: {} reads ({}), {} writes ({})",
        t.read_requests,
        human_bytes(t.read_bytes),
        t.write_requests,
        human_bytes(t.write_bytes)
    );
    out
}

/// `envoyctl status` text.
pub fn render_status(s: &StatusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "envoyd {} (pid {})", s.version, s.pid);
    let _ = writeln!(out, "uptime:      {:.0}s", s.uptime_s);
    let _ = writeln!(out, "data:        {}", s.data_dir);
    let _ = writeln!(out, "endpoints:   {}", s.endpoints.join(", "));
    let _ = writeln!(out, "workers:     {}", s.workers);
    let _ = writeln!(out, "connections: {}", s.connections);
    let _ = writeln!(out, "requests:    {}", s.requests);
    let _ = writeln!(out, "cache:       {}", human_bytes(s.cache_capacity));
    let _ = writeln!(out, "max msize:   {}", s.max_msize);
    out
}

/// `envoyctl sessions` text: one table of connections, then each connection's fids.
pub fn render_sessions(v: &[SessionReport]) -> String {
    if v.is_empty() {
        return "no 9P connections\n".into();
    }
    let rows: Vec<Vec<String>> = v
        .iter()
        .map(|s| {
            vec![
                s.id.to_string(),
                s.peer.clone(),
                s.principal.clone(),
                s.dialect.clone(),
                s.msize.to_string(),
                s.fids.len().to_string(),
            ]
        })
        .collect();
    let mut out = table(
        &["CONN", "PEER", "PRINCIPAL", "DIALECT", "MSIZE", "FIDS"],
        &rows,
    );
    for s in v.iter().filter(|s| !s.fids.is_empty()) {
        let _ = writeln!(out, "\nconnection {} fids:", s.id);
        let rows: Vec<Vec<String>> = s
            .fids
            .iter()
            .map(|f| {
                vec![
                    f.fid.to_string(),
                    f.open.clone(),
                    f.uid.to_string(),
                    if f.read_only {
                        format!("{} ro", f.rights)
                    } else {
                        f.rights.clone()
                    },
                    f.path.clone(),
                ]
            })
            .collect();
        for l in table(&["FID", "OPEN", "UID", "RIGHTS", "PATH"], &rows).lines() {
            let _ = writeln!(out, "  {l}");
        }
    }
    out
}

/// `envoyctl territories` text.
pub fn render_territories(t: &TerritoriesReport) -> String {
    let rows: Vec<Vec<String>> = t
        .territories
        .iter()
        .map(|x| {
            vec![
                x.id.to_string(),
                x.root.clone(),
                format!("{} ({})", x.owner, t.envoy),
                if x.exits.is_empty() {
                    "-".into()
                } else {
                    x.exits.join(", ")
                },
                x.claims.to_string(),
            ]
        })
        .collect();
    table(&["ID", "ROOT", "OWNER", "EXITS", "CLAIMS"], &rows)
}

/// Colours per owner in territory graphs (the dissertation's figures colour each host).
const COLOURS: [&str; 6] = ["red", "blue", "darkgreen", "orange", "purple", "brown"];

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Graphviz `dot` of the territory graph, after §6.3's figures: claimed directories as a
/// tree, territory roots as rectangles, other claimed directories as ellipses, each coloured
/// by the envoy that owns it; exits are edges to the child territory's root.
pub fn render_territories_dot(t: &TerritoriesReport) -> String {
    let mut out = String::from("digraph territories {\n  rankdir=TB;\n  node [fontsize=10];\n");
    let mut owners: BTreeMap<&str, &str> = BTreeMap::new();
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut declared: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for x in &t.territories {
        let n = owners.len();
        let colour = *owners
            .entry(x.owner.as_str())
            .or_insert(COLOURS[n % COLOURS.len()]);
        let id = format!("t{}", x.id);
        names.insert(x.root.clone(), id.clone());
        let owner = if x.owner == "local" {
            t.envoy.as_str()
        } else {
            x.owner.as_str()
        };
        let _ = writeln!(
            out,
            "  {id} [shape=box, color={colour}, label=\"{}\\nowner: {}\\nclaims: {}\"];",
            dot_escape(&x.root),
            dot_escape(owner),
            x.claims
        );
        declared.insert(x.root.clone());
        for (i, d) in x.claimed_dirs.iter().enumerate() {
            if declared.contains(d) {
                continue;
            }
            let did = format!("t{}d{i}", x.id);
            names.insert(d.clone(), did.clone());
            declared.insert(d.clone());
            let label = d.rsplit('/').next().unwrap_or(d);
            let _ = writeln!(
                out,
                "  {did} [shape=ellipse, color={colour}, label=\"{}\"];",
                dot_escape(label)
            );
        }
    }
    // Edges: each claimed directory hangs under its nearest named ancestor.
    for (path, id) in &names {
        if path == "/" {
            continue;
        }
        let mut parent = path.as_str();
        while let Some((p, _)) = parent.rsplit_once('/') {
            parent = if p.is_empty() { "/" } else { p };
            if let Some(pid) = names.get(parent) {
                let _ = writeln!(out, "  {pid} -> {id};");
                break;
            }
            if parent == "/" {
                break;
            }
        }
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns_align_to_widest_cell() {
        let t = table(
            &["A", "BB"],
            &[
                vec!["long cell".into(), "x".into()],
                vec!["y".into(), "z".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "A          BB");
        assert_eq!(lines[1], "long cell  x");
        assert_eq!(lines[2], "y          z");
    }

    #[test]
    fn human_units_pick_the_right_scale() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(human_ns(850), "850ns");
        assert_eq!(human_ns(12_300), "12.3µs");
        assert_eq!(human_ns(2_000_000_000), "2.00s");
    }

    #[test]
    fn dot_territory_tree_boxes_roots_and_links_dirs() {
        let r = TerritoriesReport {
            envoy: "druid".into(),
            territories: vec![TerritoryReport {
                id: 0,
                root: "/".into(),
                owner: "local".into(),
                exits: vec![],
                claims: 4,
                claimed_dirs: vec!["/".into(), "/default".into(), "/default/src".into()],
            }],
        };
        let d = render_territories_dot(&r);
        assert!(d.starts_with("digraph territories {"), "{d}");
        assert!(d.contains("t0 [shape=box, color=red, label=\"/\\nowner: druid\\nclaims: 4\"]"));
        assert!(d.contains("t0 -> t0d1;"), "{d}");
        assert!(d.contains("t0d1 -> t0d2;"), "{d}");
        assert!(d.trim_end().ends_with('}'));
    }
}
