// bufpool.h — a pool of equal-sized, 64-byte aligned buffers for zero-copy
// sends: a buffer stays busy until the transport and its owner release it.
#ifndef WR_BUFPOOL_H
#define WR_BUFPOOL_H

#include <stdatomic.h>
#include <stddef.h>

// Buffers of one size, 64-byte aligned, reused across steps. A buffer taken
// with wr_bufpool_get(p, refs) is busy until `refs` releases: each transport
// free callback (wr_bufpool_free_cb, hint = the returned handle) and the
// owner's wr_bufpool_put count one. The callback may run on a transport I/O
// thread (atomic counter).
typedef struct wr_bufpool wr_bufpool;
typedef struct wr_pbuf {
    void *data;
    atomic_int refs;
    struct wr_bufpool *pool;
} wr_pbuf;

wr_bufpool *wr_bufpool_new(size_t bytes, int max_bufs);
// A free buffer with `refs` references, allocating a new one up to max_bufs;
// NULL when all max_bufs are busy (the caller waits for the transport).
wr_pbuf *wr_bufpool_get(wr_bufpool *p, int refs);
void wr_bufpool_put(wr_pbuf *b);
void wr_bufpool_free_cb(void *data, void *hint);
int wr_bufpool_busy(wr_bufpool *p);
// Frees every buffer: only once the transport has released them (after the
// endpoints and context are closed). Safe on NULL.
void wr_bufpool_free(wr_bufpool *p);

#endif
