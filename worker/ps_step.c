// ps_step.c — one step of the ps exchange (exchange.h, ps.h), and digests.
//
// Step path (no allocation, no sleeps, no info-level log lines): for each
// shard s, Birder-encode g[lo_s:hi_s) into one of two reused per-shard
// buffers and PUSH it zero-copy (the transport's free callback marks the
// buffer reusable; fp32: PUSH the gradient range itself); then poll every
// shard socket (and the coordinator's, for SHUTDOWN, ERROR and cluster maps)
// and apply each BROADCAST as it arrives (warn lines only past stall_report).
// After the step, a shard's newer epoch waits for its map (ps_epoch.c); a
// removal found during the step rejoins the job (ps_join.c).
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "birder.h"
#include "digest.h"
#include "log.h"
#include "parallel.h"
#include "allreduce.h"
#include "ps.h"
#include "wckpt.h"
#include "train.h"
#include "wr_common.h"

void wr_ps_step_init(wr_ps *w) {
    if (w->cfg.codec != WR_JOB_CODEC_BIRDER) return;
    w->m = wr_alloc_huge(w->d * sizeof(float));
    w->b = wr_alloc_huge(w->d * sizeof(float));
    for (int s = 0; s < w->n_shards; s++)
        for (int k = 0; k < 2; k++) {
            size_t bytes = wr_birder_words((size_t)(w->sh[s].hi - w->sh[s].lo)) * 8;
            w->sh[s].push[k].data = wr_alloc_vec(bytes ? bytes : 64);
            w->sh[s].push[k].cap = bytes;
        }
}

static void zc_release(void *data, void *hint) {
    (void)data;
    // acq_rel: reads the 1 the main thread stored with release before the
    // send, so the ordering libzmq provides is visible to ThreadSanitizer too.
    atomic_exchange_explicit(&((wr_ps_zc_buf *)hint)->busy, 0, memory_order_acq_rel);
}

static void fp32_release(void *data, void *hint) {
    (void)data;
    atomic_fetch_sub_explicit((atomic_int *)hint, 1, memory_order_acq_rel);
}

// Payload bytes as uint64 words: zmq frames are malloc'd (aligned) except very
// small ones; copy those into scratch so the kernels read aligned words.
static const uint64_t *aligned_words(wr_ps *w, const void *p, size_t len) {
    if (((uintptr_t)p & 7) == 0) return p;
    if (w->align_cap < len) {
        free(w->align_scratch);
        w->align_scratch = wr_alloc_vec(len);
        w->align_cap = len;
    }
    memcpy(w->align_scratch, p, len);
    return w->align_scratch;
}

// Waits until the transport released a zero-copy PUSH (*busy drops to 0; its
// free callback may run on the I/O thread). Normally immediate: a step's
// broadcast arrives only after our push was read. Otherwise it sleeps with a
// doubling backoff from 20 us (no spinning core), then polls the coordinator
// socket in 1 ms slices, so a SHUTDOWN still stops a long wait. Bounded by
// step_timeout. Returns 0, or the exit status (err says why; `what` names the
// buffer).
static int wait_released(wr_ps *w, atomic_int *busy, int64_t t, const char *what, char *err) {
    double t0 = wr_now();
    long ns = 20 * 1000;
    while (atomic_load_explicit(busy, memory_order_acquire) > 0) {
        if (wr_now() - t0 > w->cfg.step_timeout)
            return wr_ps_fail(w, WR_EC_TIMEOUT, WR_EXIT_FAILURE, err,
                              "step %lld: the transport never released %s within step_timeout %g s",
                              (long long)t, what, w->cfg.step_timeout);
        if (ns < 1000 * 1000) {
            struct timespec ts = {0, ns};
            nanosleep(&ts, NULL);
            ns *= 2;
            continue;
        }
        int st = wr_ps_poll_coordinator(w, t, 1, err);
        if (st) return st;
    }
    return WR_EXIT_OK;
}

// ---- pushing -------------------------------------------------------------------------

// PUSH of shard s's range of step t: Birder bits from a free push buffer, or

// ---- the codec on the job's threads (common/parallel.h: the same bits) ------------

// Below this many elements a slice is encoded or applied on one thread.
#define PS_PAR_MIN ((size_t)1 << 16)

// The job's --threads (1 before the loop has given the exchange its job:
// tests that drive the exchange by hand).
static int codec_threads(const wr_ps *w) { return w->job ? w->job->threads : 1; }

