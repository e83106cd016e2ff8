/* ARM64 NEON convolution (gt_kernels.conv): where oneDNN has only its
 * scalar reference GEMM (Debian's aarch64 oneDNN, built without the Arm
 * Compute Library), the coupling networks' convolutions run here.
 *
 * A GEMM: Y[o][p] = sum_j W[o][j] X[j][p], j over cin * k * k. W comes
 * packed in panels of 8 outputs [j][8] (gt_conv_pack). X is read in place through a table of
 * offsets: X[j][p] = x[off[j] + p], for k = 1 the input itself; for k = 3 a
 * copy of the input with a zero border, in which the tap (dy, dx) of
 * channel i is a fixed offset from pixel p (counted in rows of w + 2, so
 * that each run of pixels is contiguous; the 2 border columns of each row
 * are computed and dropped). An 8 x 8 tile of Y is 16 accumulator
 * registers; each j adds one broadcast weight per output row times 8
 * pixels (fmla by element), the products fused in j order from 0, exactly
 * as kernels/ref/conv_ref.c does, so the bits are ref's. */
#include <arm_neon.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels/kernels.h"

#define MR GT_CONV_MR

/* gt_conv_finish (kernels.h), 4 lanes. */
static inline float32x4_t finish4(float32x4_t s, float b, const float *yold, int relu, int accumulate) {
    float32x4_t v = vaddq_f32(s, vdupq_n_f32(b));
    if (accumulate) v = vaddq_f32(v, vld1q_f32(yold));
    /* v > 0 ? v : 0: maxnm gives 0 for NaN and +0 for -0, as the comparison does */
    return relu ? vmaxnmq_f32(v, vdupq_n_f32(0.0f)) : v;
}

/* Row r of a tile, 8 or 4 pixels, when the panel has that row: the sums
 * as they are (raw), or finished. (The accumulators are named registers,
 * not an array: an array indexed by a variable would live on the stack and
 * be stored at every step.) */
#define STORE8(r, a, b)                                                            \
    if ((r) < rows) {                                                              \
        float *y_ = Y + (r) * ldy + c;                                             \
        vst1q_f32(y_, raw ? a : finish4(a, bias[r], y_, relu, accumulate));        \
        vst1q_f32(y_ + 4, raw ? b : finish4(b, bias[r], y_ + 4, relu, accumulate)); \
    }
#define STORE4(r, a)                                                               \
    if ((r) < rows) {                                                              \
        float *y_ = Y + (r) * ldy + c;                                             \
        vst1q_f32(y_, raw ? a : finish4(a, bias[r], y_, relu, accumulate));        \
    }

/* Y rows 0 .. rows - 1 (rows <= 8), columns [0, n): panel P [K][8] times
 * X[j][c] = X[off[j] + c], or X[j * ldx + c] when strided (a constant: the
 * two wrappers below compile a loop each, the strided one without the
 * table's loads); Y [rows][ldy]. raw: the sums, else finished. */
