// coord_state.c — the coordinator's state on disk (docs/ARCHITECTURE.md,
// "Coordinator restart"): the cluster map of the epoch in force with every
// member's credentials, and the job's counters, in checkpoint_dir as
// coordinator-<seq>.ckpt (common/checkpoint.h: atomic write, checksums). A
// coordinator started again with the same config restores a job that had
// not ended and waits for its nodes to come back (coord_rejoin.c).
#include "coord_internal.h"

// Messages are cut to their buffers on purpose.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "log.h"

#define STATE_PREFIX "coordinator"
#define STATE_KEEP 2
#define STATE_VERSION 1

// Section "meta": these u64 values, in this order.
enum { M_VERSION, M_D, M_NT, M_NEXT_RANK, M_EPOCH, M_TOTAL, M_ENDED, M_START, M_COUNT };

// The map of the epoch in force as a shard would get it (shard 0's view:
// every member's token and identity), encoded into out. WR_OK or WR_ERR.
static int encode_map(coord *c, wr_buf *out, char *err) {
    int n = c->map.n_workers;
    uint8_t(*tokens)[WR_TOKEN_LEN] = wr_calloc((size_t)(n > 0 ? n : 1), WR_TOKEN_LEN);
    char **idents = wr_calloc((size_t)(n > 0 ? n : 1), sizeof *idents);
    for (int i = 0; i < n; i++) {
        const coord_node *w = &c->nodes[c->worker_node[c->map.workers[i].rank]];
        memcpy(tokens[i], w->token, WR_TOKEN_LEN);
        idents[i] = (char *)w->user;
    }
    wr_pmsg h;
    coord_init_hdr(c, &h, WR_MT_CLUSTER_MAP);
    wr_cluster_to_map(&c->map, &h);
    h.epoch = c->epoch;
    h.n_config = c->n_kv;
    h.config = c->kv;
    h.shard = 0;
    h.n_tokens = h.n_idents = (uint32_t)n;
    h.tokens = tokens;
    h.idents = idents;
    int rc = wr_proto_encode(&h, out, err);
    free(tokens);
    free(idents);
    return rc;
}

static wr_ckpt_expect state_expect(const coord *c) {
    return (wr_ckpt_expect){.role = WR_CKPT_COORDINATOR,
                            .index = 0,
                            .job_id = c->cfg.job_id,
                            .config_digest = wr_config_digest(&c->cfg)};
}

void coord_state_save(coord *c, int ended) {
    // mode=allreduce and ps_node_aggregate keep no state: a restarted
    // coordinator starts a new job (a fixed membership cannot be re-formed)
    if (!c->cfg.checkpoint_dir[0] || !c->formed || c->epoch < 1 || coord_fixed(c)) return;
    char err[WR_ERR_LEN];
    wr_buf map = {0};
    if (encode_map(c, &map, err) != WR_OK) {
        wr_error("coordinator state not written: %s", err);
        wr_buf_free(&map);
        return;
    }
    uint64_t meta[M_COUNT] = {[M_VERSION] = STATE_VERSION,
                              [M_D] = c->d,
                              [M_NT] = c->nt,
                              [M_NEXT_RANK] = (uint64_t)c->next_rank,
                              [M_EPOCH] = c->epoch,
                              [M_TOTAL] = (uint64_t)c->map.total_steps,
                              [M_ENDED] = (uint64_t)(ended != 0),
                              [M_START] = c->map.start_step};
    wr_ckpt_section secs[2] = {{"meta", WR_CKPT_U64, meta, sizeof meta},
                               {"map", WR_CKPT_BYTES, map.data, map.len}};
    wr_ckpt_expect ex = state_expect(c);
    wr_ckpt_meta m = {.role = WR_CKPT_COORDINATOR,
                      .index = 0,
                      .job_id = c->cfg.job_id,
                      .epoch = c->epoch,
                      .step = ++c->state_seq,
                      .config_digest = ex.config_digest};
    if (wr_ckpt_write(c->cfg.checkpoint_dir, STATE_PREFIX, &m, secs, 2, STATE_KEEP, err) != WR_OK)
        wr_error("coordinator state not written: %s", err);
    else
        wr_debug("coordinator state %llu written (epoch %llu%s)", (unsigned long long)c->state_seq,
                 (unsigned long long)c->epoch, ended ? ", job ended" : "");
    wr_buf_free(&map);
}

