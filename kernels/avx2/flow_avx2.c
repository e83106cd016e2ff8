/* AVX2 + FMA flow kernels: the same functions as kernels/ref/flow_ref.c,
 * 8 floats at a time. This file alone is compiled with -mavx2 -mfma; the
 * dispatcher only hands this table out after checking the CPU (cpuid) and
 * the OS (XGETBV).
 *
 * Agreement with ref: squeeze, unsqueeze, add, edge_bias and normal_noise
 * are bit-identical (normal_noise: the same IEEE steps as kernels.h's
 * gt_box_muller, lane by lane); affine differs by FMA rounding; exp /
 * log1p / sigmoid are Cephes-style polynomials within a few ulp of libm
 * (tests say how many); gauss_logp forms each term in float. Sums are
 * accumulated in double in a fixed order that depends only
 * on n: element i goes to lane i mod 8 (two 4-double accumulators), the
 * lanes are reduced as ((l0+l4)+(l1+l5)) + ((l2+l6)+(l3+l7)), the tail
 * (n mod 8 elements) is one more zero-padded block. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels/kernels.h"

#define V 8

/* ---- vector math ---- */

/* The math below works on U independent vectors at once, step by step:
 * exp and log1p are long dependency chains, and Zen's FP scheduler does not
 * overlap enough of them when they come one after another. */
#define ALWAYS_INLINE inline __attribute__((always_inline))
#define EACH(u) _Pragma("GCC unroll 4") for (int u = 0; u < U; u++)

/* exp(x) for all float x: Cephes expf (polynomial on |r| <= ln2/2 after
 * x = n ln2 + r), 0 below the normal range, inf above, NaN kept. x is
 * clamped to [lo, 89]; above 88.7228 the final doubling overflows to inf by
 * itself, which saves a compare and a blend. nonpos: the caller promises
 * x <= 0 (or NaN), so the clamp above and the 2^128 case go. */
static ALWAYS_INLINE void exp_vn(__m256 *y, const __m256 *x, int U, int nonpos) {
    const __m256 lo = _mm256_set1_ps(-87.33654f), hi = _mm256_set1_ps(89.0f);
    __m256 n[4], r[4], p[4];
    __m256i ni[4], big[4];
    EACH(u) {
        const __m256 xc = nonpos ? _mm256_max_ps(lo, x[u]) : _mm256_min_ps(hi, _mm256_max_ps(lo, x[u])); /* NaN passes */
        n[u] = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        r[u] = _mm256_fnmadd_ps(n[u], _mm256_set1_ps(0.693359375f), xc);
    }
    EACH(u) r[u] = _mm256_fnmadd_ps(n[u], _mm256_set1_ps(-2.12194440e-4f), r[u]);
    EACH(u) p[u] = _mm256_fmadd_ps(_mm256_set1_ps(1.9875691500E-4f), r[u], _mm256_set1_ps(1.3981999507E-3f));
    EACH(u) p[u] = _mm256_fmadd_ps(p[u], r[u], _mm256_set1_ps(8.3334519073E-3f));
    EACH(u) p[u] = _mm256_fmadd_ps(p[u], r[u], _mm256_set1_ps(4.1665795894E-2f));
    EACH(u) p[u] = _mm256_fmadd_ps(p[u], r[u], _mm256_set1_ps(1.6666665459E-1f));
    EACH(u) p[u] = _mm256_fmadd_ps(p[u], r[u], _mm256_set1_ps(5.0000001201E-1f));
    EACH(u) p[u] = _mm256_fmadd_ps(p[u], _mm256_mul_ps(r[u], r[u]), _mm256_add_ps(r[u], _mm256_set1_ps(1.0f)));
    /* 2^n with n in [-126, 128]: n = 128 is 2^127 * 2. */
    EACH(u) {
        ni[u] = _mm256_cvtps_epi32(n[u]);
        if (!nonpos) {
            big[u] = _mm256_cmpgt_epi32(ni[u], _mm256_set1_epi32(127));
            ni[u] = _mm256_add_epi32(ni[u], big[u]); /* big is -1 */
        }
    }
    EACH(u) {
        const __m256 scale = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(ni[u], _mm256_set1_epi32(127)), 23));
        y[u] = _mm256_mul_ps(p[u], scale);
        if (!nonpos) y[u] = _mm256_add_ps(y[u], _mm256_and_ps(y[u], _mm256_castsi256_ps(big[u])));
        y[u] = _mm256_blendv_ps(y[u], _mm256_setzero_ps(), _mm256_cmp_ps(x[u], lo, _CMP_LT_OQ));
    }
}

static inline __m256 exp_v(__m256 x) {
    __m256 y;
    exp_vn(&y, &x, 1, 0);
    return y;
}

/* log1p(u) for u in [0, 1], given w = 1 + u (rounded, in [1, 2]) and rw =
 * 1 / w: Cephes logf polynomial on w or w/2, plus the rounding error of
 * 1 + u (fdlibm's correction), which is tiny, so rw need not be exact. */
