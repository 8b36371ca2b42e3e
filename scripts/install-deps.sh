#!/usr/bin/env bash
# Installs what the guest test harness needs on a Debian host (idempotent) and unpacks the
# Debian kernel that `linux-image-amd64` points at into scripts/.cache/kernel/.
#
# Usage: scripts/install-deps.sh [--no-kernel]
# Prints one line per action; exits non-zero if something could not be installed.
# Also prepares the real source tree of the guest workload test (scripts/guest/envoy-tests.sh):
# the include/ tree of the kernel's linux-headers-<ver>-common package (~5,900 files; the whole
# package has ~9,400, too slow to unpack under TCG) as a plain tar plus the sha256 of every
# regular file ("install-deps: source tree: PATH (N files)").
# Layout after a run:
#   scripts/.cache/kernel/<ver>/vmlinuz        the kernel image
#   scripts/.cache/kernel/<ver>/config         its build configuration
#   scripts/.cache/kernel/<ver>/vmlinux        uncompressed ELF kernel, if PVH-bootable
#   scripts/.cache/kernel/<ver>/modules/       lib/modules/<ver> of the package
#   scripts/.cache/kernel/current              symlink to <ver>
#   scripts/.cache/tree/<pkg>-include.tar[.sha256]  the workload source tree and its checksums
#   scripts/.cache/vhost-device-vsock/bin/vhost-device-vsock  vhost-user vsock backend (cargo)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cache="$here/.cache"
want_kernel=1
[[ "${1:-}" == "--no-kernel" ]] && want_kernel=0

