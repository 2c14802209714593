// coord_progress.c — one view of the job on the coordinator: the workers'
// PROGRESS reports (accepted from members only), one cluster progress line
// every progress_every steps from the tick (never blocks: it prints what has
// arrived), and the final STATS kept for the summary (coord_summary.c).
#include "coord_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

// A line is printed once every member reported the next progress step, or
// this long after the last line when newer reports wait (a slow or lost
// worker does not hide the others).
#define COORD_LINE_MAX_WAIT 10.0

static coord_view *view_of(coord *c) {
    if (!c->view) {
        c->view = wr_calloc(1, sizeof *c->view);
        c->view->t_line = wr_now();  // the first line waits for every member too
    }
    return c->view;
}

// Refusals are counted and logged, never answered: a worker takes any ERROR
// from the coordinator as the end of its run, and a report must not stop one.
void coord_on_progress(coord *c, coord_in *in) {
    const coord_node *n = in->n;
    char why[COORD_REASON_MAX];
    // The rank's own connection only: the sender is that rank's registered node.
    if (!c->formed || n->role != WR_ROLE_WORKER || n->index < 0 || in->h.rank != n->index || !n->member) {
        snprintf(why, sizeof why, "PROGRESS for rank %d from %s, which is not that member of the job",
                 in->h.rank, in->who);
        wr_refused(&c->refused, WR_PERR_ROLE, in->who, why);
        return;
    }
    if (coord_view_take(view_of(c), &in->h, n->host, c->cfg.shards, wr_now(), why, sizeof why) != WR_OK)
        wr_refused(&c->refused, WR_PERR_RANGE, in->who, why);
}

void coord_progress_stats(coord *c, const coord_in *in) {
    const coord_node *n = in->n;
    if (n->role == WR_ROLE_WORKER && n->index >= 0) coord_view_final(view_of(c), n->index, n->host, &in->h);
}

// The ranks of the members of the epoch in force, into out (room for n_nodes).
static int member_ranks(const coord *c, int *out) {
    int k = 0;
    for (int i = 0; i < c->n_nodes; i++) {
        const coord_node *n = &c->nodes[i];
        if (n->role == WR_ROLE_WORKER && n->index >= 0 && n->member && !n->out) out[k++] = n->index;
    }
    return k;
}

// The host of rank r as its reports named it.
static const char *rank_host(const coord *c, int r) {
    return r >= 0 && r < WR_MAX_WORKERS && c->view->rank[r] ? c->view->rank[r]->host : NULL;
}

void coord_progress_tick(coord *c, double now, int last) {
    coord_view *v = c->view;
    int every = c->cfg.progress_every;
    if (!v || every <= 0 || !v->fresh) return;  // nothing new since the last line
    int *ranks = wr_calloc((size_t)c->n_nodes + 1, sizeof *ranks);
    coord_view_line l;
    coord_view_sum(v, ranks, member_ranks(c, ranks), &l);
    free(ranks);
    if (!l.reported || l.step <= v->last_line) return;
    uint64_t next = (v->last_line / (uint64_t)every + 1) * (uint64_t)every;
    int64_t total = c->map.total_steps;
    int due = (l.reported == l.ranks && (l.step >= next || (total > 0 && l.step >= (uint64_t)total))) ||
              now - v->t_line >= COORD_LINE_MAX_WAIT || last;
    if (!due) return;
    char line[512];
    coord_view_format(&l, total, rank_host(c, l.slow_rank), line, sizeof line);
    wr_info("%s", line);
    v->last_line = l.step;
    v->t_line = now;
    v->fresh = 0;
    v->lines++;
}

int coord_progress_figures(coord *c, coord_view_line *l, uint64_t *top) {
    memset(l, 0, sizeof *l);
    *top = 0;
    if (!c->view) return 0;
    int *ranks = wr_calloc((size_t)c->n_nodes + 1, sizeof *ranks);
    int n = member_ranks(c, ranks);
    coord_view_sum(c->view, ranks, n, l);
    for (int i = 0; i < n; i++) {
        const coord_rank_view *r = c->view->rank[ranks[i]];
        if (r && r->seen && r->step > *top) *top = r->step;
    }
    free(ranks);
    return l->reported > 0;
}

void coord_progress_free(coord *c) {
    if (!c->view) return;
    coord_view_free(c->view);
    free(c->view);
    c->view = NULL;
}
