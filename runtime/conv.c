#include "conv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include <pthread.h>

#include "glowrt.h"
#include "kernels/kernels.h"

/* Memory objects and a stream for each thread that may run the primitive:
 * setting data handles is not thread-safe on shared memory objects. */
typedef struct {
    dnnl_stream_t stream;
    dnnl_memory_t src, wei, bias, dst, scratch;
} conv_slot;

struct gt_conv {
    int cin, cout, k, h, w, relu, accumulate;
    /* Where oneDNN has only its scalar reference code (aarch64 without the
     * Arm Compute Library), the kernel table's convolution runs instead. */
    const gt_kernels *own;
    dnnl_memory_desc_t wei_md;
    dnnl_engine_t engine;
    dnnl_primitive_t pack;  /* plain -> packed weights, made on first use */
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    size_t scratch_size;
    int n_slots;
    conv_slot *slots;
};

#define CHECK(call, what)                                                                            \
    do {                                                                                             \
        dnnl_status_t st_ = (call);                                                                  \
        if (st_ != dnnl_success) {                                                                   \
            snprintf(err, GLOWRT_ERR_LEN, "oneDNN: %s failed (status %d)", what, (int)st_);         \
            goto fail;                                                                               \
        }                                                                                            \
    } while (0)

/* The kernel table whose convolution runs a plain convolution for which
 * oneDNN has only its scalar reference code: on aarch64 (Debian's oneDNN,
 * without the Arm Compute Library), unless GLOWRT_ONEDNN_CONV is set, the
 * table in use (neon; ref under GLOWRT_ISA=ref); NULL elsewhere. */
static const gt_kernels *own_conv_table(void) {
#if defined(__aarch64__)
    const char *why;
    return getenv("GLOWRT_ONEDNN_CONV") ? NULL : kernels_select(&why);
#else
    return NULL;
#endif
}

/* One engine for the process: oneDNN's primitive cache is keyed by engine,
 * so sessions and ops of one shape share their JIT-compiled code. */
static dnnl_engine_t g_engine;
static dnnl_status_t g_engine_status = dnnl_runtime_error;
static pthread_once_t g_engine_once = PTHREAD_ONCE_INIT;
static void make_engine(void) { g_engine_status = dnnl_engine_create(&g_engine, dnnl_cpu, 0); }

int conv_block(void) {
    const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    if (isa == dnnl_cpu_isa_avx512_core || isa == dnnl_cpu_isa_avx512_core_vnni ||
        isa == dnnl_cpu_isa_avx512_core_bf16 || isa == dnnl_cpu_isa_avx512_core_amx)
        return 16;
    if (isa == dnnl_cpu_isa_avx2 || isa == dnnl_cpu_isa_avx2_vnni) return 8;
    return 0;
}

