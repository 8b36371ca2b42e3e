//! The test tree, the operation mixes and the driver that keeps M operations outstanding
//! on each connection.
//!
//! # Tree (created through 9P, so every server gets the same one)
//!
//! ```text
//! lg/hot                 4 KiB        getattr target
//! lg/small/f0000..       small files  walk+open+read+clunk
//! lg/big.dat             --big-mb     4 KiB random and 1 MiB sequential reads
//! lg/dir10k/e00000..     empty files  readdir (--dir-entries of them)
//! lg/create/             scratch      create+write+clunk+unlink
//! lg/wr/                 per-slot files for 1 MiB sequential writes
//! lg/ready               marker: the tree is complete
//! ```
//!
//! # Driver
//!
//! Each connection is one thread with one [`Client`]. It holds M *slots*; a slot runs one
//! operation at a time, an operation being a short chain of requests (getattr is one
//! request; walk+open+read+clunk is four). The thread sends the first request of every
//! slot, then repeatedly waits for the oldest outstanding tag, hands the reply to its slot
//! and sends whatever that slot asks next, so M requests stay on the wire. An error reply
//! ends the run: the bench measures servers that answer correctly.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use envoy_proto::{
    getattr, lopen, DirEntries, Fid, Message, Tclunk, Tgetattr, Tlcreate, Tlopen, Tread, Treaddir,
    Tremove, Tunlinkat, Twalk, Twrite,
};
use envoy_ring::file::{DetachGuard, RingFile};
use envoy_ring::Waiter;
use guest_shim::client::Client;
use guest_shim::endpoint::Endpoint;

use super::hist::RunStats;
use super::BenchResult;

/// Top directory of the tree.
pub const TOP: &str = "lg";
/// Fid of each connection's attach.
pub const ROOT_FID: Fid = Fid(1);
/// Size of the hot file and of every small file.
pub const SMALL_SIZE: usize = 4096;
/// Logical size of one sequential read or write.
pub const SEQ_SIZE: u64 = 1 << 20;
/// Linux's O_DIRECTORY.
const O_DIRECTORY: u32 = 0o200000;

/// The mixes, by name.
pub const MIXES: [&str; 7] = [
    "getattr",
    "smallfile",
    "rand4k",
    "seqread",
    "seqwrite",
    "create",
    "readdir",
];

/// Shape of the tree.
#[derive(Debug, Clone, Copy)]
pub struct Tree {
    /// Files in `lg/small`.
    pub small_files: usize,
    /// Size of `lg/big.dat`.
    pub big_bytes: u64,
    /// Entries in `lg/dir10k`.
    pub dir_entries: usize,
    /// Bytes each sequential-write slot cycles through before starting over.
    pub write_span: u64,
}

fn small_name(i: usize) -> String {
    format!("f{i:04}")
}

fn dir_name(i: usize) -> String {
    format!("e{i:05}")
}

/// Where a connection goes: a socket endpoint, or a ring of a `ring:PATH` file.
#[derive(Debug, Clone)]
pub enum Target {
    /// TCP, Unix socket, …
    Ep(Endpoint),
    /// A shared-memory ring file served by envoyd (`--listen ring:PATH`).
    Ring(PathBuf),
}

/// A session: the client, and for a ring the guard that detaches it when dropped (after
/// the client, so the server sees the detach once the client is done).
pub struct Session {
    /// The 9P client.
    pub client: Client,
    _guard: Option<DetachGuard>,
}

/// Connects, negotiates 9P2000.L with `msize` and attaches `aname` as root on [`ROOT_FID`].
pub fn connect(target: &Target, msize: u32, aname: &str) -> BenchResult<Session> {
    let (client, guard) = match target {
        Target::Ep(ep) => (Client::connect(ep)?, None),
        Target::Ring(path) => {
            let f = RingFile::open(path)?;
            let (r, w, g) = f.attach(Waiter::default())?.into_parts()?;
            (Client::from_stream(r, w), Some(g))
        }
    };
    client.handshake(msize, "9P2000.L")?;
    client.attach(ROOT_FID, Fid::NOFID, "root", aname, 0)?;
    Ok(Session {
        client,
        _guard: guard,
    })
}

