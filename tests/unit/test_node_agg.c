// test_node_agg.c — node aggregation in mode=ps (worker/ps_agg.c,
// ps_node_aggregate = on) run by several workers in threads of this
// process, against two shards in another thread that run the real shard
// step logic (server/shard.h), over ipc sockets in a temp dir (the
// coordinator is a silent socket). With N groups of G workers (rank r in
// group r % N, so the leaders are ranks 0..N-1), after a few steps with
// fixed seeds:
//   - each shard got exactly one push per node per step, from the leaders;
//   - every worker holds the same parameters, equal to the shard's master
//     copy and to a direct computation from the definitions (the workers'
//     bits, the node count and re-quantization keyed (seed, 0xA0000000 + g,
//     t), the shard's count over the N nodes, then its re-quantization
//     keyed (seed, 0xB0000000 + s, t) for broadcast = 1bit, or the counts
//     themselves for exact).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "allreduce.h"
#include "birder.h"
#include "config.h"
#include "digest.h"
#include "ps.h"
#include "rng.h"
#include "schedule.h"
#include "shard.h"
#include "transport.h"

#define MAX_W 8
#define S 2  // shards
#define STEPS 3

typedef struct {
    int n_groups, G, n, exact;
    uint64_t d;
    uint64_t lo[S], hi[S];
    wr_job_config cfg;
    wr_transport_ctx *ctx;
    wr_endpoint *coord;  // bound: never answers
    wr_endpoint *shard_ep[S];
    char shard_addr[S][128];
    wr_ps *w[MAX_W];
    wr_ps_opts o[MAX_W];
    char addr[MAX_W][128];
    char dir[64], coord_addr[128];
    float *g[MAX_W][STEPS];
    float *x0;
    int rc[MAX_W];
    char err[MAX_W][WR_ERR_LEN];
    // the shards' side
    atomic_int stop, shard_errors, pushes[S][STEPS + 1];
    uint64_t master_digest[S];
} fixture;

static float frand(wr_rng_key k, uint32_t i) { return (float)(wr_rng_u32(k, i) >> 8) / 8388608.0f - 1.0f; }

static int group_of(const fixture *f, int r) { return r % f->n_groups; }

static float lr_of(const fixture *f, int t) { return wr_lr_at(&f->cfg, t, STEPS); }

// ---- the shards: the real step logic, one push per node expected ---------------------

typedef struct {
    wr_shard_core *core;
    wr_msg held[MAX_W];  // the pushes of the step being collected (the core references them)
    void *out;
} shard_state;

static void shard_fail(fixture *f, const char *what, const char *err) {
    fprintf(stderr, "shard: %s: %s\n", what, err);
    atomic_fetch_add(&f->shard_errors, 1);
}

// Answers h (a BROADCAST) to the peer of rank r's push.
static void send_bcast(fixture *f, int s, const wr_msg *to, wr_pmsg *h, const void *payload) {
    wr_buf b = {0};
    char err[WR_ERR_LEN];
    if (wr_proto_encode(h, &b, err) != WR_OK) {
        shard_fail(f, "encode", err);
        return;
    }
    wr_msg m;
    memset(&m, 0, sizeof m);
    memcpy(m.peer, to->peer, to->peer_len);
    m.peer_len = to->peer_len;
    m.header.data = b.data;
    m.header.len = b.len;
    m.payload.data = (void *)payload;
    m.payload.len = h->payload_len;
    if (wr_send(f->shard_ep[s], &m, 5000, err) != WR_OK) shard_fail(f, "send", err);
    wr_buf_free(&b);
}

static void shard_push(fixture *f, int s, shard_state *ss, wr_msg *msg, const wr_pmsg *h) {
    char err[WR_ERR_LEN];
    if (h->type != WR_MT_PUSH) {
        shard_fail(f, "not a PUSH", wr_msg_type_name(h->type));
        return;
    }
    if (h->rank < 0 || h->rank >= f->n_groups) {
        shard_fail(f, "a PUSH from a worker that is no leader", "");
        return;
    }
    if (wr_shard_core_push(ss->core, h, msg->payload.data, msg->payload.len, err) != WR_OK) {
        shard_fail(f, "push", err);
        return;
    }
    if (h->step <= STEPS) atomic_fetch_add(&f->pushes[s][h->step], 1);
    ss->held[h->rank] = *msg;
    memset(msg, 0, sizeof *msg);
    if (!wr_shard_core_ready(ss->core)) return;
    wr_pmsg bh;
    if (wr_shard_core_finish(ss->core, ss->out, &bh, err) != WR_OK) {
        shard_fail(f, "finish", err);
        return;
    }
    bh.job_id = f->cfg.job_id;
    bh.epoch = 1;
    for (int r = 0; r < f->n_groups; r++) {
        send_bcast(f, s, &ss->held[r], &bh, ss->out);
        wr_msg_release(&ss->held[r]);
    }
    f->master_digest[s] = wr_shard_core_digest(ss->core);
}

