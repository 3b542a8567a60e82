// The kernels for x86_64 CPUs with AVX-512 F/BW/DQ/VL (Skylake-X, Ice Lake, Zen 4 and later).
#if defined(__x86_64__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c,bmi2"))), apply_to = function)
#define BD_NAME(name) bd_avx512_##name
#define BD_TABLE bd_kernels_avx512
#include "kernels_body.h"
#include "kernels_table.h"
#pragma clang attribute pop
#endif
