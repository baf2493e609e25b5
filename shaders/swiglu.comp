#version 450
// The gated MLP activation, element-wise (grid-stride loop):
//   forward:  h = act(g) · u                                   bindings 0 = h, 3 = g, 4 = u
//   -DBWD:    dg = dh · u · act'(g), du = dh · act(g)   (=)    bindings 0 = dg, 1 = du, 2 = dh,
//                                                                       3 = g, 4 = u
//   -DACT_SILU: act = g / (1 + e^−g), act' = σ(1 + g(1 − σ));  -DACT_RELU2: relu(g)², 2 relu(g)
layout(local_size_x = 256) in;

layout(push_constant) uniform Push {
	uint n;
	uint o0_off, o1_off, a_off, g_off, u_off;
} p;

#ifdef BWD
layout(binding = 0) buffer DG { float dg[]; };
layout(binding = 1) buffer DU { float du[]; };
layout(binding = 2) readonly buffer DH { float dh[]; };
#else
layout(binding = 0) buffer H { float h[]; };
#endif
layout(binding = 3) readonly buffer G { float g[]; };
layout(binding = 4) readonly buffer U { float u[]; };

float act(float v)
{
#ifdef ACT_RELU2
	float r = max(v, 0.0);
	precise float q = r * r;
	return q;
#else
	precise float d = 1.0 + exp(-v);
	precise float q = v / d;
	return q;
#endif
}

void main()
{
	uint stride = gl_NumWorkGroups.x * 256u;
	for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride) {
		float gv = g[p.g_off + i], uv = u[p.u_off + i];
#ifdef BWD
		float d = dh[p.a_off + i];
#ifdef ACT_RELU2
		precise float ad = 2.0 * max(gv, 0.0);
#else
		precise float sg = 1.0 / (1.0 + exp(-gv));
		precise float ad = sg * (1.0 + gv * (1.0 - sg));
#endif
		precise float a = d * uv * ad;
		precise float b = d * act(gv);
		dg[p.o0_off + i] = a;
		du[p.o1_off + i] = b;
#else
		precise float y = act(gv) * uv;
		h[p.o0_off + i] = y;
#endif
	}
}
