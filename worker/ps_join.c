// ps_join.c — the ps exchange (exchange.h, ps.h): joining a mode=ps job
// and leaving it, and the messaging helpers of ps_step.c.
//
// Registration is two-phase (docs/ARCHITECTURE.md, "Job life cycle"): a
// REGISTER without a model gets the welcome map carrying the job config
// (config); once the loop built the model, a REGISTER with d and the
// training-set size gets the cluster map of the formed job, or of a later
// epoch that admits this worker as a joiner from its step 'sf' (join). A
// worker the coordinator removed goes through both phases again and joins
// anew (wr_ps_rejoin; docs/ARCHITECTURE.md, "Membership epochs: the worker").
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "allreduce.h"
#include "cluster.h"
#include "log.h"
#include "node.h"
#include "ps.h"
#include "schedule.h"
#include "train.h"
#include "wckpt.h"
#include "wr_common.h"

void wr_ps_opts_default(wr_ps_opts *o) {
    memset(o, 0, sizeof *o);
    o->connect_timeout = 10.0;
}

// ---- messaging helpers (ps.h) --------------------------------------------------

int wr_ps_fail(wr_ps *w, int ec, int status, char *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, WR_ERR_LEN, fmt, ap);
    va_end(ap);
    w->ec = ec;
    return status;
}

int wr_ps_ec_of(int rc) { return rc == WR_ETIMEDOUT ? WR_EC_TIMEOUT : WR_EC_INTERNAL; }

void wr_ps_hdr(const wr_ps *w, wr_pmsg *h, int type) {
    wr_pmsg_init(h, type);
    if (w->cfg_ok) h->job_id = w->cfg.job_id;
    h->epoch = w->epoch;
    h->rank = w->rank;
    h->role = WR_ROLE_WORKER;
    // The shards accept a rank's data messages only with its credential.
    if (w->rank >= 0 &&
        (type == WR_MT_PUSH || type == WR_MT_PULL || type == WR_MT_PARAMS || type == WR_MT_CHUNK)) {
        h->has_token = 1;
        memcpy(h->token, w->token, WR_TOKEN_LEN);
    }
}

int wr_ps_send(wr_ps *w, wr_endpoint *ep, const wr_pmsg *h, const void *payload, size_t len,
               wr_free_fn free_fn, void *hint, int timeout_ms, double *bytes, char *err) {
    int rc = wr_send_pmsg(ep, NULL, 0, h, payload, len, free_fn, hint, timeout_ms, &w->hbuf, err);
    if (bytes) *bytes += (double)(w->hbuf.len + len);
    return rc;
}

int wr_ps_recv(wr_endpoint *ep, int timeout_ms, const wr_proto_expect *ex, wr_msg *msg, wr_pmsg *h,
               char *err) {
    memset(msg, 0, sizeof *msg);
    int rc = wr_recv(ep, msg, timeout_ms, err);
    if (rc != WR_OK) return rc;
    enum wr_perr pe;
    char e2[WR_ERR_LEN];
    rc = wr_proto_decode(msg->header.data, msg->header.len, msg->payload.len, ex, h, &pe, e2);
    if (rc != WR_OK) {
        wr_msg_release(msg);
        return wr_err(err, WR_EPROTO, "refused message (%s): %s", wr_perr_name(pe), e2);
    }
    return WR_OK;
}

// Tells the coordinator why this worker stops (best effort, never blocks long).
static void send_error(wr_ps *w, int code, const char *reason) {
    if (!w->coord) return;
    wr_pmsg h;
    wr_ps_hdr(w, &h, WR_MT_ERROR);
    h.code = code;
    if (w->rank >= 0)
        snprintf(h.reason, sizeof h.reason, "worker %d on %s: %s", w->rank, w->host, reason);
    else
        snprintf(h.reason, sizeof h.reason, "worker on %s: %s", w->host, reason);
    char e2[WR_ERR_LEN];
    wr_ps_send(w, w->coord, &h, NULL, 0, NULL, NULL, 100, NULL, e2);
}

// ---- registration ----------------------------------------------------------------

// REGISTER without a model (n_params 0) or with d and the training-set size,
// from which the coordinator counts the job's steps (CLUSTER_MAP 'ts'; 0 for
// the synthetic model: the coordinator then counts 60000 examples).
static int send_register(wr_ps *w, uint64_t n_params, int64_t train_examples, char *err) {
    wr_pmsg h;
    wr_ps_hdr(w, &h, WR_MT_REGISTER);
    h.rank = -1;
    snprintf(h.host, sizeof h.host, "%s", w->host);
    snprintf(h.group_name, sizeof h.group_name, "%s", w->o->group && w->o->group[0] ? w->o->group : w->host);
    if (w->ar) {  // mode=allreduce: where the peers reach this worker
        snprintf(h.addr, sizeof h.addr, "%s", w->ar->bound[0]);
        snprintf(h.local_addr, sizeof h.local_addr, "%s", w->ar->bound[1]);
    }
    h.n_params = n_params;
    h.train_examples = train_examples > 0 ? (uint64_t)train_examples : 0;
    return wr_ps_send(w, w->coord, &h, NULL, 0, NULL, NULL, 1000, NULL, err);
}

