/* The YAML training config: every key parsed and written back (round trip), each kind of error
 * with its exact file:line: key message, unknown-key suggestions, --set overrides, notes for the
 * axolotl keys tern ignores. */
#include "train/config.h"
#include "train/config_keys.h"
#include "train/plan.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <yaml.h>

static int passed, failed;

static void check(bool ok, const char *what)
{
	if (ok) {
		passed++;
	} else {
		failed++;
		printf("FAIL: %s\n", what);
	}
}

static void checkf(bool ok, const char *fmt, ...) TERN_PRINTF(2, 3);
static void checkf(bool ok, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	check(ok, buf);
}

static struct tern_config *parse(const char *text)
{
	struct tern_config *cfg = NULL;
	if (tern_config_parse(&cfg, "configs/x.yaml", text, strlen(text)) != TERN_OK)
		printf("  parse error: %s\n", tern_error());
	return cfg;
}

/* Parses text expecting failure with exactly msg. */
static void expect_error(const char *text, const char *msg)
{
	struct tern_config *cfg = NULL;
	enum tern_status st = tern_config_parse(&cfg, "configs/x.yaml", text, strlen(text));
	bool ok = st != TERN_OK && cfg == NULL && strcmp(tern_error(), msg) == 0;
	if (!ok)
		printf("  want: %s\n  got:  %s\n", msg, st ? tern_error() : "(success)");
	check(ok, msg);
	tern_config_free(cfg);
}

/* The axolotl example of ecosystem.md with every other key added. */
static const char *full_yaml = "base_model: NousResearch/Meta-Llama-3-8B\n"
			       "load_in_4bit: true\n"
			       "datasets:\n"
			       "  - path: data/alpaca.jsonl\n"
			       "    type: alpaca\n"
			       "  - path: \"data/chat \\\"q\\\".jsonl\"\n"
			       "    type: chat_template\n"
			       "  - path: data/raw.jsonl\n"
			       "    type: completion\n"
			       "  - path: data/tok.jsonl\n"
			       "    type: pretokenized\n"
			       "val_set_size: 0.05\n"
			       "output_dir: ./outputs/qlora-out\n"
			       "adapter: qlora\n"
			       "sequence_len: 4096\n"
			       "sample_packing: true\n"
			       "lora_r: 32\n"
			       "lora_alpha: 16\n"
			       "lora_dropout: 0.05\n"
			       "lora_target_linear: true\n"
			       "lora_target_modules:\n"
			       "  - q_proj\n"
			       "  - v_proj\n"
			       "lora_model_dir:\n"
			       "use_rslora: true\n"
			       "chat_template: llama3\n"
			       "gradient_accumulation_steps: 4\n"
			       "micro_batch_size: 2\n"
			       "num_epochs: 4\n"
			       "max_steps: 1000\n"
			       "optimizer: paged_adamw_32bit\n"
			       "lr_scheduler: cosine\n"
			       "learning_rate: 0.0002\n"
			       "train_on_inputs: false\n"
			       "bf16: auto\n"
			       "gradient_checkpointing: true\n"
			       "logging_steps: 1\n"
			       "flash_attention: true\n"
			       "warmup_ratio: 0.03\n"
			       "saves_per_epoch: 1\n"
			       "save_total_limit: 3\n"
			       "eval_steps: 50\n"
			       "weight_decay: 0.0\n"
			       "max_grad_norm: 0.3\n"
			       "adam_beta1: 0.9\n"
			       "adam_beta2: 0.95\n"
			       "adam_epsilon: 1e-6\n"
			       "seed: 1234\n"
			       "resume_from_checkpoint: auto\n"
			       "special_tokens:\n"
			       "  pad_token: \"<|end_of_text|>\"\n"
			       "base_format: nf4\n"
			       "backend: vulkan\n"
			       "device: 1\n"
			       "device_memory: 11.5GB\n"
			       "host_memory: 48GB\n"
			       "offload_dir: /tmp/offload\n"
			       "max_time: 1h30m\n"
			       "compute_dtype: f16\n"
			       "deepspeed: deepspeed_configs/zero2.json\n"
			       "wandb_project: test\n"
			       "load_in_8bit: false\n"
			       "xformers_attention: false\n";

static void test_full(void)
{
	struct tern_config *c = parse(full_yaml);
	check(c != NULL, "full config parses");
	if (!c)
		return;
	check(!strcmp(c->base_model, "NousResearch/Meta-Llama-3-8B"), "base_model");
	check(c->load_in_4bit && c->adapter == TERN_ADAPTER_QLORA, "load_in_4bit, adapter");
	check(c->n_datasets == 4 && c->datasets[0].type == TERN_DS_ALPACA &&
		      c->datasets[1].type == TERN_DS_CHAT && c->datasets[2].type == TERN_DS_COMPLETION &&
		      c->datasets[3].type == TERN_DS_PRETOKENIZED,
	      "datasets types");
	check(c->n_datasets == 4 && !strcmp(c->datasets[1].path, "data/chat \"q\".jsonl"),
	      "quoted dataset path");
	check(c->val_set_size == 0.05 && c->sequence_len == 4096 && c->sample_packing, "data keys");
	check(c->lora_r == 32 && c->lora_alpha == 16 && c->lora_dropout == 0.05 && c->lora_target_linear &&
		      c->use_rslora && c->lora_model_dir == NULL,
	      "lora keys");
	check(c->n_target_modules == 2 && !strcmp(c->lora_target_modules[1], "v_proj"),
	      "lora_target_modules");
	check(c->chat_template == TERN_TEMPLATE_LLAMA3, "chat_template");
	check(c->gradient_accumulation_steps == 4 && c->micro_batch_size == 2 && c->num_epochs == 4 &&
		      c->max_steps == 1000,
	      "batching");
	check(c->learning_rate == 0.0002 && c->lr_scheduler == TERN_SCHED_COSINE && c->warmup_ratio == 0.03 &&
		      c->warmup_steps == 0,
	      "schedule");
	check(c->max_grad_norm == 0.3 && c->adam_beta2 == 0.95 && c->adam_epsilon == 1e-6 && c->seed == 1234,
	      "optimizer numbers");
	check(c->saves_per_epoch == 1 && c->save_total_limit == 3 && c->eval_steps == 50, "saves/evals");
	check(!strcmp(c->resume_from_checkpoint, "auto"), "resume_from_checkpoint");
	check(c->pad_token && !strcmp(c->pad_token, "<|end_of_text|>") && !c->bos_token, "special_tokens");
	check(c->base_format == TERN_FORMAT_NF4 && c->backend == TERN_BACKEND_VULKAN && c->device == 1,
	      "placement");
	check(c->device_memory == (int64_t)(11.5 * 1073741824.0) && c->host_memory == 48LL << 30,
	      "memory sizes");
	check(c->max_time == 5400 && c->compute_dtype == TERN_COMPUTE_F16, "max_time, compute_dtype");
	check(!strcmp(c->offload_dir, "/tmp/offload"), "offload_dir");
	/* notes: optimizer, bf16, flash_attention, deepspeed, wandb_project (not the false ones) */
	check(c->n_notes == 5, "five notes");
	bool opt = false, bf = false, ds = false, wb = false;
	for (int i = 0; i < c->n_notes; i++) {
		opt |= !strcmp(
			c->notes[i],
			"configs/x.yaml:31: optimizer: 'paged_adamw_32bit' runs as tern's AdamW: tern "
			"keeps AdamW's two moments in f32, 8 bytes per LoRA parameter (about 320 MB for "
			"r=16 on every linear layer of a 7B model), so 8-bit or paged states would save "
			"little");
		bf |= !strncmp(c->notes[i],
			       "configs/x.yaml:35: bf16: products run as compute_dtype (default auto", 68);
		ds |= !strncmp(c->notes[i], "configs/x.yaml:60: deepspeed: tern trains on one device", 54);
		wb |= !strncmp(c->notes[i], "configs/x.yaml:61: wandb_project: tern writes every logged step",
			       62);
	}
	check(opt && bf && ds && wb, "note texts with file:line");
	if (!(opt && bf && ds && wb))
		for (int i = 0; i < c->n_notes; i++)
			printf("  note: %s\n", c->notes[i]);

	/* round trip: write, parse, write again: same text, same values */
	char *y1 = NULL, *y2 = NULL;
	check(tern_config_write(c, &y1) == TERN_OK, "write");
	struct tern_config *c2 = y1 ? parse(y1) : NULL;
	check(c2 != NULL, "written config parses");
	if (c2) {
		check(tern_config_write(c2, &y2) == TERN_OK && !strcmp(y1, y2),
		      "round trip is a fixed point");
		check(c2->device_memory == c->device_memory && c2->max_time == c->max_time &&
			      c2->learning_rate == c->learning_rate && c2->adam_epsilon == c->adam_epsilon &&
			      c2->val_set_size == c->val_set_size && c2->n_datasets == 4 &&
			      !strcmp(c2->datasets[1].path, c->datasets[1].path) && c2->n_notes == 0,
		      "round trip values");
	}
	if (failed)
		printf("%s", y1 ? y1 : "");
	free(y1);
	free(y2);
	tern_config_free(c2);
	tern_config_free(c);
}

