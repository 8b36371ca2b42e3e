# shellcheck shell=sh
# Images, guest 1: mounts the head of /tenants/alice/web (envoy.aname) and keeps writing while
# the host forks the live image (a snapshot, then a fork). Prints "WROTE i" after file i so the
# host knows when to fork; an fd opened before the fork is appended to across it. Afterwards
# every file and every line must be there: the guest carried on in the head without noticing.
# shellcheck source=mount.sh
. /test/mount.sh
m=/mnt/e
envoy_mount $m || exit 1
n="$(arg files)"
: "${n:=40}"
mkdir -p $m/log || { result mkdir FAIL; exit 1; }
exec 3>>$m/log/all
i=1
errors=0
while [ "$i" -le "$n" ]; do
    echo "line $i" >$m/log/f$i || errors=$((errors + 1))
    echo "line $i" >&3 || errors=$((errors + 1))
    echo "WROTE $i"
    sleep 0.2
    i=$((i + 1))
done
exec 3>&-
if [ "$errors" = 0 ]; then result writes-across-fork PASS "$n files"; else result writes-across-fork FAIL "$errors failed writes"; fi
missing=0
i=1
while [ "$i" -le "$n" ]; do
    [ "$(cat $m/log/f$i 2>/dev/null)" = "line $i" ] || missing=$((missing + 1))
    i=$((i + 1))
done
if [ "$missing" = 0 ]; then result head-has-every-file PASS; else result head-has-every-file FAIL "$missing files missing or wrong"; fi
check_out open-fd-carried-on "$n" sh -c "wc -l <$m/log/all | tr -d ' '"
sync
