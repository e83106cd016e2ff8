/* glowrt timing driver of bench/compare: times glowrt_log_prob / glowrt_decode
 * through the library (include/glowrt.h), so that process start-up, model
 * loading and file I/O are not timed.
 *
 *   compare_glowrt MODEL.glow {density|sample} BATCH N REPEATS THREADS IN.f32 OUT.bin H W
 *
 * IN.f32: N images [N, C, H, W] (density) or N latents [N, D] (sample), raw
 * float32. OUT.bin: log_p float64 [N] or x float32 [N, C, H, W], from the last
 * repeat. Prints one JSON line: {"times_s": [...], "setup_s": ..., "isa": ...}. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "glowrt.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Peak resident set of this process image (VmHWM: unlike ru_maxrss it is not
 * inherited from the parent across fork + exec), in KiB; -1 if unknown. */
static long vm_hwm_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmHWM:", 6) == 0) v = atol(line + 6);
    fclose(f);
    return v;
}

static void die(const char *what, const char *err) {
    fprintf(stderr, "compare_glowrt: %s: %s\n", what, err);
    exit(2);
}

int main(int argc, char **argv) {
    if (argc != 11) {
        fprintf(stderr, "usage: %s MODEL {density|sample} BATCH N REPEATS THREADS IN OUT H W\n", argv[0]);
        return 2;
    }
    const char *path = argv[1], *mode = argv[2], *in = argv[7], *out = argv[8];
    int b = atoi(argv[3]), n = atoi(argv[4]), reps = atoi(argv[5]), threads = atoi(argv[6]);
    int h = atoi(argv[9]), w = atoi(argv[10]);
    int density = strcmp(mode, "density") == 0;
    if (!density && strcmp(mode, "sample") != 0) die("mode", "density or sample");
    if (b < 1 || n < 1 || reps < 1) die("arguments", "BATCH, N, REPEATS must be >= 1");
    char err[GLOWRT_ERR_LEN];
    double t0 = now();
    glowrt_model *m = NULL;
    if (glowrt_model_load(path, &m, err)) die("load", err);
    glowrt_session *s = NULL;
    if (glowrt_session_create(m, b, h, w, threads, &s, err)) die("session", err);
    int64_t d = glowrt_dim(m, h, w);
    size_t count = (size_t)n * (size_t)d;
    float *x = malloc(count * sizeof(float));
    float *y = density ? NULL : malloc(count * sizeof(float));
    double *lp = density ? malloc((size_t)n * sizeof(double)) : NULL;
    if (!x || (!density && !y) || (density && !lp)) die("memory", "out of memory");
    FILE *f = fopen(in, "rb");
    if (!f || fread(x, sizeof(float), count, f) != count) die(in, "cannot read N inputs");
    fclose(f);
    double setup = now() - t0;

    /* warm-up: one batch */
    int m0 = b < n ? b : n;
    if (density ? glowrt_log_prob(s, x, m0, lp, err) : glowrt_decode(s, x, m0, y, err)) die(mode, err);
    double *times = malloc((size_t)reps * sizeof(double));
    for (int r = 0; r < reps; r++) {
        double t = now();
        for (int i = 0; i < n; i += b) {
            int k = n - i < b ? n - i : b;
            int rc = density ? glowrt_log_prob(s, x + (size_t)i * d, k, lp + i, err)
                             : glowrt_decode(s, x + (size_t)i * d, k, y + (size_t)i * d, err);
            if (rc) die(mode, err);
        }
        times[r] = now() - t;
    }
    f = fopen(out, "wb");
    if (!f) die(out, "cannot write");
    size_t wr = density ? fwrite(lp, sizeof(double), (size_t)n, f) : fwrite(y, sizeof(float), count, f);
    if (wr != (density ? (size_t)n : count) || fclose(f)) die(out, "write failed");
    printf("{\"times_s\": [");
    for (int r = 0; r < reps; r++) printf("%s%.9f", r ? ", " : "", times[r]);
    printf("], \"setup_s\": %.6f, \"isa\": \"%s\", \"vm_hwm_kib\": %ld}\n", setup, glowrt_isa(), vm_hwm_kib());
    free(times);
    free(x);
    free(y);
    free(lp);
    glowrt_session_free(s);
    glowrt_model_free(m);
    return 0;
}
