// Which engines this CPU runs (CCPU's detector), layout arithmetic and the bg_gemm entry point.
#include <stdio.h>
#include <stdlib.h>
#include <CCPU.h>
#include "engines.h"

int bg_engine_supported(int engine) {
    switch (engine) {
    case BG_ENGINE_SOFTWARE: return 1;
    case BG_ENGINE_AVX512_BF16: return bd_cpu_has(BD_CPU_AVX512_BF16);
    case BG_ENGINE_AMX: return bd_cpu_has(BD_CPU_AMX_BF16);
    default: return 0;
    }
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
