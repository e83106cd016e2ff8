/* Scoring many inputs at scale, shared by glowrt score, calibrate and eval:
 * inputs are files, directories, idx-ubyte files and "-" (a list of paths on
 * stdin, read as it comes); --shard i/n keeps items whose index g over the
 * whole ordered input has g % n == i; an input that cannot be read or scored
 * becomes one row with an error (it counts as one item) and one line on
 * stderr; a progress bar is drawn on stderr when it is a terminal; SIGINT and
 * SIGTERM stop the run between batches. */
#ifndef GLOWRT_SCORING_H
#define GLOWRT_SCORING_H
#include <signal.h>

#include "cli.h"

typedef enum { SCORE_NONE = 0, SCORE_BPD, SCORE_TYPICALITY, SCORE_COMPLEXITY } score_kind;
score_kind parse_score_kind(const char *s);   /* dies on anything else */
const char *score_kind_name(score_kind k);

typedef struct {
    const char *id;
    double log_p, bpd;
    double cx_bpd;       /* PNG bits / D when complexity is needed, else NAN */
    const char *error;   /* NULL: scored */
} score_row;

/* bpd, |bpd - train_mean| or bpd - cx_bpd */
double score_value(score_kind k, const score_row *r, double train_mean);

typedef void (*row_fn)(const score_row *r, void *ctx);

typedef struct {
    glowrt_model *m;
    common_opts o;
    int need_complexity;
    int shard_i, shard_n;   /* shard_n 0 or 1: everything */
    int progress;           /* draw a progress bar if stderr is a terminal */
    FILE *flush_file;       /* fflush'ed after each batch and each failed row */
    int64_t n_ok, n_failed; /* rows emitted */
} scorer;

void parse_shard(const char *s, int *i, int *n);
/* SIGINT / SIGTERM set stop_signal (the run stops between batches). */
void install_stop_signals(void);
extern volatile sig_atomic_t stop_signal;

/* Emits one row per item (or per failed file), in input order. Returns 0 when
 * done, or the signal number that stopped it. */
int scorer_run(scorer *sc, char **args, int n_args, row_fn fn, void *ctx);

/* One line on stderr that a progress bar, if drawn, does not garble. */
void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#endif
