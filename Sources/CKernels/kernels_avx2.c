// The kernels for x86_64 CPUs with AVX2 and FMA (Haswell, Zen and later).
#if defined(__x86_64__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,bmi2"))), apply_to = function)
#define BD_NAME(name) bd_avx2_##name
#define BD_TABLE bd_kernels_avx2
#include "kernels_body.h"
#include "kernels_table.h"
#pragma clang attribute pop
#endif
