//! The synthetic `ctl` tree: what a client gets by attaching aname `ctl` (or `/ctl`).
//!
//! Debian's `diod` serves the same little tree, and its load generator `diodload` measures
//! pure protocol overhead with it: every thread attaches `ctl`, walks to and opens `zero`
//! (`O_RDONLY`) and `null` (`O_WRONLY`), then loops on a `msize`-sized Tread of `zero` and
//! a Twrite of the same size to `null` (or, with `-g`, walks to `null` and loops on
//! Tgetattr). Serving that tree lets `diodload -s HOST:PORT` run unmodified against envoyd,
//! so its figures compare the two servers' protocol paths without any storage underneath.
//!
//! # The tree
//!
//! ```text
//! /         dr-xr-xr-x  directory
//! version   -r--r--r--  "envoyd <version>\n"
//! zero      -r--r--r--  every read returns `count` zero bytes (never EOF)
//! null      -rw-rw-rw-  writes are accepted and discarded; reads return EOF
//! stats     -r--r--r--  the text of `envoyctl stats` (taken when the fid is opened)
//! ```
//!
//! Any client that reaches envoyd may attach it, without credentials (Tauth with aname
//! `ctl` answers "no authentication required", as diod does): it holds no file data, only a
//! zero source, a sink, the version and aggregate counters, never who is connected.
//!
//! Qids are synthetic: `path = CTL_QID_BASE + index`, `version` 0, type `QTTMP` (plus
//! `QTDIR` for the root), as diod marks them. Sizes are reported as 0 (the contents are
//! generated). The tree is 9P2000.L only, like diod's (attaching it in another dialect fails
//! with `EOPNOTSUPP`).
//!
//! # Operations
//!
//! A ctl fid is an ordinary entry of the connection's fid table whose
//! [`FidEntry::ctl`] is set (its claim is on the namespace root and is never used).
//! [`crate::ops::dispatch`] hands every request that names such a fid to [`route`]:
//!
//! | request | on a ctl fid |
//! |---|---|
//! | Twalk | names of the root; `..` stays at the root; from a file `ENOTDIR` |
//! | Tlopen | read-only everywhere except `null` (`EACCES`); directories `EISDIR` for writing |
//! | Tread | `zero`: zeros (a slice of one static zero buffer, no allocation); `null`: EOF; `version`/`stats`: the text |
//! | Twrite | `null` only (needs an open for writing, `EBADF` otherwise) |
//! | Tgetattr, Treaddir, Tstatfs, Tclunk, Tfsync | as for any file |
//! | Tsetattr | accepted and ignored on `null` (shell redirections truncate it), `EROFS` elsewhere |
//! | Tremove | the fid is clunked, then `EROFS` |
//! | creates, mkdir, links, renames, unlink, xattr writes | `EROFS` |
//! | a rename or link mixing a ctl fid with an ordinary one | `EXDEV` |
//! | xattr reads, locks, anything else | `EOPNOTSUPP` |

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use envoy_proto::{
    dirent_type, lopen, qid_type, Dialect, DirEntry, Fid, Message, Qid, Rclunk, Rfsync, Rgetattr,
    Rlopen, Rread, Rreaddir, Rsetattr, Rstatfs, Rwalk, Rwrite, Tattach,
};

use crate::error::{FsError, FsResult};
use crate::namespace::node::lock;
use crate::namespace::Cred;
use crate::session::fids::FidEntry;
use crate::session::Conn;

/// First qid path of the tree (far above any object ID the store hands out).
pub const CTL_QID_BASE: u64 = 0xc7_0000_0000_0000;

/// Largest Tread count served from the static zero buffer (the largest `--max-msize`).
const ZERO_LEN: usize = 16 << 20;
/// The zero buffer; in `.bss`, so it costs no memory until read, and then only the shared
/// zero page.
static ZEROS: [u8; ZERO_LEN] = [0; ZERO_LEN];

