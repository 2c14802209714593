// coordinator.c — the coordinator's event loop (see coordinator.h and
// docs/ARCHITECTURE.md): one ROUTER, each received message decoded and
// handed to the handler of its type, and the housekeeping in one tick every
// 100 ms (registration deadline, end of the job, liveness).
#include "coord_internal.h"

// Messages are cut to their buffers on purpose (log lines, reasons on the wire).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

// Poll timeout, and so the tick period.
#define COORD_TICK_MS 100
// Messages handled per tick at most, so housekeeping still runs.
#define COORD_DRAIN_MAX 1000
// Queued messages per peer: replies waiting for a peer that does not read,
// and received messages waiting for the loop. Control traffic is a few
// messages per step, so these only bound what a flooding peer costs (a
// node's burst beyond COORD_RCVHWM waits in its own send queue).
#define COORD_SNDHWM 1000
#define COORD_RCVHWM 16
// ERROR replies an unregistered peer gets before its refusals go unanswered,
// and how many such peers are remembered (fixed memory).
#define COORD_STRANGER_REPLIES 4
#define COORD_STRANGER_TABLE 4096
// Connections beyond the nodes' own (a main and a heartbeat socket each)
// before the coordinator warns of a flood.
#define COORD_CONN_SLACK 32

static volatile sig_atomic_t g_stop_signal = 0;
static void on_signal(int sig) { g_stop_signal = sig; }

// ---- shared by the coordinator's files ------------------------------------------------

const char *coord_role_name(int role) {
    return role == WR_ROLE_SHARD ? "shard" : role == WR_ROLE_WORKER ? "worker" : "coordinator";
}

void coord_describe(const coord_node *n, char *buf, size_t len) {
    if (n->role == WR_ROLE_SHARD)
        snprintf(buf, len, "shard %d on host %s (%s)", n->index, n->host, n->addr);
    else if (n->index >= 0)
        snprintf(buf, len, "worker %d on host %s", n->index, n->host);
    else
        snprintf(buf, len, "worker on host %s", n->host);
}

coord_node *coord_find_peer(coord *c, const wr_msg *m) {
    for (int i = 0; i < c->n_nodes; i++)
        if (c->nodes[i].peer_len == m->peer_len && !memcmp(c->nodes[i].peer, m->peer, m->peer_len))
            return &c->nodes[i];
    return NULL;
}

void coord_init_hdr(const coord *c, wr_pmsg *h, int type) {
    wr_pmsg_init(h, type);
    h->job_id = c->cfg.job_id;
    h->epoch = c->formed ? c->epoch : 0;
    h->role = WR_ROLE_COORDINATOR;
}

int coord_send_to(coord *c, const coord_node *n, const wr_pmsg *h) {
    char err[WR_ERR_LEN];
    int rc = wr_send_pmsg(c->ep, n->peer, n->peer_len, h, NULL, 0, NULL, NULL, 0, &c->scratch, err);
    if (rc == WR_OK) coord_metrics_bytes(c, n, 1, c->scratch.len);
    if (rc != WR_OK) {
        char who[COORD_WHO_MAX];
        coord_describe(n, who, sizeof who);
        wr_warn("cannot send %s to %s: %s", wr_msg_type_name(h->type), who, err);
    }
    return rc;
}

void coord_send_shutdown_all(coord *c, int status, const char *reason) {
    wr_pmsg h;
    coord_init_hdr(c, &h, WR_MT_SHUTDOWN);
    h.code = status;
    snprintf(h.reason, sizeof h.reason, "%s", reason);
    for (int i = 0; i < c->n_nodes; i++)
        if (!c->nodes[i].left) coord_send_to(c, &c->nodes[i], &h);
}

void coord_reply_error(coord *c, const wr_msg *m, int code, const char *reason) {
    const coord_node *n = coord_find_peer(c, m);
    int known = n != NULL;
    if (!known && !wr_reply_gate_allow(&c->gate, m->peer, m->peer_len, "an unregistered peer")) return;
    // An unregistered peer learns nothing of the job: its own job id back, epoch 0.
    wr_send_error(c->ep, m->peer, m->peer_len, known ? c->cfg.job_id : c->stranger_job,
                  known && c->formed ? c->epoch : 0, code, reason, &c->scratch);
    coord_metrics_bytes(c, n, 1, c->scratch.len);
}

