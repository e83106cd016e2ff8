/* AVX2 + FMA flow kernels: the same functions as kernels/ref/flow_ref.c,
 * 8 floats at a time. This file alone is compiled with -mavx2 -mfma; the
 * dispatcher only hands this table out after checking the CPU (cpuid) and
 * the OS (XGETBV).
 *
 * Agreement with ref: squeeze, unsqueeze, add, edge_bias and normal_noise
 * are bit-identical; affine differs by FMA rounding; exp / log1p / sigmoid
 * are Cephes-style polynomials within a few ulp of libm (tests say how
 * many). Sums are accumulated in double in a fixed order that depends only
 * on n: element i goes to lane i mod 8 (two 4-double accumulators), the
 * lanes are reduced as ((l0+l4)+(l1+l5)) + ((l2+l6)+(l3+l7)), the tail
 * (n mod 8 elements) is one more zero-padded block. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels/kernels.h"

#define V 8

/* ---- vector math ---- */

/* exp(x) for all float x: Cephes expf (polynomial on |r| <= ln2/2 after
 * x = n ln2 + r), 0 below the normal range, inf above, NaN kept. */
static inline __m256 exp_v(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.33654f), hi = _mm256_set1_ps(88.72283f);
    __m256 xc = _mm256_min_ps(hi, _mm256_max_ps(lo, x)); /* NaN passes through */
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500E-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507E-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073E-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894E-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459E-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201E-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    /* 2^n with n in [-126, 128]: n = 128 is 2^127 * 2. */
    __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i big = _mm256_cmpgt_epi32(ni, _mm256_set1_epi32(127));
    ni = _mm256_add_epi32(ni, big); /* big is -1 */
    const __m256 scale = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(ni, _mm256_set1_epi32(127)), 23));
    __m256 y = _mm256_mul_ps(p, scale);
    y = _mm256_add_ps(y, _mm256_and_ps(y, _mm256_castsi256_ps(big)));
    y = _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps(x, lo, _CMP_LT_OQ));
    return _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), _mm256_cmp_ps(x, hi, _CMP_GT_OQ));
}

/* log1p(u) for u in [0, 1]: w = 1 + u in [1, 2], Cephes logf polynomial on
 * w or w/2, plus the rounding error of 1 + u (fdlibm's correction). */
