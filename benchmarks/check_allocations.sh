#!/usr/bin/env bash
# Counts the heap allocations (malloc family) and anonymous mmaps of every timed training step
# after warm-up, by preloading benchmarks/malloc_counter.c into `bert-dist-dev bench` (bert-dist's
# bench, reading the counters around each step), alone and under mpirun -n 2. Prints the bench's
# allocation line for each; extra arguments go to bench.
#
#   benchmarks/check_allocations.sh [AG_NEWS_CSV]      # real rows if given, else synthetic
#   BERT_DIST_ALLOCATION_BACKTRACES=1 benchmarks/check_allocations.sh ...   # where they come from
set -euo pipefail
cd "$(dirname "$0")/.."
LIB=$(mktemp -d)/malloc_counter.so
cc -O2 -shared -fPIC -o "$LIB" benchmarks/malloc_counter.c -ldl
DATA=()
if [ $# -gt 0 ] && [ -f "$1" ]; then DATA=(--data "$1"); shift; fi
BIN=.build/release/bert-dist-dev
MPIRUN=(mpirun --bind-to core -n 2)
[ "$(id -u)" = 0 ] && MPIRUN=(mpirun --allow-run-as-root --bind-to core -n 2)
export BERT_DIST_ALLOCATION_BACKTRACES="${BERT_DIST_ALLOCATION_BACKTRACES:-0}"
for model in "--model models/minilm" "--model benchmarks/bert-base --random-weights"; do
    echo "== $model, 1 rank x 2 threads"
    LD_PRELOAD="$LIB" "$BIN" bench $model "${DATA[@]}" --batch-size 8 --steps 5 --threads 2 "$@" | grep -E "^allocations|^step"
    echo "== $model, 2 ranks x 1 thread"
    "${MPIRUN[@]}" -x LD_PRELOAD="$LIB" -x BERT_DIST_ALLOCATION_BACKTRACES "$BIN" bench $model "${DATA[@]}" --batch-size 8 --steps 5 \
        --threads 1 "$@" | grep -E "^allocations|^step"
done
