// The host side of the CUDA emulation: a coroutine scheduler for the kernels (emu_device.h), and
// the parts of the CUDA runtime and of cuBLAS the backend calls, on host memory. Everything runs
// at once, in call order, on one OS thread: streams and events order nothing (what they must
// order is already in order), so the emulation checks the backend's logic, index math and
// argument mapping, never its asynchrony. Device allocations are recorded: every cuBLAS operand
// and every device pointer of the pointer mode is checked to lie inside one of them (a wrong
// leading dimension or offset shows up as "outside any device buffer").
#include "emu_device.h"

#include <cublas_v2.h>
#include <map>
#include <stdio.h>
#include <stdlib.h>
#include <ucontext.h>
#include <vector>

thread_local emu_thread *emu_cur;
uint3 emu_block_idx;
dim3 emu_block_dim, emu_grid_dim;
void *emu_dyn_smem;

namespace
{

struct fiber {
	ucontext_t ctx;
	emu_thread t;
	bool done;
};

ucontext_t sched_ctx;
std::vector<fiber> fibers;
std::vector<char *> stacks;
const size_t kStack = 256 << 10;
const std::function<void()> *body;
fiber *running;

// block barrier
unsigned bar_count, bar_gen;
// warp exchange: per warp, a slot per lane, a counter and a generation
struct warp_state {
	uint64_t slot[32];
	unsigned char buf[32][64]; // emu_warp_share
	unsigned count, gen;
};
std::vector<warp_state> warps;

bool yielded; // a thread of this block has switched (barrier or shuffle)
bool direct;  // the block's threads after the first run as plain calls (no fiber)

void fail(const char *msg);

void yield()
{
	if (direct)
		fail("a barrier or shuffle reached by some threads of a block only (the first finished "
		     "without one): divergent, undefined on a GPU");
	yielded = true;
	swapcontext(&running->ctx, &sched_ctx);
}

void trampoline()
{
	(*body)();
	running->done = true;
	swapcontext(&running->ctx, &sched_ctx);
}

void fail(const char *msg)
{
	fprintf(stderr, "cuda emulation: %s\n", msg);
	abort();
}

// live device allocations: start -> size
std::map<uintptr_t, size_t> allocs;

bool in_device(const void *p, size_t bytes)
{
	uintptr_t a = (uintptr_t)p;
	auto it = allocs.upper_bound(a);
	if (it == allocs.begin())
		return false;
	--it;
	return a >= it->first && a + bytes <= it->first + it->second;
}

} // namespace

void __syncthreads()
{
	unsigned n = emu_block_dim.x * emu_block_dim.y * emu_block_dim.z;
	unsigned gen = bar_gen;
	if (++bar_count == n) {
		bar_count = 0;
		bar_gen++;
		return;
	}
	while (bar_gen == gen)
		yield();
}

// Every lane of the warp reaches this; then returns (the warp's lanes' phase is over).
static void warp_phase(warp_state &w, unsigned lanes)
{
	unsigned gen = w.gen;
	if (++w.count == lanes) {
		w.count = 0;
		w.gen++;
	} else {
		while (w.gen == gen)
			yield();
	}
}

// The calling thread's warp, its index in the block, and how many lanes the warp has (the last
// warp of a block may be short).
static warp_state &my_warp(unsigned *lin, unsigned *lanes)
{
	*lin = threadIdx.x + threadIdx.y * emu_block_dim.x + threadIdx.z * emu_block_dim.x * emu_block_dim.y;
	unsigned nthreads = emu_block_dim.x * emu_block_dim.y * emu_block_dim.z;
	*lanes = nthreads - *lin / 32 * 32 < 32 ? nthreads - *lin / 32 * 32 : 32;
	return warps[*lin / 32];
}

void emu_warp_share(const void *mine, size_t n, void *all)
{
	if (n > sizeof warps[0].buf[0])
		fail("emu_warp_share: more than 64 bytes per lane");
	unsigned lin, lanes;
	warp_state &w = my_warp(&lin, &lanes);
	memcpy(w.buf[lin & 31], mine, n);
	warp_phase(w, lanes);
	for (unsigned l = 0; l < 32; l++)
		memcpy((char *)all + l * n, w.buf[l], n);
	warp_phase(w, lanes);
}

