// The kernels, written once with GCC/Clang vector extensions (16 floats per vector) and
// compiled once per instruction set: kernels_<isa>.c define BD_NAME(name) (a suffix per
// instruction set) and wrap this file in a `#pragma clang attribute` target attribute, so the
// same source becomes zmm code for AVX-512, ymm + FMA for AVX2 and xmm for the baseline.
// Everything here is static: the entry points BD_NAME(...) are declared from the BD_KERNELS
// list (include/CKernels.h), so a definition that does not match its entry fails to compile,
// and reach Swift only through the table kernels_table.h builds from the same list.
//
// Tails (counts that are not multiples of 16) go through the same vector code on a
// zero-padded copy, so every element sees the same arithmetic.
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <CBF16.h>
#include "include/CKernels.h"

#pragma clang assume_nonnull begin
#define BD_PROTOTYPE(type, name, parameters) static type BD_NAME(name) parameters;
BD_KERNELS(BD_PROTOTYPE)
#undef BD_PROTOTYPE
#pragma clang assume_nonnull end

// Helpers pass 64-byte vectors by value; they are static and inlined, so the ABI note of
// -Wpsabi (vectors wider than the target's registers) does not apply.
#pragma clang diagnostic ignored "-Wpsabi"
// The nullability of the entry points is the BD_KERNELS list's (the prototypes above); the
// definitions and static helpers below are plain C pointers.
#pragma clang diagnostic ignored "-Wnullability-completeness"

typedef float vf __attribute__((vector_size(64)));      // 16 floats
typedef int32_t vi __attribute__((vector_size(64)));    // 16 int32 (comparison masks)
typedef uint32_t vu __attribute__((vector_size(64)));   // 16 uint32
typedef uint64_t vq __attribute__((vector_size(64)));   // 8 uint64
typedef uint32_t vu8 __attribute__((vector_size(32)));  // 8 uint32
typedef float vf8 __attribute__((vector_size(32)));
typedef float vf4 __attribute__((vector_size(16)));
#define LANES 16

