//! Server-side latency of image forks and snapshots (§6.4.1–6.4.2), inactive and active
//! images, against the dissertation's instrumented server: 339 µs per fork, 1258 µs per
//! snapshot (means over fifty iterations). Target: at least 5× faster.
//!
//! The image manager runs in-process on a store in `--data` (default: a temporary directory
//! under the current directory, so on the same disk as a real store). A template image of
//! `--dirs` × `--files` small files is built first. Then, `--iters` times each:
//!
//! * `snapshot (inactive)`: snapshot the template while nothing writes to it;
//! * `fork of a snapshot`: fork `template@1` into a new image (a journal line and a frozen
//!   link to the snapshot's root: nothing is copied);
//! * `first write into a fork`: the first 4 KiB write to `d0/f0` of each of those forks, which
//!   thaws the path: copies the root, `d0` and `f0`. A snapshot or fork moves its copying
//!   here, onto the writer's path (as §5.4.3 does); no peer figure;
//! * `fork of a new snapshot`: fork a snapshot just taken;
//! * `snapshot (active)`: snapshot an image while a writer thread rewrites its files (so every
//!   snapshot waits for in-flight writes and the writer thaws paths after each one);
//! * `fork of a live image`: snapshot + fork in one operation, while the writer runs; its
//!   peer is the paper's snapshot plus its fork (1258 + 339 µs), since the dissertation
//!   describes forking an active image as exactly those two operations;
//! * `writer's writes, active rows`: the latency of the writer's own writes meanwhile (each
//!   first write after a snapshot thaws its path).
//!
//! Like the dissertation's, the timed operation is complete in the storage layer's memory (the
//! host page cache), not flushed to disk; the `durable` row adds the background fsync
//! ([`Images::flush`]) to show what an operator waiting for the disk would see. Between timed
//! iterations the bench waits (untimed) for that background sync, as sequential operator
//! actions would; the `back to back` rows don't, so there the syncer's fsyncs of the same
//! directories compete with the next operation.
//!
//! ```text
//! cargo run --release -p envoy-benches --bin image_bench -- --iters 200
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use dom0_envoyd::images::Images;
use dom0_envoyd::namespace::{Cred, Fs};
use envoy_storage::{EngineChoice, ObjectKind, ObjectStore, StoreOptions};

/// The dissertation's mean fork latency (µs).
const PAPER_FORK_US: f64 = 339.0;
/// The dissertation's mean snapshot latency (µs).
const PAPER_SNAPSHOT_US: f64 = 1258.0;

#[derive(Parser, Debug)]
#[command(about = "fork and snapshot latency vs the dissertation's Envoy")]
struct Args {
    /// Iterations per row.
    #[arg(long, default_value_t = 200)]
    iters: usize,
    /// Directories in the template.
    #[arg(long, default_value_t = 20)]
    dirs: usize,
    /// Files per directory.
    #[arg(long, default_value_t = 50)]
    files: usize,
    /// Store directory (default: a temporary directory under the current one).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Profiling aid: only run this many forks of a snapshot (each followed by the untimed
    /// wait for the background sync, like the main fork row), report, and exit.
    #[arg(long)]
    only_forks: Option<usize>,
    /// Profiling aid: only run this many snapshots of the inactive template (each followed by
    /// the untimed wait for the background sync), report, and exit.
    #[arg(long)]
    only_snapshots: Option<usize>,
    /// Profiling aid: only fork the template this many times and time the first write into
    /// each fork (which copies the root, `d0` and `d0/f0`), report, and exit.
    #[arg(long)]
    only_first_writes: Option<usize>,
    /// Turn off the object store's spare files (every creation creates a file), to measure
    /// what they save.
    #[arg(long)]
    no_spares: bool,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e6
}

/// CPU time of the calling thread (user + system): the work an operation did on the
/// operator's thread, without the time it waited for a CPU on a busy machine, for a lock, or
/// for the disk.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// Wall-clock and thread-CPU times of timed operations.
struct Times {
    wall: Vec<Duration>,
    cpu: Vec<Duration>,
}

impl Times {
    fn with_capacity(n: usize) -> Times {
        Times {
            wall: Vec::with_capacity(n),
            cpu: Vec::with_capacity(n),
        }
    }

    /// Runs `op` once, timed.
    fn time<T>(&mut self, op: impl FnOnce() -> T) -> T {
        let (start, cpu_start) = (Instant::now(), thread_cpu());
        let r = op();
        self.cpu.push(thread_cpu().saturating_sub(cpu_start));
        self.wall.push(start.elapsed());
        r
    }
}

fn mean_us(t: &[Duration]) -> f64 {
    t.iter().map(|d| d.as_secs_f64()).sum::<f64>() / t.len().max(1) as f64 * 1e6
}

fn report(name: &str, t: Times, paper: f64) {
    report_with(name, t, Some(paper));
}

