/* ARM64 NEON (Advanced SIMD) flow kernels: the same functions as
 * kernels/ref/flow_ref.c, 4 floats at a time. NEON is baseline on aarch64,
 * so no extra flags. The algorithms are those of kernels/avx2 (same
 * polynomials, same FMA sequence, same double summation order: element i
 * to lane i mod 8, lanes reduced as ((l0+l4)+(l1+l5)) + ((l2+l6)+(l3+l7)),
 * the tail as one zero-padded block of 8), so the two SIMD paths agree with
 * each other, and with ref within the tolerances of tests/test_kernels.c.
 * squeeze, unsqueeze, add, edge_bias and normal_noise are bit-identical to
 * ref. */
#include <arm_neon.h>
#include <math.h>
#include <string.h>

#include "kernels/kernels.h"

#define V 4

/* ---- vector math (see kernels/avx2/flow_avx2.c for the derivation) ---- */

static inline float32x4_t exp_v(float32x4_t x) {
    const float32x4_t lo = vdupq_n_f32(-87.33654f), hi = vdupq_n_f32(89.0f); /* above 88.7228 the doubling overflows */
    const float32x4_t xc = vminq_f32(hi, vmaxq_f32(lo, x)); /* NaN propagates */
    const float32x4_t n = vrndnq_f32(vmulq_f32(xc, vdupq_n_f32(1.44269504088896341f)));
    float32x4_t r = vfmsq_f32(xc, n, vdupq_n_f32(0.693359375f));
    r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
    float32x4_t p = vdupq_n_f32(1.9875691500E-4f);
    p = vfmaq_f32(vdupq_n_f32(1.3981999507E-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(8.3334519073E-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(4.1665795894E-2f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.6666665459E-1f), p, r);
    p = vfmaq_f32(vdupq_n_f32(5.0000001201E-1f), p, r);
    p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), p, vmulq_f32(r, r));
    int32x4_t ni = vcvtq_s32_f32(n);
    const uint32x4_t big = vcgtq_s32(ni, vdupq_n_s32(127));
    ni = vaddq_s32(ni, vreinterpretq_s32_u32(big)); /* big is -1 */
    const float32x4_t scale = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(ni, vdupq_n_s32(127)), 23));
    float32x4_t y = vmulq_f32(p, scale);
    y = vaddq_f32(y, vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(y), big)));
    return vbslq_f32(vcltq_f32(x, lo), vdupq_n_f32(0.0f), y);
}

/* w = 1 + u and rw = 1 / w come from the caller (coupling_fwd_v shares the
 * division with s). */
static inline float32x4_t log1p01_v(float32x4_t u, float32x4_t w, float32x4_t rw) {
    const float32x4_t one = vdupq_n_f32(1.0f);
    const float32x4_t corr = vmulq_f32(vsubq_f32(u, vsubq_f32(w, one)), rw);
    const uint32x4_t big = vcgeq_f32(w, vdupq_n_f32(1.41421356237f));
    const float32x4_t e = vreinterpretq_f32_u32(vandq_u32(big, vreinterpretq_u32_f32(one)));
    const float32x4_t x = vsubq_f32(vbslq_f32(big, vmulq_f32(w, vdupq_n_f32(0.5f)), w), one);
    const float32x4_t z = vmulq_f32(x, x);
    float32x4_t p = vdupq_n_f32(7.0376836292E-2f);
    p = vfmaq_f32(vdupq_n_f32(-1.1514610310E-1f), p, x);
    p = vfmaq_f32(vdupq_n_f32(1.1676998740E-1f), p, x);
    p = vfmaq_f32(vdupq_n_f32(-1.2420140846E-1f), p, x);
    p = vfmaq_f32(vdupq_n_f32(1.4249322787E-1f), p, x);
    p = vfmaq_f32(vdupq_n_f32(-1.6668057665E-1f), p, x);
    p = vfmaq_f32(vdupq_n_f32(2.0000714765E-1f), p, x);
    p = vfmaq_f32(vdupq_n_f32(-2.4999993993E-1f), p, x);
    p = vfmaq_f32(vdupq_n_f32(3.3333331174E-1f), p, x);
    float32x4_t y = vmulq_f32(vmulq_f32(p, x), z);
    y = vfmaq_f32(y, e, vdupq_n_f32(-2.12194440e-4f));
    y = vfmsq_f32(y, z, vdupq_n_f32(0.5f));
    y = vaddq_f32(vaddq_f32(x, y), corr);
    return vfmaq_f32(y, e, vdupq_n_f32(0.693359375f));
}

