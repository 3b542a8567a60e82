#!/usr/bin/env bash
# The accuracy of --bf16 against fp32 (issue 12): the seed recipe — Adam, lr 2e-5, batch 8,
# max 128 tokens, 500 steps — on the AG News rows of examples/ag_news_sample (300 train rows,
# 100 test rows), once in fp32 and once with --bf16, same seed; prints each run's final eval
# line and the step time. Results: benchmarks/bf16-accuracy.md.
#
#   benchmarks/bf16_accuracy.sh [--steps 500] [--model models/minilm] [--threads 2]
#
# Needs a release build and a CPU with AVX512-BF16 or AMX. Run it under the CPU lock on a shared
# machine (flock /work/coord/cpu.lock benchmarks/bf16_accuracy.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=500
MODEL=models/minilm
THREADS=2
while [ $# -gt 0 ]; do
    case "$1" in
        --steps) STEPS="$2"; shift 2 ;;
        --model) MODEL="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        *) echo "error: unknown option $1" >&2; exit 2 ;;
    esac
done
BIN=.build/release/bert-dist
[ -x "$BIN" ] || { echo "error: $BIN not found; run swift build -c release first" >&2; exit 1; }
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
for precision in fp32 bf16; do
    flag=()
    [ "$precision" = bf16 ] && flag=(--bf16)
    start=$(date +%s.%N)
    "$BIN" train --model "$MODEL" --train examples/ag_news_sample/train.csv --eval examples/ag_news_sample/test.csv \
        --output "$OUT/$precision" --batch-size 8 --max-steps "$STEPS" --lr 2e-5 --optimizer adam --max-seq-len 128 \
        --seed 42 --threads "$THREADS" --eval-every "$((STEPS / 5))" --log-every 100 --checkpoint-every "$STEPS" "${flag[@]}" \
        > "$OUT/$precision.log" 2>&1 || { cat "$OUT/$precision.log" >&2; exit 1; }
    end=$(date +%s.%N)
    echo "== $precision ($(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", b - a }') s)"
    grep -E "eval|done:" "$OUT/$precision.log" | tail -8
done
