// The operand layouts of CGemm.h. The portable loops below define every packed word; on CPUs
// with AVX-512 (all that have bf16 instructions) whole 16 x 16 blocks of words are made with
// vector instructions and the portable loops do only the edges. Every value is rounded by
// CBF16.h's bf16_round_flushing (what `vcvtneps2bf16` computes), the vector code included.
#include <string.h>
#include <CBF16.h>
#include <CCPU.h>
#include "engines.h"
#if defined(__x86_64__)
#include <immintrin.h>
#endif

/// The 32-bit word of a depth pair: `even` in the low half (what both instructions read).
static inline uint32_t pair_word(float even, float odd) {
    return (uint32_t)bf16_round_flushing(even) | (uint32_t)bf16_round_flushing(odd) << 16;
}

/// Word p of A row r: A[r][2p], A[r][2p + 1] (zeros beyond depth and rows).
static inline uint32_t a_word(const float *source, long stride, int transposed, long rows, long depth, long r, long p) {
    if (r >= rows) return 0;
    long d = 2 * p;
    float even = d < depth ? (transposed ? source[d * stride + r] : source[r * stride + d]) : 0;
    float odd = d + 1 < depth ? (transposed ? source[(d + 1) * stride + r] : source[r * stride + d + 1]) : 0;
    return pair_word(even, odd);
}

/// Word j of pair p of strip s of B: B[2p][n], B[2p + 1][n] for n = 16 s + j.
static inline uint32_t b_word(const float *source, long stride, int transposed, long depth, long columns, long p, long n) {
    if (n >= columns) return 0;
    long d = 2 * p;
    float even = d < depth ? (transposed ? source[n * stride + d] : source[d * stride + n]) : 0;
    float odd = d + 1 < depth ? (transposed ? source[n * stride + d + 1] : source[(d + 1) * stride + n]) : 0;
    return pair_word(even, odd);
}

static void pack_a_words(uint32_t *a_words, long lda, const float *source, long stride, int transposed, long rows, long depth,
                         long row_begin, long row_end, long pair_begin, long pair_end) {
    for (long r = row_begin; r < row_end; r++)
        for (long p = pair_begin; p < pair_end; p++) a_words[r * (lda / 2) + p] = a_word(source, stride, transposed, rows, depth, r, p);
}

static void pack_b_words(uint32_t *words, const float *source, long stride, int transposed, long depth, long columns,
                         long pair_begin, long pair_end, long strip_begin, long strip_end) {
    long strip_words = bg_strip_stride(depth) / 2;
    for (long s = strip_begin; s < strip_end; s++)
        for (long p = pair_begin; p < pair_end; p++)
            for (long j = 0; j < 16; j++)
                words[s * strip_words + p * 16 + j] = b_word(source, stride, transposed, depth, columns, p, s * 16 + j);
}

#if defined(__x86_64__)
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))

/// bf16_round_flushing on 16 lanes (the bf16 in the low half of each): the compiler makes
/// vector instructions of the loop.
AVX512 static inline __m512i round16(__m512i b) {
    uint32_t lanes[16];
    memcpy(lanes, &b, sizeof lanes);
    for (int i = 0; i < 16; i++) lanes[i] = bf16_round_bits(bf16_flush_denormal(lanes[i]));
    memcpy(&b, lanes, sizeof lanes);
    return b;
}

/// 16 pair words from 16 even-row and 16 odd-row floats.
AVX512 static inline __m512i pairs_of_rows(const float *even, const float *odd) {
    __m512i e = round16(_mm512_loadu_si512(even)), o = round16(_mm512_loadu_si512(odd));
    return _mm512_or_si512(e, _mm512_slli_epi32(o, 16));
}

/// 16 pair words from 32 consecutive floats.
AVX512 static inline __m512i pairs_of_neighbours(const float *values) {
    __m256i low = _mm512_cvtepi32_epi16(round16(_mm512_loadu_si512(values)));
    __m256i high = _mm512_cvtepi32_epi16(round16(_mm512_loadu_si512(values + 16)));
    return _mm512_inserti64x4(_mm512_castsi256_si512(low), high, 1);
}

