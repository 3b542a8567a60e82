#!/usr/bin/env python3
"""Checks that a bert-dist model folder (a merged or plain checkpoint) loads in Hugging Face
`BertForSequenceClassification.from_pretrained` and gives the logits of `bert-dist predict`.

    python3 tools/check_hf_load.py MODEL_DIR [--bert-dist .build/release/bert-dist] [--texts FILE]

Exits non-zero when HF cannot load the folder, the tokenizers disagree, or a logit differs by
more than 1e-4 (float32 noise of two implementations).
"""
import argparse
import json
import subprocess
import sys

import torch
from transformers import BertForSequenceClassification, BertTokenizer

TEXTS = [
    "Wall St. Bears Claw Back Into the Black (Reuters)",
    "Oil prices soar to all-time record, posing new menace to US economy",
    "The Red Sox beat the Yankees 4-3 in extra innings on Sunday night at Fenway Park.",
    "A new chip from Intel promises twice the speed at half the power.",
    "Café naïve façade — ünïcödé & emoji 🚀 test",
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--bert-dist", default=".build/release/bert-dist")
    parser.add_argument("--texts", help="one text per line (default: a few built-in ones)")
    args = parser.parse_args()
    texts = open(args.texts).read().splitlines() if args.texts else TEXTS

    model = BertForSequenceClassification.from_pretrained(args.model)
    model.eval()
    tokenizer = BertTokenizer.from_pretrained(args.model)
    with torch.no_grad():
        encoded = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        hf_logits = model(**encoded).logits.tolist()

    ours = subprocess.run([args.bert_dist, "predict", "--checkpoint", args.model, "--json", "--logits"],
                          input="\n".join(texts) + "\n", capture_output=True, text=True, check=True)
    our_logits = [json.loads(line)["logits"] for line in ours.stdout.splitlines()]
    worst = max(abs(a - b) for hf, us in zip(hf_logits, our_logits) for a, b in zip(hf, us))
    labels = [model.config.id2label[int(torch.tensor(row).argmax())] for row in hf_logits]
    print(f"HF loaded {args.model}: {model.config.num_labels} labels {list(model.config.id2label.values())}")
    print(f"predictions (HF): {labels}")
    print(f"largest |logit difference| HF vs bert-dist over {len(texts)} texts: {worst:.3g}")
    sys.exit(0 if worst <= 1e-4 and len(our_logits) == len(texts) else 1)


if __name__ == "__main__":
    main()
