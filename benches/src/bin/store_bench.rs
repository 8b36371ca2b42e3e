//! Object store benchmark: the store on the io_uring engine, the store on the synchronous
//! engine, and plain `std::fs` files (one file per object in a flat directory) as the peer
//! baseline, measured side by side in one run on the same file system.
//!
//! Every row runs one warm-up repetition and then `--reps` measured repetitions per backend;
//! the table reports the median. Reads hit the page cache (the objects were just written), so
//! the rows measure the per-operation software cost — syscalls, allocation, descriptor
//! handling — which is what the engine choice changes; `--fsync-ops` adds a row that reaches
//! the disk.
//!
//! Usage: `cargo run --release -p envoy-benches --bin store_bench -- [--dir DIR] [--objects N]
//! [--reps R] [--big-objects M] [--fsync-ops F] [--depth Q]`.

use std::error::Error;
use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use envoy_storage::engine::uring::UringEngine;
use envoy_storage::engine::{IoEngine, IoOp, IoOutcome, SyncEngine};

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
    /// 4 KiB objects per repetition.
    #[arg(long, default_value_t = 2000)]
    objects: usize,
    /// 1 MiB objects per repetition.
    #[arg(long, default_value_t = 64)]
    big_objects: usize,
    /// Measured repetitions per row (after one warm-up).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// fsync'd 4 KiB writes per repetition; 0 leaves the row out.
    #[arg(long, default_value_t = 0)]
    fsync_ops: usize,
    /// io_uring submission queue depth.
    #[arg(long, default_value_t = 256)]
    depth: u32,
}

/// A handle on one object of a backend.
type Key = u64;

/// What the benchmark needs from a backend.
trait Backend {
    fn label(&self) -> String;
    /// Creates a new object holding `data`.
    fn create_write(&mut self, data: &Bytes) -> BenchResult<Key>;
    /// Reads `len` bytes at offset 0; returns the bytes read.
    fn read(&self, key: Key, len: usize) -> BenchResult<usize>;
    /// Reads `len` bytes at offset 0 of every key; returns the total read.
    fn read_batch(&self, keys: &[Key], len: usize) -> BenchResult<usize>;
    /// Overwrites the object from offset 0 with `data`, optionally flushing it to disk.
    fn write(&self, key: Key, data: &Bytes, sync: bool) -> BenchResult<()>;
    /// Tells the backend these objects will not be used again (closes cached descriptors).
    fn release(&mut self, _keys: &[Key]) {}
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
    fn label(&self) -> String {
        "std::fs".into()
    }

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
    fn label(&self) -> String {
        format!("files+{}", self.engine.name())
    }

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
}

