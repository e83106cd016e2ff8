#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* ---- interp and manipulate: walks in latent space ---------------------- */

static const char *INTERP_HELP =
    "usage: glowrt interp MODEL A B [-n N] -o OUT [--batch N] [--threads N]\n"
    "\n"
    "Encodes the first image of A and of B (png/jpg/npy/idx, as for glowrt encode),\n"
    "takes "
    "eps_k = (1 - t_k) eps_A + t_k eps_B at t_k = k / (N - 1), k = 0..N-1,\n"
    "and decodes them: image 0 is A and image N-1 is B (up to the flow's float\n"
    "round trip). OUT: .png/.jpg -> one strip, the N images in a row with\n"
    "2-pixel black gaps; .npy -> float32 [N,C,H,W] in model space; otherwise a\n"
    "directory of N PNGs.\n"
    "\n"
    "  -n N             images in the strip, 2..1000 (default 8)\n";

static const char *MANIPULATE_HELP =
    "usage: glowrt manipulate MODEL --pos X [--pos X...] --neg X [--neg X...] [--alpha A]\n"
    "                         IMAGE... -o OUT [--batch N] [--threads N]\n"
    "\n"
    "Moves images along an attribute direction in latent space (Glow, Kingma &\n"
    "Dhariwal 2018): direction = mean eps(pos) - mean eps(neg); each IMAGE is\n"
    "decoded from its eps + A * direction. Every input (png/jpg/npy/idx files\n"
    "and directories, as for glowrt encode) must have one image size. OUT as for\n"
    "glowrt decode: .npy (float32 [N,C,H,W]), .png/.jpg (a grid) or a directory.\n"
    "\n"
    "  --pos X          images with the attribute (a file or directory; repeatable)\n"
    "  --neg X          images without it (repeatable)\n"
    "  --alpha A        step along the direction, in [-100, 100] (default 1)\n";

/* Encodes every image of the inputs: eps [n, D] (grown), all one size. */
typedef struct {
    glowrt_model *m;
    common_opts *o;
    glowrt_session *s;
    int sh, sw;
    float *eps;
    int64_t n, D;
} enc;

static void enc_file(const io_images *im, const char *path, int is_array, void *vctx) {
    enc *e = vctx;
    char err[GLOWRT_ERR_LEN];
    (void)is_array;
    if (e->s && (im->h != e->sh || im->w != e->sw))
        die("%s: image size %" PRId64 "x%" PRId64 " differs from the first input's %dx%d", path, im->h, im->w, e->sh,
            e->sw);
    if (glowrt_check_size(e->m, (int)im->h, (int)im->w, err)) die("%s: %s", path, err);
    ensure_session(&e->s, &e->sh, &e->sw, e->m, e->o, (int)im->h, (int)im->w);
    e->D = im->c * im->h * im->w;
    float *g = realloc(e->eps, (size_t)((e->n + im->n) * e->D) * sizeof(float));
    if (!g) die("out of memory");
    e->eps = g;
    for (int64_t i0 = 0; i0 < im->n; i0 += e->o->batch) {
        int k = (int)(im->n - i0 < e->o->batch ? im->n - i0 : e->o->batch);
        if (glowrt_encode(e->s, im->x + i0 * e->D, k, e->eps + (e->n + i0) * e->D, NULL, err)) die("%s: %s", path, err);
    }
    e->n += im->n;
}

static void encode_all(enc *e, char **args, int n) {
    glowrt_info info;
    glowrt_model_info(e->m, &info);
    for_each_input(args, n, info.n_bits, info.in_channels, enc_file, e);
    if (!e->n) die("no images in the inputs");
}

