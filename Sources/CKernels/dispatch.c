// The CPU's features and the table of kernels of each instruction set. No state: which table a
// rank uses is the caller's choice (Sources/Model/Compute.swift), made once per rank.
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
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

void bd_cpu_vendor(char vendor[13]) {
    memset(vendor, 0, 13);
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (__get_cpuid(0, &a, &b, &c, &d)) {
        memcpy(vendor, &b, 4); memcpy(vendor + 4, &d, 4); memcpy(vendor + 8, &c, 4);
    }
#endif
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
