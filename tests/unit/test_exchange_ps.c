// test_exchange_ps.c — the worker's ps exchange (worker/ps_join.c,
// ps_step.c) driven by the training loop (worker/train.c) against a
// scripted coordinator and two shards in threads of this process, over ipc
// sockets in a temp dir. The shards run the real shard step logic
// (server/shard.h), so the replicas must stay bit-identical: the worker's
// DIGESTs must equal the shards' master digests. Scenarios that real servers
// rarely produce check the worker's failure paths: a shard that stays silent
// (step_timeout naming the shard), a SHUTDOWN in the middle of training (exit
// with its status), a broadcast of the wrong step (refused, exit 1), and a
// cluster map whose n_params disagrees with the model (exit 2), a shard that
// sends a frame larger than its range allows (not taken: the connection is
// dropped and the shard named), and a training set smaller than the batch
// (exit 2 and WR_EC_CONFIG before the second REGISTER). The fake coordinator
// records the code of the worker's ERROR so the tests check it.
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

#include "config.h"
#include "digest.h"
#include "proto.h"
#include "exchange.h"
#include "train.h"
#include "cluster.h"
#include "shard.h"
#include "transport.h"

enum scenario {
    SC_OK,
    SC_SILENT_SHARD,
    SC_SHUTDOWN,
    SC_WRONG_STEP,
    SC_BAD_NPARAMS,
    SC_OVERSIZE,
    SC_SMALL_DATA
};

#define D 4096
#define STEPS 20
#define N_SHARDS 2

typedef struct {
    enum scenario sc;
    char dir[64];
    char coord_addr[128], shard_addr[N_SHARDS][128];
    wr_transport_ctx *ctx;
    wr_endpoint *coord_ep, *shard_ep[N_SHARDS];
    wr_job_config cfg;
    atomic_int stop;
    // results seen by the fake coordinator
    uint64_t worker_digest[STEPS + 1][N_SHARDS];
    uint64_t shard_digest[STEPS + 1][N_SHARDS];
    int digests_seen, heartbeats, leaves, stats;
    int registers_full;      // REGISTERs with n_params > 0 (the second one)
    int errors, error_code;  // ERRORs from the worker, code of the last one
    atomic_int oversize_sent;
    atomic_int thread_errors;  // checks that failed inside the fake nodes' threads
} fake;

// cmocka's asserts must not run outside the test's thread: the fake nodes
// count failed checks and the test asserts the count is 0.
// The rank credential the fake coordinator gives the worker.
static const uint8_t RANK0_TOKEN[WR_TOKEN_LEN] = {0xde, 0xad, 1, 2,  3,  4,  5,  6,
                                                  7,    8,    9, 10, 11, 12, 13, 0x0e};

#define T_CHECK(f, cond)                                                                       \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "%s:%d: fake node check failed: %s\n", __FILE__, __LINE__, #cond); \
            atomic_fetch_add(&(f)->thread_errors, 1);                                          \
        }                                                                                      \
    } while (0)

static void send_to(fake *f, wr_endpoint *ep, const wr_msg *from, wr_pmsg *h, const void *payload,
                    size_t len) {
    wr_buf b = {0};
    char err[WR_ERR_LEN];
    h->payload_len = len;
    if (wr_proto_encode(h, &b, err) != WR_OK) {
        fprintf(stderr, "encode: %s\n", err);
        atomic_fetch_add(&f->thread_errors, 1);
        wr_buf_free(&b);
        return;
    }
    wr_msg m;
    memset(&m, 0, sizeof m);
    memcpy(m.peer, from->peer, from->peer_len);
    m.peer_len = from->peer_len;
    m.header.data = b.data;
    m.header.len = b.len;
    if (len) {
        m.payload.data = (void *)payload;
        m.payload.len = len;
    }
    wr_send(ep, &m, 1000, err);
    wr_buf_free(&b);
}

// ---- the coordinator -------------------------------------------------------------

