// test_transport.c — the ZeroMQ transport over inproc, ipc (temp dir) and tcp
// (127.0.0.1, port 0) with real sockets: round trips, zero-copy ownership,
// timeouts, routing by peer id, unknown and departed peers, poll, frame-count
// checks, 64 MiB payloads, scheme dispatch, bind errors, the connection
// heartbeat's timeout against paused peers.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "transport.h"
#include "transport_zmq.h"

enum { K_INPROC, K_IPC, K_TCP, K_COUNT };
static const char *kind_name[K_COUNT] = {"inproc", "ipc", "tcp"};
static char tmpdir[64];
static int seq;

static int quick(void) { return getenv("WREN_TEST_QUICK") != NULL; }

static void make_addr(int kind, char *buf, size_t len) {
    seq++;
    if (kind == K_INPROC)
        snprintf(buf, len, "inproc://tt-%d", seq);
    else if (kind == K_IPC)
        snprintf(buf, len, "ipc://%s/s%d", tmpdir, seq);
    else
        snprintf(buf, len, "tcp://127.0.0.1:0");
}

typedef struct {
    wr_transport_ctx *ctx;
    wr_endpoint *srv, *cli;
    char addr[256];  // the address the client connected to
} pair_t;

static void pair_open(pair_t *p, int kind, const wr_endpoint_opts *o) {
    char err[WR_ERR_LEN], a[256];
    p->ctx = wr_transport_ctx_new(1, err);
    assert_non_null(p->ctx);
    make_addr(kind, a, sizeof a);
    if (wr_bind(p->ctx, a, o, &p->srv, err) != WR_OK) fail_msg("bind %s: %s", a, err);
    assert_int_equal(wr_last_endpoint(p->srv, p->addr, sizeof p->addr), WR_OK);
    if (kind == K_TCP) assert_null(strstr(p->addr, ":0"));  // a real port was picked
    if (wr_connect(p->ctx, p->addr, o, &p->cli, err) != WR_OK) fail_msg("connect %s: %s", p->addr, err);
}

static void pair_close(pair_t *p) {
    wr_close(p->cli);
    wr_close(p->srv);
    wr_transport_ctx_free(p->ctx);
    memset(p, 0, sizeof *p);
}

static void count_free(void *data, void *hint) {
    (void)data;
    atomic_fetch_add((atomic_int *)hint, 1);
}

// Waits (bounded) until *c reaches want: frees may come from an I/O thread.
static int wait_count(atomic_int *c, int want) {
    for (int i = 0; i < 5000 && atomic_load(c) < want; i++) usleep(1000);
    return atomic_load(c);
}

static int recv_ok(wr_endpoint *ep, wr_msg *m) {
    char err[WR_ERR_LEN];
    int rc = wr_recv(ep, m, 5000, err);
    if (rc != WR_OK) fail_msg("recv: %d %s", rc, err);
    return rc;
}

static void test_scheme_dispatch(void **state) {
    (void)state;
    char err[WR_ERR_LEN];
    assert_ptr_equal(wr_transport_for("tcp://127.0.0.1:5", err), wr_transport_zmq());
    assert_ptr_equal(wr_transport_for("ipc:///tmp/x", err), wr_transport_zmq());
    assert_ptr_equal(wr_transport_for("inproc://x", err), wr_transport_zmq());
    assert_null(wr_transport_for("udp://x:1", err));
    assert_non_null(strstr(err, "unknown scheme 'udp'"));
    assert_null(wr_transport_for("localhost:5555", err));
    assert_non_null(strstr(err, "no scheme"));
    assert_null(wr_transport_for("", err));
    assert_null(wr_transport_for(NULL, err));
    wr_transport_ctx *ctx = wr_transport_ctx_new(1, err);
    wr_endpoint *ep = (wr_endpoint *)1;
    assert_int_equal(wr_bind(ctx, "rdma://0.0.0.0:1", NULL, &ep, err), WR_ERR);
    assert_null(ep);
    assert_int_equal(wr_connect(ctx, "rdma://h:1", NULL, &ep, err), WR_ERR);
    assert_non_null(strstr(err, "use tcp://"));  // no device here, or no RDMA build (test_transport_rdma.c)
    wr_transport_ctx_free(ctx);
}

static void test_bind_errors(void **state) {
    (void)state;
    char err[WR_ERR_LEN], a[256];
    wr_transport_ctx *ctx = wr_transport_ctx_new(1, err);
    wr_endpoint *e1, *e2;
    assert_int_equal(wr_bind(ctx, "tcp://127.0.0.1:0", NULL, &e1, err), WR_OK);
    assert_int_equal(wr_last_endpoint(e1, a, sizeof a), WR_OK);
    assert_int_equal(wr_bind(ctx, a, NULL, &e2, err), WR_ERR);
    assert_non_null(strstr(err, "in use"));
    assert_null(e2);
    assert_int_equal(wr_bind(ctx, "tcp://no-such-host-or-iface:1", NULL, &e2, err), WR_ERR);
    assert_non_null(strstr(err, "bind tcp://no-such-host-or-iface:1"));
    assert_int_equal(wr_bind(ctx, "tcp://127.0.0.1:notaport", NULL, &e2, err), WR_ERR);
    wr_close(e1);
    wr_close(NULL);
    wr_transport_ctx_free(ctx);
}

