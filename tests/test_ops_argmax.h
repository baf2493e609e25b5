/* test_ops: argmax (backend.h), the index of each row's largest value, against the contract's
 * loop (`best = 0; for i: if (x[i] > x[best]) best = i`) on rows built to catch what a parallel
 * reduction gets wrong: the maximum first, last, in the middle, tied (the first must win, also
 * across threads), NaN at the start (0) and elsewhere (never wins), -inf, a row of one value. */
#ifndef TERN_TEST_OPS_ARGMAX_H
#define TERN_TEST_OPS_ARGMAX_H

static int32_t argmax_oracle(const float *x, int64_t n)
{
	int64_t best = 0;
	for (int64_t i = 1; i < n; i++)
		if (x[i] > x[best])
			best = i;
	return (int32_t)best;
}

static void check_argmax(struct suite *s, int64_t rows, int64_t n)
{
	struct chk c;
	chk_begin(&c, s, "argmax", "rows=%lld n=%lld", (long long)rows, (long long)n);
	if (skip_unsupported(&c, TERN_OP_ARGMAX, TERN_F32))
		return;
	float *x = fvec(rows * n);
	int32_t *got = calloc((size_t)rows + 1, 4);
	if (!x || !got) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, x, rows * n, 1.0);
	for (int64_t r = 0; r < rows; r++) {
		float *xr = x + r * n;
		int64_t a = (r * 7919) % n, b = (a + n / 2 + 1) % n;
		switch (r % 9) {
		case 0: xr[n - 1] = 2.0f; break;          /* the last */
		case 1: xr[0] = 2.0f; break;              /* the first */
		case 2: xr[a] = xr[b] = 2.0f; break;      /* tied: the smaller index */
		case 3: xr[0] = NAN, xr[a] = 2.0f; break; /* NaN first: 0 */
		case 4: xr[a] = NAN, xr[b] = 2.0f; break; /* NaN elsewhere: ignored */
		case 5:                                   /* all -inf but one NaN */
			for (int64_t i = 0; i < n; i++)
				xr[i] = -INFINITY;
			xr[b] = NAN;
			break;
		case 6: /* one value throughout: 0 */
			for (int64_t i = 0; i < n; i++)
				xr[i] = 0.5f;
			break;
		case 7: xr[a] = 2.0f, xr[(a + 255) % n] = 2.0f, xr[(a + 257) % n] = 2.0f; break;
		default: xr[a] = 2.0f; break;
		}
	}
	struct dten *dx = dt_new(&c, "x", (size_t)(rows * n) * 4, x), *dout = dt_nan(&c, "out", rows);
	if (!dx || !dout)
		goto out;
	if (bad(&c, tern_argmax(s->be, dout->v, dx->v, rows, n), "argmax") || !dt_get(&c, dout, got))
		goto out;
	dt_unchanged(&c, dx, x);
	for (int64_t r = 0; r < rows && !c.why[0]; r++) {
		int32_t want = argmax_oracle(x + r * n, n);
		if (got[r] != want)
			fail(&c, "row %lld: index %d, want %d", (long long)r, got[r], want);
	}
	if (!c.why[0] && tern_argmax(s->be, dout->v, dx->v, rows, 0) != TERN_E_INVALID)
		fail(&c, "n = 0 was not refused");
out:
	free(x);
	free(got);
	chk_end(&c);
}

static void check_argmax_all(struct suite *s)
{
	static const int64_t sh[][2] = {{1, 1}, {9, 7}, {18, 300}, {9, 1000}, {2, 128256}, {0, 5}};
	for (size_t k = 0; k < sizeof sh / sizeof sh[0]; k++)
		check_argmax(s, sh[k][0], sh[k][1]);
}

#endif
