#version 450
// The mixture-of-experts router (backend.h, route_topk), one invocation per token:
//   prob[t, :] = softmax(logits[t, :]) (max subtracted, fp32), then k passes, each taking the
//   largest probability that ranks after the previous pick (descending; equal probabilities in
//   ascending expert order; a NaN ranks below everything, so ids stay distinct), sel and
//   w = prob[sel] (divided by their sum when norm).
//   bindings 0 = sel (i32), 1 = w, 2 = prob, 4 = logits
// -DCOUNT: counts[e] (=, or += when acc) = the entries of sel [T, k] equal to e; one invocation
//   per expert scanning sel in order (no atomics).   bindings 0 = sel, 3 = counts (i32)
// -DBWD: dlogits[t, e] (=) = prob[t, e] · (Σ_{j: sel_j = e} dv_j − Σ_j dv_j v_j), v_j =
//   prob[t, sel_j], dv_j = norm ? (dw_j − Σ_i dw_i v_i / S) / S : dw_j, S = Σ_j v_j; a sel outside
//   [0, E) is skipped.   bindings 0 = sel, 1 = dw, 2 = prob, 5 = dlogits
layout(local_size_x = 64) in;

layout(push_constant) uniform Push {
	uint T, E, k, norm, acc;
	uint s_off, w_off, p_off, c_off, l_off, d_off;
} p;

layout(binding = 0) buffer S { int sel[]; };
layout(binding = 1) buffer W { float w[]; };
layout(binding = 2) buffer P { float prob[]; };
layout(binding = 3) buffer C { int counts[]; };
layout(binding = 4) readonly buffer L { float logits[]; };
layout(binding = 5) buffer D { float dl[]; };

// probabilities are >= 0: a NaN ranks below all of them as -1
float key(float v) { return isnan(v) ? -1.0 : v; }
// (a, ea) ranks after (b, eb): a smaller key, or an equal key and a larger id
bool after(float a, uint ea, float b, uint eb) { return a < b || (a == b && ea > eb); }

void main()
{
	uint stride = gl_NumWorkGroups.x * 64u;
#if defined(COUNT)
	uint n = p.T * p.k;
	for (uint e = gl_GlobalInvocationID.x; e < p.E; e += stride) {
		int c = 0;
		for (uint i = 0u; i < n; i++)
			c += sel[p.s_off + i] == int(e) ? 1 : 0;
		counts[p.c_off + e] = p.acc != 0u ? counts[p.c_off + e] + c : c;
	}
#elif defined(BWD)
	for (uint t = gl_GlobalInvocationID.x; t < p.T; t += stride) {
		uint sb = p.s_off + t * p.k, gb = p.w_off + t * p.k, pb = p.p_off + t * p.E, db = p.d_off + t * p.E;
		float S = 0.0, gv = 0.0;
		for (uint j = 0u; j < p.k; j++) {
			int e = sel[sb + j];
			if (e < 0 || uint(e) >= p.E)
				continue;
			float v = prob[pb + uint(e)];
			S += v;
			gv += w[gb + j] * v;
		}
		float dvv = 0.0;
		for (uint j = 0u; j < p.k; j++) {
			int e = sel[sb + j];
			if (e < 0 || uint(e) >= p.E)
				continue;
			float dv = p.norm != 0u ? (w[gb + j] - gv / S) / S : w[gb + j];
			dvv += dv * prob[pb + uint(e)];
		}
		for (uint e = 0u; e < p.E; e++) {
			float dpe = 0.0;
			for (uint j = 0u; j < p.k; j++)
				if (sel[sb + j] == int(e))
					dpe += p.norm != 0u ? (w[gb + j] - gv / S) / S : w[gb + j];
			dl[db + e] = prob[pb + e] * (dpe - dvv);
		}
	}
#else
	for (uint t = gl_GlobalInvocationID.x; t < p.T; t += stride) {
		uint lb = p.l_off + t * p.E, pb = p.p_off + t * p.E, sb = p.s_off + t * p.k, wb = p.w_off + t * p.k;
		float m = uintBitsToFloat(0xff800000u);
		for (uint e = 0u; e < p.E; e++)
			m = max(m, logits[lb + e]);
		float s = 0.0;
		for (uint e = 0u; e < p.E; e++)
			s += exp(logits[lb + e] - m);
		for (uint e = 0u; e < p.E; e++)
			prob[pb + e] = exp(logits[lb + e] - m) / s;
		float prev = uintBitsToFloat(0x7f800000u);
		uint pe = 0u;
		bool have = false;
		float vs = 0.0;
		for (uint j = 0u; j < p.k; j++) {
			uint best = 0u;
			bool found = false;
			float bk = 0.0;
			for (uint e = 0u; e < p.E; e++) {
				float q = key(prob[pb + e]);
				if (have && !after(q, e, prev, pe))
					continue; // taken already (or ranks before the previous pick)
				if (!found || after(bk, best, q, e)) {
					best = e;
					bk = q;
					found = true;
				}
			}
			sel[sb + j] = int(best);
			float v = prob[pb + best];
			w[wb + j] = v;
			vs += v;
			prev = bk;
			pe = best;
			have = true;
		}
		if (p.norm != 0u)
			for (uint j = 0u; j < p.k; j++)
				w[wb + j] = w[wb + j] / vs;
	}
#endif
}
