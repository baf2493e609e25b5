#!/usr/bin/env python3
"""Writes fuzz/corpus/tokenizer/: small synthetic tokenizer.json files (a few KB) of both families,
built from the first merges of the real tokenizers in tests/data/tokenizers, each followed by a NUL
byte and a text to encode (the input format of fuzz/fuzz_tokenizer.c). Run from the repo root."""
import gzip
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus", "tokenizer")


def real(name):
    with gzip.open(os.path.join(ROOT, "tests", "data", "tokenizers", f"{name}-tokenizer.json.gz"), "rt") as f:
        return json.load(f)


def small(src, base, n_merges, array_form):
    vocab = dict((t, i) for i, t in enumerate(base))
    merges = []
    for m in src["model"]["merges"]:
        a, b = m if isinstance(m, list) else m.split(" ")
        if a in vocab and b in vocab and (a + b) not in vocab:
            vocab[a + b] = len(vocab)
            merges.append([a, b] if array_form else f"{a} {b}")
            if len(merges) >= n_merges:
                break
    return vocab, merges


def bytelevel_chars():
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def added(items):
    return [{"id": i, "content": c, "single_word": sw, "lstrip": ls, "rstrip": rs, "normalized": nm,
             "special": sp} for (i, c, sw, ls, rs, nm, sp) in items]


def write(name, tok, text):
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(json.dumps(tok, ensure_ascii=False, separators=(",", ":")).encode())
        f.write(b"\0" + text.encode())


def main():
    l3, q3, l2 = real("llama3"), real("qwen3"), real("llama2")
    for name, src, nm, arr in [("llama3", l3, 120, False), ("qwen3", q3, 120, True)]:
        vocab, merges = small(src, bytelevel_chars(), nm, arr)
        base = len(vocab)
        model = dict(src["model"], vocab=vocab, merges=merges)
        tok = {"version": "1.0", "truncation": None, "padding": None,
               "added_tokens": added([(base, "<|begin_of_text|>", False, False, False, False, True),
                                      (base + 1, "<|im_start|>", False, False, False, False, True),
                                      (base + 2, "<think>", False, False, False, False, False)]),
               "normalizer": src["normalizer"], "pre_tokenizer": src["pre_tokenizer"],
               "post_processor": src["post_processor"], "decoder": src["decoder"], "model": model}
        write(f"{name}_small.json", tok, "Hello <|im_start|>world's 12345\r\n  \tcaf\u00e9 \u4f60\u597d \U0001F600")
        tok2 = dict(tok, post_processor={"type": "TemplateProcessing",
                                         "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                                                    {"Sequence": {"id": "A", "type_id": 0}}],
                                         "pair": [], "special_tokens": {"<|begin_of_text|>": {
                                             "id": "<|begin_of_text|>", "ids": [base], "tokens": ["<|begin_of_text|>"]}}})
        tok2["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                                 "use_regex": True}
        write(f"{name}_gpt2_template.json", tok2, "<|begin_of_text|>The 'LL cat  sat.\n\n")
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    chars = sorted({c for m in l2["model"]["merges"][:400] for c in m.replace(" ", "")})
    vocab, merges = small(l2, specials + chars, 150, False)
    model = dict(l2["model"], vocab=vocab, merges=merges)
    tok = {"version": "1.0", "truncation": None, "padding": None,
           "added_tokens": added([(0, "<unk>", False, False, False, False, True),
                                  (1, "<s>", False, False, False, False, True),
                                  (2, "</s>", False, False, False, False, True),
                                  (len(vocab), "<pad>", True, True, True, True, False)]),
           "normalizer": l2["normalizer"], "pre_tokenizer": None, "post_processor": l2["post_processor"],
           "decoder": l2["decoder"], "model": model}
    write("llama2_small.json", tok, "<s>Hello world, \u00e9\u00e8 <pad> x\n\t\U0001F600</s>")
    tok2 = dict(tok, normalizer=None,
                pre_tokenizer={"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False},
                decoder={"type": "Sequence", "decoders": [
                    {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False},
                    {"type": "ByteFallback"}, {"type": "Fuse"}]})
    write("llama2_metaspace.json", tok2, "Hi there  you\u2581x")
    print("wrote", sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main()
