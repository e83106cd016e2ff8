/* glowrt: the command-line tool. Each subcommand parses its options, loads
 * the model, and calls the library; every failure is one line on stderr and
 * exit code 2. */
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

#include "glowrt.h"
#include "io.h"

#define EXIT_USAGE 2

static const char *prog = "glowrt";

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(EXIT_USAGE);
}

/* ---- option helpers ---------------------------------------------------- */

static long parse_long(const char *opt, const char *s, long lo, long hi) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) die("%s: '%s' is not an integer in [%ld, %ld]", opt, s, lo, hi);
    return v;
}

static uint64_t parse_u64(const char *opt, const char *s) {
    char *end;
    errno = 0;
    if (*s == '-') die("%s: '%s' is not a non-negative integer", opt, s);
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end) die("%s: '%s' is not a non-negative integer", opt, s);
    return (uint64_t)v;
}

static double parse_double(const char *opt, const char *s, double lo, double hi) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) die("%s: '%s' is not a number in [%g, %g]", opt, s, lo, hi);
    return v;
}

/* "S" or "HxW". */
static void parse_size(const char *s, int *h, int *w) {
    char *end;
    long a = strtol(s, &end, 10), b = a;
    if (*end == 'x' || *end == 'X') b = strtol(end + 1, &end, 10);
    if (*end || a < 1 || b < 1 || a > 16384 || b > 16384) die("--size: '%s' is not S or HxW", s);
    *h = (int)a;
    *w = (int)b;
}

/* getopt's own messages are off (opterr = 0): this is the one line. */
static void bad_option(char **argv) {
    const char *opt = argv[optind - 1];
    if (optopt > 32 && optopt < 127) die("option -%c: unknown or missing its value (see %s --help)", optopt, prog);
    die("unknown option or missing value: '%s' (see %s --help)", opt, prog);
}

/* Options every computing command takes. */
typedef struct {
    int threads, batch;
    int height, width;    /* 0: the model's default */
    const char *output;
} common_opts;

enum { OPT_THREADS = 1000, OPT_BATCH, OPT_SIZE, OPT_FORMAT, OPT_SEED, OPT_VERIFY, OPT_HELP };

static int common_option(int c, const char *arg, common_opts *o) {
    switch (c) {
    case OPT_THREADS: o->threads = (int)parse_long("--threads", arg, 1, 1024); return 1;
    case OPT_BATCH: o->batch = (int)parse_long("--batch", arg, 1, 65536); return 1;
    case OPT_SIZE: parse_size(arg, &o->height, &o->width); return 1;
    case 'o': o->output = arg; return 1;
    default: return 0;
    }
}

/* Commands that compute also check every tensor's CRC: one pass over the
 * file, cheap next to the work, and a flipped bit never turns into a silently
 * wrong answer. */
static glowrt_model *load_model(const char *path, int verify) {
    glowrt_model *m;
    char err[GLOWRT_ERR_LEN];
    if (glowrt_model_load(path, &m, err)) die("%s", err);
    if (verify && glowrt_model_verify(m, err)) die("%s", err);
    return m;
}

static glowrt_session *make_session(const glowrt_model *m, const common_opts *o, int h, int w) {
    glowrt_session *s;
    char err[GLOWRT_ERR_LEN];
    if (glowrt_session_create(m, o->batch, h, w, o->threads, &s, err)) die("%s", err);
    return s;
}

/* ---- inputs ------------------------------------------------------------ */

/* Calls fn(images, path, is_array) for every input file named by args, in order. */
typedef void (*input_fn)(const io_images *im, const char *path, int is_array, void *ctx);

static int is_npy(const char *path) {
    FILE *f = fopen(path, "rb");
    unsigned char magic[6] = {0};
    int yes = f && fread(magic, 1, 6, f) == 6 && !memcmp(magic, "\x93NUMPY", 6);
    if (f) fclose(f);
    return yes;
}

static void for_each_input(char **args, int n_args, int n_bits, int model_c, input_fn fn, void *ctx) {
    char err[GLOWRT_ERR_LEN];
    for (int a = 0; a < n_args; a++) {
        char **paths;
        size_t count;
        if (io_list_inputs(args[a], &paths, &count, err, sizeof err)) die("%s", err);
        for (size_t i = 0; i < count; i++) {
            io_images im;
            if (io_read_input(paths[i], n_bits, model_c, &im, err, sizeof err)) die("%s", err);
            fn(&im, paths[i], is_npy(paths[i]), ctx);
            io_images_free(&im);
        }
        io_free_list(paths, count);
    }
}