// Waits for a CLUSTER_MAP from the coordinator: the welcome (epoch 0) when
// formed is 0, else a map of any epoch >= 1 (the job's, naming this worker).
// Returns 0 with *map filled (caller clears), or the exit status to stop with.
static int wait_map(wr_ps *w, int formed, double timeout_s, int first, wr_pmsg *map, char *err) {
    double t0 = wr_now();
    for (;;) {
        double left = timeout_s - (wr_now() - t0);
        if (left <= 0 && first)
            return wr_ps_fail(w, 0, WR_EXIT_NO_COORDINATOR, err,
                              "no reply from coordinator at %s within %g s", w->o->coordinator, timeout_s);
        if (left <= 0)
            return wr_ps_fail(w, 0, WR_EXIT_NO_COORDINATOR, err,
                              "no cluster map from coordinator at %s within %g s after registering",
                              w->o->coordinator, timeout_s);
        wr_msg msg;
        char e2[WR_ERR_LEN];
        int rc = wr_ps_recv(w->coord, (int)(left * 1000) + 1, NULL, &msg, map, e2);
        if (rc == WR_ETIMEDOUT) continue;
        if (rc == WR_EPROTO) {
            wr_warn("from coordinator: %s", e2);
            continue;
        }
        // Before the welcome, a connection the coordinator refuses (a key it
        // does not admit) means it cannot be reached as this worker.
        if (rc != WR_OK)
            return wr_ps_fail(w, 0, WR_EXIT_NO_COORDINATOR, err, "receiving from coordinator at %s: %s",
                              w->o->coordinator, e2);
        wr_msg_release(&msg);
        if (map->type == WR_MT_CLUSTER_MAP && (formed ? map->epoch >= 1 : map->epoch == 0)) return WR_EXIT_OK;
        // A "removed from the job" notice while registering is an older copy
        // of the one that made this worker register again (the coordinator
        // repeats it when a removed worker speaks): not a refusal.
        int stale = map->type == WR_MT_ERROR && map->code == WR_EC_REJECTED &&
                    !strncmp(map->reason, "removed from the job", 20);
        int st = map->type == WR_MT_CLUSTER_MAP || stale ? 0 : wr_ps_coord_message(w, map, err);
        if (st) {
            wr_pmsg_clear(map);
            return st;
        }
        wr_debug("ignoring %s (epoch %llu) while waiting for the %s", wr_msg_type_name(map->type),
                 (unsigned long long)map->epoch, formed ? "job's cluster map" : "welcome");
        wr_pmsg_clear(map);
    }
}

static int connect_coordinator(wr_ps *w, char *err) {
    char e2[WR_ERR_LEN];
    // Received frames (BROADCAST ranges: 220 MB each for fp32 at 110M) are
    // malloc'd by the transport per message: keep them warm in the heap instead
    // of mapping, zeroing and unmapping fresh pages every step.
    wr_transport_tune_malloc();
    w->ctx = wr_transport_ctx_new(1, e2);
    if (!w->ctx) return wr_ps_fail(w, 0, WR_EXIT_FAILURE, err, "transport: %s", e2);
    wr_endpoint_opts eo;
    wr_endpoint_opts_default(&eo);
    // Enough for STATS and LEAVE to reach a live coordinator; short so that an
    // unreachable one does not hold the exit back long.
    eo.linger_ms = 1000;
    eo.sndhwm = eo.rcvhwm = 1000;
    eo.max_msg_size = WR_PROTO_MAX_CONTROL_MSG;  // control messages only (docs/PROTOCOL.md section 7)
    // No ZMTP heartbeat of ours: the job's heartbeat_timeout is not known
    // yet. The coordinator's PINGs (answered by ZeroMQ) watch the connection
    // with the job's timeout and make us drop a coordinator silent beyond it.
    eo.heartbeat_ms = 0;
    wr_node_keys_opts(&w->o->keys, &eo, w->o->keys.coordinator_key, 0);
    if (wr_connect(w->ctx, w->o->coordinator, &eo, &w->coord, e2) != WR_OK)
        return wr_ps_fail(w, 0, WR_EXIT_CONFIG, err, "coordinator address %s: %s", w->o->coordinator, e2);
    return WR_EXIT_OK;
}

