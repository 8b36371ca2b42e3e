# shellcheck shell=bash
# The `boot` scenario of scripts/guest/envoy-tests.sh (sourced by it; uses its helpers and
# variables): guests whose root file system is a fork of one template image.
#
#  1. scripts/guest/build-template.sh: the busybox template (tar.gz) and the boot initramfs
#     (modules + static envoy-shim as init);
#  2. `envoyctl image import` of the archive as /templates/busybox, then `envoyctl image fork`
#     into /guests/g1 and /guests/g2;
#  3. first boot: g1 and g2 concurrently (envoy-shim init over virtio-serial, root = the fork),
#     each changes its root (boot-write.sh: a package, /etc files, logs, data) and powers off
#     cleanly through busybox init;
#  4. second boot: both again, concurrently; each finds its own changes and not the other's
#     (boot-verify.sh);
#  5. the template's files are unchanged (read back over 9P with diodcat/diodls);
#  6. storage traffic (envoyd <-> object store, `envoyctl --json stats`) of each round and the
#     kernel-to-workload boot times (one envoyd for steps 2-6, so the second boot meets its
#     memory cache);
#  7. Table 6.2 of the dissertation (boot_table): a restarted envoyd (cold cache) boots guest
#     "first" from its own fork, then guest "second" from another fork (hot cache), both
#     running boot-fresh.sh; store traffic of each, the ratio, and per object from envoyd's
#     store trace (RUST_LOG=envoy::store=trace).

# boot_ctl ARGS...: envoyctl against the running server.
boot_ctl() { "$target/release/envoyctl" --control "$boot_data/control.sock" "$@"; }

# boot_traffic: "READ_REQUESTS READ_BYTES WRITE_REQUESTS WRITE_BYTES" of the store so far.
boot_traffic() {
    boot_ctl --json stats 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)["storage"]
print(s["read_requests"], s["read_bytes"], s["write_requests"], s["write_bytes"])'
}

# boot_round ROUND SCRIPT GUEST...: boots the guests (/guests/GUEST each) at once running
# SCRIPT; results into the summary.
boot_round() {
    local round="$1" script="$2" g other pids=() names=() i
    shift 2
    for g in "$@"; do
        case "$g" in g1) other=g2 ;; g2) other=g1 ;; *) other=none ;; esac
        local name="boot-$round-$g"
        "$here/run.sh" --initrd "$boot_initramfs" --virtio-serial-socket "$srv_sock" --timeout 240 \
            --log "$work/$name.log" "${verbose[@]}" \
            --append "envoy.image=/guests/$g envoy.transport=serial:envoy envoy.guest=$g envoy.other=$other envoy.workload=/usr/lib/envoy-tests/$script envoy.onfail=poweroff" \
            >"$work/$name.run" 2>&1 &
        pids+=($!)
        names+=("$name")
        guest_pids+=($!)
    done
    for i in "${!pids[@]}"; do
        local rc=0
        wait "${pids[$i]}" || rc=$?
        summarize "${names[$i]}" "$rc"
        # A clean shutdown: busybox init ran its shutdown actions and the kernel powered off.
        if grep -aq 'reboot: Power down' "$work/${names[$i]}.log"; then
            pass "${names[$i]}/clean-poweroff"
        else
            fail "${names[$i]}/clean-poweroff" "no 'reboot: Power down' on the console"
        fi
        grep -a 'envoy-shim init:' "$work/${names[$i]}.log" | tr -d '\r' | sed 's/^/    | /' || true
    done
}

# boot_delta BEFORE AFTER: the difference of two boot_traffic lines.
boot_delta() { awk -v a="$1" -v b="$2" 'BEGIN { split(a, x); split(b, y); print y[1]-x[1], y[2]-x[2], y[3]-x[3], y[4]-x[4] }'; }

# boot_log_lines LOG: lines in envoyd's log so far (the store trace is cut per boot by these).
boot_log_lines() { wc -l <"$1"; }

