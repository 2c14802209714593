// test_coord_allreduce.c — the coordinator in mode=allreduce
// (server/coord_allreduce.c, docs/ARCHITECTURE.md "mode=allreduce"): a real
// coordinator in a thread on loopback tcp, workers as test sockets. The
// epoch-1 map has no shards, each member's data address (a wildcard host
// replaced by 127.0.0.1, the address the coordinator sees), groups numbered
// by sorted name, every member's token; digests are compared between the
// workers; shards, late registrations and JOINs are refused; unequal groups
// stop hierarchical at formation; a REGISTER with d but no data address is
// refused, so is a taken data address; a worker leaving early stops the job.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "config.h"
#include "keys.h"
#include "coordinator.h"
#include "node.h"
#include "proto.h"
#include "transport.h"

#define D 4096
#define STEPS 10

typedef struct {
    wr_coord_opts o;
    pthread_t th;
    int status;
    char addr[64];
    wr_transport_ctx *ctx;
    wr_buf b;
} job;

static void *run_coord(void *arg) {
    job *j = arg;
    j->status = wr_coordinator_run(&j->o);
    return NULL;
}

// A free loopback port (the kernel's pick; closed again before the coordinator binds it).
static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void start_keyed(job *j, int workers, int algo, double register_timeout, const wr_node_keys *keys);

static void start(job *j, int workers, int algo, double register_timeout) {
    start_keyed(j, workers, algo, register_timeout, NULL);
}

static void start_keyed(job *j, int workers, int algo, double register_timeout, const wr_node_keys *keys) {
    memset(j, 0, sizeof *j);
    if (keys) j->o.keys = *keys;
    snprintf(j->addr, sizeof j->addr, "tcp://127.0.0.1:%d", free_port());
    j->o.bind = j->addr;
    wr_config_defaults(&j->o.cfg);
    j->o.cfg.mode = WR_MODE_ALLREDUCE;
    j->o.cfg.allreduce_algo = algo;
    j->o.cfg.workers = workers;
    j->o.cfg.steps = STEPS;
    j->o.cfg.digest_every = 5;
    j->o.cfg.register_timeout = register_timeout;
    j->o.cfg.heartbeat_interval = 0.2;  // probes: a closed connection is seen within 0.2 s
    snprintf(j->o.cfg.model, sizeof j->o.cfg.model, "synthetic:%d", D);
    char err[WR_ERR_LEN];
    assert_int_equal(wr_config_validate(&j->o.cfg, err), WR_OK);
    assert_int_equal(pthread_create(&j->th, NULL, run_coord, j), 0);
    j->ctx = wr_transport_ctx_new(1, err);
    assert_non_null(j->ctx);
}

// The coordinator's exit status once it ended.
static int finish(job *j) {
    assert_int_equal(pthread_join(j->th, NULL), 0);
    return j->status;
}

// After the test's sockets are closed.
static void cleanup(job *j) {
    wr_transport_ctx_free(j->ctx);
    wr_buf_free(&j->b);
}

// A worker's connection; with kp (CURVE keys) authenticated with that pair.
static wr_endpoint *node_keyed(job *j, const wr_keys_pair *kp) {
    char err[WR_ERR_LEN];
    wr_endpoint_opts eo;
    wr_endpoint_opts_default(&eo);
    eo.linger_ms = 0;
    if (kp) {
        eo.curve = kp;
        snprintf(eo.curve_server_key, sizeof eo.curve_server_key, "%s", j->o.keys.self.public_key);
    }
    wr_endpoint *ep = NULL;
    assert_int_equal(wr_connect(j->ctx, j->addr, &eo, &ep, err), WR_OK);
    return ep;
}

static wr_endpoint *node(job *j) { return node_keyed(j, NULL); }

static void send_msg(job *j, wr_endpoint *ep, const wr_pmsg *h) {
    char err[WR_ERR_LEN];
    assert_int_equal(wr_send_pmsg(ep, NULL, 0, h, NULL, 0, NULL, NULL, 1000, &j->b, err), WR_OK);
}

// REGISTER of a worker: the hello (d = 0) or the report with d and its data
// endpoints (addr "" = none, gn "" = none).
static void send_register(job *j, wr_endpoint *ep, uint64_t d, const char *addr, const char *gn,
                          const char *la) {
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_REGISTER);
    h.role = WR_ROLE_WORKER;
    snprintf(h.host, sizeof h.host, "host-%s", gn[0] ? gn : "x");
    h.n_params = d;
    snprintf(h.addr, sizeof h.addr, "%s", addr);
    snprintf(h.group_name, sizeof h.group_name, "%s", gn);
    snprintf(h.local_addr, sizeof h.local_addr, "%s", la);
    send_msg(j, ep, &h);
}

