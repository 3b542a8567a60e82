#ifndef CBF16_H
#define CBF16_H
// bf16, the one definition of its rounding: every fp32 -> bf16 rounding in bert-dist (the
// matrix products' inputs in CGemm and CKernels, the gradient compression in Distributed)
// calls the functions below. A bf16 is the upper 16 bits of the IEEE fp32 it stands for.
//
// Why a C target of its own: the hot loops that round are C (CGemm's packing, CKernels'
// attention) and Swift (Distributed), and Distributed must not depend on Model's kernels. The
// functions are static inline so that each loop that calls them is compiled (and vectorised by
// the compiler) for its own instruction set; Swift imports and inlines them too.
//
// Two roundings, one definition: bf16_round is round to nearest, ties to even, as PyTorch's
// `tensor.to(torch.bfloat16)` (c10::BFloat16); bf16_round_flushing is what the `vcvtneps2bf16`
// instruction computes (the bf16 products' inputs): the same, after a denormal input became a
// zero of the same sign.
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

static inline uint32_t bf16_float_bits(float value) {
    uint32_t bits;
    memcpy(&bits, &value, 4);
    return bits;
}

/// The bf16 of the fp32 whose bits are `bits`: round to nearest, ties to even; a finite value
/// that rounds past the largest bf16 becomes infinity; NaN stays NaN, made quiet. Branch-free
/// (a select), so loops over it vectorise.
static inline uint16_t bf16_round_bits(uint32_t bits) {
    uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    uint32_t quiet_nan = (bits >> 16) | 0x40u;
    return (uint16_t)((bits & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
}

/// `bits` with a denormal (exponent 0) replaced by the zero of its sign.
static inline uint32_t bf16_flush_denormal(uint32_t bits) {
    return (bits & 0x7f800000u) == 0 ? bits & 0x80000000u : bits;
}

/// fp32 -> bf16, round to nearest even, subnormals rounded like any value (the gradient compression).
static inline uint16_t bf16_round(float value) { return bf16_round_bits(bf16_float_bits(value)); }

/// fp32 -> bf16 as `vcvtneps2bf16`: denormal inputs become signed zeros, then bf16_round (the
/// inputs of every bf16 matrix product).
static inline uint16_t bf16_round_flushing(float value) {
    return bf16_round_bits(bf16_flush_denormal(bf16_float_bits(value)));
}

/// bf16 -> fp32 (exact).
static inline float bf16_widen(uint16_t value) {
    uint32_t bits = (uint32_t)value << 16;
    float result;
    memcpy(&result, &bits, 4);
    return result;
}

/// out[i] = bf16_round(in[i]) for i < count (loops of Swift callers, compiled and vectorised here).
void bf16_round_floats(uint16_t *out, const float *in, long count);
/// out[i] = bf16_widen(in[i]) for i < count.
void bf16_widen_floats(float *out, const uint16_t *in, long count);

#ifdef __cplusplus
}
#endif
#endif
