// coordinator.c — the coordinator role (see coordinator.h and
// docs/ARCHITECTURE.md). One ROUTER, one poll-driven loop with a 100 ms tick
// for the housekeeping (registration deadline, liveness).
#include "coordinator.h"

// Messages are cut to their buffers on purpose (log lines, reasons on the wire).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

#include <limits.h>
#include <signal.h>
#include <string.h>

#include "log.h"
#include "proto.h"
#include "schedule.h"
#include "cluster.h"
#include "shard.h"
#include "node.h"
#include "transport.h"

// ---- digest book ---------------------------------------------------------------------

typedef struct {
    uint64_t step;
    int shard;
    int have;
    uint64_t *vals;  // [n_workers + 1]
    uint8_t *got;    // [n_workers + 1]
} dentry;

struct wr_digest_book {
    int n_workers, n_shards;
    dentry *e;
    int n, cap;
    uint64_t passed, failed, refused;
    uint64_t every;      // accepted steps are multiples of this (0: any step >= 1)
    uint64_t window;     // ... within window * every of last_done
    int max_open;        // open (step, shard) entries at most
    uint64_t last_done;  // highest step of a completed check (0 before the first)
};

wr_digest_book *wr_digest_book_new(int n_workers, int n_shards) {
    wr_digest_book *b = wr_calloc(1, sizeof *b);
    b->n_workers = n_workers;
    b->n_shards = n_shards;
    b->every = 0;
    b->window = 0;  // no limits until wr_digest_book_set_limits
    b->max_open = INT_MAX;
    return b;
}

void wr_digest_book_set_limits(wr_digest_book *b, uint64_t every, uint64_t window, int max_open) {
    b->every = every;
    b->window = window ? window : 1;
    b->max_open = max_open > 0 ? max_open : 1;
}

static void dentry_free(dentry *d) {
    free(d->vals);
    free(d->got);
}

void wr_digest_book_free(wr_digest_book *b) {
    if (!b) return;
    for (int i = 0; i < b->n; i++) dentry_free(&b->e[i]);
    free(b->e);
    free(b);
}

static const char *slot_name(const wr_digest_book *b, int slot, char *buf, size_t len) {
    if (slot == b->n_workers)
        snprintf(buf, len, "shard master");
    else
        snprintf(buf, len, "worker %d", slot);
    return buf;
}

int wr_digest_book_add(wr_digest_book *b, uint64_t step, int shard, int slot, uint64_t digest,
                       char *report, size_t report_len) {
    if (shard < 0 || shard >= b->n_shards) {
        snprintf(report, report_len, "DIGEST for shard %d: the job has shards 0..%d", shard, b->n_shards - 1);
        return -1;
    }
    if (slot < 0 || slot > b->n_workers) {
        snprintf(report, report_len, "DIGEST from rank %d: the job has ranks 0..%d", slot, b->n_workers - 1);
        return -1;
    }
    int i;
    for (i = 0; i < b->n; i++)
        if (b->e[i].step == step && b->e[i].shard == shard) break;
    if (i == b->n) {
        // A new (step, shard): only steps the job digests, near the checks
        // already done, and a bounded number open, so a peer cannot make the
        // book grow without limit.
        uint64_t span = b->window ? (b->every ? b->every : 1) * b->window : UINT64_MAX / 2;
        if (step == 0 || (b->every && step % b->every != 0)) {
            b->refused++;
            snprintf(report, report_len, "DIGEST for step %llu: digests are taken every %llu steps (from step %llu)",
                     (unsigned long long)step, (unsigned long long)b->every,
                     (unsigned long long)(b->every ? b->every : 1));
            return -1;
        }
        if (step > b->last_done + span || step + span < b->last_done) {
            b->refused++;
            snprintf(report, report_len,
                     "DIGEST for step %llu: outside the accepted window [%llu, %llu] around the last completed "
                     "check (step %llu)",
                     (unsigned long long)step, (unsigned long long)(b->last_done > span ? b->last_done - span : 1),
                     (unsigned long long)(b->last_done + span), (unsigned long long)b->last_done);
            return -1;
        }
        if (b->n >= b->max_open) {
            b->refused++;
            snprintf(report, report_len, "DIGEST for step %llu shard %d: %d checks already open (the limit)",
                     (unsigned long long)step, shard, b->n);
            return -1;
        }
        if (b->n == b->cap) {
            b->cap = b->cap ? 2 * b->cap : 16;
            dentry *ne = wr_calloc((size_t)b->cap, sizeof *ne);
            if (b->n) memcpy(ne, b->e, (size_t)b->n * sizeof *ne);
            free(b->e);
            b->e = ne;
        }
        dentry *d = &b->e[b->n++];
        d->step = step;
        d->shard = shard;
        d->have = 0;
        d->vals = wr_calloc((size_t)b->n_workers + 1, sizeof *d->vals);
        d->got = wr_calloc((size_t)b->n_workers + 1, 1);
    }
    dentry *d = &b->e[i];
    char nm[32];
    if (d->got[slot]) {
        snprintf(report, report_len, "duplicate DIGEST for step %llu shard %d from %s", (unsigned long long)step,
                 shard, slot_name(b, slot, nm, sizeof nm));
        return -1;
    }
    d->got[slot] = 1;
    d->vals[slot] = digest;
    if (++d->have < b->n_workers + 1) return 0;
    if (step > b->last_done) b->last_done = step;
    // Complete: compare everyone with the shard's master copy.
    uint64_t ref = d->vals[b->n_workers];
    int bad = 0;
    for (int s = 0; s < b->n_workers; s++) bad += d->vals[s] != ref;
    int rc;
    if (!bad) {
        b->passed++;
        rc = 1;
    } else {
        b->failed++;
        rc = 2;
        size_t at = 0;
        int w = snprintf(report, report_len, "replica digest mismatch at step %llu, shard %d: shard master %016llx",
                         (unsigned long long)step, shard, (unsigned long long)ref);
        at = w > 0 ? (size_t)w : 0;
        for (int s = 0; s < b->n_workers && at < report_len; s++) {
            w = snprintf(report + at, report_len - at, "; worker %d %s (%016llx)", s,
                         d->vals[s] == ref ? "agrees" : "DIFFERS", (unsigned long long)d->vals[s]);
            if (w > 0) at += (size_t)w;
        }
    }
    dentry_free(d);
    b->e[i] = b->e[--b->n];
    return rc;
}

