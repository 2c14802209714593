// test_heartbeat.c — the heartbeat thread (common/heartbeat.h) against a bound
// endpoint of this process: it sends the HEARTBEAT it was given at roughly the
// interval, stop interrupts its wait and closes its socket, stop(NULL) is a
// no-op, and a bad address or message fails the start with a reason.
// Wall-time bounds are generous (a loaded CI machine, the TSan build).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "heartbeat.h"
#include "proto.h"
#include "transport.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

// The beat a worker of rank 3 sends in job 42.
static void beat_msg(wr_pmsg *h) {
    wr_pmsg_init(h, WR_MT_HEARTBEAT);
    h->job_id = 42;
    h->epoch = 1;
    h->rank = 3;
    h->role = WR_ROLE_WORKER;
    snprintf(h->host, sizeof h->host, "%s", "hb-test-host");
}

typedef struct {
    wr_transport_ctx *ctx;
    wr_endpoint *srv;  // the "coordinator": a bound endpoint
    char dir[64];      // its socket's temp dir
    char addr[256];
} coord_t;

// Binds the fake coordinator on ipc in a temp dir of its own (ipc, unlike
// inproc, reports the heartbeat's connection closing as a peer event).
static void coord_open(coord_t *c) {
    char err[WR_ERR_LEN];
    snprintf(c->dir, sizeof c->dir, "/tmp/wren-hb-XXXXXX");
    assert_non_null(mkdtemp(c->dir));
    c->ctx = wr_transport_ctx_new(1, err);
    assert_non_null(c->ctx);
    wr_endpoint_opts o;
    wr_endpoint_opts_default(&o);
    o.peer_events = 1;
    snprintf(c->addr, sizeof c->addr, "ipc://%s/coord", c->dir);
    if (wr_bind(c->ctx, c->addr, &o, &c->srv, err) != WR_OK) fail_msg("bind %s: %s", c->addr, err);
}

static void coord_close(coord_t *c) {
    wr_close(c->srv);
    // zmq_ctx_term waits for every socket of the context: a heartbeat socket
    // left open would hang here, which the alarm turns into a failure.
    alarm(20);
    wr_transport_ctx_free(c->ctx);
    alarm(0);
    char path[128];
    snprintf(path, sizeof path, "%s/coord", c->dir);
    unlink(path);  // normally gone with the listener already
    rmdir(c->dir);
    memset(c, 0, sizeof *c);
}

// Receives one message for at most timeout_ms; 1 = a valid HEARTBEAT of beat_msg().
static int recv_beat(coord_t *c, int timeout_ms) {
    char err[WR_ERR_LEN];
    wr_msg m;
    memset(&m, 0, sizeof m);
    int rc = wr_recv(c->srv, &m, timeout_ms, err);
    if (rc == WR_ETIMEDOUT) return 0;
    if (rc != WR_OK) fail_msg("recv: %d %s", rc, err);
    wr_pmsg h;
    rc = wr_proto_decode(m.header.data, m.header.len, m.payload.len, NULL, &h, NULL, err);
    if (rc != WR_OK) fail_msg("decode: %s", err);
    assert_int_equal(h.type, WR_MT_HEARTBEAT);
    assert_int_equal(h.job_id, 42);
    assert_int_equal(h.rank, 3);
    assert_int_equal(h.role, WR_ROLE_WORKER);
    assert_string_equal(h.host, "hb-test-host");
    assert_int_equal(m.payload.len, 0);
    wr_pmsg_clear(&h);
    wr_msg_release(&m);
    return 1;
}

// Starts a heartbeat to c at `interval` and receives its first beat, which
// is sent at once.
static wr_heartbeat *start_beats(coord_t *c, double interval) {
    char err[WR_ERR_LEN];
    wr_pmsg h;
    beat_msg(&h);
    wr_heartbeat *hb = wr_heartbeat_start(c->ctx, c->addr, &h, interval, NULL, err);
    if (!hb) fail_msg("start: %s", err);
    wr_pmsg_clear(&h);  // the thread keeps its own copy
    assert_true(recv_beat(c, 5000));
    return hb;
}

// Beats arrive at roughly the interval: one at once, then one per interval.
static void test_beats_at_interval(void **state) {
    (void)state;
    coord_t c;
    coord_open(&c);
    const double interval = 0.05;
    wr_heartbeat *hb = start_beats(&c, interval);
    int beats = 0;
    double t0 = now_s(), el;
    while ((el = now_s() - t0) < 1.0) beats += recv_beat(&c, 100);
    double expect = el / interval;  // about 20
    if (beats < expect / 4 || beats > expect * 2 + 2)
        fail_msg("%d beats in %.2f s at a %.2f s interval (expected about %.0f)", beats, el, interval,
                 expect);
    wr_heartbeat_stop(hb);
    coord_close(&c);
}

// Stop interrupts a long wait at once, and closes the thread's socket (the
// coordinator sees its connection close; the context can be terminated).
static void test_stop_prompt_and_closes(void **state) {
    (void)state;
    coord_t c;
    coord_open(&c);
    wr_heartbeat *hb = start_beats(&c, 30.0);
    double t0 = now_s();
    wr_heartbeat_stop(hb);
    double took = now_s() - t0;
    if (took > 5.0) fail_msg("stop took %.2f s with a 30 s interval", took);
    // The connection's close reaches the bound side as a peer event.
    char err[WR_ERR_LEN];
    unsigned long closed = 0, a, cl;
    for (int i = 0; i < 100 && closed == 0; i++) {
        int ready = 0;
        wr_poll(&c.srv, 1, &ready, 50, err);  // collects the events
        if (ready) recv_beat(&c, 0);          // a beat still queued
        assert_int_equal(wr_peer_events(c.srv, &a, &cl), WR_OK);
        closed += cl;
    }
    assert_true(closed >= 1);
    coord_close(&c);
}

static void test_stop_null(void **state) {
    (void)state;
    wr_heartbeat_stop(NULL);
}

// A malformed address or a message the encoder refuses: NULL and a reason.
static void test_start_errors(void **state) {
    (void)state;
    char err[WR_ERR_LEN];
    wr_transport_ctx *ctx = wr_transport_ctx_new(1, err);
    assert_non_null(ctx);
    wr_pmsg h;
    beat_msg(&h);
    err[0] = '\0';
    assert_null(wr_heartbeat_start(ctx, "nonsense://x", &h, 0.1, NULL, err));
    assert_true(strlen(err) > 0);
    assert_non_null(strstr(err, "nonsense"));
    err[0] = '\0';
    assert_null(wr_heartbeat_start(ctx, "tcp://no-port-here", &h, 0.1, NULL, err));
    assert_true(strlen(err) > 0);
    h.type = -1;  // not a message type
    err[0] = '\0';
    assert_null(wr_heartbeat_start(ctx, "inproc://hb-none", &h, 0.1, NULL, err));
    assert_true(strlen(err) > 0);
    wr_pmsg_clear(&h);
    alarm(20);
    wr_transport_ctx_free(ctx);  // nothing left open by the failed starts
    alarm(0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_beats_at_interval),
        cmocka_unit_test(test_stop_prompt_and_closes),
        cmocka_unit_test(test_stop_null),
        cmocka_unit_test(test_start_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
