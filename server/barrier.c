// barrier.c — BARRIER{id} from the workers of a formed job: released
// (BARRIER{id} back to each that entered) when every worker that has not
// left entered; one barrier open at a time.
#include "coord_internal.h"

// Messages are cut to their buffers on purpose.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

#include <stdio.h>
#include <string.h>

#include "log.h"

static void release(coord *c) {
    coord_barrier *b = &c->barrier;
    wr_pmsg h;
    coord_init_hdr(c, &h, WR_MT_BARRIER);
    h.barrier_id = b->id;
    for (int r = 0; r < WR_MAX_WORKERS; r++)
        if (b->in[r] && c->worker_node[r] >= 0) coord_send_to(c, &c->nodes[c->worker_node[r]], &h);
    wr_debug("barrier %llu released", (unsigned long long)b->id);
    b->active = 0;
}

void coord_on_barrier(coord *c, coord_in *in) {
    coord_barrier *b = &c->barrier;
    if (!c->formed || in->n->role != WR_ROLE_WORKER) {
        coord_reply_error(c, in->m, WR_EC_PROTOCOL, "BARRIER is for workers of a formed job");
        return;
    }
    if (b->active && in->h.barrier_id != b->id) {
        char err[WR_ERR_LEN];
        snprintf(err, sizeof err, "BARRIER %llu while barrier %llu is open",
                 (unsigned long long)in->h.barrier_id, (unsigned long long)b->id);
        coord_reply_error(c, in->m, WR_EC_PROTOCOL, err);
        return;
    }
    if (!b->active) {
        b->active = 1;
        b->id = in->h.barrier_id;
        b->count = 0;
        memset(b->in, 0, WR_MAX_WORKERS);
    }
    if (!b->in[in->n->index]) {
        b->in[in->n->index] = 1;
        b->count++;
    }
    if (b->count >= coord_members_running(c)) release(c);
}
