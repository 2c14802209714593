// coord_metrics.c — the coordinator's metrics (--metrics ADDR;
// docs/RUNNING.md "Metrics"): the job's step and rates from the workers'
// PROGRESS (coord_view.h), the epoch, members by kind, control bytes by
// peer kind, refusals, ERRORs received by code, digest checks. The loop
// stores values in atomics (its tick, and the byte counts as messages go);
// a scrape never holds it up.
#include "coord_internal.h"

#include <stdio.h>
#include <stdlib.h>

#include "log.h"
#include "metrics.h"

// Peer kinds of the byte counters: a registered shard or worker, or a peer
// that has not registered.
enum { PEER_SHARD, PEER_WORKER, PEER_OTHER, PEER_KINDS };
static const char *const kPeer[PEER_KINDS] = {"shard", "worker", "unregistered"};
static const char *const kCode[] = {"", "protocol", "config", "rejected", "digest", "internal", "timeout"};
#define N_CODES ((int)(sizeof kCode / sizeof *kCode))

struct coord_metrics {
    wr_metrics *m;
    wr_metrics_server *srv;
    wr_metric *steps, *epoch, *members[2], *steps_s, *samples_s, *slow_s, *lag;
    wr_metric *bytes[2][PEER_KINDS];  // [in, out]
    wr_metric *refused[WR_PERR_KINDS];
    wr_metric *errors[N_CODES], *hs_refused, *digests[2];
};

static wr_metric *add(coord_metrics *cm, enum wr_metric_type t, const char *name, const char *help,
                      const char *labels) {
    return wr_metrics_add(cm->m, t, name, help, labels);
}

static void open_job_series(coord_metrics *cm) {
    cm->steps = add(cm, WR_METRIC_COUNTER, "wren_steps_total",
                    "The job's step: the lowest step the member workers reported (PROGRESS).", NULL);
    cm->epoch = add(cm, WR_METRIC_GAUGE, "wren_epoch", "The membership epoch in force (0: not formed).",
                    NULL);
    const char *mh = "Members of the job by kind (registered shards; workers of the epoch in force).";
    cm->members[0] = add(cm, WR_METRIC_GAUGE, "wren_members", mh, "kind=\"shard\"");
    cm->members[1] = add(cm, WR_METRIC_GAUGE, "wren_members", mh, "kind=\"worker\"");
    cm->steps_s = add(cm, WR_METRIC_GAUGE, "wren_job_steps_per_second",
                      "Steps per second of the slowest worker over its last PROGRESS interval.", NULL);
    cm->samples_s = add(cm, WR_METRIC_GAUGE, "wren_job_samples_per_second",
                        "Training examples per second summed over the workers.", NULL);
    cm->slow_s = add(cm, WR_METRIC_GAUGE, "wren_slowest_wait_seconds",
                     "Wait per step for the slowest peer (shard; without shards the rank's comm time).",
                     NULL);
    cm->lag = add(cm, WR_METRIC_GAUGE, "wren_lag_steps",
                  "How many steps the slowest worker is behind the fastest (reported steps).", NULL);
}

static void open_node_series(coord_metrics *cm) {
    char l[96];
    const char *bh = "Control message bytes (headers) by direction and peer kind.";
    for (int d = 0; d < 2; d++)
        for (int p = 0; p < PEER_KINDS; p++) {
            snprintf(l, sizeof l, "direction=\"%s\",peer=\"%s\"", d ? "out" : "in", kPeer[p]);
            cm->bytes[d][p] = add(cm, WR_METRIC_COUNTER, "wren_bytes_total", bh, l);
        }
    wr_refusals_metrics(cm->m, cm->refused);
    const char *eh = "Errors by kind (coordinator: ERROR messages received by code, handshakes refused).";
    for (int k = 1; k < N_CODES; k++) {
        snprintf(l, sizeof l, "kind=\"%s\"", kCode[k]);
        cm->errors[k] = add(cm, WR_METRIC_COUNTER, "wren_errors_total", eh, l);
    }
    cm->hs_refused = add(cm, WR_METRIC_COUNTER, "wren_errors_total", eh, "kind=\"handshake_refused\"");
    const char *dh = "Replica digest checks by result.";
    cm->digests[0] = add(cm, WR_METRIC_COUNTER, "wren_digest_checks_total", dh, "result=\"passed\"");
    cm->digests[1] = add(cm, WR_METRIC_COUNTER, "wren_digest_checks_total", dh, "result=\"failed\"");
}

