#!/usr/bin/env bash
# Times bert-dist and PyTorch + Hugging Face side by side on this machine and rewrites the table
# in benchmarks/README.md (and appends the raw JSON to benchmarks/results.jsonl).
#
#   benchmarks/run.sh AG_NEWS_CSV [--steps 20] [--big-steps 5] [--only REGEX] [--no-wait] [--no-bf16] [--no-readme]
#
# Each configuration runs in fp32 and in bf16 (bert-dist --bf16; PyTorch under
# torch.autocast("cpu", bfloat16)), sides "ours", "ours-bf16", "pytorch", "pytorch-bf16";
# --no-bf16 skips the bf16 runs (a CPU without bf16 instructions: --bf16 is an error there).
# --no-readme prints the tables instead of rewriting benchmarks/README.md (a partial or
# provisional run; the JSON lines are appended to the results all the same).
#
# Configurations (issue 6): MiniLM-L6-H384 (models/minilm) and BERT-base (benchmarks/bert-base,
# random weights); batch 8 and 32 of consecutive real rows (max 128 tokens, dynamic padding on
# the PyTorch side), and 32 x 128 fixed. The encoder families (issue 18): DistilBERT-base
# (benchmarks/distilbert-base) and RoBERTa-base (benchmarks/roberta-base), random weights from
# their base configs, batch 8 and 32 of real rows. One process x 2 threads and two processes x 1 thread
# (ours: mpirun -n 2 --bind-to core ... --threads 1; PyTorch: DDP gloo, launched by
# tools/bench_pytorch.py, each rank pinned to a core). BERT-base 32 x 128 runs --big-steps timed
# steps (a PyTorch step takes ~10 s there), everything else --steps.
#
# Before each run the script waits (up to 10 minutes) until the machine is quiet — less than 10%
# of the CPUs busy over one second — and records the busy fraction it saw in the results.
# Needs: a release build (swift build -c release), /work/venv (or PYTHON=...) with torch and
# transformers, mpirun.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=""
STEPS=20
BIG_STEPS=5
ONLY="."
WAIT=1
BF16=1
README=1
while [ $# -gt 0 ]; do
    case "$1" in
        --steps) STEPS="$2"; shift 2 ;;
        --big-steps) BIG_STEPS="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        --no-wait) WAIT=0; shift ;;
        --no-bf16) BF16=0; shift ;;
        --no-readme) README=0; shift ;;
        -*) echo "error: unknown option $1" >&2; exit 2 ;;
        *) DATA="$1"; shift ;;
    esac
done
if [ -z "$DATA" ] || [ ! -f "$DATA" ]; then
    echo "usage: benchmarks/run.sh AG_NEWS_CSV [--steps 20] [--big-steps 5] [--only REGEX] [--no-wait]" >&2
    exit 2
fi
PYTHON="${PYTHON:-/work/venv/bin/python}"
BIN=".build/release/bert-dist"
[ -x "$BIN" ] || { echo "error: $BIN not found; run swift build -c release first" >&2; exit 1; }
[ -d models/minilm ] || { echo "error: models/minilm not found (see the README's set-up command)" >&2; exit 1; }
MPIRUN=(mpirun --bind-to core -n 2)
[ "$(id -u)" = 0 ] && MPIRUN=(mpirun --allow-run-as-root --bind-to core -n 2)
RESULTS=benchmarks/results.jsonl
RUN_ID="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

source benchmarks/quiet.sh  # busy_fraction, wait_quiet

# run NAME SIDE LAYOUT COMMAND...: runs, tags the JSON line, appends it to the results.
run() {
    local name="$1" side="$2" layout="$3"
    shift 3
    if ! echo "$name $side $layout" | grep -Eq -- "$ONLY"; then return; fi
    local busy json
    busy=$(wait_quiet)
    echo "== $name, $side, $layout (background CPU busy: $busy)" >&2
    json=$("$@" | tail -n 1)
    echo "$json" >&2
    "$PYTHON" - "$RUN_ID" "$name" "$side" "$layout" "$busy" "$json" >> "$RESULTS" <<'EOF'
import json, sys
run_id, name, side, layout, busy, line = sys.argv[1:]
result = json.loads(line)
result.update({"run": run_id, "config": name, "side": side, "layout": layout, "background_busy": float(busy)})
print(json.dumps(result))
EOF
}

for model in minilm bert-base distilbert-base roberta-base; do
    if [ "$model" = minilm ]; then
        ours_model=(--model models/minilm); torch_model=(--model models/minilm)
    else
        ours_model=(--model "benchmarks/$model" --random-weights); torch_model=(--model "benchmarks/$model" --random-weights)
    fi
    workloads=("real 8" "real 32" "fixed 32")
    case "$model" in distilbert-base|roberta-base) workloads=("real 8" "real 32") ;; esac
    for workload in "${workloads[@]}"; do
        set -- $workload
        kind="$1"; batch="$2"
        steps=$STEPS
        if [ "$kind" = real ]; then
            data=(--data "$DATA"); name="$model, batch $batch, real rows"
        else
            data=(); name="$model, $batch x 128 fixed"
            [ "$model" = bert-base ] && steps=$BIG_STEPS
        fi
        common=(--batch-size "$batch" --seq-len 128 --steps "$steps" --json)
        for precision in fp32 bf16; do
            [ "$precision" = bf16 ] && [ "$BF16" = 0 ] && continue
            flag=(); suffix=""
            [ "$precision" = bf16 ] && { flag=(--bf16); suffix="-bf16"; }
            run "$name" "ours$suffix" "1x2" "$BIN" bench "${ours_model[@]}" "${data[@]}" "${common[@]}" "${flag[@]}" --threads 2
            run "$name" "ours$suffix" "2x1" "${MPIRUN[@]}" "$BIN" bench "${ours_model[@]}" "${data[@]}" "${common[@]}" "${flag[@]}" --threads 1
            # The user's OpenBLAS kernel choice (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE) is honoured; when
            # it is set, the same run without it too (what a user who never set it gets).
            if [ -n "${OPENBLAS_CORETYPE:-}${OPENBLAS_L2_SIZE:-}" ]; then
                run "$name" "ours$suffix" "1x2-unset" env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
                    "$BIN" bench "${ours_model[@]}" "${data[@]}" "${common[@]}" "${flag[@]}" --threads 2
            fi
            run "$name" "pytorch$suffix" "1x2" "$PYTHON" tools/bench_pytorch.py "${torch_model[@]}" "${data[@]}" "${common[@]}" "${flag[@]}" --threads 2
            run "$name" "pytorch$suffix" "2x1" "$PYTHON" tools/bench_pytorch.py "${torch_model[@]}" "${data[@]}" "${common[@]}" "${flag[@]}" \
                --processes 2 --threads 1
        done
    done
done

if [ "$README" = 1 ]; then
    "$PYTHON" tools/bench_table.py "$RESULTS" --run "$RUN_ID" --readme benchmarks/README.md
else
    "$PYTHON" tools/bench_table.py "$RESULTS" --run "$RUN_ID"
fi
