/* The CUDA backend's side of data parallel (src/dist/nccl.c): the device address of a view and
 * the compute stream, so that NCCL sums gradients where they are, in stream order with the ops
 * (any capture of the ops before is launched first: NCCL's own launches are not captured). */
#include "backend/cuda/cu.h"
#include "dist/dist.h"

#include <string.h>

enum tern_status tern_dist_cuda_address(struct tern_backend *be, struct tern_view v, void **ptr,
					void **stream)
{
	if (strcmp(be->name, "cuda") != 0 || !v.buf)
		return tern_fail(TERN_E_UNSUPPORTED, "NCCL sums CUDA device buffers; the backend is %s",
				 be->name);
	/* NCCL queues on the stream itself: the captured ops before it are launched first */
	enum tern_status st = tern_cu_flush(cu_be(be), false);
	if (st)
		return st;
	*ptr = (char *)cu_buf(v.buf)->ptr + v.off;
	*stream = (void *)cu_be(be)->s;
	return TERN_OK;
}
