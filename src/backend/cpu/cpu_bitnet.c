/* The CPU reference of BitNet b1.58's per-token 8-bit activation fake-quantization (backend.h,
 * act_quant8), as transformers' ActQuant computes it in fp32: s = 127 / max(absmax, 1e-5),
 * y = clamp(rint(x · s), -128, 127) / s. The max is exact; each product and quotient is one fp32
 * operation, as in torch; rows run in parallel. */
#include "backend/cpu/cpu.h"

#include <math.h>

enum tern_status tern_cpu_act_quant8(struct tern_backend *be, struct tern_view y, struct tern_view x,
				     int64_t T, int64_t I)
{
	(void)be;
	const char *op = "act_quant8";
	enum tern_status st;
	void *yv, *xv;
	long long lT = (long long)T, lI = (long long)I;
	if ((st = tern_cpu_view(op, "y", y, (size_t)(T * I) * 4, 4, &yv, "T=%lld I=%lld f32", lT, lI)) ||
	    (st = tern_cpu_view(op, "x", x, (size_t)(T * I) * 4, 4, &xv, "T=%lld I=%lld f32", lT, lI)))
		return st;
	float *yp = yv;
	const float *xp = xv;
	CPU_PARALLEL_FOR
	for (int64_t t = 0; t < T; t++) {
		const float *xt = xp + t * I;
		float *yt = yp + t * I;
		float m = 0.0f;
		for (int64_t i = 0; i < I; i++) {
			float a = fabsf(xt[i]);
			if (a > m)
				m = a;
		}
		float s = 127.0f / (m > 1e-5f ? m : 1e-5f);
		for (int64_t i = 0; i < I; i++) {
			float q = nearbyintf(xt[i] * s);
			q = q < -128.0f ? -128.0f : q > 127.0f ? 127.0f : q;
			yt[i] = q / s;
		}
	}
	return TERN_OK;
}
