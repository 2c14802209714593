// ps_recoord.c — the coordinator lost while this worker trains
// (docs/ARCHITECTURE.md, "Coordinator restart"). The data path does not need
// the coordinator: the steps go on with the shards, and the worker sends
// REGISTER{'r' = its rank, 'tk' = its token, its epoch and last step} every
// 0.5 s until the coordinator (started again) answers with a cluster map,
// for up to register_timeout + connect_timeout. Its socket reconnects by
// itself; while it is down it is not polled (it would report ready at once).
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "ps.h"
#include "wr_common.h"

// Seconds between two REGISTERs to a lost coordinator.
#define REREGISTER_S 0.5

int wr_ps_coord_tick(wr_ps *w, int64_t t, char *err) {
    if (!w->coord_lost) return WR_EXIT_OK;
    double now = wr_now(), bound = w->cfg.register_timeout + w->o->connect_timeout;
    if (now - w->coord_lost > bound)
        return wr_ps_fail(w, 0, WR_EXIT_NO_COORDINATOR, err,
                          "step %lld: lost the connection to the coordinator at %s and it did not take this "
                          "worker back within %g s (register_timeout + connect_timeout)",
                          (long long)t, w->o->coordinator, bound);
    if (now - w->coord_reg_t < REREGISTER_S) return WR_EXIT_OK;
    w->coord_reg_t = now;
    wr_pmsg h;
    wr_ps_hdr(w, &h, WR_MT_REGISTER);
    h.step = t > 0 ? (uint64_t)(t - 1) : 0;
    h.has_token = 1;
    memcpy(h.token, w->token, WR_TOKEN_LEN);
    snprintf(h.host, sizeof h.host, "%s", w->host);
    snprintf(h.group_name, sizeof h.group_name, "%s", w->o->group && w->o->group[0] ? w->o->group : w->host);
    char e2[WR_ERR_LEN];
    if (wr_ps_send(w, w->coord, &h, NULL, 0, NULL, NULL, 0, NULL, e2) == WR_OK)
        w->coord_down = 0;  // connected again: the answer comes on the socket
    else
        wr_debug("REGISTER to the coordinator: %s", e2);
    return WR_EXIT_OK;
}

int wr_ps_coord_closed(wr_ps *w, int64_t t, const char *why, char *err) {
    if (w->epoch < 1)
        return wr_ps_fail(w, WR_EC_INTERNAL, WR_EXIT_NO_COORDINATOR, err,
                          "step %lld: lost connection to coordinator at %s: %s", (long long)t,
                          w->o->coordinator, why);
    w->coord_down = 1;
    if (!w->coord_lost) {
        w->coord_lost = wr_now();
        w->coord_reg_t = 0;
        wr_warn("step %lld: lost the connection to the coordinator at %s (%s); training goes on, registering "
                "again every %g s for up to %g s",
                (long long)t, w->o->coordinator, why, REREGISTER_S,
                w->cfg.register_timeout + w->o->connect_timeout);
    }
    return wr_ps_coord_tick(w, t, err);
}

void wr_ps_coord_back(wr_ps *w) {
    if (!w->coord_lost) return;
    wr_info("the coordinator took this worker back after %.2f s", wr_now() - w->coord_lost);
    w->coord_lost = 0;
}

int wr_ps_coord_wait_back(wr_ps *w, int64_t t, char *err) {
    while (w->coord_lost) {
        int st = wr_ps_poll_coordinator(w, t, 100, err);
        if (st) return st;
    }
    return WR_EXIT_OK;
}
