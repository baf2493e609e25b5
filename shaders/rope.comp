#version 450
// HF rotate_half RoPE, in place on x [T, H, Dh]; one invocation per (t, h, i < Dh/2) pair.
//   θ = float(pos[t]) · inv_freq[i] (one fp32 product, as HF), c = cos θ, s = ±sin θ
//   y_i = x_i c − x_{i+h} s,  y_{i+h} = x_{i+h} c + x_i s   (inverse: s negated)
// bindings 0 = x, 1 = pos (i32), 2 = inv_freq
// sin/cos are evaluated after an explicit reduction of θ modulo 2π (Cody–Waite, four parts,
// exact for |θ| < 2^16 · 2π): the built-ins are only specified on [-π, π].
layout(local_size_x = 256) in;

layout(push_constant) uniform Push {
	uint T, H, half_, x_off, pos_off, f_off;
	uint inverse;
} p;

layout(binding = 0) buffer X { float x[]; };
layout(binding = 1) readonly buffer P { int pos[]; };
layout(binding = 2) readonly buffer F { float f[]; };

// 2π = C1 + C2 + C3 + C4; C1..C3 have 8 significant bits, so k · Ci is exact for |k| < 2^16
const float C1 = 6.28125;
const float C2 = 0.00193023681640625;
const float C3 = 5.066394805908203e-06;
const float C4 = 3.968374318722162e-09;
const float INV_2PI = 0.15915494309189535;

void main()
{
	uint n = p.T * p.H * p.half_;
	uint stride = gl_NumWorkGroups.x * 256u;
	for (uint e = gl_GlobalInvocationID.x; e < n; e += stride) {
		uint i = e % p.half_;
		uint th_ = e / p.half_; // t * H + h
		uint t = th_ / p.H;
		precise float th = float(pos[p.pos_off + t]) * f[p.f_off + i];
		precise float k = roundEven(th * INV_2PI);
		precise float r = th - k * C1;
		r = r - k * C2;
		r = r - k * C3;
		r = r - k * C4;
		float c = cos(r), s = sin(r);
		if (p.inverse != 0u)
			s = -s;
		uint b = p.x_off + th_ * 2u * p.half_ + i;
		float x0 = x[b], x1 = x[b + p.half_];
		precise float y0 = x0 * c - x1 * s;
		precise float y1 = x1 * c + x0 * s;
		x[b] = y0;
		x[b + p.half_] = y1;
	}
}