static int create(int cin, int cout, int h, int w, int k, int relu, int src_blocked, int dst_blocked, int accumulate,
                  int any_weights, int n_threads, gt_conv **out, char *err) {
    gt_conv *c = calloc(1, sizeof *c);
    const int saved_threads = omp_get_max_threads();
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    *out = NULL;
    if (!c) {
        snprintf(err, GLOWRT_ERR_LEN, "out of memory");
        return 1;
    }
    c->cin = cin;
    c->cout = cout;
    c->k = k;
    c->h = h;
    c->w = w;
    c->relu = relu;
    c->accumulate = accumulate;
    const int B = conv_block();
    const dnnl_format_tag_t blocked = B == 16 ? dnnl_nChw16c : dnnl_nChw8c;
    if ((src_blocked || dst_blocked) && !B) {
        snprintf(err, GLOWRT_ERR_LEN, "internal: no blocked layout on this CPU");
        goto fail;
    }
    pthread_once(&g_engine_once, make_engine);
    CHECK(g_engine_status, "engine");
    c->engine = g_engine;
    dnnl_memory_desc_t src_md, wei_md, bias_md, dst_md;
    const dnnl_dims_t src_dims = {1, cin, h, w}, dst_dims = {1, cout, h, w}, wei_dims = {cout, cin, k, k};
    const dnnl_dims_t bias_dims = {cout}, strides = {1, 1}, pad = {k / 2, k / 2};
    CHECK(dnnl_memory_desc_init_by_tag(&src_md, 4, src_dims, dnnl_f32, src_blocked ? blocked : dnnl_nchw), "src desc");
    CHECK(dnnl_memory_desc_init_by_tag(&dst_md, 4, dst_dims, dnnl_f32, dst_blocked ? blocked : dnnl_nchw), "dst desc");
    /* Plain weights are used in place, straight from the mapped model. */
    CHECK(dnnl_memory_desc_init_by_tag(&wei_md, 4, wei_dims, dnnl_f32, any_weights ? dnnl_format_tag_any : dnnl_oihw),
          "weights desc");
    CHECK(dnnl_memory_desc_init_by_tag(&bias_md, 1, bias_dims, dnnl_f32, dnnl_x), "bias desc");
    dnnl_convolution_desc_t cd;
    CHECK(dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct, &src_md, &wei_md,
                                             &bias_md, &dst_md, strides, pad, pad),
          "convolution desc");
    CHECK(dnnl_primitive_attr_create(&attr), "attr");
    CHECK(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user), "scratchpad mode");
    if (relu || accumulate) {
        CHECK(dnnl_post_ops_create(&po), "post-ops");
        if (accumulate) CHECK(dnnl_post_ops_append_sum(po, 1.0f), "sum post-op");
        if (relu) CHECK(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f), "relu post-op");
        CHECK(dnnl_primitive_attr_set_post_ops(attr, po), "set post-ops");
    }
    /* Created for one thread: each call runs single-threaded (the session
     * spreads whole convolutions or output-channel chunks over threads), so
     * the arithmetic, and so the result, never depends on the thread count. */
    omp_set_num_threads(1);
    CHECK(dnnl_primitive_desc_create(&c->pd, &cd, attr, c->engine, NULL), "convolution primitive desc");
    const char *impl = conv_impl(c);
    if (!src_blocked && !dst_blocked && (!strncmp(impl, "gemm:ref", 8) || !strncmp(impl, "ref", 3)))
        c->own = own_conv_table();
    if (!c->own) CHECK(dnnl_primitive_create(&c->prim, c->pd), "convolution primitive");
    omp_set_num_threads(saved_threads);
    c->wei_md = *dnnl_primitive_desc_query_md(c->pd, dnnl_query_weights_md, 0);
    wei_md = c->wei_md;
    const dnnl_memory_desc_t *scratch_md = dnnl_primitive_desc_query_md(c->pd, dnnl_query_scratchpad_md, 0);
    c->scratch_size = c->own ? gt_conv_scratch_bytes(cin, h, w, k)
                             : scratch_md ? dnnl_memory_desc_get_size(scratch_md) : 0;
    c->n_slots = n_threads;
    c->slots = c->own ? NULL : calloc((size_t)n_threads, sizeof *c->slots);
    if (!c->own && !c->slots) {
        snprintf(err, GLOWRT_ERR_LEN, "out of memory");
        goto fail;
    }
    for (int t = 0; !c->own && t < n_threads; t++) {
        conv_slot *sl = &c->slots[t];
        CHECK(dnnl_stream_create(&sl->stream, c->engine, dnnl_stream_default_flags), "stream");
        CHECK(dnnl_memory_create(&sl->src, &src_md, c->engine, DNNL_MEMORY_NONE), "src memory");
        CHECK(dnnl_memory_create(&sl->dst, &dst_md, c->engine, DNNL_MEMORY_NONE), "dst memory");
        CHECK(dnnl_memory_create(&sl->wei, &wei_md, c->engine, DNNL_MEMORY_NONE), "weights memory");
        CHECK(dnnl_memory_create(&sl->bias, &bias_md, c->engine, DNNL_MEMORY_NONE), "bias memory");
        if (scratch_md && c->scratch_size)
            CHECK(dnnl_memory_create(&sl->scratch, scratch_md, c->engine, DNNL_MEMORY_NONE), "scratchpad memory");
    }
    *out = c;
    if (po) dnnl_post_ops_destroy(po);
    dnnl_primitive_attr_destroy(attr);
    return 0;
