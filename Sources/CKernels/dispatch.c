// Chooses the kernel table once, from the CPU's features, and forwards every bd_* call to it.
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include "include/CKernels.h"
#include "dispatch.h"

static int supported(int isa) {
    switch (isa) {
    case BD_ISA_BASELINE: return 1;
#if defined(__x86_64__)
    case BD_ISA_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case BD_ISA_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
            && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")
            && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    default: return 0;
    }
}

static const bd_kernel_table *table_of(int isa) {
#if defined(__x86_64__)
    if (isa == BD_ISA_AVX512) return &bd_kernels_avx512;
    if (isa == BD_ISA_AVX2) return &bd_kernels_avx2;
#endif
    return &bd_kernels_baseline;
}

static int chosen_isa = -1;
static const bd_kernel_table *chosen = &bd_kernels_baseline;
// bd_isa_select changes the calling thread's table only, so a test comparing instruction sets
// never changes what other threads compute.
static _Thread_local int thread_isa = -1;
static _Thread_local const bd_kernel_table *thread_table;
#define active (thread_table ? thread_table : chosen)

/// The best supported instruction set; BERT_DIST_KERNELS=baseline|avx2|avx512 caps it.
__attribute__((constructor)) static void choose(void) {
    int best = BD_ISA_BASELINE;
    for (int isa = BD_ISA_AVX512; isa > BD_ISA_BASELINE; isa--) if (supported(isa)) { best = isa; break; }
    const char *cap = getenv("BERT_DIST_KERNELS");
    if (cap) {
        for (int isa = BD_ISA_BASELINE; isa <= BD_ISA_AVX512; isa++)
            if (strcmp(cap, bd_isa_name(isa)) == 0 && isa < best) best = isa;
    }
    chosen_isa = best;
    chosen = table_of(best);
}

int bd_isa_active(void) {
    if (thread_isa >= 0) return thread_isa;
    if (chosen_isa < 0) choose();
    return chosen_isa;
}
int bd_isa_supported(int isa) { return supported(isa); }
int bd_isa_select(int isa) {
    if (supported(isa)) { thread_isa = isa; thread_table = table_of(isa); }
    return bd_isa_active();
}
const char *bd_isa_name(int isa) {
    switch (isa) {
    case BD_ISA_AVX2: return "avx2";
    case BD_ISA_AVX512: return "avx512";
    default: return "baseline";
    }
}
const char *bd_cpu_vendor(void) {
    static char vendor[13];
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (vendor[0] == 0 && __get_cpuid(0, &a, &b, &c, &d)) {
        memcpy(vendor, &b, 4); memcpy(vendor + 4, &d, 4); memcpy(vendor + 8, &c, 4);
        vendor[12] = 0;
    }
#endif
    return vendor;
}
int bd_cpu_family(void) {
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    unsigned family = (a >> 8) & 0xf;
    return (int)(family == 0xf ? family + ((a >> 20) & 0xff) : family);
#else
    return 0;
#endif
}
void bd_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

