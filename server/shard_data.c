// shard_data.c — the shard's workers' side: the data socket, one handler per
// worker message type (PARAMS, PULL, PUSH), zero-copy broadcasts from pooled
// buffers, PARAMS replies from shared snapshots, digests after a step, and
// the step timeout. The step arithmetic is shard.c's (wr_shard_core).
#include "shard_internal.h"

// Messages are cut to their buffers on purpose (log lines, reasons on the wire).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

// Broadcast buffers in the pool: a step's n zero-copy sends share one, and
// slow readers may hold a few more steps'.
#define BCAST_BUFS 8
// Snapshots of the master copy for PULL replies: all replies of one step share
// one, and at most this many exist (bounds the reply memory to this many
// ranges, whatever the peers send).
#define SNAP_MAX 2
// Seconds to retry binding the data socket while the probe listener's port
// is still being released.
#define BIND_RETRY_S 2.0

static const char *const WORKER_CONN = "a worker connection";

// Refusal ERRORs per connection before further refusals go unanswered (a
// worker of the job is refused at most a few times; a connection that floods
// bad messages and never reads cannot make the shard queue replies), and
// how many connections are remembered (fixed memory).
#define SHARD_REPLIES_PER_PEER 16
#define SHARD_REPLY_TABLE 4096
// Messages queued per data connection on the way in.
#define SHARD_RCVHWM 16
// Data connections beyond one per worker before the shard warns of a flood.
#define SHARD_CONN_SLACK 32

static void refuse_peer(shard_node *s, const uint8_t *peer, size_t len, int kind, int code, const char *why) {
    wr_refused(&s->refused, kind, WORKER_CONN, why);
    if (wr_reply_gate_allow(&s->gate, peer, len, WORKER_CONN))
        wr_send_error(s->router, peer, len, s->cfg.job_id, s->mem.epoch, code, why, &s->scratch);
}

static void refuse(shard_node *s, const wr_msg *m, int kind, const char *why) {
    refuse_peer(s, m->peer, m->peer_len, kind, WR_EC_PROTOCOL, why);
}

// A refusal before the sender authenticated: the ERROR names no job.
static void refuse_anon(shard_node *s, const wr_msg *m, int kind, const char *why) {
    wr_refused(&s->refused, kind, WORKER_CONN, why);
    if (wr_reply_gate_allow(&s->gate, m->peer, m->peer_len, WORKER_CONN))
        wr_send_error(s->router, m->peer, m->peer_len, 0, 0, WR_EC_PROTOCOL, why, &s->scratch);
}

static int same_peer(const shard_peer *p, const uint8_t *id, size_t len) {
    return p->len == len && !memcmp(p->id, id, len);
}

// ---- PARAMS replies --------------------------------------------------------------------

static void pull_done_cb(void *data, void *hint) {
    (void)data;
    pull_slot *sl = hint;
    // Synchronises with the release store that armed the slot before the
    // send, so the ordering libzmq provides is visible to ThreadSanitizer.
    (void)atomic_load_explicit(&sl->busy, memory_order_acquire);
    wr_bufpool_put(sl->snap);
    atomic_store_explicit(&sl->busy, 0, memory_order_release);
}

static void drop_snapshot(shard_node *s) {
    if (s->snap) wr_bufpool_put(s->snap);
    s->snap = NULL;
}

// A free reply slot for peer, or NULL when this peer's last reply is still in
// flight or every slot is busy (ERROR sent).
static pull_slot *take_slot(shard_node *s, const uint8_t *peer, size_t peer_len) {
    pull_slot *free_slot = NULL;
    for (int i = 0; i < s->n_slots; i++) {
        pull_slot *sl = &s->slots[i];
        if (!atomic_load_explicit(&sl->busy, memory_order_acquire)) {
            if (!free_slot) free_slot = sl;
        } else if (same_peer(&sl->peer, peer, peer_len)) {
            refuse_peer(s, peer, peer_len, WR_PERR_ROLE, WR_EC_PROTOCOL,
                        "PULL while the PARAMS reply to this connection's last PULL is still in flight");
            return NULL;
        }
    }
    if (!free_slot)
        refuse_peer(s, peer, peer_len, WR_PERR_ROLE, WR_EC_INTERNAL,
                    "too many PARAMS replies in flight (workers not draining); retry later");
    return free_slot;
}

