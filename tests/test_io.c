/* Criterion tests for runtime/io.c */
#define _POSIX_C_SOURCE 200809L
#define _XOPEN_SOURCE 700

#include <criterion/criterion.h>
#include <criterion/redirect.h>

#include <ftw.h>
#include <math.h>
#include <png.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "../runtime/io.h"

/* ------------------------------------------------------------------------ */
/* fixture: a fresh temp dir per test (each test runs in its own process)    */

static char tmpdir[256];

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(p);
}

static void setup(void)
{
    strcpy(tmpdir, "/tmp/glowrt_test_io_XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static void setup_quiet(void)
{
    setup();
    cr_redirect_stderr();
    cr_redirect_stdout();
}

static void teardown(void)
{
    if (tmpdir[0]) nftw(tmpdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *tp(const char *name)   /* path inside tmpdir (rotating buffers) */
{
    static char bufs[8][512];
    static int k;
    char *b = bufs[k++ & 7];
    snprintf(b, 512, "%s/%s", tmpdir, name);
    return b;
}

static void write_bytes(const char *path, const void *buf, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot create %s", path);
    if (n) cr_assert_eq(fwrite(buf, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

static uint8_t *read_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)sz + 1);
    cr_assert_eq(fread(b, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    *n = (size_t)sz;
    return b;
}

static int file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* a failed call: non-zero rc, one line, names the file, says something */
#define ASSERT_IO_ERR(rc, err, path)                                                          \
    do {                                                                                      \
        cr_assert_neq((rc), 0, "expected failure for %s", (path));                            \
        cr_assert_null(strchr((err), '\n'), "multi-line error: %s", (err));                   \
        cr_assert_not_null(strstr((err), (path)), "error does not name the file: %s", (err)); \
        cr_assert_gt(strlen(err), strlen(path) + 4, "error too terse: %s", (err));            \
    } while (0)

static void expect_input_error(const char *path, int n_bits, int model_c)
{
    char err[512];
    io_images im;
    memset(err, 0, sizeof err);
    int rc = io_read_input(path, n_bits, model_c, &im, err, sizeof err);
    ASSERT_IO_ERR(rc, err, path);
    cr_assert_null(im.x);
}

/* raw .npy builder: version (1..3), header dict text (without padding/newline) */
static size_t build_npy(uint8_t *out, int major, const char *dict, int terminate, const void *data,
                        size_t datalen)
{
    size_t d = strlen(dict);
    size_t pre = major == 1 ? 10 : 12;
    size_t hlen = d + (terminate ? 1 : 0);
    memcpy(out, "\x93NUMPY", 6);
    out[6] = (uint8_t)major;
    out[7] = 0;
    if (major == 1) {
        out[8] = (uint8_t)(hlen & 0xff);
        out[9] = (uint8_t)(hlen >> 8);
    } else {
        out[8] = (uint8_t)hlen; out[9] = (uint8_t)(hlen >> 8);
        out[10] = (uint8_t)(hlen >> 16); out[11] = (uint8_t)(hlen >> 24);
    }
    memcpy(out + pre, dict, d);
    if (terminate) out[pre + d] = '\n';
    if (datalen) memcpy(out + pre + hlen, data, datalen);
    return pre + hlen + datalen;
}

static void write_npy_raw(const char *path, int major, const char *dict, int terminate, const void *data,
                          size_t datalen)
{
    uint8_t *buf = malloc(datalen + strlen(dict) + 64);
    size_t n = build_npy(buf, major, dict, terminate, data, datalen);
    write_bytes(path, buf, n);
    free(buf);
}

/* model-space sample from 8-bit pixels: pix interleaved [h][w][c] -> [c][h][w] */
static float *model_from_pixels(const uint8_t *pix, int c, int h, int w, int n_bits)
{
    float *x = malloc(sizeof(float) * (size_t)(c * h * w));
    for (int y = 0; y < h; ++y)
        for (int xx = 0; xx < w; ++xx)
            for (int ch = 0; ch < c; ++ch)
                x[(ch * h + y) * w + xx] = io_pixel_to_model(pix[(y * w + xx) * c + ch], n_bits);
    return x;
}

static uint8_t *random_pixels(size_t n, unsigned seed)
{
    uint8_t *p = malloc(n);
    uint32_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; ++i) {
        s = s * 1664525u + 1013904223u;
        p[i] = (uint8_t)(s >> 24);
    }
    return p;
}

/* ------------------------------------------------------------------------ */
/* conversions                                                               */

Test(convert, bin_centre_formula)
{
    for (int nb = 1; nb <= 8; ++nb) {
        double bins = (double)(1 << nb);
        for (int u = 0; u < 256; ++u) {
            int q = u >> (8 - nb);
            double want = q / bins - 0.5 + 0.5 / bins;
            float got = io_pixel_to_model((uint8_t)u, nb);
            cr_assert_eq((double)got, want, "n_bits %d u %d: %f vs %f", nb, u, (double)got, want);
            /* back: floor((x + .5) * bins) * 256 / bins */
            cr_assert_eq(io_model_to_pixel(got, nb), (uint8_t)(q * (256 >> nb)), "back n_bits %d u %d", nb, u);
        }
    }
    /* n_bits 8: identity; spot values from the formula */
    cr_assert_float_eq(io_pixel_to_model(0, 8), -0.5f + 1.0f / 512, 0);
    cr_assert_float_eq(io_pixel_to_model(255, 8), 0.5f - 1.0f / 512, 0);
    cr_assert_float_eq(io_pixel_to_model(200, 5), 25.0f / 32 - 0.5f + 1.0f / 64, 0);
    /* clipping */
    cr_assert_eq(io_model_to_pixel(-3.0f, 8), 0);
    cr_assert_eq(io_model_to_pixel(3.0f, 8), 255);
    cr_assert_eq(io_model_to_pixel(0.5f, 5), 255);   /* bin 32 -> 256 -> clipped */
    cr_assert_eq(io_model_to_pixel(NAN, 8), 0);
    cr_assert_eq(io_model_to_pixel(INFINITY, 8), 255);
    cr_assert_eq(io_model_to_pixel(-INFINITY, 8), 0);
}

Test(convert, luma_bt601)
{
    cr_assert_eq(io_rgb_to_luma(0, 0, 0), 0);
    cr_assert_eq(io_rgb_to_luma(255, 255, 255), 255);
    cr_assert_eq(io_rgb_to_luma(255, 0, 0), 76);
    cr_assert_eq(io_rgb_to_luma(0, 255, 0), 150);
    cr_assert_eq(io_rgb_to_luma(0, 0, 255), 29);
    for (int i = 0; i < 4096; ++i) {
        int r = (i * 37) & 255, g = (i * 101) & 255, b = (i * 13 + 7) & 255;
        double y = 0.299 * r + 0.587 * g + 0.114 * b;
        cr_assert_leq(fabs(io_rgb_to_luma((uint8_t)r, (uint8_t)g, (uint8_t)b) - y), 0.5001);
    }
}

/* ------------------------------------------------------------------------ */
/* npy                                                                       */

Test(npy, roundtrip_f32, .init = setup, .fini = teardown)
{
    char err[512];
    float v[6] = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-30f};
    int64_t shape[2] = {2, 3};
    const char *p = tp("lat.npy");
    cr_assert_eq(io_write_npy_f32(p, v, 2, shape, err, sizeof err), 0, "%s", err);
    cr_assert(!file_exists(tp("lat.npy.tmp")));
    size_t n;
    uint8_t *b = read_bytes(p, &n);
    cr_assert_eq(memcmp(b, "\x93NUMPY\x01\x00", 8), 0);
    size_t hlen = (size_t)(b[8] | (b[9] << 8));
    cr_assert_eq((10 + hlen) % 64, 0);
    cr_assert_eq(b[10 + hlen - 1], '\n');
    cr_assert_eq(n, 10 + hlen + sizeof v);
    cr_assert_not_null(strstr((char *)b + 10, "'shape': (2, 3)"));
    free(b);

    float *x = NULL;
    int nd = 0;
    int64_t sh[4];
    cr_assert_eq(io_read_npy_f32(p, &x, &nd, sh, err, sizeof err), 0, "%s", err);
    cr_assert_eq(nd, 2);
    cr_assert_eq(sh[0], 2);
    cr_assert_eq(sh[1], 3);
    cr_assert_eq(sh[2], 1);
    cr_assert_eq(memcmp(x, v, sizeof v), 0);
    free(x);

    /* 1-D: "(5,)" */
    int64_t s1[1] = {5};
    float w[5] = {1, 2, 3, 4, 5};
    cr_assert_eq(io_write_npy_f32(tp("v.npy"), w, 1, s1, err, sizeof err), 0, "%s", err);
    b = read_bytes(tp("v.npy"), &n);
    cr_assert_not_null(strstr((char *)b + 10, "'shape': (5,)"));
    free(b);
    cr_assert_eq(io_read_npy_f32(tp("v.npy"), &x, &nd, sh, err, sizeof err), 0, "%s", err);
    cr_assert_eq(nd, 1);
    cr_assert_eq(sh[0], 5);
    cr_assert_eq(memcmp(x, w, sizeof w), 0);
    free(x);

    /* overwrite an existing file atomically */
    cr_assert_eq(io_write_npy_f32(p, w, 1, s1, err, sizeof err), 0, "%s", err);
    cr_assert_eq(io_read_npy_f32(p, &x, &nd, sh, err, sizeof err), 0, "%s", err);
    cr_assert_eq(sh[0], 5);
    free(x);
}

Test(npy, versions_2_and_3_and_quotes, .init = setup, .fini = teardown)
{
    float v[2] = {7.0f, 8.0f};
    char err[512];
    float *x;
    int nd;
    int64_t sh[4];
    write_npy_raw(tp("v2.npy"), 2, "{\"descr\": \"<f4\", \"shape\": (1, 2), \"fortran_order\": False}   ", 1, v,
                  sizeof v);
    cr_assert_eq(io_read_npy_f32(tp("v2.npy"), &x, &nd, sh, err, sizeof err), 0, "%s", err);
    cr_assert_eq(x[1], 8.0f);
    free(x);
    write_npy_raw(tp("v3.npy"), 3, "{'descr':'<f4','fortran_order':False,'shape':(2,),}", 1, v, sizeof v);
    cr_assert_eq(io_read_npy_f32(tp("v3.npy"), &x, &nd, sh, err, sizeof err), 0, "%s", err);
    cr_assert_eq(nd, 1);
    free(x);
}

Test(npy, images_npy_roundtrip, .init = setup, .fini = teardown)
{
    char err[512];
    int n = 2, c = 3, h = 4, w = 5;
    float *x = malloc(sizeof(float) * (size_t)(n * c * h * w));
    for (int i = 0; i < n * c * h * w; ++i) x[i] = (float)i * 0.01f - 0.3f;
    const char *p = tp("samples.NPY");
    cr_assert_eq(io_write_images(p, x, n, c, h, w, 8, err, sizeof err), 0, "%s", err);
    io_images im;
    cr_assert_eq(io_read_input(p, 8, 3, &im, err, sizeof err), 0, "%s", err);
    cr_assert_eq(im.n, n);
    cr_assert_eq(im.c, c);
    cr_assert_eq(im.h, h);
    cr_assert_eq(im.w, w);
    cr_assert_eq(memcmp(im.x, x, sizeof(float) * (size_t)(n * c * h * w)), 0);
    io_images_free(&im);
    cr_assert_null(im.x);
    /* channel mismatch for float input is an error */
    expect_input_error(p, 8, 1);
    free(x);
}

Test(npy, uint8_pixels_nbits, .init = setup, .fini = teardown)
{
    uint8_t px[256];
    for (int i = 0; i < 256; ++i) px[i] = (uint8_t)i;
    write_npy_raw(tp("g.npy"), 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (1, 16, 16), }", 1, px,
                  sizeof px);
    char err[512];
    io_images im;
    for (int nb = 8; nb >= 5; nb -= 3) {
        cr_assert_eq(io_read_input(tp("g.npy"), nb, 1, &im, err, sizeof err), 0, "%s", err);
        cr_assert_eq(im.n, 1);
        cr_assert_eq(im.c, 1);
        cr_assert_eq(im.h, 16);
        cr_assert_eq(im.w, 16);
        double bins = (double)(1 << nb);
        for (int u = 0; u < 256; ++u) {
            double want = floor(u / pow(2, 8 - nb)) / bins - 0.5 + 0.5 / bins;
            cr_assert_eq((double)im.x[u], want, "n_bits %d u %d", nb, u);
        }
        /* write back as PNG and compare to the quantised pixels */
        cr_assert_eq(io_write_images(tp("g.png"), im.x, 1, 1, 16, 16, nb, err, sizeof err), 0, "%s", err);
        io_images back;
        cr_assert_eq(io_read_input(tp("g.png"), 8, 1, &back, err, sizeof err), 0, "%s", err);
        for (int u = 0; u < 256; ++u) {
            int q = (u >> (8 - nb)) << (8 - nb);
            cr_assert_eq((double)back.x[u], q / 256.0 - 0.5 + 1 / 512.0, "n_bits %d u %d", nb, u);
        }
        io_images_free(&back);
        io_images_free(&im);
    }
    /* n_bits 5 explicit spot check: u = 200 -> bin 25 -> 25/32 - 0.5 + 1/64 */
    cr_assert_eq(io_read_input(tp("g.npy"), 5, 1, &im, err, sizeof err), 0, "%s", err);
    cr_assert_float_eq(im.x[200], 0.296875f, 0);
    io_images_free(&im);
}

Test(npy, gray_rgb_conversion, .init = setup, .fini = teardown)
{
    char err[512];
    io_images im;
    /* RGB pixels [1,1,4,3] -> luma */
    uint8_t rgb[12] = {255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 200, 60};
    write_npy_raw(tp("rgb.npy"), 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (1, 1, 4, 3), }", 1, rgb,
                  sizeof rgb);
    cr_assert_eq(io_read_input(tp("rgb.npy"), 8, 1, &im, err, sizeof err), 0, "%s", err);
    cr_assert_eq(im.c, 1);
    for (int i = 0; i < 4; ++i)
        cr_assert_eq(im.x[i], io_pixel_to_model(io_rgb_to_luma(rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2]), 8));
    cr_assert_eq(im.x[0], io_pixel_to_model(76, 8));
    io_images_free(&im);
    /* RGB -> RGB, planar */
    cr_assert_eq(io_read_input(tp("rgb.npy"), 8, 3, &im, err, sizeof err), 0, "%s", err);
    cr_assert_eq(im.c, 3);
    for (int i = 0; i < 4; ++i)
        for (int ch = 0; ch < 3; ++ch) cr_assert_eq(im.x[ch * 4 + i], io_pixel_to_model(rgb[3 * i + ch], 8));
    io_images_free(&im);
    /* RGBA -> alpha dropped */
    uint8_t rgba[8] = {1, 2, 3, 99, 4, 5, 6, 0};
    write_npy_raw(tp("rgba.npy"), 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (1, 1, 2, 4), }", 1,
                  rgba, sizeof rgba);
    cr_assert_eq(io_read_input(tp("rgba.npy"), 8, 3, &im, err, sizeof err), 0, "%s", err);
    cr_assert_eq(im.x[0], io_pixel_to_model(1, 8));
    cr_assert_eq(im.x[1], io_pixel_to_model(4, 8));
    cr_assert_eq(im.x[5], io_pixel_to_model(6, 8));
    io_images_free(&im);
    /* gray [2,1,3] -> replicated into 3 channels */
    uint8_t g[6] = {0, 50, 100, 150, 200, 255};
    write_npy_raw(tp("g.npy"), 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 1, 3), }", 1, g,
                  sizeof g);
    cr_assert_eq(io_read_input(tp("g.npy"), 8, 3, &im, err, sizeof err), 0, "%s", err);
    cr_assert_eq(im.n, 2);
    cr_assert_eq(im.c, 3);
    for (int s = 0; s < 2; ++s)
        for (int ch = 0; ch < 3; ++ch)
            for (int i = 0; i < 3; ++i)
                cr_assert_eq(im.x[(s * 3 + ch) * 3 + i], io_pixel_to_model(g[s * 3 + i], 8));
    io_images_free(&im);
    /* model with 2 channels cannot take pixels */
    expect_input_error(tp("g.npy"), 8, 2);

    /* same through PNG: gray PNG -> model_c 3, RGB PNG -> model_c 1 */
    float *xg = model_from_pixels(g, 1, 2, 3, 8);
    cr_assert_eq(io_write_images(tp("g.png"), xg, 1, 1, 2, 3, 8, err, sizeof err), 0, "%s", err);
    cr_assert_eq(io_read_input(tp("g.png"), 8, 3, &im, err, sizeof err), 0, "%s", err);
    for (int ch = 0; ch < 3; ++ch)
        for (int i = 0; i < 6; ++i) cr_assert_eq(im.x[ch * 6 + i], xg[i]);
    io_images_free(&im);
    float *xr = model_from_pixels(rgb, 3, 1, 4, 8);
    cr_assert_eq(io_write_images(tp("rgb.png"), xr, 1, 3, 1, 4, 8, err, sizeof err), 0, "%s", err);
    cr_assert_eq(io_read_input(tp("rgb.png"), 8, 1, &im, err, sizeof err), 0, "%s", err);
    for (int i = 0; i < 4; ++i)
        cr_assert_eq(im.x[i], io_pixel_to_model(io_rgb_to_luma(rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2]), 8));
    io_images_free(&im);
    free(xg);
    free(xr);
}

