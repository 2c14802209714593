// epochs.c — membership epochs (docs/ARCHITECTURE.md, "Membership epochs"):
// workers that join, leave or are lost change the membership at a step
// every shard agrees on. The coordinator sends the next epoch's map to the
// shards, which acknowledge it with FENCE{epoch, last completed step} and
// hold; once all did, the epoch starts at T = highest acknowledged step + 2
// (FENCE{epoch, T} to the shards, the map with sf = T to the workers). Below
// min_workers the change waits for joiners up to register_timeout.
#include "coord_internal.h"

// Messages are cut to their buffers on purpose.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

// Seconds between two "you were removed" replies to one removed worker.
#define GONE_TELL_S 1.0

static int is_worker(const coord_node *n) { return n->role == WR_ROLE_WORKER && n->index >= 0; }
static int in_next(const coord_node *n) { return is_worker(n) && (n->member || n->joining) && !n->out; }

int coord_count_members(const coord *c, int next) {
    int k = 0;
    for (int i = 0; i < c->n_nodes; i++)
        k += next ? in_next(&c->nodes[i]) : is_worker(&c->nodes[i]) && c->nodes[i].member;
    return k;
}

int coord_members_running(const coord *c) {
    int k = 0;
    for (int i = 0; i < c->n_nodes; i++) {
        const coord_node *n = &c->nodes[i];
        k += is_worker(n) && n->member && !n->out && !n->finished;
    }
    return k;
}

// The next epoch's members as node indices in rank order (malloc'd).
static int *next_members(const coord *c, int *n) {
    int *v = wr_calloc((size_t)c->n_nodes + 1, sizeof *v);
    *n = 0;
    for (int i = 0; i < c->n_nodes; i++) {
        if (!in_next(&c->nodes[i])) continue;
        int k = (*n)++;  // insertion in rank order (a few workers)
        while (k > 0 && c->nodes[v[k - 1]].index > c->nodes[i].index) v[k] = v[k - 1], k--;
        v[k] = i;
    }
    return v;
}

void coord_epochs_start(coord *c) {
    c->epoch = 1;
    c->next_rank = c->cfg.workers;
    for (int i = 0; i < c->n_nodes; i++)
        if (is_worker(&c->nodes[i])) c->nodes[i].member = 1, c->nodes[i].start = 1;
    char rep[64];
    for (int r = c->cfg.workers; r < WR_MAX_WORKERS; r++)
        wr_digest_book_member(c->book, r, 0, 0, rep, sizeof rep);
    c->change.sent = wr_calloc((size_t)c->cfg.shards, sizeof *c->change.sent);
    c->change.acked = wr_calloc((size_t)c->cfg.shards, sizeof *c->change.acked);
}

// (Re)sends the next epoch's map to every shard: they acknowledge and hold.
static void propose(coord *c) {
    coord_change *ch = &c->change;
    if (!ch->active) {
        ch->active = 1;
        ch->epoch = c->epoch + 1;
        ch->max_done = 0;
        ch->min_done = UINT64_MAX;
        ch->t0 = wr_now();
        memset(ch->sent, 0, (size_t)c->cfg.shards * sizeof *ch->sent);
        memset(ch->acked, 0, (size_t)c->cfg.shards * sizeof *ch->acked);
    }
    int n, *nodes = next_members(c, &n);
    coord_send_map(c, ch->epoch, 0, nodes, n, 1, 0);
    for (int s = 0; s < c->cfg.shards; s++) ch->sent[s]++;
    free(nodes);
    wr_info("epoch %llu proposed to the shards: %d workers", (unsigned long long)ch->epoch, n);
}

void coord_epochs_reform(coord *c) { propose(c); }

void coord_epochs_repropose(coord *c, int shard) {
    if (!c->change.active) return;
    c->change.sent[shard] = c->change.acked[shard] = 0;
    propose(c);
}

