# shellcheck shell=sh
# POSIX battery on an Envoy (or diod) mount, run by the guest's /init; one result per step.
# Same script for 9P2000.L and 9P2000.u (envoy.version); see mount.sh for the command line.
# Leaves MOUNT/keep/ behind (files whose sha256 is logged as "KEEP <name> <sha256>") for the
# host-side independent client check (diodls/diodcat); everything else is removed.
# shellcheck source=mount.sh
. /test/mount.sh
m=/mnt/e
envoy_mount $m || exit 1
d=$m/posix
dotl=0
[ "$ENVOY_VERSION" = 9p2000.L ] && dotl=1
t_start="$(uptime_s)"

check mkdir-workdir mkdir $d
check_out create "first" sh -c "echo first >$d/f && cat $d/f"
check_out ls-created "f" ls $d

# --- open flags ---
check open-creat-excl fsops open $d/o creat,excl,wronly abc
expect_errno open-excl-existing 17 fsops open $d/o creat,excl,wronly abc
check_out open-trunc "xy" sh -c "fsops open $d/o wronly,trunc xy >/dev/null && cat $d/o"
check_out open-append "xyz" sh -c "fsops open $d/o wronly,append z >/dev/null && cat $d/o"
check_out open-rdwr-overwrite "Ayz" sh -c "fsops open $d/o rdwr A >/dev/null && cat $d/o"
expect_errno open-missing-enoent 2 fsops open $d/missing rdonly
expect_errno open-creat-in-missing-dir 2 fsops open $d/nodir/x creat,wronly
expect_errno open-directory-on-file 20 fsops open $d/o rdonly,directory
check open-directory-on-dir fsops open $d rdonly,directory
ln -s o $d/o.sym
expect_errno open-nofollow-symlink 40 fsops open $d/o.sym rdonly,nofollow
expect_errno open-write-dir 21 fsops open $d wronly

# --- read / write / truncate ---
dd if=/dev/urandom of=/tmp/data bs=1000 count=300 2>/dev/null
want="$(sha256sum </tmp/data | cut -d' ' -f1)"
check write-300k dd if=/tmp/data of=$d/big bs=65536
check_out read-300k "$want" sh -c "sha256sum <$d/big | cut -d' ' -f1"
check_out read-odd-blocks "$want" sh -c "dd if=$d/big bs=777 2>/dev/null | sha256sum | cut -d' ' -f1"
check_out write-at-offset "XXXX" sh -c "printf XXXX | dd of=$d/big bs=1 seek=5000 conv=notrunc 2>/dev/null && dd if=$d/big bs=1 skip=5000 count=4 2>/dev/null"
check_out size-after-offset-write "300000" stat -c %s $d/big
head -c 1000 /tmp/data >/tmp/prefix
check_out truncate-shrink "1000 $(sha256sum </tmp/prefix | cut -d' ' -f1)" sh -c "truncate -s 1000 $d/big && echo \$(stat -c %s $d/big) \$(sha256sum <$d/big | cut -d' ' -f1)"
head -c 4000 /dev/zero >>/tmp/prefix
check_out truncate-grow-zeroes "5000 $(sha256sum </tmp/prefix | cut -d' ' -f1)" sh -c "truncate -s 5000 $d/big && echo \$(stat -c %s $d/big) \$(sha256sum <$d/big | cut -d' ' -f1)"
check_out sparse-write-past-end "2000004" sh -c "printf 1234 | dd of=$d/sparse bs=1 seek=2000000 2>/dev/null && stat -c %s $d/sparse"
check_out sparse-hole-reads-zero "4096 0" sh -c "echo \$(dd if=$d/sparse bs=4096 skip=100 count=1 2>/dev/null | wc -c) \$(dd if=$d/sparse bs=4096 skip=100 count=1 2>/dev/null | tr -d '\\000' | wc -c)"
check_out truncate-to-zero "0" sh -c "truncate -s 0 $d/sparse && stat -c %s $d/sparse"

