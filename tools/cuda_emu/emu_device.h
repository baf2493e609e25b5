// The device side of the CUDA emulation (tools/cuda_emu/README.md): what a k_*.cu kernel file needs
// to compile as host C++ and run on the CPU. Blocks run one after another; the threads of a block
// run as coroutines (ucontext) that switch at __syncthreads and at warp shuffles, so barriers and
// shuffles have their CUDA meaning for code where every thread (lane) reaches them.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <functional>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <tuple>
#include <type_traits>

// the CUDA headers above define these as attributes; on the host they mean nothing
#undef __global__
#undef __device__
#undef __constant__
#undef __shared__
#define __global__
#define __device__
#define __constant__
#define __shared__ static
#undef __launch_bounds__
#define __launch_bounds__(...)

struct emu_thread {
	uint3 tid;
};
extern thread_local emu_thread *emu_cur;
extern uint3 emu_block_idx;
extern dim3 emu_block_dim, emu_grid_dim;
extern void *emu_dyn_smem;

#define threadIdx (emu_cur->tid)
#define blockIdx emu_block_idx
#define blockDim emu_block_dim
#define gridDim emu_grid_dim

// Runs f for every thread of the grid, or, while s is capturing a graph, records it to run when
// the graph is launched.
void emu_launch(dim3 g, dim3 b, size_t smem, cudaStream_t s, const std::function<void()> &f);
// The kernel k with its arguments converted to its parameter types now, as a launch copies them.
// The kernel of the launch being made (emu_bind sets it, emu_launch records it with the graph
// node: cudaGraphKernelNodeGetParams's func).
extern const void *emu_bound_kernel;
template <typename... P, typename... A> std::function<void()> emu_bind(void (*k)(P...), A &&...a)
{
	emu_bound_kernel = (const void *)k;
	return [k, t = std::tuple<std::decay_t<P>...>(std::forward<A>(a)...)]() { std::apply(k, t); };
}
void __syncthreads();
// lane exchange: every lane of the warp puts v, then takes lane src's value
uint64_t emu_warp_exchange(uint64_t v, int src);
// one round for a whole warp: every lane puts n bytes (n <= 64) at mine, then takes all 32 lanes'
// (lane l's at all + l·n)
void emu_warp_share(const void *mine, size_t n, void *all);

// a warp barrier: every lane of the warp reaches it before any goes on (an exchange of nothing)
inline void __syncwarp(unsigned mask = 0xffffffffu)
{
	(void)mask;
	emu_warp_exchange(0, (int)((threadIdx.x + threadIdx.y * blockDim.x) & 31));
}

template <typename T> T __shfl_xor_sync(unsigned mask, T v, int o)
{
	(void)mask;
	uint64_t u = 0;
	memcpy(&u, &v, sizeof v);
	int lane = (int)((threadIdx.x + threadIdx.y * blockDim.x) & 31);
	u = emu_warp_exchange(u, lane ^ o);
	T r;
	memcpy(&r, &u, sizeof r);
	return r;
}

inline unsigned __float_as_uint(float f)
{
	unsigned u;
	memcpy(&u, &f, 4);
	return u;
}
inline float __int_as_float(int i)
{
	float f;
	memcpy(&f, &i, 4);
	return f;
}
inline int atomicAdd(int *p, int v)
{
	int old = *p;
	*p = old + v;
	return old;
}
inline unsigned atomicAdd(unsigned *p, unsigned v)
{
	unsigned old = *p;
	*p = old + v;
	return old;
}
// blocks run one after another: every write is seen by the blocks after it
inline void __threadfence() {}
template <typename T> T __ldcg(const T *p) { return *p; }
inline unsigned atomicMax(unsigned *p, unsigned v)
{
	unsigned old = *p;
	if (v > old)
		*p = v;
	return old;
}