// config: the job config of the coordinator's welcome.
static int ps_config(void *self, wr_train_job *job, char *err) {
    wr_ps *w = self;
    int st = connect_coordinator(w, err);
    if (st) return st;
    char e2[WR_ERR_LEN];
    if (send_register(w, 0, 0, e2) != WR_OK)
        return wr_ps_fail(w, 0, WR_EXIT_NO_COORDINATOR, err, "cannot send REGISTER to %s: %s",
                          w->o->coordinator, e2);
    wr_pmsg map;
    st = wait_map(w, 0, w->o->connect_timeout, 1, &map, err);
    if (st) return st;
    int rc = wr_cluster_config(&map, &w->cfg, err);
    wr_pmsg_clear(&map);
    if (rc != WR_OK) {
        w->ec = WR_EC_CONFIG;
        return WR_EXIT_CONFIG;
    }
    w->cfg_ok = 1;
    job->cfg = w->cfg;
    job->max_batch = w->cfg.batch > 1000 ? w->cfg.batch : 1000;  // evaluation batches too
    return WR_EXIT_OK;
}

// The batch check of wr_batch_iter_init, done now with the most workers the
// job admits, so that a job this data cannot feed fails before it forms.
static int check_batch(wr_ps *w, char *err) {
    const wr_job_config *c = &w->cfg;
    int most = wr_config_max_workers(c);
    if (c->batch < 1 || c->batch < most)
        return wr_ps_fail(w, WR_EC_CONFIG, WR_EXIT_CONFIG, err,
                          "batch %d is smaller than the %d workers the job admits (each needs an example)",
                          c->batch, most);
    return WR_EXIT_OK;
}

// The shards of the map: recorded from the first map; a later one (after a
// rejoin) must name the same.
static int take_shards(wr_ps *w, const wr_cluster *c, char *err) {
    if (w->sh) {
        int same = c->n_shards == w->n_shards;
        for (int s = 0; same && s < c->n_shards; s++)
            same = c->shards[s].lo == w->sh[s].lo && c->shards[s].hi == w->sh[s].hi &&
                   strcmp(c->shards[s].addr, w->sh[s].addr) == 0;
        if (!same)
            return wr_ps_fail(w, WR_EC_PROTOCOL, WR_EXIT_FAILURE, err,
                              "cluster map of epoch %llu names other shards than this worker joined with",
                              (unsigned long long)c->epoch);
        return WR_EXIT_OK;
    }
    w->n_shards = c->n_shards;
    w->sh = wr_calloc((size_t)w->n_shards, sizeof *w->sh);
    for (int s = 0; s < w->n_shards; s++) {
        w->sh[s].lo = c->shards[s].lo;
        w->sh[s].hi = c->shards[s].hi;
        snprintf(w->sh[s].addr, sizeof w->sh[s].addr, "%s", c->shards[s].addr);
        memcpy(w->sh[s].key, c->shards[s].key, sizeof w->sh[s].key);
    }
    return WR_EXIT_OK;
}

// Checks a map of the job (it sizes every buffer) and takes this worker's
// rank, position, epoch and first step and the shard ranges from it. A map
// whose 'sf' is T > 1 makes this worker a joiner: it PULLs the parameters
// after step T - 1 and trains from T.
static int take_map(wr_ps *w, wr_pmsg *map, wr_train_job *job, char *err) {
    if (map->n_params != w->d)
        return wr_ps_fail(w, WR_EC_CONFIG, WR_EXIT_CONFIG, err,
                          "cluster map has n_params %llu but model %s has %llu",
                          (unsigned long long)map->n_params, w->cfg.model, (unsigned long long)w->d);
    if (!map->has_token)
        return wr_ps_fail(w, WR_EC_PROTOCOL, WR_EXIT_FAILURE, err,
                          "cluster map carries no rank credential ('tk'): coordinator too old?");
    memcpy(w->token, map->token, WR_TOKEN_LEN);
    wr_cluster c;
    if (wr_cluster_from_map(&c, map, WR_ROLE_WORKER, err) != WR_OK) {
        w->ec = WR_EC_PROTOCOL;
        return WR_EXIT_FAILURE;
    }
    int st = w->cfg.mode == WR_MODE_ALLREDUCE ? WR_EXIT_OK : take_shards(w, &c, err);
    int pos = wr_cluster_position(&c, c.my_rank);
    if (!st && wr_batch_local_size(w->cfg.batch, pos, c.n_workers) < 1)
        st = wr_ps_fail(w, WR_EC_CONFIG, WR_EXIT_CONFIG, err, "batch %d is smaller than the %d workers",
                        w->cfg.batch, c.n_workers);
    if (!st) {
        w->rank = job->rank = c.my_rank;
        w->position = pos;
        w->n_workers = job->n_workers = c.n_workers;
        job->n_shards = c.n_shards;
        w->epoch = c.epoch;
        job->total_steps = c.total_steps;
        job->first_step = (int64_t)c.start_step;
        w->pull_step = job->first_step - 1;
    }
    if (!st && w->ar) st = wr_ar_take_map(w, &c, map, err);
    wr_cluster_free(&c);
    if (st) return st;
    char name[64];
    snprintf(name, sizeof name, "worker %d", w->rank);
    wr_log_set_name(name);
    return WR_EXIT_OK;
}

