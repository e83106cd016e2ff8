/* glowrt input/output: .npy, PNG (libpng), JPEG (TurboJPEG). See io.h. */
#define _POSIX_C_SOURCE 200809L

#include "io.h"
#include "glowrt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <png.h>
#include <turbojpeg.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "glowrt io: little-endian host required"
#endif

/* ------------------------------------------------------------------------ */
/* errors                                                                    */

int io_error(char *err, size_t errlen, const char *path, const char *fmt, ...)
{
    if (err && errlen > 0) {
        int k = snprintf(err, errlen, "%s: ", path ? path : "(null)");
        if (k >= 0 && (size_t)k < errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(err + k, errlen - (size_t)k, fmt, ap);
            va_end(ap);
        }
        for (char *p = err; *p; ++p)   /* exactly one line */
            if (*p == '\n' || *p == '\r')
                *p = ' ';
    }
    return -1;
}

/* printable, bounded copy of an untrusted string for messages */
static void safe_copy(char *dst, size_t dstlen, const char *src, size_t n)
{
    size_t j = 0;
    for (size_t i = 0; i < n && src[i] && j + 1 < dstlen; ++i) {
        unsigned char ch = (unsigned char)src[i];
        dst[j++] = (ch >= 32 && ch < 127) ? (char)ch : '?';
    }
    if (dstlen) dst[j] = 0;
}

static int ends_with_ci(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    if (m > n) return 0;
    s += n - m;
    for (size_t i = 0; i < m; ++i) {
        unsigned char a = (unsigned char)s[i], b = (unsigned char)suffix[i];
        if (a >= 'A' && a <= 'Z') a = (unsigned char)(a - 'A' + 'a');
        if (a != b) return 0;
    }
    return 1;
}

static int is_png_name(const char *s) { return ends_with_ci(s, ".png"); }
static int is_jpg_name(const char *s) { return ends_with_ci(s, ".jpg") || ends_with_ci(s, ".jpeg"); }
static int is_npy_name(const char *s) { return ends_with_ci(s, ".npy"); }

/* a * b with overflow / cap check: returns 0 and sets *r when a*b <= cap */
static int mul_cap(int64_t a, int64_t b, int64_t cap, int64_t *r)
{
    if (a < 0 || b < 0) return -1;
    if (a != 0 && b > cap / a) return -1;
    *r = a * b;
    return *r <= cap ? 0 : -1;
}

/* ------------------------------------------------------------------------ */
/* pixel <-> model space                                                     */

static int valid_bits(int n_bits) { return n_bits >= 1 && n_bits <= 8; }

float io_pixel_to_model(uint8_t u, int n_bits)
{
    if (!valid_bits(n_bits)) n_bits = 8;
    double nb = (double)(1 << n_bits);
    unsigned q = (unsigned)u >> (8 - n_bits);
    return (float)((double)q / nb - 0.5 + 0.5 / nb);   /* exact in float */
}

uint8_t io_model_to_pixel(float x, int n_bits)
{
    if (!valid_bits(n_bits)) n_bits = 8;
    double nb = (double)(1 << n_bits);
    double v = floor(((double)x + 0.5) * nb) * (256.0 / nb);
    if (!(v > 0.0)) return 0;          /* negatives and NaN */
    if (v > 255.0) return 255;
    return (uint8_t)v;
}

uint8_t io_rgb_to_luma(uint8_t r, uint8_t g, uint8_t b)
{
    /* ITU-R BT.601 with libjpeg's 16-bit fixed-point coefficients */
    uint32_t y = 19595u * r + 38470u * g + 7471u * b + 32768u;
    return (uint8_t)(y >> 16);
}

/* src: n images of h x w pixels with cin interleaved channels (1, 3, 4; a
 * 4th channel is alpha and ignored). dst: [n, model_c, h, w]. model_c 1|3. */
static void pixels_to_model(const uint8_t *src, int64_t n, int64_t h, int64_t w,
                            int cin, int model_c, int n_bits, float *dst)
{
    float lut[256];
    for (int u = 0; u < 256; ++u) lut[u] = io_pixel_to_model((uint8_t)u, n_bits);
    int64_t hw = h * w;
    for (int64_t i = 0; i < n; ++i) {
        const uint8_t *s = src + i * hw * cin;
        float *d = dst + i * hw * model_c;
        for (int64_t p = 0; p < hw; ++p) {
            const uint8_t *px = s + p * cin;
            if (model_c == 1) {
                d[p] = lut[cin == 1 ? px[0] : io_rgb_to_luma(px[0], px[1], px[2])];
            } else if (cin == 1) {
                float v = lut[px[0]];
                d[p] = v; d[hw + p] = v; d[2 * hw + p] = v;
            } else {
                d[p] = lut[px[0]]; d[hw + p] = lut[px[1]]; d[2 * hw + p] = lut[px[2]];
            }
        }
    }
}

/* one sample [c, h, w] of model space -> interleaved u8 at dst with row
 * stride `stride` bytes */
static void model_to_pixels(const float *x, int64_t c, int64_t h, int64_t w,
                            int n_bits, uint8_t *dst, int64_t stride)
{
    int64_t hw = h * w;
    for (int64_t y = 0; y < h; ++y)
        for (int64_t xx = 0; xx < w; ++xx)
            for (int64_t ch = 0; ch < c; ++ch)
                dst[y * stride + xx * c + ch] =
                    io_model_to_pixel(x[ch * hw + y * w + xx], n_bits);
}

int glowrt_pixels_to_model(const uint8_t *pixels, int64_t n, int64_t h, int64_t w, int cin, int model_c,
                           int n_bits, float *x, char *err)
{
    if (n < 0 || h < 1 || w < 1 || !(cin == 1 || cin == 3 || cin == 4) || !(model_c == 1 || model_c == 3) ||
        !valid_bits(n_bits)) {
        snprintf(err, GLOWRT_ERR_LEN, "pixels_to_model: n %lld, %lldx%lld, %d channels to %d, n_bits %d: out of range",
                 (long long)n, (long long)h, (long long)w, cin, model_c, n_bits);
        return 1;
    }
    int64_t hw, nhw, n_in, n_out;
    if (mul_cap(h, w, INT64_MAX, &hw) || mul_cap(n, hw, INT64_MAX, &nhw) || mul_cap(nhw, cin, PTRDIFF_MAX, &n_in) ||
        mul_cap(nhw, model_c, PTRDIFF_MAX / (int64_t)sizeof(float), &n_out)) {
        snprintf(err, GLOWRT_ERR_LEN, "pixels_to_model: n %lld x %lldx%lld x %d channels: too large",
                 (long long)n, (long long)h, (long long)w, cin > model_c ? cin : model_c);
        return 1;
    }
    if (nhw > 0 && (!pixels || !x)) {
        snprintf(err, GLOWRT_ERR_LEN, "pixels_to_model: %s is NULL", pixels ? "x" : "pixels");
        return 1;
    }
    pixels_to_model(pixels, n, h, w, cin, model_c, n_bits, x);
    return 0;
}