/// A deterministic pattern of `len` bytes (file contents; never all zeros, so a server that
/// special-cases holes gains nothing).
pub fn pattern(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| (i * 131 + 7) as u8).collect::<Vec<u8>>())
}

/// Creates `dir/name` (dir walked from `ROOT_FID` by `dir_path`) with `data`, in max_io
/// pieces.
fn create_file(c: &Client, dir: Fid, name: &str, data: &Bytes) -> BenchResult<()> {
    let f = Fid(9);
    c.walk(dir, f, &[])?;
    c.lcreate(
        f,
        name,
        lopen::RDWR | lopen::CREATE | lopen::TRUNC,
        0o644,
        0,
    )?;
    let mut off = 0usize;
    let step = c.max_io() as usize;
    while off < data.len() {
        let end = (off + step).min(data.len());
        c.write(f, off as u64, data.slice(off..end))?;
        off = end;
    }
    c.clunk(f)?;
    Ok(())
}

/// Builds the tree unless `lg/ready` says it is there; prints what it did.
pub fn populate(c: &Client, tree: &Tree, quiet: bool) -> BenchResult<()> {
    let top = Fid(2);
    if c.walk(ROOT_FID, top, &[TOP, "ready"])
        .is_ok_and(|q| q.len() == 2)
    {
        c.clunk(top)?;
        return Ok(());
    }
    let t0 = Instant::now();
    if c.walk(ROOT_FID, top, &[TOP]).is_err() {
        c.mkdir(ROOT_FID, TOP, 0o777, 0)?;
        c.walk(ROOT_FID, top, &[TOP])?;
    }
    for d in ["small", "dir10k", "create", "wr"] {
        // A half-built tree from an interrupted run may have some of them already.
        let _ = c.mkdir(top, d, 0o777, 0);
    }
    let small = pattern(SMALL_SIZE);
    create_file(c, top, "hot", &small)?;
    let sub = Fid(3);
    c.walk(top, sub, &["small"])?;
    for i in 0..tree.small_files {
        create_file(c, sub, &small_name(i), &small)?;
    }
    c.clunk(sub)?;
    c.walk(top, sub, &["dir10k"])?;
    let f = Fid(9);
    for i in 0..tree.dir_entries {
        c.walk(sub, f, &[])?;
        c.lcreate(f, &dir_name(i), lopen::RDWR | lopen::CREATE, 0o644, 0)?;
        c.clunk(f)?;
    }
    c.clunk(sub)?;
    let big = pattern(1 << 20);
    c.walk(top, f, &[])?;
    c.lcreate(
        f,
        "big.dat",
        lopen::RDWR | lopen::CREATE | lopen::TRUNC,
        0o644,
        0,
    )?;
    let step = (c.max_io() as usize).min(big.len());
    let mut off = 0u64;
    while off < tree.big_bytes {
        let n = step.min((tree.big_bytes - off) as usize);
        c.write(f, off, big.slice(..n))?;
        off += n as u64;
    }
    c.clunk(f)?;
    create_file(c, top, "ready", &Bytes::new())?;
    c.clunk(top)?;
    if !quiet {
        println!(
            "  tree built in {:.1} s ({} small files, {} directory entries, {} MiB big file)",
            t0.elapsed().as_secs_f64(),
            tree.small_files,
            tree.dir_entries,
            tree.big_bytes >> 20
        );
    }
    Ok(())
}

