/* Axolotl's engine-only keys and optimizer names, each with the note that says what tern does
 * instead. Contract in config_keys.h. One row per key (or '*' pattern): add rows, keep them sorted
 * by group. */
#define _POSIX_C_SOURCE 200809L
#include "train/config_keys.h"

#include <fnmatch.h>
#include <string.h>

#define ATTN "tern always runs its own tiled (flash-style) attention with per-sample masks"
#define KERNEL "tern runs its own fused Vulkan/C kernels; there are no Triton or Liger kernels to choose"
#define DIST "tern trains on one device and streams layers that do not fit; there is no sharding or DDP"
#define LOGS "tern writes every logged step to <output_dir>/metrics.jsonl; there is no experiment tracker"
#define HUB "tern writes the adapter to <output_dir>/adapter and uploads nothing"
#define ARCH "tern reads the architecture from config.json and the tokenizer from tokenizer.json"
#define LOADER "tern reads and tokenizes the datasets in-process at start"
#define COMPILE "tern runs its own compute shaders and C loops; there is no torch.compile"

static const struct {
	const char *pattern, *note;
} engine[] = {
	/* attention implementations */
	{"attn_implementation", ATTN},
	{"flash_attention", ATTN},
	{"flash_attn_*", ATTN},
	{"xformers_attention", ATTN},
	{"xformers", ATTN},
	{"sdp_attention", ATTN},
	{"flex_attention", ATTN},
	{"eager_attention", ATTN},
	{"sage_attention", ATTN},
	{"s2_attention", ATTN},
	{"sdpa_varlen", ATTN},
	/* fused kernels and loss implementations */
	{"lora_*_kernel", KERNEL},
	{"fused_attn_kernel", KERNEL},
	{"liger_*", KERNEL},
	{"cut_cross_entropy", "tern's loss is already chunked over the vocabulary; no logits tensor is kept"},
	{"chunked_cross_entropy*",
	 "tern's loss is already chunked over the vocabulary; no logits tensor is kept"},
	{"plugins", "tern loads no Python plugins; its loss is chunked and its kernels fused already"},
	{"use_kernels", KERNEL},
	{"tiled_mlp_use_original_mlp", "tern's tiled MLP runs the model's own MLP (its activation and LoRA)"},
	/* distributed training */
	{"deepspeed", DIST},
	{"fsdp", DIST},
	{"fsdp_config", DIST},
	{"fsdp_version", DIST},
	{"fsdp_*", DIST},
	{"ddp*", DIST},
	{"local_rank", DIST},
	{"world_size", DIST},
	{"sequence_parallel_degree", DIST},
	{"context_parallel_size", DIST},
	{"tensor_parallel_size", DIST},
	{"dp_shard_size", DIST},
	{"dp_replicate_size", DIST},
	{"qlora_sharded_model_loading", DIST},
	{"low_cpu_mem_usage", "tern always loads the base layer by layer"},
	{"device_map", "tern places layers itself (device, host, disk): see `tern plan`"},
	{"max_memory", "tern places layers by device_memory and host_memory: see `tern plan`"},
	{"gpu_memory_limit", "tern places layers by device_memory and host_memory: see `tern plan`"},
	/* precision and memory details of the Python engine */
	{"gradient_checkpointing_kwargs",
	 "tern's gradient checkpointing keeps each layer's input and recomputes the layer in backward"},
	{"activation_offloading",
	 "tern keeps each layer's checkpointed input on the device; layers themselves stream"},
	{"torch_compile*", COMPILE},
	{"torch_empty_cache_steps", "tern manages its own device memory; there is no PyTorch cache to empty"},
	{"gc_steps", "tern manages its own memory; there is no Python garbage collector to run"},
	{"embeddings_skip_upcast",
	 "tern gathers embedding rows from the base as they are and widens them to f32"},
	/* experiment trackers and hubs */
	{"wandb_*", LOGS},
	{"use_wandb", LOGS},
	{"mlflow_*", LOGS},
	{"hf_mlflow_log_artifacts", LOGS},
	{"use_mlflow", LOGS},
	{"comet_*", LOGS},
	{"use_comet", LOGS},
	{"trackio_*", LOGS},
	{"use_trackio", LOGS},
	{"loss_watchdog_*",
	 "tern stops with an error when the loss is not finite; there is no loss watchdog"},
	{"include_tokens_per_second", "tern reports tokens/s in the progress line and metrics.jsonl"},
	{"include_tkps", "tern reports tokens/s in the progress line and metrics.jsonl"},
	{"hub_*", HUB},
	{"push_dataset_to_hub", HUB},
	{"hf_use_auth_token", "tern reads local files only"},
	/* models and tokenizers */
	{"model_type", ARCH},
	{"tokenizer_type", ARCH},
	{"tokenizer_use_fast", ARCH},
	{"tokenizer_legacy", ARCH},
	{"is_falcon_derived_model", ARCH},
	{"trust_remote_code", "tern runs no model code from the checkpoint"},
	{"unfrozen_parameters", "tern trains only the LoRA weights; every base parameter stays frozen"},
	{"resize_token_embeddings_to_32x", "tern keeps the vocabulary of the checkpoint"},
	{"mean_resizing_embeddings", "tern keeps the vocabulary of the checkpoint"},
	/* data loading */
	{"dataset_processes", LOADER},
	{"dataset_num_proc", LOADER},
	{"dataset_keep_in_memory", LOADER},
	{"skip_prepare_dataset", LOADER},
	{"is_preprocess", LOADER},
	{"dataloader_*", "tern builds its batches in-process; there are no dataloader workers"},
	{"group_by_length", "tern orders rows by its seeded shuffle (and packs them with sample_packing)"},
	{"sample_packing_eff_est", "tern packs next-fit and counts the rows it made"},
	{"sample_packing_bin_size", "tern packs next-fit and counts the rows it made"},
	{"sample_packing_group_size", "tern packs next-fit and counts the rows it made"},
	{"multipack_real_batches", "tern packs next-fit and counts the rows it made"},
	{"eval_batch_size", "tern evaluates with micro_batch_size rows at a time"},
	/* training loop details */
	{"strict", "tern always checks every key"},
	{"debug", "tern's -v and -v -v print more"},
	{"early_stopping_patience", "tern runs the planned steps; watch eval_loss in metrics.jsonl"},
	{"load_best_model_at_end", "tern saves the last adapter; every checkpoint-N/ keeps its own"},
	{"metric_for_best_model", "tern saves the last adapter; every checkpoint-N/ keeps its own"},
	{"greater_is_better", "tern saves the last adapter; every checkpoint-N/ keeps its own"},
	{"save_safetensors", "tern always writes safetensors"},
	{"save_strategy", "tern saves by save_steps or saves_per_epoch"},
	{"eval_strategy", "tern evaluates by eval_steps or evals_per_epoch"},
	{"auto_find_batch_size", "tern plans memory before it allocates: see `tern plan`"},
	{"profiler_steps", "tern train --profile prints device time per op kind"},
};

