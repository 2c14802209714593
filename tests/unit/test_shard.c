// test_shard.c — the shard's step logic without sockets: key ranges, the
// Birder aggregation (1bit and exact) against the reference kernels and a
// worker-side apply, the fp32 codec's Adam/SGDM against hand-computed values,
// and refused pushes that leave the state unchanged.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "birder.h"
#include "config.h"
#include "digest.h"
#include "proto.h"
#include "rng.h"
#include "schedule.h"
#include "cluster.h"
#include "shard.h"

// ---- ranges ------------------------------------------------------------------------

static void test_ranges(void **state) {
    (void)state;
    const uint64_t ds[] = {1, 63, 64, 65, 127, 128, 535818, 110000000};
    uint64_t lo[16], hi[16];
    char err[WR_ERR_LEN];
    for (size_t di = 0; di < sizeof ds / sizeof ds[0]; di++) {
        uint64_t d = ds[di], blocks = (d + 63) / 64;
        for (int S = 1; S <= 16; S++) {
            int rc = wr_shard_ranges(d, S, lo, hi, err);
            if ((uint64_t)S > blocks) {
                assert_int_equal(rc, WR_ERR);
                assert_non_null(strstr(err, "shards"));
                continue;
            }
            assert_int_equal(rc, WR_OK);
            uint64_t minb = UINT64_MAX, maxb = 0;
            for (int i = 0; i < S; i++) {
                assert_true(lo[i] % 64 == 0);
                assert_true(hi[i] > lo[i]);
                assert_true(lo[i] == (i ? hi[i - 1] : 0));
                uint64_t nb = (hi[i] - lo[i] + 63) / 64;
                if (nb < minb) minb = nb;
                if (nb > maxb) maxb = nb;
            }
            assert_true(hi[S - 1] == d);
            assert_true(maxb - minb <= 1);
        }
    }
    assert_int_equal(wr_shard_ranges(0, 1, lo, hi, err), WR_ERR);
    assert_int_equal(wr_shard_ranges(100, 0, lo, hi, err), WR_ERR);
    assert_int_equal(wr_shard_ranges((1ULL << 40) + 1, 1, lo, hi, err), WR_ERR);
    // a range over 2^32 elements is refused with a hint
    assert_int_equal(wr_shard_ranges(1ULL << 33, 1, lo, hi, err), WR_ERR);
    assert_non_null(strstr(err, "more shards"));
}

// ---- helpers ------------------------------------------------------------------------

static void cfg_for(wr_job_config *cfg, int codec, int bcast) {
    wr_config_defaults(cfg);
    cfg->codec = codec;
    cfg->broadcast = bcast;
    cfg->lr = 0.01f;
    cfg->wd = 0.05f;
    cfg->lr_schedule = WR_LR_COSINE;
    cfg->warmup_steps = 1;
    cfg->seed = 1234;
}

static void params_msg(wr_pmsg *h, int shard, uint64_t lo, size_t n) {
    wr_pmsg_init(h, WR_MT_PARAMS);
    h->shard = shard;
    h->rank = 0;
    h->step = 0;
    h->offset = lo;
    h->n_elems = n;
    h->codec = WR_CODEC_FP32;
    h->payload_len = n * 4;
}

static void push_msg(wr_pmsg *h, int shard, uint64_t lo, size_t n, uint64_t step, int rank, int codec) {
    wr_pmsg_init(h, WR_MT_PUSH);
    h->shard = shard;
    h->rank = rank;
    h->step = step;
    h->offset = lo;
    h->n_elems = n;
    h->codec = codec;
    h->payload_len = codec == WR_CODEC_BITS ? wr_birder_words(n) * 8 : n * 4;
}

static void random_bits(uint64_t *w, size_t n, uint64_t seed, int rank, uint64_t step) {
    wr_rng_key k = wr_rng_key_make(seed, (uint64_t)rank, step);
    size_t words = wr_birder_words(n);
    for (size_t i = 0; i < words; i++)
        w[i] = (uint64_t)wr_rng_u32(k, (uint32_t)(2 * i)) << 32 | wr_rng_u32(k, (uint32_t)(2 * i + 1));
    if (n % 64) w[words - 1] |= ~0ULL << (n % 64);  // dirty tail bits must be ignored
}