uint64_t emu_warp_exchange(uint64_t v, int src)
{
	unsigned lin, lanes;
	warp_state &w = my_warp(&lin, &lanes);
	w.slot[lin & 31] = v;
	warp_phase(w, lanes); // everyone has written
	uint64_t r = w.slot[src & 31];
	warp_phase(w, lanes); // everyone has read before the slots are written again
	return r;
}

void emu_launch(dim3 g, dim3 b, size_t smem, cudaStream_t s, const std::function<void()> &f)
{
	(void)s;
	unsigned n = b.x * b.y * b.z;
	if (n == 0 || n > 1024 || g.x == 0 || g.y == 0 || g.z == 0)
		fail("bad launch configuration");
	if (smem > 227 * 1024)
		fail("more dynamic shared memory than any device has");
	while (stacks.size() < n)
		stacks.push_back((char *)malloc(kStack));
	fibers.assign(n, fiber{});
	warps.assign((n + 31) / 32, warp_state{});
	std::vector<char> dyn(smem + 16);
	emu_grid_dim = g;
	emu_block_dim = b;
	body = &f;
	for (unsigned z = 0; z < g.z; z++)
		for (unsigned y = 0; y < g.y; y++)
			for (unsigned x = 0; x < g.x; x++) {
				emu_block_idx = uint3{x, y, z};
				memset(dyn.data(), 0xa5, dyn.size()); // shared memory starts as garbage
				emu_dyn_smem = dyn.data();
				bar_count = bar_gen = 0;
				for (auto &w : warps)
					w.count = w.gen = 0;
				auto make = [&](unsigned k) {
					fiber &fb = fibers[k];
					getcontext(&fb.ctx);
					fb.ctx.uc_stack.ss_sp = stacks[k];
					fb.ctx.uc_stack.ss_size = kStack;
					fb.ctx.uc_link = &sched_ctx;
					makecontext(&fb.ctx, trampoline, 0);
				};
				for (unsigned k = 0; k < n; k++) {
					fibers[k].done = false;
					fibers[k].t.tid = uint3{k % b.x, k / b.x % b.y, k / (b.x * b.y)};
				}
				make(0);
				/* the first thread alone: if it finishes without switching, the block has no
				 * barrier or shuffle, and the others run as plain calls (much faster) */
				yielded = direct = false;
				running = &fibers[0];
				emu_cur = &fibers[0].t;
				swapcontext(&sched_ctx, &fibers[0].ctx);
				if (fibers[0].done && !yielded) {
					direct = true;
					for (unsigned k = 1; k < n; k++) {
						running = &fibers[k];
						emu_cur = &fibers[k].t;
						f();
						fibers[k].done = true;
					}
					direct = false;
					continue;
				}
				for (unsigned k = 1; k < n; k++)
					make(k);
				for (unsigned left = n; left;) {
					left = 0;
					for (unsigned k = 0; k < n; k++) {
						if (fibers[k].done)
							continue;
						running = &fibers[k];
						emu_cur = &fibers[k].t;
						swapcontext(&sched_ctx, &fibers[k].ctx);
						left += !fibers[k].done;
					}
				}
			}
}

// ---- the CUDA runtime ----

extern "C" {

cudaError_t cudaGetDeviceCount(int *n)
{
	const char *none = getenv("TERN_CUDA_EMU_NO_DEVICE");
	*n = none && *none == '1' ? 0 : 1;
	return *n ? cudaSuccess : cudaErrorNoDevice;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int device)
{
	memset(p, 0, sizeof *p);
	snprintf(p->name, sizeof p->name, "CUDA emulation on the CPU");
	const char *cc = getenv("TERN_CUDA_EMU_CC"); // e.g. 75: a Turing-like device (no bf16)
	int v = cc ? atoi(cc) : 90;
	p->major = v / 10;
	p->minor = v % 10;
	p->totalGlobalMem = (size_t)8 << 30;
	p->sharedMemPerBlockOptin = 227 << 10;
	p->maxThreadsPerBlock = 1024;
	p->warpSize = 32;
	p->asyncEngineCount = 2;
	p->l2CacheSize = 50 << 20;
	p->multiProcessorCount = 1;
	return cudaSuccess;
}

cudaError_t cudaSetDevice(int) { return cudaSuccess; }
cudaError_t cudaDriverGetVersion(int *v)
{
	*v = 13000;
	return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int *v)
{
	*v = 13000;
	return cudaSuccess;
}
cudaError_t cudaGetLastError(void) { return cudaSuccess; }
cudaError_t cudaFuncSetAttribute(const void *, cudaFuncAttribute, int) { return cudaSuccess; }
const char *cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "emulated error"; }
const char *cudaGetErrorName(cudaError_t e) { return e == cudaSuccess ? "cudaSuccess" : "cudaErrorEmulated"; }

