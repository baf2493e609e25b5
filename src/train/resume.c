/* Resume checks: the data fingerprint of a checkpoint (resume.h). */
#define _POSIX_C_SOURCE 200809L
#include "train/resume.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct fp {
	uint64_t h, n;
};

static uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static void fp_add(struct fp *f, const void *data, size_t n)
{
	const uint8_t *p = data;
	uint64_t h = f->h;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t w;
		memcpy(&w, p + i, 8);
		h = rotl(h ^ (w * 0x87c37b91114253d5ull), 31) * 0x4cf5ad432745937full + 0x52dce729;
	}
	for (; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	f->h = h;
	f->n += n;
}

static void fp_hex(const struct fp *f, char out[17])
{
	uint64_t h = f->h ^ f->n;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 33;
	snprintf(out, 17, "%016" PRIx64, h);
}

void tern_fingerprint_hex(const void *data, size_t n, char out[17])
{
	struct fp f = {0x9e3779b97f4a7c15ull, 0};
	fp_add(&f, data, n);
	fp_hex(&f, out);
}

static bool file_fingerprint(const char *path, char out[17])
{
	struct stat sb;
	out[0] = 0;
	if (stat(path, &sb) || !S_ISREG(sb.st_mode))
		return false;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	size_t cap = (size_t)1 << 20;
	uint8_t *buf = tern_malloc(cap);
	struct fp f = {0x9e3779b97f4a7c15ull, 0};
	bool ok = buf != NULL;
	while (ok) {
		ssize_t r = read(fd, buf, cap);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			ok = r == 0;
			break;
		}
		/* whole 8-byte words per chunk: the chunking does not change the hash */
		fp_add(&f, buf, (size_t)r);
	}
	free(buf);
	close(fd);
	if (ok)
		fp_hex(&f, out);
	return ok;
}

void tern_state_set_data(struct tern_train_state *st, const struct tern_rows *train,
			 const struct tern_config *c)
{
	size_t n = (size_t)train->n_rows * (size_t)train->S * 4;
	struct fp f = {0x9e3779b97f4a7c15ull, 0};
	int64_t shape[2] = {train->n_rows, train->S};
	fp_add(&f, shape, sizeof shape);
	if (n) {
		fp_add(&f, train->tokens, n);
		fp_add(&f, train->targets, n);
		fp_add(&f, train->positions, n);
		fp_add(&f, train->segments, n);
	}
	st->data_rows = train->n_rows;
	st->data_seq_len = train->S;
	fp_hex(&f, st->data_fingerprint);
	st->n_data_files = 0;
	for (int i = 0; i < c->n_datasets && i < TERN_STATE_FILES; i++) {
		const char *p = c->datasets[i].path ? c->datasets[i].path : "";
		snprintf(st->data_files[i].path, sizeof st->data_files[i].path, "%s", p);
		file_fingerprint(p, st->data_files[i].fingerprint);
		st->n_data_files = i + 1;
	}
}

enum tern_status tern_resume_check(const char *ckpt, const struct tern_train_state *then,
				   const struct tern_train_state *now)
{
	const char *fix = "resume with the data it was written with, or start over from its weights "
			  "(lora_model_dir: the checkpoint, without resume_from_checkpoint)";
	if (then->version < 2 || !then->data_fingerprint[0]) {
		tern_log(TERN_LOG_WARN,
			 "%s was written by an older tern without a data fingerprint; the data it resumes on "
			 "is not checked",
			 ckpt);
	} else if (then->data_seq_len != now->data_seq_len) {
		return tern_fail(TERN_E_INVALID,
				 "%s: sequence_len changed since this checkpoint (%" PRId64 " then, %" PRId64
				 " now); %s",
				 ckpt, then->data_seq_len, now->data_seq_len, fix);
	} else if (strcmp(then->data_fingerprint, now->data_fingerprint)) {
		/* name a dataset file that changed when one did */
		char what[1200] = "";
		for (int i = 0; i < then->n_data_files && !what[0]; i++) {
			const char *p = then->data_files[i].path;
			bool found = false;
			for (int j = 0; j < now->n_data_files && !found; j++) {
				if (strcmp(p, now->data_files[j].path))
					continue;
				found = true;
				if (strcmp(then->data_files[i].fingerprint, now->data_files[j].fingerprint))
					snprintf(what, sizeof what, "dataset %s changed", p);
			}
			if (!found)
				snprintf(what, sizeof what, "dataset %s is no longer in datasets", p);
		}
		for (int j = 0; j < now->n_data_files && !what[0]; j++) {
			bool found = false;
			for (int i = 0; i < then->n_data_files && !found; i++)
				found = !strcmp(then->data_files[i].path, now->data_files[j].path);
			if (!found)
				snprintf(what, sizeof what, "dataset %s was added", now->data_files[j].path);
		}
		if (!what[0])
			snprintf(
				what, sizeof what,
				"the dataset files are the same, so the tokenizer, chat template, packing or "
				"masking changed");
		if (then->data_rows != now->data_rows)
			return tern_fail(TERN_E_INVALID,
					 "%s: the training data changed since this checkpoint (%" PRId64
					 " rows then, %" PRId64 " now; %s); %s",
					 ckpt, then->data_rows, now->data_rows, what, fix);
		return tern_fail(TERN_E_INVALID,
				 "%s: the training data changed since this checkpoint (same %" PRId64
				 " rows, different tokens or labels: fingerprint %s then, %s now; %s); %s",
				 ckpt, now->data_rows, then->data_fingerprint, now->data_fingerprint, what,
				 fix);
	}
	if (then->row > now->data_rows)
		return tern_fail(TERN_E_INVALID,
				 "%s: its data position (row %" PRId64 " of epoch %" PRId64
				 ") is past the %" PRId64 " training rows of this data; %s",
				 ckpt, then->row, then->epoch, now->data_rows, fix);
	return TERN_OK;
}