// The snapshot of the current step (taken now if needed), or NULL when every
// snapshot is still held by earlier replies.
static wr_pbuf *current_snapshot(shard_node *s) {
    uint64_t step = wr_shard_core_step(s->core);
    if (s->snap && s->snap_step == step) return s->snap;
    drop_snapshot(s);
    wr_pbuf *b = wr_bufpool_get(s->snaps, 1);
    if (!b) return NULL;
    memcpy(b->data, wr_shard_core_params(s->core), wr_shard_core_n(s->core) * sizeof(float));
    s->snap = b;
    s->snap_step = step;
    return b;
}

// Answers a PULL with PARAMS of the whole range. Zero-copy from a snapshot of
// the master copy shared by every reply of the same step (the master copy
// changes at the next step while the transport may still hold the bytes). A
// peer with a reply still in flight, more replies in flight than slots, or no
// free snapshot (SNAP_MAX older ones still held by slow peers) is refused
// with ERROR: memory stays bounded whatever a peer sends.
void shard_send_params(shard_node *s, const uint8_t *peer, size_t peer_len) {
    pull_slot *slot = take_slot(s, peer, peer_len);
    if (!slot) return;
    wr_pbuf *snap = current_snapshot(s);
    if (!snap) {
        refuse_peer(s, peer, peer_len, WR_PERR_ROLE, WR_EC_INTERNAL,
                    "every parameter snapshot is still held by earlier PARAMS replies; retry later");
        return;
    }
    size_t n = wr_shard_core_n(s->core);
    atomic_fetch_add_explicit(&snap->refs, 1, memory_order_release);
    memcpy(slot->peer.id, peer, peer_len);
    slot->peer.len = peer_len;
    slot->snap = snap;
    atomic_store_explicit(&slot->busy, 1, memory_order_release);
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_PARAMS);
    h.job_id = s->cfg.job_id;
    h.epoch = s->mem.epoch;
    h.step = wr_shard_core_step(s->core);
    h.shard = s->index;
    h.offset = wr_shard_core_lo(s->core);
    h.n_elems = n;
    h.codec = WR_CODEC_FP32;
    char err[WR_ERR_LEN];
    // The callback runs exactly once whatever the result (it frees the slot).
    if (wr_send_pmsg(s->router, peer, peer_len, &h, snap->data, n * sizeof(float), pull_done_cb, slot, 0,
                     &s->scratch, err) != WR_OK) {
        s->send_failures++;
        wr_warn("cannot send PARAMS to a worker: %s", err);
    }
}

// ---- the end of a step ----------------------------------------------------------------

// A broadcast buffer with a reference for each rank and one for us. When every
// pooled buffer is still held by the transport (a peer is slow to drain),
// waits for one, bounded by step_timeout; the coordinator (SHUTDOWN) and a
// signal can still stop us meanwhile. SHARD_GO_ON with *out, or a status.
static int bcast_buffer(shard_node *s, int refs, wr_pbuf **out) {
    if ((*out = wr_bufpool_get(s->pool, refs))) return SHARD_GO_ON;
    double t0 = wr_now();
    wr_info("step %llu: every broadcast buffer is still held by the transport (a worker is not reading); "
            "waiting up to %g s",
            (unsigned long long)(wr_shard_core_step(s->core) + 1), s->cfg.step_timeout);
    while (!(*out = wr_bufpool_get(s->pool, refs))) {
        if (wr_now() - t0 > s->cfg.step_timeout) {
            wr_error("shard %d: no free broadcast buffer for %g s (workers not draining)", s->index,
                     s->cfg.step_timeout);
            return WR_EXIT_FAILURE;
        }
        if (shard_stop_signal) return shard_stop_by_signal(s);
        // The free callbacks come from the transport's I/O thread without a
        // wake-up, so poll the coordinator socket with a short timeout.
        char err[WR_ERR_LEN];
        wr_endpoint *cep = s->coord;
        int rdy = 0;
        if (wr_poll(&cep, 1, &rdy, 1, err) > 0 && rdy) {
            int st = shard_on_coord_ready(s);
            if (st != SHARD_GO_ON) return st;
        }
    }
    return SHARD_GO_ON;
}

