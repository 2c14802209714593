// coord_allreduce.c — the coordinator's part in mode=allreduce
// (docs/ARCHITECTURE.md "mode=allreduce"): no shards; each worker says where
// its data endpoint is and which group (node) it runs in; the job forms with
// a fixed membership and stops when a worker is lost. The workers combine
// every step among themselves (CHUNK, worker to worker); the coordinator
// keeps rendezvous, ranks, the map, liveness and the digest checks.
#include "coord_internal.h"

// Messages are cut to their buffers on purpose (log lines, reasons on the wire).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static const char *algo_name(int algo) {
    return algo == WR_AR_HIER ? "hierarchical" : algo == WR_AR_ALLGATHER ? "flat" : "ring_fp32";
}

int coord_ar_refuse(const coord *c, const wr_pmsg *h, char *why, size_t len) {
    if (h->role == WR_ROLE_SHARD) {
        snprintf(why, len, "mode=allreduce runs without shards");
        return 1;
    }
    if (c->formed) {
        snprintf(why, len, "mode=allreduce has a fixed membership: the job is running with its %d workers",
                 c->cfg.workers);
        return 1;
    }
    return 0;
}

// Another worker that reported the data address addr already, else NULL.
static const coord_node *worker_with_addr(const coord *c, const coord_node *self, const char *addr) {
    for (int i = 0; i < c->n_nodes; i++) {
        const coord_node *o = &c->nodes[i];
        if (o != self && o->role == WR_ROLE_WORKER && o->reported && !strcmp(o->addr, addr)) return o;
    }
    return NULL;
}

int coord_ar_report(coord *c, const coord_in *in, coord_node *n, char *why, size_t len) {
    const wr_pmsg *h = &in->h;
    char addr[WR_ADDR_MAX], err[WR_ERR_LEN];
    if (!h->addr[0]) {
        snprintf(why, len,
                 "%s: the REGISTER with the model size carries no data address (field 'a'): "
                 "the worker must bind its data endpoint and say where it is",
                 coord_fixed_name(c));
        return WR_ERR;
    }
    if (wr_addr_from_peer(h->addr, n->from, c->adv_host, addr, sizeof addr, err) != WR_OK) {
        snprintf(why, len, "%s: data %s", coord_fixed_name(c), err);
        return WR_ERR;
    }
    if (wr_addr_unreachable_loopback(addr, n->from, "worker (data endpoint)", err, sizeof err)) {
        snprintf(why, len, "%s: %s", coord_fixed_name(c), err);
        return WR_ERR;
    }
    const coord_node *dup = worker_with_addr(c, n, addr);
    if (dup) {
        char who[COORD_WHO_MAX];
        coord_describe(dup, who, sizeof who);
        snprintf(why, len, "%s: data address %s is taken by %s (from %s)", coord_fixed_name(c), addr, who,
                 dup->from);
        return WR_ERR;
    }
    snprintf(n->addr, sizeof n->addr, "%s", addr);
    snprintf(n->laddr, sizeof n->laddr, "%s", h->local_addr);
    snprintf(n->gname, sizeof n->gname, "%s", h->group_name[0] ? h->group_name : n->host);
    // With keys: the public key the transport authenticated ("worker:<key>").
    if (!strncmp(n->user, "worker:", 7) && strlen(n->user + 7) == WR_CURVE_KEY_MAX - 1)
        memcpy(n->key, n->user + 7, WR_CURVE_KEY_MAX);
    return WR_OK;
}

int coord_ar_assign_groups(coord *c, int *n_groups, int *size) {
    int W = c->cfg.workers;
    const char **names = wr_calloc((size_t)W, sizeof *names);
    int *group = wr_calloc((size_t)W, sizeof *group);
    for (int r = 0; r < W; r++) names[r] = c->nodes[c->worker_node[r]].gname;
    *n_groups = wr_ar_group_index(names, W, group);
    for (int r = 0; r < W; r++) c->nodes[c->worker_node[r]].group = group[r];
    char sizes[1024];
    int equal = wr_ar_groups_equal(names, group, W, *n_groups, size, sizes, sizeof sizes) == WR_OK;
    free(names);
    free(group);
    if (equal || (coord_allreduce(c) && c->cfg.allreduce_algo != WR_AR_HIER)) return WR_OK;
    char why[COORD_REASON_MAX + 1024];
    snprintf(why, sizeof why,
             "%s: groups of unequal size: %s; start the same number of workers on every node%s",
             coord_allreduce(c) ? "mode=allreduce, hierarchical" : "ps_node_aggregate", sizes,
             coord_allreduce(c) ? " or use allreduce_algo=flat" : "");
    coord_stop_job(c, WR_EXIT_CONFIG, why);
    return WR_ERR;
}

