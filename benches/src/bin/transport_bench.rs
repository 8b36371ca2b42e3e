//! Transport benchmark: 9P over TCP loopback, a Unix socket and a shared-memory ring
//! (`ring:PATH`), against one envoyd process, in the same run.
//!
//! envoyd runs as a separate process (`--envoyd`, default: next to this binary) listening on
//! all three transports; this program is the client side (`guest_shim::client::Client`, the
//! same client code on every transport; over the ring, `Client::from_ring` takes each reply as
//! one whole message from `envoy_ring::RingReader` and writes requests with `RingWriter`).
//! Rows:
//!
//! * `4k-read`: one outstanding 4 KiB `Tread` per client at random 4 KiB-aligned offsets of a
//!   64 MiB file; ops/s, p50 and p99 latency of each RPC;
//! * `1m-read`: 1 MiB per operation as two pipelined 512 KiB `Tread`s, sequential through the
//!   file; MB/s (10^6 B/s);
//! * `1m-write`: 1 MiB per operation as two pipelined 512 KiB `Twrite`s, overwriting each
//!   client's own 64 MiB file; MB/s.
//!
//! * `echo-4k`, `echo-512k` (transport alone, no envoyd): a child process of this program
//!   echoes frames back on each transport (a thread per connection; the ring side is
//!   `envoy_ring::file`'s backend); the client sends one frame and reads it back with the
//!   same `Read`/`Write` calls on every transport. This separates the transports' own cost
//!   from envoyd's request pipeline (the connection's thread reads, runs and answers a lone
//!   request itself; over a ring a file Tread's data is read straight into the reply's ring
//!   space).
//!
//! Each cell runs `--secs` seconds; `--reps` repetitions rotate the transport order (load from
//! other processes hits all alike) and the table shows the median repetition. msize is
//! 512 KiB + 4 KiB on every transport (a ring of order 9 holds 1 MiB per direction).
//!
//! Usage: `cargo build --release -p dom0-envoyd -p envoy-benches && target/release/transport_bench
//! [--envoyd PATH] [--dir DIR] [--secs S] [--reps R] [--clients 1,4] [--rows LIST]`.

use std::error::Error;
use std::io::{IoSlice, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use envoy_proto::{Fid, Message, Tread, Twrite};
use envoy_ring::file::{DetachGuard, RingFile};
use envoy_ring::Waiter;
use guest_shim::client::Client;
use guest_shim::endpoint::{Closer, Endpoint};

type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

const FILE_LEN: u64 = 64 << 20;
const HALF: u32 = 512 * 1024;
const MSIZE: u32 = HALF + 4096;
const ROOT: Fid = Fid(1);

#[derive(Parser, Debug)]
#[command(about = "9P over TCP loopback vs Unix socket vs shared-memory ring, one envoyd")]
struct Args {
    /// The envoyd binary (default: `envoyd` next to this program).
    #[arg(long)]
    envoyd: Option<PathBuf>,
    /// Parent of the scratch store directory.
    #[arg(long, default_value = "/work")]
    dir: PathBuf,
    /// Directory of the ring file (tmpfs, so ring pages never reach a disk).
    #[arg(long, default_value = "/dev/shm")]
    ring_dir: PathBuf,
    /// Seconds per cell.
    #[arg(long, default_value_t = 3.0)]
    secs: f64,
    /// Repetitions (median reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Client counts.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    clients: Vec<usize>,
    /// Rows: 4k-read, 1m-read, 1m-write.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "4k-read,1m-read,1m-write"
    )]
    rows: Vec<String>,
    /// Transports: tcp, unix, ring.
    #[arg(long, value_delimiter = ',', default_value = "tcp,unix,ring")]
    transports: Vec<String>,
    /// Rows of the transport-alone echo table (empty: none): echo-4k, echo-512k.
    #[arg(long, value_delimiter = ',', default_value = "echo-4k,echo-512k")]
    echo_rows: Vec<String>,
    /// Internal: run as the echo server on `TCPADDR,UNIXPATH,RINGPATH`.
    #[arg(long, hide = true)]
    echo_server: Option<String>,
}

/// envoyd child process, killed on drop.
struct Envoyd {
    child: Child,
    tcp: String,
    unix: PathBuf,
    ring: PathBuf,
}

impl Drop for Envoyd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.ring);
    }
}

