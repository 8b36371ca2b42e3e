# shellcheck shell=sh
# Guest side of guest-shim/tests/guest_mount.rs: envoy-shim inside the QEMU test guest
# (scripts/guest), against diod on the host.
#   1. envoy-shim mount --daemon over TCP (trans=fd over a relayed socketpair)
#   2. envoy-shim mount over the virtio-serial port "envoy", twice on the same port (the
#      second session must find the byte stream frame-aligned)
#   3. envoy-shim relay on the serial port + mount -t 9p -o trans=unix, twice
#   4. a refused attach fails with one sentence, and the port still works afterwards
# Kernel command line: envoy.port=P (diod, as 10.0.2.2:P) envoy.aname=EXPORT
port="$(arg port)"
aname="$(arg aname)"
m=/mnt/9p
mkdir -p $m
battery() {
    tag="$1"
    check_out "$tag-host-file" "from the host" cat $m/from-host
    check_out "$tag-write-read" "guest wrote $tag" sh -c "echo 'guest wrote $tag' >$m/g-$tag && cat $m/g-$tag"
    check_out "$tag-rename" "x" sh -c "mkdir -p $m/d-$tag && echo x >$m/d-$tag/f && mv $m/d-$tag/f $m/d-$tag/g && cat $m/d-$tag/g"
    dd if=/dev/urandom of=/tmp/blob bs=65536 count=64 2>/dev/null
    want="$(md5sum </tmp/blob | cut -d' ' -f1)"
    t0="$(cut -d' ' -f1 /proc/uptime)"
    check "$tag-dd-write-4MiB" dd if=/tmp/blob of=$m/blob-$tag bs=65536
    t1="$(cut -d' ' -f1 /proc/uptime)"
    check_out "$tag-dd-read-4MiB" "$want" sh -c "echo 3 >/proc/sys/vm/drop_caches; dd if=$m/blob-$tag bs=65536 2>/dev/null | md5sum | cut -d' ' -f1"
    t2="$(cut -d' ' -f1 /proc/uptime)"
    echo "shimtest $tag: write 4 MiB $(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }') s, read $(awk -v a="$t1" -v b="$t2" 'BEGIN { print b - a }') s"
    check "$tag-cleanup" rm -rf $m/d-$tag $m/blob-$tag $m/g-$tag
}
# 1. mount over TCP, daemon mode
check tcp-mount envoy-shim mount --connect "tcp:10.0.2.2:$port" --aname "$aname" --daemon $m
grep " $m " /proc/mounts
battery tcp
check tcp-umount umount $m
sleep 0.3
check_out tcp-shim-exited "" sh -c "pidof envoy-shim || true"
# 2. mount over virtio-serial, foreground relay in background shell job, twice on the same port
for i in 1 2; do
    envoy-shim mount --connect serial-name:envoy --aname "$aname" $m &
    shim=$!
    n=0; while ! grep -q " $m " /proc/mounts && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
    check "serial$i-mounted" grep -q " $m " /proc/mounts
    battery "serial$i"
    check "serial$i-umount" umount $m
    wait $shim
    rc=$?
    [ $rc -eq 0 ] && result "serial$i-shim-exit0" PASS || result "serial$i-shim-exit0" FAIL "rc=$rc"
done
# 3. relay subcommand on the serial port + mount -t 9p trans=unix
envoy-shim relay --connect serial-name:envoy --listen unix:/tmp/envoy.sock &
relay=$!
n=0; while [ ! -S /tmp/envoy.sock ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n+1)); done
check unix-mount mount -t 9p -o "trans=unix,version=9p2000.L,aname=$aname,uname=root,access=user" /tmp/envoy.sock $m
battery unix
check unix-umount umount $m
check unix-mount-again mount -t 9p -o "trans=unix,version=9p2000.L,aname=$aname,uname=root,access=user" /tmp/envoy.sock $m
check_out unix-again-read "from the host" cat $m/from-host
check unix-umount-again umount $m
kill $relay
# 4. error path: bad aname over the serial port
out="$(RUST_LOG=off envoy-shim mount --connect serial-name:envoy --aname /nonexistent $m 2>&1)"
rc=$?
echo "bad-aname: rc=$rc out=$out"
case "$out" in
"envoy-shim: mount(2) of 9p at $m failed: "*"check --aname"*) [ $rc -eq 1 ] && result bad-aname-fails PASS || result bad-aname-fails FAIL "rc=$rc" ;;
*) result bad-aname-fails FAIL "rc=$rc $out" ;;
esac
check_out serial-still-works "from the host" sh -c "envoy-shim mount --connect serial-name:envoy --aname $aname --daemon $m && cat $m/from-host; umount $m"
