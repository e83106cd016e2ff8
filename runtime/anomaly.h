/* Out-of-distribution detection with a flow's likelihood: the separation
 * metrics of glowrt eval, the threshold of glowrt calibrate, the lossless
 * complexity term of the "complexity" score (Serra et al. 2020) and the small
 * JSON file calibrate writes. Scores are "higher = more anomalous"; OUT
 * (out-of-distribution) is the positive class. */
#ifndef GLOWRT_ANOMALY_H
#define GLOWRT_ANOMALY_H
#include <stddef.h>
#include <stdint.h>

typedef struct {
    double auroc;   /* P(out > in) + P(out == in) / 2 (Mann-Whitney) */
    double aupr;    /* average precision, OUT positive: sum over distinct
                       thresholds t (descending) of (R(t) - R(t_prev)) * P(t),
                       where a score >= t is called OUT (sklearn's definition) */
    double fpr95;   /* FPR at the highest threshold t whose TPR >= 0.95 */
    double tpr_at;  /* the TPR really reached there (>= 0.95) */
} ood_metrics;

/* n_in, n_out >= 1. Sorts copies; NaN scores are not allowed (returns 1). */
int ood_evaluate(const double *in, int64_t n_in, const double *out, int64_t n_out, ood_metrics *m);

/* The threshold t such that flagging score > t flags at most floor(fpr * n)
 * of these (in-distribution) scores: the (floor(fpr*n)+1)-th largest score.
 * n >= 1, 0 <= fpr < 1. */
double ood_threshold_for_fpr(const double *scores, int64_t n, double fpr);

/* Bytes of the PNG file that libpng writes for this uint8 image (c = 1 gray
 * or 3 RGB, [h, w, c] interleaved) at compression level 9, headers included;
 * -1 on error. */
int64_t png_compressed_bytes(const uint8_t *pix, int c, int h, int w);

/* calibrate's JSON: {"score": "...", "threshold": x, "fpr": x, "n": k,
 * "train_mean_bpd": x, "train_std_bpd": x, "model": "..."} */
typedef struct {
    char score[32];
    double threshold, fpr, train_mean_bpd, train_std_bpd;
    int64_t n;
    int has_threshold;
} ood_stats;
int ood_stats_write(const char *path, const ood_stats *s, const char *model, char *err, size_t errlen);
/* Needs "train_mean_bpd"; "score" and "threshold" are optional. */
int ood_stats_read(const char *path, ood_stats *s, char *err, size_t errlen);
#endif
