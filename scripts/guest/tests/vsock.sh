# shellcheck shell=sh
# Guest side of the vsock suite (scripts/guest/envoy-tests.sh --only vsock): envoy-shim connects
# over AF_VSOCK to the host (CID 2, port envoy.vport), the VMM's vhost-user-vsock backend
# (vhost-device-vsock) turns that into a connection to envoyd's hybrid vsock socket
# (`--listen vsock-uds:CID:<uds_path>_<port>`), and the kernel's 9P client mounts the relayed
# descriptor. Then ordinary file operations, each checked; leaves keep/vsock-* for the host to
# read back over TCP. Prints "VSOCK-KEEP <name> <sha256>" lines for the host.
# ivshmem.sh sources this with CONNECT=ivshmem:auto TAG=ivshmem: the same operations over the
# shared-memory ring, keep/ivshmem-* and "IVSHMEM-KEEP" lines.
VPORT="$(arg vport)"
ANAME="$(arg aname)"
: "${VPORT:=5640}" "${ANAME:=/default}" "${CONNECT:=vsock:2:$VPORT}" "${TAG:=vsock}"
M=/mnt/envoy
KEEP_MARK="$(echo "$TAG" | tr a-z A-Z)-KEEP"

if [ "$TAG" != vsock ]; then
    :
elif [ -e /dev/vsock ] && grep -q vmw_vsock_virtio_transport /proc/modules; then
    result vsock-device PASS "/dev/vsock, $(grep -c '^vsock\|^vmw_vsock' /proc/modules) vsock modules"
else
    result vsock-device FAIL "no /dev/vsock or virtio vsock transport: $(grep vsock /proc/modules | cut -d' ' -f1 | tr '\n' ' ')"
fi

mkdir -p "$M"
t0="$(cut -d" " -f1 /proc/uptime)"
if envoy-shim mount --connect "$CONNECT" --aname "$ANAME" --opt uname=root,access=user \
    "$M" --daemon --log /tmp/envoy-shim.log >/tmp/envoy-shim.out 2>&1 && grep -q " $M 9p " /proc/mounts; then
    result mount PASS "$CONNECT ($(awk -v a="$t0" -v b="$(cut -d" " -f1 /proc/uptime)" 'BEGIN { printf "%.2f", b - a }') s; $(grep " $M 9p " /proc/mounts | cut -d' ' -f4 | cut -c1-120))"
else
    result mount FAIL "$(cat /tmp/envoy-shim.out /tmp/envoy-shim.log 2>/dev/null | tr '\n' ' ' | cut -c1-300)"
    return 1
fi

cd "$M" || return 1
check mkdir mkdir -p work/sub keep
# create + write + read back
echo "hello over $TAG" >work/hello
check_out read-small "hello over $TAG" cat work/hello
# A 2 MiB file of random bytes (several msize-sized writes), read back through a fresh open.
dd if=/dev/urandom of=/tmp/blob bs=64k count=32 2>/dev/null
want="$(sha256sum /tmp/blob | cut -d' ' -f1)"
check write-big cp /tmp/blob work/blob
echo 3 >/proc/sys/vm/drop_caches
check_out read-big "$want" sh -c "sha256sum work/blob | cut -d' ' -f1"
check_out size-big 2097152 stat -c %s work/blob
# append
echo "second line" >>work/hello
check_out append "$(printf 'hello over %s\nsecond line' "$TAG")" cat work/hello
# readdir
for i in 1 2 3 4 5 6 7 8 9 10; do echo "$i" >"work/sub/f$i"; done
check_out readdir "f1 f10 f2 f3 f4 f5 f6 f7 f8 f9" sh -c 'ls work/sub | sort | tr "\n" " " | sed "s/ $//"'
# rename (within a directory and across directories)
check rename mv work/hello work/hello2
check_out rename-old-gone "" sh -c 'ls work | grep -x hello || true'
check_out rename-new "second line" tail -1 work/hello2
check rename-across mv work/sub/f1 work/moved
check_out rename-across-content 1 cat work/moved
# unlink + rmdir
check unlink rm work/moved work/hello2
check_out unlink-gone "blob sub" sh -c 'ls work | sort | tr "\n" " " | sed "s/ $//"'
check unlink-many rm work/sub/f2 work/sub/f3 work/sub/f4 work/sub/f5 work/sub/f6 work/sub/f7 work/sub/f8 work/sub/f9 work/sub/f10
check rmdir rmdir work/sub
# truncate
check truncate sh -c ': >work/blob'
check_out truncate-size 0 stat -c %s work/blob
check cleanup sh -c 'rm work/blob && rmdir work'
# What the host reads back over TCP after the guest is gone.
echo "written by a guest over $TAG" >"keep/$TAG-hello"
cp /tmp/blob "keep/$TAG-blob"
for f in "$TAG-hello" "$TAG-blob"; do echo "$KEEP_MARK $f $(sha256sum "keep/$f" | cut -d' ' -f1)"; done
cd /
sync
check umount umount "$M"
