#!/usr/bin/env python3
"""Trains a model of every encoder family with bert-dist and loads the checkpoints in Hugging Face
transformers: the ids, logits and eval metrics must be bert-dist's. Not run by CI (it needs
transformers); its output is recorded in docs/models.md.

    /work/venv/bin/python tools/check_family_hf.py [--bert-dist .build/debug/bert-dist] [--ranks 2]
                                                 [--families distilbert,electra,...] [--keep DIR]

Per family (distilbert, electra, roberta, xlm-roberta, camembert):
  1. a model folder as transformers writes it: `save_pretrained` of a small random
     `<Family>ForSequenceClassification` (2 layers, hidden 64, 2 labels, initializer_range 0.02;
     vocabulary and special ids those of the tokenizer) and of `AutoTokenizer.from_pretrained` on
     the family's tokenizer fixture (Tests/DataTests/Fixtures/families: trained offline with
     `tokenizers` and `sentencepiece`), so the folder holds what transformers 5 writes;
  2. `mpirun -n RANKS bert-dist train` on the family end-to-end tests' rows
     (Tests/EndToEndTests/Fixtures/families/topics_train.csv: a header CSV with the string labels
     sports/world), once on the headlines and once on (headline, body) pairs, 12 steps of 8 at lr 3e-3;
  3. each checkpoint loaded with AutoModelForSequenceClassification and AutoTokenizer:
     - tools/check_hf_load.check: id2label/label2id/num_labels, and the logits of the test
       headlines (or pairs) against `bert-dist predict --json --logits` (must be within 1e-4);
     - the ids of HF's tokenizer read from the checkpoint (`encode(text, truncation=True,
       max_length=L)`; pairs `encode(a, b, ...)`) against `bert-dist tokenize --model CHECKPOINT`
       for the tokenizer goldens' one-line texts and the data's pairs (must all be equal);
     - HF's mean loss and accuracy on topics_test.csv against `bert-dist eval --json`.
Prints one line per check and a table for docs/models.md; exits non-zero on any problem.
"""
import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile

import torch
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, CamembertConfig, DistilBertConfig,
                          ElectraConfig, RobertaConfig, XLMRobertaConfig)
from transformers.utils import logging

logging.disable_progress_bar()

sys.path.insert(0, os.path.dirname(__file__))
from check_hf_load import check, longest_sequence  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TOKENIZERS = os.path.join(ROOT, "Tests", "DataTests", "Fixtures", "families")
DATA = os.path.join(ROOT, "Tests", "EndToEndTests", "Fixtures", "families")
FOLDERS = {"distilbert": "distilbert-json", "electra": "electra-json", "roberta": "roberta-json",
           "xlm-roberta": "xlmr-json", "camembert": "camembert-spm"}
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe"]


def model_config(family, tokenizer):
    common = dict(vocab_size=len(tokenizer), num_labels=2, initializer_range=0.02,
                  id2label={0: "sports", 1: "world"}, label2id={"sports": 0, "world": 1})
    if family == "distilbert":
        return DistilBertConfig(dim=64, n_layers=2, n_heads=4, hidden_dim=96, max_position_embeddings=64,
                                pad_token_id=tokenizer.pad_token_id, **common)
    if family == "electra":
        return ElectraConfig(embedding_size=48, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=96, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id, **common)
    config_class = {"roberta": RobertaConfig, "xlm-roberta": XLMRobertaConfig, "camembert": CamembertConfig}[family]
    pad = tokenizer.pad_token_id
    return config_class(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
                        max_position_embeddings=64 + pad + 1, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=pad,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **common)


def make_folder(family, folder):
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(TOKENIZERS, FOLDERS[family]))
    torch.manual_seed(11)
    model = AutoModelForSequenceClassification.from_config(model_config(family, tokenizer))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sorted(os.listdir(folder))


def run(command, stdin=None):
    result = subprocess.run(command, input=stdin, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stdout}\n{result.stderr}")
    return result.stdout


