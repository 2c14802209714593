// metrics_node.c — what every node publishes the same way (node.h): its
// refused messages by reason.
#include "metrics.h"
#include "node.h"

#include <stdio.h>

void wr_refusals_metrics(wr_metrics *m, wr_metric **out) {
    for (int k = 0; k < WR_PERR_KINDS; k++) {
        out[k] = NULL;
        if (!m || k == WR_PERR_NONE) continue;
        char l[64];
        snprintf(l, sizeof l, "reason=\"%s\"", wr_perr_name((enum wr_perr)k));
        out[k] = wr_metrics_add(m, WR_METRIC_COUNTER, "wren_messages_refused_total",
                                "Messages refused, by reason (the wire protocol's refusal kinds).", l);
    }
}

void wr_refusals_publish(const wr_refusals *r, wr_metric **series) {
    for (int k = 1; k < WR_PERR_KINDS; k++) wr_metric_set(series[k], (double)r->count[k]);
}