uint64_t wr_digest_book_passed(const wr_digest_book *b) { return b->passed; }
uint64_t wr_digest_book_failed(const wr_digest_book *b) { return b->failed; }
int wr_digest_book_incomplete(const wr_digest_book *b) { return b->n; }
uint64_t wr_digest_book_refused(const wr_digest_book *b) { return b->refused; }

void wr_digest_book_describe_open(const wr_digest_book *b, char *out, size_t len) {
    size_t at = 0;
    if (len) out[0] = 0;
    for (int i = 0; i < b->n && at < len; i++) {
        const dentry *d = &b->e[i];
        int w = snprintf(out + at, len - at, "%s(step %llu, shard %d: missing", i ? "; " : "",
                         (unsigned long long)d->step, d->shard);
        if (w > 0) at += (size_t)w;
        for (int slot = 0; slot <= b->n_workers && at < len; slot++) {
            if (d->got[slot]) continue;
            char nm[32];
            w = snprintf(out + at, len - at, " %s", slot_name(b, slot, nm, sizeof nm));
            if (w > 0) at += (size_t)w;
        }
        if (at < len) {
            w = snprintf(out + at, len - at, ")");
            if (w > 0) at += (size_t)w;
        }
    }
}

// ---- the coordinator ------------------------------------------------------------------

typedef struct {
    int role;
    uint8_t peer[WR_PEER_ID_MAX];
    size_t peer_len;
    char host[WR_HOST_MAX];
    char addr[WR_ADDR_MAX];
    int group;
    int registered;  // shard: on REGISTER; worker: once it reported d
    uint64_t d;
    int index;       // shard index / worker rank, -1 until assigned
    double last_seen;
    int left;
} node;

typedef struct {
    const wr_coord_opts *o;
    wr_job_config cfg;
    wr_endpoint *ep;
    wr_buf scratch;
    char adv[WR_ADDR_MAX];
    node *nodes;
    int n_nodes, max_nodes;
    int n_shards_reg, n_workers_reg, n_workers_seen;
    int formed;
    uint64_t d;
    uint64_t *lo, *hi;
    int *shard_node, *worker_node;  // index -> node
    wr_digest_book *book;
    int barrier_active;
    uint64_t barrier_id;
    uint8_t *barrier_in;
    int barrier_count;
    int n_left;
    wr_refusals refused;
    char **kv;
    uint32_t n_kv;
    double t_start;
    double next_probe;
    uint64_t nt;          // training-set size the workers reported (REGISTER 'nt'; 0 = not reported)
    int nt_set;
    uint64_t total_steps; // sent in the epoch-1 map ('ts')
    // A node reported an ERROR: its cause may be another node that died (a
    // worker that lost its shard). Liveness decides for up to pend_until.
    int pend_status;
    double pend_until;
    char pend_reason[WR_REASON_MAX + WR_ADDR_MAX + 128];
    double end_wait_t0;   // all workers left; waiting for the last digest checks since
} coord;

static volatile sig_atomic_t g_stop_signal = 0;
static void on_signal(int sig) { g_stop_signal = sig; }

static const char *role_name(int role) {
    return role == WR_ROLE_SHARD ? "shard" : role == WR_ROLE_WORKER ? "worker" : "coordinator";
}

static void describe(const coord *c, const node *n, char *buf, size_t len) {
    if (n->role == WR_ROLE_SHARD)
        snprintf(buf, len, "shard %d on host %s (%s)", n->index, n->host, n->addr);
    else if (n->index >= 0)
        snprintf(buf, len, "worker %d on host %s", n->index, n->host);
    else
        snprintf(buf, len, "worker on host %s", n->host);
    (void)c;
}