/* ------------------------------------------------------------------------ */
/* PNG / JPEG round trips                                                    */

Test(png, roundtrip_exact_8bit, .init = setup, .fini = teardown)
{
    char err[512];
    for (int c = 1; c <= 3; c += 2) {
        int h = 13, w = 17;
        uint8_t *pix = random_pixels((size_t)(h * w * c), (unsigned)c);
        float *x = model_from_pixels(pix, c, h, w, 8);
        const char *p = tp(c == 1 ? "gray.png" : "rgb.PNG");
        cr_assert_eq(io_write_images(p, x, 1, c, h, w, 8, err, sizeof err), 0, "%s", err);
        cr_assert(!file_exists(tp(c == 1 ? "gray.png.tmp" : "rgb.PNG.tmp")));
        io_images im;
        cr_assert_eq(io_read_input(p, 8, c, &im, err, sizeof err), 0, "%s", err);
        cr_assert_eq(im.n, 1);
        cr_assert_eq(im.c, c);
        cr_assert_eq(im.h, h);
        cr_assert_eq(im.w, w);
        cr_assert_eq(memcmp(im.x, x, sizeof(float) * (size_t)(c * h * w)), 0);
        io_images_free(&im);
        free(x);
        free(pix);
    }
}

Test(png, content_not_extension, .init = setup, .fini = teardown)
{
    char err[512];
    uint8_t pix[12] = {0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110};
    float *x = model_from_pixels(pix, 3, 2, 2, 8);
    cr_assert_eq(io_write_images(tp("a.png"), x, 1, 3, 2, 2, 8, err, sizeof err), 0, "%s", err);
    cr_assert_eq(rename(tp("a.png"), tp("a.jpg")), 0);
    io_images im;
    cr_assert_eq(io_read_input(tp("a.jpg"), 8, 3, &im, err, sizeof err), 0, "%s", err);
    cr_assert_eq(memcmp(im.x, x, sizeof(float) * 12), 0);
    io_images_free(&im);
    free(x);
}

