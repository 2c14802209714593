// test_allreduce.c — the steps of mode=allreduce (worker/ar_mesh.c,
// ar_algo.c) run by several workers in threads of this process, over ipc
// data endpoints in a temp dir (the coordinator is a silent socket; ipc, not
// inproc, so that ThreadSanitizer sees no hand-over inside uninstrumented
// libzmq). For
// each algorithm, after a few steps with fixed seeds every worker holds the
// same parameters, and those equal a direct computation from the same
// gradients written here from the definitions (ALGORITHMS.md 1.4, 1.5):
// the bits each worker encodes, the node counts, the node re-quantization
// (the scalar *_ref kernel and the documented key), the counts across
// nodes, the update; for the ring, the sums in ring order and Adam. The
// transport's byte counts of the inter-node connections must be the
// payloads the algorithm defines plus one bounded header per CHUNK.
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
#include "node.h"
#include "config.h"
#include "optim.h"
#include "ps.h"
#include "rng.h"
#include "transport.h"

#define MAX_W 8
#define STEPS 3
#define HDR_MAX 96  // bytes of a CHUNK header at most (docs/PROTOCOL.md, "All-reduce")

typedef struct {
    int algo, n_groups, G, n;  // n = n_groups * G workers, rank r in group r % n_groups
    uint64_t d;
    wr_transport_ctx *ctx;
    wr_endpoint *coord;  // bound: never answers
    wr_ps *w[MAX_W];
    wr_ps_opts o[MAX_W];
    char addr[MAX_W][128];
    char dir[64], coord_addr[128];
    float *g[MAX_W][STEPS];  // gradient of worker r at step t
    float *x0;
    int rc[MAX_W];
    char err[MAX_W][WR_ERR_LEN];
} fixture;

static float frand(wr_rng_key k, uint32_t i) { return (float)(wr_rng_u32(k, i) >> 8) / 8388608.0f - 1.0f; }

static int group_of(const fixture *f, int r) { return r % f->n_groups; }

// One worker's wr_ps as ps_join.c would leave it after the map, for rank r.
static void make_worker(fixture *f, int r) {
    wr_ps *w = calloc(1, sizeof *w);
    wr_ps_opts *o = &f->o[r];
    wr_ps_opts_default(o);
    o->coordinator = f->coord_addr;
    snprintf(f->addr[r], sizeof f->addr[r], "ipc://%s/data-%d.sock", f->dir, r);
    o->data_bind = f->addr[r];
    w->o = o;
    wr_config_defaults(&w->cfg);
    w->cfg.mode = WR_MODE_ALLREDUCE;
    w->cfg.allreduce_algo = f->algo;
    w->cfg.codec = f->algo == WR_AR_RING ? WR_JOB_CODEC_FP32 : WR_JOB_CODEC_BIRDER;
    w->cfg.seed = 77;
    w->cfg.step_timeout = 20;
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
    f->w[r] = w;
}

// The map every worker gets: members with their groups, addresses, tokens.
static void give_map(fixture *f, int r) {
    wr_cluster c = {.epoch = 1, .n_params = f->d, .n_workers = f->n, .my_rank = r};
    c.workers = calloc((size_t)f->n, sizeof *c.workers);
    wr_pmsg m;
    wr_pmsg_init(&m, WR_MT_CLUSTER_MAP);
    m.n_tokens = (uint32_t)f->n;
    m.tokens = calloc((size_t)f->n, WR_TOKEN_LEN);
    for (int i = 0; i < f->n; i++) {
        int k = f->n - 1 - i;  // map order is not rank order
        c.workers[i].rank = k;
        c.workers[i].group = group_of(f, k);
        snprintf(c.workers[i].addr, sizeof c.workers[i].addr, "%s", f->w[k]->ar->bound[0]);
        memset(m.tokens[i], 0x40 + k, WR_TOKEN_LEN);
    }
    memset(f->w[r]->token, 0x40 + r, WR_TOKEN_LEN);
    char err[WR_ERR_LEN];
    assert_int_equal(wr_ar_take_map(f->w[r], &c, &m, err), 0);
    free(c.workers);
    wr_pmsg_clear(&m);
    wr_ps_step_init(f->w[r]);
    wr_ar_step_init(f->w[r]);
}