typedef struct {
    wr_ps *w;
    size_t base;  // the slice's first element in the whole vector (a multiple of 64)
    wr_rng_key key;
    uint64_t *bits;  // the slice's bits
} encode_job;

static void encode_range(void *ctx, size_t lo, size_t hi) {
    const encode_job *e = ctx;
    size_t at = e->base + lo;
    wr_birder_encode(e->w->g + at, e->w->m + at, e->w->b + at, hi - lo, e->w->cfg.beta, e->key, at,
                     e->bits + lo / 64);
}

void wr_ps_encode(wr_ps *w, size_t base, size_t n, wr_rng_key key, uint64_t *bits) {
    encode_job e = {w, base, key, bits};
    wr_par_ranges(codec_threads(w), n, PS_PAR_MIN, encode_range, &e);
}

typedef struct {
    float *x;
    const uint64_t *bits;
    float lr, wd;
} apply_job;

static void apply_range(void *ctx, size_t lo, size_t hi) {
    const apply_job *a = ctx;
    wr_birder_apply_bits(a->x + lo, a->bits + lo / 64, hi - lo, a->lr, a->wd);
}

// A BROADCAST's bits applied to the slice x (n elements).
static void apply_slice(wr_ps *w, float *x, const uint64_t *bits, size_t n, float lr) {
    apply_job a = {x, bits, lr, w->cfg.wd};
    wr_par_ranges(codec_threads(w), n, PS_PAR_MIN, apply_range, &a);
}

// the fp32 gradient range itself. Both zero-copy.
static int push_range(wr_ps *w, int s, wr_exchange_step *st, char *err) {
    wr_ps_shard *sc = &w->sh[s];
    size_t n = (size_t)(sc->hi - sc->lo);
    wr_pmsg h;
    wr_ps_hdr(w, &h, WR_MT_PUSH);
    h.step = (uint64_t)st->t;
    h.shard = s;
    h.offset = sc->lo;
    h.n_elems = n;
    int timeout = (int)(w->cfg.step_timeout * 1000), rc;
    char e2[WR_ERR_LEN];
    if (w->cfg.codec == WR_JOB_CODEC_BIRDER) {
        wr_ps_zc_buf *zb = &sc->push[sc->cur];
        sc->cur ^= 1;
        char what[WR_ADDR_MAX + 64];
        snprintf(what, sizeof what, "the push buffer for shard %d (%s)", s, sc->addr);
        int ws = wait_released(w, &zb->busy, st->t, what, err);
        if (ws) return ws;
        double t0 = wr_now();
        wr_rng_key key = wr_rng_key_make(w->cfg.seed, (uint64_t)w->rank, (uint64_t)st->t);
        wr_ps_encode(w, sc->lo, n, key, zb->data);
        st->t_codec += wr_now() - t0;
        h.codec = WR_CODEC_BITS;
        if (sc->lost) {  // its replacement gets these bits once it is rebuilt (ps_replace.c)
            sc->pending = 1;
            return WR_EXIT_OK;
        }
        atomic_store_explicit(&zb->busy, 1, memory_order_release);
        rc = wr_ps_send(w, sc->ep, &h, zb->data, wr_birder_words(n) * 8, zc_release, zb, timeout,
                        &st->bytes_sent, e2);
    } else {
        h.codec = WR_CODEC_FP32;
        atomic_fetch_add_explicit(&w->fp32_busy, 1, memory_order_release);
        rc = wr_ps_send(w, sc->ep, &h, w->g + sc->lo, n * 4, fp32_release, &w->fp32_busy, timeout,
                        &st->bytes_sent, e2);
    }
    if (rc == WR_ECLOSED) {  // the shard went away under this PUSH: as a connection lost on recv,
        sc->pending = 1;     // its replacement gets this step's bits (ps_replace.c; fp32: the job stops)
        return wr_ps_shard_lost(w, s, st->t, err);
    }
    if (rc != WR_OK)
        return wr_ps_fail(w, wr_ps_ec_of(rc), WR_EXIT_FAILURE, err, "step %lld: PUSH to shard %d (%s): %s",
                          (long long)st->t, s, sc->addr, e2);
    sc->pending = 1;
    return WR_EXIT_OK;
}

// ---- applying ------------------------------------------------------------------------

