//! `xen-frontend-emu`: a Linux-like 9pfs Xen frontend in its own process, against the
//! simulated Xen (see `envoy_xen::emu`).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(envoy_xen::emu::main_with_args(&args));
}
