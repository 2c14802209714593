// test_transport_curve.c — CURVE and the ZAP handler of the ZeroMQ transport
// over tcp (127.0.0.1, port 0) and ipc (temp dir): encrypted round trips
// with the allow-list's user on each message, refusals (unknown key, wrong
// role, plain client at a CURVE endpoint) that the refused client reports
// and the server counts, a client expecting another server key (counted,
// not told), the connection cap (max_peers) without keys, the per-address
// cap (max_peers_per_addr: tcp from two source addresses; ipc exempt), and
// malformed keys.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "transport.h"

#define ROLE_SHARD 1u
#define ROLE_WORKER 2u

static char tmpdir[64];
static int seq;

static void make_addr(int ipc, char *buf, size_t len) {
    seq++;
    if (ipc)
        snprintf(buf, len, "ipc://%s/c%d", tmpdir, seq);
    else
        snprintf(buf, len, "tcp://127.0.0.1:0");
}

static void keypair(wr_curve_keypair *kp) {
    assert_int_equal(zmq_curve_keypair(kp->public_key, kp->secret_key), 0);
}

static void allow(wr_allowed_key *a, const wr_curve_keypair *kp, unsigned role, const char *rname) {
    memset(a, 0, sizeof *a);
    snprintf(a->key, sizeof a->key, "%s", kp->public_key);
    a->role_bit = role;
    snprintf(a->user, sizeof a->user, "%s:%s", rname, kp->public_key);
}

// A server context with a CURVE key, and an allow-list of one worker and one shard key.
typedef struct {
    wr_transport_ctx *ctx;
    wr_curve_keypair server, worker, shard, stranger;
    wr_endpoint *srv;
    char addr[256];
} fixture;

static void fixture_open(fixture *f, int ipc, unsigned admit, int max_peers) {
    char err[WR_ERR_LEN], a[256];
    memset(f, 0, sizeof *f);
    assert_true(zmq_has("curve"));
    f->ctx = wr_transport_ctx_new(1, err);
    keypair(&f->server), keypair(&f->worker), keypair(&f->shard), keypair(&f->stranger);
    wr_allowed_key keys[2];
    allow(&keys[0], &f->worker, ROLE_WORKER, "worker");
    allow(&keys[1], &f->shard, ROLE_SHARD, "shard");
    if (wr_transport_set_allowlist(f->ctx, keys, 2, err) != WR_OK) fail_msg("allow-list: %s", err);
    wr_endpoint_opts o;
    wr_endpoint_opts_default(&o);
    o.curve = &f->server;
    o.admit = admit;
    o.max_peers = max_peers;
    make_addr(ipc, a, sizeof a);
    if (wr_bind(f->ctx, a, &o, &f->srv, err) != WR_OK) fail_msg("bind %s: %s", a, err);
    assert_int_equal(wr_last_endpoint(f->srv, f->addr, sizeof f->addr), WR_OK);
}

static void fixture_close(fixture *f) {
    wr_close(f->srv);
    wr_transport_ctx_free(f->ctx);
}

// Connects with client key pair kp (NULL: plain) to f's server.
static wr_endpoint *client(fixture *f, const wr_curve_keypair *kp) {
    char err[WR_ERR_LEN];
    wr_endpoint_opts o;
    wr_endpoint_opts_default(&o);
    o.linger_ms = 0;
    if (kp) {
        o.curve = kp;
        snprintf(o.curve_server_key, sizeof o.curve_server_key, "%s", f->server.public_key);
    }
    wr_endpoint *c = NULL;
    if (wr_connect(f->ctx, f->addr, &o, &c, err) != WR_OK) fail_msg("connect %s: %s", f->addr, err);
    return c;
}

static int send_text(wr_endpoint *ep, const char *text, const uint8_t *peer, size_t peer_len) {
    char err[WR_ERR_LEN];
    wr_msg m = {0};
    m.header = (wr_frame){(void *)text, strlen(text) + 1, NULL, NULL};
    if (peer) memcpy(m.peer, peer, peer_len), m.peer_len = peer_len;
    return wr_send(ep, &m, 2000, err);
}

