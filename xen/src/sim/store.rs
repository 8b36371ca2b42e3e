//! The simulator's xenstore: an in-memory tree with watches and transactions, driven by
//! wire-protocol packets from any number of connections (each acting as one domain).
//!
//! Semantics kept from xenstored: writes create missing parents; `rm` removes a subtree;
//! relative paths resolve against `/local/domain/<domid>`; a watch fires once when
//! registered and then for every change at or below its path (and for removal of an
//! ancestor); transactions work on a private copy and fail with `EAGAIN` at commit if a node
//! they read or wrote changed meanwhile. Not simulated: permissions and quotas.

use std::collections::{BTreeMap, HashMap};

use crate::ids::DomId;
use crate::xenstore::wire::{self, MsgType, Packet, XsErrno};

/// A connection number.
pub type ConnId = u64;

#[derive(Debug, Clone)]
struct Watch {
    conn: ConnId,
    domid: DomId,
    path: String,
    token: String,
    relative: bool,
}

#[derive(Debug)]
struct Tx {
    conn: ConnId,
    start_gen: u64,
    nodes: BTreeMap<String, Vec<u8>>,
    touched: Vec<String>,
    changed: Vec<String>,
}

/// The tree and its registrations.
#[derive(Debug, Default)]
pub struct Store {
    nodes: BTreeMap<String, Vec<u8>>,
    /// Generation at which each path last changed (kept for removed paths too).
    gens: HashMap<String, u64>,
    gen: u64,
    watches: Vec<Watch>,
    txs: HashMap<u32, Tx>,
    next_tx: u32,
}

/// `/local/domain/<domid>`.
pub fn domain_path(domid: DomId) -> String {
    format!("/local/domain/{domid}")
}

fn is_at_or_below(path: &str, top: &str) -> bool {
    top == "/"
        || path == top
        || (path.starts_with(top) && path.as_bytes().get(top.len()) == Some(&b'/'))
}

fn parent(path: &str) -> Option<&str> {
    match path.rfind('/') {
        Some(0) if path.len() > 1 => Some("/"),
        Some(i) if i > 0 => Some(&path[..i]),
        _ => None,
    }
}

fn children<'a>(nodes: &'a BTreeMap<String, Vec<u8>>, path: &str) -> Vec<&'a str> {
    let prefix = if path == "/" {
        "/".to_string()
    } else {
        format!("{path}/")
    };
    nodes
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| &k[prefix.len()..])
        .filter(|rest| !rest.contains('/'))
        .collect()
}

fn write_node(nodes: &mut BTreeMap<String, Vec<u8>>, path: &str, value: &[u8]) -> Vec<String> {
    let mut created = Vec::new();
    let mut p = parent(path);
    while let Some(pp) = p {
        if pp == "/" || nodes.contains_key(pp) {
            break;
        }
        nodes.insert(pp.to_string(), Vec::new());
        created.push(pp.to_string());
        p = parent(pp);
    }
    nodes.insert(path.to_string(), value.to_vec());
    created.push(path.to_string());
    created
}

fn rm_node(nodes: &mut BTreeMap<String, Vec<u8>>, path: &str) -> Vec<String> {
    let gone: Vec<String> = nodes
        .keys()
        .filter(|k| is_at_or_below(k, path))
        .cloned()
        .collect();
    for k in &gone {
        nodes.remove(k);
    }
    gone
}

impl Store {
    /// Resolves and validates a request path.
    fn resolve(domid: DomId, raw: &[u8]) -> Result<(String, bool), XsErrno> {
        let s = std::str::from_utf8(raw).map_err(|_| XsErrno::Inval)?;
        if s.is_empty() || s.len() > wire::ABS_PATH_MAX {
            return Err(XsErrno::Inval);
        }
        let ok_chars = s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-/_@".contains(&b));
        if !ok_chars || s.contains("//") || (s.len() > 1 && s.ends_with('/')) {
            return Err(XsErrno::Inval);
        }
        if s.starts_with('/') {
            Ok((s.to_string(), false))
        } else {
            Ok((format!("{}/{s}", domain_path(domid)), true))
        }
    }

    fn bump(&mut self, paths: &[String]) {
        self.gen += 1;
        for p in paths {
            self.gens.insert(p.clone(), self.gen);
            if let Some(pp) = parent(p) {
                self.gens.insert(pp.to_string(), self.gen);
            }
        }
    }

