/* The helpers every glowrt command shares (see cli.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <float.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "cli.h"

const char *prog = "glowrt";

/* "PROG: message" and a newline; a newline or carriage return inside the
 * message (a file name may hold one) becomes a space: one line. */
void vline(const char *fmt, va_list ap) {
    char buf[8192];
    vsnprintf(buf, sizeof buf, fmt, ap);
    for (char *p = buf; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    fprintf(stderr, "%s: %s\n", prog, buf);
}

void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vline(fmt, ap);
    va_end(ap);
    exit(EXIT_USAGE);
}

/* ---- option helpers ---------------------------------------------------- */

long parse_long(const char *opt, const char *s, long lo, long hi) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) die("%s: '%s' is not an integer in [%ld, %ld]", opt, s, lo, hi);
    return v;
}

uint64_t parse_u64(const char *opt, const char *s) {
    char *end;
    errno = 0;
    /* digits only: strtoull would skip blanks and then negate a '-' (" -5" is 2^64 - 5) */
    if (*s < '0' || *s > '9') die("%s: '%s' is not a non-negative integer", opt, s);
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end) die("%s: '%s' is not a non-negative integer", opt, s);
    return (uint64_t)v;
}

double parse_double(const char *opt, const char *s, double lo, double hi) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    /* ERANGE on underflow (1e-320, a denormal, or 1e-400, 0) is a number all the same; on overflow not */
    if (errno == ERANGE && fabs(v) <= DBL_MIN) errno = 0;
    if (errno || end == s || *end || !(v >= lo && v <= hi)) die("%s: '%s' is not a number in [%g, %g]", opt, s, lo, hi);
    return v;
}

/* "S" or "HxW". */
void parse_size(const char *s, int *h, int *w) {
    char *end;
    long a = strtol(s, &end, 10), b = a;
    if (*end == 'x' || *end == 'X') b = strtol(end + 1, &end, 10);
    if (*end || a < 1 || b < 1 || a > 16384 || b > 16384) die("--size: '%s' is not S or HxW", s);
    *h = (int)a;
    *w = (int)b;
}

/* getopt's own messages are off (opterr = 0): this is the one line. */
void bad_option(char **argv) {
    const char *opt = argv[optind - 1];
    if (optopt > 32 && optopt < 127) die("option -%c: unknown or missing its value (see %s --help)", optopt, prog);
    die("unknown option or missing value: '%s' (see %s --help)", opt, prog);
}

/* Options every computing command takes. */
int common_option(int c, const char *arg, common_opts *o) {
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
glowrt_model *load_model(const char *path, int verify) {
    glowrt_model *m;
    char err[GLOWRT_ERR_LEN];
    if (glowrt_model_load(path, &m, err)) die("%s", err);
    if (verify && glowrt_model_verify(m, err)) die("%s", err);
    return m;
}

glowrt_session *make_session(const glowrt_model *m, const common_opts *o, int h, int w) {
    glowrt_session *s;
    char err[GLOWRT_ERR_LEN];
    if (glowrt_session_create(m, o->batch, h, w, o->threads, &s, err)) die("%s", err);
    return s;
}

/* ---- inputs ------------------------------------------------------------ */

/* Calls fn(images, path, is_array) for every input file named by args, in order. */
void for_each_input(char **args, int n_args, int n_bits, int model_c, input_fn fn, void *ctx) {
    char err[GLOWRT_ERR_LEN];
    for (int a = 0; a < n_args; a++) {
        char **paths;
        size_t count;
        if (io_list_inputs(args[a], &paths, &count, err, sizeof err)) die("%s", err);
        for (size_t i = 0; i < count; i++) {
            io_images im;
            if (io_read_input(paths[i], n_bits, model_c, &im, err, sizeof err)) die("%s", err);
            fn(&im, paths[i], io_is_npy(paths[i]), ctx);
            io_images_free(&im);
        }
        io_free_list(paths, count);
    }
}


/* Reuses the session while the image size stays the same. */
void ensure_session(glowrt_session **s, int *sh, int *sw, const glowrt_model *m, const common_opts *o, int h, int w) {
    if (*s && *sh == h && *sw == w) return;
    glowrt_session_free(*s);
    *s = make_session(m, o, h, w);
    *sh = h;
    *sw = w;
}


/* An output file whose directory is missing fails before the work, not after
 * it. Image outputs that are directories (a trailing '/', no .npy/.png/.jpg/
 * .jpeg extension: io_write_images) are created with their parents. */
void check_output(const char *out, int images) {
    size_t n = strlen(out);
    if (!n) die("-o: an empty path");
    if (images) {
        struct stat st;
        int file = 0;
        for (const char *const *e = (const char *const[]){".npy", ".png", ".jpg", ".jpeg", NULL}; *e; e++)
            file |= n >= strlen(*e) && !strcasecmp(out + n - strlen(*e), *e);
        if (!file || out[n - 1] == '/' || (stat(out, &st) == 0 && S_ISDIR(st.st_mode))) return;
    }
    const char *slash = strrchr(out, '/');
    if (!slash || slash == out) return; /* the current directory, or / */
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%.*s", (int)(slash - out), out);
    struct stat st;
    if (stat(dir, &st) != 0) die("%s: cannot write: %s: %s", out, dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) die("%s: cannot write: %s is not a directory", out, dir);
}

void check_output_size(const glowrt_model *m, const char *out, int64_t n, int h, int w) {
    glowrt_info info;
    char err[GLOWRT_ERR_LEN];
    glowrt_model_info(m, &info);
    if (io_check_image_output(out, n, info.in_channels, h, w, info.n_bits, err, sizeof err)) die("%s", err);
}

void write_output(const glowrt_model *m, const char *out, const float *x, int64_t n, int h, int w) {
    glowrt_info info;
    char err[GLOWRT_ERR_LEN];
    glowrt_model_info(m, &info);
    if (io_write_images(out, x, n, info.in_channels, h, w, info.n_bits, err, sizeof err)) die("%s", err);
}