// Header + zero-copy payload both ways; the free callback runs exactly once.
static void roundtrip(int kind) {
    pair_t p;
    pair_open(&p, kind, NULL);
    char err[WR_ERR_LEN];
    atomic_int freed = 0;
    static uint8_t payload[100000];
    for (size_t i = 0; i < sizeof payload; i++) payload[i] = (uint8_t)(i * 31 + 7);
    const char hdr[] = "header-bytes";
    wr_msg m = {0};
    m.header = (wr_frame){(void *)hdr, sizeof hdr, NULL, NULL};
    m.payload = (wr_frame){payload, sizeof payload, count_free, &freed};
    assert_int_equal(wr_send(p.cli, &m, 5000, err), WR_OK);

    wr_msg r = {0};
    recv_ok(p.srv, &r);
    assert_int_equal(r.header.len, sizeof hdr);
    assert_memory_equal(r.header.data, hdr, sizeof hdr);
    assert_int_equal(r.payload.len, sizeof payload);
    assert_memory_equal(r.payload.data, payload, sizeof payload);
    assert_true(r.peer_len > 0 && r.peer_len <= WR_PEER_ID_MAX);
    wr_peer_info who;
    assert_int_equal(wr_msg_peer_info(&r, &who), WR_OK);
    if (kind == K_TCP) assert_string_equal(who.addr, "127.0.0.1");
    if (kind == K_IPC) assert_true(!strncmp(who.addr, "localhost:", 10));  // uid:gid:pid follow
    if (kind == K_INPROC) assert_string_equal(who.addr, "");
    assert_string_equal(who.user, "");  // no keys: nobody authenticated

    // reply to that peer by id, header only, then header + copied payload
    wr_msg s = {0};
    memcpy(s.peer, r.peer, r.peer_len);
    s.peer_len = r.peer_len;
    s.header = (wr_frame){"ack", 3, NULL, NULL};
    assert_int_equal(wr_send(p.srv, &s, 5000, err), WR_OK);
    s.payload = (wr_frame){payload, 4096, NULL, NULL};
    assert_int_equal(wr_send(p.srv, &s, 5000, err), WR_OK);
    wr_msg_release(&r);
    wr_msg_release(&r);  // idempotent
    assert_null(r.impl);
    assert_int_equal(wr_msg_peer_info(&r, &who), WR_ERR);  // released: nothing to say
    assert_string_equal(who.addr, "");

    wr_msg c = {0};
    recv_ok(p.cli, &c);
    assert_int_equal(c.header.len, 3);
    assert_memory_equal(c.header.data, "ack", 3);
    assert_int_equal(c.payload.len, 0);
    assert_null(c.payload.data);
    wr_msg_release(&c);
    recv_ok(p.cli, &c);
    assert_int_equal(c.payload.len, 4096);
    assert_memory_equal(c.payload.data, payload, 4096);
    wr_msg_release(&c);

    assert_int_equal(wait_count(&freed, 1), 1);
    pair_close(&p);
    assert_int_equal(atomic_load(&freed), 1);  // exactly once, also after close
}

static void test_roundtrip_inproc(void **state) {
    (void)state;
    roundtrip(K_INPROC);
}
static void test_roundtrip_ipc(void **state) {
    (void)state;
    roundtrip(K_IPC);
}
static void test_roundtrip_tcp(void **state) {
    (void)state;
    roundtrip(K_TCP);
}

static void test_recv_timeout(void **state) {
    (void)state;
    for (int k = 0; k < K_COUNT; k++) {
        pair_t p;
        pair_open(&p, k, NULL);
        char err[WR_ERR_LEN];
        wr_msg m = {0};
        assert_int_equal(wr_recv(p.srv, &m, 0, err), WR_ETIMEDOUT);
        assert_int_equal(wr_recv(p.srv, &m, 30, err), WR_ETIMEDOUT);
        assert_int_equal(wr_recv(p.cli, &m, 30, err), WR_ETIMEDOUT);
        assert_non_null(strstr(err, "nothing within"));
        assert_null(m.impl);
        pair_close(&p);
    }
}

// A peer that never appears: recv times out, sends queue up to the HWM and
// then time out; every zero-copy payload is given back exactly once.
static void test_no_peer_hwm(void **state) {
    (void)state;
    char err[WR_ERR_LEN], a[256];
    wr_transport_ctx *ctx = wr_transport_ctx_new(1, err);
    wr_endpoint_opts o;
    wr_endpoint_opts_default(&o);
    o.sndhwm = 2;
    o.linger_ms = 0;
    o.connect_timeout_ms = 200;
    wr_endpoint *cli;
    // Nobody listens at this path. (Not a just-freed tcp port: a connect to an
    // unused port in the ephemeral range can connect the socket to itself.)
    snprintf(a, sizeof a, "ipc://%s/nobody-here", tmpdir);
    assert_int_equal(wr_connect(ctx, a, &o, &cli, err), WR_OK);
    atomic_int freed = 0;
    static uint8_t buf[1024];
    int sent = 0, rc = WR_OK;
    for (int i = 0; i < 50 && rc == WR_OK; i++) {
        wr_msg m = {0};
        m.header = (wr_frame){"h", 1, NULL, NULL};
        m.payload = (wr_frame){buf, sizeof buf, count_free, &freed};
        rc = wr_send(cli, &m, 20, err);
        sent++;
    }
    assert_int_equal(rc, WR_ETIMEDOUT);
    assert_true(sent >= 2 && sent < 50);
    assert_true(atomic_load(&freed) >= 1);  // the refused one at least, at once
    wr_msg r = {0};
    assert_int_equal(wr_recv(cli, &r, 50, err), WR_ETIMEDOUT);
    wr_close(cli);
    wr_transport_ctx_free(ctx);  // drops the queued ones (linger 0)
    assert_int_equal(atomic_load(&freed), sent);
}