    /// Queues WATCH_EVENTs for a change of `path` (`removed`: the subtree went away, so
    /// watches below it fire too).
    fn fire(&self, path: &str, removed: bool, out: &mut Vec<(ConnId, Packet)>) {
        for w in &self.watches {
            let hit = is_at_or_below(path, &w.path) || (removed && is_at_or_below(&w.path, path));
            if !hit {
                continue;
            }
            let reported = if removed && is_at_or_below(&w.path, path) && w.path != path {
                w.path.clone()
            } else {
                path.to_string()
            };
            out.push((w.conn, event_packet(w, &reported)));
        }
    }

    /// Handles one request from connection `conn` acting as `domid`. Replies and watch
    /// events (to any connection) are appended to `out`.
    pub fn handle(
        &mut self,
        conn: ConnId,
        domid: DomId,
        pkt: &Packet,
        out: &mut Vec<(ConnId, Packet)>,
    ) {
        let h = pkt.header;
        let reply = match self.dispatch(conn, domid, pkt, out) {
            Ok(Some(payload)) => Packet::new(h.msg_type, h.req_id, h.tx_id, payload),
            Ok(None) => None,
            Err(e) => Packet::new(
                MsgType::Error as u32,
                h.req_id,
                h.tx_id,
                wire::nul_terminated(&[e.name().as_bytes()]),
            ),
        };
        if let Some(r) = reply {
            out.push((conn, r));
        }
    }

    fn dispatch(
        &mut self,
        conn: ConnId,
        domid: DomId,
        pkt: &Packet,
        out: &mut Vec<(ConnId, Packet)>,
    ) -> Result<Option<Vec<u8>>, XsErrno> {
        let ty = MsgType::from_u32(pkt.header.msg_type).ok_or(XsErrno::Inval)?;
        let parts = wire::split_nul(&pkt.payload);
        let first = parts.first().copied().unwrap_or(b"");
        let tx_id = pkt.header.tx_id;
        if tx_id != 0 && self.txs.get(&tx_id).is_none_or(|t| t.conn != conn) {
            return Err(XsErrno::NoEnt);
        }
        let ok = || b"OK\0".to_vec();
        match ty {
            MsgType::Read => {
                let (p, _) = Store::resolve(domid, first)?;
                let nodes = self.view(tx_id, &p);
                nodes.get(&p).cloned().map(Some).ok_or(XsErrno::NoEnt)
            }
            MsgType::Directory => {
                let (p, _) = Store::resolve(domid, first)?;
                let nodes = self.view(tx_id, &p);
                if p != "/" && !nodes.contains_key(&p) {
                    return Err(XsErrno::NoEnt);
                }
                let names: Vec<&[u8]> =
                    children(nodes, &p).into_iter().map(str::as_bytes).collect();
                Ok(Some(wire::nul_terminated(&names)))
            }
            MsgType::Write | MsgType::Mkdir => {
                let pos = pkt
                    .payload
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or(XsErrno::Inval)?;
                let (p, _) = Store::resolve(domid, &pkt.payload[..pos])?;
                let value = if ty == MsgType::Write {
                    &pkt.payload[pos + 1..]
                } else {
                    &[][..]
                };
                if ty == MsgType::Mkdir && self.view(tx_id, &p).contains_key(&p) {
                    return Ok(Some(ok()));
                }
                if tx_id != 0 {
                    let t = self.txs.get_mut(&tx_id).ok_or(XsErrno::NoEnt)?;
                    let created = write_node(&mut t.nodes, &p, value);
                    t.touched.extend(created.iter().cloned());
                    t.changed.push(p);
                } else {
                    let created = write_node(&mut self.nodes, &p, value);
                    self.bump(&created);
                    self.fire(&p, false, out);
                }
                Ok(Some(ok()))
            }
            MsgType::Rm => {
                let (p, _) = Store::resolve(domid, first)?;
                if p == "/" {
                    return Err(XsErrno::Inval);
                }
                if tx_id != 0 {
                    let t = self.txs.get_mut(&tx_id).ok_or(XsErrno::NoEnt)?;
                    let gone = rm_node(&mut t.nodes, &p);
                    t.touched.extend(gone);
                    t.touched.push(p.clone());
                    t.changed.push(p);
                } else {
                    let gone = rm_node(&mut self.nodes, &p);
                    if !gone.is_empty() {
                        self.bump(&gone);
                        self.fire(&p, true, out);
                    }
                }
                Ok(Some(ok()))
            }
            MsgType::Watch => {
                let (p, relative) = Store::resolve(domid, first)?;
                let token =
                    String::from_utf8_lossy(parts.get(1).copied().unwrap_or(b"")).into_owned();
                let w = Watch {
                    conn,
                    domid,
                    path: p.clone(),
                    token,
                    relative,
                };
                // The reply goes first, then the initial event (xenstored's order).
                out.push((
                    conn,
                    Packet::new(pkt.header.msg_type, pkt.header.req_id, 0, ok())
                        .ok_or(XsErrno::Inval)?,
                ));
                out.push((conn, event_packet(&w, &p)));
                self.watches.push(w);
                Ok(None)
            }
            MsgType::Unwatch => {
                let (p, _) = Store::resolve(domid, first)?;
                let token =
                    String::from_utf8_lossy(parts.get(1).copied().unwrap_or(b"")).into_owned();
                let before = self.watches.len();
                self.watches
                    .retain(|w| !(w.conn == conn && w.path == p && w.token == token));
                if self.watches.len() == before {
                    return Err(XsErrno::NoEnt);
                }
                Ok(Some(ok()))
            }
            MsgType::TransactionStart => {
                self.next_tx = self.next_tx.wrapping_add(1).max(1);
                let id = self.next_tx;
                self.txs.insert(
                    id,
                    Tx {
                        conn,
                        start_gen: self.gen,
                        nodes: self.nodes.clone(),
                        touched: Vec::new(),
                        changed: Vec::new(),
                    },
                );
                Ok(Some(wire::nul_terminated(&[id.to_string().as_bytes()])))
            }
            MsgType::TransactionEnd => {
                let t = self.txs.remove(&tx_id).ok_or(XsErrno::NoEnt)?;
                match first {
                    b"F" => return Ok(Some(ok())),
                    b"T" => {}
                    _ => return Err(XsErrno::Inval),
                }
                let conflict = t
                    .touched
                    .iter()
                    .any(|p| self.gens.get(p).is_some_and(|&g| g > t.start_gen));
                if conflict {
                    return Err(XsErrno::Again);
                }
                // Apply: the transaction's view of every changed subtree replaces ours.
                let mut bumped = Vec::new();
                for p in &t.changed {
                    bumped.extend(rm_node(&mut self.nodes, p));
                    for (k, v) in t.nodes.iter().filter(|(k, _)| is_at_or_below(k, p)) {
                        bumped.extend(write_node(&mut self.nodes, k, v));
                    }
                }
                self.bump(&bumped);
                for p in &t.changed {
                    let removed = !self.nodes.contains_key(p);
                    self.fire(p, removed, out);
                }
                Ok(Some(ok()))
            }
            MsgType::GetDomainPath => {
                let d: u16 = std::str::from_utf8(first)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(XsErrno::Inval)?;
                Ok(Some(wire::nul_terminated(&[
                    domain_path(DomId(d)).as_bytes()
                ])))
            }
            MsgType::WatchEvent | MsgType::Error => Err(XsErrno::Inval),
        }
    }

