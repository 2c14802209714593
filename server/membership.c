// membership.c — who is in the job: registration (two-phase, see
// docs/ARCHITECTURE.md "Job life cycle"), the welcome, forming the job and
// sending the cluster map, the registration deadline and workers leaving.
#include "coord_internal.h"

// Messages are cut to their buffers on purpose (log lines, reasons on the wire).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/random.h>

#include "log.h"
#include "schedule.h"

// The welcome: CLUSTER_MAP{epoch 0, no shards or workers, the job config}.
static void send_welcome(coord *c, const coord_node *n) {
    wr_pmsg h;
    coord_init_hdr(c, &h, WR_MT_CLUSTER_MAP);
    h.n_params = 0;
    h.n_config = c->n_kv;
    h.config = c->kv;
    if (n->role == WR_ROLE_SHARD) h.shard = -1;
    coord_send_to(c, n, &h);
}

// The one source of the total step count (lr schedule) for shards and
// workers: steps, else epochs over the training-set size the workers reported
// (the Fashion-MNIST size for workers that do not say). WR_OK, or WR_ERR
// with the job stopped.
static int set_total_steps(coord *c) {
    int64_t nt = c->nt ? (int64_t)c->nt : WR_FASHION_TRAIN;
    int64_t ts = wr_total_steps(&c->cfg, nt);
    if (ts < 1 || (uint64_t)ts > WR_MAX_TOTAL_STEPS) {
        char why[256];
        snprintf(
            why, sizeof why,
            "no training steps: epochs = %d over a training set of %lld examples with batch %d gives %lld steps",
            c->cfg.epochs, (long long)nt, c->cfg.batch, (long long)ts);
        coord_stop_job(c, WR_EXIT_CONFIG, why);
        return WR_ERR;
    }
    c->map.total_steps = ts;
    return WR_OK;
}

// Fills c->map (ranges over d, shard addresses, worker ranks in registration
// order) and the index -> node tables. WR_OK, or WR_ERR with the job stopped.
static int build_map(coord *c) {
    int S = c->cfg.shards, W = c->cfg.workers;
    uint64_t *lo = wr_calloc((size_t)S, sizeof *lo), *hi = wr_calloc((size_t)S, sizeof *hi);
    char err[WR_ERR_LEN];
    int rc = wr_shard_ranges(c->d, S, lo, hi, err);
    c->map.epoch = 1;
    c->map.n_params = c->d;
    c->map.n_shards = S;
    c->map.n_workers = W;
    c->map.shards = wr_calloc((size_t)S, sizeof *c->map.shards);
    c->map.workers = wr_calloc((size_t)W, sizeof *c->map.workers);
    c->map.my_shard = c->map.my_rank = -1;
    for (int s = 0; s < S && rc == WR_OK; s++) {
        c->map.shards[s].lo = lo[s];
        c->map.shards[s].hi = hi[s];
    }
    free(lo);
    free(hi);
    if (rc != WR_OK) {
        char why[WR_ERR_LEN + 64];
        snprintf(why, sizeof why, "cannot split the model over the shards: %s", err);
        coord_stop_job(c, WR_EXIT_CONFIG, why);
        return WR_ERR;
    }
    c->shard_node = wr_calloc((size_t)S, sizeof *c->shard_node);
    c->worker_node = wr_calloc((size_t)W, sizeof *c->worker_node);
    for (int i = 0; i < c->n_nodes; i++) {
        const coord_node *n = &c->nodes[i];
        if (n->role == WR_ROLE_SHARD) {
            snprintf(c->map.shards[n->index].addr, sizeof c->map.shards[n->index].addr, "%s", n->addr);
            c->shard_node[n->index] = i;
        } else {
            wr_worker_info *wi = &c->map.workers[n->index];
            wi->rank = n->index;
            snprintf(wi->host, sizeof wi->host, "%s", n->host);
            wi->group = n->group;
            c->worker_node[n->index] = i;
        }
    }
    return WR_OK;
}