// The map section decoded and checked into *cl and *h (tokens, identities).
// WR_OK or WR_ERR.
static int decode_map(const wr_ckpt *ck, wr_pmsg *h, wr_cluster *cl, char *err) {
    const wr_ckpt_sec *sec = NULL;
    for (int i = 0; i < ck->nsec; i++)
        if (!strcmp(ck->sec[i].name, "map")) sec = &ck->sec[i];
    if (!sec) return wr_err(err, WR_ERR, "no section 'map'");
    enum wr_perr perr;
    char e2[WR_ERR_LEN];
    if (wr_proto_decode(sec->data, sec->bytes, 0, NULL, h, &perr, e2) != WR_OK)
        return wr_err(err, WR_ERR, "section 'map': %s", e2);
    if (h->type != WR_MT_CLUSTER_MAP || h->n_tokens != h->n_workers_map ||
        (h->n_idents && h->n_idents != h->n_workers_map)) {
        wr_pmsg_clear(h);
        return wr_err(err, WR_ERR, "section 'map' is not a shard's cluster map with credentials");
    }
    if (wr_cluster_from_map(cl, h, WR_ROLE_SHARD, e2) != WR_OK) {
        wr_pmsg_clear(h);
        return wr_err(err, WR_ERR, "section 'map': %s", e2);
    }
    return WR_OK;
}

// A node slot for the restored table (not back yet: peer_len 0).
static coord_node *add_node(coord *c, int role, int index, double now) {
    WR_CHECK(c->n_nodes < c->max_nodes);
    coord_node *n = &c->nodes[c->n_nodes++];
    memset(n, 0, sizeof *n);
    n->role = role;
    n->index = index;
    n->registered = 1;
    n->last_seen = now;
    snprintf(n->host, sizeof n->host, "?");
    return n;
}

// The node table, index tables and digest book from the restored map.
static void rebuild_nodes(coord *c, const wr_pmsg *h) {
    double now = wr_now();
    int S = c->map.n_shards;
    c->shard_node = wr_calloc((size_t)S, sizeof *c->shard_node);
    c->worker_node = wr_calloc(WR_MAX_WORKERS, sizeof *c->worker_node);
    for (int r = 0; r < WR_MAX_WORKERS; r++) c->worker_node[r] = -1;
    for (int s = 0; s < S; s++) {
        coord_node *n = add_node(c, WR_ROLE_SHARD, s, now);
        snprintf(n->addr, sizeof n->addr, "%s", c->map.shards[s].addr);
        memcpy(n->key, c->map.shards[s].key, sizeof n->key);
        c->shard_node[s] = c->n_nodes - 1;
    }
    c->book = wr_digest_book_new(WR_MAX_WORKERS, S);
    wr_digest_book_set_limits(c->book, c->cfg.digest_every > 0 ? (uint64_t)c->cfg.digest_every : 0,
                              WR_DIGEST_WINDOW, S * WR_DIGEST_OPEN_PER_SHARD);
    for (int i = 0; i < c->map.n_workers; i++) {
        const wr_worker_info *wi = &c->map.workers[i];
        coord_node *n = add_node(c, WR_ROLE_WORKER, wi->rank, now);
        snprintf(n->host, sizeof n->host, "%s", wi->host);
        n->group = wi->group;
        memcpy(n->token, h->tokens[i], WR_TOKEN_LEN);
        snprintf(n->user, sizeof n->user, "%s", h->n_idents && h->idents[i] ? h->idents[i] : "");
        n->reported = n->member = 1;
        n->d = c->d;
        n->nt = c->nt;
        n->start = 1;
        c->worker_node[wi->rank] = c->n_nodes - 1;
    }
    char rep[64];
    for (int r = 0; r < WR_MAX_WORKERS; r++)
        if (c->worker_node[r] < 0) wr_digest_book_member(c->book, r, 0, 0, rep, sizeof rep);
    c->n_shards_reg = S;
    c->n_workers_reg = c->n_workers_seen = c->map.n_workers;
}

