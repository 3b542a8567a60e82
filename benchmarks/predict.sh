#!/usr/bin/env bash
# Prediction speed (issue 19): rows/s of `bert-dist predict --data` on 1, 2 and 4 ranks against
# Hugging Face on the same rows and the same cores: transformers' pipeline and a plain batched
# PyTorch loop (tools/bench_predict.py). Appends JSON lines to benchmarks/predict.jsonl and
# rewrites the table of benchmarks/predict.md.
#
#   benchmarks/predict.sh AG_NEWS_CSV [--copies 4] [--rows N] [--ranks "1 2 4"] [--batch-size 64]
#       [--repeats 2] [--no-wait] [--no-write]
#
# Rows: AG_NEWS_CSV repeated --copies times (the 400-row sample: 1,600 rows), its first --rows rows
# when given (a quick check of the script). Model: MiniLM-L6-H384 (models/minilm) with a 4-label
# AG News head from a 2-step training run on AG_NEWS_CSV (the weights do not change the speed).
# Batches of --batch-size rows, max 128 tokens, fp32. bert-dist on R ranks runs
# `mpirun -n R --oversubscribe` with cores / R threads per rank (at least 1; each rank pinned to a
# core when it has one thread and a core of its own); Hugging Face runs one process with every core.
# Each figure is the best of --repeats runs.
#
# bert-dist's rows/s counts reading + tokenising the file (rank 0) and predicting + writing the
# output file (the two times it prints on stderr); not MPI start-up, loading the checkpoint and
# sending it to the ranks; the wall time of the whole command is recorded too. Hugging Face's
# counts tokenising and predicting, not loading. Before each run the script waits (up to 10
# minutes, unless --no-wait) until less than 10% of the CPUs are busy, and records the busy
# fraction it saw and the load average. Every rank count must predict the labels of one rank,
# row for row, else the script stops.
#
# --no-write prints the table instead of rewriting benchmarks/predict.md and appends nothing.
# Needs: a release build (swift build -c release; or BERT_DIST_BIN=...), /work/venv (or
# PYTHON=...) with torch and transformers, mpirun.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=""; COPIES=4; ROWS=""; RANKS="1 2 4"; BATCH=64; REPEATS=2; WAIT=1; WRITE=1
while [ $# -gt 0 ]; do
    case "$1" in
        --copies) COPIES="$2"; shift 2 ;;
        --rows) ROWS="$2"; shift 2 ;;
        --ranks) RANKS="$2"; shift 2 ;;
        --batch-size) BATCH="$2"; shift 2 ;;
        --repeats) REPEATS="$2"; shift 2 ;;
        --no-wait) WAIT=0; shift ;;
        --no-write) WRITE=0; shift ;;
        -*) echo "error: unknown option $1" >&2; exit 2 ;;
        *) DATA="$(realpath "$1")"; shift ;;
    esac
done
[ -n "$DATA" ] && [ -f "$DATA" ] || { echo "usage: benchmarks/predict.sh AG_NEWS_CSV [options] (see the top of this file)" >&2; exit 2; }
PYTHON="${PYTHON:-/work/venv/bin/python}"
BIN="${BERT_DIST_BIN:-$(pwd)/.build/release/bert-dist}"
[ -x "$BIN" ] || { echo "error: $BIN not found; run swift build -c release first" >&2; exit 1; }
[ -d models/minilm ] || { echo "error: models/minilm not found (see the README's set-up command)" >&2; exit 1; }
MPIRUN=(mpirun --oversubscribe)
[ "$(id -u)" = 0 ] && MPIRUN+=(--allow-run-as-root)
RESULTS=benchmarks/predict.jsonl
RUN_ID="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
CORES="$(nproc)"
CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

source benchmarks/quiet.sh  # busy_fraction, wait_quiet

# record BUSY JSON: tags one result with the run and the machine's state and keeps it.
record() {
    "$PYTHON" - "$RUN_ID" "$CPU" "$CORES" "$1" "$(cut -d' ' -f1 /proc/loadavg)" "$2" >> "$WORK/results.jsonl" <<'EOF'
import json, sys
run_id, cpu, cores, busy, load, line = sys.argv[1:]
result = json.loads(line)
result.update({"run": run_id, "cpu": cpu, "cores": int(cores), "background_busy": float(busy), "load_average": float(load)})
print(json.dumps(result))
EOF
}

