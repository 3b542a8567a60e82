#!/usr/bin/env bash
# benchmarks/compare_builds.sh: bert-dist's own step time, two builds side by side (e.g. before
# and after a restructuring), rounds interleaved so both see the same machine.
#
#   benchmarks/compare_builds.sh OLD_BINARY NEW_BINARY [ROWS_CSV] [ROUNDS]
#
# For each configuration of the speed table (MiniLM and BERT-base with random weights, batch 8
# and 32 of real rows, max 128 tokens, 1 process x 2 threads) it runs `bench --json` with each
# binary ROUNDS times (default 3), alternating, and prints the best median step of each with the
# ratio. Run on a quiet machine. The environment is passed as is (OPENBLAS_CORETYPE included).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
old="$1"; new="$2"
rows="${3:-$repo/examples/ag_news_sample/train.csv}"
rounds="${4:-3}"

step_median() {  # binary, then bench arguments: the median step time of one run
    local binary="$1"; shift
    "$binary" bench "$@" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["step_s_median"])'
}

echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE-(unset)} OPENBLAS_L2_SIZE=${OPENBLAS_L2_SIZE-(unset)}; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "| configuration | old step (s) | new step (s) | new / old |"
echo "| --- | ---: | ---: | ---: |"
for model in minilm bert-base; do
    if [ "$model" = minilm ]; then model_args=(--model "$repo/models/minilm"); steps=20
    else model_args=(--model "$repo/benchmarks/bert-base" --random-weights); steps=8; fi
    for batch in 8 32; do
        args=("${model_args[@]}" --data "$rows" --seq-len 128 --batch-size "$batch" --steps "$steps" --threads 2)
        old_best=""; new_best=""
        for _ in $(seq "$rounds"); do
            o=$(step_median "$old" "${args[@]}"); n=$(step_median "$new" "${args[@]}")
            old_best=$(python3 -c "print(min(x for x in [$o, ${old_best:-$o}]))")
            new_best=$(python3 -c "print(min(x for x in [$n, ${new_best:-$n}]))")
        done
        python3 -c "print(f'| $model, batch $batch, real rows | {$old_best:.3f} | {$new_best:.3f} | {$new_best / $old_best:.2f} |')"
    done
done