// Sends buf (bh's payload) to the peer each contributor's push came from: k
// zero-copy sends, each passing one reference of buf to the transport.
static void broadcast(shard_node *s, wr_pbuf *buf, const wr_pmsg *bh, const int *ranks, int k) {
    char err[WR_ERR_LEN];
    size_t bytes = (size_t)bh->payload_len;
    // The header is the same for every rank: encode it once.
    int enc = wr_proto_encode(bh, &s->scratch, err);
    for (int i = 0; i < k; i++) {
        int r = ranks[i];
        int rc = WR_ERR;
        if (enc != WR_OK) {
            wr_bufpool_put(buf);  // the reference this send would have passed on
        } else {
            wr_msg m = {
                .peer_len = s->peers[r].len,
                .header = {.data = s->scratch.data, .len = s->scratch.len},
                .payload = {.data = buf->data, .len = bytes, .free_fn = wr_bufpool_free_cb, .hint = buf}};
            memcpy(m.peer, s->peers[r].id, s->peers[r].len);
            rc = wr_send(s->router, &m, 0, err);
        }
        if (rc != WR_OK) {
            s->send_failures++;
            wr_warn("BROADCAST of step %llu to rank %d failed: %s", (unsigned long long)bh->step, r, err);
        } else {
            s->bytes_out += (double)bytes;
        }
    }
}

// PULLs waiting for a step answered once it is completed.
void shard_answer_pulls(shard_node *s) {
    uint64_t done = wr_shard_core_step(s->core);
    int k = 0;
    for (int i = 0; i < s->n_pulls; i++)
        if (s->pulls[i].step <= done)
            shard_send_params(s, s->pulls[i].peer.id, s->pulls[i].peer.len);
        else
            s->pulls[k++] = s->pulls[i];
    s->n_pulls = k;
}

// Every push the step expects is in: aggregate, broadcast to the k
// contributors (one pooled buffer shared by k zero-copy sends), digest.
// With no contributor the step is empty: no update, nothing sent.
// SHARD_GO_ON or a status.
static int finish_step(shard_node *s, int *ranks) {
    // The checkpoint of the last step is written now that every push of the
    // next one is in: each worker wrote its own of that step before pushing
    // (worker/ps_step.c), so a resume finds the whole set.
    shard_ckpt_before_step(s);
    int k = wr_shard_core_contributors(s->core, ranks);
    wr_pbuf *buf;
    int st = bcast_buffer(s, k + 1, &buf);
    if (st != SHARD_GO_ON) return st;
    char err[WR_ERR_LEN];
    wr_pmsg bh;
    double t0 = wr_now();
    if (wr_shard_core_finish(s->core, buf->data, &bh, err) != WR_OK) {
        wr_error("%s", err);
        return WR_EXIT_FAILURE;
    }
    for (int i = 0; i < k; i++) wr_msg_release(&s->held[ranks[i]]);
    double t1 = wr_now();
    s->t_finish += t1 - t0;
    bh.job_id = s->cfg.job_id;
    bh.epoch = s->mem.epoch;
    if (k > 0) broadcast(s, buf, &bh, ranks, k);
    if (k == 0) s->empty_steps++;
    wr_bufpool_put(buf);
    drop_snapshot(s);  // a new step: the next PULL takes a new snapshot
    s->t_send += wr_now() - t1;
    if (s->t_first_step == 0) s->t_first_step = wr_now();
    if (s->cfg.digest_every > 0 && bh.step % (uint64_t)s->cfg.digest_every == 0) {
        wr_pmsg d;
        wr_pmsg_init(&d, WR_MT_DIGEST);
        d.step = bh.step;
        d.digest = wr_shard_core_digest(s->core);
        shard_send_coord(s, &d);
    }
    shard_members_expect(s);
    shard_answer_pulls(s);
    return SHARD_GO_ON;
}

