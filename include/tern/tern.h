/* tern — LoRA/QLoRA fine-tuning on Vulkan (and a plain-C reference backend).
 *
 * The public C API. Everything here is what the `tern` program and other callers may use;
 * backends, tensors and shaders stay private to the library. Functions return a status code;
 * on failure tern_error() gives a one-line message with context (thread-local, valid until the
 * next failing call on the same thread). */
#ifndef TERN_TERN_H
#define TERN_TERN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TERN_VERSION "0.1.0"

enum tern_status {
	TERN_OK = 0,
	TERN_E_INVALID,     /* bad argument or input */
	TERN_E_NOMEM,       /* host allocation failed */
	TERN_E_DEVICE_MEM,  /* device allocation failed */
	TERN_E_IO,          /* file system error */
	TERN_E_FORMAT,      /* malformed file */
	TERN_E_UNSUPPORTED, /* valid request this build or device cannot do */
	TERN_E_UNAVAILABLE, /* backend or device not present (driver missing) */
	TERN_E_DEVICE,      /* the driver reported an error */
	TERN_E_VALIDATION,  /* the Vulkan validation layer reported a message */
	TERN_E_INTERRUPTED, /* stopped by a signal after saving its state */
};

/* Short name of a status ("invalid argument", ...). */
const char *tern_status_str(enum tern_status st);

/* The message of the last failure on this thread ("" if none). */
const char *tern_error(void);

/* Log sink for diagnostics the library wants to show (device chosen, validation messages).
 * level: 0 error, 1 warning, 2 info, 3 debug. The default writes warnings and errors to stderr.
 * Notes (one line per config key tern accepts but does not follow, saying what it does instead)
 * come at level TERN_LOG_NOTE_LEVEL with text starting "note: ", so they show by default. */
#define TERN_LOG_NOTE_LEVEL 1
typedef void (*tern_log_fn)(int level, const char *msg, void *user);
void tern_set_log(tern_log_fn fn, void *user, int max_level);

/* ---- devices --------------------------------------------------------------------------- */

struct tern_device_info {
	char backend[16]; /* "cpu", "vulkan" */
	int index;        /* device index within the backend */
	char name[256];
	char kind[32];    /* "discrete-gpu", "integrated-gpu", "cpu", ... */
	char driver[128]; /* driver name and version */
	char api[32];     /* "Vulkan 1.3.230", "C11" */
	uint64_t device_local_bytes;
	uint64_t host_visible_bytes;
	uint64_t max_allocation;    /* largest single allocation */
	uint64_t max_storage_range; /* largest buffer one shader binding may see */
	uint32_t max_shared_memory; /* compute shared memory per workgroup, bytes */
	uint32_t max_workgroup_invocations;
	uint32_t subgroup_size;
	bool fp16;      /* shaderFloat16 */
	bool storage16; /* 16-bit storage buffer access */
	bool int8;      /* shaderInt8 + 8-bit storage */
	bool subgroup_arithmetic;
	bool transfer_queue; /* a queue family for transfers besides compute */
	bool timestamps;
	bool memory_budget;       /* VK_EXT_memory_budget */
	bool timeline_semaphores; /* asynchronous streaming copies (else synchronous) */
	char coopmat[512];        /* cooperative-matrix shapes, "" if none */
	char heaps[512];          /* memory heaps, human readable */
};

/* Fills up to max entries for every backend compiled in and every device it finds.
 * Backends whose driver is missing are skipped (their reason is logged at info level).
 * *count receives the number of entries written. */
enum tern_status tern_devices(struct tern_device_info *out, int max, int *count);
/* TERN_OK when backend `name` ("cpu", "vulkan", "cuda") finds at least one device; else the reason
 * (TERN_E_UNAVAILABLE "cuda: no device (...)", or the backend is not compiled in). */
enum tern_status tern_backend_probe(const char *name);

/* ---- op benchmark ---------------------------------------------------------------------- */

struct tern_bench_row {
	char op[32];    /* "matmul", "matmul_bwd", "gemm", "adamw", ... */
	char dtype[16]; /* weight dtype for matmuls, "f32" otherwise */
	char shape[64]; /* e.g. "T=512 O=4096 I=4096" */
	double ms;      /* mean time per call */
	double gflops;  /* 0 where FLOPs do not mean much */
	double gbs;     /* bytes the op must touch / time */
	int reps;
};

struct tern_bench_opts {
	const char *backend; /* "cpu" or "vulkan" */
	int device;          /* index within the backend */
	int64_t T, O, I;     /* matmul shape: tokens, out and in features */
	int64_t R;           /* LoRA rank for the gemm rows */
	const char *ops;     /* comma-separated filter, NULL or "" = all */
	double min_seconds;  /* time each op at least this long */
	const char *prec;    /* matmul and attention precision: "f32" (NULL: f32), "f16" or "bf16" */
	/* the attention rows' shape: query heads, KV heads, head dimension (0: 32, 8, 128) */
	int64_t heads, kv_heads, head_dim;
};

typedef void (*tern_bench_fn)(const struct tern_bench_row *row, void *user);

/* Times each op once per dtype at the given shape and reports a row per measurement.
 * *device_name receives the device description (may be NULL). */
enum tern_status tern_bench_ops(const struct tern_bench_opts *opts, tern_bench_fn fn, void *user,
				char *device_name, size_t device_name_size);

#ifdef __cplusplus
}
#endif
#endif
