//! `envoy-storaged`: the storage server and its offline tools.
//!
//! ```text
//! envoy-storaged serve --dir DIR --listen tcp:127.0.0.1:5640 --listen unix:/run/envoy-s.sock
//! envoy-storaged check DIR          # exit 0 clean, 1 problems, 2 could not run
//! envoy-storaged demo --dir DIR     # create a store, write/read/clone an object, print stats
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use envoy_storage::wire::Endpoint;
use envoy_storage::{
    check, server, AttrChange, Attributes, EngineChoice, ObjectKind, ObjectStore, StoreError,
    StoreOptions,
};

#[derive(Debug, Parser)]
#[command(
    name = "envoy-storaged",
    version,
    about = "Envoy storage server and tools"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Engine {
    /// io_uring (falls back to sync if unavailable).
    Uring,
    /// Synchronous pread/pwrite.
    Sync,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve a store over the storage protocol.
    Serve {
        /// Store directory (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// Endpoint to listen on, `tcp:HOST:PORT` or `unix:PATH` (repeatable).
        #[arg(long, required = true)]
        listen: Vec<Endpoint>,
        /// Data I/O engine.
        #[arg(long, value_enum, default_value_t = Engine::Uring)]
        engine: Engine,
        /// Open-descriptor cache size.
        #[arg(long, default_value_t = 1024)]
        fd_cache: usize,
        /// Leaf-directory cache size.
        #[arg(long, default_value_t = 1024)]
        dir_cache: usize,
    },
    /// Verify a store without changing it.
    Check {
        /// Store directory.
        dir: PathBuf,
    },
    /// Create a store and show what it does.
    Demo {
        /// Store directory (created if missing).
        #[arg(long)]
        dir: PathBuf,
    },
}

fn options(engine: Engine, fd_cache: usize, dir_cache: usize) -> StoreOptions {
    StoreOptions {
        engine: match engine {
            Engine::Uring => EngineChoice::Uring,
            Engine::Sync => EngineChoice::Sync,
        },
        fd_cache,
        dir_cache,
        ..StoreOptions::default()
    }
}

/// Prints an error with its chain of causes.
fn report(e: &dyn std::error::Error) {
    eprintln!("envoy-storaged: {}", envoy_storage::error::chain(e));
}

fn demo(dir: &std::path::Path) -> Result<(), StoreError> {
    let store = ObjectStore::open_or_create(dir, StoreOptions::default())?;
    println!("store {} (engine {})", dir.display(), store.engine_name());
    let g = store.geometry();
    println!(
        "geometry: block size {}, {}-bit IDs, leaf {} bits, directory levels {:?}",
        g.block_size,
        g.id_bits,
        g.leaf_bits,
        g.levels()
    );
    let ids = store.reserve(2)?;
    let (a, b) = (ids.first, envoy_storage::ObjectId(ids.first.0 + 1));
    println!("reserved IDs {a}..={b}");
    store.create_object(a, &Attributes::new(ObjectKind::Regular, 0o644))?;
    let text = Bytes::from_static(b"Hello from the Envoy object store.\n");
    store.write(a, 0, text.clone())?;
    let back = store.read(a, 0, 4096)?;
    println!(
        "object {a}: wrote {} bytes, read back {:?}",
        text.len(),
        String::from_utf8_lossy(&back)
    );
    let st = store.clone_object(a, b)?;
    println!(
        "cloned {a} -> {b}: {} bytes, mode {:o}",
        st.size, st.attr.mode
    );
    store.wstat(
        b,
        &AttrChange {
            mode: Some(0o600),
            size: Some(5),
            ..AttrChange::default()
        },
    )?;
    store.sync(b)?;
    for id in [a, b] {
        let st = store.stat(id)?;
        println!(
            "stat {id}: kind {:?} mode {:o} uid {} size {} blocks {}",
            st.attr.kind, st.attr.mode, st.attr.uid, st.size, st.blocks
        );
    }
    let u = store.usage()?;
    println!("usage: {} objects, {} bytes allocated", u.objects, u.bytes);
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve {
            dir,
            listen,
            engine,
            fd_cache,
            dir_cache,
        } => {
            let store =
                match ObjectStore::open_or_create(&dir, options(engine, fd_cache, dir_cache)) {
                    Ok(s) => Arc::new(s),
                    Err(e) => {
                        report(&e);
                        return ExitCode::from(2);
                    }
                };
            tracing::info!(dir = %dir.display(), engine = store.engine_name(), "store open");
            match server::serve(store, &listen) {
                Ok(h) => {
                    h.wait();
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    report(&e);
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Check { dir } => {
            let r = check::check(&dir);
            print!("{r}");
            if r.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Cmd::Demo { dir } => match demo(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                report(&e);
                ExitCode::from(2)
            }
        },
    }
}
