// test_transport_rdma.c — the RDMA transport (common/transport_rdma.c).
//
// On any host: rdma:// fails at once with a message naming tcp:// when there
// is no RDMA device (or no RDMA build), and the handshake codec refuses bad
// sizes, versions and fields. With a device (inside the Soft-RoCE VM, `make
// test-rdma`: WR_RDMA_ADDR set): round trips both ways, a message several
// times the ring, credits with a slow receiver, several clients by peer id, a
// peer that exits, a mixed zmq + rdma wr_poll, a malformed handshake on the
// side channel, a side channel that never answers, CURVE on the side
// channel, a wrong device or GID index, and a memlock limit too low. Without WR_RDMA_ADDR the device
// tests are reported as skipped (they must not pass silently).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/capability.h>
#include <zmq.h>

#include "bindaddr.h"
#include "transport.h"
#ifdef WR_HAVE_RDMA
#include "transport_rdma.h"
#endif

static const char *dev_addr(void) { return getenv("WR_RDMA_ADDR"); }

static void test_no_device(void **state) {
    (void)state;
    if (dev_addr()) skip();  // a device is there: the VM
    char err[WR_ERR_LEN];
    wr_transport_ctx *ctx = wr_transport_ctx_new(1, err);
    wr_endpoint *ep = (wr_endpoint *)1;
    assert_int_equal(wr_bind(ctx, "rdma://127.0.0.1:17001", NULL, &ep, err), WR_ERR);
    assert_null(ep);
#ifdef WR_HAVE_RDMA
    assert_non_null(strstr(err, "rdma://127.0.0.1:17001: no RDMA device"));
    assert_non_null(strstr(err, "rdma_rxe"));
    assert_non_null(strstr(err, "use tcp://127.0.0.1:17001 instead"));
#else
    assert_non_null(strstr(err, "this build has no RDMA transport"));
    assert_non_null(strstr(err, "use tcp://"));
#endif
    assert_int_equal(wr_connect(ctx, "rdma://10.1.2.3:7000", NULL, &ep, err), WR_ERR);
    assert_non_null(strstr(err, "use tcp://"));
    wr_transport_ctx_free(ctx);
}

// rdma:// listens on a tcp side channel at the same host:port, so the
// loopback-only default without keys holds for it as for tcp://.
static void test_bind_policy(void **state) {
    (void)state;
    char out[128], note[WR_ERR_LEN], err[WR_ERR_LEN];
    assert_int_equal(wr_bind_policy("rdma://*:7000", 0, 0, "--bind", out, sizeof out, note, sizeof note, err),
                     WR_OK);
    assert_string_equal(out, "rdma://127.0.0.1:7000");
    assert_int_equal(
        wr_bind_policy("rdma://10.0.0.1:7000", 0, 0, "--bind", out, sizeof out, note, sizeof note, err),
        WR_ERR);
    assert_non_null(strstr(err, "--allow-insecure"));
    assert_int_equal(
        wr_bind_policy("rdma://10.0.0.1:7000", 1, 0, "--bind", out, sizeof out, note, sizeof note, err),
        WR_OK);
    assert_string_equal(out, "rdma://10.0.0.1:7000");
    assert_int_equal(
        wr_bind_policy("rdma://10.0.0.1:7000", 0, 1, "--bind", out, sizeof out, note, sizeof note, err),
        WR_OK);
    assert_non_null(strstr(note, "without keys"));
}

#ifdef WR_HAVE_RDMA
// Skips a device test on a host without WR_RDMA_ADDR (the reason printed).
static int need_device(void) {
    if (dev_addr() && *dev_addr()) return 1;
    print_message("skipped: WR_RDMA_ADDR unset (no RDMA device here; `make test-rdma` runs this "
                  "in the Soft-RoCE VM)\n");
    return 0;
}