static void test_defaults(void)
{
	struct tern_config *c = parse("base_model: m\ndatasets:\n  - {path: d.jsonl, type: alpaca}\n");
	check(c != NULL, "minimal config");
	if (!c)
		return;
	check(c->lora_r == 8 && c->lora_alpha == 16 && c->sequence_len == 2048 && c->micro_batch_size == 1 &&
		      c->learning_rate == 2e-4 && c->seed == 42 && c->base_format == TERN_FORMAT_AUTO &&
		      c->max_grad_norm == 1.0 && c->gradient_checkpointing && !c->train_on_inputs,
	      "defaults");
	check(c->n_target_modules == 2 && !strcmp(c->lora_target_modules[0], "q_proj"),
	      "default target modules q_proj, v_proj");
	check(!strcmp(c->output_dir, "./outputs/tern-out"), "default output_dir");
	tern_config_free(c);
	c = parse("base_model: m\nadapter: qlora\ndatasets:\n  - {path: d.jsonl, type: alpaca}\n");
	check(c && c->base_format == TERN_FORMAT_NF4_DQ, "qlora resolves base_format nf4-dq");
	tern_config_free(c);
}

#define HEAD "base_model: m\ndatasets:\n  - path: d.jsonl\n    type: alpaca\n"

static void test_errors(void)
{
	expect_error(HEAD "lora_r: abc\n",
		     "configs/x.yaml:5: lora_r: 'abc' is not an integer (allowed: 1..4096)");
	expect_error(HEAD "lora_r: 0\n", "configs/x.yaml:5: lora_r: '0' is out of range (allowed: 1..4096)");
	expect_error(HEAD "lora_dropout: 1\n",
		     "configs/x.yaml:5: lora_dropout: '1' is out of range (allowed: 0 <= p < 1)");
	expect_error(HEAD "learning_rate: fast\n",
		     "configs/x.yaml:5: learning_rate: 'fast' is not a number (allowed: 0 < lr <= 10)");
	expect_error(HEAD "sample_packing: maybe\n",
		     "configs/x.yaml:5: sample_packing: 'maybe' is not a boolean (allowed: true, false)");
	expect_error(HEAD "lr_scheduler: cosin\n",
		     "configs/x.yaml:5: lr_scheduler: 'cosin' is not allowed "
		     "(allowed: cosine, linear, constant, constant_with_warmup, cosine_with_min_lr); did you "
		     "mean 'cosine'?");
	expect_error(HEAD "adapter: full\n",
		     "configs/x.yaml:5: adapter: 'full' is not allowed (allowed: lora, qlora)");
	expect_error(HEAD "device_memory: lots\n", "configs/x.yaml:5: device_memory: 'lots' is not a size "
						   "(allowed: auto or a size like 11.5GB, 512MB)");
	expect_error(HEAD "max_time: 8x\n", "configs/x.yaml:5: max_time: '8x' is not a duration "
					    "(allowed: a duration like 8h, 90m, 1h30m, 45s)");
	expect_error(HEAD "optimizer: sgd\n",
		     "configs/x.yaml:5: optimizer: 'sgd' is not an AdamW variant tern can run (allowed: "
		     "adamw_torch, adamw_torch_fused, adamw_hf, adamw_apex_fused, adamw_anyprecision, "
		     "optimi_adamw, adamw_bnb_8bit, adamw_8bit, adamw_torch_8bit, adamw_torch_4bit, "
		     "ao_adamw_8bit, ao_adamw_4bit, ao_adamw_fp8, paged_adamw_8bit, paged_adamw_32bit)");
	expect_error(
		HEAD "lora_target_modules: [q_proj, qproj]\n",
		"configs/x.yaml:5: lora_target_modules: 'qproj' is not a module tern can adapt (allowed: "
		"q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, all-linear, gate); did you mean "
		"'q_proj'?");
	expect_error(HEAD "lora_r: [1, 2]\n",
		     "configs/x.yaml:5: lora_r: '[a list]' is not a single value (allowed: 1..4096)");
	expect_error(
		"base_model: m\ndatasets:\n  - path: d.jsonl\n    type: alpacca\n",
		"configs/x.yaml:4: datasets.0.type: 'alpacca' is not allowed (allowed: alpaca, chat_template, "
		"completion, pretokenized); did you mean 'alpaca'?");
	expect_error("base_model: m\ndatasets:\n  - path: d.jsonl\n    typ: alpaca\n",
		     "configs/x.yaml:4: datasets.0.typ: unknown dataset key (allowed: path, type, split, "
		     "data_files, ds_type, field, field_messages, message_property_mappings, "
		     "message_field_role, message_field_content); did you mean 'type'?");
	expect_error(
		"base_model: m\ndatasets:\n  - path: d.jsonl\n",
		"configs/x.yaml:3: datasets.0.type: missing (allowed: alpaca, chat_template, completion, "
		"pretokenized)");
	expect_error(HEAD "lora_rank: 8\n",
		     "configs/x.yaml:5: lora_rank: unknown key (see docs/CONFIG.md); did you mean 'lora_r'?");
	expect_error(HEAD "learning_rat: 1e-4\n", "configs/x.yaml:5: learning_rat: unknown key (see "
						  "docs/CONFIG.md); did you mean 'learning_rate'?");
	expect_error(HEAD "zzzzzzzz: 1\n", "configs/x.yaml:5: zzzzzzzz: unknown key (see docs/CONFIG.md)");
	expect_error(HEAD "lora_r: 8\nlora_r: 16\n",
		     "configs/x.yaml:6: lora_r: duplicate key (first set on line 5)");
	expect_error(HEAD "warmup_steps: 10\nwarmup_ratio: 0.1\n",
		     "configs/x.yaml:5: warmup_steps: conflicts with "
		     "configs/x.yaml:6: warmup_ratio: set one of them");
	expect_error(
		HEAD "adapter: qlora\nbase_format: bf16\n",
		"configs/x.yaml:6: base_format: 'bf16' conflicts with configs/x.yaml:5: adapter (allowed "
		"with a 4-bit base: nf4, nf4-dq)");
	expect_error(HEAD "val_set_size: 2.5\n",
		     "configs/x.yaml:5: val_set_size: '2.5' is neither a fraction nor "
		     "a count (allowed: a fraction < 1 or a count >= 1)");
	expect_error("datasets:\n  - {path: d.jsonl, type: alpaca}\n",
		     "configs/x.yaml: base_model: missing (allowed: a model directory or a Hub id)");
	expect_error("base_model: m\n",
		     "configs/x.yaml: datasets: missing (allowed: a list of {path, type})");
	expect_error("base_model: m\n  bad: [\n",
		     "configs/x.yaml:2: YAML syntax error: mapping values are not "
		     "allowed in this context");
	expect_error("- a\n- b\n", "configs/x.yaml:1: the config is not a mapping of keys to values");
	expect_error("", "configs/x.yaml: the config is empty");
	expect_error(
		HEAD "special_tokens:\n  pad: x\n",
		"configs/x.yaml:6: special_tokens.pad: unknown special token (allowed: bos_token, eos_token, "
		"pad_token, unk_token); did you mean 'pad_token'?");

	struct tern_config *c = NULL;
	check(tern_config_load(&c, "/nonexistent/x.yaml") == TERN_E_IO &&
		      !strncmp(tern_error(), "/nonexistent/x.yaml: cannot open", 32),
	      "missing file");
	check(tern_config_load(&c, "/") == TERN_E_IO &&
		      !strcmp(tern_error(), "/: cannot read: Is a directory (give the config file, e.g. "
					    "configs/demo.yaml)"),
	      "a directory given as the config: one line that says so");
}