Test(jpeg, roundtrip_tolerance, .init = setup, .fini = teardown)
{
    char err[512];
    for (int c = 1; c <= 3; c += 2) {
        int h = 32, w = 40;
        uint8_t *pix = malloc((size_t)(h * w * c));
        for (int y = 0; y < h; ++y)
            for (int xx = 0; xx < w; ++xx)
                for (int ch = 0; ch < c; ++ch)
                    pix[(y * w + xx) * c + ch] = (uint8_t)(40 + 2 * y + 2 * xx + 20 * ch);
        float *x = model_from_pixels(pix, c, h, w, 8);
        const char *p = tp(c == 1 ? "g.jpg" : "c.JPEG");
        cr_assert_eq(io_write_images(p, x, 1, c, h, w, 8, err, sizeof err), 0, "%s", err);
        io_images im;
        cr_assert_eq(io_read_input(p, 8, c, &im, err, sizeof err), 0, "%s", err);
        cr_assert_eq(im.c, c);
        cr_assert_eq(im.h, h);
        cr_assert_eq(im.w, w);
        double maxd = 0, sum = 0;
        for (int i = 0; i < c * h * w; ++i) {
            double d = fabs(im.x[i] - x[i]) * 256.0;   /* in pixel units */
            sum += d;
            if (d > maxd) maxd = d;
        }
        cr_assert_leq(maxd, 6.0, "c %d max diff %f", c, maxd);
        cr_assert_leq(sum / (c * h * w), 1.5, "c %d mean diff %f", c, sum / (c * h * w));
        io_images_free(&im);
        free(x);
        free(pix);
    }
}

/* write a PNG of any kind straight through libpng */
static void write_png_raw(const char *path, int w, int h, int bd, int ct, int interlace, const uint8_t *data,
                          size_t rowbytes, const png_color *pal, int npal)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) cr_assert_fail("libpng write failed");
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, bd, ct, interlace, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (pal) png_set_PLTE(png, info, pal, npal);
    png_write_info(png, info);
    if (bd == 16) png_set_swap(png);   /* our 16-bit test data is little-endian */
    int passes = png_set_interlace_handling(png);
    for (int p = 0; p < passes; ++p)
        for (int y = 0; y < h; ++y) png_write_row(png, (png_const_bytep)(data + (size_t)y * rowbytes));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    fclose(f);
}