/// A small xorshift generator (the mixes need cheap, reproducible offsets and names).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (seed 0 is replaced).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// One slot's operation state machine.
pub trait SlotOp: Send {
    /// The first request of the next operation.
    fn start(&mut self) -> Message;
    /// Handles a reply: the next request of this operation, or `None` when it is done.
    fn reply(&mut self, m: Message) -> BenchResult<Option<Message>>;
    /// Payload bytes and items of the operation that just finished.
    fn done(&mut self) -> (u64, u64);
    /// An error reply with `errno`: the request to send instead, or `None` to fail the run.
    fn error(&mut self, _errno: u32) -> Option<Message> {
        None
    }
    /// Something the table should say about how this slot ran.
    fn note(&self) -> Option<&'static str> {
        None
    }
}

fn unexpected(what: &str, m: &Message) -> Box<dyn std::error::Error + Send + Sync> {
    format!("{what}: unexpected reply {}", m.name()).into()
}

/// Everything a slot's setup needs.
pub struct SlotCtx<'a> {
    /// The connection.
    pub client: &'a Client,
    /// Connection number.
    pub conn: usize,
    /// Slot number within the connection.
    pub slot: usize,
    /// Global slot index and count (for splitting the big file).
    pub global: (usize, usize),
    /// Tree shape.
    pub tree: Tree,
    /// Payload of writes.
    pub payload: Bytes,
}

impl SlotCtx<'_> {
    /// A fid private to this slot (`k` < 8).
    fn fid(&self, k: u32) -> Fid {
        Fid(1000 + self.slot as u32 * 8 + k)
    }

    fn open(&self, fid: Fid, path: &[&str], flags: u32) -> BenchResult<()> {
        self.client.walk(ROOT_FID, fid, path)?;
        self.client.lopen(fid, flags)?;
        Ok(())
    }
}

struct GetattrOp {
    fid: Fid,
}

impl SlotOp for GetattrOp {
    fn start(&mut self) -> Message {
        Tgetattr {
            fid: self.fid,
            request_mask: getattr::BASIC,
        }
        .into()
    }
    fn reply(&mut self, m: Message) -> BenchResult<Option<Message>> {
        match m {
            Message::Rgetattr(_) => Ok(None),
            m => Err(unexpected("getattr", &m)),
        }
    }
    fn done(&mut self) -> (u64, u64) {
        (0, 0)
    }
}

struct SmallFileOp {
    fid: Fid,
    count: u32,
    files: usize,
    rng: Rng,
    step: u8,
    bytes: u64,
}

impl SlotOp for SmallFileOp {
    fn start(&mut self) -> Message {
        self.step = 0;
        self.bytes = 0;
        let name = small_name(self.rng.below(self.files as u64) as usize);
        Twalk {
            fid: ROOT_FID,
            newfid: self.fid,
            wnames: vec![TOP.into(), "small".into(), name],
        }
        .into()
    }
    fn reply(&mut self, m: Message) -> BenchResult<Option<Message>> {
        self.step += 1;
        let fid = self.fid;
        match (self.step, m) {
            (1, Message::Rwalk(_)) => Ok(Some(
                Tlopen {
                    fid,
                    flags: lopen::RDONLY,
                }
                .into(),
            )),
            (2, Message::Rlopen(_)) => Ok(Some(
                Tread {
                    fid,
                    offset: 0,
                    count: self.count,
                }
                .into(),
            )),
            (3, Message::Rread(r)) => {
                self.bytes = r.data.len() as u64;
                Ok(Some(Tclunk { fid }.into()))
            }
            (4, Message::Rclunk(_)) => Ok(None),
            (_, m) => Err(unexpected("smallfile", &m)),
        }
    }
    fn done(&mut self) -> (u64, u64) {
        (self.bytes, 0)
    }
}

struct RandReadOp {
    fid: Fid,
    blocks: u64,
    rng: Rng,
    bytes: u64,
}

impl SlotOp for RandReadOp {
    fn start(&mut self) -> Message {
        Tread {
            fid: self.fid,
            offset: self.rng.below(self.blocks) * 4096,
            count: 4096,
        }
        .into()
    }
    fn reply(&mut self, m: Message) -> BenchResult<Option<Message>> {
        match m {
            Message::Rread(r) => {
                self.bytes = r.data.len() as u64;
                Ok(None)
            }
            m => Err(unexpected("rand4k", &m)),
        }
    }
    fn done(&mut self) -> (u64, u64) {
        (self.bytes, 0)
    }
}