/* ---- info -------------------------------------------------------------- */

static const char *INFO_HELP =
    "usage: glowrt info MODEL [--verify] [--size S|HxW]\n"
    "\n"
    "Print a model's architecture: metadata, level shapes, parameter count,\n"
    "FLOPs per image per direction, and the kernels that run it.\n"
    "\n"
    "  --verify       also check every tensor's CRC32C and that all values are finite\n"
    "  --size S|HxW   describe the model at another image size\n";

static int cmd_info(int argc, char **argv) {
    static const struct option opts[] = {
        {"verify", no_argument, 0, OPT_VERIFY}, {"size", required_argument, 0, OPT_SIZE}, {"help", no_argument, 0, 'h'}, {0}};
    int verify = 0, h = 0, w = 0, c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == OPT_VERIFY) verify = 1;
        else if (c == OPT_SIZE) parse_size(optarg, &h, &w);
        else if (c == 'h') { fputs(INFO_HELP, stdout); return 0; }
        else bad_option(argv);
    }
    if (optind != argc - 1) die("info: expects one MODEL (see glowrt info --help)");
    glowrt_model *m = load_model(argv[optind], 0);
    glowrt_info info;
    glowrt_model_info(m, &info);
    char err[GLOWRT_ERR_LEN];
    if (!h) { h = info.height; w = info.width; }
    if (glowrt_check_size(m, h, w, err)) die("%s", err);
    glowrt_model_describe(m, h, w, stdout);
    if (verify) {
        if (glowrt_model_verify(m, err)) die("%s", err);
        printf("verify     ok: header, metadata and every tensor's CRC32C match; all values finite\n");
    }
    glowrt_model_free(m);
    return 0;
}

/* ---- score ------------------------------------------------------------- */

static const char *SCORE_HELP =
    "usage: glowrt score MODEL INPUT... [--batch N] [--threads N] [--format csv|jsonl] [-o FILE]\n"
    "\n"
    "Exact log-likelihood of each image: one row per image, columns id,log_p,bpd.\n"
    "log_p is in nats at the model-space input; bpd = -(log_p - D ln n_bins) / (D ln 2).\n"
    "\n"
    "INPUT: a float32 .npy [N,C,H,W] in model space (used as is), a uint8 .npy of\n"
    "pixels [N,H,W] or [N,H,W,C], a .png, a .jpg/.jpeg, or a directory of those.\n"
    "Pixels go to model space at the bin centre. Array rows get ids PATH[i].\n"
    "\n"
    "  --batch N        images per call into the runtime (default 16)\n"
    "  --threads N      threads (default: all cores)\n"
    "  --format F       csv (default) or jsonl\n"
    "  -o FILE          write there (atomically) instead of stdout\n";

typedef struct {
    glowrt_model *m;
    common_opts o;
    int jsonl;
    FILE *out;
    glowrt_session *s;
    int sh, sw;
    double *log_p;
} score_ctx;

static void put_json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

