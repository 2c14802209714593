// shard_members.c — membership epochs at the shard (docs/ARCHITECTURE.md,
// "Membership epochs"): which ranks a step is collected from, the pending
// map a FENCE acknowledges, and the commit that starts it at a step every
// shard agrees on.
#include "shard_internal.h"

// Messages are cut to their buffers on purpose.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

// The ranks of a map's member list, in map order (malloc'd; *n set).
static int *ranks_of(const wr_worker_info *w, int n) {
    int *r = wr_calloc((size_t)(n > 0 ? n : 1), sizeof *r);
    for (int i = 0; i < n; i++) r[i] = w[i].rank;
    return r;
}

static int has_rank(const int *ranks, int n, int r) {
    for (int i = 0; i < n; i++)
        if (ranks[i] == r) return 1;
    return 0;
}

void shard_members_init(shard_node *s, const wr_cluster *cl) {
    shard_members *m = &s->mem;
    m->epoch = cl->epoch;
    m->start = cl->start_step ? cl->start_step : 1;
    m->n_cur = cl->n_workers;
    m->cur = ranks_of(cl->workers, cl->n_workers);
    // A replacement shard may start before its epoch's start step: those
    // steps come from the same members (a joiner among them is not expected
    // before its start: a shard lost within the two steps after a join is the
    // one case this does not cover).
    m->n_before = cl->n_workers;
    m->before = ranks_of(cl->workers, cl->n_workers);
    shard_members_expect(s);
}

uint64_t shard_epoch_at(const shard_node *s, uint64_t t) {
    return t >= s->mem.start || s->mem.epoch <= 1 ? s->mem.epoch : s->mem.epoch - 1;
}

void shard_members_expect(shard_node *s) {
    const shard_members *m = &s->mem;
    uint64_t t = wr_shard_core_step(s->core) + 1;
    if (t >= m->start)
        wr_shard_core_set_expected(s->core, m->cur, m->n_cur);
    else
        wr_shard_core_set_expected(s->core, m->before, m->n_before);
}

// FENCE{pending epoch, step = last completed} to the coordinator
// (shard_send_coord stamps the pending epoch while one is held).
static void send_ack(shard_node *s) {
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_FENCE);
    h.step = wr_shard_core_step(s->core);
    shard_send_coord(s, &h);
}

// Checks that a newer map keeps this shard's range and d. WR_OK or WR_ERR.
static int same_layout(const shard_node *s, const wr_cluster *cl, char *err) {
    uint64_t lo = wr_shard_core_lo(s->core), hi = lo + wr_shard_core_n(s->core);
    if (cl->my_shard != s->index || cl->shards[s->index].lo != lo || cl->shards[s->index].hi != hi)
        return wr_err(err, WR_ERR,
                      "cluster map of epoch %llu gives shard %d [%llu, %llu), this shard is %d [%llu, %llu)",
                      (unsigned long long)cl->epoch, cl->my_shard,
                      (unsigned long long)cl->shards[cl->my_shard].lo,
                      (unsigned long long)cl->shards[cl->my_shard].hi, s->index, (unsigned long long)lo,
                      (unsigned long long)hi);
    return WR_OK;
}

int shard_members_pending(shard_node *s, wr_pmsg *map) {
    shard_members *m = &s->mem;
    if (map->epoch <= m->epoch) {
        wr_debug("ignoring a cluster map of epoch %llu (epoch %llu is in force)",
                 (unsigned long long)map->epoch, (unsigned long long)m->epoch);
        return SHARD_GO_ON;
    }
    wr_cluster cl;
    char err[WR_ERR_LEN];
    if (wr_cluster_from_map(&cl, map, WR_ROLE_SHARD, err) != WR_OK || same_layout(s, &cl, err) != WR_OK) {
        wr_cluster_free(&cl);
        wr_error("coordinator sent a cluster map this shard cannot follow: %s", err);
        return WR_EXIT_FAILURE;
    }
    int n = cl.n_workers, *ranks = ranks_of(cl.workers, n);
    wr_cluster_free(&cl);
    if (shard_auth_take(s, ranks, n, map, err) != WR_OK) {
        free(ranks);
        wr_error("%s", err);
        return WR_EXIT_FAILURE;
    }
    free(m->pend);
    m->pend = ranks;
    m->n_pend = n;
    m->pend_epoch = map->epoch;
    m->hold = 1;
    s->step_t0 = wr_now();  // the step timeout counts from here again
    wr_info("epoch %llu pending (%d workers); holding after step %llu until the coordinator commits it",
            (unsigned long long)map->epoch, n, (unsigned long long)wr_shard_core_step(s->core));
    send_ack(s);
    return SHARD_GO_ON;
}

