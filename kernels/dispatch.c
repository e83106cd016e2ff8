/* Picks the kernel table once. Only the reference set exists so far; the
 * SIMD sets (kernels/avx2, kernels/neon) plug in here. */
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

const gt_kernels *kernels_select(const char **why_not) {
    const char *want = getenv("GLOWRT_ISA");
    *why_not = NULL;
    if (!want || !*want || !strcmp(want, "ref")) return &gt_kernels_ref;
    if (!strcmp(want, "avx2") || !strcmp(want, "neon")) {
        *why_not = "GLOWRT_ISA: this build has no kernels for that ISA yet (use ref)";
        return NULL;
    }
    *why_not = "GLOWRT_ISA must be ref, avx2 or neon";
    return NULL;
}
