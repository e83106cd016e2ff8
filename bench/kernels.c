/* bench_kernels: every flow kernel, every ISA this build and CPU have,
 * single-threaded, on buffers larger than the last-level cache (64 MiB per
 * array unless --mib says otherwise). Prints a markdown table: time (best
 * of several runs), GB/s (bytes read + written, no write-allocate) or
 * GFLOP/s, the ratio to ref, and the machine's bound measured in the same
 * run: memcpy bandwidth (read + write) for memory-bound kernels, one-core
 * FMA peak for the compute-bound ones.
 *
 * Times are the thread's CPU time unless --wall.
 *
 *   build-simd/bench_kernels [--mib N] [--min-time S] [--wall]
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

/* The thread's CPU time: on a shared machine, time slices given to other
 * processes on this core do not count (they would hit long runs, mostly
 * ref's, harder than short ones). --wall measures wall-clock time. */
static clockid_t g_clock = CLOCK_THREAD_CPUTIME_ID;
static double now(void) {
    struct timespec ts;
    clock_gettime(g_clock, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static double g_min_time = 0.4;

/* Evicts the caches between runs: reads a buffer bigger than the LLC. */
static float *g_flush;
static int64_t g_flush_n;
static volatile float g_flush_sink;
static void flush_caches(void) {
    float s = 0;
    for (int64_t i = 0; i < g_flush_n; i += 16) s += g_flush[i];
    g_flush_sink = s;
}

/* Best time of reps lasting at least g_min_time in all (3 runs at least);
 * reset (untimed) restores in-place inputs before each run. */
typedef void (*run_fn)(void *ctx);
static double time_once(run_fn run, run_fn reset, void *ctx) {
    if (reset) reset(ctx);
    if (g_flush) flush_caches();
    const double t0 = now();
    run(ctx);
    return now() - t0;
}
static double best_time(run_fn run, run_fn reset, void *ctx) {
    double best = 1e30, total = 0;
    for (int r = 0; r < 3 || total < g_min_time; r++) {
        if (reset) reset(ctx);
        if (g_flush) flush_caches();
        const double t0 = now();
        run(ctx);
        const double t = now() - t0;
        total += t;
        if (t < best) best = t;
        if (r > 200) break;
    }
    return best;
}

static float *buf(int64_t n, float lo, float hi, uint64_t seed) {
    float *p = aligned_alloc(64, (size_t)((n * 4 + 63) / 64 * 64));
    uint64_t s = seed * 2654435761u + 1;
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        p[i] = lo + (hi - lo) * (float)((s >> 11) * 0x1p-53);
    }
    return p;
}

/* ---- the machine's bounds ---- */

typedef struct { float *a, *b; int64_t n; } copy_ctx;
static void run_copy(void *c) {
    copy_ctx *k = c;
    memcpy(k->b, k->a, (size_t)k->n * 4);
}

static volatile float g_sink;
#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static double fma_peak_x86(void) {
    __m256 acc[10];
    for (int k = 0; k < 10; k++) acc[k] = _mm256_set1_ps((float)k);
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    const int64_t iters = 20000000;
    const double t0 = now();
    for (int64_t i = 0; i < iters; i++)
        for (int k = 0; k < 10; k++) acc[k] = _mm256_fmadd_ps(acc[k], a, b);
    const double t = now() - t0;
    float s = 0, o[8];
    for (int k = 0; k < 10; k++) {
        _mm256_storeu_ps(o, acc[k]);
        s += o[0];
    }
    g_sink = s;
    return iters * 10.0 * 16 / t * 1e-9;
}
#endif
#if defined(__aarch64__)
static double fma_peak_arm(void) {
    float32x4_t acc[10];
    for (int k = 0; k < 10; k++) acc[k] = vdupq_n_f32((float)k);
    const float32x4_t a = vdupq_n_f32(0.999999f), b = vdupq_n_f32(1e-7f);
    const int64_t iters = 20000000;
    const double t0 = now();
    for (int64_t i = 0; i < iters; i++)
        for (int k = 0; k < 10; k++) acc[k] = vfmaq_f32(b, acc[k], a);
    const double t = now() - t0;
    float s = 0;
    for (int k = 0; k < 10; k++) s += vgetq_lane_f32(acc[k], 0);
    g_sink = s;
    return iters * 10.0 * 8 / t * 1e-9;
}
#endif

