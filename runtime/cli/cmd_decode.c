#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* ---- decode and sample ------------------------------------------------- */

static const char *DECODE_HELP =
    "usage: glowrt decode MODEL Z.npy -o OUT [--size S|HxW] [--batch N] [--threads N]\n"
    "\n"
    "The exact inverse of encode: latents eps [N, D] (float32 or float64) back to images.\n"
    "OUT is .npy (float32 [N,C,H,W], model space), .png/.jpg (one image, or a\n"
    "grid when N > 1; at most 16384 pixels a side, checked before the work), or\n"
    "a directory (one PNG per sample).\n"
    "\n"
    "  --size S|HxW     image size of the latents (default: the model's)\n";

static const char *SAMPLE_HELP =
    "usage: glowrt sample MODEL -n N -o OUT [-t TEMP] [--seed S] [--size S|HxW] [--batch N] [--threads N]\n"
    "\n"
    "Draw N images at temperature TEMP (default 0.7; it scales eps, not the\n"
    "means). Sample i depends only on (seed, i): the same whatever --batch and\n"
    "--threads are. OUT as for glowrt decode.\n"
    "\n"
    "  -n N             number of samples (required)\n"
    "  -t, --temp T     temperature in [0, 10] (default 0.7)\n"
    "  --seed S         seed, a non-negative integer (default 0)\n"
    "  --size S|HxW     image size (default: the model's)\n";

int cmd_decode(int argc, char **argv) {
    static const struct option opts[] = {{"batch", required_argument, 0, OPT_BATCH},
                                         {"threads", required_argument, 0, OPT_THREADS},
                                         {"size", required_argument, 0, OPT_SIZE},
                                         {"output", required_argument, 0, 'o'},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    common_opts o = {.batch = 16};
    int c;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        if (common_option(c, optarg, &o)) continue;
        if (c == 'h') { fputs(DECODE_HELP, stdout); return 0; }
        bad_option(argv);
    }
    if (argc - optind != 2) die("expects MODEL and Z.npy (see glowrt decode --help)");
    if (!o.output) die("-o OUT is required");
    check_output(o.output, 1);
    glowrt_model *m = load_model(argv[optind], 1);
    const char *zpath = argv[optind + 1];
    glowrt_info info;
    glowrt_model_info(m, &info);
    int h = o.height ? o.height : info.height, w = o.width ? o.width : info.width;
    char err[GLOWRT_ERR_LEN];
    if (glowrt_check_size(m, h, w, err)) die("%s", err);
    float *eps;
    int ndim;
    int64_t shape[4];
    if (io_read_npy_f32(zpath, &eps, &ndim, shape, err, sizeof err)) die("%s", err);
    const int64_t D = glowrt_dim(m, h, w);
    if (ndim != 2 || shape[1] != D) {
        char got[128];
        int at = snprintf(got, sizeof got, "[");
        for (int i = 0; i < ndim; i++)
            at += snprintf(got + at, sizeof got - (size_t)at, "%s%" PRId64, i ? ", " : "", shape[i]);
        snprintf(got + at, sizeof got - (size_t)at, "]");
        die("%s: latents are %s, need [N, %" PRId64 "] for %dx%d images (see --size)", zpath, got, D, h, w);
    }
    const int64_t n = shape[0];
    check_output_size(m, o.output, n, h, w);
    float *x = malloc((size_t)(n > 0 ? n : 1) * (size_t)D * sizeof(float));
    if (!x) die("out of memory");
    glowrt_session *s = make_session(m, &o, h, w);
    for (int64_t i0 = 0; i0 < n; i0 += o.batch) {
        int k = (int)(n - i0 < o.batch ? n - i0 : o.batch);
        if (glowrt_decode(s, eps + i0 * D, k, x + i0 * D, err))
            die("%s[%" PRId64 "..%" PRId64 "]: %s", zpath, i0, i0 + k - 1, err);
    }
    write_output(m, o.output, x, n, h, w);
    glowrt_session_free(s);
    free(x);
    free(eps);
    glowrt_model_free(m);
    return 0;
}

int cmd_sample(int argc, char **argv) {
    static const struct option opts[] = {{"batch", required_argument, 0, OPT_BATCH},
                                         {"threads", required_argument, 0, OPT_THREADS},
                                         {"size", required_argument, 0, OPT_SIZE},
                                         {"seed", required_argument, 0, OPT_SEED},
                                         {"temp", required_argument, 0, 't'},
                                         {"output", required_argument, 0, 'o'},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    common_opts o = {.batch = 16};
    long n = -1;
    double temp = 0.7;
    uint64_t seed = 0;
    int c;
    while ((c = getopt_long(argc, argv, "hn:t:o:", opts, NULL)) != -1) {
        if (common_option(c, optarg, &o)) continue;
        if (c == 'n') n = parse_long("-n", optarg, 1, 1000000);
        else if (c == 't') temp = parse_double("--temp", optarg, 0.0, 10.0);
        else if (c == OPT_SEED) seed = parse_u64("--seed", optarg);
        else if (c == 'h') { fputs(SAMPLE_HELP, stdout); return 0; }
        else bad_option(argv);
    }
    if (argc - optind != 1) die("expects one MODEL (see glowrt sample --help)");
    if (n < 0) die("-n N is required");
    if (!o.output) die("-o OUT is required");
    check_output(o.output, 1);
    glowrt_model *m = load_model(argv[optind], 1);
    glowrt_info info;
    glowrt_model_info(m, &info);
    int h = o.height ? o.height : info.height, w = o.width ? o.width : info.width;
    char err[GLOWRT_ERR_LEN];
    if (glowrt_check_size(m, h, w, err)) die("%s", err);
    check_output_size(m, o.output, n, h, w);
    const int64_t D = glowrt_dim(m, h, w);
    float *x = malloc((size_t)n * (size_t)D * sizeof(float));
    if (!x) die("out of memory");
    glowrt_session *s = make_session(m, &o, h, w);
    for (int64_t i0 = 0; i0 < n; i0 += o.batch) {
        int k = (int)(n - i0 < o.batch ? n - i0 : o.batch);
        if (glowrt_sample(s, seed, (uint64_t)i0, k, (float)temp, x + i0 * D, err)) die("%s", err);
    }
    write_output(m, o.output, x, n, h, w);
    glowrt_session_free(s);
    free(x);
    glowrt_model_free(m);
    return 0;
}

