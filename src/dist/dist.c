/* The process group (include/tern/dist.h): which implementation, rank and size; the one-process
 * implementation; the device each rank takes. */
#define _POSIX_C_SOURCE 200809L
#include "dist/dist.h"

#include "core/core.h"

#include <stdlib.h>
#include <string.h>

static struct {
	const struct tern_dist_ops *ops;
	int rank, size, local_rank, local_size;
	bool init;
} g = {&tern_dist_single_ops, 0, 1, 0, 1, false};

/* ---- one process ---- */

static enum tern_status single_allreduce(float *buf, int64_t n) { return TERN_OK; }
static enum tern_status single_bcast(void *buf, size_t bytes, int root) { return TERN_OK; }
static enum tern_status single_barrier(void) { return TERN_OK; }
static void single_finalize(void) {}
static void single_abort(int code) {}
static enum tern_status single_send(const void *buf, size_t bytes, int to)
{
	return tern_fail(TERN_E_UNSUPPORTED, "dist: send to rank %d: one process has no other rank", to);
}
static enum tern_status single_recv(void *buf, size_t bytes, int from)
{
	return tern_fail(TERN_E_UNSUPPORTED, "dist: receive from rank %d: one process has no other rank",
			 from);
}

const struct tern_dist_ops tern_dist_single_ops = {
	"single",        single_allreduce, single_bcast, single_barrier,
	single_finalize, single_abort,     single_send,  single_recv,
};

/* ---- the group ---- */

/* The size a launcher announced in the environment (0: none). OpenMPI sets OMPI_COMM_WORLD_SIZE,
 * MPICH's hydra and others PMI_SIZE; PMIx launchers PMIX_RANK (size unknown: 2 stands for
 * "several"). */
static int env_size(int *rank)
{
	const char *s = getenv("OMPI_COMM_WORLD_SIZE"), *r = getenv("OMPI_COMM_WORLD_RANK");
	if (!s)
		s = getenv("PMI_SIZE"), r = getenv("PMI_RANK");
	*rank = r ? atoi(r) : 0;
	if (s)
		return atoi(s);
	if ((r = getenv("PMIX_RANK")) != NULL) {
		*rank = atoi(r);
		return 2;
	}
	return 0;
}

bool tern_dist_launched(void)
{
	int r;
	return env_size(&r) > 1;
}

bool tern_dist_mpi_built(void)
{
#ifdef TERN_HAVE_MPI
	return true;
#else
	return false;
#endif
}

enum tern_status tern_dist_init(int *argc, char ***argv)
{
	if (g.init)
		return TERN_OK;
	int rank = 0, size = env_size(&rank);
	if (size <= 1) {
		g.init = true;
		return TERN_OK;
	}
#ifdef TERN_HAVE_MPI
	enum tern_status st = tern_dist_mpi_init(argc, argv, &g.rank, &g.size, &g.local_rank, &g.local_size);
	if (st != TERN_OK)
		return st;
	g.ops = &tern_dist_mpi_ops;
	g.init = true;
	return TERN_OK;
#else
	return tern_fail(TERN_E_UNSUPPORTED,
			 "started as rank %d of %d by an MPI launcher, but this tern was built without MPI "
			 "(TERN_MPI=OFF); install libopenmpi-dev and rebuild (cmake -DTERN_MPI=ON), or run "
			 "one process",
			 rank, size);
#endif
}

const struct tern_dist_ops *tern_dist_ops(void) { return g.ops; }
int tern_dist_rank(void) { return g.rank; }
int tern_dist_size(void) { return g.size; }
int tern_dist_local_rank(void) { return g.local_rank; }
int tern_dist_local_size(void) { return g.local_size; }
const char *tern_dist_name(void) { return g.ops->name; }

void tern_dist_finalize(void)
{
	if (g.init)
		g.ops->finalize();
	g.ops = &tern_dist_single_ops;
	g.rank = g.local_rank = 0;
	g.size = g.local_size = 1;
	g.init = false;
}

void tern_dist_abort(int code)
{
	if (g.size > 1)
		g.ops->abort(code);
}

enum tern_status tern_dist_device(int device, bool gpu, int *out)
{
	const char *list = getenv("TERN_DEVICES");
	if (list && *list) {
		int n = 0;
		const char *p = list;
		for (;;) {
			char *end;
			long v = strtol(p, &end, 10);
			if (end == p || v < 0 || v > 1024 || (*end && *end != ','))
				return tern_fail(TERN_E_INVALID,
						 "TERN_DEVICES=%s (--devices): '%s' is no device index (give "
						 "a comma list of indices, one per rank, e.g. 0,1)",
						 list, p);
			if (n == g.rank)
				*out = (int)v;
			n++;
			if (!*end)
				break;
			p = end + 1;
		}
		if (n != g.size)
			return tern_fail(
				TERN_E_INVALID,
				"TERN_DEVICES=%s (--devices) names %d devices for %d ranks (give one "
				"per rank, or start as many ranks as devices: mpirun -n %d)",
				list, n, g.size, n);
		return TERN_OK;
	}
	*out = g.size > 1 && gpu ? device + g.local_rank : device;
	return TERN_OK;
}
