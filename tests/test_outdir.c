/* The output directory's pieces (train/outdir.h, train/manifest.h, train/resume.h): temporary
 * names, the lock against another process (a forked child holds it) and its take-over after that
 * process is gone, the removal of dead processes' leftovers, SHA-256 against FIPS 180-4's
 * vectors, and the resume checks' messages. */
#define _POSIX_C_SOURCE 200809L
#include "core/sha256.h"
#include "train/manifest.h"
#include "train/outdir.h"
#include "train/resume.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int passed, failed;

static void check(bool ok, const char *what, const char *detail)
{
	if (ok) {
		passed++;
	} else {
		failed++;
		printf("FAIL: %s: %s\n", what, detail ? detail : "");
	}
}

static char dir[256];

static char *in(const char *name)
{
	static char buf[4][512];
	static int k;
	char *p = buf[k++ % 4];
	snprintf(p, sizeof buf[0], "%s/%s", dir, name);
	return p;
}

static void touch(const char *path, size_t bytes)
{
	FILE *f = fopen(path, "wb");
	for (size_t i = 0; f && i < bytes; i++)
		fputc('x', f);
	if (f)
		fclose(f);
}

static bool exists(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0;
}

static void test_names(void)
{
	long pid = 0;
	bool old = true;
	check(tern_tmp_name_parse("metrics.jsonl.tmp.1234", &pid, &old) && pid == 1234 && !old, "tmp name",
	      NULL);
	check(tern_tmp_name_parse("checkpoint-8.old.77", &pid, &old) && pid == 77 && old, "old name", NULL);
	check(!tern_tmp_name_parse("data.tmp", NULL, NULL) && !tern_tmp_name_parse(".tmp.12", NULL, NULL) &&
		      !tern_tmp_name_parse("x.tmp.", NULL, NULL) &&
		      !tern_tmp_name_parse("x.tmp.12a", NULL, NULL) &&
		      !tern_tmp_name_parse("x.new.12", NULL, NULL),
	      "names that are not tern's temporaries", NULL);
	char *t = tern_tmp_name("a/b.json");
	char want[64];
	snprintf(want, sizeof want, "a/b.json.tmp.%ld", (long)getpid());
	check(t && !strcmp(t, want), "tern_tmp_name", t);
	free(t);
	check(tern_pid_alive((long)getpid()) && !tern_pid_alive(999999999L), "pid liveness", NULL);
}

static void test_lock(void)
{
	int to_parent[2], to_child[2];
	if (pipe(to_parent) || pipe(to_child)) {
		printf("not run: lock against another process (no pipe)\n");
		return;
	}
	pid_t child = fork();
	if (child == 0) {
		struct tern_outdir_lock *l = NULL;
		char note[256], c = tern_outdir_lock(dir, &l, note, sizeof note) == TERN_OK ? 'y' : 'n';
		if (write(to_parent[1], &c, 1) != 1 || read(to_child[0], &c, 1) != 1)
			_exit(2);
		_exit(0); /* dies holding the lock: the kernel releases it, the file still names it */
	}
	char c = 0, note[512];
	check(read(to_parent[0], &c, 1) == 1 && c == 'y', "a child takes the lock", NULL);
	struct tern_outdir_lock *l = NULL;
	enum tern_status st = tern_outdir_lock(dir, &l, note, sizeof note);
	char want[128];
	snprintf(want, sizeof want, "in use by another tern train run (pid %ld on ", (long)child);
	check(st == TERN_E_INVALID && !l && strstr(tern_error(), want),
	      "a second lock is refused naming the holder", tern_error());
	if (write(to_child[1], "x", 1) != 1)
		printf("  (pipe write failed)\n");
	waitpid(child, NULL, 0);
	st = tern_outdir_lock(dir, &l, note, sizeof note);
	snprintf(want, sizeof want, "(pid %ld on ", (long)child);
	check(st == TERN_OK && l && strstr(note, want) && strstr(note, "is gone; taking over its lock"),
	      "the lock of a dead process is taken over with a note", st ? tern_error() : note);
	char line[256] = "";
	FILE *f = fopen(in(".tern.lock"), "r");
	if (f) {
		if (!fgets(line, sizeof line, f))
			line[0] = 0;
		fclose(f);
	}
	snprintf(want, sizeof want, "pid %ld host ", (long)getpid());
	check(!strncmp(line, want, strlen(want)) && strstr(line, " started 20"),
	      "the lock file names this run", line);
	tern_outdir_unlock(l, false);
	struct stat sb;
	check(!stat(in(".tern.lock"), &sb) && sb.st_size == 0, "unlock empties the file", NULL);
	st = tern_outdir_lock(dir, &l, note, sizeof note);
	check(st == TERN_OK && note[0] == 0, "an empty lock file is taken without a note", note);
	tern_outdir_unlock(l, true);
	check(!exists(in(".tern.lock")), "unlock with remove deletes the file", NULL);
	close(to_parent[0]);
	close(to_parent[1]);
	close(to_child[0]);
	close(to_child[1]);
}

