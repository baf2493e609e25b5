// The host side of the CUDA emulation: a coroutine scheduler for the kernels (emu_device.h), and
// the parts of the CUDA runtime and of cuBLAS the backend calls, on host memory. Everything runs
// at once, in call order, on one OS thread: streams and events order nothing (what they must
// order is already in order), so the emulation checks the backend's logic, index math and
// argument mapping, never its asynchrony. Device allocations are recorded: every cuBLAS operand
// and every device pointer of the pointer mode is checked to lie inside one of them (a wrong
// leading dimension or offset shows up as "outside any device buffer").
//
// Stream capture (CUDA graphs): while a stream captures, its launches, GEMMs, memsets and
// device-to-device copies are recorded as closures (the arguments' values of the call, as the
// driver copies a launch's parameters) instead of run; cudaStreamEndCapture yields a graph,
// cudaGraphInstantiate an executable copy, cudaGraphExecUpdate replaces its closures when the
// topology (node count and kinds) matches, cudaGraphLaunch runs them in order. What a driver
// refuses during a capture of this thread (cudaMalloc, cudaFree, host allocations, synchronous
// copies, any synchronization, cudaMemGetInfo, waiting on an event recorded outside the capture,
// a pageable host copy) returns its error here too and invalidates the capture, so a backend
// that misses a flush fails in the emulation as on a GPU.
//
// A fork, as the driver models it: a stream that is not capturing and waits on an event recorded
// inside a capture joins that capture; its later launches, GEMMs, memsets, copies and event
// records go into the same capture, in issue order (a valid order of the graph, since the
// emulation runs everything in issue order anyway). Ending the capture (only on the stream that
// began it) fails with cudaErrorStreamCaptureUnjoined when a forked stream's last work is not
// something the origin stream has waited on, directly or through other streams' events (a
// vector clock per stream: how much of each stream's captured work its next work depends on).
// Joining two separate captures fails with cudaErrorStreamCaptureMerge.
#include "emu_device.h"

#include <cublas_v2.h>
#include <algorithm>
#include <map>
#include <stdio.h>
#include <stdlib.h>
#include <ucontext.h>
#include <vector>

const void *emu_bound_kernel;

// ---- the handles (incomplete types in the CUDA headers) ----

struct emu_node {
	int kind; // 0 kernel (launches and cuBLAS GEMMs), 1 memset, 2 memcpy
	std::function<void()> run;
	// what cudaGraphKernelNodeGetParams / cudaGraphMemsetNodeGetParams report: the kernel (a
	// cuBLAS GEMM: the address of gemm_run, and m, n, k as its grid, as cuBLAS's kernels and grids
	// follow the shape), its grid, block and dynamic shared memory; a memset's byte count
	const void *func;
	dim3 g, b;
	size_t smem;
};
// A node handle (cudaGraphNode_t, an incomplete type) is a pointer to the graph's emu_node.
static const emu_node *node_of(cudaGraphNode_t n) { return reinterpret_cast<const emu_node *>(n); }
// how much of each capturing stream's work (nodes it issued into the capture) a point depends on
typedef std::map<const CUstream_st *, uint64_t> emu_clock;
struct CUstream_st {
	bool capturing; // began a capture, or joined one through a fork
	bool invalid;   // (the origin's) the capture was invalidated
	// the origin: the capture's nodes in issue order (every stream's of the capture); the
	// streams forked into it; the capture's serial (events name their capture by it)
	std::vector<emu_node> nodes;
	std::vector<CUstream_st *> forked;
	uint64_t serial;
	CUstream_st *origin; // while capturing: the stream that began the capture (may be this one)
	uint64_t work;       // nodes this stream issued into the capture
	emu_clock seen;      // what this stream's next work depends on (other streams' work counts)
};
struct CUevent_st {
	bool captured;   // last recorded inside a capture
	uint64_t serial; // that capture's
	emu_clock seen;  // what a wait on it depends on
};
struct CUgraph_st {
	std::vector<emu_node> nodes;
};
struct CUgraphExec_st {
	std::vector<emu_node> nodes;
};

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

