/* libFuzzer target: the latents given to `glowrt decode` -- a float32 .npy
 * read by io_read_npy_f32, checked as the CLI checks it ([N, D]), decoded
 * by a fixed tiny model (fuzz/corpus/model/gray-4x4-l2-w4-additive.glow, or
 * $GLOWRT_FUZZ_MODEL) and written as an image: any finite latent, however
 * large, must decode without a crash and write, or be refused as a float32
 * overflow (never decoded into NaNs). */
#include <string.h>

#include "fuzz_common.h"
#include "glowrt.h"
#include "io.h"

#ifndef FUZZ_MODEL
#define FUZZ_MODEL "gray-4x4-l2-w4-additive.glow"
#endif
#define MAX_N 8

static glowrt_model *model;
static glowrt_session *session;
static int64_t D;
static char outdir[256]; /* a tmpfs file: the writes fsync */

static void setup(void) {
    char err[GLOWRT_ERR_LEN];
    const char *path = getenv("GLOWRT_FUZZ_MODEL") ? getenv("GLOWRT_FUZZ_MODEL") : FUZZ_MODEL;
    if (glowrt_model_load(path, &model, err) || glowrt_model_verify(model, err) ||
        glowrt_session_create(model, MAX_N, 0, 0, 1, &session, err)) {
        fprintf(stderr, "fuzz_latent: %s\n", err);
        abort();
    }
    glowrt_info info;
    glowrt_model_info(model, &info);
    D = glowrt_dim(model, info.height, info.width);
    snprintf(outdir, sizeof outdir, "%s/glowrt-fuzz-latent-%d.png", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp",
             (int)getpid());
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!model) setup();
    const char *path = fuzz_file(data, size);
    float *eps = NULL;
    int ndim;
    int64_t shape[4];
    char err[GLOWRT_ERR_LEN];
    if (io_read_npy_f32(path, &eps, &ndim, shape, err, sizeof err)) return 0;
    if (ndim == 2 && shape[1] == D && shape[0] >= 1 && shape[0] <= MAX_N) {
        glowrt_info info;
        glowrt_model_info(model, &info);
        const int n = (int)shape[0];
        float *x = malloc(sizeof(float) * (size_t)(n * D));
        if (glowrt_decode(session, eps, n, x, err)) {
            if (!strstr(err, "overflows float32")) abort();  /* the only refusal of finite latents */
        } else if (io_write_images(outdir, x, n, info.in_channels, info.height, info.width, info.n_bits, err, sizeof err)) {
            abort();
        }
        free(x);
    }
    free(eps);
    return 0;
}
