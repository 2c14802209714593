// train_metrics.h — the worker's metrics (common/metrics.h) from the
// training loop: steps, step time, bytes by peer kind, the data epoch, loss
// and accuracy, loss-scale overflows (docs/RUNNING.md, "Metrics").
#ifndef WR_TRAIN_METRICS_H
#define WR_TRAIN_METRICS_H

#include <stdint.h>

#include "metrics.h"
#include "summary.h"

typedef struct {
    wr_metric *steps, *step_time, *sent, *recv, *epoch, *loss, *train_acc, *test_acc, *overflow;
} wr_train_metrics;

// Registers the series in m (NULL: every handle NULL, the updates no-ops)
// once the rank is known: labels role="worker",rank="<rank>" (standalone:
// role="standalone"); peer = the kind of node the steps exchange bytes with
// ("shard", "worker"; NULL when none).
void wr_train_metrics_open(wr_train_metrics *tm, wr_metrics *m, int rank, int cluster, const char *peer);

// After a step of `seconds` with this loss (the totals in st).
void wr_train_metrics_step(wr_train_metrics *tm, const wr_train_stats *st, int64_t epoch, double seconds,
                           float loss, double train_acc, int overflow);

#endif