static void put_csv_field(FILE *f, const char *s) {
    if (!strpbrk(s, ",\"\n\r")) { fputs(s, f); return; }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

/* Reuses the session while the image size stays the same. */
static void ensure_session(glowrt_session **s, int *sh, int *sw, const glowrt_model *m, const common_opts *o, int h, int w) {
    if (*s && *sh == h && *sw == w) return;
    glowrt_session_free(*s);
    *s = make_session(m, o, h, w);
    *sh = h;
    *sw = w;
}

static void score_file(const io_images *im, const char *path, int is_array, void *vctx) {
    score_ctx *ctx = vctx;
    char err[GLOWRT_ERR_LEN];
    glowrt_info info;
    glowrt_model_info(ctx->m, &info);
    if (glowrt_check_size(ctx->m, (int)im->h, (int)im->w, err)) die("%s: %s", path, err);
    ensure_session(&ctx->s, &ctx->sh, &ctx->sw, ctx->m, &ctx->o, (int)im->h, (int)im->w);
    const int64_t D = im->c * im->h * im->w;
    for (int64_t i0 = 0; i0 < im->n; i0 += ctx->o.batch) {
        int n = (int)(im->n - i0 < ctx->o.batch ? im->n - i0 : ctx->o.batch);
        if (glowrt_log_prob(ctx->s, im->x + i0 * D, n, ctx->log_p, err)) die("%s: %s", path, err);
        for (int i = 0; i < n; i++) {
            char id[PATH_MAX + 32];
            if (is_array) snprintf(id, sizeof id, "%s[%" PRId64 "]", path, i0 + i);
            else snprintf(id, sizeof id, "%s", path);
            const double bpd = glowrt_bpd(ctx->log_p[i], D, info.n_bits);
            if (ctx->jsonl) {
                fputs("{\"id\":", ctx->out);
                put_json_string(ctx->out, id);
                fprintf(ctx->out, ",\"log_p\":%.10g,\"bpd\":%.8g}\n", ctx->log_p[i], bpd);
            } else {
                put_csv_field(ctx->out, id);
                fprintf(ctx->out, ",%.10g,%.8g\n", ctx->log_p[i], bpd);
            }
        }
        fflush(ctx->out);
    }
}

static int cmd_score(int argc, char **argv) {
    static const struct option opts[] = {{"batch", required_argument, 0, OPT_BATCH},
                                         {"threads", required_argument, 0, OPT_THREADS},
                                         {"format", required_argument, 0, OPT_FORMAT},
                                         {"output", required_argument, 0, 'o'},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    score_ctx ctx = {0};
    ctx.o.batch = 16;
    int c;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        if (common_option(c, optarg, &ctx.o)) continue;
        if (c == OPT_FORMAT) {
            if (!strcmp(optarg, "csv")) ctx.jsonl = 0;
            else if (!strcmp(optarg, "jsonl")) ctx.jsonl = 1;
            else die("score: --format must be csv or jsonl");
        } else if (c == 'h') { fputs(SCORE_HELP, stdout); return 0; }
        else bad_option(argv);
    }
    if (argc - optind < 2) die("score: expects MODEL and at least one INPUT (see glowrt score --help)");
    ctx.m = load_model(argv[optind], 1);
    glowrt_info info;
    glowrt_model_info(ctx.m, &info);
    char tmp[PATH_MAX + 8];
    ctx.out = stdout;
    if (ctx.o.output) {
        snprintf(tmp, sizeof tmp, "%s.tmp", ctx.o.output);
        ctx.out = fopen(tmp, "w");
        if (!ctx.out) die("%s: cannot write: %s", tmp, strerror(errno));
    }
    ctx.log_p = malloc((size_t)ctx.o.batch * sizeof(double));
    if (!ctx.log_p) die("out of memory");
    if (!ctx.jsonl) fputs("id,log_p,bpd\n", ctx.out);
    for_each_input(argv + optind + 1, argc - optind - 1, info.n_bits, info.in_channels, score_file, &ctx);
    if (ctx.o.output) {
        if (fclose(ctx.out)) die("%s: write failed: %s", tmp, strerror(errno));
        if (rename(tmp, ctx.o.output)) die("%s: cannot rename: %s", ctx.o.output, strerror(errno));
    } else if (fflush(stdout)) {
        die("stdout: write failed: %s", strerror(errno));
    }
    glowrt_session_free(ctx.s);
    free(ctx.log_p);
    glowrt_model_free(ctx.m);
    return 0;
}

/* ---- encode ------------------------------------------------------------ */

static const char *ENCODE_HELP =
    "usage: glowrt encode MODEL INPUT... -o Z.npy [--batch N] [--threads N]\n"
    "\n"
    "Write the standardised latents eps of every image as float32 [N, D]: for\n"
    "each level in the order the levels are factored out (finest first, top\n"
    "last), (z - mean) * exp(-log_sd), flattened in C,H,W order. All inputs\n"
    "must have one image size. INPUT as for glowrt score.\n";

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
            die("%s: %s", path, err);
    }
    ctx->n += im->n;
}

