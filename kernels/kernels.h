/* The flow kernels: every op the runtime runs outside oneDNN. One table per
 * ISA (kernels/ref is the truth, the others must agree with it); the runtime
 * calls through the table chosen once at start-up.
 *
 * Activations are planar per image: [C][H*W] floats. Element-wise kernels
 * take one channel's worth (or any contiguous run) of n elements. Sums come
 * back in double, accumulated in a fixed order, so that results do not depend
 * on how the caller splits work between threads. */
#ifndef GLOWRT_KERNELS_H
#define GLOWRT_KERNELS_H
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    const char *name;
    /* y[o][p] = b[o] + sum_i A[o][i] x[i][p] for p < hw; x and y do not overlap. */
    void (*affine)(const float *A, const float *b, int C, int64_t hw, const float *x, float *y);
    /* out[4c + 2dy + dx][i][j] = in[c][2i + dy][2j + dx]; H, W of the input. */
    void (*squeeze)(const float *in, float *out, int C, int H, int W);
    /* The inverse: C, H, W of the output (in has 4C channels of H/2 x W/2). */
    void (*unsqueeze)(const float *in, float *out, int C, int H, int W);
    /* Affine coupling: s = sigmoid(raw); xb = (xb + t) * s; returns sum ln s. */
    double (*coupling_fwd)(float *xb, const float *raw, const float *t, int64_t n);
    /* Its inverse: yb = yb / s - t. */
    void (*coupling_rev)(float *yb, const float *raw, const float *t, int64_t n);
    /* x += sign * h (additive coupling, sign = +1 forward, -1 reverse). */
    void (*add)(float *x, const float *h, int64_t n, float sign);
    /* Returns sum log N(z; mean, exp(log_sd)); eps (may be NULL) gets
     * (z - mean) * exp(-log_sd). */
    double (*gauss_logp)(const float *z, const float *mean, const float *log_sd, float *eps, int64_t n);
    /* z = mean + exp(log_sd) * eps. */
    void (*gauss_from_eps)(float *z, const float *mean, const float *log_sd, const float *eps, int64_t n);
    /* Adds the edge table e[9][C] to out[C][H][W] at the border positions
     * whose 3x3 taps fall outside the image; then ReLU when relu != 0. */
    void (*edge_bias)(float *out, const float *e, int C, int H, int W, int relu);
    /* The same on oneDNN's blocked layout: out is [ceil(C/B)][H*W][B] (B
     * lanes a block; lanes c >= C of the last block are left as they are)
     * and channel c's table entry of tap t is e[t * ld + c] (ld >= C: a run
     * of channels of a wider table). At each border position, channel c gets
     * the sum of the entries of its taps that fall outside the image, added
     * in tap order from 0 as edge_bias does (so the same bits); then, when
     * relu != 0, every position x = x > 0 ? x : 0. */
    void (*edge_bias_blocked)(float *out, const float *e, int ld, int C, int H, int W, int B, int relu);
    /* out[j] = temp * N(0,1) keyed by (seed, index, j0 + j), j < n. */
    void (*normal_noise)(uint64_t seed, uint64_t index, int64_t j0, int64_t n, float temp, float *out);
    /* A k x k convolution (k = 1 or 3, stride 1, zero padding k/2) of one
     * image in the plain layout, x [cin][h*w] -> y [cout][h*w] with weights
     * W [cout][cin*k*k] (oihw) given packed (P, gt_conv_pack) and bias b; run
     * where oneDNN has only its scalar reference code (aarch64 without Arm
     * Compute Library). Each
     * output is s = 0; s = fma(W[o][j], X[j][p], s) for j = i*k*k + tap in
     * order (X[j][p]: input channel i at the tap's shift of pixel p, 0
     * outside); then v = s + b[o]; with accumulate v = v + y[o][p] (the old
     * value); with relu v = v > 0 ? v : 0. So every ISA gives the same bits,
     * a NaN's too unless two NaNs meet in one fma or add (x and W, s and b,
     * v and the old y): which one passes on is the compiler's choice of
     * operand order. (W and b are finite: the model loader checks.)
     * scratch: gt_conv_scratch_bytes(), 64-byte aligned. */
    void (*conv)(const float *x, const float *P, const float *b, float *y, int cin, int cout, int h, int w, int k,
                 int relu, int accumulate, void *scratch);
} gt_kernels;

