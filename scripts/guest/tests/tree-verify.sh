# shellcheck shell=sh
# Workload, second boot (after the host restarted the server on the same data): every file of the
# tree must still match the host's checksums and the ones the first boot recorded; then the tree
# is deleted so the host can compare the store with its baseline.
# shellcheck source=mount.sh
. /test/mount.sh
m=/mnt/e
envoy_mount $m || exit 1
want="$(wc -l </test/tree.sha256)"
check_out recorded-checksums-survived "same" sh -c "cmp -s $m/tree.sha256 /test/tree.sha256 && echo same || echo differ"
t0="$(uptime_s)"
if out="$(cd $m/tree && sha256sum -c -s /test/tree.sha256 2>&1)"; then
    result verify-after-restart PASS "$want files"
else
    result verify-after-restart FAIL "$(echo "$out" | head -5 | tr '\n' ' ')"
fi
t1="$(uptime_s)"
echo "tree: verify of $want files took $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s (guest clock)"
check_out file-count "$want" sh -c "cd $m/tree && find . -type f | wc -l"
(cd $m && ls -iR tree | awk '/:$/ { d = substr($0, 1, length($0) - 1); next } NF == 2 { print $1, d "/" $2 }' | sort -k2) >/tmp/inodes
check_out inodes-stable-across-restart "same" sh -c "cmp -s /tmp/inodes $m/tree.inodes && echo same || diff $m/tree.inodes /tmp/inodes | grep '^[-+][0-9]' | head -4 | tr '\n' ' '"
t0="$(uptime_s)"
check delete-tree rm -rf $m/tree $m/tree.sha256 $m/tree.inodes
t1="$(uptime_s)"
echo "tree: rm -rf took $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s"
check_out root-empty "" ls -A $m
check umount umount $m
