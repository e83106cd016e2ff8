/* The reference flow kernels and the oneDNN convolution wrapper against
 * plain double-precision loops written from GLOW_REFERENCE.md, on awkward
 * shapes (odd channel counts, 1-pixel images, tails). */
#define _POSIX_C_SOURCE 200809L /* setenv */
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

/* edge_bias_blocked from its definition: plain x [C][H][W] ->
 * blocked [ceil(C/B)][H][W][B] with sentinels in the padding lanes; the
 * straightforward result, computed on the plain layout (a tap is outside
 * when its input row or column is), blocked the same way. */
static void to_blocked(const float *x, float *xb, int C, int H, int W, int B, float pad) {
    const int64_t hw = (int64_t)H * W, Cp = (C + B - 1) / B * B;
    for (int64_t c = 0; c < Cp; c++)
        for (int64_t i = 0; i < hw; i++) xb[(c / B) * hw * B + i * B + c % B] = c < C ? x[c * hw + i] : pad;
}

static void edge_blocked_naive(float *x, const float *e, int ld, int C, int H, int W, int relu) {
    for (int c = 0; c < C; c++)
        for (int h = 0; h < H; h++)
            for (int w = 0; w < W; w++) {
                float *px = x + ((int64_t)c * H + h) * W + w, v = 0;
                int any = 0;
                for (int t = 0; t < 9; t++) {
                    const int y = h + t / 3 - 1, xx = w + t % 3 - 1;
                    if (y < 0 || y >= H || xx < 0 || xx >= W) {
                        v += e[(int64_t)t * ld + c];
                        any = 1;
                    }
                }
                if (any) *px += v;
                if (relu) *px = *px > 0 ? *px : 0;
            }
}