static node *find_peer(coord *c, const wr_msg *m) {
    for (int i = 0; i < c->n_nodes; i++)
        if (c->nodes[i].peer_len == m->peer_len && !memcmp(c->nodes[i].peer, m->peer, m->peer_len))
            return &c->nodes[i];
    return NULL;
}

static void init_hdr(const coord *c, wr_pmsg *h, int type) {
    wr_pmsg_init(h, type);
    h->job_id = c->cfg.job_id;
    h->epoch = c->formed ? 1 : 0;
    h->role = WR_ROLE_COORDINATOR;
}

static int send_to(coord *c, const node *n, const wr_pmsg *h) {
    char err[WR_ERR_LEN];
    int rc = wr_send_pmsg(c->ep, n->peer, n->peer_len, h, NULL, 0, NULL, NULL, 0, &c->scratch, err);
    if (rc != WR_OK) {
        char who[WR_ADDR_MAX + 96];
        describe(c, n, who, sizeof who);
        wr_warn("cannot send %s to %s: %s", wr_msg_type_name(h->type), who, err);
    }
    return rc;
}

static void send_shutdown_all(coord *c, int status, const char *reason) {
    wr_pmsg h;
    init_hdr(c, &h, WR_MT_SHUTDOWN);
    h.code = status;
    snprintf(h.reason, sizeof h.reason, "%s", reason);
    for (int i = 0; i < c->n_nodes; i++)
        if (!c->nodes[i].left) send_to(c, &c->nodes[i], &h);
}

static void reply_error(coord *c, const wr_msg *m, int code, const char *reason) {
    wr_send_error(c->ep, m->peer, m->peer_len, c->cfg.job_id, c->formed ? 1 : 0, code, reason, &c->scratch);
}

// Stops the job: logs, SHUTDOWN{status} to everyone still there, returns status.
static int stop_job(coord *c, int status, const char *reason) {
    if (status == 0)
        wr_info("%s", reason);
    else
        wr_error("%s", reason);
    send_shutdown_all(c, status, reason);
    return status;
}

static void send_welcome(coord *c, const node *n) {
    wr_pmsg h;
    init_hdr(c, &h, WR_MT_CLUSTER_MAP);
    h.epoch = 0;
    h.n_params = 0;
    h.n_config = c->n_kv;
    h.config = c->kv;
    if (n->role == WR_ROLE_SHARD) h.shard = -1;
    send_to(c, n, &h);
}

// Builds and sends the epoch-1 map. Returns 0 or an exit status.
static int form_job(coord *c) {
    char err[WR_ERR_LEN];
    int S = c->cfg.shards, W = c->cfg.workers;
    // The one source of the total step count (lr schedule) for shards and
    // workers: steps, else epochs over the training-set size the workers
    // reported (the Fashion-MNIST size for workers that do not say).
    int64_t nt = c->nt ? (int64_t)c->nt : WR_FASHION_TRAIN;
    int64_t ts = wr_total_steps(&c->cfg, nt);
    if (ts < 1 || (uint64_t)ts > WR_MAX_TOTAL_STEPS) {
        char why[256];
        snprintf(why, sizeof why,
                 "no training steps: epochs = %d over a training set of %lld examples with batch %d gives %lld steps",
                 c->cfg.epochs, (long long)nt, c->cfg.batch, (long long)ts);
        return stop_job(c, 2, why);
    }
    c->total_steps = (uint64_t)ts;
    c->lo = wr_calloc((size_t)S, sizeof *c->lo);
    c->hi = wr_calloc((size_t)S, sizeof *c->hi);
    if (wr_shard_ranges(c->d, S, c->lo, c->hi, err) != WR_OK) {
        char why[WR_ERR_LEN + 64];
        snprintf(why, sizeof why, "cannot split the model over the shards: %s", err);
        return stop_job(c, 2, why);
    }
    c->shard_node = wr_calloc((size_t)S, sizeof *c->shard_node);
    c->worker_node = wr_calloc((size_t)W, sizeof *c->worker_node);
    wr_pmsg h;
    init_hdr(c, &h, WR_MT_CLUSTER_MAP);
    h.epoch = 1;
    h.n_params = c->d;
    h.n_shards = (uint32_t)S;
    h.shards = wr_calloc((size_t)S, sizeof *h.shards);
    h.n_workers_map = (uint32_t)W;
    h.workers = wr_calloc((size_t)W, sizeof *h.workers);
    for (int i = 0; i < c->n_nodes; i++) {
        node *n = &c->nodes[i];
        if (n->role == WR_ROLE_SHARD) {
            wr_shard_info *si = &h.shards[n->index];
            si->lo = c->lo[n->index];
            si->hi = c->hi[n->index];
            snprintf(si->addr, sizeof si->addr, "%s", n->addr);
            c->shard_node[n->index] = i;
        } else {
            wr_worker_info *wi = &h.workers[n->index];
            wi->rank = n->index;
            snprintf(wi->host, sizeof wi->host, "%s", n->host);
            wi->group = n->group;
            c->worker_node[n->index] = i;
        }
    }
    h.n_config = c->n_kv;
    h.config = c->kv;
    h.total_steps = c->total_steps;
    c->formed = 1;
    double now = wr_now();
    for (int i = 0; i < c->n_nodes; i++) {
        node *n = &c->nodes[i];
        h.shard = n->role == WR_ROLE_SHARD ? n->index : -1;
        h.rank = n->role == WR_ROLE_WORKER ? n->index : -1;
        n->last_seen = now;
        send_to(c, n, &h);
    }
    free(h.shards);
    free(h.workers);
    c->book = wr_digest_book_new(W, S);
    wr_digest_book_set_limits(c->book, c->cfg.digest_every > 0 ? (uint64_t)c->cfg.digest_every : 0,
                              WR_DIGEST_WINDOW, S * WR_DIGEST_OPEN_PER_SHARD);
    c->barrier_in = wr_calloc((size_t)W, 1);
    wr_info("job formed: %d shards, %d workers, d = %llu parameters, %llu steps, codec %s; cluster map epoch 1 sent",
            S, W, (unsigned long long)c->d, (unsigned long long)c->total_steps,
            c->cfg.codec == WR_JOB_CODEC_BIRDER ? "birder" : "fp32");
    for (int s = 0; s < S; s++) {
        node *n = &c->nodes[c->shard_node[s]];
        wr_info("  shard %d: [%llu, %llu) at %s (host %s)", s, (unsigned long long)c->lo[s],
                (unsigned long long)c->hi[s], n->addr, n->host);
    }
    return 0;
}

