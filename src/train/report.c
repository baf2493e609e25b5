/* tern report OUTPUT_DIR (include/tern/train.h): <dir>/report.html from metrics.jsonl and
 * config.yaml, one self-contained page: inline SVG line charts (no scripts, nothing fetched),
 * a summary of the run and its resolved config. */
#define _POSIX_C_SOURCE 200809L /* getpid */
#include "tern/train.h"

#include "core/core.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- metrics.jsonl ---- */

enum { M_STEP, M_EPOCH, M_LOSS, M_LR, M_GNORM, M_TPS, M_ELAPSED, M_PDEV, M_PHOST, M_EVAL, M_COUNT };
static const char *const m_keys[M_COUNT] = {"step",
					    "epoch",
					    "loss",
					    "lr",
					    "grad_norm",
					    "tokens_per_s",
					    "elapsed_s",
					    "peak_device_bytes",
					    "peak_host_bytes",
					    "eval_loss"};

struct row {
	double v[M_COUNT]; /* NAN where the line has no such key */
};

struct rows {
	struct row *r;
	int64_t n, cap;
};

static const char *skip_ws(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\r')
		p++;
	return p;
}

/* A JSON string at p (after its opening quote was checked): the end past the closing quote, or
 * NULL. The key is copied to k (cut at cap). */
static const char *json_str(const char *p, char *k, size_t cap)
{
	size_t n = 0;
	for (p++; *p && *p != '"'; p++) {
		if (*p == '\\') {
			if (!*++p)
				return NULL;
		}
		if (n + 1 < cap)
			k[n++] = *p;
	}
	k[n] = 0;
	return *p == '"' ? p + 1 : NULL;
}

/* One flat JSON object of numbers (strings, true, false, null also skipped): false when the line
 * is not one. */
static bool parse_line(const char *p, struct row *row)
{
	for (int i = 0; i < M_COUNT; i++)
		row->v[i] = NAN;
	p = skip_ws(p);
	if (*p++ != '{')
		return false;
	p = skip_ws(p);
	if (*p == '}')
		return *skip_ws(p + 1) == 0;
	for (;;) {
		char key[64];
		if (*p != '"' || !(p = json_str(p, key, sizeof key)))
			return false;
		p = skip_ws(p);
		if (*p++ != ':')
			return false;
		p = skip_ws(p);
		if (*p == '"') {
			char tmp[8];
			if (!(p = json_str(p, tmp, sizeof tmp)))
				return false;
		} else if (!strncmp(p, "true", 4) || !strncmp(p, "null", 4)) {
			p += 4;
		} else if (!strncmp(p, "false", 5)) {
			p += 5;
		} else {
			char *end;
			double x = strtod(p, &end);
			if (end == p)
				return false;
			p = end;
			for (int i = 0; i < M_COUNT; i++)
				if (!strcmp(key, m_keys[i]))
					row->v[i] = x;
		}
		p = skip_ws(p);
		if (*p == ',') {
			p = skip_ws(p + 1);
			continue;
		}
		if (*p != '}')
			return false;
		return *skip_ws(p + 1) == 0 && !isnan(row->v[M_STEP]);
	}
}

static char *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 1 << 16, n = 0;
	char *b = tern_malloc(cap + 1);
	while (b) {
		size_t got = fread(b + n, 1, cap - n, f);
		n += got;
		if (n < cap)
			break;
		char *nb = realloc(b, cap * 2 + 1);
		if (!nb) {
			free(b);
			b = NULL;
			break;
		}
		b = nb;
		cap *= 2;
	}
	bool err = ferror(f);
	fclose(f);
	if (!b || err) {
		free(b);
		errno = err ? EIO : ENOMEM;
		return NULL;
	}
	b[n] = 0;
	*len = n;
	return b;
}

static enum tern_status load_metrics(const char *path, struct rows *out, bool *truncated)
{
	size_t len = 0;
	char *text = read_all(path, &len);
	if (!text)
		return tern_fail(TERN_E_IO, "cannot read %s: %s (is it a tern output_dir?)", path,
				 strerror(errno));
	enum tern_status st = TERN_OK;
	*truncated = false;
	int line = 0;
	for (char *p = text; *p;) {
		char *nl = strchr(p, '\n');
		bool last = !nl;
		if (nl)
			*nl = 0;
		line++;
		struct row r;
		if (*skip_ws(p) == 0) {
			/* a blank line */
		} else if (!parse_line(p, &r)) {
			if (last) { /* a run killed while writing its last line */
				*truncated = true;
				break;
			}
			st = tern_fail(
				TERN_E_FORMAT,
				"%s:%d: not a metrics line (a JSON object with \"step\"): '%.40s'; the file is "
				"damaged, or not tern's",
				path, line, p);
			break;
		} else {
			if (out->n == out->cap) {
				int64_t cap = out->cap ? out->cap * 2 : 256;
				struct row *nr = realloc(out->r, (size_t)cap * sizeof *nr);
				if (!nr) {
					st = tern_fail(TERN_E_NOMEM, "out of host memory");
					break;
				}
				out->r = nr, out->cap = cap;
			}
			out->r[out->n++] = r;
		}
		if (last)
			break;
		p = nl + 1;
	}
	free(text);
	if (st == TERN_OK && out->n == 0)
		st = tern_fail(TERN_E_FORMAT,
			       "%s has no metrics lines yet (did the run reach its first step?)", path);
	return st;
}

