// ar_fixture.h — the workers shared by test_allreduce.c and test_node_agg.c:
// n = n_groups * G wr_ps run in threads of the test process (rank r in group
// r % n_groups), each as ps_join.c leaves it after the map, with its data
// endpoints on ipc sockets in a temp dir and a coordinator socket that never
// answers (ipc, not inproc, so that ThreadSanitizer sees no hand-over inside
// uninstrumented libzmq); fixed gradients and start parameters; and the
// pieces of the direct computations both tests compare with (ALGORITHMS.md
// 1.4, 1.5). Static functions and no globals: each test is one translation
// unit, and the threads share only the fixture they are given.
#ifndef WR_TEST_AR_FIXTURE_H
#define WR_TEST_AR_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "allreduce.h"
#include "birder.h"
#include "config.h"
#include "ps.h"
#include "rng.h"
#include "transport.h"

#define ARF_MAX_W 8
#define ARF_STEPS 3
#define ARF_SEED 77  // the job's seed: it keys the workers' and the nodes' bits

// What one worker runs for each step (wr_ar_step, or wr_ps_step through a wrapper).
typedef int (*arf_step_fn)(wr_ps *w, wr_exchange_step *st, char *err);

typedef struct {
    int n_groups, G, n;  // n = n_groups * G workers, rank r in group r % n_groups
    uint64_t d;
    wr_job_config cfg;  // every worker's (arf_open: the defaults with seed ARF_SEED)
    arf_step_fn step;
    float lr[ARF_STEPS + 1];  // of step t (arf_open: 0.01)
    wr_transport_ctx *ctx;
    wr_endpoint *coord;  // bound: never answers
    wr_ps *w[ARF_MAX_W];
    wr_ps_opts o[ARF_MAX_W];
    char addr[ARF_MAX_W][128];
    char dir[64], coord_addr[128];
    float *g[ARF_MAX_W][ARF_STEPS];  // gradient of worker r at step t
    float *x0;
    int rc[ARF_MAX_W];
    char err[ARF_MAX_W][WR_ERR_LEN];
} ar_fixture;

static inline float frand(wr_rng_key k, uint32_t i) {
    return (float)(wr_rng_u32(k, i) >> 8) / 8388608.0f - 1.0f;
}

static inline int group_of(const ar_fixture *f, int r) { return r % f->n_groups; }

// Everything but the workers: the temp dir /tmp/wren-test-<tag>.XXXXXX, the
// silent coordinator, x0 and the gradients (fixed seeds).
static inline void arf_open(ar_fixture *f, const char *tag, int n_groups, int G, uint64_t d) {
    memset(f, 0, sizeof *f);
    f->n_groups = n_groups;
    f->G = G;
    f->n = n_groups * G;
    f->d = d;
    wr_config_defaults(&f->cfg);
    f->cfg.seed = ARF_SEED;
    for (int t = 0; t <= ARF_STEPS; t++) f->lr[t] = 0.01f;
    char err[WR_ERR_LEN];
    snprintf(f->dir, sizeof f->dir, "/tmp/wren-test-%s.XXXXXX", tag);
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->coord_addr, sizeof f->coord_addr, "ipc://%s/coord.sock", f->dir);
    f->ctx = wr_transport_ctx_new(1, err);
    assert_non_null(f->ctx);
    wr_endpoint_opts eo;
    wr_endpoint_opts_default(&eo);
    assert_int_equal(wr_bind(f->ctx, f->coord_addr, &eo, &f->coord, err), WR_OK);
    f->x0 = malloc(d * sizeof(float));
    wr_rng_key k0 = wr_rng_key_make(5, 5, 5);
    for (uint64_t j = 0; j < d; j++) f->x0[j] = frand(k0, (uint32_t)j);
    for (int r = 0; r < f->n; r++)
        for (int t = 0; t < ARF_STEPS; t++) {
            f->g[r][t] = malloc(d * sizeof(float));
            wr_rng_key k = wr_rng_key_make(9, (uint64_t)r, (uint64_t)t);
            for (uint64_t j = 0; j < d; j++) f->g[r][t][j] = 0.1f * frand(k, (uint32_t)j);
        }
}

