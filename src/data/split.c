/* datasets[].split: a split name and a slice of its rows, read as the datasets library reads
 * "train[:20%]" (contract in train/config.h). */
#include "train/config.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* [-]digits, then an optional '%'; *p advances past what was read. */
static bool bound(const char **p, int64_t *v, bool *pct)
{
	const char *s = *p;
	bool neg = *s == '-';
	s += neg;
	if (!isdigit((unsigned char)*s))
		return false;
	int64_t x = 0;
	for (; isdigit((unsigned char)*s); s++) {
		if (x > (INT64_MAX - 9) / 10)
			return false;
		x = x * 10 + (*s - '0');
	}
	*pct = *s == '%';
	s += *pct;
	*v = neg ? -x : x;
	*p = s;
	return true;
}

bool tern_split_parse(const char *s, struct tern_split *out)
{
	memset(out, 0, sizeof *out);
	size_t n = 0;
	while (isalnum((unsigned char)s[n]) || s[n] == '_')
		n++;
	if (n == 0 || n >= sizeof out->name)
		return false;
	memcpy(out->name, s, n);
	const char *p = s + n;
	if (!*p)
		return true;
	if (*p++ != '[')
		return false;
	bool fp = false, tp = false;
	if (*p != ':') {
		if (!bound(&p, &out->from, &fp))
			return false;
		out->has_from = true;
	}
	if (*p++ != ':')
		return false;
	if (*p != ']') {
		if (!bound(&p, &out->to, &tp))
			return false;
		out->has_to = true;
	}
	if (*p++ != ']' || *p)
		return false;
	out->pct = fp || tp; /* one '%' makes both bounds percentages, as in the datasets library */
	if (out->pct && (out->from < -100 || out->from > 100 || out->to < -100 || out->to > 100))
		return false;
	return true;
}

static int64_t pct_rows(int64_t pct, int64_t n)
{
	/* Python's round(): halves to even, as nearbyint in the default rounding mode */
	return (int64_t)nearbyint((double)pct * (double)n / 100.0);
}

void tern_split_rows(const struct tern_split *sp, int64_t n, int64_t *a, int64_t *b)
{
	int64_t from = 0, to = n;
	if (sp->has_from)
		from = sp->pct ? pct_rows(sp->from, n) : sp->from;
	if (sp->has_to)
		to = sp->pct ? pct_rows(sp->to, n) : sp->to;
	if (from < 0)
		from = n + from > 0 ? n + from : 0;
	if (to < 0)
		to = n + to > 0 ? n + to : 0;
	*a = from < n ? from : n;
	*b = to < n ? to : n;
	if (*b < *a)
		*b = *a;
}
