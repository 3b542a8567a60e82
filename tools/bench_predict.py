#!/usr/bin/env python3
"""Times Hugging Face's prediction of a data file the way `bert-dist predict --data` predicts it.

Run by developers (never by CI), from the repository root (benchmarks/predict.sh runs it):
    /work/venv/bin/python tools/bench_predict.py --model CHECKPOINT --data rows.csv --threads 2 --json

The same rows as bert-dist: an AG News CSV (text = title + " " + description, as bert-dist's
AG News preset reads it) or a JSON Lines file with "text"; truncated to --max-length (128) tokens;
batches of --batch-size (64) rows. Two ways a PyTorch user predicts them, each timed from the
texts to the predicted labels (tokenisation included, loading the model not):
  * pipeline: transformers.pipeline("text-classification", model=..., batch_size=B, top_k=None,
    truncation=True, max_length=L) on the list of texts (it pads each batch to its longest row);
  * loop: a plain batched loop: tokenizer(batch, padding=True, truncation=True, max_length=L),
    model(**encoded).logits under torch.inference_mode(), softmax, argmax.
Both run eval-mode fp32 with torch.set_num_threads(--threads). One warm-up batch first; the
best of --repeats runs. Prints rows/s (and the predicted labels agree between the two ways).
"""
import argparse
import csv
import json
import time

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline


def read_texts(path):
    if path.endswith(".jsonl"):
        with open(path, encoding="utf-8") as f:
            return [json.loads(line)["text"] for line in f if line.strip()]
    with open(path, newline="", encoding="utf-8") as f:  # AG News: class, title, description
        return [row[1] + " " + row[2] for row in csv.reader(f, skipinitialspace=True) if row]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a bert-dist checkpoint (a Hugging Face folder)")
    parser.add_argument("--data", required=True, help="AG News CSV or JSON Lines with \"text\"")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
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

    result = {"rows": len(texts), "threads": args.threads, "batch_size": args.batch_size, "torch": torch.__version__}
    predicted = {}
    for name, work in (("loop", loop), ("pipeline", run_pipeline)):
        work(texts[:args.batch_size])  # warm-up batch
        best = None
        for _ in range(args.repeats):
            started = time.perf_counter()
            predicted[name] = work(texts)
            seconds = time.perf_counter() - started
            best = seconds if best is None else min(best, seconds)
        result[name + "_rows_per_s"] = len(texts) / best
        result[name + "_s"] = best
    result["same_labels"] = predicted["loop"] == predicted["pipeline"]
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{len(texts)} rows, {args.threads} thread(s): plain loop {result['loop_rows_per_s']:.1f} rows/s, "
              f"pipeline {result['pipeline_rows_per_s']:.1f} rows/s (same labels: {result['same_labels']})")


if __name__ == "__main__":
    main()
