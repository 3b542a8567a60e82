#!/usr/bin/env python3
"""Checks that a bert-dist model folder (a checkpoint or a merged folder) of any encoder family loads
in Hugging Face `AutoModelForSequenceClassification.from_pretrained` (the family's class, e.g.
RobertaForSequenceClassification) and `AutoTokenizer.from_pretrained` with the labels bert-dist
trained, and gives the logits of `bert-dist predict`.

    python3 tools/check_hf_load.py MODEL_DIR [--bert-dist .build/release/bert-dist] [--texts FILE]
                                   [--pairs] [--labels A,B,...] [--max-length N]

--texts: one text per line (default: a few built-in ones); with --pairs each line is
TEXT<TAB>TEXT_PAIR, tokenised by HF as a batch of pairs (tokenizer(texts, text_pairs, ...), as
Trainer scripts do) and by `bert-dist predict --pairs`. --labels: the label names expected in
id order (HF's config.id2label must equal them).

Exits non-zero when HF cannot load the folder, num_labels/id2label/label2id disagree with each
other or with --labels, a predicted label name differs, or a logit differs by more than 1e-4
(float32 noise of two implementations). `check(...)` is the same check for other scripts
(tools/check_family_hf.py).
"""
import argparse
import json
import subprocess
import sys

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

TEXTS = [
    "Wall St. Bears Claw Back Into the Black (Reuters)",
    "Oil prices soar to all-time record, posing new menace to US economy",
    "The Red Sox beat the Yankees 4-3 in extra innings on Sunday night at Fenway Park.",
    "A new chip from Intel promises twice the speed at half the power.",
    "Café naïve façade — ünïcödé & emoji 🚀 test",
]


def longest_sequence(config):
    """bert-dist's default --max-seq-len: 128, or the longest sequence the positions allow
    (RoBERTa's count from pad_token_id + 1)."""
    offset = config.pad_token_id + 1 if config.model_type in ("roberta", "xlm-roberta", "camembert") else 0
    return min(128, config.max_position_embeddings - offset)


def check(model_dir, bert_dist, lines, pairs=False, labels=None, max_length=None):
    """Loads `model_dir` in transformers and compares with `bert-dist predict`; returns
    (summary lines, problems, largest |logit difference|)."""
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    model.eval()
    config = model.config
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    max_length = max_length or longest_sequence(config)
    problems = []
    names = [config.id2label[i] for i in range(config.num_labels)]
    if len(config.id2label) != config.num_labels or any(config.label2id[name] != i for i, name in enumerate(names)):
        problems.append(f"num_labels {config.num_labels}, id2label {config.id2label} and label2id {config.label2id} disagree")
    if labels and names != labels:
        problems.append(f"id2label {names} is not --labels {labels}")

    with torch.no_grad():
        if pairs:
            firsts, seconds = zip(*(line.split("\t", 1) for line in lines))
            encoded = tokenizer(list(firsts), list(seconds), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        else:
            encoded = tokenizer(lines, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        hf_logits = model(**encoded).logits.tolist()
    if any(len(row) != config.num_labels for row in hf_logits):
        problems.append(f"the classifier has {len(hf_logits[0])} outputs for {config.num_labels} labels")

    command = [bert_dist, "predict", "--checkpoint", model_dir, "--json", "--logits", "--max-seq-len", str(max_length)]
    ours = subprocess.run(command + (["--pairs"] if pairs else []), input="\n".join(lines) + "\n",
                          capture_output=True, text=True, check=True)
    predictions = [json.loads(line) for line in ours.stdout.splitlines()]
    if len(predictions) != len(lines):
        problems.append(f"bert-dist predicted {len(predictions)} lines of {len(lines)}")
    worst = max(abs(a - b) for hf, us in zip(hf_logits, predictions) for a, b in zip(hf, us["logits"]))
    hf_labels = [names[int(torch.tensor(row).argmax())] for row in hf_logits]
    our_labels = [p["label"] for p in predictions]
    if hf_labels != our_labels:
        problems.append(f"predicted labels differ: HF {hf_labels}, bert-dist {our_labels}")
    if worst > 1e-4:
        problems.append(f"logits differ by up to {worst:.3g}")
    summary = [f"HF loaded {model_dir} as {type(model).__name__} with {type(tokenizer).__name__}: num_labels {config.num_labels}, id2label {names}",
               f"predictions on {len(lines)} {'pairs' if pairs else 'texts'} (HF = bert-dist: {hf_labels == our_labels}): "
               + ", ".join(f"{label} x{hf_labels.count(label)}" for label in names if label in hf_labels),
               f"largest |logit difference| HF vs bert-dist: {worst:.3g}"]
    return summary, problems, worst


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--bert-dist", default=".build/release/bert-dist")
    parser.add_argument("--texts", help="one text (or with --pairs TEXT<TAB>TEXT_PAIR) per line")
    parser.add_argument("--pairs", action="store_true", help="the lines are text pairs")
    parser.add_argument("--labels", help="expected label names in id order, comma separated")
    parser.add_argument("--max-length", type=int, help="truncation (default: bert-dist's, min(128, the positions the model has))")
    args = parser.parse_args()
    lines = open(args.texts, encoding="utf-8").read().splitlines() if args.texts else TEXTS
    summary, problems, _ = check(args.model, args.bert_dist, lines, pairs=args.pairs,
                                 labels=args.labels.split(",") if args.labels else None, max_length=args.max_length)
    for line in summary:
        print(line)
    for problem in problems:
        print("problem:", problem)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