static void test_clean(void)
{
	char live[64];
	snprintf(live, sizeof live, "metrics.jsonl.tmp.%ld", (long)getppid());
	mkdir(in("checkpoint-4.tmp.999999999"), 0755);
	touch(in("checkpoint-4.tmp.999999999/optimizer.safetensors"), 100);
	touch(in("base-nf4-dq.tpack.tmp.999999999"), 1000);
	mkdir(in("checkpoint-8.old.999999999"), 0755);
	touch(in("checkpoint-8.old.999999999/trainer_state.json"), 10);
	mkdir(in("adapter"), 0755);
	mkdir(in("adapter.old.999999999"), 0755);
	touch(in(live), 1);
	touch(in("notes.txt.tmp.999999999"), 1);
	int64_t n = 0;
	uint64_t bytes = 0;
	tern_outdir_clean(dir, &n, &bytes);
	check(n == 3 && bytes == 1100, "three leftovers removed, 1100 bytes", NULL);
	check(!exists(in("checkpoint-4.tmp.999999999")) && !exists(in("base-nf4-dq.tpack.tmp.999999999")) &&
		      !exists(in("adapter.old.999999999")) && exists(in("adapter")),
	      "dead temporaries removed; an .old beside its final name removed", NULL);
	check(exists(in("checkpoint-8/trainer_state.json")) && !exists(in("checkpoint-8.old.999999999")),
	      "an .old whose final name is missing is put back", NULL);
	check(exists(in(live)) && exists(in("notes.txt.tmp.999999999")),
	      "a live process's and a foreign name stay", NULL);
}

static void test_sha256(void)
{
	char hex[65];
	tern_sha256_hex("abc", 3, hex);
	check(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"), "sha256(abc)",
	      hex);
	tern_sha256_hex("", 0, hex);
	check(!strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"), "sha256()",
	      hex);
	const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	tern_sha256_hex(m, strlen(m), hex);
	check(!strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
	      "sha256(448 bits)", hex);
	char *big = malloc(1000000);
	if (big) {
		memset(big, 'a', 1000000);
		tern_sha256_hex(big, 1000000, hex);
		check(!strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"),
		      "sha256(a × 10^6)", hex);
		touch(in("big"), 0);
		FILE *f = fopen(in("big"), "wb");
		fwrite(big, 1, 1000000, f);
		fclose(f);
		check(tern_sha256_file(in("big"), hex) == TERN_OK &&
			      !strcmp(hex,
				      "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"),
		      "sha256 of a file read in chunks", hex);
		free(big);
	}
	const char *files[] = {"big"};
	check(tern_manifest_write(dir, files, 1) == TERN_OK && tern_manifest_verify(dir, files, 1) == TERN_OK,
	      "manifest written and verified", tern_error());
	FILE *f = fopen(in("big"), "r+b");
	fseek(f, 500000, SEEK_SET);
	fputc('b', f);
	fclose(f);
	check(tern_manifest_verify(dir, files, 1) == TERN_E_FORMAT &&
		      strstr(tern_error(), "/big: checksum mismatch"),
	      "one changed byte fails the manifest naming the file", tern_error());
}

static void test_resume(void)
{
	struct tern_train_state a = {
		.version = 2, .data_rows = 40, .data_seq_len = 24, .row = 16, .n_data_files = 1};
	snprintf(a.data_fingerprint, sizeof a.data_fingerprint, "0123456789abcdef");
	snprintf(a.data_files[0].path, sizeof a.data_files[0].path, "d.jsonl");
	snprintf(a.data_files[0].fingerprint, sizeof a.data_files[0].fingerprint, "1111111111111111");
	struct tern_train_state b = a;
	check(tern_resume_check("ck", &a, &b) == TERN_OK, "the same data resumes", tern_error());
	b.data_seq_len = 32;
	check(tern_resume_check("ck", &a, &b) == TERN_E_INVALID &&
		      strstr(tern_error(),
			     "ck: sequence_len changed since this checkpoint (24 then, 32 now)"),
	      "sequence_len changed", tern_error());
	b = a;
	snprintf(b.data_fingerprint, sizeof b.data_fingerprint, "fedcba9876543210");
	check(tern_resume_check("ck", &a, &b) == TERN_E_INVALID &&
		      strstr(tern_error(), "the dataset files are the same, so the tokenizer, chat template"),
	      "rows changed, files the same", tern_error());
	snprintf(b.data_files[0].path, sizeof b.data_files[0].path, "e.jsonl");
	b.data_rows = 41;
	check(tern_resume_check("ck", &a, &b) == TERN_E_INVALID &&
		      strstr(tern_error(),
			     "(40 rows then, 41 now; dataset d.jsonl is no longer in datasets)"),
	      "a dataset replaced", tern_error());
	b = a;
	a.row = 41;
	check(tern_resume_check("ck", &a, &b) == TERN_E_INVALID &&
		      strstr(tern_error(), "data position (row 41 of epoch 0) is past the 40 training rows"),
	      "a row past the data", tern_error());
	a.version = 1;
	a.row = 3;
	a.data_fingerprint[0] = 0;
	check(tern_resume_check("ck", &a, &b) == TERN_OK, "a version-1 state passes (with a warning)",
	      tern_error());
	char h1[17], h2[17];
	tern_fingerprint_hex("abcdefghij", 10, h1);
	tern_fingerprint_hex("abcdefghik", 10, h2);
	check(strlen(h1) == 16 && strcmp(h1, h2), "fingerprints differ for one changed byte", h1);
}

int main(void)
{
	snprintf(dir, sizeof dir, "/tmp/tern_outdir_XXXXXX");
	if (!mkdtemp(dir)) {
		printf("not run: no temporary directory\n");
		return 0;
	}
	test_names();
	test_lock();
	test_clean();
	test_sha256();
	test_resume();
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd))
		printf("(could not remove %s)\n", dir);
	printf("%d passed, %d failed\n", passed, failed);
	return failed != 0;
}
