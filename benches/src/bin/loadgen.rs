//! 9P load generator: drives any 9P2000.L server with N connections × M outstanding
//! operations and compares servers measured in the same run — by default `envoyd` and
//! Debian's `diod`, both started here on scratch directories of the same disk, both given
//! the same tree through 9P.
//!
//! Mixes (see `loadgen/mixes.rs` for the requests of each):
//!
//! | mix       | one operation                                         | reported        |
//! |-----------|-------------------------------------------------------|-----------------|
//! | getattr   | `Tgetattr` of a hot file (fid walked once)            | ops/s           |
//! | smallfile | walk + lopen + read + clunk of a random 4 KiB file    | ops/s, MB/s     |
//! | rand4k    | 4 KiB read at a random offset of the big file         | ops/s, MB/s     |
//! | seqread   | 1 MiB sequential read (pieces of ≤ msize)             | MB/s            |
//! | seqwrite  | 1 MiB sequential write                                | MB/s            |
//! | create    | walk + lcreate + 4 KiB write + clunk + unlinkat       | ops/s           |
//! | readdir   | walk + lopen + readdir to the end + clunk, 10k entries| listings/s, entries/s |
//!
//! Each cell runs `--warmup` seconds unmeasured, then `--secs` measured; `--reps`
//! repetitions alternate which server goes first, and the table shows each server's median
//! repetition. Latency is per operation (first request sent to last reply), p50/p99/p99.9.
//!
//! `--memory` instead opens `--mem-conns` connections holding `--mem-fids` open fids in
//! total and reports each server's `VmRSS`/`VmHWM` before and after.
//!
//! Usage: `loadgen [--servers envoyd,diod] [--external NAME=ENDPOINT@ANAME[@PID]]
//! [--transports tcp,unix] [--mixes LIST|all] [--conns 1,4] [--depth 16] [--secs 5]
//! [--reps 1] [--msize N] [--memory]`. Run as root (diod squashes users to nobody and
//! needs to switch to it).

#[path = "../loadgen/hist.rs"]
mod hist;
#[path = "../loadgen/mixes.rs"]
mod mixes;
#[path = "../loadgen/servers.rs"]
mod servers;

use std::error::Error;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use envoy_proto::{lopen, Fid};

use hist::RunStats;
use mixes::{Tree, MIXES, TOP};
use servers::Server;

/// Errors of the bench: it reports and stops, nothing is retried.
pub type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

#[derive(Parser, Debug)]
#[command(about = "9P load generator: envoyd vs diod (or any 9P2000.L server), same run")]
struct Args {
    /// Servers to start: envoyd, diod, or NAME=PATH for another envoyd binary under its own
    /// name (comma-separated; empty with --external only). The first is compared to the
    /// others.
    #[arg(long, default_value = "envoyd,diod", value_delimiter = ',')]
    servers: Vec<String>,
    /// A running server: NAME=ENDPOINT@ANAME[@PID] (repeatable). Its tree is built through
    /// 9P under `lg/` unless `lg/ready` exists.
    #[arg(long)]
    external: Vec<String>,
    /// Transports: tcp, unix, ring (a server without the transport is skipped for it; ring:
    /// envoyd's `--listen ring:PATH`, a file of 16 rings in /dev/shm).
    #[arg(long, default_value = "tcp", value_delimiter = ',')]
    transports: Vec<String>,
    /// Mixes (comma-separated) or `all`.
    #[arg(long, default_value = "all", value_delimiter = ',')]
    mixes: Vec<String>,
    /// Connection counts to run each mix with.
    #[arg(long, default_value = "1,4", value_delimiter = ',')]
    conns: Vec<usize>,
    /// Outstanding operations per connection.
    #[arg(long, default_value_t = 16)]
    depth: usize,
    /// Measured seconds per cell.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Unmeasured seconds before each cell.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Repetitions per cell (servers alternate going first; medians reported).
    #[arg(long, default_value_t = 1)]
    reps: usize,
    /// msize offered (each server may lower it; Debian's diod answers at most 65536, so
    /// the default keeps both servers on the same frame size).
    #[arg(long, default_value_t = 65536)]
    msize: u32,
    /// Scratch parent directory for the servers' stores (same disk for both).
    #[arg(long, default_value = "/var/tmp")]
    scratch: PathBuf,
    /// envoyd binary (default: `envoyd` next to this program).
    #[arg(long)]
    envoyd: Option<PathBuf>,
    /// Extra envoyd argument (repeatable, e.g. --envoyd-arg=--workers=4).
    #[arg(long, allow_hyphen_values = true)]
    envoyd_arg: Vec<String>,
    /// diod binary.
    #[arg(long, default_value = "/usr/sbin/diod")]
    diod: PathBuf,
    /// Extra diod argument (repeatable).
    #[arg(long, allow_hyphen_values = true)]
    diod_arg: Vec<String>,
    /// Files in lg/small.
    #[arg(long, default_value_t = 1000)]
    small_files: usize,
    /// Size of lg/big.dat in MiB.
    #[arg(long, default_value_t = 128)]
    big_mb: u64,
    /// Entries of lg/dir10k.
    #[arg(long, default_value_t = 10_000)]
    dir_entries: usize,
    /// MiB each sequential-write slot cycles through.
    #[arg(long, default_value_t = 16)]
    write_span_mb: u64,
    /// Memory mode: connections and open fids instead of the mixes.
    #[arg(long)]
    memory: bool,
    /// Connections of the memory mode.
    #[arg(long, default_value_t = 1000)]
    mem_conns: usize,
    /// Open fids (walked and opened small files) of the memory mode, spread over the
    /// connections.
    #[arg(long, default_value_t = 10_000)]
    mem_fids: usize,
    /// diodload mode: run Debian's `diodload` against every server's `ctl` tree (TCP), once
    /// per `--conns` value as its thread count, in both its modes (getattr `-g`, and
    /// msize-sized reads of `zero` + writes to `null`), for `--secs` seconds each.
    #[arg(long)]
    diodload: bool,
    /// diodload binary.
    #[arg(long, default_value = "/usr/sbin/diodload")]
    diodload_bin: PathBuf,
}