/// 1 MiB sequential reads or writes, in max_io pieces when msize is smaller.
struct SeqOp {
    fid: Fid,
    write: bool,
    /// Region of the file this slot cycles through.
    base: u64,
    span: u64,
    /// Next offset within the region.
    pos: u64,
    /// Bytes of the current 1 MiB still to request.
    left: u64,
    piece: u64,
    payload: Bytes,
    bytes: u64,
}

impl SeqOp {
    fn next_piece(&mut self) -> Message {
        if self.pos >= self.span {
            self.pos = 0;
        }
        let n = self.piece.min(self.left).min(self.span - self.pos);
        let offset = self.base + self.pos;
        self.pos += n;
        self.left -= n;
        if self.write {
            Twrite {
                fid: self.fid,
                offset,
                data: self.payload.slice(..n as usize),
            }
            .into()
        } else {
            Tread {
                fid: self.fid,
                offset,
                count: n as u32,
            }
            .into()
        }
    }
}

impl SlotOp for SeqOp {
    fn start(&mut self) -> Message {
        self.left = SEQ_SIZE;
        self.bytes = 0;
        self.next_piece()
    }
    fn reply(&mut self, m: Message) -> BenchResult<Option<Message>> {
        match m {
            Message::Rread(r) if !self.write => self.bytes += r.data.len() as u64,
            Message::Rwrite(r) if self.write => self.bytes += u64::from(r.count),
            m => return Err(unexpected("sequential", &m)),
        }
        Ok((self.left > 0).then(|| self.next_piece()))
    }
    fn done(&mut self) -> (u64, u64) {
        (self.bytes, 0)
    }
}

/// create + write + clunk + unlinkat. A server without `Tunlinkat` (Debian's diod answers
/// EOPNOTSUPP) gets what Linux's v9fs falls back to: walk to the name + `Tremove`; the slot
/// remembers it and skips the failing `Tunlinkat` from then on.
struct CreateOp {
    dir: Fid,
    fid: Fid,
    prefix: String,
    n: u64,
    name: String,
    step: u8,
    payload: Bytes,
    use_remove: bool,
}

impl CreateOp {
    fn remove_walk(&mut self) -> Message {
        self.step = 5;
        Twalk {
            fid: self.dir,
            newfid: self.fid,
            wnames: vec![std::mem::take(&mut self.name)],
        }
        .into()
    }
}

impl SlotOp for CreateOp {
    fn start(&mut self) -> Message {
        self.step = 0;
        self.n += 1;
        self.name = format!("{}-{}", self.prefix, self.n);
        Twalk {
            fid: self.dir,
            newfid: self.fid,
            wnames: vec![],
        }
        .into()
    }
    fn reply(&mut self, m: Message) -> BenchResult<Option<Message>> {
        self.step += 1;
        let fid = self.fid;
        match (self.step, m) {
            (1, Message::Rwalk(_)) => Ok(Some(
                Tlcreate {
                    fid,
                    name: self.name.clone(),
                    flags: lopen::RDWR | lopen::CREATE | lopen::EXCL,
                    mode: 0o644,
                    gid: 0,
                }
                .into(),
            )),
            (2, Message::Rlcreate(_)) => Ok(Some(
                Twrite {
                    fid,
                    offset: 0,
                    data: self.payload.slice(..SMALL_SIZE),
                }
                .into(),
            )),
            (3, Message::Rwrite(_)) => Ok(Some(Tclunk { fid }.into())),
            (4, Message::Rclunk(_)) if self.use_remove => Ok(Some(self.remove_walk())),
            (4, Message::Rclunk(_)) => Ok(Some(
                Tunlinkat {
                    dirfid: self.dir,
                    name: self.name.clone(),
                    flags: 0,
                }
                .into(),
            )),
            (5, Message::Runlinkat(_)) => Ok(None),
            (6, Message::Rwalk(_)) => Ok(Some(Tremove { fid }.into())),
            (7, Message::Rremove(_)) => Ok(None),
            (_, m) => Err(unexpected("create", &m)),
        }
    }
    fn error(&mut self, errno: u32) -> Option<Message> {
        if self.step == 4 && errno == libc::EOPNOTSUPP as u32 {
            self.use_remove = true;
            return Some(self.remove_walk());
        }
        None
    }
    fn done(&mut self) -> (u64, u64) {
        (SMALL_SIZE as u64, 0)
    }
    fn note(&self) -> Option<&'static str> {
        self.use_remove
            .then_some("no Tunlinkat (EOPNOTSUPP): walk+Tremove, as Linux falls back")
    }
}