fail:
    omp_set_num_threads(saved_threads);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    conv_free(c);
    return 1;
}

size_t conv_scratch_size(const gt_conv *c) { return c->scratch_size; }

int conv_run(gt_conv *c, int tid, const float *src, const float *weights, const float *bias, float *dst, void *scratch,
             char *err) {
    if (tid < 0 || tid >= c->n_slots) {
        snprintf(err, GLOWRT_ERR_LEN, "internal: convolution run on thread %d of %d", tid, c->n_slots);
        return 1;
    }
    if (c->own) {
        c->own->conv(src, weights, bias, dst, c->cin, c->cout, c->h, c->w, c->k, c->relu, c->accumulate, scratch);
        return 0;
    }
    conv_slot *sl = &c->slots[tid];
    /* oneDNN only reads src, weights and bias: the casts drop const for its API. */
    CHECK(dnnl_memory_set_data_handle(sl->src, (void *)src), "set src");
    CHECK(dnnl_memory_set_data_handle(sl->wei, (void *)weights), "set weights");
    CHECK(dnnl_memory_set_data_handle(sl->bias, (void *)bias), "set bias");
    CHECK(dnnl_memory_set_data_handle(sl->dst, dst), "set dst");
    dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, sl->src},
                               {DNNL_ARG_WEIGHTS, sl->wei},
                               {DNNL_ARG_BIAS, sl->bias},
                               {DNNL_ARG_DST, sl->dst},
                               {DNNL_ARG_SCRATCHPAD, sl->scratch}};
    int nargs = 4;
    if (sl->scratch) {
        CHECK(dnnl_memory_set_data_handle(sl->scratch, scratch), "set scratchpad");
        nargs = 5;
    }
    /* Outside a parallel region oneDNN would still open a team for small
     * chores (zero-padding the blocked output): keep the call on this thread. */
    const int saved_threads = omp_get_max_threads();
    omp_set_num_threads(1);
    const dnnl_status_t st = dnnl_primitive_execute(c->prim, sl->stream, nargs, args);
    omp_set_num_threads(saved_threads);
    CHECK(st, "convolution");
    CHECK(dnnl_stream_wait(sl->stream), "stream wait");
    return 0;
fail:
    return 1;
}

const char *conv_describe(void) {
    if (getenv("GLOWRT_PLAIN_CONV")) return "oneDNN GEMM-based convolutions, plain layout (GLOWRT_PLAIN_CONV)";
    switch (conv_block()) {
    case 16: return "oneDNN JIT convolutions, blocked layout nChw16c (AVX-512)";
    case 8: return "oneDNN JIT convolutions, blocked layout nChw8c (AVX2)";
    default: {
        /* the convolution create() picks (own_conv_table) */
        const gt_kernels *k = own_conv_table();
        if (!k)
            return getenv("GLOWRT_ONEDNN_CONV") ? "oneDNN convolutions, plain layout (GLOWRT_ONEDNN_CONV)"
                                                : "oneDNN convolutions, plain layout";
        return k->conv == gt_conv_ref
                   ? "glowrt reference convolutions (plain loops) where oneDNN has only reference code, plain layout"
                   : "glowrt GEMM convolutions (NEON) where oneDNN has only reference code, plain layout";
    }
    }
}

int conv_create(int cin, int cout, int h, int w, int k, int relu, int n_threads, gt_conv **out, char *err) {
    return create(cin, cout, h, w, k, relu, 0, 0, 0, 0, n_threads, out, err);
}

