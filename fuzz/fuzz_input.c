/* libFuzzer target: io_read_input, the reader of every model input (.npy
 * float32 / uint8, PNG, JPEG: the format is chosen by content), for a
 * 3-channel and a 1-channel model at n_bits 8 and 5. One binary serves the
 * npy, png and jpeg corpora (fuzz/corpus/{npy,png,jpeg}). */
#include <math.h>
#include <string.h>

#include "fuzz_common.h"
#include "io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file(data, size);
    static const int cases[][2] = {{3, 8}, {1, 5}};
    for (int i = 0; i < 2; i++) {
        io_images im;
        char err[256];
        if (io_read_input(path, cases[i][1], cases[i][0], &im, err, sizeof err)) {
            if (!memchr(err, 0, sizeof err)) abort();
            continue;
        }
        if (im.n < 1 || im.c != cases[i][0] || im.h < 1 || im.w < 1) abort();
        const int64_t n = im.n * im.c * im.h * im.w;
        double sum = 0;
        for (int64_t j = 0; j < n; j++) sum += im.x[j];  /* every float is there */
        if (!isfinite(sum)) abort();
        io_images_free(&im);
    }
    return 0;
}