static int cmd_encode(int argc, char **argv) {
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
    if (argc - optind < 2) die("encode: expects MODEL and at least one INPUT (see glowrt encode --help)");
    if (!ctx.o.output) die("encode: -o Z.npy is required");
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

/* ---- decode and sample ------------------------------------------------- */

static const char *DECODE_HELP =
    "usage: glowrt decode MODEL Z.npy -o OUT [--size S|HxW] [--batch N] [--threads N]\n"
    "\n"
    "The exact inverse of encode: latents eps float32 [N, D] back to images.\n"
    "OUT is .npy (float32 [N,C,H,W], model space), .png/.jpg (one image, or a\n"
    "grid when N > 1), or a directory (one PNG per sample).\n"
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

static void write_output(const glowrt_model *m, const char *out, const float *x, int64_t n, int h, int w) {
    glowrt_info info;
    char err[GLOWRT_ERR_LEN];
    glowrt_model_info(m, &info);
    if (io_write_images(out, x, n, info.in_channels, h, w, info.n_bits, err, sizeof err)) die("%s", err);
}

static int cmd_decode(int argc, char **argv) {
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
    if (argc - optind != 2) die("decode: expects MODEL and Z.npy (see glowrt decode --help)");
    if (!o.output) die("decode: -o OUT is required");
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
    if (ndim != 2 || shape[1] != D)
        die("%s: latents must be float32 [N, %" PRId64 "] for %dx%d images (see --size)", zpath, D, h, w);
    const int64_t n = shape[0];
    float *x = malloc((size_t)(n > 0 ? n : 1) * (size_t)D * sizeof(float));
    if (!x) die("out of memory");
    glowrt_session *s = make_session(m, &o, h, w);
    for (int64_t i0 = 0; i0 < n; i0 += o.batch) {
        int k = (int)(n - i0 < o.batch ? n - i0 : o.batch);
        if (glowrt_decode(s, eps + i0 * D, k, x + i0 * D, err)) die("%s: %s", zpath, err);
    }
    write_output(m, o.output, x, n, h, w);
    glowrt_session_free(s);
    free(x);
    free(eps);
    glowrt_model_free(m);
    return 0;
}

static int cmd_sample(int argc, char **argv) {
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
    if (argc - optind != 1) die("sample: expects one MODEL (see glowrt sample --help)");
    if (n < 0) die("sample: -n N is required");
    if (!o.output) die("sample: -o OUT is required");
    glowrt_model *m = load_model(argv[optind], 1);
    glowrt_info info;
    glowrt_model_info(m, &info);
    int h = o.height ? o.height : info.height, w = o.width ? o.width : info.width;
    char err[GLOWRT_ERR_LEN];
    if (glowrt_check_size(m, h, w, err)) die("%s", err);
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

/* ---- main -------------------------------------------------------------- */

static const char *MAIN_HELP =
    "usage: glowrt COMMAND [ARGS...]   (glowrt COMMAND --help for each)\n"
    "\n"
    "Run Glow-family normalizing flows from a .glow model file, exactly.\n"
    "\n"
    "commands:\n"
    "  info     architecture, shapes, FLOPs, kernels; --verify checks the file\n"
    "  score    exact log-likelihood (nats) and bits/dim of images\n"
    "  encode   images -> standardised latents eps (.npy)\n"
    "  decode   latents -> images (the exact inverse of encode)\n"
    "  sample   draw images at a temperature, seeded and reproducible\n"
    "\n"
    "Errors are one line on stderr and exit code 2. GLOWRT_ISA=ref forces the\n"
    "reference kernels.\n";

int main(int argc, char **argv) {
    if (argc < 2) {
        fputs(MAIN_HELP, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(MAIN_HELP, stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("glowrt %s (kernels: %s)\n", GLOWRT_VERSION, glowrt_isa());
        return 0;
    }
    static char progbuf[64];
    snprintf(progbuf, sizeof progbuf, "glowrt %s", cmd);
    prog = progbuf;
    opterr = 0;
    argv[1] = argv[0];
    argc--;
    argv++;
    if (!strcmp(cmd, "info")) return cmd_info(argc, argv);
    if (!strcmp(cmd, "score")) return cmd_score(argc, argv);
    if (!strcmp(cmd, "encode")) return cmd_encode(argc, argv);
    if (!strcmp(cmd, "decode")) return cmd_decode(argc, argv);
    if (!strcmp(cmd, "sample")) return cmd_sample(argc, argv);
    prog = "glowrt";
    die("unknown command '%s' (see glowrt --help)", cmd);
    return EXIT_USAGE;
}