// After a removal: below min_workers the change waits for joiners.
static void note_below_min(coord *c, const char *why, int status) {
    coord_change *ch = &c->change;
    int next = coord_count_members(c, 1), min = wr_config_min_workers(&c->cfg);
    if (next >= min || ch->below_since) return;
    ch->below_since = wr_now();
    ch->below_status = status;
    snprintf(ch->below_why, sizeof ch->below_why, "%s", why);
    wr_warn(
        "%d workers left, min_workers is %d: the job waits up to %g s (register_timeout) for workers to join",
        next, min, c->cfg.register_timeout);
}

void coord_epochs_resume(coord *c) {
    c->epoch = 0;
    c->change.resume = 1;
    double now = wr_now();
    for (int i = 0; i < c->n_nodes; i++) c->nodes[i].last_seen = now;
    wr_info("resume = on: asking the shards for their newest checkpoints in %s", c->cfg.checkpoint_dir);
    propose(c);
}

void coord_worker_lost(coord *c, coord_node *n, const char *why) {
    if (n->out) return;
    if (coord_fixed(c)) {  // a fixed membership: no epoch without it
        coord_ar_lost(c, n, why);
        return;
    }
    n->out = n->lost = 1;
    n->left = 1;  // not watched any more
    wr_warn("%s; it leaves the job at the next epoch", why);
    note_below_min(c, why, WR_EXIT_NODE_LOST);
    propose(c);
}

void coord_worker_departs(coord *c, coord_node *n, uint64_t step) {
    char who[COORD_WHO_MAX], why[COORD_REASON_MAX];
    coord_describe(n, who, sizeof who);
    if (coord_fixed(c)) {
        snprintf(why, sizeof why, "%s left the job after step %llu of %lld", who, (unsigned long long)step,
                 (long long)c->map.total_steps);
        coord_ar_lost(c, n, why);
        return;
    }
    n->out = 1;
    n->left = 1;
    wr_info("%s leaves the job after step %llu", who, (unsigned long long)step);
    snprintf(why, sizeof why, "%s left the job after step %llu", who, (unsigned long long)step);
    note_below_min(c, why, WR_EXIT_NODE_LOST);
    propose(c);
}

void coord_worker_joins(coord *c, coord_node *n) {
    n->registered = 1;
    n->joining = 1;
    n->index = c->next_rank++;
    c->n_workers_reg++;
    wr_info("worker %d registered from %s (host %s) to join the running job", n->index, n->from, n->host);
    propose(c);
}

// ---- the commit -----------------------------------------------------------------------

// ERROR{rejected, "removed from the job ..."} to a removed worker's
// connection (the prefix the worker recognises: worker/ps_epoch.c).
static void tell(coord *c, coord_gone *g) {
    char r[WR_REASON_MAX];
    snprintf(r, sizeof r, "removed from the job at epoch %llu: %s; register again to rejoin",
             (unsigned long long)g->epoch, g->why);
    g->told = wr_now();
    wr_send_error(c->ep, g->peer, g->peer_len, c->cfg.job_id, c->epoch, WR_EC_REJECTED, r, &c->scratch);
}

// A removed worker: remembered to tell it when it comes back, its rank's
// digest slot closed, its node dropped from the table.
static void forget(coord *c, int i, uint64_t epoch) {
    coord_node *n = &c->nodes[i];
    coord_gone *g = &c->gone[c->n_gone++ % COORD_GONE_MAX];
    memcpy(g->peer, n->peer, n->peer_len);
    g->peer_len = n->peer_len;
    g->rank = n->index;
    g->epoch = epoch;
    g->told = 0;
    snprintf(g->why, sizeof g->why, "%s", n->lost ? "it was declared lost" : "it left");
    if (n->lost) tell(c, g);  // a paused process reads this when it resumes
    c->n_workers_reg--;
    c->n_workers_seen--;
    memmove(&c->nodes[i], &c->nodes[i + 1], (size_t)(c->n_nodes - i - 1) * sizeof *c->nodes);
    c->n_nodes--;
}

// The rank and shard index tables after nodes moved.
void coord_reindex(coord *c) {
    for (int r = 0; r < WR_MAX_WORKERS; r++) c->worker_node[r] = -1;
    for (int i = 0; i < c->n_nodes; i++) {
        const coord_node *n = &c->nodes[i];
        if (n->role == WR_ROLE_SHARD) c->shard_node[n->index] = i;
        if (is_worker(n) && n->member) c->worker_node[n->index] = i;
    }
}

