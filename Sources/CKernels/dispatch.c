// Which instruction sets this CPU runs (CCPU's detector) and the table of kernels of each. No
// state: which table a rank uses is the caller's choice (Sources/Model/Compute.swift), made once
// per rank.
#include <stddef.h>
#include <CCPU.h>
#include "include/CKernels.h"

// Defined by kernels_<isa>.c (kernels_table.h).
extern const bd_kernel_table bd_kernels_baseline;
#if defined(__x86_64__)
extern const bd_kernel_table bd_kernels_avx2;
extern const bd_kernel_table bd_kernels_avx512;
#endif

int bd_isa_supported(int isa) {
    switch (isa) {
    case BD_ISA_BASELINE: return 1;
#if defined(__x86_64__)
    case BD_ISA_AVX2: return bd_cpu_has(BD_CPU_AVX2_FMA);
    case BD_ISA_AVX512: return bd_cpu_has(BD_CPU_AVX512) && bd_cpu_has(BD_CPU_AVX2_FMA);
#endif
    default: return 0;
    }
}

const bd_kernel_table *bd_kernels_for(int isa) {
    switch (isa) {
    case BD_ISA_BASELINE: return &bd_kernels_baseline;
#if defined(__x86_64__)
    case BD_ISA_AVX2: return &bd_kernels_avx2;
    case BD_ISA_AVX512: return &bd_kernels_avx512;
#endif
    default: return NULL;
    }
}
