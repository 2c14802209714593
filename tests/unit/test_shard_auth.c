// test_shard_auth.c — the shard's rank credentials (server/shard_auth.c,
// docs/PROTOCOL.md "Rank credentials") through its real worker-message
// handler: a shard node of 2 ranks on tcp://127.0.0.1, its data socket
// read by the test, and DEALER clients as the workers and an outsider.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "config.h"
#include "node.h"
#include "proto.h"
#include "shard_internal.h"
#include "transport.h"

#define N 128         // elements of the shard's range
#define JOB 4242      // the job id: never in a refusal to an outsider
#define WAIT_MS 2000  // for a message that must come
#define NONE_MS 200   // for one that must not

typedef struct {
    shard_node s;
    wr_shard_opts o;
    char addr[WR_ADDR_MAX];
    wr_buf buf;
} fx;

static void token_of(uint8_t *t, int rank) {
    for (int i = 0; i < WR_TOKEN_LEN; i++) t[i] = (uint8_t)(0x40 + rank * 17 + i);
}

// A shard of 2 ranks (fp32 codec, no digests) with the credentials of a map
// whose 'wu' is idents (NULL: no 'wu').
static fx *new_shard(const char *const *idents) {
    fx *f = calloc(1, sizeof *f);
    shard_node *s = &f->s;
    char err[WR_ERR_LEN];
    wr_shard_opts_default(&f->o);
    f->o.coordinator = "tcp://127.0.0.1:1";
    s->o = &f->o;
    wr_config_defaults(&s->cfg);
    s->cfg.job_id = JOB;
    s->cfg.codec = WR_JOB_CODEC_FP32;
    s->cfg.digest_every = 0;
    s->ctx = wr_transport_ctx_new(1, err);
    assert_non_null(s->ctx);
    snprintf(s->bind_addr, sizeof s->bind_addr, "tcp://127.0.0.1:0");
    assert_int_equal(shard_bind_data(s, N), SHARD_GO_ON);
    assert_int_equal(wr_last_endpoint(s->router, f->addr, sizeof f->addr), WR_OK);
    s->index = 0;
    s->n_workers = 2;
    s->core = wr_shard_core_new(&s->cfg, 0, 0, N, 2, 100, err);
    assert_non_null(s->core);
    shard_data_init(s);
    wr_worker_info wi[2] = {{.rank = 0}, {.rank = 1}};
    wr_cluster cl = {.epoch = 1, .n_workers = 2, .workers = wi};
    shard_members_init(s, &cl);
    wr_pmsg map;
    wr_pmsg_init(&map, WR_MT_CLUSTER_MAP);
    map.n_tokens = 2;
    map.tokens = calloc(2, WR_TOKEN_LEN);
    for (int r = 0; r < 2; r++) token_of(map.tokens[r], r);
    if (idents) {
        map.n_idents = 2;
        map.idents = calloc(2, sizeof(char *));
        for (int r = 0; r < 2; r++) map.idents[r] = strdup(idents[r]);
    }
    int ranks[2] = {0, 1};
    assert_int_equal(shard_auth_take(s, ranks, 2, &map, err), WR_OK);
    wr_pmsg_clear(&map);
    return f;
}

static void free_shard(fx *f, wr_endpoint **eps, int n) {
    shard_node *s = &f->s;
    for (int i = 0; i < n; i++) wr_close(eps[i]);
    shard_data_release(s);
    wr_close(s->router);
    wr_transport_ctx_free(s->ctx);
    shard_data_free(s);
    wr_shard_core_free(s->core);
    wr_buf_free(&s->scratch);
    wr_buf_free(&f->buf);
    free(f);
}

static wr_endpoint *client(fx *f) {
    char err[WR_ERR_LEN];
    wr_endpoint_opts eo;
    wr_endpoint_opts_default(&eo);
    eo.linger_ms = 0;
    eo.heartbeat_ms = 0;
    wr_endpoint *ep = NULL;
    assert_int_equal(wr_connect(f->s.ctx, f->addr, &eo, &ep, err), WR_OK);
    return ep;
}

// A data message as `rank` with the token of token_rank (-1: none).
static void data_msg(wr_pmsg *h, int type, int rank, int token_rank, uint64_t step) {
    wr_pmsg_init(h, type);
    h->job_id = JOB;
    h->epoch = 1;
    h->step = step;
    h->rank = rank;
    h->shard = 0;
    h->offset = 0;
    h->n_elems = N;
    if (type != WR_MT_PULL) {
        h->codec = WR_CODEC_FP32;
        h->payload_len = N * 4;
    }
    h->has_token = token_rank >= 0;
    if (token_rank >= 0) token_of(h->token, token_rank);
}

