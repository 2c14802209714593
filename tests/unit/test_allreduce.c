// test_allreduce.c — the steps of mode=allreduce (worker/ar_mesh.c,
// ar_algo.c) run by several workers in threads of this process (the
// workers of ar_fixture.h: ipc data endpoints in a temp dir, a silent
// coordinator socket). For each algorithm, after a few steps with fixed
// seeds every worker holds the same parameters, and those equal a direct
// computation from the same gradients written here from the definitions
// (ALGORITHMS.md 1.4, 1.5): the bits each worker encodes, the node counts,
// the node re-quantization (the scalar *_ref kernel and the documented
// key), the counts across nodes, the update; for the ring, the sums in ring
// order and Adam. The transport's byte counts of the inter-node connections
// must be the payloads the algorithm defines plus one bounded header per
// CHUNK.
#include "ar_fixture.h"
#include "node.h"
#include "optim.h"

#define STEPS ARF_STEPS
#define HDR_MAX 96  // bytes of a CHUNK header at most (docs/PROTOCOL.md, "All-reduce")

typedef ar_fixture fixture;

static void setup_fixture(fixture *f, int algo, int n_groups, int G, uint64_t d) {
    arf_open(f, "ar", n_groups, G, d);
    f->cfg.mode = WR_MODE_ALLREDUCE;
    f->cfg.allreduce_algo = algo;
    f->cfg.codec = algo == WR_AR_RING ? WR_JOB_CODEC_FP32 : WR_JOB_CODEC_BIRDER;
    f->cfg.step_timeout = 20;
    f->step = wr_ar_step;
    for (int r = 0; r < f->n; r++) arf_make_worker(f, r);
    for (int r = 0; r < f->n; r++) {
        arf_take_map(f, r, 1);  // map order is not rank order
        wr_ps_step_init(f->w[r]);
        wr_ar_step_init(f->w[r]);
    }
}

static void run_all(fixture *f) {
    arf_run(f);
    arf_assert_ok(f);
}

// ---- the direct computations ------------------------------------------------------

// Birder through the hierarchy (flat: one group of all workers, no
// re-quantization) for every step, from every worker's own m, b.
static void birder_reference(const fixture *f, float *x, int hier) {
    size_t wd = wr_birder_words(f->d);
    float *m = calloc((size_t)f->n * f->d, sizeof *m), *b = calloc((size_t)f->n * f->d, sizeof *b);
    uint64_t *q = calloc((size_t)f->n * wd, 8);
    for (int t = 1; t <= STEPS; t++) {
        arf_encode(f, t, m, b, q);
        for (uint64_t j = 0; j < f->d; j++) {
            int cnt = 0, N = hier ? f->n_groups : f->n;
            // per node its workers' count re-quantized, P(+1) = s / G; flat: per worker its bit
            for (int g = 0; g < N; g++)
                cnt += hier ? arf_node_bit(f, q, wd, g, t, j) : bit(q + (size_t)g * wd, j);
            float u = (float)(2 * cnt - N) / (float)N;
            x[j] = apply_one(x[j], u, 0.01f, f->cfg.wd);
        }
    }
    free(m);
    free(b);
    free(q);
}

// The ring: chunk c summed from its owner on, in ring order, then the mean
// and Adam with the job's defaults.
static void ring_reference(const fixture *f, float *x) {
    const wr_job_config *c = &f->cfg;
    uint64_t lo[ARF_MAX_W], hi[ARF_MAX_W];
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
        wr_adam_update_ref(x, m, v, avg, f->d, t, 0.01f, c->adam_beta1, c->adam_beta2, c->adam_eps, c->wd);
    }
    free(m);
    free(v);
    free(avg);
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
        arf_check_replicas(&f, ref);
        // (N - 1) * d / 8 per node: the q' of every slice to each other node
        uint64_t pay = (uint64_t)(f.n_groups - 1) * wr_birder_words(f.d) * 8;
        check_inter_bytes(&f, pay, (f.n_groups - 1) * f.G);
        free(ref);
        arf_close(&f);
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
    arf_check_replicas(&f, ref);
    check_inter_bytes(&f, (uint64_t)(f.n - 1) * wr_birder_words(f.d) * 8, f.n - 1);
    free(ref);
    arf_close(&f);
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
        arf_check_replicas(&f, ref);
        free(ref);
        arf_close(&f);
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
        h.job_id = f.w[0]->cfg.job_id;
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
    arf_check_replicas(&f, ref);
    assert_int_equal(f.w[0]->ar->n_refused, 3);
    free(ref);
    arf_close(&f);
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