int glowrt_model_to_pixels(const float *x, int64_t n, int c, int64_t h, int64_t w, int n_bits, uint8_t *pixels,
                           char *err)
{
    if (n < 0 || c < 1 || h < 1 || w < 1 || !valid_bits(n_bits)) {
        snprintf(err, GLOWRT_ERR_LEN, "model_to_pixels: n %lld, %d channels, %lldx%lld, n_bits %d: out of range",
                 (long long)n, c, (long long)h, (long long)w, n_bits);
        return 1;
    }
    int64_t hw, nhw, count;
    if (mul_cap(h, w, INT64_MAX, &hw) || mul_cap(n, hw, INT64_MAX, &nhw) ||
        mul_cap(nhw, c, PTRDIFF_MAX / (int64_t)sizeof(float), &count)) {
        snprintf(err, GLOWRT_ERR_LEN, "model_to_pixels: n %lld x %d channels x %lldx%lld: too large",
                 (long long)n, c, (long long)h, (long long)w);
        return 1;
    }
    if (count > 0 && (!x || !pixels)) {
        snprintf(err, GLOWRT_ERR_LEN, "model_to_pixels: %s is NULL", x ? "pixels" : "x");
        return 1;
    }
    for (int64_t i = 0; i < n; ++i)
        model_to_pixels(x + i * c * h * w, c, h, w, n_bits, pixels + i * h * w * c, w * c);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* files                                                                     */

/* open a regular file for reading; *size = its size */
int io_open_fd(const char *path, int64_t *size, char *err, size_t errlen)
{
    /* O_NONBLOCK: opening a fifo must not wait for a writer (it is refused below) */
    const int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return io_error(err, errlen, path, "cannot open: %s", strerror(errno)), -1;
    struct stat st;
    const char *why = fstat(fd, &st) != 0 ? strerror(errno)
                      : S_ISDIR(st.st_mode) ? "is a directory, not a file"
                      : !S_ISREG(st.st_mode) ? "not a regular file" : NULL;
    if (why) {
        close(fd);
        return io_error(err, errlen, path, "%s", why), -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    if (size) *size = (int64_t)st.st_size;
    return fd;
}

FILE *io_open_file(const char *path, int64_t *size, char *err, size_t errlen)
{
    const int fd = io_open_fd(path, size, err, errlen);
    if (fd < 0) return NULL;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        io_error(err, errlen, path, "cannot open: %s", strerror(errno));
        close(fd);
    }
    return f;
}


static int read_exact(FILE *f, void *buf, size_t n)
{
    return fread(buf, 1, n, f) == n ? 0 : -1;
}

int io_not_regular(const char *path)
{
    struct stat st, lst;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) return 1;
    /* a link (/dev/stdout -> /proc/self/fd/1, which may be a redirected
     * file) is written through, never renamed over */
    return lstat(path, &lst) == 0 && S_ISLNK(lst.st_mode);
}

int io_afile_open(io_afile *a, const char *path, char *err, size_t errlen)
{
    size_t n = strlen(path);
    a->f = NULL;
    a->tmp = NULL;
    if (io_not_regular(path)) {
        if (!(a->f = fopen(path, "wb"))) return io_error(err, errlen, path, "cannot open: %s", strerror(errno));
        return 0;
    }
    a->tmp = malloc(n + 5);
    if (!a->tmp) return io_error(err, errlen, path, "out of memory");
    memcpy(a->tmp, path, n);
    memcpy(a->tmp + n, ".tmp", 5);
    a->f = fopen(a->tmp, "wb");
    if (!a->f) {
        int e = errno;
        io_error(err, errlen, path, "cannot create %s: %s", a->tmp, strerror(e));
        free(a->tmp);
        a->tmp = NULL;
        return -1;
    }
    return 0;
}

void io_afile_abort(io_afile *a)
{
    if (a->f) fclose(a->f);
    if (a->tmp) {
        unlink(a->tmp);
        free(a->tmp);
    }
    a->f = NULL;
    a->tmp = NULL;
}

int io_afile_commit(io_afile *a, const char *path, char *err, size_t errlen)
{
    int bad = fflush(a->f) != 0 || ferror(a->f);
    int e = errno;
    if (!a->tmp) {  /* written directly: nothing to sync or rename */
        if (fclose(a->f) != 0 && !bad) {
            bad = 1;
            e = errno;
        }
        a->f = NULL;
        return bad ? io_error(err, errlen, path, "write failed: %s", strerror(e)) : 0;
    }
    if (!bad && fsync(fileno(a->f)) != 0) { bad = 1; e = errno; }
    if (bad) {
        io_afile_abort(a);
        return io_error(err, errlen, path, "write failed: %s", strerror(e));
    }
    FILE *f = a->f;
    a->f = NULL;
    if (fclose(f) != 0) {
        e = errno;
        io_afile_abort(a);
        return io_error(err, errlen, path, "write failed: %s", strerror(e));
    }
    if (rename(a->tmp, path) != 0) {
        e = errno;
        io_afile_abort(a);
        return io_error(err, errlen, path, "cannot rename temporary file: %s", strerror(e));
    }
    free(a->tmp);
    a->tmp = NULL;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* .npy                                                                      */

enum { NPY_F4 = 1, NPY_U1 = 2, NPY_F8 = 3 };
#define NPY_MAX_PARSE_NDIM 32

typedef struct {
    int dtype;
    int ndim;
    int64_t shape[NPY_MAX_PARSE_NDIM];
    int64_t nelem;
    int64_t data_offset;
    char descr[40];
} npy_info;

typedef struct {
    const char *p, *end;
} cursor;

static void cur_ws(cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t')) c->p++;
}

static int cur_lit(cursor *c, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, lit, n) != 0) return 0;
    c->p += n;
    return 1;
}

/* python string literal without escapes; max out-1 chars */
static int cur_str(cursor *c, char *out, size_t outlen)
{
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return -1;
    char q = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != q) {
        if (*c->p == '\\' || *c->p == '\n' || *c->p == 0) return -1;
        if (n + 1 >= outlen) return -1;
        out[n++] = *c->p++;
    }
    if (c->p >= c->end) return -1;
    c->p++;
    out[n] = 0;
    return 0;
}

/* returns 0 ok, -1 syntax, -2 too large */
static int cur_int(cursor *c, int64_t *v)
{
    if (c->p >= c->end || *c->p < '0' || *c->p > '9') return -1;
    int64_t r = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        int d = *c->p++ - '0';
        if (r > (INT64_MAX - d) / 10) return -2;
        r = r * 10 + d;
    }
    *v = r;
    return 0;
}

