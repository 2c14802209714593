// bufpool.c — buffers reused across steps for zero-copy sends (see bufpool.h).
#include "bufpool.h"

#include <stdlib.h>

#include "wr_common.h"

struct wr_bufpool {
    size_t bytes;
    int max, n;
    wr_pbuf *bufs;  // [max], fixed (callbacks hold pointers into it)
};

wr_bufpool *wr_bufpool_new(size_t bytes, int max_bufs) {
    wr_bufpool *p = wr_calloc(1, sizeof *p);
    p->bytes = bytes ? bytes : 8;
    p->max = max_bufs;
    p->bufs = wr_calloc((size_t)max_bufs, sizeof *p->bufs);
    for (int i = 0; i < max_bufs; i++) {
        atomic_init(&p->bufs[i].refs, 0);
        p->bufs[i].pool = p;
    }
    return p;
}

wr_pbuf *wr_bufpool_get(wr_bufpool *p, int refs) {
    for (int i = 0; i < p->n; i++)
        if (atomic_load_explicit(&p->bufs[i].refs, memory_order_acquire) == 0) {
            atomic_store_explicit(&p->bufs[i].refs, refs, memory_order_release);
            return &p->bufs[i];
        }
    if (p->n == p->max) return NULL;
    wr_pbuf *b = &p->bufs[p->n++];
    b->data = wr_alloc_vec(p->bytes);
    atomic_store(&b->refs, refs);
    return b;
}

void wr_bufpool_put(wr_pbuf *b) {
    int old = atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel);
    WR_CHECK(old > 0);
}

void wr_bufpool_free_cb(void *data, void *hint) {
    (void)data;
    wr_bufpool_put((wr_pbuf *)hint);
}

int wr_bufpool_busy(wr_bufpool *p) {
    int busy = 0;
    for (int i = 0; i < p->n; i++) busy += atomic_load(&p->bufs[i].refs) != 0;
    return busy;
}

void wr_bufpool_free(wr_bufpool *p) {
    if (!p) return;
    for (int i = 0; i < p->n; i++) free(p->bufs[i].data);
    free(p->bufs);
    free(p);
}
