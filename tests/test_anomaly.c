/* Criterion tests for runtime/idx.c (idx-ubyte reader) and runtime/anomaly.c
 * (OOD metrics, threshold, PNG complexity, calibrate's JSON). */
#define _GNU_SOURCE
#include <criterion/criterion.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "../runtime/anomaly.h"
#include "../runtime/io.h"

static char dir[64];

static void setup(void) {
    strcpy(dir, "/tmp/glowrt_anomaly_XXXXXX");
    cr_assert(mkdtemp(dir));
}
static void teardown(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

/* An idx3 file: header (n, h, w) then `len` pixel bytes (i % 251). */
static size_t idx_bytes(uint8_t *buf, uint32_t magic, uint32_t n, uint32_t h, uint32_t w, size_t len) {
    uint32_t hd[4] = {magic, n, h, w};
    for (int i = 0; i < 4; i++) {
        buf[4 * i] = (uint8_t)(hd[i] >> 24);
        buf[4 * i + 1] = (uint8_t)(hd[i] >> 16);
        buf[4 * i + 2] = (uint8_t)(hd[i] >> 8);
        buf[4 * i + 3] = (uint8_t)hd[i];
    }
    for (size_t i = 0; i < len; i++) buf[16 + i] = (uint8_t)(i % 251);
    return 16 + len;
}

static const char *write_file(const char *name, const uint8_t *b, size_t len, int gz) {
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (gz) {
        gzFile f = gzopen(path, "wb9");
        cr_assert(f);
        cr_assert_eq(gzwrite(f, b, (unsigned)len), (int)len);
        cr_assert_eq(gzclose(f), Z_OK);
    } else {
        FILE *f = fopen(path, "wb");
        cr_assert(f);
        cr_assert_eq(fwrite(b, 1, len, f), len);
        fclose(f);
    }
    return path;
}

static uint8_t buf[1 << 16];

TestSuite(idx, .init = setup, .fini = teardown);

static void check_good(int gz) {
    size_t len = idx_bytes(buf, 0x803, 3, 2, 4, 24);
    const char *p = write_file(gz ? "a.gz" : "a.idx", buf, len, gz);
    cr_assert(io_is_idx(p));
    uint8_t *pix;
    int64_t n, h, w;
    char err[256] = "";
    cr_assert_eq(io_read_idx_u8(p, &pix, &n, &h, &w, err, sizeof err), 0, "%s", err);
    cr_assert(n == 3 && h == 2 && w == 4);
    for (int i = 0; i < 24; i++) cr_assert_eq(pix[i], i % 251);
    free(pix);
    cr_assert_eq(io_read_idx_header(p, &n, &h, &w, err, sizeof err), 0);
    cr_assert(n == 3 && h == 2 && w == 4);
}
Test(idx, raw) { check_good(0); }
Test(idx, gzipped) { check_good(1); }

static void check_bad(const char *what, size_t len, int gz, const char *expect) {
    const char *p = write_file("bad", buf, len, gz);
    uint8_t *pix = (uint8_t *)1;
    int64_t n, h, w;
    char err[256] = "";
    cr_assert_neq(io_read_idx_u8(p, &pix, &n, &h, &w, err, sizeof err), 0, "%s: accepted", what);
    cr_assert_null(pix, "%s", what);
    cr_assert(strstr(err, p) == err, "%s: error does not start with the path: %s", what, err);
    cr_assert(strstr(err, expect), "%s: '%s' does not say '%s'", what, err, expect);
    cr_assert_null(strchr(err, '\n'));
}

Test(idx, truncated_and_bad) {
    for (int gz = 0; gz < 2; gz++) {
        idx_bytes(buf, 0x803, 3, 2, 4, 24);
        check_bad("truncated data", 16 + 23, gz, "truncated");
        check_bad("truncated header", 10, gz, "truncated header");
        check_bad("empty", 0, gz, "magic");
        size_t len = idx_bytes(buf, 0x803, 3, 2, 4, 25);
        check_bad("trailing byte", len, gz, "trailing");
        len = idx_bytes(buf, 0x801, 3, 2, 4, 24); /* labels, not images */
        check_bad("labels magic", len, gz, "magic");
        len = idx_bytes(buf, 0x803, 0, 2, 4, 0);
        check_bad("zero images", len, gz, "is 0");
        len = idx_bytes(buf, 0x803, 3, 0, 4, 0);
        check_bad("zero height", len, gz, "is 0");
        len = idx_bytes(buf, 0x803, 2, 20000, 4, 0);
        check_bad("too tall", len, gz, "larger");
        len = idx_bytes(buf, 0x803, 0xFFFFFFFFu, 16384, 16384, 0);
        check_bad("too many pixels", len, gz, "limit");
        /* a header that claims 1e6 images of 28x28 over a few bytes: an error
         * after reading what is there, not a 784 MB allocation */
        len = idx_bytes(buf, 0x803, 1000000, 28, 28, 100);
        check_bad("forged count", len, gz, "truncated");
    }
    /* a gzip stream whose body is damaged */
    size_t len = idx_bytes(buf, 0x803, 40, 28, 28, 40 * 784);
    const char *p = write_file("c.gz", buf, len, 1);
    FILE *f = fopen(p, "r+b");
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, sz / 2, SEEK_SET);
    fputc(0x55, f);
    fputc(0xAA, f);
    fclose(f);
    uint8_t *pix;
    int64_t n, h, w;
    char err[256] = "";
    cr_assert_neq(io_read_idx_u8(p, &pix, &n, &h, &w, err, sizeof err), 0, "a corrupt gzip stream was accepted");
    cr_assert(strstr(err, p) == err, "%s", err);
    /* not idx */
    const char *q = write_file("x.png", (const uint8_t *)"\x89PNG\r\n\x1a\n", 8, 0);
    cr_assert_eq(io_is_idx(q), 0);
}

