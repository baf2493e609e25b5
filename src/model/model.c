/* Model loading: tensor map, validation against the checkpoint, conversion into a pack image,
 * pack-file reuse. See model.h and include/tern/model.h.
 *
 * Pre-quantized bitsandbytes 4-bit checkpoints (formats.md §1.4). A projection `<m>.weight`
 * stored with `<m>.weight.quant_state.bitsandbytes__nf4` is taken as stored: packed codes,
 * absmax (fp32, or u8 + nested_absmax + nested offset) and blocksize (from the JSON) are copied
 * byte for byte. Checks: quant_type nf4; quant_map equal to the NF4 table bit for bit (fp4 or a
 * custom map is rejected); nested_blocksize 256; every size against the shape. The nested quant
 * map: when it equals tern_dynamic_map bit for bit (what bitsandbytes writes) the u8 absmax is
 * kept (nf4-dq); otherwise the absmax is rebuilt in fp32 with the map as given and the tensor
 * is stored as plain nf4: dequantized values stay identical, the backends need no custom map.
 *
 * BitNet checkpoints with quantized projections (packed 2-bit + weight_scale): bitnet_packed.h;
 * their fields move into the ternary words without an fp32 pass. */
#define _GNU_SOURCE
#include "model/model.h"
#include "model/bitnet_packed.h"

#include "quant/quant.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* ---- format names ---- */

static const char *const format_names[TERN_FORMAT_COUNT] = {"auto", "nf4", "nf4-dq", "ternary",
							    "bf16", "f16", "f32"};

const char *tern_base_format_name(enum tern_base_format f)
{
	return (unsigned)f < TERN_FORMAT_COUNT ? format_names[f] : "?";
}

enum tern_status tern_base_format_parse(const char *s, enum tern_base_format *out)
{
	for (int i = 0; i < TERN_FORMAT_COUNT; i++)
		if (!strcmp(s, format_names[i])) {
			*out = (enum tern_base_format)i;
			return TERN_OK;
		}
	return tern_fail(TERN_E_INVALID,
			 "unknown base format %s (allowed: auto, nf4, nf4-dq, ternary, bf16, f16, f32)", s);
}

static enum tern_dtype format_dtype(enum tern_base_format f)
{
	switch (f) {
	case TERN_FORMAT_NF4: return TERN_NF4;
	case TERN_FORMAT_TERNARY: return TERN_TERNARY;
	case TERN_FORMAT_BF16: return TERN_BF16;
	case TERN_FORMAT_F16: return TERN_F16;
	case TERN_FORMAT_F32: return TERN_F32;
	default: return TERN_NF4_DQ;
	}
}

/* ---- the tensor map ---- */

struct role_desc {
	const char *suffix;
	bool layer;
};
static const struct role_desc roles[TERN_ROLE_COUNT] = {
	[TERN_ROLE_EMBED] = {"model.embed_tokens.weight", false},
	[TERN_ROLE_NORM] = {"model.norm.weight", false},
	[TERN_ROLE_HEAD] = {"lm_head.weight", false},
	[TERN_ROLE_ATTN_NORM] = {"input_layernorm.weight", true},
	[TERN_ROLE_Q] = {"self_attn.q_proj.weight", true},
	[TERN_ROLE_K] = {"self_attn.k_proj.weight", true},
	[TERN_ROLE_V] = {"self_attn.v_proj.weight", true},
	[TERN_ROLE_O] = {"self_attn.o_proj.weight", true},
	[TERN_ROLE_Q_BIAS] = {"self_attn.q_proj.bias", true},
	[TERN_ROLE_K_BIAS] = {"self_attn.k_proj.bias", true},
	[TERN_ROLE_V_BIAS] = {"self_attn.v_proj.bias", true},
	[TERN_ROLE_O_BIAS] = {"self_attn.o_proj.bias", true},
	[TERN_ROLE_Q_NORM] = {"self_attn.q_norm.weight", true},
	[TERN_ROLE_K_NORM] = {"self_attn.k_norm.weight", true},
	[TERN_ROLE_MLP_NORM] = {"post_attention_layernorm.weight", true},
	[TERN_ROLE_GATE] = {"mlp.gate_proj.weight", true},
	[TERN_ROLE_UP] = {"mlp.up_proj.weight", true},
	[TERN_ROLE_DOWN] = {"mlp.down_proj.weight", true},
	[TERN_ROLE_GATE_BIAS] = {"mlp.gate_proj.bias", true},
	[TERN_ROLE_UP_BIAS] = {"mlp.up_proj.bias", true},
	[TERN_ROLE_DOWN_BIAS] = {"mlp.down_proj.bias", true},
	[TERN_ROLE_ROUTER] = {"mlp.gate.weight", true},
	[TERN_ROLE_EXP_GATE] = {"gate_proj.weight", true}, /* mlp.experts.<e>. before */
	[TERN_ROLE_EXP_UP] = {"up_proj.weight", true},
	[TERN_ROLE_EXP_DOWN] = {"down_proj.weight", true},
	[TERN_ROLE_ATTN_SUB_NORM] = {"self_attn.attn_sub_norm.weight", true},
	[TERN_ROLE_FFN_SUB_NORM] = {"mlp.ffn_sub_norm.weight", true},
};

/* The name of role r (expert x) inside layer l: the Hub's per-expert checkpoint names (Mixtral
 * block_sparse_moe.gate / experts.<e>.w1 w3 w2; Qwen3-MoE mlp.gate / mlp.experts.<e>.gate_proj
 * up_proj down_proj; transformers 5's save_pretrained writes the same). */
static void layer_name(const struct tern_model_config *c, int r, int x, char *buf, size_t cap)
{
	static const char *const mix[] = {"w1", "w3", "w2"};
	bool mixtral = c->arch == TERN_ARCH_MIXTRAL;
	if (r >= TERN_ROLE_EXP_GATE && r <= TERN_ROLE_EXP_DOWN)
		snprintf(buf, cap, "%s.experts.%d.%s%s", mixtral ? "block_sparse_moe" : "mlp", x,
			 mixtral ? mix[r - TERN_ROLE_EXP_GATE] : roles[r].suffix, mixtral ? ".weight" : "");
	else if (r == TERN_ROLE_ROUTER && mixtral)
		snprintf(buf, cap, "block_sparse_moe.gate.weight");
	else
		snprintf(buf, cap, "%s", roles[r].suffix);
}

