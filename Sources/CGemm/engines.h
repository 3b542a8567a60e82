// The engines behind bg_gemm (one file each) and what they share.
#ifndef BG_ENGINES_H
#define BG_ENGINES_H
#include "include/CGemm.h"

// Every engine has bg_gemm's signature minus the engine; ranges are already checked.
#define BG_GEMM_PARAMETERS const bg_bf16 *a, long lda, const bg_bf16 *packed_b, long depth, long columns, \
    float *c, long ldc, long row_begin, long row_end, long strip_begin, long strip_end, int accumulate
void bg_gemm_software(BG_GEMM_PARAMETERS);
void bg_gemm_avx512_bf16(BG_GEMM_PARAMETERS);
void bg_gemm_amx(BG_GEMM_PARAMETERS);

/// Elements between two consecutive strips of a packed B.
static inline long bg_strip_stride(long depth) { return bg_padded_depth(depth) * BG_STRIP_COLUMNS; }
#endif