// Sends h (with N floats of value v when it has a payload), then lets the
// shard handle the one message it receives.
static void send_and_handle(fx *f, wr_endpoint *ep, const wr_pmsg *h, float v) {
    char err[WR_ERR_LEN];
    float pl[N];
    for (int i = 0; i < N; i++) pl[i] = v;
    int has = h->type != WR_MT_PULL;
    assert_int_equal(
        wr_send_pmsg(ep, NULL, 0, h, has ? pl : NULL, has ? sizeof pl : 0, NULL, NULL, 1000, &f->buf, err),
        WR_OK);
    wr_msg m;
    memset(&m, 0, sizeof m);
    assert_int_equal(wr_recv(f->s.router, &m, WAIT_MS, err), WR_OK);
    assert_int_equal(shard_on_worker_msg(&f->s, &m), SHARD_GO_ON);
    wr_msg_release(&m);
}

// The next message to ep within ms: its type (0 = none), header in *h, the
// first payload float in *first.
static int reply(wr_endpoint *ep, int ms, wr_pmsg *h, float *first) {
    char err[WR_ERR_LEN];
    wr_msg m;
    memset(&m, 0, sizeof m);
    if (wr_recv(ep, &m, ms, err) != WR_OK) return 0;
    assert_int_equal(wr_proto_decode(m.header.data, m.header.len, m.payload.len, NULL, h, NULL, err), WR_OK);
    if (first && m.payload.len >= 4) memcpy(first, m.payload.data, 4);
    wr_msg_release(&m);
    return h->type;
}

// The refusal an outsider gets: ERROR, job id 0, "not authorized for rank
// r" or the decoder's text, never the step or the job id.
static void expect_refusal(wr_endpoint *ep, const char *needle) {
    wr_pmsg e;
    assert_int_equal(reply(ep, WAIT_MS, &e, NULL), WR_MT_ERROR);
    assert_int_equal(e.job_id, 0);
    assert_non_null(strstr(e.reason, needle));
    assert_null(strstr(e.reason, "4242"));
    assert_null(strstr(e.reason, "step"));
    assert_null(strstr(e.reason, "collecting"));
    wr_pmsg_clear(&e);
}

// Strips the trailing 'tk' (packed last: key, bin8 marker, length, 16 bytes)
// from an encoded PUSH header, which the encoder would refuse to write.
static void send_push_without_token(fx *f, wr_endpoint *ep) {
    char err[WR_ERR_LEN];
    wr_pmsg h;
    data_msg(&h, WR_MT_PUSH, 0, 0, 1);
    assert_int_equal(wr_proto_encode(&h, &f->buf, err), WR_OK);
    size_t tk = 3 + 2 + WR_TOKEN_LEN;
    assert_memory_equal(f->buf.data + f->buf.len - tk, "\xa2tk\xc4\x10", 5);
    f->buf.len -= tk;
    f->buf.data[0]--;  // fixmap: one entry fewer
    float pl[N] = {0};
    wr_msg m = {.header = {.data = f->buf.data, .len = f->buf.len},
                .payload = {.data = pl, .len = sizeof pl}};
    assert_int_equal(wr_send(ep, &m, 1000, err), WR_OK);
    wr_msg in;
    memset(&in, 0, sizeof in);
    assert_int_equal(wr_recv(f->s.router, &in, WAIT_MS, err), WR_OK);
    shard_on_worker_msg(&f->s, &in);
    wr_msg_release(&in);
}

