/* Measures the core clock (GHz) of bench/compare's FP32 peak: a chain of
 * dependent integer adds retires one add per cycle; the best of several short
 * runs (a shared machine may deschedule any of them). x86-64 only. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(void) {
    const long n = 1000000; /* x 16 adds = 16 M cycles: short enough to run undisturbed */
    double best = 1e30;
    for (int r = 0; r < 200; r++) {
        long x = 0;
        double t = now();
        for (long i = 0; i < n; i++)
            __asm__ volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
                             "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
                             "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
                             "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0"
                             : "+r"(x));
        t = now() - t;
        if (t < best) best = t;
    }
    printf("%.4f\n", 16.0 * (double)n / best / 1e9);
    return 0;
}
