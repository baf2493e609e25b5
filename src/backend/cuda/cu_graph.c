/* CUDA graphs for the compute stream: capture, segments, the cache of executable graphs
 * (cu_graph.h says what and why). */
#include "backend/cuda/cu.h"

#ifndef TERN_CUDA_EMU
#include <cuda.h> /* the driver's kernel node parameters (types only: no libcuda link) */
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* TERN_CUDA_GRAPHS: 1 on, 0 off, -1 neither */
static int graphs_env(void)
{
	const char *e = getenv("TERN_CUDA_GRAPHS");
	if (!e || !*e)
		return CU_GRAPHS_DEFAULT;
	return !strcmp(e, "1") ? 1 : !strcmp(e, "0") ? 0 : -1;
}

bool tern_cu_graphs_wanted(void) { return graphs_env() == 1; }

enum tern_status tern_cu_graphs_init(struct cu_backend *c)
{
	struct cu_graphs *g = &c->graph;
	memset(g, 0, sizeof *g);
	int on = graphs_env();
	const char *e = getenv("TERN_CUDA_GRAPHS");
	if (on < 0)
		return tern_fail(TERN_E_INVALID,
				 "cuda: TERN_CUDA_GRAPHS=%s: use 1 (CUDA graphs) or 0 (plain launches)", e);
	g->on = on == 1;
	g->max = CU_GRAPH_MAX;
	e = getenv("TERN_CUDA_GRAPH_MAX");
	if (e && *e) {
		char *end;
		long long v = strtoll(e, &end, 10);
		if (*end || v < 1 || v > CU_GRAPH_MAX)
			return tern_fail(TERN_E_INVALID,
					 "cuda: TERN_CUDA_GRAPH_MAX=%s: launches per graph segment, 1 to %d",
					 e, CU_GRAPH_MAX);
		g->max = v;
	}
	e = getenv("TERN_CUDA_GRAPH_UPDATE");
	if (e && *e && strcmp(e, "0") && strcmp(e, "1"))
		return tern_fail(
			TERN_E_INVALID,
			"cuda: TERN_CUDA_GRAPH_UPDATE=%s: use 1 (update cached graphs) or 0 (instantiate "
			"each segment)",
			e);
	g->no_update = e && !strcmp(e, "0");
	g->limit = CU_GRAPH_FIRST < g->max ? CU_GRAPH_FIRST : g->max;
	g->stats.on = g->on;
	return TERN_OK;
}

void tern_cu_graphs_free(struct cu_backend *c)
{
	struct cu_graphs *g = &c->graph;
	if (g->capturing) {
		cudaGraph_t graph = NULL;
		cudaStreamEndCapture(c->s, &graph);
		if (graph)
			cudaGraphDestroy(graph);
		cudaGetLastError();
		g->capturing = false;
	}
	for (int i = 0; i < g->n; i++)
		if (g->slot[i].exec)
			cudaGraphExecDestroy(g->slot[i].exec);
	free(g->slot);
	g->slot = NULL;
	g->n = 0;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 1099511628211ull;
	return h;
}

#ifndef TERN_CUDA_EMU
typedef CUresult (*kparams_fn)(CUgraphNode, CUDA_KERNEL_NODE_PARAMS *);

/* The driver's cuGraphKernelNodeGetParams through the runtime (no libcuda link); NULL where the
 * driver has none. It also reads the nodes of kernels cuBLAS launched, which the runtime's
 * cudaGraphKernelNodeGetParams may refuse. */
static kparams_fn driver_kparams(void)
{
	static int done;
	static kparams_fn fn;
	if (!done) {
		void *p = NULL;
		enum cudaDriverEntryPointQueryResult q;
		if (cudaGetDriverEntryPointByVersion("cuGraphKernelNodeGetParams", &p, 12000,
						     cudaEnableDefault, &q) == cudaSuccess &&
		    q == cudaDriverEntryPointSuccess)
			fn = (kparams_fn)p;
		cudaGetLastError();
		done = 1;
	}
	return fn;
}
#endif

/* One node's part of a signature: its type and, for a kernel, the function, grid, block and
 * dynamic shared memory; for a memset its shape. False: the node could not be read. */