static void test_set(void)
{
	struct tern_config *c = parse(HEAD "lora_r: 8\n");
	if (!c) {
		check(false, "set: base parses");
		return;
	}
	check(tern_config_set(c, "lora_r=64") == TERN_OK && c->lora_r == 64, "--set lora_r=64");
	check(tern_config_set(c, "lora_r=abc") == TERN_E_INVALID &&
		      !strcmp(tern_error(), "--set: lora_r: 'abc' is not an integer (allowed: 1..4096)") &&
		      c->lora_r == 64,
	      "--set bad value keeps the old one");
	if (c->lora_r != 64 ||
	    strcmp(tern_error(), "--set: lora_r: 'abc' is not an integer (allowed: 1..4096)"))
		printf("  got: %s\n", tern_error());
	check(tern_config_set(c, "lora_target_modules=[q_proj, k_proj, o_proj]") == TERN_OK &&
		      c->n_target_modules == 3 && !strcmp(c->lora_target_modules[2], "o_proj"),
	      "--set flow list");
	check(tern_config_set(c, "lora_target_modules=gate_proj,up_proj") == TERN_OK &&
		      c->n_target_modules == 2,
	      "--set comma list");
	check(tern_config_set(c, "datasets.0.path=other.jsonl") == TERN_OK &&
		      !strcmp(c->datasets[0].path, "other.jsonl") && c->datasets[0].type == TERN_DS_ALPACA,
	      "--set datasets.0.path");
	check(tern_config_set(c, "datasets.0.type=completion") == TERN_OK &&
		      c->datasets[0].type == TERN_DS_COMPLETION,
	      "--set datasets.0.type");
	check(tern_config_set(c, "datasets.1={path: b.jsonl, type: pretokenized}") == TERN_OK &&
		      c->n_datasets == 2 && c->datasets[1].type == TERN_DS_PRETOKENIZED,
	      "--set datasets.1 appends");
	check(tern_config_set(c, "datasets.5.path=x") == TERN_E_INVALID &&
		      !strcmp(tern_error(), "--set: datasets.5: no such dataset (allowed: 0..2)"),
	      "--set datasets out of range");
	check(tern_config_set(c, "special_tokens.pad_token=<pad>") == TERN_OK &&
		      !strcmp(c->pad_token, "<pad>"),
	      "--set special_tokens.pad_token");
	check(tern_config_set(c, "device_memory=6GB") == TERN_OK && c->device_memory == 6LL << 30,
	      "--set size");
	check(tern_config_set(c, "lora_model_dir=adapters/a") == TERN_OK &&
		      !strcmp(c->lora_model_dir, "adapters/a"),
	      "--set string");
	check(tern_config_set(c, "lora_model_dir=null") == TERN_OK && c->lora_model_dir == NULL,
	      "--set null resets");
	check(tern_config_set(c, "lora_r=") == TERN_OK && c->lora_r == 8, "--set empty resets to default");
	check(tern_config_set(c, "lora_rr=4") == TERN_E_INVALID &&
		      !strcmp(tern_error(),
			      "--set: lora_rr: unknown key (see docs/CONFIG.md); did you mean 'lora_r'?"),
	      "--set unknown key suggestion");
	check(tern_config_set(c, "lora_r.x=4") == TERN_E_INVALID, "--set sub-key of a scalar");
	check(tern_config_set(c, "noequals") == TERN_E_INVALID, "--set without =");
	check(tern_config_set(c, "warmup_steps=5") == TERN_OK &&
		      tern_config_set(c, "warmup_ratio=0.1") == TERN_OK &&
		      tern_config_check(c) == TERN_E_INVALID &&
		      !strcmp(tern_error(),
			      "--set: warmup_steps: conflicts with --set: warmup_ratio: set one of them"),
	      "check after --set names --set");
	tern_config_free(c);
}

/* PEFT's all-linear: a scalar or a one-element list, the same as lora_target_linear: true (and the
 * written config parses back to it); mixed with module names it is an error. */
