// ps_client.c — the worker's side of a mode=ps job (see ps_client.h and the
// life cycle in docs/ARCHITECTURE.md).
//
// Step path (no allocation, no sleeps, no info-level log lines):
//   model step -> g; for each shard s: Birder-encode g[lo_s:hi_s) into one of
//   two reused per-shard buffers and PUSH it zero-copy (the transport's free
//   callback marks the buffer reusable); then poll every shard socket (and the
//   coordinator's, for SHUTDOWN) and apply each BROADCAST as it arrives.
#define _GNU_SOURCE
#include "ps_client.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "birder.h"
#include "data.h"
#include "digest.h"
#include "log.h"
#include "model.h"
#include "proto.h"
#include "schedule.h"
#include "transport.h"


void wr_worker_opts_default(wr_worker_opts *o) {
    memset(o, 0, sizeof *o);
    o->group = 0;
    o->threads = 1;
    o->connect_timeout = 10.0;
}

// Formats the reason into err and returns the exit status to stop with.
static int stop_with(char *err, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int stop_with(char *err, int status, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, WR_ERR_LEN, fmt, ap);
        va_end(ap);
    }
    return status;
}

// ---- a zero-copy send buffer ---------------------------------------------------

// The transport calls free_fn once it no longer reads the bytes (maybe from
// its I/O thread); until then the buffer must not be rewritten.
typedef struct {
    void *data;
    size_t cap;
    atomic_int busy;
} zc_buf;

static void zc_release(void *data, void *hint) {
    (void)data;
    atomic_store_explicit(&((zc_buf *)hint)->busy, 0, memory_order_release);
}

// Steps whose durations are kept for the median step time (4 MiB at most).
#define WR_STEP_LOG (1 << 20)

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

// ---- the worker's state --------------------------------------------------------

typedef struct {
    uint64_t lo, hi;
    char addr[WR_ADDR_MAX];
    wr_endpoint *ep;
    zc_buf push[2];    // alternating PUSH payload buffers (birder: bits; fp32: unused)
    int cur;
    int pending;       // broadcast of the current step not yet applied
} shard_conn;

typedef struct {
    const wr_worker_opts *o;
    char host[WR_HOST_MAX];
    wr_transport_ctx *ctx;
    wr_endpoint *coord;
    wr_job_config cfg;
    int cfg_ok;
    int rank, n_workers, n_shards;
    uint64_t d;
    int64_t total_steps;  // the job's total steps from the cluster map ('ts'); 0 = not sent
    shard_conn *sh;
    wr_endpoint **poll_eps;  // shards..., coordinator last
    int *ready;
    wr_buf hbuf;             // reused header buffer
    uint64_t *align_scratch; // for payloads that arrive unaligned
    size_t align_cap;
    atomic_int fp32_busy;    // fp32 codec: PUSH frames still pointing into g

    wr_model *model;
    wr_dataset train, test;
    int data_model;
    wr_batch_iter it;
    float *m, *b;            // Birder state over the whole vector
    float *step_ms;          // duration of each step (the first WR_STEP_LOG), for the median
    int64_t n_step_ms;

    // heartbeat thread
    pthread_t hb_thread;
    int hb_started;
    atomic_int hb_stop;

    wr_train_stats st;
    // WR_EC_* to report to the coordinator when this worker stops with an
    // error; 0 = the coordinator stopped us, send nothing back.
    int ec;
} worker;

// Formats the reason, records the WR_EC_* code for the coordinator and returns
// the exit status to stop with.
static int fail(worker *w, int ec, int status, char *err, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int fail(worker *w, int ec, int status, char *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, WR_ERR_LEN, fmt, ap);
        va_end(ap);
    }
    w->ec = ec;
    return status;
}

// WR_EC_* for a failed send or receive: a timeout is WR_EC_TIMEOUT; anything
// else (lost connection, transport error) is WR_EC_INTERNAL, and the reason
// text says which.
static int ec_of(int rc) { return rc == WR_ETIMEDOUT ? WR_EC_TIMEOUT : WR_EC_INTERNAL; }

// Sends a header (copied) with an optional payload. zero-copy when free_fn is
// set (ownership passes to the transport whatever the result).
static int send_hdr(worker *w, wr_endpoint *ep, wr_pmsg *h, const void *payload, size_t plen,
                    wr_free_fn free_fn, void *hint, int timeout_ms, double *bytes, char *err) {
    h->payload_len = plen;
    if (wr_proto_encode(h, &w->hbuf, err) != WR_OK) {
        if (free_fn) free_fn((void *)payload, hint);
        return WR_ERR;
    }
    wr_msg m;
    memset(&m, 0, sizeof m);
    m.header.data = w->hbuf.data;
    m.header.len = w->hbuf.len;
    if (plen) {
        m.payload.data = (void *)payload;
        m.payload.len = plen;
        m.payload.free_fn = free_fn;
        m.payload.hint = hint;
    }
    if (bytes) *bytes += (double)(w->hbuf.len + plen);
    return wr_send(ep, &m, timeout_ms, err);
}

static void init_hdr(worker *w, wr_pmsg *h, int type) {
    wr_pmsg_init(h, type);
    if (w->cfg_ok) h->job_id = w->cfg.job_id;
    h->epoch = w->rank >= 0 ? 1 : 0;
    h->rank = w->rank;
    h->role = WR_ROLE_WORKER;
}

// Tells the coordinator why this worker stops (best effort, never blocks long).
static void send_error(worker *w, int code, const char *reason) {
    if (!w->coord) return;
    wr_pmsg h;
    init_hdr(w, &h, WR_MT_ERROR);
    h.code = code;
    if (w->rank >= 0)
        snprintf(h.reason, sizeof h.reason, "worker %d on %s: %s", w->rank, w->host, reason);
    else
        snprintf(h.reason, sizeof h.reason, "worker on %s: %s", w->host, reason);
    char e2[WR_ERR_LEN];
    send_hdr(w, w->coord, &h, NULL, 0, NULL, NULL, 100, NULL, e2);
}

// ---- heartbeats ----------------------------------------------------------------

