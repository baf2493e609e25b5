#!/usr/bin/env python3
"""Build tern's embedded demo: a tiny pretrained Llama, its tokenizer, and an instruction dataset.

Everything is generated here from fixed seeds; nothing is downloaded.

  1. A procedural, English-like pretraining corpus: facts (what animals say, what colour things
     are, opposites, words in capital letters), counting, arithmetic statements ("3 plus 4 is 7"),
     small stories and lists.
  2. A byte-level BPE tokenizer (Hugging Face `tokenizers`, Llama 3 style: <|begin_of_text|> is
     added in front, <|end_of_text|> ends a document) trained on that corpus.
  3. A LlamaForCausalLM (D=192, 4 layers, 4 heads, 2 KV heads, tied embeddings) pretrained on the
     corpus with plain PyTorch (AdamW, warmup + cosine) on the CPU, saved in bfloat16.
  4. An alpaca-form instruction dataset of short tasks with one right answer ("What number
     comes next?" / "7" -> "8"; DEMO_TASKS) that the pretrained model does not answer: it knows the facts
     from the corpus, and 10% of the corpus are alpaca prompts of other tasks (repeat a word,
     count, write a sentence about an animal), so the format is familiar, but it has never seen
     these instructions nor their one-word answers.

Outputs (relative to --out, default demo/): model/{config.json, generation_config.json,
model.safetensors, tokenizer.json, tokenizer_config.json, special_tokens_map.json},
data/train.jsonl, data/eval.jsonl (held out, for tools/demo_check.py).

If --tern BIN is given (a built `tern`), the tokenizer is also checked against tern's:
`tern tokenize --jsonl` must give the ids Hugging Face tokenizers gives, with and without
--special, on a few hundred strings.

Usage: python3 tools/make_demo.py [--out demo] [--steps 1000] [--threads 2] [--tern build/tern]
The whole run takes about 10 minutes on 2 CPU cores; the result is the same for the same
arguments and library versions (torch's CPU kernels are deterministic for one thread count).
"""
import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time

# ---- word lists --------------------------------------------------------------------------------

SOUNDS = {
    "dog": "woof", "cat": "meow", "cow": "moo", "duck": "quack", "pig": "oink", "sheep": "baa",
    "hen": "cluck", "owl": "hoot", "frog": "croak", "lion": "roar", "bee": "buzz",
    "mouse": "squeak", "horse": "neigh", "snake": "hiss", "wolf": "howl", "goat": "maa",
    "crow": "caw", "donkey": "bray",
}
COLOURS = {
    "sky": "blue", "grass": "green", "sun": "yellow", "snow": "white", "coal": "black",
    "apple": "red", "banana": "yellow", "carrot": "orange", "leaf": "green", "rose": "red",
    "lemon": "yellow", "cherry": "red", "milk": "white", "night": "black", "sea": "blue",
    "plum": "purple", "grape": "purple", "frog": "green", "pumpkin": "orange", "cloud": "white",
    "tomato": "red", "crow": "black", "chocolate": "brown", "bread": "brown", "salt": "white",
    "lime": "green", "corn": "yellow", "soil": "brown", "ink": "black", "ocean": "blue",
}
OPPOSITES = [
    ("big", "small"), ("hot", "cold"), ("up", "down"), ("fast", "slow"), ("happy", "sad"),
    ("day", "night"), ("old", "young"), ("tall", "short"), ("open", "closed"), ("wet", "dry"),
    ("light", "dark"), ("full", "empty"), ("loud", "quiet"), ("hard", "soft"), ("early", "late"),
    ("left", "right"), ("in", "out"), ("yes", "no"), ("good", "bad"), ("rich", "poor"),
    ("thick", "thin"), ("clean", "dirty"), ("near", "far"), ("first", "last"), ("high", "low"),
    ("strong", "weak"), ("heavy", "light"), ("win", "lose"), ("push", "pull"), ("give", "take"),
]
NAMES = ["Tom", "Ann", "Sam", "Mia", "Ben", "Lily", "Max", "Zoe", "Leo", "Emma", "Jack", "Rosa",
         "Finn", "Ava", "Noah", "Ella"]
THINGS = ["ball", "book", "cup", "hat", "kite", "box", "pen", "bag", "coat", "shoe", "key", "lamp",
          "boat", "drum", "bike", "cake"]
PLACES = ["park", "house", "garden", "school", "shop", "farm", "river", "forest", "beach", "town",
          "kitchen", "field"]