def read_topics(name):
    with open(os.path.join(DATA, name), encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return rows


def one_line_texts():
    with open(os.path.join(TOKENIZERS, "family_texts.json"), encoding="utf-8") as handle:
        texts = json.load(handle)["texts"]
    return [t for t in texts if "\n" not in t and "\r" not in t]


def compare_ids(bert_dist, checkpoint, texts, pairs, max_length):
    """Mismatches between HF's tokenizer of the checkpoint and `bert-dist tokenize`."""
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    ours = run([bert_dist, "tokenize", "--model", checkpoint, "--max-seq-len", str(max_length)],
               stdin="\n".join(texts) + "\n").split("\n")[:-1]
    theirs = [" ".join(map(str, tokenizer.encode(t, truncation=True, max_length=max_length))) for t in texts]
    wrong = sum(a != b for a, b in zip(ours, theirs)) + abs(len(ours) - len(theirs))
    lines = [f"{a}\t{b}" for a, b in pairs]
    ours = run([bert_dist, "tokenize", "--model", checkpoint, "--pairs", "--max-seq-len", str(max_length)],
               stdin="\n".join(lines) + "\n").split("\n")[:-1]
    theirs = [" ".join(map(str, tokenizer.encode(a, b, truncation=True, max_length=max_length))) for a, b in pairs]
    wrong_pairs = sum(a != b for a, b in zip(ours, theirs)) + abs(len(ours) - len(theirs))
    return wrong, len(texts), wrong_pairs, len(pairs), type(tokenizer).__name__


def compare_eval(bert_dist, checkpoint, rows, pairs):
    """bert-dist eval's loss and accuracy against HF's on the same rows."""
    columns = ["--text-column", "headline", "--label-column", "topic"] + (["--text-pair-column", "body"] if pairs else [])
    ours = json.loads(run([bert_dist, "eval", "--checkpoint", checkpoint, "--data", os.path.join(DATA, "topics_test.csv"),
                           "--json", "--cache-dir", os.path.join(checkpoint, "..", "cache")] + columns))
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    max_length = longest_sequence(model.config)
    texts = [r["headline"] for r in rows]
    encoded = (tokenizer(texts, [r["body"] for r in rows], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
               if pairs else tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"))
    labels = torch.tensor([model.config.label2id[r["topic"]] for r in rows])
    with torch.no_grad():
        output = model(**encoded, labels=labels)
    accuracy = (output.logits.argmax(-1) == labels).float().mean().item()
    return ours["loss"], output.loss.item(), ours["accuracy"], accuracy


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bert-dist", default=os.path.join(ROOT, ".build", "debug", "bert-dist"))
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--families", default=",".join(FOLDERS))
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    work = args.keep or tempfile.mkdtemp(prefix="check-family-hf-")
    os.makedirs(work, exist_ok=True)
    train_file = os.path.join(DATA, "topics_train.csv")
    test_rows = read_topics("topics_test.csv")
    texts = one_line_texts() + [r["headline"] for r in test_rows]
    pair_rows = [(r["headline"], r["body"]) for r in read_topics("topics_train.csv") + test_rows]
    problems, table = [], []
    for family in args.families.split(","):
        folder = os.path.join(work, family, "model")
        shutil.rmtree(os.path.join(work, family), ignore_errors=True)
        files = make_folder(family, folder)
        print(f"== {family}: transformers wrote {', '.join(files)}")
        row = {"family": family}
        for pairs in (False, True):
            kind = "pairs" if pairs else "texts"
            output = os.path.join(work, family, kind)
            columns = ["--text-column", "headline", "--label-column", "topic"] + (["--text-pair-column", "body"] if pairs else [])
            run(MPIRUN + ["-n", str(args.ranks), args.bert_dist, "train", "--model", folder, "--train", train_file, "--output", output,
                          "--cache-dir", os.path.join(work, "cache"), "--batch-size", "8", "--max-steps", "12", "--lr", "3e-3",
                          "--threads", "1", "--log-every", "100"] + columns)
            checkpoint = os.path.join(output, "checkpoint-12")
            lines = [f"{a}\t{b}" for a, b in pair_rows[-len(test_rows):]] if pairs else [r["headline"] for r in test_rows]
            summary, found, worst = check(checkpoint, args.bert_dist, lines, pairs=pairs, labels=["sports", "world"])
            for line in summary:
                print(f"  {kind}: {line}")
            problems += [f"{family} {kind}: {p}" for p in found]
            ours_loss, hf_loss, ours_accuracy, hf_accuracy = compare_eval(args.bert_dist, checkpoint, test_rows, pairs)
            print(f"  {kind}: eval loss bert-dist {ours_loss:.6f} HF {hf_loss:.6f}, accuracy {ours_accuracy:.4f} HF {hf_accuracy:.4f}")
            if abs(ours_loss - hf_loss) > 1e-4 or abs(ours_accuracy - hf_accuracy) > 1e-6:
                problems.append(f"{family} {kind}: eval differs from HF's")
            row[kind] = (worst, abs(ours_loss - hf_loss))
            if not pairs:
                config = json.load(open(os.path.join(checkpoint, "config.json")))
                row["class"] = config["architectures"][0]
                wrong, count, wrong_pairs, pair_count, tokenizer_class = compare_ids(
                    args.bert_dist, checkpoint, texts, pair_rows, longest_sequence(AutoModelForSequenceClassification.from_pretrained(checkpoint).config))
                print(f"  ids: {tokenizer_class} from the checkpoint vs bert-dist tokenize: {wrong} of {count} texts, "
                      f"{wrong_pairs} of {pair_count} pairs differ")
                if wrong or wrong_pairs:
                    problems.append(f"{family}: {wrong} texts and {wrong_pairs} pairs tokenised differently")
                row["ids"] = (count - wrong, count, pair_count - wrong_pairs, pair_count, tokenizer_class)
        table.append(row)
    print()
    print("| family | HF classes loaded | ids equal (texts, pairs) | max logit diff texts / pairs | eval loss diff texts / pairs |")
    print("| --- | --- | --- | --- | --- |")
    for r in table:
        ok, count, ok_pairs, pair_count, tokenizer_class = r["ids"]
        print(f"| {r['family']} | {r['class']}, {tokenizer_class} | {ok}/{count}, {ok_pairs}/{pair_count} "
              f"| {r['texts'][0]:.1e} / {r['pairs'][0]:.1e} | {r['texts'][1]:.1e} / {r['pairs'][1]:.1e} |")
    for problem in problems:
        print("problem:", problem)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
