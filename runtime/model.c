/* Load a .glow file: map it, check every byte we are about to trust, and
 * turn its tables into structs (docs/format.md is the spec). */
#define _GNU_SOURCE
#include "model.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conv.h"
#include "crc32c.h"
#include "kernels/kernels.h"

#define HEADER_SIZE 128
#define MAX_DIM ((int64_t)1 << 20)  /* per-axis cap on tensor dims and channel counts */
#define MAX_ACTIVATION ((int64_t)1 << 31)  /* floats in any one tensor of one image (8 GiB) */

static const unsigned char MAGIC[8] = {'G', 'L', 'O', 'W', 'R', 'T', '\n', 0};

static int fail(char *err, const char *path, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(err, GLOWRT_ERR_LEN, "%.250s: %s", path, msg);
    return 1;
}

static uint16_t rd16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t rd32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t rd64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* A bounds-checked cursor over the metadata section. */
typedef struct {
    const unsigned char *p, *end;
    int bad;
} cursor;

static const unsigned char *take(cursor *c, size_t n) {
    if (c->bad || (size_t)(c->end - c->p) < n) { c->bad = 1; return NULL; }
    const unsigned char *q = c->p;
    c->p += n;
    return q;
}
static uint64_t take_u(cursor *c, int bytes) {
    const unsigned char *q = take(c, (size_t)bytes);
    if (!q) return 0;
    return bytes == 1 ? q[0] : bytes == 2 ? rd16(q) : bytes == 4 ? rd32(q) : rd64(q);
}
/* A string into a fixed buffer; returns its true length, 0 on error. */
static size_t take_str(cursor *c, char *buf, size_t cap) {
    size_t n = (size_t)take_u(c, 2);
    if (c->bad || n == 0 || n > 1024) { c->bad = 1; return 0; }
    const unsigned char *q = take(c, n);
    if (!q) return 0;
    size_t k = n < cap - 1 ? n : cap - 1;
    memcpy(buf, q, k);
    buf[k] = 0;
    if (memchr(q, 0, n)) { c->bad = 1; return 0; }
    return n;
}

const char *op_name(int code) {
    switch (code) {
    case OP_SQUEEZE: return "SQUEEZE";
    case OP_AFFINE: return "AFFINE";
    case OP_COUPLING: return "COUPLING";
    case OP_SPLIT: return "SPLIT";
    case OP_TOP_PRIOR: return "TOP_PRIOR";
    default: return "?";
    }
}

/* Counts of ints, f64s and tensors each op must carry. */
static int op_counts(int code, int *ni, int *nf, int *nt) {
    switch (code) {
    case OP_SQUEEZE: *ni = 1; *nf = 0; *nt = 0; return 0;
    case OP_AFFINE: *ni = 1; *nf = 1; *nt = 4; return 0;
    case OP_COUPLING: *ni = 4; *nf = 0; *nt = 8; return 0;
    case OP_SPLIT: *ni = 2; *nf = 0; *nt = 3; return 0;
    case OP_TOP_PRIOR: *ni = 3; *nf = 0; *nt = 2; return 0;
    default: return 1;
    }
}

const gt_kv *model_kv(const glowrt_model *m, const char *key) {
    for (int i = 0; i < m->n_kv; i++)
        if (!strcmp(m->kv[i].key, key)) return &m->kv[i];
    return NULL;
}

static int kv_int(const glowrt_model *m, const char *key, int64_t lo, int64_t hi, int *out, char *err) {
    const gt_kv *kv = model_kv(m, key);
    if (!kv) return fail(err, m->path, "missing metadata key %s", key);
    if (kv->type != KV_I64) return fail(err, m->path, "metadata key %s is not an integer", key);
    if (kv->i < lo || kv->i > hi)
        return fail(err, m->path, "metadata %s = %lld is out of range [%lld, %lld]", key, (long long)kv->i,
                    (long long)lo, (long long)hi);
    *out = (int)kv->i;
    return 0;
}