// An outsider's PUSH as rank 0 (wrong token, no token, a rank out of range)
// is refused, not aggregated, and its refusals tell nothing of the job; the
// real ranks then complete the step and only they get the BROADCAST.
static void test_outsider_push_refused(void **state) {
    (void)state;
    fx *f = new_shard(NULL);
    wr_endpoint *w0 = client(f), *w1 = client(f), *evil = client(f);
    wr_pmsg h, r;
    data_msg(&h, WR_MT_PARAMS, 0, 0, 0);
    send_and_handle(f, w0, &h, 0.5f);
    assert_true(wr_shard_core_has_params(f->s.core));
    for (uint64_t step = 1; step <= 3; step++) {  // step guesses
        data_msg(&h, WR_MT_PUSH, 0, 1, step);     // rank 1's token claiming rank 0
        send_and_handle(f, evil, &h, 1e30f);
        expect_refusal(evil, "not authorized for rank 0");
    }
    uint8_t guess[WR_TOKEN_LEN] = {0};
    data_msg(&h, WR_MT_PUSH, 0, 0, 1);
    memcpy(h.token, guess, sizeof guess);
    send_and_handle(f, evil, &h, 1e30f);
    expect_refusal(evil, "not authorized for rank 0");
    data_msg(&h, WR_MT_PUSH, 7, 0, 1);
    send_and_handle(f, evil, &h, 1e30f);
    expect_refusal(evil, "not authorized for rank 7");
    send_push_without_token(f, evil);
    expect_refusal(evil, "'tk'");
    assert_int_equal(wr_shard_core_pending(f->s.core), 0);
    assert_true(f->s.auth_refused >= 5);
    // the real step
    data_msg(&h, WR_MT_PUSH, 0, 0, 1);
    send_and_handle(f, w0, &h, 0.25f);
    data_msg(&h, WR_MT_PUSH, 1, 1, 1);
    send_and_handle(f, w1, &h, 0.25f);
    assert_int_equal(wr_shard_core_step(f->s.core), 1);
    float x = 0;
    assert_int_equal(reply(w0, WAIT_MS, &r, &x), WR_MT_BROADCAST);
    assert_true(isfinite(x) && fabsf(x) < 1.0f);
    wr_pmsg_clear(&r);
    assert_int_equal(reply(w1, WAIT_MS, &r, NULL), WR_MT_BROADCAST);
    wr_pmsg_clear(&r);
    assert_int_equal(reply(evil, NONE_MS, &r, NULL), 0);  // no BROADCAST to the outsider
    wr_endpoint *eps[] = {w0, w1, evil};
    free_shard(f, eps, 3);
}

// PARAMS (NaN) from an outsider before the real rank 0: refused, and the
// queued PULLs are answered from the real PARAMS.
static void test_params_before_rank0(void **state) {
    (void)state;
    fx *f = new_shard(NULL);
    wr_endpoint *w0 = client(f), *w1 = client(f), *evil = client(f);
    wr_pmsg h, r;
    data_msg(&h, WR_MT_PULL, 1, 1, 0);
    send_and_handle(f, w1, &h, 0);
    data_msg(&h, WR_MT_PARAMS, 0, -1, 0);  // no token
    send_and_handle(f, evil, &h, NAN);
    expect_refusal(evil, "not authorized for rank 0");
    data_msg(&h, WR_MT_PARAMS, 0, 1, 0);  // another rank's token
    send_and_handle(f, evil, &h, NAN);
    expect_refusal(evil, "not authorized for rank 0");
    data_msg(&h, WR_MT_PULL, 0, -1, 0);  // PULL without a token: not queued
    h.has_token = 1;
    memset(h.token, 0, WR_TOKEN_LEN);
    send_and_handle(f, evil, &h, 0);
    expect_refusal(evil, "not authorized for rank 0");
    assert_false(wr_shard_core_has_params(f->s.core));
    assert_int_equal(f->s.n_pulls, 1);
    data_msg(&h, WR_MT_PULL, 0, 0, 0);
    send_and_handle(f, w0, &h, 0);
    data_msg(&h, WR_MT_PARAMS, 0, 0, 0);
    send_and_handle(f, w0, &h, 0.75f);
    assert_true(wr_shard_core_has_params(f->s.core));
    assert_true(wr_shard_core_params(f->s.core)[0] == 0.75f);
    wr_endpoint *ranks[] = {w0, w1};
    for (int i = 0; i < 2; i++) {
        float x = 0;
        assert_int_equal(reply(ranks[i], WAIT_MS, &r, &x), WR_MT_PARAMS);
        assert_true(x == 0.75f);
        wr_pmsg_clear(&r);
    }
    assert_int_equal(reply(evil, NONE_MS, &r, NULL), 0);
    wr_endpoint *eps[] = {w0, w1, evil};
    free_shard(f, eps, 3);
}