/// One table row: a name, a unit, and how to measure one repetition on a backend.
struct Row {
    name: &'static str,
    unit: Unit,
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

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => 0.0,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// Runs `rep` once to warm up and `reps` more times; returns the median rate, where each
/// repetition reports (units of work, elapsed).
fn measure(reps: usize, mut rep: impl FnMut() -> BenchResult<(f64, Duration)>) -> BenchResult<f64> {
    rep()?;
    let mut rates = Vec::with_capacity(reps);
    for _ in 0..reps {
        let (work, elapsed) = rep()?;
        rates.push(work / elapsed.as_secs_f64().max(1e-9));
    }
    Ok(median(rates))
}

/// Measures every row on one backend; returns one rate per row.
fn run_backend(b: &mut dyn Backend, args: &Args, rows: &[Row]) -> BenchResult<Vec<f64>> {
    let small = Bytes::from(vec![0xa5u8; SMALL]);
    let big = Bytes::from(vec![0x5au8; BIG]);
    let mut out = Vec::with_capacity(rows.len());

    // Row: create + write 4 KiB objects (fresh objects every repetition).
    let mut small_keys = Vec::new();
    out.push(measure(args.reps, || {
        let start = Instant::now();
        let mut keys = Vec::with_capacity(args.objects);
        for _ in 0..args.objects {
            keys.push(b.create_write(&small)?);
        }
        let elapsed = start.elapsed();
        b.release(&small_keys);
        small_keys = keys;
        Ok((args.objects as f64, elapsed))
    })?);

    // Row: 4 KiB reads, one at a time.
    out.push(measure(args.reps, || {
        let start = Instant::now();
        for &k in &small_keys {
            if b.read(k, SMALL)? != SMALL {
                return Err("short read".into());
            }
        }
        Ok((small_keys.len() as f64, start.elapsed()))
    })?);

    // Row: 4 KiB reads, 32 per call.
    out.push(measure(args.reps, || {
        let start = Instant::now();
        let mut ops = 0;
        for chunk in small_keys.chunks(BATCH) {
            if b.read_batch(chunk, SMALL)? != chunk.len() * SMALL {
                return Err("short batched read".into());
            }
            ops += chunk.len();
        }
        Ok((ops as f64, start.elapsed()))
    })?);

    // Rows: 1 MiB writes (overwrite in place) and reads.
    let mut big_keys = Vec::with_capacity(args.big_objects);
    for _ in 0..args.big_objects {
        big_keys.push(b.create_write(&big)?);
    }
    let mb = (BIG as f64) / 1e6;
    out.push(measure(args.reps, || {
        let start = Instant::now();
        for &k in &big_keys {
            b.write(k, &big, false)?;
        }
        Ok((big_keys.len() as f64 * mb, start.elapsed()))
    })?);
    out.push(measure(args.reps, || {
        let start = Instant::now();
        for &k in &big_keys {
            if b.read(k, BIG)? != BIG {
                return Err("short big read".into());
            }
        }
        Ok((big_keys.len() as f64 * mb, start.elapsed()))
    })?);

    if args.fsync_ops > 0 {
        let keys: Vec<Key> = small_keys.iter().copied().take(args.fsync_ops).collect();
        out.push(measure(args.reps, || {
            let start = Instant::now();
            for &k in &keys {
                b.write(k, &small, true)?;
            }
            Ok((keys.len() as f64, start.elapsed()))
        })?);
    }
    debug_assert_eq!(out.len(), rows.len());
    Ok(out)
}

fn rows(args: &Args) -> Vec<Row> {
    let mut rows = vec![
        Row {
            name: "4 KiB create+write",
            unit: Unit::OpsPerSec,
        },
        Row {
            name: "4 KiB read (1 per call)",
            unit: Unit::OpsPerSec,
        },
        Row {
            name: "4 KiB read (32 per call)",
            unit: Unit::OpsPerSec,
        },
        Row {
            name: "1 MiB write",
            unit: Unit::MbPerSec,
        },
        Row {
            name: "1 MiB read",
            unit: Unit::MbPerSec,
        },
    ];
    if args.fsync_ops > 0 {
        rows.push(Row {
            name: "4 KiB write+fdatasync",
            unit: Unit::OpsPerSec,
        });
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
    if args.reps == 0 || args.objects == 0 || args.big_objects == 0 {
        return Err("--reps, --objects and --big-objects must be at least 1".into());
    }
    let scratch = tempfile::Builder::new()
        .prefix("envoy-store-bench-")
        .tempdir_in(&args.dir)?;
    let uring: Arc<dyn IoEngine> = Arc::new(UringEngine::new(args.depth)?);
    let sync: Arc<dyn IoEngine> = Arc::new(SyncEngine);

    let mut backends: Vec<Box<dyn Backend>> = Vec::new();
    for (name, engine) in [("uring", &uring), ("sync", &sync)] {
        let dir = scratch.path().join(format!("files-{name}"));
        std::fs::create_dir(&dir)?;
        backends.push(Box::new(RawEngine {
            dir,
            engine: Arc::clone(engine),
            files: Vec::new(),
        }));
    }
    let fs_dir = scratch.path().join("stdfs");
    std::fs::create_dir(&fs_dir)?;
    backends.push(Box::new(StdFs {
        dir: fs_dir,
        next: 0,
    }));

    let rows = rows(&args);
    let started = Instant::now();
    let mut columns = Vec::new();
    for b in &mut backends {
        eprintln!("measuring {} ...", b.label());
        columns.push(run_backend(b.as_mut(), &args, &rows)?);
    }

    println!(
        "dir {} ({}), {} x 4 KiB objects, {} x 1 MiB objects, median of {} reps after 1 warm-up, \
         io_uring depth {}",
        args.dir.display(),
        fs_type(&args.dir),
        args.objects,
        args.big_objects,
        args.reps,
        args.depth
    );
    print!("| {:<26} | {:<5} |", "row", "unit");
    for b in &backends {
        print!(" {:>14} |", b.label());
    }
    println!(" uring/sync |");
    print!("|{}|{}|", "-".repeat(28), "-".repeat(7));
    for _ in &backends {
        print!("{}:|", "-".repeat(15));
    }
    println!("-----------:|");
    for (i, row) in rows.iter().enumerate() {
        print!("| {:<26} | {:<5} |", row.name, row.unit.label());
        let rate = |c: usize| columns.get(c).and_then(|col| col.get(i)).copied();
        for c in 0..backends.len() {
            print!(" {:>14.0} |", rate(c).unwrap_or(0.0));
        }
        match (rate(0), rate(1)) {
            (Some(u), Some(s)) if s > 0.0 => println!(" {:>10.2} |", u / s),
            _ => println!(" {:>10} |", "-"),
        }
    }
    eprintln!("total {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
