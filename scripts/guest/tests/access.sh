# shellcheck shell=sh
# Credentials with the real Linux 9P client (scripts/guest/envoy-tests.sh --only access).
#
# The host runs envoyd with its default credentials (admin for local root and TCP 127.0.0.1)
# and a socat relay whose connections reach envoyd from 127.0.0.2, an endpoint with no grant.
# The guest reaches envoyd three ways: envoy-shim over virtio-serial (the host's QEMU, a local
# root Unix-socket peer: granted; envoy.aname=/ so this is the administrative root), trans=tcp
# to 10.0.2.2:envoy.port (QEMU user net, envoyd sees 127.0.0.1: granted) and trans=tcp to
# 10.0.2.2:RELAY (envoyd sees 127.0.0.2: not granted). RELAY is in /test/relay-port.
# shellcheck source=mount.sh
. /test/mount.sh
relay="$(cat /test/relay-port)"
tcp_opts() { echo "trans=tcp,port=$1,version=9p2000.L,aname=$2,uname=root,access=user"; }

# 1. An endpoint with no grant cannot mount anything.
mkdir -p /mnt/x
if out="$(mount -t 9p -o "$(tcp_opts "$relay" /default)" 10.0.2.2 /mnt/x 2>&1)"; then
    result refused-endpoint-mount FAIL "mount through 127.0.0.2 succeeded"
    umount /mnt/x
else
    result refused-endpoint-mount PASS "$(echo "$out" | tr '\n' ' ' | cut -c1-120)"
fi

# 2. The administrative root (shim: granted) shows the credential file as an ordinary file.
envoy_mount /mnt/root || exit 1
check_out root-lists-credential-file "yes" sh -c "[ -f /mnt/root/.access ] && [ -d /mnt/root/default ] && echo yes"
check_out default-credentials-no-127.0.0.2 "" sh -c "grep '127.0.0.2' /mnt/root/.access"

# 3. The image through the granted TCP endpoint: symlinks and `..` are the guest's business.
mkdir -p /mnt/e
check mount-image-granted-tcp mount -t 9p -o "$(tcp_opts "$ENVOY_PORT" /default)" 10.0.2.2 /mnt/e
echo "guest marker $$" >/tmp/guest-marker
[ -f /etc/passwd ] || echo "root:x:0:0:guest root:/root:/bin/sh" >/etc/passwd
check symlink-abs ln -s /etc/passwd /mnt/e/pw
check symlink-marker ln -s /tmp/guest-marker /mnt/e/marker
check symlink-up ln -s ../../../.. /mnt/e/up
check_out readlink-is-data "/etc/passwd" readlink /mnt/e/pw
check_out symlink-resolves-in-guest "guest marker $$" cat /mnt/e/marker
check_out symlink-abs-is-guest-file "$(cat /etc/passwd 2>&1)" cat /mnt/e/pw
check_out symlink-up-is-guest-root "$(ls / | tr '\n' ' ')" sh -c "ls /mnt/e/up/ | tr '\n' ' '"
check_out dotdot-is-guest-dir "$(ls /mnt | tr '\n' ' ')" sh -c "ls /mnt/e/.. | tr '\n' ' '"
check_out image-has-no-admin-files "none" sh -c "ls -a /mnt/e | grep -x -e .access -e default || echo none"
echo "kept for the read-only mount" >/mnt/e/ro-seen

# 4. A grant written by the admin mount lets 127.0.0.2 mount read-only; writes fail (EROFS).
check grant-via-credential-file sh -c "echo 'tcp:127.0.0.2 mount-ro squash' >>/mnt/root/.access"
mkdir -p /mnt/ro
check mount-granted-ro mount -t 9p -o "$(tcp_opts "$relay" /default)" 10.0.2.2 /mnt/ro
check_out ro-reads "kept for the read-only mount" cat /mnt/ro/ro-seen
expect_msg ro-create-erofs "Read-only file system" sh -c "echo x >/mnt/ro/new"
expect_msg ro-append-erofs "Read-only file system" sh -c "echo x >>/mnt/ro/ro-seen"
expect_msg ro-rm-erofs "Read-only file system" rm /mnt/ro/ro-seen
expect_msg ro-mkdir-erofs "Read-only file system" mkdir /mnt/ro/d
# mount-ro is no admin right: the root stays closed to this endpoint.
mkdir -p /mnt/ro-root
if mount -t 9p -o "$(tcp_opts "$relay" /)" 10.0.2.2 /mnt/ro-root 2>/dev/null; then
    result refused-admin-mount FAIL "127.0.0.2 mounted the administrative root"
    umount /mnt/ro-root
else
    result refused-admin-mount PASS
fi
check_out rw-mount-unaffected "ok" sh -c "echo ok >/mnt/e/still-writable && cat /mnt/e/still-writable"
check umount-ro umount /mnt/ro
check umount-e umount /mnt/e
check umount-root umount /mnt/root
