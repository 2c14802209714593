// ps_epoch.c — membership epochs in the ps exchange (ps.h; the design is
// docs/ARCHITECTURE.md, "Membership epochs: the worker").
//
// The coordinator sends every member the cluster map of a new epoch once the
// shards committed it, with the step 'sf' from which its membership pushes.
// The worker keeps such maps as pending (whenever it reads the coordinator
// socket: during every wait) and takes each at the start of its step 'sf'
// (members). A shard switches at the commit, before the map reaches the
// workers, so every BROADCAST of step sf - 1 carries the new epoch: a worker
// that sees an epoch it holds no map of waits for that map after the step.
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cluster.h"
#include "log.h"
#include "ps.h"
#include "train.h"
#include "wr_common.h"

#define REMOVED_PREFIX "removed from the job"

// The newest epoch this worker knows a map of.
static uint64_t newest_epoch(const wr_ps *w) {
    return w->n_pending ? w->pending[w->n_pending - 1].epoch : w->epoch;
}

// The shards of a later map must be those this worker is connected to.
static int same_shards(const wr_ps *w, const wr_cluster *c) {
    if (c->n_shards != w->n_shards || c->n_params != w->d) return 0;
    for (int s = 0; s < c->n_shards; s++)
        if (c->shards[s].lo != w->sh[s].lo || c->shards[s].hi != w->sh[s].hi ||
            strcmp(c->shards[s].addr, w->sh[s].addr) != 0)
            return 0;
    return 1;
}

// Keeps a CLUSTER_MAP of a later epoch as pending. A map of the newest
// pending epoch again (re-sent) replaces it; older ones are ignored.
static int keep_map(wr_ps *w, wr_pmsg *h, char *err) {
    char e2[WR_ERR_LEN];
    if (h->rank != w->rank) {
        wr_warn("ignoring a cluster map of epoch %llu addressed to rank %d (this worker is rank %d)",
                (unsigned long long)h->epoch, h->rank, w->rank);
        return 0;
    }
    if (h->epoch <= w->epoch || (w->n_pending && h->epoch < newest_epoch(w))) {
        wr_debug("ignoring a cluster map of epoch %llu (epoch %llu in force, %llu the newest held)",
                 (unsigned long long)h->epoch, (unsigned long long)w->epoch,
                 (unsigned long long)newest_epoch(w));
        return 0;
    }
    wr_cluster c;
    if (wr_cluster_from_map(&c, h, WR_ROLE_WORKER, e2) != WR_OK)
        return wr_ps_fail(w, WR_EC_PROTOCOL, WR_EXIT_FAILURE, err, "cluster map of epoch %llu: %s",
                          (unsigned long long)h->epoch, e2);
    wr_ps_map p = {.epoch = c.epoch,
                   .start = (int64_t)c.start_step,
                   .position = wr_cluster_position(&c, w->rank),
                   .n = c.n_workers,
                   .has_token = h->has_token};
    memcpy(p.token, h->token, WR_TOKEN_LEN);
    int same = same_shards(w, &c);
    wr_cluster_free(&c);
    if (!same)
        return wr_ps_fail(w, WR_EC_PROTOCOL, WR_EXIT_FAILURE, err,
                          "cluster map of epoch %llu changes the shards or their ranges: this worker "
                          "follows membership changes of workers only",
                          (unsigned long long)p.epoch);
    if (w->n_pending && w->pending[w->n_pending - 1].epoch == p.epoch) w->n_pending--;
    if (w->n_pending == WR_PS_PENDING_MAX)
        return wr_ps_fail(w, WR_EC_INTERNAL, WR_EXIT_FAILURE, err,
                          "more than %d cluster maps pending (epoch %llu in force, epoch %llu arrived)",
                          WR_PS_PENDING_MAX, (unsigned long long)w->epoch, (unsigned long long)p.epoch);
    w->pending[w->n_pending++] = p;
    wr_debug("cluster map of epoch %llu held: position %d of %d workers from step %lld",
             (unsigned long long)p.epoch, p.position, p.n, (long long)p.start);
    return 0;
}

int wr_ps_coord_message(wr_ps *w, wr_pmsg *h, char *err) {
    const char *sep = h->reason[0] ? ": " : "";
    if (h->type == WR_MT_SHUTDOWN) {
        int st = h->code > 0 ? h->code : 0;
        if (st)
            return wr_ps_fail(w, 0, st, err, "coordinator shut the job down with status %d%s%s", st, sep,
                              h->reason);
        // The job ended well without this worker (it was still joining):
        // the coordinator's status, 0, is this worker's too.
        wr_info("coordinator: the job ended with status 0 (%s) before this worker took part",
                h->reason[0] ? h->reason : "job done");
        return wr_ps_fail(w, 0, WR_EXCHANGE_JOB_DONE, err, "the job ended");
    }
    if (h->type == WR_MT_ERROR && w->epoch >= 1 && h->code == WR_EC_REJECTED &&
        strncmp(h->reason, REMOVED_PREFIX, strlen(REMOVED_PREFIX)) == 0) {
        wr_warn("coordinator: %s; registering again", h->reason);
        return WR_PS_REJOIN;
    }
    if (h->type == WR_MT_ERROR)
        return wr_ps_fail(w, 0, h->code == WR_EC_CONFIG ? WR_EXIT_CONFIG : WR_EXIT_FAILURE, err,
                          "coordinator refused: %s", h->reason);
    if (h->type == WR_MT_CLUSTER_MAP && w->epoch >= 1) wr_ps_coord_back(w);
    if (h->type == WR_MT_CLUSTER_MAP && w->epoch >= 1 && h->rebuild) {  // a shard replaced
        wr_ps_note_replacement(w, h);
        return WR_EXIT_OK;
    }
    if (h->type == WR_MT_CLUSTER_MAP && w->epoch >= 1 && h->epoch >= 1) return keep_map(w, h, err);
    return WR_EXIT_OK;
}

