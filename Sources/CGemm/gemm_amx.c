// The AMX engine: `tdpbf16ps` on 2 x 2 tiles of 16 x 16 fp32 accumulators (32 rows x 2 strips),
// 16 depth pairs per step: A tiles are 16 rows of 32 bf16 read straight from the A rows, B tiles
// the 16 x 64 bytes of one strip's next 16 pairs (contiguous in the packed layout). Edge tiles
// (fewer than 16 rows in the range, a partial last strip) go through a 1 KB buffer on the stack.
// Measured on Emerald Rapids against this plain loop (benchmarks/bf16-gemm.md): interleaving
// each tile load with the product that needs it, software prefetch of the next B tiles, and
// depth blocking to keep A in L1 were each slower on the model's shapes; a 512 KB column block
// measured the same as 1 MB, 2 MB slower.
#include <string.h>
#include "engines.h"
#if defined(__x86_64__)
#include <immintrin.h>

/// The 64-byte tile configuration of `ldtilecfg` (palette 1).
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t bytes_per_row[16];
    uint8_t rows[16];
} tile_config;

enum { C00 = 0, C01 = 1, C10 = 2, C11 = 3, A0 = 4, A1 = 5, B0 = 6, B1 = 7 };

/// Strips per column block, so that one block of B (swept once per 32 rows) is about 1 MB.
static long block_strips(long depth) {
    long strips = (1L << 20) / (bg_strip_stride(depth) * 2);
    strips &= ~1L;
    return strips < 2 ? 2 : strips;
}

#pragma clang attribute push(__attribute__((target("amx-tile,amx-bf16,avx512f"))), apply_to = function)

/// Where tile (row r, strip s) of C lives: in C itself, or in `edge` (16 x 16) when the tile
/// reaches past the range's last row or the matrix's last column.
typedef struct { float *at; long stride; int rows, width, edge; } c_tile;

static inline c_tile c_tile_at(float *c, long ldc, long r, long s, long row_end, long columns, float *edge) {
    int rows = row_end - r < 16 ? (int)(row_end - r) : 16;
    int width = columns - s * 16 < 16 ? (int)(columns - s * 16) : 16;
    float *at = c + r * ldc + s * 16;
    if (rows == 16 && width == 16) return (c_tile){at, ldc, rows, width, 0};
    return (c_tile){edge, 16, rows, width, 1};
}

static inline void edge_in(c_tile t, const float *c, long ldc, long r, long s, int accumulate) {
    if (t.edge && accumulate) {
        memset(t.at, 0, 16 * 16 * sizeof(float));
        for (int i = 0; i < t.rows; i++) memcpy(t.at + i * 16, c + (r + i) * ldc + s * 16, (size_t)t.width * 4);
    }
}

static inline void edge_out(c_tile t, float *c, long ldc, long r, long s) {
    if (t.edge)
        for (int i = 0; i < t.rows; i++) memcpy(c + (r + i) * ldc + s * 16, t.at + i * 16, (size_t)t.width * 4);
}

void bg_gemm_amx(BG_GEMM_PARAMETERS) {
    tile_config config;
    memset(&config, 0, sizeof config);
    config.palette = 1;
    for (int t = 0; t < 8; t++) { config.bytes_per_row[t] = 64; config.rows[t] = 16; }
    _tile_loadconfig(&config);

    long steps = bg_padded_depth(depth) / 32, strip_stride = bg_strip_stride(depth);
    long a_stride = lda * (long)sizeof(bg_bf16);
    float edges[4][16 * 16] __attribute__((aligned(64)));
    long block = block_strips(depth);
    for (long s_block = strip_begin; s_block < strip_end; s_block += block) {
        long s_block_end = s_block + block < strip_end ? s_block + block : strip_end;
        for (long r = row_begin; r < row_end; r += 32) {
            int two_rows = r + 16 < row_end;
            for (long s = s_block; s < s_block_end; s += 2) {
                int two_strips = s + 1 < s_block_end;
                c_tile t00 = c_tile_at(c, ldc, r, s, row_end, columns, edges[0]);
                c_tile t01 = c_tile_at(c, ldc, r, s + 1, row_end, columns, edges[1]);
                c_tile t10 = c_tile_at(c, ldc, r + 16, s, row_end, columns, edges[2]);
                c_tile t11 = c_tile_at(c, ldc, r + 16, s + 1, row_end, columns, edges[3]);
                edge_in(t00, c, ldc, r, s, accumulate);
                if (two_strips) edge_in(t01, c, ldc, r, s + 1, accumulate);
                if (two_rows) edge_in(t10, c, ldc, r + 16, s, accumulate);
                if (two_rows && two_strips) edge_in(t11, c, ldc, r + 16, s + 1, accumulate);
                if (accumulate) {
                    _tile_loadd(C00, t00.at, t00.stride * 4);
                    if (two_strips) _tile_loadd(C01, t01.at, t01.stride * 4);
                    if (two_rows) _tile_loadd(C10, t10.at, t10.stride * 4);
                    if (two_rows && two_strips) _tile_loadd(C11, t11.at, t11.stride * 4);
                } else {
                    _tile_zero(C00); _tile_zero(C01); _tile_zero(C10); _tile_zero(C11);
                }
                const bg_bf16 *a0 = a + r * lda, *a1 = a0 + 16 * lda;
                const bg_bf16 *b0 = packed_b + s * strip_stride, *b1 = b0 + strip_stride;
                if (two_rows && two_strips) {
                    for (long k = 0; k < steps; k++) {
                        _tile_loadd(A0, a0 + k * 32, a_stride);
                        _tile_loadd(B0, b0 + k * 512, 64);
                        _tile_loadd(B1, b1 + k * 512, 64);
                        _tile_dpbf16ps(C00, A0, B0);
                        _tile_loadd(A1, a1 + k * 32, a_stride);
                        _tile_dpbf16ps(C01, A0, B1);
                        _tile_dpbf16ps(C10, A1, B0);
                        _tile_dpbf16ps(C11, A1, B1);
                    }
                } else {
                    for (long k = 0; k < steps; k++) {
                        _tile_loadd(A0, a0 + k * 32, a_stride);
                        _tile_loadd(B0, b0 + k * 512, 64);
                        _tile_dpbf16ps(C00, A0, B0);
                        if (two_strips) { _tile_loadd(B1, b1 + k * 512, 64); _tile_dpbf16ps(C01, A0, B1); }
                        if (two_rows) { _tile_loadd(A1, a1 + k * 32, a_stride); _tile_dpbf16ps(C10, A1, B0); }
                    }
                }
                _tile_stored(C00, t00.at, t00.stride * 4);
                edge_out(t00, c, ldc, r, s);
                if (two_strips) { _tile_stored(C01, t01.at, t01.stride * 4); edge_out(t01, c, ldc, r, s + 1); }
                if (two_rows) { _tile_stored(C10, t10.at, t10.stride * 4); edge_out(t10, c, ldc, r + 16, s); }
                if (two_rows && two_strips) { _tile_stored(C11, t11.at, t11.stride * 4); edge_out(t11, c, ldc, r + 16, s + 1); }
            }
        }
    }
    // Back to the initial state: the 8 KB of tile data need not be saved on context switches.
    _tile_release();
}
#pragma clang attribute pop

#else
void bg_gemm_amx(BG_GEMM_PARAMETERS) {
    bg_gemm_software(a, lda, packed_b, depth, columns, c, ldc, row_begin, row_end, strip_begin, strip_end, accumulate);
}
#endif
