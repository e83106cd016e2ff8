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

int cmd_score(int argc, char **argv) {
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