// n workers push random bits for `steps` steps; after each step the broadcast
// equals the reference kernels' output and the master copy equals a worker's
// replica updated from the broadcast.
static void run_birder(int bcast, int n_workers, int shard, uint64_t lo, size_t n, int steps) {
    wr_job_config cfg;
    cfg_for(&cfg, WR_JOB_CODEC_BIRDER, bcast);
    char err[WR_ERR_LEN];
    int64_t total = 10;
    wr_shard_core *c = wr_shard_core_new(&cfg, shard, lo, lo + n, n_workers, total, err);
    assert_non_null(c);
    float *x0 = wr_alloc_vec(n * 4), *replica = wr_alloc_vec(n * 4);
    for (size_t j = 0; j < n; j++) x0[j] = replica[j] = (float)((int)(j % 17) - 8) * 0.125f;
    wr_pmsg h;
    params_msg(&h, shard, lo, n);
    assert_int_equal(wr_shard_core_set_params(c, &h, x0, n * 4, err), WR_OK);
    assert_true(wr_shard_core_digest(c) == wr_digest64(x0, n * 4));
    size_t words = wr_birder_words(n);
    int P = wr_birder_planes(n_workers);
    uint64_t **bits = malloc(sizeof *bits * (size_t)n_workers);
    for (int r = 0; r < n_workers; r++) bits[r] = wr_alloc_vec(words * 8);
    uint64_t *planes = wr_alloc_vec((size_t)P * words * 8);
    uint64_t *want = wr_alloc_vec((size_t)P * words * 8);
    size_t bb = wr_shard_core_bcast_bytes(c);
    assert_int_equal(bb, (bcast == WR_BCAST_EXACT ? (size_t)P : 1) * words * 8);
    uint64_t *out = wr_alloc_vec(bb);
    for (int t = 1; t <= steps; t++) {
        for (int r = n_workers - 1; r >= 0; r--) {  // arrival order must not matter
            random_bits(bits[r], n, 99, r, (uint64_t)t);
            push_msg(&h, shard, lo, n, (uint64_t)t, r, WR_CODEC_BITS);
            assert_false(wr_shard_core_ready(c));
            if (wr_shard_core_push(c, &h, bits[r], words * 8, err) != WR_OK) fail_msg("%s", err);
        }
        assert_true(wr_shard_core_ready(c));
        wr_pmsg bh;
        assert_int_equal(wr_shard_core_finish(c, out, &bh, err), WR_OK);
        assert_int_equal(bh.type, WR_MT_BROADCAST);
        assert_int_equal(bh.step, (uint64_t)t);
        assert_int_equal(bh.shard, shard);
        assert_int_equal(bh.offset, lo);
        assert_int_equal(bh.n_elems, n);
        assert_int_equal(bh.n_workers, (uint32_t)n_workers);
        assert_int_equal(bh.payload_len, wr_proto_payload_bytes(bh.codec, n, (uint32_t)n_workers));
        assert_int_equal(wr_shard_core_step(c), (uint64_t)t);
        wr_birder_count_planes_ref((const uint64_t *const *)bits, n_workers, n, planes);
        float lr_t = wr_lr_at(&cfg, t, total);
        if (bcast == WR_BCAST_EXACT) {
            assert_int_equal(bh.codec, WR_CODEC_PLANES);
            assert_memory_equal(out, planes, (size_t)P * words * 8);
            wr_birder_apply_planes_ref(replica, out, n_workers, n, lr_t, cfg.wd);
        } else {
            assert_int_equal(bh.codec, WR_CODEC_BITS);
            wr_rng_key key = wr_rng_key_make(cfg.seed, 0xB0000000ull + (uint64_t)shard, (uint64_t)t);
            wr_birder_requantize_ref(planes, n_workers, n, key, lo, want);
            assert_memory_equal(out, want, words * 8);
            wr_birder_apply_bits_ref(replica, out, n, lr_t, cfg.wd);
        }
        assert_memory_equal(wr_shard_core_params(c), replica, n * 4);
        assert_true(wr_shard_core_digest(c) == wr_digest64(replica, n * 4));
    }
    // the master copy moved
    assert_true(memcmp(wr_shard_core_params(c), x0, n * 4) != 0);
    for (int r = 0; r < n_workers; r++) free(bits[r]);
    free(bits);
    free(planes);
    free(want);
    free(out);
    free(x0);
    free(replica);
    wr_shard_core_free(c);
}

