#!/usr/bin/env bash
# Communication at cluster bandwidth (issue 13): bert-dist and PyTorch DDP (gloo) side by side on
# the namespace cluster (Tests/Cluster/cluster.sh: one rank x one thread per host, each host on its
# own core), links limited with tc tbf in both directions. Appends JSON lines to
# benchmarks/communication.jsonl and rewrites the tables of benchmarks/communication.md and README.md.
#
#   benchmarks/communication.sh AG_NEWS_CSV [--steps 10] [--big-steps 4] [--big-batch 32] [--rounds 2]
#       [--hosts "2"] [--links "10gbit 1gbit"] [--models "minilm bert-base"] [--only REGEX]
#       [--before BINARY] [--wait-quiet]
#
# Per round (rounds interleave every configuration, so load from other processes hits all alike;
# the tables take the best round), for each model (MiniLM batch 32 of real rows; BERT-base
# batch 32 (--big-batch) of real rows, random weights), max 128 tokens:
#   - T1: the same global batch on one host (h1), both sides;
#   - per host count and link: bert-dist (fp32; --grad-compression bf16), DDP (fp32;
#     bf16_compress_hook), and with --before a bert-dist binary to compare with (e.g. main's);
#   - per host count: both sides without gradient communication (bert-dist-dev bench --no-gradient-sync, DDP
#     no_sync()): step - this = the communication not hidden behind compute.
# Needs root (namespaces), a release build, /work/venv (or PYTHON=...) with torch + transformers.
# Takes ~25 minutes per round for both models on 2 hosts. The machine's load is recorded with
# every run (busy fraction of all CPUs over the second before it, and the load average);
# --wait-quiet waits up to 10 minutes for < 10% busy before each run.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=""; STEPS=10; BIG_STEPS=4; BIG_BATCH=32; ROUNDS=2; HOSTS="2"; LINKS="10gbit 1gbit"; MODELS="minilm bert-base"
ONLY="."; BEFORE=""; WAIT=0
while [ $# -gt 0 ]; do
    case "$1" in
        --steps) STEPS="$2"; shift 2 ;;
        --big-steps) BIG_STEPS="$2"; shift 2 ;;
        --big-batch) BIG_BATCH="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --hosts) HOSTS="$2"; shift 2 ;;
        --links) LINKS="$2"; shift 2 ;;
        --models) MODELS="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        --before) BEFORE="$(realpath "$2")"; shift 2 ;;
        --wait-quiet) WAIT=1; shift ;;
        -*) echo "error: unknown option $1" >&2; exit 2 ;;
        *) DATA="$(realpath "$1")"; shift ;;
    esac