// wren_job_info{mode, algo, codec, broadcast, ps_node_aggregate} 1: what the
// bytes per step depend on, for dashboards to group by (deploy/grafana).
static void job_info(coord_metrics *cm, const wr_job_config *cfg) {
    static const char *const algo[] = {"hierarchical", "flat", "ring_fp32"};
    int ar = cfg->mode == WR_MODE_ALLREDUCE, birder = cfg->codec == WR_JOB_CODEC_BIRDER;
    char l[200];
    snprintf(l, sizeof l, "mode=\"%s\",algo=\"%s\",codec=\"%s\",broadcast=\"%s\",ps_node_aggregate=\"%s\"",
             ar ? "allreduce" : "ps",
             ar && cfg->allreduce_algo >= 0 && cfg->allreduce_algo <= 2 ? algo[cfg->allreduce_algo] : "none",
             birder ? "birder" : "fp32",
             !birder                            ? "none"
             : cfg->broadcast == WR_BCAST_EXACT ? "exact"
                                                : "1bit",
             cfg->ps_node_aggregate ? "on" : "off");
    wr_metric_set(add(cm, WR_METRIC_GAUGE, "wren_job_info",
                      "The job's mode, all-reduce algorithm, codec and broadcast (value 1).", l),
                  1);
}

int coord_metrics_start(coord *c) {
    if (!c->o->metrics) return WR_OK;
    char err[WR_ERR_LEN];
    coord_metrics *cm = wr_calloc(1, sizeof *cm);
    if (wr_metrics_start(c->o->metrics, &cm->m, &cm->srv, err) != WR_OK) {
        wr_error("%s", err);
        free(cm);
        return WR_ERR;
    }
    wr_metrics_set_labels(cm->m, "role=\"coordinator\"");
    open_job_series(cm);
    open_node_series(cm);
    job_info(cm, &c->cfg);
    c->metrics = cm;
    return WR_OK;
}

void coord_metrics_bytes(coord *c, const coord_node *n, int out, size_t bytes) {
    if (!c->metrics) return;
    int p = !n ? PEER_OTHER : n->role == WR_ROLE_SHARD ? PEER_SHARD : PEER_WORKER;
    wr_metric_add(c->metrics->bytes[out ? 1 : 0][p], (double)bytes);
}

void coord_metrics_error(coord *c, int code) {
    if (c->metrics && code > 0 && code < N_CODES) wr_metric_add(c->metrics->errors[code], 1);
}

void coord_metrics_tick(coord *c) {
    coord_metrics *cm = c->metrics;
    if (!cm) return;
    wr_metric_set(cm->epoch, c->formed ? (double)c->epoch : 0);
    int shards = 0;
    for (int i = 0; i < c->n_nodes; i++)
        shards += c->nodes[i].role == WR_ROLE_SHARD && c->nodes[i].registered && !c->nodes[i].left;
    wr_metric_set(cm->members[0], shards);
    wr_metric_set(cm->members[1], c->formed ? coord_count_members(c, 0) : 0);
    coord_view_line l;
    uint64_t top;
    if (coord_progress_figures(c, &l, &top)) {
        // A counter never goes down (Prometheus would read a reset): a joiner
        // that reports a lower step leaves it where it was.
        if ((double)l.step > wr_metric_value(cm->steps)) wr_metric_set(cm->steps, (double)l.step);
        wr_metric_set(cm->steps_s, l.steps_s);
        wr_metric_set(cm->samples_s, l.samples_s);
        wr_metric_set(cm->slow_s, l.slow_ms / 1e3);
        wr_metric_set(cm->lag, (double)(top - l.step));
    }
    wr_refusals_publish(&c->refused, cm->refused);
    wr_metric_set(cm->hs_refused, (double)(c->hs_bad_key + c->hs_over_cap));
    wr_metric_set(cm->digests[0], c->book ? (double)wr_digest_book_passed(c->book) : 0);
    wr_metric_set(cm->digests[1], c->book ? (double)wr_digest_book_failed(c->book) : 0);
}

void coord_metrics_stop(coord *c) {
    if (!c->metrics) return;
    wr_metrics_end(c->metrics->m, c->metrics->srv);
    free(c->metrics);
    c->metrics = NULL;
}
