//! Object store benchmark: the store on the io_uring engine, the store on the synchronous
//! engine, and plain `std::fs` files (one file per object in a flat directory) as the peer
//! baseline, measured side by side in one run on the same file system.
//!
//! Every row runs one warm-up round and then `--reps` measured rounds; in each round every
//! backend runs once (interleaved, so load from other processes on a shared host hits them
//! alike), and the table reports each backend's median. Reads hit the page cache (the objects were just written), so
//! the rows measure the per-operation software cost — syscalls, allocation, descriptor
//! handling — which is what the engine choice changes; `--fsync-ops` adds a row that reaches
//! the disk.
//!
//! Usage: `cargo run --release -p envoy-benches --bin store_bench -- [--dir DIR] [--objects N]
//! [--reps R] [--big-objects M] [--fsync-ops F] [--depth Q] [--backends LIST] [--rows LIST]`.

use std::error::Error;
use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use envoy_storage::engine::uring::{FastPath, RingSetup, UringEngine};
use envoy_storage::engine::{IoEngine, IoOp, IoOutcome, SyncEngine};
use envoy_storage::{
    Attributes, EngineChoice, ObjectId, ObjectKind, ObjectStore, ReadRequest, StoreOptions,
    WriteRequest,
};

type BenchResult<T> = Result<T, Box<dyn Error>>;

const SMALL: usize = 4096;
const BIG: usize = 1 << 20;
const BATCH: usize = 32;

#[derive(Parser, Debug)]
#[command(about = "Object store engines vs. plain files, side by side")]
struct Args {
    /// Parent of the scratch directory (same disk as the store would use).
    #[arg(long, default_value = "/work")]
    dir: PathBuf,
    /// 4 KiB objects the read rows cycle through.
    #[arg(long, default_value_t = 1000)]
    objects: usize,
    /// 4 KiB objects created per repetition of the create row.
    #[arg(long, default_value_t = 100)]
    create_objects: usize,
    /// Passes over the 4 KiB objects in one repetition of a read row (longer repetitions
    /// average out scheduler noise on a shared host).
    #[arg(long, default_value_t = 2)]
    passes: usize,
    /// 4 KiB objects read per repetition of the cold-cache rows (0 leaves them out).
    #[arg(long, default_value_t = 256)]
    cold_objects: usize,
    /// 1 MiB objects per repetition.
    #[arg(long, default_value_t = 16)]
    big_objects: usize,
    /// Measured repetitions per row (after one warm-up).
    #[arg(long, default_value_t = 21)]
    reps: usize,
    /// fsync'd 4 KiB writes per repetition; 0 leaves the row out.
    #[arg(long, default_value_t = 0)]
    fsync_ops: usize,
    /// io_uring submission queue depth.
    #[arg(long, default_value_t = 256)]
    depth: u32,
    /// Backends to measure, in table order: store-uring (io_uring engine, default policy: a
    /// lone operation tries an inline RWF_NOWAIT page-cache copy, batches and whatever would
    /// wait for the device go through the ring), store-uring-perop (the inline attempt for
    /// every operation, batches too), store-uring-ring (every operation through the ring),
    /// store-sync, std-fs, and the same engines without the store (files kept open):
    /// files-uring, files-uring-perop, files-uring-ring, files-sync. An io_uring backend may
    /// end in +plain, +coop or +defer to pick its ring setup (default: plain). Each *-uring*
    /// column gets a ratio against the *-sync* of its family.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "store-uring,store-uring-ring,store-sync,std-fs"
    )]
    backends: Vec<String>,
    /// The store's descriptor cache capacity (default: the whole working set fits, so the
    /// rows measure data I/O rather than reopening files).
    #[arg(long, default_value_t = 4096)]
    fd_cache: usize,
    /// Rows to measure (for profiling one path): create, read, batch, write-batch, big-write,
    /// big-read,
    /// cold-read, cold-batch, fsync. Default: all but fsync unless --fsync-ops is set.
    #[arg(long, value_delimiter = ',')]
    rows: Vec<String>,
}

/// A handle on one object of a backend.
type Key = u64;