/// [`report`] of an operation the dissertation gives no figure for.
fn report_no_peer(name: &str, t: Times) {
    report_with(name, t, None);
}

fn report_with(name: &str, t: Times, paper: Option<f64>) {
    let (mut w, mut c) = (t.wall, t.cpu);
    w.sort();
    c.sort();
    let mean = mean_us(&w);
    let peer = match paper {
        Some(p) => format!("{p:>8.0} {:>8.1}x", p / mean),
        None => format!("{:>8} {:>9}", "-", "-"),
    };
    println!(
        "{name:<34} {:>6} {mean:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>8.1} {:>8.1} {peer}",
        w.len(),
        percentile(&w, 0.5),
        percentile(&w, 0.99),
        percentile(&w, 1.0),
        mean_us(&c),
        percentile(&c, 0.5),
    );
}

fn build_template(fs: &Arc<Fs>, images: &Images, dirs: usize, files: usize) {
    images.create("/templates/base").unwrap();
    let root = fs.root();
    let cred = Cred::user(0);
    let t = fs.lookup(root.node(), b"templates", cred).unwrap();
    let base = fs.lookup(t.node(), b"base", cred).unwrap();
    let data = Bytes::from(vec![0x42u8; 4096]);
    for d in 0..dirs {
        let dir = fs
            .create(
                &base,
                format!("d{d}").as_bytes(),
                ObjectKind::Directory,
                0o755,
                cred,
                None,
            )
            .unwrap();
        for f in 0..files {
            let file = fs
                .create(
                    &dir,
                    format!("f{f}").as_bytes(),
                    ObjectKind::Regular,
                    0o644,
                    cred,
                    None,
                )
                .unwrap();
            fs.write(file.node(), 0, data.clone()).unwrap();
        }
    }
}

/// A claim on absolute path `path`.
fn lookup_path(fs: &Arc<Fs>, path: &str) -> dom0_envoyd::namespace::Claim {
    let cred = Cred::user(0);
    let mut cur = fs.root();
    for c in path.split('/').filter(|c| !c.is_empty()) {
        cur = fs.lookup(cur.node(), c.as_bytes(), cred).unwrap();
    }
    cur
}

/// Rewrites files of `image` until `stop`, timing each write: thaws whatever the last
/// snapshot froze.
fn writer(fs: Arc<Fs>, image: &str, dirs: usize, files: usize, stop: Arc<AtomicBool>) -> Times {
    let cred = Cred::user(0);
    let cur = lookup_path(&fs, image);
    let mut t = Times::with_capacity(4096);
    let data = Bytes::from(vec![0x17u8; 4096]);
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let d = fs
            .lookup(cur.node(), format!("d{}", i % dirs).as_bytes(), cred)
            .unwrap();
        let f = fs
            .lookup(
                d.node(),
                format!("f{}", (i / dirs) % files).as_bytes(),
                cred,
            )
            .unwrap();
        t.time(|| fs.write(f.node(), 0, data.clone()).unwrap());
        i += 1;
    }
    t
}

