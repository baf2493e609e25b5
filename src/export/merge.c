/* tern merge: base + adapter -> a Hugging Face model directory (include/tern/export.h).
 *
 * Layout written (docs/FORMATS.md "Merged model directory"):
 *	config.json                    the base's, quantization_config removed, dtype / torch_dtype
 *	                               set to the output dtype (tie_word_embeddings false when a tied
 *	                               base gets the adapter's own lm_head)
 *	generation_config.json         copied, or made from config.json's bos/eos/pad ids
 *	tokenizer files                copied when present
 *	model.safetensors              one file when everything fits in one shard, else
 *	model-0000k-of-0000n.safetensors + model.safetensors.index.json ({"metadata": {"total_size"},
 *	                               "weight_map"}); tensors in the architecture's order
 * All of it is written into "<out>.tmp.<pid>" and renamed to out at the end. */
#define _GNU_SOURCE
#include "export/source.h"

#include "quant/quant.h"
#include "tern/export.h"
#include "tern/hub.h"
#include "train/config.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum tern_status tern_msrc_from_opts(const struct tern_merge_opts *o, const char *tmp_pack, unsigned flags,
				     struct tern_msrc **out, struct tern_merge_result *res)
{
	enum tern_status st = TERN_OK;
	struct tern_config *cfg = NULL;
	char *base = NULL, *cfg_adapter = NULL, pack[4400] = "";
	const char *adapter = o->adapter;
	enum tern_base_format f = o->base_format;
	bool keep = false;
	*out = NULL;
	if (o->config && o->base)
		return tern_fail(TERN_E_INVALID, "merge: give a config or a base model directory (not both)");
	if (!o->config && !o->base && !o->adapter)
		return tern_fail(TERN_E_INVALID,
				 "merge: give a config, or a base model directory and an adapter");
	if (o->config) {
		if ((st = tern_config_load(&cfg, o->config)))
			goto out;
		if (!adapter) { /* the final adapter tern train writes */
			if (asprintf(&cfg_adapter, "%s/adapter", cfg->output_dir) < 0) {
				st = tern_fail(TERN_E_NOMEM, "out of host memory");
				goto out;
			}
			adapter = cfg_adapter;
		}
		if (f == TERN_FORMAT_AUTO)
			f = cfg->base_format;
		if ((st = tern_hub_resolve(cfg->base_model, cfg->revision_of_model, TERN_HUB_ALL, &base,
					   NULL)))
			goto out;
		if (f != TERN_FORMAT_AUTO) { /* the pack training made (reused when up to date) */
			if (cfg->offload_dir)
				snprintf(pack, sizeof pack, "%s/base-%s.tpack", cfg->offload_dir,
					 tern_base_format_name(f));
			else
				snprintf(pack, sizeof pack, "%s/offload/base-%s.tpack", cfg->output_dir,
					 tern_base_format_name(f));
			char dir[4400];
			snprintf(dir, sizeof dir, "%s", pack);
			*strrchr(dir, '/') = 0;
			struct stat sb;
			keep = stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode);
			if (!keep)
				snprintf(pack, sizeof pack, "%s", tmp_pack);
		}
	} else if (o->base) {
		if (!(base = strdup(o->base))) {
			st = tern_fail(TERN_E_NOMEM, "out of host memory");
			goto out;
		}
	} else { /* the base the adapter names (base_model_name_or_path: a directory or a Hub id) */
		char *p = tern_path_join(o->adapter, "adapter_config.json");
		json_t *root = p ? json_load_file(p, 0, NULL) : NULL;
		const char *name = json_string_value(json_object_get(root, "base_model_name_or_path"));
		if (!root)
			st = tern_fail(TERN_E_IO,
				       "%s: cannot read (an adapter directory holds adapter_config.json)",
				       p ? p : o->adapter);
		else if (!name || !*name)
			st = tern_fail(
				TERN_E_INVALID,
				"%s: base_model_name_or_path is not set: give the base with --base DIR", p);
		else
			st = tern_hub_resolve(name, NULL, TERN_HUB_ALL, &base, NULL);
		json_decref(root);
		free(p);
		if (st)
			goto out;
	}
	if ((flags & TERN_MSRC_NEED_ADAPTER) && !adapter) {
		st = tern_fail(TERN_E_INVALID, "merge: no adapter given (--adapter DIR)");
		goto out;
	}
	if (!pack[0])
		snprintf(pack, sizeof pack, "%s", tmp_pack);
	struct tern_msrc_opts mo = {.base = base,
				    .adapter = adapter,
				    .format = f,
				    .pack_path = pack,
				    .keep_pack = keep,
				    .no_weights = (flags & TERN_MSRC_NO_WEIGHTS) != 0};
	if ((st = tern_msrc_open(&mo, out)))
		goto out;
	if (res) {
		snprintf(res->base_dir, sizeof res->base_dir, "%s", base);
		snprintf(res->adapter_dir, sizeof res->adapter_dir, "%s", adapter ? adapter : "");
		snprintf(res->base_format, sizeof res->base_format, "%s",
			 (*out)->cfg.qmethod == TERN_QMETHOD_BNB_4BIT && (*out)->format == TERN_FORMAT_AUTO
				 ? "bnb-4bit"
				 : tern_base_format_name((*out)->format));
		res->scale = (*out)->scale;
	}