struct ReaddirOp {
    fid: Fid,
    count: u32,
    step: u8,
    offset: u64,
    bytes: u64,
    entries: u64,
}

impl SlotOp for ReaddirOp {
    fn start(&mut self) -> Message {
        self.step = 0;
        self.offset = 0;
        self.bytes = 0;
        self.entries = 0;
        Twalk {
            fid: ROOT_FID,
            newfid: self.fid,
            wnames: vec![TOP.into(), "dir10k".into()],
        }
        .into()
    }
    fn reply(&mut self, m: Message) -> BenchResult<Option<Message>> {
        let fid = self.fid;
        let readdir = |offset| {
            Some(
                Treaddir {
                    fid,
                    offset,
                    count: self.count,
                }
                .into(),
            )
        };
        match (self.step, m) {
            (0, Message::Rwalk(_)) => {
                self.step = 1;
                Ok(Some(
                    Tlopen {
                        fid,
                        flags: lopen::RDONLY | O_DIRECTORY,
                    }
                    .into(),
                ))
            }
            (1, Message::Rlopen(_)) => {
                self.step = 2;
                Ok(readdir(0))
            }
            (2, Message::Rreaddir(r)) if r.data.is_empty() => {
                self.step = 3;
                Ok(Some(Tclunk { fid }.into()))
            }
            (2, Message::Rreaddir(r)) => {
                self.bytes += r.data.len() as u64;
                for e in DirEntries::new(r.data) {
                    let e = e.map_err(|k| format!("readdir: bad entry data: {k}"))?;
                    self.offset = e.offset;
                    self.entries += 1;
                }
                Ok(readdir(self.offset))
            }
            (3, Message::Rclunk(_)) => Ok(None),
            (_, m) => Err(unexpected("readdir", &m)),
        }
    }
    fn done(&mut self) -> (u64, u64) {
        (self.bytes, self.entries)
    }
}

