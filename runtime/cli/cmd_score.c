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
#include <unistd.h>

#include "anomaly.h"
#include "cli.h"
#include "scoring.h"

/* ---- score ------------------------------------------------------------- */

static const char *SCORE_HELP =
    "usage: glowrt score MODEL INPUT... [--score bpd|typicality|complexity] [--train-stats FILE]\n"
    "                    [--threshold FILE] [--shard i/n] [--batch N] [--threads N]\n"
    "                    [--format csv|jsonl] [--no-progress] [-o FILE]\n"
    "\n"
    "Exact log-likelihood of each image: one row per image, columns\n"
    "id,log_p,bpd,error (then score and flag when asked for). log_p is in nats at\n"
    "the model-space input; bpd = -(log_p - D ln n_bins) / (D ln 2). Rows are\n"
    "written as they are scored, each whole.\n"
    "\n"
    "INPUT: a float32 or float64 .npy [N,C,H,W] in model space (used as is), a uint8 .npy of\n"
    "pixels [N,H,W] or [N,H,W,C], an idx3-ubyte file (MNIST format, gzipped or\n"
    "not), a .png, a .jpg/.jpeg, a directory of png/jpg/npy files, or '-': paths\n"
    "(or directories) on stdin, one per line, scored as they arrive. Pixels go to\n"
    "model space at the bin centre. Rows of arrays and idx files get ids PATH[i].\n"
    "\n"
    "Nothing is lost: an input that cannot be read or scored (unreadable image,\n"
    "wrong shape, bad .npy, missing path) gets a row with its id, empty log_p and\n"
    "bpd and the reason in 'error' (jsonl: an \"error\" key, on those rows only),\n"
    "one line on stderr, and the others are scored. A whole file that fails is\n"
    "one row with id PATH and counts as one item.\n"
    "\n"
    "  --score S        add a 'score' column (higher = more anomalous):\n"
    "                   bpd; typicality = |bpd - train mean bpd| (needs\n"
    "                   --train-stats or --threshold); complexity = bpd minus the\n"
    "                   image's PNG size (level 9, headers included) in bits per\n"
    "                   dimension (Serra et al. 2020)\n"
    "  --train-stats F  JSON written by glowrt calibrate: its train_mean_bpd\n"
    "  --threshold F    JSON written by glowrt calibrate: adds 'score' (its kind)\n"
    "                   and 'flag' (1 = score > threshold: anomalous, else 0)\n"
    "  --shard i/n      score only items g with g % n == i, g counting every item\n"
    "                   (array row, image, failed file) of the whole ordered input\n"
    "                   from 0: the n shards partition the input exactly\n"
    "  --batch N        images per call into the runtime (default 16)\n"
    "  --threads N      threads (default: all cores)\n"
    "  --format F       csv (default) or jsonl\n"
    "  --no-progress    no progress bar (it is drawn on stderr only when stderr is\n"
    "                   a terminal and the rows do not go to a terminal)\n"
    "  -o FILE          write FILE.tmp as it goes, renamed to FILE at the end (a\n"
    "                   device, pipe or link such as /dev/stdout is written directly)\n"
    "\n"
    "Exit codes: 0 every input scored; 3 some inputs failed (their rows carry the\n"
    "error); 2 a bad model or option (nothing written), or every input failed;\n"
    "130 / 143 stopped by SIGINT / SIGTERM: the rows written so far are whole\n"
    "rows (stdout is flushed; with -o, FILE.tmp is renamed FILE.partial and FILE\n"
    "is not touched).\n";

typedef struct {
    int jsonl;
    FILE *out;
    score_kind kind;
    double train_mean;
    int has_flag;
    double threshold;
    char *row;
    size_t row_cap, row_len;
} score_ctx;

static void put(score_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(score_ctx *c, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(c->row + c->row_len, c->row_cap - c->row_len, fmt, ap);
        va_end(ap);
        if (k < 0) die("output formatting failed");
        if ((size_t)k < c->row_cap - c->row_len) {
            c->row_len += (size_t)k;
            return;
        }
        c->row_cap = 2 * c->row_cap + (size_t)k;
        c->row = realloc(c->row, c->row_cap);
        if (!c->row) die("out of memory");
    }
}

