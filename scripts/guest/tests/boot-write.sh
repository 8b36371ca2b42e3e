# shellcheck shell=sh
# Boot suite, first boot of a guest whose root is a fork of the template (run by the
# template's /etc/init.d/workload; envoy.guest=NAME on the kernel command line). Changes the
# root file system the way a guest's life does: installs a package, writes files in /etc,
# keeps logs, then the workload powers off through init.
me="$(arg guest)"
check_out root-is-9p 9p sh -c "awk '\$2 == \"/\" { t = \$3 } END { print t }' /proc/mounts"
check_out first-boot 1 sh -c 'wc -l </var/log/boot.log'
check_out template-hostname template cat /etc/hostname
# A "package": unpack, register, run.
check pkg-install sh -c 'tar -C / -xf /usr/share/envoy/pkgs/hello.tar && echo "hello 1.0" >/var/lib/pkgs/hello'
check_out pkg-runs "hello from the package (installed in template)" /usr/bin/hello
# Files in /etc.
check etc-hostname sh -c "echo $me >/etc/hostname"
check etc-motd sh -c "echo 'welcome to $me' >/etc/motd"
check etc-passwd-user sh -c "echo '$me:x:1000:1000::/home/$me:/bin/sh' >>/etc/passwd && mkdir -p /home/$me && chown 1000:1000 /home/$me"
# Logs and data.
check log-append sh -c "echo '$me wrote this' >>/var/log/$me.log"
check data-file sh -c "dd if=/dev/urandom of=/root/$me.bin bs=64k count=16 2>/dev/null && sha256sum /root/$me.bin >/root/$me.sha256"
check etc-remove sh -c 'rm /etc/os-release'
check sync sync
