#ifndef CKERNELS_H
#define CKERNELS_H
// Why this target exists: the model's element-wise and attention kernels must use the widest
// vector instructions of the CPU they run on (AVX-512 or AVX2 + FMA on x86_64), and Swift can
// neither select instructions per function nor dispatch on the CPU at run time. C can: the same
// kernel source (kernels_body.h, GCC/Clang vector extensions) is compiled once per instruction
// set under a target attribute, and every bd_* call goes through a table chosen once at load
// time from the CPU's features. Swift (Sources/Model) keeps a naive reference of each kernel and
// the tests compare them.
//
// Conventions: row-major float32 buffers; `count`/`rows`/`columns` in elements; kernels that
// work on a range of rows or columns write only that range, so threads may split the work.
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Instruction-set dispatch

enum { BD_ISA_BASELINE = 0, BD_ISA_AVX2 = 1, BD_ISA_AVX512 = 2 };
/// The instruction set the kernels use now (the best the CPU supports unless bd_isa_select).
int bd_isa_active(void);
/// 1 if this CPU (and this build) can run `isa`.
int bd_isa_supported(int isa);
/// Uses `isa` on the calling thread from now on if supported (for tests: other threads keep the
/// chosen one); returns the calling thread's active one afterwards.
int bd_isa_select(int isa);
const char *bd_isa_name(int isa);
/// A spin-wait hint (x86 `pause`).
void bd_cpu_relax(void);
/// The CPU as this process sees it (cpuid; what a hypervisor or valgrind exposes): vendor
/// string ("AuthenticAMD", "GenuineIntel", or "" when unknown) and display family (e.g. 0x19
/// for AMD Zen 3/4, 6 for most Intel cores).
const char *bd_cpu_vendor(void);
int bd_cpu_family(void);

// MARK: - Dropout (the mask definition of Sources/Model/Dropout.swift, bit for bit)

/// values[i] = keep ? values[i] / (1 - p) : 0 for element `first_element + i` of the mask keyed
/// by `key`, keep = (mix64(key ^ (first_element + i)) >> 32) >= p * 2^32.
void bd_dropout(float *values, long count, uint64_t key, long first_element, float probability);

/// Dropout of the rows of a packed (rows, C) tensor: row r belongs to sequence
/// row_sequence[r] at position row_position[r]; its elements are first_element =
/// row_position[r] * C ... of the mask keyed by sequence_keys[row_sequence[r]].
/// sequence_keys == NULL or probability == 0: no dropout.
typedef struct {
    const uint64_t *sequence_keys;
    const int32_t *row_sequence;
    const int32_t *row_position;
    float probability;
} bd_row_dropout;

/// Applies `dropout` to rows [row_begin, row_end) of values (rows, C) in place.
void bd_dropout_rows(float *values, long row_begin, long row_end, long columns, bd_row_dropout dropout);

// MARK: - Element-wise math

/// erf(x), max absolute error about 1e-7 (tests compare with erff).
void bd_erf(float *out, const float *x, long count);
/// exp(x) for x in [-86, 88] (clamped outside), relative error about 2e-7.
void bd_exp(float *out, const float *x, long count);
/// GELU, exact erf form: activated = x Φ(x); derivative_inout holds x on entry and
/// Φ(x) + x φ(x) (= d activated / dx) on return.
void bd_gelu_forward(float *activated, float *derivative_inout, long count);
/// inout[i] *= factor[i]
void bd_multiply(float *inout, const float *factor, long count);

// MARK: - LayerNorm

/// For rows [row_begin, row_end) of (rows, C): sum = dropout(sum) + residual (sum holds the
/// branch on entry; residual may be NULL), then normed = LayerNorm(sum) with weight, bias;
/// keeps mean and rstd (per row) for backward. Two-pass variance as PyTorch.
void bd_residual_layernorm_forward(float *sum, float *normed, float *mean, float *rstd,
                                   const float *residual, const float *weight, const float *bias,
                                   long row_begin, long row_end, long columns, float eps,
                                   bd_row_dropout dropout);

