#!/usr/bin/env bash
# What --grad-compression bf16 does to accuracy (issue 13: within 0.5 points of fp32), on the seed
# recipe: MiniLM, Adam (torch.optim.Adam semantics), lr 2e-5, global batch 8, 500 steps, max 128
# tokens, on the 400 sample rows split 300 train / 100 test, 2 ranks on this machine
# (mpirun -n 2; the sum over ranks is what compression changes). For each seed it trains fp32 and
# bf16 from the same start and prints both evaluations and the largest parameter difference.
#
#   benchmarks/compression_accuracy.sh AG_NEWS_CSV [SEED...]      (default seeds: 42 43 44)
#
# A benchmark, not a test (~4 minutes per run on 2 quiet cores). Results: benchmarks/communication.md.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:?usage: benchmarks/compression_accuracy.sh AG_NEWS_CSV [SEED...]}"; shift
SEEDS=("$@"); [ ${#SEEDS[@]} -gt 0 ] || SEEDS=(42 43 44)
BIN=.build/release/bert-dist
PYTHON="${PYTHON:-/work/venv/bin/python}"
MPIRUN=(mpirun -n 2 --bind-to core); [ "$(id -u)" = 0 ] && MPIRUN=(mpirun --allow-run-as-root -n 2 --bind-to core)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
head -n 300 "$DATA" > "$WORK/train.csv"
tail -n 100 "$DATA" > "$WORK/test.csv"
for seed in "${SEEDS[@]}"; do
    for compression in none bf16; do
        out="$WORK/run-$seed-$compression"
        line=$("${MPIRUN[@]}" "$BIN" train --model models/minilm --train "$WORK/train.csv" --eval "$WORK/test.csv" \
            --output "$out" --optimizer adam --lr 2e-5 --batch-size 8 --max-steps 500 --max-seq-len 128 --seed "$seed" \
            --checkpoint-every 500 --log-every 100 --grad-compression "$compression" | grep '^done:')
        echo "seed $seed, --grad-compression $compression: $line"
    done
    "$PYTHON" - "$WORK/run-$seed-none/checkpoint-500/model.safetensors" "$WORK/run-$seed-bf16/checkpoint-500/model.safetensors" <<'EOF'
import sys
from safetensors.numpy import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
worst = max(float(abs(a[k] - b[k]).max() / max(abs(a[k]).max(), 1e-6)) for k in a)
print(f"    largest relative parameter difference bf16 vs fp32 after 500 steps: {worst:.2e}")
EOF
done
