// The grouped matmul of the experts on CUDA (backend.h matmul_grouped / matmul_grouped_bwd), fp32:
// a tiled SIMT product over a weight already decoded to fp32 (cu_moe.c decodes it in row steps, or
// uses an f32 weight in place). The expert offsets stay on the device: block (x, y, z) takes
// output tile x and token tile y of expert e0 + z, reads off[e], off[e+1] and returns at once when
// its tile lies past the expert's rows, so no host read and no synchronisation is needed.
//
// A tile is 32 tokens × 64 outputs, the reduction in steps of 16 through shared memory; thread
// (tx, ty) of 16 × 16 holds tokens 2ty, 2ty+1 and outputs tx + 16j (j < 4). Each output is one
// fp32 sum in reduction order (plus the step before it where W is decoded in row steps).
//
// Deliberately simple (fp32 CUDA cores): the first version. The fast path for large expert
// batches would decode to bf16/f16 and multiply on the tensor cores (a grouped MMA kernel reading
// the offsets on the device, or cuBLAS per expert after reading them on the host).
#include "backend/cuda/cu_kernels_more.h"

namespace
{

constexpr int GT = 32, GN = 64, GK = 16, kThreads = 256;

template <bool BWD>
__global__ void grouped_kernel(float *out, const float *a, const float *w, const int32_t *off, int64_t T,
			       int64_t O, int64_t I, int64_t g0, int64_t gn, int64_t e0, bool accumulate)
{
	__shared__ float as[GK][GT + 1];
	__shared__ float ws[GK][GN + 1];
	int64_t e = e0 + blockIdx.z;
	int64_t lo = off[e], hi = off[e + 1];
	lo = lo < 0 ? 0 : lo > T ? T : lo;
	hi = hi < lo ? lo : hi > T ? T : hi;
	// the rows o of expert e inside this step of W
	int64_t olo = g0 - e * O > 0 ? g0 - e * O : 0;
	int64_t ohi = g0 + gn - e * O < O ? g0 + gn - e * O : O;
	int64_t n0 = (BWD ? 0 : olo) + (int64_t)blockIdx.x * GN; // the tile's first output
	int64_t nend = BWD ? I : ohi;
	if (olo >= ohi || n0 >= nend) // the same for every thread of the block
		return;
	int64_t lda = BWD ? O : I, ldo = BWD ? I : O;
	int64_t k0 = BWD ? olo : 0, kend = BWD ? ohi : I; // the reduction's range
	bool add = BWD && (accumulate || olo > 0);
	int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
	int64_t wr = e * O - g0; // row o of expert e is row wr + o of the step
	for (int64_t t0 = lo + (int64_t)blockIdx.y * GT; t0 < hi; t0 += (int64_t)gridDim.y * GT) {
		float acc[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
		for (int64_t kb = k0; kb < kend; kb += GK) {
			for (int u = tid; u < GK * GT; u += kThreads) { // a: along the reduction
				int kk = u % GK, tt = u / GK;
				int64_t t = t0 + tt, kx = kb + kk;
				as[kk][tt] = t < hi && kx < kend ? a[t * lda + kx] : 0.0f;
			}
			for (int u = tid; u < GK * GN; u += kThreads) { // W: along its rows' storage
				int kk = BWD ? u / GN : u % GK, nn = BWD ? u % GN : u / GK;
				int64_t n = n0 + nn, kx = kb + kk;
				float v = 0.0f;
				if (n < nend && kx < kend)
					v = BWD ? w[(wr + kx) * I + n] : w[(wr + n) * I + kx];
				ws[kk][nn] = v;
			}
			__syncthreads();
			for (int kk = 0; kk < GK; kk++) {
				float a0 = as[kk][2 * ty], a1 = as[kk][2 * ty + 1];
				for (int j = 0; j < 4; j++) {
					float b = ws[kk][tx + 16 * j];
					acc[0][j] += a0 * b;
					acc[1][j] += a1 * b;
				}
			}
			__syncthreads();
		}
		for (int i = 0; i < 2; i++) {
			int64_t t = t0 + 2 * ty + i;
			if (t >= hi)
				continue;
			for (int j = 0; j < 4; j++) {
				int64_t n = n0 + tx + 16 * j;
				if (n >= nend)
					continue;
				float *dst = out + t * ldo + n;
				*dst = add ? *dst + acc[i][j] : acc[i][j];
			}
		}
	}
}

} // namespace

extern "C" cudaError_t cuk_grouped(cudaStream_t s, bool bwd, float *out, const float *a, const float *wrows,
				   const int32_t *off, int64_t T, int64_t O, int64_t I, int64_t g0,
				   int64_t gn, bool accumulate)
{
	if (T <= 0 || gn <= 0)
		return cudaSuccess;
	int64_t e_first = g0 / O, e_last = (g0 + gn - 1) / O;
	int64_t span = gn < O ? gn : O; // the most rows of one expert inside the step
	int64_t gx = ((bwd ? I : span) + GN - 1) / GN, gy = (T + GT - 1) / GT;
	dim3 block(kThreads);
	for (int64_t e0 = e_first; e0 <= e_last; e0 += 65535) {
		int64_t ez = e_last - e0 + 1 < 65535 ? e_last - e0 + 1 : 65535;
		dim3 grid((unsigned)gx, (unsigned)(gy > 65535 ? 65535 : gy), (unsigned)ez);
		if (bwd)
			grouped_kernel<true>
				<<<grid, block, 0, s>>>(out, a, wrows, off, T, O, I, g0, gn, e0, accumulate);
		else
			grouped_kernel<false>
				<<<grid, block, 0, s>>>(out, a, wrows, off, T, O, I, g0, gn, e0, accumulate);
	}
	return cudaGetLastError();
}