static void shard_params(fixture *f, int s, shard_state *ss) {
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_PARAMS);
    h.shard = s;
    h.offset = f->lo[s];
    h.n_elems = f->hi[s] - f->lo[s];
    h.codec = WR_CODEC_FP32;
    char err[WR_ERR_LEN];
    if (wr_shard_core_set_params(ss->core, &h, f->x0 + f->lo[s], h.n_elems * 4, err) != WR_OK)
        shard_fail(f, "params", err);
}

static void *shards_main(void *arg) {
    fixture *f = arg;
    char err[WR_ERR_LEN];
    shard_state ss[S];
    memset(ss, 0, sizeof ss);
    for (int s = 0; s < S; s++) {
        ss[s].core = wr_shard_core_new(&f->cfg, s, f->lo[s], f->hi[s], f->n_groups, STEPS, err);
        if (!ss[s].core) return shard_fail(f, "core", err), NULL;
        // aligned_alloc wants a multiple of the alignment
        ss[s].out = aligned_alloc(64, (wr_shard_core_bcast_bytes(ss[s].core) / 64 + 1) * 64);
        shard_params(f, s, &ss[s]);
    }
    while (!atomic_load(&f->stop)) {
        int ready[S] = {0};
        if (wr_poll(f->shard_ep, S, ready, 50, err) <= 0) continue;
        for (int s = 0; s < S; s++) {
            wr_msg msg;
            memset(&msg, 0, sizeof msg);
            if (!ready[s] || wr_recv(f->shard_ep[s], &msg, 0, err) != WR_OK) continue;
            wr_pmsg h;
            if (wr_proto_decode(msg.header.data, msg.header.len, msg.payload.len, NULL, &h, NULL, err) ==
                WR_OK) {
                shard_push(f, s, &ss[s], &msg, &h);
                wr_pmsg_clear(&h);
            }
            wr_msg_release(&msg);
        }
    }
    for (int s = 0; s < S; s++) {
        for (int r = 0; r < MAX_W; r++) wr_msg_release(&ss[s].held[r]);
        free(ss[s].out);
        wr_shard_core_free(ss[s].core);
    }
    return NULL;
}

// ---- the workers ---------------------------------------------------------------------

// One worker's wr_ps as ps_join.c leaves it after the map, for rank r.
static void make_worker(fixture *f, int r) {
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
    w->n_shards = S;
    w->sh = calloc(S, sizeof *w->sh);
    w->poll_eps = calloc(S + 1, sizeof *w->poll_eps);
    w->ready = calloc(S + 1, sizeof *w->ready);
    for (int s = 0; s < S; s++) {
        w->sh[s].lo = f->lo[s];
        w->sh[s].hi = f->hi[s];
        snprintf(w->sh[s].addr, sizeof w->sh[s].addr, "%s", f->shard_addr[s]);
    }
    w->poll_eps[S] = w->coord;
    f->w[r] = w;
}

// The workers' map: every member with its group, data address and token;
// then the leaders connect to the shards as ps_join.c does.
static void give_map(fixture *f, int r) {
    wr_cluster c = {.epoch = 1, .n_params = f->d, .n_workers = f->n, .my_rank = r};
    c.workers = calloc((size_t)f->n, sizeof *c.workers);
    wr_pmsg m;
    wr_pmsg_init(&m, WR_MT_CLUSTER_MAP);
    m.n_tokens = (uint32_t)f->n;
    m.tokens = calloc((size_t)f->n, WR_TOKEN_LEN);
    for (int i = 0; i < f->n; i++) {
        c.workers[i].rank = i;
        c.workers[i].group = group_of(f, i);
        snprintf(c.workers[i].addr, sizeof c.workers[i].addr, "%s", f->w[i]->ar->bound[0]);
        memset(m.tokens[i], 0x40 + i, WR_TOKEN_LEN);
    }
    wr_ps *w = f->w[r];
    char err[WR_ERR_LEN];
    assert_int_equal(wr_ar_take_map(w, &c, &m, err), 0);
    free(c.workers);
    wr_pmsg_clear(&m);
    assert_int_equal(wr_agg_leader(w), r < f->n_groups);
    for (int s = 0; s < S && wr_agg_leader(w); s++) assert_int_equal(wr_ps_connect_shard(w, s, err), 0);
    wr_ps_step_init(w);
    wr_ar_step_init(w);
}

