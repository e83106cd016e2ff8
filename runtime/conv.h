/* The coupling and prior convolutions, on oneDNN; where oneDNN has only its
 * scalar reference code for a plain convolution (aarch64 without the Arm
 * Compute Library), on the kernel table's (gt_kernels.conv, NEON). Every
 * dnnl.h call of the project is in conv.c, so that a port to oneDNN's v3 API
 * touches one file. */
#ifndef GLOWRT_CONV_H
#define GLOWRT_CONV_H
#include <stddef.h>

typedef struct gt_conv gt_conv;

/* A k x k convolution (k = 1 or 3, stride 1, zero padding k/2) of one image
 * [cin][h][w] -> [cout][h][w], with bias, optionally followed by ReLU.
 * The primitive is created once; weights [cout][cin][k][k] (packed with
 * conv_pack_weights where conv_plain_packs says so) and bias are given per
 * call and used in place (no copy). Each call runs on the calling thread
 * alone; threads 0..n_threads-1 may call it concurrently, each with its own
 * tid and its own scratch buffer of conv_scratch_size bytes. */
int conv_create(int cin, int cout, int h, int w, int k, int relu, int n_threads, gt_conv **out, char *err);

/* The channel block of oneDNN's fastest activation layout on this CPU
 * (nChw16c: 16, nChw8c: 8), or 0 where there is none. A blocked tensor of C
 * channels is [ceil(C/B)][H][W][B] floats, the padding channels zero. */
int conv_block(void);

/* As conv_create, with src and/or dst in the blocked layout, and weights in
 * whatever layout oneDNN prefers (prepare them with conv_pack_weights).
 * accumulate: dst += the convolution (before the ReLU), not dst = . */
int conv_create_blocked(int cin, int cout, int h, int w, int k, int relu, int src_blocked, int dst_blocked,
                        int accumulate, int n_threads, gt_conv **out, char *err);
/* Bytes of packed weights, and the packing of plain [cout][cin][k][k] ones. */
size_t conv_packed_size(const gt_conv *c);
/* True when a plain convolution (conv_create) also takes its weights packed:
 * glowrt's own (gt_kernels.conv), which packs them into 8-output panels. */
int conv_plain_packs(const gt_conv *c);
int conv_pack_weights(gt_conv *c, const float *weights, void *packed, char *err);
size_t conv_scratch_size(const gt_conv *c);
int conv_run(gt_conv *c, int tid, const float *src, const float *weights, const float *bias, float *dst, void *scratch,
             char *err);
void conv_free(gt_conv *c);
/* One line on how the convolutions run on this CPU, for glowrt info. */
const char *conv_describe(void);
/* oneDNN's name for the implementation it chose. */
const char *conv_impl(const gt_conv *c);
#endif
