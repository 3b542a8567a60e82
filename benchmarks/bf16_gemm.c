// The bf16 GEMM engines on the model's products, one thread, against OpenBLAS sgemm (fp32) and
// oneDNN's dnnl_gemm_bf16bf16f32 (loaded with dlopen when libdnnl is installed). Built and run
// by benchmarks/bf16_gemm.sh; prints Markdown tables (benchmarks/bf16-gemm.md).
//
// Times are the calling thread's CPU time (the machine is shared: time spent descheduled is not
// counted), best of several runs. Per call, each bf16 engine rounds and packs what changes per
// call (the activations, and for the weight gradient both operands); the weights' packing is
// once per update and is timed separately.
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cblas.h>
#undef I   // complex.h (through cblas.h) defines I; the names below are the model's
#include "CGemm.h"
#include "bf16_peak.h"

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef int (*dnnl_gemm_bf16_fn)(char, char, long, long, long, float, const bg_bf16 *, long, const bg_bf16 *, long,
                                 float, float *, long);
static dnnl_gemm_bf16_fn dnnl_gemm_bf16;

enum { FORWARD, INPUT_GRADIENT, WEIGHT_GRADIENT };
static const char *product_names[] = {"forward x·Wᵀ", "input grad dy·W", "weight grad dyᵀ·x"};
enum { SGEMM, ONEDNN, AVX512, AMX, ENGINES };
static const char *engine_names[] = {"OpenBLAS sgemm fp32", "oneDNN bf16", "own avx512-bf16", "own amx"};

/// Buffers of one Linear layer (inFeatures -> outFeatures) for `tokens` rows.
typedef struct {
    long tokens, in, out;
    float *x, *w, *y, *dy, *dx, *dw;
    bg_bf16 *a, *b, *w_forward, *w_backward, *x16, *dy16, *w16;
} layer;

static float *random_floats(long count, unsigned seed, float scale) {
    float *v = malloc((size_t)count * sizeof(float));
    for (long i = 0; i < count; i++) {
        seed = seed * 1664525u + 1013904223u;
        v[i] = ((float)(seed >> 8) / (float)(1 << 24) * 2 - 1) * scale;
    }
    return v;
}

static layer make_layer(long tokens, long in, long out) {
    layer l = {tokens, in, out};
    l.x = random_floats(tokens * in, 1, 1); l.w = random_floats(out * in, 2, 0.05f);
    l.dy = random_floats(tokens * out, 3, 0.01f); l.y = random_floats(tokens * out, 4, 1);
    l.dx = random_floats(tokens * in, 5, 1); l.dw = random_floats(out * in, 6, 1);
    long max_depth = bg_padded_depth(in > out ? in : out);
    if (bg_padded_depth(tokens) > max_depth) max_depth = bg_padded_depth(tokens);
    long max_rows = bg_padded_rows(tokens > out ? tokens : out);
    l.a = malloc((size_t)(max_rows * max_depth) * sizeof(bg_bf16));
    l.b = malloc((size_t)bg_packed_b_count(tokens, in) * sizeof(bg_bf16));
    l.w_forward = malloc((size_t)bg_packed_b_count(in, out) * sizeof(bg_bf16));
    l.w_backward = malloc((size_t)bg_packed_b_count(out, in) * sizeof(bg_bf16));
    bg_pack_b(l.w_forward, l.w, in, 1, in, out, 0, bg_padded_depth(in) / 2, 0, bg_strip_count(out));
    bg_pack_b(l.w_backward, l.w, in, 0, out, in, 0, bg_padded_depth(out) / 2, 0, bg_strip_count(in));
    l.x16 = malloc((size_t)(tokens * in) * sizeof(bg_bf16)); l.dy16 = malloc((size_t)(tokens * out) * sizeof(bg_bf16));
    l.w16 = malloc((size_t)(out * in) * sizeof(bg_bf16));
    bg_round_floats(l.w16, l.w, out * in);
    return l;
}

static void free_layer(layer *l) {
    free(l->x); free(l->w); free(l->y); free(l->dy); free(l->dx); free(l->dw);
    free(l->a); free(l->b); free(l->w_forward); free(l->w_backward); free(l->x16); free(l->dy16); free(l->w16);
}

