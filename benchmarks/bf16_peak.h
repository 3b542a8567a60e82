// The peaks of bf16_peak.c (benchmarks/bf16_gemm.c prints them next to the engines' rates).
#ifndef BF16_PEAK_H
#define BF16_PEAK_H

/// FLOP/s of the calling thread running only `instruction` on registers for about `seconds`:
/// BG_PEAK_FMA_FP32 = `vfmadd231ps zmm` (2 x 16 FLOP), BG_PEAK_DPBF16 = `vdpbf16ps zmm`
/// (4 x 16 FLOP), BG_PEAK_AMX = `tdpbf16ps` on 16 x 32 by 32 x 16 tiles (2 x 16 x 16 x 32 FLOP).
/// 0 if the CPU lacks the instruction.
enum { BG_PEAK_FMA_FP32 = 0, BG_PEAK_DPBF16 = 1, BG_PEAK_AMX = 2 };
double bg_peak_flops(int instruction, double seconds);

#endif
