// Engine detection, layout arithmetic and the bg_gemm entry point.
#include <stdio.h>
#include <stdlib.h>
#include "engines.h"
#if defined(__x86_64__)
#include <cpuid.h>
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

static int cpu_has(int leaf, int subleaf, int reg, int bit) {
#if defined(__x86_64__)
    unsigned r[4];
    if (!__get_cpuid_count(leaf, subleaf, &r[0], &r[1], &r[2], &r[3])) return 0;
    return (r[reg] >> bit) & 1;
#else
    (void)leaf; (void)subleaf; (void)reg; (void)bit;
    return 0;
#endif
}

/// The operating system saves the AVX-512 state (XCR0 bits 5-7 with 1-2): without it the
/// instructions fault even where cpuid lists them.
static int os_saves_avx512(void) {
#if defined(__x86_64__)
    if (!cpu_has(1, 0, 2, 27)) return 0;              // OSXSAVE
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & 0xe6) == 0xe6;
#else
    return 0;
#endif
}

static int avx512_bf16(void) {
    return os_saves_avx512()
        && cpu_has(7, 0, 1, 16) && cpu_has(7, 0, 1, 17)   // AVX512F, AVX512DQ
        && cpu_has(7, 0, 1, 30) && cpu_has(7, 0, 1, 31)   // AVX512BW, AVX512VL
        && cpu_has(7, 1, 0, 5);                           // AVX512_BF16 (leaf 7 subleaf 1 eax)
}

static int amx_bf16(void) {
    return cpu_has(7, 0, 3, 24) && cpu_has(7, 0, 3, 22)   // AMX-TILE, AMX-BF16 (leaf 7 edx)
        && os_saves_avx512() && bg_amx_permitted();
}

int bg_amx_permitted(void) {
    // Linux (>= 5.16) hands out the 8 KB tile state per process on request; the answer is the
    // same for every thread and every later call, so it is asked once.
    static _Atomic int permitted = -1;   // every thread computes the same answer
    if (permitted < 0) {
#if defined(__linux__) && defined(__x86_64__)
        enum { ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
        permitted = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
#else
        permitted = 0;
#endif
    }
    return permitted;
}

int bg_engine_supported(int engine) {
    static _Atomic int supported[BG_ENGINE_COUNT] = {-1, -1, -1};   // every thread computes the same answer
    if (engine < 0 || engine >= BG_ENGINE_COUNT) return 0;
    if (supported[engine] < 0) {
        supported[engine] = engine == BG_ENGINE_SOFTWARE ? 1
                          : engine == BG_ENGINE_AVX512_BF16 ? avx512_bf16()
                          : amx_bf16();
    }
    return supported[engine];
}

int bg_engine_fastest(void) {
    if (bg_engine_supported(BG_ENGINE_AMX)) return BG_ENGINE_AMX;
    if (bg_engine_supported(BG_ENGINE_AVX512_BF16)) return BG_ENGINE_AVX512_BF16;
    return BG_ENGINE_SOFTWARE;
}

int bg_cpu_has_bf16(void) {
    return bg_engine_supported(BG_ENGINE_AVX512_BF16) || bg_engine_supported(BG_ENGINE_AMX);
}

const char *bg_engine_name(int engine) {
    switch (engine) {
    case BG_ENGINE_SOFTWARE: return "software";
    case BG_ENGINE_AVX512_BF16: return "avx512-bf16";
    case BG_ENGINE_AMX: return "amx";
    default: return "unknown";
    }
}

long bg_padded_depth(long depth) { return (depth + BG_DEPTH_ALIGNMENT - 1) / BG_DEPTH_ALIGNMENT * BG_DEPTH_ALIGNMENT; }
long bg_padded_rows(long rows) { return (rows + BG_ROW_ALIGNMENT - 1) / BG_ROW_ALIGNMENT * BG_ROW_ALIGNMENT; }
long bg_strip_count(long columns) { return (columns + BG_STRIP_COLUMNS - 1) / BG_STRIP_COLUMNS; }
long bg_packed_b_count(long depth, long columns) { return bg_strip_stride(depth) * bg_strip_count(columns); }

void bg_gemm(int engine, const bg_bf16 *a, long lda, const bg_bf16 *packed_b, long depth, long columns,
             float *c, long ldc, long row_begin, long row_end, long strip_begin, long strip_end,
             int accumulate) {
    if (!bg_engine_supported(engine)) {
        fprintf(stderr, "error: bg_gemm: the %s engine is not supported on this CPU\n", bg_engine_name(engine));
        abort();
    }
    if (strip_end > bg_strip_count(columns)) strip_end = bg_strip_count(columns);
    if (row_begin >= row_end || strip_begin >= strip_end) return;
    switch (engine) {
    case BG_ENGINE_AMX:
        bg_gemm_amx(a, lda, packed_b, depth, columns, c, ldc, row_begin, row_end, strip_begin, strip_end, accumulate);
        break;
    case BG_ENGINE_AVX512_BF16:
        bg_gemm_avx512_bf16(a, lda, packed_b, depth, columns, c, ldc, row_begin, row_end, strip_begin, strip_end, accumulate);
        break;
    default:
        bg_gemm_software(a, lda, packed_b, depth, columns, c, ldc, row_begin, row_end, strip_begin, strip_end, accumulate);
    }
}
