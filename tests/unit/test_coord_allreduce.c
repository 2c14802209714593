// test_coord_allreduce.c — the coordinator in mode=allreduce
// (server/coord_allreduce.c, docs/ARCHITECTURE.md "mode=allreduce"): a real
// coordinator in a thread on loopback tcp, workers as test sockets
// (coord_job.h). The epoch-1 map has no shards, each member's data address
// (a wildcard host replaced by 127.0.0.1, the address the coordinator
// sees), groups numbered by sorted name, every member's token; digests are
// compared between the workers; shards, late registrations and JOINs are
// refused; unequal groups stop hierarchical at formation; a REGISTER with d
// but no data address is refused, so is a taken data address; a worker
// leaving early stops the job.
#include "coord_job.h"

#define D JOB_D
#define STEPS JOB_STEPS

// A job of mode=allreduce with algo (digests every 5 steps), keys if given.
static void start(job *j, int workers, int algo, double register_timeout, const wr_node_keys *keys) {
    job_init(j, workers, keys);
    j->o.cfg.mode = WR_MODE_ALLREDUCE;
    j->o.cfg.allreduce_algo = algo;
    j->o.cfg.digest_every = 5;
    j->o.cfg.register_timeout = register_timeout;
    job_start(j);
}

// Both REGISTERs of worker ep; the welcome lists no shards.
static void join(job *j, wr_endpoint *ep, const char *addr, const char *gn, const char *la) {
    assert_int_equal(join_worker(j, ep, addr, gn, la), 0);
}

// n workers connected (with kp: worker i authenticated with kp[i]), each
// joined with data address tcp://*:<port + i> in group gn[i] (gn NULL: all
// in "n"); ranks follow the order of the reports.
static void connect_all(job *j, wr_endpoint **w, int n, int port, const char *const *gn,
                        const wr_keys_pair *kp) {
    for (int i = 0; i < n; i++) {
        w[i] = node_keyed(j, kp ? &kp[i] : NULL);
        char a[32];
        snprintf(a, sizeof a, "tcp://*:%d", port + i);
        join(j, w[i], a, gn ? gn[i] : "n", "");
        usleep(20000);
    }
}

// connect_all, then each worker's epoch-1 map (rank i for worker i), kept
// in map[i] for the caller to check and clear, or (map NULL) cleared.
static void form(job *j, wr_endpoint **w, int n, int port, const char *const *gn, const wr_keys_pair *kp,
                 wr_pmsg *map) {
    connect_all(j, w, n, port, gn, kp);
    for (int i = 0; i < n; i++) {
        wr_pmsg m, *mi = map ? &map[i] : &m;
        recv_type(w[i], WR_MT_CLUSTER_MAP, 1, mi);
        assert_int_equal(mi->rank, i);
        if (!map) wr_pmsg_clear(&m);
    }
}

// Every worker leaves at the last step.
static void leave_all(job *j, wr_endpoint **w, int n) {
    for (int i = 0; i < n; i++) send_simple(j, w[i], WR_MT_LEAVE, i, STEPS, 0);
}

// The coordinator ended with `status`; the workers' sockets closed.
static void end(job *j, int status, wr_endpoint **w, int n) {
    assert_int_equal(finish(j), status);
    for (int i = 0; i < n; i++) wr_close(w[i]);
    cleanup(j);
}

static void check_map(const wr_pmsg *m, const uint8_t (*tk)[WR_TOKEN_LEN]) {
    static const char *addr[4] = {"tcp://127.0.0.1:7100", "tcp://127.0.0.1:7101", "tcp://10.9.9.9:7102",
                                  "tcp://127.0.0.1:7103"};
    static const int group[4] = {1, 0, 1, 0};  // node-b, node-a, node-b, node-a
    assert_int_equal(m->n_shards, 0);
    assert_int_equal(m->n_params, D);
    assert_int_equal(m->total_steps, STEPS);
    assert_true(m->n_config > 0);
    assert_int_equal(m->n_workers_map, 4);
    assert_int_equal(m->n_tokens, 4);
    assert_int_equal(m->n_idents, 0);
    for (uint32_t i = 0; i < 4; i++) {
        const wr_worker_info *w = &m->workers[i];
        assert_int_equal(w->rank, (int)i);  // ranks in the order of the reports
        assert_string_equal(w->addr, addr[i]);
        assert_int_equal(w->group, group[i]);
        assert_string_equal(w->laddr, i == 1 ? "ipc:///tmp/wren-ar-w1" : "");
        assert_string_equal(w->key, "");  // no keys
        assert_memory_equal(m->tokens[i], tk[i], WR_TOKEN_LEN);
    }
    assert_memory_equal(m->token, tk[m->rank], WR_TOKEN_LEN);
}