// Rank r's wr_ps as ps_join.c leaves it before the map: f->cfg, the
// coordinator connected, its data endpoint bound, x = x0, token 0x40 + r.
static inline void arf_make_worker(ar_fixture *f, int r) {
    wr_ps *w = calloc(1, sizeof *w);
    wr_ps_opts *o = &f->o[r];
    wr_ps_opts_default(o);
    o->coordinator = f->coord_addr;
    snprintf(f->addr[r], sizeof f->addr[r], "ipc://%s/data-%d.sock", f->dir, r);
    o->data_bind = f->addr[r];
    w->o = o;
    w->cfg = f->cfg;
    w->cfg_ok = 1;
    w->ctx = f->ctx;
    w->rank = r;
    w->epoch = 1;
    w->ec = -1;
    w->d = f->d;
    char err[WR_ERR_LEN];
    wr_endpoint_opts eo;
    wr_endpoint_opts_default(&eo);
    assert_int_equal(wr_connect(f->ctx, o->coordinator, &eo, &w->coord, err), WR_OK);
    assert_int_equal(wr_ar_bind(w, err), 0);
    w->x = malloc(f->d * sizeof(float));
    memcpy(w->x, f->x0, f->d * sizeof(float));
    memset(w->token, 0x40 + r, WR_TOKEN_LEN);
    f->w[r] = w;
}

// Rank r takes the map every worker gets: each member with its group, data
// address and token, in rank order or (reversed) the other way round.
static inline void arf_take_map(ar_fixture *f, int r, int reversed) {
    wr_cluster c = {.epoch = 1, .n_params = f->d, .n_workers = f->n, .my_rank = r};
    c.workers = calloc((size_t)f->n, sizeof *c.workers);
    wr_pmsg m;
    wr_pmsg_init(&m, WR_MT_CLUSTER_MAP);
    m.n_tokens = (uint32_t)f->n;
    m.tokens = calloc((size_t)f->n, WR_TOKEN_LEN);
    for (int i = 0; i < f->n; i++) {
        int k = reversed ? f->n - 1 - i : i;
        c.workers[i].rank = k;
        c.workers[i].group = group_of(f, k);
        snprintf(c.workers[i].addr, sizeof c.workers[i].addr, "%s", f->w[k]->ar->bound[0]);
        memset(m.tokens[i], 0x40 + k, WR_TOKEN_LEN);
    }
    char err[WR_ERR_LEN];
    assert_int_equal(wr_ar_take_map(f->w[r], &c, &m, err), 0);
    free(c.workers);
    wr_pmsg_clear(&m);
}

static inline void *arf_run_worker(void *arg) {
    void **a = arg;
    ar_fixture *f = a[0];
    int r = (int)(intptr_t)a[1];
    wr_ps *w = f->w[r];
    for (int t = 1; t <= ARF_STEPS && !f->rc[r]; t++) {
        w->g = f->g[r][t - 1];
        wr_exchange_step st = {.t = t, .lr = f->lr[t]};
        f->rc[r] = f->step(w, &st, f->err[r]);
    }
    return NULL;
}

// Every worker runs ARF_STEPS steps of f->step in its own thread; returns
// when all have ended (arf_assert_ok then checks how).
static inline void arf_run(ar_fixture *f) {
    pthread_t th[ARF_MAX_W];
    void *args[ARF_MAX_W][2];
    for (int r = 0; r < f->n; r++) {
        args[r][0] = f;
        args[r][1] = (void *)(intptr_t)r;
        assert_int_equal(pthread_create(&th[r], NULL, arf_run_worker, args[r]), 0);
    }
    for (int r = 0; r < f->n; r++) pthread_join(th[r], NULL);
}