// The next message of `type` (and, for a map, of `epoch`) on ep, into *out.
static void recv_type(wr_endpoint *ep, int type, uint64_t epoch, wr_pmsg *out) {
    char err[WR_ERR_LEN];
    for (int i = 0; i < 20; i++) {
        wr_msg m;
        memset(&m, 0, sizeof m);
        assert_int_equal(wr_recv(ep, &m, 5000, err), WR_OK);
        int rc = wr_proto_decode(m.header.data, m.header.len, m.payload.len, NULL, out, NULL, err);
        wr_msg_release(&m);
        assert_int_equal(rc, WR_OK);
        if (out->type == type && (type != WR_MT_CLUSTER_MAP || out->epoch == epoch)) return;
        wr_pmsg_clear(out);
    }
    fail_msg("no %s", wr_msg_type_name(type));
}

// Both REGISTERs of worker ep; the welcome is checked on the way.
static void join(job *j, wr_endpoint *ep, const char *addr, const char *gn, const char *la) {
    wr_pmsg m;
    send_register(j, ep, 0, "", "", "");
    recv_type(ep, WR_MT_CLUSTER_MAP, 0, &m);
    assert_int_equal(m.n_shards, 0);
    wr_pmsg_clear(&m);
    send_register(j, ep, D, addr, gn, la);
}

static void send_simple(job *j, wr_endpoint *ep, int type, int rank, uint64_t step, uint64_t digest) {
    wr_pmsg h;
    wr_pmsg_init(&h, type);
    h.job_id = j->o.cfg.job_id;
    h.epoch = 1;
    h.rank = rank;
    h.step = step;
    h.role = WR_ROLE_WORKER;
    if (type == WR_MT_DIGEST) h.shard = 0, h.digest = digest;
    send_msg(j, ep, &h);
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
    start(&j, 4, WR_AR_HIER, 10);
    static const char *gn[4] = {"node-b", "node-a", "node-b", "node-a"};
    static const char *addr[4] = {"tcp://*:7100", "tcp://0.0.0.0:7101", "tcp://10.9.9.9:7102",
                                  "tcp://*:7103"};
    wr_endpoint *w[4], *sh = node(&j);
    wr_pmsg m, map[4];
    // a shard is refused
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_REGISTER);
    h.role = WR_ROLE_SHARD;
    snprintf(h.host, sizeof h.host, "s");
    snprintf(h.addr, sizeof h.addr, "tcp://127.0.0.1:9");
    send_msg(&j, sh, &h);
    recv_type(sh, WR_MT_ERROR, 0, &m);
    assert_int_equal(m.code, WR_EC_REJECTED);
    assert_non_null(strstr(m.reason, "mode=allreduce runs without shards"));
    wr_pmsg_clear(&m);
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
    send_register(&j, late, 0, "", "", "");
    recv_type(late, WR_MT_ERROR, 0, &m);
    assert_non_null(strstr(m.reason, "mode=allreduce has a fixed membership"));
    wr_pmsg_clear(&m);
    wr_pmsg_init(&h, WR_MT_JOIN);
    h.role = WR_ROLE_WORKER;
    snprintf(h.host, sizeof h.host, "late");
    send_msg(&j, late, &h);
    recv_type(late, WR_MT_ERROR, 0, &m);
    assert_int_equal(m.code, WR_EC_REJECTED);
    assert_non_null(strstr(m.reason, "fixed membership"));
    wr_pmsg_clear(&m);
    // digests of sh = 0 from every worker, then everyone leaves at the last step
    for (uint64_t t = 5; t <= STEPS; t += 5)
        for (int i = 0; i < 4; i++) send_simple(&j, w[i], WR_MT_DIGEST, i, t, 0xabc + t);
    for (int i = 0; i < 4; i++) send_simple(&j, w[i], WR_MT_LEAVE, i, STEPS, 0);
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
    start(&j, 2, WR_AR_ALLGATHER, 10);
    wr_endpoint *w[2];
    wr_pmsg m;
    for (int i = 0; i < 2; i++) {
        w[i] = node(&j);
        join(&j, w[i], i ? "tcp://*:7201" : "tcp://*:7200", "n", "");
        usleep(20000);
    }
    for (int i = 0; i < 2; i++) {
        recv_type(w[i], WR_MT_CLUSTER_MAP, 1, &m);
        wr_pmsg_clear(&m);
    }
    send_simple(&j, w[0], WR_MT_DIGEST, 0, 5, 1);
    send_simple(&j, w[1], WR_MT_DIGEST, 1, 5, 2);
    recv_type(w[0], WR_MT_SHUTDOWN, 0, &m);
    assert_int_equal(m.code, WR_EXIT_DIVERGED);
    wr_pmsg_clear(&m);
    assert_int_equal(finish(&j), WR_EXIT_DIVERGED);
    for (int i = 0; i < 2; i++) wr_close(w[i]);
    cleanup(&j);
}