/// Sets up one slot of `mix` (walks and opens done synchronously, before the clock).
pub fn make_slot(mix: &str, ctx: &SlotCtx<'_>) -> BenchResult<Box<dyn SlotOp>> {
    let c = ctx.client;
    let seed = (ctx.global.0 as u64 + 1) * 7919;
    // Pieces of a power of two, as a page-cache client sends them (msize 1 MiB: 2 × 512 KiB).
    let max_io = u64::from(c.max_io()).max(1);
    let piece = (1u64 << (63 - max_io.leading_zeros())).min(SEQ_SIZE);
    Ok(match mix {
        "getattr" => {
            let fid = ctx.fid(0);
            c.walk(ROOT_FID, fid, &[TOP, "hot"])?;
            Box::new(GetattrOp { fid })
        }
        "smallfile" => Box::new(SmallFileOp {
            fid: ctx.fid(0),
            count: c.max_io().min(65536),
            files: ctx.tree.small_files,
            rng: Rng::new(seed),
            step: 0,
            bytes: 0,
        }),
        "rand4k" => {
            let fid = ctx.fid(0);
            ctx.open(fid, &[TOP, "big.dat"], lopen::RDONLY)?;
            Box::new(RandReadOp {
                fid,
                blocks: ctx.tree.big_bytes / 4096,
                rng: Rng::new(seed),
                bytes: 0,
            })
        }
        "seqread" => {
            let fid = ctx.fid(0);
            ctx.open(fid, &[TOP, "big.dat"], lopen::RDONLY)?;
            let (i, n) = ctx.global;
            // Each slot streams its own region of the file, 1 MiB aligned.
            let span = (ctx.tree.big_bytes / n.max(1) as u64 / SEQ_SIZE).max(1) * SEQ_SIZE;
            Box::new(SeqOp {
                fid,
                write: false,
                base: (i as u64 * span) % ctx.tree.big_bytes.max(SEQ_SIZE),
                span,
                pos: 0,
                left: 0,
                piece,
                payload: Bytes::new(),
                bytes: 0,
            })
        }
        "seqwrite" => {
            let fid = ctx.fid(0);
            // The slot's file from an earlier cell is reused (truncated), so runs do not
            // pile up files.
            let name = format!("c{}-s{}", ctx.conn, ctx.slot);
            let path = [TOP, "wr", name.as_str()];
            // A walk that stops early answers with fewer qids (and creates no fid).
            if c.walk(ROOT_FID, fid, &path)
                .is_ok_and(|q| q.len() == path.len())
            {
                c.lopen(fid, lopen::RDWR | lopen::TRUNC)?;
            } else {
                c.walk(ROOT_FID, fid, &[TOP, "wr"])?;
                c.lcreate(fid, &name, lopen::RDWR | lopen::CREATE, 0o644, 0)?;
            }
            Box::new(SeqOp {
                fid,
                write: true,
                base: 0,
                span: ctx.tree.write_span.max(SEQ_SIZE),
                pos: 0,
                left: 0,
                piece,
                payload: ctx.payload.clone(),
                bytes: 0,
            })
        }
        "create" => {
            let dir = ctx.fid(1);
            c.walk(ROOT_FID, dir, &[TOP, "create"])?;
            Box::new(CreateOp {
                dir,
                fid: ctx.fid(0),
                prefix: format!("c{}-s{}", ctx.conn, ctx.slot),
                n: 0,
                name: String::new(),
                step: 0,
                payload: ctx.payload.clone(),
                use_remove: false,
            })
        }
        "readdir" => Box::new(ReaddirOp {
            fid: ctx.fid(0),
            count: c.max_io(),
            step: 0,
            offset: 0,
            bytes: 0,
            entries: 0,
        }),
        other => return Err(format!("unknown mix {other:?} (known: {MIXES:?})").into()),
    })
}

/// One connection's part of a run: set up `depth` slots, wait at `barrier`, run until
/// `warmup + secs`, counting operations that finish after the warm-up.
#[allow(clippy::too_many_arguments)]
fn run_connection(
    client: &Client,
    mix: &str,
    conn: usize,
    conns: usize,
    depth: usize,
    tree: Tree,
    payload: Bytes,
    barrier: &Barrier,
    warmup: Duration,
    secs: Duration,
) -> BenchResult<RunStats> {
    let mut slots = Vec::with_capacity(depth);
    let mut setup_err = None;
    for slot in 0..depth {
        let ctx = SlotCtx {
            client,
            conn,
            slot,
            global: (conn * depth + slot, conns * depth),
            tree,
            payload: payload.clone(),
        };
        match make_slot(mix, &ctx) {
            Ok(s) => slots.push(s),
            Err(e) => {
                setup_err = Some(e);
                break;
            }
        }
    }
    // Every thread reaches the barrier, even after a failed setup, so none waits forever.
    barrier.wait();
    if let Some(e) = setup_err {
        return Err(e);
    }
    let t0 = Instant::now();
    let (from, until) = (t0 + warmup, t0 + warmup + secs);
    let mut stats = RunStats {
        window: secs,
        ..RunStats::default()
    };
    let mut started = vec![t0; depth];
    let mut queue = VecDeque::with_capacity(depth);
    for (i, s) in slots.iter_mut().enumerate() {
        queue.push_back((i, client.send(s.start())?));
    }
    while let Some((i, tag)) = queue.pop_front() {
        let next = match client.wait(tag) {
            Ok(reply) => slots[i].reply(reply)?,
            Err(e) => match e.errno().and_then(|errno| slots[i].error(errno)) {
                Some(m) => Some(m),
                None => return Err(e.into()),
            },
        };
        if let Some(next) = next {
            queue.push_back((i, client.send(next)?));
            continue;
        }
        let now = Instant::now();
        let (bytes, items) = slots[i].done();
        if started[i] >= from && now <= until {
            stats.ops += 1;
            stats.bytes += bytes;
            stats.items += items;
            stats.lat_ns.push((now - started[i]).as_nanos() as u64);
        }
        if now < until {
            started[i] = now;
            queue.push_back((i, client.send(slots[i].start())?));
        }
    }
    stats.note = slots.iter().find_map(|s| s.note());
    Ok(stats)
}