static void decode_all(enc *e, const float *eps, int64_t n, float *x) {
    char err[GLOWRT_ERR_LEN];
    for (int64_t i0 = 0; i0 < n; i0 += e->o->batch) {
        int k = (int)(n - i0 < e->o->batch ? n - i0 : e->o->batch);
        if (glowrt_decode(e->s, eps + i0 * e->D, k, x + i0 * e->D, err))
            die("output images %" PRId64 "..%" PRId64 ": %s", i0, i0 + k - 1, err);
    }
}

static int is_ext(const char *p, const char *ext) {
    size_t a = strlen(p), b = strlen(ext);
    return a >= b && !strcasecmp(p + a - b, ext);
}

/* .png/.jpg/.jpeg: interp writes one strip */
static int strip_output(const char *out) {
    return is_ext(out, ".png") || is_ext(out, ".jpg") || is_ext(out, ".jpeg");
}

int cmd_interp(int argc, char **argv) {
    static const struct option opts[] = {{"batch", required_argument, 0, OPT_BATCH},
                                         {"threads", required_argument, 0, OPT_THREADS},
                                         {"output", required_argument, 0, 'o'},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    common_opts o = {.batch = 16};
    long n = 8;
    int c;
    while ((c = getopt_long(argc, argv, "hn:o:", opts, NULL)) != -1) {
        if (common_option(c, optarg, &o)) continue;
        if (c == 'n') n = parse_long("-n", optarg, 2, 1000);
        else if (c == 'h') { fputs(INTERP_HELP, stdout); return 0; }
        else bad_option(argv);
    }
    if (argc - optind != 3) die("expects MODEL A B (see glowrt interp --help)");
    if (!o.output) die("-o OUT is required");
    check_output(o.output, 1);
    enc e = {.o = &o};
    e.m = load_model(argv[optind], 1);
    glowrt_info info;
    glowrt_model_info(e.m, &info);
    float *ends[2];
    for (int k = 0; k < 2; k++) {
        enc one = {.m = e.m, .o = &o};
        encode_all(&one, argv + optind + 1 + k, 1);
        if (e.s && (one.sh != e.sh || one.sw != e.sw))
            die("%s: image size %dx%d differs from A's %dx%d", argv[optind + 2], one.sh, one.sw, e.sh, e.sw);
        ends[k] = one.eps; /* image 0 of the input */
        if (!e.s) {
            e.s = one.s;
            e.sh = one.sh;
            e.sw = one.sw;
            e.D = one.D;
            /* the output's size is known now: refuse a strip too wide before B and the decoding */
            if (strip_output(o.output)) check_output_size(e.m, o.output, 1, e.sh, (int)(n * e.sw + (n - 1) * 2));
            else check_output_size(e.m, o.output, n, e.sh, e.sw);
        } else {
            glowrt_session_free(one.s);
        }
    }
    const int64_t D = e.D;
    float *eps = malloc((size_t)(n * D) * sizeof(float)), *x = malloc((size_t)(n * D) * sizeof(float));
    if (!eps || !x) die("out of memory");
    for (long k = 0; k < n; k++) {
        const float t = (float)k / (float)(n - 1);
        for (int64_t j = 0; j < D; j++) eps[k * D + j] = (1.0f - t) * ends[0][j] + t * ends[1][j];
    }
    decode_all(&e, eps, n, x);
    const int h = e.sh, w = e.sw, C = info.in_channels;
    if (strip_output(o.output)) {
        /* one row: n images, 2-pixel black gaps (pixel 0) */
        const int64_t W = n * w + (n - 1) * 2;
        float *strip = malloc((size_t)(C * h * W) * sizeof(float));
        if (!strip) die("out of memory");
        const float black = io_pixel_to_model(0, info.n_bits);
        for (int64_t i = 0; i < C * h * W; i++) strip[i] = black;
        for (long k = 0; k < n; k++)
            for (int ch = 0; ch < C; ch++)
                for (int y = 0; y < h; y++)
                    memcpy(strip + ((int64_t)ch * h + y) * W + k * (w + 2), x + k * D + ((int64_t)ch * h + y) * w,
                           (size_t)w * sizeof(float));
        char err[GLOWRT_ERR_LEN];
        if (io_write_images(o.output, strip, 1, C, h, W, info.n_bits, err, sizeof err)) die("%s", err);
        free(strip);
    } else {
        write_output(e.m, o.output, x, n, h, w);
    }
    free(eps);
    free(x);
    free(ends[0]);
    free(ends[1]);
    glowrt_session_free(e.s);
    glowrt_model_free(e.m);
    return 0;
}

int cmd_manipulate(int argc, char **argv) {
    enum { OPT_POS = OPT_FIRST_FREE, OPT_NEG, OPT_ALPHA };
    static const struct option opts[] = {{"batch", required_argument, 0, OPT_BATCH},
                                         {"threads", required_argument, 0, OPT_THREADS},
                                         {"pos", required_argument, 0, OPT_POS},
                                         {"neg", required_argument, 0, OPT_NEG},
                                         {"alpha", required_argument, 0, OPT_ALPHA},
                                         {"output", required_argument, 0, 'o'},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    common_opts o = {.batch = 16};
    double alpha = 1.0;
    const char *model = NULL;
    char **lists[3];
    int counts[3] = {0, 0, 0}, c; /* 0 pos, 1 neg, 2 images */
    for (int k = 0; k < 3; k++)
        if (!(lists[k] = calloc((size_t)argc, sizeof(char *)))) die("out of memory");
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        if (common_option(c, optarg, &o)) continue;
        if (c == OPT_POS) lists[0][counts[0]++] = optarg;
        else if (c == OPT_NEG) lists[1][counts[1]++] = optarg;
        else if (c == OPT_ALPHA) alpha = parse_double("--alpha", optarg, -100.0, 100.0);
        else if (c == 'h') { fputs(MANIPULATE_HELP, stdout); return 0; }
        else bad_option(argv);
    }
    if (optind >= argc) die("expects MODEL (see glowrt manipulate --help)");
    model = argv[optind];
    for (int i = optind + 1; i < argc; i++) lists[2][counts[2]++] = argv[i];
    if (!counts[0] || !counts[1]) die("expects --pos X and --neg X");
    if (!counts[2]) die("expects IMAGE... to move");
    if (!o.output) die("-o OUT is required");
    check_output(o.output, 1);
    glowrt_model *m = load_model(model, 1);
    enc e[3];
    for (int k = 0; k < 3; k++) {
        e[k] = (enc){.m = m, .o = &o};
        encode_all(&e[k], lists[k], counts[k]);
        if (k && (e[k].sh != e[0].sh || e[k].sw != e[0].sw))
            die("%s: image size %dx%d differs from --pos's %dx%d", lists[k][0], e[k].sh, e[k].sw, e[0].sh, e[0].sw);
    }
    const int64_t D = e[0].D;
    double *dir = calloc((size_t)D, sizeof(double));
    if (!dir) die("out of memory");
    for (int k = 0; k < 2; k++) {
        const double sign = k ? -1.0 : 1.0;
        for (int64_t i = 0; i < e[k].n; i++)
            for (int64_t j = 0; j < D; j++) dir[j] += sign * e[k].eps[i * D + j] / (double)e[k].n;
    }
    const int64_t n = e[2].n;
    check_output_size(m, o.output, n, e[2].sh, e[2].sw);
    float *x = malloc((size_t)(n * D) * sizeof(float));
    if (!x) die("out of memory");
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < D; j++) e[2].eps[i * D + j] += (float)(alpha * dir[j]);
    decode_all(&e[2], e[2].eps, n, x);
    write_output(m, o.output, x, n, e[2].sh, e[2].sw);
    for (int k = 0; k < 3; k++) {
        glowrt_session_free(e[k].s);
        free(e[k].eps);
        free(lists[k]);
    }
    free(dir);
    free(x);
    glowrt_model_free(m);
    return 0;
}