static inline vf vload(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void vstore(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline vf vsplat(float x) { return (vf){0} + x; }
static inline vf vload_partial(const float *p, long n) {
    vf v = {0};
    for (long i = 0; i < n; i++) v[i] = p[i];
    return v;
}
static inline void vstore_partial(float *p, vf v, long n) {
    for (long i = 0; i < n; i++) p[i] = v[i];
}
static inline vf vselect(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }
static inline vf vmin(vf a, vf b) { return vselect(a > b, b, a); }   // NaN in a propagates
static inline vf vmax(vf a, vf b) { return vselect(a < b, b, a); }   // NaN in a propagates
static inline vf vabs(vf x) { return (vf)((vi)x & 0x7fffffff); }
static inline vf vsqrt(vf x) { return __builtin_elementwise_sqrt(x); }
/// Lanes [0, n) true.
static inline vi vprefix(long n) {
    const vi lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    return lane < (vi){0} + (int32_t)n;
}

/// Sum of the 16 lanes by halving (a fixed order).
static inline float vsum(vf v) {
    vf8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) + __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    vf4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
    return (b[0] + b[2]) + (b[1] + b[3]);
}
static inline float vmaximum(vf v) {
    float best = v[0];
    for (int i = 1; i < LANES; i++) best = v[i] > best ? v[i] : best;
    return best;
}

// MARK: - exp, erf

/// exp(x): x = n ln2 + r with |r| <= ln2/2 (Cody-Waite split of ln2), e^r by its Taylor
/// polynomial of degree 7 (truncation < 6e-9 relative), 2^n through the exponent bits.
/// Inputs are clamped to [-86.5, 88.3] so 2^n stays a normal number; NaN stays NaN.
static inline vf vexp(vf x) {
    vf clamped = vmin(vmax(x, vsplat(-86.5f)), vsplat(88.3f));
    vf shifted = clamped * 1.44269504088896341f + 12582912.0f;   // 1.5 · 2^23: rounds to an integer
    vf n = shifted - 12582912.0f;
    vi exponent = (vi)shifted - 0x4B400000;
    vf r = clamped - n * 0.693145751953125f;
    r = r - n * 1.428606765330187045e-06f;
    vf p = vsplat(1.0f / 5040.0f);
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    vf result = (vf)((vi)p + (exponent << 23));
    return vselect(x == x, result, x);
}

// erf on two ranges (coefficients fitted for this file: weighted least squares iterated toward
// minimax, in double precision, against mpmath):
//   |z| <= 0.875:  erf(z) = z · A(z²), A of degree 5 (fit error 4e-9 absolute);
//   |z| >  0.875:  erfc(|z|) = exp(-z²) · R(1 / (1 + |z|)), R of degree 8 on |z| in
//                  [0.875, 6] (fit error 2e-9 relative); |z| is clamped to 6 inside R.
#define ERF_SPLIT 0.875f
static inline vf erf_small(vf z, vf s) {   // s = z²
    vf a = vsplat(-6.055923224e-04f);
    a = a * s + 5.000891431e-03f;
    a = a * s - 2.676724468e-02f;
    a = a * s + 1.128163259e-01f;
    a = a * s - 3.761243582e-01f;
    a = a * s + 1.128379112e+00f;
    return z * a;
}
/// erfc(t) / exp(-t²) for t = |z| > 0.875.
static inline vf erfc_scaled(vf t) {
    vf u = 1.0f / (1.0f + vmin(t, vsplat(6.0f)));
    vf r = vsplat(9.442653692e-01f);
    r = r * u - 3.256323420e+00f;
    r = r * u + 4.521749877e+00f;
    r = r * u - 2.818455979e+00f;
    r = r * u + 2.967058297e-01f;
    r = r * u + 1.811896871e-01f;
    r = r * u + 5.751796382e-01f;
    r = r * u + 5.635064571e-01f;
    r = r * u + 1.851120673e-05f;
    return r;
}
static inline vf verf(vf z) {
    vf t = vabs(z), s = z * z;
    vf small = erf_small(z, s);
    vf large = 1.0f - vexp(-s) * erfc_scaled(t);
    large = (vf)((vi)large | ((vi)z & (int32_t)0x80000000));   // copysign
    return vselect(t <= ERF_SPLIT, small, large);
}

/// GELU and its derivative: Φ(x) from erf(x/√2) (or, for |x|/√2 > 0.875, from erfc, which
/// is accurate for very negative x); φ(x) = exp(-x²/2)/√(2π) shares the exponential.
static inline void vgelu(vf x, vf *activated, vf *derivative) {
    vf z = x * 0.707106781186547524f;
    vf t = vabs(z), s = z * z;
    vf gaussian = vexp(-s);                                   // exp(-x²/2)
    vf cdf_small = 0.5f + 0.5f * erf_small(z, s);
    vf half_erfc = 0.5f * gaussian * erfc_scaled(t);
    vf cdf_large = vselect(x < 0.0f, half_erfc, 1.0f - half_erfc);
    vf cdf = vselect(t <= ERF_SPLIT, cdf_small, cdf_large);
    *activated = x * cdf;
    *derivative = cdf + x * (gaussian * 0.398942280401432678f);
}

void BD_NAME(erf)(float *out, const float *x, long count) {
    long i = 0;
    for (; i + LANES <= count; i += LANES) vstore(out + i, verf(vload(x + i)));
    if (i < count) vstore_partial(out + i, verf(vload_partial(x + i, count - i)), count - i);
}

void BD_NAME(exp)(float *out, const float *x, long count) {
    long i = 0;
    for (; i + LANES <= count; i += LANES) vstore(out + i, vexp(vload(x + i)));
    if (i < count) vstore_partial(out + i, vexp(vload_partial(x + i, count - i)), count - i);
}

void BD_NAME(gelu_forward)(float *activated, float *derivative_inout, long count) {
    long i = 0;
    vf a, d;
    for (; i + LANES <= count; i += LANES) {
        vgelu(vload(derivative_inout + i), &a, &d);
        vstore(activated + i, a);
        vstore(derivative_inout + i, d);
    }
    if (i < count) {
        vgelu(vload_partial(derivative_inout + i, count - i), &a, &d);
        vstore_partial(activated + i, a, count - i);
        vstore_partial(derivative_inout + i, d, count - i);
    }
}

void BD_NAME(multiply)(float *inout, const float *factor, long count) {
    long i = 0;
    for (; i + LANES <= count; i += LANES) vstore(inout + i, vload(inout + i) * vload(factor + i));
    for (; i < count; i++) inout[i] *= factor[i];
}

// MARK: - Dropout

/// splitmix64's finaliser on 8 lanes.
static inline vq vmix64(vq z) {
    z = z + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
/// The 16 keep flags of mask elements first .. first + 15.
static inline vi vkeep(uint64_t key, uint64_t first, uint32_t threshold) {
    const vq lanes = {0, 1, 2, 3, 4, 5, 6, 7};
    vq low = vmix64(key ^ (lanes + first)) >> 32;
    vq high = vmix64(key ^ (lanes + (first + 8))) >> 32;
    vu8 lowWords = __builtin_convertvector(low, vu8), highWords = __builtin_convertvector(high, vu8);
    vu hashes = __builtin_shufflevector(lowWords, highWords, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    return (vi)(hashes >= threshold);
}
static inline uint32_t dropout_threshold(float p) {
    double scaled = (double)p * 4294967296.0;
    return (uint32_t)(scaled < 4294967295.0 ? scaled : 4294967295.0);
}

static void dropout_values(float *values, long count, uint64_t key, long first, float p) {
    if (p <= 0) return;
    uint32_t threshold = dropout_threshold(p);
    float scale = 1.0f / (1.0f - p);
    long i = 0;
    for (; i + LANES <= count; i += LANES) {
        vi keep = vkeep(key, (uint64_t)(first + i), threshold);
        vstore(values + i, vselect(keep, vload(values + i) * scale, (vf){0}));
    }
    if (i < count) {
        vi keep = vkeep(key, (uint64_t)(first + i), threshold);
        vstore_partial(values + i, vselect(keep, vload_partial(values + i, count - i) * scale, (vf){0}), count - i);
    }
}

void BD_NAME(dropout)(float *values, long count, uint64_t key, long first_element, float probability) {
    dropout_values(values, count, key, first_element, probability);
}

static inline int row_dropout_active(const bd_row_dropout *d) { return d->sequence_keys && d->probability > 0; }
static inline void dropout_row(float *row, long r, long columns, const bd_row_dropout *d) {
    if (!row_dropout_active(d)) return;
    dropout_values(row, columns, d->sequence_keys[d->row_sequence[r]], (long)d->row_position[r] * columns, d->probability);
}

void BD_NAME(dropout_rows)(float *values, long row_begin, long row_end, long columns, bd_row_dropout dropout) {
    if (!row_dropout_active(&dropout)) return;
    for (long r = row_begin; r < row_end; r++) dropout_row(values + r * columns, r, columns, &dropout);
}

// MARK: - LayerNorm

/// normed = (x - mean) · rstd · weight + bias for one row; returns mean and rstd.
static inline void layernorm_row(float *out, const float *x, const float *weight, const float *bias,
                                 long columns, float eps, float *mean_out, float *rstd_out) {
    vf acc = {0};
    long c = 0;
    for (; c + LANES <= columns; c += LANES) acc += vload(x + c);
    if (c < columns) acc += vload_partial(x + c, columns - c);
    float mean = vsum(acc) / (float)columns;
    vf squares = {0};
    for (c = 0; c + LANES <= columns; c += LANES) { vf d = vload(x + c) - mean; squares += d * d; }
    if (c < columns) { vf d = vselect(vprefix(columns - c), vload_partial(x + c, columns - c) - mean, (vf){0}); squares += d * d; }
    float rstd = 1.0f / sqrtf(vsum(squares) / (float)columns + eps);
    for (c = 0; c + LANES <= columns; c += LANES)
        vstore(out + c, (vload(x + c) - mean) * rstd * vload(weight + c) + vload(bias + c));
    if (c < columns) {
        long n = columns - c;
        vstore_partial(out + c, (vload_partial(x + c, n) - mean) * rstd * vload_partial(weight + c, n) + vload_partial(bias + c, n), n);
    }
    *mean_out = mean;
    *rstd_out = rstd;
}

void BD_NAME(residual_layernorm_forward)(float *sum, float *normed, float *mean, float *rstd,
                                         const float *residual, const float *weight, const float *bias,
                                         long row_begin, long row_end, long columns, float eps,
                                         bd_row_dropout dropout) {
    for (long r = row_begin; r < row_end; r++) {
        float *x = sum + r * columns;
        dropout_row(x, r, columns, &dropout);
        if (residual) {
            const float *y = residual + r * columns;
            long c = 0;
            for (; c + LANES <= columns; c += LANES) vstore(x + c, vload(x + c) + vload(y + c));
            for (; c < columns; c++) x[c] += y[c];
        }
        layernorm_row(normed + r * columns, x, weight, bias, columns, eps, mean + r, rstd + r);
    }
}

void BD_NAME(embedding_layernorm_forward)(float *sum, float *normed, float *mean, float *rstd,
                                          const int32_t *ids, const int32_t *positions, const int32_t *types,
                                          const float *word_table, const float *position_table, const float *type_table,
                                          const float *weight, const float *bias,
                                          long row_begin, long row_end, long columns, float eps,
                                          bd_row_dropout dropout_after) {
    for (long r = row_begin; r < row_end; r++) {
        float *x = sum + r * columns;
        const float *w = word_table + (long)ids[r] * columns;
        const float *p = position_table + (long)positions[r] * columns;
        long c = 0;
        if (type_table) {
            const float *y = type_table + (long)types[r] * columns;
            for (; c + LANES <= columns; c += LANES) vstore(x + c, vload(w + c) + vload(p + c) + vload(y + c));
            for (; c < columns; c++) x[c] = w[c] + p[c] + y[c];
        } else {
            for (; c + LANES <= columns; c += LANES) vstore(x + c, vload(w + c) + vload(p + c));
            for (; c < columns; c++) x[c] = w[c] + p[c];
        }
        layernorm_row(normed + r * columns, x, weight, bias, columns, eps, mean + r, rstd + r);
        dropout_row(normed + r * columns, r, columns, &dropout_after);
    }
}

void BD_NAME(layernorm_backward_rows)(float *d_input, float *d_branch, const float *d_out,
                                      const float *input, const float *weight, const float *mean, const float *rstd,
                                      long row_begin, long row_end, long columns, bd_row_dropout dropout_for_branch) {
    for (long r = row_begin; r < row_end; r++) {
        const float *x = input + r * columns, *dy = d_out + r * columns;
        float *dx = d_input + r * columns;
        const float m = mean[r], s = rstd[r];
        // x̂ = (x - m) s;  dx̂ = dy w;  dx = s (dx̂ - mean(dx̂) - x̂ mean(dx̂ x̂))
        vf sumD = {0}, sumDN = {0};
        long c = 0;
        for (; c + LANES <= columns; c += LANES) {
            vf norm = (vload(x + c) - m) * s, dnorm = vload(dy + c) * vload(weight + c);
            sumD += dnorm;
            sumDN += dnorm * norm;
        }
        if (c < columns) {
            long n = columns - c;
            vf norm = (vload_partial(x + c, n) - m) * s, dnorm = vload_partial(dy + c, n) * vload_partial(weight + c, n);
            sumD += dnorm;
            sumDN += dnorm * norm;
        }
        const float meanD = vsum(sumD) / (float)columns, meanDN = vsum(sumDN) / (float)columns;
        for (c = 0; c + LANES <= columns; c += LANES) {
            vf norm = (vload(x + c) - m) * s;
            vstore(dx + c, (vload(dy + c) * vload(weight + c) - meanD - norm * meanDN) * s);
        }
        if (c < columns) {
            long n = columns - c;
            vf norm = (vload_partial(x + c, n) - m) * s;
            vstore_partial(dx + c, (vload_partial(dy + c, n) * vload_partial(weight + c, n) - meanD - norm * meanDN) * s, n);
        }
        if (d_branch) {
            float *db = d_branch + r * columns;
            memcpy(db, dx, (size_t)columns * sizeof(float));
            dropout_row(db, r, columns, &dropout_for_branch);
        }
    }
}

/// Column kernels walk all rows for a block of up to 4 vectors (64 columns) at a time: each
/// column's sum runs over rows in order, whatever the split of columns between threads.
void BD_NAME(layernorm_backward_parameters)(float *d_weight, float *d_bias, const float *d_out,
                                            const float *input, const float *mean, const float *rstd,
                                            long rows, long columns, long column_begin, long column_end) {
    for (long c0 = column_begin; c0 < column_end; c0 += 4 * LANES) {
        long width = column_end - c0 < 4 * LANES ? column_end - c0 : 4 * LANES;
        long full = width / LANES, tail = width % LANES;
        vf accW[4] = {{0}}, accB[4] = {{0}};
        for (long r = 0; r < rows; r++) {
            const float *x = input + r * columns + c0, *dy = d_out + r * columns + c0;
            const float m = mean[r], s = rstd[r];
            for (long b = 0; b < full; b++) {
                vf g = vload(dy + b * LANES);
                accW[b] += g * ((vload(x + b * LANES) - m) * s);
                accB[b] += g;
            }
            if (tail) {
                vf g = vload_partial(dy + full * LANES, tail);
                accW[full] += g * ((vload_partial(x + full * LANES, tail) - m) * s);
                accB[full] += g;
            }
        }
        for (long b = 0; b < full; b++) {
            vstore(d_weight + c0 + b * LANES, vload(d_weight + c0 + b * LANES) + accW[b]);
            vstore(d_bias + c0 + b * LANES, vload(d_bias + c0 + b * LANES) + accB[b]);
        }
        for (long i = 0; i < tail; i++) {
            d_weight[c0 + full * LANES + i] += accW[full][i];
            d_bias[c0 + full * LANES + i] += accB[full][i];
        }
    }
}

void BD_NAME(add_column_sums)(float *sums, const float *matrix, long rows, long columns,
                              long column_begin, long column_end) {
    for (long c0 = column_begin; c0 < column_end; c0 += 4 * LANES) {
        long width = column_end - c0 < 4 * LANES ? column_end - c0 : 4 * LANES;
        long full = width / LANES, tail = width % LANES;
        vf acc[4] = {{0}};
        for (long r = 0; r < rows; r++) {
            const float *row = matrix + r * columns + c0;
            for (long b = 0; b < full; b++) acc[b] += vload(row + b * LANES);
            if (tail) acc[full] += vload_partial(row + full * LANES, tail);
        }
        for (long b = 0; b < full; b++) vstore(sums + c0 + b * LANES, vload(sums + c0 + b * LANES) + acc[b]);
        for (long i = 0; i < tail; i++) sums[c0 + full * LANES + i] += acc[full][i];
    }
}

/// row[c] += d[c] for columns [column_begin, column_end).
static inline void add_row(float *row, const float *d, long column_begin, long column_end) {
    long c = column_begin;
    for (; c + LANES <= column_end; c += LANES) vstore(row + c, vload(row + c) + vload(d + c));
    for (; c < column_end; c++) row[c] += d[c];
}

void BD_NAME(embedding_backward)(float *d_word_table, float *d_position_table, float *d_type_table,
                                 const float *d_out, const int32_t *ids, const int32_t *positions, const int32_t *types,
                                 long rows, long columns, long column_begin, long column_end,
                                 long word_padding_row, long position_padding_row) {
    for (long r = 0; r < rows; r++) {
        const float *d = d_out + r * columns;
        float *w = ids[r] != word_padding_row ? d_word_table + (long)ids[r] * columns : NULL;
        float *p = positions[r] != position_padding_row ? d_position_table + (long)positions[r] * columns : NULL;
        float *y = d_type_table ? d_type_table + (long)types[r] * columns : NULL;
        if (w && p && y) {   // the common case: the three rows at once
            long c = column_begin;
            for (; c + LANES <= column_end; c += LANES) {
                vf g = vload(d + c);
                vstore(w + c, vload(w + c) + g);
                vstore(p + c, vload(p + c) + g);
                vstore(y + c, vload(y + c) + g);
            }
            for (; c < column_end; c++) { w[c] += d[c]; p[c] += d[c]; y[c] += d[c]; }
            continue;
        }
        if (w) add_row(w, d, column_begin, column_end);
        if (p) add_row(p, d, column_begin, column_end);
        if (y) add_row(y, d, column_begin, column_end);
    }
}

// MARK: - bf16 rounding

/// A plain loop over the one definition (CBF16.h): the compiler vectorises it for this file's
/// instruction set. Integer arithmetic only, so its scalar tail gives the same bits as the
/// vector body (no zero-padded tail needed).
void BD_NAME(round_bf16)(float *values, long count) {
    for (long i = 0; i < count; i++) values[i] = bf16_widen(bf16_round_flushing(values[i]));
}

// MARK: - Attention

static inline long round_up(long n, long m) { return (n + m - 1) / m * m; }

/// Scratch layout of one (sequence, head): with mq = queries rounded up to 4 and np = length
/// rounded up to 32 (every piece starts on a 16-float boundary):
///   left   (mq, head_dim)   queries (forward) or d_context rows (backward), zero-padded rows
///   right  (head_dim, np)   Kᵀ (forward) or Vᵀ (backward), zero-padded columns
///   first  (mq, np)         scores, then dropout(P)
///   second (mq, np)         backward: dP, then dS
long BD_NAME(attention_scratch_floats)(long max_length, long head_dim) {
    long mq = round_up(max_length, 4), np = round_up(max_length, 32);
    return round_up(mq * head_dim, 16) * 2 + round_up(head_dim * np, 16) + 2 * mq * np;
}

/// out (mq, np) = left (mq, d) · right (d, np), mq a multiple of 4, np of 32: tiles of 4 rows
/// by 32 columns, 8 accumulators; each right vector is loaded once per 4 rows.
static void product_with_transposed(float *out, const float *left, const float *right, long mq, long np, long d) {
    for (long i = 0; i < mq; i += 4) {
        const float *a0 = left + i * d, *a1 = a0 + d, *a2 = a1 + d, *a3 = a2 + d;
        for (long j = 0; j < np; j += 2 * LANES) {
            vf c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0}, c30 = {0}, c31 = {0};
            for (long c = 0; c < d; c++) {
                vf b0 = vload(right + c * np + j), b1 = vload(right + c * np + j + LANES);
                c00 += a0[c] * b0; c01 += a0[c] * b1;
                c10 += a1[c] * b0; c11 += a1[c] * b1;
                c20 += a2[c] * b0; c21 += a2[c] * b1;
                c30 += a3[c] * b0; c31 += a3[c] * b1;
            }
            vstore(out + i * np + j, c00); vstore(out + i * np + j + LANES, c01);
            vstore(out + (i + 1) * np + j, c10); vstore(out + (i + 1) * np + j + LANES, c11);
            vstore(out + (i + 2) * np + j, c20); vstore(out + (i + 2) * np + j + LANES, c21);
            vstore(out + (i + 3) * np + j, c30); vstore(out + (i + 3) * np + j + LANES, c31);
        }
    }
}

/// out_a (d) = Σ_b weight(a, b) · rows_b (d) for a in [0, out_count), b in [0, sum_count),
/// where weight(a, b) = weights[a * wa + b * wb] and rows_b = rows + b * row_stride;
/// out_a = out + a * out_stride. Written (=). Vector path when d is a multiple of 16.
static void weighted_row_sums(float *out, long out_stride, long out_count,
                              const float *weights, long wa, long wb,
                              const float *rows, long row_stride, long sum_count, long d) {
    if (d % LANES != 0) {
        for (long a = 0; a < out_count; a++) {
            float *o = out + a * out_stride;
            for (long c = 0; c < d; c++) o[c] = 0;
            for (long b = 0; b < sum_count; b++) {
                const float w = weights[a * wa + b * wb], *row = rows + b * row_stride;
                for (long c = 0; c < d; c++) o[c] += w * row[c];
            }
        }
        return;
    }
    for (long c0 = 0; c0 < d; c0 += 2 * LANES) {
        const int two = c0 + LANES < d;     // a second vector of columns in this block
        long a = 0;
        for (; a + 4 <= out_count; a += 4) {
            vf s00 = {0}, s01 = {0}, s10 = {0}, s11 = {0}, s20 = {0}, s21 = {0}, s30 = {0}, s31 = {0};
            const float *w0 = weights + a * wa, *w1 = w0 + wa, *w2 = w1 + wa, *w3 = w2 + wa;
            for (long b = 0; b < sum_count; b++) {
                const float *row = rows + b * row_stride + c0;
                vf r0 = vload(row), r1 = two ? vload(row + LANES) : (vf){0};
                float x0 = w0[b * wb], x1 = w1[b * wb], x2 = w2[b * wb], x3 = w3[b * wb];
                s00 += x0 * r0; s01 += x0 * r1;
                s10 += x1 * r0; s11 += x1 * r1;
                s20 += x2 * r0; s21 += x2 * r1;
                s30 += x3 * r0; s31 += x3 * r1;
            }
            float *o = out + a * out_stride + c0;
            vstore(o, s00); vstore(o + out_stride, s10); vstore(o + 2 * out_stride, s20); vstore(o + 3 * out_stride, s30);
            if (two) {
                vstore(o + LANES, s01); vstore(o + out_stride + LANES, s11);
                vstore(o + 2 * out_stride + LANES, s21); vstore(o + 3 * out_stride + LANES, s31);
            }
        }
        for (; a < out_count; a++) {
            vf s0 = {0}, s1 = {0};
            const float *w = weights + a * wa;
            for (long b = 0; b < sum_count; b++) {
                const float *row = rows + b * row_stride + c0;
                float x = w[b * wb];
                s0 += x * vload(row);
                if (two) s1 += x * vload(row + LANES);
            }
            float *o = out + a * out_stride + c0;
            vstore(o, s0);
            if (two) vstore(o + LANES, s1);
        }
    }
}

/// Copies `count` rows of d floats (stride `stride`) into packed (round_up(count, 4), d),
/// zero rows after `count`.
static void pack_rows(float *out, const float *rows, long stride, long count, long d) {
    long mq = round_up(count, 4);
    for (long i = 0; i < count; i++) memcpy(out + i * d, rows + i * stride, (size_t)d * sizeof(float));
    memset(out + count * d, 0, (size_t)((mq - count) * d) * sizeof(float));
}
/// Transposes `count` rows of d floats (stride `stride`) into (d, np), zero columns after count.
static void pack_transposed(float *out, const float *rows, long stride, long count, long d, long np) {
    for (long c = 0; c < d; c++) memset(out + c * np + count, 0, (size_t)(np - count) * sizeof(float));
    for (long j = 0; j < count; j++) {
        const float *row = rows + j * stride;
        for (long c = 0; c < d; c++) out[c * np + j] = row[c];
    }
}

/// Softmax of scale · row[0 ..< n] in place; zeros [n, np).
static void softmax_row(float *row, long n, long np, float scale) {
    vf best = vsplat(-INFINITY);
    long j = 0;
    for (; j + LANES <= n; j += LANES) best = vmax(best, vload(row + j));
    if (j < n) best = vmax(best, vselect(vprefix(n - j), vload(row + j), vsplat(-INFINITY)));
    const float largest = vmaximum(best) * scale;
    vf total = {0};
    for (j = 0; j < np; j += LANES) {
        vf e = vselect(vprefix(n - j), vexp(vload(row + j) * scale - largest), (vf){0});
        vstore(row + j, e);
        total += e;
    }
    const float inverse = 1.0f / vsum(total);
    for (j = 0; j < np; j += LANES) vstore(row + j, vload(row + j) * inverse);
}

void BD_NAME(attention_forward)(float *context, long context_stride, float *probabilities,
                                const float *q, long q_stride, const float *k, const float *v, long kv_stride,
                                long length, long head_dim, long query_rows, float scale,
                                uint64_t key, long first_element, float dropout_probability, int round_bf16,
                                float *scratch) {
    const long n = length, d = head_dim, m = query_rows;
    const long mq = round_up(m, 4), np = round_up(n, 32);
    float *left = scratch, *right = left + round_up(mq * d, 16) * 2, *scores = right + round_up(d * np, 16);
    pack_rows(left, q, q_stride, m, d);
    pack_transposed(right, k, kv_stride, n, d, np);
    product_with_transposed(scores, left, right, mq, np, d);
    for (long i = 0; i < m; i++) {
        float *row = scores + i * np;
        softmax_row(row, n, np, scale);
        memcpy(probabilities + i * n, row, (size_t)n * sizeof(float));
        dropout_values(row, n, key, first_element + i * n, dropout_probability);
        if (round_bf16) BD_NAME(round_bf16)(row, n);
    }
    weighted_row_sums(context, context_stride, m, scores, np, 1, v, kv_stride, n, d);
}

void BD_NAME(attention_backward)(float *dq, long dq_stride, float *dk, float *dv, long dkv_stride,
                                 const float *d_context, long d_context_stride, const float *probabilities,
                                 const float *q, long q_stride, const float *k, const float *v, long kv_stride,
                                 long length, long head_dim, long query_rows, float scale,
                                 uint64_t key, long first_element, float dropout_probability, int round_bf16,
                                 float *scratch) {
    const long n = length, d = head_dim, m = query_rows;
    const long mq = round_up(m, 4), np = round_up(n, 32);
    float *left = scratch, *queries = left + round_up(mq * d, 16);
    float *right = scratch + round_up(mq * d, 16) * 2;
    float *dropped = right + round_up(d * np, 16), *grad = dropped + mq * np;
    // dropout(P), zero-padded to (mq, np).
    memset(dropped, 0, (size_t)(mq * np) * sizeof(float));
    for (long i = 0; i < m; i++) {
        memcpy(dropped + i * np, probabilities + i * n, (size_t)n * sizeof(float));
        dropout_values(dropped + i * np, n, key, first_element + i * n, dropout_probability);
        if (round_bf16) BD_NAME(round_bf16)(dropped + i * np, n);
    }
    // dV = dropout(P)ᵀ dContext   (n, d)
    weighted_row_sums(dv, dkv_stride, n, dropped, 1, np, d_context, d_context_stride, m, d);
    // dPd = dContext Vᵀ, then the dropout mask: dP   (mq, np)
    pack_rows(left, d_context, d_context_stride, m, d);
    pack_transposed(right, v, kv_stride, n, d, np);
    product_with_transposed(grad, left, right, mq, np, d);
    // dS = P ⊙ (dP - Σ_j dP P) · scale, zero padding
    for (long i = 0; i < m; i++) {
        float *g = grad + i * np;
        const float *p = probabilities + i * n;
        dropout_values(g, n, key, first_element + i * n, dropout_probability);
        vf dot = {0};
        long j = 0;
        for (; j + LANES <= n; j += LANES) dot += vload(g + j) * vload(p + j);
        if (j < n) dot += vload_partial(g + j, n - j) * vload_partial(p + j, n - j);
        const float total = vsum(dot);
        for (j = 0; j + LANES <= n; j += LANES) vstore(g + j, vload(p + j) * (vload(g + j) - total) * scale);
        if (j < n) vstore(g + j, vselect(vprefix(n - j), vload_partial(p + j, n - j) * (vload(g + j) - total) * scale, (vf){0}));
        for (j = round_up(n, LANES); j < np; j += LANES) vstore(g + j, (vf){0});
        if (round_bf16) BD_NAME(round_bf16)(g, n);
    }
    // dQ = dS K   (m, d);  dK = dSᵀ Q   (n, d)
    weighted_row_sums(dq, dq_stride, m, grad, np, 1, k, kv_stride, n, d);
    pack_rows(queries, q, q_stride, m, d);
    weighted_row_sums(dk, dkv_stride, n, grad, 1, np, queries, d, m, d);
}

// MARK: - Optimizer

void BD_NAME(adam)(float *parameters, const float *gradients, float *m, float *v, long count,
                   float gradient_scale, int decoupled, float decay, float decoupled_factor,
                   float one_minus_beta1, float beta2, float one_minus_beta2,
                   float bias_correction2_sqrt, float step_size, float epsilon) {
    long i = 0;
    for (; i + LANES <= count; i += LANES) {
        vf p = vload(parameters + i), grad = vload(gradients + i) * gradient_scale;
        if (decoupled) p = p * decoupled_factor;
        else grad = grad + decay * p;
        vf mi = vload(m + i), vi_ = vload(v + i);
        mi = mi + (grad - mi) * one_minus_beta1;
        vi_ = vi_ * beta2 + one_minus_beta2 * grad * grad;
        vf denominator = vsqrt(vi_) / bias_correction2_sqrt + epsilon;
        p = p - step_size * mi / denominator;
        vstore(parameters + i, p); vstore(m + i, mi); vstore(v + i, vi_);
    }
    for (; i < count; i++) {
        float p = parameters[i], grad = gradients[i] * gradient_scale;
        if (decoupled) p = p * decoupled_factor;
        else grad = grad + decay * p;
        m[i] = m[i] + (grad - m[i]) * one_minus_beta1;
        v[i] = v[i] * beta2 + one_minus_beta2 * grad * grad;
        float denominator = sqrtf(v[i]) / bias_correction2_sqrt + epsilon;
        parameters[i] = p - step_size * m[i] / denominator;
    }
}

double BD_NAME(sum_of_squares)(const float *values, long count) {
    double total = 0;
    for (long start = 0; start < count; start += 4096) {
        long end = start + 4096 < count ? start + 4096 : count;
        vf acc = {0};
        long i = start;
        for (; i + LANES <= end; i += LANES) { vf x = vload(values + i); acc += x * x; }
        float partial = vsum(acc);
        for (; i < end; i++) partial += values[i] * values[i];
        total += (double)partial;
    }
    return total;
}