// Registers with d and waits for the map of the job (formed, or one that
// admits this worker as a joiner).
static int register_model(wr_ps *w, wr_train_job *job, char *err) {
    w->d = wr_model_num_params(job->model);
    int st = check_batch(w, err);
    // mode=allreduce and ps_node_aggregate: where the peers reach this worker, in its REGISTER
    if (!st && (w->cfg.mode == WR_MODE_ALLREDUCE || w->cfg.ps_node_aggregate) && !w->ar)
        st = wr_ar_bind(w, err);
    if (st) return st;
    wr_info("model %s: d = %llu parameters; registering", w->cfg.model, (unsigned long long)w->d);
    char e2[WR_ERR_LEN];
    if (send_register(w, w->d, job->data_model ? job->train.n : 0, e2) != WR_OK)
        return wr_ps_fail(w, 0, WR_EXIT_NO_COORDINATOR, err, "cannot send REGISTER to %s: %s",
                          w->o->coordinator, e2);
    // The coordinator waits up to register_timeout for everyone, then either
    // sends the map or SHUTDOWN{3}; leave it some slack beyond that.
    wr_pmsg map;
    st = wait_map(w, 1, w->cfg.register_timeout + w->o->connect_timeout + 5.0, 0, &map, err);
    if (st) return st;
    st = take_map(w, &map, job, err);
    wr_pmsg_clear(&map);
    if (st) return st;
    // The coordinator's count (the shards use it too); a map without one: ours.
    if (job->total_steps <= 0)
        job->total_steps = wr_total_steps(&w->cfg, wr_train_steps_per_epoch(job) * w->cfg.batch);
    return WR_EXIT_OK;
}

// The DEALER of shard s (ps.h).
int wr_ps_connect_shard(wr_ps *w, int s, char *err) {
    wr_endpoint_opts so;
    wr_endpoint_opts_default(&so);
    so.linger_ms = 2000;
    // No ZMTP heartbeats on the data sockets: libzmq counts only whole messages
    // as traffic, so one big frame (fp32 ranges of 100M+ parameters) that takes
    // longer than the heartbeat timeout to cross a busy machine would drop the
    // connection. A dead shard still shows up as a closed connection (monitor),
    // a hung one as step_timeout, and liveness is the coordinator's heartbeats.
    so.heartbeat_ms = 0;
    // Bound received frames (ZMQ_MAXMSGSIZE, applied at connect): the
    // largest legitimate one is an fp32 PARAMS/BROADCAST of this range;
    // a bigger one drops the connection instead of being allocated.
    so.max_msg_size = wr_proto_data_frame_max(w->sh[s].hi - w->sh[s].lo);
    // With keys, the shard is known by the public key the coordinator
    // authenticated it with (its map entry).
    if (w->o->keys.on && !w->sh[s].key[0])
        return wr_ps_fail(w, WR_EC_CONFIG, WR_EXIT_CONFIG, err,
                          "shard %d (%s) has no key in the cluster map: this worker has keys, the "
                          "coordinator runs without them",
                          s, w->sh[s].addr);
    wr_node_keys_opts(&w->o->keys, &so, w->sh[s].key, 0);
    char e2[WR_ERR_LEN];
    if (wr_connect(w->ctx, w->sh[s].addr, &so, &w->sh[s].ep, e2) != WR_OK)
        return wr_ps_fail(w, WR_EC_INTERNAL, WR_EXIT_FAILURE, err, "shard %d address %s: %s", s,
                          w->sh[s].addr, e2);
    w->poll_eps[s] = w->sh[s].ep;
    return WR_EXIT_OK;
}

// One DEALER per shard; the coordinator socket is polled last.
static int connect_shards(wr_ps *w, char *err) {
    if (!w->poll_eps) w->poll_eps = wr_calloc((size_t)w->n_shards + 1, sizeof *w->poll_eps);
    if (!w->ready) w->ready = wr_calloc((size_t)w->n_shards + 1, sizeof *w->ready);
    for (int s = 0; s < w->n_shards; s++) {
        int st = wr_ps_connect_shard(w, s, err);
        if (st) return st;
    }
    w->poll_eps[w->n_shards] = w->coord;
    return WR_EXIT_OK;
}

static int start_heartbeat(wr_ps *w, char *err) {
    wr_pmsg h;
    wr_ps_hdr(w, &h, WR_MT_HEARTBEAT);
    snprintf(h.host, sizeof h.host, "%s", w->host);
    double interval = w->cfg.heartbeat_interval > 0 ? w->cfg.heartbeat_interval : 1.0;
    char e2[WR_ERR_LEN];
    wr_endpoint_opts sec;
    wr_endpoint_opts_default(&sec);
    wr_node_keys_opts(&w->o->keys, &sec, w->o->keys.coordinator_key, 0);
    w->hb = wr_heartbeat_start(w->ctx, w->o->coordinator, &h, interval, &sec, e2);
    if (!w->hb) return wr_ps_fail(w, WR_EC_INTERNAL, WR_EXIT_FAILURE, err, "heartbeat: %s", e2);
    return WR_EXIT_OK;
}