/* Double accumulation: four float64x2 for lanes {0,1} {2,3} {4,5} {6,7}. */
typedef struct { float64x2_t a01, a23, b01, b23; } acc_t;
static inline acc_t acc_zero(void) {
    const float64x2_t z = vdupq_n_f64(0);
    return (acc_t){z, z, z, z};
}
/* lo: elements 0..3 of a block of 8, hi: 4..7 (as float terms). */
static inline void acc_add_ps(acc_t *s, float32x4_t lo, float32x4_t hi) {
    s->a01 = vaddq_f64(s->a01, vcvt_f64_f32(vget_low_f32(lo)));
    s->a23 = vaddq_f64(s->a23, vcvt_high_f64_f32(lo));
    s->b01 = vaddq_f64(s->b01, vcvt_f64_f32(vget_low_f32(hi)));
    s->b23 = vaddq_f64(s->b23, vcvt_high_f64_f32(hi));
}
static inline double acc_sum(acc_t s) {
    const float64x2_t t01 = vaddq_f64(s.a01, s.b01), t23 = vaddq_f64(s.a23, s.b23);
    return (vgetq_lane_f64(t01, 0) + vgetq_lane_f64(t01, 1)) + (vgetq_lane_f64(t23, 0) + vgetq_lane_f64(t23, 1));
}

/* A padded copy of a tail of m < 8 floats (two vectors). */
typedef struct { float v[8]; } blk8;
static inline blk8 tail8(const float *p, int64_t m) {
    blk8 b;
    for (int k = 0; k < 8; k++) b.v[k] = k < m ? p[k] : 0.0f;
    return b;
}

/* ---- affine: R rows x NV vectors of 4 pixels; scalar FMA for the last < 4 ---- */

static inline __attribute__((always_inline)) void affine_tile(const float *A, const float *b, int C, int64_t hw,
                                                              const float *x, float *y, int o, int R, int NV, int64_t p) {
    float32x4_t acc[4][4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[r][v] = vld1q_dup_f32(b + o + r);
    const float *Ao = A + (int64_t)o * C;
    for (int i = 0; i < C; i++) {
        const float *xi = x + (int64_t)i * hw + p;
        float32x4_t xv[4];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) xv[v] = vld1q_f32(xi + V * v);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const float32x4_t a = vld1q_dup_f32(Ao + (int64_t)r * C + i);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[r][v] = vfmaq_f32(acc[r][v], a, xv[v]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) vst1q_f32(y + (int64_t)(o + r) * hw + p + V * v, acc[r][v]);
}

static inline __attribute__((always_inline)) void affine_cols(const float *A, const float *b, int C, int64_t hw,
                                                              const float *x, float *y, int NV, int64_t p) {
    int o = 0;
    for (; o + 4 <= C; o += 4) affine_tile(A, b, C, hw, x, y, o, 4, NV, p);
    switch (C - o) {
    case 3: affine_tile(A, b, C, hw, x, y, o, 3, NV, p); break;
    case 2: affine_tile(A, b, C, hw, x, y, o, 2, NV, p); break;
    case 1: affine_tile(A, b, C, hw, x, y, o, 1, NV, p); break;
    default: break;
    }
}

static void affine_neon(const float *A, const float *b, int C, int64_t hw, const float *x, float *y) {
    int64_t p = 0;
    for (; p + 4 * V <= hw; p += 4 * V) affine_cols(A, b, C, hw, x, y, 4, p);
    for (; p + V <= hw; p += V) affine_cols(A, b, C, hw, x, y, 1, p);
    for (; p < hw; p++)
        for (int o = 0; o < C; o++) {
            float acc = b[o];
            for (int i = 0; i < C; i++) acc = fmaf(A[(int64_t)o * C + i], x[(int64_t)i * hw + p], acc);
            y[(int64_t)o * hw + p] = acc;
        }
}

/* ---- squeeze / unsqueeze: vld2 / vst2 (de)interleave ---- */

static void squeeze_neon(const float *in, float *out, int C, int H, int W) {
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
                    const float32x4x2_t t = vld2q_f32(row + 2 * j);
                    vst1q_f32(e + j, t.val[0]);
                    vst1q_f32(d + j, t.val[1]);
                }
                for (; j < w2; j++) {
                    e[j] = row[2 * j];
                    d[j] = row[2 * j + 1];
                }
            }
        }
}

