# shellcheck shell=sh
# Guest side of the ctl suite (scripts/guest/envoy-tests.sh --only ctl): the Linux kernel's 9P
# client mounts envoyd's synthetic `ctl` tree (aname=ctl, set by the host) and uses it the way a
# shell would: list it, read version and stats, read zero, write null, and is refused anything
# that would change it. The host then checks the guest's requests in `envoyctl stats`.
# shellcheck source=mount.sh
. /test/mount.sh
M=/mnt/ctl
envoy_mount $M || exit 1
check_out ls "null stats version zero" sh -c "ls $M | tr '\n' ' ' | sed 's/ \$//'"
check_out modes "-rw-rw-rw- -r--r--r-- -r--r--r-- -r--r--r--" sh -c "ls -l $M | awk 'NR > 1 { print \$1 }' | tr '\n' ' ' | sed 's/ \$//'"
check_out version "envoyd" sh -c "cut -d' ' -f1 $M/version"
# 16 MiB of zeros in 64 KiB reads (each a Tread of up to the mount's msize).
check_out zero-16MiB "16777216" sh -c "dd if=$M/zero bs=65536 count=256 2>/dev/null | wc -c"
check_out zero-all-zero "0" sh -c "dd if=$M/zero bs=65536 count=256 2>/dev/null | tr -d '\\000' | wc -c"
check null-write sh -c "dd if=/dev/zero of=$M/null bs=65536 count=64 2>/dev/null && echo hi >$M/null"
check_out null-read-empty "0" sh -c "cat $M/null | wc -c"
check_out stats-has-ops "yes" sh -c "grep -q '^Tread ' $M/stats && grep -q '^OP ' $M/stats && echo yes"
check_out create-refused "Read-only file system" sh -c "touch $M/new 2>&1 | grep -o 'Read-only file system'"
check_out mkdir-refused "Read-only file system" sh -c "mkdir $M/d 2>&1 | grep -o 'Read-only file system'"
check_out rm-refused "Read-only file system" sh -c "rm -f $M/zero 2>&1 | grep -o 'Read-only file system'"
check_out zero-not-writable "Permission denied" sh -c "(echo x >$M/zero) 2>&1 | grep -o 'Permission denied'"
check umount umount $M
