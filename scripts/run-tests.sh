#!/usr/bin/env bash
# Runs every test of the project, the way CI does: formatting, lints, then the whole test suite.
# Usage: scripts/run-tests.sh        (from anywhere, as root on Debian: it installs the packages the
#                                    real-client tests need — diod, qemu, busybox, a Debian kernel)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "install test dependencies (idempotent)"
scripts/install-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test --workspace"
cargo test --workspace --locked

step "real-client tests: the Linux kernel's 9P client in QEMU guests, and diod's tools"
scripts/guest/envoy-tests.sh
