/* The process group's one-process side (src/dist/): init without a launcher stays one process
 * and never starts MPI; the collectives are the identity; each rank's device from TERN_DEVICES
 * (one entry per rank; bad entries and counts fail with one line naming the variable) or from
 * `device` (+ the local rank on a GPU backend with several ranks, which one process never has);
 * point to point refuses; NCCL refuses softly where it is not built. The several-process side runs in tests/cli_mpi.sh. */
#define _POSIX_C_SOURCE 200809L
#include "core/core.h"
#include "dist/dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;

static void check(bool ok, const char *what)
{
	if (ok) {
		passed++;
	} else {
		failed++;
		printf("FAIL: %s (%s)\n", what, tern_error());
	}
}

/* tern_dist_device with TERN_DEVICES = list (NULL: unset) */
static enum tern_status device(const char *list, int dev, bool gpu, int *out)
{
	if (list)
		setenv("TERN_DEVICES", list, 1);
	else
		unsetenv("TERN_DEVICES");
	*out = -1;
	return tern_dist_device(dev, gpu, out);
}

int main(void)
{
	/* no launcher in the environment: one process */
	unsetenv("OMPI_COMM_WORLD_SIZE");
	unsetenv("PMI_SIZE");
	unsetenv("PMIX_RANK");
	check(!tern_dist_launched(), "not launched without the launchers' variables");
	check(tern_dist_init(NULL, NULL) == TERN_OK, "init");
	check(tern_dist_rank() == 0 && tern_dist_size() == 1 && tern_dist_local_rank() == 0 &&
		      tern_dist_local_size() == 1,
	      "rank 0 of 1");
	check(!strcmp(tern_dist_name(), "single"), "the single implementation");

	/* collectives: the identity, bit for bit */
	float buf[5] = {1.5f, -2.25f, 0.0f, 3e-30f, 7e30f}, want[5];
	memcpy(want, buf, sizeof buf);
	check(tern_dist_allreduce_sum(buf, 5) == TERN_OK && !memcmp(buf, want, sizeof buf),
	      "allreduce of one");
	check(tern_dist_bcast(buf, sizeof buf, 0) == TERN_OK && !memcmp(buf, want, sizeof buf),
	      "bcast of one");
	check(tern_dist_barrier() == TERN_OK, "barrier of one");
	/* point to point (a layer split's boundary): one process has no peer, and says so */
	check(tern_dist_send(buf, sizeof buf, 1) == TERN_E_UNSUPPORTED &&
		      strstr(tern_error(), "send to rank 1: one process has no other rank"),
	      "send of one refused");
	check(tern_dist_recv(buf, sizeof buf, 1) == TERN_E_UNSUPPORTED &&
		      strstr(tern_error(), "receive from rank 1: one process has no other rank"),
	      "recv of one refused");
	tern_clear_error();

	/* devices */
	int d;
	check(device(NULL, 3, true, &d) == TERN_OK && d == 3, "unset: the config's device");
	check(device(NULL, 2, false, &d) == TERN_OK && d == 2, "unset, CPU backend: the config's device");
	check(device("", 1, true, &d) == TERN_OK && d == 1, "empty: the config's device");
	check(device("5", 0, true, &d) == TERN_OK && d == 5, "one entry: rank 0 takes it");
	enum tern_status st = device("0,1", 0, true, &d);
	check(st == TERN_E_INVALID &&
		      strstr(tern_error(), "TERN_DEVICES=0,1 (--devices) names 2 devices for 1 ranks"),
	      "two entries for one rank: refused");
	st = device("0,x", 0, true, &d);
	check(st == TERN_E_INVALID && strstr(tern_error(), "'x' is no device index"), "a bad entry: refused");
	st = device("-1", 0, true, &d);
	check(st == TERN_E_INVALID && strstr(tern_error(), "is no device index"),
	      "a negative entry: refused");
	st = device("0,", 0, true, &d);
	check(st == TERN_E_INVALID, "a trailing comma: refused");
	unsetenv("TERN_DEVICES");

	/* NCCL: opened only in a CUDA build with MPI and several ranks; here it must refuse softly,
	 * never crash (a CUDA + MPI build without libnccl.so.2: unavailable, after the one-rank vote) */
	struct tern_dist_nccl *n = (struct tern_dist_nccl *)&d;
	st = tern_dist_nccl_open(&n);
	check((st == TERN_E_UNSUPPORTED || st == TERN_E_UNAVAILABLE || st == TERN_OK) &&
		      (st == TERN_OK) == (n != NULL),
	      "NCCL refuses softly where it cannot run");
	tern_dist_nccl_close(n);

	tern_dist_finalize();
	check(tern_dist_size() == 1, "finalize leaves one process");
	printf("test_dist: %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