static ALWAYS_INLINE void log1p01_vn(__m256 *y, const __m256 *uu, const __m256 *w, const __m256 *rw, int U) {
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 corr[4], e[4], x[4], z[4], p[4];
    EACH(u) {
        corr[u] = _mm256_mul_ps(_mm256_sub_ps(uu[u], _mm256_sub_ps(w[u], one)), rw[u]);
        const __m256 big = _mm256_cmp_ps(w[u], _mm256_set1_ps(1.41421356237f), _CMP_GE_OQ);
        e[u] = _mm256_and_ps(big, one);
        x[u] = _mm256_sub_ps(_mm256_blendv_ps(w[u], _mm256_mul_ps(w[u], _mm256_set1_ps(0.5f)), big), one);
        z[u] = _mm256_mul_ps(x[u], x[u]);
    }
    EACH(u) p[u] = _mm256_fmadd_ps(_mm256_set1_ps(7.0376836292E-2f), x[u], _mm256_set1_ps(-1.1514610310E-1f));
    EACH(u) p[u] = _mm256_fmadd_ps(p[u], x[u], _mm256_set1_ps(1.1676998740E-1f));
    EACH(u) p[u] = _mm256_fmadd_ps(p[u], x[u], _mm256_set1_ps(-1.2420140846E-1f));
    EACH(u) p[u] = _mm256_fmadd_ps(p[u], x[u], _mm256_set1_ps(1.4249322787E-1f));
    EACH(u) p[u] = _mm256_fmadd_ps(p[u], x[u], _mm256_set1_ps(-1.6668057665E-1f));
    EACH(u) p[u] = _mm256_fmadd_ps(p[u], x[u], _mm256_set1_ps(2.0000714765E-1f));
    EACH(u) p[u] = _mm256_fmadd_ps(p[u], x[u], _mm256_set1_ps(-2.4999993993E-1f));
    EACH(u) p[u] = _mm256_fmadd_ps(p[u], x[u], _mm256_set1_ps(3.3333331174E-1f));
    EACH(u) {
        __m256 t = _mm256_mul_ps(_mm256_mul_ps(p[u], x[u]), z[u]);
        t = _mm256_fmadd_ps(e[u], _mm256_set1_ps(-2.12194440e-4f), t);
        t = _mm256_fnmadd_ps(z[u], _mm256_set1_ps(0.5f), t);
        t = _mm256_add_ps(_mm256_add_ps(x[u], t), corr[u]);
        y[u] = _mm256_fmadd_ps(e[u], _mm256_set1_ps(0.693359375f), t);
    }
}

/* Double accumulation in the fixed order described at the top. */
typedef struct { __m256d a, b; } acc_t;
static inline acc_t acc_zero(void) { return (acc_t){_mm256_setzero_pd(), _mm256_setzero_pd()}; }
static inline void acc_add(acc_t *s, __m256d lo, __m256d hi) {
    s->a = _mm256_add_pd(s->a, lo);
    s->b = _mm256_add_pd(s->b, hi);
}
static inline double acc_sum(acc_t s) {
    double l[4];
    _mm256_storeu_pd(l, _mm256_add_pd(s.a, s.b));
    return (l[0] + l[1]) + (l[2] + l[3]);
}

/* Copies a tail of m < 8 floats into a padded block. */
static inline __m256 load_tail(const float *p, int64_t m, float pad) {
    float b[V];
    for (int k = 0; k < V; k++) b[k] = k < m ? p[k] : pad;
    return _mm256_loadu_ps(b);
}
static inline void store_tail(float *p, __m256 v, int64_t m) {
    float b[V];
    _mm256_storeu_ps(b, v);
    memcpy(p, b, (size_t)m * sizeof(float));
}
static inline __m256i tail_mask(int64_t m) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)m), idx);
}

/* ---- affine ---- */

/* R output rows x NV vectors of 8 pixels: row o + r of A x + b goes to
 * yo + r ys, with x rows xs floats apart (x and yo already at the pixel). */
static ALWAYS_INLINE void affine_tile(const float *A, const float *b, int C, const float *x, int64_t xs, float *yo,
                                      int64_t ys, int o, int R, int NV) {
    __m256 acc[6][2];
#pragma GCC unroll 6
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) acc[r][v] = _mm256_broadcast_ss(b + o + r);
    const float *Ao = A + (int64_t)o * C;
    for (int i = 0; i < C; i++) {
        const float *xi = x + (int64_t)i * xs;
        __m256 xv[2];
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) xv[v] = _mm256_loadu_ps(xi + V * v);
#pragma GCC unroll 6
        for (int r = 0; r < R; r++) {
            const __m256 a = _mm256_broadcast_ss(Ao + (int64_t)r * C + i);
#pragma GCC unroll 2
            for (int v = 0; v < NV; v++) acc[r][v] = _mm256_fmadd_ps(a, xv[v], acc[r][v]);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) _mm256_storeu_ps(yo + (int64_t)r * ys + V * v, acc[r][v]);
}

/* Rows o .. o+R-1 over np pixels of x (np rounded up to 8 is readable, zero
 * padded); the last < 8 pixels go through a copy: masked stores
 * (vmaskmovps) are slow on AMD when streaming. Meanwhile rows o .. o+R-1
 * of pf (rows ys apart, npf pixels) are prefetched: over all the row
 * blocks, that is all of the next piece of x (see affine_avx2). Prefetching
 * y for writing as well was slower (measured). */
static ALWAYS_INLINE void affine_rows(const float *A, const float *b, int C, const float *x, int64_t xs, float *y,
                                      int64_t ys, int o, int R, int64_t np, const float *pf, int64_t npf) {
    float *yo = y + (int64_t)o * ys;
    int64_t p = 0;
    for (; p + 2 * V <= np; p += 2 * V) {
        if (p < npf)
            for (int r = 0; r < R; r++) _mm_prefetch((const char *)(pf + (int64_t)(o + r) * ys + p), _MM_HINT_T0);
        affine_tile(A, b, C, x + p, xs, yo + p, ys, o, R, 2);
    }
    if (p + V <= np) {
        affine_tile(A, b, C, x + p, xs, yo + p, ys, o, R, 1);
        p += V;
    }
    if (p < np) {
        float yt[6 * V];
        affine_tile(A, b, C, x + p, xs, yt, V, o, R, 1);
        for (int r = 0; r < R; r++) memcpy(yo + (int64_t)r * ys + p, yt + r * V, (size_t)(np - p) * sizeof(float));
    }
}

/* 6 rows x 16 pixels: 12 accumulators, enough to cover the FMA latency
 * on both pipes, with 8 loads per 12 FMAs. */
