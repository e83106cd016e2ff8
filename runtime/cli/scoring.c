/* Scoring many inputs at scale (scoring.h). */
#define _GNU_SOURCE
#include "scoring.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "anomaly.h"

volatile sig_atomic_t stop_signal = 0;

static void on_signal(int sig) { stop_signal = sig; }

void install_stop_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: a blocking read returns */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

score_kind parse_score_kind(const char *s) {
    if (!strcmp(s, "bpd")) return SCORE_BPD;
    if (!strcmp(s, "typicality")) return SCORE_TYPICALITY;
    if (!strcmp(s, "complexity")) return SCORE_COMPLEXITY;
    die("--score must be bpd, typicality or complexity, not '%s'", s);
}

const char *score_kind_name(score_kind k) {
    switch (k) {
    case SCORE_BPD: return "bpd";
    case SCORE_TYPICALITY: return "typicality";
    case SCORE_COMPLEXITY: return "complexity";
    default: return "none";
    }
}

double score_value(score_kind k, const score_row *r, double train_mean) {
    switch (k) {
    case SCORE_TYPICALITY: return fabs(r->bpd - train_mean);
    case SCORE_COMPLEXITY: return r->bpd - r->cx_bpd;
    default: return r->bpd;
    }
}

void parse_shard(const char *s, int *i, int *n) {
    char *end;
    errno = 0;
    long a = strtol(s, &end, 10);
    if (errno || end == s || *end != '/') die("--shard: '%s' is not i/n (e.g. 0/4)", s);
    const char *q = end + 1;
    long b = strtol(q, &end, 10);
    if (errno || end == q || *end || b < 1 || b > 1000000 || a < 0 || a >= b)
        die("--shard: '%s' is not i/n with 0 <= i < n", s);
    *i = (int)a;
    *n = (int)b;
}

/* ---- progress ------------------------------------------------------------ */

typedef struct {
    int on;
    int64_t total;   /* items of this shard, -1 unknown */
    int64_t done;
    double t0, last;
    int drawn;
} progress;

static progress *g_progress;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void progress_clear(progress *p) {
    if (p && p->on && p->drawn) {
        fputs("\r\033[K", stderr);
        p->drawn = 0;
    }
}

static void progress_draw(progress *p, int force) {
    if (!p || !p->on) return;
    double t = now_s();
    if (!force && t - p->last < 0.2) return;
    p->last = t;
    double rate = t > p->t0 ? (double)p->done / (t - p->t0) : 0;
    char line[256];
    int k;
    if (p->total > 0) {
        double f = (double)p->done / (double)p->total;
        if (f > 1) f = 1;
        char bar[31];
        int fill = (int)(f * 30);
        for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
        bar[30] = 0;
        k = snprintf(line, sizeof line, "[%s] %3d%% %" PRId64 "/%" PRId64 " %.1f img/s", bar, (int)(f * 100), p->done,
                     p->total, rate);
        if (rate > 0 && p->done < p->total) {
            long eta = (long)((double)(p->total - p->done) / rate + 0.5);
            snprintf(line + k, sizeof line - (size_t)k, " ETA %ld:%02ld:%02ld", eta / 3600, eta / 60 % 60, eta % 60);
        }
    } else {
        snprintf(line, sizeof line, "%" PRId64 " images %.1f img/s", p->done, rate);
    }
    fprintf(stderr, "\r\033[K%s", line);
    fflush(stderr);
    p->drawn = 1;
}

void note(const char *fmt, ...) {
    progress_clear(g_progress);
    va_list ap;
    va_start(ap, fmt);
    vline(fmt, ap);
    va_end(ap);
    fflush(stderr);
}

/* ---- the input list ----------------------------------------------------- */

/* Lines of stdin, read as they come; poll() so that a signal stops the wait
 * whichever thread it lands on. */
typedef struct {
    char buf[65536];
    size_t len, pos;
    int eof;
} line_reader;