// REGISTER handling; returns 0 or an exit status.
static int on_register(coord *c, const wr_msg *m, const wr_pmsg *h) {
    if (h->job_id != 0 && h->job_id != c->cfg.job_id) {
        char r[128];
        snprintf(r, sizeof r, "REGISTER for job %llu, this coordinator runs job %llu", (unsigned long long)h->job_id,
                 (unsigned long long)c->cfg.job_id);
        wr_refused(&c->refused, WR_PERR_JOB, "a registering node", r);
        reply_error(c, m, WR_EC_REJECTED, r);
        return 0;
    }
    node *n = find_peer(c, m);
    if (n && n->role != h->role) {
        reply_error(c, m, WR_EC_REJECTED, "REGISTER with a different role from the same connection");
        return 0;
    }
    if (!n) {
        int full = c->formed ||
                   (h->role == WR_ROLE_SHARD ? c->n_shards_reg >= c->cfg.shards : c->n_workers_seen >= c->cfg.workers);
        if (full) {
            char r[160];
            snprintf(r, sizeof r, "job %llu %s: it has %d %ss", (unsigned long long)c->cfg.job_id,
                     c->formed ? "is already running" : "is full", h->role == WR_ROLE_SHARD ? c->cfg.shards : c->cfg.workers,
                     role_name(h->role));
            wr_warn("refused a %s from host %s: %s", role_name(h->role), h->host, r);
            reply_error(c, m, WR_EC_REJECTED, r);
            return 0;
        }
        WR_CHECK(c->n_nodes < c->max_nodes);
        n = &c->nodes[c->n_nodes++];
        memset(n, 0, sizeof *n);
        n->role = h->role;
        memcpy(n->peer, m->peer, m->peer_len);
        n->peer_len = m->peer_len;
        snprintf(n->host, sizeof n->host, "%s", h->host[0] ? h->host : "?");
        snprintf(n->addr, sizeof n->addr, "%s", h->addr);
        n->group = h->group;
        n->index = -1;
        if (h->role == WR_ROLE_SHARD) {
            n->index = c->n_shards_reg++;
            n->registered = 1;
            wr_info("shard %d registered from host %s (%s)", n->index, n->host, n->addr);
        } else {
            c->n_workers_seen++;
            wr_debug("worker from host %s says hello", n->host);
        }
    }
    if (h->role == WR_ROLE_WORKER && h->n_params > 0 && !n->registered) {
        if (c->d && h->n_params != c->d) {
            char r[WR_ERR_LEN];
            snprintf(r, sizeof r,
                     "worker on host %s reports d = %llu parameters, the other workers %llu (model %s): "
                     "all workers must build the same model",
                     n->host, (unsigned long long)h->n_params, (unsigned long long)c->d, c->cfg.model);
            reply_error(c, m, WR_EC_CONFIG, r);
            return stop_job(c, 2, r);
        }
        if (c->nt_set && h->train_examples != c->nt) {
            char r[WR_ERR_LEN];
            snprintf(r, sizeof r,
                     "worker on host %s reports a training set of %llu examples, the other workers %llu: "
                     "all workers must load the same data set (it sets the total step count)",
                     n->host, (unsigned long long)h->train_examples, (unsigned long long)c->nt);
            reply_error(c, m, WR_EC_CONFIG, r);
            return stop_job(c, 2, r);
        }
        c->nt = h->train_examples;
        c->nt_set = 1;
        c->d = h->n_params;
        n->d = h->n_params;
        n->registered = 1;
        n->index = c->n_workers_reg++;
        wr_info("worker %d registered from host %s (d = %llu, training set %llu)", n->index, n->host,
                (unsigned long long)n->d, (unsigned long long)h->train_examples);
    } else if (!c->formed) {
        send_welcome(c, n);  // first REGISTER (or a repeat): the config
    }
    if (!c->formed && c->n_shards_reg == c->cfg.shards && c->n_workers_reg == c->cfg.workers) return form_job(c);
    return 0;
}