static int npy_parse_dict(const char *path, const char *h, size_t len, npy_info *info,
                          char *err, size_t errlen)
{
    cursor c = {h, h + len};
    int have_descr = 0, have_fo = 0, have_shape = 0;
    cur_ws(&c);
    if (!cur_lit(&c, "{")) return io_error(err, errlen, path, "malformed .npy header: expected '{'");
    for (;;) {
        cur_ws(&c);
        if (cur_lit(&c, "}")) break;
        char key[32];
        if (cur_str(&c, key, sizeof key) != 0)
            return io_error(err, errlen, path, "malformed .npy header: expected a quoted key");
        cur_ws(&c);
        if (!cur_lit(&c, ":")) return io_error(err, errlen, path, "malformed .npy header: expected ':'");
        cur_ws(&c);
        if (strcmp(key, "descr") == 0) {
            if (have_descr++) return io_error(err, errlen, path, "malformed .npy header: duplicate 'descr'");
            if (c.p < c.end && *c.p == '[')
                return io_error(err, errlen, path, "structured dtype not supported (need <f4 or |u1)");
            if (cur_str(&c, info->descr, sizeof info->descr) != 0)
                return io_error(err, errlen, path, "malformed .npy header: bad 'descr' value");
        } else if (strcmp(key, "fortran_order") == 0) {
            if (have_fo++) return io_error(err, errlen, path, "malformed .npy header: duplicate 'fortran_order'");
            if (cur_lit(&c, "False")) {
            } else if (cur_lit(&c, "True")) {
                return io_error(err, errlen, path, "fortran_order=True not supported (need C order)");
            } else {
                return io_error(err, errlen, path, "malformed .npy header: bad 'fortran_order' value");
            }
        } else if (strcmp(key, "shape") == 0) {
            if (have_shape++) return io_error(err, errlen, path, "malformed .npy header: duplicate 'shape'");
            if (!cur_lit(&c, "(")) return io_error(err, errlen, path, "malformed .npy header: 'shape' is not a tuple");
            int nd = 0, trailing_comma = 0;
            for (;;) {
                cur_ws(&c);
                if (cur_lit(&c, ")")) break;
                if (nd > 0 && !trailing_comma)
                    return io_error(err, errlen, path, "malformed .npy header: bad 'shape' tuple");
                if (c.p < c.end && *c.p == '-')
                    return io_error(err, errlen, path, "negative dimension in 'shape'");
                if (nd >= NPY_MAX_PARSE_NDIM)
                    return io_error(err, errlen, path, "too many dimensions in 'shape' (max %d)", NPY_MAX_PARSE_NDIM);
                int r = cur_int(&c, &info->shape[nd]);
                if (r == -2) return io_error(err, errlen, path, "dimension too large in 'shape'");
                if (r != 0) return io_error(err, errlen, path, "malformed .npy header: bad 'shape' tuple");
                nd++;
                cur_ws(&c);
                trailing_comma = cur_lit(&c, ",");
            }
            if (nd == 1 && !trailing_comma)
                return io_error(err, errlen, path, "malformed .npy header: 'shape' is not a tuple");
            info->ndim = nd;
        } else {
            char k[32];
            safe_copy(k, sizeof k, key, strlen(key));
            return io_error(err, errlen, path, "malformed .npy header: unexpected key '%s'", k);
        }
        cur_ws(&c);
        if (cur_lit(&c, ",")) continue;
        cur_ws(&c);
        if (cur_lit(&c, "}")) break;
        return io_error(err, errlen, path, "malformed .npy header: expected ',' or '}'");
    }
    cur_ws(&c);
    if (c.p != c.end) return io_error(err, errlen, path, "malformed .npy header: junk after the dict");
    if (!have_descr || !have_fo || !have_shape)
        return io_error(err, errlen, path, "malformed .npy header: missing %s",
                      !have_descr ? "'descr'" : !have_fo ? "'fortran_order'" : "'shape'");
    return 0;
}