/* ---- HTML and SVG ---- */

static void esc(FILE *f, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '<': fputs("&lt;", f); break;
		case '>': fputs("&gt;", f); break;
		case '&': fputs("&amp;", f); break;
		case '"': fputs("&quot;", f); break;
		default: fputc(*s, f);
		}
	}
}

/* A round tick spacing for a range: 1, 2 or 5 times a power of ten, about 5 ticks. */
static double nice_step(double range)
{
	if (!(range > 0))
		return 1;
	double raw = range / 5, p = pow(10, floor(log10(raw))), m = raw / p;
	return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

static void fmt_num(char *b, size_t cap, double v)
{
	double a = fabs(v);
	if (a == 0)
		snprintf(b, cap, "0");
	else if (a >= 1e5 || a < 1e-4)
		snprintf(b, cap, "%.1e", v);
	else
		snprintf(b, cap, "%.4g", v);
}

struct series {
	const char *name, *color;
	int key;      /* M_* */
	double scale; /* value multiplier (bytes -> MiB) */
	bool dots;    /* points as well as the line (eval: few points) */
};

/* One chart: series of rows with their key against step. */
static void chart(FILE *f, const char *title, const char *unit, const struct rows *rs, const struct series *s,
		  int ns)
{
	const double W = 640, H = 260, L = 64, R = 16, T = 30, B = 36;
	double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
	int any = 0;
	for (int k = 0; k < ns; k++)
		for (int64_t i = 0; i < rs->n; i++) {
			double y = rs->r[i].v[s[k].key] * s[k].scale, x = rs->r[i].v[M_STEP];
			if (isnan(y) || !isfinite(y))
				continue;
			any++;
			x0 = fmin(x0, x), x1 = fmax(x1, x), y0 = fmin(y0, y), y1 = fmax(y1, y);
		}
	fprintf(f,
		"<figure><svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %.0f %.0f\" width=\"%.0f\" "
		"height=\"%.0f\" font-family=\"sans-serif\" font-size=\"11\" role=\"img\">\n",
		W, H, W, H);
	fprintf(f, "<text x=\"%.0f\" y=\"18\" font-size=\"13\" font-weight=\"600\">", L);
	esc(f, title);
	fprintf(f, "%s%s</text>\n", unit[0] ? " — " : "", unit);
	if (!any) {
		fprintf(f,
			"<text x=\"%.0f\" y=\"%.0f\" fill=\"#999\">not in metrics.jsonl</text></svg></figure>\n",
			L, H / 2);
		return;
	}
	if (x1 <= x0)
		x1 = x0 + 1;
	if (y1 <= y0) {
		double pad = fabs(y0) > 0 ? fabs(y0) * 0.1 : 1;
		y0 -= pad, y1 += pad;
	}
	double ys = nice_step(y1 - y0), xs = nice_step(x1 - x0);
	if (xs < 1)
		xs = 1;
	y0 = floor(y0 / ys) * ys, y1 = ceil(y1 / ys) * ys;
	double pw = W - L - R, ph = H - T - B;
#define PX(x) (L + ((x)-x0) / (x1 - x0) * pw)
#define PY(y) (T + (1 - ((y)-y0) / (y1 - y0)) * ph)
	char b[32];
	for (double y = y0; y <= y1 + ys * 1e-9; y += ys) {
		fmt_num(b, sizeof b, fabs(y) < ys * 1e-9 ? 0 : y);
		fprintf(f,
			"<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/><text x=\"%.1f\" "
			"y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
			L, PY(y), W - R, PY(y), L - 6, PY(y) + 4, b);
	}
	for (double x = ceil(x0 / xs) * xs; x <= x1 + xs * 1e-9; x += xs) {
		fmt_num(b, sizeof b, x);
		fprintf(f,
			"<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/><text x=\"%.1f\" "
			"y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
			PX(x), T, PX(x), T + ph, PX(x), T + ph + 16, b);
	}
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">step</text>\n", L + pw / 2, H - 3);
	for (int k = 0; k < ns; k++) {
		fprintf(f, "<polyline fill=\"none\" stroke-width=\"1.6\" stroke=\"%s\" points=\"",
			s[k].color);
		int64_t pts = 0;
		for (int64_t i = 0; i < rs->n; i++) {
			double y = rs->r[i].v[s[k].key] * s[k].scale;
			if (isfinite(y))
				fprintf(f, "%s%.1f,%.1f", pts++ ? " " : "", PX(rs->r[i].v[M_STEP]), PY(y));
		}
		fprintf(f, "\"/>\n");
		if (s[k].dots)
			for (int64_t i = 0; i < rs->n; i++) {
				double y = rs->r[i].v[s[k].key] * s[k].scale;
				if (isfinite(y)) {
					fmt_num(b, sizeof b, y);
					fprintf(f,
						"<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"><title>step %.0f: "
						"%s</title></circle>\n",
						PX(rs->r[i].v[M_STEP]), PY(y), s[k].color, rs->r[i].v[M_STEP],
						b);
				}
			}
		if (ns > 1 || s[k].dots)
			fprintf(f,
				"<rect x=\"%.0f\" y=\"%.0f\" width=\"10\" height=\"3\" fill=\"%s\"/><text x=\"%.0f\" "
				"y=\"%.0f\" >%s</text>\n",
				W - R - 130, 12.0 + 14 * k, s[k].color, W - R - 116, 16.0 + 14 * k,
				s[k].name);
	}
#undef PX
#undef PY
	fprintf(f, "</svg></figure>\n");
}

