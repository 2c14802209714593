// test_coord_node_agg.c — the coordinator with ps_node_aggregate = on
// (server/coord_node_agg.c, docs/ARCHITECTURE.md "Node aggregation
// (mode=ps)"): a real coordinator in a thread on loopback tcp, a shard and
// workers as test sockets. 2 nodes x 2 workers: the shard's epoch-1 map
// lists the two leaders only (the lowest rank of each group, with their
// tokens), each worker's lists all four with data addresses, groups and
// every token, and the shard ranges; a worker leaving before the end stops
// the job (status 5, the SHUTDOWN reaches the shard). Groups of unequal
// size stop the job at formation (status 2).
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

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void start(job *j, int workers) {
    memset(j, 0, sizeof *j);
    snprintf(j->addr, sizeof j->addr, "tcp://127.0.0.1:%d", free_port());
    j->o.bind = j->addr;
    wr_config_defaults(&j->o.cfg);
    j->o.cfg.ps_node_aggregate = 1;
    j->o.cfg.shards = 1;
    j->o.cfg.workers = workers;
    j->o.cfg.steps = STEPS;
    j->o.cfg.register_timeout = 10;
    j->o.cfg.heartbeat_interval = 0.2;
    snprintf(j->o.cfg.model, sizeof j->o.cfg.model, "synthetic:%d", D);
    char err[WR_ERR_LEN];
    assert_int_equal(wr_config_validate(&j->o.cfg, err), WR_OK);
    assert_int_equal(pthread_create(&j->th, NULL, run_coord, j), 0);
    j->ctx = wr_transport_ctx_new(1, err);
    assert_non_null(j->ctx);
}

static wr_endpoint *node(job *j) {
    char err[WR_ERR_LEN];
    wr_endpoint_opts eo;
    wr_endpoint_opts_default(&eo);
    eo.linger_ms = 0;
    wr_endpoint *ep = NULL;
    assert_int_equal(wr_connect(j->ctx, j->addr, &eo, &ep, err), WR_OK);
    return ep;
}

static void send_msg(job *j, wr_endpoint *ep, const wr_pmsg *h) {
    char err[WR_ERR_LEN];
    assert_int_equal(wr_send_pmsg(ep, NULL, 0, h, NULL, 0, NULL, NULL, 1000, &j->b, err), WR_OK);
}

static void send_register(job *j, wr_endpoint *ep, int role, uint64_t d, const char *addr, const char *gn) {
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_REGISTER);
    h.role = role;
    snprintf(h.host, sizeof h.host, "host-%s", gn[0] ? gn : "x");
    h.n_params = d;
    snprintf(h.addr, sizeof h.addr, "%s", addr);
    snprintf(h.group_name, sizeof h.group_name, "%s", gn);
    send_msg(j, ep, &h);
}

// The next message of `type` (a map: of `epoch`) on ep, into *out.
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

// A shard and n workers (group names gn[i], reported in order i) registered.
static wr_endpoint *register_all(job *j, wr_endpoint **w, const char *const *gn, int n) {
    wr_endpoint *sh = node(j);
    send_register(j, sh, WR_ROLE_SHARD, 0, "tcp://127.0.0.1:9", "");
    wr_pmsg m;
    recv_type(sh, WR_MT_CLUSTER_MAP, 0, &m);
    wr_pmsg_clear(&m);
    for (int i = 0; i < n; i++) {
        char addr[64];
        snprintf(addr, sizeof addr, "tcp://127.0.0.1:%d", 7200 + i);
        w[i] = node(j);
        send_register(j, w[i], WR_ROLE_WORKER, 0, "", "");
        recv_type(w[i], WR_MT_CLUSTER_MAP, 0, &m);
        wr_pmsg_clear(&m);
        send_register(j, w[i], WR_ROLE_WORKER, D, addr, gn[i]);
        usleep(20000);  // ranks follow the order of the reports
    }
    return sh;
}

static void send_leave(job *j, wr_endpoint *ep, int rank, uint64_t step) {
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_LEAVE);
    h.job_id = j->o.cfg.job_id;
    h.epoch = 1;
    h.rank = rank;
    h.step = step;
    h.role = WR_ROLE_WORKER;
    send_msg(j, ep, &h);
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
    send_leave(&j, w[3], 3, 4);
    wr_pmsg m;
    recv_type(sh, WR_MT_SHUTDOWN, 0, &m);
    assert_int_equal(m.code, WR_EXIT_NODE_LOST);
    assert_non_null(strstr(m.reason, "ps_node_aggregate cannot go on without it"));
    wr_pmsg_clear(&m);
    assert_int_equal(pthread_join(j.th, NULL), 0);
    assert_int_equal(j.status, WR_EXIT_NODE_LOST);
    for (int i = 0; i < 4; i++) wr_close(w[i]);
    wr_close(sh);
    wr_transport_ctx_free(j.ctx);
    wr_buf_free(&j.b);
}

static void test_unequal_groups(void **state) {
    (void)state;
    job j;
    start(&j, 3);
    static const char *const gn[3] = {"node-a", "node-b", "node-a"};
    wr_endpoint *w[3];
    wr_endpoint *sh = register_all(&j, w, gn, 3);
    wr_pmsg m;
    recv_type(w[0], WR_MT_SHUTDOWN, 0, &m);
    assert_int_equal(m.code, WR_EXIT_CONFIG);
    assert_non_null(strstr(m.reason, "ps_node_aggregate: groups of unequal size: node-a 2, node-b 1"));
    wr_pmsg_clear(&m);
    assert_int_equal(pthread_join(j.th, NULL), 0);
    assert_int_equal(j.status, WR_EXIT_CONFIG);
    for (int i = 0; i < 3; i++) wr_close(w[i]);
    wr_close(sh);
    wr_transport_ctx_free(j.ctx);
    wr_buf_free(&j.b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_maps_and_fixed_membership),
        cmocka_unit_test(test_unequal_groups),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