Test(kernels, edge_bias_blocked_matches_definition) {
    const int Bs[] = {8, 16}, Cs[] = {1, 3, 8, 13, 16, 17, 40, 64, 100}, sizes[] = {1, 2, 3, 5, 7};
    for (size_t bi = 0; bi < 2; bi++)
        for (size_t ci = 0; ci < sizeof Cs / sizeof Cs[0]; ci++)
            for (size_t hi = 0; hi < 5; hi++)
                for (size_t wi = 0; wi < 5; wi++)
                    for (int relu = 0; relu <= 1; relu++) {
                        const int B = Bs[bi], C = Cs[ci], H = sizes[hi], W = sizes[wi];
                        const int ld = C + 3 * relu, off = 2 * relu; /* a run of channels of a wider table */
                        const int64_t n = (int64_t)C * H * W, nb = (int64_t)(C + B - 1) / B * B * H * W;
                        float *x = rand_buf(n, -1, 1), *e = rand_buf(9 * ld + off, -1, 1);
                        float *got = malloc(sizeof(float) * nb), *want = malloc(sizeof(float) * nb);
                        float *plain = malloc(sizeof(float) * n);
                        x[0] = -0.0f;
                        to_blocked(x, got, C, H, W, B, -3.0f); /* a sentinel ReLU would change */
                        gt_kernels_ref.edge_bias_blocked(got, e + off, ld, C, H, W, B, relu);
                        memcpy(plain, x, sizeof(float) * n);
                        edge_blocked_naive(plain, e + off, ld, C, H, W, relu);
                        to_blocked(plain, want, C, H, W, B, -3.0f);
                        cr_assert(!memcmp(got, want, sizeof(float) * nb), "B=%d C=%d %dx%d relu=%d", B, C, H, W, relu);
                        if (ld == C && !off) { /* the same bits as the plain layout's edge_bias */
                            memcpy(plain, x, sizeof(float) * n);
                            gt_kernels_ref.edge_bias(plain, e, C, H, W, relu);
                            to_blocked(plain, want, C, H, W, B, -3.0f);
                            cr_assert(!memcmp(got, want, sizeof(float) * nb), "vs edge_bias: B=%d C=%d %dx%d", B, C, H, W);
                        }
                        /* By 64-channel chunks, as the runtime calls it: the same. */
                        if (C > 64) {
                            to_blocked(x, want, C, H, W, B, -3.0f);
                            for (int o = 0; o < C; o += 64)
                                gt_kernels_ref.edge_bias_blocked(want + (int64_t)o * H * W, e + off + o, ld,
                                                                 C - o < 64 ? C - o : 64, H, W, B, relu);
                            cr_assert(!memcmp(got, want, sizeof(float) * nb), "chunks: B=%d C=%d %dx%d", B, C, H, W);
                        }
                        free(x); free(e); free(got); free(want); free(plain);
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

/* The Box-Muller step with libm, as the noise was defined before
 * gt_box_muller had its own ln and sin/cos. */
static void box_muller_libm(uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3, double *ze, double *zo) {
    const double u1 = ((double)(((uint64_t)r0 << 21) ^ (r1 >> 11)) + 1.0) * 0x1p-53;
    const double u2 = (double)(((uint64_t)r2 << 21) ^ (r3 >> 11)) * 0x1p-53;
    const double rad = sqrt(-2.0 * log(u1)), ang = 6.283185307179586 * u2;
    *ze = rad * cos(ang);
    *zo = rad * sin(ang);
}

/* |got - want| in units of want's float ulp (0 when equal). */
static double float_ulps(float got, float want) {
    if (got == want) return 0;
    const float a = fabsf(want);
    return fabs((double)got - want) / (nextafterf(a, INFINITY) - a);
}

/* gt_box_muller (kernels.h: the project's ln and sin/cos in double) against
 * the libm formula, after rounding to float as normal_noise does: within 1
 * float ulp on 2^20 random blocks and on u1 from 2^-53 up. At exact quarter
 * turns libm's angle (2 pi u2 rounded to double) leaves cos or sin ~1e-16
 * off zero (times the radius) where gt_box_muller gives 0: there, 1e-15 of
 * the radius. */
Test(kernels, box_muller_matches_libm) {
    uint64_t st = 0x9E3779B97F4A7C15ull;
    double worst = 0;
    int64_t differ = 0, total = 0;
    for (int64_t t = 0; t < ((int64_t)1 << 20) + 64 * 33; t++) {
        uint32_t w[4];
        for (int k = 0; k < 4; k++) {
            st ^= st << 13; st ^= st >> 7; st ^= st << 17;
            w[k] = (uint32_t)(st >> 32);
        }
        const int64_t e = t - ((int64_t)1 << 20);
        if (e >= 0) { /* u1 = 2^-53 .. 1: r0 = 2^(e/64 - 1) or 0, low words random */
            w[0] = e / 64 == 0 ? 0u : 1u << (e / 64 - 1);
            if (e % 64 == 0) w[1] = 0;
        }
        double a0, a1, b0, b1;
        gt_box_muller(w[0], w[1], w[2], w[3], &a0, &a1);
        box_muller_libm(w[0], w[1], w[2], w[3], &b0, &b1);
        const double u0 = float_ulps((float)a0, (float)b0), u1 = float_ulps((float)a1, (float)b1);
        cr_assert(u0 <= 1 && u1 <= 1, "words %08x %08x %08x %08x: %.9g %.9g vs libm %.9g %.9g", w[0], w[1], w[2], w[3],
                  (float)a0, (float)a1, (float)b0, (float)b1);
        worst = fmax(worst, fmax(u0, u1));
        differ += (u0 > 0) + (u1 > 0);
        total += 2;
    }
    for (uint32_t h = 0; h < 8; h++) /* u2 = h/8: quarter turns and the ties between them */
        for (int k = 0; k < 3; k++) {
            const uint32_t r0 = k == 0 ? 0u : k == 1 ? 0x12345678u : 0xFFFFFFFFu;
            double a0, a1, b0, b1;
            gt_box_muller(r0, 0x9abcdef0u, h << 29, 0, &a0, &a1);
            box_muller_libm(r0, 0x9abcdef0u, h << 29, 0, &b0, &b1);
            const double tol = 1e-15 * fmax(1, hypot(b0, b1));
            cr_assert(fabs(a0 - b0) <= tol && fabs(a1 - b1) <= tol, "u2 = %u/8: %.17g %.17g vs %.17g %.17g", h, a0, a1, b0, b1);
        }
    cr_log_info("Box-Muller vs libm: worst %g float ulp, %lld of %lld floats differ", worst, (long long)differ,
                (long long)total);
}

/* The noise is defined without libm, so these bits are the same on every
 * machine and ISA (x86-64 here, aarch64 under qemu). */
Test(kernels, noise_bits_are_fixed) {
    static const uint32_t want[8] = {0x3eb9a089u, 0x3f3a46f2u, 0xbf5ff5ddu, 0xbe026db8u,
                                     0x3e7b6487u, 0xbf0f9cdeu, 0xbd1f8bdau, 0x3e4c5caeu};
    const gt_kernels *ks[2] = {&gt_kernels_ref, kernels_select(&(const char *){NULL})};
    for (int t = 0; t < 2; t++) {
        if (!ks[t]) continue; /* GLOWRT_ISA names an ISA this machine lacks */
        float o[8];
        ks[t]->normal_noise(42, 7, 1000001, 8, 0.7f, o);
        for (int i = 0; i < 8; i++) {
            uint32_t u;
            memcpy(&u, o + i, sizeof u);
            cr_assert(u == want[i], "%s element %d: 0x%08x, want 0x%08x", ks[t]->name, i, u, want[i]);
        }
    }
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
        cr_assert(!conv_create(ci, co, H, W, k, relu, 1, &cv, err), "%s", err);
        void *scratch = malloc(conv_scratch_size(cv) + 1);
        float *wp = w;  /* glowrt's own convolution (aarch64) takes them packed */
        if (conv_plain_packs(cv)) {
            wp = malloc(conv_packed_size(cv));
            cr_assert(!conv_pack_weights(cv, w, wp, err), "%s", err);
        }
        cr_assert(!conv_run(cv, 0, x, wp, b, y, scratch, err), "%s", err);
        if (wp != w) free(wp);
        free(scratch);
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

/* glowrt info's "kernels" line (conv_describe) names the convolution that
 * conv_create picks: glowrt's GEMM, glowrt's reference loops (GLOWRT_ISA=ref)
 * or oneDNN's (GLOWRT_ONEDNN_CONV). */
Test(conv, describe_names_the_conv_that_runs) {
    const char *envs[][2] = {{NULL, NULL}, {"GLOWRT_ISA", "ref"}, {"GLOWRT_ONEDNN_CONV", "1"}};
    char err[GLOWRT_ERR_LEN];
    for (size_t e = 0; e < sizeof envs / sizeof envs[0]; e++) {
        if (envs[e][0]) setenv(envs[e][0], envs[e][1], 1);
        gt_conv *cv;
        cr_assert(!conv_create(4, 8, 4, 4, 3, 1, 1, &cv, err), "%s", err);
        const char *impl = conv_impl(cv), *d = conv_describe();
        if (!strcmp(impl, "glowrt:conv_ref"))
            cr_assert(strstr(d, "glowrt reference convolutions"), "%s runs, info says '%s'", impl, d);
        else if (!strcmp(impl, "glowrt:conv_neon"))
            cr_assert(strstr(d, "glowrt GEMM convolutions (NEON)"), "%s runs, info says '%s'", impl, d);
        else
            cr_assert(!strncmp(d, "oneDNN", 6), "oneDNN's %s runs, info says '%s'", impl, d);
        conv_free(cv);
        if (envs[e][0]) unsetenv(envs[e][0]);
    }
}

/* Shapes for gt_kernels.conv: tails of the 8-output panels and of the 8- and
 * 4-pixel tiles, 1-pixel images, and 3x3 layers over many input channels. */
static const int conv_cases[][5] = {/* cin, cout, h, w, k */
                                    {1, 1, 1, 1, 3},  {1, 5, 1, 1, 1},   {2, 7, 2, 3, 3},   {3, 8, 5, 5, 3},
                                    {5, 9, 4, 7, 3},  {6, 13, 3, 3, 1},  {17, 16, 7, 7, 1}, {4, 17, 1, 9, 3},
                                    {8, 64, 6, 6, 3}, {64, 70, 3, 5, 1}, {300, 3, 7, 7, 3}, {512, 12, 4, 4, 3}};

/* y as gt_kernels.conv's definition, in double (tolerance) */
static double conv_naive(const float *x, const float *W, const float *b, const float *yold, int cin, int h, int w,
                         int k, int relu, int accumulate, int o, int py, int px) {
    double acc = 0;
    for (int i = 0; i < cin; i++)
        for (int t = 0; t < k * k; t++) {
            const int sy = py + t / k - k / 2, sx = px + t % k - k / 2;
            if (sy >= 0 && sy < h && sx >= 0 && sx < w)
                acc += (double)W[((int64_t)o * cin + i) * k * k + t] * x[((int64_t)i * h + sy) * w + sx];
        }
    acc += b[o];
    if (accumulate) acc += yold[((int64_t)o * h + py) * w + px];
    return relu && !(acc > 0) ? 0 : acc;
}

Test(conv, ref_conv_matches_naive) {
    for (size_t c = 0; c < sizeof conv_cases / sizeof conv_cases[0]; c++)
        for (int mode = 0; mode < 4; mode++) {
            const int ci = conv_cases[c][0], co = conv_cases[c][1], H = conv_cases[c][2], W = conv_cases[c][3],
                      k = conv_cases[c][4], relu = mode & 1, acc = mode >> 1;
            const int64_t n = (int64_t)co * H * W;
            float *x = rand_buf((int64_t)ci * H * W, -1, 1), *w = rand_buf((int64_t)co * ci * k * k, -1, 1);
            float *b = rand_buf(co, -1, 1), *y0 = rand_buf(n, -1, 1), *y = malloc(sizeof(float) * n);
            memcpy(y, y0, sizeof(float) * n);
            float *wp = malloc(gt_conv_packed_bytes(ci, co, k));
            gt_conv_pack(w, ci, co, k, wp);
            gt_conv_ref(x, wp, b, y, ci, co, H, W, k, relu, acc, NULL);
            free(wp);
            for (int o = 0; o < co; o++)
                for (int py = 0; py < H; py++)
                    for (int px = 0; px < W; px++) {
                        const double want = conv_naive(x, w, b, y0, ci, H, W, k, relu, acc, o, py, px);
                        const float got = y[((int64_t)o * H + py) * W + px];
                        cr_assert(fabs(got - want) <= 1e-5 * (ci * k * k + 2), "case %zu mode %d: %g, want %g", c,
                                  mode, got, want);
                    }
            free(x); free(w); free(b); free(y0); free(y);
        }
}

/* ---- The SIMD tables against ref, on random data and shape sweeps. The
 * same tests run for avx2 on x86-64 and for neon on aarch64 (under qemu);
 * they skip where this build or CPU has no SIMD table. Tolerances:
 * squeeze, unsqueeze, add, edge_bias, edge_bias_blocked and normal_noise must be bit-identical;
 * affine within FMA rounding (C * 2^-22 of sum |terms|); exp-based
 * element-wise results within 4 ulp (relative 4.8e-7); log-det and log-p
 * sums within 1e-6 of the sum of |terms|. ---- */

static const gt_kernels *simd_table(void) {
    const char *why;
#if defined(__x86_64__)
    const gt_kernels *k = kernels_isa("avx2", &why);
#elif defined(__aarch64__)
    const gt_kernels *k = kernels_isa("neon", &why);
#else
    const gt_kernels *k = NULL;
    why = "no SIMD ISA for this architecture";
#endif
    if (!k) cr_skip_test("%s", why);
    return k;
}

#define ULP4 4.8e-7 /* 4 ulp relative */

static int close_rel(double got, double want, double rel, double abs_tol) {
    if (isnan(want)) return isnan(got);
    if (isinf(want)) return got == want;
    return fabs(got - want) <= rel * fabs(want) + abs_tol;
}

static const int64_t tail_ns[] = {0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 23, 31, 32, 33, 47, 63, 64, 65, 70, 1000, 4099};
#define N_TAILS (sizeof tail_ns / sizeof tail_ns[0])

Test(simd, squeeze_unsqueeze_bit_identical) {
    const gt_kernels *S = simd_table();
    const int chans[] = {1, 2, 3, 5, 12};
    for (size_t a = 0; a < sizeof chans / sizeof chans[0]; a++)
        for (int Hs = 1; Hs <= 9; Hs++)
            for (int W = 1; W <= 70; W++) {
                const int C = chans[a];
                const int64_t n = (int64_t)C * Hs * W, nq = (int64_t)4 * C * (Hs / 2) * (W / 2);
                float *x = rand_buf(n, -1, 1), *r = rand_buf(nq, 0, 0), *s = rand_buf(nq, 0, 0);
                gt_kernels_ref.squeeze(x, r, C, Hs, W);
                S->squeeze(x, s, C, Hs, W);
                cr_assert(!memcmp(r, s, (size_t)nq * sizeof(float)), "squeeze C=%d H=%d W=%d", C, Hs, W);
                float *ur = rand_buf(n, 0, 0), *us = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
                memcpy(us, ur, (size_t)n * sizeof(float));
                gt_kernels_ref.unsqueeze(r, ur, C, Hs, W);
                S->unsqueeze(r, us, C, Hs, W);
                cr_assert(!memcmp(ur, us, (size_t)n * sizeof(float)), "unsqueeze C=%d H=%d W=%d", C, Hs, W);
                free(x); free(r); free(s); free(ur); free(us);
            }
}

static void check_affine(const gt_kernels *S, int C, int64_t hw) {
    float *A = rand_buf((int64_t)C * C, -1, 1), *b = rand_buf(C, -1, 1), *x = rand_buf(C * hw, -2, 2);
    float *y = rand_buf(C * hw, 0, 0), *yr = rand_buf(C * hw, 0, 0);
    gt_kernels_ref.affine(A, b, C, hw, x, yr);
    S->affine(A, b, C, hw, x, y);
    for (int o = 0; o < C; o++)
        for (int64_t p = 0; p < hw; p++) {
            double mag = fabs(b[o]);
            for (int i = 0; i < C; i++) mag += fabs((double)A[o * C + i] * x[i * hw + p]);
            cr_assert(fabs(y[o * hw + p] - yr[o * hw + p]) <= (C + 1) * 0x1p-22 * mag, "C=%d hw=%ld o=%d p=%ld: %g vs %g",
                      C, (long)hw, o, (long)p, y[o * hw + p], yr[o * hw + p]);
        }
    free(A); free(b); free(x); free(y); free(yr);
}

Test(simd, affine_channel_and_width_sweep) {
    const gt_kernels *S = simd_table();
    const int64_t hws[] = {1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 70};
    for (int C = 1; C <= 64; C++)
        for (size_t b = 0; b < sizeof hws / sizeof hws[0]; b++) check_affine(S, C, hws[b]);
    const int glow[] = {4, 12, 24, 48, 96, 192};
    const int64_t ghw[] = {1, 16, 17, 49, 64, 196, 256};
    for (size_t a = 0; a < sizeof glow / sizeof glow[0]; a++)
        for (size_t b = 0; b < sizeof ghw / sizeof ghw[0]; b++) check_affine(S, glow[a], ghw[b]);
    /* avx2 packs chunks of x when hw is a multiple of 512 (chunk widths
     * that do not divide hw), takes 32-pixel columns up to C = 192, and has
     * separate paths for C > 512 and > 1024. */
    const int pc[] = {5, 12, 13, 24, 48, 100, 257};
    const int64_t phw[] = {512, 1024, 1536};
    for (size_t a = 0; a < sizeof pc / sizeof pc[0]; a++)
        for (size_t b = 0; b < sizeof phw / sizeof phw[0]; b++) check_affine(S, pc[a], phw[b]);
    check_affine(S, 513, 512);
    check_affine(S, 193, 70);
    check_affine(S, 520, 9);
    check_affine(S, 1030, 3);
}

/* raw values: random plus the edges of exp's range. */
static float *coupling_raw(int64_t n) {
    static const float special[] = {0.0f, -0.0f, 1e-8f, -1e-8f, 0.5f, -0.5f, 15.0f, -15.0f, 30.0f, -30.0f,
                                    80.0f, -80.0f, 87.5f, -87.5f, 88.5f, -88.5f, 100.0f, -100.0f, 1e30f, -1e30f};
    float *raw = rand_buf(n, -30, 30);
    for (int64_t i = 0; i < n; i += 3) raw[i] = special[(i / 3) % (sizeof special / sizeof special[0])];
    return raw;
}

Test(simd, coupling_fwd_matches_ref) {
    const gt_kernels *S = simd_table();
    for (size_t a = 0; a < N_TAILS; a++) {
        const int64_t n = tail_ns[a];
        float *x = rand_buf(n, -3, 3), *raw = coupling_raw(n), *t = rand_buf(n, -1, 1);
        float *yr = malloc((size_t)(n + 1) * sizeof(float)), *ys = malloc((size_t)(n + 1) * sizeof(float));
        memcpy(yr, x, (size_t)n * sizeof(float));
        memcpy(ys, x, (size_t)n * sizeof(float));
        const double lr = gt_kernels_ref.coupling_fwd(yr, raw, t, n), ls = S->coupling_fwd(ys, raw, t, n);
        double mag = 0;
        for (int64_t i = 0; i < n; i++) {
            cr_assert(close_rel(ys[i], yr[i], ULP4, 1e-37), "n=%ld i=%ld raw=%g: %.9g vs %.9g", (long)n, (long)i, raw[i],
                      ys[i], yr[i]);
            /* each element's ln s on its own */
            float one_r = x[i], one_s = x[i];
            const double er = gt_kernels_ref.coupling_fwd(&one_r, raw + i, t + i, 1);
            const double es = S->coupling_fwd(&one_s, raw + i, t + i, 1);
            cr_assert(close_rel(es, er, ULP4, 1e-37), "ln s at raw=%.9g: %.9g vs %.9g", raw[i], es, er);
            mag += fabs(er);
        }
        cr_assert(fabs(ls - lr) <= 1e-6 * mag + 1e-30, "n=%ld logdet %.17g vs %.17g", (long)n, ls, lr);
        /* deterministic: the same call gives the same bits */
        memcpy(ys, x, (size_t)n * sizeof(float));
        cr_assert(S->coupling_fwd(ys, raw, t, n) == ls);
        free(x); free(raw); free(t); free(yr); free(ys);
    }
}

Test(simd, coupling_rev_matches_ref) {
    const gt_kernels *S = simd_table();
    for (size_t a = 0; a < N_TAILS; a++) {
        const int64_t n = tail_ns[a];
        float *x = rand_buf(n, -3, 3), *raw = coupling_raw(n), *t = rand_buf(n, -1, 1);
        float *yr = malloc((size_t)(n + 1) * sizeof(float)), *ys = malloc((size_t)(n + 1) * sizeof(float));
        memcpy(yr, x, (size_t)n * sizeof(float));
        memcpy(ys, x, (size_t)n * sizeof(float));
        gt_kernels_ref.coupling_rev(yr, raw, t, n);
        S->coupling_rev(ys, raw, t, n);
        for (int64_t i = 0; i < n; i++) {
            /* yb / s with s near FLT_MIN: ref's s is itself inexact there */
            if (raw[i] < -80 && isfinite(yr[i])) continue;
            /* yb/s - t cancels: scale the tolerance by |yb/s| + |t| */
            const double mag = fabs((double)x[i] * (1 + exp(-(double)raw[i]))) + fabs(t[i]);
            cr_assert(isinf(yr[i]) ? ys[i] == yr[i] : fabs(ys[i] - yr[i]) <= ULP4 * mag + 1e-37,
                      "n=%ld i=%ld raw=%g: %.9g vs %.9g", (long)n, (long)i, raw[i], ys[i], yr[i]);
        }
        free(x); free(raw); free(t); free(yr); free(ys);
    }
}

Test(simd, add_bit_identical) {
    const gt_kernels *S = simd_table();
    for (size_t a = 0; a < N_TAILS; a++)
        for (int sg = -1; sg <= 1; sg += 2) {
            const int64_t n = tail_ns[a];
            float *x = rand_buf(n, -3, 3), *h = rand_buf(n, -3, 3), *xs = malloc((size_t)(n + 1) * sizeof(float));
            memcpy(xs, x, (size_t)n * sizeof(float));
            gt_kernels_ref.add(x, h, n, (float)sg);
            S->add(xs, h, n, (float)sg);
            cr_assert(!memcmp(x, xs, (size_t)n * sizeof(float)), "n=%ld sign=%d", (long)n, sg);
            free(x); free(h); free(xs);
        }
}

Test(simd, gauss_logp_and_from_eps_match_ref) {
    const gt_kernels *S = simd_table();
    for (size_t a = 0; a < N_TAILS; a++) {
        const int64_t n = tail_ns[a];
        float *z = rand_buf(n, -4, 4), *m = rand_buf(n, -1, 1), *ls = rand_buf(n, -5, 3);
        float *er = rand_buf(n, 0, 0), *es = rand_buf(n, 0, 0), *zr = rand_buf(n, 0, 0), *zs = rand_buf(n, 0, 0);
        const double lr = gt_kernels_ref.gauss_logp(z, m, ls, er, n), lps = S->gauss_logp(z, m, ls, es, n);
        double mag = 0;
        for (int64_t i = 0; i < n; i++) {
            cr_assert(close_rel(es[i], er[i], ULP4, 1e-37), "eps n=%ld i=%ld: %.9g vs %.9g", (long)n, (long)i, es[i], er[i]);
            mag += 0.92 + fabs(ls[i]) + 0.5 * (double)er[i] * er[i];
        }
        cr_assert(fabs(lps - lr) <= 1e-6 * mag + 1e-30, "n=%ld logp %.17g vs %.17g", (long)n, lps, lr);
        cr_assert(S->gauss_logp(z, m, ls, NULL, n) == lps, "eps output must not change the sum");
        gt_kernels_ref.gauss_from_eps(zr, m, ls, er, n);
        S->gauss_from_eps(zs, m, ls, er, n);
        for (int64_t i = 0; i < n; i++) {
            const double mag1 = fabs(m[i]) + fabs(exp((double)ls[i]) * er[i]);
            cr_assert(fabs(zs[i] - zr[i]) <= ULP4 * mag1 + 1e-37, "z n=%ld i=%ld: %.9g vs %.9g", (long)n, (long)i, zs[i], zr[i]);
        }
        free(z); free(m); free(ls); free(er); free(es); free(zr); free(zs);
    }
}

/* exp over its whole float range, through gauss_from_eps (mean 0, eps 1). */
Test(simd, vector_exp_within_4_ulp) {
    const gt_kernels *S = simd_table();
    const int64_t n = 200003;
    float *ls = malloc(n * sizeof(float)), *one = malloc(n * sizeof(float)), *zero = calloc(n, sizeof(float));
    float *zr = malloc(n * sizeof(float)), *zs = malloc(n * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        ls[i] = -87.3f + (88.7f + 87.3f) * (float)i / (float)(n - 1);
        one[i] = 1.0f;
    }
    ls[0] = -104.0f; ls[1] = -90.0f; ls[2] = 88.72f; ls[3] = 89.0f; ls[4] = 200.0f; ls[5] = -INFINITY; ls[6] = INFINITY;
    gt_kernels_ref.gauss_from_eps(zr, zero, ls, one, n);
    S->gauss_from_eps(zs, zero, ls, one, n);
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        if (zr[i] < 1.2e-38f) { /* below the normal range: 0 or a denormal */
            cr_assert(zs[i] >= 0 && zs[i] < 1.2e-38f, "exp(%g) = %g, want %g", ls[i], zs[i], zr[i]);
            continue;
        }
        if (isinf(zr[i])) {
            cr_assert(isinf(zs[i]), "exp(%g) = %g, want inf", ls[i], zs[i]);
            continue;
        }
        const double ulps = fabs((double)zs[i] - zr[i]) / (nextafterf(zr[i], INFINITY) - zr[i]);
        if (ulps > worst) worst = ulps;
        cr_assert(ulps <= 4, "exp(%.9g) = %.9g, want %.9g (%g ulp)", ls[i], zs[i], zr[i], ulps);
    }
    cr_log_info("%s exp: worst %g ulp against libm", S->name, worst);
    free(ls); free(one); free(zero); free(zr); free(zs);
}

Test(simd, edge_bias_bit_identical) {
    const gt_kernels *S = simd_table();
    for (int C = 1; C <= 5; C += 2)
        for (int H = 1; H <= 12; H++)
            for (int W = 1; W <= 21; W++)
                for (int relu = 0; relu <= 1; relu++) {
                    const int64_t n = (int64_t)C * H * W;
                    float *e = rand_buf(9 * C, -1, 1), *o1 = rand_buf(n, -1, 1), *o2 = malloc(n * sizeof(float));
                    o1[0] = -0.0f;
                    if (n > 3) o1[3] = NAN;
                    memcpy(o2, o1, n * sizeof(float));
                    gt_kernels_ref.edge_bias(o1, e, C, H, W, relu);
                    S->edge_bias(o2, e, C, H, W, relu);
                    cr_assert(!memcmp(o1, o2, n * sizeof(float)), "C=%d H=%d W=%d relu=%d", C, H, W, relu);
                    free(e); free(o1); free(o2);
                }
}

Test(simd, edge_bias_blocked_bit_identical) {
    const gt_kernels *S = simd_table();
    const int Bs[] = {8, 16, 4, 24}; /* 4 and 24: the fallback and the generic group count */
    for (size_t bi = 0; bi < sizeof Bs / sizeof Bs[0]; bi++)
        for (int C = 1; C <= 70; C += C < 18 ? 1 : 13)
            for (int H = 1; H <= 6; H++)
                for (int W = 1; W <= 9; W++)
                    for (int relu = 0; relu <= 1; relu++) {
                        const int B = Bs[bi], ld = C + 5;
                        const int64_t nb = (int64_t)(C + B - 1) / B * B * H * W;
                        float *e = rand_buf(9 * ld, -1, 1), *o1 = rand_buf(nb, -1, 1), *o2 = malloc(sizeof(float) * nb);
                        o1[0] = -0.0f;
                        if (nb > 3) o1[3] = NAN;
                        if (nb > 21) o1[21] = -0.0f;
                        memcpy(o2, o1, sizeof(float) * nb);
                        gt_kernels_ref.edge_bias_blocked(o1, e + 1, ld, C, H, W, B, relu);
                        S->edge_bias_blocked(o2, e + 1, ld, C, H, W, B, relu);
                        cr_assert(!memcmp(o1, o2, sizeof(float) * nb), "B=%d C=%d H=%d W=%d relu=%d", B, C, H, W, relu);
                        free(e); free(o1); free(o2);
                    }
}

Test(simd, conv_bit_identical) {
    const gt_kernels *S = simd_table();
    if (S->conv == gt_conv_ref) cr_skip_test("%s runs oneDNN's convolutions (no conv of its own)", S->name);
    for (size_t c = 0; c < sizeof conv_cases / sizeof conv_cases[0]; c++)
        for (int mode = 0; mode < 4; mode++) {
            const int ci = conv_cases[c][0], co = conv_cases[c][1], H = conv_cases[c][2], W = conv_cases[c][3],
                      k = conv_cases[c][4], relu = mode & 1, acc = mode >> 1;
            const int64_t n = (int64_t)co * H * W;
            float *x = rand_buf((int64_t)ci * H * W, -1, 1), *w = rand_buf((int64_t)co * ci * k * k, -1, 1);
            float *b = rand_buf(co, -1, 1), *y1 = rand_buf(n + 1, -1, 1), *y2 = malloc(sizeof(float) * (n + 1));
            x[0] = -0.0f;
            y1[n] = 12345.0f;
            memcpy(y2, y1, sizeof(float) * (n + 1));
            void *scratch = malloc(gt_conv_scratch_bytes(ci, H, W, k));
            float *wp = malloc(gt_conv_packed_bytes(ci, co, k));
            gt_conv_pack(w, ci, co, k, wp);
            gt_conv_ref(x, wp, b, y1, ci, co, H, W, k, relu, acc, NULL);
            S->conv(x, wp, b, y2, ci, co, H, W, k, relu, acc, scratch);
            free(wp);
            cr_assert(!memcmp(y1, y2, sizeof(float) * n), "case %zu mode %d", c, mode);
            cr_assert(y2[n] == 12345.0f, "wrote past the end");
            free(x); free(w); free(b); free(y1); free(y2); free(scratch);
        }
}

Test(simd, normal_noise_bit_identical) {
    const gt_kernels *S = simd_table();
    const int64_t starts[] = {0, 1, 2, 3, 7, 15, 16, 17, 4095, (int64_t)1 << 33};
    for (size_t a = 0; a < sizeof starts / sizeof starts[0]; a++)
        for (size_t b = 0; b < N_TAILS; b++) {
            const int64_t n = tail_ns[b];
            float *r = malloc((size_t)(n + 1) * sizeof(float)), *s = malloc((size_t)(n + 2) * sizeof(float));
            s[n] = 12345.0f;
            gt_kernels_ref.normal_noise(0x123456789abcdefull, 77 + a, starts[a], n, 0.7f, r);
            S->normal_noise(0x123456789abcdefull, 77 + a, starts[a], n, 0.7f, s);
            cr_assert(!memcmp(r, s, (size_t)n * sizeof(float)), "j0=%ld n=%ld", (long)starts[a], (long)n);
            cr_assert(s[n] == 12345.0f, "wrote past the end");
            free(r); free(s);
        }
}

Test(dispatch, isa_names_and_refusals) {
    const char *why;
    cr_assert(kernels_isa("ref", &why) == &gt_kernels_ref && !why);
    cr_assert(!kernels_isa("sse9", &why) && why && strstr(why, "ref, avx2 or neon"));
#if defined(__x86_64__)
    cr_assert(!kernels_isa("neon", &why) && why && strstr(why, "neon"));
#elif defined(__aarch64__)
    cr_assert(!kernels_isa("avx2", &why) && why && strstr(why, "avx2"));
    cr_assert(kernels_isa("neon", &why) != NULL);
#endif
    setenv("GLOWRT_ISA", "ref", 1);
    cr_assert(kernels_select(&why) == &gt_kernels_ref);
    setenv("GLOWRT_ISA", "bogus", 1);
    cr_assert(!kernels_select(&why) && why);
    unsetenv("GLOWRT_ISA");
    const gt_kernels *best = kernels_select(&why);
    cr_assert(best && !why);
    cr_log_info("default ISA: %s", best->name);
}