// hierarchical with groups of 2 and 1: stopped at formation (status 2),
// the reason lists every group.
static void test_ar_unequal_groups(void **state) {
    (void)state;
    job j;
    start(&j, 3, WR_AR_HIER, 10);
    static const char *gn[3] = {"node-a", "node-b", "node-a"};
    wr_endpoint *w[3];
    for (int i = 0; i < 3; i++) {
        w[i] = node(&j);
        char a[32];
        snprintf(a, sizeof a, "tcp://*:%d", 7300 + i);
        join(&j, w[i], a, gn[i], "");
    }
    wr_pmsg m;
    recv_type(w[0], WR_MT_SHUTDOWN, 0, &m);
    assert_int_equal(m.code, WR_EXIT_CONFIG);
    assert_non_null(strstr(m.reason, "groups of unequal size: node-a 2, node-b 1"));
    assert_non_null(strstr(m.reason, "allreduce_algo=flat"));
    wr_pmsg_clear(&m);
    assert_int_equal(finish(&j), WR_EXIT_CONFIG);
    for (int i = 0; i < 3; i++) wr_close(w[i]);
    cleanup(&j);
}

// The same groups form with flat (no equal sizes needed).
static void test_ar_unequal_groups_flat(void **state) {
    (void)state;
    job j;
    start(&j, 3, WR_AR_ALLGATHER, 10);
    static const char *gn[3] = {"node-a", "node-b", "node-a"};
    wr_endpoint *w[3];
    for (int i = 0; i < 3; i++) {
        w[i] = node(&j);
        char a[32];
        snprintf(a, sizeof a, "tcp://*:%d", 7400 + i);
        join(&j, w[i], a, gn[i], "");
        usleep(20000);
    }
    wr_pmsg m;
    for (int i = 0; i < 3; i++) {
        recv_type(w[i], WR_MT_CLUSTER_MAP, 1, &m);
        assert_int_equal(m.workers[1].group, 1);
        assert_int_equal(m.workers[2].group, 0);
        wr_pmsg_clear(&m);
    }
    for (int i = 0; i < 3; i++) send_simple(&j, w[i], WR_MT_LEAVE, i, STEPS, 0);
    assert_int_equal(finish(&j), WR_EXIT_OK);
    for (int i = 0; i < 3; i++) wr_close(w[i]);
    cleanup(&j);
}

// No data address, or another worker's: ERROR{config} naming it; the job
// still waits for its workers (here: the registration timeout).
static void test_ar_bad_addresses(void **state) {
    (void)state;
    job j;
    start(&j, 3, WR_AR_ALLGATHER, 1);
    wr_endpoint *a = node(&j), *b = node(&j), *c = node(&j);
    wr_pmsg m;
    join(&j, a, "", "n", "");
    recv_type(a, WR_MT_ERROR, 0, &m);
    assert_int_equal(m.code, WR_EC_CONFIG);
    assert_non_null(strstr(m.reason, "no data address (field 'a')"));
    wr_pmsg_clear(&m);
    join(&j, b, "tcp://*:7500", "n", "");
    usleep(50000);
    join(&j, c, "tcp://127.0.0.1:7500", "n", "");  // the same endpoint as b's wildcard
    recv_type(c, WR_MT_ERROR, 0, &m);
    assert_int_equal(m.code, WR_EC_CONFIG);
    assert_non_null(strstr(m.reason, "data address tcp://127.0.0.1:7500 is taken by worker"));
    wr_pmsg_clear(&m);
    assert_int_equal(finish(&j), WR_EXIT_REGISTER_TIMEOUT);
    wr_close(a);
    wr_close(b);
    wr_close(c);
    cleanup(&j);
}

