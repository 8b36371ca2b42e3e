#!/usr/bin/env bash
# Boots the test guest under QEMU (software emulation, no KVM needed) with a test script and
# waits for it to finish.
#
# Usage: scripts/guest/run.sh --script FILE [options]
#   --script FILE                 sh script run by the guest's init (required)
#   --virtio-serial-socket PATH   add a virtio-serial port named "envoy" (guest:
#                                 /dev/virtio-ports/envoy) whose host side connects to the
#                                 Unix socket PATH (something must listen there first)
#   --vhost-user-vsock SOCKET     add a vhost-user-vsock-pci device whose backend (e.g.
#                                 vhost-device-vsock --vm guest-cid=N,socket=SOCKET,uds-path=P)
#                                 listens on SOCKET; guest memory becomes a shared memfd
#   --ivshmem FILE                add an ivshmem-plain PCI device (1af4:1110) whose BAR 2 is the
#                                 host file FILE (size: the file's, a power of two)
#   --netdev-user                 add a virtio-net NIC on QEMU user networking; the guest is
#                                 10.0.2.15 and reaches the host's 127.0.0.1 as 10.0.2.2
#   --timeout SECS                give up after SECS seconds (default 120)
#   --append ARGS                 extra kernel command line (e.g. envoy.port=5640 for `arg port`)
#   --mem MB                      guest memory (default 512)
#   --machine TYPE                QEMU machine type (default q35)
#   --log FILE                    console log path (default scripts/.cache/logs/guest-<time>.log)
#   --verbose                     copy the console to stderr while it runs
#   --add HOSTFILE:GUESTPATH      also put HOSTFILE into the guest at GUESTPATH (repeatable;
#                                 e.g. a static test binary: --add target/x:/bin/x)
#   --bzimage                     boot the compressed vmlinuz even if the faster PVH-bootable
#                                 vmlinux was extracted (scripts/install-deps.sh)
#   --initrd FILE                 boot this initramfs as it is instead of the test initramfs
#                                 (--script, --add not used; e.g. build-template.sh's)
#   --qemu-arg ARG                one more QEMU argument (repeatable; e.g. -virtfs ..., -drive ...)
#
# Exit status: the guest script's rc (0 = pass); 124 on timeout; 125 if QEMU exited without the
# END marker; 2 on usage errors or a failed initramfs build. Once QEMU was started, the last line
# of stdout is "log: <path>" (default logs keep the newest 50 in scripts/.cache/logs).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
scripts="$(dirname "$here")"
cache="$scripts/.cache"

adds=() qemu_extra=() initrd=""
script="" vserial="" vvsock="" ivshmem="" netdev=0 bzimage=0 timeout=120 append="" mem=512 machine=q35 log="" verbose=0
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
while (($#)); do
    case "$1" in
    --script) script="$2"; shift 2 ;;
    --virtio-serial-socket) vserial="$2"; shift 2 ;;
    --vhost-user-vsock) vvsock="$2"; shift 2 ;;
    --ivshmem) ivshmem="$2"; shift 2 ;;
    --netdev-user) netdev=1; shift ;;
    --timeout) timeout="$2"; shift 2 ;;
    --append) append="$2"; shift 2 ;;
    --mem) mem="$2"; shift 2 ;;
    --machine) machine="$2"; shift 2 ;;
    --log) log="$2"; shift 2 ;;
    --verbose) verbose=1; shift ;;
    --bzimage) bzimage=1; shift ;;
    --add) adds+=("$2"); shift 2 ;;
    --initrd) initrd="$2"; shift 2 ;;
    --qemu-arg) qemu_extra+=("$2"); shift 2 ;;
    -h | --help) usage ;;
    *) echo "run.sh: unknown argument $1" >&2; usage ;;
    esac
done
if [[ -n "$initrd" ]]; then
    [[ -f "$initrd" ]] || { echo "run.sh: no initramfs $initrd" >&2; usage; }
else
    [[ -n "$script" && -f "$script" ]] || { echo "run.sh: --script FILE is required" >&2; usage; }
fi