/// One product as the model would call it on `engine` (the activation conversion included).
static void run(int engine, int product, layer *l) {
    long T = l->tokens, I = l->in, O = l->out;
    switch (engine) {
    case SGEMM:
        if (product == FORWARD)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, O, I, 1, l->x, I, l->w, I, 1, l->y, O);
        else if (product == INPUT_GRADIENT)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, I, O, 1, l->dy, O, l->w, I, 0, l->dx, I);
        else
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, O, I, T, 1, l->dy, O, l->x, I, 1, l->dw, I);
        return;
    case ONEDNN:
        // Row-major like dnnl_sgemm; the weights' bf16 copy is made once per update.
        if (product == FORWARD) {
            bg_round_floats(l->x16, l->x, T * I);
            dnnl_gemm_bf16('N', 'T', T, O, I, 1, l->x16, I, l->w16, I, 1, l->y, O);
        } else if (product == INPUT_GRADIENT) {
            bg_round_floats(l->dy16, l->dy, T * O);
            dnnl_gemm_bf16('N', 'N', T, I, O, 1, l->dy16, O, l->w16, I, 0, l->dx, I);
        } else {
            bg_round_floats(l->dy16, l->dy, T * O);
            bg_round_floats(l->x16, l->x, T * I);
            dnnl_gemm_bf16('T', 'N', O, I, T, 1, l->dy16, O, l->x16, I, 1, l->dw, I);
        }
        return;
    default: {
        int e = engine == AMX ? BG_ENGINE_AMX : BG_ENGINE_AVX512_BF16;
        if (product == FORWARD) {
            long lda = bg_padded_depth(I);
            bg_pack_a(l->a, lda, l->x, I, 0, T, I, 0, bg_padded_rows(T));
            bg_gemm(e, l->a, lda, l->w_forward, I, O, l->y, O, 0, T, 0, bg_strip_count(O), 1);
        } else if (product == INPUT_GRADIENT) {
            long lda = bg_padded_depth(O);
            bg_pack_a(l->a, lda, l->dy, O, 0, T, O, 0, bg_padded_rows(T));
            bg_gemm(e, l->a, lda, l->w_backward, O, I, l->dx, I, 0, T, 0, bg_strip_count(I), 0);
        } else {
            long lda = bg_padded_depth(T);
            bg_pack_a(l->a, lda, l->dy, O, 1, O, T, 0, bg_padded_rows(O));
            bg_pack_b(l->b, l->x, I, 0, T, I, 0, bg_padded_depth(T) / 2, 0, bg_strip_count(I));
            bg_gemm(e, l->a, lda, l->b, T, I, l->dw, I, 0, O, 0, bg_strip_count(I), 1);
        }
    }
    }
}

static int available(int engine) {
    if (engine == ONEDNN) return dnnl_gemm_bf16 != NULL;
    if (engine == AVX512) return bg_engine_supported(BG_ENGINE_AVX512_BF16);
    if (engine == AMX) return bg_engine_supported(BG_ENGINE_AMX);
    return 1;
}

/// Best time of one call: repeats until `budget` CPU seconds are spent (at least 3 calls).
static double best_seconds(int engine, int product, layer *l, double budget) {
    run(engine, product, l);   // warm up
    double best = INFINITY, spent = 0;
    for (int n = 0; n < 3 || spent < budget; n++) {
        double t0 = cpu_now();
        run(engine, product, l);
        double t = cpu_now() - t0;
        spent += t;
        if (t < best) best = t;
        if (n > 2000) break;
    }
    return best;
}

enum { MODELS = 2, TOKEN_COUNTS = 3, SHAPES = 4, PRODUCTS = 3 };
static const struct { const char *name; long hidden, intermediate; } models[MODELS] = {{"MiniLM", 384, 1536}, {"BERT-base", 768, 3072}};
static const long token_counts[TOKEN_COUNTS] = {320, 1280, 4096};
static const char *token_names[TOKEN_COUNTS] = {"8 x 40", "32 x 40", "32 x 128"};
static const char *shape_names[SHAPES] = {"QKV", "attention out", "FFN in", "FFN out"};
static double best[MODELS][TOKEN_COUNTS][SHAPES][PRODUCTS][ENGINES], pack_best[MODELS][SHAPES];

static void shape_of(int m, int s, long *in, long *out) {
    long C = models[m].hidden, I = models[m].intermediate;
    long shapes[SHAPES][2] = {{C, 3 * C}, {C, C}, {C, I}, {I, C}};
    *in = shapes[s][0]; *out = shapes[s][1];
}

/// One sweep over every case; keeps each case's best time over the sweeps.
static void sweep(double budget) {
    for (int m = 0; m < MODELS; m++)
        for (int t = 0; t < TOKEN_COUNTS; t++)
            for (int s = 0; s < SHAPES; s++) {
                long in, out;
                shape_of(m, s, &in, &out);
                layer l = make_layer(token_counts[t], in, out);
                for (int p = 0; p < PRODUCTS; p++)
                    for (int e = 0; e < ENGINES; e++) {
                        if (!available(e)) continue;
                        double seconds = best_seconds(e, p, &l, budget);
                        if (seconds < best[m][t][s][p][e]) best[m][t][s][p][e] = seconds;
                    }
                if (t == 0) {   // once per update: both packed copies of the weight
                    for (int r = 0; r < 5; r++) {
                        double t0 = cpu_now();
                        bg_pack_b(l.w_forward, l.w, in, 1, in, out, 0, bg_padded_depth(in) / 2, 0, bg_strip_count(out));
                        bg_pack_b(l.w_backward, l.w, in, 0, out, in, 0, bg_padded_depth(out) / 2, 0, bg_strip_count(in));
                        double e = cpu_now() - t0;
                        if (e < pack_best[m][s]) pack_best[m][s] = e;
                    }
                }
                free_layer(&l);
            }
}