static void put_json_string(score_ctx *c, const char *s) {
    put(c, "\"");
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') put(c, "\\%c", ch);
        else if (ch < 0x20) put(c, "\\u%04x", ch);
        else put(c, "%c", ch);
    }
    put(c, "\"");
}

static void put_csv_field(score_ctx *c, const char *s) {
    if (!strpbrk(s, ",\"\n\r")) { put(c, "%s", s); return; }
    put(c, "\"");
    for (; *s; s++) put(c, *s == '"' ? "\"\"" : "%c", *s);
    put(c, "\"");
}

static void score_row_out(const score_row *r, void *vctx) {
    score_ctx *c = vctx;
    c->row_len = 0;
    const int with_score = c->kind != SCORE_NONE;
    double s = r->error ? NAN : score_value(c->kind, r, c->train_mean);
    if (c->jsonl) {
        put(c, "{\"id\":");
        put_json_string(c, r->id);
        if (r->error) {
            put(c, ",\"error\":");
            put_json_string(c, r->error);
        } else {
            put(c, ",\"log_p\":%.10g,\"bpd\":%.8g", r->log_p, r->bpd);
            if (with_score) put(c, ",\"score\":%.8g", s);
            if (c->has_flag) put(c, ",\"flag\":%d", s > c->threshold);
        }
        put(c, "}\n");
    } else {
        put_csv_field(c, r->id);
        if (r->error) {
            put(c, ",,,");
            put_csv_field(c, r->error);
            if (with_score) put(c, ",");
            if (c->has_flag) put(c, ",");
        } else {
            put(c, ",%.10g,%.8g,", r->log_p, r->bpd);
            if (with_score) put(c, ",%.8g", s);
            if (c->has_flag) put(c, ",%d", s > c->threshold);
        }
        put(c, "\n");
    }
    /* one fwrite per row; stdio flushes whole buffers, and the buffer is
     * flushed at the end or on a signal, so the output holds whole rows */
    if (fwrite(c->row, 1, c->row_len, c->out) != c->row_len) die("write failed: %s", strerror(errno));
}

