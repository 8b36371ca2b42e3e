//! `envoyd`: parse the command line, start the server, wait for SIGTERM/SIGINT, shut down.

use std::process::ExitCode;

use clap::Parser;
use dom0_envoyd::config::{Args, Config};
use dom0_envoyd::Server;
use nix::sys::signal::{SigSet, Signal};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match Config::from_args(Args::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("envoyd: {e}");
            return ExitCode::from(2);
        }
    };
    // Block the signals in every thread (spawned threads inherit the mask) and wait for
    // them here.
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    if let Err(e) = set.thread_block() {
        eprintln!("envoyd: cannot block signals: {e}");
        return ExitCode::FAILURE;
    }
    let server = match Server::start(config) {
        Ok(s) => s,
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            eprintln!("envoyd: {msg}");
            return ExitCode::FAILURE;
        }
    };
    for ep in server.endpoints() {
        tracing::info!(endpoint = %ep, "serving 9P2000.L / 9P2000.u (attach /default)");
    }
    match set.wait() {
        Ok(sig) => tracing::info!(signal = ?sig, "shutting down"),
        Err(e) => tracing::error!(error = %e, "sigwait failed; shutting down"),
    }
    server.shutdown();
    ExitCode::SUCCESS
}
