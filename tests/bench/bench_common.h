// bench_common.h — shared helpers for the benchmarks in tests/bench/.
// Every figure is printed for people and once more as one machine-readable
// line: "FIGURE <name> <value> <unit>".
#ifndef WR_BENCH_COMMON_H
#define WR_BENCH_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wr_common.h"

static inline void wr_figure(const char *name, double value, const char *unit) {
    printf("FIGURE %s %.6g %s\n", name, value, unit);
    fflush(stdout);
}

// Best-of-`reps` seconds of fn(arg) after one warm-up call.
static inline double wr_bench_best(void (*fn)(void *), void *arg, int reps) {
    fn(arg);
    double best = 1e30;
    for (int i = 0; i < reps; i++) {
        double t0 = wr_now();
        fn(arg);
        double t = wr_now() - t0;
        if (t < best) best = t;
    }
    return best;
}

typedef struct {
    char *src, *dst;
    size_t n;
} wr_bench_copy_arg;

static void wr_bench_copy_fn(void *p) {
    wr_bench_copy_arg *a = p;
    memcpy(a->dst, a->src, a->n);
    __asm__ __volatile__("" ::"r"(a->dst) : "memory");
}

// STREAM-like copy bandwidth of this machine, one thread, `bytes` per array
// (well past the caches), counted as bytes read + bytes written, in GB/s.
static inline double wr_bench_mem_bw_copy(size_t bytes) {
    wr_bench_copy_arg a = {wr_alloc_vec(bytes), wr_alloc_vec(bytes), bytes};
    memset(a.src, 1, bytes);
    double t = wr_bench_best(wr_bench_copy_fn, &a, 5);
    free(a.src);
    free(a.dst);
    return 2.0 * (double)bytes / t / 1e9;
}

#endif