static void shape_str(const int64_t *shape, int ndim, char *buf, size_t len)
{
    size_t k = 0;
    k += (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && k < len; ++i)
        k += (size_t)snprintf(buf + k, len - k, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (k < len) snprintf(buf + k, len - k, "]");
}

/* read and validate the header; leaves f at the data. need: dtype mask */
static int npy_open(const char *path, FILE *f, int64_t fsize, npy_info *info, int allow_u1,
                    char *err, size_t errlen)
{
    unsigned char pre[12];
    memset(info, 0, sizeof *info);
    if (fsize < 10) {
        if (fsize < 6 || read_exact(f, pre, 6) != 0 || memcmp(pre, "\x93NUMPY", 6) != 0)
            return io_error(err, errlen, path, "not a .npy file (bad magic)");
        return io_error(err, errlen, path, "truncated .npy header (%lld bytes)", (long long)fsize);
    }
    if (read_exact(f, pre, 10) != 0) return io_error(err, errlen, path, "read error");
    if (memcmp(pre, "\x93NUMPY", 6) != 0) return io_error(err, errlen, path, "not a .npy file (bad magic)");
    int major = pre[6], minor = pre[7];
    if (!(major >= 1 && major <= 3 && minor == 0))
        return io_error(err, errlen, path, "unsupported .npy version %d.%d (need 1.0, 2.0 or 3.0)", major, minor);
    int64_t hlen, preamble;
    if (major == 1) {
        hlen = pre[8] | (pre[9] << 8);
        preamble = 10;
    } else {
        if (fsize < 12 || read_exact(f, pre + 10, 2) != 0)
            return io_error(err, errlen, path, "truncated .npy header");
        hlen = (int64_t)pre[8] | ((int64_t)pre[9] << 8) | ((int64_t)pre[10] << 16) | ((int64_t)pre[11] << 24);
        preamble = 12;
    }
    if (hlen > IO_MAX_NPY_HEADER)
        return io_error(err, errlen, path, ".npy header length %lld too large (max %d)", (long long)hlen, IO_MAX_NPY_HEADER);
    if (hlen > fsize - preamble)
        return io_error(err, errlen, path, "truncated .npy header (header length %lld, file %lld bytes)",
                      (long long)hlen, (long long)fsize);
    if (hlen == 0) return io_error(err, errlen, path, "empty .npy header");
    char *h = malloc((size_t)hlen + 1);
    if (!h) return io_error(err, errlen, path, "out of memory");
    if (read_exact(f, h, (size_t)hlen) != 0) {
        free(h);
        return io_error(err, errlen, path, "read error in .npy header");
    }
    h[hlen] = 0;
    if (h[hlen - 1] != '\n') {
        free(h);
        return io_error(err, errlen, path, "malformed .npy header: not terminated by a newline");
    }
    int rc = npy_parse_dict(path, h, (size_t)hlen - 1, info, err, errlen);
    free(h);
    if (rc) return rc;

    char d[40];
    safe_copy(d, sizeof d, info->descr, sizeof info->descr);
    if (strcmp(info->descr, "<f4") == 0) {
        info->dtype = NPY_F4;
    } else if (strcmp(info->descr, "<f8") == 0) {
        info->dtype = NPY_F8;
    } else if (allow_u1 && (strcmp(info->descr, "|u1") == 0 || strcmp(info->descr, "<u1") == 0 ||
                            strcmp(info->descr, ">u1") == 0)) {
        info->dtype = NPY_U1;
    } else {
        return io_error(err, errlen, path, "dtype %s not supported (need %s)", d,
                      allow_u1 ? "<f4, <f8 or |u1" : "<f4 or <f8");
    }
    int64_t ne = 1;
    for (int i = 0; i < info->ndim; ++i) {
        if (mul_cap(ne, info->shape[i], IO_MAX_ELEMS, &ne) != 0) {
            char s[200];
            shape_str(info->shape, info->ndim, s, sizeof s);
            return io_error(err, errlen, path, "array of shape %s too large (max %lld elements)", s,
                          (long long)IO_MAX_ELEMS);
        }
    }
    info->nelem = ne;
    info->data_offset = preamble + hlen;
    int64_t need = ne * (info->dtype == NPY_F4 ? 4 : info->dtype == NPY_F8 ? 8 : 1);
    int64_t have = fsize - info->data_offset;
    if (have < need)
        return io_error(err, errlen, path, "truncated .npy data: header needs %lld bytes, file has %lld",
                      (long long)need, (long long)have);
    if (have > need)
        return io_error(err, errlen, path, "%lld unexpected trailing bytes after the .npy data",
                      (long long)(have - need));
    return 0;
}

static int check_finite(const char *path, const float *x, int64_t n, char *err, size_t errlen)
{
    for (int64_t i = 0; i < n; ++i)
        if (!isfinite(x[i]))
            return io_error(err, errlen, path, "non-finite value at flat index %lld", (long long)i);
    return 0;
}

/* The data of a float32 or float64 .npy into x (float32), every value
 * finite; float64 ones must fit float32's range. */
static int read_float_data(const char *path, FILE *f, const npy_info *info, float *x, char *err, size_t errlen)
{
    if (info->dtype == NPY_F4) {
        if (read_exact(f, x, (size_t)info->nelem * sizeof(float)) != 0)
            return io_error(err, errlen, path, "read error in .npy data");
        return check_finite(path, x, info->nelem, err, errlen);
    }
    double buf[4096];
    for (int64_t i0 = 0; i0 < info->nelem; i0 += 4096) {
        const int64_t k = info->nelem - i0 < 4096 ? info->nelem - i0 : 4096;
        if (read_exact(f, buf, (size_t)k * sizeof(double)) != 0)
            return io_error(err, errlen, path, "read error in .npy data");
        for (int64_t i = 0; i < k; ++i) {
            if (!isfinite(buf[i]))
                return io_error(err, errlen, path, "non-finite value at flat index %lld", (long long)(i0 + i));
            if (fabs(buf[i]) > FLT_MAX)
                return io_error(err, errlen, path, "value %g at flat index %lld is beyond float32's range",
                                buf[i], (long long)(i0 + i));
            x[i0 + i] = (float)buf[i];
        }
    }
    return 0;
}

int io_read_npy_f32(const char *path, float **data, int *ndim, int64_t shape[4], char *err, size_t errlen)
{
    if (!path || !data || !ndim || !shape) return io_error(err, errlen, path, "invalid argument");
    *data = NULL;
    *ndim = 0;
    int64_t fsize;
    FILE *f = io_open_file(path, &fsize, err, errlen);
    if (!f) return -1;
    npy_info info;
    if (npy_open(path, f, fsize, &info, 0, err, errlen) != 0) {
        fclose(f);
        return -1;
    }
    if (info.ndim < 1 || info.ndim > 4) {
        fclose(f);
        return io_error(err, errlen, path, "expected 1 to 4 dimensions, got %d", info.ndim);
    }
    if (info.nelem == 0) {
        fclose(f);
        return io_error(err, errlen, path, "empty array");
    }
    float *x = malloc((size_t)info.nelem * sizeof(float));
    if (!x) {
        fclose(f);
        return io_error(err, errlen, path, "out of memory");
    }
    const int rc = read_float_data(path, f, &info, x, err, errlen);
    fclose(f);
    if (rc != 0) {
        free(x);
        return -1;
    }
    for (int i = 0; i < 4; ++i) shape[i] = i < info.ndim ? info.shape[i] : 1;
    *ndim = info.ndim;
    *data = x;
    return 0;
}

int io_write_npy_f32(const char *path, const float *data, int ndim, const int64_t *shape, char *err,
                     size_t errlen)
{
    if (!path) return io_error(err, errlen, path, "invalid argument");
    if (ndim < 0 || ndim > IO_MAX_NDIM || (ndim > 0 && !shape))
        return io_error(err, errlen, path, "invalid ndim %d (max %d)", ndim, IO_MAX_NDIM);
    int64_t ne = 1;
    for (int i = 0; i < ndim; ++i)
        if (mul_cap(ne, shape[i], IO_MAX_ELEMS, &ne) != 0)
            return io_error(err, errlen, path, "invalid or too large shape (max %lld elements)",
                          (long long)IO_MAX_ELEMS);
    if (ne > 0 && !data) return io_error(err, errlen, path, "invalid argument (no data)");

    char hdr[512];
    int k = snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for (int i = 0; i < ndim; ++i)
        k += snprintf(hdr + k, sizeof hdr - (size_t)k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    k += snprintf(hdr + k, sizeof hdr - (size_t)k, "%s), }", ndim == 1 ? "," : "");
    int total = 10 + k + 1;
    int padded = (total + 63) / 64 * 64;
    memset(hdr + k, ' ', (size_t)(padded - total));
    k += padded - total;
    hdr[k++] = '\n';
    int hlen = k;

    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hlen & 0xff),
                             (unsigned char)(hlen >> 8)};
    io_afile a;
    if (io_afile_open(&a, path, err, errlen) != 0) return -1;
    if (fwrite(pre, 1, 10, a.f) != 10 || fwrite(hdr, 1, (size_t)hlen, a.f) != (size_t)hlen ||
        (ne > 0 && fwrite(data, sizeof(float), (size_t)ne, a.f) != (size_t)ne)) {
        int e = errno;
        io_afile_abort(&a);
        return io_error(err, errlen, path, "write failed: %s", strerror(e));
    }
    return io_afile_commit(&a, path, err, errlen);
}

/* ------------------------------------------------------------------------ */
/* PNG                                                                       */

typedef struct {
    uint8_t *pix;   /* interleaved, c channels */
    int64_t w, h;
    int c;          /* 1 or 3 */
} raw_image;

typedef struct {
    char msg[256];
    const uint8_t *buf;
    size_t size, pos;
} png_ctx;

static void png_err_fn(png_structp png, png_const_charp msg)
{
    png_ctx *cx = png_get_error_ptr(png);
    if (cx) safe_copy(cx->msg, sizeof cx->msg, msg ? msg : "unknown error", 255);
    png_longjmp(png, 1);
}

static void png_warn_fn(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;   /* warnings (ancillary chunk trouble) are not fatal; stay quiet */
}

static void png_mem_read(png_structp png, png_bytep out, size_t len)
{
    png_ctx *cx = png_get_io_ptr(png);
    if (len > cx->size - cx->pos) png_error(png, "truncated file (unexpected end of data)");
    memcpy(out, cx->buf + cx->pos, len);
    cx->pos += len;
}

typedef struct {
    png_ctx cx;
    png_structp png;
    png_infop info;
    uint8_t *pix;
    png_bytep *rows;
    int64_t w, h;
    int c;
    int too_big;
} png_rjob;

/* setjmp lives here; everything that must survive a longjmp is in *j,
 * which is not an automatic object of this function. */