/// Runs `mix` with `conns` connections of `depth` outstanding operations each against
/// `ep`; `payload` is the data written (at least 1 MiB).
#[allow(clippy::too_many_arguments)]
pub fn run_mix(
    target: &Target,
    aname: &str,
    msize: u32,
    mix: &str,
    conns: usize,
    depth: usize,
    tree: Tree,
    payload: &Bytes,
    warmup: Duration,
    secs: Duration,
) -> BenchResult<RunStats> {
    let mut sessions = Vec::with_capacity(conns);
    for _ in 0..conns {
        sessions.push(Arc::new(connect(target, msize, aname)?));
    }
    let barrier = Arc::new(Barrier::new(conns));
    let mut handles = Vec::with_capacity(conns);
    for (conn, c) in sessions.iter().enumerate() {
        let (c, barrier, payload, mix) = (
            Arc::clone(c),
            Arc::clone(&barrier),
            payload.clone(),
            mix.to_string(),
        );
        handles.push(
            std::thread::Builder::new()
                .name(format!("loadgen-{conn}"))
                .spawn(move || {
                    run_connection(
                        &c.client, &mix, conn, conns, depth, tree, payload, &barrier, warmup, secs,
                    )
                    .map_err(|e| e.to_string())
                })?,
        );
    }
    let mut total = RunStats {
        window: secs,
        ..RunStats::default()
    };
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(s)) => total.merge(s),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert("a connection thread panicked".into());
            }
        }
    }
    match first_err {
        Some(e) => Err(format!("{mix}: {e}").into()),
        None => Ok(total),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_below_stays_in_range() {
        let mut r = Rng::new(0);
        assert!((0..1000).all(|_| r.below(7) < 7));
    }

    #[test]
    fn seq_write_pieces_wrap_at_span() {
        let mut op = SeqOp {
            fid: Fid(5),
            write: true,
            base: 0,
            span: SEQ_SIZE,
            pos: 0,
            left: 0,
            piece: 1 << 19,
            payload: pattern(1 << 20),
            bytes: 0,
        };
        let mut offsets = Vec::new();
        for _ in 0..2 {
            let mut m = Some(op.start());
            while let Some(Message::Twrite(w)) = m {
                offsets.push((w.offset, w.data.len()));
                m = op
                    .reply(
                        envoy_proto::Rwrite {
                            count: w.data.len() as u32,
                        }
                        .into(),
                    )
                    .unwrap_or(None);
            }
        }
        assert_eq!(
            offsets,
            vec![
                (0, 1 << 19),
                (1 << 19, 1 << 19),
                (0, 1 << 19),
                (1 << 19, 1 << 19)
            ]
        );
        assert_eq!(op.done().0, SEQ_SIZE);
    }
}
