#!/usr/bin/env bash
# Real-client tests of envoyd: the Linux kernel's own 9P client (v9fs) in the QEMU test guest,
# mounted through envoy-shim over virtio-serial, plus Debian's diod tools (diodls, diodcat) as an
# independent client over TCP. Each scenario gets a fresh data directory; this script starts and
# stops envoyd itself and kills everything it started on exit.
#
# Usage: scripts/guest/envoy-tests.sh [options]        (root; scripts/install-deps.sh first)
#   --only LIST        comma-separated scenarios to run (default: posix-L,posix-u,multi,tree,crash,
#                      access,vsock,ctl,ivshmem,images,boot)
#                        posix-L  POSIX battery over 9P2000.L, then the diodls/diodcat check (d)
#                        posix-u  the same battery over 9P2000.u
#                        images   envoyctl forks a live image while a guest writes to it; a
#                                 second guest mounts the snapshot read-only and two forks of
#                                 it: they diverge; deleting forks and snapshot returns the
#                                 space (tests/images-host.sh)
#                        multi    two connections from one guest (the envoy.via mount and a
#                                 trans=tcp one): coherence, renames, locks, unlink, two writers
#                        tree     unpack a >= 5,000-file source tree, checksum, restart envoyd,
#                                 verify from a second boot, delete, store back to baseline
#                        crash    fsync'd writes, kill -9 envoyd mid-way, store check, restart,
#                                 a second boot verifies every file logged SYNCED
#                        vsock    envoy-shim over AF_VSOCK (QEMU vhost-user-vsock-pci +
#                                 vhost-device-vsock) to envoyd's vsock-uds listener: file ops,
#                                 peer CID seen by envoyd, files read back by diodcat over TCP
#                        ivshmem  envoy-shim as the frontend of a ring of envoyd's ring:FILE,
#                                 reached through QEMU's ivshmem-plain BAR (polling); the same
#                                 file operations, files read back by diodcat over TCP
#                        boot     import a busybox template, fork it twice, boot two guests
#                                 from the forks at once (root on Envoy via envoy-shim init),
#                                 twice; own changes kept, the other's absent, template intact;
#                                 storage traffic of both boots (scripts/guest/tests/boot-host.sh)
#                        access   credentials: a mount through an endpoint with no grant (a
#                                 socat relay from 127.0.0.2) fails; a grant appended to
#                                 /.access lets it mount read-only (EROFS on writes); symlinks
#                                 and `..` never leave the image (tests/access.sh in the guest;
#                                 diodls/diodcat walk `..` and a symlink on the server)
#                        ctl      the synthetic ctl tree (aname=ctl) mounted by the Linux client
#                                 (tests/ctl.sh: zero, null, version, stats, refusals), the
#                                 guest's reads counted by `envoyctl stats`, diodload against it
#   --server envoyd|diod   server under test (default envoyd; diod validates the scripts: it
#                      exports a plain directory, speaks only 9P2000.L and is reached over TCP)
#   --via shim|tcp     guest transport (default shim for envoyd: envoy-shim over virtio-serial;
#                      tcp: the kernel's trans=tcp through QEMU user networking)
#   --no-build         use the binaries already built
#   --keep             keep the work directory (data dirs, logs)
#   --verbose          copy guest consoles to stderr
#
# Prints a result line per check, each scenario's wall time, and finally "N passed, M failed";
# exits 0 only when nothing failed. Binaries: $CARGO_TARGET_DIR (default ./target).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
scripts="$(dirname "$here")"
repo="$(dirname "$scripts")"
tests="$here/tests"
target="${CARGO_TARGET_DIR:-$repo/target}"

only="posix-L,posix-u,multi,tree,crash,access,vsock,ctl,ivshmem,images,boot" server=envoyd via="" build=1 keep=0 verbose=()
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
while (($#)); do
    case "$1" in
    --only) only="$2"; shift 2 ;;
    --server) server="$2"; shift 2 ;;
    --via) via="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --keep) keep=1; shift ;;
    --verbose) verbose=(--verbose); shift ;;
    -h | --help) usage ;;
    *) echo "envoy-tests: unknown argument $1" >&2; usage ;;
    esac
