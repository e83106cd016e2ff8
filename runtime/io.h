/* glowrt input/output: .npy arrays, PNG and JPEG images <-> model space.
 *
 * Model space (docs: /work/shared/GLOW_REFERENCE.md section 1):
 *   pixels u in 0..255; u' = floor(u / 2^(8 - n_bits)); n_bins = 2^n_bits;
 *   x = u' / n_bins - 0.5 + 0.5 / n_bins          (bin centre, deterministic)
 *   back: u = clip(floor((x + 0.5) * n_bins) * (256 / n_bins), 0, 255)
 *   (NaN maps to 0).
 *
 * Channel conversion (pixel inputs only: PNG, JPEG, uint8 .npy):
 *   model_c == 1, RGB input -> luma, ITU-R BT.601 in libjpeg's fixed point:
 *       Y = (19595 R + 38470 G + 7471 B + 32768) >> 16
 *     (= round(0.299 R + 0.587 G + 0.114 B)), computed on 8-bit pixels before
 *     the n_bits quantisation.
 *   model_c == 3, gray input -> gray replicated into R, G, B.
 *   Alpha (PNG gray+alpha / RGBA, uint8 .npy with 4 channels) is dropped
 *   (no compositing). PNG tRNS is ignored, palettes are expanded, 16-bit
 *   samples are scaled to 8 bits (png_set_scale_16), gamma is not touched.
 *   Any other channel mismatch is an error.
 *
 * Errors: every function returns 0 on success and non-zero on error; on error
 * a single line "<path>: <problem>" (no newline) is written into err (if err
 * is non-NULL and errlen > 0). Nothing is printed to stdout/stderr.
 *
 * Limits: images at most IO_MAX_DIM x IO_MAX_DIM pixels (input and written
 * output, grids included); arrays at most IO_MAX_ELEMS elements (also the cap
 * on the float output of io_read_input); image files at most IO_MAX_FILE_BYTES
 * bytes. Sizes claimed by headers are checked (overflow-safe) against the
 * caps and against the real file size before anything is allocated.
 *
 * Writes are atomic: data go to "<path>.tmp", are fsync'ed, then rename()d
 * onto <path>; on failure the temporary file is removed.
 *
 * Host must be little-endian (checked at compile time).
 * Thread-safety: no global state; distinct calls may run concurrently.
 */
#ifndef GLOWRT_IO_H
#define GLOWRT_IO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define IO_MAX_DIM 16384                      /* max image width / height */
#define IO_MAX_ELEMS ((int64_t)1 << 30)       /* max array elements (4 GiB of f32) */
#define IO_MAX_FILE_BYTES ((int64_t)1 << 30)  /* max PNG/JPEG file size */
#define IO_MAX_NPY_HEADER 65536               /* max .npy header length */
#define IO_MAX_NDIM 8                         /* max ndim for io_write_npy_f32 */

typedef struct {
    float *x;              /* [n, c, h, w], malloc'ed, model-space floats */
    int64_t n, c, h, w;
} io_images;

/* Read one model input file. Format chosen by content (magic bytes):
 *   .npy <f4 or <f8, C order, shape [N,C,H,W]: used as is (no quantisation;
 *        float64 rounded to float32), C must equal model_c; values must be
 *        finite (and within float32's range).
 *   .npy |u1 (or <u1), shape [N,H,W] (gray) or [N,H,W,C] with C in {1,3,4}:
 *        pixels -> model space.
 *   PNG (1/2/4/8/16-bit gray, gray+alpha, RGB, RGBA, palette; interlaced ok)
 *   and JPEG (gray, YCbCr/RGB; CMYK refused; what libjpeg-turbo cannot
 *   decode, 12-bit or lossless, is "unsupported JPEG", damage "corrupt
 *   JPEG"): one image, n = 1.
 *   idx3-ubyte, raw or gzipped (io_read_idx_u8): gray pixels [N,H,W].
 * n_bits must be 1..8 (checked for every format); model_c must be >= 1
 * (1 or 3 for pixel inputs). On success *out owns out->x (io_images_free). */
int io_read_input(const char *path, int n_bits, int model_c, io_images *out,
                  char *err, size_t errlen);

void io_images_free(io_images *im);   /* frees im->x, zeroes *im; NULL ok */

/* Read a float32 or float64 (<f4 / <f8, C order) .npy with 1..4 dims
 * (latents [N, D]) as float32.
 * *data is malloc'ed (free()); shape[i] for i >= *ndim is set to 1.
 * Values must be finite. */
int io_read_npy_f32(const char *path, float **data, int *ndim,
                    int64_t shape[4], char *err, size_t errlen);

/* Write a float32 .npy (format 1.0, <f4, C order, header padded to 64
 * bytes). ndim 0..IO_MAX_NDIM, every dim >= 0. Atomic. */
int io_write_npy_f32(const char *path, const float *data, int ndim,
                     const int64_t *shape, char *err, size_t errlen);

