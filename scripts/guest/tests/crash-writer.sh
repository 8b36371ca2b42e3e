# shellcheck shell=sh
# Crash workload: writes files of random data, fsyncs each and, only once fsync returned, logs
# "SYNCED <name> <sha256>". The host kills the server with SIGKILL somewhere in the middle; the
# writer then stops at the first failure ("crash: writer stopped ...").
# shellcheck source=mount.sh
. /test/mount.sh
m=/mnt/e
envoy_mount $m || exit 1
mkdir -p $m/crash || exit 1
i=1
while [ $i -le 400 ]; do
    dd if=/dev/urandom of=/tmp/src bs=4096 count=$((1 + i % 24)) 2>/dev/null
    h="$(sha256sum </tmp/src | cut -d' ' -f1)"
    if ! out="$(fsops copysync /tmp/src $m/crash/f$i 2>&1)"; then
        echo "crash: writer stopped at f$i: $out"
        break
    fi
    echo "SYNCED f$i $h"
    i=$((i + 1))
done
[ $i -gt 400 ] && echo "crash: writer stopped after all 400 files (the server was not killed)"
true
