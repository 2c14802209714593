// wren_fake_worker.c — a minimal worker that speaks the mode=ps wire protocol
// (docs/ARCHITECTURE.md "Job life cycle") with cheap synthetic gradients, to
// drive a coordinator + shards without the real model: registration in two
// phases, initial PARAMS/PULL, PUSH/BROADCAST steps with the Birder codec (or
// fp32), digests, STATS, LEAVE. Fault injection for tests: --corrupt-at STEP
// perturbs this replica after STEP (digest mismatch), --die-at STEP exits
// silently before STEP (dead node), --bad-push sends malformed and duplicate
// pushes first (they must be refused without harm). --fixed-grad draws the
// gradient once (to time the communication, not the generator). --barrier
// enters BARRIER 7 before the first step and waits for its release.
// --source IP connects to a tcp coordinator from that local address (an
// outsider on 127.0.0.2); a refused registration ends the process (2 for
// ERROR{config}, else 1) after logging the ERROR's job id field.
// mode=allreduce (the welcome's config says so): the coordinator's side only
// (run_allreduce): it binds a data endpoint and registers it as tcp://*:PORT
// with --group NAME, checks the map without shards, heartbeats, sends the
// DIGESTs of a vector every replica computes alike, and LEAVEs (exit 0); no CHUNK is
// exchanged. --corrupt-at and --die-at work there too.
//
//   wren_fake_worker --coordinator ADDR --d D [--host NAME] [--group NAME] [--corrupt-at T]
//                    [--die-at T] [--bad-push] [--source IP] [--log-level L]
// Exit: 0 ok; the SHUTDOWN status when the coordinator stops the job; 1 error;
// 6 coordinator unreachable.
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "birder.h"
#include "config.h"
#include "digest.h"
#include "heartbeat.h"
#include "log.h"
#include "proto.h"
#include "rng.h"
#include "schedule.h"
#include "node.h"
#include "transport.h"

typedef struct {
    uint64_t lo, hi;
    char addr[WR_ADDR_MAX];
    wr_endpoint *ep;
    void *last;  // the payload of the last PUSH (sent again to a replacement shard)
    size_t last_len;
    int down;  // its connection failed: wait for the coordinator's map
    int got;   // this step's broadcast applied
} sh_t;

// The status of a fake worker that dies on purpose (--die-at): not a wren
// status, so a test can tell the simulated crash from a real failure.
#define FAKE_EXIT_DIED 9

static const char *g_coord;
static wr_transport_ctx *g_ctx;
static wr_endpoint *g_cep;
static wr_buf g_hb;
static wr_job_config g_cfg;
static int g_rank = -1;
static uint8_t g_token[WR_TOKEN_LEN];  // this rank's credential (the map's 'tk')

// A data message to a shard (PUSH, PULL, PARAMS): it carries the credential.
static void data_init(wr_pmsg *p, int type) {
    wr_pmsg_init(p, type);
    p->has_token = 1;
    memcpy(p->token, g_token, WR_TOKEN_LEN);
}

static int send_c(wr_pmsg *h, const void *payload, size_t len) {
    char err[WR_ERR_LEN];
    h->job_id = g_cfg.job_id;
    h->rank = g_rank;
    h->role = WR_ROLE_WORKER;
    int rc = wr_send_pmsg(g_cep, NULL, 0, h, payload, len, NULL, NULL, 1000, &g_hb, err);
    if (rc != WR_OK) wr_warn("send %s: %s", wr_msg_type_name(h->type), err);
    return rc;
}

// Receives one decoded message from ep within timeout_ms. 0 ok (payload copied
// into *pl if pl), -1 timeout, exit status > 0 on SHUTDOWN / failure.
static int recv_one(wr_endpoint *ep, int timeout_ms, wr_pmsg *h, void *pl, size_t pl_cap) {
    wr_msg m;
    memset(&m, 0, sizeof m);
    char err[WR_ERR_LEN];
    int rc = wr_recv(ep, &m, timeout_ms, err);
    if (rc == WR_ETIMEDOUT) return -1;
    if (rc != WR_OK) {
        wr_error("recv: %s", err);
        return 1;
    }
    rc = wr_proto_decode(m.header.data, m.header.len, m.payload.len, NULL, h, NULL, err);
    if (rc != WR_OK) {
        wr_msg_release(&m);
        wr_error("bad message: %s", err);
        return 1;
    }
    if (pl && m.payload.len) {
        if (m.payload.len > pl_cap) {
            wr_msg_release(&m);
            wr_pmsg_clear(h);
            wr_error("payload too large");
            return 1;
        }
        memcpy(pl, m.payload.data, m.payload.len);
    }
    wr_msg_release(&m);
    if (h->type == WR_MT_SHUTDOWN) {
        wr_info("SHUTDOWN %d: %s", h->code, h->reason);
        int st = h->code ? h->code : 0;
        wr_pmsg_clear(h);
        return st ? st : 256;
    }
    return 0;
}

