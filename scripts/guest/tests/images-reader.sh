# shellcheck shell=sh
# Images, guest 2: the snapshot taken while guest 1 was writing (envoy.aname=…/web@1, through
# the shim) and, over trans=tcp, two forks of that snapshot and the head. The snapshot holds a
# consistent prefix of guest 1's files and refuses every change; the forks start from it and
# diverge without seeing each other's changes; the head has everything and neither fork's files.
# shellcheck source=mount.sh
. /test/mount.sh
s=/mnt/s
envoy_mount $s || exit 1
tcp_mount() {
    mkdir -p "$2"
    _o="trans=tcp,port=$ENVOY_PORT,version=9p2000.L,aname=$1,uname=root,access=user"
    if _out="$(mount -t 9p -o "$_o" 10.0.2.2 "$2" 2>&1)"; then result "mount-$3" PASS "$1"; else
        result "mount-$3" FAIL "$1: $(echo "$_out" | tr '\n' ' ' | cut -c1-200)"; return 1; fi
}
tcp_mount /tenants/bob/web /mnt/b bob || exit 1
tcp_mount /tenants/carol/web /mnt/c carol || exit 1
tcp_mount /tenants/alice/web /mnt/h head || exit 1
n="$(arg files)"
: "${n:=40}"

# The snapshot: files f1..fK, K short of n, each intact; `all` has K or K-1 lines.
k=0
while [ -e "$s/log/f$((k + 1))" ]; do k=$((k + 1)); done
lines="$(wc -l <$s/log/all | tr -d ' ')"
if [ "$k" -ge 1 ] && [ "$k" -lt "$n" ] && { [ "$lines" = "$k" ] || [ "$lines" = "$((k - 1))" ]; }; then
    result snapshot-consistent-prefix PASS "files 1..$k, $lines lines in all"
else
    result snapshot-consistent-prefix FAIL "k=$k lines=$lines n=$n"
fi
bad=0
i=1
while [ "$i" -le "$k" ]; do
    [ "$(cat $s/log/f$i)" = "line $i" ] || bad=$((bad + 1))
    i=$((i + 1))
done
if [ "$bad" = 0 ]; then result snapshot-contents PASS; else result snapshot-contents FAIL "$bad wrong"; fi
expect_msg snapshot-refuses-create "Read-only file system" sh -c "echo x >$s/new"
expect_msg snapshot-refuses-write "Read-only file system" sh -c "echo x >>$s/log/f1"
expect_msg snapshot-refuses-unlink "Read-only file system" rm $s/log/f1
expect_msg snapshot-refuses-mkdir "Read-only file system" mkdir $s/d
check_out snapshot-dotdot-stays-in-image "all f1" sh -c "ls $s/log/../log | head -2 | tr '\n' ' ' | sed 's/ \$//'"

# The forks start where the snapshot is, then diverge.
kb="$(ls /mnt/b/log | grep -c '^f')"
if [ "$kb" = "$k" ]; then result fork-has-snapshot-files PASS "$kb"; else result fork-has-snapshot-files FAIL "bob has $kb, snapshot $k"; fi
echo bob >/mnt/b/log/f1 && echo only-bob >/mnt/b/bob-only
echo carol >/mnt/c/log/f1 && echo only-carol >/mnt/c/carol-only
check_out fork-b-own-change "bob" cat /mnt/b/log/f1
check_out fork-c-own-change "carol" cat /mnt/c/log/f1
check_out fork-b-not-c "absent" sh -c "[ -e /mnt/b/carol-only ] && echo present || echo absent"
check_out fork-c-not-b "absent" sh -c "[ -e /mnt/c/bob-only ] && echo present || echo absent"
check_out snapshot-unchanged-by-forks "line 1" cat $s/log/f1
check_out head-unchanged-by-forks "line 1" cat /mnt/h/log/f1
check_out head-has-all-files "$n" sh -c "ls /mnt/h/log | grep -c '^f'"
check_out head-not-forks "absent absent" sh -c "for f in bob-only carol-only; do [ -e /mnt/h/\$f ] && echo -n 'present ' || echo -n 'absent '; done | sed 's/ \$//'"
sync
