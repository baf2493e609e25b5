/* tern — several processes, one per device (data-parallel training; docs/ARCHITECTURE.md, "dist").
 *
 * The process group a run belongs to: started by `mpirun -n N tern train ...` (rank and size from
 * MPI), or one process alone. tern_dist_init looks at the environment that launchers set
 * (OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_RANK) and joins MPI only when it finds one, so a plain
 * `tern train` never starts MPI. A tern built without MPI (TERN_MPI=OFF) that finds itself one
 * of several ranks fails with one line. The collectives the trainer uses are in src/dist/dist.h. */
#ifndef TERN_DIST_H
#define TERN_DIST_H

#include "tern/tern.h"

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Joins the launcher's process group (MPI_Init_thread with MPI_THREAD_FUNNELED), or sets up the
 * one-process group. Call once, before any other tern_dist_ function; argc/argv as main's (MPI
 * may read them). */
enum tern_status tern_dist_init(int *argc, char ***argv);

/* This process's rank in [0, size), the group's size, the rank among the processes on this host
 * (which device it takes by default) and their number, the implementation ("single", "mpi"). */
int tern_dist_rank(void);
int tern_dist_size(void);
int tern_dist_local_rank(void);
int tern_dist_local_size(void);
const char *tern_dist_name(void);

/* Whether this tern was built with MPI (TERN_MPI). */
bool tern_dist_mpi_built(void);

/* Whether a launcher started this process as one of several (from the environment alone; the
 * same answer before and after tern_dist_init). */
bool tern_dist_launched(void);

/* Leaves the group (MPI_Finalize); a no-op for one process. */
void tern_dist_finalize(void);

/* Ends every process of the group with the exit code (MPI_Abort), after a failure on one rank
 * that the others would otherwise wait for; returns only for one process. */
void tern_dist_abort(int code);

#ifdef __cplusplus
}
#endif
#endif