# boot_store_reads LOG FIRST_START FIRST_END SECOND_END [LABEL1 LABEL2]: from envoyd's store trace
# (RUST_LOG=envoy::store=trace; LOG lines FIRST_START..FIRST_END are the first boot, up to
# SECOND_END the second; optional labels for the two), the bytes each object gave each boot,
# what the object is (a file's name, or a directory: from the cache-miss line, wherever in
# LOG), and whether the other boot read it too.
boot_store_reads() {
    python3 - "$@" <<'PY'
import re, sys
path, a, b, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
names = (sys.argv[5:7] + ["first image", "second image"][len(sys.argv[5:7]):])
ansi = re.compile(r"\x1b\[[0-9;]*m")
lines = [ansi.sub("", l) for l in open(path, errors="replace").read().splitlines()]
what, boots = {}, [{}, {}]
for i, l in enumerate(lines):
    m = re.search(r"envoy::store: (store read|file read from store|directory read from store) (.*)", l)
    if not m:
        continue
    f = dict(re.findall(r"(\w+)=(\S+)", m.group(2)))
    oid = f.get("id", "?")
    if m.group(1) == "store read":
        if not a <= i < c:
            continue
        n = boots[0 if i < b else 1].setdefault(oid, [0, 0])
        n[0] += 1
        n[1] += int(f.get("bytes", 0))
    elif m.group(1) == "directory read from store":
        what[oid] = "directory"
    else:
        nm = re.search(r"name=(.*) size=", m.group(2))
        what[oid] = "file " + (nm.group(1) if nm else "?") + " (" + f.get("size", "?") + " B)"
for label, boot, other in ((names[0], boots[0], boots[1]), (names[1], boots[1], boots[0])):
    total = sum(v[1] for v in boot.values())
    both = sum(v[1] for o, v in boot.items() if o in other)
    print(f"{label}: {len(boot)} objects, {sum(v[0] for v in boot.values())} reads, {total} bytes; "
          f"{both} bytes from objects the other boot also read")
    for oid, (n, by) in sorted(boot.items(), key=lambda kv: -kv[1][1])[:12]:
        print(f"  {label}: {by:>9} B {n:>4} reads  {oid:<8} {what.get(oid, '?')}{'  (also read by the other boot)' if oid in other else ''}")
PY
}

# boot_uptime NAME: the guest's uptime when its workload started (kernel start -> workload).
boot_uptime() { grep -ao 'ENVOY-GUEST-BEGIN uptime=[0-9.]*' "$work/$1.log" | head -1 | cut -d= -f2; }

# boot_template_view: what the template holds where the guests wrote, as read over 9P.
boot_template_view() {
    local srv="127.0.0.1:$srv_port" a=/templates/busybox f
    for f in etc/hostname etc/passwd etc/os-release var/log/boot.log var/lib/pkgs/hello usr/bin/hello; do
        printf '%s: %s\n' "$f" "$(timeout 30 diodcat -s "$srv" -a "$a" "$f" 2>&1 | sha256sum | cut -c1-16)"
    done
    for f in etc var/log var/lib/pkgs root usr/bin; do
        printf '%s/: %s\n' "$f" "$(timeout 30 diodls -s "$srv" -a "$a" "$f" 2>&1 | sort | sha256sum | cut -c1-16)"
    done
}

scenario_boot() {
    boot_data="$work/boot.data"
    if [[ "$server" != envoyd || "$via" != shim ]]; then
        say "boot: skipped (needs --server envoyd --via shim)"
        return 0
    fi
    if ((build)); then
        (cd "$repo" && cargo build --release --locked -q -p dom0-envoyd --bin envoyctl) || { fail "boot/build-envoyctl"; return 0; }
    fi
    [[ -x "$target/release/envoyctl" ]] || { fail "boot/envoyctl" "missing $target/release/envoyctl"; return 0; }
    local out
    if ! out="$("$here/build-template.sh" --shim "$work/envoy-shim" --out "$work/template" 2>"$work/boot-template.err")"; then
        fail "boot/build-template" "$(tail -3 "$work/boot-template.err" | tr '\n' ' ')"
        return 0
    fi
    sed 's/^/  /' "$work/boot-template.err"
    local tarball
    tarball="$(sed -n 's/^tar //p' <<<"$out")"
    boot_initramfs="$(sed -n 's/^initramfs //p' <<<"$out")"
    local -x RUST_LOG="info,envoy::store=trace" NO_COLOR=1
    start_server boot "$boot_data" || { fail "boot/server-start"; return 0; }

    local t0 rc=0
    t0="$(now)"
    if boot_ctl image import "$tarball" /templates/busybox >"$work/boot-import.out" 2>"$work/boot-import.err"; then
        pass "boot/import" "$(tail -1 "$work/boot-import.out") in $(elapsed "$t0" "$(now)") s"
    else
        fail "boot/import" "$(tail -2 "$work/boot-import.err" | tr '\n' ' ')"
        stop_server || true
        return 0
    fi
    for g in g1 g2 first second; do
        if boot_ctl image fork /templates/busybox "/guests/$g" >"$work/boot-fork-$g.out" 2>&1; then
            pass "boot/fork-$g"
        else
            fail "boot/fork-$g" "$(tail -2 "$work/boot-fork-$g.out" | tr '\n' ' ')"
            stop_server || true
            return 0
        fi
    done
    boot_template_view >"$work/boot-template-before.txt"

    local t_a t_b t_c l_a l_b l_c log="$work/boot.envoyd.log"
    t_a="$(boot_traffic)" l_a="$(boot_log_lines "$log")"
    boot_round 1 boot-write.sh g1 g2
    t_b="$(boot_traffic)" l_b="$(boot_log_lines "$log")"
    boot_round 2 boot-verify.sh g1 g2
    t_c="$(boot_traffic)" l_c="$(boot_log_lines "$log")"

    boot_template_view >"$work/boot-template-after.txt"
    if cmp -s "$work/boot-template-before.txt" "$work/boot-template-after.txt" \
        && ! grep -q 'g1\|g2' "$work/boot-template-after.txt"; then
        pass "boot/template-unchanged" "$(wc -l <"$work/boot-template-after.txt") paths compared"
    else
        fail "boot/template-unchanged" "$(diff "$work/boot-template-before.txt" "$work/boot-template-after.txt" | tr '\n' ' ' | cut -c1-300)"
    fi

    # Table 6.2: storage traffic of the first and the second boot (both guests, one envoyd).
    read -r r1 b1 w1 wb1 <<<"$(boot_delta "$t_a" "$t_b")"
    read -r r2 b2 w2 wb2 <<<"$(boot_delta "$t_b" "$t_c")"
    say "boot: storage traffic, first boot (g1+g2): $r1 reads / $b1 bytes, $w1 writes / $wb1 bytes"
    say "boot: storage traffic, second boot (g1+g2): $r2 reads / $b2 bytes, $w2 writes / $wb2 bytes"
    if [[ -n "$b1" && "$b1" -gt 0 ]]; then
        say "boot: second boot read $(awk -v a="$b2" -v b="$b1" 'BEGIN { printf "%.2f", 100 * a / b }')% of the first boot's store bytes"
    fi
    boot_store_reads "$log" "$l_a" "$l_b" "$l_c" "first boot (g1+g2)" "second boot (g1+g2)" | sed 's/^/  store reads, /'
    local g
    for g in g1 g2; do
        say "boot: kernel start -> workload: $g first boot $(boot_uptime "boot-1-$g") s, second boot $(boot_uptime "boot-2-$g") s"
    done
    boot_ctl stats >"$work/boot-stats.txt" 2>&1 || true
    grep -a '^storage\|^cache' "$work/boot-stats.txt" | sed 's/^/  envoyctl stats: /' || true
    stop_server || fail "boot/server-exit" "envoyd exited non-zero after SIGTERM"
    boot_table
    store_check boot "$boot_data"
}

