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
#include <strings.h>
#include <sys/stat.h>

#include "cli.h"

/* ---- encode ------------------------------------------------------------ */

static const char *ENCODE_HELP =
    "usage: glowrt encode MODEL INPUT... -o Z.npy [--batch N] [--threads N]\n"
    "\n"
    "Write the standardised latents eps of every image as float32 [N, D]: for\n"
    "each level in the order the levels are factored out (finest first, top\n"
    "last), (z - mean) * exp(-log_sd), flattened in C,H,W order. All inputs\n"
    "must have one image size. INPUT as for glowrt score, but not '-'.\n"
    "Z.npy is written as a .npy array whatever its name (a pipe or a device\n"
    "too), but an image name (.png, .jpg, .jpeg) is refused.\n";

typedef struct {
    glowrt_model *m;
    common_opts o;
    glowrt_session *s;
    int sh, sw;
    float *eps;
    int64_t n, D;
} encode_ctx;

static void encode_file(const io_images *im, const char *path, int is_array, void *vctx) {
    encode_ctx *ctx = vctx;
    char err[GLOWRT_ERR_LEN];
    (void)is_array;
    if (ctx->s && (im->h != ctx->sh || im->w != ctx->sw))
        die("%s: image size %" PRId64 "x%" PRId64 " differs from the first input's %dx%d", path, im->h, im->w, ctx->sh,
            ctx->sw);
    if (glowrt_check_size(ctx->m, (int)im->h, (int)im->w, err)) die("%s: %s", path, err);
    ensure_session(&ctx->s, &ctx->sh, &ctx->sw, ctx->m, &ctx->o, (int)im->h, (int)im->w);
    ctx->D = im->c * im->h * im->w;
    float *grown = realloc(ctx->eps, (size_t)((ctx->n + im->n) * ctx->D) * sizeof(float));
    if (!grown) die("out of memory");
    ctx->eps = grown;
    for (int64_t i0 = 0; i0 < im->n; i0 += ctx->o.batch) {
        int n = (int)(im->n - i0 < ctx->o.batch ? im->n - i0 : ctx->o.batch);
        if (glowrt_encode(ctx->s, im->x + i0 * ctx->D, n, ctx->eps + (ctx->n + i0) * ctx->D, NULL, err))
            die("%s[%" PRId64 "..%" PRId64 "]: %s", path, i0, i0 + n - 1, err);
    }
    ctx->n += im->n;
}

/* -o x.png would get a .npy array under an image's name (and replace an
 * image of that name, perhaps an input). A pipe or a device of that name is
 * written into as any other. */
static void refuse_image_name(const char *out) {
    size_t n = strlen(out);
    struct stat st;
    if (stat(out, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ||
                                S_ISSOCK(st.st_mode)))
        return;
    for (const char *const *e = (const char *const[]){".png", ".jpg", ".jpeg", NULL}; *e; e++)
        if (n >= strlen(*e) && !strcasecmp(out + n - strlen(*e), *e))
            die("%s: encode writes latents as a .npy array, not an image: name the output .npy", out);
}

int cmd_encode(int argc, char **argv) {
    static const struct option opts[] = {{"batch", required_argument, 0, OPT_BATCH},
                                         {"threads", required_argument, 0, OPT_THREADS},
                                         {"output", required_argument, 0, 'o'},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    encode_ctx ctx = {0};
    ctx.o.batch = 16;
    int c;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        if (common_option(c, optarg, &ctx.o)) continue;
        if (c == 'h') { fputs(ENCODE_HELP, stdout); return 0; }
        bad_option(argv);
    }
    if (argc - optind < 2) die("expects MODEL and at least one INPUT (see glowrt encode --help)");
    if (!ctx.o.output) die("-o Z.npy is required");
    check_output(ctx.o.output, 0);
    refuse_image_name(ctx.o.output);
    ctx.m = load_model(argv[optind], 1);
    glowrt_info info;
    glowrt_model_info(ctx.m, &info);
    for_each_input(argv + optind + 1, argc - optind - 1, info.n_bits, info.in_channels, encode_file, &ctx);
    char err[GLOWRT_ERR_LEN];
    const int64_t shape[2] = {ctx.n, ctx.D};
    if (io_write_npy_f32(ctx.o.output, ctx.eps, 2, shape, err, sizeof err)) die("%s", err);
    glowrt_session_free(ctx.s);
    free(ctx.eps);
    glowrt_model_free(ctx.m);
    return 0;
}