// A shard's ERROR during step t. A removed worker's pushes are refused
// ("not authorized") before the coordinator's word reaches it, and a shard
// may refuse because the job is stopping: the coordinator socket gets a
// grace of max(2 s, 3 heartbeat intervals) (at most step_timeout) to say so
// (SHUTDOWN, removed -> WR_PS_REJOIN) before the ERROR stops the worker.
static int shard_error(wr_ps *w, int i, const wr_pmsg *h, int64_t t, char *err) {
    wr_warn("step %lld: shard %d (%s) refused: %s", (long long)t, i, w->sh[i].addr, h->reason);
    double grace = 3 * w->cfg.heartbeat_interval;
    if (grace < 2) grace = 2;
    if (grace > w->cfg.step_timeout) grace = w->cfg.step_timeout;
    double t0 = wr_now();
    for (double left = grace; left > 0; left = grace - (wr_now() - t0)) {
        int st = wr_ps_poll_coordinator(w, t, (int)(left * 1000) + 1, err);
        if (st) return st;
    }
    return wr_ps_fail(w, WR_EC_INTERNAL, WR_EXIT_FAILURE, err, "step %lld: shard %d (%s) reports: %s",
                      (long long)t, i, w->sh[i].addr, h->reason);
}

// Applies shard i's BROADCAST of the step to its range of x. Returns 1, or
// -(exit status) for a message that is not the broadcast owed.
static int take_broadcast(wr_ps *w, int i, const wr_pmsg *h, const wr_msg *msg, wr_exchange_step *st,
                          char *err) {
    wr_ps_shard *sc = &w->sh[i];
    size_t n = (size_t)(sc->hi - sc->lo);
    long long t = (long long)st->t;
    if (h->type == WR_MT_ERROR) return -shard_error(w, i, h, st->t, err);
    // A shard may be an epoch ahead (it switches at the commit, before the
    // map reaches us), never behind.
    if (h->epoch < w->epoch)
        return -wr_ps_fail(w, WR_EC_PROTOCOL, WR_EXIT_FAILURE, err,
                           "step %lld: %s from shard %d (%s) of stale epoch %llu (this worker is at %llu)", t,
                           wr_msg_type_name(h->type), i, sc->addr, (unsigned long long)h->epoch,
                           (unsigned long long)w->epoch);
    if (h->type != WR_MT_BROADCAST || !sc->pending || h->offset != sc->lo || h->n_elems != n)
        return -wr_ps_fail(w, WR_EC_INTERNAL, WR_EXIT_FAILURE, err,
                           "step %lld: unexpected %s from shard %d (%s) (offset %llu, %llu elements)", t,
                           wr_msg_type_name(h->type), i, sc->addr, (unsigned long long)h->offset,
                           (unsigned long long)h->n_elems);
    st->bytes_recv += (double)(msg->header.len + msg->payload.len);
    if (w->cfg.ps_node_aggregate) {  // the leader's node applies it too (ps_agg.c)
        int rs = wr_agg_relay(w, i, h, msg->payload.data, msg->payload.len, st->t, err);
        if (rs) return -rs;
    }
    double t0 = wr_now();
    int birder = w->cfg.codec == WR_JOB_CODEC_BIRDER;
    float *x = w->x + sc->lo;
    if (birder && h->codec == WR_CODEC_BITS)
        apply_slice(w, x, aligned_words(w, msg->payload.data, msg->payload.len), n, st->lr);
    else if (birder && h->codec == WR_CODEC_PLANES && h->n_workers >= 1 && h->n_workers <= 65535)
        wr_birder_apply_planes(x, aligned_words(w, msg->payload.data, msg->payload.len), (int)h->n_workers, n,
                               st->lr, w->cfg.wd);
    else if (!birder && h->codec == WR_CODEC_FP32)
        memcpy(x, msg->payload.data, n * 4);
    else
        return -wr_ps_fail(w, WR_EC_INTERNAL, WR_EXIT_FAILURE, err,
                           "step %lld: shard %d sent codec %d, not what codec=%s expects", t, i, h->codec,
                           birder ? "birder" : "fp32");
    st->t_codec += wr_now() - t0;
    sc->pending = 0;
    wr_ps_wait_done(w, i);
    if (h->epoch > w->seen_epoch) w->seen_epoch = h->epoch;
    return 1;
}

