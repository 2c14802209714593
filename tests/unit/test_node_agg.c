// test_node_agg.c — node aggregation in mode=ps (worker/ps_agg.c,
// ps_node_aggregate = on) run by several workers in threads of this
// process (the workers of ar_fixture.h), against two shards in another
// thread that run the real shard step logic (server/shard.h), over ipc
// sockets in a temp dir (the coordinator is a silent socket). With N groups
// of G workers (rank r in group r % N, so the leaders are ranks 0..N-1),
// after a few steps with fixed seeds:
//   - each shard got exactly one push per node per step, from the leaders;
//   - every worker holds the same parameters, equal to the shard's master
//     copy and to a direct computation from the definitions (the workers'
//     bits, the node count and re-quantization keyed (seed, 0xA0000000 + g,
//     t), the shard's count over the N nodes, then its re-quantization
//     keyed (seed, 0xB0000000 + s, t) for broadcast = 1bit, or the counts
//     themselves for exact).
#include <stdatomic.h>

#include "ar_fixture.h"
#include "digest.h"
#include "schedule.h"
#include "shard.h"

#define MAX_W ARF_MAX_W
#define S 2  // shards
#define STEPS ARF_STEPS

typedef struct {
    ar_fixture fx;  // the workers, fx.cfg the job's
    int exact;
    uint64_t lo[S], hi[S];
    wr_endpoint *shard_ep[S];
    char shard_addr[S][128];
    // the shards' side
    atomic_int stop, shard_errors, pushes[S][STEPS + 1];
    uint64_t master_digest[S];
} fixture;