int shard_advance(shard_node *s) {
    int st = SHARD_GO_ON;
    while (st == SHARD_GO_ON && !s->mem.hold && wr_shard_core_ready(s->core)) {
        st = finish_step(s, s->contrib);
        shard_metrics_step(s, wr_now());
        s->next_stall = 0;
        s->step_t0 = wr_now();
    }
    return st;
}

// ---- worker messages ------------------------------------------------------------------

// Each handler owns m: it releases it, or keeps the frames and zeroes *m.
typedef int (*worker_handler)(shard_node *s, wr_msg *m, const wr_pmsg *h);

// The initial parameters (from rank 0): answer the PULLs queued for them.
static int on_params(shard_node *s, wr_msg *m, const wr_pmsg *h) {
    char err[WR_ERR_LEN];
    if (s->rb.active) return shard_rebuild_offer(s, m, h);
    if (h->rank != 0) {
        refuse(s, m, WR_PERR_ROLE, "PARAMS (initial parameters) come from rank 0 only");
    } else if (wr_shard_core_set_params(s->core, h, m->payload.data, m->payload.len, err) != WR_OK) {
        refuse(s, m, WR_PERR_ROLE, err);
    } else {
        wr_info("initial parameters received from rank %d; answering %d queued pulls", h->rank, s->n_pulls);
        drop_snapshot(s);
        shard_answer_pulls(s);
    }
    wr_msg_release(m);
    return SHARD_GO_ON;
}

static int pull_queued(const shard_node *s, const uint8_t *peer, size_t peer_len) {
    for (int i = 0; i < s->n_pulls; i++)
        if (same_peer(&s->pulls[i].peer, peer, peer_len)) return 1;
    return 0;
}

// PULL{s}: PARAMS of the last completed step once it is at least s (a
// joiner asks for the step before its first), else queued (bounded).
static int on_pull(shard_node *s, wr_msg *m, const wr_pmsg *h) {
    if (h->shard != s->index) {
        char err[WR_ERR_LEN];
        snprintf(err, sizeof err, "PULL for shard %d sent to shard %d", h->shard, s->index);
        refuse(s, m, WR_PERR_ROLE, err);
    } else if (wr_shard_core_has_params(s->core) && wr_shard_core_step(s->core) >= h->step &&
               !s->mem.resume) {
        // (while a resume is held, the step restored may not be the one the job goes on from)
        shard_send_params(s, m->peer, m->peer_len);
    } else if (pull_queued(s, m->peer, m->peer_len)) {
        refuse(s, m, WR_PERR_ROLE, "PULL from a connection whose earlier PULL is already queued");
    } else if (s->n_pulls < s->cap_pulls) {
        pull_wait *p = &s->pulls[s->n_pulls++];
        memcpy(p->peer.id, m->peer, m->peer_len);
        p->peer.len = m->peer_len;
        p->step = h->step;
    } else {
        refuse(s, m, WR_PERR_ROLE, "too many PULLs waiting for their step");
    }
    wr_msg_release(m);
    return SHARD_GO_ON;
}