static int png_decode_inner(png_rjob *j)
{
    if (setjmp(png_jmpbuf(j->png))) return -1;
    png_set_read_fn(j->png, &j->cx, png_mem_read);
    png_set_user_limits(j->png, 1000000, 1000000);
    png_set_chunk_malloc_max(j->png, 8u << 20);
    png_read_info(j->png, j->info);
    png_uint_32 w, h;
    int bd, ct, il, cm, fm;
    png_get_IHDR(j->png, j->info, &w, &h, &bd, &ct, &il, &cm, &fm);
    if (w == 0 || h == 0 || w > IO_MAX_DIM || h > IO_MAX_DIM) {
        j->w = w;
        j->h = h;
        j->too_big = 1;
        return -1;
    }
    /* a deflate stream expands at most ~1032:1; refuse dimensions that the
     * file cannot possibly hold before allocating for them */
    uint64_t raw_bytes = (uint64_t)w * h * (uint64_t)bd * png_get_channels(j->png, j->info) / 8;
    if (raw_bytes > (uint64_t)j->cx.size * 1040u + 4096u)
        png_error(j->png, "truncated or corrupt: file too small for the image size in IHDR");

    if (ct == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(j->png);
    if (ct == PNG_COLOR_TYPE_GRAY && bd < 8) png_set_expand_gray_1_2_4_to_8(j->png);
    if (bd == 16) png_set_scale_16(j->png);
    /* alpha is dropped, and so is the alpha channel that expanding a palette
     * with a tRNS chunk adds */
    if ((ct & PNG_COLOR_MASK_ALPHA) || png_get_valid(j->png, j->info, PNG_INFO_tRNS)) png_set_strip_alpha(j->png);
    if (il != PNG_INTERLACE_NONE) png_set_interlace_handling(j->png);
    png_read_update_info(j->png, j->info);
    int c = png_get_channels(j->png, j->info);
    size_t rowbytes = png_get_rowbytes(j->png, j->info);
    if ((c != 1 && c != 3) || png_get_bit_depth(j->png, j->info) != 8 || rowbytes != (size_t)w * c)
        png_error(j->png, "unsupported pixel layout after conversion");
    j->w = w;
    j->h = h;
    j->c = c;
    j->pix = malloc((size_t)w * h * c);
    j->rows = malloc(sizeof(png_bytep) * h);
    if (!j->pix || !j->rows) png_error(j->png, "out of memory");
    for (png_uint_32 y = 0; y < h; ++y) j->rows[y] = j->pix + (size_t)y * rowbytes;
    png_read_image(j->png, j->rows);
    png_read_end(j->png, NULL);
    return 0;
}

static int png_decode(const char *path, const uint8_t *buf, size_t size, raw_image *out, char *err,
                      size_t errlen)
{
    png_rjob j;
    memset(&j, 0, sizeof j);
    j.cx.buf = buf;
    j.cx.size = size;
    j.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &j.cx, png_err_fn, png_warn_fn);
    if (!j.png) return io_error(err, errlen, path, "cannot initialise libpng");
    j.info = png_create_info_struct(j.png);
    if (!j.info) {
        png_destroy_read_struct(&j.png, NULL, NULL);
        return io_error(err, errlen, path, "cannot initialise libpng");
    }
    int rc = png_decode_inner(&j);
    png_destroy_read_struct(&j.png, &j.info, NULL);
    free(j.rows);
    if (rc != 0) {
        free(j.pix);
        if (j.too_big)
            return io_error(err, errlen, path, "image size %lldx%lld not supported (max %dx%d)",
                          (long long)j.w, (long long)j.h, IO_MAX_DIM, IO_MAX_DIM);
        return io_error(err, errlen, path, "corrupt PNG: %s", j.cx.msg[0] ? j.cx.msg : "unknown error");
    }
    out->pix = j.pix;
    out->w = j.w;
    out->h = j.h;
    out->c = j.c;
    return 0;
}

typedef struct {
    char msg[256];
    png_structp png;
    png_infop info;
    FILE *f;
    const uint8_t *pix;
    int64_t w, h;
    int c;
} png_wjob;

static int png_encode_inner(png_wjob *j)
{
    if (setjmp(png_jmpbuf(j->png))) return -1;
    png_init_io(j->png, j->f);
    png_set_IHDR(j->png, j->info, (png_uint_32)j->w, (png_uint_32)j->h, 8,
                 j->c == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(j->png, j->info);
    for (int64_t y = 0; y < j->h; ++y) png_write_row(j->png, j->pix + y * j->w * j->c);
    png_write_end(j->png, NULL);
    return 0;
}

static int png_write_file(const char *path, const uint8_t *pix, int64_t w, int64_t h, int c, char *err,
                          size_t errlen)
{
    io_afile a;
    if (io_afile_open(&a, path, err, errlen) != 0) return -1;
    png_wjob j;
    memset(&j, 0, sizeof j);
    j.f = a.f;
    j.pix = pix;
    j.w = w;
    j.h = h;
    j.c = c;
    png_ctx cx;
    memset(&cx, 0, sizeof cx);
    j.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &cx, png_err_fn, png_warn_fn);
    if (j.png) j.info = png_create_info_struct(j.png);
    if (!j.png || !j.info) {
        png_destroy_write_struct(&j.png, &j.info);
        io_afile_abort(&a);
        return io_error(err, errlen, path, "cannot initialise libpng");
    }
    int rc = png_encode_inner(&j);
    png_destroy_write_struct(&j.png, &j.info);
    if (rc != 0) {
        io_afile_abort(&a);
        return io_error(err, errlen, path, "PNG write failed: %s", cx.msg[0] ? cx.msg : "unknown error");
    }
    return io_afile_commit(&a, path, err, errlen);
}

/* ------------------------------------------------------------------------ */
/* JPEG (TurboJPEG 2.1 API)                                                  */

static void tj_msg(tjhandle tj, char *buf, size_t len)
{
    const char *m = tjGetErrorStr2(tj);
    safe_copy(buf, len, m ? m : "unknown error", 255);
}

/* "unsupported" when TurboJPEG's message says the file uses a feature this
 * build cannot decode (12-bit samples, lossless or hierarchical processes,
 * arithmetic coding where it is compiled out, unusual sampling factors),
 * "corrupt" otherwise. "Unsupported marker type" stays "corrupt": it is what
 * garbage where a marker should be reads as. */
static const char *jpeg_failure_kind(const char *m)
{
    static const char *const unsupported[] = {"Unsupported JPEG", "Unsupported color conversion", "not implemented",
                                              "not supported", "omitted at compile time",
                                              "Could not determine subsampling"};
    for (size_t i = 0; i < sizeof unsupported / sizeof *unsupported; ++i)
        if (strstr(m, unsupported[i])) return "unsupported";
    return "corrupt";
}