/// Rread's fixed part: size[4] type[1] tag[2] count[4].
const RREAD_HEADER: u32 = 11;

/// Linux's `V9FS_MAGIC`, reported by Tstatfs.
const V9FS_MAGIC: u32 = 0x0102_1997;

/// `S_IFDIR` / `S_IFREG`.
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
/// Rgetattr `valid` for the basic fields (`P9_GETATTR_BASIC`).
const GETATTR_BASIC: u64 = 0x7ff;

/// A file of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtlNode {
    /// The directory.
    Root,
    /// `version`.
    Version,
    /// `zero`.
    Zero,
    /// `null`.
    Null,
    /// `stats`.
    Stats,
}

/// The files of the root, in directory order.
const FILES: [CtlNode; 4] = [
    CtlNode::Version,
    CtlNode::Zero,
    CtlNode::Null,
    CtlNode::Stats,
];

impl CtlNode {
    /// Name in the root (`""` for the root).
    pub fn name(self) -> &'static str {
        match self {
            CtlNode::Root => "",
            CtlNode::Version => "version",
            CtlNode::Zero => "zero",
            CtlNode::Null => "null",
            CtlNode::Stats => "stats",
        }
    }

    fn index(self) -> u64 {
        match self {
            CtlNode::Root => 0,
            CtlNode::Version => 1,
            CtlNode::Zero => 2,
            CtlNode::Null => 3,
            CtlNode::Stats => 4,
        }
    }

    /// The node's qid.
    pub fn qid(self) -> Qid {
        let dir = if self == CtlNode::Root {
            qid_type::DIR
        } else {
            qid_type::FILE
        };
        Qid {
            ty: dir | qid_type::TMP,
            version: 0,
            path: CTL_QID_BASE + self.index(),
        }
    }

    fn mode(self) -> u32 {
        match self {
            CtlNode::Root => S_IFDIR | 0o555,
            CtlNode::Null => S_IFREG | 0o666,
            _ => S_IFREG | 0o444,
        }
    }

    fn lookup(name: &str) -> Option<CtlNode> {
        FILES.into_iter().find(|f| f.name() == name)
    }

    /// Path for listings, e.g. `ctl:/zero`.
    pub fn path(self) -> String {
        format!("ctl:/{}", self.name())
    }
}

/// Open state of a ctl fid.
#[derive(Debug, Default)]
struct CtlOpen {
    /// Linux open flags, `None` until Tlopen.
    flags: Option<u32>,
    /// `version`/`stats`: the text, fixed at open so that reads at increasing offsets see one
    /// consistent snapshot.
    content: Bytes,
}

/// What a ctl fid points at.
#[derive(Debug)]
pub struct CtlFid {
    /// The file.
    pub node: CtlNode,
    state: Mutex<CtlOpen>,
}

impl CtlFid {
    /// An unopened fid on `node`.
    pub fn new(node: CtlNode) -> CtlFid {
        CtlFid {
            node,
            state: Mutex::new(CtlOpen::default()),
        }
    }

    /// The open flags, if opened.
    pub fn open_flags(&self) -> Option<u32> {
        lock(&self.state).flags
    }
}

/// Whether an attach name selects the ctl tree.
pub fn is_ctl_aname(aname: &str) -> bool {
    aname == "ctl" || aname == "/ctl"
}

fn new_entry(c: &Arc<Conn>, cred: Cred, node: CtlNode) -> FidEntry {
    let fs = Arc::clone(c.shared.fs());
    let claim = fs.root();
    let root = Arc::clone(claim.node());
    FidEntry::synthetic(claim, root, cred, CtlFid::new(node))
}