enum tern_status tern_model_tensor_map(const struct tern_model_config *c, struct tern_tensor_spec **out,
				       size_t *n)
{
	int64_t q = c->H * c->Dh, kv = c->Hkv * c->Dh;
	/* [role] = {present, rows, cols (0: vector)} */
	int64_t shape[TERN_ROLE_COUNT][3] = {
		[TERN_ROLE_EMBED] = {1, c->V, c->D},
		[TERN_ROLE_NORM] = {1, c->D, 0},
		[TERN_ROLE_HEAD] = {!c->tie_embeddings, c->V, c->D},
		[TERN_ROLE_ATTN_NORM] = {1, c->D, 0},
		[TERN_ROLE_Q] = {1, q, c->D},
		[TERN_ROLE_K] = {1, kv, c->D},
		[TERN_ROLE_V] = {1, kv, c->D},
		[TERN_ROLE_O] = {1, c->D, q},
		[TERN_ROLE_Q_BIAS] = {c->qkv_bias, q, 0},
		[TERN_ROLE_K_BIAS] = {c->qkv_bias, kv, 0},
		[TERN_ROLE_V_BIAS] = {c->qkv_bias, kv, 0},
		[TERN_ROLE_O_BIAS] = {c->o_bias, c->D, 0},
		[TERN_ROLE_Q_NORM] = {c->qk_norm, c->Dh, 0},
		[TERN_ROLE_K_NORM] = {c->qk_norm, c->Dh, 0},
		[TERN_ROLE_MLP_NORM] = {1, c->D, 0},
		[TERN_ROLE_GATE] = {1, c->F, c->D},
		[TERN_ROLE_UP] = {1, c->F, c->D},
		[TERN_ROLE_DOWN] = {1, c->D, c->F},
		[TERN_ROLE_GATE_BIAS] = {c->mlp_bias, c->F, 0},
		[TERN_ROLE_UP_BIAS] = {c->mlp_bias, c->F, 0},
		[TERN_ROLE_DOWN_BIAS] = {c->mlp_bias, c->D, 0},
		[TERN_ROLE_ROUTER] = {1, c->E, c->D},
		[TERN_ROLE_EXP_GATE] = {1, c->Fe, c->D},
		[TERN_ROLE_EXP_UP] = {1, c->Fe, c->D},
		[TERN_ROLE_EXP_DOWN] = {1, c->D, c->Fe},
		[TERN_ROLE_ATTN_SUB_NORM] = {c->arch == TERN_ARCH_BITNET, q, 0},
		[TERN_ROLE_FFN_SUB_NORM] = {c->arch == TERN_ARCH_BITNET, c->F, 0},
	};
	size_t cap = 3 + (size_t)c->L * (TERN_ROLE_COUNT + 3 * (size_t)c->E), k = 0;
	struct tern_tensor_spec *s = tern_calloc(cap, sizeof *s);
	if (!s)
		return TERN_E_NOMEM;
	for (int64_t l = -1; l < c->L; l++) {
		bool moe = tern_model_layer_moe(c, l);
		for (int r = 0; r < TERN_ROLE_COUNT; r++) {
			if (roles[r].layer != (l >= 0) || !shape[r][0])
				continue;
			bool sparse = r >= TERN_ROLE_ROUTER && r <= TERN_ROLE_EXP_DOWN,
			     dense_mlp = r >= TERN_ROLE_GATE && r <= TERN_ROLE_DOWN_BIAS;
			if ((sparse && !moe) || (dense_mlp && moe))
				continue;
			bool ex = r >= TERN_ROLE_EXP_GATE && r <= TERN_ROLE_EXP_DOWN;
			int ne = ex ? (int)c->E : 1;
			for (int x = 0; x < ne; x++) {
				struct tern_tensor_spec *e = &s[k++];
				char sub[80];
				layer_name(c, r, x, sub, sizeof sub);
				if (l < 0)
					snprintf(e->name, sizeof e->name, "%s", sub);
				else
					snprintf(e->name, sizeof e->name, "model.layers.%d.%s", (int)l, sub);
				e->layer = (int)l;
				e->role = (enum tern_role)r;
				e->expert = ex ? x : -1;
				e->ndim = shape[r][2] ? 2 : 1;
				e->shape[0] = shape[r][1];
				e->shape[1] = shape[r][2] ? shape[r][2] : 1;
			}
		}
	}
	*out = s;
	*n = k;
	return TERN_OK;
}

/* ---- conversions ---- */

static enum tern_dtype st_float_dtype(enum tern_st_dtype d)
{
	return d == TERN_ST_F32    ? TERN_F32
	       : d == TERN_ST_F16  ? TERN_F16
	       : d == TERN_ST_BF16 ? TERN_BF16
				   : TERN_DTYPE_COUNT;
}

static void from_f32(enum tern_dtype dt, const float *x, int64_t n, uint8_t *dst)
{
	if (dt == TERN_F32) {
		memcpy(dst, x, (size_t)n * 4);
		return;
	}
#pragma omp parallel for schedule(static) if (n > (1 << 20))
	for (int64_t i = 0; i < n; i++) {
		uint16_t h = dt == TERN_F16 ? tern_f32_to_f16(x[i]) : tern_f32_to_bf16(x[i]);
		memcpy(dst + 2 * i, &h, 2);
	}
}

enum tern_status tern_st_tensor_f32(const struct tern_st_tensor *t, float *out)
{
	enum tern_dtype dt = st_float_dtype(t->dtype);
	if (dt == TERN_DTYPE_COUNT)
		return tern_fail(TERN_E_INVALID, "tensor %s: dtype %s is not a float type", t->name,
				 tern_st_dtype_name(t->dtype));
	tern_plain_to_f32(dt, t->data, t->numel, out);
	return TERN_OK;
}

enum tern_status tern_pack_tensor_f32(const struct tern_pack *p, const struct tern_pack_tensor *t, float *out)
{
	int64_t n = t->shape[0] * t->shape[1];
	const uint8_t *d = tern_pack_part(p, t, TERN_PART_DATA);
	switch (t->dtype) {
	case TERN_F32:
	case TERN_F16:
	case TERN_BF16: tern_plain_to_f32(t->dtype, d, n, out); return TERN_OK;
	case TERN_NF4:
		tern_nf4_dequantize(d, (const float *)tern_pack_part(p, t, TERN_PART_ABSMAX), n, t->blocksize,
				    out);
		return TERN_OK;
	case TERN_NF4_DQ: {
		int64_t nb = tern_nf4_blocks(n, t->blocksize);
		float *am = tern_malloc((size_t)nb * 4);
		if (!am)
			return TERN_E_NOMEM;
		tern_nf4_nested_absmax(tern_pack_part(p, t, TERN_PART_ABSMAX),
				       (const float *)tern_pack_part(p, t, TERN_PART_NESTED), t->offset, nb,
				       am);
		tern_nf4_dequantize(d, am, n, t->blocksize, out);
		free(am);
		return TERN_OK;
	}
	case TERN_TERNARY:
		tern_ternary_dequantize((const uint32_t *)d, t->scale, t->shape[0], t->shape[1], out);
		return TERN_OK;
	case TERN_DTYPE_COUNT: break;
	}
	return tern_fail(TERN_E_INVALID, "tensor %s: bad dtype", t->name);
}

/* ---- sources: what the checkpoint holds for one expected tensor ---- */