static void roundtrip(int ipc) {
    fixture f;
    fixture_open(&f, ipc, ROLE_WORKER | ROLE_SHARD, 0);
    char err[WR_ERR_LEN];
    wr_endpoint *c = client(&f, &f.worker);
    assert_int_equal(send_text(c, "hello", NULL, 0), WR_OK);
    wr_msg r = {0};
    if (wr_recv(f.srv, &r, 5000, err) != WR_OK) fail_msg("recv: %s", err);
    assert_string_equal(r.header.data, "hello");
    wr_peer_info pi;
    assert_int_equal(wr_msg_peer_info(&r, &pi), WR_OK);
    char want[WR_PEER_USER_MAX];
    snprintf(want, sizeof want, "worker:%s", f.worker.public_key);
    assert_string_equal(pi.user, want);
    assert_int_equal(send_text(f.srv, "back", r.peer, r.peer_len), WR_OK);  // encrypted both ways
    wr_msg_release(&r);
    if (wr_recv(c, &r, 5000, err) != WR_OK) fail_msg("recv at the client: %s", err);
    assert_string_equal(r.header.data, "back");
    wr_msg_release(&r);
    unsigned long bad, cap;
    assert_int_equal(wr_peer_refusals(f.srv, &bad, &cap), WR_OK);
    assert_int_equal(bad + cap, 0);
    wr_close(c);
    fixture_close(&f);
}

static void test_curve_roundtrip_tcp(void **state) {
    (void)state;
    roundtrip(0);
}

static void test_curve_roundtrip_ipc(void **state) {
    (void)state;
    roundtrip(1);
}

// Client kp (NULL: plain) must be refused: the client's recv says why (want
// in its error, rc want_rc), the server receives nothing and counts a bad key.
static void expect_refused(int ipc, unsigned admit, int which, const char *want, int want_rc) {
    fixture f;
    fixture_open(&f, ipc, admit, 0);
    const wr_curve_keypair *kp = which == 0 ? &f.stranger : which == 1 ? &f.worker : NULL;
    wr_endpoint *c = client(&f, kp);
    char err[WR_ERR_LEN] = "";
    int rc = send_text(c, "let me in", NULL, 0);  // queued until the handshake, or refused already
    if (rc == WR_OK) rc = wr_recv(c, &(wr_msg){0}, 5000, err);
    assert_int_equal(rc, want_rc);
    err[0] = 0;
    assert_int_equal(wr_recv(c, &(wr_msg){0}, 0, err), want_rc);  // it stays refused, and says why
    if (!strstr(err, want)) fail_msg("client error '%s' lacks '%s'", err, want);
    wr_msg r = {0};
    unsigned long bad = 0, cap = 0, b, k;
    for (int i = 0; i < 50 && bad == 0; i++) {
        assert_int_equal(wr_recv(f.srv, &r, 20, err), WR_ETIMEDOUT);  // nothing gets through
        assert_int_equal(wr_peer_refusals(f.srv, &b, &k), WR_OK);
        bad += b, cap += k;
    }
    assert_true(bad >= 1);
    assert_int_equal(cap, 0);
    wr_close(c);
    fixture_close(&f);
}

static void test_unknown_key_refused(void **state) {
    (void)state;
    expect_refused(0, ROLE_WORKER | ROLE_SHARD, 0, "refused our key", WR_ERR);
    expect_refused(1, ROLE_WORKER | ROLE_SHARD, 0, "refused our key", WR_ERR);
}

static void test_wrong_role_refused(void **state) {
    (void)state;
    expect_refused(0, ROLE_SHARD, 1, "refused our key", WR_ERR);
}

static void test_plain_client_refused(void **state) {
    (void)state;
    expect_refused(0, ROLE_WORKER, 2, "one side uses CURVE", WR_ERR);
}

// A client expecting another server key: the server cannot read its hello and
// drops it (counted as a bad key); the client is not told, it sees timeouts.
static void test_wrong_server_key(void **state) {
    (void)state;
    fixture f;
    fixture_open(&f, 0, ROLE_WORKER, 0);
    char err[WR_ERR_LEN];
    memcpy(f.server.public_key, f.stranger.public_key,
           sizeof f.server.public_key);  // what the client expects
    wr_endpoint *c = client(&f, &f.worker);
    assert_int_equal(send_text(c, "hello?", NULL, 0), WR_OK);
    unsigned long bad = 0, cap = 0, b, k;
    for (int i = 0; i < 50 && bad == 0; i++) {
        assert_int_equal(wr_recv(f.srv, &(wr_msg){0}, 20, err), WR_ETIMEDOUT);
        assert_int_equal(wr_peer_refusals(f.srv, &b, &k), WR_OK);
        bad += b, cap += k;
    }
    assert_true(bad >= 1);
    assert_int_equal(cap, 0);
    assert_int_equal(wr_recv(c, &(wr_msg){0}, 300, err), WR_ETIMEDOUT);
    wr_close(c);
    fixture_close(&f);
}