/* Write model-space samples x [n, c, h, w]:
 *   path is an existing directory, ends in '/', or has no .npy/.png/.jpg/
 *   .jpeg extension -> directory (created with parents if missing) holding
 *   000000.png, 000001.png, ... (one per sample);
 *   *.npy -> float32 [n,c,h,w] as is (n_bits unused);
 *   *.png / *.jpg / *.jpeg -> one image if n == 1, else a grid: cols =
 *   ceil(sqrt(n)), rows = ceil(n / cols), 2-pixel black gaps, row-major
 *   order; JPEG quality 95, 4:4:4 (gray JPEG for c == 1).
 * Extensions are case-insensitive. For images c must be 1 or 3 and n_bits
 * 1..8. Every file is written atomically. */
int io_write_images(const char *path, const float *x, int64_t n, int64_t c,
                    int64_t h, int64_t w, int n_bits, char *err,
                    size_t errlen);

/* What io_write_images(path, x, n, c, h, w, n_bits) would refuse without
 * writing: the shape (invalid, or over IO_MAX_ELEMS values), and for image
 * outputs the channels, n_bits, and an image or grid over IO_MAX_DIM a side;
 * the same message. For callers that can check before computing x.
 * io_write_images runs it first. */
int io_check_image_output(const char *path, int64_t n, int64_t c, int64_t h,
                          int64_t w, int n_bits, char *err, size_t errlen);

/* Expand an input argument: a directory -> its regular files with extension
 * .png .jpg .jpeg .npy (case-insensitive), non-recursive, hidden (dot) files
 * skipped, sorted by name (strcmp byte order), as "<dir>/<name>"; an empty
 * match is an error. Anything else that exists -> a list of one: itself.
 * Free with io_free_list. */
int io_list_inputs(const char *path, char ***paths, size_t *count, char *err,
                   size_t errlen);
void io_free_list(char **paths, size_t count);

/* idx-ubyte image files (the MNIST / Fashion-MNIST format), gzipped or not
 * (zlib reads either): big-endian magic 0x00000803, then N, H, W as
 * big-endian uint32, then N*H*W pixel bytes, nothing more. Every dimension
 * must be >= 1, H and W at most IO_MAX_DIM, N*H*W at most IO_MAX_ELEMS; the
 * data must be exactly N*H*W bytes (a short or a longer file is an error).
 * Memory grows with the bytes really read, never with what the header claims.
 * io_is_idx: 1 when the file (after gunzip) starts with the idx3 magic. */
int io_is_idx(const char *path);
/* 1 when the file is a regular file starting with the .npy magic. */
int io_is_npy(const char *path);

/* 1 when path exists and is not a regular file (a device, a pipe, a
 * terminal), or is a symbolic link (/dev/stdout): outputs there are written
 * directly, never through a temporary file renamed over it (which would
 * replace the node or the link). */
int io_not_regular(const char *path);

/* Opens path for reading if it is a regular file; a fifo, a device or a
 * directory is refused without blocking. io_open_fd: a descriptor, or -1
 * with err set; io_open_file: a FILE, or NULL. *size: the file's size
 * (size may be NULL). */
int io_open_fd(const char *path, int64_t *size, char *err, size_t errlen);
FILE *io_open_file(const char *path, int64_t *size, char *err, size_t errlen);

/* Atomic writer: open gives f, writing <path>.tmp that commit fsyncs and
 * renames over path (abort removes it); straight into path (tmp NULL) where
 * io_not_regular(path). Both return 0, or non-zero with err set. */
typedef struct {
    FILE *f;
    char *tmp;
} io_afile;
int io_afile_open(io_afile *a, const char *path, char *err, size_t errlen);
int io_afile_commit(io_afile *a, const char *path, char *err, size_t errlen);
void io_afile_abort(io_afile *a);
/* Reads only the header: *n, *h, *w. */
int io_read_idx_header(const char *path, int64_t *n, int64_t *h, int64_t *w,
                       char *err, size_t errlen);
/* *pix: malloc'ed uint8 [n, h, w] (free()). */
int io_read_idx_u8(const char *path, uint8_t **pix, int64_t *n, int64_t *h,
                   int64_t *w, char *err, size_t errlen);

/* Writes "<path>: <message>" into err (one line: newlines become spaces)
 * and returns -1: the error convention of this module, shared by the
 * readers built on it (idx.c, anomaly.c). */
#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
int io_error(char *err, size_t errlen, const char *path, const char *fmt, ...);

/* Conversions, exposed for tests and callers that hold raw pixels. */
float io_pixel_to_model(uint8_t u, int n_bits);
uint8_t io_model_to_pixel(float x, int n_bits);
uint8_t io_rgb_to_luma(uint8_t r, uint8_t g, uint8_t b);

#ifdef __cplusplus
}
#endif
#endif /* GLOWRT_IO_H */