static void affine_block(const float *A, const float *b, int C, const float *x, int64_t xs, float *y, int64_t ys,
                         int64_t np, const float *pf, int64_t npf) {
    int o = 0;
    for (; o + 6 <= C; o += 6) affine_rows(A, b, C, x, xs, y, ys, o, 6, np, pf, npf);
    switch (C - o) {
    case 5: affine_rows(A, b, C, x, xs, y, ys, o, 5, np, pf, npf); break;
    case 4: affine_rows(A, b, C, x, xs, y, ys, o, 4, np, pf, npf); break;
    case 3: affine_rows(A, b, C, x, xs, y, ys, o, 3, np, pf, npf); break;
    case 2: affine_rows(A, b, C, x, xs, y, ys, o, 2, np, pf, npf); break;
    case 1: affine_rows(A, b, C, x, xs, y, ys, o, 1, np, pf, npf); break;
    default: break;
    }
}

/* C <= 4: one output row at a time over the whole image, like ref, so that
 * y is written as one stream (interleaving C output rows halved the DRAM
 * bandwidth when streaming images). C is a constant in each instance, so
 * the row of A stays in registers. */
static ALWAYS_INLINE void affine_small(const float *A, const float *b, int C, int64_t hw, const float *x, float *y) {
    for (int o = 0; o < C; o++) {
        float *yo = y + (int64_t)o * hw;
        const float *Ao = A + (int64_t)o * C;
        __m256 a[4];
#pragma GCC unroll 4
        for (int i = 0; i < C; i++) a[i] = _mm256_broadcast_ss(Ao + i);
        int64_t p = 0;
        for (; p + 2 * V <= hw; p += 2 * V) {
            __m256 a0 = _mm256_broadcast_ss(b + o), a1 = a0;
#pragma GCC unroll 4
            for (int i = 0; i < C; i++) {
                a0 = _mm256_fmadd_ps(a[i], _mm256_loadu_ps(x + (int64_t)i * hw + p), a0);
                a1 = _mm256_fmadd_ps(a[i], _mm256_loadu_ps(x + (int64_t)i * hw + p + V), a1);
            }
            _mm256_storeu_ps(yo + p, a0);
            _mm256_storeu_ps(yo + p + V, a1);
        }
        for (; p < hw; p++) { /* the same FMA sequence as a vector lane */
            float acc = b[o];
            for (int i = 0; i < C; i++) acc = fmaf(Ao[i], x[(int64_t)i * hw + p], acc);
            yo[p] = acc;
        }
    }
}

/* floats: a packed piece of x. 32 KiB (all of L1) measured faster than
 * 16 KiB from DRAM: C=48 hw=1024 7.2-7.6 -> 6.9-7.1 ms, C=24 hw=4096
 * 8.5-10.1 -> 7.3-8.6 ms (fewer, longer runs of each row). */
#define AFFINE_BUF 8192

/* x[i][p0 .. p0+np) for every row i into buf (rows P apart), zero-padded
 * to a multiple of 8 pixels. */
static void affine_pack(const float *x, int C, int64_t hw, int64_t p0, int64_t np, float *buf, int64_t P) {
    const int64_t np8 = (np + V - 1) / V * V;
    for (int i = 0; i < C; i++) {
        memcpy(buf + i * P, x + (int64_t)i * hw + p0, (size_t)np * sizeof(float));
        for (int64_t k = np; k < np8; k++) buf[i * P + k] = 0.0f;
    }
}

static void affine_avx2(const float *A, const float *b, int C, int64_t hw, const float *x, float *y) {
    float buf[AFFINE_BUF] __attribute__((aligned(32)));
    switch (C) {
    case 1: affine_small(A, b, 1, hw, x, y); return;
    case 2: affine_small(A, b, 2, hw, x, y); return;
    case 3: affine_small(A, b, 3, hw, x, y); return;
    case 4: affine_small(A, b, 4, hw, x, y); return;
    default: break;
    }
    if (C > AFFINE_BUF / V) { /* no room for a padded tail: scalar */
        const int64_t full = hw / V * V;
        if (full) affine_block(A, b, C, x, hw, y, hw, full, x, 0);
        for (int64_t p = full; p < hw; p++)
            for (int o = 0; o < C; o++) {
                float acc = b[o];
                for (int i = 0; i < C; i++) acc = fmaf(A[(int64_t)o * C + i], x[(int64_t)i * hw + p], acc);
                y[(int64_t)o * hw + p] = acc;
            }
        return;
    }
    if (hw % 512 || C > AFFINE_BUF / (2 * V)) {
        /* Straight from x, a column of W pixels at a time for every output
         * row, prefetching the next column; W = 32 (16 when C > 192) keeps
         * the column (24 KiB at most) in L1 and halves the passes over A
         * against W = 16 (C=96 hw=256 from DRAM: 7.4 -> 6.0 ms). The last
         * < 8 pixels padded. */
        const int64_t W = C <= 192 ? 4 * V : 2 * V;
        int64_t p = 0;
        for (; p + W <= hw; p += W) affine_block(A, b, C, x + p, hw, y + p, hw, W, x + p + W, p + 2 * W <= hw ? W : 0);
        if (p + 2 * V <= hw) {
            affine_block(A, b, C, x + p, hw, y + p, hw, 2 * V, x, 0);
            p += 2 * V;
        }
        if (p + V <= hw) {
            affine_block(A, b, C, x + p, hw, y + p, hw, V, x, 0);
            p += V;
        }
        if (p < hw) {
            affine_pack(x, C, hw, p, hw - p, buf, V);
            affine_block(A, b, C, buf, V, y + p, hw, hw - p, x, 0);
        }
        return;
    }
    /* hw a multiple of 512: the rows of x (and of y) are a multiple of 2 KiB
     * apart, so a column of x falls into one or two L1 sets and straight
     * from x ran at 2x ref (C = 12, 24). Chunks of P pixels of every row,
     * packed contiguously, stay in L1 for all output rows. */
    int64_t P = (AFFINE_BUF / C) & ~(int64_t)(2 * V - 1);
    if (P > 512) P = 512;
    for (int64_t p0 = 0; p0 < hw; p0 += P) {
        const int64_t np = hw - p0 < P ? hw - p0 : P;
        affine_pack(x, C, hw, p0, np, buf, P);
        /* The hardware prefetcher does not run ahead of C strided streams
         * while we compute: fetch the next chunk meanwhile. */
        const int64_t nn = hw - p0 - np < P ? hw - p0 - np : P;
        affine_block(A, b, C, buf, P, y + p0, hw, np, x + p0 + np, nn);
    }
}