static void unsqueeze_neon(const float *in, float *out, int C, int H, int W) {
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
                    float32x4x2_t t;
                    t.val[0] = vld1q_f32(e + j);
                    t.val[1] = vld1q_f32(d + j);
                    vst2q_f32(row + 2 * j, t);
                }
                for (; j < w2; j++) {
                    row[2 * j] = e[j];
                    row[2 * j + 1] = d[j];
                }
            }
        }
}

/* ---- affine coupling ---- */

static inline float32x4_t coupling_fwd_v(float32x4_t xb, float32x4_t r, float32x4_t t, float32x4_t *logs) {
    const float32x4_t one = vdupq_n_f32(1.0f), zero = vdupq_n_f32(0.0f);
    const float32x4_t e = exp_v(vnegq_f32(vabsq_f32(r)));
    const float32x4_t w = vaddq_f32(one, e), rw = vdivq_f32(one, w);
    const float32x4_t s = vmulq_f32(vbslq_f32(vcltq_f32(r, zero), e, one), rw);
    /* min(r, 0) without NaN games: r < 0 ? r : 0 */
    *logs = vsubq_f32(vbslq_f32(vcltq_f32(r, zero), r, zero), log1p01_v(e, w, rw));
    return vmulq_f32(vaddq_f32(xb, t), s);
}

static void coupling8(float *xb, const float *raw, const float *t, acc_t *sum, int64_t m) {
    float32x4_t l0, l1;
    const float32x4_t y0 = coupling_fwd_v(vld1q_f32(xb), vld1q_f32(raw), vld1q_f32(t), &l0);
    const float32x4_t y1 = coupling_fwd_v(vld1q_f32(xb + 4), vld1q_f32(raw + 4), vld1q_f32(t + 4), &l1);
    vst1q_f32(xb, y0);
    vst1q_f32(xb + 4, y1);
    if (m < 8) { /* zero the padding lanes' terms */
        const int32x4_t idx = {0, 1, 2, 3};
        const uint32x4_t k0 = vcltq_s32(idx, vdupq_n_s32((int)m)), k1 = vcltq_s32(vaddq_s32(idx, vdupq_n_s32(4)), vdupq_n_s32((int)m));
        l0 = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(l0), k0));
        l1 = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(l1), k1));
    }
    acc_add_ps(sum, l0, l1);
}

static double coupling_fwd_neon(float *xb, const float *raw, const float *t, int64_t n) {
    acc_t sum = acc_zero();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) coupling8(xb + i, raw + i, t + i, &sum, 8);
    if (i < n) {
        const int64_t m = n - i;
        blk8 bx = tail8(xb + i, m), br = tail8(raw + i, m), bt = tail8(t + i, m);
        coupling8(bx.v, br.v, bt.v, &sum, m);
        memcpy(xb + i, bx.v, (size_t)m * sizeof(float));
    }
    return acc_sum(sum);
}

static inline float32x4_t coupling_rev_v(float32x4_t yb, float32x4_t r, float32x4_t t) {
    const float32x4_t inv_s = vaddq_f32(vdupq_n_f32(1.0f), exp_v(vnegq_f32(r)));
    return vnegq_f32(vfmsq_f32(t, yb, inv_s)); /* yb * inv_s - t, one rounding */
}

static void coupling_rev_neon(float *yb, const float *raw, const float *t, int64_t n) {
    int64_t i = 0;
    for (; i + V <= n; i += V) vst1q_f32(yb + i, coupling_rev_v(vld1q_f32(yb + i), vld1q_f32(raw + i), vld1q_f32(t + i)));
    if (i < n) {
        const int64_t m = n - i;
        blk8 by = tail8(yb + i, m), br = tail8(raw + i, m), bt = tail8(t + i, m);
        vst1q_f32(by.v, coupling_rev_v(vld1q_f32(by.v), vld1q_f32(br.v), vld1q_f32(bt.v)));
        memcpy(yb + i, by.v, (size_t)m * sizeof(float));
    }
}