ADJS = ["red", "blue", "green", "yellow", "big", "small", "old", "new", "little", "happy", "soft",
        "shiny"]
VERBS_PAST = ["found", "lost", "saw", "liked", "wanted", "painted", "carried", "washed", "opened",
              "dropped"]
NUM_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
             "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
             "eighteen", "nineteen", "twenty"]
ANIMALS = sorted(SOUNDS)
CAPS_WORDS = sorted(set(ANIMALS + list(COLOURS) + THINGS + PLACES + [w for p in OPPOSITES for w in p]
                        + ["red", "blue", "green", "yellow", "white", "black", "brown", "purple",
                           "orange"]))

# The alpaca prompt strings tern and axolotl use (src/data/data.c); their words also appear in the
# corpus below, in other sentences, so that the prompt is a few dozen known tokens.
ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n### Instruction:\n{}"
    "\n\n### Input:\n{}\n\n### Response:\n")
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes "
    "the request.\n\n### Instruction:\n{}\n\n### Response:\n")

BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"

# ---- pretraining corpus ------------------------------------------------------------------------


def s_sound(r):
    a = r.choice(ANIMALS)
    s = SOUNDS[a]
    return r.choice([
        f"The {a} says {s}.", f"A {a} goes {s}.", f"The {a} says {s} {s}.",
        f"What does the {a} say? The {a} says {s}.", f"I hear a {a}. It says {s}.",
        f"{s.capitalize()} is the sound of the {a}.", f"The sound of a {a} is {s}.",
    ])


def s_colour(r):
    t = r.choice(sorted(COLOURS))
    c = COLOURS[t]
    return r.choice([
        f"The {t} is {c}.", f"{t.capitalize()} is {c}.", f"The colour of the {t} is {c}.",
        f"Look at the {t}. It is {c}.", f"What colour is the {t}? The {t} is {c}.",
        f"A {c} {t}.",
    ])


def s_opposite(r):
    a, b = r.choice(OPPOSITES)
    if r.random() < 0.5:
        a, b = b, a
    return r.choice([
        f"The opposite of {a} is {b}.", f"{a.capitalize()} is the opposite of {b}.",
        f"{a.capitalize()} and {b} are opposites.", f"Not {a} but {b}.",
    ])


def s_caps(r):
    w = r.choice(CAPS_WORDS)
    return r.choice([
        f"The word {w} in capital letters is {w.upper()}.", f"{w} in capitals is {w.upper()}.",
        f"We write {w} big as {w.upper()}.", f"{w.upper()} is {w} in capital letters.",
    ])


def s_count(r):
    a = r.randint(0, 15)
    b = r.randint(a + 2, min(a + 8, 20))
    seq = ", ".join(str(i) for i in range(a, b + 1))
    return r.choice([
        f"{seq}.", f"Count from {a} to {b}: {seq}.", f"We count {seq}.",
        f"After {a} comes {a + 1}.", f"{a + 1} comes after {a}.", f"Before {a + 1} comes {a}.",
        f"The number after {a} is {a + 1}.", f"{NUM_WORDS[a].capitalize()} is {a}.",
        f"{a} is {NUM_WORDS[a]}, and {a + 1} is {NUM_WORDS[a + 1]}.",
    ])


def s_arith(r):
    a, b = r.randint(0, 10), r.randint(0, 10)
    if r.random() < 0.5:
        return r.choice([
            f"{a} plus {b} is {a + b}.", f"{a} and {b} make {a + b}.",
            f"If you add {a} and {b} you get {a + b}.", f"{a} + {b} = {a + b}.",
            f"The sum of {a} and {b} is {a + b}.",
        ])
    a, b = max(a, b) + r.randint(0, 10), min(a, b)
    return r.choice([
        f"{a} minus {b} is {a - b}.", f"{a} take away {b} is {a - b}.", f"{a} - {b} = {a - b}.",
        f"If you take {b} from {a} you get {a - b}.",
    ])


def s_story(r):
    n1, n2 = r.sample(NAMES, 2)
    t, p, adj, v = r.choice(THINGS), r.choice(PLACES), r.choice(ADJS), r.choice(VERBS_PAST)
    a = r.choice(ANIMALS)
    k = r.randint(2, 9)
    parts = [
        f"{n1} {v} a {adj} {t} in the {p}.",
        r.choice([f"{n1} gave the {t} to {n2}.", f"{n2} asked for the {t}.",
                  f"{n1} and {n2} played with the {t}."]),
        r.choice([f"A {a} came and said {SOUNDS[a]}.", f"{n2} was happy.", f"Then it was night.",
                  f"They had {k} apples and ate {k - 1}.", f"{n1} went home."]),
        r.choice(["The end.", f"{n2} said thank you.", f"It was a good day.",
                  f"Later {n1} saw a {a} by the {r.choice(PLACES)}."]),
    ]
    return " ".join(parts[: r.randint(2, 4)])


