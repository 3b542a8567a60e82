#!/usr/bin/env bash
# The message-size and progress measurements of benchmarks/communication.md ("Why half the link
# rate"), on a 2-host namespace cluster with both directions of every link limited to RATE:
#
#   benchmarks/tcp_messages.sh [RATE]          (default 1gbit; needs root, mpicc)
#
# Each line: 45 MB each way as one message or 45 messages of 1 MB, the main thread in MPI_Waitall
# or testing every 5/20/50 ms, with or without a probe thread (MPI_Iprobe every 500 us), and with
# Open MPI's own TCP progress thread (btl_tcp_progress_thread 1) for comparison.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE="${1:-1gbit}"
CLUSTER=Tests/Cluster/cluster.sh
NAME="bdtcp-$$"
PROGRAM=$(mktemp -d)/tcp_messages
mpicc -O2 -o "$PROGRAM" benchmarks/tcp_messages.c -lpthread
"$CLUSTER" up "$NAME" 2 --owner $$ >/dev/null
trap '"$CLUSTER" down "$NAME"; rm -rf "$(dirname "$PROGRAM")"' EXIT
"$CLUSTER" limit "$NAME" "$RATE" 256kb 50ms
"$CLUSTER" hostfile "$NAME" > "/tmp/$NAME.hosts"
mapfile -t OPTIONS < <("$CLUSTER" mpirun-options "$NAME")
run() { "$CLUSTER" exec "$NAME" h1 mpirun --allow-run-as-root -n 2 --hostfile "/tmp/$NAME.hosts" "${OPTIONS[@]}" "$@"; }
echo "load average $(cut -d' ' -f1-3 /proc/loadavg), link $RATE"
run "$PROGRAM" 45 1 0 0 one
for pieces in 1 45; do
    for main in 0 5 20 50; do run "$PROGRAM" 45 "$pieces" "$main" 0 both; done
done
for main in 20 50; do run "$PROGRAM" 45 45 "$main" 500 both; done
echo "with Open MPI's TCP progress thread (--mca btl_tcp_progress_thread 1):"
for main in 20 50; do run --mca btl_tcp_progress_thread 1 "$PROGRAM" 45 45 "$main" 0 both 2>/dev/null; done
