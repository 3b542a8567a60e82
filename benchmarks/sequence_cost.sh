#!/usr/bin/env bash
# The cost model of the token-balanced split (SequenceCost in Sources/Data/Sampler.swift):
# a sequence of l tokens costs l x (D x hidden + l), i.e. tokens plus l² / (D x hidden) for
# attention. This measures D: `bert-dist-dev bench` steps (one thread, synthetic sequences, no
# communication) of batches with the same number of tokens in sequences of 16 ... 512 tokens,
# fitted to  step = a x tokens + b x Σ l² + c x sequences;  D = a / (b x hidden).
#
#   benchmarks/sequence_cost.sh [--models "minilm bert-base"] [--rounds 2] [--steps 4]
#
# MiniLM from models/minilm (2048 tokens per batch), BERT-base from benchmarks/bert-base's config
# with random weights (1024 tokens). Each point is the smallest step time of its rounds (the
# rounds interleave the lengths). Prints the points, the fit and D per model, and the machine's
# load average with each point. ~5 minutes a round for both models.
set -euo pipefail
cd "$(dirname "$0")/.."

MODELS="minilm bert-base"; ROUNDS=2; STEPS=4
while [ $# -gt 0 ]; do
    case "$1" in
        --models) MODELS="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --steps) STEPS="$2"; shift 2 ;;
        *) echo "error: unknown option $1" >&2; exit 2 ;;
    esac
done
BIN=.build/release/bert-dist-dev
[ -x "$BIN" ] || { echo "error: $BIN not found; run swift build -c release first" >&2; exit 1; }
PYTHON="${PYTHON:-/work/venv/bin/python}"
POINTS="$(mktemp)"
trap 'rm -f "$POINTS"' EXIT

for ((round = 1; round <= ROUNDS; round++)); do
    for model in $MODELS; do
        if [ "$model" = minilm ]; then folder=(--model models/minilm); tokens=2048
        else folder=(--model benchmarks/bert-base --random-weights); tokens=1024; fi
        for length in 16 32 64 128 256 512; do
            json=$("$BIN" bench "${folder[@]}" --batch-size $((tokens / length)) --seq-len "$length" --steps "$STEPS" --threads 1 --json \
                2>/dev/null | grep '^{' | tail -n 1)
            echo "$model $length $(cut -d' ' -f1 /proc/loadavg) $json" >> "$POINTS"
            echo "round $round: $model, $((tokens / length)) x $length tokens: $(echo "$json" | sed 's/.*"step_s_min": *\([0-9.]*\).*/\1/') s (min)" >&2
        done
    done
done

"$PYTHON" - "$POINTS" <<'EOF'
import json, sys
import numpy as np
points = {}
for line in open(sys.argv[1]):
    model, length, load, text = line.split(" ", 3)
    result = json.loads(text)
    key = (model, int(length))
    best = points.get(key)
    if best is None or result["step_s_min"] < best[0]:
        points[key] = (result["step_s_min"], float(load), result["real_tokens_per_batch"])
hidden = {"minilm": 384, "bert-base": 768}
for model in sorted({m for m, _ in points}):
    lengths = sorted(l for m, l in points if m == model)
    steps = np.array([points[(model, l)][0] for l in lengths])
    tokens = np.array([points[(model, l)][2] for l in lengths])
    l = np.array(lengths, dtype=float)
    design = np.stack([tokens, tokens * l, tokens / l], 1)  # tokens, Σ l², sequences
    (a, b, c), *_ = np.linalg.lstsq(design, steps, rcond=None)
    print(f"{model}: " + ", ".join(f"{int(t / n)} x {n}: {s:.3f} s (load {points[(model, n)][1]:.1f})"
                                   for n, s, t in zip(lengths, steps, tokens)))
    print(f"  fit: {a * 1e6:.1f} us per token, {b * 1e9:.2f} ns per l², {c * 1e6:.0f} us per sequence; "
          f"D = a / (b x hidden) = {a / (b * hidden[model]):.2f}")
EOF
