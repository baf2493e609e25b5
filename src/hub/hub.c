/* Hub ids: the Hugging Face cache layout and downloads into it (include/tern/hub.h).
 *
 * A download follows huggingface_hub's protocol, so both programs share one cache:
 *	HEAD {endpoint}/{org/name}/resolve/{revision}/{file}   (redirects not followed)
 *		X-Repo-Commit             the commit the revision names: snapshots/<commit>
 *		X-Linked-Etag or ETag     the blob name (an LFS file's is the sha256 of its contents)
 *		X-Linked-Size or Content-Length
 *		X-Error-Code              RepoNotFound, GatedRepo, RevisionNotFound, EntryNotFound
 *	GET  the same URL, redirects followed (LFS files live on a CDN), into
 *	     blobs/<etag>.incomplete, resumed with "Range: bytes=N-" after a dropped connection
 *	then blobs/<etag>.incomplete -> blobs/<etag>, snapshots/<commit>/<file> -> ../../blobs/<etag>
 *	(a symlink; a copy where the file system has none), refs/<revision> = <commit>, and an empty
 *	.no_exist/<commit>/<file> for an optional file the repository lacks.
 * Concurrent downloads of one blob are serialised by flock on <cache>/.locks/<repo>/<etag>.lock. */
#define _DEFAULT_SOURCE
#define _POSIX_C_SOURCE 200809L
#include "core/sha256.h"
#include "tern/hub.h"
#include "core/core.h"

#include <curl/curl.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define PATH_CAP 4096
#define ATTEMPTS 5 /* GETs of one file before giving up (each resumes the last) */

static tern_hub_progress_fn g_progress;
static void *g_progress_user;

void tern_hub_set_progress(tern_hub_progress_fn fn, void *user)
{
	g_progress = fn;
	g_progress_user = user;
}

/* ---- environment ---- */

static const char *env(const char *name)
{
	const char *v = getenv(name);
	return v && *v ? v : NULL;
}

/* huggingface_hub's truth values */
static bool truthy(const char *v)
{
	return v && (!strcasecmp(v, "1") || !strcasecmp(v, "on") || !strcasecmp(v, "yes") ||
		     !strcasecmp(v, "true"));
}

/* snprintf that says whether the text fit (being a wrapper, it is also spared gcc's truncation
 * warnings: every caller checks) */
static bool fmt(char *buf, size_t cap, const char *f, ...) TERN_PRINTF(3, 4);
static bool fmt(char *buf, size_t cap, const char *f, ...)
{
	va_list ap;
	va_start(ap, f);
	int n = vsnprintf(buf, cap, f, ap);
	va_end(ap);
	return n >= 0 && (size_t)n < cap;
}

static bool put(char *buf, size_t cap, const char *a, const char *b) { return fmt(buf, cap, "%s%s", a, b); }

/* $HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface */
static bool hf_home(char *buf, size_t cap)
{
	const char *v;
	if ((v = env("HF_HOME")))
		return put(buf, cap, v, "");
	if ((v = env("XDG_CACHE_HOME")))
		return put(buf, cap, v, "/huggingface");
	if ((v = env("HOME")))
		return put(buf, cap, v, "/.cache/huggingface");
	return false;
}

bool tern_hub_cache_dir(char *buf, size_t cap)
{
	const char *v;
	if ((v = env("HF_HUB_CACHE")) || (v = env("HUGGINGFACE_HUB_CACHE")))
		return put(buf, cap, v, "");
	char home[PATH_CAP];
	return hf_home(home, sizeof home) && put(buf, cap, home, "/hub");
}

/* $HF_TOKEN (or the older $HUGGING_FACE_HUB_TOKEN), else the first line of $HF_TOKEN_PATH or
 * $HF_HOME/token; "" when none. *from names where it came from, for messages. */
static void read_token(char *buf, size_t cap, const char **from)
{
	const char *v;
	buf[0] = 0;
	*from = NULL;
	if ((v = env("HF_TOKEN")) || (v = env("HUGGING_FACE_HUB_TOKEN"))) {
		snprintf(buf, cap, "%s", v);
		*from = env("HF_TOKEN") ? "HF_TOKEN" : "HUGGING_FACE_HUB_TOKEN";
	} else {
		char path[PATH_CAP], home[PATH_CAP];
		if ((v = env("HF_TOKEN_PATH")))
			put(path, sizeof path, v, "");
		else if (!hf_home(home, sizeof home) || !put(path, sizeof path, home, "/token"))
			return;
		FILE *f = fopen(path, "r");
		if (!f)
			return;
		if (!fgets(buf, (int)cap, f))
			buf[0] = 0;
		fclose(f);
		*from = "the token file";
	}
	size_t n = strlen(buf);
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
		buf[--n] = 0;
	if (!n)
		*from = NULL;
}

/* ---- names ---- */

static bool id_part(const char *s, size_t n)
{
	if (!n || n > 96 || s[0] == '-' || s[0] == '.' || s[n - 1] == '-' || s[n - 1] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			  c == '-' || c == '_' || c == '.';
		if (!ok || (i && (c == '-' || c == '.') && s[i - 1] == c))
			return false;
	}
	return true;
}

bool tern_hub_is_id(const char *s)
{
	const char *slash = s ? strchr(s, '/') : NULL;
	return slash && !strchr(slash + 1, '/') && strlen(s) <= 96 && id_part(s, (size_t)(slash - s)) &&
	       id_part(slash + 1, strlen(slash + 1));
}