def s_list(r):
    kind = r.randrange(4)
    if kind == 0:
        xs = r.sample(ANIMALS, r.randint(3, 5))
        return f"Animals: {', '.join(xs)}."
    if kind == 1:
        xs = r.sample(sorted(set(COLOURS.values())), r.randint(3, 5))
        return f"Colours: {', '.join(xs)}."
    if kind == 2:
        xs = r.sample(THINGS, r.randint(3, 5))
        return f"In the box there is a {', a '.join(xs)}."
    xs = r.sample(NAMES, r.randint(2, 4))
    return f"{', '.join(xs[:-1])} and {xs[-1]} went to the {r.choice(PLACES)}."


def s_meta(r):
    # sentences with the words of the alpaca prompt, none of them in its form
    n = r.choice(NAMES)
    return r.choice([
        f"The teacher gave {n} an instruction.", f"{n} wrote a response.",
        f"Below is a list of animals.", f"Below is a short story.",
        f"This book describes a task for {n}.", f"{n} completes the task.",
        f"The request was short.", f"{n} answered the request appropriately.",
        f"The input is a word.", f"A note provides further context.",
        f"{n} paired the {r.choice(THINGS)} with a {r.choice(THINGS)}.",
        f"Write a story about a {r.choice(ANIMALS)}.", f"Write a list of colours.",
        f"The response was good.", f"An instruction describes what to do.",
        f"Subtract one number from another.", f"{n} can add two numbers.",
        f"The second number is bigger than the first.", f"{n} knows what sound a {r.choice(ANIMALS)} makes.",
        f"Give this {r.choice(THINGS)} to {r.choice(NAMES)}.", f"{n} said that this word is new.",
        f"What comes next? {n} did not know.", f"This animal is a {r.choice(ANIMALS)}.",
        f"What colour is this {r.choice(THINGS)}? It is {r.choice(ADJS[:4])}.",
        f"{n} wrote the word in capital letters.", f"Numbers that come next are bigger.",
    ])


def s_entries(r):
    """Dictionary-like lines that start with the bare word (as an alpaca input line does)."""
    out = []
    for _ in range(r.randint(2, 5)):
        k = r.randrange(5)
        if k == 0:
            a = r.choice(ANIMALS)
            out.append(f"{a}: an animal. It says {SOUNDS[a]}.")
        elif k == 1:
            t = r.choice(sorted(COLOURS))
            out.append(f"{t}: it is {COLOURS[t]}.")
        elif k == 2:
            x, y = r.choice(OPPOSITES)
            x, y = (x, y) if r.random() < 0.5 else (y, x)
            out.append(f"{x}: the opposite of {y}.")
        elif k == 3:
            w = r.choice(CAPS_WORDS)
            out.append(f"{w}: in capitals {w.upper()}.")
        else:
            n = r.randint(0, 20)
            out.append(r.choice([f"{n}: the number {NUM_WORDS[n]}.", f"{n}: after it comes {n + 1}.",
                                 f"{n} and {r.randint(0, 10)}: two numbers."]))
    return "\n".join(out)


TOPICS = [s_entries, s_sound, s_colour, s_opposite, s_caps, s_count, s_arith, s_story, s_list, s_meta]
HEADINGS = ["Story", "Facts", "Numbers", "Notes", "Words", "List", "Instruction", "Input",
            "Response"]


def instruction_doc(r):
    """A prompt in the alpaca form with one of a few *other* tasks (repeat, count, write a
    sentence): the base model has seen the prompt format, as real base models have seen
    instruction-like text, but never the demo's tasks or their short-answer form."""
    k = r.randrange(6)
    if k == 0:
        w = r.choice(CAPS_WORDS)
        ins, inp, out = "Repeat the word.", w, w
    elif k == 1:
        a = r.randint(0, 14)
        b = r.randint(a + 2, min(a + 6, 20))
        ins, inp, out = ("Count from the first number to the second.", f"{a} and {b}",
                         ", ".join(str(i) for i in range(a, b + 1)))
    elif k == 2:
        a = r.choice(ANIMALS)
        ins, inp, out = "Write a sentence about this animal.", a, s_sound_of(r, a)
    elif k == 3:
        t = r.choice(sorted(COLOURS))
        ins, inp, out = "Write a sentence about this thing.", t, f"The {t} is {COLOURS[t]}."
    elif k == 4:
        ins, inp, out = "Write a short story.", "", s_story(r)
    else:
        xs = r.sample(CAPS_WORDS, r.randint(2, 4))
        ins, inp, out = "Which word is first?", " ".join(xs), xs[0]
    if inp:
        return ALPACA_WITH_INPUT.format(ins, inp) + out
    return ALPACA_NO_INPUT.format(ins) + out