    fn view(&mut self, tx_id: u32, path: &str) -> &BTreeMap<String, Vec<u8>> {
        if tx_id != 0 {
            if let Some(t) = self.txs.get_mut(&tx_id) {
                t.touched.push(path.to_string());
                return &t.nodes;
            }
        }
        &self.nodes
    }

    /// Forgets a closed connection's watches and transactions.
    pub fn drop_conn(&mut self, conn: ConnId) {
        self.watches.retain(|w| w.conn != conn);
        self.txs.retain(|_, t| t.conn != conn);
    }

    /// Toolstack write (no connection): creates parents, fires watches.
    pub fn admin_write(&mut self, path: &str, value: &[u8], out: &mut Vec<(ConnId, Packet)>) {
        let created = write_node(&mut self.nodes, path, value);
        self.bump(&created);
        self.fire(path, false, out);
    }

    /// Toolstack removal of a subtree.
    pub fn admin_rm(&mut self, path: &str, out: &mut Vec<(ConnId, Packet)>) {
        let gone = rm_node(&mut self.nodes, path);
        if !gone.is_empty() {
            self.bump(&gone);
            self.fire(path, true, out);
        }
    }

    /// Toolstack read.
    pub fn admin_read(&self, path: &str) -> Option<Vec<u8>> {
        self.nodes.get(path).cloned()
    }

    /// Child names of a node (toolstack).
    pub fn admin_children(&self, path: &str) -> Vec<String> {
        children(&self.nodes, path)
            .into_iter()
            .map(String::from)
            .collect()
    }
}