// The digest book follows the new members; a check that completes because
// a removed worker no longer counts may fail the job.
static void book_follows(coord *c, int rank, int active, uint64_t from) {
    char rep[2048];
    if (wr_digest_book_member(c->book, rank, active, from, rep, sizeof rep) != 2) return;
    wr_error("==================== REPLICAS DIVERGED ====================");
    wr_error("%s", rep);
    coord_stop_job(c, WR_EXIT_DIVERGED, "replica digest mismatch");
}

// The map of the committed epoch (c->map.workers) from the members.
static void update_map(coord *c, uint64_t T) {
    int n, *nodes = next_members(c, &n);
    free(c->map.workers);
    c->map.workers = wr_calloc((size_t)(n > 0 ? n : 1), sizeof *c->map.workers);
    c->map.n_workers = n;
    for (int i = 0; i < n; i++) {
        const coord_node *w = &c->nodes[nodes[i]];
        c->map.workers[i].rank = w->index;
        snprintf(c->map.workers[i].host, sizeof c->map.workers[i].host, "%s", w->host);
        c->map.workers[i].group = w->group;
    }
    c->map.epoch = c->epoch;
    c->map.start_step = T;
    free(nodes);
}

// Joiners whose start step lies beyond the last step have nothing to do.
static void refuse_late_joiners(coord *c, uint64_t T) {
    if (c->map.total_steps <= 0 || T <= (uint64_t)c->map.total_steps) return;
    for (int i = 0; i < c->n_nodes; i++) {
        coord_node *n = &c->nodes[i];
        if (!is_worker(n) || !n->joining) continue;
        wr_send_error(c->ep, n->peer, n->peer_len, c->cfg.job_id, 0, WR_EC_REJECTED,
                      "the job ends before this worker could start", &c->scratch);
        n->joining = 0;
        n->out = n->left = 1;
    }
}

// "worker 1 removed (lost), worker 3 joined" for the commit's log line.
static void describe_changes(const coord *c, char *out, size_t len) {
    size_t at = 0;
    out[0] = 0;
    for (int i = 0; i < c->n_nodes && at < len; i++) {
        const coord_node *n = &c->nodes[i];
        if (!is_worker(n) || !(n->out || n->joining)) continue;
        if (n->out && !n->member && !n->joining) continue;  // never in the job
        int k = snprintf(out + at, len - at, "%sworker %d %s", at ? ", " : "", n->index,
                         n->joining && !n->out ? "joined"
                         : n->lost             ? "removed (lost)"
                                               : "removed (left)");
        if (k > 0) at += (size_t)k;
    }
}

// "epoch 2 from step 151: workers 0, 2 (worker 1 removed (lost))".
static void log_commit(const coord *c, uint64_t e, uint64_t T, const char *changes) {
    char ranks[512];
    size_t at = 0;
    ranks[0] = 0;
    for (int i = 0; i < c->map.n_workers && at < sizeof ranks; i++) {
        int k = snprintf(ranks + at, sizeof ranks - at, "%s%d", i ? ", " : "", c->map.workers[i].rank);
        if (k > 0) at += (size_t)k;
    }
    wr_info("epoch %llu from step %llu: worker%s %s%s%s%s (%.2f s to agree)", (unsigned long long)e,
            (unsigned long long)T, c->map.n_workers == 1 ? "" : "s", ranks, changes[0] ? " (" : "", changes,
            changes[0] ? ")" : "", wr_now() - c->change.t0);
}