// One rank's push of the step; the last one finishes the step.
static int on_push(shard_node *s, wr_msg *m, const wr_pmsg *h) {
    char err[WR_ERR_LEN];
    if (wr_shard_core_push(s->core, h, m->payload.data, m->payload.len, err) != WR_OK) {
        refuse(s, m, WR_PERR_ROLE, err);
        wr_msg_release(m);
        return SHARD_GO_ON;
    }
    // Accepted: the core references the payload; keep the frames until the step is done.
    s->pushes_in++;
    s->bytes_in += (double)(m->header.len + m->payload.len);
    s->held[h->rank] = *m;
    memset(m, 0, sizeof *m);
    // The step's BROADCAST goes where this authenticated push came from (a
    // worker's other connections, such as one that only PULLs, get none).
    memcpy(s->peers[h->rank].id, s->held[h->rank].peer, s->held[h->rank].peer_len);
    s->peers[h->rank].len = s->held[h->rank].peer_len;
    if (wr_shard_core_pending(s->core) == 1) s->step_t0 = wr_now();
    return shard_advance(s);
}

static const worker_handler worker_handlers[WR_MT_COUNT_] = {
    [WR_MT_PARAMS] = on_params,
    [WR_MT_PULL] = on_pull,
    [WR_MT_PUSH] = on_push,
};

// The job and epoch of an authenticated message (checked only after the
// rank's credential, so that no one else learns them). A PUSH of step t must
// carry at least the epoch in force at t (a worker may be one epoch ahead);
// older is stale. WR_OK or WR_EPROTO.
static int check_job(const shard_node *s, const wr_pmsg *h, enum wr_perr *perr, char *err) {
    uint64_t newest = s->mem.pend_epoch ? s->mem.pend_epoch : s->mem.epoch;
    uint64_t oldest = h->type == WR_MT_PUSH ? shard_epoch_at(s, h->step) : 1;
    *perr = h->job_id != s->cfg.job_id               ? WR_PERR_JOB
            : h->epoch < oldest || h->epoch > newest ? WR_PERR_EPOCH
                                                     : WR_PERR_NONE;
    if (*perr == WR_PERR_NONE) return WR_OK;
    if (*perr == WR_PERR_EPOCH)
        return wr_err(err, WR_EPROTO,
                      "%s of step %llu carries epoch %llu: stale epoch (this shard takes %llu..%llu)",
                      wr_msg_type_name(h->type), (unsigned long long)h->step, (unsigned long long)h->epoch,
                      (unsigned long long)oldest, (unsigned long long)newest);
    return wr_err(err, WR_EPROTO, "%s for job %llu, this is job %llu", wr_msg_type_name(h->type),
                  (unsigned long long)h->job_id, (unsigned long long)s->cfg.job_id);
}

// Decodes without a job or step expectation: the rank's credential comes
// first (shard_auth.c), and refusals before it name neither.
int shard_on_worker_msg(void *arg, wr_msg *m) {
    shard_node *s = arg;
    wr_pmsg h;
    enum wr_perr perr = WR_PERR_NONE;
    char err[WR_ERR_LEN];
    if (wr_proto_decode(m->header.data, m->header.len, m->payload.len, NULL, &h, &perr, err) != WR_OK) {
        refuse_anon(s, m, perr, err);
        wr_msg_release(m);
        return SHARD_GO_ON;
    }
    worker_handler fn = h.type > 0 && h.type < WR_MT_COUNT_ ? worker_handlers[h.type] : NULL;
    int st = SHARD_GO_ON;
    if (!fn) {
        snprintf(err, sizeof err, "unexpected %s at a shard", wr_msg_type_name(h.type));
        refuse_anon(s, m, WR_PERR_ROLE, err);
        wr_msg_release(m);
    } else if (!shard_auth_check(s, m, &h)) {
        wr_msg_release(m);
    } else if (check_job(s, &h, &perr, err) != WR_OK) {
        refuse(s, m, perr, err);
        wr_msg_release(m);
    } else {
        st = fn(s, m, &h);
    }
    wr_pmsg_clear(&h);
    return st;
}