/// What the benchmark needs from a backend.
trait Backend {
    /// Creates a new object holding `data`.
    fn create_write(&mut self, data: &Bytes) -> BenchResult<Key>;
    /// Reads `len` bytes at offset 0; returns the bytes read.
    fn read(&self, key: Key, len: usize) -> BenchResult<usize>;
    /// Reads `len` bytes at offset 0 of every key; returns the total read.
    fn read_batch(&self, keys: &[Key], len: usize) -> BenchResult<usize>;
    /// Overwrites the object from offset 0 with `data`, optionally making it durable (files:
    /// `fdatasync`; the store: its `sync`, which also fsyncs the directories up to the root).
    fn write(&self, key: Key, data: &Bytes, sync: bool) -> BenchResult<()>;
    /// Overwrites every object from offset 0 with `data`, in one call where the backend has
    /// batches.
    fn write_batch(&self, keys: &[Key], data: &Bytes) -> BenchResult<()>;
    /// Tells the backend these objects will not be used again (closes cached descriptors).
    fn release(&mut self, _keys: &[Key]) {}
    /// Drops these objects' data from the page cache, so the next reads go to the disk; with
    /// `writeback`, dirty data is written back first (only clean pages can be dropped). May
    /// evict more than asked.
    fn evict(&self, keys: &[Key], writeback: bool) -> BenchResult<()>;
}

/// Drops one file's cached pages (`POSIX_FADV_DONTNEED`), after `fdatasync` if `writeback`.
fn evict_file(file: &File, writeback: bool) -> BenchResult<()> {
    if writeback {
        file.sync_data()?;
    }
    // SAFETY: `posix_fadvise` only reads its integer arguments; the descriptor is open for the
    // duration of the call because `file` is borrowed.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc).into());
    }
    Ok(())
}

/// [`evict_file`] on every regular file under `dir`.
fn evict_tree(dir: &Path, writeback: bool) -> BenchResult<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        if ty.is_dir() {
            evict_tree(&entry.path(), writeback)?;
        } else if ty.is_file() {
            evict_file(&File::open(entry.path())?, writeback)?;
        }
    }
    Ok(())
}

/// One file per object in a flat directory; every access opens the file, like a naive
/// file-per-object server would.
struct StdFs {
    dir: PathBuf,
    next: Key,
}

impl StdFs {
    fn path(&self, key: Key) -> PathBuf {
        self.dir.join(format!("o{key:016x}"))
    }
}

impl Backend for StdFs {
    fn create_write(&mut self, data: &Bytes) -> BenchResult<Key> {
        let key = self.next;
        self.next += 1;
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.path(key))?;
        f.write_all(data)?;
        Ok(key)
    }

    fn read(&self, key: Key, len: usize) -> BenchResult<usize> {
        let mut f = File::open(self.path(key))?;
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            match f.read(&mut buf[done..])? {
                0 => break,
                n => done += n,
            }
        }
        black_box(&buf);
        Ok(done)
    }

    fn read_batch(&self, keys: &[Key], len: usize) -> BenchResult<usize> {
        let mut total = 0;
        for &key in keys {
            total += self.read(key, len)?;
        }
        Ok(total)
    }

    fn write(&self, key: Key, data: &Bytes, sync: bool) -> BenchResult<()> {
        let mut f = OpenOptions::new().write(true).open(self.path(key))?;
        f.write_all(data)?;
        if sync {
            f.sync_data()?;
        }
        Ok(())
    }

    fn evict(&self, keys: &[Key], writeback: bool) -> BenchResult<()> {
        for &key in keys {
            evict_file(&File::open(self.path(key))?, writeback)?;
        }
        Ok(())
    }

    fn write_batch(&self, keys: &[Key], data: &Bytes) -> BenchResult<()> {
        for &key in keys {
            self.write(key, data, false)?;
        }
        Ok(())
    }
}

/// The object store on a given engine.
struct Store {
    store: ObjectStore,
    /// IDs reserved but not yet created.
    pool: std::ops::Range<u64>,
}

impl Store {
    fn new(dir: &Path, engine: Arc<dyn IoEngine>, fd_cache: usize) -> BenchResult<Self> {
        let opts = StoreOptions {
            engine: EngineChoice::Custom(engine),
            fd_cache,
            ..StoreOptions::default()
        };
        Ok(Store {
            store: ObjectStore::create(dir, opts)?,
            pool: 0..0,
        })
    }
}

