// wr_common.c — error formatting, checked allocation, clocks.
#include "wr_common.h"

#include <stdarg.h>
#include <string.h>
#include <time.h>

int wr_err(char *err, int code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, WR_ERR_LEN, fmt, ap);
        va_end(ap);
    }
    return code;
}

void *wr_malloc_at(size_t n, const char *file, int line) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "%s:%d: out of memory allocating %zu bytes\n", file, line, n);
        abort();
    }
    return p;
}

void *wr_calloc_at(size_t n, size_t size, const char *file, int line) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        fprintf(stderr, "%s:%d: out of memory allocating %zu x %zu bytes\n", file, line, n, size);
        abort();
    }
    return p;
}

void *wr_aligned_alloc_at(size_t align, size_t n, const char *file, int line) {
    size_t rounded = WR_DIV_UP(n ? n : 1, align) * align;
    void *p = aligned_alloc(align, rounded);
    if (!p) {
        fprintf(stderr, "%s:%d: out of memory allocating %zu aligned bytes\n", file, line, n);
        abort();
    }
    memset(p, 0, rounded);
    return p;
}

double wr_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