static void *coord_main(void *arg) {
    fake *f = arg;
    char err[WR_ERR_LEN];
    char **kv;
    uint32_t nkv;
    wr_config_to_kv(&f->cfg, &kv, &nkv);
    while (!atomic_load(&f->stop)) {
        wr_msg msg;
        memset(&msg, 0, sizeof msg);
        if (wr_recv(f->coord_ep, &msg, 50, err) != WR_OK) continue;
        wr_pmsg h;
        if (wr_proto_decode(msg.header.data, msg.header.len, msg.payload.len, NULL, &h, NULL, err) != WR_OK) {
            wr_msg_release(&msg);
            continue;
        }
        if (h.type == WR_MT_ERROR) {
            f->errors++;
            f->error_code = h.code;
        } else if (h.type == WR_MT_REGISTER) {
            if (h.n_params > 0) f->registers_full++;
            wr_pmsg r;
            wr_pmsg_init(&r, WR_MT_CLUSTER_MAP);
            r.job_id = f->cfg.job_id;
            r.config = kv;
            r.n_config = nkv;
            wr_shard_info si[N_SHARDS] = {0};  // no keys: key "" (not garbage)
            wr_worker_info wi = {.rank = 0, .group = 0};
            if (h.n_params == 0) {
                r.epoch = 0;  // the welcome: config only
            } else {
                r.epoch = 1;
                r.rank = 0;
                r.n_params = f->sc == SC_BAD_NPARAMS ? D + 64 : D;
                uint64_t lo[N_SHARDS], hi[N_SHARDS];
                T_CHECK(f, wr_shard_ranges(r.n_params, N_SHARDS, lo, hi, err) == WR_OK);
                for (int s = 0; s < N_SHARDS; s++) {
                    si[s].lo = lo[s];
                    si[s].hi = hi[s];
                    snprintf(si[s].addr, sizeof si[s].addr, "%s", f->shard_addr[s]);
                }
                r.shards = si;
                r.n_shards = N_SHARDS;
                r.workers = &wi;
                r.n_workers_map = 1;
                r.has_token = 1;  // the worker's credential (docs/PROTOCOL.md, "Rank credentials")
                memcpy(r.token, RANK0_TOKEN, WR_TOKEN_LEN);
            }
            send_to(f, f->coord_ep, &msg, &r, NULL, 0);
        } else if (h.type == WR_MT_DIGEST) {
            if (h.step <= STEPS && h.shard >= 0 && h.shard < N_SHARDS) {
                f->worker_digest[h.step][h.shard] = h.digest;
                f->digests_seen++;
                if (f->sc == SC_SHUTDOWN && h.step == 10) {
                    wr_pmsg r;
                    wr_pmsg_init(&r, WR_MT_SHUTDOWN);
                    r.job_id = f->cfg.job_id;
                    r.epoch = 1;
                    r.code = WR_EXIT_NODE_LOST;
                    snprintf(r.reason, sizeof r.reason, "worker 7 is dead (test)");
                    send_to(f, f->coord_ep, &msg, &r, NULL, 0);
                }
            }
        } else if (h.type == WR_MT_HEARTBEAT) {
            f->heartbeats++;
        } else if (h.type == WR_MT_LEAVE) {
            f->leaves++;
        } else if (h.type == WR_MT_STATS) {
            f->stats++;
        }
        wr_pmsg_clear(&h);
        wr_msg_release(&msg);
    }
    wr_config_kv_free(kv, nkv);
    return NULL;
}

// ---- the shards (both served by one thread) -----------------------------------------

