/* Portable reference flow kernels: plain loops, the truth every SIMD
 * version is tested against. */
#include <math.h>
#include <string.h>

#include "kernels/kernels.h"

static void affine_ref(const float *A, const float *b, int C, int64_t hw, const float *x, float *y) {
    for (int o = 0; o < C; o++) {
        float *yo = y + (int64_t)o * hw;
        for (int64_t p = 0; p < hw; p++) yo[p] = b[o];
        for (int i = 0; i < C; i++) {
            const float a = A[(int64_t)o * C + i];
            const float *xi = x + (int64_t)i * hw;
            for (int64_t p = 0; p < hw; p++) yo[p] += a * xi[p];
        }
    }
}

static void squeeze_ref(const float *in, float *out, int C, int H, int W) {
    const int h2 = H / 2, w2 = W / 2;
    for (int c = 0; c < C; c++)
        for (int dy = 0; dy < 2; dy++)
            for (int dx = 0; dx < 2; dx++) {
                float *o = out + ((int64_t)(4 * c + 2 * dy + dx)) * h2 * w2;
                for (int i = 0; i < h2; i++)
                    for (int j = 0; j < w2; j++) o[i * w2 + j] = in[((int64_t)c * H + 2 * i + dy) * W + 2 * j + dx];
            }
}

static void unsqueeze_ref(const float *in, float *out, int C, int H, int W) {
    const int h2 = H / 2, w2 = W / 2;
    for (int c = 0; c < C; c++)
        for (int dy = 0; dy < 2; dy++)
            for (int dx = 0; dx < 2; dx++) {
                const float *q = in + ((int64_t)(4 * c + 2 * dy + dx)) * h2 * w2;
                for (int i = 0; i < h2; i++)
                    for (int j = 0; j < w2; j++) out[((int64_t)c * H + 2 * i + dy) * W + 2 * j + dx] = q[i * w2 + j];
            }
}

/* sigmoid and its log, stable for any raw value. */
static inline float sigmoid_ref(float r) { return 1.0f / (1.0f + expf(-r)); }
static inline float log_sigmoid_ref(float r) { return r >= 0 ? -log1pf(expf(-r)) : r - log1pf(expf(r)); }

static double coupling_fwd_ref(float *xb, const float *raw, const float *t, int64_t n) {
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        xb[i] = (xb[i] + t[i]) * sigmoid_ref(raw[i]);
        sum += log_sigmoid_ref(raw[i]);
    }
    return sum;
}

static void coupling_rev_ref(float *yb, const float *raw, const float *t, int64_t n) {
    for (int64_t i = 0; i < n; i++) yb[i] = yb[i] / sigmoid_ref(raw[i]) - t[i];
}

static void add_ref(float *x, const float *h, int64_t n, float sign) {
    for (int64_t i = 0; i < n; i++) x[i] += sign * h[i];
}

#define HALF_LOG_2PI 0.91893853320467274178

static double gauss_logp_ref(const float *z, const float *mean, const float *log_sd, float *eps, int64_t n) {
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        const float e = (z[i] - mean[i]) * expf(-log_sd[i]);
        if (eps) eps[i] = e;
        sum += -HALF_LOG_2PI - log_sd[i] - 0.5 * (double)e * e;
    }
    return sum;
}

static void gauss_from_eps_ref(float *z, const float *mean, const float *log_sd, const float *eps, int64_t n) {
    for (int64_t i = 0; i < n; i++) z[i] = mean[i] + expf(log_sd[i]) * eps[i];
}

static void edge_bias_ref(float *out, const float *e, int C, int H, int W, int relu) {
    for (int h = 0; h < H; h++) {
        const int top = h == 0, bottom = h == H - 1;
        for (int w = 0; w < W; w++) {
            const int left = w == 0, right = w == W - 1;
            if (top | bottom | left | right) {
                int taps[9], n = 0;
                for (int ky = 0; ky < 3; ky++)
                    for (int kx = 0; kx < 3; kx++)
                        if ((ky == 0 && top) || (ky == 2 && bottom) || (kx == 0 && left) || (kx == 2 && right))
                            taps[n++] = ky * 3 + kx;
                for (int c = 0; c < C; c++) {
                    float v = 0;
                    for (int k = 0; k < n; k++) v += e[taps[k] * C + c];
                    out[((int64_t)c * H + h) * W + w] += v;
                }
            }
        }
    }
    if (relu)
        for (int64_t i = 0; i < (int64_t)C * H * W; i++) out[i] = out[i] > 0 ? out[i] : 0;
}