Test(png, variants, .init = setup_quiet, .fini = teardown)
{
    char err[512];
    io_images im;
    const int w = 5, h = 3;
    /* 16-bit RGBA, interlaced: 16 -> 8 by scaling, alpha dropped */
    uint16_t d16[3 * 5 * 4];
    for (int i = 0; i < w * h; ++i) {
        d16[4 * i + 0] = (uint16_t)(i * 4000);
        d16[4 * i + 1] = (uint16_t)(65535 - i * 4000);
        d16[4 * i + 2] = (uint16_t)(i * 257);
        d16[4 * i + 3] = 0;
    }
    write_png_raw(tp("a16.png"), w, h, 16, PNG_COLOR_TYPE_RGB_ALPHA, PNG_INTERLACE_ADAM7, (uint8_t *)d16,
                  (size_t)w * 8, NULL, 0);
    cr_assert_eq(io_read_input(tp("a16.png"), 8, 3, &im, err, sizeof err), 0, "%s", err);
    for (int i = 0; i < w * h; ++i)
        for (int ch = 0; ch < 3; ++ch) {
            unsigned v16 = d16[4 * i + ch];
            uint8_t want = (uint8_t)((v16 * 255u + 32895u) >> 16);   /* png_set_scale_16 */
            cr_assert_eq(im.x[ch * w * h + i], io_pixel_to_model(want, 8), "16-bit px %d ch %d", i, ch);
        }
    io_images_free(&im);

    /* palette */
    png_color pal[4] = {{0, 0, 0}, {255, 0, 0}, {0, 128, 255}, {7, 8, 9}};
    uint8_t idx[15];
    for (int i = 0; i < 15; ++i) idx[i] = (uint8_t)(i % 4);
    write_png_raw(tp("pal.png"), w, h, 8, PNG_COLOR_TYPE_PALETTE, PNG_INTERLACE_NONE, idx, (size_t)w, pal, 4);
    cr_assert_eq(io_read_input(tp("pal.png"), 8, 3, &im, err, sizeof err), 0, "%s", err);
    for (int i = 0; i < 15; ++i) {
        const png_color *pc = &pal[i % 4];
        cr_assert_eq(im.x[i], io_pixel_to_model(pc->red, 8));
        cr_assert_eq(im.x[15 + i], io_pixel_to_model(pc->green, 8));
        cr_assert_eq(im.x[30 + i], io_pixel_to_model(pc->blue, 8));
    }
    io_images_free(&im);

    /* gray + alpha */
    uint8_t ga[30];
    for (int i = 0; i < 15; ++i) { ga[2 * i] = (uint8_t)(i * 17); ga[2 * i + 1] = 3; }
    write_png_raw(tp("ga.png"), w, h, 8, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_INTERLACE_NONE, ga, (size_t)w * 2, NULL, 0);
    cr_assert_eq(io_read_input(tp("ga.png"), 8, 1, &im, err, sizeof err), 0, "%s", err);
    for (int i = 0; i < 15; ++i) cr_assert_eq(im.x[i], io_pixel_to_model((uint8_t)(i * 17), 8));
    io_images_free(&im);

    /* 1-bit gray: 0 -> 0, 1 -> 255 */
    uint8_t bits[3] = {0xA8, 0x50, 0xF8};   /* rows of 5 pixels: 10101, 01010, 11111 */
    write_png_raw(tp("b1.png"), w, h, 1, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE, bits, 1, NULL, 0);
    cr_assert_eq(io_read_input(tp("b1.png"), 8, 1, &im, err, sizeof err), 0, "%s", err);
    const int want1[15] = {1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1, 1, 1, 1};
    for (int i = 0; i < 15; ++i) cr_assert_eq(im.x[i], io_pixel_to_model(want1[i] ? 255 : 0, 8), "bit px %d", i);
    io_images_free(&im);
    cr_assert_stderr_eq_str("");
    cr_assert_stdout_eq_str("");
}

/* a PNG with a tRNS chunk: palette entries with alpha, or one transparent
 * gray / RGB colour */
static void write_png_trns(const char *path, int w, int h, int bd, int ct, const uint8_t *data, size_t rowbytes,
                           const png_color *pal, int npal, const png_byte *alpha, int nalpha,
                           const png_color_16 *colour)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) cr_assert_fail("libpng write failed");
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, bd, ct, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (pal) png_set_PLTE(png, info, pal, npal);
    png_set_tRNS(png, info, alpha, nalpha, colour);
    png_write_info(png, info);
    for (int y = 0; y < h; ++y) png_write_row(png, (png_const_bytep)(data + (size_t)y * rowbytes));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    fclose(f);
}

/* tRNS is ignored like an alpha channel: a palette with transparent entries
 * (what many tools write for images with a transparent background) reads as
 * its RGB colours, a transparent gray or RGB colour as itself */
Test(png, trns_ignored, .init = setup_quiet, .fini = teardown)
{
    char err[512];
    io_images im;
    const int w = 5, h = 3;
    png_color pal[4] = {{0, 0, 0}, {255, 0, 0}, {0, 128, 255}, {7, 8, 9}};
    png_byte alpha[2] = {0, 128};
    uint8_t idx[15];
    for (int i = 0; i < 15; ++i) idx[i] = (uint8_t)(i % 4);
    write_png_trns(tp("pal_trns.png"), w, h, 8, PNG_COLOR_TYPE_PALETTE, idx, (size_t)w, pal, 4, alpha, 2, NULL);
    for (int model_c = 1; model_c <= 3; model_c += 2) {
        cr_assert_eq(io_read_input(tp("pal_trns.png"), 8, model_c, &im, err, sizeof err), 0, "%s", err);
        cr_assert(im.c == model_c && im.h == h && im.w == w);
        for (int i = 0; i < 15; ++i) {
            const png_color *pc = &pal[i % 4];
            if (model_c == 1) {
                cr_assert_eq(im.x[i], io_pixel_to_model(io_rgb_to_luma(pc->red, pc->green, pc->blue), 8));
            } else {
                cr_assert_eq(im.x[i], io_pixel_to_model(pc->red, 8));
                cr_assert_eq(im.x[15 + i], io_pixel_to_model(pc->green, 8));
                cr_assert_eq(im.x[30 + i], io_pixel_to_model(pc->blue, 8));
            }
        }
        io_images_free(&im);
    }
    /* 4-bit gray with a transparent level: expanded to 8 bits, 15 -> 255 */
    uint8_t g4[9];
    for (int i = 0; i < 9; ++i) g4[i] = (uint8_t)(i * 0x11 + 0x10);
    png_color_16 tg = {.gray = 1};
    write_png_trns(tp("g4_trns.png"), 6, 3, 4, PNG_COLOR_TYPE_GRAY, g4, 3, NULL, 0, NULL, 0, &tg);
    cr_assert_eq(io_read_input(tp("g4_trns.png"), 8, 1, &im, err, sizeof err), 0, "%s", err);
    for (int i = 0; i < 18; ++i) {
        unsigned v = (g4[i / 2] >> (i % 2 ? 0 : 4)) & 15;
        cr_assert_eq(im.x[i], io_pixel_to_model((uint8_t)(v * 17), 8), "gray4 px %d", i);
    }
    io_images_free(&im);
    /* 8-bit RGB with a transparent colour */
    uint8_t rgb[45];
    for (int i = 0; i < 45; ++i) rgb[i] = (uint8_t)(i * 5);
    png_color_16 tc = {.red = 0, .green = 5, .blue = 10};
    write_png_trns(tp("rgb_trns.png"), w, h, 8, PNG_COLOR_TYPE_RGB, rgb, (size_t)w * 3, NULL, 0, NULL, 0, &tc);
    cr_assert_eq(io_read_input(tp("rgb_trns.png"), 8, 3, &im, err, sizeof err), 0, "%s", err);
    for (int i = 0; i < 15; ++i)
        for (int ch = 0; ch < 3; ++ch) cr_assert_eq(im.x[ch * 15 + i], io_pixel_to_model(rgb[3 * i + ch], 8));
    io_images_free(&im);
    cr_assert_stderr_eq_str("");
}

Test(write, grid_png, .init = setup, .fini = teardown)
{
    char err[512];
    int n = 5, c = 3, h = 4, w = 4;
    float *x = malloc(sizeof(float) * (size_t)(n * c * h * w));
    for (int s = 0; s < n; ++s)
        for (int i = 0; i < c * h * w; ++i) x[s * c * h * w + i] = io_pixel_to_model((uint8_t)(10 + 40 * s + i), 8);
    cr_assert_eq(io_write_images(tp("grid.png"), x, n, c, h, w, 8, err, sizeof err), 0, "%s", err);
    io_images im;
    cr_assert_eq(io_read_input(tp("grid.png"), 8, 3, &im, err, sizeof err), 0, "%s", err);
    /* cols = ceil(sqrt(5)) = 3, rows = 2, gap 2 */
    cr_assert_eq(im.w, 3 * 4 + 2 * 2);
    cr_assert_eq(im.h, 2 * 4 + 2);
    int64_t W = im.w, H = im.h;
    float black = io_pixel_to_model(0, 8);
    for (int s = 0; s < n; ++s) {
        int r = s / 3, q = s % 3;
        for (int ch = 0; ch < c; ++ch)
            for (int y = 0; y < h; ++y)
                for (int xx = 0; xx < w; ++xx)
                    cr_assert_eq(im.x[(ch * H + r * 6 + y) * W + q * 6 + xx], x[((s * c + ch) * h + y) * w + xx]);
    }
    /* gaps and the empty 6th cell are black */
    for (int ch = 0; ch < 3; ++ch) {
        for (int y = 0; y < H; ++y) {
            cr_assert_eq(im.x[(ch * H + y) * W + 4], black);
            cr_assert_eq(im.x[(ch * H + y) * W + 5], black);
        }
        cr_assert_eq(im.x[(ch * H + 9) * W + 15], black);
    }
    io_images_free(&im);
    /* grid as JPEG works too */
    cr_assert_eq(io_write_images(tp("grid.jpg"), x, n, c, h, w, 8, err, sizeof err), 0, "%s", err);
    cr_assert_eq(io_read_input(tp("grid.jpg"), 8, 3, &im, err, sizeof err), 0, "%s", err);
    cr_assert_eq(im.w, 16);
    io_images_free(&im);
    free(x);
}

