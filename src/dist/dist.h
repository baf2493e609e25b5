/* The process group of a data-parallel run (include/tern/dist.h) and the collectives the trainer
 * calls: the trainer knows nothing of MPI or NCCL, only this interface.
 *
 * Implementations (one vtable each): single.c (one process: every collective is the identity),
 * mpi.c (MPI, compiled with TERN_MPI), nccl.c (NCCL's all-reduce over device buffers for the CUDA
 * build, libnccl.so.2 opened at run time; the group itself is MPI's).
 *
 * Every collective is called by every rank in the same order; a rank that fails leaves the others
 * waiting, so the CLI ends the group with tern_dist_abort. */
#ifndef TERN_DIST_DIST_H
#define TERN_DIST_DIST_H

#include "tern/dist.h"

#include <stddef.h>
#include <stdint.h>

struct tern_dist_ops {
	const char *name;
	/* buf[0..n) = the sum over ranks of every rank's buf[0..n), the same bits on every rank:
	 * the sum is taken in rank order 0, 1, ..., size-1 for each element (a fixed order, so a
	 * run is deterministic for a given number of ranks) */
	enum tern_status (*allreduce_sum)(float *buf, int64_t n);
	/* buf[0..bytes) of rank root copied to every rank */
	enum tern_status (*bcast)(void *buf, size_t bytes, int root);
	enum tern_status (*barrier)(void);
	void (*finalize)(void);
	void (*abort)(int code);
	/* point to point (a layer split's boundary, src/train/trainer.c): bytes of buf to rank `to`,
	 * which receives them with recv(buf, bytes, from); blocking, in the order sent. The
	 * one-process group has no peer and refuses. */
	enum tern_status (*send)(const void *buf, size_t bytes, int to);
	enum tern_status (*recv)(void *buf, size_t bytes, int from);
};

/* The ops of the group tern_dist_init set up (single's before it). */
const struct tern_dist_ops *tern_dist_ops(void);

static inline enum tern_status tern_dist_allreduce_sum(float *buf, int64_t n)
{
	return tern_dist_ops()->allreduce_sum(buf, n);
}
static inline enum tern_status tern_dist_bcast(void *buf, size_t bytes, int root)
{
	return tern_dist_ops()->bcast(buf, bytes, root);
}
static inline enum tern_status tern_dist_barrier(void) { return tern_dist_ops()->barrier(); }
static inline enum tern_status tern_dist_send(const void *buf, size_t bytes, int to)
{
	return tern_dist_ops()->send(buf, bytes, to);
}
static inline enum tern_status tern_dist_recv(void *buf, size_t bytes, int from)
{
	return tern_dist_ops()->recv(buf, bytes, from);
}

/* The device index rank r takes (r = tern_dist_rank()): the r-th entry of TERN_DEVICES (a comma
 * list, one per rank: `tern train --devices 0,1` sets it) when set; else, with several ranks on a
 * GPU backend (gpu true), device + the local rank; else device. Fails with one line when
 * TERN_DEVICES has not one entry per rank or an entry is no device index. */
enum tern_status tern_dist_device(int device, bool gpu, int *out);

/* NCCL (the CUDA build with MPI; libnccl.so.2 opened at run time): a communicator over the MPI
 * group on each rank's current CUDA device. _open is collective (rank 0's unique id is broadcast)
 * and fails softly (TERN_E_UNAVAILABLE) without libnccl.so.2, TERN_E_UNSUPPORTED in a build
 * without CUDA or MPI. _allreduce sums count floats at device address dev over the ranks, in
 * place, queued on the CUDA stream `stream` (NCCL's order of summation, see nccl.c). */
struct tern_dist_nccl;
struct tern_backend;
struct tern_view;
enum tern_status tern_dist_nccl_open(struct tern_dist_nccl **out);
enum tern_status tern_dist_nccl_allreduce(struct tern_dist_nccl *n, void *dev, int64_t count, void *stream);
void tern_dist_nccl_close(struct tern_dist_nccl *n);
/* Point to point between device buffers (a layer split's boundary): bytes at device address dev
 * to / from rank peer, queued on `stream`; every send matched by the peer's recv of the same size,
 * in order. _p2p: whether the library has them (ncclSend/ncclRecv, NCCL 2.7+). */
bool tern_dist_nccl_p2p(const struct tern_dist_nccl *n);
enum tern_status tern_dist_nccl_send(struct tern_dist_nccl *n, const void *dev, size_t bytes, int peer,
				     void *stream);
enum tern_status tern_dist_nccl_recv(struct tern_dist_nccl *n, void *dev, size_t bytes, int peer,
				     void *stream);
/* The device address of view v of the CUDA backend be and its compute stream (src/backend/cuda/
 * cu_dist.c); TERN_E_UNSUPPORTED for another backend or a build without CUDA. */
enum tern_status tern_dist_cuda_address(struct tern_backend *be, struct tern_view v, void **ptr,
					void **stream);

/* The implementations (tern_dist_init picks one). rank/size/local_rank are filled by mpi_init. */
extern const struct tern_dist_ops tern_dist_single_ops;
#ifdef TERN_HAVE_MPI
enum tern_status tern_dist_mpi_init(int *argc, char ***argv, int *rank, int *size, int *local_rank,
				    int *local_size);
extern const struct tern_dist_ops tern_dist_mpi_ops;
#endif

#endif