int wr_ps_poll_coordinator(wr_ps *w, int64_t t, int timeout_ms, char *err) {
    int ready = 0;
    char e2[WR_ERR_LEN];
    wr_endpoint *ce = w->coord;
    int st0 = wr_ps_coord_tick(w, t, err);
    if (st0) return st0;
    if (w->coord_down) {  // not polled (ready at once): wait a little instead
        struct timespec ts = {0, (long)WR_MIN(timeout_ms, 50) * 1000000L};
        nanosleep(&ts, NULL);
        return WR_EXIT_OK;
    }
    if (wr_poll(&ce, 1, &ready, timeout_ms, e2) < 0)
        return wr_ps_fail(w, WR_EC_INTERNAL, WR_EXIT_FAILURE, err, "step %lld: poll: %s", (long long)t, e2);
    for (int k = 0; ready && k < 64; k++) {  // what is queued, boundedly
        wr_msg msg;
        wr_pmsg h;
        int rc = wr_ps_recv(ce, 0, NULL, &msg, &h, e2);
        if (rc == WR_ETIMEDOUT || rc == WR_EAGAIN) return WR_EXIT_OK;
        if (rc == WR_EPROTO) {
            wr_warn("from coordinator: %s", e2);
            continue;
        }
        if (rc == WR_ECLOSED) return wr_ps_coord_closed(w, t, e2, err);
        if (rc != WR_OK)
            return wr_ps_fail(w, WR_EC_INTERNAL, WR_EXIT_FAILURE, err,
                              "step %lld: lost connection to coordinator at %s: %s", (long long)t,
                              w->o->coordinator, e2);
        wr_msg_release(&msg);
        int st = wr_ps_coord_message(w, &h, err);
        wr_pmsg_clear(&h);
        if (st) return st;
    }
    return WR_EXIT_OK;
}

int wr_ps_peer_lost(wr_ps *w, int64_t t, char *err, const char *fmt, ...) {
    char what[WR_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    wr_warn("step %lld: %s; waiting for the coordinator's word on it", (long long)t, what);
    const double bound = w->cfg.heartbeat_timeout + w->cfg.heartbeat_interval + 1.0;
    double t0 = wr_now();
    for (;;) {
        // A lost coordinator has its own bound (status 6, wr_ps_coord_tick);
        // once it took this worker back it has the whole of this one.
        if (w->coord_lost) t0 = wr_now();
        if (wr_now() - t0 >= bound) break;
        int st = wr_ps_poll_coordinator(w, t, 100, err);
        if (st) return st;
    }
    return wr_ps_fail(w, WR_EC_INTERNAL, WR_EXIT_FAILURE, err,
                      "step %lld: %s (the coordinator said nothing within %g s)", (long long)t, what, bound);
}

int wr_ps_await_map(wr_ps *w, int64_t t, char *err) {
    if (w->seen_epoch <= newest_epoch(w)) return WR_EXIT_OK;
    wr_debug("step %lld: a shard is at epoch %llu: waiting for its cluster map", (long long)t,
             (unsigned long long)w->seen_epoch);
    double t0 = wr_now();
    while (w->seen_epoch > newest_epoch(w)) {
        double left = w->cfg.step_timeout - (wr_now() - t0);
        if (left <= 0)
            return wr_ps_fail(w, WR_EC_TIMEOUT, WR_EXIT_FAILURE, err,
                              "step %lld: a shard is at epoch %llu but no cluster map of it came from the "
                              "coordinator within step_timeout %g s",
                              (long long)t, (unsigned long long)w->seen_epoch, w->cfg.step_timeout);
        int st = wr_ps_poll_coordinator(w, t, (int)(left * 1000) + 1, err);
        if (st) return st;
    }
    return WR_EXIT_OK;
}

int wr_ps_members(void *self, int64_t t, wr_exchange_members *m, char *err) {
    (void)err;
    wr_ps *w = self;
    int taken = 0;
    while (taken < w->n_pending && w->pending[taken].start <= t) {
        const wr_ps_map *p = &w->pending[taken++];
        w->epoch = p->epoch;
        w->position = p->position;
        w->n_workers = w->job->n_workers = p->n;
        if (p->has_token) memcpy(w->token, p->token, WR_TOKEN_LEN);
        wr_debug("step %lld: epoch %llu in force (from step %lld)", (long long)t,
                 (unsigned long long)p->epoch, (long long)p->start);
    }
    if (taken) {
        memmove(w->pending, w->pending + taken, (size_t)(w->n_pending - taken) * sizeof *w->pending);
        w->n_pending -= taken;
    }
    m->position = w->position;
    m->n = w->n_workers;
    m->epoch = w->epoch;
    return WR_EXIT_OK;
}