/* Checks tensor t of op k has exactly the given dims (ndim of them). */
static int want_shape(const glowrt_model *m, int k, int slot, const gt_tensor *t, int ndim, const int64_t *dims,
                      char *err) {
    const char *what = op_name(m->ops[k].code);
    if (!t) return fail(err, m->path, "plan op %d (%s): tensor %d is missing", k, what, slot);
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->dims[i] == dims[i];
    if (ok) return 0;
    char want[96] = "", got[96] = "";
    for (int i = 0; i < ndim; i++)
        snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? "," : "", (long long)dims[i]);
    for (int i = 0; i < t->ndim; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? "," : "", (long long)t->dims[i]);
    return fail(err, m->path, "plan op %d (%s): tensor '%s' has shape [%s], the plan needs [%s]", k, what, t->name,
                got, want);
}
#define SHAPE(slot, ...)                                                                        \
    do {                                                                                        \
        const int64_t d_[] = {__VA_ARGS__};                                                     \
        if (want_shape(m, k, slot, op->t[slot], (int)(sizeof d_ / sizeof d_[0]), d_, err)) return 1; \
    } while (0)
#define OPTIONAL_SHAPE(slot, ...) \
    do { if (op->t[slot]) SHAPE(slot, __VA_ARGS__); } while (0)

/* Walks the plan from the input shape; checks every op and tensor against
 * it. With h, w > 0 also checks that the image size fits the squeezes. */
static int check_plan(const glowrt_model *m, int h, int w, char *err) {
    int64_t C = m->in_c;
    for (int k = 0; k < m->n_ops; k++) {
        const gt_op *op = &m->ops[k];
        if (op->ints[0] != C)
            return fail(err, m->path, "plan op %d (%s) expects %lld channels, the data has %lld there", k,
                        op_name(op->code), (long long)op->ints[0], (long long)C);
        if (op->code == OP_TOP_PRIOR && k != m->n_ops - 1)
            return fail(err, m->path, "plan op %d: TOP_PRIOR must be the last op", k);
        switch (op->code) {
        case OP_SQUEEZE:
            if (C > MAX_DIM / 4) return fail(err, m->path, "plan op %d: too many channels", k);
            if (h > 0 && (h % 2 || w % 2))
                return fail(err, m->path, "image size %dx%d does not divide by 2 at plan op %d (SQUEEZE)", h, w, k);
            C *= 4;
            h /= 2;
            w /= 2;
            break;
        case OP_AFFINE:
            SHAPE(0, C, C);
            SHAPE(1, C);
            SHAPE(2, C, C);
            SHAPE(3, C);
            if (!isfinite(op->f64s[0])) return fail(err, m->path, "plan op %d (AFFINE): log-det is not finite", k);
            break;
        case OP_COUPLING: {
            int64_t hid = op->ints[1], kind = op->ints[2], halves = op->ints[3];
            if (C % 2) return fail(err, m->path, "plan op %d (COUPLING): odd channel count %lld", k, (long long)C);
            if (hid < 1 || hid > MAX_DIM) return fail(err, m->path, "plan op %d (COUPLING): bad width %lld", k, (long long)hid);
            if (kind != COUPLING_AFFINE && kind != COUPLING_ADDITIVE)
                return fail(err, m->path, "plan op %d (COUPLING): unknown kind %lld", k, (long long)kind);
            if (halves != HALVES_CONTIGUOUS && halves != HALVES_INTERLEAVED)
                return fail(err, m->path, "plan op %d (COUPLING): unknown halves %lld", k, (long long)halves);
            int64_t co = kind == COUPLING_AFFINE ? C : C / 2;
            SHAPE(0, hid, C / 2, 3, 3);
            SHAPE(1, hid);
            OPTIONAL_SHAPE(2, 9, hid);
            SHAPE(3, hid, hid, 1, 1);
            SHAPE(4, hid);
            SHAPE(5, co, hid, 3, 3);
            SHAPE(6, co);
            OPTIONAL_SHAPE(7, 9, co);
            break;
        }
        case OP_SPLIT:
            if (C % 2 || C < 2) return fail(err, m->path, "plan op %d (SPLIT): odd channel count %lld", k, (long long)C);
            if (op->ints[1] != HALVES_CONTIGUOUS && op->ints[1] != HALVES_INTERLEAVED)
                return fail(err, m->path, "plan op %d (SPLIT): unknown halves %lld", k, (long long)op->ints[1]);
            SHAPE(0, C, C / 2, 3, 3);
            SHAPE(1, C);
            OPTIONAL_SHAPE(2, 9, C);
            C /= 2;
            break;
        case OP_TOP_PRIOR:
            if (op->ints[1] != HALVES_CONTIGUOUS && op->ints[1] != HALVES_INTERLEAVED)
                return fail(err, m->path, "plan op %d (TOP_PRIOR): unknown halves %lld", k, (long long)op->ints[1]);
            if (op->ints[2] == 1) {
                SHAPE(0, 2 * C);
                OPTIONAL_SHAPE(1, 9, 2 * C);
            } else if (op->ints[2] == 0) {
                if (op->t[0] || op->t[1]) return fail(err, m->path, "plan op %d (TOP_PRIOR): N(0,I) prior with tensors", k);
            } else {
                return fail(err, m->path, "plan op %d (TOP_PRIOR): bad 'learned' flag %lld", k, (long long)op->ints[2]);
            }
            break;
        }
    }
    if (m->n_ops == 0 || m->ops[m->n_ops - 1].code != OP_TOP_PRIOR)
        return fail(err, m->path, "the plan does not end with TOP_PRIOR");
    return 0;
}