static int jpeg_decode(const char *path, const uint8_t *buf, size_t size, raw_image *out, char *err,
                       size_t errlen)
{
    char m[256];
    tjhandle tj = tjInitDecompress();
    if (!tj) {
        tj_msg(NULL, m, sizeof m);
        return io_error(err, errlen, path, "cannot initialise TurboJPEG: %s", m);
    }
    int w = 0, h = 0, ss = 0, cs = 0;
    if (tjDecompressHeader3(tj, buf, (unsigned long)size, &w, &h, &ss, &cs) != 0) {
        tj_msg(tj, m, sizeof m);
        tjDestroy(tj);
        return io_error(err, errlen, path, "%s JPEG: %s", jpeg_failure_kind(m), m);
    }
    if (w <= 0 || h <= 0) {   /* 2.1 may "succeed" on a header cut short */
        tjDestroy(tj);
        return io_error(err, errlen, path, "corrupt or truncated JPEG: no frame header (SOF) found");
    }
    if (w > IO_MAX_DIM || h > IO_MAX_DIM) {
        tjDestroy(tj);
        return io_error(err, errlen, path, "image size %dx%d not supported (max %dx%d)", w, h, IO_MAX_DIM,
                      IO_MAX_DIM);
    }
    if (cs == TJCS_CMYK || cs == TJCS_YCCK) {
        tjDestroy(tj);
        return io_error(err, errlen, path, "CMYK/YCCK JPEG not supported");
    }
    int c = cs == TJCS_GRAY ? 1 : 3;
    uint8_t *pix = malloc((size_t)w * h * c);
    if (!pix) {
        tjDestroy(tj);
        return io_error(err, errlen, path, "out of memory");
    }
    /* STOPONWARNING: a premature end of data or corrupt entropy data is a
     * libjpeg *warning*; we want it to be an error, never a gray-filled image */
    if (tjDecompress2(tj, buf, (unsigned long)size, pix, w, 0, h, c == 1 ? TJPF_GRAY : TJPF_RGB,
                      TJFLAG_ACCURATEDCT | TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS) != 0) {
        int code = tjGetErrorCode(tj);
        tj_msg(tj, m, sizeof m);
        free(pix);
        tjDestroy(tj);
        return io_error(err, errlen, path, "%s JPEG: %s",
                      code == TJERR_WARNING ? "corrupt or truncated" : jpeg_failure_kind(m), m);
    }
    tjDestroy(tj);
    out->pix = pix;
    out->w = w;
    out->h = h;
    out->c = c;
    return 0;
}

static int jpeg_write_file(const char *path, const uint8_t *pix, int64_t w, int64_t h, int c, char *err,
                           size_t errlen)
{
    char m[256];
    tjhandle tj = tjInitCompress();
    if (!tj) {
        tj_msg(NULL, m, sizeof m);
        return io_error(err, errlen, path, "cannot initialise TurboJPEG: %s", m);
    }
    unsigned char *jbuf = NULL;
    unsigned long jsize = 0;
    if (tjCompress2(tj, pix, (int)w, 0, (int)h, c == 1 ? TJPF_GRAY : TJPF_RGB, &jbuf, &jsize,
                    c == 1 ? TJSAMP_GRAY : TJSAMP_444, 95, TJFLAG_ACCURATEDCT) != 0) {
        tj_msg(tj, m, sizeof m);
        tjFree(jbuf);
        tjDestroy(tj);
        return io_error(err, errlen, path, "JPEG encoding failed: %s", m);
    }
    tjDestroy(tj);
    io_afile a;
    if (io_afile_open(&a, path, err, errlen) != 0) {
        tjFree(jbuf);
        return -1;
    }
    if (fwrite(jbuf, 1, jsize, a.f) != jsize) {
        int e = errno;
        tjFree(jbuf);
        io_afile_abort(&a);
        return io_error(err, errlen, path, "write failed: %s", strerror(e));
    }
    tjFree(jbuf);
    return io_afile_commit(&a, path, err, errlen);
}

/* ------------------------------------------------------------------------ */
/* io_read_input                                                             */

