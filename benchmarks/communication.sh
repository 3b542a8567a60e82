#!/usr/bin/env bash
# Communication at cluster bandwidth (issues 13, 21): bert-dist and PyTorch DDP (gloo) side by side
# on the namespace cluster (Tests/Cluster/cluster.sh: one rank x one thread per host, each host on
# its own core), links limited with tc tbf in both directions. Appends JSON lines to
# benchmarks/communication.jsonl and rewrites the tables of benchmarks/communication.md and
# README.md (tools/communication_table.py), all in one command:
#
#   benchmarks/communication.sh AG_NEWS_CSV [--steps 10] [--big-steps 4] [--batches "32 8"] [--rounds 2]
#       [--hosts "2"] [--links "10gbit 1gbit"] [--models "minilm bert-base"] [--only REGEX]
#       [--before BINARY] [--wait-quiet] [--no-tables]
#
# Per round (rounds interleave every configuration, so load from other processes hits all alike;
# the tables take the best round), for each model (MiniLM, from models/minilm; BERT-base from
# benchmarks/bert-base's config with random weights) and each global batch of --batches (real
# AG News rows, max 128 tokens):
#   - T1: the same global batch on one host (h1), both sides; bert-dist also with
#     OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (variant fp32-openblas-unset);
#   - per host count and link: bert-dist fp32, --grad-compression bf16, and both with
#     --shard-optimizer (ZeRO-1: fp32-zero1, bf16-zero1); the gain per cause, on the variant the
#     link's target uses (fp32 at 10 Gbit/s, bf16 below): the same with the batches split into equal
#     example counts (bert-dist-dev bench --example-split: VARIANT-examples) and with the optimizer's
#     update applied to each part as its sum arrives (--update-overlapped: VARIANT-overlapped), and that variant
#     with the OPENBLAS variables unset; DDP fp32 and bf16_compress_hook; with --before, a bert-dist
#     binary to compare with (e.g. main's: side "before", fp32 and bf16);
#   - per host count: both sides without gradient communication (bert-dist-dev bench
#     --no-gradient-sync, token and example split; DDP no_sync()): the compute-only scaling, and
#     step - this = the communication not hidden.
# Needs root (namespaces), a release build, /work/venv (or PYTHON=...) with torch + transformers.
# MiniLM takes ~10 minutes a round per batch size, BERT-base ~15 (batch 8) and ~30 (batch 32):
# about an hour a round on a quiet machine, 2-2.5 hours for --rounds 2.
# A quick check of the script itself (any build, a few configurations, tables left alone):
#   RESULTS=/tmp/trial.jsonl BIN=.build/debug/bert-dist-dev benchmarks/communication.sh DATA --models minilm \
#       --batches 8 --steps 1 --rounds 1 --links 1gbit --no-tables --only 'none 1 ours fp32$|1gbit 2 ours bf16|no-sync|pytorch'
#   python3 tools/communication_table.py /tmp/trial.jsonl
# The machine's load is recorded with every run (busy fraction of all CPUs over the second before
# it, and the load average), and the CPU model; --wait-quiet waits up to 10 minutes for < 10% busy
# before each run.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=""; STEPS=10; BIG_STEPS=4; BATCHES="32 8"; ROUNDS=2; HOSTS="2"; LINKS="10gbit 1gbit"; MODELS="minilm bert-base"
ONLY="."; BEFORE=""; WAIT=0; TABLES=1
while [ $# -gt 0 ]; do
    case "$1" in
        --steps) STEPS="$2"; shift 2 ;;
        --big-steps) BIG_STEPS="$2"; shift 2 ;;
        --batches) BATCHES="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --hosts) HOSTS="$2"; shift 2 ;;
        --links) LINKS="$2"; shift 2 ;;
        --models) MODELS="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        --before) BEFORE="$(realpath "$2")"; shift 2 ;;
        --wait-quiet) WAIT=1; shift ;;
        --no-tables) TABLES=0; shift ;;
        -*) echo "error: unknown option $1" >&2; exit 2 ;;
        *) DATA="$(realpath "$1")"; shift ;;
    esac