/* gt_kernels.conv's weights, packed once (the session keeps them so): 8-output
 * panels [panel][j][8], j < K = cin*k*k, rows past cout zero. The SIMD
 * convolutions multiply a panel by the input read through a table of K
 * offsets; a 3x3 one reads a zero-bordered copy of its input,
 * [cin][h+2][w+2] (+ 16), and first sums each panel into 8 rows of (w+2)-wide
 * image rows. */
#define GT_CONV_MR 8
static inline size_t gt_conv_packed_bytes(int cin, int cout, int k) {
    return sizeof(float) * (size_t)((cout + GT_CONV_MR - 1) / GT_CONV_MR * GT_CONV_MR) * (size_t)cin * (size_t)(k * k);
}
static inline void gt_conv_pack(const float *W, int cin, int cout, int k, float *P) {
    const int64_t K = (int64_t)cin * k * k;
    for (int o0 = 0; o0 < cout; o0 += GT_CONV_MR) {
        float *p = P + (int64_t)o0 * K;
        for (int64_t j = 0; j < K; j++)
            for (int r = 0; r < GT_CONV_MR; r++)
                p[j * GT_CONV_MR + r] = o0 + r < cout ? W[(int64_t)(o0 + r) * K + j] : 0.0f;
    }
}
/* The epilogue of every output: v = s + b, + the old y with accumulate, ReLU. */
static inline float gt_conv_finish(float s, float b, float yold, int relu, int accumulate) {
    float v = s + b;
    if (accumulate) v = v + yold;
    return relu ? (v > 0.0f ? v : 0.0f) : v;
}
/* The scratch in bytes, with 64 for each part's alignment. */
static inline size_t gt_conv_scratch_bytes(int cin, int h, int w, int k) {
    const int64_t K = (int64_t)cin * k * k;
    const int64_t padded = k == 1 ? 0 : (int64_t)cin * (h + 2) * (w + 2) + 16;
    const int64_t rows = k == 1 ? 0 : GT_CONV_MR * (((int64_t)h * (w + 2) + 7) / 8 * 8);
    return sizeof(float) * (size_t)(2 * K + padded + rows) + 3 * 64;
}

/* The definition of the sampling noise, shared by every ISA so that they
 * stay bit-identical: elements 2b and 2b + 1 of a sample come from the
 * Philox4x32-10 block b, words r0..r3, by Box-Muller in double:
 * sqrt(-2 ln u1) (cos, sin)(2 pi u2).
 *
 * ln and sin/cos are the project's own (not libm's, which differs between
 * C libraries and cannot be vectorised bit for bit): every step below is one
 * IEEE operation (+ - * / sqrt, fma, nearbyint), no step is left for the
 * compiler to fuse, so a SIMD version doing the same steps lane by lane gives
 * the same bits (kernels/avx2 does; tests/test_kernels.c checks it, and the
 * error against libm). Polynomials are truncated Taylor series, so the
 * coefficients are 1/(2k+1) and 1/n!. */

/* ln u for u in [2^-53, 1]: u = m 2^e with m in [sqrt(1/2), sqrt(2)],
 * ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.172, 10 terms. */