/* ---- squeeze / unsqueeze: deinterleave / interleave row pairs ---- */

static void squeeze_avx2(const float *in, float *out, int C, int H, int W) {
    const int h2 = H / 2, w2 = W / 2;
    const int64_t plane = (int64_t)h2 * w2;
    for (int c = 0; c < C; c++)
        for (int dy = 0; dy < 2; dy++) {
            float *o0 = out + (int64_t)(4 * c + 2 * dy) * plane, *o1 = o0 + plane;
            for (int i = 0; i < h2; i++) {
                const float *row = in + ((int64_t)c * H + 2 * i + dy) * W;
                float *e = o0 + (int64_t)i * w2, *d = o1 + (int64_t)i * w2;
                int j = 0;
                for (; j + V <= w2; j += V) {
                    const __m256 a = _mm256_loadu_ps(row + 2 * j), bb = _mm256_loadu_ps(row + 2 * j + V);
                    /* per 128-bit lane: evens a0 a2 b0 b2 | a4 a6 b4 b6, then fix lane order */
                    const __m256 ev = _mm256_shuffle_ps(a, bb, 0x88), od = _mm256_shuffle_ps(a, bb, 0xDD);
                    _mm256_storeu_ps(e + j, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ev), 0xD8)));
                    _mm256_storeu_ps(d + j, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(od), 0xD8)));
                }
                for (; j < w2; j++) {
                    e[j] = row[2 * j];
                    d[j] = row[2 * j + 1];
                }
            }
        }
}

static void unsqueeze_avx2(const float *in, float *out, int C, int H, int W) {
    const int h2 = H / 2, w2 = W / 2;
    const int64_t plane = (int64_t)h2 * w2;
    for (int c = 0; c < C; c++)
        for (int dy = 0; dy < 2; dy++) {
            const float *q0 = in + (int64_t)(4 * c + 2 * dy) * plane, *q1 = q0 + plane;
            for (int i = 0; i < h2; i++) {
                float *row = out + ((int64_t)c * H + 2 * i + dy) * W;
                const float *e = q0 + (int64_t)i * w2, *d = q1 + (int64_t)i * w2;
                int j = 0;
                for (; j + V <= w2; j += V) {
                    const __m256 a = _mm256_loadu_ps(e + j), bb = _mm256_loadu_ps(d + j);
                    const __m256 lo = _mm256_unpacklo_ps(a, bb), hi = _mm256_unpackhi_ps(a, bb);
                    _mm256_storeu_ps(row + 2 * j, _mm256_permute2f128_ps(lo, hi, 0x20));
                    _mm256_storeu_ps(row + 2 * j + V, _mm256_permute2f128_ps(lo, hi, 0x31));
                }
                for (; j < w2; j++) {
                    row[2 * j] = e[j];
                    row[2 * j + 1] = d[j];
                }
            }
        }
}

/* ---- affine coupling ---- */

/* s = sigmoid(r) and ln s from one exp and one division: e = exp(-|r|),
 * w = 1 + e; s = 1/w (r >= 0) or e/w; ln s = min(r, 0) - log1p(e). U
 * blocks of 8 at once; xb[u] becomes (xb + t) s. */
static ALWAYS_INLINE void coupling_fwd_vn(__m256 *xb, const __m256 *r, const __m256 *t, __m256 *logs, int U) {
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 na[4], e[4], w[4], rw[4], l1p[4];
    EACH(u) na[u] = _mm256_or_ps(_mm256_set1_ps(-0.0f), r[u]); /* -|r| */
    exp_vn(e, na, U, 1);
    EACH(u) {
        w[u] = _mm256_add_ps(one, e[u]);
        rw[u] = _mm256_div_ps(one, w[u]);
    }
    log1p01_vn(l1p, e, w, rw, U);
    EACH(u) {
        const __m256 neg = _mm256_cmp_ps(r[u], _mm256_setzero_ps(), _CMP_LT_OQ);
        const __m256 s = _mm256_mul_ps(_mm256_blendv_ps(one, e[u], neg), rw[u]);
        logs[u] = _mm256_sub_ps(_mm256_min_ps(r[u], _mm256_setzero_ps()), l1p[u]);
        xb[u] = _mm256_mul_ps(_mm256_add_ps(xb[u], t[u]), s);
    }
}