// 2 nodes x 2 workers, hierarchical: the map, refusals while it runs,
// digests between the workers, the end.
static void test_ar_forms_and_ends(void **state) {
    (void)state;
    job j;
    start(&j, 4, WR_AR_HIER, 10, NULL);
    static const char *gn[4] = {"node-b", "node-a", "node-b", "node-a"};
    static const char *addr[4] = {"tcp://*:7100", "tcp://0.0.0.0:7101", "tcp://10.9.9.9:7102",
                                  "tcp://*:7103"};
    wr_endpoint *w[4], *sh = node(&j);
    wr_pmsg map[4];
    // a shard is refused
    send_register(&j, sh, WR_ROLE_SHARD, 0, "tcp://127.0.0.1:9", "", "");
    expect_stop(sh, WR_MT_ERROR, WR_EC_REJECTED, "mode=allreduce runs without shards", NULL);
    for (int i = 0; i < 4; i++) {
        w[i] = node(&j);
        join(&j, w[i], addr[i], gn[i], i == 1 ? "ipc:///tmp/wren-ar-w1" : "");
        usleep(20000);  // ranks follow the order of the reports
    }
    uint8_t tk[4][WR_TOKEN_LEN];
    for (int i = 0; i < 4; i++) {
        recv_type(w[i], WR_MT_CLUSTER_MAP, 1, &map[i]);
        assert_int_equal(map[i].rank, i);
        memcpy(tk[i], map[i].token, WR_TOKEN_LEN);
    }
    assert_memory_not_equal(tk[0], tk[1], WR_TOKEN_LEN);
    for (int i = 0; i < 4; i++) {
        check_map(&map[i], (const uint8_t(*)[WR_TOKEN_LEN])tk);
        wr_pmsg_clear(&map[i]);
    }
    // the membership is fixed: a late REGISTER and a JOIN are refused
    wr_endpoint *late = node(&j);
    send_register(&j, late, WR_ROLE_WORKER, 0, "", "", "");
    expect_stop(late, WR_MT_ERROR, -1, "mode=allreduce has a fixed membership", NULL);
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_JOIN);
    h.role = WR_ROLE_WORKER;
    snprintf(h.host, sizeof h.host, "late");
    send_msg(&j, late, &h);
    expect_stop(late, WR_MT_ERROR, WR_EC_REJECTED, "fixed membership", NULL);
    // digests of sh = 0 from every worker, then everyone leaves at the last step
    for (uint64_t t = 5; t <= STEPS; t += 5)
        for (int i = 0; i < 4; i++) send_simple(&j, w[i], WR_MT_DIGEST, i, t, 0xabc + t);
    leave_all(&j, w, 4);
    assert_int_equal(finish(&j), WR_EXIT_OK);
    for (int i = 0; i < 4; i++) wr_close(w[i]);
    wr_close(sh);
    wr_close(late);
    cleanup(&j);
}

// Differing digests between workers stop the job (status 4).
static void test_ar_digest_mismatch(void **state) {
    (void)state;
    job j;
    start(&j, 2, WR_AR_ALLGATHER, 10, NULL);
    wr_endpoint *w[2];
    form(&j, w, 2, 7200, NULL, NULL, NULL);
    send_simple(&j, w[0], WR_MT_DIGEST, 0, 5, 1);
    send_simple(&j, w[1], WR_MT_DIGEST, 1, 5, 2);
    expect_stop(w[0], WR_MT_SHUTDOWN, WR_EXIT_DIVERGED, NULL, NULL);
    end(&j, WR_EXIT_DIVERGED, w, 2);
}

// hierarchical with groups of 2 and 1: stopped at formation (status 2),
// the reason lists every group.
static void test_ar_unequal_groups(void **state) {
    (void)state;
    job j;
    start(&j, 3, WR_AR_HIER, 10, NULL);
    static const char *const gn[3] = {"node-a", "node-b", "node-a"};
    wr_endpoint *w[3];
    connect_all(&j, w, 3, 7300, gn, NULL);
    expect_stop(w[0], WR_MT_SHUTDOWN, WR_EXIT_CONFIG, "groups of unequal size: node-a 2, node-b 1",
                "allreduce_algo=flat");
    end(&j, WR_EXIT_CONFIG, w, 3);
}

// The same groups form with flat (no equal sizes needed).
static void test_ar_unequal_groups_flat(void **state) {
    (void)state;
    job j;
    start(&j, 3, WR_AR_ALLGATHER, 10, NULL);
    static const char *const gn[3] = {"node-a", "node-b", "node-a"};
    wr_endpoint *w[3];
    wr_pmsg map[3];
    form(&j, w, 3, 7400, gn, NULL, map);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(map[i].workers[1].group, 1);
        assert_int_equal(map[i].workers[2].group, 0);
        wr_pmsg_clear(&map[i]);
    }
    leave_all(&j, w, 3);
    end(&j, WR_EXIT_OK, w, 3);
}