/* The resolved config's top-level "key: value" lines worth a glance, then the whole file. */
static void config_summary(FILE *f, const char *text)
{
	static const char *const keys[] = {"base_model",
					   "adapter",
					   "load_in_4bit",
					   "base_format",
					   "lora_r",
					   "lora_alpha",
					   "lora_dropout",
					   "sequence_len",
					   "sample_packing",
					   "micro_batch_size",
					   "gradient_accumulation_steps",
					   "num_epochs",
					   "max_steps",
					   "max_time",
					   "learning_rate",
					   "lr_scheduler",
					   "warmup_steps",
					   "optimizer",
					   "weight_decay",
					   "backend",
					   "compute_dtype",
					   "seed",
					   NULL};
	fprintf(f, "<table class=\"cfg\">\n");
	for (int k = 0; keys[k]; k++) {
		size_t kl = strlen(keys[k]);
		for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
			if (strncmp(p, keys[k], kl) || p[kl] != ':')
				continue;
			const char *v = p + kl + 1, *e = strchr(v, '\n');
			char val[512];
			size_t n = e ? (size_t)(e - v) : strlen(v);
			snprintf(val, sizeof val, "%.*s", (int)(n < sizeof val ? n : sizeof val - 1), v);
			fprintf(f, "<tr><th>%s</th><td>", keys[k]);
			esc(f, val);
			fprintf(f, "</td></tr>\n");
			break;
		}
	}
	fprintf(f, "</table>\n<details><summary>config.yaml</summary><pre>");
	esc(f, text);
	fprintf(f, "</pre></details>\n");
}

static void summary(FILE *f, const struct rows *rs, bool truncated)
{
	const struct row *first = NULL, *last = NULL, *ev0 = NULL, *ev1 = NULL;
	double tps = 0, pdev = 0, phost = 0;
	int64_t ntps = 0;
	for (int64_t i = 0; i < rs->n; i++) {
		const struct row *r = &rs->r[i];
		if (!isnan(r->v[M_LOSS])) {
			if (!first)
				first = r;
			last = r;
			if (!isnan(r->v[M_TPS]))
				tps += r->v[M_TPS], ntps++;
			if (!isnan(r->v[M_PDEV]))
				pdev = fmax(pdev, r->v[M_PDEV]);
			if (!isnan(r->v[M_PHOST]))
				phost = fmax(phost, r->v[M_PHOST]);
		}
		if (!isnan(r->v[M_EVAL])) {
			if (!ev0)
				ev0 = r;
			ev1 = r;
		}
	}
	fprintf(f, "<table class=\"sum\">\n");
	if (last)
		fprintf(f, "<tr><th>steps</th><td>%.0f (epoch %.3g)</td></tr>\n", last->v[M_STEP],
			last->v[M_EPOCH]);
	if (first && last)
		fprintf(f, "<tr><th>train loss</th><td>%.4f (step %.0f) &rarr; %.4f (step %.0f)</td></tr>\n",
			first->v[M_LOSS], first->v[M_STEP], last->v[M_LOSS], last->v[M_STEP]);
	if (ev0)
		fprintf(f, "<tr><th>eval loss</th><td>%.4f (step %.0f) &rarr; %.4f (step %.0f)</td></tr>\n",
			ev0->v[M_EVAL], ev0->v[M_STEP], ev1->v[M_EVAL], ev1->v[M_STEP]);
	if (ntps)
		fprintf(f, "<tr><th>tokens/s</th><td>%.1f at the last logged step (mean %.1f)</td></tr>\n",
			last->v[M_TPS], tps / (double)ntps);
	if (last && !isnan(last->v[M_ELAPSED]))
		fprintf(f, "<tr><th>training time</th><td>%.1f s</td></tr>\n", last->v[M_ELAPSED]);
	if (pdev > 0 || phost > 0)
		fprintf(f, "<tr><th>peak memory</th><td>device %.1f MiB, host %.1f MiB</td></tr>\n",
			pdev / 1048576.0, phost / 1048576.0);
	if (truncated)
		fprintf(f, "<tr><th>note</th><td>the last line of metrics.jsonl was cut off (a killed run); "
			   "it is left out</td></tr>\n");
	fprintf(f, "</table>\n");
}

