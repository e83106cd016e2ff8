/* Picks the kernel table once: the best ISA this build has and this CPU
 * runs, or the one GLOWRT_ISA forces (refused, with the reason, when the
 * CPU or the OS lacks it). x86-64: cpuid for AVX2 and FMA, XGETBV for the
 * OS saving YMM state. aarch64: NEON (Advanced SIMD) is baseline. */
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

#if defined(__x86_64__) && defined(GLOWRT_HAVE_AVX2)
#include <cpuid.h>
static int cpu_has_avx2(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    const int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    if (!(fma && osxsave && avx)) return 0;
    /* XGETBV(0): the OS saves XMM (bit 1) and YMM (bit 2) state. */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 6) != 6) return 0;
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (b >> 5) & 1;
}
#endif

const gt_kernels *kernels_isa(const char *name, const char **why_not) {
    *why_not = NULL;
    if (!strcmp(name, "ref")) return &gt_kernels_ref;
    if (!strcmp(name, "avx2")) {
#if defined(__x86_64__) && defined(GLOWRT_HAVE_AVX2)
        if (cpu_has_avx2()) return &gt_kernels_avx2;
        *why_not = "GLOWRT_ISA=avx2: this CPU (or its OS) does not support AVX2 and FMA (use ref)";
#else
        *why_not = "GLOWRT_ISA=avx2: this build has no AVX2 kernels (not an x86-64 build; use ref)";
#endif
        return NULL;
    }
    if (!strcmp(name, "neon")) {
#if defined(__aarch64__) && defined(GLOWRT_HAVE_NEON)
        return &gt_kernels_neon;
#else
        *why_not = "GLOWRT_ISA=neon: this build has no NEON kernels (not an aarch64 build; use ref)";
        return NULL;
#endif
    }
    *why_not = "GLOWRT_ISA must be ref, avx2 or neon";
    return NULL;
}

const gt_kernels *kernels_select(const char **why_not) {
    const char *want = getenv("GLOWRT_ISA");
    if (want && *want) return kernels_isa(want, why_not);
    *why_not = NULL;
#if defined(__x86_64__) && defined(GLOWRT_HAVE_AVX2)
    if (cpu_has_avx2()) return &gt_kernels_avx2;
#endif
#if defined(__aarch64__) && defined(GLOWRT_HAVE_NEON)
    return &gt_kernels_neon;
#endif
    return &gt_kernels_ref;
}
