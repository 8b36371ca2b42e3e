#!/usr/bin/env bash
# Guest workloads, envoyd vs diod, same run: the Linux kernel's 9P client in the QEMU test guest
# (scripts/guest/run.sh) mounts each server through the same path and runs the same steps;
# the table compares the guest-clock seconds of every step. Software emulation makes the
# absolute times slow; the ratios of one run are what count. Not part of the CI suite.
#
# Usage: benches/guest-workloads.sh [options]      (root; scripts/install-deps.sh is run first)
#   --servers LIST   servers, comma-separated (default envoyd,diod; the first is compared to
#                    the others)
#   --via shim|tcp   shim (default): envoy-shim in the guest relays the kernel's trans=fd over
#                    virtio-serial to the server's Unix socket (diod listens on one too), so both
#                    servers are reached through the same relay; tcp: the kernel's trans=tcp
#                    through QEMU user networking
#   --opts LIST      extra 9p mount options (default cache=loose: without the dentry and
#                    attribute cache every path component is re-walked, ~2-3 files/s under TCG)
#   --big-mb N       size of the sequential-copy file (default 128)
#   --timeout SECS   per guest boot (default 2400)
#   --no-build       use the binaries already built
#   --keep           keep the work directory
#
# Steps in the guest (page caches dropped before each, so every step reaches the server):
#   unpack    tar -x of the linux-headers tree (5,912 files, scripts/install-deps.sh)
#   reread    cat of every file of the tree
#   du        du -s of the tree
#   find      find over the tree
#   ls-lR     ls -lR of the tree
#   write     dd of --big-mb MiB (1 MiB blocks, conv=fsync)
#   copy      cp of that file to a second one
#   read      cat of the copy
#   rm        rm -rf of the tree
# Binaries: $CARGO_TARGET_DIR (default ./target).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
guestdir="$repo/scripts/guest"
target="${CARGO_TARGET_DIR:-$repo/target}"

servers_list="envoyd,diod" via=shim opts="cache=loose" big_mb=128 timeout=2400 build=1 keep=0
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
while (($#)); do
    case "$1" in
    --servers) servers_list="$2"; shift 2 ;;
    --via) via="$2"; shift 2 ;;
    --opts) opts="$2"; shift 2 ;;
    --big-mb) big_mb="$2"; shift 2 ;;
    --timeout) timeout="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --keep) keep=1; shift ;;
    -h | --help) usage ;;
    *) echo "guest-workloads: unknown argument $1" >&2; usage ;;
    esac
done
[[ "$via" == shim || "$via" == tcp ]] || usage
IFS=, read -r -a servers <<<"$servers_list"

say() { printf 'guest-workloads: %s\n' "$*"; }
work="$(mktemp -d /var/tmp/guest-workloads.XXXXXX)"
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if ((keep)); then say "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

"$repo/scripts/install-deps.sh" >"$work/install-deps.log" 2>&1 || { cat "$work/install-deps.log"; say "install-deps failed"; exit 2; }
tree_tar="$(sed -n 's/^install-deps: source tree: \([^ ]*\) .*/\1/p' "$work/install-deps.log" | tail -1)"
[[ -f "$tree_tar" ]] || { say "install-deps made no source tree tar"; exit 2; }
envoyd_bin="$target/release/envoyd"
shim_bin="$target/x86_64-unknown-linux-gnu/release/envoy-shim"
if ((build)); then
    say "building envoyd (release) and the static envoy-shim"
    (cd "$repo" && cargo build --release --locked -q -p dom0-envoyd --bin envoyd \
        && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked -q \
            -p guest-shim --bin envoy-shim --target x86_64-unknown-linux-gnu) || { say "build failed"; exit 2; }
fi
[[ -x "$envoyd_bin" ]] || { say "missing $envoyd_bin"; exit 2; }
shim_add=()
if [[ "$via" == shim ]]; then
    [[ -x "$shim_bin" ]] || { say "missing $shim_bin"; exit 2; }
    strip -o "$work/envoy-shim" "$shim_bin"
    shim_add=(--add "$work/envoy-shim:/bin/envoy-shim")
fi

