# shellcheck shell=sh
# Guest side of the ivshmem suite (scripts/guest/envoy-tests.sh --only ivshmem): QEMU's
# ivshmem-plain device (1af4:1110) shows the host's ring file (envoyd --listen ring:PATH) as its
# BAR 2; envoy-shim maps /sys/bus/pci/devices/<bdf>/resource2, claims a ring as its frontend and
# relays it to the kernel's 9P client. The file operations are vsock.sh's (added as
# /test/vsock.sh), run with CONNECT=ivshmem:auto.
dev=""
for d in /sys/bus/pci/devices/*; do
    if [ "$(cat "$d/vendor" 2>/dev/null)" = 0x1af4 ] && [ "$(cat "$d/device" 2>/dev/null)" = 0x1110 ]; then
        dev="$d"
        break
    fi
done
if [ -n "$dev" ] && [ -e "$dev/resource2" ]; then
    result ivshmem-device PASS "${dev##*/}: BAR 2 $(($(stat -c %s "$dev/resource2") >> 20)) MiB"
else
    result ivshmem-device FAIL "no 1af4:1110 PCI device with a resource2 under /sys/bus/pci/devices"
    return 1
fi
CONNECT=ivshmem:auto
TAG=ivshmem
. /test/vsock.sh
