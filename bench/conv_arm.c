/* bench_conv_arm: one plain convolution, run R times, by oneDNN (its own
 * choice of implementation, single-threaded: gemm:ref on Debian's aarch64
 * build) or by the kernel table's gt_kernels.conv (glowrt's NEON GEMM on
 * aarch64). bench/arm-conv-insns runs it under qemu and counts the guest
 * instructions of the R calls (no ARM hardware was at hand for timings).
 *
 *   build/bench/bench_conv_arm onednn|glowrt CIN COUT H W K [R]
 *
 * Prints the implementation and the sum of the outputs (the two must agree
 * to rounding), so that neither run can be optimised away. */
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

#define CHECK(call)                                                   \
    do {                                                              \
        if ((call) != dnnl_success) {                                 \
            fprintf(stderr, "bench_conv_arm: %s failed\n", #call);   \
            exit(2);                                                  \
        }                                                             \
    } while (0)

static void run_onednn(int cin, int cout, int h, int w, int k, int reps, const float *x, const float *wt,
                       const float *b, float *y) {
    dnnl_engine_t eng;
    CHECK(dnnl_engine_create(&eng, dnnl_cpu, 0));
    dnnl_memory_desc_t src, wei, bias, dst;
    const dnnl_dims_t sd = {1, cin, h, w}, dd = {1, cout, h, w}, wd = {cout, cin, k, k}, bd = {cout};
    const dnnl_dims_t strides = {1, 1}, pad = {k / 2, k / 2};
    CHECK(dnnl_memory_desc_init_by_tag(&src, 4, sd, dnnl_f32, dnnl_nchw));
    CHECK(dnnl_memory_desc_init_by_tag(&dst, 4, dd, dnnl_f32, dnnl_nchw));
    CHECK(dnnl_memory_desc_init_by_tag(&wei, 4, wd, dnnl_f32, dnnl_oihw));
    CHECK(dnnl_memory_desc_init_by_tag(&bias, 1, bd, dnnl_f32, dnnl_x));
    dnnl_convolution_desc_t cd;
    CHECK(dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct, &src, &wei, &bias,
                                             &dst, strides, pad, pad));
    dnnl_primitive_attr_t attr;
    dnnl_post_ops_t po;
    CHECK(dnnl_primitive_attr_create(&attr));
    CHECK(dnnl_post_ops_create(&po));
    CHECK(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f));
    CHECK(dnnl_primitive_attr_set_post_ops(attr, po));
    dnnl_primitive_desc_t pd;
    CHECK(dnnl_primitive_desc_create(&pd, &cd, attr, eng, NULL));
    const char *impl;
    CHECK(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl));
    printf("impl       oneDNN %s\n", impl);
    dnnl_primitive_t prim;
    CHECK(dnnl_primitive_create(&prim, pd));
    dnnl_memory_t ms, mw, mb, md, mscr = NULL;
    CHECK(dnnl_memory_create(&ms, &src, eng, (void *)x));
    CHECK(dnnl_memory_create(&mw, &wei, eng, (void *)wt));
    CHECK(dnnl_memory_create(&mb, &bias, eng, (void *)b));
    CHECK(dnnl_memory_create(&md, &dst, eng, y));
    const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    if (smd && dnnl_memory_desc_get_size(smd)) CHECK(dnnl_memory_create(&mscr, smd, eng, DNNL_MEMORY_ALLOCATE));
    dnnl_stream_t st;
    CHECK(dnnl_stream_create(&st, eng, dnnl_stream_default_flags));
    dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_BIAS, mb}, {DNNL_ARG_DST, md},
                               {DNNL_ARG_SCRATCHPAD, mscr}};
    for (int r = 0; r < reps; r++) CHECK(dnnl_primitive_execute(prim, st, mscr ? 5 : 4, args));
    CHECK(dnnl_stream_wait(st));
}

int main(int argc, char **argv) {
    if (argc < 7 || (strcmp(argv[1], "onednn") && strcmp(argv[1], "glowrt"))) {
        fprintf(stderr, "usage: bench_conv_arm onednn|glowrt CIN COUT H W K [REPEATS]\n");
        return 2;
    }
    const int cin = atoi(argv[2]), cout = atoi(argv[3]), h = atoi(argv[4]), w = atoi(argv[5]), k = atoi(argv[6]);
    const int reps = argc > 7 ? atoi(argv[7]) : 1;
    if (cin < 1 || cout < 1 || h < 1 || w < 1 || (k != 1 && k != 3) || reps < 0) {
        fprintf(stderr, "bench_conv_arm: bad shape\n");
        return 2;
    }
    omp_set_num_threads(1);
    const size_t nx = (size_t)cin * h * w, nw = (size_t)cout * cin * k * k, ny = (size_t)cout * h * w;
    float *x = malloc(nx * sizeof(float)), *wt = malloc(nw * sizeof(float)), *b = malloc(cout * sizeof(float));
    float *y = calloc(ny, sizeof(float));
    unsigned s = 12345;
    for (size_t i = 0; i < nx; i++) x[i] = (float)((s = s * 1103515245u + 12345u) >> 8) * 0x1p-24f - 0.5f;
    for (size_t i = 0; i < nw; i++) wt[i] = (float)((s = s * 1103515245u + 12345u) >> 8) * 0x1p-24f - 0.5f;
    for (int i = 0; i < cout; i++) b[i] = 0.01f * (float)i;
    if (!strcmp(argv[1], "onednn")) {
        run_onednn(cin, cout, h, w, k, reps, x, wt, b, y);
    } else {
        const char *why;
        const gt_kernels *kt = kernels_select(&why);
        if (!kt) {
            fprintf(stderr, "bench_conv_arm: %s\n", why);
            return 2;
        }
        void *scratch = malloc(gt_conv_scratch_bytes(cin, h, w, k));
        float *packed = malloc(gt_conv_packed_bytes(cin, cout, k));
        gt_conv_pack(wt, cin, cout, k, packed);  /* once, as the session does */
        printf("impl       glowrt %s (gt_kernels.conv of table %s)\n", kt->conv == gt_conv_ref ? "conv_ref" : "SIMD",
               kt->name);
        for (int r = 0; r < reps; r++) kt->conv(x, packed, b, y, cin, cout, h, w, k, 1, 0, scratch);
        free(scratch);
        free(packed);
    }
    double sum = 0;
    for (size_t i = 0; i < ny; i++) sum += y[i];
    printf("checksum   %.6g\n", sum);
    printf("MACs/call  %.0f\n", (double)nw * h * w);
    free(x); free(wt); free(b); free(y);
    return 0;
}