# The guest side: one line "WL STEP SECONDS" per step (guest clock).
cat >"$work/workload.sh" <<'EOF'
# shellcheck shell=sh
. /test/mount.sh
m=/mnt/e
envoy_mount $m || exit 1
big="$(arg bigmb)"
step() {
    _s="$1"
    shift
    sync
    echo 3 >/proc/sys/vm/drop_caches
    _a="$(uptime_s)"
    "$@" >/tmp/step.out 2>&1
    _rc=$?
    _b="$(uptime_s)"
    echo "WL $_s $(awk -v a="$_a" -v b="$_b" 'BEGIN { printf "%.2f", b - a }') rc=$_rc"
    if [ "$_rc" -eq 0 ]; then result "$_s" PASS; else result "$_s" FAIL "rc=$_rc $(head -c 200 /tmp/step.out | tr '\n' ' ')"; fi
}
mkdir -p $m/tree
step unpack tar -xf /test/tree.tar -C $m/tree
step reread sh -c "find $m/tree -type f | xargs cat >/dev/null"
step du du -s $m/tree
step find find $m/tree
step ls-lR ls -lR $m/tree
step write dd if=/dev/zero of=$m/big bs=1M count="$big" conv=fsync
step copy cp $m/big $m/big2
step read cat $m/big2
step rm sh -c "rm -rf $m/tree $m/big $m/big2"
check umount umount $m
EOF

declare -A secs=()
steps=(unpack reread du find ls-lR write copy read rm)
for srv in "${servers[@]}"; do
    data="$work/$srv.data" port="$(free_port)" sock="$work/$srv.sock"
    mkdir -p "$data"
    case "$srv" in
    envoyd)
        "$envoyd_bin" --data "$data" --listen "tcp:127.0.0.1:$port" --listen "unix:$sock" >"$work/$srv.log" 2>&1 &
        aname=/default ;;
    diod)
        diod -f -n -L "$work/$srv.log" -e "$data" -l "127.0.0.1:$port" -l "$sock" &
        aname="$data" ;;
    *) say "unknown server $srv"; exit 2 ;;
    esac
    spid=$!
    pids+=("$spid")
    for _ in $(seq 100); do port_open "$port" && [[ -S "$sock" ]] && break; sleep 0.1; done
    port_open "$port" || { say "$srv did not come up"; tail -5 "$work/$srv.log"; exit 1; }
    net=()
    if [[ "$via" == shim ]]; then net=(--virtio-serial-socket "$sock"); else net=(--netdev-user); fi
    say "=== $srv via $via (opts $opts, big file $big_mb MiB)"
    rc=0
    "$guestdir/run.sh" --script "$work/workload.sh" --add "$guestdir/tests/mount.sh:/test/mount.sh" \
        "${shim_add[@]}" "${net[@]}" --timeout "$timeout" --mem 1024 --log "$work/$srv.console" \
        --add "$tree_tar:/test/tree.tar" \
        --append "envoy.server=$srv envoy.via=$via envoy.version=9p2000.L envoy.aname=$aname envoy.port=$port envoy.bigmb=$big_mb${opts:+ envoy.opts=$opts}" \
        >"$work/$srv.run" 2>&1 || rc=$?
    grep -a '^ENVOY-GUEST-RESULT .* FAIL' "$work/$srv.console" | sed 's/^/  /' || true
    ((rc == 0)) || { say "$srv: guest run failed (rc $rc); console $work/$srv.console"; keep=1; }
    while read -r _ s t _; do secs[$srv.$s]="$t"; done < <(grep -a '^WL ' "$work/$srv.console" | tr -d '\r')
    kill "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
done

first="${servers[0]}"
printf '%-8s' step
for srv in "${servers[@]}"; do printf ' %10s' "$srv s"; done
for srv in "${servers[@]:1}"; do printf ' %16s' "$srv/$first time"; done
printf '\n'
for s in "${steps[@]}"; do
    printf '%-8s' "$s"
    for srv in "${servers[@]}"; do printf ' %10s' "${secs[$srv.$s]:--}"; done
    for srv in "${servers[@]:1}"; do
        printf ' %16s' "$(awk -v a="${secs[$first.$s]:-}" -v b="${secs[$srv.$s]:-}" 'BEGIN { if (a > 0 && b > 0) printf "%.2fx", b / a; else print "-" }')"
    done
    printf '\n'
done
say "ratio > 1: $first took less guest time than the other server"