// Sends one frame of `mib` MiB to addr on its own socket (a peer trying to make
// the receiver allocate); the receiver's frame bound must drop it.
static void send_big_frame(const char *addr, long mib, const char *who) {
    char err[WR_ERR_LEN];
    wr_endpoint_opts o;
    wr_endpoint_opts_default(&o);
    o.linger_ms = 2000;
    o.heartbeat_ms = 0;
    wr_endpoint *ep = NULL;
    if (wr_connect(g_ctx, addr, &o, &ep, err) != WR_OK) {
        wr_warn("big frame: %s", err);
        return;
    }
    size_t len = (size_t)mib << 20;
    char *buf = calloc(1, len);
    buf[0] = (char)0x81;  // looks like a msgpack map
    wr_msg m;
    memset(&m, 0, sizeof m);
    m.header.data = buf;
    m.header.len = len;
    int rc = wr_send(ep, &m, 2000, err);
    wr_info("big frame of %ld MiB to %s: %s", mib, who, rc == WR_OK ? "queued" : err);
    wr_close(ep);  // lingers up to 2 s while the bytes go out
    free(buf);
}

static int wait_coord(int type, uint64_t epoch, double timeout, wr_pmsg *h) {
    double t0 = wr_now();
    while (wr_now() - t0 < timeout) {
        int rc = recv_one(g_cep, 100, h, NULL, 0);
        if (rc > 0) return rc;
        if (rc < 0) continue;
        if (h->type == type && h->epoch == epoch) return 0;
        if (h->type == WR_MT_ERROR && type != WR_MT_ERROR && g_rank < 0) {
            // refused at registration: the job's id must not be in it (tests read this line)
            wr_error("coordinator refused registration: ERROR %d, job id field %llu: %s", h->code,
                     (unsigned long long)h->job_id, h->reason);
            int st = h->code == WR_EC_CONFIG ? WR_EXIT_CONFIG : WR_EXIT_FAILURE;
            wr_pmsg_clear(h);
            return st;
        }
        if (h->type == WR_MT_ERROR) wr_warn("coordinator: ERROR %d %s", h->code, h->reason);
        wr_pmsg_clear(h);
    }
    return -1;
}

// A map from the coordinator naming a new address for a shard (a lost shard
// replaced, docs/ARCHITECTURE.md "Shard restart"): connect to it, offer this
// replica of its range (PARAMS{step applied}), take its reply: the step this
// worker missed is applied from it, else the last push goes again.
static int follow_shard_moves(const wr_pmsg *map, sh_t *sh, int S, float *x, int64_t t,
                              const wr_endpoint_opts *eo, wr_pmsg *push_hdr) {
    char err[WR_ERR_LEN];
    for (int s = 0; s < S && s < (int)map->n_shards; s++) {
        // rb = 1 names the replaced shard in 'sh' (its address may be the old one)
        if (!map->rebuild || map->shard != s) continue;
        wr_info("shard %d moved to %s: offering the replica of step %lld", s, map->shards[s].addr,
                (long long)(sh[s].got ? t : t - 1));
        wr_close(sh[s].ep);
        snprintf(sh[s].addr, sizeof sh[s].addr, "%s", map->shards[s].addr);
        if (wr_connect(g_ctx, sh[s].addr, eo, &sh[s].ep, err) != WR_OK) return 1;
        sh[s].down = 0;
        wr_pmsg p;
        data_init(&p, WR_MT_PARAMS);
        p.job_id = g_cfg.job_id;
        p.epoch = map->epoch;
        p.rank = g_rank;
        p.shard = s;
        p.step = (uint64_t)(sh[s].got ? t : t - 1);
        p.offset = sh[s].lo;
        p.n_elems = sh[s].hi - sh[s].lo;
        p.codec = WR_CODEC_FP32;
        wr_send_pmsg(sh[s].ep, NULL, 0, &p, x + sh[s].lo, p.n_elems * 4, NULL, NULL, 5000, &g_hb, err);
        wr_pmsg r;
        int st = -1;
        double t0 = wr_now();
        while (st < 0 && wr_now() - t0 < g_cfg.step_timeout)
            st = recv_one(sh[s].ep, 100, &r, x + sh[s].lo, p.n_elems * 4);
        if (st || r.type != WR_MT_PARAMS) {
            wr_error("shard %d at %s: no PARAMS after the offer", s, sh[s].addr);
            return 1;
        }
        wr_info("shard %d rebuilt at step %llu", s, (unsigned long long)r.step);
        if (r.step == (uint64_t)t) sh[s].got = 1;  // the broadcast it missed: x is now the shard's
        if (!sh[s].got) {                          // the shard needs this step's push again
            push_hdr->shard = s;
            push_hdr->offset = sh[s].lo;
            push_hdr->n_elems = sh[s].hi - sh[s].lo;
            push_hdr->epoch = map->epoch;
            wr_send_pmsg(sh[s].ep, NULL, 0, push_hdr, sh[s].last, sh[s].last_len, NULL, NULL, 5000, &g_hb,
                         err);
        }
        wr_pmsg_clear(&r);
    }
    return 0;
}

// ---- mode=allreduce: the coordinator's side only ------------------------------------