static bool is_commit(const char *s)
{
	size_t n = 0;
	for (; s[n]; n++)
		if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
			return false;
	return n == 40;
}

/* A relative path inside a repository or the cache: no "..", no empty or absolute parts, no
 * control characters. Revisions ("main", "refs/pr/1"), file names and etags pass through it. */
static bool safe_rel(const char *s)
{
	if (!*s || *s == '/' || strlen(s) > 512)
		return false;
	for (const char *p = s; *p; p++)
		if ((unsigned char)*p < 32 || *p == '\\')
			return false;
	for (const char *p = s;;) {
		const char *e = strchr(p, '/');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		if (!n || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
			return false;
		if (!e)
			return true;
		p = e + 1;
	}
}

/* ---- files ---- */

static bool is_file(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static bool is_dir(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static enum tern_status mkdirs(const char *path)
{
	char p[PATH_CAP];
	if (!put(p, sizeof p, path, ""))
		return tern_fail(TERN_E_IO, "%s: path too long", path);
	for (char *s = p + 1;; s++) {
		char c = *s;
		if (c != '/' && c)
			continue;
		*s = 0;
		if (mkdir(p, 0755) != 0 && errno != EEXIST)
			return tern_fail(TERN_E_IO, "%s: cannot create the directory: %s", p,
					 strerror(errno));
		*s = c;
		if (!c)
			return TERN_OK;
	}
}

/* the directory part of path */
static enum tern_status mkparent(const char *path)
{
	char p[PATH_CAP];
	if (!put(p, sizeof p, path, ""))
		return tern_fail(TERN_E_IO, "%s: path too long", path);
	char *slash = strrchr(p, '/');
	if (slash && slash != p)
		*slash = 0;
	return mkdirs(p);
}

/* Writes text to path through a temporary file renamed over it. */
static enum tern_status write_small(const char *path, const char *text)
{
	char tmp[PATH_CAP + 32];
	enum tern_status st = mkparent(path);
	if (st)
		return st;
	snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
	FILE *f = fopen(tmp, "w");
	if (!f)
		return tern_fail(TERN_E_IO, "%s: cannot write: %s", tmp, strerror(errno));
	bool ok = fputs(text, f) >= 0;
	ok &= fclose(f) == 0;
	if (!ok || rename(tmp, path) != 0) {
		int e = errno;
		unlink(tmp);
		return tern_fail(TERN_E_IO, "%s: cannot write: %s", path, strerror(e));
	}
	return TERN_OK;
}

/* ---- one repository ---- */

struct hub {
	const char *id;       /* org/name */
	const char *revision; /* as asked: a branch, tag or commit */
	char cache[PATH_CAP];
	char repo[PATH_CAP]; /* <cache>/models--org--name */
	char commit[41];     /* "" until known */
	char endpoint[1024];
	char token[1024];
	const char *token_from; /* NULL: no token */
	bool ref_written;
	bool unreachable;  /* a request failed for the network, not for an HTTP answer */
	char net_msg[256]; /* libcurl's reason */
	CURL *curl;
};

/* <repo>/<a>/<b> (b may be NULL) */
static bool repo_path(const struct hub *h, char *buf, size_t cap, const char *a, const char *b)
{
	int n = b ? snprintf(buf, cap, "%s/%s/%s", h->repo, a, b) : snprintf(buf, cap, "%s/%s", h->repo, a);
	return n > 0 && (size_t)n < cap;
}

/* snapshots/<commit>/<file> */
static bool snap_path(const struct hub *h, char *buf, size_t cap, const char *file)
{
	return fmt(buf, cap, "%s/snapshots/%s/%s", h->repo, h->commit, file);
}

static bool no_exist(const struct hub *h, const char *file)
{
	char p[PATH_CAP];
	int n = snprintf(p, sizeof p, "%s/.no_exist/%s/%s", h->repo, h->commit, file);
	struct stat st;
	return n > 0 && (size_t)n < sizeof p && stat(p, &st) == 0;
}

/* refs/<revision> into h->commit (or the revision itself when it is a commit); false if none */
static bool read_ref(struct hub *h)
{
	if (is_commit(h->revision)) {
		snprintf(h->commit, sizeof h->commit, "%s", h->revision);
		return true;
	}
	char p[PATH_CAP], line[64] = "";
	if (!repo_path(h, p, sizeof p, "refs", h->revision))
		return false;
	FILE *f = fopen(p, "r");
	if (!f)
		return false;
	if (!fgets(line, sizeof line, f))
		line[0] = 0;
	fclose(f);
	line[strcspn(line, " \r\n\t")] = 0;
	if (!is_commit(line))
		return false;
	snprintf(h->commit, sizeof h->commit, "%s", line);
	return true;
}

/* The shards listed in the weight_map of an index file (distinct, in first-seen order). */
static enum tern_status read_index(const char *path, char ***out, int *n_out)
{
	json_error_t err;
	json_t *root = json_load_file(path, 0, &err);
	char **list = NULL;
	int n = 0;
	enum tern_status st = TERN_OK;
	json_t *map = root ? json_object_get(root, "weight_map") : NULL;
	if (!json_is_object(map)) {
		st = tern_fail(TERN_E_FORMAT, "%s: %s", path, root ? "no weight_map object" : err.text);
		goto out;
	}
	const char *key;
	json_t *v;
	list = calloc(json_object_size(map) + 1, sizeof *list);
	if (!list) {
		st = tern_fail(TERN_E_NOMEM, "out of host memory");
		goto out;
	}
	json_object_foreach(map, key, v)
	{
		const char *s = json_string_value(v);
		if (!s || !safe_rel(s)) {
			st = tern_fail(TERN_E_FORMAT,
				       "%s: weight_map.%s: '%s' is not a file name in the repository", path,
				       key, s ? s : "(not a string)");
			goto out;
		}
		bool seen = false;
		for (int i = 0; i < n && !seen; i++)
			seen = !strcmp(list[i], s);
		if (!seen && !(list[n++] = strdup(s))) {
			st = tern_fail(TERN_E_NOMEM, "out of host memory");
			goto out;
		}
	}
	*out = list;
	*n_out = n;
	list = NULL;
out:
	if (list)
		for (int i = 0; i < n; i++)
			free(list[i]);
	free(list);
	json_decref(root);
	return st;
}

static void free_list(char **list, int n)
{
	for (int i = 0; list && i < n; i++)
		free(list[i]);
	free(list);
}

static const char *const tokenizer_files[] = {"tokenizer.json", "tokenizer_config.json",
					      "special_tokens_map.json", "generation_config.json"};

/* Whether snapshots/<commit> holds what need asks for; else the first missing file in missing.
 * strict: the optional (tokenizer) files must be present or recorded in .no_exist (online: else
 * they are asked for); not strict (offline): they may be absent. */
static bool snapshot_complete(struct hub *h, unsigned need, bool strict, char *missing, size_t cap)
{
	char p[PATH_CAP];
	if ((need & TERN_HUB_CONFIG) && (!snap_path(h, p, sizeof p, "config.json") || !is_file(p))) {
		snprintf(missing, cap, "config.json");
		return false;
	}
	if (need & TERN_HUB_TOKENIZER)
		for (size_t i = 0; strict && i < sizeof tokenizer_files / sizeof *tokenizer_files; i++)
			if (!snap_path(h, p, sizeof p, tokenizer_files[i]) ||
			    (!is_file(p) && !no_exist(h, tokenizer_files[i]))) {
				snprintf(missing, cap, "%s", tokenizer_files[i]);
				return false;
			}
	if (!(need & TERN_HUB_WEIGHTS))
		return true;
	if (snap_path(h, p, sizeof p, "model.safetensors") && is_file(p))
		return true;
	if (!snap_path(h, p, sizeof p, "model.safetensors.index.json") || !is_file(p)) {
		snprintf(missing, cap, "model.safetensors");
		return false;
	}
	char **shards = NULL;
	int n = 0;
	if (read_index(p, &shards, &n) != TERN_OK) {
		snprintf(missing, cap, "a readable model.safetensors.index.json");
		return false;
	}
	bool ok = true;
	for (int i = 0; i < n && ok; i++)
		if (!snap_path(h, p, sizeof p, shards[i]) || !is_file(p)) {
			snprintf(missing, cap, "%s", shards[i]);
			ok = false;
		}
	free_list(shards, n);
	return ok;
}

/* ---- HTTP ---- */

struct meta {
	long status;
	char commit[64];
	char etag[160];        /* X-Linked-Etag, else ETag (quotes and W/ removed) */
	char linked_etag[160]; /* X-Linked-Etag as sent */
	uint64_t size;         /* X-Linked-Size, else Content-Length; 0 unknown */
	uint64_t linked_size;
	char error_code[64]; /* X-Error-Code */
	char location[2048];
	int64_t range_start; /* Content-Range of a 206: its first byte; -1 none */
};

/* copies a header value, without surrounding spaces and quotes and a W/ prefix */
static void header_value(char *dst, size_t cap, const char *v, size_t n, bool etag)
{
	while (n && (*v == ' ' || *v == '\t'))
		v++, n--;
	while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' '))
		n--;
	if (etag && n >= 2 && v[0] == 'W' && v[1] == '/')
		v += 2, n -= 2;
	if (etag && n >= 2 && v[0] == '"' && v[n - 1] == '"')
		v++, n -= 2;
	if (n >= cap)
		n = cap - 1;
	memcpy(dst, v, n);
	dst[n] = 0;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *user)
{
	struct meta *m = user;
	size_t n = size * nitems;
	if (n >= 5 && !strncmp(buf, "HTTP/", 5)) { /* a new response (after a redirect): start over */
		memset(m, 0, sizeof *m);
		m->range_start = -1;
		const char *sp = memchr(buf, ' ', n);
		if (sp)
			m->status = strtol(sp + 1, NULL, 10);
		return n;
	}
	const char *colon = memchr(buf, ':', n);
	if (!colon)
		return n;
	size_t kl = (size_t)(colon - buf);
	const char *v = colon + 1;
	size_t vl = n - kl - 1;
	char tmp[64];
#define KEY(k) (kl == strlen(k) && !strncasecmp(buf, k, kl))
	if (KEY("X-Repo-Commit"))
		header_value(m->commit, sizeof m->commit, v, vl, false);
	else if (KEY("X-Linked-Etag"))
		header_value(m->linked_etag, sizeof m->linked_etag, v, vl, true);
	else if (KEY("ETag"))
		header_value(m->etag, sizeof m->etag, v, vl, true);
	else if (KEY("X-Linked-Size")) {
		header_value(tmp, sizeof tmp, v, vl, false);
		m->linked_size = strtoull(tmp, NULL, 10);
	} else if (KEY("Content-Length")) {
		header_value(tmp, sizeof tmp, v, vl, false);
		m->size = strtoull(tmp, NULL, 10);
	} else if (KEY("X-Error-Code"))
		header_value(m->error_code, sizeof m->error_code, v, vl, false);
	else if (KEY("Location"))
		header_value(m->location, sizeof m->location, v, vl, false);
	else if (KEY("Content-Range")) { /* bytes START-END/TOTAL */
		header_value(tmp, sizeof tmp, v, vl, false);
		if (!strncmp(tmp, "bytes ", 6))
			m->range_start = strtoll(tmp + 6, NULL, 10);
	}
#undef KEY
	return n;
}

/* {endpoint}/{id}/resolve/{revision}/{file}, the revision and each part of file URL-escaped */
static bool make_url(struct hub *h, const char *revision, const char *file, char *buf, size_t cap)
{
	char *rev = curl_easy_escape(h->curl, revision, 0);
	if (!rev)
		return false;
	int n = snprintf(buf, cap, "%s/%s/resolve/%s/", h->endpoint, h->id, rev);
	curl_free(rev);
	if (n < 0 || (size_t)n >= cap)
		return false;
	size_t len = (size_t)n;
	for (const char *p = file;;) {
		const char *e = strchr(p, '/');
		size_t pl = e ? (size_t)(e - p) : strlen(p);
		char *part = curl_easy_escape(h->curl, p, (int)pl);
		if (!part)
			return false;
		n = snprintf(buf + len, cap - len, "%s%s", part, e ? "/" : "");
		curl_free(part);
		if (n < 0 || (size_t)n >= cap - len)
			return false;
		len += (size_t)n;
		if (!e)
			return true;
		p = e + 1;
	}
}

static void common_opts(struct hub *h, struct curl_slist **hdrs)
{
	curl_easy_reset(h->curl);
	char auth[1100];
	*hdrs = curl_slist_append(NULL, "Accept-Encoding: identity");
	if (h->token_from) {
		snprintf(auth, sizeof auth, "Authorization: Bearer %s", h->token);
		*hdrs = curl_slist_append(*hdrs, auth);
	}
	curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, *hdrs);
	curl_easy_setopt(h->curl, CURLOPT_USERAGENT, "tern/" TERN_VERSION);
	curl_easy_setopt(h->curl, CURLOPT_CONNECTTIMEOUT, 20L);
	curl_easy_setopt(h->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h->curl, CURLOPT_HEADERFUNCTION, on_header);
}