static int parse(glowrt_model *m, char *err) {
    const unsigned char *h = m->map;
    const char *path = m->path;
    if (m->size < HEADER_SIZE) return fail(err, path, "file is %zu bytes, too small for a .glow header (truncated?)", m->size);
    if (memcmp(h, MAGIC, 8)) return fail(err, path, "not a .glow model file (bad magic)");
    unsigned major = rd16(h + 8), minor = rd16(h + 10);
    if (h[12] == 1 && h[13] == 2 && h[14] == 3 && h[15] == 4)
        return fail(err, path, "big-endian .glow files are not supported");
    if (rd32(h + 12) != 0x01020304u) return fail(err, path, "bad byte-order mark");
    if (major != 1) return fail(err, path, ".glow version %u.%u is not supported (this build reads 1.x)", major, minor);
    uint64_t file_size = rd64(h + 16), meta_off = rd64(h + 40), meta_size = rd64(h + 48);
    uint64_t data_off = rd64(h + 56), data_size = rd64(h + 64);
    uint32_t align = rd32(h + 24);
    if (file_size != m->size)
        return fail(err, path, "file is %zu bytes but its header says %llu (truncated or padded)", m->size,
                    (unsigned long long)file_size);
    if (align < 64 || (align & (align - 1)) || align > (1u << 20)) return fail(err, path, "bad alignment %u", align);
    if (meta_off != HEADER_SIZE || meta_size > m->size - HEADER_SIZE)
        return fail(err, path, "metadata section lies outside the file");
    if (data_off < meta_off + meta_size || data_off > m->size || data_off % align || data_size != m->size - data_off)
        return fail(err, path, "bad data section offset or size");
    for (int i = 72; i < 124; i++)
        if (h[i]) return fail(err, path, "reserved header bytes are not zero");
    uint32_t crc = crc32c_update(0, h, 124);
    crc = crc32c_update(crc, h + meta_off, (size_t)meta_size);
    if (crc != rd32(h + 124)) return fail(err, path, "header/metadata checksum mismatch (file corrupt)");
    m->alignment = align;
    m->data_offset = data_off;

    uint32_t n_kv = rd32(h + 28), n_t = rd32(h + 32), n_ops = rd32(h + 36);
    /* Each entry takes at least 8 bytes of metadata: bounds the allocations. */
    if (n_kv > meta_size / 8 || n_t > meta_size / 8 || n_ops > meta_size / 8)
        return fail(err, path, "table counts exceed the metadata section");
    m->kv = calloc(n_kv + 1, sizeof *m->kv);
    m->tensors = calloc(n_t + 1, sizeof *m->tensors);
    m->ops = calloc(n_ops + 1, sizeof *m->ops);
    if (!m->kv || !m->tensors || !m->ops) return fail(err, path, "out of memory");

    cursor c = {h + meta_off, h + meta_off + meta_size, 0};
    for (uint32_t i = 0; i < n_kv; i++) {
        gt_kv *kv = &m->kv[i];
        if (!take_str(&c, kv->key, sizeof kv->key)) return fail(err, path, "metadata entry %u is malformed", i);
        kv->type = (int)take_u(&c, 1);
        if (kv->type == KV_I64) kv->i = (int64_t)take_u(&c, 8);
        else if (kv->type == KV_F64) { uint64_t b = take_u(&c, 8); memcpy(&kv->f, &b, 8); }
        else if (kv->type == KV_STR) take_str(&c, kv->s, sizeof kv->s);
        else return fail(err, path, "metadata key %s has unknown type %d", kv->key, kv->type);
        if (c.bad) return fail(err, path, "metadata entry %u is malformed", i);
        for (uint32_t j = 0; j < i; j++)
            if (!strcmp(m->kv[j].key, kv->key)) return fail(err, path, "duplicate metadata key %s", kv->key);
        m->n_kv++;
    }
    for (uint32_t i = 0; i < n_t; i++) {
        gt_tensor *t = &m->tensors[i];
        if (!take_str(&c, t->name, sizeof t->name)) return fail(err, path, "tensor entry %u is malformed", i);
        int dtype = (int)take_u(&c, 1);
        t->ndim = (int)take_u(&c, 1);
        if (c.bad) return fail(err, path, "tensor entry %u is malformed", i);
        if (dtype != 0) return fail(err, path, "tensor '%s' has unsupported dtype %d", t->name, dtype);
        if (t->ndim < 1 || t->ndim > 4) return fail(err, path, "tensor '%s' has %d dims", t->name, t->ndim);
        uint64_t count = 1;
        for (int d = 0; d < t->ndim; d++) {
            uint64_t v = take_u(&c, 8);
            if (v < 1 || v > (uint64_t)MAX_DIM) return fail(err, path, "tensor '%s' has a bad dimension", t->name);
            t->dims[d] = (int64_t)v;
            count *= v; /* <= 2^80 impossible: checked below per step */
            if (count > ((uint64_t)1 << 40)) return fail(err, path, "tensor '%s' is too large", t->name);
        }
        t->offset = take_u(&c, 8);
        t->nbytes = take_u(&c, 8);
        t->crc = (uint32_t)take_u(&c, 4);
        if (c.bad) return fail(err, path, "tensor entry %u is malformed", i);
        if (t->nbytes != count * 4) return fail(err, path, "tensor '%s': byte size does not match its shape", t->name);
        if (t->offset % align || t->offset > data_size || t->nbytes > data_size - t->offset)
            return fail(err, path, "tensor '%s' lies outside the data section (truncated file?)", t->name);
        t->data = (const float *)(h + data_off + t->offset);
        for (uint32_t j = 0; j < i; j++) {
            const gt_tensor *u = &m->tensors[j];
            if (!strcmp(u->name, t->name)) return fail(err, path, "duplicate tensor name '%s'", t->name);
            if (t->offset < u->offset + u->nbytes && u->offset < t->offset + t->nbytes)
                return fail(err, path, "tensors '%s' and '%s' overlap", u->name, t->name);
        }
        m->n_tensors++;
        m->n_params += (int64_t)count;
    }
    for (uint32_t i = 0; i < n_ops; i++) {
        gt_op *op = &m->ops[i];
        op->code = (int)take_u(&c, 2);
        int ni = (int)take_u(&c, 2), nf = (int)take_u(&c, 2), nt = (int)take_u(&c, 2), wi, wf, wt;
        if (c.bad) return fail(err, path, "plan op %u is malformed", i);
        if (op_counts(op->code, &wi, &wf, &wt)) return fail(err, path, "plan op %u has unknown op code %d", i, op->code);
        if (ni != wi || nf != wf || nt != wt)
            return fail(err, path, "plan op %u (%s) has %d/%d/%d attributes, needs %d/%d/%d", i, op_name(op->code), ni,
                        nf, nt, wi, wf, wt);
        for (int j = 0; j < ni; j++) op->ints[j] = (int64_t)take_u(&c, 8);
        for (int j = 0; j < nf; j++) { uint64_t b = take_u(&c, 8); memcpy(&op->f64s[j], &b, 8); }
        for (int j = 0; j < nt; j++) {
            int32_t ti = (int32_t)take_u(&c, 4);
            if (ti < -1 || ti >= (int32_t)n_t) return fail(err, path, "plan op %u refers to tensor %d of %u", i, ti, n_t);
            op->t[j] = ti < 0 ? NULL : &m->tensors[ti];
        }
        if (c.bad) return fail(err, path, "plan op %u is malformed", i);
        m->n_ops++;
        if (op->code == OP_SQUEEZE) m->n_levels++;
        if (op->code == OP_COUPLING) m->n_steps++;
    }
    if (c.p != c.end) return fail(err, path, "%zu unexpected bytes after the plan", (size_t)(c.end - c.p));

    if (kv_int(m, "glow.in_channels", 1, 4096, &m->in_c, err) ||
        kv_int(m, "glow.image_height", 1, 1 << 16, &m->height, err) ||
        kv_int(m, "glow.image_width", 1, 1 << 16, &m->width, err) || kv_int(m, "glow.n_bits", 1, 8, &m->n_bits, err))
        return 1;
    return check_plan(m, m->height, m->width, err);
}

