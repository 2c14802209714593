// shard_replace.c — a lost shard replaced while the job runs
// (docs/ARCHITECTURE.md, "Shard restart"): the coordinator keeps the job
// (the workers wait at their step) for up to register_timeout; a shard that
// registers meanwhile takes the lost one's index, gets the map with 'rb' = 1
// and rebuilds its range from the workers' replicas, and the workers get the
// map of the same epoch with its address. Birder only: with the fp32 codec
// the optimizer state was on the lost shard (resume = on from checkpoints
// instead).
#include "coord_internal.h"

// Messages are cut to their buffers on purpose.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

// Why a lost shard cannot be replaced now, or NULL when it can.
static const char *no_replacement(const coord *c) {
    if (c->cfg.codec != WR_JOB_CODEC_BIRDER)
        return "the fp32 codec's optimizer state was on it (start the job again with resume = on)";
    if (c->replace.shard >= 0) return "another shard is already waiting for a replacement";
    if (coord_node_agg(c)) return "ps_node_aggregate has a fixed membership (no shard rebuild)";
    return NULL;
}

void coord_shard_lost(coord *c, coord_node *n, const char *why) {
    n->left = n->out = 1;
    const char *no = no_replacement(c);
    if (no) {
        char r[COORD_REASON_MAX + 160];
        snprintf(r, sizeof r, "%s; it cannot be replaced: %s", why, no);
        coord_stop_job(c, WR_EXIT_NODE_LOST, r);
        return;
    }
    c->replace.shard = n->index;
    c->replace.since = wr_now();
    snprintf(c->replace.why, sizeof c->replace.why, "%s", why);
    // A wildcard bind without --advertise: the address is this host's, as the shard reaches it.
    char hint[WR_ADDR_MAX + 32];
    if (!strncmp(c->adv, "tcp://*", 7))
        snprintf(hint, sizeof hint, "tcp://<this host>%s", c->adv + 7);
    else
        snprintf(hint, sizeof hint, "%s", c->adv);
    wr_warn("%s; waiting up to %g s (register_timeout) for a shard to take its place "
            "(start `wren-server shard --coordinator %s`); it rebuilds the range from the workers",
            why, c->cfg.register_timeout, hint);
}

void coord_shard_forget_lost(coord *c) {
    for (int i = 0; i < c->n_nodes; i++) {
        coord_node *n = &c->nodes[i];
        if (n->role != WR_ROLE_SHARD || n->index != c->replace.shard || !n->left) continue;
        memmove(n, n + 1, (size_t)(c->n_nodes - i - 1) * sizeof *n);
        c->n_nodes--;
        break;
    }
    coord_reindex(c);  // indices moved
}

// The members of the epoch in force, as node indices in rank order.
static int *members(const coord *c, int *n) {
    int *v = wr_calloc((size_t)c->map.n_workers + 1, sizeof *v);
    *n = 0;
    for (int i = 0; i < c->map.n_workers; i++) {
        int node = c->worker_node[c->map.workers[i].rank];
        if (node >= 0) v[(*n)++] = node;
    }
    return v;
}

void coord_shard_replace(coord *c, coord_node *n) {
    int s = n->index;
    c->shard_node[s] = (int)(n - c->nodes);
    snprintf(c->map.shards[s].addr, sizeof c->map.shards[s].addr, "%s", n->addr);
    memcpy(c->map.shards[s].key, n->key, sizeof n->key);
    n->last_seen = wr_now();
    int k, *nodes = members(c, &k);
    coord_send_map_replaced(c, s, nodes, k);
    free(nodes);
    wr_info(
        "shard %d replaced after %.1f s: %s (host %s) rebuilds [%llu, %llu) from the %d workers' replicas", s,
        wr_now() - c->replace.since, n->addr, n->host, (unsigned long long)c->map.shards[s].lo,
        (unsigned long long)c->map.shards[s].hi, k);
    c->replace.shard = -1;
    coord_state_save(c, 0);  // the new shard's address for a coordinator restart
    coord_epochs_repropose(c, s);
}

void coord_replace_tick(coord *c, double now) {
    if (c->replace.shard < 0 || now - c->replace.since <= c->cfg.register_timeout) return;
    char r[COORD_REASON_MAX + 128];
    snprintf(r, sizeof r, "%s; no shard took its place within %g s (register_timeout)", c->replace.why,
             c->cfg.register_timeout);
    coord_stop_job(c, WR_EXIT_NODE_LOST, r);
}
