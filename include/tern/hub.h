/* tern — models named by a Hugging Face Hub id (`mistralai/Mistral-7B-v0.1`).
 *
 * base_model is either a model directory or a Hub id. The rule: a path that names an existing
 * directory is that directory; otherwise a name of the form org/name (letters, digits, '-', '_',
 * '.'; no "--" or "..") is a Hub id; anything else is a path (and fails where it is opened).
 *
 * A Hub id is looked up in the Hugging Face cache exactly as huggingface_hub lays it out, so a
 * model that transformers or `huggingface-cli download` fetched is found without a download:
 *	<cache>/models--<org>--<name>/refs/<revision>       the commit hash of a branch or tag
 *	<cache>/models--<org>--<name>/snapshots/<commit>/   the files (symlinks into blobs/)
 *	<cache>/models--<org>--<name>/blobs/<etag>          the contents (etag = sha256 for LFS files)
 *	<cache>/models--<org>--<name>/.no_exist/<commit>/   empty files naming files the repo lacks
 * where <cache> is $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub,
 * else ~/.cache/huggingface/hub. When the snapshot lacks a file that is needed and
 * HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is not set, the file is downloaded from $HF_ENDPOINT
 * (default https://huggingface.co) into the same cache (resumable, sha256-checked where the Hub
 * gives one), with $HF_TOKEN or the token file $HF_HOME/token. */
#ifndef TERN_HUB_H
#define TERN_HUB_H

#include "tern/tern.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What a caller needs of a model (or-ed). */
enum {
	TERN_HUB_CONFIG = 1,    /* config.json (tern plan, tern info) */
	TERN_HUB_TOKENIZER = 2, /* tokenizer.json, tokenizer_config.json, special_tokens_map.json,
				   generation_config.json, where the repository has them */
	TERN_HUB_WEIGHTS = 4,   /* model.safetensors, or model.safetensors.index.json and every
				   shard it lists */
	TERN_HUB_ALL = 7,
};

/* Download progress: called when a file starts (done 0), as bytes arrive and when it is complete
 * (done == total; total 0 when the size is unknown). repo_id "org/name", file its path in the
 * repository. The default does nothing. */
typedef void (*tern_hub_progress_fn)(const char *repo_id, const char *file, uint64_t done, uint64_t total,
				     void *user);
void tern_hub_set_progress(tern_hub_progress_fn fn, void *user);

/* True when s has the form of a Hub id (org/name). */
bool tern_hub_is_id(const char *s);

/* Resolves base_model (a directory or a Hub id, see above) to a directory holding what `need`
 * asks for, downloading what the cache lacks. revision: a branch, tag or commit hash (NULL: "main").
 * *dir receives a malloc'ed path (the snapshot directory, or a copy of name_or_path for a
 * directory); commit (may be NULL; 41 bytes) receives the snapshot's commit hash, "" for a
 * directory. Passing that commit as revision to a later call keeps every file of one run from one
 * commit. Fails with one line naming the repository, the cache path and the fix: offline and not
 * cached (TERN_E_UNAVAILABLE), 401/403/404 from the Hub, no network (TERN_E_UNAVAILABLE), a
 * checksum mismatch (TERN_E_FORMAT), the cache not writable (TERN_E_IO). */
enum tern_status tern_hub_resolve(const char *name_or_path, const char *revision, unsigned need, char **dir,
				  char *commit);

/* The cache directory in use (see above) into buf; false when it does not fit or no home is known. */
bool tern_hub_cache_dir(char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
