#include "conv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>

#include "glowrt.h"

struct gt_conv {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    dnnl_memory_t src, wei, bias, dst;
};

#define CHECK(call, what)                                                                            \
    do {                                                                                             \
        dnnl_status_t st_ = (call);                                                                  \
        if (st_ != dnnl_success) {                                                                   \
            snprintf(err, GLOWRT_ERR_LEN, "oneDNN: %s failed (status %d)", what, (int)st_);         \
            goto fail;                                                                               \
        }                                                                                            \
    } while (0)

int conv_create(int cin, int cout, int h, int w, int k, int relu, gt_conv **out, char *err) {
    gt_conv *c = calloc(1, sizeof *c);
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    *out = NULL;
    if (!c) {
        snprintf(err, GLOWRT_ERR_LEN, "out of memory");
        return 1;
    }
    CHECK(dnnl_engine_create(&c->engine, dnnl_cpu, 0), "engine");
    CHECK(dnnl_stream_create(&c->stream, c->engine, dnnl_stream_default_flags), "stream");
    dnnl_memory_desc_t src_md, wei_md, bias_md, dst_md;
    const dnnl_dims_t src_dims = {1, cin, h, w}, dst_dims = {1, cout, h, w}, wei_dims = {cout, cin, k, k};
    const dnnl_dims_t bias_dims = {cout}, strides = {1, 1}, pad = {k / 2, k / 2};
    CHECK(dnnl_memory_desc_init_by_tag(&src_md, 4, src_dims, dnnl_f32, dnnl_nchw), "src desc");
    CHECK(dnnl_memory_desc_init_by_tag(&dst_md, 4, dst_dims, dnnl_f32, dnnl_nchw), "dst desc");
    /* Plain OIHW weights straight from the mapped model: nothing is copied,
     * so memory does not grow with the model's depth. */
    CHECK(dnnl_memory_desc_init_by_tag(&wei_md, 4, wei_dims, dnnl_f32, dnnl_oihw), "weights desc");
    CHECK(dnnl_memory_desc_init_by_tag(&bias_md, 1, bias_dims, dnnl_f32, dnnl_x), "bias desc");
    dnnl_convolution_desc_t cd;
    CHECK(dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct, &src_md, &wei_md,
                                             &bias_md, &dst_md, strides, pad, pad),
          "convolution desc");
    CHECK(dnnl_primitive_attr_create(&attr), "attr");
    if (relu) {
        CHECK(dnnl_post_ops_create(&po), "post-ops");
        CHECK(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f), "relu post-op");
        CHECK(dnnl_primitive_attr_set_post_ops(attr, po), "set post-ops");
    }
    CHECK(dnnl_primitive_desc_create(&c->pd, &cd, attr, c->engine, NULL), "convolution primitive desc");
    CHECK(dnnl_primitive_create(&c->prim, c->pd), "convolution primitive");
    CHECK(dnnl_memory_create(&c->src, &src_md, c->engine, DNNL_MEMORY_NONE), "src memory");
    CHECK(dnnl_memory_create(&c->dst, &dst_md, c->engine, DNNL_MEMORY_NONE), "dst memory");
    CHECK(dnnl_memory_create(&c->wei, &wei_md, c->engine, DNNL_MEMORY_NONE), "weights memory");
    CHECK(dnnl_memory_create(&c->bias, &bias_md, c->engine, DNNL_MEMORY_NONE), "bias memory");
    if (po) dnnl_post_ops_destroy(po);
    dnnl_primitive_attr_destroy(attr);
    *out = c;
    return 0;
fail:
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    conv_free(c);
    return 1;
}

int conv_run(gt_conv *c, const float *src, const float *weights, const float *bias, float *dst, char *err) {
    /* oneDNN only reads src, weights and bias: the casts drop const for its API. */
    CHECK(dnnl_memory_set_data_handle(c->src, (void *)src), "set src");
    CHECK(dnnl_memory_set_data_handle(c->wei, (void *)weights), "set weights");
    CHECK(dnnl_memory_set_data_handle(c->bias, (void *)bias), "set bias");
    CHECK(dnnl_memory_set_data_handle(c->dst, dst), "set dst");
    dnnl_exec_arg_t args[4] = {
        {DNNL_ARG_SRC, c->src}, {DNNL_ARG_WEIGHTS, c->wei}, {DNNL_ARG_BIAS, c->bias}, {DNNL_ARG_DST, c->dst}};
    CHECK(dnnl_primitive_execute(c->prim, c->stream, 4, args), "convolution");
    CHECK(dnnl_stream_wait(c->stream), "stream wait");
    return 0;
fail:
    return 1;
}

const char *conv_impl(const gt_conv *c) {
    const char *s = "?";
    if (c && c->pd) dnnl_primitive_desc_query(c->pd, dnnl_query_impl_info_str, 0, &s);
    return s;
}

void conv_free(gt_conv *c) {
    if (!c) return;
    if (c->src) dnnl_memory_destroy(c->src);
    if (c->dst) dnnl_memory_destroy(c->dst);
    if (c->wei) dnnl_memory_destroy(c->wei);
    if (c->bias) dnnl_memory_destroy(c->bias);
    if (c->prim) dnnl_primitive_destroy(c->prim);
    if (c->pd) dnnl_primitive_desc_destroy(c->pd);
    if (c->stream) dnnl_stream_destroy(c->stream);
    if (c->engine) dnnl_engine_destroy(c->engine);
    free(c);
}
