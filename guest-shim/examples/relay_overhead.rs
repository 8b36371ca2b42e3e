//! Measures what the relay costs: the same workload against diod directly over TCP and
//! through the relay (Unix socket → relay → TCP → diod), in one run.
//!
//! ```sh
//! cargo run --release -p guest-shim --example relay_overhead    # as root, diod installed
//! ```
//!
//! Workloads: sequential reads of a 64 MiB file with msize 512 KiB (MB/s), and small
//! `Tgetattr` round trips from 1 and from 8 threads sharing one connection (ops/s).

use std::os::unix::net::UnixListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_proto::{getattr, lopen, Fid};
use guest_shim::client::Client;
use guest_shim::endpoint::Connection;
use guest_shim::relay::{Upstream, DEFAULT_MAX_MSIZE};
use guest_shim::Endpoint;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const FILE_MIB: usize = 64;
const MSIZE: u32 = 512 * 1024;

struct Diod(Child);

impl Drop for Diod {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn session(ep: &Endpoint, aname: &str) -> Res<Client> {
    let c = Client::connect_version(ep, MSIZE, "9P2000.L")?;
    c.attach(Fid(0), Fid::NOFID, "root", aname, 0)?;
    Ok(c)
}

fn read_mbps(c: &Client) -> Res<f64> {
    let f = c.alloc_fid();
    c.walk(Fid(0), f, &["big"])?;
    c.lopen(f, lopen::RDONLY)?;
    let t = Instant::now();
    let n = c.read_all(f)?.len();
    let s = t.elapsed().as_secs_f64();
    c.clunk(f)?;
    assert_eq!(n, FILE_MIB << 20);
    Ok(n as f64 / s / 1e6)
}

fn getattr_ops(c: &Arc<Client>, threads: usize, per_thread: usize) -> Res<f64> {
    let t = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let c = Arc::clone(c);
            std::thread::spawn(move || -> Result<(), String> {
                for _ in 0..per_thread {
                    c.getattr(Fid(0), getattr::BASIC)
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| "thread panicked")??;
    }
    Ok((threads * per_thread) as f64 / t.elapsed().as_secs_f64())
}

/// CPU time (user + system) this process has used, in seconds (clock ticks of 10 ms): the
/// client, and in the relayed run the relay too. Less sensitive to a busy machine than
/// wall-clock rates.
fn cpu_seconds() -> Res<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after_comm = stat.rsplit_once(')').ok_or("bad /proc/self/stat")?.1;
    let f: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); after the comm field they are at index 11 and 12.
    let ticks: u64 = f.get(11).ok_or("short stat")?.parse::<u64>()?
        + f.get(12).ok_or("short stat")?.parse::<u64>()?;
    Ok(ticks as f64 / 100.0)
}

fn run(label: &str, ep: &Endpoint, aname: &str) -> Res<()> {
    let c = Arc::new(session(ep, aname)?);
    let cpu0 = cpu_seconds()?;
    let mb = (0..3).map(|_| read_mbps(&c)).collect::<Res<Vec<_>>>()?;
    let cpu = cpu_seconds()? - cpu0;
    let one = getattr_ops(&c, 1, 5000)?;
    let eight = getattr_ops(&c, 8, 2000)?;
    println!(
        "{label:8} read 64 MiB: {:.0} / {:.0} / {:.0} MB/s, {:.2} CPU s for 192 MiB   getattr: {one:.0} ops/s (1 thread), {eight:.0} ops/s (8 threads)",
        mb[0], mb[1], mb[2], cpu
    );
    Ok(())
}

fn main() -> Res<()> {
    let export = tempfile::tempdir()?;
    std::fs::write(export.path().join("big"), vec![0x5au8; FILE_MIB << 20])?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let _diod = Diod(
        Command::new("/usr/sbin/diod")
            .args(["-f", "-n", "-d", "0", "-c", "/dev/null", "-e"])
            .arg(export.path())
            .args(["-l", &format!("127.0.0.1:{port}"), "-L", "/dev/null"])
            .stdin(Stdio::null())
            .spawn()?,
    );
    let tcp: Endpoint = format!("tcp:127.0.0.1:{port}").parse()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Client::connect(&tcp).is_err() {
        if Instant::now() > deadline {
            return Err("diod did not start".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let aname = export
        .path()
        .to_str()
        .ok_or("non-UTF-8 temp dir")?
        .to_owned();

    // The relay, in-process: one guest connection at a time, as envoy-shim relay does.
    let sock_dir = tempfile::tempdir()?;
    let sock = sock_dir.path().join("relay.sock");
    let listener = UnixListener::bind(&sock)?;
    let upstream = Upstream::new(&tcp, DEFAULT_MAX_MSIZE)?;
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            if let Ok(down) = Connection::from_unix(s) {
                let _ = upstream.serve(down, DEFAULT_MAX_MSIZE);
            }
        }
    });

    run("direct", &tcp, &aname)?;
    run("relayed", &Endpoint::Unix(sock), &aname)?;
    Ok(())
}