// A worker's map carries its own token only; a shard's every rank's token
// and identity (docs/PROTOCOL.md, "Rank credentials").
static void set_credentials(const coord *c, const coord_node *n, wr_pmsg *h, uint8_t (*tokens)[WR_TOKEN_LEN],
                            char **idents) {
    int shard = n->role == WR_ROLE_SHARD;
    h->has_token = !shard;
    if (!shard) memcpy(h->token, n->token, WR_TOKEN_LEN);
    h->n_tokens = h->n_idents = shard ? (uint32_t)c->cfg.workers : 0;
    h->tokens = shard ? tokens : NULL;
    h->idents = shard ? idents : NULL;
}

// Sends the epoch-1 map to every node, each with its own shard index or rank.
static void send_map(coord *c) {
    wr_pmsg h;
    coord_init_hdr(c, &h, WR_MT_CLUSTER_MAP);
    wr_cluster_to_map(&c->map, &h);
    h.n_config = c->n_kv;
    h.config = c->kv;
    int W = c->cfg.workers;
    uint8_t(*tokens)[WR_TOKEN_LEN] = wr_calloc((size_t)W, WR_TOKEN_LEN);
    char **idents = wr_calloc((size_t)W, sizeof *idents);
    for (int r = 0; r < W; r++) {
        coord_node *w = &c->nodes[c->worker_node[r]];
        memcpy(tokens[r], w->token, WR_TOKEN_LEN);
        idents[r] = w->user;
    }
    double now = wr_now();
    for (int i = 0; i < c->n_nodes; i++) {
        coord_node *n = &c->nodes[i];
        h.shard = n->role == WR_ROLE_SHARD ? n->index : -1;
        h.rank = n->role == WR_ROLE_WORKER ? n->index : -1;
        set_credentials(c, n, &h, tokens, idents);
        n->last_seen = now;
        coord_send_to(c, n, &h);
    }
    free(tokens);
    free(idents);
}

// Every shard and worker is in: assign ranges and ranks, send the epoch-1
// map, open the digest book.
static void form_job(coord *c) {
    int S = c->cfg.shards, W = c->cfg.workers;
    if (set_total_steps(c) != WR_OK || build_map(c) != WR_OK) return;
    c->formed = 1;
    send_map(c);
    c->book = wr_digest_book_new(W, S);
    wr_digest_book_set_limits(c->book, c->cfg.digest_every > 0 ? (uint64_t)c->cfg.digest_every : 0,
                              WR_DIGEST_WINDOW, S * WR_DIGEST_OPEN_PER_SHARD);
    c->barrier.in = wr_calloc((size_t)W, 1);
    wr_info(
        "job formed: %d shards, %d workers, d = %llu parameters, %llu steps, codec %s; cluster map epoch 1 sent",
        S, W, (unsigned long long)c->d, (unsigned long long)c->map.total_steps,
        c->cfg.codec == WR_JOB_CODEC_BIRDER ? "birder" : "fp32");
    for (int s = 0; s < S; s++) {
        const coord_node *n = &c->nodes[c->shard_node[s]];
        wr_info("  shard %d: [%llu, %llu) at %s (host %s)", s, (unsigned long long)c->map.shards[s].lo,
                (unsigned long long)c->map.shards[s].hi, n->addr, n->host);
    }
}