int glowrt_model_load(const char *path, glowrt_model **out, char *err) {
    *out = NULL;
    glowrt_model *m = calloc(1, sizeof *m);
    if (!m) return fail(err, path, "out of memory");
    snprintf(m->path, sizeof m->path, "%s", path);
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);  /* a fifo is refused below, not waited on */
    if (fd < 0) {
        fail(err, path, "cannot open: %s", strerror(errno));
        free(m);
        return 1;
    }
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        fail(err, path, "not a regular file");
        close(fd);
        free(m);
        return 1;
    }
    m->size = (size_t)st.st_size;
    if (m->size >= HEADER_SIZE) {
        void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            fail(err, path, "cannot map: %s", strerror(errno));
            close(fd);
            free(m);
            return 1;
        }
        m->map = p;
    }
    close(fd);
    if (parse(m, err)) {
        glowrt_model_free(m);
        return 1;
    }
    *out = m;
    return 0;
}

void model_release(const glowrt_model *m, const gt_tensor *t) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)t->data + page - 1) & ~(page - 1);
    const uintptr_t b = ((uintptr_t)t->data + t->nbytes) & ~(page - 1);
    (void)m;
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);  /* a hint: failure changes nothing */
}

void glowrt_model_free(glowrt_model *m) {
    if (!m) return;
    if (m->map) munmap((void *)m->map, m->size);
    free(m->kv);
    free(m->tensors);
    free(m->ops);
    free(m);
}

