#!/usr/bin/env bash
# Which OpenBLAS kernel set (OPENBLAS_CORETYPE) multiplies fastest on this CPU, on the model's
# own products: `bert-dist-dev bench --sgemm-only` times forward, input-gradient and weight-gradient
# GEMMs of every linear layer for batch x length tokens per rank, split over the rank's threads as
# the model runs them. Rounds are interleaved (every core type once per round) so that background
# load hits all of them alike; the table shows the best and the median round of each.
#
#   benchmarks/blas_cores.sh [--rounds 5] [--cores "Cooperlake SkylakeX Haswell Zen"]
#
# The result decides BLASSetup.preferredCoreType (Sources/Model/BLASSetup.swift); see
# benchmarks/README.md for the figures of the development machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=5
CORES="Cooperlake SkylakeX Haswell Zen"
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --cores) CORES="$2"; shift 2 ;;
        *) echo "usage: benchmarks/blas_cores.sh [--rounds N] [--cores \"A B ...\"]" >&2; exit 2 ;;
    esac
done
BIN=.build/release/bert-dist-dev
MPIRUN=(mpirun --bind-to core -n 2)
[ "$(id -u)" = 0 ] && MPIRUN=(mpirun --allow-run-as-root --bind-to core -n 2)
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT

for round in $(seq "$ROUNDS"); do
    for core in $CORES; do
        for model in models/minilm benchmarks/bert-base; do
            for shape in "8 52" "32 53"; do
                set -- $shape
                gflops=$(OPENBLAS_CORETYPE=$core "$BIN" bench --model "$model" --batch-size "$1" --seq-len "$2" --threads 2 --sgemm-only |
                         sed -E 's/.*"sgemm_peak_gflops_per_s": ([0-9.]+).*/\1/')
                echo "$core $(basename "$model") $(($1 * $2)) 1x2 $gflops" >> "$OUT"
                gflops=$(OPENBLAS_CORETYPE=$core "${MPIRUN[@]}" -x OPENBLAS_CORETYPE "$BIN" bench --model "$model" --batch-size "$1" \
                             --seq-len "$2" --threads 1 --sgemm-only | sed -E 's/.*"sgemm_peak_gflops_per_s": ([0-9.]+).*/\1/')
                echo "$core $(basename "$model") $(($1 * $2 / 2)) 2x1 $gflops" >> "$OUT"
            done
        done
    done
    echo "round $round done" >&2
done

python3 - "$OUT" <<'EOF'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    core, model, tokens, layout, gflops = line.split()
    runs[(model, int(tokens), layout, core)].append(float(gflops))
cores = sorted({k[3] for k in runs}, key=lambda c: list(dict.fromkeys(k[3] for k in runs)).index(c))
shapes = sorted({k[:3] for k in runs})
print("| model | tokens per rank | ranks x threads | " + " | ".join(f"{c} best / median" for c in cores) + " |")
print("| --- | ---: | --- | " + " | ".join("---:" for _ in cores) + " |")
for shape in shapes:
    cells = [f"{max(runs[shape + (c,)]):.0f} / {statistics.median(runs[shape + (c,)]):.0f}" for c in cores]
    print(f"| {shape[0]} | {shape[1]} | {shape[2].replace('x', ' x ')} | " + " | ".join(cells) + " |")
print()
for c in cores:
    values = [statistics.median(runs[s + (c,)]) / max(statistics.median(runs[s + (o,)]) for o in cores) for s in shapes]
    print(f"{c}: median round at {100 * statistics.fmean(values):.1f}% of the best core type on average")
EOF