#define XJ(j) (strided ? X + (j) * ldx : X + off[j])
static inline __attribute__((always_inline)) void panel_loop(const float *P, int64_t K, const float *X,
                                                             const int64_t *off, int64_t ldx, const int strided,
                                                             int64_t n, const float *bias, float *Y, int64_t ldy,
                                                             int rows, int relu, int accumulate, int raw) {
    int64_t c = 0;
    for (; c + 8 <= n; c += 8) {
        const float32x4_t z = vdupq_n_f32(0.0f);
        float32x4_t a0 = z, b0 = z, a1 = z, b1 = z, a2 = z, b2 = z, a3 = z, b3 = z;
        float32x4_t a4 = z, b4 = z, a5 = z, b5 = z, a6 = z, b6 = z, a7 = z, b7 = z;
        const float *p = P;
        for (int64_t j = 0; j < K; j++, p += MR) {
            const float *x = XJ(j) + c;
            const float32x4_t x0 = vld1q_f32(x), x1 = vld1q_f32(x + 4);
            const float32x4_t w0 = vld1q_f32(p), w1 = vld1q_f32(p + 4);
            a0 = vfmaq_laneq_f32(a0, x0, w0, 0);
            b0 = vfmaq_laneq_f32(b0, x1, w0, 0);
            a1 = vfmaq_laneq_f32(a1, x0, w0, 1);
            b1 = vfmaq_laneq_f32(b1, x1, w0, 1);
            a2 = vfmaq_laneq_f32(a2, x0, w0, 2);
            b2 = vfmaq_laneq_f32(b2, x1, w0, 2);
            a3 = vfmaq_laneq_f32(a3, x0, w0, 3);
            b3 = vfmaq_laneq_f32(b3, x1, w0, 3);
            a4 = vfmaq_laneq_f32(a4, x0, w1, 0);
            b4 = vfmaq_laneq_f32(b4, x1, w1, 0);
            a5 = vfmaq_laneq_f32(a5, x0, w1, 1);
            b5 = vfmaq_laneq_f32(b5, x1, w1, 1);
            a6 = vfmaq_laneq_f32(a6, x0, w1, 2);
            b6 = vfmaq_laneq_f32(b6, x1, w1, 2);
            a7 = vfmaq_laneq_f32(a7, x0, w1, 3);
            b7 = vfmaq_laneq_f32(b7, x1, w1, 3);
        }
        STORE8(0, a0, b0) STORE8(1, a1, b1) STORE8(2, a2, b2) STORE8(3, a3, b3)
        STORE8(4, a4, b4) STORE8(5, a5, b5) STORE8(6, a6, b6) STORE8(7, a7, b7)
    }
    for (; c + 4 <= n; c += 4) {
        const float32x4_t z = vdupq_n_f32(0.0f);
        float32x4_t a0 = z, a1 = z, a2 = z, a3 = z, a4 = z, a5 = z, a6 = z, a7 = z;
        const float *p = P;
        for (int64_t j = 0; j < K; j++, p += MR) {
            const float32x4_t x0 = vld1q_f32(XJ(j) + c), w0 = vld1q_f32(p), w1 = vld1q_f32(p + 4);
            a0 = vfmaq_laneq_f32(a0, x0, w0, 0);
            a1 = vfmaq_laneq_f32(a1, x0, w0, 1);
            a2 = vfmaq_laneq_f32(a2, x0, w0, 2);
            a3 = vfmaq_laneq_f32(a3, x0, w0, 3);
            a4 = vfmaq_laneq_f32(a4, x0, w1, 0);
            a5 = vfmaq_laneq_f32(a5, x0, w1, 1);
            a6 = vfmaq_laneq_f32(a6, x0, w1, 2);
            a7 = vfmaq_laneq_f32(a7, x0, w1, 3);
        }
        STORE4(0, a0) STORE4(1, a1) STORE4(2, a2) STORE4(3, a3)
        STORE4(4, a4) STORE4(5, a5) STORE4(6, a6) STORE4(7, a7)
    }
    for (; c < n; c++) /* the last 1-3 pixels, one at a time */
        for (int r = 0; r < rows; r++) {
            float s = 0.0f;
            for (int64_t j = 0; j < K; j++) s = fmaf(P[j * MR + r], XJ(j)[c], s);
            Y[r * ldy + c] = raw ? s : gt_conv_finish(s, bias[r], Y[r * ldy + c], relu, accumulate);
        }
}

static void panel_times_strided(const float *P, int64_t K, const float *X, int64_t ldx, int64_t n, const float *bias,
                                float *Y, int64_t ldy, int rows, int relu, int accumulate) {
    panel_loop(P, K, X, NULL, ldx, 1, n, bias, Y, ldy, rows, relu, accumulate, 0);
}

static void panel_times_table(const float *P, int64_t K, const float *X, const int64_t *off, int64_t n, float *Y,
                              int64_t ldy, int rows) {
    panel_loop(P, K, X, off, 0, 0, n, NULL, Y, ldy, rows, 0, 0, 1);
}

static float *align64(void *p) { return (float *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }

void gt_conv_neon(const float *x, const float *P, const float *b, float *y, int cin, int cout, int h, int w, int k,
                  int relu, int accumulate, void *scratch) {
    const int64_t K = (int64_t)cin * k * k, hw = (int64_t)h * w;
    int64_t *off = (int64_t *)align64(scratch);
    if (k == 1) {
        for (int o0 = 0; o0 < cout; o0 += MR)
            panel_times_strided(P + (int64_t)(o0 / MR) * K * MR, K, x, hw, hw, b + o0, y + o0 * hw, hw,
                                cout - o0 < MR ? cout - o0 : MR, relu, accumulate);
        return;
    }
    /* the input with a zero border, [cin][h+2][wp], and 16 zeros after it */
    const int64_t wp = w + 2, plane = (h + 2) * wp, nq = h * wp, nq8 = (nq + 7) / 8 * 8;
    float *xp = align64(off + K), *T = align64(xp + cin * plane + 16);
    memset(xp, 0, sizeof(float) * (size_t)(cin * plane + 16));
    for (int i = 0; i < cin; i++)
        for (int py = 0; py < h; py++)
            memcpy(xp + i * plane + (py + 1) * wp + 1, x + i * hw + (int64_t)py * w, sizeof(float) * (size_t)w);
    /* tap t = 3 dy' + dx' of channel i, for output pixel q = py * wp + px */
    for (int i = 0; i < cin; i++)
        for (int t = 0; t < 9; t++) off[i * 9 + t] = i * plane + (t / 3) * wp + t % 3;
    for (int o0 = 0; o0 < cout; o0 += MR) {
        const int rows = cout - o0 < MR ? cout - o0 : MR;
        /* 8-pixel tiles over the padded rows (the last reads into the 16 zeros) */
        panel_times_table(P + (int64_t)(o0 / MR) * K * MR, K, xp, off, nq8, T, nq8, rows);
        for (int r = 0; r < rows; r++)
            for (int py = 0; py < h; py++) {
                const float *s = T + r * nq8 + py * wp;
                float *yo = y + (o0 + r) * hw + (int64_t)py * w;
                for (int px = 0; px < w; px++) yo[px] = gt_conv_finish(s[px], b[o0 + r], yo[px], relu, accumulate);
            }
    }
}