static void add_neon(float *x, const float *h, int64_t n, float sign) {
    const float32x4_t s = vdupq_n_f32(sign);
    int64_t i = 0;
    for (; i + 2 * V <= n; i += 2 * V) {
        vst1q_f32(x + i, vfmaq_f32(vld1q_f32(x + i), s, vld1q_f32(h + i)));
        vst1q_f32(x + i + V, vfmaq_f32(vld1q_f32(x + i + V), s, vld1q_f32(h + i + V)));
    }
    for (; i < n; i++) x[i] += sign * h[i];
}

/* ---- Gaussian prior ---- */

#define HALF_LOG_2PI 0.91893853320467274178

/* As avx2: ls + 0.5 e^2 per element in float (one FMA), summed in double;
 * the constant and the sign once at the end. Zero-padded tail lanes give 0. */
static void gauss8(const float *z, const float *mean, const float *ls, float *eps, acc_t *sum) {
    float32x4_t t[2];
    for (int h = 0; h < 2; h++) {
        const float32x4_t l = vld1q_f32(ls + 4 * h);
        const float32x4_t e = vmulq_f32(vsubq_f32(vld1q_f32(z + 4 * h), vld1q_f32(mean + 4 * h)), exp_v(vnegq_f32(l)));
        vst1q_f32(eps + 4 * h, e);
        t[h] = vfmaq_f32(l, vmulq_f32(vdupq_n_f32(0.5f), e), e);
    }
    acc_add_ps(sum, t[0], t[1]);
}

static double gauss_logp_neon(const float *z, const float *mean, const float *log_sd, float *eps, int64_t n) {
    acc_t sum = acc_zero();
    float scratch[8];
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) gauss8(z + i, mean + i, log_sd + i, eps ? eps + i : scratch, &sum);
    if (i < n) {
        const int64_t m = n - i;
        blk8 bz = tail8(z + i, m), bm = tail8(mean + i, m), bl = tail8(log_sd + i, m);
        gauss8(bz.v, bm.v, bl.v, scratch, &sum);
        if (eps) memcpy(eps + i, scratch, (size_t)m * sizeof(float));
    }
    return -HALF_LOG_2PI * (double)n - acc_sum(sum);
}

static void gauss_from_eps_neon(float *z, const float *mean, const float *log_sd, const float *eps, int64_t n) {
    int64_t i = 0;
    for (; i + V <= n; i += V)
        vst1q_f32(z + i, vfmaq_f32(vld1q_f32(mean + i), exp_v(vld1q_f32(log_sd + i)), vld1q_f32(eps + i)));
    if (i < n) {
        const int64_t m = n - i;
        blk8 bm = tail8(mean + i, m), bl = tail8(log_sd + i, m), be = tail8(eps + i, m);
        vst1q_f32(bm.v, vfmaq_f32(vld1q_f32(bm.v), exp_v(vld1q_f32(bl.v)), vld1q_f32(be.v)));
        memcpy(z + i, bm.v, (size_t)m * sizeof(float));
    }
}

/* ---- edge bias ---- */

static float edge_sum(const float *e, int C, int c, int top, int bottom, int left, int right) {
    float v = 0;
    for (int ky = 0; ky < 3; ky++)
        for (int kx = 0; kx < 3; kx++)
            if ((ky == 0 && top) || (ky == 2 && bottom) || (kx == 0 && left) || (kx == 2 && right)) v += e[(ky * 3 + kx) * C + c];
    return v;
}

static void relu_neon(float *x, int64_t n) {
    const float32x4_t z = vdupq_n_f32(0.0f);
    int64_t i = 0;
    /* x > 0 ? x : +0, as ref (NaN and -0 give +0; vmaxq would keep NaN) */
    for (; i + V <= n; i += V) {
        const float32x4_t v = vld1q_f32(x + i);
        vst1q_f32(x + i, vbslq_f32(vcgtq_f32(v, z), v, z));
    }
    for (; i < n; i++) x[i] = x[i] > 0 ? x[i] : 0;
}