enum tern_status tern_report(const char *dir, struct tern_report_result *res)
{
	memset(res, 0, sizeof *res);
	char path[4200], tmp[4300], cpath[4200];
	snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
	struct rows rs = {0};
	bool truncated = false;
	char *cfg = NULL;
	FILE *f = NULL;
	enum tern_status st = load_metrics(path, &rs, &truncated);
	if (st)
		goto out;
	snprintf(cpath, sizeof cpath, "%s/config.yaml", dir);
	size_t clen;
	cfg = read_all(cpath, &clen);
	snprintf(res->path, sizeof res->path, "%s/report.html", dir);
	snprintf(tmp, sizeof tmp, "%s.tmp.%ld", res->path, (long)getpid());
	if (!(f = fopen(tmp, "w"))) {
		st = tern_fail(TERN_E_IO, "cannot write %s: %s", tmp, strerror(errno));
		goto out;
	}
	fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>tern run: ");
	esc(f, dir);
	fprintf(f,
		"</title>\n<style>\n"
		"body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1340px}\n"
		"figure{display:inline-block;margin:0 12px 12px 0;border:1px solid #ddd;border-radius:4px}\n"
		"table{border-collapse:collapse;margin:8px 0 16px}\n"
		"th,td{text-align:left;padding:2px 12px 2px 0;vertical-align:top} th{font-weight:600}\n"
		"pre{background:#f6f6f6;padding:8px;overflow:auto}\n</style></head><body>\n<h1>tern run: ");
	esc(f, dir);
	fprintf(f, "</h1>\n");
	summary(f, &rs, truncated);
	const struct series loss[] = {{"train loss", "#1f77b4", M_LOSS, 1, false},
				      {"eval loss", "#d62728", M_EVAL, 1, true}};
	const struct series lr[] = {{"lr", "#2ca02c", M_LR, 1, false}};
	const struct series gn[] = {{"grad norm", "#9467bd", M_GNORM, 1, false}};
	const struct series tps[] = {{"tokens/s", "#ff7f0e", M_TPS, 1, false}};
	const struct series mem[] = {{"device (peak)", "#8c564b", M_PDEV, 1.0 / 1048576, false},
				     {"host RSS (peak)", "#17becf", M_PHOST, 1.0 / 1048576, false}};
	chart(f, "loss", "", &rs, loss, 2);
	chart(f, "learning rate", "", &rs, lr, 1);
	chart(f, "grad norm", "before clipping", &rs, gn, 1);
	chart(f, "throughput", "tokens/s", &rs, tps, 1);
	chart(f, "memory", "MiB", &rs, mem, 2);
	fprintf(f, "<h2>config</h2>\n");
	if (cfg)
		config_summary(f, cfg);
	else
		fprintf(f, "<p>no config.yaml in this directory</p>\n");
	fprintf(f,
		"<p><small>written by tern report from metrics.jsonl (%lld lines)</small></p>\n</body></html>\n",
		(long long)rs.n);
	bool ok = !ferror(f);
	ok = fclose(f) == 0 && ok;
	f = NULL;
	if (!ok || rename(tmp, res->path) != 0) {
		st = tern_fail(TERN_E_IO, "cannot write %s: %s", res->path, strerror(errno));
		remove(tmp);
		goto out;
	}
	for (int64_t i = 0; i < rs.n; i++) {
		res->steps += !isnan(rs.r[i].v[M_LOSS]);
		res->evals += !isnan(rs.r[i].v[M_EVAL]);
	}
	res->truncated = truncated;
out:
	if (f) {
		fclose(f);
		remove(tmp);
	}
	free(cfg);
	free(rs.r);
	return st;
}
