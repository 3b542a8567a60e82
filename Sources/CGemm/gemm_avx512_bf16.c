// The AVX512-BF16 engine: `vdpbf16ps` micro-kernels of ROWS x (STRIPS x 16) accumulators kept
// in registers over the whole depth; A pairs broadcast from the bf16 rows, B strips loaded as
// packed. Blocked over columns so that the B block being swept stays in L2.
#include "engines.h"
#if defined(__x86_64__)
#include <immintrin.h>

enum { ROWS = 6, STRIPS = 4 };
/// Strips per column block, so that the block of B swept by every group of ROWS rows (all its
/// depth) is about 1 MB and stays in L2.
static long block_strips(long depth) {
    long bytes_per_strip = bg_strip_stride(depth) * 2;
    long strips = (1L << 20) / bytes_per_strip;
    strips = strips / STRIPS * STRIPS;
    return strips < STRIPS ? STRIPS : strips;
}

#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16"))), apply_to = function)

static inline __attribute__((always_inline)) void tile(const int rows, const int strips,
        const bg_bf16 *a, long lda, const bg_bf16 *b, long strip_stride, long pairs,
        float *c, long ldc, const __mmask16 *masks, int accumulate) {
    __m512 acc[ROWS][STRIPS];
#pragma clang loop unroll(full)
    for (int r = 0; r < rows; r++)
#pragma clang loop unroll(full)
        for (int j = 0; j < strips; j++)
            acc[r][j] = accumulate ? _mm512_maskz_loadu_ps(masks[j], c + r * ldc + j * 16) : _mm512_setzero_ps();
    for (long p = 0; p < pairs; p++) {
        __m512bh bj[STRIPS];
#pragma clang loop unroll(full)
        for (int j = 0; j < strips; j++) bj[j] = (__m512bh)_mm512_loadu_si512(b + j * strip_stride + p * 32);
#pragma clang loop unroll(full)
        for (int r = 0; r < rows; r++) {
            __m512bh ar = (__m512bh)_mm512_set1_epi32(*(const int32_t *)(a + r * lda + 2 * p));
#pragma clang loop unroll(full)
            for (int j = 0; j < strips; j++) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], ar, bj[j]);
        }
    }
#pragma clang loop unroll(full)
    for (int r = 0; r < rows; r++)
#pragma clang loop unroll(full)
        for (int j = 0; j < strips; j++) _mm512_mask_storeu_ps(c + r * ldc + j * 16, masks[j], acc[r][j]);
}

#define TILE_STRIPS(rows, strips) \
    switch (strips) { \
    case 4: tile(rows, 4, a_rows, lda, b_strips, strip_stride, pairs, c_tile, ldc, masks, accumulate); break; \
    case 3: tile(rows, 3, a_rows, lda, b_strips, strip_stride, pairs, c_tile, ldc, masks, accumulate); break; \
    case 2: tile(rows, 2, a_rows, lda, b_strips, strip_stride, pairs, c_tile, ldc, masks, accumulate); break; \
    default: tile(rows, 1, a_rows, lda, b_strips, strip_stride, pairs, c_tile, ldc, masks, accumulate); break; \
    }

void bg_gemm_avx512_bf16(BG_GEMM_PARAMETERS) {
    long pairs = bg_padded_depth(depth) / 2, strip_stride = bg_strip_stride(depth);
    long last_strip = bg_strip_count(columns) - 1;
    __mmask16 tail = columns % 16 ? (__mmask16)((1u << (columns % 16)) - 1) : (__mmask16)0xffff;
    long block = block_strips(depth);
    for (long s_block = strip_begin; s_block < strip_end; s_block += block) {
        long s_block_end = s_block + block < strip_end ? s_block + block : strip_end;
        for (long r = row_begin; r < row_end; r += ROWS) {
            long rows = row_end - r < ROWS ? row_end - r : ROWS;
            const bg_bf16 *a_rows = a + r * lda;
            for (long s = s_block; s < s_block_end; s += STRIPS) {
                long strips = s_block_end - s < STRIPS ? s_block_end - s : STRIPS;
                __mmask16 masks[STRIPS];
                for (int j = 0; j < STRIPS; j++) masks[j] = s + j == last_strip ? tail : (__mmask16)0xffff;
                const bg_bf16 *b_strips = packed_b + s * strip_stride;
                float *c_tile = c + r * ldc + s * 16;
                switch (rows) {
                case 6: TILE_STRIPS(6, strips); break;
                case 5: TILE_STRIPS(5, strips); break;
                case 4: TILE_STRIPS(4, strips); break;
                case 3: TILE_STRIPS(3, strips); break;
                case 2: TILE_STRIPS(2, strips); break;
                default: TILE_STRIPS(1, strips); break;
                }
            }
        }
    }
}
#pragma clang attribute pop

#else
void bg_gemm_avx512_bf16(BG_GEMM_PARAMETERS) {
    bg_gemm_software(a, lda, packed_b, depth, columns, c, ldc, row_begin, row_end, strip_begin, strip_end, accumulate);
}
#endif