// live pinned host allocations (cudaHostAlloc): start -> size
std::map<uintptr_t, size_t> pinned;

bool in_map(const std::map<uintptr_t, size_t> &m, const void *p, size_t bytes)
{
	uintptr_t a = (uintptr_t)p;
	auto it = m.upper_bound(a);
	if (it == m.begin())
		return false;
	--it;
	return a >= it->first && a + bytes <= it->first + it->second;
}

bool in_device(const void *p, size_t bytes) { return in_map(allocs, p, bytes); }

// the streams of this (the only) thread that began a capture still open (origins)
std::vector<CUstream_st *> captures;
uint64_t capture_serial;

// The origin of the capture s takes part in (nullptr: s does not capture).
CUstream_st *cap_of(cudaStream_t s) { return s && s->capturing ? s->origin : nullptr; }

// The open capture of serial n, or nullptr (ended).
CUstream_st *capture_of(uint64_t n)
{
	for (CUstream_st *o : captures)
		if (o->serial == n)
			return o;
	return nullptr;
}
// launches cannot return an error: the one of a launch into an invalidated capture waits here
// for cudaGetLastError
thread_local cudaError_t last_error = cudaSuccess;

// TERN_CUDA_EMU_REPORT=1: at exit, a digest of every byte copied to the host (downloads, in
// order) and what the graphs did, so that two runs (TERN_CUDA_GRAPHS=0 and 1) can be compared
// bit for bit
struct report {
	uint64_t hash = 1469598103934665603ull, bytes = 0, copies = 0;
	uint64_t captures = 0, graph_launches = 0, nodes_run = 0, updates = 0, instantiated = 0;
	bool on = false;
	report()
	{
		const char *e = getenv("TERN_CUDA_EMU_REPORT");
		on = e && *e == '1';
	}
	~report()
	{
		if (on)
			fprintf(stderr,
				"cuda emulation: %llu copies to the host, %llu bytes, digest %016llx; graphs: "
				"%llu captures, %llu launches (%llu nodes), %llu updates, %llu instantiated\n",
				(unsigned long long)copies, (unsigned long long)bytes,
				(unsigned long long)hash, (unsigned long long)captures,
				(unsigned long long)graph_launches, (unsigned long long)nodes_run,
				(unsigned long long)updates, (unsigned long long)instantiated);
	}
	void host_copy(const void *p, size_t n)
	{
		const unsigned char *b = (const unsigned char *)p;
		for (size_t i = 0; i < n; i++)
			hash = (hash ^ b[i]) * 1099511628211ull;
		bytes += n;
		copies++;
	}
} rep;

// A call the driver refuses while this thread captures (thread-local mode: "potentially unsafe"
// API calls): true, and the capture is invalidated, as the driver does.
bool refused_in_capture()
{
	if (captures.empty())
		return false;
	for (CUstream_st *s : captures)
		s->invalid = true;
	return true;
}