void coord_refuse(coord *c, const coord_in *in, int kind, const char *reason) {
    wr_refused(&c->refused, kind, in->who, reason);
    coord_reply_error(c, in->m, WR_EC_PROTOCOL, reason);
}

void coord_end(coord *c, int status) {
    if (c->status == COORD_RUNNING) c->status = status;
}

void coord_stop_job(coord *c, int status, const char *reason) {
    if (status == WR_EXIT_OK)
        wr_info("%s", reason);
    else
        wr_error("%s", reason);
    coord_send_shutdown_all(c, status, reason);
    coord_end(c, status);
}

// ---- the handlers of this file --------------------------------------------------------

static void on_digest(coord *c, coord_in *in) {
    const coord_node *n = in->n;
    const wr_pmsg *h = &in->h;
    if (!c->formed) {
        coord_reply_error(c, in->m, WR_EC_PROTOCOL, "DIGEST before the cluster map");
        return;
    }
    // After a coordinator restart the digests before the re-forming epoch's
    // start are incomplete (some went to the lost coordinator): dropped.
    if (c->restart.active || c->restart.reform) return;
    char report[2048];
    if (n->role == WR_ROLE_SHARD && h->shard != n->index) {
        snprintf(report, sizeof report, "DIGEST for shard %d from shard %d", h->shard, n->index);
        coord_refuse(c, in, WR_PERR_ROLE, report);
        return;
    }
    int slot = n->role == WR_ROLE_SHARD ? WR_MAX_WORKERS : n->index;
    int r = wr_digest_book_add(c->book, h->step, h->shard, slot, h->digest, report, sizeof report);
    if (r < 0) {
        coord_refuse(c, in, WR_PERR_ROLE, report);
    } else if (r == 2) {
        wr_error("==================== REPLICAS DIVERGED ====================");
        wr_error("%s", report);
        char reason[WR_REASON_MAX];
        snprintf(reason, sizeof reason, "replica digest mismatch at step %llu, shard %d",
                 (unsigned long long)h->step, h->shard);
        coord_stop_job(c, WR_EXIT_DIVERGED, reason);
    }
}

static void on_stats(coord *c, coord_in *in) {
    coord_progress_stats(c, in);
    char line[2048];
    size_t at = 0;
    line[0] = 0;
    for (uint32_t i = 0; i < in->h.n_stats && at < sizeof line; i++) {
        int k = snprintf(line + at, sizeof line - at, "%s%s=%.6g", i ? " " : "", in->h.stats[i].name,
                         in->h.stats[i].value);
        if (k > 0) at += (size_t)k;
    }
    wr_info("stats from %s: %s", in->who, line);
}

// A node's SHUTDOWN{k} ends the job with k (a failure when k is 0).
static void on_shutdown(coord *c, coord_in *in) {
    char r[COORD_REASON_MAX];
    snprintf(r, sizeof r, "%s asked to stop the job with status %d: %s", in->who, in->h.code, in->h.reason);
    in->n->left = 1;
    coord_stop_job(c, in->h.code ? in->h.code : WR_EXIT_FAILURE, r);
}

// ---- dispatch ------------------------------------------------------------------------

// What a message type needs before its handler runs.
#define NEED_JOB 1u   // this job's id (REGISTER may carry 0)
#define NEED_PEER 2u  // a registered sender (heartbeats come on their own socket)