static double fma_peak(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return fma_peak_x86();
#elif defined(__aarch64__)
    return fma_peak_arm();
#endif
    return 0;
}

/* ---- kernel cases ---- */

typedef struct {
    const gt_kernels *k;
    int C, H, W, B;
    int64_t n;
    float *x, *y, *z, *w, *orig, *e, *eb;
    double sum;
} kctx;

/* affine runs image after image (as the runtime does), over n floats. */
static void r_affine(void *c) {
    kctx *k = c;
    const int64_t img = (int64_t)k->C * k->H;
    for (int64_t o = 0; o + img <= k->n; o += img) k->k->affine(k->w, k->e, k->C, k->H, k->x + o, k->y + o);
}
static void r_squeeze(void *c) { kctx *k = c; k->k->squeeze(k->x, k->y, k->C, k->H, k->W); }
static void r_unsqueeze(void *c) { kctx *k = c; k->k->unsqueeze(k->x, k->y, k->C, k->H, k->W); }
static void r_cfwd(void *c) { kctx *k = c; k->sum += k->k->coupling_fwd(k->x, k->y, k->z, k->n); }
static void r_crev(void *c) { kctx *k = c; k->k->coupling_rev(k->x, k->y, k->z, k->n); }
static void r_add(void *c) { kctx *k = c; k->k->add(k->x, k->y, k->n, 1.0f); }
static void r_glogp(void *c) { kctx *k = c; k->sum += k->k->gauss_logp(k->x, k->y, k->z, k->w, k->n); }
static void r_gfrom(void *c) { kctx *k = c; k->k->gauss_from_eps(k->w, k->x, k->y, k->z, k->n); }
static void r_edge(void *c) { kctx *k = c; k->k->edge_bias(k->x, k->e, k->C, k->H, k->W, 1); }
/* As the runtime calls it: by 64-channel output chunks of 512-wide layers
 * (so the edge table, 9 x 512, stays in cache). */
static void r_edgeb(void *c) {
    kctx *k = c;
    const int64_t chunk = (int64_t)64 * k->H * k->W;
    for (int64_t j = 0; j < k->C / 64; j++)
        k->k->edge_bias_blocked(k->x + j * chunk, k->eb + (j % 8) * 64, 512, 64, k->H, k->W, k->B, 1);
}
static void r_noise(void *c) { kctx *k = c; k->k->normal_noise(42, 7, 0, k->n, 1.0f, k->y); }
static void reset_x(void *c) { kctx *k = c; memcpy(k->x, k->orig, (size_t)k->n * 4); }
static void reset_x_chw(void *c) { kctx *k = c; memcpy(k->x, k->orig, (size_t)k->C * k->H * k->W * 4); }

typedef struct {
    const char *name;
    char shape[48];
    run_fn run, reset;
    double bytes, flops; /* per call */
    int compute_bound;   /* compare with FMA peak rather than copy bandwidth */
    int C, hw;           /* affine: per-image shape; edge_bias_blocked: channels, H = W */
    int B;               /* edge_bias_blocked: channel block */
} kcase;

