/* The loaded .glow file: its tables, parsed and validated (docs/format.md). */
#ifndef GLOWRT_MODEL_H
#define GLOWRT_MODEL_H
#include <stdint.h>
#include <stddef.h>
#include "glowrt.h"

enum { OP_SQUEEZE = 1, OP_AFFINE = 2, OP_COUPLING = 3, OP_SPLIT = 4, OP_TOP_PRIOR = 5 };
enum { KV_I64 = 1, KV_F64 = 2, KV_STR = 3 };
enum { COUPLING_AFFINE = 0, COUPLING_ADDITIVE = 1 };
enum { HALVES_CONTIGUOUS = 0, HALVES_INTERLEAVED = 1 };

typedef struct {
    char name[128];
    int ndim;
    int64_t dims[4];
    uint64_t offset, nbytes;  /* offset from the data section */
    uint32_t crc;
    const float *data;        /* inside the mapping */
} gt_tensor;

typedef struct {
    char key[128];
    int type;
    int64_t i;
    double f;
    char s[256];              /* strings longer than this are cut for display */
} gt_kv;

#define GT_MAX_INTS 4
#define GT_MAX_TENSORS 8

typedef struct {
    int code;
    int64_t ints[GT_MAX_INTS];
    double f64s[1];
    const gt_tensor *t[GT_MAX_TENSORS];  /* NULL where absent (-1) */
} gt_op;

struct glowrt_model {
    char path[512];
    const unsigned char *map;
    size_t size;
    uint32_t alignment;
    uint64_t data_offset;
    gt_kv *kv;
    int n_kv;
    gt_tensor *tensors;
    int n_tensors;
    gt_op *ops;
    int n_ops;
    int in_c, height, width, n_bits, n_levels, n_steps;
    int64_t n_params;
};

const gt_kv *model_kv(const glowrt_model *m, const char *key);
const char *op_name(int code);
/* Drops this process's resident pages of a tensor's data (it stays mapped
 * and reads back from the file if touched again): for weights a session has
 * packed into its own layout, so that they are held in memory once. */
void model_release(const glowrt_model *m, const gt_tensor *t);
#endif