static const struct {
    coord_handler fn;
    unsigned needs;
} handlers[WR_MT_COUNT_] = {
    [WR_MT_REGISTER] = {coord_on_register, 0},
    [WR_MT_HEARTBEAT] = {coord_on_heartbeat, NEED_JOB},
    [WR_MT_ERROR] = {coord_on_error, NEED_JOB | NEED_PEER},
    [WR_MT_SHUTDOWN] = {on_shutdown, NEED_JOB | NEED_PEER},
    [WR_MT_DIGEST] = {on_digest, NEED_JOB | NEED_PEER},
    [WR_MT_BARRIER] = {coord_on_barrier, NEED_JOB | NEED_PEER},
    [WR_MT_STATS] = {on_stats, NEED_JOB | NEED_PEER},
    [WR_MT_LEAVE] = {coord_on_leave, NEED_JOB | NEED_PEER},
    [WR_MT_FENCE] = {coord_on_fence, NEED_JOB | NEED_PEER},
    [WR_MT_JOIN] = {coord_on_join, 0},
    [WR_MT_PROGRESS] = {coord_on_progress, NEED_JOB | NEED_PEER},
    [WR_MT_STATUS] = {coord_on_status, 0},  // any peer, any job id (docs/PROTOCOL.md, STATUS)
};

// Checks what the type needs, then hands the message to its handler; a type
// without one is refused.
static void dispatch(coord *c, coord_in *in) {
    const wr_pmsg *h = &in->h;
    char err[WR_ERR_LEN];
    coord_handler fn = h->type > 0 && h->type < WR_MT_COUNT_ ? handlers[h->type].fn : NULL;
    unsigned needs = fn ? handlers[h->type].needs : NEED_JOB | NEED_PEER;
    if ((needs & NEED_JOB) && h->job_id != c->cfg.job_id) {
        // The job's id only to its own nodes.
        if (in->n)
            snprintf(err, sizeof err, "%s for job %llu, this coordinator runs job %llu",
                     wr_msg_type_name(h->type), (unsigned long long)h->job_id,
                     (unsigned long long)c->cfg.job_id);
        else
            snprintf(err, sizeof err, "%s for job %llu, which this coordinator does not run",
                     wr_msg_type_name(h->type), (unsigned long long)h->job_id);
        coord_refuse(c, in, WR_PERR_JOB, err);
        return;
    }
    // A coordinator restart: a node's message sent before its REGISTER
    // reached us (queued on its reconnected socket) is dropped, not refused.
    if (!in->n && h->type != WR_MT_REGISTER && h->type != WR_MT_HEARTBEAT && h->type != WR_MT_STATUS &&
        (c->restart.active || c->restart.reform)) {
        wr_debug("dropping %s from a peer not back yet", wr_msg_type_name(h->type));
        return;
    }
    // A removed worker's connection: told to register again (epochs.c).
    if (!in->n && h->type != WR_MT_REGISTER && c->formed && coord_tell_removed(c, in->m, -1)) return;
    if ((needs & NEED_PEER) && !in->n) {
        snprintf(err, sizeof err, "%s from a peer that has not registered", wr_msg_type_name(h->type));
        coord_refuse(c, in, WR_PERR_ROLE, err);
        return;
    }
    if (needs & NEED_PEER) in->n->last_seen = wr_now();
    if (!fn) {
        snprintf(err, sizeof err, "unexpected %s at the coordinator", wr_msg_type_name(h->type));
        coord_refuse(c, in, WR_PERR_ROLE, err);
        return;
    }
    fn(c, in);
}

// wr_drain handler: decodes one message and dispatches it. Stops the drain
// once the job ended.
static int on_message(void *arg, wr_msg *m) {
    coord *c = arg;
    coord_in in = {.m = m, .n = coord_find_peer(c, m)};
    coord_metrics_bytes(c, in.n, 0, m->header.len + m->payload.len);
    if (in.n)
        coord_describe(in.n, in.who, sizeof in.who);
    else
        snprintf(in.who, sizeof in.who, "an unregistered peer");
    enum wr_perr perr = WR_PERR_NONE;
    char err[WR_ERR_LEN];
    c->stranger_job = 0;
    int rc = wr_proto_decode(m->header.data, m->header.len, m->payload.len, NULL, &in.h, &perr, err);
    if (rc == WR_OK) c->stranger_job = in.h.job_id;
    if (rc != WR_OK) {
        wr_refused(&c->refused, perr, in.who, err);
        coord_reply_error(c, m, WR_EC_PROTOCOL, err);
    } else {
        dispatch(c, &in);
        wr_pmsg_clear(&in.h);
    }
    wr_msg_release(m);
    return c->status != COORD_RUNNING;
}