// A first REGISTER from a new connection: a node slot, or ERROR{rejected}
// when the job is full or running (NULL then).
static coord_node *admit(coord *c, const coord_in *in) {
    const wr_pmsg *h = &in->h;
    int shard = h->role == WR_ROLE_SHARD;
    if (c->formed || (shard ? c->n_shards_reg >= c->cfg.shards : c->n_workers_seen >= c->cfg.workers)) {
        char r[160];
        snprintf(r, sizeof r, "job %llu %s: it has %d %ss", (unsigned long long)c->cfg.job_id,
                 c->formed ? "is already running" : "is full", shard ? c->cfg.shards : c->cfg.workers,
                 coord_role_name(h->role));
        wr_warn("refused a %s from host %s: %s", coord_role_name(h->role), h->host, r);
        coord_reply_error(c, in->m, WR_EC_REJECTED, r);
        return NULL;
    }
    WR_CHECK(c->n_nodes < c->max_nodes);
    coord_node *n = &c->nodes[c->n_nodes++];
    memset(n, 0, sizeof *n);
    n->role = h->role;
    memcpy(n->peer, in->m->peer, in->m->peer_len);
    n->peer_len = in->m->peer_len;
    snprintf(n->host, sizeof n->host, "%s", h->host[0] ? h->host : "?");
    snprintf(n->addr, sizeof n->addr, "%s", h->addr);
    n->group = h->group;
    n->index = -1;
    if (shard) {
        n->index = c->n_shards_reg++;
        n->registered = 1;
        wr_info("shard %d registered from host %s (%s)", n->index, n->host, n->addr);
    } else {
        c->n_workers_seen++;
        wr_debug("worker from host %s says hello", n->host);
    }
    return n;
}

// The worker's rank credential (docs/PROTOCOL.md, "Rank credentials"): a
// random token, and the identity its connection authenticated with. WR_OK,
// or WR_ERR with the job stopped (no randomness).
static int issue_credential(coord *c, const coord_in *in, coord_node *n) {
    ssize_t got = getrandom(n->token, sizeof n->token, 0);
    if (got != (ssize_t)sizeof n->token) {
        char r[160];
        snprintf(r, sizeof r, "cannot draw a rank credential: getrandom: %s",
                 got < 0 ? strerror(errno) : "short read");
        coord_stop_job(c, WR_EXIT_FAILURE, r);
        return WR_ERR;
    }
    wr_peer_info pi;
    if (wr_msg_peer_info(in->m, &pi) == WR_OK) snprintf(n->user, sizeof n->user, "%s", pi.user);
    return WR_OK;
}

// A worker's second REGISTER (n_params = d, nt): every worker must report
// the same d and nt. WR_OK, or WR_ERR with the job stopped.
static int register_worker(coord *c, const coord_in *in, coord_node *n) {
    const wr_pmsg *h = &in->h;
    char r[WR_ERR_LEN];
    if (c->d && h->n_params != c->d)
        snprintf(r, sizeof r,
                 "worker on host %s reports d = %llu parameters, the other workers %llu (model %s): "
                 "all workers must build the same model",
                 n->host, (unsigned long long)h->n_params, (unsigned long long)c->d, c->cfg.model);
    else if (c->nt_set && h->train_examples != c->nt)
        snprintf(r, sizeof r,
                 "worker on host %s reports a training set of %llu examples, the other workers %llu: "
                 "all workers must load the same data set (it sets the total step count)",
                 n->host, (unsigned long long)h->train_examples, (unsigned long long)c->nt);
    else
        r[0] = 0;
    if (r[0]) {
        coord_reply_error(c, in->m, WR_EC_CONFIG, r);
        coord_stop_job(c, WR_EXIT_CONFIG, r);
        return WR_ERR;
    }
    if (issue_credential(c, in, n) != WR_OK) return WR_ERR;
    c->nt = h->train_examples;
    c->nt_set = 1;
    c->d = h->n_params;
    n->d = h->n_params;
    n->registered = 1;
    n->index = c->n_workers_reg++;
    wr_info("worker %d registered from host %s (d = %llu, training set %llu)", n->index, n->host,
            (unsigned long long)n->d, (unsigned long long)h->train_examples);
    return WR_OK;
}

