/* The fast backend's vector kernels, AVX2/FMA where the CPU has it (chosen once at run time,
 * __builtin_cpu_supports), plain C elsewhere. Each kernel's plain and vector forms compute the
 * same function to fp32 rounding; which one runs depends on the machine only, never on the data
 * or the thread count. */
#include "backend/cpufast/cpufast.h"
#include "quant/quant.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define FAST_X86 1
#include <cpuid.h>
#include <immintrin.h>
#endif

/* ---- plain C ------------------------------------------------------------------------------ */

static float exp_sub_plain(float *x, int64_t n, float m)
{
	double s = 0.0;
	for (int64_t i = 0; i < n; i++) {
		x[i] = expf(x[i] - m);
		s += (double)x[i];
	}
	return (float)s;
}

static double ce_row_plain(float *z, int64_t n, float *mo)
{
	float m = z[0];
	for (int64_t i = 1; i < n; i++)
		m = z[i] > m ? z[i] : m;
	double s = 0.0;
	for (int64_t i = 0; i < n; i++) {
		z[i] = expf(z[i] - m);
		s += (double)z[i];
	}
	*mo = m;
	return s;
}

static void scale_plain(float *x, int64_t n, float r)
{
	for (int64_t i = 0; i < n; i++)
		x[i] *= r;
}

static float dot_plain(const float *a, const float *b, int64_t n)
{
	float s = 0.0f;
	for (int64_t i = 0; i < n; i++)
		s += a[i] * b[i];
	return s;
}

static void silu_mul_plain(float *h, const float *g, const float *u, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static void silu_bwd_plain(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n)
{
	for (int64_t i = 0; i < n; i++) { /* dg may be g, du dh (backend.h): read all, then write */
		float gi = g[i], hi = dh[i], ui = u[i];
		float sg = 1.0f / (1.0f + expf(-gi));
		float d = sg * (1.0f + gi * (1.0f - sg));
		dg[i] = hi * ui * d;
		du[i] = hi * (gi * sg);
	}
}

/* ---- AVX2 + FMA --------------------------------------------------------------------------- */

#ifdef FAST_X86
#define AVX2 __attribute__((target("avx2,fma")))

/* e^x for 8 lanes (Cephes' expf: x = n ln2 + r, a degree-6 polynomial in r, 2^n through the
 * exponent bits); about 1 ulp; lanes below -87 (the masked -inf included) give exactly 0. */
AVX2 static inline __m256 exp8(__m256 x)
{
	const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-87.0f);
	__m256 zero_mask = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
	x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
	__m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
	fx = _mm256_floor_ps(fx);
	x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
	x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
	__m256 y = _mm256_set1_ps(1.9875691500E-4f);
	y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
	y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
	y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
	y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
	y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
	y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
	__m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
	y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
	return _mm256_andnot_ps(zero_mask, y);
}

AVX2 static inline float hsum8(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

AVX2 static float exp_sub_avx2(float *x, int64_t n, float m)
{
	__m256 vm = _mm256_set1_ps(m), acc = _mm256_setzero_ps();
	int64_t i = 0;
	for (; i + 8 <= n; i += 8) {
		__m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
		_mm256_storeu_ps(x + i, e);
		acc = _mm256_add_ps(acc, e);
	}
	float s = hsum8(acc);
	if (i < n) { /* the tail through the same polynomial, lanes padded with -inf */
		float buf[8];
		for (int k = 0; k < 8; k++)
			buf[k] = i + k < n ? x[i + k] : -INFINITY;
		__m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(buf), vm));
		_mm256_storeu_ps(buf, e);
		for (int64_t k = 0; i + k < n; k++) {
			x[i + k] = buf[k];
			s += buf[k];
		}
	}
	return s;
}

/* The loss's row: m = max z; z = e^(z − m); the sum in double, 4 lanes for each half of a vector
 * (lane sums added in a fixed order). */