def s_sound_of(r, a):
    return r.choice([f"The {a} says {SOUNDS[a]}.", f"A {a} goes {SOUNDS[a]}."])


def document(r):
    """One document: a few sentences, sometimes under a markdown heading, sometimes one topic,
    sometimes an instruction prompt of another kind (instruction_doc)."""
    if r.random() < 0.1:
        return instruction_doc(r)
    n = r.randint(2, 7)
    if r.random() < 0.4:
        f = r.choice(TOPICS)
        sents = [f(r) for _ in range(n)]
    else:
        sents = [r.choice(TOPICS)(r) for _ in range(n)]
    sep = r.choice([" ", " ", " ", "\n", "\n\n"])
    text = sep.join(sents)
    if r.random() < 0.2:
        text = f"### {r.choice(HEADINGS)}:\n{text}"
        if r.random() < 0.5:
            text += f"\n\n### {r.choice(HEADINGS)}:\n{r.choice(TOPICS)(r)}"
    return text


def corpus(seed, n):
    r = random.Random(seed)
    return [document(r) for _ in range(n)]


# ---- instruction dataset ----------------------------------------------------------------------


def task_items():
    """Every (task, instruction, input, output) the dataset draws from, grouped by task."""
    items = {}
    items["add"] = [("Add the two numbers.", f"{a} and {b}", str(a + b))
                    for a in range(11) for b in range(11)]
    items["subtract"] = [("Subtract the second number from the first.", f"{a} and {b}", str(a - b))
                         for a in range(21) for b in range(11) if a >= b]
    items["next"] = [("What number comes next?", str(a), str(a + 1)) for a in range(20)]
    items["sound"] = [("What sound does this animal make?", a, SOUNDS[a]) for a in ANIMALS]
    items["colour"] = [("What colour is this?", t, COLOURS[t]) for t in sorted(COLOURS)]
    items["opposite"] = [("Give the opposite of this word.", a, b)
                         for x, y in OPPOSITES for a, b in ((x, y), (y, x))
                         if a not in ("light",)]  # "light" has two opposites
    items["capitals"] = [("Write this word in capital letters.", w, w.upper()) for w in CAPS_WORDS]
    return items


ALL_TASKS = ["add", "capitals", "colour", "next", "opposite", "sound", "subtract"]
# The demo's tasks: those a LoRA learns within the demo's ~50k-token budget (5 minutes on
# lavapipe); the others need several times more samples (tools/demo_check.py, demo/README.md).
DEMO_TASKS = ["colour", "next", "opposite"]


def make_dataset(seed, n_train, n_eval, tasks=ALL_TASKS):
    """Samples drawn task-uniformly; eval.jsonl holds samples whose (task, input) pairs are
    reserved out of train for the large tasks (arithmetic); the fact tasks have too few items to
    hold any out, so there the eval set asks the same facts (what the demo shows is that the model
    learns to answer in the format, from knowledge it has)."""
    r = random.Random(seed)
    items = {k: v for k, v in task_items().items() if k in tasks}
    train_pool, eval_pool = {}, {}
    for k, v in items.items():
        v = list(v)
        r.shuffle(v)
        if len(v) > 100:
            cut = len(v) // 5
            eval_pool[k], train_pool[k] = v[:cut], v[cut:]
        else:
            eval_pool[k] = train_pool[k] = v
    names = sorted(items)

    def draw(pool, n):
        out = []
        for i in range(n):
            k = names[i % len(names)]
            ins, inp, outp = r.choice(pool[k])
            out.append({"instruction": ins, "input": inp, "output": outp, "task": k})
        r.shuffle(out)
        return out

    return draw(train_pool, n_train), draw(eval_pool, n_eval)


# ---- tokenizer ---------------------------------------------------------------------------------


def train_tokenizer(texts, vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  min_frequency=2, show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos)])
    return tok


