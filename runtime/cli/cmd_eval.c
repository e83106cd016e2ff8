#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "anomaly.h"
#include "cli.h"
#include "scoring.h"

/* ---- eval -------------------------------------------------------------- */

static const char *EVAL_HELP =
    "usage: glowrt eval --in IN... --out OUT... [--score bpd|typicality|complexity]\n"
    "                   [--train-stats FILE] [--model MODEL] [--plot FILE.png]\n"
    "\n"
    "How well a score separates OUT (out-of-distribution, the positive class)\n"
    "from IN; higher scores mean more anomalous. Prints, one per line:\n"
    "  n_in, n_out   rows used\n"
    "  auroc         P(out > in) + P(out == in) / 2\n"
    "  aupr          average precision with OUT positive (sklearn's definition:\n"
    "                sum over distinct thresholds of delta-recall * precision)\n"
    "  fpr95         the fraction of IN flagged at the highest threshold that\n"
    "                flags at least 95% of OUT\n"
    "\n"
    "Without --model, IN and OUT are CSV files written by glowrt score: the\n"
    "'score' column is used when there is one, else 'bpd'; --score bpd forces\n"
    "'bpd', --score typicality with --train-stats computes |bpd - mean| from\n"
    "'bpd'. Rows with an error are skipped. With --model MODEL, IN and OUT are\n"
    "images (as for glowrt score) scored here with --score (default bpd;\n"
    "typicality needs --train-stats).\n"
    "\n"
    "  --in X...        in-distribution inputs (the words up to the next option)\n"
    "  --out X...       out-of-distribution inputs\n"
    "  --plot FILE.png  histograms of the two scores (IN blue, OUT red, 60 bins\n"
    "                   over the 0.5..99.5 percentile range, each normalised to\n"
    "                   its own count; ticks at 0, 1/4, .. 1 of both axes)\n"
    "  --batch N, --threads N   as for glowrt score (with --model)\n"
    "\n"
    "Exit codes: 0; 3 with --model when some inputs failed (one line each on\n"
    "stderr; the others are used); 2 a bad option or file, or no scored rows.\n";

typedef struct {
    double *v;
    int64_t n, cap;
} vec;

static void push(vec *a, double x) {
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 1024;
        a->v = realloc(a->v, (size_t)a->cap * sizeof(double));
        if (!a->v) die("out of memory");
    }
    a->v[a->n++] = x;
}

/* Splits one CSV line in place (quotes as glowrt score writes them). */
static int split_csv(char *line, char **f, int max) {
    int n = 0;
    char *p = line;
    for (;;) {
        if (n == max) return n;
        if (*p == '"') {
            char *w = ++p;
            f[n++] = w;
            for (;;) {
                if (!*p) break;
                if (*p == '"' && p[1] == '"') { *w++ = '"'; p += 2; continue; }
                if (*p == '"') { p++; break; }
                *w++ = *p++;
            }
            *w = 0;
            while (*p && *p != ',') p++;
        } else {
            f[n++] = p;
            while (*p && *p != ',') p++;
        }
        if (*p != ',') { *p = 0; return n; }
        *p++ = 0;
    }
}

typedef struct {
    score_kind kind;
    int has_mean;
    double mean;
} eval_opts;

static void read_csv(const char *path, const eval_opts *eo, vec *out) {
    char e[GLOWRT_ERR_LEN + 64];
    FILE *f = io_open_file(path, NULL, e, sizeof e);
    if (!f) die("%s", e);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int col_bpd = -1, col_score = -1, col_err = -1, lineno = 0;
    char *fld[64];
    while ((len = getline(&line, &cap, f)) > 0) {
        lineno++;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        int nf = split_csv(line, fld, 64);
        if (lineno == 1) {
            for (int i = 0; i < nf; i++) {
                if (!strcmp(fld[i], "bpd")) col_bpd = i;
                else if (!strcmp(fld[i], "score")) col_score = i;
                else if (!strcmp(fld[i], "error")) col_err = i;
            }
            if (col_bpd < 0) die("%s: not a glowrt score CSV (no 'bpd' column in the header)", path);
            continue;
        }
        if (!len) continue;
        if (col_err >= 0 && col_err < nf && fld[col_err][0]) continue; /* a failed input */
        int col = col_bpd;
        if (eo->kind == SCORE_BPD || (eo->kind == SCORE_TYPICALITY && eo->has_mean)) col = col_bpd;
        else if (col_score >= 0) col = col_score;
        else if (eo->kind == SCORE_TYPICALITY || eo->kind == SCORE_COMPLEXITY)
            die("%s: no 'score' column (write it with glowrt score --score %s)", path, score_kind_name(eo->kind));
        if (col >= nf) die("%s:%d: missing column %d", path, lineno, col + 1);
        char *end;
        double v = strtod(fld[col], &end);
        if (end == fld[col] || *end || !isfinite(v)) die("%s:%d: '%s' is not a number", path, lineno, fld[col]);
        if (eo->kind == SCORE_TYPICALITY && eo->has_mean && col == col_bpd) v = fabs(v - eo->mean);
        push(out, v);
    }
    if (!lineno) die("%s: empty file, not a glowrt score CSV (no header)", path);
    free(line);
    fclose(f);
}

