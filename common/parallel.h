// parallel.h — one function over a vector's ranges on a few threads.
//
// The per-element kernels of a step (Birder encode and apply, the optimizers)
// are split by index: each range's elements get exactly the arithmetic (and
// Birder counters, which are element indices) they would get on one thread,
// so the results are the same bits whatever the thread count.
#ifndef WR_PARALLEL_H
#define WR_PARALLEL_H

#include <stddef.h>

#define WR_PAR_MAX_THREADS 4

// fn runs on elements [lo, hi) of the vector; ctx is the caller's.
typedef void (*wr_range_fn)(void *ctx, size_t lo, size_t hi);

// Runs fn over [0, n) cut into at most `threads` ranges whose bounds are
// multiples of 64 (so a range owns whole 64-bit words of a bit vector), the
// first on the calling thread, the others on threads started for the call;
// returns when every range is done. threads is clamped to [1,
// WR_PAR_MAX_THREADS], and lowered so that each range has at least
// min_per_thread elements (starting a thread costs tens of microseconds).
// A thread that cannot be started has its range run on the caller. Empty
// ranges are not run.
void wr_par_ranges(int threads, size_t n, size_t min_per_thread, wr_range_fn fn, void *ctx);

#endif
