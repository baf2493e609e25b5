/* Writing a bitsandbytes 4-bit model directory from a loaded model (formats.md §1.4), as
 * transformers' save_pretrained of a load_in_4bit model writes it:
 *	config.json          the source config.json + "quantization_config" (bitsandbytes, nf4)
 *	model.safetensors    per projection `<m>.weight` U8 [(n+1)/2, 1], `.absmax` (u8 nested or
 *	                     f32), `.quant_map` F32 [16], (`.nested_absmax`, `.nested_quant_map`),
 *	                     `.quant_state.bitsandbytes__nf4` (JSON bytes); every other tensor as
 *	                     it is in the pack (the checkpoint's own dtype)
 *	tokenizer files      copied when present
 * Every file is written to a temporary name and renamed. */
#define _GNU_SOURCE
#include "model/model.h"

#include "quant/quant.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *torch_dtype(enum tern_dtype d)
{
	return d == TERN_F32 ? "float32" : d == TERN_F16 ? "float16" : "bfloat16";
}

static enum tern_st_dtype st_dtype(enum tern_dtype d)
{
	return d == TERN_F32 ? TERN_ST_F32 : d == TERN_F16 ? TERN_ST_F16 : TERN_ST_BF16;
}

/* Python's repr of a float: the shortest %.Ng that reads back to the same double. */
static void py_float(char *buf, size_t size, double v)
{
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(buf, size, "%.*g", prec, v);
		if (strtod(buf, NULL) == v)
			break;
	}
	if (!strpbrk(buf, ".eEn")) /* 1 -> 1.0 */
		snprintf(buf + strlen(buf), size - strlen(buf), ".0");
}

/* Writes bytes to path atomically. */
static enum tern_status write_atomic(const char *path, const void *data, size_t n)
{
	char tmp[4200];
	snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return tern_fail(TERN_E_IO, "%s: cannot create: %s", tmp, strerror(errno));
	const uint8_t *p = data;
	size_t left = n;
	while (left) {
		ssize_t w = write(fd, p, left);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			int e = errno;
			close(fd);
			unlink(tmp);
			return tern_fail(TERN_E_IO, "%s: write failed: %s", tmp, strerror(e));
		}
		p += w;
		left -= (size_t)w;
	}
	if (fsync(fd) || close(fd) || rename(tmp, path)) {
		int e = errno;
		unlink(tmp);
		return tern_fail(TERN_E_IO, "%s: cannot write: %s", path, strerror(e));
	}
	return TERN_OK;
}

static enum tern_status copy_file(const char *from, const char *to)
{
	char *buf = NULL;
	size_t n = 0;
	enum tern_status st = tern_read_file(from, (size_t)1 << 32, &buf, &n);
	if (st == TERN_OK)
		st = write_atomic(to, buf, n);
	free(buf);
	return st;
}

static enum tern_status write_config(const struct tern_model *m, const char *out_dir, bool dq)
{
	char path[4200];
	json_error_t err;
	snprintf(path, sizeof path, "%s/config.json", m->dir);
	json_t *root = json_load_file(path, JSON_PRESERVE_ORDER, &err);
	if (!root)
		return tern_fail(TERN_E_FORMAT, "%s: %s", path, err.text);
	json_t *q = json_object();
	json_object_set_new(q, "_load_in_4bit", json_true());
	json_object_set_new(q, "_load_in_8bit", json_false());
	json_object_set_new(q, "bnb_4bit_compute_dtype", json_string("bfloat16"));
	json_object_set_new(q, "bnb_4bit_quant_storage", json_string("uint8"));
	json_object_set_new(q, "bnb_4bit_quant_type", json_string("nf4"));
	json_object_set_new(q, "bnb_4bit_use_double_quant", json_boolean(dq));
	json_object_set_new(q, "llm_int8_enable_fp32_cpu_offload", json_false());
	json_object_set_new(q, "llm_int8_has_fp16_weight", json_false());
	json_object_set_new(q, "llm_int8_skip_modules", json_null());
	json_object_set_new(q, "llm_int8_threshold", json_real(6.0));
	json_object_set_new(q, "load_in_4bit", json_true());
	json_object_set_new(q, "load_in_8bit", json_false());
	json_object_set_new(q, "quant_method", json_string("bitsandbytes"));
	json_object_set_new(root, "quantization_config", q);
	char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(root);
	if (!text)
		return tern_fail(TERN_E_NOMEM, "out of host memory writing config.json");
	snprintf(path, sizeof path, "%s/config.json", out_dir);
	size_t len = strlen(text);
	text[len] = 0;
	char *withnl = realloc(text, len + 2);
	if (!withnl) {
		free(text);
		return TERN_E_NOMEM;
	}
	withnl[len] = '\n';
	enum tern_status st = write_atomic(path, withnl, len + 1);
	free(withnl);
	return st;
}

enum tern_status tern_model_write_bnb(const struct tern_model *m, const char *out_dir)
{
	enum tern_status st = TERN_OK;
	const struct tern_pack *p = m->pack;
	struct tern_st_desc *d = NULL;
	char **json = NULL;
	size_t nd = 0;
	int dq = -1;
	float dmap[256];
	tern_dynamic_map(dmap);