static void test_all_linear(void)
{
	const char *forms[] = {HEAD "lora_target_modules: all-linear\n",
			       HEAD "lora_target_modules: [all-linear]\n",
			       HEAD "lora_target_modules:\n  - all-linear\nlora_target_linear: false\n"};
	for (int i = 0; i < 3; i++) {
		struct tern_config *c = parse(forms[i]), *c2 = NULL;
		char *y = NULL;
		check(c && c->lora_target_linear && c->n_target_modules == 1, "all-linear: target_linear");
		if (!c)
			continue;
		check(tern_config_write(c, &y) == TERN_OK &&
			      tern_config_parse(&c2, "w.yaml", y, strlen(y)) == TERN_OK &&
			      c2->lora_target_linear && c2->n_target_modules == 1 &&
			      !strcmp(c2->lora_target_modules[0], "all-linear"),
		      "all-linear: round trip");
		free(y);
		tern_config_free(c2);
		tern_config_free(c);
	}
	struct tern_config *c = parse(HEAD "lora_target_modules: [q_proj]\n");
	check(c && !c->lora_target_linear, "one module is not all-linear");
	if (c) {
		check(tern_config_set(c, "lora_target_modules=all-linear") == TERN_OK &&
			      tern_config_check(c) == TERN_OK && c->lora_target_linear,
		      "--set lora_target_modules=all-linear");
		tern_config_free(c);
	}
	expect_error(HEAD "lora_target_modules: [q_proj, all-linear]\n",
		     "configs/x.yaml:5: lora_target_modules: 'all-linear' stands alone (write "
		     "lora_target_modules: all-linear, or list the modules)");
	expect_error(
		HEAD "lora_target_modules: all_linear\n",
		"configs/x.yaml:5: lora_target_modules: 'all_linear' is not a module tern can adapt "
		"(allowed: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, all-linear, gate); "
		"did you mean 'all-linear'?");
}

/* eval_prompts (issue 13): strings and message lists kept as JSON, written back, bad items refused. */
static void test_eval_prompts(void)
{
	struct tern_config
		*c = parse(HEAD "eval_prompts:\n  - \"Once \\\"upon\\\" a time\"\n"
				"  - [{role: system, content: be brief}, {role: user, content: h\u00e9llo}]\n"
				"eval_max_new_tokens: 8\n"),
		*c2 = NULL;
	char *y = NULL;
	check(c && c->n_eval_prompts == 2 && !strcmp(c->eval_prompts[0], "\"Once \\\"upon\\\" a time\"") &&
		      !strcmp(c->eval_prompts[1], "[{\"role\": \"system\", \"content\": \"be brief\"}, "
						  "{\"role\": \"user\", \"content\": \"h\\u00E9llo\"}]") &&
		      c->eval_max_new_tokens == 8,
	      "eval_prompts parsed as JSON texts");
	if (c) {
		check(tern_config_write(c, &y) == TERN_OK &&
			      tern_config_parse(&c2, "w.yaml", y, strlen(y)) == TERN_OK &&
			      c2->n_eval_prompts == 2 && !strcmp(c2->eval_prompts[0], c->eval_prompts[0]) &&
			      !strcmp(c2->eval_prompts[1], c->eval_prompts[1]) &&
			      c2->eval_max_new_tokens == 8,
		      "eval_prompts round trip");
		check(tern_config_set(c, "eval_prompts=null") == TERN_OK && c->n_eval_prompts == 0,
		      "--set eval_prompts=null");
	}
	free(y);
	tern_config_free(c);
	tern_config_free(c2);
	expect_error(
		HEAD "eval_prompts: hello\n",
		"configs/x.yaml:5: eval_prompts: 'hello' is not a list (allowed: a list of prompts: strings, or "
		"lists of {role, content} messages)");
	expect_error(
		HEAD "eval_prompts:\n  - [{role: user}]\n",
		"configs/x.yaml:6: eval_prompts: '{a mapping}' is not a {role, content} message (allowed: a list of "
		"prompts: strings, or lists of {role, content} messages)");
}

/* lora_modules_to_save: PEFT's modules_to_save names, written back, and a typo refused. */
static void test_modules_to_save(void)
{
	struct tern_config *c = parse(HEAD "lora_modules_to_save: [embed_tokens, lm_head]\n"), *c2 = NULL;
	char *y = NULL;
	check(c && c->n_modules_to_save == 2 && !strcmp(c->lora_modules_to_save[1], "lm_head"),
	      "modules_to_save parsed");
	if (c) {
		check(tern_config_write(c, &y) == TERN_OK &&
			      strstr(y, "lora_modules_to_save: [embed_tokens, lm_head]") &&
			      tern_config_parse(&c2, "w.yaml", y, strlen(y)) == TERN_OK &&
			      c2->n_modules_to_save == 2,
		      "modules_to_save round trip");
		check(tern_config_set(c, "lora_modules_to_save=null") == TERN_OK && c->n_modules_to_save == 0,
		      "--set lora_modules_to_save=null");
	}
	free(y);
	tern_config_free(c2);
	tern_config_free(c);
	c = parse(HEAD);
	check(c && c->n_modules_to_save == 0, "no modules_to_save by default");
	tern_config_free(c);
	expect_error(
		HEAD "lora_modules_to_save: [lm_heads]\n",
		"configs/x.yaml:5: lora_modules_to_save: 'lm_heads' is not a module tern can train in full "
		"(allowed: embed_tokens, lm_head); did you mean 'lm_head'?");
}

static void test_units(void)
{
	int64_t v;
	check(tern_parse_size("11.5GB", &v) && v == 12348030976LL, "11.5GB");
	check(tern_parse_size("512MiB", &v) && v == 512LL << 20, "512MiB");
	check(tern_parse_size("auto", &v) && v == 0, "auto size");
	check(!tern_parse_size("-1GB", &v) && !tern_parse_size("1XB", &v) && !tern_parse_size("", &v),
	      "bad sizes");
	check(tern_parse_duration("8h", &v) && v == 28800, "8h");
	check(tern_parse_duration("90m", &v) && v == 5400, "90m");
	check(tern_parse_duration("1h30m", &v) && v == 5400, "1h30m");
	check(tern_parse_duration("600", &v) && v == 600, "plain seconds");
	check(!tern_parse_duration("1h30", &v) && !tern_parse_duration("h", &v), "bad durations");
}

/* ---- issue 10: axolotl's configs as written, schedules, dataset keys, bad input ---- */

static bool one_line_notes(const struct tern_config *c)
{
	for (int i = 0; i < c->n_notes; i++)
		if (strchr(c->notes[i], '\n') || strchr(c->notes[i], '\r'))
			return false;
	return true;
}

/* Notes about key (text "FILE:LINE: key: ..."). */
static int notes_about(const struct tern_config *c, const char *key)
{
	int n = 0;
	for (int i = 0; i < c->n_notes; i++) {
		const char *p = strstr(c->notes[i], ": ");
		if (p && !strncmp(p + 2, key, strlen(key)) && p[2 + strlen(key)] == ':')
			n++;
	}
	return n;
}

static char *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char *buf = malloc(1 << 20);
	*len = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
	if (buf)
		buf[*len] = 0;
	fclose(f);
	return buf;
}

/* tests/data/axolotl: each parses as written; every note is one line; every engine-only key that
 * asks for something yields exactly one note (none when null/false/empty). */