fn free_port() -> BenchResult<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start_envoyd(bin: &Path, scratch: &Path, ring_dir: &Path) -> BenchResult<Envoyd> {
    let tcp = format!("127.0.0.1:{}", free_port()?);
    let unix = scratch.join("envoyd.sock");
    let ring = ring_dir.join(format!("envoy-transport-bench-{}.ring", std::process::id()));
    let _ = std::fs::remove_file(&ring);
    let log = std::fs::File::create(scratch.join("envoyd.log"))?;
    let child = Command::new(bin)
        .arg("--data")
        .arg(scratch.join("store"))
        .arg("--listen")
        .arg(format!("tcp:{tcp}"))
        .arg("--listen")
        .arg(format!("unix:{}", unix.display()))
        .arg("--listen")
        .arg(format!("ring:{}", ring.display()))
        .arg("--cache-mb")
        .arg("256")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let e = Envoyd {
        child,
        tcp,
        unix,
        ring,
    };
    let t0 = Instant::now();
    while std::net::TcpStream::connect(&e.tcp).is_err() || !e.ring.exists() {
        if t0.elapsed() > Duration::from_secs(30) {
            return Err("envoyd did not start within 30 s (see envoyd.log)".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(e)
}

/// A negotiated, attached client; for the ring also the guard that detaches it.
struct Conn {
    client: Client,
    _guard: Option<DetachGuard>,
}

fn connect(env: &Envoyd, transport: &str) -> BenchResult<Conn> {
    let (client, guard) = match transport {
        "tcp" => (
            Client::connect(&format!("tcp:{}", env.tcp).parse::<Endpoint>()?)?,
            None,
        ),
        "unix" => (
            Client::connect(&format!("unix:{}", env.unix.display()).parse::<Endpoint>()?)?,
            None,
        ),
        "ring" => {
            let f = RingFile::open(&env.ring)?;
            let (r, w, g) = f.attach(Waiter::default())?.into_parts()?;
            (Client::from_ring(r, w, Closer::Nothing), Some(g))
        }
        other => return Err(format!("unknown transport {other}").into()),
    };
    client.set_timeout(Some(Duration::from_secs(60)));
    client.handshake(MSIZE, "9P2000.L")?;
    client.attach(ROOT, Fid::NOFID, "root", "/default", 0)?;
    Ok(Conn {
        client,
        _guard: guard,
    })
}

/// Lets ring clients attach: appends `ring:* admin any` to the root credential file through
/// loopback TCP (an administrator on a fresh store). A store without credential files needs
/// nothing, so a failure to find the file is not an error.
fn grant_rings(env: &Envoyd) -> BenchResult<()> {
    let c = Client::connect(&format!("tcp:{}", env.tcp).parse::<Endpoint>()?)?;
    c.handshake(65536, "9P2000.L")?;
    if c.attach(ROOT, Fid::NOFID, "root", "/", 0).is_err() {
        return Ok(());
    }
    let f = c.alloc_fid();
    if c.walk(ROOT, f, &[".access"]).is_err() {
        return Ok(());
    }
    c.lopen(f, libc::O_RDWR as u32)?;
    let old = c.read_all(f)?;
    c.write_all(f, old.len() as u64, b"ring:* admin any\n")?;
    c.clunk(f)?;
    Ok(())
}

fn open_file(c: &Client, name: &str, create: bool) -> BenchResult<Fid> {
    let f = c.alloc_fid();
    if create {
        c.walk(ROOT, f, &[])?;
        c.lcreate(f, name, libc::O_RDWR as u32, 0o644, 0)?;
    } else {
        c.walk(ROOT, f, &[name])?;
        c.lopen(f, libc::O_RDWR as u32)?;
    }
    Ok(f)
}

fn fill(c: &Client, fid: Fid) -> BenchResult<()> {
    let chunk = Bytes::from((0..HALF).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let mut off = 0;
    while off < FILE_LEN {
        off += c.write_all_bytes(fid, off, chunk.clone())?;
    }
    Ok(())
}

/// Per-client result of one cell.
#[derive(Default)]
struct Sample {
    ops: u64,
    bytes: u64,
    lat_ns: Vec<u64>,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn run_client(conn: &Conn, row: &str, k: usize, stop: &AtomicBool) -> BenchResult<Sample> {
    let c = &conn.client;
    let name = if row == "1m-write" {
        format!("w{k}")
    } else {
        "data".to_string()
    };
    let fid = open_file(c, &name, false)?;
    let mut s = Sample::default();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (k as u64 + 1));
    let payload = Bytes::from(vec![0x5Au8; HALF as usize]);
    let mut off = ((k as u64 * 16) << 20) % FILE_LEN;
    while !stop.load(Ordering::Relaxed) {
        match row {
            "4k-read" => {
                let o = (rng.next() % (FILE_LEN / 4096)) * 4096;
                let t = Instant::now();
                let d = c.read(fid, o, 4096)?;
                s.lat_ns.push(t.elapsed().as_nanos() as u64);
                s.bytes += d.len() as u64;
            }
            "1m-read" | "1m-write" => {
                let mk = |o: u64| -> Message {
                    if row == "1m-read" {
                        Tread {
                            fid,
                            offset: o,
                            count: HALF,
                        }
                        .into()
                    } else {
                        Twrite {
                            fid,
                            offset: o,
                            data: payload.clone(),
                        }
                        .into()
                    }
                };
                let t = Instant::now();
                let a = c.send(mk(off))?;
                let b = c.send(mk(off + u64::from(HALF)))?;
                for tag in [a, b] {
                    match c.wait(tag)? {
                        Message::Rread(r) => s.bytes += r.data.len() as u64,
                        Message::Rwrite(w) => s.bytes += u64::from(w.count),
                        other => return Err(format!("unexpected reply {}", other.name()).into()),
                    }
                }
                s.lat_ns.push(t.elapsed().as_nanos() as u64);
                off = (off + 2 * u64::from(HALF)) % FILE_LEN;
            }
            other => return Err(format!("unknown row {other}").into()),
        }
        s.ops += 1;
    }
    c.clunk(fid)?;
    Ok(s)
}

/// One cell's aggregate.
#[derive(Clone, Copy, Default)]
struct Cell {
    ops_s: f64,
    mb_s: f64,
    p50_us: f64,
    p99_us: f64,
}

fn run_cell(conns: &[Conn], row: &str, secs: f64) -> BenchResult<Cell> {
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let results: Vec<BenchResult<Sample>> = std::thread::scope(|sc| {
        let hs: Vec<_> = conns
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let stop = &stop;
                sc.spawn(move || run_client(c, row, k, stop))
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("client thread panicked".into()))
            })
            .collect()
    });
    aggregate(results, t0.elapsed().as_secs_f64())
}

fn aggregate(results: Vec<BenchResult<Sample>>, el: f64) -> BenchResult<Cell> {
    let mut all = Sample::default();
    for r in results {
        let s = r?;
        all.ops += s.ops;
        all.bytes += s.bytes;
        all.lat_ns.extend(s.lat_ns);
    }
    all.lat_ns.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.lat_ns.is_empty() {
            return 0.0;
        }
        let i = ((all.lat_ns.len() - 1) as f64 * p).round() as usize;
        all.lat_ns.get(i).copied().unwrap_or(0) as f64 / 1000.0
    };
    Ok(Cell {
        ops_s: all.ops as f64 / el,
        mb_s: all.bytes as f64 / el / 1e6,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    })
}