done
[[ "$server" == envoyd || "$server" == diod ]] || usage
[[ -n "$via" ]] || { if [[ "$server" == envoyd ]]; then via=shim; else via=tcp; fi; }
[[ "$via" == shim || "$via" == tcp ]] || usage

say() { printf 'envoy-tests: %s\n' "$*"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

npass=0 nfail=0
failures=()
pass() { npass=$((npass + 1)); printf '  %s PASS %s\n' "$1" "${2:-}"; }
fail() { nfail=$((nfail + 1)); failures+=("$1"); printf '  %s FAIL %s\n' "$1" "${2:-}"; }

work="$(mktemp -d /tmp/envoy-tests.XXXXXX)"
declare -A servers=()     # pid -> what
guest_pids=()
cleanup() {
    local p
    for p in "${guest_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${!servers[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${!servers[@]}" "${guest_pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if ((keep)); then say "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------- build
t_all="$(now)"
"$scripts/install-deps.sh" >"$work/install-deps.log" 2>&1 || { cat "$work/install-deps.log"; say "install-deps failed"; exit 2; }
tree_tar="$(sed -n 's/^install-deps: source tree: \([^ ]*\) .*/\1/p' "$work/install-deps.log" | tail -1)"
envoyd_bin="$target/release/envoyd"
storaged_bin="$target/release/envoy-storaged"
envoyctl_bin="$target/release/envoyctl"
shim_bin="$target/x86_64-unknown-linux-gnu/release/envoy-shim"
if [[ "$server" == envoyd ]] && ((build)); then
    t0="$(now)"
    say "building envoyd, envoy-storaged (release) and the static envoy-shim"
    (cd "$repo" && cargo build --release --locked -q -p dom0-envoyd --bin envoyd --bin envoyctl \
        && cargo build --release --locked -q -p envoy-storage --bin envoy-storaged) || { say "build failed"; exit 2; }
    if [[ "$via" == shim ]]; then
        (cd "$repo" && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked -q \
            -p guest-shim --bin envoy-shim --target x86_64-unknown-linux-gnu) || { say "envoy-shim build failed"; exit 2; }
    fi
    say "build: $(elapsed "$t0" "$(now)") s"
fi
if [[ "$server" == envoyd ]]; then
    for b in "$envoyd_bin" "$storaged_bin"; do [[ -x "$b" ]] || { say "missing $b"; exit 2; }; done
fi
shim_add=()
if [[ "$via" == shim ]]; then
    [[ "$server" == envoyd ]] || { say "--via shim needs --server envoyd"; exit 2; }
    [[ -x "$shim_bin" ]] || { say "missing $shim_bin"; exit 2; }
    if file "$shim_bin" | grep -q 'dynamically linked'; then say "$shim_bin is not static"; exit 2; fi
    # Without debug info the initramfs is ~13 MB smaller.
    strip -o "$work/envoy-shim" "$shim_bin"
    shim_add=(--add "$work/envoy-shim:/bin/envoy-shim")
fi

# ---------------------------------------------------------------- server control
# start_server NAME DATA: starts the server on DATA; sets srv_pid, srv_port, srv_sock, aname.
srv_pid="" srv_port="" srv_sock="" aname="" srv_extra=()
start_server() {
    local name="$1" data="$2"
    srv_port="$(free_port)"
    srv_sock="$work/$name.sock"
    rm -f "$srv_sock"
    if [[ "$server" == envoyd ]]; then
        "$envoyd_bin" --data "$data" --listen "tcp:127.0.0.1:$srv_port" --listen "unix:$srv_sock" \
            "${srv_extra[@]}" >>"$work/$name.envoyd.log" 2>&1 &
        srv_pid=$!
        aname=/default
    else
        mkdir -p "$data"
        diod -f -n -d 0 -L "$work/$name.diod.log" -e "$data" -l "127.0.0.1:$srv_port" &
        srv_pid=$!
        aname="$data"
    fi
    servers[$srv_pid]="$server $name"
    for _ in $(seq 100); do
        if port_open "$srv_port" && { [[ "$server" == diod ]] || [[ -S "$srv_sock" ]]; }; then return 0; fi
        kill -0 "$srv_pid" 2>/dev/null || break
        sleep 0.1
    done
    say "$server did not come up for $name:"
    tail -20 "$work/$name."*.log 2>/dev/null || true
    return 1
}
# stop_server [SIGNAL]: SIGTERM (default) and wait, or SIGKILL.
stop_server() {
    local sig="${1:-TERM}"
    [[ -n "$srv_pid" ]] || return 0
    kill "-$sig" "$srv_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$srv_pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$srv_pid" 2>/dev/null && { say "server $srv_pid ignored SIG$sig for 10 s, killing"; kill -9 "$srv_pid" 2>/dev/null || true; }
    local rc=0
    { wait "$srv_pid"; } 2>/dev/null || rc=$? # braces: no "Killed" job notice
    unset "servers[$srv_pid]"
    srv_pid=""
    return "$rc"
}

# store_counts DATA: "OBJECTS BYTES" of the store: envoy-storaged check's object count and
# object bytes (envoyd), or regular files and their bytes (diod's plain directory).
store_counts() {
    if [[ "$server" == envoyd ]]; then
        "$storaged_bin" check "$1" 2>/dev/null | sed -n 's/^ *\([0-9]*\) objects .*, \([0-9]*\) bytes$/\1 \2/p' | head -1
    else
        find "$1" -type f -printf '%s\n' | awk '{ n++; b += $1 } END { print n + 0, b + 0 }'
    fi
}
store_figures() {
    local c
    c="$(store_counts "$1")"
    printf '%s objects, %s object bytes (du -sb %s)' "${c% *}" "${c#* }" "$(du -sb "$1" | cut -f1)"
}
# store_check NAME DATA: `envoy-storaged check` must call the store clean (envoyd only).
store_check() {
    local name="$1" data="$2"
    [[ "$server" == envoyd ]] || return 0
    local out rc=0
    out="$("$storaged_bin" check "$data" 2>&1)" || rc=$?
    printf '%s\n' "$out" >"$work/$name.check.txt"
    if ((rc == 0)); then pass "$name-store-check" "$(echo "$out" | tail -1 | cut -c1-200)"; else
        fail "$name-store-check" "rc=$rc $(echo "$out" | tail -3 | tr '\n' ' ' | cut -c1-300)"; fi
}

# guest NAME SCRIPT TIMEOUT [run.sh args...]: boots a guest against the running server and
# copies its results into the summary; the console log ends up in $work/NAME.log.
guest() {
    local name="$1" script="$2" timeout="$3"
    shift 3
    local net=() append="envoy.server=$server envoy.via=$via envoy.version=${version:-9p2000.L} envoy.aname=$aname envoy.port=$srv_port${opts:+ envoy.opts=$opts}"
    if [[ "$via" == shim ]]; then net=(--virtio-serial-socket "$srv_sock"); else net=(--netdev-user); fi
    local rc=0
    # In the background and waited for, so a signal to this script reaches the trap at once.
    "$here/run.sh" --script "$script" --add "$tests/mount.sh:/test/mount.sh" "${shim_add[@]}" \
        "${net[@]}" --timeout "$timeout" --log "$work/$name.log" --append "$append" "${verbose[@]}" "$@" \
        >"$work/$name.run" 2>&1 &
    local pid=$!
    guest_pids+=("$pid")
    wait "$pid" || rc=$?
    summarize "$name" "$rc"
    return "$rc"
}
summarize() {
    local name="$1" rc="$2" line n v d
    while read -r line; do
        n="$(cut -d' ' -f2 <<<"$line")" v="$(cut -d' ' -f3 <<<"$line")" d="$(cut -d' ' -f4- <<<"$line")"
        if [[ "$v" == PASS ]]; then pass "$name/$n" "$d"; else fail "$name/$n" "$d"; fi
    done < <(grep -a '^ENVOY-GUEST-RESULT ' "$work/$name.log" | tr -d '\r')
    grep -a '^run.sh: \(boot\|script\|timeout\|QEMU\)' "$work/$name.run" | sed 's/^/  /' || true
    if [[ "$rc" != 0 ]] && ! grep -aq "^ENVOY-GUEST-RESULT .* FAIL" "$work/$name.log"; then
        fail "$name/guest-exit" "run.sh rc=$rc (124 timeout, 125 QEMU died); log $work/$name.log"
        tail -15 "$work/$name.log" | sed 's/^/    | /'
    fi
}

# ---------------------------------------------------------------- scenarios
scenario_posix() {
    local v="$1" name="posix-${1#9p2000.}"
    local version="$v"
    if [[ "$server" == diod && "$v" == 9p2000.u ]]; then say "$name: skipped (diod speaks only 9P2000.L)"; return 0; fi
    local data="$work/$name.data"
    start_server "$name" "$data" || { fail "$name/server-start"; return 0; }
    guest "$name" "$tests/posix.sh" 400 || true
    if [[ "$v" == 9p2000.L ]]; then independent_client "$name"; fi
    stop_server || fail "$name/server-exit" "envoyd exited non-zero after SIGTERM"
    store_check "$name" "$data"
}

# Two 9P sessions on one image from one guest (the second over trans=tcp via QEMU user net).
scenario_multi() {
    local data="$work/multi.data" version=9p2000.L extra=()
    [[ "$via" == shim ]] && extra=(--netdev-user)
    start_server multi "$data" || { fail "multi/server-start"; return 0; }
    guest multi "$tests/multi.sh" 300 "${extra[@]}" || true
    stop_server || fail "multi/server-exit" "non-zero exit after SIGTERM"
    store_check multi "$data"
}

# (d) Debian's diodls/diodcat read what the guest left in keep/ over TCP.
independent_client() {
    local name="$1" log="$work/$1.log" f want got
    local srv="127.0.0.1:$srv_port"
    got="$(timeout 30 diodls -s "$srv" -a "$aname" keep 2>&1 | tr -d '\r' | sort | tr '\n' ' ')" || true
    if [[ "$got" == "blob hello nested seq " ]]; then pass "diodls-keep"; else fail "diodls-keep" "want 'blob hello nested seq', got '$got'"; fi
    got="$(timeout 30 diodls -s "$srv" -a "$aname" keep/nested/deeper 2>&1 | tr '\n' ' ')" || true
    if [[ "$got" == "leaf " ]]; then pass "diodls-nested"; else fail "diodls-nested" "want 'leaf', got '$got'"; fi
    local nkeep=0
    while read -r _ f want; do
        nkeep=$((nkeep + 1))
        got="$(timeout 30 diodcat -s "$srv" -a "$aname" "keep/$f" 2>"$work/diodcat.err" | sha256sum | cut -d' ' -f1)" || true
        if [[ "$got" == "$want" ]]; then pass "diodcat-$f"; else fail "diodcat-$f" "sha256 want $want got $got $(head -c 200 "$work/diodcat.err")"; fi
    done < <(grep -a '^KEEP ' "$log" | tr -d '\r')
    ((nkeep == 4)) || fail "diodcat-keep-lines" "guest logged $nkeep KEEP lines, want 4"
    got="$(timeout 30 diodcat -s "$srv" -a "$aname" keep/seq 2>/dev/null | tail -1)" || true
    if [[ "$got" == 2000 ]]; then pass "diodcat-seq-content"; else fail "diodcat-seq-content" "last line '$got'"; fi
    if timeout 30 diodcat -s "$srv" -a "$aname" keep/missing >/dev/null 2>&1; then fail "diodcat-missing" "reading a missing file succeeded"; else pass "diodcat-missing"; fi
}

# (b) a real source tree, across a server restart, then deleted: the store returns to baseline.
scenario_tree() {
    local name=tree data="$work/tree.data" version=9p2000.L
    # The kernel's dentry/attribute cache: without it every path component of every file is
    # re-walked and re-stat'ed (~37 requests per file of this tree, 2-3 files/s under TCG).
    # Reads in the first boot may come from its page cache; the second boot reads from the server.
    local opts=cache=loose
    [[ -n "$tree_tar" && -f "$tree_tar" && -f "$tree_tar.sha256" ]] || { fail "tree/source" "install-deps made no source tree tar"; return 0; }
    local nfiles
    nfiles="$(wc -l <"$tree_tar.sha256")"
    start_server tree "$data" || { fail "tree/server-start"; return 0; }
    stop_server || true
    local base base_objs base_bytes
    base="$(store_counts "$data")"
    base_objs="${base% *}" base_bytes="${base#* }"
    say "tree: $(basename "$tree_tar"): $nfiles files; store baseline: $(store_figures "$data")"
    start_server tree "$data" || { fail "tree/server-start-2"; return 0; }
    guest tree-unpack "$tests/tree-unpack.sh" 900 --mem 1024 \
        --add "$tree_tar:/test/tree.tar" --add "$tree_tar.sha256:/test/tree.sha256" || true
    grep -a '^tree:' "$work/tree-unpack.log" | tr -d '\r' | sed 's/^/  /' || true
    stop_server || fail "tree/server-exit" "non-zero exit after SIGTERM"
    say "tree: after unpack: store $(store_figures "$data")"
    store_check tree-after-unpack "$data"
    start_server tree "$data" || { fail "tree/server-restart"; return 0; }
    guest tree-verify "$tests/tree-verify.sh" 900 --mem 1024 --add "$tree_tar.sha256:/test/tree.sha256" || true
    grep -a '^tree:' "$work/tree-verify.log" | tr -d '\r' | sed 's/^/  /' || true
    stop_server || fail "tree/server-exit-2" "non-zero exit after SIGTERM"
    local end end_objs end_bytes
    end="$(store_counts "$data")"
    end_objs="${end% *}" end_bytes="${end#* }"
    say "tree: after delete: store $(store_figures "$data")"
    store_check tree-after-delete "$data"
    # Near baseline: two objects and 64 KiB of slack (e.g. a directory block that grew).
    if [[ -n "$end_objs" && -n "$base_objs" ]] && ((end_objs <= base_objs + 2 && end_bytes <= base_bytes + 65536)); then
        pass "tree/store-back-to-baseline" "objects $base_objs -> $end_objs, bytes $base_bytes -> $end_bytes"
    else
        fail "tree/store-back-to-baseline" "objects $base_objs -> $end_objs, bytes $base_bytes -> $end_bytes (the deleted $nfiles-file tree was not reclaimed)"
    fi
}

# (c) crash: kill -9 the server while the guest writes and fsyncs; every SYNCED file survives.
scenario_crash() {
    local name=crash data="$work/crash.data" version=9p2000.L
    start_server crash "$data" || { fail "crash/server-start"; return 0; }
    local kill_after=$((15 + RANDOM % 40))
    local net=() append="envoy.server=$server envoy.via=$via envoy.version=$version envoy.aname=$aname envoy.port=$srv_port"
    if [[ "$via" == shim ]]; then net=(--virtio-serial-socket "$srv_sock"); else net=(--netdev-user); fi
    local log="$work/crash.log"
    : >"$log"
    "$here/run.sh" --script "$tests/crash-writer.sh" --add "$tests/mount.sh:/test/mount.sh" "${shim_add[@]}" \
        "${net[@]}" --timeout 400 --log "$log" --append "$append" "${verbose[@]}" >"$work/crash.run" 2>&1 &
    local runpid=$!
    guest_pids+=("$runpid")
    local synced=0
    for _ in $(seq 3000); do
        synced="$(grep -ac '^SYNCED ' "$log" || true)"
        ((synced >= kill_after)) && break
        kill -0 "$runpid" 2>/dev/null || break
        sleep 0.1
    done
    if ((synced < kill_after)); then
        fail "crash/writer" "the guest synced only $synced files (wanted $kill_after before the kill)"
        tail -15 "$log" | sed 's/^/    | /'
        stop_server KILL || true
        kill "$runpid" 2>/dev/null || true
        wait "$runpid" 2>/dev/null || true
        return 0
    fi
    stop_server KILL || true
    say "crash: kill -9 after $synced SYNCED lines (target $kill_after)"
    # The guest's writer now fails or blocks; give it a moment to report, then stop QEMU.
    for _ in $(seq 100); do kill -0 "$runpid" 2>/dev/null || break; grep -aq '^crash: writer stopped' "$log" && break; sleep 0.1; done
    local q
    q="$(pgrep -P "$runpid" -x qemu-system-x86 || true)"
    [[ -n "$q" ]] && kill "$q" 2>/dev/null || true
    wait "$runpid" 2>/dev/null || true
    grep -a '^crash:' "$log" | tr -d '\r' | sed 's/^/  /' || true
    store_check crash-after-kill "$data"
    start_server crash "$data" || { fail "crash/server-restart" "$(tail -5 "$work/crash.envoyd.log" 2>/dev/null | tr '\n' ' ')"; return 0; }
    # Verify from a second boot (diodcat needs Tauth answered the diod way; see (d)).
    grep -a '^SYNCED ' "$log" | tr -d '\r' | awk 'length($3) == 64 { print $3 "  " $2 }' >"$work/crash.synced"
    say "crash: $(wc -l <"$work/crash.synced") files logged SYNCED"
    guest crash-verify "$tests/crash-verify.sh" 300 --add "$work/crash.synced:/test/synced.sha256" || true
    stop_server || fail "crash/server-exit" "non-zero exit after SIGTERM"
    store_check crash-after-restart "$data"
}

# Credentials with the real Linux client (tests/access.sh) plus server-side escape checks.
scenario_access() {
    [[ "$server" == envoyd ]] || { say "access: skipped (envoyd's credentials)"; return 0; }
    local data="$work/access.data" version=9p2000.L
    start_server access "$data" || { fail "access/server-start"; return 0; }
    local relay_port relay_pid
    relay_port="$(free_port)"
    # Connections through the relay reach envoyd from 127.0.0.2, which no default grant names.
    socat "TCP-LISTEN:$relay_port,bind=127.0.0.1,reuseaddr,fork" "TCP:127.0.0.1:$srv_port,bind=127.0.0.2" \
        2>>"$work/access.socat.log" &
    relay_pid=$!
    servers[$relay_pid]="socat relay"
    for _ in $(seq 50); do port_open "$relay_port" && break; sleep 0.1; done
    echo "$relay_port" >"$work/relay-port"
    # envoy_mount (the shim) attaches the administrative root; the image goes over trans=tcp.
    local aname=/
    guest access "$tests/access.sh" 240 --netdev-user --add "$work/relay-port:/test/relay-port" || true
    local srv="127.0.0.1:$srv_port" got
    # Server side: `..` at the attach root is the root itself (a Twalk of "..", which the
    # Linux client never sends), and a symlink is never followed or opened by the server.
    got="$(timeout 30 diodls -s "$srv" -a /default ../.. 2>&1 | tr -d '\r' | sort | tr '\n' ' ')" || true
    if [[ " $got " == *" marker "* && " $got " != *" .access "* && " $got " != *" default "* ]]; then
        pass "access/server-dotdot-stays-in-image" "$got"
    else
        fail "access/server-dotdot-stays-in-image" "diodls /default/../.. listed '$got'"
    fi
    for p in pw up/etc/passwd; do
        got="$(timeout 30 diodcat -s "$srv" -a /default "$p" 2>&1)" && rc=0 || rc=$?
        if ((rc != 0)) && ! grep -qxF "$(head -1 /etc/passwd)" <<<"$got"; then
            pass "access/server-no-symlink-follow-$p"
        else
            fail "access/server-no-symlink-follow-$p" "diodcat $p rc=$rc: $(head -c 200 <<<"$got")"
        fi
    done
    kill "$relay_pid" 2>/dev/null || true
    wait "$relay_pid" 2>/dev/null || true
    unset "servers[$relay_pid]"
    stop_server || fail "access/server-exit" "non-zero exit after SIGTERM"
    grep -a 'attach refused' "$work/access.envoyd.log" | head -3 | sed 's/\x1b\[[0-9;]*m//g; s/^/  envoyd: /' || true
    store_check access "$data"
}

# shellcheck source=tests/boot-host.sh
. "$tests/boot-host.sh"
# shellcheck source=tests/images-host.sh
. "$tests/images-host.sh"

# vsock: guest envoy-shim -> AF_VSOCK -> QEMU vhost-user-vsock-pci -> vhost-device-vsock (hybrid
# vsock: guest port P becomes a connection to <uds_path>_P) -> envoyd --listen vsock-uds:CID:PATH.
scenario_vsock() {
    local name=vsock data="$work/vsock.data" cid=3 vport=5640
    local vdv="$scripts/.cache/vhost-device-vsock/bin/vhost-device-vsock" uds="$work/vm.vsock"
    local vhost="$work/vhost-vsock.sock"
    if [[ "$server" != envoyd || "$via" != shim ]]; then say "vsock: skipped (needs envoyd and envoy-shim)"; return 0; fi
    [[ -x "$vdv" ]] || { fail "vsock/backend" "missing $vdv (scripts/install-deps.sh builds it)"; return 0; }
    srv_extra=(--listen "vsock-uds:$cid:${uds}_$vport")
    start_server vsock "$data" || { srv_extra=(); fail "vsock/server-start"; return 0; }
    srv_extra=()
    # A vsock guest holds no credentials by default (only this host's root and loopback do).
    "$envoyctl_bin" --data "$data" grant / "vsock:cid=$cid mount-rw any" >>"$work/vsock.envoyctl.log" 2>&1 \
        || fail "vsock/grant" "$(tail -3 "$work/vsock.envoyctl.log" | tr '\n' ' ')"
    "$vdv" --guest-cid "$cid" --socket "$vhost" --uds-path "$uds" >"$work/vsock.vdv.log" 2>&1 &
    local vpid=$!
    servers[$vpid]="vhost-device-vsock"
    for _ in $(seq 100); do [[ -S "$vhost" ]] && break; sleep 0.1; done
    if [[ -S "$vhost" ]]; then
        local rc=0
        "$here/run.sh" --script "$tests/vsock.sh" "${shim_add[@]}" --vhost-user-vsock "$vhost" \
            --timeout 180 --log "$work/vsock.log" --append "envoy.vport=$vport envoy.aname=$aname" \
            "${verbose[@]}" >"$work/vsock.run" 2>&1 &
        local pid=$!
        guest_pids+=("$pid")
        wait "$pid" || rc=$?
        summarize vsock "$rc"
        if grep -aq "peer.*vsock:cid=$cid" "$work/vsock.envoyd.log"; then pass "vsock/peer-cid" "envoyd saw vsock:cid=$cid"; else
            fail "vsock/peer-cid" "no connection from vsock:cid=$cid in the envoyd log"; fi
        readback_keep vsock VSOCK-KEEP
    else
        fail "vsock/backend-start" "$(tail -5 "$work/vsock.vdv.log" | tr '\n' ' ')"
    fi
    kill "$vpid" 2>/dev/null || true
    wait "$vpid" 2>/dev/null || true
    unset "servers[$vpid]"
    stop_server || fail "vsock/server-exit" "non-zero exit after SIGTERM"
    store_check vsock "$data"
}

# The synthetic ctl tree (aname=ctl) through the Linux client (tests/ctl.sh), the guest's
# requests seen in `envoyctl stats`, and Debian's diodload run against it.
scenario_ctl() {
    [[ "$server" == envoyd ]] || { say "ctl: skipped (envoyd's ctl tree and envoyctl)"; return 0; }
    local data="$work/ctl.data" version=9p2000.L reads out
    start_server ctl "$data" || { fail "ctl/server-start"; return 0; }
    aname=ctl guest ctl "$tests/ctl.sh" 200 || true
    reads="$("$envoyctl_bin" --data "$data" stats 2>&1 | awk '$1 == "Tread" { print $2 }')"
    if [[ "${reads:-0}" -ge 512 ]]; then pass "ctl/envoyctl-stats" "$reads Treads counted"; else
        fail "ctl/envoyctl-stats" "want >= 512 Treads (2 x 16 MiB of zero), got '${reads}'"; fi
    out="$(timeout 60 diodload -s "127.0.0.1:$srv_port" -n 2 -r 2 2>&1)" || true
    if grep -q '[1-9][0-9]* ops/s' <<<"$out" && ! grep -q error <<<"$out"; then pass "ctl/diodload" "$(tail -1 <<<"$out")"; else
        fail "ctl/diodload" "$(tr '\n' ' ' <<<"$out" | cut -c1-300)"; fi
    stop_server || fail "ctl/server-exit" "non-zero exit after SIGTERM"
    store_check ctl "$data"
}

# readback_keep NAME MARK: diodcat (TCP) reads each file the guest logged as "MARK file sha256".
readback_keep() {
    local name="$1" mark="$2" f want got n=0
    while read -r _ f want; do
        n=$((n + 1))
        got="$(timeout 30 diodcat -s "127.0.0.1:$srv_port" -a "$aname" "keep/$f" 2>/dev/null | sha256sum | cut -d' ' -f1)" || true
        if [[ "$got" == "$want" ]]; then pass "$name/diodcat-$f"; else fail "$name/diodcat-$f" "sha256 want $want got $got"; fi
    done < <(grep -a "^$mark " "$work/$name.log" | tr -d '\r')
    ((n == 2)) || fail "$name/keep-lines" "guest logged $n $mark lines, want 2"
}

# ivshmem: envoyd --listen ring:FILE (a /dev/shm file); QEMU's ivshmem-plain device shows FILE as
# BAR 2; the guest's envoy-shim claims a ring as its frontend (polling: ivshmem-plain has no
# interrupts and a futex wake does not cross the VM boundary).
scenario_ivshmem() {
    local name=ivshmem data="$work/ivshmem.data" shm=/dev/shm
    if [[ "$server" != envoyd || "$via" != shim ]]; then say "ivshmem: skipped (needs envoyd and envoy-shim)"; return 0; fi
    [[ -d "$shm" && -w "$shm" ]] || shm="$work"
    local ring="$shm/envoy-tests-ivshmem-$$"
    rm -f "$ring"
    srv_extra=(--listen "ring:$ring")
    start_server ivshmem "$data" || { srv_extra=(); fail "ivshmem/server-start"; return 0; }
    srv_extra=()
    for _ in $(seq 50); do [[ -s "$ring" ]] && break; sleep 0.1; done
    # The ring file is a principal like any endpoint: grant it the image.
    "$envoyctl_bin" --data "$data" grant / "ring:$ring mount-rw any" >>"$work/ivshmem.envoyctl.log" 2>&1 \
        || fail "ivshmem/grant" "$(tail -3 "$work/ivshmem.envoyctl.log" | tr '\n' ' ')"
    # A PCI BAR is a power of two: pad the file (rings first, padding ignored) to the next one.
    local size p2=4096
    size="$(stat -c %s "$ring")"
    while ((p2 < size)); do p2=$((p2 * 2)); done
    truncate -s "$p2" "$ring"
    local rc=0
    "$here/run.sh" --script "$tests/ivshmem.sh" --add "$tests/vsock.sh:/test/vsock.sh" "${shim_add[@]}" \
        --ivshmem "$ring" --timeout 240 --log "$work/ivshmem.log" --append "envoy.aname=$aname" \
        "${verbose[@]}" >"$work/ivshmem.run" 2>&1 &
    local pid=$!
    guest_pids+=("$pid")
    wait "$pid" || rc=$?
    summarize ivshmem "$rc"
    if grep -aq "peer.*ring:$ring" "$work/ivshmem.envoyd.log"; then pass "ivshmem/peer" "envoyd saw ring:$ring"; else
        fail "ivshmem/peer" "no connection from ring:$ring in the envoyd log"; fi
    readback_keep ivshmem IVSHMEM-KEEP
    stop_server || fail "ivshmem/server-exit" "non-zero exit after SIGTERM"
    store_check ivshmem "$data"
    rm -f "$ring"
}

IFS=, read -r -a wanted <<<"$only"
declare -A timing=()
for s in "${wanted[@]}"; do
    t0="$(now)"
    say "=== $s ($server, via $via)"
    case "$s" in
    posix-L) scenario_posix 9p2000.L ;;
    posix-u) scenario_posix 9p2000.u ;;
    multi) scenario_multi ;;
    tree) scenario_tree ;;
    crash) scenario_crash ;;
    vsock) scenario_vsock ;;
    ivshmem) scenario_ivshmem ;;
    boot) scenario_boot ;;
    ctl) scenario_ctl ;;
    images) scenario_images ;;
    access) scenario_access ;;
    *) say "unknown scenario $s"; exit 2 ;;
    esac
    timing[$s]="$(elapsed "$t0" "$(now)")"
    say "=== $s: ${timing[$s]} s"
done
for s in "${wanted[@]}"; do say "time $s: ${timing[$s]} s"; done
say "total $(elapsed "$t_all" "$(now)") s"
((nfail == 0)) || say "failed: ${failures[*]}"
echo "$npass passed, $nfail failed"
((nfail == 0))