static const unsigned char PNG_SIG[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
static const unsigned char JPG_SIG[3] = {0xff, 0xd8, 0xff};
static const unsigned char NPY_SIG[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

int io_is_npy(const char *path)
{
    char e[16];
    FILE *f = io_open_file(path, NULL, e, sizeof e);  /* never waits on a fifo */
    unsigned char m[6];
    const int yes = f && fread(m, 1, 6, f) == 6 && !memcmp(m, NPY_SIG, 6);
    if (f) fclose(f);
    return yes;
}

/* 1 = full match, 2 = file shorter than the signature but a prefix of it */
static int sig_match(const unsigned char *head, int64_t have, const unsigned char *sig, size_t n)
{
    size_t k = have < (int64_t)n ? (size_t)have : n;
    if (memcmp(head, sig, k) != 0) return 0;
    return k == n ? 1 : 2;
}

static int check_model_c(const char *path, int model_c, char *err, size_t errlen)
{
    if (model_c != 1 && model_c != 3)
        return io_error(err, errlen, path, "model expects %d channels; pixel inputs can feed only 1 or 3",
                      model_c);
    return 0;
}

static int read_npy_input(const char *path, FILE *f, int64_t fsize, int n_bits, int model_c,
                          io_images *out, char *err, size_t errlen)
{
    npy_info info;
    if (npy_open(path, f, fsize, &info, 1, err, errlen) != 0) return -1;
    char s[200];
    shape_str(info.shape, info.ndim, s, sizeof s);
    if (info.dtype == NPY_F4 || info.dtype == NPY_F8) {
        if (info.ndim != 4)
            return io_error(err, errlen, path, "float input must have shape [N,C,H,W], got %s", s);
        if (info.nelem == 0) return io_error(err, errlen, path, "empty array of shape %s", s);
        if (info.shape[1] != model_c)
            return io_error(err, errlen, path, "float input has %lld channels, model expects %d",
                          (long long)info.shape[1], model_c);
        float *x = malloc((size_t)info.nelem * sizeof(float));
        if (!x) return io_error(err, errlen, path, "out of memory");
        if (read_float_data(path, f, &info, x, err, errlen) != 0) {
            free(x);
            return -1;
        }
        out->x = x;
        out->n = info.shape[0];
        out->c = info.shape[1];
        out->h = info.shape[2];
        out->w = info.shape[3];
        return 0;
    }
    /* uint8 pixels */
    int cin;
    if (info.ndim == 3) {
        cin = 1;
    } else if (info.ndim == 4 && (info.shape[3] == 1 || info.shape[3] == 3 || info.shape[3] == 4)) {
        cin = (int)info.shape[3];
    } else {
        return io_error(err, errlen, path, "uint8 input must have shape [N,H,W] or [N,H,W,C] with C in {1,3,4}, got %s", s);
    }
    if (info.nelem == 0) return io_error(err, errlen, path, "empty array of shape %s", s);
    if (check_model_c(path, model_c, err, errlen) != 0) return -1;
    int64_t n = info.shape[0], h = info.shape[1], w = info.shape[2], outn;
    if (mul_cap(info.nelem / cin, model_c, IO_MAX_ELEMS, &outn) != 0)
        return io_error(err, errlen, path, "array of shape %s too large after conversion", s);
    uint8_t *pix = malloc((size_t)info.nelem);
    float *x = malloc((size_t)outn * sizeof(float));
    if (!pix || !x) {
        free(pix);
        free(x);
        return io_error(err, errlen, path, "out of memory");
    }
    if (read_exact(f, pix, (size_t)info.nelem) != 0) {
        free(pix);
        free(x);
        return io_error(err, errlen, path, "read error in .npy data");
    }
    pixels_to_model(pix, n, h, w, cin, model_c, n_bits, x);
    free(pix);
    out->x = x;
    out->n = n;
    out->c = model_c;
    out->h = h;
    out->w = w;
    return 0;
}

/* an idx3-ubyte file (raw or gzipped): gray pixels [N,H,W] -> model space */
static int read_idx_input(const char *path, int n_bits, int model_c, io_images *out, char *err, size_t errlen)
{
    if (check_model_c(path, model_c, err, errlen) != 0) return -1;
    uint8_t *pix;
    int64_t n, h, w, outn;
    if (io_read_idx_u8(path, &pix, &n, &h, &w, err, errlen) != 0) return -1;
    if (mul_cap(n * h * w, model_c, IO_MAX_ELEMS, &outn) != 0) {
        free(pix);
        return io_error(err, errlen, path, "idx: %lld images of %lld x %lld too large after conversion",
                        (long long)n, (long long)h, (long long)w);
    }
    float *x = malloc((size_t)outn * sizeof(float));
    if (!x) {
        free(pix);
        return io_error(err, errlen, path, "out of memory");
    }
    pixels_to_model(pix, n, h, w, 1, model_c, n_bits, x);
    free(pix);
    out->x = x;
    out->n = n;
    out->c = model_c;
    out->h = h;
    out->w = w;
    return 0;
}

int io_read_input(const char *path, int n_bits, int model_c, io_images *out, char *err, size_t errlen)
{
    if (!out) return io_error(err, errlen, path, "invalid argument");
    memset(out, 0, sizeof *out);
    if (!path) return io_error(err, errlen, path, "invalid argument");
    if (!valid_bits(n_bits)) return io_error(err, errlen, path, "n_bits %d out of range 1..8", n_bits);
    if (model_c < 1) return io_error(err, errlen, path, "invalid model channel count %d", model_c);

    int64_t fsize;
    FILE *f = io_open_file(path, &fsize, err, errlen);
    if (!f) return -1;
    if (fsize == 0) {
        fclose(f);
        return io_error(err, errlen, path, "empty file (0 bytes)");
    }
    unsigned char head[8] = {0};
    size_t nh = fsize < 8 ? (size_t)fsize : 8;
    if (read_exact(f, head, nh) != 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return io_error(err, errlen, path, "read error");
    }
    int is_npy = sig_match(head, fsize, NPY_SIG, 6);
    int is_png = sig_match(head, fsize, PNG_SIG, 8);
    int is_jpg = sig_match(head, fsize, JPG_SIG, 3);
    if (is_npy == 1) {
        int rc = read_npy_input(path, f, fsize, n_bits, model_c, out, err, errlen);
        fclose(f);
        return rc;
    }
    if (is_png != 1 && is_jpg != 1) {
        fclose(f);
        if (is_npy == 2 || is_png == 2 || is_jpg == 2)
            return io_error(err, errlen, path, "truncated file (%lld bytes)", (long long)fsize);
        if (io_is_idx(path)) return read_idx_input(path, n_bits, model_c, out, err, errlen);
        if (is_png_name(path)) return io_error(err, errlen, path, "not a PNG file");
        if (is_jpg_name(path)) return io_error(err, errlen, path, "not a JPEG file");
        if (is_npy_name(path)) return io_error(err, errlen, path, "not a .npy file (bad magic)");
        return io_error(err, errlen, path, "unrecognised file format (need .npy, PNG, JPEG or idx3-ubyte content)");
    }
    if (fsize > IO_MAX_FILE_BYTES) {
        fclose(f);
        return io_error(err, errlen, path, "file too large (%lld bytes, max %lld)", (long long)fsize,
                      (long long)IO_MAX_FILE_BYTES);
    }
    uint8_t *buf = malloc((size_t)fsize);
    if (!buf) {
        fclose(f);
        return io_error(err, errlen, path, "out of memory");
    }
    if (read_exact(f, buf, (size_t)fsize) != 0) {
        free(buf);
        fclose(f);
        return io_error(err, errlen, path, "read error");
    }
    fclose(f);
    raw_image im = {0};
    int rc = is_png == 1 ? png_decode(path, buf, (size_t)fsize, &im, err, errlen)
                         : jpeg_decode(path, buf, (size_t)fsize, &im, err, errlen);
    free(buf);
    if (rc != 0) return -1;
    if (check_model_c(path, model_c, err, errlen) != 0) {
        free(im.pix);
        return -1;
    }
    float *x = malloc((size_t)(im.w * im.h * model_c) * sizeof(float));
    if (!x) {
        free(im.pix);
        return io_error(err, errlen, path, "out of memory");
    }
    pixels_to_model(im.pix, 1, im.h, im.w, im.c, model_c, n_bits, x);
    free(im.pix);
    out->x = x;
    out->n = 1;
    out->c = model_c;
    out->h = im.h;
    out->w = im.w;
    return 0;
}

void io_images_free(io_images *im)
{
    if (!im) return;
    free(im->x);
    memset(im, 0, sizeof *im);
}

/* ------------------------------------------------------------------------ */
/* io_write_images                                                           */

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int mkdir_p(const char *path, char *err, size_t errlen)
{
    size_t n = strlen(path);
    char *p = malloc(n + 1);
    if (!p) return io_error(err, errlen, path, "out of memory");
    memcpy(p, path, n + 1);
    while (n > 1 && p[n - 1] == '/') p[--n] = 0;
    for (size_t i = 1; i <= n; ++i) {
        if (p[i] == '/' || p[i] == 0) {
            char save = p[i];
            p[i] = 0;
            if (mkdir(p, 0777) != 0 && errno != EEXIST) {
                int e = errno;
                io_error(err, errlen, path, "cannot create directory %s: %s", p, strerror(e));
                free(p);
                return -1;
            }
            p[i] = save;
        }
    }
    int ok = is_dir(p);
    free(p);
    if (!ok) return io_error(err, errlen, path, "exists and is not a directory");
    return 0;
}

static int write_u8_image(const char *path, int jpeg, const uint8_t *pix, int64_t w, int64_t h, int c,
                          char *err, size_t errlen)
{
    return jpeg ? jpeg_write_file(path, pix, w, h, c, err, errlen)
                : png_write_file(path, pix, w, h, c, err, errlen);
}

/* cols x rows of the grid io_write_images draws for n samples of h x w. */
static void grid_size(int64_t n, int64_t h, int64_t w, int64_t *cols, int64_t *gw, int64_t *gh)
{
    const int64_t gap = 2;
    int64_t c = 1;
    while (c * c < n) c++;
    int64_t rows = (n + c - 1) / c;
    *cols = c;
    *gw = c * w + (c - 1) * gap;
    *gh = rows * h + (rows - 1) * gap;
}

static int dir_output(const char *path)
{
    return is_dir(path) || path[strlen(path) - 1] == '/' ||
           !(is_npy_name(path) || is_png_name(path) || is_jpg_name(path));
}

int io_check_image_output(const char *path, int64_t n, int64_t c, int64_t h, int64_t w, int n_bits, char *err,
                          size_t errlen)
{
    if (!path || !*path) return io_error(err, errlen, path, "invalid (empty) output path");
    int64_t t;
    if (n < 1 || c < 1 || h < 1 || w < 1)
        return io_error(err, errlen, path, "invalid sample shape [%lld,%lld,%lld,%lld]", (long long)n,
                      (long long)c, (long long)h, (long long)w);
    if (mul_cap(n, c, IO_MAX_ELEMS, &t) != 0 || mul_cap(t, h, IO_MAX_ELEMS, &t) != 0 ||
        mul_cap(t, w, IO_MAX_ELEMS, &t) != 0)
        return io_error(err, errlen, path, "%lld samples of %lldx%lldx%lld are too large (max %lld values)",
                      (long long)n, (long long)c, (long long)h, (long long)w, (long long)IO_MAX_ELEMS);
    const int dir_mode = dir_output(path);
    if (!dir_mode && is_npy_name(path)) return 0;
    if (c != 1 && c != 3)
        return io_error(err, errlen, path, "image output needs 1 or 3 channels, samples have %lld", (long long)c);
    if (!valid_bits(n_bits)) return io_error(err, errlen, path, "n_bits %d out of range 1..8", n_bits);
    if (h > IO_MAX_DIM || w > IO_MAX_DIM)
        return io_error(err, errlen, path, "image size %lldx%lld too large (max %dx%d)", (long long)w,
                      (long long)h, IO_MAX_DIM, IO_MAX_DIM);
    if (!dir_mode) {
        int64_t cols, gw, gh;
        grid_size(n, h, w, &cols, &gw, &gh);
        if (gw > IO_MAX_DIM || gh > IO_MAX_DIM)
            return io_error(err, errlen, path, "grid of %lld samples would be %lldx%lld (max %dx%d); write to a directory instead",
                          (long long)n, (long long)gw, (long long)gh, IO_MAX_DIM, IO_MAX_DIM);
    }
    return 0;
}

int io_write_images(const char *path, const float *x, int64_t n, int64_t c, int64_t h, int64_t w,
                    int n_bits, char *err, size_t errlen)
{
    if (io_check_image_output(path, n, c, h, w, n_bits, err, errlen) != 0) return -1;
    if (!x) return io_error(err, errlen, path, "invalid argument (no data)");

    size_t len = strlen(path);
    const int dir_mode = dir_output(path);
    if (!dir_mode && is_npy_name(path)) {
        int64_t shape[4] = {n, c, h, w};
        return io_write_npy_f32(path, x, 4, shape, err, errlen);
    }
    const int64_t sample = c * h * w;

    if (!dir_mode) {
        int64_t cols, gw, gh;
        const int64_t gap = 2;
        grid_size(n, h, w, &cols, &gw, &gh);
        uint8_t *pix = calloc((size_t)(gw * gh * c), 1);
        if (!pix) return io_error(err, errlen, path, "out of memory");
        for (int64_t i = 0; i < n; ++i) {
            int64_t r = i / cols, q = i % cols;
            uint8_t *dst = pix + ((r * (h + gap)) * gw + q * (w + gap)) * c;
            model_to_pixels(x + i * sample, c, h, w, n_bits, dst, gw * c);
        }
        int rc = write_u8_image(path, is_jpg_name(path), pix, gw, gh, (int)c, err, errlen);
        free(pix);
        return rc;
    }

    if (mkdir_p(path, err, errlen) != 0) return -1;
    uint8_t *pix = malloc((size_t)sample);
    char *name = malloc(len + 32);
    if (!pix || !name) {
        free(pix);
        free(name);
        return io_error(err, errlen, path, "out of memory");
    }
    int rc = 0;
    for (int64_t i = 0; i < n && rc == 0; ++i) {
        snprintf(name, len + 32, "%s%s%06lld.png", path, path[len - 1] == '/' ? "" : "/", (long long)i);
        model_to_pixels(x + i * sample, c, h, w, n_bits, pix, w * c);
        rc = png_write_file(name, pix, w, h, (int)c, err, errlen);
    }
    free(pix);
    free(name);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* io_list_inputs                                                            */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void io_free_list(char **paths, size_t count)
{
    if (!paths) return;
    for (size_t i = 0; i < count; ++i) free(paths[i]);
    free(paths);
}

int io_list_inputs(const char *path, char ***paths, size_t *count, char *err, size_t errlen)
{
    if (!path || !paths || !count) return io_error(err, errlen, path, "invalid argument");
    *paths = NULL;
    *count = 0;
    struct stat st;
    if (stat(path, &st) != 0) return io_error(err, errlen, path, "%s", strerror(errno));
    if (!S_ISDIR(st.st_mode)) {
        char **v = malloc(sizeof *v);
        if (v) v[0] = strdup(path);
        if (!v || !v[0]) {
            free(v);
            return io_error(err, errlen, path, "out of memory");
        }
        *paths = v;
        *count = 1;
        return 0;
    }
    DIR *d = opendir(path);
    if (!d) return io_error(err, errlen, path, "cannot open directory: %s", strerror(errno));
    size_t len = strlen(path), n = 0, cap = 0;
    int slash = len > 0 && path[len - 1] == '/';
    char **v = NULL;
    int rc = 0;
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            if (errno != 0) rc = io_error(err, errlen, path, "cannot read directory: %s", strerror(errno));
            break;
        }
        const char *nm = e->d_name;
        if (nm[0] == '.') continue;
        if (!(is_png_name(nm) || is_jpg_name(nm) || is_npy_name(nm))) continue;
        size_t m = strlen(nm);
        char *full = malloc(len + m + 2);
        if (!full) { rc = io_error(err, errlen, path, "out of memory"); break; }
        memcpy(full, path, len);
        if (!slash) full[len] = '/';
        memcpy(full + len + !slash, nm, m + 1);
        /* Only subdirectories are skipped: an entry that cannot be read (a
         * dangling link, a pipe) is listed, so that it fails with a reason
         * rather than vanishing from the results. */
        struct stat fs;
        if (stat(full, &fs) == 0 && S_ISDIR(fs.st_mode)) {
            free(full);
            continue;
        }
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            char **nv = nc < SIZE_MAX / sizeof *nv ? realloc(v, nc * sizeof *nv) : NULL;
            if (!nv) { free(full); rc = io_error(err, errlen, path, "out of memory"); break; }
            v = nv;
            cap = nc;
        }
        v[n++] = full;
    }
    closedir(d);
    if (rc == 0 && n == 0) rc = io_error(err, errlen, path, "no .png, .jpg, .jpeg or .npy files in directory");
    if (rc != 0) {
        io_free_list(v, n);
        return -1;
    }
    qsort(v, n, sizeof *v, cmp_str);
    *paths = v;
    *count = n;
    return 0;
}
