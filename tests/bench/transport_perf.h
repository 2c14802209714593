// transport_perf.h — push throughput and round-trip latency of wren's
// transport+protocol against raw ZeroMQ, shared by tests/tools/wren-perf.c
// (separate processes, like libzmq's local_thr/remote_thr) and
// tests/bench/bench_transport.c (threads in one process).
//
// The wren path does what the cluster does: a PUSH header encoded with
// wr_proto_encode into a reused wr_buf, a zero-copy payload from a pool of
// reused buffers (the free callback returns the buffer; the sender waits when
// all are in flight), wr_send on a DEALER; on the ROUTER side wr_recv,
// wr_proto_decode with job/epoch/step expectations, the payload length
// checked, wr_msg_release. The raw path sends the same frames (the same
// pre-encoded header bytes, the same zero-copy pool buffers, the same HWM)
// with zmq_send/zmq_msg_send and receives them with zmq_msg_recv.
#ifndef WR_TRANSPORT_PERF_H
#define WR_TRANSPORT_PERF_H

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "proto.h"
#include "transport.h"
#include "transport_zmq.h"

// ---- a pool of reused payload buffers -----------------------------------------

#define WP_MAX_BUFS 64

typedef struct wp_pool wp_pool;
typedef struct {
    wp_pool *pool;
    int idx;
} wp_slot;

struct wp_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n, busy[WP_MAX_BUFS], in_flight;
    uint8_t *buf[WP_MAX_BUFS];
    wp_slot slot[WP_MAX_BUFS];
    size_t size;
};

// Enough buffers to keep the pipe full (~256 MiB in flight at most, 2..64 of them).
static inline void wp_pool_init(wp_pool *p, size_t size) {
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    size_t n = ((size_t)256 << 20) / (size ? size : 1);
    p->n = (int)(n < 2 ? 2 : n > WP_MAX_BUFS ? WP_MAX_BUFS : n);
    p->size = size;
    for (int i = 0; i < p->n; i++) {
        p->buf[i] = wr_alloc_vec(size ? size : 64);  // touched once here, warm afterwards
        for (size_t j = 0; j < size; j += 4096) p->buf[i][j] = (uint8_t)(i + j);
        p->slot[i] = (wp_slot){p, i};
    }
}

static inline void wp_pool_free(wp_pool *p) {
    for (int i = 0; i < p->n; i++) free(p->buf[i]);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
}

// The zero-copy free callback: called by ZeroMQ (often on its I/O thread).
static void wp_give_back(void *data, void *hint) {
    (void)data;
    wp_slot *s = hint;
    pthread_mutex_lock(&s->pool->mu);
    s->pool->busy[s->idx] = 0;
    s->pool->in_flight--;
    pthread_cond_signal(&s->pool->cv);
    pthread_mutex_unlock(&s->pool->mu);
}

static inline wp_slot *wp_acquire(wp_pool *p) {
    pthread_mutex_lock(&p->mu);
    for (;;) {
        for (int i = 0; i < p->n; i++)
            if (!p->busy[i]) {
                p->busy[i] = 1;
                p->in_flight++;
                pthread_mutex_unlock(&p->mu);
                return &p->slot[i];
            }
        pthread_cond_wait(&p->cv, &p->mu);
    }
}