int glowrt_model_verify(const glowrt_model *m, char *err) {
    for (int i = 0; i < m->n_tensors; i++) {
        const gt_tensor *t = &m->tensors[i];
        if (crc32c_update(0, t->data, (size_t)t->nbytes) != t->crc)
            return fail(err, m->path, "tensor '%s': checksum mismatch (file corrupt)", t->name);
    }
    for (int i = 0; i < m->n_tensors; i++) {
        const gt_tensor *t = &m->tensors[i];
        for (uint64_t j = 0; j < t->nbytes / 4; j++)
            if (!isfinite(t->data[j])) return fail(err, m->path, "tensor '%s' holds a non-finite value", t->name);
    }
    return 0;
}

void glowrt_model_info(const glowrt_model *m, glowrt_info *info) {
    info->in_channels = m->in_c;
    info->height = m->height;
    info->width = m->width;
    info->n_bits = m->n_bits;
    info->n_levels = m->n_levels;
    info->n_steps = m->n_steps;
    info->n_params = m->n_params;
}

int64_t glowrt_dim(const glowrt_model *m, int h, int w) { return (int64_t)m->in_c * h * w; }

int glowrt_check_size(const glowrt_model *m, int h, int w, char *err) {
    if (h < 1 || w < 1 || h > 16384 || w > 16384)
        return fail(err, m->path, "image size %dx%d is out of range (1..16384)", h, w);
    int q = 1 << m->n_levels;
    if (h % q || w % q)
        return fail(err, m->path, "image size %dx%d: height and width must be multiples of %d (2^%d levels)", h, w, q,
                    m->n_levels);
    if (check_plan(m, h, w, err)) return 1;
    /* Bounds what a session allocates: no tensor of one image (the image,
     * a coupling network's hidden activations with their channels padded
     * to 64, the top prior's mean and log-sd) may exceed MAX_ACTIVATION
     * floats. */
    int64_t C = m->in_c, hw = (int64_t)h * w, big = C * hw;
    for (int k = 0; k < m->n_ops; k++) {
        const gt_op *op = &m->ops[k];
        if (op->code == OP_SQUEEZE) { C *= 4; hw /= 4; }
        else if (op->code == OP_COUPLING && (op->ints[1] + 63) / 64 * 64 * hw > big) big = (op->ints[1] + 63) / 64 * 64 * hw;
        else if (op->code == OP_SPLIT) C /= 2;
        else if (op->code == OP_TOP_PRIOR && 2 * C * hw > big) big = 2 * C * hw;
    }
    if (big > MAX_ACTIVATION)
        return fail(err, m->path, "image size %dx%d needs activations of %lld floats per image (more than %lld)", h, w,
                    (long long)big, (long long)MAX_ACTIVATION);
    return 0;
}

