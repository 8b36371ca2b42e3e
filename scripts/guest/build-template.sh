#!/usr/bin/env bash
# Builds a template root file system for guests that boot from Envoy, and the initramfs that
# boots them.
#
# The template is a small real userland: static busybox with its applet links, busybox init
# (/sbin/init) with /etc/inittab, /etc/init.d/rcS (mounts /proc, /sys, /dev, /dev/pts, /tmp,
# /run; keeps a boot log in /var/log/boot.log) and /etc/init.d/workload (prints the
# ENVOY-GUEST-BEGIN/END markers of scripts/guest/run.sh around the workload named by
# envoy.workload= on the kernel command line, then powers off), device nodes, a hard link, an
# xattr, and a small "package" (/usr/share/envoy/pkgs/hello.tar) the boot test installs.
#
# The boot initramfs holds busybox, the kernel modules (virtio, virtio-serial, 9P, virtio-blk,
# ext4), the static envoy-shim and an /init script that loads the modules and then
#   * with envoy.image= on the command line: execs `envoy-shim init` (root on Envoy);
#   * otherwise mounts root= as rootfstype= with rootflags= (QEMU's 9P server:
#     root=root rootfstype=9p rootflags=trans=virtio,version=9p2000.L; a disk:
#     root=/dev/vda rootfstype=ext4) and switch_roots to envoy.init= (default /sbin/init).
#
# Usage: scripts/guest/build-template.sh --shim PATH [--out DIR] [--ext4] [--debian]
#   --shim PATH   the static envoy-shim to put into the initramfs (required)
#   --out DIR     output directory (default scripts/.cache/template)
#   --ext4        also make DIR/rootfs.ext4 (mkfs.ext4 -d) for booting from a virtio-blk disk
#   --debian      also debootstrap a minimal Debian into DIR/debian.tar.gz (needs network
#                 access to the Debian mirror and ~5-10 min; not part of CI, see benches/RESULTS.md)
# Prints, one per line: "rootfs DIR", "tar FILE", "initramfs FILE" (and "ext4 FILE",
# "debian FILE"). Run as root (device nodes, owners).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
scripts="$(dirname "$here")"
cache="$scripts/.cache"
shim="" out="$cache/template" ext4=0 debian=0
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
while (($#)); do
    case "$1" in
    --shim) shim="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --ext4) ext4=1; shift ;;
    --debian) debian=1; shift ;;
    -h | --help) usage ;;
    *) echo "build-template: unknown argument $1" >&2; usage ;;
    esac
done
say() { printf 'build-template: %s\n' "$*" >&2; }
[[ -n "$shim" && -x "$shim" ]] || { say "--shim PATH (a static envoy-shim) is required"; exit 2; }
busybox=/bin/busybox
[[ -x "$busybox" ]] || { say "missing $busybox (apt-get install busybox-static)"; exit 2; }
kdir="$cache/kernel/current"
[[ -d "$kdir/modules" ]] || { say "no cached kernel: run scripts/install-deps.sh"; exit 2; }
kver="$(readlink "$kdir")"

mkdir -p "$out"
rm -rf "$out/rootfs" "$out/initramfs-root"
root="$out/rootfs"
mkdir -p "$root"
chmod 0755 "$root"

# ------------------------------------------------------------------ template userland
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc/init.d,proc,sys,dev,tmp,run,root,var/log,var/lib/pkgs,usr/share/envoy/pkgs,usr/share/doc/busybox,lib}
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"
cp "$busybox" "$root/bin/busybox"
while read -r applet; do
    [[ "$applet" == bin/busybox ]] && continue
    ln -sf /bin/busybox "$root/$applet"
done < <("$busybox" --list-full)