// Waits until every buffer came back (all payloads handed to the kernel or peer).
static inline void wp_wait_idle(wp_pool *p) {
    pthread_mutex_lock(&p->mu);
    while (p->in_flight > 0) pthread_cond_wait(&p->cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

// ---- endpoints: wren or raw ---------------------------------------------------

typedef struct {
    int raw;
    wr_endpoint *ep;  // wren
    void *sock;       // raw ZeroMQ
} wp_ep;

// Opens a ROUTER (bind=1) or DEALER on ctx; raw sockets get the same HWM,
// linger and heartbeat settings wren's defaults use. `actual` receives the
// bound address (tcp port 0 resolved).
static inline int wp_open(wp_ep *e, wr_transport_ctx *ctx, int raw, int bind, const char *addr, char *actual,
                          size_t alen, char *err) {
    memset(e, 0, sizeof *e);
    e->raw = raw;
    wr_endpoint_opts o;
    wr_endpoint_opts_default(&o);
    if (!raw) {
        int rc = bind ? wr_bind(ctx, addr, &o, &e->ep, err) : wr_connect(ctx, addr, &o, &e->ep, err);
        if (rc != WR_OK) return rc;
        if (actual) wr_last_endpoint(e->ep, actual, alen);
        return WR_OK;
    }
    e->sock = zmq_socket(wr_transport_ctx_zmq(ctx), bind ? ZMQ_ROUTER : ZMQ_DEALER);
    if (!e->sock) return wr_err(err, WR_ERR, "zmq_socket: %s", zmq_strerror(errno));
    int hb3 = 3 * o.heartbeat_ms;
    zmq_setsockopt(e->sock, ZMQ_SNDHWM, &o.sndhwm, sizeof(int));
    zmq_setsockopt(e->sock, ZMQ_RCVHWM, &o.rcvhwm, sizeof(int));
    zmq_setsockopt(e->sock, ZMQ_LINGER, &o.linger_ms, sizeof(int));
    zmq_setsockopt(e->sock, ZMQ_HEARTBEAT_IVL, &o.heartbeat_ms, sizeof(int));
    zmq_setsockopt(e->sock, ZMQ_HEARTBEAT_TIMEOUT, &hb3, sizeof(int));
    zmq_setsockopt(e->sock, ZMQ_HEARTBEAT_TTL, &hb3, sizeof(int));
    zmq_setsockopt(e->sock, ZMQ_MAXMSGSIZE, &o.max_msg_size, sizeof(int64_t));
    if ((bind ? zmq_bind(e->sock, addr) : zmq_connect(e->sock, addr)) != 0) {
        int en = errno;
        zmq_close(e->sock);
        e->sock = NULL;
        return wr_err(err, WR_ERR, "%s %s: %s", bind ? "bind" : "connect", addr, zmq_strerror(en));
    }
    if (actual) {
        size_t n = alen;
        zmq_getsockopt(e->sock, ZMQ_LAST_ENDPOINT, actual, &n);
    }
    return WR_OK;
}

static inline void wp_close(wp_ep *e) {
    if (e->ep) wr_close(e->ep);
    if (e->sock) zmq_close(e->sock);
    memset(e, 0, sizeof *e);
}

// The PUSH header of message `step` for `size` payload bytes (fp32 elements).
static inline void wp_push_hdr(wr_pmsg *m, size_t size, uint64_t step) {
    wr_pmsg_init(m, WR_MT_PUSH);
    m->job_id = 1;
    m->epoch = 1;
    m->step = step;
    m->shard = 0;
    m->rank = 0;
    m->has_token = 1;  // a credential (all zero here: nothing checks it)
    m->offset = 0;
    m->n_elems = size / 4;
    m->codec = WR_CODEC_FP32;
    m->payload_len = size;
}

// ---- throughput -------------------------------------------------------------------

// Sends `count` PUSH messages of `size` payload bytes (size: a multiple of 4, >= 4).
static inline int wp_thr_send(wp_ep *e, wp_pool *pool, size_t size, long count, char *err) {
    wr_pmsg m;
    wr_buf hb = {0};
    wp_push_hdr(&m, size, 1);
    if (wr_proto_encode(&m, &hb, err) != WR_OK) return WR_ERR;
    uint8_t raw_hdr[256];
    size_t raw_len = hb.len;  // raw path: the same header bytes, encoded once
    memcpy(raw_hdr, hb.data, hb.len);
    int rc = WR_OK;
    for (long i = 0; i < count && rc == WR_OK; i++) {
        wp_slot *s = wp_acquire(pool);
        if (!e->raw) {
            m.step = (uint64_t)i + 1;
            if ((rc = wr_proto_encode(&m, &hb, err)) != WR_OK) {
                wp_give_back(NULL, s);
                break;
            }
            wr_msg msg = {0};
            msg.header = (wr_frame){hb.data, hb.len, NULL, NULL};
            msg.payload = (wr_frame){pool->buf[s->idx], size, wp_give_back, s};
            rc = wr_send(e->ep, &msg, 30000, err);
        } else {
            zmq_msg_t zm;
            if (zmq_send(e->sock, raw_hdr, raw_len, ZMQ_SNDMORE) < 0) {
                wp_give_back(NULL, s);
                rc = wr_err(err, WR_ERR, "zmq_send: %s", zmq_strerror(errno));
                break;
            }
            zmq_msg_init_data(&zm, pool->buf[s->idx], size, wp_give_back, s);
            if (zmq_msg_send(&zm, e->sock, 0) < 0) {
                rc = wr_err(err, WR_ERR, "zmq_msg_send: %s", zmq_strerror(errno));
                zmq_msg_close(&zm);
            }
        }
    }
    wp_wait_idle(pool);
    wr_buf_free(&hb);
    return rc;
}

// Receives `count` messages; *secs is the time from the first to the last.
static inline int wp_thr_recv(wp_ep *e, size_t size, long count, double *secs, char *err) {
    double t0 = 0;
    wr_proto_expect ex = {.job_id = 1,
                          .check_epoch = 1,
                          .epoch = 1,
                          .check_step = 1,
                          .step_min = 1,
                          .step_max = (uint64_t)count};
    for (long i = 0; i < count; i++) {
        size_t got;
        if (!e->raw) {
            wr_msg msg = {0};
            int rc = wr_recv(e->ep, &msg, 30000, err);
            if (rc != WR_OK) return rc;
            wr_pmsg p;
            enum wr_perr pe;
            rc = wr_proto_decode(msg.header.data, msg.header.len, msg.payload.len, &ex, &p, &pe, err);
            got = (rc == WR_OK && p.type == WR_MT_PUSH) ? (size_t)p.payload_len : 0;
            wr_msg_release(&msg);
            if (rc != WR_OK) return rc;
        } else {
            zmq_msg_t id, hdr, pay;
            zmq_msg_init(&id), zmq_msg_init(&hdr), zmq_msg_init(&pay);
            if (zmq_msg_recv(&id, e->sock, 0) < 0 || zmq_msg_recv(&hdr, e->sock, 0) < 0 ||
                zmq_msg_recv(&pay, e->sock, 0) < 0)
                return wr_err(err, WR_ERR, "zmq_msg_recv: %s", zmq_strerror(errno));
            got = zmq_msg_size(&pay);
            zmq_msg_close(&id), zmq_msg_close(&hdr), zmq_msg_close(&pay);
        }
        if (got != size)
            return wr_err(err, WR_ERR, "message %ld: payload %zu bytes, expected %zu", i, got, size);
        if (i == 0) t0 = wr_now();
    }
    *secs = wr_now() - t0;
    return WR_OK;
}

// ---- latency ----------------------------------------------------------------------

// Echo server: replies to each message with the same payload (copied) until a
// SHUTDOWN (wren) or an empty "stop" frame (raw) or `idle_ms` of silence.
static inline int wp_lat_serve(wp_ep *e, int idle_ms, char *err) {
    wr_buf hb = {0};
    int rc = WR_OK;
    for (;;) {
        if (!e->raw) {
            wr_msg in = {0};
            rc = wr_recv(e->ep, &in, idle_ms, err);
            if (rc != WR_OK) break;
            wr_pmsg p, r;
            rc = wr_proto_decode(in.header.data, in.header.len, in.payload.len, NULL, &p, NULL, err);
            if (rc != WR_OK || p.type == WR_MT_SHUTDOWN) {
                wr_msg_release(&in);
                break;
            }
            wr_pmsg_init(&r, WR_MT_BROADCAST);
            r.job_id = p.job_id, r.epoch = p.epoch, r.step = p.step, r.shard = 0;
            r.offset = p.offset, r.n_elems = p.n_elems, r.codec = p.codec, r.n_workers = 1;
            r.payload_len = p.payload_len;
            if ((rc = wr_proto_encode(&r, &hb, err)) != WR_OK) {
                wr_msg_release(&in);
                break;
            }
            wr_msg out = {0};
            memcpy(out.peer, in.peer, in.peer_len);
            out.peer_len = in.peer_len;
            out.header = (wr_frame){hb.data, hb.len, NULL, NULL};
            out.payload = (wr_frame){in.payload.data, in.payload.len, NULL, NULL};  // copied
            rc = wr_send(e->ep, &out, 5000, err);
            wr_msg_release(&in);
            if (rc != WR_OK) break;
        } else {
            zmq_pollitem_t it = {e->sock, 0, ZMQ_POLLIN, 0};
            if (zmq_poll(&it, 1, idle_ms) <= 0) {
                rc = wr_err(err, WR_ETIMEDOUT, "idle");
                break;
            }
            zmq_msg_t id, hdr, pay;
            zmq_msg_init(&id), zmq_msg_init(&hdr), zmq_msg_init(&pay);
            zmq_msg_recv(&id, e->sock, 0);
            zmq_msg_recv(&hdr, e->sock, 0);
            int has_pay = zmq_msg_more(&hdr);
            if (has_pay) zmq_msg_recv(&pay, e->sock, 0);
            int stop = !has_pay && zmq_msg_size(&hdr) == 0;
            if (!stop) {
                zmq_send(e->sock, zmq_msg_data(&id), zmq_msg_size(&id), ZMQ_SNDMORE);
                zmq_send(e->sock, zmq_msg_data(&hdr), zmq_msg_size(&hdr), has_pay ? ZMQ_SNDMORE : 0);
                if (has_pay) zmq_send(e->sock, zmq_msg_data(&pay), zmq_msg_size(&pay), 0);  // copied
            }
            zmq_msg_close(&id), zmq_msg_close(&hdr), zmq_msg_close(&pay);
            if (stop) break;
        }
    }
    wr_buf_free(&hb);
    return rc;
}

// Client: `count` round trips of `size` payload bytes after `warm` unmeasured
// ones; *rtt_us the mean round trip. Ends the server (SHUTDOWN / "stop").
static inline int wp_lat_client(wp_ep *e, wp_pool *pool, size_t size, long count, long warm, double *rtt_us,
                                char *err) {
    wr_pmsg m;
    wr_buf hb = {0};
    wp_push_hdr(&m, size, 1);
    if (wr_proto_encode(&m, &hb, err) != WR_OK) return WR_ERR;
    uint8_t raw_hdr[256];
    size_t raw_len = hb.len;
    memcpy(raw_hdr, hb.data, hb.len);
    int rc = WR_OK;
    double t0 = wr_now();
    for (long i = 0; i < warm + count && rc == WR_OK; i++) {
        if (i == warm) t0 = wr_now();
        wp_slot *s = wp_acquire(pool);
        if (!e->raw) {
            m.step = (uint64_t)i + 1;
            wr_proto_encode(&m, &hb, err);
            wr_msg msg = {0};
            msg.header = (wr_frame){hb.data, hb.len, NULL, NULL};
            msg.payload = (wr_frame){pool->buf[s->idx], size, wp_give_back, s};
            if ((rc = wr_send(e->ep, &msg, 5000, err)) != WR_OK) break;
            wr_msg in = {0};
            if ((rc = wr_recv(e->ep, &in, 5000, err)) != WR_OK) break;
            wr_pmsg p;
            wr_proto_expect ex = {.job_id = 1, .check_step = 1, .step_min = m.step, .step_max = m.step};
            rc = wr_proto_decode(in.header.data, in.header.len, in.payload.len, &ex, &p, NULL, err);
            if (rc == WR_OK && (p.type != WR_MT_BROADCAST || in.payload.len != size))
                rc = wr_err(err, WR_ERR, "bad echo");
            wr_msg_release(&in);
        } else {
            zmq_msg_t zm, hdr, pay;
            zmq_send(e->sock, raw_hdr, raw_len, ZMQ_SNDMORE);
            zmq_msg_init_data(&zm, pool->buf[s->idx], size, wp_give_back, s);
            if (zmq_msg_send(&zm, e->sock, 0) < 0) zmq_msg_close(&zm);
            zmq_msg_init(&hdr), zmq_msg_init(&pay);
            zmq_pollitem_t it = {e->sock, 0, ZMQ_POLLIN, 0};
            if (zmq_poll(&it, 1, 5000) <= 0) {
                rc = wr_err(err, WR_ETIMEDOUT, "no echo within 5 s");
                break;
            }
            zmq_msg_recv(&hdr, e->sock, 0);
            zmq_msg_recv(&pay, e->sock, 0);
            if (zmq_msg_size(&pay) != size) rc = wr_err(err, WR_ERR, "bad echo");
            zmq_msg_close(&hdr), zmq_msg_close(&pay);
        }
    }
    *rtt_us = (wr_now() - t0) / (double)(count > 0 ? count : 1) * 1e6;
    wp_wait_idle(pool);
    // end the server
    if (!e->raw) {
        wr_pmsg sd;
        wr_pmsg_init(&sd, WR_MT_SHUTDOWN);
        if (wr_proto_encode(&sd, &hb, NULL) == WR_OK) {
            wr_msg msg = {0};
            msg.header = (wr_frame){hb.data, hb.len, NULL, NULL};
            wr_send(e->ep, &msg, 1000, NULL);
        }
    } else {
        zmq_send(e->sock, "", 0, 0);
    }
    wr_buf_free(&hb);
    return rc;
}

// ---- both sides in one process (threads) --------------------------------------------

typedef struct {
    wp_ep ep;
    size_t size;
    long count;
    double secs;
    int rc;
    char err[WR_ERR_LEN];
    int lat;
} wp_side;

static void *wp_recv_thread(void *arg) {
    wp_side *s = arg;
    if (s->lat)
        s->rc = wp_lat_serve(&s->ep, 10000, s->err);
    else
        s->rc = wp_thr_recv(&s->ep, s->size, s->count, &s->secs, s->err);
    return NULL;
}

// scheme: "inproc", "ipc" (under dir), "tcp" (127.0.0.1). For inproc both
// sides share one context (ZeroMQ requires it); otherwise each side has its
// own, with io_threads each, as two processes would.
static inline int wp_make_ctx(const char *scheme, int io_threads, wr_transport_ctx **a, wr_transport_ctx **b,
                              char *err) {
    *a = wr_transport_ctx_new(io_threads, err);
    if (!*a) return WR_ERR;
    *b = !strcmp(scheme, "inproc") ? *a : wr_transport_ctx_new(io_threads, err);
    return *b ? WR_OK : WR_ERR;
}

static inline void wp_bind_addr(const char *scheme, const char *dir, char *buf, size_t len) {
    static int seq;
    seq++;
    if (!strcmp(scheme, "inproc"))
        snprintf(buf, len, "inproc://wp-%d", seq);
    else if (!strcmp(scheme, "ipc"))
        snprintf(buf, len, "ipc://%s/wp-%d", dir, seq);
    else
        snprintf(buf, len, "tcp://127.0.0.1:0");
}

// One throughput run: GB/s (payload bytes after the first message / time), or < 0 on error.
static inline double wp_thr_inproc(const char *scheme, const char *dir, int raw, size_t size, long count,
                                   wp_pool *pool, int io_threads, char *err) {
    wr_transport_ctx *rc_ctx, *sd_ctx;
    if (wp_make_ctx(scheme, io_threads, &rc_ctx, &sd_ctx, err) != WR_OK) return -1;
    char addr[256], actual[256];
    wp_bind_addr(scheme, dir, addr, sizeof addr);
    wp_side r = {.size = size, .count = count};
    wp_ep snd;
    double gbps = -1;
    if (wp_open(&r.ep, rc_ctx, raw, 1, addr, actual, sizeof actual, err) != WR_OK) goto out;
    if (wp_open(&snd, sd_ctx, raw, 0, actual, NULL, 0, err) != WR_OK) {
        wp_close(&r.ep);
        goto out;
    }
    pthread_t th;
    pthread_create(&th, NULL, wp_recv_thread, &r);
    int rc = wp_thr_send(&snd, pool, size, count, err);
    pthread_join(th, NULL);
    wp_close(&snd);
    wp_close(&r.ep);
    if (rc == WR_OK && r.rc != WR_OK) snprintf(err, WR_ERR_LEN, "%s", r.err);
    if (rc == WR_OK && r.rc == WR_OK && r.secs > 0) gbps = (double)size * (double)(count - 1) / r.secs / 1e9;
out:
    if (sd_ctx != rc_ctx) wr_transport_ctx_free(sd_ctx);
    wr_transport_ctx_free(rc_ctx);
    return gbps;
}

// One latency run: mean round trip in microseconds, or < 0 on error.
static inline double wp_lat_inproc(const char *scheme, const char *dir, int raw, size_t size, long count,
                                   wp_pool *pool, char *err) {
    wr_transport_ctx *rc_ctx, *sd_ctx;
    if (wp_make_ctx(scheme, 1, &rc_ctx, &sd_ctx, err) != WR_OK) return -1;
    char addr[256], actual[256];
    wp_bind_addr(scheme, dir, addr, sizeof addr);
    wp_side r = {.size = size, .lat = 1};
    wp_ep cli;
    double us = -1;
    if (wp_open(&r.ep, rc_ctx, raw, 1, addr, actual, sizeof actual, err) != WR_OK) goto out;
    if (wp_open(&cli, sd_ctx, raw, 0, actual, NULL, 0, err) != WR_OK) {
        wp_close(&r.ep);
        goto out;
    }
    pthread_t th;
    pthread_create(&th, NULL, wp_recv_thread, &r);
    int rc = wp_lat_client(&cli, pool, size, count, count / 10 + 10, &us, err);
    pthread_join(th, NULL);
    wp_close(&cli);
    wp_close(&r.ep);
    if (rc != WR_OK) us = -1;
out:
    if (sd_ctx != rc_ctx) wr_transport_ctx_free(sd_ctx);
    wr_transport_ctx_free(rc_ctx);
    return us;
}

#endif
