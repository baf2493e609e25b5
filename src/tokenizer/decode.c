/* Decoders: token strings → text, each step rewriting the token list as HF tokenizers does. */
#include "tokenizer/tok.h"

#include <stdlib.h>
#include <string.h>

/* "<0xNN>" (hex digits in either case, as Rust's from_str_radix reads them) → byte, or -1. */
static int byte_token(const char *s, size_t n)
{
	if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>')
		return -1;
	int v = 0, digits = 0;
	for (int i = 3; i < 5; i++) {
		char c = s[i];
		int d = c >= '0' && c <= '9'   ? c - '0'
			: c >= 'a' && c <= 'f' ? c - 'a' + 10
			: c >= 'A' && c <= 'F' ? c - 'A' + 10
					       : -1;
		if (d < 0) {
			if (i == 3 && c == '+')
				continue;
			return -1;
		}
		v = v * 16 + d;
		digits++;
	}
	return digits ? v : -1;
}

static enum tern_status step(const struct tok_dec *d, pcre2_match_data *md, const struct tok_pieces *in,
			     struct tok_pieces *out)
{
	enum tern_status st = TERN_OK;
	struct tok_buf b = {0};
	tok_pieces_clear(out);
	switch (d->kind) {
	case TOK_D_REPLACE:
		for (size_t i = 0; i < in->n && !st; i++) {
			b.len = 0;
			st = tok_pattern_replace(&d->pat, md, in->buf.p + in->off[i], in->len[i], d->str,
						 d->str_len, &b);
			if (!st)
				st = tok_pieces_add(out, b.p ? b.p : "", b.len);
		}
		break;
	case TOK_D_BYTEFALLBACK:
		/* Runs of <0xNN> become their UTF-8 text, or one U+FFFD per byte if invalid. */
		for (size_t i = 0; i <= in->n && !st; i++) {
			const char *s = i < in->n ? in->buf.p + in->off[i] : NULL;
			int v = s ? byte_token(s, in->len[i]) : -1;
			if (v >= 0) {
				unsigned char c = (unsigned char)v;
				st = tok_buf_add(&b, &c, 1);
				continue;
			}
			if (b.len) {
				if (tok_utf8_valid(b.p, b.len)) {
					st = tok_pieces_add(out, b.p, b.len);
				} else {
					for (size_t k = 0; k < b.len && !st; k++)
						st = tok_pieces_add(out, "\xef\xbf\xbd", 3);
				}
				b.len = 0;
			}
			if (s && !st)
				st = tok_pieces_add(out, s, in->len[i]);
		}
		break;
	case TOK_D_FUSE:
		st = tok_pieces_add(out, in->buf.p ? in->buf.p : "", 0);
		for (size_t i = 0; i < in->n && !st; i++)
			st = tok_pieces_extend(out, in->buf.p + in->off[i], in->len[i]);
		break;
	case TOK_D_STRIP:
		for (size_t i = 0; i < in->n && !st; i++) {
			const char *s = in->buf.p + in->off[i];
			size_t a = 0, e = in->len[i], c = d->str_len;
			for (int k = 0; k < d->start && c && a + c <= e && !memcmp(s + a, d->str, c); k++)
				a += c;
			for (int k = 0; k < d->stop && c && e >= a + c && !memcmp(s + e - c, d->str, c); k++)
				e -= c;
			st = tok_pieces_add(out, s + a, e - a);
		}
		break;
	case TOK_D_METASPACE:
		/* In the first token every replacement char goes (HF does so when prepending). */
		for (size_t i = 0; i < in->n && !st; i++) {
			const char *s = in->buf.p + in->off[i];
			size_t n = in->len[i], r = d->repl_len;
			bool drop = i == 0 && d->prepend != TOK_PREPEND_NEVER;
			b.len = 0;
			for (size_t k = 0; k < n && !st;) {
				if (r && k + r <= n && !memcmp(s + k, d->repl, r)) {
					if (!drop)
						st = tok_buf_add(&b, " ", 1);
					k += r;
				} else {
					st = tok_buf_add(&b, s + k, 1);
					k++;
				}
			}
			if (!st)
				st = tok_pieces_add(out, b.p ? b.p : "", b.len);
		}
		break;
	case TOK_D_BYTELEVEL:
		/* All tokens → bytes (a token with a char outside the table keeps its own bytes). */
		for (size_t i = 0; i < in->n && !st; i++) {
			const unsigned char *s = (const unsigned char *)in->buf.p + in->off[i];
			size_t n = in->len[i], mark = b.len;
			for (size_t k = 0; k < n && !st;) {
				int32_t cp;
				size_t kl = tok_utf8_len(s + k, n - k);
				int byte = -1;
				if (kl) {
					tok_utf8_decode(s + k, &cp);
					byte = tok_char_byte(cp);
				}
				if (byte < 0) {
					b.len = mark;
					st = tok_buf_add(&b, s, n);
					break;
				}
				unsigned char c = (unsigned char)byte;
				st = tok_buf_add(&b, &c, 1);
				k += kl;
			}
		}
		if (!st) {
			struct tok_buf txt = {0};
			st = tok_utf8_lossy(&txt, b.p ? b.p : "", b.len);
			if (!st)
				st = tok_pieces_add(out, txt.p ? txt.p : "", txt.len);
			free(txt.p);
		}
		break;
	}
	free(b.p);
	return st;
}

enum tern_status tok_decode_chain(const struct tern_tokenizer *t, pcre2_match_data *md,
				  struct tok_pieces *toks, struct tok_buf *out)
{
	enum tern_status st = TERN_OK;
	struct tok_pieces tmp = {0};
	for (int i = 0; i < t->n_dec && !st; i++) {
		st = step(&t->dec[i], md, toks, &tmp);
		struct tok_pieces x = *toks;
		*toks = tmp;
		tmp = x;
	}
	/* Without a decoder HF joins the tokens with spaces. */
	for (size_t i = 0; i < toks->n && !st; i++) {
		if (!t->has_decoder && i)
			st = tok_buf_add(out, " ", 1);
		if (!st)
			st = tok_buf_add(out, toks->buf.p + toks->off[i], toks->len[i]);
	}
	if (!st && !out->p)
		st = tok_buf_add(out, "", 0);
	tok_pieces_free(&tmp);
	return st;
}
