// shard_node.c — the shard process's event loop (see shard.h): joining the
// job (shard_join.c), then one poll over the workers' ROUTER and the
// coordinator DEALER, each worker message handed to the handler of its type
// (shard_data.c), and the housekeeping in one tick; heartbeats run on their
// own thread and socket.
#include "shard_internal.h"

#include <string.h>

#include "log.h"

// Poll timeout, and so the tick period.
#define SHARD_TICK_MS 100

volatile sig_atomic_t shard_stop_signal = 0;
static void on_signal(int sig) { shard_stop_signal = sig; }

void wr_shard_opts_default(wr_shard_opts *o) {
    memset(o, 0, sizeof *o);
    o->bind = "tcp://*:0";
    o->connect_timeout = 30.0;
    // Two I/O threads: a step ends with n large BROADCAST sends (and starts with
    // n PUSH receives) whose kernel copies then run on both cores.
    o->io_threads = 2;
}

// Worker messages handled per poll at most (a step's pushes and PULLs, and
// some slack), so the coordinator socket and the tick get their turn.
static int drain_max(const shard_node *s) { return 4 * s->n_workers + 16; }

// Waits up to one tick for messages and handles what is queued on both
// sockets. SHARD_GO_ON, SHARD_DONE or an exit status.
static int poll_once(shard_node *s) {
    wr_endpoint *eps[2] = {s->router, s->coord};
    int ready[2] = {0, 0};
    char err[WR_ERR_LEN];
    int n = wr_poll(eps, s->coord_down ? 1 : 2, ready, SHARD_TICK_MS, err);
    if (n < 0 && !shard_stop_signal) wr_debug("poll: %s", err);
    if (n <= 0) return SHARD_GO_ON;
    if (ready[0]) {
        int st = wr_drain(s->router, drain_max(s), shard_on_worker_msg, s, &s->refused, "a worker connection",
                          err);
        if (st < 0) {
            wr_error("receive: %s", err);
            return WR_EXIT_FAILURE;
        }
        if (st != SHARD_GO_ON) return st;
    }
    return ready[1] ? shard_on_coord_ready(s) : SHARD_GO_ON;
}

// The periodic housekeeping, after each poll.
static int tick(shard_node *s) {
    if (shard_stop_signal) return shard_stop_by_signal(s);
    shard_log_peer_events(s);
    int st = shard_coord_tick(s);
    shard_metrics_tick(s);
    return st != SHARD_GO_ON ? st : shard_check_step_timeout(s);
}

static void end_report(const shard_node *s) {
    double el = s->t_first_step > 0 ? wr_now() - s->t_first_step : 0;
    uint64_t steps = wr_shard_core_step(s->core);
    double per = steps ? 1e3 / (double)steps : 0;
    wr_info("%llu steps, %.1f MB broadcast in %.1f s; per step: aggregate+apply %.3f ms, sends %.3f ms; "
            "%llu messages refused (%llu unauthenticated), %llu sends failed; peak RSS %.1f MiB; "
            "master copy digest %016llx",
            (unsigned long long)steps, s->bytes_out / 1e6, el, s->t_finish * per, s->t_send * per,
            (unsigned long long)s->refused.total, (unsigned long long)s->auth_refused,
            (unsigned long long)s->send_failures, wr_peak_rss_mib(),
            (unsigned long long)wr_shard_core_digest(s->core));
    // Inbound traffic: with ps_node_aggregate one push per node, not per worker.
    wr_info("pushes received: %llu (%.2f per step), %.1f MB (%.0f bytes per step)",
            (unsigned long long)s->pushes_in, steps ? (double)s->pushes_in / (double)steps : 0.0,
            s->bytes_in / 1e6, steps ? s->bytes_in / (double)steps : 0.0);
    // Every step of the job is completed exactly once (membership changes
    // included): tests compare the count with the total.
    wr_info("completed steps 1..%llu of %lld (%llu with no push), epoch %llu", (unsigned long long)steps,
            (long long)s->total_steps, (unsigned long long)s->empty_steps, (unsigned long long)s->mem.epoch);
}

static void shard_free(shard_node *s) {
    wr_heartbeat_stop(s->hb);
    shard_data_release(s);
    wr_close(s->router);
    wr_close(s->coord);
    if (s->ctx) wr_transport_ctx_free(s->ctx);
    shard_data_free(s);  // after the context: every free callback has run
    wr_shard_core_free(s->core);
    wr_buf_free(&s->scratch);
    shard_metrics_stop(s);
}

int wr_shard_run(const wr_shard_opts *o) {
    shard_node sn, *s = &sn;
    memset(s, 0, sizeof *s);
    s->o = o;
    s->index = -1;
    if (o->host && o->host[0])
        snprintf(s->host, sizeof s->host, "%s", o->host);
    else
        wr_hostname(s->host, sizeof s->host);
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    int st = shard_metrics_start(s);
    if (st == SHARD_GO_ON) st = shard_join(s);
    while (st == SHARD_GO_ON) {
        st = poll_once(s);
        if (st == SHARD_GO_ON) st = tick(s);
    }
    if (st == SHARD_DONE) st = WR_EXIT_OK;
    if (s->core) end_report(s);
    shard_free(s);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    return st;
}
