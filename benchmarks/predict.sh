#!/usr/bin/env bash
# benchmarks/predict.sh [ROWS.csv|ROWS.jsonl]: rows/s of `bert-dist predict --data` on 1, 2 and 4
# ranks against Hugging Face on the same rows and the same cores: transformers' pipeline and a
# plain batched PyTorch loop (tools/bench_predict.py). Model: MiniLM-L6-H384 (models/minilm) with a
# 4-label AG News head from a 2-step training run (the weights do not change the speed). Rows:
# examples/ag_news_sample/train.csv repeated 4 times (1,200 rows) unless given. Batches of 64,
# max 128 tokens, fp32. Needs `swift build -c release` and /work/venv (tools/requirements.txt).
#
# bert-dist's rows/s counts reading + tokenising the file and predicting (the two times it prints
# on stderr), not MPI start-up and loading the model; Hugging Face's counts tokenising and
# predicting, not loading. The wall time of the whole bert-dist command is shown too. Each run
# records the load average before it: on a shared machine the figures are provisional unless it
# was near 0.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
binary="${BERT_DIST_BIN:-$repo/.build/release/bert-dist}"
python="${PYTHON:-/work/venv/bin/python}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cores="$(nproc)"
if [[ $# -ge 1 ]]; then
    rows="$1"
else
    rows="$work/rows.csv"
    for _ in 1 2 3 4; do cat "$repo/examples/ag_news_sample/train.csv"; done > "$rows"
fi
load() { cut -d' ' -f1 /proc/loadavg; }

"$binary" train --model "$repo/models/minilm" --train "$repo/examples/ag_news_sample/train.csv" --output "$work/run" \
    --max-steps 2 --batch-size 8 --threads "$cores" --cache-dir "$work/cache" --log-every 100 > /dev/null
checkpoint="$work/run/checkpoint-2"

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $cores core(s); rows: $(grep -c . "$rows") of $rows"
echo
echo "| predictor | processes x threads | rows/s | wall s (whole command) | load average before |"
echo "| --- | --- | --- | --- | --- |"
for ranks in 1 2 4; do
    threads=$(( cores / ranks > 0 ? cores / ranks : 1 ))
    binding=core; (( ranks > cores )) && binding=none
    before="$(load)"
    started=$(date +%s.%N)
    mpirun --allow-run-as-root --oversubscribe --bind-to "$binding" -n "$ranks" "$binary" predict --checkpoint "$checkpoint" \
        --data "$rows" --output "$work/out-$ranks.jsonl" --threads "$threads" --batch-size 64 2> "$work/err-$ranks.txt"
    wall=$(echo "$(date +%s.%N) - $started" | bc)
    tokenise=$(sed -n 's/^read and tokenised .* in \([0-9.]*\) s$/\1/p' "$work/err-$ranks.txt")
    read -r count predict < <(sed -n 's/^predicted \([0-9]*\) rows in \([0-9.]*\) s.*/\1 \2/p' "$work/err-$ranks.txt")
    printf '| bert-dist predict --data | %d x %d | %.1f | %.2f | %s |\n' "$ranks" "$threads" \
        "$(echo "$count / ($tokenise + $predict)" | bc -l)" "$wall" "$before"
    # The same labels row for row (the probabilities' last digits follow the threads per rank:
    # with equal threads the files are identical, as the tests check).
    if [[ $ranks -gt 1 ]] && ! cmp -s <(sed 's/,"probs.*//' "$work/out-1.jsonl") <(sed 's/,"probs.*//' "$work/out-$ranks.jsonl"); then
        echo "error: -n $ranks predicted other labels than -n 1" >&2
        exit 1
    fi
done
before="$(load)"
result="$("$python" "$repo/tools/bench_predict.py" --model "$checkpoint" --data "$rows" --threads "$cores" --batch-size 64 --json)"
"$python" - "$result" "$cores" "$before" <<'PYTHON'
import json, sys
result, cores, load = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
for name, label in (("loop", "PyTorch plain batched loop"), ("pipeline", "HF pipeline")):
    print(f"| {label} (torch {result['torch']}) | 1 x {cores} | {result[name + '_rows_per_s']:.1f} | - | {load} |")
if not result["same_labels"]:
    print("note: the pipeline and the loop predicted different labels", file=sys.stderr)
PYTHON