static inline void acc_add_ps(acc_t *s, __m256 v) {
    acc_add(s, _mm256_cvtps_pd(_mm256_castps256_ps128(v)), _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}

static double coupling_fwd_avx2(float *xb, const float *raw, const float *t, int64_t n) {
    enum { U = 4 };
    acc_t sum = acc_zero();
    __m256 x[U], r[U], tt[U], l[U];
    int64_t i = 0;
    for (; i + U * V <= n; i += U * V) {
        EACH(u) {
            x[u] = _mm256_loadu_ps(xb + i + V * u);
            r[u] = _mm256_loadu_ps(raw + i + V * u);
            tt[u] = _mm256_loadu_ps(t + i + V * u);
        }
        coupling_fwd_vn(x, r, tt, l, U);
        EACH(u) {
            _mm256_storeu_ps(xb + i + V * u, x[u]);
            acc_add_ps(&sum, l[u]); /* in element order: the sum does not depend on U */
        }
    }
    for (; i + V <= n; i += V) {
        x[0] = _mm256_loadu_ps(xb + i);
        r[0] = _mm256_loadu_ps(raw + i);
        tt[0] = _mm256_loadu_ps(t + i);
        coupling_fwd_vn(x, r, tt, l, 1);
        _mm256_storeu_ps(xb + i, x[0]);
        acc_add_ps(&sum, l[0]);
    }
    if (i < n) {
        const int64_t m = n - i;
        x[0] = load_tail(xb + i, m, 0);
        r[0] = load_tail(raw + i, m, 0);
        tt[0] = load_tail(t + i, m, 0);
        coupling_fwd_vn(x, r, tt, l, 1);
        store_tail(xb + i, x[0], m);
        acc_add_ps(&sum, _mm256_and_ps(l[0], _mm256_castsi256_ps(tail_mask(m))));
    }
    return acc_sum(sum);
}

/* yb / sigmoid(r) - t = yb * (1 + exp(-r)) - t. */
static inline __m256 coupling_rev_v(__m256 yb, __m256 r, __m256 t) {
    const __m256 inv_s = _mm256_add_ps(_mm256_set1_ps(1.0f), exp_v(_mm256_sub_ps(_mm256_setzero_ps(), r)));
    return _mm256_fmsub_ps(yb, inv_s, t);
}

static void coupling_rev_avx2(float *yb, const float *raw, const float *t, int64_t n) {
    int64_t i = 0;
    for (; i + V <= n; i += V)
        _mm256_storeu_ps(yb + i, coupling_rev_v(_mm256_loadu_ps(yb + i), _mm256_loadu_ps(raw + i), _mm256_loadu_ps(t + i)));
    if (i < n) {
        const int64_t m = n - i;
        store_tail(yb + i, coupling_rev_v(load_tail(yb + i, m, 0), load_tail(raw + i, m, 0), load_tail(t + i, m, 0)), m);
    }
}

static void add_avx2(float *x, const float *h, int64_t n, float sign) {
    const __m256 s = _mm256_set1_ps(sign);
    int64_t i = 0;
    for (; i + 2 * V <= n; i += 2 * V) {
        _mm256_storeu_ps(x + i, _mm256_fmadd_ps(s, _mm256_loadu_ps(h + i), _mm256_loadu_ps(x + i)));
        _mm256_storeu_ps(x + i + V, _mm256_fmadd_ps(s, _mm256_loadu_ps(h + i + V), _mm256_loadu_ps(x + i + V)));
    }
    for (; i < n; i++) x[i] += sign * h[i];
}

/* ---- Gaussian prior ---- */

#define HALF_LOG_2PI 0.91893853320467274178

/* Per element, ls + 0.5 e^2 in float (one FMA; its rounding, 2^-24 of the
 * term, is far inside the tests' 1e-6) is widened and summed in double; the
 * constant and the sign are applied once at the end. Zero-padded tail lanes
 * (z = mean = ls = 0) give exactly 0, so the tail needs no mask. */
static ALWAYS_INLINE void gauss_vn(const __m256 *z, const __m256 *m, const __m256 *ls, __m256 *e, __m256 *term, int U) {
    __m256 nls[4], el[4];
    EACH(u) nls[u] = _mm256_sub_ps(_mm256_setzero_ps(), ls[u]);
    exp_vn(el, nls, U, 0);
    EACH(u) {
        e[u] = _mm256_mul_ps(_mm256_sub_ps(z[u], m[u]), el[u]);
        term[u] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), e[u]), e[u], ls[u]);
    }
}

static double gauss_logp_avx2(const float *z, const float *mean, const float *log_sd, float *eps, int64_t n) {
    enum { U = 4 };
    acc_t sum = acc_zero();
    __m256 zz[U], mm[U], ll[U], e[U], t[U];
    int64_t i = 0;
    for (; i + U * V <= n; i += U * V) {
        EACH(u) {
            zz[u] = _mm256_loadu_ps(z + i + V * u);
            mm[u] = _mm256_loadu_ps(mean + i + V * u);
            ll[u] = _mm256_loadu_ps(log_sd + i + V * u);
        }
        gauss_vn(zz, mm, ll, e, t, U);
        EACH(u) {
            if (eps) _mm256_storeu_ps(eps + i + V * u, e[u]);
            acc_add_ps(&sum, t[u]); /* in element order: the sum does not depend on U */
        }
    }
    for (; i + V <= n; i += V) {
        gauss_vn((__m256[]){_mm256_loadu_ps(z + i)}, (__m256[]){_mm256_loadu_ps(mean + i)},
                 (__m256[]){_mm256_loadu_ps(log_sd + i)}, e, t, 1);
        if (eps) _mm256_storeu_ps(eps + i, e[0]);
        acc_add_ps(&sum, t[0]);
    }
    if (i < n) {
        const int64_t m = n - i;
        gauss_vn((__m256[]){load_tail(z + i, m, 0)}, (__m256[]){load_tail(mean + i, m, 0)},
                 (__m256[]){load_tail(log_sd + i, m, 0)}, e, t, 1);
        if (eps) store_tail(eps + i, e[0], m);
        acc_add_ps(&sum, t[0]);
    }
    return -HALF_LOG_2PI * (double)n - acc_sum(sum);
}

static void gauss_from_eps_avx2(float *z, const float *mean, const float *log_sd, const float *eps, int64_t n) {
    int64_t i = 0;
    for (; i + V <= n; i += V)
        _mm256_storeu_ps(z + i, _mm256_fmadd_ps(exp_v(_mm256_loadu_ps(log_sd + i)), _mm256_loadu_ps(eps + i),
                                                _mm256_loadu_ps(mean + i)));
    if (i < n) {
        const int64_t m = n - i;
        store_tail(z + i, _mm256_fmadd_ps(exp_v(load_tail(log_sd + i, m, 0)), load_tail(eps + i, m, 0),
                                          load_tail(mean + i, m, 0)), m);
    }
}

/* ---- edge bias: the border sums in ref's order, the rows vectorised ---- */

static float edge_sum(const float *e, int C, int c, int top, int bottom, int left, int right) {
    float v = 0;
    for (int ky = 0; ky < 3; ky++)
        for (int kx = 0; kx < 3; kx++)
            if ((ky == 0 && top) || (ky == 2 && bottom) || (kx == 0 && left) || (kx == 2 && right)) v += e[(ky * 3 + kx) * C + c];
    return v;
}

