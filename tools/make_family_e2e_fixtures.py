#!/usr/bin/env python3
"""The data of the encoder families' end-to-end tests (Tests/EndToEndTests/FamilyEndToEndTests.swift):
real AG News rows, few enough for CI.

Run by developers (never by CI) from the repository root:
    /work/venv/bin/python tools/make_family_e2e_fixtures.py [--ag-news-sample /work/shared/data/ag_news_sample.csv]

It writes to Tests/EndToEndTests/Fixtures/families/:
  ag_train.csv, ag_test.csv   AG News as distributed (no header; class 1-4, title, description),
                              the first 64 and the next 24 rows of the sample: texts with 4 labels
  topics_train.csv,           the same rows of classes 1 (World) and 2 (Sports) as a header CSV
  topics_test.csv             `headline,body,topic` with the string labels "sports" and "world":
                              2 string labels, and text pairs (headline, body)
  topics_test.txt             the headlines of topics_test.csv, one a line (predict's input)
  topics_test_pairs.txt       its rows as HEADLINE<TAB>BODY (predict --pairs's input)
"""
import argparse
import csv
import io
import os

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "EndToEndTests", "Fixtures", "families")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ag-news-sample", default="/work/shared/data/ag_news_sample.csv")
    args = parser.parse_args()
    with open(args.ag_news_sample, encoding="utf-8", newline="") as handle:
        lines = handle.read().splitlines(keepends=True)
    os.makedirs(OUT, exist_ok=True)
    parts = {"train": lines[:64], "test": lines[64:88]}
    for name, rows in parts.items():
        with open(os.path.join(OUT, f"ag_{name}.csv"), "w", encoding="utf-8", newline="") as out:
            out.writelines(rows)
        topics = io.StringIO()
        writer = csv.writer(topics, lineterminator="\n")
        writer.writerow(["headline", "body", "topic"])
        kept = []
        for label, title, description in csv.reader(rows):
            if label in ("1", "2"):
                # A backslash sequence of AG News stays as it is: the tests compare bert-dist with itself.
                kept.append((title, description.strip()))
                writer.writerow([title, description.strip(), {"1": "world", "2": "sports"}[label]])
        with open(os.path.join(OUT, f"topics_{name}.csv"), "w", encoding="utf-8") as out:
            out.write(topics.getvalue())
        if name == "test":
            assert all("\t" not in a + b and "\n" not in a + b for a, b in kept)
            with open(os.path.join(OUT, "topics_test.txt"), "w", encoding="utf-8") as out:
                out.writelines(f"{a}\n" for a, _ in kept)
            with open(os.path.join(OUT, "topics_test_pairs.txt"), "w", encoding="utf-8") as out:
                out.writelines(f"{a}\t{b}\n" for a, b in kept)
        print(f"{name}: {len(rows)} AG News rows, {topics.getvalue().count(chr(10)) - 1} world/sports rows")


if __name__ == "__main__":
    main()