done
[ -n "$DATA" ] && [ -f "$DATA" ] || { echo "usage: benchmarks/communication.sh AG_NEWS_CSV [options] (see the top of this file)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "error: the namespace cluster needs root" >&2; exit 1; }
PYTHON="${PYTHON:-/work/venv/bin/python}"
# bert-dist-dev bench: bert-dist's bench (the same step), plus --no-gradient-sync.
BIN="$(pwd)/.build/release/bert-dist-dev"
[ -x "$BIN" ] || { echo "error: $BIN not found; run swift build -c release first" >&2; exit 1; }
[ -d models/minilm ] || { echo "error: models/minilm not found (see the README's set-up command)" >&2; exit 1; }
CLUSTER=Tests/Cluster/cluster.sh
NAME="bdcomm-$$"
RESULTS=benchmarks/communication.jsonl
RUN_ID="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
MAX_HOSTS=1
for h in $HOSTS; do [ "$h" -gt "$MAX_HOSTS" ] && MAX_HOSTS=$h; done

"$CLUSTER" setup
"$CLUSTER" up "$NAME" "$MAX_HOSTS" --owner $$ >/dev/null
trap '"$CLUSTER" down "$NAME"' EXIT
mapfile -t MPI_OPTIONS < <("$CLUSTER" mpirun-options "$NAME")

source benchmarks/quiet.sh  # busy_fraction, wait_quiet

# record ROUND MODEL LINK HOSTS SIDE VARIANT JSON: tags one result and appends it.
record() {
    "$PYTHON" - "$RUN_ID" "$@" "$(cut -d' ' -f1 /proc/loadavg)" >> "$RESULTS" <<'EOF'
import json, sys
run_id, round_, model, link, hosts, side, variant, busy, line, load = sys.argv[1:]
result = json.loads(line)
result.update({"run": run_id, "round": int(round_), "model": model, "link": link, "hosts": int(hosts), "side": side,
               "variant": variant, "background_busy": float(busy), "load_average": float(load)})
print(json.dumps(result))
EOF
}

# run ROUND MODEL LINK HOSTS SIDE VARIANT ARGS...: one measurement (skipped unless --only matches).
run() {
    local round="$1" model="$2" link="$3" hosts="$4" side="$5" variant="$6"; shift 6
    echo "$model $link $hosts $side $variant" | grep -Eq -- "$ONLY" || return 0
    local busy json
    busy=$(wait_quiet)
    echo "== round $round: $model, $hosts host(s), link $link, $side $variant (busy $busy, load $(cut -d' ' -f1 /proc/loadavg))" >&2
    if [ "$side" = pytorch ]; then json=$(run_pytorch "$hosts" "$@"); else json=$(run_ours "$side" "$hosts" "$@"); fi
    json=$(echo "$json" | grep '^{' | tail -n 1)
    [ -n "$json" ] || { echo "   (no result)" >&2; return 0; }
    echo "   $json" | cut -c1-200 >&2
    record "$round" "$model" "$link" "$hosts" "$side" "$variant" "$busy" "$json"
}

run_ours() {
    local side="$1" hosts="$2"; shift 2
    local binary="$BIN"; [ "$side" = before ] && binary="$BEFORE"
    if [ "$hosts" = 1 ]; then
        "$CLUSTER" exec "$NAME" h1 "$binary" bench "$@" --threads 1 --json
    else
        "$CLUSTER" hostfile "$NAME" "$hosts" > "/tmp/$NAME.hosts"
        "$CLUSTER" exec "$NAME" h1 mpirun --allow-run-as-root -n "$hosts" --hostfile "/tmp/$NAME.hosts" "${MPI_OPTIONS[@]}" \
            "$binary" bench "$@" --threads 1 --json
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

for ((round = 1; round <= ROUNDS; round++)); do
    for model in $MODELS; do
        if [ "$model" = minilm ]; then
            arguments=(--model models/minilm --data "$DATA" --batch-size 32 --seq-len 128 --steps "$STEPS")
        else
            arguments=(--model benchmarks/bert-base --random-weights --data "$DATA" --batch-size "$BIG_BATCH" --seq-len 128 --steps "$BIG_STEPS")
        fi
        name="$model"; [ "$model" = bert-base ] && [ "$BIG_BATCH" != 32 ] && name="bert-base-batch$BIG_BATCH"
        "$CLUSTER" limit "$NAME" off
        run "$round" "$name" none 1 ours fp32 "${arguments[@]}"
        run "$round" "$name" none 1 pytorch fp32 "${arguments[@]}"
        for hosts in $HOSTS; do
            for link in $LINKS; do
                "$CLUSTER" limit "$NAME" "$link" 256kb 50ms
                run "$round" "$name" "$link" "$hosts" ours fp32 "${arguments[@]}"
                run "$round" "$name" "$link" "$hosts" ours bf16 "${arguments[@]}" --grad-compression bf16
                [ -n "$BEFORE" ] && run "$round" "$name" "$link" "$hosts" before fp32 "${arguments[@]}"
                run "$round" "$name" "$link" "$hosts" pytorch fp32 "${arguments[@]}"
                run "$round" "$name" "$link" "$hosts" pytorch bf16 "${arguments[@]}" --bf16-compress
            done
            "$CLUSTER" limit "$NAME" off
            run "$round" "$name" none "$hosts" ours no-sync "${arguments[@]}" --no-gradient-sync
            run "$round" "$name" none "$hosts" pytorch no-sync "${arguments[@]}" --no-sync
        done
    done
done

"$PYTHON" tools/communication_table.py "$RESULTS" --run "$RUN_ID" --markdown benchmarks/communication.md --readme README.md
