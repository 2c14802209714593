// coord_view.c — the coordinator's view of the job's progress (coord_view.h):
// the workers' reports kept per rank, summed into one line. Pure: the
// coordinator's handler and tick (coord_progress.c) feed it.
#include "coord_view.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wr_common.h"

// The figures a PROGRESS carries by name, and where each goes.
static const struct {
    const char *name;
    size_t off;
} figure_names[] = {
    {"steps", offsetof(coord_rank_view, steps)},
    {"samples", offsetof(coord_rank_view, samples)},
    {"seconds", offsetof(coord_rank_view, seconds)},
    {"loss", offsetof(coord_rank_view, loss)},
    {"acc", offsetof(coord_rank_view, acc)},
    {"train_acc", offsetof(coord_rank_view, train_acc)},
    {"compute_s", offsetof(coord_rank_view, t_compute)},
    {"encode_s", offsetof(coord_rank_view, t_encode)},
    {"comm_s", offsetof(coord_rank_view, t_comm)},
    {"bytes_sent", offsetof(coord_rank_view, sent)},
    {"bytes_recv", offsetof(coord_rank_view, recv)},
};

static coord_rank_view *rank_entry(coord_view *v, int rank, const char *host) {
    if (!v->rank[rank]) {
        v->rank[rank] = wr_calloc(1, sizeof *v->rank[rank]);
        v->rank[rank]->slow_shard = -1;
        v->rank[rank]->acc = -1;
    }
    if (rank + 1 > v->n_ranks) v->n_ranks = rank + 1;
    if (host && host[0]) snprintf(v->rank[rank]->host, sizeof v->rank[rank]->host, "%s", host);
    return v->rank[rank];
}

// The figures of h into e (missing ones: 0, acc -1), and the epoch.
static void read_figures(coord_rank_view *e, const wr_pmsg *h) {
    for (size_t f = 0; f < sizeof figure_names / sizeof *figure_names; f++)
        *(double *)((char *)e + figure_names[f].off) = strcmp(figure_names[f].name, "acc") ? 0 : -1;
    e->epoch = 0;
    for (uint32_t i = 0; i < h->n_stats; i++) {
        if (!strcmp(h->stats[i].name, "epoch") && h->stats[i].value >= 0)
            e->epoch = (uint64_t)h->stats[i].value;
        for (size_t f = 0; f < sizeof figure_names / sizeof *figure_names; f++)
            if (!strcmp(h->stats[i].name, figure_names[f].name))
                *(double *)((char *)e + figure_names[f].off) = h->stats[i].value;
    }
}

// The rates and the slowest shard between the previous report p and e.
static void interval(coord_rank_view *e, const coord_rank_view *p, const wr_pmsg *h) {
    int fresh = !p->seen || e->steps < p->steps;  // a rejoin starts the totals again
    double dt = e->seconds - (fresh ? 0 : p->seconds), ds = e->steps - (fresh ? 0 : p->steps);
    // A report over less than a millisecond (or a member's made-up figures)
    // gives no rate rather than an infinite one.
    if (dt >= 1e-3) {
        e->steps_s = ds / dt;
        e->samples_s = (e->samples - (fresh ? 0 : p->samples)) / dt;
        e->sent_s = (e->sent - (fresh ? 0 : p->sent)) / dt;
        e->recv_s = (e->recv - (fresh ? 0 : p->recv)) / dt;
    }
    if (ds > 0) e->comm_ms = (e->t_comm - (fresh ? 0 : p->t_comm)) * 1e3 / ds;
    e->slow_shard = -1;
    e->slow_ms = 0;
    int same = !fresh && p->n_waits == h->n_waits;
    for (uint32_t s = 0; s < h->n_waits && ds > 0; s++) {
        uint64_t before = same && p->waits[s] <= h->waits[s] ? p->waits[s] : 0;
        double ms = (double)(h->waits[s] - before) / 1e3 / ds;
        if (e->slow_shard < 0 || ms > e->slow_ms) e->slow_shard = (int)s, e->slow_ms = ms;
    }
}

