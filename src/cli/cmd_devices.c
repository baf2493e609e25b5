/* tern devices: every backend compiled in, every device it finds, and the capabilities that
 * decide how tern runs there (memory, binding limits, fp16, subgroups, cooperative matrices). */
#include "cli.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEVICES 64
#define LABEL_WIDTH 27
#define LINE_WIDTH 100

void tern_help_devices(void)
{
	printf("usage: tern devices [-v]\n"
	       "\n"
	       "Lists every backend built in and every device it finds, with its index (for --device),\n"
	       "memory heaps, limits and optional features. A backend whose driver is missing is left\n"
	       "out; -v says why.\n"
	       "\n"
	       "options:\n");
	tern_cli_print_opts(NULL);
}

/* "128 MiB" when exact, else "79.6 GiB (85487935488 bytes)"; "-" for 0 (not reported). */
static void fmt_bytes(char *buf, size_t size, uint64_t b)
{
	static const char *const unit[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
	if (!b) {
		snprintf(buf, size, "-");
		return;
	}
	int u = 0;
	uint64_t v = b;
	while (u < 4 && v >= 1024 && v % 1024 == 0) {
		v /= 1024;
		u++;
	}
	if (v < 1024 || u == 4) {
		snprintf(buf, size, "%" PRIu64 " %s", v, unit[u]);
		return;
	}
	double d = (double)b;
	u = 0;
	while (u < 4 && d >= 1024) {
		d /= 1024;
		u++;
	}
	snprintf(buf, size, "%.1f %s (%" PRIu64 " bytes)", d, unit[u], b);
}

/* Prints "  label   value", wrapping a long value at spaces under the value column. */
static void field(const char *label, const char *value)
{
	int col = 2 + LABEL_WIDTH + 1;
	printf("  %-*s ", LABEL_WIDTH, label);
	if (!value || !*value) {
		printf("-\n");
		return;
	}
	const char *p = value;
	bool first = true;
	while (*p) {
		size_t room = LINE_WIDTH - (size_t)col, len = strcspn(p, "\n");
		if (len > room) {
			size_t cut = room;
			while (cut > 0 && p[cut] != ' ')
				cut--;
			len = cut ? cut : room;
		}
		printf("%*s%.*s\n", first ? 0 : col, "", (int)len, p);
		first = false;
		p += len;
		while (*p == ' ' || *p == '\n')
			p++;
	}
}

static void field_u(const char *label, uint64_t v)
{
	char buf[32];
	if (v)
		snprintf(buf, sizeof buf, "%" PRIu64, v);
	else
		snprintf(buf, sizeof buf, "-");
	field(label, buf);
}

static void field_bytes(const char *label, uint64_t v)
{
	char buf[64];
	fmt_bytes(buf, sizeof buf, v);
	field(label, buf);
}

static void field_bool(const char *label, bool v) { field(label, v ? "yes" : "no"); }

static void print_device(const struct tern_device_info *d)
{
	printf("%s %d: %s\n", d->backend, d->index, d->name);
	field("kind", d->kind);
	field("driver", d->driver);
	field("API", d->api);
	field("memory heaps", d->heaps);
	field_bytes("device-local memory", d->device_local_bytes);
	field_bytes("host-visible memory", d->host_visible_bytes);
	field_bytes("max allocation", d->max_allocation);
	field_bytes("max storage-buffer range", d->max_storage_range);
	field_bytes("shared memory", d->max_shared_memory);
	field_u("max workgroup invocations", d->max_workgroup_invocations);
	field_u("subgroup size", d->subgroup_size);
	field_bool("fp16 arithmetic", d->fp16);
	field_bool("16-bit storage", d->storage16);
	field_bool("int8", d->int8);
	field_bool("subgroup arithmetic", d->subgroup_arithmetic);
	field_bool("transfer queue", d->transfer_queue);
	field_bool("timestamps", d->timestamps);
	field_bool("memory budget ext", d->memory_budget);
	field("streaming copies", !strcmp(d->backend, "cpu") ? "synchronous (memcpy)"
				  : !d->timeline_semaphores  ? "synchronous (no timeline semaphores)"
				  : d->transfer_queue        ? "asynchronous, transfer queue"
							     : "asynchronous, compute queue");
	field("cooperative matrix", d->coopmat[0] ? d->coopmat : "none");
}

int tern_cmd_devices(int argc, char **argv)
{
	bool help;
	int rc = tern_cli_parse("devices", NULL, argc, argv, &help);
	if (rc)
		return rc;
	if (help) {
		tern_help_devices();
		return TERN_EXIT_OK;
	}
	tern_cli_set_log();

	struct tern_device_info *devs = calloc(MAX_DEVICES, sizeof *devs);
	if (!devs) {
		fprintf(stderr, "tern: out of memory\n");
		return TERN_EXIT_FAIL;
	}
	int count = 0;
	enum tern_status st = tern_devices(devs, MAX_DEVICES, &count);
	if (st) {
		free(devs);
		return tern_cli_fail(st);
	}
	for (int k = 0; k < count; k++) {
		if (k)
			printf("\n");
		print_device(&devs[k]);
	}
#ifdef TERN_HAVE_CUDA
	/* a CUDA build says why it lists no CUDA device (tern_devices only logs it) */
	bool any_cuda = false;
	for (int k = 0; k < count; k++)
		any_cuda |= !strcmp(devs[k].backend, "cuda");
	if (!any_cuda && tern_backend_probe("cuda") != TERN_OK) {
		printf("\n%s\n", tern_error());
	}
#endif
	free(devs);
	if (!count) {
		fprintf(stderr, "tern: no devices found\n");
		return TERN_EXIT_FAIL;
	}
	return TERN_EXIT_OK;
}