ROWS_FILE="$WORK/rows.csv"
for _ in $(seq "$COPIES"); do cat "$DATA"; done > "$WORK/all.csv"
if [ -n "$ROWS" ]; then head -n "$ROWS" "$WORK/all.csv" > "$ROWS_FILE"; else mv "$WORK/all.csv" "$ROWS_FILE"; fi
COUNT=$(grep -c . "$ROWS_FILE")
echo "== $COUNT rows ($DATA x $COPIES${ROWS:+, first $ROWS}); $CPU, $CORES core(s)" >&2

"$BIN" train --model models/minilm --train "$DATA" --output "$WORK/run" --max-steps 2 --batch-size 8 --threads "$CORES" \
    --cache-dir "$WORK/cache" --log-every 100 > /dev/null
CHECKPOINT="$WORK/run/checkpoint-2"

FIRST=$(echo "$RANKS" | awk '{ print $1 }')  # the rank count whose labels the others must give
for ranks in $RANKS; do
    threads=$(( CORES / ranks > 0 ? CORES / ranks : 1 ))
    binding=none; (( threads == 1 && ranks <= CORES )) && binding=core
    for repeat in $(seq "$REPEATS"); do
        busy=$(wait_quiet)
        echo "== bert-dist predict --data, $ranks rank(s) x $threads thread(s), run $repeat (busy $busy, load $(cut -d' ' -f1 /proc/loadavg))" >&2
        started=$(date +%s.%N)
        "${MPIRUN[@]}" --bind-to "$binding" -n "$ranks" "$BIN" predict --checkpoint "$CHECKPOINT" --data "$ROWS_FILE" \
            --output "$WORK/out-$ranks.jsonl" --threads "$threads" --batch-size "$BATCH" 2> "$WORK/err.txt"
        wall=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
        tokenise=$(sed -n 's/^read and tokenised .* in \([0-9.]*\) s$/\1/p' "$WORK/err.txt")
        read -r predicted predict < <(sed -n 's/^predicted \([0-9]*\) rows in \([0-9.]*\) s.*/\1 \2/p' "$WORK/err.txt")
        [ -n "$tokenise" ] && [ -n "${predict:-}" ] && [ "$predicted" = "$COUNT" ] || {
            echo "error: cannot read bert-dist's times (or it predicted ${predicted:-no} rows of $COUNT):" >&2; cat "$WORK/err.txt" >&2; exit 1; }
        json=$(awk -v r="$ranks" -v t="$threads" -v n="$COUNT" -v b="$BATCH" -v k="$tokenise" -v p="$predict" -v w="$wall" -v i="$repeat" 'BEGIN {
            printf "{\"predictor\": \"bert-dist\", \"ranks\": %d, \"threads\": %d, \"rows\": %d, \"batch_size\": %d, \"max_length\": 128, ", r, t, n, b
            printf "\"repeat\": %d, \"read_tokenise_s\": %s, \"predict_s\": %s, \"wall_s\": %s, \"rows_per_s\": %.3f}", i, k, p, w, n / (k + p) }')
        echo "   $json" >&2
        record "$busy" "$json"
    done
    # The same labels row for row as the first rank count (the probabilities' last digits follow the threads per
    # rank: with equal threads the files are identical, as the tests check).
    if [ "$ranks" != "$FIRST" ] && ! cmp -s <(sed 's/,"probs.*//' "$WORK/out-$FIRST.jsonl") <(sed 's/,"probs.*//' "$WORK/out-$ranks.jsonl"); then
        echo "error: -n $ranks predicted other labels than -n $FIRST" >&2
        exit 1
    fi
done

busy=$(wait_quiet)
echo "== Hugging Face: plain batched PyTorch loop and pipeline, 1 process x $CORES thread(s) (busy $busy)" >&2
json=$("$PYTHON" tools/bench_predict.py --model "$CHECKPOINT" --data "$ROWS_FILE" --threads "$CORES" --batch-size "$BATCH" \
    --repeats "$REPEATS" --compare "$WORK/out-$FIRST.jsonl" --json)
echo "   $json" >&2
for side in loop pipeline; do
    record "$busy" "$("$PYTHON" -c 'import json, sys; print(json.dumps(json.loads(sys.argv[1])[sys.argv[2]]))' "$json" "$side")"
done

if [ "$WRITE" = 1 ]; then
    cat "$WORK/results.jsonl" >> "$RESULTS"
    "$PYTHON" tools/bench_predict.py --table "$WORK/results.jsonl" --markdown benchmarks/predict.md
    echo "== appended to $RESULTS; rewrote the table of benchmarks/predict.md" >&2
else
    "$PYTHON" tools/bench_predict.py --table "$WORK/results.jsonl"
fi