static void test_axolotl_examples(void)
{
	static const char *const files[] = {
		"llama-2_lora.yml",
		"llama-2_qlora.yml",
		"llama-3_instruct-lora-8b.yml",
		"llama-3_lora-1b.yml",
		"llama-3_lora-8b.yml",
		"llama-3_qlora-1b.yml",
		"llama-3_qlora.yml",
		"mistral_config.yml",
		"mistral_lora.yml",
		"mistral_mixtral_mixtral-qlora-fsdp.yml",
		"mistral_mixtral_mixtral.yml",
		"mistral_qlora.yml",
		"qwen2_qlora-fsdp.yaml",
		"qwen3_32b-qlora.yaml",
		"qwen3_8b-lora-fused-attn.yaml",
		"qwen3_qlora-fsdp.yaml",
	};
	const char *dir = getenv("TERN_TEST_DATA");
	if (!dir) {
		printf("test_axolotl_examples: not run (TERN_TEST_DATA is not set)\n");
		return;
	}
	for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
		char path[4096];
		snprintf(path, sizeof path, "%s/axolotl/%s", dir, files[f]);
		struct tern_config *c = NULL;
		enum tern_status st = tern_config_load(&c, path);
		size_t len = 0;
		char *text = read_all(path, &len);
		if (st)
			printf("  %s: %s\n", files[f], tern_error());
		checkf(st == TERN_OK && c, "axolotl example %s parses", files[f]);
		if (!c || !text) {
			free(text);
			continue;
		}
		checkf(one_line_notes(c), "%s: every note is one line", files[f]);
		/* each top-level key: engine-only ones get exactly one note when they ask for something */
		yaml_parser_t yp;
		yaml_document_t doc;
		yaml_parser_initialize(&yp);
		yaml_parser_set_input_string(&yp, (const unsigned char *)text, strlen(text));
		int engine = 0, noted = 0;
		if (yaml_parser_load(&yp, &doc)) {
			yaml_node_t *root = yaml_document_get_root_node(&doc);
			for (yaml_node_pair_t *pr = root->data.mapping.pairs.start;
			     pr < root->data.mapping.pairs.top; pr++) {
				yaml_node_t *kn = yaml_document_get_node(&doc, pr->key);
				yaml_node_t *vn = yaml_document_get_node(&doc, pr->value);
				const char *k = (const char *)kn->data.scalar.value;
				if (!tern_config_engine_note(k))
					continue;
				const char *v = vn->type == YAML_SCALAR_NODE
							? (const char *)vn->data.scalar.value
							: "x";
				bool nothing = (vn->type == YAML_SCALAR_NODE &&
						(!*v || !strcmp(v, "null") || !strcmp(v, "false") ||
						 !strcmp(v, "~")));
				int want = nothing ? 0 : 1, got = notes_about(c, k);
				engine++;
				noted += got;
				checkf(got == want, "%s: engine-only key %s: %d note(s), want %d", files[f],
				       k, got, want);
			}
			yaml_document_delete(&doc);
		}
		yaml_parser_delete(&yp);
		checkf(engine > 0 && noted > 0, "%s: has engine-only keys, noted", files[f]);
		tern_config_free(c);
		free(text);
	}
}

