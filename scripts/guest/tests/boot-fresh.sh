# shellcheck shell=sh
# Boot suite, the Table 6.2 measurement: the workload of a guest booted once from a fresh fork
# of the template (the first with envoyd's cache cold, the second from another fork with it
# hot; both run this same script). A normal boot of the template userland (rcS has mounted
# /proc, /sys, /dev and written the boot log), then a little work with the template's programs
# and a few small files written, then init powers off.
me="$(arg guest)"
check_out root-is-9p 9p sh -c "awk '\$2 == \"/\" { t = \$3 } END { print t }' /proc/mounts"
check_out first-boot 1 sh -c 'wc -l </var/log/boot.log'
check_out template-hostname template cat /etc/hostname
check proc-mounted test -r /proc/uptime
check sys-mounted test -d /sys/class
check dev-mounted test -c /dev/null
# Programs and files of the template.
check list-programs sh -c 'test "$(ls /bin /sbin /usr/bin /usr/sbin | wc -l)" -gt 200'
check find-usr sh -c 'find /usr /etc >/dev/null'
check ps ps
check template-license grep -q GPL-2.0 /usr/share/doc/busybox/LICENSE
check pkg-install sh -c 'tar -C / -xf /usr/share/envoy/pkgs/hello.tar && echo "hello 1.0" >/var/lib/pkgs/hello'
check_out pkg-runs "hello from the package (installed in template)" /usr/bin/hello
# A few small files.
check etc-motd sh -c "echo 'welcome to $me' >/etc/motd"
check log-append sh -c "echo '$me booted' >>/var/log/$me.log"
check small-data sh -c "dd if=/dev/urandom of=/root/$me.small bs=4k count=1 2>/dev/null"
check sync sync