static enum tern_status net_fail(struct hub *h, CURLcode rc, const char *errbuf)
{
	h->unreachable = true;
	put(h->net_msg, sizeof h->net_msg, *errbuf ? errbuf : curl_easy_strerror(rc), "");
	return tern_fail(TERN_E_UNAVAILABLE,
			 "%s: not a directory, and the Hub at %s cannot be reached (%s): check the path, the "
			 "network or HF_ENDPOINT; HF_HUB_OFFLINE=1 uses only the Hugging Face cache (%s)",
			 h->id, h->endpoint, h->net_msg, h->repo);
}

/* HEAD of one file, following only relative redirects (a renamed repository), as huggingface_hub
 * does: the CDN redirect of an LFS file is where its X-Linked-* headers are. */
static enum tern_status head(struct hub *h, const char *url0, struct meta *m)
{
	char url[2048], errbuf[CURL_ERROR_SIZE];
	if (!put(url, sizeof url, url0, ""))
		return tern_fail(TERN_E_INVALID, "%s: URL too long", h->id);
	for (int hop = 0; hop < 5; hop++) {
		struct curl_slist *hdrs = NULL;
		common_opts(h, &hdrs);
		errbuf[0] = 0;
		memset(m, 0, sizeof *m);
		curl_easy_setopt(h->curl, CURLOPT_URL, url);
		curl_easy_setopt(h->curl, CURLOPT_NOBODY, 1L);
		curl_easy_setopt(h->curl, CURLOPT_HEADERDATA, m);
		curl_easy_setopt(h->curl, CURLOPT_ERRORBUFFER, errbuf);
		curl_easy_setopt(h->curl, CURLOPT_TIMEOUT, 60L);
		CURLcode rc = curl_easy_perform(h->curl);
		curl_slist_free_all(hdrs);
		if (rc != CURLE_OK)
			return net_fail(h, rc, errbuf);
		curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &m->status);
		if (m->status < 300 || m->status >= 400 || m->location[0] != '/')
			return TERN_OK;
		const char *p = strstr(url, "://"); /* same scheme and host, the new path */
		const char *host_end = p ? strchr(p + 3, '/') : NULL;
		int n = host_end ? (int)(host_end - url) : (int)strlen(url);
		char next[2048];
		if (!fmt(next, sizeof next, "%.*s%s", n, url, m->location) || !put(url, sizeof url, next, ""))
			return tern_fail(TERN_E_UNAVAILABLE, "%s: a redirect too long from %s", h->id,
					 h->endpoint);
	}
	return tern_fail(TERN_E_UNAVAILABLE, "%s: too many redirects from %s", h->id, h->endpoint);
}