static void test_engine_keys(void)
{
	struct tern_config *c = parse(HEAD "attn_implementation: flash_attention_2\n"
					   "lora_qkv_kernel: true\n"
					   "liger_rope: true\n"
					   "plugins:\n  - axolotl.integrations.liger.LigerPlugin\n"
					   "model_config:\n  output_router_logits: true\n"
					   "unfrozen_parameters:\n"
					   "fsdp_version: 2\n"
					   "flash_attn_cross_entropy: false\n"
					   "load_in_8bit: true\n"
					   "gradient_checkpointing: offload\n"
					   "special_tokens:\n  pad_token: <pad>\n  sep_token: <sep>\n");
	check(c != NULL, "engine-only keys parse");
	if (!c)
		return;
	/* (+ one note: no `adapter` key, which axolotl reads as a full fine-tune) */
	check(c->n_notes == 8 && one_line_notes(c), "one note per key that asks for something");
	check(notes_about(c, "adapter") == 1 &&
		      strstr(c->notes[c->n_notes - 1],
			     "configs/x.yaml: adapter: not set, which axolotl runs as a full fine-tune") ==
			      c->notes[c->n_notes - 1],
	      "no adapter key: one note that tern trains LoRA where axolotl would fine-tune every weight");
	check(notes_about(c, "attn_implementation") == 1 && notes_about(c, "lora_qkv_kernel") == 1 &&
		      notes_about(c, "liger_rope") == 1 && notes_about(c, "plugins") == 1 &&
		      notes_about(c, "model_config") == 0 && notes_about(c, "fsdp_version") == 1 &&
		      notes_about(c, "unfrozen_parameters") == 0 &&
		      notes_about(c, "flash_attn_cross_entropy") == 0,
	      "notes for the engine-only keys (none for null and false)");
	check(c->output_router_logits == 1 && c->router_aux_loss_coef == -1,
	      "model_config: output_router_logits applied (no note)");
	bool int8 = false, sep = false;
	for (int i = 0; i < c->n_notes; i++) {
		int8 |= !strcmp(c->notes[i],
				"configs/x.yaml:15: load_in_8bit: tern has no LLM.int8 base; the base "
				"stays in the checkpoint's dtype (base_format: auto), or nf4-dq with "
				"load_in_4bit: true");
		sep |= !strncmp(c->notes[i], "configs/x.yaml:17: special_tokens.sep_token: tern keeps", 55);
	}
	check(int8 && sep && notes_about(c, "gradient_checkpointing") == 0,
	      "load_in_8bit and sep_token notes; none for gradient_checkpointing: offload (tern runs it)");
	check(c->gradient_checkpointing == TERN_CKPT_OFFLOAD && c->base_format == TERN_FORMAT_AUTO &&
		      c->pad_token && !strcmp(c->pad_token, "<pad>"),
	      "offload -> checkpointing with the inputs offloaded; load_in_8bit leaves base_format auto");
	{ /* true and false after offload (a --set) turn the offload off again; a typo names offload */
		struct tern_config *g = parse(HEAD "gradient_checkpointing: offload\n");
		bool ok = g && g->gradient_checkpointing == TERN_CKPT_OFFLOAD &&
			  tern_config_set(g, "gradient_checkpointing=true") == TERN_OK &&
			  g->gradient_checkpointing == TERN_CKPT_ON;
		tern_config_free(g);
		/* the resolved config written back says offload, and parses back to it */
		struct tern_config *w = parse(HEAD "gradient_checkpointing: offload\n"), *r = NULL;
		char *yaml = NULL;
		ok = ok && w && tern_config_write(w, &yaml) == TERN_OK &&
		     strstr(yaml, "\ngradient_checkpointing: offload\n") &&
		     tern_config_parse(&r, "w.yaml", yaml, strlen(yaml)) == TERN_OK &&
		     r->gradient_checkpointing == TERN_CKPT_OFFLOAD;
		free(yaml);
		tern_config_free(w);
		tern_config_free(r);
		struct tern_config *b = parse(HEAD "gradient_checkpointing: offlaod\n");
		check(ok && !b && strstr(tern_error(), "true, false, offload"),
		      "gradient_checkpointing: true after offload keeps the inputs on the device; offload is "
		      "written back as offload; 'offlaod' is refused naming offload");
		tern_config_free(b);
	}
	{ /* tiled_mlp (axolotl's ALST keys): run, no note; the shards as given, else T / hidden_size */
		struct tern_config *t = parse(HEAD "tiled_mlp: true\ntiled_mlp_use_original_mlp: true\n");
		bool ok = t && t->tiled_mlp && t->tiled_mlp_num_shards == 0 &&
			  notes_about(t, "tiled_mlp") == 0 &&
			  notes_about(t, "tiled_mlp_use_original_mlp") == 1 &&
			  tern_plan_mlp_shards(t, 8192, 4096) == 2 &&
			  tern_plan_mlp_shards(t, 2048, 2048) == 1 &&
			  tern_plan_mlp_shards(t, 2049, 2048) == 2;
		ok = ok && tern_config_set(t, "tiled_mlp_num_shards=3") == TERN_OK &&
		     tern_plan_mlp_shards(t, 2048, 2048) == 3 &&
		     tern_config_set(t, "tiled_mlp=false") == TERN_OK &&
		     tern_plan_mlp_shards(t, 2048, 2048) == 0;
		tern_config_free(t);
		struct tern_config *b = parse(HEAD "tiled_mlp: true\ntiled_mlp_num_shards: -2\n");
		check(ok && !b && strstr(tern_error(), "tiled_mlp_num_shards"),
		      "tiled_mlp runs without a note (its original-MLP switch gets one); shards as set, else "
		      "ceil(T / hidden_size), 0 without tiled_mlp; -2 shards refused naming the key");
		tern_config_free(b);
	}
	{ /* axolotl's model_config overrides: the load-balancing loss keys applied, others noted */
		struct tern_config *m =
			parse(HEAD "overrides_of_model_config:\n  router_aux_loss_coef: 0.05\n"
				   "  output_router_logits: false\n  rope_theta: 5\n");
		check(m && m->router_aux_loss_coef == 0.05 && m->output_router_logits == 0 &&
			      notes_about(m, "overrides_of_model_config.rope_theta") == 1,
		      "overrides_of_model_config: coef and switch applied, rope_theta noted");
		tern_config_free(m);
		m = parse(HEAD "adapter: lora\n");
		check(m && m->router_aux_loss_coef == -1 && m->output_router_logits == -1,
		      "no model_config: config.json decides");
		tern_config_free(m);
		m = parse(HEAD "model_config:\n  router_aux_loss_coef: 0.05\n  output_router_logits: true\n");
		char *y = NULL;
		struct tern_config *m2 = NULL;
		if (m && tern_config_write(m, &y) == TERN_OK)
			m2 = parse(y);
		check(m2 && m2->router_aux_loss_coef == 0.05 && m2->output_router_logits == 1,
		      "model_config overrides survive the resolved config (written, read back)");
		free(y);
		tern_config_free(m);
		tern_config_free(m2);
		expect_error(HEAD "model_config:\n  router_aux_loss_coef: -1\n",
			     "configs/x.yaml:6: model_config.router_aux_loss_coef: '-1' is not a number in "
			     "0..1e6 (allowed: a number >= 0)");
	}
	/* --set reaches the engine-only keys too */
	int before = c->n_notes;
	check(tern_config_set(c, "wandb_project=run1") == TERN_OK && c->n_notes == before + 1 &&
		      !strncmp(c->notes[before], "--set: wandb_project: tern writes every logged step", 50),
	      "--set wandb_project: a note");
	check(tern_config_set(c, "deepspeed=null") == TERN_OK && c->n_notes == before + 1,
	      "--set deepspeed=null: none");
	tern_config_free(c);
	/* bf16/fp16 leave compute_dtype to tern (auto) unless it is set */
	c = parse(HEAD "bf16: true\nfp16: false\ntf32: true\n");
	check(c && c->compute_dtype == TERN_COMPUTE_AUTO && c->n_notes == 3 && notes_about(c, "bf16") == 1 &&
		      notes_about(c, "tf32") == 1 &&
		      strstr(c->notes[0], "products run as compute_dtype (default auto: bf16 on CUDA"),
	      "bf16: true -> compute_dtype auto with a note; fp16: false none");
	tern_config_free(c);
	c = parse(HEAD "compute_dtype: f32\nbf16: auto\n");
	check(c && c->compute_dtype == TERN_COMPUTE_F32, "compute_dtype set in the config wins over bf16");
	tern_config_free(c);
	/* optimizer names */
	static const char *const names[] = {"adamw_torch",      "adamw_torch_fused", "adamw_bnb_8bit",
					    "paged_adamw_8bit", "paged_adamw_32bit", "adamw_8bit",
					    "adamw_hf",         "adamw_torch_4bit"};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		char y[256];
		snprintf(y, sizeof y, HEAD "optimizer: %s\n", names[i]);
		c = parse(y);
		bool eight =
			strstr(names[i], "8bit") || strstr(names[i], "4bit") || strstr(names[i], "32bit");
		checkf(c && c->n_notes == (i ? 2 : 1) && /* + the no-adapter note, last */
			       (!i || (eight ? strstr(c->notes[0], "f32, 8 bytes per LoRA parameter") != NULL
					     : strstr(c->notes[0], "f32 AdamW") != NULL)),
		       "optimizer %s: runs as AdamW with %s note", names[i], i ? "a" : "no");
		tern_config_free(c);
	}
	/* did-you-mean: typos get one, other words none */
	expect_error(
		HEAD "lora_alhpa: 8\n",
		"configs/x.yaml:5: lora_alhpa: unknown key (see docs/CONFIG.md); did you mean 'lora_alpha'?");
	expect_error(HEAD "sequence_length: 8\n", "configs/x.yaml:5: sequence_length: unknown key (see "
						  "docs/CONFIG.md); did you mean 'sequence_len'?");
	expect_error(HEAD "training_config: 1\n",
		     "configs/x.yaml:5: training_config: unknown key (see docs/CONFIG.md)");
	expect_error(HEAD "deepspeeed: z.json\n", "configs/x.yaml:5: deepspeeed: unknown key (see "
						  "docs/CONFIG.md); did you mean 'deepspeed'?");
	expect_error(HEAD "optimizer_cfg: 1\n",
		     "configs/x.yaml:5: optimizer_cfg: unknown key (see docs/CONFIG.md); "
		     "did you mean 'optimizer'?");
	expect_error(HEAD "tokens: [a]\n", "configs/x.yaml:5: tokens: unknown key (see docs/CONFIG.md)");
	expect_error(HEAD "flash_atention: true\n", "configs/x.yaml:5: flash_atention: unknown key (see "
						    "docs/CONFIG.md); did you mean 'flash_attention'?");
}