struct bnb_src {
	const struct tern_st_tensor *weight, *absmax, *quant_map, *nested_absmax, *nested_map, *state;
	int blocksize;
	bool nested, std_map; /* nested map equals tern_dynamic_map */
	float offset;
	enum tern_dtype dtype; /* original dtype from the JSON */
};

struct src {
	const struct tern_st_tensor *t; /* plain float tensor, or NULL for bnb / bitnet */
	bool bnb;
	struct bnb_src q;
	bool bitnet; /* a quantized BitNet projection (bitnet_packed.h) */
	struct tern_bitnet_src bn;
};

static const char *const bnb_suffix[] = {".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map",
					 ".quant_state.bitsandbytes__nf4"};

static enum tern_status bnb_part(const char *dir, const struct tern_st_model *st, const char *wname,
				 const char *suffix, enum tern_st_dtype dt, int64_t numel,
				 const struct tern_st_tensor **out)
{
	char name[TERN_PACK_NAME + 40];
	snprintf(name, sizeof name, "%s%s", wname, suffix);
	const struct tern_st_tensor *t = tern_st_model_find(st, name);
	if (!t)
		return tern_fail(TERN_E_FORMAT, "%s: bitsandbytes tensor %s missing", dir, name);
	if (t->dtype != dt)
		return tern_fail(TERN_E_FORMAT, "%s: tensor %s has dtype %s, expected %s", dir, name,
				 tern_st_dtype_name(t->dtype), tern_st_dtype_name(dt));
	if (numel >= 0 && t->numel != numel)
		return tern_fail(TERN_E_FORMAT, "%s: tensor %s has %lld elements, expected %lld", dir, name,
				 (long long)t->numel, (long long)numel);
	*out = t;
	return TERN_OK;
}

static enum tern_status parse_bnb(const char *dir, const struct tern_st_model *st,
				  const struct tern_tensor_spec *s, struct bnb_src *q)
{
	enum tern_status st_ = TERN_OK;
	json_t *root = NULL;
	const char *nm = s->name;
	int64_t n = s->shape[0] * s->shape[1];
	if ((st_ = bnb_part(dir, st, nm, bnb_suffix[4], TERN_ST_U8, -1, &q->state)))
		return st_;
	json_error_t err;
	root = json_loadb(q->state->data, q->state->nbytes, 0, &err);
	if (!json_is_object(root)) {
		st_ = tern_fail(TERN_E_FORMAT, "%s: %s%s: not a JSON object (%s)", dir, nm, bnb_suffix[4],
				err.text);
		goto out;
	}
	const json_t *qt = json_object_get(root, "quant_type"), *bs = json_object_get(root, "blocksize"),
		     *dt = json_object_get(root, "dtype"), *sh = json_object_get(root, "shape"),
		     *off = json_object_get(root, "nested_offset"),
		     *nbs = json_object_get(root, "nested_blocksize");
	if (!json_is_string(qt) || strcmp(json_string_value(qt), "nf4")) {
		st_ = tern_fail(TERN_E_UNSUPPORTED, "%s: %s: quant_type %s is not supported (supported: nf4)",
				dir, nm, json_is_string(qt) ? json_string_value(qt) : "(missing)");
		goto out;
	}
	json_int_t b = json_is_integer(bs) ? json_integer_value(bs) : 0;
	if (b < 32 || b > 4096 || (b & (b - 1))) {
		st_ = tern_fail(TERN_E_FORMAT,
				"%s: %s: quant_state blocksize must be a power of two 32..4096", dir, nm);
		goto out;
	}
	q->blocksize = (int)b;
	const char *d = json_is_string(dt) ? json_string_value(dt) : "";
	q->dtype = !strcmp(d, "float32")    ? TERN_F32
		   : !strcmp(d, "float16")  ? TERN_F16
		   : !strcmp(d, "bfloat16") ? TERN_BF16
					    : TERN_DTYPE_COUNT;
	if (q->dtype == TERN_DTYPE_COUNT) {
		st_ = tern_fail(TERN_E_FORMAT,
				"%s: %s: quant_state dtype %s, expected float32, float16 or bfloat16", dir,
				nm, d);
		goto out;
	}
	if (!json_is_array(sh) || json_array_size(sh) != 2 ||
	    json_integer_value(json_array_get(sh, 0)) != s->shape[0] ||
	    json_integer_value(json_array_get(sh, 1)) != s->shape[1]) {
		st_ = tern_fail(TERN_E_FORMAT,
				"%s: %s: quant_state shape differs from the expected [%lld, %lld]", dir, nm,
				(long long)s->shape[0], (long long)s->shape[1]);
		goto out;
	}
	q->nested = off != NULL;
	if (q->nested && (!json_is_number(off) || !isfinite(json_number_value(off)) ||
			  !json_is_integer(nbs) || json_integer_value(nbs) != TERN_NF4_NESTED_BLOCK)) {
		st_ = tern_fail(TERN_E_FORMAT,
				"%s: %s: nested_offset must be a number and nested_blocksize 256", dir, nm);
		goto out;
	}
	q->offset = q->nested ? (float)json_number_value(off) : 0.0f;
	int64_t nb = tern_nf4_blocks(n, q->blocksize);
	if ((st_ = bnb_part(dir, st, nm, "", TERN_ST_U8, (n + 1) / 2, &q->weight)) ||
	    (st_ = bnb_part(dir, st, nm, bnb_suffix[0], q->nested ? TERN_ST_U8 : TERN_ST_F32, nb,
			    &q->absmax)) ||
	    (st_ = bnb_part(dir, st, nm, bnb_suffix[1], TERN_ST_F32, 16, &q->quant_map)))
		goto out;
	if (memcmp(q->quant_map->data, tern_nf4_code, 64)) {
		st_ = tern_fail(
			TERN_E_UNSUPPORTED,
			"%s: %s.quant_map is not the NF4 table (fp4 or custom maps are not supported)", dir,
			nm);
		goto out;
	}
	if (q->nested) {
		if ((st_ = bnb_part(dir, st, nm, bnb_suffix[2], TERN_ST_F32,
				    tern_cdiv(nb, TERN_NF4_NESTED_BLOCK), &q->nested_absmax)) ||
		    (st_ = bnb_part(dir, st, nm, bnb_suffix[3], TERN_ST_F32, 256, &q->nested_map)))
			goto out;
		float map[256];
		tern_dynamic_map(map);
		q->std_map = !memcmp(map, q->nested_map->data, sizeof map);
	}
out:
	json_decref(root);
	return st_;
}

static int cmp_spec_name(const void *a, const void *b)
{
	const struct tern_tensor_spec *const *x = a, *const *y = b;
	return strcmp((*x)->name, (*y)->name);
}

static const struct tern_tensor_spec *find_spec(const struct tern_tensor_spec **sorted, size_t n,
						const char *name)
{
	struct tern_tensor_spec key;
	const struct tern_tensor_spec *kp = &key;
	if (strlen(name) >= sizeof key.name)
		return NULL;
	snprintf(key.name, sizeof key.name, "%s", name);
	const struct tern_tensor_spec **r = bsearch(&kp, sorted, n, sizeof *sorted, cmp_spec_name);
	return r ? *r : NULL;
}