// Drains what is queued on endpoint i (0 timeout: never blocks). Returns the
// number of broadcasts applied, or -(exit status).
static int drain(wr_ps *w, int i, const wr_proto_expect *ex, wr_exchange_step *st, char *err) {
    int coord = i == w->n_shards, applied = 0;
    long long t = (long long)st->t;
    for (;;) {
        wr_msg msg;
        wr_pmsg h;
        char e2[WR_ERR_LEN];
        int rc = wr_ps_recv(w->poll_eps[i], 0, coord ? NULL : ex, &msg, &h, e2);
        if (rc == WR_ETIMEDOUT || rc == WR_EAGAIN) return applied;
        if (rc == WR_EPROTO && coord) {
            wr_warn("from coordinator: %s", e2);
            return applied;
        }
        if (rc == WR_EPROTO)
            return -wr_ps_fail(w, WR_EC_INTERNAL, WR_EXIT_FAILURE, err, "step %lld: from shard %d (%s): %s",
                               t, i, w->sh[i].addr, e2);
        // A lost shard may be replaced (ps_replace.c): the wait goes on.
        if (rc == WR_ECLOSED && !coord) {
            int st2 = wr_ps_shard_lost(w, i, t, err);
            return st2 ? -st2 : applied;
        }
        if (rc != WR_OK && !coord)
            return -wr_ps_fail(w, WR_EC_INTERNAL, WR_EXIT_FAILURE, err,
                               "step %lld: lost connection to shard %d (%s): %s", t, i, w->sh[i].addr, e2);
        if (rc == WR_ECLOSED) {  // the coordinator lost: training goes on (ps_recoord.c)
            int st2 = wr_ps_coord_closed(w, t, e2, err);
            return st2 ? -st2 : applied;
        }
        if (rc != WR_OK)
            return -wr_ps_fail(w, WR_EC_INTERNAL, WR_EXIT_FAILURE, err,
                               "step %lld: lost connection to coordinator at %s: %s", t, w->o->coordinator,
                               e2);
        int got = coord ? -wr_ps_coord_message(w, &h, err) : take_broadcast(w, i, &h, &msg, st, err);
        wr_msg_release(&msg);
        wr_pmsg_clear(&h);
        if (got < 0) return got;
        applied += got;
    }
}

// The stall report: whom the broadcast wait of step t waits for, and since when.
static void stall_report(const wr_ps *w, int64_t t, double since) {
    for (int s = 0; s < w->n_shards; s++)
        if (w->sh[s].pending)
            wr_warn("step %lld: waiting for BROADCAST from shard %d (%s) since %.1f s", (long long)t, s,
                    w->sh[s].addr, since);
}

int wr_ps_apply_broadcasts(wr_ps *w, wr_exchange_step *st, char *err) {
    // Any epoch (checked per message: >= ours), this step only.
    wr_proto_expect ex = {
        .job_id = w->cfg.job_id, .check_step = 1, .step_min = (uint64_t)st->t, .step_max = (uint64_t)st->t};
    const double bound = w->cfg.step_timeout + w->cfg.register_timeout;
    double t_start = wr_now(), next_report = w->cfg.stall_report;
    w->wait_t0 = t_start;  // each shard's wait runs from here to its broadcast (progress)
    char e2[WR_ERR_LEN];
    for (int left = w->n_shards; left > 0;) {
        double el = wr_now() - t_start, rem = bound - el;
        for (int s = 0; s < w->n_shards && rem <= 0; s++)
            if (w->sh[s].pending)
                return wr_ps_fail(w, WR_EC_TIMEOUT, WR_EXIT_FAILURE, err,
                                  "step %lld: no BROADCAST from shard %d (%s) within step_timeout + "
                                  "register_timeout (%g s)",
                                  (long long)st->t, s, w->sh[s].addr, bound);
        if (el >= next_report) {
            stall_report(w, st->t, el);
            next_report += w->cfg.stall_report;
        }
        double wait = WR_MIN(rem, next_report - el);
        int st2 = wr_ps_coord_tick(w, st->t, err);
        if (st2) return st2;
        // A lost coordinator's socket is not polled (it reports ready at once).
        w->ready[w->n_shards] = 0;
        if (w->coord_down) wait = WR_MIN(wait, 0.1);
        if (wr_poll(w->poll_eps, w->n_shards + !w->coord_down, w->ready, (int)(wait * 1000) + 1, e2) < 0)
            return wr_ps_fail(w, WR_EC_INTERNAL, WR_EXIT_FAILURE, err, "poll: %s", e2);
        for (int i = 0; i <= w->n_shards; i++) {
            if (!w->ready[i]) continue;
            int got = drain(w, i, &ex, st, err);
            if (got < 0) return -got;
            left -= got;
        }
        int got = wr_ps_follow_replacements(w, st->t, err);
        if (got < 0) return -got;
        left -= got;
    }
    return WR_EXIT_OK;
}