static inline void arf_assert_ok(const ar_fixture *f) {
    for (int r = 0; r < f->n; r++) {
        if (f->rc[r]) fprintf(stderr, "worker %d: %s\n", r, f->err[r]);
        assert_int_equal(f->rc[r], 0);
    }
}

// Frees what arf_open and arf_make_worker made, after the test's own
// endpoints are closed and its own sockets removed; the dir must be empty.
static inline void arf_close(ar_fixture *f) {
    for (int r = 0; r < f->n; r++) {
        wr_ps *w = f->w[r];
        wr_ar_free(w->ar);
        wr_ps_progress_free(w);  // the shard waits a leader's steps recorded
        wr_close(w->coord);
        wr_buf_free(&w->hbuf);
        free(w->m);
        free(w->b);
        free(w->x);
        free(w);
        for (int t = 0; t < ARF_STEPS; t++) free(f->g[r][t]);
    }
    wr_close(f->coord);
    wr_transport_ctx_free(f->ctx);
    free(f->x0);
    char path[160];
    snprintf(path, sizeof path, "%s/coord.sock", f->dir);
    unlink(path);
    assert_int_equal(rmdir(f->dir), 0);  // the workers removed their sockets
}

// ---- the direct computations ------------------------------------------------------

static inline int bit(const uint64_t *v, uint64_t j) { return (int)(v[j / 64] >> (j % 64) & 1); }

// x -= lr * (u + wd * x), the four operations of birder.h.
static inline float apply_one(float x, float u, float lr, float wd) {
    float t = wd * x;
    t = u + t;
    t = lr * t;
    return x - t;
}

// Bit j of the re-quantization of count c of n (keyed, global index j):
// element j regenerated as bit j % 64 of its 64-block.
static inline int requant_bit(int c, int n, wr_rng_key key, uint64_t j) {
    uint64_t pl[16] = {0}, blk = 0;
    for (int p = 0; p < wr_birder_planes(n); p++) pl[p] = (uint64_t)(c >> p & 1) << (j % 64);
    wr_birder_requantize_ref(pl, n, 64, key, j & ~63ull, &blk);
    return (int)(blk >> (j % 64) & 1);
}

// The bits every worker encodes at step t, each from its own m and b (n
// vectors of d floats), into q (n vectors of wd = wr_birder_words(d) words).
static inline void arf_encode(const ar_fixture *f, int t, float *m, float *b, uint64_t *q) {
    size_t wd = wr_birder_words(f->d);
    for (int r = 0; r < f->n; r++)
        wr_birder_encode_ref(f->g[r][t - 1], m + (size_t)r * f->d, b + (size_t)r * f->d, f->d, f->cfg.beta,
                             wr_rng_key_make(ARF_SEED, (uint64_t)r, (uint64_t)t), 0, q + (size_t)r * wd);
}

// Node g's bit j at step t: the count of its workers' bits (q, vectors of
// wd words) re-quantized to one bit, keyed (seed, 0xA0000000 + g, t).
static inline int arf_node_bit(const ar_fixture *f, const uint64_t *q, size_t wd, int g, int t, uint64_t j) {
    int s = 0;
    for (int r = 0; r < f->n; r++) s += group_of(f, r) == g ? bit(q + (size_t)r * wd, j) : 0;
    return requant_bit(s, f->G, wr_rng_key_make(ARF_SEED, 0xA0000000ull + (uint64_t)g, (uint64_t)t), j);
}

// Every worker's x equals ref, bit for bit.
static inline void arf_check_replicas(const ar_fixture *f, const float *ref) {
    for (int r = 0; r < f->n; r++) {
        uint64_t bad = f->d;
        for (uint64_t j = 0; j < f->d && bad == f->d; j++)
            if (memcmp(&f->w[r]->x[j], &ref[j], 4)) bad = j;
        if (bad < f->d)
            fprintf(stderr, "worker %d: x[%llu] = %.9g, reference %.9g\n", r, (unsigned long long)bad,
                    (double)f->w[r]->x[bad], (double)ref[bad]);
        assert_int_equal(bad, f->d);
    }
}

#endif