static void fmt_shape(const struct tern_st_tensor *t, char *buf, size_t size)
{
	size_t len = (size_t)snprintf(buf, size, "[");
	for (int d = 0; d < t->ndim && len < size; d++)
		len += (size_t)snprintf(buf + len, size - len, "%s%lld", d ? ", " : "",
					(long long)t->shape[d]);
	if (len < size)
		snprintf(buf + len, size - len, "]");
}

static void fmt_spec_shape(const struct tern_tensor_spec *s, char *buf, size_t size)
{
	if (s->ndim == 1)
		snprintf(buf, size, "[%lld]", (long long)s->shape[0]);
	else
		snprintf(buf, size, "[%lld, %lld]", (long long)s->shape[0], (long long)s->shape[1]);
}

/* Matches every expected tensor with the checkpoint and rejects extra tensors. */
static enum tern_status match_sources(const char *dir, const struct tern_model_config *cfg,
				      const struct tern_st_model *st, const struct tern_tensor_spec *spec,
				      size_t ns, struct src *src)
{
	enum tern_status rc = TERN_OK;
	const struct tern_tensor_spec **sorted = tern_calloc(ns, sizeof *sorted);
	if (!sorted)
		return TERN_E_NOMEM;
	for (size_t i = 0; i < ns; i++)
		sorted[i] = &spec[i];
	qsort(sorted, ns, sizeof *sorted, cmp_spec_name);

	for (size_t i = 0; i < ns; i++) {
		const struct tern_tensor_spec *s = &spec[i];
		char want[64], have[64];
		fmt_spec_shape(s, want, sizeof want);
		if (tern_role_is_proj(s->role) && tern_bitnet_offline(cfg)) {
			src[i].bitnet = true;
			if ((rc = tern_bitnet_src_find(dir, cfg, st, s->name, s->shape[0], s->shape[1],
						       &src[i].bn)))
				goto out;
			continue;
		}
		const struct tern_st_tensor *t = tern_st_model_find(st, s->name);
		if (!t) {
			rc = tern_fail(TERN_E_FORMAT, "%s: tensor %s missing (expected %s for %s)", dir,
				       s->name, want, cfg->model_type);
			goto out;
		}
		char qs[TERN_PACK_NAME + 40];
		snprintf(qs, sizeof qs, "%s%s", s->name, bnb_suffix[4]);
		if (tern_role_is_proj(s->role) && tern_st_model_find(st, qs)) {
			src[i].bnb = true;
			if ((rc = parse_bnb(dir, st, s, &src[i].q)))
				goto out;
			continue;
		}
		fmt_shape(t, have, sizeof have);
		bool ok = t->ndim == s->ndim && t->shape[0] == s->shape[0] &&
			  (s->ndim == 1 || t->shape[1] == s->shape[1]);
		if (!ok) {
			rc = tern_fail(TERN_E_FORMAT,
				       "%s: tensor %s has shape %s, expected %s (from config.json)", dir,
				       s->name, have, want);
			goto out;
		}
		if (st_float_dtype(t->dtype) == TERN_DTYPE_COUNT) {
			rc = tern_fail(TERN_E_FORMAT, "%s: tensor %s has dtype %s, expected F32, F16 or BF16",
				       dir, s->name, tern_st_dtype_name(t->dtype));
			goto out;
		}
		src[i].t = t;
	}

	/* Nothing unexpected. */
	for (size_t i = 0; i < tern_st_model_count(st); i++) {
		const char *nm = tern_st_model_tensor(st, i)->name;
		if (find_spec(sorted, ns, nm))
			continue;
		size_t len = strlen(nm);
		bool aux = false;
		for (int k = 0; k < 5 && !aux; k++) {
			size_t sl = strlen(bnb_suffix[k]);
			if (len > sl && !strcmp(nm + len - sl, bnb_suffix[k])) {
				char base[TERN_PACK_NAME + 40];
				snprintf(base, sizeof base, "%.*s", (int)(len - sl), nm);
				const struct tern_tensor_spec *s = find_spec(sorted, ns, base);
				aux = s && src[s - spec].bnb;
			}
		}
		if (len > 6 && !strcmp(nm + len - 6, "_scale")) { /* a BitNet projection's weight_scale */
			char base[TERN_PACK_NAME + 40];
			snprintf(base, sizeof base, "%.*s", (int)(len - 6), nm);
			const struct tern_tensor_spec *s = find_spec(sorted, ns, base);
			aux = s && src[s - spec].bitnet;
		}
		if (aux)
			continue;
		if (len > 20 && !strcmp(nm + len - 20, ".rotary_emb.inv_freq"))
			continue; /* older checkpoints saved the RoPE table; tern computes it */
		if (cfg->tie_embeddings && !strcmp(nm, "lm_head.weight"))
			continue; /* a tied copy some writers keep */
		rc = tern_fail(TERN_E_FORMAT, "%s: unexpected tensor %s (not part of a %lld-layer %s model)",
			       dir, nm, (long long)cfg->L, cfg->model_type);
		goto out;
	}
out:
	free(sorted);
	return rc;
}

/* ---- the key ---- */