/* tern_lr_lambda against tests/data/lr_golden.txt (tools/lr_golden.py: transformers' schedules). */
static void test_schedules(void)
{
	const char *dir = getenv("TERN_TEST_DATA");
	char path[4096];
	snprintf(path, sizeof path, "%s/lr_golden.txt", dir ? dir : "tests/data");
	FILE *f = fopen(path, "r");
	if (!f) {
		printf("test_schedules: not run (%s is missing)\n", path);
		return;
	}
	char line[256], name[64];
	int n = 0, bad_n = 0;
	while (fgets(line, sizeof line, f)) {
		long long W, K, k;
		double r, want;
		if (line[0] == '#' ||
		    sscanf(line, "%63s %lld %lld %lf %lld %lf", name, &W, &K, &r, &k, &want) != 6)
			continue;
		static const char *const sn[] = {"cosine", "linear", "constant", "constant_with_warmup",
						 "cosine_with_min_lr"};
		int s = -1;
		for (int i = 0; i < 5; i++)
			if (!strcmp(sn[i], name))
				s = i;
		double got = s < 0 ? NAN : tern_lr_lambda((enum tern_lr_sched)s, k, W, K, r);
		n++;
		if (!(fabs(got - want) <= 1e-12)) {
			bad_n++;
			printf("  %s W=%lld K=%lld r=%g k=%lld: %.17g, transformers %.17g\n", name, W, K, r,
			       k, got, want);
		}
	}
	fclose(f);
	checkf(n >= 100 && bad_n == 0, "tern_lr_lambda equals transformers' schedules (%d values)", n);
	/* the keys */
	struct tern_config *c = parse(HEAD "lr_scheduler: cosine_with_min_lr\ncosine_min_lr_ratio: 0.1\n");
	check(c && c->lr_scheduler == TERN_SCHED_COSINE_MIN_LR && c->cosine_min_lr_ratio == 0.1,
	      "cosine_with_min_lr + cosine_min_lr_ratio");
	char *y = NULL;
	struct tern_config *c2 = NULL;
	if (c && tern_config_write(c, &y) == TERN_OK)
		c2 = parse(y);
	check(c2 && c2->lr_scheduler == TERN_SCHED_COSINE_MIN_LR && c2->cosine_min_lr_ratio == 0.1,
	      "the schedule keys round-trip");
	free(y);
	tern_config_free(c);
	tern_config_free(c2);
	c = parse(HEAD "lr_scheduler: constant_with_warmup\nwarmup_steps: 3\n");
	check(c && c->lr_scheduler == TERN_SCHED_CONSTANT_WARMUP, "constant_with_warmup");
	tern_config_free(c);
	c = parse(HEAD "lr_scheduler: cosine\ncosine_min_lr_ratio: 0.05\n");
	check(c && c->cosine_min_lr_ratio == 0.05, "axolotl's cosine_min_lr_ratio with plain cosine");
	tern_config_free(c);
	expect_error(
		HEAD "lr_scheduler: cosine_with_min_lr\n",
		"configs/x.yaml:5: lr_scheduler: 'cosine_with_min_lr' needs its floor: cosine_min_lr_ratio "
		"(e.g. 0.1)");
	expect_error(HEAD "lr_scheduler: linear\ncosine_min_lr_ratio: 0.1\n",
		     "configs/x.yaml:6: cosine_min_lr_ratio: applies to the cosine schedules, not linear");
	expect_error(
		HEAD "cosine_min_lr_ratio: 1.5\n",
		"configs/x.yaml:5: cosine_min_lr_ratio: '1.5' is out of range (allowed: 0..1 (the floor of "
		"the cosine schedules, as a fraction of learning_rate))");
}

static void test_dataset_keys(void)
{
	struct tern_config *c =
		parse("base_model: m\ndatasets:\n"
		      "  - path: mlabonne/FineTome-100k\n    type: chat_template\n"
		      "    split: train[:20%]\n    field_messages: conversations\n"
		      "    message_property_mappings:\n      role: from\n      content: value\n"
		      "  - path: data\n    type: completion\n    ds_type: json\n    field: body\n"
		      "    data_files: [a.jsonl, b.json]\n"
		      "  - path: x.jsonl\n    type: chat_template\n    message_field_role: speaker\n");
	check(c != NULL, "dataset keys parse");
	if (!c)
		return;
	const struct tern_dataset_cfg *d = c->datasets;
	check(c->n_datasets == 3 && !strcmp(d[0].split, "train[:20%]") &&
		      !strcmp(d[0].field_messages, "conversations") && !strcmp(d[0].role_key, "from") &&
		      !strcmp(d[0].content_key, "value") && !strcmp(d[1].field, "body") &&
		      d[1].n_data_files == 2 && !strcmp(d[1].data_files[1], "b.json") &&
		      !strcmp(d[2].role_key, "speaker") && !d[2].content_key,
	      "dataset key values");
	char *y1 = NULL, *y2 = NULL;
	struct tern_config *c2 = NULL;
	if (tern_config_write(c, &y1) == TERN_OK)
		c2 = parse(y1);
	check(c2 && tern_config_write(c2, &y2) == TERN_OK && !strcmp(y1, y2) &&
		      c2->datasets[1].n_data_files == 2 && !strcmp(c2->datasets[0].content_key, "value"),
	      "dataset keys round-trip");
	free(y1);
	free(y2);
	tern_config_free(c2);
	/* --set one field keeps the others; a whole entry replaces them */
	check(tern_config_set(c, "datasets.0.split=train[5:]") == TERN_OK &&
		      !strcmp(c->datasets[0].split, "train[5:]") &&
		      !strcmp(c->datasets[0].field_messages, "conversations"),
	      "--set datasets.0.split keeps the entry's other keys");
	check(tern_config_set(c, "datasets.1={path: y.jsonl, type: alpaca}") == TERN_OK &&
		      !c->datasets[1].field && !c->datasets[1].n_data_files &&
		      tern_config_check(c) == TERN_OK,
	      "--set datasets.1={...} replaces the entry");
	check(tern_config_set(c, "datasets.0.split=test") == TERN_E_INVALID &&
		      !strcmp(tern_error(),
			      "--set: datasets.0.split: 'test' is not a split of a local file (its rows "
			      "are all 'train') (allowed: train, or a slice of it like train[:20%], "
			      "train[100:200])"),
	      "--set datasets.0.split=test: one line");
	tern_config_free(c);
#define DS "base_model: m\ndatasets:\n  - path: d.jsonl\n"
	expect_error(
		DS "    type: alpaca\n    split: train[:5\n",
		"configs/x.yaml:5: datasets.0.split: 'train[:5' is not a split (allowed: train, or a slice of it "
		"like train[:20%], train[100:200])");
	expect_error(
		DS "    type: alpaca\n    ds_type: parquet\n",
		"configs/x.yaml:5: datasets.0.ds_type: 'parquet' is not a format tern reads (convert the file "
		"to JSON Lines) (allowed: json)");
	expect_error(
		DS "    type: alpaca\n    field: body\n",
		"configs/x.yaml: datasets.0.field: only type completion reads a text field (this dataset is "
		"alpaca)");
	expect_error(
		DS "    type: completion\n    field_messages: turns\n",
		"configs/x.yaml: datasets.0.field_messages: only type chat_template reads messages (this "
		"dataset is completion)");
	expect_error(
		DS "    type: chat_template\n    message_property_mappings: {role: from, weight: w}\n",
		"configs/x.yaml:5: datasets.0.message_property_mappings: 'weight' is not a message property "
		"tern reads (allowed: role, content)");
	expect_error(
		DS "    type: alpaca\n    data_files: {train: a.jsonl}\n",
		"configs/x.yaml:5: datasets.0.data_files: '{a mapping}' is a mapping of splits; tern reads one "
		"list of files (allowed: a file or a list of files)");
#undef DS
}

