/* Portable reference convolution (gt_kernels.conv): the definition in
 * kernels/kernels.h as plain loops, the truth kernels/neon/conv_neon.c is
 * tested against bit for bit. It needs no scratch. */
#include <math.h>

#include "kernels/kernels.h"

void gt_conv_ref(const float *x, const float *P, const float *b, float *y, int cin, int cout, int h, int w, int k,
                 int relu, int accumulate, void *scratch) {
    (void)scratch;
    const int r = k / 2, kk = k * k;
    const int64_t hw = (int64_t)h * w, K = (int64_t)cin * kk;
    for (int o = 0; o < cout; o++)
        for (int py = 0; py < h; py++)
            for (int px = 0; px < w; px++) {
                float s = 0.0f;
                for (int i = 0; i < cin; i++)
                    for (int t = 0; t < kk; t++) {
                        const int sy = py + t / k - r, sx = px + t % k - r;
                        const float v = sy < 0 || sy >= h || sx < 0 || sx >= w ? 0.0f : x[i * hw + (int64_t)sy * w + sx];
                        s = fmaf(P[(int64_t)(o / GT_CONV_MR * GT_CONV_MR) * K + ((int64_t)i * kk + t) * GT_CONV_MR +
                                   o % GT_CONV_MR],
                                 v, s);
                    }
                float *yo = y + o * hw + (int64_t)py * w + px;
                *yo = gt_conv_finish(s, b[o], *yo, relu, accumulate);
            }
}