static double conv_flops(const gt_tensor *w, int64_t hw) {
    return 2.0 * (double)hw * (double)w->dims[0] * (double)w->dims[1] * (double)(w->dims[2] * w->dims[3]);
}

double glowrt_flops(const glowrt_model *m, int h, int w) {
    int64_t C = m->in_c, H = h, W = w;
    double flops = 0;
    for (int k = 0; k < m->n_ops; k++) {
        const gt_op *op = &m->ops[k];
        if (op->code == OP_SQUEEZE) {
            C *= 4; H /= 2; W /= 2;
        } else if (op->code == OP_AFFINE) {
            flops += 2.0 * (double)(C * C) * (double)(H * W);
        } else if (op->code == OP_COUPLING) {
            flops += conv_flops(op->t[0], H * W) + conv_flops(op->t[3], H * W) + conv_flops(op->t[5], H * W);
        } else if (op->code == OP_SPLIT) {
            flops += conv_flops(op->t[0], H * W);
            C /= 2;
        }
    }
    return flops;
}

void glowrt_model_describe(const glowrt_model *m, int h, int w, void *file) {
    FILE *f = file;
    fprintf(f, "model      %s (%zu bytes, .glow %u.%u)\n", m->path, m->size, rd16(m->map + 8), rd16(m->map + 10));
    for (int i = 0; i < m->n_kv; i++) {
        const gt_kv *kv = &m->kv[i];
        if (kv->type == KV_I64) fprintf(f, "  %-22s %lld\n", kv->key, (long long)kv->i);
        else if (kv->type == KV_F64) fprintf(f, "  %-22s %g\n", kv->key, kv->f);
        else fprintf(f, "  %-22s %s\n", kv->key, kv->s);
    }
    fprintf(f, "image      %d x %d x %d, %d-bit, D = %lld\n", m->in_c, h, w, m->n_bits,
            (long long)glowrt_dim(m, h, w));
    fprintf(f, "plan       %d ops: %d levels, %d flow steps\n", m->n_ops, m->n_levels, m->n_steps);
    int64_t C = m->in_c, H = h, W = w;
    int level = 0, steps = 0;
    for (int k = 0; k < m->n_ops; k++) {
        const gt_op *op = &m->ops[k];
        switch (op->code) {
        case OP_SQUEEZE:
            C *= 4; H /= 2; W /= 2;
            steps = 0;
            break;
        case OP_AFFINE: break;
        case OP_COUPLING: steps++; break;
        case OP_SPLIT:
        case OP_TOP_PRIOR: {
            const char *kind = "";
            for (int j = k - 1; j >= 0; j--)
                if (m->ops[j].code == OP_COUPLING) {
                    kind = m->ops[j].ints[2] == COUPLING_AFFINE ? "affine" : "additive";
                    fprintf(f, "  level %d  %lld x %lld x %lld, %d steps, %s coupling, width %lld, latent %lld x %lld x %lld\n",
                            level, (long long)C, (long long)H, (long long)W, steps, kind, (long long)m->ops[j].ints[1],
                            (long long)(op->code == OP_SPLIT ? C / 2 : C), (long long)H, (long long)W);
                    break;
                }
            if (!*kind)
                fprintf(f, "  level %d  %lld x %lld x %lld, no steps\n", level, (long long)C, (long long)H, (long long)W);
            if (op->code == OP_SPLIT) C /= 2;
            level++;
            break;
        }
        }
    }
    fprintf(f, "parameters %lld (%.1f MB)\n", (long long)m->n_params, (double)m->n_params * 4 / 1e6);
    fprintf(f, "work       %.3f GFLOP per image per direction (2 FLOP per multiply-add)\n", glowrt_flops(m, h, w) / 1e9);
    const char *isa = glowrt_isa();  /* a name, or why no kernel set can run */
    fprintf(f, strchr(isa, ' ') ? "kernels    none: %s; %s\n" : "kernels    %s (flow ops); %s\n", isa, conv_describe());
}