static void *shards_main(void *arg) {
    fake *f = arg;
    char err[WR_ERR_LEN];
    wr_shard_core *core[N_SHARDS] = {0};
    uint64_t lo[N_SHARDS], hi[N_SHARDS];
    T_CHECK(f, wr_shard_ranges(D, N_SHARDS, lo, hi, err) == WR_OK);
    for (int s = 0; s < N_SHARDS; s++) {
        core[s] = wr_shard_core_new(&f->cfg, s, lo[s], hi[s], 1, STEPS, err);
        if (!core[s]) {
            fprintf(stderr, "shard core: %s\n", err);
            atomic_fetch_add(&f->thread_errors, 1);
            return NULL;
        }
    }
    void *out = aligned_alloc(64, 64 * 1024);
    while (!atomic_load(&f->stop)) {
        int ready[N_SHARDS] = {0};
        if (wr_poll(f->shard_ep, N_SHARDS, ready, 50, err) <= 0) continue;
        for (int s = 0; s < N_SHARDS; s++) {
            if (!ready[s]) continue;
            wr_msg msg;
            memset(&msg, 0, sizeof msg);
            if (wr_recv(f->shard_ep[s], &msg, 0, err) != WR_OK) continue;
            wr_pmsg h;
            if (wr_proto_decode(msg.header.data, msg.header.len, msg.payload.len, NULL, &h, NULL, err) !=
                WR_OK) {
                wr_msg_release(&msg);
                continue;
            }
            // every data message carries the credential the map gave the worker
            T_CHECK(f, h.has_token && memcmp(h.token, RANK0_TOKEN, WR_TOKEN_LEN) == 0);
            if (h.type == WR_MT_PARAMS) {
                T_CHECK(f, wr_shard_core_set_params(core[s], &h, msg.payload.data, msg.payload.len, err) ==
                               WR_OK);
            } else if (h.type == WR_MT_PULL && f->sc == SC_OVERSIZE && s == 1) {
                // A PARAMS frame 4 KiB over the worker's bound for this range.
                size_t len = (size_t)wr_proto_data_frame_max(hi[s] - lo[s]) + 4096;
                len -= len % 4;
                void *big = calloc(1, len);
                wr_pmsg r;
                wr_pmsg_init(&r, WR_MT_PARAMS);
                r.job_id = f->cfg.job_id;
                r.epoch = 1;
                r.shard = s;
                r.offset = lo[s];
                r.n_elems = len / 4;
                r.codec = WR_CODEC_FP32;
                send_to(f, f->shard_ep[s], &msg, &r, big, len);
                free(big);
                atomic_store(&f->oversize_sent, 1);
            } else if (h.type == WR_MT_PULL) {
                T_CHECK(f, wr_shard_core_has_params(core[s]));  // one worker: PARAMS came first
                wr_pmsg r;
                wr_pmsg_init(&r, WR_MT_PARAMS);
                r.job_id = f->cfg.job_id;
                r.epoch = 1;
                r.shard = s;
                r.offset = lo[s];
                r.n_elems = hi[s] - lo[s];
                r.codec = WR_CODEC_FP32;
                send_to(f, f->shard_ep[s], &msg, &r, wr_shard_core_params(core[s]), r.n_elems * 4);
            } else if (h.type == WR_MT_PUSH) {
                int ok = wr_shard_core_push(core[s], &h, msg.payload.data, msg.payload.len, err) == WR_OK;
                T_CHECK(f, ok);
                wr_pmsg bh;
                ok = ok && wr_shard_core_finish(core[s], out, &bh, err) == WR_OK;
                T_CHECK(f, ok);
                if (!ok) {
                    wr_pmsg_clear(&h);
                    wr_msg_release(&msg);
                    continue;
                }
                bh.job_id = f->cfg.job_id;
                bh.epoch = 1;
                uint64_t t = bh.step;
                if (t <= STEPS) f->shard_digest[t][s] = wr_shard_core_digest(core[s]);
                int silent = f->sc == SC_SILENT_SHARD && s == 1 && t == 3;
                // SHUTDOWN follows step 10's digest: hold later broadcasts so
                // that a fast worker cannot finish every step before it arrives.
                int held = f->sc == SC_SHUTDOWN && t > 10;
                if (f->sc == SC_WRONG_STEP && s == 0 && t == 3) bh.step = 4;
                if (!silent && !held) send_to(f, f->shard_ep[s], &msg, &bh, out, bh.payload_len);
            }
            wr_pmsg_clear(&h);
            wr_msg_release(&msg);
        }
    }
    free(out);
    for (int s = 0; s < N_SHARDS; s++) wr_shard_core_free(core[s]);
    return NULL;
}

// ---- harness ------------------------------------------------------------------------

