/* bench_winograd: oneDNN's f32 Winograd against its direct convolution for
 * the 3x3 layers of the cifar Glow (bench/README.md, "Why the ratio targets
 * are out of reach"), one thread, blocked layout, weights packed once.
 *
 *   build/bench_winograd [--repeats R]
 *
 * Channel counts are those of the model padded to multiples of 16 (what
 * oneDNN's Winograd needs): 512 -> 12 runs as 512 -> 16, and so on. Prints
 * microseconds per call (best of 5 timings of R calls) and the GFLOP/s of
 * the direct convolution's work, with the implementation oneDNN chose.
 * Pin it to one core (taskset -c 1) on a shared machine. */
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#define CHECK(call)                                                                  \
    do {                                                                             \
        if ((call) != dnnl_success) {                                                \
            fprintf(stderr, "bench_winograd: %s failed\n", #call);                  \
            exit(2);                                                                 \
        }                                                                            \
    } while (0)

/* Microseconds per call of a 3x3 cin -> cout convolution at hw x hw, or -1
 * where oneDNN has no such implementation; *impl gets its name. */
static double time_conv(dnnl_engine_t eng, int cin, int cout, int hw, dnnl_alg_kind_t alg, int repeats,
                        const char **impl) {
    dnnl_memory_desc_t src, wei, bias, dst;
    const dnnl_dims_t sd = {1, cin, hw, hw}, dd = {1, cout, hw, hw}, wd = {cout, cin, 3, 3}, bd = {cout};
    const dnnl_dims_t strides = {1, 1}, pad = {1, 1};
    CHECK(dnnl_memory_desc_init_by_tag(&src, 4, sd, dnnl_f32, dnnl_nChw16c));
    CHECK(dnnl_memory_desc_init_by_tag(&dst, 4, dd, dnnl_f32, dnnl_nChw16c));
    CHECK(dnnl_memory_desc_init_by_tag(&wei, 4, wd, dnnl_f32, dnnl_format_tag_any));
    CHECK(dnnl_memory_desc_init_by_tag(&bias, 1, bd, dnnl_f32, dnnl_x));
    dnnl_convolution_desc_t cd;
    CHECK(dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference, alg, &src, &wei, &bias, &dst, strides, pad,
                                             pad));
    dnnl_primitive_desc_t pd;
    if (dnnl_primitive_desc_create(&pd, &cd, NULL, eng, NULL) != dnnl_success) {
        *impl = "none";
        return -1;
    }
    CHECK(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, impl));
    dnnl_primitive_t prim;
    CHECK(dnnl_primitive_create(&prim, pd));
    const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    dnnl_memory_t ms, mw, mb, md;
    CHECK(dnnl_memory_create(&ms, &src, eng, DNNL_MEMORY_ALLOCATE));
    CHECK(dnnl_memory_create(&mw, wmd, eng, DNNL_MEMORY_ALLOCATE));
    CHECK(dnnl_memory_create(&mb, &bias, eng, DNNL_MEMORY_ALLOCATE));
    CHECK(dnnl_memory_create(&md, &dst, eng, DNNL_MEMORY_ALLOCATE));
    dnnl_stream_t stream;
    CHECK(dnnl_stream_create(&stream, eng, dnnl_stream_default_flags));
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_BIAS, mb}, {DNNL_ARG_DST, md}};
    CHECK(dnnl_primitive_execute(prim, stream, 4, args));  /* warm-up */
    CHECK(dnnl_stream_wait(stream));
    double best = 1e30;
    for (int t = 0; t < 5; t++) {
        const double t0 = now();
        for (int i = 0; i < repeats; i++) CHECK(dnnl_primitive_execute(prim, stream, 4, args));
        CHECK(dnnl_stream_wait(stream));
        const double us = 1e6 * (now() - t0) / repeats;
        if (us < best) best = us;
    }
    dnnl_stream_destroy(stream);
    dnnl_memory_destroy(ms);
    dnnl_memory_destroy(mw);
    dnnl_memory_destroy(mb);
    dnnl_memory_destroy(md);
    dnnl_primitive_destroy(prim);
    dnnl_primitive_desc_destroy(pd);
    return best;
}

int main(int argc, char **argv) {
    int repeats = 200;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--repeats") && i + 1 < argc) {
            repeats = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: bench_winograd [--repeats R]\n");
            return 2;
        }
    }
    if (repeats < 1) {
        fprintf(stderr, "bench_winograd: --repeats must be >= 1\n");
        return 2;
    }
    omp_set_num_threads(1);  /* one thread, as glowrt runs each convolution */
    dnnl_engine_t eng;
    CHECK(dnnl_engine_create(&eng, dnnl_cpu, 0));
    /* cin, cout, image side: the cifar model's narrow 3x3 layers, padded to 16 */
    static const int shapes[][3] = {{512, 16, 16}, {512, 32, 8}, {512, 48, 4}, {16, 512, 16}, {16, 512, 8},
                                    {32, 512, 4}};
    printf("%-22s %12s %12s %9s  %s / %s\n", "3x3 layer", "direct us", "winograd us", "speed-up", "direct impl",
           "winograd impl");
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
        const int cin = shapes[k][0], cout = shapes[k][1], hw = shapes[k][2];
        const char *di, *wi;
        const double d = time_conv(eng, cin, cout, hw, dnnl_convolution_direct, repeats, &di);
        const double w = time_conv(eng, cin, cout, hw, dnnl_convolution_winograd, repeats, &wi);
        char name[32];
        snprintf(name, sizeof name, "%d -> %d at %dx%d", cin, cout, hw, hw);
        if (w < 0)
            printf("%-22s %12.1f %12s %9s  %s / %s\n", name, d, "-", "-", di, wi);
        else
            printf("%-22s %12.1f %12.1f %8.2fx  %s / %s\n", name, d, w, d / w, di, wi);
    }
    dnnl_engine_destroy(eng);
    return 0;
}
