// coord_status.c — STATUS (docs/PROTOCOL.md): the coordinator answers any
// peer that asks with the job's view: its figures as named stats and its
// members (role, index, host, address, last reported step). Without CURVE
// keys anyone who reaches the coordinator may ask (it listens on loopback
// unless told otherwise); with keys only the allow-list's keys connect.
// `wren-server status` (status.c) is the client.
#include "coord_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

// STATUS replies to peers that are not members: at most STATUS_RATE per
// second over all of them (a burst of STATUS_BURST), enough for a few
// `status --watch` clients; the rest go unanswered (counted).
#define STATUS_RATE 10.0
#define STATUS_BURST 10.0

// A non-finite figure (a member's report of a zero interval) would make the
// whole reply unencodable: it goes out as 0.
static void put_stat(wr_pmsg *h, const char *name, double v) {
    if (h->n_stats >= WR_MAX_STATS) return;
    if (!isfinite(v)) v = 0;
    snprintf(h->stats[h->n_stats].name, sizeof h->stats[0].name, "%s", name);
    h->stats[h->n_stats++].value = v;
}

// The job's figures (the same as the cluster progress line's and the metrics').
static void figures(coord *c, wr_pmsg *h) {
    coord_view_line l;
    uint64_t top;
    int reported = coord_progress_figures(c, &l, &top);
    int shards = 0;
    for (int i = 0; i < c->n_nodes; i++)
        shards += c->nodes[i].role == WR_ROLE_SHARD && c->nodes[i].registered && !c->nodes[i].left;
    put_stat(h, "formed", c->formed);
    put_stat(h, "mode_allreduce", coord_allreduce(c));
    put_stat(h, "shards_expected", c->cfg.shards);
    put_stat(h, "workers_expected", c->cfg.workers);
    put_stat(h, "shards", shards);
    put_stat(h, "workers", c->formed ? coord_count_members(c, 0) : c->n_workers_reg);
    put_stat(h, "total_steps", c->formed ? (double)c->map.total_steps : 0);
    put_stat(h, "uptime_s", wr_now() - c->t_start);
    put_stat(h, "reported", reported ? l.reported : 0);
    put_stat(h, "step", (double)l.step);
    put_stat(h, "top_step", (double)top);
    put_stat(h, "lag_steps", reported ? (double)(top - l.step) : 0);
    put_stat(h, "steps_s", l.steps_s);
    put_stat(h, "samples_s", l.samples_s);
    put_stat(h, "in_Bps", l.in_bps);
    put_stat(h, "out_Bps", l.out_bps);
    put_stat(h, "loss", l.loss);
    put_stat(h, "train_acc", l.train_acc);
    put_stat(h, "test_acc", reported ? l.acc : -1);
    put_stat(h, "slow_rank", reported ? l.slow_rank : -1);
    put_stat(h, "slow_shard", reported ? l.slow_shard : -1);
    put_stat(h, "slow_ms", l.slow_ms);
}

// Every shard and worker still in the table (registered or registering).
static void members(coord *c, wr_pmsg *h) {
    h->members = wr_calloc((size_t)c->n_nodes + 1, sizeof *h->members);
    for (int i = 0; i < c->n_nodes && h->n_members < WR_MAX_MEMBERS; i++) {
        const coord_node *n = &c->nodes[i];
        if (n->left || (n->role != WR_ROLE_SHARD && n->role != WR_ROLE_WORKER)) continue;
        wr_member_info *b = &h->members[h->n_members++];
        b->role = n->role;
        b->index = n->index;
        snprintf(b->host, sizeof b->host, "%s", n->host);
        // A shard's advertised address; a worker's data endpoint, else where it connects from.
        snprintf(b->addr, sizeof b->addr, "%s", n->role == WR_ROLE_SHARD || n->addr[0] ? n->addr : n->from);
        const coord_rank_view *r = n->role == WR_ROLE_WORKER && n->index >= 0 && c->view
                                       ? c->view->rank[n->index]
                                       : NULL;
        b->step = r && r->seen ? r->step : 0;
    }
}

// One reply's worth from the bucket: 1, or 0 (withheld; the first logged).
static int status_token(coord *c) {
    double now = wr_now();
    if (c->status_t <= 0) c->status_tokens = STATUS_BURST;
    c->status_tokens += (now - (c->status_t > 0 ? c->status_t : now)) * STATUS_RATE;
    if (c->status_tokens > STATUS_BURST) c->status_tokens = STATUS_BURST;
    c->status_t = now;
    if (c->status_tokens >= 1) {
        c->status_tokens -= 1;
        return 1;
    }
    if (c->status_withheld++ == 0)
        wr_warn("STATUS requests from non-members beyond %.0f per second go unanswered", STATUS_RATE);
    return 0;
}

void coord_on_status(coord *c, coord_in *in) {
    // A reply to a reply (or a STATUS carrying a view) is not a request.
    if (in->h.n_stats || in->h.n_members) {
        wr_refused(&c->refused, WR_PERR_ROLE, in->who,
                   "STATUS with a view: the coordinator only answers requests");
        return;
    }
    if (!in->n && !status_token(c)) return;
    wr_pmsg h;
    coord_init_hdr(c, &h, WR_MT_STATUS);
    h.step = 0;
    figures(c, &h);
    members(c, &h);
    char err[WR_ERR_LEN];
    if (wr_send_pmsg(c->ep, in->m->peer, in->m->peer_len, &h, NULL, 0, NULL, NULL, 0, &c->scratch, err) ==
        WR_OK)
        coord_metrics_bytes(c, in->n, 1, c->scratch.len);
    else
        wr_debug("cannot answer STATUS from %s: %s", in->who, err);
    wr_pmsg_clear(&h);
}