# --- attributes ---
check_out chmod "600" sh -c "chmod 600 $d/f && stat -c %a $d/f"
check_out chmod-dir "711" sh -c "mkdir $d/cm && chmod 711 $d/cm && stat -c %a $d/cm"
check_out chown "1000:1000" sh -c "chown 1000:1000 $d/f && stat -c %u:%g $d/f"
check_out chgrp "1000:27" sh -c "chgrp 27 $d/f && stat -c %u:%g $d/f"
check_out touch-d "1577934245" sh -c "touch -d '2020-01-02 03:04:05' $d/f && stat -c %Y $d/f"
# Linux 6.1's v9fs keeps the default 1 s timestamp granularity, so the kernel itself sends
# Tsetattr with mtime_nsec 0 (seen in proto/tests/golden/linux-client-diod.txt): whole seconds.
check_out utimensat "ok utimens mtime=1600000000.000000000" fsops utimens $d/f 1600000000
check_out mtime-advances-on-write "yes" sh -c "before=\$(stat -c %Y $d/f); echo more >>$d/f; after=\$(stat -c %Y $d/f); [ \$after -gt \$before ] && echo yes || echo \"no \$before \$after\""

# --- directories ---
check mkdir-p mkdir -p $d/a/b/c/d
check rmdir-leaf rmdir $d/a/b/c/d
expect_errno mkdir-existing-eexist 17 fsops open $d/a rdonly,creat,excl
expect_msg mkdir-existing-msg "File exists" mkdir $d/a
expect_msg rmdir-nonempty "not empty" rmdir $d/a
expect_msg rmdir-file "Not a directory" rmdir $d/f
expect_msg rm-missing "No such file" rm $d/nothing-here
expect_msg stat-missing "No such file" stat $d/nothing-here
expect_msg cat-missing-component "No such file" cat $d/nothing/here
# A directory's link count: 2 + subdirectories, or 1 ("not counted", as btrfs does).
check_out nlink-dir "ok" sh -c "mkdir $d/nl && mkdir $d/nl/sub && case \$(stat -c %h $d/nl) in 1|3) echo ok ;; *) stat -c %h $d/nl ;; esac"

# --- unlink ---
check_out unlink "gone" sh -c "echo x >$d/u && rm $d/u && { [ -e $d/u ] && echo still || echo gone; }"

# --- rename ---
check_out rename-replace-file "new" sh -c "echo old >$d/rb && echo new >$d/ra && fsops rename $d/ra $d/rb >/dev/null && cat $d/rb"
check_out rename-source-gone "gone" sh -c "[ -e $d/ra ] && echo still || echo gone"
mkdir -p $d/r1/sub/deeper $d/r2
echo inner >$d/r1/sub/deeper/file
echo moved >$d/r1/x
if [ $dotl = 0 ]; then
    # Linux's 9P2000.u client renames with Twstat, which cannot change the directory: it refuses
    # cross-directory renames itself (EXDEV) and mv copies instead. Same-directory renames only.
    expect_errno rename-across-dirs-u-exdev 18 fsops rename $d/r1/x $d/r2/y
    check_out rename-dir-within-dir "inner" sh -c "fsops rename $d/r1/sub $d/r1/sub2 >/dev/null && cat $d/r1/sub2/deeper/file"
    check_out rename-dir-onto-empty-dir "inner" sh -c "mkdir $d/r1/empty && fsops rename $d/r1/sub2 $d/r1/empty >/dev/null && cat $d/r1/empty/deeper/file"
    mkdir -p $d/r1/full && echo x >$d/r1/full/x && mkdir $d/r1/src
    expect_errno rename-dir-onto-nonempty 39 fsops rename $d/r1/src $d/r1/full
    expect_errno rename-file-onto-dir 21 fsops rename $d/r1/x $d/r1/src
    expect_errno rename-dir-onto-file 20 fsops rename $d/r1/src $d/r1/x
    expect_errno rename-missing 2 fsops rename $d/r1/none $d/r1/other
    check_out rename-same-name "moved" sh -c "fsops rename $d/r1/x $d/r1/x >/dev/null && cat $d/r1/x"
    mkdir -p $d/r2/empty/deeper && echo inner >$d/r2/empty/deeper/file