/* io_check_image_output refuses exactly what io_write_images refuses, with
 * its message, without writing anything (the CLI runs it before computing). */
Test(write, check_matches_write, .init = setup, .fini = teardown)
{
    const struct {
        const char *name;
        int64_t n, c, h, w;
        int n_bits, ok;
    } cases[] = {
        {"wide.png", 2, 1, 2, 8192, 8, 0},      /* grid 16386 wide */
        {"wide.JPG", 2, 3, 2, 8192, 8, 0},
        {"tall.png", 3, 1, 8191, 2, 8, 1},      /* 2 x 2 cells: 16384 tall, the limit: fits */
        {"tall.jpeg", 7, 1, 8191, 2, 8, 0},     /* 3 x 3 cells: 24577 tall */
        {"two.png", 1, 2, 4, 4, 8, 0},          /* 2 channels: no image format */
        {"two.npy", 1, 2, 4, 4, 8, 1},          /* ... but an array is fine */
        {"bits.png", 1, 1, 4, 4, 9, 0},
        {"none.png", 0, 1, 4, 4, 8, 0},
        {"none.npy", 0, 1, 4, 4, 8, 0},
        {"fits.png", 4, 1, 8191, 8191, 8, 1},   /* 2 x 2 cells of 8191 and a 2-pixel gap: 16384 square */
    };
    float *x = calloc((size_t)7 * 8191 * 2, sizeof(float));   /* the largest refused case */
    cr_assert_not_null(x);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; ++i) {
        char e1[512] = "", e2[512] = "";
        const char *p = tp(cases[i].name);
        int r1 = io_check_image_output(p, cases[i].n, cases[i].c, cases[i].h, cases[i].w, cases[i].n_bits, e1, sizeof e1);
        cr_assert(!file_exists(p), "%s: the check wrote a file", p);
        cr_assert_eq(r1 == 0, cases[i].ok, "%s: check says %d: %s", p, r1, e1);
        if (cases[i].ok) continue;
        ASSERT_IO_ERR(r1, e1, p);
        int r2 = io_write_images(p, x, cases[i].n, cases[i].c, cases[i].h, cases[i].w, cases[i].n_bits, e2, sizeof e2);
        cr_assert_neq(r2, 0, "%s: written", p);
        cr_assert_str_eq(e1, e2);
        cr_assert(!file_exists(p));
    }
    char err[512];
    cr_assert_neq(io_check_image_output(tp("wide.png"), 2, 1, 2, 8192, 8, err, sizeof err), 0);
    cr_assert_not_null(strstr(err, "grid of 2 samples would be 16386x2 (max 16384x16384)"), "%s", err);
    free(x);
}

Test(write, directory_output_and_listing, .init = setup, .fini = teardown)
{
    char err[512];
    int n = 3, c = 1, h = 2, w = 3;
    float x[18];
    for (int i = 0; i < 18; ++i) x[i] = io_pixel_to_model((uint8_t)(i * 14), 8);
    const char *variants[3] = {tp("out/"), tp("deep/er/samples"), tmpdir /* existing dir */};
    for (int v = 0; v < 3; ++v) {
        cr_assert_eq(io_write_images(variants[v], x, n, c, h, w, 8, err, sizeof err), 0, "%s", err);
        char **list;
        size_t cnt;
        cr_assert_eq(io_list_inputs(variants[v], &list, &cnt, err, sizeof err), 0, "%s", err);
        cr_assert_eq(cnt, 3);
        for (size_t i = 0; i < cnt; ++i) {
            char name[32];
            snprintf(name, sizeof name, "%06zu.png", i);
            size_t L = strlen(list[i]);
            cr_assert(L > 11 && strcmp(list[i] + L - 10, name) == 0, "%s", list[i]);
            cr_assert_eq(list[i][L - 11], '/');
            cr_assert_null(strstr(list[i], "//"), "%s", list[i]);
            io_images im;
            cr_assert_eq(io_read_input(list[i], 8, 1, &im, err, sizeof err), 0, "%s", err);
            cr_assert_eq(memcmp(im.x, x + i * 6, sizeof(float) * 6), 0);
            io_images_free(&im);
        }
        io_free_list(list, cnt);
    }
    /* image output needs 1 or 3 channels */
    float y[2 * 2 * 2] = {0};
    int rc = io_write_images(tp("two.png"), y, 1, 2, 2, 2, 8, err, sizeof err);
    ASSERT_IO_ERR(rc, err, tp("two.png"));
    cr_assert(!file_exists(tp("two.png")));
    /* directory output that cannot be created (a file is in the way) */
    write_bytes(tp("afile"), "x", 1);
    rc = io_write_images(tp("afile/sub/"), x, n, c, h, w, 8, err, sizeof err);
    ASSERT_IO_ERR(rc, err, tp("afile/sub/"));
    /* write into a missing directory: fails cleanly, leaves no tmp file */
    rc = io_write_images(tp("nodir/x.png"), x, 1, 1, 2, 3, 8, err, sizeof err);
    ASSERT_IO_ERR(rc, err, tp("nodir/x.png"));
}

