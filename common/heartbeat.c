// heartbeat.c — the heartbeat thread (see heartbeat.h).
#include "heartbeat.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "log.h"

struct wr_heartbeat {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    wr_endpoint *ep;
    wr_buf hdr;
    double interval;
};

static void *hb_main(void *arg) {
    wr_heartbeat *hb = arg;
    char err[WR_ERR_LEN];
    pthread_mutex_lock(&hb->mu);
    while (!hb->stop) {
        pthread_mutex_unlock(&hb->mu);
        wr_msg m;
        memset(&m, 0, sizeof m);
        m.header.data = hb->hdr.data;
        m.header.len = hb->hdr.len;
        int rc = wr_send(hb->ep, &m, 0, err);  // a full queue just drops this beat
        if (rc != WR_OK) wr_debug("heartbeat not sent: %s", err);
        pthread_mutex_lock(&hb->mu);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        double s = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9 + hb->interval;
        ts.tv_sec = (time_t)s;
        ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
        while (!hb->stop && pthread_cond_timedwait(&hb->cv, &hb->mu, &ts) != ETIMEDOUT) {}
    }
    pthread_mutex_unlock(&hb->mu);
    return NULL;
}

wr_heartbeat *wr_heartbeat_start(wr_transport_ctx *ctx, const char *coord_addr, const wr_pmsg *msg,
                                 double interval_s, const wr_endpoint_opts *sec, char *err) {
    wr_heartbeat *hb = wr_calloc(1, sizeof *hb);
    hb->interval = interval_s > 0.001 ? interval_s : 0.001;
    if (wr_proto_encode(msg, &hb->hdr, err) != WR_OK) {
        free(hb);
        return NULL;
    }
    wr_endpoint_opts eo;
    wr_endpoint_opts_default(&eo);
    eo.linger_ms = 0;
    eo.max_msg_size = WR_PROTO_MAX_CONTROL_MSG;  // the coordinator sends nothing here; bound it anyway
    // The coordinator's ZMTP PINGs watch this connection with the job's
    // heartbeat_timeout; a heartbeat of ours (its own fixed timeout) would
    // drop the connection of a node paused for less than that.
    eo.heartbeat_ms = 0;
    if (sec && sec->curve) {
        eo.curve = sec->curve;
        memcpy(eo.curve_server_key, sec->curve_server_key, sizeof eo.curve_server_key);
    }
    if (wr_connect(ctx, coord_addr, &eo, &hb->ep, err) != WR_OK) {
        wr_buf_free(&hb->hdr);
        free(hb);
        return NULL;
    }
    pthread_mutex_init(&hb->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&hb->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&hb->th, NULL, hb_main, hb) != 0) {
        wr_err(err, WR_ERR, "cannot start the heartbeat thread");
        pthread_mutex_destroy(&hb->mu);
        pthread_cond_destroy(&hb->cv);
        wr_close(hb->ep);
        wr_buf_free(&hb->hdr);
        free(hb);
        return NULL;
    }
    return hb;
}

void wr_heartbeat_stop(wr_heartbeat *hb) {
    if (!hb) return;
    pthread_mutex_lock(&hb->mu);
    hb->stop = 1;
    pthread_cond_signal(&hb->cv);
    pthread_mutex_unlock(&hb->mu);
    pthread_join(hb->th, NULL);
    wr_close(hb->ep);
    wr_buf_free(&hb->hdr);
    pthread_mutex_destroy(&hb->mu);
    pthread_cond_destroy(&hb->cv);
    free(hb);
}
