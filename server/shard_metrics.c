// shard_metrics.c — the shard's metrics (--metrics ADDR; docs/RUNNING.md
// "Metrics"): steps, the time between completed steps, bytes from and to the
// workers, pushes waiting, the epoch, refusals and errors by kind. The loop
// stores values in atomics from its tick; a scrape never holds it up.
#include "shard_internal.h"

#include <stdio.h>

#include "log.h"

int shard_metrics_start(shard_node *s) {
    char err[WR_ERR_LEN];
    if (wr_metrics_start(s->o->metrics, &s->metrics, &s->msrv, err) == WR_OK) return SHARD_GO_ON;
    wr_error("%s", err);
    return WR_EXIT_CONFIG;
}

static wr_metric *counter(shard_node *s, const char *name, const char *help, const char *labels) {
    return wr_metrics_add(s->metrics, WR_METRIC_COUNTER, name, help, labels);
}

// The series, labelled with this shard's index (known once the map came).
static void open_series(shard_node *s) {
    char l[64];
    snprintf(l, sizeof l, "role=\"shard\",shard=\"%d\"", s->index);
    wr_metrics_set_labels(s->metrics, l);
    int nb;
    const double *b = wr_metrics_step_bounds(&nb);
    s->m_steps = counter(s, "wren_steps_total", "Optimizer steps done.", NULL);
    s->m_step_time = wr_metrics_histogram(s->metrics, "wren_step_duration_seconds",
                                          "Time between two completed steps of this shard.", NULL, b, nb);
    const char *bh = "Bytes of the step exchange (headers and payloads), by direction and peer kind.";
    s->m_in = counter(s, "wren_bytes_total", bh, "direction=\"in\",peer=\"worker\"");
    s->m_out = counter(s, "wren_bytes_total", bh, "direction=\"out\",peer=\"worker\"");
    s->m_waiting = wr_metrics_add(s->metrics, WR_METRIC_GAUGE, "wren_pushes_waiting",
                                  "Pushes of the step being collected that arrived (waiting for the rest).",
                                  NULL);
    s->m_epoch = wr_metrics_add(s->metrics, WR_METRIC_GAUGE, "wren_epoch", "The membership epoch in force.",
                                NULL);
    wr_refusals_metrics(s->metrics, s->m_refused);
    const char *eh =
        "Errors by kind (shard: sends that failed, unauthenticated messages, checkpoint failures).";
    s->m_err_send = counter(s, "wren_errors_total", eh, "kind=\"send_failed\"");
    s->m_err_auth = counter(s, "wren_errors_total", eh, "kind=\"unauthenticated\"");
    s->m_err_ckpt = counter(s, "wren_errors_total", eh, "kind=\"checkpoint_failed\"");
}

void shard_metrics_tick(shard_node *s) {
    if (!s->metrics || s->index < 0 || !s->core) return;
    if (!s->m_steps) open_series(s);
    wr_metric_set(s->m_steps, (double)wr_shard_core_step(s->core));
    wr_metric_set(s->m_in, s->bytes_in);
    wr_metric_set(s->m_out, s->bytes_out);
    wr_metric_set(s->m_waiting, (double)wr_shard_core_pending(s->core));
    wr_metric_set(s->m_epoch, (double)s->mem.epoch);
    wr_refusals_publish(&s->refused, s->m_refused);
    wr_metric_set(s->m_err_send, (double)s->send_failures);
    wr_metric_set(s->m_err_auth, (double)s->auth_refused);
    wr_metric_set(s->m_err_ckpt, (double)s->ckpt_failures);
}

void shard_metrics_step(shard_node *s, double now) {
    if (s->m_t_step > 0) wr_metric_observe(s->m_step_time, now - s->m_t_step);
    s->m_t_step = now;
    // The step count between ticks, so a scrape sees each step at once.
    if (s->m_steps) wr_metric_set(s->m_steps, (double)wr_shard_core_step(s->core));
}

void shard_metrics_stop(shard_node *s) {
    wr_metrics_end(s->metrics, s->msrv);
    s->metrics = NULL;
    s->msrv = NULL;
}
