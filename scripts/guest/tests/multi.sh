# shellcheck shell=sh
# Two connections to the same image from one guest: the usual mount (envoy.via) at /mnt/e and a
# trans=tcp mount at /mnt/t. They are two 9P sessions with separate inodes in the guest kernel, so
# whatever one sees of the other's changes (and lock conflicts) comes from the server.
# shellcheck source=mount.sh
. /test/mount.sh
e=/mnt/e
t=/mnt/t
envoy_mount $e || exit 1
envoy_mount_tcp $t || exit 1
check mkdir mkdir $e/multi
check_out write-e-read-t "from e" sh -c "echo 'from e' >$e/multi/f && cat $t/multi/f"
check_out append-t-read-e "from e|from t" sh -c "echo 'from t' >>$t/multi/f && cat $e/multi/f | tr '\n' '|' | sed 's/|\$//'"
check_out rename-t-seen-by-e "gone from e" sh -c "fsops rename $t/multi/f $t/multi/g >/dev/null && cat $e/multi/g >/dev/null && { [ -e $e/multi/f ] && echo 'still on e' || echo 'gone from e'; }"
check_out rmdir-t-seen-by-e "No such file" sh -c "mkdir $e/multi/d && rmdir $t/multi/d && stat $e/multi/d 2>&1 | grep -o 'No such file'"
# Lock conflicts between the two sessions are the server's to detect.
echo lockme >$e/multi/lock
fsops holdlock $e/multi/lock 4 >/tmp/hold.out &
holder=$!
sleep 1
expect_errno lock-conflict-across-connections 11 fsops trylock $t/multi/lock
wait $holder
check_out lock-released-across-connections "ok locked" fsops trylock $t/multi/lock
# Unlink on one connection while the other holds the file open.
echo "open elsewhere" >$e/multi/u
check_out unlink-t-while-open-e "open elsewhere" sh -c "exec 3<$e/multi/u; rm $t/multi/u; cat <&3"
# Two writers, one per connection, on disjoint halves of one file.
dd if=/dev/zero of=$e/multi/shared bs=65536 count=8 2>/dev/null
yes e | head -c 262144 >/tmp/half-e
yes t | head -c 262144 >/tmp/half-t
dd if=/tmp/half-e of=$e/multi/shared bs=4096 conv=notrunc 2>/dev/null &
w1=$!
dd if=/tmp/half-t of=$t/multi/shared bs=4096 seek=64 conv=notrunc 2>/dev/null &
w2=$!
wait $w1 $w2
cat /tmp/half-e /tmp/half-t >/tmp/both
want="$(sha256sum </tmp/both | cut -d' ' -f1)"
check_out two-writers-seen-by-e "$want" sh -c "sha256sum <$e/multi/shared | cut -d' ' -f1"
check_out two-writers-seen-by-t "$want" sh -c "sha256sum <$t/multi/shared | cut -d' ' -f1"
check cleanup rm -rf $t/multi
check_out cleanup-seen-by-e "gone" sh -c "[ -e $e/multi ] && echo still || echo gone"
check umount-t umount $t
check umount-e umount $e