// Work queued on s: recorded when s captures (false: run it now). *err: the error of a capture
// already invalidated.
bool record(cudaStream_t s, int kind, std::function<void()> run, cudaError_t *err, const void *func = nullptr,
	    dim3 g = dim3(), dim3 b = dim3(), size_t smem = 0)
{
	*err = cudaSuccess;
	CUstream_st *o = cap_of(s);
	if (!o)
		return false;
	if (o->invalid) {
		*err = cudaErrorStreamCaptureInvalidated;
	} else {
		o->nodes.push_back(emu_node{kind, std::move(run), func, g, b, smem});
		s->work++;
	}
	return true;
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

static void run_grid(dim3 g, dim3 b, size_t smem, const std::function<void()> &f);

void emu_launch(dim3 g, dim3 b, size_t smem, cudaStream_t s, const std::function<void()> &f)
{
	unsigned n = b.x * b.y * b.z;
	if (n == 0 || n > 1024 || g.x == 0 || g.y == 0 || g.z == 0)
		fail("bad launch configuration");
	if (smem > 227 * 1024)
		fail("more dynamic shared memory than any device has");
	cudaError_t e;
	if (record(
		    s, 0, [g, b, smem, f] { run_grid(g, b, smem, f); }, &e, emu_bound_kernel, g, b, smem)) {
		if (e != cudaSuccess)
			last_error = e;
		return;
	}
	run_grid(g, b, smem, f);
}

static void run_grid(dim3 g, dim3 b, size_t smem, const std::function<void()> &f)
{
	unsigned n = b.x * b.y * b.z;
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
cudaError_t cudaGetLastError(void)
{
	cudaError_t e = last_error;
	last_error = cudaSuccess;
	return e;
}
cudaError_t cudaFuncSetAttribute(const void *, cudaFuncAttribute, int) { return cudaSuccess; }
const char *cudaGetErrorString(cudaError_t e)
{
	switch (e) {
	case cudaSuccess: return "no error";
	case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
	case cudaErrorStreamCaptureInvalidated:
		return "operation failed due to a previous error during capture";
	case cudaErrorStreamCaptureIsolation:
		return "operation would make the legacy stream depend on a capturing blocking stream";
	case cudaErrorCapturedEvent:
		return "operation not permitted on an event last recorded in a capturing stream";
	case cudaErrorIllegalState: return "the operation cannot be performed in the present state";
	case cudaErrorStreamCaptureUnjoined:
		return "the capture sequence contains a fork that was not joined to the primary stream";
	case cudaErrorStreamCaptureUnmatched: return "capture was not initiated in this stream";
	case cudaErrorStreamCaptureMerge:
		return "operation would have resulted in a merge of two independent capture sequences";
	default: return "emulated error";
	}
}
const char *cudaGetErrorName(cudaError_t e)
{
	switch (e) {
	case cudaSuccess: return "cudaSuccess";
	case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
	case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
	case cudaErrorStreamCaptureIsolation: return "cudaErrorStreamCaptureIsolation";
	case cudaErrorCapturedEvent: return "cudaErrorCapturedEvent";
	case cudaErrorIllegalState: return "cudaErrorIllegalState";
	case cudaErrorStreamCaptureUnjoined: return "cudaErrorStreamCaptureUnjoined";
	case cudaErrorStreamCaptureUnmatched: return "cudaErrorStreamCaptureUnmatched";
	case cudaErrorStreamCaptureMerge: return "cudaErrorStreamCaptureMerge";
	default: return "cudaErrorEmulated";
	}
}

cudaError_t cudaMalloc(void **p, size_t size)
{
	if (refused_in_capture())
		return cudaErrorStreamCaptureUnsupported;
	*p = malloc(size ? size : 1);
	if (!*p)
		return cudaErrorMemoryAllocation;
	memset(*p, 0xcd, size); // device memory starts as garbage
	allocs[(uintptr_t)*p] = size;
	return cudaSuccess;
}

cudaError_t cudaFree(void *p)
{
	if (refused_in_capture())
		return cudaErrorStreamCaptureUnsupported;
	if (!p)
		return cudaSuccess;
	if (!allocs.erase((uintptr_t)p))
		fail("cudaFree of a pointer cudaMalloc did not return");
	free(p);
	return cudaSuccess;
}

cudaError_t cudaHostAlloc(void **p, size_t size, unsigned int)
{
	if (refused_in_capture())
		return cudaErrorStreamCaptureUnsupported;
	*p = malloc(size ? size : 1);
	if (!*p)
		return cudaErrorMemoryAllocation;
	pinned[(uintptr_t)*p] = size ? size : 1;
	return cudaSuccess;
}
cudaError_t cudaFreeHost(void *p)
{
	if (refused_in_capture())
		return cudaErrorStreamCaptureUnsupported;
	pinned.erase((uintptr_t)p);
	free(p);
	return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total)
{
	if (refused_in_capture())
		return cudaErrorStreamCaptureUnsupported;
	size_t used = 0;
	for (auto &a : allocs)
		used += a.second;
	*total = (size_t)8 << 30;
	*free_b = *total > used ? *total - used : 0;
	return cudaSuccess;
}

static void copy_check(void *d, const void *s, size_t n, cudaMemcpyKind k)
{
	if ((k == cudaMemcpyHostToDevice || k == cudaMemcpyDeviceToDevice) && !in_device(d, n))
		fail("cudaMemcpy: dst outside any device buffer");
	if ((k == cudaMemcpyDeviceToHost || k == cudaMemcpyDeviceToDevice) && !in_device(s, n))
		fail("cudaMemcpy: src outside any device buffer");
}

cudaError_t cudaMemcpy(void *d, const void *s, size_t n, cudaMemcpyKind k)
{
	if (refused_in_capture()) /* synchronous */
		return cudaErrorStreamCaptureUnsupported;
	copy_check(d, s, n, k);
	memmove(d, s, n);
	if (k == cudaMemcpyDeviceToHost)
		rep.host_copy(d, n);
	return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind k, cudaStream_t st)
{
	copy_check(d, s, n, k);
	if (cap_of(st) && !cap_of(st)->invalid) {
		// a graph's memcpy node takes device or pinned memory; a pageable host copy is refused
		bool ok = k == cudaMemcpyDeviceToDevice ||
			  (k == cudaMemcpyHostToDevice && in_map(pinned, s, n)) ||
			  (k == cudaMemcpyDeviceToHost && in_map(pinned, d, n));
		if (!ok) {
			cap_of(st)->invalid = true;
			return cudaErrorStreamCaptureUnsupported;
		}
	}
	auto run = [d, s, n, k] {
		memmove(d, s, n);
		if (k == cudaMemcpyDeviceToHost)
			rep.host_copy(d, n);
	};
	cudaError_t e;
	if (record(st, 2, run, &e))
		return e;
	run();
	return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t st)
{
	if (!in_device(d, n))
		fail("cudaMemsetAsync outside any device buffer");
	cudaError_t e;
	if (record(
		    st, 1, [d, v, n] { memset(d, v, n); }, &e, nullptr, dim3(), dim3(), n))
		return e;
	memset(d, v, n);
	return cudaSuccess;
}
cudaError_t cudaMemcpyToSymbol(const void *sym, const void *src, size_t n, size_t off, cudaMemcpyKind)
{
	if (refused_in_capture())
		return cudaErrorStreamCaptureUnsupported;
	memcpy((char *)sym + off, src, n);
	return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int)
{
	*s = new CUstream_st{};
	return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s)
{
	if (s && s->capturing)
		fail("cudaStreamDestroy of a capturing stream (or of one forked into a capture)");
	delete s;
	return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t)
{
	if (refused_in_capture())
		return cudaErrorStreamCaptureUnsupported;
	return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int)
{
	if (!e)
		fail("cudaStreamWaitEvent on a null event");
	CUstream_st *o = cap_of(s);
	// the open capture the event was recorded in (nullptr: outside any, or in one that ended)
	CUstream_st *eo = e->captured ? capture_of(e->serial) : nullptr;
	if (o && o->invalid)
		return cudaErrorStreamCaptureInvalidated;
	if (o && !e->captured) { // a dependency on work outside the capture
		o->invalid = true;
		return cudaErrorStreamCaptureIsolation;
	}
	if (e->captured && !eo) { // recorded in a capture that has ended
		if (o)
			o->invalid = true;
		return cudaErrorStreamCaptureIsolation;
	}
	if (o && eo != o) { // two captures would merge
		o->invalid = eo->invalid = true;
		return cudaErrorStreamCaptureMerge;
	}
	if (!o && eo) { // a fork: s joins the capture, depending on what the event does
		if (!s)
			fail("cudaStreamWaitEvent: the legacy stream forked into a capture: not emulated");
		s->capturing = true;
		s->origin = eo;
		s->work = 0;
		s->seen = e->seen;
		eo->forked.push_back(s);
		return eo->invalid ? cudaErrorStreamCaptureInvalidated : cudaSuccess;
	}
	if (o) // within the capture: s's next work depends on what the event's point does
		for (auto &kv : e->seen)
			s->seen[kv.first] = std::max(s->seen[kv.first], kv.second);
	return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t *e)
{
	*e = new CUevent_st{};
	return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int) { return cudaEventCreate(e); }
cudaError_t cudaEventDestroy(cudaEvent_t e)
{
	delete e;
	return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
	if (!e)
		fail("cudaEventRecord on a null event");
	CUstream_st *o = cap_of(s);
	if (o && o->invalid)
		return cudaErrorStreamCaptureInvalidated;
	e->captured = o != nullptr;
	e->seen.clear();
	if (o) { // the point after s's work so far, and after what s depends on
		e->serial = o->serial;
		e->seen = s->seen;
		e->seen[s] = s->work;
	}
	return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
	if (refused_in_capture())
		return cudaErrorStreamCaptureUnsupported;
	return e->captured ? cudaErrorCapturedEvent : cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
	if (a->captured || b->captured)
		return cudaErrorCapturedEvent;
	*ms = 0.001f;
	return cudaSuccess;
}

// ---- graphs ----

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode)
{
	if (!s || s->capturing)
		return cudaErrorIllegalState;
	s->capturing = true;
	s->invalid = false;
	s->nodes.clear();
	s->forked.clear();
	s->serial = ++capture_serial;
	s->origin = s;
	s->work = 0;
	s->seen.clear();
	captures.push_back(s);
	return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g)
{
	*g = NULL;
	if (!s || !s->capturing)
		return cudaErrorIllegalState;
	if (s->origin != s) // a forked stream cannot end the capture
		return cudaErrorStreamCaptureUnmatched;
	// every forked stream's last work must be something s waited on (joined); they all leave
	// the capture with it
	bool unjoined = false;
	for (CUstream_st *f : s->forked) {
		auto it = s->seen.find(f);
		unjoined |= f->work > (it == s->seen.end() ? 0 : it->second);
		f->capturing = false;
		f->origin = nullptr;
		f->seen.clear();
	}
	s->forked.clear();
	s->capturing = false;
	s->origin = nullptr;
	s->seen.clear();
	for (size_t i = 0; i < captures.size(); i++)
		if (captures[i] == s)
			captures.erase(captures.begin() + (long)i);
	if (s->invalid || unjoined) {
		s->nodes.clear();
		return s->invalid ? cudaErrorStreamCaptureInvalidated : cudaErrorStreamCaptureUnjoined;
	}
	*g = new CUgraph_st{std::move(s->nodes)};
	rep.captures++;
	s->nodes.clear();
	return cudaSuccess;
}
cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus *st)
{
	*st = !cap_of(s)           ? cudaStreamCaptureStatusNone
	      : cap_of(s)->invalid ? cudaStreamCaptureStatusInvalidated
				   : cudaStreamCaptureStatusActive;
	return cudaSuccess;
}
cudaError_t cudaGraphGetNodes(cudaGraph_t g, cudaGraphNode_t *nodes, size_t *n)
{
	if (nodes) {
		if (*n < g->nodes.size())
			fail("cudaGraphGetNodes: room for fewer nodes than the graph has");
		for (size_t i = 0; i < g->nodes.size(); i++)
			nodes[i] = reinterpret_cast<cudaGraphNode_t>(&g->nodes[i]);
	}
	*n = g->nodes.size();
	return cudaSuccess;
}
cudaError_t cudaGraphNodeGetType(cudaGraphNode_t h, enum cudaGraphNodeType *t)
{
	const emu_node *n = node_of(h);
	*t = n->kind == 0   ? cudaGraphNodeTypeKernel
	     : n->kind == 1 ? cudaGraphNodeTypeMemset
			    : cudaGraphNodeTypeMemcpy;
	return cudaSuccess;
}
// (gridDim and blockDim are emu_device.h's macros for the kernels: the struct's members here)
#pragma push_macro("gridDim")
#pragma push_macro("blockDim")
#undef gridDim
#undef blockDim
cudaError_t cudaGraphKernelNodeGetParams(cudaGraphNode_t h, struct cudaKernelNodeParams *p)
{
	const emu_node *n = node_of(h);
	if (n->kind != 0)
		return cudaErrorInvalidValue;
	*p = cudaKernelNodeParams{};
	p->func = const_cast<void *>(n->func);
	p->gridDim = n->g, p->blockDim = n->b, p->sharedMemBytes = (unsigned)n->smem;
	return cudaSuccess;
}
#pragma pop_macro("blockDim")
#pragma pop_macro("gridDim")
cudaError_t cudaGraphMemsetNodeGetParams(cudaGraphNode_t h, struct cudaMemsetParams *p)
{
	const emu_node *n = node_of(h);
	if (n->kind != 1)
		return cudaErrorInvalidValue;
	*p = cudaMemsetParams{};
	p->elementSize = 1, p->width = n->smem, p->height = 1;
	return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *e, cudaGraph_t g, unsigned long long)
{
	*e = new CUgraphExec_st{g->nodes};
	rep.instantiated++;
	return cudaSuccess;
}
cudaError_t cudaGraphExecUpdate(cudaGraphExec_t e, cudaGraph_t g, cudaGraphExecUpdateResultInfo *info)
{
	*info = cudaGraphExecUpdateResultInfo{};
	info->result = cudaGraphExecUpdateSuccess;
	if (e->nodes.size() != g->nodes.size())
		info->result = cudaGraphExecUpdateErrorTopologyChanged;
	for (size_t i = 0; info->result == cudaGraphExecUpdateSuccess && i < g->nodes.size(); i++)
		if (e->nodes[i].kind != g->nodes[i].kind)
			info->result = cudaGraphExecUpdateErrorNodeTypeChanged;
	if (info->result != cudaGraphExecUpdateSuccess)
		return cudaErrorGraphExecUpdateFailure;
	e->nodes = g->nodes;
	rep.updates++;
	return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t s)
{
	if (s && s->capturing)
		fail("cudaGraphLaunch into a capturing stream (a child graph): not emulated");
	for (const emu_node &n : e->nodes)
		n.run();
	rep.graph_launches++;
	rep.nodes_run += e->nodes.size();
	return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e)
{
	delete e;
	return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g)
{
	delete g;
	return cudaSuccess;
}