/* ---- metrics -------------------------------------------------------------- */

Test(metrics, hand_computed_with_ties) {
    /* in {1,2,2,3}, out {2,3,4} (out positive, higher = more anomalous)
     * AUROC: out=2: 1 win + 2 ties (1) = 2; out=3: 3 wins + 1 tie = 3.5;
     *        out=4: 4 wins -> 9.5 / 12
     * AP: t=4: R 1/3 P 1; t=3: R 2/3 P 2/3; t=2: R 1 P 3/6
     *     = 1/3 + (1/3)(2/3) + (1/3)(1/2) = 13/18
     * FPR95: TPR reaches 1 first at t=2, where 3 of 4 IN are >= 2: 0.75 */
    const double in[] = {2, 1, 3, 2}, out[] = {4, 2, 3};
    ood_metrics m;
    cr_assert_eq(ood_evaluate(in, 4, out, 3, &m), 0);
    cr_assert_float_eq(m.auroc, 9.5 / 12, 1e-12);
    cr_assert_float_eq(m.aupr, 13.0 / 18, 1e-12);
    cr_assert_float_eq(m.fpr95, 0.75, 1e-12);
    cr_assert_float_eq(m.tpr_at, 1.0, 1e-12);
}

Test(metrics, perfect_reversed_and_all_tied) {
    const double lo[] = {0, 1, 2}, hi[] = {5, 6};
    ood_metrics m;
    cr_assert_eq(ood_evaluate(lo, 3, hi, 2, &m), 0);
    cr_assert_float_eq(m.auroc, 1.0, 1e-12);
    cr_assert_float_eq(m.aupr, 1.0, 1e-12);
    cr_assert_float_eq(m.fpr95, 0.0, 1e-12);
    cr_assert_eq(ood_evaluate(hi, 2, lo, 3, &m), 0);
    cr_assert_float_eq(m.auroc, 0.0, 1e-12);
    cr_assert_float_eq(m.fpr95, 1.0, 1e-12);
    const double t[] = {1, 1, 1};
    cr_assert_eq(ood_evaluate(t, 3, t, 2, &m), 0);
    cr_assert_float_eq(m.auroc, 0.5, 1e-12);
    cr_assert_float_eq(m.aupr, 0.4, 1e-12); /* the base rate 2/5 */
    cr_assert_float_eq(m.fpr95, 1.0, 1e-12);
    const double nan[] = {NAN};
    cr_assert_neq(ood_evaluate(nan, 1, t, 1, &m), 0);
}

