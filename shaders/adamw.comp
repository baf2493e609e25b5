#version 450
// One AdamW step, PyTorch's single-tensor fp32 semantics (see tern_adamw_consts()):
//   p *= decay; m += w1 * (g - m); v = v * b2 + (1 - b2) * g * g;
//   p += (-step_size * m) / (sqrt(v) / bc2_sqrt + eps)   (ATen's addcdiv order)
// Bindings: 0 = param, 1 = grad, 2 = m, 3 = v. Every product is rounded on its own (precise),
// as the CPU reference does.
layout(local_size_x = 256) in;

layout(push_constant) uniform Push {
	uint n;
	uint p_off, g_off, m_off, v_off;
	float decay, one_minus_b1, b2, one_minus_b2, step_size, bc2_sqrt, eps;
	uint use_decay;
} p;

layout(binding = 0) buffer P { float prm[]; };
layout(binding = 1) readonly buffer G { float grad[]; };
layout(binding = 2) buffer M { float mom[]; };
layout(binding = 3) buffer V { float vel[]; };

void main()
{
	uint stride = gl_NumWorkGroups.x * 256u;
	for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride) {
		precise float w = prm[p.p_off + i];
		float g = grad[p.g_off + i];
		if (p.use_decay != 0u)
			w = w * p.decay;
		precise float m = mom[p.m_off + i];
		m = m + p.one_minus_b1 * (g - m);
		precise float v = vel[p.v_off + i];
		v = v * p.b2;
		precise float gg = p.one_minus_b2 * g;
		v = v + gg * g;
		precise float denom = sqrt(v) / p.bc2_sqrt + p.eps;
		precise float num = (-p.step_size) * m;
		w = w + num / denom;
		prm[p.p_off + i] = w;
		mom[p.m_off + i] = m;
		vel[p.v_off + i] = v;
	}
}
