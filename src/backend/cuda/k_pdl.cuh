// Programmatic dependent launch (Hopper and later; k_gemv.cu, k_elem.cu, k_kv.cu, k_sample.cu).
// Included by .cu files only (after emu_device.h in the CUDA emulation).
//
// A kernel started by pdl_launch may begin while the kernel before it on the stream is still
// running: as soon as every block of that one has called pdl_trigger (or ended). Its blocks are
// then resident early and can load what no kernel writes (weights, their block scales) while the
// kernel before finishes; the launch latency and the first loads' latency leave the critical path
// of a decode step, where about 420 kernels of a few microseconds each run per token.
//
// The rule for a kernel started by pdl_launch: before pdl_wait it reads only memory that no kernel
// writes while the stream runs (a weight, its scales, constant tables) and writes nothing global;
// pdl_wait returns once the grid before it has ended and its writes are visible. Each such kernel
// calls pdl_trigger right after its pdl_wait, so the next one starts no earlier than this one's
// real work (one kernel ahead, never a chain of waiting grids) and, because this one's blocks have
// all passed pdl_wait by then, the kernel before has ended too: a pdl_wait orders after every
// earlier kernel on the stream, not only the one before. A kernel launched plainly (cuBLAS, every
// other kernel) still waits for the end of the one before it, so mixing both is safe.
//
// On by default on compute capability 9.0 and later (cuk_set_pdl at create; TERN_CUDA_PDL=0 turns
// it off for before/after timings). Older cards, the emulation and a build for them run plain
// launches, and pdl_wait / pdl_trigger compile to nothing there.
#ifndef TERN_K_PDL_CUH
#define TERN_K_PDL_CUH

#include <utility>

extern int cuk_pdl_flag; // k_gemv.cu: 1 when launches may be programmatic (cuk_set_pdl)

namespace
{

__device__ inline void pdl_wait()
{
#if !defined(TERN_CUDA_EMU) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
	asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ inline void pdl_trigger()
{
#if !defined(TERN_CUDA_EMU) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
	asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

// k<<<g, b, smem, s>>>(a...), with programmatic stream serialization where cuk_pdl_flag allows it.
template <typename... P, typename... A>
inline cudaError_t pdl_launch(void (*k)(P...), dim3 g, dim3 b, size_t smem, cudaStream_t s, A &&...a)
{
#if defined(TERN_CUDA_EMU)
	emu_launch(g, b, smem, s, emu_bind(k, std::forward<A>(a)...));
	return cudaGetLastError();
#else
	cudaLaunchConfig_t cfg = {};
	cfg.gridDim = g;
	cfg.blockDim = b;
	cfg.dynamicSmemBytes = smem;
	cfg.stream = s;
	cudaLaunchAttribute at[1];
	at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
	at[0].val.programmaticStreamSerializationAllowed = 1;
	cfg.attrs = at;
	cfg.numAttrs = cuk_pdl_flag ? 1 : 0;
	return cudaLaunchKernelEx(&cfg, k, std::forward<A>(a)...);
#endif
}

} // namespace

#endif
