/* The `tern` program: what its subcommand files share. The CLI uses only the public API
 * (include/tern/tern.h); it is the one place that prints to stdout and chooses exit codes:
 *	0 success, 1 the library reported a failure, 2 bad usage (unknown command, flag or value). */
#ifndef TERN_CLI_H
#define TERN_CLI_H

#include "tern/tern.h"

#include <stdbool.h>

enum { TERN_EXIT_OK = 0, TERN_EXIT_FAIL = 1, TERN_EXIT_USAGE = 2 };

/* How a command-line option takes its value. */
enum tern_cli_kind {
	TERN_CLI_INT,    /* long long in [lo, hi] */
	TERN_CLI_NUM,    /* double in [dlo, dhi] */
	TERN_CLI_CHOICE, /* one of choices */
	TERN_CLI_LIST,   /* comma-separated items, each one of choices */
};

struct tern_cli_opt {
	const char *name; /* "--T" */
	const char *meta; /* "N", shown in the help */
	enum tern_cli_kind kind;
	long long lo, hi;
	double dlo, dhi;
	const char *const *choices; /* NULL-terminated */
	void *dst;                  /* long long *, double * or const char ** by kind */
	const char *help;
};

/* Parses argv[0..argc) against opts (table ends with name == NULL). Also accepts -v/--verbose
 * (raises the log level) and -h/--help (sets *help). Positional arguments are errors.
 * Returns TERN_EXIT_OK or, after printing one line on stderr, TERN_EXIT_USAGE.
 * cmd names the command in messages ("bench ops"). */
int tern_cli_parse(const char *cmd, const struct tern_cli_opt *opts, int argc, char **argv, bool *help);

/* Prints the options of a table, one per line, for a help text. */
void tern_cli_print_opts(const struct tern_cli_opt *opts);

/* Prints "tern: <message>" on stderr. Return TERN_EXIT_USAGE or TERN_EXIT_FAIL respectively. */
int tern_cli_usage(const char *fmt, ...)
#if defined(__GNUC__)
	__attribute__((format(printf, 1, 2)))
#endif
	;
int tern_cli_fail(enum tern_status st);

/* Installs the log sink at the verbosity chosen so far (warnings, +1 per -v). */
void tern_cli_set_log(void);
extern int tern_cli_verbose;
/* Installs the download progress display of Hub ids on stderr (progress.c); _break ends a bar
 * left open by a failed download, so that a message starts on a line of its own. */
void tern_cli_set_progress(void);
void tern_cli_progress_break(void);

/* Subcommands: argv holds the arguments after the command words. */
int tern_cmd_devices(int argc, char **argv);
int tern_cmd_bench_ops(int argc, char **argv);
void tern_help_devices(void);
void tern_help_bench_ops(void);
int tern_cmd_info(int argc, char **argv);
int tern_cmd_quantize(int argc, char **argv);
void tern_help_info(void);
void tern_help_quantize(void);
int tern_cmd_tokenize(int argc, char **argv);
void tern_help_tokenize(void);
int tern_cmd_train(int argc, char **argv);
int tern_cmd_eval(int argc, char **argv);
void tern_help_train(void);
void tern_help_eval(void);
int tern_cmd_plan(int argc, char **argv);
void tern_help_plan(void);
int tern_cmd_report(int argc, char **argv);
int tern_cmd_generate(int argc, char **argv);
int tern_cmd_chat(int argc, char **argv);
void tern_help_generate(void);
void tern_help_chat(void);
void tern_help_report(void);
int tern_cmd_merge(int argc, char **argv);
int tern_cmd_export(int argc, char **argv);
void tern_help_merge(void);
void tern_help_export(void);

#endif