// Receives on srv for up to ms (in short waits), recording which client
// indices (the header text) arrived in seen[]; counts refusals into *over.
// Returns early once `until` distinct new clients arrived (0: never).
static int collect(wr_endpoint *srv, int *seen, int n, int ms, int until, unsigned long *over) {
    char err[WR_ERR_LEN];
    int fresh = 0;
    for (int t = 0; t < ms; t += 20) {
        wr_msg r = {0};
        if (wr_recv(srv, &r, 20, err) == WR_OK) {
            int i = atoi(r.header.data);
            assert_true(i >= 0 && i < n);
            if (!seen[i]) seen[i] = 1, fresh++;
            wr_msg_release(&r);
        }
        unsigned long b, k;
        assert_int_equal(wr_peer_refusals(srv, &b, &k), WR_OK);
        assert_int_equal(b, 0);
        *over += k;
        if (until && fresh >= until) break;
    }
    return fresh;
}

// Collects (as collect) for ~500 ms (25 polls of 20 ms) and on until the
// server has counted min_over refusals (a loaded machine connects late), at
// most ~10 s; fails if they never come. Returns the messages that came.
static int settle_refusals(wr_endpoint *srv, int *seen, int n, unsigned long min_over, unsigned long *over) {
    int fresh = collect(srv, seen, n, 500, 0, over);
    for (int i = 0; i < 95 && *over < min_over; i++) fresh += collect(srv, seen, n, 100, 0, over);
    if (*over < min_over) fail_msg("%lu refusals counted, expected >= %lu", *over, min_over);
    return fresh;
}

#define N_CAP 8  // 5 at first, 3 more once all left

// max_peers = 2 without keys (ZAP for the NULL mechanism): 5 clients, 2 get
// through, the others are counted and told; once all closed, 2 of 3 new ones get in.
static void test_max_peers(void **state) {
    (void)state;
    char err[WR_ERR_LEN], a[256];
    wr_transport_ctx *ctx = wr_transport_ctx_new(1, err);
    wr_endpoint_opts o;
    wr_endpoint_opts_default(&o);
    o.max_peers = 2;
    o.linger_ms = 0;
    wr_endpoint *srv, *cli[N_CAP] = {0};
    assert_int_equal(wr_bind(ctx, "tcp://127.0.0.1:0", &o, &srv, err), WR_OK);
    assert_int_equal(wr_last_endpoint(srv, a, sizeof a), WR_OK);
    int seen[N_CAP] = {0};
    unsigned long over = 0;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(wr_connect(ctx, a, &o, &cli[i], err), WR_OK);
        char text[16];
        snprintf(text, sizeof text, "%d", i);
        assert_int_equal(send_text(cli[i], text, NULL, 0), WR_OK);
    }
    assert_int_equal(collect(srv, seen, N_CAP, 5000, 2, &over), 2);
    assert_int_equal(settle_refusals(srv, seen, N_CAP, 3, &over), 0);  // no third one gets through
    int n_in = 0;
    for (int i = 0; i < 5; i++) {
        if (seen[i]) {
            n_in++;
            continue;
        }
        int rc = wr_recv(cli[i], &(wr_msg){0}, 3000, err);  // the refused client hears why
        assert_int_equal(rc, WR_ECLOSED);
        if (!strstr(err, "connection cap")) fail_msg("client %d: '%s'", i, err);
    }
    assert_int_equal(n_in, 2);
    // The server must see the closes before it admits others (a client that
    // comes earlier is refused): wait until every accepted connection closed.
    // (libzmq sometimes reconnects a refused client, so there may be more than 5.)
    for (int i = 0; i < 5; i++) wr_close(cli[i]), cli[i] = NULL;
    unsigned long acc = 0, closed = 0, a1, c1;
    for (int i = 0; i < 500 && (acc < 5 || closed < acc); i++) {
        int ready;
        wr_poll(&srv, 1, &ready, 10, err);
        assert_int_equal(wr_peer_events(srv, &a1, &c1), WR_OK);
        acc += a1, closed += c1;
    }
    assert_true(acc >= 5);
    assert_int_equal(closed, acc);
    for (int i = 5; i < N_CAP; i++) {
        assert_int_equal(wr_connect(ctx, a, &o, &cli[i], err), WR_OK);
        char text[16];
        snprintf(text, sizeof text, "%d", i);
        assert_int_equal(send_text(cli[i], text, NULL, 0), WR_OK);
    }
    // Two slots are free again: two of the three new clients get in, not more.
    assert_int_equal(collect(srv, seen, N_CAP, 5000, 2, &over), 2);
    assert_int_equal(collect(srv, seen, N_CAP, 500, 0, &over), 0);
    for (int i = 0; i < N_CAP; i++) wr_close(cli[i]);
    wr_close(srv);
    wr_transport_ctx_free(ctx);
}