void coord_on_register(coord *c, coord_in *in) {
    const wr_pmsg *h = &in->h;
    if (h->job_id != 0 && h->job_id != c->cfg.job_id) {
        char r[128];
        snprintf(r, sizeof r, "REGISTER for job %llu, this coordinator runs job %llu",
                 (unsigned long long)h->job_id, (unsigned long long)c->cfg.job_id);
        wr_refused(&c->refused, WR_PERR_JOB, "a registering node", r);
        coord_reply_error(c, in->m, WR_EC_REJECTED, r);
        return;
    }
    coord_node *n = in->n;
    if (n && n->role != h->role) {
        coord_reply_error(c, in->m, WR_EC_REJECTED,
                          "REGISTER with a different role from the same connection");
        return;
    }
    if (!n && !(n = admit(c, in))) return;
    if (h->role == WR_ROLE_WORKER && h->n_params > 0 && !n->registered) {
        if (register_worker(c, in, n) != WR_OK) return;
    } else if (!c->formed) {
        send_welcome(c, n);  // first REGISTER (or a repeat): the config
    }
    if (!c->formed && c->n_shards_reg == c->cfg.shards && c->n_workers_reg == c->cfg.workers) form_job(c);
}

void coord_on_leave(coord *c, coord_in *in) {
    coord_node *n = in->n;
    if (n->role != WR_ROLE_WORKER || !c->formed) {
        coord_reply_error(c, in->m, WR_EC_PROTOCOL, "LEAVE is for workers of a formed job");
        return;
    }
    if (!n->left) {
        n->left = 1;
        c->n_left++;
        wr_info("%s left (%d of %d workers done)", in->who, c->n_left, c->cfg.workers);
    }
}

// Appends printf-style text at *at of out[len] (cut at the end).
static void appendf(char *out, size_t len, size_t *at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void appendf(char *out, size_t len, size_t *at, const char *fmt, ...) {
    if (*at >= len) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(out + *at, len - *at, fmt, ap);
    va_end(ap);
    if (k > 0) *at += (size_t)k;
}

// The registration timeout's error text: who is missing, who registered.
static void registration_report(const coord *c, double waited, char *out, size_t len) {
    int miss_w = c->cfg.workers - c->n_workers_reg, miss_s = c->cfg.shards - c->n_shards_reg;
    size_t at = 0;
    if (len) out[0] = 0;
    appendf(out, len, &at, "registration timed out after %.1f s: missing", waited);
    if (miss_w > 0) appendf(out, len, &at, " %d of %d workers", miss_w, c->cfg.workers);
    if (miss_w > 0 && miss_s > 0) appendf(out, len, &at, " and");
    if (miss_s > 0) appendf(out, len, &at, " %d of %d shards", miss_s, c->cfg.shards);
    appendf(out, len, &at, "; registered:");
    if (c->n_nodes == 0) appendf(out, len, &at, " nobody");
    const char *sep = "";
    for (int pass = 0; pass < 2; pass++)  // shards first, then workers
        for (int i = 0; i < c->n_nodes; i++) {
            const coord_node *n = &c->nodes[i];
            if ((pass == 0) != (n->role == WR_ROLE_SHARD)) continue;
            if (n->role == WR_ROLE_SHARD)
                appendf(out, len, &at, "%s shard %d from host %s (%s)", sep, n->index, n->host, n->addr);
            else
                appendf(out, len, &at, "%s worker from host %s%s", sep, n->host,
                        n->registered ? "" : " (config sent, model size never reported)");
            sep = ",";
        }
}

void coord_registration_tick(coord *c, double now) {
    double waited = now - c->t_start;
    if (c->formed || waited <= c->cfg.register_timeout) return;
    char r[4096];
    registration_report(c, waited, r, sizeof r);
    wr_error("%s", r);
    char reason[WR_REASON_MAX];
    snprintf(reason, sizeof reason, "registration timed out after %.1f s", waited);
    coord_send_shutdown_all(c, WR_EXIT_REGISTER_TIMEOUT, reason);
    coord_end(c, WR_EXIT_REGISTER_TIMEOUT);
}

void coord_membership_free(coord *c) {
    wr_cluster_free(&c->map);
    free(c->nodes);
    free(c->shard_node);
    free(c->worker_node);
}