static void *run_worker(void *arg) {
    void **a = arg;
    fixture *f = a[0];
    int r = (int)(intptr_t)a[1];
    wr_ps *w = f->w[r];
    for (int t = 1; t <= STEPS && !f->rc[r]; t++) {
        w->g = f->g[r][t - 1];
        wr_exchange_step st = {.t = t, .lr = lr_of(f, t)};
        f->rc[r] = wr_ps_step(w, &st, f->err[r]);
    }
    return NULL;
}

static void setup_fixture(fixture *f, int n_groups, int G, int exact, uint64_t d) {
    memset(f, 0, sizeof *f);
    f->n_groups = n_groups;
    f->G = G;
    f->n = n_groups * G;
    f->exact = exact;
    f->d = d;
    wr_config_defaults(&f->cfg);
    f->cfg.ps_node_aggregate = 1;
    f->cfg.broadcast = exact ? WR_BCAST_EXACT : WR_BCAST_1BIT;
    f->cfg.seed = 77;
    f->cfg.step_timeout = 10;
    f->cfg.register_timeout = 1;
    f->cfg.workers = f->n;
    char err[WR_ERR_LEN];
    assert_int_equal(wr_config_validate(&f->cfg, err), WR_OK);
    assert_int_equal(wr_shard_ranges(d, S, f->lo, f->hi, err), WR_OK);
    snprintf(f->dir, sizeof f->dir, "/tmp/wren-test-agg.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->coord_addr, sizeof f->coord_addr, "ipc://%s/coord.sock", f->dir);
    f->ctx = wr_transport_ctx_new(1, err);
    assert_non_null(f->ctx);
    wr_endpoint_opts eo;
    wr_endpoint_opts_default(&eo);
    assert_int_equal(wr_bind(f->ctx, f->coord_addr, &eo, &f->coord, err), WR_OK);
    for (int s = 0; s < S; s++) {
        snprintf(f->shard_addr[s], sizeof f->shard_addr[s], "ipc://%s/shard-%d.sock", f->dir, s);
        assert_int_equal(wr_bind(f->ctx, f->shard_addr[s], &eo, &f->shard_ep[s], err), WR_OK);
    }
    f->x0 = malloc(d * sizeof(float));
    wr_rng_key k0 = wr_rng_key_make(5, 5, 5);
    for (uint64_t j = 0; j < d; j++) f->x0[j] = frand(k0, (uint32_t)j);
    for (int r = 0; r < f->n; r++)
        for (int t = 0; t < STEPS; t++) {
            f->g[r][t] = malloc(d * sizeof(float));
            wr_rng_key k = wr_rng_key_make(9, (uint64_t)r, (uint64_t)t);
            for (uint64_t j = 0; j < d; j++) f->g[r][t][j] = 0.1f * frand(k, (uint32_t)j);
        }
    for (int r = 0; r < f->n; r++) make_worker(f, r);
    for (int r = 0; r < f->n; r++) give_map(f, r);
}

static void run_all(fixture *f) {
    pthread_t th[MAX_W], sh;
    void *args[MAX_W][2];
    assert_int_equal(pthread_create(&sh, NULL, shards_main, f), 0);
    for (int r = 0; r < f->n; r++) {
        args[r][0] = f;
        args[r][1] = (void *)(intptr_t)r;
        assert_int_equal(pthread_create(&th[r], NULL, run_worker, args[r]), 0);
    }
    for (int r = 0; r < f->n; r++) pthread_join(th[r], NULL);
    atomic_store(&f->stop, 1);
    pthread_join(sh, NULL);
    for (int r = 0; r < f->n; r++) {
        if (f->rc[r]) fprintf(stderr, "worker %d: %s\n", r, f->err[r]);
        assert_int_equal(f->rc[r], 0);
    }
    assert_int_equal(atomic_load(&f->shard_errors), 0);
}

static void teardown_fixture(fixture *f) {
    for (int r = 0; r < f->n; r++) {
        wr_ps *w = f->w[r];
        wr_ar_free(w->ar);
        for (int s = 0; s < S; s++) {
            wr_close(w->sh[s].ep);
            for (int k = 0; k < 2; k++) free(w->sh[s].push[k].data);
        }
        wr_close(w->coord);
        wr_buf_free(&w->hbuf);
        free(w->sh);
        free(w->poll_eps);
        free(w->ready);
        free(w->align_scratch);
        free(w->m);
        free(w->b);
        free(w->x);
        free(w);
        for (int t = 0; t < STEPS; t++) free(f->g[r][t]);
    }
    for (int s = 0; s < S; s++) wr_close(f->shard_ep[s]);
    wr_close(f->coord);
    wr_transport_ctx_free(f->ctx);
    free(f->x0);
    char path[160];
    snprintf(path, sizeof path, "%s/coord.sock", f->dir);
    unlink(path);
    for (int s = 0; s < S; s++) {
        snprintf(path, sizeof path, "%s/shard-%d.sock", f->dir, s);
        unlink(path);
    }
    assert_int_equal(rmdir(f->dir), 0);  // the workers removed their sockets
}

// ---- the direct computation --------------------------------------------------------

static int bit(const uint64_t *v, uint64_t j) { return (int)(v[j / 64] >> (j % 64) & 1); }

static float apply_one(float x, float u, float lr, float wd) {
    float t = wd * x;
    t = u + t;
    t = lr * t;
    return x - t;
}

// Bit j of the re-quantization of count c of n (keyed, global index j):
// element j regenerated as bit j % 64 of its 64-block.
static int requant_bit(int c, int n, wr_rng_key key, uint64_t j) {
    uint64_t pl[16] = {0}, blk = 0;
    for (int p = 0; p < wr_birder_planes(n); p++) pl[p] = (uint64_t)(c >> p & 1) << (j % 64);
    wr_birder_requantize_ref(pl, n, 64, key, j & ~63ull, &blk);
    return (int)(blk >> (j % 64) & 1);
}

// Element j's update of step t from the workers' bits q (n vectors of wd words).
static float update_of(const fixture *f, const uint64_t *q, size_t wd, int s, int t, uint64_t j) {
    int N = f->n_groups, cnt = 0;
    for (int g = 0; g < N; g++) {
        int c = 0;
        for (int r = 0; r < f->n; r++) c += group_of(f, r) == g ? bit(q + (size_t)r * wd, j) : 0;
        cnt += requant_bit(c, f->G, wr_rng_key_make(77, 0xA0000000ull + (uint64_t)g, (uint64_t)t), j);
    }
    if (f->exact) return (float)(2 * cnt - N) / (float)N;
    return requant_bit(cnt, N, wr_rng_key_make(77, 0xB0000000ull + (uint64_t)s, (uint64_t)t), j) ? 1.0f
                                                                                                 : -1.0f;
}

static void reference(const fixture *f, float *x) {
    size_t wd = wr_birder_words(f->d);
    float *m = calloc((size_t)f->n * f->d, sizeof *m), *b = calloc((size_t)f->n * f->d, sizeof *b);
    uint64_t *q = calloc((size_t)f->n * wd, 8);
    for (int t = 1; t <= STEPS; t++) {
        for (int r = 0; r < f->n; r++)
            wr_birder_encode_ref(f->g[r][t - 1], m + (size_t)r * f->d, b + (size_t)r * f->d, f->d,
                                 f->cfg.beta, wr_rng_key_make(77, (uint64_t)r, (uint64_t)t), 0,
                                 q + (size_t)r * wd);
        for (int s = 0; s < S; s++)
            for (uint64_t j = f->lo[s]; j < f->hi[s]; j++)
                x[j] = apply_one(x[j], update_of(f, q, wd, s, t, j), lr_of(f, t), f->cfg.wd);
    }
    free(m);
    free(b);
    free(q);
}

static void check(fixture *f) {
    for (int s = 0; s < S; s++)
        for (int t = 1; t <= STEPS; t++) assert_int_equal(atomic_load(&f->pushes[s][t]), f->n_groups);
    float *ref = malloc(f->d * sizeof *ref);
    memcpy(ref, f->x0, f->d * sizeof *ref);
    reference(f, ref);
    for (int r = 0; r < f->n; r++) {
        uint64_t bad = f->d;
        for (uint64_t j = 0; j < f->d && bad == f->d; j++)
            if (memcmp(&f->w[r]->x[j], &ref[j], 4)) bad = j;
        if (bad < f->d)
            fprintf(stderr, "worker %d: x[%llu] = %.9g, reference %.9g\n", r, (unsigned long long)bad,
                    (double)f->w[r]->x[bad], (double)ref[bad]);
        assert_int_equal(bad, f->d);
    }
    for (int s = 0; s < S; s++)
        assert_true(wr_digest64(ref + f->lo[s], (f->hi[s] - f->lo[s]) * 4) == f->master_digest[s]);
    free(ref);
}

static void test_node_aggregate(void **state) {
    (void)state;
    int shapes[][3] = {{2, 2, 0}, {2, 2, 1}, {3, 2, 0}, {2, 3, 1}, {2, 1, 0}};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        fixture f;
        setup_fixture(&f, shapes[i][0], shapes[i][1], shapes[i][2], 64 * 37 + 11);
        run_all(&f);
        check(&f);
        teardown_fixture(&f);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_node_aggregate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