// ---- housekeeping ---------------------------------------------------------------------

void shard_format_ranks(const int *ranks, int n, char *out, size_t len) {
    size_t at = 0;
    out[0] = 0;
    for (int i = 0; i < n && at < len; i++) {
        int w = snprintf(out + at, len - at, "%s%d", i ? ", " : "", ranks[i]);
        if (w > 0) at += (size_t)w;
    }
    if (n == 0) snprintf(out, len, "none");
}

// The ranks the step still waits for, as "2, 5".
static void list_missing(const shard_node *s, char *out, size_t len) {
    int miss[64];
    shard_format_ranks(miss, wr_shard_core_missing(s->core, miss, 64), out, len);
}

// A step waiting past stall_report: whom it waits for and since when,
// repeated every stall_report. Held steps wait for the coordinator.
static void stall_report(shard_node *s, double now) {
    double waited = now - s->step_t0;
    if (waited < s->cfg.stall_report || (s->next_stall && now < s->next_stall)) return;
    s->next_stall = now + s->cfg.stall_report;
    uint64_t t = wr_shard_core_step(s->core) + 1;
    if (s->mem.hold) {
        wr_warn("step %llu: waiting since %.1f s for the coordinator to commit epoch %llu",
                (unsigned long long)t, waited, (unsigned long long)s->mem.pend_epoch);
        return;
    }
    char missing[512];
    list_missing(s, missing, sizeof missing);
    wr_warn("step %llu: waiting for rank(s) %s since %.1f s (%d pushes in)", (unsigned long long)t, missing,
            waited, wr_shard_core_pending(s->core));
}

int shard_check_step_timeout(shard_node *s) {
    if (s->rb.active) return shard_rebuild_check_timeout(s);
    double now = wr_now();
    int pending = wr_shard_core_pending(s->core);
    if (pending > 0 || s->mem.hold) stall_report(s, now);
    // While a membership change is held the coordinator decides (it waits
    // for joiners up to register_timeout, or stops the job).
    if (pending == 0 || s->mem.hold || now - s->step_t0 <= s->cfg.step_timeout) return SHARD_GO_ON;
    char missing[512];
    list_missing(s, missing, sizeof missing);
    return shard_fail(
        s, WR_EC_TIMEOUT, WR_EXIT_FAILURE,
        "shard %d: step %llu incomplete after %g s (step_timeout): %d pushes in, waiting for rank(s) %s",
        s->index, (unsigned long long)(wr_shard_core_step(s->core) + 1), s->cfg.step_timeout, pending,
        missing);
}

void shard_log_peer_events(shard_node *s) {
    unsigned long acc, closed;
    if (wr_peer_events(s->router, &acc, &closed) != WR_OK) return;
    s->conns += (long)acc - (long)closed;
    wr_peer_watch_tick(&s->watch, acc, closed, s->refused.total, wr_now());
    wr_watch_handshakes(s->router, "the shard", &s->hs_bad_key, &s->hs_over_cap);
    // While a flood's connections close, one line per tick would flood the log.
    int flood = s->watch.open + (long)closed > s->watch.limit;
    if (closed && flood)
        wr_debug("%lu connection(s) closed (%ld open now)", closed, s->conns);
    else if (closed)
        wr_info("%lu worker connection(s) closed (%ld open now, %d workers in the job)", closed, s->conns,
                s->n_workers);
    else if (acc)
        wr_debug("%lu worker connection(s) accepted (%ld open)", acc, s->conns);
}

// ---- start and end --------------------------------------------------------------------