static char *next_line(line_reader *r) {
    static char line[PATH_MAX + 2];
    for (;;) {
        char *nl = memchr(r->buf + r->pos, '\n', r->len - r->pos);
        if (nl || (r->eof && r->pos < r->len)) {
            size_t n = nl ? (size_t)(nl - (r->buf + r->pos)) : r->len - r->pos;
            if (n > PATH_MAX) n = PATH_MAX;
            memcpy(line, r->buf + r->pos, n);
            line[n] = 0;
            r->pos = nl ? (size_t)(nl - r->buf) + 1 : r->len;
            if (n && line[n - 1] == '\r') line[n - 1] = 0;
            if (!line[0]) continue; /* blank lines are skipped */
            return line;
        }
        if (r->eof) return NULL;
        if (r->pos) {
            memmove(r->buf, r->buf + r->pos, r->len - r->pos);
            r->len -= r->pos;
            r->pos = 0;
        }
        if (r->len == sizeof r->buf) die("stdin: a line longer than %zu bytes", sizeof r->buf);
        struct pollfd pfd = {.fd = 0, .events = POLLIN};
        while (!stop_signal) {
            int k = poll(&pfd, 1, 200);
            if (k > 0 || (k < 0 && errno != EINTR)) break;
        }
        if (stop_signal) return NULL;
        ssize_t got = read(0, r->buf + r->len, sizeof r->buf - r->len);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) die("stdin: cannot read: %s", strerror(errno));
        if (got == 0) r->eof = 1;
        r->len += (size_t)got;
    }
}

/* ---- scoring ------------------------------------------------------------ */

typedef struct {
    scorer *sc;
    row_fn fn;
    void *ctx;
    progress prog;
    glowrt_session *s;
    int sh, sw;
    double *log_p;
    float *xb;        /* a batch [B, C, H, W] */
    int64_t xb_cap;   /* floats */
    uint8_t *pix;     /* one image [H, W, C], for the complexity term */
    int64_t pix_cap;
    int64_t g;        /* item index over the whole input */
    int n_bits, model_c;
} run_state;

static int mine(const run_state *st, int64_t g) {
    return st->sc->shard_n <= 1 || g % st->sc->shard_n == st->sc->shard_i;
}

static void emit_fail(run_state *st, const char *id, const char *err) {
    note("%s", err);
    score_row r = {.id = id, .log_p = NAN, .bpd = NAN, .cx_bpd = NAN, .error = err};
    st->fn(&r, st->ctx);
    st->sc->n_failed++;
    st->prog.done++;
    if (st->sc->flush_file) fflush(st->sc->flush_file);
}

/* One file's pixels or floats, and which of its items to score. */
typedef struct {
    const char *path;
    int is_array;
    int64_t n, c, h, w;
    const float *x;      /* model space [n, c, h, w], or NULL */
    const uint8_t *u8;   /* idx pixels [n, h, w], or NULL */
} source;

static void grow(void **p, int64_t *cap, int64_t want, size_t elem) {
    if (want <= *cap) return;
    void *g = realloc(*p, (size_t)want * elem);
    if (!g) die("out of memory");
    *p = g;
    *cap = want;
}