Test(list, order_and_filter, .init = setup, .fini = teardown)
{
    const char *names[] = {"b.PNG", "a.jpg", "10.npy", "2.npy", "c.txt", ".hidden.png", "z.JpEg", "noext"};
    for (size_t i = 0; i < sizeof names / sizeof *names; ++i) write_bytes(tp(names[i]), "x", 1);
    cr_assert_eq(mkdir(tp("d.png"), 0777), 0);   /* a directory with an image name is skipped */
    /* a dangling link and a fifo are listed (they then fail with a reason,
     * not silently, and the fifo without waiting for a writer) */
    cr_assert_eq(symlink("nowhere", tp("e.png")), 0);
    cr_assert_eq(mkfifo(tp("f.png"), 0600), 0);
    char err[512], **list;
    size_t cnt;
    cr_assert_eq(io_list_inputs(tmpdir, &list, &cnt, err, sizeof err), 0, "%s", err);
    const char *want[] = {"10.npy", "2.npy", "a.jpg", "b.PNG", "e.png", "f.png", "z.JpEg"};
    cr_assert_eq(cnt, 7);
    io_images fim;
    cr_assert_neq(io_read_input(tp("f.png"), 8, 1, &fim, err, sizeof err), 0);
    cr_assert_not_null(strstr(err, "not a regular file"), "%s", err);
    for (size_t i = 0; i < cnt; ++i) cr_assert_str_eq(list[i], tp(want[i]));
    io_free_list(list, cnt);
    /* trailing slash: no double slash */
    char withslash[300];
    snprintf(withslash, sizeof withslash, "%s/", tmpdir);
    cr_assert_eq(io_list_inputs(withslash, &list, &cnt, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(list[0], tp("10.npy"));
    io_free_list(list, cnt);
    /* a plain file is itself, whatever its name */
    cr_assert_eq(io_list_inputs(tp("noext"), &list, &cnt, err, sizeof err), 0, "%s", err);
    cr_assert_eq(cnt, 1);
    cr_assert_str_eq(list[0], tp("noext"));
    io_free_list(list, cnt);
    /* missing path, empty directory */
    int rc = io_list_inputs(tp("missing"), &list, &cnt, err, sizeof err);
    ASSERT_IO_ERR(rc, err, tp("missing"));
    cr_assert_eq(mkdir(tp("empty"), 0777), 0);
    rc = io_list_inputs(tp("empty"), &list, &cnt, err, sizeof err);
    ASSERT_IO_ERR(rc, err, tp("empty"));
    cr_assert_null(list);
    cr_assert_eq(cnt, 0);
}

/* ------------------------------------------------------------------------ */
/* hostile inputs                                                            */

static uint8_t *valid_png(size_t *n)
{
    char err[512];
    int h = 24, w = 24;
    uint8_t *pix = random_pixels((size_t)(h * w * 3), 7);
    float *x = model_from_pixels(pix, 3, h, w, 8);
    cr_assert_eq(io_write_images(tp("valid.png"), x, 1, 3, h, w, 8, err, sizeof err), 0, "%s", err);
    free(x);
    free(pix);
    return read_bytes(tp("valid.png"), n);
}

static size_t find_chunk(const uint8_t *b, size_t n, const char *type)
{
    size_t off = 8;
    while (off + 12 <= n) {
        uint32_t len = (uint32_t)b[off] << 24 | (uint32_t)b[off + 1] << 16 | (uint32_t)b[off + 2] << 8 | b[off + 3];
        if (memcmp(b + off + 4, type, 4) == 0) return off;
        off += 12 + len;
    }
    cr_assert_fail("chunk %s not found", type);
    return 0;
}

static void fix_crc(uint8_t *b, size_t chunk_off)
{
    uint32_t len = (uint32_t)b[chunk_off] << 24 | (uint32_t)b[chunk_off + 1] << 16 | (uint32_t)b[chunk_off + 2] << 8 |
                   b[chunk_off + 3];
    uint32_t crc = (uint32_t)crc32(0L, b + chunk_off + 4, len + 4);
    uint8_t *q = b + chunk_off + 8 + len;
    q[0] = (uint8_t)(crc >> 24); q[1] = (uint8_t)(crc >> 16); q[2] = (uint8_t)(crc >> 8); q[3] = (uint8_t)crc;
}

Test(hostile, png_truncated, .init = setup_quiet, .fini = teardown)
{
    size_t n;
    uint8_t *b = valid_png(&n);
    size_t offs[] = {1, 4, 7, 8, 12, 20, 30, 33, 40, 50, n / 2, n - 20, n - 13, n - 12, n - 5, n - 1};
    for (size_t i = 0; i < sizeof offs / sizeof *offs; ++i) {
        char name[64];
        snprintf(name, sizeof name, "trunc_%zu.png", offs[i]);
        write_bytes(tp(name), b, offs[i]);
        expect_input_error(tp(name), 8, 3);
    }
    free(b);
    cr_assert_stderr_eq_str("");
    cr_assert_stdout_eq_str("");
}

Test(hostile, png_corrupt, .init = setup_quiet, .fini = teardown)
{
    size_t n;
    uint8_t *b = valid_png(&n);
    size_t idat = find_chunk(b, n, "IDAT");
    uint8_t *m = malloc(n);

    /* 1. wrong CRC on IDAT */
    memcpy(m, b, n);
    uint32_t len = (uint32_t)m[idat] << 24 | (uint32_t)m[idat + 1] << 16 | (uint32_t)m[idat + 2] << 8 | m[idat + 3];
    m[idat + 8 + len] ^= 0x55;
    write_bytes(tp("badcrc.png"), m, n);
    expect_input_error(tp("badcrc.png"), 8, 3);

    /* 2. corrupted IDAT data, CRC left stale */
    memcpy(m, b, n);
    for (size_t k = 0; k < 16; ++k) m[idat + 8 + len / 2 + k] ^= 0xA5;
    write_bytes(tp("badidat.png"), m, n);
    expect_input_error(tp("badidat.png"), 8, 3);

    /* 3. corrupted zlib stream with a CORRECT CRC (decompression error) */
    memcpy(m, b, n);
    m[idat + 8] = 0x00;   /* invalid zlib header (CMF) */
    m[idat + 9] = 0x00;
    fix_crc(m, idat);
    write_bytes(tp("badzlib.png"), m, n);
    expect_input_error(tp("badzlib.png"), 8, 3);

    memcpy(m, b, n);
    for (size_t k = 2; k < len; k += 3) m[idat + 8 + k] = 0xff;   /* garbage deflate, valid CRC */
    fix_crc(m, idat);
    write_bytes(tp("baddeflate.png"), m, n);
    expect_input_error(tp("baddeflate.png"), 8, 3);

    /* 4. IHDR claims a huge image (CRC fixed): refused before allocating */
    size_t ihdr = find_chunk(b, n, "IHDR");
    uint32_t dims[][2] = {{16000, 16000}, {16385, 10}, {10, 100000}, {0, 10}, {0x7fffffff, 0x7fffffff}};
    for (size_t d = 0; d < sizeof dims / sizeof *dims; ++d) {
        memcpy(m, b, n);
        for (int k = 0; k < 4; ++k) {
            m[ihdr + 8 + k] = (uint8_t)(dims[d][0] >> (24 - 8 * k));
            m[ihdr + 12 + k] = (uint8_t)(dims[d][1] >> (24 - 8 * k));
        }
        fix_crc(m, ihdr);
        char name[64];
        snprintf(name, sizeof name, "huge_%zu.png", d);
        write_bytes(tp(name), m, n);
        expect_input_error(tp(name), 8, 3);
    }

    /* 5. garbage after the signature, wrong-extension garbage */
    memcpy(m, b, 8);
    for (size_t k = 8; k < 200; ++k) m[k] = (uint8_t)(k * 31 + 7);
    write_bytes(tp("garbage.png"), m, 200);
    expect_input_error(tp("garbage.png"), 8, 3);
    write_bytes(tp("text.png"), "hello world, not a png", 22);
    char err[512];
    io_images im;
    int rc = io_read_input(tp("text.png"), 8, 3, &im, err, sizeof err);
    ASSERT_IO_ERR(rc, err, tp("text.png"));
    cr_assert_not_null(strstr(err, "not a PNG file"), "%s", err);
    free(m);
    free(b);
    cr_assert_stderr_eq_str("");
    cr_assert_stdout_eq_str("");
}

Test(hostile, jpeg_truncated_and_garbage, .init = setup_quiet, .fini = teardown)
{
    char err[512];
    int h = 48, w = 48;
    uint8_t *pix = random_pixels((size_t)(h * w * 3), 3);
    float *x = model_from_pixels(pix, 3, h, w, 8);
    cr_assert_eq(io_write_images(tp("ok.jpg"), x, 1, 3, h, w, 8, err, sizeof err), 0, "%s", err);
    free(x);
    free(pix);
    size_t n;
    uint8_t *b = read_bytes(tp("ok.jpg"), &n);
    io_images im;
    cr_assert_eq(io_read_input(tp("ok.jpg"), 8, 3, &im, err, sizeof err), 0, "%s", err);
    io_images_free(&im);
    size_t offs[] = {1, 2, 3, 4, 10, 100, 300, n / 2, n - 100, n - 3, n - 2, n - 1};
    for (size_t i = 0; i < sizeof offs / sizeof *offs; ++i) {
        char name[64];
        snprintf(name, sizeof name, "trunc_%zu.jpg", offs[i]);
        write_bytes(tp(name), b, offs[i]);
        expect_input_error(tp(name), 8, 3);
    }
    /* garbage after SOI */
    uint8_t g[4096];
    memcpy(g, "\xff\xd8\xff", 3);
    for (size_t k = 3; k < sizeof g; ++k) g[k] = (uint8_t)((k * 2654435761u) >> 13);
    write_bytes(tp("garbage.jpg"), g, sizeof g);
    expect_input_error(tp("garbage.jpg"), 8, 3);
    /* valid headers, scan data replaced by garbage up to the end */
    uint8_t *m = malloc(n);
    memcpy(m, b, n);
    size_t sos = 0;
    for (size_t k = 2; k + 1 < n; ++k)
        if (m[k] == 0xff && m[k + 1] == 0xda) { sos = k; break; }
    cr_assert_gt(sos, 0);
    for (size_t k = sos + 20; k < n; ++k) m[k] = 0xff;
    write_bytes(tp("badscan.jpg"), m, n);
    expect_input_error(tp("badscan.jpg"), 8, 3);
    free(m);
    free(b);
    cr_assert_stderr_eq_str("");
    cr_assert_stdout_eq_str("");
}

/* A JPEG header written by hand: SOI, a frame header (SOFn) of precision
 * prec, 8x8, the given components (id, sampling HV, table), a scan header
 * (SOS) over them, a few bytes of scan data, EOI. Enough for libjpeg to read
 * the header and refuse what it cannot decode. */
static size_t tiny_jpeg(uint8_t *b, uint8_t sof, uint8_t prec, int nc, const uint8_t (*comp)[3])
{
    size_t n = 0;
    b[n++] = 0xff; b[n++] = 0xd8;
    b[n++] = 0xff; b[n++] = sof;
    b[n++] = 0; b[n++] = (uint8_t)(8 + 3 * nc);
    b[n++] = prec;
    b[n++] = 0; b[n++] = 8; b[n++] = 0; b[n++] = 8;   /* height, width */
    b[n++] = (uint8_t)nc;
    for (int i = 0; i < nc; ++i) { b[n++] = comp[i][0]; b[n++] = comp[i][1]; b[n++] = comp[i][2]; }
    b[n++] = 0xff; b[n++] = 0xda;
    b[n++] = 0; b[n++] = (uint8_t)(6 + 2 * nc);
    b[n++] = (uint8_t)nc;
    for (int i = 0; i < nc; ++i) { b[n++] = comp[i][0]; b[n++] = 0; }
    b[n++] = 0; b[n++] = 63; b[n++] = 0;
    for (int i = 0; i < 16; ++i) b[n++] = 0;
    b[n++] = 0xff; b[n++] = 0xd9;
    return n;
}

/* A JPEG that uses a feature libjpeg-turbo cannot decode is "unsupported",
 * not "corrupt"; a damaged one is still "corrupt". */
Test(hostile, jpeg_unsupported_not_corrupt, .init = setup_quiet, .fini = teardown)
{
    static const uint8_t gray[1][3] = {{1, 0x11, 0}};
    static const uint8_t odd_sampling[3][3] = {{1, 0x13, 0}, {2, 0x11, 0}, {3, 0x11, 0}};   /* luma 1x3 */
    const struct {
        const char *name;
        uint8_t sof, prec;
        int nc;
        const uint8_t (*comp)[3];
    } cases[] = {
        {"12bit.jpg", 0xc1, 12, 1, gray},             /* extended sequential, 12-bit samples */
        {"12bit_baseline.jpg", 0xc0, 12, 1, gray},
        {"lossless.jpg", 0xc3, 8, 1, gray},           /* SOF3: lossless */
        {"hierarchical.jpg", 0xc5, 8, 1, gray},       /* SOF5: differential sequential */
        {"sampling.jpg", 0xc0, 8, 3, odd_sampling},   /* sampling TurboJPEG has no name for */
    };
    uint8_t b[128];
    char err[512];
    io_images im;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; ++i) {
        size_t n = tiny_jpeg(b, cases[i].sof, cases[i].prec, cases[i].nc, cases[i].comp);
        write_bytes(tp(cases[i].name), b, n);
        memset(err, 0, sizeof err);
        int rc = io_read_input(tp(cases[i].name), 8, 3, &im, err, sizeof err);
        ASSERT_IO_ERR(rc, err, tp(cases[i].name));
        cr_assert_not_null(strstr(err, ": unsupported JPEG: "), "%s", err);
        cr_assert_null(strstr(err, "corrupt"), "%s", err);
    }
    /* real damage: a frame header cut short, garbage where a marker should be */
    size_t n = tiny_jpeg(b, 0xc0, 8, 1, gray);
    write_bytes(tp("cut.jpg"), b, 9);
    b[2 + 13] = 0x12;   /* the SOS marker's 0xff */
    write_bytes(tp("nomarker.jpg"), b, n);
    const char *bad[] = {"cut.jpg", "nomarker.jpg"};
    for (size_t i = 0; i < 2; ++i) {
        memset(err, 0, sizeof err);
        int rc = io_read_input(tp(bad[i]), 8, 3, &im, err, sizeof err);
        ASSERT_IO_ERR(rc, err, tp(bad[i]));
        cr_assert_not_null(strstr(err, "corrupt"), "%s", err);
        cr_assert_null(strstr(err, "unsupported JPEG"), "%s", err);
    }
    cr_assert_stderr_eq_str("");
    cr_assert_stdout_eq_str("");
}

Test(hostile, misc_files, .init = setup, .fini = teardown)
{
    write_bytes(tp("empty.png"), "", 0);
    expect_input_error(tp("empty.png"), 8, 3);
    write_bytes(tp("empty.npy"), "", 0);
    expect_input_error(tp("empty.npy"), 8, 3);
    write_bytes(tp("notes.txt"), "just some text\n", 15);
    expect_input_error(tp("notes.txt"), 8, 3);
    expect_input_error(tp("does_not_exist.png"), 8, 3);
    expect_input_error(tmpdir, 8, 3);   /* a directory */
    /* bad arguments still name the file */
    uint8_t px[4] = {1, 2, 3, 4};
    write_npy_raw(tp("ok.npy"), 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (1, 2, 2), }", 1, px, 4);
    expect_input_error(tp("ok.npy"), 0, 1);
    expect_input_error(tp("ok.npy"), 9, 1);
    expect_input_error(tp("ok.npy"), 8, 0);
    /* tiny err buffer: no overflow, still terminated */
    char small[8];
    io_images im;
    cr_assert_neq(io_read_input(tp("notes.txt"), 8, 3, &im, small, sizeof small), 0);
    cr_assert_eq(strlen(small), 7);
    cr_assert_neq(io_read_input(tp("notes.txt"), 8, 3, &im, NULL, 0), 0);
}

Test(hostile, npy_headers, .init = setup, .fini = teardown)
{
    float f4[6] = {0};
    double f8big[6] = {0.1, 0.2, 1e300, 0, 0, 0}, f8nan[6] = {0, 0, 0, 0, NAN, 0};
    struct {
        const char *name;
        int major;
        const char *dict;
        int term;
        const void *data;
        size_t len;
    } cases[] = {
        {"f8big.npy", 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1, 2, 3), }", 1, f8big, sizeof f8big},
        {"f8nan.npy", 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1, 2, 3), }", 1, f8nan, sizeof f8nan},
        {"f8short.npy", 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1, 2, 3), }", 1, f8big, 40},
        {"bigend.npy", 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (1, 1, 2, 3), }", 1, f4, sizeof f4},
        {"i4.npy", 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (1, 1, 2, 3), }", 1, f4, sizeof f4},
        {"fortran.npy", 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 1, 2, 3), }", 1, f4, sizeof f4},
        {"ndim2.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 1, f4, sizeof f4},
        {"ndim5.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 2, 3), }", 1, f4, sizeof f4},
        {"u8ndim2.npy", 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3), }", 1, f4, 6},
        {"u8c2.npy", 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (1, 1, 3, 2), }", 1, f4, 6},
        {"short.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 4, 3), }", 1, f4, sizeof f4},
        {"long.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 3), }", 1, f4, sizeof f4},
        {"huge.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4611686018427387904, 1, 1), }", 1, f4, sizeof f4},
        {"huge2.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 65536, 65536), }", 1, f4, sizeof f4},
        {"huge3.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999, 1, 1, 1), }", 1, f4, sizeof f4},
        {"huge4.npy", 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (3037000500, 3037000500, 1), }", 1, f4, sizeof f4},
        {"noterm.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 2, 3), }", 0, f4, sizeof f4},
        {"v4.npy", 4, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 2, 3), }", 1, f4, sizeof f4},
        {"missing.npy", 1, "{'descr': '<f4', 'shape': (1, 1, 2, 3), }", 1, f4, sizeof f4},
        {"extra.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 2, 3), 'x': 1}", 1, f4, sizeof f4},
        {"dup.npy", 1, "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 2, 3)}", 1, f4, sizeof f4},
        {"struct.npy", 1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1, 1, 2, 3), }", 1, f4, sizeof f4},
        {"negdim.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, -2, 3), }", 1, f4, sizeof f4},
        {"notuple.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (6), }", 1, f4, sizeof f4},
        {"list.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': [1, 1, 2, 3], }", 1, f4, sizeof f4},
        {"unclosed.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 2, 3), ", 1, f4, sizeof f4},
        {"junk.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 2, 3), } x", 1, f4, sizeof f4},
        {"nodict.npy", 1, "descr", 1, f4, sizeof f4},
        {"empty_hdr.npy", 1, "", 0, f4, sizeof f4},
        {"nan_hdr.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 2, 3), }\n\n", 1, f4, sizeof f4},
        {"zero.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 1, 2, 3), }", 1, f4, 0},
        {"quote.npy", 1, "{'descr: '<f4', 'fortran_order': False, 'shape': (1, 1, 2, 3), }", 1, f4, sizeof f4},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; ++i) {
        write_npy_raw(tp(cases[i].name), cases[i].major, cases[i].dict, cases[i].term, cases[i].data, cases[i].len);
        expect_input_error(tp(cases[i].name), 8, 1);
    }

    /* wrong magic, truncated preamble, header length beyond the file */
    uint8_t b[256];
    size_t n = build_npy(b, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", 1, f4, 4);
    b[1] = 'X';
    write_bytes(tp("magic.npy"), b, n);
    expect_input_error(tp("magic.npy"), 8, 1);
    write_bytes(tp("pre.npy"), "\x93NUMPY\x01", 7);
    expect_input_error(tp("pre.npy"), 8, 1);
    write_bytes(tp("pre2.npy"), "\x93NUMPY\x01\x00\x40", 9);
    expect_input_error(tp("pre2.npy"), 8, 1);
    write_bytes(tp("hlen.npy"), "\x93NUMPY\x01\x00\xff\xff{}", 12);
    expect_input_error(tp("hlen.npy"), 8, 1);
    write_bytes(tp("hlen2.npy"), "\x93NUMPY\x02\x00\xff\xff\xff\x7f{}", 14);
    expect_input_error(tp("hlen2.npy"), 8, 1);
    /* non-finite float data */
    float bad[2] = {1.0f, NAN};
    write_npy_raw(tp("nan.npy"), 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 2), }", 1, bad,
                  sizeof bad);
    expect_input_error(tp("nan.npy"), 8, 1);

    /* io_read_npy_f32 on the same kind of junk */
    const char *lat_bad[] = {"f8big.npy", "f8nan.npy", "f8short.npy", "bigend.npy", "fortran.npy", "ndim5.npy", "short.npy", "huge.npy",
                             "noterm.npy", "magic.npy", "u8ndim2.npy", "nan.npy"};
    for (size_t i = 0; i < sizeof lat_bad / sizeof *lat_bad; ++i) {
        char err[512];
        float *x = (float *)1;
        int nd;
        int64_t sh[4];
        int rc = io_read_npy_f32(tp(lat_bad[i]), &x, &nd, sh, err, sizeof err);
        ASSERT_IO_ERR(rc, err, tp(lat_bad[i]));
        cr_assert_null(x);
    }
    /* the dtype message says what is wrong, and what would do */
    char err[512];
    io_images im;
    io_read_input(tp("i4.npy"), 8, 1, &im, err, sizeof err);
    cr_assert_not_null(strstr(err, "<i4"), "%s", err);
    cr_assert_not_null(strstr(err, "<f8"), "%s", err);
    io_read_input(tp("f8big.npy"), 8, 1, &im, err, sizeof err);
    cr_assert_not_null(strstr(err, "float32's range"), "%s", err);
}

