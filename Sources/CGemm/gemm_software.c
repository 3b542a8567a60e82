// The software engine: what `vdpbf16ps` computes (CGemm.h, BG_ENGINE_SOFTWARE), on any CPU.
// One output row x 16 columns at a time, in GCC/Clang vector extensions; fma is exact IEEE
// fused multiply-add (an instruction where the CPU has FMA, else libm's correctly rounded fmaf),
// so every CPU gets the same bits.
#include <string.h>
#include <CCPU.h>
#include "engines.h"

// The 64-byte vectors never cross a call (everything below is inlined), so the ABI warning
// about passing them without AVX-512 does not apply.
#pragma clang diagnostic ignored "-Wpsabi"

typedef float floats16 __attribute__((vector_size(64)));
typedef uint32_t words16 __attribute__((vector_size(64)));
typedef int32_t ints16 __attribute__((vector_size(64)));

/// Denormals (and zeros) -> zero of the same sign: `vdpbf16ps` flushes every result.
static inline __attribute__((always_inline)) floats16 flush(floats16 x) {
    words16 bits = (words16)x;
    words16 tiny = (words16)((ints16)(bits & 0x7f800000u) == 0);   // all ones where the exponent is 0
    return (floats16)(bits & ~(tiny & 0x7fffffffu));
}

static inline __attribute__((always_inline)) void software_body(BG_GEMM_PARAMETERS) {
    long pairs = bg_padded_depth(depth) / 2, strip_stride = bg_strip_stride(depth);
    for (long r = row_begin; r < row_end; r++) {
        const uint32_t *a_pairs = (const uint32_t *)(a + r * lda);
        for (long s = strip_begin; s < strip_end; s++) {
            long width = columns - s * 16 < 16 ? columns - s * 16 : 16;
            float *c_row = c + r * ldc + s * 16;
            floats16 acc = {0};
            if (accumulate) { memcpy(&acc, c_row, (size_t)width * 4); acc = flush(acc); }
            const bg_bf16 *strip = packed_b + s * strip_stride;
            for (long p = 0; p < pairs; p++) {
                // A 32-bit word holds a pair: the even element in the low half.
                uint32_t pair = a_pairs[p];
                floats16 a_even = (floats16)((words16){0} + (pair << 16));
                floats16 a_odd = (floats16)((words16){0} + (pair & 0xffff0000u));
                words16 b_pairs;
                memcpy(&b_pairs, strip + p * 32, 64);
                floats16 b_even = (floats16)(b_pairs << 16), b_odd = (floats16)(b_pairs & 0xffff0000u);
                acc = flush(__builtin_elementwise_fma(a_odd, b_odd, acc));
                acc = flush(__builtin_elementwise_fma(a_even, b_even, acc));
            }
            memcpy(c_row, &acc, (size_t)width * 4);
        }
    }
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static void software_fma(BG_GEMM_PARAMETERS) {
    software_body(a, lda, packed_b, depth, columns, c, ldc, row_begin, row_end, strip_begin, strip_end, accumulate);
}
#endif

static void software_portable(BG_GEMM_PARAMETERS) {
    software_body(a, lda, packed_b, depth, columns, c, ldc, row_begin, row_end, strip_begin, strip_end, accumulate);
}

void bg_gemm_software(BG_GEMM_PARAMETERS) {
#if defined(__x86_64__)
    if (bd_cpu_has(BD_CPU_AVX2_FMA)) {
        software_fma(a, lda, packed_b, depth, columns, c, ldc, row_begin, row_end, strip_begin, strip_end, accumulate);
        return;
    }
#endif
    software_portable(a, lda, packed_b, depth, columns, c, ldc, row_begin, row_end, strip_begin, strip_end, accumulate);
}
