/* idx-ubyte image files (MNIST, Fashion-MNIST), raw or gzipped: see io.h.
 * zlib's gzread reads both (a file without the gzip magic is read as is). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "io.h"

#define IDX3_MAGIC 0x00000803u

/* Reads up to len bytes; returns the count read or -1 on a zlib error. */
static int64_t read_some(gzFile f, void *buf, int64_t len) {
    int64_t got = 0;
    while (got < len) {
        int64_t want = len - got;
        if (want > (1 << 30)) want = 1 << 30;
        int r = gzread(f, (char *)buf + got, (unsigned)want);
        if (r < 0) return -1;
        if (r == 0) break;
        got += r;
    }
    return got;
}

static const char *gz_problem(gzFile f) {
    int code;
    const char *msg = gzerror(f, &code);
    return code == Z_ERRNO ? strerror(errno) : msg;
}

static int open_header(const char *path, gzFile *out, int64_t *n, int64_t *h, int64_t *w, char *err, size_t errlen) {
    const int fd = io_open_fd(path, NULL, err, errlen);
    if (fd < 0) return -1;
    errno = 0;
    gzFile f = gzdopen(fd, "rb");
    if (!f) {
        close(fd);
        return io_error(err, errlen, path, "cannot open: %s", errno ? strerror(errno) : "out of memory");
    }
    unsigned char hd[16];
    int64_t got = read_some(f, hd, 16);
    if (got < 0) {
        io_error(err, errlen, path, "idx: cannot read: %s", gz_problem(f));
        gzclose(f);
        return 1;
    }
    if (got < 4 || ((uint32_t)hd[0] << 24 | (uint32_t)hd[1] << 16 | (uint32_t)hd[2] << 8 | hd[3]) != IDX3_MAGIC) {
        gzclose(f);
        return io_error(err, errlen, path, "not an idx3-ubyte image file (magic is not 0x00000803)");
    }
    if (got < 16) {
        gzclose(f);
        return io_error(err, errlen, path, "idx: truncated header (%d of 16 bytes)", (int)got);
    }
    uint32_t d[3];
    for (int i = 0; i < 3; i++)
        d[i] = (uint32_t)hd[4 + 4 * i] << 24 | (uint32_t)hd[5 + 4 * i] << 16 | (uint32_t)hd[6 + 4 * i] << 8 | hd[7 + 4 * i];
    if (!d[0] || !d[1] || !d[2]) {
        gzclose(f);
        return io_error(err, errlen, path, "idx: a dimension is 0 (%u x %u x %u)", d[0], d[1], d[2]);
    }
    if (d[1] > IO_MAX_DIM || d[2] > IO_MAX_DIM) {
        gzclose(f);
        return io_error(err, errlen, path, "idx: image %u x %u is larger than %d x %d", d[1], d[2], IO_MAX_DIM, IO_MAX_DIM);
    }
    /* d[1] * d[2] <= 2^28: no overflow in 64 bits with d[0] < 2^32 */
    if ((int64_t)d[0] * d[1] * d[2] > IO_MAX_ELEMS) {
        gzclose(f);
        return io_error(err, errlen, path, "idx: %u images of %u x %u exceed the limit of %lld pixels", d[0], d[1], d[2],
                    (long long)IO_MAX_ELEMS);
    }
    *n = d[0];
    *h = d[1];
    *w = d[2];
    *out = f;
    return 0;
}

int io_is_idx(const char *path) {
    char err[16];
    const int fd = io_open_fd(path, NULL, err, sizeof err);
    if (fd < 0) return 0;
    gzFile f = gzdopen(fd, "rb");
    if (!f) {
        close(fd);
        return 0;
    }
    unsigned char m[4];
    int yes = read_some(f, m, 4) == 4 && m[0] == 0 && m[1] == 0 && m[2] == 8 && m[3] == 3;
    gzclose(f);
    return yes;
}

int io_read_idx_header(const char *path, int64_t *n, int64_t *h, int64_t *w, char *err, size_t errlen) {
    gzFile f;
    if (open_header(path, &f, n, h, w, err, errlen)) return 1;
    gzclose(f);
    return 0;
}

int io_read_idx_u8(const char *path, uint8_t **pix, int64_t *n, int64_t *h, int64_t *w, char *err, size_t errlen) {
    gzFile f;
    *pix = NULL;
    if (open_header(path, &f, n, h, w, err, errlen)) return 1;
    const int64_t total = *n * *h * *w;
    /* grow with what is really there: a forged header cannot make us allocate */
    int64_t cap = total < (1 << 20) ? total : (1 << 20), have = 0;
    uint8_t *buf = malloc((size_t)cap);
    if (!buf) {
        gzclose(f);
        return io_error(err, errlen, path, "out of memory");
    }
    for (;;) {
        int64_t got = read_some(f, buf + have, cap - have);
        if (got < 0) {
            io_error(err, errlen, path, "idx: cannot read: %s", gz_problem(f));
            goto bad;
        }
        have += got;
        if (have < cap) break; /* end of data */
        if (cap == total) break;
        int64_t ncap = cap * 2 < total ? cap * 2 : total;
        uint8_t *g = realloc(buf, (size_t)ncap);
        if (!g) {
            io_error(err, errlen, path, "out of memory");
            goto bad;
        }
        buf = g;
        cap = ncap;
    }
    if (have < total) {
        io_error(err, errlen, path, "idx: truncated: %lld of %lld pixel bytes for %lld images of %lld x %lld",
             (long long)have, (long long)total, (long long)*n, (long long)*h, (long long)*w);
        goto bad;
    }
    unsigned char extra;
    int64_t more = read_some(f, &extra, 1);
    if (more != 0) {
        if (more < 0) io_error(err, errlen, path, "idx: cannot read: %s", gz_problem(f));
        else io_error(err, errlen, path, "idx: trailing bytes after %lld images of %lld x %lld", (long long)*n,
                  (long long)*h, (long long)*w);
        goto bad;
    }
    gzclose(f);
    *pix = buf;
    return 0;
bad:
    free(buf);
    gzclose(f);
    return 1;
}
