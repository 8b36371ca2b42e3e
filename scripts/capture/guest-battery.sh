# shellcheck shell=sh
# Guest side of the 9P capture (run by the guest's /init; helpers from scripts/guest/lib.sh).
# Mounts the host's 9P server over TCP and exercises as many 9P2000.L messages as busybox and
# fsops can reach, one result marker per step.
# Kernel command line: envoy.port=P envoy.aname=PATH [envoy.version=9p2000.L] [envoy.opts=a,b]
#                      [envoy.flush=1: provoke a Tflush, needs 9p-proxy.py --hold-walk envoy-flush-me]
port="$(arg port)"
aname="$(arg aname)"
version="$(arg version)"
extra="$(arg opts)"
m=/mnt/9p
opts="trans=tcp,port=${port:-564},version=${version:-9p2000.L},aname=$aname,uname=root,access=user${extra:+,$extra}"
echo "battery: kernel $(uname -r) $(uname -v)"
echo "battery: mount -t 9p -o $opts 10.0.2.2 $m"
mkdir -p $m
if ! mount -t 9p -o "$opts" 10.0.2.2 $m; then
    result mount FAIL "mount -o $opts"
    exit 1
fi
result mount PASS "$opts"

check ls-la ls -la $m
check_out stat-hello "regular file 6" stat -c '%F %s' $m/hello
check_out cat-hello "hello" cat $m/hello

check mkdir mkdir $m/dir
check rmdir rmdir $m/dir

check create sh -c "echo first >$m/f"
check_out cat-f "first" cat $m/f

# Writes and reads bigger than a page and bigger than msize.
dd if=/dev/urandom of=/tmp/data bs=1000 count=300 2>/dev/null
want="$(md5sum </tmp/data | cut -d' ' -f1)"
check dd-write dd if=/tmp/data of=$m/big bs=200000
check_out dd-read "$want" sh -c "dd if=$m/big bs=65536 2>/dev/null | md5sum | cut -d' ' -f1"
check_out truncate "1000" sh -c "truncate -s 1000 $m/big && stat -c %s $m/big"

check_out chmod "600" sh -c "chmod 600 $m/f && stat -c %a $m/f"
check_out chown "1000:1000" sh -c "chown 1000:1000 $m/f && stat -c %u:%g $m/f"
check_out touch-d "1577934245" sh -c "touch -d '2020-01-02 03:04:05' $m/f && stat -c %Y $m/f"
check utimens fsops utimens $m/f 1600000000

check_out link "2" sh -c "ln $m/f $m/f.link && stat -c %h $m/f"
check_out symlink "f" sh -c "ln -s f $m/f.sym && readlink $m/f.sym"
check_out mknod-fifo "fifo" sh -c "mknod $m/fifo p && stat -c %F $m/fifo"
check_out mknod-chr "character special file 1,3" sh -c "mknod $m/chr c 1 3 && stat -c '%F %t,%T' $m/chr"

mkdir -p $m/d1 $m/d2
check rename-across mv $m/f.link $m/d1/g
check rename-within mv $m/d1/g $m/d1/h
check rename-dir mv $m/d1 $m/d2/d1
check unlink rm $m/d2/d1/h

check df df $m
check statfs fsops statfs $m
check sync-file sync $m/f
check sync-data sync -d $m/f
check dd-fsync dd if=/dev/zero of=$m/synced bs=4096 count=2 conv=fsync
check fsync fsops fsync $m/synced
check lock fsops lock $m/synced
check xattr fsops xattr $m/synced

deep="$m/deep/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t"
check_out deep-walk "deep leaf" cat $deep/leaf

if stat $m/no-such-file >/tmp/err 2>&1; then
    result enoent FAIL "stat of a missing file succeeded"
else
    if grep -q 'No such file' /tmp/err; then result enoent PASS; else result enoent FAIL "$(cat /tmp/err)"; fi
fi
if mkdir $m/hello 2>/tmp/err; then result eexist FAIL "mkdir over a file"; else result eexist PASS; fi

# Tflush: the capture's proxy holds back the reply to a walk of "envoy-flush-me"; SIGKILL makes
# the kernel abandon the waiting request with Tflush (only fatal signals interrupt 9P requests).
if [ "$(arg flush)" = 1 ]; then
    stat $m/envoy-flush-me >/dev/null 2>&1 &
    pid=$!
    sleep 2
    if kill -0 $pid 2>/dev/null; then
        kill -9 $pid
        wait $pid 2>/dev/null
        check_out flush-then-stat "regular file" stat -c %F $m/hello
    else
        result flush-then-stat FAIL "the held walk returned without being killed"
    fi
fi

check cleanup rm -rf $m/d2 $m/fifo $m/chr $m/f.sym
check_out readdir-after "big deep f hello synced" sh -c "ls $m | tr '\n' ' ' | sed 's/ \$//'"
check umount umount $m
