/* The output directory's lock and the removal of killed runs' temporary files (outdir.h). */
#define _POSIX_C_SOURCE 200809L /* fcntl locks, gethostname, kill */
#include "train/outdir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LOCK_NAME ".tern.lock"

char *tern_tmp_name(const char *path)
{
	size_t n = strlen(path) + 32;
	char *p = tern_malloc(n);
	if (p)
		snprintf(p, n, "%s.tmp.%ld", path, (long)getpid());
	return p;
}

bool tern_tmp_name_parse(const char *name, long *pid, bool *old)
{
	size_t n = strlen(name), d = 0;
	while (d < n && name[n - 1 - d] >= '0' && name[n - 1 - d] <= '9')
		d++;
	if (d == 0 || d > 9 || n < d + 5)
		return false;
	const char *suffix = name + n - d - 5; /* ".tmp." / ".old." */
	bool is_old = !strncmp(suffix, ".old.", 5);
	if (!is_old && strncmp(suffix, ".tmp.", 5))
		return false;
	if (suffix == name) /* nothing before the suffix */
		return false;
	if (pid)
		*pid = strtol(name + n - d, NULL, 10);
	if (old)
		*old = is_old;
	return true;
}

bool tern_pid_alive(long pid)
{
	if (pid <= 0)
		return false;
	return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

/* ---- the lock ---- */

struct tern_outdir_lock {
	int fd;
	char *path;
};

/* Reads the lock file's line "pid P host H started T" (fields empty when absent). */
static void read_holder(int fd, long *pid, char *host, size_t hcap, char *started, size_t scap)
{
	char buf[512];
	*pid = 0;
	host[0] = started[0] = 0;
	ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
	if (n <= 0)
		return;
	buf[n] = 0;
	char h[256] = "", t[64] = "";
	long p = 0;
	if (sscanf(buf, "pid %ld host %255s started %63s", &p, h, t) >= 1) {
		*pid = p;
		snprintf(host, hcap, "%s", h);
		snprintf(started, scap, "%s", t);
	}
}

static void holder_str(char *out, size_t cap, long pid, const char *host, const char *started)
{
	if (pid <= 0)
		snprintf(out, cap, "a run whose lock file holds no pid");
	else
		snprintf(out, cap, "pid %ld on %s, started %s", pid, host[0] ? host : "an unknown host",
			 started[0] ? started : "at an unknown time");
}

enum tern_status tern_outdir_lock(const char *dir, struct tern_outdir_lock **out, char *note, size_t cap)
{
	*out = NULL;
	if (note && cap)
		note[0] = 0;
	size_t n = strlen(dir) + sizeof LOCK_NAME + 2;
	char *path = tern_malloc(n);
	if (!path)
		return TERN_E_NOMEM;
	snprintf(path, n, "%s/%s", dir, LOCK_NAME);
	enum tern_status st = TERN_OK;
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		st = tern_fail(TERN_E_IO, "%s: cannot create the lock file: %s", path, strerror(errno));
		goto fail;
	}
	char host[256], started[64], me[256] = "", who[512];
	long pid;
	read_holder(fd, &pid, host, sizeof host, started, sizeof started);
	holder_str(who, sizeof who, pid, host, started);
	gethostname(me, sizeof me - 1);
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
	if (fcntl(fd, F_SETLK, &fl) != 0) {
		int e = errno;
		if (e == EACCES || e == EAGAIN) {
			st = tern_fail(
				TERN_E_INVALID,
				"%s: output_dir is in use by another tern train run (%s); wait for it to "
				"end or choose another output_dir",
				dir, who);
			goto fail;
		}
		/* a file system without locks: judge by the pid where the file names this host */
		if (pid > 0 && pid != (long)getpid() && !strcmp(host, me) && tern_pid_alive(pid)) {
			st = tern_fail(
				TERN_E_INVALID,
				"%s: output_dir is in use by another tern train run (%s); wait for it to "
				"end or choose another output_dir",
				dir, who);
			goto fail;
		}
		tern_log(TERN_LOG_WARN, "%s: cannot lock (%s); going on by the pid it names", path,
			 strerror(e));
	}
	if (pid > 0 && note && cap)
		snprintf(note, cap,
			 "note: %s: the run that held this output_dir (%s) is gone; taking over its lock",
			 dir, who);
	char line[512], when[64];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
	int len = snprintf(line, sizeof line, "pid %ld host %s started %s\n", (long)getpid(),
			   me[0] ? me : "?", when);
	if (ftruncate(fd, 0) != 0 || pwrite(fd, line, (size_t)len, 0) != (ssize_t)len) {
		st = tern_fail(TERN_E_IO, "%s: cannot write the lock file: %s", path, strerror(errno));
		goto fail;
	}
	struct tern_outdir_lock *l = tern_malloc(sizeof *l);
	if (!l) {
		st = TERN_E_NOMEM;
		goto fail;
	}
	l->fd = fd;
	l->path = path;
	*out = l;
	return TERN_OK;
fail:
	if (fd >= 0)
		close(fd);
	free(path);
	return st;
}

