// parallel.c — wr_par_ranges (parallel.h).
#include "parallel.h"

#include <pthread.h>

#include "wr_common.h"

typedef struct {
    wr_range_fn fn;
    void *ctx;
    size_t lo, hi;
} par_part;

static void *par_run(void *arg) {
    const par_part *p = arg;
    p->fn(p->ctx, p->lo, p->hi);
    return NULL;
}

// The number of ranges for n elements: threads clamped as parallel.h says.
static int par_count(int threads, size_t n, size_t min_per_thread) {
    size_t t = (size_t)WR_MAX(1, WR_MIN(threads, WR_PAR_MAX_THREADS));
    size_t fit = min_per_thread ? n / min_per_thread : n;
    fit = WR_MIN(fit, (n + 63) / 64);  // a range is whole words: no more ranges than words
    return (int)WR_MAX((size_t)1, WR_MIN(t, fit));
}

void wr_par_ranges(int threads, size_t n, size_t min_per_thread, wr_range_fn fn, void *ctx) {
    if (n == 0) return;
    int T = par_count(threads, n, min_per_thread);
    if (T == 1) {
        fn(ctx, 0, n);
        return;
    }
    par_part parts[WR_PAR_MAX_THREADS] = {{0}};
    pthread_t th[WR_PAR_MAX_THREADS];
    int started[WR_PAR_MAX_THREADS] = {0};
    size_t words = (n + 63) / 64;
    for (int t = 0; t < T; t++) {
        size_t lo = words * (size_t)t / (size_t)T * 64, hi = words * (size_t)(t + 1) / (size_t)T * 64;
        parts[t] = (par_part){fn, ctx, WR_MIN(lo, n), WR_MIN(hi, n)};
    }
    for (int t = 1; t < T; t++)
        if (parts[t].lo < parts[t].hi) started[t] = pthread_create(&th[t], NULL, par_run, &parts[t]) == 0;
    if (parts[0].lo < parts[0].hi) par_run(&parts[0]);
    for (int t = 1; t < T; t++) {
        if (started[t])
            pthread_join(th[t], NULL);
        else if (parts[t].lo < parts[t].hi)
            par_run(&parts[t]);
    }
}