fn event_packet(w: &Watch, abs: &str) -> Packet {
    let prefix = format!("{}/", domain_path(w.domid));
    let reported = match abs.strip_prefix(&prefix) {
        Some(rel) if w.relative => rel,
        _ => abs,
    };
    let payload = wire::nul_terminated(&[reported.as_bytes(), w.token.as_bytes()]);
    Packet {
        header: wire::Header {
            msg_type: MsgType::WatchEvent as u32,
            req_id: 0,
            tx_id: 0,
            len: payload.len() as u32,
        },
        payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ty: MsgType, tx: u32, payload: &[u8]) -> Packet {
        Packet::new(ty as u32, 1, tx, payload.to_vec()).unwrap()
    }

    fn call(
        s: &mut Store,
        conn: ConnId,
        ty: MsgType,
        tx: u32,
        payload: &[u8],
    ) -> (Packet, Vec<(ConnId, Packet)>) {
        let mut out = Vec::new();
        s.handle(conn, DomId(0), &req(ty, tx, payload), &mut out);
        let i = out
            .iter()
            .position(|(c, p)| *c == conn && p.header.msg_type != MsgType::WatchEvent as u32)
            .unwrap();
        let r = out.remove(i).1;
        (r, out)
    }

    #[test]
    fn store_write_read_directory_rm() {
        let mut s = Store::default();
        let (r, _) = call(&mut s, 1, MsgType::Write, 0, b"/a/b/c\0val");
        assert_eq!(r.payload, b"OK\0");
        assert_eq!(
            call(&mut s, 1, MsgType::Read, 0, b"/a/b/c\0").0.payload,
            b"val"
        );
        assert_eq!(
            call(&mut s, 1, MsgType::Directory, 0, b"/a\0").0.payload,
            b"b\0"
        );
        call(&mut s, 1, MsgType::Rm, 0, b"/a/b\0");
        let (r, _) = call(&mut s, 1, MsgType::Read, 0, b"/a/b/c\0");
        assert_eq!(r.header.msg_type, MsgType::Error as u32);
        assert_eq!(r.payload, b"ENOENT\0");
        let (r, _) = call(&mut s, 1, MsgType::Read, 0, b"/a//b\0");
        assert_eq!(r.payload, b"EINVAL\0");
    }

    #[test]
    fn store_watch_fires_initially_on_change_and_on_ancestor_rm() {
        let mut s = Store::default();
        let (r, ev) = call(&mut s, 2, MsgType::Watch, 0, b"/x/y\0tok\0");
        assert_eq!(r.payload, b"OK\0");
        assert_eq!(ev.len(), 1);
        let (_, ev) = call(&mut s, 1, MsgType::Write, 0, b"/x/y/z\0v");
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].0, 2);
        assert_eq!(ev[0].1.payload, b"/x/y/z\0tok\0");
        let (_, ev) = call(&mut s, 1, MsgType::Write, 0, b"/other\0v");
        assert!(ev.is_empty());
        let (_, ev) = call(&mut s, 1, MsgType::Rm, 0, b"/x\0");
        assert_eq!(ev[0].1.payload, b"/x/y\0tok\0");
    }

    #[test]
    fn store_transaction_conflict_is_eagain_commit_applies() {
        let mut s = Store::default();
        call(&mut s, 1, MsgType::Write, 0, b"/n\x001");
        let (r, _) = call(&mut s, 1, MsgType::TransactionStart, 0, b"\0");
        let tx: u32 = std::str::from_utf8(&r.payload[..r.payload.len() - 1])
            .unwrap()
            .parse()
            .unwrap();
        call(&mut s, 1, MsgType::Read, tx, b"/n\0");
        call(&mut s, 1, MsgType::Write, tx, b"/m\0x");
        // Outside the transaction the write is not visible yet.
        assert_eq!(
            call(&mut s, 1, MsgType::Read, 0, b"/m\0").0.payload,
            b"ENOENT\0"
        );
        call(&mut s, 2, MsgType::Write, 0, b"/n\x002");
        let (r, _) = call(&mut s, 1, MsgType::TransactionEnd, tx, b"T\0");
        assert_eq!(r.payload, b"EAGAIN\0");
        let (r, _) = call(&mut s, 1, MsgType::TransactionStart, 0, b"\0");
        let tx: u32 = std::str::from_utf8(&r.payload[..r.payload.len() - 1])
            .unwrap()
            .parse()
            .unwrap();
        call(&mut s, 1, MsgType::Write, tx, b"/m\0x");
        assert_eq!(
            call(&mut s, 1, MsgType::TransactionEnd, tx, b"T\0")
                .0
                .payload,
            b"OK\0"
        );
        assert_eq!(call(&mut s, 1, MsgType::Read, 0, b"/m\0").0.payload, b"x");
    }
}