/* One line for an HTTP failure of the Hub. */
static enum tern_status http_fail(struct hub *h, const struct meta *m, const char *file)
{
	const char *ec = m->error_code;
	if (m->status == 401 && !h->token_from && !strcmp(ec, "RepoNotFound")) /* the Hub's answer to a
										  name it does not show */
		return tern_fail(
			TERN_E_INVALID,
			"%s: not a directory, and 401 from the Hub: no public model of that name (check "
			"the path or the id; for a private model set HF_TOKEN to a token with access, "
			"https://huggingface.co/settings/tokens)",
			h->id);
	if (m->status == 401 && !h->token_from)
		return tern_fail(TERN_E_UNAVAILABLE,
				 "%s: 401 from the Hub%s: set HF_TOKEN to a token with access "
				 "(https://huggingface.co/settings/tokens)",
				 h->id, !strcmp(ec, "GatedRepo") ? " (a gated model)" : "");
	if (m->status == 401)
		return tern_fail(
			TERN_E_UNAVAILABLE,
			"%s: 401 from the Hub with the token of %s: no model of that name, or the token "
			"cannot read it (https://huggingface.co/settings/tokens)",
			h->id, h->token_from);
	if (m->status == 403 && !strcmp(ec, "GatedRepo"))
		return tern_fail(
			TERN_E_UNAVAILABLE,
			"%s: 403 from the Hub: the model is gated and the token's account has no access: "
			"accept its terms at %s/%s, then run again",
			h->id, h->endpoint, h->id);
	if (m->status == 403)
		return tern_fail(TERN_E_UNAVAILABLE, "%s: 403 from the Hub: the token of %s may not read %s",
				 h->id, h->token_from ? h->token_from : "(none)", file);
	if (m->status == 404 && !strcmp(ec, "RevisionNotFound"))
		return tern_fail(
			TERN_E_INVALID,
			"%s: 404 from the Hub: no revision '%s' (revision_of_model: a branch, tag or "
			"commit of the repository)",
			h->id, h->revision);
	if (m->status == 404 && !strcmp(ec, "EntryNotFound"))
		return tern_fail(TERN_E_INVALID,
				 "%s: 404 from the Hub: the repository has no %s (revision %s)", h->id, file,
				 h->commit[0] ? h->commit : h->revision);
	if (m->status == 404)
		return tern_fail(TERN_E_INVALID,
				 "%s: not a directory, and 404 from the Hub: no model of that name (%s/%s)",
				 h->id, h->endpoint, h->id);
	return tern_fail(TERN_E_UNAVAILABLE, "%s: HTTP %ld from %s for %s%s%s", h->id, m->status, h->endpoint,
			 file, ec[0] ? ": " : "", ec);
}