else
check_out rename-across-dirs "moved" sh -c "fsops rename $d/r1/x $d/r2/y >/dev/null && cat $d/r2/y"
check_out rename-dir-across-dirs "inner" sh -c "fsops rename $d/r1/sub $d/r2/sub >/dev/null && cat $d/r2/sub/deeper/file"
check_out rename-dir-old-gone "sub-gone" sh -c "[ -e $d/r1/sub ] && echo sub-still || echo sub-gone"
check_out rename-dir-onto-empty-dir "inner" sh -c "mkdir $d/r2/empty && fsops rename $d/r2/sub $d/r2/empty >/dev/null && cat $d/r2/empty/deeper/file"
mkdir -p $d/r3/full && echo x >$d/r3/full/x && mkdir $d/r3/src
expect_errno rename-dir-onto-nonempty 39 fsops rename $d/r3/src $d/r3/full
expect_errno rename-file-onto-dir 21 fsops rename $d/r2/y $d/r3/src
expect_errno rename-dir-onto-file 20 fsops rename $d/r3/src $d/r2/y
expect_errno rename-dir-into-itself 22 fsops rename $d/r3 $d/r3/src/inside
expect_errno rename-missing 2 fsops rename $d/r3/none $d/r3/other
check_out rename-dir-then-walk "x" sh -c "fsops rename $d/r3/full $d/r1/full2 >/dev/null && cat $d/r1/full2/x"
check_out rename-same-name "moved" sh -c "fsops rename $d/r2/y $d/r2/y >/dev/null && cat $d/r2/y"
fi

# --- symlinks ---
check_out symlink-readlink "f" sh -c "ln -s f $d/f.sym && readlink $d/f.sym"
check_out symlink-follow "first" sh -c "head -1 $d/f.sym"
check_out symlink-dangling "no/such/target" sh -c "ln -s no/such/target $d/dangle && readlink $d/dangle"
check_out symlink-to-dir "inner" sh -c "ln -s r2/empty $d/dsym && cat $d/dsym/deeper/file"
check_out symlink-lstat "symbolic link" stat -c %F $d/dangle
long_target="$(printf '%0200d' 0)/$(printf '%0200d' 1)"
check_out symlink-long-target "$long_target" sh -c "ln -s $long_target $d/longsym && readlink $d/longsym"

# --- special files (stored as metadata) ---
check_out mknod-fifo "fifo" sh -c "mknod $d/fifo p && stat -c %F $d/fifo"
check_out fifo-works "through the fifo" sh -c "(echo 'through the fifo' >$d/fifo &) ; cat $d/fifo"
check_out mknod-char "character special file 1,3" sh -c "mknod $d/chr c 1 3 && stat -c '%F %t,%T' $d/chr"
check_out mknod-block "block special file 8,1" sh -c "mknod $d/blk b 8 1 && stat -c '%F %t,%T' $d/blk"
check_out mknod-socket "socket" sh -c "fsops mksock $d/sock >/dev/null && stat -c %F $d/sock"

# --- hard links (Envoy: link creation works and both names read the same right after) ---
echo "linked content" >$d/lsrc
check link ln $d/lsrc $d/ldst
check_out link-same-content "linked content|linked content" sh -c "echo \"\$(cat $d/lsrc)|\$(cat $d/ldst)\""
check link-stat stat $d/lsrc $d/ldst
check link-ls-i ls -i $d/lsrc $d/ldst
expect_msg link-to-dir-refused "ln:" ln $d/a $d/alink