// ---- cuBLAS ----

struct cublasContext {
	cublasPointerMode_t mode;
	cudaStream_t stream;
	bool workspace; // cublasSetWorkspace: needed for capture (else cuBLAS allocates)
};

cublasStatus_t cublasCreate_v2(cublasHandle_t *h)
{
	*h = new cublasContext{CUBLAS_POINTER_MODE_HOST, NULL, false};
	return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(cublasHandle_t h)
{
	delete h;
	return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t s)
{
	h->stream = s;
	return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t h, void *ws, size_t n)
{
	if (!in_device(ws, n))
		fail("cublasSetWorkspace: not a device buffer");
	h->workspace = n > 0;
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

static void gemm_run(cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k, float a,
		     const void *A, cudaDataType at, int64_t lda, const void *B, cudaDataType bt, int64_t ldb,
		     float b, float *c, int64_t ldc, bool fast16bf);

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
	if (h->stream && h->stream->capturing && !h->workspace)
		fail("cublasGemmEx captured without cublasSetWorkspace: cuBLAS would allocate its workspace");
	// the pointer mode's values: host ones are read now (cuBLAS copies them into the launch),
	// device ones when the product runs
	float ha = dev ? 0.0f : *(const float *)alpha, hb = dev ? 0.0f : *(const float *)beta;
	auto run = [=] {
		float a = dev ? *(const float *)alpha : ha, b = dev ? *(const float *)beta : hb;
		gemm_run(ta, tb, m, n, k, a, A, at, lda, B, bt, ldb, b, (float *)C, ldc, fast16bf);
	};
	cudaError_t e;
	if (record(h->stream, 0, run, &e, (const void *)&gemm_run,
		   dim3((unsigned)m, (unsigned)n, (unsigned)k), dim3(), 0))
		return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
	run();
	return CUBLAS_STATUS_SUCCESS;
}

static void gemm_run(cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k, float a,
		     const void *A, cudaDataType at, int64_t lda, const void *B, cudaDataType bt, int64_t ldb,
		     float b, float *c, int64_t ldc, bool fast16bf)
{
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
}

} // extern "C"
