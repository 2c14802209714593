// test_cluster.c — the cluster map view: a map the coordinator builds
// reads back the same; maps a node must not size its state by are refused
// with a reason; the shard of a key; the config carried in a map.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cluster.h"
#include "config.h"
#include "proto.h"

// A map of d parameters over S shards and W workers, as the coordinator
// sends it, encoded and decoded again (what a node receives).
static void make_map(uint64_t d, int S, int W, int my_shard, int my_rank, wr_pmsg *out) {
    char err[WR_ERR_LEN];
    wr_cluster c;
    memset(&c, 0, sizeof c);
    c.epoch = 1;
    c.n_params = d;
    c.total_steps = 50;
    c.n_shards = S;
    c.n_workers = W;
    c.shards = calloc((size_t)S, sizeof *c.shards);
    c.workers = calloc((size_t)W, sizeof *c.workers);
    uint64_t lo[8], hi[8];
    assert_int_equal(wr_shard_ranges(d, S, lo, hi, err), WR_OK);
    for (int s = 0; s < S; s++) {
        c.shards[s].lo = lo[s];
        c.shards[s].hi = hi[s];
        snprintf(c.shards[s].addr, sizeof c.shards[s].addr, "tcp://10.0.0.%d:7001", s + 1);
    }
    for (int w = 0; w < W; w++) {
        c.workers[w].rank = w;
        c.workers[w].group = w / 2;
        snprintf(c.workers[w].host, sizeof c.workers[w].host, "h%d", w);
    }
    wr_pmsg m;
    wr_pmsg_init(&m, WR_MT_CLUSTER_MAP);
    m.job_id = 1;
    wr_cluster_to_map(&c, &m);
    m.shard = my_shard;
    m.rank = my_rank;
    wr_buf b = {0};
    assert_int_equal(wr_proto_encode(&m, &b, err), WR_OK);
    wr_cluster_free(&c);
    assert_int_equal(wr_proto_decode(b.data, b.len, 0, NULL, out, NULL, err), WR_OK);
    wr_buf_free(&b);
}

static void test_round_trip(void **state) {
    (void)state;
    char err[WR_ERR_LEN];
    wr_pmsg m;
    make_map(1000, 3, 4, -1, 2, &m);
    wr_cluster c;
    assert_int_equal(wr_cluster_from_map(&c, &m, WR_ROLE_WORKER, err), WR_OK);
    wr_pmsg_clear(&m);
    assert_int_equal(c.n_shards, 3);
    assert_int_equal(c.n_workers, 4);
    assert_int_equal(c.my_rank, 2);
    assert_int_equal(c.my_shard, -1);
    assert_int_equal(c.total_steps, 50);
    assert_int_equal(c.shards[0].lo, 0);
    assert_int_equal(c.shards[2].hi, 1000);
    assert_string_equal(c.shards[1].addr, "tcp://10.0.0.2:7001");
    assert_int_equal(c.workers[3].group, 1);
    for (uint64_t k = 0; k < 1000; k += 7) {
        int s = wr_cluster_shard_of(&c, k);
        assert_true(s >= 0 && c.shards[s].lo <= k && k < c.shards[s].hi);
    }
    assert_int_equal(wr_cluster_shard_of(&c, 1000), -1);
    wr_cluster_free(&c);
    wr_cluster_free(&c);  // safe twice
}

static void expect_refused(wr_pmsg *m, int role, const char *needle) {
    char err[WR_ERR_LEN] = "";
    wr_cluster c;
    assert_int_equal(wr_cluster_from_map(&c, m, role, err), WR_ERR);
    if (!strstr(err, needle)) fail_msg("reason '%s' does not mention '%s'", err, needle);
    assert_null(c.shards);
    wr_pmsg_clear(m);
}

static void test_refused(void **state) {
    (void)state;
    wr_pmsg m;
    make_map(1000, 3, 4, 3, -1, &m);
    expect_refused(&m, WR_ROLE_SHARD, "shard index 3");
    make_map(1000, 3, 4, -1, 4, &m);
    expect_refused(&m, WR_ROLE_WORKER, "rank 4");
    make_map(1000, 3, 4, -1, 0, &m);
    m.shards[1].lo += 64;  // a gap
    expect_refused(&m, WR_ROLE_WORKER, "shard 1 range");
    make_map(1000, 3, 4, -1, 0, &m);
    m.n_params = 2000;  // ranges end early
    expect_refused(&m, WR_ROLE_WORKER, "end at 1000");
    make_map(1000, 3, 4, -1, 0, &m);
    m.epoch = 0;  // a welcome is not a formed map
    expect_refused(&m, WR_ROLE_WORKER, "epoch 0");
}

static void test_config(void **state) {
    (void)state;
    char err[WR_ERR_LEN];
    char *kv[] = {"workers=2", "batch=64", "lr=0.5"};
    wr_pmsg m;
    wr_pmsg_init(&m, WR_MT_CLUSTER_MAP);
    m.n_config = 3;
    m.config = kv;
    wr_job_config cfg;
    assert_int_equal(wr_cluster_config(&m, &cfg, err), WR_OK);
    assert_int_equal(cfg.workers, 2);
    assert_true(cfg.lr == 0.5f);
    kv[1] = "batch=1";  // fewer examples than workers
    assert_int_equal(wr_cluster_config(&m, &cfg, err), WR_ERR);
    assert_non_null(strstr(err, "job config from the coordinator"));
    kv[1] = "nosuchkey=1";
    assert_int_equal(wr_cluster_config(&m, &cfg, err), WR_ERR);
    assert_non_null(strstr(err, "nosuchkey"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