static inline __m256 log1p01_v(__m256 u) {
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 w = _mm256_add_ps(one, u);
    const __m256 corr = _mm256_div_ps(_mm256_sub_ps(u, _mm256_sub_ps(w, one)), w);
    const __m256 big = _mm256_cmp_ps(w, _mm256_set1_ps(1.41421356237f), _CMP_GE_OQ);
    const __m256 e = _mm256_and_ps(big, one);
    const __m256 x = _mm256_sub_ps(_mm256_blendv_ps(w, _mm256_mul_ps(w, _mm256_set1_ps(0.5f)), big), one);
    const __m256 z = _mm256_mul_ps(x, x);
    __m256 p = _mm256_set1_ps(7.0376836292E-2f);
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(-1.1514610310E-1f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.1676998740E-1f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(-1.2420140846E-1f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.4249322787E-1f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(-1.6668057665E-1f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(2.0000714765E-1f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(-2.4999993993E-1f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(3.3333331174E-1f));
    __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, x), z);
    y = _mm256_fmadd_ps(e, _mm256_set1_ps(-2.12194440e-4f), y);
    y = _mm256_fnmadd_ps(z, _mm256_set1_ps(0.5f), y);
    y = _mm256_add_ps(_mm256_add_ps(x, y), corr);
    return _mm256_fmadd_ps(e, _mm256_set1_ps(0.693359375f), y);
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

/* ---- affine: a block of R output rows x NV vectors of pixels ---- */

static inline __attribute__((always_inline)) void affine_tile(const float *A, const float *b, int C, int64_t hw,
                                                              const float *x, float *y, int o, int R, int NV,
                                                              int64_t p, __m256i mask, int masked) {
    __m256 acc[4][2];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) acc[r][v] = _mm256_broadcast_ss(b + o + r);
    const float *Ao = A + (int64_t)o * C;
    for (int i = 0; i < C; i++) {
        const float *xi = x + (int64_t)i * hw + p;
        __m256 xv[2];
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) xv[v] = masked ? _mm256_maskload_ps(xi, mask) : _mm256_loadu_ps(xi + V * v);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const __m256 a = _mm256_broadcast_ss(Ao + (int64_t)r * C + i);
#pragma GCC unroll 2
            for (int v = 0; v < NV; v++) acc[r][v] = _mm256_fmadd_ps(a, xv[v], acc[r][v]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        float *yr = y + (int64_t)(o + r) * hw + p;
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) {
            if (masked)
                _mm256_maskstore_ps(yr, mask, acc[r][v]);
            else
                _mm256_storeu_ps(yr + V * v, acc[r][v]);
        }
    }
}

static inline __attribute__((always_inline)) void affine_cols(const float *A, const float *b, int C, int64_t hw,
                                                              const float *x, float *y, int NV, int64_t p,
                                                              __m256i mask, int masked) {
    int o = 0;
    for (; o + 4 <= C; o += 4) affine_tile(A, b, C, hw, x, y, o, 4, NV, p, mask, masked);
    switch (C - o) {
    case 3: affine_tile(A, b, C, hw, x, y, o, 3, NV, p, mask, masked); break;
    case 2: affine_tile(A, b, C, hw, x, y, o, 2, NV, p, mask, masked); break;
    case 1: affine_tile(A, b, C, hw, x, y, o, 1, NV, p, mask, masked); break;
    default: break;
    }
}

static void affine_avx2(const float *A, const float *b, int C, int64_t hw, const float *x, float *y) {
    const __m256i none = _mm256_setzero_si256();
    int64_t p = 0;
    for (; p + 2 * V <= hw; p += 2 * V) affine_cols(A, b, C, hw, x, y, 2, p, none, 0);
    for (; p + V <= hw; p += V) affine_cols(A, b, C, hw, x, y, 1, p, none, 0);
    if (p < hw) {
        /* The last < 8 pixels through zero-padded copies: masked stores
         * (vmaskmovps) are slow on AMD when streaming. */
        const int64_t m = hw - p;
        float xt[64 * V], yt[64 * V];
        if (C <= 64) {
            for (int i = 0; i < C; i++)
                for (int k = 0; k < V; k++) xt[i * V + k] = k < m ? x[(int64_t)i * hw + p + k] : 0.0f;
            affine_cols(A, b, C, V, xt, yt, 1, 0, none, 0);
            for (int o = 0; o < C; o++) memcpy(y + (int64_t)o * hw + p, yt + o * V, (size_t)m * sizeof(float));
        } else {
            affine_cols(A, b, C, hw, x, y, 1, p, tail_mask(m), 1);
        }
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

/* s = sigmoid(r) and ln s from one exp: e = exp(-|r|);
 * s = 1/(1+e) (r >= 0) or e/(1+e); ln s = min(r, 0) - log1p(e). */
static inline __m256 coupling_fwd_v(__m256 xb, __m256 r, __m256 t, __m256 *logs) {
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 absr = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), r);
    const __m256 e = exp_v(_mm256_sub_ps(_mm256_setzero_ps(), absr));
    const __m256 neg = _mm256_cmp_ps(r, _mm256_setzero_ps(), _CMP_LT_OQ);
    const __m256 s = _mm256_div_ps(_mm256_blendv_ps(one, e, neg), _mm256_add_ps(one, e));
    *logs = _mm256_sub_ps(_mm256_min_ps(r, _mm256_setzero_ps()), log1p01_v(e));
    return _mm256_mul_ps(_mm256_add_ps(xb, t), s);
}

static inline void acc_add_ps(acc_t *s, __m256 v) {
    acc_add(s, _mm256_cvtps_pd(_mm256_castps256_ps128(v)), _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}

static double coupling_fwd_avx2(float *xb, const float *raw, const float *t, int64_t n) {
    acc_t sum = acc_zero();
    __m256 ls;
    int64_t i = 0;
    for (; i + V <= n; i += V) {
        _mm256_storeu_ps(xb + i, coupling_fwd_v(_mm256_loadu_ps(xb + i), _mm256_loadu_ps(raw + i),
                                                _mm256_loadu_ps(t + i), &ls));
        acc_add_ps(&sum, ls);
    }
    if (i < n) {
        const int64_t m = n - i;
        store_tail(xb + i, coupling_fwd_v(load_tail(xb + i, m, 0), load_tail(raw + i, m, 0), load_tail(t + i, m, 0), &ls), m);
        acc_add_ps(&sum, _mm256_and_ps(ls, _mm256_castsi256_ps(tail_mask(m))));
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

/* The log-density term per element, in double: -c - ls - 0.5 e e. */
static inline __m256d gauss_term(__m128 e, __m128 ls) {
    const __m256d ed = _mm256_cvtps_pd(e);
    const __m256d a = _mm256_sub_pd(_mm256_set1_pd(-HALF_LOG_2PI), _mm256_cvtps_pd(ls));
    return _mm256_sub_pd(a, _mm256_mul_pd(_mm256_mul_pd(_mm256_set1_pd(0.5), ed), ed));
}

static inline void gauss_block(acc_t *sum, __m256 z, __m256 m, __m256 ls, __m256 *eps, __m256 keep) {
    const __m256 e = _mm256_mul_ps(_mm256_sub_ps(z, m), exp_v(_mm256_sub_ps(_mm256_setzero_ps(), ls)));
    *eps = e;
    const __m256d keep_lo = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(_mm256_castps_si256(keep))));
    const __m256d keep_hi = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_extracti128_si256(_mm256_castps_si256(keep), 1)));
    acc_add(sum, _mm256_and_pd(keep_lo, gauss_term(_mm256_castps256_ps128(e), _mm256_castps256_ps128(ls))),
            _mm256_and_pd(keep_hi, gauss_term(_mm256_extractf128_ps(e, 1), _mm256_extractf128_ps(ls, 1))));
}