AVX2 static double ce_row_avx2(float *z, int64_t n, float *mo)
{
	int64_t i = 0;
	float m = z[0];
	if (n >= 8) {
		__m256 vm = _mm256_loadu_ps(z);
		for (i = 8; i + 8 <= n; i += 8)
			vm = _mm256_max_ps(vm, _mm256_loadu_ps(z + i));
		float b[8];
		_mm256_storeu_ps(b, vm);
		for (int k = 0; k < 8; k++)
			m = b[k] > m ? b[k] : m;
	}
	for (; i < n; i++)
		m = z[i] > m ? z[i] : m;
	__m256 vm = _mm256_set1_ps(m);
	__m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
	for (i = 0; i + 8 <= n; i += 8) {
		__m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(z + i), vm));
		_mm256_storeu_ps(z + i, e);
		lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
		hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
	}
	double l[4], h[4];
	_mm256_storeu_pd(l, lo);
	_mm256_storeu_pd(h, hi);
	double s = ((l[0] + l[1]) + (l[2] + l[3])) + ((h[0] + h[1]) + (h[2] + h[3]));
	if (i < n) { /* the tail through the same polynomial */
		float buf[8];
		for (int k = 0; k < 8; k++)
			buf[k] = i + k < n ? z[i + k] : -INFINITY;
		__m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(buf), vm));
		_mm256_storeu_ps(buf, e);
		for (int64_t k = 0; i + k < n; k++) {
			z[i + k] = buf[k];
			s += (double)buf[k];
		}
	}
	*mo = m;
	return s;
}

AVX2 static void scale_avx2(float *x, int64_t n, float r)
{
	__m256 vr = _mm256_set1_ps(r);
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		_mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vr));
	for (; i < n; i++)
		x[i] *= r;
}

AVX2 static float dot_avx2(const float *a, const float *b, int64_t n)
{
	__m256 acc = _mm256_setzero_ps();
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
	float s = hsum8(acc);
	for (; i < n; i++)
		s += a[i] * b[i];
	return s;
}

AVX2 static void silu_mul_avx2(float *h, const float *g, const float *u, int64_t n)
{
	const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
	int64_t i = 0;
	for (; i + 8 <= n; i += 8) {
		__m256 x = _mm256_loadu_ps(g + i);
		__m256 e = exp8(_mm256_sub_ps(zero, x));
		__m256 a = _mm256_div_ps(x, _mm256_add_ps(one, e));
		_mm256_storeu_ps(h + i, _mm256_mul_ps(a, _mm256_loadu_ps(u + i)));
	}
	if (i < n)
		silu_mul_plain(h + i, g + i, u + i, n - i);
}

AVX2 static void silu_bwd_avx2(float *dg, float *du, const float *dh, const float *g, const float *u,
			       int64_t n)
{
	const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
	int64_t i = 0;
	for (; i + 8 <= n; i += 8) {
		__m256 x = _mm256_loadu_ps(g + i), d_h = _mm256_loadu_ps(dh + i);
		__m256 sg = _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(zero, x))));
		__m256 d = _mm256_mul_ps(sg, _mm256_add_ps(one, _mm256_mul_ps(x, _mm256_sub_ps(one, sg))));
		_mm256_storeu_ps(dg + i, _mm256_mul_ps(_mm256_mul_ps(d_h, _mm256_loadu_ps(u + i)), d));
		_mm256_storeu_ps(du + i, _mm256_mul_ps(d_h, _mm256_mul_ps(x, sg)));
	}
	if (i < n)
		silu_bwd_plain(dg + i, du + i, dh + i, g + i, u + i, n - i);
}
#endif

/* ---- dispatch ----------------------------------------------------------------------------- */

static bool have_avx2(void)
{
#ifdef FAST_X86
	static int cached = -1;
	if (cached < 0) {
		__builtin_cpu_init();
		cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
	}
	return cached;
#else
	return false;
#endif
}

const char *tern_fast_simd_name(void) { return have_avx2() ? "AVX2/FMA" : "plain C"; }

float tern_fast_exp_sub(float *x, int64_t n, float m)
{
#ifdef FAST_X86
	if (have_avx2())
		return exp_sub_avx2(x, n, m);
#endif
	return exp_sub_plain(x, n, m);
}

double tern_fast_ce_row(float *z, int64_t n, float *m)
{
#ifdef FAST_X86
	if (have_avx2())
		return ce_row_avx2(z, n, m);
#endif
	return ce_row_plain(z, n, m);
}

void tern_fast_scale(float *x, int64_t n, float r)
{
#ifdef FAST_X86
	if (have_avx2()) {
		scale_avx2(x, n, r);
		return;
	}
#endif
	scale_plain(x, n, r);
}