// Connects client i to addr (as given: it may name a source address) and sends "i".
static wr_endpoint *client_send(wr_transport_ctx *ctx, const char *addr, const wr_endpoint_opts *o, int i) {
    char err[WR_ERR_LEN], text[16];
    wr_endpoint *c = NULL;
    if (wr_connect(ctx, addr, o, &c, err) != WR_OK) fail_msg("connect %s: %s", addr, err);
    snprintf(text, sizeof text, "%d", i);
    // A client over the cap may hear its refusal before it sends (a loaded
    // machine): WR_ECLOSED then, and the server simply never sees it.
    int rc = send_text(c, text, NULL, 0);
    if (rc != WR_OK && rc != WR_ECLOSED) fail_msg("client %d: send returned %d", i, rc);
    return c;
}

// Waits until the server has seen as many closes as accepts but `open`.
static void wait_open(wr_endpoint *srv, unsigned long *acc, unsigned long *closed, unsigned long open) {
    char err[WR_ERR_LEN];
    unsigned long a1, c1;
    for (int i = 0; i < 500 && *acc - *closed != open; i++) {
        int ready;
        wr_poll(&srv, 1, &ready, 10, err);
        assert_int_equal(wr_peer_events(srv, &a1, &c1), WR_OK);
        *acc += a1, *closed += c1;
    }
    assert_int_equal(*acc - *closed, open);
}

#define N_PA 12  // 5 from 127.0.0.1, 2 from 127.0.0.2, then 3 from 127.0.0.1 again

// max_peers_per_addr = 2 under max_peers = 10, no keys: of 5 clients from
// 127.0.0.1, 2 get in and 3 are refused (over_cap, told as the cap);
// meanwhile 2 from 127.0.0.2 get in; once the 127.0.0.1 ones closed, 2 of 3
// new ones from 127.0.0.1 get in.
static void test_max_peers_per_addr(void **state) {
    (void)state;
    char err[WR_ERR_LEN], a[256], from2[300];
    wr_transport_ctx *ctx = wr_transport_ctx_new(1, err);
    wr_endpoint_opts o;
    wr_endpoint_opts_default(&o);
    o.max_peers = 10;
    o.max_peers_per_addr = 2;
    o.linger_ms = 0;
    wr_endpoint *srv, *cli[N_PA] = {0};
    if (wr_bind(ctx, "tcp://127.0.0.1:0", &o, &srv, err) != WR_OK) fail_msg("bind: %s", err);
    assert_int_equal(wr_last_endpoint(srv, a, sizeof a), WR_OK);
    snprintf(from2, sizeof from2, "tcp://127.0.0.2:0;%s", a + 6);  // source address 127.0.0.2
    int seen[N_PA] = {0};
    unsigned long over = 0, acc = 0, closed = 0;
    for (int i = 0; i < 5; i++) cli[i] = client_send(ctx, a, &o, i);
    assert_int_equal(collect(srv, seen, N_PA, 5000, 2, &over), 2);
    assert_int_equal(settle_refusals(srv, seen, N_PA, 3, &over), 0);  // no third one gets through
    for (int i = 0; i < 5; i++) {
        if (seen[i]) continue;
        int rc = wr_recv(cli[i], &(wr_msg){0}, 3000, err);  // the refused client hears why
        assert_int_equal(rc, WR_ECLOSED);
        if (!strstr(err, "connection cap")) fail_msg("client %d: '%s'", i, err);
    }
    for (int i = 5; i < 7; i++) cli[i] = client_send(ctx, from2, &o, i);
    assert_int_equal(collect(srv, seen, N_PA, 5000, 2, &over), 2);
    assert_true(seen[5] && seen[6]);
    for (int i = 0; i < 5; i++) wr_close(cli[i]), cli[i] = NULL;
    wait_open(srv, &acc, &closed, 2);  // only the two from 127.0.0.2 are left
    over = 0;
    for (int i = 7; i < 10; i++) cli[i] = client_send(ctx, a, &o, i);
    assert_int_equal(collect(srv, seen, N_PA, 5000, 2, &over), 2);
    assert_int_equal(settle_refusals(srv, seen, N_PA, 1, &over), 0);
    for (int i = 0; i < N_PA; i++) wr_close(cli[i]);
    wr_close(srv);
    wr_transport_ctx_free(ctx);
}

