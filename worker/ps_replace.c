// ps_replace.c — the worker's side of a shard restart (docs/ARCHITECTURE.md,
// "Shard restart"; wire: docs/PROTOCOL.md): a lost shard's connection does
// not end the step; a map with 'rb' = 1 names its replacement, which this
// worker helps rebuild with its replica of the range.
#include <stdio.h>
#include <string.h>

#include "birder.h"
#include "log.h"
#include "ps.h"

void wr_ps_note_replacement(wr_ps *w, const wr_pmsg *h) {
    int s = h->shard;
    if (s < 0 || s >= w->n_shards || (uint32_t)s >= h->n_shards) return;
    wr_ps_shard *sc = &w->sh[s];
    if (h->shards[s].lo != sc->lo || h->shards[s].hi != sc->hi) return;  // not this job's layout
    snprintf(sc->next_addr, sizeof sc->next_addr, "%s", h->shards[s].addr);
    memcpy(sc->next_key, h->shards[s].key, sizeof sc->next_key);
    sc->replaced = 1;
    wr_info("shard %d was replaced (%s): this worker offers its replica of the range", s, sc->next_addr);
}

int wr_ps_shard_lost(wr_ps *w, int s, int64_t t, char *err) {
    wr_ps_shard *sc = &w->sh[s];
    if (!sc->lost)
        wr_warn("step %lld: lost the connection to shard %d (%s); waiting for the coordinator to replace it",
                (long long)t, s, sc->addr);
    sc->lost = 1;
    wr_close(sc->ep);
    return wr_ps_connect_shard(w, s, err);
}

// PARAMS{step, this replica of shard s's range} to its replacement (copied:
// x changes right after).
static int offer(wr_ps *w, int s, uint64_t step, char *err) {
    wr_ps_shard *sc = &w->sh[s];
    wr_pmsg h;
    wr_ps_hdr(w, &h, WR_MT_PARAMS);
    h.step = step;
    h.shard = s;
    h.offset = sc->lo;
    h.n_elems = sc->hi - sc->lo;
    h.codec = WR_CODEC_FP32;
    char e2[WR_ERR_LEN];
    int rc = wr_ps_send(w, sc->ep, &h, w->x + sc->lo, (size_t)h.n_elems * 4, NULL, NULL,
                        (int)(w->cfg.step_timeout * 1000), NULL, e2);
    if (rc != WR_OK)
        return wr_ps_fail(w, wr_ps_ec_of(rc), WR_EXIT_FAILURE, err, "offering shard %d (%s) its range: %s", s,
                          sc->addr, e2);
    return WR_EXIT_OK;
}

// The replacement's PARAMS reply: its step into *step, its range into x
// when take. 0, or an exit status (the coordinator may stop the job meanwhile).
static int await_rebuilt(wr_ps *w, int s, int64_t t, uint64_t *step, int take, char *err) {
    wr_ps_shard *sc = &w->sh[s];
    size_t n = (size_t)(sc->hi - sc->lo);
    double t0 = wr_now();
    while (wr_now() - t0 < w->cfg.step_timeout) {
        wr_msg msg;
        wr_pmsg h;
        char e2[WR_ERR_LEN];
        int rc = wr_ps_recv(sc->ep, 100, NULL, &msg, &h, e2);
        if (rc == WR_OK) {
            int ok = h.type == WR_MT_PARAMS && h.offset == sc->lo && h.n_elems == n &&
                     msg.payload.len == n * 4;
            if (ok && take && h.step == (uint64_t)t) memcpy(w->x + sc->lo, msg.payload.data, n * 4);
            *step = h.step;
            int what = h.type;
            wr_msg_release(&msg);
            wr_pmsg_clear(&h);
            if (ok) return WR_EXIT_OK;
            wr_warn("shard %d: %s while waiting for its rebuilt range", s, wr_msg_type_name(what));
        } else if (rc != WR_ETIMEDOUT && rc != WR_EAGAIN) {
            return wr_ps_fail(w, WR_EC_INTERNAL, WR_EXIT_FAILURE, err, "shard %d (%s) after the offer: %s", s,
                              sc->addr, e2);
        }
        int st = wr_ps_poll_coordinator(w, t, 0, err);
        if (st) return st;
    }
    return wr_ps_fail(
        w, WR_EC_TIMEOUT, WR_EXIT_FAILURE, err,
        "shard %d (%s) did not answer the offer of this worker's replica within step_timeout %g s", s,
        sc->addr, w->cfg.step_timeout);
}

// This step's push to shard s again: the same bits (the Birder state has
// moved on, so they are not encoded again), copied.
static int push_again(wr_ps *w, int s, int64_t t, char *err) {
    wr_ps_shard *sc = &w->sh[s];
    size_t n = (size_t)(sc->hi - sc->lo);
    wr_pmsg h;
    wr_ps_hdr(w, &h, WR_MT_PUSH);
    h.step = (uint64_t)t;
    h.shard = s;
    h.offset = sc->lo;
    h.n_elems = n;
    h.codec = WR_CODEC_BITS;
    char e2[WR_ERR_LEN];
    int rc = wr_ps_send(w, sc->ep, &h, sc->push[sc->cur ^ 1].data, wr_birder_words(n) * 8, NULL, NULL,
                        (int)(w->cfg.step_timeout * 1000), NULL, e2);
    if (rc != WR_OK)
        return wr_ps_fail(w, wr_ps_ec_of(rc), WR_EXIT_FAILURE, err, "step %lld: PUSH again to shard %d: %s",
                          (long long)t, s, e2);
    return WR_EXIT_OK;
}

// One replacement: 1 when its reply was this step's broadcast, 0, or -(status).
static int follow(wr_ps *w, int s, int64_t t, char *err) {
    wr_ps_shard *sc = &w->sh[s];
    sc->replaced = sc->lost = 0;
    snprintf(sc->addr, sizeof sc->addr, "%s", sc->next_addr);
    memcpy(sc->key, sc->next_key, sizeof sc->key);
    wr_close(sc->ep);
    int st = wr_ps_connect_shard(w, s, err);
    // pending: pushed step t, its broadcast not applied: the last applied is t - 1
    uint64_t applied = sc->pending ? (uint64_t)(t - 1) : (uint64_t)t;
    if (!st) st = offer(w, s, applied, err);
    uint64_t step = 0;
    if (!st) st = await_rebuilt(w, s, t, &step, sc->pending, err);
    if (st) return -st;
    wr_info("shard %d rebuilt at step %llu (this worker had applied step %llu)", s, (unsigned long long)step,
            (unsigned long long)applied);
    if (sc->pending && step == (uint64_t)t) {  // the broadcast this worker missed
        sc->pending = 0;
        return 1;
    }
    if (step != applied)
        return -wr_ps_fail(w, WR_EC_INTERNAL, WR_EXIT_FAILURE, err,
                           "shard %d was rebuilt at step %llu, this worker had applied step %llu", s,
                           (unsigned long long)step, (unsigned long long)applied);
    if (sc->pending && w->cfg.codec == WR_JOB_CODEC_BIRDER) {
        int ps = push_again(w, s, t, err);
        if (ps) return -ps;
    }
    return 0;
}

int wr_ps_follow_replacements(wr_ps *w, int64_t t, char *err) {
    int taken = 0;
    for (int s = 0; s < w->n_shards; s++) {
        if (!w->sh[s].replaced) continue;
        int got = follow(w, s, t, err);
        if (got < 0) return got;
        taken += got;
    }
    return taken;
}