// ---- initial parameters --------------------------------------------------------

// At job formation rank 0 sends its initialised x range by range; every
// rank PULLs each range (a joiner: the parameters after step T - 1).
static int send_initial(wr_ps *w, char *err) {
    char e2[WR_ERR_LEN];
    for (int s = 0; s < w->n_shards && w->rank == 0 && w->pull_step == 0; s++) {
        wr_pmsg h;
        wr_ps_hdr(w, &h, WR_MT_PARAMS);
        h.step = 0;
        h.shard = s;
        h.offset = w->sh[s].lo;
        h.n_elems = w->sh[s].hi - w->sh[s].lo;
        h.codec = WR_CODEC_FP32;
        // Copied (free_fn NULL): once per job, and x changes right after.
        int rc = wr_ps_send(w, w->sh[s].ep, &h, w->x + w->sh[s].lo, h.n_elems * 4, NULL, NULL,
                            (int)(w->cfg.step_timeout * 1000), NULL, e2);
        if (rc != WR_OK)
            return wr_ps_fail(w, wr_ps_ec_of(rc), WR_EXIT_FAILURE, err,
                              "sending initial parameters to shard %d (%s): %s", s, w->sh[s].addr, e2);
    }
    for (int s = 0; s < w->n_shards; s++) {
        wr_pmsg h;
        wr_ps_hdr(w, &h, WR_MT_PULL);
        h.step = (uint64_t)w->pull_step;
        h.shard = s;
        h.offset = w->sh[s].lo;
        h.n_elems = w->sh[s].hi - w->sh[s].lo;
        int rc = wr_ps_send(w, w->sh[s].ep, &h, NULL, 0, NULL, NULL, 1000, NULL, e2);
        if (rc != WR_OK)
            return wr_ps_fail(w, wr_ps_ec_of(rc), WR_EXIT_FAILURE, err, "sending PULL to shard %d (%s): %s",
                              s, w->sh[s].addr, e2);
        w->sh[s].pending = 1;
    }
    return WR_EXIT_OK;
}

// A shard's reply to PULL: its range of x, or an ERROR. Returns 1 when the
// range was taken, 0 when the message was not it, or -(exit status).
static int take_params(wr_ps *w, int i, const wr_pmsg *h, const wr_msg *msg, char *err) {
    wr_ps_shard *sc = &w->sh[i];
    if (h->type == WR_MT_PARAMS && h->offset == sc->lo && h->n_elems == sc->hi - sc->lo &&
        h->codec == WR_CODEC_FP32 && sc->pending) {
        // The parameters after the step asked for, from a shard at our epoch
        // or (a change under way) later.
        if (h->step != (uint64_t)w->pull_step || h->epoch < w->epoch)
            return -wr_ps_fail(w, WR_EC_PROTOCOL, WR_EXIT_FAILURE, err,
                               "shard %d (%s) sent the parameters after step %llu of epoch %llu; this worker "
                               "asked for step %lld at epoch %llu",
                               i, sc->addr, (unsigned long long)h->step, (unsigned long long)h->epoch,
                               (long long)w->pull_step, (unsigned long long)w->epoch);
        memcpy(w->x + sc->lo, msg->payload.data, (size_t)h->n_elems * 4);
        sc->pending = 0;
        if (h->epoch > w->seen_epoch) w->seen_epoch = h->epoch;
        return 1;
    }
    if (h->type == WR_MT_ERROR) {
        int ec = h->code >= WR_EC_PROTOCOL && h->code <= WR_EC_TIMEOUT ? h->code : WR_EC_INTERNAL;
        return -wr_ps_fail(w, ec, WR_EXIT_FAILURE, err, "shard %d (%s) refused: %s", i, sc->addr, h->reason);
    }
    wr_warn("shard %d: unexpected %s while waiting for PARAMS", i, wr_msg_type_name(h->type));
    return 0;
}

// Receives what endpoint i holds while waiting for the initial parameters:
// 1 = a range taken, 0 = nothing for us, or -(exit status).
static int recv_initial(wr_ps *w, int i, const wr_proto_expect *ex, char *err) {
    wr_msg msg;
    wr_pmsg h;
    char e2[WR_ERR_LEN];
    int rc = wr_ps_recv(w->poll_eps[i], 0, ex, &msg, &h, e2);
    if (rc == WR_ETIMEDOUT) return 0;
    if (rc == WR_EPROTO) {
        wr_warn("%s %d: %s", i < w->n_shards ? "shard" : "coordinator", i, e2);
        return 0;
    }
    // A dropped connection may have lost messages: the job cannot go on.
    if (rc != WR_OK && i < w->n_shards)
        return -wr_ps_fail(w, WR_EC_INTERNAL, WR_EXIT_FAILURE, err,
                           "lost connection to shard %d (%s) while waiting for initial parameters: %s", i,
                           w->sh[i].addr, e2);
    if (rc != WR_OK)
        return -wr_ps_fail(w, WR_EC_INTERNAL, WR_EXIT_NO_COORDINATOR, err,
                           "lost connection to coordinator at %s: %s", w->o->coordinator, e2);
    int got = i == w->n_shards ? -wr_ps_coord_message(w, &h, err) : take_params(w, i, &h, &msg, err);
    wr_msg_release(&msg);
    wr_pmsg_clear(&h);
    return got;
}