// ---- housekeeping --------------------------------------------------------------------

// Every worker left. A shard's last DIGEST can arrive after the last LEAVE:
// wait for the open checks (bounded by step_timeout); a check that never
// completes fails the job, it does not pass silently. Else the job is done.
static void end_of_job(coord *c, double now) {
    int open = wr_digest_book_incomplete(c->book);
    if (open > 0 && c->end_wait_t0 == 0) {
        c->end_wait_t0 = now;
        wr_info("all workers done; waiting up to %g s for %d open digest checks", c->cfg.step_timeout, open);
    } else if (open > 0 && now - c->end_wait_t0 > c->cfg.step_timeout) {
        char which[1024], r[WR_REASON_MAX];
        wr_digest_book_describe_open(c->book, which, sizeof which);
        wr_error("digest checks still incomplete %g s after the last worker left: %s", c->cfg.step_timeout,
                 which);
        snprintf(r, sizeof r, "%d digest checks incomplete at the end of the job", open);
        coord_stop_job(c, WR_EXIT_FAILURE, r);
    } else if (open == 0) {
        wr_pmsg h;
        coord_init_hdr(c, &h, WR_MT_SHUTDOWN);
        h.code = WR_EXIT_OK;
        snprintf(h.reason, sizeof h.reason, "job done");
        // Shards, and workers still waiting to join, are done.
        for (int i = 0; i < c->n_nodes; i++)
            if (!c->nodes[i].left) coord_send_to(c, &c->nodes[i], &h);
        wr_info("all %d workers done after %.1f s (epoch %llu); %s", coord_count_members(c, 0),
                now - c->t_start, (unsigned long long)c->epoch,
                coord_allreduce(c) ? "mode=allreduce job done" : "shards shut down");
        coord_end(c, WR_EXIT_OK);
    }
}

// The periodic housekeeping, after each poll.
static void tick(coord *c) {
    double now = wr_now();
    if (g_stop_signal) {
        char r[96];
        snprintf(r, sizeof r, "coordinator stopped by signal %d", (int)g_stop_signal);
        coord_stop_job(c, WR_EXIT_FAILURE, r);
    } else if (!c->formed) {
        coord_registration_tick(c, now);
    } else if (c->restart.active) {
        coord_rejoin_tick(c, now);
    } else if (!c->change.active && coord_count_members(c, 0) > 0 && coord_members_running(c) == 0) {
        end_of_job(c, now);
    }
    // A restarted coordinator neither watches nor waits for nodes not back yet.
    int watch = c->status == COORD_RUNNING && c->formed && !c->restart.active;
    if (watch) coord_epochs_tick(c, now);
    if (watch) coord_replace_tick(c, now);
    if (watch) coord_liveness_tick(c, now);
    if (watch) coord_progress_tick(c, now, 0);
    coord_metrics_tick(c);
    unsigned long acc = 0, closed = 0;
    wr_peer_events(c->ep, &acc, &closed);
    wr_peer_watch_tick(&c->conns, acc, closed, c->refused.total, now);
    wr_watch_handshakes(c->ep, "the coordinator", &c->hs_bad_key, &c->hs_over_cap);
}

// Waits up to one tick for messages and handles what is queued.
static void poll_once(coord *c) {
    char err[WR_ERR_LEN];
    int ready = 0;
    int n = wr_poll(&c->ep, 1, &ready, COORD_TICK_MS, err);
    // EINTR from a signal lands here too; the tick checks the flag.
    if (n < 0 && !g_stop_signal) wr_debug("poll: %s", err);
    if (n <= 0 || !ready) return;
    if (wr_drain(c->ep, COORD_DRAIN_MAX, on_message, c, &c->refused, "a peer", err) < 0) {
        wr_error("receive: %s", err);
        coord_stop_job(c, WR_EXIT_FAILURE, "coordinator transport failure");
    }
}

// ---- start and end -------------------------------------------------------------------