int main(int argc, char **argv) {
    int64_t mib = 64;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mib") && i + 1 < argc) mib = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--min-time") && i + 1 < argc) g_min_time = atof(argv[++i]);
        else if (!strcmp(argv[i], "--wall")) g_clock = CLOCK_MONOTONIC;
        else {
            fprintf(stderr, "usage: %s [--mib N (MiB per array, default 64)] [--min-time S] [--wall]\n", argv[0]);
            return 2;
        }
    }
    const int64_t n = mib * 1024 * 1024 / 4;
    const gt_kernels *isas[4];
    int n_isa = 0;
    const char *names[] = {"ref", "avx2", "neon"}, *why;
    for (int i = 0; i < 3; i++)
        if ((isas[n_isa] = kernels_isa(names[i], &why))) n_isa++;

    g_flush_n = n;
    g_flush = buf(n, 0, 1, 9);
    copy_ctx cc = {buf(n, -1, 1, 1), buf(n, -1, 1, 2), n};
    const double copy_gbs = 2.0 * n * 4 / best_time(run_copy, NULL, &cc) * 1e-9;
    const double peak = fma_peak();
    free(cc.a);
    free(cc.b);
    printf("# bench_kernels: %lld MiB per array, 1 thread, %s time; memcpy %.1f GB/s (read+write), FMA peak %.1f GFLOP/s\n\n",
           (long long)mib, g_clock == CLOCK_MONOTONIC ? "wall" : "CPU", copy_gbs, peak);
    printf("| kernel | shape | ISA | ms | GB/s | GFLOP/s | x ref | bound | of bound |\n");
    printf("|---|---|---|---:|---:|---:|---:|---|---:|\n");

    kctx k = {0};
    k.x = buf(n, -2, 2, 3);
    k.y = buf(n, -4, 4, 4);
    k.z = buf(n, -1, 1, 5);
    k.w = buf(n, -1, 1, 6);
    k.orig = malloc((size_t)n * 4);
    memcpy(k.orig, k.x, (size_t)n * 4);
    k.e = buf(9 * 256, -1, 1, 7);

    kcase cs[32];
    int nc = 0;
    /* Per-image shapes of a 256x256x3 Glow (L=6: 12@128x128 ... 192@8x8) and
     * of Fashion-MNIST (4@14x14), image after image through n floats; the
     * larger channel counts are capped at ~0.5 GFLOP per run. */
    const int shapes[][2] = {{4, 196}, {12, 16384}, {24, 4096}, {48, 1024}, {96, 256}, {192, 64}};
    for (int a = 0; a < 6; a++) {
        const int C = shapes[a][0], hw = shapes[a][1];
        int64_t imgs = n / ((int64_t)C * hw);
        const int64_t cap = (int64_t)1 << 28;
        if (imgs * C * C * hw > cap) imgs = cap / ((int64_t)C * C * hw);
        kcase c = {"affine", "", r_affine, NULL, 2.0 * C * hw * imgs * 4, 2.0 * C * C * hw * imgs, 0, C, hw, 0};
        c.compute_bound = c.flops / c.bytes > peak / copy_gbs;
        snprintf(c.shape, sizeof c.shape, "C=%d hw=%d x%lld", C, hw, (long long)imgs);
        cs[nc++] = c;
    }
    const int sqC = 16, sqH = 2 * (int)floor(sqrt((double)n / sqC) / 2);
    {
        kcase c = {"squeeze", "", r_squeeze, NULL, 2.0 * sqC * sqH * sqH * 4, 0, 0, 0, 0, 0};
        snprintf(c.shape, sizeof c.shape, "C=%d %dx%d", sqC, sqH, sqH);
        cs[nc++] = c;
        c.name = "unsqueeze";
        c.run = r_unsqueeze;
        cs[nc++] = c;
    }
    const struct { const char *name; run_fn run, reset; int arrays; } ew[] = {
        {"coupling_fwd", r_cfwd, reset_x, 4}, {"coupling_rev", r_crev, reset_x, 4}, {"add", r_add, reset_x, 3},
        {"gauss_logp", r_glogp, NULL, 4},     {"gauss_from_eps", r_gfrom, NULL, 4}};
    for (int i = 0; i < 5; i++) {
        kcase c = {ew[i].name, "", ew[i].run, ew[i].reset, (double)ew[i].arrays * n * 4, 0, 0, 0, 0, 0};
        snprintf(c.shape, sizeof c.shape, "n=%lld", (long long)n);
        cs[nc++] = c;
    }
    const int eC = 64, eH = (int)floor(sqrt((double)n / eC));
    {
        kcase c = {"edge_bias+relu", "", r_edge, reset_x_chw, 2.0 * eC * eH * eH * 4, 0, 0, 0, 0, 0};
        snprintf(c.shape, sizeof c.shape, "C=%d %dx%d", eC, eH, eH);
        cs[nc++] = c;
    }
    /* The runtime's first-layer edge pass: blocked activations (nChw16c,
     * nChw8c) at the sizes of a 32x32 Glow's levels, channels filling n. */
    const int eb_shapes[][2] = {{16, 16}, {16, 4}, {8, 16}}; /* B, H = W */
    for (int a = 0; a < 3; a++) {
        const int B = eb_shapes[a][0], S = eb_shapes[a][1];
        const int C = (int)(n / ((int64_t)S * S) / 64 * 64);
        kcase c = {"edge_bias_blocked+relu", "", r_edgeb, reset_x_chw, 2.0 * C * S * S * 4, 0, 0, C, S, B};
        snprintf(c.shape, sizeof c.shape, "C=%d %dx%d B=%d", C, S, S, B);
        cs[nc++] = c;
    }
    {
        const int64_t nn = n / 8;
        kcase c = {"normal_noise", "", r_noise, NULL, (double)nn * 4, 0, 1, 0, 0, 0};
        snprintf(c.shape, sizeof c.shape, "n=%lld", (long long)nn);
        cs[nc++] = c;
    }

    k.eb = buf(9 * 512, -1, 1, 8);
    /* ISAs take turns run by run, so that a busy machine slows them alike;
     * each keeps its best time. */
    for (int c = 0; c < nc; c++) {
        double best[4] = {1e30, 1e30, 1e30, 1e30}, spent = 0;
        for (int round = 0; round < 3 || (spent < g_min_time * n_isa && round < 200); round++)
            for (int i = 0; i < n_isa; i++) {
                k.k = isas[i];
                k.n = n;
                if (cs[c].run == r_affine) {
                    k.C = cs[c].C;
                    k.H = cs[c].hw;
                    k.n = (int64_t)(cs[c].bytes / 8);
                } else if (cs[c].run == r_squeeze || cs[c].run == r_unsqueeze) {
                    k.C = sqC; k.H = k.W = sqH; /* unsqueeze: 4C channels of H/2 x W/2, the same size */
                } else if (cs[c].run == r_edge) {
                    k.C = eC; k.H = k.W = eH;
                } else if (cs[c].run == r_edgeb) {
                    k.C = cs[c].C; k.H = k.W = cs[c].hw; k.B = cs[c].B;
                } else if (cs[c].run == r_noise) {
                    k.n = n / 8;
                }
                const double t = time_once(cs[c].run, cs[c].reset, &k);
                spent += t;
                if (t < best[i]) best[i] = t;
            }
        for (int i = 0; i < n_isa; i++) {
            const double t = best[i], t_ref = best[0];
            const double gbs = cs[c].bytes / t * 1e-9, gfs = cs[c].flops / t * 1e-9;
            char bound[48], frac[16] = "-";
            if (cs[c].run == r_noise) {
                snprintf(bound, sizeof bound, "compute (%.0f Mnum/s)", (double)(n / 8) / t * 1e-6);
            } else if (cs[c].compute_bound) {
                snprintf(bound, sizeof bound, "FMA %.1f GFLOP/s", peak);
                snprintf(frac, sizeof frac, "%.0f%%", 100 * gfs / peak);
            } else {
                snprintf(bound, sizeof bound, "copy %.1f GB/s", copy_gbs);
                snprintf(frac, sizeof frac, "%.0f%%", 100 * gbs / copy_gbs);
            }
            char gf[16] = "-";
            if (cs[c].flops > 0) snprintf(gf, sizeof gf, "%.2f", gfs);
            printf("| %s | %s | %s | %.2f | %.2f | %s | %.2f | %s | %s |\n", cs[c].name, cs[c].shape, isas[i]->name,
                   t * 1e3, gbs, gf, t_ref / t, bound, frac);
        }
        fflush(stdout);
    }
    g_sink = (float)k.sum;
    return 0;
}
