/* Criterion tests: sizes a file or a caller asks for cannot make the runtime
 * allocate without bound (docs/robustness.md, "Limits"). */
#include <criterion/criterion.h>
#include <string.h>

#include "glowrt.h"

#ifndef SEED_MODEL
#error SEED_MODEL: a tiny model of the fuzz corpus
#endif

/* gray-2x2-l1-w2.glow: 1 channel, one level, coupling width 2 (padded to 64). */
Test(limits, activation_cap_in_check_size) {
    char err[GLOWRT_ERR_LEN];
    glowrt_model *m;
    cr_assert_eq(glowrt_model_load(SEED_MODEL, &m, err), 0, "%s", err);
    /* 8192^2 / 4 positions x 64 channels = 2^30 floats: allowed. */
    cr_expect_eq(glowrt_check_size(m, 8192, 8192, err), 0, "%s", err);
    /* 16384^2: 2^32 floats of hidden activations per image: refused before any allocation. */
    cr_expect_neq(glowrt_check_size(m, 16384, 16384, err), 0);
    cr_expect(strstr(err, "needs activations of 4294967296 floats"), "%s", err);
    glowrt_session *s = NULL;
    cr_expect_neq(glowrt_session_create(m, 1, 16384, 16384, 1, &s, err), 0);
    cr_expect_null(s);
    cr_expect_neq(glowrt_check_size(m, 16386, 2, err), 0);
    cr_expect_neq(glowrt_check_size(m, 0, 2, err), 0);
    glowrt_model_free(m);
}
