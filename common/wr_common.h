// wr_common.h — return codes, error buffers and check macros shared by all of wren.
//
// Convention (after redis' anet): functions that can fail return WR_OK (0) or a
// negative WR_E* code and, when `err` is not NULL, write a one-line reason into
// it (at most WR_ERR_LEN bytes including the NUL). Programming errors (broken
// invariants, out-of-memory) abort through WR_CHECK with file and line.
#ifndef WR_COMMON_H
#define WR_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define WR_OK         0
#define WR_ERR       -1   // generic failure, reason in err
#define WR_ETIMEDOUT -2   // an operation with a timeout ran out of time
#define WR_EPROTO    -3   // a peer sent a message that failed validation
#define WR_ECLOSED   -4   // endpoint or peer went away
#define WR_EAGAIN    -5   // would block (non-blocking operations only)

#define WR_ERR_LEN 256

// Formats a reason into err (if not NULL). Always returns `code` so callers can
// write `return wr_err(err, WR_ERR, "bad %s", what);`.
int wr_err(char *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

// Aborts with file:line and the failed expression. For invariants, not for input.
#define WR_CHECK(cond)                                                          \
    do {                                                                        \
        if (!(cond)) {                                                          \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                            \
        }                                                                       \
    } while (0)

// malloc/calloc/aligned alloc that abort with file:line on failure.
void *wr_malloc_at(size_t n, const char *file, int line);
void *wr_calloc_at(size_t n, size_t size, const char *file, int line);
void *wr_aligned_alloc_at(size_t align, size_t n, const char *file, int line);
#define wr_malloc(n) wr_malloc_at((n), __FILE__, __LINE__)
#define wr_calloc(n, s) wr_calloc_at((n), (s), __FILE__, __LINE__)
// 64-byte aligned, zero-filled allocation for vectors the kernels stream over; free with free().
#define wr_alloc_vec(n) wr_aligned_alloc_at(64, (n), __FILE__, __LINE__)

// Monotonic time in seconds.
double wr_now(void);

#define WR_MIN(a, b) ((a) < (b) ? (a) : (b))
#define WR_MAX(a, b) ((a) > (b) ? (a) : (b))
#define WR_DIV_UP(a, b) (((a) + (b) - 1) / (b))

#endif