cat >"$root/etc/inittab" <<'EOF'
::sysinit:/etc/init.d/rcS
::once:/etc/init.d/workload
::shutdown:/bin/sync
::shutdown:/bin/umount -a -r
EOF
cat >"$root/etc/init.d/rcS" <<'EOF'
#!/bin/sh
# System start: the file systems every program expects, the host name, the boot log.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mounted() { grep -q " $1 " /proc/mounts 2>/dev/null; }
mounted /proc || mount -t proc proc /proc
mounted /sys || mount -t sysfs sys /sys
mounted /dev || mount -t devtmpfs dev /dev
mkdir -p /dev/pts
mounted /dev/pts || mount -t devpts devpts /dev/pts
mounted /tmp || mount -t tmpfs tmp /tmp
mounted /run || mount -t tmpfs run /run
echo 3 >/proc/sys/kernel/printk
[ -s /etc/hostname ] && hostname "$(cat /etc/hostname)"
n=1
[ -f /var/log/boot.log ] && n=$(($(wc -l </var/log/boot.log) + 1))
echo "boot $n host=$(hostname) uptime=$(cut -d' ' -f1 /proc/uptime)" >>/var/log/boot.log
EOF
cat >"$root/etc/init.d/workload" <<'EOF'
#!/bin/sh
# Runs the workload named by envoy.workload= (a path in this file system; none: just boot),
# between the markers scripts/guest/run.sh waits for, then powers off (cleanly, through init).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
. /lib/envoy-guest.sh
w="$(arg workload)"
echo "ENVOY-GUEST-BEGIN uptime=$(cut -d' ' -f1 /proc/uptime)"
: >/tmp/envoy-failures
rc=0
if [ -n "$w" ]; then
    if [ -f "$w" ]; then
        (cd /tmp && . "$w")
        rc=$?
    else
        echo "workload: no $w in this image"
        rc=127
    fi
fi
[ "$rc" -eq 0 ] && [ -s /tmp/envoy-failures ] && rc=1
sync
echo "ENVOY-GUEST-END rc=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
poweroff
EOF
chmod 0755 "$root/etc/init.d/rcS" "$root/etc/init.d/workload"
install -m 0644 "$here/lib.sh" "$root/lib/envoy-guest.sh"
# The guest side of the boot test suite.
for t in "$here"/tests/boot-*.sh; do
    [[ -f "$t" && "$t" != *-host.sh ]] && install -D -m 0755 "$t" "$root/usr/lib/envoy-tests/$(basename "$t")"
done
echo "root:x:0:0:root:/root:/bin/sh" >"$root/etc/passwd"
echo "daemon:x:1:1:daemon:/usr/sbin:/bin/false" >>"$root/etc/passwd"
echo "root:x:0:" >"$root/etc/group"
echo "daemon:x:1:" >>"$root/etc/group"
echo template >"$root/etc/hostname"
printf 'NAME="Envoy busybox template"\nID=envoy-busybox\n' >"$root/etc/os-release"
echo "127.0.0.1 localhost" >"$root/etc/hosts"
: >"$root/var/log/.keep"
# A hard link and an xattr, so an import has both to carry.
echo "busybox is GPL-2.0; see https://busybox.net" >"$root/usr/share/doc/busybox/copyright"
ln "$root/usr/share/doc/busybox/copyright" "$root/usr/share/doc/busybox/LICENSE"
python3 -c 'import os,sys; os.setxattr(sys.argv[1], "user.envoy.template", b"busybox")' "$root/etc/os-release" 2>/dev/null \
    || say "no user xattrs on $(df --output=target "$root" | tail -1): template without an xattr"
# Device nodes for a root without devtmpfs (rcS mounts one over them).
if [[ "$(id -u)" == 0 ]]; then
    mknod -m 0600 "$root/dev/console" c 5 1
    mknod -m 0666 "$root/dev/null" c 1 3
fi
# A "package": a tarball the boot test installs into the guest's root.
pkg="$(mktemp -d)"
mkdir -p "$pkg/usr/bin" "$pkg/usr/share/hello"
printf '#!/bin/sh\necho "hello from the package (installed in $(hostname))"\n' >"$pkg/usr/bin/hello"
chmod 0755 "$pkg/usr/bin/hello"
echo "hello 1.0" >"$pkg/usr/share/hello/VERSION"
tar -C "$pkg" --owner=0 --group=0 -cf "$root/usr/share/envoy/pkgs/hello.tar" usr
rm -rf "$pkg"

tarball="$out/template.tar.gz"
tar -C "$root" --numeric-owner --owner=0 --group=0 --xattrs --xattrs-include='user.*' -czf "$tarball.tmp" .
mv "$tarball.tmp" "$tarball"
say "template: $(find "$root" | wc -l) entries, $(du -sh "$root" | cut -f1); archive $(du -h "$tarball" | cut -f1)"

# ------------------------------------------------------------------ boot initramfs
ir="$out/initramfs-root"
mkdir -p "$ir"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,newroot,lib/modules/"$kver"}
chmod 0755 "$ir"
cp "$busybox" "$ir/bin/busybox"
while read -r applet; do
    [[ "$applet" == bin/busybox ]] && continue
    ln -sf /bin/busybox "$ir/$applet"