out:
	free(base);
	free(cfg_adapter);
	tern_config_free(cfg);
	return st;
}

/* ---- files ---- */

static enum tern_status write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "wb");
	if (!f)
		return tern_fail(TERN_E_IO, "%s: cannot create: %s", path, strerror(errno));
	size_t n = strlen(text);
	bool ok = fwrite(text, 1, n, f) == n;
	ok = (fflush(f) == 0) && ok && fsync(fileno(f)) == 0;
	if (fclose(f) || !ok)
		return tern_fail(TERN_E_IO, "%s: cannot write: %s", path, strerror(errno));
	return TERN_OK;
}

static enum tern_status write_json(const char *path, json_t *root, size_t flags)
{
	char *text = json_dumps(root, JSON_INDENT(2) | flags);
	if (!text)
		return tern_fail(TERN_E_NOMEM, "out of host memory writing %s", path);
	size_t n = strlen(text);
	char *t2 = realloc(text, n + 2);
	if (!t2) {
		free(text);
		return TERN_E_NOMEM;
	}
	t2[n] = '\n';
	t2[n + 1] = 0;
	enum tern_status st = write_text(path, t2);
	free(t2);
	return st;
}

static enum tern_status copy_file(const char *from, const char *to)
{
	char *buf = NULL;
	size_t n = 0;
	enum tern_status st = tern_read_file(from, (size_t)1 << 31, &buf, &n);
	if (st == TERN_OK) {
		FILE *f = fopen(to, "wb");
		if (!f)
			st = tern_fail(TERN_E_IO, "%s: cannot create: %s", to, strerror(errno));
		else {
			bool ok = fwrite(buf, 1, n, f) == n && fflush(f) == 0 && fsync(fileno(f)) == 0;
			if (fclose(f) || !ok)
				st = tern_fail(TERN_E_IO, "%s: cannot write: %s", to, strerror(errno));
		}
	}
	free(buf);
	return st;
}

/* Removes a flat directory and what it holds (the temporary output). */
static void remove_tree(const char *dir)
{
	DIR *d = opendir(dir);
	if (d) {
		struct dirent *e;
		while ((e = readdir(d))) {
			if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
				continue;
			char p[8400];
			snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
			unlink(p);
		}
		closedir(d);
	}
	rmdir(dir);
}

static const char *const tokenizer_files[] = {"tokenizer.json",
					      "tokenizer_config.json",
					      "special_tokens_map.json",
					      "tokenizer.model",
					      "vocab.json",
					      "merges.txt",
					      "added_tokens.json",
					      "chat_template.jinja",
					      "chat_template.json"};