// The second REGISTER of an all-reduce worker: d, nt, its data endpoint as a
// wildcard (the coordinator puts in the address it sees) and its group.
static int ar_register(wr_endpoint **data, const char *host, const char *group, uint64_t d, uint64_t nt) {
    char err[WR_ERR_LEN], bound[WR_ADDR_MAX];
    wr_endpoint_opts eo;
    wr_endpoint_opts_default(&eo);
    if (wr_bind(g_ctx, "tcp://127.0.0.1:0", &eo, data, err) != WR_OK ||
        wr_last_endpoint(*data, bound, sizeof bound) != WR_OK) {
        wr_error("cannot bind a data endpoint: %s", err);
        return WR_EXIT_FAILURE;
    }
    const char *port = strrchr(bound, ':');
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_REGISTER);
    snprintf(h.host, sizeof h.host, "%s", host);
    snprintf(h.addr, sizeof h.addr, "tcp://*%s", port ? port : ":0");
    if (group) snprintf(h.group_name, sizeof h.group_name, "%s", group);
    h.n_params = d;
    h.train_examples = nt;
    send_c(&h, NULL, 0);
    return WR_OK;
}

// The map of an all-reduce job: no shards, every member with a data
// address, every member's token. Logs this worker's view. WR_OK or WR_ERR.
static int ar_check_map(const wr_pmsg *h) {
    int ok = h->n_shards == 0 && h->has_token && h->n_tokens == h->n_workers_map;
    for (uint32_t i = 0; i < h->n_workers_map && ok; i++) ok = h->workers[i].addr[0] != 0;
    if (!ok) {
        wr_error("not an all-reduce map: %u shards, %u workers, %u tokens", h->n_shards, h->n_workers_map,
                 h->n_tokens);
        return WR_ERR;
    }
    for (uint32_t i = 0; i < h->n_workers_map; i++)
        wr_info("member rank %d: group %d, host %s, data %s", h->workers[i].rank, h->workers[i].group,
                h->workers[i].host, h->workers[i].addr);
    return WR_OK;
}

// Steps 1..total without data: a DIGEST{sh 0} every digest_every steps of a
// value every replica shares (changed from corrupt_at on), then LEAVE. The
// coordinator's SHUTDOWN stops it (its status).
static int ar_steps(int64_t total, long corrupt_at, long die_at) {
    for (int64_t t = 1; t <= total; t++) {
        if (die_at == t) {
            wr_info("dying before step %lld as asked", (long long)t);
            _exit(FAKE_EXIT_DIED);
        }
        wr_pmsg h;
        int st = recv_one(g_cep, 5, &h, NULL, 0);  // a step's time; SHUTDOWN ends the run
        if (st > 0) return st == 256 ? 0 : st;
        if (st == 0) wr_pmsg_clear(&h);
        if (g_cfg.digest_every > 0 && t % g_cfg.digest_every == 0) {
            uint64_t v[2] = {g_cfg.seed, (uint64_t)t + (corrupt_at >= 0 && t >= corrupt_at ? 1000003u : 0)};
            wr_pmsg_init(&h, WR_MT_DIGEST);
            h.epoch = 1;
            h.step = (uint64_t)t;
            h.shard = 0;
            h.digest = wr_digest64(v, sizeof v);
            send_c(&h, NULL, 0);
        }
    }
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_LEAVE);
    h.epoch = 1;
    h.step = (uint64_t)total;
    send_c(&h, NULL, 0);  // the coordinator sends no SHUTDOWN to those who left
    return 0;
}

// The log named after the rank, once the map gave it.
static void name_log(void) {
    char name[32];
    snprintf(name, sizeof name, "fakeworker %d", g_rank);
    wr_log_set_name(name);
}

// The HEARTBEATs of this worker (rank g_rank on `host`) to the coordinator;
// NULL with err when they cannot start.
static wr_heartbeat *start_heartbeats(const char *host, char *err) {
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_HEARTBEAT);
    h.job_id = g_cfg.job_id;
    h.epoch = 1;
    h.rank = g_rank;
    h.role = WR_ROLE_WORKER;
    snprintf(h.host, sizeof h.host, "%s", host);
    return wr_heartbeat_start(g_ctx, g_coord, &h, g_cfg.heartbeat_interval, NULL, err);
}

// A whole all-reduce run after the welcome. The exit status.
static int run_allreduce(const char *host, const char *group, uint64_t d, uint64_t nt, long corrupt_at,
                         long die_at) {
    wr_endpoint *data = NULL;
    wr_pmsg h;
    int st = ar_register(&data, host, group, d, nt);
    if (st == WR_OK) st = wait_coord(WR_MT_CLUSTER_MAP, 1, g_cfg.register_timeout + 10, &h);
    if (st) {
        wr_close(data);
        return st < 0 ? 1 : st == 256 ? 0 : st;
    }
    g_rank = h.rank;
    int64_t total = (int64_t)h.total_steps;
    int ok = ar_check_map(&h) == WR_OK && total > 0;
    wr_pmsg_clear(&h);
    char err[WR_ERR_LEN];
    name_log();
    wr_heartbeat *hb = ok ? start_heartbeats(host, err) : NULL;
    st = ok ? ar_steps(total, corrupt_at, die_at) : WR_EXIT_FAILURE;
    wr_heartbeat_stop(hb);
    wr_close(data);
    return st;
}