/* ---- one blob ---- */

struct sink {
	int fd;
	uint64_t have;  /* bytes in the .incomplete file when the request started */
	uint64_t got;   /* bytes written by this request */
	uint64_t total; /* expected size, 0 unknown */
	bool restart;   /* a 200 answered the Range request: the file was started over */
	bool bad_range; /* a 206 that does not start where the file ends */
	int io_errno;   /* a failed write's errno; 0 none */
	struct tern_sha256 sha;
	struct meta m;
	const struct hub *h;
	const char *file;
	double last;
};

static size_t on_data(char *p, size_t size, size_t nmemb, void *user)
{
	struct sink *s = user;
	size_t n = size * nmemb;
	if (s->got == 0 && s->have > 0 && !s->restart) {
		if (s->m.status == 200) { /* the server ignored the Range: start again */
			if (ftruncate(s->fd, 0) != 0 || lseek(s->fd, 0, SEEK_SET) != 0) {
				s->io_errno = errno;
				return 0;
			}
			tern_sha256_init(&s->sha);
			s->have = 0;
			s->restart = true;
		} else if (s->m.range_start != (int64_t)s->have) {
			s->bad_range = true;
			return 0;
		}
	}
	for (size_t off = 0; off < n;) {
		ssize_t w = write(s->fd, p + off, n - off);
		if (w <= 0) {
			s->io_errno = w < 0 ? errno : ENOSPC;
			return 0;
		}
		off += (size_t)w;
	}
	tern_sha256_update(&s->sha, p, n);
	s->got += n;
	double now = tern_now();
	if (g_progress && now - s->last >= 0.1 && s->have + s->got != s->total) { /* the end: by the caller */
		s->last = now;
		g_progress(s->h->id, s->file, s->have + s->got, s->total, g_progress_user);
	}
	return n;
}

static bool transient(CURLcode rc)
{
	return rc == CURLE_PARTIAL_FILE || rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR ||
	       rc == CURLE_OPERATION_TIMEDOUT || rc == CURLE_GOT_NOTHING || rc == CURLE_COULDNT_CONNECT ||
	       rc == CURLE_HTTP2_STREAM || rc == CURLE_HTTP2 || rc == CURLE_SSL_CONNECT_ERROR;
}

static bool is_sha256(const char *s)
{
	size_t n = 0;
	for (; s[n]; n++)
		if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
			return false;
	return n == 64;
}