Test(metrics, fpr95_needs_95_percent) {
    /* 20 OUT at 1..20, 10 IN at 0.5 .. 9.5: TPR >= 0.95 needs 19 of 20 OUT,
     * i.e. t = 2, where IN 2.5 .. 9.5 (8 of 10) are flagged */
    double in[10], out[20];
    for (int i = 0; i < 10; i++) in[i] = i + 0.5;
    for (int i = 0; i < 20; i++) out[i] = i + 1;
    ood_metrics m;
    cr_assert_eq(ood_evaluate(in, 10, out, 20, &m), 0);
    cr_assert_float_eq(m.fpr95, 0.8, 1e-12);
    cr_assert_float_eq(m.tpr_at, 0.95, 1e-12);
}

Test(metrics, threshold_flags_at_most_fpr) {
    const double s[] = {5, 1, 4, 2, 3};
    cr_assert_float_eq(ood_threshold_for_fpr(s, 5, 0.2), 4.0, 0); /* flags 5 only */
    cr_assert_float_eq(ood_threshold_for_fpr(s, 5, 0.0), 5.0, 0); /* flags none */
    cr_assert_float_eq(ood_threshold_for_fpr(s, 5, 0.5), 3.0, 0); /* floor(2.5) = 2 */
    const double t[] = {3, 3, 3, 1};
    double th = ood_threshold_for_fpr(t, 4, 0.25);
    int flagged = 0;
    for (int i = 0; i < 4; i++) flagged += t[i] > th;
    cr_assert_leq(flagged, 1);
    /* random scores, many fprs */
    srand(7);
    double r[1000];
    for (int i = 0; i < 1000; i++) r[i] = rand() % 50; /* many ties */
    for (double f = 0; f < 1; f += 0.037) {
        double tt = ood_threshold_for_fpr(r, 1000, f);
        int k = 0;
        for (int i = 0; i < 1000; i++) k += r[i] > tt;
        cr_assert_leq(k, (int)floor(f * 1000), "fpr %g flags %d", f, k);
    }
}

/* ---- complexity and calibrate's file -------------------------------------- */

Test(anomaly, png_bytes) {
    static uint8_t flat[28 * 28 * 3], noise[28 * 28 * 3];
    memset(flat, 128, sizeof flat);
    srand(1);
    for (size_t i = 0; i < sizeof noise; i++) noise[i] = (uint8_t)rand();
    int64_t a = png_compressed_bytes(flat, 1, 28, 28), b = png_compressed_bytes(noise, 1, 28, 28);
    int64_t c = png_compressed_bytes(noise, 3, 28, 28);
    cr_assert(a > 50 && a < 200, "flat image: %lld bytes", (long long)a);
    cr_assert(b > 784 && c > 3 * 784, "noise: %lld / %lld bytes", (long long)b, (long long)c);
    cr_assert_eq(png_compressed_bytes(flat, 2, 28, 28), -1);
    cr_assert_eq(png_compressed_bytes(flat, 1, 28, 28), a); /* deterministic */
}

TestSuite(stats, .init = setup, .fini = teardown);

Test(stats, round_trip_and_errors) {
    char p[128];
    snprintf(p, sizeof p, "%s/t.json", dir);
    ood_stats s = {.threshold = 3.25, .fpr = 0.01, .n = 1234, .train_mean_bpd = 2.9, .train_std_bpd = 0.125,
                   .has_threshold = 1};
    strcpy(s.score, "typicality");
    char err[256];
    cr_assert_eq(ood_stats_write(p, &s, "m \"x\".glow", err, sizeof err), 0, "%s", err);
    ood_stats r;
    cr_assert_eq(ood_stats_read(p, &r, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(r.score, "typicality");
    cr_assert(r.threshold == 3.25 && r.fpr == 0.01 && r.n == 1234 && r.train_mean_bpd == 2.9 &&
              r.train_std_bpd == 0.125 && r.has_threshold);
    FILE *f = fopen(p, "w");
    fputs("{\"score\": \"bpd\"}\n", f);
    fclose(f);
    cr_assert_neq(ood_stats_read(p, &r, err, sizeof err), 0);
    cr_assert(strstr(err, "train_mean_bpd"), "%s", err);
    snprintf(p, sizeof p, "%s/none.json", dir);
    cr_assert_neq(ood_stats_read(p, &r, err, sizeof err), 0);
}