cudaError_t cudaMalloc(void **p, size_t size)
{
	*p = malloc(size ? size : 1);
	if (!*p)
		return cudaErrorMemoryAllocation;
	memset(*p, 0xcd, size); // device memory starts as garbage
	allocs[(uintptr_t)*p] = size;
	return cudaSuccess;
}

cudaError_t cudaFree(void *p)
{
	if (!p)
		return cudaSuccess;
	if (!allocs.erase((uintptr_t)p))
		fail("cudaFree of a pointer cudaMalloc did not return");
	free(p);
	return cudaSuccess;
}

cudaError_t cudaHostAlloc(void **p, size_t size, unsigned int)
{
	*p = malloc(size ? size : 1);
	return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFreeHost(void *p)
{
	free(p);
	return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total)
{
	size_t used = 0;
	for (auto &a : allocs)
		used += a.second;
	*total = (size_t)8 << 30;
	*free_b = *total > used ? *total - used : 0;
	return cudaSuccess;
}

cudaError_t cudaMemcpy(void *d, const void *s, size_t n, cudaMemcpyKind k)
{
	if ((k == cudaMemcpyHostToDevice || k == cudaMemcpyDeviceToDevice) && !in_device(d, n))
		fail("cudaMemcpy: dst outside any device buffer");
	if ((k == cudaMemcpyDeviceToHost || k == cudaMemcpyDeviceToDevice) && !in_device(s, n))
		fail("cudaMemcpy: src outside any device buffer");
	memmove(d, s, n);
	return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind k, cudaStream_t)
{
	return cudaMemcpy(d, s, n, k);
}
cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t)
{
	if (!in_device(d, n))
		fail("cudaMemsetAsync outside any device buffer");
	memset(d, v, n);
	return cudaSuccess;
}
cudaError_t cudaMemcpyToSymbol(const void *sym, const void *src, size_t n, size_t off, cudaMemcpyKind)
{
	memcpy((char *)sym + off, src, n);
	return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int)
{
	*s = (cudaStream_t)malloc(8);
	return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s)
{
	free((void *)s);
	return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t e, unsigned int)
{
	if (!e)
		fail("cudaStreamWaitEvent on a null event");
	return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t *e)
{
	*e = (cudaEvent_t)malloc(8);
	return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int) { return cudaEventCreate(e); }
cudaError_t cudaEventDestroy(cudaEvent_t e)
{
	free((void *)e);
	return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t)
{
	if (!e)
		fail("cudaEventRecord on a null event");
	return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t, cudaEvent_t)
{
	*ms = 0.001f;
	return cudaSuccess;
}

// ---- cuBLAS ----

struct cublasContext {
	cublasPointerMode_t mode;
};

