/* The reference flow kernels and the oneDNN convolution wrapper against
 * plain double-precision loops written from GLOW_REFERENCE.md, on awkward
 * shapes (odd channel counts, 1-pixel images, tails). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "glowrt.h"
#include "kernels/kernels.h"
#include "runtime/conv.h"

static const gt_kernels *K = &gt_kernels_ref;

static uint64_t rng_state = 88172645463325252ull;
static float frand(float lo, float hi) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return lo + (hi - lo) * (float)((rng_state >> 11) * 0x1p-53);
}
static float *rand_buf(int64_t n, float lo, float hi) {
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) p[i] = frand(lo, hi);
    return p;
}

Test(kernels, squeeze_matches_formula_and_inverts) {
    const int shapes[][3] = {{1, 2, 2}, {3, 4, 6}, {5, 8, 2}, {2, 6, 10}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int C = shapes[s][0], H = shapes[s][1], W = shapes[s][2];
        const int64_t n = (int64_t)C * H * W;
        float *x = rand_buf(n, -1, 1), *y = rand_buf(n, 0, 0), *z = rand_buf(n, 0, 0);
        K->squeeze(x, y, C, H, W);
        for (int c = 0; c < C; c++)
            for (int dy = 0; dy < 2; dy++)
                for (int dx = 0; dx < 2; dx++)
                    for (int i = 0; i < H / 2; i++)
                        for (int j = 0; j < W / 2; j++)
                            cr_assert_eq(y[(((int64_t)(c * 4 + dy * 2 + dx)) * (H / 2) + i) * (W / 2) + j],
                                         x[((int64_t)c * H + 2 * i + dy) * W + 2 * j + dx]);
        K->unsqueeze(y, z, C, H, W);
        cr_assert_arr_eq(x, z, (size_t)n * sizeof(float));
        free(x); free(y); free(z);
    }
}

Test(kernels, affine_matches_double_matmul) {
    const int chans[] = {1, 2, 3, 4, 5, 7, 12, 13, 48};
    const int64_t hws[] = {1, 3, 16, 17, 63};
    for (size_t a = 0; a < sizeof chans / sizeof chans[0]; a++)
        for (size_t b = 0; b < sizeof hws / sizeof hws[0]; b++) {
            const int C = chans[a];
            const int64_t hw = hws[b];
            float *A = rand_buf((int64_t)C * C, -1, 1), *bias = rand_buf(C, -1, 1);
            float *x = rand_buf(C * hw, -1, 1), *y = rand_buf(C * hw, 0, 0);
            K->affine(A, bias, C, hw, x, y);
            for (int o = 0; o < C; o++)
                for (int64_t p = 0; p < hw; p++) {
                    double want = bias[o];
                    for (int i = 0; i < C; i++) want += (double)A[o * C + i] * x[i * hw + p];
                    cr_assert(fabs(y[o * hw + p] - want) <= 1e-5 * (1 + C), "C=%d hw=%ld o=%d p=%ld: %g vs %g", C,
                              (long)hw, o, (long)p, y[o * hw + p], want);
                }
            free(A); free(bias); free(x); free(y);
        }
}

Test(kernels, coupling_inverts_and_logdet_is_sum_log_sigmoid) {
    const int64_t n = 1001;
    float *xb = rand_buf(n, -2, 2), *raw = rand_buf(n, -30, 30), *t = rand_buf(n, -1, 1);
    float *y = malloc(n * sizeof(float));
    memcpy(y, xb, n * sizeof(float));
    const double ld = K->coupling_fwd(y, raw, t, n);
    double want = 0;
    for (int64_t i = 0; i < n; i++) {
        const double s = 1.0 / (1.0 + exp(-(double)raw[i]));
        want += log(s);
        cr_assert(fabs(y[i] - (xb[i] + t[i]) * s) <= 1e-5 * (1 + fabs(y[i])));
    }
    cr_assert(fabs(ld - want) <= 1e-4 * fabs(want) + 1e-3, "logdet %g vs %g", ld, want);
    /* raw of -30 makes s tiny: the inverse must still be exact where s is not
     * vanishingly small; check on the moderate range. */
    K->coupling_rev(y, raw, t, n);
    for (int64_t i = 0; i < n; i++)
        if (fabs(raw[i]) < 8) cr_assert(fabs(y[i] - xb[i]) <= 1e-4, "i=%ld %g vs %g", (long)i, y[i], xb[i]);
    free(xb); free(raw); free(t); free(y);
}