/// Embeddings: sum[t] = word[ids[t]] + position[positions[t]] + type[types[t]];
/// normed = dropout_after(LayerNorm(sum)); rows [row_begin, row_end).
void bd_embedding_layernorm_forward(float *sum, float *normed, float *mean, float *rstd,
                                    const int32_t *ids, const int32_t *positions, const int32_t *types,
                                    const float *word_table, const float *position_table, const float *type_table,
                                    const float *weight, const float *bias,
                                    long row_begin, long row_end, long columns, float eps,
                                    bd_row_dropout dropout_after);

/// Rows [row_begin, row_end): d_input = the gradient through the normalisation;
/// d_branch (may be NULL) = dropout(d_input) with `dropout_for_branch`.
void bd_layernorm_backward_rows(float *d_input, float *d_branch, const float *d_out,
                                const float *input, const float *weight, const float *mean, const float *rstd,
                                long row_begin, long row_end, long columns, bd_row_dropout dropout_for_branch);

/// Columns [column_begin, column_end): d_weight += Σ_rows d_out · x̂, d_bias += Σ_rows d_out.
void bd_layernorm_backward_parameters(float *d_weight, float *d_bias, const float *d_out,
                                      const float *input, const float *mean, const float *rstd,
                                      long rows, long columns, long column_begin, long column_end);

// MARK: - Linear helpers

/// sums[c] += Σ_rows matrix[r][c] for columns [column_begin, column_end) (bias gradients).
void bd_add_column_sums(float *sums, const float *matrix, long rows, long columns,
                        long column_begin, long column_end);

/// Columns [column_begin, column_end) of the embedding gradients: scatter-adds d_out rows into
/// the rows of the three tables they came from, in row order.
void bd_embedding_backward(float *d_word_table, float *d_position_table, float *d_type_table,
                           const float *d_out, const int32_t *ids, const int32_t *positions, const int32_t *types,
                           long rows, long columns, long column_begin, long column_end);

// MARK: - Attention of one (sequence, head)

/// Floats of scratch `bd_attention_*` needs for sequences up to `max_length` tokens.
long bd_attention_scratch_floats(long max_length, long head_dim);

/// One head of one sequence of `length` tokens; the first `query_rows` tokens are queries
/// (length, or 1 when only [CLS] is needed). q, k, v: rows with strides q_stride, kv_stride.
///   P = softmax(scale · Q Kᵀ)       (query_rows, length) written to `probabilities` (packed)
///   context = dropout(P) V          (query_rows, head_dim) rows of stride context_stride
/// Dropout element (i, j) of P is first_element + i · length + j of the mask keyed by `key`.
void bd_attention_forward(float *context, long context_stride, float *probabilities,
                          const float *q, long q_stride, const float *k, const float *v, long kv_stride,
                          long length, long head_dim, long query_rows, float scale,
                          uint64_t key, long first_element, float dropout_probability, float *scratch);

/// Gradients of bd_attention_forward: writes dq (query_rows rows), dk and dv (length rows).
void bd_attention_backward(float *dq, long dq_stride, float *dk, float *dv, long dkv_stride,
                           const float *d_context, long d_context_stride, const float *probabilities,
                           const float *q, long q_stride, const float *k, const float *v, long kv_stride,
                           long length, long head_dim, long query_rows, float scale,
                           uint64_t key, long first_element, float dropout_probability, float *scratch);

// MARK: - Optimizer

/// torch.optim.AdamW (decoupled = 1) or Adam with L2 (decoupled = 0), PyTorch's order of
/// operations, over `count` parameters: grad = g · grad_scale; AdamW: p *= decoupled_factor,
/// Adam: grad += decay · p; m += (grad - m)(1 - β1); v = v β2 + (1 - β2) grad²;
/// p -= step_size · m / (sqrt(v) / bias_correction2_sqrt + eps).
void bd_adam(float *parameters, const float *gradients, float *m, float *v, long count,
             float gradient_scale, int decoupled, float decay, float decoupled_factor,
             float one_minus_beta1, float beta2, float one_minus_beta2,
             float bias_correction2_sqrt, float step_size, float epsilon);

/// Σ x² over `count` floats: float partial sums over blocks of 4096, added in double.
double bd_sum_of_squares(const float *values, long count);

#ifdef __cplusplus
}
#endif
#endif
