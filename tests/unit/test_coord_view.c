// test_coord_view.c — the coordinator's view of the job (server/coord_view.h):
// PROGRESS reports kept per rank, rates and the slowest shard over the last
// interval, the cluster line's figures and text, a rejoined worker, a job
// without shards, and the final STATS.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord_view.h"

// A PROGRESS of rank r after `steps` steps in `seconds`, with waits (us) per shard.
static void report(wr_pmsg *h, int r, double steps, double seconds, double samples, double sent,
                   const uint64_t *waits, uint32_t n_waits) {
    wr_pmsg_init(h, WR_MT_PROGRESS);
    h->rank = r;
    h->step = (uint64_t)steps;
    const struct {
        const char *k;
        double v;
    } kv[] = {{"steps", steps},         {"seconds", seconds}, {"samples", samples}, {"bytes_sent", sent},
              {"bytes_recv", 2 * sent}, {"loss", 0.5 + r},    {"epoch", 2},         {"comm_s", seconds / 2}};
    for (size_t i = 0; i < sizeof kv / sizeof *kv; i++) {
        snprintf(h->stats[i].name, sizeof h->stats[i].name, "%s", kv[i].k);
        h->stats[i].value = kv[i].v;
    }
    h->n_stats = sizeof kv / sizeof *kv;
    h->n_waits = n_waits;
    h->waits = (uint64_t *)waits;  // borrowed: not cleared
}

static void take(coord_view *v, int r, double steps, double seconds, const uint64_t *w, uint32_t nw) {
    wr_pmsg h;
    char why[256];
    report(&h, r, steps, seconds, steps * 64, steps * 1000, w, nw);
    char host[16];
    snprintf(host, sizeof host, "host%d", r);
    assert_int_equal(coord_view_take(v, &h, host, 2, 1.0, why, sizeof why), WR_OK);
}

// Two ranks, two shards: the rates come from the last interval, the slowest
// (rank, shard) is the one with the longest wait per step in it.
static void test_two_ranks(void **state) {
    (void)state;
    coord_view *v = calloc(1, sizeof *v);
    uint64_t a1[2] = {10000, 20000}, b1[2] = {10000, 10000};
    take(v, 0, 10, 1.0, a1, 2);
    take(v, 1, 10, 1.0, b1, 2);
    // Interval 10 -> 20 in 0.5 s: rank 0 waited 1 ms/step on shard 1, rank 1
    // waited 4 ms/step on shard 0.
    uint64_t a2[2] = {15000, 30000}, b2[2] = {50000, 15000};
    take(v, 0, 20, 1.5, a2, 2);
    take(v, 1, 20, 1.5, b2, 2);
    int ranks[] = {0, 1};
    coord_view_line l;
    coord_view_sum(v, ranks, 2, &l);
    assert_int_equal(l.reported, 2);
    assert_int_equal(l.step, 20);
    assert_int_equal(l.epoch, 2);
    assert_true(fabs(l.steps_s - 20) < 1e-9);          // 10 steps in 0.5 s
    assert_true(fabs(l.samples_s - 2 * 1280) < 1e-9);  // 640 samples in 0.5 s, two ranks
    assert_true(fabs(l.out_bps - 2 * 20000) < 1e-9);
    assert_true(fabs(l.in_bps - 2 * 40000) < 1e-9);
    assert_true(fabs(l.loss - 1.0) < 1e-9);  // (0.5 + 1.5) / 2
    assert_true(l.acc < 0);
    assert_int_equal(l.slow_rank, 1);
    assert_int_equal(l.slow_shard, 0);
    assert_true(fabs(l.slow_ms - 4.0) < 1e-9);
    char line[512];
    coord_view_format(&l, 400, "host1", line, sizeof line);
    assert_non_null(strstr(line, "progress step 20/400 epoch 2 |"));
    assert_non_null(strstr(line, "20.0 steps/s 2560 samples/s"));
    assert_non_null(strstr(line, "in 0.1 MB/s out 0.0 MB/s"));
    assert_non_null(strstr(line, "acc 0.0000 test -"));
    assert_non_null(strstr(line, "slowest: shard 0 (wait 4.0 ms/step, rank 1 on host host1)"));
    // A rank that has not reported: the line says how many did.
    int three[] = {0, 1, 7};
    coord_view_sum(v, three, 3, &l);
    coord_view_format(&l, 400, "host1", line, sizeof line);
    assert_non_null(strstr(line, "(2 of 3 workers)"));
    coord_view_free(v);
    free(v);
}

// Refused: waits for another number of shards than the job has, a rank out
// of range. A worker that rejoined (fewer steps) starts its interval afresh.
static void test_refusals_and_rejoin(void **state) {
    (void)state;
    coord_view *v = calloc(1, sizeof *v);
    char why[256];
    uint64_t w3[3] = {1, 2, 3};
    wr_pmsg h;
    report(&h, 0, 10, 1, 640, 1, w3, 3);
    assert_int_equal(coord_view_take(v, &h, "a", 2, 1.0, why, sizeof why), WR_ERR);
    assert_non_null(strstr(why, "3 shards, the job has 2"));
    report(&h, WR_MAX_WORKERS, 10, 1, 640, 1, NULL, 0);
    assert_int_equal(coord_view_take(v, &h, "a", 2, 1.0, why, sizeof why), WR_ERR);
    assert_null(v->rank[0]);
    uint64_t w[2] = {100000, 0};
    take(v, 3, 100, 10, w, 2);
    uint64_t again[2] = {2000, 8000};  // rejoined: 2 steps since
    take(v, 3, 2, 0.5, again, 2);
    const coord_rank_view *e = v->rank[3];
    assert_non_null(e);
    assert_int_equal(v->n_ranks, 4);
    assert_true(fabs(e->steps_s - 4) < 1e-9);
    assert_int_equal(e->slow_shard, 1);
    assert_true(fabs(e->slow_ms - 4.0) < 1e-9);
    assert_string_equal(e->host, "host3");
    coord_view_free(v);
    free(v);
}

// mode=allreduce: no shard waits, so the slowest is the rank with the most
// comm time per step; the final STATS are kept as they came.
static void test_no_shards_and_final(void **state) {
    (void)state;
    coord_view *v = calloc(1, sizeof *v);
    take(v, 0, 10, 1.0, NULL, 0);
    take(v, 1, 10, 3.0, NULL, 0);  // comm 1.5 s over 10 steps
    int ranks[] = {0, 1};
    coord_view_line l;
    coord_view_sum(v, ranks, 2, &l);
    assert_int_equal(l.slow_shard, -1);
    assert_int_equal(l.slow_rank, 1);
    assert_true(fabs(l.slow_ms - 150) < 1e-9);
    char line[512];
    coord_view_format(&l, 10, NULL, line, sizeof line);
    assert_non_null(strstr(line, "slowest: rank 1 on host ? (comm 150.0 ms/step)"));
    wr_pmsg st;
    wr_pmsg_init(&st, WR_MT_STATS);
    st.n_stats = 1;
    snprintf(st.stats[0].name, sizeof st.stats[0].name, "tta88_seconds");
    st.stats[0].value = 12.5;
    coord_view_final(v, 1, "b", &st);
    assert_int_equal(v->rank[1]->n_final, 1);
    assert_true(v->rank[1]->final[0].value == 12.5);
    coord_view_sum(v, ranks, 0, &l);
    assert_int_equal(l.reported, 0);
    coord_view_free(v);
    free(v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_ranks),
        cmocka_unit_test(test_refusals_and_rejoin),
        cmocka_unit_test(test_no_shards_and_final),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