impl Backend for Store {
    fn create_write(&mut self, data: &Bytes) -> BenchResult<Key> {
        let key = match self.pool.next() {
            Some(key) => key,
            None => {
                let range = self.store.reserve(4096)?;
                self.pool = range.first.0..range.first.0 + range.count;
                self.pool.next().ok_or("reserve returned no IDs")?
            }
        };
        let id = ObjectId(key);
        self.store
            .create_object(id, &Attributes::new(ObjectKind::Regular, 0o644))?;
        self.store.write(id, 0, data.clone())?;
        Ok(key)
    }

    fn read(&self, key: Key, len: usize) -> BenchResult<usize> {
        Ok(black_box(self.store.read(ObjectId(key), 0, len)?).len())
    }

    fn read_batch(&self, keys: &[Key], len: usize) -> BenchResult<usize> {
        let reqs: Vec<ReadRequest> = keys
            .iter()
            .map(|&k| ReadRequest {
                id: ObjectId(k),
                offset: 0,
                len,
            })
            .collect();
        let mut total = 0;
        for r in self.store.read_batch(&reqs) {
            total += black_box(r?).len();
        }
        Ok(total)
    }

    fn write(&self, key: Key, data: &Bytes, sync: bool) -> BenchResult<()> {
        self.store.write(ObjectId(key), 0, data.clone())?;
        if sync {
            self.store.sync(ObjectId(key))?;
        }
        Ok(())
    }

    fn evict(&self, _keys: &[Key], writeback: bool) -> BenchResult<()> {
        // Object paths are the store's business; evict its whole tree.
        evict_tree(self.store.dir(), writeback)
    }

    fn write_batch(&self, keys: &[Key], data: &Bytes) -> BenchResult<()> {
        let reqs = keys
            .iter()
            .map(|&k| WriteRequest {
                id: ObjectId(k),
                offset: 0,
                data: data.clone(),
            })
            .collect();
        for r in self.store.write_batch(reqs) {
            if r? != data.len() {
                return Err("short batched write".into());
            }
        }
        Ok(())
    }
}

/// Files kept open (a stand-in for the store's descriptor cache) with data moved by an
/// [`IoEngine`]: isolates the engine from the store's own costs.
struct RawEngine {
    dir: PathBuf,
    engine: Arc<dyn IoEngine>,
    files: Vec<Option<Arc<File>>>,
}

impl RawEngine {
    fn file(&self, key: Key) -> BenchResult<&Arc<File>> {
        usize::try_from(key)
            .ok()
            .and_then(|k| self.files.get(k))
            .and_then(Option::as_ref)
            .ok_or_else(|| format!("no object {key}").into())
    }
}

fn read_len(outcome: std::io::Result<IoOutcome>) -> BenchResult<usize> {
    match outcome? {
        IoOutcome::Read(bytes) => Ok(black_box(bytes).len()),
        other => Err(format!("engine answered a read with {other:?}").into()),
    }
}

impl Backend for RawEngine {
    fn create_write(&mut self, data: &Bytes) -> BenchResult<Key> {
        let key = self.files.len() as Key;
        let file = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(self.dir.join(format!("o{key:016x}")))?,
        );
        self.engine.run_one(IoOp::Write {
            file: Arc::clone(&file),
            offset: 0,
            data: data.clone(),
        })?;
        self.files.push(Some(file));
        Ok(key)
    }

    fn read(&self, key: Key, len: usize) -> BenchResult<usize> {
        read_len(self.engine.run_one(IoOp::Read {
            file: Arc::clone(self.file(key)?),
            offset: 0,
            len,
        }))
    }

    fn read_batch(&self, keys: &[Key], len: usize) -> BenchResult<usize> {
        let ops = keys
            .iter()
            .map(|&k| {
                Ok(IoOp::Read {
                    file: Arc::clone(self.file(k)?),
                    offset: 0,
                    len,
                })
            })
            .collect::<BenchResult<Vec<_>>>()?;
        let mut total = 0;
        for r in self.engine.run(ops) {
            total += read_len(r)?;
        }
        Ok(total)
    }

    fn write(&self, key: Key, data: &Bytes, sync: bool) -> BenchResult<()> {
        let file = self.file(key)?;
        let mut ops = vec![IoOp::Write {
            file: Arc::clone(file),
            offset: 0,
            data: data.clone(),
        }];
        if sync {
            ops.push(IoOp::Fsync {
                file: Arc::clone(file),
                datasync: true,
            });
        }
        // The fsync must follow the write, so a synced write is two calls.
        for op in ops {
            self.engine.run_one(op)?;
        }
        Ok(())
    }

    fn release(&mut self, keys: &[Key]) {
        for &key in keys {
            if let Some(slot) = usize::try_from(key)
                .ok()
                .and_then(|k| self.files.get_mut(k))
            {
                *slot = None;
            }
        }
    }

    fn evict(&self, keys: &[Key], writeback: bool) -> BenchResult<()> {
        for &key in keys {
            evict_file(self.file(key)?, writeback)?;
        }
        Ok(())
    }

    fn write_batch(&self, keys: &[Key], data: &Bytes) -> BenchResult<()> {
        let ops = keys
            .iter()
            .map(|&k| {
                Ok(IoOp::Write {
                    file: Arc::clone(self.file(k)?),
                    offset: 0,
                    data: data.clone(),
                })
            })
            .collect::<BenchResult<Vec<_>>>()?;
        for r in self.engine.run(ops) {
            r?;
        }
        Ok(())
    }
}

