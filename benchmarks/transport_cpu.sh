#!/usr/bin/env bash
# What the gradient sum's bytes cost the compute core, per transport (benchmarks/transport_cpu.c),
# on a 2-host namespace cluster with both directions of the link limited to RATE:
#
#   benchmarks/transport_cpu.sh [RATE] [ROUNDS]     (default 10gbit 3; needs root, mpicc, OpenBLAS)
#
# RATE is a tc rate, or off for unlimited links (what the tbf limiter itself costs: compare the two).
#
# Each line: one round of one transport, the median of 7 repetitions (after one warm-up) of 12
# pieces of compute while 44 MB (MiniLM's fp32 sum per step and host) or 22 MB (bf16) go each
# way; "taken" = the pieces' time minus the same pieces' with nothing in flight, same round.
# Open MPI runs with bert-dist's settings (1 MB messages go eagerly, MPICommunicator).
set -euo pipefail
cd "$(dirname "$0")/.."
RATE="${1:-10gbit}"
ROUNDS="${2:-3}"
CLUSTER=Tests/Cluster/cluster.sh
NAME="bdcpu-$$"
PROGRAM=$(mktemp -d)/transport_cpu
mpicc -O2 -o "$PROGRAM" benchmarks/transport_cpu.c -lpthread -lopenblas -I/usr/include/x86_64-linux-gnu/openblas-pthread
"$CLUSTER" setup >/dev/null
"$CLUSTER" up "$NAME" 2 --owner $$ >/dev/null
trap '"$CLUSTER" down "$NAME"; rm -rf "$(dirname "$PROGRAM")" "/tmp/$NAME.hosts"' EXIT
"$CLUSTER" limit "$NAME" "$RATE" 256kb 50ms
"$CLUSTER" hostfile "$NAME" > "/tmp/$NAME.hosts"
mapfile -t OPTIONS < <("$CLUSTER" mpirun-options "$NAME")
EAGER=$((4 * 262144 + 65536))
run() {
    "$CLUSTER" exec "$NAME" h1 mpirun --allow-run-as-root -n 2 --hostfile "/tmp/$NAME.hosts" "${OPTIONS[@]}" \
        -x OPENBLAS_NUM_THREADS=1 --mca btl_tcp_eager_limit "$EAGER" --mca btl_tcp_max_send_size "$EAGER" "$@"
}
# Median of the repetitions after the first: "compute total".
medians() { python3 -c '
import statistics, sys
rows = [line.split() for line in sys.stdin if " repetition " in line][1:]
print(f"{statistics.median(float(r[6]) for r in rows):.4f} {statistics.median(float(r[8]) for r in rows):.4f}")'; }
echo "CPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load average $(cut -d' ' -f1-3 /proc/loadavg), link $RATE"
for round in $(seq "$ROUNDS"); do
    read -r reference _ < <(run "$PROGRAM" none 44 12 | medians)
    echo "round $round: nothing in flight: compute $reference s"
    for megabytes in 44 22; do
        for transport in mpi "mpi-quiet --mca btl_tcp_progress_thread 1" socket zerocopy; do
            read -r name extra <<< "$transport"
            read -r compute total < <(run ${extra:+$extra} "$PROGRAM" "$name" "$megabytes" 12 | medians)
            label="$name"; [[ -n "$extra" ]] && label="mpi, Open MPI's TCP progress thread"
            printf 'round %s: %2s MB each way, %-36s compute %s s, taken %.4f s, whole exchange %s s\n' \
                "$round" "$megabytes" "$label" "$compute" "$(python3 -c "print($compute - $reference)")" "$total"
        done
    done
done