/// Tattach with aname `ctl`.
pub fn attach(c: &Arc<Conn>, m: &Tattach, cred: Cred) -> FsResult<Message> {
    if m.afid != Fid::NOFID {
        return Err(FsError::Inval("no authentication: afid must be NOFID"));
    }
    if c.dialect() != Dialect::P2000L {
        return Err(FsError::NotSupported(
            "the ctl tree is served over 9P2000.L",
        ));
    }
    c.fids.insert(m.fid, new_entry(c, cred, CtlNode::Root))?;
    tracing::debug!(uid = cred.uid, "attached the ctl tree");
    Ok(envoy_proto::Rattach {
        qid: CtlNode::Root.qid(),
    }
    .into())
}

/// Every fid a request names, the primary one first.
fn fids_of(m: &Message) -> ([Option<Fid>; 2], bool) {
    let second = match m {
        Message::Twalk(x) => Some(x.newfid),
        Message::Txattrwalk(x) => Some(x.newfid),
        Message::Tlink(x) => Some(x.fid),
        Message::Trename(x) => Some(x.dfid),
        Message::Trenameat(x) => Some(x.newdirfid),
        _ => None,
    };
    // Whether the second fid is an existing file (not a new fid to be created).
    let existing = matches!(
        m,
        Message::Tlink(_) | Message::Trename(_) | Message::Trenameat(_)
    );
    ([crate::ops::request_fid(m), second], existing)
}

/// What [`route`] did with a request.
#[derive(Debug)]
pub enum Routed {
    /// The request names a ctl fid: this is its answer.
    Ctl(FsResult<Message>),
    /// An ordinary request, handed back.
    Pass(Message),
}

/// Hands a request to the ctl tree if it names a ctl fid; gives it back otherwise.
pub fn route(c: &Arc<Conn>, msg: Message) -> Routed {
    if matches!(msg, Message::Tattach(_) | Message::Tauth(_)) {
        return Routed::Pass(msg);
    }
    let ([first, second], second_existing) = fids_of(&msg);
    let is_ctl = |f: Option<Fid>| {
        f.and_then(|f| c.fids.get(f).ok())
            .filter(|e| e.ctl.is_some())
    };
    let primary = is_ctl(first);
    // For a rename or link: whether its second file is on the ctl tree too.
    let second_ctl = second_existing.then(|| is_ctl(second).is_some());
    match (primary, second_ctl) {
        (None, None | Some(false)) => Routed::Pass(msg),
        (None, Some(true)) | (Some(_), Some(false)) => Routed::Ctl(Err(FsError::CrossDevice)),
        (Some(e), _) => Routed::Ctl(handle(c, &e, msg)),
    }
}

fn ctl_of(e: &FidEntry) -> FsResult<&CtlFid> {
    e.ctl.as_ref().ok_or(FsError::CrossDevice)
}

fn handle(c: &Arc<Conn>, e: &Arc<FidEntry>, msg: Message) -> FsResult<Message> {
    let f = ctl_of(e)?;
    match msg {
        Message::Twalk(m) => walk(c, e, f, m.newfid, m.fid, &m.wnames),
        Message::Tclunk(m) => {
            c.fids.remove(m.fid)?;
            Ok(Rclunk {}.into())
        }
        Message::Tremove(m) => {
            c.fids.remove(m.fid)?;
            Err(FsError::ReadOnly)
        }
        Message::Tlopen(m) => open(f, m.flags, &c.shared),
        Message::Tread(m) => read(c, f, m.offset, m.count),
        Message::Twrite(m) => {
            let flags = f.open_flags().ok_or(FsError::FidState("fid not open"))?;
            if flags & lopen::ACCMODE == lopen::RDONLY || f.node != CtlNode::Null {
                return Err(FsError::FidState("fid not open for writing"));
            }
            let count = u32::try_from(m.data.len()).unwrap_or(u32::MAX);
            Ok(Rwrite { count }.into())
        }
        Message::Tgetattr(_) => Ok(getattr(f.node, c.shared.started).into()),
        Message::Treaddir(m) => readdir(f, m.offset, m.count),
        Message::Tstatfs(_) => Ok(Rstatfs {
            ty: V9FS_MAGIC,
            bsize: 4096,
            blocks: 0,
            bfree: 0,
            bavail: 0,
            files: FILES.len() as u64 + 1,
            ffree: 0,
            fsid: CTL_QID_BASE,
            namelen: 255,
        }
        .into()),
        Message::Tfsync(_) => {
            f.open_flags().ok_or(FsError::FidState("fid not open"))?;
            Ok(Rfsync {}.into())
        }
        Message::Tsetattr(_) if f.node == CtlNode::Null => Ok(Rsetattr {}.into()),
        Message::Tsetattr(_)
        | Message::Tlcreate(_)
        | Message::Tcreate(_)
        | Message::Tmkdir(_)
        | Message::Tsymlink(_)
        | Message::Tmknod(_)
        | Message::Tlink(_)
        | Message::Trename(_)
        | Message::Trenameat(_)
        | Message::Tunlinkat(_)
        | Message::Txattrcreate(_)
        | Message::Twstat(_) => Err(FsError::ReadOnly),
        Message::Txattrwalk(_) => Err(FsError::NotSupported("no extended attributes")),
        other => {
            tracing::debug!(msg = other.name(), "not served on the ctl tree");
            Err(FsError::NotSupported("not served on the ctl tree"))
        }
    }
}

