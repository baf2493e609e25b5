#!/usr/bin/env python3
"""The real tokenizers of Mistral (v1, v3, Tekken), Gemma 2, Gemma 3 and Phi-4 for the chat goldens,
converted from the models' own tokenizer files as shipped in PyPI packages, written (pruned where
large) to tests/data/tokenizers/<name>-tokenizer.json.gz and <name>-tokenizer_config.json.gz.
tests/data/chat/README.md says where each source comes from and what was verified.

Two steps:

  convert NAME SOURCE OUTDIR   writes OUTDIR/NAME/tokenizer.json with transformers' own converter
                               (the slow->fast converters that made the Hugging Face Hub's files) and
                               prints its sha256; where the Hub file's sha256 is known it says whether
                               the bytes are the Hub's. The bytes depend on the transformers and
                               tokenizers versions: HUB names the ones that reproduce the Hub's file.
  commit FULLDIR               for every NAME: checks FULLDIR/NAME/tokenizer.json against the reference
                               implementation of its format (sentencepiece, mistral-common's Tekkenizer,
                               tiktoken) and against ids published by others (REFERENCE), prunes it
                               where PRUNE says so, checks in transformers that the pruned tokenizer
                               gives the full one's ids on every string the goldens tokenize, and writes
                               the .json.gz pair. Run with the transformers of tools/make_chat_golden.py.

Sources (SOURCE above; the sha256 are checked):
  mistral-v1  mistral_common/data/tokenizer.model.v1 (mistral-common 1.13.1), Mistral-7B-v0.1's
              sentencepiece model (the same bytes are maxtext 0.2.5's assets/tokenizers/tokenizer.mistral-v1)
  mistral-v3  maxtext 0.2.5 assets/tokenizers/tokenizer.mistral-v3 = Mistral-7B-Instruct-v0.3's
              tokenizer.model.v3 (also mistral-common's mistral_instruct_tokenizer_240216.model.v2)
  tekken      mistral_common/data/tekken_240718.json (mistral-common 1.13.1), Mistral-Nemo's Tekken
  gemma2      maxtext 0.2.5 assets/tokenizers/tokenizer.gemma = Gemma (1, 2)'s tokenizer.model
  gemma3      maxtext 0.2.5 assets/tokenizers/tokenizer.gemma3, an earlier revision of Gemma 3's
              tokenizer.model: the same pieces below id 256000; the Hub's adds <end_of_image> at 256000
              and shifts the <unusedN> above it by one (GEMMA3_HUB_LAYOUT redoes that)
  phi4        tiktoken's cl100k_base.tiktoken as bundled in litellm 1.110.2
              (litellm/litellm_core_utils/tokenizers/9b5ad71b2ce5302211f9c61530b329a4922fc6a4), with
              phi-4's 96 added tokens as microsoft/phi-4's tokenizer_config.json lists them

Pruning keeps every vocabulary entry that is a substring of a pre-tokenized piece of some string the
goldens tokenize (BPE only ever builds substrings of the piece it encodes), all byte tokens, all added
tokens, and the merges among kept entries (their order, so their ranks, unchanged); ids are unchanged.
Added tokens that the full file keeps out of model.vocab (phi4's) are listed in it too: tokenizers numbers
an added token missing from the model's vocabulary after the vocabulary's size.
"""
import gzip
import hashlib
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKS = os.path.join(ROOT, "tests", "data", "tokenizers")
TPL = os.path.join(ROOT, "tests", "data", "chat", "templates")

SOURCE_SHA256 = {
    "mistral-v1": "dadfd56d766715c61d2ef780a525ab43b8e6da4de6865bda3d95fdef5e134055",
    "mistral-v3": "37f00374dea48658ee8f5d0f21895b9bc55cb0103939607c8185bfd1c6ca1f89",
    "tekken": "eccd1665d2e477697c33cb7f0daa6f6dfefc57a0a6bceb66d4be52952f827516",
    "gemma2": "61a7b147390c64585d6c3543dd6fc636906c9af3865a5548f27f31aee1d4c8e2",
    "gemma3": "a96dfa1c296977bd225176202b305aeb29f3f49cc7d54b15bd31e998f91b9736",
    "phi4": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}
