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

#define WR_OK 0
#define WR_ERR -1        // generic failure, reason in err
#define WR_ETIMEDOUT -2  // an operation with a timeout ran out of time
#define WR_EPROTO -3     // a peer sent a message that failed validation
#define WR_ECLOSED -4    // endpoint or peer went away
#define WR_EAGAIN -5     // would block (non-blocking operations only)

#define WR_ERR_LEN 256

// Exit statuses of every wren program (wren-server, wren-worker, the tools).
// The coordinator's status is the job's status. scripts/lib/exit-status.sh
// holds the same names for the shell scripts; test_common checks the two agree.
enum wr_exit_status {
    WR_EXIT_OK = 0,                // the job (or the command) succeeded
    WR_EXIT_FAILURE = 1,           // a runtime error: the log says which
    WR_EXIT_CONFIG = 2,            // bad command line, config or input data
    WR_EXIT_REGISTER_TIMEOUT = 3,  // the job did not form within register_timeout
    WR_EXIT_DIVERGED = 4,          // replica digests differed
    WR_EXIT_NODE_LOST = 5,         // a node died (heartbeat or connection lost)
    WR_EXIT_NO_COORDINATOR = 6,    // the coordinator could not be reached
};
#define WR_EXIT_STATUSES 7
// A short name ("ok", "config", ...) for logs; "unknown" outside the enum.
const char *wr_exit_name(int status);

// Formats a reason into err (if not NULL). Always returns `code` so callers can
// write `return wr_err(err, WR_ERR, "bad %s", what);`.
int wr_err(char *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

// Aborts with file:line and the failed expression. For invariants, not for input.
#define WR_CHECK(cond)                                                               \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                 \
        }                                                                            \
    } while (0)

// malloc/calloc/aligned alloc that abort with file:line on failure.
void *wr_malloc_at(size_t n, const char *file, int line);
void *wr_calloc_at(size_t n, size_t size, const char *file, int line);
void *wr_aligned_alloc_at(size_t align, size_t n, const char *file, int line);
#define wr_malloc(n) wr_malloc_at((n), __FILE__, __LINE__)
#define wr_calloc(n, s) wr_calloc_at((n), (s), __FILE__, __LINE__)
// 64-byte aligned, zero-filled allocation for vectors the kernels stream over; free with free().
#define wr_alloc_vec(n) wr_aligned_alloc_at(64, (n), __FILE__, __LINE__)

// Zeroed memory for vectors streamed in full every step (master copy,
// optimizer and Birder state, synthetic x and g): from 4 MiB up it is 2 MiB
// aligned and advised onto transparent huge pages before the first touch
// (fewer TLB misses, which cost a nested page walk in a VM, and 512x fewer
// page faults); smaller blocks are 64-byte aligned. The advice is best
// effort. wr_alloc_huge aborts with file:line on out of memory;
// wr_try_alloc_huge returns NULL instead. Free with free().
void *wr_alloc_huge_at(size_t bytes, const char *file, int line);
void *wr_try_alloc_huge(size_t bytes);
#define wr_alloc_huge(n) wr_alloc_huge_at((n), __FILE__, __LINE__)

// Monotonic time in seconds.
double wr_now(void);

#define WR_MIN(a, b) ((a) < (b) ? (a) : (b))
#define WR_MAX(a, b) ((a) > (b) ? (a) : (b))
#define WR_DIV_UP(a, b) (((a) + (b)-1) / (b))

// Writes s to f as a JSON string: quotes, backslashes and control bytes
// escaped (host names and reasons in summaries come from the wire).
void wr_json_str(FILE *f, const char *s);

#endif