say() { printf 'run.sh: %s\n' "$*"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

work="$(mktemp -d "${TMPDIR:-/tmp}/envoy-guest.XXXXXX")"
qpid=""
cleanup() {
    if [[ -n "$qpid" ]] && kill -0 "$qpid" 2>/dev/null; then kill "$qpid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

if [[ -n "$initrd" ]]; then
    :
elif ! base="$("$here/build-initramfs.sh" 2>"$work/build.err" | tail -1)" || [[ ! -f "$base" ]]; then
    cat "$work/build.err" >&2
    say "building the initramfs failed"
    exit 2
fi
# Prefer the PVH-bootable ELF kernel (no decompression under TCG) unless --bzimage.
kernel="$cache/kernel/current/vmlinuz"
if ((!bzimage)) && [[ -f "$cache/kernel/current/vmlinux" ]]; then kernel="$cache/kernel/current/vmlinux"; fi

if [[ -n "$initrd" ]]; then
    cp "$initrd" "$work/initrd"
else
    # Second cpio with /test/script (and --add files), appended to the cached base; the kernel
    # unpacks both archives in order.
    mkdir -p "$work/root/test"
    install -m 0755 "$script" "$work/root/test/script"
    for a in "${adds[@]}"; do
        src="${a%%:*}" dst="${a#*:}"
        [[ -f "$src" && "$dst" == /* && "$a" == *:* ]] || { say "--add wants HOSTFILE:/GUEST/PATH, got $a"; exit 2; }
        install -D -m "$(stat -c %a "$src")" "$src" "$work/root$dst"
    done
    (cd "$work/root" && find . -mindepth 1 | cpio -o -H newc --quiet --owner=0:0) | gzip -1 >"$work/test.cpio.gz"
    cat "$base" "$work/test.cpio.gz" >"$work/initrd"
fi

mkdir -p "$cache/logs"
if [[ -z "$log" ]]; then
    log="$cache/logs/guest-$(date +%Y%m%d-%H%M%S)-$$.log"
    ls -1t "$cache"/logs/guest-*.log 2>/dev/null | tail -n +50 | xargs -r rm -f
fi
: >"$log"

args=(
    -machine "$machine" -cpu max -m "$mem" -smp 1
    -nodefaults -no-user-config -display none -no-reboot
    -serial "file:$log"
    -kernel "$kernel" -initrd "$work/initrd"
    -append "console=ttyS0 quiet panic=-1 $append"
)
if [[ -n "$vserial" ]]; then
    args+=(-device virtio-serial-pci -chardev "socket,id=c0,path=$vserial"
        -device "virtserialport,chardev=c0,name=envoy")
fi
if [[ -n "$vvsock" ]]; then
    # vhost-user backends map guest memory: it must be a shared memory object.
    args+=(-object "memory-backend-memfd,id=mem,size=${mem}M,share=on" -numa node,memdev=mem
        -chardev "socket,id=vvs,path=$vvsock" -device vhost-user-vsock-pci,chardev=vvs)
fi
if [[ -n "$ivshmem" ]]; then
    args+=(-object "memory-backend-file,id=hostmem,share=on,mem-path=$ivshmem,size=$(stat -c %s "$ivshmem")"
        -device ivshmem-plain,memdev=hostmem)
fi
if ((netdev)); then
    args+=(-netdev "user,id=n0" -device "virtio-net-pci,netdev=n0")
fi
args+=("${qemu_extra[@]}")

say "qemu-system-x86_64 ${args[*]}"
t0="$(now)"
qemu-system-x86_64 "${args[@]}" </dev/null >"$work/qemu.out" 2>&1 &
qpid=$!
if ((verbose)); then tail -n +1 -f "$log" --pid="$qpid" >&2 & fi

t_begin="" status=""
while :; do
    if [[ -z "$t_begin" ]] && grep -q '^ENVOY-GUEST-BEGIN' "$log"; then
        t_begin="$(now)"
        say "boot: $(elapsed "$t0" "$t_begin") s to the test script ($(grep -m1 -o 'ENVOY-GUEST-BEGIN uptime=[0-9.]*' "$log" | cut -d= -f2) s guest uptime)"
    fi
    if grep -q '^ENVOY-GUEST-END' "$log"; then
        status="$(grep -m1 -o '^ENVOY-GUEST-END rc=[0-9]*' "$log" | cut -d= -f2)"
        break
    fi
    if ! kill -0 "$qpid" 2>/dev/null; then
        grep -q '^ENVOY-GUEST-END' "$log" && continue
        status=125
        say "QEMU exited without the END marker: $(tr '\n' ' ' <"$work/qemu.out")"
        break
    fi
    if (($(elapsed "$t0" "$(now)" | cut -d. -f1) >= timeout)); then
        status=124
        say "timeout after $timeout s"
        break
    fi
    sleep 0.1
done
t_end="$(now)"

# poweroff -f ends QEMU by itself; give it a moment, then stop it.
for _ in $(seq 50); do kill -0 "$qpid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$qpid" 2>/dev/null; then kill "$qpid" 2>/dev/null || true; fi
wait "$qpid" 2>/dev/null || true
qpid=""
cat "$work/qemu.out" >>"$log.qemu" 2>/dev/null || true
[[ -s "$log.qemu" ]] || rm -f "$log.qemu"

grep '^ENVOY-GUEST-RESULT' "$log" | sed 's/^ENVOY-GUEST-RESULT /  /' || true
npass="$(grep -c '^ENVOY-GUEST-RESULT [^ ]* PASS' "$log" || true)"
nfail="$(grep -c '^ENVOY-GUEST-RESULT [^ ]* FAIL' "$log" || true)"
if [[ -n "$t_begin" ]]; then
    say "script: $(elapsed "$t_begin" "$t_end") s; total $(elapsed "$t0" "$t_end") s; $npass passed, $nfail failed; rc=$status"
else
    say "total $(elapsed "$t0" "$t_end") s; script never started; rc=$status"
fi
echo "log: $log"
exit "$status"
