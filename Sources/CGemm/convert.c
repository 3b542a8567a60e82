// fp32 <-> bf16 and the operand layouts of CGemm.h. Portable C (the compiler vectorises the
// rounding); the packing is O(rows x depth) against the product's O(rows x depth x columns).
#include <string.h>
#include "engines.h"

bg_bf16 bg_round(float value) {
    uint32_t bits;
    memcpy(&bits, &value, 4);
    if ((bits & 0x7f800000u) == 0) bits &= 0x80000000u;                   // denormal -> signed zero
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (bg_bf16)((bits >> 16) | 0x40);   // quiet NaN
    bits += 0x7fffu + ((bits >> 16) & 1);                                  // to nearest, ties to even
    return (bg_bf16)(bits >> 16);
}

void bg_round_floats(bg_bf16 *out, const float *in, long count) {
    for (long i = 0; i < count; i++) out[i] = bg_round(in[i]);
}

float bg_widen(bg_bf16 value) {
    uint32_t bits = (uint32_t)value << 16;
    float result;
    memcpy(&result, &bits, 4);
    return result;
}

void bg_widen_floats(float *out, const bg_bf16 *in, long count) {
    for (long i = 0; i < count; i++) out[i] = bg_widen(in[i]);
}

void bg_pack_a(bg_bf16 *a, long lda, const float *source, long stride, int transposed,
               long rows, long depth, long row_begin, long row_end) {
    long padded = bg_padded_depth(depth);
    long valid_end = row_end < rows ? row_end : rows;
    if (!transposed) {
        for (long r = row_begin; r < valid_end; r++) {
            bg_round_floats(a + r * lda, source + r * stride, depth);
            memset(a + r * lda + depth, 0, (size_t)(padded - depth) * sizeof(bg_bf16));
        }
    } else {
        // source is (depth, rows): read 16 columns of each source row, write 16 rows of A.
        for (long r0 = row_begin; r0 < valid_end; r0 += 16) {
            long r1 = r0 + 16 < valid_end ? r0 + 16 : valid_end;
            for (long d = 0; d < depth; d++)
                for (long r = r0; r < r1; r++) a[r * lda + d] = bg_round(source[d * stride + r]);
            for (long r = r0; r < r1; r++) memset(a + r * lda + depth, 0, (size_t)(padded - depth) * sizeof(bg_bf16));
        }
    }
    for (long r = valid_end > row_begin ? valid_end : row_begin; r < row_end; r++)
        memset(a + r * lda, 0, (size_t)padded * sizeof(bg_bf16));
}

void bg_pack_b(bg_bf16 *packed, const float *source, long stride, int transposed,
               long depth, long columns, long pair_begin, long pair_end,
               long strip_begin, long strip_end) {
    long strip_stride = bg_strip_stride(depth);
    if (transposed) {
        // B[d][n] = source[n][d]: the 16 source rows of a strip, two adjacent values each.
        for (long s = strip_begin; s < strip_end; s++) {
            for (long p = pair_begin; p < pair_end; p++) {
                bg_bf16 *out = packed + s * strip_stride + p * 32;
                for (long j = 0; j < 16; j++) {
                    long n = s * 16 + j;
                    for (long h = 0; h < 2; h++) {
                        long d = 2 * p + h;
                        out[2 * j + h] = n < columns && d < depth ? bg_round(source[n * stride + d]) : 0;
                    }
                }
            }
        }
    } else {
        // B[d][n] = source[d][n]: two source rows interleaved, 16 columns per strip.
        for (long p = pair_begin; p < pair_end; p++) {
            const float *row0 = source + 2 * p * stride, *row1 = row0 + stride;
            int has0 = 2 * p < depth, has1 = 2 * p + 1 < depth;
            for (long s = strip_begin; s < strip_end; s++) {
                bg_bf16 *out = packed + s * strip_stride + p * 32;
                for (long j = 0; j < 16; j++) {
                    long n = s * 16 + j;
                    out[2 * j] = has0 && n < columns ? bg_round(row0[n]) : 0;
                    out[2 * j + 1] = has1 && n < columns ? bg_round(row1[n]) : 0;
                }
            }
        }
    }
}