/* Item 7: bad input refused with one line, quickly. */
static void test_bad_input(void)
{
	expect_error(
		HEAD "---\nlora_r: 3\n",
		"configs/x.yaml:5: a second YAML document ('---'); a config is one document (keep one, or "
		"split them into two files)");
	/* 100,000 nested lists: refused at level 65, at once */
	size_t n = 100000;
	char *deep = malloc(2 * n + 64);
	strcpy(deep, "base_model: ");
	size_t o = strlen(deep);
	memset(deep + o, '[', n);
	memset(deep + o + n, ']', n);
	deep[o + 2 * n] = 0;
	double t0 = (double)clock() / CLOCKS_PER_SEC;
	expect_error(deep,
		     "configs/x.yaml:1: lists and maps nested more than 64 levels deep; a config needs 3");
	double dt = (double)clock() / CLOCKS_PER_SEC - t0;
	checkf(dt < 1.0, "100,000 nested lists refused in %.3f s (< 1 s)", dt);
	/* block nesting too */
	char *blk = malloc(80 * 70 + 64), *q = blk;
	q += sprintf(q, "base_model: m\nx:\n");
	for (int i = 0; i < 70; i++)
		q += sprintf(q, "%*s- \n", 2 * i, "");
	expect_error(blk,
		     "configs/x.yaml:66: lists and maps nested more than 64 levels deep; a config needs 3");
	free(blk);
	free(deep);
	/* huge values and keys: the message keeps its reason */
	char *huge = malloc(20000);
	snprintf(huge, 20000, HEAD "lr_scheduler: ");
	memset(huge + strlen(huge), 'c', 10000);
	strcpy(huge + strlen(HEAD) + 14 + 10000, "\n");
	struct tern_config *c = NULL;
	enum tern_status st = tern_config_parse(&c, "configs/x.yaml", huge, strlen(huge));
	check(st && strlen(tern_error()) < 400 &&
		      strstr(tern_error(), "...' is not allowed (allowed: cosine"),
	      "a 10,000-letter value is cut, the reason kept");
	snprintf(huge, 20000, HEAD "? ");
	memset(huge + strlen(huge), 'k', 5000);
	strcpy(huge + strlen(HEAD) + 2 + 5000, "\n: 1\n");
	st = tern_config_parse(&c, "configs/x.yaml", huge, strlen(huge));
	check(st && strstr(tern_error(), "kkk...: unknown key (see docs/CONFIG.md)") &&
		      strlen(tern_error()) < 300,
	      "a 5,000-letter key is cut, the reason kept");
	char *file = malloc(3000);
	memset(file, 'f', 2999);
	file[2999] = 0;
	st = tern_config_parse(&c, file, HEAD "lora_r: x\n", strlen(HEAD) + 10);
	check(st && strstr(tern_error(), "...:5: lora_r: 'x' is not an integer (allowed: 1..4096)"),
	      "a 3,000-letter file name is cut, the reason kept");
	free(file);
	struct tern_config *s = parse(HEAD);
	memset(huge, 'k', 5000);
	strcpy(huge + 5000, "=1");
	check(s && tern_config_set(s, huge) == TERN_E_INVALID && strstr(tern_error(), "key too long") &&
		      strlen(tern_error()) < 200,
	      "--set with a 5,000-letter key: one short line");
	free(huge);
	/* any message too long for the error buffer keeps its head and its reason */
	char *val = malloc(6000);
	memset(val, 'v', 5999);
	val[5999] = 0;
	tern_fail(TERN_E_IO, "data/%s.jsonl: cannot open: No such file or directory (datasets[0].path)", val);
	const char *e = tern_error(),
		   *reason = ".jsonl: cannot open: No such file or directory (datasets[0].path)";
	check(strlen(e) < 1024 && !strncmp(e, "data/vvv", 8) && strstr(e, "v...v") &&
		      !strcmp(e + strlen(e) - strlen(reason), reason),
	      "a 6,000-letter value inside any message: cut in the middle, the reason kept");
	free(val);
	/* not UTF-8: files and --set values */
	expect_error("base_model: \"m\xff\"\n",
		     "configs/x.yaml:1: byte 0xff is not UTF-8 text (save the config as UTF-8)");
	expect_error("\xff\xfe"
		     "b\0a\0",
		     "configs/x.yaml:1: byte 0xff is not UTF-8 text (save the config as UTF-8)");
	check(s && tern_config_set(s, "output_dir=\xc3\x28") != TERN_OK &&
		      !strcmp(tern_error(),
			      "--set output_dir: byte 0xc3 is not UTF-8 text (give the value as UTF-8)"),
	      "--set a non-UTF-8 value: one line");
	check(s && tern_config_set(s, "lora_\xff=1") == TERN_E_INVALID &&
		      !strcmp(tern_error(), "--set: the key is not UTF-8 text"),
	      "--set a non-UTF-8 key: one line");
	check(s && tern_config_set(s, "output_dir=caf\xc3\xa9") == TERN_OK &&
		      !strcmp(s->output_dir, "caf\xc3\xa9"),
	      "--set a UTF-8 value");
	/* --set messages name the key, never a line */
	check(s && tern_config_set(s, "lora_r=[a") == TERN_E_FORMAT &&
		      !strncmp(tern_error(), "--set lora_r: YAML syntax error: ", 33),
	      "--set syntax error: '--set lora_r:', no line");
	check(s && tern_config_set(s, "lora_r=1\n---\n2") == TERN_E_FORMAT &&
		      !strcmp(tern_error(),
			      "--set lora_r: a second YAML document ('---'); a config is one document (keep "
			      "one, or split them into two files)"),
	      "--set two documents: one line, no line number");
	/* sizes: 0 is no budget; hex, exponents and signs are no sizes */
	expect_error(HEAD "device_memory: 0\n",
		     "configs/x.yaml:5: device_memory: '0' is no budget (allowed: auto or "
		     "a size like 11.5GB, 512MB)");
	expect_error(HEAD "host_memory: 0x10GB\n",
		     "configs/x.yaml:5: host_memory: '0x10GB' is not a size (allowed: "
		     "auto or a size like 48GB)");
	int64_t v;
	check(!tern_parse_size("0x10", &v) && !tern_parse_size("1e9", &v) && !tern_parse_size("+5GB", &v) &&
		      !tern_parse_size(" 5GB", &v) && !tern_parse_size("5.GB", &v) &&
		      !tern_parse_size("inf", &v),
	      "hex, exponent, sign, leading space: not sizes");
	check(tern_parse_size("0.5GB", &v) && v == 512LL << 20 && tern_parse_size("12 GB", &v) &&
		      v == 12LL << 30,
	      "decimal sizes still parse");
	tern_config_free(s);
}

int main(void)
{
	tern_set_log(NULL, NULL, -1); /* notes are checked through cfg->notes */
	test_full();
	test_defaults();
	test_errors();
	test_set();
	test_all_linear();
	test_modules_to_save();
	test_eval_prompts();
	test_units();
	test_axolotl_examples();
	test_engine_keys();
	test_schedules();
	test_dataset_keys();
	test_bad_input();
	printf("test_config: %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