// A shard this worker has not reached connect_timeout after it started
// connecting: its advertised address is wrong for this host (a config error
// the coordinator stops the job with, naming the shard), rather than a wait
// of step_timeout that ends by blaming nobody. 0, or the exit status.
static int check_reached(wr_ps *w, char *err) {
    for (int s = 0; s < w->n_shards; s++)
        if (w->sh[s].pending && wr_endpoint_reached(w->sh[s].ep) == 0)
            return wr_ps_fail(w, WR_EC_CONFIG, WR_EXIT_CONFIG, err,
                              "cannot reach shard %d at %s from this host within %g s (connect_timeout): "
                              "the shard advertises an address this host does not reach; start it with "
                              "--advertise and an address the workers reach",
                              s, w->sh[s].addr, w->o->connect_timeout);
    return WR_EXIT_OK;
}

// Returns 0, or the exit status to stop with (err says why).
static int initial_params(wr_ps *w, char *err) {
    int st = send_initial(w, err);
    if (st) return st;
    wr_proto_expect ex = {.job_id = w->cfg.job_id};  // any epoch: take_params checks >= ours
    // Rank 0 may still be building its model: allow the registration timeout too.
    double timeout = w->cfg.step_timeout + w->cfg.register_timeout;
    double t0 = wr_now(), reach_by = t0 + w->o->connect_timeout;
    char e2[WR_ERR_LEN];
    for (int left = w->n_shards; left > 0;) {
        double now = wr_now(), rem = timeout - (now - t0);
        for (int s = 0; s < w->n_shards && rem <= 0; s++)
            if (w->sh[s].pending)
                return wr_ps_fail(w, WR_EC_TIMEOUT, WR_EXIT_FAILURE, err,
                                  "no initial parameters from shard %d (%s) within %g s", s, w->sh[s].addr,
                                  timeout);
        if (reach_by > 0 && now >= reach_by) {
            if ((st = check_reached(w, err))) return st;
            reach_by = 0;  // once: a connection that came up is the transport's to watch
        }
        double wait = reach_by > 0 && reach_by - now < rem ? reach_by - now : rem;
        if (wr_poll(w->poll_eps, w->n_shards + 1, w->ready, (int)(wait * 1000) + 1, e2) < 0)
            return wr_ps_fail(w, WR_EC_INTERNAL, WR_EXIT_FAILURE, err, "poll: %s", e2);
        for (int i = 0; i <= w->n_shards; i++) {
            if (!w->ready[i]) continue;
            int got = recv_initial(w, i, &ex, err);
            if (got < 0) return -got;
            left -= got;
        }
    }
    return WR_EXIT_OK;
}

// ---- join, leave, free -------------------------------------------------------------

// The line that says how this worker takes part.
static void joined_line(const wr_ps *w, const wr_train_job *job) {
    const wr_job_config *c = &w->cfg;
    int birder = c->codec == WR_JOB_CODEC_BIRDER;
    wr_info("rank %d (position %d of %d workers, epoch %llu), %d shards, steps %lld..%lld (%lld per epoch), "
            "local batch %d, codec %s%s, hfp8 %s",
            w->rank, w->position, w->n_workers, (unsigned long long)w->epoch, w->n_shards,
            (long long)job->first_step, (long long)job->total_steps, (long long)wr_train_steps_per_epoch(job),
            wr_batch_local_size(c->batch, w->position, w->n_workers), birder ? "birder" : "fp32",
            birder ? (c->broadcast == WR_BCAST_EXACT ? " (exact broadcast)" : " (1bit broadcast)") : "",
            c->hfp8 ? "on" : "off");
}

// Loads this rank's Birder state and loss scaler of the step before the
// first (docs/ARCHITECTURE.md, "Checkpoints and resume").
static int resume_state(wr_ps *w, wr_train_job *job, char *err) {
    float scale;
    int clean;
    char e2[WR_ERR_LEN];
    uint64_t step = (uint64_t)(job->first_step - 1);
    if (wr_wckpt_load(&w->cfg, w->rank, step, w->m, w->b, w->d, &scale, &clean, e2) != WR_OK)
        return wr_ps_fail(w, WR_EC_CONFIG, WR_EXIT_CONFIG, err, "resume at step %llu: %s",
                          (unsigned long long)step, e2);
    wr_model_set_scaler_state(job->model, scale, clean);
    wr_info("resume: rank %d's state of step %llu loaded (loss scale %g)", w->rank, (unsigned long long)step,
            (double)scale);
    return WR_EXIT_OK;
}

