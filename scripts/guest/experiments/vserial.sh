#!/usr/bin/env bash
# Experiment: the virtio-serial wiring envoyd will use, with diod standing in for envoyd.
#
#   guest 9P client --trans=fd--> (relay) --> /dev/vport0p1 ==virtio-serial==> QEMU chardev
#     --unix socket--> socat --tcp--> diod 127.0.0.1:D
#
# Boots once with vserial-guest.sh (see there for what it checks) and prints the results.
# Usage: scripts/guest/experiments/vserial.sh   (root; needs socat, diod)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
guest="$(dirname "$here")"
"$(dirname "$guest")/install-deps.sh" >/dev/null

work="$(mktemp -d /tmp/envoy-vserial.XXXXXX)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
mkdir "$work/export"
echo "from the host" >"$work/export/from-host"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
diod -f -n -d 0 -L "$work/diod.log" -e "$work/export" -l "127.0.0.1:$port" &
pids+=($!)
# QEMU's chardev connects as a client: socat listens on the Unix socket, one TCP connection to
# diod per QEMU connection.
socat UNIX-LISTEN:"$work/sock",fork TCP:127.0.0.1:"$port" &
pids+=($!)
for _ in $(seq 50); do [[ -S "$work/sock" ]] && break; sleep 0.1; done

rc=0
"$guest/run.sh" --script "$here/vserial-guest.sh" --virtio-serial-socket "$work/sock" \
    --timeout 180 --append "envoy.aname=$work/export" | tee "$work/run.out" || rc=$?
grep '^vserial:' "$(tail -1 "$work/run.out" | sed 's/^log: //')" | tr -d '\r' || true
exit "$rc"
