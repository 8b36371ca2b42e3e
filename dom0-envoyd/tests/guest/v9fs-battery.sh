# shellcheck shell=sh
# A Linux v9fs battery against envoyd, run inside the test guest (scripts/guest/run.sh):
#   scripts/guest/run.sh --script dom0-envoyd/tests/guest/v9fs-battery.sh --netdev-user \
#       --append "envoy.port=PORT envoy.version=9p2000.L"
# (dom0-envoyd/tests/guest_v9fs.rs does this for both dialects: cargo test -- --ignored).
# Locks and xattrs are 9P2000.L only and skipped for 9p2000.u.
port="$(arg port)"
version="$(arg version)"
[ -n "$version" ] || version=9p2000.L
m=/mnt/9p
mkdir -p $m
check mount mount -t 9p -o "trans=tcp,port=$port,version=$version,aname=/default,uname=root,access=user" 10.0.2.2 $m
check_out write-read "guest wrote this" sh -c "echo 'guest wrote this' >$m/from-guest && cat $m/from-guest"
check mkdir-tree mkdir -p $m/a/b/c
check_out rename "x" sh -c "echo x >$m/a/b/c/f && mv $m/a/b/c/f $m/a/g && cat $m/a/g"
check_out symlink "a/g" sh -c "ln -s a/g $m/s && readlink $m/s"
check_out follow "x" cat $m/s
check_out chmod "640" sh -c "chmod 640 $m/a/g && stat -c %a $m/a/g"
check_out hardlink "x" sh -c "ln $m/a/g $m/hl && cat $m/hl"
check_out hl-diverge "x y" sh -c "echo y >$m/hl && echo \$(cat $m/a/g) \$(cat $m/hl)"
check_out append "12" sh -c "printf 1 >$m/ap && printf 2 >>$m/ap && cat $m/ap"
check_out ls "a ap from-guest hl s" sh -c "ls $m | tr '\n' ' ' | sed 's/ \$//'"
check mkfifo mkfifo $m/fifo
check_out fifo-type "fifo" sh -c "stat -c %F $m/fifo | cut -d' ' -f1"
check mknod-c mknod $m/null c 1 3
check_out dev-null "1,3" sh -c "stat -c '%t,%T' $m/null"
check_out dev-null-works "" sh -c "echo hi >$m/null && cat $m/null"
check rm-special rm $m/fifo $m/null
check_out truncate "3" sh -c "echo 123456 >$m/t && truncate -s 3 $m/t && stat -c %s $m/t"
check touch-date touch -d '2020-01-02 03:04:05' $m/t
check_out mtime "2020" sh -c "stat -c %y $m/t | cut -c1-4"
[ "$version" = 9p2000.L ] && check fsops-lock fsops lock $m/t
check fsops-fsync fsops fsync $m/t
check fsops-statfs fsops statfs $m/t
[ "$version" = 9p2000.L ] && check fsops-xattr fsops xattr $m/t
check fsops-readdir fsops readdir $m/a
check_out rmdir-nonempty "1" sh -c "rmdir $m/a 2>/dev/null; echo \$?"
check_out mv-dir "c" sh -c "mv $m/a/b $m/bb && ls $m/bb"
check rm-rf rm -rf $m/a $m/bb
check_out unlink-open "data" sh -c "echo data >$m/uo && exec 3<$m/uo && rm $m/uo && cat <&3"
check many sh -c "i=0; while [ \$i -lt 300 ]; do echo \$i >$m/many.\$i || exit 1; i=\$((i+1)); done"
check_out many-count "300" sh -c "ls $m | grep -c '^many\.'"
check many-rm sh -c "rm $m/many.*"
dd if=/dev/urandom of=/tmp/blob bs=65536 count=64 2>/dev/null
want="$(md5sum </tmp/blob | cut -d' ' -f1)"
t0="$(cut -d' ' -f1 /proc/uptime)"
check dd-write-4MiB dd if=/tmp/blob of=$m/blob bs=65536
t1="$(cut -d' ' -f1 /proc/uptime)"
check_out dd-read-4MiB "$want" sh -c "dd if=$m/blob bs=65536 2>/dev/null | md5sum | cut -d' ' -f1"
t2="$(cut -d' ' -f1 /proc/uptime)"
echo "envoyd-guest: write 4 MiB in $(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }') s, read in $(awk -v a="$t1" -v b="$t2" 'BEGIN { print b - a }') s"
check_out user-write "ok" sh -c "mkdir -m 1777 $m/tmp && fsops runas 1000 1000 sh -c 'echo ok >$m/tmp/u && cat $m/tmp/u'"
check_out user-denied "1" sh -c "fsops runas 1000 1000 sh -c 'echo no >$m/nope' 2>/dev/null; echo \$?"
check umount umount $m
