#ifndef CKERNELS_H
#define CKERNELS_H
// Why this target exists: the model's element-wise and attention kernels must use the widest
// vector instructions of the CPU they run on (AVX-512 or AVX2 + FMA on x86_64), and Swift can
// neither select instructions per function nor dispatch on the CPU at run time. C can: the same
// kernel source (kernels_body.h, GCC/Clang vector extensions) is compiled once per instruction
// set under a target attribute, and each compilation provides one table of entry points
// (bd_kernel_table). There is no global choice: the caller asks for the table of the
// instruction set it wants (bd_kernels_for) and calls through it; Sources/Model keeps that
// pointer in each rank's `Compute`. Swift also keeps a naive reference of each kernel and the
// tests compare them.
//
// Conventions: row-major float32 buffers; `count`/`rows`/`columns` in elements; kernels that
// work on a range of rows or columns write only that range, so threads may split the work.
// Pointers are non-null unless marked _Nullable.
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
#pragma clang assume_nonnull begin

// MARK: - Instruction sets

enum { BD_ISA_BASELINE = 0, BD_ISA_AVX2 = 1, BD_ISA_AVX512 = 2 };
/// 1 if this CPU (and this build) can run `isa` (CCPU's answer: AVX2 needs AVX2 + FMA, AVX512
/// needs AVX-512 F/BW/DQ/VL as well).
int bd_isa_supported(int isa);

// MARK: - Dropout of packed rows (the mask definition of Sources/Model/Dropout.swift)

/// Dropout of the rows of a packed (rows, C) tensor: row r belongs to sequence
/// row_sequence[r] at position row_position[r]; its elements are first_element =
/// row_position[r] * C ... of the mask keyed by sequence_keys[row_sequence[r]].
/// sequence_keys == NULL or probability == 0: no dropout.
typedef struct {
    const uint64_t *_Nullable sequence_keys;
    const int32_t *_Nullable row_sequence;
    const int32_t *_Nullable row_position;
    float probability;
} bd_row_dropout;

// MARK: - The kernels

