#!/usr/bin/env bash
# benchmarks/bf16_gemm.sh [SECONDS_PER_CASE] [SWEEPS]: the bf16 GEMM engines (Sources/CGemm) on
# the model's Linear products against OpenBLAS sgemm and oneDNN's dnnl_gemm_bf16bf16f32 (used when
# libdnnl2 is installed), one thread; SWEEPS passes over all cases (default 3), each case's best
# kept. Writes Markdown tables to stdout (benchmarks/bf16-gemm.md holds a recorded run).
# OpenBLAS uses the environment's OPENBLAS_CORETYPE as is: on a CPU Debian's OpenBLAS 0.3.21 does
# not know (it falls back to Prescott), set the kernels bert-dist's BLASSetup would choose, e.g.
# OPENBLAS_CORETYPE=SkylakeX benchmarks/bf16_gemm.sh.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-0.3}"
sweeps="${2:-3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# CGemm and the two small C targets it uses (CCPU, CBF16), the benchmark and its peak loops.
clang -O2 -I"$repo/Sources/CGemm/include" -I"$repo/Sources/CCPU/include" -I"$repo/Sources/CBF16/include" \
    $(pkg-config --cflags openblas) \
    "$repo/benchmarks/bf16_gemm.c" "$repo/benchmarks/bf16_peak.c" \
    "$repo"/Sources/CGemm/*.c "$repo"/Sources/CCPU/*.c "$repo"/Sources/CBF16/*.c -o "$work/bf16_gemm" \
    $(pkg-config --libs openblas) -ldl -lm
echo "<!-- $(date -u +%Y-%m-%dT%H:%M:%SZ), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}, load $(cut -d' ' -f1-3 /proc/loadavg) -->"
OMP_NUM_THREADS=1 "$work/bf16_gemm" "$seconds" "$sweeps"
