/* The YAML training config: every key parsed and written back (round trip), each kind of error
 * with its exact file:line: key message, unknown-key suggestions, --set overrides, notes for the
 * axolotl keys tern ignores. */
#include "train/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
		opt |= !strcmp(c->notes[i],
			       "configs/x.yaml:31: optimizer: 'paged_adamw_32bit' accepted: tern uses "
			       "fp32 AdamW (adamw_torch)");
		bf |= !strncmp(c->notes[i], "configs/x.yaml:35: bf16: accepted and ignored: ", 47);
		ds |= !strncmp(c->notes[i],
			       "configs/x.yaml:60: deepspeed: accepted and ignored: tern trains on one", 70);
		wb |= !strncmp(c->notes[i],
			       "configs/x.yaml:61: wandb_project: accepted and ignored: tern logs to", 67);
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
		     "(allowed: cosine, linear, constant); did you mean 'cosine'?");
	expect_error(HEAD "adapter: full\n",
		     "configs/x.yaml:5: adapter: 'full' is not allowed (allowed: lora, qlora)");
	expect_error(HEAD "device_memory: lots\n", "configs/x.yaml:5: device_memory: 'lots' is not a size "
						   "(allowed: auto or a size like 11.5GB, 512MB)");
	expect_error(HEAD "max_time: 8x\n", "configs/x.yaml:5: max_time: '8x' is not a duration "
					    "(allowed: a duration like 8h, 90m, 1h30m, 45s)");
	expect_error(HEAD "optimizer: sgd\n",
		     "configs/x.yaml:5: optimizer: 'sgd' is not an optimizer tern has (allowed: adamw_torch, "
		     "adamw_hf, adamw_torch_fused, adamw_8bit, adamw_bnb_8bit, paged_adamw_8bit, "
		     "paged_adamw_32bit, adamw_torch_4bit, adamw_anyprecision)");
	expect_error(
		HEAD "lora_target_modules: [q_proj, qproj]\n",
		"configs/x.yaml:5: lora_target_modules: 'qproj' is not a module tern can adapt (allowed: "
		"q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, all-linear); did you mean "
		"'q_proj'?");
	expect_error(HEAD "lora_r: [1, 2]\n",
		     "configs/x.yaml:5: lora_r: '[a list]' is not a single value (allowed: 1..4096)");
	expect_error(
		"base_model: m\ndatasets:\n  - path: d.jsonl\n    type: alpacca\n",
		"configs/x.yaml:4: datasets.0.type: 'alpacca' is not allowed (allowed: alpaca, chat_template, "
		"completion, pretokenized); did you mean 'alpaca'?");
	expect_error("base_model: m\ndatasets:\n  - path: d.jsonl\n    typ: alpaca\n",
		     "configs/x.yaml:4: datasets.0.typ: unknown dataset key (allowed: path, type); "
		     "did you mean 'type'?");
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
	expect_error(HEAD "load_in_8bit: true\n",
		     "configs/x.yaml:5: load_in_8bit: 'true' is not supported: tern has no 8-bit base; use "
		     "load_in_4bit: true or base_format (nf4, nf4-dq, ternary, bf16, f16, f32)");
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
		     "configs/x.yaml: base_model: missing (allowed: a model directory)");
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
	expect_error(HEAD "lora_target_modules: all_linear\n",
		     "configs/x.yaml:5: lora_target_modules: 'all_linear' is not a module tern can adapt "
		     "(allowed: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, all-linear); "
		     "did you mean 'all-linear'?");
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

int main(void)
{
	tern_set_log(NULL, NULL, -1); /* notes are checked through cfg->notes */
	test_full();
	test_defaults();
	test_errors();
	test_set();
	test_all_linear();
	test_modules_to_save();
	test_units();
	printf("test_config: %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