# sha256 of the Hub's tokenizer.json where known, and the versions whose converter reproduces it
HUB = {
    # mistral-v1: the Hub's file for Mistral-7B-v0.1 is not known here; transformers 4.34.1 with tokenizers
    # 0.14.1 (its release's) writes the legacy form, as 4.35 and 4.36 do
    "mistral-v3": ("e553af6fff7d7ad76e830608b218c5c0b0822998d5a1a96099a74cd3c1cb1a49",
                   "transformers 4.42.4, tokenizers 0.19.1 (mistralai/Mistral-7B-Instruct-v0.3)"),
    "gemma2": ("3f289bc05132635a8bc7aca7aa21255efd5e18f3710f43e3cdb96bcd41be4922",
               "transformers 4.44.2, tokenizers 0.19.1 (google/gemma-2-2b-it)"),
    "gemma3": ("4667f2089529e8e7657cfb6d1c19910ae71ff5f28aa7ab2ff2763330affad795",
               "transformers 4.50.0, tokenizers 0.21.4 (google/gemma-3-*-it)"),
}
PRUNE = {"tekken", "gemma2", "gemma3", "phi4"}
# name: bos, eos, the template that is the model's own, add_bos_token
CONFIG = {
    "mistral-v1": ("<s>", "</s>", "mistral-v0.1.jinja", True),
    "mistral-v3": ("<s>", "</s>", "mistral-v0.3.jinja", True),
    "tekken": ("<s>", "</s>", "mistral-nemo.jinja", True),
    "gemma2": ("<bos>", "<eos>", "gemma2.jinja", True),
    "gemma3": ("<bos>", "<eos>", "gemma3.jinja", True),
    "phi4": ("<|endoftext|>", "<|im_end|>", "phi4.jinja", False),
}
# Mistral-Nemo's special tokens 10-13 (as the tokenizer_config.json of nvidia/Mistral-NeMo-Minitron-8B-Instruct,
# a Tekken model of the same release, lists them); mistral-common's list for old tekken files puts [IMG] at 10
NEMO_SPECIALS = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                 "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "<pad>", "[PREFIX]", "[MIDDLE]", "[SUFFIX]"]
# phi-4's added tokens (microsoft/phi-4 tokenizer_config.json): these at their ids, <|dummy_N|> on the others
# from 100256 to 100351 in order; all special, lstrip and rstrip true, not normalized
PHI4_NAMED = {100257: "<|endoftext|>", 100258: "<|fim_prefix|>", 100259: "<|fim_middle|>",
              100260: "<|fim_suffix|>", 100264: "<|im_start|>", 100265: "<|im_end|>", 100266: "<|im_sep|>",
              100276: "<|endofprompt|>"}
# Ids published by others for these models (add_special_tokens true; the leading bos is dropped here):
# microsoft/onnxruntime-extensions test/pp_api_test (MIT), "From HuggingFace" expected values.
REFERENCE = [
    ("phi4", "<|im_start|>system<|im_sep|>You are a helpful assistant.<|im_end|><|im_start|>user<|im_sep|>How "
     "should I explain the Internet?<|im_end|><|im_start|>assistant<|im_sep|>",
     [100264, 9125, 100266, 2675, 527, 264, 11190, 18328, 13, 100265, 100264, 882, 100266, 4438, 1288, 358, 10552,
      279, 8191, 30, 100265, 100264, 78191, 100266]),
    ("gemma3", "<bos><start_of_turn>user\n<start_of_image>What is the password?<end_of_turn>\n<start_of_turn>model\n",
     [2, 105, 2364, 107, 255999, 3689, 563, 506, 8918, 236881, 106, 107, 105, 4368, 107]),
    ("gemma2", "I like walking my cute dog\n and\x17 then", [235285, 1154, 10350, 970, 9786, 5929, 108, 578, 240, 1492]),
    ("gemma2", "生活的真谛是", [122182, 235710, 245467, 235427]),
    ("gemma2", "\t\t\t\t \n\n61", [255971, 235248, 109, 235318, 235274]),
    ("gemma2", "Hey<eos>. \t\t \n\nyou  é  @#😈  🤗!       , 1234 15 5,61",
     [6750, 1, 235265, 235248, 255969, 235248, 109, 4747, 139, 235335, 139, 216311, 241316, 139, 239880, 235341, 144,
      235269, 235248, 235274, 235284, 235304, 235310, 235248, 235274, 235308, 235248, 235308, 235269, 235318, 235274]),
    ("tekken", "This is a test and the second one is in German. Ich liebe München!",
     [4380, 1395, 1261, 2688, 1321, 1278, 2667, 1925, 1395, 1294, 8863, 1046, 14314, 5897, 2352, 28943, 1033]),
]


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# ---- convert ----

