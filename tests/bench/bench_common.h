// bench_common.h — shared helpers for the benchmarks in tests/bench/.
// Every figure is printed for people and once more as one machine-readable
// line: "FIGURE <name> <value> <unit>".
#ifndef WR_BENCH_COMMON_H
#define WR_BENCH_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <emmintrin.h>

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

// Copy with non-temporal (streaming) stores, like STREAM built for bandwidth:
// glibc's memcpy reaches only ~2/3 of the machine's bandwidth on this VM
// (measured 23 vs 36 GB/s), which would understate the bound the kernels
// chase. SSE2 is part of x86-64, so this runs everywhere.
static void wr_bench_copy_fn(void *p) {
    wr_bench_copy_arg *a = p;
    const float *src = (const float *)a->src;
    float *dst = (float *)a->dst;
    size_t n = a->n / sizeof(float);
    for (size_t i = 0; i + 16 <= n; i += 16) {
        _mm_stream_ps(dst + i, _mm_load_ps(src + i));
        _mm_stream_ps(dst + i + 4, _mm_load_ps(src + i + 4));
        _mm_stream_ps(dst + i + 8, _mm_load_ps(src + i + 8));
        _mm_stream_ps(dst + i + 12, _mm_load_ps(src + i + 12));
    }
    _mm_sfence();
    __asm__ __volatile__("" ::"r"(a->dst) : "memory");
}

// STREAM-like copy bandwidth of this machine, one thread, `bytes` per array
// (well past the caches; a multiple of 64 bytes), counted as bytes read +
// bytes written, in GB/s.
static inline double wr_bench_mem_bw_copy(size_t bytes) {
    wr_bench_copy_arg a = {wr_alloc_vec(bytes), wr_alloc_vec(bytes), bytes};
    memset(a.src, 1, bytes);
    double t = wr_bench_best(wr_bench_copy_fn, &a, 5);
    free(a.src);
    free(a.dst);
    return 2.0 * (double)bytes / t / 1e9;
}

typedef struct {
    const float *src;
    size_t n;
    float sink;
} wr_bench_read_arg;

static void wr_bench_read_fn(void *p) {
    wr_bench_read_arg *a = p;
    __m128 s0 = _mm_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i + 16 <= a->n; i += 16) {
        s0 = _mm_add_ps(s0, _mm_load_ps(a->src + i));
        s1 = _mm_add_ps(s1, _mm_load_ps(a->src + i + 4));
        s2 = _mm_add_ps(s2, _mm_load_ps(a->src + i + 8));
        s3 = _mm_add_ps(s3, _mm_load_ps(a->src + i + 12));
    }
    float out[4];
    _mm_storeu_ps(out, _mm_add_ps(_mm_add_ps(s0, s1), _mm_add_ps(s2, s3)));
    a->sink += out[0] + out[1] + out[2] + out[3];
}

// Read-only bandwidth of one thread over `bytes` (a multiple of 64), GB/s.
// One core here cannot pull more than this however little it writes, so it
// bounds kernels that mostly read (an fp32 -> fp8 encode reads 4 B, writes 1 B).
static inline double wr_bench_mem_bw_read(size_t bytes) {
    float *src = wr_alloc_vec(bytes);
    wr_bench_read_arg a = {src, bytes / sizeof(float), 0};
    double t = wr_bench_best(wr_bench_read_fn, &a, 5);
    free(src);
    return (double)bytes / t / 1e9;
}

#endif