// The members before the new start step: the old ones still in the job.
static void set_before(shard_members *m) {
    free(m->before);
    m->before = wr_calloc((size_t)(m->n_cur > 0 ? m->n_cur : 1), sizeof *m->before);
    m->n_before = 0;
    for (int i = 0; i < m->n_cur; i++)
        if (has_rank(m->pend, m->n_pend, m->cur[i])) m->before[m->n_before++] = m->cur[i];
}

int shard_members_resume(shard_node *s) {
    shard_members *m = &s->mem;
    uint64_t step;
    char err[WR_ERR_LEN];
    if (shard_ckpt_load_newest(s, &step, err) != WR_OK)
        return shard_fail(s, WR_EC_CONFIG, WR_EXIT_CONFIG, "shard %d cannot resume: %s", s->index, err);
    m->pend = wr_calloc((size_t)(m->n_cur > 0 ? m->n_cur : 1), sizeof *m->pend);
    memcpy(m->pend, m->cur, (size_t)m->n_cur * sizeof *m->cur);
    m->n_pend = m->n_cur;
    m->pend_epoch = m->epoch;
    m->epoch = 0;
    m->hold = m->resume = 1;
    send_ack(s);
    return SHARD_GO_ON;
}

// Resume: back to the step every shard holds before the epoch starts.
static int resume_to(shard_node *s, uint64_t step) {
    char err[WR_ERR_LEN];
    s->mem.resume = 0;
    if (shard_ckpt_load_step(s, step, err) == WR_OK) return SHARD_GO_ON;
    return shard_fail(s, WR_EC_CONFIG, WR_EXIT_CONFIG, "shard %d cannot resume at step %llu: %s", s->index,
                      (unsigned long long)step, err);
}

int shard_members_commit(shard_node *s, const wr_pmsg *h) {
    shard_members *m = &s->mem;
    if (m->resume && h->epoch == m->pend_epoch && h->step >= 1) {
        int st = resume_to(s, h->step - 1);
        if (st != SHARD_GO_ON) return st;
    }
    uint64_t done = wr_shard_core_step(s->core);
    // The start step lies after every step completed before the hold.
    if (h->epoch != m->pend_epoch || !m->hold || h->step <= done) {
        wr_warn("ignoring FENCE for epoch %llu from step %llu (pending epoch %llu, last completed step %llu)",
                (unsigned long long)h->epoch, (unsigned long long)h->step, (unsigned long long)m->pend_epoch,
                (unsigned long long)done);
        return SHARD_GO_ON;
    }
    set_before(m);
    free(m->cur);
    m->cur = m->pend;
    m->n_cur = m->n_pend;
    m->pend = NULL;
    m->n_pend = 0;
    m->epoch = m->pend_epoch;
    m->pend_epoch = 0;
    m->start = h->step;
    m->hold = 0;
    s->step_t0 = wr_now();
    wr_info("epoch %llu from step %llu: %d workers (%d of them before it)", (unsigned long long)m->epoch,
            (unsigned long long)m->start, m->n_cur, m->n_before);
    shard_members_expect(s);
    shard_answer_pulls(s);  // PULLs held during a resume
    return shard_advance(s);
}

void shard_members_free(shard_node *s) {
    free(s->mem.cur);
    free(s->mem.before);
    free(s->mem.pend);
    memset(&s->mem, 0, sizeof s->mem);
}