static float lr_of(const fixture *f, int t) { return wr_lr_at(&f->fx.cfg, t, STEPS); }

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
    if (h->rank < 0 || h->rank >= f->fx.n_groups) {
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
    bh.job_id = f->fx.cfg.job_id;
    bh.epoch = 1;
    for (int r = 0; r < f->fx.n_groups; r++) {
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
    if (wr_shard_core_set_params(ss->core, &h, f->fx.x0 + f->lo[s], h.n_elems * 4, err) != WR_OK)
        shard_fail(f, "params", err);
}

static void *shards_main(void *arg) {
    fixture *f = arg;
    char err[WR_ERR_LEN];
    shard_state ss[S];
    memset(ss, 0, sizeof ss);
    for (int s = 0; s < S; s++) {
        ss[s].core = wr_shard_core_new(&f->fx.cfg, s, f->lo[s], f->hi[s], f->fx.n_groups, STEPS, err);
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

// Rank r's wr_ps (ar_fixture.h) with the shards' ranges and addresses.
static void make_worker(fixture *f, int r) {
    arf_make_worker(&f->fx, r);
    wr_ps *w = f->fx.w[r];
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
}

// The workers' map (in rank order); then the leaders connect to the shards
// as ps_join.c does.
static void give_map(fixture *f, int r) {
    arf_take_map(&f->fx, r, 0);
    wr_ps *w = f->fx.w[r];
    char err[WR_ERR_LEN];
    assert_int_equal(wr_agg_leader(w), r < f->fx.n_groups);
    for (int s = 0; s < S && wr_agg_leader(w); s++) assert_int_equal(wr_ps_connect_shard(w, s, err), 0);
    wr_ps_step_init(w);
    wr_ar_step_init(w);
}

static int ps_step(wr_ps *w, wr_exchange_step *st, char *err) { return wr_ps_step(w, st, err); }

static void setup_fixture(fixture *f, int n_groups, int G, int exact, uint64_t d) {
    memset(f, 0, sizeof *f);
    arf_open(&f->fx, "agg", n_groups, G, d);
    f->exact = exact;
    wr_job_config *cfg = &f->fx.cfg;
    cfg->ps_node_aggregate = 1;
    cfg->broadcast = exact ? WR_BCAST_EXACT : WR_BCAST_1BIT;
    cfg->step_timeout = 10;
    cfg->register_timeout = 1;
    cfg->workers = f->fx.n;
    char err[WR_ERR_LEN];
    assert_int_equal(wr_config_validate(cfg, err), WR_OK);
    assert_int_equal(wr_shard_ranges(d, S, f->lo, f->hi, err), WR_OK);
    f->fx.step = ps_step;
    for (int t = 1; t <= STEPS; t++) f->fx.lr[t] = lr_of(f, t);
    wr_endpoint_opts eo;
    wr_endpoint_opts_default(&eo);
    for (int s = 0; s < S; s++) {
        snprintf(f->shard_addr[s], sizeof f->shard_addr[s], "ipc://%s/shard-%d.sock", f->fx.dir, s);
        assert_int_equal(wr_bind(f->fx.ctx, f->shard_addr[s], &eo, &f->shard_ep[s], err), WR_OK);
    }
    for (int r = 0; r < f->fx.n; r++) make_worker(f, r);
    for (int r = 0; r < f->fx.n; r++) give_map(f, r);
}

static void run_all(fixture *f) {
    pthread_t sh;
    assert_int_equal(pthread_create(&sh, NULL, shards_main, f), 0);
    arf_run(&f->fx);
    atomic_store(&f->stop, 1);
    pthread_join(sh, NULL);
    arf_assert_ok(&f->fx);
    assert_int_equal(atomic_load(&f->shard_errors), 0);
}

// The shards' parts of the workers and the shards' sockets, then the rest.
static void teardown_fixture(fixture *f) {
    for (int r = 0; r < f->fx.n; r++) {
        wr_ps *w = f->fx.w[r];
        for (int s = 0; s < S; s++) {
            wr_close(w->sh[s].ep);
            for (int k = 0; k < 2; k++) free(w->sh[s].push[k].data);
        }
        free(w->sh);
        free(w->poll_eps);
        free(w->ready);
        free(w->align_scratch);
    }
    for (int s = 0; s < S; s++) {
        wr_close(f->shard_ep[s]);
        char path[160];
        snprintf(path, sizeof path, "%s/shard-%d.sock", f->fx.dir, s);
        unlink(path);
    }
    arf_close(&f->fx);
}

// ---- the direct computation --------------------------------------------------------

// Element j's update of step t from the workers' bits q (n vectors of wd words).
static float update_of(const fixture *f, const uint64_t *q, size_t wd, int s, int t, uint64_t j) {
    int N = f->fx.n_groups, cnt = 0;
    for (int g = 0; g < N; g++) cnt += arf_node_bit(&f->fx, q, wd, g, t, j);
    if (f->exact) return (float)(2 * cnt - N) / (float)N;
    wr_rng_key key = wr_rng_key_make(ARF_SEED, 0xB0000000ull + (uint64_t)s, (uint64_t)t);
    return requant_bit(cnt, N, key, j) ? 1.0f : -1.0f;
}

static void reference(const fixture *f, float *x) {
    const ar_fixture *fx = &f->fx;
    size_t wd = wr_birder_words(fx->d);
    float *m = calloc((size_t)fx->n * fx->d, sizeof *m), *b = calloc((size_t)fx->n * fx->d, sizeof *b);
    uint64_t *q = calloc((size_t)fx->n * wd, 8);
    for (int t = 1; t <= STEPS; t++) {
        arf_encode(fx, t, m, b, q);
        for (int s = 0; s < S; s++)
            for (uint64_t j = f->lo[s]; j < f->hi[s]; j++)
                x[j] = apply_one(x[j], update_of(f, q, wd, s, t, j), lr_of(f, t), fx->cfg.wd);
    }
    free(m);
    free(b);
    free(q);
}

static void check(fixture *f) {
    for (int s = 0; s < S; s++)
        for (int t = 1; t <= STEPS; t++) assert_int_equal(atomic_load(&f->pushes[s][t]), f->fx.n_groups);
    float *ref = malloc(f->fx.d * sizeof *ref);
    memcpy(ref, f->fx.x0, f->fx.d * sizeof *ref);
    reference(f, ref);
    arf_check_replicas(&f->fx, ref);
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
