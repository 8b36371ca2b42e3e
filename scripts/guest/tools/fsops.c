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
 *   fsops open FILE FLAGS [DATA]  open(2) with comma-separated FLAGS (rdonly wronly rdwr creat
 *                          excl trunc append directory nofollow), mode 0644; writes DATA if given
 *   fsops rename OLD NEW   rename(2) itself (busybox mv copies on EXDEV, hiding it)
 *   fsops mksock PATH      bind an AF_UNIX socket at PATH (a socket file: Tmknod)
 *   fsops copysync SRC DST copy SRC to a new DST, fsync it, close; "ok" only after fsync returned
 *   fsops holdlock FILE S  take an fcntl write lock on FILE, print "ok held", keep it S seconds
 *   fsops trylock FILE     try a non-blocking fcntl write lock (EAGAIN when another holds it)
 *   fsops runas UID GID CMD [ARGS...]  drop to UID/GID (no supplementary groups) and exec CMD
 *   fsops readdir DIR      print the names readdir(3) returns, one a line (no stat, unlike ls)
 *
 * Failures print "fail WHAT: MESSAGE (errno N)", so scripts can match the errno number.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <grp.h>
#include <dirent.h>
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

static int do_open(const char *path, const char *flags, const char *data)
{
	static const struct {
		const char *name;
		int flag;
	} names[] = {
		{ "rdonly", O_RDONLY }, { "wronly", O_WRONLY },	      { "rdwr", O_RDWR },
		{ "creat", O_CREAT },	{ "excl", O_EXCL },	      { "trunc", O_TRUNC },
		{ "append", O_APPEND }, { "directory", O_DIRECTORY }, { "nofollow", O_NOFOLLOW },
	};
	int f = 0;
	char buf[256];
	snprintf(buf, sizeof buf, "%s", flags);
	for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		size_t i;
		for (i = 0; i < sizeof names / sizeof names[0]; i++)
			if (strcmp(tok, names[i].name) == 0)
				break;
		if (i == sizeof names / sizeof names[0]) {
			fprintf(stderr, "fsops open: unknown flag %s\n", tok);
			return 2;
		}
		f |= names[i].flag;
	}
	int fd = open(path, f, 0644);
	if (fd < 0)
		return fail("open");
	if (data) {
		size_t n = strlen(data);
		if (write(fd, data, n) != (ssize_t)n)
			return fail("write");
	}
	if (close(fd) < 0)
		return fail("close");
	printf("ok open\n");
	return 0;
}

static int do_rename(const char *from, const char *to)
{
	if (rename(from, to) < 0)
		return fail("rename");
	printf("ok rename\n");
	return 0;
}

static int do_mksock(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof a.sun_path) {
		printf("fail path too long for sun_path\n");
		return 1;
	}
	strcpy(a.sun_path, path);
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	if (s < 0)
		return fail("socket");
	if (bind(s, (struct sockaddr *)&a, sizeof a) < 0)
		return fail("bind");
	close(s);
	printf("ok mksock\n");
	return 0;
}

static int do_copysync(const char *src, const char *dst)
{
	char buf[65536];
	int in = open(src, O_RDONLY);
	if (in < 0)
		return fail("open src");
	int out = open(dst, O_WRONLY | O_CREAT | O_EXCL, 0644);
	if (out < 0)
		return fail("open dst");
	for (;;) {
		ssize_t n = read(in, buf, sizeof buf);
		if (n < 0)
			return fail("read");
		if (n == 0)
			break;
		for (ssize_t off = 0; off < n;) {
			ssize_t w = write(out, buf + off, (size_t)(n - off));
			if (w < 0)
				return fail("write");
			off += w;
		}
	}
	if (fsync(out) < 0)
		return fail("fsync");
	if (close(out) < 0)
		return fail("close");
	close(in);
	printf("ok copysync\n");
	return 0;
}

static int do_holdlock(const char *path, const char *secs)
{
	int fd = open(path, O_RDWR);
	if (fd < 0)
		return fail("open");
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
	if (fcntl(fd, F_SETLK, &fl) < 0)
		return fail("F_SETLK");
	printf("ok held\n");
	fflush(stdout);
	sleep((unsigned)strtoul(secs, NULL, 10));
	close(fd);
	return 0;
}

static int do_trylock(const char *path)
{
	int fd = open(path, O_RDWR);
	if (fd < 0)
		return fail("open");
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
	if (fcntl(fd, F_SETLK, &fl) < 0)
		return fail("F_SETLK");
	close(fd);
	printf("ok locked\n");
	return 0;
}

static int do_runas(char **argv)
{
	gid_t gid = (gid_t)strtoul(argv[1], NULL, 10);
	uid_t uid = (uid_t)strtoul(argv[0], NULL, 10);
	if (setgroups(0, NULL) < 0)
		return fail("setgroups");
	if (setgid(gid) < 0)
		return fail("setgid");
	if (setuid(uid) < 0)
		return fail("setuid");
	execvp(argv[2], argv + 2);
	return fail("runas execvp");
}

static int do_readdir(const char *path)
{
	DIR *d = opendir(path);
	if (!d)
		return fail("opendir");
	struct dirent *e;
	errno = 0;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			printf("%s\n", e->d_name);
		errno = 0;
	}
	if (errno != 0)
		return fail("readdir");
	closedir(d);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 4 && argc <= 5 && strcmp(argv[1], "open") == 0)
		return do_open(argv[2], argv[3], argc == 5 ? argv[4] : NULL);
	if (argc == 4 && strcmp(argv[1], "rename") == 0)
		return do_rename(argv[2], argv[3]);
	if (argc == 3 && strcmp(argv[1], "mksock") == 0)
		return do_mksock(argv[2]);
	if (argc == 4 && strcmp(argv[1], "copysync") == 0)
		return do_copysync(argv[2], argv[3]);
	if (argc == 4 && strcmp(argv[1], "holdlock") == 0)
		return do_holdlock(argv[2], argv[3]);
	if (argc == 3 && strcmp(argv[1], "trylock") == 0)
		return do_trylock(argv[2]);
	if (argc == 3 && strcmp(argv[1], "readdir") == 0)
		return do_readdir(argv[2]);
	if (argc >= 5 && strcmp(argv[1], "runas") == 0)
		return do_runas(argv + 2);
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
	fprintf(stderr, "usage: fsops lock|xattr|fsync|statfs|mksock|trylock|readdir FILE | utimens FILE SECS |\n"
			"       open FILE FLAGS [DATA] | rename OLD NEW | copysync SRC DST |\n"
			"       holdlock FILE SECS | runas UID GID CMD [ARGS...]\n");
	return 2;
}
