// test_coord_node_agg.c — the coordinator with ps_node_aggregate = on
// (server/coord_node_agg.c, docs/ARCHITECTURE.md "Node aggregation
// (mode=ps)"): a real coordinator in a thread on loopback tcp, a shard and
// workers as test sockets (coord_job.h). 2 nodes x 2 workers: the shard's
// epoch-1 map lists the two leaders only (the lowest rank of each group,
// with their tokens), each worker's lists all four with data addresses,
// groups and every token, and the shard ranges; a worker leaving before the
// end stops the job (status 5, the SHUTDOWN reaches the shard). Groups of
// unequal size stop the job at formation (status 2).
#include "coord_job.h"

// A job of mode=ps with ps_node_aggregate = on and one shard.
static void start(job *j, int workers) {
    job_init(j, workers, NULL);
    j->o.cfg.ps_node_aggregate = 1;
    j->o.cfg.shards = 1;
    j->o.cfg.register_timeout = 10;
    job_start(j);
}

// A shard and n workers (group names gn[i], reported in order i) registered.
static wr_endpoint *register_all(job *j, wr_endpoint **w, const char *const *gn, int n) {
    wr_endpoint *sh = node(j);
    send_register(j, sh, WR_ROLE_SHARD, 0, "tcp://127.0.0.1:9", "", "");
    wr_pmsg m;
    recv_type(sh, WR_MT_CLUSTER_MAP, 0, &m);
    wr_pmsg_clear(&m);
    for (int i = 0; i < n; i++) {
        char addr[64];
        snprintf(addr, sizeof addr, "tcp://127.0.0.1:%d", 7200 + i);
        w[i] = node(j);
        join_worker(j, w[i], addr, gn[i], "");
        usleep(20000);  // ranks follow the order of the reports
    }
    return sh;
}

static void test_maps_and_fixed_membership(void **state) {
    (void)state;
    job j;
    start(&j, 4);
    static const char *const gn[4] = {"node-b", "node-a", "node-b", "node-a"};
    wr_endpoint *w[4];
    wr_endpoint *sh = register_all(&j, w, gn, 4);
    wr_pmsg map[4], smap;
    uint8_t tk[4][WR_TOKEN_LEN];
    for (int i = 0; i < 4; i++) {
        recv_type(w[i], WR_MT_CLUSTER_MAP, 1, &map[i]);
        memcpy(tk[i], map[i].token, WR_TOKEN_LEN);
    }
    for (int i = 0; i < 4; i++) {
        const wr_pmsg *m = &map[i];
        assert_int_equal(m->rank, i);
        assert_int_equal(m->n_shards, 1);
        assert_int_equal(m->n_workers_map, 4);
        assert_int_equal(m->n_tokens, 4);
        for (int r = 0; r < 4; r++) {
            char addr[64];
            snprintf(addr, sizeof addr, "tcp://127.0.0.1:%d", 7200 + r);
            assert_int_equal(m->workers[r].rank, r);
            assert_string_equal(m->workers[r].addr, addr);
            assert_int_equal(m->workers[r].group, r % 2 ? 0 : 1);  // node-a = 0, node-b = 1
            assert_memory_equal(m->tokens[r], tk[r], WR_TOKEN_LEN);
        }
        wr_pmsg_clear(&map[i]);
    }
    // the shard: the leaders only, rank 0 (node-b) and rank 1 (node-a), with their tokens
    recv_type(sh, WR_MT_CLUSTER_MAP, 1, &smap);
    assert_int_equal(smap.n_workers_map, 2);
    assert_int_equal(smap.n_tokens, 2);
    assert_int_equal(smap.n_idents, 2);
    for (int r = 0; r < 2; r++) {
        assert_int_equal(smap.workers[r].rank, r);
        assert_memory_equal(smap.tokens[r], tk[r], WR_TOKEN_LEN);
    }
    wr_pmsg_clear(&smap);
    // a follower leaving before the end stops the job, the shard is told
    send_simple(&j, w[3], WR_MT_LEAVE, 3, 4, 0);
    expect_stop(sh, WR_MT_SHUTDOWN, WR_EXIT_NODE_LOST, "ps_node_aggregate cannot go on without it", NULL);
    assert_int_equal(finish(&j), WR_EXIT_NODE_LOST);
    for (int i = 0; i < 4; i++) wr_close(w[i]);
    wr_close(sh);
    cleanup(&j);
}

static void test_unequal_groups(void **state) {
    (void)state;
    job j;
    start(&j, 3);
    static const char *const gn[3] = {"node-a", "node-b", "node-a"};
    wr_endpoint *w[3];
    wr_endpoint *sh = register_all(&j, w, gn, 3);
    expect_stop(w[0], WR_MT_SHUTDOWN, WR_EXIT_CONFIG,
                "ps_node_aggregate: groups of unequal size: node-a 2, node-b 1", NULL);
    assert_int_equal(finish(&j), WR_EXIT_CONFIG);
    for (int i = 0; i < 3; i++) wr_close(w[i]);
    wr_close(sh);
    cleanup(&j);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_maps_and_fixed_membership),
        cmocka_unit_test(test_unequal_groups),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
