# shellcheck shell=bash
# Sourced by scripts/guest/envoy-tests.sh: the `images` scenario (issue 4, §4.3).
#
# 1. envoyctl creates /tenants/alice/web; guest 1 mounts it and writes a file every 0.2 s.
# 2. While it writes, envoyctl forks the live image into /tenants/bob/web (a snapshot web@1,
#    then a fork of it); guest 1 carries on in the head without noticing.
# 3. envoyctl forks web@1 again into /tenants/carol/web; guest 2 mounts the snapshot read-only
#    and both forks: consistent prefix, EROFS, forks diverge, head untouched.
# 4. Deleting: web@1 is refused while forked; deleting both forks and then the snapshot gives
#    the space back (objects and bytes before and after, from envoyctl and envoy-storaged check).
scenario_images() {
    [[ "$server" == envoyd ]] || { say "images: skipped (envoyd's images)"; return 0; }
    local data="$work/images.data" version=9p2000.L ctl=() out
    start_server images "$data" || { fail "images/server-start"; return 0; }
    ctl=("$envoyctl_bin" --data "$data")
    local log="$work/images.envoyctl.log"
    "${ctl[@]}" image create /tenants/alice/web >>"$log" 2>&1 || { fail "images/create" "$(tail -2 "$log")"; stop_server; return 0; }
    pass "images/create" "/tenants/alice/web"

    local aname=/tenants/alice/web
    guest images-writer "$tests/images-writer.sh" 300 --netdev-user &
    local gpid=$!
    # Fork once the guest has written 10 files (it writes 40).
    local forked=0
    for _ in $(seq 600); do
        if grep -aq '^WROTE 10' "$work/images-writer.log" 2>/dev/null; then
            if out="$("${ctl[@]}" image fork /tenants/alice/web /tenants/bob/web 2>&1)"; then
                forked=1
                pass "images/fork-live-image" "$(echo "$out" | tr '\n' ' ' | cut -c1-160)"
            else
                fail "images/fork-live-image" "$(echo "$out" | tr '\n' ' ' | cut -c1-300)"
            fi
            break
        fi
        kill -0 "$gpid" 2>/dev/null || break
        sleep 0.5
    done
    ((forked)) || fail "images/fork-live-image" "the writer never reported WROTE 10"
    wait "$gpid" || true
    if grep -aq '^WROTE 40' "$work/images-writer.log"; then pass "images/writer-finished"; else fail "images/writer-finished"; fi

    out="$("${ctl[@]}" image fork /tenants/alice/web@1 /tenants/carol/web 2>&1)" \
        && pass "images/fork-snapshot" || fail "images/fork-snapshot" "$out"
    aname=/tenants/alice/web@1
    guest images-reader "$tests/images-reader.sh" 300 --netdev-user || true
    "${ctl[@]}" image list >"$work/images.list.txt" 2>&1 || true
    sed 's/^/  /' "$work/images.list.txt"

    # Deletion: refused while forked; then the space comes back.
    if out="$("${ctl[@]}" snapshot delete /tenants/alice/web@1 2>&1)"; then
        fail "images/forked-snapshot-delete-refused" "deleted: $out"
    elif grep -q "forks" <<<"$out"; then
        pass "images/forked-snapshot-delete-refused" "$(echo "$out" | head -1 | cut -c1-200)"
    else
        fail "images/forked-snapshot-delete-refused" "$out"
    fi
    local before after
    before="$(store_counts "$data")"
    for f in bob carol; do
        out="$("${ctl[@]}" image delete "/tenants/$f/web" 2>&1)" && pass "images/delete-fork-$f" "$(echo "$out" | tail -1 | cut -c1-200)" \
            || fail "images/delete-fork-$f" "$out"
    done
    out="$("${ctl[@]}" snapshot delete /tenants/alice/web@1 2>&1)" && pass "images/delete-snapshot" "$(echo "$out" | tail -2 | tr '\n' ' ' | cut -c1-250)" \
        || fail "images/delete-snapshot" "$out"
    echo "$out" | sed 's/^/  envoyctl: /'
    stop_server || fail "images/server-exit" "non-zero exit after SIGTERM"
    after="$(store_counts "$data")"
    say "images: store before deleting forks and snapshot: ${before% *} objects, ${before#* } bytes; after: ${after% *} objects, ${after#* } bytes"
    if [[ -n "${before%% *}" && -n "${after%% *}" ]] && ((${after% *} < ${before% *} && ${after#* } < ${before#* })); then
        pass "images/space-returned" "objects ${before% *} -> ${after% *}, bytes ${before#* } -> ${after#* }"
    else
        fail "images/space-returned" "objects ${before% *} -> ${after% *}, bytes ${before#* } -> ${after#* }"
    fi
    store_check images "$data"
}
