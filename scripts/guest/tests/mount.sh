# shellcheck shell=sh
# Sourced by the Envoy guest tests (/test/mount.sh): mounts the server under test.
#
#   envoy_mount MOUNTPOINT   mount per the kernel command line, print a "mount" result, return 0/1
#
# Kernel command line (scripts/guest/envoy-tests.sh sets it):
#   envoy.via=shim|tcp       shim: envoy-shim relays the virtio-serial port "envoy" (trans=fd);
#                            tcp: the kernel's trans=tcp to 10.0.2.2:envoy.port (QEMU user net)
#   envoy.version=9p2000.L|9p2000.u   envoy.aname=/default   envoy.port=P (tcp only)
#   envoy.opts=a,b           extra 9p mount options (e.g. cache=loose)
ENVOY_VIA="$(arg via)"
ENVOY_VERSION="$(arg version)"
ENVOY_ANAME="$(arg aname)"
ENVOY_PORT="$(arg port)"
ENVOY_OPTS="$(arg opts)"
: "${ENVOY_VIA:=shim}" "${ENVOY_VERSION:=9p2000.L}" "${ENVOY_ANAME:=/default}"

envoy_mount() {
    _m="$1"
    mkdir -p "$_m"
    _t0="$(cut -d' ' -f1 /proc/uptime)"
    case "$ENVOY_VIA" in
    tcp)
        _opts="trans=tcp,port=$ENVOY_PORT,version=$ENVOY_VERSION,aname=$ENVOY_ANAME,uname=root,access=user${ENVOY_OPTS:+,$ENVOY_OPTS}"
        _out="$(mount -t 9p -o "$_opts" 10.0.2.2 "$_m" 2>&1)"
        ;;
    shim)
        _opts="envoy-shim serial-name:envoy version=$ENVOY_VERSION aname=$ENVOY_ANAME uname=root,access=user${ENVOY_OPTS:+,$ENVOY_OPTS}"
        # Not in $(...): the daemon keeps its stdout/stderr open, so send them to a file.
        envoy-shim mount --connect serial-name:envoy --aname "$ENVOY_ANAME" \
            --version "$ENVOY_VERSION" --opt "uname=root,access=user${ENVOY_OPTS:+,$ENVOY_OPTS}" "$_m" --daemon >/tmp/envoy-shim.log 2>&1
        _rc=$?
        _out="$(cat /tmp/envoy-shim.log)"
        (exit $_rc)
        ;;
    *)
        result mount FAIL "unknown envoy.via=$ENVOY_VIA"
        return 1
        ;;
    esac
    _rc=$?
    _t1="$(cut -d' ' -f1 /proc/uptime)"
    if [ "$_rc" -ne 0 ] || ! grep -q " $_m 9p " /proc/mounts; then
        result mount FAIL "$_opts rc=$_rc $(echo "$_out" | tr '\n' ' ' | cut -c1-300)"
        return 1
    fi
    result mount PASS "$_opts ($(awk -v a="$_t0" -v b="$_t1" 'BEGIN { printf "%.2f", b - a }') s; $(grep " $_m 9p " /proc/mounts | cut -d' ' -f4 | cut -c1-160))"
    return 0
}

# envoy_mount_tcp MOUNTPOINT: a second, independent connection over the kernel's trans=tcp
# (QEMU user networking to 10.0.2.2:envoy.port), whatever envoy.via says.
envoy_mount_tcp() {
    mkdir -p "$1"
    _opts="trans=tcp,port=$ENVOY_PORT,version=$ENVOY_VERSION,aname=$ENVOY_ANAME,uname=root,access=user"
    if _out="$(mount -t 9p -o "$_opts" 10.0.2.2 "$1" 2>&1)"; then
        result mount-tcp PASS "$_opts"
    else
        result mount-tcp FAIL "$_opts: $(echo "$_out" | tr '\n' ' ' | cut -c1-200)"
        return 1
    fi
}

# expect_errno NAME ERRNO CMD...: CMD (an fsops call) must fail with "(errno ERRNO)".
expect_errno() {
    _name="$1" _want="$2"
    shift 2
    _out="$("$@" 2>&1)" && _rc=0 || _rc=$?
    case "$_out" in
    *"(errno $_want)"*) result "$_name" PASS ;;
    *) result "$_name" FAIL "want errno $_want, got rc=$_rc: $(echo "$_out" | tr '\n' ' ' | cut -c1-200)" ;;
    esac
}

# expect_msg NAME TEXT CMD...: CMD must fail and its output contain TEXT (busybox error messages).
expect_msg() {
    _name="$1" _want="$2"
    shift 2
    if _out="$("$@" 2>&1)"; then
        result "$_name" FAIL "succeeded, want failure '$_want': $(echo "$_out" | tr '\n' ' ' | cut -c1-200)"
        return
    fi
    case "$_out" in
    *"$_want"*) result "$_name" PASS ;;
    *) result "$_name" FAIL "want '$_want', got: $(echo "$_out" | tr '\n' ' ' | cut -c1-200)" ;;
    esac
}

uptime_s() { cut -d' ' -f1 /proc/uptime; }