/// One table row: a name, a unit, and how to measure one repetition on a backend.
struct Row {
    key: &'static str,
    name: &'static str,
    unit: Unit,
    rep: Rep,
}

#[derive(Clone, Copy)]
enum Unit {
    OpsPerSec,
    MbPerSec,
}

impl Unit {
    fn label(self) -> &'static str {
        match self {
            Unit::OpsPerSec => "ops/s",
            Unit::MbPerSec => "MB/s",
        }
    }
}

/// The median of a row's repetitions and their spread: the interquartile range as a fraction
/// of the median.
#[derive(Clone, Copy)]
struct Stat {
    median: f64,
    spread: f64,
}

/// Linear-interpolated quantile of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return 0.0;
    };
    let pos = q * last as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let (a, b) = (sorted[lo.min(last)], sorted[hi.min(last)]);
    a + (b - a) * (pos - lo as f64)
}

fn stat(mut xs: Vec<f64>) -> Stat {
    xs.sort_by(f64::total_cmp);
    let median = quantile(&xs, 0.5);
    let iqr = quantile(&xs, 0.75) - quantile(&xs, 0.25);
    Stat {
        median,
        spread: if median > 0.0 { iqr / median } else { 0.0 },
    }
}

/// A backend and the objects it holds for the read and overwrite rows.
struct Subject {
    /// The backend's name on the command line and in the table.
    key: String,
    backend: Box<dyn Backend>,
    small: Vec<Key>,
    big: Vec<Key>,
}

/// One repetition of one row on one subject: (units of work, elapsed).
type Rep = fn(&mut Subject, &Args, &Payloads) -> BenchResult<(f64, Duration)>;

struct Payloads {
    small: Bytes,
    big: Bytes,
}

/// Measures one row on every subject, interleaved: one warm-up round, then `reps` rounds in
/// which each subject runs once, starting with a different one each round, so a change in
/// machine load (the host is shared) and the position in a round hit every backend alike. Returns each subject's median rate.
fn measure_row(
    subjects: &mut [Subject],
    args: &Args,
    payloads: &Payloads,
    rep: Rep,
) -> BenchResult<Vec<Stat>> {
    let mut rates = vec![Vec::with_capacity(args.reps); subjects.len()];
    let n = subjects.len();
    for round in 0..=args.reps {
        // Rotate who goes first: the position in a round measurably biased results.
        for j in 0..n {
            let i = (j + round) % n;
            let (Some(subject), Some(rates)) = (subjects.get_mut(i), rates.get_mut(i)) else {
                continue;
            };
            let (work, elapsed) = rep(subject, args, payloads)?;
            if round > 0 {
                rates.push(work / elapsed.as_secs_f64().max(1e-9));
            }
        }
    }
    Ok(rates.into_iter().map(stat).collect())
}

/// Row: create + write 4 KiB objects (fresh ones every repetition, released afterwards; the
/// read rows use the set made at setup).
fn rep_create(s: &mut Subject, args: &Args, p: &Payloads) -> BenchResult<(f64, Duration)> {
    let start = Instant::now();
    let mut keys = Vec::with_capacity(args.create_objects);
    for _ in 0..args.create_objects {
        keys.push(s.backend.create_write(&p.small)?);
    }
    let elapsed = start.elapsed();
    s.backend.release(&keys);
    Ok((args.create_objects as f64, elapsed))
}

