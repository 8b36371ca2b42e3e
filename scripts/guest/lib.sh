# shellcheck shell=sh
# Helpers for guest test scripts (sourced before /test/script as /lib/envoy-guest.sh).
#
#   result NAME PASS|FAIL [DETAIL...]   print a result marker (a FAIL makes the run fail)
#   check NAME CMD [ARGS...]            run CMD; PASS if it exits 0, else FAIL with its output
#   check_out NAME EXPECTED CMD [ARGS...]  PASS if CMD's stdout equals EXPECTED
#   arg KEY                             value of envoy.KEY=... on the kernel command line

result() {
    _name="$1" _verdict="$2"
    shift 2
    echo "ENVOY-GUEST-RESULT $_name $_verdict $*"
    [ "$_verdict" = PASS ] || echo "$_name" >>/tmp/envoy-failures
}

check() {
    _name="$1"
    shift
    if _out="$("$@" 2>&1)"; then
        result "$_name" PASS
    else
        result "$_name" FAIL "rc=$? $(echo "$_out" | tr '\n' ' ' | cut -c1-200)"
    fi
}

check_out() {
    _name="$1" _want="$2"
    shift 2
    _got="$("$@" 2>&1)" || true
    if [ "$_got" = "$_want" ]; then
        result "$_name" PASS
    else
        result "$_name" FAIL "want '$_want' got '$(echo "$_got" | tr '\n' ' ' | cut -c1-200)'"
    fi
}

arg() {
    for _kv in $(cat /proc/cmdline); do
        case "$_kv" in
        "envoy.$1="*) echo "${_kv#*=}" ;;
        esac
    done
}