static enum tern_status write_config(const struct tern_msrc *s, const char *tmp, const char *torch_dtype)
{
	char path[8400];
	json_error_t e;
	snprintf(path, sizeof path, "%s/config.json", s->base);
	json_t *root = json_load_file(path, JSON_PRESERVE_ORDER, &e);
	if (!root)
		return tern_fail(TERN_E_FORMAT, "%s: line %d: %s", path, e.line, e.text);
	json_object_del(root, "quantization_config");
	bool had_torch = json_object_get(root, "torch_dtype") != NULL;
	json_object_set_new(root, "dtype", json_string(torch_dtype));
	if (had_torch)
		json_object_set_new(root, "torch_dtype", json_string(torch_dtype));
	if (s->untied)
		json_object_set_new(root, "tie_word_embeddings", json_false());
	snprintf(path, sizeof path, "%s/config.json", tmp);
	enum tern_status st = write_json(path, root, JSON_PRESERVE_ORDER);
	if (st == TERN_OK) { /* generation_config.json: the base's, or the ids of config.json */
		char from[8400];
		snprintf(from, sizeof from, "%s/generation_config.json", s->base);
		snprintf(path, sizeof path, "%s/generation_config.json", tmp);
		if (access(from, F_OK) == 0)
			st = copy_file(from, path);
		else {
			json_t *g = json_object();
			json_object_set_new(g, "_from_model_config", json_true());
			const char *keys[] = {"bos_token_id", "eos_token_id", "pad_token_id"};
			for (int k = 0; k < 3; k++) {
				json_t *v = json_object_get(root, keys[k]);
				if (v && !json_is_null(v))
					json_object_set(g, keys[k], v);
			}
			st = write_json(path, g, JSON_SORT_KEYS);
			json_decref(g);
		}
	}
	json_decref(root);
	for (size_t k = 0; st == TERN_OK && k < sizeof tokenizer_files / sizeof *tokenizer_files; k++) {
		char from[8400];
		snprintf(from, sizeof from, "%s/%s", s->base, tokenizer_files[k]);
		snprintf(path, sizeof path, "%s/%s", tmp, tokenizer_files[k]);
		if (access(from, F_OK) == 0)
			st = copy_file(from, path);
	}
	return st;
}

/* ---- tensors ---- */

static void convert(enum tern_st_dtype dt, const float *x, int64_t n, void *dst)
{
	if (dt == TERN_ST_F32) {
		memcpy(dst, x, (size_t)n * 4);
		return;
	}
	uint16_t *h = dst;
	for (int64_t i = 0; i < n; i++)
		h[i] = dt == TERN_ST_F16 ? tern_f32_to_f16(x[i]) : tern_f32_to_bf16(x[i]);
}

static enum tern_status write_shard(struct tern_msrc *s, const char *path, size_t first, size_t count,
				    enum tern_st_dtype dt, float *buf, void *cvt)
{
	struct tern_st_desc *d = tern_calloc(count, sizeof *d);
	if (!d)
		return TERN_E_NOMEM;
	for (size_t k = 0; k < count; k++) {
		const struct tern_msrc_tensor *t = &s->t[first + k];
		d[k].name = t->name;
		d[k].dtype = dt;
		d[k].ndim = t->ndim;
		d[k].shape[0] = t->shape[0];
		d[k].shape[1] = t->shape[1];
	}
	struct tern_st_writer *w = NULL;
	enum tern_status st = tern_st_writer_begin(path, d, count, NULL, 0, &w);
	for (size_t k = 0; st == TERN_OK && k < count; k++) {
		const struct tern_msrc_tensor *t = &s->t[first + k];
		if (!(st = tern_msrc_read(s, first + k, buf))) {
			convert(dt, buf, t->numel, cvt);
			st = tern_st_writer_append(w, cvt, (size_t)t->numel * tern_st_dtype_size(dt));
		}
	}
	if (st == TERN_OK)
		st = tern_st_writer_finish(w);
	else if (w)
		tern_st_writer_abort(w);
	free(d);
	return st;
}

static enum tern_status check_out(const char *out)
{
	struct stat sb;
	if (!out || !*out)
		return tern_fail(TERN_E_INVALID, "merge: no output given (--out DIR)");
	if (stat(out, &sb) == 0)
		return tern_fail(TERN_E_INVALID,
				 "%s: already exists (tern merge writes a new directory and "
				 "never replaces one: give another --out or remove it)",
				 out);
	return TERN_OK;
}

