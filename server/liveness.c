// liveness.c — whether every node is still there (docs/ARCHITECTURE.md,
// "Liveness"): heartbeats, silence beyond heartbeat_timeout, connection
// probes, and which node to blame when one reports an ERROR.
#include "coord_internal.h"

// Messages are cut to their buffers on purpose.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

#include <stdio.h>
#include <string.h>

#include "log.h"

// Whether a heartbeat claiming node n comes from n: the same address and the
// same authenticated identity as n's REGISTER (its heartbeat thread runs in
// the same process: same host, same key; for ipc the same pid). Without this
// anyone who knows a node's rank could keep a dead node looking alive.
static int from_node(const coord_node *n, const wr_msg *m) {
    wr_peer_info pi;
    if (wr_msg_peer_info(m, &pi) != WR_OK) return 0;
    const char *addr = pi.addr[0] ? pi.addr : "inproc";  // as membership.c records it
    return !strcmp(addr, n->from) && !strcmp(pi.user, n->user);
}

// Heartbeats come on their own socket: the node is identified by (role,
// rank|shard) and checked against the sender (from_node). No reply.
void coord_on_heartbeat(coord *c, coord_in *in) {
    const wr_pmsg *h = &in->h;
    if (!c->formed) return;
    coord_node *n = NULL;
    if (h->role == WR_ROLE_SHARD && h->shard >= 0 && h->shard < c->cfg.shards)
        n = &c->nodes[c->shard_node[h->shard]];
    else if (h->role == WR_ROLE_WORKER && h->rank >= 0 && h->rank < WR_MAX_WORKERS &&
             c->worker_node[h->rank] >= 0)
        n = &c->nodes[c->worker_node[h->rank]];
    if (!n && h->role == WR_ROLE_WORKER && coord_tell_removed(c, NULL, h->rank)) return;
    if (!n) {
        wr_debug("heartbeat from unknown %s %d", coord_role_name(h->role),
                 h->role == WR_ROLE_SHARD ? h->shard : h->rank);
        return;
    }
    if (!n->peer_len) return;  // a coordinator restart: not back yet (coord_rejoin.c)
    if (!from_node(n, in->m)) {
        char why[COORD_REASON_MAX];
        snprintf(why, sizeof why, "HEARTBEAT for %s %d from another address or key", coord_role_name(h->role),
                 h->role == WR_ROLE_SHARD ? h->shard : h->rank);
        wr_refused(&c->refused, WR_PERR_ROLE, in->who, why);
        return;
    }
    n->last_seen = wr_now();
}

// Connection probe: a HEARTBEAT{role coordinator} to every node still in the
// job (nodes ignore it). The ROUTER refuses a send to a peer whose connection
// closed, so a crashed process is noticed within one heartbeat interval, and
// before blaming the node that reported the resulting error. Returns the index
// of the first node found gone, or -1.
static int probe_nodes(coord *c) {
    wr_pmsg h;
    coord_init_hdr(c, &h, WR_MT_HEARTBEAT);
    char err[WR_ERR_LEN];
    for (int i = 0; i < c->n_nodes; i++) {
        const coord_node *n = &c->nodes[i];
        if (n->left || !n->peer_len) continue;
        int rc = wr_send_pmsg(c->ep, n->peer, n->peer_len, &h, NULL, 0, NULL, NULL, 0, &c->scratch, err);
        if (rc == WR_ECLOSED) return i;
    }
    return -1;
}

// A worker of the formed job that is gone leaves it at the next epoch
// (epochs.c); a shard that is gone stops the job.
static void lost(coord *c, coord_node *n, const char *why) {
    if (n->role == WR_ROLE_WORKER && c->formed && !n->member && !n->joining) {
        // A worker that said hello to join and went away: nothing to change.
        n->left = n->out = 1;
        wr_info("%s (it had not joined the job yet)", why);
        return;
    }
    if (n->role == WR_ROLE_WORKER && c->formed) {
        coord_worker_lost(c, n, why);
        return;
    }
    if (n->role == WR_ROLE_SHARD && c->formed) {
        coord_shard_lost(c, n, why);
        return;
    }
    n->left = 1;
    coord_stop_job(c, WR_EXIT_NODE_LOST, why);
}

// Node i is gone; `why` (may be NULL) adds context.
static void node_gone(coord *c, int i, const char *why) {
    coord_node *n = &c->nodes[i];
    char who[COORD_WHO_MAX], r[WR_ADDR_MAX + WR_REASON_MAX + 256];
    coord_describe(n, who, sizeof who);
    snprintf(r, sizeof r, "%s is dead: its connection to the coordinator closed%s%s", who, why ? "; " : "",
             why ? why : "");
    lost(c, n, r);
}