/* float64 arrays (numpy's default dtype) read as their float32 rounding */
Test(io, npy_float64, .init = setup, .fini = teardown)
{
    double v[6] = {0.1, -0.25, 1.0 / 3.0, 0.49999999999, -0.5, 1e-40};
    write_npy_raw(tp("f8.npy"), 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1, 2, 3), }", 1, v,
                  sizeof v);
    io_images im;
    char err[512];
    cr_assert_eq(io_read_input(tp("f8.npy"), 8, 1, &im, err, sizeof err), 0, "%s", err);
    cr_assert(im.n == 1 && im.c == 1 && im.h == 2 && im.w == 3);
    for (int i = 0; i < 6; ++i) cr_assert_eq(im.x[i], (float)v[i], "element %d", i);
    io_images_free(&im);
    float *x = NULL;
    int nd;
    int64_t sh[4];
    cr_assert_eq(io_read_npy_f32(tp("f8.npy"), &x, &nd, sh, err, sizeof err), 0, "%s", err);
    cr_assert(nd == 4 && sh[2] == 2 && sh[3] == 3);
    for (int i = 0; i < 6; ++i) cr_assert_eq(x[i], (float)v[i], "element %d", i);
    free(x);
}

/* idx3-ubyte files (raw and gzipped) are inputs like any other: what glowrt
 * encode, interp and manipulate read through io_read_input */
