// shard_rebuild.c — a replacement shard rebuilds its range from the workers'
// replicas (docs/ARCHITECTURE.md, "Shard restart"). Each member worker sends
// PARAMS{step = the last step of this range it applied, its replica}; the
// newest step wins, every replica of that step must be bit-identical (else
// the job stops with status 4), and each worker gets PARAMS of that step
// back: a worker one step behind takes it as the broadcast it missed, the
// others push their step again.
#include "shard_internal.h"

// Messages are cut to their buffers on purpose.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "digest.h"
#include "log.h"

void shard_rebuild_start(shard_node *s) {
    shard_rebuild *rb = &s->rb;
    rb->active = 1;
    rb->offered = wr_calloc(SHARD_RANKS, 1);
    rb->x = wr_alloc_huge(wr_shard_core_n(s->core) * sizeof(float));
    rb->t0 = wr_now();
    wr_info("replacing a lost shard: rebuilding [%llu, +%zu) from the replicas of %d workers",
            (unsigned long long)wr_shard_core_lo(s->core), wr_shard_core_n(s->core), s->mem.n_cur);
}

void shard_rebuild_free(shard_node *s) {
    free(s->rb.x);
    free(s->rb.offered);
    memset(&s->rb, 0, sizeof s->rb);
}

// Stops the job: two replicas of the same step differ.
static int diverged(shard_node *s, int rank, uint64_t d) {
    wr_pmsg e;
    wr_pmsg_init(&e, WR_MT_SHUTDOWN);
    e.code = WR_EXIT_DIVERGED;
    snprintf(e.reason, sizeof e.reason,
             "shard %d cannot rebuild: replicas of step %llu differ (rank %d: %016llx; %d others: %016llx)",
             s->index, (unsigned long long)s->rb.step, rank, (unsigned long long)d, s->rb.agree,
             (unsigned long long)s->rb.digest);
    wr_error("%s", e.reason);
    shard_send_coord(s, &e);
    return WR_EXIT_DIVERGED;
}

// Every member offered: the newest replica becomes the master copy and each
// worker gets it back.
static int rebuilt(shard_node *s) {
    shard_rebuild *rb = &s->rb;
    char err[WR_ERR_LEN];
    if (wr_shard_core_restore(s->core, rb->step, rb->x, NULL, NULL, err) != WR_OK) {
        wr_error("%s", err);
        return WR_EXIT_FAILURE;
    }
    wr_info("rebuilt at step %llu from %d replicas (%d of that step, identical: digest %016llx) in %.2f s",
            (unsigned long long)rb->step, rb->got, rb->agree, (unsigned long long)rb->digest,
            wr_now() - rb->t0);
    for (int i = 0; i < s->mem.n_cur; i++) {
        int r = s->mem.cur[i];
        if (rb->offered[r]) shard_send_params(s, s->bound[r].id, s->bound[r].len);
    }
    shard_rebuild_free(s);
    shard_members_expect(s);
    shard_answer_pulls(s);
    return SHARD_GO_ON;
}

// The offer's range and payload. WR_OK or WR_EPROTO (err says why).
static int check_offer(const shard_node *s, const wr_pmsg *h, const wr_msg *m, char *err) {
    size_t n = wr_shard_core_n(s->core);
    if (h->shard != s->index || h->offset != wr_shard_core_lo(s->core) || h->n_elems != n ||
        h->codec != WR_CODEC_FP32 || m->payload.len != n * sizeof(float))
        return wr_err(err, WR_EPROTO, "PARAMS from rank %d is not an fp32 replica of shard %d's range",
                      h->rank, s->index);
    if (s->rb.offered[h->rank]) return wr_err(err, WR_EPROTO, "rank %d offered its replica twice", h->rank);
    if (h->step > (uint64_t)s->total_steps)
        return wr_err(err, WR_EPROTO, "rank %d offers step %llu, the job has %lld", h->rank,
                      (unsigned long long)h->step, (long long)s->total_steps);
    return WR_OK;
}

int shard_rebuild_offer(shard_node *s, wr_msg *m, const wr_pmsg *h) {
    shard_rebuild *rb = &s->rb;
    char err[WR_ERR_LEN];
    if (check_offer(s, h, m, err) != WR_OK) {
        wr_warn("%s", err);
        wr_send_error(s->router, m->peer, m->peer_len, s->cfg.job_id, s->mem.epoch, WR_EC_PROTOCOL, err,
                      &s->scratch);
        wr_msg_release(m);
        return SHARD_GO_ON;
    }
    uint64_t d = wr_digest64(m->payload.data, m->payload.len);
    if (rb->got == 0 || h->step > rb->step) {
        memcpy(rb->x, m->payload.data, m->payload.len);
        rb->step = h->step;
        rb->digest = d;
        rb->agree = 1;
    } else if (h->step == rb->step && d != rb->digest) {
        wr_msg_release(m);
        return diverged(s, h->rank, d);
    } else if (h->step == rb->step) {
        rb->agree++;
    }
    wr_debug("rank %d offers its replica of step %llu", h->rank, (unsigned long long)h->step);
    rb->offered[h->rank] = 1;
    rb->got++;
    wr_msg_release(m);
    return rb->got >= s->mem.n_cur ? rebuilt(s) : SHARD_GO_ON;
}

int shard_rebuild_check_timeout(shard_node *s) {
    if (wr_now() - s->rb.t0 <= s->cfg.step_timeout) return SHARD_GO_ON;
    int *missing = wr_calloc((size_t)s->mem.n_cur + 1, sizeof *missing), k = 0;
    for (int i = 0; i < s->mem.n_cur; i++)
        if (!s->rb.offered[s->mem.cur[i]]) missing[k++] = s->mem.cur[i];
    char list[512];
    shard_format_ranks(missing, k, list, sizeof list);
    free(missing);
    return shard_fail(s, WR_EC_TIMEOUT, WR_EXIT_FAILURE,
                      "shard %d: no replica from rank(s) %s within %g s (step_timeout)", s->index, list,
                      s->cfg.step_timeout);
}