static void *hb_main(void *arg) {
    worker *w = arg;
    char err[WR_ERR_LEN];
    wr_endpoint_opts eo;
    wr_endpoint_opts_default(&eo);
    eo.linger_ms = 0;
    eo.max_msg_size = WR_PROTO_MAX_CONTROL_MSG;  // control messages only (docs/PROTOCOL.md section 7)
    wr_endpoint *ep = NULL;
    if (wr_connect(w->ctx, w->o->coordinator, &eo, &ep, err) != WR_OK) {
        wr_warn("heartbeat socket: %s", err);
        return NULL;
    }
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_HEARTBEAT);
    h.job_id = w->cfg.job_id;
    h.epoch = 1;
    h.rank = w->rank;
    h.role = WR_ROLE_WORKER;
    snprintf(h.host, sizeof h.host, "%s", w->host);
    wr_buf hb = {0};
    double interval = w->cfg.heartbeat_interval > 0 ? w->cfg.heartbeat_interval : 1.0;
    while (!atomic_load(&w->hb_stop)) {
        if (wr_proto_encode(&h, &hb, err) == WR_OK) {
            wr_msg m;
            memset(&m, 0, sizeof m);
            m.header.data = hb.data;
            m.header.len = hb.len;
            wr_send(ep, &m, 0, err);  // a full queue just drops this beat
        }
        // Sleep in short slices so a stop request is seen quickly.
        double until = wr_now() + interval;
        while (!atomic_load(&w->hb_stop) && wr_now() < until) {
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    wr_buf_free(&hb);
    wr_close(ep);
    return NULL;
}

// ---- receiving -----------------------------------------------------------------

// Receives one message from ep within timeout_ms and decodes its header.
// WR_OK: *h is filled and *msg holds the frames (release both). Timeout ->
// WR_ETIMEDOUT; refused header -> WR_EPROTO with err saying why.
static int recv_decode(wr_endpoint *ep, int timeout_ms, const wr_proto_expect *ex, wr_msg *msg,
                       wr_pmsg *h, char *err) {
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

// Handles a SHUTDOWN or ERROR from the coordinator; returns the exit status
// the worker should stop with (>0), or 0 if the message is harmless.
static int coord_message(worker *w, const wr_pmsg *h, char *err) {
    if (h->type == WR_MT_SHUTDOWN || h->type == WR_MT_ERROR) w->ec = 0;
    if (h->type == WR_MT_SHUTDOWN) {
        int st = h->code > 0 ? h->code : 0;
        if (st)
            wr_err(err, WR_ERR, "coordinator shut the job down with status %d%s%s", st,
                   h->reason[0] ? ": " : "", h->reason);
        else
            wr_err(err, WR_ERR, "coordinator shut the job down%s%s", h->reason[0] ? ": " : "",
                   h->reason);
        return st ? st : 1;
    }
    if (h->type == WR_MT_ERROR) {
        wr_err(err, WR_ERR, "coordinator refused: %s", h->reason);
        return h->code == WR_EC_CONFIG ? 2 : 1;
    }
    return 0;
}

// Payload bytes as uint64 words: zmq frames are malloc'd (aligned) except very
// small ones; copy those into scratch so the kernels read aligned words.
static const uint64_t *aligned_words(worker *w, const void *p, size_t len) {
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
static int wait_released(worker *w, atomic_int *busy, int64_t t, const char *what, char *err) {
    if (atomic_load_explicit(busy, memory_order_acquire) <= 0) return 0;
    double t0 = wr_now();
    long ns = 20 * 1000;
    while (atomic_load_explicit(busy, memory_order_acquire) > 0) {
        if (wr_now() - t0 > w->cfg.step_timeout)
            return fail(w, WR_EC_TIMEOUT, 1, err,
                        "step %lld: the transport never released %s within step_timeout %g s",
                        (long long)t, what, w->cfg.step_timeout);
        if (ns < 1000 * 1000) {
            struct timespec ts = {0, ns};
            nanosleep(&ts, NULL);
            ns *= 2;
            continue;
        }
        int ready = 0;
        char e2[WR_ERR_LEN];
        wr_endpoint *ce = w->coord;
        if (wr_poll(&ce, 1, &ready, 1, e2) < 0)
            return fail(w, WR_EC_INTERNAL, 1, err, "step %lld: poll: %s", (long long)t, e2);
        if (!ready) continue;
        wr_msg msg;
        wr_pmsg h;
        int rc = recv_decode(ce, 0, NULL, &msg, &h, e2);
        if (rc == WR_ETIMEDOUT || rc == WR_EAGAIN) continue;
        if (rc == WR_EPROTO) {
            wr_warn("from coordinator: %s", e2);
            continue;
        }
        if (rc != WR_OK)
            return fail(w, WR_EC_INTERNAL, 1, err, "step %lld: lost connection to coordinator at %s: %s",
                        (long long)t, w->o->coordinator, e2);
        wr_msg_release(&msg);
        int st = coord_message(w, &h, err);
        wr_pmsg_clear(&h);
        if (st) return st;
    }
    return 0;
}

// ---- registration --------------------------------------------------------------

static int config_from_kv(wr_job_config *c, char **kv, uint32_t n, char *err) {
    wr_config_defaults(c);
    for (uint32_t i = 0; i < n; i++) {
        char e2[WR_ERR_LEN];
        if (wr_config_set_kv(c, kv[i], e2) != WR_OK)
            return wr_err(err, WR_ERR, "cluster map config: %s", e2);
    }
    char e2[WR_ERR_LEN];
    if (wr_config_validate(c, e2) != WR_OK) return wr_err(err, WR_ERR, "cluster map config: %s", e2);
    return WR_OK;
}

static int send_register(worker *w, uint64_t n_params, char *err) {
    wr_pmsg h;
    init_hdr(w, &h, WR_MT_REGISTER);
    h.rank = -1;
    snprintf(h.host, sizeof h.host, "%s", w->host);
    h.group = w->o->group;
    h.n_params = n_params;
    // The training-set size (second REGISTER): the coordinator computes the
    // job's total step count from it (CLUSTER_MAP 'ts'). 0 for the synthetic
    // model: the coordinator then counts 60000 examples, as train() does.
    h.train_examples = n_params > 0 && w->data_model ? (uint64_t)w->train.n : 0;
    return send_hdr(w, w->coord, &h, NULL, 0, NULL, NULL, 1000, NULL, err);
}

// Waits for a CLUSTER_MAP of `epoch` from the coordinator. Returns 0 with *map
// filled (caller clears), or the exit status to stop with.
static int wait_map(worker *w, uint64_t epoch, double timeout_s, int first, wr_pmsg *map,
                    char *err) {
    double t0 = wr_now();
    for (;;) {
        double left = timeout_s - (wr_now() - t0);
        if (left <= 0) {
            if (first)
                wr_err(err, WR_ETIMEDOUT, "no reply from coordinator at %s within %g s",
                       w->o->coordinator, timeout_s);
            else
                wr_err(err, WR_ETIMEDOUT,
                       "no cluster map from coordinator at %s within %g s after registering",
                       w->o->coordinator, timeout_s);
            return first ? 6 : 1;
        }
        wr_msg msg;
        char e2[WR_ERR_LEN];
        int rc = recv_decode(w->coord, (int)(left * 1000) + 1, NULL, &msg, map, e2);
        if (rc == WR_ETIMEDOUT) continue;
        if (rc == WR_EPROTO) {
            wr_warn("from coordinator: %s", e2);
            continue;
        }
        if (rc != WR_OK) {
            wr_err(err, WR_ERR, "receiving from coordinator at %s: %s", w->o->coordinator, e2);
            return 1;
        }
        wr_msg_release(&msg);
        int st = coord_message(w, map, err);
        if (st) {
            wr_pmsg_clear(map);
            return st;
        }
        if (map->type == WR_MT_CLUSTER_MAP && map->epoch == epoch) return 0;
        wr_debug("ignoring %s (epoch %llu) while waiting for the epoch-%llu map",
                 wr_msg_type_name(map->type), (unsigned long long)map->epoch,
                 (unsigned long long)epoch);
        wr_pmsg_clear(map);
    }
}

static int register_and_build(worker *w, char *err) {
    wr_pmsg map;
    int st;
    char e2[WR_ERR_LEN];
    if (send_register(w, 0, e2) != WR_OK) {
        wr_err(err, WR_ERR, "cannot send REGISTER to %s: %s", w->o->coordinator, e2);
        return 6;
    }
    st = wait_map(w, 0, w->o->connect_timeout, 1, &map, err);
    if (st) return st;
    int rc = config_from_kv(&w->cfg, map.config, map.n_config, err);
    wr_pmsg_clear(&map);
    if (rc != WR_OK) {
        send_error(w, WR_EC_CONFIG, err);
        return 2;
    }
    w->cfg_ok = 1;
    if (w->cfg.mode != WR_MODE_PS) {
        wr_err(err, WR_ERR, "mode: only mode=ps is supported by this worker");
        send_error(w, WR_EC_CONFIG, err);
        return 2;
    }

    // Build the model and load the data now, so that whatever is wrong with
    // the config shows up before the job is formed.
    wr_model_opts mo = {0};
    mo.hfp8 = w->cfg.hfp8;
    mo.fp8_first_last = w->cfg.fp8_first_last;
    mo.loss_scale = w->cfg.loss_scale;
    mo.seed = w->cfg.seed;
    mo.threads = w->o->threads;
    mo.max_batch = w->cfg.batch > 1000 ? w->cfg.batch : 1000;  // evaluation batches too
    if (wr_model_create(w->cfg.model, &mo, &w->model, e2) != WR_OK) {
        wr_err(err, WR_ERR, "model: %s", e2);
        send_error(w, WR_EC_CONFIG, err);
        return 2;
    }
    w->d = wr_model_num_params(w->model);
    w->data_model = strcmp(wr_model_kind(w->model), "synthetic") != 0;
    if (w->data_model) {
        if (wr_dataset_load(w->cfg.data_dir, 1, &w->train, e2) != WR_OK ||
            wr_dataset_load(w->cfg.data_dir, 0, &w->test, e2) != WR_OK) {
            wr_err(err, WR_ERR, "%s", e2);
            send_error(w, WR_EC_CONFIG, err);
            return 2;
        }
    }
    // The batch checks of wr_batch_iter_init, done now with the configured
    // worker count, so that a job this data cannot feed fails before it forms.
    if (w->cfg.workers < 1 || w->cfg.batch < 1 || w->cfg.batch % w->cfg.workers != 0) {
        wr_err(err, WR_ERR, "batch %d must be a positive multiple of the %d workers", w->cfg.batch,
               w->cfg.workers);
        send_error(w, WR_EC_CONFIG, err);
        return 2;
    }
    if (w->data_model && (int64_t)w->cfg.batch > (int64_t)w->train.n) {
        wr_err(err, WR_ERR, "batch %d exceeds the %lld training examples in %s", w->cfg.batch,
               (long long)w->train.n, w->cfg.data_dir);
        send_error(w, WR_EC_CONFIG, err);
        return 2;
    }
    wr_info("model %s: d = %llu parameters; registering", w->cfg.model,
            (unsigned long long)w->d);
    if (send_register(w, w->d, e2) != WR_OK) {
        wr_err(err, WR_ERR, "cannot send REGISTER to %s: %s", w->o->coordinator, e2);
        return 1;
    }
    // The coordinator waits up to register_timeout for everyone, then either
    // sends the map or SHUTDOWN{3}; leave it some slack beyond that.
    st = wait_map(w, 1, w->cfg.register_timeout + w->o->connect_timeout + 5.0, 0, &map, err);
    if (st) return st;

    // Validate the map: it sizes every buffer below.
    int bad = 0;
    if (map.n_params != w->d) {
        wr_err(err, WR_ERR, "cluster map has n_params %llu but model %s has %llu",
               (unsigned long long)map.n_params, w->cfg.model, (unsigned long long)w->d);
        bad = 2;
    } else if (map.n_shards < 1 || map.n_workers_map < 1 || map.rank < 0 ||
               (uint32_t)map.rank >= map.n_workers_map) {
        wr_err(err, WR_ERR, "cluster map: %u shards, %u workers, my rank %d (invalid)",
               map.n_shards, map.n_workers_map, map.rank);
        bad = 1;
    } else {
        uint64_t at = 0;
        for (uint32_t s = 0; s < map.n_shards && !bad; s++) {
            const wr_shard_info *si = &map.shards[s];
            if (si->lo != at || si->hi < si->lo || si->hi > w->d || (si->lo % 64) != 0) {
                wr_err(err, WR_ERR, "cluster map: shard %u range [%llu, %llu) is not contiguous/64-aligned in [0, %llu)",
                       s, (unsigned long long)si->lo, (unsigned long long)si->hi,
                       (unsigned long long)w->d);
                bad = 1;
            }
            at = si->hi;
        }
        if (!bad && at != w->d) {
            wr_err(err, WR_ERR, "cluster map: shard ranges end at %llu, not d = %llu",
                   (unsigned long long)at, (unsigned long long)w->d);
            bad = 1;
        }
        if (!bad && w->cfg.batch % (int)map.n_workers_map != 0) {
            wr_err(err, WR_ERR, "batch %d is not divisible by the %u workers", w->cfg.batch,
                   map.n_workers_map);
            bad = 2;
        }
    }
    if (bad) {
        wr_pmsg_clear(&map);
        send_error(w, bad == 2 ? WR_EC_CONFIG : WR_EC_PROTOCOL, err);
        return bad;
    }
    w->rank = map.rank;
    w->total_steps = (int64_t)map.total_steps;  // 0 from an older coordinator
    w->n_workers = (int)map.n_workers_map;
    w->n_shards = (int)map.n_shards;
    w->sh = wr_calloc((size_t)w->n_shards, sizeof *w->sh);
    for (int s = 0; s < w->n_shards; s++) {
        w->sh[s].lo = map.shards[s].lo;
        w->sh[s].hi = map.shards[s].hi;
        snprintf(w->sh[s].addr, sizeof w->sh[s].addr, "%s", map.shards[s].addr);
    }
    wr_pmsg_clear(&map);
    char name[64];
    snprintf(name, sizeof name, "worker %d", w->rank);
    wr_log_set_name(name);
    wr_model_set_rank(w->model, w->rank);
    return 0;
}

// ---- initial parameters --------------------------------------------------------

// Returns 0, or the exit status to stop with (err says why).
static int initial_params(worker *w, char *err) {
    char e2[WR_ERR_LEN];
    float *x = wr_model_params(w->model);
    if (w->rank == 0) {
        for (int s = 0; s < w->n_shards; s++) {
            wr_pmsg h;
            init_hdr(w, &h, WR_MT_PARAMS);
            h.step = 0;
            h.shard = s;
            h.offset = w->sh[s].lo;
            h.n_elems = w->sh[s].hi - w->sh[s].lo;
            h.codec = WR_CODEC_FP32;
            // Copied (free_fn NULL): once per job, and x changes right after.
            int rc = send_hdr(w, w->sh[s].ep, &h, x + w->sh[s].lo, h.n_elems * 4, NULL, NULL,
                              (int)(w->cfg.step_timeout * 1000), NULL, e2);
            if (rc != WR_OK)
                return fail(w, ec_of(rc), 1, err, "sending initial parameters to shard %d (%s): %s", s,
                            w->sh[s].addr, e2);
        }
    }
    for (int s = 0; s < w->n_shards; s++) {
        wr_pmsg h;
        init_hdr(w, &h, WR_MT_PULL);
        h.shard = s;
        h.offset = w->sh[s].lo;
        h.n_elems = w->sh[s].hi - w->sh[s].lo;
        int rc = send_hdr(w, w->sh[s].ep, &h, NULL, 0, NULL, NULL, 1000, NULL, e2);
        if (rc != WR_OK)
            return fail(w, ec_of(rc), 1, err, "sending PULL to shard %d (%s): %s", s, w->sh[s].addr, e2);
        w->sh[s].pending = 1;
    }
    wr_proto_expect ex = {.job_id = w->cfg.job_id, .check_epoch = 1, .epoch = 1};
    // Rank 0 may still be building its model: allow the registration timeout too.
    double timeout = w->cfg.step_timeout + w->cfg.register_timeout;
    double t0 = wr_now();
    int left = w->n_shards;
    while (left > 0) {
        double rem = timeout - (wr_now() - t0);
        if (rem <= 0) {
            for (int s = 0; s < w->n_shards; s++)
                if (w->sh[s].pending)
                    return fail(w, WR_EC_TIMEOUT, 1, err,
                                  "no initial parameters from shard %d (%s) within %g s", s,
                                  w->sh[s].addr, timeout);
        }
        int n = wr_poll(w->poll_eps, w->n_shards + 1, w->ready, (int)(rem * 1000) + 1, e2);
        if (n < 0) return fail(w, WR_EC_INTERNAL, 1, err, "poll: %s", e2);
        for (int i = 0; i <= w->n_shards; i++) {
            if (!w->ready[i]) continue;
            wr_msg msg;
            wr_pmsg h;
            int rc = recv_decode(w->poll_eps[i], 0, &ex, &msg, &h, e2);
            if (rc == WR_ETIMEDOUT) continue;
            if (rc == WR_EPROTO) {
                wr_warn("%s %d: %s", i < w->n_shards ? "shard" : "coordinator", i, e2);
                continue;
            }
            if (rc != WR_OK) {
                // A dropped connection may have lost messages: the job cannot go on.
                if (i < w->n_shards)
                    return fail(w, WR_EC_INTERNAL, 1, err,
                                "lost connection to shard %d (%s) while waiting for initial parameters: %s",
                                i, w->sh[i].addr, e2);
                return fail(w, WR_EC_INTERNAL, 1, err, "lost connection to coordinator at %s: %s",
                            w->o->coordinator, e2);
            }
            if (i == w->n_shards) {
                wr_msg_release(&msg);
                int st = coord_message(w, &h, err);
                wr_pmsg_clear(&h);
                if (st) return st;
                continue;
            }
            shard_conn *sc = &w->sh[i];
            if (h.type == WR_MT_PARAMS && h.offset == sc->lo && h.n_elems == sc->hi - sc->lo &&
                h.codec == WR_CODEC_FP32 && sc->pending) {
                memcpy(x + sc->lo, msg.payload.data, (size_t)h.n_elems * 4);
                sc->pending = 0;
                left--;
            } else if (h.type == WR_MT_ERROR) {
                wr_err(err, WR_ERR, "shard %d (%s) refused: %s", i, sc->addr, h.reason);
                w->ec = h.code >= WR_EC_PROTOCOL && h.code <= WR_EC_TIMEOUT ? h.code : WR_EC_INTERNAL;
                wr_msg_release(&msg);
                wr_pmsg_clear(&h);
                return 1;
            } else {
                wr_warn("shard %d: unexpected %s while waiting for PARAMS", i,
                        wr_msg_type_name(h.type));
            }
            wr_msg_release(&msg);
            wr_pmsg_clear(&h);
        }
    }
    return 0;
}

// ---- one step ------------------------------------------------------------------

static void send_digests(worker *w, int64_t t) {
    const float *x = wr_model_params(w->model);
    char e2[WR_ERR_LEN];
    for (int s = 0; s < w->n_shards; s++) {
        wr_pmsg h;
        init_hdr(w, &h, WR_MT_DIGEST);
        h.step = (uint64_t)t;
        h.shard = s;
        h.offset = w->sh[s].lo;
        h.n_elems = w->sh[s].hi - w->sh[s].lo;
        h.digest = wr_digest64(x + w->sh[s].lo, (size_t)h.n_elems * 4);
        if (send_hdr(w, w->coord, &h, NULL, 0, NULL, NULL, 1000, NULL, e2) != WR_OK)
            wr_warn("DIGEST of step %lld shard %d: %s", (long long)t, s, e2);
    }
}

static void fp32_release(void *data, void *hint) {
    (void)data;
    atomic_fetch_sub_explicit((atomic_int *)hint, 1, memory_order_release);
}

// Pushes this step's encoded ranges and waits for every shard's broadcast,
// applying each as it arrives. Returns 0 or the exit status.
static int push_and_apply(worker *w, int64_t t, float lr_t, double *t_codec, char *err) {
    char e2[WR_ERR_LEN];
    float *x = wr_model_params(w->model);
    const float *g = wr_model_grads(w->model);
    int birder = w->cfg.codec == WR_JOB_CODEC_BIRDER;
    wr_rng_key key = wr_rng_key_make(w->cfg.seed, (uint64_t)w->rank, (uint64_t)t);
    double tc = 0;
    for (int s = 0; s < w->n_shards; s++) {
        shard_conn *sc = &w->sh[s];
        size_t n = (size_t)(sc->hi - sc->lo);
        wr_pmsg h;
        init_hdr(w, &h, WR_MT_PUSH);
        h.step = (uint64_t)t;
        h.shard = s;
        h.offset = sc->lo;
        h.n_elems = n;
        int rc;
        if (birder) {
            zc_buf *zb = &sc->push[sc->cur];
            sc->cur ^= 1;
            char what[WR_ADDR_MAX + 64];
            snprintf(what, sizeof what, "the push buffer for shard %d (%s)", s, sc->addr);
            int st = wait_released(w, &zb->busy, t, what, err);
            if (st) return st;
            double t0 = wr_now();
            wr_birder_encode(g + sc->lo, w->m + sc->lo, w->b + sc->lo, n, w->cfg.beta, key,
                             sc->lo, zb->data);
            tc += wr_now() - t0;
            h.codec = WR_CODEC_BITS;
            atomic_store_explicit(&zb->busy, 1, memory_order_relaxed);
            rc = send_hdr(w, sc->ep, &h, zb->data, wr_birder_words(n) * 8, zc_release, zb,
                          (int)(w->cfg.step_timeout * 1000), &w->st.bytes_sent, e2);
        } else {
            h.codec = WR_CODEC_FP32;
            atomic_fetch_add_explicit(&w->fp32_busy, 1, memory_order_relaxed);
            rc = send_hdr(w, sc->ep, &h, g + sc->lo, n * 4, fp32_release, &w->fp32_busy,
                          (int)(w->cfg.step_timeout * 1000), &w->st.bytes_sent, e2);
        }
        if (rc != WR_OK)
            return fail(w, ec_of(rc), 1, err, "step %lld: PUSH to shard %d (%s): %s", (long long)t, s,
                          sc->addr, e2);
        sc->pending = 1;
    }

    wr_proto_expect ex = {.job_id = w->cfg.job_id, .check_epoch = 1, .epoch = 1,
                          .check_step = 1, .step_min = (uint64_t)t, .step_max = (uint64_t)t};
    int left = w->n_shards;
    double t_start = wr_now();
    while (left > 0) {
        double rem = w->cfg.step_timeout - (wr_now() - t_start);
        if (rem <= 0) {
            for (int s = 0; s < w->n_shards; s++)
                if (w->sh[s].pending)
                    return fail(w, WR_EC_TIMEOUT, 1, err,
                                     "step %lld: no BROADCAST from shard %d (%s) within step_timeout %g s",
                                     (long long)t, s, w->sh[s].addr, w->cfg.step_timeout);
        }
        int nr = wr_poll(w->poll_eps, w->n_shards + 1, w->ready, (int)(rem * 1000) + 1, e2);
        if (nr < 0) return stop_with(err, 1, "poll: %s", e2);
        for (int i = 0; i <= w->n_shards; i++) {
            if (!w->ready[i]) continue;
            // Drain what is queued on this socket (0 timeout: never block here).
            for (;;) {
                wr_msg msg;
                wr_pmsg h;
                int rc = recv_decode(w->poll_eps[i], 0, i == w->n_shards ? NULL : &ex, &msg, &h, e2);
                if (rc == WR_ETIMEDOUT || rc == WR_EAGAIN) break;
                if (rc == WR_EPROTO) {
                    if (i == w->n_shards) {
                        wr_warn("from coordinator: %s", e2);
                        break;
                    }
                    return stop_with(err, 1, "step %lld: from shard %d (%s): %s",
                                  (long long)t, i, w->sh[i].addr, e2);
                }
                if (rc != WR_OK) {
                    if (i < w->n_shards)
                        return fail(w, WR_EC_INTERNAL, 1, err, "step %lld: lost connection to shard %d (%s): %s",
                                    (long long)t, i, w->sh[i].addr, e2);
                    return fail(w, WR_EC_INTERNAL, 1, err, "step %lld: lost connection to coordinator at %s: %s",
                                (long long)t, w->o->coordinator, e2);
                }
                if (i == w->n_shards) {
                    wr_msg_release(&msg);
                    int st = coord_message(w, &h, err);
                    wr_pmsg_clear(&h);
                    if (st) return st;
                    continue;
                }
                shard_conn *sc = &w->sh[i];
                size_t n = (size_t)(sc->hi - sc->lo);
                int ok = h.type == WR_MT_BROADCAST && sc->pending && h.offset == sc->lo &&
                         h.n_elems == n;
                if (h.type == WR_MT_ERROR) {
                    wr_err(err, WR_ERR, "step %lld: shard %d (%s) reports: %s", (long long)t, i,
                           sc->addr, h.reason);
                    wr_msg_release(&msg);
                    wr_pmsg_clear(&h);
                    return 1;
                }
                if (!ok) {
                    wr_err(err, WR_EPROTO,
                           "step %lld: unexpected %s from shard %d (%s) (offset %llu, %llu elements)",
                           (long long)t, wr_msg_type_name(h.type), i, sc->addr,
                           (unsigned long long)h.offset, (unsigned long long)h.n_elems);
                    wr_msg_release(&msg);
                    wr_pmsg_clear(&h);
                    return 1;
                }
                w->st.bytes_recv += (double)(msg.header.len + msg.payload.len);
                double t0 = wr_now();
                int bad = 0;
                if (birder && h.codec == WR_CODEC_BITS) {
                    wr_birder_apply_bits(x + sc->lo, aligned_words(w, msg.payload.data, msg.payload.len),
                                         n, lr_t, w->cfg.wd);
                } else if (birder && h.codec == WR_CODEC_PLANES && h.n_workers >= 1 &&
                           h.n_workers <= 65535) {
                    wr_birder_apply_planes(x + sc->lo,
                                           aligned_words(w, msg.payload.data, msg.payload.len),
                                           (int)h.n_workers, n, lr_t, w->cfg.wd);
                } else if (!birder && h.codec == WR_CODEC_FP32) {
                    memcpy(x + sc->lo, msg.payload.data, n * 4);
                } else {
                    bad = 1;
                }
                tc += wr_now() - t0;
                wr_msg_release(&msg);
                if (bad) {
                    wr_pmsg_clear(&h);
                    return stop_with(err, 1, "step %lld: shard %d sent codec %d, not what codec=%s expects",
                                  (long long)t, i, h.codec, birder ? "birder" : "fp32");
                }
                wr_pmsg_clear(&h);
                sc->pending = 0;
                left--;
            }
        }
    }
    *t_codec += tc;
    return 0;
}

// ---- the run -------------------------------------------------------------------


static void progress_line(worker *w, int64_t t, int64_t total, int64_t epoch, double loss,
                          double acc, double sps, double sent, double recv, double tcomp,
                          double tenc, double tcomm) {
    // Rank 0 speaks for the job; the others' lines are there at debug level.
    enum wr_log_level lvl = w->rank == 0 ? WR_LOG_INFO : WR_LOG_DEBUG;
    wr_log(lvl,
           "progress epoch %lld step %lld/%lld loss %.4f acc %.4f samples/s %.0f "
           "sent %.0f B/step recv %.0f B/step scale %g step %.2f ms = compute %.2f + encode %.2f + comm %.2f",
           (long long)epoch, (long long)t, (long long)total, loss, acc, sps, sent, recv,
           (double)wr_model_loss_scale(w->model), (tcomp + tenc + tcomm) * 1e3, tcomp * 1e3,
           tenc * 1e3, tcomm * 1e3);
}

static void evaluate(worker *w, double t_train0, int64_t epoch, int64_t step) {
    double t0 = wr_now();
    // Training time so far: wall time minus the earlier evaluations, so the
    // time to accuracy does not grow with how often we evaluate.
    double el = t0 - t_train0 - w->st.t_eval;
    double acc = wr_model_evaluate(w->model, &w->test);
    double now = wr_now();
    w->st.t_eval += now - t0;
    w->st.test_accuracy = acc;
    if (acc > w->st.best_accuracy) w->st.best_accuracy = acc;
    // Only rank 0 evaluates during training; another rank's single evaluation
    // at the end says nothing about when 0.88 was first reached.
    if (acc >= 0.88 && w->st.tta88_seconds < 0 && w->rank == 0) {
        w->st.tta88_seconds = el;
        w->st.tta88_step = step;
    }
    wr_log(w->rank == 0 ? WR_LOG_INFO : WR_LOG_DEBUG,
           "eval epoch %lld step %lld test accuracy %.4f at %.1f s of training (%.1f s evaluating)",
           (long long)epoch, (long long)step, acc, el, w->st.t_eval);
}

static int train(worker *w, char *err) {
    int64_t spe = w->data_model ? w->train.n / w->cfg.batch : WR_FASHION_TRAIN / w->cfg.batch;
    if (spe < 1) spe = 1;
    // The coordinator's count (CLUSTER_MAP 'ts') is the one the shards use too.
    int64_t total = w->total_steps > 0 ? w->total_steps : wr_total_steps(&w->cfg, spe * w->cfg.batch);
    int local_batch = w->cfg.batch / w->n_workers;
    if (w->data_model) {
        char e2[WR_ERR_LEN];
        if (wr_batch_iter_init(&w->it, &w->train, w->cfg.batch, w->rank, w->n_workers, w->cfg.seed,
                               e2) != WR_OK)
            return fail(w, WR_EC_CONFIG, 2, err, "batches: %s", e2);
    }
    if (w->cfg.codec == WR_JOB_CODEC_BIRDER) {
        w->m = wr_alloc_huge(w->d * sizeof(float));
        w->b = wr_alloc_huge(w->d * sizeof(float));
        for (int s = 0; s < w->n_shards; s++)
            for (int k = 0; k < 2; k++) {
                size_t bytes = wr_birder_words((size_t)(w->sh[s].hi - w->sh[s].lo)) * 8;
                w->sh[s].push[k].data = wr_alloc_vec(bytes ? bytes : 64);
                w->sh[s].push[k].cap = bytes;
            }
    }
    memset(&w->st, 0, sizeof w->st);
    w->st.test_accuracy = w->st.best_accuracy = w->st.tta88_seconds = -1;
    w->st.global_batch = w->cfg.batch;
    wr_info("rank %d of %d workers, %d shards, %lld steps (%lld per epoch), local batch %d, codec %s%s, hfp8 %s",
            w->rank, w->n_workers, w->n_shards, (long long)total, (long long)spe, local_batch,
            w->cfg.codec == WR_JOB_CODEC_BIRDER ? "birder" : "fp32",
            w->cfg.codec == WR_JOB_CODEC_BIRDER
                ? (w->cfg.broadcast == WR_BCAST_EXACT ? " (exact broadcast)" : " (1bit broadcast)")
                : "",
            w->cfg.hfp8 ? "on" : "off");

    int64_t keep = total < WR_STEP_LOG ? total : WR_STEP_LOG;
    w->step_ms = wr_malloc((size_t)(keep > 0 ? keep : 1) * sizeof(float));
    w->n_step_ms = 0;
    double t_train0 = wr_now();
    double win_t0 = t_train0, win_loss = 0, win_comp = 0, win_enc = 0, win_all = 0;
    double win_sent0 = 0, win_recv0 = 0;
    int64_t win_steps = 0, win_correct = 0, win_samples = 0;
    int64_t epoch = 0;
    for (int64_t t = 1; t <= total; t++) {
        double ts0 = wr_now();
        const float *xb = NULL;
        const uint8_t *yb = NULL;
        if (w->data_model) {
            int sie;
            wr_batch_iter_next(&w->it, &xb, &yb, &epoch, &sie);
        } else {
            epoch = (t - 1) / spe;
        }
        // fp32 codec pushes straight from g: the previous step's frames must be gone.
        // (Every shard has answered, so it has read our push: this is immediate
        // in practice; the bound only turns a transport bug into an error.)
        int wst = wait_released(w, &w->fp32_busy, t, "the previous PUSH", err);
        if (wst) return wst;
        float loss = 0;
        int correct = 0, overflow = 0;
        char e2[WR_ERR_LEN];
        if (wr_model_step(w->model, xb, yb, local_batch, &loss, &correct, &overflow, e2) != WR_OK)
            return stop_with(err, 1, "step %lld: model: %s", (long long)t, e2);
        double ts1 = wr_now();
        if (overflow) wr_debug("step %lld: loss-scale overflow, zero gradient", (long long)t);
        double t_codec = 0;
        float lr_t = wr_lr_at(&w->cfg, t, total);
        int st = push_and_apply(w, t, lr_t, &t_codec, err);
        if (st) return st;
        double ts2 = wr_now();
        w->st.steps = t;
        double comp = ts1 - ts0, all = ts2 - ts0;
        if (w->n_step_ms < keep) w->step_ms[w->n_step_ms++] = (float)(all * 1e3);
        w->st.t_compute += comp;
        w->st.t_encode += t_codec;
        w->st.t_comm += all - comp - t_codec;
        win_comp += comp;
        win_enc += t_codec;
        win_all += all;
        win_loss += loss;
        win_correct += correct;
        win_samples += local_batch;
        win_steps++;

        if (w->cfg.digest_every > 0 && t % w->cfg.digest_every == 0) send_digests(w, t);
        if (w->cfg.progress_every > 0 && (t % w->cfg.progress_every == 0 || t == total)) {
            double now = wr_now();
            double el = now - win_t0;
            progress_line(w, t, total, epoch, win_loss / (double)win_steps,
                          win_samples ? (double)win_correct / (double)win_samples : 0,
                          el > 0 ? (double)w->cfg.batch * (double)win_steps / el : 0,
                          (w->st.bytes_sent - win_sent0) / (double)win_steps,
                          (w->st.bytes_recv - win_recv0) / (double)win_steps,
                          win_comp / (double)win_steps, win_enc / (double)win_steps,
                          (win_all - win_comp - win_enc) / (double)win_steps);
            w->st.final_loss = win_loss / (double)win_steps;
            win_t0 = now;
            win_loss = win_comp = win_enc = win_all = 0;
            win_steps = win_correct = win_samples = 0;
            win_sent0 = w->st.bytes_sent;
            win_recv0 = w->st.bytes_recv;
        }
        if (win_steps) w->st.final_loss = win_loss / (double)win_steps;
        // Each epoch, or every eval_every steps: rank 0 evaluates (the replicas
        // are identical; the others evaluate once at the end).
        int due = w->cfg.eval_every > 0 ? t % w->cfg.eval_every == 0
                                        : (w->cfg.eval_every_epoch == 1 && t % spe == 0);
        if (w->data_model && w->cfg.eval_every_epoch >= 0 && due && w->rank == 0 && t != total)
            evaluate(w, t_train0, (t + spe - 1) / spe, t);
    }
    if (w->data_model && w->cfg.eval_every_epoch >= 0) evaluate(w, t_train0, (total + spe - 1) / spe, total);
    w->st.seconds = wr_now() - t_train0;
    if (w->n_step_ms > 0) {
        qsort(w->step_ms, (size_t)w->n_step_ms, sizeof(float), cmp_float);
        w->st.step_ms_median = w->step_ms[w->n_step_ms / 2];
    }
    return 0;
}

static void send_stats_and_leave(worker *w) {
    char e2[WR_ERR_LEN];
    wr_pmsg h;
    init_hdr(w, &h, WR_MT_STATS);
    h.step = (uint64_t)w->st.steps;
    const wr_train_stats *s = &w->st;
    double steps = s->steps > 0 ? (double)s->steps : 1;
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
    if (send_hdr(w, w->coord, &h, NULL, 0, NULL, NULL, 1000, NULL, e2) != WR_OK)
        wr_warn("STATS: %s", e2);
    init_hdr(w, &h, WR_MT_LEAVE);
    snprintf(h.host, sizeof h.host, "%s", w->host);
    h.step = (uint64_t)w->st.steps;
    if (send_hdr(w, w->coord, &h, NULL, 0, NULL, NULL, 1000, NULL, e2) != WR_OK)
        wr_warn("LEAVE: %s", e2);
}

static void cleanup(worker *w) {
    if (w->hb_started) {
        atomic_store(&w->hb_stop, 1);
        pthread_join(w->hb_thread, NULL);
    }
    if (w->sh) {
        for (int s = 0; s < w->n_shards; s++) wr_close(w->sh[s].ep);
        // Closing flushed the sockets: every zero-copy frame is released now.
        for (int s = 0; s < w->n_shards; s++)
            for (int k = 0; k < 2; k++) free(w->sh[s].push[k].data);
        free(w->sh);
    }
    wr_close(w->coord);
    if (w->ctx) wr_transport_ctx_free(w->ctx);
    free(w->poll_eps);
    free(w->ready);
    free(w->m);
    free(w->b);
    free(w->align_scratch);
    free(w->step_ms);
    wr_buf_free(&w->hbuf);
    if (w->data_model) wr_batch_iter_free(&w->it);
    wr_dataset_free(&w->train);
    wr_dataset_free(&w->test);
    wr_model_free(w->model);
}

int wr_ps_worker_run(const wr_worker_opts *o, char *err) {
    worker *w = wr_calloc(1, sizeof *w);
    w->o = o;
    w->rank = -1;
    atomic_init(&w->fp32_busy, 0);
    atomic_init(&w->hb_stop, 0);
    if (o->host && o->host[0])
        snprintf(w->host, sizeof w->host, "%s", o->host);
    else if (gethostname(w->host, sizeof w->host) != 0)
        snprintf(w->host, sizeof w->host, "unknown");
    w->host[sizeof w->host - 1] = 0;
    wr_log_set_name("worker");

    int st = 0;
    char e2[WR_ERR_LEN];
    // Received frames (BROADCAST ranges: 220 MB each for fp32 at 110M) are
    // malloc'd by the transport per message: keep them warm in the heap instead
    // of mapping, zeroing and unmapping fresh pages every step (as the server does).
    wr_transport_tune_malloc();
    w->ctx = wr_transport_ctx_new(1, e2);
    if (!w->ctx) {
        wr_err(err, WR_ERR, "transport: %s", e2);
        st = 1;
        goto out;
    }
    wr_endpoint_opts eo;
    wr_endpoint_opts_default(&eo);
    // Enough for STATS and LEAVE to reach a live coordinator; short so that an
    // unreachable one does not hold the exit back long.
    eo.linger_ms = 1000;
    eo.sndhwm = eo.rcvhwm = 1000;
    eo.max_msg_size = WR_PROTO_MAX_CONTROL_MSG;  // control messages only (docs/PROTOCOL.md section 7)
    if (wr_connect(w->ctx, o->coordinator, &eo, &w->coord, e2) != WR_OK) {
        wr_err(err, WR_ERR, "coordinator address %s: %s", o->coordinator, e2);
        st = 2;
        goto out;
    }
    st = register_and_build(w, err);
    if (st) goto out;

    // Shard connections; the coordinator socket is polled last.
    w->poll_eps = wr_calloc((size_t)w->n_shards + 1, sizeof *w->poll_eps);
    w->ready = wr_calloc((size_t)w->n_shards + 1, sizeof *w->ready);
    wr_endpoint_opts so;
    wr_endpoint_opts_default(&so);
    so.linger_ms = 2000;
    // No ZMTP heartbeats on the data sockets: libzmq counts only whole messages
    // as traffic, so one big frame (fp32 ranges of 100M+ parameters) that takes
    // longer than the heartbeat timeout to cross a busy machine would drop the
    // connection. A dead shard still shows up as a closed connection (monitor),
    // a hung one as step_timeout, and liveness is the coordinator's heartbeats.
    so.heartbeat_ms = 0;
    for (int s = 0; s < w->n_shards; s++) {
        // Bound received frames (ZMQ_MAXMSGSIZE, applied at connect): the
        // largest legitimate one is an fp32 PARAMS/BROADCAST of this range;
        // a bigger one drops the connection instead of being allocated.
        so.max_msg_size = wr_proto_data_frame_max(w->sh[s].hi - w->sh[s].lo);
        if (wr_connect(w->ctx, w->sh[s].addr, &so, &w->sh[s].ep, e2) != WR_OK) {
            wr_err(err, WR_ERR, "shard %d address %s: %s", s, w->sh[s].addr, e2);
            send_error(w, WR_EC_INTERNAL, err);
            st = 1;
            goto out;
        }
        w->poll_eps[s] = w->sh[s].ep;
    }
    w->poll_eps[w->n_shards] = w->coord;
    if (pthread_create(&w->hb_thread, NULL, hb_main, w) == 0) w->hb_started = 1;

    // Failures below record their WR_EC_* code in w->ec (0 when the
    // coordinator itself stopped the job: nothing to report back).
    w->ec = WR_EC_INTERNAL;
    st = initial_params(w, err);
    if (!st) st = train(w, err);
    if (st) {
        if (w->ec) send_error(w, w->ec, err);
        goto out;
    }
    send_stats_and_leave(w);
    {
        double steps = w->st.steps > 0 ? (double)w->st.steps : 1;
        wr_info("done: %lld steps in %.1f s, test accuracy %.4f, %.0f samples/s, sent %.0f B/step, recv %.0f B/step",
                (long long)w->st.steps, w->st.seconds, w->st.test_accuracy,
                wr_train_samples_per_s(&w->st),
                w->st.bytes_sent / steps, w->st.bytes_recv / steps);
    }
    if (o->summary_path) {
        if (wr_write_summary(o->summary_path, "ps", &w->cfg, w->rank, w->n_workers, w->n_shards,
                             &w->st, e2) != WR_OK) {
            wr_err(err, WR_ERR, "%s", e2);
            st = 1;
        }
    }
out:
    if (st) wr_error("%s", err);
    cleanup(w);
    free(w);
    return st;
}