// Pushes every range and applies every broadcast of the step.
static int step_once(wr_ps *w, wr_exchange_step *st, char *err) {
    // A shard replaced between steps: rebuilt before this step's pushes.
    int got = wr_ps_follow_replacements(w, st->t - 1, err);
    if (got < 0) return -got;
    for (int s = 0; s < w->n_shards; s++) {
        int rc = push_range(w, s, st, err);
        if (rc) return rc;
    }
    int rc = wr_ps_apply_broadcasts(w, st, err);
    if (rc) return rc;
    // fp32 pushes point into g, which the next model step overwrites: their
    // frames must be gone. (Every shard has answered, so it has read our push:
    // this is immediate in practice; the bound only turns a transport bug into
    // an error.)
    rc = wait_released(w, &w->fp32_busy, st->t, "this step's fp32 PUSH", err);
    if (rc) return rc;
    // A shard ahead by an epoch: its map must be here before the next step.
    return wr_ps_await_map(w, st->t, err);
}

// This rank's own state every checkpoint_every steps (wckpt.h); a failed
// write is logged, the job goes on.
static void checkpoint(wr_ps *w, int64_t t) {
    if (w->cfg.checkpoint_every <= 0 || t % w->cfg.checkpoint_every != 0) return;
    wr_wckpt_state cs = {w->m, w->b, (size_t)w->d, 0, 0};
    wr_model_scaler_state(w->job->model, &cs.scale, &cs.clean);
    char e2[WR_ERR_LEN];
    if (wr_wckpt_write(&w->cfg, w->rank, w->epoch, (uint64_t)t, &cs, e2) != WR_OK)
        wr_error("checkpoint of step %lld not written: %s", (long long)t, e2);
    else
        wr_debug("checkpoint of step %lld written", (long long)t);
}

int wr_ps_step(void *self, wr_exchange_step *st, char *err) {
    wr_ps *w = self;
    st->resume_at = 0;
    if (w->cfg.mode == WR_MODE_ALLREDUCE) return wr_ar_step(w, st, err);
    int rc = w->cfg.ps_node_aggregate ? wr_agg_step(w, st, err) : step_once(w, st, err);
    if (rc == WR_PS_REJOIN && w->cfg.ps_node_aggregate)  // fixed membership: no rejoining
        return wr_ps_fail(w, 0, WR_EXIT_NODE_LOST, err,
                          "step %lld: removed from the job, and ps_node_aggregate has a fixed membership",
                          (long long)st->t);
    if (rc == WR_EXIT_OK) checkpoint(w, st->t);
    if (rc != WR_PS_REJOIN) return rc;
    rc = wr_ps_rejoin(w, err);
    if (rc) return rc;
    st->resume_at = w->job->first_step;
    return WR_EXIT_OK;
}

void wr_ps_digests(void *self, int64_t t) {
    wr_ps *w = self;
    char e2[WR_ERR_LEN];
    if (w->coord_down) return;  // the coordinator is lost: a restarted one checks later steps
    if (w->cfg.mode == WR_MODE_ALLREDUCE) {
        wr_ar_digests(w, t);
        return;
    }
    for (int s = 0; s < w->n_shards; s++) {
        wr_pmsg h;
        wr_ps_hdr(w, &h, WR_MT_DIGEST);
        h.step = (uint64_t)t;
        h.shard = s;
        h.offset = w->sh[s].lo;
        h.n_elems = w->sh[s].hi - w->sh[s].lo;
        h.digest = wr_digest64(w->x + w->sh[s].lo, (size_t)h.n_elems * 4);
        if (wr_ps_send(w, w->coord, &h, NULL, 0, NULL, NULL, 1000, NULL, e2) != WR_OK)
            wr_warn("DIGEST of step %lld shard %d: %s", (long long)t, s, e2);
    }
}
