/* libFuzzer target: io_read_npy_f32 (the float32 .npy reader for latents)
 * and, on what it accepts, io_read_input (which also reads uint8 arrays). */
#include <math.h>
#include <string.h>

#include "fuzz_common.h"
#include "io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file(data, size);
    float *x = NULL;
    int ndim = 0;
    int64_t shape[4];
    char err[256];
    if (!io_read_npy_f32(path, &x, &ndim, shape, err, sizeof err)) {
        if (ndim < 1 || ndim > 4) abort();
        int64_t n = 1;
        for (int i = 0; i < 4; i++) n *= shape[i];
        for (int64_t j = 0; j < n; j++)
            if (!isfinite(x[j])) abort();
        free(x);
    } else if (!memchr(err, 0, sizeof err)) {
        abort();
    }
    io_images im;
    if (!io_read_input(path, 8, 3, &im, err, sizeof err)) io_images_free(&im);
    return 0;
}
