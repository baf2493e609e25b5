/* The output directory of a run: its lock, the temporary names every writer uses, and the removal
 * of what killed runs left behind (docs/ARCHITECTURE.md, "Output directory: lock, atomic writes,
 * resume checks").
 *
 * Temporary names: every file or directory tern writes is first written as "<final>.tmp.<pid>"
 * in the same directory and renamed into place; a directory being replaced is moved aside to
 * "<final>.old.<pid>" and removed once the new one is in. <pid> is the writer's process id, so a
 * later run can tell the leftovers of a dead process from the files of a live one. */
#ifndef TERN_TRAIN_OUTDIR_H
#define TERN_TRAIN_OUTDIR_H

#include "core/core.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "<path>.tmp.<pid of this process>" (malloc'ed; NULL when out of memory). */
char *tern_tmp_name(const char *path);

/* Whether name ends in ".tmp.<digits>" or ".old.<digits>": the pid into *pid, whether it is an
 * ".old." name into *old (both optional). */
bool tern_tmp_name_parse(const char *name, long *pid, bool *old);

/* Whether process pid exists (kill(pid, 0) succeeds or fails with EPERM). */
bool tern_pid_alive(long pid);

struct tern_outdir_lock;

/* Takes <dir>/.tern.lock (created when missing; dir must exist): an exclusive fcntl lock held
 * until tern_outdir_unlock or the process ends, so a killed run never leaves a stale lock. The
 * file then holds one line "pid <pid> host <hostname> started <UTC time>". When another process
 * holds the lock, fails (TERN_E_INVALID) with one line naming that run from the
 * file. When the file names a run that is gone (the lock was free), note[cap] receives a line
 * saying that its lock is taken over; otherwise note is "". */
enum tern_status tern_outdir_lock(const char *dir, struct tern_outdir_lock **out, char *note, size_t cap);

/* Releases the lock: the file is emptied (remove = false) or removed (remove = true). NULL is a
 * no-op. */
void tern_outdir_unlock(struct tern_outdir_lock *l, bool remove);

/* Removes the temporary names of dead processes directly in dir ("*.tmp.<pid>" files and
 * directories, "*.old.<pid>" directories whose final name exists) whose final name is one tern
 * writes there (metrics.jsonl, config.yaml, adapter, checkpoint-<n>, the adapter and checkpoint
 * files, *.tpack); an "*.old.<pid>" whose final name is missing (a replace that was killed between
 * its two renames) is renamed back. Entries of live processes, of this process, and everything
 * else are left alone. *n and *bytes (optional)
 * are increased by what was removed. A directory that cannot be listed is skipped (no error);
 * removal failures are logged as warnings. */
void tern_outdir_clean(const char *dir, int64_t *n, uint64_t *bytes);

#endif