fn walk(
    c: &Arc<Conn>,
    e: &Arc<FidEntry>,
    f: &CtlFid,
    newfid: Fid,
    fid: Fid,
    names: &[String],
) -> FsResult<Message> {
    if f.open_flags().is_some() {
        return Err(FsError::FidState("cannot walk from an open fid"));
    }
    if newfid != fid {
        c.fids.check_free(newfid)?;
    }
    if names.len() > envoy_proto::P9_MAXWELEM {
        return Err(FsError::Inval("more than 16 walk elements"));
    }
    let mut cur = f.node;
    let mut wqids = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let next = match (cur, name.as_str()) {
            (_, "..") => Ok(CtlNode::Root),
            (CtlNode::Root, n) => CtlNode::lookup(n).ok_or(FsError::NotFound),
            _ => Err(FsError::NotDir),
        };
        match next {
            Ok(n) => {
                wqids.push(n.qid());
                cur = n;
            }
            Err(err) if i == 0 => return Err(err),
            Err(_) => return Ok(Rwalk { wqids }.into()),
        }
    }
    let ne = new_entry(c, e.cred, cur);
    if newfid == fid {
        c.fids.replace(fid, ne);
    } else {
        c.fids.insert(newfid, ne)?;
    }
    Ok(Rwalk { wqids }.into())
}

fn open(f: &CtlFid, flags: u32, shared: &crate::server::Shared) -> FsResult<Message> {
    let write = flags & lopen::ACCMODE != lopen::RDONLY;
    let mut st = lock(&f.state);
    if st.flags.is_some() {
        return Err(FsError::FidState("fid already open"));
    }
    match f.node {
        CtlNode::Root if write || flags & lopen::TRUNC != 0 => return Err(FsError::IsDir),
        CtlNode::Null => {}
        _ if write => return Err(FsError::Access),
        CtlNode::Version => {
            st.content = Bytes::from(format!("envoyd {}\n", env!("CARGO_PKG_VERSION")));
        }
        CtlNode::Stats => {
            st.content = Bytes::from(crate::control::report::stats_text(shared));
        }
        CtlNode::Root | CtlNode::Zero => {}
    }
    st.flags = Some(flags);
    Ok(Rlopen {
        qid: f.node.qid(),
        iounit: 0,
    }
    .into())
}