static void registration_report(coord *c, double waited, char *out, size_t len) {
    int miss_w = c->cfg.workers - c->n_workers_reg, miss_s = c->cfg.shards - c->n_shards_reg;
    size_t at = 0;
    int w = snprintf(out, len, "registration timed out after %.1f s: missing", waited);
    at = (size_t)(w > 0 ? w : 0);
#define APPEND(...)                                                              \
    do {                                                                         \
        if (at < len) {                                                          \
            int k_ = snprintf(out + at, len - at, __VA_ARGS__);                  \
            if (k_ > 0) at += (size_t)k_;                                        \
        }                                                                        \
    } while (0)
    if (miss_w > 0) APPEND(" %d of %d workers", miss_w, c->cfg.workers);
    if (miss_w > 0 && miss_s > 0) APPEND(" and");
    if (miss_s > 0) APPEND(" %d of %d shards", miss_s, c->cfg.shards);
    APPEND("; registered:");
    if (c->n_nodes == 0) APPEND(" nobody");
    int first = 1;
    for (int pass = 0; pass < 2; pass++)  // shards first, then workers
        for (int i = 0; i < c->n_nodes; i++) {
            node *n = &c->nodes[i];
            if ((pass == 0) != (n->role == WR_ROLE_SHARD)) continue;
            if (n->role == WR_ROLE_SHARD)
                APPEND("%s shard %d from host %s (%s)", first ? "" : ",", n->index, n->host, n->addr);
            else if (n->registered)
                APPEND("%s worker from host %s", first ? "" : ",", n->host);
            else
                APPEND("%s worker from host %s (config sent, model size never reported)", first ? "" : ",",
                       n->host);
            first = 0;
        }
#undef APPEND
}

// Connection probe: a HEARTBEAT{role coordinator} to every node still in the
// job (nodes ignore it). The ROUTER refuses a send to a peer whose connection
// closed, so a crashed process is noticed within one heartbeat interval, and
// before blaming the node that reported the resulting error. Returns the index
// of the first node found gone, or -1.
static int probe_nodes(coord *c) {
    wr_pmsg h;
    init_hdr(c, &h, WR_MT_HEARTBEAT);
    char err[WR_ERR_LEN];
    for (int i = 0; i < c->n_nodes; i++) {
        node *n = &c->nodes[i];
        if (n->left) continue;
        int rc = wr_send_pmsg(c->ep, n->peer, n->peer_len, &h, NULL, 0, NULL, NULL, 0, &c->scratch, err);
        if (rc == WR_ECLOSED) return i;
    }
    return -1;
}

// Stops the job because node i is gone (status 5); `why` adds context.
static int node_gone(coord *c, int i, const char *why) {
    node *n = &c->nodes[i];
    char who[WR_ADDR_MAX + 96], r[WR_ADDR_MAX + WR_REASON_MAX + 256];
    describe(c, n, who, sizeof who);
    snprintf(r, sizeof r, "%s is dead: its connection to the coordinator closed%s%s", who, why ? "; " : "",
             why ? why : "");
    n->left = 1;
    return stop_job(c, 5, r);
}

