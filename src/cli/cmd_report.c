/* tern report OUTPUT_DIR: the run's metrics as a self-contained HTML page (include/tern/train.h). */
#include "cli.h"
#include "tern/train.h"

#include <stdio.h>
#include <string.h>

void tern_help_report(void)
{
	printf("usage: tern report OUTPUT_DIR\n"
	       "\n"
	       "Writes OUTPUT_DIR/report.html from the metrics.jsonl and config.yaml that `tern train`\n"
	       "wrote there: charts of the loss and eval loss, learning rate, grad norm, tokens/s and\n"
	       "peak device and host memory against the step, a summary and the resolved config. One\n"
	       "self-contained file (inline SVG, no scripts): open it in any browser, also while the\n"
	       "run goes on or after it was killed.\n");
}

int tern_cmd_report(int argc, char **argv)
{
	const char *dir = NULL;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			tern_help_report();
			return TERN_EXIT_OK;
		} else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
			tern_cli_verbose++;
			tern_cli_set_log();
		} else if (a[0] == '-' && a[1]) {
			return tern_cli_usage("report: unknown option '%s' (usage: tern report OUTPUT_DIR)",
					      a);
		} else if (dir) {
			return tern_cli_usage("report: one OUTPUT_DIR, got '%s' and '%s'", dir, a);
		} else {
			dir = a;
		}
	}
	if (!dir)
		return tern_cli_usage("report: missing OUTPUT_DIR (usage: tern report OUTPUT_DIR)");
	struct tern_report_result res;
	enum tern_status st = tern_report(dir, &res);
	if (st != TERN_OK)
		return tern_cli_fail(st);
	printf("%s: %lld steps, %lld evals%s\n", res.path, (long long)res.steps, (long long)res.evals,
	       res.truncated ? " (the cut-off last line of metrics.jsonl left out)" : "");
	return TERN_EXIT_OK;
}
