# shellcheck shell=sh
# Workload, first boot: unpack /test/tree.tar (a real source tree) onto the mount, read every
# file back and compare with the host's checksums (/test/tree.sha256), and record the guest's own
# checksums on the mount (MOUNT/tree.sha256) for the second boot. Prints "tree: ..." timings.
# shellcheck source=mount.sh
. /test/mount.sh
m=/mnt/e
envoy_mount $m || exit 1
want="$(wc -l </test/tree.sha256)"
check mkdir-tree mkdir $m/tree
t0="$(uptime_s)"
check tar-extract tar -xf /test/tree.tar -C $m/tree
t1="$(uptime_s)"
echo "tree: tar -x of $want files took $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s (guest clock)"
# The names (files, directories, symlinks) must be the tar's; the checksum list below covers
# the regular files' count and content.
check_out tree-matches-tar "same" sh -c "cd $m/tree && find . | sed 's,^\./,,' | grep -v '^\.\$' | sort >/tmp/mounted.list; tar -tf /test/tree.tar | sed 's,/\$,,' | sort >/tmp/tar.list; cmp -s /tmp/mounted.list /tmp/tar.list && echo same || diff /tmp/tar.list /tmp/mounted.list | head -5"
t2="$(uptime_s)"
echo "tree: listing compared with the tar in $(awk -v a="$t1" -v b="$t2" 'BEGIN { printf "%.1f", b - a }') s"
# No file of the tree has blanks in its name (install-deps builds the list the same way).
(cd $m/tree && find ./* -type f | sed 's,^\./,,' | sort | xargs sha256sum) >/tmp/guest.sha256
t3="$(uptime_s)"
echo "tree: sha256 of every file (read back) took $(awk -v a="$t2" -v b="$t3" 'BEGIN { printf "%.1f", b - a }') s"
if cmp -s /tmp/guest.sha256 /test/tree.sha256; then result checksums-match-host PASS "$want files"; else
    result checksums-match-host FAIL "$(diff /test/tree.sha256 /tmp/guest.sha256 | grep -c '^[-+][0-9a-f]') differing lines: $(diff /test/tree.sha256 /tmp/guest.sha256 | grep '^[-+][0-9a-f]' | head -4 | tr '\n' ' ')"; fi
check record-checksums cp /tmp/guest.sha256 $m/tree.sha256
# Inode numbers come from qid.path: unique among the tree's objects, and recorded so that the
# second boot can check they are stable across the server restart (BAD-INPUTS 9).
(cd $m && ls -iR tree | awk '/:$/ { d = substr($0, 1, length($0) - 1); next } NF == 2 { print $1, d "/" $2 }' | sort -k2) >/tmp/inodes
check_out inode-count "$(tar -tf /test/tree.tar | wc -l)" sh -c "wc -l </tmp/inodes"
check_out inodes-unique "" sh -c "cut -d' ' -f1 /tmp/inodes | sort | uniq -d | head -3 | tr '\n' ' '"
check record-inodes cp /tmp/inodes $m/tree.inodes
check_out df-used "ok" sh -c "df $m >/dev/null && echo ok"
check umount umount $m