// Returns 0 or an exit status.
static int on_message(coord *c, wr_msg *m) {
    wr_pmsg h;
    enum wr_perr perr = WR_PERR_NONE;
    char err[WR_ERR_LEN];
    node *n = find_peer(c, m);
    char who[WR_ADDR_MAX + 96];
    if (n)
        describe(c, n, who, sizeof who);
    else
        snprintf(who, sizeof who, "an unregistered peer");
    int rc = wr_proto_decode(m->header.data, m->header.len, m->payload.len, NULL, &h, &perr, err);
    if (rc != WR_OK) {
        wr_refused(&c->refused, perr, who, err);
        reply_error(c, m, WR_EC_PROTOCOL, err);
        return 0;
    }
    int st = 0;
    if (h.type == WR_MT_REGISTER) {
        st = on_register(c, m, &h);
        wr_pmsg_clear(&h);
        return st;
    }
    // Everything else carries this job's id.
    if (h.job_id != c->cfg.job_id) {
        snprintf(err, sizeof err, "%s for job %llu, this coordinator runs job %llu", wr_msg_type_name(h.type),
                 (unsigned long long)h.job_id, (unsigned long long)c->cfg.job_id);
        wr_refused(&c->refused, WR_PERR_JOB, who, err);
        reply_error(c, m, WR_EC_PROTOCOL, err);
        wr_pmsg_clear(&h);
        return 0;
    }
    if (h.type == WR_MT_HEARTBEAT) {
        // Identified by (role, rank|shard): heartbeats come on their own socket.
        if (c->formed) {
            if (h.role == WR_ROLE_SHARD && h.shard >= 0 && h.shard < c->cfg.shards)
                c->nodes[c->shard_node[h.shard]].last_seen = wr_now();
            else if (h.role == WR_ROLE_WORKER && h.rank >= 0 && h.rank < c->cfg.workers)
                c->nodes[c->worker_node[h.rank]].last_seen = wr_now();
            else
                wr_debug("heartbeat from unknown %s %d", role_name(h.role), h.role == WR_ROLE_SHARD ? h.shard : h.rank);
        }
        wr_pmsg_clear(&h);
        return 0;
    }
    if (!n) {
        snprintf(err, sizeof err, "%s from a peer that has not registered", wr_msg_type_name(h.type));
        wr_refused(&c->refused, WR_PERR_ROLE, who, err);
        reply_error(c, m, WR_EC_PROTOCOL, err);
        wr_pmsg_clear(&h);
        return 0;
    }
    n->last_seen = wr_now();
    switch (h.type) {
    case WR_MT_ERROR: {
        char r[WR_REASON_MAX + WR_ADDR_MAX + 128];
        snprintf(r, sizeof r, "%s reported an error (%s): %s", who,
                 h.code == WR_EC_CONFIG ? "config" : h.code == WR_EC_TIMEOUT ? "timeout" : "error", h.reason);
        n->left = 1;  // it stops on its own
        int status = h.code == WR_EC_CONFIG ? 2 : 1;
        // Often the cause is another node that died (a worker losing its
        // shard), and the error can arrive before its connection is seen
        // closed: name that one, with status 5, if liveness finds it within
        // ~2 heartbeat intervals (checked every tick); else stop with `status`.
        int gone = c->formed ? probe_nodes(c) : -1;
        if (gone >= 0) {
            st = node_gone(c, gone, r);
        } else if (!c->formed || status == 2) {
            st = stop_job(c, status, r);
        } else if (!c->pend_status) {
            c->pend_status = status;
            c->pend_until = wr_now() + WR_MAX(2.0 * c->cfg.heartbeat_interval, 0.5);
            snprintf(c->pend_reason, sizeof c->pend_reason, "%s", r);
            wr_info("%s; checking whether another node died first", r);
        }
        break;
    }
    case WR_MT_SHUTDOWN: {
        char r[WR_REASON_MAX + WR_ADDR_MAX + 128];
        snprintf(r, sizeof r, "%s asked to stop the job with status %d: %s", who, h.code, h.reason);
        n->left = 1;
        st = stop_job(c, h.code ? h.code : 1, r);
        break;
    }
    case WR_MT_DIGEST: {
        if (!c->formed) {
            reply_error(c, m, WR_EC_PROTOCOL, "DIGEST before the cluster map");
            break;
        }
        int slot = n->role == WR_ROLE_SHARD ? c->cfg.workers : n->index;
        if (n->role == WR_ROLE_SHARD && h.shard != n->index) {
            snprintf(err, sizeof err, "DIGEST for shard %d from shard %d", h.shard, n->index);
            wr_refused(&c->refused, WR_PERR_ROLE, who, err);
            reply_error(c, m, WR_EC_PROTOCOL, err);
            break;
        }
        char report[2048];
        int r = wr_digest_book_add(c->book, h.step, h.shard, slot, h.digest, report, sizeof report);
        if (r < 0) {
            wr_refused(&c->refused, WR_PERR_ROLE, who, report);
            reply_error(c, m, WR_EC_PROTOCOL, report);
        } else if (r == 2) {
            wr_error("==================== REPLICAS DIVERGED ====================");
            wr_error("%s", report);
            char reason[WR_REASON_MAX];
            snprintf(reason, sizeof reason, "replica digest mismatch at step %llu, shard %d",
                     (unsigned long long)h.step, h.shard);
            st = stop_job(c, 4, reason);
        }
        break;
    }
    case WR_MT_BARRIER: {
        if (!c->formed || n->role != WR_ROLE_WORKER) {
            reply_error(c, m, WR_EC_PROTOCOL, "BARRIER is for workers of a formed job");
            break;
        }
        if (c->barrier_active && h.barrier_id != c->barrier_id) {
            snprintf(err, sizeof err, "BARRIER %llu while barrier %llu is open", (unsigned long long)h.barrier_id,
                     (unsigned long long)c->barrier_id);
            reply_error(c, m, WR_EC_PROTOCOL, err);
            break;
        }
        if (!c->barrier_active) {
            c->barrier_active = 1;
            c->barrier_id = h.barrier_id;
            c->barrier_count = 0;
            memset(c->barrier_in, 0, (size_t)c->cfg.workers);
        }
        if (!c->barrier_in[n->index]) {
            c->barrier_in[n->index] = 1;
            c->barrier_count++;
        }
        int live = c->cfg.workers - c->n_left;
        if (c->barrier_count >= live) {
            wr_pmsg b;
            init_hdr(c, &b, WR_MT_BARRIER);
            b.barrier_id = c->barrier_id;
            for (int r = 0; r < c->cfg.workers; r++)
                if (c->barrier_in[r]) send_to(c, &c->nodes[c->worker_node[r]], &b);
            wr_debug("barrier %llu released", (unsigned long long)c->barrier_id);
            c->barrier_active = 0;
        }
        break;
    }
    case WR_MT_STATS: {
        char line[2048];
        size_t at = 0;
        for (uint32_t i = 0; i < h.n_stats && at < sizeof line; i++) {
            int k = snprintf(line + at, sizeof line - at, "%s%s=%.6g", i ? " " : "", h.stats[i].name, h.stats[i].value);
            if (k > 0) at += (size_t)k;
        }
        if (!at) line[0] = 0;
        wr_info("stats from %s: %s", who, line);
        break;
    }
    case WR_MT_LEAVE:
        if (n->role != WR_ROLE_WORKER || !c->formed) {
            reply_error(c, m, WR_EC_PROTOCOL, "LEAVE is for workers of a formed job");
            break;
        }
        if (!n->left) {
            n->left = 1;
            c->n_left++;
            wr_info("%s left (%d of %d workers done)", who, c->n_left, c->cfg.workers);
        }
        break;
    default:
        snprintf(err, sizeof err, "unexpected %s at the coordinator", wr_msg_type_name(h.type));
        wr_refused(&c->refused, WR_PERR_ROLE, who, err);
        reply_error(c, m, WR_EC_PROTOCOL, err);
        break;
    }
    wr_pmsg_clear(&h);
    return st;
}

