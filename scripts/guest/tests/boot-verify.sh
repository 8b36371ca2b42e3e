# shellcheck shell=sh
# Boot suite, second boot of the same guest: its own changes are there, the other guest's
# (envoy.other=NAME) are not, and the template's files it did not touch are intact.
me="$(arg guest)" other="$(arg other)"
check_out second-boot 2 sh -c 'wc -l </var/log/boot.log'
check_out own-hostname "$me" cat /etc/hostname
check_out own-hostname-applied "$me" hostname
check_out own-motd "welcome to $me" cat /etc/motd
check_out own-pkg "hello from the package (installed in $me)" /usr/bin/hello
check_out own-pkg-registered "hello 1.0" cat /var/lib/pkgs/hello
check_out own-user "/home/$me" sh -c "grep '^$me:' /etc/passwd | cut -d: -f6"
check_out own-home-owner 1000 stat -c %u "/home/$me"
check_out own-log "$me wrote this" cat "/var/log/$me.log"
check own-data sha256sum -c "/root/$me.sha256"
check own-remove-kept sh -c '! test -e /etc/os-release'
check not-other-log sh -c "! test -e /var/log/$other.log"
check not-other-data sh -c "! test -e /root/$other.bin"
check not-other-user sh -c "! grep -q '^$other:' /etc/passwd"
check_out boot-log-hosts "template $me" sh -c "sed 's/.*host=\([^ ]*\).*/\1/' /var/log/boot.log | tr '\n' ' ' | sed 's/ \$//'"
check template-file-intact grep -q GPL-2.0 /usr/share/doc/busybox/LICENSE
