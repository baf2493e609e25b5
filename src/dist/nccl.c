/* NCCL's all-reduce (and the layer split's send/recv) over device buffers for the CUDA build
 * (src/dist/dist.h). libnccl.so.2 is
 * opened at run time (dlopen), so that a CUDA build compiles and runs without NCCL installed: the
 * few entry points it calls are declared here from NCCL's documented API (ncclGetUniqueId,
 * ncclCommInitRank, ncclAllReduce, ncclCommDestroy, ncclGetErrorString; ncclUniqueId is 128
 * opaque bytes, ncclFloat32 = 7, ncclSum = 0, ncclSuccess = 0; ncclSend and ncclRecv (NCCL 2.7
 * and later, ncclUint8 = 1) where the library has them). The group stays MPI's: rank 0's
 * unique id reaches the others with tern_dist_bcast.
 *
 * The sum order is NCCL's (rings or trees over the devices): the same for the same ranks,
 * devices and NCCL version and settings, not the rank order of the MPI sum. */
#define _POSIX_C_SOURCE 200809L
#include "dist/dist.h"

#include "backend/backend.h"
#include "core/core.h"

#include <stdlib.h>

#if defined(TERN_HAVE_CUDA) && defined(TERN_HAVE_MPI)
#include <dlfcn.h>

typedef struct {
	char internal[128];
} nccl_id;
typedef int (*nccl_get_unique_id_fn)(nccl_id *id);
typedef int (*nccl_comm_init_rank_fn)(void **comm, int nranks, nccl_id id, int rank);
typedef int (*nccl_all_reduce_fn)(const void *send, void *recv, size_t count, int dtype, int op, void *comm,
				  void *stream);
typedef int (*nccl_comm_destroy_fn)(void *comm);
typedef int (*nccl_send_fn)(const void *send, size_t count, int dtype, int peer, void *comm, void *stream);
typedef int (*nccl_recv_fn)(void *recv, size_t count, int dtype, int peer, void *comm, void *stream);
typedef const char *(*nccl_error_string_fn)(int result);

enum { NCCL_SUCCESS = 0, NCCL_UINT8 = 1, NCCL_FLOAT32 = 7, NCCL_SUM = 0 };

struct tern_dist_nccl {
	void *lib;
	void *comm;
	nccl_all_reduce_fn all_reduce;
	nccl_send_fn send; /* NULL before NCCL 2.7 */
	nccl_recv_fn recv;
	nccl_comm_destroy_fn destroy;
	nccl_error_string_fn error;
};

static enum tern_status nccl_check(const struct tern_dist_nccl *n, int rc, const char *what)
{
	if (rc == NCCL_SUCCESS)
		return TERN_OK;
	return tern_fail(TERN_E_DEVICE, "NCCL: %s failed: %s (%d)", what, n->error ? n->error(rc) : "error",
			 rc);
}

enum tern_status tern_dist_nccl_open(struct tern_dist_nccl **out)
{
	*out = NULL;
	struct tern_dist_nccl *n = tern_calloc(1, sizeof *n);
	if (!n)
		return tern_fail(TERN_E_NOMEM, "out of host memory");
	enum tern_status st = TERN_OK;
	nccl_get_unique_id_fn get_id = NULL;
	nccl_comm_init_rank_fn init = NULL;
	n->lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
	if (!n->lib) {
		st = tern_fail(TERN_E_UNAVAILABLE, "NCCL: cannot open libnccl.so.2 (%s)", dlerror());
	} else {
		get_id = (nccl_get_unique_id_fn)dlsym(n->lib, "ncclGetUniqueId");
		init = (nccl_comm_init_rank_fn)dlsym(n->lib, "ncclCommInitRank");
		n->all_reduce = (nccl_all_reduce_fn)dlsym(n->lib, "ncclAllReduce");
		n->destroy = (nccl_comm_destroy_fn)dlsym(n->lib, "ncclCommDestroy");
		n->send = (nccl_send_fn)dlsym(n->lib, "ncclSend");
		n->recv = (nccl_recv_fn)dlsym(n->lib, "ncclRecv");
		if (!n->send || !n->recv)
			n->send = NULL, n->recv = NULL;
		n->error = (nccl_error_string_fn)dlsym(n->lib, "ncclGetErrorString");
		if (!get_id || !init || !n->all_reduce || !n->destroy)
			st = tern_fail(TERN_E_UNAVAILABLE,
				       "NCCL: libnccl.so.2 lacks ncclGetUniqueId, "
				       "ncclCommInitRank, ncclAllReduce or ncclCommDestroy");
	}
	/* every rank reaches the broadcast and the vote, whether or not its NCCL loaded: all use it or
	 * none does */
	nccl_id id = {{0}};
	if (st == TERN_OK && tern_dist_rank() == 0)
		st = nccl_check(n, get_id(&id), "ncclGetUniqueId");
	float failed = st != TERN_OK;
	enum tern_status cst;
	if ((cst = tern_dist_bcast(&id, sizeof id, 0)) || (cst = tern_dist_allreduce_sum(&failed, 1))) {
		st = cst;
		goto out;
	}
	if (st == TERN_OK && failed > 0)
		st = tern_fail(TERN_E_UNAVAILABLE, "NCCL: another rank could not load or start it");
	if (st != TERN_OK)
		goto out;
	/* on the device the CUDA backend made current (one per rank) */
	if ((st = nccl_check(n, init(&n->comm, tern_dist_size(), id, tern_dist_rank()), "ncclCommInitRank")))
		goto out;
	*out = n;
	n = NULL;
out:
	tern_dist_nccl_close(n);
	return st;
}