static void test_router_by_id_and_unknown_peer(void **state) {
    (void)state;
    for (int k = 0; k < K_COUNT; k++) {
        pair_t p;
        pair_open(&p, k, NULL);
        char err[WR_ERR_LEN];
        wr_endpoint *cli2;
        assert_int_equal(wr_connect(p.ctx, p.addr, NULL, &cli2, err), WR_OK);
        wr_msg m = {0};
        m.header = (wr_frame){"one", 3, NULL, NULL};
        assert_int_equal(wr_send(p.cli, &m, 5000, err), WR_OK);
        m.header = (wr_frame){"two", 3, NULL, NULL};
        assert_int_equal(wr_send(cli2, &m, 5000, err), WR_OK);
        wr_msg a = {0}, b = {0};
        recv_ok(p.srv, &a);
        recv_ok(p.srv, &b);
        assert_true(a.peer_len != b.peer_len || memcmp(a.peer, b.peer, a.peer_len) != 0);
        // reply to each with its own text: "re:" + what it sent
        wr_msg *in[2] = {&a, &b};
        for (int i = 0; i < 2; i++) {
            wr_msg s = {0};
            char txt[8];
            snprintf(txt, sizeof txt, "re:%.3s", (const char *)in[i]->header.data);
            memcpy(s.peer, in[i]->peer, in[i]->peer_len);
            s.peer_len = in[i]->peer_len;
            s.header = (wr_frame){txt, 6, NULL, NULL};
            assert_int_equal(wr_send(p.srv, &s, 5000, err), WR_OK);
            wr_msg_release(in[i]);
        }
        wr_msg r = {0};
        recv_ok(p.cli, &r);
        assert_memory_equal(r.header.data, "re:one", 6);
        wr_msg_release(&r);
        recv_ok(cli2, &r);
        assert_memory_equal(r.header.data, "re:two", 6);
        wr_msg_release(&r);

        // an unknown peer id: WR_ECLOSED, and the payload given back at once
        atomic_int freed = 0;
        static uint8_t buf[64];
        wr_msg s = {0};
        memcpy(s.peer, "\x00nobody", 7);
        s.peer_len = 7;
        s.header = (wr_frame){"x", 1, NULL, NULL};
        s.payload = (wr_frame){buf, sizeof buf, count_free, &freed};
        assert_int_equal(wr_send(p.srv, &s, 1000, err), WR_ECLOSED);
        assert_non_null(strstr(err, "unknown or gone"));
        assert_int_equal(atomic_load(&freed), 1);
        // no peer id at all on a bound endpoint
        s.peer_len = 0;
        s.payload = (wr_frame){buf, sizeof buf, count_free, &freed};
        assert_int_equal(wr_send(p.srv, &s, 1000, err), WR_ERR);
        assert_int_equal(atomic_load(&freed), 2);
        wr_close(cli2);
        pair_close(&p);
    }
}

// A peer that goes away: the connected side's recv (before its timeout),
// poll and send say WR_ECLOSED; the bound side's send to it says WR_ECLOSED.
static void test_peer_gone(void **state) {
    (void)state;
    for (int k = K_IPC; k <= K_TCP; k++) {
        pair_t p;
        pair_open(&p, k, NULL);
        char err[WR_ERR_LEN];
        wr_msg m = {0}, r = {0};
        m.header = (wr_frame){"hi", 2, NULL, NULL};
        assert_int_equal(wr_send(p.cli, &m, 5000, err), WR_OK);
        recv_ok(p.srv, &r);
        wr_msg s = {0};
        memcpy(s.peer, r.peer, r.peer_len);
        s.peer_len = r.peer_len;
        wr_msg_release(&r);
        // the client goes away: sends to it fail once the server noticed
        wr_endpoint *cli2;
        assert_int_equal(wr_connect(p.ctx, p.addr, NULL, &cli2, err), WR_OK);
        wr_close(p.cli);
        p.cli = cli2;
        s.header = (wr_frame){"late", 4, NULL, NULL};
        int rc = WR_OK;
        for (int i = 0; i < 500 && rc == WR_OK; i++) {
            rc = wr_send(p.srv, &s, 100, err);
            if (rc == WR_OK) usleep(10000);
        }
        assert_int_equal(rc, WR_ECLOSED);
        // make sure cli2 is connected, then the server goes away
        assert_int_equal(wr_send(cli2, &m, 5000, err), WR_OK);
        recv_ok(p.srv, &r);
        wr_msg_release(&r);
        wr_close(p.srv);
        p.srv = NULL;
        // (a generous timeout rather than -1 so that a bug fails instead of hanging:
        // WR_ECLOSED, not WR_ETIMEDOUT, is what shows the loss was noticed)
        rc = wr_recv(cli2, &r, 30000, err);
        assert_int_equal(rc, WR_ECLOSED);
        assert_non_null(strstr(err, "connection lost"));
        int ready = 0;
        assert_int_equal(wr_poll(&cli2, 1, &ready, -1, err), 1);  // poll notices too
        assert_int_equal(ready, 1);
        assert_int_equal(wr_send(cli2, &m, -1, err), WR_ECLOSED);
        pair_close(&p);
    }
}