done
[ -n "$DATA" ] && [ -f "$DATA" ] || { echo "usage: benchmarks/communication.sh AG_NEWS_CSV [options] (see the top of this file)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "error: the namespace cluster needs root" >&2; exit 1; }
PYTHON="${PYTHON:-/work/venv/bin/python}"
# bert-dist-dev bench: bert-dist's bench (the same step), plus --no-gradient-sync, --example-split, --update-overlapped.
# BIN=... another build (e.g. .build/debug/bert-dist-dev for a quick check of this script).
BIN="$(realpath -m "${BIN:-.build/release/bert-dist-dev}")"
[ -x "$BIN" ] || { echo "error: $BIN not found; run swift build -c release first" >&2; exit 1; }
[ -d models/minilm ] || { echo "error: models/minilm not found (see the README's set-up command)" >&2; exit 1; }
CLUSTER=Tests/Cluster/cluster.sh
NAME="bdcomm-$$"
RESULTS="${RESULTS:-benchmarks/communication.jsonl}"  # RESULTS=... for a trial run elsewhere
RUN_ID="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
# The name alone does not tell CPUs apart here ("AMD EPYC" is Zen 4 and Zen 5): family and model too.
CPU_MODEL="$(lscpu | sed -n 's/^Model name: *//p' | head -n 1) (family $(lscpu | sed -n 's/^CPU family: *//p' | head -n 1), model $(lscpu | sed -n 's/^Model: *//p' | head -n 1))"
MAX_HOSTS=1
for h in $HOSTS; do [ "$h" -gt "$MAX_HOSTS" ] && MAX_HOSTS=$h; done

"$CLUSTER" setup
"$CLUSTER" up "$NAME" "$MAX_HOSTS" --owner $$ >/dev/null
trap '"$CLUSTER" down "$NAME"; rm -f "/tmp/$NAME.hosts"' EXIT
mapfile -t MPI_OPTIONS < <("$CLUSTER" mpirun-options "$NAME")

source benchmarks/quiet.sh  # busy_fraction, wait_quiet

# record ROUND MODEL LINK HOSTS SIDE VARIANT BUSY JSON: tags one result and appends it.
record() {
    "$PYTHON" - "$RUN_ID" "$@" "$(cut -d' ' -f1 /proc/loadavg)" "$CPU_MODEL" "${OPENBLAS_CORETYPE-unset}" "${OPENBLAS_L2_SIZE-unset}" \
        >> "$RESULTS" <<'EOF'
import json, sys
run_id, round_, model, link, hosts, side, variant, busy, line, load, cpu, coretype, l2 = sys.argv[1:]
result = json.loads(line)
unset = variant.endswith("openblas-unset")
result.update({"run": run_id, "round": int(round_), "model": model, "link": link, "hosts": int(hosts), "side": side,
               "variant": variant, "background_busy": float(busy), "load_average": float(load), "cpu": cpu,
               "openblas_coretype": "unset" if unset else coretype, "openblas_l2_size": "unset" if unset else l2})
print(json.dumps(result))
EOF
}

# run ROUND MODEL LINK HOSTS SIDE VARIANT ARGS...: one measurement (skipped unless --only matches
# "MODEL LINK HOSTS SIDE VARIANT").
run() {
    local round="$1" model="$2" link="$3" hosts="$4" side="$5" variant="$6"; shift 6
    echo "$model $link $hosts $side $variant" | grep -Eq -- "$ONLY" || return 0
    local busy json
    busy=$(wait_quiet)
    echo "== round $round: $model, $hosts host(s), link $link, $side $variant (busy $busy, load $(cut -d' ' -f1 /proc/loadavg))" >&2
    if [ "$side" = pytorch ]; then json=$(run_pytorch "$hosts" "$@"); else json=$(run_ours "$side" "$variant" "$hosts" "$@"); fi
    json=$(echo "$json" | grep '^{' | tail -n 1)
    [ -n "$json" ] || { echo "   (no result)" >&2; return 0; }
    echo "   $json" | cut -c1-200 >&2
    record "$round" "$model" "$link" "$hosts" "$side" "$variant" "$busy" "$json"
}

run_ours() {
    local side="$1" variant="$2" hosts="$3"; shift 3
    local binary="$BIN"; [ "$side" = before ] && binary="$BEFORE"
    local environment=(env)
    case "$variant" in *openblas-unset) environment=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE) ;; esac
    if [ "$hosts" = 1 ]; then
        "$CLUSTER" exec "$NAME" h1 "${environment[@]}" "$binary" bench "$@" --threads 1 --json
    else
        "$CLUSTER" hostfile "$NAME" "$hosts" > "/tmp/$NAME.hosts"
        # mpirun passes its own environment on to the ranks (-x would add, not remove).
        "$CLUSTER" exec "$NAME" h1 "${environment[@]}" mpirun --allow-run-as-root -n "$hosts" --hostfile "/tmp/$NAME.hosts" \
            "${MPI_OPTIONS[@]}" "$binary" bench "$@" --threads 1 --json
    fi
}

