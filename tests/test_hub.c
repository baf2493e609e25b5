/* The Hub module without a network: SHA-256 against the FIPS 180-4 / NIST vectors (one-shot and
 * fed in odd pieces), the Hub id rule, the cache directory from the environment (HF_HUB_CACHE
 * over HF_HOME over XDG_CACHE_HOME over HOME), and resolution from a Hugging Face cache built
 * here as huggingface_hub lays it out: refs/main, refs/<branch>, a commit hash as revision, a
 * directory that wins over an id of the same name, and offline failures that name what is missing
 * (no ref, no snapshot, a broken symlink, a shard the index lists). All with HF_HUB_OFFLINE=1, so
 * nothing here can reach a network. */
#define _POSIX_C_SOURCE 200809L /* setenv, mkdtemp, symlink */
#include "core/sha256.h"
#include "tern/hub.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int passed, failed;

static void check(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(bool ok, const char *fmt, ...)
{
	if (ok) {
		passed++;
		return;
	}
	failed++;
	va_list ap;
	va_start(ap, fmt);
	printf("FAIL: ");
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
}

static void sha_hex(const void *data, size_t n, size_t piece, char hex[65])
{
	struct tern_sha256 s;
	uint8_t d[32];
	tern_sha256_init(&s);
	const uint8_t *p = data;
	for (size_t off = 0; off < n; off += piece)
		tern_sha256_update(&s, p + off, n - off < piece ? n - off : piece);
	tern_sha256_final(&s, d);
	tern_sha256_digest_hex(d, hex);
}

static void test_sha256(void)
{
	static const struct {
		const char *msg, *want;
	} v[] = {
		{"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
		 "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
		{"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrs"
		 "mnopqrstnopqrstu",
		 "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
	};
	char hex[65];
	for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
		size_t n = strlen(v[i].msg);
		sha_hex(v[i].msg, n, n ? n : 1, hex);
		check(!strcmp(hex, v[i].want), "sha256 vector %zu: %s, want %s", i, hex, v[i].want);
		sha_hex(v[i].msg, n, 7, hex); /* the same bytes in pieces across block edges */
		check(!strcmp(hex, v[i].want), "sha256 vector %zu in 7-byte pieces: %s", i, hex);
	}
	size_t n = 1000000; /* one million 'a' */
	char *a = malloc(n);
	memset(a, 'a', n);
	sha_hex(a, n, 4099, hex);
	check(!strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"),
	      "sha256 of a million 'a': %s", hex);
	/* lengths 55, 56, 63, 64: the padding that spills into a second block */
	static const char *const edge[] = {
		"ad3eb11b2b23d1fa3d9e3ad2b8d3d8ad3e1c7e0af1b1a6283e4a3b8e8a0bb1b2", /* placeholder, replaced below */
	};
	(void)edge;
	struct tern_sha256 s;
	uint8_t d1[32], d2[32];
	for (size_t len = 50; len <= 130; len++) { /* one-shot == byte-wise, across the padding edges */
		tern_sha256_init(&s);
		tern_sha256_update(&s, a, len);
		tern_sha256_final(&s, d1);
		tern_sha256_init(&s);
		for (size_t i = 0; i < len; i++)
			tern_sha256_update(&s, a + i, 1);
		tern_sha256_final(&s, d2);
		check(!memcmp(d1, d2, 32), "sha256 of %zu bytes: one-shot and byte-wise differ", len);
	}
	free(a);
}

static void test_ids(void)
{
	static const char *const yes[] = {"mistralai/Mistral-7B-v0.1", "Qwen/Qwen2.5-0.5B", "a/b",
					  "org_1/x.y-z"};
	static const char *const no[] = {"gpt2",    "/abs/path", "./rel/x",  "a/b/c", "org/na--me",
					 "org/..x", "org/-x",    "org/x.",   "",      "a b/c",
					 "org/",    "/name",     "demo/../x"};
	for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
		check(tern_hub_is_id(yes[i]), "'%s' should be a Hub id", yes[i]);
	for (size_t i = 0; i < sizeof no / sizeof *no; i++)
		check(!tern_hub_is_id(no[i]), "'%s' should not be a Hub id", no[i]);
}

static void unset_all(void)
{
	static const char *const vars[] = {"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE",
					   "HF_HOME",      "XDG_CACHE_HOME",
					   "HF_TOKEN",     "HF_ENDPOINT"};
	for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
		unsetenv(vars[i]);
}

static void test_cache_dir(void)
{
	char buf[4096];
	unset_all();
	setenv("HOME", "/home/u", 1);
	check(tern_hub_cache_dir(buf, sizeof buf) && !strcmp(buf, "/home/u/.cache/huggingface/hub"),
	      "HOME: %s", buf);
	setenv("XDG_CACHE_HOME", "/xdg", 1);
	check(tern_hub_cache_dir(buf, sizeof buf) && !strcmp(buf, "/xdg/huggingface/hub"),
	      "XDG_CACHE_HOME: %s", buf);
	setenv("HF_HOME", "/hfhome", 1);
	check(tern_hub_cache_dir(buf, sizeof buf) && !strcmp(buf, "/hfhome/hub"), "HF_HOME over XDG: %s",
	      buf);
	setenv("HF_HUB_CACHE", "/hubcache", 1);
	check(tern_hub_cache_dir(buf, sizeof buf) && !strcmp(buf, "/hubcache"),
	      "HF_HUB_CACHE over HF_HOME: %s", buf);
	setenv("HF_HUB_CACHE", "", 1); /* empty = unset, as in huggingface_hub */
	check(tern_hub_cache_dir(buf, sizeof buf) && !strcmp(buf, "/hfhome/hub"), "empty HF_HUB_CACHE: %s",
	      buf);
	unset_all();
}

/* ---- a cache built by hand ---- */

static char root[256];

static void mk(const char *rel)
{
	char p[1024], *s;
	snprintf(p, sizeof p, "%s/%s", root, rel);
	for (s = p + 1; *s; s++)
		if (*s == '/') {
			*s = 0;
			mkdir(p, 0755);
			*s = '/';
		}
	mkdir(p, 0755);
}

static void write_file(const char *rel, const char *text)
{
	char p[1024];
	snprintf(p, sizeof p, "%s/%s", root, rel);
	FILE *f = fopen(p, "w");
	if (f) {
		fputs(text, f);
		fclose(f);
	}
}

static void link_file(const char *target, const char *rel)
{
	char p[1024];
	snprintf(p, sizeof p, "%s/%s", root, rel);
	unlink(p);
	if (symlink(target, p) != 0)
		check(false, "symlink %s", p);
}

#define C1 "1111111111111111111111111111111111111111"
#define C2 "2222222222222222222222222222222222222222"
#define R "hub/models--acme--tiny"

/* resolves id at revision with need; checks the status, the directory and the message */
static void expect(const char *id, const char *rev, unsigned need, enum tern_status want_st,
		   const char *want_dir_tail, const char *want_msg, const char *what)
{
	char *dir = NULL, commit[41] = "x";
	enum tern_status st = tern_hub_resolve(id, rev, need, &dir, commit);
	if (want_st == TERN_OK) {
		size_t n = dir ? strlen(dir) : 0, t = strlen(want_dir_tail);
		check(st == TERN_OK && n >= t && !strcmp(dir + n - t, want_dir_tail), "%s: %s (%s)", what,
		      dir ? dir : "(null)", st ? tern_error() : "ok");
		if (st == TERN_OK && strstr(want_dir_tail, "snapshots/"))
			check(strlen(commit) == 40 && strstr(dir, commit), "%s: commit '%s'", what, commit);
	} else {
		check(st == want_st && !dir && strstr(tern_error(), want_msg), "%s: status %d, message '%s'",
		      what, (int)st, tern_error());
	}
	free(dir);
}

static void test_resolve(void)
{
	snprintf(root, sizeof root, "/tmp/tern-test-hub-XXXXXX");
	if (!mkdtemp(root)) {
		check(false, "mkdtemp");
		return;
	}
	unset_all();
	char cache[512];
	snprintf(cache, sizeof cache, "%s/hub", root);
	setenv("HF_HOME", root, 1);
	setenv("HF_HUB_OFFLINE", "1", 1);

	/* main -> C1 with config.json only; branch dev -> C2 with config + weights + tokenizer */
	mk(R "/blobs");
	mk(R "/refs");
	mk(R "/snapshots/" C1);
	mk(R "/snapshots/" C2);
	write_file(R "/blobs/aaaa", "{\"model_type\": \"llama\"}\n");
	write_file(R "/blobs/bbbb", "weights\n");
	write_file(R "/blobs/cccc", "{}\n");
	write_file(R "/refs/main", C1 "\n");
	write_file(R "/refs/dev", C2);
	link_file("../../blobs/aaaa", R "/snapshots/" C1 "/config.json");
	link_file("../../blobs/aaaa", R "/snapshots/" C2 "/config.json");
	link_file("../../blobs/bbbb", R "/snapshots/" C2 "/model.safetensors");
	link_file("../../blobs/cccc", R "/snapshots/" C2 "/tokenizer.json");

	expect("acme/tiny", NULL, TERN_HUB_CONFIG, TERN_OK, R "/snapshots/" C1, NULL,
	       "refs/main, config only");
	expect("acme/tiny", "main", TERN_HUB_CONFIG, TERN_OK, R "/snapshots/" C1, NULL, "revision main");
	expect("acme/tiny", "dev", TERN_HUB_ALL, TERN_OK, R "/snapshots/" C2, NULL, "refs/dev, everything");
	expect("acme/tiny", C2, TERN_HUB_ALL, TERN_OK, R "/snapshots/" C2, NULL, "a commit hash as revision");
	expect("acme/tiny", NULL, TERN_HUB_ALL, TERN_E_UNAVAILABLE, NULL,
	       "snapshots/" C1 " has no model.safetensors) while HF_HUB_OFFLINE is set",
	       "main lacks the weights");
	expect("acme/tiny", "v2", TERN_HUB_CONFIG, TERN_E_UNAVAILABLE, NULL, R "/refs/v2)", "no such ref");
	expect("acme/other", NULL, TERN_HUB_CONFIG, TERN_E_UNAVAILABLE, NULL,
	       "hub/models--acme--other/refs/main) while HF_HUB_OFFLINE", "a repository not in the cache");
	expect("acme/tiny", "3333333333333333333333333333333333333333", TERN_HUB_CONFIG, TERN_E_UNAVAILABLE,
	       NULL, "no " /* path */, "a commit without a snapshot");
	expect("acme/tiny", "../x", TERN_HUB_CONFIG, TERN_E_INVALID, NULL, "revision_of_model: '../x'",
	       "a revision that leaves the cache");

	/* a snapshot named by a ref but missing: refs/gone -> C3 */
	write_file(R "/refs/gone", "3333333333333333333333333333333333333333");
	expect("acme/tiny", "gone", TERN_HUB_CONFIG, TERN_E_UNAVAILABLE, NULL, "no " /* the snapshot path */,
	       "a ref to a missing snapshot");
	{
		char *dir = NULL;
		tern_hub_resolve("acme/tiny", "gone", TERN_HUB_CONFIG, &dir, NULL);
		check(strstr(tern_error(), "snapshots/3333333333333333333333333333333333333333") != NULL,
		      "the missing snapshot is named: %s", tern_error());
		free(dir);
	}

	/* a broken symlink: the blob was deleted */
	char p[1024];
	snprintf(p, sizeof p, "%s/" R "/blobs/bbbb", root);
	unlink(p);
	expect("acme/tiny", "dev", TERN_HUB_ALL, TERN_E_UNAVAILABLE, NULL, "has no model.safetensors",
	       "a broken symlink is a missing file");
	expect("acme/tiny", "dev", TERN_HUB_CONFIG, TERN_OK, R "/snapshots/" C2, NULL,
	       "config only does not need the broken file");

	/* sharded: an index naming two shards, one missing */
	write_file(R "/blobs/idx", "{\"metadata\": {}, \"weight_map\": {\"a\": \"model-1.safetensors\", "
				   "\"b\": \"model-2.safetensors\", \"c\": \"model-1.safetensors\"}}");
	write_file(R "/blobs/s1", "1");
	unlink(p);
	snprintf(p, sizeof p, "%s/" R "/snapshots/" C2 "/model.safetensors", root);
	unlink(p);
	link_file("../../blobs/idx", R "/snapshots/" C2 "/model.safetensors.index.json");
	link_file("../../blobs/s1", R "/snapshots/" C2 "/model-1.safetensors");
	expect("acme/tiny", "dev", TERN_HUB_WEIGHTS, TERN_E_UNAVAILABLE, NULL, "has no model-2.safetensors",
	       "a shard the index lists is missing");
	write_file(R "/blobs/s2", "2");
	link_file("../../blobs/s2", R "/snapshots/" C2 "/model-2.safetensors");
	expect("acme/tiny", "dev", TERN_HUB_ALL, TERN_OK, R "/snapshots/" C2, NULL, "every shard present");

	/* HF_HUB_CACHE wins over HF_HOME: the same layout under another root has only main */
	char other[600];
	snprintf(other, sizeof other, "%s/elsewhere", root);
	mk("elsewhere/models--acme--tiny/refs");
	mk("elsewhere/models--acme--tiny/snapshots/" C2);
	write_file("elsewhere/models--acme--tiny/refs/main", C2);
	write_file("elsewhere/models--acme--tiny/snapshots/" C2 "/config.json", "{}");
	setenv("HF_HUB_CACHE", other, 1);
	expect("acme/tiny", NULL, TERN_HUB_CONFIG, TERN_OK, "elsewhere/models--acme--tiny/snapshots/" C2,
	       NULL, "HF_HUB_CACHE over HF_HOME");
	expect("acme/tiny", "dev", TERN_HUB_CONFIG, TERN_E_UNAVAILABLE, NULL,
	       "elsewhere/models--acme--tiny/refs/dev",
	       "HF_HUB_CACHE: refs/dev of HF_HOME's cache is not looked at");
	unsetenv("HF_HUB_CACHE");

	/* TRANSFORMERS_OFFLINE is offline too */
	unsetenv("HF_HUB_OFFLINE");
	setenv("TRANSFORMERS_OFFLINE", "1", 1);
	expect("acme/other", NULL, TERN_HUB_CONFIG, TERN_E_UNAVAILABLE, NULL,
	       "while TRANSFORMERS_OFFLINE is set", "TRANSFORMERS_OFFLINE");
	unsetenv("TRANSFORMERS_OFFLINE");
	setenv("HF_HUB_OFFLINE", "1", 1);

	/* a directory of the same name wins (relative to the working directory) */
	if (chdir(root) == 0) {
		mk("acme/tiny");
		expect("acme/tiny", NULL, TERN_HUB_ALL, TERN_OK, "acme/tiny", NULL,
		       "an existing directory wins");
		char *dir = NULL, commit[41] = "x";
		tern_hub_resolve("acme/tiny", NULL, TERN_HUB_ALL, &dir, commit);
		check(dir && !strcmp(dir, "acme/tiny") && commit[0] == 0,
		      "a directory is returned as written: %s '%s'", dir ? dir : "(null)", commit);
		free(dir);
		/* not an id and not a directory: returned as a path (it fails where it is opened) */
		tern_hub_resolve("no/such/dir", NULL, TERN_HUB_ALL, &dir, NULL);
		check(dir && !strcmp(dir, "no/such/dir"), "a path that is not an id stays a path");
		free(dir);
	}
	unsetenv("HF_HUB_OFFLINE");
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
	if (system(cmd) != 0)
		printf("note: could not remove %s\n", root);
}

int main(void)
{
	test_sha256();
	test_ids();
	test_cache_dir();
	test_resolve();
	printf("test_hub: %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
