/* Long run: scores N small images (default 100000) in one process through
 * one session, in batches, and prints the resident set size (VmRSS) after
 * the first batch and at the end. Fails (exit 1) when RSS grew by more than
 * --max-growth-kib (default 4096) or a log_p is not finite.
 *
 * usage: long_run MODEL [N] [--max-growth-kib K]
 * docs/robustness.md records the figures. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "glowrt.h"

static long rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) v = strtol(line + 6, NULL, 10);
    if (f) fclose(f);
    return v;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: long_run MODEL [N] [--max-growth-kib K]\n");
        return 2;
    }
    long n_total = 100000, max_growth = 4096;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--max-growth-kib") && i + 1 < argc) max_growth = atol(argv[++i]);
        else n_total = atol(argv[i]);
    }
    char err[GLOWRT_ERR_LEN];
    glowrt_model *m;
    glowrt_session *s;
    const int batch = 16;
    if (glowrt_model_load(argv[1], &m, err) || glowrt_model_verify(m, err) ||
        glowrt_session_create(m, batch, 0, 0, 1, &s, err)) {
        fprintf(stderr, "long_run: %s\n", err);
        return 2;
    }
    glowrt_info info;
    glowrt_model_info(m, &info);
    const int64_t D = glowrt_dim(m, info.height, info.width);
    float *x = malloc(sizeof(float) * (size_t)(batch * D));
    double lp[16];
    uint64_t r = 1;
    long rss0 = 0, rss_max = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long done = 0; done < n_total; done += batch) {
        const int n = n_total - done < batch ? (int)(n_total - done) : batch;
        for (int64_t j = 0; j < n * D; j++) {  /* fresh images each batch */
            r = r * 6364136223846793005u + 1442695040888963407u;
            x[j] = (float)((r >> 40) & 0xFF) / 256.0f - 0.5f + 0.5f / 256.0f;
        }
        if (glowrt_log_prob(s, x, n, lp, err)) {
            fprintf(stderr, "long_run: %s\n", err);
            return 1;
        }
        for (int i = 0; i < n; i++)
            if (!isfinite(lp[i])) {
                fprintf(stderr, "long_run: image %ld: log_p %g\n", done + i, lp[i]);
                return 1;
            }
        const long rss = rss_kib();
        if (done == 0) rss0 = rss;
        if (rss > rss_max) rss_max = rss;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    const long rss1 = rss_kib();
    const double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("long_run: %ld images of %dx%dx%d in %.1f s (%.0f images/s); RSS after the first batch %ld KiB, "
           "at the end %ld KiB (%+ld KiB), peak %ld KiB\n",
           n_total, info.in_channels, info.height, info.width, secs, (double)n_total / secs, rss0, rss1, rss1 - rss0,
           rss_max);
    free(x);
    glowrt_session_free(s);
    glowrt_model_free(m);
    if (rss1 - rss0 > max_growth) {
        fprintf(stderr, "long_run: RSS grew by %ld KiB (> %ld)\n", rss1 - rss0, max_growth);
        return 1;
    }
    return 0;
}
