#!/usr/bin/env python3
"""Writes tests/data/tokenizer_strings.jsonl: the strings the tokenizer parity test encodes.

Deterministic (fixed seed). One {"text": ...} per line. Covers English, code, whitespace runs,
CRLF, numbers, contractions in both cases, accents (NFC and NFD), CJK, emoji with ZWJ and skin
tones, RTL scripts, control characters, special tokens inside text, very long words, empty and
single-space strings. Run: python3 tools/tokenizer_strings.py [out.jsonl]
"""
import json
import random
import sys
import unicodedata

rng = random.Random(1234)
S = []

S += ["", " ", "  ", "\t", "\n", "\r\n", "a", "A", "hello", "Hello world", " Hello world",
      "Hello  world", "Hello   world   ", "hello\nworld", "hello\r\nworld\r\n", "\n\n\nx",
      "x\n\n\n", "   leading", "trailing   ", "\t\ttabs\tand\tspaces  \t ", " \n \n ",
      "line1\r\nline2\r\n\r\nline4", "\r", "\r\r\n\n", "a\u00a0b", "a\u3000b", "a\u2003b", "\u200b",
      "x\u0085y", "\u2028\u2029"]

english = [
    "The quick brown fox jumps over the lazy dog.",
    "It's a truth universally acknowledged, that a single man in possession of a good fortune must be in want of a wife.",
    "Fine-tuning large language models with LoRA adapters is cheap.",
    "She said: \"I don't know; maybe we'll see.\"",
    "Mr. O'Neil's dog isn't here -- it's at the vet's!",
    "Are you sure?! Yes... absolutely (100%).",
    "e-mail: someone@example.com, web: https://example.org/path?q=1&r=2#frag",
    "ALL CAPS SENTENCE WITH SOME WORDS",
    "mIxEd CaSe WoRdS aNd StUfF",
    "Semicolons; colons: commas, periods. Dashes - and — em and – en.",
]
S += english
for w in ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]:
    S += [f"it{w} fine", f"IT{w.upper()} FINE", f"It{w[0]}{w[1:].capitalize()} odd"]
S += ["don't DON'T Don'T", "we'LL they'Re I'M you'VE he'D", "'s 'S 'T 'LL", "''s", "rock'n'roll",
      "students' books", "'quoted'", "it’s curly apostrophe", "dog's' tail"]

code = [
    "def foo(x):\n    return x * 2\n",
    "int main(void)\n{\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "for (int i = 0; i < n; i++) { sum += a[i] * b[i]; }",
    "const x = {a: 1, b: [2, 3], 'c': \"d\"};",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC;",
    "#include <stdio.h>\n#define MAX(a, b) ((a) > (b) ? (a) : (b))\n",
    "    if x:\n        pass\n    else:\n        raise ValueError('bad')\n",
    "x=1;y=2;z=x+y;print(z)", "a->b->c", "std::vector<int> v{1,2,3};",
    "<html><body><p class=\"x\">Hi</p></body></html>",
    "{\"key\": [1, 2.5, null, true], \"nested\": {\"k\": \"v\"}}",
    "$ ls -la | grep '^d' && echo done",
    "fn main() -> Result<(), Box<dyn Error>> { Ok(()) }",
    "// comment\n/* block */\n# hash\n-- sql",
    "λx. x + 1", "a_b_c __init__ __dunder__", "camelCaseIdentifier snake_case_identifier",
    "0x1F 0b1010 0o777 1e-9 3.14159 -2.5e+10",
]
S += code

for n in [0, 1, 7, 12, 123, 1234, 12345, 123456, 1234567, 12345678, 1234567890, 3141592653589793,
          10 ** 20, 2 ** 64]:
    S.append(str(n))
    S.append(f"The number {n} is here.")
S += ["1,000,000", "1.000.000,50", "$5.99", "€12,50", "3/4", "10%", "2024-01-31", "12:34:56",
      "+1 (555) 123-4567", "v1.2.3-rc.4", "١٢٣٤٥", "一二三", "Ⅻ", "²³", "½"]
for _ in range(10):
    S.append("".join(rng.choice("0123456789") for _ in range(rng.randint(1, 40))))

accented = ["café", "naïve", "résumé", "Ångström", "jalapeño", "Straße", "Ærøskøbing", "Øresund",
            "crème brûlée", "façade", "coöperate", "Zoë", "Dvořák", "Łódź", "İstanbul", "ğüşıöç",
            "Việt Nam", "Ελληνικά", "Русский язык", "Українська", "ქართული"]
for a in accented:
    S.append(unicodedata.normalize("NFC", a))
    S.append(unicodedata.normalize("NFD", a))
S += ["e\u0301", "a\u0300\u0301\u0302\u0303", "x\u0327\u0304", "\u0301leading combining",
      "Z\u0351\u0362\u0353\u034e\u0359a\u0315\u0345l\u0362g\u0345o", "\ufb01ne \ufb02ow", "Å vs Å"]