PORT=29600
run_pytorch() {
    local hosts="$1"; shift
    local script; script="$(pwd)/tools/bench_pytorch.py"
    if [ "$hosts" = 1 ]; then
        "$CLUSTER" exec "$NAME" h1 "$PYTHON" "$script" "$@" --threads 1 --json 2>/dev/null
        return
    fi
    PORT=$((PORT + 1))
    local common=(--processes "$hosts" --master-addr 10.77.0.1 --master-port "$PORT" --threads 1 --json)
    local pids=()
    for ((rank = 1; rank < hosts; rank++)); do
        "$CLUSTER" exec "$NAME" "h$((rank + 1))" env GLOO_SOCKET_IFNAME=eth1 "$PYTHON" "$script" "$@" "${common[@]}" --rank "$rank" \
            >/dev/null 2>&1 &
        pids+=($!)
    done
    "$CLUSTER" exec "$NAME" h1 env GLOO_SOCKET_IFNAME=eth1 "$PYTHON" "$script" "$@" "${common[@]}" --rank 0 2>/dev/null || true
    wait "${pids[@]}" || true
}

# The variant a link's target is judged on, and whose gain per cause is measured.
target_variant() { [ "$1" = 10gbit ] && echo fp32 || echo bf16; }
# The bench options of a bert-dist variant.
variant_options() {
    case "$1" in
        bf16*) echo --grad-compression bf16 ;;
    esac
    case "$1" in
        *-zero1) echo --shard-optimizer ;;
        *-examples) echo --example-split ;;
        *-overlapped) echo --update-overlapped ;;
    esac
}

for ((round = 1; round <= ROUNDS; round++)); do
    for model in $MODELS; do
        for batch in $BATCHES; do
            if [ "$model" = minilm ]; then
                arguments=(--model models/minilm --data "$DATA" --batch-size "$batch" --seq-len 128 --steps "$STEPS")
            else
                arguments=(--model benchmarks/bert-base --random-weights --data "$DATA" --batch-size "$batch" --seq-len 128 --steps "$BIG_STEPS")
            fi
            name="$model-b$batch"
            "$CLUSTER" limit "$NAME" off
            run "$round" "$name" none 1 ours fp32 "${arguments[@]}"
            run "$round" "$name" none 1 ours fp32-openblas-unset "${arguments[@]}"
            run "$round" "$name" none 1 pytorch fp32 "${arguments[@]}"
            for hosts in $HOSTS; do
                for link in $LINKS; do
                    "$CLUSTER" limit "$NAME" "$link" 256kb 50ms
                    target=$(target_variant "$link")
                    for variant in fp32 bf16 fp32-zero1 bf16-zero1 "$target-examples" "$target-overlapped" "$target-openblas-unset"; do
                        # shellcheck disable=SC2046
                        run "$round" "$name" "$link" "$hosts" ours "$variant" "${arguments[@]}" $(variant_options "$variant")
                    done
                    if [ -n "$BEFORE" ]; then
                        run "$round" "$name" "$link" "$hosts" before fp32 "${arguments[@]}"
                        run "$round" "$name" "$link" "$hosts" before bf16 "${arguments[@]}" --grad-compression bf16
                    fi
                    run "$round" "$name" "$link" "$hosts" pytorch fp32 "${arguments[@]}"
                    run "$round" "$name" "$link" "$hosts" pytorch bf16 "${arguments[@]}" --bf16-compress
                done
                "$CLUSTER" limit "$NAME" off
                run "$round" "$name" none "$hosts" ours no-sync "${arguments[@]}" --no-gradient-sync
                run "$round" "$name" none "$hosts" ours no-sync-examples "${arguments[@]}" --no-gradient-sync --example-split
                [ -n "$BEFORE" ] && run "$round" "$name" none "$hosts" before no-sync "${arguments[@]}" --no-gradient-sync
                run "$round" "$name" none "$hosts" pytorch no-sync "${arguments[@]}" --no-sync
            done
        done
    done
done

echo "run $RUN_ID: results in $RESULTS" >&2
if [ "$TABLES" = 1 ]; then
    "$PYTHON" tools/communication_table.py "$RESULTS" --run "$RUN_ID" --markdown benchmarks/communication.md --readme README.md
fi