// Every kernel, declared once: X(return type, name, (parameters)), with its doc comment. From
// this list come the fields of bd_kernel_table (below), the prototypes and the table of each
// instruction set (kernels_body.h, kernels_table.h). A new kernel is one entry here plus its
// body in kernels_body.h. (Comments inside the list are /* */ ones: a // comment would swallow
// the line continuation.)
#define BD_KERNELS(X)                                                                                         \
    /* MARK: Dropout                                                                                       */ \
    /** values[i] = keep ? values[i] / (1 - p) : 0 for element `first_element + i` of the mask keyed by    */ \
    /** `key`, keep = (mix64(key ^ (first_element + i)) >> 32) >= p * 2^32.                                */ \
    X(void, dropout, (float *values, long count, uint64_t key, long first_element, float probability))       \
    /** Applies `dropout` to rows [row_begin, row_end) of values (rows, C) in place.                       */ \
    X(void, dropout_rows, (float *values, long row_begin, long row_end, long columns, bd_row_dropout dropout)) \
                                                                                                              \
    /* MARK: Element-wise math                                                                             */ \
    /** erf(x), max absolute error about 1e-7 (tests compare with erff).                                   */ \
    X(void, erf, (float *out, const float *x, long count))                                                    \
    /** exp(x) for x in [-86, 88] (clamped outside), relative error about 2e-7.                            */ \
    X(void, exp, (float *out, const float *x, long count))                                                    \
    /** GELU, exact erf form: activated = x Φ(x); derivative_inout holds x on entry and                    */ \
    /** Φ(x) + x φ(x) (= d activated / dx) on return.                                                      */ \
    X(void, gelu_forward, (float *activated, float *derivative_inout, long count))                            \
    /** inout[i] *= factor[i]                                                                              */ \
    X(void, multiply, (float *inout, const float *factor, long count))                                        \
                                                                                                              \
    /** values[i] = bf16_widen(bf16_round_flushing(values[i])) (CBF16.h, the rounding of CGemm's packing): */ \
    /** --bf16 rounds the inputs of the attention products this way (a product of two bf16 values is       */ \
    /** exact in fp32).                                                                                    */ \
    X(void, round_bf16, (float *values, long count))                                                          \
                                                                                                              \
    /* MARK: LayerNorm                                                                                     */ \
    /** For rows [row_begin, row_end) of (rows, C): sum = dropout(sum) + residual (sum holds the branch    */ \
    /** on entry; residual may be NULL), then normed = LayerNorm(sum) with weight, bias; keeps mean and    */ \
    /** rstd (per row) for backward. Two-pass variance as PyTorch.                                         */ \
    X(void, residual_layernorm_forward,                                                                       \
      (float *sum, float *normed, float *mean, float *rstd, const float *_Nullable residual,                 \
       const float *weight, const float *bias, long row_begin, long row_end, long columns, float eps,         \
       bd_row_dropout dropout))                                                                               \
    /** Embeddings: sum[t] = word[ids[t]] + position[positions[t]] + type[types[t]] (no type term when    */ \
    /** type_table is NULL); normed = dropout_after(LayerNorm(sum)); rows [row_begin, row_end).            */ \
    X(void, embedding_layernorm_forward,                                                                      \
      (float *sum, float *normed, float *mean, float *rstd,                                                   \
       const int32_t *ids, const int32_t *positions, const int32_t *_Nullable types,                          \
       const float *word_table, const float *position_table, const float *_Nullable type_table,               \
       const float *weight, const float *bias, long row_begin, long row_end, long columns, float eps,         \
       bd_row_dropout dropout_after))                                                                         \
    /** Rows [row_begin, row_end): d_input = the gradient through the normalisation;                       */ \
    /** d_branch (may be NULL) = dropout(d_input) with `dropout_for_branch`.                               */ \
    X(void, layernorm_backward_rows,                                                                          \
      (float *d_input, float *_Nullable d_branch, const float *d_out, const float *input,                     \
       const float *weight, const float *mean, const float *rstd, long row_begin, long row_end,               \
       long columns, bd_row_dropout dropout_for_branch))                                                      \
    /** Columns [column_begin, column_end): d_weight += Σ_rows d_out · x̂, d_bias += Σ_rows d_out.          */ \
    X(void, layernorm_backward_parameters,                                                                    \
      (float *d_weight, float *d_bias, const float *d_out, const float *input, const float *mean,             \
       const float *rstd, long rows, long columns, long column_begin, long column_end))                       \
                                                                                                              \
    /* MARK: Linear helpers                                                                                */ \
    /** sums[c] += Σ_rows matrix[r][c] for columns [column_begin, column_end) (bias gradients).            */ \
    X(void, add_column_sums,                                                                                  \
      (float *sums, const float *matrix, long rows, long columns, long column_begin, long column_end))        \
    /** Columns [column_begin, column_end) of the embedding gradients: scatter-adds d_out rows into the    */ \
    /** rows of the tables they came from (no type table when d_type_table is NULL), in row order; the     */ \
    /** word row word_padding_row and the position row position_padding_row get nothing (nn.Embedding's    */ \
    /** padding_idx; -1: none).                                                                            */ \
    X(void, embedding_backward,                                                                               \
      (float *d_word_table, float *d_position_table, float *_Nullable d_type_table, const float *d_out,       \
       const int32_t *ids, const int32_t *positions, const int32_t *_Nullable types, long rows, long columns, \
       long column_begin, long column_end, long word_padding_row, long position_padding_row))                 \
                                                                                                              \
    /* MARK: Attention of one (sequence, head)                                                             */ \
    /** Floats of scratch attention_* needs for sequences up to `max_length` tokens.                       */ \
    X(long, attention_scratch_floats, (long max_length, long head_dim))                                       \
    /** One head of one sequence of `length` tokens; the first `query_rows` tokens are queries (length,    */ \
    /** or 1 when only [CLS] is needed). q, k, v: rows with strides q_stride, kv_stride.                   */ \
    /**   P = softmax(scale · Q Kᵀ)       (query_rows, length) written to `probabilities` (packed)         */ \
    /**   context = dropout(P) V          (query_rows, head_dim) rows of stride context_stride             */ \
    /** Dropout element (i, j) of P is first_element + i · length + j of the mask keyed by `key`.          */ \
    /** round_bf16 (--bf16): dropout(P), the left input of P V, is rounded to bf16 (round_bf16); the       */ \
    /** caller passes q, k, v already rounded, so both products have bf16 inputs and fp32 sums.           */ \
    X(void, attention_forward,                                                                                \
      (float *context, long context_stride, float *probabilities, const float *q, long q_stride,              \
       const float *k, const float *v, long kv_stride, long length, long head_dim, long query_rows,           \
       float scale, uint64_t key, long first_element, float dropout_probability, int round_bf16,              \
       float *scratch))                                                                                       \
    /** Gradients of attention_forward: writes dq (query_rows rows), dk and dv (length rows).              */ \
    /** round_bf16: dropout(P) (in dV = Pᵀ dO) and dS (in dQ = dS K, dK = dSᵀ Q) are rounded to bf16; the  */ \
    /** caller passes q, k, v and d_context already rounded.                                             */ \
    X(void, attention_backward,                                                                               \
      (float *dq, long dq_stride, float *dk, float *dv, long dkv_stride, const float *d_context,              \
       long d_context_stride, const float *probabilities, const float *q, long q_stride, const float *k,      \
       const float *v, long kv_stride, long length, long head_dim, long query_rows, float scale,              \
       uint64_t key, long first_element, float dropout_probability, int round_bf16, float *scratch))          \
                                                                                                              \
    /* MARK: Optimizer                                                                                     */ \
    /** torch.optim.AdamW (decoupled = 1) or Adam with L2 (decoupled = 0), PyTorch's order of operations,  */ \
    /** over `count` parameters: grad = g · grad_scale; AdamW: p *= decoupled_factor, Adam: grad +=        */ \
    /** decay · p; m += (grad - m)(1 - β1); v = v β2 + (1 - β2) grad²;                                      */ \
    /** p -= step_size · m / (sqrt(v) / bias_correction2_sqrt + eps).                                      */ \
    X(void, adam,                                                                                             \
      (float *parameters, const float *gradients, float *m, float *v, long count, float gradient_scale,       \
       int decoupled, float decay, float decoupled_factor, float one_minus_beta1, float beta2,                \
       float one_minus_beta2, float bias_correction2_sqrt, float step_size, float epsilon))                   \
    /** Σ x² over `count` floats: float partial sums over blocks of 4096, added in double.                 */ \
    X(double, sum_of_squares, (const float *values, long count))

/// The entry points of one instruction set: one field per BD_KERNELS entry, same name.
typedef struct {
#define BD_KERNEL_FIELD(type, name, parameters) type (*_Nonnull name) parameters;
    BD_KERNELS(BD_KERNEL_FIELD)
#undef BD_KERNEL_FIELD
} bd_kernel_table;

/// The kernels compiled for `isa` (static data, valid for the whole process), or NULL when this
/// build has none for it. Whether the CPU can run them is bd_isa_supported's answer.
const bd_kernel_table *_Nullable bd_kernels_for(int isa);

#pragma clang assume_nonnull end
#ifdef __cplusplus
}
#endif
#endif