# --- statfs / fsync ---
check df df $m
check statfs fsops statfs $m
check fsync fsops fsync $d/f
check sync-data sync -d $d/f
check dd-fsync dd if=/dev/zero of=$d/synced bs=4096 count=2 conv=fsync

# --- readdir while the directory changes ---
mkdir $d/rd
i=0
while [ $i -lt 100 ]; do : >$d/rd/s$i; i=$((i + 1)); done
(i=0; while [ $i -lt 150 ]; do : >$d/rd/c$i; rm -f $d/rd/c$((i - 1)); i=$((i + 1)); done) &
churn=$!
bad=""
k=0
while [ $k -lt 15 ]; do
    fsops readdir $d/rd >/tmp/rd.ls 2>&1 || bad="$bad readdir-failed:$(cat /tmp/rd.ls)"
    n="$(grep -c '^s[0-9]*$' /tmp/rd.ls)"
    dups="$(sort /tmp/rd.ls | uniq -d | tr '\n' ' ')"
    [ "$n" = 100 ] || bad="$bad pass$k:stable=$n"
    [ -z "$dups" ] || bad="$bad pass$k:dups=$dups"
    k=$((k + 1))
done
wait $churn
if [ -z "$bad" ]; then result readdir-while-changing PASS "15 listings during 150 create/unlink"; else
    result readdir-while-changing FAIL "$(echo "$bad" | cut -c1-300)"; fi
check_out readdir-after-churn "101" sh -c "ls $d/rd | wc -l"

# --- unlink while open ---
echo "still readable" >$d/uwo
check_out unlink-while-open "still readable|gone" sh -c "exec 3<$d/uwo; rm $d/uwo; a=\$(cat <&3); [ -e $d/uwo ] && b=still || b=gone; echo \"\$a|\$b\""
check_out unlink-while-open-write "ok" sh -c "exec 3>$d/uwo2; rm $d/uwo2; echo more >&3 && echo ok"

# --- xattrs ---
out="$(fsops xattr $d/f 2>&1)"
case "$out" in
ok*) result xattr PASS "$out" ;;
*"(errno 95)"*) result xattr PASS "not supported (EOPNOTSUPP): $out" ;;
*) result xattr FAIL "$out" ;;
esac

# --- locks ---
check lock fsops lock $d/synced
if [ $dotl = 1 ]; then
    # 9P2000.L carries POSIX locks to the server (Tlock); Linux's .u client has no lock messages
    # and treats fcntl locks as no-ops, so conflicts are only checked over .L.
    fsops holdlock $d/synced 4 >/tmp/hold.out &
    holder=$!
    sleep 1
    expect_errno lock-conflict-eagain 11 fsops trylock $d/synced
    wait $holder
    check_out lock-released "ok locked" fsops trylock $d/synced
fi

# --- permissions as a non-root user (uid 1000) ---
check_out user-runs "1000:1000" fsops runas 1000 1000 sh -c 'echo $(id -u):$(id -g)'
mkdir $d/private && chmod 700 $d/private && echo secret >$d/private/s
mkdir $d/public && chmod 777 $d/public
echo rootdata >$d/rootfile && chmod 644 $d/rootfile
expect_msg eacces-list "Permission denied" fsops runas 1000 1000 ls $d/private
expect_errno eacces-create 13 fsops runas 1000 1000 fsops open $d/private/new creat,wronly
expect_errno eacces-walk 13 fsops runas 1000 1000 fsops open $d/private/s rdonly
expect_errno eacces-write-rootfile 13 fsops runas 1000 1000 fsops open $d/rootfile wronly
check_out user-reads-rootfile "rootdata" fsops runas 1000 1000 cat $d/rootfile
check_out user-create-owner "1000:1000" sh -c "fsops runas 1000 1000 fsops open $d/public/mine creat,wronly hi >/dev/null && stat -c %u:%g $d/public/mine"
expect_msg eperm-user-chown "Operation not permitted" fsops runas 1000 1000 chown 0 $d/public/mine
expect_msg eacces-unlink-in-private "Permission denied" fsops runas 1000 1000 rm -f $d/private/s