static void test_birder_1bit(void **state) {
    (void)state;
    run_birder(WR_BCAST_1BIT, 4, 1, 128, 200, 4);
    run_birder(WR_BCAST_1BIT, 1, 0, 0, 64, 2);
    run_birder(WR_BCAST_1BIT, 3, 2, 64 * 1000, 4096 + 13, 3);
}

static void test_birder_exact(void **state) {
    (void)state;
    run_birder(WR_BCAST_EXACT, 4, 1, 128, 200, 4);
    run_birder(WR_BCAST_EXACT, 7, 0, 0, 1000, 2);
    run_birder(WR_BCAST_EXACT, 1, 0, 0, 65, 2);
}

// A payload at an address that is not 8-byte aligned is copied, same result.
static void test_misaligned_payload(void **state) {
    (void)state;
    wr_job_config cfg;
    cfg_for(&cfg, WR_JOB_CODEC_BIRDER, WR_BCAST_1BIT);
    char err[WR_ERR_LEN];
    size_t n = 300, words = wr_birder_words(n);
    wr_shard_core *a = wr_shard_core_new(&cfg, 0, 0, n, 2, 10, err);
    wr_shard_core *b = wr_shard_core_new(&cfg, 0, 0, n, 2, 10, err);
    float x0[300] = {0};
    wr_pmsg h;
    params_msg(&h, 0, 0, n);
    assert_int_equal(wr_shard_core_set_params(a, &h, x0, n * 4, err), WR_OK);
    assert_int_equal(wr_shard_core_set_params(b, &h, x0, n * 4, err), WR_OK);
    uint64_t *bits0 = wr_alloc_vec(words * 8), *bits1 = wr_alloc_vec(words * 8);
    random_bits(bits0, n, 5, 0, 1);
    random_bits(bits1, n, 5, 1, 1);
    uint8_t *odd = wr_alloc_vec(words * 8 + 8);
    memcpy(odd + 3, bits1, words * 8);
    push_msg(&h, 0, 0, n, 1, 0, WR_CODEC_BITS);
    assert_int_equal(wr_shard_core_push(a, &h, bits0, words * 8, err), WR_OK);
    assert_int_equal(wr_shard_core_push(b, &h, bits0, words * 8, err), WR_OK);
    push_msg(&h, 0, 0, n, 1, 1, WR_CODEC_BITS);
    assert_int_equal(wr_shard_core_push(a, &h, bits1, words * 8, err), WR_OK);
    assert_int_equal(wr_shard_core_push(b, &h, odd + 3, words * 8, err), WR_OK);
    memset(odd, 0, words * 8 + 8);  // the copy, not the caller's bytes, is used
    uint64_t oa[8], ob[8];
    wr_pmsg bh;
    assert_int_equal(wr_shard_core_finish(a, oa, &bh, err), WR_OK);
    assert_int_equal(wr_shard_core_finish(b, ob, &bh, err), WR_OK);
    assert_memory_equal(oa, ob, words * 8);
    assert_memory_equal(wr_shard_core_params(a), wr_shard_core_params(b), n * 4);
    free(bits0);
    free(bits1);
    free(odd);
    wr_shard_core_free(a);
    wr_shard_core_free(b);
}

// ---- fp32 codec ------------------------------------------------------------------------

