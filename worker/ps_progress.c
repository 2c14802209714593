// ps_progress.c — the ps exchange's progress op (exchange.h): every
// progress_every steps a PROGRESS to the coordinator with this worker's
// figures and how long it waited for each shard's broadcast, so the
// coordinator can print one line for the whole job and name the slowest
// shard (docs/PROTOCOL.md, "PROGRESS"). mode=allreduce sends the same
// message without shard waits.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "ps.h"
#include "wr_common.h"

void wr_ps_wait_done(wr_ps *w, int s) {
    if (w->n_shards <= 0 || s < 0 || s >= w->n_shards || w->wait_t0 <= 0) return;
    if (!w->wait_us) {
        w->wait_us = wr_calloc((size_t)w->n_shards, sizeof *w->wait_us);
        w->wait_us_last = wr_calloc((size_t)w->n_shards, sizeof *w->wait_us_last);
    }
    double us = (wr_now() - w->wait_t0) * 1e6;
    if (us > 0) w->wait_us[s] += (uint64_t)us;
}

void wr_ps_progress_free(wr_ps *w) {
    free(w->wait_us);
    free(w->wait_us_last);
    w->wait_us = w->wait_us_last = NULL;
}

// The shard with the largest wait since the last report, per step, into p.
static void slowest(wr_ps *w, wr_exchange_progress *p) {
    p->slow_shard = -1;
    p->slow_wait_ms = 0;
    int64_t steps = p->steps - w->prog_steps;
    if (!w->wait_us || steps <= 0) return;
    for (int s = 0; s < w->n_shards; s++) {
        double ms = (double)(w->wait_us[s] - w->wait_us_last[s]) / 1e3 / (double)steps;
        if (p->slow_shard < 0 || ms > p->slow_wait_ms) {
            p->slow_shard = s;
            p->slow_wait_ms = ms;
        }
    }
    memcpy(w->wait_us_last, w->wait_us, (size_t)w->n_shards * sizeof *w->wait_us);
}

// The figures of p as the message's named values ('st').
static void figures(wr_pmsg *h, const wr_exchange_progress *p) {
    const struct {
        const char *name;
        double v;
    } kv[] = {
        {"epoch", (double)p->epoch},
        {"steps", (double)p->steps},
        {"samples", (double)p->samples},
        {"seconds", p->seconds},
        {"loss", p->loss},
        {"train_acc", p->train_acc},
        {"acc", p->acc},
        {"compute_s", p->t_compute},
        {"encode_s", p->t_encode},
        {"comm_s", p->t_comm},
        {"bytes_sent", p->bytes_sent},
        {"bytes_recv", p->bytes_recv},
    };
    h->n_stats = 0;
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) {
        if (!isfinite(kv[i].v)) continue;  // the decoder refuses others
        snprintf(h->stats[h->n_stats].name, sizeof h->stats[0].name, "%s", kv[i].name);
        h->stats[h->n_stats++].value = kv[i].v;
    }
}

void wr_ps_progress(void *self, wr_exchange_progress *p) {
    wr_ps *w = self;
    // The waits go on the wire as they are (cumulative) before the window moves on.
    wr_pmsg h;
    wr_ps_hdr(w, &h, WR_MT_PROGRESS);
    h.step = (uint64_t)p->step;
    figures(&h, p);
    h.n_waits = w->wait_us ? (uint32_t)w->n_shards : 0;
    h.waits = w->wait_us;  // borrowed: not cleared with wr_pmsg_clear
    slowest(w, p);
    w->prog_steps = p->steps;
    if (w->coord_down || !w->coord) return;  // a restarted coordinator gets the next one
    char e2[WR_ERR_LEN];
    // Timeout 0: the coordinator's queue being full is no reason to hold a step.
    if (wr_ps_send(w, w->coord, &h, NULL, 0, NULL, NULL, 0, NULL, e2) != WR_OK)
        wr_debug("PROGRESS of step %lld not sent: %s", (long long)p->step, e2);
}
