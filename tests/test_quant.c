/* test_quant: the CPU quantizers and float conversions of src/quant against fixed bit patterns
 * and against tests/data/nf4_golden.bin, which tools/nf4_golden.py writes from an independent
 * numpy implementation of bitsandbytes' NF4 (the file layout is in that script's docstring).
 *
 * Prints one line per check and a final "N passed, M failed"; exits 0 only if nothing failed. */
#include "quant/quant.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_pass, n_fail;

static void check(bool ok, const char *fmt, ...)
{
	va_list ap;

	printf("%s ", ok ? "PASS" : "FAIL");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	if (ok)
		n_pass++;
	else
		n_fail++;
}

static uint32_t bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof u);
	return u;
}

static float from_bits(uint32_t u)
{
	float f;
	memcpy(&f, &u, sizeof f);
	return f;
}

/* A small deterministic generator (xorshift64*), so the test needs no data for random inputs. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng_u64(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

static float rng_uniform(void) /* [0, 1) */ { return (float)(rng_u64() >> 40) * 0x1p-24f; }

static float rng_normal(void)
{
	float u = rng_uniform() + 0x1p-25f, v = rng_uniform();
	return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

/* ---------------------------------------------------------------------------------------------
 * Golden file reader: a cursor over the whole file with bounds checks. All fields little-endian. */

struct reader {
	const uint8_t *p;
	size_t size, pos;
	bool bad;
};

static const uint8_t *take(struct reader *r, size_t n)
{
	if (r->bad || n > r->size - r->pos) {
		r->bad = true;
		return NULL;
	}
	const uint8_t *q = r->p + r->pos;
	r->pos += n;
	return q;
}

static uint32_t rd_u32(struct reader *r)
{
	const uint8_t *q = take(r, 4);
	return q ? (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24 : 0;
}

static uint64_t rd_u64(struct reader *r)
{
	uint64_t lo = rd_u32(r);
	return lo | (uint64_t)rd_u32(r) << 32;
}

/* n fp32 values into a new array (NULL on a short file). */
static float *rd_f32s(struct reader *r, size_t n)
{
	float *a = malloc(n ? n * sizeof(float) : 1);
	for (size_t i = 0; i < n && a; i++)
		a[i] = from_bits(rd_u32(r));
	if (r->bad) {
		free(a);
		return NULL;
	}
	return a;
}

static const uint8_t *rd_u8s(struct reader *r, size_t n) { return take(r, n); }

/* Index of the first bitwise difference, or -1. */
static int64_t first_diff_f32(const float *a, const float *b, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		if (bits(a[i]) != bits(b[i]))
			return i;
	return -1;
}

static int64_t first_diff_u8(const uint8_t *a, const uint8_t *b, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		if (a[i] != b[i])
			return i;
	return -1;
}

#define GUARD 16
#define GUARD_BYTE 0xa5

static bool guard_ok(const uint8_t *g)
{
	for (int i = 0; i < GUARD; i++)
		if (g[i] != GUARD_BYTE)
			return false;
	return true;
}

static void test_tables(void)
{
	bool incr = true, between = true;

	for (int k = 0; k < 15; k++) {
		incr &= tern_nf4_code[k] < tern_nf4_code[k + 1];
		between &= tern_nf4_code[k] < tern_nf4_threshold[k] &&
			   tern_nf4_threshold[k] < tern_nf4_code[k + 1];
	}
	check(tern_nf4_code[7] == 0.0f && !signbit(tern_nf4_code[7]), "nf4 code[7] is +0");
	check(tern_nf4_code[15] == 1.0f && tern_nf4_code[0] == -1.0f, "nf4 code[15] is 1 and code[0] is -1");
	check(incr, "nf4 codes strictly increasing");
	check(between, "nf4 threshold k lies strictly between codes k and k+1");
	check(tern_nf4_code_of(tern_nf4_threshold[3]) == 3 &&
		      tern_nf4_code_of(nextafterf(tern_nf4_threshold[3], 1.0f)) == 4,
	      "nf4 code_of: a value equal to a threshold takes the lower code");
	check(tern_nf4_code_of(NAN) == 0 && tern_nf4_code_of(INFINITY) == 15 &&
		      tern_nf4_code_of(-INFINITY) == 0,
	      "nf4 code_of: NaN -> 0, +inf -> 15, -inf -> 0");

	float map[256];
	bool sorted = true;
	tern_dynamic_map(map);
	for (int k = 0; k < 255; k++)
		sorted &= map[k] < map[k + 1];
	check(sorted && map[127] == 0.0f && map[255] == 1.0f,
	      "dynamic map sorted, map[127] = 0, map[255] = 1");
	check(fabsf(map[0] + 0.99296875f) < 1e-6f, "dynamic map[0] = %.9g (about -0.99296875)", map[0]);
	check(tern_dynamic_code_of(map, NAN) == 0 && tern_dynamic_code_of(map, 2.0f) == 255 &&
		      tern_dynamic_code_of(map, -2.0f) == 0 && tern_dynamic_code_of(map, 0.0f) == 127,
	      "dynamic code_of: NaN -> 0, 2 -> 255, -2 -> 0, 0 -> 127");
}

/* One golden case: quantize, double-quantize, reconstruct, dequantize. */
static void golden_case(struct reader *r)
{
	char name[33] = {0};
	const uint8_t *nm = take(r, 32);
	if (nm)
		memcpy(name, nm, 32);
	uint64_t n = rd_u64(r);
	uint32_t bs = rd_u32(r), nb = rd_u32(r), nn = rd_u32(r);
	(void)rd_u32(r);
	if (r->bad || n == 0 || n > (1u << 26) || bs < 32 || bs > 4096 || (bs & (bs - 1)) ||
	    nb != (uint64_t)tern_nf4_blocks((int64_t)n, (int)bs) || nn != (nb + 255) / 256) {
		check(false, "golden case header (%s)", name);
		r->bad = true;
		return;
	}
	size_t nc = (size_t)(n + 1) / 2;
	float *x = rd_f32s(r, n);
	const uint8_t *g_codes = rd_u8s(r, nc);
	float *g_absmax = rd_f32s(r, nb);
	float g_offset = from_bits(rd_u32(r));
	const uint8_t *g_qabs = rd_u8s(r, nb);
	float *g_nested = rd_f32s(r, nn);
	float *g_rec = rd_f32s(r, nb);
	if (r->bad || !x || !g_codes || !g_absmax || !g_qabs || !g_nested || !g_rec) {
		check(false, "golden case %s: file truncated", name);
		r->bad = true;
		goto out_early;
	}

	/* outputs with guard bytes after them */
	uint8_t *codes = malloc(nc + GUARD), *qabs = malloc(nb + GUARD);
	float *absmax = malloc(nb * sizeof(float) + GUARD), *nested = malloc(nn * sizeof(float) + GUARD);
	float *rec = malloc(nb * sizeof(float)), *deq = malloc(n * sizeof(float));
	memset(codes, GUARD_BYTE, nc + GUARD);
	memset(qabs, GUARD_BYTE, nb + GUARD);
	memset(absmax, GUARD_BYTE, nb * sizeof(float) + GUARD);
	memset(nested, GUARD_BYTE, nn * sizeof(float) + GUARD);

	int64_t d;
	tern_nf4_quantize(x, (int64_t)n, (int)bs, codes, absmax);
	d = first_diff_u8(codes, g_codes, (int64_t)nc);
	check(d < 0, "%-28s n=%-6llu bs=%-4u codes (%zu bytes) bit-exact%s", name, (unsigned long long)n, bs,
	      nc, d < 0 ? "" : " -- first difference at a byte shown below");
	if (d >= 0)
		printf("     byte %lld: got 0x%02x want 0x%02x\n", (long long)d, codes[d], g_codes[d]);
	d = first_diff_f32(absmax, g_absmax, nb);
	check(d < 0, "%-28s absmax (%u) bit-exact", name, nb);
	if (d >= 0)
		printf("     absmax[%lld]: got %.9g want %.9g\n", (long long)d, absmax[d], g_absmax[d]);
	check(guard_ok(codes + nc) && guard_ok((uint8_t *)(absmax + nb)),
	      "%-28s quantize writes nothing past its outputs", name);

	float offset = -1.0f;
	tern_nf4_double_quant(g_absmax, nb, qabs, nested, &offset);
	check(bits(offset) == bits(g_offset), "%-28s offset %.9g bit-exact (want %.9g)", name, offset,
	      g_offset);
	d = first_diff_u8(qabs, g_qabs, nb);
	check(d < 0, "%-28s qabsmax (%u) bit-exact", name, nb);
	if (d >= 0)
		printf("     qabsmax[%lld]: got %u want %u\n", (long long)d, qabs[d], g_qabs[d]);
	d = first_diff_f32(nested, g_nested, nn);
	check(d < 0, "%-28s nested_absmax (%u) bit-exact", name, nn);
	check(guard_ok(qabs + nb) && guard_ok((uint8_t *)(nested + nn)),
	      "%-28s double_quant writes nothing past its outputs", name);

	tern_nf4_nested_absmax(g_qabs, g_nested, g_offset, nb, rec);
	d = first_diff_f32(rec, g_rec, nb);
	check(d < 0, "%-28s reconstructed absmax bit-exact", name);
	if (d >= 0)
		printf("     absmax'[%lld]: got %.9g want %.9g\n", (long long)d, rec[d], g_rec[d]);

	tern_nf4_dequantize(g_codes, g_absmax, (int64_t)n, (int)bs, deq);
	d = -1;
	for (uint64_t i = 0; i < n && d < 0; i++) {
		uint8_t q = (i & 1) ? g_codes[i / 2] & 15 : g_codes[i / 2] >> 4;
		float want = tern_nf4_code[q] * g_absmax[i / bs];
		if (bits(deq[i]) != bits(want))
			d = (int64_t)i;
	}
	check(d < 0, "%-28s dequantize = code[q] * absmax", name);

	free(codes);
	free(qabs);
	free(absmax);
	free(nested);
	free(rec);
	free(deq);
out_early:
	free(x);
	free(g_absmax);
	free(g_nested);
	free(g_rec);
}

static void test_golden(void)
{
	const char *dir = getenv("TERN_TEST_DATA");
	char path[4096];
	FILE *f;

	if (!dir) {
		check(false, "TERN_TEST_DATA is set (ctest sets it to tests/data)");
		return;
	}
	snprintf(path, sizeof path, "%s/nf4_golden.bin", dir);
	f = fopen(path, "rb");
	check(f != NULL, "open %s", path);
	if (!f)
		return;
	fseek(f, 0, SEEK_END);
	long size = ftell(f);
	fseek(f, 0, SEEK_SET);
	uint8_t *buf = malloc(size > 0 ? (size_t)size : 1);
	bool read_ok = size > 0 && buf && fread(buf, 1, (size_t)size, f) == (size_t)size;
	fclose(f);
	check(read_ok, "read %s (%ld bytes)", path, size);
	if (!read_ok) {
		free(buf);
		return;
	}

	struct reader r = {buf, (size_t)size, 0, false};
	const uint8_t *magic = take(&r, 8);
	uint32_t version = rd_u32(&r), n_cases = rd_u32(&r);
	if (!magic || memcmp(magic, "TERNNF4G", 8) != 0 || version != 1) {
		check(false,
		      "golden magic/version (want TERNNF4G v1; regenerate with python3 tools/nf4_golden.py)");
		free(buf);
		return;
	}
	check(true, "golden magic TERNNF4G version 1, %u cases", n_cases);

	float *gmap = rd_f32s(&r, 256), *gcode = rd_f32s(&r, 16), *gthr = rd_f32s(&r, 15);
	float map[256];
	int64_t d;
	tern_dynamic_map(map);
	d = gmap ? first_diff_f32(map, gmap, 256) : 0;
	check(gmap && d < 0, "dynamic map bit-exact (256 entries)");
	if (gmap && d >= 0)
		printf("     map[%lld]: got %.9g (0x%08x) want %.9g (0x%08x)\n", (long long)d, map[d],
		       bits(map[d]), gmap[d], bits(gmap[d]));
	check(gcode && first_diff_f32(tern_nf4_code, gcode, 16) < 0, "nf4 code table bit-exact");
	d = gthr ? first_diff_f32(tern_nf4_threshold, gthr, 15) : 0;
	check(gthr && d < 0, "nf4 thresholds bit-exact");
	if (gthr && d >= 0)
		printf("     threshold[%lld]: got %.9g want %.9g\n", (long long)d, tern_nf4_threshold[d],
		       gthr[d]);

	uint32_t np = rd_u32(&r);
	float *px = rd_f32s(&r, np);
	const uint8_t *pq = rd_u8s(&r, np);
	int bad = 0;
	for (uint32_t i = 0; px && pq && i < np; i++)
		if (tern_nf4_code_of(px[i]) != pq[i] && bad++ < 3)
			printf("     nf4 probe %u: x=%.9g got %u want %u\n", i, px[i],
			       tern_nf4_code_of(px[i]), pq[i]);
	check(px && pq && bad == 0, "nf4 code_of on %u probes (thresholds, their neighbours, NaN, inf)", np);
	free(px);

	uint32_t nq = rd_u32(&r);
	float *qx = rd_f32s(&r, nq);
	const uint8_t *qq = rd_u8s(&r, nq);
	bad = 0;
	for (uint32_t i = 0; qx && qq && i < nq; i++) {
		uint8_t got = tern_dynamic_code_of(map, qx[i]);
		if (got != qq[i] && bad++ < 3)
			printf("     dynamic probe %u: x=%.9g got %u want %u\n", i, qx[i], got, qq[i]);
	}
	check(qx && qq && bad == 0, "dynamic code_of on %u probes (map entries, midpoints, neighbours)", nq);
	free(qx);

	for (uint32_t c = 0; c < n_cases && !r.bad; c++)
		golden_case(&r);
	const uint8_t *end = take(&r, 4);
	check(!r.bad && end && memcmp(end, "END!", 4) == 0 && r.pos == r.size,
	      "golden file fully read, trailer END!");

	free(gmap);
	free(gcode);
	free(gthr);
	free(buf);
}

/* ---------------------------------------------------------------------------------------------
 * Ternary */

static void ternary_case(int64_t O, int64_t I, float amp)
{
	int64_t n = O * I, rw = tern_ternary_row_words(I);
	float *w = malloc((size_t)n * sizeof(float)), *out = malloc((size_t)n * sizeof(float));
	uint32_t *packed = malloc((size_t)(O * rw + 4) * sizeof(uint32_t));
	double sum = 0.0;

	for (int64_t i = 0; i < n; i++) {
		w[i] = amp * rng_normal();
		sum += fabs((double)w[i]);
	}
	for (int64_t i = 0; i < O * rw + 4; i++)
		packed[i] = 0xdeadbeefu;
	float want_s = n ? (float)(sum / (double)n) : 0.0f;
	if (!(want_s > 1e-5f))
		want_s = 1e-5f;

	float s = tern_ternary_quantize(w, O, I, packed);
	tern_ternary_dequantize(packed, s, O, I, out);

	bool in_set = true, values = true, pad = true, guard = true;
	for (int64_t i = 0; i < n; i++) {
		in_set &= out[i] == s || out[i] == -s || (out[i] == 0.0f && !signbit(out[i]));
		float q = nearbyintf(w[i] / s);
		q = q > 1.0f ? 1.0f : q < -1.0f ? -1.0f : q;
		values &= out[i] == q * s || (q == 0.0f && out[i] == 0.0f);
	}
	for (int64_t o = 0; o < O; o++)
		for (int64_t i = I; i < rw * 16; i++)
			pad &= (packed[o * rw + i / 16] >> (2 * (i % 16)) & 3u) == 1u;
	for (int64_t i = O * rw; i < O * rw + 4; i++)
		guard &= packed[i] == 0xdeadbeefu;
	check(bits(s) == bits(want_s), "ternary O=%lld I=%lld: scale %.9g = max(mean|W|, 1e-5)", (long long)O,
	      (long long)I, s);
	check(in_set, "ternary O=%lld I=%lld: dequantized values in {-s, 0, s}", (long long)O, (long long)I);
	check(values, "ternary O=%lld I=%lld: values = s * clip(round_half_even(W / s), -1, 1)", (long long)O,
	      (long long)I);
	check(pad && guard, "ternary O=%lld I=%lld: padding fields are 1, nothing written past O*row_words",
	      (long long)O, (long long)I);
	free(w);
	free(out);
	free(packed);
}

static void test_ternary(void)
{
	static const int64_t Is[] = {1, 15, 16, 17, 33, 100};
	static const int64_t Os[] = {1, 3, 7};

	for (size_t a = 0; a < sizeof Os / sizeof Os[0]; a++)
		for (size_t b = 0; b < sizeof Is / sizeof Is[0]; b++)
			ternary_case(Os[a], Is[b], 0.02f);
	ternary_case(5, 33, 0.0f); /* all zero: scale clamps to 1e-5 */

	/* Halves round to even like torch.round: mean|W| = 2, so W / s = +-0.5 -> 0 and +-1.5 -> +-2 -> +-1. */
	float w[4] = {1.0f, -1.0f, 3.0f, -3.0f}, out[4];
	uint32_t packed[1];
	float s = tern_ternary_quantize(w, 1, 4, packed);
	tern_ternary_dequantize(packed, s, 1, 4, out);
	check(s == 2.0f && out[0] == 0.0f && out[1] == 0.0f && out[2] == 2.0f && out[3] == -2.0f,
	      "ternary ties: W/s = +-0.5 -> 0 (half to even), +-1.5 -> +-1; s = %g", s);
	check(packed[0] == (0x55555555u & ~0xffu) + (1u | 1u << 2 | 2u << 4 | 0u << 6),
	      "ternary layout: weight i in bits 2i..2i+1 as q+1 (word 0x%08x)", packed[0]);
}

/* ---------------------------------------------------------------------------------------------
 * fp16 / bf16 */

static void test_half(void)
{
	static const struct {
		uint32_t f;
		uint16_t h;
		const char *what;
	} f16[] = {
		{0x3f800000u, 0x3c00, "1.0"},
		{0xc0000000u, 0xc000, "-2.0"},
		{0x477fe000u, 0x7bff, "65504 (max)"},
		{0x477fefffu, 0x7bff, "65519.998 -> 65504"},
		{0x477ff000u, 0x7c00, "65520 -> inf (tie to even)"},
		{0x7f800000u, 0x7c00, "inf"},
		{0xff800000u, 0xfc00, "-inf"},
		{0x7f7fffffu, 0x7c00, "FLT_MAX -> inf"},
		{0x33800000u, 0x0001, "2^-24 (smallest subnormal)"},
		{0x33000000u, 0x0000, "2^-25 -> 0 (tie to even)"},
		{0x33000001u, 0x0001, "just above 2^-25 -> 2^-24"},
		{0x33c00000u, 0x0002, "1.5 * 2^-24 -> 2 * 2^-24 (tie to even)"},
		{0x34200000u, 0x0002, "2.5 * 2^-24 -> 2 * 2^-24 (tie to even)"},
		{0x387fc000u, 0x03ff, "largest subnormal"},
		{0x387fe000u, 0x0400, "tie between largest subnormal and 2^-14 -> 2^-14"},
		{0x38800000u, 0x0400, "2^-14 (smallest normal)"},
		{0x3dcccccdu, 0x2e66, "0.1"},
		{0x3f801000u, 0x3c00, "1 + 2^-11 -> 1 (tie to even)"},
		{0x3f803000u, 0x3c02, "1 + 3*2^-11 -> 1 + 2^-9 (tie to even)"},
		{0x80000000u, 0x8000, "-0"},
		{0x7fc00000u, 0x7e00, "NaN"},
		{0x7f800001u, 0x7e00, "signalling NaN -> quiet NaN"},
	};
	for (size_t i = 0; i < sizeof f16 / sizeof f16[0]; i++) {
		uint16_t h = tern_f32_to_f16(from_bits(f16[i].f));
		check(h == f16[i].h, "f32->f16 %-52s 0x%08x -> 0x%04x (want 0x%04x)", f16[i].what, f16[i].f,
		      h, f16[i].h);
	}
	check(tern_f16_to_f32(0x0001) == 0x1p-24f && tern_f16_to_f32(0x7bff) == 65504.0f &&
		      tern_f16_to_f32(0xc000) == -2.0f,
	      "f16->f32 subnormal, max, -2");
	check(isnan(tern_f16_to_f32(0x7c01)) && (bits(tern_f16_to_f32(0x7c01)) & 0x00400000u),
	      "f16->f32 signalling NaN -> quiet NaN");

	/* every fp16 pattern: f16 -> f32 -> f16 is the identity (NaNs stay NaN, quieted) */
	int bad = 0;
	for (uint32_t h = 0; h < 65536; h++) {
		float f = tern_f16_to_f32((uint16_t)h);
		uint16_t back = tern_f32_to_f16(f);
		bool is_nan = (h & 0x7c00u) == 0x7c00u && (h & 0x03ffu);
		bool ok = is_nan ? isnan(f) && (back & 0x7c00u) == 0x7c00u && (back & 0x0200u) &&
					   (back & 0x8000u) == (h & 0x8000u)
				 : back == h;
		if (!ok && bad++ < 3)
			printf("     f16 0x%04x -> %.9g -> 0x%04x\n", h, f, back);
	}
	check(bad == 0, "f16 -> f32 -> f16 round trip over all 65536 patterns (%d bad)", bad);

	/* random fp32 in the fp16 range: the result is a nearest fp16, ties to even */
	bad = 0;
	for (int i = 0; i < 200000; i++) {
		uint32_t u = (uint32_t)(rng_u64() >> 32);
		u = (u & 0x807fffffu) | (uint32_t)(100 + rng_u64() % 43) << 23; /* 2^-27 .. 2^15 */
		if (i % 4 == 0)
			u &= ~0x0fffu; /* many exact ties */
		float f = from_bits(u);
		if (fabsf(f) >= 65520.0f)
			continue; /* rounds to inf: covered by the fixed cases */
		uint16_t h = tern_f32_to_f16(f);
		double e = fabs((double)f - tern_f16_to_f32(h));
		uint16_t up = (uint16_t)(h + 1), dn = (uint16_t)(h - 1);
		bool ok = true;
		if ((up & 0x7c00u) != 0x7c00u && (up & 0x7fffu) != 0)
			ok &= e < fabs((double)f - tern_f16_to_f32(up)) ||
			      (e == fabs((double)f - tern_f16_to_f32(up)) && !(h & 1));
		if ((h & 0x7fffu) != 0)
			ok &= e < fabs((double)f - tern_f16_to_f32(dn)) ||
			      (e == fabs((double)f - tern_f16_to_f32(dn)) && !(h & 1));
		if (!ok && bad++ < 3)
			printf("     f32 0x%08x -> f16 0x%04x not nearest-even\n", u, h);
	}
	check(bad == 0, "f32 -> f16 is nearest, ties to even, on 200000 random values (%d bad)", bad);

	static const struct {
		uint32_t f;
		uint16_t h;
		const char *what;
	} bf[] = {
		{0x3f800000u, 0x3f80, "1.0"},
		{0xc0000000u, 0xc000, "-2.0"},
		{0x3f808000u, 0x3f80, "0x3f808000 tie -> even 0x3f80"},
		{0x3f818000u, 0x3f82, "0x3f818000 tie -> even 0x3f82"},
		{0x3f808001u, 0x3f81, "just above a tie rounds up"},
		{0x7f7fffffu, 0x7f80, "FLT_MAX -> inf"},
		{0x7f7f7fffu, 0x7f7f, "below the overflow tie stays finite"},
		{0x00000001u, 0x0000, "smallest fp32 subnormal -> 0"},
		{0x3dcccccdu, 0x3dcd, "0.1"},
		{0x7fc00000u, 0x7fc0, "NaN"},
		{0x7f800001u, 0x7fc0, "signalling NaN with low payload -> quiet NaN"},
		{0xff800000u, 0xff80, "-inf"},
	};
	for (size_t i = 0; i < sizeof bf / sizeof bf[0]; i++) {
		uint16_t h = tern_f32_to_bf16(from_bits(bf[i].f));
		check(h == bf[i].h, "f32->bf16 %-52s 0x%08x -> 0x%04x (want 0x%04x)", bf[i].what, bf[i].f, h,
		      bf[i].h);
	}
	bad = 0;
	for (uint32_t h = 0; h < 65536; h++) {
		float f = tern_bf16_to_f32((uint16_t)h);
		bool is_nan = (h & 0x7f80u) == 0x7f80u && (h & 0x007fu);
		uint16_t back = tern_f32_to_bf16(f);
		bool ok = is_nan ? isnan(f) && (back & 0x0040u) : back == h && bits(f) == (uint32_t)h << 16;
		if (!ok && bad++ < 3)
			printf("     bf16 0x%04x -> %.9g -> 0x%04x\n", h, f, back);
	}
	check(bad == 0, "bf16 -> f32 -> bf16 round trip over all 65536 patterns (%d bad)", bad);
}

int main(void)
{
	test_tables();
	test_golden();
	test_ternary();
	test_half();
	printf("%d passed, %d failed\n", n_pass, n_fail);
	return n_fail ? 1 : 0;
}