static void *run_worker(void *arg) {
    void **a = arg;
    fixture *f = a[0];
    int r = (int)(intptr_t)a[1];
    wr_ps *w = f->w[r];
    for (int t = 1; t <= STEPS && !f->rc[r]; t++) {
        w->g = f->g[r][t - 1];
        wr_exchange_step st = {.t = t, .lr = 0.01f};
        f->rc[r] = wr_ar_step(w, &st, f->err[r]);
    }
    return NULL;
}

static void setup_fixture(fixture *f, int algo, int n_groups, int G, uint64_t d) {
    memset(f, 0, sizeof *f);
    f->algo = algo;
    f->n_groups = n_groups;
    f->G = G;
    f->n = n_groups * G;
    f->d = d;
    char err[WR_ERR_LEN];
    snprintf(f->dir, sizeof f->dir, "/tmp/wren-test-ar.XXXXXX");
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
        for (int t = 0; t < STEPS; t++) {
            f->g[r][t] = malloc(d * sizeof(float));
            wr_rng_key k = wr_rng_key_make(9, (uint64_t)r, (uint64_t)t);
            for (uint64_t j = 0; j < d; j++) f->g[r][t][j] = 0.1f * frand(k, (uint32_t)j);
        }
    for (int r = 0; r < f->n; r++) make_worker(f, r);
    for (int r = 0; r < f->n; r++) give_map(f, r);
}

static void run_all(fixture *f) {
    pthread_t th[MAX_W];
    void *args[MAX_W][2];
    for (int r = 0; r < f->n; r++) {
        args[r][0] = f;
        args[r][1] = (void *)(intptr_t)r;
        assert_int_equal(pthread_create(&th[r], NULL, run_worker, args[r]), 0);
    }
    for (int r = 0; r < f->n; r++) pthread_join(th[r], NULL);
    for (int r = 0; r < f->n; r++) {
        if (f->rc[r]) fprintf(stderr, "worker %d: %s\n", r, f->err[r]);
        assert_int_equal(f->rc[r], 0);
    }
}