cjk = ["你好，世界！", "我爱自然语言处理。", "日本語のテキストです。", "カタカナとひらがな",
       "한국어 텍스트입니다", "中文English混合text", "漢字", "東京タワー 333m",
       "「引用」と『二重引用』", "繁體中文與简体中文", "ｆｕｌｌｗｉｄｔｈ　ＡＢＣ１２３"]
S += cjk

emoji = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "👩🏾‍💻", "🇫🇷🇩🇪", "❤️", "✌🏻 peace",
         "I ❤️ NY 🗽", "🤷‍♂️🤷🏼‍♀️", "1️⃣2️⃣#️⃣", "🧑‍🤝‍🧑", "text😀text", "😀😀😀😀😀",
         "🫠🫡🫶🏿"]
S += emoji

rtl = ["مرحبا بالعالم", "السلام عليكم ورحمة الله", "שלום עולם", "עברית ו-English", "فارسی متن",
       "اردو زبان", "mixed مرحبا text שלום end", "\u202eRTL override\u202c", "\u200fRLM\u200e LRM"]
S += rtl

ctrl = ["\x00", "a\x00b", "\x01\x02\x03", "\x07bell", "\x1b[31mred\x1b[0m", "\x7f", "\x08\x0c\x0b",
        "tab\there", "\x1f\x1e", "\u0080\u009f", "\ufeffBOM", "\ufffd", "\uffff", "\U0010ffff",
        "\U0001d400\U0001d401 math", "\u00ad soft hyphen"]
S += ctrl

specials = ["<|begin_of_text|>", "<|begin_of_text|>Hello", "Hello<|end_of_text|>",
            "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
            "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>",
            "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>\nreasoning\n</think>\n\nanswer",
            "<s>", "</s>", "<s>Hello</s>", "<s> Hello </s>", "Hello <s> world", "a</s>b<s>c", "<unk>",
            "<|begin_of_text", "begin_of_text|>", "<|im_sta", "<|im_start", "<|im_start|", "<s", "</s",
            "< s >", "<<s>>", "<|<|im_start|>|>", "<|reserved_special_token_5|>",
            "<|eot_id|><|eot_id|>", "x<|finetune_right_pad_id|>y", "<|python_tag|>print(1)",
            "<tool_call>\n{\"name\": \"f\"}\n</tool_call>", "<|vision_start|><|image_pad|><|vision_end|>",
            " <|im_start|> ", "\n<|im_end|>\n", "<0x0A>", "<0xFF>"]
S += specials

long = ["a" * 500, "ab" * 300, "pneumonoultramicroscopicsilicovolcanoconiosis",
        "Supercalifragilisticexpialidocious" * 5, "x" * 2000, " " * 300, "\n" * 100, "\t" * 50,
        "-" * 200, "=" * 80, "😀" * 100, "你" * 200, "a1" * 150, "." * 100,
        "Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch"]
S += long

S += ["\u0000\u0001" * 10, "é" * 50, "e\u0301" * 30, "\u00e9\u0065\u0301", "ǅ ǈ ǋ",
      "\U0001F600\u200d", "\u200d\u200d", "a\u200cb", "\ud7ff\ue000", "\U00020000\U0002a6d6",
      "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "ＡＢＣ", "ⅰⅱⅲ", "ﬀ", "Ꭰ", "ⓐⓑⓒ", "\u0130\u0131", "ß ẞ", "ﷺ", "ﷻ",
      "ŉ", "ǰ", "ΐ", "ᾳ ᾼ", "ﬓ"]

# Random mixtures of the pieces above.
pool = english + code + cjk + emoji + rtl + accented + specials + ["  ", "\n", "\r\n", "\t", "123", "'s"]
while len(S) < 420:
    k = rng.randint(2, 6)
    S.append("".join(rng.choice(pool) + rng.choice(["", " ", "\n", "  "]) for _ in range(k)))
# Random bytes that happen to be valid UTF-8.
for _ in range(20):
    cps = [rng.choice([rng.randint(0x20, 0x7e), rng.randint(0xa0, 0x2fff), rng.randint(0x3000, 0x9fff),
                       rng.randint(0x1f300, 0x1faff), rng.randint(0, 0x1f)]) for _ in range(rng.randint(1, 30))]
    S.append("".join(chr(c) for c in cps if not (0xd800 <= c <= 0xdfff)))

out = sys.argv[1] if len(sys.argv) > 1 else "tests/data/tokenizer_strings.jsonl"
with open(out, "w", encoding="utf-8") as f:
    for s in S:
        f.write(json.dumps({"text": s}, ensure_ascii=False) + "\n")
print(f"{out}: {len(S)} strings")