Test(kernels, additive_coupling_inverts) {
    const int64_t n = 37;
    float *x = rand_buf(n, -2, 2), *h = rand_buf(n, -1, 1), *y = malloc(n * sizeof(float));
    memcpy(y, x, n * sizeof(float));
    K->add(y, h, n, 1.0f);
    for (int64_t i = 0; i < n; i++) cr_assert_float_eq(y[i], x[i] + h[i], 1e-6);
    K->add(y, h, n, -1.0f);
    for (int64_t i = 0; i < n; i++) cr_assert_float_eq(y[i], x[i], 1e-6);
    free(x); free(h); free(y);
}

Test(kernels, gaussian_logp_eps_and_inverse) {
    const int64_t n = 257;
    float *z = rand_buf(n, -3, 3), *m = rand_buf(n, -1, 1), *ls = rand_buf(n, -2, 1), *eps = malloc(n * sizeof(float));
    float *back = malloc(n * sizeof(float));
    const double lp = K->gauss_logp(z, m, ls, eps, n);
    double want = 0;
    for (int64_t i = 0; i < n; i++) {
        const double d = (double)z[i] - m[i];
        want += -0.91893853320467274178 - ls[i] - 0.5 * d * d * exp(-2.0 * ls[i]);
        cr_assert(fabs(eps[i] - d * exp(-(double)ls[i])) <= 1e-5 * (1 + fabs(eps[i])));
    }
    cr_assert(fabs(lp - want) <= 1e-5 * fabs(want) + 1e-4, "%g vs %g", lp, want);
    cr_assert(K->gauss_logp(z, m, ls, NULL, n) == lp, "eps output must not change the sum");
    K->gauss_from_eps(back, m, ls, eps, n);
    for (int64_t i = 0; i < n; i++) cr_assert(fabs(back[i] - z[i]) <= 1e-5 * (1 + fabs(z[i])));
    free(z); free(m); free(ls); free(eps); free(back);
}

/* Naive 3x3 conv with a constant pad value, for the edge-table identity. */
static void conv3_pad(const float *x, const float *w, const float *b, int ci, int co, int H, int W, float pad, double *out) {
    for (int o = 0; o < co; o++)
        for (int h = 0; h < H; h++)
            for (int v = 0; v < W; v++) {
                double acc = b ? b[o] : 0;
                for (int i = 0; i < ci; i++)
                    for (int ky = 0; ky < 3; ky++)
                        for (int kx = 0; kx < 3; kx++) {
                            const int y = h + ky - 1, xx = v + kx - 1;
                            const float val = (y < 0 || y >= H || xx < 0 || xx >= W) ? pad : x[((int64_t)i * H + y) * W + xx];
                            acc += (double)w[((o * ci + i) * 3 + ky) * 3 + kx] * val;
                        }
                out[((int64_t)o * H + h) * W + v] = acc;
            }
}

Test(kernels, edge_table_equals_pad_with_one) {
    const int sizes[][2] = {{1, 1}, {1, 4}, {2, 2}, {3, 5}, {5, 3}, {6, 6}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        const int H = sizes[s][0], W = sizes[s][1], ci = 3, co = 5;
        float *x = rand_buf(ci * H * W, -1, 1), *w = rand_buf(co * ci * 9, -1, 1), *b = rand_buf(co, -1, 1);
        double *ref1 = malloc(sizeof(double) * co * H * W), *ref0 = malloc(sizeof(double) * co * H * W);
        conv3_pad(x, w, b, ci, co, H, W, 1.0f, ref1);
        conv3_pad(x, w, b, ci, co, H, W, 0.0f, ref0);
        float e[9 * 5], *out = malloc(sizeof(float) * co * H * W);
        for (int t = 0; t < 9; t++)
            for (int o = 0; o < co; o++) {
                double acc = 0;
                for (int i = 0; i < ci; i++) acc += w[(o * ci + i) * 9 + t];
                e[t * co + o] = (float)acc;
            }
        for (int64_t i = 0; i < (int64_t)co * H * W; i++) out[i] = (float)ref0[i];
        K->edge_bias(out, e, co, H, W, 0);
        for (int64_t i = 0; i < (int64_t)co * H * W; i++)
            cr_assert(fabs(out[i] - ref1[i]) <= 1e-4, "%dx%d i=%ld: %g vs %g", H, W, (long)i, out[i], ref1[i]);
        /* With ReLU folded in. */
        for (int64_t i = 0; i < (int64_t)co * H * W; i++) out[i] = (float)ref0[i];
        K->edge_bias(out, e, co, H, W, 1);
        for (int64_t i = 0; i < (int64_t)co * H * W; i++)
            cr_assert(fabs(out[i] - fmax(ref1[i], 0)) <= 1e-4);
        free(x); free(w); free(b); free(ref1); free(ref0); free(out);
    }
}