// Every shard acknowledged the newest proposal: the epoch starts at T.
static void commit(coord *c) {
    coord_change *ch = &c->change;
    // Resume: every shard goes back to the newest step all of them hold.
    uint64_t T = ch->resume ? ch->min_done + 1 : ch->max_done + 2, e = ch->epoch;
    if (ch->resume)
        wr_info(
            "resume: the newest checkpoint every shard holds is step %llu; the job goes on from step %llu",
            (unsigned long long)ch->min_done, (unsigned long long)T);
    refuse_late_joiners(c, T);
    wr_pmsg f;
    coord_init_hdr(c, &f, WR_MT_FENCE);
    f.epoch = e;
    f.step = T;
    for (int s = 0; s < c->cfg.shards; s++) coord_send_to(c, &c->nodes[c->shard_node[s]], &f);
    char changes[512];
    describe_changes(c, changes, sizeof changes);
    int n, *nodes = next_members(c, &n);
    c->epoch = e;
    for (int i = 0; i < n; i++) {
        coord_node *w = &c->nodes[nodes[i]];
        if (w->joining) w->start = T;
    }
    coord_send_map(c, e, T, nodes, n, 0, 1);
    free(nodes);
    for (int i = 0; i < c->n_nodes; i++) {
        coord_node *w = &c->nodes[i];
        if (!is_worker(w) || !(w->member || w->joining)) continue;
        if (w->out) {
            book_follows(c, w->index, 0, 0);
        } else if (w->joining) {
            book_follows(c, w->index, 1, T);
            w->member = 1;
            w->joining = 0;
        }
    }
    for (int i = 0; i < c->n_nodes;)
        if (is_worker(&c->nodes[i]) && c->nodes[i].out)
            forget(c, i, e);
        else
            i++;
    coord_reindex(c);
    update_map(c, T);
    ch->active = 0;
    ch->resume = 0;
    ch->below_since = 0;
    log_commit(c, e, T, changes);
    coord_rejoin_committed(c, T);
    coord_state_save(c, 0);
}

static void try_commit(coord *c) {
    coord_change *ch = &c->change;
    if (!ch->active || c->status != COORD_RUNNING) return;
    for (int s = 0; s < c->cfg.shards; s++)
        if (ch->acked[s] < ch->sent[s]) return;
    if (coord_count_members(c, 1) < wr_config_min_workers(&c->cfg)) return;
    commit(c);
}

void coord_on_fence(coord *c, coord_in *in) {
    coord_change *ch = &c->change;
    const coord_node *n = in->n;
    if (n->role == WR_ROLE_SHARD && (c->restart.active || c->restart.reform) && in->h.epoch != ch->epoch) {
        wr_debug("ignoring FENCE for epoch %llu from %s: the lost coordinator's proposal",
                 (unsigned long long)in->h.epoch, in->who);
        return;
    }
    if (n->role != WR_ROLE_SHARD || !ch->active || in->h.epoch != ch->epoch) {
        coord_refuse(c, in, WR_PERR_ROLE, "FENCE without a pending epoch");
        return;
    }
    if (ch->acked[n->index] < ch->sent[n->index]) ch->acked[n->index]++;
    if (in->h.step > ch->max_done) ch->max_done = in->h.step;
    if (in->h.step < ch->min_done) ch->min_done = in->h.step;
    try_commit(c);
}

void coord_epochs_tick(coord *c, double now) {
    coord_change *ch = &c->change;
    if (!ch->active) return;
    try_commit(c);
    if (ch->active && ch->below_since && now - ch->below_since > c->cfg.register_timeout) {
        char r[COORD_REASON_MAX + 96];
        snprintf(r, sizeof r, "%s; no worker joined within %g s (register_timeout) to keep min_workers = %d",
                 ch->below_why, c->cfg.register_timeout, wr_config_min_workers(&c->cfg));
        coord_stop_job(c, ch->below_status, r);
    }
}

// ---- removed workers coming back --------------------------------------------------------

int coord_tell_removed(coord *c, const wr_msg *m, int rank) {
    int n = c->n_gone < COORD_GONE_MAX ? c->n_gone : COORD_GONE_MAX;
    for (int i = 0; i < n; i++) {
        coord_gone *g = &c->gone[i];
        int same = m ? g->peer_len == m->peer_len && !memcmp(g->peer, m->peer, m->peer_len) : g->rank == rank;
        if (!same) continue;
        if (wr_now() - g->told < GONE_TELL_S) return 1;
        wr_info("worker %d (removed at epoch %llu) is back: told to register again", g->rank,
                (unsigned long long)g->epoch);
        tell(c, g);
        return 1;
    }
    return 0;
}

void coord_epochs_free(coord *c) {
    free(c->change.sent);
    free(c->change.acked);
}