int cmd_score(int argc, char **argv) {
    enum { OPT_SCORE = OPT_FIRST_FREE, OPT_TRAIN_STATS, OPT_THRESHOLD, OPT_SHARD, OPT_NO_PROGRESS };
    static const struct option opts[] = {{"batch", required_argument, 0, OPT_BATCH},
                                         {"threads", required_argument, 0, OPT_THREADS},
                                         {"format", required_argument, 0, OPT_FORMAT},
                                         {"score", required_argument, 0, OPT_SCORE},
                                         {"train-stats", required_argument, 0, OPT_TRAIN_STATS},
                                         {"threshold", required_argument, 0, OPT_THRESHOLD},
                                         {"shard", required_argument, 0, OPT_SHARD},
                                         {"no-progress", no_argument, 0, OPT_NO_PROGRESS},
                                         {"output", required_argument, 0, 'o'},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    score_ctx ctx = {0};
    scorer sc = {.o.batch = 16, .progress = 1};
    const char *stats_path = NULL, *thr_path = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        if (common_option(c, optarg, &sc.o)) continue;
        if (c == OPT_FORMAT) {
            if (!strcmp(optarg, "csv")) ctx.jsonl = 0;
            else if (!strcmp(optarg, "jsonl")) ctx.jsonl = 1;
            else die("--format must be csv or jsonl");
        } else if (c == OPT_SCORE) ctx.kind = parse_score_kind(optarg);
        else if (c == OPT_TRAIN_STATS) stats_path = optarg;
        else if (c == OPT_THRESHOLD) thr_path = optarg;
        else if (c == OPT_SHARD) parse_shard(optarg, &sc.shard_i, &sc.shard_n);
        else if (c == OPT_NO_PROGRESS) sc.progress = 0;
        else if (c == 'h') { fputs(SCORE_HELP, stdout); return 0; }
        else bad_option(argv);
    }
    if (argc - optind < 2) die("expects MODEL and at least one INPUT (see glowrt score --help)");
    char err[GLOWRT_ERR_LEN];
    ood_stats st;
    int have_mean = 0;
    if (thr_path) {
        if (ood_stats_read(thr_path, &st, err, sizeof err)) die("%s", err);
        if (!st.has_threshold) die("%s: no \"threshold\" (write it with glowrt calibrate)", thr_path);
        if (st.score[0] && strcmp(st.score, "bpd") && strcmp(st.score, "typicality") && strcmp(st.score, "complexity"))
            die("%s: \"score\" is '%s', not bpd, typicality or complexity", thr_path, st.score);
        score_kind k = st.score[0] ? parse_score_kind(st.score) : SCORE_BPD;
        if (ctx.kind != SCORE_NONE && ctx.kind != k)
            die("--score %s contradicts %s, calibrated for %s", score_kind_name(ctx.kind), thr_path, st.score);
        ctx.kind = k;
        ctx.has_flag = 1;
        ctx.threshold = st.threshold;
        ctx.train_mean = st.train_mean_bpd;
        have_mean = 1;
    }
    if (stats_path) {
        if (ood_stats_read(stats_path, &st, err, sizeof err)) die("%s", err);
        ctx.train_mean = st.train_mean_bpd;
        have_mean = 1;
    }
    if (ctx.kind == SCORE_TYPICALITY && !have_mean)
        die("--score typicality needs --train-stats FILE (written by glowrt calibrate)");
    sc.need_complexity = ctx.kind == SCORE_COMPLEXITY;
    sc.m = load_model(argv[optind], 1);
    char tmp[PATH_MAX + 16];
    ctx.out = stdout;
    /* -o a device or pipe (/dev/stdout, a fifo): written directly, no .tmp renamed over it */
    const int direct = sc.o.output && io_not_regular(sc.o.output);
    if (sc.o.output) {
        snprintf(tmp, sizeof tmp, direct ? "%s" : "%s.tmp", sc.o.output);
        ctx.out = fopen(tmp, "w");
        if (!ctx.out) die("%s: cannot write: %s", tmp, strerror(errno));
    }
    ctx.row_cap = 1024;
    ctx.row = malloc(ctx.row_cap);
    if (!ctx.row) die("out of memory");
    if (!ctx.jsonl)
        fprintf(ctx.out, "id,log_p,bpd,error%s%s\n", ctx.kind != SCORE_NONE ? ",score" : "", ctx.has_flag ? ",flag" : "");
    sc.flush_file = ctx.out;
    if (!sc.o.output && isatty(1)) sc.progress = 0; /* the rows themselves show it */
    install_stop_signals();
    int sig = scorer_run(&sc, argv + optind + 1, argc - optind - 1, score_row_out, &ctx);
    if (sc.o.output) {
        if (ferror(ctx.out) | fclose(ctx.out)) die("%s: write failed: %s", tmp, strerror(errno));
        if (direct) {
            /* nothing to rename */
        } else if (sig) {
            char part[PATH_MAX + 16];
            snprintf(part, sizeof part, "%s.partial", sc.o.output);
            if (rename(tmp, part)) die("%s: cannot rename: %s", part, strerror(errno));
        } else if (rename(tmp, sc.o.output)) {
            die("%s: cannot rename: %s", sc.o.output, strerror(errno));
        }
    } else if (fflush(stdout)) {
        die("stdout: write failed: %s", strerror(errno));
    }
    free(ctx.row);
    glowrt_model_free(sc.m);
    if (sig) {
        note("stopped by signal %d after %" PRId64 " rows%s%s%s", sig, sc.n_ok + sc.n_failed,
             sc.o.output && !direct ? ", kept in " : "", sc.o.output && !direct ? sc.o.output : "",
             sc.o.output && !direct ? ".partial" : "");
        return 128 + sig;
    }
    if (sc.n_failed) return sc.n_ok ? 3 : EXIT_USAGE;
    return 0;
}