# boot_table: Table 6.2 as the dissertation measured it. A fresh envoyd (its memory cache is
# empty: the start-up scan reads directories without caching them) boots guest "first" from
# its own fork of the template (cold cache), then guest "second" from another fork (hot
# cache); same workload (boot-fresh.sh). Store traffic of each from `envoyctl --json stats`,
# and per object from envoyd's store trace.
boot_table() {
    local -x RUST_LOG="info,envoy::store=trace" NO_COLOR=1
    start_server boot-table "$boot_data" || { fail "boot/table-server-start"; return 0; }
    boot_ctl stats >"$work/boot-table-stats0.txt" 2>&1 || true
    say "boot: Table 6.2: fresh envoyd: $(grep -a '^cache' "$work/boot-table-stats0.txt" | head -1)"
    local t0 t1 t2 l0 l1 l2
    local log="$work/boot-table.envoyd.log"
    t0="$(boot_traffic)" l0="$(boot_log_lines "$log")"
    boot_round cold boot-fresh.sh first
    t1="$(boot_traffic)" l1="$(boot_log_lines "$log")"
    boot_round hot boot-fresh.sh second
    t2="$(boot_traffic)" l2="$(boot_log_lines "$log")"
    local r1 b1 w1 wb1 r2 b2 w2 wb2
    read -r r1 b1 w1 wb1 <<<"$(boot_delta "$t0" "$t1")"
    read -r r2 b2 w2 wb2 <<<"$(boot_delta "$t1" "$t2")"
    say "boot: Table 6.2, store traffic, first image (cold cache): $r1 reads / $b1 bytes, $w1 writes / $wb1 bytes"
    say "boot: Table 6.2, store traffic, second image (hot cache): $r2 reads / $b2 bytes, $w2 writes / $wb2 bytes"
    boot_store_reads "$log" "$l0" "$l1" "$l2" | sed 's/^/  store reads, /'
    local g
    for g in first second; do
        say "boot: kernel start -> workload: $g image $(boot_uptime "boot-$([[ $g == first ]] && echo cold || echo hot)-$g") s"
    done
    # A correctness check of the cache, not a performance threshold: the second image shares
    # every template object with the first, so it must read fewer bytes from the store.
    if [[ "$b1" =~ ^[0-9]+$ && "$b2" =~ ^[0-9]+$ ]] && ((b1 > 0 && b2 < b1)); then
        pass "boot/table-6.2" "second image read $(awk -v a="$b2" -v b="$b1" 'BEGIN { printf "%.2f", 100 * a / b }')% of the first image's store bytes ($b2 of $b1); requests $r2 of $r1"
    else
        fail "boot/table-6.2" "store bytes: first image '$b1', second image '$b2' (want 0 < second < first)"
    fi
    stop_server || fail "boot/table-server-exit" "envoyd exited non-zero after SIGTERM"
}