static int run_worker(fake *f, const char *summary, char *err) {
    char e2[WR_ERR_LEN];
    snprintf(f->dir, sizeof f->dir, "/tmp/wren-tpsc-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->coord_addr, sizeof f->coord_addr, "ipc://%s/coord", f->dir);
    f->ctx = wr_transport_ctx_new(1, e2);
    assert_non_null(f->ctx);
    wr_endpoint_opts eo;
    wr_endpoint_opts_default(&eo);
    eo.linger_ms = 0;
    assert_int_equal(wr_bind(f->ctx, f->coord_addr, &eo, &f->coord_ep, e2), WR_OK);
    for (int s = 0; s < N_SHARDS; s++) {
        snprintf(f->shard_addr[s], sizeof f->shard_addr[s], "ipc://%s/shard%d", f->dir, s);
        assert_int_equal(wr_bind(f->ctx, f->shard_addr[s], &eo, &f->shard_ep[s], e2), WR_OK);
    }
    pthread_t tc, ts;
    atomic_init(&f->stop, 0);
    atomic_init(&f->thread_errors, 0);
    atomic_init(&f->oversize_sent, 0);
    pthread_create(&tc, NULL, coord_main, f);
    pthread_create(&ts, NULL, shards_main, f);

    wr_ps_opts o;
    wr_ps_opts_default(&o);
    o.coordinator = f->coord_addr;
    o.host = "testhost";
    o.connect_timeout = 5;
    wr_train_opts to = {.summary_path = summary, .threads = 1};
    int st = wr_train_run(wr_exchange_ps(&o), &to, NULL, err);

    atomic_store(&f->stop, 1);
    pthread_join(tc, NULL);
    pthread_join(ts, NULL);
    wr_close(f->coord_ep);
    for (int s = 0; s < N_SHARDS; s++) wr_close(f->shard_ep[s]);
    wr_transport_ctx_free(f->ctx);
    char path[160];
    snprintf(path, sizeof path, "%s/coord", f->dir);
    unlink(path);
    for (int s = 0; s < N_SHARDS; s++) {
        snprintf(path, sizeof path, "%s/shard%d", f->dir, s);
        unlink(path);
    }
    rmdir(f->dir);
    assert_int_equal(atomic_load(&f->thread_errors), 0);
    return st;
}

static fake *new_fake(enum scenario sc, int codec, int bcast) {
    fake *f = calloc(1, sizeof *f);
    f->sc = sc;
    wr_config_defaults(&f->cfg);
    char err[WR_ERR_LEN];
    char model[32];
    snprintf(model, sizeof model, "model=synthetic:%d", D);
    assert_int_equal(wr_config_set_kv(&f->cfg, model, err), WR_OK);
    f->cfg.shards = N_SHARDS;
    f->cfg.workers = 1;
    f->cfg.batch = 8;
    f->cfg.steps = STEPS;
    f->cfg.digest_every = 5;
    f->cfg.progress_every = 0;
    f->cfg.step_timeout = 1.0;
    f->cfg.register_timeout = 1.0;  // the broadcast wait is bounded by step_timeout + register_timeout
    f->cfg.heartbeat_interval = 0.05;
    f->cfg.codec = codec;
    f->cfg.broadcast = bcast;
    f->cfg.eval_every_epoch = -1;
    return f;
}

static void check_ok_run(int codec, int bcast) {
    fake *f = new_fake(SC_OK, codec, bcast);
    char summary[] = "/tmp/wren-tpsc-summary-XXXXXX";
    int fd = mkstemp(summary);
    close(fd);
    char err[WR_ERR_LEN] = "";
    int st = run_worker(f, summary, err);
    if (st) fprintf(stderr, "worker: %s\n", err);
    assert_int_equal(st, WR_EXIT_OK);
    // Digests after steps 5, 10, 15, 20 for both shards, each equal to the shard's.
    assert_int_equal(f->digests_seen, (STEPS / 5) * N_SHARDS);
    for (int t = 5; t <= STEPS; t += 5)
        for (int s = 0; s < N_SHARDS; s++) {
            assert_true(f->worker_digest[t][s] != 0);
            assert_true(f->worker_digest[t][s] == f->shard_digest[t][s]);
        }
    assert_int_equal(f->leaves, 1);
    assert_int_equal(f->stats, 1);
    assert_int_equal(access(summary, R_OK), 0);
    unlink(summary);
    free(f);
}

static void test_birder_1bit_replicas_agree(void **state) {
    (void)state;
    check_ok_run(WR_JOB_CODEC_BIRDER, WR_BCAST_1BIT);
}

static void test_birder_exact_replicas_agree(void **state) {
    (void)state;
    check_ok_run(WR_JOB_CODEC_BIRDER, WR_BCAST_EXACT);
}

static void test_fp32_replicas_agree(void **state) {
    (void)state;
    check_ok_run(WR_JOB_CODEC_FP32, WR_BCAST_1BIT);
}

static void test_silent_shard_is_named(void **state) {
    (void)state;
    fake *f = new_fake(SC_SILENT_SHARD, WR_JOB_CODEC_BIRDER, WR_BCAST_1BIT);
    char err[WR_ERR_LEN] = "";
    int st = run_worker(f, NULL, err);
    assert_int_equal(st, WR_EXIT_FAILURE);
    assert_non_null(strstr(err, "step 3"));
    assert_non_null(strstr(err, "shard 1"));
    assert_non_null(strstr(err, f->shard_addr[1]));
    assert_non_null(strstr(err, "step_timeout"));
    free(f);
}

static void test_shutdown_stops_with_status(void **state) {
    (void)state;
    fake *f = new_fake(SC_SHUTDOWN, WR_JOB_CODEC_BIRDER, WR_BCAST_1BIT);
    char err[WR_ERR_LEN] = "";
    int st = run_worker(f, NULL, err);
    assert_int_equal(st, WR_EXIT_NODE_LOST);
    assert_non_null(strstr(err, "worker 7 is dead (test)"));
    assert_int_equal(f->leaves, 0);
    free(f);
}

static void test_wrong_step_refused(void **state) {
    (void)state;
    fake *f = new_fake(SC_WRONG_STEP, WR_JOB_CODEC_BIRDER, WR_BCAST_1BIT);
    char err[WR_ERR_LEN] = "";
    int st = run_worker(f, NULL, err);
    assert_int_equal(st, WR_EXIT_FAILURE);
    assert_non_null(strstr(err, "shard 0"));
    assert_non_null(strstr(err, "step"));
    free(f);
}

static void test_nparams_mismatch(void **state) {
    (void)state;
    fake *f = new_fake(SC_BAD_NPARAMS, WR_JOB_CODEC_BIRDER, WR_BCAST_1BIT);
    char err[WR_ERR_LEN] = "";
    int st = run_worker(f, NULL, err);
    assert_int_equal(st, WR_EXIT_CONFIG);
    assert_non_null(strstr(err, "n_params"));
    free(f);
}

static void test_silent_shard_reports_timeout(void **state) {
    (void)state;
    fake *f = new_fake(SC_SILENT_SHARD, WR_JOB_CODEC_FP32, WR_BCAST_1BIT);
    char err[WR_ERR_LEN] = "";
    assert_int_equal(run_worker(f, NULL, err), WR_EXIT_FAILURE);
    assert_int_equal(f->errors, 1);
    assert_int_equal(f->error_code, WR_EC_TIMEOUT);
    free(f);
}

static void test_shard_max_msg(void **state) {
    (void)state;
    assert_true(wr_proto_data_frame_max(0) == WR_PROTO_MAX_CONTROL_MSG);
    assert_true(wr_proto_data_frame_max(2048) == WR_PROTO_MAX_CONTROL_MSG);
    uint64_t n = 110000000ull / 4;
    assert_true(wr_proto_data_frame_max(n) == (int64_t)(4 * n + (64 << 10)));
}

// Shard 1 answers the PULL with a frame over the bound: the worker must not
// take it (without the bound it would, warn "unexpected PARAMS" and time out);
// it loses the connection and stops naming shard 1, reporting no timeout.
static void test_oversized_frame_not_taken(void **state) {
    (void)state;
    fake *f = new_fake(SC_OVERSIZE, WR_JOB_CODEC_BIRDER, WR_BCAST_1BIT);
    f->cfg.register_timeout = 2;
    char err[WR_ERR_LEN] = "";
    int st = run_worker(f, NULL, err);
    assert_int_equal(st, WR_EXIT_FAILURE);
    assert_int_equal(atomic_load(&f->oversize_sent), 1);
    assert_non_null(strstr(err, "shard 1"));
    assert_non_null(strstr(err, f->shard_addr[1]));
    assert_non_null(strstr(err, "lost connection"));
    assert_int_equal(f->errors, 1);
    assert_int_equal(f->error_code, WR_EC_INTERNAL);
    free(f);
}

// idx file of n zero images (28x28) or labels, uncompressed (zlib reads it as is).
static void write_idx(const char *dir, const char *name, int images, uint32_t n) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    uint8_t hdr[16] = {0,
                       0,
                       8,
                       images ? 3 : 1,
                       (uint8_t)(n >> 24),
                       (uint8_t)(n >> 16),
                       (uint8_t)(n >> 8),
                       (uint8_t)n,
                       0,
                       0,
                       0,
                       28,
                       0,
                       0,
                       0,
                       28};
    assert_int_equal(fwrite(hdr, 1, images ? 16 : 8, fp), images ? 16 : 8);
    size_t body = images ? (size_t)n * 784 : n;
    for (size_t i = 0; i < body; i++) fputc(images ? 0 : (int)(i % 10), fp);
    fclose(fp);
}