static void run_batch(run_state *st, const source *src, const int64_t *idx, int k) {
    scorer *sc = st->sc;
    char err[GLOWRT_ERR_LEN];
    const int64_t D = src->c * src->h * src->w, HW = src->h * src->w;
    for (int b = 0; b < k; b++) {
        float *dst = st->xb + b * D;
        if (src->x) {
            memcpy(dst, src->x + idx[b] * D, (size_t)D * sizeof(float));
        } else {
            const uint8_t *u = src->u8 + idx[b] * HW;
            for (int64_t ch = 0; ch < src->c; ch++)
                for (int64_t j = 0; j < HW; j++) dst[ch * HW + j] = io_pixel_to_model(u[j], st->n_bits);
        }
    }
    int bad = glowrt_log_prob(st->s, st->xb, k, st->log_p, err);
    for (int b = 0; b < k; b++) {
        char id[PATH_MAX + 32];
        if (src->is_array) snprintf(id, sizeof id, "%s[%" PRId64 "]", src->path, idx[b]);
        else snprintf(id, sizeof id, "%s", src->path);
        if (bad) {
            char msg[GLOWRT_ERR_LEN + PATH_MAX + 40];
            snprintf(msg, sizeof msg, "%s: %s", id, err);
            emit_fail(st, id, msg);
            continue;
        }
        if (!isfinite(st->log_p[b])) {  /* float32 overflow: no score, not -inf */
            const float *x = st->xb + b * D;
            double m = 0;
            for (int64_t j = 0; j < D; j++)
                if (fabs(x[j]) > m) m = fabs(x[j]);
            char msg[PATH_MAX + 160];
            snprintf(msg, sizeof msg,
                     "%s: log_p overflows float32 (input values up to |x| = %g; images in model space lie in "
                     "[-0.5, 0.5])", id, m);
            emit_fail(st, id, msg);
            continue;
        }
        score_row r = {.id = id, .log_p = st->log_p[b], .cx_bpd = NAN, .error = NULL};
        glowrt_info info;
        glowrt_model_info(sc->m, &info);
        r.bpd = glowrt_bpd(r.log_p, D, info.n_bits);
        if (sc->need_complexity) {
            const float *x = st->xb + b * D;
            for (int64_t ch = 0; ch < src->c; ch++)
                for (int64_t j = 0; j < HW; j++) st->pix[j * src->c + ch] = io_model_to_pixel(x[ch * HW + j], st->n_bits);
            int64_t bytes = png_compressed_bytes(st->pix, (int)src->c, (int)src->h, (int)src->w);
            if (bytes < 0) {
                char msg[PATH_MAX + 80];
                snprintf(msg, sizeof msg, "%s: PNG compression failed (complexity score)", id);
                emit_fail(st, id, msg);
                continue;
            }
            r.cx_bpd = 8.0 * (double)bytes / (double)D;
        }
        st->fn(&r, st->ctx);
        sc->n_ok++;
        st->prog.done++;
    }
    if (sc->flush_file) fflush(sc->flush_file);
    progress_draw(&st->prog, 0);
}

static int kind_of(const char *path) {  /* 2 idx, 1 npy, 0 other */
    return io_is_npy(path) ? 1 : io_is_idx(path) ? 2 : 0;
}

/* Scores one input file (a path from the expanded list). */
static void score_path(run_state *st, const char *path) {
    scorer *sc = st->sc;
    char err[GLOWRT_ERR_LEN + PATH_MAX];
    const int kind = kind_of(path);
    if (kind == 0 && !mine(st, st->g)) { /* one image: no need to read it */
        st->g++;
        return;
    }
    io_images im = {0};
    uint8_t *u8 = NULL;
    source src = {.path = path, .is_array = kind != 0};
    if (kind == 2) {
        if (io_read_idx_u8(path, &u8, &src.n, &src.h, &src.w, err, sizeof err)) goto fail;
        if (st->model_c != 1 && st->model_c != 3) {
            snprintf(err, sizeof err, "%s: idx images are gray; the model takes %d channels", path, st->model_c);
            goto fail;
        }
        src.c = st->model_c;
        src.u8 = u8;
    } else {
        if (io_read_input(path, st->n_bits, st->model_c, &im, err, sizeof err)) goto fail;
        src.n = im.n;
        src.c = im.c;
        src.h = im.h;
        src.w = im.w;
        src.x = im.x;
    }
    char e2[GLOWRT_ERR_LEN];
    if (glowrt_check_size(sc->m, (int)src.h, (int)src.w, e2)) {
        snprintf(err, sizeof err, "%s: %s", path, e2);
        goto fail;
    }
    /* does this shard hold any of its items? */
    int64_t first = -1;
    for (int64_t k = 0; k < src.n; k++)
        if (mine(st, st->g + k)) {
            first = k;
            break;
        }
    if (first >= 0) {
        ensure_session(&st->s, &st->sh, &st->sw, sc->m, &sc->o, (int)src.h, (int)src.w);
        const int64_t D = src.c * src.h * src.w;
        grow((void **)&st->xb, &st->xb_cap, (int64_t)sc->o.batch * D, sizeof(float));
        grow((void **)&st->pix, &st->pix_cap, D, 1);
        int64_t idx[sc->o.batch];
        int k = 0;
        for (int64_t j = first; j < src.n; j++) {
            if (!mine(st, st->g + j)) continue;
            idx[k++] = j;
            if (k == sc->o.batch) {
                run_batch(st, &src, idx, k);
                k = 0;
                if (stop_signal) break;
            }
        }
        if (k && !stop_signal) run_batch(st, &src, idx, k);
    }
    st->g += src.n;
    io_images_free(&im);
    free(u8);
    return;
fail:
    if (mine(st, st->g)) emit_fail(st, path, err);
    st->g++;
    io_images_free(&im);
    free(u8);
}

