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

/* ---- calibrate --------------------------------------------------------- */

static const char *CALIBRATE_HELP =
    "usage: glowrt calibrate MODEL --in INPUT... [--fpr F] [--score bpd|typicality|complexity]\n"
    "                        -o THRESHOLD.json [--shard i/n] [--batch N] [--threads N]\n"
    "\n"
    "Scores in-distribution images (INPUT as for glowrt score) and writes a JSON\n"
    "file for glowrt score --threshold and --train-stats:\n"
    "  score           the score kind (default bpd; higher = more anomalous)\n"
    "  threshold       t such that 'score > t' flags at most floor(F * n) of\n"
    "                  these n images: the (floor(F*n)+1)-th largest score\n"
    "  fpr, n          F and the number of images scored\n"
    "  train_mean_bpd, train_std_bpd   mean and standard deviation of their bpd\n"
    "                  (typicality is |bpd - train_mean_bpd|)\n"
    "\n"
    "  --in INPUT...    the in-distribution images (the words after --in up to\n"
    "                   the next option; --in may be repeated)\n"
    "  --fpr F          fraction of in-distribution images to flag, in [0, 1)\n"
    "                   (default 0.01)\n"
    "  --score S        bpd (default), typicality or complexity\n"
    "  -o FILE          the JSON file (written atomically); required\n"
    "\n"
    "Inputs that fail are reported (one line each on stderr) and left out; exit\n"
    "code 3 then (the file is still written), 2 if none could be scored.\n";

typedef struct {
    double *bpd, *cx;
    int64_t n, cap;
} collect;

static void collect_row(const score_row *r, void *vctx) {
    collect *c = vctx;
    if (r->error) return;
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 1024;
        c->bpd = realloc(c->bpd, (size_t)c->cap * sizeof(double));
        c->cx = realloc(c->cx, (size_t)c->cap * sizeof(double));
        if (!c->bpd || !c->cx) die("out of memory");
    }
    c->bpd[c->n] = r->bpd;
    c->cx[c->n] = r->cx_bpd;
    c->n++;
}

int cmd_calibrate(int argc, char **argv) {
    enum { OPT_SCORE = OPT_FIRST_FREE, OPT_IN, OPT_FPR, OPT_SHARD };
    static const struct option opts[] = {{"batch", required_argument, 0, OPT_BATCH},
                                         {"threads", required_argument, 0, OPT_THREADS},
                                         {"score", required_argument, 0, OPT_SCORE},
                                         {"in", no_argument, 0, OPT_IN},
                                         {"fpr", required_argument, 0, OPT_FPR},
                                         {"shard", required_argument, 0, OPT_SHARD},
                                         {"output", required_argument, 0, 'o'},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    scorer sc = {.o.batch = 16, .progress = 1};
    score_kind kind = SCORE_BPD;
    double fpr = 0.01;
    const char *model = NULL;
    char **ins = calloc((size_t)argc, sizeof(char *));
    int n_in = 0, in_mode = 0, c;
    if (!ins) die("out of memory");
    /* '-' first: words that are not options come back in order (code 1) */
    while ((c = getopt_long(argc, argv, "-ho:", opts, NULL)) != -1) {
        if (common_option(c, optarg, &sc.o)) continue;
        if (c == 1) {
            if (in_mode) ins[n_in++] = optarg;
            else if (!model) model = optarg;
            else die("unexpected '%s' (inputs go after --in)", optarg);
        } else if (c == OPT_IN) in_mode = 1;
        else if (c == OPT_SCORE) kind = parse_score_kind(optarg);
        else if (c == OPT_FPR) fpr = parse_double("--fpr", optarg, 0.0, 0.999999);
        else if (c == OPT_SHARD) parse_shard(optarg, &sc.shard_i, &sc.shard_n);
        else if (c == 'h') { fputs(CALIBRATE_HELP, stdout); return 0; }
        else bad_option(argv);
    }
    if (!model) die("expects MODEL (see glowrt calibrate --help)");
    if (!n_in) die("expects --in INPUT... (see glowrt calibrate --help)");
    if (!sc.o.output) die("-o THRESHOLD.json is required");
    check_output(sc.o.output, 0);
    sc.m = load_model(model, 1);
    sc.need_complexity = kind == SCORE_COMPLEXITY;
    collect col = {0};
    install_stop_signals();
    int sig = scorer_run(&sc, ins, n_in, collect_row, &col);
    if (sig) {
        note("stopped by signal %d; nothing written", sig);
        return 128 + sig;
    }
    if (!col.n) die("no input could be scored");
    double mean = 0, var = 0;
    for (int64_t i = 0; i < col.n; i++) mean += col.bpd[i];
    mean /= (double)col.n;
    for (int64_t i = 0; i < col.n; i++) var += (col.bpd[i] - mean) * (col.bpd[i] - mean);
    double *s = malloc((size_t)col.n * sizeof(double));
    if (!s) die("out of memory");
    for (int64_t i = 0; i < col.n; i++) {
        score_row r = {.bpd = col.bpd[i], .cx_bpd = col.cx[i]};
        s[i] = score_value(kind, &r, mean);
    }
    ood_stats st = {.fpr = fpr, .n = col.n, .train_mean_bpd = mean,
                    .train_std_bpd = col.n > 1 ? sqrt(var / (double)(col.n - 1)) : 0.0, .has_threshold = 1};
    snprintf(st.score, sizeof st.score, "%s", score_kind_name(kind));
    st.threshold = ood_threshold_for_fpr(s, col.n, fpr);
    int64_t flagged = 0;
    for (int64_t i = 0; i < col.n; i++) flagged += s[i] > st.threshold;
    char err[GLOWRT_ERR_LEN];
    if (ood_stats_write(sc.o.output, &st, model, err, sizeof err)) die("%s", err);
    fprintf(stderr, "%s: %s threshold %.8g flags %" PRId64 " of %" PRId64 " (%.4f); bpd mean %.6g sd %.6g\n", prog,
            st.score, st.threshold, flagged, col.n, (double)flagged / (double)col.n, st.train_mean_bpd,
            st.train_std_bpd);
    free(s);
    free(col.bpd);
    free(col.cx);
    free(ins);
    glowrt_model_free(sc.m);
    return sc.n_failed ? 3 : 0;
}
