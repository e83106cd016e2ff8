/* ARM64 NEON convolution (gt_kernels.conv): where oneDNN has only its
 * scalar reference GEMM (Debian's aarch64 oneDNN, built without the Arm
 * Compute Library), the coupling networks' convolutions run here.
 *
 * A GEMM: Y[o][p] = sum_j W[o][j] X[j][p], j over cin * k * k. W is packed
 * into panels of 8 outputs [j][8]; X is the input itself for k = 1, or its
 * 9 taps copied for a block of pixels for k = 3 (im2col). An 8 x 8 tile of
 * Y is 16 accumulator registers; each j adds one broadcast weight per
 * output row times 8 pixels (fmla by element), the products fused in j
 * order exactly as kernels/ref/conv_ref.c does, so the bits are ref's. */
#include <arm_neon.h>
#include <math.h>
#include <stdint.h>

#include "kernels/kernels.h"

#define MR GT_CONV_MR

/* Panels of 8 rows of W [cout][K]: P[panel][j][r], rows past cout zero. */
static void pack_weights(const float *W, int cout, int64_t K, float *P) {
    for (int o0 = 0; o0 < cout; o0 += MR) {
        float *p = P + (int64_t)(o0 / MR) * K * MR;
        for (int64_t j = 0; j < K; j++)
            for (int r = 0; r < MR; r++) p[j * MR + r] = o0 + r < cout ? W[(int64_t)(o0 + r) * K + j] : 0.0f;
    }
}

/* The k x k taps of input x [cin][h][w] for pixels p0 .. p0 + n - 1, as
 * rows T[i*k*k + t][0 .. n), zero outside the image. */
static void copy_taps(const float *x, int cin, int h, int w, int k, int64_t p0, int n, float *T) {
    const int r = k / 2, kk = k * k;
    const int64_t hw = (int64_t)h * w;
    for (int i = 0; i < cin; i++)
        for (int t = 0; t < kk; t++) {
            const int dy = t / k - r, dx = t % k - r;
            float *row = T + ((int64_t)i * kk + t) * n;
            int py = (int)(p0 / w), px = (int)(p0 % w);
            for (int c = 0; c < n; c++) {
                const int sy = py + dy, sx = px + dx;
                row[c] = sy < 0 || sy >= h || sx < 0 || sx >= w ? 0.0f : x[i * hw + (int64_t)sy * w + sx];
                if (++px == w) {
                    px = 0;
                    py++;
                }
            }
        }
}

/* v = s + b; + the old y; ReLU: the epilogue of kernels.h, 4 lanes. */
static inline float32x4_t finish4(float32x4_t s, float b, const float *yold, int relu, int accumulate) {
    float32x4_t v = vaddq_f32(s, vdupq_n_f32(b));
    if (accumulate) v = vaddq_f32(v, vld1q_f32(yold));
    /* v > 0 ? v : 0: maxnm gives 0 for NaN and +0 for -0, as the comparison does */
    return relu ? vmaxnmq_f32(v, vdupq_n_f32(0.0f)) : v;
}

static inline float finish1(float s, float b, float yold, int relu, int accumulate) {
    float v = s + b;
    if (accumulate) v = v + yold;
    return relu ? (v > 0.0f ? v : 0.0f) : v;
}

/* Y rows o0 .. o0 + rows - 1 (rows <= 8), columns [0, n) of this block:
 * panel P [K][8], X [K][ldx], Y [rows][ldy]. */
