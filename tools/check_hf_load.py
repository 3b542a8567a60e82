#!/usr/bin/env python3
"""Checks that a bert-dist model folder (a checkpoint or a merged folder) of any encoder family loads
in Hugging Face `AutoModelForSequenceClassification.from_pretrained` (the family's class, e.g.
RobertaForSequenceClassification) and `AutoTokenizer.from_pretrained` with the labels bert-dist
trained, and gives the logits of `bert-dist predict`.

    python3 tools/check_hf_load.py MODEL_DIR [--bert-dist .build/release/bert-dist] [--texts FILE]
                                   [--pairs] [--labels A,B,...] [--max-length N]
                                   [--problem-type TYPE] [--eval-data FILE.jsonl]

--texts: one text per line (default: a few built-in ones); with --pairs each line is
TEXT<TAB>TEXT_PAIR, tokenised by HF as a batch of pairs (tokenizer(texts, text_pairs, ...), as
Trainer scripts do) and by `bert-dist predict --pairs`. --labels: the label names expected in
id order (HF's config.id2label must equal them). --problem-type: the task bert-dist trained
(HF's config.problem_type must be it; multi-label predictions are the labels whose sigmoid is above
0.5, regression's the one output, for HF as for bert-dist). --eval-data: a JSON Lines file with
"text" and "label" keys (a list of label names for multi-label, a number for regression): HF's
model computes its loss with these labels (the loss its problem_type picks) and it must equal
`bert-dist eval --json`'s loss within 1e-4 relative.

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


def check(model_dir, bert_dist, lines, pairs=False, labels=None, max_length=None, expected_problem_type=None, eval_data=None):
    """Loads `model_dir` in transformers and compares with `bert-dist predict` (and, with
    `eval_data`, HF's loss with `bert-dist eval`); returns (summary lines, problems, largest
    |logit difference|)."""
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
    problem_type = config.problem_type or ("regression" if config.num_labels == 1 else "single_label_classification")
    if expected_problem_type and config.problem_type != expected_problem_type:
        problems.append(f"problem_type {config.problem_type!r} is not {expected_problem_type!r}")

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
    # Each task's prediction, from HF's logits and from bert-dist's output.
    if problem_type == "regression":
        our_logits = [[p["score"]] for p in predictions]
        hf_labels = [f"{row[0]:.3f}" for row in hf_logits]
        our_labels = [f"{p['score']:.3f}" for p in predictions]
    elif problem_type == "multi_label_classification":
        our_logits = [p["logits"] for p in predictions]
        hf_labels = [",".join(names[i] for i, x in enumerate(row) if x > 0) for row in hf_logits]  # sigmoid > 0.5
        our_labels = [",".join(p["labels"]) for p in predictions]
    else:
        our_logits = [p["logits"] for p in predictions]
        hf_labels = [names[int(torch.tensor(row).argmax())] for row in hf_logits]
        our_labels = [p["label"] for p in predictions]
    worst = max(abs(a - b) for hf, us in zip(hf_logits, our_logits) for a, b in zip(hf, us))
    if hf_labels != our_labels:
        problems.append(f"predictions differ: HF {hf_labels}, bert-dist {our_labels}")
    if worst > 1e-4:
        problems.append(f"logits differ by up to {worst:.3g}")
    summary = [f"HF loaded {model_dir} as {type(model).__name__} with {type(tokenizer).__name__}: "
               f"problem_type {config.problem_type}, num_labels {config.num_labels}, id2label {names}",
               f"predictions on {len(lines)} {'pairs' if pairs else 'texts'} (HF = bert-dist: {hf_labels == our_labels}): "
               + ", ".join(f"{label} x{hf_labels.count(label)}" for label in sorted(set(hf_labels))),
               f"largest |logit difference| HF vs bert-dist: {worst:.3g}"]
    if eval_data:
        rows = [json.loads(line) for line in open(eval_data, encoding="utf-8") if line.strip()]
        encoded = tokenizer([row["text"] for row in rows], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        if problem_type == "regression":
            targets = torch.tensor([float(row["label"]) for row in rows])
        elif problem_type == "multi_label_classification":
            targets = torch.tensor([[1.0 if name in row["label"] else 0.0 for name in names] for row in rows])
        else:
            targets = torch.tensor([config.label2id[row["label"]] for row in rows])
        with torch.no_grad():
            hf_loss = model(**encoded, labels=targets).loss.item()  # the loss HF's problem_type picks
        evaluated = subprocess.run([bert_dist, "eval", "--checkpoint", model_dir, "--data", eval_data, "--json",
                                    "--max-seq-len", str(max_length)], capture_output=True, text=True, check=True)
        our_loss = json.loads(evaluated.stdout)["loss"]
        summary.append(f"loss on {len(rows)} rows of {eval_data}: HF {hf_loss:.6f}, bert-dist eval {our_loss:.6f}")
        if abs(hf_loss - our_loss) > 1e-4 * max(1.0, abs(hf_loss)):
            problems.append(f"the loss differs: HF {hf_loss}, bert-dist eval {our_loss}")
    return summary, problems, worst


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--bert-dist", default=".build/release/bert-dist")
    parser.add_argument("--texts", help="one text (or with --pairs TEXT<TAB>TEXT_PAIR) per line")
    parser.add_argument("--pairs", action="store_true", help="the lines are text pairs")
    parser.add_argument("--labels", help="expected label names in id order, comma separated")
    parser.add_argument("--max-length", type=int, help="truncation (default: bert-dist's, min(128, the positions the model has))")
    parser.add_argument("--problem-type", help="expected config.problem_type")
    parser.add_argument("--eval-data", help="JSON Lines with text and label: HF's loss must be bert-dist eval's")
    args = parser.parse_args()
    lines = open(args.texts, encoding="utf-8").read().splitlines() if args.texts else TEXTS
    summary, problems, _ = check(args.model, args.bert_dist, lines, pairs=args.pairs,
                                 labels=args.labels.split(",") if args.labels else None, max_length=args.max_length,
                                 expected_problem_type=args.problem_type, eval_data=args.eval_data)
    for line in summary:
        print(line)
    for problem in problems:
        print("problem:", problem)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
