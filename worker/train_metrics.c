// train_metrics.c — the worker's metrics (train_metrics.h). Updates are
// atomic stores: the scrape on the HTTP thread never holds up a step.
#include "train_metrics.h"

#include <stdio.h>
#include <string.h>

void wr_train_metrics_open(wr_train_metrics *tm, wr_metrics *m, int rank, int cluster, const char *peer) {
    memset(tm, 0, sizeof *tm);
    if (!m) return;
    char l[64];
    if (cluster)
        snprintf(l, sizeof l, "role=\"worker\",rank=\"%d\"", rank);
    else
        snprintf(l, sizeof l, "role=\"standalone\"");
    wr_metrics_set_labels(m, l);
    int nb;
    const double *b = wr_metrics_step_bounds(&nb);
    tm->steps = wr_metrics_add(m, WR_METRIC_COUNTER, "wren_steps_total", "Optimizer steps done.", NULL);
    tm->step_time = wr_metrics_histogram(m, "wren_step_duration_seconds",
                                         "Wall time of one step (compute, encode, exchange).", NULL, b, nb);
    if (peer) {
        char in[64], out[64];
        snprintf(in, sizeof in, "direction=\"in\",peer=\"%s\"", peer);
        snprintf(out, sizeof out, "direction=\"out\",peer=\"%s\"", peer);
        const char *help = "Bytes of the step exchange (headers and payloads), by direction and peer kind.";
        tm->recv = wr_metrics_add(m, WR_METRIC_COUNTER, "wren_bytes_total", help, in);
        tm->sent = wr_metrics_add(m, WR_METRIC_COUNTER, "wren_bytes_total", help, out);
    }
    tm->epoch = wr_metrics_add(m, WR_METRIC_GAUGE, "wren_epoch", "The data epoch of the last step (from 1).",
                               NULL);
    tm->loss = wr_metrics_add(m, WR_METRIC_GAUGE, "wren_loss", "Train loss of the last step.", NULL);
    const char *ah = "Accuracy: train (the last step's batch) and test (the last evaluation; -1: none yet).";
    tm->train_acc = wr_metrics_add(m, WR_METRIC_GAUGE, "wren_accuracy", ah, "set=\"train\"");
    tm->test_acc = wr_metrics_add(m, WR_METRIC_GAUGE, "wren_accuracy", ah, "set=\"test\"");
    tm->overflow = wr_metrics_add(m, WR_METRIC_COUNTER, "wren_errors_total",
                                  "Errors by kind (worker: loss-scale overflows, a zero gradient sent).",
                                  "kind=\"loss_scale_overflow\"");
    wr_metric_set(tm->test_acc, -1);
}

void wr_train_metrics_step(wr_train_metrics *tm, const wr_train_stats *st, int64_t epoch, double seconds,
                           float loss, double train_acc, int overflow) {
    if (!tm->steps) return;
    wr_metric_set(tm->steps, (double)st->steps);
    wr_metric_observe(tm->step_time, seconds);
    wr_metric_set(tm->sent, st->bytes_sent);
    wr_metric_set(tm->recv, st->bytes_recv);
    wr_metric_set(tm->epoch, (double)epoch);
    wr_metric_set(tm->loss, loss);
    wr_metric_set(tm->train_acc, train_acc);
    if (st->test_accuracy >= 0) wr_metric_set(tm->test_acc, st->test_accuracy);
    if (overflow) wr_metric_add(tm->overflow, 1);
}
