/* The MPI implementation of the process group (src/dist/dist.h), compiled with TERN_MPI.
 *
 * allreduce_sum is no MPI_Allreduce: MPI leaves the order in which an MPI_SUM adds the ranks'
 * values to the implementation (it may change with the message size and the algorithm chosen),
 * and a run must give the same bits every time. So: chunks of the buffer are gathered on rank 0,
 * summed there in rank order 0, 1, ..., size-1 and broadcast. For LoRA gradients (megabytes) the
 * extra hop costs little next to a step; docs/ARCHITECTURE.md says what a ring would save. */
#ifdef TERN_HAVE_MPI
#include "dist/dist.h"

#include "core/core.h"

#include <mpi.h>
#include <stdlib.h>

/* floats per chunk: rank 0 holds size × this many */
#define CHUNK ((int64_t)1 << 20)

static enum tern_status mpi_check(int rc, const char *what)
{
	if (rc == MPI_SUCCESS)
		return TERN_OK;
	char msg[MPI_MAX_ERROR_STRING];
	int len = 0;
	if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS)
		len = 0;
	msg[len] = 0;
	return tern_fail(TERN_E_IO, "MPI: %s failed: %s", what, len ? msg : "unknown error");
}

enum tern_status tern_dist_mpi_init(int *argc, char ***argv, int *rank, int *size, int *local_rank,
				    int *local_size)
{
	int provided = 0;
	enum tern_status st =
		mpi_check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
	if (st != TERN_OK)
		return st;
	MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
	MPI_Comm_rank(MPI_COMM_WORLD, rank);
	MPI_Comm_size(MPI_COMM_WORLD, size);
	/* the rank among the processes that share this host's memory */
	MPI_Comm node;
	*local_rank = *rank;
	*local_size = *size;
	if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, *rank, MPI_INFO_NULL, &node) ==
	    MPI_SUCCESS) {
		MPI_Comm_rank(node, local_rank);
		MPI_Comm_size(node, local_size);
		MPI_Comm_free(&node);
	}
	return TERN_OK;
}

static enum tern_status mpi_allreduce(float *buf, int64_t n)
{
	int rank, size;
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	float *all = NULL;
	int64_t c0 = n < CHUNK ? n : CHUNK;
	if (rank == 0 && !(all = tern_malloc((size_t)(c0 > 0 ? c0 : 1) * (size_t)size * sizeof *all)))
		return tern_fail(TERN_E_NOMEM, "out of host memory (all-reduce of %lld floats)",
				 (long long)n);
	enum tern_status st = TERN_OK;
	for (int64_t off = 0; off < n && st == TERN_OK; off += CHUNK) {
		int c = (int)(n - off < CHUNK ? n - off : CHUNK);
		st = mpi_check(MPI_Gather(buf + off, c, MPI_FLOAT, all, c, MPI_FLOAT, 0, MPI_COMM_WORLD),
			       "MPI_Gather (all-reduce)");
		if (st == TERN_OK && rank == 0)
			for (int i = 0; i < c; i++) {
				float s = all[i];
				for (int r = 1; r < size; r++)
					s += all[(int64_t)r * c + i];
				buf[off + i] = s;
			}
		if (st == TERN_OK)
			st = mpi_check(MPI_Bcast(buf + off, c, MPI_FLOAT, 0, MPI_COMM_WORLD),
				       "MPI_Bcast (all-reduce)");
	}
	free(all);
	return st;
}

static enum tern_status mpi_bcast(void *buf, size_t bytes, int root)
{
	enum tern_status st = TERN_OK;
	for (size_t off = 0; off < bytes && st == TERN_OK; off += (size_t)1 << 30) {
		size_t c = bytes - off < (size_t)1 << 30 ? bytes - off : (size_t)1 << 30;
		st = mpi_check(MPI_Bcast((char *)buf + off, (int)c, MPI_BYTE, root, MPI_COMM_WORLD),
			       "MPI_Bcast");
	}
	return st;
}

static enum tern_status mpi_barrier(void) { return mpi_check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"); }

static void mpi_finalize(void)
{
	int fin = 0;
	MPI_Finalized(&fin);
	if (!fin)
		MPI_Finalize();
}

static void mpi_abort(int code) { MPI_Abort(MPI_COMM_WORLD, code); }

/* in pieces of at most 1 GiB (MPI counts are int) */
#define PIECE ((size_t)1 << 30)

static enum tern_status mpi_send(const void *buf, size_t bytes, int to)
{
	enum tern_status st = TERN_OK;
	for (size_t off = 0; off < bytes && st == TERN_OK; off += PIECE) {
		size_t c = bytes - off < PIECE ? bytes - off : PIECE;
		st = mpi_check(MPI_Send((const char *)buf + off, (int)c, MPI_BYTE, to, 0, MPI_COMM_WORLD),
			       "MPI_Send");
	}
	return st;
}

static enum tern_status mpi_recv(void *buf, size_t bytes, int from)
{
	enum tern_status st = TERN_OK;
	for (size_t off = 0; off < bytes && st == TERN_OK; off += PIECE) {
		size_t c = bytes - off < PIECE ? bytes - off : PIECE;
		st = mpi_check(MPI_Recv((char *)buf + off, (int)c, MPI_BYTE, from, 0, MPI_COMM_WORLD,
					MPI_STATUS_IGNORE),
			       "MPI_Recv");
	}
	return st;
}

const struct tern_dist_ops tern_dist_mpi_ops = {
	"mpi", mpi_allreduce, mpi_bcast, mpi_barrier, mpi_finalize, mpi_abort, mpi_send, mpi_recv,
};
#else
typedef int tern_dist_mpi_unused; /* an empty translation unit is not ISO C */
#endif