fn read(c: &Arc<Conn>, f: &CtlFid, offset: u64, count: u32) -> FsResult<Message> {
    let st = lock(&f.state);
    let flags = st.flags.ok_or(FsError::FidState("fid not open"))?;
    if flags & lopen::ACCMODE == lopen::WRONLY {
        return Err(FsError::FidState("fid not open for reading"));
    }
    let data = match f.node {
        CtlNode::Root => return Err(FsError::IsDir),
        CtlNode::Zero => {
            let n = count.min(c.msize().saturating_sub(RREAD_HEADER)) as usize;
            Bytes::from_static(&ZEROS).slice(..n.min(ZERO_LEN))
        }
        CtlNode::Null => Bytes::new(),
        CtlNode::Version | CtlNode::Stats => {
            let len = st.content.len();
            let start = usize::try_from(offset).unwrap_or(usize::MAX).min(len);
            let end = start.saturating_add(count as usize).min(len);
            st.content.slice(start..end)
        }
    };
    Ok(Rread { data }.into())
}

fn getattr(node: CtlNode, started: std::time::SystemTime) -> Rgetattr {
    let t = started
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (sec, nsec) = (t.as_secs(), u64::from(t.subsec_nanos()));
    Rgetattr {
        valid: GETATTR_BASIC,
        qid: node.qid(),
        mode: node.mode(),
        uid: 0,
        gid: 0,
        nlink: if node == CtlNode::Root { 2 } else { 1 },
        rdev: 0,
        size: 0,
        blksize: 4096,
        blocks: 0,
        atime_sec: sec,
        atime_nsec: nsec,
        mtime_sec: sec,
        mtime_nsec: nsec,
        ctime_sec: sec,
        ctime_nsec: nsec,
        btime_sec: 0,
        btime_nsec: 0,
        gen: 0,
        data_version: 0,
    }
}

fn readdir(f: &CtlFid, offset: u64, count: u32) -> FsResult<Message> {
    if f.node != CtlNode::Root {
        return Err(FsError::NotDir);
    }
    if lock(&f.state).flags.is_none() {
        return Err(FsError::FidState("fid not open"));
    }
    let mut buf = bytes::BytesMut::new();
    let start = usize::try_from(offset).unwrap_or(usize::MAX);
    for (i, node) in FILES.iter().enumerate().skip(start) {
        let entry = DirEntry {
            qid: node.qid(),
            offset: i as u64 + 1,
            ty: dirent_type::REG,
            name: node.name().to_string(),
        };
        let fits = entry
            .encode_if_fits(&mut buf, count as usize)
            .map_err(|_| FsError::Inval("directory entry does not encode"))?;
        if !fits {
            break;
        }
    }
    Ok(Rreaddir { data: buf.freeze() }.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qids_distinct_and_root_is_dir() {
        let mut paths: Vec<u64> = FILES.iter().map(|f| f.qid().path).collect();
        paths.push(CtlNode::Root.qid().path);
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), FILES.len() + 1);
        assert_eq!(CtlNode::Root.qid().ty & qid_type::DIR, qid_type::DIR);
        assert_eq!(CtlNode::Zero.qid().ty & qid_type::DIR, 0);
    }

    #[test]
    fn lookup_names_round_trip_unknown_none() {
        for f in FILES {
            assert_eq!(CtlNode::lookup(f.name()), Some(f));
        }
        assert_eq!(CtlNode::lookup("nope"), None);
        assert_eq!(CtlNode::lookup(""), None);
    }

    #[test]
    fn readdir_small_count_returns_prefix_then_rest() {
        let f = CtlFid::new(CtlNode::Root);
        lock(&f.state).flags = Some(0);
        let Ok(Message::Rreaddir(r)) = readdir(&f, 0, 40) else {
            panic!("readdir failed")
        };
        let first: Vec<_> = envoy_proto::DirEntries::new(r.data)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(first.len(), 1);
        let next = first[0].offset;
        let Ok(Message::Rreaddir(r)) = readdir(&f, next, 4096) else {
            panic!("readdir failed")
        };
        let rest: Vec<_> = envoy_proto::DirEntries::new(r.data)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rest.len(), FILES.len() - 1);
        assert_eq!(rest.last().map(|e| e.name.as_str()), Some("stats"));
    }
}
