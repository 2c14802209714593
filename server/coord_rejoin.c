// coord_rejoin.c — the nodes of a restored job coming back to a restarted
// coordinator (docs/ARCHITECTURE.md, "Coordinator restart"). Each node that
// lost the coordinator keeps training and sends REGISTER{'sh' = its shard
// index, or 'r' = its rank + 'tk' = its token} until it gets a map; once
// every node of the map is back (or register_timeout passed) a new epoch
// re-forms the job, and its commit bounds the digest checks.
#include "coord_internal.h"

// Messages are cut to their buffers on purpose.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

#include <stdio.h>
#include <string.h>

#include "log.h"

// The node of the map a REGISTER claims, or NULL (reason in why).
static coord_node *claimed(coord *c, const coord_in *in, const wr_peer_info *pi, char *why, size_t len) {
    const wr_pmsg *h = &in->h;
    if (h->role == WR_ROLE_SHARD) {
        if (h->shard < 0 || h->shard >= c->cfg.shards) return snprintf(why, len, "no such shard"), NULL;
        coord_node *n = &c->nodes[c->shard_node[h->shard]];
        char addr[WR_ADDR_MAX], err[WR_ERR_LEN];
        if (wr_addr_from_peer(h->addr, pi->addr, c->adv_host, addr, sizeof addr, err) != WR_OK)
            return snprintf(why, len, "%s", err), NULL;
        if (strcmp(n->addr, addr) != 0)
            return snprintf(why, len, "shard %d is at %s, not %s", h->shard, n->addr, addr), NULL;
        if (n->key[0] && (strncmp(pi->user, "shard:", 6) != 0 || strcmp(pi->user + 6, n->key) != 0))
            return snprintf(why, len, "shard %d's key differs", h->shard), NULL;
        return n;
    }
    if (h->rank < 0 || c->worker_node[h->rank] < 0) return snprintf(why, len, "no such member rank"), NULL;
    coord_node *n = &c->nodes[c->worker_node[h->rank]];
    if (!h->has_token || memcmp(h->token, n->token, WR_TOKEN_LEN) != 0)
        return snprintf(why, len, "wrong token for rank %d", h->rank), NULL;
    if (strcmp(n->user, pi->user) != 0)
        return snprintf(why, len, "rank %d's identity differs", h->rank), NULL;
    return n;
}

// Binds node n to the REGISTER's connection and answers with the map.
static void bind_node(coord *c, coord_node *n, const coord_in *in, const wr_peer_info *pi) {
    int first = n->peer_len == 0;
    memcpy(n->peer, in->m->peer, in->m->peer_len);
    n->peer_len = in->m->peer_len;
    snprintf(n->from, sizeof n->from, "%s", pi->addr[0] ? pi->addr : "inproc");
    snprintf(n->host, sizeof n->host, "%s", in->h.host[0] ? in->h.host : "?");
    n->last_seen = wr_now();
    // A shard may hold a map the lost coordinator committed or proposed
    // after its last state write: the re-forming epoch comes after it.
    if (in->h.epoch > c->restart.epoch) c->restart.epoch = in->h.epoch;
    coord_send_current_map(c, n);
    if (!first) return;
    c->restart.back++;
    char who[COORD_WHO_MAX];
    coord_describe(n, who, sizeof who);
    wr_info("%s is back (epoch %llu, step %llu; %d of %d nodes back after %.2f s)", who,
            (unsigned long long)in->h.epoch, (unsigned long long)in->h.step, c->restart.back,
            c->restart.nodes, wr_now() - c->restart.since);
}

int coord_rejoin_register(coord *c, coord_in *in) {
    const wr_pmsg *h = &in->h;
    int claims = h->job_id == c->cfg.job_id && (h->role == WR_ROLE_SHARD ? h->shard >= 0 : h->rank >= 0);
    if (!claims) {
        // A fresh node: the restored job's nodes are gone (all processes
        // were stopped, e.g. for a resume) when none came back yet.
        if (c->restart.active && c->restart.back == 0) {
            coord_state_reset(c);
            return 0;
        }
        coord_reply_error(c, in->m, WR_EC_REJECTED,
                          "the job is re-forming after a coordinator restart; register again later");
        return 1;
    }
    wr_peer_info pi;
    memset(&pi, 0, sizeof pi);
    wr_msg_peer_info(in->m, &pi);
    char why[160];
    coord_node *n = claimed(c, in, &pi, why, sizeof why);
    if (!n) {
        char r[WR_REASON_MAX];
        snprintf(r, sizeof r, "REGISTER to rejoin after a coordinator restart refused: %s", why);
        wr_warn("%s (from %s)", r, pi.addr[0] ? pi.addr : "?");
        c->reg_refused++;
        coord_reply_error(c, in->m, WR_EC_REJECTED, r);
        return 1;
    }
    bind_node(c, n, in, &pi);
    return 1;
}

// Nodes of the map not back: workers are lost (removed at the re-forming
// epoch), a shard stops the job. 0, or 1 when the job stopped.
static int give_up_missing(coord *c) {
    for (int i = 0; i < c->n_nodes; i++) {
        coord_node *n = &c->nodes[i];
        if (n->peer_len || n->left) continue;
        char who[COORD_WHO_MAX], r[COORD_REASON_MAX];
        coord_describe(n, who, sizeof who);
        snprintf(r, sizeof r,
                 "%s did not come back within %g s (register_timeout) after the coordinator restart", who,
                 c->cfg.register_timeout);
        if (n->role == WR_ROLE_SHARD) {
            coord_stop_job(c, WR_EXIT_NODE_LOST, r);
            return 1;
        }
        coord_worker_lost(c, n, r);
        if (c->status != COORD_RUNNING) return 1;
    }
    return 0;
}

void coord_rejoin_tick(coord *c, double now) {
    coord_restart *rs = &c->restart;
    if (!rs->active) return;
    int all = rs->back == rs->nodes;
    if (!all && now - rs->since <= c->cfg.register_timeout) return;
    rs->active = 0;
    rs->reform = 1;
    for (int i = 0; i < c->n_nodes; i++) c->nodes[i].last_seen = now;
    // Past every epoch a node came back with (the lost coordinator may have
    // committed or proposed one after its last state write): the proposal,
    // this one or a lost worker's, is the next.
    if (rs->epoch > c->epoch) c->epoch = rs->epoch;
    wr_info("%s after %.2f s: re-forming the job at epoch %llu",
            all ? "every node is back" : "register_timeout passed", now - rs->since,
            (unsigned long long)c->epoch + 1);
    if (!all && give_up_missing(c)) return;
    if (!c->change.active) coord_epochs_reform(c);
}

void coord_rejoin_committed(coord *c, uint64_t T) {
    if (!c->restart.reform) return;
    c->restart.reform = 0;
    wr_digest_book_set_floor(c->book, T);
    wr_info(
        "job re-formed %.2f s after the coordinator restart: training goes on from step %llu; digest checks "
        "resume from there",
        wr_now() - c->restart.since, (unsigned long long)T);
}