static void fp32_push(wr_shard_core *c, uint64_t t, int rank, const float *g, size_t n) {
    wr_pmsg h;
    char err[WR_ERR_LEN];
    push_msg(&h, 0, 0, n, t, rank, WR_CODEC_FP32);
    if (wr_shard_core_push(c, &h, g, n * 4, err) != WR_OK) fail_msg("%s", err);
}

static void test_fp32_adam(void **state) {
    (void)state;
    wr_job_config cfg;
    wr_config_defaults(&cfg);
    cfg.codec = WR_JOB_CODEC_FP32;
    cfg.optimizer = WR_OPT_ADAM;
    cfg.lr = 0.1f;
    cfg.wd = 0.0f;
    char err[WR_ERR_LEN];
    const size_t n = 64;
    wr_shard_core *c = wr_shard_core_new(&cfg, 0, 0, n, 2, 100, err);
    assert_non_null(c);
    float x0[64], g0[64], g1[64], out[64];
    for (size_t j = 0; j < n; j++) x0[j] = 1.0f;
    wr_pmsg h, bh;
    params_msg(&h, 0, 0, n);
    assert_int_equal(wr_shard_core_set_params(c, &h, x0, sizeof x0, err), WR_OK);
    assert_int_equal(wr_shard_core_bcast_bytes(c), n * 4);
    // step 1: average gradient 0.5 -> x = 1 - 0.1 * 0.5 / (0.5 + 1e-8) = 0.9
    for (size_t j = 0; j < n; j++) g0[j] = 0.2f, g1[j] = 0.8f;
    fp32_push(c, 1, 1, g1, n);
    fp32_push(c, 1, 0, g0, n);
    assert_int_equal(wr_shard_core_finish(c, out, &bh, err), WR_OK);
    assert_int_equal(bh.codec, WR_CODEC_FP32);
    for (size_t j = 0; j < n; j++) assert_float_equal(out[j], 0.9f, 1e-6);
    assert_memory_equal(out, wr_shard_core_params(c), sizeof out);
    // step 2: average -0.5. By hand: m = 0.9*0.05 - 0.1*0.5 = -0.005,
    // v = 0.999*0.00025 + 0.001*0.25 = 0.00049975, bc1 = 0.19, bc2 = 0.001999,
    // mhat = -0.0263158, vhat = 0.25, u = -0.0526316, x = 0.9 + 0.00526316
    for (size_t j = 0; j < n; j++) g0[j] = -0.5f, g1[j] = -0.5f;
    fp32_push(c, 2, 0, g0, n);
    fp32_push(c, 2, 1, g1, n);
    assert_int_equal(wr_shard_core_finish(c, out, &bh, err), WR_OK);
    for (size_t j = 0; j < n; j++) assert_float_equal(out[j], 0.90526316f, 2e-6);
    wr_shard_core_free(c);
}

static void test_fp32_sgdm_wd(void **state) {
    (void)state;
    wr_job_config cfg;
    wr_config_defaults(&cfg);
    cfg.codec = WR_JOB_CODEC_FP32;
    cfg.optimizer = WR_OPT_SGDM;
    cfg.momentum = 0.5f;
    cfg.lr = 0.1f;
    cfg.wd = 0.5f;
    char err[WR_ERR_LEN];
    const size_t n = 70;  // partial last block
    wr_shard_core *c = wr_shard_core_new(&cfg, 0, 0, n, 3, 100, err);
    float x0[70], g[3][70], out[70];
    for (size_t j = 0; j < n; j++) x0[j] = 2.0f;
    wr_pmsg h, bh;
    params_msg(&h, 0, 0, n);
    assert_int_equal(wr_shard_core_set_params(c, &h, x0, sizeof x0, err), WR_OK);
    for (int r = 0; r < 3; r++)
        for (size_t j = 0; j < n; j++) g[r][j] = (float)(r + 1);  // average 2
    for (int r = 0; r < 3; r++) fp32_push(c, 1, r, g[r], n);
    assert_int_equal(wr_shard_core_finish(c, out, &bh, err), WR_OK);
    // p = 2; x = 2 - 0.1 * (2 + 0.5 * 2) = 1.7
    for (size_t j = 0; j < n; j++) assert_float_equal(out[j], 1.7f, 1e-6);
    for (int r = 0; r < 3; r++) fp32_push(c, 2, r, g[r], n);
    assert_int_equal(wr_shard_core_finish(c, out, &bh, err), WR_OK);
    // p = 0.5*2 + 2 = 3; x = 1.7 - 0.1 * (3 + 0.85) = 1.315
    for (size_t j = 0; j < n; j++) assert_float_equal(out[j], 1.315f, 1e-6);
    wr_shard_core_free(c);
}

