#!/usr/bin/env bash
# One file workload in one guest (QEMU, software emulation) over envoy's three guest transports,
# each through envoy-shim (relay) and the guest kernel's 9P client (trans=fd, 9P2000.L,
# msize 512 KiB, cache=none):
#   serial   virtio-serial port -> envoyd --listen unix:SOCK (QEMU's chardev connects there)
#   vsock    AF_VSOCK to the host -> QEMU vhost-user-vsock-pci -> vhost-device-vsock (hybrid
#            vsock) -> envoyd --listen vsock-uds:3:<uds>_5640
#   ivshmem  envoyd --listen ring:/dev/shm/FILE; QEMU ivshmem-plain maps FILE as BAR 2; the shim
#            is the ring's frontend (polling: no interrupts, no futex across the VM boundary)
# All three devices are on the same VM, one envoyd serves all three endpoints from one store,
# and the guest runs the workload over each transport in turn (rounds interleave the order).
# Workload per transport and round: write a 64 MiB file (dd bs=1M, then sync), drop the guest's
# caches, read it back (dd bs=1M); then N small files (4 KiB each): create+write, stat, read.
# Times are the guest's /proc/uptime (10 ms resolution). Under TCG only the ratios mean something.
#
# Usage: benches/guest-transports.sh [--rounds R] [--files N] [--no-build] [--keep]
#   --rounds R   rounds (default 2; round r starts with transport r mod 3)
#   --files N    small files per round (default 100)
#   --no-build   use the binaries already built ($CARGO_TARGET_DIR, default ./target)
#   --keep       keep the work directory
# Prints one line per measurement, then a table (median over rounds) with ratios to serial.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
guest="$repo/scripts/guest"
target="${CARGO_TARGET_DIR:-$repo/target}"
rounds=2 files=100 build=1 keep=0
while (($#)); do
    case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --files) files="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --keep) keep=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
    *) echo "guest-transports: unknown argument $1" >&2; exit 2 ;;
    esac
done
say() { printf 'guest-transports: %s\n' "$*" >&2; }

work="$(mktemp -d /tmp/envoy-guest-transports.XXXXXX)"
ring="/dev/shm/envoy-guest-transports-$$"
[[ -d /dev/shm && -w /dev/shm ]] || ring="$work/ring"
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -f "$ring"
    if ((keep)); then say "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$repo/scripts/install-deps.sh" >"$work/install-deps.log" 2>&1 || { cat "$work/install-deps.log" >&2; exit 2; }
if ((build)); then
    say "building envoyd, envoyctl (release) and the static envoy-shim"
    (cd "$repo" && cargo build --release --locked -q -p dom0-envoyd --bin envoyd --bin envoyctl \
        && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked -q \
            -p guest-shim --bin envoy-shim --target x86_64-unknown-linux-gnu)
fi
envoyd="$target/release/envoyd" envoyctl="$target/release/envoyctl"
shim="$target/x86_64-unknown-linux-gnu/release/envoy-shim"
vdv="$repo/scripts/.cache/vhost-device-vsock/bin/vhost-device-vsock"
for b in "$envoyd" "$envoyctl" "$shim" "$vdv"; do [[ -x "$b" ]] || { say "missing $b"; exit 2; }; done
strip -o "$work/envoy-shim" "$shim"

# ---- host: one envoyd with three endpoints, the vsock backend
sock="$work/serial.sock" uds="$work/vm.vsock" vhost="$work/vhost-vsock.sock" data="$work/data"
"$envoyd" --data "$data" --listen "unix:$sock" --listen "vsock-uds:3:${uds}_5640" --listen "ring:$ring" \
    >"$work/envoyd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [[ -S "$sock" && -s "$ring" ]] && break; sleep 0.1; done
[[ -S "$sock" && -s "$ring" ]] || { tail "$work/envoyd.log" >&2; say "envoyd did not come up"; exit 1; }
"$envoyctl" --data "$data" grant / "vsock:cid=3 mount-rw any" >/dev/null
"$envoyctl" --data "$data" grant / "ring:$ring mount-rw any" >/dev/null
size="$(stat -c %s "$ring")" p2=4096
while ((p2 < size)); do p2=$((p2 * 2)); done
truncate -s "$p2" "$ring"
"$vdv" --guest-cid 3 --socket "$vhost" --uds-path "$uds" >"$work/vdv.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [[ -S "$vhost" ]] && break; sleep 0.1; done