// Binds the ROUTER (control messages only: frames beyond the header bound are
// refused by the transport before it allocates for them). WR_OK or WR_ERR (logged).
static int open_endpoint(coord *c, wr_transport_ctx *ctx) {
    char err[WR_ERR_LEN];
    wr_endpoint_opts eo;
    wr_endpoint_opts_default(&eo);
    eo.sndhwm = COORD_SNDHWM;
    eo.rcvhwm = COORD_RCVHWM;
    // No ZMTP heartbeats on this ROUTER, and none on the nodes' sockets to
    // it: liveness follows the job's heartbeat_interval/heartbeat_timeout
    // through the nodes' own HEARTBEATs (liveness.c), so a pause shorter
    // than heartbeat_timeout never drops a connection; a process that dies
    // still closes its connection at once. (libzmq 4.3.4 also asserts,
    // stream_engine_base.cpp:331, when a heartbeat timer fires on a
    // connection whose input was stopped by the receive limit and whose peer
    // then closed, which a flood causes.)
    eo.heartbeat_ms = 0;
    eo.linger_ms = 2000;
    eo.max_msg_size = WR_PROTO_MAX_CONTROL_MSG;
    eo.peer_events = 1;  // counted by the tick (c->conns)
    // Connection caps (docs/SECURITY.md): a flood cannot make the coordinator
    // hold more than max_peers connections' buffers.
    wr_config_conn_caps(&c->cfg, 1, &eo.max_peers, &eo.max_peers_per_addr);
    // With keys only allow-listed shards and workers complete the handshake.
    wr_node_keys_opts(&c->o->keys, &eo, NULL, (1u << WR_ROLE_SHARD) | (1u << WR_ROLE_WORKER));
    if (wr_bind(ctx, c->o->bind, &eo, &c->ep, err) != WR_OK) {
        wr_error("cannot bind %s: %s", c->o->bind, err);
        return WR_ERR;
    }
    char bound[WR_ADDR_MAX];
    if (wr_last_endpoint(c->ep, bound, sizeof bound) != WR_OK)
        snprintf(bound, sizeof bound, "%s", c->o->bind);
    wr_advertised_addr(bound, c->o->advertise, c->adv, sizeof c->adv);
    wr_addr_public_host(c->adv, c->adv_host, sizeof c->adv_host);
    wr_info("listening on %s", c->adv);
    if (c->o->keys.on)
        wr_info("CURVE keys: only the %d keys of the allow-list (shards and workers) can connect",
                c->o->keys.allow.n);
    if (coord_allreduce(c))
        wr_info("job %llu: mode=allreduce, waiting up to %g s for %d workers (no shards)",
                (unsigned long long)c->cfg.job_id, c->cfg.register_timeout, c->cfg.workers);
    else
        wr_info("job %llu: waiting up to %g s for %d shards and %d workers",
                (unsigned long long)c->cfg.job_id, c->cfg.register_timeout, c->cfg.shards, c->cfg.workers);
    return WR_OK;
}

// expect_hosts resolved into c->hosts (left NULL when unset). WR_OK, or
// WR_ERR logged (a name that does not resolve).
static int resolve_hosts(coord *c) {
    if (!c->cfg.expect_hosts[0]) return WR_OK;
    char err[WR_ERR_LEN];
    c->hosts = wr_calloc(1, sizeof *c->hosts);
    if (wr_host_set_resolve(c->hosts, c->cfg.expect_hosts, err) != WR_OK) {
        wr_error("config error: %s", err);
        free(c->hosts);
        c->hosts = NULL;
        return WR_ERR;
    }
    wr_info("accepting registrations only from expect_hosts = %s (%d addresses%s)", c->cfg.expect_hosts,
            c->hosts->n, c->hosts->localhost ? ", and ipc peers" : "");
    return WR_OK;
}