int coord_view_take(coord_view *v, const wr_pmsg *h, const char *host, int n_shards, double now, char *why,
                    size_t len) {
    if (h->rank < 0 || h->rank >= WR_MAX_WORKERS) {
        snprintf(why, len, "PROGRESS for rank %d", h->rank);
        return WR_ERR;
    }
    if (h->n_waits != 0 && h->n_waits != (uint32_t)n_shards) {
        snprintf(why, len, "PROGRESS with waits for %u shards, the job has %d", h->n_waits, n_shards);
        return WR_ERR;
    }
    coord_rank_view *e = rank_entry(v, h->rank, host), prev = *e;
    read_figures(e, h);
    e->step = h->step;
    interval(e, &prev, h);
    if (h->n_waits != e->n_waits) {
        free(e->waits);
        e->waits = h->n_waits ? wr_calloc(h->n_waits, sizeof *e->waits) : NULL;
        e->n_waits = h->n_waits;
    }
    if (h->n_waits) memcpy(e->waits, h->waits, h->n_waits * sizeof *e->waits);
    e->seen = 1;
    v->t_report = now;
    v->fresh = 1;
    return WR_OK;
}

void coord_view_final(coord_view *v, int rank, const char *host, const wr_pmsg *h) {
    if (rank < 0 || rank >= WR_MAX_WORKERS) return;
    coord_rank_view *e = rank_entry(v, rank, host);
    e->n_final = h->n_stats <= WR_MAX_STATS ? h->n_stats : WR_MAX_STATS;
    memcpy(e->final, h->stats, e->n_final * sizeof *e->final);
}

// Adds rank entry e to the sums in *l (the first one reported sets the minima).
static void add_rank(coord_view_line *l, const coord_rank_view *e, int rank) {
    if (l->reported == 0 || e->step < l->step) l->step = e->step, l->epoch = e->epoch;
    if (l->reported == 0 || e->steps_s < l->steps_s) l->steps_s = e->steps_s;
    l->reported++;
    l->samples_s += e->samples_s;
    l->in_bps += e->recv_s;
    l->out_bps += e->sent_s;
    l->loss += e->loss;
    l->train_acc += e->train_acc;
    if (e->acc > l->acc) l->acc = e->acc;
    double ms = e->slow_shard >= 0 ? e->slow_ms : e->comm_ms;
    if (l->slow_rank < 0 || ms > l->slow_ms) {
        l->slow_rank = rank;
        l->slow_shard = e->slow_shard;
        l->slow_ms = ms;
    }
}

void coord_view_sum(const coord_view *v, const int *ranks, int n, coord_view_line *out) {
    memset(out, 0, sizeof *out);
    out->ranks = n;
    out->acc = -1;
    out->slow_rank = out->slow_shard = -1;
    for (int i = 0; i < n; i++) {
        int r = ranks[i];
        if (r >= 0 && r < WR_MAX_WORKERS && v->rank[r] && v->rank[r]->seen) add_rank(out, v->rank[r], r);
    }
    if (out->reported) out->loss /= out->reported, out->train_acc /= out->reported;
}

void coord_view_format(const coord_view_line *l, int64_t total_steps, const char *slow_host, char *buf,
                       size_t len) {
    char acc[32] = "-", slow[160] = "-", who[48] = "";
    if (l->acc >= 0) snprintf(acc, sizeof acc, "%.4f", l->acc);
    if (l->reported < l->ranks) snprintf(who, sizeof who, " (%d of %d workers)", l->reported, l->ranks);
    const char *host = slow_host && slow_host[0] ? slow_host : "?";
    if (l->slow_shard >= 0)
        snprintf(slow, sizeof slow, "shard %d (wait %.1f ms/step, rank %d on host %s)", l->slow_shard,
                 l->slow_ms, l->slow_rank, host);
    else if (l->slow_rank >= 0)
        snprintf(slow, sizeof slow, "rank %d on host %s (comm %.1f ms/step)", l->slow_rank, host, l->slow_ms);
    snprintf(
        buf, len,
        "progress step %llu/%lld epoch %llu%s | %.1f steps/s %.0f samples/s | in %.1f MB/s out %.1f MB/s "
        "| loss %.4f acc %.4f test %s | slowest: %s",
        (unsigned long long)l->step, (long long)total_steps, (unsigned long long)l->epoch, who, l->steps_s,
        l->samples_s, l->in_bps / 1e6, l->out_bps / 1e6, l->loss, l->train_acc, acc, slow);
}

void coord_view_free(coord_view *v) {
    for (int r = 0; r < v->n_ranks; r++) {
        if (v->rank[r]) free(v->rank[r]->waits);
        free(v->rank[r]);
        v->rank[r] = NULL;
    }
    v->n_ranks = 0;
}