void tern_outdir_unlock(struct tern_outdir_lock *l, bool remove)
{
	if (!l)
		return;
	if (remove)
		unlink(l->path);
	else if (ftruncate(l->fd, 0) != 0)
		tern_log(TERN_LOG_WARN, "%s: cannot empty the lock file: %s", l->path, strerror(errno));
	close(l->fd); /* releases the fcntl lock */
	free(l->path);
	free(l);
}

/* ---- leftovers of killed runs ---- */

/* Removes path (a file or a tree; links are removed, never followed), adding the bytes of the
 * files to *bytes; false when something could not be removed. */
static bool remove_tree(const char *path, uint64_t *bytes)
{
	struct stat sb;
	if (lstat(path, &sb))
		return errno == ENOENT;
	if (!S_ISDIR(sb.st_mode)) {
		if (unlink(path))
			return false;
		*bytes += (uint64_t)sb.st_size;
		return true;
	}
	DIR *d = opendir(path);
	if (!d)
		return false;
	bool ok = true;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		char *p = tern_path_join(path, e->d_name);
		ok = p && remove_tree(p, bytes) && ok;
		free(p);
	}
	closedir(d);
	return ok && rmdir(path) == 0;
}

/* Whether the final name (before ".tmp.<pid>" / ".old.<pid>", len bytes of name) is one tern
 * writes in an output or offload directory: a leftover of anything else (output_dir may be a
 * directory shared with other programs) is never touched. */
static bool tern_owned(const char *name, size_t len)
{
	static const char *const exact[] = {"metrics.jsonl",
					    "config.yaml",
					    "adapter",
					    "adapter_config.json",
					    "adapter_model.safetensors",
					    "optimizer.safetensors",
					    "trainer_state.json",
					    "checksums.sha256"};
	for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
		if (strlen(exact[i]) == len && !strncmp(name, exact[i], len))
			return true;
	if (len > 11 && !strncmp(name, "checkpoint-", 11)) {
		size_t k = 11;
		while (k < len && name[k] >= '0' && name[k] <= '9')
			k++;
		return k == len;
	}
	return len > 6 && !strncmp(name + len - 6, ".tpack", 6); /* pack files */
}

void tern_outdir_clean(const char *dir, int64_t *n, uint64_t *bytes)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	long self = (long)getpid();
	struct dirent *e;
	while ((e = readdir(d))) {
		long pid;
		bool old;
		if (!tern_tmp_name_parse(e->d_name, &pid, &old) || pid == self ||
		    !tern_owned(e->d_name, (size_t)(strrchr(e->d_name, '.') - e->d_name) - 4) ||
		    tern_pid_alive(pid))
			continue;
		char *p = tern_path_join(dir, e->d_name);
		if (!p)
			break;
		if (old) {
			/* "<final>.old.<pid>": the previous copy; when the final name is missing the
			 * writer died between moving it aside and renaming the new one in: put it back */
			size_t fl = strlen(p) - strlen(strrchr(p, '.')) - 4;
			char *final = tern_malloc(fl + 1);
			struct stat sb;
			if (final) {
				memcpy(final, p, fl);
				final[fl] = 0;
				if (lstat(final, &sb) && errno == ENOENT) {
					if (rename(p, final))
						tern_log(TERN_LOG_WARN, "cannot restore %s from %s: %s",
							 final, p, strerror(errno));
					else
						tern_log(
							TERN_LOG_WARN,
							"%s: restored from %s, left by a killed run (pid %ld)",
							final, p, pid);
					free(final);
					free(p);
					continue;
				}
				free(final);
			}
		}
		uint64_t b = 0;
		if (remove_tree(p, &b)) {
			if (n)
				(*n)++;
		} else {
			tern_log(TERN_LOG_WARN, "cannot remove %s (left by a killed run, pid %ld): %s", p,
				 pid, strerror(errno));
		}
		if (bytes)
			*bytes += b;
		free(p);
	}
	closedir(d);
}