/* Position by position, lane by lane: the truth for the SIMD versions (and
 * the NEON table's: the blocked layout is x86-only, conv_block). */
void gt_edge_bias_blocked_ref(float *out, const float *e, int ld, int C, int H, int W, int B, int relu) {
    const int64_t hw = (int64_t)H * W;
    for (int c0 = 0; c0 < C; c0 += B) {
        float *blk = out + (int64_t)(c0 / B) * hw * B;
        const int nv = C - c0 < B ? C - c0 : B; /* valid lanes of this block */
        for (int h = 0; h < H; h++) {
            const int top = h == 0, bottom = h == H - 1;
            for (int w = 0; w < W; w++) {
                const int left = w == 0, right = w == W - 1;
                float *px = blk + ((int64_t)h * W + w) * B;
                if (top | bottom | left | right)
                    for (int l = 0; l < nv; l++) {
                        float v = 0;
                        for (int ky = 0; ky < 3; ky++)
                            for (int kx = 0; kx < 3; kx++)
                                if ((ky == 0 && top) || (ky == 2 && bottom) || (kx == 0 && left) || (kx == 2 && right))
                                    v += e[(int64_t)(ky * 3 + kx) * ld + c0 + l];
                        px[l] += v;
                    }
                if (relu)
                    for (int l = 0; l < nv; l++) px[l] = px[l] > 0 ? px[l] : 0;
            }
        }
    }
}

/* Philox4x32-10 (Salmon et al. 2011): a counter-based generator, so the
 * noise of element j of sample i is a pure function of (seed, i, j). */
static void philox4x32(const uint32_t ctr_in[4], const uint32_t key_in[2], uint32_t out[4]) {
    uint32_t c0 = ctr_in[0], c1 = ctr_in[1], c2 = ctr_in[2], c3 = ctr_in[3];
    uint32_t k0 = key_in[0], k1 = key_in[1];
    for (int r = 0; r < 10; r++) {
        const uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        const uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c0 = n0;
        c1 = (uint32_t)p1;
        c2 = n2;
        c3 = (uint32_t)p0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

/* gt_box_muller (kernels.h) on one Philox block; element j uses block j/2
 * and takes the cosine (even j) or the sine (odd j) branch. One block per
 * pair of elements, both written. */
static void normal_noise_ref(uint64_t seed, uint64_t index, int64_t j0, int64_t n, float temp, float *out) {
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    for (int64_t k = 0; k < n;) {
        const uint64_t j = (uint64_t)(j0 + k);
        const uint32_t ctr[4] = {(uint32_t)(j >> 1), (uint32_t)(j >> 33), (uint32_t)index, (uint32_t)(index >> 32)};
        uint32_t r[4];
        philox4x32(ctr, key, r);
        double z0, z1;
        gt_box_muller(r[0], r[1], r[2], r[3], &z0, &z1);
        if (!(j & 1)) out[k++] = (float)(temp * z0);
        if (k < n) out[k++] = (float)(temp * z1);
    }
}

const gt_kernels gt_kernels_ref = {
    .name = "ref",
    .affine = affine_ref,
    .squeeze = squeeze_ref,
    .unsqueeze = unsqueeze_ref,
    .coupling_fwd = coupling_fwd_ref,
    .coupling_rev = coupling_rev_ref,
    .add = add_ref,
    .gauss_logp = gauss_logp_ref,
    .gauss_from_eps = gauss_from_eps_ref,
    .edge_bias = edge_bias_ref,
    .edge_bias_blocked = gt_edge_bias_blocked_ref,
    .normal_noise = normal_noise_ref,
    .conv = gt_conv_ref,
};
