#!/usr/bin/env bash
# Boot time of one guest (QEMU, software emulation) with its root file system
#   envoy   on Envoy: a fork of the imported busybox template, mounted by envoy-shim init over
#           virtio-serial (9P2000.L, trans=fd) — each run boots a fresh fork;
#   virtfs  on QEMU's own 9P server: -virtfs local,path=COPY,mount_tag=root,
#           security_model=passthrough; root=root rootfstype=9p rootflags=trans=virtio,version=9p2000.L
#   disk    on a local disk image: ext4 made with mkfs.ext4 -d, virtio-blk, root=/dev/vda
# all in the same run, same kernel, same initramfs, same template. The time is the guest's
# /proc/uptime when its workload starts (ENVOY-GUEST-BEGIN: kernel start to userland ready,
# i.e. modules, root mount, busybox init, rcS), plus the host's wall time per boot.
# Also prints envoyd's storage traffic per Envoy boot (first boot = cold envoyd cache).
#
# Usage: benches/boot-times.sh [--runs N] [--no-build] [--keep]
#   --runs N     boots per configuration (default 3), interleaved envoy/virtfs/disk
#   --no-build   use the binaries already built
#   --keep       keep the work directory
# Prints a table (median and every run) and the command line to paste into benches/RESULTS.md.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
guest="$repo/scripts/guest"
target="${CARGO_TARGET_DIR:-$repo/target}"
runs=3 build=1 keep=0
while (($#)); do
    case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --keep) keep=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
    *) echo "boot-times: unknown argument $1" >&2; exit 2 ;;
    esac
done
say() { printf 'boot-times: %s\n' "$*" >&2; }
now() { date +%s.%N; }

work="$(mktemp -d /tmp/envoy-boot-times.XXXXXX)"
srv_pid=""
cleanup() {
    if [[ -n "$srv_pid" ]]; then kill "$srv_pid" 2>/dev/null || true; wait "$srv_pid" 2>/dev/null || true; fi
    if ((keep)); then say "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ((build)); then
    say "building envoyd, envoyctl (release) and the static envoy-shim"
    (cd "$repo" && cargo build --release --locked -q -p dom0-envoyd --bin envoyd --bin envoyctl \
        && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked -q \
            -p guest-shim --bin envoy-shim --target x86_64-unknown-linux-gnu)
fi
envoyd="$target/release/envoyd" envoyctl="$target/release/envoyctl"
shim="$target/x86_64-unknown-linux-gnu/release/envoy-shim"
for b in "$envoyd" "$envoyctl" "$shim"; do [[ -x "$b" ]] || { say "missing $b"; exit 2; }; done

out="$("$guest/build-template.sh" --shim "$shim" --out "$work/template" --ext4)"
rootfs="$(sed -n 's/^rootfs //p' <<<"$out")"
tarball="$(sed -n 's/^tar //p' <<<"$out")"
initramfs="$(sed -n 's/^initramfs //p' <<<"$out")"
ext4="$(sed -n 's/^ext4 //p' <<<"$out")"

data="$work/envoy-data"
sock="$work/envoyd.sock"
"$envoyd" --data "$data" --listen "unix:$sock" >"$work/envoyd.log" 2>&1 &
srv_pid=$!
for _ in $(seq 100); do [[ -S "$sock" && -S "$data/control.sock" ]] && break; sleep 0.1; done
ctl() { "$envoyctl" --control "$data/control.sock" "$@"; }
ctl image import "$tarball" /templates/busybox >&2
traffic() {
    ctl --json stats | python3 -c 'import json,sys; s=json.load(sys.stdin)["storage"]; print(s["read_requests"], s["read_bytes"])'
}

# boot NAME ARGS...: one boot; prints "UPTIME WALL" (or "- WALL" on failure).
boot() {
    local name="$1" t0 t1 up
    shift
    t0="$(now)"
    "$guest/run.sh" --initrd "$initramfs" --timeout 300 --log "$work/$name.log" "$@" >"$work/$name.run" 2>&1 || true
    t1="$(now)"
    up="$(grep -ao 'ENVOY-GUEST-BEGIN uptime=[0-9.]*' "$work/$name.log" | head -1 | cut -d= -f2)"
    if ! grep -aq '^ENVOY-GUEST-END rc=0' "$work/$name.log"; then
        say "$name failed: $(tail -5 "$work/$name.log" | tr '\n' ' ')"
        up="-"
    fi
    echo "${up:--} $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')"
}

declare -A up wall
traffic_lines=()
for i in $(seq "$runs"); do
    ctl image fork /templates/busybox "/guests/bench$i" >/dev/null
    read -r r0 b0 <<<"$(traffic)"
    read -r u w <<<"$(boot "envoy-$i" --virtio-serial-socket "$sock" \
        --append "envoy.image=/guests/bench$i envoy.transport=serial:envoy envoy.onfail=poweroff")"
    read -r r1 b1 <<<"$(traffic)"
    up[envoy]+="$u " wall[envoy]+="$w "
    traffic_lines+=("envoy boot $i (fresh fork /guests/bench$i): $((r1 - r0)) store reads, $((b1 - b0)) bytes")

    rm -rf "$work/virtfs-root"
    cp -a "$rootfs" "$work/virtfs-root"
    read -r u w <<<"$(boot "virtfs-$i" \
        --qemu-arg -virtfs --qemu-arg "local,path=$work/virtfs-root,mount_tag=root,security_model=passthrough,id=root" \
        --append "root=root rootfstype=9p rootflags=trans=virtio,version=9p2000.L")"
    up[virtfs]+="$u " wall[virtfs]+="$w "

    cp "$ext4" "$work/disk.ext4"
    read -r u w <<<"$(boot "disk-$i" \
        --qemu-arg -drive --qemu-arg "file=$work/disk.ext4,if=virtio,format=raw" \
        --append "root=/dev/vda rootfstype=ext4")"
    up[disk]+="$u " wall[disk]+="$w "
done

median() { tr ' ' '\n' | grep -v '^-\?$' | sort -n | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
printf '\n| root file system | kernel start -> workload, median (s) | runs (s) | host wall per boot, median (s) |\n|---|---|---|---|\n'
for c in envoy virtfs disk; do
    printf '| %s | %s | %s | %s |\n' "$c" "$(median <<<"${up[$c]}")" "${up[$c]% }" "$(median <<<"${wall[$c]}")"
done
printf '\n'
printf '%s\n' "${traffic_lines[@]}"
printf '\nmachine: %s, %s CPUs, load %s; qemu %s; kernel %s\n' "$(uname -m)" "$(nproc)" \
    "$(cut -d' ' -f1-3 /proc/loadavg)" "$(qemu-system-x86_64 --version | head -1 | awk '{ print $4 }')" \
    "$(readlink "$repo/scripts/.cache/kernel/current")"
echo "command: benches/boot-times.sh --runs $runs"