static double gauss_logp_avx2(const float *z, const float *mean, const float *log_sd, float *eps, int64_t n) {
    acc_t sum = acc_zero();
    const __m256 all = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    __m256 e;
    int64_t i = 0;
    for (; i + V <= n; i += V) {
        gauss_block(&sum, _mm256_loadu_ps(z + i), _mm256_loadu_ps(mean + i), _mm256_loadu_ps(log_sd + i), &e, all);
        if (eps) _mm256_storeu_ps(eps + i, e);
    }
    if (i < n) {
        const int64_t m = n - i;
        gauss_block(&sum, load_tail(z + i, m, 0), load_tail(mean + i, m, 0), load_tail(log_sd + i, m, 0), &e,
                    _mm256_castsi256_ps(tail_mask(m)));
        if (eps) store_tail(eps + i, e, m);
    }
    return acc_sum(sum);
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

/* ---- normal noise: Philox4x32-10 on 8 blocks at once, then Box-Muller
 * per pair in double with libm, as ref does: bit-identical to ref. ---- */

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
    for (uint64_t b = first >> 1; 2 * b < last; b += V) {
        philox8(k0, k1, b, index, r);
        for (int l = 0; l < V; l++) {
            const uint64_t jb = 2 * (b + (uint64_t)l);
            if (jb >= last) break;
            double z0, z1;
            gt_box_muller(r[0][l], r[1][l], r[2][l], r[3][l], &z0, &z1);
            if (jb >= first) out[jb - first] = (float)(tempd * z0);
            if (jb + 1 >= first && jb + 1 < last) out[jb + 1 - first] = (float)(tempd * z1);
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
    .normal_noise = normal_noise_avx2,
};