typedef struct {
    vec *v;
    score_kind kind;
    double mean;
} model_ctx;

static void model_row(const score_row *r, void *vctx) {
    model_ctx *c = vctx;
    if (!r->error) push(c->v, score_value(c->kind, r, c->mean));
}

/* ---- the plot: plain pixels, written through io_write_images ---------- */

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double quantile(const vec *a, const vec *b, double q) {
    int64_t n = a->n + b->n;
    double *t = malloc((size_t)n * sizeof(double));
    if (!t) die("out of memory");
    memcpy(t, a->v, (size_t)a->n * sizeof(double));
    memcpy(t + a->n, b->v, (size_t)b->n * sizeof(double));
    qsort(t, (size_t)n, sizeof(double), cmp_d);
    double v = t[(int64_t)floor(q * (double)(n - 1))];
    free(t);
    return v;
}

#define PW 640
#define PH 400
#define BINS 60

static void write_plot(const char *path, const vec *in, const vec *out) {
    double lo = quantile(in, out, 0.005), hi = quantile(in, out, 0.995);
    if (!(hi > lo)) { lo -= 0.5; hi += 0.5; }
    double hist[2][BINS] = {{0}};
    const vec *set[2] = {in, out};
    for (int s = 0; s < 2; s++)
        for (int64_t i = 0; i < set[s]->n; i++) {
            int b = (int)((set[s]->v[i] - lo) / (hi - lo) * BINS);
            if (b < 0) b = 0;
            if (b >= BINS) b = BINS - 1;
            hist[s][b] += 1.0 / (double)set[s]->n;
        }
    double top = 0;
    for (int s = 0; s < 2; s++)
        for (int b = 0; b < BINS; b++) top = hist[s][b] > top ? hist[s][b] : top;
    static float rgb[3][PH][PW];
    const int L = 40, R = PW - 20, T = 20, B = PH - 40; /* plot area */
    static double img[3][PH][PW];
    for (int y = 0; y < PH; y++)
        for (int x = 0; x < PW; x++) img[0][y][x] = img[1][y][x] = img[2][y][x] = 255;
    const double colour[2][3] = {{40, 90, 220}, {220, 50, 40}};
    for (int s = 0; s < 2; s++)
        for (int b = 0; b < BINS; b++) {
            int x0 = L + (R - L) * b / BINS, x1 = L + (R - L) * (b + 1) / BINS;
            int y0 = B - (int)((B - T) * hist[s][b] / top + 0.5);
            for (int y = y0; y < B; y++)
                for (int x = x0; x < x1; x++)
                    for (int ch = 0; ch < 3; ch++) img[ch][y][x] = 0.5 * img[ch][y][x] + 0.5 * colour[s][ch];
        }
    for (int x = L; x <= R; x++) img[0][B][x] = img[1][B][x] = img[2][B][x] = 0;   /* x axis */
    for (int y = T; y <= B; y++) img[0][y][L] = img[1][y][L] = img[2][y][L] = 0;   /* y axis */
    for (int k = 0; k <= 4; k++) {
        int x = L + (R - L) * k / 4, y = B - (B - T) * k / 4;
        for (int d = 1; d <= 6; d++) {
            img[0][B + d][x] = img[1][B + d][x] = img[2][B + d][x] = 0;
            img[0][y][L - d] = img[1][y][L - d] = img[2][y][L - d] = 0;
        }
    }
    for (int ch = 0; ch < 3; ch++)
        for (int y = 0; y < PH; y++)
            for (int x = 0; x < PW; x++) rgb[ch][y][x] = io_pixel_to_model((uint8_t)(img[ch][y][x] + 0.5), 8);
    char err[GLOWRT_ERR_LEN];
    if (io_write_images(path, &rgb[0][0][0], 1, 3, PH, PW, 8, err, sizeof err)) die("%s", err);
    fprintf(stderr, "%s: %s: x from %.6g to %.6g, y from 0 to %.4g of each set per bin\n", prog, path, lo, hi, top);
}