// No data address, or another worker's: ERROR{config} naming it; the job
// still waits for its workers (here: the registration timeout).
static void test_ar_bad_addresses(void **state) {
    (void)state;
    job j;
    start(&j, 3, WR_AR_ALLGATHER, 1, NULL);
    wr_endpoint *w[3] = {node(&j), node(&j), node(&j)};
    join(&j, w[0], "", "n", "");
    expect_stop(w[0], WR_MT_ERROR, WR_EC_CONFIG, "no data address (field 'a')", NULL);
    join(&j, w[1], "tcp://*:7500", "n", "");
    usleep(50000);
    join(&j, w[2], "tcp://127.0.0.1:7500", "n", "");  // the same endpoint as w[1]'s wildcard
    expect_stop(w[2], WR_MT_ERROR, WR_EC_CONFIG, "data address tcp://127.0.0.1:7500 is taken by worker",
                NULL);
    end(&j, WR_EXIT_REGISTER_TIMEOUT, w, 3);
}

// A worker leaving before the last step stops the job: status 5, named.
static void test_ar_worker_departs(void **state) {
    (void)state;
    job j;
    start(&j, 2, WR_AR_ALLGATHER, 10, NULL);
    wr_endpoint *w[2];
    form(&j, w, 2, 7600, NULL, NULL, NULL);
    send_simple(&j, w[1], WR_MT_LEAVE, 1, 3, 0);
    expect_stop(w[0], WR_MT_SHUTDOWN, WR_EXIT_NODE_LOST,
                "worker 1 on host host-x left the job after step 3 of 10",
                "mode=allreduce cannot go on without it");
    end(&j, WR_EXIT_NODE_LOST, w, 2);
}

// A worker whose connection closes is lost: the job stops (status 5).
static void test_ar_worker_lost(void **state) {
    (void)state;
    job j;
    start(&j, 2, WR_AR_ALLGATHER, 10, NULL);
    wr_endpoint *w[2];
    form(&j, w, 2, 7700, NULL, NULL, NULL);
    wr_close(w[1]);
    expect_stop(w[0], WR_MT_SHUTDOWN, WR_EXIT_NODE_LOST, "worker 1 on host host-x is dead",
                "mode=allreduce cannot go on without it");
    end(&j, WR_EXIT_NODE_LOST, w, 1);
}

// A worker's ERROR (its peers are alive) stops the job with status 5.
static void test_ar_worker_error(void **state) {
    (void)state;
    job j;
    start(&j, 2, WR_AR_ALLGATHER, 10, NULL);
    wr_endpoint *w[2];
    form(&j, w, 2, 7800, NULL, NULL, NULL);
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_ERROR);
    h.job_id = j.o.cfg.job_id;
    h.epoch = 1;
    h.rank = 1;
    h.code = WR_EC_INTERNAL;
    snprintf(h.reason, sizeof h.reason, "out of memory");
    send_msg(&j, w[1], &h);
    expect_stop(w[0], WR_MT_SHUTDOWN, WR_EXIT_NODE_LOST,
                "worker 1 on host host-x reported an error (error): out of memory",
                "mode=allreduce cannot go on without it");
    end(&j, WR_EXIT_NODE_LOST, w, 2);
}

// With CURVE keys each map entry carries the key the worker's connection
// was authenticated with.
static void test_ar_keys(void **state) {
    (void)state;
    char err[WR_ERR_LEN];
    wr_keys_pair wk[2];
    wr_allow_entry allow[2];
    wr_node_keys keys = {.on = 1};
    assert_int_equal(wr_key_generate(&keys.self, err), WR_OK);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(wr_key_generate(&wk[i], err), WR_OK);
        allow[i] = (wr_allow_entry){.role = WR_ROLE_WORKER, .line = i + 1};
        memcpy(allow[i].key, wk[i].public_key, sizeof allow[i].key);
    }
    keys.allow = (wr_allowlist){.e = allow, .n = 2};
    job j;
    start(&j, 2, WR_AR_ALLGATHER, 10, &keys);
    wr_endpoint *w[2];
    wr_pmsg map[2];
    form(&j, w, 2, 7900, NULL, wk, map);
    for (int i = 0; i < 2; i++) {
        for (int r = 0; r < 2; r++) assert_string_equal(map[i].workers[r].key, wk[r].public_key);
        wr_pmsg_clear(&map[i]);
    }
    leave_all(&j, w, 2);
    end(&j, WR_EXIT_OK, w, 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ar_forms_and_ends), cmocka_unit_test(test_ar_digest_mismatch),
        cmocka_unit_test(test_ar_unequal_groups), cmocka_unit_test(test_ar_unequal_groups_flat),
        cmocka_unit_test(test_ar_bad_addresses),  cmocka_unit_test(test_ar_worker_departs),
        cmocka_unit_test(test_ar_worker_lost),    cmocka_unit_test(test_ar_worker_error),
        cmocka_unit_test(test_ar_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
