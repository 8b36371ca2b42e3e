# shellcheck shell=sh
# Guest side of scripts/guest/selftest.sh: a quick file battery on the host's diod over
# trans=tcp, with timings. Kernel command line: envoy.port=P envoy.aname=PATH
port="$(arg port)"
aname="$(arg aname)"
m=/mnt/9p
mkdir -p $m
t0="$(cut -d' ' -f1 /proc/uptime)"
check mount mount -t 9p -o "trans=tcp,port=$port,version=9p2000.L,aname=$aname,uname=root,access=user" 10.0.2.2 $m
t1="$(cut -d' ' -f1 /proc/uptime)"
echo "selftest: mount took $(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }') s"
check_out host-file "from the host" cat $m/from-host
check_out write-read "guest wrote this" sh -c "echo 'guest wrote this' >$m/from-guest && cat $m/from-guest"
check mkdir-tree mkdir -p $m/a/b/c
check_out rename "x" sh -c "echo x >$m/a/b/c/f && mv $m/a/b/c/f $m/a/g && cat $m/a/g"
check_out symlink "a/g" sh -c "ln -s a/g $m/s && readlink $m/s"
check_out chmod "640" sh -c "chmod 640 $m/a/g && stat -c %a $m/a/g"
check_out unlink "a from-guest from-host" sh -c "rm $m/s && ls $m | tr '\n' ' ' | sed 's/ \$//'"

# Throughput through the whole stack (TCG guest, user-mode network, diod): 4 MiB each way.
dd if=/dev/urandom of=/tmp/blob bs=65536 count=64 2>/dev/null
want="$(md5sum </tmp/blob | cut -d' ' -f1)"
t0="$(cut -d' ' -f1 /proc/uptime)"
check dd-write-4MiB dd if=/tmp/blob of=$m/blob bs=65536
t1="$(cut -d' ' -f1 /proc/uptime)"
check_out dd-read-4MiB "$want" sh -c "dd if=$m/blob bs=65536 2>/dev/null | md5sum | cut -d' ' -f1"
t2="$(cut -d' ' -f1 /proc/uptime)"
echo "selftest: write 4 MiB in $(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }') s, read+md5 in $(awk -v a="$t1" -v b="$t2" 'BEGIN { print b - a }') s (guest clock)"
check cleanup rm -rf $m/a $m/blob $m/from-guest
check umount umount $m
