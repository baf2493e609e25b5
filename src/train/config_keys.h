/* Axolotl keys that only steer its Python engine (attention kernels, distributed training, loggers,
 * hub uploads, compile flags, ...). tern accepts them and says in one note what it does instead
 * (docs/CONFIG.md, "Axolotl keys tern accepts with a note"). The table lives in config_keys.c so
 * that keys can be added there without touching the parser in config.c. */
#ifndef TERN_TRAIN_CONFIG_KEYS_H
#define TERN_TRAIN_CONFIG_KEYS_H

#include <stddef.h>

/* The note for an engine-only key ("what tern does instead"), or NULL when name is not one. A
 * pattern may hold '*' (fnmatch): "wandb_*", "lora_*_kernel". */
const char *tern_config_engine_note(const char *name);

/* The i-th row's key of the engine-only table (a pattern may hold '*'), NULL past the end: for
 * did-you-mean suggestions. */
const char *tern_config_engine_key(size_t i);

/* The note for an optimizer name that runs as tern's AdamW, or NULL when name is no AdamW variant
 * tern can stand in for. "adamw_torch" itself has the empty note "". */
const char *tern_config_optimizer_note(const char *name);

/* The AdamW variants tern accepts, comma-separated (for messages). */
const char *tern_config_optimizer_names(void);

#endif