static void add_file(json_t *files, const char *path, const char *name)
{
	struct stat sb;
	if (stat(path, &sb))
		return;
	json_t *f = json_object();
	json_object_set_new(f, "name", json_string(name));
	json_object_set_new(f, "size", json_integer((json_int_t)sb.st_size));
	json_object_set_new(f, "mtime_ns",
			    json_integer((json_int_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec));
	json_array_append_new(files, f);
}

static char *make_key(const char *dir, const struct tern_st_model *st, const struct tern_model_opts *o)
{
	char path[4200], real[PATH_MAX];
	json_t *k = json_object(), *files = json_array();
	json_object_set_new(k, "pack_version", json_integer(TERN_PACK_VERSION));
	json_object_set_new(k, "dir", json_string(realpath(dir, real) ? real : dir));
	json_object_set_new(k, "format", json_string(tern_base_format_name(o->format)));
	json_object_set_new(k, "blocksize", json_integer(o->blocksize));
	snprintf(path, sizeof path, "%s/config.json", dir);
	add_file(files, path, "config.json");
	snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
	add_file(files, path, "model.safetensors.index.json");
	for (size_t i = 0; i < tern_st_model_file_count(st); i++) {
		const char *p = tern_st_file_path(tern_st_model_file(st, i));
		const char *slash = strrchr(p, '/');
		add_file(files, p, slash ? slash + 1 : p);
	}
	json_object_set_new(k, "files", files);
	char *s = json_dumps(k, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(k);
	return s;
}

/* Why key `old` (from the pack) differs from `cur`. */
static void explain_stale(const char *old, const char *cur, char *why, size_t size)
{
	json_t *a = json_loads(old, 0, NULL), *b = json_loads(cur, 0, NULL);
	snprintf(why, size, "its key differs");
	if (!json_is_object(a) || !json_is_object(b))
		goto out;
	static const char *const keys[] = {"pack_version", "dir", "format", "blocksize"};
	for (int i = 0; i < 4; i++)
		if (!json_equal(json_object_get(a, keys[i]), json_object_get(b, keys[i]))) {
			char *x = json_dumps(json_object_get(a, keys[i]), JSON_ENCODE_ANY);
			char *y = json_dumps(json_object_get(b, keys[i]), JSON_ENCODE_ANY);
			snprintf(why, size, "%s was %.200s, now %.200s", keys[i], x ? x : "?", y ? y : "?");
			free(x);
			free(y);
			goto out;
		}
	const json_t *fa = json_object_get(a, "files"), *fb = json_object_get(b, "files");
	size_t i, j;
	const json_t *f, *g;
	json_array_foreach(fb, i, f)
	{
		const char *nm = json_string_value(json_object_get(f, "name"));
		const json_t *hit = NULL;
		json_array_foreach(fa, j, g) if (json_equal(json_object_get(g, "name"),
							    json_object_get(f, "name"))) hit = g;
		if (!hit) {
			snprintf(why, size, "%.200s is new", nm ? nm : "?");
			goto out;
		}
		if (!json_equal(hit, f)) {
			snprintf(why, size, "%.200s changed (size %lld -> %lld, mtime %lld -> %lld ns)",
				 nm ? nm : "?", (long long)json_integer_value(json_object_get(hit, "size")),
				 (long long)json_integer_value(json_object_get(f, "size")),
				 (long long)json_integer_value(json_object_get(hit, "mtime_ns")),
				 (long long)json_integer_value(json_object_get(f, "mtime_ns")));
			goto out;
		}
	}
	if (json_array_size(fa) != json_array_size(fb))
		snprintf(why, size, "a source file was removed");
out:
	json_decref(a);
	json_decref(b);
}

/* ---- conversion into the pack image ---- */

/* NF4-quantize x[n] into codes/absmax, in block-aligned chunks across threads. */
static void nf4_quantize_par(const float *x, int64_t n, int bs, uint8_t *codes, float *absmax)
{
	int64_t chunk = (int64_t)bs * 1024, nc = tern_cdiv(n, chunk);
#pragma omp parallel for schedule(dynamic, 1)
	for (int64_t c = 0; c < nc; c++) {
		int64_t a = c * chunk, len = n - a < chunk ? n - a : chunk;
		tern_nf4_quantize(x + a, len, bs, codes + a / 2, absmax + a / bs);
	}
}

static enum tern_status fill_tensor(uint8_t *img, struct tern_pack_tensor *t, const struct src *s, float *tmp)
{
	int64_t n = t->shape[0] * t->shape[1];
	uint8_t *d = img + t->off[TERN_PART_DATA];
	uint8_t *am = t->size[TERN_PART_ABSMAX] ? img + t->off[TERN_PART_ABSMAX] : NULL;
	uint8_t *ne = t->size[TERN_PART_NESTED] ? img + t->off[TERN_PART_NESTED] : NULL;
	bool nf4 = t->dtype == TERN_NF4 || t->dtype == TERN_NF4_DQ;

	if (s->bitnet) { /* 2-bit fields moved into tern's words; base_format is ternary for bitnet */
		tern_bitnet_fill(&s->bn, t->shape[0], t->shape[1], (uint32_t *)d);
		t->scale = s->bn.s;
		return TERN_OK;
	}

	if (s->bnb && nf4 && t->blocksize == s->q.blocksize) {
		/* Codes as stored; absmax as stored when both sides are nested with the standard map. */
		const struct bnb_src *q = &s->q;
		int64_t nb = tern_nf4_blocks(n, q->blocksize);
		memcpy(d, q->weight->data, (size_t)(n + 1) / 2);
		if (t->dtype == TERN_NF4_DQ && q->nested && q->std_map) {
			memcpy(am, q->absmax->data, (size_t)nb);
			memcpy(ne, q->nested_absmax->data, (size_t)q->nested_absmax->nbytes);
			t->offset = q->offset;
			return TERN_OK;
		}
		float *f = t->dtype == TERN_NF4 ? (float *)am : tmp;
		if (q->nested) {
			const uint8_t *qa = q->absmax->data;
			float map[256], nest;
			memcpy(map, q->nested_map->data, sizeof map);
			for (int64_t i = 0; i < nb; i++) {
				memcpy(&nest,
				       (const uint8_t *)q->nested_absmax->data +
					       4 * (i / TERN_NF4_NESTED_BLOCK),
				       4);
				f[i] = map[qa[i]] * nest + q->offset;
			}
		} else {
			memcpy(f, q->absmax->data, (size_t)nb * 4);
		}
		if (t->dtype == TERN_NF4_DQ)
			tern_nf4_double_quant(f, nb, am, (float *)ne, &t->offset);
		return TERN_OK;
	}

	/* Everything else goes through fp32. */
	if (s->bnb) {
		const struct bnb_src *q = &s->q;
		int64_t nb = tern_nf4_blocks(n, q->blocksize);
		float *a = tern_malloc((size_t)nb * 4);
		if (!a)
			return TERN_E_NOMEM;
		if (q->nested) {
			float map[256], nest;
			memcpy(map, q->nested_map->data, sizeof map);
			for (int64_t i = 0; i < nb; i++) {
				memcpy(&nest,
				       (const uint8_t *)q->nested_absmax->data +
					       4 * (i / TERN_NF4_NESTED_BLOCK),
				       4);
				a[i] = map[((const uint8_t *)q->absmax->data)[i]] * nest + q->offset;
			}
		} else {
			memcpy(a, q->absmax->data, (size_t)nb * 4);
		}
		tern_nf4_dequantize(q->weight->data, a, n, q->blocksize, tmp);
		free(a);
	} else {
		enum tern_dtype sd = st_float_dtype(s->t->dtype);
		if (sd == t->dtype) {
			memcpy(d, s->t->data, t->size[TERN_PART_DATA]);
			return TERN_OK;
		}
		tern_plain_to_f32(sd, s->t->data, n, tmp);
	}
	switch (t->dtype) {
	case TERN_F32:
	case TERN_F16:
	case TERN_BF16: from_f32(t->dtype, tmp, n, d); break;
	case TERN_NF4: nf4_quantize_par(tmp, n, t->blocksize, d, (float *)am); break;
	case TERN_NF4_DQ: {
		int64_t nb = tern_nf4_blocks(n, t->blocksize);
		float *a = tern_malloc((size_t)nb * 4);
		if (!a)
			return TERN_E_NOMEM;
		nf4_quantize_par(tmp, n, t->blocksize, d, a);
		tern_nf4_double_quant(a, nb, am, (float *)ne, &t->offset);
		free(a);
		break;
	}
	case TERN_TERNARY:
		t->scale = tern_ternary_quantize(tmp, t->shape[0], t->shape[1], (uint32_t *)d);
		break;
	case TERN_DTYPE_COUNT: break;
	}
	return TERN_OK;
}

/* Sets each pack tensor's dtype/blocksize from the options and the source. */
static enum tern_status plan_tensors(const struct tern_model_opts *o, const struct tern_tensor_spec *spec,
				     const struct src *src, size_t ns, struct tern_pack_tensor *t)
{
	for (size_t i = 0; i < ns; i++) {
		const struct tern_tensor_spec *s = &spec[i];
		struct tern_pack_tensor *p = &t[i];
		memset(p, 0, sizeof *p);
		snprintf(p->name, sizeof p->name, "%s", s->name);
		p->ndim = s->ndim;
		p->shape[0] = s->shape[0];
		p->shape[1] = s->shape[1];
		p->layer = s->layer;
		p->role = tern_pack_role(s->role, s->expert);
		p->src_dtype = src[i].bnb      ? src[i].q.dtype
			       : src[i].bitnet ? src[i].bn.dtype
					       : st_float_dtype(src[i].t->dtype);
		if (!tern_role_is_proj(s->role)) {
			p->dtype = p->src_dtype;
			continue;
		}
		if (o->format == TERN_FORMAT_AUTO && src[i].bnb) {
			p->dtype = src[i].q.nested && src[i].q.std_map ? TERN_NF4_DQ : TERN_NF4;
			p->blocksize = src[i].q.blocksize;
			continue;
		}
		p->dtype = format_dtype(o->format);
		if (p->dtype == TERN_NF4 || p->dtype == TERN_NF4_DQ)
			p->blocksize = o->blocksize ? o->blocksize : src[i].bnb ? src[i].q.blocksize : 64;
	}
	return TERN_OK;
}

static enum tern_status build_pack(const char *path, const char *key, uint32_t n_groups,
				   struct tern_pack_tensor *t, const struct src *src, size_t ns,
				   struct tern_pack **out)
{
	enum tern_status st;
	struct tern_pack_builder *b = NULL;
	uint8_t *img = NULL;
	float *tmp = NULL;
	if ((st = tern_pack_build_begin(path, t, (uint32_t)ns, n_groups, key, &b, &img)))
		return st;
	int64_t maxn = 1; /* the fp32 scratch; BitNet's quantized projections need none */
	for (size_t i = 0; i < ns; i++)
		if (tern_role_is_proj((int)t[i].role) && !src[i].bitnet &&
		    t[i].shape[0] * t[i].shape[1] > maxn)
			maxn = t[i].shape[0] * t[i].shape[1];
	/* Tensors in parallel (ternary and the fp32 conversions are one thread per tensor), each
	 * thread with its own fp32 scratch, at most ~2 GiB of scratch in all. With one thread here the
	 * NF4 quantizer splits a tensor across threads instead. */
	int nt = 1;
#ifdef _OPENMP
	nt = omp_get_max_threads();
#endif
	int64_t cap = ((int64_t)2 << 30) / (maxn * 4);
	if (nt > cap)
		nt = cap < 1 ? 1 : (int)cap;
	tmp = tern_malloc((size_t)nt * (size_t)maxn * 4);
	if (!tmp) {
		st = TERN_E_NOMEM;
		goto fail;
	}
	long bad = -1;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
	for (size_t i = 0; i < ns; i++) {
		int tid = 0;
#ifdef _OPENMP
		tid = omp_get_thread_num();
#endif
		if (!tern_role_is_proj((int)t[i].role))
			memcpy(img + t[i].off[0], src[i].t->data, t[i].size[0]);
		else if (fill_tensor(img, &t[i], &src[i], tmp + (size_t)tid * (size_t)maxn) != TERN_OK)
#pragma omp critical
			bad = (long)i;
	}
	if (bad >= 0) {
		st = tern_fail(TERN_E_NOMEM, "out of host memory converting %s", t[bad].name);
		goto fail;
	}
	free(tmp);
	return tern_pack_build_finish(b, out);
fail:
	free(tmp);
	tern_pack_build_abort(b);
	return st;
}

/* The pack must hold exactly the expected tensors, in order. */
static enum tern_status check_pack(const struct tern_pack *p, const struct tern_tensor_spec *spec, size_t ns)
{
	if (p->n_tensors != ns || p->n_groups == 0)
		return tern_fail(TERN_E_FORMAT, "%s: %u tensors, the model has %zu", p->path, p->n_tensors,
				 ns);
	for (size_t i = 0; i < ns; i++) {
		const struct tern_pack_tensor *t = &p->t[i];
		if (strcmp(t->name, spec[i].name) || t->shape[0] != spec[i].shape[0] ||
		    t->shape[1] != spec[i].shape[1] || t->layer != spec[i].layer ||
		    t->role != tern_pack_role(spec[i].role, spec[i].expert))
			return tern_fail(TERN_E_FORMAT, "%s: tensor %zu is %s, expected %s", p->path, i,
					 t->name, spec[i].name);
	}
	return TERN_OK;
}

void tern_model_free(struct tern_model *m)
{
	if (!m)
		return;
	tern_pack_free(m->pack);
	free(m->layer);
	free(m->expert);
	free(m);
}

const struct tern_pack_tensor *tern_model_tensor(const struct tern_model *m, int layer, enum tern_role role)
{
	int i = -1;
	if (layer < 0) {
		if (role <= TERN_ROLE_HEAD)
			i = m->global[role];
	} else if (layer < m->cfg.L && role < TERN_ROLE_COUNT) {
		i = m->layer[layer][role];
	}
	return i < 0 ? NULL : &m->pack->t[i];
}

const struct tern_pack_tensor *tern_model_expert(const struct tern_model *m, int layer, int e, int k)
{
	if (!m->expert || layer < 0 || layer >= m->cfg.L || e < 0 || e >= m->cfg.E || k < 0 || k > 2)
		return NULL;
	int i = m->expert[((size_t)layer * (size_t)m->cfg.E + (size_t)e) * 3 + (size_t)k];
	return i < 0 ? NULL : &m->pack->t[i];
}

void tern_model_report(const struct tern_model *m, struct tern_model_load_report *out) { *out = m->report; }

static bool file_exists(const char *p)
{
	struct stat sb;
	return stat(p, &sb) == 0;
}

/* Whether dir holds a *.safetensors file or a shard index (a file path counts as itself). */
static bool has_weights(const char *dir)
{
	struct stat sb;
	if (!stat(dir, &sb) && S_ISREG(sb.st_mode))
		return true;
	DIR *d = opendir(dir);
	if (!d)
		return false;
	bool found = false;
	struct dirent *e;
	while (!found && (e = readdir(d))) {
		size_t n = strlen(e->d_name);
		found = (n > 12 && !strcmp(e->d_name + n - 12, ".safetensors")) ||
			!strcmp(e->d_name, "model.safetensors.index.json");
	}
	closedir(d);
	return found;
}

enum tern_status tern_model_check_weights(const char *dir, struct tern_model_weights *out)
{
	memset(out, 0, sizeof *out);
	struct tern_model_config cfg;
	struct tern_st_model *stm = NULL;
	struct tern_tensor_spec *spec = NULL;
	struct src *src = NULL;
	size_t ns = 0;
	char cpath[4200];
	snprintf(cpath, sizeof cpath, "%s/config.json", dir);
	enum tern_status st;
	if ((st = tern_model_config_load(dir, &cfg)) || (st = tern_model_config_check(&cfg, cpath)))
		return st;
	if (!has_weights(dir))
		return TERN_OK;
	out->present = true;
	if ((st = tern_st_model_open(dir, &stm)) || (st = tern_model_tensor_map(&cfg, &spec, &ns)))
		goto out;
	if (!(src = tern_calloc(ns, sizeof *src))) {
		st = TERN_E_NOMEM;
		goto out;
	}
	if ((st = match_sources(dir, &cfg, stm, spec, ns, src)))
		goto out;
	out->n_files = tern_st_model_file_count(stm);
	out->n_tensors = tern_st_model_count(stm);
	for (size_t i = 0; i < out->n_tensors; i++)
		out->bytes += tern_st_model_tensor(stm, i)->nbytes;
	for (size_t i = 0; i < ns; i++)
		out->bnb |= src[i].bnb;
out:
	free(src);
	free(spec);
	tern_st_model_close(stm);
	return st;
}

enum tern_status tern_model_open(const char *dir, const struct tern_model_opts *opts, struct tern_model **out)
{
	enum tern_status st;
	double t0 = tern_now();
	struct tern_model_opts o = opts ? *opts : (struct tern_model_opts){0};
	struct tern_st_model *stm = NULL;
	struct tern_tensor_spec *spec = NULL;
	struct src *src = NULL;
	struct tern_pack_tensor *pt = NULL;
	struct tern_pack *pack = NULL;
	char *key = NULL;
	size_t ns = 0;
	*out = NULL;
	if ((unsigned)o.format >= TERN_FORMAT_COUNT)
		return tern_fail(TERN_E_INVALID, "model: bad base format %d", (int)o.format);
	if (o.blocksize && (o.blocksize < 32 || o.blocksize > 4096 || (o.blocksize & (o.blocksize - 1))))
		return tern_fail(TERN_E_INVALID, "model: blocksize %d is not a power of two from 32 to 4096",
				 o.blocksize);

	struct tern_model *m = tern_calloc(1, sizeof *m);
	if (!m)
		return TERN_E_NOMEM;
	snprintf(m->dir, sizeof m->dir, "%s", dir);
	char cpath[4200];
	snprintf(cpath, sizeof cpath, "%s/config.json", dir);
	if ((st = tern_model_config_load(dir, &m->cfg)) || (st = tern_model_config_check(&m->cfg, cpath)))
		goto out;
	if ((st = tern_st_model_open(dir, &stm)))
		goto out;
	if ((st = tern_model_tensor_map(&m->cfg, &spec, &ns)))
		goto out;
	src = tern_calloc(ns, sizeof *src);
	pt = tern_calloc(ns, sizeof *pt);
	if (!src || !pt) {
		st = TERN_E_NOMEM;
		goto out;
	}
	if ((st = match_sources(dir, &m->cfg, stm, spec, ns, src)))
		goto out;
	/* Normalise the options so that equivalent requests share a key. */
	bool any_bnb = false;
	for (size_t i = 0; i < ns; i++)
		any_bnb |= src[i].bnb;
	if (o.format == TERN_FORMAT_AUTO && !any_bnb)
		o.format = m->cfg.arch == TERN_ARCH_BITNET ? TERN_FORMAT_TERNARY : TERN_FORMAT_NF4_DQ;
	if (m->cfg.arch == TERN_ARCH_BITNET && o.format != TERN_FORMAT_TERNARY) {
		st = tern_fail(TERN_E_UNSUPPORTED,
			       "%s: base_format %s: model_type bitnet trains over its ternary weights "
			       "(base_format: ternary, or leave it unset)",
			       cpath, tern_base_format_name(o.format));
		goto out;
	}
	if (o.format != TERN_FORMAT_AUTO && o.format != TERN_FORMAT_NF4 && o.format != TERN_FORMAT_NF4_DQ)
		o.blocksize = 0;
	else if (!o.blocksize && !any_bnb)
		o.blocksize = 64;
	key = make_key(dir, stm, &o);
	if (!key) {
		st = tern_fail(TERN_E_NOMEM, "out of host memory building the pack key");
		goto out;
	}

	char *why = m->report.why;
	size_t wsz = sizeof m->report.why;
	if (!o.pack_path) {
		snprintf(why, wsz, "no pack file requested (converted in memory)");
	} else if (o.rebuild) {
		snprintf(why, wsz, "rebuild requested");
	} else if (!file_exists(o.pack_path)) {
		snprintf(why, wsz, "no pack file yet");
	} else if (tern_pack_open(o.pack_path, &pack)) {
		snprintf(why, wsz, "pack file unusable: %s", tern_error());
	} else if (strcmp(pack->key, key)) {
		explain_stale(pack->key, key, why, wsz);
		tern_pack_free(pack);
		pack = NULL;
	} else if (check_pack(pack, spec, ns)) {
		snprintf(why, wsz, "pack file does not match the model: %s", tern_error());
		tern_pack_free(pack);
		pack = NULL;
	} else {
		m->report.reused = true;
		snprintf(why, wsz, "up to date");
	}
	if (!m->report.reused) {
		if (o.pack_path)
			tern_log(TERN_LOG_INFO, "%s: building the pack file (%s)", o.pack_path, why);
		plan_tensors(&o, spec, src, ns, pt);
		if ((st = build_pack(o.pack_path, key, (uint32_t)m->cfg.L + 1, pt, src, ns, &pack)))
			goto out;
		if ((st = check_pack(pack, spec, ns)))
			goto out;
	}
	m->pack = pack;
	pack = NULL;

	m->layer = tern_calloc((size_t)m->cfg.L, sizeof *m->layer);
	if (!m->layer) {
		st = TERN_E_NOMEM;
		goto out;
	}
	memset(m->layer, 0xff, (size_t)m->cfg.L * sizeof *m->layer);
	m->global[0] = m->global[1] = m->global[2] = -1;
	if (m->cfg.E > 0) {
		size_t ne = (size_t)m->cfg.L * (size_t)m->cfg.E * 3;
		if (!(m->expert = tern_malloc(ne * sizeof *m->expert))) {
			st = TERN_E_NOMEM;
			goto out;
		}
		memset(m->expert, 0xff, ne * sizeof *m->expert);
	}
	enum tern_dtype first = TERN_DTYPE_COUNT;
	bool mixed = false;
	for (uint32_t i = 0; i < m->pack->n_tensors; i++) {
		const struct tern_pack_tensor *t = &m->pack->t[i];
		int ex = tern_pack_role_expert(t->role), r = (int)(t->role & 0xff);
		if (t->layer < 0)
			m->global[r] = (int)i;
		else if (ex >= 0 && ex < m->cfg.E && m->expert)
			m->expert[((size_t)t->layer * (size_t)m->cfg.E + (size_t)ex) * 3 +
				  (size_t)(r - TERN_ROLE_EXP_GATE)] = (int)i;
		else
			m->layer[t->layer][r] = (int)i;
		if (tern_role_is_proj((int)t->role)) {
			mixed |= first != TERN_DTYPE_COUNT && first != t->dtype;
			first = t->dtype;
		}
	}
	static const char *const dname[] = {"f32", "f16", "bf16", "nf4", "nf4-dq", "ternary"};
	snprintf(m->report.format, sizeof m->report.format, "%s", mixed ? "mixed" : dname[first]);
	m->report.pack_bytes = m->pack->size;
	m->report.n_tensors = m->pack->n_tensors;
	m->report.seconds = tern_now() - t0;
	*out = m;
	m = NULL;
out:
	tern_model_free(m);
	tern_pack_free(pack);
	tern_st_model_close(stm);
	free(spec);
	free(src);
	free(pt);
	free(key);
	return st;
}

/* ---- tern info ---- */

static uint64_t proj_bytes(enum tern_base_format f, int64_t O, int64_t I)
{
	uint64_t s[3];
	if (f == TERN_FORMAT_TERNARY) {
		tern_pack_part_sizes(TERN_TERNARY, O, I, 64, s);
		return s[0] + 4;
	}
	tern_pack_part_sizes(format_dtype(f), O, I, 64, s);
	return s[0] + s[1] + s[2] + (f == TERN_FORMAT_NF4_DQ ? 4 : 0);
}

enum tern_status tern_model_info(const char *dir, struct tern_model_info *info)
{
	struct tern_model_config c;
	enum tern_status st = tern_model_config_load(dir, &c);
	if (st)
		return st;
	memset(info, 0, sizeof *info);
	snprintf(info->model_type, sizeof info->model_type, "%s", c.model_type);
	snprintf(info->dtype, sizeof info->dtype, "%s", tern_dtype_name(c.dtype));
	snprintf(info->quantization, sizeof info->quantization, "%s",
		 c.qmethod == TERN_QMETHOD_BNB_4BIT
			 ? (c.bnb_double_quant ? "bitsandbytes nf4 + double quant" : "bitsandbytes nf4")
		 : c.qmethod == TERN_QMETHOD_BITNET ? "bitnet"
						    : "none");
	if (c.qmethod == TERN_QMETHOD_BITNET)
		snprintf(info->quantization, sizeof info->quantization, "bitnet %.13s %.7s (%s)",
			 c.bitnet_linear_class, c.bitnet_mode,
			 tern_bitnet_offline(&c) ? "ternary + weight_scale" : "master weights");
	info->supported = tern_model_config_check(&c, dir) == TERN_OK;
	info->L = c.L;
	info->D = c.D;
	info->F = c.F;
	info->H = c.H;
	info->Hkv = c.Hkv;
	info->Dh = c.Dh;
	info->V = c.V;
	info->max_pos = c.max_pos;
	info->E = c.E;
	info->top_k = c.top_k;
	info->sliding_window = c.sliding_window;
	info->rms_eps = c.rms_eps;
	info->rope_theta = c.rope_theta;
	if (c.rope_type == TERN_ROPE_LLAMA3)
		snprintf(info->rope, sizeof info->rope, "llama3 (factor %g, low %g, high %g, original %lld)",
			 c.rope_factor, c.rope_low_freq_factor, c.rope_high_freq_factor,
			 (long long)c.rope_original_max_pos);
	else if (c.rope_type == TERN_ROPE_LINEAR)
		snprintf(info->rope, sizeof info->rope, "linear (factor %g)", c.rope_factor);
	else
		snprintf(info->rope, sizeof info->rope, "default");
	info->qkv_bias = c.qkv_bias;
	info->o_bias = c.o_bias;
	info->qk_norm = c.qk_norm;
	info->tied = c.tie_embeddings;

	/* Projections of each layer as (O, I) pairs; a sparse layer: E experts of width Fe + the
	 * router (kept as stored). params_layer / params_proj_layer: layer 0's. */
	int64_t q = c.H * c.Dh, kv = c.Hkv * c.Dh;
	uint64_t rest_per_model = (uint64_t)(c.V * c.D) * (c.tie_embeddings ? 1 : 2) + (uint64_t)c.D;
	info->params_embed = (uint64_t)(c.V * c.D);
	info->params_head = c.tie_embeddings ? 0 : (uint64_t)(c.V * c.D);
	info->params_total = rest_per_model;
	for (int f = TERN_FORMAT_NF4; f < TERN_FORMAT_COUNT; f++)
		info->bytes[f] = rest_per_model * (f == TERN_FORMAT_F32 ? 4 : 2);
	for (int64_t l = 0; l < c.L; l++) {
		bool moe = tern_model_layer_moe(&c, l);
		int64_t E = moe ? c.E : 1, F = moe ? c.Fe : c.F;
		int64_t proj[7][2] = {{q, c.D}, {kv, c.D}, {kv, c.D}, {c.D, q}, {F, c.D}, {F, c.D}, {c.D, F}};
		uint64_t other = 2 * (uint64_t)c.D;
		if (c.qkv_bias)
			other += (uint64_t)(q + 2 * kv);
		if (c.o_bias)
			other += (uint64_t)c.D;
		if (c.qk_norm)
			other += 2 * (uint64_t)c.Dh;
		if (c.mlp_bias && !moe)
			other += (uint64_t)(2 * c.F + c.D);
		if (moe)
			other += (uint64_t)(c.E * c.D);
		uint64_t pl = 0;
		for (int i = 0; i < 7; i++)
			pl += (uint64_t)(proj[i][0] * proj[i][1]) * (uint64_t)(i >= 4 ? E : 1);
		if (l == 0) {
			info->params_proj_layer = pl;
			info->params_layer = pl + other;
		}
		info->params_total += pl + other;
		for (int f = TERN_FORMAT_NF4; f < TERN_FORMAT_COUNT; f++) {
			uint64_t eb = f == TERN_FORMAT_F32 ? 4 : 2, b = 0;
			for (int i = 0; i < 7; i++)
				b += proj_bytes((enum tern_base_format)f, proj[i][0], proj[i][1]) *
				     (uint64_t)(i >= 4 ? E : 1);
			info->bytes[f] += b + other * eb;
		}
	}
	return TERN_OK;
}
