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
//
// Membership epochs (docs/ARCHITECTURE.md, "Membership epochs: the worker"):
// a map of epoch 2 with sf arriving mid-run changes the worker's split at
// sf; a BROADCAST of a newer epoch makes the worker wait for that map; a
// joiner PULLs the parameters after T - 1 and trains from T; a removed
// worker registers again and goes on as a joiner. The shards check the
// epoch, rank and credential of every push against the script.
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
#include <signal.h>
#include <sys/stat.h>
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
    SC_SMALL_DATA,
    SC_EPOCH2,       // epoch 2 (ranks 0 and 3) commits at step 6's push, from step 8 (sf)
    SC_EPOCH2_LATE,  // the same, the map sent 300 ms after the shards switched
    SC_JOINER,       // the worker joins as rank 5 of epoch 3 (ranks 2, 5) at step 8
    SC_REMOVED,      // step 6's push is refused, the worker removed; it rejoins as rank 1 at step 9
    SC_STOP,         // a stop request (as from SIGTERM) arrives during step STOP_AT
    SC_DONE_JOINING  // the second REGISTER is answered SHUTDOWN{0, "job done"}: the job ended
};

// Membership-change scenarios (the fake's script).
#define EPOCH2_COMMIT 6  // the push that makes the shards switch (SC_EPOCH2*)
#define EPOCH2_SF 8
#define JOIN_T 8
#define REMOVED_AT 6
#define REJOIN_T 9
#define STOP_AT 11

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
    // membership changes: the worker's main connection, requests between the
    // fake nodes' threads, what the worker's run reported
    wr_msg wpeer;            // peer id of the worker's REGISTERs
    atomic_int map_due;      // shards -> coordinator: send the next epoch's map (SC_EPOCH2*)
    atomic_int map_sent;     // coordinator: that map went out
    atomic_int remove_due;   // shards -> coordinator: tell the worker it was removed (SC_REMOVED)
    atomic_int shard_epoch;  // the epoch the shards put in BROADCAST/PARAMS
    int leave_step;
    atomic_int left;           // the coordinator read the worker's LEAVE (and so all sent before it)
    pthread_t main_thread;     // SC_STOP: where the stop signal goes
    wr_train_stats run_stats;  // the worker's figures (wr_train_run)
} fake;

// The rank credential the fake coordinator gives rank r.
static void rank_token(int r, uint8_t *tk) {
    static const uint8_t base[WR_TOKEN_LEN] = {0xde, 0xad, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 0x0e};
    memcpy(tk, base, WR_TOKEN_LEN);
    tk[2] = (uint8_t)(1 + r);
}

// The epoch and rank the worker's PUSH of step t must carry in each scenario.
static uint64_t push_epoch(enum scenario sc, uint64_t t) {
    if (sc == SC_EPOCH2 || sc == SC_EPOCH2_LATE) return t < EPOCH2_SF ? 1 : 2;
    if (sc == SC_JOINER) return 3;
    if (sc == SC_REMOVED) return t <= REMOVED_AT ? 1 : 2;
    return 1;
}

static int push_rank(enum scenario sc, uint64_t t) {
    if (sc == SC_JOINER) return 5;
    if (sc == SC_REMOVED) return t <= REMOVED_AT ? 0 : 1;
    return 0;
}

// cmocka's asserts must not run outside the test's thread: the fake nodes
// count failed checks and the test asserts the count is 0.

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

typedef struct {
    uint64_t epoch, sf;
    int rank;         // the recipient's
    int ranks[2], n;  // the members
    uint64_t n_params;
} map_spec;

