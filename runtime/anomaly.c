/* OOD metrics, threshold, PNG complexity and calibrate's JSON (anomaly.h). */
#include "anomaly.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"

typedef struct {
    double s;
    int out;
} labelled;

static int by_score_desc(const void *a, const void *b) {
    double x = ((const labelled *)a)->s, y = ((const labelled *)b)->s;
    return x < y ? 1 : x > y ? -1 : 0;
}

int ood_evaluate(const double *in, int64_t n_in, const double *out, int64_t n_out, ood_metrics *m) {
    if (n_in < 1 || n_out < 1) return 1;
    const int64_t n = n_in + n_out;
    labelled *v = malloc((size_t)n * sizeof *v);
    if (!v) return 1;
    for (int64_t i = 0; i < n_in; i++) v[i] = (labelled){in[i], 0};
    for (int64_t i = 0; i < n_out; i++) v[n_in + i] = (labelled){out[i], 1};
    for (int64_t i = 0; i < n; i++)
        if (isnan(v[i].s)) {
            free(v);
            return 1;
        }
    qsort(v, (size_t)n, sizeof *v, by_score_desc);
    double tp = 0, fp = 0, pairs = 0, ap = 0, prev_recall = 0;
    int have_fpr = 0;
    m->fpr95 = 1.0;
    m->tpr_at = 1.0;
    for (int64_t i = 0; i < n;) {
        int64_t j = i;
        double g_in = 0, g_out = 0;
        for (; j < n && v[j].s == v[i].s; j++) {
            if (v[j].out) g_out++;
            else g_in++;
        }
        pairs += g_in * tp + 0.5 * g_in * g_out;  /* ins here vs outs above, ties count half */
        tp += g_out;
        fp += g_in;
        const double recall = tp / (double)n_out;
        if (g_out > 0) ap += (recall - prev_recall) * (tp / (tp + fp));
        prev_recall = recall;
        if (!have_fpr && recall >= 0.95) {
            have_fpr = 1;
            m->fpr95 = fp / (double)n_in;
            m->tpr_at = recall;
        }
        i = j;
    }
    m->auroc = pairs / ((double)n_in * (double)n_out);
    m->aupr = ap;
    free(v);
    return 0;
}

static int desc_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

double ood_threshold_for_fpr(const double *scores, int64_t n, double fpr) {
    double *v = malloc((size_t)n * sizeof *v);
    if (!v) return NAN;
    memcpy(v, scores, (size_t)n * sizeof *v);
    qsort(v, (size_t)n, sizeof *v, desc_double);
    int64_t k = (int64_t)floor(fpr * (double)n);
    if (k > n - 1) k = n - 1;
    double t = v[k];
    free(v);
    return t;
}

/* ---- PNG size --------------------------------------------------------- */

typedef struct {
    int64_t bytes;
} counter;

static void count_write(png_structp png, png_bytep data, png_size_t len) {
    (void)data;
    ((counter *)png_get_io_ptr(png))->bytes += (int64_t)len;
}
static void count_flush(png_structp png) { (void)png; }

int64_t png_compressed_bytes(const uint8_t *pix, int c, int h, int w) {
    if ((c != 1 && c != 3) || h < 1 || w < 1) return -1;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    if (!png) return -1;
    png_infop info = png_create_info_struct(png);
    counter cnt = {0};
    if (!info || setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, info ? &info : NULL);
        return -1;
    }
    png_set_write_fn(png, &cnt, count_write, count_flush);
    png_set_compression_level(png, 9);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, c == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; y++) png_write_row(png, (png_const_bytep)(pix + (size_t)y * (size_t)w * (size_t)c));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return cnt.bytes;
}

/* ---- calibrate's JSON ------------------------------------------------- */

static void put_json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

int ood_stats_write(const char *path, const ood_stats *s, const char *model, char *err, size_t errlen) {
    io_afile a;
    if (io_afile_open(&a, path, err, errlen)) return -1;
    FILE *f = a.f;
    fputs("{\n  \"score\": ", f);
    put_json_str(f, s->score);
    fprintf(f, ",\n  \"threshold\": %.17g,\n  \"fpr\": %.17g,\n  \"n\": %lld,\n", s->threshold, s->fpr, (long long)s->n);
    fprintf(f, "  \"train_mean_bpd\": %.17g,\n  \"train_std_bpd\": %.17g,\n  \"model\": ", s->train_mean_bpd,
            s->train_std_bpd);
    put_json_str(f, model ? model : "");
    fputs("\n}\n", f);
    return io_afile_commit(&a, path, err, errlen);
}

/* The value after "key": in a flat JSON object, or NULL. */
static const char *find_key(const char *text, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *p = strstr(text, pat);
    if (!p) return NULL;
    p += strlen(pat);
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    if (*p != ':') return NULL;
    p++;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    return p;
}

static int get_number(const char *text, const char *key, double *v) {
    const char *p = find_key(text, key);
    if (!p) return 1;
    char *end;
    errno = 0;
    *v = strtod(p, &end);
    return end == p || errno || !isfinite(*v);
}

int ood_stats_read(const char *path, ood_stats *s, char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    FILE *f = io_open_file(path, NULL, err, errlen);
    if (!f) return -1;
    char buf[65536];
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    int big = !feof(f);
    fclose(f);
    if (big) return io_error(err, errlen, path, "not a glowrt calibrate file (larger than 64 KiB)");
    buf[len] = 0;
    if (!strchr(buf, '{')) return io_error(err, errlen, path, "not a JSON object (expected glowrt calibrate's output)");
    if (get_number(buf, "train_mean_bpd", &s->train_mean_bpd))
        return io_error(err, errlen, path, "no finite \"train_mean_bpd\" (expected glowrt calibrate's output)");
    double v;
    if (!get_number(buf, "train_std_bpd", &v)) s->train_std_bpd = v;
    if (!get_number(buf, "fpr", &v)) s->fpr = v;
    if (!get_number(buf, "n", &v)) s->n = (int64_t)v;
    if (find_key(buf, "threshold")) {
        if (get_number(buf, "threshold", &s->threshold)) return io_error(err, errlen, path, "\"threshold\" is not a finite number");
        s->has_threshold = 1;
    }
    const char *p = find_key(buf, "score");
    if (p) {
        if (*p != '"') return io_error(err, errlen, path, "\"score\" is not a string");
        const char *e = strchr(p + 1, '"');
        if (!e || e - p - 1 >= (long)sizeof s->score) return io_error(err, errlen, path, "bad \"score\" value");
        memcpy(s->score, p + 1, (size_t)(e - p - 1));
        s->score[e - p - 1] = 0;
    }
    return 0;
}