	for (uint32_t i = 0; i < p->n_tensors; i++) {
		const struct tern_pack_tensor *t = &p->t[i];
		if (!tern_role_is_proj((int)t->role))
			continue;
		if (t->dtype != TERN_NF4 && t->dtype != TERN_NF4_DQ)
			return tern_fail(
				TERN_E_INVALID,
				"%s: a bitsandbytes checkpoint needs nf4 or nf4-dq projections, %s is %s",
				m->dir, t->name, tern_dtype_name(t->dtype));
		int this_dq = t->dtype == TERN_NF4_DQ;
		if (dq >= 0 && dq != this_dq)
			return tern_fail(
				TERN_E_INVALID,
				"%s: projections mix nf4 and nf4-dq; bitsandbytes' config has one double-quant flag",
				m->dir);
		dq = this_dq;
	}
	if (mkdir(out_dir, 0755) && errno != EEXIST)
		return tern_fail(TERN_E_IO, "%s: cannot create: %s", out_dir, strerror(errno));

	d = tern_calloc((size_t)p->n_tensors * 6, sizeof *d);
	json = tern_calloc(p->n_tensors, sizeof *json);
	if (!d || !json) {
		st = TERN_E_NOMEM;
		goto out;
	}
	/* Names: the pack's own, plus suffixes; the strings live in a pool freed at the end. */
	for (uint32_t i = 0; i < p->n_tensors; i++) {
		const struct tern_pack_tensor *t = &p->t[i];
		if (!tern_role_is_proj((int)t->role)) {
			d[nd++] = (struct tern_st_desc){t->name,
							st_dtype(t->dtype),
							t->ndim,
							{t->shape[0], t->shape[1]},
							tern_pack_part(p, t, TERN_PART_DATA)};
			continue;
		}
		int64_t n = t->shape[0] * t->shape[1], nb = tern_nf4_blocks(n, t->blocksize);
		char off[40], buf[512];
		py_float(off, sizeof off, (double)t->offset);
		if (t->dtype == TERN_NF4_DQ)
			snprintf(
				buf, sizeof buf,
				"{\"quant_type\": \"nf4\", \"blocksize\": %d, \"dtype\": \"%s\", \"shape\": [%lld, %lld], "
				"\"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": %s}",
				t->blocksize, torch_dtype(t->src_dtype), (long long)t->shape[0],
				(long long)t->shape[1], off);
		else
			snprintf(
				buf, sizeof buf,
				"{\"quant_type\": \"nf4\", \"blocksize\": %d, \"dtype\": \"%s\", \"shape\": [%lld, %lld]}",
				t->blocksize, torch_dtype(t->src_dtype), (long long)t->shape[0],
				(long long)t->shape[1]);
		/* one allocation: JSON text, then the five derived names */
		size_t nl = strlen(t->name), jl = strlen(buf);
		json[i] = tern_malloc(jl + 1 + 5 * (nl + 40));
		if (!json[i]) {
			st = TERN_E_NOMEM;
			goto out;
		}
		memcpy(json[i], buf, jl + 1);
		char *names = json[i] + jl + 1;
		static const char *const sfx[5] = {".absmax", ".quant_map", ".nested_absmax",
						   ".nested_quant_map", ".quant_state.bitsandbytes__nf4"};
		char *nm[5];
		for (int k = 0; k < 5; k++) {
			nm[k] = names + (size_t)k * (nl + 40);
			snprintf(nm[k], nl + 40, "%s%s", t->name, sfx[k]);
		}
		d[nd++] = (struct tern_st_desc){
			t->name, TERN_ST_U8, 2, {(n + 1) / 2, 1}, tern_pack_part(p, t, TERN_PART_DATA)};
		d[nd++] = (struct tern_st_desc){nm[0],
						t->dtype == TERN_NF4_DQ ? TERN_ST_U8 : TERN_ST_F32,
						1,
						{nb},
						tern_pack_part(p, t, TERN_PART_ABSMAX)};
		d[nd++] = (struct tern_st_desc){nm[1], TERN_ST_F32, 1, {16}, tern_nf4_code};
		if (t->dtype == TERN_NF4_DQ) {
			d[nd++] = (struct tern_st_desc){nm[2],
							TERN_ST_F32,
							1,
							{tern_cdiv(nb, TERN_NF4_NESTED_BLOCK)},
							tern_pack_part(p, t, TERN_PART_NESTED)};
			d[nd++] = (struct tern_st_desc){nm[3], TERN_ST_F32, 1, {256}, dmap};
		}
		d[nd++] = (struct tern_st_desc){nm[4], TERN_ST_U8, 1, {(int64_t)jl}, json[i]};
	}
	char path[4200], from[4200];
	snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
	if ((st = tern_st_write(path, d, nd, NULL, 0)))
		goto out;
	if ((st = write_config(m, out_dir, dq == 1)))
		goto out;
	static const char *const tok[] = {"tokenizer.json",
					  "tokenizer_config.json",
					  "special_tokens_map.json",
					  "tokenizer.model",
					  "vocab.json",
					  "merges.txt",
					  "added_tokens.json",
					  "generation_config.json",
					  "chat_template.jinja"};
	for (size_t k = 0; k < sizeof tok / sizeof *tok; k++) {
		struct stat sb;
		snprintf(from, sizeof from, "%s/%s", m->dir, tok[k]);
		if (stat(from, &sb))
			continue;
		snprintf(path, sizeof path, "%s/%s", out_dir, tok[k]);
		if ((st = copy_file(from, path)))
			goto out;
	}
out:
	if (json)
		for (uint32_t i = 0; i < p->n_tensors; i++)
			free(json[i]);
	free(json);
	free(d);
	return st;
}