// A CLUSTER_MAP of the job (epoch >= 1) to the worker's main connection.
static void send_map(fake *f, const map_spec *ms, char **kv, uint32_t nkv) {
    char err[WR_ERR_LEN];
    wr_pmsg r;
    wr_pmsg_init(&r, WR_MT_CLUSTER_MAP);
    r.job_id = f->cfg.job_id;
    r.config = kv;
    r.n_config = nkv;
    r.epoch = ms->epoch;
    r.start_step = ms->sf;
    r.total_steps = ms->sf ? STEPS : 0;
    r.rank = ms->rank;
    r.n_params = ms->n_params;
    wr_shard_info si[N_SHARDS] = {0};  // no keys: key "" (not garbage)
    wr_worker_info wi[2] = {0};
    uint64_t lo[N_SHARDS], hi[N_SHARDS];
    T_CHECK(f, wr_shard_ranges(r.n_params, N_SHARDS, lo, hi, err) == WR_OK);
    for (int s = 0; s < N_SHARDS; s++) {
        si[s].lo = lo[s];
        si[s].hi = hi[s];
        snprintf(si[s].addr, sizeof si[s].addr, "%s", f->shard_addr[s]);
    }
    for (int i = 0; i < ms->n; i++) wi[i].rank = ms->ranks[i];
    r.shards = si;
    r.n_shards = N_SHARDS;
    r.workers = wi;
    r.n_workers_map = (uint32_t)ms->n;
    r.has_token = 1;  // the worker's credential (docs/PROTOCOL.md, "Rank credentials")
    rank_token(ms->rank, r.token);
    send_to(f, f->coord_ep, &f->wpeer, &r, NULL, 0);
}

// The map answering a worker's REGISTER with its model (the n-th such).
static void answer_register(fake *f, int nth, char **kv, uint32_t nkv) {
    map_spec ms = {.epoch = 1, .rank = 0, .ranks = {0}, .n = 1, .n_params = D};
    if (f->sc == SC_BAD_NPARAMS) ms.n_params = D + 64;
    if (f->sc == SC_JOINER) ms = (map_spec){3, JOIN_T, 5, {2, 5}, 2, D};
    if (f->sc == SC_REMOVED && nth == 2) {
        ms = (map_spec){2, REJOIN_T, 1, {1}, 1, D};
        atomic_store(&f->shard_epoch, 2);  // the shards committed epoch 2 before the map goes out
    }
    send_map(f, &ms, kv, nkv);
}

static void answer_welcome(fake *f, const wr_msg *msg, char **kv, uint32_t nkv) {
    wr_pmsg r;
    wr_pmsg_init(&r, WR_MT_CLUSTER_MAP);
    r.job_id = f->cfg.job_id;
    r.config = kv;
    r.n_config = nkv;
    r.epoch = 0;  // the welcome: config only
    send_to(f, f->coord_ep, msg, &r, NULL, 0);
}

// What the shards asked for: epoch 2's map (at once, or 300 ms late), the
// worker's removal (100 ms after its push was refused).
static void coord_script(fake *f, char **kv, uint32_t nkv, double *due_at) {
    int map_due = atomic_load(&f->map_due), rm_due = atomic_load(&f->remove_due);
    if ((map_due && !atomic_load(&f->map_sent)) || rm_due == 1) {
        double now = wr_now();
        if (*due_at == 0) *due_at = now;
        double delay = rm_due == 1 ? 0.1 : f->sc == SC_EPOCH2_LATE ? 0.3 : 0;
        if (now - *due_at < delay) return;
        *due_at = 0;
    }
    if (map_due && !atomic_load(&f->map_sent)) {
        atomic_store(&f->map_sent, 1);
        map_spec ms = {2, EPOCH2_SF, 0, {0, 3}, 2, D};
        send_map(f, &ms, kv, nkv);
    }
    if (rm_due == 1) {
        wr_pmsg r;
        wr_pmsg_init(&r, WR_MT_ERROR);
        r.job_id = f->cfg.job_id;
        r.code = WR_EC_REJECTED;
        snprintf(r.reason, sizeof r.reason, "removed from the job: no heartbeat for 9.9 s (test)");
        send_to(f, f->coord_ep, &f->wpeer, &r, NULL, 0);
        atomic_store(&f->remove_due, 2);
    }
}