/* GETs url into blob (through blob.incomplete, resumed), checks size and sha256. */
static enum tern_status download_blob(struct hub *h, const char *url, const char *file, const char *blob,
				      uint64_t size, const char *etag)
{
	char inc[PATH_CAP + 16], errbuf[CURL_ERROR_SIZE];
	snprintf(inc, sizeof inc, "%s.incomplete", blob);
	struct sink s = {.fd = -1, .total = size, .h = h, .file = file};
	enum tern_status st = TERN_OK;
	CURLcode rc = CURLE_OK;
	bool verify = is_sha256(etag);
	s.fd = open(inc, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (s.fd < 0)
		return tern_fail(TERN_E_IO, "%s: cannot write: %s", inc, strerror(errno));
	for (int attempt = 0;; attempt++) {
		struct stat sb;
		if (fstat(s.fd, &sb) != 0) {
			st = tern_fail(TERN_E_IO, "%s: %s", inc, strerror(errno));
			goto out;
		}
		s.have = (uint64_t)sb.st_size;
		if (size && s.have > size) { /* longer than the file: not ours */
			if (ftruncate(s.fd, 0) != 0) {
				st = tern_fail(TERN_E_IO, "%s: %s", inc, strerror(errno));
				goto out;
			}
			s.have = 0;
		}
		tern_sha256_init(&s.sha);
		if (s.have && verify && !tern_sha256_update_file(inc, s.have, &s.sha)) {
			st = tern_fail(TERN_E_IO, "%s: cannot read back what was downloaded", inc);
			goto out;
		}
		if (size && s.have == size)
			break;
		s.got = 0;
		s.restart = s.bad_range = false;
		s.io_errno = 0;
		if (g_progress)
			g_progress(h->id, file, s.have, size, g_progress_user);
		struct curl_slist *hdrs = NULL;
		common_opts(h, &hdrs);
		char range[64];
		snprintf(range, sizeof range, "%llu-", (unsigned long long)s.have);
		errbuf[0] = 0;
		curl_easy_setopt(h->curl, CURLOPT_URL, url);
		curl_easy_setopt(h->curl, CURLOPT_FOLLOWLOCATION, 1L);
		curl_easy_setopt(h->curl, CURLOPT_MAXREDIRS, 10L);
		curl_easy_setopt(h->curl, CURLOPT_FAILONERROR, 1L);
		curl_easy_setopt(h->curl, CURLOPT_HEADERDATA, &s.m);
		curl_easy_setopt(h->curl, CURLOPT_WRITEFUNCTION, on_data);
		curl_easy_setopt(h->curl, CURLOPT_WRITEDATA, &s);
		curl_easy_setopt(h->curl, CURLOPT_ERRORBUFFER, errbuf);
		curl_easy_setopt(h->curl, CURLOPT_LOW_SPEED_LIMIT, 1L); /* a stalled transfer: resume */
		curl_easy_setopt(h->curl, CURLOPT_LOW_SPEED_TIME, 60L);
		if (s.have)
			curl_easy_setopt(h->curl, CURLOPT_RANGE, range);
		rc = curl_easy_perform(h->curl);
		curl_slist_free_all(hdrs);
		long code = 0;
		curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &code);
		if (s.io_errno) {
			st = tern_fail(TERN_E_IO, "%s: cannot write: %s", inc, strerror(s.io_errno));
			goto out;
		}
		if (rc == CURLE_HTTP_RETURNED_ERROR && code == 416 && s.have) { /* range past the end */
			if (ftruncate(s.fd, 0) != 0) {
				st = tern_fail(TERN_E_IO, "%s: %s", inc, strerror(errno));
				goto out;
			}
			continue;
		}
		if (rc == CURLE_HTTP_RETURNED_ERROR) {
			s.m.status = code;
			st = http_fail(h, &s.m, file);
			goto out;
		}
		if (s.bad_range) {
			st = tern_fail(
				TERN_E_UNAVAILABLE,
				"%s: %s: the server answered a resume at byte %llu with bytes from %lld",
				h->id, file, (unsigned long long)s.have, (long long)s.m.range_start);
			goto out;
		}
		if (rc == CURLE_OK && (!size || s.have + s.got == size))
			break;
		if (rc == CURLE_OK) /* a short body without an error: resume like a dropped connection */
			rc = CURLE_PARTIAL_FILE;
		if (!transient(rc)) {
			st = net_fail(h, rc, errbuf);
			goto out;
		}
		if (attempt + 1 >= ATTEMPTS) {
			st = tern_fail(
				TERN_E_UNAVAILABLE,
				"%s: %s: the connection dropped %d times (%s); %llu of %llu bytes are kept in "
				"%s: run again to resume",
				h->id, file, ATTEMPTS, *errbuf ? errbuf : curl_easy_strerror(rc),
				(unsigned long long)(s.have + s.got), (unsigned long long)size, inc);
			goto out;
		}
		tern_log(2, "%s: %s: %s after %llu bytes; resuming", h->id, file,
			 *errbuf ? errbuf : curl_easy_strerror(rc), (unsigned long long)(s.have + s.got));
	}
	uint64_t have = s.have + s.got;
	if (size && have != size) {
		st = tern_fail(TERN_E_FORMAT, "%s: %s: %llu bytes downloaded, the Hub said %llu", h->id, file,
			       (unsigned long long)have, (unsigned long long)size);
		goto out;
	}
	if (verify) {
		uint8_t d[32];
		char hex[65];
		tern_sha256_final(&s.sha, d);
		tern_sha256_digest_hex(d, hex);
		if (strcmp(hex, etag)) {
			close(s.fd);
			s.fd = -1;
			unlink(inc);
			st = tern_fail(
				TERN_E_FORMAT,
				"%s: %s: sha256 %s differs from the Hub's %s: the download is corrupt and was "
				"removed; run again to download it anew",
				h->id, file, hex, etag);
			goto out;
		}
	}
	if (fsync(s.fd) != 0 || rename(inc, blob) != 0) {
		st = tern_fail(TERN_E_IO, "%s: cannot finish the download: %s", blob, strerror(errno));
		goto out;
	}
	if (g_progress)
		g_progress(h->id, file, have, size ? size : have, g_progress_user);
out:
	if (s.fd >= 0)
		close(s.fd);
	return st;
}

