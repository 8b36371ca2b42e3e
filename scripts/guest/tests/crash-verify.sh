# shellcheck shell=sh
# Crash workload, second boot (the host restarted the server after kill -9): every file the
# first boot logged as SYNCED must read back whole (/test/synced.sha256, "sha256  name" lines);
# the restarted server must also take new writes.
# shellcheck source=mount.sh
. /test/mount.sh
m=/mnt/e
envoy_mount $m || exit 1
n="$(wc -l </test/synced.sha256)"
if out="$(cd $m/crash && sha256sum -c /test/synced.sha256 2>&1)"; then
    result synced-files-intact PASS "$n files logged SYNCED before the kill read back whole"
else
    result synced-files-intact FAIL "$(echo "$out" | grep -v ': OK$' | head -5 | tr '\n' ' ')"
fi
check_out listing-has-synced "ok" sh -c "ls $m/crash >/tmp/ls && for f in \$(cut -d' ' -f3 /test/synced.sha256); do grep -qx \$f /tmp/ls || echo missing \$f; done; echo ok"
check_out write-after-restart "after the crash" sh -c "echo 'after the crash' >$m/after && cat $m/after"
check_out unlink-after-restart "gone" sh -c "rm -rf $m/crash $m/after && { [ -e $m/crash ] && echo still || echo gone; }"
check umount umount $m