fn rep_read(s: &mut Subject, args: &Args, _: &Payloads) -> BenchResult<(f64, Duration)> {
    let start = Instant::now();
    for _ in 0..args.passes {
        for &k in &s.small {
            if s.backend.read(k, SMALL)? != SMALL {
                return Err("short read".into());
            }
        }
    }
    Ok(((s.small.len() * args.passes) as f64, start.elapsed()))
}

fn rep_read_batch(s: &mut Subject, args: &Args, _: &Payloads) -> BenchResult<(f64, Duration)> {
    let start = Instant::now();
    for _ in 0..args.passes {
        for chunk in s.small.chunks(BATCH) {
            if s.backend.read_batch(chunk, SMALL)? != chunk.len() * SMALL {
                return Err("short batched read".into());
            }
        }
    }
    Ok(((s.small.len() * args.passes) as f64, start.elapsed()))
}

/// Rows: 4 KiB reads of objects whose data was just dropped from the page cache (the eviction
/// is not timed), so every read waits for the disk.
fn rep_cold_read(s: &mut Subject, args: &Args, _: &Payloads) -> BenchResult<(f64, Duration)> {
    let keys = &s.small[..args.cold_objects.min(s.small.len())];
    s.backend.evict(keys, false)?;
    let start = Instant::now();
    for &k in keys {
        if s.backend.read(k, SMALL)? != SMALL {
            return Err("short cold read".into());
        }
    }
    Ok((keys.len() as f64, start.elapsed()))
}

fn rep_cold_read_batch(s: &mut Subject, args: &Args, _: &Payloads) -> BenchResult<(f64, Duration)> {
    let keys = &s.small[..args.cold_objects.min(s.small.len())];
    s.backend.evict(keys, false)?;
    let start = Instant::now();
    for chunk in keys.chunks(BATCH) {
        if s.backend.read_batch(chunk, SMALL)? != chunk.len() * SMALL {
            return Err("short cold batched read".into());
        }
    }
    Ok((keys.len() as f64, start.elapsed()))
}

fn rep_write_batch(s: &mut Subject, args: &Args, p: &Payloads) -> BenchResult<(f64, Duration)> {
    let start = Instant::now();
    for _ in 0..args.passes {
        for chunk in s.small.chunks(BATCH) {
            s.backend.write_batch(chunk, &p.small)?;
        }
    }
    Ok(((s.small.len() * args.passes) as f64, start.elapsed()))
}

fn rep_big_write(s: &mut Subject, _: &Args, p: &Payloads) -> BenchResult<(f64, Duration)> {
    let start = Instant::now();
    for &k in &s.big {
        s.backend.write(k, &p.big, false)?;
    }
    Ok((s.big.len() as f64 * BIG as f64 / 1e6, start.elapsed()))
}

fn rep_big_read(s: &mut Subject, _: &Args, _: &Payloads) -> BenchResult<(f64, Duration)> {
    let start = Instant::now();
    for &k in &s.big {
        if s.backend.read(k, BIG)? != BIG {
            return Err("short big read".into());
        }
    }
    Ok((s.big.len() as f64 * BIG as f64 / 1e6, start.elapsed()))
}

fn rep_fsync_write(s: &mut Subject, args: &Args, p: &Payloads) -> BenchResult<(f64, Duration)> {
    let start = Instant::now();
    let keys = &s.small[..args.fsync_ops.max(1).min(s.small.len())];
    for &k in keys {
        s.backend.write(k, &p.small, true)?;
    }
    Ok((keys.len() as f64, start.elapsed()))
}

