/* Criterion tests: regressions of findings of the sanitizer runs and the
 * fuzzers (docs/robustness.md). They pass in any build; the ASan + UBSan
 * build (cmake --preset asan) is what catches the memory errors.
 *
 *  plan_conv_probe  a coupling network whose first convolution is packed
 *                   at each use (input channels padded to the block: 12 at
 *                   the third level) and has more than 64 outputs (width
 *                   128): session.c's probe of the packing primitives used
 *                   one buffer as both weights and pad (memcpy-param-overlap)
 *                   and read chunk 2's weights past its end.
 *
 * The model: $GLOWRT_REGRESS_MODEL (3x16x16, 3 levels, 1 step, width 128;
 * the ctest fixture writes it with tests/make_model.py). */
#include <criterion/criterion.h>

#include <math.h>
#include <stdlib.h>

#include "glowrt.h"

Test(regress, plan_conv_probe) {
    const char *path = getenv("GLOWRT_REGRESS_MODEL");
    cr_assert(path && *path, "GLOWRT_REGRESS_MODEL is not set (ctest sets it)");
    char err[GLOWRT_ERR_LEN];
    glowrt_model *m;
    cr_assert_eq(glowrt_model_load(path, &m, err), 0, "%s", err);
    glowrt_info info;
    glowrt_model_info(m, &info);
    const int64_t D = glowrt_dim(m, info.height, info.width);
    float *x = malloc(sizeof(float) * (size_t)D), *eps = malloc(sizeof(float) * (size_t)D);
    for (int64_t j = 0; j < D; j++) x[j] = (float)((j * 37) % 256) / 256.0f - 0.5f + 1.0f / 512;
    for (int threads = 1; threads <= 2; threads++) {
        glowrt_session *s;
        double lp;
        cr_assert_eq(glowrt_session_create(m, 2, 0, 0, threads, &s, err), 0, "%s", err);
        cr_assert_eq(glowrt_encode(s, x, 1, eps, &lp, err), 0, "%s", err);
        cr_expect(isfinite(lp));
        cr_assert_eq(glowrt_decode(s, eps, 1, x, err), 0, "%s", err);
        glowrt_session_free(s);
    }
    free(x);
    free(eps);
    glowrt_model_free(m);
}
