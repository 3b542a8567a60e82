// Register-only loops of one instruction: the calling thread's peak FLOP/s for it (the fp32
// peak of benchmarks/README.md is measured the same way), for benchmarks/bf16_gemm.c (built by
// benchmarks/bf16_gemm.sh). Enough independent accumulators to cover the instruction's latency
// on both FMA ports. Timed in thread CPU time.
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <CCPU.h>
#include "bf16_peak.h"
#if defined(__x86_64__)
#include <immintrin.h>
#endif

/// The calling thread's CPU time: on a shared machine, time spent descheduled is not counted.
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#if defined(__x86_64__)
// 24 chains of 4096 instructions per call: 2 ports x latency 4-6 needs at least 12.
#define CHAINS 24
#define REPEAT_CHAINS(op) do { \
    op(0) op(1) op(2) op(3) op(4) op(5) op(6) op(7) op(8) op(9) op(10) op(11) \
    op(12) op(13) op(14) op(15) op(16) op(17) op(18) op(19) op(20) op(21) op(22) op(23) } while (0)

__attribute__((target("avx512f"), noinline)) static float fma_loop(long rounds) {
    __m512 acc[CHAINS];
    __m512 x = _mm512_set1_ps(1e-8f), y = _mm512_set1_ps(0.999f);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long n = 0; n < rounds; n++) {
        for (int u = 0; u < 16; u++) {
#define FMA_OP(i) __asm__ volatile("vfmadd231ps %1, %2, %0" : "+v"(acc[i]) : "v"(x), "v"(y));
            REPEAT_CHAINS(FMA_OP);
        }
    }
    __m512 sum = acc[0];
    for (int i = 1; i < CHAINS; i++) sum = _mm512_add_ps(sum, acc[i]);
    return _mm512_reduce_add_ps(sum);
}

__attribute__((target("avx512f,avx512bf16"), noinline)) static float dpbf16_loop(long rounds) {
    __m512 acc[CHAINS];
    __m512i x = _mm512_set1_epi32(0x3f803f80), y = _mm512_set1_epi32(0x33803380);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long n = 0; n < rounds; n++) {
        for (int u = 0; u < 16; u++) {
#define DP_OP(i) __asm__ volatile("vdpbf16ps %1, %2, %0" : "+v"(acc[i]) : "v"(x), "v"(y));
            REPEAT_CHAINS(DP_OP);
        }
    }
    __m512 sum = acc[0];
    for (int i = 1; i < CHAINS; i++) sum = _mm512_add_ps(sum, acc[i]);
    return _mm512_reduce_add_ps(sum);
}

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t bytes_per_row[16];
    uint8_t rows[16];
} tile_config;

// Four independent accumulator tiles (the 2 x 2 blocking of gemm_amx.c) fed by two A and two B tiles.
__attribute__((target("amx-tile,amx-bf16"), noinline)) static float amx_loop(long rounds) {
    tile_config config;
    memset(&config, 0, sizeof config);
    config.palette = 1;
    for (int t = 0; t < 8; t++) { config.bytes_per_row[t] = 64; config.rows[t] = 16; }
    static uint16_t operand[16 * 32] __attribute__((aligned(64)));
    static float result[16 * 16] __attribute__((aligned(64)));
    for (int i = 0; i < 16 * 32; i++) operand[i] = 0x3380;   // tiny values: no overflow
    _tile_loadconfig(&config);
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    _tile_loadd(4, operand, 64); _tile_loadd(5, operand, 64);
    _tile_loadd(6, operand, 64); _tile_loadd(7, operand, 64);
    for (long n = 0; n < rounds; n++) {
        for (int u = 0; u < 16; u++) {
            _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
        }
    }
    _tile_stored(0, result, 64);
    _tile_release();
    return result[0];
}
#endif

double bg_peak_flops(int instruction, double seconds) {
#if defined(__x86_64__)
    double flops_per_round;
    float (*loop)(long);
    switch (instruction) {
    case BG_PEAK_FMA_FP32:
        if (!bd_cpu_has(BD_CPU_AVX512)) return 0;
        loop = fma_loop; flops_per_round = 16.0 * CHAINS * 2 * 16; break;
    case BG_PEAK_DPBF16:
        if (!bd_cpu_has(BD_CPU_AVX512_BF16)) return 0;
        loop = dpbf16_loop; flops_per_round = 16.0 * CHAINS * 4 * 16; break;
    case BG_PEAK_AMX:
        if (!bd_cpu_has(BD_CPU_AMX_BF16)) return 0;
        loop = amx_loop; flops_per_round = 16.0 * 4 * 2 * 16 * 16 * 32; break;
    default: return 0;
    }
    volatile float sink = loop(64);   // warm up (frequency, AMX power-up)
    long rounds = 256;
    double best = 0;
    double start = now();
    while (now() - start < seconds) {
        double t0 = now();
        sink = loop(rounds);
        double elapsed = now() - t0;
        if (elapsed < 0.01) { rounds *= 2; continue; }
        double rate = flops_per_round * (double)rounds / elapsed;
        if (rate > best) best = rate;
    }
    (void)sink;
    return best;
#else
    (void)instruction; (void)seconds;
    return 0;
#endif
}