// mode=allreduce: every member builds the same initial parameters from the
// job's seed (the first digest check compares them); no shard to pull from.
static int ar_join(wr_ps *w, wr_train_job *job, char *err) {
    int st = start_heartbeat(w, err);
    if (st) return st;
    wr_ps_step_init(w);
    wr_ar_step_init(w);
    static const char *const algo[] = {"hierarchical", "flat", "ring_fp32"};
    wr_info(
        "rank %d (group %d, local rank %d; %d groups of %d), all-reduce %s, steps %lld..%lld, local batch %d, "
        "data endpoint %s%s%s, hfp8 %s",
        w->rank, w->ar->peers[w->ar->me].group, w->ar->peers[w->ar->me].local, w->ar->n_groups, w->ar->G,
        algo[w->cfg.allreduce_algo], (long long)job->first_step, (long long)job->total_steps,
        wr_batch_local_size(w->cfg.batch, w->position, w->n_workers), w->ar->bound[0],
        w->ar->bound[1][0] ? ", node endpoint " : "", w->ar->bound[1], w->cfg.hfp8 ? "on" : "off");
    return WR_EXIT_OK;
}

static int ps_join(void *self, wr_train_job *job, char *err) {
    wr_ps *w = self;
    w->job = job;
    w->x = wr_model_params(job->model);
    w->g = wr_model_grads(job->model);
    int st = register_model(w, job, err);
    if (w->cfg.mode == WR_MODE_ALLREDUCE) return st ? st : ar_join(w, job, err);
    // ps_node_aggregate: only the leaders talk to the shards; the others'
    // parameters are built from the job's seed like rank 0's (digests check).
    int lead = st || wr_agg_leader(w);
    if (!st && lead) st = connect_shards(w, err);
    if (!st) st = start_heartbeat(w, err);
    if (!st) wr_ps_step_init(w);
    if (!st && w->ar) wr_ar_step_init(w);
    if (!st && lead) st = initial_params(w, err);
    if (st == WR_PS_REJOIN && w->cfg.ps_node_aggregate)
        return wr_ps_fail(w, 0, WR_EXIT_NODE_LOST, err,
                          "removed from the job while joining, and ps_node_aggregate has a fixed membership");
    if (st == WR_PS_REJOIN) return wr_ps_rejoin(w, err);
    // resume = on: the job's first map starts after step 1; this rank's own
    // state of the step before comes from its checkpoint (a joiner's starts
    // at zero instead).
    if (!st && w->cfg.resume && w->epoch == 1 && job->first_step > 1) st = resume_state(w, job, err);
    if (st) return st;
    joined_line(w, job);
    if (w->ar)
        wr_info("node aggregation: group %d, local rank %d of %d (%s), %d nodes push to the shards; data "
                "endpoint %s%s%s",
                w->ar->peers[w->ar->me].group, w->ar->peers[w->ar->me].local, w->ar->G,
                lead ? "the node's leader" : "applies the leader's relayed broadcasts", w->ar->n_groups,
                w->ar->bound[0], w->ar->bound[1][0] ? ", node endpoint " : "", w->ar->bound[1]);
    return WR_EXIT_OK;
}

// ---- rejoining after removal ------------------------------------------------------

// Closes what belonged to the membership this worker was removed from (its
// shard sockets, the heartbeat) and forgets its rank, epoch and maps.
static void drop_membership(wr_ps *w) {
    wr_heartbeat_stop(w->hb);
    w->hb = NULL;
    for (int s = 0; s < w->n_shards; s++) {
        wr_close(w->sh[s].ep);
        w->sh[s].ep = NULL;
        w->poll_eps[s] = NULL;
        w->sh[s].pending = 0;
    }
    w->rank = -1;
    w->epoch = 0;
    w->n_pending = 0;
    w->seen_epoch = 0;
    wr_log_set_name("worker");
}

// Both REGISTER phases again: the welcome (of the same job), then the map.
static int register_again(wr_ps *w, char *err) {
    char e2[WR_ERR_LEN];
    if (send_register(w, 0, 0, e2) != WR_OK)
        return wr_ps_fail(w, 0, WR_EXIT_NO_COORDINATOR, err, "cannot send REGISTER to %s: %s",
                          w->o->coordinator, e2);
    wr_pmsg map;
    int st = wait_map(w, 0, w->o->connect_timeout, 0, &map, err);
    if (st) return st;
    wr_job_config cfg;
    int rc = wr_cluster_config(&map, &cfg, e2);
    wr_pmsg_clear(&map);
    if (rc != WR_OK || cfg.job_id != w->cfg.job_id)
        return wr_ps_fail(w, WR_EC_CONFIG, WR_EXIT_CONFIG, err,
                          "registering again: the coordinator's welcome is not of job %llu: %s",
                          (unsigned long long)w->cfg.job_id, rc != WR_OK ? e2 : "another job id");
    return register_model(w, w->job, err);
}

