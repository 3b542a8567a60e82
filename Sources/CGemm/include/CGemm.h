#ifndef CGEMM_H
#define CGEMM_H
// bf16 matrix products with fp32 accumulation, for --bf16 (the matrix
// products take bf16 inputs and accumulate in fp32, as torch.autocast("cpu", bfloat16) does).
//
// Why a separate C target: the products must use AVX512-BF16 (`vdpbf16ps`) or AMX (`tdpbf16ps`)
// where the CPU has them (CCPU detects them, Swift chooses), and stay testable on any x86-64 CPU
// through a software engine that computes, bit for bit, what `vdpbf16ps` computes on Intel CPUs.
//
// Operands (all row-major; counts in elements):
//   C (rows, columns) fp32        C[r][n] (+)= sum_d A[r][d] B[d][n]
//   A (rows, depth)  bf16         bg_pack_a: rounded from fp32, `lda` >= bg_padded_depth(depth),
//                                 zero beyond `depth`; the buffer has bg_padded_rows(rows) rows
//                                 (the AMX engine reads whole 16-row tiles).
//   B (depth, columns) bf16       bg_pack_b: packed in strips of 16 columns; strip s holds, for
//                                 each pair p of depth rows, the 32 values
//                                 B[2p][16s], B[2p+1][16s], B[2p][16s+1], ... B[2p+1][16s+15]
//                                 (the "VNNI" pairs both instructions read), zero beyond
//                                 `depth` and `columns`.
// Both packings round with CBF16.h's bf16_round_flushing (what `vcvtneps2bf16` computes).
// The model's three Linear products (W is (out, in) row-major, x (T, in), dy (T, out)):
//   forward          y = x Wᵀ    A = x,    B[i][o] = W[o][i]  (bg_pack_b transposed = 1)
//   input gradient   dx = dy W   A = dy,   B[o][i] = W[o][i]  (bg_pack_b transposed = 0)
//   weight gradient  dW += dyᵀ x A = dyᵀ (bg_pack_a transposed = 1), B = x (transposed = 0)
// Every function works on a range of rows and/or strips and writes only that range, so the
// threads of a team may split one product between them.
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// A bf16 number as its bit pattern: the upper 16 bits of the IEEE fp32 it stands for.
typedef uint16_t bg_bf16;

// MARK: - Engines

enum {
    /// Portable C: per output element, starting from C (accumulate) or +0, for each pair p of
    /// depth indices in order: acc = fma(A[2p+1], B[2p+1], acc), then acc = fma(A[2p], B[2p], acc),
    /// each fma rounded to nearest even, denormal results and a denormal starting C flushed to
    /// zero. This is what `vdpbf16ps` computes on Intel CPUs (verified bit for bit by the tests).
    BG_ENGINE_SOFTWARE = 0,
    /// AVX512-BF16 `vdpbf16ps` (Cooper Lake, Sapphire Rapids and later Intel, AMD Zen 4/5).
    BG_ENGINE_AVX512_BF16 = 1,
    /// AMX-BF16 `tdpbf16ps` (Sapphire Rapids and later Intel). Its internal accumulation of the
    /// 16 pairs of one tile step is not the sequential order above (each pair's exact sum is
    /// rounded, the rest is undocumented): results differ from the other engines by a few fp32
    /// rounding errors of the sum of |A||B| (see CGemmTests).
    BG_ENGINE_AMX = 2,
    BG_ENGINE_COUNT = 3,
};

/// 1 if this CPU and operating system run `engine` (CCPU's bd_cpu_has; for AMX that asks Linux
/// once for the process's permission to use the tile registers). Which engine a run uses is
/// chosen in Swift (Sources/Model/Compute.swift, BF16Engine.fastest).
int bg_engine_supported(int engine);
/// "software", "avx512-bf16" or "amx".
const char *bg_engine_name(int engine);

// MARK: - Rounding

/// out[i] = bf16_round_flushing(in[i]) (CBF16.h, the one definition of the rounding; what
/// `vcvtneps2bf16` computes), in vector code on AVX-512 CPUs as the packing below.
void bg_round_floats(bg_bf16 *out, const float *in, long count);

// MARK: - Layouts

enum { BG_DEPTH_ALIGNMENT = 32, BG_ROW_ALIGNMENT = 16, BG_STRIP_COLUMNS = 16 };
/// depth rounded up to a multiple of 32 (one AMX tile step).
long bg_padded_depth(long depth);
/// rows rounded up to a multiple of 16: the rows an A buffer must have.
long bg_padded_rows(long rows);
/// Strips of 16 columns.
long bg_strip_count(long columns);
/// Elements of a packed B: bg_padded_depth(depth) * 16 * bg_strip_count(columns).
long bg_packed_b_count(long depth, long columns);

/// Rows [row_begin, row_end) of A (row_end <= bg_padded_rows(rows)):
/// a[r * lda + d] = bf16_round_flushing(transposed ? source[d * stride + r] : source[r * stride + d])
/// for r < rows, d < depth; 0 for d in [depth, bg_padded_depth(depth)) and for r >= rows.
void bg_pack_a(bg_bf16 *a, long lda, const float *source, long stride, int transposed,
               long rows, long depth, long row_begin, long row_end);

/// Strips [strip_begin, strip_end) and depth pairs [pair_begin, pair_end)
/// (pair_end <= bg_padded_depth(depth) / 2) of the packed B (layout above), from
/// B[d][n] = transposed ? source[n * stride + d] : source[d * stride + n].
void bg_pack_b(bg_bf16 *packed, const float *source, long stride, int transposed,
               long depth, long columns, long pair_begin, long pair_end,
               long strip_begin, long strip_end);

/// The portable loops of bg_pack_a and bg_pack_b (what CPUs without AVX-512 run; the others
/// use vector code for whole blocks), for tests comparing the two.
void bg_pack_a_portable(bg_bf16 *a, long lda, const float *source, long stride, int transposed,
                        long rows, long depth, long row_begin, long row_end);
void bg_pack_b_portable(bg_bf16 *packed, const float *source, long stride, int transposed,
                        long depth, long columns, long pair_begin, long pair_end,
                        long strip_begin, long strip_end);

// MARK: - Product

/// C[r][n] = (accumulate ? C[r][n] : 0) + sum_d A[r][d] B[d][n] in fp32 for rows
/// [row_begin, row_end) and the columns of strips [strip_begin, strip_end) (n < columns).
/// `engine` must be supported (else the process stops with a message: a programming error).
/// Allocates nothing.
void bg_gemm(int engine, const bg_bf16 *a, long lda, const bg_bf16 *packed_b, long depth, long columns,
             float *c, long ldc, long row_begin, long row_end, long strip_begin, long strip_end,
             int accumulate);

#ifdef __cplusplus
}
#endif
#endif