/// Measures every row; returns `table[row][subject]`.
fn run_all(subjects: &mut [Subject], args: &Args, rows: &[Row]) -> BenchResult<Vec<Vec<Stat>>> {
    let payloads = Payloads {
        small: Bytes::from(vec![0xa5u8; SMALL]),
        big: Bytes::from(vec![0x5au8; BIG]),
    };
    for s in subjects.iter_mut() {
        for _ in 0..args.objects {
            let key = s.backend.create_write(&payloads.small)?;
            s.small.push(key);
        }
        for _ in 0..args.big_objects {
            let key = s.backend.create_write(&payloads.big)?;
            s.big.push(key);
        }
    }
    if rows.iter().any(|r| r.key.starts_with("cold")) {
        // Write the objects back once, so that each cold repetition only has to drop pages.
        for s in subjects.iter() {
            s.backend.evict(&s.small, true)?;
        }
    }
    let mut table = Vec::with_capacity(rows.len());
    for row in rows {
        eprintln!("measuring {} ...", row.name);
        table.push(measure_row(subjects, args, &payloads, row.rep)?);
    }
    Ok(table)
}

fn rows(args: &Args) -> Vec<Row> {
    let mut rows = vec![
        Row {
            key: "create",
            name: "4 KiB create+write",
            unit: Unit::OpsPerSec,
            rep: rep_create,
        },
        Row {
            key: "read",
            name: "4 KiB read (1 per call)",
            unit: Unit::OpsPerSec,
            rep: rep_read,
        },
        Row {
            key: "batch",
            name: "4 KiB read (32 per call)",
            unit: Unit::OpsPerSec,
            rep: rep_read_batch,
        },
        Row {
            key: "write-batch",
            name: "4 KiB overwrite (32/call)",
            unit: Unit::OpsPerSec,
            rep: rep_write_batch,
        },
        Row {
            key: "big-write",
            name: "1 MiB write",
            unit: Unit::MbPerSec,
            rep: rep_big_write,
        },
        Row {
            key: "big-read",
            name: "1 MiB read",
            unit: Unit::MbPerSec,
            rep: rep_big_read,
        },
    ];
    if args.cold_objects > 0 {
        rows.push(Row {
            key: "cold-read",
            name: "4 KiB cold read (1/call)",
            unit: Unit::OpsPerSec,
            rep: rep_cold_read,
        });
        rows.push(Row {
            key: "cold-batch",
            name: "4 KiB cold read (32/call)",
            unit: Unit::OpsPerSec,
            rep: rep_cold_read_batch,
        });
    }
    if args.fsync_ops > 0 || args.rows.iter().any(|r| r == "fsync") {
        rows.push(Row {
            key: "fsync",
            name: "4 KiB write+sync",
            unit: Unit::OpsPerSec,
            rep: rep_fsync_write,
        });
    }
    if !args.rows.is_empty() {
        rows.retain(|r| args.rows.iter().any(|k| k == r.key));
    }
    rows
}

fn fs_type(path: &Path) -> String {
    // Best effort: the mount whose mount point is the longest prefix of `path`.
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return "unknown".into();
    };
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mut best: Option<(usize, String)> = None;
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (Some(_dev), Some(mnt), Some(ty)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if path.starts_with(mnt) && best.as_ref().is_none_or(|(len, _)| mnt.len() > *len) {
            best = Some((mnt.len(), ty.to_string()));
        }
    }
    best.map(|(_, ty)| ty).unwrap_or_else(|| "unknown".into())
}