int wr_ps_rejoin(wr_ps *w, char *err) {
    for (int attempt = 1; attempt <= 5; attempt++) {
        drop_membership(w);
        int st = register_again(w, err);
        if (!st) st = connect_shards(w, err);
        if (!st) st = start_heartbeat(w, err);
        if (!st) st = initial_params(w, err);
        if (st == WR_PS_REJOIN) continue;  // removed again while joining
        if (st) return st;
        // A joiner's Birder state starts at zero (the loop resets the rest).
        if (w->m) memset(w->m, 0, w->d * sizeof(float));
        if (w->b) memset(w->b, 0, w->d * sizeof(float));
        wr_info("rejoined the job: from step %lld", (long long)w->job->first_step);
        joined_line(w, w->job);
        return WR_EXIT_OK;
    }
    return wr_ps_fail(w, WR_EC_INTERNAL, WR_EXIT_FAILURE, err,
                      "removed from the job again while rejoining it, 5 times: giving up");
}

static void send_stats_and_leave(wr_ps *w, const wr_train_stats *s) {
    char e2[WR_ERR_LEN];
    wr_pmsg h;
    wr_ps_hdr(w, &h, WR_MT_STATS);
    h.step = (uint64_t)s->last_step;
    double steps = s->steps > 0 ? (double)s->steps : 1;
    // A lost coordinator: wait until a restarted one has this worker back,
    // so that its LEAVE counts (bounded: wr_ps_coord_tick).
    if (w->coord_lost && wr_ps_coord_wait_back(w, s->last_step + 1, e2) != WR_EXIT_OK)
        wr_warn("STATS and LEAVE not sent: %s", e2);
    struct {
        const char *name;
        double v;
    } kv[] = {
        {"test_accuracy", s->test_accuracy},
        {"seconds", s->seconds},
        {"samples_per_s", wr_train_samples_per_s(s)},
        {"bytes_sent_per_step", s->bytes_sent / steps},
        {"bytes_recv_per_step", s->bytes_recv / steps},
        {"steps", (double)s->steps},
        {"tta88_seconds", s->tta88_seconds},
    };
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) {
        snprintf(h.stats[i].name, sizeof h.stats[i].name, "%s", kv[i].name);
        h.stats[i].value = kv[i].v;
    }
    h.n_stats = (uint32_t)(sizeof kv / sizeof kv[0]);
    if (wr_ps_send(w, w->coord, &h, NULL, 0, NULL, NULL, 1000, NULL, e2) != WR_OK) wr_warn("STATS: %s", e2);
    wr_ps_hdr(w, &h, WR_MT_LEAVE);
    snprintf(h.host, sizeof h.host, "%s", w->host);
    h.step = (uint64_t)s->last_step;
    if (wr_ps_send(w, w->coord, &h, NULL, 0, NULL, NULL, 1000, NULL, e2) != WR_OK) wr_warn("LEAVE: %s", e2);
}

static void ps_leave(void *self, int status, const char *reason, const wr_train_stats *st) {
    wr_ps *w = self;
    if (status == WR_EXIT_OK) {
        send_stats_and_leave(w, st);
        return;
    }
    int code = w->ec;
    if (code < 0) code = status == WR_EXIT_CONFIG ? WR_EC_CONFIG : WR_EC_INTERNAL;
    if (code) send_error(w, code, reason);
}

static void ps_free(void *self) {
    wr_ps *w = self;
    wr_heartbeat_stop(w->hb);
    wr_ar_free(w->ar);
    if (w->sh)
        for (int s = 0; s < w->n_shards; s++) wr_close(w->sh[s].ep);
    wr_close(w->coord);
    // Closed sockets still send what is queued for up to their linger; only
    // the end of the context releases every zero-copy PUSH frame, so the
    // push buffers are freed after it.
    if (w->ctx) wr_transport_ctx_free(w->ctx);
    if (w->sh) {
        for (int s = 0; s < w->n_shards; s++)
            for (int k = 0; k < 2; k++) free(w->sh[s].push[k].data);
        free(w->sh);
    }
    free(w->poll_eps);
    free(w->ready);
    free(w->m);
    free(w->b);
    free(w->align_scratch);
    wr_ps_progress_free(w);
    wr_buf_free(&w->hbuf);
    free(w);
}

static const wr_exchange_ops ps_ops = {
    .mode = "ps",
    .config = ps_config,
    .join = ps_join,
    .members = wr_ps_members,
    .step = wr_ps_step,
    .digests = wr_ps_digests,
    .progress = wr_ps_progress,
    .leave = ps_leave,
    .free = ps_free,
};

wr_exchange wr_exchange_ps(const wr_ps_opts *o) {
    wr_ps *w = wr_calloc(1, sizeof *w);
    w->o = o;
    w->rank = -1;
    w->ec = -1;
    atomic_init(&w->fp32_busy, 0);
    if (o->host && o->host[0])
        snprintf(w->host, sizeof w->host, "%s", o->host);
    else
        wr_hostname(w->host, sizeof w->host);
    wr_log_set_name("worker");
    return (wr_exchange){&ps_ops, w};
}