static void test_handshake_codec(void **state) {
    (void)state;
    char err[WR_ERR_LEN];
    wr_rdma_hs h = {.type = WR_RDMA_HELLO,
                    .qpn = 17,
                    .psn = 99,
                    .lid = 3,
                    .mtu = 3,
                    .slots = 16,
                    .slot_bytes = 1 << 20,
                    .ring_addr = 0x7f0000001000ull,
                    .ring_rkey = 0xabcd};
    for (int i = 0; i < 16; i++) h.gid[i] = (uint8_t)i;
    uint8_t b[WR_RDMA_HS_LEN], b2[WR_RDMA_HS_LEN];
    wr_rdma_hs_encode(&h, b);
    wr_rdma_hs d;
    assert_int_equal(wr_rdma_hs_decode(b, sizeof b, &d, err), WR_OK);
    assert_int_equal(d.qpn, 17);
    assert_int_equal(d.slot_bytes, 1 << 20);
    assert_int_equal(d.ring_addr, 0x7f0000001000ull);
    assert_memory_equal(d.gid, h.gid, 16);
    assert_int_equal(wr_rdma_hs_decode(b, 10, &d, err), WR_EPROTO);
    assert_non_null(strstr(err, "handshake of 10 bytes (expected 64)"));
    memcpy(b2, b, sizeof b);
    b2[4] = 9;
    assert_int_equal(wr_rdma_hs_decode(b2, sizeof b2, &d, err), WR_EPROTO);
    assert_non_null(strstr(err, "version 9"));
    memcpy(b2, b, sizeof b), b2[0] = 'X';
    assert_int_equal(wr_rdma_hs_decode(b2, sizeof b2, &d, err), WR_EPROTO);
    assert_non_null(strstr(err, "magic"));
    wr_rdma_hs bad = h;
    bad.slots = 3;
    wr_rdma_hs_encode(&bad, b2);
    assert_int_equal(wr_rdma_hs_decode(b2, sizeof b2, &d, err), WR_EPROTO);
    assert_non_null(strstr(err, "3 ring slots"));
    bad = h, bad.slots = 4096, bad.slot_bytes = 64u << 20;  // 256 GiB of staging to pin
    wr_rdma_hs_encode(&bad, b2);
    assert_int_equal(wr_rdma_hs_decode(b2, sizeof b2, &d, err), WR_EPROTO);
    assert_non_null(strstr(err, "ring of 4096 x 67108864 bytes (at most 1024 MiB)"));
    bad = h, bad.slots = 1024, bad.slot_bytes = 1u << 20;  // exactly the cap
    wr_rdma_hs_encode(&bad, b2);
    assert_int_equal(wr_rdma_hs_decode(b2, sizeof b2, &d, err), WR_OK);
    bad = h, bad.slot_bytes = 4096 + 100;  // not whole pages
    wr_rdma_hs_encode(&bad, b2);
    assert_int_equal(wr_rdma_hs_decode(b2, sizeof b2, &d, err), WR_EPROTO);
    assert_non_null(strstr(err, "whole pages"));
    setenv("WREN_RDMA_SLOTS", "4096", 1);
    setenv("WREN_RDMA_SLOT_BYTES", "67108864", 1);
    uint32_t sl, sb;
    assert_int_equal(wr_rdma_ring_shape(&sl, &sb, err), WR_ERR);
    assert_non_null(strstr(err, "at most 1024 MiB"));
    unsetenv("WREN_RDMA_SLOTS");
    unsetenv("WREN_RDMA_SLOT_BYTES");
    bad = h, bad.qpn = 1u << 24;
    wr_rdma_hs_encode(&bad, b2);
    assert_int_equal(wr_rdma_hs_decode(b2, sizeof b2, &d, err), WR_EPROTO);
    bad = h, bad.type = 77;
    wr_rdma_hs_encode(&bad, b2);
    assert_int_equal(wr_rdma_hs_decode(b2, sizeof b2, &d, err), WR_EPROTO);
    assert_non_null(strstr(err, "type 77"));
}

// ---- with a device -----------------------------------------------------------------

static int port_seq = 17100;

typedef struct {
    wr_transport_ctx *ctx;
    wr_endpoint *srv, *cli;
    char addr[128];
} rpair;

// Pumps the bound side until the client's handshake is done (a single
// thread: the bound side answers HELLO only inside its own calls).
static void pump_until_up(wr_endpoint *srv, wr_endpoint *cli) {
    char err[WR_ERR_LEN];
    int ready;
    for (int i = 0; i < 1000 && wr_endpoint_reached(cli) != 1; i++) wr_poll(&srv, 1, &ready, 10, err);
    assert_int_equal(wr_endpoint_reached(cli), 1);
}

static void rpair_open(rpair *p) {
    char err[WR_ERR_LEN];
    p->ctx = wr_transport_ctx_new(1, err);
    snprintf(p->addr, sizeof p->addr, "rdma://%s:%d", dev_addr(), port_seq++);
    if (wr_bind(p->ctx, p->addr, NULL, &p->srv, err) != WR_OK) fail_msg("bind %s: %s", p->addr, err);
    if (wr_connect(p->ctx, p->addr, NULL, &p->cli, err) != WR_OK) fail_msg("connect %s: %s", p->addr, err);
    pump_until_up(p->srv, p->cli);
}

static void rpair_close(rpair *p) {
    wr_close(p->cli);
    wr_close(p->srv);
    wr_transport_ctx_free(p->ctx);
}

static void send_ok(wr_endpoint *ep, const uint8_t *peer, size_t peer_len, const void *h, size_t hl,
                    const void *pay, size_t pl) {
    char err[WR_ERR_LEN];
    wr_msg m = {0};
    if (peer_len) memcpy(m.peer, peer, peer_len), m.peer_len = peer_len;
    m.header = (wr_frame){.data = (void *)h, .len = hl};
    m.payload = (wr_frame){.data = (void *)pay, .len = pl};
    int rc = wr_send(ep, &m, 5000, err);
    if (rc != WR_OK) fail_msg("send: %d %s", rc, err);
}

static void recv_ok(wr_endpoint *ep, wr_msg *m) {
    char err[WR_ERR_LEN];
    int rc = wr_recv(ep, m, 10000, err);
    if (rc != WR_OK) fail_msg("recv: %d %s", rc, err);
}

static void test_roundtrip(void **state) {
    (void)state;
    if (!need_device()) skip();
    rpair p;
    rpair_open(&p);
    wr_msg m = {0};
    send_ok(p.cli, NULL, 0, "hdr-only", 8, NULL, 0);
    recv_ok(p.srv, &m);
    assert_int_equal(m.header.len, 8);
    assert_memory_equal(m.header.data, "hdr-only", 8);
    assert_int_equal(m.payload.len, 0);
    assert_true(m.peer_len > 0);
    uint8_t peer[WR_PEER_ID_MAX];
    size_t pl = m.peer_len;
    memcpy(peer, m.peer, pl);
    wr_msg_release(&m);
    float pay[1000];
    for (int i = 0; i < 1000; i++) pay[i] = (float)i * 0.5f;
    send_ok(p.srv, peer, pl, "H", 1, pay, sizeof pay);  // the other way, with a payload
    recv_ok(p.cli, &m);
    assert_int_equal(m.header.len, 1);
    assert_int_equal(m.payload.len, sizeof pay);
    assert_memory_equal(m.payload.data, pay, sizeof pay);
    assert_int_equal((uintptr_t)m.payload.data % 16, 0);
    wr_msg_release(&m);
    send_ok(p.cli, NULL, 0, "x", 1, pay, 12);
    recv_ok(p.srv, &m);
    assert_int_equal(m.payload.len, 12);
    wr_peer_info info;
    assert_int_equal(wr_msg_peer_info(&m, &info), WR_OK);
    assert_string_equal(info.addr, dev_addr());
    wr_msg_release(&m);
    uint64_t tx, rx;
    assert_int_equal(wr_endpoint_bytes(p.cli, &tx, &rx), WR_OK);
    assert_int_equal(tx, 8 + 1 + 12);
    assert_int_equal(rx, 1 + sizeof pay);
    rpair_close(&p);
}