static void relu_avx2(float *x, int64_t n) {
    const __m256 z = _mm256_setzero_ps();
    int64_t i = 0;
    /* max(x, 0) returns its second operand for NaN and for -0: ref's x > 0 ? x : 0. */
    for (; i + 2 * V <= n; i += 2 * V) {
        _mm256_storeu_ps(x + i, _mm256_max_ps(_mm256_loadu_ps(x + i), z));
        _mm256_storeu_ps(x + i + V, _mm256_max_ps(_mm256_loadu_ps(x + i + V), z));
    }
    for (; i < n; i++) x[i] = x[i] > 0 ? x[i] : 0;
}

static void edge_bias_avx2(float *out, const float *e, int C, int H, int W, int relu) {
    for (int c = 0; c < C; c++) {
        float *pl = out + (int64_t)c * H * W;
        for (int h = 0; h < H; h++) {
            const int top = h == 0, bottom = h == H - 1;
            float *row = pl + (int64_t)h * W;
            row[0] += edge_sum(e, C, c, top, bottom, 1, W == 1);
            if (W > 1) row[W - 1] += edge_sum(e, C, c, top, bottom, 0, 1);
            if ((top | bottom) && W > 2) {
                const float v = edge_sum(e, C, c, top, bottom, 0, 0);
                const __m256 vv = _mm256_set1_ps(v);
                int w = 1;
                for (; w + V <= W - 1; w += V) _mm256_storeu_ps(row + w, _mm256_add_ps(_mm256_loadu_ps(row + w), vv));
                for (; w < W - 1; w++) row[w] += v;
            }
        }
    }
    if (relu) relu_avx2(out, (int64_t)C * H * W);
}

/* ---- edge bias on the blocked layout [ceil(C/B)][H*W][B]: a block's
 * lanes 8 at a time (B a multiple of 8, at most 64; else ref's code). For
 * each kind of row (top, inner, bottom; one row is both top and bottom when
 * H = 1) the sums of its three kinds of positions (first, middle, last) are
 * formed once, in ref's tap order from 0; a position gets its sum, then
 * max(x, 0) (= ref's x > 0 ? x : 0, NaN and -0 included). Inner positions
 * get no add (x + 0 would turn -0 into +0). In the last block the lanes
 * past C are loaded and stored back unchanged. ---- */

static inline __m256 edge_sum_v(const float *e, int ld, __m256i m, int top, int bottom, int left, int right) {
    __m256 v = _mm256_setzero_ps();
    for (int ky = 0; ky < 3; ky++)
        for (int kx = 0; kx < 3; kx++)
            if ((ky == 0 && top) || (ky == 2 && bottom) || (kx == 0 && left) || (kx == 2 && right))
                v = _mm256_add_ps(v, _mm256_maskload_ps(e + (int64_t)(ky * 3 + kx) * ld, m));
    return v;
}

/* One position: ng groups of 8 lanes; add: add[g] to each; full: all lanes valid. */
static ALWAYS_INLINE void edge_px(float *p, const __m256 *add, int ng, const __m256i *m, int full, int do_add,
                                  int relu) {
    const __m256 z = _mm256_setzero_ps();
    for (int g = 0; g < ng; g++) {
        const __m256 x0 = _mm256_loadu_ps(p + g * V);
        __m256 x = do_add ? _mm256_add_ps(x0, add[g]) : x0;
        if (relu) x = _mm256_max_ps(x, z);
        if (!full) x = _mm256_blendv_ps(x0, x, _mm256_castsi256_ps(m[g]));
        _mm256_storeu_ps(p + g * V, x);
    }
}

static ALWAYS_INLINE void edge_block(float *blk, const float *e, int ld, int H, int W, int B, int ng,
                                     const __m256i *m, int full, int relu) {
    __m256 first[64 / V], mid[64 / V], last[64 / V];
    for (int g = 0; g < ng; g++) first[g] = mid[g] = last[g] = _mm256_setzero_ps();
    int kind = -1; /* the row kind the sums are for */
    for (int h = 0; h < H; h++) {
        const int top = h == 0, bottom = h == H - 1;
        if (kind != top + 2 * bottom) {
            kind = top + 2 * bottom;
            for (int g = 0; g < ng; g++) {
                first[g] = edge_sum_v(e + g * V, ld, m[g], top, bottom, 1, W == 1);
                if (W > 1) last[g] = edge_sum_v(e + g * V, ld, m[g], top, bottom, 0, 1);
                if (top | bottom) mid[g] = edge_sum_v(e + g * V, ld, m[g], top, bottom, 0, 0);
            }
        }
        float *row = blk + (int64_t)h * W * B;
        edge_px(row, first, ng, m, full, 1, relu);
        if (top | bottom)
            for (int w = 1; w < W - 1; w++) edge_px(row + (int64_t)w * B, mid, ng, m, full, 1, relu);
        else if (relu)
            for (int w = 1; w < W - 1; w++) edge_px(row + (int64_t)w * B, mid, ng, m, full, 0, 1);
        if (W > 1) edge_px(row + (int64_t)(W - 1) * B, last, ng, m, full, 1, relu);
    }
}

static void edge_bias_blocked_avx2(float *out, const float *e, int ld, int C, int H, int W, int B, int relu) {
    if (B % V || B > 64) {
        gt_edge_bias_blocked_ref(out, e, ld, C, H, W, B, relu);
        return;
    }
    const int64_t hw = (int64_t)H * W;
    for (int c0 = 0; c0 < C; c0 += B) {
        float *blk = out + (int64_t)(c0 / B) * hw * B;
        const int nv = C - c0 < B ? C - c0 : B, ng = (nv + V - 1) / V;
        __m256i m[64 / V];
        for (int g = 0; g < ng; g++) m[g] = tail_mask(nv - g * V);
        /* the common blocks, with the group count known to the compiler */
        if (nv == 16 && B == 16)
            edge_block(blk, e + c0, ld, H, W, 16, 2, m, 1, relu);
        else if (nv == 8 && B == 8)
            edge_block(blk, e + c0, ld, H, W, 8, 1, m, 1, relu);
        else
            edge_block(blk, e + c0, ld, H, W, B, ng, m, nv == B, relu);
    }
}