// The average is summed in rank order whatever the arrival order.
static void test_fp32_deterministic_order(void **state) {
    (void)state;
    wr_job_config cfg;
    wr_config_defaults(&cfg);
    cfg.codec = WR_JOB_CODEC_FP32;
    char err[WR_ERR_LEN];
    const size_t n = 128;
    float x0[128] = {0}, g[4][128], oa[128], ob[128];
    for (int r = 0; r < 4; r++)
        for (size_t j = 0; j < n; j++)
            g[r][j] = (float)(r == 0 ? 1e8 : r == 1 ? -1e8 : 1.0 + j * 1e-3) * (r == 3 ? 3.3f : 1.0f);
    wr_shard_core *a = wr_shard_core_new(&cfg, 0, 0, n, 4, 100, err);
    wr_shard_core *b = wr_shard_core_new(&cfg, 0, 0, n, 4, 100, err);
    wr_pmsg h, bh;
    params_msg(&h, 0, 0, n);
    wr_shard_core_set_params(a, &h, x0, sizeof x0, err);
    wr_shard_core_set_params(b, &h, x0, sizeof x0, err);
    for (int r = 0; r < 4; r++) fp32_push(a, 1, r, g[r], n);
    for (int r = 3; r >= 0; r--) fp32_push(b, 1, r, g[r], n);
    wr_shard_core_finish(a, oa, &bh, err);
    wr_shard_core_finish(b, ob, &bh, err);
    assert_memory_equal(oa, ob, sizeof oa);
    wr_shard_core_free(a);
    wr_shard_core_free(b);
}

// The SSE2 fp32 update gives the scalar reference's bits (every size tail,
// worker counts including the heap path for > 64, both optimizers).
static void test_fp32_update_sse2_equals_ref(void **state) {
    (void)state;
    const size_t sizes[] = {1, 3, 4, 5, 67, 1000};
    const int workers[] = {1, 2, 3, 5, 70};
    wr_rng_key k = wr_rng_key_make(3, 4, 5);
    uint32_t ctr = 0;
#define RNDF(scale) (((float)(wr_rng_u32(k, ctr++) >> 8) / 16777216.0f - 0.5f) * (scale))
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
        for (size_t wi = 0; wi < sizeof workers / sizeof workers[0]; wi++)
            for (int adam = 0; adam <= 1; adam++) {
                size_t n = sizes[si];
                int nw = workers[wi];
                float **g = malloc(sizeof *g * (size_t)nw);
                for (int r = 0; r < nw; r++) {
                    g[r] = malloc(n * 4);
                    for (size_t j = 0; j < n; j++) g[r][j] = RNDF(2.0f) * (j % 7 == 0 ? 1e4f : 1.0f);
                }
                float *x[2], *m[2], *v[2], *out[2];
                for (int c = 0; c < 2; c++) {
                    x[c] = malloc(n * 4), m[c] = malloc(n * 4), v[c] = malloc(n * 4), out[c] = malloc(n * 4);
                }
                for (size_t j = 0; j < n; j++) {
                    x[0][j] = x[1][j] = RNDF(1.0f);
                    m[0][j] = m[1][j] = RNDF(0.1f);
                    v[0][j] = v[1][j] = fabsf(RNDF(0.01f));
                }
                wr_fp32_opt o = {adam, 0.01f, 0.1f, 0.9f, 0.999f, 1e-8f, 0.271f, 0.00299f, 0.8f};
                for (int rep = 0; rep < 3; rep++) {
                    wr_shard_fp32_update_ref(x[0], m[0], adam ? v[0] : NULL, (const float *const *)g, nw, n,
                                             &o, out[0]);
                    wr_shard_fp32_update(x[1], m[1], adam ? v[1] : NULL, (const float *const *)g, nw, n, &o,
                                         out[1]);
                }
                assert_memory_equal(x[0], x[1], n * 4);
                assert_memory_equal(m[0], m[1], n * 4);
                if (adam) assert_memory_equal(v[0], v[1], n * 4);
                assert_memory_equal(out[0], out[1], n * 4);
                assert_memory_equal(out[0], x[0], n * 4);
                for (int c = 0; c < 2; c++) free(x[c]), free(m[c]), free(v[c]), free(out[c]);
                for (int r = 0; r < nw; r++) free(g[r]);
                free(g);
            }
#undef RNDF
}

