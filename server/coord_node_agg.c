// coord_node_agg.c — the coordinator's part of ps_node_aggregate = on
// (docs/ARCHITECTURE.md "Node aggregation (mode=ps)"). The workers report
// their data endpoints and groups as in mode=allreduce (coord_allreduce.c)
// and get maps that list every member with those and every token ('ta');
// the shards get maps that list only each node's leader (its lowest rank),
// so a shard expects one push per node and broadcasts to the leaders, which
// relay to their nodes. The membership is fixed (coord_fixed).
#include "coord_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

int coord_agg_leaders(const coord *c, const int *nodes, int n, int *out) {
    int k = 0;
    for (int i = 0; i < n; i++) {
        const coord_node *w = &c->nodes[nodes[i]];
        int first = 1;  // no lower rank of its group among nodes[]
        for (int j = 0; j < n && first; j++) {
            const coord_node *o = &c->nodes[nodes[j]];
            first = !(o->group == w->group && o->index < w->index);
        }
        if (first) out[k++] = nodes[i];
    }
    return k;
}

int coord_agg_form(coord *c) {
    int n_groups, size;
    if (coord_ar_assign_groups(c, &n_groups, &size) != WR_OK) return WR_ERR;
    int W = c->cfg.workers, *nodes = wr_calloc((size_t)W, sizeof *nodes),
        *lead = wr_calloc((size_t)W, sizeof *lead);
    for (int r = 0; r < W; r++) {
        nodes[r] = c->worker_node[r];
        c->map.workers[r].group = c->nodes[nodes[r]].group;
    }
    int k = coord_agg_leaders(c, nodes, W, lead);
    char list[512];
    size_t at = 0;
    list[0] = 0;
    for (int i = 0; i < k && at < sizeof list; i++) {
        const coord_node *l = &c->nodes[lead[i]];
        int m = snprintf(list + at, sizeof list - at, "%s%s: worker %d", i ? ", " : "", l->gname, l->index);
        if (m > 0) at += (size_t)m;
    }
    wr_info("node aggregation: %d nodes x %d workers; the shards see the leaders (%s), one push per node",
            n_groups, size, list);
    free(nodes);
    free(lead);
    return WR_OK;
}