say() { printf 'install-deps: %s\n' "$*"; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# Debian package name -> a command (or absolute file) it provides, to decide whether to install.
# gcc + libc6-dev build the static guest tool scripts/guest/tools/fsops.c.
declare -A provides=(
    [qemu-system-x86]=qemu-system-x86_64
    [busybox-static]=/bin/busybox
    [diod]=diod
    [cpio]=cpio
    [xz-utils]=xz
    [zstd]=zstd
    [python3]=python3
    [socat]=socat
    [gcc]=gcc
    [e2fsprogs]=mkfs.ext4
    [libc6-dev]=/usr/lib/x86_64-linux-gnu/libc.a
)

present() {
    local probe="$1"
    if [[ "$probe" == /* ]]; then [[ -e "$probe" ]]; else command -v "$probe" >/dev/null 2>&1; fi
}

missing=()
for pkg in "${!provides[@]}"; do
    # busybox-static and busybox both ship /bin/busybox; only the static one works in an initramfs.
    if [[ "$pkg" == busybox-static ]]; then
        dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
        continue
    fi
    present "${provides[$pkg]}" || missing+=("$pkg")
done

apt_updated=0
apt_update_once() {
    if [[ $apt_updated -eq 0 ]]; then
        # Skip the update when the package lists are fresh (less than a day old).
        if [[ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -1)" ]]; then
            say "apt-get update"
            as_root apt-get update -qq
        fi
        apt_updated=1
    fi
}

if ((${#missing[@]})); then
    apt_update_once
    say "installing: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    say "host packages already present: ${!provides[*]}"
fi

# vhost-device-vsock (rust-vmm's vhost-user vsock backend, hybrid vsock over Unix sockets) for the
# guest vsock suite: built once with cargo into a per-user cache that outlives fresh clones, and
# linked into scripts/.cache/vhost-device-vsock/bin.
vdv_version=0.3.0
vdv_bin="$cache/vhost-device-vsock/bin/vhost-device-vsock"
vdv_root="${XDG_CACHE_HOME:-$HOME/.cache}/envoy-tools/vhost-device-vsock-$vdv_version"
if [[ -x "$vdv_bin" ]]; then
    say "vhost-device-vsock already in $vdv_bin"
elif command -v cargo >/dev/null 2>&1; then
    if [[ ! -x "$vdv_root/bin/vhost-device-vsock" ]]; then
        say "building vhost-device-vsock $vdv_version (cargo install, a few minutes, once per machine)"
        # A failed build costs only the vsock suite (it reports the missing binary), not the rest.
        cargo install -q --locked --root "$vdv_root" --version "$vdv_version" vhost-device-vsock >&2 \
            || say "cargo install vhost-device-vsock failed: the guest vsock suite will fail"
    fi
    if [[ -x "$vdv_root/bin/vhost-device-vsock" ]]; then
        mkdir -p "$(dirname "$vdv_bin")"
        cp "$vdv_root/bin/vhost-device-vsock" "$vdv_bin"
        say "vhost-device-vsock: $vdv_bin"
    fi
else
    say "no cargo: vhost-device-vsock not installed (the guest vsock suite will fail)"
fi

[[ $want_kernel -eq 1 ]] || exit 0

# The kernel: the exact linux-image-<ver> package the linux-image-amd64 metapackage depends on.
kpkg="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
if [[ -z "$kpkg" ]]; then
    apt_update_once
    kpkg="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
fi
[[ -n "$kpkg" ]] || { say "cannot resolve linux-image-amd64"; exit 1; }
kver="${kpkg#linux-image-}"
kdir="$cache/kernel/$kver"

if [[ -f "$kdir/vmlinuz" && -f "$kdir/config" && -d "$kdir/modules/kernel" ]]; then
    say "kernel $kver already unpacked in $kdir"
else
    mkdir -p "$cache/debs" "$kdir"
    deb="$(ls "$cache/debs/${kpkg}"_*.deb 2>/dev/null | head -1 || true)"
    if [[ -z "$deb" ]]; then
        say "downloading $kpkg"
        (cd "$cache/debs" && apt-get download -q "$kpkg")
        deb="$(ls "$cache/debs/${kpkg}"_*.deb | head -1)"
    fi
    say "unpacking $(basename "$deb")"
    tmp="$(mktemp -d "$cache/unpack.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    dpkg-deb -x "$deb" "$tmp"
    cp "$tmp/boot/vmlinuz-$kver" "$kdir/vmlinuz"
    cp "$tmp/boot/config-$kver" "$kdir/config"
    rm -rf "$kdir/modules"
    mv "$tmp/lib/modules/$kver" "$kdir/modules"
    rm -rf "$tmp"
    trap - EXIT
fi
# The uncompressed ELF kernel boots ~4 s faster under TCG (no self-decompression), via PVH.
if [[ ! -f "$kdir/vmlinux" && ! -f "$kdir/vmlinux.unusable" ]]; then
    if python3 "$here/lib/extract-vmlinux.py" "$kdir/vmlinuz" "$kdir/vmlinux.tmp" 2>"$kdir/vmlinux.unusable"; then
        mv "$kdir/vmlinux.tmp" "$kdir/vmlinux"
        rm -f "$kdir/vmlinux.unusable"
        say "extracted $kdir/vmlinux (PVH-bootable)"
    else
        rm -f "$kdir/vmlinux.tmp"
        say "no directly bootable vmlinux: $(cat "$kdir/vmlinux.unusable"); using the bzImage"
    fi
fi
ln -sfn "$kver" "$cache/kernel/current"
say "kernel: $kdir/vmlinuz ($(du -h "$kdir/vmlinuz" | cut -f1)), modules: $kdir/modules"

# The workload tree: the headers package matching this kernel (linux-headers-<ver> depends on it).
hpkg="$(apt-cache depends "linux-headers-$kver" 2>/dev/null | awk '/Depends: linux-headers-.*-common/ {print $2; exit}')"
[[ -n "$hpkg" ]] || { say "cannot resolve the common headers package of linux-headers-$kver"; exit 1; }
tree="$cache/tree/$hpkg-include.tar"
if [[ -f "$tree" && -f "$tree.sha256" ]]; then
    :
else
    mkdir -p "$cache/debs" "$cache/tree"
    hdeb="$(ls "$cache/debs/${hpkg}"_*.deb 2>/dev/null | head -1 || true)"
    if [[ -z "$hdeb" ]]; then
        say "downloading $hpkg"
        (cd "$cache/debs" && apt-get download -q "$hpkg")
        hdeb="$(ls "$cache/debs/${hpkg}"_*.deb | head -1)"
    fi
    tmp="$(mktemp -d "$cache/unpack.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    dpkg-deb -x "$hdeb" "$tmp"
    (cd "$tmp/usr/src" && tar -cf "$tree.tmp" --owner=0 --group=0 --sort=name \
        --no-recursion "$hpkg" --recursion "$hpkg/include" \
        && find "$hpkg/include" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum >"$tree.sha256.tmp")
    mv "$tree.sha256.tmp" "$tree.sha256"
    mv "$tree.tmp" "$tree"
    rm -rf "$tmp"
    trap - EXIT
fi
say "source tree: $tree ($(wc -l <"$tree.sha256") files, $(du -h "$tree" | cut -f1))"