enum tern_status tern_dist_nccl_allreduce(struct tern_dist_nccl *n, void *dev, int64_t count, void *stream)
{
	if (count <= 0)
		return TERN_OK;
	return nccl_check(n, n->all_reduce(dev, dev, (size_t)count, NCCL_FLOAT32, NCCL_SUM, n->comm, stream),
			  "ncclAllReduce");
}

bool tern_dist_nccl_p2p(const struct tern_dist_nccl *n) { return n && n->send; }

enum tern_status tern_dist_nccl_send(struct tern_dist_nccl *n, const void *dev, size_t bytes, int peer,
				     void *stream)
{
	if (!n->send)
		return tern_fail(TERN_E_UNSUPPORTED, "NCCL: this libnccl.so.2 has no ncclSend (NCCL < 2.7)");
	return nccl_check(n, n->send(dev, bytes, NCCL_UINT8, peer, n->comm, stream), "ncclSend");
}

enum tern_status tern_dist_nccl_recv(struct tern_dist_nccl *n, void *dev, size_t bytes, int peer,
				     void *stream)
{
	if (!n->recv)
		return tern_fail(TERN_E_UNSUPPORTED, "NCCL: this libnccl.so.2 has no ncclRecv (NCCL < 2.7)");
	return nccl_check(n, n->recv(dev, bytes, NCCL_UINT8, peer, n->comm, stream), "ncclRecv");
}

void tern_dist_nccl_close(struct tern_dist_nccl *n)
{
	if (!n)
		return;
	if (n->comm)
		n->destroy(n->comm);
	if (n->lib)
		dlclose(n->lib);
	free(n);
}
#else
enum tern_status tern_dist_nccl_open(struct tern_dist_nccl **out)
{
	*out = NULL;
	return tern_fail(TERN_E_UNSUPPORTED, "NCCL: this tern was built without %s",
			 tern_dist_mpi_built() ? "CUDA (TERN_CUDA=OFF)" : "MPI (TERN_MPI=OFF)");
}
enum tern_status tern_dist_nccl_allreduce(struct tern_dist_nccl *n, void *dev, int64_t count, void *stream)
{
	return tern_fail(TERN_E_UNSUPPORTED, "NCCL: not built");
}
bool tern_dist_nccl_p2p(const struct tern_dist_nccl *n) { return false; }
enum tern_status tern_dist_nccl_send(struct tern_dist_nccl *n, const void *dev, size_t bytes, int peer,
				     void *stream)
{
	return tern_fail(TERN_E_UNSUPPORTED, "NCCL: not built");
}
enum tern_status tern_dist_nccl_recv(struct tern_dist_nccl *n, void *dev, size_t bytes, int peer,
				     void *stream)
{
	return tern_fail(TERN_E_UNSUPPORTED, "NCCL: not built");
}
void tern_dist_nccl_close(struct tern_dist_nccl *n) {}
#endif

#ifndef TERN_HAVE_CUDA
enum tern_status tern_dist_cuda_address(struct tern_backend *be, struct tern_view v, void **ptr,
					void **stream)
{
	return tern_fail(TERN_E_UNSUPPORTED, "NCCL sums CUDA device buffers; this tern has no CUDA backend");
}
#endif