typedef struct {
    wr_endpoint *ep;
    size_t n;
    int ok;
} big_rx;

static void *recv_big(void *arg) {
    big_rx *b = arg;
    char err[WR_ERR_LEN];
    wr_msg m = {0};
    if (wr_recv(b->ep, &m, 60000, err) != WR_OK) return NULL;
    const uint8_t *d = m.payload.data;
    b->ok = m.payload.len == b->n && m.header.len == 3;
    for (size_t i = 0; b->ok && i < b->n; i++) b->ok = d[i] == (uint8_t)(i * 7 + i / 4096);
    wr_msg_release(&m);
    return NULL;
}

// A message several times the ring (4 slots x 64 KiB): chunks reuse the ring
// as the receiver (another thread) gives slots back.
static void test_larger_than_ring(void **state) {
    (void)state;
    if (!need_device()) skip();
    setenv("WREN_RDMA_SLOTS", "4", 1);
    setenv("WREN_RDMA_SLOT_BYTES", "65536", 1);
    rpair p;
    rpair_open(&p);
    size_t n = 5 * 4 * 65536 + 123;
    uint8_t *pay = malloc(n);
    for (size_t i = 0; i < n; i++) pay[i] = (uint8_t)(i * 7 + i / 4096);
    big_rx b = {.ep = p.srv, .n = n};
    pthread_t t;
    pthread_create(&t, NULL, recv_big, &b);
    send_ok(p.cli, NULL, 0, "big", 3, pay, n);
    pthread_join(t, NULL);
    assert_true(b.ok);
    free(pay);
    rpair_close(&p);
    unsetenv("WREN_RDMA_SLOTS");
    unsetenv("WREN_RDMA_SLOT_BYTES");
}

// ---- a receiver in a child process (in one process a waiting thread moves
// the other endpoints on, so a receiver that holds back must be another one) --

// A 4 x 4 KiB ring (WREN_RDMA_* are read at bind and connect), or back to the default.
static void small_ring(int on) {
    if (on) {
        setenv("WREN_RDMA_SLOTS", "4", 1);
        setenv("WREN_RDMA_SLOT_BYTES", "4096", 1);
    } else {
        unsetenv("WREN_RDMA_SLOTS");
        unsetenv("WREN_RDMA_SLOT_BYTES");
    }
}

// Forks a child that binds addr (rcvhwm 0 = the default), takes one message,
// then exits with hold(srv) (the test's part: how it holds back, and its
// count of what it read after).
static pid_t fork_receiver(const char *addr, int rcvhwm, int (*hold)(wr_endpoint *srv)) {
    pid_t child = fork();
    if (child != 0) return child;
    char err[WR_ERR_LEN];
    wr_transport_ctx *ctx = wr_transport_ctx_new(1, err);
    wr_endpoint_opts o;
    wr_endpoint_opts_default(&o);
    if (rcvhwm) o.rcvhwm = rcvhwm;
    wr_endpoint *srv;
    wr_msg m = {0};
    if (wr_bind(ctx, addr, &o, &srv, err) != WR_OK || wr_recv(srv, &m, 20000, err) != WR_OK) _exit(200);
    wr_msg_release(&m);
    _exit(hold(srv));
}

// The messages srv holds, read until none comes within 3 s.
static int read_all(wr_endpoint *srv) {
    char err[WR_ERR_LEN];
    wr_msg m = {0};
    int n = 0;
    while (wr_recv(srv, &m, 3000, err) == WR_OK) n++, wr_msg_release(&m);
    return n;
}

// Sends 1000-byte messages to cli, each with `timeout_ms`, until one fails
// (its status in *rc, reason in err) or `max` went out; returns how many did.
static int send_until_refused(wr_endpoint *cli, int max, int timeout_ms, int *rc, char *err) {
    static uint8_t pay[1000];
    int sent = 0;
    *rc = WR_OK;
    while (sent < max) {
        wr_msg m = {.header = {.data = "c", .len = 1}, .payload = {.data = pay, .len = sizeof pay}};
        *rc = wr_send(cli, &m, timeout_ms, err);
        if (*rc != WR_OK) break;
        sent++;
    }
    return sent;
}

// The child's exit status once it ended.
static int child_status(pid_t child) {
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    return WEXITSTATUS(status);
}

// A client of a receiver child: a 4-slot ring, the child forked with rcvhwm
// and hold, connected, and its first message sent.
typedef struct {
    wr_transport_ctx *ctx;
    wr_endpoint *cli;
    pid_t child;
} rclient;