# ---- guest script
cat >"$work/guest.sh" <<'EOF'
# shellcheck shell=sh
ROUNDS="$(arg rounds)" FILES="$(arg files)"
M=/mnt/b
mkdir -p "$M"
up() { cut -d' ' -f1 /proc/uptime; }
dt() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
run_one() {
    t="$1" ep="$2" r="$3"
    if ! envoy-shim mount --connect "$ep" --aname /default --opt uname=root,access=user "$M" \
        --daemon --log "/tmp/shim-$t.log" >/tmp/mount.out 2>&1; then
        result "mount-$t-$r" FAIL "$(cat /tmp/mount.out | tr '\n' ' ' | cut -c1-200)"
        return
    fi
    d="$M/bench-$t-$r"
    mkdir "$d"
    a="$(up)"; dd if=/dev/zero of="$d/big" bs=1M count=64 2>/dev/null; sync; b="$(up)"
    echo "BENCH $t $r write64 $(dt "$a" "$b")"
    echo 3 >/proc/sys/vm/drop_caches
    a="$(up)"; dd if="$d/big" of=/dev/null bs=1M 2>/dev/null; b="$(up)"
    echo "BENCH $t $r read64 $(dt "$a" "$b")"
    [ "$(stat -c %s "$d/big")" = 67108864 ] && result "size-$t-$r" PASS || result "size-$t-$r" FAIL
    head -c 4096 /dev/urandom >/tmp/small
    a="$(up)"; i=0; while [ $i -lt "$FILES" ]; do cat /tmp/small >"$d/f$i"; i=$((i + 1)); done; b="$(up)"
    echo "BENCH $t $r create $(dt "$a" "$b")"
    a="$(up)"; i=0; while [ $i -lt "$FILES" ]; do stat -c %s "$d/f$i" >/dev/null; i=$((i + 1)); done; b="$(up)"
    echo "BENCH $t $r stat $(dt "$a" "$b")"
    a="$(up)"; i=0; while [ $i -lt "$FILES" ]; do cat "$d/f$i" >/dev/null; i=$((i + 1)); done; b="$(up)"
    echo "BENCH $t $r read $(dt "$a" "$b")"
    rm -rf "$d"
    umount "$M" && result "run-$t-$r" PASS || result "run-$t-$r" FAIL "umount"
}
set -- serial:serial-name:envoy vsock:vsock:2:5640 ivshmem:ivshmem:auto
r=0
while [ $r -lt "$ROUNDS" ]; do
    # Rotate the order by one each round.
    if [ $r -gt 0 ]; then first="$1"; shift; set -- "$@" "$first"; fi
    for spec in "$@"; do run_one "${spec%%:*}" "${spec#*:}" "$r"; done
    r=$((r + 1))
done
EOF

say "guest: $rounds round(s), 64 MiB + $files small files per transport per round"
rc=0
"$guest/run.sh" --script "$work/guest.sh" --add "$work/envoy-shim:/bin/envoy-shim" \
    --virtio-serial-socket "$sock" --vhost-user-vsock "$vhost" --ivshmem "$ring" --mem 768 \
    --append "envoy.rounds=$rounds envoy.files=$files" --timeout $((300 + 400 * rounds)) \
    --log "$work/guest.log" >"$work/run.out" 2>&1 || rc=$?
grep -a '^run.sh: \(boot\|script\|timeout\|QEMU\)' "$work/run.out" >&2 || true
grep -a '^ENVOY-GUEST-RESULT .* FAIL' "$work/guest.log" >&2 || true
grep -a '^BENCH ' "$work/guest.log" | tr -d '\r' >"$work/bench.txt" || true
((rc == 0)) || { say "guest run failed (rc=$rc); log: $work/guest.log"; keep=1; }
[[ -s "$work/bench.txt" ]] || exit 1
sed 's/^BENCH /  /' "$work/bench.txt"

# ---- table: median seconds per transport and op; MB/s for the big file; ratio to serial
python3 - "$work/bench.txt" "$files" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
files = int(sys.argv[2])
t = {}
for _, tr, _r, op, s in rows:
    t.setdefault((tr, op), []).append(float(s))
ops = ["write64", "read64", "create", "stat", "read"]
trs = ["serial", "vsock", "ivshmem"]
def med(tr, op):
    v = t.get((tr, op))
    return statistics.median(v) if v else None
print(f"{'op':<10}" + "".join(f"{tr:>22}" for tr in trs))
for op in ops:
    line = f"{op:<10}"
    base = med("serial", op)
    for tr in trs:
        m = med(tr, op)
        if m is None:
            line += f"{'-':>22}"
            continue
        if op.endswith("64"):
            fig = f"{64 / m:.1f} MB/s" if m > 0 else "inf"
        else:
            fig = f"{m / files * 1000:.1f} ms/file"
        ratio = f" x{base / m:.2f}" if base and m else ""
        line += f"{fig + ratio:>22}"
    print(line)
print("(xR = serial's time / this transport's time: above 1 is faster than virtio-serial)")
PY
exit "$rc"