/* snapshots/<commit>/<file> -> the blob: a relative symlink, else a hard link, else a copy. */
static enum tern_status link_snapshot(const char *blob, const char *snap, const char *file, const char *etag)
{
	enum tern_status st = mkparent(snap);
	if (st)
		return st;
	char target[PATH_CAP];
	size_t n = 0;
	target[0] = 0;
	for (const char *p = file; *p; p++) /* up from snapshots/<commit>/<dirs of file> */
		if (*p == '/')
			n += (size_t)snprintf(target + n, sizeof target - n, "../");
	snprintf(target + n, sizeof target - n, "../../blobs/%s", etag);
	unlink(snap); /* a broken link left behind */
	if (symlink(target, snap) == 0 || link(blob, snap) == 0)
		return TERN_OK;
	FILE *in = fopen(blob, "rb"), *out = in ? fopen(snap, "wb") : NULL;
	bool ok = in && out;
	char buf[1 << 16];
	size_t r;
	while (ok && (r = fread(buf, 1, sizeof buf, in)) > 0)
		ok = fwrite(buf, 1, r, out) == r;
	if (in)
		fclose(in);
	if (out)
		ok &= fclose(out) == 0;
	if (!ok) {
		unlink(snap);
		return tern_fail(TERN_E_IO, "%s: cannot link or copy the downloaded file", snap);
	}
	return TERN_OK;
}

/* Makes snapshots/<commit>/<file> present, downloading it when needed. *present: false when the
 * repository lacks an optional file (a required one fails). The first call fixes h->commit. */
static enum tern_status fetch(struct hub *h, const char *file, bool required, bool *present)
{
	char p[PATH_CAP], url[4096], blob[PATH_CAP];
	enum tern_status st;
	*present = false;
	if (h->commit[0]) {
		if (snap_path(h, p, sizeof p, file) && is_file(p))
			return *present = true, TERN_OK;
		if (!required && no_exist(h, file))
			return TERN_OK;
	}
	if (!make_url(h, h->commit[0] ? h->commit : h->revision, file, url, sizeof url))
		return tern_fail(TERN_E_INVALID, "%s: %s: URL too long", h->id, file);
	struct meta m;
	if ((st = head(h, url, &m)))
		return st;
	const char *commit = m.commit;
	if (m.status == 404 && !required && strcmp(m.error_code, "RepoNotFound") &&
	    strcmp(m.error_code, "RevisionNotFound")) {
		if (!h->commit[0] && is_commit(commit))
			put(h->commit, sizeof h->commit, commit, "");
		int n = snprintf(p, sizeof p, "%s/.no_exist/%s/%s", h->repo, h->commit, file);
		if (h->commit[0] && n > 0 && (size_t)n < sizeof p)
			write_small(p, ""); /* a cache note only: a failure to write it is harmless */
		tern_clear_error();
		return TERN_OK;
	}
	if (m.status >= 400 || m.status < 200)
		return http_fail(h, &m, file);
	const char *etag = m.linked_etag[0] ? m.linked_etag : m.etag;
	uint64_t size = m.linked_size ? m.linked_size : m.size;
	if (!is_commit(commit) || !etag[0] || !safe_rel(etag) || strchr(etag, '/'))
		return tern_fail(
			TERN_E_UNAVAILABLE,
			"%s: %s: %s answered without X-Repo-Commit and ETag headers (HF_ENDPOINT must be a "
			"Hugging Face Hub)",
			h->id, file, h->endpoint);
	if (!h->commit[0])
		put(h->commit, sizeof h->commit, commit, "");
	if (!h->ref_written && strcmp(h->revision, h->commit)) {
		if (!repo_path(h, p, sizeof p, "refs", h->revision))
			return tern_fail(TERN_E_IO, "%s: path too long", h->repo);
		char line[64];
		snprintf(line, sizeof line, "%s", h->commit);
		if ((st = write_small(p, line)))
			return st;
		h->ref_written = true;
	}
	if (!snap_path(h, p, sizeof p, file) || !repo_path(h, blob, sizeof blob, "blobs", etag))
		return tern_fail(TERN_E_IO, "%s: path too long", h->repo);
	if (is_file(p))
		return *present = true, TERN_OK;
	if ((st = mkdirs(h->repo)) || (st = mkparent(blob)))
		return st;
	/* one process downloads a blob at a time */
	char lock[PATH_CAP + 256];
	const char *base = strrchr(h->repo, '/');
	snprintf(lock, sizeof lock, "%s/.locks%s/%s.lock", h->cache, base, etag);
	if ((st = mkparent(lock)))
		return st;
	int lfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (lfd < 0)
		return tern_fail(TERN_E_IO, "%s: cannot open: %s", lock, strerror(errno));
	if (flock(lfd, LOCK_EX) != 0) {
		close(lfd);
		return tern_fail(TERN_E_IO, "%s: cannot lock: %s", lock, strerror(errno));
	}
	if (!is_file(blob))
		st = download_blob(h, url, file, blob, size, etag);
	close(lfd);
	if (st == TERN_OK)
		st = link_snapshot(blob, p, file, etag);
	*present = st == TERN_OK;
	return st;
}

/* Downloads what the snapshot lacks: config.json first (it fixes the commit), then the tokenizer
 * files, then the weights. */