static inline double gt_bm_log(double u) {
    uint64_t bits;
    memcpy(&bits, &u, sizeof bits);
    double e = (double)(int64_t)(bits >> 52) - 1023.0;
    const uint64_t mb = (bits & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull;
    double m;
    memcpy(&m, &mb, sizeof m);
    if (m > 1.4142135623730951) {
        m = m * 0.5;
        e = e + 1.0;
    }
    const double f = m - 1.0; /* exact (Sterbenz) */
    const double s = f / (2.0 + f);
    const double z = s * s;
    double q = 0.05263157894736842; /* 1/19 */
    q = fma(q, z, 0.058823529411764705);
    q = fma(q, z, 0.06666666666666667);
    q = fma(q, z, 0.07692307692307693);
    q = fma(q, z, 0.09090909090909091);
    q = fma(q, z, 0.1111111111111111);
    q = fma(q, z, 0.14285714285714285);
    q = fma(q, z, 0.2);
    q = fma(q, z, 0.3333333333333333); /* 1/3 */
    const double s2 = 2.0 * s;
    const double s2z = s2 * z;
    const double lm = fma(s2z, q, s2);
    return fma(e, 0.6931471805599453, lm);
}

/* sin and cos of 2 pi u for u in [0, 1): u = k/4 + t exactly with
 * |t| <= 1/8, so the angle 2 pi t is in [-pi/4, pi/4]; then quadrant k. */
static inline void gt_bm_sincos2pi(double u, double *sn, double *cs) {
    const double k = nearbyint(4.0 * u); /* 0 .. 4, ties to even */
    const double t = u - 0.25 * k;        /* exact */
    const double a = t * 6.283185307179586;
    const double z = a * a;
    double ps = 2.8114572543455206e-15; /* 1/17! */
    ps = fma(ps, z, -7.647163731819816e-13);
    ps = fma(ps, z, 1.6059043836821613e-10);
    ps = fma(ps, z, -2.505210838544172e-08);
    ps = fma(ps, z, 2.7557319223985893e-06);
    ps = fma(ps, z, -0.0001984126984126984);
    ps = fma(ps, z, 0.008333333333333333);
    ps = fma(ps, z, -0.16666666666666666); /* -1/3! */
    const double az = a * z;
    const double sa = fma(az, ps, a);
    double pc = 4.779477332387385e-14; /* 1/16! */
    pc = fma(pc, z, -1.1470745597729725e-11);
    pc = fma(pc, z, 2.08767569878681e-09);
    pc = fma(pc, z, -2.755731922398589e-07);
    pc = fma(pc, z, 2.48015873015873e-05);
    pc = fma(pc, z, -0.001388888888888889);
    pc = fma(pc, z, 0.041666666666666664);
    pc = fma(pc, z, -0.5);
    const double ca = fma(z, pc, 1.0);
    const int q = (int)k & 3;
    const double s0 = (q & 1) ? ca : sa, c0 = (q & 1) ? sa : ca;
    *sn = (q & 2) ? -s0 : s0;
    *cs = ((q + 1) & 2) ? -c0 : c0;
}

static inline void gt_box_muller(uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3, double *z_even, double *z_odd) {
    const double u1 = ((double)(((uint64_t)r0 << 21) ^ (r1 >> 11)) + 1.0) * 0x1p-53; /* (0, 1] */
    const double u2 = (double)(((uint64_t)r2 << 21) ^ (r3 >> 11)) * 0x1p-53;         /* [0, 1) */
    const double rad = sqrt(-2.0 * gt_bm_log(u1));
    double sn, cs;
    gt_bm_sincos2pi(u2, &sn, &cs);
    *z_even = rad * cs;
    *z_odd = rad * sn;
}

extern const gt_kernels gt_kernels_ref;
/* ref's edge_bias_blocked and conv, for the tables that have no version of their own. */
void gt_edge_bias_blocked_ref(float *out, const float *e, int ld, int C, int H, int W, int B, int relu);
void gt_conv_ref(const float *x, const float *P, const float *b, float *y, int cin, int cout, int h, int w, int k,
                 int relu, int accumulate, void *scratch);
/* The SIMD tables: defined only in builds for that architecture (x86-64,
 * aarch64); use them through kernels_select or kernels_isa. */
extern const gt_kernels gt_kernels_avx2;
extern const gt_kernels gt_kernels_neon;
void gt_conv_neon(const float *x, const float *P, const float *b, float *y, int cin, int cout, int h, int w, int k,
                  int relu, int accumulate, void *scratch);

/* The table for one ISA name ("ref", "avx2", "neon") if this build has it
 * and this CPU (and OS) runs it; else NULL and why. */
const gt_kernels *kernels_isa(const char *name, const char **why_not);

/* The table in use: GLOWRT_ISA=ref|avx2|neon forces one; otherwise the best
 * this CPU runs. Returns NULL (and a message) when a forced ISA is missing. */
const gt_kernels *kernels_select(const char **why_not);
#endif