// Liveness: returns 0 or 5.
static int check_liveness(coord *c, double now) {
    for (int i = 0; i < c->n_nodes; i++) {
        node *n = &c->nodes[i];
        if (n->left) continue;
        double silent = now - n->last_seen;
        if (silent > c->cfg.heartbeat_timeout) {
            char who[WR_ADDR_MAX + 96], r[WR_ADDR_MAX + 256];
            describe(c, n, who, sizeof who);
            snprintf(r, sizeof r, "%s is dead: no heartbeat for %.1f s (heartbeat_timeout %g s)", who, silent,
                     c->cfg.heartbeat_timeout);
            n->left = 1;  // do not send it anything
            return stop_job(c, 5, r);
        }
    }
    return 0;
}

static void finish_report(coord *c) {
    uint64_t p = c->book ? wr_digest_book_passed(c->book) : 0, f = c->book ? wr_digest_book_failed(c->book) : 0;
    wr_info("digest checks: %llu passed, %llu failed", (unsigned long long)p, (unsigned long long)f);
    if (c->book && wr_digest_book_incomplete(c->book))
        wr_warn("%d digest checks incomplete (not every replica reported)", wr_digest_book_incomplete(c->book));
    if (c->book && wr_digest_book_refused(c->book))
        wr_warn("%llu digests refused (step not digested, outside the window, or too many open checks)",
                (unsigned long long)wr_digest_book_refused(c->book));
    if (c->refused.total) wr_warn("%llu messages refused", (unsigned long long)c->refused.total);
    wr_info("peak RSS %.1f MiB", wr_peak_rss_mib());
}