static void finish_report(const coord *c) {
    uint64_t p = c->book ? wr_digest_book_passed(c->book) : 0,
             f = c->book ? wr_digest_book_failed(c->book) : 0;
    wr_info("digest checks: %llu passed, %llu failed", (unsigned long long)p, (unsigned long long)f);
    if (c->book && wr_digest_book_incomplete(c->book))
        wr_warn("%d digest checks incomplete (not every replica reported)",
                wr_digest_book_incomplete(c->book));
    if (c->book && wr_digest_book_refused(c->book))
        wr_warn("%llu digests refused (step not digested, outside the window, or too many open checks)",
                (unsigned long long)wr_digest_book_refused(c->book));
    if (c->reg_refused) wr_warn("%lu registrations refused", c->reg_refused);
    if (c->refused.total) wr_warn("%llu messages refused", (unsigned long long)c->refused.total);
    if (c->hs_bad_key) wr_warn("%lu connections refused: key not on the allow-list", c->hs_bad_key);
    if (c->hs_over_cap) wr_warn("%lu connections refused over the connection caps", c->hs_over_cap);
    if (c->gate.withheld)
        wr_warn("%llu ERROR replies to unregistered peers withheld", (unsigned long long)c->gate.withheld);
    if (c->conns.floods)
        wr_warn("connections peaked at %ld (more than %ld expected %llu times)", c->conns.peak,
                c->conns.limit, (unsigned long long)c->conns.floods);
    wr_info("peak RSS %.1f MiB", wr_peak_rss_mib());
}

static void coord_free(coord *c) {
    wr_close(c->ep);
    wr_buf_free(&c->scratch);
    wr_config_kv_free(c->kv, c->n_kv);
    wr_digest_book_free(c->book);
    free(c->barrier.in);
    wr_reply_gate_free(&c->gate);
    free(c->hosts);
    coord_progress_free(c);
    coord_membership_free(c);
    coord_metrics_stop(c);
}

int wr_coordinator_run(const wr_coord_opts *o) {
    coord cs, *c = &cs;
    memset(c, 0, sizeof *c);
    c->o = o;
    c->cfg = o->cfg;
    // mode=allreduce: the job has no shards (the key is ignored; c->kv keeps it as given)
    if (coord_allreduce(c)) c->cfg.shards = 0;
    c->status = COORD_RUNNING;
    c->replace.shard = -1;
    char err[WR_ERR_LEN];
    if (resolve_hosts(c) != WR_OK) return WR_EXIT_CONFIG;
    wr_transport_ctx *ctx = wr_transport_ctx_new(o->io_threads > 0 ? o->io_threads : 1, err);
    if (!ctx) {
        free(c->hosts);
        wr_error("transport: %s", err);
        return WR_EXIT_FAILURE;
    }
    if (wr_node_keys_apply(ctx, &o->keys, err) != WR_OK) {
        wr_error("allow-list: %s", err);
        wr_transport_ctx_free(ctx);
        return WR_EXIT_CONFIG;
    }
    if (open_endpoint(c, ctx) != WR_OK) {
        free(c->hosts);
        wr_transport_ctx_free(ctx);
        return WR_EXIT_FAILURE;
    }
    if (coord_metrics_start(c) != WR_OK) {
        free(c->hosts);
        wr_close(c->ep);
        wr_transport_ctx_free(ctx);
        return WR_EXIT_CONFIG;
    }
    wr_config_to_kv(&o->cfg, &c->kv, &c->n_kv);
    c->max_nodes = c->cfg.shards + COORD_WORKER_ROOM * wr_config_max_workers(&c->cfg);
    c->nodes = wr_calloc((size_t)c->max_nodes, sizeof *c->nodes);
    wr_reply_gate_init(&c->gate, COORD_STRANGER_TABLE, COORD_STRANGER_REPLIES);
    wr_peer_watch_init(&c->conns, "connections to the coordinator", 2L * c->max_nodes + COORD_CONN_SLACK);
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    c->t_start = wr_now();
    coord_state_load(c);
    while (c->status == COORD_RUNNING) {
        poll_once(c);
        if (c->status == COORD_RUNNING) tick(c);
    }
    if (c->formed) coord_progress_tick(c, wr_now(), 1);
    finish_report(c);
    coord_summary_write(c);
    coord_state_save(c, 1);  // a coordinator started again after this starts a new job
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    coord_free(c);
    wr_transport_ctx_free(ctx);
    return c->status;
}