done < <("$busybox" --list-full)
strip -o "$ir/bin/envoy-shim" "$shim" 2>/dev/null || cp "$shim" "$ir/bin/envoy-shim"
chmod 0755 "$ir/bin/envoy-shim"
# Load order matters: busybox insmod does not resolve dependencies.
modules=(
    virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
    virtio_console failover net_failover virtio_net
    netfs fscache 9pnet 9pnet_fd 9pnet_virtio 9p
    virtio_blk crc16 mbcache jbd2 crc32c_generic ext4
)
present=()
for m in "${modules[@]}"; do
    src="$(find "$kdir/modules/kernel" \( -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" -o -name "$m.ko.gz" \) -print -quit)"
    [[ -n "$src" ]] || continue
    dst="$ir/lib/modules/$kver/$m.ko"
    case "$src" in
    *.ko) cp "$src" "$dst" ;;
    *.ko.xz) xz -dc "$src" >"$dst" ;;
    *.ko.zst) zstd -qdc "$src" >"$dst" ;;
    *.ko.gz) gzip -dc "$src" >"$dst" ;;
    esac
    present+=("$m")
done
printf '%s\n' "${present[@]}" >"$ir/etc/envoy-modules"
cat >"$ir/init" <<'EOF'
#!/bin/sh
# /init of the boot initramfs (scripts/guest/build-template.sh): modules, then the root.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo 3 >/proc/sys/kernel/printk
kver="$(uname -r)"
for m in $(cat /etc/envoy-modules); do
    insmod "/lib/modules/$kver/$m.ko" 2>/dev/null || true
done
karg() { for kv in $(cat /proc/cmdline); do case "$kv" in "$1="*) echo "${kv#*=}" ;; esac; done; }
die() { echo "boot-init: cannot boot: $*"; poweroff -f; sleep 3600; }
if [ -n "$(karg envoy.image)" ]; then
    case "$(karg envoy.transport)" in
    tcp:*)
        ip link set lo up
        ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up && ip route add default via 10.0.2.2
        ;;
    esac
    exec /bin/envoy-shim init
fi
root="$(karg root)" fstype="$(karg rootfstype)" flags="$(karg rootflags)" init="$(karg envoy.init)"
[ -n "$root" ] || die "no envoy.image= and no root= on the kernel command line"
[ -n "$init" ] || init=/sbin/init
for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    case "$root" in /dev/*) [ -e "$root" ] && break ;; *) break ;; esac
    sleep 0.25
done
mount -t "${fstype:-auto}" ${flags:+-o "$flags"} "$root" /newroot || die "mount of $root ($fstype, $flags) failed"
echo "boot-init: root $root ($fstype) mounted at $(cut -d' ' -f1 /proc/uptime) s; starting $init"
for m in dev proc sys; do
    [ -d "/newroot/$m" ] && mount --move "/$m" "/newroot/$m"
done
exec switch_root /newroot "$init"
EOF
chmod 0755 "$ir/init"
initramfs="$out/boot-initramfs.cpio.gz"
(cd "$ir" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet --owner=0:0) | gzip -1 >"$initramfs.tmp"
mv "$initramfs.tmp" "$initramfs"
rm -rf "$ir"
say "boot initramfs: kernel $kver, modules ${present[*]}; $(du -h "$initramfs" | cut -f1)"

echo "rootfs $root"
echo "tar $tarball"
echo "initramfs $initramfs"

if ((ext4)); then
    img="$out/rootfs.ext4"
    rm -f "$img"
    mkfs.ext4 -q -F -L root -d "$root" "$img" 64M
    say "ext4 image: $img"
    echo "ext4 $img"
fi

if ((debian)); then
    command -v debootstrap >/dev/null || { say "--debian needs debootstrap (apt-get install debootstrap)"; exit 2; }
    deb="$out/debian"
    rm -rf "$deb"
    t0=$(date +%s)
    debootstrap --variant=minbase --include=busybox bookworm "$deb" >&2
    tar -C "$deb" --numeric-owner --xattrs --xattrs-include='*' -czf "$out/debian.tar.gz" .
    say "debian minbase: $(($(date +%s) - t0)) s, $(du -sh "$deb" | cut -f1)"
    echo "debian $out/debian.tar.gz"
fi