fn main() {
    let args = Args::parse();
    let tmp;
    let data = match &args.data {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir_in(".").unwrap();
            tmp.path().to_path_buf()
        }
    };
    let store = ObjectStore::open_or_create(
        &data,
        StoreOptions {
            engine: EngineChoice::Uring,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let fs = Fs::open(Arc::new(store), 256 << 20).unwrap();
    let images = Images::open(Arc::clone(&fs)).unwrap();
    if args.no_spares {
        fs.store().stop_spare_files();
    }
    build_template(&fs, &images, args.dirs, args.files);
    images.create("/templates/live").unwrap();
    {
        // The live image gets the same tree, by forking the template.
        images.snapshot("/templates/base").unwrap();
    }
    images.delete_image("/templates/live", &|_| {}).unwrap();
    images.fork("/templates/base@1", "/templates/live").unwrap();
    images.flush();
    println!(
        "template: {} directories x {} files of 4 KiB; store {}; {} iterations per row",
        args.dirs,
        args.files,
        data.display(),
        args.iters
    );
    println!(
        "{:<34} {:>6} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9}",
        "operation (server-side, µs)",
        "n",
        "mean",
        "p50",
        "p99",
        "max",
        "cpu mean",
        "cpu p50",
        "paper",
        "speedup"
    );

    if let Some(n) = args.only_forks {
        let mut t = Times::with_capacity(n);
        for i in 0..n {
            let dest = format!("/guests/g{i}");
            t.time(|| images.fork("/templates/base@1", &dest).unwrap());
            images.flush();
        }
        report("fork of a snapshot", t, PAPER_FORK_US);
        return;
    }
    if let Some(n) = args.only_first_writes {
        for i in 0..n {
            images
                .fork("/templates/base@1", &format!("/guests/g{i}"))
                .unwrap();
        }
        images.flush();
        let mut t = Times::with_capacity(n);
        let data = Bytes::from(vec![0x33u8; 4096]);
        for i in 0..n {
            let f = lookup_path(&fs, &format!("/guests/g{i}/d0/f0"));
            t.time(|| fs.write(f.node(), 0, data.clone()).unwrap());
        }
        report_no_peer("first write into a fork", t);
        return;
    }
    if let Some(n) = args.only_snapshots {
        let mut t = Times::with_capacity(n);
        for _ in 0..n {
            t.time(|| images.snapshot("/templates/base").unwrap());
            images.flush();
        }
        report("snapshot (inactive image)", t, PAPER_SNAPSHOT_US);
        return;
    }

    // Inactive snapshots.
    let mut t = Times::with_capacity(args.iters);
    for _ in 0..args.iters {
        t.time(|| images.snapshot("/templates/base").unwrap());
        // Untimed: let the background sync finish, so it does not compete with the next one.
        images.flush();
    }
    report("snapshot (inactive image)", t, PAPER_SNAPSHOT_US);
    let mut t = Times::with_capacity(args.iters);
    for _ in 0..args.iters {
        t.time(|| images.snapshot("/templates/base").unwrap());
    }
    report("snapshot (inactive), back to back", t, PAPER_SNAPSHOT_US);
    images.flush();

    // Forks of a snapshot.
    let mut t = Times::with_capacity(args.iters);
    for i in 0..args.iters {
        let dest = format!("/guests/g{i}");
        t.time(|| images.fork("/templates/base@1", &dest).unwrap());
        images.flush();
    }
    report("fork of a snapshot", t, PAPER_FORK_US);
    let mut t = Times::with_capacity(args.iters);
    let data = Bytes::from(vec![0x33u8; 4096]);
    for i in 0..args.iters {
        let f = lookup_path(&fs, &format!("/guests/g{i}/d0/f0"));
        t.time(|| fs.write(f.node(), 0, data.clone()).unwrap());
    }
    report_no_peer("first write into a fork", t);
    images.flush();
    let mut t = Times::with_capacity(args.iters);
    for i in 0..args.iters {
        let dest = format!("/guests/b2b{i}");
        t.time(|| images.fork("/templates/base@1", &dest).unwrap());
    }
    report("fork of a snapshot, back to back", t, PAPER_FORK_US);
    images.flush();

    // Durable variants: the operation plus the background fsyncs it queued.
    let mut t = Times::with_capacity(args.iters / 4 + 1);
    for i in 0..(args.iters / 4).max(1) {
        let dest = format!("/durable/g{i}");
        t.time(|| {
            images.fork("/templates/base@1", &dest).unwrap();
            images.flush();
        });
    }
    report("fork of a snapshot, durable", t, PAPER_FORK_US);

    // A fork of a snapshot just taken.
    let mut t = Times::with_capacity(args.iters);
    for i in 0..args.iters {
        let snap = images.snapshot("/templates/base").unwrap();
        images.flush();
        let dest = format!("/first/g{i}");
        t.time(|| images.fork(&snap.path, &dest).unwrap());
        images.flush();
    }
    report("fork of a new snapshot", t, PAPER_FORK_US);

    // Active image: a writer rewrites files all the time.
    let stop = Arc::new(AtomicBool::new(false));
    let w = {
        let (fs, stop) = (Arc::clone(&fs), Arc::clone(&stop));
        let (dirs, files) = (args.dirs, args.files);
        std::thread::spawn(move || writer(fs, "/templates/live", dirs, files, stop))
    };
    std::thread::sleep(Duration::from_millis(100));
    let mut t = Times::with_capacity(args.iters);
    for _ in 0..args.iters {
        t.time(|| images.snapshot("/templates/live").unwrap());
        images.flush();
        std::thread::sleep(Duration::from_millis(2));
    }
    report("snapshot (active image)", t, PAPER_SNAPSHOT_US);
    let mut t = Times::with_capacity(args.iters);
    for i in 0..args.iters {
        let dest = format!("/live-forks/g{i}");
        t.time(|| images.fork("/templates/live", &dest).unwrap());
        images.flush();
        std::thread::sleep(Duration::from_millis(2));
    }
    report(
        "fork of a live image (snap+fork)",
        t,
        PAPER_SNAPSHOT_US + PAPER_FORK_US,
    );
    stop.store(true, Ordering::Relaxed);
    let writes = w.join().unwrap();
    images.flush();
    let n = writes.wall.len();
    report_no_peer("writer's writes, active rows", writes);
    println!(
        "writer: {n} file writes of 4 KiB during the active rows (each snapshot re-freezes the image)"
    );
    let u = fs.store().usage().unwrap();
    println!(
        "store after the run: {} objects, {} bytes",
        u.objects, u.bytes
    );
}
