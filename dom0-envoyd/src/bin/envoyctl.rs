//! `envoyctl`: operate a running envoyd through its control socket (see
//! `dom0_envoyd::control::client`).

use std::process::ExitCode;

use clap::Parser;
use dom0_envoyd::control::client::{run, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    match run(&cli, &mut stdout.lock(), &mut stderr.lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("envoyctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