void coord_probe_now(coord *c) {
    int gone;
    while (c->status == COORD_RUNNING && (gone = probe_nodes(c)) >= 0) node_gone(c, gone, NULL);
}

// No other node was found gone: the ERROR's node takes the blame. Its
// status is WR_EXIT_NODE_LOST only in a fixed membership (a worker stopped).
static void stop_blamed(coord *c) {
    char r[WR_REASON_MAX];
    if (c->blame.status == WR_EXIT_NODE_LOST) {
        coord_fixed_verdict(c, c->blame.reason, r, sizeof r);
        coord_stop_job(c, c->blame.status, r);
    } else {
        coord_stop_job(c, c->blame.status, c->blame.reason);
    }
}

// A node reports an ERROR and stops on its own. Often the cause is another
// node that died (a worker losing its shard), and the error can arrive before
// that node's connection is seen closed: name that one (node lost) if the
// probes find it within ~2 heartbeat intervals (checked every tick), else
// stop with the ERROR's status.
void coord_on_error(coord *c, coord_in *in) {
    const wr_pmsg *h = &in->h;
    char r[COORD_REASON_MAX];
    coord_metrics_error(c, h->code);
    snprintf(r, sizeof r, "%s reported an error (%s): %s", in->who,
             h->code == WR_EC_CONFIG    ? "config"
             : h->code == WR_EC_TIMEOUT ? "timeout"
                                        : "error",
             h->reason);
    if (in->n->out) {  // removed already (epochs.c): not the job's failure
        wr_info("%s (it is no longer in the job)", r);
        return;
    }
    in->n->left = 1;
    int status = h->code == WR_EC_CONFIG ? WR_EXIT_CONFIG : WR_EXIT_FAILURE;
    // A dead shard is the cause (node lost); dead workers leave the job
    // (epochs.c) and the ERROR still decides. (mode=allreduce names the
    // dead node and says it cannot go on: coord_ar_lost.)
    int gone;
    while (c->formed && (gone = probe_nodes(c)) >= 0) {
        node_gone(c, gone, r);
        if (c->status != COORD_RUNNING) return;
    }
    // mode=allreduce: a worker that stops takes the collective with it,
    // unless another node is found gone first (blame, below).
    if (coord_fixed(c) && c->formed && status != WR_EXIT_CONFIG && in->n->role == WR_ROLE_WORKER)
        status = WR_EXIT_NODE_LOST;
    if (!c->formed || status == WR_EXIT_CONFIG)
        coord_stop_job(c, status, r);
    else if (!c->blame.status) {
        c->blame.status = status;
        c->blame.until = wr_now() + WR_MAX(2.0 * c->cfg.heartbeat_interval, 0.5);
        snprintf(c->blame.reason, sizeof c->blame.reason, "%s", r);
        wr_info("%s; checking whether another node died first", r);
    }
}

// A node that stopped for longer than heartbeat_timeout is dead: ends the job
// (node lost). 1 if it did, else 0. Silence counts from its last heartbeat,
// which came up to one interval before it stopped, so the bound is
// heartbeat_timeout + heartbeat_interval: a pause shorter than the timeout
// is never taken for a death, and a longer one is seen within timeout +
// interval (+ one tick) of its start.
static int check_silence(coord *c, double now) {
    const double bound = c->cfg.heartbeat_timeout + c->cfg.heartbeat_interval;
    for (int i = 0; i < c->n_nodes; i++) {
        coord_node *n = &c->nodes[i];
        // Workers heartbeat once they have a rank and a map: one joining is
        // watched by the connection probes until it is a member.
        if (n->left || (n->role == WR_ROLE_WORKER && !n->member)) continue;
        double silent = now - n->last_seen;
        if (silent > bound) {
            char who[COORD_WHO_MAX], r[WR_ADDR_MAX + 256];
            coord_describe(n, who, sizeof who);
            snprintf(r, sizeof r, "%s is dead: no heartbeat for %.1f s (heartbeat_timeout %g s)", who, silent,
                     c->cfg.heartbeat_timeout);
            lost(c, n, r);
            if (c->status != COORD_RUNNING) return 1;
        }
    }
    return 0;
}

void coord_liveness_tick(coord *c, double now) {
    if (check_silence(c, now)) return;
    if (now >= c->next_probe || c->blame.status) {
        c->next_probe = now + c->cfg.heartbeat_interval;
        int gone;
        while ((gone = probe_nodes(c)) >= 0) {
            node_gone(c, gone, c->blame.status ? c->blame.reason : NULL);
            if (c->status != COORD_RUNNING) return;
            if (c->blame.status) break;  // the ERROR's node is found: it decides below
        }
    }
    if (c->blame.status && now >= c->blame.until) stop_blamed(c);
}