enum tern_status tern_merge(const struct tern_merge_opts *o, const char *out, const char *dtype,
			    uint64_t shard_bytes, struct tern_merge_result *res)
{
	double t0 = tern_now();
	struct tern_merge_result r = {0};
	struct tern_msrc *s = NULL;
	float *buf = NULL;
	void *cvt = NULL;
	json_t *map = NULL;
	enum tern_status st;
	char tmp[4400], pack[4500], path[4600];
	bool made = false;
	if ((st = check_out(out)))
		return st;
	enum tern_st_dtype dt = TERN_ST_DTYPE_COUNT;
	if (dtype && strcmp(dtype, "bf16") && strcmp(dtype, "f16") && strcmp(dtype, "f32"))
		return tern_fail(TERN_E_INVALID, "merge: dtype '%s' (allowed: bf16, f16, f32)", dtype);
	snprintf(tmp, sizeof tmp, "%s.tmp.%ld", out, (long)getpid());
	if (mkdir(tmp, 0755) != 0)
		return tern_fail(TERN_E_IO, "%s: cannot create: %s", tmp, strerror(errno));
	made = true;
	snprintf(pack, sizeof pack, "%s/base.tpack", tmp);
	if ((st = tern_msrc_from_opts(o, pack, TERN_MSRC_NEED_ADAPTER, &s, &r)))
		goto out;
	enum tern_dtype base_dt = s->cfg.qmethod == TERN_QMETHOD_BNB_4BIT ? s->cfg.bnb_compute : s->cfg.dtype;
	if (!dtype)
		dt = base_dt == TERN_F32 ? TERN_ST_F32 : base_dt == TERN_F16 ? TERN_ST_F16 : TERN_ST_BF16;
	else
		dt = !strcmp(dtype, "f32") ? TERN_ST_F32 : !strcmp(dtype, "f16") ? TERN_ST_F16 : TERN_ST_BF16;
	const char *torch = dt == TERN_ST_F32 ? "float32" : dt == TERN_ST_F16 ? "float16" : "bfloat16";
	if (!shard_bytes)
		shard_bytes = 5000000000ull;
	size_t es = tern_st_dtype_size(dt);
	int64_t maxn = 0;
	for (size_t i = 0; i < s->n; i++)
		maxn = s->t[i].numel > maxn ? s->t[i].numel : maxn;
	if (!(buf = tern_malloc((size_t)maxn * 4)) || !(cvt = tern_malloc((size_t)maxn * es))) {
		st = TERN_E_NOMEM;
		goto out;
	}
	/* shards: consecutive tensors while they fit (a tensor larger than a shard gets one alone) */
	size_t *start = tern_calloc(s->n + 1, sizeof *start);
	if (!start) {
		st = TERN_E_NOMEM;
		goto out;
	}
	int ns = 0;
	uint64_t cur = 0;
	for (size_t i = 0; i < s->n; i++) {
		uint64_t b = (uint64_t)s->t[i].numel * es;
		if (i == 0 || (cur > 0 && cur + b > shard_bytes)) {
			start[ns++] = i;
			cur = 0;
		}
		cur += b;
		r.bytes += b;
	}
	start[ns] = s->n;
	map = json_object();
	for (int k = 0; st == TERN_OK && k < ns; k++) {
		char name[64];
		if (ns == 1)
			snprintf(name, sizeof name, "model.safetensors");
		else
			snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", k + 1, ns);
		snprintf(path, sizeof path, "%s/%s", tmp, name);
		st = write_shard(s, path, start[k], start[k + 1] - start[k], dt, buf, cvt);
		for (size_t i = start[k]; i < start[k + 1]; i++)
			json_object_set_new(map, s->t[i].name, json_string(name));
		tern_log(TERN_LOG_INFO, "merge: wrote %s (%zu tensors)", name, start[k + 1] - start[k]);
	}
	free(start);
	if (st == TERN_OK && ns > 1) {
		json_t *idx = json_object(), *meta = json_object();
		json_object_set_new(meta, "total_size", json_integer((json_int_t)r.bytes));
		json_object_set_new(idx, "metadata", meta);
		json_object_set(idx, "weight_map", map);
		snprintf(path, sizeof path, "%s/model.safetensors.index.json", tmp);
		st = write_json(path, idx, JSON_SORT_KEYS);
		json_decref(idx);
	}
	if (st == TERN_OK)
		st = write_config(s, tmp, torch);
	if (st)
		goto out;
	r.n_files = ns;
	r.n_tensors = (int64_t)s->n;
	for (size_t i = 0; i < s->n; i++) {
		r.n_merged += s->t[i].merged;
		r.n_replaced += s->t[i].replaced;
	}
	tern_msrc_close(s); /* removes a temporary pack before the rename */
	s = NULL;
	if (rename(tmp, out) != 0) {
		st = tern_fail(TERN_E_IO, "%s: cannot rename %s into place: %s", out, tmp, strerror(errno));
		goto out;
	}
	made = false;
	r.seconds = tern_now() - t0;
	if (res)
		*res = r;
out:
	json_decref(map);
	free(buf);
	free(cvt);
	tern_msrc_close(s);
	if (made)
		remove_tree(tmp);
	return st;
}