// ---- transport-alone echo ----

/// Echoes length-prefixed frames (9P-style: u32 LE size including the 4 bytes, then a type
/// byte that is never 100) until EOF.
fn echo_stream(mut r: impl Read, mut w: impl Write) {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let mut head = [0u8; 4];
        if r.read_exact(&mut head).is_err() {
            return;
        }
        let n = u32::from_le_bytes(head) as usize;
        let Some(body) = buf.get_mut(..n.saturating_sub(4)) else {
            return;
        };
        if r.read_exact(body).is_err() {
            return;
        }
        let out = [IoSlice::new(&head), IoSlice::new(body)];
        if write_all_vectored(&mut w, &out).is_err() {
            return;
        }
    }
}

fn write_all_vectored(w: &mut impl Write, parts: &[IoSlice<'_>]) -> std::io::Result<()> {
    let mut bufs: Vec<IoSlice<'_>> = parts.to_vec();
    let mut slices: &mut [IoSlice<'_>] = &mut bufs;
    while slices.iter().any(|s| !s.is_empty()) {
        let n = w.write_vectored(slices)?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

fn echo_server(spec: &str) -> BenchResult<()> {
    let mut it = spec.split(',');
    let (tcp, unix, ring) = match (it.next(), it.next(), it.next()) {
        (Some(a), Some(b), Some(c)) => (a, PathBuf::from(b), PathBuf::from(c)),
        _ => return Err("--echo-server TCPADDR,UNIXPATH,RINGPATH".into()),
    };
    let tl = std::net::TcpListener::bind(tcp)?;
    std::thread::spawn(move || {
        for s in tl.incoming().flatten() {
            let _ = s.set_nodelay(true);
            if let Ok(w) = s.try_clone() {
                std::thread::spawn(move || echo_stream(s, w));
            }
        }
    });
    let ul = std::os::unix::net::UnixListener::bind(&unix)?;
    std::thread::spawn(move || {
        for s in ul.incoming().flatten() {
            if let Ok(w) = s.try_clone() {
                std::thread::spawn(move || echo_stream(s, w));
            }
        }
    });
    let f = RingFile::create(&ring, 4, envoy_ring::RingOrder::new(9)?)?;
    let stop = AtomicBool::new(false);
    loop {
        if let Some(i) = f.wait_attach(&stop, Duration::from_secs(1))? {
            let b = f.serve(i, Waiter::default())?;
            let closer = b.closer;
            let (r, w) = (b.reader, b.writer);
            std::thread::spawn(move || {
                echo_stream(r, w);
                closer.close();
            });
        }
    }
}

struct Echo {
    child: Child,
    tcp: String,
    unix: PathBuf,
    ring: PathBuf,
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.ring);
        let _ = std::fs::remove_file(&self.unix);
    }
}

fn start_echo(scratch: &Path, ring_dir: &Path) -> BenchResult<Echo> {
    let tcp = format!("127.0.0.1:{}", free_port()?);
    let unix = scratch.join("echo.sock");
    let ring = ring_dir.join(format!("envoy-transport-echo-{}.ring", std::process::id()));
    let child = Command::new(std::env::current_exe()?)
        .arg("--echo-server")
        .arg(format!("{tcp},{},{}", unix.display(), ring.display()))
        .stdout(Stdio::null())
        .spawn()?;
    let e = Echo {
        child,
        tcp,
        unix,
        ring,
    };
    let t0 = Instant::now();
    while std::net::TcpStream::connect(&e.tcp).is_err() || !e.ring.exists() || !e.unix.exists() {
        if t0.elapsed() > Duration::from_secs(30) {
            return Err("echo server did not start".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(e)
}

type Stream = (
    Box<dyn Read + Send>,
    Box<dyn Write + Send>,
    Option<DetachGuard>,
);

fn echo_connect(e: &Echo, t: &str) -> BenchResult<Stream> {
    Ok(match t {
        "tcp" => {
            let s = std::net::TcpStream::connect(&e.tcp)?;
            s.set_nodelay(true)?;
            (Box::new(s.try_clone()?), Box::new(s), None)
        }
        "unix" => {
            let s = std::os::unix::net::UnixStream::connect(&e.unix)?;
            (Box::new(s.try_clone()?), Box::new(s), None)
        }
        "ring" => {
            let f = RingFile::open(&e.ring)?;
            let (r, w, g) = f.attach(Waiter::default())?.into_parts()?;
            (Box::new(r), Box::new(w), Some(g))
        }
        other => return Err(format!("unknown transport {other}").into()),
    })
}

fn echo_cell(streams: &mut [Stream], size: usize, secs: f64) -> BenchResult<Cell> {
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let results: Vec<BenchResult<Sample>> = std::thread::scope(|sc| {
        let hs: Vec<_> = streams
            .iter_mut()
            .map(|(r, w, _)| {
                let stop = &stop;
                sc.spawn(move || -> BenchResult<Sample> {
                    let mut msg = vec![0x5Au8; size];
                    msg[..4].copy_from_slice(&(size as u32).to_le_bytes());
                    msg[4] = 117; // Tread's type byte: anything but Tversion
                    let mut back = vec![0u8; size];
                    let mut s = Sample::default();
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        w.write_all(&msg)?;
                        r.read_exact(&mut back)?;
                        s.lat_ns.push(t.elapsed().as_nanos() as u64);
                        s.ops += 1;
                        s.bytes += size as u64;
                    }
                    Ok(s)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("client thread panicked".into()))
            })
            .collect()
    });
    aggregate(results, t0.elapsed().as_secs_f64())
}

fn median(mut v: Vec<Cell>, key: impl Fn(&Cell) -> f64) -> Cell {
    v.sort_by(|a, b| key(a).total_cmp(&key(b)));
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn main() -> BenchResult<()> {
    let args = Args::parse();
    if let Some(spec) = &args.echo_server {
        return echo_server(spec);
    }
    let bin = match &args.envoyd {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .ok_or("no parent directory of this program")?
            .join("envoyd"),
    };
    let scratch = tempfile::Builder::new()
        .prefix("transport-bench")
        .tempdir_in(&args.dir)?;
    let env = start_envoyd(&bin, scratch.path(), &args.ring_dir)?;
    grant_rings(&env)?;
    // Data: one shared 64 MiB file for the reads, one per client for the writes.
    {
        let setup = connect(&env, "tcp")?;
        let c = &setup.client;
        let f = open_file(c, "data", true)?;
        fill(c, f)?;
        c.clunk(f)?;
        let maxc = args.clients.iter().copied().max().unwrap_or(1);
        for k in 0..maxc {
            let f = open_file(c, &format!("w{k}"), true)?;
            fill(c, f)?;
            c.clunk(f)?;
        }
    }
    println!(
        "# transport_bench: envoyd pid {}, {} s per cell, {} reps, msize {}",
        env.child.id(),
        args.secs,
        args.reps,
        MSIZE
    );
    println!("| row | clients | transport | ops/s | MB/s | p50 µs | p99 µs |");
    println!("|---|---|---|---|---|---|---|");
    for row in &args.rows {
        for &n in &args.clients {
            let mut cells: Vec<Vec<Cell>> = vec![Vec::new(); args.transports.len()];
            for rep in 0..=args.reps {
                for j in 0..args.transports.len() {
                    let ti = (j + rep) % args.transports.len();
                    let t = &args.transports[ti];
                    let conns = (0..n)
                        .map(|_| connect(&env, t))
                        .collect::<BenchResult<Vec<_>>>()?;
                    // Repetition 0 is the warm-up.
                    let secs = if rep == 0 {
                        args.secs.min(1.0)
                    } else {
                        args.secs
                    };
                    let cell = run_cell(&conns, row, secs)?;
                    if rep > 0 {
                        cells[ti].push(cell);
                    }
                    drop(conns);
                    // Let the ring's server side notice the detach and recycle the ring.
                    if t == "ring" {
                        std::thread::sleep(Duration::from_millis(150));
                    }
                }
            }
            print_cells(row, n, &args.transports, &cells);
        }
    }
    if !args.echo_rows.is_empty() {
        run_echo_table(&args, scratch.path())?;
    }
    Ok(())
}

fn run_echo_table(args: &Args, scratch: &Path) -> BenchResult<()> {
    let e = start_echo(scratch, &args.ring_dir)?;
    println!();
    println!("Transport alone (echo server process, no envoyd):");
    println!();
    println!("| row | clients | transport | ops/s | MB/s | p50 µs | p99 µs |");
    println!("|---|---|---|---|---|---|---|");
    for row in &args.echo_rows {
        let size = match row.as_str() {
            "echo-4k" => 4096,
            "echo-512k" => 512 * 1024,
            other => return Err(format!("unknown echo row {other}").into()),
        };
        for &n in &args.clients {
            let mut cells: Vec<Vec<Cell>> = vec![Vec::new(); args.transports.len()];
            for rep in 0..=args.reps {
                for j in 0..args.transports.len() {
                    let ti = (j + rep) % args.transports.len();
                    let mut streams = (0..n)
                        .map(|_| echo_connect(&e, &args.transports[ti]))
                        .collect::<BenchResult<Vec<_>>>()?;
                    let secs = if rep == 0 {
                        args.secs.min(1.0)
                    } else {
                        args.secs
                    };
                    let cell = echo_cell(&mut streams, size, secs)?;
                    if rep > 0 {
                        cells[ti].push(cell);
                    }
                    drop(streams);
                    if args.transports[ti] == "ring" {
                        std::thread::sleep(Duration::from_millis(150));
                    }
                }
            }
            print_cells(row, n, &args.transports, &cells);
        }
    }
    Ok(())
}

fn print_cells(row: &str, n: usize, transports: &[String], cells: &[Vec<Cell>]) {
    let mut out = Vec::new();
    for (ti, t) in transports.iter().enumerate() {
        let c = median(cells[ti].clone(), |c| c.ops_s);
        println!(
            "| {row} | {n} | {t} | {:.0} | {:.1} | {:.1} | {:.1} |",
            c.ops_s, c.mb_s, c.p50_us, c.p99_us
        );
        out.push(c);
    }
    if let (Some(tcp), Some(ring)) = (
        transports.iter().position(|t| t == "tcp"),
        transports.iter().position(|t| t == "ring"),
    ) {
        let (a, b) = (out[tcp], out[ring]);
        println!(
            "|  | {n} | ring/tcp | {:.2}x | {:.2}x | {:.2}x | {:.2}x |",
            b.ops_s / a.ops_s.max(1e-9),
            b.mb_s / a.mb_s.max(1e-9),
            b.p50_us / a.p50_us.max(1e-9),
            b.p99_us / a.p99_us.max(1e-9)
        );
    }
}