static void test_small_training_set_fails_before_forming(void **state) {
    (void)state;
    fake *f = new_fake(SC_SMALL_DATA, WR_JOB_CODEC_BIRDER, WR_BCAST_1BIT);
    char ddir[] = "/tmp/wren-tpsc-data-XXXXXX";
    assert_non_null(mkdtemp(ddir));
    const char *names[4] = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                            "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};
    for (int i = 0; i < 4; i++) write_idx(ddir, names[i], i % 2 == 0, 4);
    char err[WR_ERR_LEN] = "";
    assert_int_equal(wr_config_set_kv(&f->cfg, "model=mlp", err), WR_OK);
    snprintf(f->cfg.data_dir, sizeof f->cfg.data_dir, "%s", ddir);
    f->cfg.batch = 8;
    int st = run_worker(f, NULL, err);
    for (int i = 0; i < 4; i++) {
        char path[256];
        snprintf(path, sizeof path, "%s/%s", ddir, names[i]);
        unlink(path);
    }
    rmdir(ddir);
    if (st != WR_EXIT_CONFIG) fprintf(stderr, "worker: %s\n", err);
    assert_int_equal(st, WR_EXIT_CONFIG);
    assert_non_null(strstr(err, "batch 8 exceeds the 4 training examples"));
    assert_int_equal(f->registers_full, 0);
    assert_int_equal(f->errors, 1);
    assert_int_equal(f->error_code, WR_EC_CONFIG);
    free(f);
}

