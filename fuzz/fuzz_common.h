/* Shared by the libFuzzer targets: the fuzz input as a file. The runtime
 * reads paths (it mmaps models and sniffs images by content), so each input
 * is written into one memfd, reached as /proc/self/fd/N: no disk traffic,
 * no temporary files left behind by a crash. */
#ifndef GLOWRT_FUZZ_COMMON_H
#define GLOWRT_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static const char *fuzz_file(const uint8_t *data, size_t size) {
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("glowrt-fuzz", MFD_CLOEXEC);
        if (fd < 0) { perror("memfd_create"); abort(); }
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) || (size && pwrite(fd, data, size, 0) != (ssize_t)size)) { perror("memfd write"); abort(); }
    return path;
}
#endif
