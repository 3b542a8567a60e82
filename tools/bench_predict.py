#!/usr/bin/env python3
"""Times Hugging Face's prediction of a data file the way `bert-dist predict --data` predicts it.

Run by developers (never by CI), from the repository root (benchmarks/predict.sh runs it):
    /work/venv/bin/python tools/bench_predict.py --model CHECKPOINT --data rows.csv --threads 2 --json
    /work/venv/bin/python tools/bench_predict.py --table results.jsonl [--markdown benchmarks/predict.md]

The same rows as bert-dist: an AG News CSV (text = title + " " + description, as bert-dist's
AG News preset reads it) or a JSON Lines file with "text"; truncated to --max-length (128) tokens;
batches of --batch-size (64) rows. Two ways a PyTorch user predicts them, each timed from the
texts to the predicted labels (tokenisation included, loading the model not):
  * pipeline: transformers.pipeline("text-classification", model=..., batch_size=B, top_k=None,
    truncation=True, max_length=L) on the list of texts (it pads each batch to its longest row);
  * loop: a plain batched loop: tokenizer(batch, padding=True, truncation=True, max_length=L),
    model(**encoded).logits under torch.inference_mode(), softmax, argmax.
Both run eval-mode fp32 with torch.set_num_threads(--threads). One warm-up batch first; the
best of --repeats runs. --json prints {"loop": {...}, "pipeline": {...}}, one result each in the
form of benchmarks/predict.jsonl; --compare FILE (bert-dist's JSON Lines predictions of the same
rows) counts the rows whose label differs.

--table reads such results (benchmarks/predict.sh's lines of one run) and prints the markdown
table, or writes it between the markers of --markdown's file: per predictor and rank count, the
best of the repeats.
"""
import argparse
import csv
import json
import re
import time


def read_texts(path):
    if path.endswith(".jsonl"):
        with open(path, encoding="utf-8") as f:
            return [json.loads(line)["text"] for line in f if line.strip()]
    with open(path, newline="", encoding="utf-8") as f:  # AG News: class, title, description
        return [row[1] + " " + row[2] for row in csv.reader(f, skipinitialspace=True) if row]


def measure(args):
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    transformers.logging.disable_progress_bar()  # stderr stays the script's progress lines
    torch.set_num_threads(args.threads)
    texts = read_texts(args.data)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model).eval()

    def loop(rows):
        labels = []
        with torch.inference_mode():
            for start in range(0, len(rows), args.batch_size):
                encoded = tokenizer(rows[start:start + args.batch_size], padding=True, truncation=True,
                                    max_length=args.max_length, return_tensors="pt")
                probabilities = torch.softmax(model(**encoded).logits, dim=-1)
                labels += probabilities.argmax(dim=-1).tolist()
        return labels

    classifier = pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")

    def run_pipeline(rows):
        results = classifier(rows, batch_size=args.batch_size, top_k=None, truncation=True, max_length=args.max_length)
        return [model.config.label2id[max(result, key=lambda r: r["score"])["label"]] for result in results]

    theirs = None
    if args.compare:
        with open(args.compare, encoding="utf-8") as f:
            theirs = [json.loads(line)["label_id"] for line in f if line.strip()]
    versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
    results = {}
    for name, work in (("loop", loop), ("pipeline", run_pipeline)):
        work(texts[:args.batch_size])  # warm-up batch
        best, predicted = None, None
        for _ in range(args.repeats):
            started = time.perf_counter()
            predicted = work(texts)
            seconds = time.perf_counter() - started
            best = seconds if best is None else min(best, seconds)
        result = {"predictor": "pytorch-" + name, "ranks": 1, "threads": args.threads, "rows": len(texts),
                  "batch_size": args.batch_size, "max_length": args.max_length, "repeats": args.repeats,
                  "seconds": best, "rows_per_s": len(texts) / best, "versions": versions}
        if theirs is not None:
            result["rows_differing_from_bert_dist"] = (sum(a != b for a, b in zip(predicted, theirs))
                                                       + abs(len(predicted) - len(theirs)))
        results[name] = result
    if args.json:
        print(json.dumps(results))
    else:
        for name, result in results.items():
            print(f"{name}: {result['rows']} rows, {args.threads} thread(s): {result['rows_per_s']:.1f} rows/s")


NAMES = {"bert-dist": "bert-dist predict --data", "pytorch-loop": "PyTorch, plain batched loop", "pytorch-pipeline": "HF pipeline"}


def table(results):
    """The markdown table of one run's results: the best of the repeats per predictor and rank count."""
    best = {}
    for result in results:
        key = (result["predictor"], result["ranks"])
        if key not in best or result["rows_per_s"] > best[key]["rows_per_s"]:
            best[key] = result
    first = results[0]
    busy = [r["background_busy"] for r in results]
    loads = [r["load_average"] for r in results]
    lines = [f"Run {first['run']}: {first['rows']} rows, batches of {first['batch_size']}, max {first['max_length']} tokens, "
             f"fp32; {first['cpu']}, {first['cores']} core(s). Busy fraction of all CPUs before each run "
             f"{min(busy):.2f}-{max(busy):.2f}, load average {min(loads):.1f}-{max(loads):.1f}.",
             "",
             "| predictor | processes x threads | rows/s | read + tokenise (s) | predict (s) | wall, whole command (s) | labels differing from bert-dist |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    order = list(NAMES)
    for (predictor, ranks), r in sorted(best.items(), key=lambda item: (order.index(item[0][0]), item[0][1])):
        if predictor == "bert-dist":
            cells = [f"{r['read_tokenise_s']:.2f}", f"{r['predict_s']:.2f}", f"{r['wall_s']:.2f}", ""]
        else:
            cells = ["", f"{r['seconds']:.2f}", "", str(r.get("rows_differing_from_bert_dist", ""))]
        name = NAMES[predictor] + (f" ({r['versions']})" if "versions" in r else "")
        lines.append(f"| {name} | {ranks} x {r['threads']} | {r['rows_per_s']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table(args):
    with open(args.table, encoding="utf-8") as f:
        results = [json.loads(line) for line in f if line.strip()]
    text = table(results)
    if not args.markdown:
        print(text, end="")
        return
    with open(args.markdown, encoding="utf-8") as f:
        page = f.read()
    begin, end = "<!-- predict:begin -->\n", "<!-- predict:end -->"
    if begin not in page or end not in page:
        raise SystemExit(f"error: {args.markdown} has no {begin.strip()} ... {end} markers")
    page = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: begin + text + end, page, flags=re.S)
    with open(args.markdown, "w", encoding="utf-8") as f:
        f.write(page)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a bert-dist checkpoint (a Hugging Face folder)")
    parser.add_argument("--data", help="AG News CSV or JSON Lines with \"text\"")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--compare", help="bert-dist's JSON Lines predictions of the same rows")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--table", help="print the table of these results (JSON lines) instead of measuring")
    parser.add_argument("--markdown", help="with --table: rewrite the table between this file's predict markers")
    args = parser.parse_args()
    if args.table:
        write_table(args)
    elif args.model and args.data:
        measure(args)
    else:
        parser.error("give --model and --data (or --table)")


if __name__ == "__main__":
    main()
