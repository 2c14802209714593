// coord_job.h — a real coordinator in a thread on loopback tcp, and nodes
// as test sockets that speak to it, shared by test_coord_allreduce.c and
// test_coord_node_agg.c. Static functions and no globals: each test is one
// translation unit, and the coordinator thread shares only its job.
#ifndef WR_TEST_COORD_JOB_H
#define WR_TEST_COORD_JOB_H

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
#include "keys.h"
#include "node.h"
#include "proto.h"
#include "transport.h"

#define JOB_D 4096  // parameters: the model is synthetic:JOB_D
#define JOB_STEPS 10

typedef struct {
    wr_coord_opts o;
    pthread_t th;
    int status;
    char addr[64];
    wr_transport_ctx *ctx;
    wr_buf b;
} job;

static inline void *job_run_coord(void *arg) {
    job *j = arg;
    j->status = wr_coordinator_run(&j->o);
    return NULL;
}

// A free loopback port (the kernel's pick; closed again before the coordinator binds it).
static inline int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

// The job's options: a free port, `workers` workers, JOB_STEPS steps of
// synthetic:JOB_D, fast probes (a closed connection is seen within 0.2 s),
// keys if given. The caller sets its mode, then job_start.
static inline void job_init(job *j, int workers, const wr_node_keys *keys) {
    memset(j, 0, sizeof *j);
    if (keys) j->o.keys = *keys;
    snprintf(j->addr, sizeof j->addr, "tcp://127.0.0.1:%d", free_port());
    j->o.bind = j->addr;
    wr_config_defaults(&j->o.cfg);
    j->o.cfg.workers = workers;
    j->o.cfg.steps = JOB_STEPS;
    j->o.cfg.heartbeat_interval = 0.2;
    snprintf(j->o.cfg.model, sizeof j->o.cfg.model, "synthetic:%d", JOB_D);
}

// Validates the options and runs the coordinator in its thread.
static inline void job_start(job *j) {
    char err[WR_ERR_LEN];
    assert_int_equal(wr_config_validate(&j->o.cfg, err), WR_OK);
    assert_int_equal(pthread_create(&j->th, NULL, job_run_coord, j), 0);
    j->ctx = wr_transport_ctx_new(1, err);
    assert_non_null(j->ctx);
}

// The coordinator's exit status once it ended.
static inline int finish(job *j) {
    assert_int_equal(pthread_join(j->th, NULL), 0);
    return j->status;
}

// After the test's sockets are closed.
static inline void cleanup(job *j) {
    wr_transport_ctx_free(j->ctx);
    wr_buf_free(&j->b);
}

// A node's connection; with kp (CURVE keys) authenticated with that pair.
static inline wr_endpoint *node_keyed(job *j, const wr_keys_pair *kp) {
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

static inline wr_endpoint *node(job *j) { return node_keyed(j, NULL); }

static inline void send_msg(job *j, wr_endpoint *ep, const wr_pmsg *h) {
    char err[WR_ERR_LEN];
    assert_int_equal(wr_send_pmsg(ep, NULL, 0, h, NULL, 0, NULL, NULL, 1000, &j->b, err), WR_OK);
}

// REGISTER of a node of `role` on host "host-<gn>" ("host-x" without a
// group): a worker's hello (d = 0) or its report with d and its data
// endpoints (addr "" = none, gn "" = none, la "" = none).
static inline void send_register(job *j, wr_endpoint *ep, int role, uint64_t d, const char *addr,
                                 const char *gn, const char *la) {
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_REGISTER);
    h.role = role;
    snprintf(h.host, sizeof h.host, "host-%s", gn[0] ? gn : "x");
    h.n_params = d;
    snprintf(h.addr, sizeof h.addr, "%s", addr);
    snprintf(h.group_name, sizeof h.group_name, "%s", gn);
    snprintf(h.local_addr, sizeof h.local_addr, "%s", la);
    send_msg(j, ep, &h);
}

// The next message of `type` (and, for a map, of `epoch`) on ep, into *out.
static inline void recv_type(wr_endpoint *ep, int type, uint64_t epoch, wr_pmsg *out) {
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

// Both REGISTERs of worker ep: the hello, then (after the welcome, an
// epoch-0 map) the report with JOB_D. Returns the welcome's shard count.
static inline uint32_t join_worker(job *j, wr_endpoint *ep, const char *addr, const char *gn,
                                   const char *la) {
    wr_pmsg m;
    send_register(j, ep, WR_ROLE_WORKER, 0, "", "", "");
    recv_type(ep, WR_MT_CLUSTER_MAP, 0, &m);
    uint32_t n_shards = m.n_shards;
    wr_pmsg_clear(&m);
    send_register(j, ep, WR_ROLE_WORKER, JOB_D, addr, gn, la);
    return n_shards;
}

// A worker's message of epoch 1 with its rank and step; a DIGEST carries
// `digest` for shard 0.
static inline void send_simple(job *j, wr_endpoint *ep, int type, int rank, uint64_t step, uint64_t digest) {
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

// The next message of `type` (ERROR or SHUTDOWN) on ep: its code is `code`
// (any, if code < 0) and its reason contains each of the `why` given (NULL = none).
static inline void expect_stop(wr_endpoint *ep, int type, int code, const char *why, const char *why2) {
    wr_pmsg m;
    recv_type(ep, type, 0, &m);
    if (code >= 0) assert_int_equal(m.code, code);
    if (why) assert_non_null(strstr(m.reason, why));
    if (why2) assert_non_null(strstr(m.reason, why2));
    wr_pmsg_clear(&m);
}

#endif
