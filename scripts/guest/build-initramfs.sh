#!/usr/bin/env bash
# Builds the base initramfs of the test guest: static busybox with its applet links, the
# virtio / virtio-net / 9P / vsock kernel modules of the cached Debian kernel (decompressed), /init
# (scripts/guest/init), /lib/envoy-guest.sh (scripts/guest/lib.sh) and /bin/fsops
# (scripts/guest/tools/fsops.c, static). The test script is NOT in it: scripts/guest/run.sh appends a
# second small cpio holding /test/script at boot time, so this archive is built once.
#
# Usage: scripts/guest/build-initramfs.sh [--force]
# Prints the path of the archive on the last line. Rebuilds only when an input changed.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
scripts="$(dirname "$here")"
cache="$scripts/.cache"
force=0
[[ "${1:-}" == "--force" ]] && force=1

say() { printf 'build-initramfs: %s\n' "$*" >&2; }

# Load order matters: busybox insmod does not resolve dependencies.
modules=(
    virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
    virtio_console
    failover net_failover virtio_net
    netfs fscache 9pnet 9pnet_fd 9pnet_virtio 9p
    vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport
)

kdir="$cache/kernel/current"
if [[ ! -f "$kdir/vmlinuz" ]]; then
    say "no cached kernel, running install-deps.sh"
    "$scripts/install-deps.sh" >&2
fi
kver="$(readlink "$kdir")"
moddir="$kdir/modules"
busybox=/bin/busybox
[[ -x "$busybox" ]] || { say "missing $busybox (apt-get install busybox-static)"; exit 1; }
if ! file -L "$busybox" 2>/dev/null | grep -q 'statically linked'; then
    # `file` may be missing; ldd is the fallback check.
    if ldd "$busybox" >/dev/null 2>&1; then
        say "$busybox is dynamically linked; install busybox-static"
        exit 1
    fi
fi

# Parallel callers (e.g. cargo tests each booting a guest) build one at a time.
mkdir -p "$cache/initramfs"
exec 9>"$cache/initramfs/.lock"
flock 9

# The archive name carries a hash of every input so a change rebuilds it.
stamp="$( (echo "$kver ${modules[*]}"; cat "$here/init" "$here/lib.sh" "$here/tools/fsops.c" "$0"; sha256sum "$busybox") | sha256sum | cut -c1-12)"
out="$cache/initramfs/base-$kver-$stamp.cpio.gz"
if [[ -f "$out" && $force -eq 0 ]]; then
    say "up to date"
    echo "$out"
    exit 0
fi

root="$(mktemp -d "$cache/initramfs-root.XXXXXX")"
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root" # mktemp made it 0700: the guest's / must be searchable by non-root test users
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,mnt,test,lib/modules/"$kver"}

cp "$busybox" "$root/bin/busybox"
nlinks=0
while read -r applet; do
    # --list-full prints e.g. "usr/bin/awk"; point each at /bin/busybox.
    [[ "$applet" == bin/busybox ]] && continue
    ln -sf /bin/busybox "$root/$applet"
    nlinks=$((nlinks + 1))
done < <("$busybox" --list-full)

present=() absent=()
for m in "${modules[@]}"; do
    src="$(find "$moddir/kernel" \( -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" -o -name "$m.ko.gz" \) -print -quit)"
    if [[ -z "$src" ]]; then
        absent+=("$m")
        continue
    fi
    dst="$root/lib/modules/$kver/$m.ko"
    case "$src" in
    *.ko) cp "$src" "$dst" ;;
    *.ko.xz) xz -dc "$src" >"$dst" ;;
    *.ko.zst) zstd -qdc "$src" >"$dst" ;;
    *.ko.gz) gzip -dc "$src" >"$dst" ;;
    esac
    present+=("$m")
done
printf '%s\n' "${present[@]}" >"$root/etc/envoy-modules"
printf "%s" "${absent[*]}" >"$root/etc/envoy-modules-absent"
say "kernel $kver; modules packed: ${present[*]}"
if ((${#absent[@]})); then
    say "modules not found in this kernel (built in or unavailable): ${absent[*]}"
fi

# fsops: the calls busybox lacks (fcntl/flock locks, xattrs, fsync), linked statically.
if command -v gcc >/dev/null 2>&1 && gcc -static -O2 -Wall -Wextra -o "$root/bin/fsops" "$here/tools/fsops.c"; then
    say "built fsops (static)"
else
    say "no static C toolchain (apt-get install gcc libc6-dev): guest has no fsops; lock/xattr tests will be skipped"
fi

install -m 0755 "$here/init" "$root/init"
install -m 0644 "$here/lib.sh" "$root/lib/envoy-guest.sh"
echo "root:x:0:0:root:/root:/bin/sh" >"$root/etc/passwd"
echo "root:x:0:" >"$root/etc/group"

mkdir -p "$(dirname "$out")"
rm -f "$cache"/initramfs/base-*.cpio.gz
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet --owner=0:0) | gzip -1 >"$out.tmp"
mv "$out.tmp" "$out"
say "$nlinks applet links, $(du -h "$out" | cut -f1)"
echo "$out"
