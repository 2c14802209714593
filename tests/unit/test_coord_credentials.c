// test_coord_credentials.c — the rank credentials the coordinator hands out
// (server/membership.c, docs/PROTOCOL.md "Rank credentials"): a real
// coordinator in a thread, a shard and two workers as test sockets that
// register; each worker's epoch-1 map carries its own token and no one
// else's, the shard's carries every rank's token and identity.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "config.h"
#include "coordinator.h"
#include "node.h"
#include "proto.h"
#include "transport.h"

#define D 1024

static void *run_coord(void *arg) {
    static int st;
    st = wr_coordinator_run(arg);
    return &st;
}

static wr_endpoint *node(wr_transport_ctx *ctx, const char *addr) {
    char err[WR_ERR_LEN];
    wr_endpoint_opts eo;
    wr_endpoint_opts_default(&eo);
    eo.linger_ms = 0;
    wr_endpoint *ep = NULL;
    assert_int_equal(wr_connect(ctx, addr, &eo, &ep, err), WR_OK);
    return ep;
}

static void send_register(wr_endpoint *ep, int role, uint64_t d, wr_buf *b) {
    char err[WR_ERR_LEN];
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_REGISTER);
    h.role = role;
    snprintf(h.host, sizeof h.host, "h");
    if (role == WR_ROLE_SHARD) snprintf(h.addr, sizeof h.addr, "tcp://127.0.0.1:9");
    h.n_params = d;
    assert_int_equal(wr_send_pmsg(ep, NULL, 0, &h, NULL, 0, NULL, NULL, 1000, b, err), WR_OK);
}

// The next CLUSTER_MAP of `epoch` on ep, into *map.
static void recv_map(wr_endpoint *ep, uint64_t epoch, wr_pmsg *map) {
    char err[WR_ERR_LEN];
    for (int i = 0; i < 20; i++) {
        wr_msg m;
        memset(&m, 0, sizeof m);
        assert_int_equal(wr_recv(ep, &m, 5000, err), WR_OK);
        int rc = wr_proto_decode(m.header.data, m.header.len, m.payload.len, NULL, map, NULL, err);
        wr_msg_release(&m);
        assert_int_equal(rc, WR_OK);
        if (map->type == WR_MT_CLUSTER_MAP && map->epoch == epoch) return;
        wr_pmsg_clear(map);
    }
    fail_msg("no CLUSTER_MAP of epoch %llu", (unsigned long long)epoch);
}

static int all_zero(const uint8_t *t) {
    for (int i = 0; i < WR_TOKEN_LEN; i++)
        if (t[i]) return 0;
    return 1;
}

static void test_maps_carry_credentials(void **state) {
    (void)state;
    char addr[128], err[WR_ERR_LEN];
    snprintf(addr, sizeof addr, "ipc:///tmp/wren-test-cred-%d", (int)getpid());
    wr_coord_opts o = {.bind = addr};
    wr_config_defaults(&o.cfg);
    o.cfg.shards = 1;
    o.cfg.workers = 2;
    o.cfg.steps = 10;
    o.cfg.register_timeout = 10;
    snprintf(o.cfg.model, sizeof o.cfg.model, "synthetic:%d", D);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, run_coord, &o), 0);
    wr_transport_ctx *ctx = wr_transport_ctx_new(1, err);
    wr_buf b = {0};
    wr_endpoint *sh = node(ctx, addr), *w[2] = {node(ctx, addr), node(ctx, addr)};
    wr_pmsg map, wmap[2];
    send_register(sh, WR_ROLE_SHARD, 0, &b);
    recv_map(sh, 0, &map);
    assert_int_equal(map.n_tokens, 0);  // the welcome carries none
    assert_false(map.has_token);
    wr_pmsg_clear(&map);
    for (int i = 0; i < 2; i++) {
        send_register(w[i], WR_ROLE_WORKER, 0, &b);
        recv_map(w[i], 0, &map);
        assert_false(map.has_token);
        wr_pmsg_clear(&map);
    }
    for (int i = 0; i < 2; i++) send_register(w[i], WR_ROLE_WORKER, D, &b);
    recv_map(sh, 1, &map);
    for (int i = 0; i < 2; i++) recv_map(w[i], 1, &wmap[i]);
    // the shard's map: every rank's token and identity ("" without keys), no 'tk'
    assert_false(map.has_token);
    assert_int_equal(map.n_tokens, 2);
    assert_int_equal(map.n_idents, 2);
    for (int r = 0; r < 2; r++) {
        assert_false(all_zero(map.tokens[r]));
        assert_string_equal(map.idents[r], "");
    }
    assert_memory_not_equal(map.tokens[0], map.tokens[1], WR_TOKEN_LEN);
    // each worker's map: its own token only
    for (int i = 0; i < 2; i++) {
        int r = wmap[i].rank;
        assert_true(r == 0 || r == 1);
        assert_true(wmap[i].has_token);
        assert_int_equal(wmap[i].n_tokens, 0);
        assert_int_equal(wmap[i].n_idents, 0);
        assert_memory_equal(wmap[i].token, map.tokens[r], WR_TOKEN_LEN);
        wr_pmsg_clear(&wmap[i]);
    }
    wr_pmsg_clear(&map);
    // end the job: the shard says it stops
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_SHUTDOWN);
    h.job_id = o.cfg.job_id;
    h.epoch = 1;
    h.shard = 0;
    h.role = WR_ROLE_SHARD;
    h.code = WR_EXIT_FAILURE;
    snprintf(h.reason, sizeof h.reason, "test done");
    assert_int_equal(wr_send_pmsg(sh, NULL, 0, &h, NULL, 0, NULL, NULL, 1000, &b, err), WR_OK);
    void *ret;
    assert_int_equal(pthread_join(th, &ret), 0);
    wr_close(sh);
    wr_close(w[0]);
    wr_close(w[1]);
    wr_transport_ctx_free(ctx);
    wr_buf_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_maps_carry_credentials),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
