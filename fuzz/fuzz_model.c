/* libFuzzer target: the .glow loader and validator (runtime/model.c).
 *
 * The input is a .glow file. Before loading, the harness rewrites the two
 * fields that would otherwise reject almost every mutation at the door: the
 * header's file size (bytes 16..23) and its CRC32C over the header and the
 * metadata (bytes 124..127). So mutations reach the table parser and the
 * plan checks; both fields' own checks are trivial and tested elsewhere
 * (tests/cli_test.py --only errors).
 *
 * When the model loads: glowrt_model_verify, info, describe, flops,
 * glowrt_check_size at the default and a few other sizes; and, when the
 * model is small enough that every allocation stays bounded (D, parameters
 * and the coupling activations below the caps here), a session with batch 1
 * and one thread running log_prob, encode, decode and sample. */
#include <math.h>
#include <string.h>

#include "fuzz_common.h"
#include "glowrt.h"
#include "model.h"
#include "crc32c.h"

#define RUN_MAX_D 4096               /* latent dims at the default size */
#define RUN_MAX_PARAMS (1 << 16)     /* float parameters */
#define RUN_MAX_ACT (1 << 16)        /* floats in any one activation tensor */

/* Largest activation tensor (channels x H x W, hidden widths included) a
 * session at h x w would hold, walking the plan as session.c does. */
static int64_t max_activation(const glowrt_model *m, int h, int w) {
    int64_t C = m->in_c, H = h, W = w, big = C * H * W;
    for (int k = 0; k < m->n_ops; k++) {
        const gt_op *op = &m->ops[k];
        if (op->code == OP_SQUEEZE) { C *= 4; H /= 2; W /= 2; }
        else if (op->code == OP_COUPLING) {
            const int64_t a = (op->ints[1] + 64) * H * W;
            if (a > big) big = a;
        } else if (op->code == OP_SPLIT) C /= 2;
        if (2 * C * H * W > big) big = 2 * C * H * W;
    }
    return big;
}

static FILE *devnull;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static uint8_t *buf;
    static size_t cap;
    if (!devnull) devnull = fopen("/dev/null", "w");
    if (size > cap) {
        free(buf);
        buf = malloc(size);
        cap = size;
    }
    if (size) memcpy(buf, data, size);
    if (size >= 128) {
        uint64_t fsz = size, moff, msz;
        memcpy(buf + 16, &fsz, 8);
        memcpy(&moff, buf + 40, 8);
        memcpy(&msz, buf + 48, 8);
        if (moff <= size && msz <= size - moff) {
            uint32_t crc = crc32c_update(0, buf, 124);
            crc = crc32c_update(crc, buf + moff, (size_t)msz);
            memcpy(buf + 124, &crc, 4);
        }
    }
    const char *path = fuzz_file(buf, size);
    char err[GLOWRT_ERR_LEN];
    glowrt_model *m = NULL;
    if (glowrt_model_load(path, &m, err)) {
        if (!memchr(err, 0, sizeof err)) abort();  /* the message is always terminated */
        return 0;
    }
    const int verified = glowrt_model_verify(m, err) == 0;
    glowrt_info info;
    glowrt_model_info(m, &info);
    glowrt_model_describe(m, info.height, info.width, devnull);
    (void)glowrt_flops(m, info.height, info.width);
    static const int sizes[][2] = {{0, 0}, {1, 1}, {2, 2}, {4, 4}, {8, 6}, {64, 64}, {16384, 16384}, {16385, 2}, {-4, 4}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        const int h = sizes[i][0] ? sizes[i][0] : info.height, w = sizes[i][1] ? sizes[i][1] : info.width;
        if (!glowrt_check_size(m, h, w, err)) (void)glowrt_dim(m, h, w);
    }
    const int64_t D = glowrt_dim(m, info.height, info.width);
    if (verified && D <= RUN_MAX_D && info.n_params <= RUN_MAX_PARAMS &&
        max_activation(m, info.height, info.width) <= RUN_MAX_ACT) {
        glowrt_session *s = NULL;
        if (!glowrt_session_create(m, 1, 0, 0, 1, &s, err)) {
            float *x = malloc(sizeof(float) * (size_t)D), *eps = malloc(sizeof(float) * (size_t)D);
            double lp;
            for (int64_t j = 0; j < D; j++) x[j] = (float)((j * 37) % 256) / 256.0f - 0.5f;
            (void)glowrt_log_prob(s, x, 1, &lp, err);
            if (!glowrt_encode(s, x, 1, eps, &lp, err)) (void)glowrt_decode(s, eps, 1, x, err);
            (void)glowrt_sample(s, 7, 0, 1, 0.7f, x, err);
            free(x);
            free(eps);
            glowrt_session_free(s);
        }
    }
    glowrt_model_free(m);
    return 0;
}