def convert(name, source, outdir):
    got = sha256(source)
    if got != SOURCE_SHA256[name]:
        sys.exit(f"{source}: sha256 {got}, not the {name} source ({SOURCE_SHA256[name]})")
    d = os.path.join(outdir, name)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "tokenizer.json")
    if name in ("mistral-v1", "mistral-v3"):
        from transformers import LlamaTokenizerFast
        kw = {"legacy": True} if name == "mistral-v1" else {"legacy": False, "add_prefix_space": True}
        LlamaTokenizerFast(vocab_file=source, from_slow=True, **kw).backend_tokenizer.save(path)
        with open(path, encoding="utf-8") as f:
            norm = json.load(f)["normalizer"]
        if name == "mistral-v1" and "Prepend" not in json.dumps(norm):
            # transformers 4.42 drops the legacy prefix unless add_prefix_space is given
            sys.exit(f"{path}: no Prepend normalizer (legacy Llama form); convert with transformers 4.34")
    elif name in ("gemma2", "gemma3"):
        from transformers import GemmaTokenizerFast
        GemmaTokenizerFast(vocab_file=source, from_slow=True).backend_tokenizer.save(path)
        if name == "gemma3":
            gemma3_hub_layout(path)
    elif name == "tekken":
        from transformers.integrations.mistral.tokenizer import MistralConverter
        tok = MistralConverter(vocab_file=source).converted()
        tok.save(path)
        tekken_nemo_specials(path)
    elif name == "phi4":
        from tokenizers import AddedToken
        from transformers.convert_slow_tokenizer import TikTokenConverter
        tok = TikTokenConverter(vocab_file=source, add_prefix_space=False).converted()
        if tok.get_vocab_size() != 100256:
            sys.exit(f"{source}: {tok.get_vocab_size()} ranks, cl100k_base has 100256")
        dummy, added = 0, []
        for i in range(100256, 100352):
            content = PHI4_NAMED.get(i)
            if content is None:
                content, dummy = f"<|dummy_{dummy}|>", dummy + 1
            added.append(AddedToken(content, single_word=False, lstrip=True, rstrip=True, normalized=False,
                                    special=True))
        tok.add_special_tokens(added)
        tok.save(path)
    else:
        sys.exit(f"unknown tokenizer {name}")
    h = sha256(path)
    hub = HUB.get(name)
    note = "" if not hub else (" = the Hub's tokenizer.json" if h == hub[0] else
                               f" (the Hub's is {hub[0]}, reproduced with {hub[1]})")
    print(f"{path}: {os.path.getsize(path)} bytes, sha256 {h}{note}")


def rewrite(path, tj):
    from tokenizers import Tokenizer
    Tokenizer.from_str(json.dumps(tj, ensure_ascii=False)).save(path)


def gemma3_hub_layout(path):
    """The Hub's Gemma 3 ids above 255999: <end_of_image> at 256000, <unused99>... shifted up by one,
    <image_soft_token> added at 262144; <start_of_image>, <end_of_image> and <image_soft_token> special."""
    with open(path, encoding="utf-8") as f:
        tj = json.load(f)
    vocab = tj["model"]["vocab"]
    inv = {i: t for t, i in vocab.items()}
    want = {255999: "<start_of_image>", 256000: "<end_of_image>"}
    want.update({i: f"<unused{i - 256001 + 99}>" for i in range(256001, 262144)})
    for i, content in want.items():
        if inv[i] != content:
            del vocab[inv[i]]
            vocab[content] = i
    added = {a["id"]: a for a in tj["added_tokens"]}
    for i, content in list(want.items()) + [(262144, "<image_soft_token>")]:
        a = added.setdefault(i, {"id": i, "content": content, "single_word": False, "lstrip": False,
                                 "rstrip": False, "normalized": False, "special": False})
        a["content"] = content
        a["special"] = i in (255999, 256000, 262144)
    tj["added_tokens"] = [added[i] for i in sorted(added)]
    rewrite(path, tj)


def tekken_nemo_specials(path):
    """Mistral-Nemo's names for the 1000 special ids: NEMO_SPECIALS, then <SPECIAL_14> to <SPECIAL_999>."""
    with open(path, encoding="utf-8") as f:
        tj = json.load(f)
    names = NEMO_SPECIALS + [f"<SPECIAL_{i}>" for i in range(len(NEMO_SPECIALS), 1000)]
    vocab = tj["model"]["vocab"]
    specials = [a for a in tj["added_tokens"] if a["id"] < 1000]
    if len(specials) != 1000 or sum(1 for i in vocab.values() if i < 1000) != 1000:
        sys.exit(f"{path}: expected 1000 special tokens")
    for t in [t for t, i in vocab.items() if i < 1000]:
        del vocab[t]
    vocab.update({t: i for i, t in enumerate(names)})
    for a in specials:
        a["content"] = names[a["id"]]
    rewrite(path, tj)