static bool node_sig(cudaGraphNode_t node, uint64_t *h)
{
	enum cudaGraphNodeType t;
	if (cudaGraphNodeGetType(node, &t) != cudaSuccess)
		return false;
	*h = fnv(*h, &t, sizeof t);
	if (t == cudaGraphNodeTypeKernel) {
#ifndef TERN_CUDA_EMU
		kparams_fn fn = driver_kparams();
		CUDA_KERNEL_NODE_PARAMS dp;
		if (fn && fn((CUgraphNode)node, &dp) == CUDA_SUCCESS) {
			unsigned d[7] = {dp.gridDimX,  dp.gridDimY,  dp.gridDimZ,      dp.blockDimX,
					 dp.blockDimY, dp.blockDimZ, dp.sharedMemBytes};
			*h = fnv(*h, &dp.func, sizeof dp.func);
			*h = fnv(*h, &dp.kern, sizeof dp.kern);
			*h = fnv(*h, d, sizeof d);
			return true;
		}
#endif
		struct cudaKernelNodeParams kp;
		if (cudaGraphKernelNodeGetParams(node, &kp) != cudaSuccess)
			return false;
		unsigned d[7] = {kp.gridDim.x,  kp.gridDim.y,  kp.gridDim.z,     kp.blockDim.x,
				 kp.blockDim.y, kp.blockDim.z, kp.sharedMemBytes};
		*h = fnv(*h, &kp.func, sizeof kp.func);
		*h = fnv(*h, d, sizeof d);
	} else if (t == cudaGraphNodeTypeMemset) {
		struct cudaMemsetParams mp;
		if (cudaGraphMemsetNodeGetParams(node, &mp) != cudaSuccess)
			return false;
		size_t d[3] = {mp.elementSize, mp.width, mp.height};
		*h = fnv(*h, d, sizeof d);
	}
	return true;
}

/* A graph's signature: its nodes' node_sig in the order the graph lists them (FNV-1a); 0 when a
 * node could not be read (such a graph is never updated into another). A cached executable graph
 * is updated only from a graph of the same signature, so cudaGraphExecUpdate only changes
 * parameters (pointers, scalars): on an H100 an update from one kernel to another reported
 * success and then ran what it had before (cu_graph.h). */
static uint64_t graph_sig(cudaGraph_t graph, size_t n)
{
	cudaGraphNode_t *nodes = malloc(n * sizeof *nodes);
	uint64_t h = 14695981039346656037ull;
	size_t got = n;
	bool ok = nodes && cudaGraphGetNodes(graph, nodes, &got) == cudaSuccess && got == n;
	for (size_t i = 0; ok && i < n; i++)
		ok = node_sig(nodes[i], &h);
	free(nodes);
	cudaGetLastError();
	return ok && h ? h : 0;
}

/* The slot for a graph of n nodes and signature sig: the first of the same from g->next on
 * (segments repeat in the order they were made, so it is usually g->next itself), else a new
 * one, else the least recently used. *fresh: the slot has no executable graph. */
static int slot_for(struct cu_graphs *g, size_t n, uint64_t sig, bool *fresh)
{
	*fresh = false;
	for (int k = 0; sig && k < g->n; k++) {
		int i = (g->next + k) % g->n;
		if (g->slot[i].exec && g->slot[i].nodes == n && g->slot[i].sig == sig)
			return i;
	}
	*fresh = true;
	if (g->n < CU_GRAPH_SLOTS) {
		struct cu_graph_slot *s = realloc(g->slot, (size_t)(g->n + 1) * sizeof *s);
		if (s) {
			g->slot = s;
			g->slot[g->n] = (struct cu_graph_slot){0};
			return g->n++;
		}
		if (g->n == 0)
			return -1;
	}
	int lru = 0;
	for (int i = 1; i < g->n; i++)
		if (g->slot[i].used < g->slot[lru].used)
			lru = i;
	if (g->slot[lru].exec)
		cudaGraphExecDestroy(g->slot[lru].exec);
	g->slot[lru].exec = NULL;
	return lru;
}

