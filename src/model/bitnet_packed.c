/* BitNet b1.58 checkpoints with quantized projections (bitnet_packed.h). */
#include "model/bitnet_packed.h"

#include "quant/quant.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Element k of a float tensor (F32, F16 or BF16). */
static float elem(const struct tern_st_tensor *t, int64_t k)
{
	const uint8_t *p = t->data;
	if (t->dtype == TERN_ST_F32) {
		float f;
		memcpy(&f, p + 4 * k, 4);
		return f;
	}
	uint16_t h;
	memcpy(&h, p + 2 * k, 2);
	return t->dtype == TERN_ST_F16 ? tern_f16_to_f32(h) : tern_bf16_to_f32(h);
}

static bool is_float(enum tern_st_dtype d)
{
	return d == TERN_ST_F32 || d == TERN_ST_F16 || d == TERN_ST_BF16;
}

static enum tern_dtype float_dtype(enum tern_st_dtype d)
{
	return d == TERN_ST_F32 ? TERN_F32 : d == TERN_ST_F16 ? TERN_F16 : TERN_BF16;
}

static void shape_str(const struct tern_st_tensor *t, char *buf, size_t size)
{
	size_t len = (size_t)snprintf(buf, size, "[");
	for (int d = 0; d < t->ndim && len < size; d++)
		len += (size_t)snprintf(buf + len, size - len, "%s%lld", d ? ", " : "",
					(long long)t->shape[d]);
	if (len < size)
		snprintf(buf + len, size - len, "]");
}

enum tern_status tern_bitnet_src_find(const char *dir, const struct tern_model_config *cfg,
				      const struct tern_st_model *st, const char *name, int64_t O, int64_t I,
				      struct tern_bitnet_src *out)
{
	memset(out, 0, sizeof *out);
	bool bitlinear = !strcmp(cfg->bitnet_linear_class, "bitlinear");
	const char *qc = bitlinear ? "linear_class bitlinear"
				   : "linear_class autobitlinear, quantization_mode offline";
	char sname[512], have[96];
	snprintf(sname, sizeof sname, "%s_scale", name);
	const struct tern_st_tensor *w = tern_st_model_find(st, name), *sc = tern_st_model_find(st, sname);
	if (!w)
		return tern_fail(TERN_E_FORMAT,
				 "%s: tensor %s missing (expected uint8 [%lld, %lld], four ternary weights "
				 "per byte, for quantization_config %s)",
				 dir, name, (long long)(O / 4), (long long)I, qc);
	shape_str(w, have, sizeof have);
	if (O % 4)
		return tern_fail(TERN_E_UNSUPPORTED,
				 "%s: tensor %s has %lld output rows, not a multiple of 4: transformers' "
				 "2-bit packing cannot hold it",
				 dir, name, (long long)O);
	bool packed_shape = w->ndim == 2 && w->shape[0] == O / 4 && w->shape[1] == I;
	bool full_shape = w->ndim == 2 && w->shape[0] == O && w->shape[1] == I;
	if (w->dtype == TERN_ST_U8 && packed_shape) {
		out->packed = true;
	} else if (!bitlinear && is_float(w->dtype) && full_shape) {
		out->packed = false;
	} else if (w->dtype == TERN_ST_U8 || (bitlinear && is_float(w->dtype) && packed_shape)) {
		return tern_fail(TERN_E_FORMAT,
				 "%s: tensor %s is %s %s, expected uint8 [%lld, %lld] (%lld output rows "
				 "packed four to a byte, from config.json)",
				 dir, name, tern_st_dtype_name(w->dtype), have, (long long)(O / 4),
				 (long long)I, (long long)O);
	} else if (bitlinear && is_float(w->dtype) && full_shape) {
		return tern_fail(TERN_E_FORMAT,
				 "%s: tensor %s is %s %s, unpacked: linear_class bitlinear stores packed "
				 "uint8 [%lld, %lld] (for master weights set quantization_config "
				 "linear_class: autobitlinear, quantization_mode: online)",
				 dir, name, tern_st_dtype_name(w->dtype), have, (long long)(O / 4),
				 (long long)I);
	} else {
		return tern_fail(TERN_E_FORMAT,
				 "%s: tensor %s is %s %s, expected uint8 [%lld, %lld]%s (from config.json)",
				 dir, name, tern_st_dtype_name(w->dtype), have, (long long)(O / 4),
				 (long long)I, bitlinear ? "" : " or a float [O, I] of -1, 0, 1");
	}
	if (!sc)
		return tern_fail(TERN_E_FORMAT,
				 "%s: tensor %s missing: quantization_config %s stores one weight_scale "
				 "per projection (for master weights without it set quantization_mode: "
				 "online, linear_class: autobitlinear)",
				 dir, sname, qc);
	shape_str(sc, have, sizeof have);
	if (!is_float(sc->dtype) || sc->numel != 1)
		return tern_fail(TERN_E_FORMAT, "%s: tensor %s is %s %s, expected one F32, F16 or BF16 value",
				 dir, sname, tern_st_dtype_name(sc->dtype), have);
	float ws = elem(sc, 0);
	if (!isfinite(ws) || !(ws > 0.0f))
		return tern_fail(TERN_E_FORMAT, "%s: tensor %s = %g: expected a positive finite scale", dir,
				 sname, (double)ws);
	out->s = bitlinear ? 1.0f / ws : ws;
	if (!isfinite(out->s) || !(out->s > 0.0f))
		return tern_fail(TERN_E_FORMAT, "%s: tensor %s = %g: its reciprocal is not a finite scale",
				 dir, sname, (double)ws);
	out->dtype = float_dtype(sc->dtype);
	out->w = w;
	out->scale = sc;