int main(int argc, char **argv) {
    double budget = argc > 1 ? atof(argv[1]) : 0.3;
    int sweeps = argc > 2 ? atoi(argv[2]) : 3;
    openblas_set_num_threads(1);
    void *dnnl = dlopen("libdnnl.so.2", RTLD_NOW);
    if (dnnl) dnnl_gemm_bf16 = (dnnl_gemm_bf16_fn)dlsym(dnnl, "dnnl_gemm_bf16bf16f32");
    for (int m = 0; m < MODELS; m++)
        for (int s = 0; s < SHAPES; s++) {
            pack_best[m][s] = INFINITY;
            for (int t = 0; t < TOKEN_COUNTS; t++)
                for (int p = 0; p < PRODUCTS; p++)
                    for (int e = 0; e < ENGINES; e++) best[m][t][s][p][e] = INFINITY;
        }

    // Peaks before, between and after the sweeps: the best of all.
    double peaks[3] = {0, 0, 0};
    for (int round = 0; round <= sweeps; round++) {
        for (int i = 0; i < 3; i++) { double p = bg_peak_flops(i, 1.0); if (p > peaks[i]) peaks[i] = p; }
        if (round < sweeps) sweep(budget);
    }

    printf("OpenBLAS kernels: %s; oneDNN: %s. Best of %d sweeps, thread CPU time.\n\n", openblas_get_corename(),
           dnnl_gemm_bf16 ? "libdnnl.so.2 dnnl_gemm_bf16bf16f32" : "not installed", sweeps);
    printf("## Peaks (one core, register-only loops)\n\n| instruction | GFLOP/s per core |\n| --- | ---: |\n");
    const char *peak_names[] = {"vfmadd231ps zmm (fp32)", "vdpbf16ps zmm (bf16)", "tdpbf16ps (AMX bf16)"};
    for (int i = 0; i < 3; i++) printf("| %s | %.0f |\n", peak_names[i], peaks[i] / 1e9);
    printf("\n");

    for (int m = 0; m < MODELS; m++) {
        double pack_seconds = 0;
        for (int s = 0; s < SHAPES; s++) pack_seconds += pack_best[m][s];
        for (int t = 0; t < TOKEN_COUNTS; t++) {
            printf("### %s (C=%ld, I=%ld), T = %s = %ld tokens: GFLOP/s, one thread\n\n", models[m].name,
                   models[m].hidden, models[m].intermediate, token_names[t], token_counts[t]);
            printf("| product | in -> out |");
            for (int e = 0; e < ENGINES; e++) if (available(e)) printf(" %s |", engine_names[e]);
            printf("\n| --- | --- |");
            for (int e = 0; e < ENGINES; e++) if (available(e)) printf(" ---: |");
            printf("\n");
            double total_flops = 0, total_seconds[ENGINES] = {0};
            for (int s = 0; s < SHAPES; s++) {
                long in, out;
                shape_of(m, s, &in, &out);
                double flops = 2.0 * (double)token_counts[t] * (double)in * (double)out;
                for (int p = 0; p < PRODUCTS; p++) {
                    printf("| %s | %s %ld -> %ld |", product_names[p], shape_names[s], in, out);
                    for (int e = 0; e < ENGINES; e++) {
                        if (!available(e)) continue;
                        double rate = flops / best[m][t][s][p][e];
                        total_seconds[e] += best[m][t][s][p][e];
                        if (e == SGEMM) printf(" %.0f (%.0f%% of fp32 FMA) |", rate / 1e9, 100 * rate / peaks[0]);
                        else if (e == AVX512) printf(" %.0f (%.0f%% of vdpbf16ps) |", rate / 1e9, 100 * rate / peaks[1]);
                        else printf(" %.0f (%.0f%% of AMX) |", rate / 1e9, 100 * rate / peaks[2]);
                    }
                    printf("\n");
                    total_flops += flops;
                }
            }
            printf("| **all 12** | |");
            for (int e = 0; e < ENGINES; e++) if (available(e)) printf(" **%.0f** |", total_flops / total_seconds[e] / 1e9);
            printf("\n\n");
        }
        printf("%s: packing the 4 weights of one encoder layer into both layouts (once per update): %.2f ms, one thread.\n\n",
               models[m].name, 1e3 * pack_seconds);
    }
    return 0;
}
