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

static void appendf(char *out, size_t len, size_t *at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

// The welcome: CLUSTER_MAP{epoch 0, no shards or workers, the job config}.
static void send_welcome(coord *c, const coord_node *n) {
    wr_pmsg h;
    coord_init_hdr(c, &h, WR_MT_CLUSTER_MAP);
    h.epoch = 0;  // the welcome is epoch 0 also while the job runs (joiners, replacements)
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
    c->worker_node = wr_calloc(WR_MAX_WORKERS, sizeof *c->worker_node);
    for (int r = 0; r < WR_MAX_WORKERS; r++) c->worker_node[r] = -1;
    for (int i = 0; i < c->n_nodes; i++) {
        const coord_node *n = &c->nodes[i];
        if (n->role == WR_ROLE_SHARD) {
            snprintf(c->map.shards[n->index].addr, sizeof c->map.shards[n->index].addr, "%s", n->addr);
            memcpy(c->map.shards[n->index].key, n->key, sizeof n->key);
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

// A worker's map carries its own token ('tk'), and in mode=allreduce every
// member's ('ta': its peers check each CHUNK); a shard's every member's token
// and identity, parallel to the map's worker list (docs/PROTOCOL.md, "Rank
// credentials").
static void set_credentials(const coord_node *n, wr_pmsg *h, uint32_t n_members,
                            uint8_t (*tokens)[WR_TOKEN_LEN], char **idents, int allreduce) {
    int shard = n->role == WR_ROLE_SHARD;
    h->has_token = !shard;
    if (!shard) memcpy(h->token, n->token, WR_TOKEN_LEN);
    h->n_tokens = shard || allreduce ? n_members : 0;
    h->n_idents = shard ? n_members : 0;
    h->tokens = shard || allreduce ? tokens : NULL;
    h->idents = shard ? idents : NULL;
}

// The shards to send a map to: every shard, none, or one (its index).
#define MAP_ALL_SHARDS (-1)
#define MAP_NO_SHARD (-2)

// To the workers when to_workers: every one of nodes[], or only `only` when set.
static void send_map_to(coord *c, uint64_t epoch, uint64_t sf, const int *nodes, int n, int shards,
                        int to_workers, int rebuild, const coord_node *only) {
    int *lead = wr_calloc((size_t)(n > 0 ? n : 1), sizeof *lead), k = 0;
    if (coord_node_agg(c) && shards != MAP_NO_SHARD) k = coord_agg_leaders(c, nodes, n, lead);
    if (k > 0 && k < n) {  // the shards see the nodes' leaders only (coord_node_agg.c)
        send_map_to(c, epoch, sf, lead, k, shards, 0, rebuild, NULL);
        shards = MAP_NO_SHARD;
    }
    free(lead);
    wr_cluster view = c->map;  // shards from the map; workers: these
    view.epoch = epoch;
    view.start_step = sf;
    view.n_workers = n;
    view.workers = wr_calloc((size_t)(n > 0 ? n : 1), sizeof *view.workers);
    uint8_t(*tokens)[WR_TOKEN_LEN] = wr_calloc((size_t)(n > 0 ? n : 1), WR_TOKEN_LEN);
    char **idents = wr_calloc((size_t)(n > 0 ? n : 1), sizeof *idents);
    for (int i = 0; i < n; i++) {
        coord_node *w = &c->nodes[nodes[i]];
        view.workers[i].rank = w->index;
        snprintf(view.workers[i].host, sizeof view.workers[i].host, "%s", w->host);
        view.workers[i].group = w->group;
        if (coord_fixed(c)) {  // where its peers reach it
            snprintf(view.workers[i].addr, sizeof view.workers[i].addr, "%s", w->addr);
            snprintf(view.workers[i].laddr, sizeof view.workers[i].laddr, "%s", w->laddr);
            memcpy(view.workers[i].key, w->key, sizeof view.workers[i].key);
        }
        memcpy(tokens[i], w->token, WR_TOKEN_LEN);
        idents[i] = w->user;
    }
    wr_pmsg h;
    coord_init_hdr(c, &h, WR_MT_CLUSTER_MAP);
    wr_cluster_to_map(&view, &h);
    h.n_config = c->n_kv;
    h.config = c->kv;
    h.rebuild = (uint32_t)rebuild;
    double now = wr_now();
    for (int s = 0; s < c->cfg.shards && shards != MAP_NO_SHARD; s++) {
        if (shards != MAP_ALL_SHARDS && s != shards) continue;
        coord_node *sh = &c->nodes[c->shard_node[s]];
        h.shard = s;
        h.rank = -1;
        set_credentials(sh, &h, (uint32_t)n, tokens, idents, 0);
        if (epoch == 1) sh->last_seen = now;
        coord_send_to(c, sh, &h);
    }
    // To the workers, rb = 1 names the replaced shard in 'sh'.
    for (int i = 0; i < n && to_workers; i++) {
        coord_node *w = &c->nodes[nodes[i]];
        if (only && w != only) continue;
        h.shard = rebuild ? shards : -1;
        h.rank = w->index;
        set_credentials(w, &h, (uint32_t)n, tokens, idents, coord_fixed(c));
        if (epoch == 1 || w->joining) w->last_seen = now;
        coord_send_to(c, w, &h);
    }
    free(view.workers);
    free(tokens);
    free(idents);
}

void coord_send_map(coord *c, uint64_t epoch, uint64_t sf, const int *nodes, int n, int to_shards,
                    int to_workers) {
    send_map_to(c, epoch, sf, nodes, n, to_shards ? MAP_ALL_SHARDS : MAP_NO_SHARD, to_workers, 0, NULL);
}

void coord_send_current_map(coord *c, const coord_node *n) {
    int k = c->map.n_workers, *nodes = wr_calloc((size_t)(k > 0 ? k : 1), sizeof *nodes);
    for (int i = 0; i < k; i++) nodes[i] = c->worker_node[c->map.workers[i].rank];
    int worker = n->role == WR_ROLE_WORKER;
    send_map_to(c, c->epoch, c->map.start_step, nodes, k, worker ? MAP_NO_SHARD : n->index, worker, 0,
                worker ? n : NULL);
    free(nodes);
}

void coord_send_map_replaced(coord *c, int shard, const int *nodes, int n) {
    send_map_to(c, c->epoch, c->map.start_step, nodes, n, shard, 1, 1, NULL);
}

// Sends the epoch-1 map to every node, each with its own shard index or rank.
static void send_map(coord *c) {
    int W = c->cfg.workers;
    int *nodes = wr_calloc((size_t)W, sizeof *nodes);
    for (int r = 0; r < W; r++) nodes[r] = c->worker_node[r];
    coord_send_map(c, 1, 0, nodes, W, 1, 1);
    free(nodes);
}

// Every shard and worker is in: assign ranges and ranks, send the epoch-1
// map, open the digest book.
static void form_job(coord *c) {
    int S = c->cfg.shards, W = c->cfg.workers;
    if (set_total_steps(c) != WR_OK) return;
    if (coord_allreduce(c)) {
        coord_ar_form(c);
        return;
    }
    if (build_map(c) != WR_OK) return;
    if (coord_node_agg(c) && coord_agg_form(c) != WR_OK) return;
    c->formed = 1;
    c->book = wr_digest_book_new(WR_MAX_WORKERS, S);
    wr_digest_book_set_limits(c->book, c->cfg.digest_every > 0 ? (uint64_t)c->cfg.digest_every : 0,
                              WR_DIGEST_WINDOW, S * WR_DIGEST_OPEN_PER_SHARD);
    coord_epochs_start(c);
    if (c->cfg.resume)
        coord_epochs_resume(c);
    else
        send_map(c);
    c->barrier.in = wr_calloc(WR_MAX_WORKERS, 1);
    wr_info(
        "job formed: %d shards, %d workers, d = %llu parameters, %llu steps, codec %s; cluster map epoch 1 %s",
        S, W, (unsigned long long)c->d, (unsigned long long)c->map.total_steps,
        c->cfg.codec == WR_JOB_CODEC_BIRDER ? "birder" : "fp32",
        c->cfg.resume ? "proposed to the shards (resume)" : "sent");
    coord_state_save(c, 0);
    for (int s = 0; s < S; s++) {
        const coord_node *n = &c->nodes[c->shard_node[s]];
        wr_info("  shard %d: [%llu, %llu) at %s (host %s)", s, (unsigned long long)c->map.shards[s].lo,
                (unsigned long long)c->map.shards[s].hi, n->addr, n->host);
    }
}

// The shard's CURVE public key from the identity its connection was
// authenticated with ("shard:<key>"), for the workers (map entry 'key').
static void shard_key(const wr_msg *m, coord_node *n) {
    wr_peer_info pi;
    if (wr_msg_peer_info(m, &pi) == WR_OK && !strncmp(pi.user, "shard:", 6) &&
        strlen(pi.user + 6) == WR_CURVE_KEY_MAX - 1)
        memcpy(n->key, pi.user + 6, WR_CURVE_KEY_MAX);
}

// Registrations refused with a warning each; later ones are logged at debug
// level (a peer retrying in a loop must not flood the log).
#define COORD_REG_WARN 32

// "worker 2 (10.0.0.7, host b)", "worker (10.0.0.7, host b)" before its rank,
// "shard 0 (10.0.0.5, host a, tcp://...)".
static void describe_reg(const coord_node *n, char *buf, size_t len) {
    const char *from = n->from[0] ? n->from : "?";
    if (n->role == WR_ROLE_SHARD)
        snprintf(buf, len, "shard %d (%s, host %s, %s)", n->index, from, n->host, n->addr);
    else if (n->index >= 0)
        snprintf(buf, len, "worker %d (%s, host %s)", n->index, from, n->host);
    else
        snprintf(buf, len, "worker (%s, host %s)", from, n->host);
}

// Refuses a REGISTER from a peer that is not in the job: ERROR{code} with
// neither the job's id nor its config (coord_reply_error), logged with the
// peer's address. It does not count toward the job.
static void refuse_stranger(coord *c, const coord_in *in, const char *from, int code, const char *reason) {
    c->reg_refused++;
    if (c->reg_refused <= COORD_REG_WARN)
        wr_warn("refused a %s registering from %s (host %s): %s", coord_role_name(in->h.role), from,
                in->h.host[0] ? in->h.host : "?", reason);
    else
        wr_debug("refused a %s registering from %s (host %s): %s", coord_role_name(in->h.role), from,
                 in->h.host, reason);
    coord_reply_error(c, in->m, code, reason);
}

// The sender's transport info into *pi and its address into from ("?" when
// the transport cannot say, "inproc"). 1 when the transport said, else 0.
static int peer_from(const wr_msg *m, wr_peer_info *pi, char *from, size_t from_len) {
    int known = wr_msg_peer_info(m, pi) == WR_OK;
    snprintf(from, from_len, "%s", !known ? "?" : pi->addr[0] ? pi->addr : "inproc");
    return known;
}

// A new registrant's address against expect_hosts and its key's role against
// the role it claims. WR_OK with `from` = its address, or WR_ERR refused.
static int screen(coord *c, const coord_in *in, char *from, size_t from_len) {
    wr_peer_info pi;
    int known = peer_from(in->m, &pi, from, from_len);
    char why[WR_REASON_MAX];
    if (c->hosts && (!known || !wr_host_set_has(c->hosts, pi.addr))) {
        snprintf(why, sizeof why, "REGISTER from %s, an address this job does not expect", from);
        refuse_stranger(c, in, from, WR_EC_REJECTED, why);
        return WR_ERR;
    }
    if (known && wr_role_check(pi.user, in->h.role, why, sizeof why) != WR_OK) {
        refuse_stranger(c, in, from, WR_EC_REJECTED, why);
        return WR_ERR;
    }
    return WR_OK;
}

// A shard address that a registered shard has already: that shard, else NULL.
static const coord_node *shard_with_addr(const coord *c, const char *addr) {
    for (int i = 0; i < c->n_nodes; i++)
        if (c->nodes[i].role == WR_ROLE_SHARD && !c->nodes[i].left && !strcmp(c->nodes[i].addr, addr))
            return &c->nodes[i];
    return NULL;
}

// A shard's address as the workers will reach it (docs/ARCHITECTURE.md
// "Registration"): a wildcard host becomes the address its connection comes
// from; a loopback address from another host is refused. WR_OK with addr
// set, or WR_ERR refused (ERROR{config}: the fix is an option).
static int shard_address(coord *c, const coord_in *in, const char *from, char *addr, size_t len) {
    wr_peer_info pi;
    char why[WR_REASON_MAX], err[WR_ERR_LEN];
    const char *peer = wr_msg_peer_info(in->m, &pi) == WR_OK ? pi.addr : "?";
    if (wr_addr_from_peer(in->h.addr, peer, c->adv_host, addr, len, err) != WR_OK) {
        snprintf(why, sizeof why, "shard address: %s", err);
    } else if (!wr_addr_unreachable_loopback(addr, peer, "shard", why, sizeof why)) {
        return WR_OK;
    }
    refuse_stranger(c, in, from, WR_EC_CONFIG, why);
    return WR_ERR;
}

// Whether a new registrant must be refused (job running or full, shard
// address taken); refuses it then. addr: a shard's address (shard_address).
// 1 refused, 0 not.
static int refuse_admission(coord *c, const coord_in *in, const char *from, const char *addr) {
    const wr_pmsg *h = &in->h;
    int shard = h->role == WR_ROLE_SHARD;
    char r[WR_REASON_MAX];
    if (coord_allreduce(c) && coord_ar_refuse(c, h, r, sizeof r)) {
        refuse_stranger(c, in, from, WR_EC_REJECTED, r);
        return 1;
    }
    const coord_node *dup = shard ? shard_with_addr(c, addr) : NULL;
    // Workers may join a running job (up to max_workers, epochs.c).
    int room = COORD_WORKER_ROOM * (c->formed ? wr_config_max_workers(&c->cfg) : c->cfg.workers);
    // A shard may join a running job only in place of a lost one
    // (shard_replace.c): one restarted at once may come before the probes
    // saw the old one's connection close, so look now.
    if (c->formed && shard && c->replace.shard < 0) coord_probe_now(c);
    int shard_full = c->formed ? c->replace.shard < 0 : c->n_shards_reg >= c->cfg.shards;
    if (shard ? shard_full : c->n_workers_seen >= room) {
        snprintf(r, sizeof r, "the job %s",
                 c->formed && shard ? "is already running with all its shards" : "has no free slot");
    } else if (dup) {
        char who[COORD_WHO_MAX];
        describe_reg(dup, who, sizeof who);
        wr_warn("shard from %s (host %s) claims address %s of %s", from, h->host, addr, who);
        snprintf(r, sizeof r, "shard address %s is taken by %s: give each shard its own --advertise address",
                 addr, who);
    } else {
        return 0;
    }
    refuse_stranger(c, in, from, WR_EC_REJECTED, r);
    return 1;
}

// The worker's rank credential (docs/PROTOCOL.md, "Rank credentials"): a
// random token, drawn when the worker is admitted (ranks follow later, by
// the majority rule) and sent only to it and to the shards. WR_OK, or WR_ERR
// with the job stopped (no randomness).
static int issue_credential(coord *c, coord_node *n) {
    ssize_t got = getrandom(n->token, sizeof n->token, 0);
    if (got == (ssize_t)sizeof n->token) return WR_OK;
    char r[160];
    snprintf(r, sizeof r, "cannot draw a rank credential: getrandom: %s",
             got < 0 ? strerror(errno) : "short read");
    coord_stop_job(c, WR_EXIT_FAILURE, r);
    return WR_ERR;
}

// A first REGISTER from a new connection: a node slot, or NULL (refused, or
// the job stopped).
static coord_node *admit(coord *c, const coord_in *in) {
    const wr_pmsg *h = &in->h;
    char from[WR_PEER_ADDR_MAX], addr[WR_ADDR_MAX] = "";
    if (screen(c, in, from, sizeof from) != WR_OK) return NULL;
    if (h->role == WR_ROLE_SHARD && shard_address(c, in, from, addr, sizeof addr) != WR_OK) return NULL;
    if (refuse_admission(c, in, from, addr)) return NULL;
    if (h->role == WR_ROLE_SHARD && c->formed) coord_shard_forget_lost(c);  // its slot is reused
    WR_CHECK(c->n_nodes < c->max_nodes);
    coord_node *n = &c->nodes[c->n_nodes++];
    memset(n, 0, sizeof *n);
    n->role = h->role;
    memcpy(n->peer, in->m->peer, in->m->peer_len);
    n->peer_len = in->m->peer_len;
    snprintf(n->host, sizeof n->host, "%s", h->host[0] ? h->host : "?");
    snprintf(n->addr, sizeof n->addr, "%s", h->role == WR_ROLE_SHARD ? addr : h->addr);
    snprintf(n->from, sizeof n->from, "%s", from);
    wr_peer_info pi;
    if (wr_msg_peer_info(in->m, &pi) == WR_OK) snprintf(n->user, sizeof n->user, "%s", pi.user);
    n->group = h->group;
    n->index = -1;
    if (h->role == WR_ROLE_SHARD) {
        shard_key(in->m, n);
        n->index = c->formed ? c->replace.shard : c->n_shards_reg++;
        n->registered = 1;
        wr_info("shard %d registered from %s (host %s, %s)%s", n->index, n->from, n->host, n->addr,
                c->formed ? " in place of the lost one" : "");
    } else {
        c->n_workers_seen++;
        wr_debug("worker from %s (host %s) says hello", n->from, n->host);
        if (issue_credential(c, n) != WR_OK) return NULL;
    }
    return n;
}

// Drops node i (a worker without a rank) from the table, before the job formed.
static void remove_node(coord *c, int i) {
    if (c->nodes[i].role == WR_ROLE_WORKER) c->n_workers_seen--;
    memmove(&c->nodes[i], &c->nodes[i + 1], (size_t)(c->n_nodes - i - 1) * sizeof *c->nodes);
    c->n_nodes--;
}

// Sends node i ERROR{code, reason} and drops it from the table.
static void drop_node(coord *c, int i, int code, const char *reason) {
    coord_node *n = &c->nodes[i];
    wr_send_error(c->ep, n->peer, n->peer_len, c->cfg.job_id, 0, code, reason, &c->scratch);
    remove_node(c, i);
}

// " reports D parameters (training set NT examples)".
static void append_report(char *out, size_t len, size_t *at, const coord_node *n) {
    char who[COORD_WHO_MAX];
    describe_reg(n, who, sizeof who);
    appendf(out, len, at, "%s reports %llu parameters (training set %llu)", who, (unsigned long long)n->d,
            (unsigned long long)n->nt);
}

// Every worker's report (registered ones and those waiting), one after the
// other: "worker 0 (10.0.0.5, host a) reports 101770 parameters (...), ...".
static void list_reports(const coord *c, char *out, size_t len, size_t *at) {
    const char *sep = "";
    for (int i = 0; i < c->n_nodes; i++) {
        const coord_node *n = &c->nodes[i];
        if (n->role != WR_ROLE_WORKER || !n->reported) continue;
        appendf(out, len, at, "%s", sep);
        append_report(out, len, at, n);
        sep = ", ";
    }
}

// Worker i disagrees with the size the majority agreed on: refused
// (ERROR{config}), logged naming everyone's report, dropped; the job goes on.
static void refuse_odd(coord *c, int i) {
    char log[2048], r[WR_REASON_MAX];
    size_t at = 0;
    char who[COORD_WHO_MAX];
    describe_reg(&c->nodes[i], who, sizeof who);
    appendf(log, sizeof log, &at, "refused %s: its model differs from the majority's; reports: ", who);
    list_reports(c, log, sizeof log, &at);
    wr_warn("%s", log);
    snprintf(r, sizeof r,
             "this worker reports %llu parameters (training set %llu); the majority of the job's %d "
             "workers report %llu (training set %llu): all workers must build the same model and data set",
             (unsigned long long)c->nodes[i].d, (unsigned long long)c->nodes[i].nt, c->cfg.workers,
             (unsigned long long)c->d, (unsigned long long)c->nt);
    drop_node(c, i, WR_EC_CONFIG, r);
}

// The size is agreed: each worker that reported (table order) gets the next
// rank if it agrees and a rank is free; the others are refused.
static void settle(coord *c) {
    for (int i = 0; i < c->n_nodes;) {
        coord_node *n = &c->nodes[i];
        if (n->role != WR_ROLE_WORKER || !n->reported || n->registered) {
            i++;
        } else if (n->d != c->d || n->nt != c->nt) {
            refuse_odd(c, i);
        } else if (c->n_workers_reg == c->cfg.workers) {
            drop_node(c, i, WR_EC_REJECTED, "the job has all its workers");
        } else {
            n->registered = 1;
            n->index = c->n_workers_reg++;
            wr_info("worker %d registered from %s (host %s, d = %llu, training set %llu)", n->index, n->from,
                    n->host, (unsigned long long)n->d, (unsigned long long)n->nt);
            i++;
        }
    }
}

// Looks for a majority among the reports while there is none yet: sets
// c->d/c->nt when more than half of the job's workers agree. Stops the job
// (exit 2) when every slot reported and nobody else is registering, yet no
// value has a majority. WR_OK (agreed or still waiting), or WR_ERR stopped.
static int decide_size(coord *c) {
    int n = 0, waiting = 0;
    wr_size_report *r = wr_calloc((size_t)c->n_nodes + 1, sizeof *r);
    for (int i = 0; i < c->n_nodes; i++) {
        const coord_node *x = &c->nodes[i];
        if (x->role != WR_ROLE_WORKER) continue;
        if (x->reported)
            r[n++] = (wr_size_report){x->d, x->nt};
        else
            waiting++;
    }
    int k = wr_majority(r, n, c->cfg.workers);
    if (k >= 0) {
        c->d = r[k].d;
        c->nt = r[k].nt;
        c->nt_set = 1;
    }
    free(r);
    if (k >= 0 || n < c->cfg.workers || waiting > 0) return WR_OK;
    char why[2048];  // logged whole; the SHUTDOWN reason carries what fits
    size_t at = 0;
    appendf(why, sizeof why, &at,
            "workers disagree on the model (no majority of the %d workers): ", c->cfg.workers);
    list_reports(c, why, sizeof why, &at);
    appendf(why, sizeof why, &at, "; all workers must build the same model (%s) and data set", c->cfg.model);
    coord_stop_job(c, WR_EXIT_CONFIG, why);
    return WR_ERR;
}

// A worker registering while the job runs reported its model: the job's
// model joins at the next epoch (up to max_workers), another is refused.
static int join_report(coord *c, coord_node *n) {
    int i = (int)(n - c->nodes);
    if (n->d != c->d || n->nt != c->nt) {
        refuse_odd(c, i);
        return WR_OK;
    }
    int max = wr_config_max_workers(&c->cfg);
    if (coord_count_members(c, 1) >= max) {
        char r[128];
        snprintf(r, sizeof r, "the job has its max_workers = %d workers", max);
        wr_info("refused worker from %s (host %s): %s", n->from, n->host, r);
        drop_node(c, i, WR_EC_REJECTED, r);
        return WR_OK;
    }
    coord_worker_joins(c, n);
    return WR_OK;
}

// A worker's second REGISTER (n_params = d, nt): recorded, then ranks
// follow the majority (decide_size, settle). WR_OK, or WR_ERR with the job
// stopped. n may be dropped from the table: not to be used after.
static int on_report(coord *c, const coord_in *in, coord_node *n) {
    char why[WR_REASON_MAX];
    if (coord_fixed(c) && coord_ar_report(c, in, n, why, sizeof why) != WR_OK) {
        char who[COORD_WHO_MAX];
        describe_reg(n, who, sizeof who);
        wr_warn("refused %s: %s", who, why);
        drop_node(c, (int)(n - c->nodes), WR_EC_CONFIG, why);
        return WR_OK;
    }
    n->d = in->h.n_params;
    n->nt = in->h.train_examples;
    n->reported = 1;
    wr_debug("worker from %s (host %s) reports d = %llu, training set %llu", n->from, n->host,
             (unsigned long long)n->d, (unsigned long long)n->nt);
    if (c->formed) return join_report(c, n);
    if (!c->nt_set && decide_size(c) != WR_OK) return WR_ERR;
    if (c->nt_set) settle(c);
    return WR_OK;
}

// Workers that registered but have no rank when the job forms (beyond its
// `workers`): refused and dropped.
static void drop_extras(coord *c) {
    for (int i = 0; i < c->n_nodes;)
        if (c->nodes[i].role == WR_ROLE_WORKER && !c->nodes[i].registered)
            drop_node(c, i, WR_EC_REJECTED, "the job formed with all its workers");
        else
            i++;
}

void coord_on_register(coord *c, coord_in *in) {
    const wr_pmsg *h = &in->h;
    if (h->job_id != 0 && h->job_id != c->cfg.job_id) {
        char r[128];
        // The refusal does not say which job runs here: the peer is not in it.
        snprintf(r, sizeof r, "REGISTER for job %llu, which this coordinator does not run",
                 (unsigned long long)h->job_id);
        if (in->n) {
            wr_refused(&c->refused, WR_PERR_JOB, in->who, r);
            coord_reply_error(c, in->m, WR_EC_REJECTED, r);
            return;
        }
        wr_peer_info pi;
        char from[WR_PEER_ADDR_MAX];
        peer_from(in->m, &pi, from, sizeof from);
        refuse_stranger(c, in, from, WR_EC_REJECTED, r);
        return;
    }
    if ((c->restart.active || c->restart.reform) && coord_rejoin_register(c, in)) return;
    // A node of this job that lost its coordinator, and this one has not
    // restored the job (docs/ARCHITECTURE.md "Coordinator restart").
    if (!c->restart.active && !c->restart.reform && !in->n && h->job_id == c->cfg.job_id &&
        (h->role == WR_ROLE_SHARD ? h->shard >= 0 : h->rank >= 0)) {
        wr_peer_info pi;
        char from[WR_PEER_ADDR_MAX];
        peer_from(in->m, &pi, from, sizeof from);
        refuse_stranger(
            c, in, from, WR_EC_REJECTED,
            "REGISTER to rejoin a running job after a coordinator restart: this coordinator has not "
            "restored it (no state in checkpoint_dir, or the job ended)");
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
        if (on_report(c, in, n) != WR_OK) return;
    } else if (!c->formed || (n->role == WR_ROLE_WORKER && !n->registered)) {
        send_welcome(c, n);  // first REGISTER (or a repeat): the config
    } else if (n->role == WR_ROLE_SHARD && c->replace.shard == n->index) {
        send_welcome(c, n);
        coord_shard_replace(c, n);  // the map: rebuild the range from the workers
    }
    if (!c->formed && c->n_shards_reg == c->cfg.shards && c->n_workers_reg == c->cfg.workers) {
        drop_extras(c);
        form_job(c);
    }
}

void coord_on_leave(coord *c, coord_in *in) {
    coord_node *n = in->n;
    if (n->role != WR_ROLE_WORKER || !c->formed) {
        coord_reply_error(c, in->m, WR_EC_PROTOCOL, "LEAVE is for workers of a formed job");
        return;
    }
    if (n->left) return;
    // Before the last step: a departure, the job goes on without it.
    if (c->map.total_steps > 0 && in->h.step < (uint64_t)c->map.total_steps) {
        coord_worker_departs(c, n, in->h.step);
        return;
    }
    n->left = 1;
    n->finished = 1;
    c->n_left++;
    wr_info("%s left (%d of %d workers done)", in->who, coord_count_members(c, 0) - coord_members_running(c),
            coord_count_members(c, 0));
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
            char who[COORD_WHO_MAX];
            describe_reg(n, who, sizeof who);
            appendf(out, len, &at, "%s %s", sep, who);
            if (n->role == WR_ROLE_WORKER && !n->reported)
                appendf(out, len, &at, " (config sent, model size never reported)");
            else if (n->role == WR_ROLE_WORKER && !n->registered)
                appendf(out, len, &at, " (reports %llu parameters, training set %llu; no majority yet)",
                        (unsigned long long)n->d, (unsigned long long)n->nt);
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
    coord_epochs_free(c);
}