# --- name length ---
n255="$(printf 'n%.0s' $(seq 255))"
n256="${n255}n"
check name-255 fsops open "$d/$n255" creat,wronly
expect_errno name-256-enametoolong 36 fsops open "$d/$n256" creat,wronly
expect_msg mkdir-256-enametoolong "too long" mkdir "$d/$n256"

# --- rename / unlink storm from two processes ---
s=$d/storm
mkdir $s
yes AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA | head -c 8192 >/tmp/tplA
yes BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB | head -c 8192 >/tmp/tplB
N=60
storm() {
    w="$1" i=1
    : >/tmp/storm.$w
    while [ $i -le $N ]; do
        cp /tmp/tpl$w $s/$w.new.$i 2>>/tmp/storm.$w || echo "$i cp new" >>/tmp/storm.$w
        fsops rename $s/$w.new.$i $s/shared >>/tmp/storm.$w || echo "$i rename shared" >>/tmp/storm.$w
        cp /tmp/tpl$w $s/$w.$i 2>>/tmp/storm.$w || echo "$i cp" >>/tmp/storm.$w
        fsops rename $s/$w.$i $s/$w.moved.$i >>/tmp/storm.$w || echo "$i rename moved" >>/tmp/storm.$w
        [ $i -gt 2 ] && { rm $s/$w.moved.$((i - 2)) 2>>/tmp/storm.$w || echo "$i rm" >>/tmp/storm.$w; }
        fsops readdir $s >/dev/null 2>>/tmp/storm.$w || echo "$i readdir" >>/tmp/storm.$w
        i=$((i + 1))
    done
    sed -i '/^ok rename$/d' /tmp/storm.$w
}
t0="$(uptime_s)"
storm A &
pa=$!
storm B &
pb=$!
wait $pa $pb
t1="$(uptime_s)"
check_out storm-no-errors "" sh -c "cat /tmp/storm.A /tmp/storm.B | head -5"
check_out storm-listing "A.moved.$((N - 1)) A.moved.$N B.moved.$((N - 1)) B.moved.$N shared" sh -c "fsops readdir $s | sort | tr '\n' ' ' | sed 's/ \$//'"
shaA="$(sha256sum </tmp/tplA | cut -d' ' -f1)"
shaB="$(sha256sum </tmp/tplB | cut -d' ' -f1)"
bad=""
for f in $(fsops readdir $s); do
    h="$(sha256sum <$s/$f | cut -d' ' -f1)" || { bad="$bad $f:unreadable"; continue; }
    case "$f:$h" in
    A.*:"$shaA" | B.*:"$shaB" | shared:"$shaA" | shared:"$shaB") ;;
    *) bad="$bad $f:$(stat -c %s $s/$f)bytes" ;;
    esac
done
if [ -z "$bad" ]; then result storm-contents-whole PASS "2x$N iterations in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s"; else
    result storm-contents-whole FAIL "$bad"; fi

# --- cleanup; leave keep/ for the host-side client check ---
check cleanup rm -rf $d
check_out root-after-cleanup "" sh -c "ls $m"
mkdir -p $m/keep/nested/deeper
seq 1 2000 >$m/keep/seq
echo "hello from the guest" >$m/keep/hello
echo "deep file" >$m/keep/nested/deeper/leaf
dd if=/dev/urandom of=$m/keep/blob bs=65536 count=3 2>/dev/null
for f in seq hello nested/deeper/leaf blob; do echo "KEEP $f $(sha256sum <$m/keep/$f | cut -d' ' -f1)"; done
echo "posix: battery took $(awk -v a="$t_start" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }') s (guest clock)"
check umount umount $m