# ---- commit ----

def golden_strings(name):
    """Every text the goldens tokenize with this tokenizer, each message's content, and the references."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import make_chat_golden as g
    from transformers.utils.chat_template_utils import render_jinja_template
    bos, eos = CONFIG[name][:2]
    out = []
    for tplname, tokname in g.TEMPLATES.items():
        if tokname != name:
            continue
        with open(os.path.join(TPL, tplname), encoding="utf-8") as f:
            template = f.read()
        for messages, agp in g.CHATS:
            out += [m["content"] for m in messages]
            try:
                r, _ = render_jinja_template([messages], chat_template=template, add_generation_prompt=agp,
                                             date_string=g.DATE, bos_token=bos, eos_token=eos)
                out.append(r[0])
            except Exception:
                pass
    out += [t for n, t, _ in REFERENCE if n == name]
    return out


def pieces(tj, tok, texts):
    """The pre-tokenized pieces of every text segment between added tokens (with and without the
    whitespace an added token's lstrip / rstrip takes), normalized as the tokenizer normalizes."""
    added = sorted((a["content"] for a in tj["added_tokens"]), key=len, reverse=True)
    split = re.compile("|".join(re.escape(a) for a in added))
    out = set()
    for text in texts:
        for seg in split.split(text):
            for v in {seg, seg.strip(), seg.lstrip(), seg.rstrip()}:
                if not v:
                    continue
                n = tok.normalizer.normalize_str(v) if tok.normalizer else v
                ps = [p for p, _ in tok.pre_tokenizer.pre_tokenize_str(n)] if tok.pre_tokenizer else [n]
                out.update(ps)
                out.add(n)
    return out


def prune(tj, tok, texts):
    vocab = tj["model"]["vocab"]
    longest = max(len(t) for t in vocab)
    keep = set()
    for p in pieces(tj, tok, texts):
        for i in range(len(p)):
            for j in range(i + 1, min(len(p), i + longest) + 1):
                if p[i:j] in vocab:
                    keep.add(p[i:j])
    keep |= {a["content"] for a in tj["added_tokens"] if a["content"] in vocab}
    keep |= {t for t in vocab if re.fullmatch(r"<0x[0-9A-F]{2}>", t)}  # byte fallback
    keep |= {t for t in vocab if len(t) == 1 and tj["model"].get("byte_fallback") is False}  # byte-level bytes
    unk = tj["model"].get("unk_token")
    if unk in vocab:
        keep.add(unk)
    out = json.loads(json.dumps(tj))
    out["model"]["vocab"] = {t: i for t, i in vocab.items() if t in keep}
    # tokenizers numbers an added token that is not in the model's vocabulary after the vocabulary's
    # size, so with fewer entries it would renumber them: list them in the vocabulary at their ids
    for a in tj["added_tokens"]:
        out["model"]["vocab"].setdefault(a["content"], a["id"])

    def pair(m):
        return m.split(" ", 1) if isinstance(m, str) else m

    out["model"]["merges"] = [m for m in tj["model"]["merges"]
                              if all(x in keep for x in pair(m)) and "".join(pair(m)) in keep]
    return out


def reference_check(name, tj, path, texts):
    """The converted tokenizer against the reference implementation of its source format, on every
    segment between added tokens (the tokenizer's whitespace handling around them aside)."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(path)
    added = sorted((a["content"] for a in tj["added_tokens"]), key=len, reverse=True)
    split = re.compile("|".join(re.escape(a) for a in added))
    segs = sorted({s for t in texts for s in split.split(t) if s.strip()})
    if name in ("mistral-v1", "mistral-v3", "gemma2", "gemma3"):
        # SentencePiece encodes a text as one piece; its dummy prefix is what legacy Mistral v1 adds to
        # every segment and v3 (Metaspace, prepend_scheme first) to the first: compare those
        import sentencepiece as spm
        sp = spm.SentencePieceProcessor(model_file=SRC[name])
        ref, kind = sp.encode, "sentencepiece"
        if name == "mistral-v3":
            # Metaspace prepends no "▁" to a text that starts with one (a space), SentencePiece does
            segs = sorted({split.split(t)[0] for t in texts if split.split(t)[0].strip()} - {""})
            segs = [s for s in segs if not s.startswith(" ")]
    elif name == "tekken":
        from mistral_common.tokens.tokenizers.tekken import Tekkenizer
        tk = Tekkenizer.from_file(SRC[name])
        ref, kind = (lambda s: tk.encode(s, bos=False, eos=False)), "mistral-common's Tekkenizer"
    else:  # phi4: tiktoken's own cl100k_base, read from the file given
        import tiktoken
        import tiktoken_ext.openai_public as op
        load = op.load_tiktoken_bpe
        op.load_tiktoken_bpe = lambda url, expected_hash=None: load(SRC[name], expected_hash)
        enc = tiktoken.Encoding(**op.cl100k_base())
        op.load_tiktoken_bpe = load
        ref, kind = enc.encode_ordinary, "tiktoken's cl100k_base"
        segs = sorted({s.strip() for s in segs if s.strip()})  # phi-4's added tokens take the whitespace around them
    bad = [s for s in segs if tok.encode(s, add_special_tokens=False).ids != list(ref(s))]
    print(f"  {name}: {len(segs) - len(bad)} of {len(segs)} segments give the ids {kind} gives")
    return bad


SRC = {}


def commit(fulldir):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast
    ok = True
    for name in CONFIG:
        path = os.path.join(fulldir, name, "tokenizer.json")
        h = sha256(path)
        hub = HUB.get(name)
        print(f"{name}: {path}, sha256 {h}" + ("" if not hub else " (the Hub's)" if h == hub[0] else " (NOT the Hub's)"))
        with open(path, encoding="utf-8") as f:
            tj = json.load(f)
        texts = golden_strings(name)
        if name in SRC:
            bad = reference_check(name, tj, path, texts)
            for s in bad[:5]:
                print(f"    differs: {s!r}")
            ok &= not bad
        full = PreTrainedTokenizerFast(tokenizer_file=path)
        for n, text, want in REFERENCE:
            if n == name:
                got = full(text, add_special_tokens=False)["input_ids"]
                print(f"  reference ids {'equal' if got == want else 'DIFFER'}: {text[:40]!r}")
                ok &= got == want
        out = tj
        if name in PRUNE:
            out = prune(tj, Tokenizer.from_file(path), texts)
            pruned = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(out)))
            same = [full(t, add_special_tokens=False)["input_ids"] == pruned(t, add_special_tokens=False)["input_ids"]
                    for t in texts]
            print(f"  pruned to {len(out['model']['vocab'])} of {len(tj['model']['vocab'])} entries, "
                  f"{len(out['model']['merges'])} of {len(tj['model']['merges'])} merges: "
                  f"{sum(same)} of {len(texts)} strings give the full tokenizer's ids")
            ok &= all(same)
        bos, eos, tpl, add_bos = CONFIG[name]
        with open(os.path.join(TPL, tpl), encoding="utf-8") as f:
            template = f.read()
        cfg = {"add_bos_token": add_bos, "add_eos_token": False, "bos_token": bos, "eos_token": eos,
               "chat_template": template, "tokenizer_class": "PreTrainedTokenizerFast"}
        if out is tj:
            with open(path, "rb") as f:
                body = f.read()
        else:
            body = json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode()
        files = [("tokenizer", body), ("tokenizer_config", json.dumps(cfg, ensure_ascii=False, indent=2).encode())]
        if name == "mistral-v1":
            # the committed "llama2" tokenizer.json is this file, byte for byte: the build unpacks it for both
            with gzip.open(os.path.join(TOKS, "llama2-tokenizer.json.gz"), "rb") as f:
                same = f.read() == body
            print(f"  tokenizer.json {'is' if same else 'is NOT'} tests/data/tokenizers/llama2-tokenizer.json.gz's")
            ok &= same
            files = files[1:]
        for suffix, data in files:
            dst = os.path.join(TOKS, f"{name}-{suffix}.json.gz")
            with open(dst, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0, compresslevel=9) as gz:
                gz.write(data)
            print(f"  {dst}: {os.path.getsize(dst)} bytes")
    ref = os.path.join(ROOT, "tests", "data", "chat", "reference_ids.json")
    with open(ref, "w", encoding="utf-8") as f:
        json.dump({"_comment": "Ids that transformers gives with these models' Hub tokenizers, as published in "
                   "microsoft/onnxruntime-extensions test/pp_api_test (MIT), leading bos dropped; "
                   "tools/make_chat_tokenizers.py checks the committed tokenizers give them, test_chat that tern does.",
                   "cases": [{"tokenizer": n, "text": t, "ids": i} for n, t, i in REFERENCE]},
                  f, ensure_ascii=False, indent=1)
        f.write("\n")
    if not ok:
        sys.exit("some check failed (above)")


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "convert":
        convert(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) >= 3 and sys.argv[1] == "commit":
        # optional NAME=SOURCE pairs: the sources, for the reference implementations' checks
        for kv in sys.argv[3:]:
            k, v = kv.split("=", 1)
            SRC[k] = v
        commit(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
