// test_coord_progress.c — PROGRESS at a real coordinator (server/
// coord_progress.c, coord_summary.c; coord_job.h: the coordinator in a
// thread, workers as test sockets; mode=allreduce, so no shard processes):
// a report is taken only from the member of its rank on that member's own
// connection, one with waits for shards the job does not have is dropped
// (both without a reply: an ERROR would end the worker's run);
// the summary JSON at the end has every rank's last report and final
// STATS, the earliest tta88, the digest checks and the exit status.
#include "coord_job.h"

#include <stdlib.h>

// No ERROR arrives on ep within 300 ms (a refused report gets no reply; the
// coordinator's connection probes, HEARTBEATs, may).
static void expect_no_error(wr_endpoint *ep) {
    char err[WR_ERR_LEN];
    double until = wr_now() + 0.3;
    for (double left = 0.3; left > 0; left = until - wr_now()) {
        wr_msg m;
        memset(&m, 0, sizeof m);
        if (wr_recv(ep, &m, (int)(left * 1000) + 1, err) != WR_OK) continue;
        wr_pmsg h;
        int rc = wr_proto_decode(m.header.data, m.header.len, m.payload.len, NULL, &h, NULL, err);
        wr_msg_release(&m);
        assert_int_equal(rc, WR_OK);
        if (h.type == WR_MT_ERROR) fail_msg("ERROR after a refused PROGRESS: %s", h.reason);
        wr_pmsg_clear(&h);
    }
}

// A PROGRESS claiming rank r after `step`, with n_waits shard waits.
static void send_progress(job *j, wr_endpoint *ep, int r, uint64_t step, uint32_t n_waits) {
    static uint64_t waits[2] = {1000, 2000};
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_PROGRESS);
    h.job_id = j->o.cfg.job_id;
    h.epoch = 1;
    h.rank = r;
    h.step = step;
    h.n_stats = 2;
    snprintf(h.stats[0].name, sizeof h.stats[0].name, "steps");
    h.stats[0].value = (double)step;
    snprintf(h.stats[1].name, sizeof h.stats[1].name, "loss");
    h.stats[1].value = 0.25 * (r + 1);
    h.n_waits = n_waits;
    h.waits = n_waits ? waits : NULL;
    send_msg(j, ep, &h);
}

// A worker's final STATS with its tta88.
static void send_final(job *j, wr_endpoint *ep, int r, double tta) {
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_STATS);
    h.job_id = j->o.cfg.job_id;
    h.epoch = 1;
    h.rank = r;
    h.n_stats = 1;
    snprintf(h.stats[0].name, sizeof h.stats[0].name, "tta88_seconds");
    h.stats[0].value = tta;
    send_msg(j, ep, &h);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return buf;
}

static void test_progress_members_and_summary(void **state) {
    (void)state;
    job j;
    job_init(&j, 2, NULL);
    j.o.cfg.mode = WR_MODE_ALLREDUCE;
    j.o.cfg.allreduce_algo = WR_AR_ALLGATHER;
    j.o.cfg.register_timeout = 10;
    char path[64];
    snprintf(path, sizeof path, "/tmp/wren-test-coord-summary-%d.json", (int)getpid());
    j.o.summary = path;
    job_start(&j);
    wr_endpoint *w[2], *stranger = node(&j);
    for (int i = 0; i < 2; i++) {
        w[i] = node(&j);
        char a[32];
        snprintf(a, sizeof a, "tcp://*:%d", 7300 + i);
        join_worker(&j, w[i], a, "n", "");
        usleep(20000);  // ranks follow the order of the reports
    }
    for (int i = 0; i < 2; i++) {
        wr_pmsg m;
        recv_type(w[i], WR_MT_CLUSTER_MAP, 1, &m);
        assert_int_equal(m.rank, i);
        wr_pmsg_clear(&m);
    }
    // Only a member, for its own rank, on its own connection.
    send_progress(&j, stranger, 0, 5, 0);
    expect_stop(stranger, WR_MT_ERROR, WR_EC_PROTOCOL, "PROGRESS from a peer that has not registered", NULL);
    // A member's misfit report is dropped without a reply (an ERROR would end
    // its run): another member's rank, waits for 2 shards in a job of none.
    send_progress(&j, w[0], 1, 7777, 0);
    send_progress(&j, w[1], 1, 8888, 2);
    expect_no_error(w[0]);
    expect_no_error(w[1]);
    for (int i = 0; i < 2; i++) send_progress(&j, w[i], i, JOB_STEPS, 0);
    send_final(&j, w[0], 0, -1);
    send_final(&j, w[1], 1, 12.5);  // the earliest (and only) tta88
    for (int i = 0; i < 2; i++) send_simple(&j, w[i], WR_MT_LEAVE, i, JOB_STEPS, 0);
    assert_int_equal(finish(&j), WR_EXIT_OK);
    const char *s = slurp(path);
    assert_non_null(strstr(s, "\"role\": \"coordinator\""));
    assert_non_null(strstr(s, "\"mode\": \"allreduce\""));
    assert_non_null(strstr(s, "\"exit_status\": 0"));
    assert_non_null(strstr(s, "\"tta88_seconds\": 12.5"));
    assert_non_null(strstr(s, "\"rank\": 0"));
    assert_non_null(strstr(s, "\"rank\": 1"));
    assert_non_null(strstr(s, "\"loss\": 0.5"));  // rank 1's last report
    assert_non_null(strstr(s, "\"final\": {\"tta88_seconds\": 12.5}"));
    assert_non_null(strstr(s, "\"digests\": {\"passed\": 0"));
    assert_null(strstr(s, "7777"));  // the refused reports left nothing
    assert_null(strstr(s, "8888"));
    remove(path);
    for (int i = 0; i < 2; i++) wr_close(w[i]);
    wr_close(stranger);
    cleanup(&j);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_progress_members_and_summary),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