/* Items in one path, cheaply, for the progress bar's total. */
static int64_t count_items(const char *path) {
    int kind = kind_of(path);
    if (kind == 2) {
        int64_t n, h, w;
        return io_read_idx_header(path, &n, &h, &w, NULL, 0) ? 1 : n;
    }
    if (kind == 1) {
        char e[16];
        FILE *f = io_open_file(path, NULL, e, sizeof e);
        char head[1024] = {0};
        size_t len = f ? fread(head, 1, sizeof head - 1, f) : 0;
        if (f) fclose(f);
        head[len] = 0;
        for (size_t i = 0; i < len; i++)
            if (!head[i]) head[i] = ' ';
        char *p = strstr(head, "'shape': (");
        if (!p) return 1;
        long long v = strtoll(p + 10, NULL, 10);
        return v > 0 ? v : 1;
    }
    return 1;
}

static void for_each_arg_path(run_state *st, char **args, int n_args, int counting, int64_t *count) {
    char err[GLOWRT_ERR_LEN];
    static line_reader stdin_reader;
    for (int a = 0; a < n_args && !stop_signal; a++) {
        const int from_stdin = !strcmp(args[a], "-");
        const char *one = args[a];
        for (;;) {
            if (from_stdin) {
                one = next_line(&stdin_reader);
                if (!one) break;
            }
            char **paths;
            size_t count_p;
            if (io_list_inputs(one, &paths, &count_p, err, sizeof err)) {
                if (counting) (*count)++;
                else {
                    if (mine(st, st->g)) emit_fail(st, one, err);
                    st->g++;
                }
            } else {
                for (size_t i = 0; i < count_p && !stop_signal; i++) {
                    if (counting) *count += count_items(paths[i]);
                    else score_path(st, paths[i]);
                }
                io_free_list(paths, count_p);
            }
            if (!from_stdin || stop_signal) break;
        }
    }
}

int scorer_run(scorer *sc, char **args, int n_args, row_fn fn, void *ctx) {
    glowrt_info info;
    glowrt_model_info(sc->m, &info);
    int stdin_args = 0;
    for (int a = 0; a < n_args; a++) stdin_args += !strcmp(args[a], "-");
    if (stdin_args > 1) die("'-' (paths on stdin) can be given once");
    run_state st = {.sc = sc, .fn = fn, .ctx = ctx, .n_bits = info.n_bits, .model_c = info.in_channels};
    st.log_p = malloc((size_t)sc->o.batch * sizeof(double));
    if (!st.log_p) die("out of memory");
    st.prog.on = sc->progress && isatty(2);
    st.prog.total = -1;
    if (st.prog.on && !stdin_args) {
        int64_t total = 0;
        for_each_arg_path(&st, args, n_args, 1, &total);
        const int64_t n = sc->shard_n > 1 ? sc->shard_n : 1, i = sc->shard_n > 1 ? sc->shard_i : 0;
        st.prog.total = total > i ? (total - i + n - 1) / n : 0;
    }
    st.prog.t0 = now_s();
    g_progress = &st.prog;
    for_each_arg_path(&st, args, n_args, 0, NULL);
    if (st.prog.on) {
        progress_draw(&st.prog, 1);
        fputc('\n', stderr);
        st.prog.drawn = 0;
    }
    g_progress = NULL;
    glowrt_session_free(st.s);
    free(st.log_p);
    free(st.xb);
    free(st.pix);
    return stop_signal;
}
