/*
 * fsops: file-system calls that busybox has no applet for, for guest tests.
 * Each subcommand prints one line "ok ..." and exits 0, or prints the failing call and errno
 * and exits 1. Built statically by scripts/guest/build-initramfs.sh when a C compiler exists.
 *
 *   fsops lock FILE        fcntl write lock, F_GETLK, unlock; flock LOCK_EX / LOCK_UN
 *                          (9P2000.L Tlock / Tgetlock); an F_GETLK error is printed, not fatal
 *   fsops xattr FILE       setxattr, getxattr, listxattr, removexattr of user.envoy
 *                          (Txattrwalk / Txattrcreate)
 *   fsops fsync FILE       fsync and fdatasync (Tfsync)
 *   fsops statfs PATH      statfs, prints type, bsize, blocks, files, namelen (Tstatfs)
 *   fsops utimens FILE S   set atime and mtime to S seconds + 123456789 ns (Tsetattr)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/xattr.h>
#include <unistd.h>

static int fail(const char *what)
{
	printf("fail %s: %s (errno %d)\n", what, strerror(errno), errno);
	return 1;
}

static int do_lock(const char *path)
{
	int fd = open(path, O_RDWR);
	if (fd < 0)
		return fail("open");
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 100 };
	if (fcntl(fd, F_SETLK, &fl) < 0)
		return fail("F_SETLK write");
	/* Linux sends Tgetlock with type UNLCK, which some servers (diod) refuse with EINVAL:
	 * report the outcome instead of stopping, so the remaining lock calls still run. */
	struct flock q = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
	int getlk_errno = fcntl(fd, F_GETLK, &q) < 0 ? errno : 0;
	fl.l_type = F_UNLCK;
	if (fcntl(fd, F_SETLK, &fl) < 0)
		return fail("F_SETLK unlock");
	if (flock(fd, LOCK_EX) < 0)
		return fail("flock LOCK_EX");
	if (flock(fd, LOCK_UN) < 0)
		return fail("flock LOCK_UN");
	close(fd);
	if (getlk_errno != 0)
		printf("ok lock (F_GETLK failed: %s)\n", strerror(getlk_errno));
	else
		printf("ok lock getlk.type=%d\n", q.l_type);
	return 0;
}

static int do_xattr(const char *path)
{
	const char val[] = "envoy-xattr-value";
	char buf[256];
	if (setxattr(path, "user.envoy", val, sizeof val - 1, 0) < 0)
		return fail("setxattr");
	ssize_t n = getxattr(path, "user.envoy", buf, sizeof buf);
	if (n < 0)
		return fail("getxattr");
	if ((size_t)n != sizeof val - 1 || memcmp(buf, val, (size_t)n) != 0) {
		printf("fail getxattr returned %zd bytes, not the value set\n", n);
		return 1;
	}
	ssize_t l = listxattr(path, buf, sizeof buf);
	if (l < 0)
		return fail("listxattr");
	if (removexattr(path, "user.envoy") < 0)
		return fail("removexattr");
	if (getxattr(path, "user.envoy", buf, sizeof buf) >= 0 || errno != ENODATA) {
		printf("fail getxattr after removexattr: %s\n", strerror(errno));
		return 1;
	}
	printf("ok xattr list=%zd bytes\n", l);
	return 0;
}

static int do_fsync(const char *path)
{
	int fd = open(path, O_WRONLY | O_APPEND);
	if (fd < 0)
		return fail("open");
	if (write(fd, "synced\n", 7) != 7)
		return fail("write");
	if (fsync(fd) < 0)
		return fail("fsync");
	if (fdatasync(fd) < 0)
		return fail("fdatasync");
	close(fd);
	printf("ok fsync\n");
	return 0;
}

static int do_statfs(const char *path)
{
	struct statfs s;
	if (statfs(path, &s) < 0)
		return fail("statfs");
	printf("ok statfs type=0x%lx bsize=%ld blocks=%lu files=%lu namelen=%ld\n",
	       (unsigned long)s.f_type, (long)s.f_bsize, (unsigned long)s.f_blocks,
	       (unsigned long)s.f_files, (long)s.f_namelen);
	return 0;
}

static int do_utimens(const char *path, const char *secs)
{
	struct timespec ts[2];
	ts[0].tv_sec = ts[1].tv_sec = strtol(secs, NULL, 10);
	ts[0].tv_nsec = ts[1].tv_nsec = 123456789;
	if (utimensat(AT_FDCWD, path, ts, 0) < 0)
		return fail("utimensat");
	struct stat st;
	if (stat(path, &st) < 0)
		return fail("stat");
	printf("ok utimens mtime=%ld.%09ld\n", (long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "lock") == 0)
		return do_lock(argv[2]);
	if (argc == 3 && strcmp(argv[1], "xattr") == 0)
		return do_xattr(argv[2]);
	if (argc == 3 && strcmp(argv[1], "fsync") == 0)
		return do_fsync(argv[2]);
	if (argc == 3 && strcmp(argv[1], "statfs") == 0)
		return do_statfs(argv[2]);
	if (argc == 4 && strcmp(argv[1], "utimens") == 0)
		return do_utimens(argv[2], argv[3]);
	fprintf(stderr, "usage: fsops lock|xattr|fsync|statfs FILE | utimens FILE SECS\n");
	return 2;
}