void bd_dropout(float *values, long count, uint64_t key, long first_element, float probability) {
    active->dropout(values, count, key, first_element, probability);
}
void bd_dropout_rows(float *values, long row_begin, long row_end, long columns, bd_row_dropout dropout) {
    active->dropout_rows(values, row_begin, row_end, columns, dropout);
}
void bd_erf(float *out, const float *x, long count) { active->erf(out, x, count); }
void bd_exp(float *out, const float *x, long count) { active->exp(out, x, count); }
void bd_gelu_forward(float *activated, float *derivative_inout, long count) { active->gelu_forward(activated, derivative_inout, count); }
void bd_multiply(float *inout, const float *factor, long count) { active->multiply(inout, factor, count); }
void bd_residual_layernorm_forward(float *sum, float *normed, float *mean, float *rstd,
                                   const float *residual, const float *weight, const float *bias,
                                   long row_begin, long row_end, long columns, float eps, bd_row_dropout dropout) {
    active->residual_layernorm_forward(sum, normed, mean, rstd, residual, weight, bias, row_begin, row_end, columns, eps, dropout);
}
void bd_embedding_layernorm_forward(float *sum, float *normed, float *mean, float *rstd,
                                    const int32_t *ids, const int32_t *positions, const int32_t *types,
                                    const float *word_table, const float *position_table, const float *type_table,
                                    const float *weight, const float *bias,
                                    long row_begin, long row_end, long columns, float eps, bd_row_dropout dropout_after) {
    active->embedding_layernorm_forward(sum, normed, mean, rstd, ids, positions, types, word_table, position_table, type_table,
                                        weight, bias, row_begin, row_end, columns, eps, dropout_after);
}
void bd_layernorm_backward_rows(float *d_input, float *d_branch, const float *d_out,
                                const float *input, const float *weight, const float *mean, const float *rstd,
                                long row_begin, long row_end, long columns, bd_row_dropout dropout_for_branch) {
    active->layernorm_backward_rows(d_input, d_branch, d_out, input, weight, mean, rstd, row_begin, row_end, columns, dropout_for_branch);
}
void bd_layernorm_backward_parameters(float *d_weight, float *d_bias, const float *d_out,
                                      const float *input, const float *mean, const float *rstd,
                                      long rows, long columns, long column_begin, long column_end) {
    active->layernorm_backward_parameters(d_weight, d_bias, d_out, input, mean, rstd, rows, columns, column_begin, column_end);
}
void bd_add_column_sums(float *sums, const float *matrix, long rows, long columns, long column_begin, long column_end) {
    active->add_column_sums(sums, matrix, rows, columns, column_begin, column_end);
}
void bd_embedding_backward(float *d_word_table, float *d_position_table, float *d_type_table,
                           const float *d_out, const int32_t *ids, const int32_t *positions, const int32_t *types,
                           long rows, long columns, long column_begin, long column_end) {
    active->embedding_backward(d_word_table, d_position_table, d_type_table, d_out, ids, positions, types,
                               rows, columns, column_begin, column_end);
}
long bd_attention_scratch_floats(long max_length, long head_dim) { return active->attention_scratch_floats(max_length, head_dim); }
void bd_attention_forward(float *context, long context_stride, float *probabilities,
                          const float *q, long q_stride, const float *k, const float *v, long kv_stride,
                          long length, long head_dim, long query_rows, float scale,
                          uint64_t key, long first_element, float dropout_probability, float *scratch) {
    active->attention_forward(context, context_stride, probabilities, q, q_stride, k, v, kv_stride, length, head_dim,
                              query_rows, scale, key, first_element, dropout_probability, scratch);
}
void bd_attention_backward(float *dq, long dq_stride, float *dk, float *dv, long dkv_stride,
                           const float *d_context, long d_context_stride, const float *probabilities,
                           const float *q, long q_stride, const float *k, const float *v, long kv_stride,
                           long length, long head_dim, long query_rows, float scale,
                           uint64_t key, long first_element, float dropout_probability, float *scratch) {
    active->attention_backward(dq, dq_stride, dk, dv, dkv_stride, d_context, d_context_stride, probabilities,
                               q, q_stride, k, v, kv_stride, length, head_dim, query_rows, scale,
                               key, first_element, dropout_probability, scratch);
}
void bd_adam(float *parameters, const float *gradients, float *m, float *v, long count,
             float gradient_scale, int decoupled, float decay, float decoupled_factor,
             float one_minus_beta1, float beta2, float one_minus_beta2,
             float bias_correction2_sqrt, float step_size, float epsilon) {
    active->adam(parameters, gradients, m, v, count, gradient_scale, decoupled, decay, decoupled_factor,
                 one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, step_size, epsilon);
}
double bd_sum_of_squares(const float *values, long count) { return active->sum_of_squares(values, count); }