static void panel_times(const float *P, int64_t K, const float *X, int64_t ldx, int n, const float *b, float *Y,
                        int64_t ldy, int rows, int relu, int accumulate) {
    int c = 0;
    for (; c + 8 <= n; c += 8) {
        float32x4_t s[MR][2];
        for (int r = 0; r < MR; r++) s[r][0] = s[r][1] = vdupq_n_f32(0.0f);
        const float *x = X + c, *p = P;
        for (int64_t j = 0; j < K; j++, x += ldx, p += MR) {
            const float32x4_t x0 = vld1q_f32(x), x1 = vld1q_f32(x + 4);
            const float32x4_t w0 = vld1q_f32(p), w1 = vld1q_f32(p + 4);
            s[0][0] = vfmaq_laneq_f32(s[0][0], x0, w0, 0);
            s[0][1] = vfmaq_laneq_f32(s[0][1], x1, w0, 0);
            s[1][0] = vfmaq_laneq_f32(s[1][0], x0, w0, 1);
            s[1][1] = vfmaq_laneq_f32(s[1][1], x1, w0, 1);
            s[2][0] = vfmaq_laneq_f32(s[2][0], x0, w0, 2);
            s[2][1] = vfmaq_laneq_f32(s[2][1], x1, w0, 2);
            s[3][0] = vfmaq_laneq_f32(s[3][0], x0, w0, 3);
            s[3][1] = vfmaq_laneq_f32(s[3][1], x1, w0, 3);
            s[4][0] = vfmaq_laneq_f32(s[4][0], x0, w1, 0);
            s[4][1] = vfmaq_laneq_f32(s[4][1], x1, w1, 0);
            s[5][0] = vfmaq_laneq_f32(s[5][0], x0, w1, 1);
            s[5][1] = vfmaq_laneq_f32(s[5][1], x1, w1, 1);
            s[6][0] = vfmaq_laneq_f32(s[6][0], x0, w1, 2);
            s[6][1] = vfmaq_laneq_f32(s[6][1], x1, w1, 2);
            s[7][0] = vfmaq_laneq_f32(s[7][0], x0, w1, 3);
            s[7][1] = vfmaq_laneq_f32(s[7][1], x1, w1, 3);
        }
        for (int r = 0; r < rows; r++) {
            float *y = Y + r * ldy + c;
            vst1q_f32(y, finish4(s[r][0], b[r], y, relu, accumulate));
            vst1q_f32(y + 4, finish4(s[r][1], b[r], y + 4, relu, accumulate));
        }
    }
    for (; c + 4 <= n; c += 4) {
        float32x4_t s[MR];
        for (int r = 0; r < MR; r++) s[r] = vdupq_n_f32(0.0f);
        const float *x = X + c, *p = P;
        for (int64_t j = 0; j < K; j++, x += ldx, p += MR) {
            const float32x4_t x0 = vld1q_f32(x), w0 = vld1q_f32(p), w1 = vld1q_f32(p + 4);
            s[0] = vfmaq_laneq_f32(s[0], x0, w0, 0);
            s[1] = vfmaq_laneq_f32(s[1], x0, w0, 1);
            s[2] = vfmaq_laneq_f32(s[2], x0, w0, 2);
            s[3] = vfmaq_laneq_f32(s[3], x0, w0, 3);
            s[4] = vfmaq_laneq_f32(s[4], x0, w1, 0);
            s[5] = vfmaq_laneq_f32(s[5], x0, w1, 1);
            s[6] = vfmaq_laneq_f32(s[6], x0, w1, 2);
            s[7] = vfmaq_laneq_f32(s[7], x0, w1, 3);
        }
        for (int r = 0; r < rows; r++) vst1q_f32(Y + r * ldy + c, finish4(s[r], b[r], Y + r * ldy + c, relu, accumulate));
    }
    for (; c < n; c++) /* the last 1-3 pixels, one at a time */
        for (int r = 0; r < rows; r++) {
            float s = 0.0f;
            for (int64_t j = 0; j < K; j++) s = fmaf(P[j * MR + r], X[j * ldx + c], s);
            Y[r * ldy + c] = finish1(s, b[r], Y[r * ldy + c], relu, accumulate);
        }
}

void gt_conv_neon(const float *x, const float *W, const float *b, float *y, int cin, int cout, int h, int w, int k,
                  int relu, int accumulate, void *scratch) {
    const int64_t K = (int64_t)cin * k * k, hw = (int64_t)h * w;
    float *P = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    pack_weights(W, cout, K, P);
    if (k == 1) {
        for (int o0 = 0; o0 < cout; o0 += MR)
            panel_times(P + (int64_t)(o0 / MR) * K * MR, K, x, hw, (int)hw, b + o0, y + o0 * hw, hw,
                        cout - o0 < MR ? cout - o0 : MR, relu, accumulate);
        return;
    }
    float *T = P + (int64_t)((cout + MR - 1) / MR) * MR * K;
    const int64_t cols = gt_conv_cols(cin, k, hw);
    for (int64_t p0 = 0; p0 < hw; p0 += cols) {
        const int n = (int)(hw - p0 < cols ? hw - p0 : cols);
        copy_taps(x, cin, h, w, k, p0, n, T);
        for (int o0 = 0; o0 < cout; o0 += MR)
            panel_times(P + (int64_t)(o0 / MR) * K * MR, K, T, n, n, b + o0, y + o0 * hw + p0, hw,
                        cout - o0 < MR ? cout - o0 : MR, relu, accumulate);
    }
}