int wr_coordinator_run(const wr_coord_opts *o) {
    coord cs, *c = &cs;
    memset(c, 0, sizeof *c);
    c->o = o;
    c->cfg = o->cfg;
    char err[WR_ERR_LEN];
    wr_transport_ctx *ctx = wr_transport_ctx_new(o->io_threads > 0 ? o->io_threads : 1, err);
    if (!ctx) {
        wr_error("transport: %s", err);
        return 1;
    }
    wr_endpoint_opts eo;
    wr_endpoint_opts_default(&eo);
    eo.sndhwm = 100000;
    eo.rcvhwm = 100000;
    eo.linger_ms = 2000;
    // Control messages only (no payloads): frames beyond the header bound
    // are refused by ZeroMQ before it allocates for them.
    eo.max_msg_size = WR_PROTO_MAX_CONTROL_MSG;
    if (wr_bind(ctx, o->bind, &eo, &c->ep, err) != WR_OK) {
        wr_error("cannot bind %s: %s", o->bind, err);
        wr_transport_ctx_free(ctx);
        return 1;
    }
    char bound[WR_ADDR_MAX];
    if (wr_last_endpoint(c->ep, bound, sizeof bound) != WR_OK) snprintf(bound, sizeof bound, "%s", o->bind);
    wr_advertised_addr(bound, o->advertise, c->adv, sizeof c->adv);
    wr_info("listening on %s", c->adv);
    wr_info("job %llu: waiting up to %g s for %d shards and %d workers", (unsigned long long)c->cfg.job_id,
            c->cfg.register_timeout, c->cfg.shards, c->cfg.workers);
    wr_config_to_kv(&c->cfg, &c->kv, &c->n_kv);
    c->max_nodes = c->cfg.shards + c->cfg.workers;
    c->nodes = wr_calloc((size_t)c->max_nodes, sizeof *c->nodes);

    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);

    c->t_start = wr_now();
    int status = -1;
    while (status < 0) {
        int ready = 0;
        int n = wr_poll(&c->ep, 1, &ready, 100, err);
        if (n < 0) {
            // EINTR from a signal lands here too; the flag is checked below.
            if (!g_stop_signal) wr_debug("poll: %s", err);
        }
        // Drain what is queued (bounded so housekeeping still runs).
        for (int k = 0; n > 0 && ready && k < 1000 && status < 0; k++) {
            wr_msg m;
            memset(&m, 0, sizeof m);
            int rc = wr_recv(c->ep, &m, 0, err);
            if (rc == WR_ETIMEDOUT) break;
            if (rc == WR_EPROTO) {
                wr_refused(&c->refused, WR_PERR_MALFORMED, "a peer", err);
                continue;
            }
            if (rc != WR_OK) {
                wr_error("receive: %s", err);
                status = stop_job(c, 1, "coordinator transport failure");
                break;
            }
            int st = on_message(c, &m);
            wr_msg_release(&m);
            if (st) status = st;
        }
        if (status >= 0) break;
        double now = wr_now();
        if (g_stop_signal) {
            char r[96];
            snprintf(r, sizeof r, "coordinator stopped by signal %d", (int)g_stop_signal);
            status = stop_job(c, 1, r);
            break;
        }
        if (!c->formed) {
            double waited = now - c->t_start;
            if (waited > c->cfg.register_timeout) {
                char r[4096];
                registration_report(c, waited, r, sizeof r);
                wr_error("%s", r);
                char reason[WR_REASON_MAX];
                snprintf(reason, sizeof reason, "registration timed out after %.1f s", waited);
                send_shutdown_all(c, 3, reason);
                status = 3;
            }
        } else {
            if (c->n_left == c->cfg.workers && c->book && wr_digest_book_incomplete(c->book) > 0) {
                // A shard's last DIGEST can arrive after the last LEAVE: wait
                // for the open checks (bounded by step_timeout); a check that
                // never completes fails the job, it does not pass silently.
                if (c->end_wait_t0 == 0) {
                    c->end_wait_t0 = now;
                    wr_info("all workers done; waiting up to %g s for %d open digest checks", c->cfg.step_timeout,
                            wr_digest_book_incomplete(c->book));
                } else if (now - c->end_wait_t0 > c->cfg.step_timeout) {
                    char open[1024], r[WR_REASON_MAX];
                    wr_digest_book_describe_open(c->book, open, sizeof open);
                    wr_error("digest checks still incomplete %g s after the last worker left: %s", c->cfg.step_timeout,
                             open);
                    snprintf(r, sizeof r, "%d digest checks incomplete at the end of the job",
                             wr_digest_book_incomplete(c->book));
                    status = stop_job(c, 1, r);
                    break;
                }
            }
            if (c->n_left == c->cfg.workers && !(c->book && wr_digest_book_incomplete(c->book) > 0)) {
                wr_pmsg h;
                init_hdr(c, &h, WR_MT_SHUTDOWN);
                h.code = 0;
                snprintf(h.reason, sizeof h.reason, "job done");
                for (int s = 0; s < c->cfg.shards; s++) send_to(c, &c->nodes[c->shard_node[s]], &h);
                wr_info("all %d workers done after %.1f s; shards shut down", c->cfg.workers, now - c->t_start);
                status = 0;
                break;
            }
            int st = check_liveness(c, now);
            if (!st && (now >= c->next_probe || c->pend_status)) {
                c->next_probe = now + c->cfg.heartbeat_interval;
                int gone = probe_nodes(c);
                if (gone >= 0) st = node_gone(c, gone, c->pend_status ? c->pend_reason : NULL);
            }
            if (!st && c->pend_status && now >= c->pend_until) st = stop_job(c, c->pend_status, c->pend_reason);
            if (st) status = st;
        }
    }
    finish_report(c);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    wr_close(c->ep);
    wr_transport_ctx_free(ctx);
    wr_buf_free(&c->scratch);
    wr_config_kv_free(c->kv, c->n_kv);
    wr_digest_book_free(c->book);
    free(c->nodes);
    free(c->lo);
    free(c->hi);
    free(c->shard_node);
    free(c->worker_node);
    free(c->barrier_in);
    return status;
}
