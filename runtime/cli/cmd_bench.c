/* glowrt bench: throughput of one model on this machine, and with
 * --profile where the time goes. Inputs are synthetic (the work does not
 * depend on the values); nothing is read or written while timing. */
#define _GNU_SOURCE
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "scoring.h"

static const char *BENCH_HELP =
    "usage: glowrt bench MODEL [--mode density|sample] [--batch N] [--threads N] [--repeats R]\n"
    "                    [--size S|HxW] [--profile]\n"
    "\n"
    "Time the model on synthetic inputs: one warm-up batch, then R timed batches\n"
    "(default 5). Prints the median and spread of ms/image, images/s and\n"
    "GFLOP/s. --profile adds the time per op kind and convolution shape.\n"
    "\n"
    "  --mode M         density (log_prob, the default) or sample (temperature 0.7)\n"
    "  --batch N        images per batch (default 16)\n"
    "  --threads N      threads (default: all cores)\n";

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int cmd_bench(int argc, char **argv) {
    enum { OPT_MODE = OPT_FIRST_FREE, OPT_REPEATS, OPT_PROFILE };
    static const struct option opts[] = {{"batch", required_argument, 0, OPT_BATCH},
                                         {"threads", required_argument, 0, OPT_THREADS},
                                         {"size", required_argument, 0, OPT_SIZE},
                                         {"mode", required_argument, 0, OPT_MODE},
                                         {"repeats", required_argument, 0, OPT_REPEATS},
                                         {"profile", no_argument, 0, OPT_PROFILE},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    common_opts o = {.batch = 16};
    int sample = 0, repeats = 5, profile = 0, c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c != 'o' && common_option(c, optarg, &o)) continue;
        if (c == OPT_MODE) {
            if (!strcmp(optarg, "density")) sample = 0;
            else if (!strcmp(optarg, "sample")) sample = 1;
            else die("--mode must be density or sample");
        } else if (c == OPT_REPEATS) repeats = (int)parse_long("--repeats", optarg, 1, 1000);
        else if (c == OPT_PROFILE) profile = 1;
        else if (c == 'h') { fputs(BENCH_HELP, stdout); return 0; }
        else bad_option(argv);
    }
    if (argc - optind != 1) die("expects one MODEL (see glowrt bench --help)");
    glowrt_model *m = load_model(argv[optind], 1);
    glowrt_info info;
    glowrt_model_info(m, &info);
    const int h = o.height ? o.height : info.height, w = o.width ? o.width : info.width;
    char err[GLOWRT_ERR_LEN];
    if (glowrt_check_size(m, h, w, err)) die("%s", err);
    const int64_t D = glowrt_dim(m, h, w);
    const int n = o.batch;
    float *x = malloc((size_t)n * (size_t)D * sizeof(float));
    double *log_p = malloc((size_t)n * sizeof(double)), *ms = malloc((size_t)repeats * sizeof(double));
    if (!x || !log_p || !ms) die("out of memory");
    /* Model-space inputs spread over the pixel range, deterministic. */
    uint64_t r = 0x9E3779B97F4A7C15ull;
    for (int64_t i = 0; i < (int64_t)n * D; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((r >> 40) & 255) / 256.0f - 0.5f + 0.5f / 256.0f;
    }
    const double t_setup = now();
    glowrt_session *s = make_session(m, &o, h, w);
    const double setup_ms = 1e3 * (now() - t_setup);
    int overflow_noted = 0;
    for (int rep = -1; rep < repeats; rep++) {
        if (rep == 0 && profile && glowrt_session_profile(s, 1)) die("out of memory");
        const double t0 = now();
        const int rc = sample ? glowrt_sample(s, 1, (uint64_t)(rep + 1) * (uint64_t)n, n, 0.7f, x, err)
                              : glowrt_log_prob(s, x, n, log_p, err);
        /* A model whose samples overflow float32 (an untrained one, say) costs
         * the same time: a benchmark goes on, and says so once. */
        if (rc && !(sample && strstr(err, "overflows float32"))) die("%s", err);
        if (rc && !overflow_noted++) note("%s (timings are unaffected)", err);
        if (rep >= 0) ms[rep] = 1e3 * (now() - t0) / n;
    }
    qsort(ms, (size_t)repeats, sizeof(double), cmp_double);
    const double med = ms[repeats / 2], gflop = glowrt_flops(m, h, w) / 1e9;
    printf("model      %s (%dx%dx%d, %.3f GFLOP/image)\n", argv[optind], info.in_channels, h, w, gflop);
    printf("mode       %s, batch %d, threads %ld, kernels %s, session set-up %.0f ms\n", sample ? "sample" : "density", n,
           o.threads ? (long)o.threads : sysconf(_SC_NPROCESSORS_ONLN), glowrt_isa(), setup_ms);
    printf("ms/image   %.2f median of %d batches (min %.2f, max %.2f)\n", med, repeats, ms[0], ms[repeats - 1]);
    printf("images/s   %.2f\n", 1e3 / med);
    printf("GFLOP/s    %.1f\n", gflop / (med / 1e3));
    if (profile) {
        printf("\nprofile over %d batches of %d:\n", repeats, n);
        glowrt_session_profile_print(s, stdout);
    }
    glowrt_session_free(s);
    free(x);
    free(log_p);
    free(ms);
    glowrt_model_free(m);
    return 0;
}