Test(io, idx_input, .init = setup, .fini = teardown)
{
    const int n = 2, h = 3, w = 4;
    uint8_t file[16 + 24];
    const uint8_t hdr[16] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4};
    memcpy(file, hdr, 16);
    for (int i = 0; i < n * h * w; ++i) file[16 + i] = (uint8_t)(i * 11);
    write_bytes(tp("raw-idx3-ubyte"), file, sizeof file);
    gzFile gz = gzopen(tp("gz-idx3-ubyte.gz"), "wb");
    cr_assert_not_null(gz);
    cr_assert_eq(gzwrite(gz, file, sizeof file), (int)sizeof file);
    cr_assert_eq(gzclose(gz), Z_OK);
    const char *paths[2] = {tp("raw-idx3-ubyte"), tp("gz-idx3-ubyte.gz")};
    char err[512];
    for (int k = 0; k < 2; ++k)
        for (int c = 1; c <= 3; c += 2) {
            io_images im;
            cr_assert_eq(io_read_input(paths[k], 5, c, &im, err, sizeof err), 0, "%s", err);
            cr_assert(im.n == n && im.c == c && im.h == h && im.w == w);
            for (int i = 0; i < n; ++i)
                for (int ch = 0; ch < c; ++ch)
                    for (int j = 0; j < h * w; ++j)
                        cr_assert_eq(im.x[(i * c + ch) * h * w + j], io_pixel_to_model(file[16 + i * h * w + j], 5));
            io_images_free(&im);
        }
    /* an idx1 (labels) file is not images; a truncated idx3 says so */
    const uint8_t labels[9] = {0, 0, 8, 1, 0, 0, 0, 1, 7};
    write_bytes(tp("labels-idx1-ubyte"), labels, sizeof labels);
    expect_input_error(tp("labels-idx1-ubyte"), 8, 1);
    write_bytes(tp("short-idx3-ubyte"), file, sizeof file - 1);
    expect_input_error(tp("short-idx3-ubyte"), 8, 1);
    io_images im;
    io_read_input(tp("short-idx3-ubyte"), 8, 1, &im, err, sizeof err);
    cr_assert_not_null(strstr(err, "truncated"), "%s", err);
    write_bytes(tp("c4-idx3-ubyte"), file, sizeof file);
    expect_input_error(tp("c4-idx3-ubyte"), 8, 4);
}