static void rclient_open(rclient *r, int rcvhwm, int (*hold)(wr_endpoint *srv)) {
    char addr[128], err[WR_ERR_LEN];
    small_ring(1);
    snprintf(addr, sizeof addr, "rdma://%s:%d", dev_addr(), port_seq++);
    r->child = fork_receiver(addr, rcvhwm, hold);
    r->ctx = wr_transport_ctx_new(1, err);
    assert_int_equal(wr_connect(r->ctx, addr, NULL, &r->cli, err), WR_OK);
    send_ok(r->cli, NULL, 0, "h", 1, NULL, 0);
}

// Closes the client and returns the child's exit status.
static int rclient_close(rclient *r) {
    int st = child_status(r->child);
    wr_close(r->cli);
    wr_transport_ctx_free(r->ctx);
    small_ring(0);
    return st;
}

// Asleep after the first message (no credits returned), then reads.
static int hold_asleep(wr_endpoint *srv) {
    sleep(3);
    return read_all(srv);
}

// A receiver that does not read: sends stop with WR_ETIMEDOUT once its ring
// is full, and go on after it read.
static void test_credits_slow_receiver(void **state) {
    (void)state;
    if (!need_device()) skip();
    rclient r;
    rclient_open(&r, 0, hold_asleep);
    usleep(500000);  // the child reads the first message and gives its slot back
    char err[WR_ERR_LEN];
    int rc, sent = send_until_refused(r.cli, 50, 200, &rc, err);
    assert_int_equal(rc, WR_ETIMEDOUT);
    assert_non_null(strstr(err, "no credits"));
    assert_int_equal(sent, 4);                                           // one slot per message, 4 slots
    assert_int_equal(send_until_refused(r.cli, 1, 20000, &rc, err), 1);  // goes on once the child reads
    assert_int_equal(rclient_close(&r), sent + 1);
}

// Keeps its endpoint moving (wr_poll) for 3 s without reading, then reads.
static int hold_polling(wr_endpoint *srv) {
    char err[WR_ERR_LEN];
    int ready;
    for (double t0 = wr_now(); wr_now() - t0 < 3;) wr_poll(&srv, 1, &ready, 50, err);
    return read_all(srv);
}

// A receiver that moves its endpoint on but does not read: complete messages
// queue up to rcvhwm, then its credits are held back and sends time out;
// without the bound every message would be taken.
static void test_rcvhwm_bounds_queue(void **state) {
    (void)state;
    if (!need_device()) skip();
    rclient r;
    rclient_open(&r, 3, hold_polling);
    char err[WR_ERR_LEN];
    int rc, sent = send_until_refused(r.cli, 60, 500, &rc, err);
    assert_int_equal(rc, WR_ETIMEDOUT);
    assert_in_range(sent, 3, 3 + 4);            // the queue's bound, plus at most the ring's slots in flight
    assert_int_equal(rclient_close(&r), sent);  // every message sent arrived once the child read
}

// A poll that lists an endpoint twice returns (each endpoint is locked once)
// and marks both entries when a message waits.
static void test_poll_same_endpoint_twice(void **state) {
    (void)state;
    if (!need_device()) skip();
    rpair p;
    rpair_open(&p);
    char err[WR_ERR_LEN];
    wr_endpoint *eps[3] = {p.srv, p.srv, p.srv};
    int ready[3] = {1, 1, 1};
    assert_int_equal(wr_poll(eps, 3, ready, 50, err), 0);  // nothing yet: a timeout, not a hang
    send_ok(p.cli, NULL, 0, "x", 1, NULL, 0);
    int n = 0;
    for (int i = 0; i < 200 && n == 0; i++) n = wr_poll(eps, 3, ready, 50, err);
    assert_int_equal(n, 3);
    assert_true(ready[0] && ready[1] && ready[2]);
    rpair_close(&p);
}

static void test_several_clients(void **state) {
    (void)state;
    if (!need_device()) skip();
    rpair p;
    rpair_open(&p);
    char err[WR_ERR_LEN];
    wr_endpoint *c[3] = {p.cli, NULL, NULL};
    for (int i = 1; i < 3; i++) {
        assert_int_equal(wr_connect(p.ctx, p.addr, NULL, &c[i], err), WR_OK);
        pump_until_up(p.srv, c[i]);
    }
    for (int i = 0; i < 3; i++) {
        char h = (char)('0' + i);
        send_ok(c[i], NULL, 0, &h, 1, NULL, 0);
    }
    uint8_t ids[3][WR_PEER_ID_MAX];
    size_t lens[3];
    for (int k = 0; k < 3; k++) {
        wr_msg m = {0};
        recv_ok(p.srv, &m);
        int i = ((const char *)m.header.data)[0] - '0';
        assert_true(i >= 0 && i < 3);
        memcpy(ids[i], m.peer, m.peer_len), lens[i] = m.peer_len;
        wr_msg_release(&m);
    }
    for (int i = 0; i < 3; i++) {
        char h = (char)('a' + i);
        send_ok(p.srv, ids[i], lens[i], &h, 1, NULL, 0);
    }
    for (int i = 0; i < 3; i++) {
        wr_msg m = {0};
        recv_ok(c[i], &m);
        assert_int_equal(((const char *)m.header.data)[0], 'a' + i);
        wr_msg_release(&m);
    }
    wr_msg u = {.peer = "nobody", .peer_len = 6, .header = {.data = "x", .len = 1}};
    assert_int_equal(wr_send(p.srv, &u, 100, err), WR_ECLOSED);
    for (int i = 1; i < 3; i++) wr_close(c[i]);
    rpair_close(&p);
}