/* ---- normal noise: Philox4x32-10 on 8 blocks at once, then Box-Muller on
 * 4 pairs at once: gt_box_muller (kernels.h) step for step, so bit-identical
 * to ref. ---- */

static inline __m256d u32_to_pd(__m128i w) { /* exact, w unsigned */
    return _mm256_add_pd(_mm256_cvtepi32_pd(_mm_xor_si128(w, _mm_set1_epi32((int)0x80000000u))),
                         _mm256_set1_pd(2147483648.0));
}

/* ((double)((hi << 21) ^ (lo >> 11))): both parts and the sum are exact. */
static inline __m256d bits53_pd(__m128i hi, __m128i lo) {
    return _mm256_add_pd(_mm256_mul_pd(u32_to_pd(hi), _mm256_set1_pd(0x1p21)),
                         _mm256_cvtepi32_pd(_mm_srli_epi32(lo, 11)));
}

static inline __m256d bm_log_v(__m256d u) {
    const __m256i bits = _mm256_castpd_si256(u);
    /* the exponent field as a double: 2^52 + k, minus 2^52 (exact) */
    const __m256d eraw = _mm256_sub_pd(
        _mm256_castsi256_pd(_mm256_or_si256(_mm256_srli_epi64(bits, 52), _mm256_set1_epi64x(0x4330000000000000ll))),
        _mm256_set1_pd(0x1p52));
    __m256d e = _mm256_sub_pd(eraw, _mm256_set1_pd(1023.0));
    __m256d m = _mm256_castsi256_pd(_mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi64x(0x000FFFFFFFFFFFFFll)),
                                                    _mm256_set1_epi64x(0x3FF0000000000000ll)));
    const __m256d big = _mm256_cmp_pd(m, _mm256_set1_pd(1.4142135623730951), _CMP_GT_OQ);
    m = _mm256_blendv_pd(m, _mm256_mul_pd(m, _mm256_set1_pd(0.5)), big);
    e = _mm256_blendv_pd(e, _mm256_add_pd(e, _mm256_set1_pd(1.0)), big);
    const __m256d f = _mm256_sub_pd(m, _mm256_set1_pd(1.0));
    const __m256d s = _mm256_div_pd(f, _mm256_add_pd(_mm256_set1_pd(2.0), f));
    const __m256d z = _mm256_mul_pd(s, s);
    __m256d q = _mm256_set1_pd(0.05263157894736842);
    q = _mm256_fmadd_pd(q, z, _mm256_set1_pd(0.058823529411764705));
    q = _mm256_fmadd_pd(q, z, _mm256_set1_pd(0.06666666666666667));
    q = _mm256_fmadd_pd(q, z, _mm256_set1_pd(0.07692307692307693));
    q = _mm256_fmadd_pd(q, z, _mm256_set1_pd(0.09090909090909091));
    q = _mm256_fmadd_pd(q, z, _mm256_set1_pd(0.1111111111111111));
    q = _mm256_fmadd_pd(q, z, _mm256_set1_pd(0.14285714285714285));
    q = _mm256_fmadd_pd(q, z, _mm256_set1_pd(0.2));
    q = _mm256_fmadd_pd(q, z, _mm256_set1_pd(0.3333333333333333));
    const __m256d s2 = _mm256_mul_pd(_mm256_set1_pd(2.0), s);
    const __m256d lm = _mm256_fmadd_pd(_mm256_mul_pd(s2, z), q, s2);
    return _mm256_fmadd_pd(e, _mm256_set1_pd(0.6931471805599453), lm);
}

static inline void bm_sincos2pi_v(__m256d u, __m256d *sn, __m256d *cs) {
    const __m256d k = _mm256_round_pd(_mm256_mul_pd(_mm256_set1_pd(4.0), u), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256d t = _mm256_sub_pd(u, _mm256_mul_pd(_mm256_set1_pd(0.25), k));
    const __m256d a = _mm256_mul_pd(t, _mm256_set1_pd(6.283185307179586));
    const __m256d z = _mm256_mul_pd(a, a);
    __m256d ps = _mm256_set1_pd(2.8114572543455206e-15);
    ps = _mm256_fmadd_pd(ps, z, _mm256_set1_pd(-7.647163731819816e-13));
    ps = _mm256_fmadd_pd(ps, z, _mm256_set1_pd(1.6059043836821613e-10));
    ps = _mm256_fmadd_pd(ps, z, _mm256_set1_pd(-2.505210838544172e-08));
    ps = _mm256_fmadd_pd(ps, z, _mm256_set1_pd(2.7557319223985893e-06));
    ps = _mm256_fmadd_pd(ps, z, _mm256_set1_pd(-0.0001984126984126984));
    ps = _mm256_fmadd_pd(ps, z, _mm256_set1_pd(0.008333333333333333));
    ps = _mm256_fmadd_pd(ps, z, _mm256_set1_pd(-0.16666666666666666));
    const __m256d sa = _mm256_fmadd_pd(_mm256_mul_pd(a, z), ps, a);
    __m256d pc = _mm256_set1_pd(4.779477332387385e-14);
    pc = _mm256_fmadd_pd(pc, z, _mm256_set1_pd(-1.1470745597729725e-11));
    pc = _mm256_fmadd_pd(pc, z, _mm256_set1_pd(2.08767569878681e-09));
    pc = _mm256_fmadd_pd(pc, z, _mm256_set1_pd(-2.755731922398589e-07));
    pc = _mm256_fmadd_pd(pc, z, _mm256_set1_pd(2.48015873015873e-05));
    pc = _mm256_fmadd_pd(pc, z, _mm256_set1_pd(-0.001388888888888889));
    pc = _mm256_fmadd_pd(pc, z, _mm256_set1_pd(0.041666666666666664));
    pc = _mm256_fmadd_pd(pc, z, _mm256_set1_pd(-0.5));
    const __m256d ca = _mm256_fmadd_pd(z, pc, _mm256_set1_pd(1.0));
    /* quadrant q = k & 3: swap on odd q, sin negated for q = 2, 3, cos for 1, 2 */
    const __m128i q = _mm_and_si128(_mm256_cvtpd_epi32(k), _mm_set1_epi32(3));
    const __m256d odd = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm_cmpeq_epi32(_mm_and_si128(q, _mm_set1_epi32(1)), _mm_set1_epi32(1))));
    const __m256d neg_s = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm_cmpeq_epi32(_mm_and_si128(q, _mm_set1_epi32(2)), _mm_set1_epi32(2))));
    const __m128i q1 = _mm_add_epi32(q, _mm_set1_epi32(1));
    const __m256d neg_c = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm_cmpeq_epi32(_mm_and_si128(q1, _mm_set1_epi32(2)), _mm_set1_epi32(2))));
    const __m256d sign = _mm256_set1_pd(-0.0);
    *sn = _mm256_xor_pd(_mm256_blendv_pd(sa, ca, odd), _mm256_and_pd(neg_s, sign));
    *cs = _mm256_xor_pd(_mm256_blendv_pd(ca, sa, odd), _mm256_and_pd(neg_c, sign));
}