/// Transposes a 16 x 16 matrix of 32-bit words held as 16 rows.
AVX512 static inline void transpose16(__m512i m[16]) {
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) {   // 2 x 2 blocks of words
        t[i] = _mm512_unpacklo_epi32(m[i], m[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(m[i], m[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {   // 4 x 4 blocks within each 128-bit lane
        m[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        m[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        m[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        m[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int i = 0; i < 4; i++) {       // then the 4 x 4 grid of 128-bit lanes
        t[i] = _mm512_shuffle_i32x4(m[i], m[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_i32x4(m[i], m[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_i32x4(m[i + 8], m[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_i32x4(m[i + 8], m[i + 12], 0xdd);
    }
    for (int i = 0; i < 4; i++) {
        m[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
        m[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xdd);
        m[i + 4] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0x88);
        m[i + 12] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0xdd);
    }
}

AVX512 static void round_avx512(bg_bf16 *out, const float *in, long count) {
    long i = 0;
    for (; i + 16 <= count; i += 16)
        _mm256_storeu_si256((__m256i *)(out + i), _mm512_cvtepi32_epi16(round16(_mm512_loadu_si512(in + i))));
    for (; i < count; i++) out[i] = bf16_round_flushing(in[i]);
}

AVX512 static void pack_a_avx512(bg_bf16 *a, long lda, const float *source, long stride, int transposed,
                                 long rows, long depth, long row_begin, long row_end) {
    long pairs = bg_padded_depth(depth) / 2, full_pairs = depth / 2 / 16 * 16;
    long valid_end = row_end < rows ? row_end : rows;
    uint32_t *words = (uint32_t *)a;
    if (!transposed) {
        for (long r = row_begin; r < valid_end; r++) {
            round_avx512(a + r * lda, source + r * stride, 2 * full_pairs);
            pack_a_words(words, lda, source, stride, 0, rows, depth, r, r + 1, full_pairs, pairs);
        }
    } else {
        // Pair blocks outer: the 32 source rows of a block are read along their length.
        long full_rows_end = row_begin + (valid_end - row_begin) / 16 * 16;
        for (long p0 = 0; p0 < full_pairs; p0 += 16) {
            for (long r = row_begin; r < full_rows_end; r += 16) {
                __m512i m[16];   // m[p] = word p0 + p of rows r .. r + 15
                for (int p = 0; p < 16; p++)
                    m[p] = pairs_of_rows(source + 2 * (p0 + p) * stride + r, source + (2 * (p0 + p) + 1) * stride + r);
                transpose16(m);
                for (int j = 0; j < 16; j++) _mm512_storeu_si512(words + (r + j) * (lda / 2) + p0, m[j]);
            }
        }
        pack_a_words(words, lda, source, stride, 1, rows, depth, row_begin, full_rows_end, full_pairs, pairs);
        pack_a_words(words, lda, source, stride, 1, rows, depth, full_rows_end, valid_end, 0, pairs);
    }
    long zero_begin = valid_end > row_begin ? valid_end : row_begin;
    for (long r = zero_begin; r < row_end; r++) memset(a + r * lda, 0, (size_t)(2 * pairs) * sizeof(bg_bf16));
}

AVX512 static void pack_b_avx512(bg_bf16 *packed, const float *source, long stride, int transposed, long depth, long columns,
                                 long pair_begin, long pair_end, long strip_begin, long strip_end) {
    long strip_words = bg_strip_stride(depth) / 2;
    uint32_t *words = (uint32_t *)packed;
    long full_strips_end = columns / 16 < strip_end ? columns / 16 : strip_end;
    long full_pairs_end = depth / 2 < pair_end ? depth / 2 : pair_end;
    for (long s = strip_begin; s < full_strips_end; s++) {
        uint32_t *strip = words + s * strip_words;
        long p = pair_begin;
        if (transposed) {
            // The strip's 16 source rows, 16 pairs (32 floats) each, transposed into 16 pair rows.
            for (; p + 16 <= full_pairs_end; p += 16) {
                __m512i m[16];
                for (int j = 0; j < 16; j++) m[j] = pairs_of_neighbours(source + (s * 16 + j) * stride + 2 * p);
                transpose16(m);
                for (int i = 0; i < 16; i++) _mm512_storeu_si512(strip + (p + i) * 16, m[i]);
            }
        } else {
            for (; p < full_pairs_end; p++)
                _mm512_storeu_si512(strip + p * 16, pairs_of_rows(source + 2 * p * stride + s * 16, source + (2 * p + 1) * stride + s * 16));
        }
        pack_b_words(words, source, stride, transposed, depth, columns, p, pair_end, s, s + 1);
    }
    long s = full_strips_end > strip_begin ? full_strips_end : strip_begin;
    pack_b_words(words, source, stride, transposed, depth, columns, pair_begin, pair_end, s, strip_end);
}

#endif

void bg_round_floats(bg_bf16 *out, const float *in, long count) {
#if defined(__x86_64__)
    if (bd_cpu_has(BD_CPU_AVX512)) { round_avx512(out, in, count); return; }
#endif
    for (long i = 0; i < count; i++) out[i] = bf16_round_flushing(in[i]);
}

void bg_pack_a_portable(bg_bf16 *a, long lda, const float *source, long stride, int transposed,
                        long rows, long depth, long row_begin, long row_end) {
    pack_a_words((uint32_t *)a, lda, source, stride, transposed, rows, depth, row_begin, row_end, 0, bg_padded_depth(depth) / 2);
}

void bg_pack_b_portable(bg_bf16 *packed, const float *source, long stride, int transposed,
                        long depth, long columns, long pair_begin, long pair_end,
                        long strip_begin, long strip_end) {
    pack_b_words((uint32_t *)packed, source, stride, transposed, depth, columns, pair_begin, pair_end, strip_begin, strip_end);
}

void bg_pack_a(bg_bf16 *a, long lda, const float *source, long stride, int transposed,
               long rows, long depth, long row_begin, long row_end) {
#if defined(__x86_64__)
    if (bd_cpu_has(BD_CPU_AVX512)) { pack_a_avx512(a, lda, source, stride, transposed, rows, depth, row_begin, row_end); return; }
#endif
    bg_pack_a_portable(a, lda, source, stride, transposed, rows, depth, row_begin, row_end);
}

void bg_pack_b(bg_bf16 *packed, const float *source, long stride, int transposed,
               long depth, long columns, long pair_begin, long pair_end,
               long strip_begin, long strip_end) {
#if defined(__x86_64__)
    if (bd_cpu_has(BD_CPU_AVX512)) { pack_b_avx512(packed, source, stride, transposed, depth, columns, pair_begin, pair_end, strip_begin, strip_end); return; }
#endif
    bg_pack_b_portable(packed, source, stride, transposed, depth, columns, pair_begin, pair_end, strip_begin, strip_end);
}