// A worker leaving before the last step stops the job: status 5, named.
static void test_ar_worker_departs(void **state) {
    (void)state;
    job j;
    start(&j, 2, WR_AR_ALLGATHER, 10);
    wr_endpoint *w[2];
    wr_pmsg m;
    for (int i = 0; i < 2; i++) {
        w[i] = node(&j);
        join(&j, w[i], i ? "tcp://*:7601" : "tcp://*:7600", "n", "");
        usleep(20000);
    }
    for (int i = 0; i < 2; i++) {
        recv_type(w[i], WR_MT_CLUSTER_MAP, 1, &m);
        wr_pmsg_clear(&m);
    }
    send_simple(&j, w[1], WR_MT_LEAVE, 1, 3, 0);
    recv_type(w[0], WR_MT_SHUTDOWN, 0, &m);
    assert_int_equal(m.code, WR_EXIT_NODE_LOST);
    assert_non_null(strstr(m.reason, "worker 1 on host host-x left the job after step 3 of 10"));
    assert_non_null(strstr(m.reason, "mode=allreduce cannot go on without it"));
    wr_pmsg_clear(&m);
    assert_int_equal(finish(&j), WR_EXIT_NODE_LOST);
    for (int i = 0; i < 2; i++) wr_close(w[i]);
    cleanup(&j);
}

// 2 workers formed (ranks 0, 1) with fast probes.
static void form_two(job *j, wr_endpoint **w, int port) {
    wr_pmsg m;
    for (int i = 0; i < 2; i++) {
        w[i] = node(j);
        char a[32];
        snprintf(a, sizeof a, "tcp://*:%d", port + i);
        join(j, w[i], a, "n", "");
        usleep(20000);
    }
    for (int i = 0; i < 2; i++) {
        recv_type(w[i], WR_MT_CLUSTER_MAP, 1, &m);
        assert_int_equal(m.rank, i);
        wr_pmsg_clear(&m);
    }
}

// A worker whose connection closes is lost: the job stops (status 5).
static void test_ar_worker_lost(void **state) {
    (void)state;
    job j;
    start(&j, 2, WR_AR_ALLGATHER, 10);
    wr_endpoint *w[2];
    form_two(&j, w, 7700);
    wr_close(w[1]);
    wr_pmsg m;
    recv_type(w[0], WR_MT_SHUTDOWN, 0, &m);
    assert_int_equal(m.code, WR_EXIT_NODE_LOST);
    assert_non_null(strstr(m.reason, "worker 1 on host host-x is dead"));
    assert_non_null(strstr(m.reason, "mode=allreduce cannot go on without it"));
    wr_pmsg_clear(&m);
    assert_int_equal(finish(&j), WR_EXIT_NODE_LOST);
    wr_close(w[0]);
    cleanup(&j);
}

// A worker's ERROR (its peers are alive) stops the job with status 5.
static void test_ar_worker_error(void **state) {
    (void)state;
    job j;
    start(&j, 2, WR_AR_ALLGATHER, 10);
    wr_endpoint *w[2];
    form_two(&j, w, 7800);
    wr_pmsg h, m;
    wr_pmsg_init(&h, WR_MT_ERROR);
    h.job_id = j.o.cfg.job_id;
    h.epoch = 1;
    h.rank = 1;
    h.code = WR_EC_INTERNAL;
    snprintf(h.reason, sizeof h.reason, "out of memory");
    send_msg(&j, w[1], &h);
    recv_type(w[0], WR_MT_SHUTDOWN, 0, &m);
    assert_int_equal(m.code, WR_EXIT_NODE_LOST);
    assert_non_null(strstr(m.reason, "worker 1 on host host-x reported an error (error): out of memory"));
    assert_non_null(strstr(m.reason, "mode=allreduce cannot go on without it"));
    wr_pmsg_clear(&m);
    assert_int_equal(finish(&j), WR_EXIT_NODE_LOST);
    wr_close(w[0]);
    wr_close(w[1]);
    cleanup(&j);
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
    start_keyed(&j, 2, WR_AR_ALLGATHER, 10, &keys);
    wr_endpoint *w[2];
    wr_pmsg m;
    for (int i = 0; i < 2; i++) {
        w[i] = node_keyed(&j, &wk[i]);
        join(&j, w[i], i ? "tcp://*:7901" : "tcp://*:7900", "n", "");
        usleep(20000);
    }
    for (int i = 0; i < 2; i++) {
        recv_type(w[i], WR_MT_CLUSTER_MAP, 1, &m);
        assert_int_equal(m.rank, i);
        for (int r = 0; r < 2; r++) assert_string_equal(m.workers[r].key, wk[r].public_key);
        wr_pmsg_clear(&m);
    }
    for (int i = 0; i < 2; i++) send_simple(&j, w[i], WR_MT_LEAVE, i, STEPS, 0);
    assert_int_equal(finish(&j), WR_EXIT_OK);
    for (int i = 0; i < 2; i++) wr_close(w[i]);
    cleanup(&j);
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