// A client that exits without closing: the bound side's sends to it end in
// WR_ECLOSED (retries exhausted, or its BYE). A bound side that exits: the
// client's recv says WR_ECLOSED and its poll reports it ready.
static void test_peer_exits(void **state) {
    (void)state;
    if (!need_device()) skip();
    char addr[128], err[WR_ERR_LEN];
    snprintf(addr, sizeof addr, "rdma://%s:%d", dev_addr(), port_seq++);
    pid_t child = fork();
    if (child == 0) {  // the server, which exits after one message
        wr_transport_ctx *ctx = wr_transport_ctx_new(1, err);
        wr_endpoint *srv;
        if (wr_bind(ctx, addr, NULL, &srv, err) != WR_OK) _exit(2);
        wr_msg m = {0};
        if (wr_recv(srv, &m, 20000, err) != WR_OK) _exit(3);
        _exit(0);  // no close: as if it crashed
    }
    wr_transport_ctx *ctx = wr_transport_ctx_new(1, err);
    wr_endpoint *cli;
    assert_int_equal(wr_connect(ctx, addr, NULL, &cli, err), WR_OK);
    send_ok(cli, NULL, 0, "bye", 3, NULL, 0);
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_int_equal(WEXITSTATUS(status), 0);
    int ready = 0;
    assert_int_equal(wr_poll(&cli, 1, &ready, 15000, err), 1);
    wr_msg m = {0};
    assert_int_equal(wr_recv(cli, &m, 15000, err), WR_ECLOSED);
    print_message("closed peer: %s\n", err);
    wr_close(cli);
    wr_transport_ctx_free(ctx);
}

static void test_client_exits(void **state) {
    (void)state;
    if (!need_device()) skip();
    char addr[128], err[WR_ERR_LEN];
    snprintf(addr, sizeof addr, "rdma://%s:%d", dev_addr(), port_seq++);
    wr_transport_ctx *ctx = wr_transport_ctx_new(1, err);
    wr_endpoint *srv;
    assert_int_equal(wr_bind(ctx, addr, NULL, &srv, err), WR_OK);
    pid_t child = fork();
    if (child == 0) {
        wr_transport_ctx *c2 = wr_transport_ctx_new(1, err);
        wr_endpoint *cli;
        if (wr_connect(c2, addr, NULL, &cli, err) != WR_OK) _exit(2);
        wr_msg m = {.header = {.data = "hi", .len = 2}};
        if (wr_send(cli, &m, 20000, err) != WR_OK) _exit(3);
        if (wr_recv(cli, &m, 20000, err) != WR_OK) _exit(4);
        _exit(0);  // no close
    }
    wr_msg m = {0};
    recv_ok(srv, &m);
    uint8_t id[WR_PEER_ID_MAX];
    size_t idl = m.peer_len;
    memcpy(id, m.peer, idl);
    wr_msg_release(&m);
    send_ok(srv, id, idl, "ok", 2, NULL, 0);
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_int_equal(WEXITSTATUS(status), 0);
    int rc = WR_OK;
    for (int i = 0; i < 100 && rc != WR_ECLOSED; i++) {
        wr_msg s = {.header = {.data = "again", .len = 5}};
        memcpy(s.peer, id, idl), s.peer_len = idl;
        rc = wr_send(srv, &s, 1000, err);
        usleep(100000);
    }
    assert_int_equal(rc, WR_ECLOSED);
    print_message("departed client: %s\n", err);
    wr_close(srv);
    wr_transport_ctx_free(ctx);
}

// A bound side waiting for credits (the client reads nothing) when the
// client exits: the send ends in WR_ECLOSED naming the peer. The progress
// pass that ends the peer used to free it under the waiting send (a
// use-after-free that ASan reports; the peer is pinned while a send waits).
static void test_peer_exits_while_send_waits(void **state) {
    (void)state;
    if (!need_device()) skip();
    char addr[128], err[WR_ERR_LEN];
    snprintf(addr, sizeof addr, "rdma://%s:%d", dev_addr(), port_seq++);
    wr_transport_ctx *ctx = wr_transport_ctx_new(1, err);
    wr_endpoint *srv;
    assert_int_equal(wr_bind(ctx, addr, NULL, &srv, err), WR_OK);
    pid_t child = fork();
    if (child == 0) {  // a client with a 2-slot ring that never reads
        setenv("WREN_RDMA_SLOTS", "2", 1);
        setenv("WREN_RDMA_SLOT_BYTES", "4096", 1);
        wr_transport_ctx *c2 = wr_transport_ctx_new(1, err);
        wr_endpoint *cli;
        if (wr_connect(c2, addr, NULL, &cli, err) != WR_OK) _exit(2);
        wr_msg m = {.header = {.data = "hi", .len = 2}};
        if (wr_send(cli, &m, 20000, err) != WR_OK) _exit(3);
        sleep(1);
        _exit(0);  // no close
    }
    wr_msg m = {0};
    recv_ok(srv, &m);
    wr_msg s = {.peer_len = m.peer_len, .header = {.data = "x", .len = 1}};
    memcpy(s.peer, m.peer, m.peer_len);
    wr_msg_release(&m);
    int rc = WR_OK, sent = 0;
    while (rc == WR_OK && sent < 10) rc = wr_send(srv, &s, 15000, err), sent += rc == WR_OK;
    assert_int_equal(rc, WR_ECLOSED);
    assert_int_equal(sent, 2);  // the ring's 2 slots, then the wait the exit ends
    print_message("peer gone while waiting: %s\n", err);
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_int_equal(WEXITSTATUS(status), 0);
    wr_close(srv);
    wr_transport_ctx_free(ctx);
}

