# shellcheck shell=sh
# A tree workload through Linux v9fs against envoyd (tar, cp -a, diff -r, find, du, mv of a
# tree, sparse file, rename over, symlinked directory), run by tests/guest_v9fs.rs.
port="$(arg port)"
m=/mnt/9p
mkdir -p $m
check mount mount -t 9p -o "trans=tcp,port=$port,version=9p2000.L,aname=/default,uname=root,access=user,msize=262144" 10.0.2.2 $m
check tar-c sh -c "cd / && tar cf /tmp/bin.tar bin lib 2>/dev/null; ls -la /tmp/bin.tar"
check tar-x sh -c "mkdir $m/t && cd $m/t && tar xf /tmp/bin.tar"
check_out count-eq "same" sh -c "a=\$(cd / && find bin lib | wc -l); b=\$(cd $m/t && find bin lib | wc -l); [ \$a = \$b ] && echo same || echo \$a \$b"
check cp-a cp -a $m/t $m/t2
check_out diff "same" sh -c "diff -r $m/t $m/t2 >/dev/null && echo same"
check_out symlinks "same" sh -c "[ \$(find $m/t -type l | wc -l) = \$(find $m/t2 -type l | wc -l) ] && echo same"
check du du -s $m/t
check mv-tree mv $m/t2 $m/t/moved
check_out find-after "1" sh -c "find $m/t -maxdepth 1 -name moved | wc -l"
check rm-tree rm -rf $m/t
check_out empty "" ls $m
check sparse sh -c "dd if=/dev/zero of=$m/sp bs=1 count=1 seek=10000000 2>/dev/null && [ \$(stat -c %s $m/sp) = 10000001 ]"
check rename-over sh -c "echo a >$m/x && echo b >$m/y && mv $m/x $m/y && [ \$(cat $m/y) = a ] && [ ! -e $m/x ]"
check ln-s-dir sh -c "mkdir $m/d && ln -s d $m/dl && echo q >$m/dl/f && [ \$(cat $m/d/f) = q ]"
check rmdir-dl sh -c "rm $m/dl && rm -r $m/d $m/sp $m/y"
check_out final "" ls -A $m
check umount umount $m