/// Lets this process and the servers it starts hold many descriptors (the memory mode
/// opens a thousand connections; diod keeps a descriptor per open fid).
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the valid, exclusively borrowed `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 && lim.rlim_cur < lim.rlim_max
    {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit only reads the valid `lim`.
        let _ = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    }
}

fn start_servers(args: &Args) -> BenchResult<Vec<Server>> {
    let mut out = Vec::new();
    let want_ring = args.transports.iter().any(|t| t == "ring");
    for s in args.servers.iter().filter(|s| !s.is_empty()) {
        match s.as_str() {
            "envoyd" => {
                let bin = match &args.envoyd {
                    Some(p) => p.clone(),
                    None => std::env::current_exe()?
                        .parent()
                        .ok_or("no directory for this program")?
                        .join("envoyd"),
                };
                out.push(servers::start_envoyd(
                    &bin,
                    &args.scratch,
                    &args.envoyd_arg,
                    want_ring,
                )?);
            }
            "diod" => out.push(servers::start_diod(
                &args.diod,
                &args.scratch,
                &args.diod_arg,
            )?),
            // NAME=PATH: another envoyd build under its own name (before/after comparisons).
            other => match other.split_once('=') {
                Some((name, path)) => {
                    let mut srv = servers::start_envoyd(
                        std::path::Path::new(path),
                        &args.scratch,
                        &args.envoyd_arg,
                        want_ring,
                    )?;
                    srv.name = name.to_string();
                    out.push(srv);
                }
                None => {
                    return Err(format!(
                        "unknown server {other:?}: envoyd, diod or NAME=ENVOYD_PATH"
                    )
                    .into())
                }
            },
        }
    }
    for e in &args.external {
        out.push(servers::external(e)?);
    }
    if out.is_empty() {
        return Err("no server: give --servers and/or --external".into());
    }
    Ok(out)
}

fn describe(s: &Server) -> String {
    let mut eps: Vec<String> = [&s.tcp, &s.unix]
        .into_iter()
        .flatten()
        .map(|e| e.to_string())
        .collect();
    if let Some(r) = &s.ring {
        eps.push(format!("ring:{}", r.display()));
    }
    format!(
        "{} pid {} at {} aname {}",
        s.name,
        s.pid.map_or("?".into(), |p| p.to_string()),
        eps.join(" "),
        s.aname
    )
}

fn median_rep(mut reps: Vec<RunStats>) -> Option<RunStats> {
    reps.sort_by_key(|r| r.ops);
    let mid = reps.len() / 2;
    reps.into_iter().nth(mid)
}

fn headline(mix: &str, s: &RunStats) -> f64 {
    match mix {
        "seqread" | "seqwrite" => s.mb_per_s(),
        _ => s.ops_per_s(),
    }
}

fn run_table(args: &Args, servers: &[Server], tree: Tree) -> BenchResult<()> {
    let mixes: Vec<String> = if args.mixes.iter().any(|m| m == "all") {
        MIXES.iter().map(|s| s.to_string()).collect()
    } else {
        args.mixes.clone()
    };
    let payload = mixes::pattern(1 << 20);
    let (warmup, secs) = (
        Duration::from_secs_f64(args.warmup),
        Duration::from_secs_f64(args.secs),
    );
    println!(
        "{:<6} {:<10} {:>5} {:>5} {:<8} {:>11} {:>9} {:>9} {:>9} {:>9}  notes",
        "trans", "mix", "conns", "depth", "server", "ops/s", "MB/s", "p50 us", "p99 us", "p999 us"
    );
    for transport in &args.transports {
        for mix in &mixes {
            for &conns in &args.conns {
                let present: Vec<&Server> = servers
                    .iter()
                    .filter(|s| s.endpoint(transport).is_some())
                    .collect();
                let mut reps: Vec<Vec<RunStats>> = vec![Vec::new(); present.len()];
                for rep in 0..args.reps.max(1) {
                    let n = present.len();
                    for k in 0..n {
                        let i = (k + rep) % n;
                        let s = present[i];
                        let ep = s.endpoint(transport).ok_or("no endpoint")?;
                        let st = mixes::run_mix(
                            &ep, &s.aname, args.msize, mix, conns, args.depth, tree, &payload,
                            warmup, secs,
                        )
                        .map_err(|e| format!("{} over {transport}: {e}", s.name))?;
                        reps[i].push(st);
                    }
                }
                let mut heads = Vec::new();
                for (s, r) in present.iter().zip(reps) {
                    let Some(mut st) = median_rep(r) else {
                        continue;
                    };
                    let [p50, p99, p999] = st.percentiles_us();
                    let mut notes = if mix == "readdir" {
                        format!("{:.0} entries/s", st.items_per_s())
                    } else {
                        String::new()
                    };
                    if let Some(n) = st.note {
                        notes.push_str(n);
                    }
                    println!(
                        "{:<6} {:<10} {:>5} {:>5} {:<8} {:>11.0} {:>9.1} {:>9.0} {:>9.0} {:>9.0}  {}",
                        transport,
                        mix,
                        conns,
                        args.depth,
                        s.name,
                        st.ops_per_s(),
                        st.mb_per_s(),
                        p50,
                        p99,
                        p999,
                        notes
                    );
                    heads.push((s.name.clone(), headline(mix, &st)));
                }
                if let Some((first, v0)) = heads.first() {
                    for (other, v) in heads.iter().skip(1) {
                        let unit = if matches!(mix.as_str(), "seqread" | "seqwrite") {
                            "MB/s"
                        } else {
                            "ops/s"
                        };
                        let ratio = if *v > 0.0 { v0 / v } else { f64::INFINITY };
                        println!(
                            "{:<6} {:<10} {:>5} {:>5} ratio {first}/{other} ({unit}): {ratio:.2}x",
                            transport, mix, conns, args.depth
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

fn memory_mode(args: &Args, servers: &[Server]) -> BenchResult<()> {
    let per_conn = args.mem_fids.div_ceil(args.mem_conns.max(1));
    println!(
        "memory: {} connections, {} open fids ({} per connection: walk+lopen of lg/small files)",
        args.mem_conns, args.mem_fids, per_conn
    );
    println!(
        "{:<8} {:>12} {:>12} {:>12} {:>12} {:>8} {:>8}",
        "server", "RSS0 KiB", "RSS KiB", "HWM KiB", "KiB/conn", "threads", "secs"
    );
    for s in servers {
        let ep = s
            .endpoint("tcp")
            .or_else(|| s.endpoint("unix"))
            .ok_or("no endpoint")?;
        let (rss0, _) = s.memory_kib().unwrap_or((0, 0));
        let t0 = Instant::now();
        let mut clients = Vec::with_capacity(args.mem_conns);
        let mut opened = 0usize;
        for _ in 0..args.mem_conns {
            let session = mixes::connect(&ep, 65536, &s.aname)?;
            let c = &session.client;
            for k in 0..per_conn {
                if opened >= args.mem_fids {
                    break;
                }
                let fid = Fid(100 + k as u32);
                let name = format!("f{:04}", opened % args.small_files.max(1));
                c.walk(mixes::ROOT_FID, fid, &[TOP, "small", &name])?;
                c.lopen(fid, lopen::RDONLY)?;
                opened += 1;
            }
            clients.push(session);
        }
        let secs = t0.elapsed().as_secs_f64();
        let (rss, hwm) = s.memory_kib().unwrap_or((0, 0));
        let per = (rss.saturating_sub(rss0)) as f64 / args.mem_conns.max(1) as f64;
        println!(
            "{:<8} {:>12} {:>12} {:>12} {:>12.1} {:>8} {:>8.1}",
            s.name,
            rss0,
            rss,
            hwm,
            per,
            s.threads().map_or("?".into(), |t| t.to_string()),
            secs
        );
        drop(clients);
    }
    Ok(())
}

/// One diodload run: (ops/s, read MB/s, write MB/s) from its last line,
/// `diodload: N ops/s, R rMB/s, W wMB/s`.
fn diodload_once(
    bin: &std::path::Path,
    addr: &str,
    threads: usize,
    secs: u64,
    getattr: bool,
) -> BenchResult<(f64, f64, f64)> {
    let mut cmd = std::process::Command::new(bin);
    cmd.args([
        "-s",
        addr,
        "-n",
        &threads.to_string(),
        "-r",
        &secs.to_string(),
    ]);
    if getattr {
        cmd.arg("-g");
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("ops/s"))
        .ok_or_else(|| format!("diodload printed no result: {text}"))?;
    if text.contains("error") {
        return Err(format!("diodload against {addr}: {}", text.trim()).into());
    }
    let nums: Vec<f64> = line
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|t| t.parse().ok())
        .collect();
    match nums[..] {
        [ops, r, w, ..] => Ok((ops, r, w)),
        _ => Err(format!("cannot parse diodload output {line:?}").into()),
    }
}

fn diodload_mode(args: &Args, servers: &[Server]) -> BenchResult<()> {
    let secs = args.secs.round().max(1.0) as u64;
    println!("diodload against each server's ctl tree (aname ctl), {secs} s per cell, msize 65536");
    println!(
        "{:<8} {:>7} {:<8} {:>11} {:>10} {:>10}",
        "mode", "threads", "server", "ops/s", "rMB/s", "wMB/s"
    );
    for getattr in [true, false] {
        let mode = if getattr { "getattr" } else { "rw" };
        for &threads in &args.conns {
            let mut got = Vec::new();
            for s in servers {
                let Some(guest_shim::endpoint::Endpoint::Tcp { host, port }) = &s.tcp else {
                    continue;
                };
                let addr = format!("{host}:{port}");
                let (ops, r, w) = diodload_once(&args.diodload_bin, &addr, threads, secs, getattr)
                    .map_err(|e| format!("{}: {e}", s.name))?;
                println!(
                    "{:<8} {:>7} {:<8} {:>11.0} {:>10.0} {:>10.0}",
                    mode, threads, s.name, ops, r, w
                );
                got.push((s.name.clone(), ops, r, w));
            }
            if let Some((first, ops0, r0, w0)) = got.first() {
                for (other, ops, r, w) in got.iter().skip(1) {
                    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::INFINITY };
                    if getattr {
                        println!(
                            "{mode:<8} {threads:>7} ratio {first}/{other}: ops/s {:.2}x",
                            ratio(*ops0, *ops)
                        );
                    } else {
                        println!(
                            "{mode:<8} {threads:>7} ratio {first}/{other}: read MB/s {:.2}x, write MB/s {:.2}x",
                            ratio(*r0, *r),
                            ratio(*w0, *w)
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

fn main() -> BenchResult<()> {
    let args = Args::parse();
    raise_fd_limit();
    let tree = Tree {
        small_files: args.small_files.max(1),
        big_bytes: (args.big_mb.max(1)) << 20,
        dir_entries: args.dir_entries,
        write_span: args.write_span_mb.max(1) << 20,
    };
    let servers = start_servers(&args)?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "loadgen: {} CPUs, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    for s in &servers {
        println!("  {}", describe(s));
        let ep = s
            .endpoint("tcp")
            .or_else(|| s.endpoint("unix"))
            .ok_or("no endpoint")?;
        let session = mixes::connect(&ep, args.msize, &s.aname)?;
        let c = &session.client;
        println!("  {} msize {}", s.name, c.msize());
        if args.diodload {
            continue;
        }
        mixes::populate(c, &tree, false)
            .map_err(|e| format!("{}: building the tree: {e}", s.name))?;
    }
    if args.diodload {
        diodload_mode(&args, &servers)?;
    } else if args.memory {
        memory_mode(&args, &servers)?;
    } else {
        run_table(&args, &servers, tree)?;
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "loadgen: done, load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}