float tern_fast_dot(const float *a, const float *b, int64_t n)
{
#ifdef FAST_X86
	if (have_avx2())
		return dot_avx2(a, b, n);
#endif
	return dot_plain(a, b, n);
}

void tern_fast_silu_mul(float *h, const float *g, const float *u, int64_t n)
{
#ifdef FAST_X86
	if (have_avx2()) {
		silu_mul_avx2(h, g, u, n);
		return;
	}
#endif
	silu_mul_plain(h, g, u, n);
}

void tern_fast_silu_bwd(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n)
{
#ifdef FAST_X86
	if (have_avx2()) {
		silu_bwd_avx2(dg, du, dh, g, u, n);
		return;
	}
#endif
	silu_bwd_plain(dg, du, dh, g, u, n);
}

/* ---- weight rows ---------------------------------------------------------------------------- */

#ifdef FAST_X86
__attribute__((target("avx2,f16c"))) static void f16_row_f16c(const uint16_t *h, int64_t n, float *out)
{
	int64_t j = 0;
	for (; j + 8 <= n; j += 8)
		_mm256_storeu_ps(out + j,
				 _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(h + j))));
	for (; j < n; j++)
		out[j] = tern_f16_to_f32(h[j]);
}

static bool have_f16c(void)
{
	static int cached = -1;
	if (cached < 0) {
		/* F16C from CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports has no "f16c" */
		unsigned a, b, c, d;
		__builtin_cpu_init();
		cached = __builtin_cpu_supports("avx2") && __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
	}
	return cached;
}
#endif

void tern_fast_weight_row(const struct cpu_weight *cw, int64_t o, int64_t i0, int64_t n, float *out)
{
	const struct tern_weight *w = cw->w;
	int64_t g0 = o * w->I + i0;
	switch (w->dtype) {
	case TERN_F32:
		memcpy(out, (const float *)(const void *)cw->data + g0, (size_t)n * sizeof(float));
		return;
	case TERN_BF16: {
		/* tern_bf16_to_f32 inline (the compiler vectorises it): the bits moved up, NaN quieted */
		const uint16_t *h = (const uint16_t *)(const void *)cw->data + g0;
		uint32_t *u = (uint32_t *)(void *)out;
		for (int64_t j = 0; j < n; j++) {
			uint32_t x = (uint32_t)h[j] << 16;
			u[j] = x | ((x & 0x7fffffffu) > 0x7f800000u ? 0x00400000u : 0u);
		}
		return;
	}
	case TERN_F16: {
		const uint16_t *h = (const uint16_t *)(const void *)cw->data + g0;
#ifdef FAST_X86
		if (have_f16c()) { /* vcvtph2ps: exact, NaN quieted as tern_f16_to_f32 does */
			f16_row_f16c(h, n, out);
			return;
		}
#endif
		for (int64_t j = 0; j < n; j++)
			out[j] = tern_f16_to_f32(h[j]);
		return;
	}
	case TERN_NF4:
	case TERN_NF4_DQ: {
		/* block by block: the 16 values code[q] · absmax of the block (the reference's product) */
		int64_t bs = w->blocksize, j = 0;
		while (j < n) {
			int64_t g = g0 + j, blk = g / bs, end = (blk + 1) * bs - g0;
			end = end < n ? end : n;
			float tab[16], am = cw->absmax[blk];
			for (int q = 0; q < 16; q++)
				tab[q] = tern_nf4_code[q] * am;
			for (; j < end; j++) {
				int64_t e = g0 + j;
				unsigned byte = cw->data[e >> 1];
				out[j] = tab[(e & 1) ? byte & 15u : byte >> 4];
			}
		}
		return;
	}
	case TERN_TERNARY: {
		const uint32_t *words =
			(const uint32_t *)(const void *)cw->data + o * tern_ternary_row_words(w->I);
		float tab[4];
		for (int q = 0; q < 4; q++)
			tab[q] = (float)(q - 1) * w->scale;
		for (int64_t j = 0; j < n; j++) {
			int64_t i = i0 + j;
			out[j] = tab[(words[i / 16] >> (2 * (i % 16))) & 3u];
		}
		return;
	}
	case TERN_DTYPE_COUNT: break;
	}
	tern_cpu_weight_row(cw, o, i0, n, out);
}