int main(int argc, char **argv) {
    static const struct option opts[] = {
        {"coordinator", required_argument, NULL, 'C'},
        {"d", required_argument, NULL, 'd'},
        {"host", required_argument, NULL, 'H'},
        {"corrupt-at", required_argument, NULL, 'x'},
        {"die-at", required_argument, NULL, 'k'},
        {"bad-push", no_argument, NULL, 'b'},
        {"fixed-grad", no_argument, NULL, 'f'},
        {"barrier", no_argument, NULL, 'B'},
        {"log-level", required_argument, NULL, 'l'},
        {"nt", required_argument, NULL, 'n'},
        {"pull-flood", required_argument, NULL, 'P'},
        {"big-frame", required_argument, NULL, 'F'},
        {"bad-digest", no_argument, NULL, 'D'},
        {"skip-last-digest", no_argument, NULL, 'S'},
        {"late-digest", required_argument, NULL, 'L'},
        {"stall-reads", no_argument, NULL, 'R'},
        {"source", required_argument, NULL, 's'},
        {"group", required_argument, NULL, 'G'},
        {NULL, 0, NULL, 0},
    };
    uint64_t nt = 60000;
    long pull_flood = 0, big_frame_mib = 0;
    int bad_digest = 0, skip_last_digest = 0, stall_reads = 0;
    double late_digest = 0;
    uint64_t d = 0;
    const char *host = "fakehost";
    const char *source = NULL;  // tcp: connect to the coordinator from this local IP
    const char *group = NULL;   // mode=allreduce: REGISTER 'gn'
    long corrupt_at = -1, die_at = -1;
    int bad_push = 0, fixed_grad = 0, barrier = 0, c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'C': g_coord = optarg; break;
        case 'd': d = strtoull(optarg, NULL, 10); break;
        case 'H': host = optarg; break;
        case 'x': corrupt_at = atol(optarg); break;
        case 'k': die_at = atol(optarg); break;
        case 'b': bad_push = 1; break;
        case 'f': fixed_grad = 1; break;
        case 'B': barrier = 1; break;
        case 'l': wr_log_set_level((enum wr_log_level)wr_log_parse_level(optarg)); break;
        case 'n': nt = strtoull(optarg, NULL, 10); break;
        case 'P': pull_flood = atol(optarg); break;
        case 'F': big_frame_mib = atol(optarg); break;
        case 'D': bad_digest = 1; break;
        case 'S': skip_last_digest = 1; break;
        case 'L': late_digest = atof(optarg); break;
        case 'R': stall_reads = 1; break;
        case 's': source = optarg; break;
        case 'G': group = optarg; break;
        default:
            fprintf(stderr, "usage: wren_fake_worker --coordinator ADDR --d D [...]\n");
            return WR_EXIT_CONFIG;
        }
    }
    if (!g_coord || d == 0) {
        fprintf(stderr, "usage: wren_fake_worker --coordinator ADDR --d D [...]\n");
        return WR_EXIT_CONFIG;
    }
    wr_log_set_name("fakeworker");
    char err[WR_ERR_LEN];
    g_ctx = wr_transport_ctx_new(1, err);
    wr_endpoint_opts eo;
    wr_endpoint_opts_default(&eo);
    eo.sndhwm = eo.rcvhwm = 100000;
    eo.linger_ms = 1000;
    char via[WR_ADDR_MAX + 64];
    if (source && !strncmp(g_coord, "tcp://", 6))  // ZeroMQ's "tcp://SOURCE:0;DEST" form
        snprintf(via, sizeof via, "tcp://%s:0;%s", source, g_coord + 6);
    else
        snprintf(via, sizeof via, "%s", g_coord);
    if (wr_connect(g_ctx, via, &eo, &g_cep, err) != WR_OK) {
        wr_error("%s", err);
        return WR_EXIT_FAILURE;
    }
    if (big_frame_mib > 0) send_big_frame(g_coord, big_frame_mib, "the coordinator");
    wr_config_defaults(&g_cfg);
    g_cfg.job_id = 0;
    wr_pmsg h;
    wr_pmsg_init(&h, WR_MT_REGISTER);
    snprintf(h.host, sizeof h.host, "%s", host);
    h.group = 0;
    send_c(&h, NULL, 0);
    int st = wait_coord(WR_MT_CLUSTER_MAP, 0, 10, &h);
    if (st) return st < 0 ? 6 : st == 256 ? 0 : st;
    for (uint32_t i = 0; i < h.n_config; i++)
        if (wr_config_set_kv(&g_cfg, h.config[i], err) != WR_OK) {
            wr_error("config: %s", err);
            return WR_EXIT_CONFIG;
        }
    wr_pmsg_clear(&h);
    if (g_cfg.mode == WR_MODE_ALLREDUCE) {
        st = run_allreduce(host, group, d, nt, corrupt_at, die_at);
        wr_close(g_cep);
        wr_transport_ctx_free(g_ctx);
        wr_buf_free(&g_hb);
        return st;
    }
    wr_pmsg_init(&h, WR_MT_REGISTER);
    snprintf(h.host, sizeof h.host, "%s", host);
    h.n_params = d;
    h.train_examples = nt;
    send_c(&h, NULL, 0);
    st = wait_coord(WR_MT_CLUSTER_MAP, 1, g_cfg.register_timeout + 10, &h);
    if (st) return st < 0 ? 1 : st == 256 ? 0 : st;
    g_rank = h.rank;
    if (!h.has_token) {
        wr_error("the cluster map carries no rank credential ('tk')");
        return WR_EXIT_FAILURE;
    }
    memcpy(g_token, h.token, WR_TOKEN_LEN);
    // The coordinator's total step count (older ones: computed here).
    int64_t total = h.total_steps > 0 ? (int64_t)h.total_steps : wr_total_steps(&g_cfg, WR_FASHION_TRAIN);
    int S = (int)h.n_shards, W = (int)h.n_workers_map;
    sh_t *sh = wr_calloc((size_t)S, sizeof *sh);
    for (int s = 0; s < S; s++) {
        sh[s].lo = h.shards[s].lo;
        sh[s].hi = h.shards[s].hi;
        snprintf(sh[s].addr, sizeof sh[s].addr, "%s", h.shards[s].addr);
        if (wr_connect(g_ctx, sh[s].addr, &eo, &sh[s].ep, err) != WR_OK) {
            wr_error("shard %d: %s", s, err);
            return WR_EXIT_FAILURE;
        }
    }
    // The map's start step: > 1 when the job resumes from checkpoints (the
    // fake worker has no state of its own but x, which it pulls).
    uint64_t first = h.start_step ? h.start_step : 1;
    wr_pmsg_clear(&h);
    name_log();
    wr_heartbeat *hb = start_heartbeats(host, err);

    float *x = wr_alloc_vec(d * 4), *m = wr_alloc_vec(d * 4), *b = wr_alloc_vec(d * 4),
          *g = wr_alloc_vec(d * 4);
    uint64_t maxn = 0;
    for (int s = 0; s < S; s++) maxn = WR_MAX(maxn, sh[s].hi - sh[s].lo);
    size_t cap = maxn * 4 + (size_t)wr_birder_planes(W) * wr_birder_words(maxn) * 8 + 64;
    uint64_t *bits = wr_alloc_vec(cap), *rbuf = wr_alloc_vec(cap);
    wr_rng_key ik = wr_rng_key_make(g_cfg.seed, 777, 0);
    for (uint64_t j = 0; j < d; j++)
        x[j] = ((float)(wr_rng_u32(ik, (uint32_t)j) >> 8) / 16777216.0f - 0.5f) * 0.1f;
    if (g_rank == 0 && first == 1)
        for (int s = 0; s < S; s++) {
            wr_pmsg p;
            data_init(&p, WR_MT_PARAMS);
            p.epoch = 1;
            p.shard = s;
            p.offset = sh[s].lo;
            p.n_elems = sh[s].hi - sh[s].lo;
            p.codec = WR_CODEC_FP32;
            g_rank = 0;
            p.job_id = g_cfg.job_id;
            p.rank = 0;
            wr_send_pmsg(sh[s].ep, NULL, 0, &p, x + sh[s].lo, p.n_elems * 4, NULL, NULL, 1000, &g_hb, err);
        }
    for (int s = 0; s < S; s++) {
        wr_pmsg p;
        data_init(&p, WR_MT_PULL);
        p.job_id = g_cfg.job_id;
        p.epoch = 1;
        p.rank = g_rank;
        p.shard = s;
        p.step = first - 1;
        p.offset = sh[s].lo;
        p.n_elems = sh[s].hi - sh[s].lo;
        wr_send_pmsg(sh[s].ep, NULL, 0, &p, NULL, 0, NULL, NULL, 1000, &g_hb, err);
        wr_pmsg r;
        st = -1;
        double t0 = wr_now();
        while (st < 0 && wr_now() - t0 < 30) st = recv_one(sh[s].ep, 100, &r, x + sh[s].lo, p.n_elems * 4);
        if (st) {
            wr_error("no PARAMS from shard %d", s);
            return WR_EXIT_FAILURE;
        }
        if (r.type != WR_MT_PARAMS) {
            wr_error("expected PARAMS from shard %d, got %s", s, wr_msg_type_name(r.type));
            return WR_EXIT_FAILURE;
        }
        wr_pmsg_clear(&r);
    }
    int birder = g_cfg.codec == WR_JOB_CODEC_BIRDER;
    double t_start = wr_now();
    int status = 0;
    if (bad_push) {
        // Wrong step, then garbage header: both must come back as ERROR.
        wr_pmsg p;
        data_init(&p, WR_MT_PUSH);
        p.job_id = g_cfg.job_id;
        p.epoch = 1;
        p.rank = g_rank;
        p.shard = 0;
        p.step = 999;
        p.offset = sh[0].lo;
        p.n_elems = sh[0].hi - sh[0].lo;
        p.codec = birder ? WR_CODEC_BITS : WR_CODEC_FP32;
        size_t len = birder ? wr_birder_words(p.n_elems) * 8 : p.n_elems * 4;
        memset(bits, 0, len);
        wr_send_pmsg(sh[0].ep, NULL, 0, &p, bits, len, NULL, NULL, 1000, &g_hb, err);
        wr_msg gm;
        memset(&gm, 0, sizeof gm);
        static const char junk[] = "\x93\x01\x02\x03 not a header";
        gm.header.data = (void *)junk;
        gm.header.len = sizeof junk;
        wr_send(sh[0].ep, &gm, 1000, err);
        for (int k = 0; k < 2; k++) {
            wr_pmsg r;
            st = -1;
            double t0 = wr_now();
            while (st < 0 && wr_now() - t0 < 10) st = recv_one(sh[0].ep, 100, &r, NULL, 0);
            if (st || r.type != WR_MT_ERROR) {
                wr_error("bad push %d: no ERROR reply", k);
                return WR_EXIT_FAILURE;
            }
            wr_info("bad push %d refused: %s", k, r.reason);
            wr_pmsg_clear(&r);
        }
    }
    wr_endpoint *flood = NULL;
    if (pull_flood > 0) {
        // N PULLs to shard 0 on a socket that never reads the replies: the
        // shard must answer one, refuse the rest, and keep its memory bounded.
        wr_endpoint_opts fo;
        wr_endpoint_opts_default(&fo);
        fo.heartbeat_ms = 0;
        fo.rcvhwm = 1;
        fo.sndhwm = 100000;
        fo.linger_ms = 0;
        if (wr_connect(g_ctx, sh[0].addr, &fo, &flood, err) != WR_OK) {
            wr_error("pull flood: %s", err);
            return WR_EXIT_FAILURE;
        }
        wr_pmsg p;
        data_init(&p, WR_MT_PULL);
        p.job_id = g_cfg.job_id;
        p.epoch = 1;
        p.rank = g_rank;
        p.shard = 0;
        long sent = 0;
        for (; sent < pull_flood; sent++)
            if (wr_send_pmsg(flood, NULL, 0, &p, NULL, 0, NULL, NULL, 1000, &g_hb, err) != WR_OK) break;
        wr_info("pull flood: sent %ld PULLs to shard 0 and will not read the replies", sent);
    }
    if (big_frame_mib > 0) send_big_frame(sh[0].addr, big_frame_mib, "shard 0");
    if (bad_digest && g_cfg.digest_every > 1) {
        // DIGESTs the book must refuse (ERROR back): a step that is not
        // digested, and one far beyond the window.
        uint64_t steps[2] = {1, (uint64_t)g_cfg.digest_every * 1000000};
        for (int k = 0; k < 2; k++) {
            wr_pmsg p;
            wr_pmsg_init(&p, WR_MT_DIGEST);
            p.epoch = 1;
            p.step = steps[k];
            p.shard = 0;
            send_c(&p, NULL, 0);
            st = wait_coord(WR_MT_ERROR, 1, 10, &p);
            if (st) {
                wr_error("bad digest for step %llu: no ERROR reply", (unsigned long long)steps[k]);
                return WR_EXIT_FAILURE;
            }
            wr_info("bad digest %d refused: %s", k, p.reason);
            wr_pmsg_clear(&p);
        }
    }
    if (barrier) {
        // BARRIER 7 before the first step: released only when every worker entered.
        wr_pmsg p;
        wr_pmsg_init(&p, WR_MT_BARRIER);
        p.epoch = 1;
        p.barrier_id = 7;
        double t0 = wr_now();
        send_c(&p, NULL, 0);
        st = wait_coord(WR_MT_BARRIER, 1, 30, &p);
        if (st) {
            wr_error("barrier 7 not released");
            return WR_EXIT_FAILURE;
        }
        wr_info("barrier %llu released after %.3f s", (unsigned long long)p.barrier_id, wr_now() - t0);
        wr_pmsg_clear(&p);
    }
    wr_endpoint **qep = NULL, **pep = NULL;
    if (stall_reads) {
        // Pushes go out on the shard sockets, whose BROADCASTs are never read,
        // so the shards' broadcast buffers stay held by the transport; the
        // step a shard completed is learnt from PULL replies on a second
        // socket per shard (PARAMS carries the step).
        qep = wr_calloc((size_t)S, sizeof *qep);
        pep = wr_calloc((size_t)S, sizeof *pep);
        wr_endpoint_opts po = eo;
        po.rcvhwm = 1;  // nothing piles up on our side: the shard keeps the broadcasts
        po.linger_ms = 0;
        for (int s = 0; s < S; s++)
            if (wr_connect(g_ctx, sh[s].addr, &eo, &qep[s], err) != WR_OK ||
                wr_connect(g_ctx, sh[s].addr, &po, &pep[s], err) != WR_OK) {
                wr_error("stall: %s", err);
                return WR_EXIT_FAILURE;
            }
        wr_info("stall mode: pushing without reading broadcasts");
    }
    uint64_t epoch = 1;
    wr_pmsg push_hdr;
    memset(&push_hdr, 0, sizeof push_hdr);
    if (first > 1) wr_info("resuming at step %llu", (unsigned long long)first);
    for (int64_t t = (int64_t)first; t <= total && status == 0; t++) {
        for (int s = 0; s < S; s++) sh[s].got = 0;
        if (die_at == t) {
            wr_info("dying before step %lld as asked", (long long)t);
            _exit(FAKE_EXIT_DIED);
        }
        wr_rng_key gk = wr_rng_key_make(g_cfg.seed ^ 0x5555, (uint64_t)g_rank, (uint64_t)t);
        if (!fixed_grad || t == 1)
            for (uint64_t j = 0; j < d; j++)
                g[j] = ((float)(wr_rng_u32(gk, (uint32_t)j) >> 8) / 16777216.0f - 0.5f) + 0.5f * x[j];
        for (int s = 0; s < S && stall_reads && status == 0; s++) {
            for (;;) {  // until shard s completed step t - 1
                wr_pmsg p, r;
                data_init(&p, WR_MT_PULL);
                p.job_id = g_cfg.job_id;
                p.epoch = 1;
                p.rank = g_rank;
                p.shard = s;
                wr_send_pmsg(qep[s], NULL, 0, &p, NULL, 0, NULL, NULL, 1000, &g_hb, err);
                st = -1;
                for (int k = 0; k < 100 && st < 0; k++) {
                    st = recv_one(qep[s], 100, &r, NULL, 0);
                    if (st < 0) {
                        wr_pmsg cm;
                        int cs = recv_one(g_cep, 0, &cm, NULL, 0);
                        if (cs > 0) {
                            status = cs == 256 ? 0 : cs;
                            break;
                        }
                        if (cs == 0) wr_pmsg_clear(&cm);
                    }
                }
                if (status || st) {
                    if (!status) status = 1;
                    break;
                }
                uint64_t done = r.type == WR_MT_PARAMS ? r.step : 0;
                wr_pmsg_clear(&r);
                if (done + 1 >= (uint64_t)t) break;
                struct timespec ts = {0, 20 * 1000 * 1000};
                nanosleep(&ts, NULL);
            }
        }
        if (status) break;
        for (int s = 0; s < S; s++) {
            wr_pmsg p;
            data_init(&p, WR_MT_PUSH);
            p.job_id = g_cfg.job_id;
            p.epoch = epoch;  // the newest a broadcast carried (membership epochs)
            p.rank = g_rank;
            p.shard = s;
            p.step = (uint64_t)t;
            p.offset = sh[s].lo;
            p.n_elems = sh[s].hi - sh[s].lo;
            const void *pl;
            size_t len;
            if (birder) {
                wr_birder_encode(g + sh[s].lo, m + sh[s].lo, b + sh[s].lo, p.n_elems, g_cfg.beta,
                                 wr_rng_key_make(g_cfg.seed, (uint64_t)g_rank, (uint64_t)t), sh[s].lo, bits);
                p.codec = WR_CODEC_BITS;
                pl = bits;
                len = wr_birder_words(p.n_elems) * 8;
            } else {
                p.codec = WR_CODEC_FP32;
                pl = g + sh[s].lo;
                len = p.n_elems * 4;
            }
            if (!sh[s].last) sh[s].last = malloc(cap);
            memcpy(sh[s].last, pl, len);
            sh[s].last_len = len;
            push_hdr = p;
            int sr = wr_send_pmsg(stall_reads ? pep[s] : sh[s].ep, NULL, 0, &p, pl, len, NULL, NULL, 5000,
                                  &g_hb, err);
            if (sr == WR_ECLOSED && !stall_reads) {  // the shard went away under the PUSH: as on recv
                wr_warn("step %lld: PUSH to shard %d: %s; waiting for the coordinator", (long long)t, s, err);
                sh[s].down = 1;
            } else if (sr != WR_OK) {
                wr_error("PUSH to shard %d: %s", s, err);
                status = 1;
            }
        }
        float lr_t = wr_lr_at(&g_cfg, t, total);
        for (int s = 0; s < S && status == 0 && !stall_reads; s++) {
            wr_pmsg r;
            st = -1;
            double t0 = wr_now();
            // A lost shard: wait (step_timeout + register_timeout) for its replacement.
            while (st < 0 && !sh[s].got && wr_now() - t0 < g_cfg.step_timeout + g_cfg.register_timeout) {
                if (sh[s].down) {
                    struct timespec ts = {0, 100 * 1000 * 1000};
                    nanosleep(&ts, NULL);
                } else {
                    st = recv_one(sh[s].ep, 100, &r, rbuf, cap);
                }
                if (st > 0 && st != 256) {  // its connection failed
                    wr_warn("step %lld: shard %d unreachable; waiting for the coordinator", (long long)t, s);
                    sh[s].down = 1;
                    st = -1;
                }
                if (st < 0) {
                    wr_pmsg cm;
                    int cs = recv_one(g_cep, 0, &cm, NULL, 0);
                    if (cs > 0) {
                        status = cs == 256 ? 0 : cs;
                        st = 1;
                    } else if (cs == 0) {
                        if (cm.type == WR_MT_CLUSTER_MAP &&
                            follow_shard_moves(&cm, sh, S, x, t, &eo, &push_hdr))
                            status = 1;
                        wr_pmsg_clear(&cm);
                    }
                }
            }
            if (status) break;
            if (sh[s].got && st < 0) continue;  // taken from the replacement's PARAMS
            if (st) {
                wr_error("step %lld: no BROADCAST from shard %d", (long long)t, s);
                status = 1;
                break;
            }
            if (r.type != WR_MT_BROADCAST || r.step != (uint64_t)t) {
                wr_error("step %lld: shard %d sent %s step %llu", (long long)t, s, wr_msg_type_name(r.type),
                         (unsigned long long)r.step);
                status = 1;
                wr_pmsg_clear(&r);
                break;
            }
            size_t n = r.n_elems;
            sh[s].got = 1;
            if (r.epoch > epoch) epoch = r.epoch;
            if (r.codec == WR_CODEC_BITS)
                wr_birder_apply_bits(x + sh[s].lo, rbuf, n, lr_t, g_cfg.wd);
            else if (r.codec == WR_CODEC_PLANES)
                wr_birder_apply_planes(x + sh[s].lo, rbuf, (int)r.n_workers, n, lr_t, g_cfg.wd);
            else
                memcpy(x + sh[s].lo, rbuf, n * 4);
            wr_pmsg_clear(&r);
        }
        if (status) break;
        if (corrupt_at == t) x[sh[S - 1].lo] += 1.0f;
        int last = t == total && (skip_last_digest || late_digest > 0);
        if (g_cfg.digest_every > 0 && t % g_cfg.digest_every == 0 && !last)
            for (int s = 0; s < S; s++) {
                wr_pmsg p;
                wr_pmsg_init(&p, WR_MT_DIGEST);
                p.epoch = 1;
                p.step = (uint64_t)t;
                p.shard = s;
                p.digest = wr_digest64(x + sh[s].lo, (sh[s].hi - sh[s].lo) * 4);
                send_c(&p, NULL, 0);
            }
    }
    double el = wr_now() - t_start;
    if (status == 1) {
        // Like the real worker: tell the coordinator (often a shard died and
        // the coordinator must name it, status 5).
        wr_pmsg p;
        wr_pmsg_init(&p, WR_MT_ERROR);
        p.epoch = 1;
        p.code = WR_EC_INTERNAL;
        snprintf(p.reason, sizeof p.reason, "fake worker %d: training step failed (lost a shard?)", g_rank);
        send_c(&p, NULL, 0);
    }
    if (status == 0) {
        wr_info("%lld steps in %.2f s: %.1f steps/s", (long long)total, el, (double)total / el);
        wr_pmsg p;
        wr_pmsg_init(&p, WR_MT_STATS);
        p.epoch = 1;
        p.n_stats = 2;
        snprintf(p.stats[0].name, sizeof p.stats[0].name, "steps");
        p.stats[0].value = (double)total;
        snprintf(p.stats[1].name, sizeof p.stats[1].name, "steps_per_s");
        p.stats[1].value = (double)total / el;
        send_c(&p, NULL, 0);
        wr_pmsg_init(&p, WR_MT_LEAVE);
        p.epoch = 1;
        p.step = (uint64_t)total;  // the last step done: the end of the job, not a departure
        send_c(&p, NULL, 0);
        if (late_digest > 0 && g_cfg.digest_every > 0 && total % g_cfg.digest_every == 0) {
            // The last digest after LEAVE (as a slow shard's can arrive): the
            // coordinator must wait for it, not finish without the check.
            struct timespec ts = {(time_t)late_digest,
                                  (long)((late_digest - (double)(time_t)late_digest) * 1e9)};
            nanosleep(&ts, NULL);
            for (int s = 0; s < S; s++) {
                wr_pmsg_init(&p, WR_MT_DIGEST);
                p.epoch = 1;
                p.step = (uint64_t)total;
                p.shard = s;
                p.digest = wr_digest64(x + sh[s].lo, (sh[s].hi - sh[s].lo) * 4);
                send_c(&p, NULL, 0);
            }
            wr_info("sent the last digests %.1f s after LEAVE", late_digest);
        }
    }
    wr_close(flood);
    for (int s = 0; s < S && qep; s++) wr_close(qep[s]), wr_close(pep[s]);
    free(qep);
    free(pep);
    wr_heartbeat_stop(hb);
    for (int s = 0; s < S; s++) wr_close(sh[s].ep);
    wr_close(g_cep);
    wr_transport_ctx_free(g_ctx);
    free(x), free(m), free(b), free(g), free(bits), free(rbuf), free(sh);
    wr_buf_free(&g_hb);
    return status;
}