static void test_no_coordinator(void **state) {
    (void)state;
    wr_ps_opts o;
    wr_ps_opts_default(&o);
    o.coordinator = "ipc:///tmp/wren-tpsc-nobody-here";
    o.connect_timeout = 0.3;
    wr_train_opts to = {.threads = 1};
    char err[WR_ERR_LEN] = "";
    assert_int_equal(wr_train_run(wr_exchange_ps(&o), &to, NULL, err), WR_EXIT_NO_COORDINATOR);
    assert_non_null(
        strstr(err, "no reply from coordinator at ipc:///tmp/wren-tpsc-nobody-here within 0.3 s"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_birder_1bit_replicas_agree),
        cmocka_unit_test(test_birder_exact_replicas_agree),
        cmocka_unit_test(test_fp32_replicas_agree),
        cmocka_unit_test(test_silent_shard_is_named),
        cmocka_unit_test(test_shutdown_stops_with_status),
        cmocka_unit_test(test_wrong_step_refused),
        cmocka_unit_test(test_nparams_mismatch),
        cmocka_unit_test(test_silent_shard_reports_timeout),
        cmocka_unit_test(test_shard_max_msg),
        cmocka_unit_test(test_oversized_frame_not_taken),
        cmocka_unit_test(test_small_training_set_fails_before_forming),
        cmocka_unit_test(test_no_coordinator),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
