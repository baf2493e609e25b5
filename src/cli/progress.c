/* The download progress of Hub ids (include/tern/hub.h) on stderr: a bar redrawn in place on a
 * terminal; off a terminal (logs) one line as each file of 64 MiB or more starts. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, isatty */
#include "cli.h"
#include "tern/hub.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BIG ((uint64_t)64 << 20) /* off a terminal, files from this size get a line */

struct progress {
	char file[512]; /* the file being drawn */
	double t0;      /* when it started */
	uint64_t done0; /* bytes present when it started (a resumed download) */
	bool drawn;     /* off a terminal: its line was printed */
};

static bool bar_open; /* a bar is on the terminal's last line, without its newline */

void tern_cli_progress_break(void)
{
	if (bar_open)
		fputc('\n', stderr);
	bar_open = false;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void human(char *buf, size_t cap, double b)
{
	static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	int u = 0;
	while (u < 4 && b >= 1024)
		b /= 1024, u++;
	snprintf(buf, cap, u ? "%.1f %s" : "%.0f %s", b, unit[u]);
}

static void on_progress(const char *repo, const char *file, uint64_t done, uint64_t total, void *user)
{
	struct progress *p = user;
	bool tty = isatty(2);
	if (strcmp(p->file, file) || done < p->done0) {
		snprintf(p->file, sizeof p->file, "%s", file);
		p->t0 = now();
		p->done0 = done;
		p->drawn = false;
	}
	bool end = total && done == total;
	char a[32], b[32], r[32];
	human(a, sizeof a, (double)done);
	human(b, sizeof b, (double)total);
	double dt = now() - p->t0;
	human(r, sizeof r, dt > 0 ? (double)(done - p->done0) / dt : 0);
	if (!tty) { /* logs: a line as a big file starts, nothing else */
		if (done == p->done0 && !p->drawn && total >= BIG) {
			fprintf(stderr, "tern: downloading %s/%s (%s%s)\n", repo, file, b,
				done ? ", resumed" : "");
			p->drawn = true;
		}
		return;
	}
	int pct = total ? (int)(100.0 * (double)done / (double)total) : 0, w = 24, fill = pct * w / 100;
	char bar[32];
	for (int i = 0; i < w; i++)
		bar[i] = i < fill ? '#' : '.';
	bar[w] = 0;
	fprintf(stderr, "\r\033[Kdownloading %s/%s [%s] %3d%% %s of %s, %s/s", repo, file, bar, pct, a,
		total ? b : "?", r);
	bar_open = !end;
	if (end)
		fputc('\n', stderr);
	fflush(stderr);
}

void tern_cli_set_progress(void)
{
	static struct progress p;
	tern_hub_set_progress(on_progress, &p);
}