const char *tern_config_engine_note(const char *name)
{
	for (size_t i = 0; i < sizeof engine / sizeof engine[0]; i++)
		if (!fnmatch(engine[i].pattern, name, 0))
			return engine[i].note;
	return NULL;
}

const char *tern_config_engine_key(size_t i)
{
	return i < sizeof engine / sizeof engine[0] ? engine[i].pattern : NULL;
}

#define ADAMW_STATES                                                                                   \
	"tern keeps AdamW's two moments in f32, 8 bytes per LoRA parameter (about 320 MB for r=16 on " \
	"every linear layer of a 7B model), so 8-bit or paged states would save little"

static const struct {
	const char *name, *note;
} optimizers[] = {
	{"adamw_torch", ""},
	{"adamw_torch_fused", "runs as tern's f32 AdamW (adamw_torch semantics)"},
	{"adamw_hf", "runs as tern's f32 AdamW (adamw_torch semantics)"},
	{"adamw_apex_fused", "runs as tern's f32 AdamW (adamw_torch semantics)"},
	{"adamw_anyprecision", "runs as tern's f32 AdamW (adamw_torch semantics)"},
	{"optimi_adamw", "runs as tern's f32 AdamW (adamw_torch semantics)"},
	{"adamw_bnb_8bit", "runs as tern's AdamW: " ADAMW_STATES},
	{"adamw_8bit", "runs as tern's AdamW: " ADAMW_STATES},
	{"adamw_torch_8bit", "runs as tern's AdamW: " ADAMW_STATES},
	{"adamw_torch_4bit", "runs as tern's AdamW: " ADAMW_STATES},
	{"ao_adamw_8bit", "runs as tern's AdamW: " ADAMW_STATES},
	{"ao_adamw_4bit", "runs as tern's AdamW: " ADAMW_STATES},
	{"ao_adamw_fp8", "runs as tern's AdamW: " ADAMW_STATES},
	{"paged_adamw_8bit", "runs as tern's AdamW: " ADAMW_STATES},
	{"paged_adamw_32bit", "runs as tern's AdamW: " ADAMW_STATES},
};

const char *tern_config_optimizer_note(const char *name)
{
	for (size_t i = 0; i < sizeof optimizers / sizeof optimizers[0]; i++)
		if (!strcmp(optimizers[i].name, name))
			return optimizers[i].note;
	return NULL;
}

const char *tern_config_optimizer_names(void)
{
	return "adamw_torch, adamw_torch_fused, adamw_hf, adamw_apex_fused, adamw_anyprecision, optimi_adamw, "
	       "adamw_bnb_8bit, adamw_8bit, adamw_torch_8bit, adamw_torch_4bit, ao_adamw_8bit, ao_adamw_4bit, "
	       "ao_adamw_fp8, paged_adamw_8bit, paged_adamw_32bit";
}
