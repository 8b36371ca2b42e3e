#!/usr/bin/env bash
# Captures the 9P traffic of the Linux kernel's 9P client (in the QEMU test guest) talking to
# diod on the host, through the logging proxy 9p-proxy.py.
#
#   guest v9fs --tcp--> 10.0.2.2:PROXY (QEMU user net) --> 9p-proxy.py --> diod 127.0.0.1:DIOD
#
# Usage: scripts/capture/capture-linux-diod.sh [--out FILE] [--no-u-probe]
# Default --out: proto/tests/golden/linux-client-diod.txt. The main capture mounts with
# version=9p2000.L and runs guest-battery.sh; a second, short boot then tries version=9p2000.u
# (diod refuses it) and its frames are added to the header as comments.
# Needs root (diod runs as root, unsquashed, so chown/mknod work). Work files: /tmp/envoy-capture.
# Exit status: the 9P2000.L battery's (0 = every step passed), 3 if the frame log is inconsistent.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
scripts="$(dirname "$here")"
repo="$(dirname "$scripts")"
out="$repo/proto/tests/golden/linux-client-diod.txt"
u_probe=1
while (($#)); do
    case "$1" in
    --out) out="$2"; shift 2 ;;
    --no-u-probe) u_probe=0; shift ;;
    *) echo "usage: $0 [--out FILE] [--no-u-probe]" >&2; exit 2 ;;
    esac
done
say() { printf 'capture: %s\n' "$*" >&2; }
if [[ $(id -u) -ne 0 ]]; then
    say "run as root: diod must serve chown/mknod as root for the battery to pass"
    exit 2
fi

"$scripts/install-deps.sh" >&2

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A fixed export path keeps aname (and so the Tattach bytes) the same from run to run.
top=/tmp/envoy-capture
export_dir="$top/export"
diod_cmd="diod -f -n -d 1 -e $export_dir -l 127.0.0.1:PORT"

pids=()
stop_servers() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
}
trap stop_servers EXIT

# run_capture NAME VERSION: fresh export, diod + proxy, one guest boot.
# Leaves $top/NAME.frames, NAME.console.log, NAME.diod.log; returns the guest's rc.
run_capture() {
    local name="$1" version="$2" rc=0
    rm -rf "$export_dir"
    mkdir -p "$export_dir/deep/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t"
    printf 'hello\n' >"$export_dir/hello"
    printf 'deep leaf\n' >"$export_dir/deep/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/leaf"

    local diod_port proxy_port
    diod_port="$(free_port)"
    proxy_port="$(free_port)"
    : >"$top/$name.frames"
    ${diod_cmd/PORT/$diod_port} -L "$top/$name.diod.log" &
    pids+=($!)
    python3 "$here/9p-proxy.py" --single --listen "127.0.0.1:$proxy_port" --hold-walk envoy-flush-me \
        --connect "127.0.0.1:$diod_port" --out "$top/$name.frames" 2>"$top/$name.proxy.log" &
    pids+=($!)
    # diod is ready when it accepts a connection; the proxy when it has printed its banner
    # (probing the proxy would be logged as a connection).
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$diod_port") 2>/dev/null && grep -q '^9p-proxy:' "$top/$name.proxy.log" && break
        sleep 0.1
    done
    say "$name: diod on 127.0.0.1:$diod_port, proxy on 127.0.0.1:$proxy_port, version=$version"

    "$scripts/guest/run.sh" --script "$here/guest-battery.sh" --netdev-user --timeout 300 \
        --log "$top/$name.console.log" \
        --append "envoy.port=$proxy_port envoy.aname=$export_dir envoy.version=$version envoy.flush=1" >&2 || rc=$?
    stop_servers
    return "$rc"
}

rm -rf "$top"
mkdir -p "$top"
rc=0
run_capture dotl 9p2000.L || rc=$?
frames="$top/dotl.frames"
nframes="$(grep -c '^[CS] ' "$frames" || true)"
if ! python3 "$here/9p-summary.py" "$frames" >/dev/null; then
    say "frame log failed its consistency check: $(python3 "$here/9p-summary.py" "$frames" | grep PROBLEM | head -3)"
    rc=3
fi

u_lines=()
if ((u_probe)); then
    urc=0
    run_capture dotu 9p2000.u || urc=$?
    mapfile -t u_lines < <(grep -E '^[CS] ' "$top/dotu.frames" || true)
    u_mount="$(grep -m1 '^mount: ' "$top/dotu.console.log" | tr -d '\r' || true)"
    say "9p2000.u probe: guest rc=$urc, ${#u_lines[@]} frames; ${u_mount:-mount succeeded}"
fi

console="$top/dotl.console.log"
kver="$(readlink "$scripts/.cache/kernel/current")"
kbuild="$(grep -m1 -o 'battery: kernel .*' "$console" | cut -d' ' -f3- | tr -d '\r' || true)"
diodver="$(dpkg-query -W -f='${Version}' diod 2>/dev/null || echo unknown)"
mountopts="$(grep -m1 -o 'ENVOY-GUEST-RESULT mount PASS .*' "$console" | cut -d' ' -f4- | tr -d '\r' || true)"
mkdir -p "$(dirname "$out")"
{
    echo "# 9P traffic of the Linux kernel 9P client (v9fs) talking to diod, captured on the wire."
    echo "# Regenerate: scripts/capture/capture-linux-diod.sh (see scripts/capture/README.md)."
    echo "# Format: one frame per line in wire order; 'C <hex>' = client to server (T-message),"
    echo "# 'S <hex>' = server to client (R-message); each hex string is one whole frame starting"
    echo "# with size[4]. Lines starting with '#' are comments."
    echo "# guest kernel: Debian linux-image-$kver${kbuild:+ ($kbuild)}, QEMU TCG x86_64"
    echo "# server: diod $diodver, run as root: $diod_cmd"
    echo "# mount: mount -t 9p -o ${mountopts:-?} 10.0.2.2 /mnt/9p"
    echo "# guest steps: scripts/capture/guest-battery.sh; guest rc=$rc"
    echo "# captured: $(date -u +%Y-%m-%dT%H:%MZ)"
    python3 "$here/9p-summary.py" "$frames" || true
    if ((u_probe)); then
        echo "# 9p2000.u: diod only speaks 9P2000.L; a mount with version=9p2000.u exchanged only:"
        for l in "${u_lines[@]}"; do echo "#   $l"; done
        echo "#   (guest: ${u_mount:-mount succeeded})"
    fi
    # Frames and the proxy's comments (e.g. a reply dropped after Tflush), in wire order.
    grep -E '^([CS] [0-9a-f]+|# .*)$' "$frames"
} >"$out"
say "guest rc=$rc, $nframes frames -> $out"
exit "$rc"