def save_tokenizer(tok, d):
    tok.save(os.path.join(d, "tokenizer.json"))
    cfg = {
        "bos_token": BOS, "eos_token": EOS, "add_bos_token": True, "add_eos_token": False,
        "model_max_length": 256, "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": {
            str(tok.token_to_id(t)): {"content": t, "lstrip": False, "normalized": False,
                                      "rstrip": False, "single_word": False, "special": True}
            for t in (BOS, EOS)},
    }
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    with open(os.path.join(d, "special_tokens_map.json"), "w") as f:
        json.dump({"bos_token": BOS, "eos_token": EOS}, f, indent=2)
        f.write("\n")


def check_against_tern(tern, model_dir, tok, strings):
    """tern tokenize --jsonl (with and without --special) must give HF tokenizers' ids."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for s in strings:
            f.write(json.dumps({"text": s}) + "\n")
        path = f.name
    try:
        for special in (False, True):
            cmd = [tern, "tokenize", "--model", model_dir] + (["--special"] if special else [])
            out = subprocess.run(cmd + ["--jsonl", path], check=True, capture_output=True,
                                 text=True).stdout.splitlines()
            assert len(out) == len(strings), f"tern printed {len(out)} lines for {len(strings)}"
            for s, line in zip(strings, out):
                want = tok.encode(s, add_special_tokens=special).ids
                got = json.loads(line)
                assert got == want, f"tern and HF differ on {s!r}:\n tern {got}\n HF   {want}"
    finally:
        os.unlink(path)
    print(f"tokenizer: tern tokenize agrees with HF tokenizers on {len(strings)} strings "
          f"(with and without --special)", flush=True)


def tern_strings(seed, docs, prompts, train):
    r = random.Random(seed + 7)
    return docs[:150] + prompts[:50] + [json.dumps(x) for x in train[:50]] + [
        "".join(r.choice("ab cdé\n\t1234567890!?.,'\"#<>|😀") for _ in range(r.randint(0, 30)))
        for _ in range(100)] + [f"{BOS}hello{EOS} world", " leading space", "", "   ", "GOAT\n\n\n 12"]


# ---- model -------------------------------------------------------------------------------------


def model_config(vocab_size, bos, eos):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=192, intermediate_size=512, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=bos,
        eos_token_id=eos, hidden_act="silu", attention_bias=False, mlp_bias=False,
        initializer_range=0.02, torch_dtype="bfloat16")


def pack(docs_ids, seq):
    """Concatenates BOS+doc+EOS token streams and cuts rows of seq tokens."""
    import torch

    flat = [t for d in docs_ids for t in d]
    n = len(flat) // seq
    return torch.tensor(flat[: n * seq], dtype=torch.long).view(n, seq)


def pretrain(model, rows, steps, batch, lr, seed, log_every):
    import torch

    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    warm = max(1, steps // 20)

    def lr_at(s):
        if s < warm:
            return lr * (s + 1) / warm
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))

    model.train()
    t0 = time.time()
    perm = torch.randperm(rows.shape[0], generator=g)
    pos = 0
    for s in range(steps):
        if pos + batch > rows.shape[0]:
            perm = torch.randperm(rows.shape[0], generator=g)
            pos = 0
        x = rows[perm[pos: pos + batch]]
        pos += batch
        for grp in opt.param_groups:
            grp["lr"] = lr_at(s)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if s % log_every == 0 or s == steps - 1:
            el = time.time() - t0
            print(f"pretrain step {s + 1}/{steps} loss {loss.item():.4f} lr {lr_at(s):.2e} "
                  f"{el:.0f}s (eta {el / (s + 1) * (steps - s - 1):.0f}s)", flush=True)
    model.eval()


def generate(model, tok, prompt, n=40):
    import torch

    ids = tok.encode(prompt, add_special_tokens=True).ids
    x = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(x, max_new_tokens=n, do_sample=False, eos_token_id=tok.token_to_id(EOS),
                             pad_token_id=tok.token_to_id(EOS))
    return tok.decode(out[0, len(ids):].tolist(), skip_special_tokens=False)


def write_data(data_dir, train, evals):
    for name, rows_ in (("train", train), ("eval", evals)):
        with open(os.path.join(data_dir, f"{name}.jsonl"), "w") as f:
            for x in rows_:
                f.write(json.dumps(x) + "\n")
        print(f"wrote {data_dir}/{name}.jsonl: {len(rows_)} samples", flush=True)


# ---- main --------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="demo")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--docs", type=int, default=60000, help="pretraining documents")
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--seq", type=int, default=128, help="pretraining row length")
    ap.add_argument("--steps", type=int, default=1000, help="pretraining steps")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-samples", type=int, default=2000)
    ap.add_argument("--eval-samples", type=int, default=250)
    ap.add_argument("--tern", default=None, help="a built tern binary: check its tokenizer")
    ap.add_argument("--check-only", action="store_true",
                    help="with --tern: only check <out>/model's tokenizer against tern's")
    ap.add_argument("--data-only", action="store_true",
                    help="only (re)write <out>/data (the model and tokenizer do not depend on it)")
    ap.add_argument("--tasks", default=",".join(DEMO_TASKS),
                    help=f"comma-separated tasks of the dataset, of {','.join(ALL_TASKS)}")
    a = ap.parse_args()

    import torch
    from safetensors.torch import load_file

    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    t_start = time.time()
    model_dir = os.path.join(a.out, "model")
    data_dir = os.path.join(a.out, "data")
    os.makedirs(model_dir, exist_ok=True)
    os.makedirs(data_dir, exist_ok=True)

    docs = corpus(a.seed, a.docs)
    print(f"corpus: {len(docs)} documents, {sum(map(len, docs)) / 1e6:.2f} MB of text; e.g.\n  "
          + "\n  ".join(d.replace("\n", " | ") for d in docs[:3]), flush=True)

    # 50 prompts of all seven tasks for the tokenizer; the dataset itself has DEMO_TASKS
    tok_samples, _ = make_dataset(a.seed + 1, 2000, 280)
    prompts = [ALPACA_WITH_INPUT.format(x["instruction"], x["input"]) + x["output"]
               for x in tok_samples[:50]] + [ALPACA_NO_INPUT.format("Write a story.")]
    train, evals = make_dataset(a.seed + 2, a.train_samples, a.eval_samples, a.tasks.split(","))
    if a.data_only:
        write_data(data_dir, train, evals)
        return
    if a.check_only:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        check_against_tern(a.tern, model_dir, tok, tern_strings(a.seed, docs, prompts, train))
        return
    # The tokenizer sees the corpus and, 50 times, the alpaca prompt with a task, so that the
    # prompt's punctuation and headings are merged as they will be met.
    tok = train_tokenizer(docs + prompts, a.vocab)
    save_tokenizer(tok, model_dir)
    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    p = ALPACA_WITH_INPUT.format(train[0]["instruction"], train[0]["input"])
    print(f"tokenizer: vocab {tok.get_vocab_size()}, bos {bos}, eos {eos}; corpus "
          f"{sum(len(d) for d in docs[:2000]) / sum(len(tok.encode(d).ids) for d in docs[:2000]):.2f}"
          f" chars/token; alpaca prompt {len(tok.encode(p).ids)} tokens", flush=True)

    if a.tern:
        check_against_tern(a.tern, model_dir, tok, tern_strings(a.seed, docs, prompts, train))

    # pretraining data: BOS + doc + EOS, packed into rows
    ids = [[bos] + e.ids + [eos] for e in tok.encode_batch(docs, add_special_tokens=False)]
    rows = pack(ids, a.seq)
    print(f"pretraining: {rows.shape[0]} rows of {a.seq} tokens ({rows.numel() / 1e6:.2f}M tokens); "
          f"{a.steps} steps of {a.batch} rows = {a.steps * a.batch / rows.shape[0]:.2f} epochs",
          flush=True)

    from transformers import LlamaForCausalLM

    cfg = model_config(tok.get_vocab_size(), bos, eos)
    model = LlamaForCausalLM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters", flush=True)
    pretrain(model, rows, a.steps, a.batch, a.lr, a.seed, max(1, a.steps // 50))

    print("samples from the pretrained model (greedy):", flush=True)
    for prompt in ["The dog", "3 plus 4 is", "Tom found a", "The opposite of hot", "Count from 2 to 6:",
                   "The word cat in capital letters is"]:
        print(f"  {prompt!r} -> {generate(model, tok, prompt, 24)!r}", flush=True)

    model = model.to(torch.bfloat16)
    model.generation_config.pad_token_id = eos
    model.save_pretrained(model_dir, safe_serialization=True)
    st = os.path.join(model_dir, "model.safetensors")
    print(f"saved {st}: {os.path.getsize(st) / 1e6:.2f} MB", flush=True)
    assert set(load_file(st)) and "lm_head.weight" not in load_file(st)

    write_data(data_dir, train, evals)
    print(f"done in {time.time() - t_start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