	/* Every stored value, so that tern_bitnet_fill cannot meet a bad one. */
	const uint8_t *b = w->data;
	int64_t n = out->packed ? (O / 4) * I : O * I, bad = -1;
	if (out->packed) {
		for (int64_t k = 0; k < n && bad < 0; k++)
			if ((b[k] & 0x55) & (b[k] >> 1)) /* some field is 3 (both bits set) */
				bad = k;
		if (bad >= 0)
			return tern_fail(TERN_E_FORMAT,
					 "%s: tensor %s byte [%lld, %lld] = 0x%02x holds the 2-bit code 3 "
					 "(codes are 0, 1, 2 for -1, 0, +1): not a BitNet packed weight",
					 dir, name, (long long)(bad / I), (long long)(bad % I), b[bad]);
	} else {
		for (int64_t k = 0; k < n && bad < 0; k++) {
			float v = elem(w, k);
			if (v != -1.0f && v != 0.0f && v != 1.0f)
				bad = k;
		}
		if (bad >= 0)
			return tern_fail(
				TERN_E_FORMAT,
				"%s: tensor %s [%lld, %lld] = %g: quantization_mode offline stores "
				"ternary -1, 0, 1 (for master weights set quantization_mode: online)",
				dir, name, (long long)(bad / I), (long long)(bad % I), (double)elem(w, bad));
	}
	return TERN_OK;
}

void tern_bitnet_fill(const struct tern_bitnet_src *s, int64_t O, int64_t I, uint32_t *words)
{
	int64_t rw = tern_ternary_row_words(I), R = O / 4;
	const uint8_t *b = s->w->data;
	for (int64_t o = 0; o < O; o++) {
		uint32_t *dst = words + o * rw;
		for (int64_t k = 0; k < rw; k++)
			dst[k] = 0x55555555u; /* padding fields hold 1 (weight 0) */
		if (s->packed) {
			/* transformers' field = q + 1 is tern's field: moved, not decoded */
			const uint8_t *row = b + (o % R) * I;
			int sh = (int)(2 * (o / R));
			for (int64_t i = 0; i < I; i++) {
				uint32_t f = (uint32_t)(row[i] >> sh) & 3u;
				int fs = (int)(2 * (i % 16));
				dst[i / 16] = (dst[i / 16] & ~(3u << fs)) | f << fs;
			}
		} else {
			for (int64_t i = 0; i < I; i++) {
				float v = elem(s->w, o * I + i);
				uint32_t f = v > 0.0f ? 2u : v < 0.0f ? 0u : 1u;
				int fs = (int)(2 * (i % 16));
				dst[i / 16] = (dst[i / 16] & ~(3u << fs)) | f << fs;
			}
		}
	}
}