// Frames are bounded by the range's largest legitimate payload (fp32 of n
// elements) plus slack (at least the header bound).
int shard_bind_data(shard_node *s, uint64_t n) {
    char err[WR_ERR_LEN];
    wr_endpoint_opts eo;
    wr_endpoint_opts_default(&eo);
    // Bounded queues: outbound per worker a step's broadcast (at most the
    // pool's BCAST_BUFS buffers), one PARAMS reply and a few ERRORs; inbound
    // a step's push and a PULL (SHARD_RCVHWM: what a flooding connection can
    // make the shard hold before its messages wait in the kernel). Refusal
    // ERRORs are sent with timeout 0, bounded per connection (s->gate) and
    // dropped when a peer does not read.
    eo.sndhwm = 1000;
    eo.rcvhwm = SHARD_RCVHWM;
    eo.linger_ms = 1000;
    // No ZMTP heartbeats on the data socket (ARCHITECTURE.md, "Data
    // sockets"): libzmq counts only whole messages as traffic, so a large
    // frame in transit would drop the connection. Liveness comes from the
    // coordinator's heartbeats and step_timeout.
    eo.heartbeat_ms = 0;
    eo.max_msg_size = wr_proto_data_frame_max(n);
    eo.peer_events = 1;  // a worker's dropped connection is logged (the tick)
    // connection caps (docs/SECURITY.md): in all, and from one peer address
    wr_config_conn_caps(&s->cfg, 0, &eo.max_peers, &eo.max_peers_per_addr);
    // With keys only allow-listed workers complete the handshake.
    wr_node_keys_opts(&s->o->keys, &eo, NULL, 1u << WR_ROLE_WORKER);
    double t0 = wr_now();
    while (wr_bind(s->ctx, s->bind_addr, &eo, &s->router, err) != WR_OK) {
        if (wr_now() - t0 > BIND_RETRY_S) {
            wr_error("cannot bind the data socket at %s (address checked at start): %s", s->bind_addr, err);
            return WR_EXIT_FAILURE;
        }
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    wr_debug("data socket bound at %s (frames up to %lld bytes)", s->bind_addr, (long long)eo.max_msg_size);
    return SHARD_GO_ON;
}

void shard_data_init(shard_node *s) {
    int n = s->n_workers;
    s->held = wr_calloc(SHARD_RANKS, sizeof *s->held);
    s->contrib = wr_calloc((size_t)n, sizeof *s->contrib);
    s->peers = wr_calloc(SHARD_RANKS, sizeof *s->peers);
    // PULLs queued, and PARAMS replies in flight: two per worker and a few more.
    s->cap_pulls = 2 * n + 8;
    s->pulls = wr_calloc((size_t)s->cap_pulls, sizeof *s->pulls);
    s->n_slots = 2 * n + 8;
    s->slots = wr_calloc((size_t)s->n_slots, sizeof *s->slots);
    for (int i = 0; i < s->n_slots; i++) atomic_init(&s->slots[i].busy, 0);
    s->pool = wr_bufpool_new(wr_shard_core_bcast_bytes(s->core), BCAST_BUFS);
    s->snaps = wr_bufpool_new(wr_shard_core_n(s->core) * sizeof(float), SNAP_MAX);
    wr_reply_gate_init(&s->gate, SHARD_REPLY_TABLE, SHARD_REPLIES_PER_PEER);
    wr_peer_watch_init(&s->watch, "worker connections to the shard", n + SHARD_CONN_SLACK);
}

void shard_data_free(shard_node *s) {
    wr_bufpool_free(s->pool);
    wr_bufpool_free(s->snaps);
    void *arrays[] = {s->slots, s->held, s->peers, s->pulls, s->contrib};
    for (size_t i = 0; i < sizeof arrays / sizeof *arrays; i++) free(arrays[i]);
    shard_auth_free(s);
    shard_members_free(s);
    shard_rebuild_free(s);
    wr_reply_gate_free(&s->gate);
}

void shard_data_release(shard_node *s) {
    if (s->held)
        for (int r = 0; r < SHARD_RANKS; r++) wr_msg_release(&s->held[r]);
    drop_snapshot(s);
}
