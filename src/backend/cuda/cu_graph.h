/* CUDA graphs for the compute stream (cu_graph.c): the backend's own launches are captured and
 * replayed as executable graphs, transparently to the callers of the vtable.
 *
 * From the first launch after a boundary, the compute stream is in capture mode
 * (cudaStreamBeginCapture, thread-local mode): kernels, cuBLAS GEMMs (on the workspace set at
 * create, so cuBLAS allocates nothing), memsets and device-to-device copies are recorded, not run.
 * A boundary is anything that must meet the world outside the stream: a host read or write
 * (upload, download), a wait (synchronize, ticket_wait_host, scratch growth), an event that orders
 * against the copy stream (mark, wait_ticket), an allocation or free, memory_info, the profile,
 * the NCCL address. It first flushes: ends the capture, brings the cached executable graph of
 * the same signature (node count, types, and each kernel node's function, grid, block and shared
 * memory) up to date with cudaGraphExecUpdate (instantiating one when none has it), and
 * launches it. The parameters are therefore always the
 * ones just captured (no stale scalars, dropout keys, Tk or pointers).
 *
 * A capture is also cut into segments of growing length: the first after the host waited holds
 * CU_GRAPH_FIRST launches, each next one twice as many up to CU_GRAPH_MAX (TERN_CUDA_GRAPH_MAX
 * lowers it). The device starts on the first segment while the host captures the next, instead of
 * idling through the capture of a whole step.
 *
 * TERN_CUDA_GRAPHS=0|1 switches them (read at create; CU_GRAPHS_DEFAULT otherwise). While the
 * profile is on, nothing is captured (its event pairs time each op on the live stream). */
#ifndef TERN_CU_GRAPH_H
#define TERN_CU_GRAPH_H

#include "backend/backend.h"

#include <cuda_runtime_api.h>

/* On. A cached graph is updated only from a graph of the same kernels (cu_graph.c graph_sig), so
 * an update changes parameters alone: cudaGraphExecUpdate across different kernels had silently
 * run stale ones (32 small test_ops cases failed, a 1B run went NaN). On an H100 with that rule
 * (2026-12-05 17:30, docs/PERFORMANCE.md) test_ops 1,928/0, test_golden 101/0 and test_generate
 * 28/0 passed with graphs on as off, greedy ids were the same, and the steps ran 1.02x (8B) and
 * 1.07x (1B) faster with the same losses. TERN_CUDA_GRAPHS=0 turns them off. */
#define CU_GRAPHS_DEFAULT 1
#define CU_GRAPH_FIRST 8   /* launches in the first segment after the host waited */
#define CU_GRAPH_MAX 1024  /* launches in any segment */
#define CU_GRAPH_SLOTS 256 /* executable graphs kept (the least recently used goes) */

/* What the graphs did since create (test_cuda checks the capture logic through these). */
struct tern_cu_graph_stats {
	bool on;               /* graphs are used (TERN_CUDA_GRAPHS) */
	bool capturing;        /* a capture is open now */
	uint64_t segments;     /* captures ended with at least one node and launched */
	uint64_t updates;      /* of those, through cudaGraphExecUpdate of a cached executable graph */
	uint64_t instantiated; /* of those, through cudaGraphInstantiate (new shape, topology change) */
	uint64_t launches;     /* the backend's launches (tern_cu_stream) that were captured */
	uint64_t flushes;      /* boundaries that found a capture open */
	int cached;            /* executable graphs kept */
};

struct cu_graph_slot {
	cudaGraphExec_t exec;
	size_t nodes;
	uint64_t sig;  /* the signature of the graph it was made from (cu_graph.c graph_sig) */
	uint64_t used; /* the clock at its last launch */
};

struct cu_graphs {
	bool on, capturing;
	bool no_update;  /* TERN_CUDA_GRAPH_UPDATE=0: instantiate every segment afresh (diagnosis) */
	int64_t cap_ops; /* launches in the open capture */
	int64_t limit;   /* launches the open segment takes before it is launched */
	int64_t max;
	struct cu_graph_slot *slot;
	int n, next; /* slots in use; where the next segment's match is looked for first */
	uint64_t clock;
	enum tern_status err; /* a segment ended inside tern_cu_stream failed: the next flush says */
	char err_msg[256];
	struct tern_cu_graph_stats stats;
};

struct cu_backend;

/* Whether TERN_CUDA_GRAPHS (or the default) turns graphs on (tern devices says). */
bool tern_cu_graphs_wanted(void);
/* Reads TERN_CUDA_GRAPHS / TERN_CUDA_GRAPH_MAX / TERN_CUDA_GRAPH_UPDATE (a bad value is an
 * error naming it). TERN_CUDA_GRAPH_UPDATE=0 never updates a cached executable graph: every
 * segment is instantiated afresh (slow; it tells whether cudaGraphExecUpdate is what goes wrong
 * in the failures CU_GRAPHS_DEFAULT's comment lists). */
enum tern_status tern_cu_graphs_init(struct cu_backend *c);
/* Ends an open capture without launching it and destroys the executable graphs. */
void tern_cu_graphs_free(struct cu_backend *c);
/* Called by tern_cu_stream before each launch: opens a capture, or cuts the open one into a
 * segment when it is full. */
void tern_cu_graph_enter(struct cu_backend *c);
/* A boundary: ends the open capture (if any) and launches it; host_waits: the host is about to
 * wait for the stream (the next segment starts short again). Reports a failure of an earlier
 * segment. */
enum tern_status tern_cu_flush(struct cu_backend *c, bool host_waits);

/* The statistics of a cuda backend (TERN_E_INVALID for another). */
enum tern_status tern_cu_graph_stats(struct tern_backend *be, struct tern_cu_graph_stats *out);

#endif