// A peer that hangs (stopped, connection still open): ZMTP heartbeats notice
// it and the connected side's recv says WR_ECLOSED instead of waiting forever.
// The peer is a forked child (no ZeroMQ threads exist in this process while
// forking: every earlier test freed its context).
static void test_peer_hangs_heartbeat(void **state) {
    (void)state;
    for (int k = K_IPC; k <= K_TCP; k++) {
        char a[256], err[WR_ERR_LEN];
        int pfd[2];
        assert_int_equal(pipe(pfd), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {  // child: an echo server on a fresh context
            close(pfd[0]);
            wr_transport_ctx *c = wr_transport_ctx_new(1, err);
            wr_endpoint *srv;
            make_addr(k, a, sizeof a);
            if (!c || wr_bind(c, a, NULL, &srv, err) != WR_OK) _exit(3);
            wr_last_endpoint(srv, a, sizeof a);
            if (write(pfd[1], a, sizeof a) != (ssize_t)sizeof a) _exit(4);
            for (;;) {
                wr_msg m = {0};
                if (wr_recv(srv, &m, 10000, err) != WR_OK) _exit(0);
                wr_msg r = {0};
                memcpy(r.peer, m.peer, m.peer_len);
                r.peer_len = m.peer_len;
                r.header = (wr_frame){"pong", 4, NULL, NULL};
                wr_send(srv, &r, 1000, err);
                wr_msg_release(&m);
            }
        }
        close(pfd[1]);
        assert_int_equal(read(pfd[0], a, sizeof a), (ssize_t)sizeof a);
        close(pfd[0]);
        wr_transport_ctx *ctx = wr_transport_ctx_new(1, err);
        wr_endpoint_opts o;
        wr_endpoint_opts_default(&o);
        o.heartbeat_ms = 100;  // dead within ~300 ms
        o.linger_ms = 0;
        wr_endpoint *cli;
        assert_int_equal(wr_connect(ctx, a, &o, &cli, err), WR_OK);
        wr_msg m = {0};
        m.header = (wr_frame){"ping", 4, NULL, NULL};
        assert_int_equal(wr_send(cli, &m, 5000, err), WR_OK);
        recv_ok(cli, &m);
        assert_memory_equal(m.header.data, "pong", 4);
        wr_msg_release(&m);
        kill(pid, SIGSTOP);  // alive, connected, silent
        int rc = wr_recv(cli, &m, 30000, err);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        if (rc != WR_ECLOSED)
            fail_msg("%s: recv from a hung peer gave %d (%s), want WR_ECLOSED", kind_name[k], rc, err);
        wr_close(cli);
        wr_transport_ctx_free(ctx);
    }
}

// ---- the connection heartbeat's timeout (heartbeat_timeout_ms) -------------------------
// The coordinator PINGs with the job's interval and timeout; nodes connect
// with heartbeats off. A forked child plays the paused process (SIGSTOP), as
// in test_peer_hangs_heartbeat; the parent forks before it makes any ZeroMQ
// context. Interval 100 ms, timeout 1500 ms: the default timeout (3 x 100 ms)
// would drop the connection within ~0.4 s.
#define HB_IVL_MS 100
#define HB_TIMEOUT_MS 1500

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void hb_opts(wr_endpoint_opts *o, int on) {
    wr_endpoint_opts_default(o);
    o->linger_ms = 0;
    o->heartbeat_ms = on ? HB_IVL_MS : 0;
    o->heartbeat_timeout_ms = on ? HB_TIMEOUT_MS : 0;
    o->peer_events = on;
}

// Child: answers every message with "pong" until nothing comes for 10 s.
static void echo_loop(wr_endpoint *ep) {
    char err[WR_ERR_LEN];
    for (;;) {
        wr_msg m = {0};
        if (wr_recv(ep, &m, 10000, err) != WR_OK) _exit(0);
        wr_msg r = {0};
        memcpy(r.peer, m.peer, m.peer_len);
        r.peer_len = m.peer_len;
        r.header = (wr_frame){"pong", 4, NULL, NULL};
        wr_send(ep, &r, 1000, err);
        wr_msg_release(&m);
    }
}

// Sends "ping" (to peer id `peer` on a bound endpoint) and expects "pong".
static void ping_pong(wr_endpoint *ep, const wr_msg *peer) {
    char err[WR_ERR_LEN];
    wr_msg m = {0};
    if (peer) memcpy(m.peer, peer->peer, peer->peer_len), m.peer_len = peer->peer_len;
    m.header = (wr_frame){"ping", 4, NULL, NULL};
    if (wr_send(ep, &m, 5000, err) != WR_OK) fail_msg("send ping: %s", err);
    wr_msg r = {0};
    recv_ok(ep, &r);
    assert_memory_equal(r.header.data, "pong", 4);
    wr_msg_release(&r);
}

static void stop_for_ms(pid_t pid, int ms) {
    kill(pid, SIGSTOP);
    usleep((useconds_t)ms * 1000);
    kill(pid, SIGCONT);
}

// Connections closed on a bound endpoint with peer_events since the last call.
static unsigned long closed_since(wr_endpoint *ep) {
    unsigned long a, c;
    assert_int_equal(wr_peer_events(ep, &a, &c), WR_OK);
    return c;
}

// The bound side judges: a DEALER with heartbeats off answers the ROUTER's
// PINGs (the connection outlives the timeout while idle), a pause of half
// the timeout keeps the connection, and a longer one drops it after the
// timeout (not after 3 intervals).
static void test_heartbeat_timeout_bound(void **state) {
    (void)state;
    char a[256], err[WR_ERR_LEN];
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {  // child: a node's DEALER, heartbeats off
        close(pfd[1]);
        if (read(pfd[0], a, sizeof a) != (ssize_t)sizeof a) _exit(4);
        wr_transport_ctx *c = wr_transport_ctx_new(1, err);
        wr_endpoint_opts o;
        hb_opts(&o, 0);
        wr_endpoint *cli;
        if (!c || wr_connect(c, a, &o, &cli, err) != WR_OK) _exit(3);
        wr_msg m = {0};
        m.header = (wr_frame){"hello", 5, NULL, NULL};
        if (wr_send(cli, &m, 5000, err) != WR_OK) _exit(5);
        echo_loop(cli);
    }
    close(pfd[0]);
    wr_transport_ctx *ctx = wr_transport_ctx_new(1, err);
    wr_endpoint_opts o;
    hb_opts(&o, 1);
    wr_endpoint *srv;
    assert_int_equal(wr_bind(ctx, "tcp://127.0.0.1:0", &o, &srv, err), WR_OK);
    wr_last_endpoint(srv, a, sizeof a);
    assert_int_equal(write(pfd[1], a, sizeof a), (ssize_t)sizeof a);
    close(pfd[1]);
    wr_msg hello = {0};
    recv_ok(srv, &hello);
    usleep(2 * HB_TIMEOUT_MS * 1000);  // idle beyond the timeout: PONGs keep it
    ping_pong(srv, &hello);
    stop_for_ms(pid, HB_TIMEOUT_MS / 2);
    ping_pong(srv, &hello);
    assert_int_equal(closed_since(srv), 0);
    kill(pid, SIGSTOP);
    double t0 = now_s(), dt = -1;
    for (int i = 0; i < 15000 && dt < 0; i++) {
        int ready;
        wr_poll(&srv, 1, &ready, 1, err);
        if (closed_since(srv) > 0) dt = now_s() - t0;
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    wr_msg_release(&hello);
    wr_close(srv);
    wr_transport_ctx_free(ctx);
    print_message("    paused DEALER dropped after %.2f s (interval %d ms, timeout %d ms)\n", dt, HB_IVL_MS,
                  HB_TIMEOUT_MS);
    if (dt < 0) fail_msg("the paused peer's connection was not dropped within 15 s");
    if (dt < 0.8 * HB_TIMEOUT_MS * 1e-3) fail_msg("dropped after %.2f s: before the timeout", dt);
}

// The connected side: a DEALER with heartbeats off still keeps the TTL the
// ROUTER's PINGs carry (timeout + interval): a ROUTER paused for half the
// timeout keeps the connection, a longer pause ends it (WR_ECLOSED) after
// about the timeout. libzmq 4.3.4 arms the TTL timer on a PING and cancels
// it on any later message, so the TTL holds only when the last thing that
// arrived before the pause was a PING: the test waits a few intervals after
// its last "pong" (docs/PROTOCOL.md, "Transport").
static void test_heartbeat_ttl_connected(void **state) {
    (void)state;
    char a[256], err[WR_ERR_LEN];
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {  // child: the coordinator's ROUTER with the job's heartbeat
        close(pfd[0]);
        wr_transport_ctx *c = wr_transport_ctx_new(1, err);
        wr_endpoint_opts o;
        hb_opts(&o, 1);
        o.peer_events = 0;
        wr_endpoint *srv;
        if (!c || wr_bind(c, "tcp://127.0.0.1:0", &o, &srv, err) != WR_OK) _exit(3);
        wr_last_endpoint(srv, a, sizeof a);
        if (write(pfd[1], a, sizeof a) != (ssize_t)sizeof a) _exit(4);
        echo_loop(srv);
    }
    close(pfd[1]);
    assert_int_equal(read(pfd[0], a, sizeof a), (ssize_t)sizeof a);
    close(pfd[0]);
    wr_transport_ctx *ctx = wr_transport_ctx_new(1, err);
    wr_endpoint_opts o;
    hb_opts(&o, 0);
    wr_endpoint *cli;
    assert_int_equal(wr_connect(ctx, a, &o, &cli, err), WR_OK);
    ping_pong(cli, NULL);
    stop_for_ms(pid, HB_TIMEOUT_MS / 2);
    ping_pong(cli, NULL);
    usleep(3 * HB_IVL_MS * 1000);  // PINGs after the pong
    kill(pid, SIGSTOP);
    double t0 = now_s();
    wr_msg m = {0};
    int rc = wr_recv(cli, &m, 15000, err);
    double dt = now_s() - t0;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    wr_close(cli);
    wr_transport_ctx_free(ctx);
    print_message("    paused ROUTER dropped after %.2f s (TTL %d ms)\n", dt, HB_TIMEOUT_MS + HB_IVL_MS);
    if (rc != WR_ECLOSED) fail_msg("recv from a paused ROUTER gave %d (%s), want WR_ECLOSED", rc, err);
    if (dt < 0.8 * HB_TIMEOUT_MS * 1e-3) fail_msg("dropped after %.2f s: before the timeout", dt);
}

static void test_heartbeat_opts(void **state) {
    (void)state;
    wr_endpoint_opts o;
    wr_endpoint_opts_default(&o);
    assert_int_equal(o.heartbeat_timeout_ms, 0);  // 3 x heartbeat_ms
    o.heartbeat_ms = 1;
    o.heartbeat_timeout_ms = 86400000;
    // Valid on a socket, including a timeout beyond the TTL's 65.5 s cap.
    char err[WR_ERR_LEN];
    wr_transport_ctx *ctx = wr_transport_ctx_new(1, err);
    wr_endpoint *ep;
    assert_int_equal(wr_bind(ctx, "tcp://127.0.0.1:0", &o, &ep, err), WR_OK);
    wr_close(ep);
    wr_transport_ctx_free(ctx);
}

static void test_poll_several(void **state) {
    (void)state;
    pair_t p[K_COUNT];
    char err[WR_ERR_LEN];
    for (int k = 0; k < K_COUNT; k++) pair_open(&p[k], k, NULL);
    // each pair has its own context; poll the servers of one context: use
    // three servers on the inproc pair's context instead
    wr_endpoint *srv[3], *cli[3];
    char a[256];
    for (int i = 0; i < 3; i++) {
        make_addr(i, a, sizeof a);
        assert_int_equal(wr_bind(p[0].ctx, a, NULL, &srv[i], err), WR_OK);
        wr_last_endpoint(srv[i], a, sizeof a);
        assert_int_equal(wr_connect(p[0].ctx, a, NULL, &cli[i], err), WR_OK);
    }
    int ready[3] = {9, 9, 9};
    assert_int_equal(wr_poll(srv, 3, ready, 20, err), 0);
    assert_true(!ready[0] && !ready[1] && !ready[2]);
    assert_int_equal(wr_poll(srv, 3, ready, 0, err), 0);
    wr_msg m = {0};
    m.header = (wr_frame){"p", 1, NULL, NULL};
    assert_int_equal(wr_send(cli[2], &m, 5000, err), WR_OK);
    assert_int_equal(wr_poll(srv, 3, ready, 5000, err), 1);
    assert_true(!ready[0] && !ready[1] && ready[2]);
    assert_int_equal(wr_send(cli[0], &m, 5000, err), WR_OK);
    // wait until both are ready
    int n = 0;
    for (int i = 0; i < 100 && n < 2; i++) n = wr_poll(srv, 3, ready, 100, err);
    assert_int_equal(n, 2);
    assert_true(ready[0] && !ready[1] && ready[2]);
    wr_msg r = {0};
    recv_ok(srv[0], &r);
    wr_msg_release(&r);
    recv_ok(srv[2], &r);
    wr_msg_release(&r);
    assert_int_equal(wr_poll(srv, 3, ready, 10, err), 0);
    // clients can be polled too
    assert_int_equal(wr_poll(cli, 3, ready, 10, err), 0);
    for (int i = 0; i < 3; i++) wr_close(cli[i]), wr_close(srv[i]);
    for (int k = 0; k < K_COUNT; k++) pair_close(&p[k]);
}

// Messages of three or more frames are dropped and reported; the stream stays in sync.
static void test_three_frames_rejected(void **state) {
    (void)state;
    for (int k = 0; k < K_COUNT; k++) {
        char err[WR_ERR_LEN], a[256];
        wr_transport_ctx *ctx = wr_transport_ctx_new(1, err);
        wr_endpoint *srv;
        make_addr(k, a, sizeof a);
        assert_int_equal(wr_bind(ctx, a, NULL, &srv, err), WR_OK);
        wr_last_endpoint(srv, a, sizeof a);
        void *raw = zmq_socket(wr_transport_ctx_zmq(ctx), ZMQ_DEALER);
        assert_int_equal(zmq_connect(raw, a), 0);
        assert_int_equal(zmq_send(raw, "h", 1, ZMQ_SNDMORE), 1);
        assert_int_equal(zmq_send(raw, "p", 1, ZMQ_SNDMORE), 1);
        assert_int_equal(zmq_send(raw, "x", 1, ZMQ_SNDMORE), 1);
        assert_int_equal(zmq_send(raw, "y", 1, 0), 1);
        assert_int_equal(zmq_send(raw, "ok", 2, 0), 2);
        wr_msg m = {0};
        assert_int_equal(wr_recv(srv, &m, 5000, err), WR_EPROTO);
        assert_non_null(strstr(err, "4 frames dropped"));
        assert_null(m.impl);
        recv_ok(srv, &m);
        assert_int_equal(m.header.len, 2);
        assert_memory_equal(m.header.data, "ok", 2);
        wr_msg_release(&m);
        // a routing id longer than WR_PEER_ID_MAX: dropped and reported
        void *longid = zmq_socket(wr_transport_ctx_zmq(ctx), ZMQ_DEALER);
        char rid[40];
        memset(rid, 'R', sizeof rid);
        assert_int_equal(zmq_setsockopt(longid, ZMQ_ROUTING_ID, rid, sizeof rid), 0);
        assert_int_equal(zmq_connect(longid, a), 0);
        assert_int_equal(zmq_send(longid, "hdr", 3, 0), 3);
        assert_int_equal(wr_recv(srv, &m, 5000, err), WR_EPROTO);
        assert_non_null(strstr(err, "peer id longer"));
        assert_int_equal(m.peer_len, 0);
        int zero0 = 0;
        zmq_setsockopt(longid, ZMQ_LINGER, &zero0, sizeof zero0);
        zmq_close(longid);
        // the other direction: a bound raw ROUTER sends three frames to our DEALER
        uint8_t id[256];
        int zero = 0;
        zmq_setsockopt(raw, ZMQ_LINGER, &zero, sizeof zero);
        zmq_close(raw);

        void *rr = zmq_socket(wr_transport_ctx_zmq(ctx), ZMQ_ROUTER);
        make_addr(k, a, sizeof a);
        assert_int_equal(zmq_bind(rr, a), 0);
        size_t alen = sizeof a;
        zmq_getsockopt(rr, ZMQ_LAST_ENDPOINT, a, &alen);
        wr_endpoint *cli;
        assert_int_equal(wr_connect(ctx, a, NULL, &cli, err), WR_OK);
        wr_msg s = {0};
        s.header = (wr_frame){"hello", 5, NULL, NULL};
        assert_int_equal(wr_send(cli, &s, 5000, err), WR_OK);
        int n = zmq_recv(rr, id, sizeof id, 0);
        assert_true(n > 0);
        char tmp[16];
        assert_int_equal(zmq_recv(rr, tmp, sizeof tmp, 0), 5);
        assert_int_equal(zmq_send(rr, id, (size_t)n, ZMQ_SNDMORE), n);
        zmq_send(rr, "a", 1, ZMQ_SNDMORE);
        zmq_send(rr, "b", 1, ZMQ_SNDMORE);
        zmq_send(rr, "c", 1, 0);
        assert_int_equal(wr_recv(cli, &m, 5000, err), WR_EPROTO);
        assert_non_null(strstr(err, "3 frames"));
        zmq_setsockopt(rr, ZMQ_LINGER, &zero, sizeof zero);
        zmq_close(rr);
        wr_close(cli);
        wr_close(srv);
        wr_transport_ctx_free(ctx);
    }
}

static uint64_t fnv(const uint8_t *p, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

static void test_large_payload(void **state) {
    (void)state;
    size_t n = (quick() ? 16u : 64u) << 20;
    uint8_t *buf = malloc(n);
    uint64_t x = 88172645463325252ULL;
    for (size_t i = 0; i < n; i += 8) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        memcpy(buf + i, &x, 8);
    }
    uint64_t want = fnv(buf, n);
    for (int k = K_IPC; k <= K_TCP; k++) {
        pair_t p;
        pair_open(&p, k, NULL);
        char err[WR_ERR_LEN];
        atomic_int freed = 0;
        wr_msg m = {0};
        m.header = (wr_frame){"big", 3, NULL, NULL};
        m.payload = (wr_frame){buf, n, count_free, &freed};
        assert_int_equal(wr_send(p.cli, &m, 10000, err), WR_OK);
        wr_msg r = {0};
        assert_int_equal(wr_recv(p.srv, &r, 30000, err), WR_OK);
        assert_int_equal(r.payload.len, n);
        assert_true(fnv(r.payload.data, r.payload.len) == want);
        assert_ptr_not_equal(r.payload.data, buf);
        wr_msg_release(&r);
        assert_int_equal(wait_count(&freed, 1), 1);
        pair_close(&p);
    }
    free(buf);
}

// A frame beyond max_msg_size is refused by the sender (payload given back).
static void test_max_msg_size(void **state) {
    (void)state;
    wr_endpoint_opts o;
    wr_endpoint_opts_default(&o);
    o.max_msg_size = 1000;
    pair_t p;
    pair_open(&p, K_TCP, &o);
    char err[WR_ERR_LEN];
    static uint8_t buf[2000];
    atomic_int freed = 0;
    wr_msg m = {0};
    m.header = (wr_frame){"h", 1, NULL, NULL};
    m.payload = (wr_frame){buf, sizeof buf, count_free, &freed};
    assert_int_equal(wr_send(p.cli, &m, 1000, err), WR_ERR);
    assert_non_null(strstr(err, "max_msg_size"));
    assert_int_equal(atomic_load(&freed), 1);
    m.payload = (wr_frame){buf, 1000, count_free, &freed};
    assert_int_equal(wr_send(p.cli, &m, 1000, err), WR_OK);
    wr_msg r = {0};
    recv_ok(p.srv, &r);
    assert_int_equal(r.payload.len, 1000);
    wr_msg_release(&r);
    pair_close(&p);
    assert_int_equal(atomic_load(&freed), 2);
}

// wr_poll takes any number of endpoints (a worker polls one per shard, up to
// WR_MAX_SHARDS = 1024; the stack array covers 64): 300 inproc DEALERs, the
// ROUTER answers one of them, poll finds exactly that one.
static void test_poll_many(void **state) {
    (void)state;
    enum { N = 300 };
    char err[WR_ERR_LEN], a[256];
    wr_transport_ctx *ctx = wr_transport_ctx_new(1, err);
    assert_non_null(ctx);
    make_addr(K_INPROC, a, sizeof a);
    wr_endpoint *srv;
    assert_int_equal(wr_bind(ctx, a, NULL, &srv, err), WR_OK);
    wr_endpoint **cli = calloc(N, sizeof *cli);
    int *ready = calloc(N, sizeof *ready);
    for (int i = 0; i < N; i++) {
        assert_int_equal(wr_connect(ctx, a, NULL, &cli[i], err), WR_OK);
        char id[16];
        snprintf(id, sizeof id, "%d", i);
        wr_msg m = {0};
        m.header = (wr_frame){id, strlen(id) + 1, NULL, NULL};
        assert_int_equal(wr_send(cli[i], &m, 5000, err), WR_OK);
    }
    assert_int_equal(wr_poll(cli, N, ready, 10, err), 0);
    for (int i = 0; i < N; i++) {
        wr_msg r = {0};
        recv_ok(srv, &r);
        if (atoi((const char *)r.header.data) == 290) {
            wr_msg m = {0};
            memcpy(m.peer, r.peer, r.peer_len);
            m.peer_len = r.peer_len;
            m.header = (wr_frame){"x", 1, NULL, NULL};
            assert_int_equal(wr_send(srv, &m, 5000, err), WR_OK);
        }
        wr_msg_release(&r);
    }
    assert_int_equal(wr_poll(cli, N, ready, 5000, err), 1);
    for (int i = 0; i < N; i++) assert_int_equal(ready[i], i == 290);
    // the 64-entry stack path still works and sees nothing
    assert_int_equal(wr_poll(cli, 64, ready, 0, err), 0);
    assert_true(wr_poll(cli, 0, ready, 0, err) < 0);
    for (int i = 0; i < N; i++) wr_close(cli[i]);
    wr_close(srv);
    wr_transport_ctx_free(ctx);
    free(cli);
    free(ready);
}

// A bound endpoint opened with peer_events counts connections accepted and
// closed (the shard logs a worker's dropped connection from this); without
// the option, and on connected endpoints, wr_peer_events says WR_ERR.
static void test_peer_events(void **state) {
    (void)state;
    for (int k = K_IPC; k < K_COUNT; k++) {
        wr_endpoint_opts o;
        wr_endpoint_opts_default(&o);
        o.peer_events = 1;
        pair_t p;
        pair_open(&p, k, &o);
        char err[WR_ERR_LEN];
        wr_msg m = {0};
        m.header = (wr_frame){"h", 1, NULL, NULL};
        assert_int_equal(wr_send(p.cli, &m, 5000, err), WR_OK);
        wr_msg r = {0};
        recv_ok(p.srv, &r);
        wr_msg_release(&r);
        unsigned long acc = 0, closed = 0, a1, c1;
        for (int i = 0; i < 5000 && acc < 1; i++) {
            assert_int_equal(wr_peer_events(p.srv, &a1, &c1), WR_OK);
            acc += a1, closed += c1;
            if (acc < 1) usleep(1000);
        }
        assert_int_equal(acc, 1);
        assert_int_equal(closed, 0);
        wr_close(p.cli);
        p.cli = NULL;
        int ready = 0;
        for (int i = 0; i < 5000 && closed < 1; i++) {
            wr_poll(&p.srv, 1, &ready, 1, err);  // poll collects the events too
            assert_int_equal(wr_peer_events(p.srv, &a1, &c1), WR_OK);
            acc += a1, closed += c1;
        }
        assert_int_equal(closed, 1);
        assert_int_equal(acc, 1);
        assert_int_equal(wr_peer_events(p.srv, &a1, &c1), WR_OK);  // reported once
        assert_int_equal(a1 + c1, 0);
        pair_close(&p);
        pair_open(&p, k, NULL);  // option off
        assert_int_equal(wr_peer_events(p.srv, &a1, &c1), WR_ERR);
        assert_int_equal(wr_peer_events(p.cli, &a1, &c1), WR_ERR);
        pair_close(&p);
    }
}

// wr_endpoint_reached: 0 while nobody listens at a connected endpoint's
// address, 1 once a connection completed (and still 1 after it dropped);
// -1 for bound and inproc endpoints.
static void test_reached(void **state) {
    (void)state;
    char err[WR_ERR_LEN];
    wr_transport_ctx *ctx = wr_transport_ctx_new(1, err);
    assert_non_null(ctx);
    for (int k = K_IPC; k < K_COUNT; k++) {
        // Addresses nobody listens at: a fresh ipc path (bound below, so the
        // reconnect finds it), tcp port 1 (not an ephemeral port: a connect
        // to one of those may meet itself).
        char addr[128];
        make_addr(k, addr, sizeof addr);
        if (k == K_TCP) snprintf(addr, sizeof addr, "tcp://127.0.0.1:1");
        wr_endpoint *cli = NULL, *srv = NULL;
        assert_int_equal(wr_connect(ctx, addr, NULL, &cli, err), WR_OK);
        usleep(50000);
        assert_int_equal(wr_endpoint_reached(cli), 0);
        wr_close(cli);
        if (k == K_TCP) make_addr(k, addr, sizeof addr);
        assert_int_equal(wr_bind(ctx, addr, NULL, &srv, err), WR_OK);
        assert_int_equal(wr_last_endpoint(srv, addr, sizeof addr), WR_OK);
        assert_int_equal(wr_connect(ctx, addr, NULL, &cli, err), WR_OK);
        int r = 0;
        for (int i = 0; i < 5000 && r != 1; i++) {
            r = wr_endpoint_reached(cli);
            if (r != 1) usleep(1000);
        }
        assert_int_equal(r, 1);
        assert_int_equal(wr_endpoint_reached(srv), -1);
        wr_close(srv);
        usleep(50000);
        assert_int_equal(wr_endpoint_reached(cli), 1);  // reached once: a lost connection is recv's to report
        wr_close(cli);
    }
    wr_transport_ctx_free(ctx);
    pair_t p;
    pair_open(&p, K_INPROC, NULL);
    assert_int_equal(wr_endpoint_reached(p.cli), -1);
    pair_close(&p);
    assert_int_equal(wr_endpoint_reached(NULL), -1);
}

static void test_defaults_and_malloc(void **state) {
    (void)state;
    wr_endpoint_opts o;
    wr_endpoint_opts_default(&o);
    assert_int_equal(o.sndhwm, 64);
    assert_int_equal(o.rcvhwm, 64);
    assert_int_equal(o.linger_ms, 1000);
    assert_int_equal(o.heartbeat_ms, 1000);
    assert_true(o.max_msg_size > (INT64_C(1) << 32));
    wr_transport_tune_malloc();
    wr_transport_tune_malloc();
    void *big = malloc(16 << 20);  // still works after tuning
    assert_non_null(big);
    free(big);
}

static int setup(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/wren-tt-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scheme_dispatch),
        cmocka_unit_test(test_bind_errors),
        cmocka_unit_test(test_roundtrip_inproc),
        cmocka_unit_test(test_roundtrip_ipc),
        cmocka_unit_test(test_roundtrip_tcp),
        cmocka_unit_test(test_recv_timeout),
        cmocka_unit_test(test_no_peer_hwm),
        cmocka_unit_test(test_router_by_id_and_unknown_peer),
        cmocka_unit_test(test_peer_gone),
        cmocka_unit_test(test_peer_hangs_heartbeat),
        cmocka_unit_test(test_heartbeat_timeout_bound),
        cmocka_unit_test(test_heartbeat_ttl_connected),
        cmocka_unit_test(test_heartbeat_opts),
        cmocka_unit_test(test_poll_several),
        cmocka_unit_test(test_three_frames_rejected),
        cmocka_unit_test(test_large_payload),
        cmocka_unit_test(test_max_msg_size),
        cmocka_unit_test(test_poll_many),
        cmocka_unit_test(test_peer_events),
        cmocka_unit_test(test_reached),
        cmocka_unit_test(test_defaults_and_malloc),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