// Ring shapes differ: the bound side has 2 slots (a send queue of ~20
// writes), the client 512 slots of 4 KiB. A message of 400 chunks to the
// client has 512 credits but must not post more writes than the send queue
// (or the CQ) holds: on hardware ibv_post_send failed with ENOMEM and ended
// the peer. Soft-RoCE frees a queue entry without our poll, so there this
// checks only that the mismatched shapes work.
static void test_peer_ring_bigger_than_send_queue(void **state) {
    (void)state;
    if (!need_device()) skip();
    char addr[128], err[WR_ERR_LEN];
    snprintf(addr, sizeof addr, "rdma://%s:%d", dev_addr(), port_seq++);
    wr_transport_ctx *ctx = wr_transport_ctx_new(1, err);
    wr_endpoint *srv, *cli;
    setenv("WREN_RDMA_SLOTS", "2", 1);
    setenv("WREN_RDMA_SLOT_BYTES", "4096", 1);
    assert_int_equal(wr_bind(ctx, addr, NULL, &srv, err), WR_OK);
    setenv("WREN_RDMA_SLOTS", "512", 1);
    assert_int_equal(wr_connect(ctx, addr, NULL, &cli, err), WR_OK);
    unsetenv("WREN_RDMA_SLOTS");
    unsetenv("WREN_RDMA_SLOT_BYTES");
    pump_until_up(srv, cli);
    send_ok(cli, NULL, 0, "hi", 2, NULL, 0);
    wr_msg m = {0};
    recv_ok(srv, &m);
    uint8_t id[WR_PEER_ID_MAX];
    size_t idl = m.peer_len;
    memcpy(id, m.peer, idl);
    wr_msg_release(&m);
    static uint8_t big[400 * 4096 - 100];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (uint8_t)(i * 7);
    send_ok(srv, id, idl, "big", 3, big, sizeof big);
    recv_ok(cli, &m);
    assert_int_equal(m.payload.len, sizeof big);
    assert_memory_equal(m.payload.data, big, sizeof big);
    wr_msg_release(&m);
    wr_close(cli);
    wr_close(srv);
    wr_transport_ctx_free(ctx);
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

// A bound endpoint whose side channel counts connections (peer_events): the
// client's connect leaves a monitor event, and a monitor's ZMQ_FD stays
// readable until someone reads it. The wait used to poll(2) on it, return
// at once and go round again: a 1 s recv burnt 1 s of CPU. It must sleep.
static void test_idle_wait_sleeps(void **state) {
    (void)state;
    if (!need_device()) skip();
    char addr[128], err[WR_ERR_LEN];
    snprintf(addr, sizeof addr, "rdma://%s:%d", dev_addr(), port_seq++);
    wr_transport_ctx *ctx = wr_transport_ctx_new(1, err);
    wr_endpoint_opts o;
    wr_endpoint_opts_default(&o);
    o.peer_events = 1;
    wr_endpoint *srv, *cli, *cli2;
    assert_int_equal(wr_bind(ctx, addr, &o, &srv, err), WR_OK);
    assert_int_equal(wr_connect(ctx, addr, NULL, &cli, err), WR_OK);
    pump_until_up(srv, cli);
    // The first event of a never-read monitor does not wake its fd; once read
    // (a shard's tick reads them), the next one does, until read again.
    unsigned long acc = 0, closed = 0;
    assert_int_equal(wr_peer_events(srv, &acc, &closed), WR_OK);
    assert_true(acc >= 1);
    assert_int_equal(wr_connect(ctx, addr, NULL, &cli2, err), WR_OK);
    pump_until_up(srv, cli2);
    wr_msg m = {0};
    double c0 = cpu_seconds();
    assert_int_equal(wr_recv(srv, &m, 1000, err), WR_ETIMEDOUT);
    double used = cpu_seconds() - c0;
    print_message("CPU in a 1 s idle recv: %.3f s\n", used);
    assert_true(used < 0.3);
    wr_close(cli2);
    wr_close(cli);
    wr_close(srv);
    wr_transport_ctx_free(ctx);
}

// One wr_poll over a zmq and an rdma endpoint: each wakes it.
static void test_mixed_poll(void **state) {
    (void)state;
    if (!need_device()) skip();
    rpair p;
    rpair_open(&p);
    char err[WR_ERR_LEN], za[256];
    wr_endpoint *zs, *zc;
    assert_int_equal(wr_bind(p.ctx, "tcp://127.0.0.1:0", NULL, &zs, err), WR_OK);
    assert_int_equal(wr_last_endpoint(zs, za, sizeof za), WR_OK);
    assert_int_equal(wr_connect(p.ctx, za, NULL, &zc, err), WR_OK);
    wr_endpoint *eps[2] = {zs, p.srv};
    int ready[2];
    assert_int_equal(wr_poll(eps, 2, ready, 50, err), 0);
    send_ok(zc, NULL, 0, "z", 1, NULL, 0);
    assert_int_equal(wr_poll(eps, 2, ready, 5000, err), 1);
    assert_true(ready[0] && !ready[1]);
    wr_msg m = {0};
    recv_ok(zs, &m);
    wr_msg_release(&m);
    send_ok(p.cli, NULL, 0, "r", 1, NULL, 0);
    assert_int_equal(wr_poll(eps, 2, ready, 5000, err), 1);
    assert_true(!ready[0] && ready[1]);
    recv_ok(p.srv, &m);
    assert_memory_equal(m.header.data, "r", 1);
    wr_msg_release(&m);
    wr_close(zc);
    wr_close(zs);
    rpair_close(&p);
}

// Garbage on the side channel: refused with a reason, counted, no crash.
static void test_malformed_handshake(void **state) {
    (void)state;
    if (!need_device()) skip();
    rpair p;
    rpair_open(&p);
    char err[WR_ERR_LEN], tcp[160];
    snprintf(tcp, sizeof tcp, "tcp://%s", p.addr + strlen("rdma://"));
    wr_endpoint *raw;
    assert_int_equal(wr_connect(p.ctx, tcp, NULL, &raw, err), WR_OK);
    wr_msg g = {.header = {.data = "0123456789", .len = 10}};
    assert_int_equal(wr_send(raw, &g, 1000, err), WR_OK);
    wr_msg m = {0};
    int rc = WR_ETIMEDOUT, ready;
    for (int i = 0; i < 500 && rc == WR_ETIMEDOUT; i++) {
        wr_poll(&p.srv, 1, &ready, 5, err);
        rc = wr_recv(raw, &m, 5, err);
    }
    assert_int_equal(rc, WR_OK);
    assert_int_equal(m.header.len, WR_RDMA_HS_LEN);
    assert_int_equal(((const uint8_t *)m.header.data)[6], WR_RDMA_REFUSE);
    assert_non_null(m.payload.data);
    char why[128];
    snprintf(why, sizeof why, "%.*s", (int)m.payload.len, (const char *)m.payload.data);
    assert_non_null(strstr(why, "handshake of 10 bytes"));
    wr_msg_release(&m);
    unsigned long bad, cap;
    assert_int_equal(wr_peer_refusals(p.srv, &bad, &cap), WR_OK);
    assert_int_equal(bad, 1);
    // the endpoint still serves its real client
    send_ok(p.cli, NULL, 0, "ok", 2, NULL, 0);
    recv_ok(p.srv, &m);
    wr_msg_release(&m);
    wr_close(raw);
    rpair_close(&p);
}

// A side channel that answers no HELLO (a plain ZeroMQ endpoint there): the
// send fails after connect_timeout_ms with the reason, it does not hang.
static void test_handshake_timeout(void **state) {
    (void)state;
    if (!need_device()) skip();
    char err[WR_ERR_LEN], tcp[128], rdma[128];
    int port = port_seq++;
    snprintf(tcp, sizeof tcp, "tcp://%s:%d", dev_addr(), port);
    snprintf(rdma, sizeof rdma, "rdma://%s:%d", dev_addr(), port);
    wr_transport_ctx *ctx = wr_transport_ctx_new(1, err);
    wr_endpoint *plain, *cli;
    assert_int_equal(wr_bind(ctx, tcp, NULL, &plain, err), WR_OK);
    wr_endpoint_opts o;
    wr_endpoint_opts_default(&o);
    o.connect_timeout_ms = 500;
    assert_int_equal(wr_connect(ctx, rdma, &o, &cli, err), WR_OK);
    wr_msg m = {.header = {.data = "x", .len = 1}};
    int rc = wr_send(cli, &m, 10000, err);
    assert_int_equal(rc, WR_ECLOSED);
    assert_non_null(strstr(err, "no RDMA handshake answer within 500 ms"));
    assert_int_equal(wr_endpoint_reached(cli), 0);
    wr_close(cli);
    wr_close(plain);
    wr_transport_ctx_free(ctx);
}

// The side channel takes the endpoint's CURVE options: an allow-listed
// client's handshake goes through, a stranger's is refused by the ZAP
// handler before any RDMA resource is made for it.
static void test_curve_side_channel(void **state) {
    (void)state;
    if (!need_device()) skip();
    char err[WR_ERR_LEN], addr[128];
    snprintf(addr, sizeof addr, "rdma://%s:%d", dev_addr(), port_seq++);
    wr_curve_keypair srv_k, cli_k, bad_k;
    assert_int_equal(zmq_curve_keypair(srv_k.public_key, srv_k.secret_key), 0);
    assert_int_equal(zmq_curve_keypair(cli_k.public_key, cli_k.secret_key), 0);
    assert_int_equal(zmq_curve_keypair(bad_k.public_key, bad_k.secret_key), 0);
    wr_transport_ctx *ctx = wr_transport_ctx_new(1, err);
    wr_allowed_key a = {.role_bit = 1, .user = "worker"};
    memcpy(a.key, cli_k.public_key, sizeof a.key);
    assert_int_equal(wr_transport_set_allowlist(ctx, &a, 1, err), WR_OK);
    wr_endpoint_opts so, co;
    wr_endpoint_opts_default(&so);
    so.curve = &srv_k, so.admit = 1;
    wr_endpoint *srv, *cli, *bad;
    assert_int_equal(wr_bind(ctx, addr, &so, &srv, err), WR_OK);
    wr_endpoint_opts_default(&co);
    co.curve = &cli_k;
    memcpy(co.curve_server_key, srv_k.public_key, sizeof co.curve_server_key);
    assert_int_equal(wr_connect(ctx, addr, &co, &cli, err), WR_OK);
    pump_until_up(srv, cli);
    send_ok(cli, NULL, 0, "k", 1, NULL, 0);
    wr_msg m = {0};
    recv_ok(srv, &m);
    wr_peer_info info;
    assert_int_equal(wr_msg_peer_info(&m, &info), WR_OK);
    assert_non_null(strstr(info.user, "worker"));
    wr_msg_release(&m);
    co.curve = &bad_k;
    assert_int_equal(wr_connect(ctx, addr, &co, &bad, err), WR_OK);
    int rc = WR_OK, ready;
    for (int i = 0; i < 200 && rc != WR_ECLOSED; i++) {
        wr_poll(&srv, 1, &ready, 10, err);
        wr_msg b = {.header = {.data = "b", .len = 1}};
        rc = wr_send(bad, &b, 10, err);
    }
    assert_int_equal(rc, WR_ECLOSED);
    assert_non_null(strstr(err, "refused our key"));
    unsigned long bk, oc;
    assert_int_equal(wr_peer_refusals(srv, &bk, &oc), WR_OK);
    assert_true(bk >= 1);
    wr_close(bad);
    wr_close(cli);
    wr_close(srv);
    wr_transport_ctx_free(ctx);
}

// A wrong device or GID index fails at bind with what to fix; without
// either variable the device and GID are found from the address (sysfs).
static void test_wrong_device_gid(void **state) {
    (void)state;
    if (!need_device()) skip();
    char err[WR_ERR_LEN], addr[128], saved[32] = "";
    if (getenv("WREN_RDMA_GID_INDEX")) snprintf(saved, sizeof saved, "%s", getenv("WREN_RDMA_GID_INDEX"));
    wr_transport_ctx *ctx = wr_transport_ctx_new(1, err);
    wr_endpoint *ep = NULL;
    snprintf(addr, sizeof addr, "rdma://*:%d", port_seq);
    assert_int_equal(wr_bind(ctx, addr, NULL, &ep, err), WR_ERR);
    assert_non_null(strstr(err, "binds one address: give the IP of the RDMA NIC's interface"));
    snprintf(addr, sizeof addr, "rdma://%s:%d", dev_addr(), port_seq++);
    setenv("WREN_RDMA_DEVICE", "nosuch0", 1);
    assert_int_equal(wr_bind(ctx, addr, NULL, &ep, err), WR_ERR);
    assert_non_null(strstr(err, "WREN_RDMA_DEVICE=nosuch0 is not a device here (have: "));
    unsetenv("WREN_RDMA_DEVICE");
    setenv("WREN_RDMA_GID_INDEX", "200", 1);
    assert_int_equal(wr_bind(ctx, addr, NULL, &ep, err), WR_ERR);
    assert_non_null(strstr(err, "has no GID at index 200"));
    assert_non_null(strstr(err, "WREN_RDMA_GID_INDEX"));
    unsetenv("WREN_RDMA_GID_INDEX");  // found from 10.0.0.1's RoCE v2 GID
    assert_int_equal(wr_bind(ctx, addr, NULL, &ep, err), WR_OK);
    wr_close(ep);
    if (saved[0]) setenv("WREN_RDMA_GID_INDEX", saved, 1);
    wr_transport_ctx_free(ctx);
}

// RLIMIT_MEMLOCK below the rings' need (and no CAP_IPC_LOCK): the message
// names the limit and the fixes. In a child, which drops its capabilities.
static void test_memlock_low(void **state) {
    (void)state;
    if (!need_device()) skip();
    pid_t child = fork();
    if (child == 0) {
        struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
        struct __user_cap_data_struct data[2] = {{0}};
        if (syscall(SYS_capset, &hdr, data) != 0) _exit(2);
        unsetenv("WREN_RDMA_SLOTS");  // the default rings: 32 MiB for one peer
        unsetenv("WREN_RDMA_SLOT_BYTES");
        struct rlimit rl = {64 << 10, 64 << 10};
        if (setrlimit(RLIMIT_MEMLOCK, &rl) != 0) _exit(3);
        char err[WR_ERR_LEN], addr[128];
        snprintf(addr, sizeof addr, "rdma://%s:%d", dev_addr(), 17999);
        wr_transport_ctx *ctx = wr_transport_ctx_new(1, err);
        wr_endpoint *ep;
        if (wr_bind(ctx, addr, NULL, &ep, err) != WR_ERR) _exit(4);
        fprintf(stderr, "memlock message: %s\n", err);
        _exit(strstr(err, "RLIMIT_MEMLOCK is 64 KiB") && strstr(err, "ulimit -l") &&
                      strstr(err, "LimitMEMLOCK=infinity") && strstr(err, "memlock=-1")
                  ? 0
                  : 5);
    }
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_int_equal(WEXITSTATUS(status), 0);
}
#endif

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    if (getenv("WR_TEST_FILTER")) cmocka_set_test_filter(getenv("WR_TEST_FILTER"));  // e.g. "test_mixed*"
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_device),
        cmocka_unit_test(test_bind_policy),
#ifdef WR_HAVE_RDMA
        // clang-format off
        cmocka_unit_test(test_handshake_codec),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_larger_than_ring),
        cmocka_unit_test(test_credits_slow_receiver),
        cmocka_unit_test(test_rcvhwm_bounds_queue),
        cmocka_unit_test(test_poll_same_endpoint_twice),
        cmocka_unit_test(test_several_clients),
        cmocka_unit_test(test_peer_exits),
        cmocka_unit_test(test_client_exits),
        cmocka_unit_test(test_peer_exits_while_send_waits),
        cmocka_unit_test(test_peer_ring_bigger_than_send_queue),
        cmocka_unit_test(test_idle_wait_sleeps),
        cmocka_unit_test(test_mixed_poll),
        cmocka_unit_test(test_malformed_handshake),
        cmocka_unit_test(test_handshake_timeout),
        cmocka_unit_test(test_curve_side_channel),
        cmocka_unit_test(test_wrong_device_gid),
        cmocka_unit_test(test_memlock_low),
    // clang-format on
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
