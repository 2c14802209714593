// wr_common.c — error formatting, checked allocation, clocks.
#include "wr_common.h"

#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
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

void *wr_try_alloc_huge(size_t bytes) {
    const size_t huge = (size_t)2 << 20;
    void *p = NULL;
    if (bytes < 2 * huge) {
        size_t rounded = WR_DIV_UP(bytes ? bytes : 1, 64) * 64;
        if (posix_memalign(&p, 64, rounded) != 0) return NULL;
        memset(p, 0, rounded);
        return p;
    }
    if (posix_memalign(&p, huge, bytes) != 0) return NULL;
    madvise(p, bytes - bytes % huge, MADV_HUGEPAGE);  // before the first touch
    memset(p, 0, bytes);
    return p;
}

void *wr_alloc_huge_at(size_t bytes, const char *file, int line) {
    void *p = wr_try_alloc_huge(bytes);
    if (!p) {
        fprintf(stderr, "%s:%d: out of memory allocating %zu bytes of state\n", file, line, bytes);
        abort();
    }
    return p;
}

const char *wr_exit_name(int status) {
    static const char *const names[WR_EXIT_STATUSES] = {
        [WR_EXIT_OK] = "ok",
        [WR_EXIT_FAILURE] = "failure",
        [WR_EXIT_CONFIG] = "config",
        [WR_EXIT_REGISTER_TIMEOUT] = "register-timeout",
        [WR_EXIT_DIVERGED] = "diverged",
        [WR_EXIT_NODE_LOST] = "node-lost",
        [WR_EXIT_NO_COORDINATOR] = "no-coordinator",
    };
    if (status < 0 || status >= WR_EXIT_STATUSES) return "unknown";
    return names[status];
}

void wr_json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}
