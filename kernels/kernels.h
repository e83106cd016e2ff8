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
    /* out[j] = temp * N(0,1) keyed by (seed, index, j0 + j), j < n. */
    void (*normal_noise)(uint64_t seed, uint64_t index, int64_t j0, int64_t n, float temp, float *out);
} gt_kernels;

/* The definition of the sampling noise, shared by every ISA so that they
 * stay bit-identical: elements 2b and 2b + 1 of a sample come from the
 * Philox4x32-10 block b, words r0..r3, by Box-Muller in double. */
static inline void gt_box_muller(uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3, double *z_even, double *z_odd) {
    const double u1 = ((double)(((uint64_t)r0 << 21) ^ (r1 >> 11)) + 1.0) * 0x1p-53; /* (0, 1] */
    const double u2 = (double)(((uint64_t)r2 << 21) ^ (r3 >> 11)) * 0x1p-53;         /* [0, 1) */
    const double rad = sqrt(-2.0 * log(u1)), ang = 6.283185307179586 * u2;
    *z_even = rad * cos(ang);
    *z_odd = rad * sin(ang);
}

extern const gt_kernels gt_kernels_ref;
/* The SIMD tables: defined only in builds for that architecture (x86-64,
 * aarch64); use them through kernels_select or kernels_isa. */
extern const gt_kernels gt_kernels_avx2;
extern const gt_kernels gt_kernels_neon;

/* The table for one ISA name ("ref", "avx2", "neon") if this build has it
 * and this CPU (and OS) runs it; else NULL and why. */
const gt_kernels *kernels_isa(const char *name, const char **why_not);

/* The table in use: GLOWRT_ISA=ref|avx2|neon forces one; otherwise the best
 * this CPU runs. Returns NULL (and a message) when a forced ISA is missing. */
const gt_kernels *kernels_select(const char **why_not);
#endif
