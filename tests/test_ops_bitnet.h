/* test_ops: BitNet's per-token 8-bit activation fake-quantization (act_quant8) on every backend
 * against the double-precision definition: per row, the level of each output,
 * rint(y · 127 / max(absmax, 1e-5)), must equal the double oracle's rint(x · 127 / m) except where
 * x · 127 / m lies within 1e-4 of a half (there fp32's rounding of the scale may pick the other
 * level), and the value must be that level · m / 127 to fp32 accuracy. Rows of zeros, a row below
 * the 1e-5 floor, a row whose absmax is negative, in place (y = x: the same bits as out of place),
 * and the same bits twice. Included by test_ops.c. */

static void check_act_quant8(struct suite *s, int64_t T, int64_t I, const char *variant)
{
	struct chk c;
	chk_begin(&c, s, "act_quant8", "T=%lld I=%lld%s%s", (long long)T, (long long)I, variant ? " " : "",
		  variant ? variant : "");
	if (skip_unsupported(&c, TERN_OP_ACT_QUANT8, TERN_F32))
		return;
	int64_t n = T * I;
	float *x = fvec(n), *g1 = fvec(n), *g2 = fvec(n), *g3 = fvec(n);
	if (!x || !g1 || !g2 || !g3) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, x, n, 3.0);
	for (int64_t t = 0; t < T; t++) {
		float *xt = x + t * I;
		if (t % 5 == 1) /* all zero: y = 0 */
			for (int64_t i = 0; i < I; i++)
				xt[i] = 0.0f;
		if (t % 5 == 2) /* under the 1e-5 floor of the max */
			for (int64_t i = 0; i < I; i++)
				xt[i] *= 1e-6f;
		if (t % 5 == 3) /* the absmax element negative */
			xt[(t * 7) % I] = -4.0f;
	}
	struct dten *dx = dt_new(&c, "x", (size_t)n * 4, x), *dy = dt_nan(&c, "y", n);
	if (!dx || !dy)
		goto out;
	if (bad(&c, tern_act_quant8(s->be, dy->v, dx->v, T, I), "act_quant8") || !dt_get(&c, dy, g1))
		goto out;
	if (bad(&c, tern_act_quant8(s->be, dy->v, dx->v, T, I), "act_quant8 again") || !dt_get(&c, dy, g2))
		goto out;
	if (memcmp(g1, g2, (size_t)n * 4) != 0)
		fail(&c, "a second call gave different bits");
	dt_unchanged(&c, dx, x);
	for (int64_t t = 0; t < T && !c.why[0]; t++) {
		const float *xt = x + t * I, *yt = g1 + t * I;
		double m = 0.0;
		for (int64_t i = 0; i < I; i++)
			m = fmax(m, fabs((double)xt[i]));
		m = fmax(m, 1e-5);
		for (int64_t i = 0; i < I; i++) {
			double v = (double)xt[i] * 127.0 / m, want = fmin(fmax(rint(v), -128.0), 127.0);
			double lvl = rint((double)yt[i] * 127.0 / m);
			bool near_half = fabs(fabs(v - floor(v)) - 0.5) < 1e-4;
			double e = fabs((double)yt[i] - lvl * m / 127.0) / m;
			if (!isfinite(yt[i]) || (lvl != want && !(near_half && fabs(lvl - want) == 1.0)) ||
			    e > 1e-6) {
				fail(&c, "y[%lld,%lld] = %.9g from x = %.9g (absmax %.9g): level %g, want %g",
				     (long long)t, (long long)i, (double)yt[i], (double)xt[i], m, lvl, want);
				break;
			}
			c.err = fmax(c.err, e);
		}
	}
	/* in place: y = x gives the same bits */
	if (!c.why[0]) {
		if (bad(&c, tern_act_quant8(s->be, dx->v, dx->v, T, I), "act_quant8 in place") ||
		    !dt_get(&c, dx, g3))
			goto out;
		if (memcmp(g1, g3, (size_t)n * 4) != 0)
			fail(&c, "in place (y = x) gave other bits than out of place");
	}
	/* a y that overlaps x without being x is refused */
	if (!c.why[0] && n > 1) {
		struct tern_view ov = tern_view_sub(dx->v, 4, (size_t)(n - 1) * 4);
		struct tern_view xv = tern_view_sub(dx->v, 0, (size_t)(n - 1) * 4);
		if (tern_act_quant8(s->be, ov, xv, 1, n - 1) != TERN_E_INVALID)
			fail(&c, "an overlapping y was not refused");
	}
out:
	free(x);
	free(g1);
	free(g2);
	free(g3);
	chk_end(&c);
}

static void check_bitnet_all(struct suite *s)
{
	static const int64_t sh[][2] = {{1, 1}, {5, 33}, {17, 300}, {6, 1030}, {0, 8}, {11, 4099}};
	for (int k = 0; k < 6; k++)
		check_act_quant8(s, sh[k][0], sh[k][1], NULL);
	if (!s->is_cpu) { /* the tree-max variant, which GPUs run, on lavapipe too */
		setenv("TERN_VK_VARIANT", "tiled", 1);
		for (int k = 0; k < 6; k++)
			check_act_quant8(s, sh[k][0], sh[k][1], "tiled");
		unsetenv("TERN_VK_VARIANT");
	}
}