/* Ends the open capture and launches what it recorded. */
static enum tern_status segment_end(struct cu_backend *c)
{
	struct cu_graphs *g = &c->graph;
	cudaGraph_t graph = NULL;
	int64_t ops = g->cap_ops;
	g->capturing = false;
	g->cap_ops = 0;
	cudaError_t e = cudaStreamEndCapture(c->s, &graph);
	if (e != cudaSuccess) {
		if (graph)
			cudaGraphDestroy(graph);
		cudaGetLastError();
		return tern_fail(e == cudaErrorMemoryAllocation ? TERN_E_DEVICE_MEM : TERN_E_DEVICE,
				 "cuda: CUDA graph capture failed: %s (%s); TERN_CUDA_GRAPHS=0 runs without "
				 "graphs",
				 cudaGetErrorString(e), cudaGetErrorName(e));
	}
	size_t n = 0;
	enum tern_status st = tern_cu_check(cudaGraphGetNodes(graph, NULL, &n), "CUDA graph: nodes");
	if (st || n == 0) {
		cudaGraphDestroy(graph);
		return st;
	}
	bool fresh;
	uint64_t sig = graph_sig(graph, n);
	int i = slot_for(g, n, sig, &fresh);
	if (i < 0) {
		cudaGraphDestroy(graph);
		return tern_fail(TERN_E_NOMEM, "cuda: no memory for a CUDA graph slot");
	}
	struct cu_graph_slot *s = &g->slot[i];
	if (!fresh) {
		cudaGraphExecUpdateResultInfo info;
		if (!g->no_update && cudaGraphExecUpdate(s->exec, graph, &info) == cudaSuccess) {
			g->stats.updates++;
		} else { /* a node changed in a way an update cannot follow: a new one */
			cudaGetLastError();
			cudaGraphExecDestroy(s->exec);
			s->exec = NULL;
			fresh = true;
		}
	}
	if (fresh) {
		e = cudaGraphInstantiate(&s->exec, graph, 0);
		if (e != cudaSuccess) {
			s->exec = NULL;
			cudaGraphDestroy(graph);
			return tern_cu_check(e, "CUDA graph: instantiate");
		}
		g->stats.instantiated++;
	}
	s->nodes = n;
	s->sig = sig;
	s->used = ++g->clock;
	g->next = i + 1;
	st = tern_cu_check(cudaGraphLaunch(s->exec, c->s), "CUDA graph: launch");
	cudaGraphDestroy(graph);
	if (st == TERN_OK) {
		g->stats.segments++;
		g->stats.launches += (uint64_t)ops;
	}
	return st;
}

/* A failure inside tern_cu_stream cannot be returned there: kept for the next flush. */
static void keep_error(struct cu_graphs *g, enum tern_status st)
{
	if (st == TERN_OK || g->err != TERN_OK)
		return;
	g->err = st;
	snprintf(g->err_msg, sizeof g->err_msg, "%s", tern_error());
}

void tern_cu_graph_enter(struct cu_backend *c)
{
	struct cu_graphs *g = &c->graph;
	if (c->base.profiling) /* the profile times ops on the live stream */
		return;
	if (g->capturing && g->cap_ops >= g->limit) {
		keep_error(g, segment_end(c));
		g->limit = g->limit * 2 < g->max ? g->limit * 2 : g->max;
	}
	if (!g->capturing) {
		cudaError_t e = cudaStreamBeginCapture(c->s, cudaStreamCaptureModeThreadLocal);
		if (e != cudaSuccess) { /* this launch runs as a plain one; the next flush reports it */
			cudaGetLastError();
			keep_error(g, tern_cu_check(e, "CUDA graph: begin capture"));
			return;
		}
		g->capturing = true;
	}
	g->cap_ops++;
}

enum tern_status tern_cu_flush(struct cu_backend *c, bool host_waits)
{
	struct cu_graphs *g = &c->graph;
	enum tern_status st = TERN_OK;
	if (g->capturing) {
		g->stats.flushes++;
		st = segment_end(c);
	}
	if (host_waits)
		g->limit = CU_GRAPH_FIRST < g->max ? CU_GRAPH_FIRST : g->max;
	if (st == TERN_OK && g->err != TERN_OK) {
		st = tern_fail(g->err, "%s", g->err_msg);
		g->err = TERN_OK;
	}
	return st;
}

enum tern_status tern_cu_graph_stats(struct tern_backend *be, struct tern_cu_graph_stats *out)
{
	if (strcmp(be->name, "cuda") != 0)
		return tern_fail(TERN_E_INVALID, "CUDA graph statistics of a %s backend", be->name);
	struct cu_backend *c = cu_be(be);
	*out = c->graph.stats;
	out->capturing = c->graph.capturing;
	out->cached = c->graph.n;
	return TERN_OK;
}