int conv_create_blocked(int cin, int cout, int h, int w, int k, int relu, int src_blocked, int dst_blocked,
                        int accumulate, int n_threads, gt_conv **out, char *err) {
    return create(cin, cout, h, w, k, relu, src_blocked, dst_blocked, accumulate, 1, n_threads, out, err);
}

size_t conv_packed_size(const gt_conv *c) {
    return c->own ? gt_conv_packed_bytes(c->cin, c->cout, c->k) : dnnl_memory_desc_get_size(&c->wei_md);
}

int conv_plain_packs(const gt_conv *c) { return c->own != NULL; }

int conv_pack_weights(gt_conv *c, const float *weights, void *packed, char *err) {
    if (c->own) {
        gt_conv_pack(weights, c->cin, c->cout, c->k, packed);
        return 0;
    }
    dnnl_memory_desc_t plain_md;
    dnnl_memory_t from = NULL, to = NULL;
    dnnl_primitive_desc_t rpd = NULL;
    dnnl_stream_t stream = NULL;
    int rc = 1;
    /* Small reorders: a thread team costs more than it saves, and oneDNN
     * fixes a primitive's thread count when it creates it. */
    const int saved_threads = omp_get_max_threads();
    omp_set_num_threads(1);
    const dnnl_dims_t dims = {c->cout, c->cin, c->k, c->k};
    CHECK(dnnl_memory_desc_init_by_tag(&plain_md, 4, dims, dnnl_f32, dnnl_oihw), "weights desc");
    if (!c->pack) {
        CHECK(dnnl_reorder_primitive_desc_create(&rpd, &plain_md, c->engine, &c->wei_md, c->engine, NULL),
              "reorder desc");
        CHECK(dnnl_primitive_create(&c->pack, rpd), "reorder");
    }
    CHECK(dnnl_memory_create(&from, &plain_md, c->engine, (void *)weights), "weights memory");
    CHECK(dnnl_memory_create(&to, &c->wei_md, c->engine, packed), "packed weights memory");
    CHECK(dnnl_stream_create(&stream, c->engine, dnnl_stream_default_flags), "stream");
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    CHECK(dnnl_primitive_execute(c->pack, stream, 2, args), "weights reorder");
    CHECK(dnnl_stream_wait(stream), "stream wait");
    rc = 0;
fail:
    omp_set_num_threads(saved_threads);
    if (stream) dnnl_stream_destroy(stream);
    if (rpd) dnnl_primitive_desc_destroy(rpd);
    if (to) dnnl_memory_destroy(to);
    if (from) dnnl_memory_destroy(from);
    return rc;
}

const char *conv_impl(const gt_conv *c) {
    if (c && c->own) return !strcmp(c->own->name, "ref") ? "glowrt:conv_ref" : "glowrt:conv_neon";
    const char *s = "?";
    if (c && c->pd) dnnl_primitive_desc_query(c->pd, dnnl_query_impl_info_str, 0, &s);
    return s;
}

void conv_free(gt_conv *c) {
    if (!c) return;
    for (int t = 0; c->slots && t < c->n_slots; t++) {
        conv_slot *sl = &c->slots[t];
        if (sl->src) dnnl_memory_destroy(sl->src);
        if (sl->dst) dnnl_memory_destroy(sl->dst);
        if (sl->wei) dnnl_memory_destroy(sl->wei);
        if (sl->bias) dnnl_memory_destroy(sl->bias);
        if (sl->scratch) dnnl_memory_destroy(sl->scratch);
        if (sl->stream) dnnl_stream_destroy(sl->stream);
    }
    free(c->slots);
    if (c->prim) dnnl_primitive_destroy(c->prim);
    if (c->pd) dnnl_primitive_desc_destroy(c->pd);
    if (c->pack) dnnl_primitive_destroy(c->pack);
    free(c);
}