// The restored job in c. WR_OK, or WR_ERR (err says why) with c untouched.
static int restore(coord *c, const wr_ckpt *ck, const uint64_t *meta, char *err) {
    wr_pmsg h;
    wr_cluster cl;
    if (decode_map(ck, &h, &cl, err) != WR_OK) return WR_ERR;
    if (cl.n_shards != c->cfg.shards || cl.n_workers > wr_config_max_workers(&c->cfg)) {
        wr_cluster_free(&cl);
        wr_pmsg_clear(&h);
        return wr_err(err, WR_ERR, "its map has %d shards and %d workers, the config %d shards", cl.n_shards,
                      cl.n_workers, c->cfg.shards);
    }
    c->map = cl;
    c->map.epoch = meta[M_EPOCH];
    c->map.start_step = meta[M_START];
    c->map.total_steps = (int64_t)meta[M_TOTAL];
    c->map.my_shard = c->map.my_rank = -1;
    c->d = meta[M_D];
    c->nt = meta[M_NT];
    c->nt_set = 1;
    c->epoch = meta[M_EPOCH];
    c->next_rank = (int)meta[M_NEXT_RANK];
    rebuild_nodes(c, &h);
    wr_pmsg_clear(&h);
    c->formed = 1;
    c->change.sent = wr_calloc((size_t)c->cfg.shards, sizeof *c->change.sent);
    c->change.acked = wr_calloc((size_t)c->cfg.shards, sizeof *c->change.acked);
    c->barrier.in = wr_calloc(WR_MAX_WORKERS, 1);
    return WR_OK;
}

int coord_state_load(coord *c) {
    if (!c->cfg.checkpoint_dir[0] || coord_fixed(c)) return 0;
    char err[WR_ERR_LEN];
    wr_ckpt ck;
    wr_ckpt_expect ex = state_expect(c);
    int rc = wr_ckpt_load_latest(c->cfg.checkpoint_dir, STATE_PREFIX, &ex, &ck, err);
    if (rc == WR_CKPT_ENOENT) return 0;
    if (rc != WR_OK) {
        wr_warn("no coordinator state of job %llu to restart from (%s): a new job starts",
                (unsigned long long)c->cfg.job_id, err);
        return 0;
    }
    c->state_seq = ck.meta.step;
    const uint64_t *meta = NULL;
    for (int i = 0; i < ck.nsec; i++)
        if (!strcmp(ck.sec[i].name, "meta") && ck.sec[i].bytes == M_COUNT * sizeof *meta)
            meta = ck.sec[i].data;
    int restored = 0;
    if (!meta || meta[M_VERSION] != STATE_VERSION)
        wr_warn("coordinator state %s: no section 'meta' of version %d: a new job starts", ck.path,
                STATE_VERSION);
    else if (meta[M_ENDED])
        wr_info("job %llu ended before (%s): a new job starts", (unsigned long long)c->cfg.job_id, ck.path);
    else if (restore(c, &ck, meta, err) != WR_OK)
        wr_warn("coordinator state %s refused: %s: a new job starts", ck.path, err);
    else
        restored = 1;
    if (restored) {
        c->restart.active = 1;
        c->restart.since = wr_now();
        c->restart.nodes = c->n_nodes;
        wr_info(
            "coordinator restarted: job %llu at epoch %llu (%s), waiting up to %g s (register_timeout) for "
            "its %d shards and %d workers to come back",
            (unsigned long long)c->cfg.job_id, (unsigned long long)c->epoch, ck.path, c->cfg.register_timeout,
            c->map.n_shards, c->map.n_workers);
    }
    wr_ckpt_free(&ck);
    return restored;
}

void coord_state_reset(coord *c) {
    wr_cluster_free(&c->map);
    memset(&c->map, 0, sizeof c->map);
    free(c->shard_node);
    free(c->worker_node);
    c->shard_node = c->worker_node = NULL;
    wr_digest_book_free(c->book);
    c->book = NULL;
    free(c->change.sent);
    free(c->change.acked);
    memset(&c->change, 0, sizeof c->change);
    free(c->barrier.in);
    memset(&c->barrier, 0, sizeof c->barrier);
    memset(&c->restart, 0, sizeof c->restart);
    c->n_nodes = c->n_shards_reg = c->n_workers_reg = c->n_workers_seen = 0;
    c->formed = c->nt_set = c->next_rank = 0;
    c->d = c->nt = c->epoch = 0;
    c->t_start = wr_now();
    wr_info("none of the restored job's nodes came back and a new node registers: job %llu starts anew",
            (unsigned long long)c->cfg.job_id);
}