Test(kernels, noise_is_counter_based_and_normal) {
    const int64_t n = 200001;
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    K->normal_noise(42, 7, 0, n, 1.0f, a);
    /* The same numbers whatever the split of the range. */
    K->normal_noise(42, 7, 0, 1000, 1.0f, b);
    K->normal_noise(42, 7, 1000, 3, 1.0f, b + 1000);
    K->normal_noise(42, 7, 1003, n - 1003, 1.0f, b + 1003);
    cr_assert_arr_eq(a, b, n * sizeof(float));
    double mean = 0, var = 0;
    for (int64_t i = 0; i < n; i++) mean += a[i];
    mean /= n;
    for (int64_t i = 0; i < n; i++) var += (a[i] - mean) * (a[i] - mean);
    var /= n;
    cr_assert(fabs(mean) < 0.01 && fabs(var - 1) < 0.02, "mean %g var %g", mean, var);
    /* Another sample index or seed gives other numbers; temperature scales. */
    K->normal_noise(42, 8, 0, 1000, 1.0f, b);
    cr_assert(memcmp(a, b, 1000 * sizeof(float)));
    K->normal_noise(43, 7, 0, 1000, 1.0f, b);
    cr_assert(memcmp(a, b, 1000 * sizeof(float)));
    K->normal_noise(42, 7, 0, 1000, 0.5f, b);
    for (int i = 0; i < 1000; i++) cr_assert_float_eq(b[i], 0.5f * a[i], 1e-6);
    free(a); free(b);
}

Test(conv, onednn_matches_naive_on_awkward_shapes) {
    const int cases[][6] = {/* cin, cout, h, w, k, relu */
                            {1, 5, 1, 1, 3, 0}, {3, 7, 2, 3, 3, 1}, {2, 4, 5, 5, 3, 0}, {6, 13, 4, 7, 3, 1},
                            {7, 3, 3, 3, 1, 1}, {16, 16, 8, 8, 1, 0}};
    char err[GLOWRT_ERR_LEN];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int ci = cases[c][0], co = cases[c][1], H = cases[c][2], W = cases[c][3], k = cases[c][4], relu = cases[c][5];
        float *x = rand_buf(ci * H * W, -1, 1), *w = rand_buf(co * ci * k * k, -1, 1), *b = rand_buf(co, -1, 1);
        float *y = rand_buf(co * H * W, 0, 0);
        gt_conv *cv;
        cr_assert(!conv_create(ci, co, H, W, k, relu, &cv, err), "%s", err);
        cr_assert(!conv_run(cv, x, w, b, y, err), "%s", err);
        for (int o = 0; o < co; o++)
            for (int h = 0; h < H; h++)
                for (int v = 0; v < W; v++) {
                    double acc = b[o];
                    for (int i = 0; i < ci; i++)
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++) {
                                const int yy = h + ky - k / 2, xx = v + kx - k / 2;
                                if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
                                acc += (double)w[((o * ci + i) * k + ky) * k + kx] * x[((int64_t)i * H + yy) * W + xx];
                            }
                    if (relu && acc < 0) acc = 0;
                    cr_assert(fabs(y[((int64_t)o * H + h) * W + v] - acc) <= 1e-4, "case %zu (%s)", c, conv_impl(cv));
                }
        conv_free(cv);
        free(x); free(w); free(b); free(y);
    }
}