// c->map without shards: every worker with its group and data endpoints.
static void build_map(coord *c) {
    int W = c->cfg.workers;
    c->map.epoch = 1;
    c->map.n_params = c->d;
    c->map.n_shards = 0;
    c->map.n_workers = W;
    c->map.shards = NULL;
    c->map.workers = wr_calloc((size_t)W, sizeof *c->map.workers);
    c->map.my_shard = c->map.my_rank = -1;
    for (int r = 0; r < W; r++) {
        const coord_node *n = &c->nodes[c->worker_node[r]];
        wr_worker_info *wi = &c->map.workers[r];
        wi->rank = r;
        snprintf(wi->host, sizeof wi->host, "%s", n->host);
        wi->group = n->group;
        snprintf(wi->addr, sizeof wi->addr, "%s", n->addr);
        snprintf(wi->laddr, sizeof wi->laddr, "%s", n->laddr);
        memcpy(wi->key, n->key, sizeof wi->key);
    }
}

static void log_formed(const coord *c, int n_groups, int size) {
    char shape[64];
    if (size > 0)
        snprintf(shape, sizeof shape, "%d groups x %d workers", n_groups, size);
    else
        snprintf(shape, sizeof shape, "%d groups, %d workers", n_groups, c->cfg.workers);
    wr_info("job formed: mode=allreduce (%s), %s, d = %llu parameters, %llu steps, codec %s; cluster map "
            "epoch 1 sent",
            algo_name(c->cfg.allreduce_algo), shape, (unsigned long long)c->d,
            (unsigned long long)c->map.total_steps, c->cfg.codec == WR_JOB_CODEC_BIRDER ? "birder" : "fp32");
    for (int r = 0; r < c->cfg.workers; r++) {
        const coord_node *n = &c->nodes[c->worker_node[r]];
        wr_info("  worker %d: group %s (%d), host %s, data %s%s%s", r, n->gname, n->group, n->host, n->addr,
                n->laddr[0] ? ", local " : "", n->laddr);
    }
}

void coord_ar_form(coord *c) {
    int W = c->cfg.workers;
    c->shard_node = wr_calloc(1, sizeof *c->shard_node);
    c->worker_node = wr_calloc(WR_MAX_WORKERS, sizeof *c->worker_node);
    for (int r = 0; r < WR_MAX_WORKERS; r++) c->worker_node[r] = -1;
    for (int i = 0; i < c->n_nodes; i++)
        if (c->nodes[i].role == WR_ROLE_WORKER && c->nodes[i].index >= 0)
            c->worker_node[c->nodes[i].index] = i;
    int n_groups, size;
    if (coord_ar_assign_groups(c, &n_groups, &size) != WR_OK) return;
    build_map(c);
    c->formed = 1;
    // Workers send DIGEST{sh = 0} of the whole vector, compared with each other.
    c->book = wr_digest_book_new(WR_MAX_WORKERS, 1);
    wr_digest_book_no_master(c->book);
    wr_digest_book_set_limits(c->book, c->cfg.digest_every > 0 ? (uint64_t)c->cfg.digest_every : 0,
                              WR_DIGEST_WINDOW, WR_DIGEST_OPEN_PER_SHARD);
    coord_epochs_start(c);  // epoch 1, members, the book's slots; no FENCE ever runs
    int *nodes = wr_calloc((size_t)W, sizeof *nodes);
    for (int r = 0; r < W; r++) nodes[r] = c->worker_node[r];
    coord_send_map(c, 1, 0, nodes, W, 0, 1);
    free(nodes);
    c->barrier.in = wr_calloc(WR_MAX_WORKERS, 1);
    log_formed(c, n_groups, size);
}

void coord_fixed_verdict(const coord *c, const char *why, char *out, size_t len) {
    char verdict[64];
    int v = snprintf(verdict, sizeof verdict, "; %s cannot go on without it", coord_fixed_name(c));
    // the verdict survives the SHUTDOWN's cut at WR_REASON_MAX: `why` gives way
    int room = WR_MAX(0, (int)WR_MIN(len, (size_t)WR_REASON_MAX) - 1 - v);
    snprintf(out, len, "%.*s%s", room, why, verdict);
}

void coord_ar_lost(coord *c, coord_node *n, const char *why) {
    n->left = 1;
    char r[WR_REASON_MAX];
    coord_fixed_verdict(c, why, r, sizeof r);
    coord_stop_job(c, WR_EXIT_NODE_LOST, r);
}

void coord_on_join(coord *c, coord_in *in) {
    if (c->cfg.mode != WR_MODE_ALLREDUCE) {
        coord_refuse(c, in, WR_PERR_ROLE, "unexpected JOIN at the coordinator (workers join with REGISTER)");
        return;
    }
    c->reg_refused++;
    wr_warn("refused a JOIN from %s: mode=allreduce has a fixed membership", in->who);
    coord_reply_error(c, in->m, WR_EC_REJECTED, "mode=allreduce has a fixed membership");
}
