/* glowrt: run Glow-family normalizing flows (Glow, RealNVP affine coupling,
 * NICE additive coupling) exactly on CPUs, from an ahead-of-time .glow file.
 *
 * A model is loaded once (read-only, mmap'ed, validated) and is immutable: it
 * can be shared by several sessions in several threads. A session owns the
 * scratch memory and the convolution primitives for one batch size and image
 * size; use one session per thread.
 *
 * Every function that can fail returns 0 on success and non-zero on failure,
 * with a one-line message (no newline) written into err[GLOWRT_ERR_LEN]. */
#ifndef GLOWRT_H
#define GLOWRT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GLOWRT_VERSION "0.1.0"
#define GLOWRT_ERR_LEN 512

typedef struct glowrt_model glowrt_model;
typedef struct glowrt_session glowrt_session;

/* What a model is, as its file says. */
typedef struct {
    int in_channels;          /* C of the input image */
    int height, width;        /* default image size */
    int n_bits;               /* bits per pixel the model was trained on */
    int n_levels;             /* number of squeezes */
    int n_steps;              /* flow steps in all (AFFINE + COUPLING pairs) */
    int64_t n_params;         /* float parameters in the file */
} glowrt_info;

/* Load and validate a .glow file. Tensor CRCs are not checked here (one pass
 * over the whole file): call glowrt_model_verify for that. */
int glowrt_model_load(const char *path, glowrt_model **model, char *err);
void glowrt_model_free(glowrt_model *model);
int glowrt_model_verify(const glowrt_model *model, char *err);
void glowrt_model_info(const glowrt_model *model, glowrt_info *info);
/* Print the architecture, level shapes, FLOPs and metadata for H x W images. */
void glowrt_model_describe(const glowrt_model *model, int height, int width, void *file /* FILE* */);

/* Number of latent dimensions (= C*H*W) at image size H x W. */
int64_t glowrt_dim(const glowrt_model *model, int height, int width);
/* Checks that H x W can run (positive, divisible by 2^levels). */
int glowrt_check_size(const glowrt_model *model, int height, int width, char *err);

/* A session for up to max_batch images of H x W (0, 0: the model's default
 * size). threads <= 0: all cores. Results do not depend on max_batch or
 * threads: they are bit-identical for any of them. */
int glowrt_session_create(const glowrt_model *model, int max_batch, int height, int width,
                          int threads, glowrt_session **session, char *err);
void glowrt_session_free(glowrt_session *session);

/* x: n images [n, C, H, W] in model space (n <= max_batch).
 * log_p[i] = log p(z) + logdet in nats at x_i (the exact continuous density);
 * -inf or NaN where float32 overflows (inputs far outside model space).
 * encode also writes eps [n, D] (standardised latents, finest level first),
 * and fails, naming the image, when some eps is not finite. decode and
 * sample fail the same way when some output is not finite (latents far from
 * the prior). */
int glowrt_log_prob(glowrt_session *s, const float *x, int n, double *log_p, char *err);
int glowrt_encode(glowrt_session *s, const float *x, int n, float *eps, double *log_p, char *err);
/* eps [n, D] -> x [n, C, H, W]; the exact inverse of encode. */
int glowrt_decode(glowrt_session *s, const float *eps, int n, float *x, char *err);
/* Draw n samples at temperature temp; sample k of the batch is sample number
 * first_index + k of the stream keyed by seed, whatever the batch or threads. */
int glowrt_sample(glowrt_session *s, uint64_t seed, uint64_t first_index, int n, float temp,
                  float *x, char *err);
/* The noise of glowrt_sample: eps[k][j] = standard normal keyed by
 * (seed, first_index + k, j), times temp. */
void glowrt_sample_noise(uint64_t seed, uint64_t first_index, int n, int64_t dim, float temp,
                         float *eps);

/* Profiling: on = 1 starts (and zeroes) per-op timers; print writes the time
 * per op kind and convolution shape since then, largest first. */
int glowrt_session_profile(glowrt_session *s, int on);
void glowrt_session_profile_print(const glowrt_session *s, void *file /* FILE* */);

/* FLOPs per image per direction at H x W (2 per multiply-add). */
double glowrt_flops(const glowrt_model *model, int height, int width);

/* bits per dimension of the discrete image from log_p at dimension D. */
double glowrt_bpd(double log_p, int64_t dim, int n_bits);

/* Pixels <-> model space, as the CLI maps images (for callers that decode
 * images themselves). pixels_to_model: n images of h x w pixels with cin
 * interleaved channels (1, 3, or 4 with alpha ignored) -> x [n, model_c, h, w],
 * model_c 1 or 3 (RGB -> BT.601 luma in libjpeg's fixed point; grey repeated),
 * x = floor(u / 2^(8 - n_bits)) / 2^n_bits - 0.5 + 0.5 / 2^n_bits.
 * model_to_pixels: x [n, c, h, w] -> pixels [n, h, w, c] interleaved,
 * u = floor((x + 0.5) 2^n_bits) 2^(8 - n_bits) clamped to 0..255 (NaN -> 0).
 * Both return 1 with err set on arguments out of range (n < 0, h or w < 1, a channel
 * count or n_bits not listed, n*h*w*channels beyond the address space, a NULL buffer
 * when there is a pixel). */
int glowrt_pixels_to_model(const uint8_t *pixels, int64_t n, int64_t h, int64_t w, int cin, int model_c,
                           int n_bits, float *x, char *err);
int glowrt_model_to_pixels(const float *x, int64_t n, int c, int64_t h, int64_t w, int n_bits, uint8_t *pixels,
                           char *err);

/* Name of the kernel set in use ("ref", "avx2", "neon"), or, when none can
 * run (a GLOWRT_ISA this CPU or build lacks), why. */
const char *glowrt_isa(void);

#ifdef __cplusplus
}
#endif
#endif
