// The table of kernel entry points one instruction set provides (see kernels_body.h).
#ifndef BD_DISPATCH_H
#define BD_DISPATCH_H
#include <stdint.h>
#include "include/CKernels.h"

typedef struct {
    void (*dropout)(float *, long, uint64_t, long, float);
    void (*dropout_rows)(float *, long, long, long, bd_row_dropout);
    void (*erf)(float *, const float *, long);
    void (*exp)(float *, const float *, long);
    void (*gelu_forward)(float *, float *, long);
    void (*multiply)(float *, const float *, long);
    void (*residual_layernorm_forward)(float *, float *, float *, float *, const float *, const float *, const float *,
                                       long, long, long, float, bd_row_dropout);
    void (*embedding_layernorm_forward)(float *, float *, float *, float *, const int32_t *, const int32_t *, const int32_t *,
                                        const float *, const float *, const float *, const float *, const float *,
                                        long, long, long, float, bd_row_dropout);
    void (*layernorm_backward_rows)(float *, float *, const float *, const float *, const float *, const float *, const float *,
                                    long, long, long, bd_row_dropout);
    void (*layernorm_backward_parameters)(float *, float *, const float *, const float *, const float *, const float *,
                                          long, long, long, long);
    void (*add_column_sums)(float *, const float *, long, long, long, long);
    void (*embedding_backward)(float *, float *, float *, const float *, const int32_t *, const int32_t *, const int32_t *,
                               long, long, long, long);
    long (*attention_scratch_floats)(long, long);
    void (*attention_forward)(float *, long, float *, const float *, long, const float *, const float *, long,
                              long, long, long, float, uint64_t, long, float, float *);
    void (*attention_backward)(float *, long, float *, float *, long, const float *, long, const float *,
                               const float *, long, const float *, const float *, long,
                               long, long, long, float, uint64_t, long, float, float *);
    void (*adam)(float *, const float *, float *, float *, long, float, int, float, float, float, float, float, float, float, float);
    double (*sum_of_squares)(const float *, long);
} bd_kernel_table;

extern const bd_kernel_table bd_kernels_baseline;
#if defined(__x86_64__)
extern const bd_kernel_table bd_kernels_avx2;
extern const bd_kernel_table bd_kernels_avx512;
#endif

#endif