/* Lanes l0 .. l0+3 of r[4][8]: z_even and z_odd of those 4 blocks. */
static inline void box_muller4(uint32_t r[4][8], int l0, double *ze, double *zo) {
    const __m128i w0 = _mm_loadu_si128((const __m128i *)(r[0] + l0)), w1 = _mm_loadu_si128((const __m128i *)(r[1] + l0));
    const __m128i w2 = _mm_loadu_si128((const __m128i *)(r[2] + l0)), w3 = _mm_loadu_si128((const __m128i *)(r[3] + l0));
    const __m256d u1 = _mm256_mul_pd(_mm256_add_pd(bits53_pd(w0, w1), _mm256_set1_pd(1.0)), _mm256_set1_pd(0x1p-53));
    const __m256d u2 = _mm256_mul_pd(bits53_pd(w2, w3), _mm256_set1_pd(0x1p-53));
    const __m256d rad = _mm256_sqrt_pd(_mm256_mul_pd(_mm256_set1_pd(-2.0), bm_log_v(u1)));
    __m256d sn, cs;
    bm_sincos2pi_v(u2, &sn, &cs);
    _mm256_storeu_pd(ze, _mm256_mul_pd(rad, cs));
    _mm256_storeu_pd(zo, _mm256_mul_pd(rad, sn));
}

static inline __m256i mulhi_lo(__m256i a, __m256i m, __m256i *lo) {
    /* 32x32 -> 64 products of all 8 lanes: even lanes directly, odd lanes shifted down. */
    const __m256i pe = _mm256_mul_epu32(a, m), po = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
    *lo = _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
    return _mm256_blend_epi32(_mm256_srli_epi64(pe, 32), po, 0xAA);
}

/* Blocks b0 .. b0+7 of sample `index`; r[k][lane] is word k of block b0 + lane. */
static void philox8(uint32_t k0, uint32_t k1, uint64_t b0, uint64_t index, uint32_t r[4][V]) {
    uint32_t lo[V], hi[V];
    for (int l = 0; l < V; l++) {
        lo[l] = (uint32_t)(b0 + (uint64_t)l);
        hi[l] = (uint32_t)((b0 + (uint64_t)l) >> 32);
    }
    __m256i c0 = _mm256_loadu_si256((const __m256i *)lo), c1 = _mm256_loadu_si256((const __m256i *)hi);
    __m256i c2 = _mm256_set1_epi32((int)(uint32_t)index), c3 = _mm256_set1_epi32((int)(uint32_t)(index >> 32));
    const __m256i m0 = _mm256_set1_epi32((int)0xD2511F53u), m1 = _mm256_set1_epi32((int)0xCD9E8D57u);
    for (int rd = 0; rd < 10; rd++) {
        __m256i p0lo, p1lo;
        const __m256i p0hi = mulhi_lo(c0, m0, &p0lo), p1hi = mulhi_lo(c2, m1, &p1lo);
        const __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(p1hi, c1), _mm256_set1_epi32((int)k0));
        const __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(p0hi, c3), _mm256_set1_epi32((int)k1));
        c0 = n0;
        c1 = p1lo;
        c2 = n2;
        c3 = p0lo;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    _mm256_storeu_si256((__m256i *)r[0], c0);
    _mm256_storeu_si256((__m256i *)r[1], c1);
    _mm256_storeu_si256((__m256i *)r[2], c2);
    _mm256_storeu_si256((__m256i *)r[3], c3);
}

static void normal_noise_avx2(uint64_t seed, uint64_t index, int64_t j0, int64_t n, float temp, float *out) {
    const uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    const double tempd = temp;
    const uint64_t first = (uint64_t)j0, last = (uint64_t)(j0 + n); /* elements [first, last) */
    uint32_t r[4][V];
    double ze[V], zo[V];
    for (uint64_t b = first >> 1; 2 * b < last; b += V) {
        philox8(k0, k1, b, index, r);
        box_muller4(r, 0, ze, zo);
        box_muller4(r, 4, ze + 4, zo + 4);
        for (int l = 0; l < V; l++) {
            const uint64_t jb = 2 * (b + (uint64_t)l);
            if (jb >= last) break;
            if (jb >= first) out[jb - first] = (float)(tempd * ze[l]);
            if (jb + 1 >= first && jb + 1 < last) out[jb + 1 - first] = (float)(tempd * zo[l]);
        }
    }
}

const gt_kernels gt_kernels_avx2 = {
    .name = "avx2",
    .affine = affine_avx2,
    .squeeze = squeeze_avx2,
    .unsqueeze = unsqueeze_avx2,
    .coupling_fwd = coupling_fwd_avx2,
    .coupling_rev = coupling_rev_avx2,
    .add = add_avx2,
    .gauss_logp = gauss_logp_avx2,
    .gauss_from_eps = gauss_from_eps_avx2,
    .edge_bias = edge_bias_avx2,
    .edge_bias_blocked = edge_bias_blocked_avx2,
    .normal_noise = normal_noise_avx2,
    .conv = gt_conv_ref,
};