// ---- refusals --------------------------------------------------------------------------

static void test_refused_pushes(void **state) {
    (void)state;
    wr_job_config cfg;
    cfg_for(&cfg, WR_JOB_CODEC_BIRDER, WR_BCAST_1BIT);
    char err[WR_ERR_LEN];
    const size_t n = 256;
    const uint64_t lo = 512;
    size_t words = wr_birder_words(n);
    wr_shard_core *c = wr_shard_core_new(&cfg, 1, lo, lo + n, 3, 10, err);
    wr_shard_core *ref = wr_shard_core_new(&cfg, 1, lo, lo + n, 3, 10, err);
    uint64_t bits[3][4];
    for (int r = 0; r < 3; r++) random_bits(bits[r], n, 8, r, 1);
    wr_pmsg h;
    // before the parameters
    push_msg(&h, 1, lo, n, 1, 0, WR_CODEC_BITS);
    assert_int_equal(wr_shard_core_push(c, &h, bits[0], words * 8, err), WR_EPROTO);
    assert_non_null(strstr(err, "initial parameters"));
    float x0[256];
    for (size_t j = 0; j < n; j++) x0[j] = (float)j;
    // PARAMS with a wrong step / range, then good, then again
    params_msg(&h, 1, lo, n);
    h.step = 3;
    assert_int_equal(wr_shard_core_set_params(c, &h, x0, sizeof x0, err), WR_EPROTO);
    params_msg(&h, 1, lo + 64, n);
    assert_int_equal(wr_shard_core_set_params(c, &h, x0, sizeof x0, err), WR_EPROTO);
    params_msg(&h, 1, lo, n);
    assert_int_equal(wr_shard_core_set_params(c, &h, x0, sizeof x0 - 4, err), WR_EPROTO);
    assert_false(wr_shard_core_has_params(c));
    assert_int_equal(wr_shard_core_set_params(c, &h, x0, sizeof x0, err), WR_OK);
    assert_int_equal(wr_shard_core_set_params(ref, &h, x0, sizeof x0, err), WR_OK);
    assert_int_equal(wr_shard_core_set_params(c, &h, x0, sizeof x0, err), WR_EPROTO);
    assert_non_null(strstr(err, "already"));

    push_msg(&h, 1, lo, n, 1, 0, WR_CODEC_BITS);
    assert_int_equal(wr_shard_core_push(c, &h, bits[0], words * 8, err), WR_OK);
    assert_int_equal(wr_shard_core_push(ref, &h, bits[0], words * 8, err), WR_OK);
    struct {
        uint64_t step, offset, n_elems;
        int rank, shard, codec;
        size_t len;
        const char *why;
    } bad[] = {
        {1, lo, n, 0, 1, WR_CODEC_BITS, 32, "duplicate"},
        {2, lo, n, 1, 1, WR_CODEC_BITS, 32, "collecting step 1"},
        {0, lo, n, 1, 1, WR_CODEC_BITS, 32, "collecting step 1"},
        {1, lo, n, 3, 1, WR_CODEC_BITS, 32, "not a member"},
        {1, lo, n, 1, 0, WR_CODEC_BITS, 32, "for shard 0"},
        {1, lo + 64, n, 1, 1, WR_CODEC_BITS, 32, "range"},
        {1, lo, n - 1, 1, 1, WR_CODEC_BITS, 32, "range"},
        {1, lo, n, 1, 1, WR_CODEC_FP32, n * 4, "codec"},
        {1, lo, n, 1, 1, WR_CODEC_BITS, 24, "bytes"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        push_msg(&h, bad[i].shard, bad[i].offset, bad[i].n_elems, bad[i].step, bad[i].rank, bad[i].codec);
        static uint64_t big[256];
        const void *p = bad[i].len == 32 ? (const void *)bits[1] : (const void *)big;
        int rc = wr_shard_core_push(c, &h, p, bad[i].len, err);
        if (rc != WR_EPROTO) fail_msg("bad push %zu accepted", i);
        if (!strstr(err, bad[i].why)) fail_msg("bad push %zu: '%s' lacks '%s'", i, err, bad[i].why);
        assert_int_equal(wr_shard_core_pending(c), 1);
        assert_false(wr_shard_core_has_rank(c, 1));
    }
    uint64_t ob[4], oref[4];
    wr_pmsg bh;
    assert_int_equal(wr_shard_core_finish(c, ob, &bh, err), WR_ERR);  // not ready: nothing applied
    assert_memory_equal(wr_shard_core_params(c), x0, sizeof x0);
    for (int r = 1; r < 3; r++) {
        push_msg(&h, 1, lo, n, 1, r, WR_CODEC_BITS);
        assert_int_equal(wr_shard_core_push(c, &h, bits[r], words * 8, err), WR_OK);
        assert_int_equal(wr_shard_core_push(ref, &h, bits[r], words * 8, err), WR_OK);
    }
    assert_int_equal(wr_shard_core_finish(c, ob, &bh, err), WR_OK);
    assert_int_equal(wr_shard_core_finish(ref, oref, &bh, err), WR_OK);
    assert_memory_equal(ob, oref, sizeof ob);
    assert_memory_equal(wr_shard_core_params(c), wr_shard_core_params(ref), sizeof x0);
    // a late push of the finished step is refused
    push_msg(&h, 1, lo, n, 1, 2, WR_CODEC_BITS);
    assert_int_equal(wr_shard_core_push(c, &h, bits[2], words * 8, err), WR_EPROTO);
    wr_shard_core_free(c);
    wr_shard_core_free(ref);
}

// Membership epochs: a removed rank's held push still counts, the average is
// over the contributors, an empty step changes nothing, new ranks are
// accepted only once expected.
static void test_members_change(void **state) {
    (void)state;
    wr_job_config cfg;
    wr_config_defaults(&cfg);
    cfg.codec = WR_JOB_CODEC_FP32;
    cfg.optimizer = WR_OPT_SGDM;
    cfg.momentum = 0.0f;
    cfg.lr = 1.0f;
    cfg.wd = 0.0f;
    char err[WR_ERR_LEN];
    const size_t n = 64;
    wr_shard_core *c = wr_shard_core_new(&cfg, 0, 0, n, 4, 100, err);
    assert_non_null(c);
    float x0[64], g[4][64], out[64];
    for (size_t j = 0; j < n; j++) {
        x0[j] = 0.0f;
        for (int r = 0; r < 4; r++) g[r][j] = (float)(r + 1);
    }
    wr_pmsg h, bh;
    params_msg(&h, 0, 0, n);
    assert_int_equal(wr_shard_core_set_params(c, &h, x0, sizeof x0, err), WR_OK);
    // step 1: ranks 0..3 expected; rank 2 pushes, then ranks 2 and 3 are removed
    fp32_push(c, 1, 2, g[2], n);
    fp32_push(c, 1, 0, g[0], n);
    int keep[] = {0, 1};
    wr_shard_core_set_expected(c, keep, 2);
    assert_false(wr_shard_core_ready(c));
    int miss[4];
    assert_int_equal(wr_shard_core_missing(c, miss, 4), 1);
    assert_int_equal(miss[0], 1);
    fp32_push(c, 1, 1, g[1], n);
    assert_true(wr_shard_core_ready(c));
    int who[4];
    assert_int_equal(wr_shard_core_contributors(c, who), 3);
    assert_int_equal(who[0], 0);
    assert_int_equal(who[2], 2);
    assert_int_equal(wr_shard_core_finish(c, out, &bh, err), WR_OK);
    assert_int_equal(bh.n_workers, 3);
    // average of 1, 2, 3 = 2: x = 0 - 1 * 2
    for (size_t j = 0; j < n; j++) assert_float_equal(out[j], -2.0f, 0);
    // step 2: rank 3 (removed) is refused
    h.rank = 3;
    push_msg(&h, 0, 0, n, 2, 3, WR_CODEC_FP32);
    assert_int_equal(wr_shard_core_push(c, &h, g[3], n * 4, err), WR_EPROTO);
    assert_non_null(strstr(err, "not a member"));
    // nobody expected and nothing pushed: an empty step, no update
    wr_shard_core_set_expected(c, NULL, 0);
    assert_true(wr_shard_core_ready(c));
    assert_int_equal(wr_shard_core_finish(c, out, &bh, err), WR_OK);
    assert_int_equal(bh.n_workers, 0);
    assert_int_equal(bh.payload_len, 0);
    assert_int_equal(wr_shard_core_step(c), 2);
    for (size_t j = 0; j < n; j++) assert_float_equal(wr_shard_core_params(c)[j], -2.0f, 0);
    // step 3: a joiner with a new rank (7) alone
    int joiner[] = {7};
    wr_shard_core_set_expected(c, joiner, 1);
    assert_false(wr_shard_core_ready(c));
    float g7[64];
    for (size_t j = 0; j < n; j++) g7[j] = 0.5f;
    fp32_push(c, 3, 7, g7, n);
    assert_int_equal(wr_shard_core_finish(c, out, &bh, err), WR_OK);
    assert_int_equal(bh.n_workers, 1);
    for (size_t j = 0; j < n; j++) assert_float_equal(out[j], -2.5f, 0);
    wr_shard_core_free(c);
}

static void test_core_new_errors(void **state) {
    (void)state;
    wr_job_config cfg;
    wr_config_defaults(&cfg);
    char err[WR_ERR_LEN];
    assert_null(wr_shard_core_new(&cfg, 0, 10, 100, 2, 10, err));
    assert_null(wr_shard_core_new(&cfg, 0, 64, 64, 2, 10, err));
    assert_null(wr_shard_core_new(&cfg, 0, 0, 64, 0, 10, err));
}

// The data socket's frame bound: the fp32 range plus 64 KiB, never below the
// header bound (a tiny range still accepts any valid header).
static void test_data_max_msg(void **state) {
    (void)state;
    assert_int_equal(wr_proto_data_frame_max(64), WR_PROTO_MAX_CONTROL_MSG);
    assert_int_equal(wr_proto_data_frame_max(1000000),
                     WR_PROTO_MAX_CONTROL_MSG);  // 4 MB range < header bound
    assert_int_equal(wr_proto_data_frame_max(2000000), 8000000 + 65536);
    assert_int_equal(wr_proto_data_frame_max(WR_MAX_ELEMS), (int64_t)WR_MAX_ELEMS * 4 + 65536);
    assert_true(wr_proto_data_frame_max(1000000) <
                (INT64_C(1) << 32));  // far below the transport's 4 GiB default
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_birder_1bit),
        cmocka_unit_test(test_birder_exact),
        cmocka_unit_test(test_misaligned_payload),
        cmocka_unit_test(test_fp32_adam),
        cmocka_unit_test(test_fp32_sgdm_wd),
        cmocka_unit_test(test_fp32_deterministic_order),
        cmocka_unit_test(test_fp32_update_sse2_equals_ref),
        cmocka_unit_test(test_refused_pushes),
        cmocka_unit_test(test_members_change),
        cmocka_unit_test(test_core_new_errors),
        cmocka_unit_test(test_data_max_msg),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
