# shellcheck shell=sh
# Guest side of vserial.sh: 9P over the virtio-serial port "envoy".
# 1. The kernel's trans=fd straight on the port: expected to be refused, because the port has
#    no write_iter and the 9P client writes from a kworker ("kernel write not supported").
# 2. trans=fd on two FIFOs, relayed to the port by two busybox cats (a stand-in for the
#    future envoy-shim): expected to work.
# Kernel command line: envoy.aname=PATH
aname="$(arg aname)"
o="version=9p2000.L,aname=$aname,uname=root,access=user"
m=/mnt/9p
mkdir -p $m
port=/dev/virtio-ports/envoy
if [ -e $port ]; then
    result port-present PASS "$(readlink $port)"
else
    result port-present FAIL "no $port"
    exit 1
fi

if mount -t 9p -o "trans=fd,rfdno=3,wfdno=3,$o" none $m 3<>$port 2>/tmp/err; then
    result direct-trans-fd-refused FAIL "mount on the raw port succeeded (kernel behaviour changed?)"
    umount $m
else
    msg="$(dmesg | grep -m1 'kernel write not supported' | sed 's/^\[[ 0-9.]*\] //')"
    result direct-trans-fd-refused PASS "$(cat /tmp/err); dmesg: ${msg:-none}"
fi

mkfifo /tmp/to-kernel /tmp/from-kernel
exec 5<>$port
cat <&5 >/tmp/to-kernel &
cat /tmp/from-kernel >&5 &
exec 5>&-
t0="$(cut -d' ' -f1 /proc/uptime)"
check relay-mount mount -t 9p -o "trans=fd,rfdno=3,wfdno=4,$o" none $m 3</tmp/to-kernel 4>/tmp/from-kernel
echo "vserial: mount through the relay took $(awk -v a="$t0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { print b - a }') s"
check_out relay-read-host-file "from the host" cat $m/from-host
dd if=/dev/urandom of=/tmp/blob bs=65536 count=64 2>/dev/null
t1="$(cut -d' ' -f1 /proc/uptime)"
check relay-write-4MiB dd if=/tmp/blob of=$m/blob bs=65536
t2="$(cut -d' ' -f1 /proc/uptime)"
check_out relay-read-4MiB "$(md5sum </tmp/blob | cut -d' ' -f1)" sh -c "md5sum <$m/blob | cut -d' ' -f1"
t3="$(cut -d' ' -f1 /proc/uptime)"
echo "vserial: 4 MiB write $(awk -v a="$t1" -v b="$t2" 'BEGIN { print b - a }') s, read $(awk -v a="$t2" -v b="$t3" 'BEGIN { print b - a }') s (guest clock)"
check relay-umount umount $m