static void edge_bias_neon(float *out, const float *e, int C, int H, int W, int relu) {
    for (int c = 0; c < C; c++) {
        float *pl = out + (int64_t)c * H * W;
        for (int h = 0; h < H; h++) {
            const int top = h == 0, bottom = h == H - 1;
            float *row = pl + (int64_t)h * W;
            row[0] += edge_sum(e, C, c, top, bottom, 1, W == 1);
            if (W > 1) row[W - 1] += edge_sum(e, C, c, top, bottom, 0, 1);
            if ((top | bottom) && W > 2) {
                const float v = edge_sum(e, C, c, top, bottom, 0, 0);
                const float32x4_t vv = vdupq_n_f32(v);
                int w = 1;
                for (; w + V <= W - 1; w += V) vst1q_f32(row + w, vaddq_f32(vld1q_f32(row + w), vv));
                for (; w < W - 1; w++) row[w] += v;
            }
        }
    }
    if (relu) relu_neon(out, (int64_t)C * H * W);
}

/* ---- normal noise: Philox4x32-10 on 4 blocks at once, then kernels.h's
 * gt_box_muller per pair, as ref: bit-identical to ref. ---- */

static inline uint32x4_t mulhi(uint32x4_t a, uint32x4_t m) {
    return vcombine_u32(vshrn_n_u64(vmull_u32(vget_low_u32(a), vget_low_u32(m)), 32), vshrn_n_u64(vmull_high_u32(a, m), 32));
}

static void philox4(uint32_t k0, uint32_t k1, uint64_t b0, uint64_t index, uint32_t r[4][V]) {
    uint32_t lo[V], hi[V];
    for (int l = 0; l < V; l++) {
        lo[l] = (uint32_t)(b0 + (uint64_t)l);
        hi[l] = (uint32_t)((b0 + (uint64_t)l) >> 32);
    }
    uint32x4_t c0 = vld1q_u32(lo), c1 = vld1q_u32(hi);
    uint32x4_t c2 = vdupq_n_u32((uint32_t)index), c3 = vdupq_n_u32((uint32_t)(index >> 32));
    const uint32x4_t m0 = vdupq_n_u32(0xD2511F53u), m1 = vdupq_n_u32(0xCD9E8D57u);
    for (int rd = 0; rd < 10; rd++) {
        const uint32x4_t p0hi = mulhi(c0, m0), p1hi = mulhi(c2, m1);
        const uint32x4_t p0lo = vmulq_u32(c0, m0), p1lo = vmulq_u32(c2, m1);
        const uint32x4_t n0 = veorq_u32(veorq_u32(p1hi, c1), vdupq_n_u32(k0));
        const uint32x4_t n2 = veorq_u32(veorq_u32(p0hi, c3), vdupq_n_u32(k1));
        c0 = n0;
        c1 = p1lo;
        c2 = n2;
        c3 = p0lo;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    vst1q_u32(r[0], c0);
    vst1q_u32(r[1], c1);
    vst1q_u32(r[2], c2);
    vst1q_u32(r[3], c3);
}

static void normal_noise_neon(uint64_t seed, uint64_t index, int64_t j0, int64_t n, float temp, float *out) {
    const uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    const double tempd = temp;
    const uint64_t first = (uint64_t)j0, last = (uint64_t)(j0 + n);
    uint32_t r[4][V];
    for (uint64_t b = first >> 1; 2 * b < last; b += V) {
        philox4(k0, k1, b, index, r);
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

const gt_kernels gt_kernels_neon = {
    .name = "neon",
    .affine = affine_neon,
    .squeeze = squeeze_neon,
    .unsqueeze = unsqueeze_neon,
    .coupling_fwd = coupling_fwd_neon,
    .coupling_rev = coupling_rev_neon,
    .add = add_neon,
    .gauss_logp = gauss_logp_neon,
    .gauss_from_eps = gauss_from_eps_neon,
    .edge_bias = edge_bias_neon,
    .edge_bias_blocked = gt_edge_bias_blocked_ref,
    .normal_noise = normal_noise_neon,
    .conv = gt_conv_neon,
};