// ipc peers are exempt from max_peers_per_addr (they are local users): 3 get in with 1.
static void test_max_peers_per_addr_ipc(void **state) {
    (void)state;
    char err[WR_ERR_LEN], a[256];
    wr_transport_ctx *ctx = wr_transport_ctx_new(1, err);
    wr_endpoint_opts o;
    wr_endpoint_opts_default(&o);
    o.max_peers_per_addr = 1;
    o.linger_ms = 0;
    wr_endpoint *srv, *cli[3] = {0};
    make_addr(1, a, sizeof a);
    if (wr_bind(ctx, a, &o, &srv, err) != WR_OK) fail_msg("bind %s: %s", a, err);
    int seen[3] = {0};
    unsigned long over = 0;
    for (int i = 0; i < 3; i++) cli[i] = client_send(ctx, a, &o, i);
    assert_int_equal(collect(srv, seen, 3, 5000, 3, &over), 3);
    assert_int_equal(over, 0);
    for (int i = 0; i < 3; i++) wr_close(cli[i]);
    wr_close(srv);
    wr_transport_ctx_free(ctx);
}

static void expect_opts_error(wr_transport_ctx *ctx, const char *addr, int bind, const wr_endpoint_opts *o,
                              const char *want) {
    char err[WR_ERR_LEN] = "";
    wr_endpoint *ep = (wr_endpoint *)1;
    int rc = bind ? wr_bind(ctx, addr, o, &ep, err) : wr_connect(ctx, addr, o, &ep, err);
    assert_int_equal(rc, WR_ERR);
    assert_null(ep);
    if (!strstr(err, want)) fail_msg("error '%s' lacks '%s'", err, want);
}

static void test_bad_keys(void **state) {
    (void)state;
    char err[WR_ERR_LEN];
    wr_transport_ctx *ctx = wr_transport_ctx_new(1, err);
    wr_curve_keypair kp, bad;
    keypair(&kp);
    wr_endpoint_opts o;
    wr_endpoint_opts_default(&o);
    o.curve = &kp;
    snprintf(o.curve_server_key, sizeof o.curve_server_key, "%s", kp.public_key);
    bad = kp;
    snprintf(bad.public_key, sizeof bad.public_key, "short");
    o.curve = &bad;
    expect_opts_error(ctx, "tcp://127.0.0.1:1", 0, &o, "curve public key is 5 characters");
    bad = kp;
    bad.secret_key[3] = '"';  // not in the Z85 alphabet
    expect_opts_error(ctx, "tcp://127.0.0.1:1", 0, &o, "curve secret key is not valid Z85");
    expect_opts_error(ctx, "tcp://127.0.0.1:0", 1, &o, "curve secret key is not valid Z85");
    o.curve = &kp;
    o.curve_server_key[0] = 0;
    expect_opts_error(ctx, "tcp://127.0.0.1:1", 0, &o, "curve_server_key is 0 characters");
    expect_opts_error(ctx, "inproc://curve", 1, &o, "CURVE needs tcp:// or ipc://");
    wr_allowed_key k[2];
    allow(&k[0], &kp, ROLE_SHARD, "shard");
    allow(&k[1], &kp, ROLE_SHARD, "shard");
    k[1].key[39] = 0;
    assert_int_equal(wr_transport_set_allowlist(ctx, k, 2, err), WR_ERR);
    assert_non_null(strstr(err, "allow-list entry 1"));
    k[1] = k[0], k[1].role_bit = 0;
    assert_int_equal(wr_transport_set_allowlist(ctx, k, 2, err), WR_ERR);
    assert_non_null(strstr(err, "role_bit is 0"));
    assert_int_equal(wr_transport_set_allowlist(ctx, k, 1, err), WR_OK);
    unsigned long b, c;
    assert_int_equal(wr_peer_refusals(NULL, &b, &c), WR_ERR);
    wr_transport_ctx_free(ctx);
}

static int setup(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/wren-tc-XXXXXX");
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
        cmocka_unit_test(test_curve_roundtrip_tcp),
        cmocka_unit_test(test_curve_roundtrip_ipc),
        cmocka_unit_test(test_unknown_key_refused),
        cmocka_unit_test(test_wrong_role_refused),
        cmocka_unit_test(test_plain_client_refused),
        cmocka_unit_test(test_wrong_server_key),
        cmocka_unit_test(test_max_peers),
        cmocka_unit_test(test_max_peers_per_addr),
        cmocka_unit_test(test_max_peers_per_addr_ipc),
        cmocka_unit_test(test_bad_keys),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