int cmd_eval(int argc, char **argv) {
    enum { OPT_SCORE = OPT_FIRST_FREE, OPT_IN, OPT_OUT, OPT_MODEL, OPT_PLOT, OPT_TRAIN_STATS };
    static const struct option opts[] = {{"batch", required_argument, 0, OPT_BATCH},
                                         {"threads", required_argument, 0, OPT_THREADS},
                                         {"score", required_argument, 0, OPT_SCORE},
                                         {"in", no_argument, 0, OPT_IN},
                                         {"out", no_argument, 0, OPT_OUT},
                                         {"model", required_argument, 0, OPT_MODEL},
                                         {"plot", required_argument, 0, OPT_PLOT},
                                         {"train-stats", required_argument, 0, OPT_TRAIN_STATS},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    common_opts o = {.batch = 16};
    eval_opts eo = {0};
    const char *model = NULL, *plot = NULL, *stats = NULL;
    char **lists[2];
    int counts[2] = {0, 0}, mode = -1, c;
    lists[0] = calloc((size_t)argc, sizeof(char *));
    lists[1] = calloc((size_t)argc, sizeof(char *));
    if (!lists[0] || !lists[1]) die("out of memory");
    while ((c = getopt_long(argc, argv, "-h", opts, NULL)) != -1) {
        if (c != 'o' && common_option(c, optarg, &o)) continue;
        if (c == 1) {
            if (mode < 0) die("'%s' is neither after --in nor after --out", optarg);
            lists[mode][counts[mode]++] = optarg;
        } else if (c == OPT_IN) mode = 0;
        else if (c == OPT_OUT) mode = 1;
        else if (c == OPT_SCORE) eo.kind = parse_score_kind(optarg);
        else if (c == OPT_MODEL) model = optarg;
        else if (c == OPT_PLOT) plot = optarg;
        else if (c == OPT_TRAIN_STATS) stats = optarg;
        else if (c == 'h') { fputs(EVAL_HELP, stdout); return 0; }
        else bad_option(argv);
    }
    if (!counts[0] || !counts[1]) die("expects --in X... and --out X... (see glowrt eval --help)");
    if (plot) check_output(plot, 0);
    char err[GLOWRT_ERR_LEN];
    if (stats) {
        ood_stats st;
        if (ood_stats_read(stats, &st, err, sizeof err)) die("%s", err);
        eo.has_mean = 1;
        eo.mean = st.train_mean_bpd;
    }
    vec v[2] = {{0}};
    int failed = 0;
    if (model) {
        if (eo.kind == SCORE_NONE) eo.kind = SCORE_BPD;
        if (eo.kind == SCORE_TYPICALITY && !eo.has_mean)
            die("--score typicality needs --train-stats FILE (written by glowrt calibrate)");
        scorer sc = {.o = o, .progress = 1, .need_complexity = eo.kind == SCORE_COMPLEXITY};
        sc.m = load_model(model, 1);
        install_stop_signals();
        for (int s = 0; s < 2; s++) {
            model_ctx mc = {.v = &v[s], .kind = eo.kind, .mean = eo.mean};
            int sig = scorer_run(&sc, lists[s], counts[s], model_row, &mc);
            if (sig) return 128 + sig;
        }
        failed = sc.n_failed > 0;
        glowrt_model_free(sc.m);
    } else {
        for (int s = 0; s < 2; s++)
            for (int i = 0; i < counts[s]; i++) read_csv(lists[s][i], &eo, &v[s]);
    }
    if (!v[0].n || !v[1].n) die("no scored rows in %s", !v[0].n ? "--in" : "--out");
    ood_metrics m;
    if (ood_evaluate(v[0].v, v[0].n, v[1].v, v[1].n, &m)) die("scores include NaN");
    printf("n_in %" PRId64 "\nn_out %" PRId64 "\nauroc %.6f\naupr %.6f\nfpr95 %.6f\n", v[0].n, v[1].n, m.auroc, m.aupr,
           m.fpr95);
    if (plot) write_plot(plot, &v[0], &v[1]);
    free(v[0].v);
    free(v[1].v);
    free(lists[0]);
    free(lists[1]);
    return failed ? 3 : 0;
}