fn main() -> BenchResult<()> {
    let args = Args::parse();
    if [
        args.reps,
        args.objects,
        args.create_objects,
        args.big_objects,
        args.passes,
    ]
    .contains(&0)
    {
        return Err(
            "counts (--reps, --objects, --create-objects, --big-objects, --passes) \
                    must be at least 1"
                .into(),
        );
    }
    let scratch = tempfile::Builder::new()
        .prefix("envoy-store-bench-")
        .tempdir_in(&args.dir)?;
    let sync: Arc<dyn IoEngine> = Arc::new(SyncEngine);
    // Every io_uring backend gets its own engine, so its stats count only its own operations.
    let mut uring_stats: Vec<(String, UringEngine)> = Vec::new();

    let mut backends: Vec<(String, Box<dyn Backend>)> = Vec::new();
    for name in &args.backends {
        let dir = scratch.path().join(name.replace('+', "_"));
        let (base, setup) = match name.split_once('+') {
            None => (name.as_str(), RingSetup::default()),
            Some((base, "plain")) => (base, RingSetup::Plain),
            Some((base, "coop")) => (base, RingSetup::CoopTaskrun),
            Some((base, "defer")) => (base, RingSetup::SingleIssuerDeferTaskrun),
            Some((_, other)) => return Err(format!("unknown ring setup {other:?}").into()),
        };
        let engine: Arc<dyn IoEngine> = match base {
            "store-sync" | "files-sync" | "std-fs" => Arc::clone(&sync),
            "store-uring" | "files-uring" | "store-uring-ring" | "files-uring-ring"
            | "store-uring-perop" | "files-uring-perop" => {
                let fast_path = if base.ends_with("-ring") {
                    FastPath::Off
                } else if base.ends_with("-perop") {
                    FastPath::EveryOp
                } else {
                    FastPath::default()
                };
                let engine = UringEngine::new(args.depth)?
                    .with_ring_setup(setup)
                    .with_fast_path(fast_path);
                uring_stats.push((name.clone(), engine.clone()));
                Arc::new(engine)
            }
            other => return Err(format!("unknown backend {other:?}").into()),
        };
        let backend: Box<dyn Backend> = if base == "std-fs" {
            std::fs::create_dir(&dir)?;
            Box::new(StdFs { dir, next: 0 })
        } else if base.starts_with("store-") {
            Box::new(Store::new(&dir, engine, args.fd_cache)?)
        } else {
            std::fs::create_dir(&dir)?;
            Box::new(RawEngine {
                dir,
                engine,
                files: Vec::new(),
            })
        };
        backends.push((name.clone(), backend));
    }

    let rows = rows(&args);
    let started = Instant::now();
    let mut subjects: Vec<Subject> = backends
        .into_iter()
        .map(|(key, backend)| Subject {
            key,
            backend,
            small: Vec::new(),
            big: Vec::new(),
        })
        .collect();
    let table = run_all(&mut subjects, &args, &rows)?;

    println!(
        "dir {} ({}), {} x 4 KiB objects read ({} passes per rep), {} created per rep, {} x 1 MiB \
         objects, median of {} interleaved reps after 1 warm-up, io_uring depth {}",
        args.dir.display(),
        fs_type(&args.dir),
        args.objects,
        args.passes,
        args.create_objects,
        args.big_objects,
        args.reps,
        args.depth
    );
    // One ratio column per io_uring backend, against the sync backend of the same family.
    let ratios: Vec<(usize, usize)> = subjects
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let family = s.key.split_once("-uring")?.0;
            let sync = subjects
                .iter()
                .position(|t| t.key == format!("{family}-sync"))?;
            Some((i, sync))
        })
        .collect();
    print!("| {:<26} | {:<5} |", "row", "unit");
    for s in &subjects {
        print!(" {:>16} |", s.key);
    }
    for &(u, _) in &ratios {
        print!(" {:>21} |", format!("{}/sync", subjects[u].key));
    }
    println!();
    print!("|{}|{}|", "-".repeat(28), "-".repeat(7));
    for _ in &subjects {
        print!("{}:|", "-".repeat(17));
    }
    for _ in &ratios {
        print!("{}:|", "-".repeat(22));
    }
    println!();
    for (row, rates) in rows.iter().zip(&table) {
        print!("| {:<26} | {:<5} |", row.name, row.unit.label());
        for rate in rates {
            print!(" {:>16.0} |", rate.median);
        }
        for &(u, s) in &ratios {
            match (rates.get(u), rates.get(s)) {
                (Some(u), Some(s)) if s.median > 0.0 => {
                    print!(" {:>21.2} |", u.median / s.median)
                }
                _ => print!(" {:>21} |", "-"),
            }
        }
        println!();
    }
    println!();
    println!("Spread (interquartile range / median) of the repetitions:");
    print!("| {:<26} |", "row");
    for s in &subjects {
        print!(" {:>16} |", s.key);
    }
    println!();
    print!("|{}|", "-".repeat(28));
    for _ in &subjects {
        print!("{}:|", "-".repeat(17));
    }
    println!();
    for (row, rates) in rows.iter().zip(&table) {
        print!("| {:<26} |", row.name);
        for rate in rates {
            print!(" {:>15.0}% |", rate.spread * 100.0);
        }
        println!();
    }
    println!();
    println!("Where each io_uring backend's operations went (UringEngine::stats, whole run):");
    for (name, engine) in &uring_stats {
        println!("* {name}: {:?}", engine.stats());
    }
    eprintln!("total {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