static void teardown_fixture(fixture *f) {
    for (int r = 0; r < f->n; r++) {
        wr_ps *w = f->w[r];
        wr_ar_free(w->ar);
        wr_close(w->coord);
        wr_buf_free(&w->hbuf);
        free(w->m);
        free(w->b);
        free(w->x);
        free(w);
        for (int t = 0; t < STEPS; t++) free(f->g[r][t]);
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

static int bit(const uint64_t *v, uint64_t j) { return (int)(v[j / 64] >> (j % 64) & 1); }

// x -= lr * (u + wd * x), the four operations of birder.h.
static float apply_one(float x, float u, float lr, float wd) {
    float t = wd * x;
    t = u + t;
    t = lr * t;
    return x - t;
}

// Birder through the hierarchy (flat: one group of all workers, no
// re-quantization) for every step, from every worker's own m, b.
static void birder_reference(const fixture *f, float *x, int hier) {
    wr_job_config c;
    wr_config_defaults(&c);
    size_t wd = wr_birder_words(f->d);
    float *m = calloc((size_t)f->n * f->d, sizeof *m), *b = calloc((size_t)f->n * f->d, sizeof *b);
    uint64_t *q = calloc((size_t)f->n * wd, 8);
    for (int t = 1; t <= STEPS; t++) {
        for (int r = 0; r < f->n; r++)
            wr_birder_encode_ref(f->g[r][t - 1], m + (size_t)r * f->d, b + (size_t)r * f->d, f->d, c.beta,
                                 wr_rng_key_make(77, (uint64_t)r, (uint64_t)t), 0, q + (size_t)r * wd);
        for (uint64_t j = 0; j < f->d; j++) {
            int cnt = 0, N = hier ? f->n_groups : f->n;
            for (int g = 0; g < N; g++) {
                if (!hier) {
                    cnt += bit(q + (size_t)g * wd, j);
                    continue;
                }
                int s = 0;
                for (int r = 0; r < f->n; r++) s += group_of(f, r) == g ? bit(q + (size_t)r * wd, j) : 0;
                // the node's re-quantization, P(+1) = s / G, keyed by (seed, group, step) and
                // the global index: element j regenerated as bit j % 64 of its 64-block
                uint64_t pl[16] = {0}, blk = 0;
                for (int p = 0; p < wr_birder_planes(f->G); p++) pl[p] = (uint64_t)(s >> p & 1) << (j % 64);
                wr_rng_key key = wr_rng_key_make(77, 0xA0000000ull + (uint64_t)g, (uint64_t)t);
                wr_birder_requantize_ref(pl, f->G, 64, key, j & ~63ull, &blk);
                cnt += (int)(blk >> (j % 64) & 1);
            }
            float u = (float)(2 * cnt - N) / (float)N;
            x[j] = apply_one(x[j], u, 0.01f, c.wd);
        }
    }
    free(m);
    free(b);
    free(q);
}

// The ring: chunk c summed from its owner on, in ring order, then the mean
// and Adam with the job's defaults.
static void ring_reference(const fixture *f, float *x) {
    wr_job_config c;
    wr_config_defaults(&c);
    uint64_t lo[MAX_W], hi[MAX_W];
    char err[WR_ERR_LEN];
    assert_int_equal(wr_shard_ranges(f->d, f->n, lo, hi, err), WR_OK);
    float *m = calloc(f->d, sizeof *m), *v = calloc(f->d, sizeof *v), *avg = calloc(f->d, sizeof *avg);
    for (int t = 1; t <= STEPS; t++) {
        for (int ch = 0; ch < f->n; ch++)
            for (uint64_t j = lo[ch]; j < hi[ch]; j++) {
                float s = f->g[ch][t - 1][j];
                for (int k = 1; k < f->n; k++) s = s + f->g[(ch + k) % f->n][t - 1][j];
                avg[j] = s * (1.0f / (float)f->n);
            }
        wr_adam_update_ref(x, m, v, avg, f->d, t, 0.01f, c.adam_beta1, c.adam_beta2, c.adam_eps, c.wd);
    }
    free(m);
    free(v);
    free(avg);
}

// Every worker's x equals ref, bit for bit.
static void check_replicas(const fixture *f, const float *ref) {
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

// The bytes each worker sent to other groups, summed per group, against
// what the algorithm sends: payloads exactly, and one header per CHUNK.
static void check_inter_bytes(fixture *f, uint64_t payload_per_group, int chunks_per_group) {
    for (int g = 0; g < f->n_groups; g++) {
        uint64_t sent = 0;
        for (int r = 0; r < f->n; r++)
            if (group_of(f, r) == g) sent += f->w[r]->ar->tx_inter;
        uint64_t pay = payload_per_group * STEPS;
        int chunks = chunks_per_group * STEPS;
        assert_true(sent > pay);
        assert_true(sent - pay <= (uint64_t)chunks * HDR_MAX);
        assert_true(sent - pay >= (uint64_t)chunks * 24);  // a header is never empty
    }
}

static void test_hierarchical(void **state) {
    (void)state;
    int shapes[][2] = {{2, 2}, {3, 2}, {2, 3}, {4, 1}};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        fixture f;
        setup_fixture(&f, WR_AR_HIER, shapes[i][0], shapes[i][1], 64 * 37 + 11);
        run_all(&f);
        float *ref = malloc(f.d * sizeof *ref);
        memcpy(ref, f.x0, f.d * sizeof *ref);
        birder_reference(&f, ref, 1);
        check_replicas(&f, ref);
        // (N - 1) * d / 8 per node: the q' of every slice to each other node
        uint64_t pay = (uint64_t)(f.n_groups - 1) * wr_birder_words(f.d) * 8;
        check_inter_bytes(&f, pay, (f.n_groups - 1) * f.G);
        free(ref);
        teardown_fixture(&f);
    }
}

static void test_flat(void **state) {
    (void)state;
    fixture f;
    setup_fixture(&f, WR_AR_ALLGATHER, 3, 1, 64 * 20 + 5);
    run_all(&f);
    float *ref = malloc(f.d * sizeof *ref);
    memcpy(ref, f.x0, f.d * sizeof *ref);
    birder_reference(&f, ref, 0);
    check_replicas(&f, ref);
    check_inter_bytes(&f, (uint64_t)(f.n - 1) * wr_birder_words(f.d) * 8, f.n - 1);
    free(ref);
    teardown_fixture(&f);
}

static void test_ring(void **state) {
    (void)state;
    int sizes[] = {1, 2, 3, 5};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        fixture f;
        setup_fixture(&f, WR_AR_RING, sizes[i], 1, 64 * 23 + 7);
        run_all(&f);
        float *ref = malloc(f.d * sizeof *ref);
        memcpy(ref, f.x0, f.d * sizeof *ref);
        ring_reference(&f, ref);
        check_replicas(&f, ref);
        free(ref);
        teardown_fixture(&f);
    }
}

// An outsider at worker 0's data endpoint: a CHUNK with another rank's
// token, one from a rank outside the job, and bytes that are not a header.
// Each is dropped and counted; the job's result is unchanged.
static void test_outsider(void **state) {
    (void)state;
    fixture f;
    setup_fixture(&f, WR_AR_HIER, 2, 2, 64 * 9);
    char err[WR_ERR_LEN];
    wr_endpoint_opts eo;
    wr_endpoint_opts_default(&eo);
    wr_endpoint *ep;
    assert_int_equal(wr_connect(f.ctx, f.w[0]->ar->bound[0], &eo, &ep, err), WR_OK);
    uint64_t bits[9] = {~0ull, ~0ull, ~0ull, ~0ull, ~0ull, ~0ull, ~0ull, ~0ull, ~0ull};
    for (int k = 0; k < 2; k++) {
        wr_pmsg h;
        wr_pmsg_init(&h, WR_MT_CHUNK);
        h.epoch = 1;
        h.step = 1;
        h.stage = WR_AR_SCATTER;
        h.rank = k == 0 ? 2 : 9;  // rank 2 is a member: its token is not 0x55...
        h.has_token = 1;
        memset(h.token, 0x55, WR_TOKEN_LEN);
        h.offset = 0;
        h.n_elems = 64 * 5;
        h.codec = WR_CODEC_BITS;
        h.payload_len = 5 * 8;
        wr_buf b = {0};
        assert_int_equal(wr_send_pmsg(ep, NULL, 0, &h, bits, 5 * 8, NULL, NULL, 1000, &b, err), WR_OK);
        wr_buf_free(&b);
    }
    wr_msg junk = {.header = {.data = "not msgpack", .len = 11}};
    assert_int_equal(wr_send(ep, &junk, 1000, err), WR_OK);
    usleep(200 * 1000);  // delivered to worker 0's endpoint before its first wait reads it
    run_all(&f);
    wr_close(ep);
    float *ref = malloc(f.d * sizeof *ref);
    memcpy(ref, f.x0, f.d * sizeof *ref);
    birder_reference(&f, ref, 1);
    check_replicas(&f, ref);
    assert_int_equal(f.w[0]->ar->n_refused, 3);
    free(ref);
    teardown_fixture(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hierarchical),
        cmocka_unit_test(test_flat),
        cmocka_unit_test(test_ring),
        cmocka_unit_test(test_outsider),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