// A worker that reconnects (new routing id, right token) is accepted and
// its broadcasts follow it.
static void test_reconnect_moves_binding(void **state) {
    (void)state;
    fx *f = new_shard(NULL);
    wr_endpoint *w0 = client(f), *w1 = client(f), *w0b = client(f);
    wr_pmsg h, r;
    data_msg(&h, WR_MT_PARAMS, 0, 0, 0);
    send_and_handle(f, w0, &h, 0.5f);
    for (uint64_t step = 1; step <= 2; step++) {
        data_msg(&h, WR_MT_PUSH, 0, 0, step);
        send_and_handle(f, step == 1 ? w0 : w0b, &h, 0.125f);
        data_msg(&h, WR_MT_PUSH, 1, 1, step);
        send_and_handle(f, w1, &h, 0.125f);
        assert_int_equal(wr_shard_core_step(f->s.core), step);
        assert_int_equal(reply(step == 1 ? w0 : w0b, WAIT_MS, &r, NULL), WR_MT_BROADCAST);
        assert_int_equal(r.step, step);
        wr_pmsg_clear(&r);
        assert_int_equal(reply(w1, WAIT_MS, &r, NULL), WR_MT_BROADCAST);
        wr_pmsg_clear(&r);
    }
    assert_int_equal(f->s.rebinds, 1);
    assert_int_equal(reply(w0, NONE_MS, &r, NULL), 0);  // the old connection gets no more
    assert_int_equal(f->s.auth_refused, 0);
    wr_endpoint *eps[] = {w0, w1, w0b};
    free_shard(f, eps, 3);
}

// A worker's second connection that only PULLs (authenticated, so the
// binding moves) does not take the step's BROADCAST: it goes where the
// rank's push came from.
static void test_broadcast_follows_push(void **state) {
    (void)state;
    fx *f = new_shard(NULL);
    wr_endpoint *w0 = client(f), *w1 = client(f), *w0pull = client(f);
    wr_pmsg h, r;
    data_msg(&h, WR_MT_PARAMS, 0, 0, 0);
    send_and_handle(f, w0, &h, 0.5f);
    data_msg(&h, WR_MT_PUSH, 0, 0, 1);
    send_and_handle(f, w0, &h, 0.125f);
    data_msg(&h, WR_MT_PULL, 0, 0, 0);
    send_and_handle(f, w0pull, &h, 0);
    data_msg(&h, WR_MT_PUSH, 1, 1, 1);
    send_and_handle(f, w1, &h, 0.125f);
    assert_int_equal(reply(w0, WAIT_MS, &r, NULL), WR_MT_BROADCAST);
    wr_pmsg_clear(&r);
    assert_int_equal(reply(w0pull, WAIT_MS, &r, NULL), WR_MT_PARAMS);
    wr_pmsg_clear(&r);
    assert_int_equal(reply(w0pull, NONE_MS, &r, NULL), 0);
    wr_endpoint *eps[] = {w0, w1, w0pull};
    free_shard(f, eps, 3);
}

// With identities in the map, the right token from another identity is
// refused (tcp without keys: every peer's identity is "").
static void test_identity_checked(void **state) {
    (void)state;
    const char *idents[] = {"worker:rk0-key-not-ours", ""};
    fx *f = new_shard(idents);
    wr_endpoint *w0 = client(f), *w1 = client(f);
    wr_pmsg h;
    data_msg(&h, WR_MT_PARAMS, 0, 0, 0);
    send_and_handle(f, w0, &h, 0.5f);
    expect_refusal(w0, "not authorized for rank 0");
    assert_false(wr_shard_core_has_params(f->s.core));
    data_msg(&h, WR_MT_PULL, 1, 1, 0);  // rank 1 has no identity: its token suffices
    send_and_handle(f, w1, &h, 0);
    assert_int_equal(f->s.n_pulls, 1);
    assert_int_equal(f->s.auth_refused, 1);
    wr_endpoint *eps[] = {w0, w1};
    free_shard(f, eps, 2);
}

// After authentication, a wrong job id is refused naming the job (the
// sender holds the rank's credential, so it may learn it).
static void test_job_checked_after_auth(void **state) {
    (void)state;
    fx *f = new_shard(NULL);
    wr_endpoint *w0 = client(f);
    wr_pmsg h, r;
    data_msg(&h, WR_MT_PARAMS, 0, 0, 0);
    h.job_id = 99;
    send_and_handle(f, w0, &h, 0.5f);
    assert_int_equal(reply(w0, WAIT_MS, &r, NULL), WR_MT_ERROR);
    assert_int_equal(r.job_id, JOB);
    assert_non_null(strstr(r.reason, "job 99"));
    assert_false(wr_shard_core_has_params(f->s.core));
    assert_int_equal(f->s.auth_refused, 0);
    wr_endpoint *eps[] = {w0};
    free_shard(f, eps, 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outsider_push_refused),   cmocka_unit_test(test_params_before_rank0),
        cmocka_unit_test(test_reconnect_moves_binding), cmocka_unit_test(test_broadcast_follows_push),
        cmocka_unit_test(test_identity_checked),        cmocka_unit_test(test_job_checked_after_auth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