cublasStatus_t cublasCreate_v2(cublasHandle_t *h)
{
	*h = new cublasContext{CUBLAS_POINTER_MODE_HOST};
	return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(cublasHandle_t h)
{
	delete h;
	return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream_v2(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t, void *ws, size_t n)
{
	if (!in_device(ws, n))
		fail("cublasSetWorkspace: not a device buffer");
	return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetPointerMode_v2(cublasHandle_t h, cublasPointerMode_t m)
{
	h->mode = m;
	return CUBLAS_STATUS_SUCCESS;
}
const char *cublasGetStatusString(cublasStatus_t s)
{
	return s == CUBLAS_STATUS_SUCCESS ? "success" : "error";
}

static float load(const void *p, cudaDataType t, int64_t i)
{
	if (t == CUDA_R_16F)
		return __half2float(((const __half *)p)[i]);
	if (t == CUDA_R_16BF)
		return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
	if (t != CUDA_R_32F)
		fail("cublasGemmEx: a type the backend should not use");
	return ((const float *)p)[i];
}

static size_t esize(cudaDataType t) { return t == CUDA_R_32F ? 4 : 2; }

// The column-major matrix (rows × cols, ld) p must lie inside one device buffer.
static void check_mat(const char *what, const void *p, int64_t rows, int64_t cols, int64_t ld, size_t es)
{
	if (rows <= 0 || cols <= 0)
		return;
	if (ld < rows) {
		fprintf(stderr, "cuda emulation: cublasGemmEx: %s ld %lld < rows %lld\n", what, (long long)ld,
			(long long)rows);
		abort();
	}
	size_t bytes = ((size_t)(cols - 1) * (size_t)ld + (size_t)rows) * es;
	if (!in_device(p, bytes)) {
		fprintf(stderr,
			"cuda emulation: cublasGemmEx: %s (%lld x %lld, ld %lld) outside any device buffer\n",
			what, (long long)rows, (long long)cols, (long long)ld);
		abort();
	}
}

static float round_bf16(float x)
{
	uint32_t u;
	memcpy(&u, &x, 4);
	if ((u & 0x7fffffffu) > 0x7f800000u)
		return x;
	u = ((u + 0x7fffu + ((u >> 16) & 1u)) >> 16) << 16;
	memcpy(&x, &u, 4);
	return x;
}

cublasStatus_t cublasGemmEx_64(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int64_t m,
			       int64_t n, int64_t k, const void *alpha, const void *A, cudaDataType at,
			       int64_t lda, const void *B, cudaDataType bt, int64_t ldb, const void *beta,
			       void *C, cudaDataType ct, int64_t ldc, cublasComputeType_t ctype,
			       cublasGemmAlgo_t)
{
	// CUBLAS_COMPUTE_32F_FAST_16BF (fp32 operands only): the operands rounded to bf16 (to
	// nearest even), products and sums in fp32
	bool fast16bf = ctype == CUBLAS_COMPUTE_32F_FAST_16BF && at == CUDA_R_32F;
	if (ct != CUDA_R_32F || (ctype != CUBLAS_COMPUTE_32F && !fast16bf) || at != bt)
		fail("cublasGemmEx: unexpected types");
	bool dev = h->mode == CUBLAS_POINTER_MODE_DEVICE;
	if (in_device(alpha, 4) != dev || in_device(beta, 4) != dev)
		fail("cublasGemmEx: alpha/beta pointers do not match the pointer mode");
	if (m == 0 || n == 0)
		return CUBLAS_STATUS_SUCCESS;
	check_mat("A", A, ta == CUBLAS_OP_N ? m : k, ta == CUBLAS_OP_N ? k : m, lda, esize(at));
	check_mat("B", B, tb == CUBLAS_OP_N ? k : n, tb == CUBLAS_OP_N ? n : k, ldb, esize(bt));
	check_mat("C", C, m, n, ldc, 4);
	float a = *(const float *)alpha, b = *(const float *)beta;
	float *c = (float *)C;
	// op(A) as rows i of k values, op(B) as columns j of k values, widened once
	std::vector<float> ra((size_t)(m * k)), cb((size_t)(n * k));
	for (int64_t i = 0; i < m; i++)
		for (int64_t l = 0; l < k; l++)
			ra[i * k + l] = load(A, at, ta == CUBLAS_OP_N ? i + l * lda : l + i * lda);
	for (int64_t j = 0; j < n; j++)
		for (int64_t l = 0; l < k; l++)
			cb[j * k + l] = load(B, bt, tb == CUBLAS_OP_N ? l + j * ldb : j + l * ldb);
	if (fast16bf) {
		for (float &x : ra)
			x = round_bf16(x);
		for (float &x : cb)
			x = round_bf16(x);
	}
	for (int64_t j = 0; j < n; j++)
		for (int64_t i = 0; i < m; i++) {
			const float *x = &ra[i * k], *y = &cb[j * k];
			float s = 0.0f; // fp32 accumulation, as the tensor cores
			for (int64_t l = 0; l < k; l++)
				s += x[l] * y[l];
			float r = a * s;
			if (b != 0.0f)
				r += b * c[i + j * ldc];
			c[i + j * ldc] = r;
		}
	return CUBLAS_STATUS_SUCCESS;
}

} // extern "C"
