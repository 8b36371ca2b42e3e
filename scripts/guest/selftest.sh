#!/usr/bin/env bash
# End-to-end check of the guest harness: boots the test guest, which mounts the host's diod over
# 9P (trans=tcp via QEMU user networking) and runs a quick file battery; then checks on the host
# what the guest wrote. With --fail-path, a second boot checks that a failing guest script
# makes run.sh exit non-zero.
#
# Usage: scripts/guest/selftest.sh [--fail-path]      (root: diod exports a temp dir)
# Exit status 0 when everything passed. Prints timings.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
scripts="$(dirname "$here")"
fail_path=0
[[ "${1:-}" == "--fail-path" ]] && fail_path=1
say() { printf 'selftest: %s\n' "$*"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

t0="$(now)"
"$scripts/install-deps.sh" >/dev/null
"$here/build-initramfs.sh" >/dev/null 2>&1
t1="$(now)"
say "dependencies and initramfs ready in $(elapsed "$t0" "$t1") s"

work="$(mktemp -d /tmp/envoy-selftest.XXXXXX)"
diod_pid=""
cleanup() {
    if [[ -n "$diod_pid" ]]; then kill "$diod_pid" 2>/dev/null || true; wait "$diod_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
mkdir "$work/export"
echo "from the host" >"$work/export/from-host"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
diod -f -n -d 0 -L "$work/diod.log" -e "$work/export" -l "127.0.0.1:$port" &
diod_pid=$!
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

rc=0
"$here/run.sh" --script "$here/selftest-guest.sh" --netdev-user --timeout 240 \
    --append "envoy.port=$port envoy.aname=$work/export" | tee "$work/run.out" || rc=$?
log="$(tail -1 "$work/run.out" | sed 's/^log: //')"
grep '^selftest:' "$log" | tr -d '\r' || true

# What the guest left behind must be visible on the host.
if [[ $rc -eq 0 ]]; then
    if [[ "$(ls "$work/export")" != "from-host" ]]; then
        say "FAIL: host export after the run holds: $(ls "$work/export" | tr '\n' ' ')"
        rc=1
    fi
fi

if ((fail_path)); then
    printf 'result deliberate FAIL "checking the failure path"\n' >"$work/fail.sh"
    frc=0
    "$here/run.sh" --script "$work/fail.sh" --timeout 120 >"$work/fail.out" 2>&1 || frc=$?
    if [[ $frc -eq 1 ]]; then say "failure path: run.sh exited 1 as expected"; else
        say "FAIL: failing guest script gave run.sh exit $frc"; rc=1; fi
fi
say "total $(elapsed "$t0" "$(now)") s; rc=$rc"
exit "$rc"