static void *coord_main(void *arg) {
    fake *f = arg;
    char err[WR_ERR_LEN];
    char **kv;
    uint32_t nkv;
    wr_config_to_kv(&f->cfg, &kv, &nkv);
    double due_at = 0;
    while (!atomic_load(&f->stop)) {
        coord_script(f, kv, nkv, &due_at);
        wr_msg msg;
        memset(&msg, 0, sizeof msg);
        if (wr_recv(f->coord_ep, &msg, 20, err) != WR_OK) continue;
        wr_pmsg h;
        if (wr_proto_decode(msg.header.data, msg.header.len, msg.payload.len, NULL, &h, NULL, err) != WR_OK) {
            wr_msg_release(&msg);
            continue;
        }
        if (h.type == WR_MT_ERROR) {
            f->errors++;
            f->error_code = h.code;
            atomic_store(&f->left, 1);
        } else if (h.type == WR_MT_REGISTER) {
            memcpy(f->wpeer.peer, msg.peer, msg.peer_len);
            f->wpeer.peer_len = msg.peer_len;
            if (h.n_params == 0)
                answer_welcome(f, &msg, kv, nkv);
            else if (f->sc == SC_DONE_JOINING) {
                wr_pmsg r;
                wr_pmsg_init(&r, WR_MT_SHUTDOWN);
                r.job_id = f->cfg.job_id;
                r.code = WR_EXIT_OK;
                snprintf(r.reason, sizeof r.reason, "job done");
                send_to(f, f->coord_ep, &msg, &r, NULL, 0);
            } else
                answer_register(f, ++f->registers_full, kv, nkv);
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
            f->leave_step = (int)h.step;
            atomic_store(&f->left, 1);
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

typedef struct {
    fake *f;
    wr_shard_core *core[N_SHARDS];
    uint64_t lo[N_SHARDS], hi[N_SHARDS];
    void *out, *zero;  // broadcast payload; a zero gradient for steps of other workers
} shards;

// Steps up to `to` that other members of the job do (no push from the worker
// under test): a zero push as the core's rank 0, so the master copy moves on
// as the job's would.
static void other_workers_steps(shards *S, int s, uint64_t to) {
    fake *f = S->f;
    char err[WR_ERR_LEN];
    while (wr_shard_core_step(S->core[s]) < to) {
        wr_pmsg h, bh;
        wr_pmsg_init(&h, WR_MT_PUSH);
        h.step = wr_shard_core_step(S->core[s]) + 1;
        h.shard = s;
        h.rank = 0;
        h.offset = S->lo[s];
        h.n_elems = S->hi[s] - S->lo[s];
        h.codec = f->cfg.codec == WR_JOB_CODEC_BIRDER ? WR_CODEC_BITS : WR_CODEC_FP32;
        h.payload_len = wr_proto_payload_bytes(h.codec, h.n_elems, 0);
        T_CHECK(f, wr_shard_core_push(S->core[s], &h, S->zero, h.payload_len, err) == WR_OK);
        T_CHECK(f, wr_shard_core_finish(S->core[s], S->out, &bh, err) == WR_OK);
        if (bh.step <= STEPS) f->shard_digest[bh.step][s] = wr_shard_core_digest(S->core[s]);
    }
}

// A joiner's job already has parameters (another rank 0 sent them).
static void job_params(shards *S, int s) {
    char err[WR_ERR_LEN];
    size_t n = S->hi[s] - S->lo[s];
    float *x = aligned_alloc(64, n * 4);
    for (size_t i = 0; i < n; i++) x[i] = 0.01f * (float)((S->lo[s] + i) % 7);
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_PARAMS);
    h.shard = s;
    h.offset = S->lo[s];
    h.n_elems = n;
    h.codec = WR_CODEC_FP32;
    h.payload_len = n * 4;
    T_CHECK(S->f, wr_shard_core_set_params(S->core[s], &h, x, n * 4, err) == WR_OK);
    free(x);
}

static void reply_params(shards *S, int s, const wr_msg *msg, const wr_pmsg *h) {
    fake *f = S->f;
    if (f->sc == SC_OVERSIZE && s == 1) {
        // A PARAMS frame 4 KiB over the worker's bound for this range.
        size_t len = (size_t)wr_proto_data_frame_max(S->hi[s] - S->lo[s]) + 4096;
        len -= len % 4;
        void *big = calloc(1, len);
        wr_pmsg r;
        wr_pmsg_init(&r, WR_MT_PARAMS);
        r.job_id = f->cfg.job_id;
        r.epoch = 1;
        r.shard = s;
        r.offset = S->lo[s];
        r.n_elems = len / 4;
        r.codec = WR_CODEC_FP32;
        send_to(f, f->shard_ep[s], msg, &r, big, len);
        free(big);
        atomic_store(&f->oversize_sent, 1);
        return;
    }
    // A joiner asks for the parameters after step T - 1 (PULL 's').
    uint64_t want = f->sc == SC_JOINER ? JOIN_T - 1 : f->sc == SC_REMOVED && h->rank == 1 ? REJOIN_T - 1 : 0;
    T_CHECK(f, h->step == want);
    T_CHECK(f, wr_shard_core_has_params(S->core[s]));  // one worker: PARAMS came first
    other_workers_steps(S, s, h->step);
    wr_pmsg r;
    wr_pmsg_init(&r, WR_MT_PARAMS);
    r.job_id = f->cfg.job_id;
    r.epoch = (uint64_t)atomic_load(&f->shard_epoch);
    r.step = wr_shard_core_step(S->core[s]);
    r.shard = s;
    r.offset = S->lo[s];
    r.n_elems = S->hi[s] - S->lo[s];
    r.codec = WR_CODEC_FP32;
    send_to(f, f->shard_ep[s], msg, &r, wr_shard_core_params(S->core[s]), r.n_elems * 4);
}

// The shards' side of the membership scripts at a worker's PUSH of step t.
// Returns 1 when the push is refused (SC_REMOVED: the worker was removed).
static int push_script(shards *S, int s, const wr_msg *msg, uint64_t t) {
    fake *f = S->f;
    if ((f->sc == SC_EPOCH2 || f->sc == SC_EPOCH2_LATE) && t == EPOCH2_COMMIT) {
        atomic_store(&f->shard_epoch, 2);  // committed: broadcasts carry epoch 2 from here on
        atomic_store(&f->map_due, 1);
    }
    // The worker waited for epoch 2's map, which came 300 ms after the
    // broadcasts of step EPOCH2_COMMIT said epoch 2, before its next push.
    if (f->sc == SC_EPOCH2_LATE && t == EPOCH2_COMMIT + 1) T_CHECK(f, atomic_load(&f->map_sent));
    if (f->sc != SC_REMOVED || t != REMOVED_AT) return 0;
    wr_pmsg r;
    wr_pmsg_init(&r, WR_MT_ERROR);  // as a shard refuses an unauthorized rank: no job id
    r.code = WR_EC_PROTOCOL;
    snprintf(r.reason, sizeof r.reason, "not authorized for rank 0");
    send_to(f, f->shard_ep[s], msg, &r, NULL, 0);
    if (atomic_load(&f->remove_due) == 0) atomic_store(&f->remove_due, 1);
    return 1;
}

static void take_push(shards *S, int s, const wr_msg *msg, wr_pmsg *h) {
    fake *f = S->f;
    char err[WR_ERR_LEN];
    T_CHECK(f, h->epoch == push_epoch(f->sc, h->step));
    T_CHECK(f, h->rank == push_rank(f->sc, h->step));
    if (push_script(S, s, msg, h->step)) return;
    h->rank = 0;  // the core holds one worker: the one under test
    int ok = wr_shard_core_push(S->core[s], h, msg->payload.data, msg->payload.len, err) == WR_OK;
    T_CHECK(f, ok);
    wr_pmsg bh;
    ok = ok && wr_shard_core_finish(S->core[s], S->out, &bh, err) == WR_OK;
    T_CHECK(f, ok);
    if (!ok) return;
    bh.job_id = f->cfg.job_id;
    bh.epoch = (uint64_t)atomic_load(&f->shard_epoch);
    uint64_t t = bh.step;
    if (t <= STEPS) f->shard_digest[t][s] = wr_shard_core_digest(S->core[s]);
    int silent = f->sc == SC_SILENT_SHARD && s == 1 && t == 3;
    // SHUTDOWN follows step 10's digest: hold later broadcasts so
    // that a fast worker cannot finish every step before it arrives.
    int held = f->sc == SC_SHUTDOWN && t > 10;
    // The stop request comes while the worker waits for step STOP_AT's
    // broadcasts (handled on the worker's thread, as a signal would be).
    if (f->sc == SC_STOP && s == 0 && t == STOP_AT) pthread_kill(f->main_thread, SIGUSR1);
    if (f->sc == SC_WRONG_STEP && s == 0 && t == 3) bh.step = 4;
    if (!silent && !held) send_to(f, f->shard_ep[s], msg, &bh, S->out, bh.payload_len);
}

static void shard_message(shards *S, int s, const wr_msg *msg, wr_pmsg *h) {
    fake *f = S->f;
    char err[WR_ERR_LEN];
    // every data message carries the credential the map gave the worker's rank
    uint8_t tk[WR_TOKEN_LEN];
    rank_token(h->rank, tk);
    T_CHECK(f, h->has_token && memcmp(h->token, tk, WR_TOKEN_LEN) == 0);
    if (h->type == WR_MT_PARAMS) {
        T_CHECK(f, f->sc != SC_JOINER && h->rank == 0);  // the initial parameters: rank 0 of epoch 1 only
        T_CHECK(f,
                wr_shard_core_set_params(S->core[s], h, msg->payload.data, msg->payload.len, err) == WR_OK);
    } else if (h->type == WR_MT_PULL) {
        reply_params(S, s, msg, h);
    } else if (h->type == WR_MT_PUSH) {
        take_push(S, s, msg, h);
    }
}

static void *shards_main(void *arg) {
    fake *f = arg;
    char err[WR_ERR_LEN];
    shards S = {.f = f};
    T_CHECK(f, wr_shard_ranges(D, N_SHARDS, S.lo, S.hi, err) == WR_OK);
    for (int s = 0; s < N_SHARDS; s++) {
        S.core[s] = wr_shard_core_new(&f->cfg, s, S.lo[s], S.hi[s], 1, STEPS, err);
        if (!S.core[s]) {
            fprintf(stderr, "shard core: %s\n", err);
            atomic_fetch_add(&f->thread_errors, 1);
            return NULL;
        }
        if (f->sc == SC_JOINER) job_params(&S, s);
    }
    S.out = aligned_alloc(64, 64 * 1024);
    S.zero = aligned_alloc(64, 64 * 1024);
    memset(S.zero, 0, 64 * 1024);
    while (!atomic_load(&f->stop)) {
        int ready[N_SHARDS] = {0};
        if (wr_poll(f->shard_ep, N_SHARDS, ready, 50, err) <= 0) continue;
        for (int s = 0; s < N_SHARDS; s++) {
            if (!ready[s]) continue;
            wr_msg msg;
            memset(&msg, 0, sizeof msg);
            if (wr_recv(f->shard_ep[s], &msg, 0, err) != WR_OK) continue;
            wr_pmsg h;
            if (wr_proto_decode(msg.header.data, msg.header.len, msg.payload.len, NULL, &h, NULL, err) ==
                WR_OK) {
                shard_message(&S, s, &msg, &h);
                wr_pmsg_clear(&h);
            }
            wr_msg_release(&msg);
        }
    }
    free(S.out);
    free(S.zero);
    for (int s = 0; s < N_SHARDS; s++) wr_shard_core_free(S.core[s]);
    return NULL;
}

// ---- harness ------------------------------------------------------------------------

// SIGUSR1 stands for SIGTERM in SC_STOP: the handler does what
// wren-worker's does with a first signal while training.
static wr_train_stop test_stop;
static void on_test_stop(int sig) { test_stop.requested = sig; }

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
    atomic_init(&f->map_due, 0);
    atomic_init(&f->left, 0);
    atomic_init(&f->map_sent, 0);
    atomic_init(&f->remove_due, 0);
    atomic_init(&f->shard_epoch, f->sc == SC_JOINER ? 3 : 1);
    f->main_thread = pthread_self();  // before the threads that read it start
    pthread_create(&tc, NULL, coord_main, f);
    pthread_create(&ts, NULL, shards_main, f);

    wr_ps_opts o;
    wr_ps_opts_default(&o);
    o.coordinator = f->coord_addr;
    o.host = "testhost";
    o.connect_timeout = 5;
    wr_train_opts to = {.summary_path = summary, .threads = 1, .stop = &test_stop};
    memset(&test_stop, 0, sizeof test_stop);
    int st = wr_train_run(wr_exchange_ps(&o), &to, &f->run_stats, err);
    // The worker's last messages may still be on their way to the fake
    // coordinator: wait (up to 2 s) until it read the LEAVE or the ERROR.
    for (int i = 0; i < 200 && !atomic_load(&f->left); i++) usleep(10 * 1000);

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

// A worker still joining when the job ends well exits with the job's 0,
// silently: no ERROR, no LEAVE (issue 13: one status per cause).
static void test_shutdown_ok_while_joining(void **state) {
    (void)state;
    fake *f = new_fake(SC_DONE_JOINING, WR_JOB_CODEC_BIRDER, WR_BCAST_1BIT);
    char err[WR_ERR_LEN] = "";
    int st = run_worker(f, NULL, err);
    assert_int_equal(st, WR_EXIT_OK);
    assert_int_equal(f->errors, 0);
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

// A stop request during step 11 (SIGTERM in wren-worker): the worker
// finishes step 11, writes its summary, sends STATS and LEAVE{s = 11} and
// ends with status 0.
static void test_stop_request_leaves_after_the_step(void **state) {
    (void)state;
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_test_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, &old);
    fake *f = new_fake(SC_STOP, WR_JOB_CODEC_BIRDER, WR_BCAST_1BIT);
    char summary[] = "/tmp/wren-tpsc-summary-XXXXXX";
    int fd = mkstemp(summary);
    close(fd);
    char err[WR_ERR_LEN] = "";
    int st = run_worker(f, summary, err);
    sigaction(SIGUSR1, &old, NULL);
    if (st) fprintf(stderr, "worker: %s\n", err);
    assert_int_equal(st, WR_EXIT_OK);
    assert_int_equal(test_stop.requested, SIGUSR1);
    assert_int_equal(f->run_stats.steps, STOP_AT);
    assert_int_equal(f->stats, 1);
    assert_int_equal(f->leaves, 1);
    assert_int_equal(f->leave_step, STOP_AT);
    assert_int_equal(f->errors, 0);
    assert_true(f->worker_digest[10][0] == f->shard_digest[10][0]);
    assert_true(f->worker_digest[15][0] == 0);
    struct stat sb;
    assert_int_equal(stat(summary, &sb), 0);
    assert_true(sb.st_size > 0);
    unlink(summary);
    free(f);
}

// ---- membership epochs ------------------------------------------------------------

// Runs a membership scenario to its end and checks what every one shares:
// exit 0, the worker's digests equal the shards' at every due step from
// `from` on (and none before), one STATS and LEAVE{s = STEPS}.
static fake *run_epochs(enum scenario sc, int first_digest) {
    fake *f = new_fake(sc, WR_JOB_CODEC_BIRDER, WR_BCAST_1BIT);
    char err[WR_ERR_LEN] = "";
    int st = run_worker(f, NULL, err);
    if (st) fprintf(stderr, "worker: %s\n", err);
    assert_int_equal(st, WR_EXIT_OK);
    for (int t = 5; t <= STEPS; t += 5)
        for (int s = 0; s < N_SHARDS; s++) {
            if (t < first_digest) {
                assert_true(f->worker_digest[t][s] == 0);
                continue;
            }
            assert_true(f->worker_digest[t][s] != 0);
            assert_true(f->worker_digest[t][s] == f->shard_digest[t][s]);
        }
    assert_int_equal(f->stats, 1);
    assert_int_equal(f->leaves, 1);
    assert_int_equal(f->leave_step, STEPS);
    assert_int_equal(f->run_stats.last_step, STEPS);
    return f;
}

// Epoch 2 (ranks 0 and 3) arrives while steps run, with sf = 8: pushes of
// steps < 8 carry epoch 1, later ones epoch 2 (checked by the shards), and
// the local batch is 8 up to step 7, then 4 (position 0 of 2).
static void test_epoch2_map_changes_split_at_sf(void **state) {
    (void)state;
    fake *f = run_epochs(SC_EPOCH2, 5);
    assert_int_equal(atomic_load(&f->map_sent), 1);
    assert_int_equal(f->run_stats.samples, (EPOCH2_SF - 1) * 8 + (STEPS - EPOCH2_SF + 1) * 4);
    free(f);
}

// The shards broadcast step 6 with epoch 2 and the map comes 300 ms later:
// the worker must wait for it before step 7 (its push of step 7 finds the map
// sent) and then follow it from sf.
static void test_newer_epoch_broadcast_waits_for_map(void **state) {
    (void)state;
    fake *f = run_epochs(SC_EPOCH2_LATE, 5);
    assert_int_equal(f->run_stats.samples, (EPOCH2_SF - 1) * 8 + (STEPS - EPOCH2_SF + 1) * 4);
    free(f);
}

// A worker admitted by a map of epoch 3 with sf = 8, as rank 5 of ranks {2,
// 5}: no initial PARAMS, PULL{s = 7} (checked by the shards), pushes from
// step 8 at epoch 3, local batch 4 (position 1 of 2), digests from step 10.
static void test_joiner_pulls_T_minus_1_and_starts_at_T(void **state) {
    (void)state;
    fake *f = run_epochs(SC_JOINER, 10);
    assert_int_equal(f->run_stats.samples, (STEPS - JOIN_T + 1) * 4);
    assert_int_equal(f->digests_seen, 3 * N_SHARDS);
    free(f);
}

// Step 6's push is refused ("not authorized") and the coordinator says the
// worker was removed: it registers again (both phases), joins epoch 2 as
// rank 1 from step 9 (PULL{s = 8}, token of rank 1, epoch 2: checked by the
// shards) and finishes the job with digests equal to the shards'. It sends
// no ERROR: the removal is not a failure.
static void test_removed_worker_registers_again(void **state) {
    (void)state;
    fake *f = run_epochs(SC_REMOVED, 5);
    assert_int_equal(atomic_load(&f->remove_due), 2);
    assert_int_equal(f->registers_full, 2);
    assert_int_equal(f->errors, 0);
    assert_int_equal(f->run_stats.samples, (REMOVED_AT - 1) * 8 + (STEPS - REJOIN_T + 1) * 8);
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
        cmocka_unit_test(test_shutdown_ok_while_joining),
        cmocka_unit_test(test_wrong_step_refused),
        cmocka_unit_test(test_nparams_mismatch),
        cmocka_unit_test(test_silent_shard_reports_timeout),
        cmocka_unit_test(test_shard_max_msg),
        cmocka_unit_test(test_oversized_frame_not_taken),
        cmocka_unit_test(test_small_training_set_fails_before_forming),
        cmocka_unit_test(test_no_coordinator),
        cmocka_unit_test(test_epoch2_map_changes_split_at_sf),
        cmocka_unit_test(test_newer_epoch_broadcast_waits_for_map),
        cmocka_unit_test(test_joiner_pulls_T_minus_1_and_starts_at_T),
        cmocka_unit_test(test_removed_worker_registers_again),
        cmocka_unit_test(test_stop_request_leaves_after_the_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