static enum tern_status download(struct hub *h, unsigned need)
{
	enum tern_status st = TERN_OK;
	bool present;
	char p[PATH_CAP];
	char **shards = NULL;
	int n = 0;
	if (!is_commit(h->revision))
		h->commit[0] = 0; /* ask the Hub where the branch is now */
	if ((st = fetch(h, "config.json", true, &present)))
		return st;
	if (need & TERN_HUB_TOKENIZER)
		for (size_t i = 0; i < sizeof tokenizer_files / sizeof *tokenizer_files; i++)
			if ((st = fetch(h, tokenizer_files[i], false, &present)))
				return st;
	if (!(need & TERN_HUB_WEIGHTS))
		return TERN_OK;
	if (snap_path(h, p, sizeof p, "model.safetensors") && is_file(p))
		return TERN_OK;
	if ((st = fetch(h, "model.safetensors.index.json", false, &present)))
		return st;
	if (!present)
		return fetch(h, "model.safetensors", true, &present);
	snap_path(h, p, sizeof p, "model.safetensors.index.json");
	if ((st = read_index(p, &shards, &n)))
		return st;
	for (int i = 0; i < n && st == TERN_OK; i++)
		st = fetch(h, shards[i], true, &present);
	free_list(shards, n);
	return st;
}

enum tern_status tern_hub_resolve(const char *name_or_path, const char *revision, unsigned need, char **dir,
				  char *commit)
{
	struct hub *h = NULL;
	enum tern_status st = TERN_OK;
	char missing[600] = "";
	*dir = NULL;
	if (commit)
		commit[0] = 0;
	if (!name_or_path || !*name_or_path)
		return tern_fail(TERN_E_INVALID,
				 "base_model: empty (allowed: a model directory or a Hub id)");
	if (is_dir(name_or_path) || !tern_hub_is_id(name_or_path)) {
		if (!(*dir = strdup(name_or_path)))
			return tern_fail(TERN_E_NOMEM, "out of host memory");
		return TERN_OK;
	}
	if (!revision || !*revision)
		revision = "main";
	if (!safe_rel(revision))
		return tern_fail(
			TERN_E_INVALID,
			"revision_of_model: '%s' is not a revision (allowed: a branch, tag or commit hash)",
			revision);
	if (!(h = calloc(1, sizeof *h)))
		return tern_fail(TERN_E_NOMEM, "out of host memory");
	h->id = name_or_path;
	h->revision = revision;
	if (!tern_hub_cache_dir(h->cache, sizeof h->cache)) {
		st = tern_fail(TERN_E_INVALID,
			       "%s: no Hugging Face cache directory (set HF_HUB_CACHE or HF_HOME, or HOME)",
			       name_or_path);
		goto out;
	}
	{
		const char *slash = strchr(name_or_path, '/');
		int n = snprintf(h->repo, sizeof h->repo, "%s/models--%.*s--%s", h->cache,
				 (int)(slash - name_or_path), name_or_path, slash + 1);
		if (n < 0 || (size_t)n >= sizeof h->repo) {
			st = tern_fail(TERN_E_INVALID, "%s: the cache path is too long", h->cache);
			goto out;
		}
	}
	const char *off = truthy(env("HF_HUB_OFFLINE"))         ? "HF_HUB_OFFLINE"
			  : truthy(env("TRANSFORMERS_OFFLINE")) ? "TRANSFORMERS_OFFLINE"
								: NULL;
	char snap[PATH_CAP], file[512], cached[41] = "";
	if (!read_ref(h)) {
		fmt(missing, sizeof missing, "no %s/refs/%s", h->repo, revision);
	} else if (fmt(snap, sizeof snap, "%s/snapshots/%s", h->repo, h->commit), !is_dir(snap)) {
		fmt(missing, sizeof missing, "no %s", snap);
	} else if (snapshot_complete(h, need, !off, file, sizeof file)) {
		goto found;
	} else {
		fmt(missing, sizeof missing, "%s has no %s", snap, file);
		if (snapshot_complete(h, need, false, file, sizeof file)) /* only optional files missing */
			put(cached, sizeof cached, h->commit, "");
		tern_clear_error();
	}
	if (off) {
		st = tern_fail(
			TERN_E_UNAVAILABLE,
			"%s: not a directory, and not in the Hugging Face cache (%s) while %s is set: unset it "
			"to download, or "
			"set base_model to a model directory",
			name_or_path, missing, off);
		goto out;
	}
	{
		const char *ep = env("HF_ENDPOINT");
		snprintf(h->endpoint, sizeof h->endpoint, "%s", ep ? ep : "https://huggingface.co");
		size_t el = strlen(h->endpoint);
		while (el && h->endpoint[el - 1] == '/')
			h->endpoint[--el] = 0;
	}
	read_token(h->token, sizeof h->token, &h->token_from);
	static bool curl_ready;
	if (!curl_ready && curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
		st = tern_fail(TERN_E_UNAVAILABLE, "%s: libcurl failed to start", name_or_path);
		goto out;
	}
	curl_ready = true;
	if (!(h->curl = curl_easy_init())) {
		st = tern_fail(TERN_E_NOMEM, "out of host memory (libcurl)");
		goto out;
	}
	tern_log(2, "%s: downloading into %s (%s)", name_or_path, h->repo, missing);
	if ((st = download(h, need))) {
		if (!h->unreachable || !cached[0])
			goto out;
		/* what the run needs is cached; only optional files could not be asked for */
		tern_log(1, "%s: the Hub at %s cannot be reached (%s); using the cached snapshot %s",
			 name_or_path, h->endpoint, h->net_msg, cached);
		put(h->commit, sizeof h->commit, cached, "");
		st = TERN_OK;
	}
found:
	fmt(snap, sizeof snap, "%s/snapshots/%s", h->repo, h->commit);
	if (!(*dir = strdup(snap))) {
		st = tern_fail(TERN_E_NOMEM, "out of host memory");
		goto out;
	}
	if (commit)
		snprintf(commit, 41, "%s", h->commit);
out:
	if (h && h->curl)
		curl_easy_cleanup(h->curl);
	free(h);
	return st;
}
